"""pyfastcnn: make CNNs smaller and faster for inference.

Ops (CPU today; see README for what each guarantees):
    int8_gemm(a, b)                          int8 x int8 -> int32, exact (b may be packed)
    pack_int8_weight(b) -> PackedInt8Weight  pack a constant int8 operand once
    quantize_weight(w) -> QuantizedWeight    symmetric int8 weight, per channel
    quantized_linear / quantized_conv2d      INT8 layers, fused requantization epilogue
    quantized_max_pool2d / quantized_adaptive_avg_pool2d   pooling on channels_last codes
    sparse_conv2d(input, weight, ...)        conv2d with pruned weights, zeros skipped
    pack_sparse(weight) -> SparseWeight      pack a pruned weight once
    conv_bn_relu(input, weight, ...)         conv + eval BN + ReLU in one pass
Models: compress(model, sparsity=, quantize=, calibration_data=) one-shot; report(model, x);
pruning, quantization (PTQ/QAT), fusion (BN folding, FP32/BF16 fused convs), models.
Settings: set_isa / get_isa / supported_isas, set_num_threads / get_num_threads, show_config.
"""

from . import fusion, models, nn, pruning, quantization
from ._config import (
    __version__,
    config,
    get_isa,
    get_num_threads,
    set_isa,
    set_num_threads,
    show_config,
    supported_isas,
)
from .compress import compress
from .export import export_onnx
from .model_report import report
from .ops import (
    PackedConvWeight,
    PackedInt8Weight,
    QuantizedWeight,
    SparseWeight,
    conv_bn_relu,
    fold_bn,
    int8_gemm,
    pack_int8_weight,
    pack_sparse,
    quantize_weight,
    quantized_adaptive_avg_pool2d,
    quantized_conv2d,
    quantized_linear,
    quantized_max_pool2d,
    sparse_conv2d,
)

__all__ = [
    "__version__",
    "compress",
    "export_onnx",
    "report",
    "fusion",
    "models",
    "nn",
    "pruning",
    "quantization",
    "config",
    "show_config",
    "get_isa",
    "set_isa",
    "supported_isas",
    "get_num_threads",
    "set_num_threads",
    "SparseWeight",
    "pack_sparse",
    "sparse_conv2d",
    "conv_bn_relu",
    "fold_bn",
    "PackedConvWeight",
    "int8_gemm",
    "pack_int8_weight",
    "PackedInt8Weight",
    "quantize_weight",
    "QuantizedWeight",
    "quantized_linear",
    "quantized_conv2d",
    "quantized_max_pool2d",
    "quantized_adaptive_avg_pool2d",
]
