"""What the report says about the study it renders: :class:`StudyDescription`, made from the config by
:func:`describe` (data, split, pre-processing, training budget, K, the models and their published numbers).

The report (:func:`srvae.study.report.render.render_report`) prints the header and labels its tables from
this description, never from the config itself, so that a rendered study (a test's, or one from another
config) says what it ran.
"""

from __future__ import annotations

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


class TrainingDescription(TypedDict):
    """The training budget: the global one, and every model whose own differs."""

    budget: str
    exceptions: str  # "label, label: budget; …", empty when every model trains with the global budget


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
    own: dict[str, list[str]] = {}  # budget text → labels of the models that train with it, if not the global one
    for m in cfg.study.models:
        text = budget(cfg.train_settings(m))
        if text != budget(cfg.train):
            own.setdefault(text, []).append(cfg.models[m].label)
    return StudyDescription(
        datasets={name: _dataset(cfg, name) for name in cfg.study.datasets},
        training={"budget": budget(cfg.train),
                  "exceptions": "; ".join(f"{', '.join(labels)}: {text}" for text, labels in own.items())},
        k=cfg.evaluate.k,
        seeds=list(cfg.seeds),
        models={m: {"label": cfg.models[m].label, "reported": cfg.models[m].reported, "class": cfg.models[m].cls,
                    "table": cfg.models[m].table, "iw_samples": cfg.train_settings(m).iw_samples,
                    "k": cfg.evaluate_settings(m).k, "exact": model_class(cfg.models[m].cls).exact}
                for m in cfg.study.models})


def budget(s: TrainSettings) -> str:
    """A training budget as a person writes it: "30 epochs, batch 100, Adam lr 0.002, KL warm-up over 5 epochs"."""
    schedule = {"constant": "", "exponential": f" decaying ×{s.lr_decay:g} per epoch",
                "burda": " in Burda et al.'s 8 stages (÷10^(1/7) each)"}[s.lr_schedule]
    parts = [f"{s.epochs:,} epochs" + (f" + {s.finetune_epochs:,} fine-tuning at ×{s.finetune_lr_factor:g} lr"
                                       if s.finetune_epochs else ""),
             f"batch {s.batch_size}", f"Adam lr {s.lr:g}{schedule}"]
    if s.kl_warmup_epochs:
        parts.append(f"KL warm-up over {s.kl_warmup_epochs} epochs")
    if s.grad_clip is not None:
        parts.append(f"gradient norm ≤ {s.grad_clip:g}")
    if s.iw_samples > 1:
        parts.append(f"trained on the {s.iw_samples}-sample importance-weighted bound")
    parts.append(f"selected on the validation {'IW bound (K = %d)' % s.selection_k if s.selection == 'iw' else 'ELBO'}")
    return ", ".join(parts)
