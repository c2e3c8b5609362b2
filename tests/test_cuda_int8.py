"""CUDA INT8 ops: int8_gemm (tensor-core and CUDA-core kernels), packed weights,
quantized_linear and quantized_conv2d on CUDA tensors, against exact integer products computed
on the CPU, the CPU ops of the same arguments and the float64 references.

Skipped without a GPU (tests/gpu.needs_gpu); benchmarks/gpu/run.sh runs them on one.
"""

import ctypes
import itertools
import math

import numpy as np
import pytest
import torch
from conftest import rel_error
from gpu import needs_gpu, poison_

import pyfastcnn
from pyfastcnn import _native
from pyfastcnn.ops import cuda_int8, reference
from pyfastcnn.ops import quantized as quantized_mod
from pyfastcnn.ops.quantized import _int8_gemm_packed, _quantized_conv2d, _quantized_linear

# The GEMM kernels: mma.sync (what "auto" takes), the CUDA-core fallback forced. Hopper's
# wgmma kernel runs the same tests at the end of this file (a fault there leaves the CUDA
# context unusable, so it must not hide the results of the others).
KERNELS = ["mma", "simt"]


@pytest.fixture(params=KERNELS)
def kernel(request, monkeypatch):
    monkeypatch.setattr(cuda_int8, "KERNEL", request.param)
    return request.param


@pytest.fixture
def wgmma(monkeypatch):
    if not cuda_int8.wgmma_available(torch.device("cuda", 0)):
        pytest.skip("wgmma needs an sm_90 GPU and a build with sm_90a code")
    monkeypatch.setattr(cuda_int8, "KERNEL", "wgmma")
    return "wgmma"


def rand_i8(*shape):
    t = torch.randint(-128, 128, shape, dtype=torch.int8)
    # Extremes somewhere in every operand: the first row/column hold -128 and 127.
    if t.numel():
        t.view(-1)[0] = -128
        t.view(-1)[-1] = 127
    return t


def exact_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a.long() @ b.long() wrapped to int32 like torch._int_mm (on the CPU; through float64,
    exact while |sum| < 2^53, i.e. K < 2^39, and BLAS-fast)."""
    c = (a.double() @ b.double()).long()
    return ((c + 2**31) % 2**32 - 2**31).to(torch.int32)


GEMM_SHAPES = [
    (1, 1, 1),
    (7, 13, 5),
    (1, 33, 16),
    (33, 7, 32),
    (100, 17, 3),
    (129, 257, 64),
    (257, 100, 96),
    (64, 130, 100),  # K not a multiple of 16
    (300, 260, 4096),
]
gemm_ids = [f"m{m}-n{n}-k{k}" for m, n, k in GEMM_SHAPES]


@needs_gpu
@pytest.mark.parametrize("m,n,k", GEMM_SHAPES, ids=gemm_ids)
def test_int8_gemm_exact(kernel, m, n, k):
    a, b = rand_i8(m, k), rand_i8(k, n)
    out = pyfastcnn.int8_gemm(a.cuda(), b.cuda())
    assert out.dtype == torch.int32 and out.is_cuda and out.shape == (m, n)
    assert torch.equal(out.cpu(), exact_mm(a, b))


@needs_gpu
@pytest.mark.parametrize("m,n,k", GEMM_SHAPES, ids=gemm_ids)
def test_int8_gemm_packed_exact(kernel, m, n, k):
    a, b = rand_i8(m, k), rand_i8(k, n)
    packed = pyfastcnn.pack_int8_weight(b)
    out = pyfastcnn.int8_gemm(a.cuda(), packed)
    assert torch.equal(out.cpu(), exact_mm(a, b))
    # The CPU path of the same packed weight still works and agrees.
    assert torch.equal(pyfastcnn.int8_gemm(a, packed), exact_mm(a, b))


@needs_gpu
def test_int8_gemm_views_and_misaligned_rows(kernel):
    a_t, b = rand_i8(96, 70), rand_i8(64, 48)
    a = a_t.cuda().t()[:, 3:67]  # [70, 64], column stride 70, starts 3 bytes in
    ref = exact_mm(a.cpu(), b)
    assert torch.equal(pyfastcnn.int8_gemm(a, b.cuda()).cpu(), ref)
    assert torch.equal(pyfastcnn.int8_gemm(a, pyfastcnn.pack_int8_weight(b)).cpu(), ref)
    packed_on_gpu = pyfastcnn.pack_int8_weight(b.cuda())  # CPU packing deferred to CPU use
    assert torch.equal(pyfastcnn.int8_gemm(a, packed_on_gpu).cpu(), ref)
    assert torch.equal(pyfastcnn.int8_gemm(a.cpu(), packed_on_gpu), ref)
    wide = rand_i8(70, 81).cuda()[:, 1:65]  # unit column stride, misaligned rows
    assert torch.equal(pyfastcnn.int8_gemm(wide, b.cuda()).cpu(), exact_mm(wide.cpu(), b))
    bt = rand_i8(48, 64).cuda().t()  # b as a transposed view
    assert torch.equal(pyfastcnn.int8_gemm(a, bt).cpu(), exact_mm(a.cpu(), bt.cpu()))
    rows = rand_i8(1, 64).cuda().expand(5, 64)  # row stride 0
    assert torch.equal(pyfastcnn.int8_gemm(rows, b.cuda()).cpu(), exact_mm(rows.cpu(), b))
    empty_k = pyfastcnn.int8_gemm(torch.empty(3, 0, dtype=torch.int8, device="cuda"),
                                  torch.empty(0, 4, dtype=torch.int8, device="cuda"))
    assert torch.equal(empty_k.cpu(), torch.zeros(3, 4, dtype=torch.int32))


@needs_gpu
def test_int8_gemm_wraps_like_int_mm(kernel):
    k = 131072 + 128  # 16384 * k > 2^31: the sum wraps modulo 2^32
    a = torch.full((3, k), -128, dtype=torch.int8)
    b = torch.full((k, 5), -128, dtype=torch.int8)
    out = pyfastcnn.int8_gemm(a.cuda(), b.cuda()).cpu()
    assert torch.equal(out, exact_mm(a, b))
    assert int(out[0, 0]) < 0


@needs_gpu
@pytest.mark.gpu_sanitize
@pytest.mark.parametrize("path", [1, 2], ids=["mma", "simt"])
def test_native_gemm_writes_exactly_its_outputs(path):
    """A poisoned output buffer wider than N: every [:, :N] element is written, nothing else."""
    m, n, k = 37, 70, 48
    a, b = rand_i8(m, k), rand_i8(k, n)
    if path == 3 and not cuda_int8.wgmma_available(torch.device("cuda", 0)):
        pytest.skip("wgmma needs an sm_90 GPU and a build with sm_90a code")
    bt = b.t().contiguous().cuda()
    a_dev = a.cuda()
    out = poison_(torch.empty((m, n + 9), dtype=torch.int32, device="cuda"))
    epi = _native.cuda.Int8Epilogue(0)
    _native.cuda.int8_gemm(0, torch.cuda.current_stream().cuda_stream, a_dev.data_ptr(), k, True,
                           bt.data_ptr(), k, m, n, k, out.data_ptr(), n + 9, epi, path)
    out = out.cpu()
    assert torch.equal(out[:, :n], exact_mm(a, b))
    assert bool((out[:, n:] == torch.iinfo(torch.int32).min).all())


# ---- quantized linear ------------------------------------------------------------------------

X_DTYPES = {"u8": (torch.uint8, 0, 256, 131), "s8": (torch.int8, -128, 128, -7)}
OUTS = [(torch.float32, None, None), (torch.uint8, 0.05, 128), (torch.int8, 0.05, -3)]


def quant_x(shape, kind):
    dtype, lo, hi, zp = X_DTYPES[kind]
    x = torch.randint(lo, hi, shape, dtype=dtype)
    x.view(-1)[0] = lo
    x.view(-1)[-1] = hi - 1
    return x, 0.02, zp


def check_against_cpu(y, y_cpu, ref, out_dtype):
    assert y.is_cuda and y.dtype == out_dtype and y.shape == y_cpu.shape
    y = y.cpu()
    if out_dtype == torch.float32:
        assert rel_error(y, ref) <= 1e-5
        assert rel_error(y, y_cpu) <= 1e-6
    else:  # codes within one quantization step of the CPU op and the float64 reference
        assert (y.int() - y_cpu.int()).abs().max().item() <= 1
        assert (y.double() - ref).abs().max().item() <= 1


@needs_gpu
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (7, 13, 5), (33, 65, 130), (200, 96, 64)],
                         ids=str)
@pytest.mark.parametrize("xk", X_DTYPES)
@pytest.mark.parametrize("out", OUTS, ids=["f32", "u8", "s8"])
def test_linear_matches_cpu(kernel, m, n, k, xk, out):
    x, xs, xzp = quant_x((m, k), xk)
    qw = pyfastcnn.quantize_weight(torch.randn(n, k))
    bias = torch.randn(n)
    out_dtype, os_, ozp = out
    for relu, clamp_max in ((False, None), (True, None), (True, 0.5)):
        kw = dict(out_dtype=out_dtype, out_scale=os_, out_zero_point=ozp, relu=relu,
                  clamp_max=clamp_max)
        y = pyfastcnn.quantized_linear(x.cuda(), xs, xzp, qw, bias.cuda(), **kw)
        y_cpu = pyfastcnn.quantized_linear(x, xs, xzp, qw, bias, **kw)
        ref = reference.quantized_linear(x, xs, xzp, qw.int_weight, qw.scale, bias, out_dtype,
                                         os_, ozp, relu)
        if clamp_max is not None:
            ref = ref.clamp(max=clamp_max) if out_dtype == torch.float32 else y_cpu.double()
        check_against_cpu(y, y_cpu, ref, out_dtype)


@needs_gpu
def test_linear_extremes_and_batched_input(kernel):
    x = torch.full((3, 2, 4096), 255, dtype=torch.uint8)
    qw = pyfastcnn.QuantizedWeight(torch.full((5, 4096), -128, dtype=torch.int8), torch.ones(5))
    y = pyfastcnn.quantized_linear(x.cuda(), 1.0, 254, qw)
    assert y.shape == (3, 2, 5)
    assert torch.equal(y.cpu(), torch.full((3, 2, 5), -128.0 * 4096))


# ---- quantized conv --------------------------------------------------------------------------

# (id, n, c, h, w, oc, kernel, stride, padding, dilation, groups)
CONV_CASES = [
    ("1x1", 4, 64, 14, 14, 128, (1, 1), 1, 0, 1, 1),
    ("3x3-pad1", 1, 32, 15, 15, 48, (3, 3), 1, 1, 1, 1),
    ("3x3-stride2", 4, 24, 17, 17, 40, (3, 3), 2, 1, 1, 1),
    ("stem7x7-c3", 1, 3, 32, 32, 16, (7, 7), 2, 3, 1, 1),
    ("dilation2", 2, 16, 13, 13, 24, (3, 3), 1, 2, 2, 1),
    ("groups2", 2, 32, 9, 9, 40, (3, 3), 1, 1, 1, 2),
    ("groups4-cg2", 1, 8, 7, 7, 12, (3, 3), 1, 1, 1, 4),
    ("depthwise", 2, 48, 11, 11, 48, (3, 3), 2, 1, 1, 48),
    ("1x5-pad-same", 1, 20, 9, 12, 8, (1, 5), 1, "same", 1, 1),
    ("5x5-stride2-nopad", 1, 17, 12, 10, 33, (5, 5), 2, 0, 1, 1),
]


@needs_gpu
@pytest.mark.parametrize("case", CONV_CASES, ids=[c[0] for c in CONV_CASES])
@pytest.mark.parametrize("xk", X_DTYPES)
@pytest.mark.parametrize("out", OUTS[:2], ids=["f32", "u8"])
def test_conv_matches_cpu(case, xk, out):
    _, n, c, h, w, oc, k, stride, padding, dilation, groups = case
    x, xs, xzp = quant_x((n, c, h, w), xk)
    qw = pyfastcnn.quantize_weight(torch.randn(oc, c // groups, *k), groups=groups)
    bias = torch.randn(oc)
    out_dtype, os_, ozp = out
    kw = dict(stride=stride, padding=padding, dilation=dilation, out_dtype=out_dtype,
              out_scale=os_, out_zero_point=ozp, relu=True)
    y_cpu = pyfastcnn.quantized_conv2d(x, xs, xzp, qw, bias, **kw)
    pad = padding
    if padding == "same":
        pad = ((k[0] - 1) // 2, (k[1] - 1) // 2)  # odd kernels: symmetric
    ref = reference.quantized_conv2d(x, xs, xzp, qw.int_weight, qw.scale, bias, stride, pad,
                                     dilation, groups, out_dtype, os_, ozp, True)
    for layout in (torch.channels_last, torch.contiguous_format):
        y = pyfastcnn.quantized_conv2d(x.cuda().contiguous(memory_format=layout), xs, xzp, qw,
                                       bias.cuda(), **kw)
        assert y.is_contiguous(memory_format=torch.channels_last)
        check_against_cpu(y, y_cpu, ref, out_dtype)


@needs_gpu
@pytest.mark.gpu_sanitize
def test_conv_small_sanitized():
    x, xs, xzp = quant_x((2, 5, 6, 7), "u8")
    for groups, oc in ((1, 6), (5, 5)):  # implicit GEMM, then the direct kernel
        qw = pyfastcnn.quantize_weight(torch.randn(oc, 5 // groups, 3, 3), groups=groups)
        kw = dict(stride=2, padding=1, out_dtype=torch.int8, out_scale=0.1, out_zero_point=2)
        y = pyfastcnn.quantized_conv2d(x.cuda(), xs, xzp, qw, **kw)
        y_cpu = pyfastcnn.quantized_conv2d(x, xs, xzp, qw, **kw)
        assert (y.cpu().int() - y_cpu.int()).abs().max().item() <= 1


@needs_gpu
@pytest.mark.parametrize("rk", ["u8", "s8"])
def test_conv_residual_matches_cpu(rk):
    x, xs, xzp = quant_x((2, 32, 8, 8), "u8")
    qw = pyfastcnn.quantize_weight(torch.randn(32, 32, 3, 3))
    r, rs, rzp = quant_x((2, 32, 8, 8), rk)
    kw = dict(padding=1, out_dtype=torch.uint8, out_scale=0.05, out_zero_point=0, relu=True,
              residual_scale=rs * 5, residual_zero_point=rzp)
    y = pyfastcnn.quantized_conv2d(x.cuda(), xs, xzp, qw, residual=r.cuda(), **kw)
    y_cpu = pyfastcnn.quantized_conv2d(x, xs, xzp, qw, residual=r, **kw)
    assert (y.cpu().int() - y_cpu.int()).abs().max().item() <= 1


@needs_gpu
def test_conv_batch_zero():
    qw = pyfastcnn.quantize_weight(torch.randn(8, 16, 3, 3))
    y = pyfastcnn.quantized_conv2d(torch.zeros(0, 16, 5, 5, dtype=torch.uint8, device="cuda"),
                                   0.1, 0, qw, padding=1)
    assert y.shape == (0, 8, 5, 5) and y.is_cuda


# ---- streams, devices, errors, torch.library ---------------------------------------------------


@needs_gpu
def test_runs_on_the_current_stream():
    a, b = rand_i8(256, 512), rand_i8(512, 384)
    packed = pyfastcnn.pack_int8_weight(b)
    x, xs, xzp = quant_x((4, 32, 16, 16), "u8")
    qw = pyfastcnn.quantize_weight(torch.randn(64, 32, 3, 3))
    a_dev, x_dev = a.cuda(), x.cuda()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        out = pyfastcnn.int8_gemm(a_dev, packed)
        y = pyfastcnn.quantized_conv2d(x_dev, xs, xzp, qw, padding=1)
    stream.synchronize()
    assert torch.equal(out.cpu(), exact_mm(a, b))
    y_cpu = pyfastcnn.quantized_conv2d(x, xs, xzp, qw, padding=1)
    assert rel_error(y.cpu(), y_cpu) <= 1e-6


@needs_gpu
def test_cuda_tensor_without_the_module(monkeypatch):
    monkeypatch.setattr(_native, "cuda", None)
    with pytest.raises(RuntimeError, match="built without its CUDA module"):
        pyfastcnn.int8_gemm(rand_i8(4, 16).cuda(), rand_i8(16, 8).cuda())


@needs_gpu
def test_mixed_devices_raise():
    a, b = rand_i8(4, 16), rand_i8(16, 8)
    with pytest.raises(ValueError, match="b must be on the same device as a"):
        pyfastcnn.int8_gemm(a.cuda(), b)
    qw = pyfastcnn.quantize_weight(torch.randn(8, 16))
    x = torch.randint(0, 256, (3, 16), dtype=torch.uint8)
    with pytest.raises(ValueError, match="bias must be on the same device as x"):
        pyfastcnn.quantized_linear(x.cuda(), 0.1, 3, qw, torch.randn(8))
    with pytest.raises(ValueError, match="bias must be on the same device as x"):
        pyfastcnn.quantized_linear(x, 0.1, 3, qw, torch.randn(8, device="cuda"))
    qc = pyfastcnn.quantize_weight(torch.randn(8, 4, 3, 3))
    xc = torch.randint(0, 256, (1, 4, 5, 5), dtype=torch.uint8, device="cuda")
    r = torch.zeros(1, 8, 5, 5, dtype=torch.uint8)
    with pytest.raises(ValueError, match="residual must be on the same device as x"):
        pyfastcnn.quantized_conv2d(xc, 0.1, 3, qc, padding=1, residual=r, residual_scale=0.1)


@needs_gpu
def test_opcheck_cuda_kernels():
    a, b = rand_i8(9, 32).cuda(), rand_i8(32, 12).cuda()
    torch.library.opcheck(torch.ops.pyfastcnn.int8_gemm.default, (a, b))
    packed = pyfastcnn.pack_int8_weight(b)
    _, data, col_sums = packed.cuda_operand(a.device)
    torch.library.opcheck(_int8_gemm_packed, (a, data[0], col_sums, "cuda", 12))
    qw = pyfastcnn.quantize_weight(torch.randn(12, 32))
    layout, data, col_sums, scale = qw.cuda_operand(a.device)
    x = torch.randint(0, 256, (9, 32), dtype=torch.uint8, device="cuda")
    torch.library.opcheck(_quantized_linear, (x, data, col_sums, layout, 12, scale, None, 0.1, 3,
                                              2, 0.0, math.inf, 0.05, -4))
    qc = pyfastcnn.quantize_weight(torch.randn(8, 4, 3, 3))
    layout, data, col_sums, scale = qc.cuda_operand(a.device)
    xc = torch.randint(0, 256, (2, 4, 6, 6), dtype=torch.uint8,
                       device="cuda").contiguous(memory_format=torch.channels_last)
    torch.library.opcheck(_quantized_conv2d, (xc, data, col_sums, layout, [8, 4, 3, 3], scale,
                                              None, [1, 1], [1, 1], [1, 1], 1, [6, 6], 0.1, 3, 1,
                                              -math.inf, math.inf, 1.0, 0))


@needs_gpu
def test_torch_compile_linear():
    qw = pyfastcnn.quantize_weight(torch.randn(24, 40))
    bias = torch.randn(24, device="cuda")

    def f(x):
        return pyfastcnn.quantized_linear(x, 0.02, 5, qw, bias, out_dtype=torch.uint8,
                                          out_scale=0.1, out_zero_point=3, relu=True)

    x = torch.randint(0, 256, (7, 40), dtype=torch.uint8, device="cuda")
    eager = f(x)  # uploads the weight to this device first (not inside the traced call)
    # aot_eager: traces the op and its fake through dynamo and AOTAutograd without the
    # seconds of Inductor code generation.
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    assert torch.equal(compiled(x), eager)



# ---- the Python side without a GPU -------------------------------------------------------------
# The CUDA op implementations run here on CPU tensors against an emulation of the native entry
# points that follows their documented contract (csrc/cuda/int8_ops.h: operand layouts, the
# implicit GEMM's address arithmetic of int8_common.cuh, the epilogue in float32 operation by
# operation). This checks the padding, weight layouts and epilogue arguments the Python layer
# passes; the kernels themselves need a GPU (the tests above).


class _EmulatedCudaModule:
    _TYPES = {0: np.int32, 1: np.float32, 2: np.int8, 3: np.uint8}

    class Int8Epilogue:
        def __init__(self, *args):
            (self.out_kind, self.col_sums, self.x_zero_point, self.x_scale, self.w_scale,
             self.bias, self.out_scale, self.out_zero_point, self.clamp_min, self.clamp_max,
             self.residual, self.residual_signed, self.residual_scale,
             self.residual_zero_point) = (list(args) + [0] * 14)[:14]

    @staticmethod
    def _view(ptr, count, dtype):
        dtype = np.dtype(dtype)
        buf = (ctypes.c_byte * (count * dtype.itemsize)).from_address(ptr)
        return np.frombuffer(buf, dtype=dtype)

    def _store(self, e, acc, rows, cols, channels, out, ldc):
        """acc int64 [R, C] -> out[rows * ldc + cols] by the epilogue of int8_common.cuh."""
        f32 = np.float32
        n_ch = int(channels.max()) + 1
        if e.col_sums:
            acc = acc - e.x_zero_point * self._view(e.col_sums, n_ch, np.int32)[channels]
        v = ((acc + 2**31) % 2**32 - 2**31).astype(np.int64)
        index = rows[:, None] * ldc + cols[None, :]
        count = int(index.max()) + 1
        dst = self._view(out, count, self._TYPES[e.out_kind])
        if e.out_kind == 0:
            dst[index] = v
            return
        eight = e.out_kind >= 2
        inv = f32(1) / f32(e.out_scale) if eight else f32(1)
        zp = f32(e.out_zero_point) if eight else f32(0)
        scale = f32(e.x_scale) * self._view(e.w_scale, n_ch, np.float32)[channels]
        bias = (self._view(e.bias, n_ch, np.float32)[channels] if e.bias
                else np.zeros_like(scale))
        if eight:
            scale, bias = scale * inv, bias * inv + zp
        y = v.astype(np.float32) * scale + bias
        if e.residual:
            r = self._view(e.residual, count, np.int8 if e.residual_signed else np.uint8)[index]
            y = y + (r.astype(np.int32) - e.residual_zero_point).astype(np.float32) * (
                f32(e.residual_scale) * inv)
        lo = f32(e.clamp_min) * inv + zp if eight else f32(e.clamp_min)
        hi = f32(e.clamp_max) * inv + zp if eight else f32(e.clamp_max)
        y = np.minimum(np.maximum(y, lo), hi)
        if e.out_kind == 1:
            dst[index] = y
            return
        lims = (-128, 127) if e.out_kind == 2 else (0, 255)
        dst[index] = np.clip(np.rint(y), *lims).astype(self._TYPES[e.out_kind])

    def int8_gemm_strided(self, device, stream, a, lda, a_signed, b, sbk, sbn, M, N, K, out,
                          ldc, e):
        if M == 0 or N == 0:
            return
        av = self._view(a, (M - 1) * lda + K, np.int8 if a_signed else np.uint8)
        bv = self._view(b, (K - 1) * sbk + (N - 1) * sbn + 1, np.int8)
        A = av[np.arange(M)[:, None] * lda + np.arange(K)[None, :]].astype(np.int64)
        B = bv[np.arange(K)[:, None] * sbk + np.arange(N)[None, :] * sbn].astype(np.int64)
        self._store(e, A @ B, np.arange(M), np.arange(N), np.arange(N)[None, :].repeat(M, 0),
                    out, ldc)

    def int8_gemm(self, device, stream, a, lda, a_signed, b, ldb, M, N, K, out, ldc, e, path=0):
        if path != 2 and K % 16 == 0 and K > 0:
            assert a % 16 == 0 and lda % 16 == 0 and b % 16 == 0 and ldb % 16 == 0
        self.int8_gemm_strided(device, stream, a, lda, a_signed, b, 1, ldb, M, N, K, out, ldc, e)

    def _conv(self, x, x_signed, batch, Hp, Wp, Cp, w, KH, KW, cgp, groups, ocg, sh, sw, dh, dw,
              OH, OW, out, e):
        """The implicit GEMM of int8_common.cuh: A row m = pixel, column k = (tap, c)."""
        M, K = batch * OH * OW, KH * KW * cgp
        xv = self._view(x, batch * Hp * Wp * Cp, np.int8 if x_signed else np.uint8)
        wv = self._view(w, groups * ocg * K, np.int8).reshape(groups * ocg, K).astype(np.int64)
        m = np.arange(M)
        ow, oh, img = m % OW, (m // OW) % OH, m // (OW * OH)
        row = img * Hp * Wp * Cp + oh * sh * Wp * Cp + ow * sw * Cp
        k = np.arange(K)
        tap, c = k // cgp, k % cgp
        col = (tap // KW) * dh * Wp * Cp + (tap % KW) * dw * Cp + c
        for g in range(groups):
            A = xv[row[:, None] + col[None, :] + g * cgp].astype(np.int64)
            acc = A @ wv[g * ocg : (g + 1) * ocg].T
            ch = g * ocg + np.arange(ocg)
            self._store(e, acc, m, ch, ch[None, :].repeat(M, 0), out, groups * ocg)

    def int8_conv2d_igemm(self, device, stream, x, x_signed, batch, Hp, Wp, Cp, w, KH, KW, cgp,
                          groups, ocg, sh, sw, dh, dw, OH, OW, out, e, path=0):
        assert path in (0, 1, 3)
        assert cgp % 16 == 0 and Cp == groups * cgp and x % 16 == 0 and w % 16 == 0
        assert (OH - 1) * sh + (KH - 1) * dh < Hp and (OW - 1) * sw + (KW - 1) * dw < Wp
        self._conv(x, x_signed, batch, Hp, Wp, Cp, w, KH, KW, cgp, groups, ocg, sh, sw, dh, dw,
                   OH, OW, out, e)

    def int8_conv2d_direct(self, device, stream, x, x_signed, batch, Hp, Wp, w, KH, KW, cg,
                           groups, ocg, sh, sw, dh, dw, OH, OW, out, e):
        assert (OH - 1) * sh + (KH - 1) * dh < Hp and (OW - 1) * sw + (KW - 1) * dw < Wp
        self._conv(x, x_signed, batch, Hp, Wp, groups * cg, w, KH, KW, cg, groups, ocg, sh, sw,
                   dh, dw, OH, OW, out, e)


@pytest.fixture
def emulated(monkeypatch):
    monkeypatch.setattr(cuda_int8, "cuda_module", lambda: _EmulatedCudaModule())
    monkeypatch.setattr(cuda_int8, "stream_of", lambda t: 0)


@pytest.mark.parametrize("m,n,k", GEMM_SHAPES[:-1], ids=gemm_ids[:-1])
@pytest.mark.parametrize("kernel_name", ["auto", "simt"])
def test_emulated_gemm_glue(emulated, monkeypatch, m, n, k, kernel_name):
    monkeypatch.setattr(cuda_int8, "KERNEL", kernel_name)
    a, b = rand_i8(m, k), rand_i8(k, n)
    assert torch.equal(cuda_int8.int8_gemm_impl(a, b), exact_mm(a, b))
    assert torch.equal(cuda_int8.int8_gemm_impl(a.t().contiguous().t(), b.t()
                                                .contiguous().t()), exact_mm(a, b))
    _, data, col_sums = pyfastcnn.pack_int8_weight(b).cuda_operand(torch.device("cpu"))
    assert data.shape == (1, n, (k + 15) // 16 * 16)
    out = cuda_int8.int8_gemm_packed_impl(a[:, :], data[0], col_sums, "cuda", n)
    assert torch.equal(out, exact_mm(a, b))


@pytest.mark.parametrize("xk", X_DTYPES)
@pytest.mark.parametrize("out", OUTS, ids=["f32", "u8", "s8"])
def test_emulated_linear_glue(emulated, xk, out):
    x, xs, xzp = quant_x((33, 70), xk)
    qw = pyfastcnn.quantize_weight(torch.randn(21, 70))
    bias = torch.randn(21)
    out_dtype, os_, ozp = out
    kind, lo, hi, o_scale, o_zp = quantized_mod._output_params(out_dtype, os_, ozp, True, 3.0)
    layout, data, col_sums, scale = qw.cuda_operand(torch.device("cpu"))
    y = cuda_int8.quantized_linear_impl(x, data, col_sums, layout, 21, scale, bias, xs, xzp,
                                        kind, lo, hi, o_scale, o_zp)
    y_cpu = pyfastcnn.quantized_linear(x, xs, xzp, qw, bias, out_dtype=out_dtype, out_scale=os_,
                                       out_zero_point=ozp, relu=True, clamp_max=3.0)
    assert y.dtype == out_dtype
    if out_dtype == torch.float32:
        assert rel_error(y, y_cpu) <= 1e-6
    else:
        assert (y.int() - y_cpu.int()).abs().max().item() <= 1


@pytest.mark.parametrize("case", CONV_CASES, ids=[c[0] for c in CONV_CASES])
@pytest.mark.parametrize("xk", X_DTYPES)
@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
def test_emulated_conv_glue(emulated, case, xk, layout):
    _, n, c, h, w, oc, k, stride, padding, dilation, groups = case
    x, xs, xzp = quant_x((n, c, h, w), xk)
    if layout == "nhwc":
        x = x.contiguous(memory_format=torch.channels_last)
    qw = pyfastcnn.quantize_weight(torch.randn(oc, c // groups, *k), groups=groups)
    bias = torch.randn(oc)
    args = quantized_mod._conv_args(x, xs, xzp, tuple(qw.int_weight.shape), qw.scale, groups,
                                    bias, stride, padding, dilation, torch.uint8, 0.05, 7, True)
    oh, ow = args[7]
    r, rs, rzp = quant_x((n, oc, oh, ow), "s8")
    r = r.contiguous(memory_format=torch.channels_last)
    layout_name, data, col_sums, scale = qw.cuda_operand(torch.device("cpu"))
    assert layout_name == ("cuda_direct" if c // groups < 4 and groups > 1 else "cuda_igemm")
    args[1] = scale
    y = cuda_int8.quantized_conv2d_impl(x, data, col_sums, layout_name, *args, r, rs * 3, rzp)
    y_cpu = pyfastcnn.quantized_conv2d(x, xs, xzp, qw, bias, stride, padding, dilation,
                                       out_dtype=torch.uint8, out_scale=0.05, out_zero_point=7,
                                       relu=True, residual=r, residual_scale=rs * 3,
                                       residual_zero_point=rzp)
    assert y.shape == y_cpu.shape and y.is_contiguous(memory_format=torch.channels_last)
    assert (y.int() - y_cpu.int()).abs().max().item() <= 1


def test_emulated_gemm_expanded_and_empty_operands(emulated):
    a = rand_i8(1, 32).expand(5, 32)  # row stride 0
    b = rand_i8(32, 1).expand(32, 6)  # column stride 0
    assert torch.equal(cuda_int8.int8_gemm_impl(a, b), exact_mm(a, b))
    empty_k = cuda_int8.int8_gemm_impl(torch.empty(3, 0, dtype=torch.int8),
                                       torch.empty(0, 4, dtype=torch.int8))
    assert torch.equal(empty_k, torch.zeros(3, 4, dtype=torch.int32))


@needs_gpu
def test_quant_modules_on_cuda():
    """QuantConv2d / QuantLinear moved to the GPU (their bias buffers move; the weight uploads
    itself once): the same codes as on the CPU, on every call (the CPU-only cached fast path
    must not catch CUDA inputs)."""
    from pyfastcnn.nn.quantized import QuantConv2d, QuantLinear

    qw = pyfastcnn.quantize_weight(torch.randn(16, 8, 3, 3))
    conv = QuantConv2d(qw, torch.randn(16), 1, 1, 1, 0.02, 128, 0.05, 10, "relu")
    x = torch.randint(0, 256, (2, 8, 9, 9), dtype=torch.uint8).contiguous(
        memory_format=torch.channels_last)
    y_cpu = conv(x)
    conv_gpu = conv.to("cuda")
    for _ in range(2):
        y = conv_gpu(x.cuda())
        assert (y.cpu().int() - y_cpu.int()).abs().max().item() <= 1
    lin = QuantLinear(pyfastcnn.quantize_weight(torch.randn(10, 20)), torch.randn(10), 0.02, 5,
                      None, None, None, out_dtype=torch.float32)
    xl = torch.randint(0, 256, (4, 20), dtype=torch.uint8)
    assert rel_error(lin.to("cuda")(xl.cuda()).cpu(), lin.to("cpu")(xl)) <= 1e-6


# ---- Hopper's wgmma kernel: the tests above again, last ----------------------------------------


@needs_gpu
@pytest.mark.parametrize("m,n,k", GEMM_SHAPES, ids=gemm_ids)
def test_wgmma_gemm_exact(wgmma, m, n, k):
    test_int8_gemm_exact(wgmma, m, n, k)
    test_int8_gemm_packed_exact(wgmma, m, n, k)


@needs_gpu
def test_wgmma_views_wraps_and_extremes(wgmma):
    test_int8_gemm_views_and_misaligned_rows(wgmma)
    test_int8_gemm_wraps_like_int_mm(wgmma)
    test_linear_extremes_and_batched_input(wgmma)


@needs_gpu
@pytest.mark.gpu_sanitize
def test_wgmma_native_gemm_writes_exactly_its_outputs():
    test_native_gemm_writes_exactly_its_outputs(3)


@needs_gpu
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (33, 65, 130), (200, 300, 256)], ids=str)
@pytest.mark.parametrize("xk", X_DTYPES)
@pytest.mark.parametrize("out", OUTS, ids=["f32", "u8", "s8"])
def test_wgmma_linear_matches_cpu(wgmma, m, n, k, xk, out):
    test_linear_matches_cpu(wgmma, m, n, k, xk, out)


@needs_gpu
@pytest.mark.parametrize("case", CONV_CASES, ids=[c[0] for c in CONV_CASES])
@pytest.mark.parametrize("xk", X_DTYPES)
def test_wgmma_conv_matches_cpu(wgmma, case, xk):
    test_conv_matches_cpu(case, xk, OUTS[1])


# ---- the kernels' index arithmetic, simulated ---------------------------------------------------
# Python mirrors of how igemm_kernel (int8_igemm_kernel.cuh) and wgmma_kernel
# (int8_wgmma_kernel.cuh) place operands in shared memory and read results out of registers,
# run against the PTX ISA's documented semantics of ldmatrix / mma.sync m16n8k32 / wgmma
# m64nNk32 (128-byte swizzle). They check that every shared-memory byte of a stage is written
# once, ldmatrix phases are bank-conflict free, the tile raster covers every tile, and the
# fragments recombine into A @ B^T with each output written once. Keep them in step with the
# kernels when those change; the GPU tests above check the hardware.


def _raster(tiles_m, tiles_n):
    for pid in range(tiles_m * tiles_n):
        width = 8 * tiles_n
        first_m = (pid // width) * 8
        rows = min(tiles_m - first_m, 8)
        yield first_m + (pid % width) % rows, (pid % width) // rows


def _simulate_mma_sync(mt, nt, m, n, k):
    bm, bn, bk = 32 * mt, 32 * nt, 64
    rng = np.random.default_rng(m * 7 + n)
    a = rng.integers(-128, 128, (m, k)).astype(np.int8)
    bt = rng.integers(-128, 128, (n, k)).astype(np.int8)
    out = np.full((m, n), -(2**40), np.int64)

    def swizzle(row, chunk):
        return row * bk + ((chunk ^ ((row >> 1) & 3)) << 4)

    tiles = list(_raster(-(-m // bm), -(-n // bn)))
    assert len(set(tiles)) == len(tiles) == (-(-m // bm)) * (-(-n // bn))
    for tm, tn in tiles:
        m0, n0 = tm * bm, tn * bn
        acc = np.zeros((8, 32, mt, nt, 4), np.int64)
        for kt in range(-(-k // bk)):
            smem = np.zeros((bm + bn) * bk, np.uint8)
            written = np.zeros(smem.shape, bool)
            for tid in range(256):
                chunk, row0, kk = tid & 3, tid >> 2, kt * bk + (tid & 3) * 16
                for base, rows, src, lim, off in ((0, bm, a, m, m0), (bm * bk, bn, bt, n, n0)):
                    for i in range(rows // 64):
                        row = row0 + 64 * i
                        d = base + swizzle(row, chunk)
                        assert not written[d:d + 16].any()
                        written[d:d + 16] = True
                        if off + row < lim and kk < k:
                            smem[d:d + 16] = src[off + row, kk:kk + 16].view(np.uint8)
            assert written.all()

            def ldmatrix(addrs):
                regs = np.zeros((32, 4, 4), np.uint8)
                for j in range(4):
                    assert len({(addrs[8 * j + r] % 128) // 16 for r in range(8)}) == 8
                    for lane in range(32):
                        p = addrs[8 * j + lane // 4] + 4 * (lane % 4)
                        regs[lane, j] = smem[p:p + 4]
                return regs.view(np.int8).astype(np.int64)

            for warp in range(8):
                wm, wn = warp >> 2, warp & 3
                for ks in range(2):
                    af = [ldmatrix([swizzle(wm * 16 * mt + mi * 16 + (lane & 15),
                                            ks * 2 + (lane >> 4)) for lane in range(32)])
                          for mi in range(mt)]
                    bf = []
                    for pair in range(nt // 2):
                        r = ldmatrix([bm * bk + swizzle(wn * 8 * nt + pair * 16 + (lane & 7)
                                                        + ((lane >> 4) << 3),
                                                        ks * 2 + ((lane >> 3) & 1))
                                      for lane in range(32)])
                        bf += [r[:, [0, 1]], r[:, [2, 3]]]
                    for mi in range(mt):
                        am = np.zeros((16, 32), np.int64)
                        for lane in range(32):
                            g, t = lane >> 2, lane & 3
                            for reg, (dr, dk) in enumerate(((0, 0), (8, 0), (0, 16), (8, 16))):
                                am[g + dr, dk + 4 * t:dk + 4 * t + 4] = af[mi][lane, reg]
                        for ni in range(nt):
                            bmat = np.zeros((32, 8), np.int64)
                            for lane in range(32):
                                g, t = lane >> 2, lane & 3
                                bmat[4 * t:4 * t + 4, g] = bf[ni][lane, 0]
                                bmat[16 + 4 * t:20 + 4 * t, g] = bf[ni][lane, 1]
                            c = am @ bmat
                            for lane in range(32):
                                g, t = lane >> 2, lane & 3
                                acc[warp, lane, mi, ni] += [c[g, 2 * t], c[g, 2 * t + 1],
                                                            c[g + 8, 2 * t], c[g + 8, 2 * t + 1]]
        for warp, lane, mi, ni, h, e in itertools.product(range(8), range(32), range(mt),
                                                          range(nt), range(2), range(2)):
            g, t = lane >> 2, lane & 3
            row = m0 + (warp >> 2) * 16 * mt + mi * 16 + g + 8 * h
            col = n0 + (warp & 3) * 8 * nt + ni * 8 + 2 * t + e
            if row < m and col < n:
                assert out[row, col] == -(2**40)
                out[row, col] = acc[warp, lane, mi, ni, 2 * h + e]
    assert (out == a.astype(np.int64) @ bt.astype(np.int64).T).all()


def _simulate_wgmma(bn, m, n, k):
    bm, bk = 128, 128
    rng = np.random.default_rng(m * 5 + n)
    a = rng.integers(-128, 128, (m, k)).astype(np.int8)
    bt = rng.integers(-128, 128, (n, k)).astype(np.int8)
    out = np.full((m, n), -(2**40), np.int64)

    def swizzle(row, chunk):
        return row * bk + ((chunk ^ (row & 7)) << 4)

    def hardware_address(start, r, kk):
        """Byte (row r, k kk) of an operand whose descriptor starts at `start` (K-major, 128B
        swizzle, 8-row atoms 1024 bytes apart, stage base 1024-aligned)."""
        addr = start + (r // 8) * 1024 + (r % 8) * 128 + kk
        return addr ^ (((addr >> 7) & 7) << 4)

    for tm, tn in _raster(-(-m // bm), -(-n // bn)):
        m0, n0 = tm * bm, tn * bn
        acc = np.zeros((8, 32, bn // 2), np.int64)
        for kt in range(-(-k // bk)):
            smem = np.zeros((bm + bn) * bk, np.uint8)
            written = np.zeros(smem.shape, bool)
            for tid in range(256):
                chunk, row0, kk = tid & 7, tid >> 3, kt * bk + (tid & 7) * 16
                for base, rows, src, lim, off in ((0, bm, a, m, m0), (bm * bk, bn, bt, n, n0)):
                    for i in range(rows * 8 // 256):
                        row = row0 + 32 * i
                        d = base + swizzle(row, chunk)
                        assert not written[d:d + 16].any()
                        written[d:d + 16] = True
                        if off + row < lim and kk < k:
                            smem[d:d + 16] = src[off + row, kk:kk + 16].view(np.uint8)
            assert written.all()
            s8 = smem.view(np.int8).astype(np.int64)
            for wg, ks in itertools.product(range(2), range(4)):
                am = np.array([[s8[hardware_address(wg * 64 * bk + 32 * ks, r, j)]
                                for j in range(32)] for r in range(64)])
                bmat = np.array([[s8[hardware_address(bm * bk + 32 * ks, r, j)]
                                  for j in range(32)] for r in range(bn)])
                d = am @ bmat.T
                for w, lane, i, j in itertools.product(range(4), range(32), range(bn // 8),
                                                       range(4)):
                    g, t = lane >> 2, lane & 3
                    acc[wg * 4 + w, lane, 4 * i + j] += d[16 * w + g + 8 * (j // 2),
                                                          8 * i + 2 * t + j % 2]
        for warp, lane, i, h, e in itertools.product(range(8), range(32), range(bn // 8),
                                                     range(2), range(2)):
            g, t = lane >> 2, lane & 3
            row = m0 + (warp >> 2) * 64 + (warp & 3) * 16 + g + 8 * h
            col = n0 + 8 * i + 2 * t + e
            if row < m and col < n:
                assert out[row, col] == -(2**40)
                out[row, col] = acc[warp, lane, 4 * i + 2 * h + e]
    assert (out == a.astype(np.int64) @ bt.astype(np.int64).T).all()


@pytest.mark.parametrize("mt,nt,m,n,k", [(4, 4, 130, 140, 80), (4, 8, 20, 300, 80),
                                         (2, 2, 70, 33, 48), (4, 2, 40, 70, 16)], ids=str)
def test_simulated_mma_sync_index_math(mt, nt, m, n, k):
    _simulate_mma_sync(mt, nt, m, n, k)


@pytest.mark.parametrize("bn,m,n,k", [(128, 40, 140, 160), (256, 20, 260, 48)], ids=str)
def test_simulated_wgmma_index_math(bn, m, n, k):
    _simulate_wgmma(bn, m, n, k)
