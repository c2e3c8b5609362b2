"""CUDA implementations of the INT8 ops (int8_gemm, int8_gemm_packed, quantized_linear,
quantized_conv2d): registered as the "cuda" kernels of the same torch.library custom ops as the
CPU paths, so one op traces under torch.compile whatever the device.

Kernels (csrc/cuda/int8_*): tensor-core implicit GEMM (mma.sync m16n8k32, s8 or u8 activations
times s8 weights, int32 accumulate, 4-stage cp.async pipeline) for GEMMs with K % 16 == 0 and
16-byte aligned rows (other rows are copied once into such) and for convs; a Hopper variant
with wgmma.mma_async (sm_90a builds; taken when KERNEL == "wgmma" until it is verified on a
GPU); a CUDA-core GEMM for plain int8_gemm operands whose K is not a multiple of 16; a direct
CUDA-core conv for depthwise and other convs with fewer than 4 channels per group. Every op
runs on the current stream of its inputs' device. The epilogue is the CPU ops' (see
ops/quantized.py).

Weights are uploaded once per device and cached on their PackedInt8Weight / QuantizedWeight:
  GEMM / linear: B^T, int8 [G, N, Kp], Kp = K rounded up to 16 (zeros past K);
  conv (implicit GEMM): int8 [OC, KH * KW * cgp], column (kh * KW + kw) * cgp + c, cgp = the
    channels per group rounded up to 16 (zeros), the order in which the kernel walks the NHWC
    input (padded once per call with the zero point, spatially and per group);
  conv (direct): int8 [OC, KH * KW * cg].
"""

from __future__ import annotations

import math
from typing import List, Optional

import torch

from ._device import cuda_module, ptr, same_device, stream_of

# Which GEMM kernel runs: "auto" (mma.sync where the operands allow, see above), "mma",
# "simt" (CUDA cores, for every GEMM: the fallback, tested on its own) or "wgmma" (Hopper;
# RuntimeError/ValueError elsewhere). Tests and benchmarks set it; convs take "simt" as "auto".
KERNEL = "auto"
_PATHS = {"auto": 0, "mma": 1, "simt": 2, "wgmma": 3}


def wgmma_available(device: torch.device) -> bool:
    """Whether `device` runs the Hopper wgmma kernel (sm_90 and a build with sm_90a code)."""
    return bool(cuda_module().int8_wgmma_available(device.index))

# The `isa` (weight layout) argument of the custom ops for CUDA operands.
LAYOUT_GEMM = "cuda"
LAYOUT_CONV_IGEMM = "cuda_igemm"
LAYOUT_CONV_DIRECT = "cuda_direct"

_OUT_DTYPES = {0: torch.int32, 1: torch.float32, 2: torch.int8, 3: torch.uint8}


def round_up(v: int, m: int) -> int:
    return (v + m - 1) // m * m


def conv_uses_direct(channels_per_group: int, groups: int) -> bool:
    """Depthwise and other convs with very few channels per group run on CUDA cores: padding
    each group's channels to 16 for the tensor cores would multiply their work."""
    return groups > 1 and channels_per_group < 4


# ---- weight layouts (made once per device by the weight objects) ----------------------------


def gemm_operand(weight_gkn: torch.Tensor, device: torch.device) -> torch.Tensor:
    """B [G, K, N] int8 (CPU) -> B^T [G, N, Kp] int8 on `device`, zero past K."""
    k = weight_gkn.shape[1]
    bt = weight_gkn.transpose(1, 2)
    bt = torch.nn.functional.pad(bt, (0, round_up(k, 16) - k))
    return bt.contiguous().to(device)


def conv_operand(int_weight: torch.Tensor, direct: bool, device: torch.device) -> torch.Tensor:
    """Conv weight [OC, cg, KH, KW] int8 (CPU) -> the CUDA kernels' [OC, KH * KW * cg(p)]."""
    oc, cg, kh, kw = int_weight.shape
    w = int_weight
    if not direct:
        w = torch.nn.functional.pad(w, (0, 0, 0, 0, 0, round_up(cg, 16) - cg))
    return w.permute(0, 2, 3, 1).reshape(oc, -1).contiguous().to(device)


# ---- epilogue -------------------------------------------------------------------------------


def _epilogue(mod, out_kind: int, col_sums=None, x_zero_point: int = 0, x_scale: float = 1.0,
              w_scale=None, bias=None, out_scale: float = 1.0, out_zero_point: int = 0,
              clamp_min: float = -math.inf, clamp_max: float = math.inf, residual=None,
              residual_scale: float = 1.0, residual_zero_point: int = 0):
    return mod.Int8Epilogue(
        out_kind, ptr(col_sums), int(x_zero_point), float(x_scale), ptr(w_scale), ptr(bias),
        float(out_scale), int(out_zero_point), float(clamp_min), float(clamp_max), ptr(residual),
        residual is not None and residual.dtype == torch.int8, float(residual_scale),
        int(residual_zero_point),
    )


def _rows(a: torch.Tensor) -> tuple:
    """(a with unit column stride, its row stride in elements)."""
    m, k = a.shape
    if (k > 1 and a.stride(1) != 1) or (m > 1 and a.stride(0) < k):  # also expanded rows
        a = a.contiguous()
    return a, (a.stride(0) if m > 1 else k)


def _aligned_rows(a: torch.Tensor, kp: int) -> tuple:
    """a [M, K] as rows the tensor-core kernel takes: 16-byte aligned start and row stride,
    kp (>= K, multiple of 16) columns, zeros past K (copied only when needed)."""
    a, lda = _rows(a)
    m, k = a.shape
    if k == kp and lda % 16 == 0 and a.data_ptr() % 16 == 0:
        return a, lda
    padded = torch.zeros((m, kp), dtype=a.dtype, device=a.device)
    padded[:, :k] = a
    return padded, kp


def _gemm(a: torch.Tensor, bt: torch.Tensor, n: int, out: torch.Tensor, epi) -> None:
    """out = epilogue(a @ bt[:, :K]^T) with bt [N, Kp] from gemm_operand."""
    mod = cuda_module()
    m, k = a.shape
    if m == 0 or n == 0:
        return
    kp = bt.shape[1]
    path = _PATHS[KERNEL]
    if KERNEL == "simt":
        a, lda = _rows(a)
        mod.int8_gemm(a.device.index, stream_of(a), a.data_ptr(), lda, a.dtype == torch.int8,
                      bt.data_ptr(), kp, m, n, k, out.data_ptr(), out.stride(0), epi, path)
        return
    a, lda = _aligned_rows(a, kp)
    mod.int8_gemm(a.device.index, stream_of(a), a.data_ptr(), lda, a.dtype == torch.int8,
                  bt.data_ptr(), kp, m, n, a.shape[1], out.data_ptr(), out.stride(0), epi, path)


# ---- op implementations (registered as the "cuda" kernels in ops/quantized.py) --------------


def int8_gemm_impl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """int8 [M, K] x int8 [K, N] -> int32 [M, N], both on one CUDA device."""
    mod = cuda_module()
    m, k = a.shape
    n = b.shape[1]
    out = torch.empty((m, n), dtype=torch.int32, device=a.device)
    if m == 0 or n == 0:
        return out
    if k == 0:
        return out.zero_()
    epi = _epilogue(mod, 0)
    if k % 16 == 0 and KERNEL != "simt":
        # The tensor cores want B^T K-contiguous: one transposed copy of b (a constant operand
        # belongs in pack_int8_weight, which makes it once).
        a, lda = _aligned_rows(a, k)
        bt = b.t().contiguous()
        mod.int8_gemm(a.device.index, stream_of(a), a.data_ptr(), lda, True, bt.data_ptr(), k,
                      m, n, k, out.data_ptr(), n, epi, _PATHS[KERNEL])
        return out
    a, lda = _rows(a)
    mod.int8_gemm_strided(a.device.index, stream_of(a), a.data_ptr(), lda, True, b.data_ptr(),
                          b.stride(0), b.stride(1), m, n, k, out.data_ptr(), n, epi)
    return out


def int8_gemm_packed_impl(a: torch.Tensor, data: torch.Tensor, col_sums: torch.Tensor, isa: str,
                          n: int) -> torch.Tensor:
    mod = cuda_module()
    out = torch.empty((a.shape[0], n), dtype=torch.int32, device=a.device)
    _gemm(a, data, n, out, _epilogue(mod, 0))
    return out


def quantized_linear_impl(x, data, col_sums, isa, n, w_scale, bias, x_scale, x_zero_point,
                          out_kind, clamp_min, clamp_max, out_scale, out_zero_point):
    mod = cuda_module()
    out = torch.empty((x.shape[0], n), dtype=_OUT_DTYPES[out_kind], device=x.device)
    epi = _epilogue(mod, out_kind, col_sums, x_zero_point, x_scale, w_scale, bias, out_scale,
                    out_zero_point, clamp_min, clamp_max)
    _gemm(x, data, n, out, epi)
    return out


def _padded_source(x: torch.Tensor, zero_point: int, pads: tuple, groups: int, cg: int,
                   cgp: int) -> torch.Tensor:
    """x [N, C, H, W] as the NHWC bytes the conv kernels read: padded by (top, bottom, left,
    right) with the zero point and each group's channels padded to cgp. No copy when x is
    already channels_last and needs no padding."""
    n, c, h, w = x.shape
    xn = x.permute(0, 2, 3, 1)
    top, bottom, left, right = pads
    if pads == (0, 0, 0, 0) and cgp == cg and xn.is_contiguous() and xn.data_ptr() % 16 == 0:
        return xn
    src = torch.full((n, h + top + bottom, w + left + right, groups, cgp), zero_point,
                     dtype=x.dtype, device=x.device)
    src[:, top : top + h, left : left + w, :, :cg] = xn.reshape(n, h, w, groups, cg)
    return src


def quantized_conv2d_impl(x, data, col_sums, isa, weight_shape: List[int], w_scale, bias,
                          stride: List[int], padding: List[int], dilation: List[int],
                          groups: int, output_size: List[int], x_scale, x_zero_point, out_kind,
                          clamp_min, clamp_max, out_scale, out_zero_point,
                          residual: Optional[torch.Tensor] = None, residual_scale: float = 1.0,
                          residual_zero_point: int = 0) -> torch.Tensor:
    from ._checks import conv_output

    mod = cuda_module()
    oc, cg, kh, kw = weight_shape
    oh, ow = output_size
    out = conv_output(x, oc, output_size, _OUT_DTYPES[out_kind], torch.channels_last)
    n, _, h, w = x.shape
    if out.numel() == 0:
        return out
    # Rows/columns past the input that the last output pixels' taps reach (F.conv2d's bottom /
    # right padding; input rows no tap reaches stay in the source, unread).
    need_h = (oh - 1) * stride[0] + (kh - 1) * dilation[0] + 1
    need_w = (ow - 1) * stride[1] + (kw - 1) * dilation[1] + 1
    pads = (padding[0], max(0, need_h - h - padding[0]), padding[1],
            max(0, need_w - w - padding[1]))
    direct = isa == LAYOUT_CONV_DIRECT
    cgp = cg if direct else round_up(cg, 16)
    src = _padded_source(x, x_zero_point, pads, groups, cg, cgp)
    hp, wp = h + pads[0] + pads[1], w + pads[2] + pads[3]
    if residual is not None:
        residual = residual.contiguous(memory_format=torch.channels_last)
    epi = _epilogue(mod, out_kind, col_sums, x_zero_point, x_scale, w_scale, bias, out_scale,
                    out_zero_point, clamp_min, clamp_max, residual, residual_scale,
                    residual_zero_point)
    signed = x.dtype == torch.int8
    dev, stream = x.device.index, stream_of(x)
    if direct:
        mod.int8_conv2d_direct(dev, stream, src.data_ptr(), signed, n, hp, wp, data.data_ptr(),
                               kh, kw, cg, groups, oc // groups, stride[0], stride[1],
                               dilation[0], dilation[1], oh, ow, out.data_ptr(), epi)
    else:
        mod.int8_conv2d_igemm(dev, stream, src.data_ptr(), signed, n, hp, wp, groups * cgp,
                              data.data_ptr(), kh, kw, cgp, groups, oc // groups, stride[0],
                              stride[1], dilation[0], dilation[1], oh, ow, out.data_ptr(), epi,
                              0 if KERNEL == "simt" else _PATHS[KERNEL])
    return out


def check_same_device(x: torch.Tensor, **others: Optional[torch.Tensor]) -> None:
    """ValueError naming the first tensor not on x's device (x may be CPU or CUDA)."""
    same_device("x", x, **others)
