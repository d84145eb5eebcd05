"""The report's figures: test NLL per model, validation-ELBO curves, and mean test KL per stochastic layer.

The KL figure puts the claim of Apostolopoulou et al. 2020 (arXiv:2007.05166) to the eye: the
self-reflective posterior should keep every stochastic layer in use, where a DLGM with the same
layers may let some collapse onto the prior (KL ≈ 0).

Each function takes the tidy rows of one dataset with a ``label`` column (the model's display name),
a palette label -> colour in config order, over the models that figure draws (:func:`palette`: a dataset's 11+
models would exhaust the colour-blind palette, where one figure's few stay within it) and the path stem to save
to (``<stem>.png`` and ``<stem>.pdf``).
Spread over seeds is one standard deviation (``errorbar="sd"``), never a bootstrap interval, which
would change from run to run.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # jobs have no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from srvae.infra.atomic_io import write_bytes  # noqa: E402

FORMATS = ("png", "pdf")
_WIDTH_PER_MODEL, _MIN_WIDTH, _HEIGHT, _ROW_HEIGHT = 1.0, 4.0, 3.0, 0.45  # inches
_CURVES_SIZE = (7.5, 3.0)  # inches: 1,500 px wide at save_figure's 200 dpi, the width of a page


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
    """One colour per model label, in order: a colour-blind-safe palette while its 10 colours suffice, evenly
    spaced hues beyond (the colour-blind palette repeats itself after 10)."""
    name = "colorblind" if len(labels) <= 10 else "husl"
    return dict(zip(labels, sns.color_palette(name, n_colors=len(labels))))


def _subplots(panels: int, size: tuple[float, float]) -> tuple[plt.Figure, Any]:
    """A figure of ``panels`` side by side, ``size`` inches, in the figures' one theme."""
    sns.set_theme(context="paper", style="whitegrid")
    return plt.subplots(1, panels, figsize=size)


def _figure(n_columns: int, height: float = _HEIGHT, panels: int = 1) -> tuple[plt.Figure, Any]:
    return _subplots(panels, (max(_MIN_WIDTH, _WIDTH_PER_MODEL * n_columns) * panels, height))


def nll_per_model(summary: pd.DataFrame, colours: dict[str, tuple], stem: Path,
                  published: dict[str, float] | None = None, log_likelihood: bool = False) -> list[Path]:
    """Test NLL of each model, best first: mean ± sd over seeds, every seed's value as a dot on top, and the
    published value (a hollow square) where it was estimated as here (``published``: label → NLL). With
    ``log_likelihood`` (Table 3's convention), the test log-likelihood −NLL instead, higher is better."""
    if log_likelihood:
        summary = summary.assign(nll=-summary["nll"])
        published = {label: -nll for label, nll in (published or {}).items()}
    order = list(summary.groupby("label")["nll"].mean().sort_values(ascending=not log_likelihood).index)
    fig, ax = _figure(1, height=_ROW_HEIGHT * len(order) + 1.0)  # one row per model: long names stay readable
    sns.pointplot(data=summary, y="label", x="nll", order=order, hue="label", palette=colours,
                  errorbar="sd", linestyle="none", marker="D", markersize=5, capsize=0.15, legend=False, ax=ax)
    sns.stripplot(data=summary, y="label", x="nll", order=order, color="0.15", size=4, jitter=0.12,
                  edgecolor="white", linewidth=0.6, zorder=10, ax=ax)  # seeds drawn over the mean marker
    shown = {label: nll for label, nll in (published or {}).items() if label in order}  # this dataset's models
    for i, (label, nll) in enumerate(shown.items()):
        ax.plot(nll, order.index(label), marker="s", markerfacecolor="none", markeredgecolor="0.3",
                markersize=8, zorder=5, label="published" if i == 0 else None)  # one legend entry
    if shown:
        ax.legend(loc="lower right")
    ax.set(ylabel="", xlabel="test log-likelihood (logit space, nats, higher is better)" if log_likelihood
           else "test NLL (nats, lower is better)")
    return save_figure(fig, stem)


def training_curves(curves: pd.DataFrame, colours: dict[str, tuple], stem: Path) -> list[Path]:
    """Validation ELBO against epoch: the whole run, and each model's second half zoomed in, where the models
    differ (the first epochs would set the y-range otherwise). Mean over seeds with a ± sd band; a colour and a
    line style per model. ``colours`` names the models to draw (one paper table's): only they are in the legend.

    The second half is each model's own (epochs above half its last epoch), so that a model trained for fewer
    epochs than the others still appears there."""
    labels = [label for label in colours if label in set(curves["label"])]
    curves = curves[curves["label"].isin(labels)]
    fig, (whole, zoom) = _subplots(2, _CURVES_SIZE)
    last = curves.groupby("label")["epoch"].transform("max")
    late = curves[curves["epoch"] > last / 2]
    for ax, data in ((whole, curves), (zoom, late)):
        sns.lineplot(data=data, x="epoch", y="valid_elbo", hue="label", hue_order=labels, style="label",
                     style_order=labels, palette=colours, errorbar="sd", ax=ax, legend=ax is whole)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(xlabel="epoch", ylabel="validation ELBO (nats, one sample)" if ax is whole else "")
    means = late.groupby(["label", "epoch"])["valid_elbo"].mean()
    low, high = means.min(), means.max()
    zoom.set(ylim=(low - 0.05 * (high - low + 1e-9), high + 0.05 * (high - low + 1e-9)),
             title="second half of each model's training")
    whole.set(title="whole run")
    # below both panels, across the figure's width: inside the axes a legend hides the curves
    handles, texts = whole.get_legend_handles_labels()
    whole.get_legend().remove()
    fig.legend(handles, texts, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(2, len(labels)),
               frameon=False, fontsize="small", handlelength=3.0)
    fig.tight_layout()
    return save_figure(fig, stem)


#: below this mean test KL (nats) a stochastic layer carries no information: it has collapsed onto its prior
COLLAPSED = 0.1


def kl_per_layer(kl: pd.DataFrame, colours: dict[str, tuple], stem: Path) -> list[Path]:
    """Mean test KL of each stochastic layer per model (mean ± sd over seeds). A collapsed layer (KL below
    ``COLLAPSED`` nats) is marked with a cross, so that it is not mistaken for a layer the model lacks.

    Layer 1 is the first layer of SeRe-VAE's chain (it generates the first image block) and the Ladder VAE's
    bottom layer ``z_1`` (next to the data). Where models have layers of different widths (``latents`` known), a
    second panel shows their KL per latent unit, so that a narrow layer's small KL is not read as a weak layer."""
    labels = list(colours)
    per_unit = kl.dropna(subset=["latents"]) if "latents" in kl else kl.iloc[:0]
    fig, axes = _figure(int(kl["layer"].max()), panels=2 if len(per_unit) else 1)
    ax = axes[0] if len(per_unit) else axes
    sns.barplot(data=kl, x="layer", y="kl", hue="label", hue_order=labels, palette=colours, errorbar="sd", ax=ax)
    means = kl.groupby(["label", "layer"])["kl"].mean()
    layers = sorted(kl["layer"].unique())
    width = 0.8 / len(labels)  # seaborn's dodge: bars of one layer share 0.8 of its slot
    collapsed = [(layers.index(layer) - 0.4 + width * (labels.index(label) + 0.5), label)
                 for (label, layer), value in means.items() if value < COLLAPSED]
    for x, label in collapsed:
        ax.plot(x, 0.0, marker="x", markersize=7, markeredgewidth=1.5, color=colours[label], zorder=5)
    ax.axhline(0.0, color="0.2", linewidth=0.8)
    ax.set(xlabel="stochastic layer (SeRe-VAE: 1 = first of the chain; Ladder VAE: 1 = next to the data)",
           ylabel="mean test KL (nats)")
    if collapsed:
        ax.plot([], [], marker="x", linestyle="none", color="0.3", label=f"collapsed (KL < {COLLAPSED:g})")
    # below the bars: many models' labels would hide the short layers' bars (and the crosses) inside the axes
    ax.legend(title=None, fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    if len(per_unit):
        unit_labels = [label for label in labels if label in set(per_unit["label"])]
        sns.barplot(data=per_unit.assign(kl=per_unit["kl"] / per_unit["latents"].astype(float)), x="layer", y="kl",
                    hue="label", hue_order=unit_labels, palette=colours, errorbar="sd", ax=axes[1])
        axes[1].set(xlabel="stochastic layer", ylabel="mean test KL per latent unit (nats)",
                    title="per latent unit (models whose layers differ in width)")
        axes[1].legend(title=None, fontsize="small")
    return save_figure(fig, stem)
