"""A training step captured once as a CUDA graph and replayed: one launch per step instead of hundreds.

A Table 1 model at batch 256 is launch-bound on a GPU: SeRe-VAE's ten layers issue several hundred small
kernels per step, each costing more on the host than on the device. PyTorch's whole-network capture
(``torch.cuda.graph``; "CUDA Graphs" in the PyTorch CUDA semantics notes) records the objective, its backward,
gradient clipping and the optimiser update once, on a static input buffer, and replays them with a single
launch. What changes between steps lives in tensors the graph reads: the batch (copied into the static input),
the KL weight β (a 0-d tensor) and the learning rate (a 0-d tensor, which Adam and Adamax accept when
``capturable=True``). The reparameterisation noise is drawn inside the graph from the CUDA generator, which
PyTorch advances at every replay, so each step gets fresh noise (other draws than eager mode's, the same
distribution).

Capture needs a few warm-up steps on a side stream; they run on the first batch and are undone (weights and
optimiser state restored in place) so that the run's sequence of updates is the eager run's.
"""

from __future__ import annotations

import torch
from torch import Tensor

from srvae.models import LatentVariableModel

from .config import TrainSettings
from .train import OPTIMISERS, objective

WARMUP_STEPS = 3


def capturable_optimiser(model: LatentVariableModel, settings: TrainSettings) -> torch.optim.Optimizer:
    """The run's optimiser (``train.optimizer``) in its capturable form, with the learning rate as a tensor."""
    lr = torch.tensor(settings.lr, device=model.device)
    return OPTIMISERS[settings.optimizer](model.parameters(), lr=lr, eps=settings.adam_eps,
                                          weight_decay=settings.weight_decay, capturable=True, foreach=True)


class GraphedStep:
    """``step(x, beta, lr)``: one training update on batch ``x`` (always ``batch_size`` images), replayed from a
    CUDA graph; returns the batch's summed objective as a device tensor (no host synchronisation)."""

    def __init__(self, model: LatentVariableModel, optimiser: torch.optim.Optimizer, settings: TrainSettings,
                 first_batch: Tensor) -> None:
        if first_batch.device.type != "cuda":
            raise RuntimeError("a CUDA graph needs a CUDA device: train without cuda_graphs on the CPU")
        if optimiser.state:
            raise RuntimeError("capture a step before the optimiser's first update: its warm-up resets the state")
        self.model, self.optimiser, self.settings = model, optimiser, settings
        self.x = first_batch.clone()
        self.beta = torch.ones((), device=self.x.device)
        saved = self._state()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_STEPS):  # capture needs the step's allocations and lazy state made once
                self._update()
        torch.cuda.current_stream().wait_stream(side)
        self._restore(saved)  # the warm-up updates are undone: the run's first update is the replay below
        self.graph = torch.cuda.CUDAGraph()
        self.optimiser.zero_grad(set_to_none=True)  # gradients are then allocated in the graph's own pool
        with torch.cuda.graph(self.graph):
            self.total = self._update()

    def _update(self) -> Tensor:
        obj = objective(self.model, self.x, self.beta, self.settings.iw_samples)
        (-obj.mean()).backward()
        if self.settings.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.grad_clip, foreach=True)
        self.optimiser.step()
        return obj.detach().sum()

    def _state(self) -> list[Tensor]:
        """Weights and buffers (the optimiser has no state before its first step)."""
        return [t.detach().clone() for t in (*self.model.parameters(), *self.model.buffers())]

    @torch.no_grad()
    def _restore(self, saved: list[Tensor]) -> None:
        for tensor, value in zip((*self.model.parameters(), *self.model.buffers()), saved):
            tensor.copy_(value)
        for state in self.optimiser.state.values():  # moments and step counts back to a fresh optimiser's zeros
            for value in state.values():
                if isinstance(value, Tensor):
                    value.zero_()

    def __call__(self, x: Tensor, beta: float, lr: float) -> Tensor:
        self.x.copy_(x)
        self.beta.fill_(beta)
        for group in self.optimiser.param_groups:
            group["lr"].fill_(lr)
        self.graph.replay()
        return self.total
