"""The SLURM profile for real: a tiny study submitted through `workflow/profiles/slurm` to a running SLURM
cluster gives bit for bit the results of a local run.

It needs a cluster with accounting (the plugin polls job states with `sacct` and checks the account with
`sacctmgr`) and the `snakemake-executor-plugin-slurm` of the test extra. `.ci/slurm-up.sh` (as root) brings
up a one-node cluster on this machine, and `.ci/run` calls it before the tests; without one the test skips,
saying what is missing. Slow (about three minutes): deselect with `pytest -m "not slow"`.
"""

import getpass
import json
import re
import shutil
import subprocess

import pandas as pd
import pytest
import yaml

from .conftest import REPO, tiny_config
from .test_workflow import SNAKEMAKE

pytestmark = pytest.mark.slow

PROFILE = REPO / "workflow" / "profiles" / "slurm"
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


def _resource_args(account: str, partition: str) -> list[str]:
    """The profile's resources with this cluster's account and partition, and no GPU (the node has none).

    A `--default-resources` or `--set-resources` on the command line replaces the profile's whole mapping
    (Snakemake 9.27), not single keys: the profile's runtimes and memory are restated, so they reach SLURM.
    """
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    default = {**profile["default-resources"], "slurm_account": account, "slurm_partition": partition}
    per_rule = {rule: {**res, "slurm_partition": partition, "gpu": 0} for rule, res in profile["set-resources"].items()}
    return ["--default-resources", *(f"{key}={value}" for key, value in default.items()),
            "--set-resources", *(f"{rule}:{key}={value}" for rule, res in per_rule.items() for key, value in res.items())]


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
        with log.open("w") as out:
            slurm = subprocess.run([*runs["slurm"], "--workflow-profile", str(PROFILE),
                                    *_resource_args(cluster["account"], cluster["partition"]),
                                    "--slurm-init-seconds-before-status-checks", "10"],
                                   stdout=out, stderr=subprocess.STDOUT, timeout=900)
    finally:
        # Snakemake as the plugin logs it: "Job 3 has been submitted with SLURM jobid 17 (log: …)".
        job_ids = re.findall(r"has been submitted with SLURM jobid (\d+)", log.read_text())
        if job_ids:  # a failed or timed-out run leaves nothing queued (finished jobs ignore this)
            subprocess.run(["scancel", *job_ids], capture_output=True)
    assert slurm.returncode == 0, log.read_text()[-5000:]

    # Every job of the DAG went through SLURM, under the account and partition given, with the profile's resources.
    accounted = subprocess.run(["sacct", "-X", "-n", "-P", "-j", ",".join(job_ids),
                                "-o", "Comment,State,Account,Partition,TimelimitRaw,ReqMem"],
                               capture_output=True, text=True, check=True).stdout
    jobs = {comment: rest for comment, *rest in (line.split("|") for line in accounted.splitlines())}
    rules = {"train": "rule_train_wildcards_tiny_vae_0", "evaluate": "rule_evaluate_wildcards_tiny_vae_0",
             "speed": "rule_speed_wildcards_tiny_vae_0", "aggregate": "rule_aggregate", "report": "rule_report"}
    assert sorted(jobs) == sorted(rules.values()), accounted
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    for rule, comment in rules.items():
        resources = {**profile["default-resources"], **profile["set-resources"].get(rule, {})}
        expected = ["COMPLETED", cluster["account"], cluster["partition"], str(resources["runtime"]),
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
