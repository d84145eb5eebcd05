"""The fast path of a training step: a fused Adam, and the objective compiled with ``torch.compile``.

:mod:`srvae.study.train` builds ``torch.optim.Adam(..., foreach=True)`` and runs the model eagerly. Neither
changes what a step computes here:

- :func:`make_adam` — the same Adam, ``fused=True`` where this PyTorch has it (CPU since 2.4, CUDA): one pass over
  the parameters instead of foreach Adam's ten or so, which on CPU are bound by memory bandwidth (the paper-size
  SeRe-VAE's 2.78M parameters and their moments do not fit in cache).
- :class:`TrainingStep` — objective → backward → gradient clipping → optimiser step on one batch, with the
  objective (:func:`srvae.study.train.objective`, forward and backward) compiled by ``torch.compile`` when
  asked: Inductor fuses the model's many small element-wise operations (the sequential chain of SeRe-VAE's
  layers, the log-densities) into a few kernels. The KL weight β enters as a tensor, so that the warm-up does
  not recompile every epoch; each batch size compiles once (the last, smaller batch of an epoch too). Where
  compilation is unavailable or fails (no C++ compiler, an unsupported Python or platform), the step warns once
  and runs eagerly, from the same random state.

Compiled code draws its Gaussian noise with Inductor's own generator: seeded from PyTorch's, so a compiled run
is reproducible, but not the same draws as an eager run of the same seed.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from srvae.models import LatentVariableModel

from .config import TrainSettings
from .train import objective


def make_adam(model: LatentVariableModel, settings: TrainSettings) -> torch.optim.Adam:
    """Adam with the settings' learning rate and ε: fused where supported, else foreach (what ``train`` builds)."""
    kwargs = dict(lr=settings.lr, eps=settings.adam_eps)
    try:
        return torch.optim.Adam(model.parameters(), fused=True, **kwargs)
    except RuntimeError:  # PyTorch < 2.4 on CPU, or a device without a fused kernel
        return torch.optim.Adam(model.parameters(), foreach=True, **kwargs)


class TrainingStep:
    """One optimisation step of ``model`` on a batch (what ``srvae.study.train.train_epoch`` does per batch).

    ``step(x, beta)`` returns the summed per-example objective of the batch, detached, on the device. The
    caller puts the model in train mode (once per epoch, as ``train_epoch`` does).
    """

    def __init__(
        self, model: LatentVariableModel, optimiser: torch.optim.Optimizer, settings: TrainSettings,
        compile: bool = False,
    ) -> None:
        self.model, self.optimiser, self.settings = model, optimiser, settings
        self.loss = torch.compile(self._loss, dynamic=False) if compile else self._loss
        self._first_call = compile

    def _loss(self, x: Tensor, beta: Tensor) -> tuple[Tensor, Tensor]:
        obj = objective(self.model, x, beta, self.settings.iw_samples)
        return -obj.mean(), obj.detach().sum()

    def _compiled_or_eager(self, x: Tensor, beta: Tensor) -> tuple[Tensor, Tensor]:
        """The first call compiles; if that fails, fall back to eager for good, replaying the same random state."""
        if not self._first_call:
            return self.loss(x, beta)
        self._first_call = False
        state = _rng_state(x.device)
        try:
            return self.loss(x, beta)
        except Exception as error:  # a genuine error in the model is raised again by the eager call below
            warnings.warn(f"torch.compile failed, training eagerly: {type(error).__name__}: {error}", stacklevel=3)
            self.loss = self._loss
            _set_rng_state(x.device, state)
            return self.loss(x, beta)

    def __call__(self, x: Tensor, beta: float) -> Tensor:
        loss, total = self._compiled_or_eager(x, torch.tensor(beta, dtype=x.dtype, device=x.device))
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        if self.settings.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.grad_clip)
        self.optimiser.step()
        return total


def _rng_state(device: torch.device) -> tuple[Tensor, Tensor | None]:
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def _set_rng_state(device: torch.device, state: tuple[Tensor, Tensor | None]) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)
