"""Faults that must end in a clear message and never in a wrong number: a resume under another config, a run
that diverges but stays finite, a truncated metrics file."""

import pytest

import srvae.study.run.steps as steps
import srvae.study.run.train as loop
from srvae.study.config import TrainSettings, validate_config
from srvae.study.report.aggregate import RunResultError, aggregate
from srvae.study.run import paths
from srvae.study.run.train import TrainingDivergedError, train

from ..conftest import small_vae, tiny_config


def test_checkpoint_resumes_only_the_run_that_wrote_it(tiny_data, tmp_path):
    settings = TrainSettings(epochs=3, batch_size=100, checkpoint_every=1)
    identity = {"model": {"class": "vae", "params": {"activation": "tanh"}}, "dataset": {"split_seed": 0}}
    train(small_vae(), tiny_data, settings, 0, tmp_path / "c.pt", identity=identity, log=lambda m: None)
    assert (tmp_path / "c.pt").exists()  # written after epochs 1 and 2
    for other, expected in ((identity, "resuming from"),
                            ({**identity, "model": {"class": "vae", "params": {"activation": "relu"}}}, "ignoring"),
                            ({**identity, "dataset": {"split_seed": 1}}, "ignoring")):
        said = []
        train(small_vae(), tiny_data, settings, 0, tmp_path / "c.pt", identity=other, log=said.append)
        assert any(expected in line for line in said), (other, said)


def test_a_run_is_identified_by_its_model_and_dataset_entries(tmp_path, monkeypatch):
    """train_run hands train() everything that defines the run, so another model or split never resumes."""
    seen = []

    def stop(*args, identity, **kwargs):
        seen.append(identity)
        raise RuntimeError("stop")

    monkeypatch.setattr(steps, "train", stop)
    base = tiny_config(tmp_path)
    variants = [base, {**base, "models": {"vae": {**base["models"]["vae"],
                                                  "params": {**base["models"]["vae"].get("params", {}), "activation": "relu"}}}},
                {**base, "datasets": {"tiny": {**base["datasets"]["tiny"], "split_seed": 5}}}]
    for raw in variants:
        with pytest.raises(RuntimeError, match="stop"):
            steps.train_run(validate_config(raw), "tiny", "vae", 0)
    assert len({repr(identity) for identity in seen}) == 3
    assert seen[0]["data_dim"] == 784 and seen[0]["model"]["class"] == "vae"


def test_a_finite_but_diverged_run_fails_naming_run_and_epoch(tiny_data, tmp_path, monkeypatch):
    bounds = iter([-200.0, -300.0, -1.6e7, -150.0])  # learns, then blows up at epoch 3 (finite)
    monkeypatch.setattr(loop, "validate", lambda model, x, settings: {"valid_elbo": next(bounds)})
    with pytest.raises(TrainingDivergedError, match=r"tiny/vae/seed3, seed 3: the validation bound is -1\.6e\+07 "
                                                    r"nats at epoch 3, worse than ignoring the data \(-543\.4 nats"):
        train(small_vae(), tiny_data, TrainSettings(epochs=4, batch_size=100), 3, tmp_path / "c.pt",
              name="tiny/vae/seed3", log=lambda m: None)


def test_a_run_that_never_beats_ignoring_the_data_fails(tiny_data, tmp_path, monkeypatch):
    """Early epochs of a barely trained model may be worse than the trivial bound; the best epoch may not."""
    bounds = iter([-900.0, -700.0, -600.0])
    monkeypatch.setattr(loop, "validate", lambda model, x, settings: {"valid_elbo": next(bounds)})
    with pytest.raises(TrainingDivergedError, match=r"the validation bound is -600 nats at epoch 3"):
        train(small_vae(), tiny_data, TrainSettings(epochs=3, batch_size=100), 0, tmp_path / "c.pt", log=lambda m: None)


def test_a_test_nll_worse_than_ignoring_the_data_is_refused(tmp_path, monkeypatch):
    cfg = validate_config(tiny_config(tmp_path, epochs=1))
    steps.train_run(cfg, "tiny", "vae", 0)
    real = steps.iw_log_likelihood

    def diverged(*args):
        estimate = real(*args)
        estimate.log_px.fill_(-1.6e7)
        return estimate

    monkeypatch.setattr(steps, "iw_log_likelihood", diverged)
    with pytest.raises(TrainingDivergedError, match=r"tiny/vae/seed0: the test NLL is 1\.6e\+07 nats"):
        steps.evaluate_run(cfg, "tiny", "vae", 0)
    assert not (paths.run_dir(cfg.results_dir, "tiny", "vae", 0) / "eval.json").exists()


def test_truncated_metrics_are_refused(tmp_path):
    cfg = validate_config(tiny_config(tmp_path, epochs=3))
    for step in (steps.train_run, steps.evaluate_run, steps.speed_run):
        step(cfg, "tiny", "vae", 0)
    run = paths.run_dir(cfg.results_dir, "tiny", "vae", 0)
    lines = (run / "metrics.csv").read_text().splitlines(keepends=True)
    (run / "metrics.csv").write_text("".join(lines[:-1]))  # cut at a line boundary: still valid CSV
    with pytest.raises(RunResultError, match=r"metrics\.csv: records epochs \[1, 2\], not 1\.\.3"):
        aggregate([run], tmp_path)
