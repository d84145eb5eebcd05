"""The grouped SeRe-VAE stack computes the same function as one module per layer, evaluated layer by layer.

Every model built on :class:`~srvae.sere.sere_vae.SeReVAE` runs its per-layer networks grouped
(:mod:`srvae.nets.grouped`) wherever they do not depend on the chain. Here each model's scores are recomputed in
float64 as the per-layer model did (one layer after another: its encoder, posterior, prior, bijector and data layer,
log-densities and KL accumulated in the loop), every network evaluated alone (``group(l, …)``, which
``tests/nets/test_grouped.py`` shows to be the separate ``nn.Linear`` / ``ConditionalMLP`` it stands for), with the
same noise; grouped and per-layer agree to rounding, and so do the gradients of every parameter. The chain's fused
maps of ``z_{l-1}`` (one matrix product per layer for the posterior's and the bijector's, issue 25) are checked the
same way: the per-layer model applies each ``nn.Linear`` of ``z_{l-1}`` on its own.
"""

from __future__ import annotations

import pytest
import torch

from srvae.distributions import bernoulli_log_prob, gaussian_kl, gaussian_log_prob, reparameterise
from srvae.registry import build_model
from srvae.sere.conv_sere_vae import ConvEncoders
from srvae.sere.stochastic_layers import BLOCKWISE_ROWS, IndependentDataLayers

D = 144  # a 12 × 12 image: the convolutional models need a square one
MLP = {"layers": 4, "latents": 3, "encoder_hidden": (16,), "prior_hidden": (8,), "posterior_hidden": (8,),
       "bijector_hidden": (8,), "data_hidden": (8,)}
CONV = {"layers": 4, "latents": 3, "channels": 3, "depths": (1, 1), "prior_hidden": (8,), "posterior_hidden": (8,),
        "bijector_hidden": (8,)}
MODELS = {
    "sere_vae": ("sere_vae", MLP),
    "sere_vae-prior-first": ("sere_vae", {**MLP, "posterior_first": "prior"}),
    "dlgm": ("dlgm", MLP),
    "dlgm-no-path": ("dlgm", {**MLP, "top_down": False}),
    "sr_iaf": ("sr_iaf", {**MLP, "iaf_steps": 2}),
    "sere_maf": ("sere_maf", {**MLP, "made_hidden": (16,), "data_mades": 2}),
    "conv_sere_vae": ("conv_sere_vae", CONV),
    "conv_dlgm": ("conv_dlgm", CONV),
}


def layer_evidence(encoder: torch.nn.Module, l: int, x: torch.Tensor) -> torch.Tensor:
    """Layer ``l``'s encoder of ``x`` and its posterior's first map, alone."""
    if isinstance(encoder, ConvEncoders):
        return encoder.evidence.group(l, encoder.encoders[l](x))
    return encoder.group(l, x)


def block_log_prob(data, l: int, block, z, x_prev) -> torch.Tensor:
    """``log p(x_l | z_l, x_{l-1})`` from block ``l``'s data layer alone."""
    if isinstance(data, IndependentDataLayers):
        return data.layers[l].log_prob(block, z, x_prev)
    logits = data.layer(l, z, x_prev)
    return bernoulli_log_prob(block.expand_as(logits), logits)


def per_layer_scores(model, x: torch.Tensor, k: int) -> tuple[torch.Tensor, ...]:
    """``(log p(x|z), log p(ε), log q(ε|x), KL per layer)``, one layer after another."""
    priors, data = model.generator.priors, model.generator.data
    shape = (k, x.shape[0], model.cfg.latents)
    blocks = model.partition.split(x)
    z = x_prev = None
    log_lik, log_p, log_q, kl = 0.0, 0.0, 0.0, []
    for l, (posterior, bijector) in enumerate(zip(model.inference.posteriors, model.inference.bijectors)):
        prior_raw = priors.raw(l, z) if model.cfg.posterior_first == "prior" else None
        q_mean, q_std = posterior(layer_evidence(model.inference.encoder, l, x), z, prior_raw)
        p_mean, p_std = priors.layer(l, z)
        eps = reparameterise(q_mean.expand(shape), q_std.expand(shape))
        log_q = log_q + gaussian_log_prob(eps, q_mean, q_std)
        log_p = log_p + gaussian_log_prob(eps, p_mean, p_std)
        kl.append(gaussian_kl(q_mean, q_std, p_mean, p_std).expand(shape[:-1]))
        z, _ = bijector(eps, z)
        log_lik = log_lik + block_log_prob(data, l, blocks[l], z, x_prev)
        x_prev = blocks[l]
    return log_lik, log_p, log_q, torch.stack(kl, dim=-1)


def model_and_data(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    """Model ``name`` in float64, and three images of its kind."""
    cls, params = MODELS[name]
    torch.manual_seed(0)
    model = build_model(cls, params, data_dim=D, data_mean=torch.rand(D) * 0.8 + 0.1).double()
    if model.data_kind == "continuous":
        x = torch.randn(3, D, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    else:
        x = torch.bernoulli(torch.full((3, D), 0.4, dtype=torch.float64), generator=torch.Generator().manual_seed(1))
    if hasattr(model, "initialise"):
        with torch.no_grad():
            model.initialise(x)  # weight norm's data-dependent start: away from the trivial one
    return model, x


@pytest.mark.parametrize("k", [2, BLOCKWISE_ROWS // 3 + 1], ids=["training-batch", "importance-sampling"])
@pytest.mark.parametrize("name", list(MODELS))
def test_grouped_model_is_the_per_layer_model(name, k):
    model, x = model_and_data(name)
    with torch.no_grad():
        torch.manual_seed(7)
        grouped = model.score(x, k)
        torch.manual_seed(7)  # the same noise, drawn in the same order
        per_layer = per_layer_scores(model, x, k)
    for got, expected in zip((grouped.log_likelihood, grouped.log_prior, grouped.log_posterior, grouped.kl), per_layer):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", ["sere_vae", "sere_vae-prior-first", "dlgm", "sr_iaf"])
def test_grouped_gradients_are_the_per_layer_gradients(name):
    """The backward pass through the grouped and fused layers gives every parameter the per-layer model's gradient
    (of the importance-weighted bound and the KL terms: every score reaches every parameter)."""
    model, x = model_and_data(name)
    params = list(model.parameters())

    def gradients(scores: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        log_lik, log_p, log_q, kl = scores
        bound = torch.logsumexp(log_lik + log_p - log_q, 0).sum() - kl.sum()
        return torch.autograd.grad(bound, params, allow_unused=True, materialize_grads=True)

    torch.manual_seed(7)
    s = model.score(x, 2)
    grouped = gradients((s.log_likelihood, s.log_prior, s.log_posterior, s.kl))
    torch.manual_seed(7)
    per_layer = gradients(per_layer_scores(model, x, 2))
    for (name_, _), got, expected in zip(model.named_parameters(), grouped, per_layer):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-10, msg=name_)
    assert any(g.abs().sum() > 0 for g in grouped)
