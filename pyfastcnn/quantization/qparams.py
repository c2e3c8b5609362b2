"""Linear quantization: q = clamp(round(x / scale) + zero_point, qmin, qmax), round half to even;
x' = (q - zero_point) * scale. Per tensor (scalar scale / zero point) or per channel (vectors
along ``axis``)."""
from __future__ import annotations

from typing import Optional, Tuple

import torch

_EPS = torch.finfo(torch.float32).eps


def quant_range(dtype: torch.dtype = torch.uint8, bits: int = 8) -> Tuple[int, int]:
    """(qmin, qmax) of a ``bits``-wide code in ``dtype`` (int8: signed, uint8: unsigned)."""
    if dtype not in (torch.uint8, torch.int8):
        raise TypeError(f"dtype must be torch.uint8 or torch.int8, got {dtype}")
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ValueError(f"bits must be an int in [2, 8], got {bits!r}")
    if dtype == torch.uint8:
        return 0, 2**bits - 1
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def choose_qparams(min_val: torch.Tensor, max_val: torch.Tensor,
                   dtype: torch.dtype = torch.uint8, symmetric: bool = False,
                   bits: int = 8) -> Tuple[torch.Tensor, torch.Tensor]:
    """Scale (float32) and zero point (int32) that map [min_val, max_val] onto the code range.

    The range is widened to contain 0, so that 0 is exactly representable (zero padding, ReLU).
    Asymmetric: scale = (max - min) / (qmax - qmin), zero_point = qmin - round(min / scale).
    Symmetric: scale = max(|min|, |max|) / ((qmax - qmin) / 2), zero point at the middle of the
    code range (0 for int8, 128 for uint8). Works element-wise (per channel with vectors).
    """
    qmin, qmax = quant_range(dtype, bits)
    lo = torch.clamp(torch.as_tensor(min_val, dtype=torch.float64), max=0.0)
    hi = torch.clamp(torch.as_tensor(max_val, dtype=torch.float64), min=0.0)
    if symmetric:
        amax = torch.maximum(-lo, hi)
        scale = torch.clamp(amax / ((qmax - qmin) / 2.0), min=_EPS)
        zero_point = torch.full_like(scale, (qmin + qmax + 1) // 2, dtype=torch.int32)
    else:
        scale = torch.clamp((hi - lo) / (qmax - qmin), min=_EPS)
        zero_point = torch.clamp(qmin - torch.round(lo / scale), qmin, qmax).to(torch.int32)
    return scale.to(torch.float32), zero_point


def _shape_for(param: torch.Tensor, x: torch.Tensor, axis: Optional[int]) -> torch.Tensor:
    if axis is None or param.dim() == 0:
        return param
    shape = [1] * x.dim()
    shape[axis] = -1
    return param.view(shape)


def quantize(x: torch.Tensor, scale, zero_point, dtype: torch.dtype = torch.uint8,
             axis: Optional[int] = None, bits: int = 8) -> torch.Tensor:
    """Codes of ``x`` (float) in ``dtype``; per channel along ``axis`` when scale is a vector."""
    qmin, qmax = quant_range(dtype, bits)
    scale = _shape_for(torch.as_tensor(scale, dtype=torch.float32), x, axis)
    zero_point = _shape_for(torch.as_tensor(zero_point, dtype=torch.int32), x, axis)
    q = torch.round(x.float() / scale) + zero_point
    return torch.clamp(q, qmin, qmax).to(dtype)


def dequantize(q: torch.Tensor, scale, zero_point, axis: Optional[int] = None) -> torch.Tensor:
    """(q - zero_point) * scale, float32."""
    scale = _shape_for(torch.as_tensor(scale, dtype=torch.float32), q, axis)
    zero_point = _shape_for(torch.as_tensor(zero_point, dtype=torch.int32), q, axis)
    return (q.to(torch.int32) - zero_point).float() * scale
