"""GPU benchmark settings: every benchmark here needs a CUDA device and pyfastcnn._cuda.

Timing: a round launches the op `calls` times back to back on the current stream and then
synchronizes, so launch latency overlaps with the previous kernel as in a real network and
one host-side synchronization is spread over many calls; report.py divides by `calls`.
Inputs are fresh random data (never zeros), drawn once per benchmark.
"""

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pyfastcnn import _native  # noqa: E402

QUICK = os.environ.get("PYFASTCNN_BENCH_QUICK") == "1"
HAVE_GPU = _native.cuda is not None and torch.cuda.is_available() and bool(_native.cuda.devices())


def pytest_collection_modifyitems(config, items):
    if HAVE_GPU:
        return
    skip = pytest.mark.skip(reason="GPU benchmarks need a CUDA device and pyfastcnn._cuda")
    for item in items:
        item.add_marker(skip)


@pytest.fixture(autouse=True)
def _gpu_defaults():
    """cuDNN picks its fastest algorithm (the baseline users get with benchmark mode on);
    TF32 is off unless a benchmark turns it on for its own 'tf32' baseline."""
    if not HAVE_GPU:
        yield
        return
    saved = (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
             torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    yield
    (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
     torch.backends.cuda.matmul.allow_tf32) = saved


def _calls_for(fn, target_s: float = 2e-3) -> int:
    """Launches per round so a round takes about `target_s` (at least 1, at most 1000)."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(5):
        fn()
    end.record()
    end.synchronize()
    per_call = max(start.elapsed_time(end) / 5e3, 1e-7)
    return int(min(1000, max(1, target_s / per_call)))


def gpu_run(benchmark, fn, *, group: str, impl: str, ops: int, baseline: str, kind: str,
            **extra):
    """Times fn under `group` (one shape); `kind` names the card peak it is measured against
    (int8, fp16, bf16, tf32, fp32: see report.py); extra_info carries what report.py needs."""
    calls = _calls_for(fn)

    def one_round():
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()

    benchmark.group = group
    benchmark.extra_info.update(impl=impl, ops=ops, baseline=baseline, kind=kind,
                                calls_per_round=calls, device=torch.cuda.get_device_name(),
                                **extra)
    rounds = 5 if QUICK else 15
    return benchmark.pedantic(one_round, rounds=rounds, iterations=1, warmup_rounds=1)
