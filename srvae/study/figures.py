"""The report's figures: test NLL per model, validation-ELBO curves, and mean test KL per stochastic layer.

The KL figure puts the claim of Apostolopoulou et al. 2020 (arXiv:2007.05166) to the eye: the
self-reflective posterior should keep every stochastic layer in use, where a DLGM with the same
layers may let some collapse onto the prior (KL ≈ 0).

Each function takes the tidy rows of one dataset with a ``label`` column (the model's display name),
a palette label -> colour in config order (:func:`palette`, so a model keeps its colour in every
figure) and the path stem to save to (``<stem>.png`` and ``<stem>.pdf``).
Spread over seeds is one standard deviation (``errorbar="sd"``), never a bootstrap interval, which
would change from run to run.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # jobs have no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from srvae.infra.atomic_io import write_bytes  # noqa: E402

FORMATS = ("png", "pdf")
_WIDTH_PER_MODEL, _MIN_WIDTH, _HEIGHT, _ROW_HEIGHT = 1.0, 4.0, 3.0, 0.45  # inches


def save_figure(fig: plt.Figure, stem: Path) -> list[Path]:
    """Save ``fig`` as ``stem.png`` and ``stem.pdf`` (atomically, byte-stable PDF) and close it."""
    paths = []
    try:
        for fmt in FORMATS:
            path = stem.with_name(f"{stem.name}.{fmt}")
            buffer = io.BytesIO()
            metadata = {"CreationDate": None} if fmt == "pdf" else None  # no timestamp: same bytes each time
            fig.savefig(buffer, format=fmt, metadata=metadata, bbox_inches="tight", dpi=200)
            write_bytes(path, buffer.getvalue())
            paths.append(path)
    finally:
        plt.close(fig)
    return paths


def palette(labels: list[str]) -> dict[str, tuple]:
    """One colour per model label, in order."""
    return dict(zip(labels, sns.color_palette("deep", n_colors=len(labels))))


def _figure(n_columns: int, height: float = _HEIGHT) -> tuple[plt.Figure, plt.Axes]:
    sns.set_theme(context="paper", style="whitegrid")
    return plt.subplots(figsize=(max(_MIN_WIDTH, _WIDTH_PER_MODEL * n_columns), height))


def nll_per_model(summary: pd.DataFrame, colours: dict[str, tuple], stem: Path) -> list[Path]:
    """Test NLL of each model: mean ± sd over seeds, and every seed's value as a dot."""
    # one row per model: long model names stay readable however many models there are
    fig, ax = _figure(1, height=_ROW_HEIGHT * len(colours) + 1.0)
    order = list(colours)
    sns.pointplot(data=summary, y="label", x="nll", order=order, hue="label", palette=colours,
                  errorbar="sd", linestyle="none", marker="D", capsize=0.15, legend=False, ax=ax)
    sns.stripplot(data=summary, y="label", x="nll", order=order, color="0.25", size=4, jitter=0.08,
                  zorder=5, ax=ax)  # seeds on top of the mean marker
    ax.set(ylabel="", xlabel="test NLL (nats, lower is better)")
    return save_figure(fig, stem)


def training_curves(curves: pd.DataFrame, colours: dict[str, tuple], stem: Path) -> list[Path]:
    """Validation ELBO against epoch for each model: mean over seeds with a ± sd band."""
    fig, ax = _figure(len(colours))
    sns.lineplot(data=curves, x="epoch", y="valid_elbo", hue="label", hue_order=list(colours),
                 palette=colours, errorbar="sd", ax=ax)
    ax.set(xlabel="epoch", ylabel="validation ELBO (nats)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(title=None)
    return save_figure(fig, stem)


def kl_per_layer(kl: pd.DataFrame, colours: dict[str, tuple], stem: Path) -> list[Path]:
    """Mean test KL of each stochastic layer per model (mean ± sd over seeds); bars at 0 are collapsed layers."""
    fig, ax = _figure(int(kl["layer"].max()))
    sns.barplot(data=kl, x="layer", y="kl", hue="label", hue_order=list(colours), palette=colours,
                errorbar="sd", ax=ax)
    ax.axhline(0.0, color="0.2", linewidth=0.8)
    ax.set(xlabel="stochastic layer", ylabel="mean test KL (nats)")
    ax.legend(title=None)
    return save_figure(fig, stem)
