"""The matched DLGM: SeRe-VAE's stack with the latent-code feedback cut and widened encoders.

Its short training run is in ``test_sere_vae.py`` (one check for both models of the shared stack).
"""

from dataclasses import replace

import pytest
import torch

from baselines.dlgm import DLGM, DLGMConfig, count_parameters, matched_encoder_hidden
from srvae.flows.base import IdentityBijector
from srvae.models.registry import build_model
from srvae.sere.sere_vae import SeReVAE, SeReVAEConfig

D = 40
TINY = dict(layers=4, latents=3, encoder_hidden=(16,), prior_hidden=(8,), posterior_hidden=(8,),
            bijector_hidden=(8,), data_hidden=(8,))

#: the default-study size (config.yaml ``dlgm`` / ``sere_vae``) and the paper's Table 1 layout (the defaults)
STUDY = dict(layers=5, latents=8, encoder_hidden=(64,), prior_hidden=(32,), posterior_hidden=(32,),
             bijector_hidden=(32,), data_hidden=(64,))


@pytest.mark.parametrize("params", [STUDY, {}], ids=["default-study", "table1"])
def test_parameter_count_is_within_five_percent_of_sere_vae(params):
    sere = count_parameters(SeReVAE, SeReVAEConfig(**params), 784)
    cfg = DLGMConfig(**params)
    unmatched = count_parameters(DLGM, replace(cfg, match_sere_vae=False), 784)
    matched = count_parameters(DLGM, cfg, 784)
    assert unmatched < sere  # same widths: cutting the feedback removes parameters ...
    assert abs(matched - sere) <= 0.05 * sere  # ... and widening the encoders gives them back
    assert abs(matched - sere) < abs(unmatched - sere)
    assert matched_encoder_hidden(cfg, 784)[0] > cfg.encoder_hidden[0]


def test_feedback_is_cut_free_priors_identity_bijectors_encoder_only_posteriors():
    torch.manual_seed(0)
    model = build_model("dlgm", TINY, data_dim=D)
    assert isinstance(model, DLGM)
    assert all(isinstance(b, IdentityBijector) for b in model.generator.bijectors)
    assert all(p.context_dim == 0 and len(list(p.parameters())) == 1 for p in model.generator.priors)
    assert all(q.context_dim == 0 and q.first is None for q in model.inference.posteriors)
    x = torch.bernoulli(torch.full((3, D), 0.5))
    torch.manual_seed(5)
    codes, *_ = model.posterior_pass(x, 2)
    # z_l = ε_l ~ q(ε_l | x), drawn from the layer's encoder alone: replay the same noise without any z_{l-1}
    torch.manual_seed(5)
    for z, q, h in zip(codes, model.inference.posteriors, model.inference.encode(x)):
        mean, std = q(h)
        torch.testing.assert_close(z, mean + std * torch.randn(2, 3, TINY["latents"]))


def test_interface_shapes():
    model = build_model("dlgm", TINY, data_dim=D)
    s = model.score(torch.bernoulli(torch.full((4, D), 0.5)), 5)
    assert s.log_weights.shape == (5, 4) and s.kl.shape == (5, 4, TINY["layers"])
    samples = model.sample(3)
    assert samples.shape == (3, D) and set(samples.unique().tolist()) <= {0.0, 1.0}

