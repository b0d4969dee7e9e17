"""Drawing a :class:`ReliabilityDiagram` with matplotlib (imported here only, when drawing)."""

from __future__ import annotations

import io

import numpy as np

ACCURACY_COLOUR = "#4C72B0"
OVER_COLOUR = "#C44E52"       # confidence above accuracy
UNDER_COLOUR = "#7CFC9A"      # confidence below accuracy: hatching on the bar
HISTOGRAM_COLOUR = "0.55"
FIGSIZE = (5.0, 6.0)


def _matplotlib_figure():
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - exercised without matplotlib
        raise ImportError("ReliabilityDiagram.plot needs matplotlib "
                          "(pip install matplotlib)") from exc
    return Figure


def _two_panels(fig):
    return fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})


def plot(diagram, ax=None, path=None):
    """:meth:`ReliabilityDiagram.plot`: on ``ax``, or on a new pyplot figure."""
    _matplotlib_figure()
    if ax is None:
        import matplotlib.pyplot as plt
        fig = plt.figure(figsize=FIGSIZE, layout="constrained")
        ax_rel, ax_hist = _two_panels(fig)
    elif isinstance(ax, (tuple, list, np.ndarray)):
        if len(ax) != 2:
            raise ValueError(f"ax: expected one Axes or a pair of Axes, got {len(ax)}")
        ax_rel, ax_hist = ax
        fig = ax_rel.figure
    else:
        ax_rel, ax_hist, fig = ax, None, ax.figure
    draw(diagram, ax_rel, ax_hist)
    if path is not None:
        fig.savefig(path, dpi=150)
    return fig, (ax_rel, ax_hist)


def png_bytes(diagram, dpi=100):
    """The picture as PNG bytes, drawn on a figure pyplot does not know (None without
    matplotlib), so that a notebook shows it once."""
    try:
        Figure = _matplotlib_figure()
    except ImportError:
        return None
    fig = Figure(figsize=FIGSIZE, layout="constrained")
    draw(diagram, *_two_panels(fig))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _bar_geometry(edges):
    """Left edges and widths; torchmetrics' degenerate last bin is drawn narrow, left of it."""
    left = edges[:-1]
    width = np.diff(edges)
    thin = width <= 0
    if thin.any():
        positive = width[~thin]
        fallback = 0.25 * (positive.min() if positive.size else 1.0)
        left = np.where(thin, left - fallback, left)
        width = np.where(thin, fallback, width)
    return left, width


def draw(diagram, ax_rel, ax_hist=None):
    """Draw the reliability panel on ``ax_rel`` and, when given, the histogram on
    ``ax_hist``."""
    left, width = _bar_geometry(diagram.edges)
    filled = diagram.counts > 0
    acc = diagram.accuracy[filled]
    conf = diagram.mean_confidence[filled]
    x, w = left[filled], width[filled]
    outcome = "Fraction of positives" if diagram.binary else "Accuracy"
    x_label = "Mean predicted probability" if diagram.binary else "Confidence"

    ax_rel.bar(x, acc, width=w, align="edge", color=ACCURACY_COLOUR, edgecolor="black",
               linewidth=0.6, label=outcome)
    # The gap between accuracy and mean confidence is a segment of its own: stacked on the
    # bar in red when the bin is over-confident; when it is under-confident, the top of the
    # bar (which still reaches the accuracy) hatched in green. Nothing is translucent, so
    # no colour appears that the legend does not show.
    over = conf >= acc
    gap, bottom = np.abs(conf - acc), np.minimum(conf, acc)
    if over.any():
        ax_rel.bar(x[over], gap[over], bottom=bottom[over], width=w[over], align="edge",
                   color=OVER_COLOUR, edgecolor="black", linewidth=0.6, hatch="//",
                   label="Gap (over-confident)")
    under = ~over
    if under.any():
        ax_rel.bar(x[under], gap[under], bottom=bottom[under], width=w[under], align="edge",
                   color=ACCURACY_COLOUR, edgecolor=UNDER_COLOUR, linewidth=1.0, hatch="xx",
                   label="Gap (under-confident)")
    ax_rel.plot([0, 1], [0, 1], linestyle="--", color="0.4", label="Perfect calibration")
    ax_rel.set_xlim(0.0, 1.0)
    ax_rel.set_ylim(0.0, 1.0)
    ax_rel.set_ylabel(outcome)
    ax_rel.legend(loc="upper left", frameon=False, fontsize=8)
    if filled.any():
        ece = diagram.calibration_error("l1")
        ax_rel.text(0.97, 0.04, f"ECE = {100 * ece:.2f}%", transform=ax_rel.transAxes,
                    ha="right", va="bottom", fontsize=11,
                    bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "0.7"})
    ax_rel.set_title("Reliability diagram")
    if ax_hist is None:
        ax_rel.set_xlabel(x_label)
        return
    _draw_histogram(diagram, ax_hist, left, width, outcome)
    ax_hist.set_xlabel(x_label)


def _draw_histogram(diagram, ax, left, width, outcome):
    counts = diagram._relative_counts  # finite, even for weights beyond the float64 range
    top = counts.max(initial=0.0)
    share = counts / counts.sum() if top > 0 else counts
    ax.bar(left, share, width=width, align="edge", color=HISTOGRAM_COLOUR, edgecolor="black",
           linewidth=0.6)
    if top > 0:
        filled = counts > 0
        weight = share[filled]
        mean_conf = float(weight @ diagram.mean_confidence[filled] / weight.sum())
        mean_acc = float(weight @ diagram.accuracy[filled] / weight.sum())
        ax.axvline(mean_conf, color="black", linestyle="--",
                   label=f"Mean confidence {mean_conf:.3f}")
        ax.axvline(mean_acc, color=ACCURACY_COLOUR, linestyle="-",
                   label=f"{outcome} {mean_acc:.3f}")
        ax.legend(loc="best", frameon=False, fontsize=8)
    ax.set_xlim(0.0, 1.0)
    ax.set_ylabel("Share of samples")
