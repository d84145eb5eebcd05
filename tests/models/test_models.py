"""Sanity checks every registered model of the default study must pass (nflows-style shared checks):
shapes, finiteness, ELBO and importance-weight consistency, sampling, parameters and checkpoints."""

from pathlib import Path

import pytest
import torch

from srvae.infra.atomic_io import load_checkpoint, save_checkpoint
from srvae.registry import build_model
from srvae.study.data.dequantise import logit_transform
from srvae.study.run.evaluate import iw_log_likelihood

from ..conftest import REPO

B, D = 16, 784


def _entries():
    from srvae.study.config import load_config

    cfg = load_config([REPO / "config.yaml"])
    return {name: cfg.models[name] for name in cfg.study.models}


ENTRIES = _entries()


def _build(name):
    entry = ENTRIES[name]
    return build_model(entry.cls, entry.params, D, data_mean=torch.full((D,), 0.13))


@pytest.fixture(params=sorted(ENTRIES))
def name(request):
    return request.param


@pytest.fixture
def model(name):
    torch.manual_seed(0)
    return _build(name)


@pytest.fixture
def x(model):
    """Data of the model's kind: binary pixels, or dequantised pixels in logit space (λ = 1e-6)."""
    pixels = torch.bernoulli(torch.full((B, D), 0.13))
    if model.data_kind == "binary":
        return pixels
    return logit_transform((255 * pixels + torch.rand(B, D)) / 256, 1e-6)


def test_scores_have_the_interface_shapes_and_are_finite(model, x):
    s = model.score(x, 5)
    for t in (s.log_likelihood, s.log_prior, s.log_posterior, s.log_weights):
        assert t.shape == (5, B) and torch.isfinite(t).all()
    if model.data_kind == "binary":
        assert (s.log_likelihood <= 0).all()  # a Bernoulli likelihood
    if s.kl is not None:
        assert s.kl.shape[:2] == (5, B) and s.kl.ndim == 3 and (s.kl > -1e-4).all()
    assert model.log_importance_weights(x, 3).shape == (3, B)


def test_elbo_terms_add_up(model, x):
    terms = model.elbo_terms(x)
    assert terms.reconstruction.shape == terms.kl.shape == (B,)
    assert terms.kl_per_layer.shape[0] == B
    assert torch.allclose(terms.kl_per_layer.sum(-1), terms.kl)
    assert torch.allclose(terms.elbo, terms.reconstruction - terms.kl)


def test_an_elbo_terms_of_its_own_is_the_interfaces_draw_for_draw(model, x):
    """A model that overrides elbo_terms (to skip work) computes what the interface's default, score(x, 1), does."""
    from srvae.models import LatentVariableModel

    torch.manual_seed(1)
    own = model.elbo_terms(x)
    torch.manual_seed(1)
    default = LatentVariableModel.elbo_terms(model, x)
    for field in ("reconstruction", "kl", "kl_per_layer"):
        assert torch.equal(getattr(own, field), getattr(default, field)), field


@torch.no_grad()
def test_closed_form_kl_agrees_with_the_importance_weights(model, x):
    """E_q[log w] = ELBO: the KL used in training and the log-densities used in evaluation agree."""
    model.eval()
    torch.manual_seed(1)
    elbos = torch.stack([model.elbo_terms(x).elbo for _ in range(50)])  # MC noise too where KL is sampled
    log_w = model.log_importance_weights(x, 2000)
    sem = (elbos.var(0) / 50 + log_w.var(0) / 2000).sqrt()
    assert ((elbos.mean(0) - log_w.mean(0)).abs() < 5 * sem + 0.05).all()


@torch.no_grad()
def test_importance_weighting_tightens_the_bound(model, x):
    model.eval()
    torch.manual_seed(2)
    elbo = iw_log_likelihood(model, x, k=1, k_chunk=1, batch_size=B).log_px.mean()
    iw = iw_log_likelihood(model, x, k=200, k_chunk=50, batch_size=B).log_px.mean()
    if model.exact:  # every weight is p(x): the bound is the log-likelihood whatever K
        torch.testing.assert_close(iw, elbo)
    else:
        assert iw > elbo


def test_samples_are_of_the_data_kind_and_need_no_data(model):
    model.eval()
    samples = model.sample(7)
    assert samples.shape == (7, D) and not samples.requires_grad
    if model.data_kind == "binary":
        assert set(samples.unique().tolist()) <= {0.0, 1.0}
    else:
        assert torch.isfinite(samples).all()


def test_every_parameter_gets_a_gradient_from_the_elbo(model, x):
    model.train()
    model.elbo_terms(x).elbo.mean().backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not unused, f"parameters without a finite gradient: {unused}"
    assert model.num_parameters == sum(p.numel() for p in model.parameters())


def test_checkpoint_round_trip_restores_the_model(name, model, x, tmp_path: Path):
    model.eval()
    save_checkpoint(tmp_path / "m.pt", {"state_dict": model.state_dict()})
    torch.manual_seed(5)  # other initial weights
    twin = _build(name)
    assert any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(), twin.state_dict().values()))
    twin.load_state_dict(load_checkpoint(tmp_path / "m.pt")["state_dict"])
    twin.eval()
    torch.manual_seed(3)
    a = model.log_importance_weights(x, 4)
    torch.manual_seed(3)
    b = twin.log_importance_weights(x, 4)
    assert torch.allclose(a, b)

