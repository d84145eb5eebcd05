"""The training loop, written once for every model: the training step of :mod:`.step` over each epoch's
training images (a fresh binarisation, or the fixed dequantised set), with an optional learning-rate schedule
and fine-tuning phase, the model's data-dependent initialisation before the first update, optional Polyak
averaging of the weights (validated, selected and returned in place of the last weights), model selection on the
validation ELBO or its importance-weighted bound with optional early stopping, and periodic atomic checkpoints
from which an interrupted run resumes exactly where it stopped (same weights, averaged weights, optimiser state
and random streams). ``train.cuda_graphs`` replays full batches' steps from a CUDA graph (:mod:`.graphed`).
"""

from __future__ import annotations

import copy
import math
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from srvae.errors import UserError
from srvae.infra.atomic_io import load_checkpoint, save_checkpoint
from srvae.models import LatentVariableModel, training_mode
from srvae.registry import build_model

from ..config import TrainSettings
from ..data.datasets import StudyData
from .evaluate import iw_log_likelihood
from .graphed import GraphedStep
from .progress import duration, eta
from .step import (
    COMPILED_LOSS,
    apply_gradients,
    batch_loss,
    global_rng_state,
    kl_weight,
    learning_rate,
    make_optimiser,
    set_global_rng_state,
    set_learning_rate,
)


class TrainingDivergedError(UserError, RuntimeError):
    """Training diverged: its objective became NaN or infinite, or its bound is worse than ignoring the data."""


def _worse_than_floor(name: str, seed: int, bound: float, epoch: int, data: StudyData) -> str:
    return (f"{name}, seed {seed}: the validation bound is {bound:.6g} nats at epoch {epoch}, worse than "
            f"{data.floor_name} ({data.divergence_floor:.1f} nats): training diverged. Lower train.lr, set "
            f"train.grad_clip or a KL warm-up for this model, then rerun.")


@torch.no_grad()
def mean_elbo(model: LatentVariableModel, x: Tensor, batch_size: int) -> float:
    """Mean single-sample ELBO over ``x`` (eval mode)."""
    with training_mode(model, False):
        total = sum(model.elbo_terms(xb).elbo.sum() for xb in x.split(batch_size))
    return float(total) / len(x)


def validate(model: LatentVariableModel, x: Tensor, settings: TrainSettings) -> dict[str, float]:
    """The validation metrics of one epoch: the ELBO, and with ``selection: iw`` the K-sample bound too.

    The importance-weighted bound draws K samples for ``eval_batch_size // K`` examples at a time, so that it
    needs no more memory than the ELBO pass.
    """
    metrics = {"valid_elbo": mean_elbo(model, x, settings.eval_batch_size)}
    if settings.selection == "iw":
        k = settings.selection_k
        metrics["valid_iw"] = -iw_log_likelihood(model, x, k, k, max(1, settings.eval_batch_size // k)).nll
    return metrics


class WeightAverage:
    """Polyak averaging: a copy of the model whose weights follow ``w̄ ← d · w̄ + (1 − d) · w`` after every update.

    Kingma et al. (2016) evaluate their ResNet VAE with such an average (decay 0.999 in their code). Buffers
    (batch-norm statistics, the weight-normalisation flags) are copied, not averaged.
    """

    def __init__(self, model: LatentVariableModel, decay: float) -> None:
        self.module = copy.deepcopy(model).requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model: LatentVariableModel) -> None:
        for average, weight in zip(self.module.parameters(), model.parameters()):
            average.lerp_(weight, 1.0 - self.decay)
        for average, buffer in zip(self.module.buffers(), model.buffers()):
            average.copy_(buffer)


def build_run_model(cls: str, params: dict[str, Any] | None, data: StudyData, seed: int) -> LatentVariableModel:
    """A run's model, on the data's device: ``torch.manual_seed(seed)`` first (its initial weights, and the
    reparameterisation noise that follows; the data's noise has its own generator), then built with the training
    set's pixel means."""
    torch.manual_seed(seed)
    return build_model(cls, params, data.data_dim, data.train.mean(0)).to(data.train.device)


def initialisation_batch(data: StudyData, batch_size: int, seed: int) -> Tensor:
    """A training minibatch for the model's data-dependent initialisation, drawn from a generator of its
    own so that the run's data stream is the same with or without it."""
    generator = torch.Generator(device=data.train.device).manual_seed(seed)
    x = data.training_images(generator)
    return x[torch.randperm(len(x), generator=generator, device=x.device)[:batch_size]]


def train_epoch(
    model: LatentVariableModel, optimiser: torch.optim.Optimizer, x: Tensor, order: Tensor, beta: float,
    settings: TrainSettings, averaged: WeightAverage | None = None, graphed: GraphedStep | None = None,
) -> Tensor:
    """One pass over the binarised training images ``x`` in the given ``order``; the summed objective.

    ``averaged`` (Polyak averaging) is updated after every step. The sum stays on the device: no host
    synchronisation inside the step. With ``settings.compile`` the loss is :data:`COMPILED_LOSS`, β a tensor.
    ``graphed``: full batches replay this captured step (an epoch's last, smaller batch steps eagerly).
    """
    model.train()
    total = torch.zeros((), device=x.device)
    loss_of = COMPILED_LOSS if settings.compile else batch_loss
    beta_in = torch.tensor(beta, dtype=x.dtype, device=x.device) if settings.compile else beta  # no recompiling
    for idx in order.split(settings.batch_size):
        if graphed is not None and len(idx) == settings.batch_size:
            total += graphed(x[idx], beta)
        else:
            loss, batch_total = loss_of(model, x[idx], beta_in, settings.iw_samples)
            optimiser.zero_grad(set_to_none=True)
            apply_gradients(model, optimiser, loss, settings)
            total += batch_total
        if averaged is not None:
            averaged.update(model)
    return total


@dataclass
class Progress:
    """What a checkpoint restores besides weights, optimiser and random streams."""

    epoch: int = 0  # epochs completed
    metrics: list[dict[str, float]] = field(default_factory=list)
    elapsed: float = 0.0  # training seconds so far
    best: dict[str, Any] = field(default_factory=lambda: {"value": -math.inf, "epoch": -1, "state": None})
    averaged: dict[str, Tensor] | None = None  # the Polyak-averaged weights, when averaging


def _rng_state(generator: torch.Generator) -> dict[str, Tensor]:
    state = {"torch": torch.get_rng_state(), "data": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Tensor], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["data"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_training_checkpoint(
    path: Path, fingerprint: dict[str, Any], progress: Progress, model_state: dict[str, Tensor],
    optimiser_state: dict[str, Any], generator: torch.Generator, averaged: WeightAverage | None = None,
) -> None:
    """Everything needed to continue exactly where training stopped, written atomically."""
    save_checkpoint(path, {
        "fingerprint": fingerprint, "epoch": progress.epoch, "model": model_state,
        "optimiser": optimiser_state, "rng": _rng_state(generator),
        "metrics": progress.metrics, "elapsed": progress.elapsed, "best": progress.best,
        "averaged": None if averaged is None else averaged.module.state_dict(),
    })


def load_training_checkpoint(
    path: Path, fingerprint: dict[str, Any], device: torch.device, log: Callable[[str], None], name: str,
) -> dict[str, Any] | None:
    """The checkpoint in ``path`` if it is one of this very run (the same ``fingerprint``), else None."""
    if not path.exists():
        return None
    ckpt = load_checkpoint(path, map_location=device)
    if ckpt["fingerprint"] != fingerprint:
        log(f"{name}: ignoring {path}: it belongs to other settings; starting afresh")
        return None
    return ckpt


def restored_progress(ckpt: dict[str, Any], generator: torch.Generator) -> Progress:
    """The progress a checkpoint holds; restores the random streams it saved."""
    _set_rng_state(ckpt["rng"], generator)
    return Progress(ckpt["epoch"], ckpt["metrics"], ckpt["elapsed"], ckpt["best"], ckpt["averaged"])


def resume(
    path: Path, fingerprint: dict[str, Any], model: LatentVariableModel, optimiser: torch.optim.Optimizer,
    generator: torch.Generator, log: Callable[[str], None], name: str,
) -> Progress:
    """Restore model, optimiser and random streams from ``path`` if it holds a checkpoint of this very run."""
    ckpt = load_training_checkpoint(path, fingerprint, model.device, log, name)
    if ckpt is None:
        return Progress()
    model.load_state_dict(ckpt["model"])
    optimiser.load_state_dict(ckpt["optimiser"])
    log(f"{name}: resuming from {path} after epoch {ckpt['epoch']}")
    return restored_progress(ckpt, generator)


def run_fingerprint(settings: TrainSettings, seed: int, name: str, identity: dict[str, Any] | None,
                    model: LatentVariableModel) -> dict[str, Any]:
    """What makes a checkpoint this run's: settings, seed, name, identity and the parameters' shapes."""
    return {"settings": settings.model_dump(), "seed": seed, "name": name, "identity": identity or {},
            "parameters": {k: list(v.shape) for k, v in model.state_dict().items()}}


def patience_ran_out(epochs: int, best_epoch: int, settings: TrainSettings) -> bool:
    """Early stopping: ``settings.patience`` epochs without a better validation value after ``epochs`` epochs."""
    return epochs > 0 and settings.patience is not None and epochs - best_epoch >= settings.patience


class RunRecord:
    """One run's bookkeeping after each epoch's training pass, shared by :func:`train` and fused seeds
    (:func:`srvae.study.run.fused.train_fused`): the divergence checks, validation (after refreshing batch-norm
    statistics where asked), the best-so-far weights, the per-epoch metrics, progress reports and log lines,
    and early stopping."""

    def __init__(self, name: str, seed: int, data: StudyData, settings: TrainSettings, progress: Progress,
                 log: Callable[[str], None], on_epoch: Callable[[str], None] | None = None,
                 after_epoch: Callable[[int, dict[str, Any]], None] | None = None) -> None:
        self.name, self.seed, self.data, self.settings, self.progress = name, seed, data, settings, progress
        self.log, self.on_epoch, self.after_epoch = log, on_epoch, after_epoch
        self.selected = "valid_iw" if settings.selection == "iw" else "valid_elbo"
        self.stopped = patience_ran_out(progress.epoch, progress.best["epoch"], settings)  # early stopping
        self.interactive = sys.stderr.isatty()

    def end_epoch(self, epoch: int, train_objective: float, evaluated: LatentVariableModel, x_epoch: Tensor,
                  beta: float, lr: float, seconds: float) -> str:
        """Record (0-based) ``epoch``, whose training pass took ``seconds`` and reached ``train_objective`` (per
        image), validating ``evaluated``; returns the epoch's progress line. Sets :attr:`stopped` on early stopping."""
        name, seed, settings, progress = self.name, self.seed, self.settings, self.progress
        if not math.isfinite(train_objective):
            raise TrainingDivergedError(
                f"{name}, seed {seed}: training objective is {train_objective} at epoch {epoch + 1}. "
                f"Lower train.lr, set train.grad_clip or a KL warm-up for this model, then rerun."
            )
        t0 = time.perf_counter()
        if settings.refresh_statistics:  # the MAF code's protocol: training-set statistics for validation too
            evaluated.refresh_statistics(x_epoch.split(settings.eval_batch_size))
        valid = validate(evaluated, self.data.valid, settings)
        if valid[self.selected] < self.data.divergence_floor < progress.best["value"]:  # it did better before
            raise TrainingDivergedError(_worse_than_floor(name, seed, valid[self.selected], epoch + 1, self.data))
        progress.elapsed += seconds + time.perf_counter() - t0
        progress.epoch = epoch + 1
        if valid[self.selected] > progress.best["value"]:
            progress.best = {"value": valid[self.selected], "epoch": epoch + 1,
                             "state": copy.deepcopy(evaluated.state_dict())}
        progress.metrics.append({"epoch": epoch + 1, "train_elbo": train_objective, **valid,
                                 "beta": beta, "lr": lr, "seconds": progress.elapsed})
        total_epochs = settings.total_epochs
        left = eta(epoch + 1, total_epochs, progress.elapsed)
        message = (f"epoch {epoch + 1}/{total_epochs} train {train_objective:.2f} "
                   + " ".join(f"{key.replace('_', ' ')} {value:.2f}" for key, value in valid.items())
                   + f", best {progress.best['value']:.2f} (epoch {progress.best['epoch']}), "
                   f"{duration(progress.elapsed)}, ETA {duration(left)}")
        if self.on_epoch is not None:
            self.on_epoch(message)
        if self.after_epoch is not None:
            self.after_epoch(progress.epoch, progress.best)
        if not self.interactive and ((epoch + 1) % settings.log_every == 0 or epoch + 1 == total_epochs):
            self.log(f"{name}: {message}")
        if patience_ran_out(epoch + 1, progress.best["epoch"], settings):
            self.log(f"{name}: no better validation value for {settings.patience} epochs: stopping early after "
                     f"epoch {epoch + 1} (best: epoch {progress.best['epoch']})")
            self.stopped = True
        return message

    def result(self, model: LatentVariableModel) -> dict[str, Any]:
        """Load the best-on-validation weights into ``model``; the run's result (see :func:`train`)."""
        best = self.progress.best
        if best["value"] < self.data.divergence_floor:  # never better than the trivial model of the data
            raise TrainingDivergedError(_worse_than_floor(self.name, self.seed, best["value"], best["epoch"], self.data))
        if best["state"] is not None:
            model.load_state_dict(best["state"])
        k = self.settings.selection_k if self.settings.selection == "iw" else 1
        return {"metrics": self.progress.metrics, "best_epoch": best["epoch"], "train_seconds": self.progress.elapsed,
                "selection": {"metric": self.selected, "k": k}}


def captured_step(capture: Callable[[], Any], name: str, device: torch.device) -> Any:
    """``capture()`` (a CUDA graph's capture on ``device``), or None, with one warning, where it fails: the run
    then trains eagerly from the random state the capture started from."""
    state = global_rng_state(device)
    try:
        return capture()
    except Exception as error:  # a genuine error in the model is raised again by the first eager step
        warnings.warn(f"{name}: capturing the training step as a CUDA graph failed, training eagerly "
                      f"(train.cuda_graphs: false hides this warning): {type(error).__name__}: {error}", stacklevel=2)
        set_global_rng_state(device, state)
        return None


def train(
    model: LatentVariableModel,
    data: StudyData,
    settings: TrainSettings,
    seed: int,
    checkpoint_path: Path,
    name: str = "model",
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True),
    identity: dict[str, Any] | None = None,
    on_epoch: Callable[[str], None] | None = None,
    after_epoch: Callable[[int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train ``model`` on ``data`` (already on the model's device) and load the best-on-validation weights (the
    averaged weights, with ``settings.polyak_decay``).

    Resumes from ``checkpoint_path`` when it holds a checkpoint of this very run: the same settings, seed,
    name and ``identity`` (everything else that defines the run: model class and hyper-parameters, dataset
    entry, data dimension). ``on_epoch`` receives a one-line progress report after every epoch; ``after_epoch``
    receives the epochs done and the best-so-far record ``{"value", "epoch", "state"}`` (never mutated later),
    which is what a run of that many epochs would return (the schedules depend on the epoch, not on the epoch
    count): a budget study reads shorter runs off a longer one.
    Returns ``{"metrics": [per-epoch dicts], "best_epoch", "train_seconds", "selection"}``.
    """
    device = model.device
    generator = torch.Generator(device=device).manual_seed(seed)
    optimiser = make_optimiser(model.parameters(), settings)
    fingerprint = run_fingerprint(settings, seed, name, identity, model)
    progress = resume(checkpoint_path, fingerprint, model, optimiser, generator, log, name)
    if progress.epoch == 0:  # a fresh start: a resumed model keeps its (saved) initialisation
        model.initialise(initialisation_batch(data, settings.batch_size, seed))
    averaged = None if settings.polyak_decay is None else WeightAverage(model, settings.polyak_decay)
    if averaged is not None and progress.averaged is not None:
        averaged.module.load_state_dict(progress.averaged)
    evaluated = model if averaged is None else averaged.module  # the weights validated, selected and returned
    graphed = None
    if settings.graphs_on(device.type):
        first_batch = initialisation_batch(data, settings.batch_size, seed + 1)
        graphed = captured_step(lambda: GraphedStep(model, optimiser, settings, first_batch), name, device)

    n = len(data.train)
    record = RunRecord(name, seed, data, settings, progress, log, on_epoch, after_epoch)
    total_epochs = settings.total_epochs
    epochs = tqdm(range(progress.epoch, total_epochs), desc=name, disable=not record.interactive,
                  initial=progress.epoch, total=total_epochs)
    for epoch in epochs:
        t0 = time.perf_counter()
        lr = learning_rate(epoch, settings)
        set_learning_rate(optimiser, lr)
        beta = kl_weight(epoch, settings.kl_warmup_epochs)
        x_epoch = data.training_images(generator)
        order = torch.randperm(n, generator=generator, device=device)
        train_objective = float(train_epoch(model, optimiser, x_epoch, order, beta, settings, averaged, graphed)) / n
        message = record.end_epoch(epoch, train_objective, evaluated, x_epoch, beta, lr, time.perf_counter() - t0)
        if record.interactive:
            epochs.set_postfix_str(message.split(" ", 2)[2])
        if record.stopped:
            break
        if (epoch + 1) % settings.checkpoint_every == 0 and epoch + 1 < total_epochs:
            save_training_checkpoint(checkpoint_path, fingerprint, progress, model.state_dict(),
                                     optimiser.state_dict(), generator, averaged)
    return record.result(model)
