"""Sparse conv: pyfastcnn.sparse_conv2d with a packed weight against dense oneDNN F.conv2d
(channels_last, its fast layout) on the same pruned weight, per sparsity, same thread count,
same run. Two patterns: unstructured (random, "csr" format, NCHW input: its fast layout) and
blocks of 32 output channels x one input position ("block" format, channels_last input).

    pytest benchmarks/bench_sparse_conv.py --benchmark-json=benchmarks/results/cpu.json
"""

import pytest
import torch
import torch.nn.functional as F
from conftest import QUICK, run
from shapes import BATCHES, RESNET50_LAYERS

import pyfastcnn
from pyfastcnn.ops import reference

SPARSITIES = (0.9,) if QUICK else (0.5, 0.7, 0.8, 0.9, 0.95, 0.98)
LAYERS = RESNET50_LAYERS[2:3] if QUICK else RESNET50_LAYERS
IMPLS = (["dense oneDNN"] + [f"pyfastcnn sparse {s}" for s in SPARSITIES]
         + [f"pyfastcnn block {s}" for s in SPARSITIES])


def prune_blocks(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Zero whole blocks of 32 output channels x one (c, kh, kw) position."""
    block = torch.arange(weight.shape[0]) // 32
    keep = torch.rand(int(block.max()) + 1, *weight.shape[1:]) >= sparsity
    return weight * keep[block]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("batch", (1,) if QUICK else BATCHES, ids=lambda b: f"b{b}")
@pytest.mark.parametrize("layer", LAYERS, ids=lambda layer: layer.id)
def test_sparse_conv(benchmark, threads, layer, batch, impl):
    x = torch.randn(batch, layer.c_in, layer.hw, layer.hw)
    w = torch.randn(layer.c_out, layer.c_in, layer.k, layer.k)
    geo = dict(stride=layer.stride, padding=layer.padding)
    if impl == "dense oneDNN":
        xd = x.contiguous(memory_format=torch.channels_last)

        def fn():
            return F.conv2d(xd, w, None, **geo)
    else:
        sparsity = float(impl.split()[-1])
        if impl.startswith("pyfastcnn block"):
            pruned = prune_blocks(w, sparsity)
            packed = pyfastcnn.pack_sparse(pruned, "block")
            x = x.contiguous(memory_format=torch.channels_last)
        else:
            pruned = w * (torch.rand_like(w) >= sparsity)
            packed = pyfastcnn.pack_sparse(pruned, "csr")

        def fn():
            return pyfastcnn.sparse_conv2d(x, packed, None, **geo)

        ref = reference.conv2d(x, pruned, None, **geo)
        assert ((fn().double() - ref).norm() / ref.norm()).item() <= 1e-5
    run(
        benchmark,
        fn,
        group=f"sparse_conv {layer.id} b{batch} t{threads}",
        impl=impl,
        ops=layer.flops(batch),
        threads=threads,
        baseline="dense oneDNN",
        kind="fp32",
    )
