"""Where a report's numbers come from: the machine, the software versions and the code's git commit."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import torch

import srvae
from srvae.infra.devices import cpu_model


def machine_info() -> dict[str, str]:
    """This machine's CPU, OS, Python, torch and (if any) CUDA devices, as printable strings."""
    info = {"CPU": cpu_model(), "CPU cores": str(os.cpu_count()), "OS": platform.platform(),
            "Python": platform.python_version(), "torch": torch.__version__, "srvae": srvae.__version__}
    if torch.cuda.is_available():
        info["CUDA"] = str(torch.version.cuda)
        info["GPUs"] = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    return info


def git_commit(repo: Path) -> str:
    """Short commit of the checkout ``repo`` (the study's directory), flagged when tracked files changed."""
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    try:
        head, status = git("rev-parse", "--short=12", "HEAD"), git("status", "--porcelain", "-uno")
    except OSError:
        return "unknown (git not found)"
    if head.returncode != 0:
        return "unknown (not a git checkout)"
    return head.stdout.strip() + (" (with uncommitted changes)" if status.stdout.strip() else "")
