r"""Calibration metrics and cross-entropy diagnostics.

How far a classifier's probabilities can be trusted, measured the way the papers and the
libraries people cite measure it, with the binning conventions spelled out so that the numbers
can be reproduced:

* :func:`calibration_error` (ECE, RMS calibration error, MCE) and :func:`reliability_diagram`;
* :func:`brier_score` and Murphy's :func:`brier_decomposition`;
* :func:`fit_temperature` (temperature scaling) and :func:`energy_score`;
* the debiased L2 estimator (``calibration_error(..., norm="l2", debias=True)``),
  :func:`classwise_calibration_error` and :func:`smooth_calibration_error`;
* :func:`confidence_interval`, bootstrap intervals of the metrics resampled in the Rust core;
* :func:`fit_vector_scaling` (per-class scale and bias);
* :class:`CalibrationAccumulator`, the same metrics in one pass over data of any size, chunk by
  chunk, with accumulators that merge;
* :func:`loss_breakdown` and :func:`label_dependence`, diagnostics of where a cross-entropy loss
  comes from and of which head (independent sigmoids or one softmax) multi-label data needs.

Inputs are probabilities, or logits with ``from_logits=True`` (softmax for ``(N, K)``, sigmoid
for ``(N,)``). For ``(N, K)`` inputs the *top label* is scored: the confidence is the largest
probability and the outcome is whether its class (the first one, on ties) is the label. For
``(N,)`` inputs the task is binary: the confidence is the probability of the positive class and
the outcome is the 0/1 label, as in scikit-learn's ``calibration_curve`` and torchmetrics'
``binary_calibration_error``.

Binning
-------
``strategy="uniform"`` uses the edges ``np.linspace(0, 1, n_bins + 1)``; ``"quantile"`` uses
``np.percentile(confidence, np.linspace(0, 100, n_bins + 1))`` (unweighted, as scikit-learn).
``convention="right"`` puts a confidence ``c`` in the bin ``(e_i, e_{i+1}]`` (the first bin also
holds ``e_0``), which is ``np.searchsorted(edges[1:-1], c, side="left")``, exactly what
scikit-learn's ``calibration_curve`` does. ``convention="torchmetrics"`` uses ``[e_i, e_{i+1})``
and gives a confidence equal to the last edge (``1.0`` for uniform bins) a bin of its own, which
is what ``torch.bucketize(c, edges, right=True) - 1`` over ``n_bins + 1`` bins does in
torchmetrics' ``binary_calibration_error`` / ``multiclass_calibration_error``. (torchmetrics
builds its edges in float32; a confidence within float32 rounding of an edge can therefore land
one bin away from where it lands here, with our exact float64 edges.)

Undefined cases
---------------
Metrics over no samples (``N = 0``, or sample weights summing to zero) are undefined: the
one-shot functions raise ``ValueError`` naming the input, and so does
:meth:`CalibrationAccumulator.result` before any (weighted) data has arrived; an empty chunk
passed to :meth:`CalibrationAccumulator.update` is simply a no-op. A bin without weight is empty:
it is left out of every sum and of the MCE, and its mean confidence and accuracy are NaN in a
:class:`ReliabilityDiagram`. Rows of weight zero are left out everywhere.
"""

from __future__ import annotations

from ._accumulator import CalibrationAccumulator
from ._beyond import classwise_calibration_error, smooth_calibration_error
from ._bootstrap import confidence_interval
from ._binning import MAX_BIN_SLOTS, MAX_BINS, Convention, Norm, Strategy  # noqa: F401
from ._diagnostics import label_dependence, loss_breakdown
from ._metrics import brier_decomposition, brier_score, calibration_error, reliability_diagram
from ._results import (BrierDecomposition, CalibrationResult, LossBreakdown,
                       ReliabilityDiagram)
from ._rows import temperature_objective as _temperature_objective  # noqa: F401
from ._rows import top_label_from_logits as _top_label_from_logits  # noqa: F401
from ._temperature import energy_score, fit_temperature
from ._vector_scaling import fit_vector_scaling

__all__ = [
    "calibration_error",
    "reliability_diagram",
    "ReliabilityDiagram",
    "brier_score",
    "brier_decomposition",
    "BrierDecomposition",
    "fit_temperature",
    "energy_score",
    "CalibrationAccumulator",
    "CalibrationResult",
    "loss_breakdown",
    "LossBreakdown",
    "label_dependence",
    "classwise_calibration_error",
    "smooth_calibration_error",
    "confidence_interval",
    "fit_vector_scaling",
]
