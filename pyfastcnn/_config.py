"""Run-time settings (ISA level, threads) and the build/runtime report."""

from __future__ import annotations

import platform
from typing import Any, Dict

import torch

from . import _native

__version__ = "0.1.0"

ISAS = _native._ISA_NAMES
OPS = ("int8_gemm", "sparse_conv2d", "sparse_conv2d_block", "conv2d_dense", "conv2d_bf16", "sparse_quantized_conv2d",
       "sparse_quantized_conv2d_groups", "quantized_add", "quantize_per_tensor", "quantized_max_pool2d",
       "quantized_adaptive_avg_pool2d", "quantized_depthwise_conv2d")


def set_isa(name: str) -> None:
    """Select the CPU kernel level: "scalar", "avx2", "avx512", "avx512_vnni", "avx512_bf16" or
    "avx512_amx" (AMX tiles: INT8 GEMM and conv).

    A level above what this CPU supports raises ValueError. The environment variable
    PYFASTCNN_ISA does the same at import time.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    _native.C.set_isa(name)


def get_isa() -> str:
    """The CPU kernel level in use."""
    return _native.C.selected_isa()


def supported_isas() -> list:
    """Levels this CPU can run, lowest first."""
    return list(_native.C.supported_isas())


def set_num_threads(n: int) -> None:
    """Threads used by pyfastcnn's CPU kernels (its own pool; independent of torch's)."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    _native.C.set_num_threads(n)


def get_num_threads() -> int:
    return _native.C.get_num_threads()


def _cuda_info() -> Dict[str, Any]:
    if _native.cuda is None:
        return {"built": False, "reason": _native.CUDA_ERROR}
    info = dict(_native.cuda.build_info())
    info["built"] = True
    info["devices"] = _native.cuda.devices()
    return info


def config() -> Dict[str, Any]:
    """Everything show_config prints, as a dict."""
    info: Dict[str, Any] = {
        "version": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "native": _native.NATIVE_ERROR is None,
    }
    if _native.NATIVE_ERROR is not None:
        info["native_error"] = _native._explain(_native.NATIVE_ERROR)
    else:
        info.update(
            detected_isa=_native.C.detected_isa(),
            selected_isa=_native.C.selected_isa(),
            supported_isas=supported_isas(),
            kernels={op: _native.C.kernel_isa(op) for op in OPS},
            num_threads=_native.C.get_num_threads(),
            threading=_native.C.threading_backend(),
            torch_num_threads=torch.get_num_threads(),
            build=dict(_native.C.build_info()),
        )
    info["cuda"] = _cuda_info()
    return info


def show_config() -> None:
    """Print version, detected and selected ISA, threads, CUDA build and devices, compiler."""
    info = config()
    lines = [
        f"pyfastcnn {info['version']} (torch {info['torch']}, Python {info['python']}, "
        f"{info['machine']})"
    ]
    if not info["native"]:
        lines.append(f"native extension: NOT LOADED: {info['native_error']}")
    else:
        build = info["build"]
        lines += [
            f"CPU ISA: detected {info['detected_isa']}, selected {info['selected_isa']} "
            f"(supported: {', '.join(info['supported_isas'])})",
            "kernels: " + ", ".join(f"{op}={isa}" for op, isa in info["kernels"].items()),
            f"threads: {info['num_threads']} on {info['threading']} "
            f"(torch: {info['torch_num_threads']})",
            f"compiler: {build['compiler']} ({build['build_type']}, {build['flags']})",
        ]
        for isa, flags in build["isa_flags"].items():
            lines.append(f"  {isa}: {flags or '(no ISA flags)'}")
    cuda = info["cuda"]
    if cuda["built"]:
        devices = cuda["devices"]
        names = ", ".join(devices) if devices else "none visible"
        lines.append(f"CUDA: built (nvcc {cuda['nvcc']}, archs {cuda['archs']}); devices: {names}")
    else:
        lines.append(f"CUDA: not built ({cuda['reason']})")
    print("\n".join(lines))
