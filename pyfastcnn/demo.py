"""``pyfastcnn demo``: train a small CNN on the built-in shapes dataset, compress it five ways and
compare accuracy, size on disk and latency against the PyTorch FP32 model.

Everything is generated here (no download) and deterministic up to thread scheduling.
"""
from __future__ import annotations

import copy
import io
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

import torch
import torch.nn.functional as F

from . import fusion, models, pruning
from ._config import supported_isas
from .compress import compress
from .data import shapes_dataset


@dataclass
class DemoSettings:
    train_size: int = 12000
    test_size: int = 2000
    # Batches of 64 learn this dataset in fewer epochs than 128 (Zen 3, FP32 training, 5 + 2
    # epochs: FP32 95.5%, pruned + INT8 96.6%, 4 min 44 s in all; 128 needed 13 + 5 epochs
    # (11 min 43 s) for 95.9%, and reached 83.0% in 6 + 2).
    epochs: int = 5
    finetune_epochs: int = 2
    batch_size: int = 64
    depth: int = 8
    width: int = 32
    sparsity: float = 0.8
    # blocks of 4 input channels: the sparse INT8 kernel's unit. 80% in every layer ("layer"
    # scope): the stages cost the same FLOPs, and one global threshold pruned mostly the wide
    # late layers, leaving the first stage 77% dense on dense kernels (Zen 1, this schedule:
    # layer scope 96.6% accuracy, 10.1x smaller, 2.26x faster at batch 8; global 96.5%, 11.5x,
    # 1.29x). Width 32: a model with enough redundancy to prune 80% without losing accuracy,
    # and enough work per layer for the kernels to show.
    structure: str = "block"
    block_shape: tuple = (1, 4)
    scope: str = "layer"
    finetune_lr: float = 0.1
    latency_runs: int = 50
    seed: int = 0
    # Training arithmetic: "float32" (the default: the same arithmetic on every CPU; 4 min 44 s
    # in all on a Zen 3, 7 min 52 s on a Zen 1 with its 128-bit units), "bfloat16" (autocast: about
    # 2x faster training where the CPU multiplies BF16 natively, AVX512-BF16 or AMX; not
    # measured with this short schedule), or "auto" (BF16 where native, else FP32). Weights
    # and the models compared stay FP32.
    train_dtype: str = "float32"

    @classmethod
    def quick(cls) -> "DemoSettings":
        """A seconds-long run (tests, smoke checks): same steps, tiny sizes."""
        return cls(train_size=1000, test_size=300, epochs=2, finetune_epochs=1,
                   latency_runs=3)


class Progress:
    """A one-line text progress bar on stderr (no dependency)."""

    def __init__(self, total: int, enabled: bool = True, width: int = 30):
        self.total, self.done, self.enabled, self.width = max(total, 1), 0, enabled, width
        self.start = time.perf_counter()
        self.label = ""

    def advance(self, n: int = 1, label: Optional[str] = None) -> None:
        self.done = min(self.total, self.done + n)
        if label is not None:
            self.label = label
        if self.enabled:
            filled = int(self.width * self.done / self.total)
            elapsed = time.perf_counter() - self.start
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (self.width - filled)}] "
                             f"{100 * self.done / self.total:3.0f}% {elapsed:5.0f}s "
                             f"{self.label:<40}")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def _batches(x, y, batch_size, generator=None):
    """In order (evaluation), or shuffled without the last partial batch (training)."""
    if generator is None:
        order, end = torch.arange(len(x)), len(x)
    else:
        order, end = torch.randperm(len(x), generator=generator), len(x) - batch_size + 1
    for i in range(0, end, batch_size):
        idx = order[i:i + batch_size]
        yield x[idx].contiguous(memory_format=torch.channels_last), y[idx]


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
             batch_size: int = 250) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for xb, yb in _batches(x, y, batch_size):
            correct += int((model(xb).argmax(dim=1) == yb).sum())
    return correct / len(x)


def training_dtype(settings: "DemoSettings") -> torch.dtype:
    """The autocast dtype the demo trains with (see DemoSettings.train_dtype)."""
    if settings.train_dtype == "auto":
        native = any(isa in supported_isas() for isa in ("avx512_bf16", "avx512_amx"))
        return torch.bfloat16 if native else torch.float32
    if settings.train_dtype not in ("float32", "bfloat16"):
        raise ValueError(f"train_dtype must be 'auto', 'float32' or 'bfloat16', got "
                         f"{settings.train_dtype!r}")
    return getattr(torch, settings.train_dtype)


def _train(model, x, y, epochs, lr, settings, progress, label, on_step=None, optimizer=None):
    g = torch.Generator().manual_seed(settings.seed + 1)
    dtype = training_dtype(settings)
    steps = epochs * (len(x) // settings.batch_size)
    opt = optimizer or torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9,
                                       weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=max(steps, 1))
    model.train()
    for epoch in range(epochs):
        for xb, yb in _batches(x, y, settings.batch_size, g):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
                loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if on_step is not None:
                on_step()
        progress.advance(1, f"{label} epoch {epoch + 1}/{epochs}")
    return opt


def latencies_ms(models: List[torch.nn.Module], batch: int, runs: int) -> List[float]:
    """Median latency of each model; the models take turns call by call, so that a slow
    moment of a shared machine hits all of them alike instead of skewing one ratio."""
    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    times: List[List[float]] = [[] for _ in models]
    with torch.no_grad():
        for model in models:
            model.eval()
            for _ in range(3):
                model(x)
        for _ in range(runs):
            for model, t in zip(models, times):
                t0 = time.perf_counter()
                model(x)
                t.append(time.perf_counter() - t0)
    return [sorted(t)[len(t) // 2] * 1e3 for t in times]


def saved_bytes(model: torch.nn.Module) -> int:
    buffer = io.BytesIO()
    torch.save(model, buffer)
    return buffer.getbuffer().nbytes


@dataclass
class Row:
    name: str
    accuracy: float
    size_bytes: int
    latency_b1_ms: float
    latency_b8_ms: float
    speedup_b1: float = 1.0
    speedup_b8: float = 1.0


def table_markdown(rows: List[Row], header: str = "") -> str:
    base = rows[0]
    lines = [header] if header else []
    lines += ["| model | accuracy | size on disk | × smaller | latency b1 (ms) | "
              "latency b8 (ms) | speed-up b1 | speed-up b8 |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r.name} | {100 * r.accuracy:.1f}% | {r.size_bytes / 1024:.0f} KiB | "
            f"{base.size_bytes / r.size_bytes:.1f}× | {r.latency_b1_ms:.2f} | "
            f"{r.latency_b8_ms:.2f} | {r.speedup_b1:.2f}× | {r.speedup_b8:.2f}× |")
    return "\n".join(lines)


def _chart(rows: List[Row], path: Path) -> Optional[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    names = [r.name for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    panels = [("accuracy (%)", [100 * r.accuracy for r in rows]),
              ("× smaller on disk", [rows[0].size_bytes / r.size_bytes for r in rows]),
              ("speed-up at batch 8", [r.speedup_b8 for r in rows])]
    for ax, (title, values) in zip(axes, panels):
        bars = ax.barh(names[::-1], values[::-1], color="#3b7dd8")
        ax.set_title(title)
        ax.bar_label(bars, fmt="%.1f", padding=2)
        ax.margins(x=0.2)
    for ax in axes[1:]:
        ax.set_yticklabels([])
    fig.suptitle("pyfastcnn demo: ResNet on the built-in shapes dataset vs PyTorch FP32")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run(out_dir: str = "pyfastcnn-demo", settings: Optional[DemoSettings] = None,
        progress: bool = True, log: Callable[[str], None] = print) -> List[Row]:
    """The whole demo; writes ``demo.md``, ``demo.png`` (if matplotlib is installed) and the
    pruned + INT8 model (``model-pruned-int8.pt``) into ``out_dir``; returns the table rows."""
    s = settings or DemoSettings()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    total = s.epochs + s.finetune_epochs + 8
    bar = Progress(total, progress)
    bar.advance(0, "generating data")
    x_train, y_train = shapes_dataset(s.train_size, seed=s.seed + 1)
    x_test, y_test = shapes_dataset(s.test_size, seed=s.seed + 2)
    calib = [x_train[i:i + 250] for i in range(0, min(1000, len(x_train)), 250)]
    bar.advance(1, "data ready")

    torch.manual_seed(s.seed)
    model = models.cifar_resnet(s.depth, num_classes=10, width=s.width).to(
        memory_format=torch.channels_last)
    _train(model, x_train, y_train, s.epochs, 0.2, s, bar, "training")
    model.eval()

    # gradual pruning with fine-tuning (cubic schedule over the first 60% of the steps)
    pruned = copy.deepcopy(model)
    steps = s.finetune_epochs * (len(x_train) // s.batch_size)
    opt = torch.optim.SGD(pruned.parameters(), lr=s.finetune_lr, momentum=0.9,
                          weight_decay=5e-4, nesterov=True)
    schedule = pruning.CubicSchedule(s.sparsity, 0, max(1, int(0.6 * steps)),
                                     frequency=max(1, steps // 40))
    pruner = pruning.GradualPruner(pruned, schedule, structure=s.structure,
                                   block_shape=s.block_shape, scope=s.scope,
                                   skip=["conv1", "fc"], optimizer=opt)
    _train(pruned, x_train, y_train, s.finetune_epochs, s.finetune_lr, s, bar,
           "pruning + fine-tuning",
           on_step=pruner.step, optimizer=opt)
    pruner.remove()
    pruned.eval()

    variants = []
    bar.advance(1, "compressing: fused")
    variants.append(("PyTorch FP32 (baseline)", model))
    variants.append(("fused FP32", fusion.fuse(model)))
    bar.advance(1, "compressing: pruned")
    variants.append((f"pruned {s.sparsity:.0%} FP32", compress(pruned)))
    bar.advance(1, "compressing: INT8")
    variants.append(("INT8 (PTQ)", compress(model, quantize="int8", calibration_data=calib)))
    variants.append((f"pruned {s.sparsity:.0%} + INT8", compress(pruned, quantize="int8",
                                                                    calibration_data=calib)))
    variants.append(("BF16", compress(model, quantize="bf16")))
    bar.advance(1, "measuring")
    nets = [net for _, net in variants]
    b1, b8 = (latencies_ms(nets, b, s.latency_runs) for b in (1, 8))
    rows = []
    for i, (name, net) in enumerate(variants):
        rows.append(Row(name, accuracy(net, x_test, y_test), saved_bytes(net), b1[i], b8[i]))
        bar.advance(0, f"measuring {name}")
    bar.advance(3, "done")
    bar.close()
    for r in rows:
        r.speedup_b1 = rows[0].latency_b1_ms / r.latency_b1_ms
        r.speedup_b8 = rows[0].latency_b8_ms / r.latency_b8_ms
    torch.save(variants[4][1], out / "model-pruned-int8.pt")
    from . import config

    cfg = config()
    header = (f"ResNet-{s.depth} (width {s.width}) on the built-in shapes dataset "
              f"({s.train_size} train / {s.test_size} test images, 32×32), {s.epochs} epochs; "
              f"pruned: {s.structure} {tuple(s.block_shape)}, {s.scope} magnitude, to "
              f"{s.sparsity:.0%} of the conv weights (stem and classifier dense), "
              f"{s.finetune_epochs} fine-tuning epochs; trained in "
              f"{'BF16 autocast' if training_dtype(s) == torch.bfloat16 else 'FP32'}; "
              f"threads: {cfg['num_threads']}; "
              f"ISA: {cfg['selected_isa']}; latency: median of {s.latency_runs} calls, the models "
              f"taking turns.\n")
    md = table_markdown(rows, header)
    (out / "demo.md").write_text(md + "\n")
    chart = _chart(rows, out / "demo.png")
    log(md)
    log(f"\nwrote {out / 'demo.md'}, "
        + (f"{chart}, " if chart else "(no chart: pip install matplotlib), ")
        + f"{out / 'model-pruned-int8.pt'}")
    return rows


__all__ = ["run", "DemoSettings", "shapes_dataset", "accuracy", "latencies_ms"]
