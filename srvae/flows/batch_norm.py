"""Batch normalisation as a bijector (Papamakarios et al. 2017, "Masked Autoregressive Flow", Section 3.4).

    y = (x − m) / sqrt(v + ε) ⊙ exp(γ) + β,      log|det ∂y/∂x| = Σ_i (γ_i − ½ log(v_i + ε)),

with a learned log-scale ``γ`` (exponentiated, so the map stays invertible) and shift ``β``. In training mode
``(m, v)`` are the mean and (biased) variance of the batch over every leading dimension; in eval mode they are
the stored statistics, so that the layer is a fixed affine map of each vector. The stored statistics follow a
running average during training (for validation); :meth:`BatchNormBijector.set_statistics` replaces them by
exact statistics over a whole data set, which is what the MAF paper uses at test time (its code computes them
over the full training set).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import Bijector


class BatchNormBijector(Bijector):
    """The MAF paper's batch-norm layer on ``[..., N]`` vectors (it ignores any context)."""

    def __init__(self, features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.log_gamma = nn.Parameter(torch.zeros(features))
        self.beta = nn.Parameter(torch.zeros(features))
        self.register_buffer("mean", torch.zeros(features))
        self.register_buffer("var", torch.ones(features))

    def _statistics(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if not self.training:
            return self.mean, self.var
        flat = x.reshape(-1, x.shape[-1])
        mean, var = flat.mean(0), flat.var(0, unbiased=False)
        with torch.no_grad():
            self.mean.lerp_(mean, self.momentum)
            self.var.lerp_(var, self.momentum)
        return mean, var

    def _logabsdet(self, var: Tensor, shape: torch.Size) -> Tensor:
        return (self.log_gamma - 0.5 * torch.log(var + self.eps)).sum().expand(shape[:-1])

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        mean, var = self._statistics(x)
        y = (x - mean) * torch.rsqrt(var + self.eps) * self.log_gamma.exp() + self.beta
        return y, self._logabsdet(var, x.shape)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Uses the stored statistics: generation happens with a trained model."""
        x = (y - self.beta) * (-self.log_gamma).exp() * torch.sqrt(self.var + self.eps) + self.mean
        return x, -self._logabsdet(self.var, y.shape)

    @torch.no_grad()
    def set_statistics(self, batches: list[Tensor]) -> None:
        """Store the exact mean and (biased) variance of the layer's inputs ``batches`` (each ``[B, N]``)."""
        total = sum(b.shape[0] for b in batches)
        mean = sum(b.double().sum(0) for b in batches) / total
        var = sum(((b.double() - mean) ** 2).sum(0) for b in batches) / total
        self.mean.copy_(mean)
        self.var.copy_(var)
