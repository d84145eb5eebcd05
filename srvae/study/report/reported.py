"""The published numbers the reproduction is compared with, kept in ``workflow/reported.yaml`` (the
config's ``report.reported_file``).

Transcribed from Apostolopoulou et al. 2020 (arXiv:2007.05166, Tables 1-3) and, for reference points that paper
does not print (Burda et al. 2016's VAEs, Chen et al. 2017's dynamically binarised rows, Papamakarios et al. 2017's
MNIST flows), from their own papers: :func:`in_paper` tells them apart. Each entry: ``table``, ``model``, ``details``, ``log_px`` (as
printed; the report shows NLL = -log_px), ``source``, ``protocol`` (``k``: importance samples of the
estimate or null; ``binarisation``: dynamic, static or null; an optional ``note``), an optional ``section`` (the
paper table whose report section lists the row among its published rows) and an optional ``note``.
Table 3's rows (continuous data) add to their protocol ``estimate`` (exact or elbo), ``space`` (logit),
``logit_lambda``, ``data`` (mnist or cifar10) and ``flips``, and may give ``pm``, the ± as printed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable

import yaml

from srvae.errors import UserError

REPORTED_FIELDS = ("table", "model", "details", "log_px", "source", "protocol")
BINARISATIONS = ("dynamic", "static", None)
#: the protocol of a row on continuous data (Table 3): key → a check of its value
CONTINUOUS_PROTOCOL = {
    "estimate": lambda v: v in ("exact", "elbo"),
    "space": lambda v: v == "logit",
    "logit_lambda": lambda v: isinstance(v, float) and 0 < v < 0.5,
    "data": lambda v: v in ("mnist", "cifar10"),
    "flips": lambda v: isinstance(v, bool),
}

#: how ``table`` begins for a row printed in the SeRe-VAE paper; any other row is a reference point from its own paper
PAPER_TABLE = "SeRe-VAE paper, "


def in_paper(entry: dict) -> bool:
    """Whether a published row is printed in the SeRe-VAE paper, not a reference point from another paper (which
    the report lists apart from the paper's rows)."""
    return entry["table"].startswith(PAPER_TABLE)


#: the report sections a published row can be listed in (``models.<entry>.table`` in the config)
SECTIONS = ("table1", "table2", "table3")


class ReportedValueError(UserError, ValueError):
    """The reported-values file is malformed, or the config names an id it does not define."""


def load_reported(path: Path) -> dict[str, dict]:
    """The published numbers, id -> {table, model, details, log_px, source, protocol[, section, note]}; checks
    every entry."""
    entries = yaml.safe_load(Path(path).read_text())
    if not isinstance(entries, dict):
        raise ReportedValueError(f"{path}: expected a mapping of id -> entry")
    for rid, entry in entries.items():
        missing = [f for f in REPORTED_FIELDS if not isinstance(entry, dict) or f not in entry]
        if missing:
            raise ReportedValueError(f"{path}: entry {rid!r} lacks field(s) {missing}")
        if not isinstance(entry["log_px"], (int, float)) or not math.isfinite(entry["log_px"]):
            raise ReportedValueError(f"{path}: entry {rid!r} has log_px {entry['log_px']!r}, "
                                     f"not a finite number")
        protocol = entry["protocol"]
        if (not isinstance(protocol, dict) or not {"k", "binarisation"} <= set(protocol)
                or not (protocol["k"] is None or isinstance(protocol["k"], int))
                or protocol["binarisation"] not in BINARISATIONS):
            raise ReportedValueError(f"{path}: entry {rid!r} needs protocol: {{k: <int or null>, binarisation: "
                                     f"dynamic | static | null}}, got {protocol!r}")
        if "estimate" in protocol and not all(key in protocol and check(protocol[key])
                                              for key, check in CONTINUOUS_PROTOCOL.items()):
            raise ReportedValueError(f"{path}: entry {rid!r} is on continuous data (it has an estimate) and needs "
                                     f"protocol keys estimate: exact | elbo, space: logit, logit_lambda: <0..0.5>, "
                                     f"data: mnist | cifar10, flips: <bool>; got {protocol!r}")
        if "pm" in entry and not (isinstance(entry["pm"], (int, float)) and entry["pm"] >= 0):
            raise ReportedValueError(f"{path}: entry {rid!r} has pm {entry['pm']!r}, not a number ≥ 0")

        if entry.get("section", SECTIONS[0]) not in SECTIONS:
            raise ReportedValueError(f"{path}: entry {rid!r} has section {entry['section']!r}, not one of "
                                     f"{', '.join(SECTIONS)}")
    return entries


def check_reported_ids(ids: Iterable[str | None], path: Path) -> None:
    """Raise ReportedValueError naming every id (None = no comparison) that ``path`` does not define."""
    valid = load_reported(path)
    unknown = sorted({rid for rid in ids if rid is not None and rid not in valid})
    if unknown:
        raise ReportedValueError(f"unknown reported id(s) {unknown} (models.<entry>.reported); "
                                 f"valid ids in {path}:\n  " + "\n  ".join(valid))
