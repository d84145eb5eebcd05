"""Throughput regression guard for every model of the default study: a training step, the IW-NLL
estimator and sampling, on CPU (and on CUDA when one is visible).

    pytest --benchmark-only --benchmark-autosave                            # save a baseline
    pytest --benchmark-only --benchmark-compare --benchmark-compare-fail=median:10%

Baselines are per machine (and per GPU model). Items per second are in each result's ``extra_info``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from srvae.models.registry import build_model
from srvae.study.config import load_config
from srvae.study.dequantise import logit_transform
from srvae.study.evaluate import iw_log_likelihood
from srvae.study.train import objective

CONFIG = load_config([Path(__file__).resolve().parents[1] / "config.yaml"])
MODELS = CONFIG.study.models
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"))]
BATCH, K, EVAL_BATCH, N_SAMPLES = 100, 100, 100, 1000


def _model(name: str, device: str):
    entry = CONFIG.models[name]
    return build_model(entry.cls, entry.params, 784).to(device)


def _data(model, n: int, device: str) -> torch.Tensor:
    """Images of the model's kind: binary pixels, or dequantised pixels in logit space."""
    pixels = torch.bernoulli(torch.full((n, 784), 0.2, device=device))
    if model.data_kind == "binary":
        return pixels
    return logit_transform((255 * pixels + torch.rand(n, 784, device=device)) / 256, 1e-6)


def _run(benchmark, fn, items: int, device: str, rounds: int = 5) -> None:
    def timed():
        fn()
        if device == "cuda":
            torch.cuda.synchronize()

    benchmark.pedantic(timed, rounds=rounds, warmup_rounds=1)
    if benchmark.stats is not None:  # None under --benchmark-disable (plain pytest)
        benchmark.extra_info["items_per_s"] = items / benchmark.stats.stats.median
    benchmark.extra_info["items"] = items


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", MODELS)
def test_training_step(benchmark, name, device):
    torch.manual_seed(0)
    model = _model(name, device).train()
    settings = CONFIG.train_settings(name)
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.lr)
    x = _data(model, BATCH, device)

    def step():
        loss = -objective(model, x, 1.0, settings.iw_samples).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    _run(benchmark, step, BATCH, device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", MODELS)
def test_iw_nll(benchmark, name, device):
    torch.manual_seed(0)
    model = _model(name, device).eval()
    x = _data(model, EVAL_BATCH, device)
    _run(benchmark, lambda: iw_log_likelihood(model, x, K, k_chunk=K, batch_size=EVAL_BATCH), EVAL_BATCH * K, device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", MODELS)
def test_sampling(benchmark, name, device):
    torch.manual_seed(0)
    model = _model(name, device).eval()
    n = min(N_SAMPLES, CONFIG.speed_settings(name).n_samples)  # a MAF samples with D passes per MADE
    _run(benchmark, lambda: model.sample(n), n, device)
