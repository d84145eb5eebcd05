"""The "Independent VAE" of Figure 1 of Apostolopoulou et al. (2020): the third reading of Table 1's matched DLGM.

Table 1's ablation, "DLGM (matched to SeRe-VAE), 10 layers × 10 latents, diagonal Gaussian prior" (−84.53 nats),
is described in §4.1.1 as SeRe-VAE's architecture without "the inclusion of the latent codes in subsequent
stochastic layers (compare Figures 1 and 2)"; Figure 1 is captioned "Independent VAE" and draws a single "Data
Layer". Read literally (``docs/decisions.md``, "The matched DLGM"), that network has

- no path between stochastic layers: ``z_l = ε_l``, each a priori independent, ``p(ε_l) = N(μ_l, diag σ_l²)`` with
  free parameters (the DLGM's priors);
- posteriors ``q(ε_l | x)`` from each layer's own encoder of ``x`` alone (the DLGM's);
- one data layer that decodes the whole image from every code at once, with no coupling between image blocks:
  ``x ~ Bernoulli(γ(z_1, …, z_L))``, ``γ`` an MLP of the concatenated codes (``data_hidden``) started at the
  logits of the training pixel means;
- encoders widened until the parameter count is closest to SeRe-VAE's (:func:`baselines.dlgm.matched_widths`).

The other two readings are ``baselines/dlgm.py`` (the top-down transform kept, or no path but SeRe-VAE's coupled
block data layers). None of the three is tied to the published −84.53 as "the" DLGM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from srvae.distributions import bernoulli_log_prob, reparameterise
from srvae.flows.base import Bijector, IdentityBijector
from srvae.nets.mlp import init_output_bias, mlp
from srvae.sere.sere_vae import SeReVAE, SeReVAEConfig

from .dlgm import DLGM, matched_widths


@dataclass(frozen=True)
class IndependentVAEConfig(SeReVAEConfig):
    #: widen ``encoder_hidden`` (all widths by one factor) until the parameter count is closest to SeRe-VAE's
    #: with the same configuration; ``False`` takes ``encoder_hidden`` as given
    match_sere_vae: bool = True


class SingleDataLayer(nn.Module):
    """``p(x | z_1, …, z_L)``: Bernoulli logits of every pixel from the concatenated codes, one MLP."""

    def __init__(self, codes: int, data_dim: int, hidden: Sequence[int], act: str,
                 data_mean: Tensor | None = None) -> None:
        super().__init__()
        self.net = mlp(codes, hidden, data_dim, act)
        init_output_bias(self.net[-1], data_mean)

    def logits(self, codes: Tensor) -> Tensor:
        """``[L, ..., N]`` codes → ``[..., D]`` logits."""
        return self.net(codes.movedim(0, -2).flatten(-2))

    def log_likelihood(self, codes: Tensor, x: Tensor) -> Tensor:
        """``log p(x | z)`` ``[k, B]`` from the codes ``[L, k, B, N]`` and the image ``[B, D]``."""
        logits = self.logits(codes)
        return bernoulli_log_prob(x.expand_as(logits), logits)


class IndependentVAE(DLGM):
    """Independent stochastic layers (free diagonal-Gaussian priors, ``q(ε_l | x)``, ``z_l = ε_l``) and one
    uncoupled data layer of all codes; encoders widened to SeRe-VAE's parameter count."""

    Config = IndependentVAEConfig

    def encoder_hidden(self, cfg: IndependentVAEConfig, data_dim: int) -> tuple[int, ...]:
        if not cfg.match_sere_vae:
            return cfg.encoder_hidden
        return matched_widths(cfg, data_dim, "encoder_hidden", IndependentVAE, SeReVAE)

    def make_bijector(self, layer: int) -> Bijector:
        return IdentityBijector()

    def make_data_layers(self, data_mean: Tensor | None) -> SingleDataLayer:
        cfg = self.cfg
        return SingleDataLayer(cfg.layers * cfg.latents, self.data_dim, cfg.data_hidden, cfg.activation, data_mean)

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        """Every code from its own prior, then the whole image from all of them."""
        priors = self.generator.priors
        mean, std = (torch.stack(t) for t in zip(*(priors.layer(l) for l in range(self.cfg.layers))))  # [L, N]
        eps = reparameterise(mean.unsqueeze(1).expand(-1, n, -1), std.unsqueeze(1).expand(-1, n, -1))
        return torch.bernoulli(torch.sigmoid(self.generator.data.logits(eps)))
