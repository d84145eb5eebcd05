"""Compare the default study's numbers in two study trees, bit for bit, timings excluded.

    python bitcheck.py BEFORE_TREE AFTER_TREE     # each tree holds the results/ and reports/ of `snakemake --cores 2`
"""

import sys
from pathlib import Path

import numpy as np
import pandas as pd

#: columns that are wall-clock measurements (or a path), which no two runs share
TIMING = {"train_seconds", "seconds_per_epoch", "train_images_per_s", "eval_seconds", "samples_per_s",
          "sampling_seconds_median", "sampling_spread", "seconds", "run_dir"}


def main(before: Path, after: Path) -> bool:
    identical = True
    for name in ("summary.csv", "curves.csv", "kl_per_layer.csv", "comparisons.csv"):
        x, y = pd.read_csv(before / "results" / name), pd.read_csv(after / "results" / name)
        columns = [c for c in x.columns if c not in TIMING]
        same = x[columns].equals(y[columns])
        print(name, "rows", len(x), "columns compared", len(columns), "identical" if same else "DIFFERENT")
        identical &= same
    arrays = sorted((before / "results").rglob("log_px.npy"))
    for path in arrays:
        same = np.array_equal(np.load(path), np.load(after / path.relative_to(before)))
        identical &= same
        if not same:
            print("DIFFERENT", path)
    print(len(arrays), "log_px.npy arrays compared")
    lines_a, lines_b = ((root / "reports" / "tables.md").read_text().splitlines() for root in (before, after))
    differing = [(a, b) for a, b in zip(lines_a, lines_b) if a != b]
    print("tables.md lines", len(lines_a), len(lines_b), "differing", len(differing))
    for a, b in differing[:40]:
        print("-", a[:200])
        print("+", b[:200])
    print("ALL NUMBERS IDENTICAL" if identical else "NUMBERS DIFFER")
    return identical


if __name__ == "__main__":
    sys.exit(0 if main(Path(sys.argv[1]), Path(sys.argv[2])) else 1)
