"""A study run through Snakemake (the project's Snakefile) in a working folder of its own, from a copy of the tree.

The DAG's rules call the ``srvae`` command. Where that command is missing from the PATH, or belongs to another
interpreter or checkout (a virtual environment used without activating it, an editable install of another
tree), the jobs would fail or run other code: :func:`study_env` puts first on the PATH an ``srvae`` that runs
this interpreter's ``python -m srvae.cli`` with this tree on ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from . import ROOT


def study_env(work: Path, fake_gpu: bool) -> dict[str, str]:
    """The environment of a Snakemake study in ``work``: this tree's code and ``srvae`` command, GPU slot locks of
    its own, and (``fake_gpu``: a machine without one) one pretend GPU, so that the slots are taken all the same."""
    bin_dir = work / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    launcher = bin_dir / "srvae"
    launcher.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m srvae.cli "$@"\n')
    launcher.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": str(ROOT),
           "SRVAE_GPU_LOCK_DIR": str(work / "gpu-locks"), "PYTHONUNBUFFERED": "1"}
    if fake_gpu:  # the jobs then run on the CPU
        env["SRVAE_FAKE_GPU_COUNT"] = "1"
    return env


def snakemake_command(work: Path, configfiles: list[Path], cores: int, gpu_slots: int = 2) -> list[str]:
    """``snakemake --cores N --resources gpu=S --configfile config.yaml …`` of this tree's Snakefile, run in
    ``work`` (this interpreter's Snakemake)."""
    return [sys.executable, "-m", "snakemake", "--cores", str(cores), "--resources", f"gpu={gpu_slots}",
            "--configfile", str(ROOT / "config.yaml"), *map(str, configfiles),
            "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work)]


def run_study(work: Path, configfiles: list[Path], cores: int, fake_gpu: bool, timeout: float,
              log: Path | None = None) -> tuple[int | str, str]:
    """Run the study; (Snakemake's exit status, or why it was stopped, and its stderr's tail). With ``log`` its
    output goes there as it runs (a run stopped from outside still leaves it)."""
    command = snakemake_command(work, configfiles, cores)
    env = study_env(work, fake_gpu)
    try:
        if log is None:
            done = subprocess.run(command, check=False, capture_output=True, text=True, env=env, timeout=timeout)
            return done.returncode, done.stderr[-3000:]
        with log.open("w") as out:
            done = subprocess.run(command, check=False, stdout=out, stderr=subprocess.STDOUT, env=env,
                                  timeout=timeout)
        return done.returncode, log.read_text(errors="replace")[-3000:]
    except subprocess.TimeoutExpired as e:
        tail = log.read_text(errors="replace") if log is not None else (e.stderr or b"").decode(errors="replace")
        return f"stopped at its deadline of {timeout:.0f} s", tail[-3000:]
