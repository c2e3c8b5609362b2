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
from shapes import BATCHES, RESNET50_LAYERS

import pyfastcnn
from pyfastcnn.ops import reference

IMPLS = ("pyfastcnn int8", "torch int8 x86", "torch fp32")
LAYERS = RESNET50_LAYERS[2:3] + RESNET50_LAYERS[4:5] if QUICK else RESNET50_LAYERS
X_SCALE, OUT_SCALE = 1 / 255, 0.05


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
        torch.backends.quantized.engine = "x86"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PyTorch deprecates its quantized tensors
            qconv = torch.ao.nn.intrinsic.quantized.ConvReLU2d(
                layer.c_in, layer.c_out, layer.k, layer.stride, layer.padding
            )
            qweight = torch.quantize_per_channel(
                w, qw.scale.double(), torch.zeros(layer.c_out, dtype=torch.long), 0, torch.qint8
            )
            qconv.set_weight_bias(qweight, bias)
            qconv.scale, qconv.zero_point = OUT_SCALE, 0
            xq = torch.quantize_per_tensor(x, X_SCALE, 0, torch.quint8).contiguous(
                memory_format=torch.channels_last
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
