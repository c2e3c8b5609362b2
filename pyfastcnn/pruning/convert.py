"""``convert``: pruned Conv2d layers -> ``pyfastcnn.nn.SparseConv2d`` where that is faster."""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .. import _config
from ..ops.sparse_conv import BLOCK_COLS, _block_rows
from .masks import remove

# Speed-ups of the sparse kernels over dense oneDNN F.conv2d (channels_last), geomean over
# ResNet-50 layers, batch 1 and 8, per CPU kind. Index: sparsity. "csr" is measured on NCHW
# input, its fast layout, with the weight's prepared indices kept between calls (as a converted
# module does). The kernels are AVX-512 FP32 on the first two, AVX2 on the third; oneDNN's
# FP32 conv has twice the FMA rate on the Xeon, so the same kernels gain less there. A CPU
# with AMX tiles stands for that kind (none of the others measured has them), one without
# AVX-512 for the AVX2 kind.
_SPARSITIES = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98)
_MEASURED_BY_CPU = {
    # Xeon with AMX, evening of 2026-12-07 (benchmarks/results/cpu-amx-sparse.json)
    "amx": {
        ("csr", 1): (0.89, 1.38, 1.86, 2.90, 4.30, 6.13),
        ("csr", 2): (0.87, 1.30, 1.72, 2.52, 3.37, 4.14),
        ("block", 1): (1.80, 2.77, 3.61, 5.80, 8.27, 11.72),
        ("block", 2): (1.61, 2.43, 3.20, 4.59, 5.90, 7.51),
    },
    # AMD Zen 4 (no AMX), 2026-12-07 (benchmarks/results/cpu-zen4-sparse.json)
    "other": {
        ("csr", 1): (1.13, 1.78, 2.47, 4.10, 6.36, 9.85),
        ("csr", 2): (1.08, 1.64, 2.24, 3.48, 4.80, 6.38),
        ("block", 1): (2.10, 3.26, 4.51, 7.70, 11.85, 18.74),
        ("block", 2): (1.94, 2.91, 4.09, 6.45, 9.49, 13.32),
    },
    # AMD Zen 3 (AVX2, no AVX-512), 2026-12-07 (benchmarks/results/cpu-zen3-sparse.json)
    "avx2": {
        ("csr", 1): (1.04, 1.67, 2.22, 3.47, 5.13, 8.11),
        ("csr", 2): (1.07, 1.70, 2.18, 3.19, 4.07, 5.72),
        ("block", 1): (1.75, 2.77, 3.94, 5.98, 8.98, 13.92),
        ("block", 2): (1.84, 2.78, 3.83, 5.98, 7.64, 10.60),
    },
}


def _measured() -> Dict[Tuple[str, int], Tuple[float, ...]]:
    """The speed-up table for the CPU kind this runs on."""
    isas = _config.supported_isas()
    if "avx512_amx" in isas:
        return _MEASURED_BY_CPU["amx"]
    return _MEASURED_BY_CPU["other" if "avx512" in isas else "avx2"]


# Layer geometry (c_in, c_out, c_in per group, kh, kw, stride_h, stride_w), for the terms below.
Geometry = Tuple[int, int, int, int, int, int, int]
# A layer whose input is not in its kernel's layout (csr: NCHW, block: channels_last) pays
# transposing copies: time += LAYOUT_COPY[format] * (c_in * stride^2 + c_out) /
# (c_out * c_in/g * k^2) of the dense time per output pixel. block: fitted (median) on
# ResNet-18 layers at 90% (AMD). csr: on the ResNet-50 layers at 90% (Xeon, 2026-12-07), where
# the median is ~11 but 1x1 layers with many input channels on 56x56 maps measured ~45 (their
# channels_last input copy cost as much as the sparse conv): 20 keeps those dense. A 1x1
# stride-1 csr layer (groups 1) transposes its input tile by tile in cache instead
# (LAYOUT_COPY_1X1: 4-8 on the 56x56 and 28x28 ResNet-50 layers, <= 0 on 14x14 and 7x7).
LAYOUT_COPY = {"csr": 20.0, "block": 90.0}
LAYOUT_COPY_1X1 = 5.0


def _stride_factor(kh: int, kw: int, sh: int, sw: int) -> float:
    """csr kernel speed at stride > 1 relative to stride 1 (measured on the Xeon of
    2026-12-07, 90%, ResNet-50 layers: 1x1 s2 ~0.6-0.75, 3x3 s2 ~0.55-0.75, the 7x7 s2 stem
    ~0.75 of the stride-1 ratio)."""
    if sh * sw == 1:
        return 1.0
    return min(1.0, 0.62 + 0.003 * kh * kw)


def estimate_speedup(format: str, density: float, threads: int = 1,
                     channels_last: bool = True,
                     geometry: Optional[Geometry] = None) -> float:
    """Predicted dense-time / sparse-time of one conv layer (the cost model).

    Interpolates the measured table in log space over sparsity; below 50% sparsity, time is
    taken as proportional to the density plus a fixed part fitted at 50% and 90%. With the
    layer ``geometry`` it adds the stride effect on "csr" and the layout copies when the
    activations are not in the kernel's layout (csr reads NCHW, block channels_last).
    ``density`` for "block" is the stored fraction (whole blocks of 32 output channels).
    """
    t = 1 if threads <= 1 else 2
    ratios = _measured()[(format, t)]
    s = 1.0 - density
    if s >= _SPARSITIES[-1]:
        r = ratios[-1]
    elif s >= _SPARSITIES[0]:
        i = max(j for j in range(len(_SPARSITIES)) if _SPARSITIES[j] <= s)
        s0, s1 = _SPARSITIES[i], _SPARSITIES[i + 1]
        f = (s - s0) / (s1 - s0)
        r = math.exp((1 - f) * math.log(ratios[i]) + f * math.log(ratios[i + 1]))
    else:
        # r = a / (d + b) through the 50% and 90% points.
        r50, r90 = ratios[0], ratios[3]
        b = (0.5 * r50 - 0.1 * r90) / (r90 - r50)
        a = r50 * (0.5 + b)
        r = a / (density + b)
    if geometry is not None:
        c_in, c_out, cg, kh, kw, sh, sw = geometry
        if format == "csr":
            r *= _stride_factor(kh, kw, sh, sw)
        if channels_last == (format == "csr"):
            window = format == "csr" and kh * kw * sh * sw == 1 and cg == c_in
            copy = LAYOUT_COPY_1X1 if window else LAYOUT_COPY[format]
            r = 1.0 / (1.0 / r + copy * (c_in * sh * sw + c_out) / (c_out * cg * kh * kw))
    return r


@dataclass
class ConversionDecision:
    """What ``convert`` does with one Conv2d."""

    name: str
    sparsity: float
    format: Optional[str]  # "csr" / "block", or None: stays dense
    estimated_speedup: float  # predicted (or measured, with measure=True) dense/sparse time
    reason: str


def _block_density(weight: torch.Tensor, groups: int) -> float:
    """Fraction of the weight a 32-output-channel block format stores (kept blocks)."""
    oc = weight.shape[0]
    ocg = oc // groups
    panels = -(-ocg // BLOCK_COLS)
    widths = (ocg - torch.arange(panels) * BLOCK_COLS).clamp(max=BLOCK_COLS).repeat(groups)
    kept = (_block_rows(weight.detach().float(), groups) != 0).any(dim=2).sum(dim=1)
    return float((kept * widths).sum()) / weight.numel()


def _decide(name: str, conv: nn.Conv2d, threads: int, min_speedup: float,
            format: str, channels_last: bool) -> ConversionDecision:
    w = conv.weight.detach()
    density = float(torch.count_nonzero(w)) / w.numel()
    sparsity = 1.0 - density
    if sparsity == 0.0:
        return ConversionDecision(name, sparsity, None, 1.0, "not pruned")
    if conv.padding_mode != "zeros":
        return ConversionDecision(name, sparsity, None, 1.0,
                                  f"padding_mode={conv.padding_mode!r}")
    if conv.groups > 1 and w.shape[1] == 1:
        return ConversionDecision(name, sparsity, None, 1.0,
                                  "depthwise: too little work per weight to gain")
    geo = (w.shape[1] * conv.groups, w.shape[0], w.shape[1], w.shape[2], w.shape[3],
           conv.stride[0], conv.stride[1])
    candidates = {}
    if format in ("auto", "block"):
        bd = _block_density(w, conv.groups)
        # Like pack_sparse(format="auto"): blocks only when they are well filled.
        if format == "block" or bd <= 1.25 * density:
            candidates["block"] = estimate_speedup("block", bd, threads, channels_last, geo)
    if format in ("auto", "csr"):
        candidates["csr"] = estimate_speedup("csr", density, threads, channels_last, geo)
    best = max(candidates, key=candidates.get)
    r = candidates[best]
    if r < min_speedup:
        return ConversionDecision(name, sparsity, None, r,
                                  f"{best} estimated {r:.2f}x < min_speedup {min_speedup}")
    return ConversionDecision(name, sparsity, best, r, f"{best} estimated {r:.2f}x")


def _time(fn, x, reps: int = 3) -> float:
    with torch.no_grad():
        fn(x)
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            fn(x)
            best = min(best, time.perf_counter() - t0)
    return best


def _capture_inputs(model: nn.Module, names: Sequence[str],
                    example_inputs: Sequence[torch.Tensor]) -> Dict[str, torch.Tensor]:
    modules = dict(model.named_modules())
    seen: Dict[str, torch.Tensor] = {}
    handles = []
    for n in names:
        def hook(mod, args, n=n):
            seen.setdefault(n, args[0].detach().clone(
                memory_format=torch.preserve_format))
        handles.append(modules[n].register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            model(*example_inputs)
    finally:
        for h in handles:
            h.remove()
    return seen


def conversion_plan(
    model: nn.Module,
    *,
    format: str = "auto",
    min_speedup: float = 1.2,
    threads: Optional[int] = None,
    channels_last: bool = True,
    measure: bool = False,
    example_inputs: Optional[Sequence[torch.Tensor]] = None,
    skip: Sequence[str] = (),
) -> List[ConversionDecision]:
    """The decision ``convert`` would make for each Conv2d (nothing is changed).

    See ``convert`` for the arguments.
    """
    from ..nn import SparseConv2d

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if format not in ("auto", "csr", "block"):
        raise ValueError(f"format must be 'auto', 'csr' or 'block', got {format!r}")
    if isinstance(min_speedup, bool) or not isinstance(min_speedup, (int, float)):
        raise TypeError(f"min_speedup must be a number, got {type(min_speedup).__name__}")
    if threads is None:
        threads = _config.get_num_threads()
    if measure and example_inputs is None:
        raise ValueError("measure=True needs example_inputs (a tuple of model inputs)")
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    decisions = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and name not in skip:
            decisions.append(_decide(name, m, threads, min_speedup, format, channels_last))
    if measure:
        modules = dict(model.named_modules())
        todo = [d.name for d in decisions if d.sparsity > 0 and "depthwise" not in d.reason
                and "padding_mode" not in d.reason]
        inputs = _capture_inputs(model, todo, example_inputs)
        for d in decisions:
            if d.name not in inputs:
                continue
            conv, x = modules[d.name], inputs[d.name]
            dense = _time(conv, x)
            options = ("csr", "block") if format == "auto" else (format,)
            timings = {f: _time(SparseConv2d.from_dense(conv, f), x) for f in options}
            best = min(timings, key=timings.get)
            d.estimated_speedup = dense / timings[best]
            if d.estimated_speedup >= min_speedup:
                d.format, d.reason = best, f"{best} measured {d.estimated_speedup:.2f}x"
            else:
                d.format = None
                d.reason = f"{best} measured {d.estimated_speedup:.2f}x < {min_speedup}"
    return decisions


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


def convert(
    model: nn.Module,
    *,
    format: str = "auto",
    min_speedup: float = 1.2,
    threads: Optional[int] = None,
    channels_last: bool = True,
    measure: bool = False,
    example_inputs: Optional[Sequence[torch.Tensor]] = None,
    skip: Sequence[str] = (),
    inplace: bool = True,
) -> nn.Module:
    """Replace pruned ``nn.Conv2d`` layers by ``pyfastcnn.nn.SparseConv2d`` (inference).

    Pruning is made permanent first (``remove``). Each Conv2d with zero weights gets the
    sparse format predicted fastest: "block" when its zeros come in 32-output-channel blocks
    (stored fraction at most 1.25x its density), else "csr"; it stays dense when the
    predicted speed-up is below ``min_speedup`` (cost model: ``estimate_speedup``, from the
    kernels' measured speed-ups by sparsity and thread count), or with ``measure=True`` when
    a quick timing of both on the layer's real input (from one pass over ``example_inputs``)
    says so. Depthwise convs stay dense. Layers keep their position and name, so the model's
    own ``forward`` runs unchanged; a following ReLU is not fused.

    Args:
        format: "auto", or force "csr" / "block" for every converted layer.
        threads: thread count the model will run with (default: ``pyfastcnn.get_num_threads()``).
        channels_last: whether activations will be channels_last (csr layers then pay layout
            copies; the cost model accounts for it).
        skip: Conv2d names left dense.
        inplace: False converts a deep copy.

    Returns the converted model (``model`` itself when ``inplace``); inputs must be float32 CPU.
    """
    from ..nn import SparseConv2d

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    remove(model)
    decisions = conversion_plan(model, format=format, min_speedup=min_speedup, threads=threads,
                                channels_last=channels_last, measure=measure,
                                example_inputs=example_inputs, skip=skip)
    modules = dict(model.named_modules())
    for d in decisions:
        if d.format is not None:
            conv = modules[d.name]
            sparse = SparseConv2d.from_dense(conv, d.format)
            sparse.train(conv.training)
            _set_module(model, d.name, sparse)
    return model


def converted_layers(model: nn.Module) -> List[Tuple[str, str]]:
    """(name, format) of every SparseConv2d in ``model``."""
    from ..nn import SparseConv2d

    return [(n, m.packed.format) for n, m in model.named_modules()
            if isinstance(m, SparseConv2d)]
