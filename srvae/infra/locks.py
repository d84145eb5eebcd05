"""Advisory file locks (``fcntl.flock``): held while the process keeps the file open, released by the kernel
when the process ends, even on SIGKILL, so that a crashed holder never leaves a stale lock.

Used for GPU slots (:mod:`srvae.infra.gpu_slots`) and to keep two processes from running the same step of
the same run at once (an orphaned job of a killed Snakemake and its rerun, say): :func:`exclusive`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from srvae.errors import UserError


class LockedError(UserError, RuntimeError):
    """Another process holds the lock; the message names it."""


def try_lock(path: Path, shared_with_all_users: bool = False) -> int | None:
    """An fd holding an exclusive flock on ``path`` (created if need be), or None if another process holds it.

    ``shared_with_all_users``: make a file this process creates lockable by every user (mode 0666).
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 if shared_with_all_users else 0o644)
    info = os.fstat(fd)
    if shared_with_all_users and info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) != 0o666:
        os.fchmod(fd, 0o666)  # the umask trimmed it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def mark_holder(fd: int) -> None:
    """Write this process's pid into the lock file, for whoever finds it taken."""
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())


@contextlib.contextmanager
def exclusive(path: Path, what: str) -> Iterator[None]:
    """Hold the lock ``path`` for the block; if another process holds it, raise :class:`LockedError`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = try_lock(path)
    if fd is None:
        holder = path.read_text().strip() or "unknown"
        raise LockedError(f"another process (pid {holder}) is already running {what} (an orphan of an interrupted "
                          f"Snakemake?): let it finish or stop it (kill {holder}), then rerun. Lock: {path}")
    try:
        mark_holder(fd)
        yield
    finally:
        os.close(fd)  # releases the flock; the file stays (unlinking a lock file races with new holders)
