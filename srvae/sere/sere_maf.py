"""SeRe-MAF: the self-reflective variational normalising flow (Apostolopoulou et al. 2020, Section 4.2, Table 3).

SeRe-VAE (:mod:`srvae.sere.sere_vae`: raster blocks ``x_1..x_L``, one stochastic layer per block, amortised
diagonal-Gaussian priors ``p(ε_l | z_{l-1})``, residual diagonal-Gaussian posteriors ``q(ε_l | z_{l-1}, x)``,
one bijector per layer shared by the generator and the inference network, scores in ε-space) with two parts
swapped, for continuous data (dequantised images in logit space):

- the bijector ``z_l = f_l(ε_l; z_{l-1})`` is a neural-spline coupling flow (Durkan et al. 2019; zuko's
  rational-quadratic splines, :mod:`srvae.flows.spline_coupling`) conditioned on the previous code;
- the data layer of block ``l`` is a conditional masked autoregressive flow (:mod:`srvae.flows.maf`): its
  MADEs see the code ``z_l`` through unmasked degree-0 units (the context reaches every output), and its base
  density is a unit-rank Gaussian whose parameters come from ``z_l`` and, as a residual, from the observed
  previous block (SeRe-VAE's data layer):

      u_l = MAF_l(x_l; z_l),   (μ_l, d_l, w_l) = first_l(z_l) + residual_l(x_{l-1}, z_l),
      log p(x_l | z_l, x_{l-1}) = log N(u_l; μ_l, C_l) + log|det ∂u_l/∂x_l|.

  The paper's "unit-rank Gaussian parameterized as in Equation (9) of Rezende et al. (2014)" is a *precision*
  ``C⁻¹ = diag(d) + w wᵀ`` (``base_form: precision``, the paper configs, :class:`RankOnePrecisionGaussian`):
  the log-density by the matrix determinant lemma, sampling through ``C = R Rᵀ`` with Rezende et al.'s
  ``R = D^{-1/2} − γ D⁻¹ w wᵀ D^{-1/2}``, ``γ = (1 − 1/√(1 + η)) / η``, ``η = wᵀ D⁻¹ w`` (the Woodbury identity).
  ``base_form: covariance`` (the CPU study) takes ``C = diag(d) + w wᵀ`` as the covariance, a different family.

The paper's "10 MADE layers (2 flows, 5 layers)" is read as 5 stochastic layers whose data layers are MAFs of
2 MADEs each (*inferred*; ``docs/decisions.md``, "SeRe-MAF"). The data flows have no batch-norm layers (the
paper describes none, and their statistics would depend on posterior samples). The model is trained on the
ELBO and reported as an ELBO, with the tighter importance-weighted bound of the same quantity beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.distributions import LowRankMultivariateNormal

from srvae.distributions import LOG_2PI, inverse_positive, positive
from srvae.flows.base import Bijector
from srvae.flows.maf import MaskedAutoregressiveFlow
from srvae.flows.spline_coupling import SplineCouplingFlow
from srvae.nets.mlp import Activation, ConditionalMLP, PositiveInt, Widths

from .sere_vae import SeReVAE, SeReVAEConfig
from .stochastic_layers import IndependentDataLayers


@dataclass(frozen=True)
class SeReMAFConfig(SeReVAEConfig):
    layers: PositiveInt = 5  # stochastic layers = image blocks (the paper: 5 × 40)
    latents: PositiveInt = 40
    coupling_layers: PositiveInt = 2  # spline coupling transforms per bijector (masks alternate)
    spline_bins: PositiveInt = 8
    spline_bound: float = 5.0  # the splines act on [−B, B], identity outside
    data_mades: PositiveInt = 2  # MADEs in each block's conditional MAF
    made_hidden: Widths = (1024, 1024)  # hidden layers of each MADE
    made_activation: Activation = "relu"
    #: the data layers' base: diag(d) + w wᵀ as the precision (Rezende et al.'s eq. 9, the paper) or the covariance
    base_form: Literal["covariance", "precision"] = "covariance"


class RankOnePrecisionGaussian:
    """``N(μ, C)`` with precision ``C⁻¹ = diag(d) + w wᵀ`` (Rezende et al. 2014, eq. 9), batched over leading
    dimensions: ``O(N)`` log-density and sampling, no matrix is formed.

    - ``log N(u) = −½ Σ log 2π + ½ (Σ log d + log(1 + η)) − ½ (Σ d y² + (wᵀy)²)``, ``y = u − μ``, ``η = wᵀ D⁻¹ w``
      (matrix determinant lemma);
    - ``u = μ + R ξ``, ``ξ ~ N(0, I)``, ``R = D^{-1/2} (I − γ a aᵀ)``, ``a = D^{-1/2} w``, ``γ = (1 − 1/√(1 + η)) / η``
      ``= 1 / (√(1 + η) (1 + √(1 + η)))``:
      ``R Rᵀ = D^{-1/2} (I − a aᵀ / (1 + η)) D^{-1/2} = (D + w wᵀ)⁻¹`` (Sherman–Morrison).
    """

    def __init__(self, mean: Tensor, d: Tensor, w: Tensor) -> None:
        self.mean, self.d, self.w = mean, d, w

    def log_prob(self, u: Tensor) -> Tensor:
        y = u - self.mean
        eta = (self.w * self.w / self.d).sum(-1)
        log_det_precision = torch.log(self.d).sum(-1) + torch.log1p(eta)
        quadratic = (self.d * y * y).sum(-1) + (self.w * y).sum(-1) ** 2
        return 0.5 * (log_det_precision - quadratic - y.shape[-1] * LOG_2PI)

    def sample(self) -> Tensor:
        xi = torch.randn_like(self.mean)
        a = self.w * self.d.rsqrt()
        root = torch.sqrt(1.0 + (a * a).sum(-1, keepdim=True))
        gamma = 1.0 / (root * (1.0 + root))  # = (1 − 1/√(1 + η)) / η, with no 0/0 at η = 0
        return self.mean + self.d.rsqrt() * (xi - gamma * a * (a * xi).sum(-1, keepdim=True))


class FlowDataLayer(nn.Module):
    """``p(x_l | z_l, x_{l-1})``: a conditional MAF on the block over a unit-rank Gaussian base (rank-one plus
    diagonal covariance or precision)."""

    def __init__(
        self, latents: int, block_dim: int, prev_block_dim: int, base_hidden: Sequence[int], act: str, mades: int,
        made_hidden: Sequence[int], made_act: str, block_mean: Tensor | None = None,
        base_form: Literal["covariance", "precision"] = "covariance",
    ) -> None:
        super().__init__()
        self.base_form = base_form
        self.flow = MaskedAutoregressiveFlow(block_dim, mades, made_hidden, latents, batch_norm=False, act=made_act)
        self.first = ConditionalMLP([latents], base_hidden, 3 * block_dim, act)
        self.residual = (ConditionalMLP([prev_block_dim, latents], base_hidden, 3 * block_dim, act)
                         if prev_block_dim else None)
        # start at d = 1 with a small random w (w = 0 would get no gradient through w wᵀ): N(block mean, I + w wᵀ),
        # or with precision I + w wᵀ
        mean = block_mean if block_mean is not None else torch.zeros(block_dim)
        self.first.init_output(torch.cat([mean, torch.full((block_dim,), inverse_positive(1.0)),
                                          0.1 * torch.randn(block_dim)]))

    def base(self, z: Tensor, x_prev: Tensor | None) -> LowRankMultivariateNormal | RankOnePrecisionGaussian:
        """The base density of ``u_l`` given ``z_l`` ``[..., N]`` and the previous block ``[B, D_{l-1}]``: ``diag(d) +
        w wᵀ`` as its covariance or (``base_form="precision"``) as its precision."""
        params = self.first(z)
        if self.residual is not None:
            if x_prev is None:
                raise ValueError("this data layer has a residual term and needs the previous block")
            params = params + self.residual(x_prev, z)
        mean, pre_d, w = params.chunk(3, dim=-1)
        if self.base_form == "precision":
            return RankOnePrecisionGaussian(mean, positive(pre_d), w)
        return LowRankMultivariateNormal(mean, w.unsqueeze(-1), positive(pre_d), validate_args=False)

    def log_prob(self, block: Tensor, z: Tensor, x_prev: Tensor | None = None) -> Tensor:
        """``log p(x_l | z_l, x_{l-1})`` of the observed block ``[B, D_l]`` under ``k`` codes ``[k, B, N]``:
        ``[k, B]``."""
        u, logabsdet = self.flow(block, z)
        return self.base(z, x_prev).log_prob(u) + logabsdet

    def sample(self, z: Tensor, x_prev: Tensor | None = None) -> Tensor:
        """A draw of the block: ``u`` from the base, then the MAF's generating direction (``D_l`` passes per MADE)."""
        block, _ = self.flow.inverse(self.base(z, x_prev).sample(), z)
        return block


class SeReMAF(SeReVAE):
    """SeRe-VAE with spline-coupling bijectors and conditional-MAF data layers, for continuous data."""

    Config = SeReMAFConfig
    data_kind = "continuous"

    def make_bijector(self, layer: int) -> Bijector:
        cfg = self.cfg
        return SplineCouplingFlow(cfg.latents, self.context_dim(layer) or None, cfg.coupling_layers, cfg.spline_bins,
                                  cfg.bijector_hidden, cfg.activation, cfg.spline_bound)

    def make_data_layers(self, data_mean: Tensor | None) -> IndependentDataLayers:
        cfg, sizes = self.cfg, self.partition.sizes
        means = self.partition.split(data_mean) if data_mean is not None else [None] * cfg.layers
        return IndependentDataLayers(sizes, [
            FlowDataLayer(cfg.latents, sizes[l], sizes[l - 1] if l else 0, cfg.data_hidden, cfg.activation,
                          cfg.data_mades, cfg.made_hidden, cfg.made_activation, means[l], cfg.base_form)
            for l in range(cfg.layers)
        ])
