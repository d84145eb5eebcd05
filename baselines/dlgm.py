"""DLGM matched to SeRe-VAE (Table 1 of Apostolopoulou et al. 2020, −84.53 nats): SeRe-VAE's network with the
latent-code feedback cut.

The paper's ablation is "DLGM (matched to SeRe-VAE), 10 layers × 10 latents, diagonal Gaussian prior", and it
names two differences between SeRe-VAE and a DLGM (Rezende et al. 2014): SeRe-VAE's prior and posterior
layers receive the previous latent code, and its transformation layers are bijective. Rezende et al.'s
layers are linked by a top-down transform ``z_l = T_l(z_{l-1}) + G_l ε_l``. The default (``top_down=True``,
*inferred*, ``docs/decisions.md``) keeps that path and cuts only the feedback:

- each layer's prior is a learned diagonal Gaussian ``p(ε_l) = N(μ_l, diag σ_l²)`` with free parameters;
- the posterior ``q(ε_l | x)`` comes from the layer's own encoder of ``x`` alone, never from ``z_{l-1}``;
- ``z_l = c(z_{l-1}) + (diag d(z_{l-1}) + u(z_{l-1}) u(z_{l-1})ᵀ) ε_l``: the top-down transform, SeRe-VAE's
  amortised affine layer conditioned on the code of the layer above;
- the blocks and residual data layers ``γ_l = γ¹_l(z_l) + δγ_l(x_{l-1}, z_l)`` are SeRe-VAE's;
- the encoders are wider, so that the parameter count matches SeRe-VAE's (:func:`matched_widths`).

``top_down=False`` is a second reading: no path between stochastic layers at all (``z_l = ε_l``), so that the
latent groups are a priori independent and the layers talk only through the data blocks. The third, Figure 1's
"Independent VAE", is ``baselines/independent_vae.py``; the published −84.53 is tied to none of the three.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

import torch

from srvae.flows.base import Bijector, IdentityBijector
from srvae.models import LatentVariableModel
from srvae.sere.sere_vae import SeReVAE, SeReVAEConfig
from srvae.sere.stochastic_layers import AmortisedGaussianPriors, ResidualGaussianPosterior


@dataclass(frozen=True)
class DLGMConfig(SeReVAEConfig):
    #: keep the top-down transform z_l = f_l(ε_l; z_{l-1}) (Rezende et al.'s DLGM); False: z_l = ε_l, no path
    top_down: bool = True
    #: widen ``encoder_hidden`` (all widths by one factor) until the parameter count is closest to SeRe-VAE's
    #: with the same configuration; ``False`` takes ``encoder_hidden`` as given
    match_sere_vae: bool = True


def count_parameters(model_cls: type[LatentVariableModel], cfg: Any, data_dim: int) -> int:
    """Trainable parameters of ``model_cls(cfg, data_dim)``, built on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        return model_cls(cfg, data_dim).num_parameters


def closest_scaled_widths(base: tuple[int, ...], count: Callable[[tuple[int, ...]], int], target: int) -> tuple[int, ...]:
    """The widths ``base × s`` whose parameter count ``count(widths)`` is closest to ``target``.

    The widths are scaled together (the first one by an integer, found by bisection, the others in proportion),
    which keeps the count monotone in the width.
    """

    def widths(first: int) -> tuple[int, ...]:
        return tuple(max(1, round(h * first / base[0])) for h in base)

    lo, hi = 1, base[0]
    while count(widths(hi)) < target:
        lo, hi = hi, 2 * hi
    while hi - lo > 1:  # invariant: count(lo) < target <= count(hi), or lo is 1
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(widths(mid)) < target else (lo, mid)
    return widths(min((lo, hi), key=lambda w: abs(count(widths(w)) - target)))


def matched_widths(cfg: Any, data_dim: int, field: str, model: type, reference: type) -> tuple[int, ...]:
    """Widths ``cfg.<field> × s`` whose ``model`` parameter count is closest to that of ``reference`` built from
    ``cfg``'s shared fields (:func:`closest_scaled_widths`): the DLGM's encoders against SeRe-VAE, the conv DLGM's
    Gaussian heads against the conv SeRe-VAE."""
    if not getattr(cfg, field):
        raise ValueError(f"matching parameter counts widens {field}: it must not be empty")
    shared = {f.name: getattr(cfg, f.name) for f in fields(reference.Config)}
    target = count_parameters(reference, reference.Config(**shared), data_dim)
    return closest_scaled_widths(
        getattr(cfg, field),
        lambda widths: count_parameters(model, replace(cfg, **{field: widths, "match_sere_vae": False}), data_dim),
        target,
    )


class DLGM(SeReVAE):
    """SeRe-VAE without latent-code feedback: free diagonal-Gaussian priors, ``q(ε_l | x)``, and a top-down
    transform ``z_l = f_l(ε_l; z_{l-1})`` (or none, ``top_down=False``)."""

    Config = DLGMConfig

    def encoder_hidden(self, cfg: DLGMConfig, data_dim: int) -> tuple[int, ...]:
        if not cfg.match_sere_vae:
            return cfg.encoder_hidden
        return matched_widths(cfg, data_dim, "encoder_hidden", DLGM, SeReVAE)

    def make_priors(self) -> AmortisedGaussianPriors:
        return AmortisedGaussianPriors(self.cfg.layers, self.cfg.latents, 0, self.cfg.prior_hidden, self.cfg.activation)

    def make_posterior(self, layer: int) -> ResidualGaussianPosterior:
        return ResidualGaussianPosterior(self.cfg.latents, 0, self.posterior_widths, self.cfg.activation,
                                         self.cfg.posterior_first)

    def make_bijector(self, layer: int) -> Bijector:
        return super().make_bijector(layer) if self.cfg.top_down else IdentityBijector()
