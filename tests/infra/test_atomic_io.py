"""Atomic writes: a full disk names the file and leaves nothing behind; files get what the umask grants."""

import errno
import io
import os

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

import srvae.infra.atomic_io as atomic_io
from srvae.infra.atomic_io import DiskFullError, load_checkpoint, save_checkpoint, write_array, write_json, write_text
from srvae.study.report.figures import save_figure


@pytest.fixture
def full_disk(monkeypatch):
    """Every write through the atomic writer fails as on a full disk, after part of the data went out."""
    real_fdopen = os.fdopen

    class FullFile(io.FileIO):
        def write(self, data):
            super().write(bytes(data)[:10])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic_io.os, "fdopen", lambda fd, mode: FullFile(fd, "w") if "w" in mode
                        else real_fdopen(fd, mode))


@pytest.mark.parametrize("write", [
    lambda path: save_checkpoint(path, {"w": torch.randn(1000)}),
    lambda path: write_json(path, {"nll": 90.0}),
    lambda path: write_array(path, np.zeros(10)),
    lambda path: save_figure(plt.figure(), path.with_suffix("")),
])
def test_a_full_disk_names_the_file_and_leaves_no_temporary_file(tmp_path, full_disk, write):
    with pytest.raises(DiskFullError, match=r"cannot write .*: the disk is full"):
        write(tmp_path / "out.bin")
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temporary file


def test_an_old_file_survives_a_failed_rewrite(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    save_checkpoint(path, {"w": torch.ones(3)})
    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic_io.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"w": torch.zeros(3)})
    assert torch.equal(load_checkpoint(path)["w"], torch.ones(3)) and len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_files_get_the_permissions_the_umask_grants(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        for name, write in (("a.txt", lambda p: write_text(p, "x")),
                            ("b.pt", lambda p: save_checkpoint(p, {"w": torch.ones(1)}))):
            write(tmp_path / name)
            assert (tmp_path / name).stat().st_mode & 0o777 == mode
    finally:
        os.umask(old)
