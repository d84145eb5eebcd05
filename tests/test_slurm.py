"""The SLURM profiles: `workflow/profiles/slurm-cpu` and `slurm-gpu` stay in step, and a tiny study submitted
through `slurm-cpu` to a running SLURM cluster (its node has no GPU) gives bit for bit the results of a local
run, its jobs named as the profiles say.

It needs a cluster with accounting (the plugin polls job states with `sacct` and checks the account with
`sacctmgr`) and the `snakemake-executor-plugin-slurm` of the test extra. `.ci/slurm-up.sh` (as root) brings
up a one-node cluster on this machine, and `.ci/run` calls it before the tests; without one the test skips,
saying what is missing. That test is slow (about three minutes; ten on a busy 2-core machine): deselect it with `pytest -m "not slow"`.
"""

import getpass
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from .conftest import REPO, tiny_config
from .test_workflow import SNAKEMAKE

PROFILES = {kind: REPO / "workflow" / "profiles" / f"slurm-{kind}" for kind in ("cpu", "gpu")}
PROFILE = PROFILES["cpu"]  # the local cluster's node has no GPU
GPU_KEYS = {"gpu", "gpu_model", "gres", "slurm_partition"}  # where the two profiles may differ
BRING_UP = "run `bash .ci/slurm-up.sh` as root to bring up a one-node cluster on this machine"
RUN = "results/tiny/vae/seed0"  # the study's one run, relative to each working directory


def _ask(cmd: list[str], what: str) -> str:
    """The output of a SLURM command; skips with its error when the command fails (no cluster, no accounting)."""
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        error = " ".join(done.stderr.split())
        pytest.skip(f"{what}: `{' '.join(cmd)}` failed ({error}); {BRING_UP}")
    return done.stdout.strip()


@pytest.fixture(scope="module")
def cluster() -> dict[str, str]:
    """The account and the default partition of a running cluster with an idle node, or a skip saying why not."""
    missing = [cmd for cmd in ("sinfo", "sbatch", "sacct", "sacctmgr", "scancel") if shutil.which(cmd) is None]
    if missing:
        pytest.skip(f"SLURM's commands {', '.join(missing)} are missing; {BRING_UP}")
    pytest.importorskip("snakemake_executor_plugin_slurm",
                        reason="snakemake-executor-plugin-slurm is missing: pip install -e '.[test]'")
    partitions = _ask(["sinfo", "-h", "-o", "%P %t"], "the SLURM controller does not answer").splitlines()
    default = [name.rstrip("*") for name, _ in map(str.split, partitions) if name.endswith("*")]
    if not default:
        pytest.skip(f"the cluster has no default partition (sinfo: {partitions}); {BRING_UP}")
    if not any(part.rstrip("*") == default[0] and state in ("idle", "mix") for part, state in map(str.split, partitions)):
        pytest.skip(f"no idle node in partition {default[0]} (sinfo: {partitions}); {BRING_UP}")
    # The plugin needs accounting twice: `sacctmgr` checks the account, `sacct` polls the jobs.
    user = getpass.getuser()
    account = _ask(["sacctmgr", "-n", "-P", "list", "user", user, "format=defaultaccount"],
                   "the cluster has no accounting (slurmdbd), which the SLURM plugin needs")
    if not account:
        pytest.skip(f"user {user} has no SLURM account; {BRING_UP}")
    _ask(["sacct", "-n", "-X", "-S", "now"], "`sacct`, with which the SLURM plugin polls job states, does not work")
    return {"account": account, "partition": default[0]}


def _profile(kind: str) -> dict:
    return yaml.safe_load((PROFILES[kind] / "config.yaml").read_text())


def _without(profile: dict, keys: set[str]) -> dict:
    """The profile with those keys dropped from its default and per-rule resources."""
    return {**profile,
            "default-resources": {k: v for k, v in profile["default-resources"].items() if k not in keys},
            "set-resources": {rule: {k: v for k, v in res.items() if k not in keys}
                              for rule, res in profile["set-resources"].items()}}


def _gpu_rules() -> set[str]:
    """The workflow's rules that declare a `gpu` resource, read from its rule files."""
    text = "\n".join(path.read_text() for path in (REPO / "workflow" / "rules").glob("*.smk"))
    parts = re.split(r"^rule (\w+):", text, flags=re.M)
    return {rule for rule, body in zip(parts[1::2], parts[2::2]) if re.search(r"^\s+gpu\s*=", body, re.M)}


def test_the_cpu_profile_is_the_gpu_profile_without_gpus():
    cpu, gpu = _profile("cpu"), _profile("gpu")
    # Same executor settings, job names, runtimes and memory: a change to one profile must reach the other.
    assert _without(cpu, GPU_KEYS) == _without(gpu, GPU_KEYS)
    # Each rule that declares a GPU gets one on a GPU cluster and none on a CPU one: the rules declare
    # gpu=1 themselves, so only an explicit `gpu: 0` keeps `--gpus` off their sbatch line.
    rules = _gpu_rules()
    assert rules, "no rule declares a gpu resource: _gpu_rules no longer reads the rule files"
    assert {rule for rule, res in gpu["set-resources"].items() if res.get("gpu") or res.get("gres")} == rules
    asked = {rule: keys for rule, res in cpu["set-resources"].items()
             if (keys := {k: v for k, v in res.items() if k in GPU_KEYS})}
    assert asked == dict.fromkeys(rules, {"gpu": 0})


def _resource_args(account: str, partition: str) -> list[str]:
    """The CPU profile's resources with this cluster's account and partition.

    A `--default-resources` or `--set-resources` on the command line replaces the profile's whole mapping
    (Snakemake 9.27), not single keys: the profile's runtimes, memory and `gpu: 0` are restated, so they
    reach SLURM.
    """
    profile = _profile("cpu")
    default = {**profile["default-resources"], "slurm_account": account, "slurm_partition": partition}
    per_rule = profile["set-resources"]
    return ["--default-resources", *(f"{key}={value}" for key, value in default.items()),
            "--set-resources", *(f"{rule}:{key}={value}" for rule, res in per_rule.items() for key, value in res.items())]


def _run_watching_squeue(cmd: list[str], log: Path, timeout: float) -> tuple[int, set[tuple[str, str]]]:
    """Run Snakemake into `log`; return its exit status and every (name, comment) that `squeue` showed meanwhile."""
    seen = set()
    deadline = time.monotonic() + timeout
    with log.open("w") as out:
        snakemake = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        try:
            while snakemake.poll() is None:
                if time.monotonic() > deadline:
                    raise subprocess.TimeoutExpired(cmd, timeout)
                # The format the profiles' comments recommend (%k: the comment), names first.
                queue = subprocess.run(["squeue", "--me", "-h", "-o", "%j|%k"], capture_output=True, text=True)
                seen.update(tuple(line.split("|")) for line in queue.stdout.splitlines())
                time.sleep(1)
        finally:
            if snakemake.poll() is None:
                snakemake.kill()
                snakemake.wait()
    return snakemake.returncode, seen


@pytest.mark.slow
def test_the_slurm_profile_runs_the_study_as_a_local_run_does(tmp_path, cluster):
    runs = {}
    for where in ("local", "slurm"):
        workdir = tmp_path / where
        workdir.mkdir()
        (workdir / "study.yaml").write_text(yaml.safe_dump(tiny_config(workdir, epochs=2)))
        runs[where] = [*SNAKEMAKE, "--directory", str(workdir), "--configfile", str(workdir / "study.yaml")]

    local = subprocess.run([*runs["local"], "--cores", "2"], capture_output=True, text=True, timeout=600)
    assert local.returncode == 0, local.stderr[-3000:]

    # The first status check after 10 s, not the plugin's 40: each tiny job takes about 20 s.
    log = tmp_path / "slurm.log"
    try:
        returncode, queued = _run_watching_squeue(
            [*runs["slurm"], "--workflow-profile", str(PROFILE),
             *_resource_args(cluster["account"], cluster["partition"]),
             "--slurm-init-seconds-before-status-checks", "10"], log, timeout=900)
    finally:
        # Snakemake as the plugin logs it: "Job 3 has been submitted with SLURM jobid 17 (log: …)".
        job_ids = re.findall(r"has been submitted with SLURM jobid (\d+)", log.read_text())
        if job_ids:  # a failed or timed-out run leaves nothing queued (finished jobs ignore this)
            subprocess.run(["scancel", *job_ids], capture_output=True)
    assert returncode == 0, log.read_text()[-5000:]

    # Job names: the plugin names every job after the run's id, prefixed as the profile says; the rule and
    # wildcards are the comment, which `squeue` showed while the jobs were queued or running.
    profile = _profile("cpu")
    run_id = re.search(r"SLURM run ID: (\S+)", log.read_text()).group(1)
    assert re.fullmatch(f"{profile['slurm-jobname-prefix']}_[0-9a-f-]{{36}}", run_id), run_id
    rules = {"train": "rule_train_wildcards_tiny_vae_0", "evaluate": "rule_evaluate_wildcards_tiny_vae_0",
             "speed": "rule_speed_wildcards_tiny_vae_0", "aggregate": "rule_aggregate", "report": "rule_report"}
    ours = {comment for name, comment in queued if name == run_id}  # another run may share the cluster
    assert ours <= set(rules.values()), queued
    assert rules["train"] in ours, queued  # the longest job: seen by a poll a second

    # Every job of the DAG went through SLURM, under the account and partition given, with the profile's
    # resources and no GPU (the node has none: a `--gpus` would have been refused at submission).
    accounted = subprocess.run(["sacct", "-X", "-n", "-P", "-j", ",".join(job_ids),
                                "-o", "Comment,JobName,State,Account,Partition,TimelimitRaw,ReqMem"],
                               capture_output=True, text=True, check=True).stdout
    jobs = {comment: rest for comment, *rest in (line.split("|") for line in accounted.splitlines())}
    assert sorted(jobs) == sorted(rules.values()), accounted
    for rule, comment in rules.items():
        resources = {**profile["default-resources"], **profile["set-resources"].get(rule, {})}
        expected = [run_id, "COMPLETED", cluster["account"], cluster["partition"], str(resources["runtime"]),
                    f"{resources['mem_mb']}M"]
        assert jobs[comment] == expected, (rule, jobs[comment])

    # The same numbers, bit for bit: one thread per job on the same CPU, fixed seeds.
    local_run, slurm_run = tmp_path / "local" / RUN, tmp_path / "slurm" / RUN
    for name in ("model.pt", "log_px.npy"):
        assert (local_run / name).read_bytes() == (slurm_run / name).read_bytes(), name
    evaluated = [json.loads((run / "eval.json").read_text()) for run in (local_run, slurm_run)]
    for key in ("nll", "nll_sem", "elbo", "kl_per_layer"):
        assert evaluated[0][key] == evaluated[1][key], key
    curves = [pd.read_csv(run / "metrics.csv").drop(columns="seconds") for run in (local_run, slurm_run)]
    pd.testing.assert_frame_equal(*curves, check_exact=True)
    assert (tmp_path / "slurm" / "reports" / "tables.md").exists()
