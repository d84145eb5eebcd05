"""The DAG's steps on one tiny run: evaluation scores the test split in full float32; training follows the
config's tf32 flag; the per-image estimates that paired comparisons need are written."""

import numpy as np
import pytest
import torch

import srvae.study.run.steps as steps
from srvae.study.config import validate_config
from srvae.study.run import paths

from ..conftest import tiny_config


@pytest.fixture
def trained(tmp_path, monkeypatch):
    """A one-epoch tiny VAE run with ``tf32: true``; records the TF32 flags seen by training."""
    cfg = validate_config({**tiny_config(tmp_path, epochs=1), "tf32": True})
    flags = {}
    real_train = steps.train

    def spy(*args, **kwargs):
        flags["train"] = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(steps, "train", spy)
    steps.train_run(cfg, "tiny", "vae", 0)
    return cfg, flags


def test_training_follows_tf32_and_evaluation_scores_the_test_split_in_float32(trained, monkeypatch):
    cfg, flags = trained
    assert flags["train"] == (True, True)  # the config's tf32 reaches torch.backends
    seen = {}
    real_estimate = steps.iw_log_likelihood

    def spy(model, x, k, k_chunk, batch_size, progress=None):
        seen["x"], seen["k"] = x.clone(), k
        seen["tf32"] = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        return real_estimate(model, x, k, k_chunk, batch_size, progress)

    monkeypatch.setattr(steps, "iw_log_likelihood", spy)
    result = steps.evaluate_run(cfg, "tiny", "vae", 0)
    data = steps.load_dataset("tiny", cfg.datasets["tiny"])
    assert torch.equal(seen["x"], data.test) and not torch.equal(seen["x"][: len(data.valid)], data.valid)
    assert seen["k"] == cfg.evaluate.k and seen["tf32"] == (False, False)  # the reported NLL: full float32
    log_px = np.load(paths.run_dir(cfg.results_dir, "tiny", "vae", 0) / "log_px.npy", allow_pickle=False)
    assert log_px.shape == (result["n_test"],) and -log_px.mean() == pytest.approx(result["nll"])


def test_tf32_off_in_the_config_stays_off_in_training(tmp_path, monkeypatch):
    cfg = validate_config({**tiny_config(tmp_path, epochs=1), "tf32": False})
    seen = []

    def stop_at_training(*args, **kwargs):
        seen.append(torch.backends.cuda.matmul.allow_tf32)
        raise RuntimeError("stop")

    monkeypatch.setattr(steps, "train", stop_at_training)
    with pytest.raises(RuntimeError, match="stop"):
        steps.train_run(cfg, "tiny", "vae", 0)
    assert seen == [False]
