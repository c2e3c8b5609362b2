"""The ops: validated Python entry points over torch.library custom ops over native kernels."""

from .conv_bn_relu import PackedConvWeight, conv_bn_relu, fold_bn
from .elementwise import quantize_per_tensor, quantized_add
from .int8_gemm import int8_gemm
from .pool import quantized_adaptive_avg_pool2d, quantized_max_pool2d
from .quantized import (
    PackedInt8Weight,
    QuantizedWeight,
    pack_int8_weight,
    quantize_weight,
    quantized_conv2d,
    quantized_linear,
)
from .sparse_conv import SparseWeight, pack_sparse, sparse_conv2d
from .sparse_int8 import SparseInt8Weight, pack_sparse_int8, sparse_quantized_conv2d

__all__ = [
    "conv_bn_relu",
    "fold_bn",
    "PackedConvWeight",
    "int8_gemm",
    "quantized_add",
    "quantize_per_tensor",
    "quantized_max_pool2d",
    "quantized_adaptive_avg_pool2d",
    "PackedInt8Weight",
    "QuantizedWeight",
    "pack_int8_weight",
    "quantize_weight",
    "quantized_conv2d",
    "quantized_linear",
    "SparseWeight",
    "pack_sparse",
    "sparse_conv2d",
    "SparseInt8Weight",
    "pack_sparse_int8",
    "sparse_quantized_conv2d",
]
