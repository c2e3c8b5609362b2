"""Whole models against ONNX Runtime (random weights, 224×224, eval, no_grad), same thread
count (ORT ``intra_op_num_threads``), same run:

* torch fp32: PyTorch eager, channels_last (the baseline);
* pyfastcnn int8: ``pyfastcnn.compress(model, quantize="int8", calibration_data=...)``;
* onnxruntime fp32: the BN-folded model exported by ``pyfastcnn.export.export_onnx``;
* onnxruntime int8: that ONNX model quantized by ONNX Runtime's own ``quant_pre_process`` +
  ``quantize_static`` (QDQ, per-channel int8 weights, uint8 activations, MinMax calibration on
  the same batches as pyfastcnn's);
* onnxruntime int8 (pyfastcnn export): pyfastcnn's INT8 model exported in QDQ form, run by ORT.

The model construction (seeds, randomized BN statistics) is bench_models.py's, so the numbers
compare across the two files. Skipped when onnx/onnxruntime are not installed.

    pytest benchmarks/bench_onnxruntime.py --benchmark-json=benchmarks/results/cpu-ort.json
    python benchmarks/report.py benchmarks/results/cpu-ort.json -o benchmarks/results/cpu-ort.md
"""

import copy
import functools
import os
import tempfile

import numpy as np
import pytest
import torch
from conftest import QUICK, run

import pyfastcnn
from pyfastcnn.fusion import fuse
from pyfastcnn.quantization import sqnr

onnx = pytest.importorskip("onnx", reason="needs onnx: pip install onnx")
ort = pytest.importorskip("onnxruntime", reason="needs onnxruntime: pip install onnxruntime")

# the same models, weights and calibration batches as bench_models.py
from bench_models import _float_model, _flops  # noqa: E402
from onnxruntime import quantization as ortq  # noqa: E402

from pyfastcnn.export import export_onnx  # noqa: E402

MODELS = ("resnet18", "resnet50")
IMPLS = ("torch fp32", "pyfastcnn int8", "onnxruntime fp32", "onnxruntime int8",
         "onnxruntime int8 (pyfastcnn export)")
BASELINE = "torch fp32"
_WORKDIR = tempfile.mkdtemp(prefix="pyfastcnn-bench-ort-")


@functools.lru_cache(maxsize=None)
def _onnx_path(name, impl) -> str:
    """The FP32 ONNX file (pyfastcnn's export of the BN-folded model), or its INT8 QDQ form
    made by ONNX Runtime's static quantizer."""
    model, calib = _float_model(name)
    fp32 = os.path.join(_WORKDIR, f"{name}-fp32.onnx")
    if not os.path.exists(fp32):
        export_onnx(fuse(model), calib[0][:1], fp32)
    if impl == "onnxruntime fp32":
        return fp32
    if impl == "onnxruntime int8 (pyfastcnn export)":  # our INT8 model, QDQ, run by ORT
        path = os.path.join(_WORKDIR, f"{name}-pyfastcnn-int8.onnx")
        export_onnx(_torch_model(name, "pyfastcnn int8"), calib[0][:1], path)
        return path

    class Reader(ortq.CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"input": x.numpy()} for x in calib])

        def get_next(self):
            return next(self.batches, None)

    prepared = os.path.join(_WORKDIR, f"{name}-fp32-pre.onnx")
    ortq.quant_pre_process(fp32, prepared)  # ORT's recommended step (shape inference)
    int8 = os.path.join(_WORKDIR, f"{name}-int8.onnx")
    ortq.quantize_static(prepared, int8, Reader(), quant_format=ortq.QuantFormat.QDQ,
                         per_channel=True, activation_type=ortq.QuantType.QUInt8,
                         weight_type=ortq.QuantType.QInt8,
                         calibrate_method=ortq.CalibrationMethod.MinMax)
    return int8


@functools.lru_cache(maxsize=None)
def _session(name, impl, threads):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(_onnx_path(name, impl), options,
                                providers=["CPUExecutionProvider"])


@functools.lru_cache(maxsize=None)
def _torch_model(name, impl):
    model, calib = _float_model(name)
    if impl == "torch fp32":
        return copy.deepcopy(model).to(memory_format=torch.channels_last)
    return pyfastcnn.compress(model, quantize="int8", calibration_data=calib)


def run_model(benchmark, threads, name, batch, impl, runtime_fn, fp32_impl):
    """Checks and times one whole-model implementation: ``runtime_fn(x_nchw_numpy)`` makes the
    call of an external runtime (None: ``impl`` is a torch/pyfastcnn model of
    ``_torch_model``); ``fp32_impl`` is held to FP32 accuracy, the others to INT8's."""
    float_model, _ = _float_model(name)
    x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(2)).contiguous(
        memory_format=torch.channels_last)
    with torch.no_grad():
        ref = float_model(x)
    if runtime_fn is not None:
        fn = runtime_fn(np.ascontiguousarray(x.numpy()))  # runtimes take NCHW
        out = torch.from_numpy(np.asarray(fn()))
    else:
        net = _torch_model(name, impl)

        def fn():
            with torch.no_grad():
                return net(x)

        out = fn()
    min_db = 90 if impl == fp32_impl else 15
    assert sqnr(ref, out) > min_db, f"{impl} output too far from the float model"
    run(benchmark, fn, group=f"model {name} b{batch} t{threads}", impl=impl,
        ops=_flops(float_model, x), threads=threads, baseline=BASELINE)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("batch", (1,) if QUICK else (1, 8), ids=lambda b: f"b{b}")
@pytest.mark.parametrize("name", ("resnet18",) if QUICK else tuple(MODELS))
def test_model_ort(benchmark, threads, name, batch, impl):
    runtime_fn = None
    if impl.startswith("onnxruntime"):
        session = _session(name, impl, threads)

        def runtime_fn(x):
            return lambda: session.run(None, {"input": x})[0]

    run_model(benchmark, threads, name, batch, impl, runtime_fn, "onnxruntime fp32")
