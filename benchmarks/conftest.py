"""Benchmark settings. PYFASTCNN_BENCH_QUICK=1 trims shapes and rounds (for CI-sized runs)."""

import os
import time

import pytest
import torch

import pyfastcnn

QUICK = os.environ.get("PYFASTCNN_BENCH_QUICK") == "1"


@pytest.fixture(params=(1, 2), ids=lambda t: f"threads={t}")
def threads(request):
    """The same thread count for PyTorch (the baseline) and pyfastcnn."""
    torch_threads, ours = torch.get_num_threads(), pyfastcnn.get_num_threads()
    torch.set_num_threads(request.param)
    pyfastcnn.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(torch_threads)
    pyfastcnn.set_num_threads(ours)


def run(benchmark, fn, *, group: str, impl: str, ops: int, **extra):
    """Times fn under `group`; extra_info carries what report.py needs."""
    benchmark.group = group
    benchmark.extra_info.update(impl=impl, ops=ops, **extra)
    rounds = 3
    if not QUICK:  # ~0.5 s of rounds (10 to 200): medians of 10 short calls were noisy here
        fn()
        start = time.perf_counter()
        fn()
        once = time.perf_counter() - start
        rounds = max(10, min(200, int(0.5 / max(once, 1e-6))))
    return benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)


def pytest_collection_modifyitems(items):
    """All 1-thread benchmarks first, then 2-thread ones: switching thread counts between
    every benchmark (both pools re-created) disturbed the 2-thread timings here."""
    items.sort(
        key=lambda item: (
            getattr(item, "callspec", None) and item.callspec.params.get("threads", 0) or 0
        )
    )
