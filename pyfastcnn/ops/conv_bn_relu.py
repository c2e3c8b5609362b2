"""pyfastcnn.conv_bn_relu: conv2d + eval-mode BatchNorm + ReLU as one conv pass."""

from __future__ import annotations

from typing import List, Optional, Tuple, Union

import torch

from .. import _native
from . import cuda_conv
from ._checks import (
    IntPair,
    check_conv_input,
    check_tensor,
    check_vector,
    conv_geometry,
    conv_output,
)


def fold_bn(
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    bn_weight: Optional[torch.Tensor],
    bn_bias: Optional[torch.Tensor],
    eps: float,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Conv weight and bias with eval-mode BN folded in (computed in float64, returned float32).

    w' = w * g / sqrt(var + eps);  b' = (b - mean) * g / sqrt(var + eps) + beta
    """
    scale = torch.rsqrt(running_var.double() + eps)
    if bn_weight is not None:
        scale = scale * bn_weight.double()
    shift = -running_mean.double() if bias is None else bias.double() - running_mean.double()
    folded_bias = shift * scale
    if bn_bias is not None:
        folded_bias = folded_bias + bn_bias.double()
    folded_weight = weight.double() * scale.view(-1, 1, 1, 1)
    return folded_weight.float().contiguous(), folded_bias.float().contiguous()


def _conv2d_bias_act_impl(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    stride: List[int],
    padding: List[int],
    dilation: List[int],
    groups: int,
    output_size: List[int],
    clamp_min: float,
    clamp_max: float,
) -> torch.Tensor:
    out = conv_output(input, weight.shape[0], output_size)
    _native.C.conv2d_dense(
        _native.tensor_arg(input),
        _native.tensor_arg(weight.contiguous()),
        _native.optional_arg(bias),
        stride[0],
        stride[1],
        padding[0],
        padding[1],
        dilation[0],
        dilation[1],
        groups,
        clamp_min,
        clamp_max,
        _native.tensor_arg(out),
    )
    return out


_conv2d_bias_act = torch.library.custom_op(
    "pyfastcnn::conv2d_bias_act", mutates_args=(), device_types="cpu"
)(_conv2d_bias_act_impl)


@_conv2d_bias_act.register_fake
def _(input, weight, bias, stride, padding, dilation, groups, output_size, clamp_min, clamp_max):
    return conv_output(input, weight.shape[0], output_size)


def _round_to_bf16_impl(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.bfloat16).float()


# The BF16 fallback's input rounding as an opaque op: inductor drops a to(bfloat16).float()
# pair as a no-op, which changed compiled results by ~1e-3 against eager.
_round_to_bf16 = torch.library.custom_op(
    "pyfastcnn::round_to_bf16", mutates_args=(), device_types="cpu"
)(_round_to_bf16_impl)


@_round_to_bf16.register_fake
def _(x):
    return torch.empty_like(x)


@torch.compiler.assume_constant_result
def _conv_kernel_isa(op: str) -> str:
    """ISA of the packed conv kernel of `op` ("scalar": none at this level)."""
    return _native.C.kernel_isa(op)


# dtype -> (kernel name for kernel_isa, packed size fn, pack fn, element dtype, bytes)
_PACKERS = {
    torch.float32: ("conv2d_dense", "conv2d_f32_packed_floats", "conv2d_f32_pack", torch.float32),
    torch.bfloat16: ("conv2d_bf16", "conv2d_bf16_packed_elems", "conv2d_bf16_pack",
                     torch.bfloat16),
}


class PackedConvWeight:
    """A float32 conv weight [OC, C/groups, KH, KW] packed once for the conv kernels.

    ``dtype=torch.bfloat16`` packs it as bfloat16 for the BF16 kernel (AVX-512 BF16). Repacked
    once per ISA level (``set_isa``, or loading on another machine); pickles as the float
    weight. ``packed()`` is None where the level has no packed kernel for this dtype.
    """

    def __init__(self, weight: torch.Tensor, groups: int = 1, dtype: torch.dtype = torch.float32):
        check_tensor("weight", weight, torch.float32, 4)
        if dtype not in _PACKERS:
            raise TypeError(f"dtype must be torch.float32 or torch.bfloat16, got {dtype}")
        self.weight = weight.detach().contiguous()
        self.groups = groups
        self.dtype = dtype
        self._by_isa: dict = {}
        self._fallback: Optional["PackedConvWeight"] = None
        if self.packed() is None and dtype == torch.bfloat16:  # now, not inside a traced call
            self.fallback()

    def fallback(self) -> "PackedConvWeight":
        """For a bfloat16 weight at a level without the BF16 kernel: the float32 packing of the
        weight rounded to bfloat16 (the same numerics on the FP32 kernel), made once."""
        if self._fallback is None:
            self._fallback = PackedConvWeight(self.weight.to(torch.bfloat16).float(), self.groups)
        return self._fallback

    def packed(self) -> Optional[Tuple[str, torch.Tensor]]:
        op, size_fn, pack_fn, elem = _PACKERS[self.dtype]
        isa = _conv_kernel_isa(op)
        if isa == "scalar":
            return None
        if isa not in self._by_isa:
            oc, cg, kh, kw = self.weight.shape
            count = getattr(_native.C, size_fn)(isa, oc, cg, kh, kw, self.groups)
            per_line = 64 // elem.itemsize  # elements per 64-byte line
            raw = torch.empty(count + per_line, dtype=elem)
            offset = ((-raw.data_ptr()) % 64) // elem.itemsize
            data = raw[offset:offset + count]
            getattr(_native.C, pack_fn)(isa, _native.tensor_arg(self.weight), self.groups,
                                        _native.tensor_arg(data))
            self._by_isa[isa] = (isa, data)
        return self._by_isa[isa]

    def __getstate__(self):
        return {"weight": self.weight, "groups": self.groups, "dtype": self.dtype}

    def __setstate__(self, state):
        self.__init__(state["weight"], state["groups"], state.get("dtype", torch.float32))


def _conv2d_bias_act_packed_impl(
    input: torch.Tensor,
    packed: torch.Tensor,
    isa: str,
    weight_shape: List[int],
    bias: Optional[torch.Tensor],
    stride: List[int],
    padding: List[int],
    dilation: List[int],
    groups: int,
    output_size: List[int],
    clamp_min: float,
    clamp_max: float,
) -> torch.Tensor:
    out = conv_output(input, weight_shape[0], output_size)
    native = (_native.C.conv2d_bf16_packed if packed.dtype == torch.bfloat16
              else _native.C.conv2d_f32_packed)
    native(
        _native.tensor_arg(input), isa, _native.tensor_arg(packed), weight_shape[0],
        weight_shape[1], weight_shape[2], weight_shape[3], _native.optional_arg(bias),
        stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1], groups,
        clamp_min, clamp_max, _native.tensor_arg(out))
    return out


_conv2d_bias_act_packed = torch.library.custom_op(
    "pyfastcnn::conv2d_bias_act_packed", mutates_args=(), device_types="cpu"
)(_conv2d_bias_act_packed_impl)


@_conv2d_bias_act_packed.register_fake
def _(input, packed, isa, weight_shape, bias, stride, padding, dilation, groups, output_size,
      clamp_min, clamp_max):
    return conv_output(input, weight_shape[0], output_size)


def conv2d_bias_act(
    input: torch.Tensor,
    weight: Union[torch.Tensor, PackedConvWeight],
    bias: Optional[torch.Tensor],
    geo,
    clamp_min: float,
    clamp_max: float,
) -> torch.Tensor:
    """clamp(conv2d(input, weight) + bias) for checked arguments (geo from conv_geometry);
    the packed kernel when the weight is packed and this ISA level has one.

    CUDA input (float16/bfloat16/float32): weight [OC, C/groups, KH, KW] on the input's device
    (packed here, rounded once to the input's dtype) or a PackedConvWeight (its float32 weight
    is uploaded: modules cache their own CUDA copy instead); bias float32 on the device."""
    if input.is_cuda:
        if isinstance(weight, PackedConvWeight):
            weight = weight.weight
        return cuda_conv.conv2d_bias_act_cuda(
            input, cuda_conv.pack_weight(weight, input.dtype, input.device),
            None if bias is None else bias.to(device=input.device, dtype=torch.float32),
            geo, clamp_min, clamp_max)
    if isinstance(weight, PackedConvWeight):
        packed = weight.packed()
        if packed is None and weight.dtype == torch.bfloat16:
            # No BF16 kernel at this level: the same numerics (bfloat16 inputs and weights,
            # FP32 sums) through the FP32 kernel.
            input = _native.run(_round_to_bf16, _round_to_bf16_impl, input)
            weight = weight.fallback()
            packed = weight.packed()
        if packed is not None:
            isa, data = packed
            return _native.run(
                _conv2d_bias_act_packed, _conv2d_bias_act_packed_impl, input, data, isa,
                list(weight.weight.shape), bias, list(geo.stride), list(geo.padding),
                list(geo.dilation), geo.groups, list(geo.output_size), clamp_min, clamp_max)
        weight = weight.weight
    return _native.run(
        _conv2d_bias_act, _conv2d_bias_act_impl, input, weight, bias, list(geo.stride),
        list(geo.padding), list(geo.dilation), geo.groups, list(geo.output_size), clamp_min,
        clamp_max)


def conv_bn_relu(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    *,
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    bn_weight: Optional[torch.Tensor] = None,
    bn_bias: Optional[torch.Tensor] = None,
    eps: float = 1e-5,
    stride: IntPair = 1,
    padding: Union[IntPair, str] = 0,
    dilation: IntPair = 1,
    groups: int = 1,
    relu: bool = True,
) -> torch.Tensor:
    """``relu(batch_norm(conv2d(input, weight, bias), eval mode))`` in one conv pass.

    BN is folded into the conv weight and bias (in float64), and bias + ReLU are applied while
    writing the output: no separate BN or ReLU pass, no intermediate tensor.

    Args:
        input: float32 [N, C, H, W], CPU, NCHW or channels_last (or any strided view); or on
            CUDA float16, bfloat16 (tensor cores, FP32 accumulate) or float32 (exact FP32 FMAs).
        weight: float32 [OC, C/groups, KH, KW] (on CUDA: the input's dtype, on its device);
            bias: float32 [OC] or None (on CUDA: like running_mean).
        running_mean, running_var: float32 [OC], the BN statistics (on CUDA: float32 or the
            input's dtype, on its device).
        bn_weight, bn_bias: float32 [OC] or None (gamma = 1, beta = 0); like running_mean.
        eps: BN epsilon (> 0... or 0 with strictly positive variances).
        stride, padding, dilation, groups: as in ``F.conv2d``.
        relu: apply ReLU (NaN stays NaN); False gives conv + BN only.

    Returns:
        float32 [N, OC, OH, OW], channels_last when the input is channels_last. On CUDA: the
        input's dtype, channels_last; BN is folded in float64, the folded weight rounded once
        to the input's dtype, bias and ReLU applied in FP32 before the one rounding of the output.
    """
    vectors = (("bias", bias), ("running_mean", running_mean), ("running_var", running_var),
               ("bn_weight", bn_weight), ("bn_bias", bn_bias))
    on_cuda = isinstance(input, torch.Tensor) and input.device.type == "cuda"
    if on_cuda:
        cuda_conv.check_cuda_input("input", input)
        check_tensor("weight", weight, cuda_conv.CUDA_DTYPES, 4, devices=("cuda",))
        cuda_conv.same_device("input", input, weight=weight,
                              **{name: vec for name, vec in vectors
                                 if isinstance(vec, torch.Tensor)})
        if weight.dtype != input.dtype:
            raise TypeError(f"weight must have the input's dtype ({input.dtype}), got "
                            f"{weight.dtype}")
        oc = weight.shape[0]
        for name, vec in vectors:
            if vec is not None or name in ("running_mean", "running_var"):
                check_tensor(name, vec, (torch.float32,) if input.dtype == torch.float32
                             else (torch.float32, input.dtype), 1,
                             devices=("cuda",))
                if vec.shape[0] != oc:
                    raise ValueError(f"{name} must have {oc} elements, got {vec.shape[0]}")
    else:
        check_conv_input("input", input)
        check_tensor("weight", weight, torch.float32, 4)
        oc = weight.shape[0]
        for name, vec in (("bias", bias), ("bn_weight", bn_weight), ("bn_bias", bn_bias)):
            if vec is not None:
                check_vector(name, vec, oc)
        check_vector("running_mean", running_mean, oc)
        check_vector("running_var", running_var, oc)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise TypeError(f"eps must be a float, got {type(eps).__name__}")
    if eps < 0:
        raise ValueError(f"eps must be non-negative, got {eps}")
    if not isinstance(relu, bool):
        raise TypeError(f"relu must be a bool, got {type(relu).__name__}")
    geo = conv_geometry(input.shape, weight.shape, stride, padding, dilation, groups)
    folded_weight, folded_bias = fold_bn(
        weight.detach(),
        None if bias is None else bias.detach(),
        running_mean.detach(),
        running_var.detach(),
        None if bn_weight is None else bn_weight.detach(),
        None if bn_bias is None else bn_bias.detach(),
        float(eps),
    )
    return conv2d_bias_act(input, folded_weight, folded_bias, geo,
                           0.0 if relu else float("-inf"), float("inf"))
