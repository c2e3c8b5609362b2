import pickle

import pytest
import torch
import torch.nn.functional as F
from conftest import rel_error
from conv_cases import CASES, ConvCase

import pyfastcnn
from pyfastcnn.ops import reference

X_DTYPES = {"u8": (torch.uint8, 0, 256, 131), "s8": (torch.int8, -128, 128, -7)}
OUTS = [(torch.float32, None, None), (torch.uint8, 0.05, 128), (torch.int8, 0.05, -3)]
out_ids = ["f32", "u8", "s8"]


def quant_x(shape, kind):
    dtype, lo, hi, zp = X_DTYPES[kind]
    return torch.randint(lo, hi, shape, dtype=dtype), 0.02, zp


def check(out, ref, out_dtype):
    assert out.dtype == out_dtype and out.shape == ref.shape
    if out_dtype == torch.float32:
        assert rel_error(out, ref) <= 1e-5
    else:  # within one quantization step
        assert (out.double() - ref).abs().max().item() <= 1


@pytest.mark.parametrize(
    "m,n,k",
    [(1, 1, 1), (7, 13, 5), (6, 32, 4), (33, 65, 130), (100, 17, 3), (5, 40, 4001)],
    ids=str,
)
@pytest.mark.parametrize("xk", X_DTYPES)
@pytest.mark.parametrize("out", OUTS, ids=out_ids)
def test_linear_matches_reference(isa, m, n, k, xk, out):
    x, xs, xzp = quant_x((m, k), xk)
    qw = pyfastcnn.quantize_weight(torch.randn(n, k))
    bias = torch.randn(n)
    out_dtype, os_, ozp = out
    for relu in (False, True):
        y = pyfastcnn.quantized_linear(
            x, xs, xzp, qw, bias, out_dtype=out_dtype, out_scale=os_, out_zero_point=ozp, relu=relu
        )
        ref = reference.quantized_linear(
            x, xs, xzp, qw.int_weight, qw.scale, bias, out_dtype, os_, ozp, relu
        )
        check(y, ref, out_dtype)


def test_linear_extremes_are_exact(isa):
    # 255 * -128 * 4096 stays far from int32 limits but far beyond float32's 24-bit mantissa
    # if the zero-point correction were done in float.
    x = torch.full((3, 4096), 255, dtype=torch.uint8)
    qw = pyfastcnn.QuantizedWeight(torch.full((5, 4096), -128, dtype=torch.int8), torch.ones(5))
    y = pyfastcnn.quantized_linear(x, 1.0, 254, qw)
    assert torch.equal(y, torch.full((3, 5), -128.0 * 4096))


def test_linear_batched_input_and_per_tensor_weight():
    x, xs, xzp = quant_x((2, 3, 24), "u8")
    qw = pyfastcnn.quantize_weight(torch.randn(10, 24), per_channel=False)
    assert torch.unique(qw.scale).numel() == 1
    y = pyfastcnn.quantized_linear(x, xs, xzp, qw)
    ref = reference.quantized_linear(x.reshape(-1, 24), xs, xzp, qw.int_weight, qw.scale)
    assert y.shape == (2, 3, 10) and rel_error(y.reshape(-1, 10), ref) <= 1e-5


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
@pytest.mark.parametrize("xk", X_DTYPES)
def test_conv_matches_reference(isa, case: ConvCase, xk):
    x, xs, xzp = quant_x((case.n, case.c, case.h, case.w), xk)
    qw = pyfastcnn.quantize_weight(case.weight(), groups=case.groups)
    bias = torch.randn(case.oc)
    geo = dict(stride=case.stride, padding=case.padding, dilation=case.dilation)
    for out_dtype, os_, ozp in OUTS:
        y = pyfastcnn.quantized_conv2d(
            x,
            xs,
            xzp,
            qw,
            bias,
            **geo,
            out_dtype=out_dtype,
            out_scale=os_,
            out_zero_point=ozp,
            relu=True,
        )
        assert y.is_contiguous(memory_format=torch.channels_last)
        ref = reference.quantized_conv2d(
            x,
            xs,
            xzp,
            qw.int_weight,
            qw.scale,
            bias,
            **geo,
            groups=case.groups,
            out_dtype=out_dtype,
            out_scale=os_,
            out_zero_point=ozp,
            relu=True,
        )
        check(y, ref, out_dtype)


def test_conv_1x1_direct_path_and_nchw_input(isa):
    x, xs, xzp = quant_x((2, 24, 9, 7), "u8")
    qw = pyfastcnn.quantize_weight(torch.randn(40, 24, 1, 1))
    ref = reference.quantized_conv2d(x, xs, xzp, qw.int_weight, qw.scale)
    for layout in (torch.contiguous_format, torch.channels_last):
        y = pyfastcnn.quantized_conv2d(x.contiguous(memory_format=layout), xs, xzp, qw)
        check(y, ref, torch.float32)


def test_int8_layers_chain():
    """uint8 out of one layer feeds the next with the same (scale, zero point)."""
    x, xs, xzp = quant_x((1, 8, 10, 10), "u8")
    w1 = pyfastcnn.quantize_weight(torch.randn(16, 8, 3, 3))
    w2 = pyfastcnn.quantize_weight(torch.randn(4, 16, 3, 3))
    h = pyfastcnn.quantized_conv2d(
        x, xs, xzp, w1, padding=1, out_dtype=torch.uint8, out_scale=0.1, out_zero_point=0, relu=True
    )
    y = pyfastcnn.quantized_conv2d(h, 0.1, 0, w2, padding=1)
    ref = reference.quantized_conv2d(h, 0.1, 0, w2.int_weight, w2.scale, padding=1)
    check(y, ref, torch.float32)


def test_empty_batch():
    qw = pyfastcnn.quantize_weight(torch.randn(4, 3, 3, 3))
    x = torch.zeros(0, 3, 8, 8, dtype=torch.uint8)
    assert pyfastcnn.quantized_conv2d(x, 0.1, 0, qw).shape == (0, 4, 6, 6)
    lw = pyfastcnn.quantize_weight(torch.randn(4, 6))
    assert pyfastcnn.quantized_linear(torch.zeros(0, 6, dtype=torch.uint8), 0.1, 0, lw).shape == (
        0,
        4,
    )


@pytest.mark.parametrize("shape", [(64, 64, 3, 3), (10, 33), (7, 5, 1, 1)], ids=str)
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.8, 0.99, 1.0])
def test_pruned_weight_pickles_small_and_exact(shape, sparsity):
    """Mostly-zero weights save as a bit mask plus their non-zeros, whichever kernel runs them."""
    w = pyfastcnn.quantize_weight(torch.randn(*shape)).int_weight
    w[torch.rand(shape) < sparsity] = 0
    qw = pyfastcnn.QuantizedWeight(w, torch.rand(shape[0]) + 0.1)
    data = pickle.dumps(qw)
    restored = pickle.loads(data)
    assert torch.equal(restored.int_weight, qw.int_weight)
    assert torch.equal(restored.scale, qw.scale) and restored.groups == qw.groups
    if sparsity >= 0.8 and w.numel() > 1000:
        assert len(data) < 0.4 * len(pickle.dumps(pyfastcnn.QuantizedWeight(
            torch.ones(shape, dtype=torch.int8), qw.scale)))


def test_quantize_weight_round_trip_and_pickle():
    w = torch.randn(8, 3, 3, 3)
    w[2] = 0  # an all-zero channel gets scale 1, not a division by zero
    qw = pyfastcnn.quantize_weight(w)
    assert (qw.dequantize() - w).abs().max() <= qw.scale.max() / 2 + 1e-7
    assert qw.scale[2] == 1.0
    restored = pickle.loads(pickle.dumps(qw))
    assert torch.equal(restored.int_weight, qw.int_weight) and torch.equal(restored.scale, qw.scale)
    x, xs, xzp = quant_x((1, 3, 6, 6), "u8")
    assert torch.equal(
        pyfastcnn.quantized_conv2d(x, xs, xzp, restored), pyfastcnn.quantized_conv2d(x, xs, xzp, qw)
    )


def test_packed_weight_repacks_for_another_isa():
    a = torch.randint(-128, 128, (9, 50), dtype=torch.int8)
    b = torch.randint(-128, 128, (50, 37), dtype=torch.int8)
    packed = pyfastcnn.pack_int8_weight(b)
    expected = reference.int8_gemm(a, b)
    previous = pyfastcnn.get_isa()
    try:
        for level in pyfastcnn.supported_isas():
            pyfastcnn.set_isa(level)
            assert torch.equal(pyfastcnn.int8_gemm(a, packed), expected)
    finally:
        pyfastcnn.set_isa(previous)
    assert torch.equal(pyfastcnn.int8_gemm(a, pickle.loads(pickle.dumps(packed))), expected)


def _lin():
    return pyfastcnn.quantize_weight(torch.randn(4, 6))


BAD = [
    (
        "x-float",
        lambda: pyfastcnn.quantized_linear(torch.randn(2, 6), 0.1, 0, _lin()),
        TypeError,
        "x must have dtype",
    ),
    (
        "x-features",
        lambda: pyfastcnn.quantized_linear(torch.zeros(2, 5, dtype=torch.uint8), 0.1, 0, _lin()),
        ValueError,
        "6 features",
    ),
    (
        "x-scale-zero",
        lambda: pyfastcnn.quantized_linear(torch.zeros(2, 6, dtype=torch.uint8), 0.0, 0, _lin()),
        ValueError,
        "x_scale",
    ),
    (
        "x-zp-range",
        lambda: pyfastcnn.quantized_linear(torch.zeros(2, 6, dtype=torch.int8), 0.1, 200, _lin()),
        ValueError,
        "x_zero_point",
    ),
    (
        "weight-float",
        lambda: pyfastcnn.quantized_linear(
            torch.zeros(2, 6, dtype=torch.uint8), 0.1, 0, torch.randn(4, 6)
        ),
        TypeError,
        "QuantizedWeight",
    ),
    (
        "out-scale-missing",
        lambda: pyfastcnn.quantized_linear(
            torch.zeros(2, 6, dtype=torch.uint8), 0.1, 0, _lin(), out_dtype=torch.int8
        ),
        ValueError,
        "out_scale is required",
    ),
    (
        "out-dtype",
        lambda: pyfastcnn.quantized_linear(
            torch.zeros(2, 6, dtype=torch.uint8), 0.1, 0, _lin(), out_dtype=torch.float16
        ),
        TypeError,
        "out_dtype",
    ),
    (
        "bias-length",
        lambda: pyfastcnn.quantized_linear(
            torch.zeros(2, 6, dtype=torch.uint8), 0.1, 0, _lin(), torch.randn(3)
        ),
        ValueError,
        "bias must have 4",
    ),
    (
        "conv-groups",
        lambda: pyfastcnn.quantized_conv2d(
            torch.zeros(1, 4, 5, 5, dtype=torch.uint8),
            0.1,
            0,
            pyfastcnn.quantize_weight(torch.randn(4, 2, 3, 3), groups=2),
            groups=1,
        ),
        ValueError,
        "groups=1 does not match",
    ),
    (
        "conv-channels",
        lambda: pyfastcnn.quantized_conv2d(
            torch.zeros(1, 3, 5, 5, dtype=torch.uint8),
            0.1,
            0,
            pyfastcnn.quantize_weight(torch.randn(4, 2, 3, 3)),
        ),
        ValueError,
        "input channels",
    ),
    (
        "conv-with-linear-weight",
        lambda: pyfastcnn.quantized_conv2d(
            torch.zeros(1, 6, 5, 5, dtype=torch.uint8), 0.1, 0, _lin()
        ),
        ValueError,
        "not a conv weight",
    ),
    (
        "weight-bad-scale",
        lambda: pyfastcnn.QuantizedWeight(
            torch.zeros(2, 3, dtype=torch.int8), torch.tensor([1.0, 0.0])
        ),
        ValueError,
        "scale must be positive",
    ),
]


@pytest.mark.parametrize("call,error,match", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_opcheck():
    qw = pyfastcnn.quantize_weight(torch.randn(6, 2, 3, 3), groups=2)
    isa, data, col_sums = qw.conv_operand()
    x = torch.randint(0, 256, (2, 4, 7, 7), dtype=torch.uint8).contiguous(
        memory_format=torch.channels_last
    )
    torch.library.opcheck(
        torch.ops.pyfastcnn.quantized_conv2d.default,
        (
            x,
            data,
            col_sums,
            isa,
            [6, 2, 3, 3],
            qw.scale,
            torch.randn(6),
            [1, 1],
            [1, 1],
            [1, 1],
            2,
            [7, 7],
            0.1,
            3,
            2,
            0.0,
            float("inf"),
            0.05,
            1,
        ),
    )
    lw = pyfastcnn.quantize_weight(torch.randn(5, 12))
    isa, data, col_sums = lw._packed.packed()
    torch.library.opcheck(
        torch.ops.pyfastcnn.quantized_linear.default,
        (
            torch.randint(-128, 128, (3, 12), dtype=torch.int8),
            data,
            col_sums,
            isa,
            5,
            lw.scale,
            None,
            0.1,
            4,
            1,
            float("-inf"),
            float("inf"),
            1.0,
            0,
        ),
    )


def test_torch_compile_matches_eager():
    """Eager calls skip the dispatcher; compiled code goes through the registered op."""
    qw = pyfastcnn.quantize_weight(torch.randn(8, 4, 3, 3))
    x, xs, xzp = quant_x((2, 4, 9, 9), "u8")

    def layer(t):
        return pyfastcnn.quantized_conv2d(t, xs, xzp, qw, padding=1, out_dtype=torch.uint8,
                                          out_scale=0.1, out_zero_point=3, relu=True)

    compiled = torch.compile(layer, fullgraph=True)
    assert torch.equal(compiled(x), layer(x))


# Few input channels (the ResNet stem and its relatives): the VNNI conv reduces over whole kernel
# rows of unpadded pixels there (when enough pixels pay for repacking the weight), reading up
# to 3 bytes of the next pixel against zero weights.
# The sums must be exact.
STEM_LIKE = [
    # n, c, h, w, oc, kernel, stride, padding
    (1, 1, 17, 13, 5, (7, 7), 2, 3),
    (2, 2, 9, 11, 33, (7, 7), 2, 3),
    (1, 3, 33, 31, 64, (7, 7), 2, 3),
    (2, 3, 13, 7, 70, (3, 5), 1, (1, 2)),
    (1, 3, 8, 8, 7, (7, 7), 1, 0),  # 4 pixels: padded taps (repacking would not pay)
    (1, 5, 11, 13, 17, (7, 7), 2, 3),
    (2, 6, 15, 17, 3, (3, 3), 1, 0),
    (2, 7, 9, 37, 96, (1, 7), (1, 2), (0, 3)),
]


@pytest.mark.parametrize(
    "n,c,h,w,oc,kernel,stride,padding", STEM_LIKE, ids=lambda v: str(v).replace(" ", "")
)
@pytest.mark.parametrize("xk", X_DTYPES)
def test_conv_few_channels_exact(isa, n, c, h, w, oc, kernel, stride, padding, xk):
    x, xs, xzp = quant_x((n, c, h, w), xk)
    x = x.contiguous(memory_format=torch.channels_last)
    qw = pyfastcnn.quantize_weight(torch.randn(oc, c, *kernel))
    geo = dict(stride=stride, padding=padding)
    # Unit scales and no bias: the float32 output is the int32 sum itself (|sum| < 2^24).
    unit = pyfastcnn.QuantizedWeight(qw.int_weight, torch.ones(oc))
    acc = pyfastcnn.quantized_conv2d(x, 1.0, xzp, unit, **geo)
    expected = torch.nn.functional.conv2d(
        (x.long() - xzp).double(), qw.int_weight.double(), None, **geo
    )
    assert torch.equal(acc.double(), expected)
    bias = torch.randn(oc)
    y = pyfastcnn.quantized_conv2d(
        x, xs, xzp, qw, bias, **geo, out_dtype=torch.uint8, out_scale=0.05, out_zero_point=3,
        relu=True,
    )
    ref = reference.quantized_conv2d(
        x, xs, xzp, qw.int_weight, qw.scale, bias, **geo, out_dtype=torch.uint8, out_scale=0.05,
        out_zero_point=3, relu=True,
    )
    check(y, ref, torch.uint8)


# A fused residual add: every conv case (odd channels, 1x1/1xk, stride 2, dilation, groups,
# depthwise, the few-channel stem path), residual codes of both signs, relu on and off.
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
@pytest.mark.parametrize("rk", ["u8", "s8"])
def test_conv_residual_add_matches_reference(isa, case: ConvCase, rk):
    x, xs, xzp = quant_x((case.n, case.c, case.h, case.w), "u8")
    qw = pyfastcnn.quantize_weight(case.weight(), groups=case.groups)
    bias = torch.randn(case.oc)
    geo = dict(stride=case.stride, padding=case.padding, dilation=case.dilation)
    shape = pyfastcnn.quantized_conv2d(x, xs, xzp, qw, bias, **geo).shape
    r, rs, rzp = quant_x(shape, rk)
    r = r.contiguous(memory_format=torch.channels_last) if case.n % 2 else r  # both layouts
    for (out_dtype, os_, ozp), relu in zip(OUTS, (True, False, True)):
        kw = dict(out_dtype=out_dtype, out_scale=os_, out_zero_point=ozp, relu=relu)
        y = pyfastcnn.quantized_conv2d(x, xs, xzp, qw, bias, **geo, **kw, residual=r,
                                       residual_scale=rs * 3, residual_zero_point=rzp)
        ref = reference.quantized_conv2d(x, xs, xzp, qw.int_weight, qw.scale, bias, **geo,
                                         groups=case.groups, **kw, residual=r,
                                         residual_scale=rs * 3, residual_zero_point=rzp)
        check(y, ref, out_dtype)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(residual=torch.zeros(1, 8, 5, 5, dtype=torch.uint8)), ValueError, "residual_scale"),
    (dict(residual=torch.zeros(1, 8, 4, 5, dtype=torch.uint8), residual_scale=0.1), ValueError,
     "output's shape"),
    (dict(residual=torch.zeros(1, 8, 5, 5), residual_scale=0.1), TypeError, "residual"),
    (dict(residual=torch.zeros(1, 8, 5, 5, dtype=torch.uint8), residual_scale=-1.0), ValueError,
     "residual_scale"),
    (dict(residual=torch.zeros(1, 8, 5, 5, dtype=torch.int8), residual_scale=0.1,
          residual_zero_point=200), ValueError, "residual_zero_point"),
    (dict(residual_scale=0.1), ValueError, "need a residual"),
])
def test_conv_residual_bad_input(kwargs, error, match):
    x = torch.zeros(1, 4, 5, 5, dtype=torch.uint8)
    qw = pyfastcnn.quantize_weight(torch.randn(8, 4, 3, 3))
    with pytest.raises(error, match=match):
        pyfastcnn.quantized_conv2d(x, 0.1, 0, qw, padding=1, out_dtype=torch.uint8,
                                   out_scale=0.1, **kwargs)


@pytest.mark.parametrize("n,c,h,w,oc,k,stride,padding,dilation", [
    (2, 8, 2, 3, 5, 3, 1, 3, 1),     # whole rows of pixels see only padding
    (1, 16, 7, 7, 33, 3, 1, 1, 1),   # 7x7 map: top/bottom rows skip a kernel row
    (3, 4, 5, 4, 40, 5, 2, 2, 1),    # stride 2, 5x5
    (1, 12, 9, 6, 20, 3, 1, 2, 2),   # vertical dilation
    (1, 3, 11, 11, 64, 7, 2, 3, 1),  # few channels (compact rows)
])
def test_conv_padded_kernel_rows(isa, n, c, h, w, oc, k, stride, padding, dilation):
    """Kernel rows in the padding (some pixels see only padding): exact sums, and the epilogue
    within one step."""
    for xk in X_DTYPES:
        x, xs, xzp = quant_x((n, c, h, w), xk)
        qw = pyfastcnn.quantize_weight(torch.randn(oc, c, k, k))
        bias = torch.randn(oc)
        geo = dict(stride=stride, padding=padding, dilation=dilation)
        ones = pyfastcnn.QuantizedWeight(qw.int_weight, torch.ones(oc))
        acc = pyfastcnn.quantized_conv2d(x, 1.0, xzp, ones, None, **geo)
        expected = F.conv2d((x.long() - xzp).double(), qw.int_weight.double(), None, **geo)
        assert torch.equal(acc.double(), expected)  # exact integer sums (|acc| < 2^24)
        y = pyfastcnn.quantized_conv2d(x, xs, xzp, qw, bias, **geo, out_dtype=torch.uint8,
                                       out_scale=0.05, out_zero_point=7, relu=True)
        ref = reference.quantized_conv2d(x, xs, xzp, qw.int_weight, qw.scale, bias, **geo,
                                         out_dtype=torch.uint8, out_scale=0.05,
                                         out_zero_point=7, relu=True)
        check(y, ref, torch.uint8)


@pytest.mark.parametrize("out_dtype", [torch.uint8, torch.int8])
@pytest.mark.parametrize("depthwise", [False, True], ids=["dense", "depthwise"])
@pytest.mark.parametrize("oc", [70, 9], ids=["oc70", "oc9"])  # whole 64-column tiles, and a tail
def test_non_finite_and_huge_outputs_saturate_like_the_reference(isa, out_dtype, depthwise, oc):
    """Biases of +-inf and NaN, and values far past the int32 range (a tiny output scale), with
    no clamp: +inf and huge values give the high code, -inf the low one and NaN the low one, at
    every ISA level as in the scalar reference (a float-to-int32 conversion alone turns them
    all into INT32_MIN, the low code)."""
    torch.manual_seed(3)
    c, groups = (oc, oc) if depthwise else (8, 1)
    qw = pyfastcnn.quantize_weight(torch.randn(oc, c // groups, 3, 3), groups=groups)
    x, xs, xzp = quant_x((2, c, 6, 6), "u8")
    bias = torch.randn(oc) * 1e3
    bias[0], bias[1], bias[2] = float("nan"), float("inf"), float("-inf")
    for out_scale in (0.05, 1e-12):
        def conv():
            return pyfastcnn.quantized_conv2d(x, xs, xzp, qw, bias, padding=1, groups=groups,
                                              out_dtype=out_dtype, out_scale=out_scale,
                                              out_zero_point=1)
        y = conv()
        pyfastcnn.set_isa("scalar")
        try:
            ref = conv()
        finally:
            pyfastcnn.set_isa(isa)
        assert torch.equal(y, ref), out_scale
        low, high = torch.iinfo(out_dtype).min, torch.iinfo(out_dtype).max
        assert bool((y[:, 0] == low).all()) and bool((y[:, 1] == high).all())
        assert bool((y[:, 2] == low).all())
    assert bool(((y[:, 3:] == low) | (y[:, 3:] == high)).all())  # huge values saturate
