"""FusedConvBNReLU2d: an eval-mode Conv2d (+ BatchNorm2d) (+ ReLU) as one pyfastcnn conv."""
from __future__ import annotations

import math
from typing import Optional, Union

import torch

from ..ops import cuda_conv
from ..ops._checks import check_conv_input, conv_geometry
from ..ops.conv_bn_relu import PackedConvWeight, conv2d_bias_act, fold_bn


class FusedConvBNReLU2d(torch.nn.Module):
    """Conv2d with BatchNorm folded into its weight and bias and ReLU in the same pass.

    The folded weight is packed once for the kernel (and repacked once if the ISA level
    changes); ``forward`` runs one conv over float32 input, NCHW or channels_last
    (channels_last is the fast layout: no layout conversion). Inference only.

    Build it with ``FusedConvBNReLU2d.from_modules(conv, bn, relu=True)``.

    On CUDA (after ``.cuda()`` or ``.to(device)``): input float16, bfloat16 (tensor cores, FP32
    accumulate) or float32, output in the input's dtype, channels_last. The folded weight and
    bias buffers stay float32 whatever ``.half()``/``.to(dtype)`` asks (they are the master
    copy); the kernel's copy, packed [OC, KH, KW, C/groups] and rounded once to the input's
    dtype, is made on first use per device and dtype and cached. A module built with
    ``dtype=torch.bfloat16`` rounds float32 CUDA input and weights to bfloat16 and sums in FP32,
    as on the CPU.
    """

    def __init__(self, weight: torch.Tensor, bias: Optional[torch.Tensor], stride, padding,
                 dilation, groups: int, relu: bool, dtype: torch.dtype = torch.float32,
                 clamp_max: float = math.inf):
        super().__init__()
        if dtype not in (torch.float32, torch.bfloat16):
            raise TypeError(f"dtype must be torch.float32 or torch.bfloat16, got {dtype}")
        self.dtype = dtype
        self.register_buffer("weight", weight.detach().float().contiguous())
        self.register_buffer("bias", None if bias is None else bias.detach().float().contiguous())
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.groups, self.relu = groups, relu
        if clamp_max != math.inf and not relu:
            raise ValueError("clamp_max applies together with relu=True (ReLU6 is relu + 6.0)")
        self.clamp_max = float(clamp_max)
        self._packed = PackedConvWeight(self.weight, groups, dtype)
        self._cuda_packed: dict = {}  # (device, dtype) -> packed CUDA weight
        self._cuda_geometry: dict = {}  # input shape -> ConvGeometry (checked once per shape)

    def _load_from_state_dict(self, *args, **kwargs):
        # Loading a state dict replaces the weight: pack the new one.
        super()._load_from_state_dict(*args, **kwargs)
        self._cuda_packed = {}
        if self.weight.device.type == "cpu":
            self._packed = PackedConvWeight(self.weight, self.groups, self.dtype)

    def _apply(self, fn, recurse=True):
        # .cuda()/.to()/.half(): the buffers move, but stay the float32 folded master copy (a
        # half-precision bias or a twice-rounded weight would lose accuracy for nothing).
        weight, bias = self.weight, self.bias
        result = super()._apply(fn, recurse)
        if self.weight.dtype != torch.float32:
            self.weight = weight.to(device=self.weight.device, dtype=torch.float32)
        if bias is not None and self.bias.dtype != torch.float32:
            self.bias = bias.to(device=self.bias.device, dtype=torch.float32)
        self._cuda_packed = {}
        if (self.weight.device.type == "cpu"
                and self._packed.weight.data_ptr() != self.weight.data_ptr()):
            self._packed = PackedConvWeight(self.weight, self.groups, self.dtype)
        return result

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_cuda_packed"] = {}  # device copies are remade on first use
        return state

    def __setstate__(self, state):
        state.setdefault("_cuda_packed", {})
        state.setdefault("_cuda_geometry", {})
        super().__setstate__(state)

    def _cuda_weight(self, dtype: torch.dtype) -> torch.Tensor:
        key = (self.weight.device, dtype)
        packed = self._cuda_packed.get(key)
        if packed is None:
            packed = cuda_conv.pack_weight(self.weight, dtype)
            self._cuda_packed[key] = packed
        return packed

    def _forward_cuda(self, input: torch.Tensor) -> torch.Tensor:
        cuda_conv.check_cuda_input("input", input)
        if self.weight.device != input.device:
            raise ValueError(f"input is on {input.device} but the module's weight is on "
                             f"{self.weight.device}: move the module with .to(device)")
        # Per-call Python work adds to every launch (small layers take ~10 us on the GPU): the
        # geometry is checked once per input shape, the weight packed once per dtype.
        geo = self._cuda_geometry.get(input.shape)
        if geo is None:
            geo = conv_geometry(input.shape, self.weight.shape, self.stride, self.padding,
                                self.dilation, self.groups)
            self._cuda_geometry[input.shape] = geo
        clamp_min = 0.0 if self.relu else float("-inf")
        if self.dtype == torch.bfloat16 and input.dtype == torch.float32:
            # bfloat16 products are exact in FP32: the FP32 kernel on rounded operands gives the
            # CPU BF16 path's numerics (FP32 sums, FP32 output).
            key = (self.weight.device, "bf16-in-f32")
            weight = self._cuda_packed.get(key)
            if weight is None:
                weight = cuda_conv.pack_weight(self.weight.to(torch.bfloat16).float(),
                                               torch.float32)
                self._cuda_packed[key] = weight
            return cuda_conv.conv2d_bias_act_cuda(input.to(torch.bfloat16).float(), weight,
                                                  self.bias, geo, clamp_min, self.clamp_max,
                                                  check=False)
        return cuda_conv.conv2d_bias_act_cuda(input, self._cuda_weight(input.dtype), self.bias,
                                              geo, clamp_min, self.clamp_max, check=False)

    @classmethod
    def from_modules(cls, conv: torch.nn.Conv2d, bn: Optional[torch.nn.BatchNorm2d] = None,
                     relu: Union[bool, torch.nn.Module, None] = True,
                     dtype: torch.dtype = torch.float32) -> "FusedConvBNReLU2d":
        """From a Conv2d, an optional BatchNorm2d (its running statistics are used, as in
        eval mode) and ``relu`` (True, a ReLU or ReLU6 module, or False/None).

        ``dtype=torch.bfloat16``: weights (BN folded first) and activations are rounded to
        bfloat16, products summed in FP32, output FP32: the AVX-512 BF16 kernel where the CPU
        has it, the same numerics through the FP32 kernel elsewhere.
        """
        if not isinstance(conv, torch.nn.Conv2d):
            raise TypeError(f"conv must be a torch.nn.Conv2d, got {type(conv).__name__}")
        if conv.padding_mode != "zeros":
            raise ValueError(f"conv.padding_mode must be 'zeros', got {conv.padding_mode!r}")
        weight, bias = conv.weight.detach().float(), conv.bias
        if bn is not None:
            if not isinstance(bn, torch.nn.BatchNorm2d):
                raise TypeError(f"bn must be a torch.nn.BatchNorm2d, got {type(bn).__name__}")
            if bn.running_mean is None or bn.running_var is None:
                raise ValueError("bn has no running statistics (track_running_stats=False)")
            if bn.num_features != conv.out_channels:
                raise ValueError(f"bn has {bn.num_features} features, conv has "
                                 f"{conv.out_channels} output channels")
            weight, bias = fold_bn(
                weight, None if bias is None else bias.detach().float(),
                bn.running_mean.detach().float(), bn.running_var.detach().float(),
                None if bn.weight is None else bn.weight.detach().float(),
                None if bn.bias is None else bn.bias.detach().float(), float(bn.eps))
        clamp_max = math.inf
        if isinstance(relu, torch.nn.Module):
            if isinstance(relu, torch.nn.ReLU6):
                clamp_max = 6.0
            elif not isinstance(relu, torch.nn.ReLU):
                raise TypeError(f"relu must be a bool, torch.nn.ReLU or torch.nn.ReLU6, got "
                                f"{type(relu).__name__}")
            relu = True
        return cls(weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups,
                   bool(relu), dtype, clamp_max)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if isinstance(input, torch.Tensor) and input.device.type == "cuda":
            return self._forward_cuda(input)
        check_conv_input("input", input)
        if self.weight.device.type != "cpu":
            raise ValueError(f"input is on {input.device} but the module's weight is on "
                             f"{self.weight.device}: move the module with .to(device)")
        geo = conv_geometry(input.shape, self.weight.shape, self.stride, self.padding,
                            self.dilation, self.groups)
        return conv2d_bias_act(input, self._packed, self.bias, geo,
                               0.0 if self.relu else float("-inf"), self.clamp_max)

    def extra_repr(self) -> str:
        oc, cg, kh, kw = self.weight.shape
        return (f"{cg * self.groups}, {oc}, kernel_size=({kh}, {kw}), stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
                f"relu={self.relu}, "
                + ("" if self.clamp_max == math.inf else f"clamp_max={self.clamp_max}, ")
                + f"dtype={self.dtype}")
