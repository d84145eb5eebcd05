"""``evaluate_run``'s branch for continuous data and exact models, in process: a one-epoch MAF on dequantised digits
is scored with one sample (its importance weights are all p(x)), and its bits per dimension are the test
log-likelihoods moved to 8-bit pixel space, computed again here from ``log_px.npy`` (issue 23)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import srvae.study.run.steps as steps
from srvae.study.config import validate_config
from srvae.study.data.datasets import load_dataset
from srvae.study.run import paths
from srvae.study.run.evaluate import iw_log_likelihood

from ..conftest import tiny_config


def test_exact_model_on_dequantised_data_gets_one_sample_and_bits_per_dim(tmp_path, monkeypatch):
    lam = 0.05  # CIFAR-10's λ: the logit values stay within ±3
    raw = tiny_config(tmp_path, {"maf": {"class": "maf", "params": {"mades": 1, "hidden": [16]}}}, epochs=1,
                      refresh_statistics=True)  # as the study's MAF entries: validation with the data's statistics
    raw["datasets"]["tiny"].update(transform="dequantise_logit", logit_lambda=lam)
    raw["evaluate"]["check_k"] = 50  # no K-check for an exact model: every K gives the same estimate
    cfg = validate_config(raw)
    steps.train_run(cfg, "tiny", "maf", 0)
    ks = []

    def record(model, x, k, *args, **kwargs):
        ks.append(k)
        return iw_log_likelihood(model, x, k, *args, **kwargs)

    monkeypatch.setattr(steps, "iw_log_likelihood", record)
    steps.evaluate_run(cfg, "tiny", "maf", 0)
    run = paths.run_dir(cfg.results_dir, "tiny", "maf", 0)
    written = json.loads((run / paths.EVAL).read_text())
    assert ks == [1] and written["exact"] and "check" not in written
    log_py = np.load(run / paths.LOG_PX, allow_pickle=False)
    y = load_dataset("tiny", cfg.datasets["tiny"]).test.double()
    s = torch.sigmoid(y)  # y = logit(s), s = λ + (1 − 2λ) x̃ / 256: dy/dx̃ = (1 − 2λ) / (256 s (1 − s))
    log_slopes = (math.log(1 - 2 * lam) - math.log(256) - torch.log(s) - torch.log1p(-s)).sum(-1).numpy()
    bits = -(log_py + log_slopes).mean() / (y.shape[1] * math.log(2))
    assert written["bits_per_dim"] == pytest.approx(bits, rel=1e-6)
    assert written["nll"] == pytest.approx(-log_py.mean(), rel=1e-6)
