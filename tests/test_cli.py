"""The command line, run as a user runs it (subprocess), and the built-in dataset."""
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

import pyfastcnn
from pyfastcnn.data import CLASSES, shapes_dataset

# The subprocess imports the same pyfastcnn as this test (installed, or the built source tree).
PACKAGE_PARENT = Path(pyfastcnn.__file__).resolve().parents[1]


def cli(*args, cwd=None):
    # Not from the source tree: `python -m` puts the working directory first on sys.path,
    # where an unbuilt source checkout would shadow the installed package.
    cwd = cwd or tempfile.gettempdir()
    env = dict(os.environ, PYTHONPATH=str(PACKAGE_PARENT) + os.pathsep
               + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "pyfastcnn", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=300)


def test_compress_report_and_bench(tmp_path):
    out = tmp_path / "model.pt"
    r = cli("compress", "--model", "cifar_resnet20", "--sparsity", "0.9", "--structure",
            "block", "--out", str(out))
    assert r.returncode == 0, r.stderr
    model = torch.load(out, weights_only=False)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    r = cli("report", "--model", str(out), "--input-size", "3,32,32", "--runs", "1")
    assert r.returncode == 0 and "SparseConv2d" in r.stdout and "total" in r.stdout
    calib = tmp_path / "calib.pt"
    torch.save(torch.randn(16, 3, 32, 32), calib)
    r = cli("compress", "--model", "cifar_resnet20", "--quantize", "int8", "--calib-data",
            str(calib), "--out", str(tmp_path / "q.pt"))
    assert r.returncode == 0, r.stderr
    r = cli("bench", "--model", "cifar_resnet20", "--quantize", "int8", "--calib-random",
            "--batch", "1", "--threads", "1", "--runs", "2")
    assert r.returncode == 0, r.stderr
    assert "speed-up" in r.stdout and "torch fp32" in r.stdout


@pytest.mark.parametrize("args,message", [
    (("compress", "--model", "nosuch", "--out", "x.pt"), "neither a file"),
    (("compress", "--model", "cifar_resnet20", "--quantize", "int8", "--out", "x.pt"),
     "calib"),
    (("compress", "--model", "cifar_resnet20", "--quantize", "int8", "--calib-data",
      "missing.pt", "--out", "x.pt"), "no such file"),
    (("report", "--model", "garbage.pt", "--input-size", "3,32,32"), "cannot load"),
    (("report", "--model", "tensor.pt", "--input-size", "3,32,32"), "not a saved"),
    (("report", "--model", "cifar_resnet20", "--input-size", "3,32"), "C,H,W"),
    (("bench", "--model", "cifar_resnet20", "--batch", "0"), "positive integers"),
    (("compress", "--model", "cifar_resnet20", "--sparsity", "1.5", "--out", "x.pt"),
     "sparsity"),
])
def test_bad_arguments_give_one_clear_line(tmp_path, args, message):
    (tmp_path / "garbage.pt").write_text("not a model")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    r = cli(*args, cwd=tmp_path)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr


def test_demo_quick(tmp_path):
    r = cli("demo", "--quick", "--no-progress", "--out", str(tmp_path / "demo"))
    assert r.returncode == 0, r.stderr
    md = (tmp_path / "demo" / "demo.md").read_text()
    for name in ("PyTorch FP32", "fused FP32", "INT8 (PTQ)", "+ INT8", "BF16"):
        assert name in md
    model = torch.load(tmp_path / "demo" / "model-pruned-int8.pt", weights_only=False)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_shapes_dataset():
    x, y = shapes_dataset(200, seed=3)
    assert x.shape == (200, 3, 32, 32) and x.dtype == torch.float32
    assert torch.bincount(y, minlength=len(CLASSES)).tolist() == [20] * 10
    x2, y2 = shapes_dataset(200, seed=3)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(x, shapes_dataset(200, seed=4)[0])
    assert abs(float(x.mean())) < 0.5 and 0.5 < float(x.std()) < 2
    with pytest.raises(ValueError, match="n must be"):
        shapes_dataset(0)
