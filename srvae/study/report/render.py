"""The study's report: NLL and speed tables (Markdown and LaTeX) and figures, from the aggregated CSVs.

Compares the reproduced importance-weighted test NLL with the numbers printed in Apostolopoulou et al.
2020 (arXiv:2007.05166, Tables 1-3) and Burda et al. 2016 (:mod:`srvae.study.report.reported`). All numbers are
formatted and the best cells marked here, so that the Jinja2 templates (``templates/tables.{md,tex}.j2``,
shipped with the package) only lay them out.

``render_report(results_dir, settings, study, out_dir)`` takes the config's ``report:`` settings
(:class:`~srvae.study.config.ReportSettings`) and the study's :class:`~.description.StudyDescription`
(:func:`~.description.describe` makes it from the config; a test may write one by hand).
"""

from __future__ import annotations

import base64
import html
import math
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import jinja2
import numpy as np
import pandas as pd

from srvae.errors import UserError
from srvae.infra.atomic_io import write_text

from ..config import ReportSettings, StudyConfig
from ..data.sources import PAPER_DATA_NAMES
from ..run import paths
from .aggregate import SLOPE_MIN_EPOCHS
from .description import StudyDescription, describe
from .provenance import git_commit, machine_info
from .reported import check_reported_ids, in_paper, load_reported

#: the Jinja2 templates, package data of ``srvae.study``
TEMPLATES_DIR = Path(__file__).with_name("templates")
STUDY_KEYS = ("datasets", "training", "k", "models", "seeds")
#: summary columns that may be empty: the convergence check with a larger K runs on chosen seeds only, bits per
#: dimension exist for continuous data only, a run of one epoch has no validation slope, and a speed.json older than
#: the record of the machine's load has none
OPTIONAL_COLUMNS = ["k_check", "nll_check", "bits_per_dim", "valid_slope", "sampling_load", "sampling_cpus"]
#: the summary's text columns; every other column must hold finite numbers
TEXT_COLUMNS = ("dataset", "model", "class", "device", "device_name", "eval_device_name", "sampling_device",
                "sampling_device_name", "run_dir")
DEVICE_KIND = {"cpu": "CPU", "cuda": "GPU", "mps": "Apple GPU"}
#: a sampling speed whose repeats (interquartile range / median) or seeds (sd / mean) spread by more is noise
NOISE = 0.10
#: the SeRe-VAE paper's tables, in the order the report shows them
TABLE_TITLES = {"table1": "Table 1: MLP layers", "table2": "Table 2: ResNet layers", "table3": "Table 3: flows"}
#: marks a model still improving at the end of training (:func:`still_improving`)
IMPROVING = "↗"
#: marks the best two models of a table where the best is not significantly better than the runner-up
TIED = "≈"


class ReportError(UserError, ValueError):
    """The aggregated results do not match the study description (missing, stale or foreign runs)."""


# --- formatting ----------------------------------------------------------------------------------

#: LaTeX for every character of the report's text that pdflatex cannot print as typed: LaTeX's specials, the
#: characters the default (OT1) font encoding prints as others (< > | "), and the non-ASCII symbols of the
#: code, the configs and reported.yaml. The document needs no Unicode support (pdflatex's T1 fonts would be
#: bitmaps drawn by Metafont unless cm-super is installed); tests/study/test_latex.py checks the table is complete
_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
          "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
          "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}",
          "×": r"$\times$", "÷": r"$\div$", "±": r"$\pm$", "−": "$-$", "·": r"$\cdot$", "≈": r"$\approx$",
          "≤": r"$\leq$", "≥": r"$\geq$", "→": r"$\rightarrow$", "←": r"$\leftarrow$", IMPROVING: r"$\nearrow$",
          "√": r"$\surd$", "α": r"$\alpha$", "β": r"$\beta$", "γ": r"$\gamma$", "ε": r"$\varepsilon$",
          "λ": r"$\lambda$", "μ": r"$\mu$", "σ": r"$\sigma$", "Δ": r"$\Delta$", "Σ": r"$\Sigma$",
          "—": "---", "–": "--", "…": r"\dots{}", "†": r"\dag{}", "‡": r"\ddag{}", "‘": "`", "’": "'",
          "“": "``", "”": "''", "ø": r"{\o}", "Ø": r"{\O}", "ß": r"{\ss}", "\u00a0": "~"}
#: combining accents (of a letter decomposed by NFD: é = e + U+0301) as LaTeX accent commands
_ACCENTS = {"\u0300": "`", "\u0301": "'", "\u0302": "^", "\u0303": "~", "\u0304": "=", "\u0308": '"',
            "\u030a": "r", "\u030c": "v", "\u0327": "c"}


def latex_escape(text) -> str:
    """``text`` as LaTeX that pdflatex prints as written, in plain ASCII: specials escaped, symbols and accented
    letters as LaTeX commands, straight double quotes paired into `` and ''. A character it cannot write is an
    error, not a character that pdflatex would drop with only a warning in its log."""
    out, quote_open = [], False
    for c in unicodedata.normalize("NFD", str(text)):
        if c in _ACCENTS:  # on the character before it
            out.append(rf"\{_ACCENTS[c]}{{{out.pop() if out else ''}}}")
        elif c == '"':
            out.append("''" if quote_open else "``")
            quote_open = not quote_open
        elif c in _LATEX:
            out.append(_LATEX[c])
        elif c.isascii():
            out.append(c)
        else:
            raise ReportError(f"no LaTeX for {c!r} (U+{ord(c):04X}) in {str(text)!r}: add it to render._LATEX")
    # two symbols in a row make "$\times$$-$", whose "$$" would open display math: join them into one formula
    return re.sub(r"(?<!\\)\$\$", "", "".join(out))


@dataclass(frozen=True)
class Markup:
    """How one output format writes ±, a missing value, signs, bold and plain text."""
    pm: str
    missing: str
    minus: str
    plus: str
    bold: Callable[[str], str]
    escape: Callable[[str], str]
    dagger: str  # marks a noisy measurement
    ddagger: str  # marks a number that is not comparable (see the table's note)


MARKDOWN = Markup(" ± ", "—", "-", "+", lambda s: f"**{s}**", lambda s: str(s).replace("|", r"\|"), "†", "‡")
LATEX = Markup(r" $\pm$ ", "---", "$-$", "$+$", lambda s: rf"\textbf{{{s}}}", latex_escape, r"\dag{}", r"\ddag{}")


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

def still_improving(runs: pd.DataFrame, threshold: float) -> bool:
    """Whether a model was still improving when training stopped: the mean over its runs of the validation
    bound's slope (``valid_slope``, nats per epoch; NaN for a run too short to have one, left out) exceeds
    ``threshold``. Its number may then change with more training, and so may a comparison with it."""
    slopes = runs["valid_slope"].dropna()
    return bool(len(slopes) and slopes.mean() > threshold)


def improving_note(threshold: float) -> str:
    """The tables' footnote for :data:`IMPROVING`: the rule and its threshold."""
    return (f"{IMPROVING}: still improving, more training may change the number: the mean over the model's runs "
            f"of the least-squares slope of the validation bound (the one each run selected its epoch on) over "
            f"the last tenth of training (at least {SLOPE_MIN_EPOCHS} epochs) exceeds {threshold:g} nats per "
            f"epoch (config key report.improving_threshold); a run of one epoch has no slope.")


def protocol_text(protocol: dict) -> str:
    """How a published number was estimated, in a few words: ``K = 5000, dynamic`` (binary data) or ``exact
    log-density, logit space (λ = 0.05), CIFAR-10, with flips`` (continuous data, Table 3)."""
    if "estimate" in protocol:
        estimate = "exact log-density" if protocol["estimate"] == "exact" else "ELBO"
        return (f"{estimate}, logit space (λ = {protocol['logit_lambda']:g}), {PAPER_DATA_NAMES[protocol['data']]}, "
                + ("with flips" if protocol["flips"] else "no flips"))
    k = "K unknown" if protocol["k"] is None else f"K = {protocol['k']:,}"
    return f"{k}, {protocol['binarisation'] or 'binarisation unknown'}"


def log_likelihood_data(ds: dict) -> bool:
    """Whether dataset ``ds`` holds dequantised images in logit space (Table 3's data): its numbers are then
    log-likelihoods, higher is better, throughout the report."""
    return ds["transform"] == "dequantise_logit"


def protocol_gaps(protocol: dict, k: int, ds: dict) -> list[str]:
    """How a published number's estimate differs from this study's own on dataset ``ds`` (none: comparable).

    Binary data: another or an unknown K, a binarisation other than dynamic, or a study that does not run on the
    full MNIST split. Continuous data (Table 3; the estimate, exact or ELBO, is matched per column): a study
    not in logit space or not on the whole of the published number's data set, another λ, other flips.
    """
    gaps = []
    if "estimate" in protocol:
        if not log_likelihood_data(ds):
            gaps.append("this study is not in logit space")
        if protocol["data"] != ds["paper_data"] or not ds["full"]:
            gaps.append(f"this study is not on the whole {PAPER_DATA_NAMES[protocol['data']]} data set")
        if protocol["logit_lambda"] != ds["logit_lambda"]:
            gaps.append(f"λ = {protocol['logit_lambda']:g}")
        if protocol["flips"] != ds["hflip"]:
            gaps.append("with flips" if protocol["flips"] else "no flips")
        return gaps
    if protocol["binarisation"] != "dynamic":
        gaps.append(f"{protocol['binarisation'] or 'unknown'} binarisation")
    if protocol["k"] != k:
        gaps.append("K unknown" if protocol["k"] is None else f"K = {protocol['k']:,}")
    if not ds["full"]:
        gaps.append("this study is not on full MNIST")
    return gaps


def same_protocol(protocol: dict, k: int, ds: dict) -> bool:
    """Whether a published number was estimated as this study estimates its own on dataset ``ds``
    (:func:`protocol_gaps`; otherwise Δ would compare different things)."""
    return not protocol_gaps(protocol, k, ds)


def best_marks(nll: dict[str, float], pairs: pd.DataFrame) -> dict[str, str]:
    """How a table marks its best model (``nll``: model → mean test NLL; ``pairs``: the table's paired comparisons):
    ``bold`` when it is significantly better than the runner-up (Holm-adjusted p below 5%), else ``tied`` on
    both; nothing for a table of one model."""
    if len(nll) < 2:
        return {}
    best, runner = sorted(nll, key=nll.get)[:2]
    found = pairs[pairs["model_a"].isin([best, runner]) & pairs["model_b"].isin([best, runner])
                  & (pairs["model_a"] != pairs["model_b"])]
    if found.empty:
        raise ReportError(f"{paths.COMPARISONS} has no comparison of {best!r} with {runner!r}, the best model of "
                          f"their table and the runner-up: it is stale; aggregate again")
    c = found.iloc[0]
    better = (c["delta_nll"] < 0) == (c["model_a"] == best)  # the gap is A − B
    return {best: "bold"} if bool(c["significant"]) and better else {best: "tied", runner: "tied"}


def _marked(cell: str, mark: str | None, m: Markup) -> str:
    """A best cell in bold, a tied one followed by :data:`TIED`."""
    return m.bold(cell) if mark == "bold" else cell + " " + m.escape(TIED) if mark == "tied" else cell


def best_note(log_likelihood: bool) -> str:
    """The tables' footnote for the bold and :data:`TIED` marks."""
    return (f"Bold: the best {'log-likelihood' if log_likelihood else 'NLL'}, significantly better than the "
            f"runner-up's (Holm p below 5% in the paired comparisons, which always include that pair); {TIED}: the "
            f"best two, tied (their gap is not significant).")


def _nll_rows(runs: pd.DataFrame, models: dict, reported: dict, k: int, ds: dict, decimals: int, threshold: float,
              m: Markup, pairs: pd.DataFrame) -> list[dict]:
    """One row per model (config order): NLL mean ± sd over seeds against the published number, marked
    :data:`IMPROVING` where :func:`still_improving` (``improving``: whether it is).

    ``se``: the standard error of the seed-averaged NLL from the finite test set, the mean of the runs' own
    standard errors (every seed scores the same images, so their errors do not average out). Δ only where the
    published number used this study's protocol (:func:`same_protocol`). The best is marked by :func:`best_marks`.
    """
    groups = {name: runs[runs["model"] == name] for name in models}
    marks = best_marks({name: g["nll"].mean() for name, g in groups.items()}, pairs)
    rows = []
    for name, g in groups.items():
        nll = g["nll"].mean()
        rid = models[name]["reported"]
        cell = _mean_sd(g["nll"], m, decimals)
        model_k = models[name].get("k", k)
        improving = still_improving(g, threshold)
        row = {
            "label": m.escape(models[name]["label"] + ("" if model_k == k else f" (K = {model_k:,})")),
            "seeds": f"{len(g)} ({', '.join(str(s) for s in sorted(g['seed']))})",
            "nll": _marked(cell, marks.get(name), m) + _mark(improving, m),
            "improving": improving,
            "se": _num(g["nll_sem"].mean(), decimals, m),
            "reported": m.missing, "protocol": m.missing, "delta": m.missing,
            "elbo": _mean_sd(g["elbo"], m, decimals) + (" " + m.ddagger if models[name]["iw_samples"] > 1 else ""),
            "params": f"{int(g['num_parameters'].iloc[0]):,}",
        }
        if rid:
            paper_nll, protocol = -reported[rid]["log_px"], reported[rid]["protocol"]
            row |= {"reported": _num(paper_nll, decimals, m), "protocol": m.escape(protocol_text(protocol))}
            if same_protocol(protocol, model_k, ds):
                row["delta"] = _num(nll - paper_nll, decimals, m, signed=True)
        rows.append(row)
    return rows


def _log_likelihood_rows(runs: pd.DataFrame, models: dict, reported: dict, ds: dict, decimals: int,
                         threshold: float, m: Markup, pairs: pd.DataFrame) -> list[dict]:
    """Table 3: one row per model, the test log-likelihood in logit space (higher is better), mean ± sd over seeds,
    marked :data:`IMPROVING` where :func:`still_improving` (``improving``: whether it is).

    A flow's is exact; a variational model's is its importance-weighted bound with its K, next to its ELBO. Δ =
    reproduced − published (positive: better than published), against the column the published number is of
    (exact log-density or ELBO), only where it was measured on this dataset's data (:func:`same_protocol`). The best
    is marked by :func:`best_marks`.
    """
    groups = {name: runs[runs["model"] == name] for name in models}
    marks = best_marks({name: g["nll"].mean() for name, g in groups.items()}, pairs)
    rows = []
    for name, g in groups.items():
        spec, log_px = models[name], -g["nll"]
        cell = _mean_sd(log_px, m, decimals)
        improving = still_improving(g, threshold)
        row = {
            "label": m.escape(spec["label"]),
            "seeds": f"{len(g)} ({', '.join(str(s) for s in sorted(g['seed']))})",
            "log_px": _marked(cell, marks.get(name), m) + _mark(improving, m),
            "improving": improving,
            "estimate": "exact" if spec["exact"] else m.escape(f"IW bound, K = {spec['k']:,}"),
            "se": _num(g["nll_sem"].mean(), decimals, m),
            "elbo": _mean_sd(g["elbo"], m, decimals),
            "bits_per_dim": _mean_sd(g["bits_per_dim"], m, 3),
            "reported": m.missing, "protocol": m.missing, "delta": m.missing,
            "params": f"{int(g['num_parameters'].iloc[0]):,}",
            "train_seconds": _mean_sd(g["train_seconds"], m),
        }
        if spec["reported"]:
            entry = reported[spec["reported"]]
            protocol = entry["protocol"]
            row["reported"] = _num(entry["log_px"], decimals, m) + (m.pm + _num(entry["pm"], decimals, m)
                                                                     if "pm" in entry else "")
            row["protocol"] = m.escape(protocol_text(protocol))
            ours = {"exact": log_px.mean() if spec["exact"] else None, "elbo": g["elbo"].mean()}
            if "estimate" in protocol and same_protocol(protocol, spec["k"], ds) \
                    and ours[protocol["estimate"]] is not None:
                row["delta"] = _num(ours[protocol["estimate"]] - entry["log_px"], decimals, m, signed=True)
        rows.append(row)
    return rows


def _mark(improving: bool, m: Markup) -> str:
    return " " + m.escape(IMPROVING) if improving else ""


def _comparison_rows(comparisons: pd.DataFrame, models: dict, decimals: int, m: Markup,
                     log_likelihood: bool = False) -> list[dict]:
    """One row per pair: the paired gap ``NLL_A − NLL_B`` (``log_likelihood``, Table 3: ``log p_A − log p_B``,
    higher is better) ± its standard error, its degrees of freedom, its p-value and the p-value Holm-adjusted within
    its table (which decides "significant"). Where one side's log p is a bound and the other's exact (SeRe-MAF
    against a flow), the bound's label says so."""
    def p_text(p: float) -> str:
        return "< 0.001" if p < 0.001 else f"{p:.3f}"

    def label(name: str, other: str) -> str:
        bound = models[name].get("exact") is False and models[other].get("exact") is True
        return models[name]["label"] + (" (bound)" if bound else "")

    rows = []
    for _, c in comparisons.iterrows():
        seeds = str(c["seeds"]).split()
        a, b = c["model_a"], c["model_b"]
        delta = -c["delta_nll"] if log_likelihood else c["delta_nll"]
        rows.append({
            "pair": m.escape(f"{label(a, b)} − {label(b, a)}"),
            "delta": _num(delta, decimals, m, signed=True) + m.pm + _num(c["se"], decimals, m),
            "seeds": f"{len(seeds)} ({', '.join(seeds)})",
            "dof": f"{c['dof']:.1f}" if math.isfinite(c["dof"]) else m.missing,
            "p_value": m.escape(p_text(c["p_value"])), "p_holm": m.escape(p_text(c["p_holm"])),
            "significant": ("yes" if c["significant"] else "no") + (" (one seed)" if len(seeds) == 1 else ""),
        })
    return rows


def noisy(samples_per_s: pd.Series, spreads: pd.Series) -> bool:
    """Whether a sampling speed is too noisy to rank: a run's repeats, or the seeds, spread by over 10%."""
    across_seeds = samples_per_s.std(ddof=1) / samples_per_s.mean() if len(samples_per_s) > 1 else 0.0
    return bool(spreads.max() > NOISE or across_seeds > NOISE)


def busy(runs: pd.DataFrame) -> bool:
    """Whether any of the runs timed its sampling on a busy machine: a 1-minute load average above the machine's
    CPU count (more threads wanted a core than there were cores; a load not recorded counts as not busy)."""
    return bool((runs["sampling_load"] > runs["sampling_cpus"]).any())


def load_note(runs: pd.DataFrame) -> str:
    """What the speed table's footnote says about the machine's load while sampling was timed, as recorded."""
    recorded = runs.dropna(subset=["sampling_load", "sampling_cpus"])
    if recorded.empty:
        return "The machine's load while sampling was timed was not recorded (older speed.json files)."
    low, high = recorded["sampling_load"].min(), recorded["sampling_load"].max()
    cpus = "/".join(str(int(c)) for c in sorted(recorded["sampling_cpus"].unique()))
    unrecorded = len(runs) - len(recorded)
    return (f"The machine's 1-minute load average right after the timed repeats: {low:.1f}–{high:.1f} over the runs, "
            f"on {cpus} CPUs" + (f" (not recorded for {unrecorded} runs)" if unrecorded else "")
            + "; (busy): timed while the load exceeded the CPU count, so other work competed for the cores.")


def _speed_rows(runs: pd.DataFrame, models: dict, m: Markup) -> tuple[list[dict], bool]:
    """One row per model and device pair: sampling and training throughput, mean ± sd over seeds; and whether
    the rows' devices differ (then the table names them per row, else the header does).

    The fastest sampler is bold only if its measurement is neither noisy (:func:`noisy`; marked †) nor taken on a
    busy machine (:func:`busy`; marked "(busy)").
    """
    keys = ["model", "device_name", "sampling_device_name"]
    groups = [(name, train_dev, sample_dev, g) for name in models
              for (_, train_dev, sample_dev), g in runs[runs["model"] == name].groupby(keys)]
    flagged = {id(g): noisy(g["samples_per_s"], g["sampling_spread"]) for *_, g in groups}
    loaded = {id(g): busy(g) for *_, g in groups}
    clean = [g["samples_per_s"].mean() for *_, g in groups if not (flagged[id(g)] or loaded[id(g)])]
    best = max(clean, default=None)
    rows = []
    for name, train_dev, sample_dev, g in groups:
        cell = _mean_sd(g["samples_per_s"], m) + (" (busy)" if loaded[id(g)] else "")
        if flagged[id(g)]:
            cell += " " + m.dagger
        elif g["samples_per_s"].mean() == best and not loaded[id(g)]:
            cell = m.bold(cell)
        rows.append({
            "label": m.escape(models[name]["label"]),
            "sampling_device": m.escape(sample_dev), "train_device": m.escape(train_dev),
            "seeds": str(len(g)), "samples_per_s": cell,
            "train_images_per_s": _mean_sd(g["train_images_per_s"], m),
            "seconds_per_epoch": _mean_sd(g["seconds_per_epoch"], m),
        })
    return rows, len({(t, s) for _, t, s, _ in groups}) > 1


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


def _published_rows(reported: dict, section: str, k: int, ds: dict, decimals: int, m: Markup,
                    paper: bool) -> list[dict]:
    """Every published row listed in ``section`` (its ``section`` in the reported-values file) that is printed in
    the SeRe-VAE paper (``paper``) or is a reference point from another paper (not ``paper``), best first, each
    marked comparable with this study's protocol or not, and why not. ``nll``: the NLL, or on continuous data
    (Table 3) the log-likelihood as printed, ± as printed."""
    rows = []
    for rid, entry in sorted(reported.items(), key=lambda item: -item[1]["log_px"]):
        if entry.get("section") != section or in_paper(entry) != paper:
            continue
        gaps = protocol_gaps(entry["protocol"], k, ds)
        value = (_num(entry["log_px"], decimals, m) + (m.pm + _num(entry["pm"], decimals, m) if "pm" in entry else "")
                 if log_likelihood_data(ds) else _num(-entry["log_px"], decimals, m))
        rows.append({"model": m.escape(entry["model"]), "details": m.escape(entry["details"]),
                     "nll": value,
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
    configured = {(d, name, study["models"][name]["class"], seed) for d, ds in study["datasets"].items()
                  for name in ds["models"] for seed in study["seeds"]}
    rows = list(summary[["dataset", "model", "class", "seed"]].itertuples(index=False, name=None))
    found = set(rows)
    absent, foreign = sorted(configured - found), sorted(found - configured)
    repeated = sorted({r for r in rows if rows.count(r) > 1})
    if absent:
        raise ReportError(f"{paths.SUMMARY} has no runs for (dataset, model, class, seed) {absent}: run the "
                          f"workflow for them (training, evaluation, speed), then aggregate again")
    if foreign or repeated:
        raise ReportError(f"{paths.SUMMARY} has runs the config does not list {foreign} or lists twice "
                          f"{repeated}: it is stale; aggregate again")
    absent_columns = [col for col in OPTIONAL_COLUMNS if col not in summary.columns]
    if absent_columns:
        raise ReportError(f"{paths.SUMMARY} lacks column(s) {absent_columns}: it is stale; aggregate again")
    bad = []
    for col in summary.columns.difference(OPTIONAL_COLUMNS):
        values = summary[col]
        broken = values.isna() if col in TEXT_COLUMNS else ~np.isfinite(pd.to_numeric(values, errors="coerce"))
        bad += [(col, r["dataset"], r["model"], r["seed"]) for _, r in summary[broken].iterrows()]
    if bad:
        raise ReportError(f"{paths.SUMMARY} has missing or non-finite cells (column, dataset, model, seed) {bad}: "
                          f"aggregate again (the aggregation checks every run's files)")
    expected_k = summary["model"].map({name: spec.get("k", study["k"]) for name, spec in study["models"].items()})
    stale = sorted(set(summary.loc[summary["k"] != expected_k, "model"]))
    if stale:
        raise ReportError(f"runs of {stale} were evaluated with another K than the config's: rerun their evaluation")
    # a dataset's tables compare models on one test set: every run scored the same images
    scored = summary.groupby("dataset")["n_test"].unique()
    mixed = {d: sorted(int(n) for n in sizes) for d, sizes in scored.items() if len(sizes) > 1}
    if mixed:
        raise ReportError(f"runs of one dataset scored test sets of different sizes {mixed}: some were evaluated on "
                          f"another split (the config's split changed since); rerun their evaluation")
    # the table prints one parameter count per model: its seeds must have trained the same network
    sizes = summary.groupby(["dataset", "model"])["num_parameters"].nunique()
    changed = [f"{d}/{m}" for d, m in sizes[sizes > 1].index]
    if changed:
        raise ReportError(f"the seeds of {changed} trained networks of different sizes (num_parameters in train.json):"
                          f" the model changed between runs; retrain them all with one version")


def _setting_warnings(ds: dict, device_kinds: list[str]) -> list[str]:
    """A warning unless the dataset is the paper's whole data (the source's official splits)."""
    if ds["full"]:
        return []
    split, paper = ds["split"], ds["paper_split"]
    n_images = split["train"] + split["valid"] + split["test"]
    return [f"This is a {n_images:,}-image {'/'.join(device_kinds)} study, not the paper's setting "
            f"({PAPER_DATA_NAMES[ds['paper_data']]}: {paper['train']:,} training and {paper['test']:,} test images): "
            f"numbers are not comparable to the reported ones in absolute terms; compare the models with each other."]


def _items(pairs: dict, m: Markup) -> list[dict]:
    return [{"key": m.escape(k), "value": m.escape(v)} for k, v in pairs.items()]


def _general_facts(summary: pd.DataFrame, study: dict) -> dict[str, str]:
    """Budget, evaluation, devices of the runs and the report machine, as printable text."""
    def devices(column: str) -> str:
        return ", ".join(sorted(summary[column].unique()))

    machine = study["machine"] if "machine" in study else machine_info()
    exceptions = "; ".join(f"{', '.join(e['models'])}: {', '.join(e['settings'])}"
                           for e in study["training"]["exceptions"])
    return {
        "Training budget": study["training"]["budget"] + (" (every model but those below)" if exceptions else ""),
        **({"Trained otherwise": exceptions} if exceptions else {}),
        "Evaluation": f"importance-weighted NLL with K = {study['k']} samples per test example",
        "Devices of the runs": f"training: {devices('device_name')}; evaluation: "
                               f"{devices('eval_device_name')}; sampling: {devices('sampling_device_name')}",
        "Report machine": "; ".join(f"{k}: {v}" for k, v in machine.items()),
    }


def _dataset_section(runs: pd.DataFrame, comparisons: pd.DataFrame, name: str, ds: dict, models: dict,
                     reported: dict, k: int, decimals: int, threshold: float, m: Markup) -> dict:
    """One dataset's description, warning and tables; a table's heading says when it compares under-trained
    models (any of them :func:`still_improving`)."""
    kinds = sorted({DEVICE_KIND.get(d, d) for d in runs["device"]})
    split = ds["split"]
    facts = {"Data": f"{ds['name']} ({ds['source']})",
             "Split": f"{split['train']:,} train / {split['valid']:,} validation / {split['test']:,} test",
             "Pre-processing": ds["preprocessing"],
             "Test examples scored": f"{runs['n_test'].iloc[0]:,}"}  # one size a dataset (_check)
    continuous = log_likelihood_data(ds)
    delta_heading = m.escape("Δ log p(x) (nats)" if continuous else "Δ NLL (nats)")
    tables = []
    for table, title in TABLE_TITLES.items():  # a section per paper table, its models in config order
        members = {name: spec for name, spec in models.items() if spec["table"] == table}
        if not members:
            continue
        pairs = comparisons[comparisons["model_a"].isin(members) & comparisons["model_b"].isin(members)]
        rows = (_log_likelihood_rows(runs, members, reported, ds, decimals, threshold, m, pairs) if continuous
                else _nll_rows(runs, members, reported, k, ds, decimals, threshold, m, pairs))
        under_trained = any(row["improving"] for row in rows)
        tables.append({"title": m.escape(title), "kind": "log_likelihood" if continuous else "nll",
                       "heading": m.escape(title + (f" — compares under-trained models ({IMPROVING})"
                                                    if under_trained else "")),
                       "nll_rows": [] if continuous else rows, "log_likelihood_rows": rows if continuous else [],
                       "comparison_rows": _comparison_rows(pairs, models, decimals, m, continuous),
                       **dict(zip(("speed_rows", "speed_devices"), _speed_rows(runs, members, m))),
                       "load_note": m.escape(load_note(runs[runs["model"].isin(members)])),
                       "published_rows": _published_rows(reported, table, k, ds, decimals, m, paper=True),
                       "reference_rows": _published_rows(reported, table, k, ds, decimals, m, paper=False),
                       "best_note": m.escape(best_note(continuous)),
                       "value_heading": m.escape("log p(x) (nats)" if continuous else "NLL (nats)"),
                       "delta_heading": delta_heading,
                       "k_check_rows": _k_check_rows(runs, members, decimals, m)})
    table_of = {name: spec["table"] for name, spec in models.items()}
    across = comparisons[comparisons["model_a"].map(table_of) != comparisons["model_b"].map(table_of)]
    return {"title": m.escape(ds["name"]), "key": m.escape(name),
            "warnings": [m.escape(w) for w in _setting_warnings(ds, kinds)],
            "facts": _items(facts, m), "tables": tables,
            "cross_comparison_rows": _comparison_rows(across, models, decimals, m, continuous),
            "delta_heading": delta_heading}


# --- the report ----------------------------------------------------------------------------------

_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body {{ font-family: sans-serif; max-width: 80em; margin: 2em auto; }}
table {{ border-collapse: collapse; margin: 1em 0; }} th, td {{ border-bottom: 1px solid #ccc; padding: 0.25em 0.6em; }}
img {{ max-width: 100%; }} blockquote {{ background: #fff3cd; margin: 1em 0; padding: 0.5em 1em; }}</style>
</head><body>
{body}
</body></html>
"""


def html_page(tables_md: str, title: str, base: Path) -> str:
    """The Markdown tables as a standalone HTML page, its figures embedded as data URIs (read from ``base``, the
    directory the Markdown's image paths are relative to): `snakemake --report` shows the page from a data URI,
    where a relative image path resolves to nothing."""
    import markdown

    def embed(match: re.Match) -> str:
        encoded = base64.b64encode((base / html.unescape(match[1])).read_bytes()).decode("ascii")
        return f'src="data:image/png;base64,{encoded}"'

    body = re.sub(r'src="([^":]+\.png)"', embed, markdown.markdown(tables_md, extensions=["tables"]))
    return _HTML.format(title=html.escape(title), body=body)


def _environments(templates_dir: Path) -> tuple[jinja2.Environment, jinja2.Environment]:
    loader = jinja2.FileSystemLoader(str(templates_dir))
    common = dict(loader=loader, undefined=jinja2.StrictUndefined, autoescape=False,
                  trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    latex = jinja2.Environment(block_start_string=r"\BLOCK{", block_end_string="}",
                               variable_start_string=r"\VAR{", variable_end_string="}",
                               comment_start_string=r"\#{", comment_end_string="}",
                               line_statement_prefix="%%", line_comment_prefix="%#", **common)
    return jinja2.Environment(**common), latex


def _published_same_protocol(models: dict, reported: dict, k: int, ds: dict) -> dict[str, float]:
    """Label → published NLL of the models whose published number was estimated as this dataset's runs are."""
    if ds["transform"] != "binarise":  # Table 3's log-likelihoods: their figure has no published marks yet
        return {}
    return {spec["label"]: -reported[spec["reported"]]["log_px"] for spec in models.values()
            if spec["reported"] and same_protocol(reported[spec["reported"]]["protocol"], spec.get("k", k), ds)}


def _figures(summary, curves, kl, dataset: str, labels: dict, tables: dict[str, str], published: dict[str, float],
             fig_dir: Path, continuous: bool) -> list[dict]:
    """Draw one dataset's figures; their titles and paths relative to the report. ``tables``: model → its paper
    table (a training-curve figure per table, of its models only); ``published``: label → the published NLL,
    for the models whose published number was estimated as here; ``continuous``: Table 3's data, shown as
    log-likelihoods (higher is better) as in its tables."""
    from functools import partial

    from . import figures  # seaborn takes seconds to import: only the report step pays for it

    rows = {name: df[df["dataset"] == dataset].assign(label=lambda d: d["model"].map(labels))
            for name, df in (("summary", summary), ("curves", curves), ("kl", kl))}
    colours = figures.palette([lab for mo, lab in labels.items() if mo in set(rows["summary"]["model"])])
    layered = [labels[mo] for mo, n in rows["summary"].groupby("model")["layers"].max().items() if n > 1]
    plots = [("nll_per_model", ("Test log-likelihood" if continuous else "Test NLL")
              + " per model, best first (mean ± sd over seeds; dots: seeds"
              + ("; squares: published, same protocol" if published else "") + ")",
              partial(figures.nll_per_model, published=published, log_likelihood=continuous), rows["summary"],
              colours)]
    on_dataset = set(rows["curves"]["model"])
    for table, title in TABLE_TITLES.items():
        members = {labels[mo] for mo, t in tables.items() if t == table and mo in on_dataset}
        if members:
            plots.append((f"training_curves_{table}", f"{title}: validation ELBO during training, whole run and "
                          "each model's second half (mean ± sd over seeds)", figures.training_curves,
                          rows["curves"], figures.palette([lab for lab in colours if lab in members])))
    if layered:
        plots.append(("kl_per_layer", "Mean test KL per stochastic layer (×: a collapsed layer, KL < "
                      f"{figures.COLLAPSED:g} nats)",
                      figures.kl_per_layer, rows["kl"][rows["kl"]["label"].isin(layered)],
                      figures.palette([lab for lab in colours if lab in layered])))
    out = []
    for stem, title, draw, data, fig_colours in plots:
        png, pdf = draw(data, fig_colours, fig_dir / f"{dataset}_{stem}")
        out.append({"title": title, "png": f"{fig_dir.name}/{png.name}",
                    "pdf": f"{fig_dir.name}/{pdf.name}"})
    return out


def render_report(results_dir: Path, settings: ReportSettings, study: StudyDescription, out_dir: Path,
                  templates_dir: Path = TEMPLATES_DIR) -> None:
    """Write ``out_dir``/tables.md, tables.tex and figures/ from ``results_dir``'s aggregated CSVs.

    The reported numbers come from ``settings.reported_file`` (relative to the working directory).
    """
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    summary, curves, kl, comparisons = (pd.read_csv(results_dir / f)
                                        for f in paths.AGGREGATED)
    _check(summary, study)
    models, decimals, threshold = study["models"], settings.decimals, settings.improving_threshold
    reported_file = Path(settings.reported_file)
    check_reported_ids([spec["reported"] for spec in models.values()], reported_file)
    reported = load_reported(reported_file)
    labels = {name: spec["label"] for name, spec in models.items()}
    tables = {name: spec["table"] for name, spec in models.items()}
    figs = {d: _figures(summary, curves, kl, d, labels, tables,
                        _published_same_protocol(models, reported, study["k"], ds), out_dir / paths.FIGURES,
                        log_likelihood_data(ds))
            for d, ds in study["datasets"].items()}

    meta = {"title": settings.title, "commit": git_commit(Path.cwd()), "n_runs": len(summary), "k": study["k"],
            "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    general = _general_facts(summary, study)

    def context(m: Markup) -> dict:
        sections = [_dataset_section(summary[summary["dataset"] == name],
                                     comparisons[comparisons["dataset"] == name], name, ds,
                                     {model: models[model] for model in ds["models"]}, reported,
                                     study["k"], decimals, threshold, m) | {"figures": figs[name]}
                    for name, ds in study["datasets"].items()]
        return {**{k: m.escape(v) for k, v in meta.items()}, "settings": _items(general, m),
                "improving_note": m.escape(improving_note(threshold)),
                "datasets": sections, "reported": _reported_rows(models, reported, m)}

    markdown_env, latex_env = _environments(Path(templates_dir))
    tables_md = markdown_env.get_template("tables.md.j2").render(context(MARKDOWN))
    write_text(out_dir / paths.TABLES_MD, tables_md)
    write_text(out_dir / paths.TABLES_HTML, html_page(tables_md, meta["title"], out_dir))
    write_text(out_dir / paths.TABLES_TEX, latex_env.get_template("tables.tex.j2").render(context(LATEX)))


def report_study(cfg: StudyConfig) -> None:
    """Render ``<reports>/tables.md``, ``tables.tex``, ``tables.html`` and ``figures/`` from the aggregated results."""
    render_report(Path(cfg.results_dir), cfg.report, describe(cfg), Path(cfg.reports_dir))
