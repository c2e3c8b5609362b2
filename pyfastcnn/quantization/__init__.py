"""Quantization: the linear quantization math, calibration observers, fake quantization, and
the PTQ / QAT flows that turn a float CNN into one running pyfastcnn's INT8 kernels.

    prepared = prepare(model); calibrate(prepared, batches); int8 = convert(prepared)
    qat = prepare_qat(model); <train>; int8 = convert(qat)
"""
from .fake_quant import (
    OBSERVERS,
    FakeQuantize,
    disable_observer,
    enable_fake_quant,
    fake_quantize,
    fake_quantize_weight,
)
from .flow import QConfig, convert, freeze_bn_stats, prepare, prepare_qat, simulate
from .modules import QuantizableAdd, QuantizableConv2d, QuantizableLinear
from .observers import (
    HistogramObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    calibrate,
)
from .qparams import choose_qparams, dequantize, quant_range, quantize
from .report import quantization_report, sqnr

__all__ = [
    "OBSERVERS",
    "FakeQuantize",
    "HistogramObserver",
    "MinMaxObserver",
    "MovingAverageMinMaxObserver",
    "QConfig",
    "QuantizableAdd",
    "QuantizableConv2d",
    "QuantizableLinear",
    "calibrate",
    "choose_qparams",
    "convert",
    "dequantize",
    "disable_observer",
    "enable_fake_quant",
    "fake_quantize",
    "fake_quantize_weight",
    "freeze_bn_stats",
    "prepare",
    "prepare_qat",
    "quant_range",
    "quantization_report",
    "quantize",
    "simulate",
    "sqnr",
]
