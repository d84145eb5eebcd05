"""``srvae`` command line: every step of the Snakemake DAG, runnable by hand.

    srvae train    --config config.yaml --dataset mnist5k --model vae --seed 0
    srvae evaluate --config config.yaml --dataset mnist5k --model vae --seed 0
    srvae speed    --config config.yaml --dataset mnist5k --model vae --seed 0
    srvae train-fused --config config.yaml --dataset mnist5k --model vae --seeds 0 1 2   # one stacked model
    srvae aggregate --config config.yaml
    srvae report    --config config.yaml
    srvae check     --config config.yaml      # validate the config, list the runs
    srvae status    --config config.yaml      # one line per run: waiting, training (epoch, ETA), done, failed
    srvae models    --config config.yaml      # what each model entry will run: class and resolved hyper-parameters
    srvae schema                               # the config's JSON Schema (YAML), generated from its types
    srvae reference                            # config/README.md: every key and default, generated from its types
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import sys
from pathlib import Path

import torch

from srvae.errors import UserError
from srvae.infra.gpu_slots import acquire_gpu
from srvae.infra.locks import exclusive
from srvae.registry import MODELS, make_config
from srvae.study.config import ConfigError, StudyConfig, schema_yaml
from srvae.study.config_doc import reference_markdown
from srvae.study.load import load_study
from srvae.study.report.aggregate import aggregate_study
from srvae.study.report.render import report_study
from srvae.study.run import paths, steps
from srvae.study.run.progress import run_status, write_status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="srvae", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", nargs="+", default=[os.environ.get("SRVAE_CONFIG", "config.yaml")],
                       help="YAML config file(s), merged left to right (default: $SRVAE_CONFIG, which the "
                            "Snakefile sets to the study's validated config, else config.yaml)")
        p.add_argument("--threads", type=int, default=None, help="CPU threads (default: config's threads)")
        return p

    steps_help = {"train": "train one run", "evaluate": "evaluate one run", "speed": "speed one run",
                  "train-fused": "train several seeds of one model as one stacked model (train.fuse_seeds), writing "
                                 "each seed's run"}
    for step, help in steps_help.items():
        p = with_config(sub.add_parser(step, help=help))
        p.add_argument("--dataset", required=True)
        p.add_argument("--model", required=True)
        if step == "train-fused":  # train.fuse_seeds: one job trains several seeds of a model as one stacked model
            p.add_argument("--seeds", type=int, nargs="+", required=True)
        else:
            p.add_argument("--seed", type=int, required=True)
        p.add_argument("--gpu-slots", type=int, default=os.environ.get("SRVAE_GPU_SLOTS"),
                       help="GPU jobs that may run at once (default: $SRVAE_GPU_SLOTS, which the Snakefile "
                            "sets from --resources gpu=N); more than the GPU count makes jobs share GPUs")
    with_config(sub.add_parser("aggregate", help="collect every run into results/summary.csv"))
    with_config(sub.add_parser("report", help="render reports/tables.{md,tex} and figures"))
    with_config(sub.add_parser("check", help="validate the config and list the study's runs"))
    status = sub.add_parser("status", help="one line per run of the study: its state, progress and result")
    status.add_argument("--config", nargs="+", default=None,
                        help="YAML config file(s) of the study to show (default: $SRVAE_CONFIG, else the config the "
                             "latest workflow started with, under <results_dir>/configs, which follows an inline "
                             "`snakemake --config`; else config.yaml)")
    status.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)
    with_config(sub.add_parser("models", help="what each model entry of the config runs: its class and every "
                                              "hyper-parameter (defaults filled in)"))
    sub.add_parser("schema", help="print the config's JSON Schema (YAML), generated from its typed settings")
    sub.add_parser("reference", help="print config/README.md: every key with its default and meaning, and every model "
                                     "class's hyper-parameters, generated from the typed settings")
    return parser


def _run_step(args: argparse.Namespace, cfg: StudyConfig) -> None:
    if args.dataset not in cfg.datasets:
        raise ConfigError(f"--dataset {args.dataset!r} is not in the config; defined: {', '.join(cfg.datasets)}")
    if args.model not in cfg.models:
        raise ConfigError(f"--model {args.model!r} is not in the config; defined: {', '.join(cfg.models)}")
    if not cfg.runs_on(args.model, args.dataset):
        raise ConfigError(f"--model {args.model!r} does not run on --dataset {args.dataset!r}: the dataset holds "
                          f"{cfg.datasets[args.dataset].data_kind} data, the model {cfg.models[args.model].data_kind} "
                          f"data, and the model's datasets are {cfg.models[args.model].datasets or 'any of its kind'}")
    # train-fused: one job for several seeds' runs, each marked and locked (in seed order: two jobs never deadlock)
    seeds = sorted(set(args.seeds)) if args.command == "train-fused" else [args.seed]
    if args.command == "train-fused":
        work, lock = lambda: steps.train_fused_run(cfg, args.dataset, args.model, seeds), "train"
    else:
        step = {"train": steps.train_run, "evaluate": steps.evaluate_run, "speed": steps.speed_run}[args.command]
        work, lock = lambda: step(cfg, args.dataset, args.model, args.seed), args.command
    runs = [paths.run_dir(cfg.results_dir, args.dataset, args.model, seed) for seed in seeds]
    # One process per step of a run (a killed Snakemake's orphaned job and its rerun would clobber each other's
    # checkpoint); then a GPU slot, taken before anything initialises CUDA. Both held until the step ends.
    with contextlib.ExitStack() as held:
        for run in runs:
            held.enter_context(exclusive(run / paths.lock_file(lock), f"{lock} for {run}"))
        try:
            with acquire_gpu(slots=args.gpu_slots) if cfg.device != "cpu" else contextlib.nullcontext():
                work()
        except KeyboardInterrupt:  # Ctrl-C (Snakemake passes it on to its jobs): stopped, not broken
            for run in runs:
                write_status(run, lock, "interrupted")
            raise
        except BaseException as e:  # `srvae status` shows the failure and where to read more
            for run in runs:
                write_status(run, lock, "failed", error=str(e).splitlines()[0] if str(e) else type(e).__name__)
            raise


def _status_config(given: list[str] | None) -> list[str]:
    """The config files of the study ``srvae status`` shows: those given, else $SRVAE_CONFIG, else the config the
    latest workflow started with (the newest of ``<results_dir>/configs``, results_dir read from config.yaml),
    else config.yaml. Announced on stderr when it is not the one given."""
    if given:
        return given
    if "SRVAE_CONFIG" in os.environ:
        return [os.environ["SRVAE_CONFIG"]]
    default = "config.yaml"
    try:
        results = load_study([default]).results_dir
    except (UserError, OSError):
        results = StudyConfig.model_fields["results_dir"].default
    started = sorted((Path(results) / paths.CONFIGS).glob("*.yaml"), key=lambda p: p.stat().st_mtime)
    if not started:
        return [default]
    print(f"srvae status: the study the latest workflow started with ({started[-1]}); --config FILE for another",
          file=sys.stderr)
    return [str(started[-1])]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "schema":
            print(schema_yaml(), end="")
            return 0
        if args.command == "reference":
            print(reference_markdown(), end="")
            return 0
        cfg = load_study(_status_config(args.config) if args.command == "status" else args.config)
        torch.set_num_threads(args.threads or cfg.threads)
        if args.command == "check":
            for dataset, model, seed in cfg.runs():
                print(dataset, model, seed)
            print(f"config OK: {len(cfg.study.models)} models × {len(cfg.seeds)} seeds")
        elif args.command == "models":
            for name, entry in cfg.models.items():
                cls = MODELS[entry.cls]
                params = ", ".join(f"{k}={v!r}" for k, v in dataclasses.asdict(make_config(entry.cls, entry.params)).items())
                study = " (in the study)" if name in cfg.study.models else ""
                print(f"{name}{study}: {entry.label!r}, {cls.__module__}.{cls.__name__}({params})")
        elif args.command == "status":
            for dataset, model, seed in cfg.runs():
                state = run_status(paths.run_dir(cfg.results_dir, dataset, model, seed),
                                   paths.log_dir(dataset, model, seed))
                print(state.line(dataset, model, seed))
        elif args.command in ("train", "evaluate", "speed", "train-fused"):
            logging.basicConfig(format="%(name)s: %(message)s", stream=sys.stderr)
            logging.getLogger("srvae.infra.gpu_slots").setLevel(logging.INFO)  # the job's GPU slot, in its log
            _run_step(args, cfg)
        elif args.command == "aggregate":
            aggregate_study(cfg)
        elif args.command == "report":
            report_study(cfg)
    except UserError as e:  # input or circumstances, not a bug: one line, exit status 2
        print(f"srvae {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
