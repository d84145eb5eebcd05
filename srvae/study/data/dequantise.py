"""Continuous data for density estimation: the MAF protocol (Papamakarios et al. 2017, Section 4.3, as their code).

8-bit images become real vectors in two steps:

1. uniform dequantisation, drawn **once** with a fixed seed: ``x = (pixel + u) / 256``, ``u ~ U[0, 1)^D``, so
   ``x ∈ (0, 1)`` (every split has its own noise; the training set does not change between epochs);
2. the logit transform ``y = logit(λ + (1 − 2λ) x)`` (λ = 1e-6 for MNIST, 0.05 for CIFAR-10), which maps the
   bounded pixels to ``R^D``, where a flow's Gaussian base lives.

Log-likelihoods are reported **in logit space**, ``log p(y)`` in nats per image (the MAF paper's, and so the
SeRe-VAE paper's Table 3, convention). The same density in pixel space, over ``x̃ = 256 x ∈ [0, 256)^D``, is
``log p(x̃) = log p(y) + log|det ∂y/∂x̃|`` with

    log|det ∂y/∂x̃| = Σ_i [log(1 − 2λ) − log 256 − log s_i − log(1 − s_i)],    s = λ + (1 − 2λ) x = sigmoid(y),

which gives the usual bits per dimension, ``−log p(x̃) / (D ln 2)`` (:meth:`DequantisedData.bits_per_dim`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .splits import Splits

#: the 8-bit pixel range that dequantisation spreads over [0, 1)
LEVELS = 256


def dequantise(pixels: Tensor, generator: torch.Generator) -> Tensor:
    """``(pixel + u) / 256`` with ``u ~ U[0, 1)`` from ``generator``: 8-bit values ``0..255`` → ``(0, 1)``."""
    return (pixels + torch.rand(pixels.shape, generator=generator)) / LEVELS


def logit_transform(x: Tensor, lam: float) -> Tensor:
    """``logit(λ + (1 − 2λ) x)``: values in ``[0, 1]`` → ``R``."""
    return torch.logit(lam + (1.0 - 2.0 * lam) * x)


def pixel_log_jacobian(y: Tensor, lam: float) -> Tensor:
    """``log|det ∂y/∂x̃|`` of every row of ``y`` (logit space) with respect to the pixels ``x̃ = 256 x``: ``[N]``."""
    log_s, log_one_minus_s = torch.nn.functional.logsigmoid(y), torch.nn.functional.logsigmoid(-y)
    return (math.log(1.0 - 2.0 * lam) - math.log(LEVELS) - log_s - log_one_minus_s).sum(-1)


@dataclass
class DequantisedData(Splits):
    """Train, validation and test images dequantised once and mapped to logit space, all ``[N, D]``."""

    logit_lambda: float

    def training_images(self, generator: torch.Generator) -> Tensor:
        """The training set: the same every epoch (its noise was drawn once, as in the MAF protocol)."""
        return self.train

    @functools.cached_property
    def divergence_floor(self) -> float:
        """The uniform density on the 8-bit pixel cube, in logit space, mean over the training images (nats per
        image): 8 bits per dimension, the continuous counterpart of binary data's ``−D ln 2``.

        Any trained model must do better; a bound below it (even a finite one) means training diverged. Computed
        once per data object (a float64 pass over the training set): the check and its error message share it.
        """
        log_uniform = -self.data_dim * math.log(LEVELS)  # log p(x̃) of U[0, 256)^D
        return float(log_uniform - pixel_log_jacobian(self.train.double(), self.logit_lambda).mean())

    floor_name = "a uniform density on the 8-bit pixel values (8 bits per dimension)"

    def bits_per_dim(self, log_px: Tensor) -> float:
        """Mean bits per dimension in 8-bit pixel space of test log-likelihoods ``log_px`` (logit space)."""
        log_px_pixels = log_px.double() + pixel_log_jacobian(self.test.double(), self.logit_lambda).cpu()
        return float(-log_px_pixels.mean() / (self.data_dim * math.log(2.0)))


def dequantised_data(name: str, train: Tensor, valid: Tensor, test: Tensor, lam: float, seed: int) -> DequantisedData:
    """The MAF protocol applied to 8-bit pixel tensors: each split dequantised with its own fixed seed
    (``seed``, ``seed + 1``, ``seed + 2``), then logit-transformed with ``λ = lam``."""
    splits = [logit_transform(dequantise(pixels, torch.Generator().manual_seed(seed + i)), lam)
              for i, pixels in enumerate((train, valid, test))]
    return DequantisedData(name, *splits, logit_lambda=lam)
