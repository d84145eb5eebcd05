"""The report's header states every training setting in which a model differs, for the shipped configs.

Expected values are read from the configs' settings (``cfg.train_settings``), never from the phrases under test.
"""

from __future__ import annotations

from collections import Counter

import pandas as pd
import pytest

from srvae.study.config import StudyConfig, TrainSettings
from srvae.study.load import load_study
from srvae.study.report.description import BOOKKEEPING, SETTING_PHRASES, describe
from srvae.study.report.render import _general_facts

from ..conftest import REPO

#: the shipped studies, as the Snakefile reads them: config.yaml, then a --configfile merged over it
CONFIGS = {"default": ["config.yaml"], "paper": ["config.yaml", "config/paper.yaml"],
           "table3": ["config.yaml", "config/table3.yaml"]}


@pytest.fixture(params=list(CONFIGS))
def study(request, monkeypatch) -> tuple[str, StudyConfig]:
    monkeypatch.chdir(REPO)  # the configs name their reported-values file relative to the checkout
    return request.param, load_study([REPO / path for path in CONFIGS[request.param]])


def _header(cfg: StudyConfig) -> dict[str, str]:
    devices = pd.DataFrame({col: ["test CPU"] for col in ("device_name", "eval_device_name", "sampling_device_name")})
    return _general_facts(devices, {**describe(cfg), "machine": {"CPU": "test"}})


def _clause(cfg: StudyConfig, model: str) -> list[str]:
    """The settings the header lists for ``model`` as differing (empty: it trains with the common budget)."""
    label = cfg.models[model].label
    return next((e["settings"] for e in describe(cfg)["training"]["exceptions"] if label in e["models"]), [])


def test_every_training_setting_is_stated_once_or_is_bookkeeping():
    stated = [field for fields, _ in SETTING_PHRASES for field in fields]
    assert len(stated) == len(set(stated)) and not set(stated) & BOOKKEEPING
    assert set(stated) | BOOKKEEPING == set(TrainSettings.model_fields)


def test_exactly_the_models_that_differ_in_a_setting_are_listed(study):
    """A model is listed as training otherwise iff one of its settings (bookkeeping aside) is not the value most
    study models have."""
    _, cfg = study
    settings = {m: cfg.train_settings(m) for m in cfg.study.models}
    fields = set(TrainSettings.model_fields) - BOOKKEEPING
    usual = {f: Counter(getattr(s, f) for s in settings.values()).most_common(1)[0][0] for f in fields}
    differ = {cfg.models[m].label for m, s in settings.items() if any(getattr(s, f) != usual[f] for f in fields)}
    listed = {label for e in describe(cfg)["training"]["exceptions"] for label in e["models"]}
    assert listed == differ
    header = _header(cfg)
    assert ("Trained otherwise" in header) == bool(differ)
    for label in differ:
        assert label in header["Trained otherwise"]


def test_paper_table2_models_are_listed_with_adamax_and_polyak_averaging(monkeypatch):
    monkeypatch.chdir(REPO)
    cfg = load_study([REPO / p for p in CONFIGS["paper"]])
    table2 = [m for m in cfg.study.models if cfg.models[m].table == "table2"]
    assert table2
    for m in table2:
        s = cfg.train_settings(m)
        assert s.optimizer == "adamax" and s.polyak_decay == 0.999  # the IAF paper's ResNet VAE (config/paper.yaml)
        clause = " ".join(_clause(cfg, m))
        assert "Adamax" in clause and f"Polyak averaging (decay {s.polyak_decay:g})" in clause
    header = _header(cfg)
    assert "Adam (" in header["Training budget"] and "no Polyak averaging" in header["Training budget"]
    vae = cfg.train_settings("vae")  # Burda et al.'s budget: 3,280 epochs in 8 stages, batch 20
    assert f"{vae.epochs:,} epochs" in _clause(cfg, "vae") and f"batch {vae.batch_size}" in _clause(cfg, "vae")
    assert any("Burda" in text for text in _clause(cfg, "vae"))


def test_table3_states_early_stopping_and_l2(monkeypatch):
    monkeypatch.chdir(REPO)
    cfg = load_study([REPO / p for p in CONFIGS["table3"]])
    s = cfg.train  # every Table 3 model: the MAF protocol of config/table3.yaml's train:
    assert s.patience and s.weight_decay
    budget = _header(cfg)["Training budget"]
    assert f"early stopping after {s.patience} epochs" in budget
    assert f"L2 penalty {s.weight_decay:g}" in budget and f"lr {s.lr:g}" in budget


def test_default_cpu_table2_models_state_their_polyak_decay(monkeypatch):
    monkeypatch.chdir(REPO)
    cfg = load_study([REPO / p for p in CONFIGS["default"]])
    averaged = [m for m in cfg.study.models if cfg.train_settings(m).polyak_decay]
    assert averaged
    for m in averaged:
        assert f"Polyak averaging (decay {cfg.train_settings(m).polyak_decay:g})" in _clause(cfg, m)
    assert "no Polyak averaging" in _header(cfg)["Training budget"]


def test_sampling_speed_records_the_machines_load(monkeypatch):
    """speed.json says how busy the machine was when sampling was timed, for the report to print."""
    from srvae.study.run import speed

    from .test_numbers import ScriptedSampler

    model = ScriptedSampler([1.0, 0.25, 0.25])
    monkeypatch.setattr(speed.time, "perf_counter", model.clock)
    monkeypatch.setattr(speed.os, "getloadavg", lambda: (3.25, 1.0, 0.5))
    monkeypatch.setattr(speed.os, "cpu_count", lambda: 2)
    result = speed.sampling_speed(model, n_samples=100, repeats=2, warmup=1)
    assert (result["load_1min"], result["cpus"]) == (3.25, 2)
