"""INT8 elementwise ops: pyfastcnn.ops.quantized_add (ResNet-18's residual adds, uint8,
channels_last, ReLU) and quantize_per_tensor (the network input, NCHW float32 -> channels_last
uint8) against the PyTorch-op formulations nn/quantized.py used (QuantAdd.forward,
Quantize.forward; their lines are copied below as the baselines) and PyTorch's quantized
kernels (torch.ops.quantized.add_relu, torch.quantize_per_tensor), same thread count, same run.

    pytest benchmarks/bench_elementwise.py --benchmark-json=benchmarks/results/cpu-elementwise.json
    python benchmarks/report.py benchmarks/results/cpu-elementwise.json
"""

import warnings

import pytest
import torch
from conftest import QUICK, run

from pyfastcnn.ops import quantize_per_tensor, quantized_add

CL = torch.channels_last
# ResNet-18 residual adds at 224x224 input; batch 1 (and 8 in the full run)
ADD_SHAPES = [(1, 64, 56, 56), (1, 128, 28, 28), (1, 256, 14, 14), (1, 512, 7, 7)]
if not QUICK:
    ADD_SHAPES += [(8, 64, 56, 56)]
QUANT_SHAPES = [(1, 3, 224, 224)] + ([] if QUICK else [(8, 3, 224, 224)])
SA, ZA, SB, ZB, SO, ZO = 0.05, 120, 0.03, 130, 0.07, 0


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
