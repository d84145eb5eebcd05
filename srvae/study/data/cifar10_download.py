"""CIFAR-10 (Krizhevsky 2009): the official python tarball, downloaded and verified, and its reader.

The tarball ``cifar-10-python.tar.gz`` (170,498,071 bytes) is fetched with the machinery of
:mod:`srvae.study.data.mnist_download` — https mirrors (or ``file://``), streamed to a temporary file, hashed as it is
written, checked against its size, MD5 (the one the dataset's page and torchvision publish) and SHA-256 (Keras's),
a size cap and a deadline, moved into the cache only when verified, and an offline error that names the file,
its checksums and where to put it.

Reading it: only the six expected members (``data_batch_1..5``, ``test_batch``), looked up by name, are read
from the (verified) tarball; each is a pickled dict whose ``data`` is a ``[10000, 3072]`` uint8 array (red,
green, blue planes of 32 × 32 pixels) and ``labels`` a list of ints. Pickles can run code, so they are loaded
with an unpickler that admits only what that format needs (numpy's array reconstruction), never an arbitrary
global. Images come out pixel-major (``H × W × C``), so that raster blocks of the flattened image are bands of
rows with all three colours.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .mnist_download import DEFAULT_TIMEOUT_S, ChecksumError, FileSpec, fetch_files
from .sources import DEFAULT_DEADLINE_S, SOURCES

CIFAR10_FILE = FileSpec("cifar-10-python.tar.gz", size=170498071, md5="c58f30108f718f92721af3b95e74349a",
                        sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce")
#: the dataset's own page; the file name is appended
DEFAULT_MIRRORS: tuple[str, ...] = ("https://www.cs.toronto.edu/~kriz/",)
DIRECTORY = "cifar-10-batches-py/"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
#: height, width, channels (the sources table states it)
SHAPE = SOURCES["cifar10"].image_shape

#: the globals a CIFAR-10 batch pickle may name: numpy's array reconstruction (numpy 1 and 2 module paths), and
#: ``_codecs.encode``, which protocol-2 pickles written by Python 3 use for bytes
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


class _BatchUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals a CIFAR-10 batch needs."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of a CIFAR-10 batch")
        return super().find_class(module, name)


def fetch_cifar10(cache_dir: Path, *, mirrors: Sequence[str] = DEFAULT_MIRRORS, allow_insecure: bool = False,
                  timeout: float = DEFAULT_TIMEOUT_S, deadline: float = DEFAULT_DEADLINE_S,
                  spec: FileSpec | None = None) -> Path:
    """The CIFAR-10 python tarball (``spec``, default :data:`CIFAR10_FILE`), present and verified in ``cache_dir``
    (fetched from ``mirrors`` if need be).

    Raises :class:`~srvae.study.data.mnist_download.DataUnavailableError` with the offline instructions when no
    mirror serves a verified copy.
    """
    spec = spec or CIFAR10_FILE
    return fetch_files([spec], mirrors, cache_dir, allow_insecure=allow_insecure, timeout=timeout,
                       deadline=deadline)[spec.name]


def _read_batch(data: bytes, member: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = _BatchUnpickler(io.BytesIO(data), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        raise ChecksumError(f"{member}: not a CIFAR-10 batch ({err})") from err
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    images, labels = np.asarray(batch.get("data")), np.asarray(batch.get("labels"))
    if images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != np.prod(SHAPE) \
            or labels.shape != (len(images),):
        raise ChecksumError(f"{member}: data {images.shape} {images.dtype} and labels {labels.shape} are not "
                            f"a CIFAR-10 batch")
    return images, labels


def to_pixel_major(images: np.ndarray) -> np.ndarray:
    """``[N, 3072]`` rows of red, green and blue planes → ``[N, 3072]`` rows of (r, g, b) pixels in raster order."""
    height, width, channels = SHAPE
    return images.reshape(-1, channels, height, width).transpose(0, 2, 3, 1).reshape(len(images), -1)


def read_cifar10(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train images ``[50000, 3072]`` uint8 (pixel-major), train labels, test images, test labels."""
    wanted = {DIRECTORY + name: name for name in (*TRAIN_BATCHES, TEST_BATCH)}
    batches: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                name = wanted.get(member.name)
                if name is None or not member.isreg():
                    continue
                with tar.extractfile(member) as f:
                    batches[name] = _read_batch(f.read(), member.name)
    except (tarfile.TarError, EOFError, OSError) as err:
        raise ChecksumError(f"{path}: damaged or not a tarball ({err}); delete it to fetch it again") from err
    missing = [member for member, name in wanted.items() if name not in batches]
    if missing:
        raise ChecksumError(f"{path} lacks {', '.join(missing)}: not the CIFAR-10 python tarball")
    train = [batches[name] for name in TRAIN_BATCHES]
    test_images, test_labels = batches[TEST_BATCH]
    return (to_pixel_major(np.concatenate([images for images, _ in train])),
            np.concatenate([labels for _, labels in train]), to_pixel_major(test_images), test_labels)
