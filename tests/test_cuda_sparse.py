"""Sparse conv on CUDA (direct CSR kernel, 2:4 sparse tensor cores), and the "2:4" format.

The "2:4" packing tests and the emulation of the 2:4 kernel's GEMM run on the CPU (here too);
the CUDA tests skip without a GPU. References: F.conv2d in float64 on the CPU, of the same
values the kernel sees (fp16/bf16-rounded inputs and, for the tensor-core path, weights).
"""

import pickle

import pytest
import torch
import torch.nn.functional as F
from conftest import rel_error
from gpu import HAVE_GPU, needs_gpu, poison_

import pyfastcnn
from pyfastcnn import _native
from pyfastcnn.ops import reference
from pyfastcnn.ops._checks import conv_geometry
from pyfastcnn.ops.sparse_conv import sparse24_fragments

FP32_TOL = 1e-5
HALF_TOL = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
VALID_CODES = {0b0100, 0b1000, 0b1001, 0b1100, 0b1101, 0b1110}


def prune(weight: torch.Tensor, density: float) -> torch.Tensor:
    return weight * (torch.rand_like(weight) < density)


def prune_24(weight: torch.Tensor) -> torch.Tensor:
    """Keep a random 2 (or fewer, sometimes) of every 4 consecutive input channels per tap."""
    oc, cg, kh, kw = weight.shape
    cg4 = -(-cg // 4) * 4
    w = F.pad(weight.permute(0, 2, 3, 1), (0, cg4 - cg)).reshape(oc, kh, kw, cg4 // 4, 4)
    keep = torch.rand(w.shape).argsort(dim=-1) < 2
    keep &= torch.rand(w.shape) < 0.9  # some chunks with 1 or 0 non-zeros
    w = (w * keep).reshape(oc, kh, kw, cg4)[..., :cg]
    return w.permute(0, 3, 1, 2).contiguous()


# --- geometries: (id, n, c, h, w, oc, k, stride, padding, dilation, groups) ------------------
GEOMETRIES = [
    ("1x1-b1", 1, 16, 9, 7, 24, 1, 1, 0, 1, 1),
    ("3x3-pad1-b4", 4, 16, 13, 11, 20, 3, 1, 1, 1, 1),
    ("3x3-stride2-odd", 2, 24, 17, 15, 33, 3, 2, 1, 1, 1),
    ("7x7-c3-stem", 2, 3, 29, 31, 16, 7, 2, 3, 1, 1),
    ("3x3-dil2", 1, 8, 15, 14, 12, 3, 1, 2, 2, 1),
    ("3x3-groups2", 2, 32, 10, 9, 40, 3, 1, 1, 1, 2),
    ("5x5-valid", 1, 12, 12, 12, 72, 5, 1, 0, 1, 1),
    ("9x9-c4-many-taps", 1, 4, 16, 16, 8, 9, 1, 4, 1, 1),
]
geometries = pytest.mark.parametrize("geo", GEOMETRIES, ids=[g[0] for g in GEOMETRIES])


def make(geo, dtype=torch.float32, density=0.5, structured=False):
    _, n, c, h, w, oc, k, stride, padding, dilation, groups = geo
    x = torch.randn(n, c, h, w).to(dtype)
    weight = torch.randn(oc, c // groups, k, k)
    weight = prune_24(weight) if structured else prune(weight, density)
    if oc > 3:
        weight[2] = 0  # an output channel with no non-zero at all
    bias = torch.randn(oc)
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    return x, weight, bias, kwargs


def ref_conv(x, weight, bias, kwargs, relu=False):
    return reference.conv2d(x.double(), weight.double(), bias.double(), relu=relu, **kwargs)


def poisoned_run(fn, shape_dtype):
    """Runs fn after leaving a NaN-filled block of the output's size in the caching allocator,
    which the op's output allocation then reuses: elements the kernel skips stay NaN."""
    shape, dtype = shape_dtype
    poison_(torch.empty(shape, dtype=dtype, device="cuda"))
    return fn()


# --- the "2:4" format (CPU) -----------------------------------------------------------------


@pytest.mark.parametrize("shape", [(8, 16, 3, 3), (5, 3, 7, 7), (70, 12, 1, 1), (4, 4, 2, 3)])
def test_24_pack_round_trip_and_codes(shape):
    w = prune_24(torch.randn(shape))
    packed = pyfastcnn.pack_sparse(w, "2:4")
    assert packed.format == "2:4" and packed.shape == shape
    assert torch.equal(packed.to_dense(), w)
    assert packed.nnz == int((w != 0).sum())
    assert set(packed.col_idx.unique().tolist()) <= VALID_CODES  # ordered metadata only
    restored = pickle.loads(pickle.dumps(packed))
    assert torch.equal(restored.to_dense(), w) and restored.cache == {}


def test_24_bad_weight_names_the_chunk():
    w = prune_24(torch.randn(6, 8, 3, 3))
    w[4, 5:8, 1, 2] = 1.0  # channels 4..7 at (1, 2) now hold 3 or 4 non-zeros
    w[4, 4, 1, 2] = 1.0
    with pytest.raises(ValueError, match=r"not 2:4 sparse: output channel 4, kernel position "
                                         r"\(1, 2\), input channels 4\.\.7"):
        pyfastcnn.pack_sparse(w, "2:4")
    with pytest.raises(ValueError, match="not 2:4 sparse"):
        pyfastcnn.pack_sparse(torch.randn(4, 8, 1, 1), "2:4")


def _decode_fragments(frags: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
    """Dense A [G, M, K] from the device layout, lane by lane, by the PTX ISA's description of
    sparse mma.m16n8k32 .f16 fragments and metadata (sparsity selector 0): written apart from
    sparse24_fragments so the two check each other."""
    groups, mt, kt = frags.shape[:3]
    dense = torch.zeros(groups, mt * 16, kt * 32, dtype=torch.float64)
    words = meta.long() & 0xFFFFFFFF
    for g_ in range(groups):
        for m in range(mt):
            for k in range(kt):
                for lane in range(32):
                    gid, tig = lane >> 2, lane & 3
                    regs = frags[g_, m, k, lane].double().view(4, 2)
                    for r in range(4):
                        row = gid + 8 * (r & 1)
                        chunk = tig + 4 * (r >> 1)
                        word = int(words[g_, m, k, 4 * gid + chunk // 4])
                        code = (word >> (16 * (row >= 8) + 4 * (chunk % 4))) & 0xF
                        assert code in VALID_CODES
                        idx0, idx1 = code & 3, code >> 2
                        dense[g_, m * 16 + row, k * 32 + chunk * 4 + idx0] = regs[r, 0]
                        dense[g_, m * 16 + row, k * 32 + chunk * 4 + idx1] = regs[r, 1]
    return dense


@pytest.mark.parametrize("oc,cg,k,groups", [(16, 16, 3, 1), (72, 8, 3, 1), (40, 12, 1, 2),
                                           (8, 3, 3, 1)])
def test_24_fragments_decode_to_the_weight(oc, cg, k, groups):
    w = prune_24(torch.randn(oc, cg, k, k))
    packed = pyfastcnn.pack_sparse(w, "2:4")
    frags, meta, m_pad, k_pad = sparse24_fragments(packed.values, packed.col_idx, groups,
                                                   torch.float32)
    assert m_pad % 64 == 0 and k_pad % 64 == 0 and meta.dtype == torch.int32
    dense = _decode_fragments(frags, meta)
    cg4 = -(-cg // 4) * 4
    ocg, kk = oc // groups, k * k * cg4
    expect = F.pad(w.permute(0, 2, 3, 1), (0, cg4 - cg)).reshape(groups, ocg, kk).double()
    assert torch.equal(dense[:, :ocg, :kk], expect)
    assert not dense[:, ocg:].any() and not dense[:, :, kk:].any()
    # Lanes 2 and 3 of each quad carry no metadata (selector 0 reads lanes 0 and 1).
    assert not meta.view(*meta.shape[:3], 8, 4)[..., 2:].any()


@geometries
def test_24_kernel_gemm_emulated_on_cpu(geo):
    """The 2:4 kernel's GEMM with its own index math (A from the fragments, B gathered from NHWC
    with k = (kh * KW + kw) * C4 + c and zero fill) equals the conv."""
    x, w, bias, kwargs = make(geo, structured=True)
    n, c, h, wd = x.shape
    oc, cg, kh, kw = w.shape
    groups = kwargs["groups"]
    packed = pyfastcnn.pack_sparse(w, "2:4")
    frags, meta, m_pad, k_pad = sparse24_fragments(packed.values, packed.col_idx, groups,
                                                   torch.float32)
    a = _decode_fragments(frags, meta)  # [G, m_pad, k_pad]
    g = conv_geometry(x.shape, w.shape, kwargs["stride"], kwargs["padding"],
                      kwargs["dilation"], groups)
    oh, ow = g.output_size
    cg4 = -(-cg // 4) * 4
    xs = F.pad(x.double().view(n, groups, cg, h, wd), (0, 0, 0, 0, 0, cg4 - cg))
    nhwc = xs.permute(0, 3, 4, 1, 2).reshape(n, h, wd, groups, cg4)
    k = torch.arange(k_pad)
    tap, ch = k // cg4, k % cg4
    ky, kx = tap // kw, tap % kw
    oy = torch.arange(oh).view(-1, 1, 1)
    ox = torch.arange(ow).view(1, -1, 1)
    ih = oy * g.stride[0] - g.padding[0] + ky * g.dilation[0]
    iw = ox * g.stride[1] - g.padding[1] + kx * g.dilation[1]
    ok = (k < kh * kw * cg4) & (ih >= 0) & (ih < h) & (iw >= 0) & (iw < wd)
    gathered = nhwc[:, ih.clamp(0, h - 1), iw.clamp(0, wd - 1)]  # [N, OH, OW, K, G, C4]
    b = gathered.gather(-1, ch.view(1, 1, 1, -1, 1, 1).expand(n, oh, ow, -1, groups, 1))
    b = b.squeeze(-1) * ok.unsqueeze(-1)  # [N, OH, OW, K, G]
    ocg = oc // groups
    out = torch.einsum("gmk,nyxkg->ngmyx", a, b)[:, :, :ocg].reshape(n, oc, oh, ow)
    out = out + bias.double().view(1, -1, 1, 1)
    assert rel_error(out, ref_conv(x, w, bias, kwargs)) <= 1e-12


@geometries
def test_24_runs_on_the_cpu(geo):
    x, w, bias, kwargs = make(geo, structured=True)
    packed = pyfastcnn.pack_sparse(w, "2:4")
    for relu in (False, True):
        out = pyfastcnn.sparse_conv2d(x, packed, bias, relu=relu, **kwargs)
        assert rel_error(out, ref_conv(x, w, bias, kwargs, relu)) <= FP32_TOL


def test_24_module_round_trip_on_the_cpu():
    conv = torch.nn.Conv2d(16, 24, 3, padding=1)
    with torch.no_grad():
        conv.weight.copy_(prune_24(conv.weight))
    module = pyfastcnn.nn.SparseConv2d.from_dense(conv, format="2:4", relu=True)
    x = torch.randn(2, 16, 9, 9)
    with torch.no_grad():
        ref = torch.relu(conv.double()(x.double()))
    assert rel_error(module(x), ref) <= FP32_TOL
    restored = pickle.loads(pickle.dumps(module))
    assert torch.equal(restored(x), module(x))


# --- the CSR kernel's tiling (CPU emulation of its index math) ------------------------------


def _emulate_tiled_csr(x, weight, bias, kwargs, plan):
    """sparse_conv2d_csr_tiled_kernel's arithmetic on the CPU: the same device arrays
    (_device_csr, _device_chunks on the CPU), the same patch staging and offsets."""
    from pyfastcnn.ops import cuda_sparse

    packed = pyfastcnn.pack_sparse(weight, "csr")
    images, rows, chunk = plan
    chunk_ptr = cuda_sparse._device_chunks(packed, torch.device("cpu"), chunk)
    n, c, h, w = x.shape
    oc, cg, kh, kw = weight.shape
    groups = kwargs["groups"]
    g = conv_geometry(x.shape, weight.shape, kwargs["stride"], kwargs["padding"],
                      kwargs["dilation"], groups)
    entries = cuda_sparse._device_entries(packed, torch.device("cpu"), plan, g)
    (oh, ow), (sh, sw), (ph, pw), (dh, dw) = g.output_size, g.stride, g.padding, g.dilation
    patch_h, patch_w = (rows - 1) * sh + (kh - 1) * dh + 1, (ow - 1) * sw + (kw - 1) * dw + 1
    assert chunk * images * patch_h * patch_w <= 12 * 1024 and images * rows * ow <= 512
    chunks = -(-cg // chunk)
    out = torch.full((n, oc, oh, ow), float("nan"), dtype=torch.float64)
    q = torch.arange(512)
    il, rest = q // (rows * ow), q % (rows * ow)
    ty, tx = rest // ow, rest % ow
    xd = x.double()
    for img0 in range(0, n, images):
        for oy0 in range(0, oh, rows):
            live = (il < images) & (img0 + il < n) & (oy0 + ty < oh)
            base = torch.where(live, (il * patch_h + ty * sh) * patch_w + tx * sw, 0)
            for grp in range(groups):
                acc = torch.zeros(oc // groups, 512, dtype=torch.float64)
                for j in range(chunks):
                    c0, cc = j * chunk, min(chunk, cg - j * chunk)
                    patch = torch.zeros(cc, images, patch_h, patch_w, dtype=torch.float64)
                    for i in range(images):
                        if img0 + i >= n:
                            continue
                        for py in range(patch_h):
                            ih = oy0 * sh - ph + py
                            if 0 <= ih < h:
                                lo, hi = max(0, pw), min(patch_w, w + pw)
                                patch[:, i, py, lo:hi] = xd[img0 + i, grp * cg + c0:
                                                            grp * cg + c0 + cc, ih,
                                                            lo - pw:hi - pw]
                    flat = patch.flatten()
                    for r in range(oc // groups):
                        o = grp * (oc // groups) + r
                        for e in range(int(chunk_ptr[o, j]), int(chunk_ptr[o, j + 1])):
                            off, bits = int(entries[e, 0]), entries[e, 1:2]
                            acc[r] += float(bits.view(torch.float32)) * flat[base + off]
                for r in range(oc // groups):
                    o = grp * (oc // groups) + r
                    for k in live.nonzero()[:, 0].tolist():
                        out[img0 + int(il[k]), o, oy0 + int(ty[k]), int(tx[k])] = (
                            acc[r, k] + float(bias[o]))
    return out


@pytest.mark.parametrize("geo", [GEOMETRIES[i] for i in (1, 2, 3, 4, 5)],
                         ids=[GEOMETRIES[i][0] for i in (1, 2, 3, 4, 5)])
def test_csr_tiling_emulated_on_cpu(geo):
    from pyfastcnn.ops import cuda_sparse

    x, w, bias, kwargs = make(geo, density=0.3)
    g = conv_geometry(x.shape, w.shape, kwargs["stride"], kwargs["padding"], kwargs["dilation"],
                      kwargs["groups"])
    plan = cuda_sparse._csr_plan(x.shape[0], w.shape[1], g.output_size, w.shape[2:], g.stride,
                                 g.dilation)
    assert plan is not None
    (sh, _), (dh, _), kh = g.stride, g.dilation, w.shape[2]
    patch_w = (g.output_size[1] - 1) * g.stride[1] + (w.shape[3] - 1) * g.dilation[1] + 1
    for images, rows, chunk in (plan, [1, 2, max(1, w.shape[1] // 3)],
                                [min(3, x.shape[0]), g.output_size[0], w.shape[1]]):
        patch = ((rows - 1) * sh + (kh - 1) * dh + 1) * patch_w
        tiles = [images, rows, min(chunk, 12 * 1024 // (images * patch))]  # other valid plans
        out = _emulate_tiled_csr(x, w, bias, kwargs, tiles)
        assert rel_error(out, ref_conv(x, w, bias, kwargs)) <= 1e-12, tiles


@pytest.mark.parametrize("oc,cg,k,groups,chunk", [(40, 8, 3, 2, 3), (70, 12, 1, 1, 16),
                                                 (33, 5, 5, 1, 2)])
def test_block_device_arrays_decode_to_the_weight(oc, cg, k, groups, chunk):
    """_device_block / _device_block_chunks (CPU here): each panel's kept positions sorted by
    input channel, chunk pointers bracketing each chunk, values giving back the weight."""
    from pyfastcnn.ops import cuda_sparse

    w = prune(torch.randn(oc, cg, k, k), 0.3)
    packed = pyfastcnn.pack_sparse(w, "block", groups=groups)
    cpu = torch.device("cpu")
    taps, values, panel, ci = cuda_sparse._device_block(packed, cpu)
    chunk_ptr = cuda_sparse._device_block_chunks(packed, cpu, chunk)
    ocg, panels = oc // groups, -(-(oc // groups) // 32)
    dense = torch.zeros(oc, cg, k, k)
    for p_ in range(groups * panels):
        for j in range(chunk_ptr.shape[1] - 1):
            for e in range(int(chunk_ptr[p_, j]), int(chunk_ptr[p_, j + 1])):
                t = int(taps[e])
                c, y, x = t >> 16, (t >> 8) & 255, t & 255
                assert j * chunk <= c < (j + 1) * chunk and int(panel[e]) == p_
                g_, q = divmod(p_, panels)
                for r in range(min(32, ocg - q * 32)):
                    dense[g_ * ocg + q * 32 + r, c, y, x] = values[e, r]
        assert int(chunk_ptr[p_, -1]) == int(packed.row_ptr[p_ + 1])
    assert torch.equal(dense, w)


def test_csr_plans_fit_the_kernel():
    from pyfastcnn.ops import cuda_sparse

    for layer in [(32, 64, 56, 3, 1), (32, 256, 14, 3, 1), (32, 3, 224, 7, 2), (32, 512, 7, 3, 1),
                  (1, 1024, 14, 1, 1), (2, 5, 600, 3, 1), (1, 7, 300, 31, 1)]:
        n, c, hw, k, s = layer
        out = (hw + 2 * (k // 2) - k) // s + 1
        plan = cuda_sparse._csr_plan(n, c, (out, out), (k, k), (s, s), (1, 1), 16, 132)
        if out > 512:
            assert plan is None
            continue
        images, rows, chunk = plan
        patch = ((rows - 1) * s + k) * ((out - 1) * s + k)
        assert images * rows * out <= 512 and chunk * images * patch <= 12 * 1024
        assert 1 <= chunk <= min(c, 16) and rows <= out and images <= n


# --- the launch arguments against the C++ checks (where _cuda is built but no GPU exists) ---


@pytest.mark.skipif(HAVE_GPU or _native.cuda is None,
                    reason="needs pyfastcnn._cuda built and no GPU (the calls must not launch)")
@pytest.mark.parametrize("case", ["24-cl-stride2", "24-c3-pad", "24-bf16-groups-128rows",
                                  "csr-tiled", "csr-untiled", "block-f16"])
@pytest.mark.parametrize("path", ["call-plan", "custom-op-impl"])
def test_launch_arguments_pass_the_native_checks(monkeypatch, case, path):
    """The Python layer's launch arguments (first call and cached call plan, or the custom ops'
    implementations used when tracing) get through pybind's signature and the launchers'
    PYFASTCNN_CUDA_REQUIRE checks to the CUDA runtime, which fails here for want of a device.
    CPU tensors stand in for CUDA ones."""
    from pyfastcnn.ops import cuda_sparse

    calls = []

    class Recorder:
        def __getattr__(self, name):
            real = getattr(_native.cuda, name)

            def call(*args):
                calls.append(name)
                with pytest.raises(RuntimeError, match="CUDA error"):
                    real(0, *args[1:])  # device index 0 for the CPU stand-in
            return call

    checked = cuda_sparse.check_tensor
    monkeypatch.setattr(cuda_sparse, "cuda_module", lambda: Recorder())
    monkeypatch.setattr(cuda_sparse, "raw_stream", lambda index: 0)
    monkeypatch.setattr(cuda_sparse, "_sm_count", lambda device: 132)
    monkeypatch.setattr(cuda_sparse, "stream_of", lambda t: 0)
    if path == "custom-op-impl":
        monkeypatch.setattr(cuda_sparse, "_plain_eager", lambda input, bias: False)
    monkeypatch.setattr(cuda_sparse, "check_tensor",
                        lambda name, t, dtype, ndim=None, devices=(): checked(
                            name, t, dtype, ndim, devices=("cpu", "cuda")))
    x, w, fmt, bias, kw = {
        "24-cl-stride2": (torch.randn(2, 12, 9, 9).half().contiguous(
            memory_format=torch.channels_last), prune_24(torch.randn(20, 12, 3, 3)), "2:4",
            torch.randn(20), dict(padding=1, stride=2)),
        "24-c3-pad": (torch.randn(2, 3, 29, 31).half(), prune_24(torch.randn(16, 3, 7, 7)),
                      "2:4", None, dict(padding=3, stride=2)),
        "24-bf16-groups-128rows": (torch.randn(2, 32, 10, 9).bfloat16(),
                                   prune_24(torch.randn(260, 16, 3, 3)), "2:4",
                                   torch.randn(260).bfloat16(), dict(padding=1, groups=2)),
        "csr-tiled": (torch.randn(4, 24, 17, 15), prune(torch.randn(33, 24, 3, 3), 0.3), "csr",
                      torch.randn(33), dict(padding=1, stride=2)),
        "csr-untiled": (torch.randn(1, 5, 3, 600), prune(torch.randn(7, 5, 3, 3), 0.3), "csr",
                        None, dict(padding=1)),
        "block-f16": (torch.randn(2, 16, 11, 11).half(), prune(torch.randn(40, 8, 3, 3), 0.3),
                      "block", None, dict(padding=1, groups=2)),
    }[case]
    packed = pyfastcnn.pack_sparse(w, fmt, groups=kw.get("groups", 1))
    for _ in range(2):  # the first call builds the call plan, the second reuses it
        out = pyfastcnn.ops.cuda_sparse.sparse_conv2d_cuda(
            x, packed, bias, kw.get("stride", 1), kw["padding"], 1, kw.get("groups", 1), True)
        ref = F.conv2d(x.float(), w, None, kw.get("stride", 1), kw["padding"], 1,
                       kw.get("groups", 1))
        assert out.shape == ref.shape and out.dtype == x.dtype
    assert len(calls) == 2 and len({c for c in calls}) == 1
    plans = sum(1 for k in packed.cache if k[0] == "call")
    assert plans == (1 if path == "call-plan" else 0)
    if path == "custom-op-impl":  # traced calls of block weights run the CSR op
        assert calls[0] == ("sparse_conv2d_csr" if fmt != "2:4" else "sparse24_conv2d")


# --- CUDA ------------------------------------------------------------------------------------


def _gpu_case(geo, dtype, layout, density=0.5, structured=False, relu=False, fmt="csr"):
    x, w, bias, kwargs = make(geo, dtype, density, structured)
    if structured:  # the tensor cores see fp16/bf16 weights
        w = w.to(dtype).float()
    packed = pyfastcnn.pack_sparse(w, "2:4" if structured else fmt, groups=kwargs["groups"])
    xd = x.cuda()
    if layout == "channels_last":
        xd = xd.contiguous(memory_format=torch.channels_last)
    bd = bias.cuda()
    g = conv_geometry(x.shape, w.shape, kwargs["stride"], kwargs["padding"], kwargs["dilation"],
                      kwargs["groups"])
    shape = (x.shape[0], w.shape[0], *g.output_size)
    out = poisoned_run(
        lambda: pyfastcnn.sparse_conv2d(xd, packed, bd, relu=relu, **kwargs), (shape, dtype))
    torch.cuda.synchronize()
    assert out.dtype == dtype and out.device == xd.device and out.shape == shape
    assert out.is_contiguous(memory_format=torch.channels_last) == (layout == "channels_last")
    return out.cpu(), ref_conv(x, w, bias, kwargs, relu)


@needs_gpu
@geometries
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["f32", "f16"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("fmt", ["csr", "block"])
def test_csr_cuda_matches_reference(geo, dtype, layout, fmt):
    out, ref = _gpu_case(geo, dtype, layout, density=0.3, relu=layout == "nchw", fmt=fmt)
    tol = FP32_TOL if dtype == torch.float32 else HALF_TOL[dtype]
    assert rel_error(out, ref) <= tol


@needs_gpu
@pytest.mark.parametrize("density", [0.5, 0.1, 0.02, 0.0])
def test_csr_cuda_densities(density):
    geo = ("d", 4, 64, 14, 14, 64, 3, 1, 1, 1, 1)
    out, ref = _gpu_case(geo, torch.float32, "nchw", density=density, relu=True)
    assert rel_error(out, ref) <= FP32_TOL


@needs_gpu
@pytest.mark.parametrize("geo", [
    ("wide-3x3-mask32", 1, 5, 3, 600, 7, 3, 1, 1, 1, 1),
    ("wide-7x7-s2-mask64", 2, 3, 9, 1100, 16, 7, 2, 3, 1, 1),
    ("wide-9x9-no-mask", 1, 4, 12, 530, 6, 9, 1, 4, 1, 1),
], ids=lambda g: g[0])
def test_csr_cuda_untiled_fallback(geo):
    """Outputs wider than 512 pixels: the untiled kernel (tap masks of 32 and 64 bits, explicit
    bounds checks beyond 64 taps)."""
    from pyfastcnn.ops import cuda_sparse

    ow = (geo[4] + 2 * geo[8] - geo[9] * (geo[6] - 1) - 1) // geo[7] + 1
    assert cuda_sparse._csr_plan(geo[1], geo[2], (1, ow), (geo[6],) * 2, (geo[7],) * 2,
                                 (1, 1)) is None
    for dtype in (torch.float32, torch.float16):
        out, ref = _gpu_case(geo, dtype, "nchw", density=0.4, relu=True)
        assert rel_error(out, ref) <= (FP32_TOL if dtype == torch.float32 else HALF_TOL[dtype])


@needs_gpu
def test_block_and_bf16_on_cuda():
    x = torch.randn(2, 16, 11, 11)
    w = prune(torch.randn(40, 8, 3, 3), 0.3)
    packed = pyfastcnn.pack_sparse(w, "block", groups=2)
    out = pyfastcnn.sparse_conv2d(x.cuda(), packed, padding=1, groups=2)
    ref = reference.conv2d(x.double(), w.double(), padding=1, groups=2)
    assert rel_error(out.cpu(), ref) <= FP32_TOL
    xb = x.bfloat16()
    out = pyfastcnn.sparse_conv2d(xb.cuda(), packed, padding=1, groups=2)
    ref = reference.conv2d(xb.double(), w.double(), padding=1, groups=2)
    assert out.dtype == torch.bfloat16 and rel_error(out.cpu(), ref) <= HALF_TOL[torch.bfloat16]


@needs_gpu
@geometries
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_24_cuda_matches_reference(geo, dtype, layout):
    out, ref = _gpu_case(geo, dtype, layout, structured=True, relu=dtype == torch.float16)
    assert rel_error(out, ref) <= HALF_TOL[dtype]


@needs_gpu
@pytest.mark.parametrize("oc,c,hw,k", [(64, 64, 28, 3), (256, 128, 7, 1), (130, 40, 9, 3)],
                         ids=["64-64-28-k3", "128-256-7-k1", "40-130-9-k3"])
def test_24_cuda_larger_layers(oc, c, hw, k):
    """Several k-tiles (the pipeline wraps), several m-blocks, 16-byte and tail stores."""
    geo = ("l", 3, c, hw, hw, oc, k, 1, k // 2, 1, 1)
    out, ref = _gpu_case(geo, torch.float16, "channels_last", structured=True, relu=True)
    assert rel_error(out, ref) <= HALF_TOL[torch.float16]


@needs_gpu
def test_24_with_float32_input_runs_the_direct_kernel():
    geo = GEOMETRIES[1]
    out, ref = _gpu_case(geo, torch.float32, "nchw", structured=True)
    assert rel_error(out, ref) <= FP32_TOL


@needs_gpu
@pytest.mark.gpu_sanitize
@pytest.mark.parametrize("structured", [False, True], ids=["csr", "2:4"])
def test_small_cases_for_the_sanitizer(structured):
    geo = ("s", 2, 12, 7, 9, 20, 3, 2, 1, 1, 1)  # 12 channels: the 8-byte copies of 2:4
    dtype = torch.float16
    out, ref = _gpu_case(geo, dtype, "channels_last", structured=structured, relu=True)
    assert rel_error(out, ref) <= HALF_TOL[dtype]


@needs_gpu
def test_runs_on_the_callers_stream():
    x = torch.randn(4, 32, 28, 28, device="cuda").half().contiguous(
        memory_format=torch.channels_last)
    w = prune_24(torch.randn(64, 32, 3, 3)).half().float()
    packed24, packed = pyfastcnn.pack_sparse(w, "2:4"), pyfastcnn.pack_sparse(w, "csr")
    ref = reference.conv2d(x.cpu().double(), w.double(), padding=1)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        big = torch.randn(4096, 4096, device="cuda")
        for _ in range(3):
            big = big @ big / 64  # keep the side stream busy before the conv
        outs = [pyfastcnn.sparse_conv2d(x, p, padding=1) for p in (packed24, packed)]
    side.synchronize()
    for out in outs:
        assert rel_error(out.cpu(), ref) <= HALF_TOL[torch.float16]


@needs_gpu
def test_mixed_devices_and_bad_arguments_raise():
    x = torch.randn(1, 8, 5, 5, device="cuda")
    packed = pyfastcnn.pack_sparse(prune(torch.randn(4, 8, 3, 3), 0.5))
    with pytest.raises(ValueError, match="bias must be a CUDA tensor"):
        pyfastcnn.sparse_conv2d(x, packed, torch.randn(4))
    with pytest.raises(TypeError, match="input must have dtype"):
        pyfastcnn.sparse_conv2d(x.double(), packed)
    with pytest.raises(ValueError, match="bias must have 4 elements"):
        pyfastcnn.sparse_conv2d(x, packed, torch.randn(5, device="cuda"))
    with pytest.raises(ValueError, match="input channels"):
        pyfastcnn.sparse_conv2d(x[:, :6], packed)
    if torch.cuda.device_count() > 1:
        with pytest.raises(ValueError, match="same device"):
            pyfastcnn.sparse_conv2d(x, packed, torch.randn(4, device="cuda:1"))


@needs_gpu
def test_weight_uploads_once_per_device_and_dtype():
    w = prune_24(torch.randn(16, 16, 3, 3))
    packed = pyfastcnn.pack_sparse(w, "2:4")
    x = torch.randn(1, 16, 8, 8, device="cuda").half()
    pyfastcnn.sparse_conv2d(x, packed, padding=1)
    before = dict(packed.cache)
    pyfastcnn.sparse_conv2d(x, packed, padding=1)
    assert packed.cache.keys() == before.keys()
    assert all(packed.cache[k] is before[k] for k in before)
    assert pickle.loads(pickle.dumps(packed)).cache == {}


@needs_gpu
@pytest.mark.parametrize("fmt", ["csr", "2:4"])
def test_sparse_conv2d_module_after_cuda(fmt):
    conv = torch.nn.Conv2d(16, 24, 3, stride=2, padding=1)
    with torch.no_grad():
        conv.weight.copy_(prune_24(conv.weight))
    module = pyfastcnn.nn.SparseConv2d.from_dense(conv, format=fmt, relu=True).cuda()
    x = torch.randn(2, 16, 11, 11)
    with torch.no_grad():
        ref = torch.relu(conv.double()(x.double()))
    assert rel_error(module(x.cuda()).cpu(), ref) <= FP32_TOL
    xh = x.half()
    with torch.no_grad():
        w16 = conv.weight.half().double() if fmt == "2:4" else conv.weight.double()
        ref = torch.relu(F.conv2d(xh.double(), w16, conv.bias.double(), 2, 1))
    assert rel_error(module.half()(xh.cuda()).cpu(), ref) <= HALF_TOL[torch.float16]


@needs_gpu
def test_opcheck_cuda_ops():
    from pyfastcnn.ops import cuda_sparse

    w = prune_24(torch.randn(16, 8, 3, 3))
    packed = pyfastcnn.pack_sparse(w, "2:4")
    x = torch.randn(2, 8, 7, 7, device="cuda").half().contiguous(
        memory_format=torch.channels_last)
    frags, meta, m_pad, k_pad = cuda_sparse._device_24(packed, x.device, x.dtype, 1)
    args = (x, frags, meta, torch.randn(16, device="cuda"), [16, 8, 3, 3], [1, 1], [1, 1],
            [1, 1], 1, [7, 7], m_pad, k_pad, True)
    torch.library.opcheck(torch.ops.pyfastcnn.sparse24_conv2d_cuda.default, args)
    row_ptr, taps, values = cuda_sparse._device_csr(packed, x.device)
    plan = cuda_sparse._csr_plan(2, 8, (4, 4), (3, 3), (2, 2), (1, 1))
    chunk_ptr = cuda_sparse._device_chunks(packed, x.device, plan[2])
    geo = conv_geometry((2, 8, 7, 7), (16, 8, 3, 3), 2, 1, 1, 1)
    entries = cuda_sparse._device_entries(packed, x.device, plan, geo)
    for chunks, tiles in ((chunk_ptr, plan), (None, [0, 0, 0])):
        args = (x.float().contiguous(), row_ptr, taps, values, chunks,
                None if chunks is None else entries, None, [16, 8, 3, 3], [2, 2], [1, 1],
                [1, 1], 1, [4, 4], tiles, False)
        torch.library.opcheck(torch.ops.pyfastcnn.sparse_conv2d_cuda.default, args)


def test_gpu_tests_skip_with_a_reason_here():
    if not HAVE_GPU:
        assert needs_gpu.kwargs["reason"].startswith("no CUDA GPU")
