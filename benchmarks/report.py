"""Turns pytest-benchmark JSON into a markdown table of ratios (and a PNG if matplotlib exists).

    python benchmarks/report.py benchmarks/results/cpu.json -o benchmarks/results/cpu.md

Per group (one shape, one thread count): median time of each implementation, its GOP/s, its
share of the machine's peak for its arithmetic (shapes.PEAK_PER_CORE x threads), and
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

from shapes import PEAK_PER_CORE


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
            peak = PEAK_PER_CORE.get(info.get("kind", ""), 0) * info.get("threads", 1)
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
    text = header + summary(groups) + "\n\n" + table(groups) + "\n"
    if args.output:
        args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
