"""The convolutional DLGM: the convolutional SeRe-VAE (Table 2) with the latent-code feedback cut, as the Table 1
ablation cuts it from the MLP SeRe-VAE (``baselines/dlgm.py``; ``docs/decisions.md``, "The matched DLGM").

- each layer's prior is a learned diagonal Gaussian ``p(ε_l) = N(μ_l, diag σ_l²)`` with free parameters;
- the posterior ``q(ε_l | x)`` comes from the layer's own encoder of ``x`` alone (its residual convolutional
  stack and dense Gaussian head), never from ``z_{l-1}``;
- ``z_l = c(z_{l-1}) + (diag d(z_{l-1}) + u(z_{l-1}) u(z_{l-1})ᵀ) ε_l``: Rezende et al.'s top-down transform, kept
  (``top_down=False``: ``z_l = ε_l``, no path between stochastic layers);
- the convolutional stacks, encoders and data layers alike, are the conv SeRe-VAE's;
- the dense Gaussian heads are wider, so that the parameter count matches the conv SeRe-VAE's
  (:func:`baselines.dlgm.matched_widths`): cutting the feedback removes dense layers only, and dense layers give
  them back, so that the two models differ in the feedback alone.

The paper has no convolutional DLGM; this one gives the Table 2 models an in-study ablation.
"""

from __future__ import annotations

from dataclasses import dataclass

from baselines.dlgm import DLGM, matched_widths
from srvae.sere.conv_sere_vae import ConvSeReVAE, ConvSeReVAEConfig


@dataclass(frozen=True)
class ConvDLGMConfig(ConvSeReVAEConfig):
    #: keep the top-down transform z_l = f_l(ε_l; z_{l-1}) (Rezende et al.'s DLGM); False: z_l = ε_l, no path
    top_down: bool = True
    #: widen ``posterior_hidden`` (all widths by one factor) until the parameter count is closest to the conv
    #: SeRe-VAE's with the same configuration; ``False`` takes ``posterior_hidden`` as given
    match_sere_vae: bool = True


class ConvDLGM(ConvSeReVAE, DLGM):
    """The conv SeRe-VAE without latent-code feedback: the conv SeRe-VAE's encoders and data layers
    (:class:`~srvae.sere.conv_sere_vae.ConvSeReVAE`) with the MLP DLGM's priors, posteriors and top-down transform
    (:class:`~baselines.dlgm.DLGM`): free diagonal-Gaussian priors, ``q(ε_l | x)``, and ``z_l = f_l(ε_l; z_{l-1})``
    (or none, ``top_down=False``); the Gaussian heads widened to match instead of the encoders."""

    Config = ConvDLGMConfig

    def posterior_hidden(self) -> tuple[int, ...]:
        if not self.cfg.match_sere_vae:
            return self.cfg.posterior_hidden
        return matched_widths(self.cfg, self.data_dim, "posterior_hidden", ConvDLGM, ConvSeReVAE)
