"""The training-curve figure: one paper table's models, a legend that hides no curve, each model's own second half."""

import matplotlib.colors as mcolors
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from srvae.study.report import figures


@pytest.fixture
def drawn(monkeypatch):
    """The figure each drawing function made, by stem name (saved as usual)."""
    made, save = {}, figures.save_figure

    def keep(fig, stem):
        made[stem.name] = fig
        return save(fig, stem)

    monkeypatch.setattr(figures, "save_figure", keep)
    return made


def _curves(epochs: dict[str, int]) -> pd.DataFrame:
    return pd.DataFrame([{"label": label, "seed": seed, "epoch": e, "valid_elbo": -200.0 + 3 * e + seed}
                         for label, n in epochs.items() for seed in (0, 1) for e in range(1, n + 1)])


def test_second_half_is_each_models_own(tmp_path, drawn):
    """A 15-epoch model beside 30-epoch ones appears in the zoomed panel, over its epochs 8-15."""
    colours = figures.palette(["long", "short"])
    figures.training_curves(_curves({"long": 30, "short": 15}), colours, tmp_path / "curves")
    zoom = drawn["curves"].axes[1]
    drawn_x = {colour: line.get_xdata() for line in zoom.get_lines() if len(line.get_xdata())
               for colour in [mcolors.to_hex(line.get_color())]}
    assert list(drawn_x[mcolors.to_hex(colours["long"])]) == list(range(16, 31))
    assert list(drawn_x[mcolors.to_hex(colours["short"])]) == list(range(8, 16))


def test_legend_lists_only_the_drawn_models_outside_the_axes(tmp_path, drawn):
    """Only the models of ``colours`` (one table's) are drawn and listed, in distinct colours, in a legend that lies
    below the panels, where it covers no curve."""
    curves = _curves({"A": 4, "B": 4, "other table's": 4})
    colours = figures.palette(["A", "B"])
    figures.training_curves(curves, colours, tmp_path / "table")
    fig = drawn["table"]
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["A", "B"]
    assert all(ax.get_legend() is None for ax in fig.axes)
    canvas = FigureCanvasAgg(fig)  # save_figure closed the figure: lay it out again to measure it
    canvas.draw()
    renderer = canvas.get_renderer()
    legend_box = legend.get_window_extent(renderer)
    assert all(legend_box.y1 <= ax.get_tightbbox(renderer).y0 + 1 for ax in fig.axes)
    for ax in fig.axes:
        assert {mcolors.to_hex(line.get_color()) for line in ax.get_lines() if len(line.get_xdata())} \
            == {mcolors.to_hex(c) for c in colours.values()}


def test_palette_never_repeats_a_colour():
    for n in (3, 10, 11, 14):
        colours = figures.palette([f"model {i}" for i in range(n)])
        assert len({mcolors.to_hex(c) for c in colours.values()}) == n
