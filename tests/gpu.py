"""Shared by the CUDA tests: the skip marker, poisoned outputs and the float64 error measure."""

import os
import shutil

import pytest
import torch

from pyfastcnn import _native

HAVE_GPU = _native.cuda is not None and torch.cuda.is_available() and bool(_native.cuda.devices())
HAVE_NVCC = shutil.which("nvcc") is not None or os.path.exists("/usr/local/cuda/bin/nvcc")

needs_gpu = pytest.mark.skipif(
    not HAVE_GPU,
    reason="no CUDA GPU on this machine (or torch without CUDA): CUDA kernels are only "
    "compiled here; benchmarks/gpu/run.sh runs these tests on a GPU machine",
)


def sm() -> int:
    """Compute capability of the current device as 80, 86, 90, ..."""
    major, minor = torch.cuda.get_device_capability()
    return major * 10 + minor


def poison_(t: torch.Tensor) -> torch.Tensor:
    """Fills an output buffer with values no kernel writes (NaN, or the extreme integer), so an
    element the kernel skips fails the comparison."""
    if t.is_floating_point():
        return t.fill_(float("nan"))
    return t.fill_(torch.iinfo(t.dtype).min)
