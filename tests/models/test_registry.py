"""The registry: one explicit list of model classes, each with a typed config, and the sizes of the paper's models."""

import dataclasses

import pytest

from srvae.models import LatentVariableModel
from srvae.registry import MODELS, UnknownModelError, build_model, make_config, model_class

#: trainable parameters of config.yaml's entries on 784-pixel images (the study's tables print them too), pinned:
#: a change of a model's size is deliberate
PARAMETERS = {
    "sere_vae": 413_243, "dlgm": 413_925, "dlgm_no_path": 413_666, "independent_vae": 411_859, "sr_iaf": 416_083, "vae": 425_284,
    "ladder_vae": 285_336, "iw_ladder_vae": 285_336, "iaf_vae": 357_248,
    "sere_vae_table1": 2_778_869, "dlgm_table1": 2_778_439, "dlgm_no_path_table1": 2_780_209, "sr_iaf_table1": 2_795_769,
    "independent_vae_table1": 2_779_454,
    "ladder_vae_table1": 2_007_464, "iw_ladder_vae_table1": 2_007_464, "iaf_vae_table1": 1_950_204,
    "conv_sere_vae": 53_556, "conv_dlgm": 53_400, "conv_vae": 55_680,
    "conv_sere_vae_table2": 12_156_644, "conv_dlgm_table2": 12_136_394, "conv_vae_table2": 12_175_832,
    "sere_maf": 936_929, "maf5": 768_640, "maf10": 1_537_280,
    "maf5_mnist": 17_311_040, "maf10_mnist": 34_622_080, "maf5_cifar10": 45_092_160, "maf10_cifar10": 90_184_320,
    "maf_table3": 34_622_080, "sere_maf_table3": 33_395_233, "sere_maf_mnist": 33_395_233,
}
#: the Table 3 entries that config/table3.yaml runs on CIFAR-10 (3,072 dimensions)
CIFAR10_PARAMETERS = {
    "maf5_cifar10": 115_425_280, "maf10_cifar10": 230_850_560, "maf_table3": 105_000_960,
    "sere_maf_table3": 73_715_235,
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_has_a_frozen_dataclass_config_and_the_interface(name):
    cls = MODELS[name]
    assert issubclass(cls, LatentVariableModel) and model_class(name) is cls
    assert dataclasses.is_dataclass(cls.Config) and cls.Config.__dataclass_params__.frozen
    model = build_model(name, {}, 49)  # every hyper-parameter has a default (7 × 7 pixels: the conv models need
    # a square image; the MLP models cut it into 10 blocks, 9 of 5 pixels and one of 4)
    assert model.cfg == cls.Config() and model.data_dim == 49


def test_base_class_refuses_another_models_config():
    with pytest.raises(TypeError, match="takes a VAEConfig"):
        MODELS["vae"](MODELS["ladder_vae"].Config(), 16)


def test_unknown_class_suggests_the_closest():
    with pytest.raises(UnknownModelError, match=r"unknown model class 'sere_vea' \(did you mean 'sere_vae'\?\)"):
        model_class("sere_vea")


@pytest.mark.parametrize("params, message", [
    ({"latent": 3}, r"unknown hyper-parameter\(s\) 'latent' \(did you mean 'latents'\?\)"),
    ({"latents": 0}, r"latents: Input should be greater than or equal to 1 \(got 0\)"),
    ({"activation": "relux"}, r"activation: Input should be 'tanh', .* \(got 'relux'\)"),
    ({"hidden": [16, "x"]}, r"hidden\.1: Input should be a valid integer"),
])
def test_bad_hyper_parameters_name_the_key(params, message):
    with pytest.raises(ValueError, match=message):
        make_config("vae", params)


def test_values_from_the_command_line_are_converted():
    cfg = make_config("sere_vae", {"layers": "3", "encoder_hidden": ["16", 8], "activation": "tanh"})
    assert cfg.layers == 3 and cfg.encoder_hidden == (16, 8)


def test_paper_size_parameter_counts(default_config):
    assert set(PARAMETERS) <= set(default_config.models)  # the entries whose size is pinned; a new one may join
    for dim, counts in ((784, PARAMETERS), (3072, CIFAR10_PARAMETERS)):
        for name, count in counts.items():
            entry = default_config.models[name]
            assert build_model(entry.cls, entry.params, dim).num_parameters == count, (name, dim)
