"""SeRe-VAE with ResNet layers (Apostolopoulou et al. 2020, Table 2: −79.50 nats, 10 layers × 10 latents).

The generative and inference models are the MLP version's (:mod:`srvae.sere.sere_vae`), over ``L`` raster
blocks ``x_1..x_L`` of the image:

    ε_l ~ p(ε_l | z_{l-1}),   z_l = f_l(ε_l; z_{l-1}),   x_l ~ Bernoulli(γ_l(z_l, x_{l-1}))
    q(ε_l | z_{l-1}, x) = N(first(z_{l-1}) + residual(h_l(x), z_{l-1}))     the same bijector f_l in both

Table 2 replaces the networks that see images by "ResNets as in Salimans et al. (2015)", which this project
reads as the IAF paper's weight-normalised residual blocks (:mod:`srvae.nets.resnet`; ``docs/decisions.md``,
"Convolutional models"):

- each layer's deterministic encoder ``h_l(x)`` is a residual convolutional stack of its own
  (:class:`~srvae.nets.resnet.Encoder`; the paper's "independent deterministic encoders"), whose flat features feed
  the posterior's dense blocks, ending in the layer's Gaussian head;
- each data layer decodes ``z_l`` with a residual convolutional stack (:class:`~srvae.nets.resnet.Decoder`: dense →
  feature maps → upsampling blocks) into the logits of block ``l``, computing only the rows of the image that
  hold the block; the previous observed block ``x_{l-1}`` enters as the input convolution of an image holding only
  that block (zeros elsewhere), added to the decoder's feature maps at half resolution.
  ``γ¹_l(z_l) + δγ_l(x_{l-1}, z_l)`` of the MLP version is thus one stack, in which ``x_{l-1}`` adds a residual
  feature map (none for block 1);
- the prior, posterior and bijector blocks are the MLP version's dense networks of ``z_{l-1}``
  (:class:`~srvae.sere.stochastic_layers.AmortisedGaussianPriors`,
  :class:`~srvae.sere.stochastic_layers.ResidualGaussianPosterior`,
  :class:`~srvae.sere.bijector.AffineRankOneBijector`); the paper "replaces the MLPs with ResNets", so with
  ``dense_blocks = n > 0`` (the paper configs) each of them gets ``n`` dense residual blocks
  ``h ← h + 0.1 · W₂ elu(W₁ elu(h))`` after its first map (:class:`~srvae.nets.resnet.DenseResidualBlock`); with
  ``n = 0`` (the CPU study) they stay plain MLPs.

It is :class:`~srvae.sere.sere_vae.SeReVAE` with its hooks overridden: :meth:`ConvSeReVAE.make_encoder` (the
convolutional encoders, one per layer, then the posteriors' first maps of their features as one grouped map),
:meth:`ConvSeReVAE.make_data_layers` (a decoder per block), and the prior, posterior and bijector hooks, which
add the dense residual blocks to whatever the class below builds (so the conv DLGM's get them too); the chain, the scores (in ε-space, closed-form
KL, teacher-forced likelihood) and sampling are SeRe-VAE's. The conv DLGM (``baselines/conv_dlgm.py``) cuts the
feedback as the MLP DLGM does.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Annotated, Literal

import pydantic
import torch
from torch import Tensor, nn

from srvae.distributions import bernoulli_log_prob
from srvae.nets.grouped import GroupedLinear
from srvae.nets.mlp import Activation, PositiveInt, Widths
from srvae.flows.base import Bijector
from srvae.nets.resnet import (DataDependentInit, Decoder, Depths, Encoder, ImageGeometry, InputConvolution,
                               ResidualGroupedMLP, with_dense_blocks)

from .bijector import AffineRankOneBijector
from .sere_vae import SeReVAE
from .stochastic_layers import AmortisedGaussianPriors, IndependentDataLayers, LayerPriors, ResidualGaussianPosterior


@dataclass(frozen=True)
class ConvSeReVAEConfig:
    layers: PositiveInt = 10  # stochastic layers = image blocks L (Table 2: as Table 1)
    latents: PositiveInt = 10  # base latents ε_l (= code z_l) per layer
    channels: PositiveInt = 64  # feature maps of every convolution (the IAF's MNIST ResNet: 64)
    depths: Depths = (2, 2)  # residual blocks at half and quarter resolution (the IAF's MNIST ResNet: 2 and 2)
    prior_hidden: Widths = (100,)  # p(ε_l | z_{l-1})
    posterior_hidden: Widths = (100,)  # first estimate and residual of q(ε_l | z_{l-1}, x)
    bijector_hidden: Widths = (100,)  # the block giving (c, d, u) from z_{l-1}
    activation: Activation = "elu"  # of the dense blocks; the residual stacks use ELU (fixed)
    # the posterior's first estimate from z_{l-1}: a network of its own, or the prior layer's output
    posterior_first: Literal["network", "prior"] = "network"
    # dense residual blocks after the first map of every prior, posterior and bijector block (the paper's ResNets
    # in place of MLPs); 0: plain MLPs
    dense_blocks: Annotated[int, pydantic.Field(ge=0)] = 0

    def __post_init__(self) -> None:
        if self.dense_blocks and not (self.prior_hidden and self.posterior_hidden and self.bijector_hidden):
            raise ValueError("dense_blocks need a hidden layer in prior_hidden, posterior_hidden and bijector_hidden")


class BlockDataLayer(nn.Module):
    """Data layer of block ``l``: Bernoulli logits of its pixels from ``z_l`` and the previous block ``x_{l-1}``.

    ``pixels`` and ``previous``: where block ``l`` and block ``l − 1`` lie in the flat image (``previous`` is
    None for block 1); ``block_mean``: the block's training pixel means (the decoder starts at their logits).
    """

    def __init__(self, data_dim: int, latents: int, channels: int, depths: tuple[int, int], pixels: slice,
                 previous: slice | None, block_mean: Tensor | None = None) -> None:
        super().__init__()
        self.data_dim, self.previous = data_dim, previous
        self.decoder = Decoder(data_dim, latents, channels, depths, pixels, block_mean)
        self.previous_block = InputConvolution(ImageGeometry(data_dim), channels) if previous else None

    def forward(self, z: Tensor, x_prev: Tensor | None = None) -> Tensor:
        """Logits ``[..., D_l]`` from ``z_l`` ``[k, B, N]`` (or ``[B, N]``) and ``x_{l-1}`` ``[B, D_{l-1}]``."""
        if self.previous_block is None:
            return self.decoder(z)
        if x_prev is None:
            raise ValueError("this data layer sees the previous block: pass x_{l-1}")
        canvas = x_prev.new_zeros(*x_prev.shape[:-1], self.data_dim)
        canvas[..., self.previous] = x_prev  # only block l − 1 is filled: no other pixel can reach the logits
        return self.decoder(z, extra=self.previous_block(canvas))

    def log_prob(self, block: Tensor, z: Tensor, x_prev: Tensor | None = None) -> Tensor:
        """``log p(x_l | z_l, x_{l-1})`` ``[k, B]`` of the observed block ``[B, D_l]``."""
        logits = self(z, x_prev)
        return bernoulli_log_prob(block.expand_as(logits), logits)

    def sample(self, z: Tensor, x_prev: Tensor | None = None) -> Tensor:
        """A Bernoulli draw of the block."""
        return torch.bernoulli(torch.sigmoid(self(z, x_prev)))


class ConvEncoders(nn.Module):
    """The ``L`` independent convolutional encoders of ``x``, each followed by its posterior's first linear map of
    the flat features (one grouped map): ``x [B, D] → evidence [L, B, evidence_features]``."""

    def __init__(self, data_dim: int, layers: int, channels: int, depths: tuple[int, int],
                 evidence_features: int) -> None:
        super().__init__()
        self.encoders = nn.ModuleList(Encoder(data_dim, channels, depths) for _ in range(layers))
        self.evidence = GroupedLinear(layers, self.encoders[0].out_dim, evidence_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.evidence(torch.stack([encoder(x) for encoder in self.encoders]))


class ConvSeReVAE(DataDependentInit, SeReVAE):
    """SeRe-VAE with weight-normalised residual convolutional encoders and data layers (Table 2)."""

    Config = ConvSeReVAEConfig

    def _residual(self, rest: nn.Sequential, width: int) -> nn.Sequential:
        return with_dense_blocks(rest, width, self.cfg.dense_blocks, self.cfg.activation)

    def make_priors(self) -> LayerPriors:
        priors, cfg = super().make_priors(), self.cfg
        if cfg.dense_blocks and isinstance(priors, AmortisedGaussianPriors) and priors.net is not None:
            net = ResidualGroupedMLP(priors.net.groups, [cfg.latents], cfg.prior_hidden, 2 * cfg.latents,
                                     cfg.activation, cfg.dense_blocks)
            with torch.no_grad():
                net.output_layer.bias.copy_(priors.net.output_layer.bias)  # the priors' start near N(0, I)
            priors.net = net
        return priors

    def make_posterior(self, layer: int) -> ResidualGaussianPosterior:
        posterior = super().make_posterior(layer)
        if self.cfg.dense_blocks:
            width = self.posterior_widths[0]
            posterior.residual = self._residual(posterior.residual, width)
            if posterior.first is not None:
                posterior.first.rest = self._residual(posterior.first.rest, width)
        return posterior

    def make_bijector(self, layer: int) -> Bijector:
        bijector = super().make_bijector(layer)
        if self.cfg.dense_blocks and isinstance(bijector, AffineRankOneBijector) and bijector.context_dim:
            bijector.conditioner.rest = self._residual(bijector.conditioner.rest, self.cfg.bijector_hidden[0])
        return bijector

    def make_encoder(self, evidence_features: int) -> ConvEncoders:
        cfg = self.cfg
        return ConvEncoders(self.data_dim, cfg.layers, cfg.channels, cfg.depths, evidence_features)

    def make_data_layers(self, data_mean: Tensor | None) -> IndependentDataLayers:
        cfg, sizes = self.cfg, self.partition.sizes
        blocks = [slice(end - size, end) for end, size in zip(itertools.accumulate(sizes), sizes)]
        means = self.partition.split(data_mean) if data_mean is not None else [None] * cfg.layers
        return IndependentDataLayers(sizes, [
            BlockDataLayer(self.data_dim, cfg.latents, cfg.channels, cfg.depths, blocks[l], blocks[l - 1] if l else None,
                           means[l])
            for l in range(cfg.layers)
        ])
