"""Convolutional mean-field VAE: the one-layer VAE of ``baselines/vae.py`` (Kingma & Welling 2014) with the conv
SeRe-VAE's weight-normalised residual convolutional encoder and decoder (:mod:`srvae.nets.resnet`).

Generative model ``p(z) = N(0, I)``, ``p(x | z) = Bernoulli(sigmoid(decoder(z)))``; posterior
``q(z | x) = N(μ(x), diag σ(x)²)`` from a dense Gaussian head on the encoder's features. It has as many latents
as the conv SeRe-VAE has in all (Table 2: 10 layers × 10 = 100) and, through ``channels``, about as many
parameters (``config.yaml`` picks them; ``tests/baselines/test_conv_vae.py`` checks the match): the reference
point of the Table 2 models without any hierarchy. The paper has no such row; it is this project's comparison.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from srvae.models import LatentVariableModel
from srvae.nets.mlp import PositiveInt
from srvae.nets.resnet import DataDependentInit, Decoder, Depths, Encoder

from .vae import VAE


@dataclass(frozen=True)
class ConvVAEConfig:
    latents: PositiveInt = 100  # the conv SeRe-VAE's 10 layers × 10 latents
    channels: PositiveInt = 208  # feature maps of every convolution: the conv SeRe-VAE's parameter count (+0.3%)
    depths: Depths = (2, 2)  # residual blocks at half and quarter resolution


class ConvVAE(DataDependentInit, VAE):
    """Mean-field Gaussian VAE with residual convolutional encoder and decoder; scoring and sampling are the
    MLP VAE's."""

    Config = ConvVAEConfig

    def __init__(self, cfg: ConvVAEConfig, data_dim: int, data_mean: Tensor | None = None) -> None:
        LatentVariableModel.__init__(self, cfg, data_dim, data_mean)  # not VAE.__init__: no MLPs
        encoder = Encoder(data_dim, cfg.channels, cfg.depths)
        self.encoder = nn.Sequential(encoder, nn.Linear(encoder.out_dim, 2 * cfg.latents))
        self.decoder = Decoder(data_dim, cfg.latents, cfg.channels, cfg.depths, pixel_mean=data_mean)
