"""INT8 elementwise ops: pyfastcnn.ops.quantized_add (ResNet-18's residual adds, uint8,
channels_last, ReLU) and quantize_per_tensor (the network input, NCHW float32 -> channels_last
uint8) against the PyTorch-op formulations nn/quantized.py used (QuantAdd.forward,
Quantize.forward; their lines are copied below as the baselines) and PyTorch's quantized
kernels (torch.ops.quantized.add_relu, torch.quantize_per_tensor), same thread count, same run.
INT8 pooling: quantized_max_pool2d (ResNet stem, 3x3/2 pad 1) and quantized_adaptive_avg_pool2d
(global, ResNet-18/50 heads) against PyTorch's quantized max_pool2d / adaptive_avg_pool2d on a
quantized channels_last tensor (the baselines).

    pytest benchmarks/bench_elementwise.py --benchmark-json=benchmarks/results/cpu-elementwise.json
    python benchmarks/report.py benchmarks/results/cpu-elementwise.json
"""

import warnings

import pytest
import torch
from conftest import QUICK, run

from pyfastcnn.ops import (
    quantize_per_tensor,
    quantized_adaptive_avg_pool2d,
    quantized_add,
    quantized_max_pool2d,
)

CL = torch.channels_last
# ResNet-18 residual adds at 224x224 input; batch 1 (and 8 in the full run)
ADD_SHAPES = [(1, 64, 56, 56), (1, 128, 28, 28), (1, 256, 14, 14), (1, 512, 7, 7)]
if not QUICK:
    ADD_SHAPES += [(8, 64, 56, 56)]
QUANT_SHAPES = [(1, 3, 224, 224)] + ([] if QUICK else [(8, 3, 224, 224)])
SA, ZA, SB, ZB, SO, ZO = 0.05, 120, 0.03, 130, 0.07, 0
# ResNet stem max pool (after the 7x7/2 conv at 224x224); global average pool of ResNet-18/50
MAX_POOL_SHAPES = [(1, 64, 112, 112)] + ([] if QUICK else [(8, 64, 112, 112)])
AVG_POOL_SHAPES = [(1, 512, 7, 7), (1, 2048, 7, 7)] + (
    [] if QUICK else [(8, 512, 7, 7), (8, 2048, 7, 7)])


def _id(shape):
    return "x".join(map(str, shape))


def baseline_add(a, b, relu=True, qmin=0, qmax=255, dtype=torch.uint8):
    """QuantAdd.forward's PyTorch ops (nn/quantized.py before native ops)."""
    ka, kb = SA / SO, SB / SO
    c = ZO - ka * ZA - kb * ZB
    y = a.float().mul_(ka).add_(c)
    y.add_(b.float(), alpha=kb).round_()
    y.clamp_(ZO if relu else qmin, qmax)
    return y.to(dtype)


@pytest.mark.parametrize("impl", ("torch ops (QuantAdd)", "torch quantized.add_relu",
                                  "pyfastcnn quantized_add"))
@pytest.mark.parametrize("shape", ADD_SHAPES, ids=_id)
def test_quantized_add(benchmark, threads, shape, impl):
    torch.manual_seed(0)
    a = torch.randint(0, 256, shape, dtype=torch.uint8).contiguous(memory_format=CL)
    b = torch.randint(0, 256, shape, dtype=torch.uint8).contiguous(memory_format=CL)
    if impl.startswith("pyfastcnn"):
        def fn():
            return quantized_add(a, SA, ZA, b, SB, ZB, SO, ZO, relu=True)
        # within one code of the PyTorch-op formulation (its last step is an FMA)
        assert (fn().int() - baseline_add(a, b).int()).abs().max() <= 1
    elif impl == "torch ops (QuantAdd)":
        def fn():
            return baseline_add(a, b)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            qa = torch._make_per_tensor_quantized_tensor(a, SA, ZA)
            qb = torch._make_per_tensor_quantized_tensor(b, SB, ZB)

        def fn():
            return torch.ops.quantized.add_relu(qa, qb, SO, ZO)

    run(benchmark, fn, group=f"quantized_add {_id(shape)} t{threads}", impl=impl,
        ops=a.numel(), threads=threads, baseline="torch ops (QuantAdd)")


def baseline_quantize(x, scale=1 / 64, zero_point=128, qmin=0, qmax=255, dtype=torch.uint8):
    """Quantize.forward: pyfastcnn.quantization.quantize, then channels_last."""
    s = torch.as_tensor(scale, dtype=torch.float32)
    z = torch.as_tensor(zero_point, dtype=torch.int32)
    q = torch.clamp(torch.round(x.float() / s) + z, qmin, qmax).to(dtype)
    return q.contiguous(memory_format=CL)


@pytest.mark.parametrize("impl", ("torch ops (Quantize)", "torch quantize_per_tensor",
                                  "pyfastcnn quantize_per_tensor"))
@pytest.mark.parametrize("shape", QUANT_SHAPES, ids=_id)
def test_quantize(benchmark, threads, shape, impl):
    torch.manual_seed(0)
    x = torch.randn(shape)
    if impl.startswith("pyfastcnn"):
        def fn():
            return quantize_per_tensor(x, 1 / 64, 128)
        assert torch.equal(fn(), baseline_quantize(x))
    elif impl == "torch ops (Quantize)":
        def fn():
            return baseline_quantize(x)
    else:
        def fn():
            return torch.quantize_per_tensor(x, 1 / 64, 128, torch.quint8).contiguous(
                memory_format=CL)

    run(benchmark, fn, group=f"quantize {_id(shape)} t{threads}", impl=impl,
        ops=x.numel(), threads=threads, baseline="torch ops (Quantize)")


def _torch_quantized(q):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch._make_per_tensor_quantized_tensor(q, SA, ZA)


def _bench_pool(benchmark, threads, shape, impl, ours, theirs, max_diff, family, baseline):
    """ours(q) (uint8 codes, channels_last) against theirs(quantized tensor): within max_diff
    codes, then timed."""
    torch.manual_seed(0)
    q = torch.randint(0, 256, shape, dtype=torch.uint8).contiguous(memory_format=CL)
    tq = _torch_quantized(q)
    if impl.startswith("pyfastcnn"):
        def fn():
            return ours(q)
        assert (fn().int() - theirs(tq).int_repr().int()).abs().max() <= max_diff
    else:
        def fn():
            return theirs(tq)
    run(benchmark, fn, group=f"{family} {_id(shape)} t{threads}", impl=impl, ops=q.numel(),
        threads=threads, baseline=baseline)


@pytest.mark.parametrize("impl", ("torch quantized.max_pool2d",
                                  "pyfastcnn quantized_max_pool2d"))
@pytest.mark.parametrize("shape", MAX_POOL_SHAPES, ids=_id)
def test_quantized_max_pool(benchmark, threads, shape, impl):
    _bench_pool(benchmark, threads, shape, impl, lambda q: quantized_max_pool2d(q, 3, 2, 1),
                lambda tq: torch.ops.quantized.max_pool2d(tq, [3, 3], [2, 2], [1, 1], [1, 1],
                                                          False),
                0, "quantized_max_pool", "torch quantized.max_pool2d")


@pytest.mark.parametrize("impl", ("torch quantized adaptive_avg_pool2d",
                                  "pyfastcnn quantized_adaptive_avg_pool2d"))
@pytest.mark.parametrize("shape", AVG_POOL_SHAPES, ids=_id)
def test_quantized_global_avg_pool(benchmark, threads, shape, impl):
    # PyTorch rounds with a float32 reciprocal: one code apart at most, at ties
    _bench_pool(benchmark, threads, shape, impl, lambda q: quantized_adaptive_avg_pool2d(q, 1),
                lambda tq: torch.nn.functional.adaptive_avg_pool2d(tq, 1), 1,
                "quantized_avg_pool", "torch quantized adaptive_avg_pool2d")
