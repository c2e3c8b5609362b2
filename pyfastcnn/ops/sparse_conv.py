"""pyfastcnn.sparse_conv2d and pack_sparse: convolution with pruned weights, skipping zeros."""

from __future__ import annotations

import weakref

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

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

SPARSE_FORMATS = ("auto", "csr", "block", "2:4")
BLOCK_COLS = 32  # output channels per block (two zmm or four ymm registers of the kernel's tile)
# 2:4 fragments: the CUDA kernel's tile is 64 or 128 output channels (128 for groups of 128 or
# more output channels) x 64 reduction elements.
SPARSE24_K_TILE = 64
_CODE_FIRST_TWO = 0b0100  # metadata nibble "positions 0 and 1" (used for all-padding chunks)


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
    * "2:4": at most 2 non-zeros in every 4 consecutive input channels at each (oc, kh, kw)
      (C/groups is zero-padded to a multiple of 4). The reduction axis is ordered
      ``k = (kh * KW + kw) * C4 + c`` (C4 = C/groups rounded up to 4), split into chunks of 4;
      ``values`` [OC, K/2] float32 holds the two kept values of each chunk (lower position
      first), ``col_idx`` [OC, K/4] uint8 their positions as the 4-bit code ``mma.sp`` uses
      (``idx0 | idx1 << 2``, idx0 < idx1); ``row_ptr`` is empty. On CUDA with float16/bfloat16
      input it runs on sparse tensor cores (``sparse24_fragments`` gives the device layout);
      elsewhere it runs the CSR kernels on its dense form.

    The CUDA path uploads the arrays it needs once per device (and dtype) and keeps them on the
    object (``cache``, not pickled, not compared).

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
    cache: Dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("cache", None)  # device copies stay with the process that made them
        state["col_idx"] = narrow_indices(self.col_idx)
        return state

    def __setstate__(self, state):
        if state["col_idx"].dtype == torch.int16:
            state = dict(state, col_idx=state["col_idx"].to(torch.int32))
        for name, value in state.items():
            object.__setattr__(self, name, value)
        object.__setattr__(self, "cache", {})

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
        if self.format == "2:4":
            return _decode_24(self.values, self.col_idx, self.shape)
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


def narrow_indices(idx: torch.Tensor) -> torch.Tensor:
    """int32 reduction indices as int16 where they fit (K <= 32768 in any realistic conv): half
    the bytes on disk. Readers widen them back to int32 (the kernels' type)."""
    if idx.dtype == torch.int32 and (idx.numel() == 0 or int(idx.max()) <= 32767):
        return idx.to(torch.int16)
    return idx


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


def _decode_24(values: torch.Tensor, codes: torch.Tensor, shape) -> torch.Tensor:
    """Dense [OC, C/groups, KH, KW] float32 weight of 2:4 values [OC, K/2] + codes [OC, K/4]."""
    oc, cg, kh, kw = shape
    cg4 = values.shape[1] * 2 // (kh * kw)
    codes = codes.long()
    index = torch.stack((codes & 3, (codes >> 2) & 3), dim=-1)  # [OC, K/4, 2]
    chunks = torch.zeros(oc, codes.shape[1], 4, dtype=torch.float32)
    chunks.scatter_(-1, index, values.view(oc, -1, 2))
    return chunks.view(oc, kh, kw, cg4)[..., :cg].permute(0, 3, 1, 2).contiguous()


def _pack_24(weight: torch.Tensor, groups: int) -> SparseWeight:
    """2:4 packing (see SparseWeight): ValueError naming the first chunk with 3 or 4 non-zeros."""
    oc, cg, kh, kw = weight.shape
    cg4 = (cg + 3) // 4 * 4
    w = weight.permute(0, 2, 3, 1)  # [OC, KH, KW, Cg]: k ordered (kh, kw, c)
    if cg4 != cg:
        w = torch.nn.functional.pad(w, (0, cg4 - cg))
    chunks = w.reshape(oc, -1, 4)
    nonzero = chunks != 0  # NaN and inf count as non-zero
    counts = nonzero.sum(dim=-1)
    if bool((counts > 2).any()):
        o, q = (int(v) for v in (counts > 2).nonzero()[0])
        tap, c0 = divmod(q * 4, cg4)
        y, x = divmod(tap, kw)
        raise ValueError(
            f"weight is not 2:4 sparse: output channel {o}, kernel position ({y}, {x}), input "
            f"channels {c0}..{min(c0 + 3, cg - 1)} hold {int(counts[o, q])} non-zeros (at most 2 "
            f"of every 4 consecutive input channels may be non-zero; prune with "
            f"pyfastcnn.pruning structure '2:4')"
        )
    # Kept positions: the non-zeros, filled up with the lowest zero positions; ascending.
    key = (~nonzero).long() * 4 + torch.arange(4)
    index = key.argsort(dim=-1)[..., :2].sort(dim=-1).values  # [OC, K/4, 2], idx0 < idx1
    values = chunks.gather(-1, index).reshape(oc, -1).contiguous()
    codes = (index[..., 0] | (index[..., 1] << 2)).to(torch.uint8).contiguous()
    return SparseWeight(tuple(int(s) for s in weight.shape), torch.zeros(0, dtype=torch.int64),
                        codes, values, "2:4", groups)


def sparse24_fragments(
    values: torch.Tensor, codes: torch.Tensor, groups: int, dtype: torch.dtype
) -> Tuple[torch.Tensor, torch.Tensor, int, int]:
    """The device layout of a 2:4 weight for ``mma.sp.m16n8k32`` (A operand, selector 0).

    Args:
        values: [OC, K/2] kept values, codes: [OC, K/4] uint8 position codes (SparseWeight
            "2:4"); groups: the conv's groups (GEMM rows are tiled per group); dtype: float16
            or bfloat16.

    Returns:
        (frags [G, Mt, Kt, 32, 8] dtype, meta [G, Mt, Kt, 32] int32, m_padded, k_padded), with
        M = OC/groups padded with zero rows to m_padded (a multiple of 64 below 128 rows, of
        128 from there), K padded with zero chunks to k_padded (multiple of 64),
        Mt = m_padded / 16 and Kt = k_padded / 32.

    Per 16 x 32 tile and lane (g = lane // 4, t = lane % 4), following the PTX ISA fragment
    layout of sparse ``mma.m16n8k32`` with .f16/.bf16: the lane's 4 registers (8 values) hold
    the kept pairs of (row g, chunk t), (row g+8, chunk t), (row g, chunk t+4),
    (row g+8, chunk t+4) of the tile's 8 chunks; the metadata word of lane t in {0, 1} holds the
    codes of chunks 4t..4t+3 of row g in bits 0-15 and of row g+8 in bits 16-31 (4 bits a chunk,
    chunk 4t+j at bit 4j); lanes with t in {2, 3} carry 0 (the selector 0 ignores them).
    """
    oc, half_k = values.shape
    k = 2 * half_k
    ocg = oc // groups
    m_tile = 128 if ocg >= 128 else 64
    m_pad = -(-ocg // m_tile) * m_tile
    k_pad = -(-k // SPARSE24_K_TILE) * SPARSE24_K_TILE
    v = torch.zeros(groups, m_pad, k_pad // 2, dtype=torch.float32)
    v[:, :ocg, : k // 2] = values.view(groups, ocg, k // 2)
    c = torch.full((groups, m_pad, k_pad // 4), _CODE_FIRST_TWO, dtype=torch.int64)
    c[:, :ocg, : k // 4] = codes.view(groups, ocg, k // 4).long()
    mt, kt = m_pad // 16, k_pad // 32
    # v: [G, Mt, h, g, Kt, q, t, e] -> [G, Mt, Kt, g, t, q, h, e]: register q * 2 + h of lane
    # 4g + t holds the kept pair e = 0, 1 of row 8h + g, chunk 4q + t.
    frags = v.view(groups, mt, 2, 8, kt, 2, 4, 2).permute(0, 1, 4, 3, 6, 5, 2, 7)
    frags = frags.reshape(groups, mt, kt, 32, 8).to(dtype).contiguous()
    # c: [G, Mt, h, g, Kt, q, j] -> word of lane 4g + q (q = 0, 1): sum_j code << (16h + 4j).
    c = c.view(groups, mt, 2, 8, kt, 2, 4)
    shifts = 16 * torch.arange(2).view(1, 1, 2, 1, 1, 1, 1) + 4 * torch.arange(4)
    words = (c << shifts).sum(dim=(2, 6))  # [G, Mt, g, Kt, q]
    meta = torch.zeros(groups, mt, kt, 8, 4, dtype=torch.int64)
    meta[..., :2] = words.permute(0, 1, 3, 2, 4)
    meta = torch.where(meta >= 2**31, meta - 2**32, meta)  # the same 32 bits as int32
    return frags, meta.to(torch.int32).reshape(groups, mt, kt, 32).contiguous(), m_pad, k_pad


def csr_of(weight: SparseWeight) -> SparseWeight:
    """The "csr" packing of a weight (itself for csr; cached on the object otherwise)."""
    if weight.format == "csr":
        return weight
    cached = weight.cache.get("csr")
    if cached is None:
        cached = _pack_csr(weight.to_dense())
        weight.cache["csr"] = cached
    return cached


def pack_sparse(weight: torch.Tensor, format: str = "auto", groups: int = 1) -> SparseWeight:
    """Pack a pruned float32 conv weight [OC, C/groups, KH, KW] once, for reuse across calls.

    Zeros are dropped (NaN and inf are kept: they are not zeros). ``format``: "csr" (any
    pattern), "block" (output channels in blocks of 32 sharing kept positions; pass the conv's
    ``groups``), "2:4" (at most 2 non-zeros in every 4 consecutive input channels, for sparse
    tensor cores; ValueError otherwise), or "auto": block when the kept 32-channel blocks hold
    at most 1.25x the non-zeros (the zeros come in blocks) and this CPU has the block kernel
    (AVX2 and up), else csr (a block weight runs anywhere: on the scalar level its non-zeros
    go through the csr reference, regrouped on every call).
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
    if format == "auto" and _native.C.kernel_isa("sparse_conv2d_block") == "scalar":
        format = "csr"
    if format == "auto":
        nnz = int(torch.count_nonzero(weight))
        ocg = oc // groups
        panels = (ocg + BLOCK_COLS - 1) // BLOCK_COLS
        # Weights a block format stores: kept positions x the real channels of their block.
        widths = (ocg - torch.arange(panels) * BLOCK_COLS).clamp(max=BLOCK_COLS).repeat(groups)
        kept = (_block_rows(weight, groups) != 0).any(dim=2).sum(dim=1)
        stored = int((kept * widths).sum())
        format = "block" if stored <= 1.25 * max(nnz, 1) else "csr"
    if format == "2:4":
        return _pack_24(weight, groups)
    return _pack_block(weight, groups) if format == "block" else _pack_csr(weight)


def _run_sparse(native, input, row_ptr, col_idx, values, bias, weight_shape, stride, padding,
                dilation, groups, output_size, relu, *plan) -> torch.Tensor:
    out = conv_output(input, weight_shape[0], output_size)
    native(
        _native.tensor_arg(input), _native.tensor_arg(row_ptr), _native.tensor_arg(col_idx),
        _native.tensor_arg(values), _native.optional_arg(bias), *weight_shape, stride[0],
        stride[1], padding[0], padding[1], dilation[0], dilation[1], groups,
        0.0 if relu else float("-inf"), float("inf"), _native.tensor_arg(out), *plan)
    return out


# The CPU csr kernels' prepared indices per weight (see SparsePlanSlot in csrc/include/
# pyfastcnn/ops.h), kept while the weight's col_idx tensor lives, and replaced when its arrays
# change (in-place writes bump a tensor's version; inference-mode tensors have no version, so
# their weights are prepared on every call). Keyed by id (a WeakKeyDictionary would compare
# tensors with ==), the weak reference telling a dead tensor's id from a reused one.
_PLAN_SLOTS: Dict[int, tuple] = {}


def _plan_slot(row_ptr: torch.Tensor, col_idx: torch.Tensor):
    if row_ptr.is_inference() or col_idx.is_inference():
        return None  # no version counter to tell in-place changes: prepared on every call
    key = (row_ptr._version, col_idx._version, row_ptr.data_ptr(), col_idx.data_ptr())
    ident = id(col_idx)
    entry = _PLAN_SLOTS.get(ident)
    if entry is None or entry[0]() is not col_idx or entry[1] != key:
        ref = weakref.ref(col_idx, lambda _, ident=ident: _PLAN_SLOTS.pop(ident, None))
        entry = (ref, key, _native.C.SparsePlanSlot())
        _PLAN_SLOTS[ident] = entry
    return entry[2]


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
                       weight_shape, stride, padding, dilation, groups, output_size, relu,
                       _plan_slot(row_ptr, col_idx))


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


_CUDA_ENTRY = []


def _cuda_entry():
    """pyfastcnn.ops.cuda_sparse.sparse_conv2d_cuda, imported on first CUDA use."""
    if not _CUDA_ENTRY:
        from .cuda_sparse import sparse_conv2d_cuda

        _CUDA_ENTRY.append(sparse_conv2d_cuda)
    return _CUDA_ENTRY[0]


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
        input: [N, C, H, W], NCHW or channels_last (or any strided view). CPU: float32.
            CUDA: float32, float16 or bfloat16 (see below).
        weight: a packed ``SparseWeight`` (made once by ``pack_sparse``), or a dense pruned
            float32 [OC, C/groups, KH, KW] tensor, which is packed on every call.
        bias: [OC] or None; float32 on the CPU; on CUDA float32 or the input's dtype, on the
            input's device.
        stride, padding, dilation, groups: as in ``F.conv2d`` (padding may be "same"/"valid").
        relu: apply ReLU in the same pass (NaN stays NaN).

    Returns:
        [N, OC, OH, OW] in the input's dtype, channels_last when the input is channels_last.

    On CUDA (the caller's current stream): csr and block weights run a direct sparse kernel
    that reads NCHW (consecutive threads take consecutive pixels of one channel: coalesced), so
    channels_last input is converted once; "2:4" weights with float16/bfloat16 input run on
    sparse tensor cores over NHWC, so channels_last is the fast layout there (NCHW input is
    converted and the output converted back). FP32 accumulation throughout.

    Zero weights are skipped, so a 0 * NaN (or 0 * inf) product that ``F.conv2d`` would turn
    into NaN does not reach the output; NaN meeting a non-zero weight propagates.
    """
    if isinstance(input, torch.Tensor) and input.device.type == "cuda":
        return _cuda_entry()(input, weight, bias, stride, padding, dilation, groups, relu)
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
    elif weight.format == "2:4":
        weight = csr_of(weight)  # no 2:4 kernel on the CPU: the CSR kernel on its non-zeros
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
