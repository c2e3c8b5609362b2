"""GPU INT8: pyfastcnn.int8_gemm (packed weight; the mma.sync kernel, and on Hopper also the
wgmma kernel as impl "pyfastcnn-wgmma") against
torch._int_mm (cuBLASLt, B column-major as cuBLASLt's int8 path wants it), and the quantized
conv (implicit GEMM, NHWC uint8 in, float32 out) against cuDNN's FP16 conv (F.conv2d,
channels_last): PyTorch has no INT8 conv on CUDA, so FP16 is the closest baseline.

Each benchmark first checks its output (GEMM: equal to torch._int_mm; conv: against a float32
conv of the same integer values).
"""

import pytest
import torch
import torch.nn.functional as F
from conftest import QUICK, gpu_run
from shapes import RESNET50_LAYERS

import pyfastcnn
from pyfastcnn.ops import cuda_int8


def _kernel(monkeypatch, impl: str) -> None:
    """Selects the GEMM kernel an impl name stands for (skips wgmma where it cannot run)."""
    if impl.endswith("wgmma"):
        if not cuda_int8.wgmma_available(torch.device("cuda", torch.cuda.current_device())):
            pytest.skip("wgmma needs an sm_90 GPU and a build with sm_90a code")
        monkeypatch.setattr(cuda_int8, "KERNEL", "wgmma")

GEMM_SHAPES = [(4096, 4096, 4096), (8192, 8192, 8192), (32, 4096, 4096), (128, 11008, 4096),
               (1024, 1024, 8192)]
if QUICK:
    GEMM_SHAPES = GEMM_SHAPES[:3]
CONV_BATCH = 32
CONV_LAYERS = RESNET50_LAYERS[:3] + RESNET50_LAYERS[-2:] if QUICK else RESNET50_LAYERS


@pytest.mark.parametrize("m,n,k", GEMM_SHAPES, ids=[f"m{m}-n{n}-k{k}" for m, n, k in GEMM_SHAPES])
@pytest.mark.parametrize("impl", ["pyfastcnn", "torch._int_mm"])
def test_int8_gemm(benchmark, monkeypatch, impl, m, n, k):
    _kernel(monkeypatch, impl)
    a = torch.randint(-128, 128, (m, k), dtype=torch.int8, device="cuda")
    b = torch.randint(-128, 128, (k, n), dtype=torch.int8, device="cuda")
    b_col = b.t().contiguous().t()  # [K, N] column-major: cuBLASLt's preferred int8 layout
    if impl.startswith("pyfastcnn"):
        packed = pyfastcnn.pack_int8_weight(b)

        def fn():
            return pyfastcnn.int8_gemm(a, packed)
    else:

        def fn():
            return torch._int_mm(a, b_col)

    assert torch.equal(fn(), torch._int_mm(a, b_col))
    gpu_run(benchmark, fn, group=f"int8_gemm m{m}-n{n}-k{k}", impl=impl, ops=2 * m * n * k,
            baseline="torch._int_mm", kind="int8")


@pytest.mark.parametrize("layer", CONV_LAYERS, ids=[la.id for la in CONV_LAYERS])
@pytest.mark.parametrize("impl", ["pyfastcnn-int8", "cudnn-fp16"])
def test_int8_conv(benchmark, monkeypatch, impl, layer):
    _kernel(monkeypatch, impl)
    n = CONV_BATCH
    shape = (n, layer.c_in, layer.hw, layer.hw)
    x = torch.randint(0, 256, shape, dtype=torch.uint8, device="cuda").contiguous(
        memory_format=torch.channels_last)
    weight = torch.randn(layer.c_out, layer.c_in, layer.k, layer.k)
    qw = pyfastcnn.quantize_weight(weight)
    bias = torch.randn(layer.c_out, device="cuda")
    x_scale, x_zp = 0.02, 128
    if impl.startswith("pyfastcnn"):

        def fn():
            return pyfastcnn.quantized_conv2d(x, x_scale, x_zp, qw, bias, stride=layer.stride,
                                              padding=layer.padding)

        y = fn()
        w_f = qw.int_weight.float().cuda()
        ref = F.conv2d(x.float() - x_zp, w_f, None, layer.stride, layer.padding)
        ref = ref * (x_scale * qw.scale.cuda()).view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)
        err = ((y - ref).norm() / ref.norm()).item()
        assert err < 1e-4, err
        kind = "int8"
    else:
        xh = torch.randn(shape, device="cuda", dtype=torch.float16).contiguous(
            memory_format=torch.channels_last)
        wh = weight.to("cuda", torch.float16).contiguous(memory_format=torch.channels_last)
        bh = bias.half()

        def fn():
            return F.conv2d(xh, wh, bh, layer.stride, layer.padding)

        kind = "fp16"
    gpu_run(benchmark, fn, group=f"int8_conv {layer.id}-b{n}", impl=impl,
            ops=layer.flops(n), baseline="cudnn-fp16", kind=kind)


# Hopper's wgmma kernel last: a fault there leaves the CUDA context unusable for what follows.
@pytest.mark.parametrize("m,n,k", GEMM_SHAPES, ids=[f"m{m}-n{n}-k{k}" for m, n, k in GEMM_SHAPES])
def test_int8_gemm_wgmma(benchmark, monkeypatch, m, n, k):
    test_int8_gemm(benchmark, monkeypatch, "pyfastcnn-wgmma", m, n, k)


@pytest.mark.parametrize("layer", CONV_LAYERS, ids=[la.id for la in CONV_LAYERS])
def test_int8_conv_wgmma(benchmark, monkeypatch, layer):
    test_int8_conv(benchmark, monkeypatch, "pyfastcnn-int8-wgmma", layer)
