"""What every op with a CUDA kernel needs before calling pyfastcnn._cuda.

The CUDA module links its own CUDA runtime and knows nothing of torch: it gets device pointers,
the device index and the caller's current stream (as an integer) from here, so its kernels run
in stream order with the caller's other work.
"""

from __future__ import annotations

from typing import Optional

import torch

from .. import _native


def cuda_module():
    """pyfastcnn._cuda, or a RuntimeError saying why a CUDA tensor cannot run here."""
    if _native.cuda is None:
        raise RuntimeError(
            "this op got CUDA tensors, but pyfastcnn was built without its CUDA module "
            f"({_native.CUDA_ERROR}); reinstall with nvcc on the PATH and PYFASTCNN_CUDA=1"
        )
    return _native.cuda


def raw_stream(device_index: int) -> int:
    """The current stream of a device as an integer, without making a Stream object (a few
    microseconds per call saved where the private accessor exists)."""
    get = getattr(torch._C, "_cuda_getCurrentRawStream", None)
    if get is not None:
        return get(device_index)
    return torch.cuda.current_stream(device_index).cuda_stream


def stream_of(t: torch.Tensor) -> int:
    """The current stream of t's device, as the integer the native launchers take."""
    return raw_stream(t.device.index if t.device.index is not None else
                      torch.cuda.current_device())


def same_device(reference_name: str, reference: torch.Tensor, **others: Optional[torch.Tensor]):
    """ValueError naming the first tensor argument that is not on `reference`'s device."""
    for name, t in others.items():
        if t is not None and t.device != reference.device:
            raise ValueError(
                f"{name} must be on the same device as {reference_name} ({reference.device}), "
                f"got {t.device}"
            )


def ptr(t: Optional[torch.Tensor]) -> int:
    """Device pointer of a tensor, 0 for None (optional operands)."""
    return 0 if t is None else t.data_ptr()
