"""Masks that keep pruned weights at exactly zero, in place.

A pruned parameter ``module.<name>`` stays an ordinary ``nn.Parameter`` (same object, same
state-dict key, so optimizers made before pruning keep working) that holds exact zeros where
pruned. Its mask is a boolean buffer ``module.<name>_mask`` (saved in the state dict). Three
things keep the zeros exact through training:

* the gradient is masked (a hook on the parameter), so plain SGD, SGD with momentum and weight
  decay, Adam and AdamW leave a zero weight at zero when their state for it is zero;
* optimizer state made before (or for weights pruned later) is cleared by
  ``mask_optimizer(optimizer, model)``, which also re-applies the masks after every
  ``optimizer.step()``;
* a forward pre-hook re-applies the mask (cheap: one multiply per weight), so weights loaded or
  edited by hand are masked before they are used.

``remove(model)`` drops hooks and masks and leaves the zeros: pruning becomes permanent.
The hooks hold no reference to their module, so ``copy.deepcopy``, ``torch.save(model)`` and
pickling work.
"""
from __future__ import annotations

import weakref
from typing import Dict, Iterator, List, Mapping, Optional, Tuple

import torch
from torch import nn

MASK_SUFFIX = "_mask"
_FLAG = "_pyfastcnn_grad_mask"


def _param(module: nn.Module, name: str) -> torch.Tensor:
    param = getattr(module, name, None)
    if not isinstance(param, torch.Tensor):
        raise ValueError(f"{type(module).__name__} has no tensor parameter {name!r}")
    return param


class _GradMask:
    """Tensor hook: multiplies the gradient by the module's current mask (if still pruned)."""

    def __init__(self, module: nn.Module, name: str):
        self.module = weakref.ref(module)
        self.name = name

    def __call__(self, grad: torch.Tensor) -> torch.Tensor:
        module = self.module()
        mask = None if module is None else getattr(module, self.name + MASK_SUFFIX, None)
        return grad if mask is None else grad * mask


class MaskHook:
    """Forward pre-hook of a pruned module: masks its pruned parameters in place."""

    def __init__(self, names: List[str]):
        self.names = list(names)

    def __call__(self, module: nn.Module, inputs) -> None:
        for name in self.names:
            _enforce(module, name)


def _install_grad_hook(module: nn.Module, name: str) -> None:
    param = getattr(module, name)
    # Copies of a module (deepcopy, pickle) get new parameters without the hook: re-install.
    if param.requires_grad and not getattr(param, _FLAG, False):
        param.register_hook(_GradMask(module, name))
        setattr(param, _FLAG, True)


def _enforce(module: nn.Module, name: str) -> None:
    mask = getattr(module, name + MASK_SUFFIX)
    # .data: the values under the mask are already zero after the first time, so bypassing
    # the version counter cannot invalidate a graph saved for backward.
    getattr(module, name).data.mul_(mask)
    _install_grad_hook(module, name)


def _hook(module: nn.Module) -> Optional[MaskHook]:
    for h in module._forward_pre_hooks.values():
        if isinstance(h, MaskHook):
            return h
    return None


def apply_mask(module: nn.Module, mask: torch.Tensor, name: str = "weight") -> None:
    """Prune ``module.<name>`` with a boolean keep ``mask`` (True = kept), in place.

    Registers (or replaces) the buffer ``<name>_mask``, zeroes the pruned weights and installs
    the hooks. ``mask`` must have the parameter's shape.
    """
    param = _param(module, name)
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
    if mask.shape != param.shape:
        raise ValueError(f"mask has shape {tuple(mask.shape)}, {name} has "
                         f"{tuple(param.shape)}")
    mask = mask.to(device=param.device, dtype=torch.bool)
    buffer = name + MASK_SUFFIX
    if buffer in module._buffers:
        module._buffers[buffer] = mask
    else:
        if hasattr(module, buffer):
            raise ValueError(f"{type(module).__name__} already has an attribute {buffer!r}")
        module.register_buffer(buffer, mask)
    hook = _hook(module)
    if hook is None:
        module.register_forward_pre_hook(MaskHook([name]))
    elif name not in hook.names:
        hook.names.append(name)
    with torch.no_grad():
        _enforce(module, name)


def get_mask(module: nn.Module, name: str = "weight") -> Optional[torch.Tensor]:
    """The keep mask of ``module.<name>`` (bool), or None when it is not pruned."""
    return module._buffers.get(name + MASK_SUFFIX) if _hook(module) else None


def pruned_parameters(model: nn.Module) -> Iterator[Tuple[str, nn.Module, str]]:
    """(module name, module, parameter name) of every masked parameter in ``model``."""
    for mod_name, module in model.named_modules():
        hook = _hook(module)
        if hook is not None:
            for name in hook.names:
                yield mod_name, module, name


def is_pruned(model: nn.Module) -> bool:
    """True when any parameter of ``model`` carries a pruning mask."""
    return next(pruned_parameters(model), None) is not None


@torch.no_grad()
def reapply_masks(model: nn.Module) -> None:
    """Zero every pruned weight again (e.g. after an optimizer step)."""
    for _, module, name in pruned_parameters(model):
        _enforce(module, name)


def remove(model: nn.Module) -> nn.Module:
    """Make pruning permanent: masks applied a last time, then hooks and mask buffers removed.

    The weights keep their zeros; the state dict loses the ``*_mask`` entries. In place;
    returns ``model``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    reapply_masks(model)
    for _, module in model.named_modules():
        for key, h in list(module._forward_pre_hooks.items()):
            if isinstance(h, MaskHook):
                for name in h.names:
                    module._buffers.pop(name + MASK_SUFFIX, None)
                del module._forward_pre_hooks[key]
    return model


finalize = remove


def masks(model: nn.Module) -> Dict[str, torch.Tensor]:
    """``{"<module>.<param>": keep mask}`` for every pruned parameter."""
    return {f"{m}.{n}" if m else n: getattr(mod, n + MASK_SUFFIX)
            for m, mod, n in pruned_parameters(model)}


def restore_masks(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """Re-create the masks recorded in a pruned model's ``state_dict`` (its ``*_mask``
    entries) on a fresh copy of the architecture, so ``model.load_state_dict(state_dict)``
    then works. In place; returns ``model``."""
    modules = dict(model.named_modules())
    for key, value in state_dict.items():
        if not key.endswith(MASK_SUFFIX):
            continue
        mod_name, _, buffer = key.rpartition(".")
        module = modules.get(mod_name)
        name = buffer[: -len(MASK_SUFFIX)]
        if module is None or not isinstance(getattr(module, name, None), torch.Tensor):
            continue
        apply_mask(module, value.bool(), name)
    return model


@torch.no_grad()
def zero_optimizer_state(optimizer: torch.optim.Optimizer, model: nn.Module) -> None:
    """Multiply every per-weight optimizer state tensor (momentum, Adam moments, ...) of a
    pruned parameter by its mask, so stale state cannot move a pruned weight."""
    by_param = {id(getattr(mod, n)): getattr(mod, n + MASK_SUFFIX)
                for _, mod, n in pruned_parameters(model)}
    for param, state in optimizer.state.items():
        mask = by_param.get(id(param))
        if mask is None:
            continue
        for value in state.values():
            if isinstance(value, torch.Tensor) and value.shape == mask.shape:
                value.mul_(mask)


def mask_optimizer(optimizer: torch.optim.Optimizer, model: nn.Module):
    """Keep ``model``'s pruned weights at zero through ``optimizer``: clears their optimizer
    state now and re-applies all masks after each ``optimizer.step()``.

    Returns the hook handle (``handle.remove()`` detaches it).
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got "
                        f"{type(optimizer).__name__}")
    zero_optimizer_state(optimizer, model)
    model_ref = weakref.ref(model)

    def _after_step(opt, args, kwargs):
        m = model_ref()
        if m is not None:
            reapply_masks(m)

    return optimizer.register_step_post_hook(_after_step)
