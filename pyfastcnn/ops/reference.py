"""Pure-torch references: the oracle the tests compare against (float64 for float ops)."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def int8_gemm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a.int() @ b.int() with int32 wrap-around, computed exactly in int64."""
    exact = a.long() @ b.long()
    return ((exact + 2**31) % 2**32 - 2**31).to(torch.int32)


def conv2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    relu: bool = False,
) -> torch.Tensor:
    """F.conv2d (then ReLU) in float64."""
    out = F.conv2d(
        input.double(),
        weight.double(),
        None if bias is None else bias.double(),
        stride,
        padding,
        dilation,
        groups,
    )
    return torch.relu(out) if relu else out


def conv_bn_relu(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    bn_weight: Optional[torch.Tensor],
    bn_bias: Optional[torch.Tensor],
    eps: float = 1e-5,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    relu: bool = True,
) -> torch.Tensor:
    """relu(batch_norm(conv2d(...))) in eval mode, float64, unfolded (the three ops)."""

    def d(t):
        return None if t is None else t.double()

    out = conv2d(input, weight, bias, stride, padding, dilation, groups)
    out = F.batch_norm(
        out, d(running_mean), d(running_var), d(bn_weight), d(bn_bias), training=False, eps=eps
    )
    return torch.relu(out) if relu else out


def _requantize(
    acc: torch.Tensor, scale: torch.Tensor, bias, out_dtype, out_scale, out_zero_point, relu: bool,
    residual=None, residual_scale=1.0, residual_zero_point=0,
) -> torch.Tensor:
    """The INT8 epilogue in float64: y = acc * scale + bias [+ residual_scale * (residual -
    residual_zero_point)], ReLU, then quantize if asked."""
    y = acc * scale
    if bias is not None:
        # Linear: [M, N] + [N]; conv: [N, OC, OH, OW] + [OC, 1, 1].
        y = y + (bias.double().view(-1, 1, 1) if acc.dim() == 4 else bias.double())
    if residual is not None:
        y = y + residual_scale * (residual.double() - (residual_zero_point or 0))
    if relu:
        y = torch.relu(y)
    if out_dtype == torch.float32:
        return y
    lo, hi = (-128, 127) if out_dtype == torch.int8 else (0, 255)
    return torch.clamp(torch.round(y / out_scale) + (out_zero_point or 0), lo, hi)


def quantized_linear(
    x,
    x_scale,
    x_zero_point,
    int_weight,
    w_scale,
    bias=None,
    out_dtype=torch.float32,
    out_scale=None,
    out_zero_point=None,
    relu=False,
) -> torch.Tensor:
    """Float64 (exact integer accumulation) reference of pyfastcnn.quantized_linear."""
    acc = ((x.long() - x_zero_point) @ int_weight.long().t()).double()
    return _requantize(
        acc, x_scale * w_scale.double(), bias, out_dtype, out_scale, out_zero_point, relu
    )


def quantized_conv2d(
    x,
    x_scale,
    x_zero_point,
    int_weight,
    w_scale,
    bias=None,
    stride=1,
    padding=0,
    dilation=1,
    groups=1,
    out_dtype=torch.float32,
    out_scale=None,
    out_zero_point=None,
    relu=False,
    residual=None,
    residual_scale=1.0,
    residual_zero_point=0,
) -> torch.Tensor:
    """Float64 reference of pyfastcnn.quantized_conv2d: integer sums are exact in float64."""
    acc = F.conv2d(
        (x.long() - x_zero_point).double(),
        int_weight.double(),
        None,
        stride,
        padding,
        dilation,
        groups,
    )
    return _requantize(
        acc,
        x_scale * w_scale.double().view(-1, 1, 1),
        bias,
        out_dtype,
        out_scale,
        out_zero_point,
        relu,
        residual,
        residual_scale,
        residual_zero_point,
    )
