"""DLGM matched to SeRe-VAE (Table 1 of Apostolopoulou et al. 2020, −84.53 nats): SeRe-VAE's network with the
latent-code feedback cut.

The paper calls its ablation "DLGM (matched to SeRe-VAE), 10 layers × 10 latents, diagonal Gaussian prior" and
says no more. This variant's reading (*inferred*, ``docs/decisions.md``): the same layer stack, blocks and residual
data layers ``γ_l = γ¹_l(z_l) + δγ_l(x_{l-1}, z_l)``, but

- each layer's prior is a learned diagonal Gaussian ``p(ε_l) = N(μ_l, diag σ_l²)`` with free parameters,
  independent of ``z_{l-1}``;
- no amortised bijector: ``z_l = ε_l``;
- the posterior ``q(ε_l | x)`` comes from the layer's own encoder of ``x`` alone;
- the encoders are wider, so that the parameter count matches SeRe-VAE's (:func:`matched_encoder_hidden`).

Note what this reading implies: in Rezende et al.'s (2014) DLGM, ``z_l`` depends on the layer above through
the top-down generative path; here the latent groups are a priori independent and the layers are coupled
only through the data (block ``x_l`` is generated given ``x_{l-1}``), and the posterior is mean-field across
layers.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from srvae.flows.base import Bijector, IdentityBijector
from srvae.sere.sere_vae import SeReVAE, SeReVAEConfig


@dataclass(frozen=True)
class DLGMConfig(SeReVAEConfig):
    #: widen ``encoder_hidden`` (all widths by one factor) until the parameter count is closest to SeRe-VAE's
    #: with the same configuration; ``False`` takes ``encoder_hidden`` as given
    match_sere_vae: bool = True


def count_parameters(model_cls: type[SeReVAE], cfg: SeReVAEConfig, data_dim: int) -> int:
    """Trainable parameters of ``model_cls(cfg, data_dim)``, built on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        return model_cls(cfg, data_dim).num_parameters


def matched_encoder_hidden(cfg: DLGMConfig, data_dim: int) -> tuple[int, ...]:
    """Encoder widths ``cfg.encoder_hidden × s`` whose DLGM parameter count is closest to SeRe-VAE's.

    SeRe-VAE's count is computed from ``cfg``'s shared fields; the widths are scaled together (the first one
    by an integer, found by bisection, the others in proportion), which keeps the count monotone in the width.
    """
    if not cfg.encoder_hidden:
        raise ValueError("matching parameter counts widens the encoders: encoder_hidden must not be empty")
    shared = {f.name: getattr(cfg, f.name) for f in fields(SeReVAEConfig)}
    target = count_parameters(SeReVAE, SeReVAEConfig(**shared), data_dim)
    base = cfg.encoder_hidden

    def widths(first: int) -> tuple[int, ...]:
        return tuple(max(1, round(h * first / base[0])) for h in base)

    def count(first: int) -> int:
        return count_parameters(DLGM, replace(cfg, encoder_hidden=widths(first), match_sere_vae=False), data_dim)

    lo, hi = 1, base[0]
    while count(hi) < target:
        lo, hi = hi, 2 * hi
    while hi - lo > 1:  # invariant: count(lo) < target <= count(hi), or lo is 1
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(mid) < target else (lo, mid)
    best = min((lo, hi), key=lambda w: abs(count(w) - target))
    return widths(best)


class DLGM(SeReVAE):
    """SeRe-VAE with the latent-code feedback cut: free diagonal-Gaussian priors, ``z_l = ε_l``, ``q(ε_l | x)``."""

    Config = DLGMConfig

    def encoder_hidden(self, cfg: DLGMConfig, data_dim: int) -> tuple[int, ...]:
        return matched_encoder_hidden(cfg, data_dim) if cfg.match_sere_vae else cfg.encoder_hidden

    def context_dim(self, layer: int) -> int:
        return 0  # no layer sees z_{l-1}: the prior is free, the posterior sees the encoder alone

    def make_bijector(self, layer: int) -> Bijector:
        return IdentityBijector()
