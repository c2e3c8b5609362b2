"""Whole models against OpenVINO (random weights, 224×224, eval), same thread count
(``INFERENCE_NUM_THREADS``, one stream, latency hint), same run, same models and calibration
batches as bench_models.py / bench_onnxruntime.py:

* openvino fp32: the BN-folded FP32 ONNX model (pyfastcnn's export), FP32 inference precision;
* openvino int8: the INT8 QDQ model made by ONNX Runtime's static quantizer
  (bench_onnxruntime.py), which OpenVINO runs on its INT8 kernels;
* torch fp32 (the baseline) and pyfastcnn int8 as in bench_onnxruntime.py.

Skipped when openvino (or onnx/onnxruntime, used to make the INT8 model) is not installed.

    pytest benchmarks/bench_openvino.py --benchmark-json=benchmarks/results/cpu-ov.json
"""

import functools

import pytest
from conftest import QUICK

ov = pytest.importorskip("openvino", reason="needs openvino: pip install openvino")
# the same models, ONNX files and calibration as bench_onnxruntime.py (skips without ORT)
from bench_onnxruntime import MODELS, _onnx_path, run_model  # noqa: E402

IMPLS = ("torch fp32", "pyfastcnn int8", "openvino fp32", "openvino int8")
BASELINE = "torch fp32"
_ONNX = {"openvino fp32": "onnxruntime fp32", "openvino int8": "onnxruntime int8"}


@functools.lru_cache(maxsize=None)
def _compiled(name, impl, threads):
    config = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1,
              "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    return ov.Core().compile_model(_onnx_path(name, _ONNX[impl]), "CPU", config)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("batch", (1,) if QUICK else (1, 8), ids=lambda b: f"b{b}")
@pytest.mark.parametrize("name", ("resnet18",) if QUICK else tuple(MODELS))
def test_model_openvino(benchmark, threads, name, batch, impl):
    runtime_fn = None
    if impl.startswith("openvino"):
        request = _compiled(name, impl, threads).create_infer_request()

        def runtime_fn(x):
            return lambda: request.infer({0: x})[0]

    run_model(benchmark, threads, name, batch, impl, runtime_fn, "openvino fp32")
