"""Sparsity structures: which weights are pruned together.

Weights are ``[OC, C/groups, *kernel]`` (Conv1d/2d/3d) or ``[OUT, IN]`` (Linear, read as
``[OUT, IN]`` with no kernel). Each structure turns per-element scores into a boolean keep mask
of the weight's shape.

* ``Unstructured()``: any element; exact counts (``round(sparsity * numel)`` pruned).
* ``NM(n, m)``: in every run of ``m`` consecutive input channels at one (output channel, kernel
  position), keep the ``n`` best (2:4 is what sparse tensor cores and N:M kernels consume).
  Needs ``C/groups % m == 0``. Its sparsity is fixed at ``1 - n/m``.
* ``Block((bo, br))``: ``bo`` output channels (within a group) x ``br`` consecutive input
  channels at one kernel position. ``(32, 1)`` is what the "block" sparse conv kernel packs
  (32 output channels sharing kept ``(kh, kw, c)`` positions); ``(1, 4)`` is 4 consecutive
  input channels of one output channel (the unit of an INT8 VNNI dot product). Edge blocks
  (channel counts not divisible by the block) are smaller and count for their real size.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F


class Structure:
    """Base class: units of weights pruned together."""

    fixed_sparsity: Optional[float] = None

    def incompatible(self, weight_shape: Sequence[int], groups: int) -> Optional[str]:
        """Why this structure cannot prune a weight of this shape, or None."""
        return None

    def unit_scores(self, scores: torch.Tensor, groups: int
                    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """(score [U], size [U]) per unit: summed element scores and element count."""
        raise NotImplementedError

    def expand(self, keep_units: torch.Tensor, weight_shape: Sequence[int], groups: int
               ) -> torch.Tensor:
        """Boolean keep mask of ``weight_shape`` from a boolean keep flag per unit [U]."""
        raise NotImplementedError


@dataclass(frozen=True)
class Unstructured(Structure):
    """Any pattern: each weight is its own unit."""

    def unit_scores(self, scores, groups):
        flat = scores.reshape(-1)
        return flat, torch.ones_like(flat)

    def expand(self, keep_units, weight_shape, groups):
        return keep_units.reshape(tuple(weight_shape))

    def __str__(self) -> str:
        return "unstructured"


def _channels_last_view(t: torch.Tensor) -> torch.Tensor:
    """[OC, C, *k] -> [OC, *k, C] (input channels innermost)."""
    return t.movedim(1, -1)


@dataclass(frozen=True)
class NM(Structure):
    """N:M along input channels: ``n`` of every ``m`` consecutive input channels kept."""

    n: int = 2
    m: int = 4

    def __post_init__(self):
        for arg in ("n", "m"):
            v = getattr(self, arg)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"N:M structure: {arg} must be a positive int, got {v!r}")
        if self.n >= self.m:
            raise ValueError(f"N:M structure needs n < m, got {self.n}:{self.m}")

    @property
    def fixed_sparsity(self) -> float:  # type: ignore[override]
        return 1.0 - self.n / self.m

    def incompatible(self, weight_shape, groups):
        if len(weight_shape) < 2:
            return "needs a weight with an input-channel dimension"
        if weight_shape[1] % self.m:
            return (f"{weight_shape[1]} input channels per group are not a multiple of "
                    f"m={self.m}")
        return None

    def mask(self, scores: torch.Tensor) -> torch.Tensor:
        """Keep mask (same shape as ``scores``): the ``n`` best of each run of ``m``."""
        s = _channels_last_view(scores)
        runs = s.reshape(*s.shape[:-1], s.shape[-1] // self.m, self.m)
        top = runs.topk(self.n, dim=-1).indices
        keep = torch.zeros_like(runs, dtype=torch.bool).scatter_(-1, top, True)
        return keep.reshape(s.shape).movedim(-1, 1).contiguous()

    def __str__(self) -> str:
        return f"{self.n}:{self.m}"


@dataclass(frozen=True)
class Block(Structure):
    """Blocks of ``block_shape = (output channels, input channels)`` at one kernel position."""

    block_shape: Tuple[int, int] = (32, 1)

    def __post_init__(self):
        bs = self.block_shape
        if (not isinstance(bs, (tuple, list)) or len(bs) != 2
                or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in bs)):
            raise ValueError(f"block_shape must be a pair of positive ints (out_channels, "
                             f"in_channels), got {bs!r}")
        object.__setattr__(self, "block_shape", tuple(bs))

    def incompatible(self, weight_shape, groups):
        if len(weight_shape) < 2:
            return "needs a weight with an input-channel dimension"
        return None

    def _geometry(self, shape: Sequence[int], groups: int):
        oc, cg = shape[0], shape[1]
        kprod = 1
        for k in shape[2:]:
            kprod *= k
        bo, br = self.block_shape
        ocg = oc // groups
        return oc, cg, kprod, ocg, -(-ocg // bo), -(-cg // br)

    def _blocks(self, t: torch.Tensor, groups: int) -> torch.Tensor:
        """[OC, C, *k] -> [G, P, bo, Q, br, K] zero-padded to whole blocks."""
        oc, cg, kprod, ocg, p, q = self._geometry(t.shape, groups)
        bo, br = self.block_shape
        t = t.reshape(groups, ocg, cg, kprod)
        t = F.pad(t, (0, 0, 0, q * br - cg, 0, p * bo - ocg))
        return t.view(groups, p, bo, q, br, kprod)

    def unit_scores(self, scores, groups):
        blocks = self._blocks(scores.float(), groups)
        sizes = self._blocks(torch.ones_like(scores, dtype=torch.float32), groups)
        return blocks.sum(dim=(2, 4)).reshape(-1), sizes.sum(dim=(2, 4)).reshape(-1)

    def expand(self, keep_units, weight_shape, groups):
        oc, cg, kprod, ocg, p, q = self._geometry(weight_shape, groups)
        bo, br = self.block_shape
        keep = keep_units.view(groups, p, 1, q, 1, kprod).expand(groups, p, bo, q, br, kprod)
        keep = keep.reshape(groups, p * bo, q * br, kprod)[:, :ocg, :cg]
        return keep.reshape(tuple(weight_shape))

    def __str__(self) -> str:
        return f"block{self.block_shape[0]}x{self.block_shape[1]}"


StructureLike = Union[str, Structure]
STRUCTURE_NAMES = ("unstructured", "block", "N:M (e.g. '2:4')")


def parse_structure(structure: StructureLike,
                    block_shape: Optional[Tuple[int, int]] = None) -> Structure:
    """A Structure from a name: "unstructured", "block" (with ``block_shape``, default
    (32, 1)), "N:M" such as "2:4"; Structure instances pass through."""
    if isinstance(structure, Structure):
        if block_shape is not None and not isinstance(structure, Block):
            raise ValueError("block_shape applies to structure='block' only")
        return structure
    if not isinstance(structure, str):
        raise TypeError(f"structure must be a str or a pyfastcnn.pruning.Structure, got "
                        f"{type(structure).__name__}")
    name = structure.strip().lower()
    if block_shape is not None and name != "block":
        raise ValueError(f"block_shape applies to structure='block' only, not {structure!r}")
    if name == "unstructured":
        return Unstructured()
    if name == "block":
        return Block(tuple(block_shape) if block_shape is not None else (32, 1))
    match = re.fullmatch(r"(\d+)\s*:\s*(\d+)", name)
    if match:
        return NM(int(match.group(1)), int(match.group(2)))
    if name in ("channel", "filter"):
        raise ValueError("structure='channel' removes channels physically: use "
                         "pyfastcnn.pruning.prune_channels(model, sparsity, example_inputs)")
    raise ValueError(f"structure must be one of {STRUCTURE_NAMES}, got {structure!r}")


def _choose_units(scores: torch.Tensor, sizes: torch.Tensor, target: float) -> torch.Tensor:
    """Keep flags [U]: prune the lowest-scoring units (score per element) whose total size is
    closest to ``target`` elements."""
    order = torch.argsort(scores / sizes, stable=True)
    cum = torch.cumsum(sizes[order].double(), 0)
    k = int(torch.searchsorted(cum, torch.tensor([target], dtype=torch.float64),
                               right=True).item())
    if k < len(cum):
        below = float(cum[k - 1]) if k > 0 else 0.0
        if abs(float(cum[k]) - target) < abs(below - target):
            k += 1
    keep = torch.ones(len(scores), dtype=torch.bool)
    keep[order[:k]] = False
    return keep


def layer_mask(structure: Structure, scores: torch.Tensor, sparsity: float,
               groups: int = 1) -> torch.Tensor:
    """Keep mask (bool, shape of ``scores``) pruning ``sparsity`` of one weight.

    Unstructured prunes exactly ``round(sparsity * numel)`` elements; blocks prune the
    number of blocks whose size is closest to that; N:M ignores ``sparsity``.
    """
    if isinstance(structure, NM):
        return structure.mask(scores)
    unit, size = structure.unit_scores(scores, groups)
    keep = _choose_units(unit, size, round(sparsity * scores.numel()))
    return structure.expand(keep, scores.shape, groups)


def global_masks(structure: Structure, scores: List[torch.Tensor], sparsity: float,
                 groups: List[int]) -> List[torch.Tensor]:
    """Keep masks pruning ``sparsity`` of all the weights together (one threshold)."""
    if isinstance(structure, NM):
        return [structure.mask(s) for s in scores]
    parts = [structure.unit_scores(s, g) for s, g in zip(scores, groups)]
    unit = torch.cat([p[0].reshape(-1).to(torch.float64) for p in parts])
    size = torch.cat([p[1].reshape(-1).to(torch.float64) for p in parts])
    total = sum(s.numel() for s in scores)
    keep = _choose_units(unit, size, round(sparsity * total))
    masks, start = [], 0
    for (u, _), s, g in zip(parts, scores, groups):
        masks.append(structure.expand(keep[start:start + u.numel()], s.shape, g))
        start += u.numel()
    return masks
