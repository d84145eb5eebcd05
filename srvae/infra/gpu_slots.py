"""GPU slots: pin each concurrently running job to its own GPU.

Snakemake's ``resources: gpu=1`` with ``--resources gpu=N`` only *counts* GPU jobs; it never says which GPU a
job should use, so every job would land on ``cuda:0``. Here a job takes one of a pool of lock files with a
non-blocking ``fcntl.flock`` (:mod:`srvae.infra.locks`) and sets ``CUDA_VISIBLE_DEVICES`` to that slot's GPU before CUDA starts. The lock
lives as long as the process holds the file open; the kernel releases it when the process ends, even on
SIGKILL, so a crashed job never leaks its GPU.

Sharing: there are ``max(slots, number of GPUs)`` slots and slot i belongs to GPU ``i mod #GPUs``. With the
default ``slots`` (one per GPU) jobs beyond the GPU count wait for a free slot; with ``slots`` set to the
number of concurrent GPU jobs (Snakemake's ``--resources gpu=N``), extra jobs share a GPU instead of
waiting. A new job takes a free slot on the GPU with the fewest holders (lowest slot on ties).

Inside the job the chosen GPU is ``cuda:0``: ``CUDA_VISIBLE_DEVICES`` hides the others. Under SLURM, which
pins ``CUDA_VISIBLE_DEVICES`` itself, nothing is allocated.

The lock files live in one directory per host (by default under the host's temporary directory, whatever the
study's working directory), so that two studies on one machine never take the same GPU; the folder and its
files are shared by every user of the machine (mode 1777 and 0666, as ``/tmp`` itself).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Iterator

from srvae.errors import UserError

from .locks import mark_holder, try_lock

log = logging.getLogger(__name__)

#: environment variable that names the lock directory (a per-host subfolder keeps nodes sharing it apart)
LOCK_DIR_ENV = "SRVAE_GPU_LOCK_DIR"
#: environment variable that replaces ``torch.cuda.device_count()`` (tests, CPU-only machines)
FAKE_GPU_COUNT_ENV = "SRVAE_FAKE_GPU_COUNT"


class GPUSlotError(UserError, RuntimeError):
    """A GPU slot could not be taken; the message says why and what to do."""


class GPUSlotTimeout(GPUSlotError, TimeoutError):
    """Every GPU slot stayed taken for the whole timeout."""


def default_lock_dir() -> Path:
    """``$SRVAE_GPU_LOCK_DIR``, else ``<temporary directory>/srvae-gpu-slots``: one place per host."""
    return Path(os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / "srvae-gpu-slots")


def visible_devices(gpu_count: int | None = None) -> list[str]:
    """The device ids jobs are spread over: a pre-set ``CUDA_VISIBLE_DEVICES`` list, else ``0..n-1``.

    ``n`` is ``gpu_count`` if given, else ``$SRVAE_FAKE_GPU_COUNT``, else ``torch.cuda.device_count()``.
    """
    preset = os.environ.get("CUDA_VISIBLE_DEVICES")
    if preset is not None:
        ids = []
        for d in (d.strip() for d in preset.split(",")):
            if not d or d.startswith("-"):  # CUDA ignores everything from an invalid id such as -1 on
                break
            ids.append(d)
        return ids if gpu_count is None else ids[:gpu_count]
    if gpu_count is None:
        gpu_count = _detected_gpu_count()
    return [str(i) for i in range(gpu_count)]


def _detected_gpu_count() -> int:
    fake = os.environ.get(FAKE_GPU_COUNT_ENV)
    if fake is not None:
        if not fake.strip().isdigit():
            raise GPUSlotError(f"${FAKE_GPU_COUNT_ENV} is {fake!r}: it must be a whole number of GPUs "
                               f"(0 for none); unset it to count the real ones")
        return int(fake)
    import torch  # late: the fake count and the pre-set list need no torch

    # torch counts through NVML without initialising CUDA, so CUDA_VISIBLE_DEVICES set later still applies
    return torch.cuda.device_count()


def _shared_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) writable by every user of the host, as ``/tmp`` is."""
    try:
        for folder in (*reversed(path.parents), path):
            try:
                folder.mkdir()
            except FileExistsError:  # there already, or another job made it first: leave its mode alone
                continue
            os.chmod(folder, 0o1777)
        if not path.is_dir():
            raise NotADirectoryError(f"{path} is not a directory")
    except OSError as e:
        raise GPUSlotError(f"cannot use {path} for GPU slot locks ({e}); set ${LOCK_DIR_ENV} to a directory "
                           f"on this host that you may write to") from None
    return path


def _try_lock(path: Path) -> int | None:
    """An fd holding slot ``path``, or None if another job holds it; every user's jobs share the slots."""
    try:
        return try_lock(path, shared_with_all_users=True)
    except OSError as e:
        raise GPUSlotError(f"cannot open the GPU slot lock {path} ({e}); set ${LOCK_DIR_ENV} to a directory "
                           f"you may write to") from None


def _take_slot(lock_dir: Path, n_slots: int, n_devices: int) -> tuple[int, int] | None:
    """Lock the free slot on the least-used device: ``(fd, slot)``, or None if every slot is taken."""
    free = {s: fd for s in range(n_slots) if (fd := _try_lock(lock_dir / f"slot{s}.lock")) is not None}
    if not free:
        return None
    load = Counter(s % n_devices for s in range(n_slots) if s not in free)
    slot = min(free, key=lambda s: (load[s % n_devices], s))
    for s, fd in free.items():
        if s != slot:
            os.close(fd)
    mark_holder(free[slot])  # who holds it, for people looking at the folder
    return free[slot], slot


@contextlib.contextmanager
def acquire_gpu(slots: int | None = None, lock_dir: Path | str | None = None,
                timeout: float = 3600.0, poll: float = 0.5,
                gpu_count: int | None = None) -> Iterator[str | None]:
    """Hold a GPU slot for the ``with`` block and yield its device id (None: no GPU, run on the CPU).

    ``CUDA_VISIBLE_DEVICES`` is set to the yielded id for the block and restored afterwards; call this
    before anything initialises CUDA in the process. ``slots``: how many jobs may hold GPUs at once
    (default: one per GPU). ``lock_dir``: where the locks live (default :func:`default_lock_dir`). Raises
    :class:`GPUSlotTimeout` if no slot frees up within ``timeout`` seconds.
    """
    if os.environ.get("SLURM_JOB_ID") and "CUDA_VISIBLE_DEVICES" in os.environ:
        yield os.environ["CUDA_VISIBLE_DEVICES"] or None  # SLURM already pinned this job's GPUs
        return
    devices = visible_devices(gpu_count)
    if not devices:
        yield None
        return
    if "torch" in sys.modules and sys.modules["torch"].cuda.is_initialized():
        raise RuntimeError("acquire_gpu must run before CUDA is initialised: the device is already chosen")
    lock_dir = _shared_dir(Path(lock_dir or default_lock_dir()) / socket.gethostname())
    n_slots = max(slots or 0, len(devices))
    deadline = time.monotonic() + timeout
    while (taken := _take_slot(lock_dir, n_slots, len(devices))) is None:
        if time.monotonic() >= deadline:
            raise GPUSlotTimeout(f"all {n_slots} GPU slots in {lock_dir} stayed taken for {timeout:g} s "
                                 "(each lock file names its holder's pid); allow more slots to share GPUs")
        time.sleep(poll)
    fd, slot = taken
    device = devices[slot % len(devices)]
    previous = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = device
    log.info("GPU slot %d of %d: CUDA_VISIBLE_DEVICES=%s", slot, n_slots, device)
    try:
        yield device
    finally:
        if previous is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = previous
        os.close(fd)  # releases the flock; the file stays (unlinking a lock file races with new holders)
