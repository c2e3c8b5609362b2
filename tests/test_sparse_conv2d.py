import pickle

import pytest
import torch
from conftest import rel_error
from conv_cases import ConvCase, conv_cases, layouts, to_layout

import pyfastcnn
from pyfastcnn import _native
from pyfastcnn.ops import reference

TOL = 1e-5


def prune(weight: torch.Tensor, density: float) -> torch.Tensor:
    """Keep a random `density` fraction of the weights (at least none, at most all)."""
    return weight * (torch.rand_like(weight) < density)


def prune_blocks(weight: torch.Tensor, keep: float, groups: int = 1) -> torch.Tensor:
    """Zero whole blocks: for each group, 32 output channels x one (c, kh, kw) position."""
    oc = weight.shape[0]
    ocg = oc // groups
    channel_block = (torch.arange(oc) % ocg) // 32 + (torch.arange(oc) // ocg) * 1000
    blocks = torch.unique(channel_block)
    mask = torch.rand(len(blocks), *weight.shape[1:]) < keep
    index = torch.searchsorted(blocks, channel_block)
    return weight * mask[index]


@conv_cases
@layouts
@pytest.mark.parametrize("fmt", ["csr", "block"])
def test_matches_reference(isa, case: ConvCase, layout, fmt):
    x = case.input()
    w = prune(case.weight(), 0.3)
    bias = torch.randn(case.oc)
    packed = pyfastcnn.pack_sparse(w, fmt, groups=case.groups)
    out = pyfastcnn.sparse_conv2d(to_layout(x, layout), packed, bias, **case.kwargs())
    ref = reference.conv2d(x, w, bias, **case.kwargs())
    assert out.shape == ref.shape and out.dtype == torch.float32
    assert rel_error(out, ref) <= TOL


# The CSR kernels sum a large layer in slices of its input channels (about 24 KiB of input per
# 64-pixel tile) and store each tile's output pixels straight into the output; a 1x1 stride-1
# unpadded conv of an NCHW input reads it in place, of a channels_last one transposes each
# tile's channels slice by slice into a buffer. Shapes where those paths meet their edges:
# several channel slices, tiles that end mid-row or hold a 4-pixel remainder, padding columns.
CHUNKED_CASES = [
    ConvCase("3x3-c80-30x30", 2, 80, 30, 30, 9, (3, 3), padding=1),
    ConvCase("3x3-c150-7x7", 1, 150, 7, 7, 5, (3, 3), padding=1),
    ConvCase("1x1-c200-14x14", 2, 200, 14, 14, 7, (1, 1)),
    ConvCase("1x1-c130-s2", 1, 130, 13, 11, 6, (1, 1), stride=2),
    ConvCase("5x5-c60-s2-dil2", 1, 60, 23, 21, 4, (5, 5), stride=2, padding=3, dilation=2),
    # last tiles of 100 and 96 pixels (the AVX-512 kernel's 128-pixel tiles cut short)
    ConvCase("1x1-12x19", 2, 20, 12, 19, 5, (1, 1)),
    ConvCase("1x1-14x16", 1, 20, 14, 16, 5, (1, 1)),
]


@pytest.mark.parametrize("case", CHUNKED_CASES, ids=lambda c: c.id)
@layouts
def test_channel_slices_and_direct_stores(isa, case: ConvCase, layout):
    x, w, bias = case.input(), prune(case.weight(), 0.2), torch.randn(case.oc)
    packed = pyfastcnn.pack_sparse(w, "csr")
    for relu in (False, True):
        out = pyfastcnn.sparse_conv2d(to_layout(x, layout), packed, bias, relu=relu,
                                      **case.kwargs())
        ref = reference.conv2d(x, w, bias, relu=relu, **case.kwargs())
        assert rel_error(out, ref) <= TOL


@pytest.mark.parametrize("threads", [2, 6])
def test_more_threads_than_channel_chunks(isa, threads):
    """Few pixel tiles: threads share out output channels (20 channels over 16 wanted chunks
    once made empty chunks, whose buffer size went negative and aborted the process)."""
    case = ConvCase("c150-oc20-7x7", 1, 150, 7, 7, 20, (3, 3), padding=1)
    x, w, bias = case.input(), prune(case.weight(), 0.2), torch.randn(case.oc)
    before = pyfastcnn.get_num_threads()
    pyfastcnn.set_num_threads(threads)
    try:
        out = pyfastcnn.sparse_conv2d(x, pyfastcnn.pack_sparse(w, "csr"), bias, **case.kwargs())
    finally:
        pyfastcnn.set_num_threads(before)
    assert rel_error(out, reference.conv2d(x, w, bias, **case.kwargs())) <= TOL


@pytest.mark.parametrize("out_hw", [(2, 2), (4, 3), (5, 5)])
def test_native_1x1_output_size_sets_padding(isa, out_hw):
    """The native op takes OH, OW from `out` (bottom/right padding follows): a 1x1 stride-1
    conv whose output is not the input's size must not read the input in place."""
    x = torch.randn(1, 4, 4, 4)
    w = prune(torch.randn(3, 4, 1, 1), 0.7)
    packed = pyfastcnn.pack_sparse(w, "csr")
    out = torch.empty(1, 3, *out_hw)
    _native.C.sparse_conv2d_csr(
        _native.tensor_arg(x), _native.tensor_arg(packed.row_ptr),
        _native.tensor_arg(packed.col_idx), _native.tensor_arg(packed.values), None, 3, 4, 1, 1,
        1, 1, 0, 0, 1, 1, 1, float("-inf"), float("inf"), _native.tensor_arg(out))
    full = reference.conv2d(torch.nn.functional.pad(x, (0, 1, 0, 1)), w, None)  # 5 x 5
    assert rel_error(out, full[:, :, :out_hw[0], :out_hw[1]]) <= TOL


@pytest.mark.parametrize("density", [1.0, 0.5, 0.1, 0.02, 0.0])
def test_densities_and_relu(isa, density):
    case = ConvCase("d", 2, 12, 11, 10, 9, (3, 3), padding=1, stride=(1, 2))
    x, w = case.input(), prune(case.weight(), density)
    w[3] = 0  # an output channel with no non-zero at all: bias only
    bias = torch.randn(case.oc)
    for relu in (False, True):
        out = pyfastcnn.sparse_conv2d(x, w, bias, relu=relu, **case.kwargs())
        ref = reference.conv2d(x, w, bias, relu=relu, **case.kwargs())
        assert rel_error(out, ref) <= TOL


# Output channels per group: 35 (a 32-column panel + 3), 28 (AVX2 halves of 16 + 12), 56 (32 +
# 16 + 8), 16 (one AVX2 half, the other empty).
@pytest.mark.parametrize("oc,groups", [(70, 2), (28, 1), (56, 1), (32, 2)])
def test_block_pruned_weights_pack_as_blocks(isa, oc, groups):
    case = ConvCase("b", 2, 16, 9, 9, oc, (3, 3), padding=1, groups=groups)
    w = prune_blocks(case.weight(), 0.2, groups=groups)
    # "auto": blocks where this level has the block kernel (AVX2 and up), csr on scalar
    has_block_kernel = pyfastcnn.config()["kernels"]["sparse_conv2d_block"] != "scalar"
    auto = pyfastcnn.pack_sparse(w, groups=groups)
    assert auto.format == ("block" if has_block_kernel else "csr")
    packed = pyfastcnn.pack_sparse(w, "block", groups=groups)  # runs anywhere (csr on scalar)
    assert torch.equal(packed.to_dense(), w)
    assert pyfastcnn.pack_sparse(prune(case.weight(), 0.2), groups=groups).format == "csr"
    x, bias = case.input(), torch.randn(case.oc)
    for weight in (packed, auto):
        for relu in (False, True):
            out = pyfastcnn.sparse_conv2d(x, weight, bias, relu=relu, **case.kwargs())
            ref = reference.conv2d(x, w, bias, relu=relu, **case.kwargs())
            assert rel_error(out, ref) <= TOL


def test_block_weight_needs_matching_groups():
    packed = pyfastcnn.pack_sparse(torch.randn(8, 2, 3, 3), "block", groups=2)
    with pytest.raises(ValueError, match="packed for groups=2"):
        pyfastcnn.sparse_conv2d(torch.randn(1, 2, 5, 5), packed)


def test_dense_tensor_and_packed_weight_agree():
    x, w = torch.randn(2, 6, 8, 8), prune(torch.randn(4, 6, 3, 3), 0.4)
    assert torch.equal(
        pyfastcnn.sparse_conv2d(x, w, padding=1),
        pyfastcnn.sparse_conv2d(x, pyfastcnn.pack_sparse(w), padding=1),
    )


def test_channels_last_in_gives_channels_last_out():
    x = torch.randn(1, 4, 6, 6).contiguous(memory_format=torch.channels_last)
    out = pyfastcnn.sparse_conv2d(x, torch.randn(8, 4, 3, 3), padding=1)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert pyfastcnn.sparse_conv2d(x.contiguous(), torch.randn(8, 4, 3, 3)).is_contiguous()


def test_pack_sparse_records_shape_and_density_and_round_trips():
    w = prune(torch.randn(16, 8, 3, 3), 0.25)
    packed = pyfastcnn.pack_sparse(w)
    assert packed.shape == (16, 8, 3, 3)
    assert packed.nnz == int((w != 0).sum())
    assert packed.density == pytest.approx(packed.nnz / w.numel())
    assert torch.equal(packed.to_dense(), w)
    restored = pickle.loads(pickle.dumps(packed))
    assert torch.equal(restored.to_dense(), w) and restored.shape == packed.shape
    assert "density" in repr(packed)


def test_nan_propagates_through_nonzero_weights():
    x = torch.randn(1, 3, 7, 7)
    x[0, 1, 3, 3] = float("nan")
    w = torch.randn(4, 3, 3, 3)  # no zeros: every output touching the NaN is NaN
    w[w == 0] = 1.0
    for relu in (False, True):
        out = pyfastcnn.sparse_conv2d(x, w, padding=1, relu=relu)
        ref = reference.conv2d(x, w, padding=1, relu=relu)
        assert torch.equal(out.isnan(), ref.isnan()) and out.isnan().any()


def test_empty_batch():
    out = pyfastcnn.sparse_conv2d(torch.randn(0, 3, 8, 8), torch.randn(5, 3, 3, 3), stride=2)
    assert out.shape == (0, 5, 3, 3)


def test_thread_counts_agree():
    x, w = torch.randn(3, 8, 12, 12), prune(torch.randn(10, 8, 3, 3), 0.3)
    previous = pyfastcnn.get_num_threads()
    try:
        outs = []
        for threads in (1, 2, 3):
            pyfastcnn.set_num_threads(threads)
            outs.append(pyfastcnn.sparse_conv2d(x, w, padding=1))
    finally:
        pyfastcnn.set_num_threads(previous)
    assert all(torch.equal(o, outs[0]) for o in outs)


def _x():
    return torch.randn(2, 4, 8, 8)


def _w():
    return torch.randn(6, 4, 3, 3)


BAD_INPUTS = [
    (
        "input-float64",
        lambda: dict(input=_x().double(), weight=_w()),
        TypeError,
        "input must have dtype",
    ),
    (
        "input-3d",
        lambda: dict(input=torch.randn(4, 8, 8), weight=_w()),
        ValueError,
        "input must be 4-D",
    ),
    (
        "input-meta",
        lambda: dict(input=torch.empty(2, 4, 8, 8, device="meta"), weight=_w()),
        ValueError,
        "input must be a CPU tensor",
    ),
    ("weight-int", lambda: dict(input=_x(), weight=_w().int()), TypeError, "weight must have"),
    ("weight-list", lambda: dict(input=_x(), weight=[1.0]), TypeError, "weight must be"),
    (
        "channel-mismatch",
        lambda: dict(input=_x(), weight=torch.randn(6, 3, 3, 3)),
        ValueError,
        "input channels",
    ),
    (
        "bias-length",
        lambda: dict(input=_x(), weight=_w(), bias=torch.randn(5)),
        ValueError,
        "bias must have 6 elements",
    ),
    (
        "bias-dtype",
        lambda: dict(input=_x(), weight=_w(), bias=torch.randn(6).double()),
        TypeError,
        "bias must have dtype",
    ),
    (
        "stride-0",
        lambda: dict(input=_x(), weight=_w(), stride=0),
        ValueError,
        "stride must be positive",
    ),
    ("stride-float", lambda: dict(input=_x(), weight=_w(), stride=1.5), TypeError, "stride"),
    (
        "padding-negative",
        lambda: dict(input=_x(), weight=_w(), padding=-1),
        ValueError,
        "padding must be non-negative",
    ),
    (
        "padding-word",
        lambda: dict(input=_x(), weight=_w(), padding="full"),
        ValueError,
        "padding must be",
    ),
    (
        "same-strided",
        lambda: dict(input=_x(), weight=_w(), padding="same", stride=2),
        ValueError,
        "padding='same'",
    ),
    (
        "dilation-0",
        lambda: dict(input=_x(), weight=_w(), dilation=0),
        ValueError,
        "dilation must be positive",
    ),
    (
        "kernel-too-big",
        lambda: dict(input=torch.randn(1, 4, 2, 2), weight=_w()),
        ValueError,
        "larger than the padded input",
    ),
    (
        "groups-not-dividing",
        lambda: dict(input=_x(), weight=torch.randn(6, 4, 3, 3), groups=3),
        ValueError,
        "groups=3",
    ),
    ("groups-zero", lambda: dict(input=_x(), weight=_w(), groups=0), ValueError, "groups=0"),
    ("relu-not-bool", lambda: dict(input=_x(), weight=_w(), relu=1), TypeError, "relu"),
]


@pytest.mark.parametrize(
    "make,error,match", [b[1:] for b in BAD_INPUTS], ids=[b[0] for b in BAD_INPUTS]
)
def test_bad_input(make, error, match):
    with pytest.raises(error, match=match):
        pyfastcnn.sparse_conv2d(**make())


def test_pack_sparse_bad_input():
    with pytest.raises(TypeError, match="weight must have dtype"):
        pyfastcnn.pack_sparse(torch.randn(2, 2, 3, 3).half())
    with pytest.raises(ValueError, match="weight must be 4-D"):
        pyfastcnn.pack_sparse(torch.randn(2, 9))
    with pytest.raises(ValueError, match="format must be one of"):
        pyfastcnn.pack_sparse(_w(), format="coo")
    with pytest.raises(ValueError, match="groups=4 must divide"):
        pyfastcnn.pack_sparse(_w(), groups=4)


def _native_call(row_ptr, col_idx, values, c_per_group=4, batch=2):
    x = _x()[:batch]
    out = torch.empty(batch, row_ptr.numel() - 1, 6, 6)
    _native.C.sparse_conv2d_csr(
        _native.tensor_arg(x),
        _native.tensor_arg(row_ptr),
        _native.tensor_arg(col_idx),
        _native.tensor_arg(values),
        None,
        row_ptr.numel() - 1,
        c_per_group,
        3,
        3,
        1,
        1,
        0,
        0,
        1,
        1,
        1,
        float("-inf"),
        float("inf"),
        _native.tensor_arg(out),
    )


def test_native_refuses_corrupt_sparse_weight(isa):
    """Indices decide which memory the kernel reads: C++ checks each one (at every ISA level:
    the vector kernels check them while preparing, the scalar one before; an empty batch too)."""
    ok = pyfastcnn.pack_sparse(prune(_w(), 0.5))
    _native_call(ok.row_ptr, ok.col_idx, ok.values)
    bad_col = ok.col_idx.clone()
    bad_col[0] = 4 * 9  # one past the last tap
    with pytest.raises(ValueError, match="col_idx entry out of range"):
        _native_call(ok.row_ptr, bad_col, ok.values)
    with pytest.raises(ValueError, match="col_idx entry out of range"):
        _native_call(ok.row_ptr, bad_col, ok.values, batch=0)
    negative = ok.col_idx.clone()
    negative[-1] = -1
    with pytest.raises(ValueError, match="col_idx entry out of range"):
        _native_call(ok.row_ptr, negative, ok.values)
    # the kernels walk each row in column order: a swapped or repeated pair is refused
    row = int(torch.argmax(ok.row_ptr[1:] - ok.row_ptr[:-1]))
    first = int(ok.row_ptr[row])
    swapped = ok.col_idx.clone()
    swapped[first], swapped[first + 1] = ok.col_idx[first + 1], ok.col_idx[first]
    with pytest.raises(ValueError, match="strictly increasing within each row"):
        _native_call(ok.row_ptr, swapped, ok.values)
    repeated = ok.col_idx.clone()
    repeated[first + 1] = repeated[first]
    with pytest.raises(ValueError, match="strictly increasing within each row"):
        _native_call(ok.row_ptr, repeated, ok.values)
    bad_rows = ok.row_ptr.clone()
    bad_rows[-1] += 1
    with pytest.raises(ValueError, match="row_ptr must start at 0 and end at nnz"):
        _native_call(bad_rows, ok.col_idx, ok.values)
    with pytest.raises(ValueError, match="values must have"):
        _native_call(ok.row_ptr, ok.col_idx, ok.values[:-1])
    with pytest.raises(ValueError, match="input channels per group"):
        _native_call(ok.row_ptr, ok.col_idx, ok.values, c_per_group=3)


def test_native_refuses_corrupt_block_weight():
    ok = pyfastcnn.pack_sparse(prune(_w(), 0.5), "block")
    x, out = _x(), torch.empty(2, 6, 6, 6)

    def call(row_ptr, col_idx, values):
        _native.C.sparse_conv2d_block(
            _native.tensor_arg(x), _native.tensor_arg(row_ptr), _native.tensor_arg(col_idx),
            _native.tensor_arg(values), None, 6, 4, 3, 3, 1, 1, 0, 0, 1, 1, 1, float("-inf"),
            float("inf"), _native.tensor_arg(out))

    call(ok.row_ptr, ok.col_idx, ok.values)
    bad_col = ok.col_idx.clone()
    bad_col[0] = 36
    with pytest.raises(ValueError, match="col_idx entry out of range"):
        call(ok.row_ptr, bad_col, ok.values)
    with pytest.raises(ValueError, match="row_ptr must have"):
        call(torch.zeros(3, dtype=torch.int64), ok.col_idx, ok.values)
    with pytest.raises(ValueError, match="values must have"):
        call(ok.row_ptr, ok.col_idx, ok.values[:-1])


def test_opcheck():
    w = pyfastcnn.pack_sparse(prune(torch.randn(6, 2, 3, 3), 0.5))
    x = torch.randn(2, 4, 7, 7).contiguous(memory_format=torch.channels_last)
    args = (
        x,
        w.row_ptr,
        w.col_idx,
        w.values,
        torch.randn(6),
        list(w.shape),
        [2, 1],
        [1, 1],
        [1, 1],
        2,
        [4, 7],
        True,
    )
    torch.library.opcheck(torch.ops.pyfastcnn.sparse_conv2d_csr.default, args)
    b = pyfastcnn.pack_sparse(prune(torch.randn(6, 2, 3, 3), 0.5), "block", groups=2)
    args = (x, b.row_ptr, b.col_idx, b.values) + args[4:]
    torch.library.opcheck(torch.ops.pyfastcnn.sparse_conv2d_block.default, args)


@pytest.mark.parametrize("fmt", ["auto", "csr", "block"])
def test_sparse_conv2d_module(isa, fmt):
    conv = torch.nn.Conv2d(12, 40, 3, stride=2, padding=1, groups=2)
    with torch.no_grad():
        conv.weight.copy_(prune(conv.weight, 0.2))
    module = pyfastcnn.nn.SparseConv2d.from_dense(conv, format=fmt, relu=True)
    x = torch.randn(2, 12, 11, 11)
    with torch.no_grad():
        ref = torch.relu(conv.double()(x.double()))
    assert rel_error(module(x), ref) <= TOL
    assert module.density == pytest.approx(float((conv.weight != 0).float().mean()))
    restored = pickle.loads(pickle.dumps(module))
    assert torch.equal(restored(x), module(x))
    other = pyfastcnn.nn.SparseConv2d.from_dense(torch.nn.Conv2d(12, 40, 3, stride=2, padding=1,
                                                                 groups=2), format=fmt, relu=True)
    other.load_state_dict(module.state_dict())
    assert torch.equal(other(x), module(x))
    with pytest.raises(TypeError, match="conv must be"):
        pyfastcnn.nn.SparseConv2d.from_dense(torch.nn.Linear(2, 3))


def test_sparse_conv2d_module_stores_only_the_packed_form():
    """A pruned module is smaller on disk than the dense conv (no dense copy, int16 indices);
    its state dict loads back exactly, a dense state dict is packed, old pickles that carried
    the dense weight still load, and corrupt or mismatched arrays are a clear error."""
    import io

    conv = torch.nn.Conv2d(64, 64, 3, padding=1)
    with torch.no_grad():
        conv.weight.copy_(prune(conv.weight, 0.2))
    module = pyfastcnn.nn.SparseConv2d.from_dense(conv, format="csr")
    x = torch.randn(1, 64, 6, 6)

    def saved(obj) -> bytes:
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        return buffer.getvalue()

    dense_bytes = len(saved(conv))
    # 20% of the weights as float32 values + int16 indices: ~0.3 of the dense file
    assert len(saved(module)) < 0.4 * dense_bytes
    assert len(saved(module.state_dict())) < 0.4 * dense_bytes
    assert "weight" not in module.state_dict()
    assert module.state_dict()["sparse_col_idx"].dtype == torch.int16
    assert torch.equal(module.weight, conv.weight.detach())

    restored = torch.load(io.BytesIO(saved(module)), weights_only=False)
    assert restored.packed.col_idx.dtype == torch.int32 and torch.equal(restored(x), module(x))
    fresh = pyfastcnn.nn.SparseConv2d.from_dense(torch.nn.Conv2d(64, 64, 3, padding=1), "csr")
    fresh.load_state_dict(torch.load(io.BytesIO(saved(module.state_dict()))))
    assert torch.equal(fresh(x), module(x))
    fresh = pyfastcnn.nn.SparseConv2d.from_dense(torch.nn.Conv2d(64, 64, 3, padding=1), "csr")
    fresh.load_state_dict(conv.state_dict())  # dense weight and bias: packed on load
    assert torch.equal(fresh(x), module(x))

    legacy = pyfastcnn.nn.SparseConv2d.from_dense(conv, format="csr")
    legacy._buffers["weight"] = conv.weight.detach().clone()  # what older versions stored
    legacy = pickle.loads(pickle.dumps(legacy))
    assert "weight" not in legacy.state_dict() and torch.equal(legacy(x), module(x))

    state = module.state_dict()
    for key, damaged, message in [
            ("sparse_col_idx", state["sparse_col_idx"] + 1000, "sparse_col_idx entries"),
            ("sparse_col_idx", -state["sparse_col_idx"] - 1, "sparse_col_idx entries"),
            ("sparse_row_ptr", state["sparse_row_ptr"].flip(0), "sparse_row_ptr"),
            ("sparse_values", state["sparse_values"][1:], "sparse_values"),
            ("sparse_format", torch.tensor(9, dtype=torch.uint8), "unknown sparse_format")]:
        with pytest.raises(RuntimeError, match=message):
            fresh.load_state_dict(dict(state, **{key: damaged}))
    small = pyfastcnn.nn.SparseConv2d.from_dense(torch.nn.Conv2d(8, 8, 3), "csr")
    with pytest.raises(RuntimeError, match="size mismatch"):
        small.load_state_dict(state)
    # the same number of reduction entries per channel, laid out differently: still a mismatch
    other = pyfastcnn.nn.SparseConv2d.from_dense(torch.nn.Conv2d(576, 64, 1), "csr")
    with pytest.raises(RuntimeError, match="size mismatch"):
        other.load_state_dict(state)
    with pytest.raises(RuntimeError, match="size mismatch"):
        small.load_state_dict(conv.state_dict())


def test_prepared_indices_follow_the_weight_and_the_geometry(isa):
    """The CPU kernels keep a csr weight's prepared indices between calls (SparsePlanSlot):
    reused for the same arrays and layout, made again for a new input size or layout, and for
    arrays changed in place (which are checked again)."""
    w = prune(torch.randn(12, 10, 3, 3), 0.3)
    packed = pyfastcnn.pack_sparse(w, "csr")
    for shape, layout in [((2, 10, 9, 11), "nchw"), ((2, 10, 9, 11), "nchw"),
                          ((1, 10, 14, 6), "nchw"), ((2, 10, 9, 11), "channels_last")]:
        x = torch.randn(shape)
        out = pyfastcnn.sparse_conv2d(to_layout(x, layout), packed, None, padding=1)
        assert rel_error(out, reference.conv2d(x, w, None, padding=(1, 1))) <= 1e-5
    # the same positions, other values; then other positions (each row still increasing)
    packed.values.mul_(-2.0)
    x = torch.randn(2, 10, 9, 11)
    w2 = packed.to_dense()
    assert torch.equal(w2, -2.0 * w)
    out = pyfastcnn.sparse_conv2d(x, packed, None, padding=1)
    assert rel_error(out, reference.conv2d(x, w2, None, padding=(1, 1))) <= 1e-5
    first, last = int(packed.row_ptr[0]), int(packed.row_ptr[1])
    if last > first and int(packed.col_idx[last - 1]) < 10 * 9 - 1:
        packed.col_idx[last - 1] += 1  # the row's last entry one column further on
        w3 = packed.to_dense()
        out = pyfastcnn.sparse_conv2d(x, packed, None, padding=1)
        assert rel_error(out, reference.conv2d(x, w3, None, padding=(1, 1))) <= 1e-5
    packed.col_idx[0] = 10 * 9  # out of range, written in place after the plan was made
    with pytest.raises(ValueError, match="col_idx entry out of range"):
        pyfastcnn.sparse_conv2d(x, packed, None, padding=1)


def test_weight_packed_in_inference_mode():
    """Inference tensors track no version: such a weight is prepared on every call (not kept)."""
    with torch.inference_mode():
        w = prune(torch.randn(8, 4, 3, 3), 0.4)
        packed = pyfastcnn.pack_sparse(w, "csr")
        x = torch.randn(2, 4, 7, 6)
        out = pyfastcnn.sparse_conv2d(x, packed, None, padding=1)
        assert rel_error(out, reference.conv2d(x, w, None, padding=(1, 1))) <= 1e-5
        packed.col_idx[0] = 4 * 9
        with pytest.raises(ValueError, match="col_idx entry out of range"):
            pyfastcnn.sparse_conv2d(x, packed, None, padding=1)
    x = torch.randn(1, 4, 5, 5)
    with pytest.raises(ValueError, match="col_idx entry out of range"):
        pyfastcnn.sparse_conv2d(x, packed, None, padding=1)
