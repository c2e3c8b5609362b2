"""quantized_max_pool2d and quantized_adaptive_avg_pool2d: exact against float64 pooling of the
codes (and close to PyTorch's quantized ops), every ISA, odd sizes and vector tails."""

import warnings

import pytest
import torch
import torch.nn.functional as F

import pyfastcnn
from pyfastcnn import _native
from pyfastcnn.nn import QuantAdaptiveAvgPool2d, QuantMaxPool2d
from pyfastcnn.ops import quantized_adaptive_avg_pool2d, quantized_max_pool2d
from pyfastcnn.ops.pool import (
    MAX_AVG_POOL_PIXELS,
    _adaptive_avg,
    _max_pool,
    reference_quantized_adaptive_avg_pool2d,
    reference_quantized_max_pool2d,
)

CL = torch.channels_last
CHANNELS = [1, 3, 17, 63, 64, 65, 130]
DTYPES = [torch.uint8, torch.int8]
# kernel, stride, padding, dilation, ceil_mode
MAX_GEOMETRIES = [
    (1, 1, 0, 1, False), (2, 2, 0, 1, False), (2, 1, 1, 1, False), (3, 2, 1, 1, False),
    (3, 1, 1, 2, False), (3, 3, 0, 1, True), (3, 2, 1, 1, True), (5, 3, 2, 1, False),
    (5, 2, 2, 2, True), ((3, 2), (2, 1), (1, 0), (1, 2), False), ((1, 5), (3, 2), (0, 2), 1, True),
    (2, None, 0, 1, False),
]
AVG_SIZES = [1, (1, 1), (3, 4), (5, 7), (2, None), (None, 1), (13, 11), (20, 15)]


def _codes(shape, dtype):
    lo, hi = (0, 256) if dtype == torch.uint8 else (-128, 128)
    return torch.randint(lo, hi, shape, dtype=dtype).contiguous(memory_format=CL)


def _torch_quantized(q):
    """The codes as a PyTorch quantized tensor (quint8/qint8, channels_last kept)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch._make_per_tensor_quantized_tensor(q, 0.05, 3 if q.dtype == torch.uint8
                                                       else -3)


_ids = {"ids": lambda v: str(v).replace("torch.", "")}


# ---- max pooling ----------------------------------------------------------------------------


@pytest.mark.parametrize("c", CHANNELS, ids=lambda c: f"c{c}")
@pytest.mark.parametrize("dtype", DTYPES, **_ids)
def test_max_pool_matches_reference(isa, c, dtype):
    for shape in ((2, c, 13, 11), (1, c, 9, 16)):
        q = _codes(shape, dtype)
        for k, s, p, d, ceil in MAX_GEOMETRIES:
            out = quantized_max_pool2d(q, k, s, p, d, ceil)
            want = reference_quantized_max_pool2d(q, k, s, p, d, ceil)
            assert out.dtype == dtype and out.is_contiguous(memory_format=CL)
            assert torch.equal(out, want), (shape, k, s, p, d, ceil)


@pytest.mark.parametrize("dtype", DTYPES, **_ids)
def test_max_pool_extremes_padding_never_wins(isa, dtype):
    lo, hi = (0, 255) if dtype == torch.uint8 else (-128, 127)
    for value in (lo, hi):
        q = torch.full((2, 70, 7, 9), value, dtype=dtype).contiguous(memory_format=CL)
        assert (quantized_max_pool2d(q, 3, 2, 1) == value).all()
        assert (quantized_max_pool2d(q, 5, 1, 2, ceil_mode=True) == value).all()
    q = _codes((1, 65, 8, 8), dtype)
    q[:, :, ::2] = lo  # alternate rows of the lowest code
    assert torch.equal(quantized_max_pool2d(q, 2, 2, 1),
                       reference_quantized_max_pool2d(q, 2, 2, 1))


@pytest.mark.parametrize("dtype", DTYPES, **_ids)
def test_max_pool_window_without_taps(isa, dtype):
    # k2 d3 p1 on 2x2: each window's taps are at -1 and 2, outside the image. F.max_pool2d gives
    # -inf; PyTorch's quantized max pool and this op the lowest code.
    q = _codes((1, 40, 2, 2), dtype)
    out = quantized_max_pool2d(q, 2, 1, 1, 3)
    lowest = 0 if dtype == torch.uint8 else -128
    assert out.shape == (1, 40, 1, 1) and (out == lowest).all()
    theirs = torch.ops.quantized.max_pool2d(_torch_quantized(q), [2, 2], [1, 1], [1, 1], [3, 3],
                                            False)
    assert torch.equal(out, theirs.int_repr())


@pytest.mark.parametrize("shape", [(1, 64, 112, 112), (3, 17, 15, 9), (2, 130, 8, 5)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, **_ids)
def test_max_pool_matches_pytorch_quantized(shape, dtype):
    q = _codes(shape, dtype)
    for k, s, p, d, ceil in ((3, 2, 1, 1, False), (2, 2, 0, 1, True), (3, 1, 1, 2, False)):
        theirs = F.max_pool2d(_torch_quantized(q), k, s, p, d, ceil).int_repr()
        assert torch.equal(quantized_max_pool2d(q, k, s, p, d, ceil), theirs)


def test_max_pool_empty_batch(isa):
    q = torch.empty(0, 5, 9, 9, dtype=torch.uint8).contiguous(memory_format=CL)
    out = quantized_max_pool2d(q, 3, 2, 1)
    assert out.shape == (0, 5, 5, 5) and out.dtype == torch.uint8


def test_max_pool_bad_arguments():
    q = _codes((1, 3, 8, 8), torch.uint8)
    with pytest.raises(ValueError, match="kernel_size"):
        quantized_max_pool2d(q, 0)
    with pytest.raises(TypeError, match="kernel_size"):
        quantized_max_pool2d(q, 2.0)
    with pytest.raises(ValueError, match="stride"):
        quantized_max_pool2d(q, 2, 0)
    with pytest.raises(ValueError, match="dilation"):
        quantized_max_pool2d(q, 2, 1, 0, 0)
    with pytest.raises(ValueError, match="padding"):
        quantized_max_pool2d(q, 2, 1, -1)
    with pytest.raises(ValueError, match="padding must be at most half"):
        quantized_max_pool2d(q, 3, 1, 2)
    with pytest.raises(ValueError, match="too small"):
        quantized_max_pool2d(q, 5, 1, 0, 2)
    with pytest.raises(TypeError, match="ceil_mode"):
        quantized_max_pool2d(q, 2, ceil_mode=1)


def test_max_pool_native_rechecks():
    q = _codes((1, 3, 8, 8), torch.uint8)

    def call(q, out, k=2, s=2, p=0, d=1, ceil=False):
        _native.C.quantized_max_pool2d(_native.tensor_arg(q), k, k, s, s, p, p, d, d, ceil,
                                       _native.tensor_arg(out))

    out = torch.empty(1, 3, 4, 4, dtype=torch.uint8).contiguous(memory_format=CL)
    call(q, out)
    assert torch.equal(out, reference_quantized_max_pool2d(q, 2))
    with pytest.raises(ValueError, match="out must have shape"):
        call(q, torch.empty(1, 3, 5, 4, dtype=torch.uint8).contiguous(memory_format=CL))
    with pytest.raises(ValueError, match="out must be channels_last"):
        call(q, torch.empty(1, 3, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="q must be channels_last"):
        call(q.contiguous(), out)
    with pytest.raises(ValueError, match="out"):
        call(q, out.to(torch.int8))
    with pytest.raises(ValueError, match="q must be uint8 or int8"):
        call(q.float(), out)
    with pytest.raises(ValueError, match="padding"):
        call(q, out, k=3, p=2)
    with pytest.raises(ValueError, match="stride"):
        call(q, out, s=0)
    with pytest.raises(ValueError, match="too small"):
        call(q, out, k=9)


def test_max_pool_opcheck():
    for q in (_codes((2, 5, 9, 7), torch.uint8), _codes((1, 70, 6, 6), torch.int8)):
        torch.library.opcheck(_max_pool, (q, [3, 3], [2, 2], [1, 1], [1, 1], False))
        torch.library.opcheck(_max_pool, (q, [2, 3], [2, 1], [0, 1], [2, 1], True))


# ---- adaptive average pooling ---------------------------------------------------------------


@pytest.mark.parametrize("c", CHANNELS, ids=lambda c: f"c{c}")
@pytest.mark.parametrize("dtype", DTYPES, **_ids)
def test_adaptive_avg_matches_reference(isa, c, dtype):
    for shape in ((2, c, 13, 11), (1, c, 7, 7), (1, c, 1, 5)):
        q = _codes(shape, dtype)
        for size in AVG_SIZES:
            out = quantized_adaptive_avg_pool2d(q, size)
            want = reference_quantized_adaptive_avg_pool2d(q, size)
            assert out.dtype == dtype and out.is_contiguous(memory_format=CL)
            assert torch.equal(out, want), (shape, size)


@pytest.mark.parametrize("dtype", DTYPES, **_ids)
def test_adaptive_avg_rounds_half_to_even(isa, dtype):
    # two-pixel windows (H = 2 -> 1): sums k + 1/2 are exact ties
    lo, hi = (0, 255) if dtype == torch.uint8 else (-128, 127)
    a = torch.arange(lo, hi, dtype=torch.int64)
    pairs = torch.stack([a, a + 1])  # [2, n]: each column's mean is a tie
    q = pairs.t().reshape(1, -1, 2, 1).to(dtype).contiguous(memory_format=CL)
    out = quantized_adaptive_avg_pool2d(q, 1).flatten().long()
    assert torch.equal(out, torch.round((pairs[0] + pairs[1]).double() / 2).long())
    assert set(out[:4].tolist()) <= {lo, lo + 2, lo + 4}  # ties go to the even code


@pytest.mark.parametrize("shape", [(1, 64, 300, 300), (2, 33, 17, 16), (1, 200, 29, 31)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, **_ids)
def test_adaptive_avg_large_windows(isa, shape, dtype):
    # windows over 256 pixels (16-bit partial sums are flushed) and large divisors
    q = _codes(shape, dtype)
    for size in (1, (3, 2)):
        assert torch.equal(quantized_adaptive_avg_pool2d(q, size),
                           reference_quantized_adaptive_avg_pool2d(q, size))
    lo, hi = (0, 255) if dtype == torch.uint8 else (-128, 127)
    for value in (lo, hi, lo + 1):
        full = torch.full(shape, value, dtype=dtype).contiguous(memory_format=CL)
        assert (quantized_adaptive_avg_pool2d(full, 1) == value).all()


@pytest.mark.parametrize("shape", [(1, 512, 7, 7), (8, 2048, 7, 7), (2, 17, 13, 11)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, **_ids)
def test_adaptive_avg_close_to_pytorch_quantized(shape, dtype):
    # PyTorch rounds (sum - zp * count) * float32(1 / count): at most one code apart, at ties
    q = _codes(shape, dtype)
    for size in (1, (3, 5)):
        theirs = F.adaptive_avg_pool2d(_torch_quantized(q), size).int_repr()
        ours = quantized_adaptive_avg_pool2d(q, size)
        diff = (ours.int() - theirs.int()).abs()
        assert diff.max() <= 1 and diff.float().mean() < 0.05


def test_adaptive_avg_empty_batch(isa):
    q = torch.empty(0, 5, 7, 7, dtype=torch.int8).contiguous(memory_format=CL)
    out = quantized_adaptive_avg_pool2d(q, 1)
    assert out.shape == (0, 5, 1, 1) and out.dtype == torch.int8


def test_adaptive_avg_bad_arguments():
    q = _codes((1, 3, 8, 8), torch.uint8)
    with pytest.raises(ValueError, match="output_size"):
        quantized_adaptive_avg_pool2d(q, 0)
    with pytest.raises(ValueError, match="output_size"):
        quantized_adaptive_avg_pool2d(q, (2, -1))
    with pytest.raises(TypeError, match="output_size"):
        quantized_adaptive_avg_pool2d(q, 1.5)
    big = torch.zeros(1, 1, 2903, 2901, dtype=torch.uint8)  # H * W just over the limit
    assert 2903 * 2901 > MAX_AVG_POOL_PIXELS
    with pytest.raises(ValueError, match="H \\* W"):
        quantized_adaptive_avg_pool2d(big, 1)


def test_adaptive_avg_native_rechecks():
    q = _codes((1, 3, 8, 8), torch.uint8)

    def call(q, out):
        _native.C.quantized_adaptive_avg_pool2d(_native.tensor_arg(q), _native.tensor_arg(out))

    with pytest.raises(ValueError, match="out must have shape"):
        call(q, torch.empty(2, 3, 1, 1, dtype=torch.uint8))
    with pytest.raises(ValueError, match="output_size"):
        call(q, torch.empty(1, 3, 0, 1, dtype=torch.uint8))
    with pytest.raises(ValueError, match="q must be channels_last"):
        call(q.contiguous(), torch.empty(1, 3, 1, 1, dtype=torch.uint8))
    with pytest.raises(ValueError, match="out"):
        call(q, torch.empty(1, 3, 1, 1, dtype=torch.int8))
    with pytest.raises(ValueError, match="H \\* W"):
        call(torch.zeros(1, 1, 2903, 2901, dtype=torch.uint8),
             torch.empty(1, 1, 1, 1, dtype=torch.uint8))


def test_adaptive_avg_opcheck():
    for q in (_codes((2, 5, 9, 7), torch.uint8), _codes((1, 70, 6, 6), torch.int8)):
        torch.library.opcheck(_adaptive_avg, (q, [1, 1]))
        torch.library.opcheck(_adaptive_avg, (q, [4, 3]))


# ---- both ops ------------------------------------------------------------------------------

POOLS = {  # op, its reference, argument tuples
    "max": (quantized_max_pool2d, reference_quantized_max_pool2d,
            [(3, 2, 1), (3, 2, 1, 1, True)]),
    "avg": (quantized_adaptive_avg_pool2d, reference_quantized_adaptive_avg_pool2d,
            [(1,), ((4, 3),)]),
}


@pytest.mark.parametrize("pool", POOLS)
def test_bad_input(pool):
    op = POOLS[pool][0]
    q = _codes((1, 3, 8, 8), torch.uint8)
    for bad, error, message in (
            (q.float(), TypeError, "q must have dtype"),
            (q.to(torch.int32), TypeError, "q must have dtype"),
            (q.numpy(), TypeError, "q must be a torch.Tensor"),
            (q[0], ValueError, "q must be 4-D"),
            (q.flatten(2), ValueError, "q must be 4-D"),
            (q.contiguous(), ValueError, "q must be channels_last"),
            (torch.empty(1, 0, 4, 4, dtype=torch.uint8), ValueError, "q must have non-empty"),
            (torch.empty(1, 3, 0, 4, dtype=torch.uint8), ValueError, "q must have non-empty")):
        with pytest.raises(error, match=message):
            op(bad, 2)


@pytest.mark.parametrize("pool", POOLS)
def test_threads(pool):
    op, reference, arg_list = POOLS[pool]
    q = _codes((4, 600, 19, 17), torch.uint8)
    previous = pyfastcnn.get_num_threads()
    try:
        pyfastcnn.set_num_threads(2)
        outs = [op(q, *args) for args in arg_list]
    finally:
        pyfastcnn.set_num_threads(previous)
    assert all(torch.equal(o, reference(q, *a)) for o, a in zip(outs, arg_list))


@pytest.mark.parametrize("pool", POOLS)
def test_same_across_isas(pool):
    op, _, arg_list = POOLS[pool]
    q = _codes((2, 300, 17, 13), torch.int8)
    previous = pyfastcnn.get_isa()
    try:
        outs = []
        for isa in pyfastcnn.supported_isas():
            pyfastcnn.set_isa(isa)
            outs.append([op(q, *args) for args in arg_list])
    finally:
        pyfastcnn.set_isa(previous)
    assert all(torch.equal(o, w) for out in outs for o, w in zip(out, outs[0]))


# ---- modules, compile, export ---------------------------------------------------------------


def test_modules_take_other_layouts_and_3d():
    q = _codes((2, 5, 9, 8), torch.uint8)
    maxpool, avgpool = QuantMaxPool2d(3, 2, 1, ceil_mode=True), QuantAdaptiveAvgPool2d((2, None))
    want_max = reference_quantized_max_pool2d(q, 3, 2, 1, ceil_mode=True)
    want_avg = reference_quantized_adaptive_avg_pool2d(q, (2, None))
    for x in (q, q.contiguous(), q.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)):
        assert torch.equal(maxpool(x), want_max) and torch.equal(avgpool(x), want_avg)
    assert torch.equal(maxpool(q[1]), want_max[1]) and torch.equal(avgpool(q[1]), want_avg[1])
    with pytest.raises(ValueError, match="padding"):
        QuantMaxPool2d(2, 1, 2)
    with pytest.raises(ValueError, match="output_size"):
        QuantAdaptiveAvgPool2d(0)
    with pytest.raises(ValueError, match="too small"):
        QuantMaxPool2d(5)(_codes((1, 5, 2, 2), torch.uint8))
    assert "ceil_mode=True" in repr(maxpool) and "output_size=(2, None)" in repr(avgpool)


def test_compile():
    q = _codes((1, 8, 9, 9), torch.uint8)

    def f(q):
        return quantized_max_pool2d(q, 3, 2, 1), quantized_adaptive_avg_pool2d(q, 1)

    got = torch.compile(f, fullgraph=True)(q)
    want = f(q)
    assert all(torch.equal(g, w) for g, w in zip(got, want))


def test_exported():
    assert pyfastcnn.quantized_max_pool2d is quantized_max_pool2d
    assert pyfastcnn.ops.quantized_adaptive_avg_pool2d is quantized_adaptive_avg_pool2d
    kernels = pyfastcnn.config()["kernels"]
    assert kernels["quantized_max_pool2d"] in pyfastcnn.supported_isas()
    assert kernels["quantized_adaptive_avg_pool2d"] in pyfastcnn.supported_isas()
