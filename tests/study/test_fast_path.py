"""The fast path (TF32 matrix products on CUDA; on CPU the same code path) gives the plain float32
test NLL to within 0.01 nats, with the same model and the same random draws."""

import pytest
import torch

from srvae.registry import build_model
from srvae.study.config import TrainSettings
from srvae.study.run.evaluate import iw_log_likelihood
from srvae.study.run.train import train

from ..conftest import tiny_dataset

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_tf32_evaluation_agrees_with_float32(device, tmp_path):
    data = tiny_dataset().to(device)
    torch.manual_seed(0)
    model = build_model("vae", {"latents": 16, "hidden": [128, 128]}, 784).to(device)
    train(model, data, TrainSettings(epochs=2, batch_size=50), 0, tmp_path / "c.pt", log=lambda m: None)

    def nll(precision: str) -> float:
        torch.set_float32_matmul_precision(precision)
        torch.manual_seed(1)
        return iw_log_likelihood(model, data.test, k=200, k_chunk=100, batch_size=100).nll

    try:
        plain, fast = nll("highest"), nll("high")
    finally:
        torch.set_float32_matmul_precision("highest")
    assert abs(plain - fast) < 0.01, (plain, fast)
