"""Modules that hold packed weights and run pyfastcnn kernels."""
from .fused import FusedConvBNReLU2d
from .quantized import (
    DeQuantize,
    QuantAdaptiveAvgPool2d,
    QuantAdd,
    QuantConv2d,
    Quantize,
    QuantLinear,
    QuantMaxPool2d,
)
from .sparse import SparseConv2d

__all__ = ["FusedConvBNReLU2d", "SparseConv2d", "QuantConv2d", "QuantLinear", "QuantAdd",
           "QuantMaxPool2d", "QuantAdaptiveAvgPool2d", "Quantize", "DeQuantize"]
