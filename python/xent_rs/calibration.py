r"""Calibration metrics and cross-entropy diagnostics.

How far a classifier's probabilities can be trusted, measured the way the papers and the
libraries people cite measure it, with the binning conventions spelled out so that the numbers
can be reproduced:

* :func:`calibration_error` (ECE, RMS calibration error, MCE) and :func:`reliability_diagram`;
* :func:`brier_score` and Murphy's :func:`brier_decomposition`;
* :func:`fit_temperature` (temperature scaling) and :func:`energy_score`;
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

import math
import numbers
from dataclasses import dataclass
from typing import Literal, NamedTuple, Optional, Tuple

import numpy as np

from . import _core
from numpy.typing import ArrayLike

Norm = Literal["l1", "l2", "max"]
Strategy = Literal["uniform", "quantile"]
Convention = Literal["right", "torchmetrics"]

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
]

_NORMS = ("l1", "l2", "max")
_STRATEGIES = ("uniform", "quantile")
_CONVENTIONS = ("right", "torchmetrics")

# Row chunks bound the float64 temporaries to about 32 MiB whatever K is.
_CHUNK_ELEMENTS = 1 << 22
_MAX_CHUNK_ROWS = 65536

# fit_temperature stops when the bracket on beta = 1/T is this narrow, relative to beta.
_TEMPERATURE_RTOL = 1e-8
_TEMPERATURE_MAX_ITER = 200


# --------------------------------------------------------------------------------------------
# Argument checking. Every message starts with the name of the argument at fault.
# --------------------------------------------------------------------------------------------

def _kind_name(dtype):
    return {"b": "bool", "i": "integer", "u": "unsigned integer", "c": "complex",
            "O": "object", "U": "string", "S": "bytes"}.get(dtype.kind, str(dtype))


def _as_array(value, name):
    if value is None:
        raise TypeError(f"{name}: expected an array, got None")
    try:
        return np.asarray(value)  # subclasses (np.matrix, memmap) become plain arrays
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name}: cannot be converted to a NumPy array ({exc})") from None


def _float_input(value, name):
    """A float array, normalised to native float32/float64 (what the kernels accept)."""
    arr = _as_array(value, name)
    if arr.dtype.kind != "f":
        raise TypeError(f"{name}: must be a float array (probabilities or logits), got "
                        f"{_kind_name(arr.dtype)} dtype ({arr.dtype})")
    dtype = np.float32 if arr.dtype.itemsize <= 4 else np.float64
    return np.require(arr, dtype=dtype, requirements=["C", "A"])


def _check_choice(name, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}: must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


#: The most bins any binned metric accepts (its statistics are a few arrays of that length).
MAX_BINS = 10**7


def _check_n_bins(n_bins):
    if isinstance(n_bins, (bool, np.bool_)) or not isinstance(n_bins, numbers.Integral):
        raise TypeError(f"n_bins: must be a positive integer, got {type(n_bins).__name__}")
    if not 1 <= n_bins <= MAX_BINS:
        raise ValueError(f"n_bins: must be an integer in [1, {MAX_BINS}], got {n_bins}")
    return int(n_bins)


def _check_flag(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: must be True or False, got {value!r}")
    return bool(value)


def _check_positive_real(name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: must be a real number, got {type(value).__name__}")
    value = float(value)
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"{name}: must be finite and > 0, got {value}")
    return value


def _check_scores(value, name, from_logits, *, allow_empty=False):
    """Validate (N,) or (N, K) probabilities or logits; return (array, binary)."""
    arr = _float_input(value, name)
    if arr.ndim not in (1, 2):
        raise ValueError(f"{name}: must have shape (N,) (binary) or (N, K) (K classes), got "
                         f"shape {arr.shape}")
    binary = arr.ndim == 1
    if not binary and arr.shape[1] < 2:
        raise ValueError(f"{name}: (N, K) input needs K >= 2 classes, got shape {arr.shape}; "
                         f"pass binary scores as shape (N,)")
    if arr.shape[0] == 0:
        if allow_empty:
            return arr, binary
        raise ValueError(f"{name}: empty input (N = 0); the metric is undefined over no "
                         f"samples")
    lo, hi = arr.min(), arr.max()
    if np.isnan(lo) or np.isnan(hi):
        raise ValueError(f"{name}: contains NaN")
    if from_logits:
        if not binary:
            if hi == np.inf:
                raise ValueError(f"{name}: contains +inf logits (the softmax is undefined)")
            if lo == -np.inf and (arr.max(axis=1) == -np.inf).any():
                raise ValueError(f"{name}: a row has every logit equal to -inf (no class left)")
    elif lo < 0 or hi > 1:
        raise ValueError(f"{name}: probabilities must lie in [0, 1], got values in "
                         f"[{lo}, {hi}] (pass from_logits=True for logits)")
    return arr, binary


def _check_labels(value, n, n_classes, name="labels"):
    """Integer labels of shape (n,): 0/1 when n_classes is None (binary), else in [0, K)."""
    arr = _as_array(value, name)
    kind = arr.dtype.kind
    if kind == "b":
        arr = arr.astype(np.int64)
    elif kind == "f":
        if arr.size and not (np.isfinite(arr).all() and (arr == np.round(arr)).all()):
            raise ValueError(f"{name}: float labels must be whole numbers")
    elif kind not in "iu":
        raise TypeError(f"{name}: must be an integer (or bool) array, got "
                        f"{_kind_name(arr.dtype)} dtype ({arr.dtype})")
    if arr.shape != (n,):
        raise ValueError(f"{name}: expected shape ({n},) to match the scores, got {arr.shape}")
    if n:
        lo, hi = arr.min(), arr.max()
        if n_classes is None:
            if lo < 0 or hi > 1:
                raise ValueError(f"{name}: binary labels must be 0 or 1, got values in "
                                 f"[{lo}, {hi}]")
        elif lo < 0 or hi >= n_classes:
            raise ValueError(f"{name}: class labels must lie in [0, {n_classes}), got values "
                             f"in [{lo}, {hi}]")
    return np.ascontiguousarray(arr, dtype=np.int64)


def _check_sample_weight(value, n):
    if value is None:
        return None
    arr = _as_array(value, "sample_weight")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"sample_weight: must be a real array, got {_kind_name(arr.dtype)} "
                        f"dtype ({arr.dtype})")
    if arr.shape != (n,):
        raise ValueError(f"sample_weight: expected shape ({n},), got {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    if n and not np.isfinite(arr).all():
        raise ValueError("sample_weight: must be finite")
    if n and arr.min() < 0:
        raise ValueError("sample_weight: must be non-negative")
    return arr


def _check_class_weight(value, n_classes):
    if value is None:
        return None
    arr = _as_array(value, "weight")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"weight: must be a real array, got {_kind_name(arr.dtype)} dtype "
                        f"({arr.dtype})")
    if arr.shape != (n_classes,):
        raise ValueError(f"weight: expected shape ({n_classes},) (one weight per class), got "
                         f"{arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    if not np.isfinite(arr).all() or arr.min() < 0:
        raise ValueError("weight: must be finite and non-negative")
    return arr


def _total_weight(sample_weight, n):
    total = float(n) if sample_weight is None else float(sample_weight.sum())
    if total <= 0:
        raise ValueError("sample_weight: the weights sum to zero; the metric is undefined")
    return total


def _row_chunks(n, k=1):
    step = max(1, min(_MAX_CHUNK_ROWS, _CHUNK_ELEMENTS // max(k, 1)))
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


# --------------------------------------------------------------------------------------------
# Row kernels. The two hooks below are the parts that a fused kernel replaces: each row's
# result must not depend on which other rows are passed along with it (the accumulator relies
# on that to reproduce the one-shot numbers).
# --------------------------------------------------------------------------------------------

def _top_label_from_logits(logits, labels):
    """Top-label confidence and correctness of softmax(logits), row by row, in one fused Rust
    pass per row (maximum, first argmax, sum of exponentials): no probability matrix.

    Parameters
    ----------
    logits : ndarray, float16, float32 or float64, shape (N, K), C-contiguous
        Validated logits (no NaN, no +inf, no row of all -inf).
    labels : ndarray, int64, shape (N,)
        Class labels in ``[0, K)``.

    Returns
    -------
    confidence : ndarray, float64, shape (N,)
        ``max_k softmax(z)_k = 1 / sum_k exp(z_k - max(z))``.
    correct : ndarray, bool, shape (N,)
        ``argmax(z) == label``, the first maximal index on ties (as ``np.argmax``).
    """
    n, k = logits.shape
    confidence = np.empty(n, dtype=np.float64)
    top = np.empty(n, dtype=np.int64)
    _core.top_label(np.require(logits, requirements=["C", "A"]), k, confidence, top)
    return confidence, top == labels


def _temperature_objective(logits, labels, beta, weight):
    """Mean cross-entropy of ``beta * logits`` and its derivative with respect to ``beta``,
    from one fused Rust pass per row.

    For row ``i`` with logits ``z`` and label ``y``, ``l_i(beta) = logsumexp(beta z) - beta z_y``
    and ``l_i'(beta) = sum_k softmax(beta z)_k z_k - z_y`` (masked classes, ``z_k = -inf``,
    contribute nothing). The mean is weighted like ``cross_entropy``'s ``weight``:
    ``sum_i w[y_i] l_i / sum_i w[y_i]`` (a plain mean when ``weight`` is None).

    Parameters
    ----------
    logits : ndarray, float16, float32 or float64, shape (N, K), C-contiguous
        Validated logits (no NaN, no +inf, no row of all -inf).
    labels : ndarray, int64, shape (N,)
        Class labels in ``[0, K)``, never pointing at a ``-inf`` logit.
    beta : float
        The inverse temperature, ``>= 0``.
    weight : ndarray, float64, shape (K,), or None

    Returns
    -------
    (mean_loss, d_mean_loss_d_beta) : tuple of float
    """
    n, k = logits.shape
    w = (None if weight is None
         else np.require(weight, dtype=np.float64, requirements=["C", "A"]))
    loss_sum, grad_sum, weight_sum = _core.temperature_objective(
        np.require(logits, requirements=["C", "A"]), k,
        np.require(labels, dtype=np.int64, requirements=["C", "A"]), float(beta), w)
    return float(loss_sum / weight_sum), float(grad_sum / weight_sum)


def _softmax64(z):
    """Row softmax of a float chunk, in a new float64 array."""
    p = z.astype(np.float64)
    p -= p.max(axis=1, keepdims=True)
    np.exp(p, out=p)
    p /= p.sum(axis=1, keepdims=True)
    return p


def _sigmoid64(z):
    z = z.astype(np.float64)
    return np.exp(-np.logaddexp(0.0, -z))


def _probabilities(scores, binary, from_logits):
    """float64 probabilities of a chunk: (n,) for binary input, else (n, K)."""
    if not from_logits:
        return scores.astype(np.float64)
    return _sigmoid64(scores) if binary else _softmax64(scores)


def _confidence_outcome(scores, labels, binary, from_logits):
    """(confidence float64 (N,), outcome bool (N,)) as scored by the calibration metrics."""
    if binary:
        return _probabilities(scores, True, from_logits), labels.astype(bool)
    if from_logits:
        return _top_label_from_logits(scores, labels)
    return scores.max(axis=1).astype(np.float64), scores.argmax(axis=1) == labels


def _brier_rows(p, labels, binary):
    """Per-row squared error of a float64 probability chunk against the labels."""
    if binary:
        d = p - labels
        return d * d
    d = p.copy()
    d[np.arange(d.shape[0]), labels] -= 1.0
    return np.einsum("ij,ij->i", d, d)


def _nll_rows(scores, labels, binary, from_logits):
    """Per-row negative log-likelihood of the labels, float64 (inf where p(label) = 0)."""
    if binary:
        z = scores.astype(np.float64)
        if from_logits:
            return np.logaddexp(0.0, np.where(labels == 1, -z, z))
        p_label = np.where(labels == 1, z, 1.0 - z)
    elif from_logits:
        z = scores.astype(np.float64)
        m = z.max(axis=1)
        lse = m + np.log(np.exp(z - m[:, None]).sum(axis=1))
        return lse - z[np.arange(z.shape[0]), labels]
    else:
        p_label = scores[np.arange(scores.shape[0]), labels].astype(np.float64)
    with np.errstate(divide="ignore"):
        return -np.log(p_label)


# --------------------------------------------------------------------------------------------
# Binning.
# --------------------------------------------------------------------------------------------

def _edges(confidence, n_bins, strategy):
    if strategy == "uniform":
        return np.linspace(0.0, 1.0, n_bins + 1)
    return np.percentile(confidence, np.linspace(0.0, 100.0, n_bins + 1), axis=0)


def _n_slots(n_bins, convention):
    """Number of bins actually used: torchmetrics adds one for the last edge itself."""
    return n_bins + (convention == "torchmetrics")


def _bin_index(values, edges, convention):
    """Bin of each value (any shape) for 1-D edges."""
    if convention == "right":
        return np.searchsorted(edges[1:-1], values, side="left")
    return np.searchsorted(edges, values, side="right") - 1


def _bin_index_per_column(values, edges, convention):
    """Bin of each value of an (n, K) array, with edges (n_bins + 1, K), one column per class.

    The same rule as :func:`_bin_index`, counted edge by edge (a loop over bins, not samples).
    """
    idx = np.zeros(values.shape, dtype=np.intp)
    if convention == "right":
        for e in edges[1:-1]:
            idx += values > e
    else:
        for e in edges[1:]:
            idx += values >= e
    return idx


def _bincount(idx, weights, length):
    return np.bincount(idx, weights=weights, minlength=length).astype(np.float64, copy=False)


def _reliability_sums(confidence, outcome, sample_weight, edges, convention):
    """Per-bin (total weight, weighted confidence sum, weighted outcome sum)."""
    slots = _n_slots(len(edges) - 1, convention)
    idx = _bin_index(confidence, edges, convention)
    if sample_weight is None:
        w = None
        wc, wo = confidence, outcome.astype(np.float64)
    else:
        w = sample_weight
        wc, wo = sample_weight * confidence, sample_weight * outcome
    return (_bincount(idx, w, slots), _bincount(idx, wc, slots), _bincount(idx, wo, slots))


def _error_from_sums(total, conf_sum, outcome_sum, norm):
    """Calibration error from per-bin sums: bins of zero weight are left out."""
    filled = total > 0
    gap = np.abs(outcome_sum[filled] - conf_sum[filled])
    n = total.sum()
    if norm == "l1":
        return float(gap.sum() / n)
    if norm == "l2":
        return float(math.sqrt((gap * gap / total[filled]).sum() / n))
    return float((gap / total[filled]).max())


def _ovr_sums(p, labels, sample_weight, edges, convention, binary):
    """One-vs-rest per-class, per-bin sums for the Murphy decomposition of a float64 chunk.

    Returns (W, F, O), each (C, slots) with C = 1 for binary input and K otherwise:
    total weight, weighted forecast sum and weighted outcome sum of class c's probability in
    each bin. Uniform edges are shared by all classes, quantile edges have one column per class.
    """
    slots = _n_slots(edges.shape[0] - 1, convention)
    if binary:
        p = p[:, None]
    n, c = p.shape
    if edges.ndim == 1:
        idx = _bin_index(p, edges, convention)
    else:
        idx = _bin_index_per_column(p, edges, convention)
    flat = idx + slots * np.arange(c)
    w = np.ones(n) if sample_weight is None else sample_weight
    size = c * slots
    big_w = _bincount(flat.ravel(), np.broadcast_to(w[:, None], (n, c)).ravel(), size)
    big_f = _bincount(flat.ravel(), (p * w[:, None]).ravel(), size)
    if binary:
        big_o = _bincount(flat[:, 0], w * labels, size)
    else:
        big_o = _bincount(flat[np.arange(n), labels], w, size)
    return (big_w.reshape(c, slots), big_f.reshape(c, slots), big_o.reshape(c, slots))


def _murphy_from_sums(big_w, big_f, big_o):
    """(reliability, resolution, uncertainty) from one-vs-rest bin sums, summed over classes."""
    n = big_w.sum(axis=1)[:, None]
    base = big_o.sum(axis=1)[:, None] / n
    filled = big_w > 0
    wf, ff, of = big_w[filled], big_f[filled], big_o[filled]
    gap = ff - of
    reliability = float((gap * gap / wf).sum() / n[0, 0])
    spread = of / wf - np.broadcast_to(base, big_w.shape)[filled]
    resolution = float((wf * spread * spread).sum() / n[0, 0])
    uncertainty = float((base * (1.0 - base)).sum())
    return reliability, resolution, uncertainty


# --------------------------------------------------------------------------------------------
# Calibration error and reliability diagrams.
# --------------------------------------------------------------------------------------------

def _binned(probs, labels, n_bins, strategy, convention, from_logits, sample_weight):
    n_bins = _check_n_bins(n_bins)
    _check_choice("strategy", strategy, _STRATEGIES)
    _check_choice("convention", convention, _CONVENTIONS)
    from_logits = _check_flag("from_logits", from_logits)
    scores, binary = _check_scores(probs, "probs", from_logits)
    labels = _check_labels(labels, scores.shape[0], None if binary else scores.shape[1])
    sample_weight = _check_sample_weight(sample_weight, scores.shape[0])
    _total_weight(sample_weight, scores.shape[0])
    confidence, outcome = _confidence_outcome(scores, labels, binary, from_logits)
    edges = _edges(confidence, n_bins, strategy)
    sums = _reliability_sums(confidence, outcome, sample_weight, edges, convention)
    return edges, sums, binary


def calibration_error(probs: ArrayLike, labels: ArrayLike, *, n_bins: int = 15,
                      norm: Norm = "l1", strategy: Strategy = "uniform",
                      convention: Convention = "right", from_logits: bool = False,
                      sample_weight: Optional[ArrayLike] = None) -> float:
    r"""Top-label (or binary) calibration error: ECE, RMS calibration error or MCE.

    With bins :math:`B_b` of the confidences, :math:`n_b` the total weight in bin :math:`b`,
    :math:`N = \sum_b n_b`, :math:`\mathrm{acc}_b` the weighted mean outcome and
    :math:`\mathrm{conf}_b` the weighted mean confidence in the bin:

    .. math::

        \mathrm{ECE} = \sum_b \frac{n_b}{N} |\mathrm{acc}_b - \mathrm{conf}_b|,\quad
        \mathrm{RMSCE} = \sqrt{\sum_b \frac{n_b}{N} (\mathrm{acc}_b - \mathrm{conf}_b)^2},\quad
        \mathrm{MCE} = \max_{b:\,n_b > 0} |\mathrm{acc}_b - \mathrm{conf}_b|.

    Parameters
    ----------
    probs : array_like, float, shape (N, K) or (N,)
        Probabilities in ``[0, 1]`` (rows are not renormalised), or logits with
        ``from_logits=True``. ``(N, K)``: the top label is scored (confidence = largest
        probability, outcome = its class, the first on ties, equals the label). ``(N,)``:
        binary; confidence = p(positive), outcome = the 0/1 label.
    labels : array_like, int, shape (N,)
        Class labels in ``[0, K)``, or 0/1 for ``(N,)`` input (bool and whole-valued floats
        are accepted).
    n_bins : int, default 15
    norm : {"l1", "l2", "max"}, default "l1"
    strategy : {"uniform", "quantile"}, default "uniform"
        Edges ``np.linspace(0, 1, n_bins + 1)``, or
        ``np.percentile(confidence, np.linspace(0, 100, n_bins + 1))`` (unweighted).
    convention : {"right", "torchmetrics"}, default "right"
        ``"right"``: bins ``(e_i, e_{i+1}]``, the first also holding ``e_0`` (scikit-learn,
        Guo et al.). ``"torchmetrics"``: bins ``[e_i, e_{i+1})`` plus one bin for values equal
        to the last edge (a confidence of exactly 1.0 with uniform bins), as torchmetrics.
    from_logits : bool, default False
        Apply softmax (``(N, K)``) or sigmoid (``(N,)``) first. For ``(N, K)`` logits no
        ``(N, K)`` probability matrix is formed.
    sample_weight : array_like, shape (N,), optional
        Non-negative weights; they weight the bin means and the bin shares. A bin whose
        weight is zero counts as empty. Quantile edges ignore them.

    Returns
    -------
    float
        The calibration error, in ``[0, 1]``.

    Raises
    ------
    TypeError, ValueError
        For bad arguments (the message names the argument), for empty input and for weights
        summing to zero, where the error is undefined.

    References
    ----------
    .. [1] M. P. Naeini, G. Cooper, M. Hauskrecht, "Obtaining well calibrated probabilities
       using Bayesian binning", AAAI 2015.
    .. [2] C. Guo, G. Pleiss, Y. Sun, K. Q. Weinberger, "On calibration of modern neural
       networks", ICML 2017.

    Examples
    --------
    Two bins, ``[0, 0.5]`` and ``(0.5, 1]``: the first holds two samples of confidence 0.25
    that are both wrong (gap 0.25), the second three of mean confidence 0.6833 all right
    (gap 0.3167), so ECE = 0.4 * 0.25 + 0.6 * 0.3167 = 0.29.

    >>> import numpy as np
    >>> from xent_rs.calibration import calibration_error
    >>> p = np.array([0.25, 0.25, 0.55, 0.75, 0.75])
    >>> y = np.array([0, 0, 1, 1, 1])
    >>> round(calibration_error(p, y, n_bins=2), 4)
    0.29
    >>> round(calibration_error(p, y, n_bins=2, norm="max"), 4)
    0.3167
    >>> logits = np.array([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0], [3.0, 0.0, 0.0]])
    >>> round(calibration_error(logits, [0, 0, 0], n_bins=10, from_logits=True), 4)
    0.2918
    """
    _check_choice("norm", norm, _NORMS)
    _, (total, conf_sum, outcome_sum), _ = _binned(probs, labels, n_bins, strategy, convention,
                                                   from_logits, sample_weight)
    return _error_from_sums(total, conf_sum, outcome_sum, norm)


def _frozen(a):
    a = np.asarray(a)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class ReliabilityDiagram:
    """Per-bin statistics of a reliability diagram.

    Attributes
    ----------
    edges : ndarray, float64, shape (B + 1,)
        Bin edges; bin ``b`` spans ``edges[b]`` to ``edges[b + 1]``. With
        ``convention="torchmetrics"`` there are ``B = n_bins + 1`` bins and the last one is the
        degenerate bin ``[edges[-1], edges[-1]]`` (confidence exactly 1.0 for uniform bins).
    counts : ndarray, float64, shape (B,)
        Total sample weight in each bin (the number of samples when unweighted).
    mean_confidence : ndarray, float64, shape (B,)
        Weighted mean confidence in each bin; NaN for empty bins.
    accuracy : ndarray, float64, shape (B,)
        Weighted mean outcome (accuracy, or the fraction of positives for binary input) in
        each bin; NaN for empty bins.
    binary : bool
        Whether the input was binary ``(N,)`` (labels the axes as fraction of positives).
    """

    edges: np.ndarray
    counts: np.ndarray
    mean_confidence: np.ndarray
    accuracy: np.ndarray
    binary: bool = False

    def __post_init__(self):
        for name in ("edges", "counts", "mean_confidence", "accuracy"):
            object.__setattr__(self, name, _frozen(np.array(getattr(self, name),
                                                            dtype=np.float64)))

    @property
    def gap(self) -> np.ndarray:
        """``mean_confidence - accuracy`` per bin (positive: over-confident); NaN if empty."""
        return self.mean_confidence - self.accuracy

    def calibration_error(self, norm: Norm = "l1") -> float:
        """The calibration error these bins give (see :func:`calibration_error`)."""
        _check_choice("norm", norm, _NORMS)
        filled = self.counts > 0
        if not filled.any():
            raise ValueError("counts: every bin is empty; the calibration error is undefined")
        return _error_from_sums(self.counts, np.where(filled, self.counts * self.mean_confidence,
                                                      0.0),
                                np.where(filled, self.counts * self.accuracy, 0.0), norm)

    def plot(self, ax=None, path=None) -> Tuple[object, Tuple[object, Optional[object]]]:
        """Draw the reliability diagram (Guo et al. 2017) over a confidence histogram.

        The upper panel has one bar per non-empty bin at the bin's accuracy, a translucent red
        bar for the gap between accuracy and mean confidence, the diagonal of perfect
        calibration and the ECE; the lower panel shows the share of samples in each bin with
        the mean confidence and accuracy over all samples marked.

        Parameters
        ----------
        ax : matplotlib Axes or pair of Axes, optional
            Where to draw: one Axes gets the upper panel only, a pair gets both; by default a
            new Figure with both (not registered with pyplot, so nothing global changes).
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
        """
        try:
            from matplotlib.figure import Figure
        except ImportError as exc:  # pragma: no cover - exercised without matplotlib
            raise ImportError("ReliabilityDiagram.plot needs matplotlib "
                              "(pip install matplotlib)") from exc
        if ax is None:
            fig = Figure(figsize=(5.0, 6.0), layout="constrained")
            ax_rel, ax_hist = fig.subplots(2, 1, sharex=True,
                                           gridspec_kw={"height_ratios": [3, 1]})
        elif isinstance(ax, (tuple, list, np.ndarray)):
            if len(ax) != 2:
                raise ValueError(f"ax: expected one Axes or a pair of Axes, got {len(ax)}")
            ax_rel, ax_hist = ax
            fig = ax_rel.figure
        else:
            ax_rel, ax_hist, fig = ax, None, ax.figure

        edges = self.edges
        left = edges[:-1]
        width = np.diff(edges)
        thin = width <= 0
        if thin.any():  # torchmetrics' bin of its own at the last edge: draw it narrow
            positive = width[~thin]
            fallback = 0.25 * (positive.min() if positive.size else 1.0)
            left = np.where(thin, left - fallback, left)
            width = np.where(thin, fallback, width)
        filled = self.counts > 0
        acc = self.accuracy[filled]
        conf = self.mean_confidence[filled]
        outcome = "Fraction of positives" if self.binary else "Accuracy"

        ax_rel.bar(left[filled], acc, width=width[filled], align="edge", color="#4C72B0",
                   edgecolor="black", linewidth=0.6, label=outcome)
        ax_rel.bar(left[filled], np.abs(conf - acc), bottom=np.minimum(conf, acc),
                   width=width[filled], align="edge", color="#DD4444", alpha=0.35,
                   edgecolor="#AA0000", linewidth=0.6, hatch="//", label="Gap")
        ax_rel.plot([0, 1], [0, 1], linestyle="--", color="0.4", label="Perfect calibration")
        ax_rel.set_xlim(0.0, 1.0)
        ax_rel.set_ylim(0.0, 1.0)
        ax_rel.set_ylabel(outcome)
        ax_rel.set_aspect("auto")
        ax_rel.legend(loc="upper left", frameon=False)
        if filled.any():
            ece = self.calibration_error("l1")
            ax_rel.text(0.97, 0.04, f"ECE = {100 * ece:.2f}%", transform=ax_rel.transAxes,
                        ha="right", va="bottom", fontsize=11,
                        bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "0.7"})
        ax_rel.set_title("Reliability diagram")

        if ax_hist is None:
            ax_rel.set_xlabel("Mean predicted probability" if self.binary else "Confidence")
        else:
            total = self.counts.sum()
            share = self.counts / total if total > 0 else self.counts
            ax_hist.bar(left, share, width=width, align="edge", color="0.55", edgecolor="black",
                        linewidth=0.6)
            if total > 0:
                mean_conf = float(np.nansum(self.counts * self.mean_confidence) / total)
                mean_acc = float(np.nansum(self.counts * self.accuracy) / total)
                ax_hist.axvline(mean_conf, color="#DD4444", linestyle="--",
                                label=f"Mean confidence {mean_conf:.3f}")
                ax_hist.axvline(mean_acc, color="#4C72B0", linestyle="-",
                                label=f"{outcome} {mean_acc:.3f}")
                ax_hist.legend(loc="upper left", frameon=False, fontsize=8)
            ax_hist.set_xlim(0.0, 1.0)
            ax_hist.set_ylabel("Share of samples")
            ax_hist.set_xlabel("Mean predicted probability" if self.binary else "Confidence")
        if path is not None:
            fig.savefig(path, dpi=150)
        return fig, (ax_rel, ax_hist)


def _diagram_from_sums(edges, total, conf_sum, outcome_sum, convention, binary):
    if convention == "torchmetrics":
        edges = np.append(edges, edges[-1])
    with np.errstate(invalid="ignore", divide="ignore"):
        filled = total > 0
        mean_conf = np.where(filled, conf_sum / np.where(filled, total, 1.0), np.nan)
        accuracy = np.where(filled, outcome_sum / np.where(filled, total, 1.0), np.nan)
    return ReliabilityDiagram(edges, total, mean_conf, accuracy, binary)


def reliability_diagram(probs: ArrayLike, labels: ArrayLike, *, n_bins: int = 15,
                        strategy: Strategy = "uniform", convention: Convention = "right",
                        from_logits: bool = False,
                        sample_weight: Optional[ArrayLike] = None) -> ReliabilityDiagram:
    """Per-bin confidence and accuracy: the data of a reliability diagram.

    Takes the arguments of :func:`calibration_error` (without ``norm``) and bins the same way.
    For binary ``(N,)`` input and ``convention="right"``, the non-empty bins' ``accuracy`` and
    ``mean_confidence`` are scikit-learn's ``calibration_curve`` ``prob_true`` and
    ``prob_pred``.

    Returns
    -------
    ReliabilityDiagram
        ``edges``, ``counts`` (total weight per bin), ``mean_confidence`` and ``accuracy``
        (NaN for empty bins), and a ``plot(ax=None, path=None)`` method.

    References
    ----------
    .. [1] C. Guo, G. Pleiss, Y. Sun, K. Q. Weinberger, "On calibration of modern neural
       networks", ICML 2017.

    Examples
    --------
    >>> import numpy as np
    >>> from xent_rs.calibration import reliability_diagram
    >>> d = reliability_diagram(np.array([0.1, 0.3, 0.8, 0.9]), np.array([0, 1, 1, 1]),
    ...                         n_bins=2)
    >>> d.edges.tolist(), d.counts.tolist()
    ([0.0, 0.5, 1.0], [2.0, 2.0])
    >>> d.mean_confidence.round(3).tolist(), d.accuracy.tolist()
    ([0.2, 0.85], [0.5, 1.0])
    """
    edges, sums, binary = _binned(probs, labels, n_bins, strategy, convention, from_logits,
                                  sample_weight)
    return _diagram_from_sums(edges, *sums, convention, binary)


# --------------------------------------------------------------------------------------------
# Brier score and its decomposition.
# --------------------------------------------------------------------------------------------

class BrierDecomposition(NamedTuple):
    """Murphy's decomposition of the Brier score (see :func:`brier_decomposition`)."""

    reliability: float
    resolution: float
    uncertainty: float
    brier: float


def _brier_setup(probs, labels, from_logits, sample_weight):
    from_logits = _check_flag("from_logits", from_logits)
    scores, binary = _check_scores(probs, "probs", from_logits)
    labels = _check_labels(labels, scores.shape[0], None if binary else scores.shape[1])
    sample_weight = _check_sample_weight(sample_weight, scores.shape[0])
    total = _total_weight(sample_weight, scores.shape[0])
    return scores, labels, sample_weight, total, binary, from_logits


def _weighted_sum(values, sample_weight, rows):
    return float(values.sum() if sample_weight is None else sample_weight[rows] @ values)


def brier_score(probs: ArrayLike, labels: ArrayLike, *, from_logits: bool = False,
                sample_weight: Optional[ArrayLike] = None) -> float:
    r"""Brier score: the mean squared error of the predicted probabilities.

    .. math::

        \mathrm{BS} = \frac{1}{N}\sum_i \sum_k (p_{ik} - y_{ik})^2 \quad (N, K);\qquad
        \mathrm{BS} = \frac{1}{N}\sum_i (p_i - y_i)^2 \quad (N,)

    with :math:`y_{ik}` the one-hot labels; weighted means with ``sample_weight``. The
    ``(N, K)`` score ranges over ``[0, 2]`` and equals scikit-learn's multiclass
    ``brier_score_loss`` (for K = 2 scikit-learn halves it by default); the ``(N,)`` score
    ranges over ``[0, 1]`` and equals scikit-learn's binary ``brier_score_loss``.

    Parameters
    ----------
    probs : array_like, float, shape (N, K) or (N,)
        Probabilities (``(N,)``: of the positive class), or logits with ``from_logits=True``.
    labels : array_like, int, shape (N,)
    from_logits : bool, default False
    sample_weight : array_like, shape (N,), optional

    Returns
    -------
    float

    Raises
    ------
    TypeError, ValueError
        For bad arguments, empty input or weights summing to zero.

    References
    ----------
    .. [1] G. W. Brier, "Verification of forecasts expressed in terms of probability",
       Monthly Weather Review 78(1), 1950.

    Examples
    --------
    >>> import numpy as np
    >>> from xent_rs.calibration import brier_score
    >>> round(brier_score(np.array([0.1, 0.9, 0.8, 0.3]), np.array([0, 1, 1, 0])), 6)
    0.0375
    >>> p = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.2, 0.2, 0.6]])
    >>> round(brier_score(p, np.array([0, 1, 2])), 6)
    0.146667
    """
    scores, labels, sample_weight, total, binary, from_logits = _brier_setup(
        probs, labels, from_logits, sample_weight)
    k = 1 if binary else scores.shape[1]
    acc = 0.0
    for rows in _row_chunks(scores.shape[0], k):
        p = _probabilities(scores[rows], binary, from_logits)
        acc += _weighted_sum(_brier_rows(p, labels[rows], binary), sample_weight, rows)
    return acc / total


def brier_decomposition(probs: ArrayLike, labels: ArrayLike, *, n_bins: int = 15,
                        strategy: Strategy = "uniform", convention: Convention = "right",
                        from_logits: bool = False,
                        sample_weight: Optional[ArrayLike] = None) -> BrierDecomposition:
    r"""Murphy's decomposition of the Brier score into reliability, resolution and uncertainty.

    For one binary event with forecasts binned as in :func:`calibration_error` (bin weight
    :math:`n_b`, mean forecast :math:`\bar f_b`, observed frequency :math:`\bar o_b`, base rate
    :math:`\bar o`):

    .. math::

        \mathrm{REL} = \sum_b \frac{n_b}{N}(\bar f_b - \bar o_b)^2,\quad
        \mathrm{RES} = \sum_b \frac{n_b}{N}(\bar o_b - \bar o)^2,\quad
        \mathrm{UNC} = \bar o (1 - \bar o).

    ``(N,)`` input is one event (the positive class). For ``(N, K)`` input each class is an
    event (one-vs-rest: forecast :math:`p_{ik}`, outcome :math:`[y_i = k]`), binned on its own,
    and the three terms are summed over classes; quantile edges are then per class.
    ``BS = REL - RES + UNC`` holds exactly when the forecasts within each bin are equal; with
    continuous forecasts the difference is the within-bin variance terms (Stephenson et al.
    2008), which shrink as bins narrow.

    Parameters
    ----------
    probs, labels, n_bins, strategy, convention, from_logits, sample_weight
        As in :func:`calibration_error`.

    Returns
    -------
    BrierDecomposition
        Named tuple ``(reliability, resolution, uncertainty, brier)``, where ``brier`` is
        :func:`brier_score` of the same input.

    References
    ----------
    .. [1] A. H. Murphy, "A new vector partition of the probability score", Journal of Applied
       Meteorology 12(4), 1973.
    .. [2] D. B. Stephenson, C. A. S. Coelho, I. T. Jolliffe, "Two extra components in the
       Brier score decomposition", Weather and Forecasting 23(4), 2008.

    Examples
    --------
    Forecasts that take one value per bin decompose exactly:

    >>> import numpy as np
    >>> from xent_rs.calibration import brier_decomposition
    >>> p = np.array([0.2, 0.2, 0.2, 0.2, 0.2, 0.7, 0.7, 0.7, 0.7, 0.7])
    >>> y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 0, 1])
    >>> d = brier_decomposition(p, y, n_bins=10)
    >>> [round(v, 4) for v in d]
    [0.005, 0.09, 0.25, 0.165]
    >>> round(d.reliability - d.resolution + d.uncertainty, 4)
    0.165
    """
    n_bins = _check_n_bins(n_bins)
    _check_choice("strategy", strategy, _STRATEGIES)
    _check_choice("convention", convention, _CONVENTIONS)
    scores, labels, sample_weight, total, binary, from_logits = _brier_setup(
        probs, labels, from_logits, sample_weight)
    n = scores.shape[0]
    k = 1 if binary else scores.shape[1]
    if strategy == "quantile":
        p = _probabilities(scores, binary, from_logits)
        edges = _edges(p, n_bins, strategy)
        chunks = [(slice(0, n), p)]
    else:
        edges = _edges(None, n_bins, strategy)
        chunks = ((rows, _probabilities(scores[rows], binary, from_logits))
                  for rows in _row_chunks(n, k))
    slots = _n_slots(n_bins, convention)
    big = np.zeros((3, k, slots))
    brier = 0.0
    for rows, p in chunks:
        w = None if sample_weight is None else sample_weight[rows]
        big += _ovr_sums(p, labels[rows], w, edges, convention, binary)
        brier += _weighted_sum(_brier_rows(p, labels[rows], binary), sample_weight, rows)
    return BrierDecomposition(*_murphy_from_sums(*big), brier / total)


# --------------------------------------------------------------------------------------------
# Temperature scaling and energy scores.
# --------------------------------------------------------------------------------------------

def _temperature_inputs(logits, labels, weight):
    z, binary = _check_scores(logits, "logits", True)
    if binary:  # sigmoid(z) = softmax([0, z])[1]: binary logits become two classes.
        z = np.stack([np.zeros_like(z), z], axis=1)
    labels = _check_labels(labels, z.shape[0], z.shape[1])
    weight = _check_class_weight(weight, z.shape[1])
    return z, labels, weight


def fit_temperature(logits: ArrayLike, labels: ArrayLike, *,
                    weight: Optional[ArrayLike] = None) -> float:
    r"""Temperature scaling: the T > 0 minimising the mean cross-entropy of ``logits / T``.

    With :math:`\beta = 1/T` the mean loss
    :math:`L(\beta) = \frac{1}{W}\sum_i w_{y_i}\,[\operatorname{logsumexp}(\beta z_i) -
    \beta z_{i,y_i}]` is convex, and its derivative
    :math:`L'(\beta) = \frac{1}{W}\sum_i w_{y_i}\,(\mathbb{E}_{\mathrm{softmax}(\beta z_i)}[z]
    - z_{i,y_i})` increases from :math:`L'(0)` to a limit :math:`\ge 0`. The root of
    :math:`L'` is bracketed (doubling from :math:`\beta = 1`) and then found by regula falsi
    (Illinois variant), bisecting whenever a step would leave the bracket, and closing the
    bracket with one step just past the settled estimate. Each step is one pass over the
    logits giving the loss and its derivative together; typically 7 to 15 passes in all. The
    result is accurate to a relative :math:`10^{-6}` (the bracket is narrowed to
    :math:`10^{-8}`).

    Parameters
    ----------
    logits : array_like, float, shape (N, K) or (N,)
        Logits of a held-out set (``(N,)``: binary, sigmoid; treated as the two-class logits
        ``[0, z]``). ``-inf`` masks a class, but not a row's labelled class.
    labels : array_like, int, shape (N,)
    weight : array_like, shape (K,), optional
        Per-class weights, as ``cross_entropy``'s ``weight`` (weighted mean over rows).
        ``(2,)`` for binary logits.

    Returns
    -------
    float
        The temperature ``T``; divide logits by it before the softmax.

    Raises
    ------
    ValueError
        For bad arguments (the message names the argument), for empty input, when every
        weighted row has zero weight, and when no finite ``T > 0`` minimises the loss: if every
        row's labelled class already has the largest logit, the loss keeps falling as
        ``T -> 0``; if ``L'(0) >= 0`` (the logits rank labels no better than chance) it keeps
        falling as ``T -> inf``.

    References
    ----------
    .. [1] C. Guo, G. Pleiss, Y. Sun, K. Q. Weinberger, "On calibration of modern neural
       networks", ICML 2017.

    Examples
    --------
    >>> import numpy as np
    >>> from xent_rs.calibration import fit_temperature
    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(20000, 5)) * 3.0
    >>> p = np.exp(z / 2.0); p /= p.sum(axis=1, keepdims=True)        # true T = 2
    >>> y = (p.cumsum(axis=1) < rng.random((20000, 1))).sum(axis=1)
    >>> round(fit_temperature(z, y), 1)
    2.0
    """
    z, labels, weight = _temperature_inputs(logits, labels, weight)
    scale = float(np.max(np.abs(z[np.isfinite(z)]), initial=0.0))
    if scale > 0.0 and not 1e-100 <= scale <= 1e100:
        # T scales with the logits: search on z / scale, where 1/T stays in range.
        t = fit_temperature(z / scale, labels, weight=weight) * scale
        if not np.finfo(np.float64).tiny <= t < np.inf:
            raise ValueError("logits: the fitted temperature is outside the float64 range "
                             f"(logits of magnitude {scale:g})")
        return float(t)
    n = z.shape[0]
    rows = np.arange(n)
    if weight is not None:
        if not (weight[labels] > 0).any():
            raise ValueError("weight: every row's class has weight 0; the loss is undefined")
        live = weight[labels] > 0
    else:
        live = np.ones(n, dtype=bool)
    z_y = z[rows, labels]
    if np.isneginf(z_y[live]).any():
        raise ValueError("labels: a row's labelled class has logit -inf (infinite loss at "
                         "every temperature)")
    if (z_y[live] >= z[live].max(axis=1)).all():
        raise ValueError("logits: every row's labelled class has the largest logit, so the "
                         "loss keeps decreasing as T -> 0; no finite temperature minimises it")

    def slope(beta):
        return _temperature_objective(z, labels, beta, weight)[1]

    lo, g_lo = 0.0, slope(0.0)
    if not g_lo < 0:
        raise ValueError("logits: the loss does not decrease for any T > 0 (the logits rank "
                         "the labels no better than chance), so it is minimised as T -> inf")
    hi, g_hi = 1.0, slope(1.0)
    beta_cap = 1e300 / max(1.0, float(np.abs(np.where(np.isfinite(z), z, 0.0)).max()))
    while g_hi < 0:
        lo, g_lo = hi, g_hi
        hi *= 2.0
        if hi > beta_cap:
            raise ValueError("logits: the loss keeps decreasing as T -> 0; no finite "
                             "temperature minimises it")
        g_hi = slope(hi)
    if g_hi == 0:
        return float(1.0 / hi)
    side, previous = 0, None
    for _ in range(_TEMPERATURE_MAX_ITER):
        if hi - lo <= _TEMPERATURE_RTOL * lo:
            break
        beta = (lo * g_hi - hi * g_lo) / (g_hi - g_lo)
        if not lo < beta < hi:
            beta = 0.5 * (lo + hi)
        if previous is not None and abs(beta - previous) <= 0.25 * _TEMPERATURE_RTOL * beta:
            # The estimate has settled next to the end it converges from; step just past it
            # towards the other end, so that the bracket closes around the root.
            nudge = 0.5 * _TEMPERATURE_RTOL * beta
            nudged = beta - nudge if beta - lo > hi - beta else beta + nudge
            previous = beta
            beta = nudged if lo < nudged < hi else 0.5 * (lo + hi)
        else:
            previous = beta
        g = slope(beta)
        if g == 0:
            return float(1.0 / beta)
        if g < 0:
            lo, g_lo = beta, g
            if side == -1:
                g_hi *= 0.5  # Illinois: halve the stale end's value to stop one-sided steps
            side = -1
        else:
            hi, g_hi = beta, g
            if side == 1:
                g_lo *= 0.5
            side = 1
    return float(2.0 / (lo + hi))


def energy_score(logits: ArrayLike, *, temperature: float = 1.0) -> np.ndarray:
    r"""Energy score ``-T * logsumexp(logits / T)`` per row (Liu et al. 2020).

    Lower energy means the input looks more in-distribution; ``-energy`` is the usual
    out-of-distribution detection score. Computed stably (max-shifted) in float64.

    Parameters
    ----------
    logits : array_like, float, shape (..., K)
    temperature : float, default 1.0
        ``T > 0``.

    Returns
    -------
    ndarray, shape ``logits.shape[:-1]``
        In the logits' dtype (float32 or float64; float16 gives float32). A row of all
        ``-inf`` gives ``+inf``; NaN propagates.

    References
    ----------
    .. [1] W. Liu, X. Wang, J. Owens, Y. Li, "Energy-based out-of-distribution detection",
       NeurIPS 2020.

    Examples
    --------
    >>> import numpy as np
    >>> from xent_rs.calibration import energy_score
    >>> energy_score(np.array([[0.0, 0.0], [10.0, -10.0]])).round(4)
    array([ -0.6931, -10.    ])
    """
    temperature = _check_positive_real("temperature", temperature)
    arr = _float_input(logits, "logits")
    if arr.ndim < 1 or arr.shape[-1] == 0:
        raise ValueError(f"logits: must have shape (..., K) with K >= 1, got {arr.shape}")
    k = arr.shape[-1]
    flat = arr.reshape(-1, k)
    out = np.empty(flat.shape[0], dtype=arr.dtype)
    for rows in _row_chunks(flat.shape[0], k):
        # −T·lse(z/T) = −(m + T·log Σ exp((z − m)/T)), m = max z: the shift comes before
        # the division, so z/T may overflow (tiny T, huge logits) without the result doing so.
        z = flat[rows].astype(np.float64)
        m = z.max(axis=1)
        finite_m = np.where(np.isfinite(m), m, 0.0)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            s = np.exp((z - finite_m[:, None]) / temperature).sum(axis=1)
            out[rows] = -(finite_m + temperature * np.log(s))
    return out.reshape(arr.shape[:-1])


# --------------------------------------------------------------------------------------------
# Streaming accumulator.
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class CalibrationResult:
    """Every metric a :class:`CalibrationAccumulator` holds, over all the data it has seen.

    Attributes
    ----------
    count : int
        Number of samples.
    weight_sum : float
        Total sample weight (``count`` when unweighted).
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
    diagram: ReliabilityDiagram

    def as_dict(self) -> dict:
        """The scalar metrics as a dict (for logging)."""
        return {k: v for k, v in self.__dict__.items() if k != "diagram"}


class CalibrationAccumulator:
    """Calibration metrics in one pass over data of any size, chunk by chunk.

    Keeps, for uniform bins, the per-bin weight, confidence and outcome sums, the per-class
    one-vs-rest bin sums of the Brier decomposition, and running sums of the Brier score,
    negative log-likelihood, accuracy and confidence. Accumulators of disjoint parts merge by
    adding these, so the result over any split of a data set (chunks of a memory-mapped array,
    files, distributed partitions) equals the one-shot functions on the whole of it, up to
    float64 rounding (about 1e-15 relative).

    Parameters
    ----------
    n_bins : int, default 15
        Uniform bins, edges ``np.linspace(0, 1, n_bins + 1)``.
    convention : {"right", "torchmetrics"}, default "right"
        As in :func:`calibration_error`.
    from_logits : bool, default False
        Whether updates pass logits (softmax / sigmoid) rather than probabilities.

    Examples
    --------
    >>> import numpy as np
    >>> from xent_rs.calibration import CalibrationAccumulator, calibration_error
    >>> rng = np.random.default_rng(1)
    >>> z, y = rng.normal(size=(1000, 4)), rng.integers(0, 4, size=1000)
    >>> acc = CalibrationAccumulator(n_bins=10, from_logits=True)
    >>> for rows in np.array_split(np.arange(1000), 7):
    ...     _ = acc.update(z[rows], y[rows])
    >>> r = acc.result()
    >>> r.count, abs(r.ece - calibration_error(z, y, n_bins=10, from_logits=True)) < 1e-12
    (1000, True)
    """

    def __init__(self, n_bins: int = 15, *, convention: Convention = "right",
                 from_logits: bool = False) -> None:
        self.n_bins = _check_n_bins(n_bins)
        self.convention = _check_choice("convention", convention, _CONVENTIONS)
        self.from_logits = _check_flag("from_logits", from_logits)
        self._edges = np.linspace(0.0, 1.0, self.n_bins + 1)
        self._classes = None  # None until the first update: 0 for binary input, else K
        self._count = 0
        slots = _n_slots(self.n_bins, self.convention)
        self._bins = np.zeros((3, slots))  # weight, confidence, outcome sums per bin
        self._ovr = None                   # (3, C, slots) one-vs-rest sums
        self._sums = np.zeros(5)           # weight, brier, nll, accuracy, confidence

    @property
    def count(self) -> int:
        """Number of samples seen."""
        return self._count

    def __repr__(self):
        shape = {None: "no data", 0: "binary"}.get(self._classes, f"K={self._classes}")
        return (f"CalibrationAccumulator(n_bins={self.n_bins}, convention={self.convention!r}, "
                f"from_logits={self.from_logits}; {self._count} samples, {shape})")

    def _adopt(self, classes, name):
        if self._classes is None:
            self._classes = classes
            self._ovr = np.zeros((3, max(classes, 1), self._bins.shape[1]))
        elif self._classes != classes:
            have = "binary (N,)" if self._classes == 0 else f"(N, {self._classes})"
            got = "binary (N,)" if classes == 0 else f"(N, {classes})"
            raise ValueError(f"{name}: got {got} input, but this accumulator holds {have} data")

    def update(self, probs_or_logits: ArrayLike, labels: ArrayLike,
               sample_weight: Optional[ArrayLike] = None) -> "CalibrationAccumulator":
        """Add a chunk of predictions.

        Parameters
        ----------
        probs_or_logits : array_like, float, shape (N, K) or (N,)
            Probabilities, or logits if the accumulator was made with ``from_logits=True``.
            Every chunk must have the same shape kind and K. ``N = 0`` is allowed (no-op).
        labels : array_like, int, shape (N,)
        sample_weight : array_like, shape (N,), optional

        Returns
        -------
        CalibrationAccumulator
            ``self``, for chaining.
        """
        name = "probs_or_logits"
        scores, binary = _check_scores(probs_or_logits, name, self.from_logits,
                                       allow_empty=True)
        n = scores.shape[0]
        labels = _check_labels(labels, n, None if binary else scores.shape[1])
        sample_weight = _check_sample_weight(sample_weight, n)
        self._adopt(0 if binary else scores.shape[1], name)
        if n == 0:
            return self
        k = 1 if binary else scores.shape[1]
        for rows in _row_chunks(n, k):
            s, y = scores[rows], labels[rows]
            w = None if sample_weight is None else sample_weight[rows]
            conf, outcome = _confidence_outcome(s, y, binary, self.from_logits)
            self._bins += _reliability_sums(conf, outcome, w, self._edges, self.convention)
            p = _probabilities(s, binary, self.from_logits)
            self._ovr += _ovr_sums(p, y, w, self._edges, self.convention, binary)
            hit = (p > 0.5) == y if binary else outcome
            cols = (np.ones(len(y)), _brier_rows(p, y, binary),
                    _nll_rows(s, y, binary, self.from_logits), hit, conf)
            if w is not None:  # rows of weight 0 are left out, even with an infinite loss
                cols = [np.where(w > 0, c, 0.0) for c in cols]
            self._sums += [c.sum() if w is None else w @ c for c in cols]
        self._count += n
        return self

    def merge(self, other: "CalibrationAccumulator") -> "CalibrationAccumulator":
        """Add another accumulator's data to this one (in place; ``other`` is unchanged).

        Raises
        ------
        TypeError
            If ``other`` is not a CalibrationAccumulator.
        ValueError
            If the two differ in ``n_bins``, ``convention``, ``from_logits`` or input shape.
        """
        if not isinstance(other, CalibrationAccumulator):
            raise TypeError(f"other: expected a CalibrationAccumulator, got "
                            f"{type(other).__name__}")
        for attr in ("n_bins", "convention", "from_logits"):
            if getattr(self, attr) != getattr(other, attr):
                raise ValueError(f"other: {attr} differs ({getattr(other, attr)!r} vs "
                                 f"{getattr(self, attr)!r})")
        if other._classes is None:
            return self
        self._adopt(other._classes, "other")
        self._bins += other._bins
        self._ovr += other._ovr
        self._sums += other._sums
        self._count += other._count
        return self

    def result(self) -> CalibrationResult:
        """All metrics over the data seen so far.

        Returns
        -------
        CalibrationResult

        Raises
        ------
        ValueError
            If no data (or only zero total weight) has been added: the metrics are undefined.
        """
        total = self._sums[0]
        if self._count == 0 or total <= 0:
            raise ValueError("CalibrationAccumulator: no data (or zero total weight) has been "
                             "added; the metrics are undefined")
        w, c, o = self._bins
        reliability, resolution, uncertainty = _murphy_from_sums(*self._ovr)
        return CalibrationResult(
            count=self._count,
            weight_sum=float(total),
            ece=_error_from_sums(w, c, o, "l1"),
            rms=_error_from_sums(w, c, o, "l2"),
            mce=_error_from_sums(w, c, o, "max"),
            brier=float(self._sums[1] / total),
            reliability=reliability,
            resolution=resolution,
            uncertainty=uncertainty,
            nll=float(self._sums[2] / total),
            accuracy=float(self._sums[3] / total),
            mean_confidence=float(self._sums[4] / total),
            diagram=_diagram_from_sums(self._edges, w, c, o, self.convention,
                                       self._classes == 0),
        )


# --------------------------------------------------------------------------------------------
# Diagnostics of the cross-entropy.
# --------------------------------------------------------------------------------------------

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
            object.__setattr__(self, name, _frozen(np.array(getattr(self, name))))


def _ce_rows(logits, labels):
    """Per-row cross-entropy and argmax == label for (N, K) logits, float64, chunked."""
    n, k = logits.shape
    loss = np.empty(n)
    correct = np.empty(n, dtype=bool)
    for rows in _row_chunks(n, k):
        z = logits[rows].astype(np.float64)
        y = labels[rows]
        top = z.argmax(axis=1)
        m = z[np.arange(z.shape[0]), top]
        lse = m + np.log(np.exp(z - m[:, None]).sum(axis=1))
        loss[rows] = lse - z[np.arange(z.shape[0]), y]
        correct[rows] = top == y
    return loss, correct


def loss_breakdown(logits: ArrayLike, labels: ArrayLike, *,
                   threshold: float = 0.01) -> LossBreakdown:
    r"""Where the cross-entropy comes from: per class, and from confidently wrong predictions.

    The loss of a row is :math:`\ell_i = \operatorname{logsumexp}(z_i) - z_{i,y_i}`. Per class
    :math:`k` (over the rows labelled :math:`k`) this reports the mean loss, the count, the
    accuracy and the share :math:`\sum_{y_i = k} \ell_i / \sum_i \ell_i` of the total loss.
    A row is *confidently wrong* when its labelled class gets probability below ``threshold``
    (:math:`\ell_i > -\log(\text{threshold})`; for :math:`K \le 1/\text{threshold}` such a row
    is always misclassified). A few such rows often dominate a mean cross-entropy: label
    noise, or a model that is over-confident where it errs.

    Parameters
    ----------
    logits : array_like, float, shape (N, K) or (N,)
        ``(N,)``: binary (sigmoid) logits, reported as the two classes 0 and 1.
    labels : array_like, int, shape (N,)
    threshold : float, default 0.01
        In ``(0, 1]``.

    Returns
    -------
    LossBreakdown
        ``class_loss``, ``class_count``, ``class_accuracy``, ``class_loss_share`` (arrays
        of shape (K,)), ``mean_loss``, ``accuracy``, ``threshold``,
        ``confident_wrong_count`` and ``confident_wrong_share`` (NaN when the total loss
        is 0).

    Raises
    ------
    ValueError
        For bad arguments, empty input, or a labelled class with logit ``-inf`` (infinite
        loss).

    Examples
    --------
    >>> import numpy as np
    >>> from xent_rs.calibration import loss_breakdown
    >>> z = np.array([[4.0, 0.0], [3.0, 0.0], [0.0, 6.0], [0.0, 1.0]])
    >>> b = loss_breakdown(z, np.array([0, 0, 0, 1]))
    >>> b.class_count.tolist(), b.class_accuracy.tolist()
    ([3, 1], [0.6666666666666666, 1.0])
    >>> b.confident_wrong_count, round(b.confident_wrong_share, 3)
    (1, 0.94)
    """
    if isinstance(threshold, (bool, np.bool_)) or not isinstance(threshold, numbers.Real):
        raise TypeError(f"threshold: must be a real number, got {type(threshold).__name__}")
    threshold = float(threshold)
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold: must lie in (0, 1], got {threshold}")
    z, labels, _ = _temperature_inputs(logits, labels, None)
    k = z.shape[1]
    loss, correct = _ce_rows(z, labels)
    if np.isnan(loss).any():
        raise ValueError("logits: a row's loss is undefined (a +inf logit, or a binary logit "
                         "of ±inf); pass finite logits")
    if np.isinf(loss).any():
        raise ValueError("labels: a row's labelled class has logit -inf (infinite loss)")
    count = np.bincount(labels, minlength=k)
    loss_sum = np.bincount(labels, weights=loss, minlength=k)
    hits = np.bincount(labels, weights=correct, minlength=k)
    total = loss.sum()
    wrong = loss > -math.log(threshold)
    with np.errstate(invalid="ignore", divide="ignore"):
        present = count > 0
        class_loss = np.where(present, loss_sum / np.maximum(count, 1), np.nan)
        class_acc = np.where(present, hits / np.maximum(count, 1), np.nan)
        share = loss_sum / total if total > 0 else np.full(k, np.nan)
        wrong_share = float(loss[wrong].sum() / total) if total > 0 else math.nan
    return LossBreakdown(class_loss=class_loss, class_count=count.astype(np.int64),
                         class_accuracy=class_acc, class_loss_share=share,
                         mean_loss=float(total / len(loss)), accuracy=float(correct.mean()),
                         threshold=threshold, confident_wrong_count=int(wrong.sum()),
                         confident_wrong_share=wrong_share)


def label_dependence(targets: ArrayLike) -> np.ndarray:
    r"""Pairwise mutual information (nats) between the binary label columns of multi-label data.

    .. math::

        I(Y_a; Y_b) = \sum_{u, v \in \{0, 1\}} p_{ab}(u, v)
        \log \frac{p_{ab}(u, v)}{p_a(u)\, p_b(v)}

    from the empirical joint frequencies (:math:`0 \log 0 = 0`); the diagonal holds each
    label's entropy :math:`H(Y_a) = I(Y_a; Y_a)`.

    Why it matters for the choice of head: a softmax over the four joint combinations of a
    pair can express any joint distribution, so the best expected loss it can reach is the
    joint entropy :math:`H(Y_a, Y_b)`; two independent sigmoid (BCE) heads model
    :math:`p(a)\,p(b)`, whose best expected loss is :math:`H(Y_a) + H(Y_b)`. Since
    :math:`H(Y_a) + H(Y_b) - H(Y_a, Y_b) = I(Y_a; Y_b)`, the mutual information is exactly
    the expected cross-entropy (nats per sample) that independent heads give up against the
    joint softmax. Computed from the labels alone, this is the gap for models of the label
    distribution without inputs; for a model with inputs :math:`x` the gap is the conditional
    mutual information :math:`I(Y_a; Y_b \mid X)`, which the features may explain away (or,
    more rarely, increase). Near-zero entries say independent heads lose nothing; large ones
    say the pair should share a softmax (or the model should capture the dependence).

    Parameters
    ----------
    targets : array_like, shape (N, L)
        0/1 labels (bool, integer, or float equal to 0 or 1), one column per label.

    Returns
    -------
    ndarray, float64, shape (L, L)
        Symmetric, non-negative; entry ``[a, b]`` is :math:`I(Y_a; Y_b)` in nats.

    Raises
    ------
    TypeError, ValueError
        For a non-numeric array, a shape other than (N, L), values other than 0/1, or
        ``N = 0``.

    Examples
    --------
    >>> import numpy as np
    >>> from xent_rs.calibration import label_dependence
    >>> y = np.array([[0, 0, 1], [0, 1, 1], [1, 0, 0], [1, 1, 0]])
    >>> label_dependence(y).round(4)
    array([[0.6931, 0.    , 0.6931],
           [0.    , 0.6931, 0.    ],
           [0.6931, 0.    , 0.6931]])
    """
    arr = _as_array(targets, "targets")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"targets: must be a 0/1 array, got {_kind_name(arr.dtype)} dtype "
                        f"({arr.dtype})")
    if arr.ndim != 2:
        raise ValueError(f"targets: must have shape (N, L), got {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError("targets: empty input (N = 0); the mutual information is undefined")
    if not ((arr == 0) | (arr == 1)).all():
        raise ValueError("targets: values must be 0 or 1")
    t = arr.astype(np.float64)
    n = float(t.shape[0])
    n11 = t.T @ t                        # co-occurrence counts, exact below 2**53
    n1 = np.diag(n11).copy()
    n10 = n1[:, None] - n11
    n01 = n1[None, :] - n11
    n00 = n - n1[:, None] - n1[None, :] + n11
    p1 = n1 / n
    p0 = 1.0 - p1
    mi = np.zeros_like(n11)
    with np.errstate(divide="ignore", invalid="ignore"):
        for count, pa, pb in ((n11, p1[:, None], p1[None, :]), (n10, p1[:, None], p0[None, :]),
                              (n01, p0[:, None], p1[None, :]), (n00, p0[:, None], p0[None, :])):
            pj = count / n
            mi += np.where(pj > 0, pj * np.log(pj / (pa * pb)), 0.0)
    mi = np.maximum(mi, 0.0)  # clip rounding below zero
    return (mi + mi.T) / 2.0
