"""Compare the default study's numbers between two study trees, bit for bit (timings excluded)."""
import sys
from pathlib import Path
import numpy as np, pandas as pd
a, b = Path(sys.argv[1]), Path(sys.argv[2])
TIMING = {"train_seconds", "seconds_per_epoch", "train_images_per_s", "eval_seconds", "samples_per_s",
          "sampling_seconds_median", "sampling_spread", "seconds", "run_dir"}
ok = True
for f in ["summary.csv", "curves.csv", "kl_per_layer.csv", "comparisons.csv"]:
    x, y = pd.read_csv(a / "results" / f), pd.read_csv(b / "results" / f)
    cols = [c for c in x.columns if c not in TIMING]
    same = x[cols].equals(y[cols])
    print(f, "rows", len(x), "columns compared", len(cols), "identical" if same else "DIFFERENT")
    ok &= same
n = 0
for p in sorted((a / "results").rglob("log_px.npy")):
    q = b / p.relative_to(a)
    same = np.array_equal(np.load(p), np.load(q)); n += 1
    ok &= same
    if not same: print("DIFFERENT", p)
print(n, "log_px.npy arrays compared")
# the rendered tables without the timing-bearing lines
def lines(root, name):
    return [l for l in (root / "reports" / name).read_text().splitlines()]
ta, tb = lines(a, "tables.md"), lines(b, "tables.md")
diff = [(l1, l2) for l1, l2 in zip(ta, tb) if l1 != l2]
print("tables.md lines", len(ta), len(tb), "differing", len(diff))
for l1, l2 in diff[:40]: print("-", l1[:200]); print("+", l2[:200])
print("ALL NUMBERS IDENTICAL" if ok else "NUMBERS DIFFER")
