"""ONNX export (pyfastcnn.export.export_onnx): each exported model runs in ONNX Runtime and
matches the pyfastcnn model on the same input.

Tolerances: float models (plain, fused, pruned) <= 1e-4 relative error (only the float
summation order differs). INT8 models: SQNR > 30 dB of ONNX Runtime's logits against
pyfastcnn's INT8 logits, and the same argmax on a batch of 16 (one near-tie may flip). The QDQ
graph describes the same integer model, but not bit for bit: ONNX Runtime's fused
QLinearConv/QLinearAdd requantize with their own float multiplier (and its unfused path sums
dequantized values in float32), so an activation code can land one step away where the real
value is near a rounding boundary, and that propagates. Measured here: 45-56 dB with every
argmax equal, against 32-40 dB between pyfastcnn's INT8 and the float model, so the export
adds far less error than quantization itself.
"""
import collections
import importlib
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import rel_error

import pyfastcnn
from pyfastcnn import models, pruning, quantization
from pyfastcnn.quantization import sqnr

onnx = pytest.importorskip("onnx", reason="export tests need onnx (pip install onnx)")
ort = pytest.importorskip("onnxruntime",
                          reason="export tests need onnxruntime (pip install onnxruntime)")

from pyfastcnn.export import export_onnx  # noqa: E402

MODELS = {"cifar_resnet8": lambda: models.cifar_resnet(8),
          "mobilenet_v2": lambda: models.mobilenet_v2(num_classes=10),
          # ImageNet stem (7x7/2 conv, 3x3/2 max pool: QuantMaxPool2d in INT8), narrow
          "resnet_stem": lambda: models.ResNet(models.BasicBlock, [1, 1], 10, (8, 16))}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One thread (pyfastcnn and PyTorch): on this shared 2-core machine a 2-thread pool
    waiting on a busy core made small layers up to 100x slower; numerics do not depend on it."""
    previous = pyfastcnn.get_num_threads(), torch.get_num_threads()
    pyfastcnn.set_num_threads(1)
    torch.set_num_threads(1)
    yield
    pyfastcnn.set_num_threads(previous[0])
    torch.set_num_threads(previous[1])


def _float_model(name: str) -> torch.nn.Module:
    """Random weights, BN statistics as a trained model would have them (default init
    statistics make MobileNetV2's activations vanish layer after layer)."""
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model


def _input(batch: int = 16, seed: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


_CACHE: dict = {}


def _compressed(name: str, kind: str) -> torch.nn.Module:
    """The float model or one of its pyfastcnn forms (cached: INT8 calibration is slow)."""
    key = (name, kind)
    if key not in _CACHE:
        model = _float_model(name)
        if kind == "float":
            _CACHE[key] = model
        elif kind == "fused":
            _CACHE[key] = pyfastcnn.compress(model)
        elif kind == "pruned":
            _CACHE[key] = pyfastcnn.compress(model, sparsity=0.8, structure="block")
        elif kind == "int8":
            _CACHE[key] = pyfastcnn.compress(model, quantize="int8", observer="minmax",
                                             calibration_data=[_input(8, seed=3)])
        elif kind == "pruned int8":  # 4-channel blocks: the sparse INT8 kernel
            pruning.prune(model, 0.8, "block", block_shape=(1, 4))
            pruning.remove(model)
            prepared = quantization.prepare(model, quantization.QConfig(activation="minmax"))
            quantization.calibrate(prepared, [_input(8, seed=3)])
            _CACHE[key] = quantization.convert(prepared, sparse=True)
        else:
            raise AssertionError(kind)
    return _CACHE[key]


def _session(proto_or_path, optimize: bool = True) -> "ort.InferenceSession":
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    src = proto_or_path.SerializeToString() if hasattr(proto_or_path, "SerializeToString") \
        else str(proto_or_path)
    return ort.InferenceSession(src, options, providers=["CPUExecutionProvider"])


def _run(session, x: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(session.run(None, {"input": x.numpy()})[0])


def _ours(model, x):
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("kind", ("float", "fused", "pruned"))
@pytest.mark.parametrize("name", tuple(MODELS))
def test_float_models_match(tmp_path, name, kind):
    model = _compressed(name, kind)
    x = _input()
    path = tmp_path / f"{name}-{kind}.onnx"
    proto = export_onnx(model, x[:2], path)  # exported at batch 2, run at 16: dynamic batch
    assert path.is_file() and proto.graph.input[0].name == "input"
    out = _run(_session(path), x)
    assert rel_error(out, _ours(model, x)) < 1e-4
    ops = collections.Counter(n.op_type for n in proto.graph.node)
    assert "QuantizeLinear" not in ops and ops["Conv"] > 0
    if kind == "fused" and name == "mobilenet_v2":
        assert ops["Clip"] > 0  # ReLU6 fused into the conv exports as Clip(0, 6)


def test_pruned_exports_dense_with_zeros():
    model = _compressed("cifar_resnet8", "pruned")
    proto = export_onnx(model, _input(1), None)
    weights = [onnx.numpy_helper.to_array(t) for t in proto.graph.initializer
               if t.name.endswith(".weight") and t.dims and len(t.dims) == 4]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.size for w in weights)
    assert 0.75 < zeros < 0.85  # compress(sparsity=0.8): the zeros stay in the dense weights


@pytest.mark.parametrize("name", tuple(MODELS))
def test_int8_qdq_matches(name):
    model = _compressed(name, "int8")
    x = _input()
    proto = export_onnx(model, x[:1], None)
    ours = _ours(model, x)
    out = _run(_session(proto), x)
    assert sqnr(ours, out) > 30
    assert (out.argmax(1) == ours.argmax(1)).sum() >= len(x) - 1
    # without ORT's fusions the QDQ graph is evaluated op by op in float: close too
    assert sqnr(ours, _run(_session(proto, optimize=False), x)) > 30
    # the global average pool stays INT8 in pyfastcnn: DQ -> GlobalAveragePool -> Q here
    pool = next(n for n in proto.graph.node if n.op_type == "GlobalAveragePool")
    producer = next(n for n in proto.graph.node if pool.input[0] in n.output)
    consumer = next(n for n in proto.graph.node if pool.output[0] in n.input)
    assert (producer.op_type, consumer.op_type) == ("DequantizeLinear", "QuantizeLinear")
    if name == "resnet_stem":  # max pooling runs on the uint8 codes
        pool = next(n for n in proto.graph.node if n.op_type == "MaxPool")
        producer = next(n for n in proto.graph.node if pool.input[0] in n.output)
        assert producer.op_type == "QuantizeLinear"


def test_pruned_int8_exports_its_zeros():
    model = _compressed("cifar_resnet8", "pruned int8")
    assert any(getattr(m, "sparse", False) for m in model.modules())
    x = _input()
    proto = export_onnx(model, x[:1], None)
    assert sqnr(_ours(model, x), _run(_session(proto), x)) > 30
    weights = [onnx.numpy_helper.to_array(t) for t in proto.graph.initializer
               if t.name.endswith(".weight_int8") and len(t.dims) == 4]
    assert sum(int((w == 0).sum()) for w in weights) / sum(w.size for w in weights) > 0.75


def test_int8_graph_is_qdq_and_fuses(tmp_path):
    model = _compressed("cifar_resnet8", "int8")
    proto = export_onnx(model, _input(1), None)
    inits = {t.name: t for t in proto.graph.initializer}
    ops = collections.Counter(n.op_type for n in proto.graph.node)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0 and ops["Conv"] == 9
    weight_dqs = [n for n in proto.graph.node
                  if n.op_type == "DequantizeLinear" and n.input[0].endswith(".weight_int8")]
    assert len(weight_dqs) == 10  # 9 convs + the classifier
    for n in weight_dqs:
        assert inits[n.input[0]].data_type == onnx.TensorProto.INT8
        assert [a.i for a in n.attribute if a.name == "axis"] == [0]
        assert len(inits[n.input[1]].dims) == 1  # one scale per output channel
    act_q = [n for n in proto.graph.node if n.op_type == "QuantizeLinear"]
    assert all(inits[n.input[2]].data_type == onnx.TensorProto.UINT8 for n in act_q)
    # ONNX Runtime's optimizer turns the QDQ units into integer kernels
    optimized = tmp_path / "optimized.onnx"
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(optimized)
    ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    fused = collections.Counter(n.op_type for n in onnx.load(str(optimized)).graph.node)
    assert fused["QLinearConv"] == 9 and fused["QLinearAdd"] == 3 and fused["Conv"] == 0


def test_bf16_model_exports_as_fp32():
    model = pyfastcnn.compress(_float_model("cifar_resnet8"), quantize="bf16")
    x = _input(4)
    out = _run(_session(export_onnx(model, x, None)), x)
    assert rel_error(out, _ours(model, x)) < 3e-2  # ONNX holds FP32: only bf16 rounding differs


class _Functional(torch.nn.Module):
    """Plain torch functions and methods that the exporter maps one by one."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(3, 8, 3, padding="same")
        self.b = torch.nn.Conv2d(3, 8, 1, bias=False)
        self.bn = torch.nn.BatchNorm2d(16)
        self.pool = torch.nn.AdaptiveAvgPool2d(2)
        self.fc = torch.nn.Linear(64, 5)

    def forward(self, x):
        y = torch.cat([F.relu(self.a(x)), torch.sigmoid(self.b(x)) * 2.0 - 0.5], 1)
        y = F.max_pool2d(self.bn(y), 2) + y.mean((2, 3), keepdim=True)
        y = torch.nn.functional.hardtanh(self.pool(y), -0.5, 0.5)
        return self.fc(y.view(y.size(0), -1)), y.flatten(1)


def test_plain_functional_model():
    model = _Functional().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.2, 0.2)
    x = torch.randn(3, 3, 8, 8)
    proto = export_onnx(model, x, None)
    session = _session(proto)
    outs = session.run(None, {"input": x.numpy()})
    refs = _ours(model, x)
    assert [o.name for o in proto.graph.output] == ["output_0", "output_1"]
    for out, ref in zip(outs, refs):
        assert rel_error(torch.from_numpy(out), ref) < 1e-5


def test_training_mode_is_restored_and_bn_uses_running_stats():
    model = _float_model("cifar_resnet8").train()
    x = _input(4)
    proto = export_onnx(model, x, None)
    assert model.training
    out = _run(_session(proto), x)
    assert rel_error(out, _ours(model.eval(), x)) < 1e-4


class _PixelShuffleNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 12, 3, padding=1)
        self.shuffle = torch.nn.PixelShuffle(2)

    def forward(self, x):
        return self.shuffle(self.conv(x))


class _CumsumNet(torch.nn.Module):
    def forward(self, x):
        return torch.cumsum(x, 1)


def test_unsupported_ops_name_the_node():
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(ValueError, match=r"'shuffle'.*PixelShuffle"):
        export_onnx(_PixelShuffleNet(), x, None)
    with pytest.raises(ValueError, match=r"'cumsum'.*cumsum.*unsupported function"):
        export_onnx(_CumsumNet(), x, None)


def test_bad_arguments(tmp_path):
    model, x = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1)), torch.randn(1, 3, 4, 4)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        export_onnx(lambda t: t, x, None)
    with pytest.raises(TypeError, match="example_input must be a tensor"):
        export_onnx(model, [[1.0]], None)
    with pytest.raises(ValueError, match="float32"):
        export_onnx(model, x.double(), None)
    with pytest.raises(ValueError, match=r"opset must be an int in \[13, "):
        export_onnx(model, x, None, opset=11)
    with pytest.raises(ValueError, match="opset"):
        export_onnx(model, x, None, opset=10_000)
    with pytest.raises(ValueError, match="directory does not exist"):
        export_onnx(model, x, tmp_path / "missing" / "m.onnx")
    with pytest.raises(TypeError, match="path must be"):
        export_onnx(model, x, 3)
    with pytest.raises(ValueError, match="input_names"):
        export_onnx(model, x, None, input_names=["a", "b"])
    with pytest.raises(ValueError, match="failed to run on example_input"):
        export_onnx(model, torch.randn(1, 5, 4, 4), None)
    with pytest.raises(ValueError, match="takes 1 inputs"):
        export_onnx(model, (x, x), None)


def test_onnx_is_optional(monkeypatch):
    """pyfastcnn.export imports without onnx; export_onnx then says what to install."""
    import pyfastcnn.export as export

    monkeypatch.setitem(sys.modules, "onnx", None)  # makes `import onnx` fail
    try:
        importlib.reload(export)
        with pytest.raises(ImportError, match="pip install onnx"):
            export.export_onnx(torch.nn.Identity(), torch.zeros(1), None)
    finally:
        monkeypatch.undo()
        importlib.reload(export)
