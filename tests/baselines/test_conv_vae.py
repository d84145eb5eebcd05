"""The convolutional mean-field VAE: the MLP VAE's scoring with residual convolutional encoder and decoder, and
about the conv SeRe-VAE's parameter count in every config entry."""

import pytest
import torch

from baselines.conv_vae import ConvVAE
from srvae.registry import build_model, make_config


@pytest.mark.parametrize("vae, sere, tolerance", [("conv_vae", "conv_sere_vae", 0.05),
                                                  ("conv_vae_table2", "conv_sere_vae_table2", 0.005)])
def test_config_entries_match_the_conv_sere_vaes_size(default_config, vae, sere, tolerance):
    def count(name):
        entry = default_config.models[name]
        return build_model(entry.cls, entry.params, 784).num_parameters

    entry, reference = (make_config(default_config.models[name].cls, default_config.models[name].params)
                        for name in (vae, sere))
    assert entry.latents == reference.layers * reference.latents
    assert abs(count(vae) - count(sere)) <= tolerance * count(sere)


def test_interface_and_start_at_the_data_marginal():
    torch.manual_seed(0)
    mean = torch.rand(144) * 0.8 + 0.1
    model = ConvVAE(ConvVAE.Config(latents=4, channels=3, depths=(0, 1)), 144, data_mean=mean)
    x = torch.bernoulli(mean.expand(8, -1))
    model.initialise(x)
    s = model.score(x, 3)
    assert s.log_weights.shape == (3, 8) and s.kl.shape == (3, 8, 1)
    logits = model.decoder(torch.randn(50, 4))
    assert (logits - torch.logit(mean)).std() < 0.2  # the output layer starts small around the marginal
    samples = model.sample(5)
    assert samples.shape == (5, 144) and set(samples.unique().tolist()) <= {0.0, 1.0}
