"""SeRe-VAE, the Self-Reflective Variational Autoencoder (Apostolopoulou et al. 2020), MLP version (Table 1).

Generative model over ``L`` raster blocks ``x_1..x_L`` of the image (:mod:`srvae.sere.partition`), one stochastic
layer per block:

    ε_l ~ p(ε_l | z_{l-1})            amortised Gaussian prior (layer 1: learned diagonal Gaussian)
    z_l = f_l(ε_l; z_{l-1})           amortised bijector (MNIST: c + (diag d + u uᵀ) ε, :mod:`srvae.sere.bijector`)
    x_l ~ Bernoulli(γ_l),  γ_l = γ¹_l(z_l) + δγ_l(x_{l-1}, z_l)      residual data layer (block 1: γ¹ only)

Inference model: the generator with each prior replaced by a residual Gaussian posterior
``q(ε_l | z_{l-1}, x)`` fed by the layer's own deterministic encoder of ``x`` (no shared bottom-up pass); the
posterior draw ``ε_l`` goes through the **same** bijector ``f_l`` — one module, held by both networks.

Scores live in ε-space: ``log p(ε) − log q(ε|x)`` equals ``log p(z) − log q(z|x)`` because both densities
change by the same ``log|det ∂f_l/∂ε_l|``; the KL of each layer is the closed form between the two
Gaussians. Likelihood evaluation is teacher-forced (``δγ_l`` sees the *observed* ``x_{l-1}``); sampling feeds
each generated block to the next layer.

The parts that differ between SeRe-VAE and its ablations are the hooks :meth:`SeReVAE.context_dim`,
:meth:`SeReVAE.make_prior`, :meth:`SeReVAE.make_bijector`, :meth:`SeReVAE.make_posterior` and
:meth:`SeReVAE.make_data_layer`: the matched DLGM (``baselines/dlgm.py``) cuts the context; the Self-Reflective
IAF (:mod:`srvae.sere.sr_iaf`) swaps the prior for a standard normal and the bijector for an IAF conditioned on
``z_{l-1}`` (any :class:`~srvae.flows.base.Bijector`); SeRe-MAF (:mod:`srvae.sere.sere_maf`) swaps the bijector
for spline couplings and the Bernoulli data layers for conditional MAFs.

Width defaults are this project's choice (the paper's appendix is not available; ``docs/decisions.md``):
10 layers × 10 latents as Table 1; each layer's encoder of ``x`` two hidden layers of 200 units, one hidden
layer of 100 units in the prior, posterior and bijector blocks, 200 in the data blocks, ELU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from srvae.distributions import bernoulli_log_prob, gaussian_kl, gaussian_log_prob, reparameterise
from srvae.flows.base import Bijector
from srvae.models import LatentVariableModel, Scores
from srvae.nets.mlp import Activation, PositiveInt, Widths, mlp, mlp_out_dim

from .bijector import AffineRankOneBijector
from .partition import BlockPartition
from .stochastic_layers import AmortisedGaussian, ResidualBernoulli, ResidualGaussianPosterior


@dataclass(frozen=True)
class SeReVAEConfig:
    layers: PositiveInt = 10  # stochastic layers = image blocks L
    latents: PositiveInt = 10  # base latents ε_l (= code z_l) per layer
    encoder_hidden: Widths = (200, 200)  # each layer's own deterministic encoder of x
    prior_hidden: Widths = (100,)  # p(ε_l | z_{l-1})
    posterior_hidden: Widths = (100,)  # first estimate and residual of q(ε_l | z_{l-1}, x)
    bijector_hidden: Widths = (100,)  # the block giving (c, d, u) from z_{l-1}
    data_hidden: Widths = (200,)  # γ¹_l(z_l) and δγ_l(x_{l-1}, z_l)
    activation: Activation = "elu"
    # the posterior's first estimate from z_{l-1}: a network of its own, or the prior layer's output
    posterior_first: Literal["network", "prior"] = "network"


class Generator(nn.Module):
    """``p(x, ε)``: per layer a prior, a bijector and a data layer — everything sampling needs."""

    def __init__(
        self, partition: BlockPartition, priors: nn.ModuleList, bijectors: nn.ModuleList, data: nn.ModuleList
    ) -> None:
        super().__init__()
        self.partition = partition
        self.priors, self.bijectors, self.data = priors, bijectors, data

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        """Ancestral samples ``[n, D]``: each generated block (a draw of its data layer) conditions the next layer."""
        z = x_prev = None
        blocks = []
        for prior, bijector, data in zip(self.priors, self.bijectors, self.data):
            mean, std = prior(z)
            eps = reparameterise(mean.expand(n, mean.shape[-1]), std.expand(n, std.shape[-1]))
            z, _ = bijector(eps, z)
            x_prev = data.sample(z, x_prev)
            blocks.append(x_prev)
        return self.partition.join(blocks)


class InferenceNetwork(nn.Module):
    """``q(ε | x)``: per layer an encoder of ``x``, a posterior layer, and the generator's own bijector."""

    def __init__(self, encoders: nn.ModuleList, posteriors: nn.ModuleList, bijectors: nn.ModuleList) -> None:
        super().__init__()
        self.encoders, self.posteriors, self.bijectors = encoders, posteriors, bijectors

    def encode(self, x: Tensor) -> list[Tensor]:
        """Every layer's evidence ``h_l(x)`` ``[B, H]``: deterministic, so computed once per example."""
        return [encoder(x) for encoder in self.encoders]


class SeReVAE(LatentVariableModel):
    """SeRe-VAE with MLP blocks, affine diagonal-plus-rank-one bijectors and a Bernoulli data model."""

    Config = SeReVAEConfig

    def __init__(self, cfg: SeReVAEConfig, data_dim: int, data_mean: Tensor | None = None) -> None:
        super().__init__(cfg, data_dim, data_mean)
        self.partition = BlockPartition(data_dim, cfg.layers)
        means = self.partition.split(data_mean) if data_mean is not None else [None] * cfg.layers
        encoder_hidden = self.encoder_hidden(cfg, data_dim)
        evidence_dim = mlp_out_dim(data_dim, encoder_hidden)
        layers = range(cfg.layers)

        bijectors = nn.ModuleList(self.make_bijector(l) for l in layers)  # ONE per layer, held by both networks
        data = nn.ModuleList(self.make_data_layer(l, means[l]) for l in layers)
        self.generator = Generator(self.partition, nn.ModuleList(self.make_prior(l) for l in layers), bijectors, data)
        self.inference = InferenceNetwork(
            nn.ModuleList(mlp(data_dim, encoder_hidden, None, cfg.activation) for _ in layers),
            nn.ModuleList(self.make_posterior(l, evidence_dim) for l in layers),
            bijectors,
        )

    # -- the hooks through which the ablations differ -------------------------------------------------------

    def encoder_hidden(self, cfg: SeReVAEConfig, data_dim: int) -> tuple[int, ...]:
        """Hidden widths of each layer's encoder of ``x``."""
        return cfg.encoder_hidden

    def context_dim(self, layer: int) -> int:
        """Width of the latent code that conditions layer ``layer`` (0-based): ``z_{l-1}``, none for the first."""
        return 0 if layer == 0 else self.cfg.latents

    def make_prior(self, layer: int) -> nn.Module:
        """``p(ε_l | z_{l-1})``: a module ``context -> (mean, std)``, each ``[..., N]`` (``[N]`` if constant), whose
        ``raw(context)`` gives the unconstrained ``(μ, a)``."""
        return AmortisedGaussian(self.cfg.latents, self.context_dim(layer), self.cfg.prior_hidden, self.cfg.activation)

    def make_bijector(self, layer: int) -> Bijector:
        """``f_l(·; z_{l-1})``, conditioned on the code of the layer above."""
        return AffineRankOneBijector(self.cfg.latents, self.context_dim(layer), self.cfg.bijector_hidden,
                                     self.cfg.activation)

    def make_data_layer(self, layer: int, block_mean: Tensor | None) -> nn.Module:
        """``p(x_l | z_l, x_{l-1})``: a module ``(z, x_prev) -> logits`` with ``sample(z, x_prev)``, started at the
        block's training means ``block_mean``."""
        sizes = self.partition.sizes
        return ResidualBernoulli(self.cfg.latents, sizes[layer], sizes[layer - 1] if layer else 0, self.cfg.data_hidden,
                                 self.cfg.activation, block_mean)

    def make_posterior(self, layer: int, evidence_dim: int) -> nn.Module:
        """``q(ε_l | z_{l-1}, x)``: a module ``(evidence, context, prior_raw) -> (mean, std)``."""
        return ResidualGaussianPosterior(self.cfg.latents, evidence_dim, self.context_dim(layer),
                                         self.cfg.posterior_hidden, self.cfg.activation, self.cfg.posterior_first)

    # -- inference and scoring -------------------------------------------------------------------------------

    def posterior_pass(self, x: Tensor, k: int) -> tuple[list[Tensor], Tensor, Tensor, Tensor]:
        """Draw ``ε_l ~ q(ε_l | z_{l-1}, x)``, ``z_l = f_l(ε_l; z_{l-1})`` for ``l = 1..L``, ``k`` per example.

        Returns the codes ``[z_1..z_L]`` (each ``[k, B, N]``), ``log p(ε)`` and ``log q(ε | x)`` (``[k, B]``) and
        the closed-form ``KL(q(ε_l | z_{l-1}, x) || p(ε_l | z_{l-1}))`` per layer ``[k, B, L]``.
        """
        evidence = self.inference.encode(x)
        shape = (k, x.shape[0], self.cfg.latents)
        z = None
        codes, log_p, log_q, kl = [], 0.0, 0.0, []
        for l, (posterior, prior, bijector) in enumerate(
            zip(self.inference.posteriors, self.generator.priors, self.inference.bijectors)
        ):
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
        return [data(z, x_prev) for data, z, x_prev in zip(self.generator.data, codes, previous)]

    def score(self, x: Tensor, k: int) -> Scores:
        codes, log_p, log_q, kl = self.posterior_pass(x, k)
        blocks = self.partition.split(x)
        log_likelihood = sum(
            bernoulli_log_prob(block.expand_as(logits), logits)
            for block, logits in zip(blocks, self.data_logits(codes, x))
        )
        return Scores(log_likelihood=log_likelihood, log_prior=log_p, log_posterior=log_q, kl=kl)

    def sample(self, n: int) -> Tensor:
        return self.generator.sample(n)
