"""Fused conv+BN+ReLU, FP32: pyfastcnn.nn.FusedConvBNReLU2d (BN folded, weight packed once)
against PyTorch eager conv -> BN -> ReLU and against oneDNN conv with BN pre-folded (+ ReLU),
all channels_last, same thread count, same run.

    pytest benchmarks/bench_fused_conv.py --benchmark-json=benchmarks/results/cpu-fused.json
"""

import pytest
import torch
import torch.nn.functional as F
from conftest import QUICK, run
from shapes import BATCHES, MOBILENETV2_DEPTHWISE, RESNET50_LAYERS

import pyfastcnn

IMPLS = ("pyfastcnn fused", "torch eager conv-bn-relu", "torch conv+relu (BN folded)")
BF16 = "pyfastcnn fused bf16"
TORCH_BF16 = "torch bf16 conv+relu (BN folded)"  # PyTorch's own BF16 conv (oneDNN), bf16 in/out
LAYERS = RESNET50_LAYERS[2:3] + RESNET50_LAYERS[4:5] if QUICK else RESNET50_LAYERS


@pytest.mark.parametrize("impl", IMPLS + (BF16, TORCH_BF16))
@pytest.mark.parametrize("batch", (1,) if QUICK else BATCHES, ids=lambda b: f"b{b}")
@pytest.mark.parametrize("layer", LAYERS, ids=lambda layer: layer.id)
def test_fused_conv(benchmark, threads, layer, batch, impl):
    x = torch.randn(batch, layer.c_in, layer.hw, layer.hw).contiguous(
        memory_format=torch.channels_last)
    conv = torch.nn.Conv2d(layer.c_in, layer.c_out, layer.k, layer.stride, layer.padding,
                           bias=False)
    bn = torch.nn.BatchNorm2d(layer.c_out).eval()
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
    eager = torch.nn.Sequential(conv, bn, torch.nn.ReLU()).eval()
    fused = pyfastcnn.nn.FusedConvBNReLU2d.from_modules(conv, bn)
    if impl == "pyfastcnn fused":
        fn = fused
        with torch.no_grad():
            ref = eager.double()(x.double())
            eager.float()
        err = ((fn(x).double() - ref).norm() / ref.norm()).item()
        assert err <= 1e-5, err
    elif impl == BF16:  # checked against its error bound in tests/test_fused_module.py
        fn = pyfastcnn.nn.FusedConvBNReLU2d.from_modules(conv, bn, dtype=torch.bfloat16)
    elif impl == "torch eager conv-bn-relu":
        fn = eager
    elif impl == TORCH_BF16:
        wb, bb = fused.weight.bfloat16(), fused.bias.bfloat16()
        xb = x.bfloat16()

        def fn(t):
            return torch.relu(F.conv2d(xb, wb, bb, layer.stride, layer.padding))
    else:
        w, b = fused.weight, fused.bias

        def fn(t):
            return torch.relu(F.conv2d(t, w, b, layer.stride, layer.padding))

    with torch.no_grad():
        run(benchmark, lambda: fn(x), group=f"fused_conv {layer.id} b{batch} t{threads}",
            impl=impl, ops=layer.flops(batch), threads=threads,
            baseline="torch conv+relu (BN folded)",
            kind="bf16" if impl in (BF16, TORCH_BF16) else "fp32")


DEPTHWISE = MOBILENETV2_DEPTHWISE[1:2] if QUICK else MOBILENETV2_DEPTHWISE


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("batch", (1,) if QUICK else BATCHES, ids=lambda b: f"b{b}")
@pytest.mark.parametrize("layer", DEPTHWISE, ids=lambda d: "dw{}-{}-s{}".format(*d))
def test_fused_depthwise(benchmark, threads, layer, batch, impl):
    channels, hw, stride = layer
    x = torch.randn(batch, channels, hw, hw).contiguous(memory_format=torch.channels_last)
    conv = torch.nn.Conv2d(channels, channels, 3, stride, 1, groups=channels, bias=False)
    bn = torch.nn.BatchNorm2d(channels).eval()
    with torch.no_grad():
        bn.running_var.uniform_(0.5, 2.0)
    eager = torch.nn.Sequential(conv, bn, torch.nn.ReLU()).eval()
    fused = pyfastcnn.nn.FusedConvBNReLU2d.from_modules(conv, bn)
    if impl == "pyfastcnn fused":
        fn = fused
    elif impl == "torch eager conv-bn-relu":
        fn = eager
    elif impl == TORCH_BF16:
        wb, bb = fused.weight.bfloat16(), fused.bias.bfloat16()
        xb = x.bfloat16()

        def fn(t):
            return torch.relu(F.conv2d(xb, wb, bb, layer.stride, layer.padding))
    else:
        w, b = fused.weight, fused.bias

        def fn(t):
            return torch.relu(F.conv2d(t, w, b, stride, 1, 1, channels))

    out_hw = (hw - 1) // stride + 1
    with torch.no_grad():
        run(benchmark, lambda: fn(x), group=f"fused_dw dw{channels}-{hw}-s{stride} b{batch} "
            f"t{threads}", impl=impl, ops=2 * batch * channels * out_hw * out_hw * 9,
            threads=threads, baseline="torch conv+relu (BN folded)", kind="fp32")
