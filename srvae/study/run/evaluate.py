"""Importance-weighted estimate of the test log-likelihood (Burda et al. 2016), the metric of the
SeRe-VAE paper's Tables 1–2 (K = 1000):

    log p̂_K(x) = logsumexp_k(log w_k) − log K,    log w_k = log p(x, z_k) − log q(z_k | x),  z_k ~ q(z | x).

The log-sum-exp is taken per example and then averaged over examples (``docs/decisions.md``,
"Estimator"). Memory stays bounded whatever K is: examples are processed in batches and the K
samples in chunks, combined with a running, numerically stable log-add-exp. The same weights give the
K-sample estimate of the ELBO, ``mean_k log w_k``, at no extra cost.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from srvae.models import LatentVariableModel, training_mode


@dataclass
class IWEstimate:
    """Per-example ``log p̂_K(x)`` and K-sample ELBO estimates, both ``[N]``."""

    log_px: Tensor
    elbo: Tensor
    k: int

    @property
    def nll(self) -> float:
        return -float(self.log_px.mean())

    @property
    def nll_sem(self) -> float:
        """Standard error of the mean NLL over test examples."""
        return float(self.log_px.std() / math.sqrt(len(self.log_px))) if len(self.log_px) > 1 else 0.0


@torch.no_grad()
def iw_log_likelihood(model: LatentVariableModel, x: Tensor, k: int, k_chunk: int, batch_size: int,
                      progress: Callable[[int, int], None] | None = None) -> IWEstimate:
    """Importance-weighted log-likelihood of every example of ``x`` with ``k`` samples (model in eval mode).

    ``k_chunk`` samples of ``batch_size`` examples are drawn at a time; ``progress(done, total)`` is called
    after every batch of examples.
    """
    if k < 1 or k_chunk < 1 or batch_size < 1:
        raise ValueError(f"k, k_chunk and batch_size must be positive, got {k}, {k_chunk}, {batch_size}")
    log_px, elbo = [], []
    with training_mode(model, False):
        for xb in x.split(batch_size):
            acc, sum_log_w = None, 0.0
            for start in range(0, k, k_chunk):
                log_w = model.log_importance_weights(xb, min(k_chunk, k - start))  # [k_chunk, b]
                chunk = torch.logsumexp(log_w, dim=0)
                acc = chunk if acc is None else torch.logaddexp(acc, chunk)
                sum_log_w = sum_log_w + log_w.sum(0)
            log_px.append(acc - math.log(k))
            elbo.append(sum_log_w / k)
            if progress is not None:
                progress(sum(len(v) for v in log_px), len(x))
    return IWEstimate(torch.cat(log_px).cpu(), torch.cat(elbo).cpu(), k)


@torch.no_grad()
def mean_kl_per_layer(model: LatentVariableModel, x: Tensor, batch_size: int = 500) -> list[float]:
    """Mean single-sample KL of each stochastic layer over ``x``: a layer with KL ≈ 0 has collapsed."""
    with training_mode(model, False):
        total = sum(model.elbo_terms(xb).kl_per_layer.sum(0) for xb in x.split(batch_size))
    return [float(v) / len(x) for v in total]
