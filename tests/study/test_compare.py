"""Paired comparisons: the gap, its standard error from seeds and test images, and a test with the right size."""

import math

import numpy as np
import pytest

from srvae.study.report.compare import paired_difference


def test_gap_and_standard_error_follow_the_two_sources_of_noise():
    rng = np.random.default_rng(0)
    images = rng.normal(90.0, 15.0, 400)  # image difficulty, shared by both models and every seed
    a = images + 1.0 + rng.normal(0.0, 2.0, (3, 400)) + np.array([[0.3], [-0.1], [0.5]])
    b = images + rng.normal(0.0, 2.0, (3, 400))
    gap = paired_difference(a, b)
    diff = a - b
    assert gap.mean == pytest.approx(diff.mean())
    expected = math.sqrt(diff.mean(1).var(ddof=1) / 3 + diff.mean(0).var(ddof=1) / 400)
    assert gap.se == pytest.approx(expected)
    assert (gap.seeds, gap.images) == (3, 400)
    # pairing removes the shared difficulty: an unpaired standard error would be about 15 / sqrt(400) · √2
    assert gap.se < 0.5 < 15 / math.sqrt(400) * math.sqrt(2)


def test_identical_models_differ_by_nothing():
    x = np.random.default_rng(1).normal(90, 10, (2, 50))
    gap = paired_difference(x, x)
    assert gap.mean == 0 and gap.se == 0 and not gap.significant


def test_one_seed_uses_the_test_images_alone():
    rng = np.random.default_rng(2)
    a, b = rng.normal(90, 10, (1, 300)), rng.normal(90, 10, (1, 300))
    gap = paired_difference(a, b)
    assert gap.se == pytest.approx((a - b)[0].std(ddof=1) / math.sqrt(300))


@pytest.mark.parametrize("shift, expected_rate", [(0.0, (0.01, 0.10)), (3.0, (0.8, 1.0))])
def test_the_test_has_its_nominal_size_and_power(shift, expected_rate):
    """Under no true gap about 5% of comparisons are called significant; a 3-nat gap almost always is."""
    rng = np.random.default_rng(3)
    calls = []
    for _ in range(300):
        images = rng.normal(90, 15, 200)
        a = images + shift + rng.normal(0, 3, (3, 200)) + rng.normal(0, 0.4, (3, 1))  # seed-to-seed variation
        b = images + rng.normal(0, 3, (3, 200)) + rng.normal(0, 0.4, (3, 1))
        calls.append(paired_difference(a, b).significant)
    low, high = expected_rate
    assert low <= np.mean(calls) <= high, np.mean(calls)


def test_shapes_must_match():
    with pytest.raises(ValueError, match="one shape"):
        paired_difference(np.zeros((2, 5)), np.zeros((3, 5)))
