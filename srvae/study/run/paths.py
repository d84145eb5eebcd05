"""Where the study's files live, stated once: a run's directory and every artefact's file name.

One run is (dataset, model, seed); its steps read and write only ``<results_dir>/<dataset>/<model>/seed<seed>/``
and log to ``logs/<dataset>/<model>/seed<seed>/<step>.log``. The steps that write the files, aggregation that
reads them, ``srvae status`` and the Snakemake rules (the Snakefile imports this module) all take the names from
here, so that a name changes in one place.
"""

from __future__ import annotations

import re
from pathlib import Path

# a run's files, by the step that writes them
MODEL = "model.pt"  # train: best-on-validation weights and how to rebuild the model
METRICS = "metrics.csv"  # train: one row per epoch
TRAIN = "train.json"  # train: budget, cost, selection, hyper-parameters
CHECKPOINT = "checkpoint.pt"  # train: the resume point while training, removed at the end
EVAL = "eval.json"  # evaluate: test IW-NLL with K samples, test ELBO, KL per stochastic layer
LOG_PX = "log_px.npy"  # evaluate: every test image's log p̂_K(x), for paired comparisons
SPEED = "speed.json"  # speed: sampling speed
STATUS = "status.json"  # every step: what it is doing now (srvae status)

#: step → the files it writes, in the order its Snakemake rule lists them
OUTPUTS: dict[str, tuple[str, ...]] = {"train": (MODEL, METRICS, TRAIN), "evaluate": (EVAL, LOG_PX), "speed": (SPEED,)}
#: step → how error messages name its job, so that a user knows what to rerun
JOB_NAMES = {"train": "training", "evaluate": "evaluation", "speed": "sampling-speed"}

# the study's files: aggregated from every run (under results_dir), and rendered (under reports_dir)
SUMMARY, CURVES, KL_PER_LAYER, COMPARISONS = "summary.csv", "curves.csv", "kl_per_layer.csv", "comparisons.csv"
AGGREGATED = (SUMMARY, CURVES, KL_PER_LAYER, COMPARISONS)
TABLES_MD, TABLES_TEX, TABLES_HTML, FIGURES = "tables.md", "tables.tex", "tables.html", "figures"
CONFIGS = "configs"  # under results_dir: each validated config a study ran with (srvae.study.config.write_resolved)
LOGS = "logs"  # under the working directory

#: a run's place below results_dir (and below logs/), as a pattern of Snakemake wildcards
RUN = "{dataset}/{model}/seed{seed}"
_RUN = re.compile(r"(?P<dataset>[^/]+)/(?P<model>[^/]+)/seed(?P<seed>\d+)")


def run_dir(results_dir: str | Path, dataset: str, model: str, seed: int) -> Path:
    """The directory of one run's files."""
    return Path(results_dir) / RUN.format(dataset=dataset, model=model, seed=seed)


def log_dir(dataset: str, model: str, seed: int) -> Path:
    """The directory of one run's step logs."""
    return Path(LOGS) / RUN.format(dataset=dataset, model=model, seed=seed)


def run_identity(path: str | Path) -> tuple[str, str, int] | None:
    """(dataset, model, seed) of a run directory made by :func:`run_dir`; None for any other path."""
    match = _RUN.fullmatch("/".join(Path(path).parts[-3:]))
    return None if match is None else (match["dataset"], match["model"], int(match["seed"]))


def lock_file(step: str) -> str:
    """The lock a run's ``step`` holds while it runs (one process per step of a run)."""
    return f".{step}.lock"


def producer(name: str) -> str:
    """The job that writes a run's file ``name``."""
    return next(JOB_NAMES[step] for step, files in OUTPUTS.items() if name in files)
