import copy
import math
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
import yaml

from srvae.study.config import TrainSettings
from srvae.study.run.step import kl_weight, objective
from srvae.study.run.train import TrainingDivergedError, train

from ..conftest import small_vae, tiny_config


def test_kl_warmup_is_linear_from_zero_to_one():
    assert [kl_weight(e, 4) for e in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert kl_weight(0, 0) == 1.0


@torch.no_grad()
def test_iw_objective_with_one_sample_matches_elbo_in_expectation(tiny_data):
    model, x = small_vae(), tiny_data.valid
    elbo = objective(model, x, 1.0, 1).mean()
    iw_one = torch.stack([model.log_importance_weights(x, 1)[0].mean() for _ in range(50)]).mean()
    assert abs(float(elbo) - float(iw_one)) < 1.0
    assert float(objective(model, x, 1.0, 20).mean()) > float(elbo)  # tighter bound


def _replay(model, data, settings: TrainSettings, seed: int) -> tuple[list[dict], list[dict], list[float]]:
    """The training loop of a VAE written out by hand: per epoch a fresh Bernoulli draw of the grey training
    images and a permutation, both from the run's generator; per minibatch the negated mean single-sample ELBO,
    the gradients' global norm capped at ``grad_clip`` (torch's ``max_norm / (‖g‖ + 1e-6)``), a plain Adam step;
    after each epoch the validation ELBO in eval mode. (per-epoch metrics, per-epoch weights, every raw norm)."""
    generator = torch.Generator().manual_seed(seed)
    adam = torch.optim.Adam(model.parameters(), lr=settings.lr, eps=settings.adam_eps, foreach=False)
    metrics, states, norms = [], [], []
    n = len(data.train)
    for epoch in range(settings.epochs):
        model.train()
        x = (torch.rand(data.train.shape, generator=generator) < data.train).float()
        order = torch.randperm(n, generator=generator)
        total = 0.0
        for idx in order.split(settings.batch_size):
            terms = model.elbo_terms(x[idx])
            elbo = terms.reconstruction - terms.kl
            adam.zero_grad()
            (-elbo.mean()).backward()
            norm = torch.cat([p.grad.flatten() for p in model.parameters()]).norm()
            norms.append(float(norm))
            for p in model.parameters():
                p.grad *= min(1.0, settings.grad_clip / (float(norm) + 1e-6))
            adam.step()
            total += float(elbo.detach().sum())
        model.eval()
        with torch.no_grad():
            valid = sum(float((t.reconstruction - t.kl).sum())
                        for t in map(model.elbo_terms, data.valid.split(settings.eval_batch_size))) / len(data.valid)
        metrics.append({"epoch": epoch + 1, "train_elbo": total / n, "valid_elbo": valid})
        states.append(copy.deepcopy(model.state_dict()))
    return metrics, states, norms


def test_training_is_the_loop_replayed_by_hand(tiny_data, tmp_path):
    """Three epochs of ``train`` against :func:`_replay` from the same weights and random state: the same
    training and validation ELBO every epoch and the weights of the best epoch. A training set binarised once
    (or thresholded at ½, or drawn from the global generator), a missing or wrong clip, a validation pass in
    training mode or on other images: each changes these numbers."""
    settings = TrainSettings(epochs=3, batch_size=100, lr=3e-3, grad_clip=10.0, eval_batch_size=40)
    model = small_vae()
    twin = copy.deepcopy(model)
    torch.manual_seed(5)
    result = train(model, tiny_data, settings, 3, tmp_path / "c.pt", log=lambda m: None)
    torch.manual_seed(5)
    expected, states, norms = _replay(twin, tiny_data, settings, 3)
    assert min(norms) < settings.grad_clip < max(norms)  # the cap binds on some steps, not on all
    for got, want in zip(result["metrics"], expected, strict=True):
        assert got["epoch"] == want["epoch"]
        assert got["train_elbo"] == pytest.approx(want["train_elbo"], rel=1e-5)
        assert got["valid_elbo"] == pytest.approx(want["valid_elbo"], rel=1e-5)
    best = max(expected, key=lambda m: m["valid_elbo"])["epoch"]
    assert result["best_epoch"] == best
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, states[best - 1][name], rtol=1e-4, atol=1e-6)


def test_nan_loss_stops_with_model_seed_and_epoch(tiny_data, tmp_path):
    model = small_vae()
    with torch.no_grad():
        model.decoder[0].weight[0, 0] = math.nan
    with pytest.raises(TrainingDivergedError, match=r"tiny/vae, seed 3: training objective is nan at epoch 1\."):
        train(model, tiny_data, TrainSettings(epochs=2), 3, tmp_path / "c.pt", name="tiny/vae", log=lambda m: None)


def _metrics_without_clock(path):
    return pd.read_csv(path).drop(columns="seconds")


def test_sigkill_mid_training_then_rerun_gives_the_uninterrupted_metrics(tmp_path):
    models = {"vae": {"class": "vae", "params": {"latents": 4, "hidden": [64, 64]}}}

    def command(name):
        cfg_path = tmp_path / f"{name}.yaml"
        cfg_path.write_text(yaml.safe_dump(tiny_config(tmp_path / name, models, epochs=12, checkpoint_every=1)))
        run = tmp_path / name / "results" / "tiny" / "vae" / "seed0"
        return [sys.executable, "-m", "srvae.cli", "train", "--config", str(cfg_path),
                "--dataset", "tiny", "--model", "vae", "--seed", "0"], run

    cmd, reference = command("reference")
    subprocess.run(cmd, stderr=subprocess.PIPE, check=True)
    cmd, run = command("killed")
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (run / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "train.json").exists(), "the run finished before it could be killed"
    resumed = subprocess.run(cmd, stderr=subprocess.PIPE, text=True, check=True)
    assert "resuming from" in resumed.stderr
    pd.testing.assert_frame_equal(_metrics_without_clock(run / "metrics.csv"),
                                  _metrics_without_clock(reference / "metrics.csv"), rtol=0, atol=0)
    assert not (run / "checkpoint.pt").exists()
    a = torch.load(run / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(reference / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_early_stopping_after_patience_epochs_without_a_better_validation_value(tiny_data, tmp_path, monkeypatch):
    import srvae.study.run.train as loop

    bounds = iter([-300.0, -200.0, -210.0, -205.0, -100.0])  # best at epoch 2, then two epochs without progress
    monkeypatch.setattr(loop, "validate", lambda model, x, settings: {"valid_elbo": next(bounds)})
    result = train(small_vae(), tiny_data, TrainSettings(epochs=5, batch_size=100, patience=2), 0, tmp_path / "c.pt",
                   log=lambda m: None)
    assert [row["epoch"] for row in result["metrics"]] == [1, 2, 3, 4] and result["best_epoch"] == 2


def test_weight_decay_is_an_l2_penalty_on_the_parameters(tiny_data, tmp_path, monkeypatch):
    """A strong penalty pulls the weights towards zero; without it they do not shrink."""
    import srvae.study.run.train as loop

    monkeypatch.setattr(loop, "validate", lambda model, x, settings: {"valid_elbo": -100.0})
    norms = {}
    for decay in (0.0, 10.0):
        torch.manual_seed(0)
        model = small_vae()
        train(model, tiny_data, TrainSettings(epochs=1, batch_size=100, lr=1e-2, weight_decay=decay), 0,
              tmp_path / f"c{decay}.pt", log=lambda m: None)
        norms[decay] = float(model.encoder[0].weight.detach().norm())
    assert norms[10.0] < 0.5 * norms[0.0]
