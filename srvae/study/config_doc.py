"""``config/README.md``, generated from the typed settings: every key of the config with its default and meaning
(the fields of :mod:`.config` and their descriptions) and every model class's hyper-parameters with their
defaults (each class's ``Config`` dataclass). ``srvae reference > config/README.md`` rewrites it; a test checks
that the committed file is current, values included.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pydantic
from pydantic_core import PydanticUndefined

from srvae.registry import MODELS

from .config import (
    DatasetSettings,
    EvaluateSettings,
    ModelEntry,
    ReportSettings,
    SpeedSettings,
    Split,
    StudyConfig,
    TrainSettings,
)

INTRO = """\
# Configuring the study

<!-- Generated from the typed settings by `srvae reference > config/README.md`: do not edit by hand. -->

`config.yaml` (at the repository root) holds every experiment choice that differs from the defaults below;
`config/paper.yaml` overrides it with the paper's Table 1 setting, `config/table3.yaml` with its Table 3 setting
(flows on MNIST and CIFAR-10), `config/gpu-short.yaml` with a short full-MNIST Table 1 for one GPU. Several files
merge left to right (`snakemake --configfile config/paper.yaml`, or `srvae check --config config.yaml
config/paper.yaml`), and single values can be set on the command line:

    snakemake --cores 2 --config 'study={models: [vae]}' 'seeds=[0]' 'train={epochs: 3}'

The config is data, checked before any job runs: an unknown key, a wrong type, a value out of range, an
unknown model class or hyper-parameter fails at once, naming the key (`srvae check --config config.yaml`).
Every default lives in one place, the typed settings of `srvae/study/config.py` (and each model class's
`Config`), from which this page and the JSON Schema `srvae/study/config.schema.yaml` (`srvae schema`; editors
with a YAML language server can use it for completion) are generated. Why each default was chosen:
`docs/decisions.md`.
"""

#: (heading, settings class, a note under the table)
SECTIONS: tuple[tuple[str, type[pydantic.BaseModel], str], ...] = (
    ("Top level", StudyConfig,
     "Dataset and model names become folder names and workflow wildcards: letters, digits, `_`, `.` and `-`, "
     "starting with a letter or digit, at most 64 characters. A name, seed or key given twice is an error."),
    ("`datasets.<name>`", DatasetSettings,
     "Every file is checked against its published size and SHA-256 (and MD5 for the `.gz` files and the CIFAR-10 "
     "tarball); reading stops at the first byte past the expected size, and nothing partial is ever left in the "
     "cache. A key that the dataset's source or transform does not use is an error."),
    ("`datasets.<name>.split`", Split, ""),
    ("`models.<name>`", ModelEntry, ""),
    ("`train`", TrainSettings, ""),
    ("`evaluate`", EvaluateSettings, ""),
    ("`speed`", SpeedSettings, ""),
    ("`report`", ReportSettings, ""),
)


def _value(value: Any) -> str:
    """A default as YAML writes it (``null``, ``true``, ``[0, 1, 2]``, ``1e-06``)."""
    if isinstance(value, pydantic.BaseModel):
        return "see below"
    if isinstance(value, tuple):
        value = list(value)
    return f"`{json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value}`"


def _default(field: pydantic.fields.FieldInfo) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    return _value(field.get_default(call_default_factory=True))


def _settings_table(settings: type[pydantic.BaseModel]) -> list[str]:
    rows = ["| Key | Default | Meaning |", "|---|---|---|"]
    for name, field in settings.model_fields.items():
        meaning = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{field.alias or name}` | {_default(field)} | {meaning} |")
    return rows


def _model_tables() -> list[str]:
    lines = ["## Model classes", "",
             "`models.<name>.params` sets a class's hyper-parameters; each missing one takes the default below (the "
             "class's `Config` dataclass: its file's docstring says what each means). `srvae models` prints what every "
             "entry of a config resolves to.", ""]
    for name, cls in sorted(MODELS.items()):
        lines += [f"### `{name}`: `{cls.__module__}.{cls.__name__}`", "", "| Hyper-parameter | Default |", "|---|---|"]
        for field in dataclasses.fields(cls.Config):
            default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
            lines.append(f"| `{field.name}` | {_value(default)} |")
        lines.append("")
    return lines


def reference_markdown() -> str:
    """The text of ``config/README.md``."""
    lines = [INTRO]
    for heading, settings, note in SECTIONS:
        lines += [f"## {heading}", "", *_settings_table(settings), ""]
        if note:
            lines += [note, ""]
    lines += _model_tables()
    return "\n".join(lines).rstrip() + "\n"
