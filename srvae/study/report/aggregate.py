"""Collect the per-run result files of the study into tidy CSV tables.

Each run directory ``results/<dataset>/<model>/seed<seed>/`` holds ``train.json`` and ``metrics.csv``
(training), ``eval.json`` and ``log_px.npy`` (importance-weighted test NLL with K samples, Burda et al. 2016,
as in Tables 1-2 of Apostolopoulou et al. 2020, arXiv:2007.05166, and every test image's estimate) and
``speed.json`` (sampling speed). :func:`aggregate` reads every *expected* run (the caller lists them from the
config) and writes

- ``summary.csv``: one row per run (metrics, cost, devices, and ``valid_slope``: whether training was still
  improving, :func:`validation_slope`),
- ``curves.csv``: one row per run and epoch (training and validation ELBO),
- ``kl_per_layer.csv``: one row per run and stochastic layer (mean test KL),
- ``comparisons.csv``: one row per dataset and requested pair of models, the paired gap in test NLL with its
  standard error, degrees of freedom and p-value (:mod:`srvae.study.report.compare`), and the p-value adjusted by
  Holm's method within its family (``family``: the paper table of both models, or ``across`` tables). Each
  table's best model (lowest mean NLL) against its runner-up is always among them, in the table's family: the
  report calls a model best only where that gap is significant (:func:`best_pairs`).

A missing file, unreadable JSON, a missing field or a non-finite metric is an error naming the run
and the job to rerun: a failed run never becomes a table cell.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd

from srvae.errors import UserError
from srvae.infra.atomic_io import write_text

from ..config import StudyConfig
from ..run import paths
from .compare import ALPHA, holm, paired_difference

#: fields read from each JSON file; the numeric ones must be finite
REQUIRED = {
    paths.TRAIN: {
        "text": ("dataset", "model", "class", "device", "device_name"),
        "number": ("seed", "num_parameters", "epochs", "best_epoch", "train_seconds",
                   "seconds_per_epoch", "train_images_per_s"),
    },
    paths.EVAL: {
        "text": ("device_name",),
        "number": ("nll", "nll_sem", "elbo", "k", "n_test", "eval_seconds"),
    },
    paths.SPEED: {
        "text": ("device", "device_name"),
        "number": ("samples_per_s", "seconds_median", "relative_spread", "n_samples", "repeats"),
    },
}

CURVE_COLUMNS = ("epoch", "train_elbo", "valid_elbo", "beta", "seconds")
#: the validation bound's slope is fitted over the last tenth of a run's epochs, and over at least this many
SLOPE_MIN_EPOCHS = 2
T = TypeVar("T")


class RunResultError(UserError, ValueError):
    """A run's result files are missing, unreadable or hold non-finite metrics."""


def _problem(run_dir: Path, name: str, what: str) -> str:
    return (f"{run_dir / name}: {what} -> rerun the {paths.producer(name)} job of this run "
            f"(delete the file if it exists; the workflow rebuilds it)")


def _load(run_dir: Path, name: str, read: Callable[[Path], T], errors: tuple[type[Exception], ...],
          unreadable: str) -> T:
    """``read(run_dir / name)``; a missing file, or one that fails with one of ``errors``, is a RunResultError
    naming the run and the job to rerun (``unreadable``: what the message calls a failed read)."""
    path = run_dir / name
    if not path.is_file():
        raise RunResultError(_problem(run_dir, name, "missing"))
    try:
        return read(path)
    except errors as err:
        raise RunResultError(_problem(run_dir, name, f"{unreadable} ({err})")) from err


def _read_json(run_dir: Path, name: str) -> dict:
    """One JSON file of a run with its required fields checked; raises RunResultError."""
    data = _load(run_dir, name, lambda path: json.loads(path.read_text()),
                 (OSError, UnicodeDecodeError, json.JSONDecodeError), "unreadable JSON")
    if not isinstance(data, dict):
        raise RunResultError(_problem(run_dir, name, "not a JSON object"))
    fields = REQUIRED[name]
    missing = [k for k in fields["text"] + fields["number"] if k not in data]
    if missing:
        raise RunResultError(_problem(run_dir, name, f"missing field(s) {missing}"))
    bad = [k for k in fields["number"] if not _is_finite_number(data[k])]
    if bad:
        shown = {k: data[k] for k in bad}
        raise RunResultError(_problem(run_dir, name, f"non-finite or non-numeric metric(s) {shown}"))
    return data


def _is_finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number_or_nan(value) -> float:
    return float(value) if _is_finite_number(value) else math.nan


def _read_curves(run_dir: Path, epochs: int, selected: str) -> pd.DataFrame:
    """The per-epoch metrics of a run (:data:`CURVE_COLUMNS` and the ``selected`` validation metric): epochs
    1..``epochs`` (train.json's count), every value finite."""
    name = paths.METRICS
    # pandas' parser and empty-data errors are ValueErrors
    curves = _load(run_dir, name, pd.read_csv, (OSError, ValueError), "unreadable CSV")
    columns = list(dict.fromkeys((*CURVE_COLUMNS, selected)))
    missing = [c for c in columns if c not in curves.columns]
    if missing:
        raise RunResultError(_problem(run_dir, name, f"missing column(s) {missing}"))
    if curves.empty:
        raise RunResultError(_problem(run_dir, name, "no epochs recorded"))
    values = curves[columns].apply(pd.to_numeric, errors="coerce")
    bad = values.columns[~np.isfinite(values).all()].tolist()
    if bad:
        raise RunResultError(_problem(run_dir, name, f"non-finite values in column(s) {bad}"))
    if values["epoch"].tolist() != list(range(1, epochs + 1)):
        raise RunResultError(_problem(run_dir, name, f"records epochs {values['epoch'].tolist()}, not 1..{epochs} "
                                                     f"as train.json says (truncated or from another run)"))
    return values


def validation_slope(values: Sequence[float]) -> float:
    """The least-squares slope, in nats per epoch, of a run's per-epoch validation bound (higher is better) over
    its last tenth of epochs (``ceil(epochs / 10)``, at least :data:`SLOPE_MIN_EPOCHS`): positive while the
    model is still improving. NaN for a run shorter than that minimum (one point has no slope)."""
    if len(values) < SLOPE_MIN_EPOCHS:
        return math.nan
    window = max(SLOPE_MIN_EPOCHS, math.ceil(len(values) / 10))
    return float(np.polyfit(np.arange(window), np.asarray(values[-window:], dtype=float), 1)[0])


def _run_identity(run_dir: Path) -> tuple[str, str, int]:
    """(dataset, model, seed) of a run directory (:func:`srvae.study.run.paths.run_dir`)."""
    identity = paths.run_identity(run_dir)
    if identity is None:
        raise RunResultError(f"{run_dir}: not a run directory of the form {paths.RUN}")
    return identity


def _read_log_px(run_dir: Path, n_test: int) -> np.ndarray:
    """Every test image's ``log p̂_K(x)`` of a run: ``[n_test]`` finite values."""
    name = paths.LOG_PX
    log_px = _load(run_dir, name, lambda path: np.load(path, allow_pickle=False), (OSError, ValueError), "unreadable")
    if log_px.shape != (n_test,) or not np.isfinite(log_px).all():
        raise RunResultError(_problem(run_dir, name, f"expected {n_test} finite values, got shape {log_px.shape}"))
    return log_px


def read_run(run_dir: Path) -> tuple[dict, pd.DataFrame, pd.DataFrame, np.ndarray]:
    """One run's summary row, its curves, its per-layer KL and its per-image test ``log p̂``; raises RunResultError."""
    run_dir = Path(run_dir)
    dataset, model, seed = _run_identity(run_dir)
    train = _read_json(run_dir, paths.TRAIN)
    found = (train["dataset"], train["model"], train["seed"])
    if found != (dataset, model, seed):
        raise RunResultError(_problem(run_dir, paths.TRAIN,
                                      f"describes run {found}, not {(dataset, model, seed)}"))
    evaluation = _read_json(run_dir, paths.EVAL)
    kl = evaluation.get("kl_per_layer")
    if not isinstance(kl, list) or not kl or not all(_is_finite_number(v) for v in kl):
        raise RunResultError(_problem(run_dir, paths.EVAL,
                                      f"kl_per_layer must be a non-empty list of finite numbers, got {kl!r}"))
    latents = evaluation.get("latents_per_layer")
    if latents is not None and not (isinstance(latents, list) and len(latents) == len(kl)
                                    and all(isinstance(n, int) and n > 0 for n in latents)):
        raise RunResultError(_problem(run_dir, paths.EVAL, f"latents_per_layer must be null or one positive whole "
                                      f"number per layer ({len(kl)}), got {latents!r}"))
    log_px = _read_log_px(run_dir, evaluation["n_test"])
    speed = _read_json(run_dir, paths.SPEED)
    # the metric the run selected its epoch on; train.json records it since selection on the IW bound exists
    selected = train.get("selection", {}).get("metric", "valid_elbo")
    curves = _read_curves(run_dir, train["epochs"], selected)

    key = {"dataset": dataset, "model": model, "seed": seed}
    row = {
        **key,
        "class": train["class"],
        "nll": evaluation["nll"], "nll_sem": evaluation["nll_sem"], "elbo": evaluation["elbo"],
        "k": evaluation["k"], "n_test": evaluation["n_test"], "layers": len(kl),
        "num_parameters": train["num_parameters"], "epochs": train["epochs"],
        "best_epoch": train["best_epoch"], "valid_slope": validation_slope(curves[selected].tolist()),
        "train_seconds": train["train_seconds"],
        "seconds_per_epoch": train["seconds_per_epoch"],
        "train_images_per_s": train["train_images_per_s"],
        "device": train["device"], "device_name": train["device_name"],
        "eval_seconds": evaluation["eval_seconds"], "eval_device_name": evaluation["device_name"],
        "samples_per_s": speed["samples_per_s"], "sampling_seconds_median": speed["seconds_median"],
        "sampling_spread": speed["relative_spread"],
        "sampling_n_samples": speed["n_samples"], "sampling_repeats": speed["repeats"],
        "sampling_device": speed["device"], "sampling_device_name": speed["device_name"],
        # how busy the machine was when sampling was timed; NaN where speed.json predates the record
        "sampling_load": _number_or_nan(speed.get("load_1min")), "sampling_cpus": _number_or_nan(speed.get("cpus")),
        "run_dir": str(run_dir),
        # optional convergence check with a larger K (evaluate.check_k), NaN where not run
        "k_check": evaluation.get("check", {}).get("k", math.nan),
        "nll_check": evaluation.get("check", {}).get("nll", math.nan),
        # continuous data only: the test log-likelihood in bits per dimension of 8-bit pixel space
        "bits_per_dim": evaluation.get("bits_per_dim", math.nan),
    }
    kl_rows = pd.DataFrame({**key, "layer": range(1, len(kl) + 1), "kl": kl,
                            "latents": latents or [pd.NA] * len(kl)})  # empty: layers of one width
    return row, curves.assign(**key)[[*key, *CURVE_COLUMNS]], kl_rows, log_px


def best_pairs(summary: pd.DataFrame, tables: Mapping[str, str]) -> dict[str, list[tuple[str, str]]]:
    """Dataset → the (best, runner-up) pair of models, by mean test NLL over seeds, of each table (``tables``: model
    → paper table; a model not in it belongs to one table of its own, ``all``) with two models or more."""
    means = summary.groupby(["dataset", "model"], sort=False)["nll"].mean()
    out: dict[str, list[tuple[str, str]]] = {}
    for (dataset, _), group in means.groupby(
            [means.index.get_level_values("dataset"),
             means.index.get_level_values("model").map(lambda m: tables.get(m, "all"))], sort=False):
        ranked = group.sort_values().index.get_level_values("model")
        if len(ranked) > 1:
            out.setdefault(dataset, []).append((ranked[0], ranked[1]))
    return out


def _comparisons(log_px: dict[tuple[str, str, int], np.ndarray], pairs: Sequence[tuple[str, str]],
                 tables: Mapping[str, str], best: Mapping[str, list[tuple[str, str]]]) -> pd.DataFrame:
    """The paired gap of every requested pair, and of every table's best model against its runner-up (``best``,
    dataset → pairs) unless requested already, on every dataset where both models ran, over their common seeds;
    p-values Holm-adjusted per dataset and table (one table's comparisons are one family of claims)."""
    rows = []
    for dataset in dict.fromkeys(d for d, _, _ in log_px):
        requested = {frozenset(pair) for pair in pairs}
        extra = [pair for pair in best.get(dataset, []) if frozenset(pair) not in requested]
        for a, b in [*pairs, *extra]:
            seeds = sorted({s for d, m, s in log_px if (d, m) == (dataset, a)}
                           & {s for d, m, s in log_px if (d, m) == (dataset, b)})
            if not seeds:
                continue
            gap = paired_difference(-np.stack([log_px[dataset, a, s] for s in seeds]),
                                    -np.stack([log_px[dataset, b, s] for s in seeds]))
            table_a, table_b = tables.get(a, "all"), tables.get(b, "all")
            family = table_a if table_a == table_b else "across"
            rows.append({"dataset": dataset, "model_a": a, "model_b": b, "family": family,
                         "seeds": " ".join(map(str, seeds)), "images": gap.images, "delta_nll": gap.mean,
                         "se": gap.se, "dof": gap.dof, "p_value": gap.p_value})
    table = pd.DataFrame(rows, columns=["dataset", "model_a", "model_b", "family", "seeds", "images", "delta_nll",
                                        "se", "dof", "p_value"])
    table["p_holm"] = table.groupby(["dataset", "family"])["p_value"].transform(holm)
    table["significant"] = table["p_holm"] < ALPHA
    return table


def aggregate(run_dirs: Sequence[Path], out_dir: Path, pairs: Sequence[tuple[str, str]] = (),
              tables: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Read every expected run and write summary.csv, curves.csv, kl_per_layer.csv and comparisons.csv
    (the paired test-NLL gap of each of ``pairs`` of model names and of each table's best model against its
    runner-up, Holm-adjusted within each paper table of ``tables``, model name → table; without it, all of a
    dataset's comparisons are one family) to ``out_dir``.

    Checks every run before writing anything, and raises one RunResultError listing all broken
    runs. Returns the summary table.
    """
    if not run_dirs:
        raise RunResultError("no runs to aggregate: the config lists no dataset × model × seed")
    rows, curves, kls, log_px, problems = [], [], [], {}, []
    for run_dir in run_dirs:
        try:
            row, run_curves, run_kl, run_log_px = read_run(Path(run_dir))
        except RunResultError as err:
            problems.append(str(err))
            continue
        rows.append(row)
        curves.append(run_curves)
        kls.append(run_kl)
        log_px[row["dataset"], row["model"], row["seed"]] = run_log_px
    if problems:
        raise RunResultError(f"{len(problems)} of {len(run_dirs)} runs are incomplete:\n  "
                             + "\n  ".join(problems))
    summary = pd.DataFrame(rows)
    out_dir = Path(out_dir)
    write_text(out_dir / paths.SUMMARY, summary.to_csv(index=False))
    write_text(out_dir / paths.CURVES, pd.concat(curves, ignore_index=True).to_csv(index=False))
    write_text(out_dir / paths.KL_PER_LAYER, pd.concat(kls, ignore_index=True).to_csv(index=False))
    write_text(out_dir / paths.COMPARISONS, _comparisons(log_px, pairs, tables or {}, best_pairs(summary, tables or {}))
               .to_csv(index=False))
    return summary


def aggregate_study(cfg: StudyConfig) -> None:
    """Collect every run of the study into ``<results>/summary.csv``, ``curves.csv``, ``kl_per_layer.csv`` and
    ``comparisons.csv``."""
    aggregate([paths.run_dir(cfg.results_dir, *run) for run in cfg.runs()], Path(cfg.results_dir), cfg.comparisons(),
              cfg.model_tables())
