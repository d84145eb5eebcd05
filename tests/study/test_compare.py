"""Paired comparisons: the gap, its two-way random-effects standard error and degrees of freedom, a test with
its nominal size over seed/image/interaction variance ratios, and Holm's correction."""

import math

import numpy as np
import pytest

from srvae.study.report.compare import holm, paired_difference, two_way_test


def test_standard_error_is_the_two_way_random_effects_one():
    rng = np.random.default_rng(0)
    images = rng.normal(90.0, 15.0, 400)  # image difficulty, shared by both models and every seed
    a = images + 1.0 + rng.normal(0.0, 2.0, (3, 400)) + rng.normal(0.0, 2.0, (1, 400)) + np.array([[0.3], [-0.1], [0.5]])
    b = images + rng.normal(0.0, 2.0, (3, 400))
    gap = paired_difference(a, b)
    d = a - b
    assert gap.mean == pytest.approx(d.mean())
    # mean squares by the sums-of-squares identity SS_total = SS_seed + SS_image + SS_interaction
    ss_seed = 400 * ((d.mean(1) - d.mean()) ** 2).sum()
    ss_image = 3 * ((d.mean(0) - d.mean()) ** 2).sum()
    ms_inter = (((d - d.mean()) ** 2).sum() - ss_seed - ss_image) / (2 * 399)
    ms_seed, ms_image = ss_seed / 2, ss_image / 399
    assert ms_image > 2 * ms_inter  # a real image term (sd 2 per image): it enters the standard error
    assert gap.se == pytest.approx(math.sqrt((ms_seed + ms_image - ms_inter) / (3 * 400)))
    assert 2 < gap.dof < 399 and (gap.seeds, gap.images) == (3, 400)
    # pairing removes the shared difficulty: an unpaired standard error would be about 15 / sqrt(400) · √2
    assert gap.se < 0.5 < 15 / math.sqrt(400) * math.sqrt(2)


def test_without_an_image_term_it_is_the_exact_t_test_on_seed_means():
    rng = np.random.default_rng(4)
    d = rng.normal(0.0, 1.0, (3, 1)) + rng.normal(0.0, 3.0, (3, 500))  # seeds and interaction only
    gap = paired_difference(d, np.zeros_like(d))
    per_seed = d.mean(1)
    assert gap.dof == pytest.approx(2)
    assert gap.se == pytest.approx(per_seed.std(ddof=1) / math.sqrt(3))


def test_identical_models_differ_by_nothing():
    x = np.random.default_rng(1).normal(90, 10, (2, 50))
    gap = paired_difference(x, x)
    assert gap.mean == 0 and gap.se == 0 and not gap.significant


def test_one_seed_uses_the_test_images_alone():
    rng = np.random.default_rng(2)
    a, b = rng.normal(90, 10, (1, 300)), rng.normal(90, 10, (1, 300))
    gap = paired_difference(a, b)
    assert gap.se == pytest.approx((a - b)[0].std(ddof=1) / math.sqrt(300))
    assert gap.dof == 299


#: shares of Var(mean gap) = σ_s²/S + σ_i²/N + σ_e²/(SN) from seeds, images and their interaction
NULL_SETTINGS = {
    "interaction only": (0, 0, 1),
    "seed 12x image": (12, 1, 0.1),
    "seed 3x image": (3, 1, 0.1),
    "seed 3x image, interaction": (3, 1, 1),
    "seed = image": (1, 1, 0.1),
    "image 10x seed": (1, 10, 0.1),
    "image only": (0, 1, 0.1),
    "seed only": (1, 0, 0.1),
    "all equal": (1, 1, 1),
}


@pytest.mark.parametrize("seeds", [3, 5])
@pytest.mark.parametrize("shares", NULL_SETTINGS.values(), ids=NULL_SETTINGS)
def test_the_test_has_its_nominal_size_whatever_the_variance_ratios(seeds, shares):
    """With no true gap, 4–6% of comparisons are called significant at 5% (20,000 replicates: ±0.15%)."""
    replicates, images = 20_000, 100
    seed_share, image_share, inter_share = shares
    rng = np.random.default_rng(0)
    diff = (rng.normal(0, math.sqrt(seed_share * seeds), (replicates, seeds, 1))
            + rng.normal(0, math.sqrt(image_share * images), (replicates, 1, images))
            + rng.normal(0, math.sqrt(inter_share * seeds * images), (replicates, seeds, images)))
    mean, se, _, p_value = two_way_test(diff)
    # the standard error is that of the mean gap: its square averages to the simulated variance (the image
    # pretest adds a little where there is no image term)
    assert np.mean(se**2) == pytest.approx(sum(shares), rel=0.1)
    assert 0.04 <= np.mean(p_value < 0.05) <= 0.06


def test_a_three_nat_gap_is_found():
    rng = np.random.default_rng(3)
    diff = 3.0 + rng.normal(0, 0.4, (300, 3, 1)) + rng.normal(0, 3, (300, 3, 200))
    assert np.mean(two_way_test(diff)[3] < 0.05) > 0.8


def test_shapes_must_match():
    with pytest.raises(ValueError, match="one shape"):
        paired_difference(np.zeros((2, 5)), np.zeros((3, 5)))


def test_holm_adjusts_step_down_and_keeps_the_order():
    # by hand: sorted 0.01, 0.02, 0.03, 0.04 → 4·0.01 = 0.04, 3·0.02 = 0.06, 2·0.03 = 0.06, 1·0.04 → max 0.06
    assert holm([0.03, 0.01, 0.04, 0.02]) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    # monotone step-down: a later step never falls below an earlier one; capped at 1
    assert holm([0.2, 0.001, 0.5]) == pytest.approx([0.4, 0.003, 0.5])
    assert holm([0.6, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([0.02]) == pytest.approx([0.02])
