"""What a person sees while the study runs: progress lines in the logs, and `srvae status` per run."""

import json

import pytest

import srvae.study.run.steps as steps
from srvae.cli import main
from srvae.infra.locks import exclusive
from srvae.study.config import validate_config
from srvae.study.run import paths
from srvae.study.run.progress import duration, eta, run_status, write_status

from ..conftest import tiny_config


def test_durations_and_eta_read_at_a_glance():
    assert [duration(s) for s in (4.4, 65, 3725)] == ["4 s", "1 min 05 s", "1 h 02 min"]
    assert eta(0, 10, 5.0) is None and eta(2, 10, 5.0) == pytest.approx(20.0)


def test_every_step_says_what_it_does(tmp_path, capsys):
    cfg = validate_config(tiny_config(tmp_path, epochs=2))
    for step in (steps.train_run, steps.evaluate_run, steps.speed_run):
        step(cfg, "tiny", "vae", 0)
    err = capsys.readouterr().err
    assert "tiny/vae/seed0: epoch 2/2 train" in err and "ETA" in err and "best" in err
    assert "tiny/vae/seed0: evaluating 100/100 test images, K = 20" in err
    assert "tiny/vae/seed0: test NLL" in err and "samples/s on" in err


def test_status_of_each_kind_of_run(tmp_path, capsys):
    raw = {**tiny_config(tmp_path, epochs=1), "seeds": [0, 1, 2, 3, 4]}
    cfg = validate_config(raw)
    run = [paths.run_dir(cfg.results_dir, "tiny", "vae", s) for s in range(5)]
    for step in (steps.train_run, steps.evaluate_run, steps.speed_run):
        step(cfg, "tiny", "vae", 0)  # seed 0: done
    steps.train_run(cfg, "tiny", "vae", 1)  # seed 1: trained, not yet evaluated
    write_status(run[2], "train", "failed", error="training objective is nan at epoch 3")  # seed 2: failed
    write_status(run[3], "train", "running", detail="epoch 3/9")  # seed 3: its job was killed
    # seed 4: still waiting
    states = {s: run_status(run[s], tmp_path / "logs" / f"seed{s}") for s in range(5)}
    assert states[0].state == "done" and "test NLL" in states[0].detail
    assert states[1].state == "trained"
    assert states[2].state == "failed" and "nan at epoch 3" in states[2].detail and "train.log" in states[2].detail
    assert states[3].state == "interrupted" and "rerun" in states[3].detail
    assert states[4].state == "waiting"
    with exclusive(run[3] / ".train.lock", "train"):  # a live job holds its lock: running, with its progress
        write_status(run[3], "train", "running", detail="epoch 4/9 ... ETA 1 min 05 s")
        assert run_status(run[3], tmp_path).state == "training"
        assert "ETA 1 min 05 s" in run_status(run[3], tmp_path).detail
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps(raw))
    capsys.readouterr()
    assert main(["status", "--config", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and "done" in lines[0] and "waiting" in lines[4]


def test_a_failing_step_leaves_a_failed_status(tmp_path, capsys):
    raw = tiny_config(tmp_path, epochs=1)
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps(raw))
    assert main(["evaluate", "--config", str(path), "--dataset", "tiny", "--model", "vae", "--seed", "0"]) != 0
    status = json.loads((paths.run_dir(validate_config(raw).results_dir, "tiny", "vae", 0) / "status.json").read_text())
    assert status["state"] == "failed" and status["step"] == "evaluate" and "train this run first" in status["error"]


def test_models_shows_what_each_entry_runs(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps(tiny_config(tmp_path)))
    assert main(["models", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "vae (in the study)" in out and "latents=8" in out and "activation='tanh'" in out  # a default filled in
