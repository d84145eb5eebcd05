"""The convolutional DLGM: the conv SeRe-VAE with the latent-code feedback cut, the same convolutional stacks, and
Gaussian heads widened to the conv SeRe-VAE's parameter count."""

import pytest
import torch

from baselines.conv_dlgm import ConvDLGM, ConvDLGMConfig
from baselines.dlgm import count_parameters, matched_widths
from srvae.flows.base import IdentityBijector
from srvae.registry import build_model
from srvae.sere.conv_sere_vae import ConvSeReVAE, ConvSeReVAEConfig

from .test_dlgm import assert_no_latent_code_feedback

D = 144
TINY = dict(layers=4, latents=3, channels=3, depths=(1, 1), prior_hidden=(8,), posterior_hidden=(8,),
            bijector_hidden=(8,))
#: the default-study size (config.yaml ``conv_sere_vae`` / ``conv_dlgm``) and the paper's Table 2 layout (defaults)
STUDY = dict(layers=4, latents=8, channels=4, depths=(0, 1), prior_hidden=(32,), posterior_hidden=(32,),
             bijector_hidden=(32,))


@pytest.mark.parametrize("top_down", [True, False], ids=["top-down", "no-path"])
@pytest.mark.parametrize("params", [STUDY, {}, {"dense_blocks": 1}], ids=["default-study", "table2", "table2-resnet"])
def test_parameter_count_matches_the_conv_sere_vaes(params, top_down):
    sere = count_parameters(ConvSeReVAE, ConvSeReVAEConfig(**params), 784)
    cfg = ConvDLGMConfig(**params, top_down=top_down)
    unmatched = count_parameters(ConvDLGM, ConvDLGMConfig(**params, top_down=top_down, match_sere_vae=False), 784)
    matched = count_parameters(ConvDLGM, cfg, 784)
    assert unmatched < sere  # same widths: cutting the feedback removes parameters ...
    assert abs(matched - sere) <= 0.005 * sere  # ... and widening the Gaussian heads gives them back
    assert matched_widths(cfg, 784, "posterior_hidden", ConvDLGM, ConvSeReVAE)[0] > cfg.posterior_hidden[0]


def test_convolutional_stacks_are_the_conv_sere_vaes():
    torch.manual_seed(0)
    sere = ConvSeReVAE(ConvSeReVAEConfig(**TINY), D)
    dlgm = ConvDLGM(ConvDLGMConfig(**TINY), D)

    def shapes(modules):
        return [tuple(p.shape) for p in modules.parameters()]

    assert shapes(dlgm.inference.encoder.encoders) == shapes(sere.inference.encoder.encoders)
    assert shapes(dlgm.generator.data) == shapes(sere.generator.data)


def test_no_latent_code_feedback_into_prior_or_posterior():
    torch.manual_seed(0)
    model = build_model("conv_dlgm", TINY, data_dim=D)
    assert_no_latent_code_feedback(model, D, TINY["layers"], TINY["latents"])
    assert [b.context_dim for b in model.generator.bijectors] == [0] + [TINY["latents"]] * (TINY["layers"] - 1)


def test_no_path_variant_has_identity_transforms():
    model = build_model("conv_dlgm", {**TINY, "top_down": False}, data_dim=D)
    assert all(isinstance(b, IdentityBijector) for b in model.generator.bijectors)
    s = model.score(torch.bernoulli(torch.full((4, D), 0.5)), 5)
    assert s.log_weights.shape == (5, 4) and s.kl.shape == (5, 4, TINY["layers"])


def test_dense_blocks_reach_the_dlgms_own_posteriors_and_top_down_transform():
    """The residual blocks are added to whatever the DLGM builds: its posteriors of x alone (residual only, no
    first estimate) and its top-down transforms; its free priors have no network to add them to."""
    from srvae.nets.resnet import DenseResidualBlock

    model = build_model("conv_dlgm", {**TINY, "dense_blocks": 1, "match_sere_vae": False}, data_dim=D)
    assert all(isinstance(q.residual[0], DenseResidualBlock) and q.first is None for q in model.inference.posteriors)
    assert all(isinstance(b.conditioner.rest[0], DenseResidualBlock) for b in model.generator.bijectors[1:])
    assert model.generator.priors.net is None
