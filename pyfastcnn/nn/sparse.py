"""SparseConv2d: a pruned Conv2d that runs pyfastcnn's sparse kernels."""
from __future__ import annotations

from typing import Optional

import torch

from ..ops.sparse_conv import (BLOCK_COLS, SPARSE_FORMATS, SparseWeight, narrow_indices,
                               pack_sparse, sparse_conv2d)


class SparseConv2d(torch.nn.Module):
    """Conv2d with a pruned weight packed once (``SparseWeight``); zeros are skipped.

    Build it with ``SparseConv2d.from_dense(conv, format="auto", relu=False)``. Only the packed
    form is stored: the state dict holds its arrays (``sparse_row_ptr``, ``sparse_col_idx``,
    ``sparse_values``, ``sparse_format``, an index into ``SPARSE_FORMATS``, and
    ``sparse_shape``, the weight shape and groups), so a pruned model is smaller on disk than
    the dense one. ``load_state_dict`` also takes a dense ``weight`` (e.g. the pruned
    ``nn.Conv2d``'s state dict) and packs it in this module's format; the other way,
    ``module.weight`` is the dense float32 form (computed on access) to copy into a
    ``nn.Conv2d``. Inference only.

    ``.cuda()`` works: the packed weight stays a host object and uploads its arrays once per
    device on the first CUDA call (float32, float16 and bfloat16 input; "2:4" weights with
    float16/bfloat16 input run on sparse tensor cores). Packing always reads a CPU copy.
    """

    _PACKED_KEYS = ("sparse_row_ptr", "sparse_col_idx", "sparse_values", "sparse_format",
                    "sparse_shape")

    def __init__(self, weight: torch.Tensor, bias: Optional[torch.Tensor], stride, padding,
                 dilation, groups: int, relu: bool = False, format: str = "auto"):
        super().__init__()
        self.register_buffer("bias", None if bias is None else bias.detach().float().contiguous())
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.groups, self.relu, self.format = groups, relu, format
        self.packed: SparseWeight = pack_sparse(weight.detach().float().cpu().contiguous(),
                                                format, groups=groups)

    @property
    def weight(self) -> torch.Tensor:
        """The dense float32 weight (zeros included), rebuilt from the packed form."""
        return self.packed.to_dense()

    def __setstate__(self, state):
        super().__setstate__(state)
        # modules pickled before only the packed form was stored also carry the dense weight
        self._buffers.pop("weight", None)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        p = self.packed
        code = torch.tensor(SPARSE_FORMATS.index(p.format), dtype=torch.uint8)
        shape = torch.tensor(tuple(p.shape) + (self.groups,), dtype=torch.int64)
        arrays = (p.row_ptr, narrow_indices(p.col_idx), p.values, code, shape)
        for key, t in zip(self._PACKED_KEYS, arrays):
            destination[prefix + key] = t

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        keys = [prefix + k for k in self._PACKED_KEYS]
        dense = state_dict.get(prefix + "weight")
        try:
            if all(k in state_dict for k in keys):
                self.packed = self._packed_from(*(state_dict[k] for k in keys))
            elif dense is not None:
                self._check_dense(dense)
                self.packed = pack_sparse(dense.detach().float().cpu().contiguous(),
                                          self.format, groups=self.groups)
            elif strict:
                missing_keys.extend(k for k in keys if k not in state_dict)
        except ValueError as e:
            error_msgs.append(f"{prefix or 'SparseConv2d '}weight: {e}")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        for k in keys + [prefix + "weight"]:
            if k in unexpected_keys:
                unexpected_keys.remove(k)

    def _check_dense(self, dense: torch.Tensor) -> None:
        if tuple(dense.shape) != tuple(self.packed.shape):
            raise ValueError(f"size mismatch: {tuple(dense.shape)} in the state dict, "
                             f"{tuple(self.packed.shape)} in this module")

    def _packed_from(self, row_ptr, col_idx, values, code, shape) -> SparseWeight:
        """A SparseWeight from saved arrays, checked (a corrupt or mismatched file raises
        ValueError) and packed again in the saved format."""
        mine = tuple(self.packed.shape) + (self.groups,)
        if tuple(shape.tolist()) != mine:
            raise ValueError(f"size mismatch: (OC, C/groups, KH, KW, groups) = "
                             f"{tuple(shape.tolist())} in the state dict, {mine} in this module")
        if code.numel() != 1 or not 0 < int(code) < len(SPARSE_FORMATS):
            raise ValueError(f"unknown sparse_format code {code.tolist()}")
        fmt = SPARSE_FORMATS[int(code)]
        row_ptr, values = row_ptr.long().cpu(), values.float().cpu()
        col_idx = col_idx.cpu() if fmt == "2:4" else col_idx.int().cpu()
        if fmt != "2:4":
            self._check_rows(fmt, row_ptr, col_idx, values)
        saved = SparseWeight(self.packed.shape, row_ptr, col_idx, values, fmt, self.groups)
        try:
            dense = saved.to_dense()
        except (RuntimeError, IndexError) as e:
            raise ValueError(f"the saved {fmt} arrays do not describe a weight of shape "
                             f"{tuple(self.packed.shape)} ({e})") from None
        return pack_sparse(dense, fmt, groups=self.groups)

    def _check_rows(self, fmt: str, row_ptr, col_idx, values) -> None:
        """csr / block arrays: row_ptr from 0, non-decreasing, to the entry count; indices in
        [0, C/groups * KH * KW); one value per entry (csr) or BLOCK_COLS (block)."""
        oc, cg, kh, kw = self.packed.shape
        panels = (oc // self.groups + BLOCK_COLS - 1) // BLOCK_COLS
        rows = oc if fmt == "csr" else self.groups * panels
        per_entry = 1 if fmt == "csr" else BLOCK_COLS
        n = col_idx.numel()
        if (row_ptr.dim() != 1 or row_ptr.numel() != rows + 1 or int(row_ptr[0]) != 0
                or bool((row_ptr[1:] < row_ptr[:-1]).any()) or int(row_ptr[-1]) != n):
            raise ValueError(f"sparse_row_ptr must have {rows + 1} non-decreasing entries from 0 "
                             f"to the {n} indices")
        if n and (int(col_idx.min()) < 0 or int(col_idx.max()) >= cg * kh * kw):
            raise ValueError(f"sparse_col_idx entries must be in [0, {cg * kh * kw})")
        if values.numel() != n * per_entry:
            raise ValueError(f"sparse_values must have {n * per_entry} entries, got "
                             f"{values.numel()}")

    @classmethod
    def from_dense(cls, conv: torch.nn.Conv2d, format: str = "auto",
                   relu: bool = False) -> "SparseConv2d":
        """From a (pruned) Conv2d; ``relu=True`` fuses a following ReLU."""
        if not isinstance(conv, torch.nn.Conv2d):
            raise TypeError(f"conv must be a torch.nn.Conv2d, got {type(conv).__name__}")
        if conv.padding_mode != "zeros":
            raise ValueError(f"conv.padding_mode must be 'zeros', got {conv.padding_mode!r}")
        return cls(conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation,
                   conv.groups, relu, format)

    @property
    def density(self) -> float:
        return self.packed.density

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return sparse_conv2d(input, self.packed, self.bias, self.stride, self.padding,
                             self.dilation, self.groups, relu=self.relu)

    def extra_repr(self) -> str:
        oc, cg, kh, kw = self.packed.shape
        return (f"{cg * self.groups}, {oc}, kernel_size=({kh}, {kw}), stride={self.stride}, "
                f"padding={self.padding}, groups={self.groups}, relu={self.relu}, "
                f"format={self.packed.format!r}, density={self.density:.3f}")
