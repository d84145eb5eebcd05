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
- the prior, posterior and bijector blocks stay the MLP version's small dense networks of ``z_{l-1}``
  (:class:`~srvae.sere.stochastic_layers.AmortisedGaussian`,
  :class:`~srvae.sere.stochastic_layers.ResidualGaussianPosterior`,
  :class:`~srvae.sere.bijector.AffineRankOneBijector`).

Scores live in ε-space, as in the MLP version (the Jacobians of the shared bijectors cancel); the KL of each
layer is the closed form between the two Gaussians; likelihood evaluation is teacher-forced, sampling feeds
each generated block to the next layer. The conv DLGM (``baselines/conv_dlgm.py``) differs through the hooks
:meth:`ConvSeReVAE.posterior_hidden`, :meth:`~ConvSeReVAE.make_prior`, :meth:`~ConvSeReVAE.make_bijector` and
:meth:`~ConvSeReVAE.make_posterior`, as the MLP DLGM does.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from srvae.distributions import bernoulli_log_prob, gaussian_kl, gaussian_log_prob, reparameterise
from srvae.flows.base import Bijector
from srvae.models import LatentVariableModel, Scores
from srvae.nets.mlp import Activation, PositiveInt, Widths
from srvae.nets.resnet import DataDependentInit, Decoder, Depths, Encoder, ImageGeometry, InputConvolution

from .bijector import AffineRankOneBijector
from .partition import BlockPartition
from .stochastic_layers import AmortisedGaussian, ResidualGaussianPosterior


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


class ConvSeReVAE(DataDependentInit, LatentVariableModel):
    """SeRe-VAE with weight-normalised residual convolutional encoders and data layers (Table 2)."""

    Config = ConvSeReVAEConfig

    def __init__(self, cfg: ConvSeReVAEConfig, data_dim: int, data_mean: Tensor | None = None) -> None:
        super().__init__(cfg, data_dim, data_mean)
        self.partition = BlockPartition(data_dim, cfg.layers)
        sizes = self.partition.sizes
        blocks = [slice(end - size, end) for end, size in zip(itertools.accumulate(sizes), sizes)]
        means = self.partition.split(data_mean) if data_mean is not None else [None] * cfg.layers
        layers = range(cfg.layers)

        self.encoders = nn.ModuleList(Encoder(data_dim, cfg.channels, cfg.depths) for _ in layers)
        evidence_dim = self.encoders[0].out_dim
        self.posterior_widths = self.posterior_hidden()
        self.priors = nn.ModuleList(self.make_prior(l) for l in layers)
        self.posteriors = nn.ModuleList(self.make_posterior(l, evidence_dim) for l in layers)
        self.bijectors = nn.ModuleList(self.make_bijector(l) for l in layers)  # one per layer, used by p and q
        self.data = nn.ModuleList(
            BlockDataLayer(data_dim, cfg.latents, cfg.channels, cfg.depths, blocks[l], blocks[l - 1] if l else None,
                           means[l])
            for l in layers
        )

    # -- the hooks through which the conv DLGM differs ------------------------------------------------------

    def posterior_hidden(self) -> tuple[int, ...]:
        """Hidden widths of the posterior's blocks: the dense Gaussian head that ends each encoder of ``x``."""
        return self.cfg.posterior_hidden

    def context_dim(self, layer: int) -> int:
        """Width of the latent code that conditions layer ``layer`` (0-based): ``z_{l-1}``, none for the first."""
        return 0 if layer == 0 else self.cfg.latents

    def make_prior(self, layer: int) -> nn.Module:
        """``p(ε_l | z_{l-1})``: the MLP version's amortised Gaussian (a free diagonal Gaussian for layer 1)."""
        return AmortisedGaussian(self.cfg.latents, self.context_dim(layer), self.cfg.prior_hidden, self.cfg.activation)

    def make_bijector(self, layer: int) -> Bijector:
        """``f_l(·; z_{l-1})``: the MLP version's affine diagonal-plus-rank-one bijector."""
        return AffineRankOneBijector(self.cfg.latents, self.context_dim(layer), self.cfg.bijector_hidden,
                                     self.cfg.activation)

    def make_posterior(self, layer: int, evidence_dim: int) -> nn.Module:
        """``q(ε_l | z_{l-1}, x)``: the MLP version's residual Gaussian posterior on the encoder's features."""
        return ResidualGaussianPosterior(self.cfg.latents, evidence_dim, self.context_dim(layer),
                                         self.posterior_widths, self.cfg.activation, self.cfg.posterior_first)

    # -- inference and scoring -------------------------------------------------------------------------------

    def posterior_pass(self, x: Tensor, k: int) -> tuple[list[Tensor], Tensor, Tensor, Tensor]:
        """``k`` draws per example of ``ε_l ~ q(ε_l | z_{l-1}, x)``, ``z_l = f_l(ε_l; z_{l-1})``, ``l = 1..L``.

        Returns the codes ``[z_1..z_L]`` (each ``[k, B, N]``), ``log p(ε)`` and ``log q(ε | x)`` (``[k, B]``) and
        the closed-form ``KL(q(ε_l | z_{l-1}, x) || p(ε_l | z_{l-1}))`` per layer ``[k, B, L]``.
        """
        evidence = [encoder(x) for encoder in self.encoders]  # deterministic: once per example, not per sample
        shape = (k, x.shape[0], self.cfg.latents)
        z = None
        codes, log_p, log_q, kl = [], 0.0, 0.0, []
        for l, (posterior, prior, bijector) in enumerate(zip(self.posteriors, self.priors, self.bijectors)):
            prior_raw = prior.raw(z) if self.cfg.posterior_first == "prior" else None
            q_mean, q_std = posterior(evidence[l], z, prior_raw)
            p_mean, p_std = prior(z)
            eps = reparameterise(q_mean.expand(shape), q_std.expand(shape))
            log_q = log_q + gaussian_log_prob(eps, q_mean, q_std)
            log_p = log_p + gaussian_log_prob(eps, p_mean, p_std)
            kl.append(gaussian_kl(q_mean, q_std, p_mean, p_std).expand(shape[:-1]))
            z, _ = bijector(eps, z)  # the Jacobian cancels between log p and log q
            codes.append(z)
        return codes, log_p, log_q, torch.stack(kl, dim=-1)

    def data_logits(self, codes: list[Tensor], x: Tensor) -> list[Tensor]:
        """Teacher-forced logits of every block: ``γ_l(z_l, x_{l-1})`` with ``x_{l-1}`` the *observed* block."""
        previous = [None, *self.partition.split(x)[:-1]]
        return [data(z, x_prev) for data, z, x_prev in zip(self.data, codes, previous)]

    def score(self, x: Tensor, k: int) -> Scores:
        codes, log_p, log_q, kl = self.posterior_pass(x, k)
        log_likelihood = sum(
            bernoulli_log_prob(block.expand_as(logits), logits)
            for block, logits in zip(self.partition.split(x), self.data_logits(codes, x))
        )
        return Scores(log_likelihood=log_likelihood, log_prior=log_p, log_posterior=log_q, kl=kl)

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        """Ancestral samples ``[n, D]``: each generated block (a Bernoulli draw) conditions the next layer."""
        z = x_prev = None
        blocks = []
        for prior, bijector, data in zip(self.priors, self.bijectors, self.data):
            mean, std = prior(z)
            eps = reparameterise(mean.expand(n, mean.shape[-1]), std.expand(n, std.shape[-1]))
            z, _ = bijector(eps, z)
            x_prev = torch.bernoulli(torch.sigmoid(data(z, x_prev)))
            blocks.append(x_prev)
        return self.partition.join(blocks)
