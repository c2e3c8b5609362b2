"""The CUDA side of the fused conv: weight packing, argument checks and the custom op.

The kernels (csrc/cuda/conv_*) take NHWC activations and weights packed [OC, KH, KW, C/groups]
(K contiguous) in the input's dtype, a float32 bias, and write NHWC (channels_last) output:

* float16 / bfloat16: tensor cores (mma.sync m16n8k16, FP32 accumulate) when C/groups % 8 == 0,
  else the CUDA-core tiles below with FP32 sums (C = 3 stems, odd channels), or a direct kernel
  (one thread per output, FP32 accumulate) for groups of fewer than 16 output channels;
* float32: a tiled implicit GEMM on CUDA cores with exact FP32 FMAs (no TF32), or the direct
  kernel for narrow groups (depthwise).
"""

from __future__ import annotations

from typing import List, Optional

import torch

from ._device import cuda_module, ptr, same_device, stream_of

CUDA_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_DTYPE_CODES = {torch.float32: 0, torch.float16: 2, torch.bfloat16: 3}
ALGOS = ("auto", "direct", "implicit_gemm")


def check_cuda_input(name: str, input: object) -> torch.Tensor:
    """A 4-D float16/bfloat16/float32 CUDA tensor, else TypeError/ValueError naming `name`."""
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(input).__name__}")
    if input.device.type != "cuda":
        raise ValueError(f"{name} must be a CUDA tensor, got device {input.device}")
    if input.dtype not in CUDA_DTYPES:
        raise TypeError(
            f"{name} must have dtype torch.float16, torch.bfloat16 or torch.float32 on CUDA, "
            f"got {input.dtype}"
        )
    if input.dim() != 4:
        raise ValueError(f"{name} must be 4-D, got shape {tuple(input.shape)}")
    return input


def pack_weight(weight: torch.Tensor, dtype: torch.dtype,
                device: Optional[torch.device] = None) -> torch.Tensor:
    """[OC, C/groups, KH, KW] (any float dtype) -> [OC, KH, KW, C/groups] in `dtype` on `device`
    (default: the weight's): the layout the CUDA kernels read, K = (kh, kw, c) contiguous.
    Rounds once from the given values (pass the float32 or float64 folded weight)."""
    weight = weight.detach()
    if device is not None and weight.device != device:
        weight = weight.to(device=device)
    return weight.permute(0, 2, 3, 1).to(dtype).contiguous()


def _output(input: torch.Tensor, out_channels: int, output_size: List[int]) -> torch.Tensor:
    return torch.empty(
        (input.shape[0], out_channels, output_size[0], output_size[1]),
        dtype=input.dtype,
        device=input.device,
        memory_format=torch.channels_last,
    )


def _conv2d_bias_act_cuda_impl(
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
    algo: str,
) -> torch.Tensor:
    """input [N, C, H, W] CUDA (any layout; channels_last is read as is), weight packed
    [OC, KH, KW, C/groups] in input's dtype, bias float32 [OC] or None; padding = (top, left).
    Returns [N, OC, OH, OW] in input's dtype, channels_last."""
    oc, kh, kw, cg = weight.shape
    out = _output(input, oc, output_size)
    if out.numel() == 0:
        return out
    x = input.contiguous(memory_format=torch.channels_last)
    w = weight.contiguous()
    n, c, h, wi = x.shape
    cuda_module().conv2d_bias_act(
        device=x.device.index,
        x=ptr(x),
        weight=ptr(w),
        bias=ptr(None if bias is None else bias.contiguous()),
        out=ptr(out),
        dtype=_DTYPE_CODES[x.dtype],
        n=n, h=h, w=wi, c=c, oc=oc, kh=kh, kw=kw,
        stride_h=stride[0], stride_w=stride[1],
        pad_h=padding[0], pad_w=padding[1],
        dilation_h=dilation[0], dilation_w=dilation[1],
        groups=groups, oh=output_size[0], ow=output_size[1],
        clamp_min=clamp_min, clamp_max=clamp_max,
        stream=stream_of(x),
        algo=algo,
    )
    return out


_conv2d_bias_act_cuda = torch.library.custom_op(
    "pyfastcnn::conv2d_bias_act_cuda", mutates_args=(), device_types="cuda"
)(_conv2d_bias_act_cuda_impl)


@_conv2d_bias_act_cuda.register_fake
def _(input, weight, bias, stride, padding, dilation, groups, output_size, clamp_min, clamp_max,
      algo):
    return _output(input, weight.shape[0], output_size)


def conv2d_bias_act_cuda(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    geo,
    clamp_min: float,
    clamp_max: float,
    algo: str = "auto",
    check: bool = True,
) -> torch.Tensor:
    """clamp(conv2d(input, weight) + bias) on the input's device and current stream.

    input: [N, C, H, W] CUDA float16/bfloat16/float32; weight: packed [OC, KH, KW, C/groups]
    (see pack_weight) in input's dtype on the same device; bias: [OC] float32 or None; geo from
    conv_geometry. ``algo`` forces a kernel family ("direct" or "implicit_gemm") for tests.
    ``check=False``: the caller (a module that made the weight itself) vouches for the
    arguments; the launcher still re-checks sizes.
    """
    if check:
        _check_args(input, weight, bias, geo, algo)
    from .. import _native

    return _native.run(
        _conv2d_bias_act_cuda, _conv2d_bias_act_cuda_impl, input, weight, bias,
        list(geo.stride), list(geo.padding), list(geo.dilation), geo.groups,
        list(geo.output_size), float(clamp_min), float(clamp_max), algo)


def _check_args(input, weight, bias, geo, algo) -> None:
    check_cuda_input("input", input)
    same_device("input", input, weight=weight, bias=bias)
    if weight.dtype != input.dtype:
        raise TypeError(
            f"weight must have the input's dtype ({input.dtype}), got {weight.dtype}"
        )
    if weight.dim() != 4 or weight.shape[3] * geo.groups != input.shape[1]:
        raise ValueError(
            f"weight must be packed [OC, KH, KW, C/groups] with C/groups = "
            f"{input.shape[1] // geo.groups}, got shape {tuple(weight.shape)}"
        )
    if bias is not None and (bias.dtype != torch.float32 or bias.shape != (weight.shape[0],)):
        raise ValueError(
            f"bias must be float32 [{weight.shape[0]}], got {bias.dtype} {tuple(bias.shape)}"
        )
    if algo not in ALGOS:
        raise ValueError(f"algo must be one of {ALGOS}, got {algo!r}")
