"""Importance criteria: one score per weight element, higher = more important.

A criterion is a name ("l1", "l2", "random", "taylor") or a callable
``fn(name, module, weight) -> scores`` returning a float tensor shaped like ``weight``.
Structures (unstructured, N:M, blocks, channels) sum element scores over their units.
"""
from __future__ import annotations

from typing import Callable, Optional, Union

import torch
from torch import nn

CRITERIA = ("l1", "l2", "random", "taylor")

CriterionFn = Callable[[str, nn.Module, torch.Tensor], torch.Tensor]
Criterion = Union[str, CriterionFn]


def check_criterion(criterion: Criterion) -> Criterion:
    """Returns ``criterion`` or raises naming the argument."""
    if callable(criterion):
        return criterion
    if not isinstance(criterion, str):
        raise TypeError(
            f"criterion must be one of {CRITERIA} or a callable, got {type(criterion).__name__}")
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA} or a callable, got {criterion!r}")
    return criterion


def element_scores(criterion: Criterion, name: str, module: nn.Module, weight: torch.Tensor,
                   generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Per-element importance of ``weight`` (any shape), float32, same shape, non-negative
    for the built-in criteria.

    * "l1": |w| (magnitude; the default).
    * "l2": w^2 (same order as l1 element-wise; sums over a block give its squared L2 norm).
    * "random": uniform [0, 1) (a control), from ``generator`` when given.
    * "taylor": |w * dL/dw| (first-order Taylor estimate of the loss change when w is removed);
      needs ``weight.grad`` (run ``loss.backward()`` first).
    """
    w = weight.detach()
    if callable(criterion):
        scores = criterion(name, module, weight)
        if not isinstance(scores, torch.Tensor) or scores.shape != w.shape:
            got = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores)
            raise ValueError(f"criterion callable must return a tensor of shape "
                             f"{tuple(w.shape)} for {name!r}, got {got}")
        return scores.detach().float()
    if criterion == "l1":
        return w.abs().float()
    if criterion == "l2":
        return w.float().square()
    if criterion == "random":
        return torch.rand(w.shape, generator=generator, device=w.device)
    if criterion == "taylor":
        if weight.grad is None:
            raise ValueError(f"criterion='taylor' needs gradients: {name!r} has no .grad; run "
                             f"loss.backward() on a batch before pruning")
        return (w * weight.grad.detach()).abs().float()
    raise ValueError(f"criterion must be one of {CRITERIA} or a callable, got {criterion!r}")
