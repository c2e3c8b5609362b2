"""Sensitivity analysis: prune one layer at a time, measure, and allocate a global budget."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .core import FilterFn, check_sparsity, prepare
from .criteria import Criterion, element_scores
from .structures import StructureLike, layer_mask


@dataclass
class SensitivityTable:
    """``results[layer][sparsity] = metric`` with the layer alone pruned to that sparsity.

    Attributes:
        baseline: the metric of the model as given.
        params: weights per layer (for budgets).
        higher_is_better: True for accuracy-like metrics, False for losses.
    """

    baseline: float
    results: Dict[str, Dict[float, float]] = field(default_factory=dict)
    params: Dict[str, int] = field(default_factory=dict)
    higher_is_better: bool = True

    @property
    def sparsities(self) -> List[float]:
        return sorted({s for row in self.results.values() for s in row})

    def drop(self, layer: str, sparsity: float) -> float:
        """Metric loss against the baseline (positive = worse)."""
        if sparsity == 0.0:
            return 0.0
        value = self.results[layer][sparsity]
        return self.baseline - value if self.higher_is_better else value - self.baseline

    def to_markdown(self) -> str:
        sp = self.sparsities
        rows = ["| layer | params | " + " | ".join(f"{s:.0%}" for s in sp) + " |",
                "|---|---|" + "---|" * len(sp)]
        for layer, row in self.results.items():
            rows.append(f"| {layer} | {self.params[layer]} | "
                        + " | ".join(f"{row[s]:.4g}" for s in sp) + " |")
        rows.append(f"\nbaseline: {self.baseline:.4g}")
        return "\n".join(rows)

    __str__ = to_markdown

    def allocate(self, budget: float, max_sparsity: Optional[float] = None
                 ) -> Dict[str, float]:
        """Per-layer sparsities reaching ``budget`` (fraction of all the analysed weights)
        while losing as little metric as the table predicts.

        Greedy: starting dense, repeatedly move one layer to its next measured sparsity, the
        move with the smallest predicted metric loss per pruned weight (losses of different
        layers taken as additive), until the budget is met; the result may overshoot by at most
        one move. Use it as ``prune(model, overrides=table.allocate(0.8))``.

        Raises ValueError when the budget exceeds what the measured sparsities can give.
        """
        budget = check_sparsity(budget, "budget")
        levels = [s for s in self.sparsities if max_sparsity is None or s <= max_sparsity]
        levels = [0.0] + [s for s in levels if s > 0]
        total = sum(self.params.values())
        reachable = sum(self.params[name] * levels[-1] for name in self.results)
        if budget * total > reachable + 1e-9:
            raise ValueError(f"budget={budget} exceeds the {reachable / total:.3f} reachable "
                             f"with the measured sparsities (max {levels[-1]})")
        pos = {name: 0 for name in self.results}
        pruned = 0.0
        while pruned < budget * total - 1e-9:
            best: Optional[Tuple[float, str, int]] = None
            for name, i in pos.items():
                row = self.results[name]
                # the cheapest next level of this layer (per weight), looking ahead
                for j in range(i + 1, len(levels)):
                    if levels[j] not in row:
                        continue
                    gain = (levels[j] - levels[i]) * self.params[name]
                    cost = self.drop(name, levels[j]) - self.drop(name, levels[i])
                    key = (cost / gain, name, j)
                    if best is None or key < best:
                        best = key
            if best is None:
                break
            _, name, j = best
            pruned += (levels[j] - levels[pos[name]]) * self.params[name]
            pos[name] = j
        return {name: levels[i] for name, i in pos.items()}


def sensitivity_analysis(
    model: nn.Module,
    metric: Callable[[nn.Module], float],
    sparsities: Sequence[float] = (0.25, 0.5, 0.75, 0.9),
    *,
    structure: StructureLike = "unstructured",
    criterion: Criterion = "l1",
    block_shape: Optional[Tuple[int, int]] = None,
    filter_fn: Optional[FilterFn] = None,
    skip: Optional[Iterable[str]] = None,
    higher_is_better: bool = True,
) -> SensitivityTable:
    """Prune each layer alone at each sparsity and measure ``metric(model)``.

    Calls ``metric`` ``1 + layers * len(sparsities)`` times (the first on the model as
    given); each layer's weight is restored exactly after its trials, so the model is unchanged
    on return. ``metric`` is run as is: put the model in eval mode and use ``torch.no_grad``
    inside it as needed (e.g. accuracy on a held-out batch).

    Returns a ``SensitivityTable``; ``table.allocate(budget)`` turns it into per-layer
    sparsities for ``prune(..., overrides=...)``.
    """
    if not callable(metric):
        raise TypeError(f"metric must be a callable model -> float, got "
                        f"{type(metric).__name__}")
    if isinstance(sparsities, (int, float)) or not sparsities:
        raise ValueError(f"sparsities must be a non-empty sequence of floats, got "
                         f"{sparsities!r}")
    sparsities = [check_sparsity(s, "sparsities") for s in sparsities]
    struct, _, layers, _ = prepare(model, max(sparsities), structure, criterion, "layer",
                                   block_shape, filter_fn, None, skip)
    if struct.fixed_sparsity is not None:
        raise ValueError(f"structure {str(struct)!r} has a fixed sparsity; use "
                         f"'unstructured' or 'block' for sensitivity analysis")

    def measure() -> float:
        value = metric(model)
        if isinstance(value, torch.Tensor):
            value = value.item()
        return float(value)

    table = SensitivityTable(measure(), higher_is_better=higher_is_better)
    for layer in layers:
        weight = layer.weight
        saved = weight.detach().clone()
        scores = element_scores(criterion, layer.name, layer.module, weight)
        row = {}
        try:
            for s in sparsities:
                keep = layer_mask(struct, scores, s, layer.groups)
                with torch.no_grad():
                    weight.copy_(saved * keep)
                row[s] = measure()
        finally:
            with torch.no_grad():
                weight.copy_(saved)
        table.results[layer.name] = row
        table.params[layer.name] = weight.numel()
    return table
