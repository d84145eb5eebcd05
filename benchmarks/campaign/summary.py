"""The figures of ``gpu_campaign.py run`` as a short Markdown page (``summary.md``)."""

from __future__ import annotations

import json
import math
from typing import Any


def fmt(value: Any, digits: int = 0) -> str:
    """A number with thousands separators, or a dash where there is none."""
    return f"{value:,.{digits}f}" if isinstance(value, (int, float)) and math.isfinite(value) else "—"


def summary(campaign: dict[str, Any]) -> str:
    """The campaign's figures as a short Markdown page."""
    env, parts = campaign["environment"], campaign["parts"]
    lines = [f"# GPU campaign{' (dry run, CPU)' if campaign['dry_run'] else ''}", "",
             (f"{env['device']}, torch {env['torch']} (CUDA {env['cuda']}), Python {env['python']}, "
              f"commit {env['commit']}, source sha256 {env['source_sha256'][:12]}, {env['date']}"), ""]
    for part, result in parts.items():
        lines.append(f"## {part}: {result.get('status', result.get('skipped'))}, {fmt(result.get('seconds'))} s")
        lines.append("")
        if part == "throughput":
            lines += [("| model | parameters | eager, batch 256 (img/s) | CUDA graph, batch 256 | compiled, batch 256 "
                       "| eager, batch 100 |"), "|---|---:|---:|---:|---:|---:|"]
            for name, r in result.items():
                if isinstance(r, dict) and "eager" in r:
                    lines.append(f"| {name} | {fmt(r['eager']['parameters'])} | {fmt(r['eager']['images_per_s'])} "
                                 f"| {fmt(r.get('graphed', {}).get('images_per_s'))} "
                                 f"| {fmt(r.get('compiled', {}).get('images_per_s'))} "
                                 f"| {fmt(r.get('eager_batch100', {}).get('images_per_s'))} |")
            if "profile" in result:
                lines += ["", "Profile of a training step of the first model (self time):", "", "```",
                          result["profile"], "```"]
        elif part == "fused":
            for name, r in result.items():
                if isinstance(r, dict):
                    lines.append(f"- {name}: {json.dumps(r, default=str)}")
        elif part == "iw_nll":
            lines += ["| model | test images timed | K | seconds | seconds for 10,000 |", "|---|---:|---:|---:|---:|"]
            for name, r in result.items():
                if isinstance(r, dict) and "seconds" in r:
                    lines.append(f"| {name} | {r['images']:,} | {r['k']} | {fmt(r['seconds'], 1)} | "
                                 f"{fmt(r['seconds_full_test_set'], 1)}{' (scaled)' if r['scaled'] else ''} |")
        elif part == "snakemake_gpu":
            lines.append(f"exit {result.get('returncode')}, tables.md written: {result.get('tables_md')}")
            lines += [f"- {j['job']}: slot {j['slot']} of {j['slots']}, CUDA_VISIBLE_DEVICES={j['CUDA_VISIBLE_DEVICES']}"
                      for j in result.get("jobs", [])]
        elif part == "paper":
            keys = ("model", "epochs", "train_seconds", "train_images_per_s", "best_epoch", "k", "test_images", "test_nll_float32",
                    "test_nll_sem_float32", "test_nll_tf32", "tf32_minus_float32", "eval_seconds_float32")
            lines += [f"- {key}: {fmt(result[key], 3) if isinstance(result.get(key), float) else result.get(key)}"
                      for key in keys if key in result]
        lines.append("")
    return "\n".join(lines)
