import io

import pytest
import torch
from conftest import rel_error
from conv_cases import CASES, ConvCase, layouts, to_layout

import pyfastcnn
from pyfastcnn.nn import FusedConvBNReLU2d


def make_modules(case: ConvCase, relu=True):
    padding = case.padding
    conv = torch.nn.Conv2d(case.c, case.oc, case.k, stride=case.stride, padding=padding,
                           dilation=case.dilation, groups=case.groups)
    bn = torch.nn.BatchNorm2d(case.oc)
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.normal_()
        bn.bias.normal_()
    layers = [conv, bn] + ([torch.nn.ReLU()] if relu else [])
    return conv, bn, torch.nn.Sequential(*layers).eval()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
@layouts
def test_matches_eager_modules(isa, case: ConvCase, layout):
    conv, bn, ref_model = make_modules(case)
    fused = FusedConvBNReLU2d.from_modules(conv, bn, relu=True)
    x = case.input()
    with torch.no_grad():
        ref = ref_model.double()(x.double())
    assert rel_error(fused(to_layout(x, layout)), ref) <= 1e-5


def test_without_bn_and_relu():
    conv = torch.nn.Conv2d(6, 10, 3, stride=2, padding=1)
    fused = FusedConvBNReLU2d.from_modules(conv, None, relu=False)
    x = torch.randn(3, 6, 11, 11)
    with torch.no_grad():
        assert rel_error(fused(x), conv.double()(x.double())) <= 1e-5


def test_repacks_when_isa_changes_and_survives_save_load():
    case = ConvCase("s", 2, 8, 9, 9, 16, (3, 3), padding=1)
    conv, bn, ref_model = make_modules(case)
    fused = FusedConvBNReLU2d.from_modules(conv, bn)
    x = case.input()
    expected = fused(x)
    previous = pyfastcnn.get_isa()
    try:
        for level in pyfastcnn.supported_isas():
            pyfastcnn.set_isa(level)
            assert rel_error(fused(x), expected) <= 1e-5
    finally:
        pyfastcnn.set_isa(previous)
    buffer = io.BytesIO()
    torch.save(fused, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert torch.equal(loaded(x), expected)
    # load_state_dict replaces the weight: the packed copy follows it.
    other = FusedConvBNReLU2d.from_modules(*make_modules(case)[:2])
    other.load_state_dict(fused.state_dict())
    assert torch.equal(other(x), expected)


def test_bad_modules():
    with pytest.raises(TypeError, match="conv must be a torch.nn.Conv2d"):
        FusedConvBNReLU2d.from_modules(torch.nn.Linear(3, 4))
    with pytest.raises(ValueError, match="padding_mode"):
        FusedConvBNReLU2d.from_modules(torch.nn.Conv2d(3, 4, 3, padding=1,
                                                       padding_mode="reflect"))
    with pytest.raises(ValueError, match="bn has 5 features"):
        FusedConvBNReLU2d.from_modules(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(5))
    with pytest.raises(TypeError, match="relu must be"):
        FusedConvBNReLU2d.from_modules(torch.nn.Conv2d(3, 4, 3), None, relu=torch.nn.GELU())
    fused = FusedConvBNReLU2d.from_modules(torch.nn.Conv2d(3, 4, 3))
    with pytest.raises(ValueError, match="input channels"):
        fused(torch.randn(1, 5, 8, 8))


def test_opcheck_packed_op():
    if pyfastcnn.config()["kernels"]["conv2d_dense"] == "scalar":
        pytest.skip("this CPU has no packed FP32 conv kernel (AVX-512 needed)")
    packed = pyfastcnn.PackedConvWeight(torch.randn(6, 2, 3, 3), groups=2)
    isa, data = packed.packed()
    x = torch.randn(2, 4, 7, 7).contiguous(memory_format=torch.channels_last)
    torch.library.opcheck(torch.ops.pyfastcnn.conv2d_bias_act_packed.default, (
        x, data, isa, [6, 2, 3, 3], torch.randn(6), [1, 2], [1, 0], [1, 1], 2, [7, 3], 0.0,
        float("inf")))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bfloat16_error_is_bounded_by_torch_bf16(isa, case: ConvCase):
    """BF16: inputs and folded weights rounded to bfloat16, FP32 sums. The error against float64
    must be no worse than twice that of PyTorch's own bfloat16 conv on the same values."""
    conv, bn, ref_model = make_modules(case)
    fused = FusedConvBNReLU2d.from_modules(conv, bn, relu=True, dtype=torch.bfloat16)
    x = case.input()
    with torch.no_grad():
        ref = ref_model.double()(x.double())
        f32 = FusedConvBNReLU2d.from_modules(conv.float(), bn.float(), relu=True)
        torch_bf16 = torch.relu(torch.nn.functional.conv2d(
            x.bfloat16(), f32.weight.bfloat16(), f32.bias.bfloat16(), case.stride, case.padding,
            case.dilation, case.groups))
    ours = fused(x)
    assert ours.dtype == torch.float32
    assert rel_error(ours, ref) <= 2 * rel_error(torch_bf16, ref) + 1e-6


def test_bfloat16_module_round_trips():
    case = ConvCase("s", 1, 6, 7, 7, 10, (3, 3), padding=1)
    conv, bn, _ = make_modules(case)
    fused = FusedConvBNReLU2d.from_modules(conv, bn, dtype=torch.bfloat16)
    x = case.input()
    buffer = io.BytesIO()
    torch.save(fused, buffer)
    buffer.seek(0)
    assert torch.equal(torch.load(buffer, weights_only=False)(x), fused(x))
    with pytest.raises(TypeError, match="dtype must be"):
        FusedConvBNReLU2d.from_modules(conv, bn, dtype=torch.float16)


# Depthwise 3x3 (the MobileNet kernel: rows and column edges handled without a padded copy,
# 4-pixel tiles, 16-channel blocks with a masked tail) and its fallbacks: odd channel counts,
# feature maps narrower than a tile, strides 1 and 2, asymmetric and over-wide padding,
# dilation, batch 1 and 8, ReLU6.
DEPTHWISE = [
    # (batch, channels, h, w, stride, padding, dilation)
    (1, 1, 7, 7, 1, 1, 1),
    (1, 3, 13, 5, 2, 1, 1),
    (8, 17, 9, 11, 1, 1, 1),
    (8, 33, 13, 13, 2, 1, 1),
    (1, 32, 17, 17, 1, 0, 1),
    (1, 48, 1, 1, 1, 1, 1),
    (2, 16, 2, 3, 2, 1, 1),
    (1, 24, 7, 13, 1, (0, 1), 1),
    (1, 40, 8, 8, 2, (1, 0), 1),
    (1, 16, 6, 6, 1, 3, 1),
    (1, 20, 11, 11, 1, 2, 2),
    (8, 96, 12, 12, 2, 1, 1),
    (1, 144, 7, 7, 1, 1, 1),
]


@pytest.mark.parametrize("relu6", [False, True], ids=["relu", "relu6"])
@pytest.mark.parametrize(
    "shape", DEPTHWISE,
    ids=lambda s: "n{}-c{}-{}x{}-s{}-p{}-d{}".format(*s).replace(" ", "").replace(",", "_"))
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_depthwise_3x3(isa, shape, relu6, layout):
    n, c, h, w, stride, padding, dilation = shape
    conv = torch.nn.Conv2d(c, c, 3, stride=stride, padding=padding, dilation=dilation,
                           groups=c)
    bn = torch.nn.BatchNorm2d(c)
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.normal_()
        bn.bias.normal_(0.0, 3.0)  # puts outputs on both sides of the ReLU6 bound
    act = torch.nn.ReLU6() if relu6 else torch.nn.ReLU()
    fused = FusedConvBNReLU2d.from_modules(conv, bn, relu=act)
    x = 2 * torch.randn(n, c, h, w)
    with torch.no_grad():
        ref = torch.nn.Sequential(conv, bn, act).eval().double()(x.double())
    out = fused(to_layout(x, layout))
    assert out.shape == ref.shape
    assert rel_error(out, ref) <= 1e-5
