"""Atomic, safe file I/O for run outputs: a half-written file never has its final name.

Every writer serialises to memory first and then writes the bytes to a temporary file beside the target,
which it renames into place: a failure leaves the old file (or none) and no temporary file, and a full disk
is an error that names the file. Files get the permissions the umask grants (``tempfile.mkstemp`` alone would
make them private to their owner, unreadable by collaborators on a shared machine).

Checkpoints hold only tensors and plain Python data and are read with ``weights_only=True``: nothing from
a file runs as code.
"""

from __future__ import annotations

import errno
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from srvae.errors import UserError


class DiskFullError(UserError, OSError):
    """No space (or quota) left while writing an output file."""


class CheckpointError(UserError, RuntimeError):
    """A checkpoint is missing, corrupt or from another version; the message says what to do."""


def grant_umask_mode(fd: int) -> None:
    """Give a file made by ``tempfile.mkstemp`` (always 0600) the mode the umask grants, as ``open`` would."""
    mask = os.umask(0)
    os.umask(mask)
    os.fchmod(fd, 0o666 & ~mask)


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, with the permissions the umask grants."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        grant_umask_mode(fd)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(e.errno, f"cannot write {path}: the disk is full ({e.strerror}). Free some space "
                                         f"(or move results_dir to a disk with room), then rerun: nothing "
                                         f"half-written was kept") from e
        raise


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically; non-finite floats are refused."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n")


def write_array(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as a ``.npy`` file, atomically (read it back with ``np.load(..., allow_pickle=False)``)."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    write_bytes(path, buffer.getvalue())


def write_text(path: Path, text: str) -> None:
    """Write ``text`` atomically."""
    write_bytes(path, text.encode())


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` to memory, then an atomic write: an interrupted save leaves the old checkpoint."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`, tensors and plain data only."""
    if not Path(path).is_file():
        raise CheckpointError(f"no checkpoint at {path}: train this run first (the workflow's training step)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"cannot read checkpoint {path}: {e}. It may be corrupt or from another version; "
            f"delete it to start this run afresh."
        ) from e
