"""``pyfastcnn.report(model, example_input)``: per-layer parameters, non-zeros, stored size,
FLOPs, the kernel each layer runs and its measured latency."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import List

import torch

from . import _native
from .nn.fused import FusedConvBNReLU2d
from .nn.quantized import (
    QuantAdaptiveAvgPool2d,
    QuantAdd,
    QuantConv2d,
    QuantLinear,
    QuantMaxPool2d,
)
from .nn.sparse import SparseConv2d


@dataclass
class LayerRow:
    name: str
    kind: str
    kernel: str
    params: int
    nonzeros: int
    bytes: int
    flops: int             # dense multiply-adds × 2 for this call's input
    latency_ms: float


@dataclass
class ModelReport:
    """Rows per layer that holds weights (or is an INT8 op), and totals."""

    rows: List[LayerRow] = field(default_factory=list)
    total_latency_ms: float = 0.0

    @property
    def params(self) -> int:
        return sum(r.params for r in self.rows)

    @property
    def nonzeros(self) -> int:
        return sum(r.nonzeros for r in self.rows)

    @property
    def bytes(self) -> int:
        return sum(r.bytes for r in self.rows)

    @property
    def flops(self) -> int:
        return sum(r.flops for r in self.rows)

    def __str__(self) -> str:
        width = max([len(r.name) for r in self.rows] + [5])
        lines = [f"{'layer':<{width}}  {'kind':<18} {'kernel':<22} {'params':>10} "
                 f"{'non-zeros':>10} {'KiB':>9} {'MFLOP':>9} {'ms':>8}"]
        for r in self.rows:
            lines.append(f"{r.name:<{width}}  {r.kind:<18} {r.kernel:<22} {r.params:>10} "
                         f"{r.nonzeros:>10} {r.bytes / 1024:>9.1f} {r.flops / 1e6:>9.1f} "
                         f"{r.latency_ms:>8.3f}")
        lines.append(f"{'total':<{width}}  {'':<18} {'':<22} {self.params:>10} "
                     f"{self.nonzeros:>10} {self.bytes / 1024:>9.1f} {self.flops / 1e6:>9.1f} "
                     f"{self.total_latency_ms:>8.3f}  (whole model, median)")
        return "\n".join(lines)


def _kernel(module: torch.nn.Module) -> str:
    isa = _native.C.kernel_isa
    if isinstance(module, QuantConv2d) and module.sparse:
        if module.weight.grouped:
            return f"sparse int8 groups {isa('sparse_quantized_conv2d_groups')}"
        return f"sparse int8 blocks {isa('sparse_quantized_conv2d')}"
    if isinstance(module, (QuantConv2d, QuantLinear)):
        return f"int8 {isa('int8_gemm')}"
    if isinstance(module, SparseConv2d):
        return f"sparse {module.packed.format} {isa('sparse_conv2d')}"
    if isinstance(module, FusedConvBNReLU2d):
        if module.dtype == torch.bfloat16:
            return f"fused bf16 {isa('conv2d_bf16')}"
        if module.weight.shape[1] == 1 and module.groups == module.weight.shape[0]:
            return f"depthwise {isa('conv2d_dense')}"
        return f"fused fp32 {isa('conv2d_dense')}"
    if isinstance(module, QuantAdd):
        return f"int8 add {isa('quantized_add')}"
    if isinstance(module, QuantMaxPool2d):
        return f"int8 max pool {isa('quantized_max_pool2d')}"
    if isinstance(module, QuantAdaptiveAvgPool2d):
        return f"int8 avg pool {isa('quantized_adaptive_avg_pool2d')}"
    return "torch"


def _weights(module: torch.nn.Module):
    """(params, non-zeros, bytes as stored) of one layer."""
    if isinstance(module, (QuantConv2d, QuantLinear)):
        w = module.int_weight()
        stored = sum(t.numel() * t.element_size() for t in module._weight_tensors().values())
        bias = 0 if module.bias is None else module.bias.numel() * 4
        return w.numel(), int(torch.count_nonzero(w)), stored + bias
    if isinstance(module, SparseConv2d):
        p = module.packed
        stored = sum(t.numel() * t.element_size() for t in (p.row_ptr, p.col_idx, p.values))
        bias = 0 if module.bias is None else module.bias.numel() * 4
        return math.prod(p.shape), p.nnz, stored + bias
    if isinstance(module, FusedConvBNReLU2d):
        w = module.weight
        size = 2 if module.dtype == torch.bfloat16 else 4
        bias = 0 if module.bias is None else module.bias.numel() * 4
        return w.numel(), int(torch.count_nonzero(w)), w.numel() * size + bias
    weights = list(module.parameters(recurse=False))
    buffers = [b for b in module.buffers(recurse=False) if b is not None]
    params = sum(t.numel() for t in weights)
    nonzeros = sum(int(torch.count_nonzero(t)) for t in weights)
    return params, nonzeros, sum(t.numel() * t.element_size() for t in weights + buffers)


def _flops(module: torch.nn.Module, out: torch.Tensor) -> int:
    if isinstance(module, QuantConv2d):
        _, cg, kh, kw = module.weight_shape
        return 2 * out.numel() * cg * kh * kw
    if isinstance(module, (torch.nn.Conv2d, FusedConvBNReLU2d, SparseConv2d)):
        w = module.weight
        return 2 * out.numel() * w.shape[1] * w.shape[2] * w.shape[3]
    if isinstance(module, (torch.nn.Linear, QuantLinear)):
        w = module.weight.int_weight if isinstance(module, QuantLinear) else module.weight
        return 2 * out.numel() * w.shape[1]
    return 0


_REPORTED = (torch.nn.Conv2d, torch.nn.Linear, torch.nn.BatchNorm2d, FusedConvBNReLU2d,
             SparseConv2d, QuantConv2d, QuantLinear, QuantAdd, QuantMaxPool2d,
             QuantAdaptiveAvgPool2d)


def report(model: torch.nn.Module, example_input: torch.Tensor, runs: int = 5,
           print_table: bool = False) -> ModelReport:
    """Per layer: parameters, non-zeros, bytes as stored (packed sparse, int8 + scales, bf16),
    FLOPs (dense count for ``example_input``), the kernel it runs on this machine, and its
    median latency over ``runs`` forward passes (plus the whole model's median).

    Args:
        model: any model (original, fused, pruned/converted, quantized).
        example_input: one input batch (channels_last is the fast layout for convs).
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(example_input, torch.Tensor):
        raise TypeError(f"example_input must be a tensor, got {type(example_input).__name__}")
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise ValueError(f"runs must be a positive int, got {runs!r}")
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, _REPORTED)]
    starts, times = {}, {n: [] for n, _ in layers}
    flops = {}
    handles = []
    for name, m in layers:
        handles.append(m.register_forward_pre_hook(
            lambda mod, args, name=name: starts.__setitem__(name, time.perf_counter())))

        def after(mod, args, out, name=name):
            times[name].append(time.perf_counter() - starts[name])
            if isinstance(out, torch.Tensor):
                flops[name] = _flops(mod, out)
        handles.append(m.register_forward_hook(after))
    total = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example_input)  # warm-up (packing, page faults)
            for name in times:
                times[name].clear()
            for _ in range(runs):
                t0 = time.perf_counter()
                model(example_input)
                total.append(time.perf_counter() - t0)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    def median(values: List[float]) -> float:
        values = sorted(values)
        return values[len(values) // 2] * 1e3 if values else math.nan

    out = ModelReport(total_latency_ms=median(total))
    for name, m in layers:
        params, nonzeros, nbytes = _weights(m)
        out.rows.append(LayerRow(name, type(m).__name__, _kernel(m), params, nonzeros, nbytes,
                                 flops.get(name, 0), median(times[name])))
    if print_table:
        print(out)
    return out


__all__ = ["report", "ModelReport", "LayerRow"]
