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
    conv_output,
)

SPARSE_FORMATS = ("auto", "csr", "block")
BLOCK_COLS = 32  # output channels per block (one 32-wide register panel of the kernel)


@dataclass(frozen=True)
class SparseWeight:
    """A pruned conv weight packed once for ``sparse_conv2d`` (picklable, torch.save-able).

    Formats (``col_idx`` entries index the weight's reduction axis,
    ``(ci_in_group * KH + kh) * KW + kw`` for csr, ``(kh * KW + kw) * C_per_group + ci`` for
    block):

    * "csr": the non-zeros of each output channel; ``row_ptr`` [OC + 1] indexes ``col_idx`` and
      ``values`` (one value per entry). Any sparsity pattern; work proportional to non-zeros.
    * "block": per group, output channels in blocks of 32 sharing the positions they keep:
      ``row_ptr`` [groups * ceil(OC / groups / 32) + 1] indexes the kept positions ``col_idx``,
      and ``values`` holds 32 values per kept position. For weights pruned in such blocks
      (e.g. channel-group pruning); it runs the dense kernel's register tile on kept positions.

    Attributes:
        shape: the dense weight shape (out_channels, in_channels / groups, KH, KW).
        format, groups: packing format; groups the block format was packed for.
        row_ptr (int64), col_idx (int32), values (float32): as above.
    """

    shape: Tuple[int, int, int, int]
    row_ptr: torch.Tensor
    col_idx: torch.Tensor
    values: torch.Tensor
    format: str = "csr"
    groups: int = 1

    @property
    def nnz(self) -> int:
        """Stored non-zero weights."""
        if self.format == "csr":
            return int(self.values.numel())
        return int(torch.count_nonzero(self.values))

    @property
    def density(self) -> float:
        """Fraction of weights that are non-zero."""
        total = self.shape[0] * self.shape[1] * self.shape[2] * self.shape[3]
        return self.nnz / total if total else 0.0

    def to_dense(self) -> torch.Tensor:
        """The dense float32 weight this was packed from."""
        oc, cg, kh, kw = self.shape
        if self.format == "csr":
            dense = torch.zeros(oc, cg * kh * kw, dtype=torch.float32)
            rows = torch.repeat_interleave(torch.arange(oc), self.row_ptr[1:] - self.row_ptr[:-1])
            dense[rows, self.col_idx.long()] = self.values
            return dense.view(self.shape)
        ocg, k = oc // self.groups, kh * kw * cg
        panels = (ocg + BLOCK_COLS - 1) // BLOCK_COLS
        blocks = torch.zeros(self.groups * panels, k, BLOCK_COLS, dtype=torch.float32)
        owner = torch.repeat_interleave(torch.arange(self.groups * panels),
                                        self.row_ptr[1:] - self.row_ptr[:-1])
        blocks[owner, self.col_idx.long()] = self.values.view(-1, BLOCK_COLS)
        # [G, panels, K, 32] -> [G, panels * 32, K] -> drop padding -> [OC, KH, KW, cg]
        w = blocks.view(self.groups, panels, k, BLOCK_COLS).permute(0, 1, 3, 2)
        w = w.reshape(self.groups, panels * BLOCK_COLS, k)[:, :ocg]
        return w.reshape(oc, kh, kw, cg).permute(0, 3, 1, 2).contiguous()

    def __repr__(self) -> str:
        return (
            f"SparseWeight(shape={self.shape}, format={self.format!r}, nnz={self.nnz}, "
            f"density={self.density:.3f})"
        )


def _pack_csr(weight: torch.Tensor) -> SparseWeight:
    oc = weight.shape[0]
    flat = weight.reshape(oc, -1)
    mask = flat != 0
    row_ptr = torch.zeros(oc + 1, dtype=torch.int64)
    torch.cumsum(mask.sum(dim=1), dim=0, out=row_ptr[1:])
    cols = mask.nonzero()[:, 1]  # row-major order: rows ascending, columns ascending
    return SparseWeight(tuple(int(s) for s in weight.shape), row_ptr, cols.to(torch.int32),
                        flat[mask].contiguous(), "csr")


def _block_rows(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """[G * panels, K, 32] blocks of 32 output channels, K ordered (kh, kw, c)."""
    oc, cg, kh, kw = weight.shape
    ocg = oc // groups
    panels = (ocg + BLOCK_COLS - 1) // BLOCK_COLS
    w = weight.permute(0, 2, 3, 1).reshape(groups, ocg, kh * kw * cg)
    w = torch.nn.functional.pad(w, (0, 0, 0, panels * BLOCK_COLS - ocg))
    return w.view(groups, panels, BLOCK_COLS, -1).permute(0, 1, 3, 2).reshape(
        groups * panels, kh * kw * cg, BLOCK_COLS)


def _pack_block(weight: torch.Tensor, groups: int) -> SparseWeight:
    blocks = _block_rows(weight, groups)
    keep = (blocks != 0).any(dim=2)  # [G * panels, K]
    row_ptr = torch.zeros(blocks.shape[0] + 1, dtype=torch.int64)
    torch.cumsum(keep.sum(dim=1), dim=0, out=row_ptr[1:])
    cols = keep.nonzero()[:, 1]
    return SparseWeight(tuple(int(s) for s in weight.shape), row_ptr, cols.to(torch.int32),
                        blocks[keep].contiguous().view(-1), "block", groups)


def pack_sparse(weight: torch.Tensor, format: str = "auto", groups: int = 1) -> SparseWeight:
    """Pack a pruned float32 conv weight [OC, C/groups, KH, KW] once, for reuse across calls.

    Zeros are dropped (NaN and inf are kept: they are not zeros). ``format``: "csr" (any
    pattern), "block" (output channels in blocks of 32 sharing kept positions; pass the conv's
    ``groups``), or "auto": block when the kept 32-channel blocks hold at most 1.25x the
    non-zeros (the zeros come in blocks), else csr.
    """
    check_tensor("weight", weight, torch.float32, 4)
    if format not in SPARSE_FORMATS:
        raise ValueError(f"format must be one of {SPARSE_FORMATS}, got {format!r}")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    oc = weight.shape[0]
    if oc == 0:
        raise ValueError("weight must have at least one output channel")
    if oc % groups:
        raise ValueError(f"groups={groups} must divide the {oc} output channels")
    weight = weight.detach()
    if format == "auto":
        nnz = int(torch.count_nonzero(weight))
        ocg = oc // groups
        panels = (ocg + BLOCK_COLS - 1) // BLOCK_COLS
        # Weights a block format stores: kept positions x the real channels of their block.
        widths = (ocg - torch.arange(panels) * BLOCK_COLS).clamp(max=BLOCK_COLS).repeat(groups)
        kept = (_block_rows(weight, groups) != 0).any(dim=2).sum(dim=1)
        stored = int((kept * widths).sum())
        format = "block" if stored <= 1.25 * max(nnz, 1) else "csr"
    return _pack_block(weight, groups) if format == "block" else _pack_csr(weight)


def _run_sparse(native, input, row_ptr, col_idx, values, bias, weight_shape, stride, padding,
                dilation, groups, output_size, relu) -> torch.Tensor:
    out = conv_output(input, weight_shape[0], output_size)
    native(
        _native.tensor_arg(input), _native.tensor_arg(row_ptr), _native.tensor_arg(col_idx),
        _native.tensor_arg(values), _native.optional_arg(bias), *weight_shape, stride[0],
        stride[1], padding[0], padding[1], dilation[0], dilation[1], groups,
        0.0 if relu else float("-inf"), float("inf"), _native.tensor_arg(out))
    return out


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
    return _run_sparse(_native.C.sparse_conv2d_csr, input, row_ptr, col_idx, values, bias,
                       weight_shape, stride, padding, dilation, groups, output_size, relu)


_sparse_conv2d_csr = torch.library.custom_op(
    "pyfastcnn::sparse_conv2d_csr", mutates_args=(), device_types="cpu"
)(_sparse_conv2d_csr_impl)


def _sparse_conv2d_fake(
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
    return conv_output(input, weight_shape[0], output_size)


_sparse_conv2d_csr.register_fake(_sparse_conv2d_fake)


def _sparse_conv2d_block_impl(
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
    return _run_sparse(_native.C.sparse_conv2d_block, input, row_ptr, col_idx, values, bias,
                       weight_shape, stride, padding, dilation, groups, output_size, relu)


_sparse_conv2d_block = torch.library.custom_op(
    "pyfastcnn::sparse_conv2d_block", mutates_args=(), device_types="cpu"
)(_sparse_conv2d_block_impl)
_sparse_conv2d_block.register_fake(_sparse_conv2d_fake)


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
        check_tensor("weight", weight, torch.float32, 4)
        weight = pack_sparse(weight, "csr")
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
    op, impl = _sparse_conv2d_csr, _sparse_conv2d_csr_impl
    if weight.format == "block":
        if weight.groups != geo.groups:
            raise ValueError(f"weight was packed for groups={weight.groups}, the conv has "
                             f"groups={geo.groups}: pack_sparse(weight, groups=...)")
        op, impl = _sparse_conv2d_block, _sparse_conv2d_block_impl
    return _native.run(
        op,
        impl,
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
