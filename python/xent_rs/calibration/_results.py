"""The result objects of the calibration metrics: small frozen records of floats and arrays."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Optional, Tuple, Union

import numpy as np

from .. import _validate as _v
from . import _binning
from ._binning import Norm
from ._rows import scale_by_power_of_two


def frozen(a, dtype=None):
    """A read-only copy of ``a``."""
    a = np.array(a, dtype=dtype)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class ReliabilityDiagram:
    """Per-bin statistics of a reliability diagram, with :meth:`plot`.

    Attributes
    ----------
    edges : ndarray, float64, shape (B + 1,)
        Bin edges; bin ``b`` spans ``edges[b]`` to ``edges[b + 1]``. With
        ``convention="torchmetrics"`` there are ``B = n_bins + 1`` bins and the last one is the
        degenerate bin ``[edges[-1], edges[-1]]`` (confidence exactly 1.0 for uniform bins).
    counts : ndarray, float64, shape (B,)
        Total sample weight in each bin (the number of samples when unweighted); ``inf``
        where a bin's total weight exceeds the float64 range.
    mean_confidence : ndarray, float64, shape (B,)
        Weighted mean confidence in each bin; NaN for empty bins.
    accuracy : ndarray, float64, shape (B,)
        Weighted mean outcome (accuracy, or the fraction of positives for binary input) in
        each bin; NaN for empty bins.
    binary : bool
        Whether the input was binary ``(N,)`` (labels the axes as fraction of positives).

    Notes
    -----
    In a Jupyter notebook the object shows as the picture :meth:`plot` draws (it has a
    ``_repr_png_``, when matplotlib is installed).
    """

    edges: np.ndarray
    counts: np.ndarray
    mean_confidence: np.ndarray
    accuracy: np.ndarray
    binary: bool = False
    # The counts times a power of two (largest in [1, 2)): finite even where the counts are
    # not, for the calibration error and the histogram.
    _relative_counts: Optional[np.ndarray] = field(default=None, repr=False)

    def __post_init__(self):
        for name in ("edges", "counts", "mean_confidence", "accuracy"):
            object.__setattr__(self, name, frozen(getattr(self, name), np.float64))
        relative = self.counts if self._relative_counts is None else self._relative_counts
        top = float(relative.max(initial=0.0))
        if 0.0 < top < np.inf:
            relative = scale_by_power_of_two(relative, 1 - math.frexp(top)[1])
        object.__setattr__(self, "_relative_counts", frozen(relative, np.float64))

    @property
    def gap(self) -> np.ndarray:
        """``mean_confidence - accuracy`` per bin (positive: over-confident); NaN if empty."""
        return self.mean_confidence - self.accuracy

    def calibration_error(self, norm: Norm = "l1") -> float:
        """The calibration error these bins give (see :func:`calibration_error`).

        Parameters
        ----------
        norm : {"l1", "l2", "max"}, default "l1"

        Returns
        -------
        float

        Raises
        ------
        ValueError
            For a bad ``norm``, or when every bin is empty.
        """
        _v.choice("norm", norm, _binning.NORMS)
        filled = self.counts > 0
        if not filled.any():
            raise ValueError("counts: every bin is empty; the calibration error is undefined")
        # From the counts scaled by a power of two (exact), so that their sum cannot
        # overflow, nor their products underflow, whatever the weights were.
        counts = self._relative_counts
        conf = np.where(filled, counts * self.mean_confidence, 0.0)
        acc = np.where(filled, counts * self.accuracy, 0.0)
        return _binning.error_from_sums(counts, conf, acc, norm)

    def plot(self, ax: Any = None, path: Union[str, "os.PathLike[str]", None] = None
             ) -> Tuple[Any, Tuple[Any, Optional[Any]]]:
        """Draw the reliability diagram (Guo et al. 2017) over a confidence histogram.

        The upper panel has one bar per non-empty bin reaching the bin's accuracy, the gap
        to the bin's mean confidence as a segment of its own colour (above the bar when the
        bin is over-confident, confidence > accuracy; the top of the bar when it is
        under-confident), the diagonal of perfect calibration and the ECE; every colour is
        in the legend. The lower panel shows the share of samples in each bin with the mean
        confidence and accuracy over all samples marked.

        Parameters
        ----------
        ax : matplotlib Axes or pair of Axes, optional
            Where to draw: one Axes gets the upper panel only, a pair gets both. By default
            a new pyplot figure with both (so ``plt.show()`` shows it; ``plt.close(fig)``
            frees it).
        path : str or path-like, optional
            Also save the figure there (PNG, 150 dpi; the format follows the suffix).

        Returns
        -------
        (fig, (ax_reliability, ax_histogram)) : matplotlib Figure and Axes
            ``ax_histogram`` is None when a single Axes was given.

        Raises
        ------
        ImportError
            If matplotlib is not installed (``pip install xent_rs[plot]``).
        ValueError
            If ``ax`` is a sequence of other than two Axes.
        """
        from ._plot import plot
        return plot(self, ax, path)

    def _repr_png_(self) -> Optional[bytes]:
        """PNG bytes of :meth:`plot`'s picture, for notebooks (None without matplotlib)."""
        from ._plot import png_bytes
        return png_bytes(self)


def diagram_from_sums(edges, total, conf_sum, outcome_sum, convention, binary, exponent=0):
    """A :class:`ReliabilityDiagram` from per-bin sums of weights scaled by ``2**-exponent``
    (``counts`` are the unscaled weights)."""
    if convention == "torchmetrics":
        edges = np.append(edges, edges[-1])
    with np.errstate(invalid="ignore", divide="ignore"):
        filled = total > 0
        mean_conf = np.where(filled, conf_sum / np.where(filled, total, 1.0), np.nan)
        accuracy = np.where(filled, outcome_sum / np.where(filled, total, 1.0), np.nan)
    counts = scale_by_power_of_two(total, exponent or 0)
    return ReliabilityDiagram(edges, counts, mean_conf, accuracy, binary, total)


class BrierDecomposition(NamedTuple):
    """Murphy's decomposition of the Brier score (see :func:`brier_decomposition`).

    Attributes
    ----------
    reliability, resolution, uncertainty : float
        The three terms, ``REL``, ``RES`` and ``UNC``.
    brier : float
        The Brier score of the same input.
    """

    reliability: float
    resolution: float
    uncertainty: float
    brier: float


@dataclass(frozen=True, eq=False)
class CalibrationResult:
    """Every metric a :class:`CalibrationAccumulator` holds, over all the data it has seen.

    Attributes
    ----------
    count : int
        Number of samples.
    weight_sum : float
        Total sample weight (``count`` when unweighted; ``inf`` beyond the float64 range).
    ece, rms, mce : float
        :func:`calibration_error` with ``norm="l1"``, ``"l2"``, ``"max"``.
    brier : float
        :func:`brier_score`.
    reliability, resolution, uncertainty : float
        :func:`brier_decomposition`'s terms.
    nll : float
        Mean negative log-likelihood of the labels (the cross-entropy; ``inf`` if a label has
        probability 0).
    accuracy : float
        Top-label accuracy; for binary input, of the prediction ``p > 0.5``.
    mean_confidence : float
        Mean confidence (binary: mean p(positive)).
    classwise_ece, classwise_rms : float
        :func:`classwise_calibration_error` with ``norm="l1"`` and ``"l2"`` (uniform bins).
        For binary input, class 0's forecasts ``1 − p`` are binned by the mirrored bins of
        ``p``, which differs from the one-shot function only for a ``p`` exactly on an edge.
    debiased_rms : float
        ``calibration_error(..., norm="l2", debias=True)`` (Kumar et al. 2019); with sample
        weights, a bin's ``n_b`` is its weight times rows seen over total weight.
    diagram : ReliabilityDiagram
        The bins (uniform), with ``plot``.
    """

    count: int
    weight_sum: float
    ece: float
    rms: float
    mce: float
    brier: float
    reliability: float
    resolution: float
    uncertainty: float
    nll: float
    accuracy: float
    mean_confidence: float
    classwise_ece: float
    classwise_rms: float
    debiased_rms: float
    diagram: ReliabilityDiagram

    def as_dict(self) -> dict:
        """The scalar metrics as a dict (for logging)."""
        return {k: v for k, v in self.__dict__.items() if k != "diagram"}


@dataclass(frozen=True, eq=False)
class LossBreakdown:
    """Where a cross-entropy loss comes from (see :func:`loss_breakdown`).

    Attributes
    ----------
    class_loss : ndarray, float64, shape (K,)
        Mean loss of the rows labelled with each class (NaN for absent classes).
    class_count : ndarray, int64, shape (K,)
        Number of rows labelled with each class.
    class_accuracy : ndarray, float64, shape (K,)
        Share of those rows whose argmax is the label (per-class recall; NaN if absent).
    class_loss_share : ndarray, float64, shape (K,)
        Share of the total loss from each class's rows (sums to 1).
    mean_loss : float
        Mean loss over all rows (``cross_entropy`` with ``reduction="mean"``).
    accuracy : float
        Overall top-1 accuracy.
    threshold : float
    confident_wrong_count : int
        Rows whose labelled class has probability below ``threshold``.
    confident_wrong_share : float
        Share of the total loss from those rows.
    """

    class_loss: np.ndarray
    class_count: np.ndarray
    class_accuracy: np.ndarray
    class_loss_share: np.ndarray
    mean_loss: float
    accuracy: float
    threshold: float
    confident_wrong_count: int
    confident_wrong_share: float

    def __post_init__(self):
        for name in ("class_loss", "class_count", "class_accuracy", "class_loss_share"):
            object.__setattr__(self, name, frozen(getattr(self, name)))
