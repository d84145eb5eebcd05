"""The fast training step: fused Adam, the compiled objective, and the eager fallback when compiling fails."""

import copy

import pytest
import torch

from srvae.models.registry import build_model
from srvae.study.compiled import TrainingStep, make_adam
from srvae.study.config import TrainSettings
from srvae.study.train import train_epoch

SETTINGS = TrainSettings(batch_size=8, lr=1e-2, grad_clip=1.0)
VAE = {"latents": 4, "hidden": [16]}


def vae_and_batch():
    torch.manual_seed(0)
    x = torch.bernoulli(torch.full((8, 20), 0.3))
    return build_model("vae", VAE, 20, data_mean=x.mean(0)), x


def test_adam_is_fused_where_supported_with_the_settings_of_the_loop():
    model, _ = vae_and_batch()
    opt = make_adam(model, SETTINGS)
    assert opt.defaults["fused"] and opt.defaults["lr"] == SETTINGS.lr and opt.defaults["eps"] == SETTINGS.adam_eps


def test_an_eager_step_is_a_step_of_the_training_loop():
    model, x = vae_and_batch()
    twin = copy.deepcopy(model)
    torch.manual_seed(1)
    total = train_epoch(model, torch.optim.Adam(model.parameters(), lr=SETTINGS.lr, eps=SETTINGS.adam_eps), x,
                        torch.arange(8), 0.5, SETTINGS)
    torch.manual_seed(1)
    twin.train()
    step_total = TrainingStep(twin, make_adam(twin, SETTINGS), SETTINGS)(x, 0.5)
    torch.testing.assert_close(step_total, total)
    for a, b in zip(model.parameters(), twin.parameters()):  # fused and for-loop Adam: the same update
        torch.testing.assert_close(a, b)


def test_a_compiled_step_computes_the_eager_objective(monkeypatch):
    pytest.importorskip("torch._inductor")
    monkeypatch.setattr(torch._inductor.config, "fallback_random", True)  # eager's random draws, for comparison
    monkeypatch.setattr(torch._dynamo.config, "error_on_recompile", True)  # a new β must not recompile
    model, x = vae_and_batch()
    twin = copy.deepcopy(model)
    totals = []
    for m, compile in ((model, False), (twin, True)):
        torch.manual_seed(2)
        m.train()
        step = TrainingStep(m, make_adam(m, SETTINGS), SETTINGS, compile=compile)
        totals.append([step(x, beta) for beta in (0.25, 1.0)])
    torch.testing.assert_close(totals[1], totals[0], rtol=1e-4, atol=1e-4)
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_a_failing_compilation_falls_back_to_eager_from_the_same_random_state(monkeypatch):
    def broken_compile(fn, **kwargs):
        def compiled(*args):
            torch.randn(3)  # consumes random numbers before failing, as a partial compiled run would
            raise RuntimeError("no C++ compiler")
        return compiled

    model, x = vae_and_batch()
    twin = copy.deepcopy(model)
    torch.manual_seed(3)
    expected = TrainingStep(model, make_adam(model, SETTINGS), SETTINGS)(x, 1.0)
    monkeypatch.setattr(torch, "compile", broken_compile)
    step = TrainingStep(twin, make_adam(twin, SETTINGS), SETTINGS, compile=True)
    torch.manual_seed(3)
    with pytest.warns(UserWarning, match="torch.compile failed, training eagerly: RuntimeError: no C"):
        got = step(x, 1.0)
    torch.testing.assert_close(got, expected)
    step(x, 1.0)  # eager from now on: no second warning, no error
