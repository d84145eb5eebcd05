"""The `auto` settings of the fast path: which models' seeds `train.fuse_seeds` fuses (CUDA only under `auto`, a
config error under `true` for a model that cannot be fused), when `train.cuda_graphs` captures, and the eager
fallback, with one warning, where a capture fails (the capture made to fail on the CPU)."""

from __future__ import annotations

import warnings

import pytest
import torch

import srvae.study.run.fused as fused_module
import srvae.study.run.train as train_module
from srvae.registry import build_model
from srvae.study.config import ConfigError, TrainSettings, validate_config
from srvae.study.run.fused import build_seed_models, fused_models, train_fused
from srvae.study.run.step import make_optimiser
from srvae.study.run.train import captured_step, train

from ..conftest import Killed, kill_at_epoch_3, tiny_config

SERE_MAF = {"class": "sere_maf", "table": "table3",
            "params": {"layers": 2, "latents": 3, "encoder_hidden": [8], "prior_hidden": [8],
                       "posterior_hidden": [8], "bijector_hidden": [8], "data_hidden": [8], "made_hidden": [8],
                       "data_mades": 1}}
VAE = {"class": "vae", "params": {"latents": 4, "hidden": [16]}}


def _study(tmp_path, models: dict, seeds=(0, 1), **train):
    cfg = tiny_config(tmp_path, models, **train)
    cfg["seeds"] = list(seeds)
    cfg["datasets"]["tiny_logit"] = {**cfg["datasets"]["tiny"], "transform": "dequantise_logit"}
    cfg["study"]["datasets"] = ["tiny", "tiny_logit"]
    return validate_config(cfg)


def test_auto_fuses_on_cuda_only_and_skips_what_cannot_fuse_with_a_log_line(tmp_path):
    cfg = _study(tmp_path, {"vae": VAE, "sere_maf": SERE_MAF,
                            "averaged": {**VAE, "train": {"polyak_decay": 0.999}}})
    assert cfg.train.fuse_seeds == "auto" and cfg.train.cuda_graphs == "auto"
    lines: list[str] = []
    assert fused_models(cfg, cuda=False, log=lines.append) == [] and lines == []
    assert fused_models(cfg, cuda=True, log=lines.append) == ["vae"]
    assert len(lines) == 2
    assert "models.sere_maf" in lines[0] and "aten::nonzero" in lines[0]
    assert "models.averaged" in lines[1] and "polyak_decay" in lines[1]


def test_true_fuses_on_the_cpu_false_never_and_one_seed_never(tmp_path):
    cfg = _study(tmp_path, {"vae": VAE, "plain": {**VAE, "train": {"fuse_seeds": False}}}, fuse_seeds=True)
    assert fused_models(cfg, cuda=False, log=print) == ["vae"]
    assert fused_models(_study(tmp_path, {"vae": VAE}, seeds=[0], fuse_seeds=True), cuda=True, log=print) == []


@pytest.mark.parametrize(("entry", "reason"), [(SERE_MAF, "aten::nonzero"),
                                               ({**VAE, "train": {"polyak_decay": 0.99}}, "Polyak")])
def test_true_on_a_model_that_cannot_fuse_is_a_config_error_naming_it(tmp_path, entry, reason):
    with pytest.raises(ConfigError, match=rf"models\.odd: train\.fuse_seeds is true.*{reason}.*auto"):
        _study(tmp_path, {"vae": VAE, "odd": entry}, fuse_seeds=True)


def test_the_static_refusals_are_what_vmap_refuses():
    """fuse_refusal decides before any job runs: its class list must agree with FusedSeeds' own vmap check."""
    settings = TrainSettings()
    for cls, params in (("sere_maf", SERE_MAF["params"]), ("vae", VAE["params"])):
        models = [build_model(cls, params, 24) for _ in range(2)]
        refused = fused_module.fuse_refusal(cls, settings) is not None
        try:
            fused_module.FusedSeeds(models, settings, name=cls)
        except fused_module.UnsupportedModelError:
            assert refused, cls
        else:
            assert not refused, cls


def test_cuda_graphs_auto_is_on_for_cuda_only_and_yields_to_compile():
    assert TrainSettings().graphs_on("cuda") and not TrainSettings().graphs_on("cpu")
    assert not TrainSettings(compile=True).graphs_on("cuda")  # auto: compile asked for the other fast path
    assert TrainSettings(cuda_graphs=True).graphs_on("cuda") and not TrainSettings(cuda_graphs=False).graphs_on("cuda")
    assert TrainSettings.model_validate({"cuda_graphs": "true", "fuse_seeds": "false"}).cuda_graphs is True
    with pytest.raises(ValueError, match="compile and cuda_graphs are both true"):
        TrainSettings(compile=True, cuda_graphs=True)


def test_a_failed_capture_warns_once_and_restores_the_random_state():
    def capture():
        torch.rand(5)  # a capture draws from the stream before it fails
        raise RuntimeError("simulated capture failure")

    before = torch.get_rng_state()
    with pytest.warns(UserWarning, match="run-x: capturing the training step as a CUDA graph failed, training "
                                         "eagerly.*simulated capture failure") as caught:
        assert captured_step(capture, "run-x", torch.device("cpu")) is None
    assert len(caught) == 1 and torch.equal(torch.get_rng_state(), before)


def _capture_fails(monkeypatch):
    """As on a GPU where capture fails: the run asks for a graph (with the ordinary optimiser: a capturable one
    needs CUDA), and the capture raises."""
    monkeypatch.setattr(TrainSettings, "graphs_on", lambda self, device_type: self.cuda_graphs is True)
    monkeypatch.setattr(train_module, "make_optimiser", lambda params, settings: make_optimiser(
        params, settings.model_copy(update={"cuda_graphs": False})))
    monkeypatch.setattr(fused_module, "make_optimiser", train_module.make_optimiser)

    def fail(*args, **kwargs):
        raise RuntimeError("simulated capture failure")

    monkeypatch.setattr(train_module, "GraphedStep", fail)
    monkeypatch.setattr(fused_module, "CapturedStep", fail)


@pytest.mark.parametrize("fused", [False, True], ids=["one-seed", "fused-seeds"])
def test_train_falls_back_to_the_eager_run_with_one_warning(tiny_data, tmp_path, monkeypatch, fused):
    """train() and fused seeds whose capture fails: one warning, then exactly the run without graphs."""
    _capture_fails(monkeypatch)
    runs = []
    for graphs in (False, True):
        settings = TrainSettings(epochs=2, batch_size=64, cuda_graphs=graphs, checkpoint_every=1000)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if fused:
                models = build_seed_models("vae", VAE["params"], [0, 1], tiny_data, settings, "cpu")
                torch.manual_seed(5)
                results = train_fused(models, tiny_data, settings, [0, 1], [tmp_path / f"{graphs}{s}" for s in "01"],
                                      ["a", "b"], log=lambda msg: None)
            else:
                torch.manual_seed(5)
                models = [build_model("vae", VAE["params"], 784)]
                results = [train(models[0], tiny_data, settings, 0, tmp_path / f"{graphs}.pt", log=lambda msg: None)]
        failed = [w for w in caught if "capturing the training step as a CUDA graph failed" in str(w.message)]
        assert len(failed) == graphs, [str(w.message) for w in caught]
        runs.append(([[{k: v for k, v in m.items() if k != "seconds"} for m in r["metrics"]] for r in results],
                     [[p.detach().clone() for p in m.parameters()] for m in models]))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(a, b) for pa, pb in zip(runs[0][1], runs[1][1]) for a, b in zip(pa, pb))


def test_an_interrupted_fused_job_resumes_every_seed_where_it_stopped(tiny_data, tmp_path):
    """Killed during epoch 3 of 3: the rerun resumes each seed from its own checkpoint after epoch 2 (weights,
    optimiser slice, data stream, noise) and ends exactly where the uninterrupted job ends."""
    settings = TrainSettings(epochs=3, batch_size=64, checkpoint_every=1, lr=3e-3)
    seeds, names = [0, 1], ["tiny/vae/seed0", "tiny/vae/seed1"]

    def job(directory, on_epoch=None, log=lambda msg: None):
        models = build_seed_models("vae", VAE["params"], seeds, tiny_data, settings, "cpu")
        results = train_fused(models, tiny_data, settings, seeds, [directory / f"seed{s}.pt" for s in seeds], names,
                              log=log, on_epoch=on_epoch)
        return results, [m.state_dict() for m in models]

    whole, whole_states = job(tmp_path / "whole")
    with pytest.raises(Killed):
        job(tmp_path / "cut", on_epoch=[kill_at_epoch_3, lambda message: None])
    lines: list[str] = []
    resumed, resumed_states = job(tmp_path / "cut", log=lines.append)
    assert any("resuming every seed from its checkpoint after epoch 2" in line for line in lines), lines
    for a, b in zip(whole, resumed):
        assert [{k: v for k, v in m.items() if k != "seconds"} for m in a["metrics"]] == \
               [{k: v for k, v in m.items() if k != "seconds"} for m in b["metrics"]]
    for a, b in zip(whole_states, resumed_states):
        assert all(torch.equal(a[k], b[k]) for k in a)
