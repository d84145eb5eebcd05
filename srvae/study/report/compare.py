"""Paired comparisons between two models of the study, with their uncertainty.

Every model is scored on the same binarised test images, so the difference between two models is measured
image by image: for seed ``s`` and test image ``i``, ``Δ_si = NLL_A(x_i) − NLL_B(x_i)`` with
``NLL = −log p̂_K(x)`` (Burda et al.'s importance-weighted estimate, the metric of the SeRe-VAE paper's
Tables 1–2). The reported gap is ``Δ = mean_s mean_i Δ_si`` (per image, averaged per seed, then over seeds).

Its standard error has two parts that do not share a source of noise:

- training (and estimator) noise: the per-seed gaps ``d_s = mean_i Δ_si`` vary from seed to seed, with
  variance ``var_s(d_s) / S``;
- the finite test set: the same images serve every seed, so their sampling error is that of the
  seed-averaged per-image gaps, ``var_i(mean_s Δ_si) / N``.

``SE² = var_s(d_s)/S + var_i(mean_s Δ_si)/N``; the gap is tested against zero with a t distribution whose
degrees of freedom follow Welch–Satterthwaite (with one seed, the training part is unknown and left out: the
table says so).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

#: the two-sided level at which a gap is called significant
ALPHA = 0.05


@dataclass(frozen=True)
class PairedDifference:
    """``NLL_A − NLL_B`` in nats (negative: A is better), its standard error and a two-sided t-test."""

    mean: float
    se: float
    seeds: int
    images: int
    dof: float
    p_value: float

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA


def paired_difference(nll_a: np.ndarray, nll_b: np.ndarray) -> PairedDifference:
    """The paired gap between two models from their per-image test NLLs, each ``[seeds, images]``."""
    nll_a, nll_b = np.asarray(nll_a, dtype=np.float64), np.asarray(nll_b, dtype=np.float64)
    if nll_a.shape != nll_b.shape or nll_a.ndim != 2 or nll_a.shape[1] < 2:
        raise ValueError(f"expected two [seeds, images] arrays of one shape, got {nll_a.shape} and {nll_b.shape}")
    diff = nll_a - nll_b
    seeds, images = diff.shape
    per_seed, per_image = diff.mean(1), diff.mean(0)
    var_images = per_image.var(ddof=1) / images
    var_seeds = per_seed.var(ddof=1) / seeds if seeds > 1 else 0.0
    se = math.sqrt(var_images + var_seeds)
    if se == 0.0:  # identical scores: no evidence of a difference
        return PairedDifference(float(diff.mean()), 0.0, seeds, images, math.inf, 1.0)
    dof = se**4 / (var_images**2 / (images - 1) + (var_seeds**2 / (seeds - 1) if seeds > 1 else 0.0))
    t = float(diff.mean()) / se
    return PairedDifference(float(diff.mean()), se, seeds, images, dof, float(2 * stats.t.sf(abs(t), dof)))
