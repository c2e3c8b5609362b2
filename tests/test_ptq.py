"""PTQ / QAT flows: fake quantization, prepare → calibrate → convert, QAT, reports, fusion."""
import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pyfastcnn
from pyfastcnn import models
from pyfastcnn.fusion import fuse, to_low_precision
from pyfastcnn.nn.fused import FusedConvBNReLU2d
from pyfastcnn.nn.quantized import (
    DeQuantize,
    QuantAdaptiveAvgPool2d,
    QuantAdd,
    QuantConv2d,
    Quantize,
    QuantLinear,
    QuantMaxPool2d,
)
from pyfastcnn.quantization import (
    OBSERVERS,
    FakeQuantize,
    QConfig,
    calibrate,
    convert,
    dequantize,
    disable_observer,
    fake_quantize,
    fake_quantize_weight,
    freeze_bn_stats,
    prepare,
    prepare_qat,
    quantization_report,
    quantize,
    simulate,
    sqnr,
)


def _randomize_bn(model):
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
    return model


def _batches(n, shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) for _ in range(n)]


def _ptq(model, data, config=None, depthwise="int8", **kw):
    prepared = prepare(model, config, **kw)
    calibrate(prepared, data)
    return prepared, convert(prepared, depthwise=depthwise)


class ConvBNReLU(nn.Module):
    def __init__(self, cin=5, cout=7, k=3, stride=1, groups=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


# ---- fake quantization -------------------------------------------------------------------------


def test_fake_quantize_is_quantize_then_dequantize():
    x = torch.randn(1000) * 3
    scale, zp = torch.tensor(0.02), torch.tensor(100.0)
    got = fake_quantize(x, scale, zp, 0, 255)
    want = dequantize(quantize(x, 0.02, 100, torch.uint8), 0.02, 100)
    assert torch.equal(got, want)


def test_fake_quantize_straight_through_gradient():
    x = torch.tensor([-5.0, -0.3, 0.0, 0.7, 1.9, 9.0], requires_grad=True)
    y = fake_quantize(x, torch.tensor(0.01), torch.tensor(128.0), 0, 255)  # range ±1.28
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0, 0.0]


def test_fake_quantize_weight_matches_quantize_weight():
    w = torch.randn(6, 4, 3, 3)
    want = pyfastcnn.quantize_weight(w).dequantize()
    assert torch.allclose(fake_quantize_weight(w), want, rtol=0, atol=1e-7)
    codes = fake_quantize_weight(w, bits=4) / (w.abs().amax(dim=(1, 2, 3), keepdim=True) / 7)
    assert torch.allclose(codes, codes.round(), atol=1e-4) and codes.abs().max() <= 7 + 1e-4


def test_learnable_fake_quantize_gets_gradients():
    fq = FakeQuantize("minmax", observe=True, fake_quant=True, learnable=True)
    x = torch.randn(256) * 2
    fq(x)  # initialises the scale from the observer
    y = fq(x * 1.5)
    ((y - x * 1.5) ** 2).sum().backward()
    assert fq.scale.grad is not None and fq.scale.grad.abs() > 0
    assert fq.zero_point.grad is not None


@pytest.mark.parametrize("observer", OBSERVERS)
def test_every_observer_drives_ptq(observer):
    model = _randomize_bn(ConvBNReLU()).eval()
    data = _batches(2, (2, 5, 9, 9))
    _, q = _ptq(model, data, QConfig(activation=observer))
    with torch.no_grad():
        assert sqnr(model(data[0]), q(data[0])) > 20


# ---- convert ---------------------------------------------------------------------------------


@pytest.mark.parametrize("stride,groups", [(1, 1), (2, 1), (1, 5)])
def test_single_layer_matches_simulation(stride, groups):
    # One INT8 layer with float output: integer sums are exact, so the INT8 result equals the
    # float conv of the fake-quantized input and weight up to float32 rounding.
    torch.manual_seed(0)
    model = _randomize_bn(ConvBNReLU(5, 10 if groups > 1 else 7, 3, stride, groups)).eval()
    data = _batches(3, (2, 5, 13, 11))
    prepared, q = _ptq(model, data)
    assert isinstance(q.conv, QuantConv2d) and q.conv.out_dtype == torch.float32
    sim = simulate(prepared)
    with torch.no_grad():
        for x in data:
            want, got = sim(x).double(), q(x).double()
            assert (got - want).norm() / want.norm() < 1e-5


def test_int8_output_within_one_step_of_simulation():
    model = nn.Sequential(ConvBNReLU(5, 8), ConvBNReLU(8, 6)).eval()
    _randomize_bn(model)
    data = _batches(3, (2, 5, 9, 9))
    prepared, q = _ptq(model, data)
    first = q.get_submodule("0.conv")
    assert first.out_dtype == torch.uint8
    codes = {}
    first.register_forward_hook(lambda m, a, out: codes.__setitem__("q", out))
    sim = simulate(prepared)
    fq = sim.get_submodule("activation_quant_1")  # the first layer's output quantizer
    sim_codes = {}
    fq.register_forward_hook(lambda m, a, out: sim_codes.__setitem__("q", out))
    scale, zp = fq.qparams()
    assert (scale, zp) == (first.out_scale, first.out_zero_point)
    with torch.no_grad():
        for x in data:
            q(x)
            sim(x)
            want = quantize(sim_codes["q"], scale, zp).int()
            assert (codes["q"].int() - want).abs().max() <= 1


def test_int8_chain_and_float_boundaries():
    # a float op (Hardswish) after the second conv: that conv ends the chain with float
    # output, the pool runs in float and the linear quantizes its input
    model = nn.Sequential(ConvBNReLU(3, 8), ConvBNReLU(8, 8), nn.Hardswish(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    _randomize_bn(model)
    data = _batches(2, (2, 3, 10, 10))
    _, q = _ptq(model, data)
    convs = [m for m in q.modules() if isinstance(m, QuantConv2d)]
    assert [c.out_dtype for c in convs] == [torch.uint8, torch.float32]
    linear = [m for m in q.modules() if isinstance(m, QuantLinear)]
    assert len(linear) == 1 and linear[0].out_dtype == torch.float32
    assert len([m for m in q.modules() if isinstance(m, Quantize)]) == 2  # input, after pool
    assert not any(isinstance(m, QuantAdaptiveAvgPool2d) for m in q.modules())
    with torch.no_grad():
        assert sqnr(model(data[0]), q(data[0])) > 25


@pytest.mark.parametrize("functional", [False, True], ids=["module", "function"])
def test_int8_chain_through_adaptive_pool(functional):
    # conv -> conv -> adaptive average pool -> flatten -> linear stays INT8 end to end: the
    # pool averages the second conv's codes and the linear takes them with that conv's
    # output scale and zero point
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = ConvBNReLU(3, 8), ConvBNReLU(8, 8)
            self.pool = nn.AdaptiveAvgPool2d((2, None))
            self.fc = nn.Linear(16 if functional else 144, 4)

        def forward(self, x):
            y = self.b(self.a(x))
            y = F.adaptive_avg_pool2d(y, (2, 1)) if functional else self.pool(y)
            return self.fc(torch.flatten(y, 1))

    model = _randomize_bn(Net()).eval()
    data = _batches(2, (2, 3, 10, 9))
    prepared, q = _ptq(model, data)
    convs = [m for m in q.modules() if isinstance(m, QuantConv2d)]
    pools = [m for m in q.modules() if isinstance(m, QuantAdaptiveAvgPool2d)]
    assert [c.out_dtype for c in convs] == [torch.uint8, torch.uint8] and len(pools) == 1
    assert len([m for m in q.modules() if isinstance(m, Quantize)]) == 1  # the input
    assert not any(isinstance(m, DeQuantize) for m in q.modules())
    fc = q.get_submodule("fc")
    assert (fc.in_scale, fc.in_zero_point) == (convs[1].out_scale, convs[1].out_zero_point)
    with torch.no_grad():
        assert sqnr(model(data[0]), q(data[0])) > 25
        assert sqnr(simulate(prepared)(data[0]), q(data[0])) > 30


def test_resnet_with_residuals():
    torch.manual_seed(0)
    model = _randomize_bn(models.cifar_resnet(8, num_classes=10)).eval()
    data = _batches(3, (2, 3, 32, 32))
    prepared, q = _ptq(model, data)
    # default: each block's add + ReLU runs in the epilogue of the conv it adds to
    assert not [m for m in q.modules() if isinstance(m, QuantAdd)]
    convs = [m for m in q.modules() if isinstance(m, QuantConv2d)]
    fused = [c for c in convs if c.residual_scale is not None]
    assert len(convs) == 9 and len(fused) == 3 and all(c.activation == "relu" for c in fused)
    unfused = convert(prepared, fuse_residual=False)
    adds = [m for m in unfused.modules() if isinstance(m, QuantAdd)]
    assert len(adds) == 3 and all(a.relu for a in adds)
    assert all(m.residual_scale is None for m in unfused.modules() if isinstance(m, QuantConv2d))
    # the head stays INT8: conv (+ add) -> QuantAdaptiveAvgPool2d -> flatten -> QuantLinear
    assert isinstance(q.avgpool, QuantAdaptiveAvgPool2d)
    assert not any(isinstance(m, DeQuantize) for m in q.modules())
    with torch.no_grad():
        ref, out = model(data[0]), q(data[0])
        assert sqnr(ref, out) > 25
        simulated = simulate(prepared)(data[0])
        assert sqnr(simulated, out) > 35  # INT8 model ≈ its simulation
        assert sqnr(simulated, unfused(data[0])) > 35
        # the same model saved and loaded
        buffer = io.BytesIO()
        torch.save(q, buffer)
        buffer.seek(0)
        assert torch.equal(torch.load(buffer, weights_only=False)(data[0]), out)


def test_resnet18_int8_pooling():
    # ImageNet stem and head: max pool and global average pool on the codes; the classifier
    # takes the last residual add's codes with that add's scale and zero point
    torch.manual_seed(0)
    model = _randomize_bn(models.resnet18(num_classes=10)).eval()
    data = _batches(2, (2, 3, 64, 64))
    prepared, q = _ptq(model, data)
    assert isinstance(q.maxpool, QuantMaxPool2d) and isinstance(q.avgpool, QuantAdaptiveAvgPool2d)
    assert not any(isinstance(m, DeQuantize) for m in q.modules())
    assert len([m for m in q.modules() if isinstance(m, Quantize)]) == 1  # the input
    last_add = q.get_submodule("layer4.1.conv2")  # the last residual add, fused into this conv
    assert last_add.fused_add == "residual_add_7"
    assert (q.fc.in_scale, q.fc.in_zero_point) == (last_add.out_scale, last_add.out_zero_point)
    pooled = {}
    q.avgpool.register_forward_hook(lambda m, a, out: pooled.update(x=a[0], y=out))
    with torch.no_grad():
        out = q(data[0])
        assert sqnr(model(data[0]), out) > 25
        assert sqnr(simulate(prepared)(data[0]), out) > 30
    x = pooled["x"]
    assert pooled["y"].dtype == torch.uint8 and pooled["y"].shape == (2, 512, 1, 1)
    want = torch.round(x.double().sum((2, 3), keepdim=True) / (x.shape[2] * x.shape[3]))
    assert torch.equal(pooled["y"].double(), want)


def test_observer_after_pooled_codes_describes_nothing():
    # A graph prepared when the pool ran in float has an observer after flatten; convert must
    # give the classifier the scale of the codes it receives (the last add's), not that one's.
    model = _randomize_bn(models.cifar_resnet(8)).eval()
    data = _batches(2, (2, 3, 32, 32))
    prepared = prepare(model)
    flatten = next(n for n in prepared.graph.nodes if n.target is torch.flatten)
    prepared.add_submodule("stale_quant", FakeQuantize("minmax", observe=True, fake_quant=False))
    with prepared.graph.inserting_after(flatten):
        stale = prepared.graph.call_module("stale_quant", (flatten,))
    flatten.replace_all_uses_with(stale, delete_user_cb=lambda user: user is not stale)
    prepared.recompile()
    calibrate(prepared, data)
    q = convert(prepared)
    last_add = q.get_submodule("layer3.0.conv2")  # the last residual add, fused into it
    assert last_add.fused_add == "residual_add_2"
    assert (q.fc.in_scale, q.fc.in_zero_point) == (last_add.out_scale, last_add.out_zero_point)
    assert prepared.stale_quant.qparams() != (last_add.out_scale, last_add.out_zero_point)
    with torch.no_grad():
        assert sqnr(model(data[0]), q(data[0])) > 25


def test_mobilenet_depthwise_relu6():
    torch.manual_seed(0)
    model = _randomize_bn(models.mobilenet_v2(num_classes=10)).eval()
    data = _batches(2, (1, 3, 64, 64))
    prepared = prepare(model)
    calibrate(prepared, data)
    for mode in ("float", "int8", None):
        q = convert(prepared, depthwise=mode) if mode else convert(prepared)
        mode = mode or "int8"
        convs = [m for m in q.modules() if isinstance(m, QuantConv2d)]
        fused_dw = [m for m in q.modules() if isinstance(m, FusedConvBNReLU2d) and m.groups > 1]
        # default: depthwise convs in INT8 (their own kernel); "float": on the FP32 depthwise
        # kernel between INT8 layers
        assert (len(fused_dw) == 17) == (mode == "float")
        assert any(c.weight.groups > 1 for c in convs) == (mode == "int8")
        assert all(c.weight.is_depthwise for c in convs if c.weight.groups > 1)
        assert any(c.activation == "relu6" for c in convs)
        assert len([m for m in q.modules() if isinstance(m, QuantConv2d)
                    and m.residual_scale is not None]) == 10  # adds fused into the convs
        with torch.no_grad():
            assert sqnr(model(data[0]), q(data[0])) > 25
    with pytest.raises(ValueError, match="depthwise"):
        convert(prepared, depthwise="bf16")


def test_filter_fn_and_keep_float():
    model = _randomize_bn(models.cifar_resnet(8)).eval()
    data = _batches(2, (2, 3, 32, 32))
    _, q = _ptq(model, data, filter_fn=lambda name, m: name != "conv1")
    assert isinstance(q.get_submodule("conv1"), (nn.Conv2d, FusedConvBNReLU2d))
    prepared = prepare(model)
    calibrate(prepared, data)
    q2 = convert(prepared, keep_float=["layer1.0.conv1", "fc"])
    assert isinstance(q2.get_submodule("layer1.0.conv1"), FusedConvBNReLU2d)
    assert not isinstance(q2.get_submodule("fc"), QuantLinear)
    with torch.no_grad():
        assert sqnr(model(data[0]), q(data[0])) > 25
        assert sqnr(model(data[0]), q2(data[0])) > 25
    with pytest.raises(ValueError, match="keep_float"):
        convert(prepared, keep_float=["no.such.layer"])


def test_weight_bits():
    model = _randomize_bn(ConvBNReLU()).eval()
    data = _batches(2, (2, 5, 9, 9))
    _, q = _ptq(model, data, QConfig(weight_bits=4))
    assert q.conv.weight.int_weight.abs().max() <= 7
    with pytest.raises(ValueError, match="weight_bits"):
        prepare(model, QConfig(weight_bits=9))


def test_report_lists_every_int8_layer():
    model = _randomize_bn(models.cifar_resnet(8)).eval()
    data = _batches(2, (2, 3, 32, 32))
    prepared, q = _ptq(model, data)
    rows = quantization_report(prepared, q, data)
    names = [r["layer"] for r in rows]
    assert names[0] == "conv1" and "fc" in names
    assert len(rows) == 9 + 1  # convs (3 with their residual add fused) and the linear
    assert [r["kind"] for r in rows].count("QuantConv2d+add") == 3
    assert all(10 < r["sqnr_db"] < 100 for r in rows)
    unfused_rows = quantization_report(prepared, convert(prepared, fuse_residual=False), data)
    assert "residual_add_0" in [r["layer"] for r in unfused_rows] and len(unfused_rows) == 13
    assert all(10 < r["sqnr_db"] < 100 for r in unfused_rows)
    # the report restores the prepared model's switches
    assert all(m.observe for m in prepared.modules() if isinstance(m, FakeQuantize))


def test_converted_model_saves_and_loads():
    model = _randomize_bn(models.cifar_resnet(8)).eval()
    data = _batches(2, (2, 3, 32, 32))
    _, q = _ptq(model, data)
    buffer = io.BytesIO()
    torch.save(q, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    with torch.no_grad():
        assert torch.equal(loaded(data[1]), q(data[1]))
    # state_dict round trip into a second conversion of the same architecture
    _, other = _ptq(model, _batches(1, (2, 3, 32, 32), seed=5))
    other.load_state_dict(q.state_dict())
    assert torch.equal(other.get_submodule("layer1.0.conv1").weight.int_weight,
                       q.get_submodule("layer1.0.conv1").weight.int_weight)


def test_bad_arguments():
    with pytest.raises(TypeError, match="model"):
        prepare("resnet")
    with pytest.raises(TypeError, match="config"):
        prepare(ConvBNReLU(), config={"weight_bits": 8})
    with pytest.raises(TypeError, match="prepared"):
        convert(ConvBNReLU())
    with pytest.raises(ValueError, match="observer"):
        prepare(ConvBNReLU(), QConfig(activation="median"))
    q = _ptq(_randomize_bn(ConvBNReLU()).eval(), _batches(1, (1, 5, 8, 8)))[1]
    with pytest.raises(TypeError, match="float32"):
        q(torch.zeros(1, 5, 8, 8, dtype=torch.float64))


def test_uncalibrated_model_fails_clearly():
    prepared = prepare(ConvBNReLU())
    with pytest.raises(RuntimeError, match="calibration"):
        convert(prepared)


# ---- QAT ---------------------------------------------------------------------------------


def test_qat_gradients_flow_and_loss_drops():
    torch.manual_seed(0)
    model = nn.Sequential(ConvBNReLU(3, 8), ConvBNReLU(8, 8, stride=2), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(8, 3))
    x = torch.randn(32, 3, 12, 12)
    y = (x[:, 0].mean(dim=(1, 2)) > 0).long() + (x[:, 1].mean(dim=(1, 2)) > 0).long()
    qat = prepare_qat(model)
    opt = torch.optim.SGD(qat.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for step in range(40):
        loss = F.cross_entropy(qat(x), y)
        opt.zero_grad()
        loss.backward()
        if step == 0:
            grads = [p.grad for n, p in qat.named_parameters() if n.endswith("conv.weight")]
            assert len(grads) == 2 and all(g is not None and g.abs().sum() > 0 for g in grads)
        opt.step()
        losses.append(loss.item())
        if step == 30:
            freeze_bn_stats(qat)
            disable_observer(qat)
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    q = convert(qat)
    qat.eval()
    with torch.no_grad():
        assert sqnr(qat(x), q(x)) > 30  # the INT8 model computes what QAT trained


def test_qat_bn_folding_matches_float_in_eval():
    torch.manual_seed(0)
    model = _randomize_bn(ConvBNReLU()).eval()
    qat = prepare_qat(model).eval()
    for m in qat.modules():
        if isinstance(m, FakeQuantize):
            m.fake_quant = False
        if hasattr(m, "fake_quant_weight"):
            m.fake_quant_weight = False
    x = torch.randn(2, 5, 9, 9)
    with torch.no_grad():
        assert torch.allclose(qat(x), model(x), atol=1e-5)


def test_learnable_qat_converts():
    model = _randomize_bn(ConvBNReLU()).train()
    qat = prepare_qat(model, QConfig(learnable=True))
    x = torch.randn(4, 5, 9, 9)
    qat(x).sum().backward()
    learned = [m for m in qat.modules() if isinstance(m, FakeQuantize)]
    assert all(m.scale.grad is not None for m in learned)
    q = convert(qat)
    qat.eval()
    with torch.no_grad():
        assert sqnr(qat(x), q(x)) > 30


# ---- fusion and low precision -------------------------------------------------------------


@pytest.mark.parametrize("factory,shape", [
    (lambda: models.cifar_resnet(8), (2, 3, 32, 32)),
    (lambda: models.mobilenet_v2(10), (1, 3, 48, 48))])
def test_fuse_matches_float(factory, shape):
    model = _randomize_bn(factory()).eval()
    fused = fuse(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    x = torch.randn(shape)
    with torch.no_grad():
        ref, out = model(x), fused(x)
    assert (out - ref).norm() / ref.norm() < 1e-5
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # original untouched


def test_low_precision():
    model = _randomize_bn(models.cifar_resnet(8)).eval()
    x = torch.randn(2, 3, 32, 32)
    bf16 = to_low_precision(model, torch.bfloat16)
    assert all(m.dtype == torch.bfloat16 for m in bf16.modules()
               if isinstance(m, FusedConvBNReLU2d))
    with torch.no_grad():
        ref, out = model(x), bf16(x)
        torch_bf16 = copy.deepcopy(model).bfloat16()(x.bfloat16()).float()
    # no worse than twice PyTorch's own bfloat16 error on the same model
    assert (out - ref).norm() <= 2 * (torch_bf16 - ref).norm() + 1e-6
    assert next(to_low_precision(model, torch.float16).parameters()).dtype == torch.float16
    with pytest.raises(TypeError, match="dtype"):
        to_low_precision(model, torch.int8)


@pytest.mark.parametrize("kernel,stride,padding,dilation,ceil", [
    (3, 2, 1, 1, False), (2, 2, 0, 1, False), (3, 1, 1, 2, False), ((3, 2), (2, 1), (1, 0), 1,
                                                                      False), (3, 2, 1, 1, True)])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8])
def test_quant_max_pool_matches_float(kernel, stride, padding, dilation, ceil, dtype):
    from pyfastcnn.nn.quantized import QuantMaxPool2d

    lo, hi = (0, 256) if dtype == torch.uint8 else (-128, 128)
    q = torch.randint(lo, hi, (2, 5, 13, 10), dtype=dtype).contiguous(
        memory_format=torch.channels_last)
    pool = nn.MaxPool2d(kernel, stride, padding, dilation, ceil_mode=ceil)
    out = QuantMaxPool2d.from_float(pool)(q)
    assert out.dtype == dtype and torch.equal(out, pool(q.float()).to(dtype))


def test_pruned_layers_run_the_sparse_int8_kernel():
    from pyfastcnn import pruning

    model = _randomize_bn(models.cifar_resnet(8)).eval()
    pruning.prune(model, 0.9, "block", block_shape=(1, 4), skip=["conv1", "fc"])
    pruning.remove(model)
    data = _batches(2, (2, 3, 32, 32))
    prepared = prepare(model)
    calibrate(prepared, data)
    # sparse convs take the residual add into their epilogue where that pays (AVX2), else
    # keep a separate add: compare with a dense model that does the same
    from pyfastcnn.quantization.flow import _sparse_residual_pays

    fused = _sparse_residual_pays()
    sparse, dense = convert(prepared, sparse=True), convert(prepared, sparse=False,
                                                            fuse_residual=fused)
    assert any(m.fused_add for m in sparse.modules() if isinstance(m, QuantConv2d)) == fused
    convs = {n: m for n, m in sparse.named_modules() if isinstance(m, QuantConv2d)}
    assert sum(m.sparse for m in convs.values()) == 8 and not convs["conv1"].sparse
    assert not any(m.sparse for m in dense.modules() if isinstance(m, QuantConv2d))
    with torch.no_grad():
        assert torch.equal(sparse(data[0]), dense(data[0]))  # same integer math
    buffer = io.BytesIO()
    torch.save(sparse, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    with torch.no_grad():
        assert torch.equal(loaded(data[1]), sparse(data[1]))
    other = convert(prepared, sparse=True)
    other.load_state_dict(sparse.state_dict())
    assert "layer1.0.conv1.sparse_values" in sparse.state_dict()
    with pytest.raises(ValueError, match="sparse"):
        convert(prepared, sparse="yes")


@pytest.mark.parametrize("level", ["avx512_vnni", "avx512_amx"])
def test_sparse_auto_follows_the_dense_kernel(level):
    """90% block pruning: sparse INT8 beats the dense VNNI kernel, not the dense AMX one."""
    from pyfastcnn import pruning

    if level not in pyfastcnn.supported_isas():
        pytest.skip(f"this CPU lacks {level}")
    model = _randomize_bn(models.cifar_resnet(8)).eval()
    pruning.prune(model, 0.9, "block", block_shape=(1, 4), skip=["conv1", "fc"])
    pruning.remove(model)
    prepared = prepare(model)
    calibrate(prepared, _batches(1, (2, 3, 32, 32)))
    previous = pyfastcnn.get_isa()
    try:
        pyfastcnn.set_isa(level)
        converted = convert(prepared)
    finally:
        pyfastcnn.set_isa(previous)
    sparse = [m.sparse for m in converted.modules() if isinstance(m, QuantConv2d)]
    assert sum(sparse) == (8 if level == "avx512_vnni" else 0)


def test_fused_residual_conv_takes_any_residual_layout():
    qw = pyfastcnn.quantize_weight(torch.randn(8, 4, 3, 3))
    conv = QuantConv2d(qw, None, (1, 1), (1, 1), (1, 1), 0.1, 0, 0.1, 0)
    conv.fuse_residual_add(0.05, 3, 0.2, 0, relu=True)
    x = torch.randint(0, 255, (2, 4, 5, 5), dtype=torch.uint8).contiguous(
        memory_format=torch.channels_last)
    r = torch.randint(0, 255, (2, 8, 5, 5), dtype=torch.uint8)  # NCHW
    want = conv(x, r.contiguous(memory_format=torch.channels_last))  # (caches the call)
    assert torch.equal(conv(x, r), want)
    with pytest.raises(ValueError, match="output's shape"):
        conv(x, r[:, :, :4])
    with pytest.raises(ValueError, match="takes a residual"):
        conv(x)
