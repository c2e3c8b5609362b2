"""pyfastcnn.sparse_conv2d and pack_sparse: convolution with pruned weights, skipping zeros."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple, Union

import torch

from .. import _native
from ._checks import (
    IntPair,
    check_conv_input,
    check_tensor,
    check_vector,
    conv_geometry,
    output_memory_format,
)

SPARSE_FORMATS = ("auto", "csr")


@dataclass(frozen=True)
class SparseWeight:
    """A pruned conv weight packed once for ``sparse_conv2d`` (picklable, torch.save-able).

    Format "csr": the non-zeros of each output channel, in order; ``col_idx`` holds
    ``(ci_in_group * KH + kh) * KW + kw``.

    Attributes:
        shape: the dense weight shape (out_channels, in_channels / groups, KH, KW).
        row_ptr: int64 [out_channels + 1], offsets into col_idx / values.
        col_idx: int32 [nnz].
        values: float32 [nnz].
        format: packing format name.
    """

    shape: Tuple[int, int, int, int]
    row_ptr: torch.Tensor
    col_idx: torch.Tensor
    values: torch.Tensor
    format: str = "csr"

    @property
    def nnz(self) -> int:
        return int(self.values.numel())

    @property
    def density(self) -> float:
        """Fraction of weights that are non-zero."""
        total = self.shape[0] * self.shape[1] * self.shape[2] * self.shape[3]
        return self.nnz / total if total else 0.0

    def to_dense(self) -> torch.Tensor:
        """The dense float32 weight this was packed from."""
        oc, cg, kh, kw = self.shape
        dense = torch.zeros(oc, cg * kh * kw, dtype=torch.float32)
        rows = torch.repeat_interleave(torch.arange(oc), self.row_ptr[1:] - self.row_ptr[:-1])
        dense[rows, self.col_idx.long()] = self.values
        return dense.view(self.shape)

    def __repr__(self) -> str:
        return (
            f"SparseWeight(shape={self.shape}, format={self.format!r}, nnz={self.nnz}, "
            f"density={self.density:.3f})"
        )


def pack_sparse(weight: torch.Tensor, format: str = "auto") -> SparseWeight:
    """Pack a pruned float32 conv weight [OC, C/groups, KH, KW] once, for reuse across calls.

    Zeros are dropped (NaN and inf are kept: they are not zeros). ``format="auto"`` picks the
    best format for the weight; today that is always "csr".
    """
    check_tensor("weight", weight, torch.float32, 4)
    if format not in SPARSE_FORMATS:
        raise ValueError(f"format must be one of {SPARSE_FORMATS}, got {format!r}")
    oc = weight.shape[0]
    if oc == 0:
        raise ValueError("weight must have at least one output channel")
    flat = weight.detach().reshape(oc, -1)
    mask = flat != 0
    counts = mask.sum(dim=1)
    row_ptr = torch.zeros(oc + 1, dtype=torch.int64)
    torch.cumsum(counts, dim=0, out=row_ptr[1:])
    cols = mask.nonzero()[:, 1]  # row-major order: rows ascending, columns ascending
    return SparseWeight(
        shape=tuple(int(s) for s in weight.shape),
        row_ptr=row_ptr,
        col_idx=cols.to(torch.int32),
        values=flat[mask].contiguous(),
        format="csr",
    )


def _sparse_conv2d_csr_impl(
    input: torch.Tensor,
    row_ptr: torch.Tensor,
    col_idx: torch.Tensor,
    values: torch.Tensor,
    bias: Optional[torch.Tensor],
    weight_shape: List[int],
    stride: List[int],
    padding: List[int],
    dilation: List[int],
    groups: int,
    output_size: List[int],
    relu: bool,
) -> torch.Tensor:
    out = torch.empty(
        (input.shape[0], weight_shape[0], output_size[0], output_size[1]),
        dtype=torch.float32,
        memory_format=output_memory_format(input),
    )
    _native.C.sparse_conv2d_csr(
        _native.tensor_arg(input),
        _native.tensor_arg(row_ptr),
        _native.tensor_arg(col_idx),
        _native.tensor_arg(values),
        _native.optional_arg(bias),
        weight_shape[1],
        weight_shape[2],
        weight_shape[3],
        stride[0],
        stride[1],
        padding[0],
        padding[1],
        dilation[0],
        dilation[1],
        groups,
        0.0 if relu else float("-inf"),
        float("inf"),
        _native.tensor_arg(out),
    )
    return out


_sparse_conv2d_csr = torch.library.custom_op(
    "pyfastcnn::sparse_conv2d_csr", mutates_args=(), device_types="cpu"
)(_sparse_conv2d_csr_impl)


@_sparse_conv2d_csr.register_fake
def _(
    input,
    row_ptr,
    col_idx,
    values,
    bias,
    weight_shape,
    stride,
    padding,
    dilation,
    groups,
    output_size,
    relu,
):
    return torch.empty(
        (input.shape[0], weight_shape[0], output_size[0], output_size[1]),
        dtype=torch.float32,
        device=input.device,
        memory_format=output_memory_format(input),
    )


def sparse_conv2d(
    input: torch.Tensor,
    weight: Union[torch.Tensor, SparseWeight],
    bias: Optional[torch.Tensor] = None,
    stride: IntPair = 1,
    padding: Union[IntPair, str] = 0,
    dilation: IntPair = 1,
    groups: int = 1,
    *,
    relu: bool = False,
) -> torch.Tensor:
    """``F.conv2d`` with a pruned weight; work is proportional to the non-zeros.

    Args:
        input: float32 [N, C, H, W], CPU, NCHW or channels_last (or any strided view).
        weight: a packed ``SparseWeight`` (made once by ``pack_sparse``), or a dense pruned
            float32 [OC, C/groups, KH, KW] tensor, which is packed on every call.
        bias: float32 [OC] or None.
        stride, padding, dilation, groups: as in ``F.conv2d`` (padding may be "same"/"valid").
        relu: apply ReLU in the same pass (NaN stays NaN).

    Returns:
        float32 [N, OC, OH, OW], channels_last when the input is channels_last.

    Zero weights are skipped, so a 0 * NaN (or 0 * inf) product that ``F.conv2d`` would turn
    into NaN does not reach the output; NaN meeting a non-zero weight propagates.
    """
    check_conv_input("input", input)
    if isinstance(weight, torch.Tensor):
        weight = pack_sparse(weight)
    elif not isinstance(weight, SparseWeight):
        raise TypeError(
            f"weight must be a torch.Tensor or a pyfastcnn.SparseWeight, got "
            f"{type(weight).__name__}"
        )
    if bias is not None:
        check_vector("bias", bias, weight.shape[0])
    if not isinstance(relu, bool):
        raise TypeError(f"relu must be a bool, got {type(relu).__name__}")
    geo = conv_geometry(input.shape, weight.shape, stride, padding, dilation, groups)
    return _native.run(
        _sparse_conv2d_csr,
        _sparse_conv2d_csr_impl,
        input,
        weight.row_ptr,
        weight.col_idx,
        weight.values,
        bias,
        list(weight.shape),
        list(geo.stride),
        list(geo.padding),
        list(geo.dilation),
        geo.groups,
        list(geo.output_size),
        relu,
    )
