"""pyfastcnn.pruning: masks, structures, schedules, optimizers, channels, sensitivity, convert."""
import copy
import pickle
import warnings

import pytest
import torch
from conftest import rel_error
from torch import nn

import pyfastcnn
from pyfastcnn import pruning
from pyfastcnn.pruning import (
    NM,
    Block,
    CubicSchedule,
    GradualPruner,
    LinearSchedule,
    OneShotSchedule,
)



def _has_block_kernel() -> bool:
    """Whether this CPU runs the FP32 block-sparse kernel (AVX2 and up; not the scalar level)."""
    return pyfastcnn.config()["kernels"]["sparse_conv2d_block"] != "scalar"

def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 40, 3, padding=1, bias=False), nn.BatchNorm2d(40), nn.ReLU(),
        nn.Conv2d(40, 8, 1), nn.Flatten(), nn.Linear(8 * 8 * 8, 10))


def randomize_bn(model: nn.Module) -> nn.Module:
    """BN with non-trivial statistics so channel removal is really tested."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return model


def zeros(t: torch.Tensor) -> int:
    return int((t == 0).sum())


# ---------------------------------------------------------------- masks and structures

@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9, 1.0])
def test_unstructured_exact_count(sparsity):
    model = small_cnn()
    pruning.prune(model, sparsity)
    for m in (model[0], model[2], model[5], model[7]):
        n = m.weight.numel()
        assert zeros(m.weight) == round(sparsity * n)
        assert int((~m.weight_mask).sum()) == round(sparsity * n)


def test_unstructured_prunes_smallest():
    model = nn.Sequential(nn.Linear(50, 20))
    w = model[0].weight.detach().clone()
    pruning.prune(model, 0.6)
    kept = w[model[0].weight_mask].abs()
    gone = w[~model[0].weight_mask].abs()
    assert kept.min() >= gone.max()


def test_global_scope_exact_total_and_one_threshold():
    model = small_cnn()
    pruning.prune(model, 0.7, scope="global")
    layers = [model[0], model[2], model[5], model[7]]
    total = sum(m.weight.numel() for m in layers)
    assert sum(zeros(m.weight) for m in layers) == round(0.7 * total)
    kept = torch.cat([m.weight[m.weight_mask].abs() for m in layers])
    assert kept.min() > 0
    # one threshold: every kept magnitude >= every pruned original magnitude
    assert (torch.cat([m.weight_mask.reshape(-1) for m in layers]).float().mean().item()
            == pytest.approx(0.3, abs=1e-3))


def test_overrides_skip_filter_fn():
    model = small_cnn()
    pruning.prune(model, 0.5, overrides={"2": 0.8}, skip=["7"],
                  filter_fn=lambda m, name: isinstance(m, (nn.Conv2d, nn.Linear)))
    assert zeros(model[2].weight) == round(0.8 * model[2].weight.numel())
    assert zeros(model[0].weight) == round(0.5 * model[0].weight.numel())
    assert not hasattr(model[7], "weight_mask")
    only_linear = small_cnn()
    pruning.prune(only_linear, 0.5, filter_fn=lambda m, name: isinstance(m, nn.Linear))
    assert [n for n, _ in pruning.masks(only_linear).items()] == ["7.weight"]


@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (4, 8), (1, 2)])
def test_nm_valid(n, m):
    conv = nn.Conv2d(16, 24, 3)
    lin = nn.Linear(32, 5)
    model = nn.ModuleDict({"conv": conv, "fc": lin})
    pruning.prune(model, structure=f"{n}:{m}")
    w = conv.weight.permute(0, 2, 3, 1).reshape(-1, m)  # runs of m input channels
    assert ((w != 0).sum(1) == n).all()
    lw = lin.weight.reshape(-1, m)
    assert ((lw != 0).sum(1) == n).all()
    # the n kept are the largest of their run
    orig = torch.randn(8, 16)
    layer = nn.Linear(16, 8)
    with torch.no_grad():
        layer.weight.copy_(orig)
    pruning.prune(nn.ModuleList([layer]), structure=NM(n, m))
    runs = orig.abs().reshape(-1, m)
    keep = layer.weight_mask.reshape(-1, m)
    assert (runs[keep].reshape(-1, n).min(1).values
            >= runs.masked_fill(keep, -1).max(1).values).all()


def test_nm_skips_incompatible_with_warning():
    model = pyfastcnn.models.cifar_resnet(8)
    with pytest.warns(UserWarning, match="conv1"):
        pruning.prune(model, structure="2:4")
    assert not hasattr(model.conv1, "weight_mask")
    assert zeros(model.layer1[0].conv1.weight) == model.layer1[0].conv1.weight.numel() // 2


@pytest.mark.parametrize("block_shape", [(32, 1), (1, 4), (8, 2)])
def test_block_structure(block_shape):
    bo, br = block_shape
    conv = nn.Conv2d(32, 64, 3)
    pruning.prune(nn.ModuleList([conv]), 0.75, "block", block_shape=block_shape)
    w = conv.weight.detach()
    assert zeros(w) == round(0.75 * w.numel())
    # every block is all kept or all pruned
    blocks = (w != 0).view(64 // bo, bo, 32 // br, br, 3, 3)
    per_block = blocks.sum(dim=(1, 3))
    assert ((per_block == 0) | (per_block == bo * br)).all()


def test_block_32_matches_block_kernel_packing():
    conv = nn.Conv2d(64, 96, 3, padding=1)
    pruning.prune(nn.ModuleList([conv]), 0.8, Block((32, 1)))
    packed = pyfastcnn.pack_sparse(conv.weight.detach(), "block")
    assert packed.values.numel() == int(torch.count_nonzero(conv.weight))
    # "auto" takes the blocks where the CPU has the block kernel (else csr, the faster there)
    has_block_kernel = pyfastcnn.config()["kernels"]["sparse_conv2d_block"] != "scalar"
    auto = pyfastcnn.pack_sparse(conv.weight.detach(), "auto")
    assert auto.format == ("block" if has_block_kernel else "csr")


def test_block_grouped_and_edge_blocks():
    conv = nn.Conv2d(8, 80, 3, groups=2)  # 40 channels per group: a 32 and an 8 block
    pruning.prune(nn.ModuleList([conv]), 0.5, "block")
    w = conv.weight.detach().view(2, 40, 4, 9)
    for g in range(2):
        for lo, hi in ((0, 32), (32, 40)):
            nz = (w[g, lo:hi] != 0).sum(0)
            assert ((nz == 0) | (nz == hi - lo)).all()


def test_masks_grow_monotonically_and_random_and_taylor():
    model = small_cnn()
    pruning.prune(model, 0.5, criterion="random", generator=torch.Generator().manual_seed(1))
    first = model[2].weight_mask.clone()
    pruning.prune(model, 0.8, criterion="random")
    assert not (model[2].weight_mask & ~first).any()
    assert zeros(model[2].weight) == round(0.8 * model[2].weight.numel())
    tmodel = small_cnn()
    with pytest.raises(ValueError, match="taylor"):
        pruning.prune(tmodel, 0.5, criterion="taylor")
    tmodel(torch.randn(2, 3, 8, 8)).sum().backward()
    pruning.prune(tmodel, 0.5, criterion="taylor")
    assert zeros(tmodel[0].weight) == round(0.5 * tmodel[0].weight.numel())


def test_remove_state_dict_copy_and_restore():
    model = small_cnn()
    pruning.prune(model, 0.6)
    sd = model.state_dict()
    assert "2.weight_mask" in sd and "2.weight" in sd
    # a fresh architecture: restore the masks, then load
    fresh = pruning.restore_masks(small_cnn(), sd)
    fresh.load_state_dict(sd)
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(fresh(x), model(x))
    clone = copy.deepcopy(model)
    clone2 = pickle.loads(pickle.dumps(model))
    for c in (clone, clone2):
        with torch.no_grad():
            c[2].weight.add_(1.0)  # a hand edit is masked at the next forward
        c(x)
        assert zeros(c[2].weight) == zeros(model[2].weight)
    pruning.remove(model)
    assert not pruning.is_pruned(model)
    assert "2.weight_mask" not in model.state_dict()
    assert zeros(model[2].weight) == round(0.6 * model[2].weight.numel())


# ---------------------------------------------------------------- optimizers

def _train(model, opt, steps=4):
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(4, 3, 8, 8)).square().mean().backward()
        opt.step()


@pytest.mark.parametrize("make_opt", [
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-2, nesterov=True),
    lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=1e-2),
    lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1),
], ids=["sgd-momentum-wd", "adam-wd", "adamw"])
def test_masked_weights_stay_zero_through_optimizer(make_opt):
    # optimizer created after pruning: the gradient mask alone keeps zeros exact
    model = small_cnn()
    pruning.prune(model, 0.7)
    before = {k: v.clone() for k, v in pruning.masks(model).items()}
    opt = make_opt(model.parameters())
    _train(model, opt)
    for name, mask in before.items():
        w = model.get_parameter(name)
        assert (w[~mask] == 0).all(), name
        assert (w[mask] != 0).any()
    # optimizer with stale state (momentum built before pruning): mask_optimizer clears it
    model = small_cnn()
    opt = make_opt(model.parameters())
    _train(model, opt)
    pruning.prune(model, 0.7)
    pruning.mask_optimizer(opt, model)
    _train(model, opt)
    for name, mask in pruning.masks(model).items():
        assert (model.get_parameter(name)[~mask] == 0).all(), name


# ---------------------------------------------------------------- schedules

def test_cubic_schedule_formula():
    sched = CubicSchedule(0.9, begin_step=10, end_step=110, initial_sparsity=0.1, frequency=10)
    assert sched(0) == 0.0 and sched(9) == 0.0
    for t in (10, 15, 20, 55, 100, 109):
        tq = 10 + (t - 10) // 10 * 10
        expect = 0.9 + (0.1 - 0.9) * (1 - (tq - 10) / 100) ** 3
        assert sched(t) == pytest.approx(expect, abs=1e-12)
    assert sched(110) == 0.9 and sched(10_000) == 0.9
    lin = LinearSchedule(0.8, 0, 100)
    assert lin(25) == pytest.approx(0.2) and lin(100) == 0.8
    one = OneShotSchedule(0.6, step=5)
    assert one(4) == 0.0 and one(5) == 0.6


def test_gradual_pruner_follows_schedule():
    model = small_cnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    sched = CubicSchedule(0.8, begin_step=0, end_step=8, frequency=2)
    pruner = GradualPruner(model, sched, optimizer=opt, skip=["7"])
    seen = []
    for step in range(1, 11):
        _train(model, opt, steps=1)
        target = pruner.step()
        assert target == pytest.approx(sched(step))
        w = model[2].weight
        assert zeros(w) == round(target * w.numel())
        if target > 0:
            seen.append(model[2].weight_mask.clone())
    assert len(seen) == 9
    for a, b in zip(seen, seen[1:]):
        assert not (b & ~a).any()  # pruned stays pruned
    assert pruner.state_dict()["last_step"] == 10
    pruner.remove()
    assert not pruning.is_pruned(model)
    assert zeros(model[2].weight) == round(0.8 * model[2].weight.numel())


# ---------------------------------------------------------------- channels

def _check_channel_equivalence(model, x, sparsity, **kw):
    model = randomize_bn(model).eval()
    plan = pruning.channel_plan(model, sparsity, (x,), **kw)
    assert plan.prunable and any(g.remove for g in plan.groups)
    zeroed = plan.zero_(copy.deepcopy(model))
    small = plan.apply(copy.deepcopy(model))
    n_small = sum(p.numel() for p in small.parameters())
    assert n_small < sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        ref, out = zeroed(x), small(x)
    assert out.shape == ref.shape
    assert rel_error(out, ref) <= 1e-5
    return plan, small


def test_channel_pruning_cifar_resnet_residuals():
    model = pyfastcnn.models.cifar_resnet(8)
    plan, small = _check_channel_equivalence(model, torch.randn(2, 3, 16, 16), 0.5)
    # residual stage: stem, block outputs and downsample share a group
    stem = next(g for g in plan.groups if "conv1" in g.producers)
    assert "layer1.0.conv2" in stem.producers and len(stem.remove) == 8
    assert small.conv1.out_channels == 8 and small.layer1[0].bn2.num_features == 8
    assert small.fc.in_features == 32 and small.fc.out_features == 10  # output pinned


def test_channel_pruning_resnet18_global_round_to():
    model = pyfastcnn.models.resnet18(num_classes=10)
    plan, small = _check_channel_equivalence(model, torch.randn(1, 3, 32, 32), 0.5,
                                             round_to=8)
    for g in plan.prunable:
        assert (g.channels - len(g.remove)) % 8 == 0
    plan_g = pruning.channel_plan(model, 0.3, (torch.randn(1, 3, 32, 32),), scope="global")
    removed = sum(len(g.remove) for g in plan_g.prunable)
    assert removed == round(0.3 * sum(g.channels for g in plan_g.prunable))


def test_channel_pruning_mobilenet_depthwise():
    model = pyfastcnn.models.mobilenet_v2(num_classes=10)
    plan, small = _check_channel_equivalence(model, torch.randn(1, 3, 32, 32), 0.5)
    dw = small.features[4].conv[3]  # depthwise conv of the first expand block
    assert dw.groups == dw.in_channels == dw.out_channels < 96
    assert small.classifier[1].in_features < 1280


def test_channel_pruning_skip_and_errors():
    model = pyfastcnn.models.cifar_resnet(8)
    x = torch.randn(1, 3, 16, 16)
    plan = pruning.channel_plan(model, 0.5, (x,), skip=["layer2.0.conv1"])
    g = next(g for g in plan.groups if "layer2.0.conv1" in g.producers)
    assert g.pinned == "skip" and not g.remove
    with pytest.raises(ValueError, match="skip"):
        pruning.channel_plan(model, 0.5, (x,), skip=["nope"])
    with pytest.raises(ValueError, match="criterion"):
        pruning.prune_channels(model, 0.5, (x,), criterion="taylor")

    class Untraceable(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)

        def forward(self, x):
            return self.conv(x) if x.sum() > 0 else x

    with pytest.raises(pruning.ChannelPruningError, match="leaf_modules"):
        pruning.prune_channels(Untraceable(), 0.5, (x,))


def test_channel_pruning_keeps_masks_in_step():
    model = randomize_bn(pyfastcnn.models.cifar_resnet(8)).eval()
    pruning.prune(model, 0.5)
    x = torch.randn(1, 3, 16, 16)
    pruning.prune_channels(model, 0.25, (x,))
    for name, mask in pruning.masks(model).items():
        assert mask.shape == model.get_parameter(name).shape
    model(x)


# ---------------------------------------------------------------- sensitivity

def test_sensitivity_calls_and_allocation():
    model = small_cnn().eval()
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        ref = model(x)
    state = copy.deepcopy(model.state_dict())
    calls = []

    def metric(m):
        calls.append(1)
        with torch.no_grad():
            return -float((m(x) - ref).square().mean())

    sparsities = (0.5, 0.8, 0.95)
    table = pruning.sensitivity_analysis(model, metric, sparsities, skip=["7"])
    assert len(calls) == 1 + 3 * len(sparsities)
    assert set(table.results) == {"0", "2", "5"} and table.baseline == 0.0
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k  # model restored exactly
    alloc = table.allocate(0.6)
    params = table.params
    got = sum(alloc[n] * params[n] for n in alloc) / sum(params.values())
    assert got >= 0.6 - 1e-9
    pruning.prune(model, 0.0, overrides=alloc, skip=["7"])
    assert "|" in table.to_markdown()
    with pytest.raises(ValueError, match="budget"):
        table.allocate(0.99)


# ---------------------------------------------------------------- convert and report

@pytest.mark.parametrize("structure,fmt", [("unstructured", "csr"), ("block", "block"),
                                           ("unstructured", "auto"), ("block", "auto")])
def test_convert_matches_masked_model(structure, fmt):
    model = randomize_bn(pyfastcnn.models.cifar_resnet(8)).eval()
    pruning.prune(model, 0.9, structure, skip=["fc"])
    x = torch.randn(2, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = model(x)
        converted = pruning.convert(model, format=fmt, min_speedup=0.0, inplace=False)
        out = converted(x)
    layers = pruning.converted_layers(converted)
    assert len(layers) == 9  # every conv
    if fmt != "auto":
        assert {f for _, f in layers} == {fmt}
    elif structure == "block" and _has_block_kernel():  # (scalar: block weights run as csr)
        assert {f for _, f in layers} == {"block"}
    assert rel_error(out, ref) <= 1e-5
    assert pruning.is_pruned(model)  # inplace=False left the original alone


def test_convert_cost_model_and_measure():
    model = small_cnn().eval()
    pruning.prune(model, 0.3, skip=["7"])  # 30% unstructured: csr would be slower
    plan = pruning.conversion_plan(model, threads=1)
    assert all(d.format is None for d in plan)
    # blocks beat csr where the CPU has the block kernel (measured tables per CPU kind)
    block, csr = pruning.estimate_speedup("block", 0.1, 1), pruning.estimate_speedup("csr", 0.1, 1)
    assert block > csr if _has_block_kernel() else block < csr
    assert pruning.estimate_speedup("csr", 0.9, 2) < 1 < pruning.estimate_speedup("csr", 0.02, 1)
    pruning.prune(model, 0.9, "unstructured", skip=["7"])
    x = torch.randn(1, 3, 8, 8)
    plan = pruning.conversion_plan(model, measure=True, example_inputs=(x,), min_speedup=0.0)
    assert all(d.format in ("csr", "block") and "measured" in d.reason for d in plan)
    with pytest.raises(ValueError, match="example_inputs"):
        pruning.conversion_plan(model, measure=True)
    with pytest.raises(ValueError, match="format"):
        pruning.convert(model, format="coo")


def test_sparsity_report():
    model = small_cnn()
    pruning.prune(model, 0.75, "block", skip=["7"])
    rep = pruning.sparsity_report(model, (torch.randn(1, 3, 8, 8),))
    row = {s.name: s for s in rep.layers}
    assert row["2"].params == 40 * 16 * 9
    assert row["2"].nonzeros == int(torch.count_nonzero(model[2].weight))
    assert row["2"].flops_dense == 2 * 64 * 40 * 16 * 9
    assert row["2"].flops_sparse == 2 * 64 * row["2"].nonzeros
    assert row["7"].sparsity == 0.0
    assert rep.bytes_sparse < rep.bytes_dense
    assert rep.params == sum(s.params for s in rep.layers)
    assert "total" in str(rep)
    converted = pruning.convert(copy.deepcopy(model).eval(), min_speedup=0.0)
    rep2 = pruning.sparsity_report(converted)
    assert rep2.nonzeros == rep.nonzeros
    assert rep2.layers[1].format == ("block" if _has_block_kernel() else "csr")


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(sparsity=1.5), ValueError, "sparsity"),
    (dict(sparsity="half"), TypeError, "sparsity"),
    (dict(sparsity=None), ValueError, "sparsity"),
    (dict(sparsity=0.5, structure="diagonal"), ValueError, "structure"),
    (dict(sparsity=0.5, structure=3), TypeError, "structure"),
    (dict(sparsity=0.7, structure="2:4"), ValueError, "sparsity"),
    (dict(sparsity=None, structure="4:2"), ValueError, "n < m"),
    (dict(sparsity=0.5, structure="block", block_shape=(0, 4)), ValueError, "block_shape"),
    (dict(sparsity=0.5, block_shape=(1, 4)), ValueError, "block_shape"),
    (dict(sparsity=0.5, criterion="l3"), ValueError, "criterion"),
    (dict(sparsity=0.5, scope="model"), ValueError, "scope"),
    (dict(sparsity=0.5, skip=["conv99"]), ValueError, "skip"),
    (dict(sparsity=0.5, overrides={"conv99": 0.1}), ValueError, "overrides"),
    (dict(sparsity=0.5, overrides={"0": 2.0}), ValueError, "overrides"),
    (dict(sparsity=0.5, filter_fn="conv"), TypeError, "filter_fn"),
    (dict(sparsity=0.5, structure="channel"), ValueError, "prune_channels"),
])
def test_bad_input(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        pruning.prune(small_cnn(), **kwargs)


def test_bad_input_other_entry_points():
    with pytest.raises(TypeError, match="model"):
        pruning.prune("resnet", 0.5)
    with pytest.raises(ValueError, match="final_sparsity"):
        CubicSchedule(1.2, 0, 10)
    with pytest.raises(ValueError, match="end_step"):
        CubicSchedule(0.5, 10, 5)
    with pytest.raises(ValueError, match="fixed sparsity"):
        GradualPruner(small_cnn(), CubicSchedule(0.5, 0, 10), structure="2:4")
    with pytest.raises(TypeError, match="metric"):
        pruning.sensitivity_analysis(small_cnn(), "accuracy")
    with pytest.raises(TypeError, match="example_inputs"):
        pruning.prune_channels(small_cnn(), 0.5, None)
    with pytest.raises(ValueError, match="mask"):
        pruning.apply_mask(nn.Linear(3, 4), torch.ones(3, 4, dtype=torch.bool))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pruning.prune(small_cnn(), 0.5)  # no warning when every layer fits
