"""The CUDA module: built where nvcc exists; its kernels run only where a GPU is present."""

import pytest
import torch
from gpu import HAVE_NVCC, needs_gpu

import pyfastcnn
from pyfastcnn import _native


@pytest.mark.skipif(not HAVE_NVCC, reason="no nvcc on this machine: the CUDA module is not built")
def test_cuda_module_was_built_where_nvcc_exists():
    info = pyfastcnn.config()["cuda"]
    assert info["built"], info.get("reason")
    assert "90a" in info["archs"] and "80" in info["archs"]


def test_import_never_needs_cuda():
    info = pyfastcnn.config()["cuda"]
    assert "built" in info
    if info["built"]:
        assert isinstance(info["devices"], list)


@needs_gpu
def test_placeholder_kernel_on_current_stream():
    x = torch.arange(1000, dtype=torch.float32, device="cuda")
    stream = torch.cuda.current_stream().cuda_stream
    _native.cuda.scale_f32(x.data_ptr(), x.numel(), 2.5, stream)
    torch.cuda.synchronize()
    assert torch.equal(x.cpu(), torch.arange(1000, dtype=torch.float32) * 2.5)
