"""Fake quantization: quantize-then-dequantize in float, with straight-through gradients.

``FakeQuantize`` sits on an activation edge of a prepared model. It has two switches:
``observe`` (feed its observer, used by PTQ calibration and by QAT with observed ranges) and
``fake_quant`` (replace x by dequantize(quantize(x))). PTQ calibration runs with observe on and
fake_quant off; QAT and "simulate the INT8 model in float" run with fake_quant on.
With ``learnable=True`` the scale and zero point become parameters trained by the loss (LSQ,
Esser et al. 2020), initialised from the observer on the first batch.
"""
from __future__ import annotations

from typing import Callable, Tuple, Union

import torch

from .observers import HistogramObserver, MinMaxObserver, MovingAverageMinMaxObserver
from .qparams import quant_range

OBSERVERS = ("minmax", "moving_average", "percentile", "mse", "entropy")


def make_observer(kind: Union[str, Callable[[], torch.nn.Module]],
                  dtype: torch.dtype = torch.uint8) -> torch.nn.Module:
    """An observer by name (see ``OBSERVERS``) or from a factory callable."""
    if callable(kind):
        return kind()
    if kind == "minmax":
        return MinMaxObserver(dtype=dtype)
    if kind == "moving_average":
        return MovingAverageMinMaxObserver(dtype=dtype)
    if kind in ("percentile", "mse", "entropy"):
        # KL calibration is symmetric by nature; uint8 codes keep it one-sided for ReLU data.
        return HistogramObserver(kind, dtype=dtype, symmetric=False)
    raise ValueError(f"observer must be one of {OBSERVERS} or a callable, got {kind!r}")


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """round half to even forward, identity gradient (straight-through estimator)."""
    return x + (torch.round(x) - x).detach()


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int,
                  qmax: int) -> torch.Tensor:
    """(clamp(round(x / scale) + zero_point, qmin, qmax) − zero_point) · scale.

    Gradients: straight through the rounding, zero where clamped (x outside the range); scale
    and zero point receive gradients when they require them (LSQ).
    """
    q = torch.clamp(round_ste(x / scale) + zero_point, qmin, qmax)
    return (q - zero_point) * scale


def fake_quantize_weight(weight: torch.Tensor, bits: int = 8,
                         per_channel: bool = True) -> torch.Tensor:
    """Symmetric weight fake quantization with the scale ``quantize_weight`` uses:
    scale = max|w| / (2^(bits−1) − 1) per output channel (or tensor), codes in ±(2^(bits−1) − 1).
    """
    qmax = 2 ** (bits - 1) - 1
    w = weight.detach()
    amax = w.abs().reshape(w.shape[0], -1).amax(dim=1) if per_channel else w.abs().amax().expand(
        w.shape[0])
    scale = torch.where(amax > 0, amax / qmax, torch.ones_like(amax)).float()
    scale = scale.view((-1,) + (1,) * (weight.dim() - 1))
    return fake_quantize(weight, scale, torch.zeros((), dtype=weight.dtype), -qmax, qmax)


class FakeQuantize(torch.nn.Module):
    """An activation quantizer: observer + fake quantization (see the module docstring)."""

    def __init__(self, observer: Union[str, Callable[[], torch.nn.Module]] = "mse",
                 dtype: torch.dtype = torch.uint8, observe: bool = True,
                 fake_quant: bool = False, learnable: bool = False):
        super().__init__()
        self.qmin, self.qmax = quant_range(dtype)
        self.dtype = dtype
        self.observer = make_observer(observer, dtype)
        self.observe, self.fake_quant, self.learnable = observe, fake_quant, learnable
        self.register_buffer("frozen_scale", torch.tensor(1.0))
        self.register_buffer("frozen_zero_point", torch.tensor(0, dtype=torch.int32))
        self.register_buffer("has_qparams", torch.tensor(False))
        if learnable:
            self.scale = torch.nn.Parameter(torch.tensor(1.0))
            self.zero_point = torch.nn.Parameter(torch.tensor(0.0))

    def qparams(self) -> Tuple[float, int]:
        """(scale, zero_point) as Python numbers, as the INT8 modules take them."""
        if self.learnable and bool(self.has_qparams):
            scale = float(self.scale.detach().abs().clamp(min=1e-8))
            zp = int(torch.clamp(torch.round(self.zero_point.detach()), self.qmin, self.qmax))
            return scale, zp
        if self.observe or not bool(self.has_qparams):
            scale, zp = self.observer.qparams()
            return float(scale), int(zp)
        return float(self.frozen_scale), int(self.frozen_zero_point)

    def freeze(self) -> None:
        """Stop observing; keep the current qparams."""
        scale, zp = self.qparams()
        self.frozen_scale.fill_(scale)
        self.frozen_zero_point.fill_(zp)
        self.has_qparams.fill_(True)
        self.observe = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observe:
            self.observer(x)
        if not self.fake_quant or not x.is_floating_point():
            return x
        if self.learnable:
            if not bool(self.has_qparams):  # initialise from what the observer saw
                scale, zp = self.observer.qparams()
                with torch.no_grad():
                    self.scale.fill_(float(scale))
                    self.zero_point.fill_(float(zp))
                self.has_qparams.fill_(True)
            scale = self.scale.abs().clamp(min=1e-8)
            # LSQ's gradient scale keeps the step-size updates in proportion to the weights'.
            g = 1.0 / (max(x.numel(), 1) * self.qmax) ** 0.5
            scale = scale * g + (scale - scale * g).detach()
            zero_point = round_ste(self.zero_point)
            return fake_quantize(x, scale, zero_point, self.qmin, self.qmax)
        scale, zp = self.qparams()
        return fake_quantize(x, torch.tensor(scale), torch.tensor(float(zp)), self.qmin,
                             self.qmax)

    def extra_repr(self) -> str:
        return (f"dtype={self.dtype}, observe={self.observe}, fake_quant={self.fake_quant}, "
                f"learnable={self.learnable}")


def _modules_of(model: torch.nn.Module, cls) -> list:
    return [m for m in model.modules() if isinstance(m, cls)]


def enable_fake_quant(model: torch.nn.Module, enabled: bool = True) -> torch.nn.Module:
    """Switch fake quantization of activations and weights on (simulate INT8) or off (float)."""
    from .modules import QuantizableModule

    for m in _modules_of(model, FakeQuantize):
        m.fake_quant = enabled
    for m in _modules_of(model, QuantizableModule):
        m.fake_quant_weight = enabled
    return model


def disable_observer(model: torch.nn.Module) -> torch.nn.Module:
    """Freeze every activation range (late in QAT, or after calibration)."""
    for m in _modules_of(model, FakeQuantize):
        if m.observe:
            m.freeze()
    return model

