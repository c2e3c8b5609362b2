"""INT8: packed weights, symmetric weight quantization, quantized linear and conv.

Math (``acc`` is an exact integer sum, int32):
    acc[m, n] = sum_k (x[m, k] - x_zero_point) * w_int[n, k]
    y[m, n]   = clamp(acc * (x_scale * w_scale[n]) + bias[n] [+ residual term], lo, hi)
                lo = 0 with relu=True, else -inf; hi = clamp_max (default inf); residual
                term (conv ``residual=``): residual_scale * (r - residual_zero_point)
    out       = y (float32)                                for out_dtype=float32
              = saturate(round_half_even(y / out_scale) + out_zero_point)  for int8/uint8
For int8/uint8 output the kernels evaluate y / out_scale + out_zero_point in float32 as one
multiply-add in output units (scale, bias, clamp bounds and residual scale pre-divided by
out_scale, the zero point added to bias and bounds): within one step of the float64 result.
Weights are symmetric (zero point 0), per output channel or per tensor.

CUDA tensors run the CUDA kernels (ops/cuda_int8.py), registered as the "cuda" kernels of the
same custom ops, with the same math; weights are uploaded once per device and cached.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Union

import torch

from .. import _native
from . import cuda_int8
from ._checks import IntPair, check_tensor, check_vector, conv_geometry, conv_output

_OUT_KINDS = {torch.int32: 0, torch.float32: 1, torch.int8: 2, torch.uint8: 3}
_ZERO_POINT_RANGE = {torch.int8: (-128, 127), torch.uint8: (0, 255)}


@torch.compiler.assume_constant_result
def _current_isa() -> str:
    """The INT8 kernel level. Compiled graphs keep the level they were traced with."""
    return _native.C.kernel_isa("int8_gemm")


def _aligned_empty(nbytes: int) -> torch.Tensor:
    """uint8 buffer whose data is 64-byte aligned (the packed kernels load it aligned)."""
    raw = torch.empty(nbytes + 64, dtype=torch.uint8)
    offset = (-raw.data_ptr()) % 64
    return raw[offset : offset + nbytes]


# Channels of the depthwise weight are padded to a multiple of this (kInt8DepthwiseCBlock).
_DEPTHWISE_C_BLOCK = 64
# The `isa` argument of the quantized_conv2d op (and layout of the native int8_conv2d) for a
# depthwise weight in the depthwise kernels' layout (see QuantizedWeight._depthwise_operand).
_DEPTHWISE_LAYOUT = "depthwise"


class PackedInt8Weight:
    """A constant int8 operand B, [K, N] (or [G, K, N]: one block per group), packed once.

    The packed layout belongs to the ISA level that made it; on another level (``set_isa``,
    or after loading on another machine) it is repacked once and cached. Pickling keeps only
    the int8 values, so saved files do not depend on the ISA. The int8 values are kept on the
    CPU; each CUDA device gets its own operand (``cuda_operand``), made at construction for
    the device of a CUDA ``weight`` (which is then packed for the CPU only on first CPU use).
    """

    def __init__(self, weight: torch.Tensor):
        check_tensor("weight", weight, torch.int8, devices=("cpu", "cuda"))
        if weight.dim() == 2:
            weight = weight.unsqueeze(0)
        if weight.dim() != 3 or min(weight.shape) < 1:
            raise ValueError(
                f"weight must be [K, N] or [G, K, N] and non-empty, got {tuple(weight.shape)}"
            )
        device = weight.device
        self.weight = weight.detach().cpu().contiguous()
        self._by_isa: Dict[str, tuple] = {}
        self._by_device: Dict[torch.device, tuple] = {}
        # Now, not inside a later traced call (torch.compile cannot trace it).
        if device.type == "cuda":
            self.cuda_operand(device)
        else:
            self.packed()

    @property
    def groups(self) -> int:
        return self.weight.shape[0]

    @property
    def K(self) -> int:
        return self.weight.shape[1]

    @property
    def N(self) -> int:
        return self.weight.shape[2]

    def packed(self) -> tuple:
        """(isa, data, col_sums) for the current ISA level, packing on first use."""
        isa = _current_isa()
        if isa not in self._by_isa:
            block = _native.C.int8_packed_bytes(isa, self.K, self.N)
            data = _aligned_empty(block * self.groups)
            col_sums = torch.empty(self.groups * self.N, dtype=torch.int32)
            for g in range(self.groups):
                _native.C.int8_pack(
                    isa,
                    _native.tensor_arg(self.weight[g]),
                    _native.tensor_arg(data[g * block : (g + 1) * block]),
                    _native.tensor_arg(col_sums[g * self.N : (g + 1) * self.N]),
                )
            self._by_isa[isa] = (isa, data, col_sums)
        return self._by_isa[isa]

    def cuda_operand(self, device: torch.device) -> tuple:
        """(layout, B^T int8 [G, N, Kp] on `device`, col_sums int32 [G * N] on `device`),
        uploaded on first use (see ops/cuda_int8.py)."""
        if device not in self._by_device:
            col_sums = self.weight.sum(1, dtype=torch.int32).reshape(-1)
            self._by_device[device] = (
                cuda_int8.LAYOUT_GEMM,
                cuda_int8.gemm_operand(self.weight, device),
                col_sums.to(device),
            )
        return self._by_device[device]

    def __getstate__(self):
        return {"weight": self.weight}

    def __setstate__(self, state):
        self.__init__(state["weight"])

    def __repr__(self) -> str:
        shape = (self.K, self.N) if self.groups == 1 else (self.groups, self.K, self.N)
        where = list(self._by_isa) + [str(d) for d in self._by_device]
        return f"PackedInt8Weight(shape={shape}, packed_for={where})"


def pack_int8_weight(b: torch.Tensor) -> PackedInt8Weight:
    """Pack the constant int8 operand ``b`` [K, N] of ``int8_gemm`` once, for reuse (b may be a
    CPU or CUDA tensor; the packed weight serves both, uploading once per CUDA device)."""
    check_tensor("b", b, torch.int8, 2, devices=("cpu", "cuda"))
    return PackedInt8Weight(b)


@dataclass
class QuantizedWeight:
    """A symmetric int8 weight with its scales, packed for the INT8 kernels.

    Attributes:
        int_weight: int8, the layer's layout: Linear [N, K]; Conv [OC, C/groups, KH, KW].
        scale: float32 [OC] (per tensor: all equal).
        groups: conv groups (1 for Linear).
    """

    int_weight: torch.Tensor
    scale: torch.Tensor
    groups: int = 1
    _packed: Optional[PackedInt8Weight] = field(default=None, repr=False, compare=False)
    _depthwise: Optional[tuple] = field(default=None, repr=False, compare=False)
    _cuda: Dict[torch.device, tuple] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        check_tensor("int_weight", self.int_weight, torch.int8)
        if self.int_weight.dim() not in (2, 4):
            raise ValueError("int_weight must be 2-D (linear) or 4-D (conv)")
        oc = self.int_weight.shape[0]
        check_vector("scale", self.scale, oc)
        if not bool((self.scale > 0).all()) or not bool(torch.isfinite(self.scale).all()):
            raise ValueError("scale must be positive and finite")
        if self.groups < 1 or oc % self.groups:
            raise ValueError(f"groups={self.groups} must divide the {oc} output channels")
        if self.int_weight.dim() == 2 and self.groups != 1:
            raise ValueError("a linear weight has groups=1")
        # Packed now, not inside a later traced call; a depthwise weight only needs the
        # depthwise kernels' layout (the GEMM form of a 960-channel one would be 1.1 MB).
        if self.is_depthwise:
            if self._depthwise is None:
                self._depthwise = self._depthwise_operand()
        elif self._packed is None:
            self._packed = PackedInt8Weight(self._gemm_operand())

    @property
    def is_depthwise(self) -> bool:
        """A conv weight with groups == in channels == out channels (one filter per channel)."""
        w = self.int_weight
        return w.dim() == 4 and w.shape[1] == 1 and self.groups == w.shape[0]

    @property
    def out_channels(self) -> int:
        return self.int_weight.shape[0]

    def _gemm_operand(self) -> torch.Tensor:
        """B as the kernels want it: [G, K, N_per_group]. Conv rows are ordered (kh, kw, c),
        with the channels of each tap padded with zeros to a multiple of 4 (the kernels read
        activations four bytes at a time)."""
        w = self.int_weight
        if w.dim() == 2:
            return w.t().contiguous().unsqueeze(0)
        oc, cg, kh, kw = w.shape
        g, cg4 = self.groups, (cg + 3) // 4 * 4
        w = torch.nn.functional.pad(w, (0, 0, 0, 0, 0, cg4 - cg))
        return (
            w.reshape(g, oc // g, cg4, kh, kw)
            .permute(0, 3, 4, 2, 1)
            .reshape(g, kh * kw * cg4, oc // g)
            .contiguous()
        )

    def conv_operand(self) -> tuple:
        """(layout, data, col_sums): the arguments of the quantized_conv2d op for this weight,
        the depthwise kernels' own layout for a depthwise weight, else the packed GEMM operand
        of the current ISA level."""
        if self._depthwise is not None:
            return (_DEPTHWISE_LAYOUT,) + self._depthwise
        return self._packed.packed()

    def _depthwise_operand(self) -> tuple:
        """The depthwise kernels' weight, ISA-independent: (int32 [KH*KW, Cp] with row
        kh * KW + kw holding each channel's tap as the int16 pair (w, 0), i.e. w & 0xFFFF, zero
        past C (Cp = C rounded up to 64); and the per-channel weight sums, int32 [C])."""
        c = self.int_weight.shape[0]
        taps = self.int_weight.reshape(c, -1).to(torch.int32)
        cp = (c + _DEPTHWISE_C_BLOCK - 1) // _DEPTHWISE_C_BLOCK * _DEPTHWISE_C_BLOCK
        weight = torch.nn.functional.pad(taps.t() & 0xFFFF, (0, cp - c)).contiguous()
        return weight, taps.sum(1, dtype=torch.int32)

    def cuda_operand(self, device: torch.device) -> tuple:
        """(layout, data, col_sums, scale) on a CUDA `device`, uploaded once: the weight in the
        CUDA kernels' layout (ops/cuda_int8.py), its int32 per-channel sums, its float32
        scales."""
        if device not in self._cuda:
            w = self.int_weight
            col_sums = w.reshape(w.shape[0], -1).sum(1, dtype=torch.int32)
            if w.dim() == 2:
                layout = cuda_int8.LAYOUT_GEMM
                data = cuda_int8.gemm_operand(w.t().unsqueeze(0), device)[0]
            else:
                direct = cuda_int8.conv_uses_direct(w.shape[1], self.groups)
                layout = cuda_int8.LAYOUT_CONV_DIRECT if direct else cuda_int8.LAYOUT_CONV_IGEMM
                data = cuda_int8.conv_operand(w, direct, device)
            self._cuda[device] = (layout, data, col_sums.to(device), self.scale.to(device))
        return self._cuda[device]

    def dequantize(self) -> torch.Tensor:
        shape = (-1,) + (1,) * (self.int_weight.dim() - 1)
        return self.int_weight.float() * self.scale.view(shape)

    def __getstate__(self):
        state = {"scale": self.scale, "groups": self.groups}
        w = self.int_weight
        nonzero = w != 0
        # A pruned weight saves as a bit mask of its non-zeros plus their values (1/8 + density
        # bytes per weight), so pruned models are small on disk whichever kernel runs them.
        if int(nonzero.sum()) <= 0.625 * w.numel():
            state["shape"] = tuple(w.shape)
            state["nonzero_bits"] = _pack_bits(nonzero.flatten())
            state["nonzero_values"] = w[nonzero].clone()
        else:
            state["int_weight"] = w
        return state

    def __setstate__(self, state):
        w = state.get("int_weight")
        if w is None:
            shape = tuple(state["shape"])
            mask = _unpack_bits(state["nonzero_bits"], math.prod(shape))
            w = torch.zeros(mask.numel(), dtype=torch.int8)
            w[mask] = state["nonzero_values"]
            w = w.view(shape)
        self.__init__(w, state["scale"], state["groups"])


_BIT_WEIGHTS = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)


def _pack_bits(flags: torch.Tensor) -> torch.Tensor:
    """A bool vector as uint8, 8 flags per byte (bit i of byte j: flag 8 j + i)."""
    padded = torch.zeros((flags.numel() + 7) // 8 * 8, dtype=torch.uint8)
    padded[:flags.numel()] = flags.to(torch.uint8)
    return (padded.view(-1, 8) * _BIT_WEIGHTS).sum(1, dtype=torch.uint8)


def _unpack_bits(bits: torch.Tensor, n: int) -> torch.Tensor:
    """The first n flags of _pack_bits' bytes, as a bool vector."""
    return ((bits.view(-1, 1) & _BIT_WEIGHTS) != 0).flatten()[:n]


def quantize_weight(
    weight: torch.Tensor, per_channel: bool = True, groups: int = 1
) -> QuantizedWeight:
    """Symmetric int8 quantization of a float Linear [N, K] or Conv [OC, C/g, KH, KW] weight.

    scale = max|w| / 127 per output channel (or over the whole tensor), q = round(w / scale).
    """
    check_tensor("weight", weight, torch.float32)
    if weight.dim() not in (2, 4):
        raise ValueError(f"weight must be 2-D or 4-D, got shape {tuple(weight.shape)}")
    w = weight.detach()
    if per_channel:
        amax = w.abs().reshape(w.shape[0], -1).amax(dim=1)
    else:
        amax = w.abs().amax().expand(w.shape[0])
    scale = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax)).float().contiguous()
    shape = (-1,) + (1,) * (w.dim() - 1)
    q = torch.clamp(torch.round(w / scale.view(shape)), -128, 127).to(torch.int8)
    return QuantizedWeight(q, scale, groups)


# ---- custom ops (registered with fake implementations for torch.compile) --------------------


def _int8_gemm_packed_impl(
    a: torch.Tensor, data: torch.Tensor, col_sums: torch.Tensor, isa: str, n: int
) -> torch.Tensor:
    out = torch.empty((a.shape[0], n), dtype=torch.int32)
    _native.C.int8_linear(
        _native.tensor_arg(a),
        isa,
        _native.tensor_arg(data),
        _native.tensor_arg(col_sums),
        a.shape[1],
        n,
        None,
        None,
        0,
        1.0,
        0,
        0.0,
        0.0,
        1.0,
        0,
        _native.tensor_arg(out),
    )
    return out


_int8_gemm_packed = torch.library.custom_op(
    "pyfastcnn::int8_gemm_packed", mutates_args=(), device_types="cpu"
)(_int8_gemm_packed_impl)


@_int8_gemm_packed.register_fake
def _(a, data, col_sums, isa, n):
    return a.new_empty((a.shape[0], n), dtype=torch.int32)


_int8_gemm_packed.register_kernel("cuda")(cuda_int8.int8_gemm_packed_impl)


def _quantized_linear_impl(
    x: torch.Tensor,
    data: torch.Tensor,
    col_sums: torch.Tensor,
    isa: str,
    n: int,
    w_scale: torch.Tensor,
    bias: Optional[torch.Tensor],
    x_scale: float,
    x_zero_point: int,
    out_kind: int,
    clamp_min: float,
    clamp_max: float,
    out_scale: float,
    out_zero_point: int,
) -> torch.Tensor:
    dtype = {v: k for k, v in _OUT_KINDS.items()}[out_kind]
    out = torch.empty((x.shape[0], n), dtype=dtype)
    _native.C.int8_linear(
        _native.tensor_arg(x),
        isa,
        _native.tensor_arg(data),
        _native.tensor_arg(col_sums),
        x.shape[1],
        n,
        _native.tensor_arg(w_scale),
        _native.optional_arg(bias),
        x_zero_point,
        x_scale,
        out_kind,
        clamp_min,
        clamp_max,
        out_scale,
        out_zero_point,
        _native.tensor_arg(out),
    )
    return out


_quantized_linear = torch.library.custom_op(
    "pyfastcnn::quantized_linear", mutates_args=(), device_types="cpu"
)(_quantized_linear_impl)


@_quantized_linear.register_fake
def _(
    x,
    data,
    col_sums,
    isa,
    n,
    w_scale,
    bias,
    x_scale,
    x_zero_point,
    out_kind,
    clamp_min,
    clamp_max,
    out_scale,
    out_zero_point,
):
    dtype = {v: k for k, v in _OUT_KINDS.items()}[out_kind]
    return x.new_empty((x.shape[0], n), dtype=dtype)


_quantized_linear.register_kernel("cuda")(cuda_int8.quantized_linear_impl)


def _quantized_conv2d_impl(
    x: torch.Tensor,
    data: torch.Tensor,
    col_sums: torch.Tensor,
    isa: str,
    weight_shape: List[int],
    w_scale: torch.Tensor,
    bias: Optional[torch.Tensor],
    stride: List[int],
    padding: List[int],
    dilation: List[int],
    groups: int,
    output_size: List[int],
    x_scale: float,
    x_zero_point: int,
    out_kind: int,
    clamp_min: float,
    clamp_max: float,
    out_scale: float,
    out_zero_point: int,
    residual: Optional[torch.Tensor] = None,
    residual_scale: float = 1.0,
    residual_zero_point: int = 0,
) -> torch.Tensor:
    dtype = {v: k for k, v in _OUT_KINDS.items()}[out_kind]
    out = conv_output(x, weight_shape[0], output_size, dtype, torch.channels_last)
    _native.C.int8_conv2d(
        _native.tensor_arg(x),
        isa,
        _native.tensor_arg(data),
        _native.tensor_arg(col_sums),
        weight_shape[1],
        weight_shape[2],
        weight_shape[3],
        _native.tensor_arg(w_scale),
        _native.optional_arg(bias),
        stride[0],
        stride[1],
        padding[0],
        padding[1],
        dilation[0],
        dilation[1],
        groups,
        x_zero_point,
        x_scale,
        out_kind,
        clamp_min,
        clamp_max,
        out_scale,
        out_zero_point,
        _native.tensor_arg(out),
        _native.optional_arg(residual),
        residual_scale,
        residual_zero_point,
    )
    return out


_quantized_conv2d = torch.library.custom_op(
    "pyfastcnn::quantized_conv2d", mutates_args=(), device_types="cpu"
)(_quantized_conv2d_impl)


@_quantized_conv2d.register_fake
def _(
    x,
    data,
    col_sums,
    isa,
    weight_shape,
    w_scale,
    bias,
    stride,
    padding,
    dilation,
    groups,
    output_size,
    x_scale,
    x_zero_point,
    out_kind,
    clamp_min,
    clamp_max,
    out_scale,
    out_zero_point,
    residual=None,
    residual_scale=1.0,
    residual_zero_point=0,
):
    dtype = {v: k for k, v in _OUT_KINDS.items()}[out_kind]
    return conv_output(x, weight_shape[0], output_size, dtype, torch.channels_last)


_quantized_conv2d.register_kernel("cuda")(cuda_int8.quantized_conv2d_impl)


# ---- public functions ---------------------------------------------------------------------


def _check_activation(name: str, x: object, x_scale: float, x_zero_point: int,
                      devices: tuple = ("cpu",)) -> None:
    check_tensor(name, x, (torch.uint8, torch.int8), devices=devices)
    if isinstance(x_scale, bool) or not isinstance(x_scale, (int, float)):
        raise TypeError(f"x_scale must be a float, got {type(x_scale).__name__}")
    if not (x_scale > 0 and math.isfinite(x_scale)):
        raise ValueError(f"x_scale must be positive and finite, got {x_scale}")
    _check_zero_point("x_zero_point", x_zero_point, x.dtype)


def _check_zero_point(name: str, zp: int, dtype: torch.dtype) -> None:
    if isinstance(zp, bool) or not isinstance(zp, int):
        raise TypeError(f"{name} must be an int, got {type(zp).__name__}")
    lo, hi = _ZERO_POINT_RANGE[dtype]
    if not lo <= zp <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}] for {dtype}, got {zp}")


def _output_params(out_dtype, out_scale, out_zero_point, relu, clamp_max=None) -> tuple:
    if out_dtype not in (torch.float32, torch.int8, torch.uint8):
        raise TypeError(
            f"out_dtype must be torch.float32, torch.int8 or torch.uint8, got {out_dtype}"
        )
    if not isinstance(relu, bool):
        raise TypeError(f"relu must be a bool, got {type(relu).__name__}")
    if out_dtype == torch.float32:
        if out_scale is not None or out_zero_point is not None:
            raise ValueError("out_scale/out_zero_point apply only to int8/uint8 output")
        out_scale, out_zero_point = 1.0, 0
    else:
        if out_scale is None:
            raise ValueError(f"out_scale is required for {out_dtype} output")
        if isinstance(out_scale, bool) or not isinstance(out_scale, (int, float)):
            raise TypeError(f"out_scale must be a float, got {type(out_scale).__name__}")
        if not (out_scale > 0 and math.isfinite(out_scale)):
            raise ValueError(f"out_scale must be positive and finite, got {out_scale}")
        out_zero_point = 0 if out_zero_point is None else out_zero_point
        _check_zero_point("out_zero_point", out_zero_point, out_dtype)
    clamp_min = 0.0 if relu else -math.inf
    if clamp_max is None:
        clamp_max = math.inf
    elif isinstance(clamp_max, bool) or not isinstance(clamp_max, (int, float)):
        raise TypeError(f"clamp_max must be a float or None, got {type(clamp_max).__name__}")
    elif math.isnan(clamp_max) or clamp_max < clamp_min:
        raise ValueError(f"clamp_max must be >= {clamp_min}, got {clamp_max}")
    return _OUT_KINDS[out_dtype], clamp_min, float(clamp_max), float(out_scale), out_zero_point


def _residual_params(residual, residual_scale, residual_zero_point, x: torch.Tensor,
                     output_channels: int, output_size) -> tuple:
    """Checked (residual, scale, zero point) of a fused residual add: the codes, channels_last,
    shaped like the conv's output [N, OC, OH, OW], on x's device."""
    if residual is None:
        if residual_scale is not None or residual_zero_point is not None:
            raise ValueError("residual_scale/residual_zero_point need a residual")
        return None, 1.0, 0
    check_tensor("residual", residual, (torch.uint8, torch.int8), devices=("cpu", "cuda"))
    cuda_int8.check_same_device(x, residual=residual)
    shape = (x.shape[0], output_channels, *output_size)
    if tuple(residual.shape) != shape:
        raise ValueError(f"residual must have the output's shape {shape}, got "
                         f"{tuple(residual.shape)}")
    if residual_scale is None:
        raise ValueError("a residual needs residual_scale")
    if isinstance(residual_scale, bool) or not isinstance(residual_scale, (int, float)):
        raise TypeError(f"residual_scale must be a float, got {type(residual_scale).__name__}")
    if not (residual_scale > 0 and math.isfinite(residual_scale)):
        raise ValueError(f"residual_scale must be positive and finite, got {residual_scale}")
    residual_zero_point = 0 if residual_zero_point is None else residual_zero_point
    _check_zero_point("residual_zero_point", residual_zero_point, residual.dtype)
    return (residual.contiguous(memory_format=torch.channels_last), float(residual_scale),
            residual_zero_point)


def _conv_args(x: torch.Tensor, x_scale, x_zero_point, weight_shape, w_scale: torch.Tensor,
               groups: int, bias, stride, padding, dilation, out_dtype=torch.float32,
               out_scale=None, out_zero_point=None, relu=False, clamp_max=None) -> list:
    """The checked arguments of the INT8 conv custom ops after their weight tensors, from
    ``weight_shape`` to ``out_zero_point`` (the dense and sparse ops share them; QuantConv2d
    caches them per input shape)."""
    _check_bias(bias, weight_shape[0], x)
    geo = conv_geometry(x.shape, weight_shape, stride, padding, dilation, groups)
    kind, lo, hi, o_scale, o_zp = _output_params(out_dtype, out_scale, out_zero_point, relu,
                                                   clamp_max)
    return [list(weight_shape), w_scale, bias, list(geo.stride), list(geo.padding),
            list(geo.dilation), groups, list(geo.output_size), float(x_scale), x_zero_point,
            kind, lo, hi, o_scale, o_zp]


def _check_bias(bias, n: int, x: torch.Tensor) -> None:
    """bias: None or float32 [n] on x's device."""
    if bias is None:
        return
    check_tensor("bias", bias, torch.float32, 1, devices=("cpu", "cuda"))
    cuda_int8.check_same_device(x, bias=bias)
    if bias.shape[0] != n:
        raise ValueError(f"bias must have {n} elements, got {bias.shape[0]}")


def _conv_call(op, impl, x, x_scale, x_zero_point, weight_tensors, weight_shape, weight, groups,
               bias, stride, padding, dilation, out_kwargs: dict, residual, residual_scale,
               residual_zero_point, devices: tuple = ("cpu",)) -> torch.Tensor:
    """Checks the arguments shared by quantized_conv2d and sparse_quantized_conv2d and runs
    ``op`` on ``x`` (channels_last), the weight's kernel tensors and the shared arguments.
    ``devices``: the device types ``op`` has kernels for; ``weight_tensors`` may be a callable
    of x's device returning them (CUDA operands are per device)."""
    _check_activation("x", x, x_scale, x_zero_point, devices)
    if x.dim() != 4:
        raise ValueError(f"x must be 4-D, got shape {tuple(x.shape)}")
    if groups is not None and groups != weight.groups:
        raise ValueError(f"groups={groups} does not match the weight's groups={weight.groups}")
    args = _conv_args(x, x_scale, x_zero_point, weight_shape, weight.scale, weight.groups, bias,
                      stride, padding, dilation, **out_kwargs)
    residual, r_scale, r_zp = _residual_params(residual, residual_scale, residual_zero_point,
                                               x, weight_shape[0], args[7])
    if callable(weight_tensors):
        weight_tensors = weight_tensors(x.device)
    if x.is_cuda:
        # w_scale (args[1]) as uploaded with the weight; the CUDA kernels read NHWC in place
        # when x is channels_last already (other layouts are converted once inside the op).
        layout, data, col_sums, scale = weight_tensors
        weight_tensors = (data, col_sums, layout)
        args[1] = scale
    else:
        x = x.contiguous(memory_format=torch.channels_last)
    return _native.run(op, impl, x, *weight_tensors, *args, residual, r_scale, r_zp)


def _check_weight(weight: object, dim: int, what: str) -> QuantizedWeight:
    if not isinstance(weight, QuantizedWeight):
        raise TypeError(
            f"weight must be a pyfastcnn.QuantizedWeight (see quantize_weight), got "
            f"{type(weight).__name__}"
        )
    if weight.int_weight.dim() != dim:
        raise ValueError(f"weight is not a {what} weight (shape {tuple(weight.int_weight.shape)})")
    return weight


def quantized_linear(
    x: torch.Tensor,
    x_scale: float,
    x_zero_point: int,
    weight: QuantizedWeight,
    bias: Optional[torch.Tensor] = None,
    *,
    out_dtype: torch.dtype = torch.float32,
    out_scale: Optional[float] = None,
    out_zero_point: Optional[int] = None,
    relu: bool = False,
    clamp_max: Optional[float] = None,
) -> torch.Tensor:
    """INT8 linear layer with the requantization epilogue fused (see the module docstring).

    Args:
        x: uint8 or int8 [..., K], quantized with (x_scale, x_zero_point); CPU or CUDA (the
            weight is uploaded to x's device once and cached).
        weight: ``quantize_weight(linear.weight)`` ([N, K]).
        bias: float32 [N] or None, on x's device.
        out_dtype: float32, or int8/uint8 with out_scale (and out_zero_point, default 0), so
            INT8 layers chain without a float round trip.
        relu: fuse ReLU.
        clamp_max: clamp y from above before the output conversion (6.0 with relu=True is
            ReLU6); None: no upper clamp.

    Returns:
        [..., N] of out_dtype.
    """
    _check_activation("x", x, x_scale, x_zero_point, ("cpu", "cuda"))
    weight = _check_weight(weight, 2, "linear")
    n, k = weight.int_weight.shape
    if x.dim() < 1 or x.shape[-1] != k:
        raise ValueError(f"x must have {k} features in its last dimension, got {tuple(x.shape)}")
    _check_bias(bias, n, x)
    kind, lo, hi, o_scale, o_zp = _output_params(out_dtype, out_scale, out_zero_point, relu,
                                                   clamp_max)
    if x.is_cuda:
        isa, data, col_sums, w_scale = weight.cuda_operand(x.device)
        impl = cuda_int8.quantized_linear_impl
    else:
        isa, data, col_sums = weight._packed.packed()
        w_scale, impl = weight.scale, _quantized_linear_impl
    x2 = x.reshape(-1, k)
    out = _native.run(
        _quantized_linear,
        impl,
        x2,
        data,
        col_sums,
        isa,
        n,
        w_scale,
        bias,
        float(x_scale),
        x_zero_point,
        kind,
        lo,
        hi,
        o_scale,
        o_zp,
    )
    return out.reshape(*x.shape[:-1], n)


def quantized_conv2d(
    x: torch.Tensor,
    x_scale: float,
    x_zero_point: int,
    weight: QuantizedWeight,
    bias: Optional[torch.Tensor] = None,
    stride: IntPair = 1,
    padding: Union[IntPair, str] = 0,
    dilation: IntPair = 1,
    groups: Optional[int] = None,
    *,
    out_dtype: torch.dtype = torch.float32,
    out_scale: Optional[float] = None,
    out_zero_point: Optional[int] = None,
    relu: bool = False,
    clamp_max: Optional[float] = None,
    residual: Optional[torch.Tensor] = None,
    residual_scale: Optional[float] = None,
    residual_zero_point: Optional[int] = None,
) -> torch.Tensor:
    """INT8 conv2d (F.conv2d geometry) with the requantization epilogue fused.

    Args:
        x: uint8 or int8 [N, C, H, W], CPU or CUDA; channels_last is the native layout (other
            layouts are converted once per call: keep activations channels_last between
            layers). On CUDA, bias and residual must be on x's device.
        weight: ``quantize_weight(conv.weight, groups=conv.groups)``.
        groups: defaults to weight.groups; if given it must match.
        residual: a fused residual add (ResNet's ``relu(conv(x) + identity)``): uint8/int8
            codes shaped like the output, quantized with (residual_scale,
            residual_zero_point); ``residual_scale * (residual - residual_zero_point)`` is added
            to y before ReLU/clamp and the output conversion.
        Others: as ``quantized_linear``.

    Returns:
        [N, OC, OH, OW] of out_dtype, channels_last.
    """
    weight = _check_weight(weight, 4, "conv")
    out_kwargs = dict(out_dtype=out_dtype, out_scale=out_scale, out_zero_point=out_zero_point,
                      relu=relu, clamp_max=clamp_max)
    if isinstance(x, torch.Tensor) and x.is_cuda:
        weight_tensors, impl = weight.cuda_operand, cuda_int8.quantized_conv2d_impl
    else:
        isa, data, col_sums = weight.conv_operand()
        weight_tensors, impl = (data, col_sums, isa), _quantized_conv2d_impl
    return _conv_call(_quantized_conv2d, impl, x, x_scale, x_zero_point, weight_tensors,
                      tuple(weight.int_weight.shape), weight, groups, bias, stride, padding,
                      dilation, out_kwargs, residual, residual_scale, residual_zero_point,
                      devices=("cpu", "cuda"))
