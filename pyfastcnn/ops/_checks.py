"""Argument checks shared by the ops: every message names the argument."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import torch

IntPair = Union[int, Sequence[int]]


def check_tensor(
    name: str,
    t: object,
    dtype: Union[torch.dtype, Tuple[torch.dtype, ...]],
    ndim: Optional[int] = None,
    devices: Tuple[str, ...] = ("cpu",),
) -> torch.Tensor:
    """A tensor of the given dtype(s) and rank on one of `devices` (device types; ops with CUDA
    kernels pass ("cpu", "cuda")), else TypeError/ValueError naming `name`."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    dtypes = dtype if isinstance(dtype, tuple) else (dtype,)
    if t.dtype not in dtypes:
        want = " or ".join(str(d) for d in dtypes)
        raise TypeError(f"{name} must have dtype {want}, got {t.dtype}")
    if t.device.type not in devices:
        where = " or ".join("a CPU" if d == "cpu" else f"a {d.upper()}" for d in devices)
        raise ValueError(f"{name} must be {where} tensor, got device {t.device}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(t.shape)}")
    return t


def check_vector(name: str, t: object, length: int) -> torch.Tensor:
    """A float32 CPU vector of `length` elements."""
    check_tensor(name, t, torch.float32, 1)
    if t.shape[0] != length:
        raise ValueError(f"{name} must have {length} elements, got {t.shape[0]}")
    return t


def pair(name: str, value: IntPair) -> Tuple[int, int]:
    """An int or a pair of ints, as F.conv2d accepts for stride/padding/dilation."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or a pair of ints, got bool")
    if isinstance(value, int):
        return (value, value)
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        return (value[0], value[1])
    raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")


@dataclass(frozen=True)
class ConvGeometry:
    """Normalized conv arguments and the output size they give (F.conv2d semantics)."""

    stride: Tuple[int, int]
    padding: Tuple[int, int]  # top, left (bottom/right follow from output_size)
    dilation: Tuple[int, int]
    groups: int
    output_size: Tuple[int, int]


def conv_geometry(
    input_shape: Sequence[int],
    weight_shape: Sequence[int],
    stride: IntPair,
    padding: Union[IntPair, str],
    dilation: IntPair,
    groups: int,
) -> ConvGeometry:
    """Checks conv arguments against F.conv2d's rules; raises ValueError/TypeError naming them."""
    n, c, h, w = input_shape
    oc, c_per_group, kh, kw = weight_shape
    stride_hw = pair("stride", stride)
    dilation_hw = pair("dilation", dilation)
    if min(stride_hw) < 1:
        raise ValueError(f"stride must be positive, got {stride_hw}")
    if min(dilation_hw) < 1:
        raise ValueError(f"dilation must be positive, got {dilation_hw}")
    if isinstance(groups, bool) or not isinstance(groups, int):
        raise TypeError(f"groups must be an int, got {type(groups).__name__}")
    if groups < 1 or c % groups or oc % groups:
        raise ValueError(
            f"groups={groups} must be positive and divide input channels ({c}) and "
            f"output channels ({oc})"
        )
    if c // groups != c_per_group:
        raise ValueError(
            f"weight expects {c_per_group * groups} input channels ({c_per_group} per group x "
            f"groups={groups}), input has {c}"
        )
    if min(kh, kw) < 1:
        raise ValueError(f"weight must have a non-empty kernel, got shape {tuple(weight_shape)}")
    span_h, span_w = dilation_hw[0] * (kh - 1), dilation_hw[1] * (kw - 1)
    if isinstance(padding, str):
        if padding == "valid":
            pads = (0, 0, 0, 0)
        elif padding == "same":
            if stride_hw != (1, 1):
                raise ValueError("padding='same' requires stride=1 (as in F.conv2d)")
            # Extra padding goes bottom/right, as in PyTorch.
            pads = (span_h // 2, span_h - span_h // 2, span_w // 2, span_w - span_w // 2)
        else:
            raise ValueError(f"padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
    else:
        ph, pw = pair("padding", padding)
        if min(ph, pw) < 0:
            raise ValueError(f"padding must be non-negative, got {(ph, pw)}")
        pads = (ph, ph, pw, pw)
    oh = (h + pads[0] + pads[1] - span_h - 1) // stride_hw[0] + 1
    ow = (w + pads[2] + pads[3] - span_w - 1) // stride_hw[1] + 1
    if h + pads[0] + pads[1] < span_h + 1 or w + pads[2] + pads[3] < span_w + 1:
        raise ValueError(
            f"kernel ({kh}x{kw}, dilation {dilation_hw}) is larger than the padded input "
            f"({h + pads[0] + pads[1]}x{w + pads[2] + pads[3]})"
        )
    return ConvGeometry(stride_hw, (pads[0], pads[2]), dilation_hw, groups, (oh, ow))


def check_conv_input(name: str, input: object) -> torch.Tensor:
    check_tensor(name, input, torch.float32, 4)
    return input


def output_memory_format(input: torch.Tensor) -> torch.memory_format:
    """channels_last output for channels_last input, as PyTorch's conv does."""
    if not input.is_contiguous() and input.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def conv_output(
    input: torch.Tensor,
    out_channels: int,
    output_size: Sequence[int],
    dtype: torch.dtype = torch.float32,
    memory_format: Optional[torch.memory_format] = None,
) -> torch.Tensor:
    """The uninitialized [N, OC, OH, OW] result of a conv op, on input's device (real and fake
    implementations alike); memory format follows the input unless given."""
    return torch.empty(
        (input.shape[0], out_channels, output_size[0], output_size[1]),
        dtype=dtype,
        device=input.device,
        memory_format=memory_format or output_memory_format(input),
    )
