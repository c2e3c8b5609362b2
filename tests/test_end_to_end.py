"""Compressed whole models: torch.compile, save/load (also under another ISA level), errors."""
import io

import pytest
import torch

import pyfastcnn
from pyfastcnn import models
from pyfastcnn.quantization import sqnr

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)).contiguous(
    memory_format=torch.channels_last)


def _model():
    torch.manual_seed(0)
    model = models.cifar_resnet(8).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 1.5)
    return model


VARIANTS = {
    "fused": lambda m: pyfastcnn.compress(m),
    "sparse": lambda m: pyfastcnn.compress(m, sparsity=0.9, structure="block"),
    "int8": lambda m: pyfastcnn.compress(m, quantize="int8", calibration_data=[X]),
    "bf16": lambda m: pyfastcnn.compress(m, quantize="bf16"),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_torch_compile_matches_eager(variant):
    net = VARIANTS[variant](_model())
    torch._dynamo.reset()
    compiled = torch.compile(net, fullgraph=True)  # inductor; our ops are opaque custom ops
    with torch.no_grad():
        want, got = net(X), compiled(X)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)


def test_torch_compile_bf16_without_the_bf16_kernel():
    """Below AVX-512 BF16 the BF16 modules run the FP32 kernel on inputs and weights rounded to
    bfloat16 (the weight's rounded packing made once, the input's rounding an opaque op that
    inductor cannot drop): compiled equals eager there too."""
    isa = pyfastcnn.get_isa()
    try:
        pyfastcnn.set_isa("avx2")
        net = VARIANTS["bf16"](_model())
        torch._dynamo.reset()
        compiled = torch.compile(net, fullgraph=True)
        with torch.no_grad():
            assert torch.allclose(compiled(X), net(X), rtol=1e-5, atol=1e-5)
    finally:
        pyfastcnn.set_isa(isa)
    from pyfastcnn.ops.conv_bn_relu import _round_to_bf16

    torch.library.opcheck(_round_to_bf16, (X,))


@pytest.mark.parametrize("variant", VARIANTS)
def test_save_load_round_trip_and_other_isa(variant):
    net = VARIANTS[variant](_model())
    buffer = io.BytesIO()
    torch.save(net, buffer)
    with torch.no_grad():
        want = net(X)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    with torch.no_grad():
        assert torch.equal(loaded(X), want)
    # a machine with a lower ISA level: packed weights are repacked for it, results agree
    isa = pyfastcnn.get_isa()
    try:
        pyfastcnn.set_isa("avx2")
        buffer.seek(0)
        other = torch.load(buffer, weights_only=False)
        with torch.no_grad():
            got = other(X)
    finally:
        pyfastcnn.set_isa(isa)
    # (int8: the integer sums are exact at every level; the float epilogue may round one
    # intermediate code differently where FMA contraction differs)
    assert sqnr(want, got) > {"bf16": 40, "int8": 40}.get(variant, 100)


def test_state_dict_mismatch_is_a_clear_error():
    small = VARIANTS["int8"](_model())
    other = pyfastcnn.compress(models.cifar_resnet(8, width=8).eval(), quantize="int8",
                               calibration_data=[X])
    with pytest.raises(RuntimeError, match="size mismatch"):
        other.load_state_dict(small.state_dict())


def test_corrupt_file_is_a_clear_error(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(VARIANTS["int8"](_model()), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises((RuntimeError, OSError)):
        torch.load(path, weights_only=False)
