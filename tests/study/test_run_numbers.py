"""Numbers the run side writes (``train.json``, ``metrics.csv``, ``eval.json``, ``log_px.npy``), each against a value
computed here from a fixture whose answer is known: the training cost from a scripted clock, for a separate run and
for fused seeds; each fused seed's numbers in its own files, equal to its separate run's; the parameter count by
hand; the test-set size and every test image's estimate in the test set's order; the KL per layer as a mean over
images; an interrupted run resumed in process. Each test was seen to fail on a planted fault (issue 23, the run
side's audit)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch

import srvae.study.run.fused as fused_module
import srvae.study.run.steps as steps
import srvae.study.run.train as loop
from srvae.models import LatentVariableModel, Scores
from srvae.models.base import ElboTerms
from srvae.study.config import TrainSettings, validate_config
from srvae.study.data.datasets import load_dataset
from srvae.study.run import paths
from srvae.study.run.evaluate import iw_log_likelihood, mean_kl_per_layer
from srvae.study.run.train import train

from ..conftest import Killed, kill_at_epoch_3, small_vae, tiny_config

TRAIN_IMAGES = 300  # tiny_config's training split
EPOCHS = 3  # tiny_config's default


class Clock:
    """A scripted ``time.perf_counter``: it moves only when a test advances it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _read(run) -> tuple[dict, pd.DataFrame]:
    return json.loads((run / paths.TRAIN).read_text()), pd.read_csv(run / paths.METRICS)


# --- the training cost of a separate run and of fused seeds --------------------------------------------------


def test_train_json_and_metrics_of_a_run_from_a_scripted_clock(tmp_path, monkeypatch):
    """Every epoch's training pass takes 2 s and its validation 0.5 s; ``train_seconds`` counts both (``Progress``:
    "training seconds so far", the fused path's docstring: "plus its own validations"). Validation ELBOs −120,
    −100, −110: the best epoch is 2 of 3, so a cost per best epoch differs from the cost per epoch."""
    cfg = validate_config(tiny_config(tmp_path))
    clock = Clock()
    monkeypatch.setattr(loop.time, "perf_counter", clock)
    bounds = iter([-120.0, -100.0, -110.0])

    def one_pass(model, optimiser, x, order, *args):
        clock.now += 2.0
        return torch.tensor(-90.0 * len(order))

    def validation(model, x, settings):
        clock.now += 0.5
        return {"valid_elbo": next(bounds)}

    monkeypatch.setattr(loop, "train_epoch", one_pass)
    monkeypatch.setattr(loop, "validate", validation)
    written, metrics = _read(steps.train_run(cfg, "tiny", "vae", 0))
    assert metrics["epoch"].tolist() == [1, 2, 3]
    assert metrics["train_elbo"].tolist() == pytest.approx([-90.0] * 3)
    assert metrics["valid_elbo"].tolist() == [-120.0, -100.0, -110.0]
    assert metrics["seconds"].tolist() == pytest.approx([2.5, 5.0, 7.5])  # cumulative
    assert (written["epochs"], written["best_epoch"]) == (3, 2)
    assert written["train_seconds"] == pytest.approx(7.5)
    assert written["seconds_per_epoch"] == pytest.approx(2.5)
    assert written["train_images_per_s"] == pytest.approx(TRAIN_IMAGES * 3 / 7.5)  # 120


def test_fused_seeds_each_get_their_own_numbers_and_their_share_of_the_clock(tmp_path, monkeypatch):
    """Two seeds trained as one job: each joint pass takes 3 s (1.5 s per seed), each seed's validation 0.5 s, so
    every seed's run costs 3 × 2 s. Seed 0's passes average −90 nats, seed 1's −95; seed 0's validation ELBOs peak
    at epoch 2, seed 1's at epoch 3. Each seed's files must hold its own numbers."""
    raw = tiny_config(tmp_path, fuse_seeds=True)
    raw["seeds"] = [0, 1]
    cfg = validate_config(raw)
    clock = Clock()
    monkeypatch.setattr(loop.time, "perf_counter", clock)
    valid = {0: [-120.0, -100.0, -110.0], 1: [-130.0, -125.0, -105.0]}
    calls = iter([valid[s][e] for e in range(EPOCHS) for s in (0, 1)])  # seed 0 then seed 1, epoch by epoch

    def joint_pass(self, x, order, epoch):
        clock.now += 3.0
        return torch.tensor([-90.0, -95.0]) * TRAIN_IMAGES

    def validation(model, x, settings):
        clock.now += 0.5
        return {"valid_elbo": next(calls)}

    monkeypatch.setattr(fused_module.FusedSeeds, "train_epoch", joint_pass)
    monkeypatch.setattr(loop, "validate", validation)
    runs = steps.train_fused_run(cfg, "tiny", "vae", [0, 1])
    for seed, objective, best in ((0, -90.0, 2), (1, -95.0, 3)):
        written, metrics = _read(runs[seed])
        assert runs[seed] == paths.run_dir(cfg.results_dir, "tiny", "vae", seed)
        assert (written["seed"], written["fused_seeds"], written["best_epoch"]) == (seed, [0, 1], best)
        assert metrics["train_elbo"].tolist() == pytest.approx([objective] * 3)
        assert metrics["valid_elbo"].tolist() == valid[seed]
        assert metrics["seconds"].tolist() == pytest.approx([2.0, 4.0, 6.0])
        assert written["train_seconds"] == pytest.approx(6.0)
        assert written["seconds_per_epoch"] == pytest.approx(2.0)
        assert written["train_images_per_s"] == pytest.approx(TRAIN_IMAGES * 3 / 6.0)  # 150


def test_fused_seeds_stop_early_each_by_its_own_validation(tmp_path, monkeypatch):
    """Patience 1 over 6 epochs: seed 0's validation ELBO stops improving after epoch 2, so it stops after epoch 3
    (best 2); seed 1's after epoch 4, so it stops after epoch 5 (best 4). The job trains on while one seed does,
    a stopped seed's record is frozen, and once both have stopped the job ends: 5 joint passes, not 6."""
    raw = tiny_config(tmp_path, fuse_seeds=True, epochs=6, patience=1)
    raw["seeds"] = [0, 1]
    cfg = validate_config(raw)
    valid = {0: [-120.0, -100.0, -110.0], 1: [-130.0, -125.0, -115.0, -105.0, -110.0]}
    calls = iter([-120.0, -130.0, -100.0, -125.0, -110.0, -115.0, -105.0, -110.0])  # by epoch; a stopped seed skips
    passes = []

    def joint_pass(self, x, order, epoch):
        passes.append(epoch)
        return torch.tensor([-90.0, -95.0]) * TRAIN_IMAGES

    monkeypatch.setattr(fused_module.FusedSeeds, "train_epoch", joint_pass)
    monkeypatch.setattr(loop, "validate", lambda model, x, settings: {"valid_elbo": next(calls)})
    runs = steps.train_fused_run(cfg, "tiny", "vae", [0, 1])
    assert passes == [0, 1, 2, 3, 4]
    for seed, best in ((0, 2), (1, 4)):
        written, metrics = _read(runs[seed])
        assert metrics["valid_elbo"].tolist() == valid[seed]
        assert (written["epochs"], written["best_epoch"]) == (len(valid[seed]), best)


# --- fused seeds against separate runs, in process -------------------------------------------------------------

MAF = {"class": "maf", "params": {"mades": 2, "hidden": [8]}}


def _maf_config(root):
    """Two seeds of a tiny MAF on dequantised digits, two epochs: a flow's training draws no noise, so each fused
    seed must reproduce its separate run to float tolerance."""
    raw = tiny_config(root, {"maf": MAF}, epochs=2, refresh_statistics=True)  # the study's MAF protocol
    raw["seeds"] = [0, 1]
    raw["datasets"]["tiny"].update(transform="dequantise_logit", split={"train": 100, "valid": 40, "test": 10})
    return validate_config(raw)


@pytest.fixture(scope="module")
def fused_and_separate(tmp_path_factory):
    separate = _maf_config(tmp_path_factory.mktemp("separate"))
    fused = _maf_config(tmp_path_factory.mktemp("fused"))
    return ([steps.train_run(separate, "tiny", "maf", seed) for seed in (0, 1)],
            steps.train_fused_run(fused, "tiny", "maf", [0, 1]))


def test_each_fused_seed_writes_its_separate_runs_metrics_and_weights(fused_and_separate):
    """Seed s of the fused job: seed s's own initial weights, data stream and validation, written to seed s's files
    (its metrics, best epoch and weights are its separate run's; the two seeds' numbers differ)."""
    separate, fused = fused_and_separate
    alone = [_read(run)[1].drop(columns="seconds") for run in separate]
    for column in ("train_elbo", "valid_elbo"):  # the seeds are told apart, beyond the tolerance below (0.01)
        assert (alone[0][column] - alone[1][column]).abs().min() > 0.05, column
    for seed in (0, 1):
        (written, metrics), (reference, _) = _read(fused[seed]), _read(separate[seed])
        pd.testing.assert_frame_equal(metrics.drop(columns="seconds"), alone[seed], rtol=0, atol=0.01)
        assert (written["seed"], written["best_epoch"]) == (seed, reference["best_epoch"])
        weights = [torch.load(run / paths.MODEL, weights_only=True)["state_dict"] for run in (fused[seed],
                                                                                          separate[seed])]
        for name, tensor in weights[1].items():
            torch.testing.assert_close(weights[0][name], tensor, rtol=1e-3, atol=1e-4, msg=name)


def test_train_json_counts_the_trainable_parameters_by_hand(fused_and_separate):
    """A MAF of 2 MADEs (784 → 8 → 2 × 784, masks are buffers) each followed by a batch norm (log γ and β; its
    running mean and variance are buffers): 2 × (8 × 785 + 1568 × 9) + 2 × 2 × 784 = 43,920."""
    expected = 2 * (8 * (784 + 1) + 2 * 784 * (8 + 1)) + 2 * 2 * 784
    for run in [*fused_and_separate[0], *fused_and_separate[1]]:
        assert _read(run)[0]["num_parameters"] == expected


# --- eval.json and log_px.npy -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """A one-epoch tiny VAE with a 60-image validation split and a 90-image test split, trained and evaluated."""
    raw = tiny_config(tmp_path_factory.mktemp("eval"), epochs=1)
    raw["datasets"]["tiny"]["split"] = {"train": TRAIN_IMAGES, "valid": 60, "test": 90}
    cfg = validate_config(raw)
    steps.train_run(cfg, "tiny", "vae", 0)
    steps.evaluate_run(cfg, "tiny", "vae", 0)
    return cfg, paths.run_dir(cfg.results_dir, "tiny", "vae", 0)


def test_log_px_holds_every_test_image_in_the_test_sets_order(evaluated):
    """Image i's estimate at position i (a paired comparison matches images by position): the estimate made again
    here with the run's seed, image by image in order; the images differ by far more than float error."""
    cfg, run = evaluated
    written = json.loads((run / paths.EVAL).read_text())
    log_px = np.load(run / paths.LOG_PX, allow_pickle=False)
    test = load_dataset("tiny", cfg.datasets["tiny"]).test
    assert written["n_test"] == len(test) == len(log_px) == 90
    net = steps.load_trained(run, torch.device("cpu"))
    torch.manual_seed(0)
    ev = cfg.evaluate
    again = iw_log_likelihood(net, test, ev.k, ev.k_chunk, ev.batch_size).log_px.double().numpy()
    assert np.diff(again).std() > 1.0  # neighbouring images differ: a reordering shows
    np.testing.assert_allclose(log_px, again, rtol=1e-6)


class LayeredKL(LatentVariableModel):
    """Two stochastic layers whose KL for image ``x`` (one value) is ``x`` and ``10 x`` nats."""

    Config = dict

    def __init__(self) -> None:
        super().__init__({}, 1)
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def elbo_terms(self, x):
        per_layer = torch.cat([x, 10 * x], dim=1)
        return ElboTerms(torch.zeros(len(x)), per_layer.sum(1), per_layer)

    def score(self, x, k):
        zero = torch.zeros(k, len(x))
        return Scores(zero, zero, zero)

    def sample(self, n):
        raise NotImplementedError


def test_kl_per_layer_is_the_mean_over_images_whatever_the_batches():
    """Images 0..6 in batches of 3, 3 and 1: per layer the mean of 0..6 (3) and of 0, 10, ..., 60 (30); the mean of
    the batches' means would be (1 + 4 + 6) / 3."""
    x = torch.arange(7.0).unsqueeze(1)
    assert mean_kl_per_layer(LayeredKL(), x, batch_size=3) == pytest.approx([3.0, 30.0])


# --- an interrupted run, resumed in process ---------------------------------------------------------------------


def test_an_interrupted_run_resumes_exactly_where_it_stopped(tiny_data, tmp_path):
    """Stopped during epoch 3 of 3 (after epoch 2's checkpoint): the rerun restores epoch 2's weights, Adam's
    moments, the data stream and the noise, and ends with the uninterrupted run's metrics and weights."""
    settings = TrainSettings(epochs=3, batch_size=32, checkpoint_every=1, lr=3e-3)
    data = dataclasses.replace(tiny_data, train=tiny_data.train[:96], valid=tiny_data.valid[:40])

    def run(path, on_epoch=None, log=lambda message: None):
        model = small_vae()
        torch.manual_seed(11)
        result = train(model, data, settings, 5, path, on_epoch=on_epoch, log=log)
        return [{k: v for k, v in m.items() if k != "seconds"} for m in result["metrics"]], model.state_dict()

    whole, whole_state = run(tmp_path / "whole.pt")
    with pytest.raises(Killed):
        run(tmp_path / "cut.pt", on_epoch=kill_at_epoch_3)
    lines: list[str] = []
    resumed, resumed_state = run(tmp_path / "cut.pt", log=lines.append)
    assert any("resuming from" in line and "after epoch 2" in line for line in lines), lines
    assert resumed == whole
    assert all(torch.equal(whole_state[k], resumed_state[k]) for k in whole_state)
