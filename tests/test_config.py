"""ISA selection, threads, show_config, and the native layer's robustness (fork, threads)."""

import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading

import pytest
import torch

import pyfastcnn
from pyfastcnn.ops import reference

# Subprocesses import the same pyfastcnn as this process (installed or built in place), and
# run outside the source tree so that its unbuilt copy cannot shadow it.
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(pyfastcnn.__file__)))


def run_python(*args: str, **env) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PYFASTCNN_")}
    full_env["PYTHONPATH"] = PACKAGE_PARENT
    full_env.update(env)
    return subprocess.run(
        [sys.executable, *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tempfile.gettempdir(),
    )


def run_code(code: str, **env) -> subprocess.CompletedProcess:
    return run_python("-c", code, **env)


def test_supported_isas_are_ordered_and_selected_is_best():
    isas = pyfastcnn.supported_isas()
    assert isas[0] == "scalar"
    order = ("scalar", "avx2", "avx512", "avx512_vnni", "avx512_bf16", "avx512_amx")
    assert list(isas) == [i for i in order if i in isas]
    assert pyfastcnn.config()["detected_isa"] == isas[-1]


def test_set_isa_changes_the_kernel_level(isa):
    assert pyfastcnn.get_isa() == isa
    kernels = pyfastcnn.config()["kernels"]
    order = pyfastcnn.supported_isas()
    # Each op runs the best kernel it has at or below the selected level.
    assert all(order.index(level) <= order.index(isa) for level in kernels.values())
    # INT8 GEMM has kernels at these levels (AVX-512 without VNNI runs the AVX2 one).
    every = list(pyfastcnn._native._ISA_NAMES)  # all levels, not only this CPU's
    int8_levels = ("scalar", "avx2", "avx512_vnni", "avx512_amx")
    best_int8 = max((lv for lv in int8_levels if every.index(lv) <= every.index(isa)),
                    key=every.index)
    assert kernels["int8_gemm"] == best_int8


def test_set_isa_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown ISA 'sse9'"):
        pyfastcnn.set_isa("sse9")
    with pytest.raises(TypeError):
        pyfastcnn.set_isa(2)


@pytest.mark.parametrize("level", ["scalar", "avx2"])
def test_env_forces_lower_isa(level):
    if level not in pyfastcnn.supported_isas():
        pytest.skip(f"this CPU lacks {level}")
    result = run_code("import pyfastcnn; print(pyfastcnn.get_isa())", PYFASTCNN_ISA=level)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == level


def test_env_refuses_isa_above_the_cpu():
    # PYFASTCNN_SIMULATE_CPU makes any machine look like an AVX2-only CPU.
    code = "import pyfastcnn; print(pyfastcnn.supported_isas())"
    result = run_code(code, PYFASTCNN_SIMULATE_CPU="avx2", PYFASTCNN_ISA="avx512_vnni")
    assert result.returncode != 0
    assert "PYFASTCNN_ISA='avx512_vnni'" in result.stderr
    assert "not supported by this CPU" in result.stderr


def test_simulated_cpu_runs_and_refuses_in_process():
    code = (
        "import pyfastcnn, torch\n"
        "print(pyfastcnn.supported_isas(), pyfastcnn.get_isa())\n"
        "a = torch.randint(-128, 128, (5, 9), dtype=torch.int8)\n"
        "assert torch.equal(pyfastcnn.int8_gemm(a, a.t()), a.long().matmul(a.t().long()).int())\n"
        "try:\n    pyfastcnn.set_isa('avx512')\nexcept ValueError as e:\n    print('refused:', e)\n"
    )
    result = run_code(code, PYFASTCNN_SIMULATE_CPU="avx2")
    assert result.returncode == 0, result.stderr
    assert "['scalar', 'avx2'] avx2" in result.stdout
    assert "refused: ISA 'avx512' is not supported by this CPU" in result.stdout


@pytest.mark.parametrize(
    "var,value",
    [
        ("PYFASTCNN_ISA", "fast"),
        ("PYFASTCNN_NUM_THREADS", "zero"),
        ("PYFASTCNN_SIMULATE_CPU", "486"),
    ],
)
def test_bad_environment_values_fail_clearly(var, value):
    result = run_code("import pyfastcnn", **{var: value})
    assert result.returncode != 0 and f"{var}={value!r}" in result.stderr


def test_env_sets_threads():
    result = run_code(
        "import pyfastcnn; print(pyfastcnn.get_num_threads())", PYFASTCNN_NUM_THREADS="3"
    )
    assert result.stdout.strip() == "3", result.stderr


def test_set_num_threads_validates():
    with pytest.raises(ValueError, match="n must be >= 1"):
        pyfastcnn.set_num_threads(0)
    with pytest.raises(TypeError, match="n must be an int"):
        pyfastcnn.set_num_threads(2.0)
    previous = pyfastcnn.get_num_threads()
    pyfastcnn.set_num_threads(1)
    assert pyfastcnn.get_num_threads() == 1
    pyfastcnn.set_num_threads(previous)


def test_cli_config():
    result = run_python("-m", "pyfastcnn", "config", "--isa", "scalar")
    assert result.returncode == 0, result.stderr
    assert "selected scalar" in result.stdout


def test_cli_bad_argument_is_one_clear_line():
    result = run_python("-m", "pyfastcnn", "config", "--isa", "avx3")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "pyfastcnn config: error: unknown ISA 'avx3' (choose from scalar, avx2, avx512, "
        "avx512_vnni, avx512_bf16, avx512_amx)"
    ]


def test_show_config(capsys):
    pyfastcnn.show_config()
    text = capsys.readouterr().out
    assert f"pyfastcnn {pyfastcnn.__version__}" in text
    assert f"selected {pyfastcnn.get_isa()}" in text
    assert "threads:" in text and "compiler:" in text and "CUDA:" in text


def _gemm_in_child(queue):
    a = torch.randint(-128, 128, (64, 200), dtype=torch.int8)
    b = torch.randint(-128, 128, (200, 64), dtype=torch.int8)
    queue.put(bool(torch.equal(pyfastcnn.int8_gemm(a, b), reference.int8_gemm(a, b))))


def test_works_after_fork():
    """A forked child (e.g. a DataLoader worker) has none of the parent's pool threads."""
    previous = pyfastcnn.get_num_threads()
    pyfastcnn.set_num_threads(2)
    try:
        _gemm_in_child(multiprocessing.Queue())  # make sure the parent's pool exists
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        child = ctx.Process(target=_gemm_in_child, args=(queue,))
        child.start()
        child.join(timeout=60)
        assert child.exitcode == 0, "child hung or crashed"
        assert queue.get(timeout=5)
    finally:
        pyfastcnn.set_num_threads(previous)


def test_concurrent_callers_get_correct_results():
    """Two Python threads in the kernels at once: one uses the pool, the other runs inline."""
    a = torch.randint(-128, 128, (96, 300), dtype=torch.int8)
    b = torch.randint(-128, 128, (300, 80), dtype=torch.int8)
    expected = reference.int8_gemm(a, b)
    failures = []

    def worker():
        for _ in range(20):
            if not torch.equal(pyfastcnn.int8_gemm(a, b), expected):
                failures.append(1)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads) and not failures
