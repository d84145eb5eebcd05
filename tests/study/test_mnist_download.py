"""Verified downloads against a loopback HTTP server serving small generated IDX files (no internet)."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import logging
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from srvae.study.mnist_download import (
    MNIST_FILES,
    ChecksumError,
    DataUnavailableError,
    FileSpec,
    IDXFormatError,
    fetch_files,
    load_mnist_idx,
    read_idx,
    resolve_cache_dir,
    verify_file,
)


def idx_bytes(array: np.ndarray) -> bytes:
    """An uncompressed IDX file of a uint8 array (type code 0x08)."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def spec_of(name: str, data: bytes) -> FileSpec:
    return FileSpec(name, sha256=hashlib.sha256(data).hexdigest(), size=len(data),
                    md5=hashlib.md5(data).hexdigest())


@pytest.fixture
def mnist_like():
    """The four MNIST files, tiny: (arrays, {name: gz bytes}, specs in MNIST order)."""
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (20, 28, 28)), rng.integers(0, 10, 20),
              rng.integers(0, 256, (8, 28, 28)), rng.integers(0, 10, 8)]
    blobs = {spec.name: gzip.compress(idx_bytes(a), mtime=0) for spec, a in zip(MNIST_FILES, arrays)}
    return arrays, blobs, [spec_of(name, data) for name, data in blobs.items()]


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A loopback HTTP server over ``tmp_path/served``: (base URL, served dir, list of requested paths)."""
    for var in ("no_proxy", "NO_PROXY"):  # an http_proxy in the environment must not route requests away
        monkeypatch.setenv(var, "*")
    served = tmp_path / "served"
    served.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=served))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", served, requests
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def closed_mirror():
    """A loopback URL on a port nobody listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def publish(served: Path, blobs: dict[str, bytes]) -> None:
    for name, data in blobs.items():
        (served / name).write_bytes(data)


def test_good_download_parses_to_what_was_written(server, mnist_like, tmp_path):
    url, served, requests = server
    arrays, blobs, specs = mnist_like
    publish(served, blobs)
    train_x, train_y, test_x, test_y = load_mnist_idx(tmp_path / "cache", [url], specs)
    assert train_x.dtype == np.uint8 and train_x.shape == (20, 784) and test_x.shape == (8, 784)
    np.testing.assert_array_equal(train_x, arrays[0].reshape(20, 784))
    np.testing.assert_array_equal(train_y, arrays[1])
    np.testing.assert_array_equal(test_x, arrays[2].reshape(8, 784))
    np.testing.assert_array_equal(test_y, arrays[3])
    assert len(requests) == 4
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(blobs)


@pytest.mark.parametrize("damage", [lambda b: b[:-1] + bytes([b[-1] ^ 1]), lambda b: b[: len(b) // 2]],
                         ids=["corrupt", "truncated"])
def test_bad_download_is_rejected_and_not_kept(server, mnist_like, tmp_path, damage):
    url, served, _ = server
    _, blobs, specs = mnist_like
    name = specs[0].name
    publish(served, {name: damage(blobs[name])})
    with pytest.raises(DataUnavailableError, match="size|sha256") as err:
        fetch_files(specs[:1], [url], tmp_path / "cache")
    assert "ChecksumError" in str(err.value)
    assert list((tmp_path / "cache").iterdir()) == []  # neither the file nor a .part


def test_unreachable_mirror_falls_through_to_the_next(server, mnist_like, closed_mirror, tmp_path):
    url, served, requests = server
    _, blobs, specs = mnist_like
    publish(served, blobs)
    paths = fetch_files(specs, [closed_mirror, url], tmp_path / "cache")
    assert set(paths) == set(blobs) and len(requests) == 4
    for spec in specs:
        verify_file(paths[spec.name], spec)


def test_rerun_uses_the_cache(server, mnist_like, tmp_path):
    url, served, requests = server
    _, blobs, specs = mnist_like
    publish(served, blobs)
    fetch_files(specs, [url], tmp_path / "cache")
    fetch_files(specs, [url], tmp_path / "cache")
    assert len(requests) == len(specs)


def test_corrupt_cached_file_is_replaced(server, mnist_like, tmp_path, caplog):
    url, served, requests = server
    _, blobs, specs = mnist_like
    publish(served, blobs)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / specs[1].name).write_bytes(b"not mnist")
    with caplog.at_level(logging.WARNING, logger="srvae.study.mnist_download"):
        paths = fetch_files(specs[1:2], [url], cache)
    assert "corrupt" in caplog.text and requests == ["/" + specs[1].name]
    assert paths[specs[1].name].read_bytes() == blobs[specs[1].name]


def test_every_mirror_failing_explains_how_to_work_offline(server, mnist_like, closed_mirror, tmp_path):
    url, _, _ = server  # serves nothing: 404
    _, _, specs = mnist_like
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / specs[2].name).write_bytes(b"junk")  # a bad hand-placed copy is reported too
    with pytest.raises(DataUnavailableError) as err:
        fetch_files(specs, [closed_mirror, url], cache)
    msg = str(err.value)
    for spec in specs:
        assert spec.name in msg and spec.sha256 in msg
    assert closed_mirror in msg and url in msg and "404" in msg and "cached copy removed" in msg
    assert f"place these files in {cache}" in msg
    assert list(cache.iterdir()) == []


def test_verify_file_checks_md5_too(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    good = spec_of("f", b"abc")
    verify_file(path, good)
    with pytest.raises(ChecksumError, match="md5"):
        verify_file(path, FileSpec("f", sha256=good.sha256, md5="0" * 32))


def test_read_idx_plain_and_gzip(tmp_path):
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a.idx").write_bytes(idx_bytes(a))
    (tmp_path / "a.idx.gz").write_bytes(gzip.compress(idx_bytes(a)))
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx"), a)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx.gz"), a)


@pytest.mark.parametrize("data, match", [
    (b"\x08\x03\x00\x00" + bytes(16), "magic"),                                # byte order swapped
    (bytes([0, 0, 0x08, 2]) + np.asarray([2, 3], ">u4").tobytes() + bytes(5), "needs 6 data bytes"),
    (bytes([0, 0, 0x08, 3]) + bytes(4), "ends early"),
    (gzip.compress(b"x" * 100)[:-8], "decompress"),                           # truncated gzip
], ids=["magic", "payload", "header", "gzip"])
def test_read_idx_rejects_malformed_files(tmp_path, data, match):
    (tmp_path / "bad").write_bytes(data)
    with pytest.raises(IDXFormatError, match=match):
        read_idx(tmp_path / "bad")


def test_resolve_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("SRVAE_DATA_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_cache_dir(None) == tmp_path / ".cache" / "srvae"
    assert resolve_cache_dir("~/data") == tmp_path / "data"
    monkeypatch.setenv("SRVAE_DATA_DIR", str(tmp_path / "env"))
    assert resolve_cache_dir("~/data") == tmp_path / "env"
