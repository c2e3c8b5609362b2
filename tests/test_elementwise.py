"""quantized_add and quantize_per_tensor: exact against their PyTorch formulations, every ISA."""

import math

import pytest
import torch

import pyfastcnn
from pyfastcnn import _native
from pyfastcnn.ops import quantize_per_tensor, quantized_add
from pyfastcnn.ops.elementwise import (
    _quantize,
    _quantized_add,
    reference_quantize_per_tensor,
    reference_quantized_add,
)
from pyfastcnn.quantization import quantize

CL = torch.channels_last
SIZES = [1, 7, 13, 33, 4001]
SHAPES_4D = [(1, 3, 1, 1), (1, 3, 7, 13), (2, 3, 33, 17), (1, 1, 5, 7), (1, 16, 13, 7),
             (3, 70, 5, 3), (1, 64, 1, 33), (2, 5, 9, 4001 // 9)]


def _codes(shape, dtype, memory_format=torch.contiguous_format):
    lo, hi = (0, 256) if dtype == torch.uint8 else (-128, 128)
    return torch.randint(lo, hi, shape, dtype=dtype).contiguous(memory_format=memory_format)


def _expected_quantize(x, scale, zp, dtype, channels_last=True):
    q = quantize(x, scale, zp, dtype)
    return q.contiguous(memory_format=CL) if q.dim() == 4 and channels_last else q.contiguous()


# ---- quantize_per_tensor ----------------------------------------------------------------------


@pytest.mark.parametrize("n", SIZES, ids=lambda n: f"n{n}")
@pytest.mark.parametrize("dtype,zp", [(torch.uint8, 0), (torch.uint8, 131), (torch.uint8, 255),
                                      (torch.int8, 0), (torch.int8, -128), (torch.int8, 77)],
                         ids=lambda v: str(v).replace("torch.", ""))
def test_quantize_flat(isa, n, dtype, zp):
    x = torch.randn(n) * 3
    q = quantize_per_tensor(x, 0.0173, zp, dtype)
    assert torch.equal(q, quantize(x, 0.0173, zp, dtype))


@pytest.mark.parametrize("shape", SHAPES_4D, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("layout", ["nchw", "nhwc", "view"])
@pytest.mark.parametrize("dtype,zp", [(torch.uint8, 114), (torch.int8, -9)],
                         ids=["u8", "s8"])
def test_quantize_4d(isa, shape, layout, dtype, zp):
    x = torch.randn(shape) * 2
    if layout == "nhwc":
        x = x.contiguous(memory_format=CL)
    elif layout == "view":
        x = torch.randn(shape[0], shape[1], shape[2], shape[3] + 3)[..., 1:-2]
    q = quantize_per_tensor(x, 0.011, zp, dtype)
    assert q.dtype == dtype and q.is_contiguous(memory_format=CL)
    assert torch.equal(q, _expected_quantize(x, 0.011, zp, dtype))
    q2 = quantize_per_tensor(x, 0.011, zp, dtype, memory_format=torch.contiguous_format)
    assert q2.is_contiguous() and torch.equal(q2, quantize(x, 0.011, zp, dtype))


@pytest.mark.parametrize("shape", [(5, 0, 3, 3), (0,), (2, 3), (2, 3, 4, 5, 6), ()])
def test_quantize_other_ranks(isa, shape):
    x = torch.randn(shape)
    q = quantize_per_tensor(x, 0.05, 3)
    assert q.shape == x.shape and torch.equal(q, _expected_quantize(x, 0.05, 3, torch.uint8))


@pytest.mark.parametrize("dtype,zp", [(torch.uint8, 128), (torch.uint8, 0), (torch.int8, 0),
                                      (torch.int8, -128), (torch.int8, 127)],
                         ids=lambda v: str(v).replace("torch.", ""))
def test_quantize_extremes_and_ties(isa, dtype, zp):
    scale = 0.25  # a power of two: x / scale is exact, so k + 0.5 are true ties
    ties = (torch.arange(-300, 300, dtype=torch.float32) + 0.5) * scale
    big = torch.tensor([3.4e38, -3.4e38, 1e10, -1e10, 1e-45, -1e-45, 0.0, -0.0, 1.0, -1.0])
    x = torch.cat([ties, big, torch.randn(37) * 100])
    assert torch.equal(quantize_per_tensor(x, scale, zp, dtype), quantize(x, scale, zp, dtype))
    # tiny scale: x / scale overflows to inf, which saturates like the reference
    x = torch.randn(50) * 1e30
    assert torch.equal(quantize_per_tensor(x, 1e-30, zp, dtype), quantize(x, 1e-30, zp, dtype))


@pytest.mark.parametrize("dtype,zp", [(torch.uint8, 100), (torch.int8, -20)], ids=["u8", "s8"])
def test_quantize_inf_nan(isa, dtype, zp):
    qmin, qmax = (0, 255) if dtype == torch.uint8 else (-128, 127)
    x = torch.full((2, 3, 5, 7), float("nan"))
    x[0, :, :, 1] = float("inf")
    x[1, :, 2] = -float("inf")
    x[0, 0, 0, 0] = 1.0
    q = quantize_per_tensor(x, 0.5, zp, dtype)
    assert q[0, 0, 0, 0] == zp + 2
    assert (q[0, :, :, 1] == qmax).all() and (q[1, :, 2] == qmin).all()
    nan = torch.isnan(x)
    assert (q[nan] == zp).all()  # NaN -> zero_point (the code of 0.0)
    assert torch.equal(q, reference_quantize_per_tensor(x, 0.5, zp, dtype).contiguous(
        memory_format=CL))
    xf = x.flatten()
    assert torch.equal(quantize_per_tensor(xf, 0.5, zp, dtype),
                       reference_quantize_per_tensor(xf, 0.5, zp, dtype))


def test_quantize_same_across_isas():
    x = torch.randn(2, 3, 31, 29) * 4
    previous = pyfastcnn.get_isa()
    try:
        outs = []
        for isa in pyfastcnn.supported_isas():
            pyfastcnn.set_isa(isa)
            outs.append(quantize_per_tensor(x, 0.0371, 121))
    finally:
        pyfastcnn.set_isa(previous)
    assert all(torch.equal(o, outs[0]) for o in outs)


def test_quantize_threads():
    x = torch.randn(4, 3, 224, 224)
    previous = pyfastcnn.get_num_threads()
    try:
        pyfastcnn.set_num_threads(2)
        q = quantize_per_tensor(x, 0.02, 128)
    finally:
        pyfastcnn.set_num_threads(previous)
    assert torch.equal(q, _expected_quantize(x, 0.02, 128, torch.uint8))


def test_quantize_bad_arguments():
    x = torch.randn(1, 3, 4, 4)
    with pytest.raises(TypeError, match="x must have dtype"):
        quantize_per_tensor(x.double(), 0.1, 0)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        quantize_per_tensor([1.0], 0.1, 0)
    with pytest.raises(TypeError, match="dtype"):
        quantize_per_tensor(x, 0.1, 0, torch.int32)
    with pytest.raises(ValueError, match="scale"):
        quantize_per_tensor(x, 0.0, 0)
    with pytest.raises(ValueError, match="scale"):
        quantize_per_tensor(x, float("nan"), 0)
    with pytest.raises(ValueError, match="scale"):
        quantize_per_tensor(x, 1e-50, 0)  # zero in float32
    with pytest.raises(TypeError, match="scale"):
        quantize_per_tensor(x, "0.1", 0)
    with pytest.raises(ValueError, match="zero_point"):
        quantize_per_tensor(x, 0.1, 256)
    with pytest.raises(ValueError, match="zero_point"):
        quantize_per_tensor(x, 0.1, -1)
    with pytest.raises(ValueError, match="zero_point"):
        quantize_per_tensor(x, 0.1, 128, torch.int8)
    with pytest.raises(TypeError, match="zero_point"):
        quantize_per_tensor(x, 0.1, 1.5)
    with pytest.raises(ValueError, match="memory_format"):
        quantize_per_tensor(x, 0.1, 0, memory_format=torch.preserve_format)


def test_quantize_native_rechecks():
    x = torch.randn(2, 3, 4, 5)
    out = torch.empty(2, 3, 4, 6, dtype=torch.uint8)
    with pytest.raises(ValueError, match="shape"):
        _native.C.quantize_per_tensor(_native.tensor_arg(x), 0.1, 0, _native.tensor_arg(out))
    out = torch.empty(2, 3, 4, 5, dtype=torch.uint8)
    with pytest.raises(ValueError, match="zero_point"):
        _native.C.quantize_per_tensor(_native.tensor_arg(x), 0.1, 300, _native.tensor_arg(out))
    with pytest.raises(ValueError, match="scale"):
        _native.C.quantize_per_tensor(_native.tensor_arg(x), -1.0, 0, _native.tensor_arg(out))
    view = torch.randn(2, 3, 4, 10)[..., ::2]
    with pytest.raises(ValueError, match="dense"):
        _native.C.quantize_per_tensor(_native.tensor_arg(view), 0.1, 0, _native.tensor_arg(out))


def test_quantize_opcheck():
    for x in (torch.randn(2, 3, 5, 7), torch.randn(2, 3, 5, 7).contiguous(memory_format=CL),
              torch.randn(11)):
        for cl in (True, False):
            torch.library.opcheck(_quantize, (x, 0.05, 7, torch.uint8, cl))
    torch.library.opcheck(_quantize, (torch.randn(1, 4, 3, 3), 0.05, -7, torch.int8, True))


# ---- quantized_add ----------------------------------------------------------------------------

ADD_PARAMS = [
    # a_scale, a_zp, b_scale, b_zp, out_scale, out_zp
    (0.05, 120, 0.03, 130, 0.07, 100),
    (0.1, 0, 0.1, 0, 0.2, 0),        # ka = kb = 0.5: ties at every odd sum
    (0.02, 255, 0.5, 0, 0.01, 255),  # big ratios: saturation both ways
    (1e-3, 17, 2e-3, 201, 3e-3, 64),
]
ADD_PARAMS_S8 = [
    (0.05, -3, 0.03, 10, 0.07, 0),
    (0.1, 0, 0.1, 0, 0.2, 0),
    (0.02, 127, 0.5, -128, 0.01, -128),
]


def _add_cases(dtype):
    return ADD_PARAMS if dtype == torch.uint8 else ADD_PARAMS_S8


@pytest.mark.parametrize("n", SIZES, ids=lambda n: f"n{n}")
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8], ids=["u8", "s8"])
@pytest.mark.parametrize("relu", [False, True], ids=["", "relu"])
def test_add_flat(isa, n, dtype, relu):
    a, b = _codes((n,), dtype), _codes((n,), dtype)
    for sa, za, sb, zb, so, zo in _add_cases(dtype):
        out = quantized_add(a, sa, za, b, sb, zb, so, zo, relu)
        ref = reference_quantized_add(a, sa, za, b, sb, zb, so, zo, relu)
        assert torch.equal(out, ref)
        # and within one code of the real-number formula (float64)
        real = (sa * (a.double() - za) + sb * (b.double() - zb))
        if relu:
            real = real.clamp(min=0)
        lo, hi = (0, 255) if dtype == torch.uint8 else (-128, 127)
        exact = torch.clamp(torch.round(real / so) + zo, lo, hi)
        assert (out.double() - exact).abs().max() <= 1


@pytest.mark.parametrize("shape", SHAPES_4D, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("layout", ["nchw", "nhwc", "permuted", "mixed", "view"])
def test_add_layouts(isa, shape, layout):
    dtype = torch.uint8
    a, b = _codes(shape, dtype), _codes(shape, dtype)
    if layout == "nhwc":
        a, b = a.contiguous(memory_format=CL), b.contiguous(memory_format=CL)
    elif layout == "permuted":  # dense, same strides, an unusual order
        a = a.permute(2, 0, 3, 1).contiguous().permute(1, 3, 0, 2)
        b = b.permute(2, 0, 3, 1).contiguous().permute(1, 3, 0, 2)
    elif layout == "mixed":
        a = a.contiguous(memory_format=CL)
    elif layout == "view":
        a = _codes((shape[0], shape[1], shape[2], shape[3] * 2), dtype)[..., ::2]
    params = (0.05, 120, 0.03, 130, 0.07, 100)
    out = quantized_add(a, params[0], params[1], b, params[2], params[3], params[4], params[5],
                        True)
    ref = reference_quantized_add(a, params[0], params[1], b, params[2], params[3], params[4],
                                  params[5], True)
    assert torch.equal(out, ref)
    if layout in ("nhwc", "permuted"):
        assert out.stride() == a.stride()
    if layout in ("nhwc", "mixed"):
        assert out.is_contiguous(memory_format=CL)


def test_add_extremes_same_across_isas():
    a = torch.tensor([0, 255, 0, 255, 128, 1] * 700, dtype=torch.uint8)
    b = torch.tensor([0, 255, 255, 0, 127, 254] * 700, dtype=torch.uint8)
    previous = pyfastcnn.get_isa()
    try:
        outs = []
        for isa in pyfastcnn.supported_isas():
            pyfastcnn.set_isa(isa)
            for params in ADD_PARAMS:
                for relu in (False, True):
                    outs.append((params, relu, quantized_add(a, *params[:2], b, *params[2:],
                                                             relu=relu)))
    finally:
        pyfastcnn.set_isa(previous)
    for params, relu, out in outs:
        assert torch.equal(out, reference_quantized_add(a, *params[:2], b, *params[2:],
                                                        relu=relu))


def test_add_threads():
    a, b = _codes((2, 64, 56, 56), torch.uint8, CL), _codes((2, 64, 56, 56), torch.uint8, CL)
    previous = pyfastcnn.get_num_threads()
    try:
        pyfastcnn.set_num_threads(2)
        out = quantized_add(a, 0.05, 120, b, 0.03, 130, 0.07, 100, True)
    finally:
        pyfastcnn.set_num_threads(previous)
    assert torch.equal(out, reference_quantized_add(a, 0.05, 120, b, 0.03, 130, 0.07, 100, True))


def test_add_empty():
    a = torch.empty(0, 3, 4, 4, dtype=torch.uint8)
    assert quantized_add(a, 0.1, 0, a, 0.1, 0, 0.1, 0).shape == a.shape


def test_add_bad_arguments():
    a, b = _codes((2, 3), torch.uint8), _codes((2, 3), torch.uint8)
    with pytest.raises(TypeError, match="a must have dtype"):
        quantized_add(a.float(), 0.1, 0, b, 0.1, 0, 0.1, 0)
    with pytest.raises(TypeError, match="b must have dtype"):
        quantized_add(a, 0.1, 0, b.to(torch.int8), 0.1, 0, 0.1, 0)
    with pytest.raises(TypeError, match="b must be a torch.Tensor"):
        quantized_add(a, 0.1, 0, None, 0.1, 0, 0.1, 0)
    with pytest.raises(ValueError, match="same shape"):
        quantized_add(a, 0.1, 0, b.t(), 0.1, 0, 0.1, 0)
    with pytest.raises(ValueError, match="a_scale"):
        quantized_add(a, -0.1, 0, b, 0.1, 0, 0.1, 0)
    with pytest.raises(ValueError, match="b_scale"):
        quantized_add(a, 0.1, 0, b, math.inf, 0, 0.1, 0)
    with pytest.raises(ValueError, match="out_scale"):
        quantized_add(a, 0.1, 0, b, 0.1, 0, 0.0, 0)
    with pytest.raises(ValueError, match="a_zero_point"):
        quantized_add(a, 0.1, -1, b, 0.1, 0, 0.1, 0)
    with pytest.raises(ValueError, match="b_zero_point"):
        quantized_add(a, 0.1, 0, b, 0.1, 256, 0.1, 0)
    with pytest.raises(ValueError, match="out_zero_point"):
        quantized_add(a.to(torch.int8), 0.1, 0, b.to(torch.int8), 0.1, 0, 0.1, 128)
    with pytest.raises(TypeError, match="out_zero_point"):
        quantized_add(a, 0.1, 0, b, 0.1, 0, 0.1, 0.5)
    with pytest.raises(TypeError, match="relu"):
        quantized_add(a, 0.1, 0, b, 0.1, 0, 0.1, 0, relu=1)
    with pytest.raises(ValueError, match="finite"):
        quantized_add(a, 3e38, 0, b, 0.1, 0, 1e-30, 0)


def test_add_native_rechecks():
    a, b = _codes((4, 6), torch.uint8), _codes((4, 6), torch.uint8)
    out = torch.empty(4, 6, dtype=torch.uint8)

    def call(a, b, out, zo=0):
        _native.C.quantized_add(_native.tensor_arg(a), 0.1, 0, _native.tensor_arg(b), 0.1, 0,
                                0.1, zo, False, _native.tensor_arg(out))

    with pytest.raises(ValueError, match="strides"):
        call(a, b.t().contiguous().t(), out)
    with pytest.raises(ValueError, match="dense"):
        call(a[:, ::2], b[:, ::2], out[:, ::2])
    with pytest.raises(ValueError, match="out"):
        call(a, b, torch.empty(4, 5, dtype=torch.uint8))
    with pytest.raises(ValueError, match="out_zero_point"):
        call(a, b, out, zo=300)
    with pytest.raises(ValueError, match="b must be uint8"):
        call(a, b.to(torch.int8), out)


def test_add_opcheck():
    for shape, fmt in (((2, 8, 5, 3), CL), ((2, 8, 5, 3), torch.contiguous_format), ((37,), None)):
        kw = {} if fmt is None else {"memory_format": fmt}
        a = _codes(shape, torch.uint8).contiguous(**kw)
        b = _codes(shape, torch.uint8).contiguous(**kw)
        torch.library.opcheck(_quantized_add, (a, 0.05, 120, b, 0.03, 130, 0.07, 100, True))
    s = _codes((19,), torch.int8)
    torch.library.opcheck(_quantized_add, (s, 0.05, -3, s, 0.03, 10, 0.07, 0, False))


def test_compile():
    a, b = _codes((1, 8, 5, 5), torch.uint8, CL), _codes((1, 8, 5, 5), torch.uint8, CL)
    x = torch.randn(1, 3, 8, 8)

    def f(x, a, b):
        return quantize_per_tensor(x, 0.02, 128), quantized_add(a, 0.05, 120, b, 0.03, 130, 0.07,
                                                                 100, True)

    got = torch.compile(f, fullgraph=True)(x, a, b)
    want = f(x, a, b)
    assert all(torch.equal(g, w) for g, w in zip(got, want))


def test_exported():
    assert pyfastcnn.ops.quantized_add is quantized_add
    assert pyfastcnn.ops.quantize_per_tensor is quantize_per_tensor
    assert pyfastcnn.config()["kernels"]["quantized_add"] in pyfastcnn.supported_isas()
