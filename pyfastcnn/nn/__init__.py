"""Modules that hold packed weights and run pyfastcnn kernels."""
from .fused import FusedConvBNReLU2d

__all__ = ["FusedConvBNReLU2d"]
