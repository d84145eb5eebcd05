"""The whole study from a validated config: its runs, their aggregation, and the report.

Thin wiring between ``config.yaml`` and :mod:`srvae.aggregate` / :mod:`srvae.report`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .aggregate import aggregate
from .config import runs
from .report import render_report
from .runs import run_dir

#: the test split of the ``mnist`` source is the official 10,000-image test set
OFFICIAL_MNIST = {"train_pool": 60_000, "test": 10_000}


def _split(ds: dict[str, Any]) -> dict[str, int]:
    split = dict(ds["split"])
    if ds["source"] == "mnist":
        split["test"] = OFFICIAL_MNIST["test"]
        split.setdefault("train", OFFICIAL_MNIST["train_pool"] - split["valid"])
    return split


def describe(cfg: dict[str, Any]) -> dict[str, Any]:
    """The ``study`` description :func:`srvae.report.render_report` prints in the report's header."""
    datasets = {}
    for name in cfg["study"]["datasets"]:
        ds = cfg["datasets"][name]
        datasets[name] = {
            "name": ds.get("description", name),
            "source": ds["source"],
            "split": _split(ds),
            "binarisation": "dynamic: training images re-binarised every epoch; validation and test "
                            f"binarised once (seed {ds['binarisation_seed']})",
        }
    train = cfg["train"]
    return {
        "datasets": datasets,
        "training": {key: train[key] for key in ("epochs", "batch_size", "lr", "kl_warmup_epochs") if key in train}
        | {"per-model overrides": ", ".join(f"{m}: {cfg['models'][m]['train']}" for m in cfg["study"]["models"]
                                            if cfg["models"][m].get("train")) or "none"},
        "k": cfg["evaluate"]["k"],
        "models": {m: {key: cfg["models"][m][key] for key in ("label", "reported", "class")}
                   for m in cfg["study"]["models"]},
    }


def aggregate_study(cfg: dict[str, Any]) -> None:
    """Collect every run of the study into ``<results>/summary.csv``, ``curves.csv``, ``kl_per_layer.csv``."""
    aggregate([run_dir(cfg, *run) for run in runs(cfg)], Path(cfg["results_dir"]))


def report_study(cfg: dict[str, Any]) -> None:
    """Render ``<reports>/tables.md``, ``tables.tex`` and ``figures/`` from the aggregated results."""
    render_report(Path(cfg["results_dir"]), cfg["report"], describe(cfg), Path(cfg["reports_dir"]))
