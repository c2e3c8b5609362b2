"""Loads the native modules. Nothing here fails the import of pyfastcnn:

* `C` is pyfastcnn._C, or a stand-in whose every use raises an ImportError that says why the
  extension did not load and how to rebuild it.
* `cuda` is pyfastcnn._cuda, or None when it was not built (CUDA_ERROR says why).

Tensors cross into native code as (data_ptr, dtype_code, sizes, strides) tuples: see
`tensor_arg`. The codes match `enum class DType` in csrc/include/pyfastcnn/tensor_ref.h.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any, Optional

import torch

_DTYPE_CODES = {
    torch.float32: 0,
    torch.float64: 1,
    torch.float16: 2,
    torch.bfloat16: 3,
    torch.int8: 4,
    torch.uint8: 5,
    torch.int32: 6,
    torch.int64: 7,
}


def tensor_arg(t: torch.Tensor) -> tuple:
    """The native view of a CPU tensor: pointer, dtype code, sizes, strides (elements)."""
    return (t.data_ptr(), _DTYPE_CODES[t.dtype], tuple(t.shape), t.stride())


def optional_arg(t: Optional[torch.Tensor]) -> Optional[tuple]:
    return None if t is None else tensor_arg(t)


def run(op, impl, *args):
    """Calls a custom op's implementation directly in plain eager mode, or the registered op.

    The torch.library dispatch costs ~20 us per call, a few percent of a batch-1 layer. It is
    needed only where something traces the call (torch.compile, export) or tensors are
    subclasses (fake or functional tensors) or carry autograd state the op should refuse.
    """
    if not torch.compiler.is_compiling():
        for a in args:
            if isinstance(a, torch.Tensor) and (type(a) is not torch.Tensor or a.requires_grad):
                break
        else:
            return impl(*args)
    return op(*args)


def _explain(error: BaseException) -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    if os.path.exists(os.path.join(here, os.pardir, "setup.py")):
        return (
            f"pyfastcnn was imported from its source tree ({here}), which holds no built "
            f"extension. Run from another directory to use the installed package, or build in "
            f"place with `python setup.py build_ext --inplace`. ({error})"
        )
    return f"{error!r}. Reinstall with `pip install .` (needs a C++17 compiler); see the build log."


_ISA_NAMES = ("scalar", "avx2", "avx512", "avx512_vnni", "avx512_bf16", "avx512_amx")


class _MissingNative:
    """Stands in for pyfastcnn._C when it failed to load; explains itself on use."""

    def __init__(self, error: BaseException):
        self._error = error

    def __getattr__(self, name: str) -> Any:
        raise ImportError(
            f"pyfastcnn's native extension (pyfastcnn._C) is not available, so "
            f"'{name}' cannot run: {_explain(self._error)}"
        ) from self._error

    def __bool__(self) -> bool:
        return False


try:
    from . import _C as C  # type: ignore[attr-defined]

    NATIVE_ERROR: Optional[BaseException] = None
except ImportError as error:  # pragma: no cover - exercised only on broken installs
    C = _MissingNative(error)
    NATIVE_ERROR = error

CUDA_ERROR: Optional[str] = None
if importlib.util.find_spec(f"{__package__}._cuda") is None:
    cuda = None
    CUDA_ERROR = "no CUDA compiler at build time, or PYFASTCNN_CUDA=0"
else:
    try:
        from . import _cuda as cuda  # type: ignore[attr-defined]
    except ImportError as error:
        cuda = None
        CUDA_ERROR = f"built but failed to load: {error}"


def _apply_environment() -> None:
    """PYFASTCNN_ISA, PYFASTCNN_NUM_THREADS and PYFASTCNN_SIMULATE_CPU (caps the detected ISA,
    to test fallbacks as on an older CPU): a bad value is an error, not a silent default."""
    if NATIVE_ERROR is not None:
        return
    simulate = os.environ.get("PYFASTCNN_SIMULATE_CPU")
    if simulate and simulate not in _ISA_NAMES:
        raise ValueError(f"PYFASTCNN_SIMULATE_CPU={simulate!r}: choose from {_ISA_NAMES}")
    isa = os.environ.get("PYFASTCNN_ISA")
    if isa:
        try:
            C.set_isa(isa)
        except ValueError as error:
            raise ValueError(f"PYFASTCNN_ISA={isa!r}: {error}") from None
    threads = os.environ.get("PYFASTCNN_NUM_THREADS")
    if threads:
        if not threads.isdigit() or int(threads) < 1:
            raise ValueError(f"PYFASTCNN_NUM_THREADS={threads!r}: must be a positive integer")
        C.set_num_threads(int(threads))


_apply_environment()
