"""IAF-VAE (Kingma et al. 2016), the MLP version of SeRe-VAE's Table 1: one stochastic layer, IAF posterior.

Generative model ``p(z) = N(0, I)``, ``p(x | z) = Bernoulli(sigmoid(decoder(z)))``. Posterior: the encoder gives
``μ, σ`` and a context ``h``; ``z_0 = μ + σ ⊙ ε`` and ``z_T = IAF(z_0; h)`` (gated MADE steps, alternating
orderings; :mod:`srvae.flows.iaf`). Its density, by the change of variables,

    log q(z_T | x) = log N(z_0; μ, σ²) − Σ_t log|det ∂z_t/∂z_{t−1}|,

has no closed-form KL, so the ELBO uses the one-sample estimate (``kl=None``).

SeRe-VAE's Table 1 row: 1 layer, 100 latents, standard-normal prior, −83.04 nats. The paper gives no widths;
the ``iaf_vae_table1`` entry takes the IAF paper's "depth 2, width 320" IAF (two steps, MADEs of 320 units) and
MLPs of 500-500 ELU units (this project's choice).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from baselines.vae import sample_from_prior
from srvae.distributions import bernoulli_log_prob, gaussian_log_prob, reparameterise, standard_normal_log_prob
from srvae.flows.iaf import IAF
from srvae.models import LatentVariableModel, Scores
from srvae.nets.gaussian import GaussianHead
from srvae.nets.mlp import Activation, PositiveInt, Widths, init_output_bias, mlp, mlp_out_dim


@dataclass(frozen=True)
class IAFVAEConfig:
    latents: PositiveInt = 100
    hidden: Widths = (500, 500)  # encoder; the decoder mirrors it
    activation: Activation = "elu"
    context: PositiveInt = 100  # size of the encoder feature h that conditions every IAF step
    iaf_steps: PositiveInt = 2
    made_hidden: Widths = (320, 320)
    gate_bias: float = 2.0  # initial bias of the gate pre-activation: σ = sigmoid(2) ≈ 0.88


class IAFVAE(LatentVariableModel):
    """One-stochastic-layer VAE whose diagonal-Gaussian posterior is followed by a conditional IAF."""

    Config = IAFVAEConfig

    def __init__(self, cfg: IAFVAEConfig, data_dim: int, data_mean: Tensor | None = None) -> None:
        super().__init__(cfg, data_dim, data_mean)
        self.encoder = mlp(data_dim, cfg.hidden, None, cfg.activation)
        features = mlp_out_dim(data_dim, cfg.hidden)
        self.posterior_head = GaussianHead(features, cfg.latents)
        self.context_head = torch.nn.Linear(features, cfg.context)
        self.flow = IAF(cfg.latents, cfg.iaf_steps, cfg.made_hidden, cfg.context, cfg.activation, cfg.gate_bias)
        self.decoder = mlp(cfg.latents, cfg.hidden[::-1], data_dim, cfg.activation)
        init_output_bias(self.decoder[-1], data_mean)

    def score(self, x: Tensor, k: int) -> Scores:
        features = self.encoder(x)  # [B, F], computed once for all k samples
        mean, std = self.posterior_head(features)
        context = self.context_head(features).expand(k, -1, -1)
        z0 = reparameterise(mean.expand(k, -1, -1), std.expand(k, -1, -1))  # [k, B, Z]
        z, logabsdet = self.flow(z0, context)
        return Scores(
            log_likelihood=bernoulli_log_prob(x.expand(k, -1, -1), self.decoder(z)),
            log_prior=standard_normal_log_prob(z),
            log_posterior=gaussian_log_prob(z0, mean, std) - logabsdet,
        )

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        return sample_from_prior(self.decoder, n, self.cfg.latents, self.device)
