"""INT8 pooling on quantized codes: max pooling and adaptive average pooling of channels_last
uint8/int8 tensors, one native pass each (C innermost: a pixel's channels are one vector).

Both ops keep the dtype, and the codes keep the input's scale and zero point:

* ``quantized_max_pool2d`` is ``F.max_pool2d`` on the codes (the maximum commutes with the
  increasing dequantization). Same geometry rules and output size as ``F.max_pool2d``
  (padding at most half the kernel, ``ceil_mode`` windows that would start in the right
  padding dropped); padding never wins. A window with no tap inside the image (dilation can
  make one) gives the lowest code (0 or -128), as ``torch.ops.quantized.max_pool2d`` does,
  where ``F.max_pool2d`` on floats gives -inf.
* ``quantized_adaptive_avg_pool2d`` uses PyTorch's adaptive windows: output row i covers input
  rows ``[floor(i * H / OH), ceil((i + 1) * H / OH))``, columns likewise. The output code is
  the mean of the window's codes rounded half to even, computed exactly in integers (int32
  sums). PyTorch's quantized ``adaptive_avg_pool2d`` computes the same mean (with the same
  output scale and zero point) but rounds ``(sum - zero_point * count) * float32(1 / count)``,
  so at (near-)ties it can differ by one code; dequantizing, averaging in float and
  requantizing (what an ONNX QDQ graph does) rounds the mean minus the zero point, so with an
  odd zero point its ties go the other way.
"""

from __future__ import annotations

import functools
from typing import List, Optional, Sequence, Tuple, Union

import torch

from .. import _native
from ._checks import check_tensor, pair

_CODES = (torch.uint8, torch.int8)
# 255 * H * W must fit an int32 sum
MAX_AVG_POOL_PIXELS = 8421504
IntPair = Union[int, Sequence[int]]


def _check_codes(q: object) -> torch.Tensor:
    if not (type(q) is torch.Tensor and q.dtype in _CODES and q.is_cpu and q.dim() == 4):
        check_tensor("q", q, _CODES, 4)  # explains what is wrong
    n, c, h, w = q.shape
    if c < 1 or h < 1 or w < 1:
        raise ValueError(f"q must have non-empty channel and spatial dims, got shape "
                         f"{tuple(q.shape)}")
    if not q.is_contiguous(memory_format=torch.channels_last):
        raise ValueError("q must be channels_last: use q.contiguous(memory_format="
                         "torch.channels_last)")
    return q


def _pool_output_size(size: int, k: int, pad: int, stride: int, dil: int, ceil_mode: bool) -> int:
    """PyTorch's pooling_output_shape."""
    span = size + 2 * pad - dil * (k - 1) - 1 + (stride - 1 if ceil_mode else 0)
    out = span // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def check_max_pool_args(kernel_size: IntPair, stride: Optional[IntPair], padding: IntPair,
                        dilation: IntPair, ceil_mode: bool
                        ) -> Tuple[Tuple[int, int], Tuple[int, int], Tuple[int, int],
                                   Tuple[int, int]]:
    """F.max_pool2d's rules for its arguments (stride None or empty: kernel_size); returns
    kernel_size, stride, padding, dilation as pairs."""
    k = pair("kernel_size", kernel_size)
    s = k if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0) else \
        pair("stride", stride)
    p, d = pair("padding", padding), pair("dilation", dilation)
    if not isinstance(ceil_mode, bool):
        raise TypeError(f"ceil_mode must be a bool, got {type(ceil_mode).__name__}")
    for name, v, least in (("kernel_size", k, 1), ("stride", s, 1), ("dilation", d, 1),
                           ("padding", p, 0)):
        if min(v) < least:
            raise ValueError(f"{name} must be >= {least}, got {v}")
        if max(v) >= 2 ** 31:
            raise ValueError(f"{name} must be < 2^31, got {v}")
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise ValueError(f"padding must be at most half of kernel_size, got padding={p}, "
                         f"kernel_size={k}")
    return k, s, p, d


def max_pool2d_geometry(shape: Sequence[int], kernel_size: IntPair, stride: Optional[IntPair],
                        padding: IntPair, dilation: IntPair, ceil_mode: bool
                        ) -> Tuple[List[int], List[int], List[int], List[int], Tuple[int, int]]:
    """Checks max pool arguments for an input of ``shape`` [N, C, H, W]; returns kernel, stride,
    padding, dilation as lists and (OH, OW)."""
    k, s, p, d = check_max_pool_args(kernel_size, stride, padding, dilation, ceil_mode)
    h, w = shape[2], shape[3]
    out = (_pool_output_size(h, k[0], p[0], s[0], d[0], ceil_mode),
           _pool_output_size(w, k[1], p[1], s[1], d[1], ceil_mode))
    if min(out) < 1:
        raise ValueError(f"max pool output size would be {out[0]}x{out[1]} for input {h}x{w} "
                         f"(kernel_size={k}, stride={s}, padding={p}, dilation={d}): too small")
    return list(k), list(s), list(p), list(d), out


def _plain(v: object) -> bool:
    """An int, a bool, None or a tuple of ints: a cache key that equals only itself."""
    return type(v) in (int, bool) or v is None or (
        type(v) is tuple and all(type(x) is int for x in v))


@functools.lru_cache(maxsize=256, typed=True)
def _cached_max_pool2d_geometry(h, w, kernel_size, stride, padding, dilation, ceil_mode):
    return max_pool2d_geometry((0, 0, h, w), kernel_size, stride, padding, dilation, ceil_mode)


def _empty_like_pool(q: torch.Tensor, out_hw: Sequence[int]) -> torch.Tensor:
    return torch.empty((q.shape[0], q.shape[1], out_hw[0], out_hw[1]), dtype=q.dtype,
                       device=q.device, memory_format=torch.channels_last)


# ---- quantized_max_pool2d -------------------------------------------------------------------


def _max_pool_out_size(q: torch.Tensor, kernel_size: List[int], stride: List[int],
                       padding: List[int], dilation: List[int],
                       ceil_mode: bool) -> Tuple[int, int]:
    h, w = q.shape[2], q.shape[3]
    return (_pool_output_size(h, kernel_size[0], padding[0], stride[0], dilation[0], ceil_mode),
            _pool_output_size(w, kernel_size[1], padding[1], stride[1], dilation[1], ceil_mode))


def _max_pool_impl(q: torch.Tensor, kernel_size: List[int], stride: List[int],
                   padding: List[int], dilation: List[int], ceil_mode: bool) -> torch.Tensor:
    size = _max_pool_out_size(q, kernel_size, stride, padding, dilation, ceil_mode)
    if min(size) < 1:  # a caller that skipped the checks: explain
        max_pool2d_geometry(q.shape, kernel_size, stride, padding, dilation, ceil_mode)
    out = _empty_like_pool(q, size)
    _native.C.quantized_max_pool2d(_native.tensor_arg(q), kernel_size[0], kernel_size[1],
                                   stride[0], stride[1], padding[0], padding[1], dilation[0],
                                   dilation[1], ceil_mode, _native.tensor_arg(out))
    return out


_max_pool = torch.library.custom_op(
    "pyfastcnn::quantized_max_pool2d", mutates_args=(), device_types="cpu"
)(_max_pool_impl)


@_max_pool.register_fake
def _(q, kernel_size, stride, padding, dilation, ceil_mode):
    return _empty_like_pool(q, _max_pool_out_size(q, kernel_size, stride, padding, dilation,
                                                  ceil_mode))


def quantized_max_pool2d(
    q: torch.Tensor,
    kernel_size: IntPair,
    stride: Optional[IntPair] = None,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    ceil_mode: bool = False,
) -> torch.Tensor:
    """Max pooling of quantized codes (``F.max_pool2d``'s semantics; the scale and zero point
    pass through).

    Args:
        q: uint8 or int8 codes [N, C, H, W], channels_last; CPU. N may be 0.
        kernel_size, stride (default: kernel_size), padding, dilation: ints or pairs, as for
            ``F.max_pool2d`` (padding at most half the kernel).
        ceil_mode: ceil instead of floor in the output size.

    Returns:
        Codes of q's dtype [N, C, OH, OW], channels_last. See the module docstring for windows
        with no tap inside the image.
    """
    _check_codes(q)
    args = (kernel_size, stride, padding, dilation, ceil_mode)
    # checks of plain arguments are remembered (~1 us; not while torch.compile traces)
    if not torch.compiler.is_compiling() and all(_plain(a) for a in args):
        k, s, p, d, _ = _cached_max_pool2d_geometry(q.shape[2], q.shape[3], *args)
    else:
        k, s, p, d, _ = max_pool2d_geometry(q.shape, *args)
    return _native.run(_max_pool, _max_pool_impl, q, k, s, p, d, ceil_mode)


def reference_quantized_max_pool2d(q: torch.Tensor, kernel_size: IntPair,
                                   stride: Optional[IntPair] = None, padding: IntPair = 0,
                                   dilation: IntPair = 1, ceil_mode: bool = False) -> torch.Tensor:
    """F.max_pool2d of the codes in float64; windows with no tap give the lowest code."""
    lo, hi = (0, 255) if q.dtype == torch.uint8 else (-128, 127)
    y = torch.nn.functional.max_pool2d(q.double(), kernel_size, stride, padding, dilation,
                                       ceil_mode)
    return y.clamp(lo, hi).to(q.dtype).contiguous(memory_format=torch.channels_last)


# ---- quantized_adaptive_avg_pool2d ----------------------------------------------------------


def adaptive_output_size(shape: Sequence[int], output_size: object) -> Tuple[int, int]:
    """``output_size`` of ``nn.AdaptiveAvgPool2d`` (an int, or a pair whose None entries keep the
    input's size) for an input of ``shape`` [N, C, H, W]."""
    if type(output_size) is int and output_size > 0:
        return output_size, output_size
    if isinstance(output_size, (list, tuple)) and len(output_size) == 2:
        size = tuple(shape[2 + i] if v is None else v for i, v in enumerate(output_size))
    else:
        size = output_size
    oh, ow = pair("output_size", size)
    if oh < 1 or ow < 1:
        raise ValueError(f"output_size must be positive, got {(oh, ow)}")
    return oh, ow


def _adaptive_avg_impl(q: torch.Tensor, output_size: List[int]) -> torch.Tensor:
    out = _empty_like_pool(q, output_size)
    _native.C.quantized_adaptive_avg_pool2d(_native.tensor_arg(q), _native.tensor_arg(out))
    return out


_adaptive_avg = torch.library.custom_op(
    "pyfastcnn::quantized_adaptive_avg_pool2d", mutates_args=(), device_types="cpu"
)(_adaptive_avg_impl)


@_adaptive_avg.register_fake
def _(q, output_size):
    return _empty_like_pool(q, output_size)


def quantized_adaptive_avg_pool2d(q: torch.Tensor,
                                  output_size: Union[int, Sequence[Optional[int]]]
                                  ) -> torch.Tensor:
    """Adaptive average pooling of quantized codes: each output code is the mean of its window's
    codes rounded half to even (exact integer arithmetic); the scale and zero point pass
    through. ``output_size`` 1 is global average pooling.

    Args:
        q: uint8 or int8 codes [N, C, H, W], channels_last, H * W at most 8421504; CPU.
        output_size: (OH, OW), an int for both, or a pair with None keeping that input size.

    Returns:
        Codes of q's dtype [N, C, OH, OW], channels_last. Windows as ``F.adaptive_avg_pool2d``;
        see the module docstring for how this compares with PyTorch's quantized op.
    """
    _check_codes(q)
    oh, ow = adaptive_output_size(q.shape, output_size)
    if q.shape[2] * q.shape[3] > MAX_AVG_POOL_PIXELS:
        raise ValueError(f"q's H * W must be at most {MAX_AVG_POOL_PIXELS} (int32 sums), got "
                         f"{q.shape[2] * q.shape[3]}")
    return _native.run(_adaptive_avg, _adaptive_avg_impl, q, [oh, ow])


def reference_quantized_adaptive_avg_pool2d(q: torch.Tensor, output_size) -> torch.Tensor:
    """Window means of the codes in float64 (exact: sums of at most 2^23 codes), rounded half to
    even."""
    y = torch.nn.functional.adaptive_avg_pool2d(q.double(), output_size)
    # float64 means of integers are not exact ties; recover the exact sums to round them
    n, c, h, w = q.shape
    oh, ow = y.shape[2:]
    counts = torch.tensor([[(-(-(i + 1) * h // oh) - i * h // oh) * (-(-(j + 1) * w // ow) -
                                                                    j * w // ow)
                            for j in range(ow)] for i in range(oh)], dtype=torch.float64)
    sums = torch.round(y * counts)
    return torch.round(sums / counts).to(q.dtype).contiguous(memory_format=torch.channels_last)


__all__ = [
    "quantized_max_pool2d",
    "quantized_adaptive_avg_pool2d",
    "reference_quantized_max_pool2d",
    "reference_quantized_adaptive_avg_pool2d",
]
