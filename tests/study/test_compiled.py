"""``train.compile``: the optimiser ``train`` builds, the compiled loss of ``train_epoch``, and the eager fallback
when compiling fails; without it, ``train_epoch`` is the plain loop (fused Adam) bit for bit."""

import copy

import pytest
import torch

from srvae.registry import build_model
from srvae.study.config import TrainSettings
from srvae.study.run import train as train_module
from srvae.study.run.step import CompiledLoss, make_optimiser, objective
from srvae.study.run.train import train_epoch

SETTINGS = TrainSettings(batch_size=8, lr=1e-2, grad_clip=1.0, weight_decay=1e-3)
COMPILED = SETTINGS.model_copy(update={"compile": True})
VAE = {"latents": 4, "hidden": [16]}


def vae_and_batch():
    torch.manual_seed(0)
    x = torch.bernoulli(torch.full((8, 20), 0.3))
    return build_model("vae", VAE, 20, data_mean=x.mean(0)), x


@pytest.fixture
def fresh_compiled_loss(monkeypatch):
    """A compiled loss of this test's own: no graphs, no failure remembered from other tests."""
    monkeypatch.setattr(train_module, "COMPILED_LOSS", CompiledLoss())


@pytest.mark.parametrize("optimizer, cls", [("adam", torch.optim.Adam), ("adamax", torch.optim.Adamax)])
@pytest.mark.parametrize("compile", [False, True])
def test_the_optimiser_has_the_settings_and_adam_is_fused(optimizer, cls, compile):
    model, _ = vae_and_batch()
    settings = SETTINGS.model_copy(update={"optimizer": optimizer, "compile": compile})
    opt = make_optimiser(model.parameters(), settings)
    assert type(opt) is cls
    assert (opt.defaults["lr"], opt.defaults["eps"], opt.defaults["weight_decay"]) == (
        settings.lr, settings.adam_eps, settings.weight_decay)
    fused = optimizer == "adam"
    assert bool(opt.defaults.get("fused")) == fused and bool(opt.defaults["foreach"]) != fused


def test_the_fused_adam_is_the_same_update_as_the_foreach_one():
    model, x = vae_and_batch()
    twin = copy.deepcopy(model)
    foreach = torch.optim.Adam(model.parameters(), lr=SETTINGS.lr, eps=SETTINGS.adam_eps,
                               weight_decay=SETTINGS.weight_decay, foreach=True)
    for m, opt in ((model, foreach), (twin, make_optimiser(twin.parameters(), SETTINGS))):
        for i in range(3):
            torch.manual_seed(i)  # the same draws for both
            opt.zero_grad()
            (-objective(m, x, 1.0, 1).mean()).backward()
            opt.step()
    for a, b in zip(model.parameters(), twin.parameters()):  # rounding apart
        torch.testing.assert_close(a, b)


def test_an_eager_epoch_is_the_plain_loop_bit_for_bit():
    """What train_epoch does without train.compile: objective, backward, clip, step, batch by batch."""
    model, x = vae_and_batch()
    x = torch.cat([x, 1 - x])
    order = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    twin = copy.deepcopy(model)
    torch.manual_seed(1)
    total = train_epoch(model, make_optimiser(model.parameters(), SETTINGS), x, order, 0.3, SETTINGS)
    torch.manual_seed(1)
    opt = torch.optim.Adam(twin.parameters(), lr=SETTINGS.lr, eps=SETTINGS.adam_eps,
                           weight_decay=SETTINGS.weight_decay, fused=True)
    twin.train()
    expected = torch.zeros(())
    for idx in order.split(SETTINGS.batch_size):
        obj = objective(twin, x[idx], 0.3, 1)
        opt.zero_grad(set_to_none=True)
        (-obj.mean()).backward()
        torch.nn.utils.clip_grad_norm_(twin.parameters(), SETTINGS.grad_clip)
        opt.step()
        expected += obj.detach().sum()
    assert torch.equal(total, expected)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters()))


def test_a_compiled_epoch_computes_the_eager_one(monkeypatch, fresh_compiled_loss):
    pytest.importorskip("torch._inductor")
    monkeypatch.setattr(torch._inductor.config, "fallback_random", True)  # eager's random draws, for comparison
    monkeypatch.setattr(torch._dynamo.config, "error_on_recompile", True)  # a new β must not recompile
    model, x = vae_and_batch()
    twin = copy.deepcopy(model)
    totals = []
    for m, settings in ((model, SETTINGS), (twin, COMPILED)):
        torch.manual_seed(2)
        opt = make_optimiser(m.parameters(), settings)
        totals.append([train_epoch(m, opt, x, torch.arange(8), beta, settings) for beta in (0.25, 1.0)])
    torch.testing.assert_close(totals[1], totals[0], rtol=1e-4, atol=1e-4)
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_a_failing_compilation_falls_back_to_eager_from_the_same_random_state(monkeypatch, fresh_compiled_loss):
    def broken_compile(fn, **kwargs):
        def compiled(*args):
            torch.randn(3)  # consumes random numbers before failing, as a partial compiled run would
            raise RuntimeError("no C++ compiler")
        return compiled

    model, x = vae_and_batch()
    twin = copy.deepcopy(model)
    torch.manual_seed(3)
    expected = train_epoch(model, make_optimiser(model.parameters(), COMPILED), x, torch.arange(8), 1.0, SETTINGS)
    monkeypatch.setattr(torch, "compile", broken_compile)
    opt = make_optimiser(twin.parameters(), COMPILED)
    torch.manual_seed(3)
    with pytest.warns(UserWarning, match="torch.compile failed, training eagerly: RuntimeError: no C"):
        got = train_epoch(twin, opt, x, torch.arange(8), 1.0, COMPILED)
    torch.testing.assert_close(got, expected)
    train_epoch(twin, opt, x, torch.arange(8), 1.0, COMPILED)  # eager from now on: no second warning, no error
