"""Config name → model class, and the one factory that builds a model from its typed config.

A model joins the study by decorating its class with :func:`register` in a module listed in
``MODEL_MODULES``; ``config.yaml`` then refers to it by that name (``models.<entry>.class``).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from typing import Any, get_type_hints

from torch import Tensor

from .interface import LatentVariableModel

#: modules whose import registers models; add yours here
MODEL_MODULES = (
    "baselines.vae",
    "srvae.sere_vae",
    "srvae.sr_iaf",
    "baselines.dlgm",
    "baselines.iaf_vae",
    "baselines.ladder_vae",
)

_MODELS: dict[str, type[LatentVariableModel]] = {}


class UnknownModelError(ValueError):
    pass


def register(name: str):
    """Class decorator: make a :class:`LatentVariableModel` available to configs as ``name``."""

    def deco(cls: type[LatentVariableModel]) -> type[LatentVariableModel]:
        if name in _MODELS and _MODELS[name] is not cls:
            raise ValueError(f"model name {name!r} registered twice ({_MODELS[name]} and {cls})")
        if not dataclasses.is_dataclass(getattr(cls, "Config", None)):
            raise TypeError(f"{cls.__name__}.Config must be a dataclass of its hyper-parameters")
        _MODELS[name] = cls
        return cls

    return deco


def model_classes() -> dict[str, type[LatentVariableModel]]:
    """Every registered model, by config name."""
    for module in MODEL_MODULES:
        importlib.import_module(module)
    return dict(_MODELS)


def model_class(name: str) -> type[LatentVariableModel]:
    classes = model_classes()
    if name not in classes:
        hint = difflib.get_close_matches(name, classes, n=1)
        did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise UnknownModelError(
            f"unknown model class {name!r}{did_you_mean}; registered classes: {', '.join(sorted(classes))}"
        )
    return classes[name]


def make_config(name: str, params: dict[str, Any] | None) -> Any:
    """The typed config of model class ``name`` from a dict of hyper-parameters.

    Unknown keys are an error that names the valid ones; lists become tuples (configs are hashable data).
    """
    cfg_cls = model_class(name).Config
    fields = {f.name for f in dataclasses.fields(cfg_cls)}
    params = dict(params or {})
    unknown = sorted(set(params) - fields)
    if unknown:
        hints = {u: difflib.get_close_matches(u, fields, n=1) for u in unknown}
        described = ", ".join(f"{u!r}" + (f" (did you mean {h[0]!r}?)" if h else "") for u, h in hints.items())
        raise ValueError(
            f"model class {name!r}: unknown hyper-parameter(s) {described}; valid: {', '.join(sorted(fields))}"
        )
    hints = get_type_hints(cfg_cls)
    for key, value in params.items():
        if isinstance(value, list):
            params[key] = tuple(value)
        expected = hints[key]
        if expected is float and isinstance(value, int):
            params[key] = float(value)
    return cfg_cls(**params)


def build_model(
    name: str, params: dict[str, Any] | None, data_dim: int, data_mean: Tensor | None = None
) -> LatentVariableModel:
    """Build model class ``name`` with hyper-parameters ``params`` for ``data_dim``-dimensional data.

    ``data_mean`` (the training set's pixel means) lets decoders start at the data's marginal.
    """
    cfg = make_config(name, params)
    return model_class(name)(cfg, data_dim=data_dim, data_mean=data_mean)
