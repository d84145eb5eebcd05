"""The matched DLGM: SeRe-VAE's stack with the latent-code feedback cut, a top-down path kept (or, as a named
variant, none), and widened encoders.

Its short training run is in ``test_sere_vae.py`` (one check for both models of the shared stack).
"""

from dataclasses import replace

import pytest
import torch

from baselines.dlgm import DLGM, DLGMConfig, count_parameters, matched_widths
from srvae.flows.base import IdentityBijector
from srvae.registry import build_model
from srvae.sere.bijector import AffineRankOneBijector
from srvae.sere.sere_vae import SeReVAE, SeReVAEConfig

D = 40
TINY = dict(layers=4, latents=3, encoder_hidden=(16,), prior_hidden=(8,), posterior_hidden=(8,),
            bijector_hidden=(8,), data_hidden=(8,))

#: the default-study size (config.yaml ``dlgm`` / ``sere_vae``) and the paper's Table 1 layout (the defaults)
STUDY = dict(layers=5, latents=8, encoder_hidden=(64,), prior_hidden=(32,), posterior_hidden=(32,),
             bijector_hidden=(32,), data_hidden=(64,))


@pytest.mark.parametrize("top_down", [True, False], ids=["top-down", "no-path"])
@pytest.mark.parametrize("first", ["network", "prior"])
@pytest.mark.parametrize("params", [STUDY, {}], ids=["default-study", "table1"])
def test_parameter_count_is_within_half_a_percent_of_sere_vae(params, first, top_down):
    sere = count_parameters(SeReVAE, SeReVAEConfig(**params, posterior_first=first), 784)
    cfg = DLGMConfig(**params, posterior_first=first, top_down=top_down)
    unmatched = count_parameters(DLGM, replace(cfg, match_sere_vae=False), 784)
    matched = count_parameters(DLGM, cfg, 784)
    assert unmatched < sere  # same widths: cutting the feedback removes parameters ...
    assert abs(matched - sere) <= 0.005 * sere  # ... and widening the encoders gives them back
    assert matched_widths(cfg, 784, "encoder_hidden", DLGM, SeReVAE)[0] > cfg.encoder_hidden[0]


def _codes(model: DLGM, x: torch.Tensor, seed: int = 5) -> list[torch.Tensor]:
    torch.manual_seed(seed)
    return model.posterior_pass(x, 2)[0]


def test_no_latent_code_feedback_into_prior_or_posterior():
    torch.manual_seed(0)
    model = build_model("dlgm", TINY, data_dim=D)
    assert isinstance(model, DLGM) and model.cfg.top_down
    priors = model.generator.priors  # free parameters only, one free Gaussian per layer
    assert [p.shape for p in priors.parameters()] == [(TINY["layers"], 2 * TINY["latents"])]
    assert_no_latent_code_feedback(model, D, TINY["layers"], TINY["latents"])


def assert_no_latent_code_feedback(model, data_dim: int, layers: int, latents: int) -> None:
    """Neither a prior nor a posterior of ``model`` reads z_{l-1}: their outputs do not change with it."""
    priors = model.generator.priors
    assert priors.context_dims == (0,) * layers
    assert all(q.context_dim == 0 and q.first is None for q in model.inference.posteriors)
    h = model.inference.encode(torch.bernoulli(torch.full((3, data_dim), 0.5)))
    for l, (q, evidence) in enumerate(zip(model.inference.posteriors, h)):
        z_a, z_b = torch.randn(2, 3, latents), torch.randn(2, 3, latents)
        for a, b in zip(q(evidence, z_a), q(evidence, z_b)):  # the posterior's output ignores z_{l-1}
            torch.testing.assert_close(a, b)
        for a, b in zip(priors.layer(l, z_a), priors.layer(l, z_b)):
            torch.testing.assert_close(a, b)


def test_top_down_path_makes_each_code_depend_on_the_one_above():
    torch.manual_seed(0)
    model = build_model("dlgm", TINY, data_dim=D)
    assert all(isinstance(b, AffineRankOneBijector) for b in model.generator.bijectors)
    assert [b.context_dim for b in model.generator.bijectors] == [0] + [TINY["latents"]] * (TINY["layers"] - 1)
    eps = torch.randn(5, TINY["latents"])
    for bijector in model.generator.bijectors[1:]:  # the generator's z_l moves with z_{l-1} at fixed ε_l
        with torch.no_grad():
            bijector.conditioner.rest[-1][-1].weight.normal_()  # leave the near-identity start
        z_a, _ = bijector(eps, torch.randn(5, TINY["latents"]))
        z_b, _ = bijector(eps, torch.randn(5, TINY["latents"]))
        assert not torch.allclose(z_a, z_b)


def test_no_path_variant_has_identity_transforms_and_encoder_only_codes():
    torch.manual_seed(0)
    model = build_model("dlgm", {**TINY, "top_down": False}, data_dim=D)
    assert all(isinstance(b, IdentityBijector) for b in model.generator.bijectors)
    x = torch.bernoulli(torch.full((3, D), 0.5))
    codes = _codes(model, x)
    # z_l = ε_l ~ q(ε_l | x), drawn from the layer's encoder alone: replay the same noise without any z_{l-1}
    torch.manual_seed(5)
    for z, q, h in zip(codes, model.inference.posteriors, model.inference.encode(x)):
        mean, std = q(h)
        torch.testing.assert_close(z, mean + std * torch.randn(2, 3, TINY["latents"]))


@pytest.mark.parametrize("top_down", [True, False])
def test_interface_shapes(top_down):
    model = build_model("dlgm", {**TINY, "top_down": top_down}, data_dim=D)
    s = model.score(torch.bernoulli(torch.full((4, D), 0.5)), 5)
    assert s.log_weights.shape == (5, 4) and s.kl.shape == (5, 4, TINY["layers"])
    samples = model.sample(3)
    assert samples.shape == (3, D) and set(samples.unique().tolist()) <= {0.0, 1.0}


def test_both_variants_are_in_the_default_study(default_config):
    variants = {default_config.models[m].params.get("top_down", True)
                for m in default_config.study.models if default_config.models[m].cls == "dlgm"}
    assert variants == {True, False}
