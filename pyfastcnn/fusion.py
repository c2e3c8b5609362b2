"""Pattern matching on torch.fx graphs: conv → BatchNorm → ReLU/ReLU6, linear → ReLU, and
residual add → ReLU, plus ``fuse(model)``, which turns every conv(+BN)(+ReLU) of a model into a
``pyfastcnn.nn.FusedConvBNReLU2d`` (FP32, or BF16 on CPUs with AVX-512 BF16).

The quantization flow uses the same matcher, so a pattern is recognised in one place only.
"""
from __future__ import annotations

import copy
import operator
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import torch
import torch.fx as fx
import torch.nn.functional as F

_RELU_FUNCTIONS = (F.relu, torch.relu, torch.relu_)
_RELU6_FUNCTIONS = (F.relu6,)
_ADD_FUNCTIONS = (operator.add, torch.add, operator.iadd)


def trace(model: torch.nn.Module) -> fx.GraphModule:
    """``torch.fx.symbolic_trace`` with an error that says what to do."""
    if isinstance(model, fx.GraphModule):
        return model
    try:
        gm = fx.symbolic_trace(model)
    except Exception as err:  # fx raises many kinds (TraceError, TypeError, ...)
        raise ValueError(
            f"model {type(model).__name__} cannot be traced by torch.fx ({err}). Data-dependent "
            "control flow is the usual cause: convert the traceable submodules one by one, or "
            "wrap the untraceable code in a function marked with torch.fx.wrap.") from err
    # String annotations (``from __future__ import annotations``) become globals that
    # GraphModule cannot pickle: drop them.
    for node in gm.graph.nodes:
        if isinstance(node.type, str):
            node.type = None
    gm.recompile()
    return gm


def module_of(gm: fx.GraphModule, node: fx.Node) -> Optional[torch.nn.Module]:
    if node.op != "call_module":
        return None
    return gm.get_submodule(node.target)


def activation_of(gm: fx.GraphModule, node: fx.Node) -> Optional[str]:
    """'relu' or 'relu6' if ``node`` applies that activation to its first input, else None."""
    if node.op == "call_module":
        m = module_of(gm, node)
        if type(m) is torch.nn.ReLU:
            return "relu"
        if type(m) is torch.nn.ReLU6:
            return "relu6"
    elif node.op == "call_function":
        if node.target in _RELU_FUNCTIONS:
            return "relu"
        if node.target in _RELU6_FUNCTIONS:
            return "relu6"
    elif node.op == "call_method" and node.target in ("relu", "relu_"):
        return "relu"
    return None


def is_tensor_add(node: fx.Node) -> bool:
    """a + b of two graph values (not a constant), without alpha."""
    if node.op == "call_function" and node.target in _ADD_FUNCTIONS:
        args = node.args
    elif node.op == "call_method" and node.target in ("add", "add_", "__add__"):
        args = node.args
    else:
        return False
    return (len(args) == 2 and all(isinstance(a, fx.Node) for a in args)
            and not node.kwargs)


def _sole_user(node: fx.Node) -> Optional[fx.Node]:
    return next(iter(node.users)) if len(node.users) == 1 else None


@dataclass
class Chain:
    """A matched pattern: ``first`` (conv/linear/add) ... ``last`` (the node whose value the
    fused op produces)."""

    first: fx.Node
    bn: Optional[fx.Node]
    act: Optional[fx.Node]
    activation: Optional[str]

    @property
    def last(self) -> fx.Node:
        return self.act or self.bn or self.first


def _with_activation(gm, chain: Chain, allowed=("relu", "relu6")) -> Chain:
    user = _sole_user(chain.last)
    if user is not None and user.args and user.args[0] is chain.last:
        act = activation_of(gm, user)
        if act in allowed:
            chain.act, chain.activation = user, act
    return chain


def _call_counts(gm: fx.GraphModule) -> dict:
    counts: dict = {}
    for n in gm.graph.nodes:
        if n.op == "call_module":
            counts[n.target] = counts.get(n.target, 0) + 1
    return counts


def conv_chains(gm: fx.GraphModule, with_bn: bool = True) -> Iterator[Chain]:
    """conv2d (+ BatchNorm2d) (+ ReLU/ReLU6) chains, for conv modules called once."""
    counts = _call_counts(gm)
    for node in list(gm.graph.nodes):
        m = module_of(gm, node)
        if type(m) is not torch.nn.Conv2d or counts[node.target] != 1:
            continue
        chain = Chain(node, None, None, None)
        user = _sole_user(node)
        bn = module_of(gm, user) if user is not None else None
        if (with_bn and type(bn) is torch.nn.BatchNorm2d and counts[user.target] == 1
                and bn.num_features == m.out_channels and bn.running_var is not None):
            chain.bn = user
        yield _with_activation(gm, chain)


def linear_chains(gm: fx.GraphModule) -> Iterator[Chain]:
    """linear (+ ReLU/ReLU6) chains, for linear modules called once."""
    counts = _call_counts(gm)
    for node in list(gm.graph.nodes):
        if type(module_of(gm, node)) is torch.nn.Linear and counts[node.target] == 1:
            yield _with_activation(gm, Chain(node, None, None, None))


def add_chains(gm: fx.GraphModule) -> Iterator[Chain]:
    """tensor + tensor (+ ReLU) chains."""
    for node in list(gm.graph.nodes):
        if is_tensor_add(node):
            yield _with_activation(gm, Chain(node, None, None, None), allowed=("relu",))


def is_depthwise(conv: torch.nn.Conv2d) -> bool:
    """One input channel per group, groups > 1 (MobileNet's 3×3 layers)."""
    return conv.groups > 1 and conv.in_channels == conv.groups


def replace_chain(gm: fx.GraphModule, chain: Chain, module: torch.nn.Module, target: str,
                  args: tuple) -> fx.Node:
    """Replace the chain's nodes by one call of ``module`` (registered at ``target``)."""
    gm.add_submodule(target, module)
    with gm.graph.inserting_before(chain.first):
        new = gm.graph.call_module(target, args)
    chain.last.replace_all_uses_with(new)
    for node in (chain.act, chain.bn, chain.first):
        if node is not None:
            gm.graph.erase_node(node)
    return new


def folded_conv(conv: torch.nn.Conv2d, bn: Optional[torch.nn.BatchNorm2d]) -> torch.nn.Conv2d:
    """A copy of ``conv`` with eval-mode ``bn`` folded into its weight and bias (float64 math)."""
    from .ops.conv_bn_relu import fold_bn

    out = copy.deepcopy(conv)
    if bn is None:
        return out
    w, b = fold_bn(conv.weight.detach(), None if conv.bias is None else conv.bias.detach(),
                   bn.running_mean.detach(), bn.running_var.detach(),
                   None if bn.weight is None else bn.weight.detach(),
                   None if bn.bias is None else bn.bias.detach(), float(bn.eps))
    out.weight = torch.nn.Parameter(w.to(conv.weight.dtype))
    out.bias = torch.nn.Parameter(b.to(conv.weight.dtype))
    return out


def fuse(model: torch.nn.Module, dtype: torch.dtype = torch.float32,
         filter_fn: Optional[Callable[[str, torch.nn.Module], bool]] = None,
         inplace: bool = False) -> fx.GraphModule:
    """Every conv (+ BatchNorm2d) (+ ReLU/ReLU6) → one ``FusedConvBNReLU2d`` (BN folded, bias and
    activation in the conv's epilogue). Inference only: BN uses its running statistics.

    Args:
        model: a float ``torch.nn.Module`` traceable by torch.fx (a copy is fused unless
            ``inplace``).
        dtype: torch.float32, or torch.bfloat16 (BF16 products, FP32 sums and output;
            depthwise convs stay FP32, where their kernel is faster).
        filter_fn: ``filter_fn(name, conv) -> bool`` selects convs to fuse (default: all).
    Returns:
        a ``torch.fx.GraphModule`` in eval mode; the fused modules sit at the convs' names.
    """
    from .nn.fused import FusedConvBNReLU2d

    if not inplace:
        model = copy.deepcopy(model)
    gm = trace(model.eval())
    for chain in conv_chains(gm):
        conv = module_of(gm, chain.first)
        if conv.padding_mode != "zeros" or (filter_fn and not filter_fn(chain.first.target, conv)):
            continue
        bn = module_of(gm, chain.bn) if chain.bn is not None else None
        relu = {None: False, "relu": True, "relu6": torch.nn.ReLU6()}[chain.activation]
        # Depthwise convs are memory-bound: the FP32 depthwise kernel beats the BF16 conv
        # path there (MobileNetV2: 6 ms vs 32 ms), so they stay FP32 in a BF16 model.
        layer_dtype = torch.float32 if is_depthwise(conv) else dtype
        fused = FusedConvBNReLU2d.from_modules(conv, bn, relu, dtype=layer_dtype)
        replace_chain(gm, chain, fused, chain.first.target, (chain.first.args[0],))
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm.eval()


def fold_batchnorm(model: torch.nn.Module, inplace: bool = False) -> fx.GraphModule:
    """Every conv → BatchNorm2d pair becomes one ``nn.Conv2d`` with BN folded into its weight and
    bias (eval-mode statistics); activations stay where they are. Zeros of a pruned weight stay
    zeros (folding scales whole output channels)."""
    if not inplace:
        model = copy.deepcopy(model)
    gm = trace(model.eval())
    for chain in conv_chains(gm):
        if chain.bn is None:
            continue
        conv, bn = module_of(gm, chain.first), module_of(gm, chain.bn)
        chain.act, chain.activation = None, None  # keep the activation node
        replace_chain(gm, chain, folded_conv(conv, bn), chain.first.target,
                      (chain.first.args[0],))
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm.eval()


def to_low_precision(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """A copy of ``model`` for BF16/FP16 inference.

    torch.bfloat16 (CPU): convs (with BN and ReLU) become BF16 ``FusedConvBNReLU2d`` kernels
    (AVX-512 BF16 where the CPU has it); inputs, outputs and the other layers stay float32.
    torch.float16 (GPU): ``model.half()`` on a copy; feed it float16 CUDA tensors.
    """
    if dtype == torch.bfloat16:
        return fuse(model, dtype=torch.bfloat16)
    if dtype == torch.float16:
        return copy.deepcopy(model).half().eval()
    raise TypeError(f"dtype must be torch.bfloat16 or torch.float16, got {dtype}")


__all__ = ["fuse", "fold_batchnorm", "to_low_precision", "trace", "conv_chains",
           "linear_chains", "add_chains", "Chain"]
