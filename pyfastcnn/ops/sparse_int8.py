"""Sparse INT8 convolution: pruned *and* quantized conv weights in one kernel.

``pack_sparse_int8`` packs a symmetric int8 conv weight into blocks of 4 consecutive input
channels of one output channel at one kernel tap (4-wide along the reduction axis): the 4
bytes one ``vpdpbusd`` lane multiplies. Blocks that are all zero are dropped; an unstructured
weight is grouped the same way, its kept blocks padded with the zeros they contain (so a weight
pruned in such blocks wastes nothing, and ``block_fill`` tells how full the blocks of any other
weight are).

``sparse_quantized_conv2d`` has ``quantized_conv2d``'s arguments, checks and exact math:
    acc = sum (x - x_zero_point) * w          (exact integer sum, int32)
    y   = clamp(acc * (x_scale * w_scale[oc]) + bias[oc])                    float32
    out = y, or saturate(round_half_even(y / out_scale) + out_zero_point)     int8/uint8
with the work proportional to the kept blocks. NHWC (channels_last) is the native layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple, Union

import torch

from .. import _native
from ._checks import IntPair, check_tensor, check_vector, conv_output
from .quantized import (
    _OUT_KINDS,
    QuantizedWeight,
    _conv_call,
)

BLOCK = 4  # input channels per block: one vpdpbusd lane


@dataclass(frozen=True, eq=False)
class SparseInt8Weight:
    """A pruned, symmetric int8 conv weight packed in 4-channel blocks (picklable).

    Block j of output channel ``oc`` (``row_ptr[oc] <= j < row_ptr[oc + 1]``) covers input
    channels ``4 * c4 .. 4 * c4 + 3`` of the group at tap (kh, kw), where
    ``block_k[j] = c4 * KH * KW + kh * KW + kw``; ``values[4 * j : 4 * j + 4]`` are its weights
    (zero past the group's channels).

    Attributes:
        shape: dense weight shape (OC, C / groups, KH, KW).
        groups: conv groups the weight belongs to.
        scale: float32 [OC], per output channel weight scale.
        row_ptr: int64 [OC + 1]; block_k: int32 [blocks]; values: int8 [4 * blocks].
        col_sums: int32 [OC], sum of each output channel's weights (zero-point correction).
    """

    shape: Tuple[int, int, int, int]
    groups: int
    scale: torch.Tensor
    row_ptr: torch.Tensor
    block_k: torch.Tensor
    values: torch.Tensor
    col_sums: torch.Tensor

    @property
    def out_channels(self) -> int:
        return self.shape[0]

    @property
    def blocks(self) -> int:
        """Stored 4-channel blocks."""
        return int(self.block_k.numel())

    @property
    def nnz(self) -> int:
        """Non-zero weights."""
        return int(torch.count_nonzero(self.values))

    @property
    def density(self) -> float:
        """Fraction of the dense weight that is non-zero."""
        oc, cg, kh, kw = self.shape
        return self.nnz / (oc * cg * kh * kw)

    @property
    def block_fill(self) -> float:
        """Non-zeros per stored weight slot (1.0 for a weight pruned in 4-channel blocks)."""
        return self.nnz / max(1, BLOCK * self.blocks)

    def to_dense(self) -> torch.Tensor:
        """The int8 weight [OC, C / groups, KH, KW] this was packed from."""
        oc, cg, kh, kw = self.shape
        cq = (cg + BLOCK - 1) // BLOCK
        dense = torch.zeros(oc, cq * kh * kw, BLOCK, dtype=torch.int8)
        rows = torch.repeat_interleave(torch.arange(oc), self.row_ptr[1:] - self.row_ptr[:-1])
        dense[rows, self.block_k.long()] = self.values.view(-1, BLOCK)
        dense = dense.view(oc, cq, kh, kw, BLOCK).permute(0, 1, 4, 2, 3)
        return dense.reshape(oc, cq * BLOCK, kh, kw)[:, :cg].contiguous()

    def dequantize(self) -> torch.Tensor:
        """float32 weight: to_dense() * scale."""
        return self.to_dense().float() * self.scale.view(-1, 1, 1, 1)

    def __reduce__(self):
        # Saved compactly: block indices as int16 where they fit (the kernel wants int32),
        # the column sums recomputed on load. A pruned INT8 model's file is then about
        # (1 + 2/4) bytes per kept weight.
        small = self.blocks == 0 or int(self.block_k.max()) < 2**15
        block_k = self.block_k.to(torch.int16) if small else self.block_k
        return (_unpickle_sparse_int8, (self.shape, self.groups, self.scale, self.row_ptr,
                                        block_k, self.values))

    def __repr__(self) -> str:
        return (
            f"SparseInt8Weight(shape={self.shape}, groups={self.groups}, blocks={self.blocks}, "
            f"density={self.density:.3f}, block_fill={self.block_fill:.2f})"
        )


def _unpickle_sparse_int8(shape, groups, scale, row_ptr, block_k, values) -> SparseInt8Weight:
    oc = shape[0]
    rows = torch.repeat_interleave(torch.arange(oc), row_ptr[1:] - row_ptr[:-1])
    col_sums = torch.zeros(oc, dtype=torch.int64).index_add_(
        0, rows, values.view(-1, BLOCK).sum(dim=1, dtype=torch.int64)).to(torch.int32)
    return SparseInt8Weight(tuple(shape), groups, scale, row_ptr,
                            block_k.to(torch.int32).contiguous(), values, col_sums)


def pack_sparse_int8(
    weight: Union[QuantizedWeight, torch.Tensor],
    scale: Optional[Union[torch.Tensor, float]] = None,
    groups: Optional[int] = None,
) -> SparseInt8Weight:
    """Pack a pruned int8 conv weight once for ``sparse_quantized_conv2d``.

    Args:
        weight: a ``QuantizedWeight`` (``quantize_weight(pruned_conv.weight, groups=...)``;
            its scale and groups are used), or an int8 tensor [OC, C / groups, KH, KW].
        scale: with an int8 tensor, its weight scale: float32 [OC] or a positive float.
        groups: conv groups (default: the QuantizedWeight's, or 1).

    Returns:
        SparseInt8Weight: the blocks of 4 input channels (at one tap, of one output channel)
        that hold a non-zero.
    """
    if isinstance(weight, QuantizedWeight):
        if scale is not None:
            raise ValueError("scale comes from the QuantizedWeight; do not pass it")
        if weight.int_weight.dim() != 4:
            raise ValueError(
                f"weight is not a conv weight (shape {tuple(weight.int_weight.shape)})")
        if groups is not None and groups != weight.groups:
            raise ValueError(f"groups={groups} does not match the weight's groups={weight.groups}")
        w, w_scale, groups = weight.int_weight, weight.scale, weight.groups
    elif isinstance(weight, torch.Tensor):
        check_tensor("weight", weight, torch.int8, 4)
        oc = weight.shape[0]
        if scale is None:
            raise ValueError("scale is required with an int8 weight tensor")
        if isinstance(scale, torch.Tensor):
            w_scale = check_vector("scale", scale, oc)
        elif isinstance(scale, (int, float)) and not isinstance(scale, bool):
            w_scale = torch.full((oc,), float(scale), dtype=torch.float32)
        else:
            raise TypeError(
                f"scale must be a float32 tensor or a float, got {type(scale).__name__}")
        if not bool((w_scale > 0).all()) or not bool(torch.isfinite(w_scale).all()):
            raise ValueError("scale must be positive and finite")
        groups = 1 if groups is None else groups
        if isinstance(groups, bool) or not isinstance(groups, int):
            raise TypeError(f"groups must be an int, got {type(groups).__name__}")
        if groups < 1 or oc % groups:
            raise ValueError(f"groups={groups} must divide the {oc} output channels")
        w = weight
    else:
        raise TypeError(
            f"weight must be a pyfastcnn.QuantizedWeight or an int8 torch.Tensor, got "
            f"{type(weight).__name__}"
        )
    oc, cg, kh, kw = w.shape
    if min(oc, cg, kh, kw) < 1:
        raise ValueError(f"weight must be non-empty, got shape {tuple(w.shape)}")
    w = w.detach()
    cq = (cg + BLOCK - 1) // BLOCK
    padded = torch.nn.functional.pad(w, (0, 0, 0, 0, 0, cq * BLOCK - cg))
    # [OC, cq, 4, KH, KW] -> [OC, cq * KH * KW, 4]: row index = c4 * KH * KW + kh * KW + kw
    blocks = padded.view(oc, cq, BLOCK, kh, kw).permute(0, 1, 3, 4, 2).reshape(oc, -1, BLOCK)
    keep = (blocks != 0).any(dim=2)
    row_ptr = torch.zeros(oc + 1, dtype=torch.int64)
    torch.cumsum(keep.sum(dim=1), dim=0, out=row_ptr[1:])
    block_k = keep.nonzero()[:, 1].to(torch.int32).contiguous()
    values = blocks[keep].reshape(-1).contiguous()
    col_sums = w.reshape(oc, -1).sum(dim=1, dtype=torch.int64).to(torch.int32)
    return SparseInt8Weight(
        (oc, cg, kh, kw),
        groups,
        w_scale.detach().float().contiguous(),
        row_ptr,
        block_k,
        values,
        col_sums,
    )


# ---- custom op (registered with a fake implementation for torch.compile) --------------------


def _sparse_quantized_conv2d_impl(
    x: torch.Tensor,
    row_ptr: torch.Tensor,
    block_k: torch.Tensor,
    values: torch.Tensor,
    col_sums: torch.Tensor,
    weight_shape: List[int],
    w_scale: torch.Tensor,
    bias: Optional[torch.Tensor],
    stride: List[int],
    padding: List[int],
    dilation: List[int],
    groups: int,
    output_size: List[int],
    x_scale: float,
    x_zero_point: int,
    out_kind: int,
    clamp_min: float,
    clamp_max: float,
    out_scale: float,
    out_zero_point: int,
    residual: Optional[torch.Tensor] = None,
    residual_scale: float = 1.0,
    residual_zero_point: int = 0,
) -> torch.Tensor:
    dtype = {v: k for k, v in _OUT_KINDS.items()}[out_kind]
    out = conv_output(x, weight_shape[0], output_size, dtype, torch.channels_last)
    _native.C.sparse_int8_conv2d(
        _native.tensor_arg(x),
        _native.tensor_arg(row_ptr),
        _native.tensor_arg(block_k),
        _native.tensor_arg(values),
        _native.tensor_arg(col_sums),
        weight_shape[1],
        weight_shape[2],
        weight_shape[3],
        _native.tensor_arg(w_scale),
        _native.optional_arg(bias),
        stride[0],
        stride[1],
        padding[0],
        padding[1],
        dilation[0],
        dilation[1],
        groups,
        x_zero_point,
        x_scale,
        out_kind,
        clamp_min,
        clamp_max,
        out_scale,
        out_zero_point,
        _native.tensor_arg(out),
        _native.optional_arg(residual),
        residual_scale,
        residual_zero_point,
    )
    return out


_sparse_quantized_conv2d = torch.library.custom_op(
    "pyfastcnn::sparse_quantized_conv2d", mutates_args=(), device_types="cpu"
)(_sparse_quantized_conv2d_impl)


@_sparse_quantized_conv2d.register_fake
def _(
    x,
    row_ptr,
    block_k,
    values,
    col_sums,
    weight_shape,
    w_scale,
    bias,
    stride,
    padding,
    dilation,
    groups,
    output_size,
    x_scale,
    x_zero_point,
    out_kind,
    clamp_min,
    clamp_max,
    out_scale,
    out_zero_point,
    residual=None,
    residual_scale=1.0,
    residual_zero_point=0,
):
    dtype = {v: k for k, v in _OUT_KINDS.items()}[out_kind]
    return conv_output(x, weight_shape[0], output_size, dtype, torch.channels_last)


def sparse_quantized_conv2d(
    x: torch.Tensor,
    x_scale: float,
    x_zero_point: int,
    weight: SparseInt8Weight,
    bias: Optional[torch.Tensor] = None,
    stride: IntPair = 1,
    padding: Union[IntPair, str] = 0,
    dilation: IntPair = 1,
    groups: Optional[int] = None,
    *,
    out_dtype: torch.dtype = torch.float32,
    out_scale: Optional[float] = None,
    out_zero_point: Optional[int] = None,
    relu: bool = False,
    clamp_max: Optional[float] = None,
    residual: Optional[torch.Tensor] = None,
    residual_scale: Optional[float] = None,
    residual_zero_point: Optional[int] = None,
) -> torch.Tensor:
    """INT8 conv2d with a pruned weight (``pack_sparse_int8``): ``quantized_conv2d``'s math and
    arguments, work proportional to the kept 4-channel blocks.

    Args:
        x: uint8 or int8 [N, C, H, W] quantized with (x_scale, x_zero_point); channels_last is
            the native layout (others are converted once per call).
        weight: a ``SparseInt8Weight``.
        bias: float32 [OC] or None.
        stride, padding, dilation: as in ``F.conv2d`` (padding may be "same"/"valid").
        groups: defaults to weight.groups; if given it must match.
        out_dtype: float32, or int8/uint8 with out_scale (and out_zero_point, default 0).
        relu: fuse ReLU.
        clamp_max: upper clamp of y before the output conversion (6.0 with relu: ReLU6).
        residual, residual_scale, residual_zero_point: a fused residual add, as in
            ``quantized_conv2d``.

    Returns:
        [N, OC, OH, OW] of out_dtype, channels_last. Integer sums are exact, so the result
        equals ``quantized_conv2d`` on the same (dense) weight.
    """
    if not isinstance(weight, SparseInt8Weight):
        raise TypeError(
            f"weight must be a pyfastcnn.SparseInt8Weight (see pack_sparse_int8), got "
            f"{type(weight).__name__}"
        )
    out_kwargs = dict(out_dtype=out_dtype, out_scale=out_scale, out_zero_point=out_zero_point,
                      relu=relu, clamp_max=clamp_max)
    return _conv_call(_sparse_quantized_conv2d, _sparse_quantized_conv2d_impl, x, x_scale,
                      x_zero_point, (weight.row_ptr, weight.block_k, weight.values,
                                     weight.col_sums), tuple(weight.shape), weight, groups, bias,
                      stride, padding, dilation, out_kwargs, residual, residual_scale,
                      residual_zero_point)
