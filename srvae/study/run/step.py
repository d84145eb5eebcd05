"""One training step, written once for the loop, CUDA-graph replay and fused seeds: the objective (the
single-sample ELBO, or the importance-weighted bound of Burda et al. 2016; an exact log-likelihood for a flow)
with its KL weight β, the batch loss, the backward pass with the gradients' norm cap and the optimiser update,
the optimiser itself (Adam or Adamax, Kingma & Ba 2015) and the schedules of β and the learning rate.

``train.compile`` (opt-in) compiles :func:`batch_loss` with ``torch.compile`` (:data:`COMPILED_LOSS`; Inductor
fuses the model's many small element-wise operations: the sequential chain of SeRe-VAE's layers, the
log-densities). β enters the compiled objective as a tensor, so that the warm-up does not recompile every epoch;
each model and batch size compiles once. Where compilation is unavailable or fails (no C++ compiler, an
unsupported Python or platform), training warns once and runs eagerly, from the same random state. Compiled code
draws its Gaussian noise with Inductor's own generator: seeded from PyTorch's, so a compiled run is reproducible,
but not the same draws as an eager run of the same seed.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from srvae.models import LatentVariableModel

from ..config import TrainSettings

#: Burda et al. (2016): stage i = 0..7 lasts 3^i epochs at lr × 10^(−i/7)
BURDA_STAGES = 8


#: ``train.optimizer`` → optimiser class (both take ``lr`` and ``eps``)
OPTIMISERS: dict[str, type[torch.optim.Optimizer]] = {"adam": torch.optim.Adam, "adamax": torch.optim.Adamax}


def kl_weight(epoch: int, warmup_epochs: int) -> float:
    """Deterministic warm-up β for (0-based) ``epoch``: linear from 0 to 1 over ``warmup_epochs``."""
    return 1.0 if warmup_epochs <= 0 else min(1.0, epoch / warmup_epochs)


def learning_rate(epoch: int, settings: TrainSettings) -> float:
    """The learning rate of (0-based) ``epoch`` under ``settings``' schedule and fine-tuning phase."""
    if epoch >= settings.epochs:  # fine-tuning: continued training at a lower rate
        return settings.lr * settings.finetune_lr_factor
    if settings.lr_schedule == "exponential":
        return settings.lr * settings.lr_decay**epoch
    if settings.lr_schedule == "burda":
        stage, end = 0, 1
        while epoch >= end and stage < BURDA_STAGES - 1:  # stage i ends after 3^0 + … + 3^i epochs
            stage += 1
            end += 3**stage
        return settings.lr * 10 ** (-stage / 7)
    return settings.lr


def objective(model: LatentVariableModel, x: Tensor, beta: float, iw_samples: int) -> Tensor:
    """Per-example training objective to maximise.

    ``iw_samples == 1``: the ELBO ``E_q[log p(x|z)] − β KL``; otherwise the importance-weighted bound
    ``log (1/K) Σ_k exp(log p(x|z_k) + β (log p(z_k) − log q(z_k|x)))``.
    """
    if iw_samples == 1:
        terms = model.elbo_terms(x)
        return terms.reconstruction - beta * terms.kl
    s = model.score(x, iw_samples)
    log_w = s.log_likelihood + beta * (s.log_prior - s.log_posterior)
    return torch.logsumexp(log_w, dim=0) - math.log(iw_samples)


def batch_loss(model: LatentVariableModel, x: Tensor, beta: Tensor | float, iw_samples: int) -> tuple[Tensor, Tensor]:
    """The loss of a training step (the negated mean objective) and the batch's summed objective, detached."""
    obj = objective(model, x, beta, iw_samples)
    return -obj.mean(), obj.detach().sum()


class CompiledLoss:
    """:func:`batch_loss` compiled by ``torch.compile`` (forward and backward), once per process: Dynamo keeps a
    graph per model and batch size. If compiling fails, it warns and computes eagerly for good, replaying the
    random state the failed call started from."""

    def __init__(self) -> None:
        self.compiled: Callable[..., tuple[Tensor, Tensor]] | None = None
        self.failed = False

    def __call__(self, model: LatentVariableModel, x: Tensor, beta: Tensor, iw_samples: int) -> tuple[Tensor, Tensor]:
        if self.failed:
            return batch_loss(model, x, beta, iw_samples)
        if self.compiled is None:
            self.compiled = torch.compile(batch_loss, dynamic=False)
        state = global_rng_state(x.device)
        try:
            return self.compiled(model, x, beta, iw_samples)
        except Exception as error:  # a genuine error in the model is raised again by the eager call below
            warnings.warn(f"torch.compile failed, training eagerly: {type(error).__name__}: {error}", stacklevel=3)
            self.failed = True
            set_global_rng_state(x.device, state)
            return batch_loss(model, x, beta, iw_samples)


#: the compiled training loss of ``train.compile``
COMPILED_LOSS = CompiledLoss()


def global_rng_state(device: torch.device) -> tuple[Tensor, Tensor | None]:
    """The global random state a step on ``device`` draws from: the CPU's, and the device's where it is CUDA."""
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def set_global_rng_state(device: torch.device, state: tuple[Tensor, Tensor | None]) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def make_optimiser(params: Iterable[Tensor], settings: TrainSettings) -> torch.optim.Optimizer:
    """``train.optimizer`` over ``params`` with the settings' learning rate, ε and L2 penalty. Adam is the fused
    kernel where this PyTorch has it (CPU since 2.4, CUDA): the same update in one pass over the parameters instead
    of foreach Adam's ten or so, which on CPU are bound by memory bandwidth (4.3 → 1.4 ms a step for the 2.78M
    parameters of ``sere_vae_table1`` on 2 threads; foreach's update was a sixth of the eager step). Otherwise,
    and for Adamax (no fused kernel), foreach: one update over all tensors (PyTorch otherwise loops per tensor on
    CPU). Where the run replays CUDA graphs (:meth:`TrainSettings.graphs_on`): the capturable foreach form, its
    learning rate a tensor."""
    params = list(params)
    device = params[0].device
    kwargs = {"lr": settings.lr, "eps": settings.adam_eps, "weight_decay": settings.weight_decay}
    if settings.graphs_on(device.type):  # a step in a CUDA graph reads the rate from a tensor
        kwargs["lr"] = torch.tensor(settings.lr, device=device)
        return OPTIMISERS[settings.optimizer](params, foreach=True, capturable=True, **kwargs)
    if settings.optimizer == "adam":
        try:
            return torch.optim.Adam(params, fused=True, **kwargs)
        except RuntimeError:  # a device without a fused kernel
            pass
    return OPTIMISERS[settings.optimizer](params, foreach=True, **kwargs)


def set_learning_rate(optimiser: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's learning rate: in place where it is a tensor (a captured step reads that tensor)."""
    for group in optimiser.param_groups:
        if isinstance(group["lr"], Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


def apply_gradients(model: LatentVariableModel, optimiser: torch.optim.Optimizer, loss: Tensor,
                    settings: TrainSettings) -> None:
    """``loss.backward()``, the gradients' global norm capped at ``settings.grad_clip``, then each entry clipped to
    ``±settings.grad_clip_value`` (the Ladder VAE code's order; None: no cap), one optimiser step."""
    loss.backward()
    if settings.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
    if settings.grad_clip_value is not None:
        torch.nn.utils.clip_grad_value_(model.parameters(), settings.grad_clip_value)
    optimiser.step()
