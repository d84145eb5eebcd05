"""GPU slot allocation without a GPU: the device count is simulated, holders are separate processes."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from srvae.infra.gpu_slots import GPUSlotError, GPUSlotTimeout, acquire_gpu, default_lock_dir

# a job: take a slot, report the device and the environment it set, hold the slot until stdin closes
HOLDER = """
import os, sys
from srvae.infra.gpu_slots import acquire_gpu
with acquire_gpu(slots={slots}, lock_dir={lock_dir}, timeout=5, poll=0.02) as device:
    print(device, os.environ.get("CUDA_VISIBLE_DEVICES"), flush=True)
    sys.stdin.read()
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", "SRVAE_FAKE_GPU_COUNT", "SRVAE_GPU_LOCK_DIR"):
        monkeypatch.delenv(var, raising=False)


class Holders:
    """Jobs running in their own processes, each holding a slot until released or killed."""

    def __init__(self, lock_dir):
        self.lock_dir, self.procs = lock_dir, []

    def start(self, n: int, slots: int | None = None, cwd=None, **env: str) -> list[str]:
        """Start ``n`` jobs at once (in ``cwd``); return their devices in start order."""
        script = HOLDER.format(slots=slots, lock_dir=repr(str(self.lock_dir)) if self.lock_dir else None)
        new = [subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True, cwd=cwd, env={**os.environ, **env}) for _ in range(n)]
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


def test_two_studies_in_different_directories_never_share_a_gpu(tmp_path, monkeypatch):
    """The locks live in one place per host (not under each study's working directory)."""
    monkeypatch.setenv("SRVAE_GPU_LOCK_DIR", str(tmp_path / "host-locks"))
    studies = Holders(None)  # the default lock directory, as the workflow's jobs use it
    try:
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        first = studies.start(1, cwd=tmp_path / "a", SRVAE_FAKE_GPU_COUNT="2")
        second = studies.start(1, cwd=tmp_path / "b", SRVAE_FAKE_GPU_COUNT="2")
        assert sorted(first + second) == ["0", "1"]
    finally:
        studies.close()
    assert not (tmp_path / "a" / ".snakemake").exists()


def test_the_default_lock_directory_is_per_host_not_per_study(monkeypatch, tmp_path):
    import tempfile

    monkeypatch.chdir(tmp_path)
    assert default_lock_dir().parent == Path(tempfile.gettempdir())
    monkeypatch.setenv("SRVAE_GPU_LOCK_DIR", "/somewhere/else")
    assert default_lock_dir() == Path("/somewhere/else")


def test_lock_files_and_folders_are_usable_by_other_users(tmp_path, monkeypatch):
    monkeypatch.setenv("SRVAE_FAKE_GPU_COUNT", "1")
    old = os.umask(0o077)
    try:
        with acquire_gpu(lock_dir=tmp_path / "locks", timeout=1):
            pass
    finally:
        os.umask(old)
    host = next((tmp_path / "locks").iterdir())
    assert stat.S_IMODE(host.stat().st_mode) == 0o1777
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o666 for f in host.iterdir())


@pytest.mark.parametrize("env, message", [
    ({"SRVAE_FAKE_GPU_COUNT": "two"}, r"\$SRVAE_FAKE_GPU_COUNT is 'two': it must be a whole number"),
    ({"SRVAE_FAKE_GPU_COUNT": "1"}, r"cannot use .* for GPU slot locks"),
])
def test_bad_settings_end_in_a_message(tmp_path, monkeypatch, env, message):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    (tmp_path / "file").write_text("in the way")
    with pytest.raises(GPUSlotError, match=message):
        with acquire_gpu(lock_dir=tmp_path / "file" / "locks", timeout=1):
            pass
