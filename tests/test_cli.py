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


def _write_images(folder, count, size=(40, 30)):
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for i in range(count):
        sub = folder / f"class{i % 2}"  # an ImageFolder tree
        sub.mkdir(parents=True, exist_ok=True)
        pixels = torch.randint(0, 256, (size[1], size[0], 3), dtype=torch.uint8, generator=g)
        Image.fromarray(pixels.numpy()).save(sub / f"img{i}.png")


def test_load_image_folder(tmp_path):
    pytest.importorskip("PIL")
    from pyfastcnn.data import load_image_folder

    _write_images(tmp_path, 5)
    (tmp_path / "notes.txt").write_text("not an image, ignored")
    batches = load_image_folder(tmp_path, (3, 16, 16), limit=4, batch=3)
    assert [tuple(b.shape) for b in batches] == [(3, 3, 16, 16), (1, 3, 16, 16)]
    raw = load_image_folder(tmp_path, (3, 16, 16), mean=(0, 0, 0), std=(1, 1, 1))
    assert raw[0].min() >= 0 and raw[0].max() <= 1 and len(raw[0]) == 5
    # default normalization is ImageNet's: (x - mean) / std of the same pixels
    norm = load_image_folder(tmp_path, (3, 16, 16))[0]
    mean = torch.tensor((0.485, 0.456, 0.406)).view(3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225)).view(3, 1, 1)
    torch.testing.assert_close(norm, (raw[0] - mean) / std)
    gray = load_image_folder(tmp_path, (1, 8, 12))[0]
    assert gray.shape == (5, 1, 8, 12)
    with pytest.raises(ValueError, match="no images"):
        load_image_folder(tmp_path / "class0", (3, 8, 8), limit=0)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        load_image_folder(tmp_path, (4, 8, 8))
    with pytest.raises(ValueError, match="mean and std"):
        load_image_folder(tmp_path, (3, 8, 8), mean=(0.5,), std=(1,))
    (tmp_path / "broken.png").write_text("not a png")
    with pytest.raises(ValueError, match="cannot read image"):
        load_image_folder(tmp_path, (3, 8, 8))


def test_compress_with_image_folder(tmp_path):
    pytest.importorskip("PIL")
    _write_images(tmp_path / "images", 6)
    out = tmp_path / "q.pt"
    r = cli("compress", "--model", "cifar_resnet20", "--quantize", "int8", "--calib-data",
            str(tmp_path / "images"), "--calib-samples", "4", "--out", str(out))
    assert r.returncode == 0, r.stderr
    model = torch.load(out, weights_only=False)
    assert any(type(m).__name__ == "QuantConv2d" for m in model.modules())
    (tmp_path / "empty").mkdir()
    r = cli("compress", "--model", "cifar_resnet20", "--quantize", "int8", "--calib-data",
            str(tmp_path / "empty"), "--out", str(out))
    assert r.returncode == 2 and "no images" in r.stderr and "Traceback" not in r.stderr
    torch.save(torch.randn(4, 3, 8, 8), tmp_path / "wrong.pt")
    r = cli("compress", "--model", "cifar_resnet20", "--quantize", "int8", "--calib-data",
            str(tmp_path / "wrong.pt"), "--out", str(out))
    assert r.returncode == 2 and "--input-size" in r.stderr
    r = cli("compress", "--model", "cifar_resnet20", "--quantize", "int8", "--calib-data",
            str(tmp_path / "images"), "--calib-samples", "0", "--out", str(out))
    assert r.returncode == 2 and "--calib-samples" in r.stderr


def test_demo_training_dtype():
    from pyfastcnn import demo

    native = any(isa in pyfastcnn.supported_isas() for isa in ("avx512_bf16", "avx512_amx"))
    assert demo.training_dtype(demo.DemoSettings()) == torch.float32  # same on every CPU
    auto = demo.training_dtype(demo.DemoSettings(train_dtype="auto"))
    assert auto == (torch.bfloat16 if native else torch.float32)
    assert demo.training_dtype(demo.DemoSettings(train_dtype="float32")) == torch.float32
    assert demo.training_dtype(demo.DemoSettings(train_dtype="bfloat16")) == torch.bfloat16
    with pytest.raises(ValueError, match="train_dtype"):
        demo.training_dtype(demo.DemoSettings(train_dtype="fp16"))
