"""Fused conv + BN + ReLU on CUDA: the tensor-core (float16/bfloat16), SIMT (float32) and direct
kernels against float64 references of the same (rounded) operands, every conv geometry, layouts,
streams, the module and the error messages. Skipped without a GPU (benchmarks/gpu/run.sh runs
them on one)."""

import math
from dataclasses import dataclass
from typing import Tuple, Union

import pytest
import torch
import torch.nn.functional as F
from conftest import rel_error
from gpu import needs_gpu, poison_

import pyfastcnn
from pyfastcnn.nn import FusedConvBNReLU2d
from pyfastcnn.ops import cuda_conv
from pyfastcnn.ops._checks import conv_geometry
from pyfastcnn.ops._device import cuda_module, ptr, stream_of

pytestmark = needs_gpu

# Relative error bounds against float64: float32 sums exactly rounded FMAs; float16/bfloat16 are
# dominated by the one rounding of the output (2^-11 / 2^-8 relative at most per element).
TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}
DTYPES = [torch.float16, torch.bfloat16, torch.float32]
DTYPE_IDS = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}


@dataclass(frozen=True)
class Geo:
    id: str
    n: int
    c: int
    h: int
    w: int
    oc: int
    k: Tuple[int, int]
    stride: Union[int, Tuple[int, int]] = 1
    padding: Union[int, Tuple[int, int], str] = 0
    dilation: Union[int, Tuple[int, int]] = 1
    groups: int = 1

    def kwargs(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups)


GEOS = [
    # 1x1, pixel tail (162 % 128) and channel tail (72 % 64)
    Geo("1x1-c64-oc72", 2, 64, 9, 9, 72, (1, 1)),
    Geo("3x3-pad1-c32", 1, 32, 14, 11, 64, (3, 3), padding=1),
    Geo("3x3-stride2-oc40", 2, 16, 15, 13, 40, (3, 3), stride=2, padding=1),
    # K = 9 * 40 = 360: a partial last K tile
    Geo("3x3-c40-ktail", 1, 40, 7, 9, 24, (3, 3), padding=1),
    Geo("1x1-c24-ktail", 3, 24, 5, 7, 16, (1, 1)),
    Geo("stem-7x7-c3", 1, 3, 32, 30, 64, (7, 7), stride=2, padding=3),
    Geo("1x7", 1, 16, 9, 12, 24, (1, 7), padding=(0, 3)),
    Geo("7x1", 2, 16, 12, 9, 24, (7, 1), padding=(3, 0)),
    Geo("dil2", 1, 24, 13, 11, 32, (3, 3), padding=2, dilation=2),
    Geo("groups2", 2, 32, 9, 8, 48, (3, 3), padding=1, groups=2),
    Geo("groups4-cg8-oc12", 1, 32, 7, 7, 12, (3, 3), padding=1, groups=4),
    Geo("depthwise", 2, 32, 11, 9, 32, (3, 3), padding=1, groups=32),
    Geo("depthwise-s2-mult2", 1, 16, 12, 12, 32, (3, 3), stride=2, padding=1, groups=16),
    Geo("same-k4", 1, 8, 9, 8, 16, (4, 4), padding="same"),
    Geo("same-dil3", 1, 16, 11, 10, 8, (3, 2), padding="same", dilation=3),
    Geo("odd-channels", 2, 13, 8, 9, 19, (3, 3), padding=1),
    Geo("stride2x1-valid", 1, 8, 10, 9, 16, (3, 3), stride=(2, 1)),
    Geo("pad-gt-kernel", 1, 8, 5, 5, 8, (3, 3), padding=4),
    Geo("batch4-oc136", 4, 72, 10, 9, 136, (3, 3), padding=1),
]
# Big enough for 128 x 128 tiles (at least one per multiprocessor).
BIG = Geo("big-56x56-oc136", 4, 16, 56, 56, 136, (3, 3), padding=1)


def _bn(oc, device):
    return dict(
        running_mean=torch.randn(oc, device=device),
        running_var=torch.rand(oc, device=device) + 0.5,
        bn_weight=torch.randn(oc, device=device),
        bn_bias=torch.randn(oc, device=device),
    )


def _reference(x, weight, bias, geo: Geo, clamp_min=0.0, clamp_max=math.inf):
    """float64 on the CPU from exactly the values the kernel sees."""
    out = F.conv2d(x.double().cpu(), weight.double().cpu(),
                   None if bias is None else bias.double().cpu(), **geo.kwargs())
    return out.clamp(min=clamp_min, max=clamp_max)


def _native(x, weight_oihw, bias, geo: Geo, algo, clamp_min=0.0, clamp_max=math.inf):
    """Calls the binding directly on a poisoned output (every element must be written)."""
    g = conv_geometry(x.shape, weight_oihw.shape, geo.stride, geo.padding, geo.dilation,
                      geo.groups)
    packed = cuda_conv.pack_weight(weight_oihw, x.dtype)
    xl = x.contiguous(memory_format=torch.channels_last)
    oc, kh, kw, _ = packed.shape
    out = poison_(torch.empty((x.shape[0], oc, *g.output_size), dtype=x.dtype, device=x.device,
                              memory_format=torch.channels_last))
    ran = cuda_module().conv2d_bias_act(
        device=x.device.index, x=ptr(xl), weight=ptr(packed), bias=ptr(bias), out=ptr(out),
        dtype={torch.float32: 0, torch.float16: 2, torch.bfloat16: 3}[x.dtype],
        n=x.shape[0], h=x.shape[2], w=x.shape[3], c=x.shape[1], oc=oc, kh=kh, kw=kw,
        stride_h=g.stride[0], stride_w=g.stride[1], pad_h=g.padding[0], pad_w=g.padding[1],
        dilation_h=g.dilation[0], dilation_w=g.dilation[1], groups=g.groups,
        oh=g.output_size[0], ow=g.output_size[1], clamp_min=clamp_min, clamp_max=clamp_max,
        stream=stream_of(x), algo=algo)
    torch.cuda.synchronize()
    return out, ran, packed


def _operands(geo: Geo, dtype):
    x = torch.randn(geo.n, geo.c, geo.h, geo.w, device="cuda").to(dtype)
    weight = (torch.randn(geo.oc, geo.c // geo.groups, *geo.k, device="cuda")
              / math.sqrt(geo.c // geo.groups * geo.k[0] * geo.k[1])).to(dtype)
    bias = torch.randn(geo.oc, device="cuda")
    return x, weight, bias


def _expected_kernel(dtype, geo: Geo, algo):
    if algo == "direct":
        return ("direct",)
    if dtype == torch.float32:
        return ("simt_128x64",) if geo.oc // geo.groups >= 16 or algo != "auto" else ("direct",)
    if (geo.c // geo.groups) % 8 or geo.oc // geo.groups < 8:
        return ("simt_128x64",) if geo.oc // geo.groups >= 16 else ("direct",)
    return ("tc_128x64", "tc_128x128")


@pytest.mark.parametrize("algo", ["auto", "direct"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS.get)
@pytest.mark.parametrize("geo", GEOS, ids=lambda g: g.id)
def test_kernel_matches_float64(geo, dtype, algo):
    x, weight, bias = _operands(geo, dtype)
    out, ran, packed = _native(x, weight, bias, geo, algo)
    assert ran in _expected_kernel(dtype, geo, algo)
    assert not out.isnan().any(), "the kernel left output elements unwritten"
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert rel_error(out.cpu(), _reference(x, weight, bias, geo)) <= TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS.get)
def test_large_tiles(dtype):
    x, weight, bias = _operands(BIG, dtype)
    out, ran, _ = _native(x, weight, bias, BIG, "auto")
    if dtype != torch.float32:
        sms = torch.cuda.get_device_properties(x.device).multi_processor_count
        assert ran == "tc_128x128" or sms > 196
    assert not out.isnan().any()
    assert rel_error(out.cpu(), _reference(x, weight, bias, BIG)) <= TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS.get)
def test_no_bias_no_relu_and_relu6(dtype):
    geo = GEOS[2]
    x, weight, _ = _operands(geo, dtype)
    out, _, _ = _native(x, weight, None, geo, "auto", float("-inf"), math.inf)
    assert (out < 0).any()
    assert rel_error(out.cpu(), _reference(x, weight, None, geo, -math.inf)) <= TOL[dtype]
    x = x * 8
    out, _, _ = _native(x, weight, None, geo, "auto", 0.0, 6.0)
    assert out.max().item() == 6.0
    assert rel_error(out.cpu(), _reference(x, weight, None, geo, 0.0, 6.0)) <= TOL[dtype]


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided_view"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS.get)
@pytest.mark.parametrize("geo", [GEOS[1], GEOS[5], GEOS[11]], ids=lambda g: g.id)
def test_conv_bn_relu_public_api(geo, dtype, layout):
    x, weight, bias = _operands(geo, dtype)
    bn = _bn(geo.oc, "cuda")
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "strided_view":
        wide = torch.empty(*x.shape[:3], 2 * x.shape[3], dtype=dtype, device="cuda")
        wide[..., ::2] = x
        x = wide[..., ::2]
    out = pyfastcnn.conv_bn_relu(x, weight, bias, **bn, **geo.kwargs())
    assert out.dtype == dtype and out.device == x.device
    assert out.is_contiguous(memory_format=torch.channels_last)
    # float64 conv of the same (rounded) input and weight, then BN and ReLU in float64.
    conv = F.conv2d(x.double().cpu(), weight.double().cpu(), bias.double().cpu(), **geo.kwargs())
    ref = F.batch_norm(conv, bn["running_mean"].double().cpu(), bn["running_var"].double().cpu(),
                       bn["bn_weight"].double().cpu(), bn["bn_bias"].double().cpu(),
                       training=False, eps=1e-5).relu()
    assert rel_error(out.cpu(), ref) <= TOL[dtype]


def test_empty_batch():
    out = pyfastcnn.conv_bn_relu(torch.randn(0, 8, 5, 5, device="cuda", dtype=torch.float16),
                                 torch.randn(4, 8, 3, 3, device="cuda", dtype=torch.float16),
                                 **_bn(4, "cuda"))
    assert out.shape == (0, 4, 3, 3)


def test_runs_on_the_current_stream():
    geo = GEOS[1]
    x_src, weight, bias = _operands(geo, torch.float16)
    x = torch.full_like(x_src, float("nan"))
    packed = cuda_conv.pack_weight(weight, torch.float16)
    g = conv_geometry(x.shape, weight.shape, geo.stride, geo.padding, geo.dilation, geo.groups)
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        # The copy lands late on the side stream; a kernel on any other stream would read NaNs.
        torch.cuda._sleep(20_000_000)
        x.copy_(x_src)
        out = cuda_conv.conv2d_bias_act_cuda(x, packed, bias, g, 0.0, math.inf)
    side.synchronize()
    assert not out.isnan().any()
    assert rel_error(out.cpu(), _reference(x_src, weight, bias, geo)) <= TOL[torch.float16]


def test_other_device_index():
    if torch.cuda.device_count() < 2:
        pytest.skip("one GPU: the DeviceScope path to a second device is not exercised")
    geo = GEOS[1]
    x, weight, bias = (t.to("cuda:1") for t in _operands(geo, torch.float16))
    out = pyfastcnn.conv_bn_relu(x, weight, bias, **_bn(geo.oc, "cuda:1"), **geo.kwargs())
    assert out.device == x.device


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS.get)
def test_fused_module_after_to_device(dtype):
    geo = Geo("m", 2, 16, 10, 9, 24, (3, 3), stride=1, padding=1)
    conv = torch.nn.Conv2d(16, 24, 3, padding=1)
    bn = torch.nn.BatchNorm2d(24)
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.normal_()
        bn.bias.normal_()
    fused = FusedConvBNReLU2d.from_modules(conv, bn, relu=torch.nn.ReLU6())
    x = torch.randn(geo.n, geo.c, geo.h, geo.w)
    cpu_out = fused(x)
    fused = fused.to("cuda", dtype=dtype)
    assert fused.weight.dtype == torch.float32 and fused.weight.is_cuda
    xg = x.to("cuda", dtype)
    out = fused(xg)
    assert out.dtype == dtype and out.is_contiguous(memory_format=torch.channels_last)
    if dtype == torch.float32:
        assert rel_error(out.cpu(), cpu_out) <= 1e-5
    ref = _reference(xg, fused.weight.to(dtype), fused.bias, geo, 0.0, 6.0)
    assert rel_error(out.cpu(), ref) <= TOL[dtype]
    assert fused(xg).data_ptr() != out.data_ptr()  # cached weight, fresh output
    assert len(fused._cuda_packed) == 1
    back = fused.cpu()
    assert torch.equal(back(x), cpu_out)


def test_fused_module_bf16_mode_on_float32_input():
    conv = torch.nn.Conv2d(8, 16, 3, padding=1)
    fused = FusedConvBNReLU2d.from_modules(conv, None, relu=True, dtype=torch.bfloat16)
    x = torch.randn(2, 8, 7, 7)
    cpu_out = fused(x)
    out = fused.cuda()(x.cuda())
    assert out.dtype == torch.float32
    assert rel_error(out.cpu(), cpu_out) <= 1e-5


def test_errors_name_the_argument():
    x = torch.randn(1, 8, 6, 6, device="cuda", dtype=torch.float16)
    w = torch.randn(4, 8, 3, 3, device="cuda", dtype=torch.float16)
    bn = _bn(4, "cuda")
    with pytest.raises(ValueError, match="weight must be a CUDA tensor"):
        pyfastcnn.conv_bn_relu(x, w.cpu(), **bn)
    with pytest.raises(ValueError, match="running_mean must be on the same device"):
        pyfastcnn.conv_bn_relu(x, w, **{**bn, "running_mean": bn["running_mean"].cpu()})
    with pytest.raises(ValueError, match="bias must be on the same device"):
        pyfastcnn.conv_bn_relu(x, w, torch.zeros(4), **bn)
    with pytest.raises(ValueError, match="weight must be a CPU tensor"):
        pyfastcnn.conv_bn_relu(x.cpu().float(), w.float(), **bn)
    with pytest.raises(TypeError, match="weight must have the input's dtype"):
        pyfastcnn.conv_bn_relu(x, w.float(), **bn)
    with pytest.raises(TypeError, match="input must have dtype"):
        pyfastcnn.conv_bn_relu(x.double(), w.double(), **bn)
    with pytest.raises(ValueError, match="running_var must have 4 elements"):
        pyfastcnn.conv_bn_relu(x, w, **{**bn, "running_var": torch.ones(5, device="cuda")})
    with pytest.raises(ValueError, match="input channels"):
        pyfastcnn.conv_bn_relu(x, w[:, :4], **bn)
    fused = FusedConvBNReLU2d.from_modules(torch.nn.Conv2d(8, 4, 3))
    with pytest.raises(ValueError, match="module's weight is on cpu"):
        fused(x)
    with pytest.raises(ValueError, match="module's weight is on cuda"):
        fused.cuda()(x.cpu().float())


def test_launcher_rechecks():
    x, w, _ = _operands(GEOS[0], torch.float16)
    with pytest.raises(ValueError, match="groups must divide"):
        cuda_module().conv2d_bias_act(0, ptr(x), ptr(w), 0, ptr(x), 2, 1, 9, 9, 64, 72, 1, 1, 1,
                                      1, 0, 0, 1, 1, 5, 9, 9, 0.0, math.inf, stream_of(x))
    with pytest.raises(ValueError, match="channels per group % 8"):
        cuda_module().conv2d_bias_act(0, ptr(x), ptr(w), 0, ptr(x), 2, 1, 9, 9, 12, 12, 1, 1, 1,
                                      1, 0, 0, 1, 1, 1, 9, 9, 0.0, math.inf, stream_of(x),
                                      "implicit_gemm")


def test_opcheck():
    geo = GEOS[2]
    x, weight, bias = _operands(geo, torch.float16)
    g = conv_geometry(x.shape, weight.shape, geo.stride, geo.padding, geo.dilation, geo.groups)
    args = (x, cuda_conv.pack_weight(weight, torch.float16), bias, list(g.stride),
            list(g.padding), list(g.dilation), g.groups, list(g.output_size), 0.0, math.inf,
            "auto")
    torch.library.opcheck(torch.ops.pyfastcnn.conv2d_bias_act_cuda.default, args)


@pytest.mark.gpu_sanitize
def test_sanitize_tensor_cores_with_tails():
    geo = Geo("san-tc", 1, 24, 7, 6, 40, (3, 3), stride=2, padding=1)
    for dtype in (torch.float16, torch.bfloat16):
        x, weight, bias = _operands(geo, dtype)
        out, ran, _ = _native(x, weight, bias, geo, "auto")
        assert ran.startswith("tc_")
        assert rel_error(out.cpu(), _reference(x, weight, bias, geo)) <= TOL[dtype]


@pytest.mark.gpu_sanitize
def test_sanitize_simt_and_direct():
    geo = Geo("san-simt", 1, 5, 7, 6, 20, (3, 3), padding=1)
    x, weight, bias = _operands(geo, torch.float32)
    for algo in ("auto", "direct"):
        out, _, _ = _native(x, weight, bias, geo, algo)
        assert rel_error(out.cpu(), _reference(x, weight, bias, geo)) <= TOL[torch.float32]
    x16 = x.half()
    out, ran, _ = _native(x16, weight.half(), bias, geo, "auto")
    assert ran == "simt_128x64"
    assert rel_error(out.cpu(), _reference(x16, weight.half(), bias, geo)) <= TOL[torch.float16]
