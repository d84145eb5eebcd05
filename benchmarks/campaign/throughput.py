"""Training images/s of one config model in srvae's own training loop (``srvae.study.run.train.train_epoch``): eager,
compiled (``train.compile``) or replayed from a CUDA graph (``train_epoch(..., graphed=GraphedStep(...))``, the
path ``train.cuda_graphs`` takes), on the data the study trains on (binarised on the data's device)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from srvae.study.config import StudyConfig, TrainSettings
from srvae.study.data.datasets import StudyData
from srvae.study.run.speed import synchronize
from srvae.study.run.step import make_optimiser
from srvae.study.run.train import build_run_model, train_epoch

T = TypeVar("T")


def build(cfg: StudyConfig, name: str, data: StudyData, seed: int = 0):
    """Config model ``name`` as seed ``seed``'s run builds it."""
    return build_run_model(cfg.models[name].cls, cfg.models[name].params, data, seed)


def timed(work: Callable[[], T], device: torch.device) -> tuple[T, float]:
    """``work()``'s result and its wall-clock seconds, the device's queued work included."""
    synchronize(device)
    t0 = time.perf_counter()
    result = work()
    synchronize(device)
    return result, time.perf_counter() - t0


def _batches(data: StudyData, batch: int, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The training images (one binarisation) and ``steps`` random batches of them, from a fixed generator."""
    generator = torch.Generator(device=data.train.device).manual_seed(0)
    x = data.training_images(generator)
    return x, torch.randint(len(x), (steps * batch,), generator=generator, device=x.device)


def step_throughput(cfg: StudyConfig, name: str, data: StudyData, settings: TrainSettings, steps: int,
                    warmup: int) -> tuple[dict[str, Any], torch.nn.Module]:
    """Images/s of model ``name``'s training step under ``settings`` (after ``warmup`` untimed steps), replayed
    from a CUDA graph where ``settings.graphs_on`` the data's device, as ``train()`` does; and the
    model, trained those steps."""
    batch = settings.batch_size
    x, order = _batches(data, batch, warmup + steps)
    model = build(cfg, name, data)
    optimiser = make_optimiser(model.parameters(), settings)
    graphed, capture_s = None, 0.0
    if settings.graphs_on(x.device.type):
        from srvae.study.run.graphed import GraphedStep

        graphed, capture_s = timed(lambda: GraphedStep(model, optimiser, settings, x[order[:batch]]), x.device)
    warm, warmup_s = timed(lambda: train_epoch(model, optimiser, x, order[: warmup * batch], 1.0, settings,
                                               graphed=graphed), x.device)
    total, seconds = timed(lambda: train_epoch(model, optimiser, x, order[warmup * batch:], 1.0, settings,
                                               graphed=graphed), x.device)
    return {"images_per_s": steps * batch / seconds, "step_ms": 1000 * seconds / steps, "warmup_s": warmup_s,
            "capture_s": capture_s, "batch": batch, "steps": steps, "parameters": model.num_parameters,
            "mean_objective": float(warm + total) / ((warmup + steps) * batch)}, model


def training_throughput(cfg: StudyConfig, name: str, data: StudyData, batch: int, steps: int, warmup: int,
                        **overrides: Any) -> dict[str, Any]:
    """Training images/s of model ``name`` at batch ``batch``, eager unless ``overrides`` (train settings, e.g.
    ``compile=True``) say otherwise."""
    settings = cfg.train_settings(name).model_copy(update={"batch_size": batch, **overrides})
    result, _ = step_throughput(cfg, name, data, settings, steps, warmup)
    keys = ("images_per_s", "step_ms", "warmup_s", "batch", "steps", "parameters")
    return {key: result[key] for key in keys} | overrides


def graphed_throughput(cfg: StudyConfig, name: str, data: StudyData, batch: int, steps: int,
                       warmup: int) -> dict[str, Any]:
    """Training images/s of model ``name`` with its step replayed from a CUDA graph, and the mean training
    objective over the same batches from the same start in eager mode and graphed (same distribution expected)."""
    settings = cfg.train_settings(name).model_copy(update={"batch_size": batch})
    result, _ = step_throughput(cfg, name, data, settings.model_copy(update={"cuda_graphs": True}), steps, warmup)
    x, order = _batches(data, batch, warmup + steps)
    eager = build(cfg, name, data)  # the same start (seed 0) and the same batches, eager
    eager_total = train_epoch(eager, make_optimiser(eager.parameters(), settings), x, order, 1.0, settings)
    return {"images_per_s": result["images_per_s"], "step_ms": result["step_ms"], "capture_s": result["capture_s"],
            "batch": batch, "steps": steps, "mean_objective_graphed": result["mean_objective"],
            "mean_objective_eager": float(eager_total) / ((steps + warmup) * batch)}


def profile_step(cfg: StudyConfig, name: str, data: StudyData, batch: int, steps: int = 3) -> str:
    """Where a training step of ``name`` spends its time: torch.profiler's top operators (self time)."""
    from torch.profiler import ProfilerActivity, profile

    settings = cfg.train_settings(name).model_copy(update={"batch_size": batch})
    model = build(cfg, name, data)
    optimiser = make_optimiser(model.parameters(), settings)
    x = data.train[: batch * (steps + 1)].bernoulli()
    train_epoch(model, optimiser, x, torch.arange(batch, device=x.device), 1.0, settings)  # warm-up
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if x.is_cuda else [])
    with profile(activities=activities) as prof:
        train_epoch(model, optimiser, x, torch.arange(batch, batch * (steps + 1), device=x.device), 1.0, settings)
        synchronize(x.device)
    sort = "self_cuda_time_total" if x.is_cuda else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=sort, row_limit=15, max_name_column_width=40)
