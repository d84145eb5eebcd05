"""Several seeds of one model trained in one process, their parameters stacked: one set of kernels for all seeds.

The study trains each (model, seed) as its own run (:func:`srvae.study.run.train.train`). On a GPU a Table 1 model at
batch 256 is too small to fill the device: every step is hundreds of small kernel launches. :class:`FusedSeeds`
stacks the parameters and buffers of S models of the same class and config along a new leading dimension
(``torch.func.stack_module_state``) and evaluates the training objective of every seed with one
``torch.func.vmap`` over ``torch.func.functional_call`` of :func:`srvae.study.run.step.objective` — the same code a
separate run executes — so that each kernel does S seeds' work.

What stays per seed, as in S separate runs:

- initial weights: :func:`~srvae.study.run.train.build_run_model` (``torch.manual_seed(seed)``, then the model), as
  ``srvae.study.run.steps.train_run`` builds a run's model, and the model's data-dependent initialisation on its own
  :func:`~srvae.study.run.train.initialisation_batch`;
- data: each seed's generator, seeded and drawn from as ``train()`` does (one dynamic binarisation, then one
  permutation, per epoch), so seed s sees exactly the batches its separate run would;
- reparameterisation noise: ``vmap(randomness="different")`` draws independent noise per seed (from the one
  global stream, so the draws differ from a separate run's but have the same distribution);
- gradients: the seeds' objectives are independent, so the gradient of their sum with respect to seed s's slice
  is seed s's own gradient; clipping (``train.grad_clip``) uses each seed's own global norm;
- optimiser state: Adam and Adamax are elementwise (moments, step size and ε act per entry), so one optimiser
  over the stacked tensors keeps each seed's moments in its own slice: the update equals S separate ones.

The KL warm-up β and the learning-rate schedule follow :func:`~srvae.study.run.step.kl_weight` and
:func:`~srvae.study.run.step.learning_rate`. :meth:`FusedSeeds.models` unstacks into S ordinary models, so
validation, evaluation and checkpoints are the separate runs' code. Models that ``vmap`` cannot batch
(data-dependent shapes or control flow, ``.item()``) are refused with :class:`UnsupportedModelError`.
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from srvae.errors import UserError
from srvae.models import LatentVariableModel
from srvae.registry import build_model

from ..config import StudyConfig, TrainSettings
from ..data.datasets import StudyData
from .graphed import CapturedStep, optimiser_state_tensors
from .speed import synchronize
from .step import apply_gradients, kl_weight, learning_rate, make_optimiser, objective, set_learning_rate
from .train import (
    Progress,
    RunRecord,
    build_run_model,
    captured_step,
    initialisation_batch,
    load_training_checkpoint,
    patience_ran_out,
    restored_progress,
    run_fingerprint,
    save_training_checkpoint,
)

#: model classes whose training objective ``torch.func.vmap`` cannot batch, and why (``test_fused.py`` checks it)
UNFUSABLE_CLASSES = {"sere_maf": "its spline couplings index with data-dependent shapes (aten::nonzero), which "
                                 "torch.func.vmap cannot batch"}


def fuse_refusal(cls: str, settings: TrainSettings) -> str | None:
    """Why seeds of a model of class ``cls`` with these settings cannot be trained as one (None: they can)."""
    if cls in UNFUSABLE_CLASSES:
        return f"class {cls}: {UNFUSABLE_CLASSES[cls]}"
    if settings.polyak_decay is not None:
        return "fused seeds do not implement Polyak averaging (train.polyak_decay)"
    return None


def study_on_cuda(cfg: StudyConfig) -> bool:
    """Whether the study's jobs train on CUDA (``device: cuda``, or ``auto`` where this machine has a GPU)."""
    return cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())


def fused_models(cfg: StudyConfig, cuda: bool, log: Callable[[str], None]) -> list[str]:
    """The study models whose seeds train as one job: ``train.fuse_seeds`` true, or ``auto`` on CUDA for a model
    that can be fused (``log`` says why one cannot); never with a single seed."""
    fused = []
    for name in cfg.study.models:
        settings = cfg.train_settings(name)
        if len(cfg.seeds) < 2 or settings.fuse_seeds is False or (settings.fuse_seeds == "auto" and not cuda):
            continue
        reason = fuse_refusal(cfg.models[name].cls, settings)  # only under auto: the config refuses it for true
        if reason is None:
            fused.append(name)
        else:
            log(f"models.{name}: its seeds train as separate jobs (train.fuse_seeds: auto): {reason}")
    return fused


class UnsupportedModelError(UserError, RuntimeError):
    """The model cannot be trained with fused seeds: ``torch.func.vmap`` fails on its training objective."""


class _Objective(nn.Module):
    """``objective(model, x, β, K)`` as a module's forward, so that ``functional_call`` can swap its weights."""

    def __init__(self, model: LatentVariableModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, beta: float, iw_samples: int) -> Tensor:
        return objective(self.model, x, beta, iw_samples)


def build_seed_models(
    cls: str, params: dict[str, Any] | None, seeds: Sequence[int], data: StudyData, settings: TrainSettings,
    device: torch.device | str,
) -> list[LatentVariableModel]:
    """One model per seed, each built and initialised as its separate run would be (:func:`build_run_model`, then
    ``train()``'s data-dependent initialisation)."""
    models = []
    for seed in seeds:
        model = build_run_model(cls, params, data, seed).to(device)
        model.initialise(initialisation_batch(data, settings.batch_size, seed))
        models.append(model)
    return models


def seed_generators(seeds: Sequence[int], device: torch.device | str) -> list[torch.Generator]:
    """Each seed's data generator, seeded as ``train()`` seeds its run's."""
    return [torch.Generator(device=device).manual_seed(seed) for seed in seeds]


def epoch_data(data: StudyData, generators: Sequence[torch.Generator]) -> tuple[Tensor, Tensor]:
    """Each seed's training images ``[S, N, D]`` and order ``[S, N]`` for one epoch, drawn from its generator in
    ``train()``'s order (the binarisation, then the permutation)."""
    images, orders = [], []
    for generator in generators:
        images.append(data.training_images(generator))
        orders.append(torch.randperm(len(data.train), generator=generator, device=data.train.device))
    return torch.stack(images), torch.stack(orders)


@torch.no_grad()
def clip_grad_norm_per_seed_(grads: Sequence[Tensor], max_norm: float) -> Tensor:
    """``torch.nn.utils.clip_grad_norm_`` applied to each seed's slice (dimension 0) of the stacked ``grads``
    separately; returns each seed's norm before clipping ``[S]``. Stays on the device (no host synchronisation)."""
    norms = torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads]).norm(dim=0)
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)  # clip_grad_norm_'s formula, per seed
    for g in grads:
        g.mul_(scale.view(-1, *(1,) * (g.dim() - 1)))
    return norms


def _attribute_names(model: nn.Module) -> dict[str, str]:
    """One name per module attribute holding a parameter or buffer → the name ``stack_module_state`` stacks it under.

    A module reachable by two paths (SeRe-VAE's bijectors, shared by its generator and inference network) must be
    swapped by ``functional_call`` once: swapped under both names, its second save captures the first swap's
    batched tensor and restores that, leaking it into the module. A parameter held by two modules gets each.
    """
    canonical = {id(t): name for name, t in [*model.named_parameters(), *model.named_buffers()]}
    names, seen = {}, set()
    everything = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    for name, tensor in everything:
        owner, _, attribute = name.rpartition(".")
        key = (id(model.get_submodule(owner)), attribute)
        if key not in seen:
            seen.add(key)
            names[name] = canonical[id(tensor)]
    return names


class FusedSeeds:
    """S models of one class and config trained as one: stacked parameters, one vmapped step, one optimiser.

    ``randomness`` is ``vmap``'s: ``"different"`` (training: independent noise per seed) or ``"same"`` (every
    seed gets the noise a single model would draw from the global stream; the tests use it to compare with
    separate models exactly). ``compile`` wraps the vmapped objective in ``torch.compile``.
    """

    def __init__(
        self, models: Sequence[LatentVariableModel], settings: TrainSettings, name: str = "model",
        randomness: Literal["different", "same"] = "different", compile: bool = False,
    ) -> None:
        first = models[0]
        if any(type(m) is not type(first) or m.cfg != first.cfg or m.data_dim != first.data_dim for m in models):
            raise ValueError(f"{name}: fused seeds must be models of one class and config")
        if settings.polyak_decay is not None:
            raise ValueError(f"{name}: fused seeds do not implement Polyak averaging (train.polyak_decay); "
                             "train this model's seeds separately")
        self.name, self.settings, self.seeds = name, settings, len(models)
        # a private copy whose weights functional_call swaps: the caller's models are never touched
        self._skeleton = _Objective(copy.deepcopy(first)).train()
        self._names = _attribute_names(first)
        self.params, self.buffers = stack_module_state(list(models))
        # elementwise optimisers: each seed's moments live in its own slice of the stacked state
        self.optimiser = make_optimiser(self.params.values(), settings)
        self.graphed: CapturedStep | None = None  # full batches' steps replayed from one CUDA graph (capture())
        objectives = vmap(self._objective, in_dims=(0, 0, 0, None), randomness=randomness)
        self._objectives = torch.compile(objectives) if compile else objectives
        self._check_vmappable(first)

    def _objective(self, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor, beta: float) -> Tensor:
        stacked = params | buffers
        weights = {f"model.{name}": stacked[canonical] for name, canonical in self._names.items()}
        return functional_call(self._skeleton, weights, (x, beta, self.settings.iw_samples), tie_weights=False)

    def _check_vmappable(self, model: LatentVariableModel) -> None:
        """One objective and gradient on a dummy batch, on copies and a forked random stream (no side effects),
        so that a model vmap cannot batch fails here, with a message that says what to do."""
        device = next(iter(self.params.values())).device
        x = torch.zeros(self.seeds, 2, model.data_dim, device=device)
        buffers = {k: v.clone() for k, v in self.buffers.items()}  # batch norm would update the real ones
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            try:
                out = self._objectives(self.params, buffers, x, 1.0)
                torch.autograd.grad(out.sum(), list(self.params.values()), allow_unused=True)
            except (RuntimeError, NotImplementedError) as e:
                reason = str(e).strip().splitlines()[0]
                raise UnsupportedModelError(
                    f"{self.name} ({type(model).__name__}) cannot be trained with fused seeds: torch.func.vmap "
                    f"fails on its training objective: {reason}. Train its seeds as separate runs, or make the "
                    "model vmap-compatible (no data-dependent shapes or Python control flow on tensor values, "
                    "no .item(), no in-place writes to tensors that are not its parameters or buffers)."
                ) from e

    def step(self, x: Tensor, beta: Tensor | float) -> Tensor:
        """One update of every seed on its batch ``x[s]`` (``x``: ``[S, B, D]``); each seed's summed objective ``[S]``."""
        obj = self._objectives(self.params, self.buffers, x, beta)  # [S, B]
        loss = -obj.mean(1).sum()  # seeds are independent: the gradient of seed s's slice is its own loss's
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        if self.settings.grad_clip is not None:
            grads = [p.grad for p in self.params.values() if p.grad is not None]
            clip_grad_norm_per_seed_(grads, self.settings.grad_clip)
        if self.settings.grad_clip_value is not None:  # entry by entry: the same in every seed's slice
            torch.nn.utils.clip_grad_value_(list(self.params.values()), self.settings.grad_clip_value)
        self.optimiser.step()
        return obj.detach().sum(1)

    def train_epoch(self, x: Tensor, order: Tensor, epoch: int) -> Tensor:
        """One pass of every seed over its images ``x[s]`` in ``order[s]`` (:func:`epoch_data`) at (0-based)
        ``epoch``'s learning rate and KL weight, as ``train()``; each seed's summed objective ``[S]``, on the device."""
        set_learning_rate(self.optimiser, learning_rate(epoch, self.settings))
        beta = kl_weight(epoch, self.settings.kl_warmup_epochs)
        rows = torch.arange(self.seeds, device=x.device).unsqueeze(1)
        total = torch.zeros(self.seeds, device=x.device)
        for idx in order.split(self.settings.batch_size, dim=1):
            full = self.graphed is not None and idx.shape[1] == self.settings.batch_size
            total += (self.graphed if full else self.step)(x[rows, idx], beta)
        return total

    def capture(self, first_batch: Tensor) -> CapturedStep:
        """Every seed's step captured as one CUDA graph, for :attr:`graphed` (full batches ``[S, batch_size, D]``;
        the optimiser is capturable where the settings ask for graphs on CUDA); raises where capture fails."""
        return CapturedStep(self.step, self._tensors, self.optimiser, first_batch)

    def _tensors(self) -> list[Tensor]:
        return [*self.params.values(), *self.buffers.values(), *optimiser_state_tensors(self.optimiser)]

    def optimiser_states(self) -> list[dict[str, Any]]:
        """Each seed's slice of the optimiser's state, as the ``state_dict`` of its separate run's optimiser (the
        stacked parameters are in the order of a model's ``parameters()``; the step count is every seed's)."""
        full = self.optimiser.state_dict()
        return [{"state": {i: {k: v if k == "step" else v[s] for k, v in state.items()}
                           for i, state in full["state"].items()},
                 "param_groups": full["param_groups"]} for s in range(self.seeds)]

    def load_optimiser_states(self, states: Sequence[dict[str, Any]]) -> None:
        """The inverse of :meth:`optimiser_states`: each seed's optimiser state into its slice."""
        first = states[0]
        self.optimiser.load_state_dict({
            "state": {i: {k: v if k == "step" else torch.stack([s["state"][i][k] for s in states])
                          for k, v in state.items()} for i, state in first["state"].items()},
            "param_groups": first["param_groups"]})

    @torch.no_grad()
    def models(self) -> list[LatentVariableModel]:
        """The S seeds as ordinary models (copies), for validation, evaluation and checkpoints."""
        stacked, unstacked = self.params | self.buffers, []
        for s in range(self.seeds):
            model = copy.deepcopy(self._skeleton.model)
            for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
                tensor.copy_(stacked[name][s])
            unstacked.append(model)
        return unstacked

    def state_dicts(self) -> list[dict[str, Tensor]]:
        """Each seed's ``state_dict``, as its separate run's model would have it."""
        return [model.state_dict() for model in self.models()]


def _resume_all(
    paths: Sequence[Path], fingerprints: Sequence[dict[str, Any]], models: Sequence[LatentVariableModel],
    generators: Sequence[torch.Generator], settings: TrainSettings, log: Callable[[str], None], name: str,
) -> tuple[list[Progress], list[dict[str, Any]] | None]:
    """Every seed's progress and optimiser state from its checkpoint, the weights loaded into its model, where
    every seed has a checkpoint of this fused job and the seeds still training stopped after the same epoch;
    else fresh progress (and None)."""
    ckpts = [load_training_checkpoint(p, f, generators[0].device, log, name) for p, f in zip(paths, fingerprints)]
    if any(c is None for c in ckpts):
        return [Progress() for _ in models], None

    last = max(c["epoch"] for c in ckpts)
    if any(c["epoch"] != last and not patience_ran_out(c["epoch"], c["best"]["epoch"], settings) for c in ckpts):
        log(f"{name}: the seeds' checkpoints stopped after different epochs; starting afresh")
        return [Progress() for _ in models], None
    for model, ckpt in zip(models, ckpts):
        model.load_state_dict(ckpt["model"])
    log(f"{name}: resuming every seed from its checkpoint after epoch {last}")
    return [restored_progress(c, g) for c, g in zip(ckpts, generators)], [c["optimiser"] for c in ckpts]


def train_fused(
    models: Sequence[LatentVariableModel], data: StudyData, settings: TrainSettings, seeds: Sequence[int],
    checkpoint_paths: Sequence[Path], names: Sequence[str],
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True),
    identity: dict[str, Any] | None = None, on_epoch: Sequence[Callable[[str], None]] | None = None,
) -> list[dict[str, Any]]:
    """:func:`~srvae.study.run.train.train` for every seed at once: ``models`` (from :func:`build_seed_models`)
    trained as one :class:`FusedSeeds`, each seed validated, selected, stopped early, checkpointed (in its own
    ``checkpoint_paths[s]``) and reported as its separate run is; each model gets its best weights, and the
    result is each seed's ``train()`` result. Every seed's ``train_seconds`` is its share of the joint training
    passes (the job's time over S) plus its own validations. With ``settings.graphs_on`` the fused step is
    replayed from one CUDA graph (or, where capture fails, eagerly with a warning)."""
    device = data.train.device
    generators = seed_generators(seeds, device)
    fingerprints = [run_fingerprint(settings, seed, name, identity, model) | {"fused": list(seeds)}
                    for seed, name, model in zip(seeds, names, models)]
    job = f"{names[0]} (fused seeds {', '.join(map(str, seeds))})"
    progresses, optimiser_states = _resume_all(checkpoint_paths, fingerprints, models, generators, settings, log, job)
    fused = FusedSeeds(models, settings, name=job, compile=settings.compile)
    if optimiser_states is not None:
        fused.load_optimiser_states(optimiser_states)
    if settings.graphs_on(device.type):
        first = torch.stack([initialisation_batch(data, settings.batch_size, seed + 1) for seed in seeds])
        fused.graphed = captured_step(lambda: fused.capture(first), job, device)
    records = [RunRecord(name, seed, data, settings, progress, log, None if on_epoch is None else on_epoch[s])
               for s, (name, seed, progress) in enumerate(zip(names, seeds, progresses))]
    n = len(data.train)
    for epoch in range(max(p.epoch for p in progresses), settings.total_epochs):
        t0 = time.perf_counter()
        x, order = epoch_data(data, generators)
        totals = fused.train_epoch(x, order, epoch).tolist()  # one host synchronisation per epoch
        seconds = (time.perf_counter() - t0) / len(seeds)
        lr, beta = learning_rate(epoch, settings), kl_weight(epoch, settings.kl_warmup_epochs)
        for s, (record, model) in enumerate(zip(records, fused.models())):
            if not record.stopped:  # a seed that stopped early keeps its record (its slice trains on, unread)
                record.end_epoch(epoch, totals[s] / n, model, x[s], beta, lr, seconds)
        if all(record.stopped for record in records):
            break
        if (epoch + 1) % settings.checkpoint_every == 0 and epoch + 1 < settings.total_epochs:
            for path, fingerprint, record, state, optimiser_state, generator in zip(
                    checkpoint_paths, fingerprints, records, fused.state_dicts(), fused.optimiser_states(),
                    generators):
                save_training_checkpoint(path, fingerprint, record.progress, state, optimiser_state, generator)
    return [record.result(model) for record, model in zip(records, models)]


def _images_per_s(step: Any, images: int, steps: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return images * steps / (time.perf_counter() - start)


def fused_throughput(
    cfg: StudyConfig, model_name: str, seeds: int = 3, batch_size: int = 256, steps: int = 20,
    device: torch.device | str = "cuda", compile: bool = False, warmup: int = 3,
) -> dict[str, Any]:
    """Training images per second of ``seeds`` seeds of config model ``model_name``: fused (:class:`FusedSeeds`)
    and as separate models stepped one after another in a loop (each with its own Adam), on the same synthetic
    binary batches (every Table 1 model is binary). Both at ``β = 1`` with the model's ``train:`` settings."""
    entry, settings = cfg.models[model_name], cfg.train_settings(model_name)
    settings = settings.model_copy(update={"batch_size": batch_size})
    device = torch.device(device)
    models = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        models.append(build_model(entry.cls, entry.params, 784, torch.full((784,), 0.2)).to(device).train())
    x = torch.bernoulli(torch.full((seeds, batch_size, 784), 0.2, device=device))

    fused = FusedSeeds(models, settings, name=model_name, compile=compile)
    fused_rate = _images_per_s(lambda: fused.step(x, 1.0), seeds * batch_size, steps, warmup, device)

    optimisers = [make_optimiser(m.parameters(), settings) for m in models]  # each as train() builds a run's
    losses = [torch.compile(objective) if compile else objective for _ in models]  # one compiled graph per model

    def separate_step() -> None:
        for s, (model, optimiser) in enumerate(zip(models, optimisers)):
            loss = -losses[s](model, x[s], 1.0, settings.iw_samples).mean()
            optimiser.zero_grad(set_to_none=True)
            apply_gradients(model, optimiser, loss, settings)

    separate_rate = _images_per_s(separate_step, seeds * batch_size, steps, warmup, device)
    return {"model": model_name, "seeds": seeds, "batch_size": batch_size, "steps": steps, "device": str(device),
            "compile": compile, "threads": torch.get_num_threads(),
            "fused_images_per_s": fused_rate, "fused_images_per_s_per_seed": fused_rate / seeds,
            "separate_images_per_s": separate_rate, "separate_images_per_s_per_seed": separate_rate / seeds,
            "speedup": fused_rate / separate_rate}
