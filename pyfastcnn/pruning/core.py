"""``prune``: mask-based pruning of the weights of Conv/Linear layers (in place)."""
from __future__ import annotations

import fnmatch
import math
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from .criteria import Criterion, check_criterion, element_scores
from .masks import apply_mask, get_mask
from .structures import (
    Structure,
    StructureLike,
    Unstructured,
    global_masks,
    layer_mask,
    parse_structure,
)

FilterFn = Callable[[nn.Module, str], bool]
PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
SCOPES = ("layer", "global")


@dataclass
class Layer:
    """A weight chosen for pruning."""

    name: str
    module: nn.Module

    @property
    def weight(self) -> torch.Tensor:
        return self.module.weight

    @property
    def groups(self) -> int:
        return getattr(self.module, "groups", 1)


def check_sparsity(sparsity, arg: str = "sparsity") -> float:
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)):
        raise TypeError(f"{arg} must be a float in [0, 1], got {type(sparsity).__name__}")
    sparsity = float(sparsity)
    if not (0.0 <= sparsity <= 1.0) or math.isnan(sparsity):
        raise ValueError(f"{arg} must be in [0, 1], got {sparsity}")
    return sparsity


def _check_model(model) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")


def _matches(name: str, pattern: str) -> bool:
    return name == pattern or fnmatch.fnmatchcase(name, pattern)


def select_layers(model: nn.Module, filter_fn: Optional[FilterFn] = None,
                  skip: Optional[Iterable[str]] = None,
                  types: Tuple[type, ...] = PRUNABLE) -> List[Layer]:
    """Conv/Linear layers of ``model`` that ``filter_fn(module, name)`` accepts (default: all
    of ``types``), minus the names (or fnmatch patterns such as ``"layer1.*"``) in ``skip``.
    A ``skip`` entry that matches no layer is an error (a typo would silently prune)."""
    _check_model(model)
    if filter_fn is not None and not callable(filter_fn):
        raise TypeError(f"filter_fn must be callable (module, name) -> bool, got "
                        f"{type(filter_fn).__name__}")
    if isinstance(skip, str):
        skip = [skip]
    skip = list(skip or [])
    for s in skip:
        if not isinstance(s, str):
            raise TypeError(f"skip must be a list of layer names, got an entry {s!r}")
    layers, names = [], []
    for name, module in model.named_modules():
        if not isinstance(getattr(module, "weight", None), nn.Parameter):
            continue
        names.append(name)
        if filter_fn is None:
            if not isinstance(module, types):
                continue
        elif not filter_fn(module, name):
            continue
        if any(_matches(name, s) for s in skip):
            continue
        layers.append(Layer(name, module))
    for s in skip:
        if not any(_matches(n, s) for n in names):
            raise ValueError(f"skip: {s!r} matches no layer with a weight in the model")
    return layers


def _resolve_overrides(layers: Sequence[Layer], overrides: Optional[Mapping[str, float]]
                       ) -> Dict[str, float]:
    if overrides is None:
        return {}
    if not isinstance(overrides, Mapping):
        raise TypeError(f"overrides must be a dict {{layer name: sparsity}}, got "
                        f"{type(overrides).__name__}")
    out: Dict[str, float] = {}
    for pattern, value in overrides.items():
        value = check_sparsity(value, f"overrides[{pattern!r}]")
        hits = [layer.name for layer in layers if _matches(layer.name, pattern)]
        if not hits:
            raise ValueError(f"overrides: {pattern!r} matches no prunable layer (after "
                             f"filter_fn and skip)")
        for h in hits:
            out[h] = value
    return out


def _scores(layer: Layer, criterion: Criterion, generator,
            structure: Structure) -> torch.Tensor:
    scores = element_scores(criterion, layer.name, layer.module, layer.weight, generator)
    old = get_mask(layer.module)
    if old is not None:
        # Already-pruned weights stay pruned (masks only grow; the new mask is and-ed with the
        # old one). Unstructured: they go first, so counts stay exact. Larger units: they count
        # as the lowest score, as a zero weight does for magnitude criteria, so a unit with one
        # pruned element is not forced out.
        fill = float("-inf") if isinstance(structure, Unstructured) else min(
            0.0, float(scores.min()))
        scores = scores.masked_fill(~old, fill)
    return scores


def compute_masks(layers: Sequence[Layer], sparsity: Optional[float], structure: Structure,
                  criterion: Criterion = "l1", scope: str = "layer",
                  overrides: Optional[Mapping[str, float]] = None,
                  generator: Optional[torch.Generator] = None) -> Dict[str, torch.Tensor]:
    """Keep masks ``{layer name: bool mask}`` for ``layers`` (nothing applied)."""
    overrides = overrides or {}
    masks: Dict[str, torch.Tensor] = {}
    pool = []
    for layer in layers:
        if layer.name in overrides or scope == "layer":
            target = overrides.get(layer.name, sparsity)
            scores = _scores(layer, criterion, generator, structure)
            masks[layer.name] = layer_mask(structure, scores, target, layer.groups)
        else:
            pool.append(layer)
    if pool:
        got = global_masks(structure,
                           [_scores(layer, criterion, generator, structure) for layer in pool],
                           sparsity, [layer.groups for layer in pool])
        masks.update({layer.name: m for layer, m in zip(pool, got)})
    for layer in layers:
        old = get_mask(layer.module)
        if old is not None:
            masks[layer.name] = masks[layer.name] & old
    return masks


def prepare(model: nn.Module, sparsity: Optional[float], structure: StructureLike,
            criterion: Criterion, scope: str, block_shape, filter_fn, overrides, skip):
    """Validates the arguments of ``prune``; returns (structure, sparsity, layers, overrides)."""
    _check_model(model)
    struct = parse_structure(structure, block_shape)
    check_criterion(criterion)
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    if struct.fixed_sparsity is not None:
        if sparsity is not None and abs(float(sparsity) - struct.fixed_sparsity) > 1e-9:
            raise ValueError(f"sparsity={sparsity} contradicts structure {str(struct)!r}, "
                             f"whose sparsity is {struct.fixed_sparsity}: pass sparsity=None")
        if overrides:
            raise ValueError(f"overrides do not apply to the fixed-sparsity structure "
                             f"{str(struct)!r}")
        sparsity = struct.fixed_sparsity
    elif sparsity is None:
        raise ValueError(f"sparsity is required for structure {str(struct)!r}")
    sparsity = check_sparsity(sparsity)
    layers = select_layers(model, filter_fn, skip)
    ov = _resolve_overrides(layers, overrides)
    kept, bad = [], []
    for layer in layers:
        why = struct.incompatible(layer.weight.shape, layer.groups)
        if why is None:
            kept.append(layer)
        elif layer.name in ov:
            raise ValueError(f"overrides: layer {layer.name!r} cannot take structure "
                             f"{str(struct)!r}: {why}")
        else:
            bad.append(f"{layer.name} ({why})")
    if bad:
        warnings.warn(f"prune: structure {str(struct)!r} skips {len(bad)} layer(s): "
                      + "; ".join(bad), stacklevel=3)
    return struct, sparsity, kept, ov


def prune(
    model: nn.Module,
    sparsity: Optional[float] = None,
    structure: StructureLike = "unstructured",
    *,
    criterion: Criterion = "l1",
    scope: str = "layer",
    block_shape: Optional[Tuple[int, int]] = None,
    filter_fn: Optional[FilterFn] = None,
    overrides: Optional[Mapping[str, float]] = None,
    skip: Optional[Iterable[str]] = None,
    generator: Optional[torch.Generator] = None,
) -> nn.Module:
    """Prune the weights of ``model``'s Conv/Linear layers with masks, in place.

    Args:
        model: any ``nn.Module``; its pruned parameters stay the same ``nn.Parameter`` objects,
            zeroed where pruned, each with a ``<name>_mask`` buffer (see ``masks``).
        sparsity: fraction of weights to prune, in [0, 1] (unstructured: exactly
            ``round(sparsity * numel)`` per layer). None for N:M (its sparsity is 1 - N/M).
        structure: "unstructured", "N:M" (e.g. "2:4", along input channels), "block"
            (``block_shape=(out_channels, in_channels)``, default (32, 1) = the "block" sparse
            kernel's unit), or a ``Structure`` (``Unstructured()``, ``NM(2, 4)``,
            ``Block((1, 4))``). Layers a structure cannot take (e.g. 3 input channels for 2:4)
            are skipped with a warning.
        criterion: "l1" (magnitude, default), "l2", "random", "taylor" (|w * grad|, needs
            ``.grad``), or ``fn(name, module, weight) -> scores`` (higher = keep).
        scope: "layer" (each layer to ``sparsity``) or "global" (one threshold across layers).
        filter_fn: ``fn(module, name) -> bool`` choosing layers; default all Conv1d/2d/3d and
            Linear.
        overrides: ``{name or pattern: sparsity}`` per layer (taken out of the global pool).
        skip: layer names or fnmatch patterns (``"fc"``, ``"layer1.*"``) left dense.
        generator: random source for ``criterion="random"``.

    Already-pruned weights stay pruned (masks only grow); ``remove(model)`` makes it permanent.
    Returns ``model``.
    """
    struct, sparsity, layers, ov = prepare(model, sparsity, structure, criterion, scope,
                                           block_shape, filter_fn, overrides, skip)
    new = compute_masks(layers, sparsity, struct, criterion, scope, ov, generator)
    for layer in layers:
        apply_mask(layer.module, new[layer.name])
    return model
