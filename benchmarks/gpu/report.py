"""GPU benchmark JSON -> markdown: per shape the median time per call of each implementation,
its TOPS/TFLOP/s and share of the card's peak, and speed-up = baseline / impl; then the
geometric mean per (family, impl).

    python benchmarks/gpu/report.py gpu.json -o benchmarks/results/gpu-h100.md
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path

# Dense tensor-core / CUDA-core peaks (ops per second, no sparsity) from NVIDIA's datasheets;
# the sparse 2:4 figures are twice these. Matched by substring of the device name.
CARD_PEAKS = {
    "H100 PCIe": {"int8": 1513e12, "fp16": 756e12, "bf16": 756e12, "tf32": 378e12, "fp32": 51e12},
    "H100": {"int8": 1979e12, "fp16": 989e12, "bf16": 989e12, "tf32": 494e12, "fp32": 67e12},
    "H200": {"int8": 1979e12, "fp16": 989e12, "bf16": 989e12, "tf32": 494e12, "fp32": 67e12},
    "A100": {"int8": 624e12, "fp16": 312e12, "bf16": 312e12, "tf32": 156e12, "fp32": 19.5e12},
}


def card_peaks(device: str) -> dict:
    for name, peaks in CARD_PEAKS.items():
        if name in device:
            return peaks
    return {}


def load(path: Path):
    data = json.loads(path.read_text())
    groups = defaultdict(dict)
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        per_call = bench["stats"]["median"] / info.get("calls_per_round", 1)
        groups[bench["group"]][info["impl"]] = (per_call, info)
    return data, groups


def table(groups) -> str:
    rows = ["| shape | impl | median per call (µs) | T(FL)OP/s | % of card peak | "
            "speed-up vs baseline |", "|---|---|---|---|---|---|"]
    for group in sorted(groups):
        impls = groups[group]
        baseline = next(iter(impls.values()))[1]["baseline"]
        base_time = impls[baseline][0] if baseline in impls else None
        for impl, (t, info) in sorted(impls.items(), key=lambda kv: kv[1][0]):
            rate = info["ops"] / t
            peak = card_peaks(info.get("device", "")).get(info.get("kind", ""))
            share = f"{100 * rate / peak:.0f}%" if peak else "-"
            ratio = f"{base_time / t:.2f}×" if base_time else "-"
            rows.append(f"| {group} | {impl} | {t * 1e6:.1f} | {rate / 1e12:.1f} | {share} | "
                        f"{ratio} |")
    return "\n".join(rows)


def summary(groups) -> str:
    logs = defaultdict(list)
    for group, impls in groups.items():
        baseline = next(iter(impls.values()))[1]["baseline"]
        if baseline not in impls:
            continue
        family = group.split()[0]
        for impl, (t, _) in impls.items():
            if impl != baseline:
                logs[(family, baseline, impl)].append(math.log(impls[baseline][0] / t))
    rows = ["| family | baseline | impl | geomean speed-up | shapes |", "|---|---|---|---|---|"]
    for (family, baseline, impl), values in sorted(logs.items()):
        rows.append(f"| {family} | {baseline} | {impl} | "
                    f"{math.exp(sum(values) / len(values)):.2f}× | {len(values)} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path)
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args()
    data, groups = load(args.json)
    devices = {info.get("device", "?") for impls in groups.values() for _, info in impls.values()}
    head = (f"GPU: {', '.join(sorted(devices))}; run {data.get('datetime', '?')}; median per "
            f"call, baseline measured in the same run (`bash benchmarks/gpu/run.sh`).\n")
    text = "\n\n".join([head, summary(groups), table(groups)]) + "\n"
    if args.output:
        args.output.write_text(text)
    print(summary(groups))


if __name__ == "__main__":
    main()
