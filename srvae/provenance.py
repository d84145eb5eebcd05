"""Where a report's numbers come from: the machine, the software versions and the code's git commit."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

#: the repository checkout this package lives in (``workflow/`` sits next to ``srvae/``)
REPO_ROOT = Path(__file__).resolve().parent.parent


def machine_info() -> dict[str, str]:
    """This machine's CPU, OS, Python, torch and (if any) CUDA devices, as printable strings."""
    import torch  # here, so that reading the tables does not need torch

    info = {"CPU": cpu_model(), "CPU cores": str(os.cpu_count()), "OS": platform.platform(),
            "Python": platform.python_version(), "torch": torch.__version__}
    if torch.cuda.is_available():
        info["CUDA"] = str(torch.version.cuda)
        info["GPUs"] = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    return info


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit(repo: Path = REPO_ROOT) -> str:
    """Short commit of ``repo``, flagged when tracked files have uncommitted changes."""
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    try:
        head, status = git("rev-parse", "--short=12", "HEAD"), git("status", "--porcelain", "-uno")
    except OSError:
        return "unknown (git not found)"
    if head.returncode != 0:
        return "unknown (not a git checkout)"
    return head.stdout.strip() + (" (with uncommitted changes)" if status.stdout.strip() else "")
