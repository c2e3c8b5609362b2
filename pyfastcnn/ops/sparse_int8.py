"""Sparse INT8 convolution: pruned *and* quantized conv weights in one kernel.

``pack_sparse_int8`` packs a symmetric int8 conv weight in one of two layouts, each made of
units of 4 weights that one ``vpdpbusd`` lane multiplies:

- "blocks": 4 consecutive input channels of one output channel at one kernel tap (4-wide along
  the reduction axis). Blocks that are all zero are dropped, kept blocks padded with the zeros
  they contain: a weight pruned in such blocks wastes nothing (``block_fill`` = 1).
- "groups": each output channel's non-zeros, four arbitrary ones per group (the last group
  padded with zero weights). The kernel interleaves the 4 weights' activations before each
  ``vpdpbusd``, which costs about 1.45 block steps per group (``GROUP_COST``, measured on Zen 4),
  but an unstructured weight at 90% sparsity needs 0.25 groups per non-zero against ~0.86
  blocks. AVX-512 VNNI only; other CPUs run it through the scalar reference.

``layout="auto"`` takes whichever needs less work where the group kernel exists, else blocks.

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

BLOCK = 4  # weights per block or group: one vpdpbusd lane
# Kernel time of one group relative to one block (groups: 4 loads, 8 unpacks, 4 vpdpbusd per
# 64 pixels; blocks: 4 loads, 4 vpdpbusd). Measured on Zen 4: ~1.45.
GROUP_COST = 1.45
LAYOUTS = ("auto", "blocks", "groups")


@dataclass(frozen=True, eq=False)
class SparseInt8Weight:
    """A pruned, symmetric int8 conv weight packed in units of 4 weights (picklable).

    Layout "blocks": block j of output channel ``oc`` (``row_ptr[oc] <= j < row_ptr[oc + 1]``)
    covers input channels ``4 * c4 .. 4 * c4 + 3`` of the group at tap (kh, kw), where
    ``block_k[j] = c4 * KH * KW + kh * KW + kw``; ``values[4 * j : 4 * j + 4]`` are its weights
    (zero past the group's channels).
    Layout "groups" (``grouped``): group j holds weights ``values[4 * j : 4 * j + 4]`` at the
    indices ``block_k[4 * j : 4 * j + 4]``, each ``(ci * KH + kh) * KW + kw``.

    Attributes:
        shape: dense weight shape (OC, C / groups, KH, KW).
        groups: conv groups the weight belongs to.
        scale: float32 [OC], per output channel weight scale.
        row_ptr: int64 [OC + 1] over the units; block_k: int32 [units] ("blocks") or
            [4 * units] ("groups"); values: int8 [4 * units].
        col_sums: int32 [OC], sum of each output channel's weights (zero-point correction).
        grouped: the "groups" layout.
    """

    shape: Tuple[int, int, int, int]
    groups: int
    scale: torch.Tensor
    row_ptr: torch.Tensor
    block_k: torch.Tensor
    values: torch.Tensor
    col_sums: torch.Tensor
    grouped: bool = False

    @property
    def out_channels(self) -> int:
        return self.shape[0]

    @property
    def layout(self) -> str:
        """"blocks" or "groups"."""
        return "groups" if self.grouped else "blocks"

    @property
    def blocks(self) -> int:
        """Stored units of 4 weights (4-channel blocks, or groups)."""
        return int(self.values.numel()) // BLOCK

    @property
    def work_fraction(self) -> float:
        """Estimated kernel work relative to the dense weight's 4-channel blocks (group steps
        weigh ``GROUP_COST``)."""
        oc, cg, kh, kw = self.shape
        dense = oc * -(-cg // BLOCK) * kh * kw
        return self.blocks * (GROUP_COST if self.grouped else 1.0) / dense

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
        if self.grouped:
            rows = torch.repeat_interleave(torch.arange(oc),
                                           BLOCK * (self.row_ptr[1:] - self.row_ptr[:-1]))
            dense = torch.zeros(oc, cg * kh * kw, dtype=torch.int32)
            # Padding weights are zeros (possibly at a used index): accumulate.
            dense.index_put_((rows, self.block_k.long()), self.values.int(), accumulate=True)
            return dense.to(torch.int8).view(oc, cg, kh, kw)
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
                                        block_k, self.values, self.grouped))

    def __repr__(self) -> str:
        return (
            f"SparseInt8Weight(shape={self.shape}, groups={self.groups}, layout={self.layout}, "
            f"units={self.blocks}, density={self.density:.3f}, block_fill={self.block_fill:.2f})"
        )


def grouped_from_sizes(block_k: torch.Tensor, values: torch.Tensor) -> bool:
    """Whether packed arrays are in the group layout: one index per weight (the blocks layout
    has one per 4 weights). The native op tells them apart the same way."""
    return values.numel() > 0 and block_k.numel() == values.numel()


def for_this_cpu(weight: SparseInt8Weight) -> SparseInt8Weight:
    """The weight as it runs fastest here: a group-layout weight (packed on a CPU with AVX-512
    VNNI) is repacked in blocks where the group kernel is missing (it would run on the scalar
    reference); same results either way."""
    if weight.grouped and not _group_kernel_available():
        return pack_sparse_int8(weight.to_dense(), weight.scale, weight.groups, layout="blocks")
    return weight


def _unpickle_sparse_int8(shape, groups, scale, row_ptr, block_k, values,
                          grouped=False) -> SparseInt8Weight:
    oc = shape[0]
    rows = torch.repeat_interleave(torch.arange(oc), row_ptr[1:] - row_ptr[:-1])
    col_sums = torch.zeros(oc, dtype=torch.int64).index_add_(
        0, rows, values.view(-1, BLOCK).sum(dim=1, dtype=torch.int64)).to(torch.int32)
    return for_this_cpu(SparseInt8Weight(tuple(shape), groups, scale, row_ptr,
                                         block_k.to(torch.int32).contiguous(), values, col_sums,
                                         bool(grouped)))


def pack_sparse_int8(
    weight: Union[QuantizedWeight, torch.Tensor],
    scale: Optional[Union[torch.Tensor, float]] = None,
    groups: Optional[int] = None,
    layout: str = "auto",
) -> SparseInt8Weight:
    """Pack a pruned int8 conv weight once for ``sparse_quantized_conv2d``.

    Args:
        weight: a ``QuantizedWeight`` (``quantize_weight(pruned_conv.weight, groups=...)``;
            its scale and groups are used), or an int8 tensor [OC, C / groups, KH, KW].
        scale: with an int8 tensor, its weight scale: float32 [OC] or a positive float.
        groups: conv groups (default: the QuantizedWeight's, or 1).
        layout: "blocks" (4-channel blocks: for weights pruned that way), "groups" (4 arbitrary
            non-zeros per group: for unstructured weights; AVX-512 VNNI), or "auto": "groups"
            where this CPU has the group kernel and it needs less work (``work_fraction``).

    Returns:
        SparseInt8Weight: the blocks of 4 input channels (at one tap, of one output channel)
        that hold a non-zero, or each output channel's non-zeros in groups of 4.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
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
    flat = w.reshape(oc, -1)
    per_row = (flat != 0).sum(dim=1)
    group_count = int((-(-per_row // BLOCK)).sum())
    if layout == "auto":
        fewer = group_count * GROUP_COST < int(keep.sum())
        layout = "groups" if fewer and _group_kernel_available() else "blocks"
    col_sums = flat.sum(dim=1, dtype=torch.int64).to(torch.int32)
    scale_f = w_scale.detach().float().contiguous()
    if layout == "groups":
        row_ptr, block_k, values = _pack_groups(flat, per_row)
        return SparseInt8Weight((oc, cg, kh, kw), groups, scale_f, row_ptr, block_k, values,
                                col_sums, True)
    row_ptr = torch.zeros(oc + 1, dtype=torch.int64)
    torch.cumsum(keep.sum(dim=1), dim=0, out=row_ptr[1:])
    block_k = keep.nonzero()[:, 1].to(torch.int32).contiguous()
    values = blocks[keep].reshape(-1).contiguous()
    return SparseInt8Weight((oc, cg, kh, kw), groups, scale_f, row_ptr, block_k, values,
                            col_sums)


def _group_kernel_available() -> bool:
    return _native.C.kernel_isa("sparse_quantized_conv2d_groups") != "scalar"


def _pack_groups(flat: torch.Tensor, per_row: torch.Tensor):
    """Each row's non-zeros (index order) in groups of 4; a short last group is padded with
    zero weights at the row's first index (any valid index works)."""
    oc = flat.shape[0]
    units = -(-per_row // BLOCK)
    row_ptr = torch.zeros(oc + 1, dtype=torch.int64)
    torch.cumsum(units, dim=0, out=row_ptr[1:])
    rows, cols = (flat != 0).nonzero(as_tuple=True)
    nz_start = torch.cumsum(per_row, dim=0) - per_row  # first non-zero of each row in `rows`
    slot = BLOCK * row_ptr[:-1][rows] + (torch.arange(rows.numel()) - nz_start[rows])
    first = torch.zeros(oc, dtype=torch.int64)
    has = per_row > 0
    first[has] = cols[nz_start[has]]
    block_k = torch.repeat_interleave(first, BLOCK * units)
    block_k[slot] = cols
    values = torch.zeros(BLOCK * int(row_ptr[-1]), dtype=torch.int8)
    values[slot] = flat[rows, cols]
    return row_ptr, block_k.to(torch.int32).contiguous(), values


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
