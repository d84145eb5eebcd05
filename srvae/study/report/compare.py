"""Paired comparisons between two models of the study, with their uncertainty, and Holm's correction.

Every model is scored on the same binarised test images, so the difference between two models is measured
image by image: for seed ``s`` and test image ``i``, ``d_si = NLL_A(x_i) − NLL_B(x_i)`` with
``NLL = −log p̂_K(x)`` (Burda et al.'s importance-weighted estimate, the metric of the SeRe-VAE paper's
Tables 1–2); A's seed ``s`` is paired with B's seed ``s``. The reported gap is the grand mean
``d̄ = mean_s mean_i d_si``.

Target of inference: the expected gap over training seeds *and* test images drawn from the data distribution
(a claim about the models, not about these 10,000 images). Two-way random-effects model (one observation per
cell, so the interaction and the estimator's noise are one term):
``d_si = μ + α_s + β_i + γ_si``, ``α ~ N(0, σ_s²)``, ``β ~ N(0, σ_i²)``, ``γ ~ N(0, σ_e²)``, so
``Var(d̄) = σ_s²/S + σ_i²/N + σ_e²/(SN)``. With the ANOVA mean squares (df ``S−1``, ``N−1``, ``(S−1)(N−1)``)

    MS_seed = N Σ_s (d̄_s − d̄)²/(S−1)        E = σ_e² + N σ_s²
    MS_img  = S Σ_i (d̄_i − d̄)²/(N−1)        E = σ_e² + S σ_i²
    MS_int  = Σ_si (d_si − d̄_s − d̄_i + d̄)²/((S−1)(N−1))    E = σ_e²

``Var(d̄) = (E MS_seed + E MS_img − E MS_int)/(SN)``. The seed part ``MS_seed`` needs no subtraction (the
interaction belongs to it); the image part ``S σ̂_i² = MS_img − MS_int`` enters only where the data show it,
``F = MS_img/MS_int`` above its 75% null quantile (Bancroft's sometimes-pool rule; a negative or
chance-level estimate is zero, not a variance): ``SE² = (MS_seed + [F > F_.75](MS_img − MS_int))/(SN)``.
Without an image term the test is the exact one on the seed means.

Degrees of freedom. Were the images fixed (the gap on this test set), ``d̄/√(MS_seed/(SN))`` would be exactly
``t_{S−1}``. With random images ``SE²`` mixes the ``S−1``-df seed term with the image term (many df), and
Satterthwaite's ``ν = (Σ c_k MS_k)²/Σ (c_k MS_k)²/f_k`` (the image term's variance from both ``MS_img`` and
``MS_int``) lies between ``S−1`` and ``N−1``. Plugged in as is, it is liberal (7.8% at a nominal 5% with
``S = 3`` when the seed term is 85–92% of the variance): a low draw of ``MS_seed`` both inflates ``|t|`` and
raises ``ν``. So ``ν`` is computed with ``MS_seed`` at its upper 2/3 confidence bound,
``MS_seed·(S−1)/χ²_{S−1}(1/3)``, which offsets most of that coupling (the level 2/3 is a calibration, chosen
by the integrals below: 1/2 stays liberal, lower levels turn conservative); the t statistic keeps the
unbiased ``SE``.
With a known image term (many images) the size at 5% then lies in 4.2–5.7% for ``S = 3``, 4.6–5.1% for
``S = 5`` and 3.4–7.3% for ``S = 2`` over every share of the seed term (numerical integration over the seed
mean square); ``tests/study/test_compare.py`` simulates 100 images and nine variance ratios (4.2–5.6% for
``S = 3``, 4.4–5.1% for ``S = 5``). At smaller levels (Holm's first steps) it is looser for ``S = 3``
(1.4–2.8% at a nominal 1.67%). One seed: no seed or interaction term can be told apart,
``SE² = var_i(d_i)/N`` with ``N − 1`` df, and the table says so.

Holm (1979): the ``m`` comparisons of one paper table are one family; the ``j``-th smallest p-value is
adjusted to ``max_{k ≤ j} min(1, (m − k + 1) p_(k))``, which holds the family-wise error at the level.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

#: the two-sided level at which a gap is called significant
ALPHA = 0.05
#: the seed mean square enters the degrees of freedom at its upper confidence bound of this level
DOF_BOUND = 2 / 3
#: the image variance enters the standard error where its F-test is significant at this level (pretest)
IMAGE_PRETEST = 0.25


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


def two_way_test(diff: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Grand mean, standard error, degrees of freedom and two-sided p-value of ``diff[..., seeds, images]``
    under the two-way random-effects model of the module docstring, over any leading batch axes."""
    diff = np.asarray(diff, dtype=np.float64)
    seeds, images = diff.shape[-2:]
    mean = diff.mean((-2, -1))
    per_image = diff.mean(-2)
    ms_image = seeds * ((per_image - mean[..., None]) ** 2).sum(-1) / (images - 1)
    if seeds == 1:  # no seed term: the images' spread is all there is
        variance, dof = ms_image / images, np.full_like(mean, images - 1.0)
    else:
        per_seed = diff.mean(-1)
        ms_seed = images * ((per_seed - mean[..., None]) ** 2).sum(-1) / (seeds - 1)
        residual = diff - per_seed[..., None] - per_image[..., None, :] + mean[..., None, None]
        ms_inter = (residual**2).sum((-2, -1)) / ((seeds - 1) * (images - 1))
        shown = ms_image > ms_inter * stats.f.isf(IMAGE_PRETEST, images - 1, (seeds - 1) * (images - 1))
        image_part = np.where(shown, ms_image - ms_inter, 0.0)
        variance = (ms_seed + image_part) / (seeds * images)
        # the image term's variance (both mean squares), only where it is in SE²
        image_noise = np.where(shown, ms_image**2 / (images - 1)
                               + ms_inter**2 / ((seeds - 1) * (images - 1)), 0.0)
        seed_bound = ms_seed * (seeds - 1) / stats.chi2.ppf(1 - DOF_BOUND, seeds - 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            dof = (seed_bound + image_part) ** 2 / (seed_bound**2 / (seeds - 1) + image_noise)
    se = np.sqrt(variance)
    with np.errstate(divide="ignore", invalid="ignore"):
        p_value = 2 * stats.t.sf(np.abs(mean) / se, dof)
    identical = se == 0  # identical scores: no evidence of a difference
    return (mean, se, np.where(identical, np.inf, dof), np.where(identical, 1.0, p_value))


def paired_difference(nll_a: np.ndarray, nll_b: np.ndarray) -> PairedDifference:
    """The paired gap between two models from their per-image test NLLs, each ``[seeds, images]`` (row ``s``
    of A is paired with row ``s`` of B)."""
    nll_a, nll_b = np.asarray(nll_a, dtype=np.float64), np.asarray(nll_b, dtype=np.float64)
    if nll_a.shape != nll_b.shape or nll_a.ndim != 2 or nll_a.shape[1] < 2:
        raise ValueError(f"expected two [seeds, images] arrays of one shape, got {nll_a.shape} and {nll_b.shape}")
    mean, se, dof, p_value = two_way_test(nll_a - nll_b)
    return PairedDifference(float(mean), float(se), *nll_a.shape, float(dof), float(p_value))


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values of one family of tests, in the order given."""
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    steps = np.minimum(1.0, (len(p) - np.arange(len(p))) * p[order])
    adjusted = np.empty_like(p)
    adjusted[order] = np.maximum.accumulate(steps)
    return adjusted
