"""Modules that hold packed weights and run pyfastcnn kernels."""
from .fused import FusedConvBNReLU2d
from .sparse import SparseConv2d

__all__ = ["FusedConvBNReLU2d", "SparseConv2d"]
