"""Mean-field VAE (Kingma & Welling 2014), in the one-stochastic-layer setting of Burda et al. 2016.

Generative model ``p(z) = N(0, I)``, ``p(x | z) = Bernoulli(sigmoid(decoder(z)))``; variational posterior
``q(z | x) = N(μ(x), diag σ(x)²)``. Burda et al.'s model: two deterministic layers of 200 tanh units in the
encoder and in the decoder, 50 latents, decoder output bias at the logit of the training pixel means.
Reference point: Burda et al.'s own −86.76 nats (1 layer, k = 1, K = 5000), not a number of the SeRe-VAE paper.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from srvae.distributions import (
    bernoulli_log_prob,
    gaussian_kl,
    gaussian_log_prob,
    mean_and_std,
    reparameterise,
    standard_normal_log_prob,
)
from srvae.models import ElboTerms, LatentVariableModel, Scores
from srvae.nets.mlp import Activation, PositiveInt, Widths, init_output_bias, mlp


@dataclass(frozen=True)
class VAEConfig:
    latents: PositiveInt = 50
    hidden: Widths = (200, 200)
    activation: Activation = "tanh"


def sample_from_prior(decoder: torch.nn.Module, n: int, latents: int, device: torch.device) -> Tensor:
    """``x ~ Bernoulli(sigmoid(decoder(z)))`` with ``z ~ N(0, I)``: ancestral samples of a one-layer VAE."""
    z = torch.randn(n, latents, device=device)
    return torch.bernoulli(torch.sigmoid(decoder(z)))


class VAE(LatentVariableModel):
    """Mean-field Gaussian VAE with a Bernoulli decoder."""

    Config = VAEConfig

    def __init__(self, cfg: VAEConfig, data_dim: int, data_mean: Tensor | None = None) -> None:
        super().__init__(cfg, data_dim, data_mean)
        self.encoder = mlp(data_dim, cfg.hidden, 2 * cfg.latents, cfg.activation)
        self.decoder = mlp(cfg.latents, cfg.hidden[::-1], data_dim, cfg.activation)
        init_output_bias(self.decoder[-1], data_mean)

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and standard deviation of q(z | x)."""
        return mean_and_std(self.encoder(x))

    def score(self, x: Tensor, k: int) -> Scores:
        mean, std = self.posterior(x)  # [B, Z], computed once for all k samples
        z = reparameterise(mean.expand(k, *mean.shape), std.expand(k, *std.shape))  # [k, B, Z]
        logits = self.decoder(z)
        kl = gaussian_kl(mean, std, torch.zeros_like(mean), torch.ones_like(std))
        return Scores(
            log_likelihood=bernoulli_log_prob(x.expand(k, *x.shape), logits),
            log_prior=standard_normal_log_prob(z),
            log_posterior=gaussian_log_prob(z, mean, std),
            kl=kl.expand(k, -1).unsqueeze(-1),
        )

    def elbo_terms(self, x: Tensor) -> ElboTerms:
        """The single-sample ELBO with the closed-form KL: the same draw as ``score(x, 1)`` without the two
        log-densities that only importance weights need (2-6% of a training step of Burda et al.'s network on 2 CPU
        threads, batch 100)."""
        mean, std = self.posterior(x)
        z = reparameterise(mean, std)
        kl = gaussian_kl(mean, std, torch.zeros_like(mean), torch.ones_like(std))
        return ElboTerms(bernoulli_log_prob(x, self.decoder(z)), kl, kl.unsqueeze(-1))

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        return sample_from_prior(self.decoder, n, self.cfg.latents, self.device)
