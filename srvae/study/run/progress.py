"""What a running study is doing: every step writes ``status.json`` in its run directory as it goes, and
:func:`run_status` turns a run's files into one line for ``srvae status``.

A step is *running* while it holds its run lock (:mod:`srvae.infra.locks`), so a status left behind by a
killed job reads as *interrupted*, never as running.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from srvae.infra.atomic_io import write_json
from srvae.infra.locks import try_lock

from . import paths


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 04 min``: a duration a person reads at a glance."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def eta(done: float, total: float, elapsed: float) -> float | None:
    """Seconds left at the pace so far (None before any progress)."""
    return elapsed / done * (total - done) if done > 0 else None


def write_status(run_dir: Path, step: str, state: str, **fields: Any) -> None:
    """Record what ``step`` of the run in ``run_dir`` is doing (``state``: running, failed, interrupted)."""
    write_json(Path(run_dir) / paths.STATUS, {"step": step, "state": state, "pid": os.getpid(),
                                             "updated": time.time(), **fields})


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _lock_held(path: Path) -> bool:
    """Whether a process holds the lock ``path`` now (taking it, if free, and letting it go at once)."""
    if not path.exists():
        return False
    fd = try_lock(path)
    if fd is None:
        return True
    os.close(fd)
    return False


@dataclass(frozen=True)
class RunStatus:
    """One run's state for ``srvae status``."""

    state: str  # waiting, training, trained, evaluating, done, failed, interrupted
    detail: str = ""

    def line(self, dataset: str, model: str, seed: int) -> str:
        return f"{dataset:<10} {model:<22} seed {seed:<3} {self.state:<12} {self.detail}".rstrip()


def run_status(run_dir: Path, log_dir: Path) -> RunStatus:
    """The state of the run in ``run_dir`` from its files and locks; ``log_dir`` holds its step logs."""
    run_dir = Path(run_dir)
    status = _read_json(run_dir / paths.STATUS) or {}
    step = status.get("step", "")
    if status and _lock_held(run_dir / paths.lock_file(step)):
        return RunStatus("training" if step == "train" else f"{step}ing".replace("evaluateing", "evaluating"),
                         status.get("detail", ""))
    evaluation, trained = _read_json(run_dir / paths.EVAL), _read_json(run_dir / paths.TRAIN)
    if status.get("state") == "interrupted":  # stopped by Ctrl-C: the step resumes from its checkpoint
        return RunStatus("interrupted", f"{step} interrupted — run the same command again to resume "
                                        f"(log: {log_dir / f'{step}.log'})")
    if status.get("state") == "failed":
        return RunStatus("failed", f"{step}: {status.get('error', '?')} (log: {log_dir / f'{step}.log'})")
    if status.get("state") == "running":
        return RunStatus("interrupted", f"{step} stopped without finishing (log: {log_dir / f'{step}.log'}); "
                                        "rerun the study to resume it")
    if evaluation and trained and (run_dir / paths.SPEED).exists():
        return RunStatus("done", f"test NLL {evaluation['nll']:.2f} (K = {evaluation['k']}), "
                                 f"trained in {duration(trained['train_seconds'])}, best epoch {trained['best_epoch']}")
    if trained:
        return RunStatus("trained", f"in {duration(trained['train_seconds'])}; waiting for evaluation and speed")
    return RunStatus("waiting")
