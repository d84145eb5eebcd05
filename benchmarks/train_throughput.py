"""Training images/s of srvae's own loop (``srvae.study.run.train.train_epoch``), and a side-by-side comparison of
two source trees, for noisy shared machines.

    python benchmarks/train_throughput.py                                  # this tree, the Table 1 models
    python benchmarks/train_throughput.py --against HEAD~3 --rounds 7      # before (a git revision) vs after
    python benchmarks/train_throughput.py --modes loop compiled            # with train.compile

One measurement: a model as the study builds it, ``steps`` batches of random binary images after a warm-up;
the median over ``windows`` such epochs gives images/s. Modes: ``loop`` is ``srvae.study.run.train.train_epoch``
with the optimiser that ``train`` builds; ``compiled`` the same with ``train.compile`` (the compiled loss; it
exists in this tree only and is compared with the other tree's ``loop``; the warm-up, which compiles, is
reported as ``compile s``). ``--against`` takes any revision of the current layout or of the flat one before it
(``srvae/train.py``), such as 5ab965b, the tree issue 12 quoted its figures from.
``--against`` extracts the revision with ``git archive`` and runs both trees in alternating subprocesses
(before, after, after, before, …), ``rounds`` times, and reports the median of the rounds: on a machine
shared with other jobs, both trees see the same load. Threads are pinned (``--threads``). Several threads
stall whenever another job holds a core (each operation waits for its slowest thread), so with ``--idle``
each run waits, up to ten minutes, for the CPUs to be that idle (fraction over two seconds, ``/proc/stat``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODELS = ["sere_vae_table1", "dlgm_table1", "sr_iaf_table1"]


def training_epoch(name: str, batch: int, steps: int, mode: str, root: Path | None = None) -> Callable[[], float]:
    """One training epoch of config entry ``name`` (of ``root``'s ``config.yaml``, default the working directory's)
    over ``steps`` batches of ``batch`` random binary images, as a function; ``mode``: see the module docstring.
    Uses the srvae tree on ``sys.path``, with the optimiser its ``train`` builds: ``make_optimiser`` where the
    tree has one, else :func:`foreach_adam`."""
    import torch

    config = (root or Path.cwd()) / "config.yaml"
    torch.manual_seed(0)  # the same images, and then the same initial weights, in every tree
    x = torch.bernoulli(torch.full((steps * batch, 784), 0.13))
    modules = _layout_modules()
    if modules is None:  # the flat layout before d12ca9c (srvae/study.py, srvae/train.py)
        return flat_layout_epoch(name, batch, x, config)
    train_module, build_model = modules
    from srvae.study.config import load_config

    cfg = load_config([config])
    entry, settings = cfg.models[name], cfg.train_settings(name).model_copy(update={"batch_size": batch})
    model = build_model(entry.cls, entry.params, 784, data_mean=x.mean(0))
    order = torch.arange(len(x))
    if mode == "compiled":
        settings = settings.model_copy(update={"compile": True})
    if hasattr(train_module, "make_optimiser"):
        opt = train_module.make_optimiser(model.parameters(), settings)
    else:
        opt = foreach_adam(model, settings)
    return lambda: float(train_module.train_epoch(model, opt, x, order, 1.0, settings))


def _layout_modules() -> tuple[Any, Callable] | None:
    """The training module and ``build_model`` of the tree on ``sys.path``: this layout (``srvae/study/run/``),
    the one before it (``srvae/study/train.py``, ``srvae/models/registry.py``), or None for the flat layout."""
    import importlib

    for train_name, registry_name in (("srvae.study.run.train", "srvae.registry"),
                                      ("srvae.study.train", "srvae.models.registry")):
        try:
            return importlib.import_module(train_name), importlib.import_module(registry_name).build_model
        except ModuleNotFoundError:
            continue
    return None


def foreach_adam(model, settings):
    """The optimiser of trees older than ``make_optimiser``: foreach Adam with the settings' rate and ε."""
    import torch

    return torch.optim.Adam(model.parameters(), lr=settings.lr, eps=settings.adam_eps, foreach=True)


def flat_layout_epoch(name: str, batch: int, x, config: Path) -> Callable[[], float]:
    """:func:`training_epoch` for a tree of the flat layout (``srvae/train.py``; 5ab965b, the code issue 12 measured),
    whose loop was written inside ``train``: the same steps (objective, backward, clip, foreach Adam) over ``x``."""
    import torch
    from srvae.config import load_config, train_settings
    from srvae.train import objective

    from srvae.registry import build_model

    cfg = load_config([config])
    entry, settings = cfg["models"][name], train_settings(cfg, name)
    model = build_model(entry["class"], entry["params"], 784, data_mean=x.mean(0)).train()
    opt = foreach_adam(model, settings)

    def epoch() -> float:
        total = torch.zeros(())
        for xb in x.split(batch):
            obj = objective(model, xb, 1.0, settings.iw_samples)
            opt.zero_grad(set_to_none=True)
            (-obj.mean()).backward()
            if settings.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            opt.step()
            total += obj.detach().sum()
        return float(total)

    return epoch


def measure(name: str, batch: int, steps: int, windows: int, mode: str) -> tuple[float, float]:
    """Median training images/s of config entry ``name`` at ``batch``, and how many seconds longer the first
    epoch took than the median one (compilation, in mode ``compiled``)."""
    epoch = training_epoch(name, batch, steps, mode)
    t0 = time.perf_counter()
    epoch()
    warmup = time.perf_counter() - t0
    times = []
    for _ in range(windows):
        t0 = time.perf_counter()
        epoch()
        times.append(time.perf_counter() - t0)
    return steps * batch / statistics.median(times), warmup - statistics.median(times)


def worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    result = {}
    for name in args.models:
        for batch in args.batch:
            for mode in args.modes:
                result[f"{name}/{batch}/{mode}"] = measure(name, batch, args.steps, args.windows, mode)
    print(json.dumps(result))


def extract(revision: str, into: Path) -> Path:
    """The tree of ``revision`` of this repository, unpacked under ``into``."""
    tree = into / "tree"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def cpu_idle(seconds: float = 2.0) -> float:
    """Fraction of CPU time idle over the next ``seconds`` (Linux ``/proc/stat``; 1.0 where it is unreadable)."""
    def times() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return fields[3] + fields[4], sum(fields)  # idle + iowait, total

    try:
        idle0, total0 = times()
        time.sleep(seconds)
        idle1, total1 = times()
    except OSError:
        return 1.0
    return (idle1 - idle0) / max(total1 - total0, 1)


def wait_for_idle(fraction: float, timeout: float = 600.0) -> None:
    start = time.monotonic()
    while cpu_idle() < fraction and time.monotonic() - start < timeout:
        pass


def run_one(tree: Path, args: argparse.Namespace, name: str, batch: int, mode: str) -> list[float]:
    """One measurement in a fresh subprocess on ``tree``: ``[images/s, extra seconds of the first epoch]``."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--threads", str(args.threads),
           "--steps", str(args.steps), "--windows", str(args.windows), "--models", name, "--batch", str(batch),
           "--modes", mode]
    if args.idle:
        wait_for_idle(args.idle)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(cmd, cwd=tree, env=env, check=True, stdout=subprocess.PIPE, text=True).stdout  # errors show
    return next(iter(json.loads(out.strip().splitlines()[-1]).values()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=MODELS)
    p.add_argument("--batch", nargs="+", type=int, default=[100, 256])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=20, help="batches per timed epoch")
    p.add_argument("--windows", type=int, default=3, help="timed epochs per measurement (median)")
    p.add_argument("--rounds", type=int, default=5, help="alternating subprocess runs per tree (median)")
    p.add_argument("--against", help="a git revision to compare this tree with (its mode: loop)")
    p.add_argument("--modes", nargs="+", choices=["loop", "compiled"], default=["loop"])
    p.add_argument("--idle", type=float, default=0.0, help="wait for this idle CPU fraction before each run")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    runs: dict[tuple[str, str], list[list[float]]] = {}  # (tree, model/batch/mode) -> measurements
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"after": ROOT, **({"before": extract(args.against, Path(tmp))} if args.against else {})}
        jobs = [("before", "loop")] * bool(args.against) + [("after", mode) for mode in args.modes]
        for r in range(args.rounds):
            for name in args.models:
                for batch in args.batch:
                    for label, mode in jobs if r % 2 == 0 else jobs[::-1]:
                        key = f"{name}/{batch}/{mode}"
                        runs.setdefault((label, key), []).append(run_one(trees[label], args, name, batch, mode))
                        ips, extra = runs[label, key][-1]
                        compiled = f" (compile {extra:.0f} s)" if mode == "compiled" else ""
                        print(f"round {r + 1}/{args.rounds} {label} {key}: {ips:.0f}{compiled}", file=sys.stderr,
                              flush=True)
    median = {k: [statistics.median(m[i] for m in ms) for i in (0, 1)] for k, ms in runs.items()}
    print(f"\ntraining images/s, {args.threads} threads, median of {args.rounds} rounds "
          f"(each the median of {args.windows} epochs of {args.steps} batches)")
    for (label, key), (after, extra) in median.items():
        if label != "after":
            continue
        before = median.get(("before", key.rsplit("/", 1)[0] + "/loop"), [None])[0]
        versus = f"{before:8.0f} → " if before else ""
        ratio = f"  ×{after / before:.2f}" if before else ""
        compiled = f"  (compile {extra:.0f} s)" if key.endswith("/compiled") else ""
        print(f"{key:34s} {versus}{after:8.0f}{ratio}{compiled}")


if __name__ == "__main__":
    main()
