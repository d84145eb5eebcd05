"""The throughput gate's self-test: two fast benchmarks timed three times in fresh processes (a baseline, an
unchanged rerun, a run with the deliberate 2× slowdown of ``SRVAE_BENCH_SLOWDOWN``); ``benchmarks/gate.py`` at
its default statistic and threshold must pass the rerun and fail the slowdown, naming both benchmarks.
About 30 s: deselect with ``pytest -m "not slow"``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SUBSET = ["test_training_step[vae-cpu]", "test_iw_nll[maf5-cpu]"]  # milliseconds per call: many rounds, fast

pytestmark = pytest.mark.slow


def _bench(out: Path, slowdown: int) -> Path:
    env = {**os.environ, "SRVAE_BENCH_SLOWDOWN": str(slowdown),
           "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    ids = [f"benchmarks/test_throughput.py::{name}" for name in SUBSET]
    subprocess.run([sys.executable, "-P", "-m", "pytest", *ids, "--benchmark-only", "-q", "-p", "no:cacheprovider",
                    f"--benchmark-json={out}"], cwd=REPO, env=env, check=True, capture_output=True)
    return out


def _gate(baseline: Path, current: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-P", str(REPO / "benchmarks" / "gate.py"), str(baseline), str(current)],
                          check=False, capture_output=True, text=True)


def test_gate_passes_unchanged_code_and_catches_a_2x_slowdown(tmp_path: Path) -> None:
    baseline = _bench(tmp_path / "baseline.json", 1)
    unchanged = _gate(baseline, _bench(tmp_path / "unchanged.json", 1))
    assert unchanged.returncode == 0, unchanged.stdout
    slowed = _gate(baseline, _bench(tmp_path / "slowed.json", 2))
    assert slowed.returncode == 1, slowed.stdout
    summary = slowed.stdout.split("benchmarks regressed")[1]
    assert all(name in summary for name in SUBSET), slowed.stdout
