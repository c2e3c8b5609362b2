"""INT8 elementwise ops: the residual add of two quantized tensors and per-tensor quantization,
each one native pass over memory (PyTorch formulations take several).

``quantized_add`` computes, in float32 with every operation rounded on its own (no FMA):
    ka = f32(a_scale / out_scale), kb = f32(b_scale / out_scale)       (double, then float32)
    c  = f32(out_zero_point - ka * a_zero_point - kb * b_zero_point)   (double, then float32)
    y  = (ka * a + c) + kb * b
    out = round_half_even(clamp(y, lo, qmax)),  lo = max(qmin, out_zero_point) with ReLU else qmin
which is ``quantize(relu?(dequantize(a) + dequantize(b)))`` up to float32 rounding (one code at
most, at ties). Every ISA level computes exactly these operations, and so does
``reference_quantized_add``: results are identical across levels.

``quantize_per_tensor`` is ``pyfastcnn.quantization.quantize`` for one scale:
    codes = clamp(round_half_even(x / f32(scale)) + zero_point, qmin, qmax)
with a true float32 division; +-inf saturate, NaN gives ``zero_point`` (the code of 0.0).
4-D output is channels_last by default, the NCHW -> NHWC transpose fused into the same pass.
"""

from __future__ import annotations

import math
import struct
from typing import Union

import torch

from .. import _native
from ._checks import check_tensor

_RANGE = {torch.uint8: (0, 255), torch.int8: (-128, 127)}
Number = Union[int, float]


def _f32(v: float) -> float:
    """v rounded to the nearest float32, as a Python float."""
    return struct.unpack("f", struct.pack("f", v))[0]


def _scale(name: str, s: object) -> float:
    if type(s) is float and 1e-38 <= s <= 3e38:  # the common case, checked cheaply
        return s
    if isinstance(s, torch.Tensor) and s.numel() == 1 and s.is_floating_point():
        s = float(s.item())
    if isinstance(s, bool) or not isinstance(s, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(s).__name__}")
    s = float(s)
    if not (s > 0 and math.isfinite(s)) or not s < 3.4e38 or _f32(s) == 0.0:
        raise ValueError(f"{name} must be a positive, finite float32, got {s}")
    return s


def _zero_point(name: str, z: object, dtype: torch.dtype) -> int:
    if isinstance(z, torch.Tensor) and z.numel() == 1 and not z.is_floating_point():
        z = int(z.item())
    if type(z) is not int:
        raise TypeError(f"{name} must be an int, got {type(z).__name__}")
    lo, hi = _RANGE[dtype]
    if not lo <= z <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}] for {dtype}, got {z}")
    return z


def _add_constants(a_scale, a_zero_point, b_scale, b_zero_point, out_scale, out_zero_point):
    ka, kb = _f32(a_scale / out_scale), _f32(b_scale / out_scale)
    c = _f32(out_zero_point - ka * a_zero_point - kb * b_zero_point)
    return ka, kb, c


def _is_dense(t: torch.Tensor) -> bool:
    """A permutation of a contiguous layout: no gaps, no overlap."""
    if t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last):
        return True
    if t.numel() == 0:
        return True
    dims = sorted((st, sz) for sz, st in zip(t.shape, t.stride()) if sz != 1)
    expected = 1
    for st, sz in dims:
        if st != expected:
            return False
        expected *= sz
    return True


def _same_strides(a: torch.Tensor, b: torch.Tensor) -> bool:
    return all(sz == 1 or sa == sb for sz, sa, sb in zip(a.shape, a.stride(), b.stride()))


# ---- quantized_add --------------------------------------------------------------------------


def _quantized_add_impl(a: torch.Tensor, a_scale: float, a_zero_point: int, b: torch.Tensor,
                        b_scale: float, b_zero_point: int, out_scale: float,
                        out_zero_point: int, relu: bool) -> torch.Tensor:
    out = torch.empty_like(a)  # a is dense: its strides are kept
    _native.C.quantized_add(_native.tensor_arg(a), a_scale, a_zero_point, _native.tensor_arg(b),
                            b_scale, b_zero_point, out_scale, out_zero_point, relu,
                            _native.tensor_arg(out))
    return out


_quantized_add = torch.library.custom_op(
    "pyfastcnn::quantized_add", mutates_args=(), device_types="cpu"
)(_quantized_add_impl)


@_quantized_add.register_fake
def _(a, a_scale, a_zero_point, b, b_scale, b_zero_point, out_scale, out_zero_point, relu):
    return torch.empty_like(a)


def quantized_add(
    a: torch.Tensor,
    a_scale: float,
    a_zero_point: int,
    b: torch.Tensor,
    b_scale: float,
    b_zero_point: int,
    out_scale: float,
    out_zero_point: int,
    relu: bool = False,
) -> torch.Tensor:
    """Sum of two quantized tensors, requantized: the residual add of an INT8 network.

    Args:
        a, b: uint8 or int8 codes (same dtype), same shape, any rank; CPU.
        a_scale, a_zero_point, b_scale, b_zero_point: their quantization parameters.
        out_scale, out_zero_point: the output's.
        relu: apply ReLU (clamp at the output zero point) before rounding.

    Returns:
        Codes of a's dtype and shape; the layout of a and b when both are dense with the same
        strides (channels_last stays channels_last), else contiguous (channels_last when a is).
        The exact float32 math is in this module's docstring.
    """
    check_tensor("a", a, (torch.uint8, torch.int8))
    check_tensor("b", b, a.dtype)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    if not isinstance(relu, bool):
        raise TypeError(f"relu must be a bool, got {type(relu).__name__}")
    a_scale, b_scale = _scale("a_scale", a_scale), _scale("b_scale", b_scale)
    out_scale = _scale("out_scale", out_scale)
    a_zero_point = _zero_point("a_zero_point", a_zero_point, a.dtype)
    b_zero_point = _zero_point("b_zero_point", b_zero_point, a.dtype)
    out_zero_point = _zero_point("out_zero_point", out_zero_point, a.dtype)
    if not (1e-37 < a_scale / out_scale < 1e37 and 1e-37 < b_scale / out_scale < 1e37):
        raise ValueError("a_scale / out_scale and b_scale / out_scale must be finite and "
                         "non-zero in float32")
    if not (a.stride() == b.stride() and _is_dense(a)) and not (
            _is_dense(a) and _same_strides(a, b)):
        fmt = (torch.channels_last if a.dim() == 4 and not a.is_contiguous()
               and a.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format)
        a, b = a.contiguous(memory_format=fmt), b.contiguous(memory_format=fmt)
    return _native.run(_quantized_add, _quantized_add_impl, a, a_scale, a_zero_point, b,
                       b_scale, b_zero_point, out_scale, out_zero_point, relu)


def reference_quantized_add(a: torch.Tensor, a_scale: float, a_zero_point: int, b: torch.Tensor,
                            b_scale: float, b_zero_point: int, out_scale: float,
                            out_zero_point: int, relu: bool = False) -> torch.Tensor:
    """quantized_add's float32 operations in PyTorch, one op (one rounding) at a time."""
    ka, kb, c = _add_constants(a_scale, a_zero_point, b_scale, b_zero_point, out_scale,
                               out_zero_point)
    qmin, qmax = _RANGE[a.dtype]
    y = a.float() * ka
    y = y + c
    y = y + b.float() * kb
    lo = max(qmin, out_zero_point) if relu else qmin
    return torch.round(torch.clamp(y, lo, qmax)).to(a.dtype)


# ---- quantize_per_tensor --------------------------------------------------------------------


def _quantize_impl(x: torch.Tensor, scale: float, zero_point: int, dtype: torch.dtype,
                   channels_last: bool) -> torch.Tensor:
    if x.dim() == 4 and channels_last:
        out = torch.empty(x.shape, dtype=dtype, memory_format=torch.channels_last)
        if not x.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous()  # NCHW: the kernel transposes on the way
    else:
        out = torch.empty(x.shape, dtype=dtype)
        x = x.contiguous()
    _native.C.quantize_per_tensor(_native.tensor_arg(x), scale, zero_point,
                                  _native.tensor_arg(out))
    return out


_quantize = torch.library.custom_op(
    "pyfastcnn::quantize_per_tensor", mutates_args=(), device_types="cpu"
)(_quantize_impl)


@_quantize.register_fake
def _(x, scale, zero_point, dtype, channels_last):
    fmt = torch.channels_last if x.dim() == 4 and channels_last else torch.contiguous_format
    return torch.empty(x.shape, dtype=dtype, device=x.device, memory_format=fmt)


def quantize_per_tensor(
    x: torch.Tensor,
    scale: float,
    zero_point: int,
    dtype: torch.dtype = torch.uint8,
    memory_format: torch.memory_format = torch.channels_last,
) -> torch.Tensor:
    """float32 -> INT8 codes with one scale and zero point, in one pass.

    Args:
        x: float32, any rank and layout; CPU.
        scale: positive float (used as float32, like ``pyfastcnn.quantization.quantize``).
        zero_point: int in the range of ``dtype``.
        dtype: torch.uint8 or torch.int8.
        memory_format: layout of a 4-D result: torch.channels_last (default; NCHW input is
            transposed in the same pass) or torch.contiguous_format. Other ranks: contiguous.

    Returns:
        ``clamp(round_half_even(x / scale) + zero_point, qmin, qmax)`` of ``dtype``, equal to
        ``pyfastcnn.quantization.quantize(x, scale, zero_point, dtype)``; +-inf saturate and NaN
        gives ``zero_point``.
    """
    check_tensor("x", x, torch.float32)
    if dtype not in _RANGE:
        raise TypeError(f"dtype must be torch.uint8 or torch.int8, got {dtype}")
    if memory_format not in (torch.channels_last, torch.contiguous_format):
        raise ValueError("memory_format must be torch.channels_last or torch.contiguous_format, "
                         f"got {memory_format}")
    scale = _scale("scale", scale)
    zero_point = _zero_point("zero_point", zero_point, dtype)
    return _native.run(_quantize, _quantize_impl, x, _f32(scale), zero_point, dtype,
                       memory_format == torch.channels_last)


def reference_quantize_per_tensor(x: torch.Tensor, scale: float, zero_point: int,
                                  dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    """quantize_per_tensor in PyTorch ops (contiguous layout), NaN -> zero_point."""
    qmin, qmax = _RANGE[dtype]
    v = x.float() / torch.tensor(scale, dtype=torch.float32)
    v = torch.where(torch.isnan(v), torch.zeros_like(v), v)
    return torch.clamp(torch.round(v) + zero_point, qmin, qmax).to(dtype)


__all__ = [
    "quantized_add",
    "quantize_per_tensor",
    "reference_quantized_add",
    "reference_quantize_per_tensor",
]

