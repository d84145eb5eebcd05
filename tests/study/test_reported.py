"""The reported-values file (``workflow/reported.yaml``, :mod:`srvae.study.report.reported`): the shipped file
loads, and each way an entry can be malformed is refused with a message naming the entry and what it needs."""

from __future__ import annotations

import copy

import pytest
import yaml

from srvae.study.report.reported import ReportedValueError, load_reported

from .test_report import REPORTED_FILE

TABLE1 = "sere2020/table1/sere-vae"
TABLE3 = next(rid for rid, e in yaml.safe_load(REPORTED_FILE.read_text()).items() if "estimate" in e["protocol"])


def test_the_shipped_file_loads_with_binary_and_continuous_rows():
    entries = load_reported(REPORTED_FILE)
    assert entries[TABLE1]["log_px"] == -81.17 and entries[TABLE3]["protocol"]["space"] == "logit"


def _entry_without_fields(e):
    e["x"] = {"log_px": -80.0}


def _continuous_row_without_its_space(e):
    del e[TABLE3]["protocol"]["space"]


@pytest.mark.parametrize("damage, message", [
    (_entry_without_fields, r"entry 'x' lacks field\(s\) \['table', 'model', 'details', 'source', 'protocol'\]"),
    (lambda e: e[TABLE1].pop("source"), rf"entry '{TABLE1}' lacks field\(s\) \['source'\]"),
    (lambda e: e[TABLE1].update(log_px="-81.17"), r"has log_px '-81.17', not a finite number"),  # quoted
    (lambda e: e[TABLE1].update(log_px=float("inf")), r"not a finite number"),
    (lambda e: e[TABLE1]["protocol"].update(k=1000.0), r"needs protocol: \{k: <int or null>"),
    (lambda e: e[TABLE1]["protocol"].update(binarisation="thresholded"), r"binarisation: dynamic \| static"),
    (lambda e: e[TABLE1].update(protocol=[1000, "dynamic"]), r"needs protocol"),
    (_continuous_row_without_its_space, rf"entry '{TABLE3}' is on continuous data .* needs protocol keys estimate"),
    (lambda e: e[TABLE3]["protocol"].update(logit_lambda=0.5), r"is on continuous data"),
    (lambda e: e[TABLE3].update(pm=-0.1), r"has pm -0.1, not a number ≥ 0"),
    (lambda e: e[TABLE1].update(section="table4"), r"has section 'table4', not one of table1, table2, table3"),
])
def test_a_malformed_entry_is_refused_naming_it(tmp_path, damage, message):
    entries = copy.deepcopy(yaml.safe_load(REPORTED_FILE.read_text()))
    damage(entries)
    path = tmp_path / "reported.yaml"
    path.write_text(yaml.safe_dump(entries, allow_unicode=True))
    with pytest.raises(ReportedValueError, match=message):
        load_reported(path)


def test_a_file_that_is_not_a_mapping_is_refused(tmp_path):
    path = tmp_path / "reported.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ReportedValueError, match="expected a mapping of id -> entry"):
        load_reported(path)
