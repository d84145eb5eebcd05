"""CIFAR-10's download and reader against a loopback HTTPS server serving a small tarball in the official format
(python pickles of numpy arrays in ``cifar-10-batches-py/``): no internet."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from srvae.study.config import DatasetSettings
from srvae.study.data import cifar10_download
from srvae.study.data.cifar10_download import CIFAR10_FILE, fetch_cifar10, read_cifar10
from srvae.study.data.datasets import load_dataset
from srvae.study.data.mnist_download import ChecksumError, DataUnavailableError

from .conftest import publish, spec_of

PER_BATCH = 4


class _Exploit:
    def __reduce__(self):
        return os.system, ("echo pwned",)


def batch_bytes(images: np.ndarray, labels: list[int], label: bytes = b"training batch") -> bytes:
    """A batch as the official files hold it: a protocol-2 pickle of a dict with byte-string keys."""
    return pickle.dumps({b"batch_label": label, b"labels": labels, b"data": images,
                         b"filenames": [b"img%d.png" % i for i in range(len(labels))]}, protocol=2)


def tarball(batches: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in {**batches, "batches.meta": pickle.dumps({b"label_names": [b"cat"]}, protocol=2),
                           "readme.html": b"<html></html>"}.items():
            info = tarfile.TarInfo("cifar-10-batches-py/" + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture
def cifar_like():
    """(train images [20, 3072] in the official plane order, train labels, test images, test labels, tarball)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6 * PER_BATCH, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, 6 * PER_BATCH)]
    batches = {f"data_batch_{i + 1}": batch_bytes(images[i * PER_BATCH:(i + 1) * PER_BATCH],
                                                  labels[i * PER_BATCH:(i + 1) * PER_BATCH]) for i in range(5)}
    batches["test_batch"] = batch_bytes(images[5 * PER_BATCH:], labels[5 * PER_BATCH:], b"testing batch")
    return images[:5 * PER_BATCH], labels[:5 * PER_BATCH], images[5 * PER_BATCH:], labels[5 * PER_BATCH:], \
        tarball(batches)


def test_download_is_verified_cached_and_read_pixel_by_pixel(https_server, server, cifar_like, tmp_path):
    train, train_labels, test, test_labels, blob = cifar_like
    spec = spec_of(CIFAR10_FILE.name, blob)
    publish(tmp_path / "served", {spec.name: blob})
    cache = tmp_path / "cache"
    path = fetch_cifar10(cache, mirrors=[https_server], spec=spec)
    assert path == cache / "cifar-10-python.tar.gz" and path.read_bytes() == blob
    x_train, y_train, x_test, y_test = read_cifar10(path)
    assert x_train.shape == (20, 3072) and x_test.shape == (4, 3072) and x_train.dtype == np.uint8
    assert y_train.tolist() == train_labels and y_test.tolist() == test_labels
    # pixel-major: (row r, column c, channel ch) of image n is the official plane value [n, ch·1024 + 32 r + c]
    for n, r, c, ch in ((0, 0, 0, 0), (3, 5, 31, 2), (19, 31, 7, 1)):
        assert x_train[n, (32 * r + c) * 3 + ch] == train[n, ch * 1024 + 32 * r + c]
    _, _, requests = server
    requests.clear()
    fetch_cifar10(cache, mirrors=[https_server], spec=spec)  # verified in the cache: nothing fetched again
    assert requests == []


def test_a_damaged_download_is_refused_and_not_kept(https_server, cifar_like, tmp_path):
    *_, blob = cifar_like
    spec = spec_of(CIFAR10_FILE.name, blob)
    publish(tmp_path / "served", {spec.name: blob[:-1] + bytes([blob[-1] ^ 1])})
    with pytest.raises(DataUnavailableError, match="sha256"):
        fetch_cifar10(tmp_path / "cache", mirrors=[https_server], spec=spec)
    assert list((tmp_path / "cache").iterdir()) == []


def test_offline_error_names_the_official_file_its_checksum_and_the_cache(closed_mirror, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(DataUnavailableError) as err:
        fetch_cifar10(cache, mirrors=[closed_mirror], allow_insecure=True)
    message = str(err.value)
    assert "cifar-10-python.tar.gz" in message and CIFAR10_FILE.sha256 in message and str(cache) in message
    assert "170498071 bytes" in message and closed_mirror in message


def test_a_pickle_that_would_run_code_is_refused(tmp_path, cifar_like):
    *_, blob = cifar_like
    path = tmp_path / "evil.tar.gz"
    path.write_bytes(tarball({"data_batch_1": pickle.dumps({b"data": _Exploit()}, protocol=2)}))
    with pytest.raises(ChecksumError, match="refusing to load posix.system|refusing to load os.system"):
        read_cifar10(path)


def test_the_dataset_entry_downloads_splits_flips_and_dequantises(https_server, cifar_like, tmp_path, monkeypatch):
    *_, blob = cifar_like
    spec = spec_of(CIFAR10_FILE.name, blob)
    publish(tmp_path / "served", {spec.name: blob})
    monkeypatch.setattr(cifar10_download, "CIFAR10_FILE", spec)
    entry = DatasetSettings(source="cifar10", split={"valid": 4}, transform="dequantise_logit", logit_lambda=0.05,
                            hflip=True, cache_dir=str(tmp_path / "cache"), mirrors=(https_server,))
    data = load_dataset("cifar", entry)
    assert data.train.shape == (32, 3072) and data.valid.shape == (4, 3072) and data.test.shape == (4, 3072)
    image = data.train[:16].reshape(-1, 32, 32, 3)
    mirrored = data.train[16:].reshape(-1, 32, 32, 3)
    # the mirror images carry their own dequantisation noise: equal pixels, up to one grey level
    pixels = torch.sigmoid(image.flip(2)) * 256, torch.sigmoid(mirrored) * 256
    assert (pixels[0] - pixels[1]).abs().max() < 1.0 + 1e-3


def test_a_missing_member_is_named(tmp_path):
    path = Path(tmp_path / "short.tar.gz")
    path.write_bytes(tarball({}))
    with pytest.raises(ChecksumError, match="lacks cifar-10-batches-py/data_batch_1"):
        read_cifar10(path)
