"""The steps of one run: config → dataset and model factory → train, evaluate (IW-NLL) and speed (sampling).
Each is one ``srvae`` command and one Snakemake rule; aggregation and the report are the study's own steps
(:mod:`srvae.study.report`).

A run's steps read and write only its run directory (:func:`.paths.run_dir`); the files, by step, are named in
:mod:`.paths`: ``train`` writes the best-on-validation weights, the per-epoch metrics and ``train.json`` (and a
checkpoint while training, the resume point, removed at the end); ``evaluate`` the test IW-NLL with K samples,
test ELBO and KL per stochastic layer, and every test image's ``log p̂_K(x)`` (for paired comparisons between
models); ``speed`` the sampling speed. Every file is written atomically, the JSON/CSV only after the step
succeeded.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from srvae.infra.atomic_io import load_checkpoint, save_checkpoint, write_array, write_json, write_text
from srvae.infra.devices import device_name
from srvae.models import LatentVariableModel
from srvae.registry import build_model

from ..config import ConfigError, StudyConfig
from ..data.datasets import StudyData, load_dataset
from ..data.dequantise import DequantisedData
from . import paths
from .evaluate import iw_log_likelihood, mean_kl_per_layer
from .progress import duration, eta, write_status
from .speed import sampling_speed
from .fused import build_seed_models, study_on_cuda, train_fused
from .train import TrainingDivergedError, build_run_model, train


def pick_device(cfg: StudyConfig, allow_tf32: bool) -> torch.device:
    """``device: auto`` → CUDA when available, else CPU; ``cuda`` without a GPU is an error.

    ``allow_tf32`` lets float32 matrix products on CUDA use TensorFloat-32 (about 10 bits of mantissa in the
    products, float32 accumulation): several times faster on Ampere/Hopper. Training and sampling follow
    the config's ``tf32``; the evaluation of the reported NLL always runs in full float32.
    """
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("config asks for device: cuda but no CUDA device is visible; use device: auto or cpu")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = allow_tf32
    return torch.device("cuda" if study_on_cuda(cfg) else "cpu")


def _load_data(cfg: StudyConfig, dataset: str, device: torch.device) -> StudyData:
    return load_dataset(dataset, cfg.datasets[dataset]).to(device)


def _identity(cfg: StudyConfig, dataset: str, model: str, data: StudyData) -> dict[str, Any]:
    """Everything besides settings, seed and name that defines a run (its checkpoint's fingerprint)."""
    return {"model": cfg.models[model].model_dump(mode="json", by_alias=True, include={"cls", "params"}),
            "dataset": cfg.datasets[dataset].model_dump(mode="json", exclude={"description"}),
            "data_dim": data.data_dim}


def _write_trained(cfg: StudyConfig, dataset: str, model: str, seed: int, net: LatentVariableModel,
                   data: StudyData, result: dict[str, Any], extra: dict[str, Any] | None = None) -> Path:
    """A trained run's files: its weights (batch-norm statistics refreshed over the training set), metrics and
    ``train.json`` (with ``extra`` keys); the checkpoint removed, the status done."""
    out = paths.run_dir(cfg.results_dir, dataset, model, seed)
    entry, settings, device = cfg.models[model], cfg.train_settings(model), data.train.device
    statistics_generator = torch.Generator(device=device).manual_seed(seed)
    net.refresh_statistics(data.training_images(statistics_generator).split(settings.eval_batch_size))
    save_checkpoint(out / paths.MODEL, {
        "class": entry.cls, "params": entry.params, "data_dim": data.data_dim, "state_dict": net.state_dict(),
    })
    write_text(out / paths.METRICS, pd.DataFrame(result["metrics"]).to_csv(index=False))
    epochs = len(result["metrics"])
    write_json(out / paths.TRAIN, {
        "dataset": dataset, "model": model, "class": entry.cls, "seed": seed,
        "num_parameters": net.num_parameters, "epochs": epochs, "best_epoch": result["best_epoch"],
        "train_seconds": result["train_seconds"],
        "seconds_per_epoch": result["train_seconds"] / epochs,
        "train_images_per_s": len(data.train) * epochs / result["train_seconds"],
        "device": device.type, "device_name": device_name(device), "tf32": cfg.tf32 and device.type == "cuda",
        "selection": result["selection"],
        "hyperparameters": dataclasses.asdict(net.cfg), "train_settings": settings.model_dump(), **(extra or {}),
    })
    (out / paths.CHECKPOINT).unlink(missing_ok=True)
    write_status(out, "train", "done", detail=f"{epochs} epochs in {duration(result['train_seconds'])}")
    return out


def train_run(cfg: StudyConfig, dataset: str, model: str, seed: int) -> Path:
    """Train one (dataset, model, seed) and write its run directory."""
    out = paths.run_dir(cfg.results_dir, dataset, model, seed)
    device = pick_device(cfg, allow_tf32=cfg.tf32)
    data = _load_data(cfg, dataset, device)
    entry = cfg.models[model]
    net = build_run_model(entry.cls, entry.params, data, seed)
    write_status(out, "train", "running", detail="starting")
    result = train(net, data, cfg.train_settings(model), seed, out / paths.CHECKPOINT,
                   name=f"{dataset}/{model}/seed{seed}", identity=_identity(cfg, dataset, model, data),
                   on_epoch=lambda message: write_status(out, "train", "running", detail=message))
    return _write_trained(cfg, dataset, model, seed, net, data, result)


def train_fused_run(cfg: StudyConfig, dataset: str, model: str, seeds: list[int]) -> list[Path]:
    """Train every seed of ``seeds`` of one (dataset, model) as one stacked model (:mod:`.fused`) and write each
    seed's run directory as :func:`train_run` does (``train.json`` lists the seeds trained together)."""
    outs = [paths.run_dir(cfg.results_dir, dataset, model, seed) for seed in seeds]
    device = pick_device(cfg, allow_tf32=cfg.tf32)
    data = _load_data(cfg, dataset, device)
    entry, settings = cfg.models[model], cfg.train_settings(model)
    nets = build_seed_models(entry.cls, entry.params, seeds, data, settings, device)
    for out in outs:
        write_status(out, "train", "running", detail=f"starting (seeds {', '.join(map(str, seeds))} fused)")
    results = train_fused(
        nets, data, settings, seeds, [out / paths.CHECKPOINT for out in outs],
        [f"{dataset}/{model}/seed{seed}" for seed in seeds], identity=_identity(cfg, dataset, model, data),
        on_epoch=[lambda message, out=out: write_status(out, "train", "running", detail=message) for out in outs])
    return [_write_trained(cfg, dataset, model, seed, net, data, result, {"fused_seeds": list(seeds)})
            for seed, net, result in zip(seeds, nets, results)]


def load_trained(run: Path, device: torch.device) -> LatentVariableModel:
    """The model saved by :func:`train_run` in ``run``, in eval mode on ``device``."""
    ckpt = load_checkpoint(run / paths.MODEL, map_location=device)
    net = build_model(ckpt["class"], ckpt["params"], ckpt["data_dim"])
    net.load_state_dict(ckpt["state_dict"])
    return net.to(device).eval()


def evaluate_run(cfg: StudyConfig, dataset: str, model: str, seed: int) -> dict[str, Any]:
    """Test-set IW-NLL (K from the config), test ELBO and KL per layer of a trained run.

    A model with an exact likelihood (a flow) is scored with one sample: all K of its importance weights are
    ``p(x)``, so the K-sample estimate is that one value. Continuous data also get bits per dimension in 8-bit
    pixel space (the logit transform's Jacobian added back).
    """
    out = paths.run_dir(cfg.results_dir, dataset, model, seed)
    device = pick_device(cfg, allow_tf32=False)  # the reported NLL: full float32
    net = load_trained(out, device)
    data = _load_data(cfg, dataset, device)
    ev = cfg.evaluate_settings(model)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    name = f"{dataset}/{model}/seed{seed}"
    k = 1 if net.exact else ev.k  # an exact model's K weights are all p(x): one sample says it
    logged_tenths = 0

    def progress(done: int, total: int) -> None:  # the status file after every batch, a log line per tenth
        nonlocal logged_tenths
        elapsed = time.perf_counter() - t0
        message = (f"{done:,}/{total:,} test images, K = {k}, {duration(elapsed)}, "
                   f"ETA {duration(eta(done, total, elapsed))}")
        write_status(out, "evaluate", "running", detail=message)
        if done * 10 // total > logged_tenths:
            logged_tenths = done * 10 // total
            print(f"{name}: evaluating {message}", file=sys.stderr, flush=True)

    write_status(out, "evaluate", "running", detail="starting")
    estimate = iw_log_likelihood(net, data.test, k, ev.k_chunk, ev.batch_size, progress)
    seconds = time.perf_counter() - t0
    if not math.isfinite(estimate.nll) or -estimate.nll < data.divergence_floor:
        raise TrainingDivergedError(
            f"{dataset}/{model}/seed{seed}: the test NLL is {estimate.nll:.6g} nats, worse than {data.floor_name} "
            f"({-data.divergence_floor:.1f} nats): the trained model is broken; retrain this run "
            f"(delete {out / paths.MODEL}) with a lower train.lr")
    extra: dict[str, Any] = {}
    if ev.check_k and seed in ev.check_seeds and not net.exact:  # does the estimate still move with a larger K?
        larger = iw_log_likelihood(net, data.test, ev.check_k, ev.k_chunk, ev.batch_size)
        extra["check"] = {"k": ev.check_k, "nll": larger.nll, "nll_sem": larger.nll_sem}
    if isinstance(data, DequantisedData):
        extra["bits_per_dim"] = data.bits_per_dim(estimate.log_px)
    result = extra | {
        "nll": estimate.nll, "nll_sem": estimate.nll_sem, "elbo": float(estimate.elbo.mean()),
        "k": ev.k, "exact": net.exact, "n_test": len(data.test), "kl_per_layer": mean_kl_per_layer(net, data.test),
        "latents_per_layer": net.latents_per_layer,
        "eval_seconds": seconds, "device_name": device_name(device),
    }
    write_array(out / paths.LOG_PX, estimate.log_px.double().numpy())
    write_json(out / paths.EVAL, result)
    print(f"{name}: test NLL {estimate.nll:.2f} ± {estimate.nll_sem:.2f} (K = {ev.k}) in {duration(seconds)}",
          file=sys.stderr, flush=True)
    write_status(out, "evaluate", "done", detail=f"test NLL {estimate.nll:.2f}")
    return result


def speed_run(cfg: StudyConfig, dataset: str, model: str, seed: int) -> dict[str, Any]:
    """Sampling speed of a trained run."""
    out = paths.run_dir(cfg.results_dir, dataset, model, seed)
    net = load_trained(out, pick_device(cfg, allow_tf32=cfg.tf32))
    sp = cfg.speed_settings(model)
    torch.manual_seed(seed)
    write_status(out, "speed", "running", detail=f"{sp.repeats} × {sp.n_samples:,} samples")
    result = sampling_speed(net, sp.n_samples, sp.repeats, sp.warmup)
    write_json(out / paths.SPEED, result)
    print(f"{dataset}/{model}/seed{seed}: {result['samples_per_s']:,.0f} samples/s on {result['device_name']}",
          file=sys.stderr, flush=True)
    write_status(out, "speed", "done", detail=f"{result['samples_per_s']:,.0f} samples/s")
    return result
