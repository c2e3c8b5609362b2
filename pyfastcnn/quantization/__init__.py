"""Quantization building blocks: the linear quantization math and calibration observers.

(PTQ/QAT flows and model conversion build on these; see the README.)
"""
from .observers import (
    HistogramObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    calibrate,
)
from .qparams import choose_qparams, dequantize, quant_range, quantize

__all__ = [
    "HistogramObserver",
    "MinMaxObserver",
    "MovingAverageMinMaxObserver",
    "calibrate",
    "choose_qparams",
    "dequantize",
    "quant_range",
    "quantize",
]
