"""SparseConv2d: a pruned Conv2d that runs pyfastcnn's sparse kernels."""
from __future__ import annotations

from typing import Optional

import torch

from ..ops.sparse_conv import SparseWeight, pack_sparse, sparse_conv2d


class SparseConv2d(torch.nn.Module):
    """Conv2d with a pruned weight packed once (``SparseWeight``); zeros are skipped.

    Build it with ``SparseConv2d.from_dense(conv, format="auto", relu=False)``. The packed
    weight is picklable and is saved in the state dict as its dense form (``weight``), so
    ``load_state_dict`` repacks it. Inference only.

    ``.cuda()`` works: the packed weight stays a host object and uploads its arrays once per
    device on the first CUDA call (float32, float16 and bfloat16 input; "2:4" weights with
    float16/bfloat16 input run on sparse tensor cores). Packing always reads a CPU copy.
    """

    def __init__(self, weight: torch.Tensor, bias: Optional[torch.Tensor], stride, padding,
                 dilation, groups: int, relu: bool = False, format: str = "auto"):
        super().__init__()
        self.register_buffer("weight", weight.detach().float().contiguous())
        self.register_buffer("bias", None if bias is None else bias.detach().float().contiguous())
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.groups, self.relu, self.format = groups, relu, format
        self.packed: SparseWeight = pack_sparse(self.weight.cpu(), format, groups=groups)

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self.packed = pack_sparse(self.weight.detach().float().cpu(), self.format,
                                  groups=self.groups)

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
        oc, cg, kh, kw = self.weight.shape
        return (f"{cg * self.groups}, {oc}, kernel_size=({kh}, {kw}), stride={self.stride}, "
                f"padding={self.padding}, groups={self.groups}, relu={self.relu}, "
                f"format={self.packed.format!r}, density={self.density:.3f}")
