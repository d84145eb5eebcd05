"""Operator calls per eager training step and per importance-weighted NLL chunk, for every Table 1 and Table 2
model entry of ``config.yaml`` (issue 25): each call becomes at least one kernel launch on a GPU, where an eager
step of these small models is bound by launches, not by arithmetic.

    pytest benchmarks/test_op_counts.py                     # the gate: counts against benchmarks/op_counts.json
    pytest benchmarks/test_op_counts.py --benchmark-only    # the same, timed: calls beside items/s in extra_info

One training step is the study's own (:func:`srvae.study.run.step.batch_loss` and
:func:`~srvae.study.run.step.apply_gradients` with the optimiser of :func:`~srvae.study.run.step.make_optimiser` and the
entry's ``train:`` settings) on a batch of 100 random binary images, the study's; one chunk is
:func:`srvae.study.run.evaluate.iw_log_likelihood` with ``k = k_chunk`` of the entry's ``evaluate:`` settings (one chunk)
over 100 images, the rows (and so the code path: ``BLOCKWISE_ROWS``) of the study's evaluation. Table 2's ResNet
models take seconds per image at their widths on the CPU, and none of their calls depends on the batch (2, 3 and 100
images gave the same counts): they are counted on 2 images.

Counted (the gated unit): every operator call at the dispatcher (a ``TorchDispatchMode``, below autograd: the
backward pass and the optimiser's calls included, composite operators such as ``linear`` counted as the calls they
decompose into, each call once). The count is exact and the same on every run. It is the unit that follows kernel
launches on a GPU: every kernel is one of these calls, and the calls that launch none are views (``t``, ``view``,
``select``, ``expand``, ``detach`` of each gradient: host time only, but host time is what bounds an eager step
there). The PyTorch profiler's ``aten::`` events, all nesting levels (the issue's figures: ``profiler_calls`` in
``extra_info``), count a composite call *and* the calls inside it (``linear`` → ``t`` + ``addmm``: 3 events, 2
calls) and the CPU fused Adam kernel's per-tensor bookkeeping; its top-level events (``profiler_top_level_calls``)
count a composite call once and not its parts, so neither profiler unit is a count of launches. Before issue 25's
chain cut (torch 2.14.1) a ``sere_vae_table1`` step was 1,538 dispatch calls, 4,654 profiler events (1,478
top-level): the issue's "about 5,300" is the profiler's all-levels unit.

The floor of SeRe-VAE's chain: ``z_l`` is an input of every network of layer ``l + 1`` (posterior, prior's first
estimate, bijector), so nothing of layer ``l + 1`` can be batched with layer ``l``. Per layer the chain keeps, forward,
one product for all maps of ``z_{l-1}`` (:func:`srvae.nets.grouped.side_by_side`) and its split, the evidence add,
an activation and an output product per network (posterior residual, first estimate, bijector conditioner), the
scales' softplus and floor (posterior and bijector), the noise draw and reparameterisation, and the rank-1 map (a
product-sum and two fused multiply-adds): about 25 calls, and about as many again backward (each product two, each
element-wise call one or two), so some 50 calls per layer, 500 of a 10-layer step, are sequential by nature; the rest
(encoders, priors, densities, data layers, optimiser) runs for all layers at once. Counted from the code's calls, not
measured apart.

The gate: a count above ``benchmarks/op_counts.json`` fails (a regression); one below it fails too, asking to lower
the file, so that every gain is kept. ``SRVAE_UPDATE_OP_COUNTS=1`` writes the measured counts instead. The counts
belong to the PyTorch version the file names.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

from srvae.registry import build_model
from srvae.study.config import load_config
from srvae.study.run.evaluate import iw_log_likelihood
from srvae.study.run.step import apply_gradients, batch_loss, make_optimiser

ROOT = Path(__file__).resolve().parents[1]
COUNTS = Path(__file__).with_name("op_counts.json")
UPDATE_ENV = "SRVAE_UPDATE_OP_COUNTS"
BATCH, RESNET_BATCH, PIXELS = 100, 2, 784
CONFIG = load_config([ROOT / "config.yaml"])
MODELS = [name for name in CONFIG.models if name.endswith(("_table1", "_table2"))]


class OperatorCalls(TorchDispatchMode):
    """Counts every operator call dispatched while it is active."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


def operator_calls(fn: Callable[[], object]) -> int:
    with OperatorCalls() as counter:
        fn()
    return counter.calls


def profiler_calls(fn: Callable[[], object]) -> tuple[int, int]:
    """``aten::`` events the PyTorch profiler records for ``fn`` on the CPU: all (nested calls included), and those
    not inside another ``aten::`` event."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = [event for event in prof.events() if event.name.startswith("aten::")]
    top = [e for e in events if e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")]
    return len(events), len(top)


def images(name: str) -> torch.Tensor:
    """The fixed batch of random binary images entry ``name`` is counted on (seeded first: also its weights)."""
    torch.manual_seed(0)
    return torch.bernoulli(torch.full((RESNET_BATCH if CONFIG.models[name].table == "table2" else BATCH, PIXELS), 0.13))


def training_step(name: str) -> tuple[Callable[[], None], int]:
    """The study's training step of entry ``name`` on a fixed batch, with its first call (optimiser state) done, and
    the images it trains on."""
    entry, settings, x = CONFIG.models[name], CONFIG.train_settings(name), images(name)
    model = build_model(entry.cls, entry.params, PIXELS, data_mean=x.mean(0)).train()
    optimiser = make_optimiser(model.parameters(), settings)

    def step() -> None:
        loss, _ = batch_loss(model, x, 1.0, settings.iw_samples)
        optimiser.zero_grad(set_to_none=True)
        apply_gradients(model, optimiser, loss, settings)

    step()  # Adam's state exists from the first step on: count a step of the steady state
    return step, len(x)


def iw_chunk(name: str) -> tuple[Callable[[], object], int]:
    """One chunk of the importance-weighted NLL of entry ``name``, and the importance weights it computes."""
    entry, k, x = CONFIG.models[name], CONFIG.evaluate_settings(name).k_chunk, images(name)
    model = build_model(entry.cls, entry.params, PIXELS, data_mean=x.mean(0))
    return lambda: iw_log_likelihood(model, x, k, k, len(x)), k * len(x)


def expected() -> dict:
    return json.loads(COUNTS.read_text())


def check(name: str, kind: str, calls: int, profiled: int) -> None:
    """Compare with the committed count (or record it, with ``SRVAE_UPDATE_OP_COUNTS=1``)."""
    if os.environ.get(UPDATE_ENV):
        data = expected() if COUNTS.exists() else {}
        data["torch"] = torch.__version__.split("+")[0]
        data.setdefault("counts", {}).setdefault(name, {})[kind] = {"calls": calls, "profiler_calls": profiled}
        data["counts"] = dict(sorted(data["counts"].items()))
        COUNTS.write_text(json.dumps(data, indent=2) + "\n")
        return
    data = expected()
    here = torch.__version__.split("+")[0]
    if data["torch"] != here:  # another PyTorch decomposes operators differently: its counts are its own
        pytest.skip(f"{COUNTS.name} holds the counts of torch {data['torch']}, this is {here}: record them with "
                    f"{UPDATE_ENV}=1")
    committed = data["counts"][name][kind]["calls"]
    where = f"{name} {kind}: {calls} operator calls, {COUNTS.name} has {committed} (torch {data['torch']})"
    assert calls <= committed, f"{where}: more calls than committed, a regression"
    assert calls == committed, f"{where}: fewer calls: lower the file ({UPDATE_ENV}=1 rewrites it)"


def count_and_time(benchmark, throughput, name: str, kind: str, work: Callable[[], object], items: int) -> None:
    """Gate ``work``'s operator calls (both units recorded in the benchmark), then time it."""
    calls, (profiled, top_level) = operator_calls(work), profiler_calls(work)
    benchmark.extra_info.update(calls=calls, profiler_calls=profiled, profiler_top_level_calls=top_level)
    check(name, kind, calls, profiled)
    throughput(work, items=items)


@pytest.mark.parametrize("name", MODELS)
def test_training_step_op_count(benchmark, throughput, name):
    count_and_time(benchmark, throughput, name, "step", *training_step(name))


@pytest.mark.parametrize("name", MODELS)
def test_iw_chunk_op_count(benchmark, throughput, name):
    count_and_time(benchmark, throughput, name, "iw_chunk", *iw_chunk(name))
