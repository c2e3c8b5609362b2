"""Post-training quantization and quantization-aware training of whole CNNs.

    prepared = prepare(model)                 # fold BN, fuse ReLU, insert observers
    calibrate(prepared, batches)              # run calibration data through it
    int8_model = convert(prepared)            # QuantConv2d / QuantLinear / QuantAdd modules

    qat = prepare_qat(model)                  # fake-quant, BN kept for training
    ... train qat ...; freeze_bn_stats(qat); disable_observer(qat) ... train more ...
    int8_model = convert(qat)

The model is traced with torch.fx. Values between INT8 layers stay uint8 (the codes of an
observed (scale, zero point)); ``Quantize``/``DeQuantize`` appear only where float and INT8
parts meet. Max pooling, flatten, view/reshape, dropout and identity work on the codes directly,
and so does adaptive average pooling (the window means of the codes rounded to codes, same scale
and zero point: a ResNet's head runs add → pool → flatten → QuantLinear without leaving INT8);
any other op runs in float on dequantized values.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Union

import torch
import torch.fx as fx
import torch.nn.functional as F

from .. import _native, fusion
from ..nn.fused import FusedConvBNReLU2d
from ..ops.quantized import QuantizedWeight
from .fake_quant import FakeQuantize, disable_observer, enable_fake_quant
from .modules import (
    QuantizableAdd,
    QuantizableConv2d,
    QuantizableLinear,
    QuantizableModule,
    apply_activation,
)

FilterFn = Callable[[str, torch.nn.Module], bool]


@dataclass
class QConfig:
    """How to quantize.

    activation: observer for activation ranges in PTQ: "minmax", "moving_average",
        "percentile", "mse" (default: the range minimising the expected squared error) or
        "entropy" (KL), or a factory returning an observer.
    qat_activation: observer used by QAT ("moving_average" by default).
    weight_bits: 2..8; weights are symmetric int8 codes in ±(2^(bits−1) − 1), so fewer bits
        run on the same INT8 kernels.
    per_channel: per-output-channel weight scales (default) or one per tensor.
    learnable: QAT learns activation scales and zero points (LSQ) instead of observing them.
    """

    activation: Union[str, Callable[[], torch.nn.Module]] = "mse"
    qat_activation: Union[str, Callable[[], torch.nn.Module]] = "moving_average"
    weight_bits: int = 8
    per_channel: bool = True
    learnable: bool = False


_PASSTHROUGH_MODULES = (torch.nn.MaxPool2d, torch.nn.Flatten, torch.nn.Identity,
                        torch.nn.Dropout)
_PASSTHROUGH_FUNCTIONS = (torch.flatten, F.dropout)
_PASSTHROUGH_METHODS = ("flatten", "view", "reshape", "contiguous")


def _is_passthrough(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Ops that act on quantized codes exactly as on values (same scale and zero point)."""
    if not node.args or not isinstance(node.args[0], fx.Node):
        return False
    if node.op == "call_module":
        return isinstance(fusion.module_of(gm, node), _PASSTHROUGH_MODULES)
    if node.op == "call_function":
        return node.target in _PASSTHROUGH_FUNCTIONS
    return node.op == "call_method" and node.target in _PASSTHROUGH_METHODS


def _adaptive_pool_size(node: fx.Node):
    """The output size of an F.adaptive_avg_pool2d call when it is a constant, else None."""
    size = node.args[1] if len(node.args) > 1 else node.kwargs.get("output_size")
    if isinstance(size, int) or (isinstance(size, (tuple, list)) and len(size) == 2 and all(
            v is None or isinstance(v, int) for v in size)):
        return size
    return None


def _adaptive_avg_pool_size(gm: fx.GraphModule, node: fx.Node):
    """The output size of an adaptive average pooling node (nn.AdaptiveAvgPool2d, or
    F.adaptive_avg_pool2d with a constant size), else None."""
    if not node.args or not isinstance(node.args[0], fx.Node):
        return None
    if node.op == "call_module":
        m = fusion.module_of(gm, node)
        return m.output_size if isinstance(m, torch.nn.AdaptiveAvgPool2d) else None
    if node.op == "call_function" and node.target is F.adaptive_avg_pool2d:
        return _adaptive_pool_size(node)
    return None


def _keeps_qparams(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Ops that run on quantized codes and give codes of the same scale and zero point: the
    pass-through ones, and adaptive average pooling (QuantAdaptiveAvgPool2d: the window means
    of the codes, rounded to codes)."""
    return _is_passthrough(gm, node) or _adaptive_avg_pool_size(gm, node) is not None


def _module(gm: fx.GraphModule, node: fx.Node):
    return fusion.module_of(gm, node) if node.op == "call_module" else None


def _is_unit(gm, node) -> bool:
    return isinstance(_module(gm, node), (QuantizableModule, QuantizableAdd))


def _sparse_residual_pays() -> bool:
    """Whether a residual add fused into a sparse INT8 conv beats a separate add here. The
    AVX-512 VNNI sparse kernels are output-bound, and reading the residual in their
    channel-major epilogue cost more than a separate add (2.1 vs 1.6 ms on ResNet-50's 64->256
    1x1 at batch 8, 90% sparse); the AVX2 ones gain from it (Zen 3: 7.7 -> 6.6 ms on the same
    layer, 4.5 -> 4.0 on 128->512 at 28x28, 0.98 -> 0.81 at batch 1)."""
    return _native.C.kernel_isa("sparse_quantized_conv2d_groups") == "avx2"


def _is_fq(gm, node) -> bool:
    return isinstance(_module(gm, node), FakeQuantize)


def _q_inputs(gm, node) -> tuple:
    """The args a quantized unit takes as INT8 values."""
    m = _module(gm, node)
    if isinstance(m, QuantizableAdd):
        return tuple(node.args[:2])
    if isinstance(m, QuantizableModule):
        return (node.args[0],)
    return ()


def _prepare(model: torch.nn.Module, config: QConfig, filter_fn: Optional[FilterFn],
             qat: bool) -> fx.GraphModule:
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(config, QConfig):
        raise TypeError(f"config must be a pyfastcnn.quantization.QConfig, got "
                        f"{type(config).__name__}")
    if filter_fn is not None and not callable(filter_fn):
        raise TypeError("filter_fn must be callable(name, module) -> bool")
    model = copy.deepcopy(model)
    model.train(qat)
    gm = fusion.trace(model)
    allowed = (lambda name, m: True) if filter_fn is None else filter_fn
    unit_args = dict(weight_bits=config.weight_bits, per_channel=config.per_channel)

    for chain in fusion.conv_chains(gm):
        conv = fusion.module_of(gm, chain.first)
        if conv.padding_mode != "zeros" or not allowed(chain.first.target, conv):
            continue
        bn = fusion.module_of(gm, chain.bn) if chain.bn is not None else None
        unit = (QuantizableConv2d(conv, bn, chain.activation, **unit_args) if qat else
                QuantizableConv2d(fusion.folded_conv(conv, bn), None, chain.activation,
                                  **unit_args))
        fusion.replace_chain(gm, chain, unit, chain.first.target, (chain.first.args[0],))
    for chain in fusion.linear_chains(gm):
        linear = fusion.module_of(gm, chain.first)
        if not allowed(chain.first.target, linear):
            continue
        unit = QuantizableLinear(linear, chain.activation, **unit_args)
        fusion.replace_chain(gm, chain, unit, chain.first.target, (chain.first.args[0],))
    for i, chain in enumerate(fusion.add_chains(gm)):
        name = f"residual_add_{i}"
        if not allowed(name, None):
            continue
        fusion.replace_chain(gm, chain, QuantizableAdd(chain.activation == "relu"), name,
                             tuple(chain.first.args))

    # Which values are INT8 after conversion: unit outputs, and pass-through ops and adaptive
    # average pooling of them.
    quantized: Dict[fx.Node, bool] = {}
    for node in gm.graph.nodes:
        quantized[node] = _is_unit(gm, node) or (
            _keeps_qparams(gm, node) and quantized.get(node.args[0], False))
    consumers = {}  # value -> units that take it as an INT8 input
    for node in gm.graph.nodes:
        for arg in _q_inputs(gm, node):
            consumers.setdefault(arg, []).append(node)

    def feeds_int8(node) -> bool:  # directly or through pass-through ops and pooling
        return node in consumers or any(
            _keeps_qparams(gm, u) and u.args[0] is node and feeds_int8(u) for u in node.users)

    # An activation quantizer after every unit whose output an INT8 op consumes (its output
    # scale; a conv/linear feeding only float ops gives float output, unquantized), after
    # every residual add (always requantized), and after every float value an INT8 unit
    # consumes (the scale of the Quantize at the boundary).
    count = 0
    for node in list(gm.graph.nodes):
        is_unit = _is_unit(gm, node)
        if is_unit:
            if not (isinstance(_module(gm, node), QuantizableAdd) or feeds_int8(node)):
                continue
        elif quantized[node] or node not in consumers:
            continue
        fq = FakeQuantize(config.qat_activation if qat else config.activation,
                          observe=True, fake_quant=qat, learnable=qat and config.learnable)
        name = f"activation_quant_{count}"
        count += 1
        gm.add_submodule(name, fq)
        with gm.graph.inserting_after(node):
            fq_node = gm.graph.call_module(name, (node,))
        users = list(node.users) if is_unit else consumers[node]
        for user in users:
            if user is not fq_node:
                user.replace_input_with(node, fq_node)
    if qat:
        for m in gm.modules():
            if isinstance(m, QuantizableModule):
                m.fake_quant_weight = True
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm.train(qat)


def prepare(model: torch.nn.Module, config: Optional[QConfig] = None, *,
            filter_fn: Optional[FilterFn] = None) -> fx.GraphModule:
    """Post-training quantization, step 1: a copy of ``model`` (eval mode, traced by torch.fx)
    with BN folded into its convs, conv/linear + ReLU/ReLU6 and add + ReLU grouped into units,
    and an observer on every activation an INT8 layer will produce or consume.

    Args:
        model: a float CNN (the original is untouched).
        config: ``QConfig`` (observer, weight bits, per-channel).
        filter_fn: ``filter_fn(name, module) -> bool``: which convs/linears (by qualified name;
            residual adds are offered as ``("residual_add_<i>", None)``) to quantize; the rest
            stay float.
    Then run calibration batches through it (``calibrate(prepared, batches)``) and ``convert``.
    """
    return _prepare(model, config or QConfig(), filter_fn, qat=False)


def prepare_qat(model: torch.nn.Module, config: Optional[QConfig] = None, *,
                filter_fn: Optional[FilterFn] = None) -> fx.GraphModule:
    """Quantization-aware training, step 1: like ``prepare`` but in train mode with fake
    quantization on (straight-through gradients), activation ranges observed as a moving
    average (or learned, ``QConfig(learnable=True)``), and BN kept and trained with the
    folding-aware recipe. Late in training call ``freeze_bn_stats`` and ``disable_observer``;
    then ``convert``.
    """
    return _prepare(model, config or QConfig(), filter_fn, qat=True)


def freeze_bn_stats(model: torch.nn.Module) -> torch.nn.Module:
    """QAT: use (and stop updating) BN running statistics from now on."""
    from .modules import set_freeze_bn

    return set_freeze_bn(model, True)


def simulate(prepared: fx.GraphModule) -> fx.GraphModule:
    """The prepared model with ranges frozen and fake quantization on: a float model computing
    what the converted INT8 model computes (up to float rounding, and the rounding of adaptive
    average pooling: the INT8 model rounds the window means to codes of the input's scale, the
    simulation keeps them exact). Modifies ``prepared``."""
    disable_observer(prepared)
    return enable_fake_quant(prepared, True).eval()


# ---- convert ----------------------------------------------------------------------------------


def _quantize_weight(weight: torch.Tensor, bits: int, per_channel: bool,
                     groups: int) -> QuantizedWeight:
    qmax = 2 ** (bits - 1) - 1
    w = weight.detach().float()
    amax = w.abs().reshape(w.shape[0], -1).amax(dim=1)
    if not per_channel:
        amax = amax.amax().expand(w.shape[0])
    scale = torch.where(amax > 0, amax / qmax, torch.ones_like(amax)).contiguous()
    shape = (-1,) + (1,) * (w.dim() - 1)
    q = torch.clamp(torch.round(w / scale.view(shape)), -qmax, qmax).to(torch.int8)
    return QuantizedWeight(q.contiguous(), scale.clone(), groups)


class _FloatLinearAct(torch.nn.Module):
    """A linear (+ activation) kept in float by ``convert(keep_float=...)``."""

    def __init__(self, weight, bias, activation):
        super().__init__()
        self.linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias is not None)
        with torch.no_grad():
            self.linear.weight.copy_(weight)
            if bias is not None:
                self.linear.bias.copy_(bias)
        self.activation = activation

    def forward(self, x):
        return apply_activation(self.linear(x), self.activation)


def _float_unit(unit: QuantizableModule) -> torch.nn.Module:
    w, b = (t.detach() if t is not None else None for t in unit.folded())
    if isinstance(unit, QuantizableLinear):
        return _FloatLinearAct(w, b, unit.activation)
    c = unit.conv
    relu = {None: False, "relu": True, "relu6": torch.nn.ReLU6()}[unit.activation]
    conv = torch.nn.Conv2d(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding,
                           c.dilation, c.groups, bias=b is not None)
    with torch.no_grad():
        conv.weight.copy_(w)
        if b is not None:
            conv.bias.copy_(b)
    return FusedConvBNReLU2d.from_modules(conv, None, relu)


SPARSE_MODES = ("auto", True, False)
# Largest work fraction (SparseInt8Weight.work_fraction: kept 4-channel blocks, or groups of 4
# non-zeros weighted by GROUP_COST, over the dense weight's blocks) at which the sparse INT8
# kernels (AVX-512 VNNI) are used by default: they break even with the dense VNNI kernel at
# ~0.35-0.4 (benchmarks/bench_sparse_int8.py, 1 thread), so require clearly less than that.
# Against the dense AMX kernel they are 1.2-1.8x slower even at 90% (Xeon with AMX,
# 2026-12-07), so there only nearly empty weights take them.
SPARSE_INT8_MAX_WORK = 0.3
SPARSE_INT8_MAX_WORK_AMX = 0.05


def _max_sparse_work() -> float:
    """The "auto" threshold for the INT8 kernel level selected now."""
    if _native.C.kernel_isa("int8_gemm") == "avx512_amx":
        return SPARSE_INT8_MAX_WORK_AMX
    return SPARSE_INT8_MAX_WORK


def _conv_weight(w: QuantizedWeight, sparse) -> object:
    """The dense weight, or its sparse INT8 packing when ``sparse`` says so."""
    if sparse is False:
        return w
    from ..ops.sparse_int8 import pack_sparse_int8

    packed = pack_sparse_int8(w)  # the layout (blocks or groups) with less work here
    if sparse is True:
        return packed if packed.work_fraction < 1 else w
    return packed if packed.work_fraction <= _max_sparse_work() else w


def convert(prepared: fx.GraphModule, *, keep_float: Sequence[str] = (),
            sparse: Union[str, bool] = "auto", depthwise: str = "int8",
            fuse_residual: bool = True) -> fx.GraphModule:
    """Step 3 of PTQ/QAT: a new inference model running pyfastcnn's INT8 kernels.

    Each unit becomes a ``QuantConv2d``/``QuantLinear`` (weights symmetric per channel, the
    requantization epilogue with bias and ReLU/ReLU6 fused; uint8 out when another INT8 op
    follows, float32 out otherwise) at the conv's/linear's name; residual adds become
    ``QuantAdd``, or with ``fuse_residual`` (default) part of the epilogue of the conv they
    add to when that conv runs the dense kernel, has no activation and no other consumer
    (ResNet's last conv of a block: one pass instead of a conv output and an add; the conv's
    own output observer is then unused, one rounding fewer than the fake-quant model).
    ``keep_float``: names of units to keep in float (e.g. the layers a ``quantization_report``
    shows to suffer): they become FP32 ``FusedConvBNReLU2d``/linear. ``sparse``: pruned convs
    (e.g. ``pruning.prune(model, 0.9, "block", block_shape=(1, 4))`` before ``prepare``, or
    unstructured) run a sparse INT8 kernel, same results: "auto" where the packed weight's
    ``work_fraction`` is at most 0.3 (4-input-channel blocks holding a non-zero, or groups of
    4 non-zeros at 1.45 blocks each, over the dense weight's blocks: where it is faster than
    the dense kernel; 0.05 on a CPU with AMX, whose dense kernel is 2-3x faster), True
    wherever that is below 1, False never.
    ``depthwise``: "int8" (default) quantizes depthwise convs too (the INT8 depthwise kernel:
    MobileNetV2 at 1 thread 2.7–2.8 ms at batch 1 instead of 3.3–4.0 ms with "float", 21 ms
    instead of 46–49 ms at batch 8), "float" runs them on the FP32 depthwise kernel between
    INT8 layers (a dequantize/quantize round trip each). Input and output are float32, as for
    the original model.
    """
    if sparse not in SPARSE_MODES:
        raise ValueError(f"sparse must be 'auto', True or False, got {sparse!r}")
    if depthwise not in ("float", "int8"):
        raise ValueError(f"depthwise must be 'float' or 'int8', got {depthwise!r}")
    if not isinstance(prepared, fx.GraphModule) or not any(
            isinstance(m, FakeQuantize) for m in prepared.modules()):
        raise TypeError("prepared must be the result of pyfastcnn.quantization.prepare or "
                        "prepare_qat (after calibration or training)")
    # (imported here: pyfastcnn.nn.quantized itself imports this package's qparams)
    from ..nn.quantized import (
        DeQuantize,
        QuantAdaptiveAvgPool2d,
        QuantAdd,
        QuantConv2d,
        Quantize,
        QuantLinear,
        QuantMaxPool2d,
    )

    keep_float = set(keep_float)
    unknown = keep_float - {n for n, m in prepared.named_modules()
                            if isinstance(m, (QuantizableModule, QuantizableAdd))}
    if unknown:
        raise ValueError(f"keep_float names no quantizable unit: {sorted(unknown)}")
    gm = copy.deepcopy(prepared).eval()
    nodes = list(gm.graph.nodes)

    def unit_kind(node):
        m = _module(gm, node)
        if isinstance(m, (QuantizableModule, QuantizableAdd)):
            dw = (depthwise == "float" and isinstance(m, QuantizableConv2d)
                  and fusion.is_depthwise(m.conv))
            return "float" if node.target in keep_float or dw else "int8"
        return None

    def is_int8_consumer(node):
        return unit_kind(node) == "int8"

    def wants_int8(node) -> bool:
        """Whether some consumer of ``node`` takes INT8 directly."""
        for user in node.users:
            if _is_fq(gm, user) or _keeps_qparams(gm, user):
                if wants_int8(user) if _is_fq(gm, user) else (
                        user.args[0] is node and wants_int8(user)):
                    return True
            elif is_int8_consumer(user):
                return True
        return False

    def observer_after(node) -> Optional[FakeQuantize]:
        for user in node.users:
            if _is_fq(gm, user):
                return _module(gm, user)
        return None

    # (scale, zero point) of the codes a value holds where the graph alone does not say: an
    # observer that follows codes passed on from upstream (a graph prepared before adaptive
    # pooling kept codes) describes values the INT8 model no longer computes.
    codes_qparams: Dict[fx.Node, tuple] = {}

    def qparams_of(node):
        if node in codes_qparams:
            return codes_qparams[node]
        if _is_fq(gm, node):
            return _module(gm, node).qparams()
        if _keeps_qparams(gm, node):
            return qparams_of(node.args[0])
        fq = observer_after(node)
        if fq is None:
            raise RuntimeError(f"no observer for {node.name}: prepare() did not see it")
        return fq.qparams()

    def fusable_conv(add_node):
        """(conv node, its FQ'd arg, the other operand) when one operand of ``add_node`` is an
        INT8 conv whose only consumer is this add and which has no activation."""
        for i in (0, 1):
            arg, base = add_node.args[i], add_node.args[i]
            chain = [base]
            while _is_fq(gm, base):
                base = base.args[0]
                chain.append(base)
            m = _module(gm, base)
            if not (isinstance(m, QuantizableConv2d) and unit_kind(base) == "int8"
                    and m.activation is None and add_node.args[1 - i] is not arg):
                continue
            if any(len(n.users) != 1 for n in chain[1:]) or len(arg.users) != 1:
                continue
            layer = new_modules.get(base.target)
            if isinstance(layer, QuantConv2d) and layer.out_dtype != torch.float32 \
                    and (not layer.sparse or _sparse_residual_pays()) and is_q.get(base, False):
                return base, arg, add_node.args[1 - i]
        return None

    graph = fx.Graph()
    env: Dict[fx.Node, fx.Node] = {}
    is_q: Dict[fx.Node, bool] = {}
    as_q_cache: Dict[fx.Node, fx.Node] = {}
    as_f_cache: Dict[fx.Node, fx.Node] = {}
    new_modules: Dict[str, torch.nn.Module] = {}

    def add_module(name, module):
        new_modules[name] = module
        return name

    def as_q(node):
        if is_q[node]:
            return env[node]
        if node not in as_q_cache:
            scale, zp = qparams_of(node)
            name = add_module(f"quantize_{node.name}", Quantize(scale, zp))
            as_q_cache[node] = graph.call_module(name, (env[node],))
        return as_q_cache[node]

    def as_float(arg):
        if not isinstance(arg, fx.Node):
            return arg
        if not is_q[arg]:
            return env[arg]
        if arg not in as_f_cache:
            scale, zp = qparams_of(arg)
            name = add_module(f"dequantize_{arg.name}", DeQuantize(scale, zp))
            as_f_cache[arg] = graph.call_module(name, (env[arg],))
        return as_f_cache[arg]

    for node in nodes:
        m = _module(gm, node)
        kind = unit_kind(node)
        if isinstance(m, FakeQuantize):
            src = node.args[0]
            env[node], is_q[node] = env[src], is_q[src]
            if is_q[src] and _keeps_qparams(gm, src):
                codes_qparams[node] = qparams_of(src)
            if src in as_q_cache:
                as_q_cache[node] = as_q_cache[src]
            continue
        if kind == "int8" and isinstance(m, QuantizableAdd):
            (sa, za), (sb, zb) = qparams_of(node.args[0]), qparams_of(node.args[1])
            so, zo = qparams_of(node)
            fusable = fusable_conv(node) if fuse_residual else None
            if fusable is not None:
                conv_node, conv_arg, other = fusable
                rs, rz = qparams_of(other)
                emitted = env[conv_node]
                new_modules[conv_node.target].fuse_residual_add(rs, rz, so, zo, m.relu,
                                                                add_name=node.target)
                env[node] = graph.call_module(conv_node.target, (emitted.args[0], as_q(other)))
                graph.erase_node(emitted)  # re-emitted here, where the residual exists
                is_q[node] = True
                continue
            name = add_module(node.target, QuantAdd(sa, za, sb, zb, so, zo, m.relu))
            env[node] = graph.call_module(name, (as_q(node.args[0]), as_q(node.args[1])))
            is_q[node] = True
        elif kind == "int8":
            src = node.args[0]
            in_scale, in_zp = qparams_of(src)
            w, b = (t.detach() if t is not None else None for t in m.folded())
            out_q = wants_int8(node)
            out = dict(out_dtype=torch.float32)
            if out_q:
                so, zo = qparams_of(node)
                out = dict(out_scale=so, out_zero_point=zo, out_dtype=torch.uint8)
            if isinstance(m, QuantizableConv2d):
                c = m.conv
                qw = _conv_weight(_quantize_weight(w, m.weight_bits, m.per_channel, c.groups),
                                  sparse)
                layer = QuantConv2d(qw, b, c.stride, c.padding, c.dilation, in_scale, in_zp,
                                    activation=m.activation, **out)
            else:
                qw = _quantize_weight(w, m.weight_bits, m.per_channel, 1)
                layer = QuantLinear(qw, b, in_scale, in_zp, activation=m.activation, **out)
            name = add_module(node.target, layer)
            env[node] = graph.call_module(name, (as_q(src),))
            is_q[node] = out_q
        elif kind == "float":
            module = QuantizableAdd(m.relu) if isinstance(m, QuantizableAdd) else _float_unit(m)
            name = add_module(node.target, module)
            env[node] = graph.call_module(name, tuple(as_float(a) for a in node.args))
            is_q[node] = False
        elif isinstance(m, torch.nn.MaxPool2d) and is_q.get(node.args[0], False):
            name = add_module(node.target, QuantMaxPool2d.from_float(m))
            env[node] = graph.call_module(name, (env[node.args[0]],))
            is_q[node] = True
        elif _adaptive_avg_pool_size(gm, node) is not None and is_q.get(node.args[0], False):
            pool = QuantAdaptiveAvgPool2d(_adaptive_avg_pool_size(gm, node))
            name = node.target
            if node.op != "call_module":  # F.adaptive_avg_pool2d: a module of a fresh name
                name = node.name
                while name in new_modules or hasattr(gm, name):
                    name += "_int8"
            env[node] = graph.call_module(add_module(name, pool), (env[node.args[0]],))
            is_q[node] = True
        elif _is_passthrough(gm, node) and is_q.get(node.args[0], False):
            env[node] = graph.node_copy(
                node, lambda a: env[a] if a is node.args[0] else as_float(a))
            is_q[node] = True
        elif node.op == "output":
            env[node] = graph.output(fx.node.map_arg(node.args[0], as_float))
            is_q[node] = False
        else:
            env[node] = graph.node_copy(node, as_float)
            is_q[node] = False

    for name, module in new_modules.items():
        gm.add_submodule(name, module)
    out = fx.GraphModule(gm, graph, class_name="QuantizedModel")
    out.graph.lint()
    return out.eval()

