"""What the report says about the study it renders: :class:`StudyDescription`, made from the config by
:func:`describe` (data, split, pre-processing, training budget, K, the models and their published numbers).

The report (:func:`srvae.study.report.render.render_report`) prints the header and labels its tables from
this description, never from the config itself, so that a rendered study (a test's, or one from another
config) says what it ran.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import NotRequired, TypedDict

from srvae.registry import model_class

from ..config import DatasetSettings, StudyConfig, TrainSettings
from ..data.sources import SOURCES


class DatasetDescription(TypedDict):
    """One study dataset, as the header describes it."""

    name: str  # its description, or its key
    source: str  # a key of srvae.study.data.sources.SOURCES
    split: dict[str, int]  # train / valid / test sizes as trained and scored (train doubled by flips)
    preprocessing: str  # how pixels became data, as a sentence
    transform: str  # binarise, or dequantise_logit (Table 3)
    logit_lambda: float  # λ of the logit transform (dequantise_logit)
    hflip: bool  # training set doubled with mirror images
    paper_data: str  # the papers' data set the source stands for: mnist or cifar10
    paper_split: dict[str, int]  # that data set's official train / test sizes
    full: bool  # whether this is all of that data set (a study that is not gets a warning)
    models: list[str]  # the study models that run on it, in config order


class TrainingException(TypedDict):
    """Models that train otherwise than most: their labels and the settings in which they differ, as text."""

    models: list[str]
    settings: list[str]


class TrainingDescription(TypedDict):
    """The training budget: every setting's most common value among the study models, and the models that differ."""

    budget: str
    exceptions: list[TrainingException]  # empty when every model trains with the common budget


#: one study model: its label, published number id, class, paper table, training and evaluation samples,
#: and whether its likelihood is exact (a flow)
ModelDescription = TypedDict("ModelDescription", {
    "label": str, "reported": str | None, "class": str, "table": str, "iw_samples": int, "k": int, "exact": bool})


class StudyDescription(TypedDict):
    """The study, as :func:`describe` makes it from the config."""

    datasets: dict[str, DatasetDescription]  # dataset key (as in results/<dataset>/) → description
    training: TrainingDescription
    k: int  # the global importance samples of the test NLL (a model may have its own, under models)
    seeds: list[int]
    models: dict[str, ModelDescription]  # config order = table order
    machine: NotRequired[dict[str, str]]  # printed as given; default: the machine rendering the report


def _split(ds: DatasetSettings) -> dict[str, int]:
    split = ds.split.model_dump(exclude_none=True)
    source = SOURCES[ds.source]
    if source.official_split:
        pool, test = source.paper_split
        split["test"] = test
        split.setdefault("train", pool - split["valid"])
    if ds.hflip:
        split["train"] *= 2  # every training image and its mirror image
    return split


def _preprocessing(ds: DatasetSettings) -> str:
    if ds.transform == "binarise":
        return ("dynamic binarisation: training images re-binarised every epoch; validation and test binarised "
                f"once (seed {ds.binarisation_seed})")
    return (f"uniform dequantisation (x + u) / 256 drawn once (seeds {ds.dequantisation_seed}, "
            f"+ 1, + 2 for train, validation, test), then logit(λ + (1 − 2λ) x) with λ = {ds.logit_lambda:g}"
            + ("; training set doubled with mirror images" if ds.hflip else ""))


def _dataset(cfg: StudyConfig, name: str) -> DatasetDescription:
    ds = cfg.datasets[name]
    source = SOURCES[ds.source]
    pool, test = source.paper_split
    return DatasetDescription(
        name=ds.description or name, source=ds.source, split=_split(ds), preprocessing=_preprocessing(ds),
        transform=ds.transform, logit_lambda=ds.logit_lambda, hflip=ds.hflip, paper_data=source.paper_data,
        paper_split={"train": pool, "test": test},
        # the paper's data: the whole official training pool (train + validation) and test set
        full=source.official_split and ds.split.train in (None, pool - ds.split.valid),
        models=cfg.models_on(name))


def describe(cfg: StudyConfig) -> StudyDescription:
    """The study that ``cfg`` runs, as the report describes it."""
    return StudyDescription(
        datasets={name: _dataset(cfg, name) for name in cfg.study.datasets},
        training=training(cfg.train, {cfg.models[m].label: cfg.train_settings(m) for m in cfg.study.models}),
        k=cfg.evaluate.k,
        seeds=list(cfg.seeds),
        models={m: {"label": cfg.models[m].label, "reported": cfg.models[m].reported, "class": cfg.models[m].cls,
                    "table": cfg.models[m].table, "iw_samples": cfg.train_settings(m).iw_samples,
                    "k": cfg.evaluate_settings(m).k, "exact": model_class(cfg.models[m].cls).exact}
                for m in cfg.study.models})


_SCHEDULES = {"constant": "", "exponential": " decaying ×{s.lr_decay:g} per epoch",
              "burda": " in Burda et al.'s 8 stages (÷10^(1/7) each)"}
_OPTIMIZERS = {"adam": "Adam", "adamax": "Adamax"}


def _clips(s: TrainSettings) -> str:
    caps = ([f"gradient norm ≤ {s.grad_clip:g}"] if s.grad_clip is not None else []) + (
        [f"gradient entries clipped to ±{s.grad_clip_value:g}"] if s.grad_clip_value is not None else [])
    return ", ".join(caps) or "no gradient clipping"


#: the training settings that do not change the trained model (when checkpoints and log lines are written, the
#: validation batch): the header leaves them out
BOOKKEEPING = frozenset({"checkpoint_every", "log_every", "eval_batch_size"})

#: how the header states the training settings: (the TrainSettings fields a phrase states, the phrase for settings
#: ``s``). Every field is stated by one phrase or is in BOOKKEEPING (a test checks), so that a model that differs
#: in any setting is listed with it.
SETTING_PHRASES: tuple[tuple[tuple[str, ...], Callable[[TrainSettings], str]], ...] = (
    (("epochs", "finetune_epochs", "finetune_lr_factor"),
     lambda s: f"{s.epochs:,} epochs" + (f" + {s.finetune_epochs:,} fine-tuning at ×{s.finetune_lr_factor:g} lr"
                                         if s.finetune_epochs else "")),
    (("patience",), lambda s: (f"early stopping after {s.patience} epochs without a better validation value"
                               if s.patience else "no early stopping")),
    (("batch_size",), lambda s: f"batch {s.batch_size}"),
    (("optimizer", "adam_eps"), lambda s: f"{_OPTIMIZERS[s.optimizer]} (ε = {s.adam_eps:g})"),
    (("lr", "lr_schedule", "lr_decay"), lambda s: f"lr {s.lr:g}" + _SCHEDULES[s.lr_schedule].format(s=s)),
    (("polyak_decay",), lambda s: (f"Polyak averaging (decay {s.polyak_decay:g})" if s.polyak_decay
                                   else "no Polyak averaging")),
    (("weight_decay",), lambda s: f"L2 penalty {s.weight_decay:g}" if s.weight_decay else "no L2 penalty"),
    (("grad_clip", "grad_clip_value"), lambda s: _clips(s)),
    (("kl_warmup_epochs",), lambda s: (f"KL warm-up over {s.kl_warmup_epochs} epochs" if s.kl_warmup_epochs
                                       else "no KL warm-up")),
    (("iw_samples",), lambda s: (f"trained on the {s.iw_samples}-sample importance-weighted bound"
                                 if s.iw_samples > 1 else "trained on the ELBO")),
    (("selection", "selection_k"), lambda s: "selected on the validation " + (
        f"IW bound (K = {s.selection_k})" if s.selection == "iw" else "ELBO")),
    (("refresh_statistics",), lambda s: ("batch-norm statistics re-estimated before every validation"
                                         if s.refresh_statistics else "validated with running batch-norm statistics")),
    (("compile", "cuda_graphs"), lambda s: ("torch.compile" if s.compile else "eager steps" if s.cuda_graphs is False
                                            else "CUDA graphs" + (" on CUDA (eager on the CPU)"
                                                                  if s.cuda_graphs == "auto" else ""))),
    # fused seeds draw other reparameterisation noise than separate runs: the same model, another draw
    (("fuse_seeds",), lambda s: ("seeds trained one job each" if s.fuse_seeds is False
                                 else "seeds fused in one job" + (" on CUDA (one job each on the CPU)"
                                                                  if s.fuse_seeds == "auto" else ""))),
)


def budget(s: TrainSettings) -> list[str]:
    """Every training setting of ``s`` as a person writes it, in :data:`SETTING_PHRASES`' order: "30 epochs", "no
    early stopping", "batch 100", "Adam (ε = 0.0001)", "lr 0.002", …"""
    return [phrase(s) for _, phrase in SETTING_PHRASES]


def training(default: TrainSettings, models: dict[str, TrainSettings]) -> TrainingDescription:
    """The budget of the models (label → settings): each setting's most common phrase (on a tie, the
    ``default``'s, i.e. the config's ``train:``), and the models whose settings differ, grouped by what differs."""
    phrases = {label: budget(s) for label, s in models.items()}
    common = []
    for i, fallback in enumerate(budget(default)):
        counts = Counter(p[i] for p in phrases.values())
        top = max(counts.values(), default=0)
        common.append(fallback if counts.get(fallback, 0) == top else next(t for t, n in counts.items() if n == top))
    groups: dict[tuple[str, ...], list[str]] = {}  # the settings that differ → labels of the models
    for label, p in phrases.items():
        differs = tuple(text for text, usual in zip(p, common) if text != usual)
        if differs:
            groups.setdefault(differs, []).append(label)
    return TrainingDescription(budget=", ".join(common),
                               exceptions=[{"models": labels, "settings": list(settings)}
                                           for settings, labels in groups.items()])
