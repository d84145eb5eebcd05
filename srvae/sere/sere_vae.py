"""SeRe-VAE, the Self-Reflective Variational Autoencoder (Apostolopoulou et al. 2020), MLP version (Table 1).

Generative model over ``L`` raster blocks ``x_1..x_L`` of the image (:mod:`srvae.sere.partition`), one stochastic
layer per block:

    ε_l ~ p(ε_l | z_{l-1})            amortised Gaussian prior (layer 1: learned diagonal Gaussian)
    z_l = f_l(ε_l; z_{l-1})           amortised bijector (MNIST: c + (diag d + u uᵀ) ε, :mod:`srvae.sere.bijector`)
    x_l ~ Bernoulli(γ_l),  γ_l = γ¹_l(z_l) + δγ_l(x_{l-1}, z_l)      residual data layer (block 1: γ¹ only)

Inference model: the generator with each prior replaced by a residual Gaussian posterior
``q(ε_l | z_{l-1}, x)`` fed by the layer's own deterministic encoder of ``x`` (no shared bottom-up pass); the
posterior draw ``ε_l`` goes through the **same** bijector ``f_l`` — one module, held by both networks.

Only the chain posterior → bijector (``ε_l ~ q(ε_l | z_{l-1}, x)``, ``z_l = f_l(ε_l; z_{l-1})``) is sequential.
Everything else runs for all layers at once, as grouped networks (:mod:`srvae.nets.grouped`): the ``L``
encoders of ``x`` (before the chain), and, once every code is drawn, the priors ``p(ε_l | z_{l-1})``, the
log-densities and KL terms, and the teacher-forced data layers.

Scores live in ε-space: ``log p(ε) − log q(ε|x)`` equals ``log p(z) − log q(z|x)`` because both densities
change by the same ``log|det ∂f_l/∂ε_l|``; the KL of each layer is the closed form between the two
Gaussians. Likelihood evaluation is teacher-forced (``δγ_l`` sees the *observed* ``x_{l-1}``); sampling feeds
each generated block to the next layer.

The parts that differ between SeRe-VAE and its variants are the hooks :meth:`SeReVAE.context_dim`,
:meth:`SeReVAE.make_priors`, :meth:`SeReVAE.make_bijector`, :meth:`SeReVAE.make_posterior`,
:meth:`SeReVAE.make_encoder` and :meth:`SeReVAE.make_data_layers`: the matched DLGM (``baselines/dlgm.py``) cuts
the context; the Self-Reflective IAF (:mod:`srvae.sere.sr_iaf`) swaps the prior for a standard normal and the
bijector for an IAF conditioned on ``z_{l-1}`` (any :class:`~srvae.flows.base.Bijector`); SeRe-MAF
(:mod:`srvae.sere.sere_maf`) swaps the bijector for spline couplings and the Bernoulli data layers for
conditional MAFs; the convolutional SeRe-VAE (:mod:`srvae.sere.conv_sere_vae`) swaps the encoders and data layers
for residual convolutional stacks, one per layer.

Width defaults are this project's choice (the paper's appendix is not available; ``docs/decisions.md``):
10 layers × 10 latents as Table 1; each layer's encoder of ``x`` two hidden layers of 200 units, one hidden
layer of 100 units in the prior, posterior and bijector blocks, 200 in the data blocks, ELU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from srvae.distributions import gaussian_kl, gaussian_log_prob, reparameterise
from srvae.flows.base import Bijector
from srvae.models import LatentVariableModel, Scores
from srvae.nets.grouped import GroupedMLP, side_by_side
from srvae.nets.mlp import Activation, PositiveInt, Widths

from .bijector import AffineRankOneBijector, affine_rank_one_map
from .partition import BlockPartition
from .stochastic_layers import (
    AmortisedGaussianPriors,
    DataLayers,
    LayerPriors,
    ResidualBernoulliLayers,
    ResidualGaussianPosterior,
)


def layer_stack(tensors: list[Tensor], batch: int) -> Tensor:
    """Each layer's ``[k·B, N]`` or ``[B, N]`` (a posterior of ``x`` alone) stacked as ``[L, k (or 1), B, N]``; one
    stack and one view where all have the same shape (a training batch: ``k = 1``)."""
    if len({t.shape for t in tensors}) == 1:
        return torch.stack(tensors).view(len(tensors), -1, batch, tensors[0].shape[-1])
    return torch.stack(torch.broadcast_tensors(*(t.view(-1, batch, t.shape[-1]) for t in tensors)))


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
    """``p(x, ε)``: the priors, a bijector per layer and the data layers — everything sampling needs."""

    def __init__(
        self, partition: BlockPartition, priors: LayerPriors, bijectors: nn.ModuleList, data: DataLayers
    ) -> None:
        super().__init__()
        self.partition = partition
        self.priors, self.bijectors, self.data = priors, bijectors, data

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        """Ancestral samples ``[n, D]``: each generated block (a draw of its data layer) conditions the next layer."""
        z = x_prev = None
        blocks = []
        for l, bijector in enumerate(self.bijectors):
            mean, std = self.priors.layer(l, z)
            eps = reparameterise(mean.expand(n, mean.shape[-1]), std.expand(n, std.shape[-1]))
            z = bijector.transform(eps, z)
            x_prev = self.data.sample(l, z, x_prev)
            blocks.append(x_prev)
        return self.partition.join(blocks)


class InferenceNetwork(nn.Module):
    """``q(ε | x)``: the encoders of ``x``, a posterior layer per layer, and the generator's own bijectors.

    ``encoder`` holds the ``L`` encoders ``h_l(x)`` followed by each posterior's first linear map of its
    encoding (:meth:`SeReVAE.make_encoder`): they depend on ``x`` alone, so they run once, before the chain.
    """

    def __init__(self, encoder: nn.Module, posteriors: nn.ModuleList, bijectors: nn.ModuleList) -> None:
        super().__init__()
        self.encoder, self.posteriors, self.bijectors = encoder, posteriors, bijectors

    def encode(self, x: Tensor) -> Tensor:
        """Every layer's evidence ``W_l h_l(x) + b_l`` ``[L, B, ·]``: deterministic, so computed once per example."""
        return self.encoder(x)


class SeReVAE(LatentVariableModel):
    """SeRe-VAE with MLP blocks, affine diagonal-plus-rank-one bijectors and a Bernoulli data model."""

    Config = SeReVAEConfig

    def __init__(self, cfg: SeReVAEConfig, data_dim: int, data_mean: Tensor | None = None) -> None:
        super().__init__(cfg, data_dim, data_mean)
        self.partition = BlockPartition(data_dim, cfg.layers)
        self.posterior_widths = self.posterior_hidden()
        layers = range(cfg.layers)

        bijectors = nn.ModuleList(self.make_bijector(l) for l in layers)  # ONE per layer, held by both networks
        posteriors = nn.ModuleList(self.make_posterior(l) for l in layers)
        evidence_features = {q.evidence_features for q in posteriors}
        if len(evidence_features) != 1:
            raise ValueError(f"every posterior must read evidence of one width, got {sorted(evidence_features)}")
        encoder = self.make_encoder(evidence_features.pop())
        data = self.make_data_layers(data_mean)
        self.generator = Generator(self.partition, self.make_priors(), bijectors, data)
        self.inference = InferenceNetwork(encoder, posteriors, bijectors)

    # -- the hooks through which the ablations differ -------------------------------------------------------

    def encoder_hidden(self, cfg: SeReVAEConfig, data_dim: int) -> tuple[int, ...]:
        """Hidden widths of each layer's encoder of ``x``."""
        return cfg.encoder_hidden

    def posterior_hidden(self) -> tuple[int, ...]:
        """Hidden widths of the posterior blocks (``posterior_widths``, computed once before they are built)."""
        return self.cfg.posterior_hidden

    def context_dim(self, layer: int) -> int:
        """Width of the latent code that conditions layer ``layer`` (0-based): ``z_{l-1}``, none for the first."""
        return 0 if layer == 0 else self.cfg.latents

    def make_priors(self) -> LayerPriors:
        """``p(ε_l | z_{l-1})`` of every layer (:class:`~srvae.sere.stochastic_layers.LayerPriors`)."""
        return AmortisedGaussianPriors(self.cfg.layers, self.cfg.latents, self.cfg.latents, self.cfg.prior_hidden,
                                       self.cfg.activation)

    def make_bijector(self, layer: int) -> Bijector:
        """``f_l(·; z_{l-1})``, conditioned on the code of the layer above."""
        return AffineRankOneBijector(self.cfg.latents, self.context_dim(layer), self.cfg.bijector_hidden,
                                     self.cfg.activation)

    def make_posterior(self, layer: int) -> ResidualGaussianPosterior:
        """``q(ε_l | z_{l-1}, x)``: a module ``(evidence, context, prior_raw) -> (mean, std)`` whose
        ``evidence_features`` is the width of the evidence it reads (the same for every layer)."""
        return ResidualGaussianPosterior(self.cfg.latents, self.context_dim(layer), self.posterior_widths,
                                         self.cfg.activation, self.cfg.posterior_first)

    def make_encoder(self, evidence_features: int) -> nn.Module:
        """The ``L`` encoders of ``x``, each followed by its posterior's first linear map: a module
        ``x [B, D] -> evidence [L, B, evidence_features]``. Here one grouped MLP (a shared first layer)."""
        return GroupedMLP(self.cfg.layers, [self.data_dim], self.encoder_hidden(self.cfg, self.data_dim),
                          evidence_features, self.cfg.activation, shared_input=True)

    def make_data_layers(self, data_mean: Tensor | None) -> DataLayers:
        """``p(x_l | z_l, x_{l-1})`` of every block (:class:`~srvae.sere.stochastic_layers.DataLayers`), started at
        the training means ``data_mean``. Here the residual Bernoulli layers, run for all blocks at once."""
        cfg = self.cfg
        return ResidualBernoulliLayers(self.partition.sizes, cfg.latents, cfg.data_hidden, cfg.activation, data_mean)

    # -- inference and scoring -------------------------------------------------------------------------------

    def posterior_pass(self, x: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Draw ``ε_l ~ q(ε_l | z_{l-1}, x)``, ``z_l = f_l(ε_l; z_{l-1})`` for ``l = 1..L``, ``k`` per example.

        Returns the codes ``z_1..z_L`` ``[L, k, B, N]``, ``log p(ε)`` and ``log q(ε | x)`` (``[k, B]``) and the
        closed-form ``KL(q(ε_l | z_{l-1}, x) || p(ε_l | z_{l-1}))`` per layer ``[k, B, L]``.
        """
        evidence = self.inference.encode(x).unbind(0)  # one call (and one stack backward), not a select per layer
        batch, latents = x.shape[0], self.cfg.latents
        priors = self.generator.priors
        # The chain runs on 2-D rows [k·B, N] (k-major): each of its matrix products is then one call, where a
        # [k, B, ·] input costs a view on either side of it, forward and backward.
        # Every linear map of z_{l-1} that starts a network of layer l (the posterior's, an affine bijector's
        # conditioner's) is one matrix product per layer, their weights assembled for all layers at once.
        pairs = list(zip(self.inference.posteriors, self.inference.bijectors))
        readers = [[*q.context_linears(), *(f.context_linears() if isinstance(f, AffineRankOneBijector) else [])]
                   for q, f in pairs]
        # (a layer with one map, the DLGM's bijector, gains nothing: its maps run alone, as nn.Linear)
        fused = side_by_side(readers) if max(map(len, readers)) > 1 else [None] * len(readers)
        z = None
        means, stds, draws, codes = [], [], [], []
        for l, (posterior, bijector) in enumerate(pairs):
            prior_raw = priors.raw(l, z) if self.cfg.posterior_first == "prior" else None
            if fused[l] is None:
                features = [m(z) for m in readers[l]]
            else:
                features = torch.addmm(fused[l][1], z, fused[l][0]).split([m.out_features for m in readers[l]], -1)
            # evidence [B, ·] meets z_{l-1} [k·B, N]: repeated for k > 1 samples, by a posterior that reads z_{l-1}
            conditioned = k > 1 and z is not None and posterior.context_dim > 0
            own = len(posterior.context_linears())
            mean, std = posterior.from_context_features(evidence[l].repeat(k, 1) if conditioned else evidence[l],
                                                        features[:own], prior_raw)
            if mean.shape[0] == k * batch:  # [k·B, N]
                eps = reparameterise(mean, std)
            else:  # [B, N] (or [N]) for a posterior of x alone: the same draws as for [k, B, N]
                eps = reparameterise(mean.expand(k, batch, latents), std.expand(k, batch, latents)).view(-1, latents)
            # the Jacobian cancels between log p and log q
            if isinstance(bijector, AffineRankOneBijector):
                z = affine_rank_one_map(eps, *bijector.affine_parameters_from(features[own:]))
            else:
                z = bijector.transform(eps, z)
            for stack, t in zip((means, stds, draws, codes), (mean, std, eps, z)):
                stack.append(t)
        shape = (k, batch, latents)
        # given the codes, the priors and the densities of all layers at once: [L, k (or 1), B, N]
        codes, eps = (torch.stack(t).view(-1, *shape) for t in (codes, draws))
        q_mean, q_std = (layer_stack(t, batch) for t in (means, stds))
        p_mean, p_std = priors(codes[:-1])
        log_q = gaussian_log_prob(eps, q_mean, q_std).sum(0)
        log_p = gaussian_log_prob(eps, p_mean, p_std).sum(0)
        kl = gaussian_kl(q_mean, q_std, p_mean, p_std).expand(-1, *shape[:-1]).movedim(0, -1)
        return codes, log_p, log_q, kl

    def score(self, x: Tensor, k: int) -> Scores:
        codes, log_p, log_q, kl = self.posterior_pass(x, k)
        log_likelihood = self.generator.data.log_likelihood(codes, x)  # teacher-forced: x_{l-1} observed
        return Scores(log_likelihood=log_likelihood, log_prior=log_p, log_posterior=log_q, kl=kl)

    def sample(self, n: int) -> Tensor:
        return self.generator.sample(n)
