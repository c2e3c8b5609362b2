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
