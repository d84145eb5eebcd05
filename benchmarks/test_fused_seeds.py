"""Throughput of fused seeds (srvae.study.run.fused): three seeds of one model stepped as one vmapped model with
stacked parameters, against the same three models stepped one after another, on CPU (and on CUDA when one is
visible). Items (training images of all seeds) per second are in each result's ``extra_info``.

    pytest benchmarks/test_fused_seeds.py --benchmark-only
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from srvae.study.config import load_config
from srvae.study.run.fused import fused_throughput

CONFIG = load_config([Path(__file__).resolve().parents[1] / "config.yaml"])

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"))]
MODEL, SEEDS, BATCH, STEPS = "sere_vae", 3, 100, 10


@pytest.mark.parametrize("device", DEVICES)
def test_fused_seeds_training_step(benchmark, device):
    result = benchmark.pedantic(fused_throughput, args=(CONFIG, MODEL, SEEDS, BATCH, STEPS, device), kwargs={"warmup": 2},
                                rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    benchmark.extra_info["items_per_s"] = result["fused_images_per_s"]
    assert result["fused_images_per_s"] > 0 and result["separate_images_per_s"] > 0
