"""A training step replayed from a CUDA graph (srvae.study.run.graphed, ``train.cuda_graphs``): refused on the CPU
where it is built directly, without effect there as a setting; on a GPU, the capture's warm-up leaves no trace and
replays train the model as eager steps do. The CUDA tests ran on an H100 (docs/measurements/h100-2026-11-27)."""

from __future__ import annotations

import pydantic
import pytest
import torch

from srvae.registry import build_model
from srvae.study.config import TrainSettings
from srvae.study.run.graphed import GraphedStep
from srvae.study.run.step import make_optimiser, set_learning_rate
from srvae.study.run.train import train, train_epoch

PARAMS = {"layers": 2, "latents": 4, "encoder_hidden": [32], "prior_hidden": [16], "posterior_hidden": [16],
          "bijector_hidden": [16], "data_hidden": [32]}
GRAPHED = TrainSettings(batch_size=100, lr=2e-3, grad_clip=4.0, cuda_graphs=True)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")


def _model(device: str = "cpu"):
    torch.manual_seed(0)
    return build_model("sere_vae", PARAMS, 784).to(device)


def test_refused_on_the_cpu():
    model = _model()
    with pytest.raises(RuntimeError, match="CUDA graph needs a CUDA device"):
        GraphedStep(model, make_optimiser(model.parameters(), GRAPHED), GRAPHED, torch.zeros(4, 784))


def test_setting_has_no_effect_on_the_cpu(tiny_data, tmp_path):
    """`train.cuda_graphs` on a CPU run: the eager run, bit for bit (the usual optimiser, no capture)."""
    runs = []
    for graphs in (False, True):
        settings = TrainSettings(epochs=2, batch_size=64, cuda_graphs=graphs)
        model = _model()
        assert not make_optimiser(model.parameters(), settings).defaults["capturable"]
        result = train(model, tiny_data, settings, 0, tmp_path / f"ckpt{graphs}.pt", log=lambda msg: None)
        runs.append((result["metrics"], [p.detach().clone() for p in model.parameters()]))
    assert [{k: v for k, v in m.items() if k != "seconds"} for m in runs[0][0]] == \
           [{k: v for k, v in m.items() if k != "seconds"} for m in runs[1][0]]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))


def test_compile_and_cuda_graphs_exclude_each_other():
    with pytest.raises(pydantic.ValidationError, match="compile and cuda_graphs are both true: set one"):
        TrainSettings(compile=True, cuda_graphs=True)


def test_learning_rate_set_in_place_where_it_is_a_tensor():
    """A captured step reads the rate from its tensor: the schedule must change that tensor, not replace it."""
    weight = torch.nn.Parameter(torch.ones(3))
    optimiser = torch.optim.Adam([weight], lr=torch.tensor(1e-3), foreach=False)
    rate = optimiser.param_groups[0]["lr"]
    set_learning_rate(optimiser, 5e-4)
    assert optimiser.param_groups[0]["lr"] is rate and float(rate) == pytest.approx(5e-4)
    plain = torch.optim.Adam([weight], lr=1e-3)
    set_learning_rate(plain, 5e-4)
    assert plain.param_groups[0]["lr"] == 5e-4


@cuda
def test_capture_leaves_the_weights_and_the_optimiser_state():
    model = _model("cuda")
    optimiser = make_optimiser(model.parameters(), GRAPHED)
    assert optimiser.defaults["capturable"] and isinstance(optimiser.param_groups[0]["lr"], torch.Tensor)
    before = [p.detach().clone() for p in model.parameters()]
    GraphedStep(model, optimiser, GRAPHED, torch.bernoulli(torch.full((100, 784), 0.2, device="cuda")))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(float(s["step"]) == 0 for s in optimiser.state.values())


@cuda
def test_replays_train_as_eager_steps_do():
    """Same start, same batches: the graphed run's objective follows the eager run's (other noise draws)."""
    x = torch.bernoulli(torch.rand(2000, 784, device="cuda") * 0.4)
    batches = torch.arange(len(x), device="cuda").repeat(3).view(-1, 100)
    eager = _model("cuda")
    eager_settings = GRAPHED.model_copy(update={"cuda_graphs": False})
    eager_optimiser = make_optimiser(eager.parameters(), eager_settings)
    eager_total = train_epoch(eager, eager_optimiser, x, batches.flatten(), 1.0, eager_settings)
    graphed = _model("cuda")
    step = GraphedStep(graphed, make_optimiser(graphed.parameters(), GRAPHED), GRAPHED, x[batches[0]])
    per_step = [float(step(x[idx], 1.0)) / 100 for idx in batches]
    assert sum(per_step[-5:]) / 5 > sum(per_step[:5]) / 5 + 10  # replays update the weights: the model learns
    assert abs(sum(per_step) / len(per_step) - float(eager_total) / batches.numel()) < 2.0  # nats per image


@cuda
def test_training_run_with_cuda_graphs(tiny_data, tmp_path):
    """train() with the setting: full batches replay the graph, the last, smaller one steps eagerly; it learns."""
    data = tiny_data.to("cuda")
    model = _model("cuda")
    settings = TrainSettings(epochs=3, batch_size=64, cuda_graphs=True, lr_schedule="exponential", lr_decay=0.5)
    result = train(model, data, settings, 0, tmp_path / "ckpt.pt", log=lambda msg: None)
    assert result["metrics"][-1]["valid_elbo"] > result["metrics"][0]["valid_elbo"]
    assert result["metrics"][-1]["lr"] == pytest.approx(settings.lr * 0.25)
