"""The "Independent VAE" reading of the matched DLGM: independent stochastic layers, one uncoupled data layer of all
codes, encoders widened to SeRe-VAE's parameter count."""

import pytest
import torch

from baselines.dlgm import count_parameters
from baselines.independent_vae import IndependentVAE, IndependentVAEConfig
from srvae.distributions import bernoulli_log_prob
from srvae.flows.base import IdentityBijector
from srvae.registry import build_model
from srvae.sere.sere_vae import SeReVAE, SeReVAEConfig

from .test_dlgm import STUDY, TINY, assert_no_latent_code_feedback

D = 40


def tiny() -> IndependentVAE:
    torch.manual_seed(0)
    return build_model("independent_vae", TINY, data_dim=D, data_mean=torch.full((D,), 0.2))


@pytest.mark.parametrize("params", [STUDY, {}], ids=["default-study", "table1"])
def test_parameter_count_is_within_half_a_percent_of_sere_vae(params):
    sere = count_parameters(SeReVAE, SeReVAEConfig(**params), 784)
    cfg = IndependentVAEConfig(**params)
    assert count_parameters(IndependentVAE, IndependentVAEConfig(**params, match_sere_vae=False), 784) < sere
    assert abs(count_parameters(IndependentVAE, cfg, 784) - sere) <= 0.005 * sere


def test_no_path_between_layers_and_no_feedback():
    model = tiny()
    assert all(isinstance(b, IdentityBijector) for b in model.generator.bijectors)
    assert_no_latent_code_feedback(model, D, TINY["layers"], TINY["latents"])


def test_one_data_layer_of_all_codes_and_no_coupling_between_pixels():
    """log p(x | z) is the Bernoulli of one MLP of the concatenated codes; flipping pixel i moves it by exactly
    ±logit_i (SeRe-VAE's data layers, which read the previous block, would move by more)."""
    model = tiny()
    codes = torch.randn(TINY["layers"], 2, 3, TINY["latents"])
    x = torch.bernoulli(torch.full((3, D), 0.5))
    data = model.generator.data
    logits = data.net(torch.cat(list(codes), dim=-1))
    with torch.no_grad():
        torch.testing.assert_close(data.log_likelihood(codes, x), bernoulli_log_prob(x.expand_as(logits), logits))
        for i in (0, D // 2, D - 1):  # first block, a middle one, the last
            flipped = x.clone()
            flipped[:, i] = 1 - flipped[:, i]
            change = data.log_likelihood(codes, flipped) - data.log_likelihood(codes, x)
            torch.testing.assert_close(change, logits[..., i] * (flipped[:, i] - x[:, i]))
    # every layer's code reaches every pixel: no block belongs to one layer
    gradient = torch.autograd.functional.jacobian(lambda c: data.logits(c)[0, 0], codes)  # [D, L, 2, 3, N]
    assert (gradient[:, :, 0, 0].abs().sum(-1) > 0).all()


def test_decoder_starts_at_the_data_marginal_and_samples_are_binary_images():
    model = tiny()
    bias = model.generator.data.net[-1].bias
    torch.testing.assert_close(bias, torch.full((D,), 0.2).logit())
    samples = model.sample(5)
    assert samples.shape == (5, D) and set(samples.unique().tolist()) <= {0.0, 1.0}


def test_closed_form_kl_matches_the_monte_carlo_log_ratio():
    model = tiny()
    with torch.no_grad():
        s = model.score(torch.bernoulli(torch.full((2, D), 0.5)), 20000)
    assert s.kl.shape == (20000, 2, TINY["layers"]) and s.log_likelihood.shape == (20000, 2)
    torch.testing.assert_close((s.log_posterior - s.log_prior).mean(0), s.kl.sum(-1).mean(0), atol=0.05, rtol=0)


def test_the_three_dlgm_readings_are_config_entries_tied_to_no_published_number(default_config):
    readings = {name: entry for name, entry in default_config.models.items()
                if entry.cls in ("dlgm", "independent_vae")}
    assert {e.cls for e in readings.values()} == {"dlgm", "independent_vae"}
    assert {"independent_vae", "independent_vae_table1"} <= set(readings)
    assert all(entry.reported is None for entry in readings.values())
    assert all("reading" in entry.label for entry in readings.values())
