import pytest
import torch
from conftest import rel_error
from conv_cases import ConvCase, conv_cases, layouts, to_layout

import pyfastcnn
from pyfastcnn.ops import reference

TOL = 1e-5


def bn_params(oc: int):
    return dict(
        running_mean=torch.randn(oc),
        running_var=torch.rand(oc) + 0.5,
        bn_weight=torch.randn(oc),
        bn_bias=torch.randn(oc),
    )


def check(case: ConvCase, x, w, bias, bn, eps=1e-5, relu=True):
    out = pyfastcnn.conv_bn_relu(x, w, bias, eps=eps, relu=relu, **bn, **case.kwargs())
    ref = reference.conv_bn_relu(
        x,
        w,
        bias,
        bn["running_mean"],
        bn["running_var"],
        bn.get("bn_weight"),
        bn.get("bn_bias"),
        eps=eps,
        relu=relu,
        **case.kwargs(),
    )
    assert out.shape == ref.shape and out.dtype == torch.float32
    assert rel_error(out, ref) <= TOL
    return out


@conv_cases
@layouts
def test_matches_reference(isa, case: ConvCase, layout):
    x = case.input()
    check(case, to_layout(x, layout), case.weight(), torch.randn(case.oc), bn_params(case.oc))


@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_options(relu, with_bias, affine):
    case = ConvCase("o", 2, 6, 9, 9, 5, (3, 3), padding=1)
    bn = bn_params(case.oc)
    if not affine:
        bn = dict(running_mean=bn["running_mean"], running_var=bn["running_var"])
    bias = torch.randn(case.oc) if with_bias else None
    out = check(case, case.input(), case.weight(), bias, bn, eps=1e-3, relu=relu)
    assert (out >= 0).all() if relu else (out < 0).any()


def test_matches_torch_modules_in_eval_mode():
    conv = torch.nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False)
    bn = torch.nn.BatchNorm2d(16)
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.normal_()
        bn.bias.normal_()
    model = torch.nn.Sequential(conv, bn, torch.nn.ReLU()).eval()
    x = torch.randn(2, 8, 15, 15)
    out = pyfastcnn.conv_bn_relu(
        x,
        conv.weight,
        None,
        running_mean=bn.running_mean,
        running_var=bn.running_var,
        bn_weight=bn.weight,
        bn_bias=bn.bias,
        eps=bn.eps,
        stride=2,
        padding=1,
    )
    with torch.no_grad():
        assert rel_error(out, model.double()(x.double())) <= TOL


def test_nan_propagates():
    x = torch.randn(1, 3, 7, 7)
    x[0, 0, 2, 5] = float("nan")
    w = torch.randn(4, 3, 3, 3)
    out = pyfastcnn.conv_bn_relu(x, w, padding=1, **bn_params(4))
    ref = reference.conv_bn_relu(x, w, None, padding=1, **bn_params(4))
    assert torch.equal(out.isnan(), ref.isnan()) and out.isnan().sum() == 4 * 9


def test_empty_batch():
    out = pyfastcnn.conv_bn_relu(
        torch.randn(0, 3, 8, 8), torch.randn(5, 3, 3, 3), padding=1, **bn_params(5)
    )
    assert out.shape == (0, 5, 8, 8)


def test_channels_last_in_gives_channels_last_out():
    x = torch.randn(2, 4, 6, 6).contiguous(memory_format=torch.channels_last)
    out = pyfastcnn.conv_bn_relu(x, torch.randn(8, 4, 3, 3), padding=1, **bn_params(8))
    assert out.is_contiguous(memory_format=torch.channels_last)


def _args(**overrides):
    args = dict(input=torch.randn(2, 4, 8, 8), weight=torch.randn(6, 4, 3, 3), **bn_params(6))
    args.update(overrides)
    return args


BAD_INPUTS = [
    ("input-half", _args(input=torch.randn(2, 4, 8, 8).half()), TypeError, "input must have"),
    ("weight-3d", _args(weight=torch.randn(6, 4, 3)), ValueError, "weight must be 4-D"),
    ("bias-length", _args(bias=torch.randn(7)), ValueError, "bias must have 6 elements"),
    (
        "mean-length",
        _args(running_mean=torch.randn(5)),
        ValueError,
        "running_mean must have 6 elements",
    ),
    ("var-dtype", _args(running_var=torch.rand(6).double()), TypeError, "running_var must have"),
    ("gamma-length", _args(bn_weight=torch.randn(3)), ValueError, "bn_weight must have 6"),
    ("beta-2d", _args(bn_bias=torch.randn(6, 1)), ValueError, "bn_bias must be 1-D"),
    ("eps-negative", _args(eps=-1.0), ValueError, "eps must be non-negative"),
    ("eps-str", _args(eps="1e-5"), TypeError, "eps must be a float"),
    ("channels", _args(weight=torch.randn(6, 5, 3, 3)), ValueError, "input channels"),
    ("stride-negative", _args(stride=-1), ValueError, "stride must be positive"),
    ("padding-negative", _args(padding=(1, -2)), ValueError, "padding must be non-negative"),
    ("kernel-too-big", _args(input=torch.randn(1, 4, 2, 2)), ValueError, "larger than"),
    ("groups", _args(groups=4, weight=torch.randn(6, 1, 3, 3)), ValueError, "groups=4"),
    ("relu-str", _args(relu="yes"), TypeError, "relu must be a bool"),
]


@pytest.mark.parametrize(
    "args,error,match", [b[1:] for b in BAD_INPUTS], ids=[b[0] for b in BAD_INPUTS]
)
def test_bad_input(args, error, match):
    with pytest.raises(error, match=match):
        pyfastcnn.conv_bn_relu(**args)


def test_opcheck():
    x = torch.randn(2, 4, 7, 7)
    args = (
        x,
        torch.randn(6, 2, 3, 3),
        torch.randn(6),
        [1, 2],
        [1, 0],
        [1, 1],
        2,
        [7, 3],
        0.0,
        float("inf"),
    )
    torch.library.opcheck(torch.ops.pyfastcnn.conv2d_bias_act.default, args)
