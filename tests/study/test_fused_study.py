"""`train.fuse_seeds: true` on the CPU: the same tiny study run by Snakemake fused (one training job for both seeds
of a model) and unfused (one job per seed) gives each seed the same metrics, the same test NLL and the same
report. The model is a flow (a tiny MAF), whose training draws no reparameterisation noise: fused seeds draw other
noise than separate runs (the same distribution), so for a VAE only the distribution agrees (test_fused.py)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ..conftest import REPO, tiny_config

SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]
SEEDS = [0, 1]
#: columns measured on the clock, which differ between any two runs
TIMED = re.compile(r"seconds|_per_s|spread|_load")  # the clock, and the machine's load while it ran


def _study(workdir: Path, fuse: bool) -> subprocess.CompletedProcess:
    models = {"maf": {"class": "maf", "label": "MAF(2)", "table": "table3", "params": {"mades": 2, "hidden": [8]},
                      "speed": {"n_samples": 3, "repeats": 1, "warmup": 0}}}
    cfg = tiny_config(workdir, models, epochs=2, fuse_seeds=fuse)
    cfg["seeds"] = SEEDS
    cfg["datasets"] = {"tiny_logit": {**cfg["datasets"]["tiny"], "transform": "dequantise_logit"}}
    cfg["study"]["datasets"] = ["tiny_logit"]
    path = workdir / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return subprocess.run([*SNAKEMAKE, "--directory", str(workdir), "--configfile", str(path), "--cores", "2",
                           "--resources", "gpu=2"], capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> dict[bool, Path]:
    done = {}
    for fuse in (False, True):
        workdir = tmp_path_factory.mktemp(f"fused-{fuse}")
        result = _study(workdir, fuse)
        assert result.returncode == 0, result.stderr[-3000:]
        done[fuse] = workdir
    return done


def _run(workdir: Path, seed: int) -> Path:
    return workdir / "results" / "tiny_logit" / "maf" / f"seed{seed}"


def test_one_job_trained_both_seeds(studies):
    for fuse, workdir in studies.items():
        for seed in SEEDS:
            summary = json.loads((_run(workdir, seed) / "train.json").read_text())
            assert summary.get("fused_seeds") == (SEEDS if fuse else None)
            assert (workdir / "logs" / "tiny_logit" / "maf" / f"seed{seed}" / "train.log").exists()
            status = json.loads((_run(workdir, seed) / "status.json").read_text())
            assert status["state"] == "done" and status["step"] == "speed", status
            assert not (_run(workdir, seed) / "checkpoint.pt").exists()
        logs = [(workdir / "logs" / "tiny_logit" / "maf" / f"seed{s}" / "train.log").read_text() for s in SEEDS]
        assert ("tiny_logit/maf/seed1: epoch 2/2" in logs[0]) == fuse  # a fused job logs every seed


def test_each_seed_has_the_separate_runs_metrics_and_test_nll(studies):
    for seed in SEEDS:
        separate, fused = (_run(studies[fuse], seed) for fuse in (False, True))
        metrics = [pd.read_csv(run / "metrics.csv").drop(columns="seconds") for run in (separate, fused)]
        pd.testing.assert_frame_equal(*metrics, rtol=1e-4, atol=1e-3)
        assert metrics[0]["valid_elbo"].iloc[-1] > metrics[0]["valid_elbo"].iloc[0] + 100  # it trained
        evals = [json.loads((run / "eval.json").read_text()) for run in (separate, fused)]
        assert evals[0]["nll"] == pytest.approx(evals[1]["nll"], rel=1e-5, abs=1e-3)
        assert evals[0]["kl_per_layer"] == pytest.approx(evals[1]["kl_per_layer"], rel=1e-4, abs=1e-4)
        trains = [json.loads((run / "train.json").read_text()) for run in (separate, fused)]
        assert trains[0]["best_epoch"] == trains[1]["best_epoch"]
    nll = [json.loads((_run(studies[True], seed) / "eval.json").read_text())["nll"] for seed in SEEDS]
    assert nll[0] != nll[1]  # the seeds are different runs


def test_the_report_is_the_same(studies):
    summaries = [pd.read_csv(studies[fuse] / "results" / "summary.csv") for fuse in (False, True)]
    untimed = [s.drop(columns=[c for c in s.columns if TIMED.search(c) or c == "run_dir"]) for s in summaries]
    pd.testing.assert_frame_equal(*untimed, rtol=1e-5, atol=1e-3)
    tables = [(studies[fuse] / "reports" / "tables.md").read_text() for fuse in (False, True)]
    assert "MAF(2)" in tables[0]
    # every number the report prints is the same, except those taken on the clock (training and sampling speed)
    # and the machine's load while sampling was timed (the speed table's footnote)
    numbers = [re.findall(r"-?\d[\d,]*\.\d+", re.sub(r"1-minute load average[^.]*\.\d[^;]*;", "",
                                                          _without_timed_columns(t))) for t in tables]
    assert len(numbers[0]) == len(numbers[1]) > 5
    for unfused, fused in zip(*numbers):  # equal to a unit in the last printed place (float tolerance, rounded)
        unit = 10.0 ** -len(unfused.split(".")[1])
        assert abs(float(unfused.replace(",", "")) - float(fused.replace(",", ""))) <= 1.01 * unit, (unfused, fused)


def _without_timed_columns(table: str) -> str:
    """``table`` without the cells of columns whose header names a speed or a time."""
    kept, timed = [], set()
    for line in table.splitlines():
        cells = line.split("|")
        if line.startswith("|") and not set(line) <= set("|-: "):
            if not re.search(r"\d", line) or "---" in line:  # a header row: which columns are timed
                timed = {i for i, cell in enumerate(cells) if re.search(r"/s|seconds|time|speed", cell, re.I)}
            cells = [c for i, c in enumerate(cells) if i not in timed]
        kept.append("|".join(cells))
    return "\n".join(kept)
