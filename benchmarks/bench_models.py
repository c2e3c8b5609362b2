"""Whole models (random weights, 224×224, channels_last, eval, no_grad): PyTorch FP32 eager (the
baseline) against pyfastcnn's fused FP32 and BF16 models (``fusion.fuse``), its INT8 model (PTQ
``prepare → calibrate → convert``) and PyTorch's own x86 INT8 path (FX graph mode, oneDNN),
same thread count, same run; plus pruned models (90% of the conv weights in blocks: FP32 sparse
kernels, and pruned + INT8 on the sparse INT8 kernel; 90% unstructured + INT8). Each compressed model is checked
against the float model it was made from once.

    pytest benchmarks/bench_models.py --benchmark-json=benchmarks/results/cpu-models.json
"""

import copy
import functools
import warnings

import pytest
import torch
from conftest import QUICK, run

from pyfastcnn import compress, models, pruning
from pyfastcnn.fusion import fuse
from pyfastcnn.quantization import calibrate, convert, prepare, sqnr

MODELS = {"resnet18": models.resnet18, "resnet50": models.resnet50,
          "mobilenet_v2": models.mobilenet_v2}
IMPLS = ("torch fp32", "pyfastcnn fused fp32", "pyfastcnn fused bf16", "pyfastcnn int8",
         "torch int8 x86", "pyfastcnn 90% blocks fp32", "pyfastcnn 90% blocks int8",
         "pyfastcnn 90% unstructured int8")
# Pruned variants: 90% of each conv's weights except the stem's (random weights: the speed
# of a pruned model, not its accuracy). FP32 in blocks of 32 output channels (the "block"
# sparse kernel's unit), INT8 in blocks of 4 input channels (the sparse INT8 kernel's unit) or
# unstructured (the sparse INT8 kernel's group layout where the CPU has VNNI).
PRUNED = {"pyfastcnn 90% blocks fp32": (32, 1), "pyfastcnn 90% blocks int8": (1, 4),
          "pyfastcnn 90% unstructured int8": None}
BASELINE = "torch fp32"


def _flops(model, x) -> int:
    """2 × multiply-adds of the convs and linears."""
    total = 0

    def hook(m, args, out):
        nonlocal total
        if isinstance(m, torch.nn.Conv2d):
            total += 2 * out.numel() * m.in_channels // m.groups * m.kernel_size[0] * \
                m.kernel_size[1]
        elif isinstance(m, torch.nn.Linear):
            total += 2 * out.numel() * m.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return total


@functools.lru_cache(maxsize=None)
def _float_model(name):
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    g = torch.Generator().manual_seed(1)
    for m in model.modules():  # BN statistics as a trained model would have them
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    calib = [torch.randn(2, 3, 224, 224, generator=g) for _ in range(2)]
    return model, calib


def _pruned(model, block_shape):
    pruned = copy.deepcopy(model)
    stem = next(n for n, m in pruned.named_modules() if isinstance(m, torch.nn.Conv2d))
    structure = dict(structure="block", block_shape=block_shape) if block_shape else {}
    pruning.prune(pruned, 0.9, **structure, skip=[stem],
                  filter_fn=lambda m, n: isinstance(m, torch.nn.Conv2d) and m.groups == 1)
    pruning.remove(pruned)
    return pruned


@functools.lru_cache(maxsize=None)
def _build(name, impl):
    model, calib = _float_model(name)
    if impl in PRUNED:
        pruned = _pruned(model, PRUNED[impl])
        if impl.endswith("int8"):
            return compress(pruned, quantize="int8", calibration_data=calib), pruned
        return compress(pruned), pruned
    if impl == "torch fp32":
        return copy.deepcopy(model).to(memory_format=torch.channels_last), model
    if impl == "pyfastcnn fused fp32":
        return fuse(model), model
    if impl == "pyfastcnn fused bf16":
        return fuse(model, dtype=torch.bfloat16), model
    if impl == "pyfastcnn int8":
        prepared = prepare(model)
        calibrate(prepared, calib)
        return convert(prepared), model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        torch.backends.quantized.engine = "x86"
        prepared = prepare_fx(copy.deepcopy(model), get_default_qconfig_mapping("x86"),
                              (calib[0],))
        with torch.no_grad():
            for x in calib:
                prepared(x)
        return convert_fx(prepared), model


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("batch", (1,) if QUICK else (1, 8), ids=lambda b: f"b{b}")
@pytest.mark.parametrize("name", ("resnet18",) if QUICK else tuple(MODELS))
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_model(benchmark, threads, name, batch, impl):
    if QUICK and impl == "pyfastcnn fused bf16":
        pytest.skip("quick mode")
    try:
        net, float_model = _build(name, impl)
    except Exception as err:  # PyTorch's deprecated INT8 path may be gone in a later torch
        if impl != "torch int8 x86":
            raise
        pytest.skip(f"{impl} cannot be built here: {err}")
    x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(2)).contiguous(
        memory_format=torch.channels_last)
    with torch.no_grad():
        out = net(x)
        ref = float_model(x)
    # against the float model it was made from (the pruned one for pruned variants)
    min_db = {"pyfastcnn fused fp32": 90, "pyfastcnn 90% blocks fp32": 90,
              "pyfastcnn fused bf16": 25}.get(impl, 15)
    assert sqnr(ref, out) > min_db, f"{impl} output too far from the float model"

    def fn():
        with torch.no_grad():
            return net(x)

    run(benchmark, fn, group=f"model {name} b{batch} t{threads}", impl=impl,
        ops=_flops(_float_model(name)[0], x), threads=threads, baseline=BASELINE)
