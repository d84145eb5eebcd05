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
optimiser. ``train.cuda_graphs`` turns this on in :func:`srvae.study.run.train.train` (on CUDA by default), and
for fused seeds (:mod:`.fused`: one graph for every seed's step); a capture that fails trains eagerly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from srvae.models import LatentVariableModel

from ..config import TrainSettings
from .step import apply_gradients, batch_loss

WARMUP_STEPS = 3


class CapturedStep:
    """``step(x, beta)``: a training update ``update(x, beta)`` (a static input ``x``, β a 0-d tensor; it returns
    the batch's summed objective) captured once and replayed from a CUDA graph; returns that sum as a device
    tensor (no host synchronisation). ``tensors()`` lists everything the update changes (weights, buffers,
    optimiser state), so that the warm-up before the capture can be undone. The optimiser must be capturable with
    its learning rate a tensor (:func:`srvae.study.run.step.make_optimiser` with ``cuda_graphs`` on CUDA), set
    between steps with :func:`srvae.study.run.step.set_learning_rate`."""

    def __init__(self, update: Callable[[Tensor, Tensor], Tensor], tensors: Callable[[], list[Tensor]],
                 optimiser: torch.optim.Optimizer, first_batch: Tensor) -> None:
        if first_batch.device.type != "cuda":
            raise RuntimeError("a CUDA graph needs a CUDA device: train without cuda_graphs on the CPU")
        self.update, self.tensors = update, tensors
        self.x = first_batch.clone()
        self.beta = torch.ones((), device=self.x.device)
        saved = self._state()
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(WARMUP_STEPS):  # capture needs the step's allocations and lazy state made once
                    self.update(self.x, self.beta)
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            optimiser.zero_grad(set_to_none=True)  # gradients are then allocated in the graph's own pool
            with torch.cuda.graph(self.graph):
                self.total = self.update(self.x, self.beta)
        finally:  # the warm-up updates are undone (also where capture fails): the first update is the first replay
            self._restore(saved)

    def _state(self) -> list[Tensor]:
        return [t.detach().clone() for t in self.tensors()]

    @torch.no_grad()
    def _restore(self, saved: list[Tensor]) -> None:
        """Back to before the warm-up: state the warm-up created (a fresh optimiser's) back to its zeros."""
        tensors = self.tensors()
        for tensor, value in zip(tensors, saved):
            tensor.copy_(value)
        for tensor in tensors[len(saved):]:
            tensor.zero_()

    def __call__(self, x: Tensor, beta: float) -> Tensor:
        self.x.copy_(x)
        self.beta.fill_(beta)
        self.graph.replay()
        return self.total


class GraphedStep(CapturedStep):
    """One model's eager training step (:func:`~srvae.study.run.train.train_epoch`'s) as a :class:`CapturedStep`."""

    def __init__(self, model: LatentVariableModel, optimiser: torch.optim.Optimizer, settings: TrainSettings,
                 first_batch: Tensor) -> None:
        self.model, self.optimiser, self.settings = model, optimiser, settings
        super().__init__(self._update, self._tensors, optimiser, first_batch)

    def _update(self, x: Tensor, beta: Tensor) -> Tensor:
        loss, total = batch_loss(self.model, x, beta, self.settings.iw_samples)
        apply_gradients(self.model, self.optimiser, loss, self.settings)
        return total

    def _tensors(self) -> list[Tensor]:
        """Everything the warm-up changes: weights, buffers and the optimiser's state (moments, step counts)."""
        return [*self.model.parameters(), *self.model.buffers(), *optimiser_state_tensors(self.optimiser)]


def optimiser_state_tensors(optimiser: torch.optim.Optimizer) -> list[Tensor]:
    """The tensors of an optimiser's state (moments, step counts)."""
    return [v for s in optimiser.state.values() for v in s.values() if isinstance(v, Tensor)]
