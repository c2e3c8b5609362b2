"""ONNX export of pyfastcnn models (and plain float CNNs), for ONNX Runtime and friends.

    from pyfastcnn.export import export_onnx
    export_onnx(model, torch.randn(1, 3, 224, 224), "model.onnx")

The ONNX graph is built node by node from the model's torch.fx graph (``onnx.helper``), after
one run of the model on ``example_input`` to learn every value's shape:

* FP32 fused models: ``FusedConvBNReLU2d`` → ``Conv`` (+ ``Relu``, or ``Clip(0, 6)`` for
  ReLU6). BF16 fused models export their FP32 (BN-folded) weights: ONNX gets an FP32 model.
* Pruned models: ``SparseConv2d`` → a dense ``Conv`` whose weight keeps its zeros.
* INT8 models, in QDQ form (the form ONNX Runtime's quantization tools produce and its graph
  optimizer fuses into ``QLinearConv``/``QLinearAdd``/``QGemm``)::

      x_u8  ─ DequantizeLinear(s_in, zp_in) ──────────────┐
      w_i8  ─ DequantizeLinear(s_w[OC], 0, axis=0) ───────┼─ Conv ─ [Relu|Clip] ─┐
      b_i32 ─ DequantizeLinear(s_in·s_w[OC], 0, axis=0) ──┘                      │
      y_u8  ← QuantizeLinear(s_out, zp_out) ─────────────────────────────────────┘

  ``Quantize``/``DeQuantize`` → ``QuantizeLinear``/``DequantizeLinear`` (a ``QuantConv2d``
  with a fused residual add: its Conv, then ``Add`` of the dequantized residual); ``QuantAdd`` →
  DQ, DQ, ``Add`` (+ ``Relu``), Q; ``QuantLinear`` → the same around ``Gemm``;
  ``QuantMaxPool2d`` → ``MaxPool`` on the uint8 codes (max commutes with dequantization);
  ``QuantAdaptiveAvgPool2d`` → DQ, ``GlobalAveragePool``/``AveragePool``, Q with the input's
  scale and zero point (ONNX has no integer average pool; Q rounds the mean minus the zero
  point, so at exact ties it can differ from pyfastcnn's code by one).
  Activations are uint8 (or int8), weights int8 per output channel, biases int32 at scale
  ``s_in·s_w`` (a float bias that would not fit in int32 stays a float ``Add`` input).
* Plain torch modules and functions: Conv2d, Linear, BatchNorm2d, ReLU/ReLU6/Hardtanh,
  Sigmoid, Tanh, SiLU, Hardswish, Hardsigmoid, LeakyReLU, MaxPool2d, AvgPool2d,
  AdaptiveAvgPool2d, Flatten, Identity, Dropout, add/sub/mul/div, cat, flatten, view/reshape,
  mean. Anything else raises ``ValueError`` naming the node and its module type or function.

Numerics: float models match to float rounding (~1e-6 relative). An INT8 export describes
the same integer model; ONNX Runtime's fused kernels requantize with their own float
multiplier, so an activation code near a rounding boundary can differ by one step and that
propagates (tests: SQNR > 30 dB against pyfastcnn's INT8 logits, measured 45-56 dB, and the
same argmax on a batch; quantization itself costs 32-40 dB against the float model).

``onnx`` is needed only here (``pip install onnx``); ``onnxruntime`` only to run the result.
"""
from __future__ import annotations

import math
import operator
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch.fx.passes.shape_prop import ShapeProp

__all__ = ["export_onnx", "MIN_OPSET", "DEFAULT_OPSET"]

MIN_OPSET = 13  # DequantizeLinear with a per-channel axis
DEFAULT_OPSET = 17

_ADD = (operator.add, operator.iadd, torch.add)
_SUB = (operator.sub, operator.isub, torch.sub)
_MUL = (operator.mul, operator.imul, torch.mul)
_DIV = (operator.truediv, operator.itruediv, torch.div)
_RELU_FUNCS = (F.relu, torch.relu, torch.relu_)
_FLATTEN_FUNCS = (torch.flatten,)
_DROPOUT_FUNCS = (F.dropout,)


def _onnx():
    try:
        import onnx
    except ImportError as err:  # optional dependency
        raise ImportError("pyfastcnn.export_onnx needs the onnx package: pip install onnx "
                          "(and pip install onnxruntime to run the exported model)") from err
    return onnx


@dataclass
class _Value:
    """An fx value in the ONNX graph: a tensor name; ``q`` = (scale, zero_point, dtype) when
    the tensor holds quantized codes rather than real values."""

    name: str
    q: Optional[Tuple[float, int, torch.dtype]] = None


class _SizeValue:
    """A Python-side value (``x.size(...)``): only view/reshape may consume it, and they take
    their target shape from shape propagation instead."""


def _pair(v: Any) -> Tuple[int, int]:
    if isinstance(v, (tuple, list)):
        if len(v) == 1:
            return int(v[0]), int(v[0])
        return int(v[0]), int(v[1])
    return int(v), int(v)


def _describe(gm: fx.GraphModule, node: fx.Node) -> str:
    if node.op == "call_module":
        return f"node {node.name!r} (module {type(gm.get_submodule(node.target)).__name__})"
    if node.op == "call_function":
        fn = getattr(node.target, "__qualname__", None) or str(node.target)
        mod = getattr(node.target, "__module__", None)
        return f"node {node.name!r} (function {mod + '.' if mod else ''}{fn})"
    return f"node {node.name!r} ({node.op} {node.target})"


class _Builder:
    """Collects ONNX nodes and initializers while walking an fx graph."""

    def __init__(self, onnx, gm: fx.GraphModule, opset: int, dynamic_batch: bool):
        self.onnx, self.h, self.nph = onnx, onnx.helper, onnx.numpy_helper
        self.gm, self.opset, self.dynamic_batch = gm, opset, dynamic_batch
        self.nodes: list = []
        self.inits: list = []
        self._names: set = set()
        self._const_cache: Dict[tuple, str] = {}

    # names, constants, nodes -------------------------------------------------------------
    def fresh(self, base: str) -> str:
        base = base.replace("/", ".") or "t"
        name, i = base, 1
        while name in self._names:
            name, i = f"{base}_{i}", i + 1
        self._names.add(name)
        return name

    def init(self, name: str, t: torch.Tensor) -> str:
        name = self.fresh(name)
        self.inits.append(self.nph.from_array(t.detach().cpu().contiguous().numpy(), name))
        return name

    def scalar(self, value: Union[float, int], dtype: torch.dtype) -> str:
        """A shared 0-d initializer (scales, zero points, clip bounds)."""
        key = (float(value), dtype)
        if key not in self._const_cache:
            label = str(dtype).replace("torch.", "")
            self._const_cache[key] = self.init(f"const_{label}_{value:.6g}",
                                               torch.tensor(value, dtype=dtype))
        return self._const_cache[key]

    def ints(self, values: Sequence[int]) -> str:
        return self.init("shape", torch.tensor(list(values), dtype=torch.int64))

    def node(self, op: str, inputs: Sequence[str], base: str, **attrs) -> str:
        out = self.fresh(base)
        self.nodes.append(self.h.make_node(op, list(inputs), [out], name=self.fresh(f"{op}_{base}"),
                                           **attrs))
        return out

    # quantization -------------------------------------------------------------------------
    def dequantize(self, name: str, scale: float, zero_point: int, dtype: torch.dtype,
                   base: str) -> str:
        return self.node("DequantizeLinear",
                         [name, self.scalar(scale, torch.float32),
                          self.scalar(zero_point, dtype)], base + ".dq")

    def quantize(self, name: str, scale: float, zero_point: int, dtype: torch.dtype,
                 base: str) -> str:
        return self.node("QuantizeLinear",
                         [name, self.scalar(scale, torch.float32),
                          self.scalar(zero_point, dtype)], base + ".q")

    def activation(self, name: str, kind: Optional[str], base: str,
                   clamp_max: float = math.inf) -> str:
        if kind is None:
            return name
        if kind == "relu" and clamp_max == math.inf:
            return self.node("Relu", [name], base + ".relu")
        hi = 6.0 if kind == "relu6" else clamp_max
        return self.node("Clip", [name, self.scalar(0.0, torch.float32),
                                  self.scalar(hi, torch.float32)], base + ".clip")

    def conv_attrs(self, weight_shape, stride, padding, dilation, groups) -> dict:
        kh, kw = weight_shape[2:]
        dh, dw = _pair(dilation)
        if isinstance(padding, str):
            if padding == "valid":
                pads = [0, 0, 0, 0]
            elif padding == "same":
                th, tw = dh * (kh - 1), dw * (kw - 1)
                pads = [th // 2, tw // 2, th - th // 2, tw - tw // 2]
            else:
                raise ValueError(f"conv padding {padding!r} is not supported")
        else:
            ph, pw = _pair(padding)
            pads = [ph, pw, ph, pw]
        return dict(kernel_shape=[kh, kw], strides=list(_pair(stride)), pads=pads,
                    dilations=[dh, dw], group=int(groups))


def _is_passthrough(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Ops applied to quantized codes exactly as to values (scale and zero point kept)."""
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target),
                          (torch.nn.Identity, torch.nn.Dropout, torch.nn.Flatten,
                           torch.nn.MaxPool2d))
    if node.op == "call_function":
        return node.target in _FLATTEN_FUNCS + _DROPOUT_FUNCS
    return node.op == "call_method" and node.target in ("flatten", "view", "reshape",
                                                          "contiguous")


class _Exporter:
    def __init__(self, b: _Builder):
        self.b, self.gm = b, b.gm
        self.env: Dict[fx.Node, Any] = {}

    # argument access ----------------------------------------------------------------------
    def value(self, arg: Any, node: fx.Node) -> _Value:
        if isinstance(arg, fx.Node):
            v = self.env[arg]
            if isinstance(v, _SizeValue):
                raise ValueError(f"cannot export {_describe(self.gm, node)}: it uses a tensor "
                                 "size as data (only view/reshape may)")
            return v
        if isinstance(arg, (int, float)) and not isinstance(arg, bool):
            return _Value(self.b.scalar(float(arg), torch.float32))
        raise ValueError(f"cannot export {_describe(self.gm, node)}: argument {arg!r} is not a "
                         "tensor or a number")

    def real(self, arg: Any, node: fx.Node) -> str:
        """The ONNX name of a real-valued (float) input; codes are refused."""
        v = self.value(arg, node)
        if v.q is not None:
            raise ValueError(f"cannot export {_describe(self.gm, node)}: it receives INT8 codes "
                             "(a float op on quantized values)")
        return v.name

    @staticmethod
    def meta_shape(node: fx.Node) -> Optional[List[int]]:
        meta = node.meta.get("tensor_meta")
        return None if meta is None or not hasattr(meta, "shape") else list(meta.shape)

    def in_shape(self, node: fx.Node) -> List[int]:
        shape = self.meta_shape(node.args[0]) if isinstance(node.args[0], fx.Node) else None
        if shape is None:
            raise ValueError(f"cannot export {_describe(self.gm, node)}: unknown input shape")
        return shape

    def reshape_to(self, x: _Value, node: fx.Node) -> _Value:
        """Reshape to the propagated output shape; a kept batch dimension stays dynamic."""
        out = self.meta_shape(node)
        if out is None:
            raise ValueError(f"cannot export {_describe(self.gm, node)}: unknown output shape")
        shape = list(out)
        if self.b.dynamic_batch and out and out[0] == self.in_shape(node)[0]:
            shape[0] = 0  # Reshape: 0 copies the input's dimension
        return _Value(self.b.node("Reshape", [x.name, self.b.ints(shape)], node.name), x.q)

    # the walk -----------------------------------------------------------------------------
    def run(self, inputs: List[Tuple[str, torch.Tensor]]) -> Tuple[list, list]:
        h, onnx = self.b.h, self.b.onnx
        graph_inputs, graph_outputs = [], []
        placeholders = [n for n in self.gm.graph.nodes if n.op == "placeholder"]
        if len(placeholders) != len(inputs):
            raise ValueError(f"the model takes {len(placeholders)} inputs, example_input has "
                             f"{len(inputs)}")
        for node, (name, t) in zip(placeholders, inputs):
            self.b._names.add(name)
            dims: List[Union[int, str]] = list(t.shape)
            if self.b.dynamic_batch and dims:
                dims[0] = "batch"
            elem = onnx.helper.np_dtype_to_tensor_dtype(t.detach().cpu().numpy().dtype)
            graph_inputs.append(h.make_tensor_value_info(name, elem, dims))
            self.env[node] = _Value(name)
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                continue
            if node.op == "output":
                graph_outputs = self.outputs(node)
                continue
            self.env[node] = self.convert(node)
        return graph_inputs, graph_outputs

    def outputs(self, node: fx.Node) -> list:
        h, onnx = self.b.h, self.b.onnx
        args = node.args[0]
        flat = list(args) if isinstance(args, (tuple, list)) else [args]
        result = []
        for i, arg in enumerate(flat):
            if not isinstance(arg, fx.Node):
                raise ValueError(f"model output {i} is not a tensor ({type(arg).__name__})")
            v = self.value(arg, node)
            name = self.b.fresh("output" if len(flat) == 1 else f"output_{i}")
            self.b.nodes.append(h.make_node("Identity", [v.name], [name], name=f"{name}_id"))
            meta = arg.meta.get("tensor_meta")
            dims: List[Union[int, str]] = list(meta.shape)
            if self.b.dynamic_batch and dims:
                dims[0] = "batch"
            np_dtype = torch.empty(0, dtype=meta.dtype).numpy().dtype
            result.append(h.make_tensor_value_info(
                name, onnx.helper.np_dtype_to_tensor_dtype(np_dtype), dims))
        return result

    def convert(self, node: fx.Node) -> Any:
        if node.op == "get_attr":
            t: Any = self.gm
            for part in node.target.split("."):
                t = getattr(t, part)
            if not isinstance(t, torch.Tensor):
                raise ValueError(f"cannot export {_describe(self.gm, node)}: not a tensor")
            return _Value(self.b.init(node.target, t.detach().float()))
        if node.op == "call_module":
            return self.module(node, self.gm.get_submodule(node.target))
        if node.op == "call_function":
            return self.function(node)
        if node.op == "call_method":
            return self.method(node)
        raise ValueError(f"cannot export {_describe(self.gm, node)}")

    # modules ------------------------------------------------------------------------------
    def module(self, node: fx.Node, m: torch.nn.Module) -> Any:
        from .nn.fused import FusedConvBNReLU2d
        from .nn.quantized import (
            DeQuantize,
            QuantAdaptiveAvgPool2d,
            QuantAdd,
            QuantConv2d,
            Quantize,
            QuantLinear,
            QuantMaxPool2d,
        )
        from .nn.sparse import SparseConv2d

        b, name = self.b, node.target
        if _is_passthrough(self.gm, node) and not isinstance(m, torch.nn.MaxPool2d):
            x = self.value(node.args[0], node)
            if isinstance(m, torch.nn.Flatten):
                if m.start_dim == 1 and m.end_dim == -1:
                    return _Value(b.node("Flatten", [x.name], node.name, axis=1), x.q)
                return self.reshape_to(x, node)
            return x  # Identity, Dropout (eval)
        if isinstance(m, QuantConv2d):
            return self.quant_layer(node, m, conv=True)
        if isinstance(m, QuantLinear):
            return self.quant_layer(node, m, conv=False)
        if isinstance(m, Quantize):
            x = self.real(node.args[0], node)
            return _Value(b.quantize(x, m.scale, m.zero_point, m.dtype, name),
                          (m.scale, m.zero_point, m.dtype))
        if isinstance(m, DeQuantize):
            x = self.value(node.args[0], node)
            dtype = x.q[2] if x.q is not None else torch.uint8
            return _Value(b.dequantize(x.name, m.scale, m.zero_point, dtype, name))
        if isinstance(m, QuantAdd):
            xa, xb = (self.value(a, node) for a in node.args[:2])
            fa = b.dequantize(xa.name, m.a_scale, m.a_zero_point, m.dtype, name + ".a")
            fb = b.dequantize(xb.name, m.b_scale, m.b_zero_point, m.dtype, name + ".b")
            y = b.node("Add", [fa, fb], name + ".add")
            y = b.activation(y, "relu" if m.relu else None, name)
            return _Value(b.quantize(y, m.out_scale, m.out_zero_point, m.dtype, name),
                          (m.out_scale, m.out_zero_point, m.dtype))
        if isinstance(m, (QuantMaxPool2d, torch.nn.MaxPool2d)):
            if getattr(m, "return_indices", False):
                raise ValueError(f"cannot export {_describe(self.gm, node)}: return_indices")
            x = self.value(node.args[0], node)  # codes: max commutes with dequantization
            return _Value(self.maxpool(x.name, m.kernel_size, m.stride or m.kernel_size,
                                       m.padding, m.dilation, m.ceil_mode, name), x.q)
        if isinstance(m, FusedConvBNReLU2d):
            y = self.float_conv(node, m.weight, m.bias, m.stride, m.padding, m.dilation,
                                m.groups)
            return _Value(b.activation(y, "relu" if m.relu else None, name, m.clamp_max))
        if isinstance(m, SparseConv2d):
            y = self.float_conv(node, m.weight, m.bias, m.stride, m.padding, m.dilation,
                                m.groups)
            return _Value(b.activation(y, "relu" if m.relu else None, name))
        if type(m) is torch.nn.Conv2d:
            if m.padding_mode != "zeros":
                raise ValueError(f"cannot export {_describe(self.gm, node)}: padding_mode "
                                 f"{m.padding_mode!r}")
            return _Value(self.float_conv(node, m.weight, m.bias, m.stride, m.padding,
                                          m.dilation, m.groups))
        if type(m) is torch.nn.Linear:
            return _Value(self.linear(node, m.weight, m.bias))
        if type(m) is torch.nn.BatchNorm2d:
            if m.running_mean is None or m.running_var is None:
                raise ValueError(f"cannot export {_describe(self.gm, node)}: no running "
                                 "statistics (track_running_stats=False)")
            c = m.num_features
            w = m.weight if m.weight is not None else torch.ones(c)
            bias = m.bias if m.bias is not None else torch.zeros(c)
            ins = [self.real(node.args[0], node), b.init(name + ".weight", w.float()),
                   b.init(name + ".bias", bias.float()),
                   b.init(name + ".running_mean", m.running_mean.float()),
                   b.init(name + ".running_var", m.running_var.float())]
            return _Value(b.node("BatchNormalization", ins, name, epsilon=float(m.eps)))
        if isinstance(m, QuantAdaptiveAvgPool2d):
            # no average pool on integers in ONNX: DQ -> pool -> Q with the input's qparams
            x = self.value(node.args[0], node)
            if x.q is None:
                raise ValueError(f"cannot export {_describe(self.gm, node)}: its input is not "
                                 "quantized codes")
            scale, zero_point, dtype = x.q
            y = self.adaptive_avg(node, b.dequantize(x.name, scale, zero_point, dtype, name))
            return _Value(b.quantize(y, scale, zero_point, dtype, name), x.q)
        if isinstance(m, torch.nn.AdaptiveAvgPool2d):
            return _Value(self.adaptive_avg(node, self.real(node.args[0], node)))
        if type(m) is torch.nn.AvgPool2d:
            if m.divisor_override is not None:
                raise ValueError(f"cannot export {_describe(self.gm, node)}: divisor_override")
            ph, pw = _pair(m.padding)
            return _Value(b.node(
                "AveragePool", [self.real(node.args[0], node)], name,
                kernel_shape=list(_pair(m.kernel_size)),
                strides=list(_pair(m.stride or m.kernel_size)), pads=[ph, pw, ph, pw],
                ceil_mode=int(m.ceil_mode), count_include_pad=int(m.count_include_pad)))
        act = self.activation_module(node, m)
        if act is not None:
            return act
        raise ValueError(f"cannot export {_describe(self.gm, node)} to ONNX: unsupported "
                         f"module type {type(m).__name__}")

    def activation_module(self, node: fx.Node, m: torch.nn.Module) -> Optional[_Value]:
        b, name = self.b, node.target
        kind = type(m)
        if kind not in (torch.nn.ReLU, torch.nn.ReLU6, torch.nn.Hardtanh, torch.nn.Sigmoid,
                        torch.nn.Tanh, torch.nn.SiLU, torch.nn.Hardswish, torch.nn.Hardsigmoid,
                        torch.nn.LeakyReLU):
            return None
        x = self.real(node.args[0], node)
        if kind is torch.nn.ReLU:
            return _Value(b.node("Relu", [x], name))
        if kind in (torch.nn.ReLU6, torch.nn.Hardtanh):
            lo, hi = (0.0, 6.0) if kind is torch.nn.ReLU6 else (m.min_val, m.max_val)
            return _Value(b.node("Clip", [x, b.scalar(lo, torch.float32),
                                          b.scalar(hi, torch.float32)], name))
        if kind is torch.nn.Sigmoid:
            return _Value(b.node("Sigmoid", [x], name))
        if kind is torch.nn.Tanh:
            return _Value(b.node("Tanh", [x], name))
        if kind is torch.nn.SiLU:
            return _Value(b.node("Mul", [x, b.node("Sigmoid", [x], name + ".sigmoid")], name))
        if kind is torch.nn.Hardswish:
            if b.opset < 14:
                raise ValueError(f"cannot export {_describe(self.gm, node)}: HardSwish needs "
                                 "opset >= 14")
            return _Value(b.node("HardSwish", [x], name))
        if kind is torch.nn.Hardsigmoid:
            return _Value(b.node("HardSigmoid", [x], name, alpha=1.0 / 6, beta=0.5))
        return _Value(b.node("LeakyRelu", [x], name, alpha=float(m.negative_slope)))

    # layer builders -----------------------------------------------------------------------
    def float_conv(self, node: fx.Node, weight, bias, stride, padding, dilation,
                   groups) -> str:
        b, name = self.b, node.target
        if weight.dim() != 4:
            raise ValueError(f"cannot export {_describe(self.gm, node)}: only 2-d convs")
        ins = [self.real(node.args[0], node), b.init(name + ".weight", weight.detach().float())]
        if bias is not None:
            ins.append(b.init(name + ".bias", bias.detach().float()))
        return b.node("Conv", ins, name + ".conv",
                      **b.conv_attrs(weight.shape, stride, padding, dilation, groups))

    def linear(self, node: fx.Node, weight, bias) -> str:
        b, name = self.b, node.target
        x = self.real(node.args[0], node)
        if len(self.in_shape(node)) == 2:
            ins = [x, b.init(name + ".weight", weight.detach().float())]
            if bias is not None:
                ins.append(b.init(name + ".bias", bias.detach().float()))
            return b.node("Gemm", ins, name + ".gemm", transB=1)
        y = b.node("MatMul", [x, b.init(name + ".weight_t", weight.detach().float().t())],
                   name + ".matmul")
        if bias is not None:
            y = b.node("Add", [y, b.init(name + ".bias", bias.detach().float())], name + ".add")
        return y

    def quant_layer(self, node: fx.Node, m, conv: bool) -> _Value:
        """DQ(x), DQ(w) (per channel, axis 0), DQ(bias as int32) → Conv/Gemm → act → Q."""
        b, name = self.b, node.target
        x = self.value(node.args[0], node)
        if x.q is None:
            raise ValueError(f"cannot export {_describe(self.gm, node)}: its input is not "
                             "quantized codes")
        xf = b.dequantize(x.name, m.in_scale, m.in_zero_point, m.in_dtype, name + ".x")
        # int_weight(): the dense int8 weight, also of a sparse (SparseInt8Weight) layer
        w_int = m.int_weight() if callable(getattr(m, "int_weight", None)) else \
            m.weight.int_weight
        w_scale, groups = m.weight.scale.float(), m.weight.groups
        oc = w_int.shape[0]
        if w_scale.numel() == 1:
            w_scale = w_scale.expand(oc)
        wf = b.node("DequantizeLinear",
                    [b.init(name + ".weight_int8", w_int.to(torch.int8)),
                     b.init(name + ".weight_scale", w_scale.contiguous()),
                     b.init(name + ".weight_zero_point", torch.zeros(oc, dtype=torch.int8))],
                    name + ".w.dq", axis=0)
        ins = [xf, wf]
        float_bias = None
        if m.bias is not None:
            # QDQ convention: the bias as int32 at scale s_in·s_w (what QLinearConv adds to
            # its int32 sums); off by at most half an accumulator step from the float bias.
            bias_scale = (float(m.in_scale) * w_scale.double()).float()
            codes = torch.round(m.bias.double() / bias_scale.double())
            if bool((codes.abs() < 2**31 - 1).all()):
                ins.append(b.node(
                    "DequantizeLinear",
                    [b.init(name + ".bias_int32", codes.to(torch.int32)),
                     b.init(name + ".bias_scale", bias_scale),
                     b.init(name + ".bias_zero_point", torch.zeros(oc, dtype=torch.int32))],
                    name + ".b.dq", axis=0))
            else:
                float_bias = b.init(name + ".bias", m.bias.float())
        if conv:
            y = b.node("Conv", ins, name + ".conv", **b.conv_attrs(
                w_int.shape, m.stride, m.padding, m.dilation, groups))
            if float_bias is not None:
                shaped = b.node("Reshape", [float_bias, b.ints([1, oc, 1, 1])],
                                name + ".bias4d")
                y = b.node("Add", [y, shaped], name + ".add_bias")
        else:
            if len(self.in_shape(node)) != 2:
                raise ValueError(f"cannot export {_describe(self.gm, node)}: QuantLinear on a "
                                 "non-2-D input")
            if float_bias is not None:
                ins.append(float_bias)
            y = b.node("Gemm", ins, name + ".gemm", transB=1)
        if getattr(m, "residual_scale", None) is not None:  # a fused residual add: DQ → Add
            if m.conv_out_qparams is not None:  # conv → Q → DQ: what runtimes fuse (QLinearConv)
                cs, cz = m.conv_out_qparams
                y = b.dequantize(b.quantize(y, cs, cz, m.out_dtype, name + ".conv_out"), cs, cz,
                                 m.out_dtype, name + ".conv_out")
            r = self.value(node.args[1], node)
            rf = b.dequantize(r.name, m.residual_scale, m.residual_zero_point, m.residual_dtype,
                              name + ".residual")
            y = b.node("Add", [y, rf], name + ".add_residual")
        y = b.activation(y, m.activation, name)
        if m.out_dtype == torch.float32:
            return _Value(y)
        return _Value(b.quantize(y, m.out_scale, m.out_zero_point, m.out_dtype, name),
                      (m.out_scale, m.out_zero_point, m.out_dtype))

    def maxpool(self, x: str, kernel, stride, padding, dilation, ceil_mode, base) -> str:
        ph, pw = _pair(padding)
        return self.b.node("MaxPool", [x], base, kernel_shape=list(_pair(kernel)),
                           strides=list(_pair(stride)), pads=[ph, pw, ph, pw],
                           dilations=list(_pair(dilation)), ceil_mode=int(bool(ceil_mode)))

    def adaptive_avg(self, node: fx.Node, x: str) -> str:
        (h, w), out = self.in_shape(node)[2:], self.meta_shape(node)
        oh, ow = out[2:]
        if (oh, ow) == (1, 1):
            return self.b.node("GlobalAveragePool", [x], node.name)
        if h % oh or w % ow:
            raise ValueError(f"cannot export {_describe(self.gm, node)}: adaptive average "
                             f"pooling {h}x{w} -> {oh}x{ow} has uneven windows")
        k = [h // oh, w // ow]
        return self.b.node("AveragePool", [x], node.name, kernel_shape=k, strides=k)

    def binary(self, op: str, node: fx.Node) -> _Value:
        a, c = node.args[0], node.args[1]
        if node.kwargs.get("alpha", 1) != 1 or len(node.args) > 2:
            raise ValueError(f"cannot export {_describe(self.gm, node)}: alpha is not supported")
        return _Value(self.b.node(op, [self.real(a, node), self.real(c, node)], node.name))

    # functions and methods ----------------------------------------------------------------
    def function(self, node: fx.Node) -> Any:
        b, t = self.b, node.target
        if t in _ADD:
            return self.binary("Add", node)
        if t in _SUB:
            return self.binary("Sub", node)
        if t in _MUL:
            return self.binary("Mul", node)
        if t in _DIV and "rounding_mode" not in node.kwargs:
            return self.binary("Div", node)
        if t in _RELU_FUNCS or (t is F.relu6) or (t is F.hardtanh):
            x = self.real(node.args[0], node)
            if t is F.relu6 or t is F.hardtanh:
                lo, hi = (0.0, 6.0) if t is F.relu6 else (
                    node.args[1] if len(node.args) > 1 else node.kwargs.get("min_val", -1.0),
                    node.args[2] if len(node.args) > 2 else node.kwargs.get("max_val", 1.0))
                return _Value(b.node("Clip", [x, b.scalar(lo, torch.float32),
                                              b.scalar(hi, torch.float32)], node.name))
            return _Value(b.node("Relu", [x], node.name))
        if t in (torch.sigmoid, F.sigmoid):
            return _Value(b.node("Sigmoid", [self.real(node.args[0], node)], node.name))
        if t in _FLATTEN_FUNCS:
            return self.flatten(node)
        if t in _DROPOUT_FUNCS:
            return self.value(node.args[0], node)
        if t is F.adaptive_avg_pool2d:
            return _Value(self.adaptive_avg(node, self.real(node.args[0], node)))
        if t is F.max_pool2d:
            args = list(node.args) + [None] * 6
            kernel = args[1] if args[1] is not None else node.kwargs["kernel_size"]
            stride = args[2] if args[2] is not None else node.kwargs.get("stride") or kernel
            x = self.value(node.args[0], node)
            return _Value(self.maxpool(x.name, kernel, stride,
                                       args[3] if args[3] is not None else
                                       node.kwargs.get("padding", 0),
                                       args[4] if args[4] is not None else
                                       node.kwargs.get("dilation", 1),
                                       node.kwargs.get("ceil_mode", False), node.name), x.q)
        if t is torch.cat:
            tensors = node.args[0]
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
            return _Value(b.node("Concat", [self.real(a, node) for a in tensors], node.name,
                                 axis=int(dim)))
        raise ValueError(f"cannot export {_describe(self.gm, node)} to ONNX: unsupported "
                         "function")

    def flatten(self, node: fx.Node) -> _Value:
        x = self.value(node.args[0], node)
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
        if start == 1 and end == -1:
            return _Value(self.b.node("Flatten", [x.name], node.name, axis=1), x.q)
        return self.reshape_to(x, node)

    def method(self, node: fx.Node) -> Any:
        t = node.target
        if t == "size" or t == "dim":
            return _SizeValue()
        if t == "contiguous":
            return self.value(node.args[0], node)
        if t in ("view", "reshape"):
            return self.reshape_to(self.value(node.args[0], node), node)
        if t == "flatten":
            return self.flatten(node)
        if t in ("relu", "relu_"):
            return _Value(self.b.node("Relu", [self.real(node.args[0], node)], node.name))
        if t == "mean":
            dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
            if dims is None:
                raise ValueError(f"cannot export {_describe(self.gm, node)}: mean over all "
                                 "dimensions")
            dims = [dims] if isinstance(dims, int) else list(dims)
            keep = int(node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False))
            x = self.real(node.args[0], node)
            if self.b.opset >= 18:
                return _Value(self.b.node("ReduceMean", [x, self.b.ints(dims)], node.name,
                                          keepdims=keep))
            return _Value(self.b.node("ReduceMean", [x], node.name, axes=dims, keepdims=keep))
        if t in ("add", "add_", "__add__"):
            return self.binary("Add", node)
        if t in ("mul", "mul_"):
            return self.binary("Mul", node)
        raise ValueError(f"cannot export {_describe(self.gm, node)} to ONNX: unsupported "
                         f"method .{t}()")


def _as_graph_module(model: torch.nn.Module) -> fx.GraphModule:
    if isinstance(model, fx.GraphModule):
        return model
    try:
        return fx.symbolic_trace(model)
    except Exception as err:  # tracing errors are of many types
        raise ValueError(f"cannot export {type(model).__name__}: torch.fx cannot trace it "
                         f"({type(err).__name__}: {err})") from err


def export_onnx(model: torch.nn.Module,
                example_input: Union[torch.Tensor, Sequence[torch.Tensor]],
                path: Union[str, os.PathLike, None],
                opset: int = DEFAULT_OPSET, *,
                input_names: Optional[Sequence[str]] = None,
                dynamic_batch: bool = True):
    """Export ``model`` (a pyfastcnn model: fused FP32/BF16, pruned, INT8; or a plain float CNN
    that torch.fx can trace) to an ONNX file, INT8 models in QDQ form.

    Args:
        model: the model, run in eval mode (BN with running statistics, no dropout); it is
            run once on ``example_input`` to learn the shapes.
        example_input: float32 tensor(s), e.g. [N, 3, H, W]; NCHW or channels_last alike.
        path: the .onnx file to write (its directory must exist); None: write nothing.
        opset: ONNX opset, from 13 (per-channel DequantizeLinear) to what onnx supports.
        input_names: graph input names (default "input", or "input_0", "input_1", ...).
        dynamic_batch: the first dimension of inputs and outputs is symbolic ("batch").

    Returns:
        The checked ``onnx.ModelProto``.

    Raises:
        ImportError: onnx is not installed (``pip install onnx``).
        TypeError/ValueError: bad arguments; a node or module with no ONNX mapping (the
            message names it).
    """
    onnx = _onnx()
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    inputs = [example_input] if isinstance(example_input, torch.Tensor) else example_input
    if not isinstance(inputs, (list, tuple)) or not inputs or not all(
            isinstance(t, torch.Tensor) for t in inputs):
        raise TypeError("example_input must be a tensor or a non-empty sequence of tensors, "
                        f"got {type(example_input).__name__}")
    for t in inputs:
        if t.dtype != torch.float32:
            raise ValueError(f"example_input must be float32 (the models' input), got {t.dtype}")
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str, os.PathLike or None, got {type(path).__name__}")
    if path is not None:
        parent = os.path.dirname(os.fspath(path)) or "."
        if not os.path.isdir(parent):
            raise ValueError(f"path's directory does not exist: {parent!r}")
    max_opset = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not (
            MIN_OPSET <= opset <= max_opset):
        raise ValueError(f"opset must be an int in [{MIN_OPSET}, {max_opset}], got {opset!r}")
    if input_names is None:
        input_names = ["input"] if len(inputs) == 1 else [f"input_{i}" for i in
                                                          range(len(inputs))]
    input_names = list(input_names)
    if len(input_names) != len(inputs) or len(set(input_names)) != len(input_names) or not all(
            isinstance(n, str) and n for n in input_names):
        raise ValueError(f"input_names must be {len(inputs)} distinct non-empty strings, got "
                         f"{input_names!r}")

    was_training = model.training
    model.eval()
    try:
        gm = _as_graph_module(model)
        try:
            with torch.no_grad():
                ShapeProp(gm).propagate(*inputs)
        except Exception as err:  # the model's own error, whatever its type
            raise ValueError(f"the model failed to run on example_input: "
                             f"{type(err).__name__}: {err}") from err
        builder = _Builder(onnx, gm, opset, dynamic_batch)
        graph_inputs, graph_outputs = _Exporter(builder).run(list(zip(input_names, inputs)))
    finally:
        model.train(was_training)

    graph = onnx.helper.make_graph(builder.nodes, type(model).__name__, graph_inputs,
                                   graph_outputs, builder.inits)
    opset_ids = [onnx.helper.make_opsetid("", opset)]
    proto = onnx.helper.make_model(graph, opset_imports=opset_ids, producer_name="pyfastcnn")
    proto.ir_version = onnx.helper.find_min_ir_version_for(opset_ids)
    onnx.checker.check_model(proto)
    if path is not None:
        onnx.save(proto, os.fspath(path))
    return proto
