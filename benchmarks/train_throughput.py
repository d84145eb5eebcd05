"""Training images/s of srvae's own loop (``srvae.study.train.train_epoch``), and a side-by-side comparison of
two source trees, for noisy shared machines.

    python benchmarks/train_throughput.py                                  # this tree, the Table 1 models
    python benchmarks/train_throughput.py --against HEAD~3 --rounds 7      # before (a git revision) vs after

One measurement: a model as the study builds it, Adam as ``srvae.study.train.train`` makes it, ``train_epoch``
over ``steps`` batches of random binary images after a short warm-up; the median over ``windows`` such
epochs gives images/s. ``--against`` extracts the revision with ``git archive`` and runs both trees in
alternating subprocesses (before, after, after, before, …), ``rounds`` times, and reports the median of the
rounds: on a machine shared with other jobs, both trees see the same load. Threads are pinned
(``--threads``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ["sere_vae_table1", "dlgm_table1", "sr_iaf_table1"]


def measure(name: str, batch: int, steps: int, windows: int) -> float:
    """Median training images/s of config entry ``name`` at ``batch`` in the tree on ``sys.path``."""
    import torch

    from srvae.models.registry import build_model
    from srvae.study.config import load_config
    from srvae.study.train import train_epoch

    cfg = load_config([Path.cwd() / "config.yaml"])
    entry, settings = cfg.models[name], cfg.train_settings(name).model_copy(update={"batch_size": batch})
    torch.manual_seed(0)
    x = torch.bernoulli(torch.full((steps * batch, 784), 0.13))
    model = build_model(entry.cls, entry.params, 784, data_mean=x.mean(0))
    order = torch.arange(len(x))
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr, eps=settings.adam_eps, foreach=True)  # as train()
    train_epoch(model, opt, x[: 2 * batch], order[: 2 * batch], 1.0, settings)  # warm-up
    times = []
    for _ in range(windows):
        t0 = time.perf_counter()
        float(train_epoch(model, opt, x, order, 1.0, settings))
        times.append(time.perf_counter() - t0)
    return steps * batch / statistics.median(times)


def worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    result = {}
    for name in args.models:
        for batch in args.batch:
            result[f"{name}/{batch}"] = measure(name, batch, args.steps, args.windows)
    print(json.dumps(result))


def extract(revision: str, into: Path) -> Path:
    """The tree of ``revision`` of this repository, unpacked under ``into``."""
    archive = into / "tree.tar"
    with archive.open("wb") as f:
        subprocess.run(["git", "-C", str(ROOT), "archive", revision], stdout=f, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into / "tree", filter="data")
    return into / "tree"


def run_tree(tree: Path, args: argparse.Namespace) -> dict[str, float]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--threads", str(args.threads),
           "--steps", str(args.steps), "--windows", str(args.windows), "--models", *args.models,
           "--batch", *map(str, args.batch)]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(cmd, cwd=tree, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=MODELS)
    p.add_argument("--batch", nargs="+", type=int, default=[100, 256])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=20, help="batches per timed epoch")
    p.add_argument("--windows", type=int, default=3, help="timed epochs per measurement (median)")
    p.add_argument("--rounds", type=int, default=5, help="alternating subprocess runs per tree (median)")
    p.add_argument("--against", help="a git revision to compare this tree with")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"after": ROOT}
        if args.against:
            trees = {"before": extract(args.against, Path(tmp)), **trees}
        runs: dict[str, list[dict[str, float]]] = {label: [] for label in trees}
        for r in range(args.rounds):
            labels = list(trees) if r % 2 == 0 else list(reversed(trees))
            for label in labels:
                runs[label].append(run_tree(trees[label], args))
                print(f"round {r + 1}/{args.rounds} {label}: "
                      + ", ".join(f"{k} {v:.0f}" for k, v in runs[label][-1].items()), file=sys.stderr, flush=True)
    medians = {label: {k: statistics.median(run[k] for run in rs) for k in rs[0]} for label, rs in runs.items()}
    print(f"\ntraining images/s, {args.threads} threads, median of {args.rounds} rounds "
          f"(each the median of {args.windows} epochs of {args.steps} batches)")
    for key, after in medians["after"].items():
        before = medians.get("before", {}).get(key)
        versus = f"{before:8.0f} → " if before else ""
        ratio = f"  ×{after / before:.2f}" if before else ""
        print(f"{key:32s} {versus}{after:8.0f}{ratio}")


if __name__ == "__main__":
    main()
