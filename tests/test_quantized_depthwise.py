"""INT8 depthwise conv (groups == C == OC): its own kernels at every ISA level, against the
float64 reference and the exact integer sums."""

import pytest
import torch
from conv_cases import CASES, ConvCase
from test_quantized import OUTS, X_DTYPES, check, quant_x

import pyfastcnn
from pyfastcnn.ops import reference


def dw(id, n, c, h, w, k=(3, 3), **kw):
    return ConvCase(id, n, c, h, w, c, k, groups=c, **kw)


DW_CASES = [
    dw("c1-b3-13x7", 3, 1, 13, 7, padding=1),
    dw("c3-b3-7x13", 3, 3, 7, 13, padding=1),
    dw("c16-b1-7x7", 1, 16, 7, 7, padding=1),
    dw("c17-b3-13x13", 3, 17, 13, 13, padding=1),
    dw("c32-b1-13x7-s2", 1, 32, 13, 7, stride=2, padding=1),
    dw("c33-b3-7x7-s2", 3, 33, 7, 7, stride=2, padding=1),
    dw("c96-b1-13x13-s2", 1, 96, 13, 13, stride=2, padding=1),
    dw("c144-b3-7x7", 3, 144, 7, 7, padding=1),
    dw("c960-b1-7x7", 1, 960, 7, 7, padding=1),
    dw("c33-5x5-p2", 1, 33, 13, 7, (5, 5), padding=2),
    dw("c17-5x5-s2-p2", 3, 17, 13, 13, (5, 5), stride=2, padding=2),
    dw("c40-dil2", 1, 40, 13, 13, padding=2, dilation=2),
    dw("c20-s2x1-p1x0", 1, 20, 13, 7, stride=(2, 1), padding=(1, 0)),
    dw("c24-7x7-p3", 1, 24, 7, 13, (7, 7), padding=3),
    dw("c8-1x1", 1, 8, 7, 7, (1, 1)),
    dw("c65-pad-beyond-image", 1, 65, 3, 3, padding=3),
    dw("c48-no-pad", 3, 48, 7, 13),
]
ALL_DW = DW_CASES + [c for c in CASES if c.groups == c.c == c.oc and c.groups > 1]
# relu6 as the model's clamp: clamp_max in float units.
CLAMPS = [dict(relu=False), dict(relu=True), dict(relu=True, clamp_max=6.0 * 0.3)]


def reference_conv(x, xs, xzp, qw, bias, case, out_dtype, out_scale, out_zero_point, relu,
                   clamp_max=None, **kw):
    """reference.quantized_conv2d with relu6-style clamp_max (float units) added."""
    args = (x, xs, xzp, qw.int_weight, qw.scale, bias)
    geo = dict(conv_args(case), groups=case.groups)
    if clamp_max is None:
        return reference.quantized_conv2d(*args, **geo, out_dtype=out_dtype, out_scale=out_scale,
                                          out_zero_point=out_zero_point, relu=relu, **kw)
    y = reference.quantized_conv2d(*args, **geo, relu=relu, **kw).clamp(max=clamp_max)
    if out_dtype == torch.float32:
        return y
    info = torch.iinfo(out_dtype)
    return (torch.round(y / out_scale) + out_zero_point).clamp(info.min, info.max)


def conv_args(case):
    return dict(stride=case.stride, padding=case.padding, dilation=case.dilation)


def test_depthwise_weight_layout():
    qw = pyfastcnn.quantize_weight(torch.randn(17, 1, 3, 3), groups=17)
    assert qw.is_depthwise
    weight, sums = qw._depthwise
    assert weight.shape == (9, 64) and weight.dtype == torch.int32
    taps = qw.int_weight.reshape(17, 9).t().int()
    assert torch.equal(weight[:, :17].short().int(), taps)  # (w, 0) int16 pairs
    assert torch.equal(weight[:, 17:], torch.zeros(9, 47, dtype=torch.int32))
    assert torch.equal(sums, taps.sum(0).int())
    # A channel multiplier (OC = 2C) or grouped conv is not depthwise: the GEMM path.
    assert not pyfastcnn.quantize_weight(torch.randn(16, 1, 3, 3), groups=8).is_depthwise
    assert not pyfastcnn.quantize_weight(torch.randn(8, 2, 3, 3), groups=4).is_depthwise
    assert not pyfastcnn.quantize_weight(torch.randn(8, 1, 3, 3)).is_depthwise


@pytest.mark.parametrize("case", ALL_DW, ids=lambda c: c.id)
@pytest.mark.parametrize("xk", X_DTYPES)
def test_depthwise_matches_reference(isa, case: ConvCase, xk):
    x, xs, xzp = quant_x((case.n, case.c, case.h, case.w), xk)
    x = x.contiguous(memory_format=torch.channels_last)
    qw = pyfastcnn.quantize_weight(case.weight(), groups=case.groups)
    bias = torch.randn(case.oc)
    for (out_dtype, os_, ozp), clamp in zip(OUTS * 2, CLAMPS * 2):
        kw = dict(out_dtype=out_dtype, out_scale=os_, out_zero_point=ozp, **clamp)
        y = pyfastcnn.quantized_conv2d(x, xs, xzp, qw, bias, **conv_args(case), **kw)
        ref = reference_conv(x, xs, xzp, qw, bias, case, **kw)
        check(y, ref, out_dtype)
        if clamp.get("clamp_max"):
            assert y.double().max() <= (6.0 * 0.3 / (os_ or 1.0)) + (ozp or 0) + 1e-6


@pytest.mark.parametrize("case", ALL_DW, ids=lambda c: c.id)
def test_depthwise_integer_sums_exact(isa, case: ConvCase):
    """Float output with unit scales is the integer sum itself (|acc| < 2^24 here)."""
    qw = pyfastcnn.quantize_weight(case.weight(), groups=case.groups)
    ones = pyfastcnn.QuantizedWeight(qw.int_weight, torch.ones(case.oc), case.groups)
    for kind in X_DTYPES:
        x, _, zp = quant_x((case.n, case.c, case.h, case.w), kind)
        y = pyfastcnn.quantized_conv2d(x, 1.0, zp, ones, None, **conv_args(case))
        acc = torch.nn.functional.conv2d((x.long() - zp).double(), qw.int_weight.double(),
                                         None, **conv_args(case), groups=case.groups)
        assert torch.equal(y.double(), acc)


@pytest.mark.parametrize("kind", X_DTYPES)
def test_depthwise_extremes_exact(isa, kind):
    dtype, lo, hi, _ = X_DTYPES[kind]
    corners = ((hi - 1, -128, lo), (lo, -128, hi - 1), (lo, 127, hi - 1), (hi - 1, 127, lo))
    for xv, wv, zp in corners:
        x = torch.full((2, 35, 6, 7), xv, dtype=dtype).contiguous(memory_format=torch.channels_last)
        w = torch.full((35, 1, 5, 5), wv, dtype=torch.int8)
        qw = pyfastcnn.QuantizedWeight(w, torch.ones(35), 35)
        y = pyfastcnn.quantized_conv2d(x, 1.0, zp, qw, None, padding=2)
        acc = torch.nn.functional.conv2d((x.long() - zp).double(), w.double(), None, padding=2,
                                         groups=35)
        assert torch.equal(y.double(), acc)


@pytest.mark.parametrize("case", DW_CASES[::2] + DW_CASES[1::4], ids=lambda c: c.id)
@pytest.mark.parametrize("rk", ["u8", "s8"])
def test_depthwise_residual_add(isa, case: ConvCase, rk):
    x, xs, xzp = quant_x((case.n, case.c, case.h, case.w), "s8" if rk == "u8" else "u8")
    qw = pyfastcnn.quantize_weight(case.weight(), groups=case.groups)
    bias = torch.randn(case.oc)
    shape = pyfastcnn.quantized_conv2d(x, xs, xzp, qw, bias, **conv_args(case)).shape
    r, rs, rzp = quant_x(shape, rk)
    r = r.contiguous(memory_format=torch.channels_last)
    for (out_dtype, os_, ozp), clamp in zip(OUTS, CLAMPS):
        kw = dict(out_dtype=out_dtype, out_scale=os_, out_zero_point=ozp, **clamp)
        y = pyfastcnn.quantized_conv2d(x, xs, xzp, qw, bias, **conv_args(case), **kw,
                                       residual=r, residual_scale=rs * 3, residual_zero_point=rzp)
        ref = reference_conv(x, xs, xzp, qw, bias, case, **kw, residual=r,
                             residual_scale=rs * 3, residual_zero_point=rzp)
        check(y, ref, out_dtype)


def test_depthwise_kernel_level(isa):
    level = pyfastcnn.config()["kernels"]["quantized_depthwise_conv2d"]
    expected = {"scalar": "scalar", "avx2": "avx2", "avx512": "avx2"}.get(isa, "avx512_vnni")
    assert level == expected


def test_depthwise_opcheck():
    qw = pyfastcnn.quantize_weight(torch.randn(20, 1, 3, 3), groups=20)
    data, col_sums = qw._depthwise
    x = torch.randint(0, 256, (2, 20, 7, 7), dtype=torch.uint8).contiguous(
        memory_format=torch.channels_last
    )
    torch.library.opcheck(
        torch.ops.pyfastcnn.quantized_conv2d.default,
        (x, data, col_sums, "depthwise", [20, 1, 3, 3], qw.scale, torch.randn(20), [2, 2],
         [1, 1], [1, 1], 20, [4, 4], 0.1, 3, 3, 0.0, float("inf"), 0.05, 1),
    )


def test_depthwise_bad_weight_rejected_natively():
    from pyfastcnn import _native

    qw = pyfastcnn.quantize_weight(torch.randn(20, 1, 3, 3), groups=20)
    data, col_sums = qw._depthwise
    x = torch.zeros(1, 20, 5, 5, dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
    out = torch.empty(1, 20, 5, 5).contiguous(memory_format=torch.channels_last)
    with pytest.raises(Exception, match="depthwise weight"):
        _native.C.int8_conv2d(
            _native.tensor_arg(x), "depthwise", _native.tensor_arg(data[:, :32].contiguous()),
            _native.tensor_arg(col_sums), 1, 3, 3, _native.tensor_arg(qw.scale), None, 1, 1, 1, 1,
            1, 1, 20, 0, 0.1, 1, float("-inf"), float("inf"), 1.0, 0, _native.tensor_arg(out),
            None, 1.0, 0)
