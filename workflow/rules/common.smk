# Shared set-up: validate the config before any job runs, and name every output of the study.
import json
import os

from srvae.study.config import NAME_REGEX, ConfigError, read_config_file, resolved_path, validate_config, write_resolved
from srvae.study.load import check_study
from srvae.study.run import paths
from srvae.study.report.render import TEMPLATES_DIR

try:
    for _path in workflow.configfiles:  # Snakemake's own YAML reader keeps a repeated key's last value silently
        read_config_file(_path)
    CFG = check_study(validate_config(config))
except ConfigError as e:
    raise WorkflowError(str(e)) from None

RESULTS = CFG.results_dir
REPORTS = CFG.reports_dir
# a run's directory and logs, as wildcard patterns; every file name comes from srvae.study.run.paths
RUN = f"{RESULTS}/{paths.RUN}"
LOG = f"{paths.LOGS}/{paths.RUN}"
CONFIGS = f"{RESULTS}/{paths.CONFIGS}"
# Jobs read the validated config (every --configfile and --config merged) from this file, named through the
# environment rather than the command line: editing one model's entry must not rerun every other job.
# It is written when the workflow starts (`onstart`, in the Snakefile), never by a dry run.
os.environ.update(SRVAE_CONFIG=str(resolved_path(CFG, CONFIGS)))
# `--resources gpu=N`: N GPU jobs may run at once; each takes its own GPU slot (shared when N > #GPUs).
# Passed through the environment, not the command line, so that changing N reruns nothing.
_gpu = workflow.global_resources.get("gpu")
if isinstance(getattr(_gpu, "value", _gpu), int):
    os.environ.update(SRVAE_GPU_SLOTS=str(getattr(_gpu, "value", _gpu)))
RUN_DIRS = [str(paths.run_dir(RESULTS, *run)) for run in CFG.runs()]
REPORT_TABLES = [f"{REPORTS}/{paths.TABLES_MD}", f"{REPORTS}/{paths.TABLES_TEX}"]
REPORT_FILES = [*REPORT_TABLES, f"{REPORTS}/{paths.TABLES_HTML}", f"{REPORTS}/{paths.FIGURES}"]

wildcard_constraints:
    seed=r"\d+",
    dataset=NAME_REGEX,
    model=NAME_REGEX,


def run_spec(wildcards, section):
    """What a step of one run depends on, as a params value: a change reruns only the runs it touches."""
    for key, known in (("dataset", CFG.datasets), ("model", CFG.models)):  # a target path naming neither
        if getattr(wildcards, key) not in known:
            raise WorkflowError(f"unknown {key} {getattr(wildcards, key)!r} in the target path; the config defines: "
                                f"{', '.join(known)}")
    spec = {"dataset": CFG.datasets[wildcards.dataset], "model": CFG.models[wildcards.model],
            section: getattr(CFG, f"{section}_settings")(wildcards.model)}
    return json.dumps({key: value.model_dump(mode="json", by_alias=True) for key, value in spec.items()},
                      sort_keys=True)


def every_core(wildcards):
    """Every core of the machine, so that a timing step runs alone. On a cluster each job has an allocation of
    its own (and the submitting and the running Snakemake must agree): the job asks for the config's threads."""
    if workflow.non_local_exec or workflow.remote_exec:
        return CFG.threads
    try:
        return workflow.cores
    except WorkflowError:  # no --cores: a dry run, --report or --lint, where no job runs
        return CFG.threads
