"""pyfastcnn.compress and pyfastcnn.report on whole models."""
import copy

import pytest
import torch

import pyfastcnn
from pyfastcnn import models, pruning
from pyfastcnn.nn import FusedConvBNReLU2d, QuantConv2d, SparseConv2d
from pyfastcnn.quantization import sqnr


def _model():
    torch.manual_seed(0)
    model = models.cifar_resnet(8).eval()
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model


X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def _kinds(model):
    return {type(m) for m in model.modules()}


def test_fuse_only():
    model = _model()
    out = pyfastcnn.compress(model)
    assert FusedConvBNReLU2d in _kinds(out) and torch.nn.BatchNorm2d not in _kinds(out)
    with torch.no_grad():
        assert sqnr(model(X), out(X)) > 100
    assert torch.nn.BatchNorm2d in _kinds(model)  # the input model is untouched


@pytest.mark.filterwarnings("ignore:prune.*skips")
@pytest.mark.parametrize("structure", ["block", "unstructured", "2:4"])
def test_pruned_fp32_matches_the_pruned_float_model(structure):
    model = _model()
    sparsity = None if structure == "2:4" else 0.9
    out = pyfastcnn.compress(model, sparsity=sparsity, structure=structure)
    pruned = copy.deepcopy(model)
    pruning.prune(pruned, sparsity, structure)
    pruning.remove(pruned)
    with torch.no_grad():
        ref, got = pruned(X), out(X)
    assert (got - ref).norm() / ref.norm() < 1e-5
    if structure == "block":
        assert SparseConv2d in _kinds(out)
        assert any(m.relu for m in out.modules() if isinstance(m, SparseConv2d))


def test_int8():
    model = _model()
    out = pyfastcnn.compress(model, quantize="int8", calibration_data=[X])
    assert QuantConv2d in _kinds(out)
    with torch.no_grad():
        assert sqnr(model(X), out(X)) > 25
    out = pyfastcnn.compress(model, quantize="int8", calibration_data=[X], skip=["conv1"])
    assert not isinstance(out.get_submodule("conv1"), QuantConv2d)


def test_low_precision():
    model = _model()
    bf16 = pyfastcnn.compress(model, quantize="bf16")
    assert all(m.dtype == torch.bfloat16 for m in bf16.modules()
               if isinstance(m, FusedConvBNReLU2d))
    with torch.no_grad():
        assert sqnr(model(X), bf16(X)) > 30
    assert next(pyfastcnn.compress(model, quantize="fp16").parameters()).dtype == torch.float16


def test_bad_arguments():
    with pytest.raises(TypeError, match="model"):
        pyfastcnn.compress("resnet")
    with pytest.raises(ValueError, match="quantize"):
        pyfastcnn.compress(_model(), quantize="int4")
    with pytest.raises(ValueError, match="calibration_data"):
        pyfastcnn.compress(_model(), quantize="int8")


def test_report():
    model = _model()
    rep = pyfastcnn.report(model, X, runs=2)
    convs = [r for r in rep.rows if r.kind == "Conv2d"]
    assert len(convs) == 9 and rep.params == sum(p.numel() for p in model.parameters())
    assert rep.flops > 0 and rep.total_latency_ms > 0
    assert "total" in str(rep)
    sparse = pyfastcnn.compress(model, sparsity=0.9, structure="block")
    srep = pyfastcnn.report(sparse, X, runs=2)
    srows = [r for r in srep.rows if r.kind == "SparseConv2d"]
    # block-pruned layers run the block kernel where there is one (the scalar level has none:
    # the cost model may pick csr there)
    block_kernel = pyfastcnn.config()["kernels"]["sparse_conv2d_block"] != "scalar"
    kernels = ("sparse block",) if block_kernel else ("sparse block", "sparse csr")
    assert srows and all(r.kernel.startswith(kernels) for r in srows)
    assert all(r.nonzeros <= 0.15 * r.params for r in srows)
    fused = pyfastcnn.report(pyfastcnn.compress(model), X, runs=1)
    assert all(r.kernel.startswith("fused fp32") for r in fused.rows
               if r.kind == "FusedConvBNReLU2d")
    q = pyfastcnn.compress(model, quantize="int8", calibration_data=[X])
    qrep = pyfastcnn.report(q, X, runs=2)
    assert {r.kernel.split()[0] for r in qrep.rows} <= {"int8", "torch"}
    assert any(r.kernel.startswith("int8 avg pool") for r in qrep.rows)  # the model's head
    assert qrep.bytes < 0.35 * rep.bytes  # int8 weights: about a quarter of FP32
    with pytest.raises(TypeError, match="example_input"):
        pyfastcnn.report(model, [X])
    with pytest.raises(ValueError, match="runs"):
        pyfastcnn.report(model, X, runs=0)
