"""Log-densities and KL divergences shared by every model.

Conventions (``docs/decisions.md``, "Estimator"): Gaussian log-densities always include the
``-0.5 log 2π`` constant, so prior and posterior terms are consistent and cancel exactly where they should;
the Bernoulli log-likelihood has no constant. Scales are standard deviations, never log-variances fed to an
unbounded ``exp`` inside a model: models produce them with :func:`positive`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

LOG_2PI = math.log(2.0 * math.pi)
#: the floor of :func:`positive`: no scale is ever smaller
SCALE_FLOOR = 1e-4


def positive(x: Tensor, floor: float = SCALE_FLOOR) -> Tensor:
    """A strictly positive value from an unconstrained one: ``softplus(x) + floor``."""
    return F.softplus(x) + floor


def inverse_positive(value: float, floor: float = SCALE_FLOOR) -> float:
    """The pre-activation ``a`` with ``positive(a, floor) == value`` (for initialising scales)."""
    return math.log(math.expm1(value - floor))


def mean_and_std(params: Tensor) -> tuple[Tensor, Tensor]:
    """``[..., 2N]`` network outputs → mean and standard deviation ``[..., N]`` of a diagonal Gaussian."""
    mean, pre_std = params.chunk(2, dim=-1)
    return mean, positive(pre_std)


def marginal_logits(data_mean: Tensor) -> Tensor:
    """Bernoulli logits of the data's pixel means (clamped away from 0 and 1), to start decoders there."""
    return torch.logit(data_mean.clamp(1e-3, 1 - 1e-3))


def gaussian_log_prob(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """log N(x; mean, diag(std²)), summed over the last dimension."""
    z = (x - mean) / std
    return (-0.5 * (z * z + LOG_2PI) - torch.log(std)).sum(-1)


def standard_normal_log_prob(x: Tensor) -> Tensor:
    """log N(x; 0, I), summed over the last dimension."""
    return (-0.5 * (x * x + LOG_2PI)).sum(-1)


def gaussian_kl(mean_q: Tensor, std_q: Tensor, mean_p: Tensor, std_p: Tensor) -> Tensor:
    """KL(N(mean_q, diag std_q²) || N(mean_p, diag std_p²)), closed form, summed over the last dimension."""
    var_ratio = (std_q / std_p) ** 2
    mahalanobis = ((mean_q - mean_p) / std_p) ** 2
    return 0.5 * (var_ratio + mahalanobis - 1.0 - torch.log(var_ratio)).sum(-1)


def bernoulli_log_prob(x: Tensor, logits: Tensor) -> Tensor:
    """log Bernoulli(x; sigmoid(logits)) for x in {0, 1}, summed over the last dimension."""
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)


def reparameterise(mean: Tensor, std: Tensor) -> Tensor:
    """A draw from N(mean, diag std²) that gradients flow through."""
    return mean + std * torch.randn_like(std)
