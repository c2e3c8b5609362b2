"""Float modules of a prepared model: one per future INT8 layer.

``QuantizableConv2d`` is conv (+ BatchNorm) (+ ReLU/ReLU6) as one unit. After PTQ ``prepare``
the BN is already folded into the conv; after ``prepare_qat`` it is kept and trained the
standard way for quantization-aware training (Jacob et al. 2018, Krishnamoorthi 2018): the
weight is folded with the *running* variance before fake quantization, so training sees the
weights that inference will use, and the batch statistics are corrected for afterwards; once
``freeze_bn_stats`` is called the running statistics are used throughout (late in training).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from .fake_quant import fake_quantize_weight

ACTIVATIONS = (None, "relu", "relu6")


def apply_activation(y: torch.Tensor, activation: Optional[str]) -> torch.Tensor:
    if activation == "relu":
        return F.relu(y)
    if activation == "relu6":
        return F.relu6(y)
    return y


class QuantizableModule(torch.nn.Module):
    """Base: weight fake quantization switch and weight quantization settings."""

    def __init__(self, activation: Optional[str], weight_bits: int, per_channel: bool):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        if isinstance(weight_bits, bool) or not isinstance(weight_bits, int) or not (
                2 <= weight_bits <= 8):
            raise ValueError(f"weight_bits must be an int in [2, 8], got {weight_bits!r}")
        self.activation, self.weight_bits, self.per_channel = activation, weight_bits, per_channel
        self.fake_quant_weight = False

    def _maybe_fq(self, w: torch.Tensor) -> torch.Tensor:
        if not self.fake_quant_weight:
            return w
        return fake_quantize_weight(w, self.weight_bits, self.per_channel)

    def folded(self) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The float weight and bias inference uses (BN folded with running statistics)."""
        raise NotImplementedError


class QuantizableConv2d(QuantizableModule):
    """conv (+ bn) (+ activation); ``bn`` None once folded (PTQ)."""

    def __init__(self, conv: torch.nn.Conv2d, bn: Optional[torch.nn.BatchNorm2d] = None,
                 activation: Optional[str] = None, weight_bits: int = 8,
                 per_channel: bool = True):
        super().__init__(activation, weight_bits, per_channel)
        if not isinstance(conv, torch.nn.Conv2d):
            raise TypeError(f"conv must be a torch.nn.Conv2d, got {type(conv).__name__}")
        if conv.padding_mode != "zeros":
            raise ValueError(f"conv.padding_mode must be 'zeros', got {conv.padding_mode!r}")
        if bn is not None and bn.running_var is None:
            raise ValueError("bn has no running statistics (track_running_stats=False)")
        self.conv, self.bn = conv, bn
        self.freeze_bn = False

    def folded(self) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        w, b = self.conv.weight, self.conv.bias
        if self.bn is None:
            return w, b
        bn = self.bn
        std = torch.sqrt(bn.running_var + bn.eps)
        gamma = bn.weight if bn.weight is not None else torch.ones_like(std)
        beta = bn.bias if bn.bias is not None else torch.zeros_like(std)
        factor = gamma / std
        shift = -bn.running_mean if b is None else b - bn.running_mean
        return w * factor.view(-1, 1, 1, 1), shift * factor + beta

    def _conv(self, x, w, b):
        c = self.conv
        return F.conv2d(x, w, b, c.stride, c.padding, c.dilation, c.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bn is None or not self.training or self.freeze_bn:
            w, b = self.folded()
            # (frozen BN in training: running statistics, which no longer move)
            y = self._conv(x, self._maybe_fq(w), b)
            return apply_activation(y, self.activation)
        # Training with batch statistics: fake-quantize the weight folded with the running
        # std, undo the fold on the output, then let BN normalise with the batch statistics
        # (and update its running averages) as float training would.
        bn = self.bn
        running_std = torch.sqrt(bn.running_var + bn.eps)
        gamma = bn.weight if bn.weight is not None else torch.ones_like(running_std)
        factor = gamma / running_std
        w = self._maybe_fq(self.conv.weight * factor.view(-1, 1, 1, 1))
        y = self._conv(x, w, None) / factor.view(1, -1, 1, 1)
        if self.conv.bias is not None:
            y = y + self.conv.bias.view(1, -1, 1, 1)
        return apply_activation(bn(y), self.activation)

    def extra_repr(self) -> str:
        return f"activation={self.activation}, weight_bits={self.weight_bits}"


class QuantizableLinear(QuantizableModule):
    """linear (+ activation)."""

    def __init__(self, linear: torch.nn.Linear, activation: Optional[str] = None,
                 weight_bits: int = 8, per_channel: bool = True):
        super().__init__(activation, weight_bits, per_channel)
        if not isinstance(linear, torch.nn.Linear):
            raise TypeError(f"linear must be a torch.nn.Linear, got {type(linear).__name__}")
        self.linear = linear

    def folded(self) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        return self.linear.weight, self.linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self._maybe_fq(self.linear.weight), self.linear.bias)
        return apply_activation(y, self.activation)

    def extra_repr(self) -> str:
        return f"activation={self.activation}, weight_bits={self.weight_bits}"


class QuantizableAdd(torch.nn.Module):
    """a + b (+ ReLU): the residual add, quantized as one INT8 op after conversion."""

    def __init__(self, relu: bool = False):
        super().__init__()
        self.relu = relu

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        y = a + b
        return F.relu(y) if self.relu else y

    def extra_repr(self) -> str:
        return f"relu={self.relu}"


def set_freeze_bn(model: torch.nn.Module, frozen: bool = True) -> torch.nn.Module:
    """QAT: stop (or restart) updating BN statistics; the running ones are used from now on."""
    for m in model.modules():
        if isinstance(m, QuantizableConv2d):
            m.freeze_bn = frozen
    return model

