"""Every model of the study, by the name ``config.yaml`` uses for it, and the one factory that builds them.

Adding a model: write its file (a :class:`~srvae.models.base.LatentVariableModel` with a ``Config``
dataclass), add it to :data:`MODELS` below, and add an entry under ``models:`` in ``config.yaml``.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

import pydantic
from torch import Tensor

from baselines.conv_dlgm import ConvDLGM
from baselines.conv_vae import ConvVAE
from baselines.dlgm import DLGM
from baselines.iaf_vae import IAFVAE
from baselines.independent_vae import IndependentVAE
from baselines.ladder_vae import LadderVAE
from baselines.maf import MAF
from baselines.vae import VAE
from srvae.errors import UserError
from srvae.models.base import LatentVariableModel
from srvae.sere.conv_sere_vae import ConvSeReVAE
from srvae.sere.sere_maf import SeReMAF
from srvae.sere.sere_vae import SeReVAE
from srvae.sere.sr_iaf import SelfReflectiveIAF

#: config name (``models.<entry>.class``) → model class
MODELS: dict[str, type[LatentVariableModel]] = {
    "sere_vae": SeReVAE,
    "sr_iaf": SelfReflectiveIAF,
    "dlgm": DLGM,
    "independent_vae": IndependentVAE,
    "ladder_vae": LadderVAE,
    "iaf_vae": IAFVAE,
    "vae": VAE,
    "maf": MAF,
    "sere_maf": SeReMAF,
    "conv_sere_vae": ConvSeReVAE,
    "conv_dlgm": ConvDLGM,
    "conv_vae": ConvVAE,
}


class UnknownModelError(UserError, ValueError):
    pass


def model_class(name: str) -> type[LatentVariableModel]:
    """The model class registered as ``name``; an unknown name is an error that suggests the closest one."""
    if name not in MODELS:
        hint = difflib.get_close_matches(name, MODELS, n=1)
        did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise UnknownModelError(
            f"unknown model class {name!r}{did_you_mean}; registered classes: {', '.join(sorted(MODELS))}"
        )
    return MODELS[name]


def _describe(error: dict[str, Any]) -> str:
    where = ".".join(str(p) for p in error["loc"])
    return f"{where}: {error['msg']} (got {error['input']!r})"


def make_config(name: str, params: dict[str, Any] | None) -> Any:
    """The typed config of model class ``name`` from a dict of hyper-parameters.

    Values are checked against the dataclass's type hints (types, ranges, activation names) and converted
    where that is lossless (``"2"`` → ``2``, lists → tuples: configs are hashable data). Unknown keys and
    bad values are errors that name the key.
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
    try:
        return pydantic.TypeAdapter(cfg_cls).validate_python(params)
    except pydantic.ValidationError as e:
        raise ValueError(f"model class {name!r}: " + "; ".join(_describe(err) for err in e.errors())) from None


def build_model(
    name: str, params: dict[str, Any] | None, data_dim: int, data_mean: Tensor | None = None
) -> LatentVariableModel:
    """Build model class ``name`` with hyper-parameters ``params`` for ``data_dim``-dimensional data.

    ``data_mean`` (the training set's pixel means) lets decoders start at the data's marginal.
    """
    return model_class(name)(make_config(name, params), data_dim, data_mean)
