"""INT8 inference modules: QuantConv2d, QuantLinear, QuantAdd, QuantMaxPool2d,
QuantAdaptiveAvgPool2d, Quantize, DeQuantize.

Quantized activations travel between modules as plain uint8/int8 tensors (channels_last for
4-D); each module knows the (scale, zero_point) of what it receives and of what it produces,
fixed at conversion time, so consecutive INT8 layers chain without a float round trip. Built by
``pyfastcnn.quantization.convert``; usable by hand too. Inference only.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from ..ops.elementwise import quantize_per_tensor, quantized_add
from ..ops.pool import (
    _adaptive_avg_impl,
    _max_pool_impl,
    adaptive_output_size,
    check_max_pool_args,
    quantized_adaptive_avg_pool2d,
    quantized_max_pool2d,
)
from ..ops.quantized import (
    QuantizedWeight,
    _conv_args,
    _quantized_conv2d_impl,
    quantized_conv2d,
    quantized_linear,
)
from ..ops.sparse_int8 import (
    SparseInt8Weight,
    _sparse_quantized_conv2d_impl,
    for_this_cpu,
    grouped_from_sizes,
    sparse_quantized_conv2d,
)
from ..quantization.qparams import dequantize, quant_range

_CODES = (torch.uint8, torch.int8)


def _activation_clamp(activation: Optional[str]):
    if activation not in (None, "relu", "relu6"):
        raise ValueError(f"activation must be None, 'relu' or 'relu6', got {activation!r}")
    return activation is not None, (6.0 if activation == "relu6" else None)


def _check_qparams(scale: float, zero_point: int, dtype: torch.dtype, what: str):
    if not (isinstance(scale, float) and scale > 0 and math.isfinite(scale)):
        raise ValueError(f"{what} scale must be a positive finite float, got {scale!r}")
    lo, hi = quant_range(dtype)
    if isinstance(zero_point, bool) or not isinstance(zero_point, int) or not (
            lo <= zero_point <= hi):
        raise ValueError(f"{what} zero point must be an int in [{lo}, {hi}], got {zero_point!r}")


class _QuantLayer(torch.nn.Module):
    """Shared state of QuantConv2d and QuantLinear: input and output quantization, weight,
    bias, fused activation. ``out_dtype`` float32 ends the INT8 chain (then no out qparams)."""

    def __init__(self, weight: QuantizedWeight, bias: Optional[torch.Tensor], in_scale: float,
                 in_zero_point: int, out_scale: Optional[float], out_zero_point: Optional[int],
                 activation: Optional[str], in_dtype: torch.dtype = torch.uint8,
                 out_dtype: torch.dtype = torch.uint8):
        super().__init__()
        if not isinstance(weight, (QuantizedWeight, SparseInt8Weight)):
            raise TypeError(f"weight must be a pyfastcnn.QuantizedWeight (or, for a conv, a "
                            f"SparseInt8Weight), got {type(weight).__name__}")
        _check_qparams(in_scale, in_zero_point, in_dtype, "input")
        if out_dtype != torch.float32:
            _check_qparams(out_scale, out_zero_point, out_dtype, "output")
        self.weight = weight
        self.register_buffer("bias", None if bias is None else bias.detach().float().contiguous())
        self.in_scale, self.in_zero_point, self.in_dtype = in_scale, in_zero_point, in_dtype
        self.out_scale, self.out_zero_point, self.out_dtype = out_scale, out_zero_point, out_dtype
        self.activation = activation
        self._relu, self._clamp_max = _activation_clamp(activation)

    def _out_kwargs(self) -> dict:
        if self.out_dtype == torch.float32:
            return dict(out_dtype=torch.float32, relu=self._relu, clamp_max=self._clamp_max)
        return dict(out_dtype=self.out_dtype, out_scale=self.out_scale,
                    out_zero_point=self.out_zero_point, relu=self._relu,
                    clamp_max=self._clamp_max)

    @property
    def sparse(self) -> bool:
        """Whether the weight is pruned and packed for the sparse INT8 kernel."""
        return isinstance(self.weight, SparseInt8Weight)

    def int_weight(self) -> torch.Tensor:
        """The int8 weight, dense ([N, K] or [OC, C/groups, KH, KW])."""
        return self.weight.to_dense() if self.sparse else self.weight.int_weight

    # Packed weights are not tensors: the state dict holds their int8 values and scales (the
    # sparse form for a sparse weight), so save/load and repacking for another ISA work.
    _DENSE_KEYS = ("int_weight", "weight_scale")
    _SPARSE_KEYS = ("sparse_row_ptr", "sparse_block_k", "sparse_values", "sparse_col_sums",
                    "weight_scale")

    def _weight_tensors(self) -> dict:
        w = self.weight
        if self.sparse:
            return dict(zip(self._SPARSE_KEYS, (w.row_ptr, w.block_k, w.values, w.col_sums,
                                                w.scale)))
        return dict(zip(self._DENSE_KEYS, (w.int_weight, w.scale)))

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        for key, t in self._weight_tensors().items():
            destination[prefix + key] = t

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        keys = [prefix + k for k in self._weight_tensors()]
        if all(k in state_dict for k in keys):
            mine = self._weight_tensors()
            got = {k: state_dict[prefix + k] for k in mine}
            bad = [k for k in ("int_weight", "weight_scale", "sparse_col_sums")
                   if k in mine and got[k].shape != mine[k].shape]
            if bad:
                error_msgs.extend(f"size mismatch for {prefix + k}: {tuple(got[k].shape)} vs "
                                  f"{tuple(mine[k].shape)}" for k in bad)
            elif self.sparse:
                w = self.weight
                block_k, values = got["sparse_block_k"], got["sparse_values"]
                self.weight = for_this_cpu(SparseInt8Weight(
                    w.shape, w.groups, got["weight_scale"].float().contiguous(),
                    got["sparse_row_ptr"].long().contiguous(), block_k.int().contiguous(),
                    values.to(torch.int8).contiguous(),
                    got["sparse_col_sums"].int().contiguous(),
                    grouped_from_sizes(block_k, values)))
            else:
                self.weight = QuantizedWeight(got["int_weight"].to(torch.int8).contiguous(),
                                              got["weight_scale"].float().contiguous(),
                                              self.weight.groups)
            self._call_args = {}
        elif strict:
            missing_keys.extend(k for k in keys if k not in state_dict)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        for k in keys:
            if k in unexpected_keys:
                unexpected_keys.remove(k)

    def _qparams_repr(self) -> str:
        out = ("float32" if self.out_dtype == torch.float32 else
               f"scale={self.out_scale:.4g}, zero_point={self.out_zero_point}")
        return (f"in=(scale={self.in_scale:.4g}, zero_point={self.in_zero_point}), out=({out}), "
                f"activation={self.activation}")


class QuantConv2d(_QuantLayer):
    """INT8 Conv2d: uint8/int8 activations in (channels_last), int32 sums, the requantization
    epilogue (per-channel scale, bias, ReLU/ReLU6) fused; uint8 (or float32) out.

    ``weight``: a ``QuantizedWeight`` (dense kernel) or a ``SparseInt8Weight`` (a pruned
    weight in 4-channel blocks: the sparse INT8 kernel, same results)."""

    def __init__(self, weight, bias, stride, padding, dilation, in_scale, in_zero_point,
                 out_scale=None, out_zero_point=None, activation=None, in_dtype=torch.uint8,
                 out_dtype=torch.uint8):
        super().__init__(weight, bias, in_scale, in_zero_point, out_scale, out_zero_point,
                         activation, in_dtype, out_dtype)
        if len(self.weight_shape) != 4:
            raise ValueError("QuantConv2d needs a conv weight [OC, C/groups, KH, KW]")
        self.stride, self.padding, self.dilation = stride, padding, dilation
        # A fused residual add (see fuse_residual_add): the residual's qparams, or None.
        self.residual_scale: Optional[float] = None
        self.residual_zero_point: Optional[int] = None
        self.residual_dtype = torch.uint8
        self.fused_add: Optional[str] = None  # the add's name in the source model, if known
        self.conv_out_qparams: Optional[tuple] = None
        self._call_args: dict = {}  # input shape -> checked op arguments (see forward)

    def __getstate__(self):
        state = super().__getstate__() if hasattr(super(), "__getstate__") else \
            self.__dict__.copy()
        state = dict(state)
        state["_call_args"] = {}  # a per-process cache, not part of the model
        return state

    def __setstate__(self, state):
        # models saved before residual adds were fused have no residual attributes
        state.setdefault("residual_scale", None)
        state.setdefault("residual_zero_point", None)
        state.setdefault("residual_dtype", torch.uint8)
        state.setdefault("fused_add", None)
        state.setdefault("conv_out_qparams", None)
        super().__setstate__(state)

    @property
    def weight_shape(self) -> tuple:
        return tuple(self.weight.shape if self.sparse else self.weight.int_weight.shape)

    @property
    def groups(self) -> int:
        return self.weight.groups

    def fuse_residual_add(self, residual_scale: float, residual_zero_point: int,
                          out_scale: float, out_zero_point: int, relu: bool,
                          residual_dtype: torch.dtype = torch.uint8,
                          add_name: Optional[str] = None) -> "QuantConv2d":
        """Make this conv compute ``relu?(conv(x) + dequantize(residual))`` in its epilogue
        (ResNet's residual add, one pass instead of a conv output and an add): forward then
        takes ``(x, residual)``, residual codes with (residual_scale, residual_zero_point),
        and the output has the add's qparams. The conv must have no activation of its own."""
        if self.activation is not None:
            raise ValueError("a conv with its own activation cannot take a residual add")
        if self.out_dtype == torch.float32:
            raise ValueError("a residual add is fused into a conv with int8/uint8 output")
        _check_qparams(residual_scale, residual_zero_point, residual_dtype, "residual")
        _check_qparams(out_scale, out_zero_point, self.out_dtype, "output")
        self.residual_scale, self.residual_zero_point = residual_scale, residual_zero_point
        self.residual_dtype, self.fused_add = residual_dtype, add_name
        # the conv's own output qparams, which ONNX export uses to write the standard QDQ form
        # (conv → Q → DQ → Add) that runtimes fuse into integer kernels
        self.conv_out_qparams = (self.out_scale, self.out_zero_point)
        self.out_scale, self.out_zero_point = out_scale, out_zero_point
        self.activation = "relu" if relu else None
        self._relu, self._clamp_max = _activation_clamp(self.activation)
        self._call_args = {}
        return self

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        if (residual is None) != (self.residual_scale is None):
            raise ValueError("this QuantConv2d takes a residual (fuse_residual_add)"
                             if residual is None else
                             "this QuantConv2d has no fused residual add: call it with x only")
        # Fast path for plain eager inference: the geometry and epilogue arguments of an input
        # shape are checked once (by the public op) and reused; this saves ~10 us of Python
        # per call, which is a good part of a small layer's time. (CPU only: CUDA inputs take
        # the public op, which picks the weight's per-device operands.)
        if (type(x) is torch.Tensor and x.device.type == "cpu" and x.dtype == self.in_dtype
                and x.dim() == 4
                and not x.requires_grad and not torch.compiler.is_compiling()
                and x.is_contiguous(memory_format=torch.channels_last)
                and (residual is None or (
                    type(residual) is torch.Tensor and residual.dtype == self.residual_dtype
                    and residual.is_contiguous(memory_format=torch.channels_last)))):
            args = self._call_args.get(x.shape)
            if args is not None:
                w = self.weight
                res = (residual, self.residual_scale, self.residual_zero_point) \
                    if residual is not None else ()
                if self.sparse:
                    return _sparse_quantized_conv2d_impl(x, w.row_ptr, w.block_k, w.values,
                                                         w.col_sums, *args, *res)
                isa, data, col_sums = w.conv_operand()
                return _quantized_conv2d_impl(x, data, col_sums, isa, *args, *res)
        op = sparse_quantized_conv2d if self.sparse else quantized_conv2d
        kwargs = self._out_kwargs()
        if residual is not None:
            if residual.dtype != self.residual_dtype:
                raise TypeError(f"residual must be {self.residual_dtype}, got {residual.dtype}")
            kwargs.update(residual=residual, residual_scale=self.residual_scale,
                          residual_zero_point=self.residual_zero_point)
        out = op(x, self.in_scale, self.in_zero_point, self.weight, self.bias, self.stride,
                 self.padding, self.dilation, **kwargs)
        if type(x) is torch.Tensor and x.dim() == 4:
            self._remember(x)
        return out

    def _remember(self, x: torch.Tensor) -> None:
        self._call_args[x.shape] = tuple(_conv_args(
            x, self.in_scale, self.in_zero_point, self.weight_shape, self.weight.scale,
            self.groups, self.bias, self.stride, self.padding, self.dilation,
            **self._out_kwargs()))

    def extra_repr(self) -> str:
        oc, cg, kh, kw = self.weight_shape
        sparse = f", sparse (density {self.weight.density:.2f})" if self.sparse else ""
        residual = "" if self.residual_scale is None else (
            f", + residual (scale={self.residual_scale:.4g}, "
            f"zero_point={self.residual_zero_point})")
        return (f"{cg * self.groups}, {oc}, kernel_size=({kh}, {kw}), "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"groups={self.groups}, {self._qparams_repr()}{sparse}{residual}")


class QuantLinear(_QuantLayer):
    """INT8 Linear with the requantization epilogue fused; float32 out when it ends the INT8
    chain (the classifier), uint8 when another INT8 layer follows."""

    def __init__(self, weight: QuantizedWeight, bias, in_scale, in_zero_point, out_scale=None,
                 out_zero_point=None, activation=None, in_dtype=torch.uint8,
                 out_dtype=torch.uint8):
        super().__init__(weight, bias, in_scale, in_zero_point, out_scale, out_zero_point,
                         activation, in_dtype, out_dtype)
        if not isinstance(weight, QuantizedWeight) or weight.int_weight.dim() != 2:
            raise ValueError("QuantLinear needs a dense linear QuantizedWeight [N, K]")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return quantized_linear(x, self.in_scale, self.in_zero_point, self.weight, self.bias,
                                **self._out_kwargs())

    def extra_repr(self) -> str:
        n, k = self.weight.int_weight.shape
        return f"{k}, {n}, {self._qparams_repr()}"


class Quantize(torch.nn.Module):
    """float → codes: clamp(round_half_even(x / scale) + zero_point); 4-D out channels_last."""

    def __init__(self, scale: float, zero_point: int, dtype: torch.dtype = torch.uint8):
        super().__init__()
        _check_qparams(scale, zero_point, dtype, "Quantize")
        self.scale, self.zero_point, self.dtype = scale, zero_point, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float32:
            raise TypeError(f"Quantize expects a float32 input, got {x.dtype}")
        # one native pass (the NCHW -> NHWC transpose fused); the same codes as
        # pyfastcnn.quantization.quantize
        return quantize_per_tensor(x, self.scale, self.zero_point, self.dtype,
                                   torch.channels_last if x.dim() == 4 else
                                   torch.contiguous_format)

    def extra_repr(self) -> str:
        return f"scale={self.scale:.4g}, zero_point={self.zero_point}, dtype={self.dtype}"


class DeQuantize(torch.nn.Module):
    """codes → float32: (q − zero_point) · scale."""

    def __init__(self, scale: float, zero_point: int):
        super().__init__()
        self.scale, self.zero_point = scale, zero_point

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        if q.dtype not in (torch.uint8, torch.int8):
            raise TypeError(f"DeQuantize expects a uint8/int8 input, got {q.dtype}")
        return dequantize(q, self.scale, self.zero_point)

    def extra_repr(self) -> str:
        return f"scale={self.scale:.4g}, zero_point={self.zero_point}"


class QuantAdd(torch.nn.Module):
    """Residual add of two quantized tensors, optional ReLU, requantized to the output params:
    out = quantize(relu?(dequantize(a) + dequantize(b))), one native pass (``quantized_add``;
    float32 math, so a result can differ from the exact real sum's rounding by one code at
    ties)."""

    def __init__(self, a_scale: float, a_zero_point: int, b_scale: float, b_zero_point: int,
                 out_scale: float, out_zero_point: int, relu: bool = False,
                 dtype: torch.dtype = torch.uint8):
        super().__init__()
        for what, (s, z) in (("a", (a_scale, a_zero_point)), ("b", (b_scale, b_zero_point)),
                             ("output", (out_scale, out_zero_point))):
            _check_qparams(s, z, dtype, what)
        self.a_scale, self.a_zero_point = a_scale, a_zero_point
        self.b_scale, self.b_zero_point = b_scale, b_zero_point
        self.out_scale, self.out_zero_point = out_scale, out_zero_point
        self.relu, self.dtype = relu, dtype


    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        for name, t in (("a", a), ("b", b)):
            if t.dtype != self.dtype:
                raise TypeError(f"QuantAdd input {name} must be {self.dtype}, got {t.dtype}")
        if a.shape != b.shape:
            raise ValueError(f"QuantAdd inputs differ in shape: {tuple(a.shape)} vs "
                             f"{tuple(b.shape)}")
        return quantized_add(a, self.a_scale, self.a_zero_point, b, self.b_scale,
                             self.b_zero_point, self.out_scale, self.out_zero_point, self.relu)

    def extra_repr(self) -> str:
        return (f"out=(scale={self.out_scale:.4g}, zero_point={self.out_zero_point}), "
                f"relu={self.relu}")


def _plain_codes(q: object) -> bool:
    """Whether the pooling kernels can take q straight (plain eager inference on 4-D
    channels_last codes); else the public op checks it and explains."""
    return (type(q) is torch.Tensor and q.dtype in _CODES and q.dim() == 4
            and not q.requires_grad and q.is_contiguous(memory_format=torch.channels_last)
            and not torch.compiler.is_compiling())


def _as_nhwc(q: torch.Tensor) -> torch.Tensor:
    """4-D codes in another layout become channels_last (a copy)."""
    if isinstance(q, torch.Tensor) and q.dim() == 4 and not q.is_contiguous(
            memory_format=torch.channels_last):
        return q.contiguous(memory_format=torch.channels_last)
    return q


class QuantMaxPool2d(torch.nn.Module):
    """Max pooling on quantized codes (max commutes with the monotonic dequantization, so the
    scale and zero point pass through): ``quantized_max_pool2d``, one native pass over
    channels_last uint8/int8 codes with ``F.max_pool2d``'s semantics (ceil_mode, dilation and
    padding included; padding never wins). Codes in another layout are made channels_last
    first; a 3-D [C, H, W] input is pooled as a batch of one."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        super().__init__()
        pair = torch.nn.modules.utils._pair
        self.kernel_size, self.padding, self.dilation = (pair(kernel_size), pair(padding),
                                                         pair(dilation))
        self.stride = self.kernel_size if stride is None else pair(stride)
        self.ceil_mode = ceil_mode
        check_max_pool_args(self.kernel_size, self.stride, self.padding, self.dilation,
                            self.ceil_mode)

    @classmethod
    def from_float(cls, pool: torch.nn.MaxPool2d) -> "QuantMaxPool2d":
        if pool.return_indices:
            raise ValueError("max pooling with return_indices=True has no quantized form")
        return cls(pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        args = (list(self.kernel_size), list(self.stride), list(self.padding),
                list(self.dilation), self.ceil_mode)
        if _plain_codes(q):  # the geometry was checked at construction
            return _max_pool_impl(q, *args)  # (and again in C++)
        if isinstance(q, torch.Tensor) and q.dim() == 3:
            return self.forward(q.unsqueeze(0)).squeeze(0)
        return quantized_max_pool2d(_as_nhwc(q), *args)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class QuantAdaptiveAvgPool2d(torch.nn.Module):
    """Adaptive average pooling on quantized codes, scale and zero point kept: each output code
    is the mean of its window's codes rounded half to even (``quantized_adaptive_avg_pool2d``:
    integer sums, exact rounding; PyTorch's quantized adaptive_avg_pool2d computes the same up
    to its float rounding at ties). ``output_size`` as for ``nn.AdaptiveAvgPool2d`` (1: global
    average pooling, the classifier head of ResNets). Codes in another layout are made
    channels_last first; a 3-D [C, H, W] input is pooled as a batch of one."""

    def __init__(self, output_size):
        super().__init__()
        adaptive_output_size((1, 1, 1, 1), output_size)  # checks it
        self.output_size = output_size

    @classmethod
    def from_float(cls, pool: torch.nn.AdaptiveAvgPool2d) -> "QuantAdaptiveAvgPool2d":
        return cls(pool.output_size)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        if _plain_codes(q):
            size = self.output_size
            if type(size) is not int:
                size = adaptive_output_size(q.shape, size)
            return _adaptive_avg_impl(q, [size, size] if type(size) is int else list(size))
        if isinstance(q, torch.Tensor) and q.dim() == 3:
            return self.forward(q.unsqueeze(0)).squeeze(0)
        return quantized_adaptive_avg_pool2d(_as_nhwc(q), self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"
