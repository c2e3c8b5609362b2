"""Pruned ResNet-18 after ``pyfastcnn.pruning.convert`` against the dense original (PyTorch
eager, channels_last, eval, no_grad), same thread count, same run. Random weights (speed
does not depend on their values); input 1x3x224x224 channels_last.

Implementations:
    dense eager                      the unpruned model
    block 0.9 converted              90% pruned in 32-output-channel blocks -> "block" kernels
    unstructured 0.9 converted       90% unstructured -> "csr" where the cost model expects a
                                     gain, else dense
    channels 0.5 (dense, smaller)    half the channels removed physically (prune_channels)

Each pruned model's output is checked once against the masked float model (rel. err <= 1e-5).

    pytest benchmarks/bench_pruned_model.py --benchmark-json=out.json
"""

import copy
import functools

import pytest
import torch
from conftest import QUICK, run

import pyfastcnn
from pyfastcnn import pruning

IMPLS = ("dense eager", "block 0.9 converted", "unstructured 0.9 converted",
         "channels 0.5 (dense, smaller)")
SHAPE = (1, 3, 224, 224)
RESNET18_FLOPS = 2 * 1_814_000_000  # multiply-adds x 2 of the dense model at 224x224


@functools.lru_cache(maxsize=None)
def dense_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = pyfastcnn.models.resnet18().eval()
    with torch.no_grad():  # non-trivial BN statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model


def example_input() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(SHAPE, generator=g).contiguous(memory_format=torch.channels_last)


@functools.lru_cache(maxsize=None)
def build(impl: str, threads: int):
    """(model to time, masked float model it must match)."""
    x = example_input()
    if impl == "dense eager":
        return dense_model(), None
    masked = copy.deepcopy(dense_model())
    if impl.startswith("channels"):
        pruning.prune_channels(masked, 0.5, (x,), round_to=8)
        return masked, None
    structure = "block" if impl.startswith("block") else "unstructured"
    pruning.prune(masked, 0.9, structure, skip=["fc"])
    converted = pruning.convert(masked, threads=threads, inplace=False)
    return converted, masked


@pytest.mark.parametrize("impl", IMPLS)
def test_pruned_resnet18(benchmark, threads, impl):
    model, masked = build(impl, threads)
    x = example_input()
    if masked is not None:
        with torch.no_grad():
            ref = masked(x).double()
            out = model(x).double()
        assert ((out - ref).norm() / ref.norm()).item() <= 1e-5
    converted = pruning.converted_layers(model)
    params = pruning.sparsity_report(model)

    def fn():
        with torch.no_grad():
            return model(x)

    run(
        benchmark,
        fn,
        group=f"pruned resnet18 1x3x224x224 t{threads}",
        impl=impl,
        ops=RESNET18_FLOPS,
        threads=threads,
        baseline="dense eager",
        kind="fp32",
        converted_layers=len(converted),
        nonzeros=params.nonzeros,
        quick=QUICK,
    )
