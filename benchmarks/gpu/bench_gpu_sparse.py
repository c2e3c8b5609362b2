"""Sparse conv on the GPU, ResNet-50 layer set at batch 32, each against cuDNN in the same run.

* sparse24: 2:4 weights on sparse tensor cores, FP16 channels_last, vs cuDNN dense FP16
  (F.conv2d, channels_last, the same 2:4-pruned weight stored dense; baseline).
* sparse_fp32: unstructured 90% sparse weights, FP32 NCHW, direct CSR kernel, vs cuDNN FP32
  with TF32 off (baseline) and with TF32 on.

`ops` is the dense conv's FLOPs for every implementation of a shape (so T(FL)OP/s is the
effective rate and the speed-up is a time ratio); `nnz_ops` in extra_info counts the MACs the
sparse kernel actually does.
"""

import pytest
import torch
import torch.nn.functional as F
from conftest import gpu_run
from shapes import RESNET50_LAYERS

import pyfastcnn

BATCH = 32
SPARSITY = 0.9
layers = pytest.mark.parametrize("layer", RESNET50_LAYERS, ids=lambda layer: layer.id)


def _rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    ref = ref.double()
    return ((out.double() - ref).norm() / ref.norm()).item()


def _prune_24(weight: torch.Tensor) -> torch.Tensor:
    """The 2 largest of every 4 consecutive input channels (C padded to 4) at each tap."""
    oc, cg, kh, kw = weight.shape
    cg4 = -(-cg // 4) * 4
    w = F.pad(weight.permute(0, 2, 3, 1), (0, cg4 - cg)).reshape(oc, kh, kw, cg4 // 4, 4)
    keep = w.abs().argsort(dim=-1, descending=True).argsort(dim=-1) < 2
    w = (w * keep).reshape(oc, kh, kw, cg4)[..., :cg]
    return w.permute(0, 3, 1, 2).contiguous()


def _layer_tensors(layer, dtype, memory_format):
    x = torch.randn(BATCH, layer.c_in, layer.hw, layer.hw, device="cuda").to(dtype)
    return x.contiguous(memory_format=memory_format)


@layers
@pytest.mark.parametrize("impl", ["pyfastcnn-2:4", "cudnn-fp16"])
def test_sparse24_fp16(benchmark, layer, impl):
    group = f"sparse24 {layer.id} b{BATCH}"
    x = _layer_tensors(layer, torch.float16, torch.channels_last)
    w = _prune_24(torch.randn(layer.c_out, layer.c_in, layer.k, layer.k)).half().float()
    bias = torch.randn(layer.c_out, device="cuda")
    args = dict(stride=layer.stride, padding=layer.padding)
    wd = w.half().cuda().contiguous(memory_format=torch.channels_last)
    ref = F.conv2d(x, wd, bias.half(), **args)
    if impl == "cudnn-fp16":
        def fn():
            return F.conv2d(x, wd, bias.half(), **args)
    else:
        packed = pyfastcnn.pack_sparse(w, "2:4")

        def fn():
            return pyfastcnn.sparse_conv2d(x, packed, bias, **args)
        out = fn()
        assert out.is_contiguous(memory_format=torch.channels_last)
        assert _rel_error(out, ref) < 5e-3
    gpu_run(benchmark, fn, group=group, impl=impl, ops=layer.flops(BATCH),
            baseline="cudnn-fp16", kind="fp16", nnz_ops=layer.flops(BATCH) // 2)


@layers
@pytest.mark.parametrize("impl", ["pyfastcnn-csr", "cudnn-fp32", "cudnn-tf32"])
def test_sparse_fp32_s90(benchmark, layer, impl):
    group = f"sparse_fp32 {layer.id} b{BATCH} s{round(SPARSITY * 100)}"
    x = _layer_tensors(layer, torch.float32, torch.contiguous_format)
    w = torch.randn(layer.c_out, layer.c_in, layer.k, layer.k)
    w = w * (torch.rand_like(w) >= SPARSITY)
    nnz = int((w != 0).sum())
    bias = torch.randn(layer.c_out, device="cuda")
    args = dict(stride=layer.stride, padding=layer.padding)
    wd = w.cuda()
    saved = torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = impl == "cudnn-tf32"
        if impl.startswith("cudnn"):
            def fn():
                return F.conv2d(x, wd, bias, **args)
        else:
            packed = pyfastcnn.pack_sparse(w, "csr")

            def fn():
                return pyfastcnn.sparse_conv2d(x, packed, bias, **args)
            torch.backends.cudnn.allow_tf32 = False
            assert _rel_error(fn(), F.conv2d(x, wd, bias, **args)) < 1e-4  # cuDNN may use Winograd
        gpu_run(benchmark, fn, group=group, impl=impl, ops=layer.flops(BATCH),
                baseline="cudnn-fp32", kind="tf32" if impl == "cudnn-tf32" else "fp32",
                nnz_ops=2 * nnz * BATCH * layer.out_hw**2)
    finally:
        torch.backends.cudnn.allow_tf32 = saved
