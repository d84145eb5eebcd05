"""``config.yaml``: loading, validation with clear errors, defaults, and the study's list of runs.

Configs are data: YAML parsed with ``safe_load``, checked against ``config.schema.yaml`` (JSON Schema, the
format Snakemake's ``validate`` reads) and then against the model registry, so that a typo or an unknown
model fails before any job runs, naming the key and the valid choices.
"""

from __future__ import annotations

import copy
import hashlib
import difflib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .registry import make_config, model_class
from .reported import ReportedValueError, check_reported_ids
from .train import TrainSettings

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key and how to fix it."""


def _schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _where(path: Iterable[Any]) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _explain(error: jsonschema.ValidationError) -> str:
    where = _where(error.absolute_path)
    if error.validator == "additionalProperties":
        valid = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(valid))
        parts = []
        for key in unknown:
            hint = difflib.get_close_matches(key, valid, n=1)
            parts.append(f"unknown key {key!r}" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
        return f"{where}: {'; '.join(parts)}; valid keys: {', '.join(valid)}"
    if error.validator == "enum":
        return f"{where}: {error.instance!r} is not one of {', '.join(map(repr, error.validator_value))}"
    if error.validator == "required":
        return f"{where}: {error.message}"
    return f"{where}: {error.message}"


def _fill_defaults(instance: Any, schema: dict[str, Any], root: dict[str, Any]) -> None:
    """Insert the schema's ``default`` values for missing keys, recursively."""
    if "$ref" in schema:
        schema = root["$defs"][schema["$ref"].rsplit("/", 1)[1]]
    if not isinstance(instance, dict):
        return
    for key, sub in schema.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if key in instance:
            _fill_defaults(instance[key], sub, root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key in set(instance) - set(schema.get("properties", {})):
            _fill_defaults(instance[key], extra, root)


def _check_names(kind: str, names: list[str], defined: dict[str, Any]) -> None:
    for name in names:
        if name not in defined:
            hint = difflib.get_close_matches(name, defined, n=1)
            raise ConfigError(
                f"study.{kind}: {name!r} is not defined under {kind}:"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
                + f"; defined: {', '.join(defined)}"
            )


def validate_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Check ``cfg`` and return a copy with every default filled in; raise :class:`ConfigError` if invalid."""
    schema = _schema()
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(cfg), key=lambda e: list(e.path))
    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(_explain(e) for e in errors))
    cfg = copy.deepcopy(cfg)
    _fill_defaults(cfg, schema, schema)
    _check_names("datasets", cfg["study"]["datasets"], cfg["datasets"])
    _check_names("models", cfg["study"]["models"], cfg["models"])
    for name, entry in cfg["models"].items():
        try:
            model_class(entry["class"])
            make_config(entry["class"], entry["params"])
        except ValueError as e:
            raise ConfigError(f"models.{name}: {e}") from None
        entry.setdefault("label", name)
        entry.setdefault("reported", None)
    try:
        check_reported_ids([m["reported"] for m in cfg["models"].values()], Path(cfg["report"]["reported_file"]))
    except (ReportedValueError, OSError) as e:
        raise ConfigError(f"report.reported_file / models.*.reported: {e}") from None
    return cfg


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict update, as Snakemake merges several ``--configfile``s."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_config(paths: Iterable[str | Path]) -> dict[str, Any]:
    """Read, merge (later files win) and validate the YAML config files ``paths``."""
    cfg: dict[str, Any] = {}
    for path in paths:
        try:
            data = yaml.safe_load(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} not found") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        cfg = merge(cfg, data)
    return validate_config(cfg)


def train_settings(cfg: dict[str, Any], model: str) -> TrainSettings:
    """Global ``train:`` settings overridden by the model's own ``train:`` entry."""
    return TrainSettings(**{**cfg.get("train", {}), **cfg["models"][model].get("train", {})})


def runs(cfg: dict[str, Any]) -> list[tuple[str, str, int]]:
    """Every (dataset, model, seed) of the study, in config order."""
    study = cfg["study"]
    return [(d, m, s) for d in study["datasets"] for m in study["models"] for s in cfg["seeds"]]


def write_resolved(cfg: dict[str, Any], directory: str | Path) -> str:
    """Write the validated config into ``directory`` under a name from its content; return the path.

    Named by content, so that studies with different configs sharing a results folder never read each
    other's, and an unchanged config is never rewritten.
    """
    from .runio import write_text

    text = yaml.safe_dump(cfg, sort_keys=False)
    path = Path(directory) / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.yaml"
    if not path.exists():
        write_text(path, text)
    return str(path)
