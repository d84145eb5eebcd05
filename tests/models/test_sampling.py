"""Samples come from the model's own distribution, not only in its shape and support: on 4-pixel data, where all
16 images can be listed, the frequencies of many samples match ``p(x)`` computed independently (by numerical integration
over the latent for a one-latent VAE; by the model's own importance-weighted estimate for every binary class)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from srvae.registry import build_model

D = 4
IMAGES = torch.tensor(list(itertools.product([0.0, 1.0], repeat=D)))  # all 16 binary images
MEANS = torch.tensor([0.1, 0.3, 0.6, 0.9])  # the decoder's starting pixel means: far from ½ and from each other


def _frequencies(samples: torch.Tensor) -> torch.Tensor:
    """The share of ``samples`` equal to each of the 16 images."""
    return (samples[:, None, :] == IMAGES[None]).all(-1).double().mean(0)


def _total_variation(p: torch.Tensor, q: torch.Tensor) -> float:
    return float((p - q).abs().sum() / 2)


def test_vae_samples_follow_the_prior_predictive_integrated_over_the_latent():
    """p(x) = ∫ N(z; 0, 1) Π_i Bernoulli(x_i; sigmoid(decoder(z))_i) dz on a fine grid, with the
    decoder's weights moved well away from their start so that the pixels depend on each other through z."""
    torch.manual_seed(0)
    model = build_model("vae", {"latents": 1, "hidden": [8]}, D, data_mean=MEANS)
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.add_(3.0 * torch.randn_like(p))
    nodes = np.linspace(-9.0, 9.0, 36_001)  # a fine grid: the perturbed decoder has steep steps in z
    weights = np.exp(-nodes**2 / 2) * (nodes[1] - nodes[0])  # ∫ f(z) exp(−z²/2) dz ≈ Σ w f(z)
    with torch.no_grad():
        probs = torch.sigmoid(model.decoder(torch.from_numpy(nodes).float()[:, None])).double()  # [nodes, D]
    likelihood = torch.where(IMAGES[:, None, :].bool(), probs, 1 - probs).prod(-1)  # [16, nodes]
    exact = likelihood @ torch.from_numpy(weights / np.sqrt(2 * np.pi))
    assert float(exact.sum()) == pytest.approx(1.0, abs=1e-6)
    marginals = probs.T @ torch.from_numpy(weights / np.sqrt(2 * np.pi))  # each pixel's P(x_i = 1)
    independent = torch.where(IMAGES.bool(), marginals, 1 - marginals).prod(-1)
    assert _total_variation(exact, independent) > 0.03  # pixels drawn one by one from their marginals would fail
    torch.manual_seed(1)
    samples = model.eval().sample(40_000)
    assert _total_variation(_frequencies(samples), exact) < 0.015  # sampling noise: about 0.005


SERE = {"layers": 2, "latents": 1, "encoder_hidden": [8], "prior_hidden": [8], "posterior_hidden": [8],
        "bijector_hidden": [8], "data_hidden": [8]}
#: every binary class with a fully connected decoder, at a size where K = 4,000 importance weights are near exact
SMALL = {
    "vae": {"latents": 1, "hidden": [8]},
    "sere_vae": SERE,
    "sr_iaf": SERE,
    "dlgm": {**SERE, "match_sere_vae": False},
    "independent_vae": {**SERE, "match_sere_vae": False},
    "ladder_vae": {"latents": [2, 1], "hidden": [8, 8]},
    "iaf_vae": {"latents": 2, "hidden": [8], "context": 4, "made_hidden": [8]},
}


@pytest.mark.parametrize("cls", sorted(SMALL))
def test_samples_follow_the_models_own_likelihood(cls):
    """The frequencies of 20,000 samples against ``exp log p̂_K(x)`` of each image (K = 4,000): a sampler that
    thresholds the decoder's means, or draws from another distribution than the one scored, is far off."""
    torch.manual_seed(0)
    model = build_model(cls, SMALL[cls], D, data_mean=MEANS).eval()
    with torch.no_grad():
        log_w = model.log_importance_weights(IMAGES, 4000)
        likelihood = (torch.logsumexp(log_w.double(), 0) - np.log(4000)).exp()
        samples = model.sample(20_000)
    assert float(likelihood.sum()) == pytest.approx(1.0, abs=0.1)
    assert _total_variation(_frequencies(samples), likelihood) < 0.08  # seen: 0.007–0.04
