"""Fused conv + BN + ReLU on CUDA, ResNet-50 layer set at batch 32, channels_last:

* FP16: pyfastcnn.nn.FusedConvBNReLU2d (BN folded, weight packed once, tensor cores) against
  PyTorch eager conv -> BN -> ReLU in FP16 (the baseline; cuDNN, cudnn.benchmark on) and against
  cuDNN conv alone (F.conv2d with the BN-folded weight and bias, no ReLU: the issue's second
  target, >= 0.9x);
* FP32: ours (exact FP32 FMAs) against cuDNN FP32 conv with BN folded + ReLU (TF32 off) and
  eager conv -> BN -> ReLU in FP32.

Each benchmark checks its output against a float32 cuDNN result of the same operands first.

    pytest benchmarks/gpu/bench_gpu_conv.py --benchmark-json=gpu.json
"""

import pytest
import torch
import torch.nn.functional as F
from conftest import QUICK, gpu_run
from shapes import RESNET50_LAYERS

import pyfastcnn

BATCH = 32
LAYERS = [RESNET50_LAYERS[2], RESNET50_LAYERS[5]] if QUICK else RESNET50_LAYERS
OURS = "pyfastcnn fused"
EAGER = "torch eager conv-bn-relu"
CUDNN_ALONE = "cudnn conv alone (BN folded)"
CUDNN_RELU = "cudnn conv+relu (BN folded)"
FP16_IMPLS = (EAGER, OURS, CUDNN_ALONE)
FP32_IMPLS = (CUDNN_RELU, OURS, EAGER)
TOL = {torch.float16: 2e-3, torch.float32: 1e-5}


def _setup(layer, dtype):
    conv = torch.nn.Conv2d(layer.c_in, layer.c_out, layer.k, layer.stride, layer.padding,
                           bias=False)
    bn = torch.nn.BatchNorm2d(layer.c_out)
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.normal_()
        bn.bias.normal_()
    eager = torch.nn.Sequential(conv, bn, torch.nn.ReLU()).eval()
    fused = pyfastcnn.nn.FusedConvBNReLU2d.from_modules(conv, bn).to("cuda")
    eager = eager.to("cuda", dtype).to(memory_format=torch.channels_last)
    x = torch.randn(BATCH, layer.c_in, layer.hw, layer.hw, device="cuda").to(dtype).contiguous(
        memory_format=torch.channels_last)
    w = fused.weight.to(dtype).contiguous(memory_format=torch.channels_last)
    b = fused.bias.to(dtype)
    return x, eager, fused, w, b


def _check(out, x, fused, layer, dtype, relu=True):
    ref = F.conv2d(x.float(), fused.weight.to(dtype).float(), fused.bias, layer.stride,
                   layer.padding)
    ref = ref.relu() if relu else ref
    err = ((out.float() - ref).norm() / ref.norm()).item()
    assert err <= TOL[dtype], err


def _run(benchmark, layer, dtype, impl, impls):
    x, eager, fused, w, b = _setup(layer, dtype)
    with torch.no_grad():
        if impl == OURS:
            fn = lambda: fused(x)  # noqa: E731
        elif impl == EAGER:
            fn = lambda: eager(x)  # noqa: E731
        elif impl == CUDNN_ALONE:
            fn = lambda: F.conv2d(x, w, b, layer.stride, layer.padding)  # noqa: E731
        else:
            fn = lambda: F.conv2d(x, w, b, layer.stride, layer.padding).relu_()  # noqa: E731
        out = fn()
        torch.cuda.synchronize()
        if impl != EAGER:
            _check(out, x, fused, layer, dtype, relu=impl != CUDNN_ALONE)
        kind = "fp16" if dtype == torch.float16 else "fp32"
        gpu_run(benchmark, fn, group=f"fused_conv {layer.id} b{BATCH} {kind}", impl=impl,
                ops=layer.flops(BATCH), baseline=impls[0], kind=kind)


@pytest.mark.parametrize("impl", FP16_IMPLS)
@pytest.mark.parametrize("layer", LAYERS, ids=lambda layer: layer.id)
def test_fused_conv_fp16(benchmark, layer, impl):
    _run(benchmark, layer, torch.float16, impl, FP16_IMPLS)


@pytest.mark.parametrize("impl", FP32_IMPLS)
@pytest.mark.parametrize("layer", LAYERS, ids=lambda layer: layer.id)
def test_fused_conv_fp32(benchmark, layer, impl):
    _run(benchmark, layer, torch.float32, impl, FP32_IMPLS)
