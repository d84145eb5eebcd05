"""Gaussian layers shared by the hierarchical models: a diagonal-Gaussian output head and the precision-weighted
merge of two Gaussians.

The merge is the inference step of the Ladder VAE (Sønderby et al. 2016, eqs. 18–19): the posterior of layer
``l`` is the normalised product of the bottom-up "likelihood" Gaussian N(μ̂, σ̂²) and the top-down prior
N(μ_p, σ_p²),

    σ_q² = 1 / (σ̂⁻² + σ_p⁻²),        μ_q = (μ̂ σ̂⁻² + μ_p σ_p⁻²) σ_q².
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from srvae.distributions import mean_and_std


class GaussianHead(nn.Module):
    """A linear layer whose output parametrises N(mean, diag std²): ``std = softplus(·) + floor``, never an ``exp``."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, 2 * out_dim)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        return mean_and_std(self.linear(h))


def precision_weighted_merge(
    mean_a: Tensor, std_a: Tensor, mean_b: Tensor, std_b: Tensor
) -> tuple[Tensor, Tensor]:
    """Mean and std of the normalised product N(x; mean_a, std_a²) · N(x; mean_b, std_b²), elementwise."""
    precision_a, precision_b = std_a.pow(-2), std_b.pow(-2)
    var = 1.0 / (precision_a + precision_b)
    mean = (mean_a * precision_a + mean_b * precision_b) * var
    return mean, torch.sqrt(var)
