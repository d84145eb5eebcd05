"""Atomic, safe file I/O for run outputs: a half-written file never has its final name.

Checkpoints hold only tensors and plain Python data and are read with ``weights_only=True``: nothing from
a file runs as code.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically; non-finite floats are refused."""
    text = json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n"
    _atomic_write(path, lambda f: f.write(text.encode()))


def write_array(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as a ``.npy`` file, atomically (read it back with ``np.load(..., allow_pickle=False)``)."""
    _atomic_write(path, lambda f: np.save(f, np.asarray(array), allow_pickle=False))


def write_text(path: Path, text: str) -> None:
    """Write ``text`` atomically."""
    _atomic_write(path, lambda f: f.write(text.encode()))


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` to a temporary file, then rename: an interrupted save leaves the old checkpoint."""
    _atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`, tensors and plain data only."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise RuntimeError(
            f"cannot read checkpoint {path}: {e}. It may be corrupt or from another version; "
            f"delete it to start this run afresh."
        ) from e
