"""Sparse INT8 conv: pyfastcnn.sparse_quantized_conv2d (uint8 in and out, per-channel weights,
bias and ReLU fused, channels_last) with weights pruned in blocks of 4 input channels at one
tap (the structure one vpdpbusd lane consumes; "sparse int8") and unstructured (packed with
layout="auto": groups of 4 non-zeros where the CPU has VNNI; "unstructured int8"), at
50/80/90% sparsity, against PyTorch's dense
INT8 conv (torch.ao ConvReLU2d, engine x86 = oneDNN, NHWC) and dense FP32 F.conv2d + ReLU
(oneDNN, channels_last), same thread count, same run.

    pytest benchmarks/bench_sparse_int8.py --benchmark-json=benchmarks/results/cpu-sparse-int8.json
    python benchmarks/report.py benchmarks/results/cpu-sparse-int8.json
"""

import pytest
import torch
import torch.nn.functional as F
from bench_quantized_conv import OUT_SCALE, X_SCALE, _torch_qconv
from conftest import QUICK, run
from shapes import BATCHES, RESNET50_LAYERS

import pyfastcnn

SPARSITIES = (0.9,) if QUICK else (0.5, 0.8, 0.9)
LAYERS = RESNET50_LAYERS[2:3] + RESNET50_LAYERS[4:5] if QUICK else RESNET50_LAYERS
IMPLS = (("torch int8 x86", "torch fp32")
         + tuple(f"pyfastcnn sparse int8 {s}" for s in SPARSITIES)
         + tuple(f"pyfastcnn unstructured int8 {s}" for s in SPARSITIES))


def prune_blocks4(int_weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Zero random blocks of 4 consecutive input channels at one (oc, kh, kw)."""
    oc, c, kh, kw = int_weight.shape
    cq = (c + 3) // 4
    keep = torch.rand(oc, cq, 1, kh, kw) >= sparsity
    keep = keep.expand(-1, -1, 4, -1, -1).reshape(oc, 4 * cq, kh, kw)[:, :c]
    return int_weight * keep


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("batch", (1,) if QUICK else BATCHES, ids=lambda b: f"b{b}")
@pytest.mark.parametrize("layer", LAYERS, ids=lambda layer: layer.id)
def test_sparse_int8_conv(benchmark, threads, layer, batch, impl):
    torch.manual_seed(0)
    x = torch.rand(batch, layer.c_in, layer.hw, layer.hw).contiguous(
        memory_format=torch.channels_last
    )
    w = torch.randn(layer.c_out, layer.c_in, layer.k, layer.k) * 0.1
    bias = torch.randn(layer.c_out)
    qw = pyfastcnn.quantize_weight(w)
    xu = (
        torch.clamp(torch.round(x / X_SCALE), 0, 255)
        .to(torch.uint8)
        .contiguous(memory_format=torch.channels_last)
    )
    geo = dict(stride=layer.stride, padding=layer.padding)
    out = dict(out_dtype=torch.uint8, out_scale=OUT_SCALE, out_zero_point=0, relu=True)
    sparsity = None
    if impl.startswith("pyfastcnn"):
        sparsity = float(impl.split()[-1])
        if "unstructured" in impl:
            keep = torch.rand(qw.int_weight.shape) >= sparsity
            pruned = pyfastcnn.QuantizedWeight(qw.int_weight * keep, qw.scale)
        else:
            pruned = pyfastcnn.QuantizedWeight(prune_blocks4(qw.int_weight, sparsity), qw.scale)
        packed = pyfastcnn.ops.pack_sparse_int8(pruned)

        def fn():
            return pyfastcnn.ops.sparse_quantized_conv2d(
                xu, X_SCALE, 0, packed, bias, **geo, **out
            )

        # Same integer sums and epilogue as the dense INT8 op on the pruned weight.
        assert torch.equal(fn(), pyfastcnn.quantized_conv2d(xu, X_SCALE, 0, pruned, bias, **geo,
                                                             **out))
    elif impl == "torch int8 x86":
        qconv, xq = _torch_qconv(
            torch.ao.nn.intrinsic.quantized.ConvReLU2d, x, w, qw, bias,
            (layer.c_in, layer.c_out, layer.k, layer.stride, layer.padding),
        )

        def fn():
            return qconv(xq)
    else:

        def fn():
            return torch.relu(F.conv2d(x, w, bias, **geo))

    run(
        benchmark,
        fn,
        group=f"sparse_int8 {layer.id} b{batch} t{threads}",
        impl=impl,
        ops=layer.flops(batch),
        threads=threads,
        baseline="torch int8 x86",
        kind="fp32" if impl == "torch fp32" else "int8",
        sparsity=sparsity,
    )
