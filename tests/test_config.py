import dataclasses

import pytest
import yaml

from srvae.config import SCHEMA_PATH, ConfigError, load_config, runs, train_settings, validate_config
from srvae.train import TrainSettings

from .conftest import REPO


def base():
    return yaml.safe_load((REPO / "config.yaml").read_text())


def test_default_config_is_valid_and_defaults_are_filled(default_config):
    assert default_config["evaluate"]["k"] == 1000
    assert len(runs(default_config)) == len(default_config["study"]["models"]) * len(default_config["seeds"])
    for name in default_config["models"]:
        assert isinstance(train_settings(default_config, name), TrainSettings)


def test_schema_train_keys_are_exactly_the_train_settings():
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    assert set(schema["$defs"]["train"]["properties"]) == {f.name for f in dataclasses.fields(TrainSettings)}


def test_typo_in_a_key_names_the_key_and_the_valid_ones():
    cfg = base()
    cfg["train"]["epoch"] = cfg["train"].pop("epochs")
    with pytest.raises(ConfigError) as e:
        validate_config(cfg)
    msg = str(e.value)
    assert "train: unknown key 'epoch' (did you mean 'epochs'?)" in msg and "valid keys:" in msg


def test_unknown_model_class_lists_the_registered_ones():
    cfg = base()
    cfg["models"]["vae"]["class"] = "vea"
    with pytest.raises(ConfigError, match=r"models.vae: unknown model class 'vea' \(did you mean 'vae'\?\); registered"):
        validate_config(cfg)


def test_unknown_hyper_parameter_is_named():
    cfg = base()
    cfg["models"]["vae"]["params"]["latent"] = 10
    with pytest.raises(ConfigError, match=r"unknown hyper-parameter\(s\) 'latent' \(did you mean 'latents'\?\)"):
        validate_config(cfg)


def test_study_naming_an_undefined_model_fails():
    cfg = base()
    cfg["study"]["models"] = ["vae", "sere"]
    with pytest.raises(ConfigError, match="study.models: 'sere' is not defined under models"):
        validate_config(cfg)


def test_wrong_types_and_values_are_named():
    cfg = base()
    cfg["evaluate"]["k"] = 0
    cfg["device"] = "gpu"
    with pytest.raises(ConfigError) as e:
        validate_config(cfg)
    assert "evaluate.k: 0 is less than the minimum of 1" in str(e.value)
    assert "device: 'gpu' is not one of 'auto', 'cpu', 'cuda'" in str(e.value)


def test_config_files_merge_left_to_right(tmp_path):
    override = tmp_path / "override.yaml"
    override.write_text("seeds: [5]\ntrain: {epochs: 2}\n")
    cfg = load_config([REPO / "config.yaml", override])
    assert cfg["seeds"] == [5] and cfg["train"]["epochs"] == 2
    assert cfg["train"]["batch_size"] == base()["train"]["batch_size"]  # deep merge keeps siblings


def test_missing_or_malformed_files_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config([tmp_path / "nope.yaml"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("seeds: [0\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config([bad])
