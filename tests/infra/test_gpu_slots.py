"""GPU slot allocation without a GPU: the device count is simulated, holders are separate processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from srvae.infra.gpu_slots import GPUSlotTimeout, acquire_gpu

# a job: take a slot, report the device and the environment it set, hold the slot until stdin closes
HOLDER = """
import os, sys
from srvae.infra.gpu_slots import acquire_gpu
with acquire_gpu(slots={slots}, lock_dir={lock_dir!r}, timeout=5, poll=0.02) as device:
    print(device, os.environ.get("CUDA_VISIBLE_DEVICES"), flush=True)
    sys.stdin.read()
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", "SRVAE_FAKE_GPU_COUNT"):
        monkeypatch.delenv(var, raising=False)


class Holders:
    """Jobs running in their own processes, each holding a slot until released or killed."""

    def __init__(self, lock_dir):
        self.lock_dir, self.procs = str(lock_dir), []

    def start(self, n: int, slots: int | None = None, **env: str) -> list[str]:
        """Start ``n`` jobs at once; return their devices in start order."""
        script = HOLDER.format(slots=slots, lock_dir=self.lock_dir)
        new = [subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True, env={**os.environ, **env}) for _ in range(n)]
        self.procs += new
        devices = []
        for p in new:
            device, env_value = p.stdout.readline().split()
            assert device == env_value  # the job sees exactly its device
            devices.append(device)
        return devices

    def release(self, i: int) -> None:
        self.procs[i].stdin.close()
        self.procs[i].wait(timeout=10)

    def close(self):
        for p in self.procs:
            p.kill()
            p.wait()


@pytest.fixture
def holders(tmp_path):
    h = Holders(tmp_path / "slots")
    yield h
    h.close()


def test_concurrent_jobs_get_distinct_gpus(holders):
    assert sorted(holders.start(3, SRVAE_FAKE_GPU_COUNT="3")) == ["0", "1", "2"]


def test_a_killed_job_frees_its_slot(holders, monkeypatch, tmp_path):
    monkeypatch.setenv("SRVAE_FAKE_GPU_COUNT", "1")
    assert holders.start(1) == ["0"]
    with pytest.raises(GPUSlotTimeout, match="1 GPU slots"):
        with acquire_gpu(lock_dir=tmp_path / "slots", timeout=0.2, poll=0.02):
            pass
    holders.procs[0].send_signal(signal.SIGKILL)
    holders.procs[0].wait(timeout=10)
    with acquire_gpu(lock_dir=tmp_path / "slots", timeout=1, poll=0.02) as device:
        assert device == "0" and os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    assert "CUDA_VISIBLE_DEVICES" not in os.environ  # restored on exit


def test_more_slots_than_gpus_share_instead_of_waiting(holders, monkeypatch, tmp_path):
    monkeypatch.setenv("SRVAE_FAKE_GPU_COUNT", "1")
    assert holders.start(2, slots=2) == ["0", "0"]
    with pytest.raises(GPUSlotTimeout):  # a third job exceeds the two slots
        with acquire_gpu(slots=2, lock_dir=tmp_path / "slots", timeout=0.2, poll=0.02):
            pass


def test_new_job_goes_to_the_least_used_gpu(holders):
    env = {"SRVAE_FAKE_GPU_COUNT": "2"}
    assert [holders.start(1, slots=4, **env)[0] for _ in range(3)] == ["0", "1", "0"]  # slots 0, 1, 2
    holders.release(0)
    holders.release(1)
    # GPU 0 still runs the job on slot 2, GPU 1 is idle: lowest-free-slot would pick slot 0 (GPU 0)
    assert holders.start(1, slots=4, **env) == ["1"]


def test_preset_visible_devices_map_slots_to_their_ids(holders):
    assert holders.start(1, CUDA_VISIBLE_DEVICES="3,5") == ["3"]
    assert holders.start(1, CUDA_VISIBLE_DEVICES="3,5") == ["5"]


@pytest.mark.parametrize("env", [{"SRVAE_FAKE_GPU_COUNT": "0"}, {"CUDA_VISIBLE_DEVICES": ""},
                                 {"CUDA_VISIBLE_DEVICES": "-1"}])
def test_no_gpu_means_cpu(monkeypatch, tmp_path, env):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with acquire_gpu(lock_dir=tmp_path / "slots") as device:
        assert device is None
    assert not (tmp_path / "slots").exists()


def test_slurm_pinning_is_left_alone(monkeypatch, tmp_path):
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    with acquire_gpu(lock_dir=tmp_path / "slots") as device:
        assert device == "2"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "2" and not (tmp_path / "slots").exists()


def test_refuses_once_cuda_is_initialised(monkeypatch, tmp_path):
    torch = pytest.importorskip("torch")
    monkeypatch.setenv("SRVAE_FAKE_GPU_COUNT", "1")
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    with pytest.raises(RuntimeError, match="before CUDA is initialised"):
        with acquire_gpu(lock_dir=tmp_path / "slots"):
            pass
