"""A training step replayed from a CUDA graph (srvae.study.graphed): refused on the CPU; on a GPU, the capture's
warm-up leaves no trace and replays train the model as eager steps do."""

from __future__ import annotations

import pytest
import torch

from srvae.models.registry import build_model
from srvae.study.config import TrainSettings
from srvae.study.graphed import GraphedStep, capturable_optimiser
from srvae.study.train import OPTIMISERS, train_epoch

PARAMS = {"layers": 2, "latents": 4, "encoder_hidden": [32], "prior_hidden": [16], "posterior_hidden": [16],
          "bijector_hidden": [16], "data_hidden": [32]}
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")


def _model(device: str = "cpu"):
    torch.manual_seed(0)
    return build_model("sere_vae", PARAMS, 784).to(device)


def test_refused_on_the_cpu():
    model = _model()
    settings = TrainSettings()
    with pytest.raises(RuntimeError, match="CUDA graph needs a CUDA device"):
        GraphedStep(model, OPTIMISERS["adam"](model.parameters()), settings, torch.zeros(4, 784))


@cuda
def test_capture_leaves_the_weights_and_a_fresh_optimiser():
    model = _model("cuda")
    before = [p.detach().clone() for p in model.parameters()]
    settings = TrainSettings(batch_size=64, grad_clip=4.0)
    optimiser = capturable_optimiser(model, settings)
    GraphedStep(model, optimiser, settings, torch.bernoulli(torch.full((64, 784), 0.2, device="cuda")))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(float(s["step"]) == 0 for s in optimiser.state.values())


@cuda
def test_replays_train_as_eager_steps_do():
    """Same start, same batches: the graphed run's objective follows the eager run's (other noise draws)."""
    settings = TrainSettings(batch_size=100, lr=2e-3, grad_clip=4.0)
    x = torch.bernoulli(torch.rand(2000, 784, device="cuda") * 0.4)
    batches = torch.arange(len(x), device="cuda").repeat(3).view(-1, 100)
    eager = _model("cuda")
    eager_total = train_epoch(eager, OPTIMISERS["adam"](eager.parameters(), lr=settings.lr, eps=settings.adam_eps),
                              x, batches.flatten(), 1.0, settings)
    graphed = _model("cuda")
    step = GraphedStep(graphed, capturable_optimiser(graphed, settings), settings, x[batches[0]])
    per_step = [float(step(x[idx], 1.0, settings.lr)) / 100 for idx in batches]
    assert sum(per_step[-5:]) / 5 > sum(per_step[:5]) / 5 + 10  # replays update the weights: the model learns
    assert abs(sum(per_step) / len(per_step) - float(eager_total) / batches.numel()) < 2.0  # nats per image
