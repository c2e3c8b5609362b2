"""``sparsity_report``: per-layer and total parameters, non-zeros, sparsity, FLOPs, sizes."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..ops.sparse_conv import SparseWeight, pack_sparse

_INDEX_BYTES = 4  # int32 column indices, as the sparse kernels store them


@dataclass
class LayerStats:
    """One Conv/Linear layer (or SparseConv2d)."""

    name: str
    kind: str
    shape: Tuple[int, ...]
    params: int
    nonzeros: int
    flops_dense: Optional[int]  # multiply-adds x 2 for one input batch; None without input
    flops_sparse: Optional[int]
    bytes_dense: int
    bytes_sparse: int
    format: str

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nonzeros / self.params if self.params else 0.0


@dataclass
class SparsityReport:
    """Rows per layer plus totals; ``str(report)`` is a markdown table."""

    layers: List[LayerStats] = field(default_factory=list)
    other_params: int = 0  # parameters of other modules (BN, biases elsewhere)

    def _sum(self, attr: str) -> Optional[int]:
        values = [getattr(s, attr) for s in self.layers]
        return None if any(v is None for v in values) else sum(values)

    @property
    def params(self) -> int:
        return self._sum("params")

    @property
    def nonzeros(self) -> int:
        return self._sum("nonzeros")

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nonzeros / self.params if self.params else 0.0

    @property
    def flops_dense(self) -> Optional[int]:
        return self._sum("flops_dense")

    @property
    def flops_sparse(self) -> Optional[int]:
        return self._sum("flops_sparse")

    @property
    def bytes_dense(self) -> int:
        return self._sum("bytes_dense") + 4 * self.other_params

    @property
    def bytes_sparse(self) -> int:
        return self._sum("bytes_sparse") + 4 * self.other_params

    def as_dict(self) -> Dict[str, dict]:
        return {s.name: {"params": s.params, "nonzeros": s.nonzeros, "sparsity": s.sparsity,
                         "flops_dense": s.flops_dense, "flops_sparse": s.flops_sparse,
                         "bytes_dense": s.bytes_dense, "bytes_sparse": s.bytes_sparse,
                         "format": s.format} for s in self.layers}

    def to_markdown(self) -> str:
        def f(v, scale=1e6, unit="M"):
            return "-" if v is None else f"{v / scale:.2f}{unit}"

        rows = ["| layer | shape | params | non-zeros | sparsity | MFLOPs dense | MFLOPs sparse "
                "| KB dense | KB packed | format |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for s in self.layers:
            rows.append(f"| {s.name} | {'x'.join(map(str, s.shape))} | {s.params} | "
                        f"{s.nonzeros} | {s.sparsity:.1%} | {f(s.flops_dense, 1e6, '')} | "
                        f"{f(s.flops_sparse, 1e6, '')} | {s.bytes_dense / 1024:.1f} | "
                        f"{s.bytes_sparse / 1024:.1f} | {s.format} |")
        rows.append(f"| **total** | | {self.params} | {self.nonzeros} | {self.sparsity:.1%} | "
                    f"{f(self.flops_dense, 1e6, '')} | {f(self.flops_sparse, 1e6, '')} | "
                    f"{self.bytes_dense / 1024:.1f} | {self.bytes_sparse / 1024:.1f} | |")
        rows.append(f"\nmodel size: {self.bytes_dense / 2**20:.2f} MiB dense, "
                    f"{self.bytes_sparse / 2**20:.2f} MiB sparse-packed (float32 values, int32 "
                    f"indices; {self.other_params} other parameters counted dense)")
        return "\n".join(rows)

    __str__ = to_markdown


def packed_bytes(packed: SparseWeight) -> int:
    """Bytes of a packed sparse weight: values + column indices + row pointers."""
    return (packed.values.numel() * 4 + packed.col_idx.numel() * _INDEX_BYTES
            + packed.row_ptr.numel() * 8)


def _sparse_bytes(weight: torch.Tensor, groups: int) -> Tuple[int, str]:
    """Smallest of dense, CSR and 32-channel block storage for this weight."""
    dense = weight.numel() * 4
    if weight.dim() < 2 or weight.shape[0] % groups:
        return dense, "dense"
    w4 = weight.detach().float().reshape(weight.shape[0], weight.shape[1], 1, -1)
    best, fmt = dense, "dense"
    for candidate in ("csr", "block"):
        size = packed_bytes(pack_sparse(w4, candidate, groups=groups))
        if size < best:
            best, fmt = size, candidate
    return best, fmt


def sparsity_report(model: nn.Module, example_inputs: Optional[Sequence[torch.Tensor]] = None,
                    types: Tuple[type, ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
                    ) -> SparsityReport:
    """Parameters, non-zeros, sparsity, FLOPs and storage of each Conv/Linear layer.

    Args:
        model: a (pruned, or converted) model; ``pyfastcnn.nn.SparseConv2d`` layers count too.
        example_inputs: when given (e.g. ``(torch.randn(1, 3, 224, 224),)``), one forward pass
            under ``no_grad`` records each layer's output size, for FLOPs (2 x multiply-adds:
            dense = all weights, sparse = non-zero weights only).
        types: the layer types reported.

    Sizes: dense = 4 bytes per weight; sparse-packed = the smaller of dense, CSR (value +
    int32 index per non-zero) and 32-channel blocks (32 values + one index per kept block).
    Biases and the parameters of other modules (BN, ...) are added dense to the totals.
    """
    from ..nn import SparseConv2d

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    layers = [(n, m) for n, m in model.named_modules()
              if isinstance(m, types + (SparseConv2d,))]
    outputs: Dict[str, int] = {}
    if example_inputs is not None:
        if isinstance(example_inputs, torch.Tensor):
            example_inputs = (example_inputs,)
        handles = []
        for name, module in layers:
            def hook(mod, inp, out, name=name):
                outputs[name] = out.numel()
            handles.append(module.register_forward_hook(hook))
        try:
            with torch.no_grad():
                model(*example_inputs)
        finally:
            for h in handles:
                h.remove()
    report = SparsityReport()
    counted = set()
    for name, module in layers:
        weight = module.weight.detach()
        groups = getattr(module, "groups", 1)
        counted.add(id(module.weight))
        nnz = int(torch.count_nonzero(weight))
        bias = getattr(module, "bias", None)
        bias_bytes = 0 if bias is None else bias.numel() * 4
        if bias is not None:
            counted.add(id(bias))
        sparse_bytes, fmt = _sparse_bytes(weight, groups)
        if isinstance(module, SparseConv2d):
            fmt = module.packed.format
            sparse_bytes = packed_bytes(module.packed)
        flops_dense = flops_sparse = None
        if name in outputs:
            oc = weight.shape[0]
            per_out = outputs[name] // oc  # output positions x batch per output channel
            flops_dense = 2 * per_out * weight.numel()
            flops_sparse = 2 * per_out * nnz
        report.layers.append(LayerStats(name, type(module).__name__, tuple(weight.shape),
                                        weight.numel(), nnz, flops_dense, flops_sparse,
                                        weight.numel() * 4 + bias_bytes,
                                        sparse_bytes + bias_bytes, fmt))
    report.other_params = sum(p.numel() for p in model.parameters() if id(p) not in counted)
    return report
