"""Verified downloads of the raw MNIST IDX files, and the IDX reader.

The paper scale runs train on the full 60,000/10,000 MNIST split (SeRe-VAE, arXiv:2007.05166, Table 1), which
is not shipped with the package. Each file is fetched from the first mirror that serves it, streamed to a
temporary file in the cache directory, checked against its published size and checksums (md5 as in
torchvision, sha256 as in TensorFlow Datasets) and only then moved into place, so the cache never
holds a partial or corrupt file. A file already in the cache is re-verified and never downloaded again.
Offline: put the four ``.gz`` files in the cache directory (see :func:`resolve_cache_dir`).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

log = logging.getLogger(__name__)

#: environment variable that overrides the configured cache directory
DATA_DIR_ENV = "SRVAE_DATA_DIR"


@dataclass(frozen=True)
class FileSpec:
    """A file to fetch: its name on the mirrors and what it must hash to."""

    name: str
    sha256: str
    size: int | None = None
    md5: str | None = None


#: raw MNIST, in the order train images, train labels, test images, test labels
MNIST_FILES: tuple[FileSpec, ...] = (
    FileSpec("train-images-idx3-ubyte.gz", size=9912422, md5="f68b3c2dcbeaaa9fbdd348bbdeb94873",
             sha256="440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
    FileSpec("train-labels-idx1-ubyte.gz", size=28881, md5="d53e105ee54ea40749a09fcbcd1e9432",
             sha256="3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
    FileSpec("t10k-images-idx3-ubyte.gz", size=1648877, md5="9fb629c4189551a2d022fa330f9573f3",
             sha256="8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
    FileSpec("t10k-labels-idx1-ubyte.gz", size=4542, md5="ec29112dd5afa0611ce80d1b7f02629c",
             sha256="f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
)

#: tried in order; the original yann.lecun.com site now refuses most automated downloads
DEFAULT_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

_CHUNK = 1 << 20


class ChecksumError(ValueError):
    """A file's size or digest differs from its published value."""


class DataUnavailableError(RuntimeError):
    """Some files could not be obtained from any mirror; the message says how to provide them by hand."""


class IDXFormatError(ValueError):
    """A file is not a well-formed (optionally gzipped) IDX file."""


def resolve_cache_dir(configured: str | None) -> Path:
    """The data cache: ``$SRVAE_DATA_DIR`` if set, else the configured path, else ``~/.cache/srvae``."""
    chosen = os.environ.get(DATA_DIR_ENV) or configured
    if not chosen:
        chosen = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "srvae"
    return Path(os.path.expandvars(os.path.expanduser(str(chosen))))


def verify_file(path: Path, spec: FileSpec) -> None:
    """Raise :class:`ChecksumError` unless ``path`` has the size, sha256 and md5 that ``spec`` gives."""
    size = path.stat().st_size
    if spec.size is not None and size != spec.size:
        raise ChecksumError(f"{spec.name}: size {size} B, expected {spec.size} B")
    digests = {"sha256": hashlib.sha256(), "md5": hashlib.md5()}
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            for d in digests.values():
                d.update(chunk)
    for algo, d in digests.items():
        expected = getattr(spec, algo)
        if expected is not None and d.hexdigest() != expected.lower():
            raise ChecksumError(f"{spec.name}: {algo} {d.hexdigest()}, expected {expected}")


def _download(url: str, spec: FileSpec, cache_dir: Path, timeout: float) -> Path:
    """Stream ``url`` to a temporary file, verify it and move it into place; nothing is left on failure."""
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f".{spec.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            while chunk := resp.read(_CHUNK):
                out.write(chunk)
        verify_file(Path(tmp), spec)
        dest = cache_dir / spec.name
        os.replace(tmp, dest)  # atomic: concurrent jobs see either no file or a verified one
        return dest
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _cached(spec: FileSpec, cache_dir: Path) -> tuple[Path | None, str | None]:
    """The verified cached copy of ``spec`` (or None) and, if a bad copy was removed, why."""
    path = cache_dir / spec.name
    if not path.exists():
        return None, None
    try:
        verify_file(path, spec)
        return path, None
    except ChecksumError as err:
        log.warning("removing corrupt cached file %s (%s); fetching it again", path, err)
        path.unlink()
        return None, f"cached copy removed: {err}"


def fetch_files(files: Iterable[FileSpec], mirrors: Sequence[str], cache_dir: Path,
                timeout: float = 60.0) -> dict[str, Path]:
    """Make every file present and verified in ``cache_dir``; return ``{name: path}``.

    Mirrors are tried in order (``mirror/name``; any scheme urllib opens, ``file://`` included). All files
    are attempted before failing, so one :class:`DataUnavailableError` lists everything that is missing.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    failures: dict[FileSpec, list[str]] = {}
    for spec in files:
        path, note = _cached(spec, cache_dir)
        errors = [note] if note else []
        if path is None:
            path = _from_mirrors(spec, mirrors, cache_dir, timeout, errors)
        if path is None:
            failures[spec] = errors
        else:
            paths[spec.name] = path
    if failures:
        raise DataUnavailableError(_unavailable_message(failures, mirrors, cache_dir))
    return paths


def _from_mirrors(spec: FileSpec, mirrors: Sequence[str], cache_dir: Path, timeout: float,
                  errors: list[str]) -> Path | None:
    """Download ``spec`` from the first mirror that serves a verified copy; append each failure to ``errors``."""
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + spec.name
        try:
            log.info("downloading %s", url)
            return _download(url, spec, cache_dir, timeout)
        # URLError and timeouts are OSErrors; IncompleteRead is an HTTPException; ValueError: bad URL
        except (OSError, http.client.HTTPException, ValueError) as err:
            errors.append(f"{url}: {type(err).__name__}: {err}")
    return None


def _unavailable_message(failures: dict[FileSpec, list[str]], mirrors: Sequence[str],
                         cache_dir: Path) -> str:
    lines = [f"could not obtain {len(failures)} data file(s) from {len(mirrors)} mirror(s):"]
    for spec, errors in failures.items():
        lines.append(f"  {spec.name}  (sha256 {spec.sha256}"
                     + (f", {spec.size} bytes" if spec.size is not None else "") + ")")
        lines += [f"      {e}" for e in errors] or ["      no mirrors configured"]
    lines.append(f"To work offline, place these files in {cache_dir} (or set ${DATA_DIR_ENV} to the "
                 "directory holding them); they are verified against the checksums above.")
    return "\n".join(lines)


# IDX type codes (http://yann.lecun.com/exdb/mnist/): the payload is big-endian
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzipped or not) into an array of the shape its header declares."""
    path = Path(path)
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    try:
        with (gzip.open if gzipped else open)(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:  # BadGzipFile is an OSError; EOFError: truncated gzip stream
        raise IDXFormatError(f"{path}: cannot decompress ({err})") from err
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise IDXFormatError(f"{path}: bad IDX magic number {raw[:4].hex() or '(empty file)'}")
    ndim, dtype = raw[3], np.dtype(_IDX_DTYPES[raw[2]])
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IDXFormatError(f"{path}: header declares {ndim} dimensions but the file ends early")
    shape = tuple(int(n) for n in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise IDXFormatError(f"{path}: shape {shape} needs {expected} data bytes, found {len(raw) - header}")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def load_mnist_idx(cache_dir: Path, mirrors: Sequence[str] = DEFAULT_MIRRORS,
                   files: Sequence[FileSpec] = MNIST_FILES
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train images ``[N, 784]`` uint8, train labels ``[N]``, test images, test labels.

    ``files`` are, in order, the train images, train labels, test images and test labels.
    """
    if len(files) != 4:
        raise ValueError(f"expected 4 files (train/test images and labels), got {len(files)}")
    paths = fetch_files(files, mirrors, cache_dir)
    train_x, train_y, test_x, test_y = (read_idx(paths[spec.name]) for spec in files)
    out = []
    for images, labels, split in ((train_x, train_y, "train"), (test_x, test_y, "test")):
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise IDXFormatError(f"{split}: images {images.shape} and labels {labels.shape} do not match")
        out += [images.reshape(len(images), -1), labels]
    return tuple(out)
