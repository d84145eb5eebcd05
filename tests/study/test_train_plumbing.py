"""The training loop's plumbing: the objective's sign, the data each epoch, the weights it returns, the schedule,
and the options it must actually exercise. Each test was seen to fail on a deliberately broken loop."""

import copy

import pytest
import torch

import srvae.study.run.step as step
import srvae.study.run.train as loop
from srvae.models import LatentVariableModel, Scores
from srvae.models.base import ElboTerms
from srvae.study.config import TrainSettings
from srvae.study.run.step import BURDA_STAGES, learning_rate, objective
from srvae.study.run.train import WeightAverage, train

from ..conftest import small_vae

B = 6


class FixedTerms(LatentVariableModel):
    """Reconstruction −10 and KL 4 per example; importance weights from log p(x|z) = −10, log p(z) = −3, log q = −1."""

    Config = dict

    def __init__(self) -> None:
        super().__init__({}, 3)
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def elbo_terms(self, x):
        ones = torch.ones(len(x))
        return ElboTerms(-10 * ones, 4 * ones, 4 * ones[:, None])

    def score(self, x, k):
        ones = torch.ones(k, len(x))
        return Scores(-10 * ones, -3 * ones, -1 * ones)

    def sample(self, n):
        raise NotImplementedError


@pytest.mark.parametrize("beta", [0.25, 1.0])
def test_objective_subtracts_the_weighted_kl(beta):
    x = torch.zeros(B, 3)
    torch.testing.assert_close(objective(FixedTerms(), x, beta, 1), torch.full((B,), -10 - beta * 4))
    # IW bound: log mean_k exp(log p(x|z) + β (log p(z) − log q(z|x))) = −10 + β (−3 + 1) for equal weights
    torch.testing.assert_close(objective(FixedTerms(), x, beta, 5), torch.full((B,), -10 + beta * -2))


def quiet(msg: str) -> None:
    pass


def test_training_images_are_binarised_afresh_every_epoch(tiny_data, tmp_path, monkeypatch):
    seen = []
    real_epoch = loop.train_epoch

    def spy(model, optimiser, x, *args):
        seen.append(x.clone())
        return real_epoch(model, optimiser, x, *args)

    monkeypatch.setattr(loop, "train_epoch", spy)
    train(small_vae(), tiny_data, TrainSettings(epochs=3, batch_size=50), 0, tmp_path / "c.pt", log=quiet)
    assert len(seen) == 3
    for x in seen:
        assert set(x.unique().tolist()) == {0.0, 1.0}
        assert abs(float(x.mean()) - float(tiny_data.train.mean())) < 5e-3  # Bernoulli(grey levels)
    assert not torch.equal(seen[0], seen[1]) and not torch.equal(seen[1], seen[2])


def test_returns_the_best_on_validation_weights_not_the_last(tiny_data, tmp_path, monkeypatch):
    scripted = iter([-5.0, -1.0, -3.0, -4.0])  # the best validation ELBO is epoch 2's
    snapshots = []
    real_epoch = loop.train_epoch

    def record(model, *args):
        total = real_epoch(model, *args)
        snapshots.append(copy.deepcopy(model.state_dict()))
        return total

    monkeypatch.setattr(loop, "train_epoch", record)
    monkeypatch.setattr(loop, "validate", lambda model, x, settings: {"valid_elbo": next(scripted)})
    model = small_vae()
    result = train(model, tiny_data, TrainSettings(epochs=4, batch_size=50, lr=1e-2), 0, tmp_path / "c.pt",
                   log=quiet)
    assert result["best_epoch"] == 2
    state = model.state_dict()
    assert all(torch.equal(state[k], snapshots[1][k]) for k in state)
    assert not all(torch.equal(state[k], snapshots[3][k]) for k in state)


def test_selection_on_the_importance_weighted_bound(tiny_data, tmp_path, monkeypatch):
    """selection: iw picks the epoch with the best K-sample validation bound, not the best ELBO."""
    elbos, bounds = iter([-1.0, -5.0, -100.0]), iter([-90.0, -80.0, -20.0])  # ELBO: epoch 1 best; bound: 3
    monkeypatch.setattr(loop, "mean_elbo", lambda model, x, batch_size: next(elbos))
    calls = []

    def bound(model, x, k, k_chunk, batch_size):
        calls.append(k)
        return type("Estimate", (), {"nll": -next(bounds)})()

    monkeypatch.setattr(loop, "iw_log_likelihood", bound)
    settings = TrainSettings(epochs=3, batch_size=50, selection="iw", selection_k=7)
    result = train(small_vae(), tiny_data, settings, 0, tmp_path / "c.pt", log=quiet)
    assert result["best_epoch"] == 3 and calls == [7, 7, 7]
    assert result["selection"] == {"metric": "valid_iw", "k": 7}
    assert [m["valid_iw"] for m in result["metrics"]] == [-90.0, -80.0, -20.0]


def test_train_exercises_warmup_clipping_and_importance_weighting(tiny_data, tmp_path, monkeypatch):
    betas, samples, caps = [], [], []
    real_objective, real_clip = step.objective, torch.nn.utils.clip_grad_norm_

    def objective_spy(model, x, beta, iw_samples):
        betas.append(beta)
        samples.append(iw_samples)
        return real_objective(model, x, beta, iw_samples)

    def clip_spy(parameters, max_norm, *args, **kwargs):
        caps.append(max_norm)
        return real_clip(parameters, max_norm, *args, **kwargs)

    monkeypatch.setattr(step, "objective", objective_spy)  # the training step calls it
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip_spy)
    settings = TrainSettings(epochs=3, batch_size=100, kl_warmup_epochs=2, grad_clip=2.5, iw_samples=4)
    result = train(small_vae(), tiny_data, settings, 0, tmp_path / "c.pt", log=quiet)
    steps = len(tiny_data.train) // 100
    assert betas == [0.0] * steps + [0.5] * steps + [1.0] * steps
    assert samples == [4] * 3 * steps and caps == [2.5] * 3 * steps
    assert [m["beta"] for m in result["metrics"]] == [0.0, 0.5, 1.0]


def test_learning_rate_schedules():
    constant = TrainSettings(lr=2e-3)
    assert [learning_rate(e, constant) for e in (0, 10, 49)] == [2e-3] * 3
    exponential = TrainSettings(lr=1e-3, lr_schedule="exponential", lr_decay=0.5)
    assert [learning_rate(e, exponential) for e in range(3)] == [1e-3, 5e-4, 2.5e-4]
    burda = TrainSettings(lr=1e-3, lr_schedule="burda", epochs=3280)
    rates = [learning_rate(e, burda) for e in range(burda.epochs)]
    for stage in range(BURDA_STAGES):  # stage i: 3^i epochs at 1e-3 · 10^(−i/7)
        assert rates.count(pytest.approx(1e-3 * 10 ** (-stage / 7))) == 3**stage
    assert rates == sorted(rates, reverse=True) and rates[-1] == pytest.approx(1e-4)
    finetune = TrainSettings(lr=2e-3, epochs=4, finetune_epochs=2, finetune_lr_factor=0.1)
    assert finetune.total_epochs == 6
    assert [learning_rate(e, finetune) for e in range(6)] == [2e-3] * 4 + [pytest.approx(2e-4)] * 2


def test_train_applies_the_schedule_and_the_finetuning_epochs(tiny_data, tmp_path, monkeypatch):
    used = []
    real_epoch = loop.train_epoch

    def spy(model, optimiser, *args):
        used.append(optimiser.param_groups[0]["lr"])  # what the optimiser really steps with
        return real_epoch(model, optimiser, *args)

    monkeypatch.setattr(loop, "train_epoch", spy)
    settings = TrainSettings(epochs=2, batch_size=100, lr=1e-3, lr_schedule="exponential", lr_decay=0.5,
                             finetune_epochs=1, finetune_lr_factor=0.01)
    result = train(small_vae(), tiny_data, settings, 0, tmp_path / "c.pt", log=quiet)
    assert used == [m["lr"] for m in result["metrics"]] == [1e-3, 5e-4, pytest.approx(1e-5)]
    assert [m["epoch"] for m in result["metrics"]] == [1, 2, 3]


class Recorder(LatentVariableModel):
    """A model that records the batches its data-dependent initialisation sees; one weight, a quadratic objective."""

    Config = dict

    def __init__(self) -> None:
        super().__init__({}, 784)
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.initialised_on: list[torch.Tensor] = []

    def initialise(self, x):
        self.initialised_on.append(x.clone())

    def score(self, x, k):
        log_lik = -((self.w - x.mean(1)) ** 2).expand(k, -1)  # maximised at w = the image's mean pixel
        zeros = torch.zeros_like(log_lik)
        return Scores(log_lik, zeros, zeros)

    def sample(self, n):
        raise NotImplementedError


def test_a_fresh_run_initialises_on_a_training_batch_and_a_resumed_one_does_not(tiny_data, tmp_path, monkeypatch):
    settings = TrainSettings(epochs=4, batch_size=50, checkpoint_every=1)
    model = Recorder()
    train(model, tiny_data, settings, 0, tmp_path / "c.pt", log=quiet)
    assert len(model.initialised_on) == 1
    batch = model.initialised_on[0]
    assert batch.shape == (50, 784) and set(batch.unique().tolist()) == {0.0, 1.0}  # a binarised training batch
    # a run stopped after epoch 2 and started again resumes from its checkpoint: no second initialisation
    real_validate, calls = loop.validate, []

    def stop_at_epoch_3(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_validate(*args)

    monkeypatch.setattr(loop, "validate", stop_at_epoch_3)
    interrupted = Recorder()
    with pytest.raises(KeyboardInterrupt):
        train(interrupted, tiny_data, settings, 0, tmp_path / "d.pt", log=quiet)
    monkeypatch.setattr(loop, "validate", real_validate)
    resumed = Recorder()
    train(resumed, tiny_data, settings, 0, tmp_path / "d.pt", log=quiet)
    assert len(interrupted.initialised_on) == 1 and resumed.initialised_on == []
    assert torch.equal(resumed.w, model.w)  # and it ends where the uninterrupted run ends


@pytest.mark.parametrize("name, cls", [("adam", torch.optim.Adam), ("adamax", torch.optim.Adamax)])
def test_the_optimiser_is_the_configured_one(tiny_data, tmp_path, monkeypatch, name, cls):
    used = []
    real_epoch = loop.train_epoch

    def spy(model, optimiser, *args):
        used.append(type(optimiser))
        return real_epoch(model, optimiser, *args)

    monkeypatch.setattr(loop, "train_epoch", spy)
    train(small_vae(), tiny_data, TrainSettings(epochs=1, batch_size=100, optimizer=name), 0, tmp_path / "c.pt",
          log=quiet)
    assert used == [cls]


def test_weight_average_follows_the_weights_with_the_decay():
    model = Recorder()
    average = WeightAverage(model, decay=0.75)
    assert average.module is not model and not average.module.w.requires_grad
    for value in (4.0, 8.0):
        with torch.no_grad():
            model.w.fill_(value)
        average.update(model)
    assert float(average.module.w) == pytest.approx(0.25 * 8.0 + 0.75 * (0.25 * 4.0))


def test_polyak_averaged_weights_are_validated_selected_returned_and_resumed(tiny_data, tmp_path, monkeypatch):
    """With polyak_decay the validation sees the averaged weights, the best of them are returned, and a resumed run
    carries the average on: it ends with exactly the weights of an uninterrupted run."""
    settings = TrainSettings(epochs=4, batch_size=50, lr=0.05, polyak_decay=0.9, checkpoint_every=1)
    validated, live = [], []
    real_validate, real_epoch = loop.validate, loop.train_epoch

    def record_validate(model, *args):
        validated.append(float(model.w))
        return real_validate(model, *args)

    def record_epoch(model, *args):
        total = real_epoch(model, *args)
        live.append(model.w.item())
        return total

    monkeypatch.setattr(loop, "validate", record_validate)
    monkeypatch.setattr(loop, "train_epoch", record_epoch)
    model = Recorder()
    result = train(model, tiny_data, settings, 0, tmp_path / "c.pt", log=quiet)
    assert all(abs(v) < abs(w) for v, w in zip(validated, live))  # the average lags the weights (from w = 0)
    assert model.w.item() == validated[result["best_epoch"] - 1]  # the best average is what comes back

    calls = []

    def stop_at_epoch_3(model, *args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_validate(model, *args)

    monkeypatch.setattr(loop, "validate", stop_at_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        train(Recorder(), tiny_data, settings, 0, tmp_path / "d.pt", log=quiet)
    monkeypatch.setattr(loop, "validate", real_validate)
    resumed = Recorder()
    train(resumed, tiny_data, settings, 0, tmp_path / "d.pt", log=quiet)
    assert resumed.w.item() == model.w.item()
