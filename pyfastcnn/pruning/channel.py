"""Channel (filter) pruning: output channels removed physically, the next layers rewired.

The model is traced with ``torch.fx`` and its shapes found with one pass over example inputs.
Every tensor's channel dimension is put into a *group* with everything that must agree on it:

* a Conv2d (groups=1) or Linear *produces* its output channels (weight rows, bias) and
  *consumes* its input channels (weight columns);
* BatchNorm and depthwise convs (groups = in = out channels) pass channels through, and are
  sliced with them;
* activations, pooling, dropout and flatten to ``[N, C]`` pass channels through;
* ``x + y`` (residual adds), ``x * y`` and ``x - y`` couple the channels of both operands, so
  all the convs feeding a chain of residual blocks are pruned alike.

A group touching the model's inputs or outputs, a grouped (non-depthwise) conv, ``cat``,
reshapes that mix channels, or any op not known here is *pinned*: left as it is. Removing a
channel equals zeroing it (its producers' weights and BN scale/shift) when the ops between
producers and consumers map 0 to 0 (ReLU, ReLU6, pooling; not sigmoid).
"""
from __future__ import annotations

import fnmatch
import operator
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from .core import check_sparsity

_PASSTHROUGH_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardtanh,
    nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.Mish, nn.PReLU, nn.Dropout, nn.Dropout2d,
    nn.Identity, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
)
_PASSTHROUGH_FUNCTIONS = {
    F.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, F.hardswish, F.hardtanh,
    F.hardsigmoid, F.dropout, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d,
    F.adaptive_max_pool2d, torch.relu, torch.sigmoid, torch.tanh, torch.clamp,
    torch.nn.functional.sigmoid, torch.nn.functional.tanh,
}
_PASSTHROUGH_METHODS = {"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "clamp",
                        "clamp_", "contiguous", "clone", "float", "to"}
_BINARY = {operator.add, operator.iadd, operator.mul, operator.imul, operator.sub,
           operator.isub, torch.add, torch.mul, torch.sub}
_BINARY_METHODS = {"add", "add_", "mul", "mul_", "sub", "sub_"}
_FLATTEN = {torch.flatten}
_FLATTEN_METHODS = {"flatten", "view", "reshape"}
_MEAN_METHODS = {"mean", "sum", "amax"}

_PIN = ("pinned",)


class ChannelPruningError(RuntimeError):
    """The model cannot be analysed for channel pruning (e.g. torch.fx cannot trace it)."""


@dataclass
class ChannelGroup:
    """Channels that must be pruned together.

    Attributes:
        channels: number of channels.
        producers: modules whose output channels these are (Conv2d weight dim 0, Linear rows).
        consumers: modules reading them as input channels (Conv2d weight dim 1, Linear columns).
        passthrough: BatchNorm / depthwise convs indexed by them.
        pinned: why the group cannot be pruned, or None.
        remove: channel indices chosen for removal (by ``channel_plan``).
    """

    channels: int
    producers: List[str] = field(default_factory=list)
    consumers: List[str] = field(default_factory=list)
    passthrough: List[str] = field(default_factory=list)
    pinned: Optional[str] = None
    remove: List[int] = field(default_factory=list)

    @property
    def keep(self) -> List[int]:
        gone = set(self.remove)
        return [c for c in range(self.channels) if c not in gone]

    @property
    def name(self) -> str:
        return self.producers[0] if self.producers else "<none>"


class _UnionFind:
    def __init__(self):
        self.parent: Dict[tuple, tuple] = {}

    def find(self, k: tuple) -> tuple:
        self.parent.setdefault(k, k)
        while self.parent[k] != k:
            self.parent[k] = self.parent[self.parent[k]]
            k = self.parent[k]
        return k

    def union(self, a: tuple, b: tuple) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[ra] = rb


class _Tracer(fx.Tracer):
    def __init__(self, leaf_types: Tuple[type, ...]):
        super().__init__()
        self.leaf_types = leaf_types

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, self.leaf_types) or super().is_leaf_module(m, qualname)


def _is_depthwise(conv: nn.Conv2d) -> bool:
    return conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels


def _shape(node) -> Optional[Tuple[int, ...]]:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _tensor_nodes(args) -> List[fx.Node]:
    out: List[fx.Node] = []
    fx.node.map_arg(args, lambda n: out.append(n) if _shape(n) is not None else None)
    return out


def analyse(model: nn.Module, example_inputs: Sequence[torch.Tensor],
            leaf_modules: Sequence[type] = ()) -> List[ChannelGroup]:
    """The channel groups of ``model`` (pinned ones included), from an fx trace.

    Raises ``ChannelPruningError`` when the model cannot be traced or run on the inputs.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if not isinstance(example_inputs, (tuple, list)) or not example_inputs:
        raise TypeError("example_inputs must be a tuple of tensors the model accepts, e.g. "
                        "(torch.randn(1, 3, 224, 224),)")
    try:
        graph = _Tracer(tuple(leaf_modules)).trace(model)
    except Exception as e:  # noqa: BLE001 - any tracing failure gets the same advice
        raise ChannelPruningError(
            f"torch.fx cannot trace {type(model).__name__} ({type(e).__name__}: {e}). Channel "
            f"pruning needs a traceable forward (no control flow on tensor values); pass the "
            f"untraceable submodule types as leaf_modules=[...] (their channels are then left "
            f"alone), or prune with masks: prune(model, sparsity, structure=...)") from e
    gm = fx.GraphModule(model, graph)
    was_training = model.training
    model.eval()  # no BN statistics updates from the shape pass
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(*example_inputs)
    except Exception as e:  # noqa: BLE001
        raise ChannelPruningError(f"running {type(model).__name__} on example_inputs failed "
                                  f"({type(e).__name__}: {e})") from e
    finally:
        model.train(was_training)

    modules = dict(model.named_modules())
    uf = _UnionFind()
    reasons: Dict[tuple, str] = {}

    def key(n: fx.Node) -> tuple:
        return ("node", n.name)

    def pin(k: tuple, why: str) -> None:
        reasons.setdefault(k, why)
        uf.union(k, _PIN)

    def pin_all(node: fx.Node, why: str) -> None:
        for t in _tensor_nodes((node.args, node.kwargs)):
            pin(key(t), why)
        if _shape(node) is not None:
            pin(key(node), why)

    def chan(n: fx.Node) -> Optional[int]:
        s = _shape(n)
        return s[1] if s is not None and len(s) >= 2 else None

    for node in gm.graph.nodes:
        out_shape = _shape(node)
        if node.op == "placeholder":
            if out_shape is not None:
                pin(key(node), "model input")
            continue
        if node.op == "output":
            for t in _tensor_nodes(node.args):
                pin(key(t), "model output")
            continue
        if node.op == "get_attr":
            if out_shape is not None:
                pin(key(node), f"tensor attribute {node.target}")
            continue
        if out_shape is None:
            continue  # sizes, ints: no channels
        tensors = _tensor_nodes((node.args, node.kwargs))
        x = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
        if node.op == "call_module":
            mod = modules[node.target]
            name = node.target
            if isinstance(mod, nn.Conv2d) and x is not None:
                if mod.groups == 1:
                    uf.union(key(x), ("in", name))
                    uf.union(key(node), ("out", name))
                elif _is_depthwise(mod):
                    uf.union(key(x), ("ch", name))
                    uf.union(key(node), ("ch", name))
                else:
                    pin_all(node, f"grouped conv {name} (groups={mod.groups})")
            elif isinstance(mod, nn.Linear) and x is not None:
                if len(_shape(x) or ()) == 2:
                    uf.union(key(x), ("in", name))
                    uf.union(key(node), ("out", name))
                else:
                    pin_all(node, f"Linear {name} on a {len(_shape(x) or ())}-d input")
            elif isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)) and x is not None:
                uf.union(key(x), ("ch", name))
                uf.union(key(node), ("ch", name))
            elif isinstance(mod, _PASSTHROUGH_MODULES) and x is not None and \
                    not (isinstance(mod, nn.PReLU) and mod.num_parameters > 1):
                uf.union(key(x), key(node))
            elif isinstance(mod, nn.Flatten) and x is not None:
                _flatten(uf, pin_all, node, x, key)
            else:
                pin_all(node, f"{type(mod).__name__} {name} (not analysed)")
            continue
        target = node.target
        is_fn = node.op == "call_function"
        if (is_fn and target in _PASSTHROUGH_FUNCTIONS) or (
                not is_fn and target in _PASSTHROUGH_METHODS):
            if x is not None and chan(x) == chan(node):
                uf.union(key(x), key(node))
            else:
                pin_all(node, f"{target}")
        elif (is_fn and target in _BINARY) or (not is_fn and target in _BINARY_METHODS):
            for t in tensors:
                ts = _shape(t)
                if len(ts) == len(out_shape) and ts[1] == out_shape[1]:
                    uf.union(key(t), key(node))
                elif len(ts) == len(out_shape) and ts[1] == 1:
                    continue  # broadcast over channels: no coupling
                else:
                    pin_all(node, f"broadcast in {node.name}")
        elif (is_fn and target in _FLATTEN) or (not is_fn and target in _FLATTEN_METHODS):
            _flatten(uf, pin_all, node, x, key)
        elif not is_fn and target in _MEAN_METHODS and x is not None and \
                len(out_shape) >= 2 and chan(x) == chan(node) and _shape(x)[0] == out_shape[0]:
            uf.union(key(x), key(node))
        else:
            name = getattr(target, "__name__", str(target))
            pin_all(node, f"{name} in {node.name} (not analysed)")

    # Collect the groups.
    by_root: Dict[tuple, ChannelGroup] = {}
    members: Dict[tuple, List[tuple]] = {}
    for k in list(uf.parent):
        members.setdefault(uf.find(k), []).append(k)
    pinned_root = uf.find(_PIN)
    groups = []
    for root, ks in members.items():
        g = ChannelGroup(channels=0)
        for k in ks:
            if k[0] == "out":
                g.producers.append(k[1])
            elif k[0] == "in":
                g.consumers.append(k[1])
            elif k[0] == "ch":
                g.passthrough.append(k[1])
        sizes = set()
        for name in g.producers:
            m = modules[name]
            sizes.add(m.out_channels if isinstance(m, nn.Conv2d) else m.out_features)
        for name in g.consumers:
            m = modules[name]
            sizes.add(m.in_channels if isinstance(m, nn.Conv2d) else m.in_features)
        for name in g.passthrough:
            m = modules[name]
            sizes.add(m.out_channels if isinstance(m, nn.Conv2d) else m.num_features)
        if not (g.producers or g.consumers or g.passthrough):
            continue
        g.channels = max(sizes)
        if root == pinned_root:
            why = sorted({reasons[k] for k in ks if k in reasons})
            g.pinned = "; ".join(why[:3]) + (f" (+{len(why) - 3} more)" if len(why) > 3 else "")
        elif len(sizes) != 1:
            g.pinned = f"channel counts disagree: {sorted(sizes)}"
        elif not g.producers:
            g.pinned = "no producing layer"
        groups.append(g)
        by_root[root] = g
    groups.sort(key=lambda g: g.name)
    return groups


def _flatten(uf, pin_all, node, x, key) -> None:
    xs, os_ = _shape(x), _shape(node)
    if xs is not None and os_ is not None and len(os_) == 2 and xs[1] == os_[1] and \
            all(d == 1 for d in xs[2:]):
        uf.union(key(x), key(node))
    else:
        pin_all(node, f"reshape/flatten in {node.name} mixes channels with other dims")


@dataclass
class ChannelPlan:
    """Channel groups of a model and the channels chosen for removal; ``apply`` removes them
    from a model (the one analysed, or a copy: modules are found by name)."""

    groups: List[ChannelGroup]

    @property
    def prunable(self) -> List[ChannelGroup]:
        return [g for g in self.groups if g.pinned is None]

    def summary(self) -> str:
        rows = ["| group (first producer) | channels | removed | producers | pinned |",
                "|---|---|---|---|---|"]
        for g in self.groups:
            rows.append(f"| {g.name} | {g.channels} | {len(g.remove)} | {len(g.producers)} | "
                        f"{g.pinned or ''} |")
        return "\n".join(rows)

    @torch.no_grad()
    def zero_(self, model: nn.Module) -> nn.Module:
        """Zero the channels to remove instead (producers' weight rows and biases, BN scale
        and shift, depthwise filters): the masked model ``apply`` is equivalent to."""
        modules = dict(model.named_modules())
        for g in self.groups:
            if not g.remove:
                continue
            idx = torch.tensor(g.remove, dtype=torch.long)
            for name in g.producers + g.passthrough:
                m = modules[name]
                for p in (m.weight, m.bias):
                    if p is not None:
                        p.index_fill_(0, idx, 0.0)
        return model

    @torch.no_grad()
    def apply(self, model: nn.Module) -> nn.Module:
        """Remove the chosen channels from ``model`` in place; returns it. Parameters are
        replaced by smaller ones: make the optimizer afterwards."""
        modules = dict(model.named_modules())
        for g in self.groups:
            if not g.remove:
                continue
            keep = torch.tensor(g.keep, dtype=torch.long)
            for name in g.producers:
                m = modules[name]
                _slice(m, 0, keep)
                if isinstance(m, nn.Conv2d):
                    m.out_channels = len(keep)
                else:
                    m.out_features = len(keep)
            for name in g.consumers:
                m = modules[name]
                _slice(m, 1, keep, bias=False)
                if isinstance(m, nn.Conv2d):
                    m.in_channels = len(keep)
                else:
                    m.in_features = len(keep)
            for name in g.passthrough:
                m = modules[name]
                if isinstance(m, nn.Conv2d):  # depthwise
                    _slice(m, 0, keep)
                    m.in_channels = m.out_channels = m.groups = len(keep)
                else:  # BatchNorm
                    _slice(m, 0, keep)
                    for buf in ("running_mean", "running_var"):
                        if getattr(m, buf, None) is not None:
                            setattr(m, buf, getattr(m, buf)[keep].clone())
                    m.num_features = len(keep)
        return model


def _slice(m: nn.Module, dim: int, keep: torch.Tensor, bias: bool = True) -> None:
    """Keep indices ``keep`` of dim ``dim`` of the weight (and its mask), and of the bias."""
    m.weight = nn.Parameter(m.weight.detach().index_select(dim, keep).clone(),
                            m.weight.requires_grad)
    mask = m._buffers.get("weight_mask")
    if mask is not None:
        m._buffers["weight_mask"] = mask.index_select(dim, keep).clone()
    if bias and getattr(m, "bias", None) is not None:
        m.bias = nn.Parameter(m.bias.detach().index_select(0, keep).clone(),
                              m.bias.requires_grad)


def _channel_scores(modules: Mapping[str, nn.Module], g: ChannelGroup, criterion: str,
                    generator: Optional[torch.Generator]) -> torch.Tensor:
    """Importance per channel [C]: producers' row norms, each normalized by its mean."""
    if criterion == "random":
        return torch.rand(g.channels, generator=generator)
    total = torch.zeros(g.channels, dtype=torch.float64)
    for name in g.producers:
        w = modules[name].weight.detach().double().reshape(g.channels, -1)
        norms = w.abs().sum(1) if criterion == "l1" else w.square().sum(1).sqrt()
        mean = norms.mean()
        total += norms / mean if mean > 0 else norms
    return total


def _keep_count(channels: int, sparsity: float, round_to: int) -> int:
    keep = channels - round(sparsity * channels)
    if round_to > 1:
        keep = round(keep / round_to) * round_to
        keep = max(keep, min(round_to, channels))
    return min(channels, max(1, keep))


CHANNEL_CRITERIA = ("l1", "l2", "random")


def channel_plan(
    model: nn.Module,
    sparsity: float,
    example_inputs: Sequence[torch.Tensor],
    *,
    criterion: str = "l1",
    scope: str = "layer",
    round_to: int = 1,
    overrides: Optional[Mapping[str, float]] = None,
    skip: Optional[Iterable[str]] = None,
    leaf_modules: Sequence[type] = (),
    generator: Optional[torch.Generator] = None,
) -> ChannelPlan:
    """Choose output channels to remove (nothing is changed; see ``prune_channels``)."""
    sparsity = check_sparsity(sparsity)
    if criterion not in CHANNEL_CRITERIA:
        raise ValueError(f"criterion must be one of {CHANNEL_CRITERIA} for channel pruning, "
                         f"got {criterion!r}")
    if scope not in ("layer", "global"):
        raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}")
    if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
        raise ValueError(f"round_to must be a positive int, got {round_to!r}")
    if isinstance(skip, str):
        skip = [skip]
    skip = list(skip or [])
    if overrides is not None and not isinstance(overrides, Mapping):
        raise TypeError(f"overrides must be a dict {{layer name: sparsity}}, got "
                        f"{type(overrides).__name__}")
    overrides = dict(overrides or {})
    groups = analyse(model, example_inputs, leaf_modules)
    modules = dict(model.named_modules())
    all_layers = [n for g in groups for n in g.producers]
    for pattern in skip + list(overrides):
        if not any(fnmatch.fnmatchcase(n, pattern) or n == pattern for n in all_layers):
            arg = "skip" if pattern in skip else "overrides"
            raise ValueError(f"{arg}: {pattern!r} matches no channel-producing layer")

    def matches(g: ChannelGroup, pattern: str) -> bool:
        return any(fnmatch.fnmatchcase(n, pattern) or n == pattern for n in g.producers)

    pool = []
    for g in groups:
        if g.pinned is not None:
            continue
        if any(matches(g, s) for s in skip):
            g.pinned = "skip"
            continue
        scores = _channel_scores(modules, g, criterion, generator)
        target = next((check_sparsity(v, f"overrides[{p!r}]") for p, v in overrides.items()
                       if matches(g, p)), None)
        if target is None and scope == "global":
            pool.append((g, scores))
            continue
        keep = _keep_count(g.channels, sparsity if target is None else target, round_to)
        order = torch.argsort(scores, stable=True)
        g.remove = sorted(order[: g.channels - keep].tolist())
    if pool:
        # One threshold on normalized scores; at least one channel per group stays.
        flat = torch.cat([s / len(g.producers) for g, s in pool])
        owner = torch.cat([torch.full((g.channels,), i) for i, (g, _) in enumerate(pool)])
        index = torch.cat([torch.arange(g.channels) for g, _ in pool])
        budget = round(sparsity * len(flat))
        removed = [[] for _ in pool]
        for j in torch.argsort(flat, stable=True).tolist():
            if budget == 0:
                break
            i = int(owner[j])
            if len(removed[i]) < pool[i][0].channels - 1:
                removed[i].append(int(index[j]))
                budget -= 1
        for (g, _), r in zip(pool, removed):
            g.remove = sorted(r)
    return ChannelPlan(groups)


def prune_channels(
    model: nn.Module,
    sparsity: float,
    example_inputs: Sequence[torch.Tensor],
    *,
    criterion: str = "l1",
    scope: str = "layer",
    round_to: int = 1,
    overrides: Optional[Mapping[str, float]] = None,
    skip: Optional[Iterable[str]] = None,
    leaf_modules: Sequence[type] = (),
    generator: Optional[torch.Generator] = None,
) -> nn.Module:
    """Remove ``sparsity`` of the output channels of each prunable channel group, in place.

    Args:
        model: a torch.fx-traceable model (see the module docstring for what couples channels).
        sparsity: fraction of channels to remove per group ("layer" scope), or of all prunable
            channels ("global": one threshold on channel scores normalized per layer).
        example_inputs: a tuple of inputs (e.g. ``(torch.randn(1, 3, 224, 224),)``), run once
            in eval mode to learn shapes.
        criterion: "l1" (sum of |w| of each output channel across the group's producers, each
            normalized by its mean), "l2", or "random".
        round_to: kept channel counts rounded to a multiple of this (e.g. 8, 32: kernel-friendly
            widths).
        overrides: ``{producer name or pattern: sparsity}``.
        skip: producer names or patterns whose output channels must stay.
        leaf_modules: module types not to trace into (their channels are then pinned).

    Returns ``model`` with smaller Conv2d/BatchNorm/Linear layers. Parameters are new objects:
    create the optimizer after this call. Groups that cannot be pruned (model inputs and
    outputs, grouped convs, concatenations, unknown ops) are left; see
    ``channel_plan(...).summary()``.
    """
    plan = channel_plan(model, sparsity, example_inputs, criterion=criterion, scope=scope,
                        round_to=round_to, overrides=overrides, skip=skip,
                        leaf_modules=leaf_modules, generator=generator)
    return plan.apply(model)


__all__ = ["ChannelGroup", "ChannelPlan", "ChannelPruningError", "analyse", "channel_plan",
           "prune_channels"]
