"""Quantized conv (uint8 in, uint8 out, per-channel weights, bias, ReLU fused) on the ResNet-50
layer set: pyfastcnn.quantized_conv2d against PyTorch's INT8 conv (engine x86 = oneDNN, NHWC)
and FP32 oneDNN conv + ReLU (channels_last), same thread count, same run.

    pytest benchmarks/bench_quantized_conv.py --benchmark-json=benchmarks/results/cpu-qconv.json
"""

import warnings

import pytest
import torch
import torch.nn.functional as F
from conftest import QUICK, run
from shapes import BATCHES, MOBILENETV2_DEPTHWISE, RESNET50_LAYERS

import pyfastcnn
from pyfastcnn.ops import reference

IMPLS = ("pyfastcnn int8", "torch int8 x86", "torch fp32")
LAYERS = RESNET50_LAYERS[2:3] + RESNET50_LAYERS[4:5] if QUICK else RESNET50_LAYERS
X_SCALE, OUT_SCALE = 1 / 255, 0.05


def _torch_qconv(cls, x, w, qw, bias, args, **kwargs):
    """PyTorch's INT8 conv module `cls`(*args, **kwargs) on engine x86 with our weight scales
    (per channel), and x quantized for it (quint8, channels_last)."""
    torch.backends.quantized.engine = "x86"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyTorch deprecates its quantized tensors
        qconv = cls(*args, **kwargs)
        qweight = torch.quantize_per_channel(
            w, qw.scale.double(), torch.zeros(w.shape[0], dtype=torch.long), 0, torch.qint8
        )
        qconv.set_weight_bias(qweight, bias)
        qconv.scale, qconv.zero_point = OUT_SCALE, 0
        xq = torch.quantize_per_tensor(x, X_SCALE, 0, torch.quint8).contiguous(
            memory_format=torch.channels_last
        )
    return qconv, xq


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("batch", (1,) if QUICK else BATCHES, ids=lambda b: f"b{b}")
@pytest.mark.parametrize("layer", LAYERS, ids=lambda layer: layer.id)
def test_quantized_conv(benchmark, threads, layer, batch, impl):
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
    if impl == "pyfastcnn int8":

        def fn():
            return pyfastcnn.quantized_conv2d(
                xu,
                X_SCALE,
                0,
                qw,
                bias,
                **geo,
                out_dtype=torch.uint8,
                out_scale=OUT_SCALE,
                out_zero_point=0,
                relu=True,
            )

        ref = reference.quantized_conv2d(
            xu,
            X_SCALE,
            0,
            qw.int_weight,
            qw.scale,
            bias,
            **geo,
            out_dtype=torch.uint8,
            out_scale=OUT_SCALE,
            out_zero_point=0,
            relu=True,
        )
        assert (fn().double() - ref).abs().max() <= 1
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
        group=f"qconv {layer.id} b{batch} t{threads}",
        impl=impl,
        ops=layer.flops(batch),
        threads=threads,
        baseline="torch int8 x86",
        kind="fp32" if impl == "torch fp32" else "int8",
    )


DW_IMPLS = ("pyfastcnn int8", "torch int8 x86")
DW_LAYERS = (MOBILENETV2_DEPTHWISE[1:2] + MOBILENETV2_DEPTHWISE[7:8] if QUICK
             else MOBILENETV2_DEPTHWISE)


@pytest.mark.parametrize("impl", DW_IMPLS)
@pytest.mark.parametrize("batch", (1,) if QUICK else BATCHES, ids=lambda b: f"b{b}")
@pytest.mark.parametrize("layer", DW_LAYERS, ids=lambda s: f"dw{s[0]}-{s[1]}-s{s[2]}")
def test_quantized_depthwise_conv(benchmark, threads, layer, batch, impl):
    """MobileNetV2's depthwise 3x3 convs, uint8 in and out, per-channel weights, bias: ours
    against torch.ao.nn.quantized.Conv2d(groups=C) on engine x86 (oneDNN), channels_last."""
    c, hw, stride = layer
    x = torch.rand(batch, c, hw, hw).contiguous(memory_format=torch.channels_last)
    w = torch.randn(c, 1, 3, 3) * 0.1
    bias = torch.randn(c)
    qw = pyfastcnn.quantize_weight(w, groups=c)
    xu = torch.clamp(torch.round(x / X_SCALE), 0, 255).to(torch.uint8).contiguous(
        memory_format=torch.channels_last
    )
    geo = dict(stride=stride, padding=1)
    out = dict(out_dtype=torch.uint8, out_scale=OUT_SCALE, out_zero_point=0)
    if impl == "pyfastcnn int8":

        def fn():
            return pyfastcnn.quantized_conv2d(xu, X_SCALE, 0, qw, bias, **geo, **out)

        ref = reference.quantized_conv2d(xu, X_SCALE, 0, qw.int_weight, qw.scale, bias, **geo,
                                         groups=c, **out)
        assert (fn().double() - ref).abs().max() <= 1
    else:
        qconv, xq = _torch_qconv(torch.ao.nn.quantized.Conv2d, x, w, qw, bias,
                                 (c, c, 3, stride, 1), groups=c)

        def fn():
            return qconv(xq)

    oh = (hw - 1) // stride + 1
    run(
        benchmark,
        fn,
        group=f"qconv dw{c}-{hw}-s{stride} b{batch} t{threads}",
        impl=impl,
        ops=2 * 9 * c * oh * oh * batch,
        threads=threads,
        baseline="torch int8 x86",
        kind="int8",
    )
