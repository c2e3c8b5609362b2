"""Turns pytest-benchmark JSON into a markdown table of ratios (and a PNG if matplotlib exists).

    python benchmarks/report.py benchmarks/results/cpu.json -o benchmarks/results/cpu.md
    python benchmarks/report.py cpu.json cpu-models.json --readme   # later files' groups win

Per group (one shape, one thread count): median time of each implementation, its GOP/s, its
share of the machine's peak for its arithmetic (shapes.PEAKS_PER_CORE x threads, only for runs
on a CPU listed there), and
speed-up = baseline median / median (> 1: faster than the baseline). A summary gives the
geometric mean of the speed-ups per implementation and benchmark family.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
from collections import defaultdict
from pathlib import Path

from shapes import PEAKS_PER_CORE


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load(paths):
    """Groups of one or more JSON files; a group in a later file replaces the whole group of an
    earlier one (every ratio stays within one run). Returns the first file's data."""
    paths = [paths] if isinstance(paths, Path) else paths
    groups = {}
    first = None
    for path in paths:
        data = json.loads(path.read_text())
        first = first or data
        file_groups = defaultdict(dict)
        for bench in data["benchmarks"]:
            info = bench["extra_info"]
            file_groups[bench["group"]][info["impl"]] = (bench["stats"]["median"], info)
        groups.update(file_groups)
    return first, groups


def json_cpu(data) -> str:
    """The CPU a benchmark JSON was measured on (this machine's name if it does not say)."""
    return data.get("machine_info", {}).get("cpu", {}).get("brand_raw") or cpu_name()


def peaks_for(data) -> dict:
    """The per-core peaks of the CPU a pytest-benchmark JSON was measured on ({} if unknown)."""
    cpu = data.get("machine_info", {}).get("cpu", {})
    key = (cpu.get("vendor_id_raw"), cpu.get("family"), "avx512f" in cpu.get("flags", []))
    return PEAKS_PER_CORE.get(key, {})


def _share(gops: float, peak: float, threads: int = 1) -> str:
    return f"{100 * gops * 1e9 / peak / threads:.0f}%" if peak else "-"


def table(groups, peaks) -> str:
    rows = [
        "| group | impl | median (ms) | GOP/s | % of peak | speed-up vs baseline |",
        "|---|---|---|---|---|---|",
    ]
    for group in sorted(groups):
        impls = groups[group]
        baseline = next(iter(impls.values()))[1].get("baseline")
        base_time = impls[baseline][0] if baseline in impls else None
        for impl, (median, info) in sorted(impls.items(), key=lambda kv: kv[1][0]):
            ratio = f"{base_time / median:.2f}x" if base_time else "-"
            gops = info["ops"] / median / 1e9
            peak = peaks.get(info.get("kind", ""), 0) * info.get("threads", 1)
            share = f"{100 * gops * 1e9 / peak:.0f}%" if peak else "-"
            rows.append(
                f"| {group} | {impl} | {median * 1e3:.3f} | {gops:.1f} | {share} | {ratio} |"
            )
    return "\n".join(rows)


def summary(groups) -> str:
    """Geometric mean of baseline/impl per (family, threads, impl)."""
    logs = defaultdict(list)
    for group, impls in groups.items():
        baseline = next(iter(impls.values()))[1].get("baseline")
        if baseline not in impls:
            continue
        family, threads = group.split()[0], group.split()[-1]
        for impl, (median, _) in impls.items():
            if impl != baseline:
                logs[(family, threads, impl)].append(math.log(impls[baseline][0] / median))
    rows = [
        "| family | threads | impl | geomean speed-up vs baseline | groups |",
        "|---|---|---|---|---|",
    ]
    for (family, threads, impl), values in sorted(logs.items()):
        mean = math.exp(sum(values) / len(values))
        rows.append(f"| {family} | {threads[1:]} | {impl} | {mean:.2f}x | {len(values)} |")
    return "\n".join(rows)


RESNET_IDS = [
    "64-64-56-k3s1",
    "128-128-28-k3s1",
    "256-256-14-k3s1",
    "512-512-7-k3s1",
    "256-64-56-k1s1",
    "1024-256-14-k1s1",
    "3-64-224-k7s2",
]


def _ratio(groups, group, impl, baseline):
    g = groups[group]
    return g[baseline][0] / g[impl][0]


def _gops(groups, group, impl):
    median, info = groups[group][impl]
    return info["ops"] / median / 1e9


def _geomean(groups, family, threads, impl):
    logs = [
        math.log(impls[next(iter(impls.values()))[1]["baseline"]][0] / impls[impl][0])
        for g, impls in groups.items()
        if g.startswith(family + " ") and g.endswith(f" t{threads}") and impl in impls
    ]
    return math.exp(sum(logs) / len(logs))


def readme_tables(groups, peak) -> str:
    """The curated tables of README.md's benchmark section (peak: peaks_for(data))."""
    out = []
    rows = [
        "| INT8 GEMM (M×N×K) | threads | pyfastcnn packed GOP/s (% peak) | "
        "vs `torch._int_mm` | vs FP32 `torch.mm` |",
        "|---|---|---|---|---|",
    ]
    for shape in [
        "m1024-n1024-k1024",
        "m2048-n2048-k2048",
        "m1-n4096-k4096",
        "m16-n4096-k4096",
        "m64-n1024-k1024",
        "m3136-n64-k576",
        "m784-n128-k1152",
    ]:
        for t in (1, 2):
            group = f"int8_gemm {shape} t{t}"
            if group not in groups:
                continue
            gops = _gops(groups, group, "pyfastcnn packed")
            name = shape[1:].replace("-n", "×").replace("-k", "×")
            rows.append(
                f"| {name} | {t} | {gops:.0f} ({_share(gops, peak.get('int8'), t)})"
                f" | {_ratio(groups, group, 'pyfastcnn packed', 'torch._int_mm'):.2f}× | "
                f"{_ratio(groups, group, 'pyfastcnn packed', 'torch.mm fp32'):.1f}× |"
            )
    out.append("\n".join(rows))
    rows = [
        "| quantized conv (ResNet-50 layer) | batch | vs PyTorch INT8 (x86), 1 thread | "
        "2 threads | vs FP32 oneDNN, 1 thread |",
        "|---|---|---|---|---|",
    ]
    for layer in RESNET_IDS:
        for b in (1, 8):
            g1, g2 = f"qconv {layer} b{b} t1", f"qconv {layer} b{b} t2"
            rows.append(
                f"| {layer} | {b} | "
                f"{_ratio(groups, g1, 'pyfastcnn int8', 'torch int8 x86'):.2f}× | "
                f"{_ratio(groups, g2, 'pyfastcnn int8', 'torch int8 x86'):.2f}× | "
                f"{_ratio(groups, g1, 'pyfastcnn int8', 'torch fp32'):.1f}× |"
            )
    out.append("\n".join(rows))
    base = "torch conv+relu (BN folded)"
    rows = [
        "| fused conv+BN+ReLU (layer) | batch | FP32 GFLOP/s (% peak) | FP32 vs oneDNN, 1 t | "
        "2 t | BF16 GFLOP/s (% BF16 peak) | BF16 vs oneDNN FP32, 1 t | FP32 vs eager "
        "conv→BN→ReLU |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for layer in RESNET_IDS:
        for b in (1, 8):
            g1, g2 = f"fused_conv {layer} b{b} t1", f"fused_conv {layer} b{b} t2"
            f32, bf16 = (
                _gops(groups, g1, "pyfastcnn fused"),
                _gops(groups, g1, "pyfastcnn fused bf16"),
            )
            rows.append(
                f"| {layer} | {b} | {f32:.0f} ({_share(f32, peak.get('fp32'))}) | "
                f"{_ratio(groups, g1, 'pyfastcnn fused', base):.2f}× | "
                f"{_ratio(groups, g2, 'pyfastcnn fused', base):.2f}× | "
                f"{bf16:.0f} ({_share(bf16, peak.get('bf16'))}) | "
                f"{_ratio(groups, g1, 'pyfastcnn fused bf16', base):.2f}× | "
                f"{_ratio(groups, g1, 'pyfastcnn fused', 'torch eager conv-bn-relu'):.2f}× |"
            )
    rows.append(
        f"| **geomean** | 1, 8 | | {_geomean(groups, 'fused_conv', 1, 'pyfastcnn fused'):.2f}× | "
        f"{_geomean(groups, 'fused_conv', 2, 'pyfastcnn fused'):.2f}× | | "
        f"{_geomean(groups, 'fused_conv', 1, 'pyfastcnn fused bf16'):.2f}× | |"
    )
    out.append("\n".join(rows))
    sparsities = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98)
    rows = [
        "| sparse conv vs dense oneDNN, geomean | threads | "
        + " | ".join(f"{int(s * 100)}%" for s in sparsities)
        + " |",
        "|---|---|" + "---|" * len(sparsities),
    ]
    for kind, label in (("sparse", "unstructured (csr)"), ("block", "32-channel blocks (block)")):
        for t in (1, 2):
            rows.append(
                f"| {label} | {t} | "
                + " | ".join(
                    f"{_geomean(groups, 'sparse_conv', t, f'pyfastcnn {kind} {s}'):.2f}×"
                    for s in sparsities
                )
                + " |"
            )
    out.append("\n".join(rows))
    rows = [
        "| layer (1 thread), at 90% sparsity | batch | unstructured | blocks |",
        "|---|---|---|---|",
    ]
    for layer in RESNET_IDS:
        for b in (1, 8):
            g1 = f"sparse_conv {layer} b{b} t1"
            rows.append(
                f"| {layer} | {b} | "
                f"{_ratio(groups, g1, 'pyfastcnn sparse 0.9', 'dense oneDNN'):.2f}× | "
                f"{_ratio(groups, g1, 'pyfastcnn block 0.9', 'dense oneDNN'):.2f}× |"
            )
    out.append("\n".join(rows))
    out.append(
        f"Depthwise (MobileNetV2 3×3 layers, FusedConvBNReLU2d) vs oneDNN, geomean: "
        f"{_geomean(groups, 'fused_dw', 1, 'pyfastcnn fused'):.2f}× at 1 thread, "
        f"{_geomean(groups, 'fused_dw', 2, 'pyfastcnn fused'):.2f}× at 2."
    )
    return "\n\n".join(out) + "\n"


def sparse_int8_tables(groups) -> str:
    """Sparse INT8 conv (bench_sparse_int8.py): geomean speed-up over the layer set per sparsity
    and thread count against dense INT8 (torch x86) and dense FP32, and per-layer ratios."""
    impls = sorted({i for g, v in groups.items() if g.startswith("sparse_int8 ") for i in v
                    if i.startswith(("pyfastcnn sparse int8 ", "pyfastcnn unstructured int8 "))})
    # "pyfastcnn sparse int8 0.9" -> "block-4 0.9", "pyfastcnn unstructured int8 0.9" -> ...
    label = lambda impl: ("unstructured " if "unstructured" in impl else "block-4 ") \
        + impl.split()[-1]  # noqa: E731
    threads = sorted({int(g.split()[-1][1:]) for g in groups if g.startswith("sparse_int8 ")})
    rows = [
        "| sparse INT8 conv, geomean over layers x batches | threads | vs dense INT8 (x86) | "
        "vs dense FP32 | layers >= 3x INT8 | layers >= 2x INT8 |",
        "|---|---|---|---|---|---|",
    ]
    for impl in impls:
        for t in threads:
            int8, fp32 = [], []
            for g, v in groups.items():
                if g.startswith("sparse_int8 ") and g.endswith(f" t{t}") and impl in v:
                    int8.append(v["torch int8 x86"][0] / v[impl][0])
                    fp32.append(v["torch fp32"][0] / v[impl][0])
            if not int8:
                continue
            geo = lambda r: math.exp(sum(map(math.log, r)) / len(r))  # noqa: E731
            rows.append(
                f"| {label(impl)} | {t} | {geo(int8):.2f}× | {geo(fp32):.1f}× | "
                f"{sum(r >= 3 for r in int8)}/{len(int8)} | "
                f"{sum(r >= 2 for r in int8)}/{len(int8)} |"
            )
    out = ["\n".join(rows)]
    rows = ["| layer | batch | threads | " + " | ".join(
        f"{label(i)} vs INT8 / FP32" for i in impls) + " |",
        "|---|---|---|" + "---|" * len(impls)]
    for g in sorted(g for g in groups if g.startswith("sparse_int8 ")):
        _, layer, b, t = g.split()
        v = groups[g]
        rows.append(f"| {layer} | {b[1:]} | {t[1:]} | " + " | ".join(
            f"{v['torch int8 x86'][0] / v[i][0]:.2f}× / {v['torch fp32'][0] / v[i][0]:.1f}×"
            if i in v else "—" for i in impls) + " |")
    out.append("\n".join(rows))
    return "\n\n".join(out) + "\n"


MODEL_IMPLS = ("pyfastcnn fused fp32", "pyfastcnn fused bf16", "pyfastcnn int8",
               "torch int8 x86", "onnxruntime int8", "openvino int8", "pyfastcnn 90% blocks fp32",
               "pyfastcnn 90% blocks int8", "pyfastcnn 90% unstructured int8")


def model_tables(groups) -> str:
    """Whole models (bench_models.py, bench_onnxruntime.py, bench_openvino.py): speed-up of
    each implementation over PyTorch FP32 eager (channels_last), with the baseline's median."""
    rows = ["| model | batch | threads | torch fp32 (ms) | "
            + " | ".join(MODEL_IMPLS) + " |", "|---|---|---|---|" + "---|" * len(MODEL_IMPLS)]
    keys = sorted((g.split()[1], int(g.split()[2][1:]), int(g.split()[3][1:]))
                  for g in groups if g.startswith("model "))
    for name, b, t in keys:
        v = groups[f"model {name} b{b} t{t}"]
        base = v["torch fp32"][0]
        cells = [f"{base / v[i][0]:.2f}×" if i in v else "—" for i in MODEL_IMPLS]
        rows.append(f"| {name} | {b} | {t} | {base * 1e3:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, nargs="+",
                        help="pytest-benchmark JSON file(s); groups of later files replace "
                             "those of earlier ones")
    parser.add_argument("-o", "--output", type=Path)
    parser.add_argument(
        "--readme", action="store_true", help="print the curated tables of README.md instead"
    )
    args = parser.parse_args()
    data, groups = load(args.json)
    if args.readme:
        print(readme_tables(groups, peaks_for(data)))
        if any(g.startswith("model ") for g in groups):
            print(model_tables(groups))
        if any(g.startswith("sparse_int8 ") for g in groups):
            print(sparse_int8_tables(groups).split("\n\n")[0] + "\n")
        return
    cpu = json_cpu(data)
    peaks = peaks_for(data)  # measured per CPU: no "% of peak" for an unknown one
    header = (
        f"Machine: {cpu}, {data['machine_info'].get('cpu', {}).get('count', '?')} CPUs; "
        f"run {data.get('datetime', '?')}; median of rounds; baseline in the same run.\n\n"
    )
    text = header + summary(groups) + "\n\n" + table(groups, peaks) + "\n"
    if any(g.startswith("sparse_int8 ") for g in groups):
        text += "\n" + sparse_int8_tables(groups)
    if any(g.startswith("model ") for g in groups):
        text += "\n" + model_tables(groups)
    if args.output:
        args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
