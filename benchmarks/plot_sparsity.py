"""Speed-up against sparsity, from one pytest-benchmark JSON holding bench_sparse_conv.py and
bench_sparse_int8.py results:

    python benchmarks/plot_sparsity.py benchmarks/results/cpu.json -o benchmarks/results/sparsity

writes ``sparsity.png`` (needs matplotlib; left: geometric mean over the layer set of FP32
sparse (unstructured, 32-channel blocks), INT8 dense and INT8 sparse (4-channel blocks), all
against dense FP32 oneDNN; right: per layer, FP32 unstructured and blocks against dense FP32)
and ``sparsity.md`` (the same numbers and the break-even sparsity per layer: where the sparse
kernel stops being slower than the dense one of its precision, interpolated).
"""

from __future__ import annotations

import argparse
import math
from collections import defaultdict
from pathlib import Path

from report import cpu_name, load


def _series(groups, threads: int):
    """{series: {layer/batch: {sparsity: speed-up vs dense FP32}}} and the dense baselines."""
    out = defaultdict(lambda: defaultdict(dict))
    for group, impls in groups.items():
        parts = group.split()
        if len(parts) != 4 or parts[0] not in ("sparse_conv", "sparse_int8"):
            continue
        family, layer, batch, t = parts
        if t != f"t{threads}":
            continue
        key = f"{layer} {batch}"
        if family == "sparse_conv" and "dense oneDNN" in impls:
            base = impls["dense oneDNN"][0]
            for impl, (median, _) in impls.items():
                kind, _, s = impl.rpartition(" ")
                if kind == "pyfastcnn sparse":
                    out["FP32 unstructured"][key][float(s)] = base / median
                elif kind == "pyfastcnn block":
                    out["FP32 32-channel blocks"][key][float(s)] = base / median
        elif family == "sparse_int8" and "torch fp32" in impls:
            base = impls["torch fp32"][0]
            for impl, (median, _) in impls.items():
                if impl.startswith("pyfastcnn sparse int8"):
                    out["INT8 4-channel blocks"][key][float(impl.split()[-1])] = base / median
                elif impl.startswith("pyfastcnn unstructured int8"):
                    out["INT8 unstructured"][key][float(impl.split()[-1])] = base / median
                elif impl == "torch int8 x86":
                    out["INT8 dense (PyTorch x86)"][key][0.0] = base / median
    return out


def _geomean(values):
    values = [v for v in values if v > 0]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else float("nan")


def _curve(per_layer) -> dict:
    sparsities = sorted({s for layer in per_layer.values() for s in layer})
    return {s: _geomean([layer[s] for layer in per_layer.values() if s in layer])
            for s in sparsities}


def _break_even(points: dict, dense: float = 1.0):
    """Smallest sparsity where speed-up reaches ``dense`` (linear between measured points)."""
    items = sorted(points.items())
    for (s0, r0), (s1, r1) in zip(items, items[1:]):
        if r0 < dense <= r1:
            return s0 + (s1 - s0) * (dense - r0) / (r1 - r0)
    if items and items[0][1] >= dense:
        return f"≤ {items[0][0]:.2f}"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("json", type=Path)
    parser.add_argument("-o", "--out", type=Path, default=Path("sparsity"),
                        help="output path without extension (.png and .md are written)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    _, groups = load(args.json)
    series = _series(groups, args.threads)
    if not series:
        raise SystemExit("no sparse_conv / sparse_int8 groups in the JSON")
    curves = {name: _curve(per_layer) for name, per_layer in series.items()}

    lines = [f"Speed-up against dense FP32 oneDNN conv, {args.threads} thread(s), "
             f"{cpu_name()}; geometric mean over layers × batches:", "",
             "| series | " + " | ".join(f"{s:.2f}" for s in sorted(
                 {s for c in curves.values() for s in c})) + " |"]
    all_s = sorted({s for c in curves.values() for s in c})
    lines.append("|---|" + "---|" * len(all_s))
    for name, curve in curves.items():
        lines.append(f"| {name} | " + " | ".join(
            f"{curve[s]:.2f}×" if s in curve else "" for s in all_s) + " |")
    lines += ["", "Break-even sparsity per layer (sparse as fast as dense of the same precision):",
              "", "| layer | FP32 unstructured | FP32 blocks | INT8 4-channel blocks | "
              "INT8 unstructured |", "|---|---|---|---|---|"]
    int8_dense = series.get("INT8 dense (PyTorch x86)", {})
    for key in sorted({k for per in series.values() for k in per}):
        cells = []
        for name, dense in (("FP32 unstructured", None), ("FP32 32-channel blocks", None),
                            ("INT8 4-channel blocks", "int8"), ("INT8 unstructured", "int8")):
            points = series.get(name, {}).get(key)
            if not points:
                cells.append("")
                continue
            level = int8_dense.get(key, {}).get(0.0) if dense else 1.0
            be = _break_even(points, level) if level else None
            cells.append("> measured" if be is None else
                         (be if isinstance(be, str) else f"{be:.2f}"))
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no PNG)")
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
    for name, curve in curves.items():
        xs = sorted(curve)
        style = "s" if name.startswith("INT8 dense") else "o-"
        left.plot(xs, [curve[x] for x in xs], style, label=name)
    left.axhline(1.0, color="gray", lw=0.8)
    left.set(xlabel="sparsity", ylabel="speed-up vs dense FP32 (oneDNN)", yscale="log",
             title=f"geometric mean over layers, {args.threads} thread(s)")
    left.legend()
    for name, marker in (("FP32 unstructured", "--"), ("FP32 32-channel blocks", "-")):
        for key, points in sorted(series.get(name, {}).items()):
            xs = sorted(points)
            right.plot(xs, [points[x] for x in xs], marker, lw=0.9,
                       label=f"{key} ({name.split()[1]})")
    right.axhline(1.0, color="gray", lw=0.8)
    right.set(xlabel="sparsity", yscale="log", title="FP32 sparse conv per layer")
    right.legend(fontsize=6, ncol=2)
    fig.suptitle(cpu_name())
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=110)
    print(f"wrote {args.out.with_suffix('.png')} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
