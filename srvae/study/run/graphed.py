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

Capture needs a few warm-up steps on a side stream; they run on a sample batch and are undone (weights, buffers
and optimiser state restored in place), so that the run's sequence of updates is unchanged. Only full batches
replay the graph (its shapes are fixed); an epoch's last, smaller batch takes an eager step with the same
optimiser. ``train.cuda_graphs`` turns this on in :func:`srvae.study.run.train.train`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from srvae.models import LatentVariableModel

from ..config import TrainSettings
from .step import apply_gradients, batch_loss

WARMUP_STEPS = 3


class GraphedStep:
    """``step(x, beta)``: one training update on batch ``x`` (always ``batch_size`` images), replayed from a CUDA
    graph; returns the batch's summed objective as a device tensor (no host synchronisation). The optimiser must be
    capturable with its learning rate a tensor (:func:`srvae.study.run.step.make_optimiser` with ``cuda_graphs``),
    set between steps with :func:`srvae.study.run.step.set_learning_rate`."""

    def __init__(self, model: LatentVariableModel, optimiser: torch.optim.Optimizer, settings: TrainSettings,
                 first_batch: Tensor) -> None:
        if first_batch.device.type != "cuda":
            raise RuntimeError("a CUDA graph needs a CUDA device: train without cuda_graphs on the CPU")
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
        """The eager training step's loss and update (:func:`~srvae.study.run.train.train_epoch`), on the static input."""
        loss, total = batch_loss(self.model, self.x, self.beta, self.settings.iw_samples)
        apply_gradients(self.model, self.optimiser, loss, self.settings)
        return total

    def _tensors(self) -> list[Tensor]:
        """Everything the warm-up changes: weights, buffers and the optimiser's state (moments, step counts)."""
        state = [v for s in self.optimiser.state.values() for v in s.values() if isinstance(v, Tensor)]
        return [*self.model.parameters(), *self.model.buffers(), *state]

    def _state(self) -> list[Tensor]:
        return [t.detach().clone() for t in self._tensors()]

    @torch.no_grad()
    def _restore(self, saved: list[Tensor]) -> None:
        """Back to before the warm-up: state the warm-up created (a fresh optimiser's) back to its zeros."""
        tensors = self._tensors()
        for tensor, value in zip(tensors, saved):
            tensor.copy_(value)
        for tensor in tensors[len(saved):]:
            tensor.zero_()

    def __call__(self, x: Tensor, beta: float) -> Tensor:
        self.x.copy_(x)
        self.beta.fill_(beta)
        self.graph.replay()
        return self.total
