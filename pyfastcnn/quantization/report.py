"""Per-layer quantization error: SQNR of each INT8 layer's output against the float model."""
from __future__ import annotations

import math
from typing import Iterable, List, Optional

import torch

from .fake_quant import FakeQuantize
from .modules import QuantizableAdd, QuantizableModule


def sqnr(reference: torch.Tensor, test: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB: 10·log10(‖ref‖² / ‖ref − test‖²)."""
    ref, tst = reference.double(), test.double()
    noise = float((ref - tst).pow(2).sum())
    signal = float(ref.pow(2).sum())
    if noise == 0:
        return math.inf
    return 10 * math.log10(max(signal, 1e-300) / noise)


def _as_float(module: torch.nn.Module, y: torch.Tensor) -> torch.Tensor:
    if y.dtype == torch.float32:
        return y
    scale, zp = ((module.out_scale, module.out_zero_point))
    return (y.float() - zp) * scale


class _Recorder:
    def __init__(self):
        self.signal, self.noise, self.outputs = {}, {}, {}

    def hook(self, name, to_float=None):
        def fn(module, args, output):
            self.outputs[name] = (to_float(module, output) if to_float else output).detach()
        return fn


def quantization_report(prepared: torch.nn.Module, converted: torch.nn.Module,
                        batches: Iterable, max_batches: Optional[int] = None,
                        print_table: bool = False) -> List[dict]:
    """SQNR (dB) of every INT8 layer's output in ``converted`` against the same layer of the
    float model (``prepared`` with fake quantization off), on the given batches.

    Errors accumulate along the network, so read the table top to bottom: a layer whose SQNR
    drops sharply below its input's is a candidate for ``convert(..., keep_float=[name])``.
    Returns rows {"layer", "kind", "sqnr_db"} in execution order. A conv with a fused residual
    add (kind "QuantConv2d+add") is compared with the float model's add output.
    """
    from ..nn.quantized import QuantAdd, QuantConv2d, QuantLinear  # (import cycle)

    fqs = [m for m in prepared.modules() if isinstance(m, FakeQuantize)]
    saved = [(m.observe, m.fake_quant) for m in fqs]
    weights = [m for m in prepared.modules() if isinstance(m, QuantizableModule)]
    saved_w = [m.fake_quant_weight for m in weights]
    units = {n: m for n, m in prepared.named_modules()
             if isinstance(m, (QuantizableModule, QuantizableAdd))}
    layers = {n: m for n, m in converted.named_modules()
              if isinstance(m, (QuantConv2d, QuantLinear, QuantAdd)) and n in units}
    # the float unit each layer's output corresponds to (the add, for a fused residual add)
    source = {n: getattr(m, "fused_add", None) or n for n, m in layers.items()}
    layers = {n: m for n, m in layers.items() if source[n] in units}
    ref, test = _Recorder(), _Recorder()
    handles = [units[source[n]].register_forward_hook(ref.hook(n)) for n in layers]
    handles += [m.register_forward_hook(test.hook(n, _as_float)) for n, m in layers.items()]
    order: List[str] = []
    signal = {n: 0.0 for n in layers}
    noise = {n: 0.0 for n in layers}
    try:
        for m in fqs:
            m.observe, m.fake_quant = False, False
        for m in weights:
            m.fake_quant_weight = False
        prepared.eval()
        with torch.no_grad():
            for i, batch in enumerate(batches):
                if max_batches is not None and i >= max_batches:
                    break
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                prepared(x)
                converted(x)
                for n in layers:
                    if n not in ref.outputs or n not in test.outputs:
                        continue
                    r, t = ref.outputs[n].double(), test.outputs[n].double()
                    signal[n] += float(r.pow(2).sum())
                    noise[n] += float((r - t).pow(2).sum())
                if not order:
                    order = [n for n in ref.outputs if n in layers]
                ref.outputs.clear()
                test.outputs.clear()
    finally:
        for h in handles:
            h.remove()
        for m, (obs, fq) in zip(fqs, saved):
            m.observe, m.fake_quant = obs, fq
        for m, s in zip(weights, saved_w):
            m.fake_quant_weight = s
    rows = []
    for n in order:
        db = math.inf if noise[n] == 0 else 10 * math.log10(max(signal[n], 1e-300) / noise[n])
        kind = type(layers[n]).__name__ + ("+add" if source[n] != n else "")
        rows.append({"layer": n, "kind": kind, "sqnr_db": db})
    if print_table:
        width = max([len(r["layer"]) for r in rows] + [5])
        print(f"{'layer':<{width}}  {'kind':<15}  SQNR (dB)")
        for r in rows:
            print(f"{r['layer']:<{width}}  {r['kind']:<15}  {r['sqnr_db']:8.2f}")
    return rows
