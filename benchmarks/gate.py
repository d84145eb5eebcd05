"""Throughput regression gate: compare two pytest-benchmark JSON files (``--benchmark-save``/``--benchmark-json``)
benchmark by benchmark and exit 1 naming every one whose time per call grew by more than the threshold.

    python benchmarks/gate.py BASELINE.json CURRENT.json [--stat min] [--threshold 25]

Works for any benchmark file in ``benchmarks/``: it matches results by their full name and prints items/s where a
result's ``extra_info`` has ``items`` (the ``throughput`` fixture records them), else calls/s.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# The best round (min) by default: noise from other processes on a shared machine only ever adds time, so the
# fastest of many rounds is the statistic it moves least (README "Throughput benchmarks" has the measurements).
DEFAULT_STAT, DEFAULT_THRESHOLD = "min", 25.0


def load(path: Path) -> dict[str, dict]:
    return {bench["fullname"]: bench for bench in json.loads(path.read_text())["benchmarks"]}


def rate(bench: dict, stat: str) -> float:
    """Items (or calls) per second at the given time statistic."""
    return bench.get("extra_info", {}).get("items", 1) / bench["stats"][stat]


def unit(bench: dict) -> str:
    return "items/s" if "items" in bench.get("extra_info", {}) else "calls/s"


def compare(before: dict[str, dict], after: dict[str, dict], stat: str, threshold: float) -> list[str]:
    """Print the comparison grouped by kind; return the names of the regressed benchmarks."""
    regressed = []
    common = sorted(before.keys() & after.keys(), key=lambda name: (after[name]["group"] or "", name))
    width = max((len(after[name]["name"]) for name in common), default=4)
    print(f"{'benchmark':<{width}} {'before /s':>14} {'after /s':>14} {'time':>8}   ({stat}, fail above +{threshold:g}%)")
    group = None
    for name in common:
        if after[name]["group"] != group:
            group = after[name]["group"]
            print(f"{group}:")
        change = 100 * (after[name]["stats"][stat] / before[name]["stats"][stat] - 1)
        flag = change > threshold
        if flag:
            regressed.append(name)
        print(f"{after[name]['name']:<{width}} {rate(before[name], stat):>14,.1f} {rate(after[name], stat):>14,.1f}"
              f" {change:>+7.1f}%{'   REGRESSED' if flag else ''}")
    for name in sorted(before.keys() - after.keys()):
        print(f"missing from the current run: {name}")
    for name in sorted(after.keys() - before.keys()):
        print(f"new, no baseline: {name}")
    return regressed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("baseline", type=Path)
    parser.add_argument("current", type=Path)
    parser.add_argument("--stat", choices=["min", "median", "mean", "max"], default=DEFAULT_STAT)
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                        help=f"largest tolerated growth of the time per call, in percent (default {DEFAULT_THRESHOLD:g})")
    args = parser.parse_args(argv)
    before, after = load(args.baseline), load(args.current)
    regressed = compare(before, after, args.stat, args.threshold)
    if regressed:
        print(f"\n{len(regressed)} of {len(before.keys() & after.keys())} benchmarks regressed "
              f"({args.stat} time per call more than {args.threshold:g}% above the baseline):")
        for name in regressed:
            print(f"  {after[name]['name']}: {rate(before[name], args.stat):,.1f} -> "
                  f"{rate(after[name], args.stat):,.1f} {unit(after[name])}")
        return 1
    print(f"\nno regression above +{args.threshold:g}% ({args.stat})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
