"""Throughput regression guard for every model of the default study: a training step, the IW-NLL
estimator and sampling, on CPU (and on CUDA when one is visible). Timing, grouping and items/s come from
the ``throughput`` fixture (benchmarks/conftest.py); the gate and its commands are in the README,
"Throughput benchmarks". Baselines are per machine (and per GPU model).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from srvae.registry import build_model
from srvae.study.config import load_config
from srvae.study.data.dequantise import logit_transform
from srvae.study.run.evaluate import iw_log_likelihood
from srvae.study.run.step import make_optimiser, objective

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


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", MODELS)
def test_training_step(throughput, name, device):
    torch.manual_seed(0)
    model = _model(name, device).train()
    settings = CONFIG.train_settings(name)
    optimiser = make_optimiser(model.parameters(), settings)  # as train() builds it
    x = _data(model, BATCH, device)

    def step():
        loss = -objective(model, x, 1.0, settings.iw_samples).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    throughput(step, BATCH)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", MODELS)
def test_iw_nll(throughput, name, device):
    torch.manual_seed(0)
    model = _model(name, device).eval()
    x = _data(model, EVAL_BATCH, device)
    k_chunk = CONFIG.evaluate_settings(name).k_chunk  # the study's chunk; K at once (10,000 rows) swung ±40%
    throughput(lambda: iw_log_likelihood(model, x, K, k_chunk=k_chunk, batch_size=EVAL_BATCH), EVAL_BATCH * K)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", MODELS)
def test_sampling(throughput, name, device):
    torch.manual_seed(0)
    model = _model(name, device).eval()
    n = min(N_SAMPLES, CONFIG.speed_settings(name).n_samples)  # a MAF samples with D passes per MADE
    throughput(lambda: model.sample(n), n)
