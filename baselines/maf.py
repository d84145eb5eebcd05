"""Masked autoregressive flow, MAF(K) (Papamakarios, Pavlakou & Murray 2017), the SeRe-VAE paper's Table 3 baseline.

A density estimator of dequantised images in logit space: ``K`` Gaussian MADEs with the input order reversed
between them, each followed by a batch-norm layer (:mod:`srvae.flows.maf`, the MAF paper's eqs. 2–5 and
Section 3.4), on a standard-normal base density:

    u = f(x),    log p(x) = log N(u; 0, I) + log|det ∂f/∂x|.

The log-likelihood is exact. In the study's one model contract it is a model whose every importance weight
is ``p(x)`` itself: ``score`` returns ``log p(x)`` as the likelihood term and zero prior and posterior terms,
so its ELBO, its K-sample bound and its log-likelihood coincide (``exact = True``).

Batch norm uses the batch's statistics in training, a running average for validation, and — like the MAF
paper at test time — the exact statistics of the whole training set once training is over
(:meth:`MAF.refresh_statistics`). MADEs: ReLU units, hidden degrees cyclic where a layer has a unit per degree
and random otherwise (the MAF paper's CIFAR-10 setting; :mod:`srvae.flows.made`). Published sizes: MNIST,
5 or 10 MADEs of two hidden layers of 1,024 units; CIFAR-10, widths 1,024 and 2,048 (``config.yaml``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from srvae.distributions import standard_normal_log_prob
from srvae.flows.maf import MaskedAutoregressiveFlow
from srvae.models import LatentVariableModel, Scores
from srvae.nets.mlp import Activation, PositiveInt, Widths


@dataclass(frozen=True)
class MAFConfig:
    mades: PositiveInt = 5  # Gaussian MADEs in the stack: MAF(5), MAF(10)
    hidden: Widths = (1024, 1024)  # each MADE's hidden layers (the MAF paper's MNIST setting)
    activation: Activation = "relu"
    batch_norm: bool = True  # a batch-norm layer after each MADE


class MAF(LatentVariableModel):
    """MAF(K) with batch norm on a standard-normal base: exact log-density of continuous data."""

    Config = MAFConfig
    data_kind = "continuous"
    exact = True

    def __init__(self, cfg: MAFConfig, data_dim: int, data_mean: Tensor | None = None) -> None:
        super().__init__(cfg, data_dim, data_mean)
        self.flow = MaskedAutoregressiveFlow(data_dim, cfg.mades, cfg.hidden, None, cfg.batch_norm, cfg.activation)

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p(x)`` of every example of ``x`` ``[B, D]``: ``[B]``."""
        u, logabsdet = self.flow(x)
        return standard_normal_log_prob(u) + logabsdet

    def score(self, x: Tensor, k: int) -> Scores:
        # every sample's weight is p(x): computed once, shared by the k "samples"
        log_px = self.log_prob(x).expand(k, x.shape[0])
        zeros = torch.zeros_like(log_px)
        return Scores(log_likelihood=log_px, log_prior=zeros, log_posterior=zeros)

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        weight = next(self.parameters())
        x, _ = self.flow.inverse(torch.randn(n, self.data_dim, device=weight.device, dtype=weight.dtype))
        return x

    def refresh_statistics(self, batches: Iterable[Tensor]) -> None:
        """Every batch-norm layer gets the exact statistics of its inputs over the training set (MAF paper)."""
        self.flow.set_batch_norm_statistics(batches)
