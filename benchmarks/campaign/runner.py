"""``gpu_campaign.py run``: the measuring parts in order, each in a child process with a deadline (a part that
fails or overruns is recorded as such and the others go on), and the record of the code and the machine."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import ROOT, SCRIPT
from .parts import PART_TIMEOUTS
from .summary import summary

#: the files whose bytes :func:`source_digest` covers: the code a campaign runs and the configs it reads
SOURCE_GLOBS = ["srvae/**/*.py", "srvae/**/*.yaml", "baselines/**/*.py", "benchmarks/**/*.py", "workflow/**/*",
                "config.yaml", "config/*.yaml", "Snakefile", "pyproject.toml"]


def source_digest(root: Path = ROOT) -> str:
    """sha256 over the path and bytes of every file :data:`SOURCE_GLOBS` matches under ``root``: names the code
    exactly where a copy's ``.git`` lags its files (a device's copy of the tree can carry an older ``.git``);
    ``gpu_campaign.py digest`` prints it for a checkout here."""
    digest = hashlib.sha256()
    files = {f for pattern in SOURCE_GLOBS for f in root.glob(pattern) if f.is_file() and "__pycache__" not in f.parts}
    for f in sorted(files):
        digest.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return digest.hexdigest()


def environment() -> dict[str, Any]:
    """The machine and the code: torch, Python, the device, the commit and the source digest, the date."""
    import torch

    from srvae.study.report.provenance import git_commit

    return {"torch": torch.__version__, "python": sys.version.split()[0],
            "commit": git_commit(ROOT),  # flagged "with uncommitted changes" where the files are not HEAD's
            "source_sha256": source_digest(),
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
            "cuda": torch.version.cuda, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def run(args) -> dict[str, Any]:
    """Every part of ``args.parts_list`` within ``args.budget_s``; ``campaign.json``, ``summary.md`` and
    ``campaign.log`` into ``args.out`` (rewritten after each part)."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    parts_dir = Path(tempfile.mkdtemp(prefix="srvae-campaign-parts-"))
    campaign: dict[str, Any] = {"environment": environment(), "dry_run": args.dry_run, "parts": {}}
    deadline = time.monotonic() + args.budget_s
    log = (out / "campaign.log").open("w")
    for part in args.parts_list:
        left = deadline - time.monotonic()
        own = args.paper_train_s + args.paper_eval_reserve_s + 40 if part == "paper" else PART_TIMEOUTS[part]
        timeout = min(left, args.part_timeout or own)
        if timeout < 20:
            campaign["parts"][part] = {"skipped": f"{left:.0f} s of the campaign's budget left"}
            continue
        paper_train_s = min(args.paper_train_s, max(5.0, timeout - args.paper_eval_reserve_s - 40))
        command = [sys.executable, str(SCRIPT), "part", part, "--parts", str(parts_dir), "--source", args.source,
                   "--part-timeout", str(int(timeout)), "--paper-train-s", str(paper_train_s)]
        command += ["--paper-eval-images", str(args.paper_eval_images), "--iw-images", str(args.iw_images)]
        command += ["--dry-run"] if args.dry_run else []
        print(f"[campaign] {part}: up to {timeout:.0f} s", file=log, flush=True)
        t0 = time.perf_counter()
        try:
            done = subprocess.run(command, check=False, stdout=log, stderr=subprocess.STDOUT, timeout=timeout,
                                  env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"})
            status = "ok" if done.returncode == 0 else f"failed (exit {done.returncode}, see campaign.log)"
        except subprocess.TimeoutExpired:
            status = f"stopped at its deadline of {timeout:.0f} s"
        result_file = parts_dir / f"{part}.json"
        result = json.loads(result_file.read_text()) if result_file.exists() else {}
        campaign["parts"][part] = {"status": status, "seconds": time.perf_counter() - t0, **result}
        (out / "campaign.json").write_text(json.dumps(campaign, indent=1))
        (out / "summary.md").write_text(summary(campaign))
    log.close()
    shutil.rmtree(parts_dir, ignore_errors=True)
    return campaign
