"""sparse_conv2d on CUDA tensors: argument checks, device uploads of packed weights (cached on
the SparseWeight), and the custom ops over pyfastcnn._cuda's sparse kernels.

Two kernels (csrc/cuda/):

* ``pyfastcnn::sparse_conv2d_cuda``: direct sparse conv over NCHW, any SparseWeight format
  (block and 2:4 weights run through their CSR form), float32/float16/bfloat16 activations,
  FP32 accumulation.
* ``pyfastcnn::sparse24_conv2d_cuda``: 2:4 weights on sparse tensor cores (``mma.sp``), NHWC
  (channels_last) float16/bfloat16 activations, FP32 accumulation.
"""

from __future__ import annotations

from typing import List, Optional, Union

import torch

from .. import _native
from ._checks import IntPair, check_tensor, conv_geometry
from ._device import cuda_module, ptr, raw_stream, same_device, stream_of
from .sparse_conv import SparseWeight, csr_of, pack_sparse, sparse24_fragments

_DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


# --- device uploads (once per device, kept on the SparseWeight) ------------------------------


def _device_csr(weight: SparseWeight, device: torch.device):
    """(row_ptr int32 [OC+1], taps int32 [nnz] = ci << 16 | kh << 8 | kw, values float32 [nnz])
    of the weight's CSR form, on device."""
    key = ("cuda-csr", str(device))
    cached = weight.cache.get(key)
    if cached is None:
        csr = csr_of(weight)
        _, cg, kh, kw = csr.shape
        nnz = int(csr.values.numel())
        if nnz >= 2**31:
            raise ValueError(f"weight has {nnz} non-zeros; the CUDA kernel takes under 2^31")
        if kh >= 256 or kw >= 256 or cg >= 2**15:
            raise ValueError(f"weight of shape {tuple(csr.shape)}: the CUDA kernel takes kernels "
                             f"under 256x256 and under 32768 input channels per group")
        cols = csr.col_idx.long()  # (ci * KH + kh) * KW + kw
        taps = (cols // (kh * kw)) << 16 | ((cols // kw) % kh) << 8 | (cols % kw)
        cached = (
            csr.row_ptr.to(device=device, dtype=torch.int32),
            taps.to(device=device, dtype=torch.int32),
            csr.values.to(device=device, dtype=torch.float32),
        )
        weight.cache[key] = cached
    return cached


def _device_chunks(weight: SparseWeight, device: torch.device, chunk: int) -> torch.Tensor:
    """int32 [OC, ceil(Cg / chunk) + 1]: where each CSR row's non-zeros of input channels
    [j * chunk, (j + 1) * chunk) start (CSR rows are sorted by input channel)."""
    key = ("cuda-chunks", str(device), chunk)
    cached = weight.cache.get(key)
    if cached is None:
        csr = csr_of(weight)
        oc, cg, kh, kw = csr.shape
        chunks = -(-cg // chunk)
        counts = csr.row_ptr[1:] - csr.row_ptr[:-1]
        rows = torch.repeat_interleave(torch.arange(oc), counts)
        which = csr.col_idx.long() // (kh * kw) // chunk
        per = torch.zeros(oc * chunks, dtype=torch.int64)
        per.index_add_(0, rows * chunks + which, torch.ones_like(which))
        ptr_ = torch.zeros(oc, chunks + 1, dtype=torch.int64)
        ptr_[:, 1:] = per.view(oc, chunks).cumsum(dim=1)
        ptr_ += csr.row_ptr[:-1].unsqueeze(1)
        cached = ptr_.to(device=device, dtype=torch.int32).contiguous()
        weight.cache[key] = cached
    return cached


def _device_block(weight: SparseWeight, device: torch.device):
    """A "block" weight on device, its kept positions re-ordered by input channel within each
    32-channel panel: (taps int32 [kept] = ci << 16 | kh << 8 | kw, values float32 [kept, 32],
    panel int64 [kept] and ci int64 [kept] on the CPU, for the chunk pointers)."""
    key = ("cuda-block", str(device))
    cached = weight.cache.get(key)
    if cached is None:
        _, cg, kh, kw = weight.shape
        if kh >= 256 or kw >= 256 or cg >= 2**15:
            raise ValueError(f"weight of shape {tuple(weight.shape)}: the CUDA kernel takes "
                             f"kernels under 256x256 and under 32768 input channels per group")
        counts = weight.row_ptr[1:] - weight.row_ptr[:-1]
        panel = torch.repeat_interleave(torch.arange(counts.numel()), counts)
        cols = weight.col_idx.long()  # (kh * KW + kw) * Cg + c
        tap, ci = cols // cg, cols % cg
        order = torch.argsort(panel * (cg * kh * kw) + ci * (kh * kw) + tap, stable=True)
        tap, ci, panel = tap[order], ci[order], panel[order]
        taps = ci << 16 | (tap // kw) << 8 | (tap % kw)
        values = weight.values.view(-1, 32)[order]
        cached = (taps.to(device=device, dtype=torch.int32),
                  values.to(device=device, dtype=torch.float32).contiguous(), panel, ci)
        weight.cache[key] = cached
    return cached


def _device_block_chunks(weight: SparseWeight, device: torch.device, chunk: int) -> torch.Tensor:
    """int32 [panels, ceil(Cg / chunk) + 1]: where each panel's kept positions of input channels
    [j * chunk, (j + 1) * chunk) start, in _device_block's order."""
    key = ("cuda-block-chunks", str(device), chunk)
    cached = weight.cache.get(key)
    if cached is None:
        _, _, panel, ci = _device_block(weight, device)
        panels = weight.row_ptr.numel() - 1
        chunks = -(-weight.shape[1] // chunk)
        per = torch.zeros(panels * chunks, dtype=torch.int64)
        per.index_add_(0, panel * chunks + ci // chunk, torch.ones_like(ci))
        ptr_ = torch.zeros(panels, chunks + 1, dtype=torch.int64)
        ptr_[:, 1:] = per.view(panels, chunks).cumsum(dim=1)
        ptr_ += weight.row_ptr[:-1].unsqueeze(1)
        cached = ptr_.to(device=device, dtype=torch.int32).contiguous()
        weight.cache[key] = cached
    return cached


def _patch_offsets(taps: torch.Tensor, tiles, kernel, stride, dilation,
                   out_w: int) -> torch.Tensor:
    """int64 offsets of non-zeros (taps ci << 16 | kh << 8 | kw) in the tiled kernels' staged
    input patch [chunk channel][image in tile][patch_h][patch_w] (csrc/cuda/sparse_ops.h)."""
    images, rows, chunk = tiles
    patch_h = (rows - 1) * stride[0] + (kernel[0] - 1) * dilation[0] + 1
    patch_w = (out_w - 1) * stride[1] + (kernel[1] - 1) * dilation[1] + 1
    t = taps.long()
    return ((t >> 16) % chunk * (images * patch_h * patch_w) + ((t >> 8) & 255) * dilation[0]
            * patch_w + (t & 255) * dilation[1])


def _device_entries(weight: SparseWeight, device: torch.device, tiles, geo) -> torch.Tensor:
    """int32 [nnz, 2] for the tiled CSR kernel: patch offset and float32 value bits."""
    key = ("cuda-entries", str(device), tuple(tiles), geo.stride, geo.dilation,
           geo.output_size[1])
    cached = weight.cache.get(key)
    if cached is None:
        _, taps, values = _device_csr(weight, device)
        offsets = _patch_offsets(taps, tiles, weight.shape[2:], geo.stride, geo.dilation,
                                 geo.output_size[1])
        cached = torch.stack((offsets.to(torch.int32), values.view(torch.int32)), dim=1)
        cached = cached.contiguous()
        weight.cache[key] = cached
    return cached


_TILE_PIXELS = 512  # csrc/cuda/sparse_csr_kernel.cuh: kThreads * kPix
_PATCH_FLOATS = 12 * 1024  # 48 KB of shared memory


def _csr_plan(n: int, cg: int, output_size, kernel, stride, dilation, blocks_per_tile: int = 0,
              sms: int = 0) -> Optional[List[int]]:
    """[images_per_tile, rows_per_tile, chunk_channels] for the tiled CSR kernel, or None where
    its input patch cannot fit (the untiled kernel runs then). A tile is whole output rows, or
    whole small images, of up to 512 pixels; the chunk is as many input channels (up to 16) as
    fit 48 KB, shrinking the tile when fewer than 8 would. Given the CTAs per pixel tile
    (output-channel blocks) and the device's multiprocessor count, multi-image tiles are split
    until the grid fills the device once (the kernel skips empty pixel slots)."""
    oh, ow = output_size
    if ow > _TILE_PIXELS:
        return None
    if oh * ow <= _TILE_PIXELS // 2:
        images, rows = max(1, min(n, _TILE_PIXELS // (oh * ow))), oh
        while images > 1 and -(-n // images) * blocks_per_tile < sms:
            images = (images + 1) // 2
    else:
        images, rows = 1, max(1, min(oh, _TILE_PIXELS // ow))
    patch_w = (ow - 1) * stride[1] + (kernel[1] - 1) * dilation[1] + 1
    goal = min(cg, 8)
    while True:
        patch_h = (rows - 1) * stride[0] + (kernel[0] - 1) * dilation[0] + 1
        chunk = min(cg, 16, _PATCH_FLOATS // (images * patch_h * patch_w))
        if chunk >= goal:
            return [images, rows, chunk]
        if images > 1:
            images = (images + 1) // 2
        elif rows > 1:
            rows = (rows + 1) // 2
        else:
            return [1, 1, chunk] if chunk >= 1 else None


def _device_24(weight: SparseWeight, device: torch.device, dtype: torch.dtype, groups: int):
    """(frags, meta, m_padded, k_padded) of a 2:4 weight on device (see sparse24_fragments)."""
    key = ("cuda-24", str(device), dtype, groups)
    cached = weight.cache.get(key)
    if cached is None:
        frags, meta, m_pad, k_pad = sparse24_fragments(weight.values, weight.col_idx, groups,
                                                       dtype)
        cached = (frags.to(device), meta.to(device), m_pad, k_pad)
        weight.cache[key] = cached
    return cached


# --- custom ops ------------------------------------------------------------------------------


def _sparse_conv2d_cuda_impl(
    input: torch.Tensor,
    row_ptr: torch.Tensor,
    taps: torch.Tensor,
    values: torch.Tensor,
    chunk_ptr: Optional[torch.Tensor],
    entries: Optional[torch.Tensor],
    bias: Optional[torch.Tensor],
    weight_shape: List[int],
    stride: List[int],
    padding: List[int],
    dilation: List[int],
    groups: int,
    output_size: List[int],
    plan: List[int],
    relu: bool,
) -> torch.Tensor:
    n, c, h, w = input.shape
    out = torch.empty((n, weight_shape[0], output_size[0], output_size[1]), dtype=input.dtype,
                      device=input.device)
    if out.numel() == 0:
        return out
    images, rows, chunk = plan if chunk_ptr is not None else (0, 0, 0)
    cuda_module().sparse_conv2d_csr(
        input.device.index, ptr(input), _DTYPE_CODES[input.dtype], ptr(row_ptr), ptr(taps),
        ptr(values), ptr(bias), ptr(out), n, c, h, w, weight_shape[0], weight_shape[2],
        weight_shape[3], output_size[0], output_size[1], stride[0], stride[1], padding[0],
        padding[1], dilation[0], dilation[1], groups, values.numel(), relu, ptr(chunk_ptr),
        ptr(entries), images, rows, chunk, stream_of(input))
    return out


_sparse_conv2d_cuda = torch.library.custom_op(
    "pyfastcnn::sparse_conv2d_cuda", mutates_args=(), device_types="cuda"
)(_sparse_conv2d_cuda_impl)


@_sparse_conv2d_cuda.register_fake
def _(input, row_ptr, taps, values, chunk_ptr, entries, bias, weight_shape, stride, padding,
      dilation, groups, output_size, plan, relu):
    return input.new_empty((input.shape[0], weight_shape[0], output_size[0], output_size[1]))


def _sparse24_conv2d_cuda_impl(
    input: torch.Tensor,
    frags: torch.Tensor,
    meta: torch.Tensor,
    bias: Optional[torch.Tensor],
    weight_shape: List[int],
    stride: List[int],
    padding: List[int],
    dilation: List[int],
    groups: int,
    output_size: List[int],
    m_padded: int,
    k_padded: int,
    relu: bool,
) -> torch.Tensor:
    n, c, h, w = input.shape
    out = torch.empty((n, weight_shape[0], output_size[0], output_size[1]), dtype=input.dtype,
                      device=input.device, memory_format=torch.channels_last)
    if out.numel() == 0:
        return out
    cuda_module().sparse24_conv2d(
        input.device.index, ptr(input), _DTYPE_CODES[input.dtype], ptr(frags), ptr(meta),
        ptr(bias), ptr(out), n, c, h, w, weight_shape[0], weight_shape[2], weight_shape[3],
        output_size[0], output_size[1], stride[0], stride[1], padding[0], padding[1],
        dilation[0], dilation[1], groups, m_padded, k_padded, relu, stream_of(input))
    return out


_sparse24_conv2d_cuda = torch.library.custom_op(
    "pyfastcnn::sparse24_conv2d_cuda", mutates_args=(), device_types="cuda"
)(_sparse24_conv2d_cuda_impl)


@_sparse24_conv2d_cuda.register_fake
def _(input, frags, meta, bias, weight_shape, stride, padding, dilation, groups, output_size,
      m_padded, k_padded, relu):
    return torch.empty((input.shape[0], weight_shape[0], output_size[0], output_size[1]),
                       dtype=input.dtype, device=input.device,
                       memory_format=torch.channels_last)


# --- the public entry (called by pyfastcnn.sparse_conv2d for CUDA input) ---------------------


def _is_channels_last(t: torch.Tensor) -> bool:
    return not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


_CALL_PLANS = 16  # call plans remembered per weight


def _sm_count(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def _hashable(v):
    return tuple(v) if isinstance(v, list) else v


def _plain_eager(input: torch.Tensor, bias: Optional[torch.Tensor]) -> bool:
    """No tracing, no tensor subclasses, no autograd: the custom op's dispatch can be skipped."""
    if torch.compiler.is_compiling() or type(input) is not torch.Tensor or input.requires_grad:
        return False
    return bias is None or (type(bias) is torch.Tensor and not bias.requires_grad)


def sparse_conv2d_cuda(
    input: torch.Tensor,
    weight: Union[torch.Tensor, SparseWeight],
    bias: Optional[torch.Tensor],
    stride: IntPair,
    padding: Union[IntPair, str],
    dilation: IntPair,
    groups: int,
    relu: bool,
) -> torch.Tensor:
    """pyfastcnn.sparse_conv2d for a CUDA input (see its docstring).

    Per-call Python work matters next to kernels of a few microseconds: in plain eager mode the
    checks and launch arguments of a call are made once per (input shape, dtype, layout, device,
    bias, geometry) and kept on the SparseWeight as a call plan; later calls with the same key
    only allocate the output and launch.
    """
    key = None
    if isinstance(weight, SparseWeight) and isinstance(input, torch.Tensor) and _plain_eager(
            input, bias):
        key = ("call", tuple(input.shape), input.dtype, input.device, input.is_contiguous(),
               input.is_contiguous(memory_format=torch.channels_last),
               None if bias is None else (bias.dtype, bias.device, tuple(bias.shape)),
               _hashable(stride), _hashable(padding), _hashable(dilation), groups, relu)
        try:
            plan = weight.cache.get(key)
        except TypeError:  # an unhashable argument: no plan, the checks below report it
            plan, key = None, None
        if plan is not None:
            return plan(input, bias)
    check_tensor("input", input, tuple(_DTYPE_CODES), 4, devices=("cuda",))
    if isinstance(weight, torch.Tensor):
        check_tensor("weight", weight, torch.float32, 4, devices=("cpu", "cuda"))
        weight = pack_sparse(weight.detach().cpu(), "csr")
    elif not isinstance(weight, SparseWeight):
        raise TypeError(
            f"weight must be a torch.Tensor or a pyfastcnn.SparseWeight, got "
            f"{type(weight).__name__}"
        )
    if bias is not None:
        check_tensor("bias", bias, tuple({torch.float32, input.dtype}), 1, devices=("cuda",))
        same_device("input", input, bias=bias)
        if bias.shape[0] != weight.shape[0]:
            raise ValueError(f"bias must have {weight.shape[0]} elements, got {bias.shape[0]}")
    if not isinstance(relu, bool):
        raise TypeError(f"relu must be a bool, got {type(relu).__name__}")
    geo = conv_geometry(input.shape, weight.shape, stride, padding, dilation, groups)
    if weight.format == "block" and weight.groups != geo.groups:
        raise ValueError(f"weight was packed for groups={weight.groups}, the conv has "
                         f"groups={geo.groups}: pack_sparse(weight, groups=...)")
    channels_last = _is_channels_last(input)
    if weight.format == "2:4" and input.dtype in (torch.float16, torch.bfloat16):
        plan = _plan_24(input, weight, geo, relu, channels_last)
    else:
        plan = None
        if weight.format == "block":
            plan = _plan_block(input, weight, geo, relu, channels_last)
        if plan is None:
            plan = _plan_csr(input, weight, geo, relu, channels_last)
    if key is None:
        return plan(input, bias, traced=True)
    plans = [k for k in weight.cache if isinstance(k, tuple) and k[0] == "call"]
    for old in plans[: max(0, len(plans) - _CALL_PLANS + 1)]:
        del weight.cache[old]
    weight.cache[key] = plan
    return plan(input, bias)


def _plan_csr(input, weight: SparseWeight, geo, relu: bool, channels_last: bool):
    """The launch of the direct CSR kernel for this input shape/geometry, as a function of
    (input, bias)."""
    n, c, h, w = input.shape
    oc, cg, kh, kw = weight.shape
    device, dtype = input.device, input.dtype
    row_ptr, taps, values = _device_csr(weight, device)
    sms = _sm_count(device)
    blocks = geo.groups * -(-(oc // geo.groups) // 16)  # kTiledRows output channels per CTA
    tiles = _csr_plan(n, cg, geo.output_size, (kh, kw), geo.stride, geo.dilation, blocks, sms)
    chunk_ptr = None if tiles is None else _device_chunks(weight, device, tiles[2])
    entries = None if tiles is None else _device_entries(weight, device, tiles, geo)
    out_shape = (n, oc, *geo.output_size)
    op_args = (list(weight.shape), list(geo.stride), list(geo.padding), list(geo.dilation),
               geo.groups, list(geo.output_size), tiles or [0, 0, 0], relu)
    sizes = (n, c, h, w, oc, kh, kw, *geo.output_size, *geo.stride, *geo.padding, *geo.dilation,
             geo.groups, values.numel(), relu, ptr(chunk_ptr), ptr(entries),
             *(tiles or (0, 0, 0)))
    native = cuda_module().sparse_conv2d_csr
    index, code = device.index, _DTYPE_CODES[dtype]
    weights = (ptr(row_ptr), ptr(taps), ptr(values))
    empty = out_shape[0] * out_shape[1] * out_shape[2] * out_shape[3] == 0

    def run(x: torch.Tensor, bias: Optional[torch.Tensor], traced: bool = False):
        x = x.contiguous()
        if bias is not None:
            bias = bias.float().contiguous()
        if traced:
            out = _native.run(_sparse_conv2d_cuda, _sparse_conv2d_cuda_impl, x, row_ptr, taps,
                              values, chunk_ptr, entries, bias, *op_args)
        else:
            out = torch.empty(out_shape, dtype=dtype, device=device)
            if not empty:
                native(index, x.data_ptr(), code, *weights, ptr(bias), out.data_ptr(), *sizes,
                       raw_stream(index))
        return out.contiguous(memory_format=torch.channels_last) if channels_last else out

    return run


def _plan_block(input, weight: SparseWeight, geo, relu: bool, channels_last: bool):
    """The launch of the block-sparse kernel, or None where its tile plan does not fit (the CSR
    kernels run the weight's CSR form then)."""
    n, c, h, w = input.shape
    oc, cg, kh, kw = weight.shape
    device, dtype = input.device, input.dtype
    panels = weight.row_ptr.numel() - 1
    tiles = _csr_plan(n, cg, geo.output_size, (kh, kw), geo.stride, geo.dilation, panels,
                      _sm_count(device))
    if tiles is None:
        return None
    taps, values, _, _ = _device_block(weight, device)
    chunk_ptr = _device_block_chunks(weight, device, tiles[2])
    key = ("cuda-block-offsets", str(device), tuple(tiles), geo.stride, geo.dilation,
           geo.output_size[1])
    offsets = weight.cache.get(key)
    if offsets is None:
        offsets = _patch_offsets(taps, tiles, (kh, kw), geo.stride, geo.dilation,
                                 geo.output_size[1]).to(torch.int32).contiguous()
        weight.cache[key] = offsets
    out_shape = (n, oc, *geo.output_size)
    sizes = (n, c, h, w, oc, kh, kw, *geo.output_size, *geo.stride, *geo.padding, *geo.dilation,
             geo.groups, taps.numel(), relu, *tiles)
    native = cuda_module().sparse_conv2d_block
    index, code = device.index, _DTYPE_CODES[dtype]
    empty = out_shape[0] * out_shape[1] * out_shape[2] * out_shape[3] == 0

    def run(x: torch.Tensor, bias: Optional[torch.Tensor], traced: bool = False):
        if traced:  # no custom op of its own: traced calls run the CSR op on the CSR form
            return _plan_csr(x, weight, geo, relu, channels_last)(x, bias, traced=True)
        x = x.contiguous()
        if bias is not None:
            bias = bias.float().contiguous()
        out = torch.empty(out_shape, dtype=dtype, device=device)
        if not empty:
            native(index, x.data_ptr(), code, ptr(chunk_ptr), ptr(offsets), ptr(values),
                   ptr(bias), out.data_ptr(), *sizes, raw_stream(index))
        return out.contiguous(memory_format=torch.channels_last) if channels_last else out

    return run


def _plan_24(input, weight: SparseWeight, geo, relu: bool, channels_last: bool):
    """The launch of the 2:4 tensor-core kernel for this input shape/geometry, as a function of
    (input, bias)."""
    n, c, h, w = input.shape
    oc, cg, kh, kw = weight.shape
    device, dtype = input.device, input.dtype
    g = geo.groups
    cg4 = weight.values.shape[1] * 2 // (kh * kw)
    frags, meta, m_pad, k_pad = _device_24(weight, device, dtype, g)
    out_shape = (n, oc, *geo.output_size)
    op_args = ([oc, cg4, kh, kw], list(geo.stride), list(geo.padding), list(geo.dilation), g,
               list(geo.output_size), m_pad, k_pad, relu)
    sizes = (n, g * cg4, h, w, oc, kh, kw, *geo.output_size, *geo.stride, *geo.padding,
             *geo.dilation, g, m_pad, k_pad, relu)
    native = cuda_module().sparse24_conv2d
    index, code = device.index, _DTYPE_CODES[dtype]
    empty = out_shape[0] * out_shape[1] * out_shape[2] * out_shape[3] == 0

    def run(x: torch.Tensor, bias: Optional[torch.Tensor], traced: bool = False):
        if cg4 != cg:  # zero channels up to the packed multiple of 4, per group
            x = torch.nn.functional.pad(x.reshape(n, g, cg, h, w),
                                        (0, 0, 0, 0, 0, cg4 - cg)).reshape(n, g * cg4, h, w)
        x = x.contiguous(memory_format=torch.channels_last)
        if x.data_ptr() % 16:
            x = x.clone(memory_format=torch.channels_last)
        if bias is not None:
            bias = bias.float().contiguous()
        if traced:
            out = _native.run(_sparse24_conv2d_cuda, _sparse24_conv2d_cuda_impl, x, frags, meta,
                              bias, *op_args)
        else:
            out = torch.empty(out_shape, dtype=dtype, device=device,
                              memory_format=torch.channels_last)
            if not empty:
                native(index, x.data_ptr(), code, frags.data_ptr(), meta.data_ptr(), ptr(bias),
                       out.data_ptr(), *sizes, raw_stream(index))
        return out if channels_last else out.contiguous()

    return run


__all__ = ["sparse_conv2d_cuda"]
