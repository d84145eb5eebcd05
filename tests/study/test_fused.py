"""Fused seeds (srvae.study.run.fused): the same code path as separate runs (objectives, gradients, clipping, Adam and
Adamax state, data streams) to float tolerance, training that reaches the separate runs' validation ELBO, and a
clear error for a model that vmap cannot batch."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import srvae.study.run.train as train_module
from srvae.models.base import LatentVariableModel, Scores
from srvae.registry import build_model
from srvae.study.config import TrainSettings
from srvae.study.data.datasets import BinarisedData, binarise_fixed
from srvae.study.run.fused import (
    FusedSeeds,
    UnsupportedModelError,
    build_seed_models,
    clip_grad_norm_per_seed_,
    epoch_data,
    seed_generators,
)
from srvae.study.run.step import make_optimiser, objective
from srvae.study.run.train import mean_elbo, train, train_epoch

SEEDS = [0, 1, 2]
D = 24
#: a tiny SeRe-VAE (the model fused training is for): 2 layers of 3 latents
SERE = {"layers": 2, "latents": 3, "encoder_hidden": [16], "prior_hidden": [8], "posterior_hidden": [8],
        "bijector_hidden": [8], "data_hidden": [16], "activation": "elu"}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _data(n: int = 120) -> BinarisedData:
    """Grey levels from four prototypes (structure a model can learn), binarised validation and test sets."""
    g = torch.Generator().manual_seed(0)
    prototypes = torch.rand(4, D, generator=g) ** 3
    grey = prototypes[torch.arange(n) % 4].clamp(0.02, 0.98)
    return BinarisedData("toy", grey, binarise_fixed(grey[:40], 1), binarise_fixed(grey[40:80], 2))


def _settings(**kw) -> TrainSettings:
    return TrainSettings(**{"epochs": 2, "batch_size": 20, "lr": 3e-3, "checkpoint_every": 1000,
                            "eval_batch_size": 100, **kw})


def test_one_step_objectives_and_gradients_equal_separate_models():
    data, settings = _data(), _settings()
    models = build_seed_models("sere_vae", SERE, SEEDS, data, settings, "cpu")
    fused = FusedSeeds(models, settings, randomness="same")
    x, order = epoch_data(data, seed_generators(SEEDS, "cpu"))
    batch = x[torch.arange(3).unsqueeze(1), order[:, :20]]
    torch.manual_seed(7)
    obj = fused._objectives(fused.params, fused.buffers, batch, 0.5)
    (-obj.mean(1).sum()).backward()
    for s, model in enumerate(models):
        torch.manual_seed(7)  # "same": the fused step draws the noise one model would
        separate = objective(model, batch[s], 0.5, 1)
        (-separate.mean()).backward()
        torch.testing.assert_close(obj[s], separate, rtol=1e-5, atol=1e-4)
        for name, p in model.named_parameters():
            torch.testing.assert_close(fused.params[name].grad[s], p.grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("optimizer, clip", [("adam", {"grad_clip": 1.0}), ("adamax", {"grad_clip": 1.0}),
                                             ("adam", {"grad_clip_value": 0.05})])
def test_epoch_equals_separate_train_epochs(optimizer, clip):
    """Several steps: clipping (active: the norm bound is below every seed's gradient norm, per seed; the value bound
    below some entries of every step), each seed's optimiser state and the KL weight, against train()'s own
    train_epoch on each seed's batches."""
    data = _data()
    settings = _settings(optimizer=optimizer, kl_warmup_epochs=4, weight_decay=1e-3, **clip)
    models = build_seed_models("sere_vae", SERE, SEEDS, data, settings, "cpu")
    separate = [copy.deepcopy(m) for m in models]
    fused = FusedSeeds(models, settings, randomness="same")
    x, order = epoch_data(data, seed_generators(SEEDS, "cpu"))
    epoch = 1
    torch.manual_seed(3)
    totals = fused.train_epoch(x, order, epoch)
    for s, model in enumerate(separate):
        optimiser = make_optimiser(model.parameters(), settings)
        for group in optimiser.param_groups:
            group["lr"] = train_module.learning_rate(epoch, settings)
        torch.manual_seed(3)
        total = train_epoch(model, optimiser, x[s], order[s], train_module.kl_weight(epoch, 4), settings)
        torch.testing.assert_close(totals[s], total, rtol=1e-5, atol=1e-3)
        for name, tensor in fused.state_dicts()[s].items():
            torch.testing.assert_close(tensor, model.state_dict()[name], rtol=1e-4, atol=1e-5, msg=name)


def test_each_seed_draws_the_batches_of_its_own_run(monkeypatch, tmp_path):
    """Seed s's images and order, epoch after epoch, are those train() hands its train_epoch for seed s."""
    data, settings = _data(), _settings()
    drawn: dict[int, list[tuple[Tensor, Tensor]]] = {}

    class Stop(Exception):
        pass

    for seed in SEEDS:
        drawn[seed] = []

        def record(model, optimiser, x, order, *args, _seed=seed, **kw):
            drawn[_seed].append((x.clone(), order.clone()))
            if len(drawn[_seed]) == 2:
                raise Stop
            return torch.zeros(())

        monkeypatch.setattr(train_module, "train_epoch", record)
        torch.manual_seed(seed)
        model = build_seed_models("vae", {"latents": 2, "hidden": [8]}, [seed], data, settings, "cpu")[0]
        with pytest.raises(Stop):
            train(model, data, settings, seed, tmp_path / f"{seed}.pt", log=lambda _: None)

    generators = seed_generators(SEEDS, "cpu")
    for epoch in range(2):
        x, order = epoch_data(data, generators)
        for s, seed in enumerate(SEEDS):
            torch.testing.assert_close(x[s], drawn[seed][epoch][0], rtol=0, atol=0)
            torch.testing.assert_close(order[s], drawn[seed][epoch][1], rtol=0, atol=0)
        assert not torch.equal(x[0], x[1]) and not torch.equal(order[0], order[1])


def test_clipping_is_per_seed():
    torch.manual_seed(0)
    grads = [torch.randn(3, 5, 4) * 0.1, torch.randn(3, 7) * 0.1]
    grads[0][1] *= 1e3  # seed 1 explodes
    expected = []
    for s in range(3):  # what clip_grad_norm_ does to the seed's own run
        own = [nn.Parameter(torch.zeros_like(g[s])) for g in grads]
        for p, g in zip(own, grads):
            p.grad = g[s].clone()
        torch.nn.utils.clip_grad_norm_(own, 1.0)
        expected.append([p.grad for p in own])
    before = [g.clone() for g in grads]
    norms = clip_grad_norm_per_seed_(grads, 1.0)
    assert norms[1] > 100 and norms[0] < 1 and norms[2] < 1
    for s in range(3):
        for g, e in zip(grads, expected[s]):
            torch.testing.assert_close(g[s], e)
    for s in (0, 2):  # the calm seeds are untouched by seed 1's explosion
        for g, b in zip(grads, before):
            assert torch.equal(g[s], b[s])
    assert math.isclose(float(torch.cat([g[1].flatten() for g in grads]).norm()), 1.0, rel_tol=1e-5)


def test_unstacked_models_are_the_stacked_seeds():
    data, settings = _data(), _settings()
    models = build_seed_models("sere_vae", SERE, SEEDS, data, settings, "cpu")
    original = [copy.deepcopy(m.state_dict()) for m in models]
    fused = FusedSeeds(models, settings)
    for s, state in enumerate(fused.state_dicts()):
        assert state.keys() == original[s].keys()
        for name in state:
            assert torch.equal(state[name], original[s][name])
    x, order = epoch_data(data, seed_generators(SEEDS, "cpu"))
    fused.train_epoch(x, order, 0)
    trained = fused.models()
    for s, model in enumerate(models):  # the caller's models are not trained in place; the unstacked ones are
        assert all(torch.equal(t, original[s][k]) for k, t in model.state_dict().items())
        assert any(not torch.equal(t, original[s][k]) for k, t in trained[s].state_dict().items())


def test_fused_training_reaches_the_separate_runs_validation_elbo(tmp_path):
    """Different noise per seed: the fused seeds' validation ELBOs after a few epochs match separate train()
    runs within the seeds' spread, and both improved well beyond the untrained models."""
    data, settings = _data(400), _settings(epochs=6, lr=1e-2)
    models = build_seed_models("sere_vae", SERE, SEEDS, data, settings, "cpu")
    untrained = sum(mean_elbo(m, data.valid, 100) for m in models) / 3
    fused = FusedSeeds(models, settings)
    generators = seed_generators(SEEDS, "cpu")
    torch.manual_seed(100)
    for epoch in range(settings.epochs):
        fused.train_epoch(*epoch_data(data, generators), epoch)
    fused_elbo = torch.tensor([mean_elbo(m, data.valid, 100) for m in fused.models()])
    separate_elbo = []
    for seed in SEEDS:
        model = build_seed_models("sere_vae", SERE, [seed], data, settings, "cpu")[0]
        result = train(model, data, settings, seed, tmp_path / f"{seed}.pt", log=lambda _: None)
        separate_elbo.append(result["metrics"][-1]["valid_elbo"])
    separate_elbo = torch.tensor(separate_elbo)
    gain = separate_elbo.mean() - untrained
    assert gain > 2.0, f"training did not learn: {untrained:.2f} → {separate_elbo.tolist()}"
    assert fused_elbo.mean() - untrained > 0.7 * gain, f"fused {fused_elbo.tolist()} vs separate {separate_elbo.tolist()}"
    spread = max(float(separate_elbo.std()), float(fused_elbo.std()), 0.1)
    assert abs(float(fused_elbo.mean() - separate_elbo.mean())) < 3 * spread + 0.1 * float(gain), (
        f"fused {fused_elbo.tolist()} vs separate {separate_elbo.tolist()}")


@dataclass(frozen=True)
class _HostReadConfig:
    pass


class _HostReadModel(LatentVariableModel):
    """A model that reads a tensor's value on the host (.item()) in its objective: vmap cannot batch it."""

    Config = _HostReadConfig

    def __init__(self, cfg: _HostReadConfig, data_dim: int, data_mean: Tensor | None = None) -> None:
        super().__init__(cfg, data_dim)
        self.logits = nn.Parameter(torch.zeros(data_dim))

    def score(self, x: Tensor, k: int) -> Scores:
        scale = 1.0 if self.logits.abs().max().item() < 10 else 0.5
        ll = -F.binary_cross_entropy_with_logits(scale * self.logits.expand_as(x), x, reduction="none").sum(-1)
        zero = torch.zeros(k, len(x))
        return Scores(ll.expand(k, -1), zero, zero)

    def sample(self, n: int) -> Tensor:
        return torch.bernoulli(torch.sigmoid(self.logits).expand(n, -1))


def test_a_model_vmap_cannot_batch_is_refused_with_the_fix():
    models = [_HostReadModel(_HostReadConfig(), D) for _ in SEEDS]
    with pytest.raises(UnsupportedModelError, match=r"host-read \(_HostReadModel\).*item.*separate runs"):
        FusedSeeds(models, _settings(), name="host-read")


def test_sere_maf_is_refused():
    """SeRe-MAF's spline couplings index with data-dependent shapes (aten::nonzero), which vmap cannot batch."""
    params = {"layers": 2, "latents": 3, "encoder_hidden": [8], "prior_hidden": [8], "posterior_hidden": [8],
              "bijector_hidden": [8], "data_hidden": [8], "made_hidden": [8], "data_mades": 1, "coupling_layers": 1}
    models = [build_model("sere_maf", params, D) for _ in SEEDS]
    with pytest.raises(UnsupportedModelError, match="sere_maf.*nonzero"):
        FusedSeeds(models, _settings(), name="sere_maf")
