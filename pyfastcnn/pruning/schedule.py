"""Gradual pruning: sparsity schedules and ``GradualPruner`` (one ``step()`` per training step).

Zhu & Gupta 2017 ("To prune, or not to prune"): sparsity rises from ``s_i`` at step ``t0`` to
``s_f`` at ``t0 + n*dt``, updated every ``dt`` steps:

    s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt)) ** 3

fast at first, when many redundant weights remain, and slowly at the end.
"""
from __future__ import annotations

from typing import Callable, Dict, Iterable, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from .core import FilterFn, check_sparsity, compute_masks, prepare
from .criteria import Criterion
from .masks import apply_mask, mask_optimizer, reapply_masks, remove, zero_optimizer_state
from .structures import StructureLike, parse_structure


def _check_int(value, arg: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{arg} must be an int >= {minimum}, got {value!r}")
    return value


class Schedule:
    """Target sparsity per training step: ``schedule(step) -> float``."""

    def __init__(self, final_sparsity: float, begin_step: int = 0, end_step: int = 1,
                 initial_sparsity: float = 0.0, frequency: int = 1):
        self.final_sparsity = check_sparsity(final_sparsity, "final_sparsity")
        self.initial_sparsity = check_sparsity(initial_sparsity, "initial_sparsity")
        self.begin_step = _check_int(begin_step, "begin_step", 0)
        self.end_step = _check_int(end_step, "end_step", 0)
        self.frequency = _check_int(frequency, "frequency", 1)
        if self.end_step < self.begin_step:
            raise ValueError(f"end_step ({end_step}) must be >= begin_step ({begin_step})")

    def progress(self, step: int) -> float:
        """Fraction of the way from begin_step to end_step, at the last update step."""
        if self.end_step == self.begin_step:
            return 1.0
        t = self.begin_step + (step - self.begin_step) // self.frequency * self.frequency
        return min(1.0, (t - self.begin_step) / (self.end_step - self.begin_step))

    def shape(self, progress: float) -> float:
        raise NotImplementedError

    def __call__(self, step: int) -> float:
        if step < self.begin_step:
            return 0.0
        if step >= self.end_step:
            return self.final_sparsity
        s_i, s_f = self.initial_sparsity, self.final_sparsity
        return s_i + (s_f - s_i) * self.shape(self.progress(step))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(final_sparsity={self.final_sparsity}, "
                f"begin_step={self.begin_step}, end_step={self.end_step}, "
                f"initial_sparsity={self.initial_sparsity}, frequency={self.frequency})")


class CubicSchedule(Schedule):
    """Zhu & Gupta 2017: ``s_f + (s_i - s_f) * (1 - progress) ** 3`` (the default)."""

    def shape(self, progress: float) -> float:
        return 1.0 - (1.0 - progress) ** 3


class LinearSchedule(Schedule):
    """``s_i + (s_f - s_i) * progress``."""

    def shape(self, progress: float) -> float:
        return progress


class OneShotSchedule(Schedule):
    """All of ``sparsity`` at ``step`` (0 before)."""

    def __init__(self, sparsity: float, step: int = 0):
        super().__init__(sparsity, step, step, sparsity, 1)

    def shape(self, progress: float) -> float:
        return 1.0


SCHEDULES = {"cubic": CubicSchedule, "linear": LinearSchedule}


class GradualPruner:
    """Prunes ``model`` along a schedule from a training loop; masks keep pruned weights zero.

    Example::

        pruner = GradualPruner(model, CubicSchedule(0.9, begin_step=0, end_step=3000,
                                                    frequency=100), optimizer=opt)
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(); loss.backward(); opt.step()
            pruner.step()
        pruner.remove()            # permanent: masks and hooks gone, zeros stay

    Args:
        model: pruned in place (see ``prune`` for ``structure``, ``criterion``, ``scope``,
            ``block_shape``, ``filter_fn``, ``skip``, ``generator``).
        schedule: a ``Schedule`` or any ``fn(step) -> sparsity``; a float means a cubic
            schedule to that sparsity over ``end_step`` steps (updates every ``frequency``).
        overrides: ``{name: final sparsity}``; these layers follow the schedule scaled to their
            own final sparsity.
        optimizer: when given, its state for newly pruned weights is cleared at each mask update
            and masks are re-applied after each ``optimizer.step()`` (``mask_optimizer``).

    The step counter starts at 0 (the schedule's value at step 0 is applied now); each
    ``step()`` advances it by one, updates the masks when the target changed and re-applies
    them. ``state_dict()``/``load_state_dict()`` save and resume the counter.
    """

    def __init__(
        self,
        model: nn.Module,
        schedule: Union[Schedule, Callable[[int], float], float],
        *,
        structure: StructureLike = "unstructured",
        criterion: Criterion = "l1",
        scope: str = "layer",
        block_shape: Optional[Tuple[int, int]] = None,
        filter_fn: Optional[FilterFn] = None,
        overrides: Optional[Mapping[str, float]] = None,
        skip: Optional[Iterable[str]] = None,
        optimizer: Optional[torch.optim.Optimizer] = None,
        end_step: Optional[int] = None,
        frequency: int = 1,
        generator: Optional[torch.Generator] = None,
    ):
        if isinstance(schedule, (int, float)) and not isinstance(schedule, bool):
            if end_step is None:
                raise ValueError("end_step is required when schedule is a final sparsity")
            schedule = CubicSchedule(float(schedule), 0, end_step, frequency=frequency)
        elif not callable(schedule):
            raise TypeError(f"schedule must be a Schedule, a callable step -> sparsity or a "
                            f"float, got {type(schedule).__name__}")
        self.schedule = schedule
        final = getattr(schedule, "final_sparsity", None)
        if parse_structure(structure, block_shape).fixed_sparsity is not None:
            raise ValueError(f"structure {structure!r} has a fixed sparsity and cannot be "
                             f"scheduled: use prune(model, structure={structure!r})")
        struct, _, layers, ov = prepare(model, 0.0 if final is None else final, structure,
                                        criterion, scope, block_shape, filter_fn, overrides,
                                        skip)
        if ov and final is None:
            raise ValueError("overrides need a Schedule with a final_sparsity")
        self.model, self.structure, self.layers, self.overrides = model, struct, layers, ov
        self.criterion, self.scope, self.generator = criterion, scope, generator
        self.optimizer = optimizer
        self._final = final
        self.last_step = 0
        self.sparsity = 0.0
        self._handle = mask_optimizer(optimizer, model) if optimizer is not None else None
        self._update(self._target(0))

    def _target(self, step: int) -> float:
        return check_sparsity(self.schedule(step), f"schedule({step})")

    def _update(self, target: float) -> None:
        if target == self.sparsity:
            return
        ov: Dict[str, float] = {}
        if self.overrides:
            scale = target / self._final if self._final else 0.0
            ov = {name: min(1.0, s * scale) for name, s in self.overrides.items()}
        new = compute_masks(self.layers, target, self.structure, self.criterion, self.scope,
                            ov, self.generator)
        for layer in self.layers:
            apply_mask(layer.module, new[layer.name])
        if self.optimizer is not None:
            zero_optimizer_state(self.optimizer, self.model)
        self.sparsity = target

    def step(self) -> float:
        """Advance one training step; returns the target sparsity now in force."""
        self.last_step += 1
        self._update(self._target(self.last_step))
        reapply_masks(self.model)
        return self.sparsity

    def remove(self) -> nn.Module:
        """Make the current pruning permanent (see ``masks.remove``); detaches the optimizer
        hook."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        return remove(self.model)

    def state_dict(self) -> Dict[str, float]:
        return {"last_step": self.last_step, "sparsity": self.sparsity}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        """Resume: the masks themselves come with the model's state dict."""
        self.last_step = int(state["last_step"])
        self.sparsity = float(state["sparsity"])
