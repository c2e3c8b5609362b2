import dataclasses
import pickle

import pytest
import torch
from conftest import rel_error
from conv_cases import CASES, ConvCase

import pyfastcnn
from pyfastcnn.ops import SparseInt8Weight, pack_sparse_int8, reference, sparse_quantized_conv2d

X_DTYPES = {"u8": (torch.uint8, 0, 256, 131), "s8": (torch.int8, -128, 128, -7)}
OUTS = [(torch.float32, None, None), (torch.uint8, 0.05, 128), (torch.int8, 0.05, -3)]

# Extra geometries: channel counts that are multiples of 4 and 16 (the vector plane fill),
# channel tails, stride 2 with padding, asymmetric strides, 1 x k.
EXTRA = [
    ConvCase("c16-3x3-pad1", 2, 16, 9, 11, 20, (3, 3), padding=1),
    ConvCase("c32-3x3-s2", 2, 32, 13, 11, 33, (3, 3), stride=2, padding=1),
    ConvCase("c20-3x3-s2x1", 1, 20, 13, 11, 16, (3, 3), stride=(2, 1), padding=(1, 0)),
    ConvCase("c48-1x3-s1x3", 1, 48, 5, 40, 7, (1, 3), stride=(1, 3), padding=(0, 4)),
    ConvCase("c68-dil2-pad5", 1, 68, 9, 9, 3, (3, 3), padding=5, dilation=2),
    ConvCase("c64-1x1-oc40", 3, 64, 14, 14, 40, (1, 1)),
    ConvCase("groups2-c8", 1, 16, 9, 9, 10, (3, 3), padding=1, groups=2),
    # 1x1 unpadded: window mode (tasks transpose their own pixels, both layouts), with a
    # stride, a channel tail past 64, more pixels than one task holds, and the batch folded
    # into one tall image (H = OH * stride; tiles cross image boundaries).
    ConvCase("c200-1x1-s2", 2, 200, 15, 13, 24, (1, 1), stride=2),
    ConvCase("c20-1x1-23x29", 1, 20, 23, 29, 33, (1, 1)),
    ConvCase("c40-1x1-s2-batch-folded", 3, 40, 14, 10, 24, (1, 1), stride=2),
    ConvCase("c64-1x1-s2x1-batch-folded", 2, 64, 10, 9, 20, (1, 1), stride=(2, 1)),
    ConvCase("c70-1x1-quad-tail", 2, 70, 9, 7, 20, (1, 1)),  # 18 quads, the last half full
    ConvCase("c24-1x1-s2-tiles-cross-images", 3, 24, 30, 26, 8, (1, 1), stride=2),
    ConvCase("c16-1x1-groups2", 2, 16, 9, 9, 12, (1, 1), groups=2),  # planes, not the window
    # More input than a task's share of L1: the kernels walk the channels in slices (partial
    # sums kept per output channel), in the planes and in the 1x1 window.
    ConvCase("c300-3x3-s2", 1, 300, 9, 10, 20, (3, 3), stride=2, padding=1),
    ConvCase("c512-3x3-7x7", 2, 512, 7, 7, 20, (3, 3), padding=1),
    ConvCase("c1000-1x1-14x13", 1, 1000, 14, 13, 24, (1, 1)),
]
ALL_CASES = CASES + EXTRA


def pruned_qweight(case: ConvCase, sparsity: float = 0.7, blocks: bool = True):
    """A quantized conv weight with 4-channel blocks (or single weights) set to zero."""
    qw = pyfastcnn.quantize_weight(case.weight(), groups=case.groups)
    oc, cg, kh, kw = qw.int_weight.shape
    if blocks:
        cq = (cg + 3) // 4
        keep = torch.rand(oc, cq, 1, kh, kw) >= sparsity
        keep = keep.expand(-1, -1, 4, -1, -1).reshape(oc, 4 * cq, kh, kw)[:, :cg]
    else:
        keep = torch.rand(oc, cg, kh, kw) >= sparsity
    return pyfastcnn.QuantizedWeight(qw.int_weight * keep, qw.scale, case.groups)


def quant_x(case: ConvCase, kind: str):
    dtype, lo, hi, zp = X_DTYPES[kind]
    x = torch.randint(lo, hi, (case.n, case.c, case.h, case.w), dtype=dtype)
    return x.contiguous(memory_format=torch.channels_last), zp


LAYOUTS = ("blocks", "groups")


def packed_for(case: ConvCase, layout: str, sparsity: float = 0.7):
    """A pruned weight in the structure its layout is made for (block-pruned for "blocks",
    unstructured for "groups") and its packing in that layout."""
    qw = pruned_qweight(case, sparsity, blocks=layout == "blocks")
    packed = pack_sparse_int8(qw, layout=layout)
    assert packed.layout == layout
    return qw, packed


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: c.id)
def test_matches_dense_quantized_conv(isa, case, layout):
    qw, packed = packed_for(case, layout)
    bias = torch.randn(case.oc)
    geo = dict(stride=case.stride, padding=case.padding, dilation=case.dilation)
    for kind in X_DTYPES:
        x, zp = quant_x(case, kind)
        for out_dtype, os_, ozp in OUTS:
            for relu in (False, True):
                out = dict(out_dtype=out_dtype, out_scale=os_, out_zero_point=ozp, relu=relu)
                y = sparse_quantized_conv2d(x, 0.02, zp, packed, bias, **geo, **out)
                dense = pyfastcnn.quantized_conv2d(x, 0.02, zp, qw, bias, **geo, **out)
                assert y.dtype == out_dtype and y.shape == dense.shape
                assert y.is_contiguous(memory_format=torch.channels_last)
                if out_dtype == torch.float32:
                    assert rel_error(y, dense) <= 1e-5
                else:  # same integer sums, same epilogue code at this ISA
                    assert torch.equal(y, dense)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", EXTRA + CASES[2:6], ids=lambda c: c.id)
@pytest.mark.parametrize("blocks", (True, False), ids=("block4", "unstructured"))
def test_integer_sums_exact(isa, case, blocks, layout):
    """Float output with unit scales is the integer sum itself (|acc| < 2^24 here)."""
    qw = pruned_qweight(case, 0.6, blocks)
    ones = pyfastcnn.QuantizedWeight(qw.int_weight, torch.ones(case.oc), case.groups)
    packed = pack_sparse_int8(ones, layout=layout)
    geo = case.kwargs()
    for kind in X_DTYPES:
        x, zp = quant_x(case, kind)
        y = sparse_quantized_conv2d(x, 1.0, zp, packed, None, **geo)
        acc = torch.nn.functional.conv2d(
            (x.long() - zp).double(), qw.int_weight.double(), None, **geo
        )
        assert torch.equal(y.double(), acc)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", X_DTYPES)
def test_extremes(isa, kind, layout):
    dtype, lo, hi, _ = X_DTYPES[kind]
    case = ConvCase("extreme", 2, 32, 6, 7, 19, (3, 3), padding=1)
    for xv, wv, zp in ((hi - 1, -128, lo), (lo, -128, hi - 1), (lo, 127, hi - 1)):
        x = torch.full((2, 32, 6, 7), xv, dtype=dtype).contiguous(memory_format=torch.channels_last)
        w = torch.full((19, 32, 3, 3), wv, dtype=torch.int8)
        w[:, :, 1, 1] = 0  # a hole: blocks skipped
        packed = pack_sparse_int8(w, 1.0, layout=layout)
        y = sparse_quantized_conv2d(x, 1.0, zp, packed, None, padding=1)
        acc = torch.nn.functional.conv2d((x.long() - zp).double(), w.double(), None, padding=1)
        assert torch.equal(y.double(), acc), case.id
        q = sparse_quantized_conv2d(x, 1.0, zp, packed, None, padding=1, out_dtype=torch.int8,
                                    out_scale=1.0)
        ref = reference.quantized_conv2d(x, 1.0, zp, w, torch.ones(19), padding=1,
                                         out_dtype=torch.int8, out_scale=1.0, out_zero_point=0)
        assert torch.equal(q, ref.to(torch.int8))


def test_unstructured_packing_pads_blocks():
    case = ConvCase("u", 1, 10, 5, 5, 6, (3, 3), padding=1)
    qw = pruned_qweight(case, 0.8, blocks=False)
    packed = pack_sparse_int8(qw)
    assert torch.equal(packed.to_dense(), qw.int_weight)
    assert packed.nnz == int(torch.count_nonzero(qw.int_weight))
    assert 0 < packed.block_fill < 1
    assert abs(packed.density - packed.nnz / qw.int_weight.numel()) < 1e-12
    blocked = pack_sparse_int8(pruned_qweight(ConvCase("b", 1, 16, 5, 5, 6, (3, 3)), 0.8))
    assert blocked.block_fill > 0.95  # quantized values are rarely exactly zero in a kept block
    assert torch.equal(packed.col_sums, qw.int_weight.reshape(6, -1).sum(1).int())
    assert "SparseInt8Weight" in repr(packed)


def test_pack_from_int8_tensor_and_pickle():
    w = torch.randint(-128, 128, (8, 6, 3, 3), dtype=torch.int8)
    w[:, :4] = 0
    a = pack_sparse_int8(w, 0.5)
    b = pack_sparse_int8(w, torch.full((8,), 0.5), groups=1)
    assert torch.equal(a.scale, b.scale) and torch.equal(a.values, b.values)
    assert torch.equal(a.dequantize(), w.float() * 0.5)
    c = pickle.loads(pickle.dumps(a))
    x = torch.randint(0, 256, (1, 6, 5, 5), dtype=torch.uint8)
    assert torch.equal(sparse_quantized_conv2d(x, 0.1, 3, a), sparse_quantized_conv2d(x, 0.1, 3, c))
    g = pack_sparse_int8(torch.randint(-3, 4, (8, 3, 1, 1), dtype=torch.int8), 1.0, groups=2)
    assert g.groups == 2


def test_nchw_input_and_empty_batch(isa):
    case = ConvCase("c", 2, 12, 7, 7, 9, (3, 3), padding=1)
    qw = pruned_qweight(case)
    packed = pack_sparse_int8(qw)
    x, zp = quant_x(case, "u8")
    y = sparse_quantized_conv2d(x.contiguous(), 0.02, zp, packed, padding=1)
    assert torch.equal(y, sparse_quantized_conv2d(x, 0.02, zp, packed, padding=1))
    empty = torch.zeros(0, 12, 7, 7, dtype=torch.uint8)
    out = sparse_quantized_conv2d(empty, 0.02, zp, packed, padding=1, out_dtype=torch.uint8,
                                  out_scale=0.1)
    assert out.shape == (0, 9, 7, 7) and out.dtype == torch.uint8


def test_all_zero_weight_gives_bias():
    w = torch.zeros(5, 8, 3, 3, dtype=torch.int8)
    packed = pack_sparse_int8(w, 1.0)
    assert packed.blocks == 0
    bias = torch.randn(5)
    x = torch.randint(0, 256, (2, 8, 6, 6), dtype=torch.uint8)
    y = sparse_quantized_conv2d(x, 0.1, 7, packed, bias, padding=1, relu=True)
    assert torch.equal(y, bias.clamp(min=0).view(1, 5, 1, 1).expand(2, 5, 6, 6))


def test_kernel_isa_reported():
    kernels = pyfastcnn.config()["kernels"]
    expected = {"scalar": "scalar", "avx2": "avx2", "avx512": "avx2"}
    isa = pyfastcnn.get_isa()
    assert kernels["sparse_quantized_conv2d"] == expected.get(isa, "avx512_vnni")
    assert kernels["sparse_quantized_conv2d_groups"] == expected.get(isa, "avx512_vnni")


def test_group_packing():
    """Groups of 4 non-zeros per output channel in index order, the last padded with zeros;
    to_dense, pickling and the state-dict layout inference give the weight back."""
    w = torch.zeros(5, 6, 3, 3, dtype=torch.int8)
    w[0, 0, 0, 0], w[0, 5, 2, 2] = 7, -128  # 2 non-zeros: one group, 2 padding weights
    w[2].view(-1)[:9] = torch.arange(1, 10, dtype=torch.int8)  # 9: three groups
    w[4, 3, 1, 1] = 127  # row 1 and 3 empty
    p = pack_sparse_int8(w, 0.5, layout="groups")
    assert p.grouped and p.layout == "groups" and p.blocks == 1 + 3 + 1
    assert p.row_ptr.tolist() == [0, 1, 1, 4, 4, 5]
    assert p.block_k[:2].tolist() == [0, 5 * 9 + 8] and p.values[:4].tolist() == [7, -128, 0, 0]
    assert p.block_k.numel() == p.values.numel() == 20
    assert p.nnz == 12 and abs(p.block_fill - 12 / 20) < 1e-12
    assert torch.equal(p.to_dense(), w)
    assert torch.equal(p.col_sums, w.reshape(5, -1).sum(1).int())
    from pyfastcnn.ops.sparse_int8 import _group_kernel_available, grouped_from_sizes

    q = pickle.loads(pickle.dumps(p))  # repacked in blocks where the group kernel is missing
    assert q.grouped == _group_kernel_available()
    assert torch.equal(q.to_dense(), w) and torch.equal(q.col_sums, p.col_sums)

    assert grouped_from_sizes(p.block_k, p.values)
    assert not grouped_from_sizes(pack_sparse_int8(w, 0.5, layout="blocks").block_k, p.values)
    x = torch.randint(0, 256, (2, 6, 7, 7), dtype=torch.uint8)
    blocks = pack_sparse_int8(w, 0.5, layout="blocks")
    assert torch.equal(sparse_quantized_conv2d(x, 0.1, 3, p, padding=1),
                       sparse_quantized_conv2d(x, 0.1, 3, blocks, padding=1))


def test_auto_layout_follows_the_work():
    """Unstructured weights pack in groups where the group kernel exists, block-pruned ones in
    blocks; work_fraction weighs a group as GROUP_COST blocks."""
    from pyfastcnn.ops.sparse_int8 import GROUP_COST

    case = ConvCase("c", 1, 64, 8, 8, 32, (3, 3), padding=1)
    unstructured = pack_sparse_int8(pruned_qweight(case, 0.9, blocks=False))
    blocked = pack_sparse_int8(pruned_qweight(case, 0.9, blocks=True))
    assert blocked.layout == "blocks"
    vnni = pyfastcnn.config()["kernels"]["sparse_quantized_conv2d_groups"] != "scalar"
    assert unstructured.layout == ("groups" if vnni else "blocks")
    g = pack_sparse_int8(pruned_qweight(case, 0.9, blocks=False), layout="groups")
    assert abs(g.work_fraction - g.blocks * GROUP_COST / (32 * 16 * 9)) < 1e-12
    with pytest.raises(ValueError, match="layout"):
        pack_sparse_int8(g.to_dense(), 1.0, layout="rows")


def _packed():
    w = torch.randint(-128, 128, (4, 8, 3, 3), dtype=torch.int8)
    return pack_sparse_int8(w, 0.1)


X = torch.randint(0, 256, (1, 8, 6, 6), dtype=torch.uint8)
BAD = [
    (lambda: sparse_quantized_conv2d(X.float(), 0.1, 0, _packed()), TypeError, "x"),
    (lambda: sparse_quantized_conv2d(X, 0.1, 0, torch.zeros(4, 8, 3, 3)), TypeError, "weight"),
    (lambda: sparse_quantized_conv2d(X, -1.0, 0, _packed()), ValueError, "x_scale"),
    (lambda: sparse_quantized_conv2d(X, 0.1, 300, _packed()), ValueError, "x_zero_point"),
    (lambda: sparse_quantized_conv2d(X, 0.1, 0, _packed(), torch.zeros(3)), ValueError, "bias"),
    (lambda: sparse_quantized_conv2d(X, 0.1, 0, _packed(), groups=2), ValueError, "groups"),
    (lambda: sparse_quantized_conv2d(X[:, :4], 0.1, 0, _packed()), ValueError, "channels"),
    (lambda: sparse_quantized_conv2d(X, 0.1, 0, _packed(), stride=0), ValueError, "stride"),
    (lambda: sparse_quantized_conv2d(X, 0.1, 0, _packed(), out_dtype=torch.uint8), ValueError,
     "out_scale"),
    (lambda: sparse_quantized_conv2d(X, 0.1, 0, _packed(), out_dtype=torch.int32), TypeError,
     "out_dtype"),
    (lambda: sparse_quantized_conv2d(X, 0.1, 0, _packed(), relu=1), TypeError, "relu"),
    (lambda: pack_sparse_int8(torch.zeros(4, 8, 3, 3)), TypeError, "weight"),
    (lambda: pack_sparse_int8(torch.zeros(4, 8, 3, 3, dtype=torch.int8)), ValueError, "scale"),
    (lambda: pack_sparse_int8(torch.zeros(4, 8, 3, 3, dtype=torch.int8), -1.0), ValueError,
     "scale"),
    (lambda: pack_sparse_int8(torch.zeros(4, 8, 3, 3, dtype=torch.int8), 1.0, groups=3),
     ValueError, "groups"),
    (lambda: pack_sparse_int8("w"), TypeError, "weight"),
]


@pytest.mark.parametrize("call,error,match", BAD, ids=[b[2] + str(i) for i, b in enumerate(BAD)])
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("block_k", lambda p: torch.full_like(p.block_k, 10**6), "block_k"),
        ("block_k", lambda p: -torch.ones_like(p.block_k), "block_k"),
        ("row_ptr", lambda p: p.row_ptr.flip(0).contiguous(), "row_ptr"),
        ("values", lambda p: p.values[:-4].contiguous(), "values"),
        ("col_sums", lambda p: p.col_sums[:-1].contiguous(), "col_sums"),
    ],
)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_native_checks_refuse_corrupt_weights(field, value, match, layout):
    w = torch.randint(-128, 128, (4, 8, 3, 3), dtype=torch.int8)
    packed = pack_sparse_int8(w, 0.1, layout=layout)
    bad = dataclasses.replace(packed, **{field: value(packed)})
    with pytest.raises(ValueError, match=match):
        sparse_quantized_conv2d(X, 0.1, 0, bad)


def test_native_checks_refuse_a_partial_group():
    """Group layout: 4 indices per group, the group count at the end of row_ptr."""
    w = torch.randint(-128, 128, (4, 8, 3, 3), dtype=torch.int8)
    p = pack_sparse_int8(w, 0.1, layout="groups")
    short = dataclasses.replace(p, block_k=p.block_k[:-2].contiguous(),
                                values=p.values[:-2].contiguous())
    with pytest.raises(ValueError, match="4 indices per group"):
        sparse_quantized_conv2d(X, 0.1, 0, short)
    fewer = dataclasses.replace(p, block_k=p.block_k[:-4].contiguous(),
                                values=p.values[:-4].contiguous())
    with pytest.raises(ValueError, match="row_ptr"):
        sparse_quantized_conv2d(X, 0.1, 0, fewer)


def test_opcheck():
    from pyfastcnn.ops.sparse_int8 import _sparse_quantized_conv2d

    packed = _packed()
    x = X.contiguous(memory_format=torch.channels_last)
    for kind, scale in ((1, 1.0), (3, 0.2)):
        torch.library.opcheck(
            _sparse_quantized_conv2d,
            (x, packed.row_ptr, packed.block_k, packed.values, packed.col_sums, [4, 8, 3, 3],
             packed.scale, torch.randn(4), [1, 1], [1, 1], [1, 1], 1, [6, 6], 0.1, 3, kind,
             0.0, float("inf"), scale, 0),
        )


def test_is_exported():
    assert isinstance(_packed(), SparseInt8Weight)
    assert pyfastcnn.ops.sparse_quantized_conv2d is sparse_quantized_conv2d


# Planes large enough and weights dense enough that the VNNI kernel reads shifted, cache-line
# aligned copies of the planes (rows padded to 16 pixels; one copy per kw shift).
ALIGNED_CASES = [
    ConvCase("c64-3x3-40x46", 1, 64, 40, 46, 24, (3, 3), padding=1),
    ConvCase("c32-3x3-dil2-36x44", 1, 32, 36, 44, 20, (3, 3), padding=2, dilation=2),
    ConvCase("c3-7x7-s2-100x116", 1, 3, 100, 116, 16, (7, 7), stride=2, padding=3),
    ConvCase("c16-1x3-48x45", 2, 16, 48, 45, 64, (1, 3), padding=(0, 1)),
]


@pytest.mark.parametrize("case", ALIGNED_CASES, ids=lambda c: c.id)
def test_aligned_plane_copies(isa, case):
    qw = pruned_qweight(case, sparsity=0.3)
    packed = pack_sparse_int8(qw)
    bias = torch.randn(case.oc)
    geo = dict(stride=case.stride, padding=case.padding, dilation=case.dilation)
    for kind in X_DTYPES:
        x, zp = quant_x(case, kind)
        out = dict(out_dtype=torch.uint8, out_scale=0.5, out_zero_point=3, relu=True)
        y = sparse_quantized_conv2d(x, 0.02, zp, packed, bias, **geo, **out)
        assert torch.equal(y, pyfastcnn.quantized_conv2d(x, 0.02, zp, qw, bias, **geo, **out))
        y = sparse_quantized_conv2d(x, 0.02, zp, packed, None, **geo)
        assert torch.equal(y, pyfastcnn.quantized_conv2d(x, 0.02, zp, qw, None, **geo))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", ALL_CASES, ids=lambda c: c.id)
def test_residual_add_matches_dense(isa, case, layout):
    """A fused residual add gives the dense kernel's bytes (same sums, same epilogue)."""
    qw, packed = packed_for(case, layout)
    bias = torch.randn(case.oc)
    geo = dict(stride=case.stride, padding=case.padding, dilation=case.dilation)
    for kind in X_DTYPES:
        x, zp = quant_x(case, kind)
        shape = pyfastcnn.quantized_conv2d(x, 0.02, zp, qw, bias, **geo).shape
        for rdtype, rzp in ((torch.uint8, 17), (torch.int8, -5)):
            r = torch.randint(-128 if rdtype == torch.int8 else 0, 128 if rdtype == torch.int8
                              else 256, shape, dtype=rdtype)
            for out_dtype, os_, ozp in OUTS:
                out = dict(out_dtype=out_dtype, out_scale=os_, out_zero_point=ozp, relu=True,
                           residual=r, residual_scale=0.03, residual_zero_point=rzp)
                y = sparse_quantized_conv2d(x, 0.02, zp, packed, bias, **geo, **out)
                dense = pyfastcnn.quantized_conv2d(x, 0.02, zp, qw, bias, **geo, **out)
                if out_dtype == torch.float32:
                    assert rel_error(y, dense) <= 1e-5
                else:
                    assert torch.equal(y, dense)


def _pair(v):
    return list(v) if isinstance(v, (tuple, list)) else [v, v]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", [c for c in EXTRA if c.id in ("c64-1x1-oc40", "c16-3x3-pad1")],
                         ids=lambda c: c.id)  # the 1x1 window path and the 3x3 planes path
def test_clamp_bounds_and_non_finite_bias_match_the_reference(isa, case, layout):
    """8-bit outputs for clamp ranges inside, across, above and below the code range, a
    single-point range, and biases of +-inf and NaN (NaN gives the low code): the same codes
    as the scalar reference (the vector store path clamps once, to the ranges' intersection)."""
    from pyfastcnn.ops.sparse_int8 import _sparse_quantized_conv2d_impl

    qw, packed = packed_for(case, layout)
    bias = torch.randn(case.oc)
    bias[0], bias[1], bias[2] = float("nan"), float("inf"), float("-inf")
    x, zp = quant_x(case, "u8")
    out_hw = list(sparse_quantized_conv2d(x, 0.02, zp, packed, None, **case.kwargs()).shape[2:])
    inf = float("inf")
    bounds = [(0.0, 6.0), (-inf, 0.5), (2.0, 2.0), (50.0, 60.0), (-60.0, -50.0), (-inf, inf),
              (-1.0, inf)]
    kinds = {torch.uint8: 3, torch.int8: 2}

    def run(out_dtype, os_, ozp, lo, hi):
        return _sparse_quantized_conv2d_impl(
            x, packed.row_ptr, packed.block_k, packed.values, packed.col_sums,
            list(packed.shape), packed.scale, bias, _pair(case.stride), _pair(case.padding),
            _pair(case.dilation), case.groups, out_hw, 0.02, zp, kinds[out_dtype], lo, hi, os_,
            ozp)

    cases = [(out_dtype, os_, ozp, lo, hi) for out_dtype, os_, ozp in OUTS[1:] for lo, hi in bounds]
    # and values far past the int32 range (a tiny output scale): the high or low code
    cases += [(out_dtype, 1e-12, ozp, -inf, inf) for out_dtype, _, ozp in OUTS[1:]]
    for out_dtype, os_, ozp, lo, hi in cases:
        y = run(out_dtype, os_, ozp, lo, hi)
        pyfastcnn.set_isa("scalar")
        try:
            ref = run(out_dtype, os_, ozp, lo, hi)
        finally:
            pyfastcnn.set_isa(isa)
        assert torch.equal(y, ref), (out_dtype, os_, lo, hi)
    assert bool((y[:, 0] == -128).all())  # NaN bias: the low code (int8 output last)
    assert bool(((y == -128) | (y == 127)).all())  # the tiny scale saturates every output


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("threads", (1, 2, 3))
def test_window_filled_again_per_output_channel_chunk(isa, layout, threads):
    """Few pixels and many output channels (batch 1, 7 x 7, 1x1): tasks split the output
    channels and each fills its own window; the result does not depend on the split."""
    case = ConvCase("c96-1x1-7x7-oc200", 1, 96, 7, 7, 200, (1, 1))
    qw, packed = packed_for(case, layout, 0.8)
    bias = torch.randn(case.oc)
    x, zp = quant_x(case, "u8")
    out = dict(out_dtype=torch.uint8, out_scale=0.05, out_zero_point=3, relu=True)
    previous = pyfastcnn.get_num_threads()
    pyfastcnn.set_num_threads(threads)
    try:
        y = sparse_quantized_conv2d(x, 0.02, zp, packed, bias, **out)
    finally:
        pyfastcnn.set_num_threads(previous)
    assert torch.equal(y, pyfastcnn.quantized_conv2d(x, 0.02, zp, qw, bias, **out))


@pytest.mark.parametrize("output_size", ([4, 5], [5, 4], [5, 5]))
def test_output_larger_than_the_input_pads(isa, output_size):
    """An explicit output size past what the input covers reads zero-point padding (bottom /
    right), in both layouts; a 1x1 group-layout conv must not take its unpadded window mode."""
    from pyfastcnn.ops.sparse_int8 import _sparse_quantized_conv2d_impl

    w = torch.randint(-128, 128, (24, 20, 1, 1), dtype=torch.int8)
    w[torch.rand(w.shape) < 0.6] = 0
    x = torch.randint(0, 256, (2, 20, 4, 4), dtype=torch.uint8).contiguous(
        memory_format=torch.channels_last)
    outs = []
    for layout in LAYOUTS:
        p = pack_sparse_int8(w, 1.0, layout=layout)
        outs.append(_sparse_quantized_conv2d_impl(
            x, p.row_ptr, p.block_k, p.values, p.col_sums, list(p.shape), p.scale, None,
            [1, 1], [0, 0], [1, 1], 1, output_size, 1.0, 7, 1, float("-inf"), float("inf"),
            1.0, 0))
    padded = torch.nn.functional.pad(x.long() - 7, (0, output_size[1] - 4, 0, output_size[0] - 4))
    ref = torch.nn.functional.conv2d(padded.double(), w.double())
    for y in outs:
        assert torch.equal(y.double(), ref)


def test_zero_input_channels_give_the_bias():
    """C = 0 (reachable through the custom op): no weights, every output is the bias."""
    from pyfastcnn.ops.sparse_int8 import _sparse_quantized_conv2d_impl

    x = torch.zeros(1, 0, 4, 4, dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
    empty_i32, empty_i8 = torch.zeros(0, dtype=torch.int32), torch.zeros(0, dtype=torch.int8)
    bias = torch.randn(8)
    y = _sparse_quantized_conv2d_impl(
        x, torch.zeros(9, dtype=torch.int64), empty_i32, empty_i8, torch.zeros(8, dtype=torch.int32),
        [8, 0, 1, 1], torch.ones(8), bias, [1, 1], [0, 0], [1, 1], 1, [4, 4], 1.0, 0, 1,
        float("-inf"), float("inf"), 1.0, 0)
    assert torch.equal(y, bias.view(1, 8, 1, 1).expand(1, 8, 4, 4))


def test_group_layout_repacked_where_its_kernel_is_missing(monkeypatch):
    """A group-layout weight unpickled (or loaded from a state dict) on a CPU without the group
    kernel comes back in blocks: same results, no scalar fallback."""
    import pyfastcnn.ops.sparse_int8 as sparse_int8

    w = torch.randint(-128, 128, (16, 24, 3, 3), dtype=torch.int8)
    w[torch.rand(w.shape) < 0.9] = 0
    g = pack_sparse_int8(w, 0.5, layout="groups")
    x = torch.randint(0, 256, (1, 24, 6, 6), dtype=torch.uint8)
    y = sparse_quantized_conv2d(x, 0.1, 3, g, padding=1)
    # here: kept as it is where this CPU has the group kernel
    assert pickle.loads(pickle.dumps(g)).grouped == sparse_int8._group_kernel_available()
    monkeypatch.setattr(sparse_int8, "_group_kernel_available", lambda: False)
    b = pickle.loads(pickle.dumps(g))
    assert b.layout == "blocks" and torch.equal(b.to_dense(), w)
    assert torch.equal(sparse_quantized_conv2d(x, 0.1, 3, b, padding=1), y)
    # The state-dict path: a module holding the group weight, loaded into another one.
    from pyfastcnn.nn.quantized import QuantConv2d

    def module():
        return QuantConv2d(g, None, 1, 1, 1, 0.1, 3, out_dtype=torch.float32)

    other = module()
    other.load_state_dict(module().state_dict())
    assert other.weight.layout == "blocks" and torch.equal(other.weight.to_dense(), w)
    x_nhwc = x.contiguous(memory_format=torch.channels_last)
    assert torch.equal(other(x_nhwc), y)
