"""ReliabilityDiagram drawing: pyplot by default, PNG for notebooks, a legend for every colour."""

from __future__ import annotations

import numpy as np
import pytest

from xent_rs import calibration as cal

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
plt = pytest.importorskip("matplotlib.pyplot")
from matplotlib.colors import to_rgba  # noqa: E402


@pytest.fixture
def mixed():
    """A diagram with over-confident bins (high confidence) and under-confident ones (low):
    confidences c in bins, outcomes at rate c - 0.2 above 0.5 and c + 0.15 below."""
    rng = np.random.default_rng(0)
    c = rng.uniform(0.05, 0.95, 20000)
    rate = np.where(c > 0.5, c - 0.2, c + 0.15)
    y = (rng.random(20000) < rate).astype(int)
    d = cal.reliability_diagram(c, y, n_bins=10)
    assert (d.gap > 0.1).any() and (d.gap < -0.1).any()
    return d


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def legend_labels(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_plot_without_ax_draws_on_pyplots_current_figure(mixed):
    before = set(plt.get_fignums())
    fig, (ax_rel, ax_hist) = mixed.plot()
    assert fig is plt.gcf() and ax_rel.figure is plt.gcf() and ax_hist.figure is fig
    assert set(plt.get_fignums()) - before == {fig.number}
    assert ax_rel in fig.axes and ax_hist in fig.axes


def test_repr_png_is_a_png_and_leaves_pyplot_alone(mixed):
    before = plt.get_fignums()
    png = mixed._repr_png_()
    assert isinstance(png, bytes) and png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert plt.get_fignums() == before  # a notebook shows the picture once, not twice


def test_bars_reach_accuracy_and_gaps_span_accuracy_to_confidence(mixed):
    _, (ax, _) = mixed.plot()
    filled = mixed.counts > 0
    acc, conf = mixed.accuracy[filled], mixed.mean_confidence[filled]
    containers = {c.get_label(): c for c in ax.containers}
    bars = containers["Fraction of positives"]  # binary input
    np.testing.assert_allclose([p.get_height() for p in bars], acc, rtol=1e-12)
    over = containers["Gap (over-confident)"]
    under = containers["Gap (under-confident)"]
    spans = sorted((p.get_x(), p.get_y(), p.get_y() + p.get_height())
                   for p in list(over) + list(under))
    left = mixed.edges[:-1][filled]
    np.testing.assert_allclose([s[0] for s in spans], left, rtol=1e-12)
    np.testing.assert_allclose([s[1] for s in spans], np.minimum(acc, conf), rtol=1e-12)
    np.testing.assert_allclose([s[2] for s in spans], np.maximum(acc, conf), rtol=1e-12)
    assert len(over) == int((conf >= acc).sum()) and len(under) == int((conf < acc).sum())


def test_every_colour_in_the_reliability_panel_is_in_its_legend(mixed):
    _, (ax, _) = mixed.plot()
    labels = legend_labels(ax)
    assert labels == ["Perfect calibration", "Fraction of positives", "Gap (over-confident)",
                      "Gap (under-confident)"]
    legend = ax.get_legend()
    handles = legend.legend_handles if hasattr(legend, "legend_handles") else legend.legendHandles
    shown = {(to_rgba(h.get_facecolor()), h.get_hatch()) for h in handles
             if hasattr(h, "get_hatch")}
    drawn = {(to_rgba(p.get_facecolor()), p.get_hatch()) for p in ax.patches}
    assert drawn <= shown, drawn - shown
    assert all(p.get_alpha() in (None, 1.0) for p in ax.patches)  # nothing blends


def test_legend_names_only_the_gaps_present():
    p = np.array([[0.9, 0.1], [0.9, 0.1], [0.2, 0.8], [0.3, 0.7]])
    y = np.array([1, 0, 0, 0])                      # top label: every bin over-confident
    _, (ax, _) = cal.reliability_diagram(p, y, n_bins=5).plot()
    assert legend_labels(ax) == ["Perfect calibration", "Accuracy", "Gap (over-confident)"]
    assert ax.get_ylabel() == "Accuracy"


def test_binary_and_torchmetrics_diagrams_draw(tmp_path):
    rng = np.random.default_rng(1)
    p = np.round(rng.random(500) * 8) / 8            # hits 1.0: torchmetrics' own bin
    y = (rng.random(500) < p).astype(int)
    d = cal.reliability_diagram(p, y, n_bins=4, convention="torchmetrics")
    fig, (ax, ax_hist) = d.plot(path=tmp_path / "d.png")
    assert (tmp_path / "d.png").read_bytes()[:4] == b"\x89PNG"
    assert ax.get_ylabel() == "Fraction of positives"
    assert ax_hist.get_xlabel() == "Mean predicted probability"
    heights = [b.get_height() for b in ax_hist.patches]
    np.testing.assert_allclose(heights, d.counts / d.counts.sum(), rtol=1e-12)
