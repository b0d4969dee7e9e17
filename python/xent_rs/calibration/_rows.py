"""Per-row quantities of the calibration metrics, from the library's Rust kernels.

Every function here maps a chunk of validated rows to one value (or one probability row) per
row, and a row's result never depends on which other rows are passed along with it: the
accumulator relies on that to reproduce the one-shot numbers whatever the chunking. The
numeric passes (softmax, sigmoid, negative log-likelihood, top-label confidence, the
temperature objective) run in the Rust core through the public API; the float64 inputs given
to it are what keeps float32 logits exact to float64 rounding here.

Sample weights are scaled by a power of two before any sum (:func:`scaled_weights`): exact,
so every metric (a ratio of weighted sums) is unchanged, and uniform weights of 1e306 or
1e-310 give the numbers that no weights give instead of overflowing or underflowing.
"""

from __future__ import annotations

import math

import numpy as np

import xent_rs as _xr
from .. import _core

# Row chunks bound the float64 temporaries to about 32 MiB whatever K is.
_CHUNK_ELEMENTS = 1 << 22
_MAX_CHUNK_ROWS = 65536


def row_chunks(n, k=1):
    """Slices of at most ``_CHUNK_ELEMENTS // k`` (and 65536) rows covering ``range(n)``."""
    step = max(1, min(_MAX_CHUNK_ROWS, _CHUNK_ELEMENTS // max(k, 1)))
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


# --------------------------------------------------------------------------------------------
# Sample weights.
# --------------------------------------------------------------------------------------------

def weight_exponent(sample_weight, n):
    """The power of two that brings the largest weight into [1, 2); None without weight.

    0 for unweighted rows (``sample_weight`` None, ``n > 0``); None when there are no rows or
    every weight is 0 (nothing to scale).
    """
    if n == 0:
        return None
    if sample_weight is None:
        return 0
    top = float(sample_weight.max())
    if top <= 0.0:
        return None
    return math.frexp(top)[1] - 1


def scale_by_power_of_two(values, exponent):
    """``values * 2**exponent``, exact unless it leaves the float64 range (then 0 or inf)."""
    with np.errstate(over="ignore", under="ignore"):
        return np.ldexp(values, exponent)


def scaled_weights(sample_weight, n, exponent):
    """Weights times ``2**-exponent`` as float64 (n,), or None for unit weights.

    With the exponent of :func:`weight_exponent` the largest weight is in [1, 2), so sums of
    up to 2**52 weights neither overflow nor lose the subnormal range, and every ratio of
    weighted sums is what the unscaled weights give.
    """
    if exponent is None:
        exponent = 0
    if sample_weight is None:
        return None if exponent == 0 else np.full(n, math.ldexp(1.0, -exponent))
    return scale_by_power_of_two(sample_weight, -exponent)


def total_weight(sample_weight, n):
    """The total of the (scaled) weights (``n`` when unweighted); ``ValueError`` if 0."""
    total = float(n) if sample_weight is None else float(sample_weight.sum())
    if total <= 0:
        raise ValueError("sample_weight: the weights sum to zero; the metric is undefined")
    return total


def weighted_sum(values, sample_weight, rows=slice(None)):
    """``sum(values)`` or ``sample_weight[rows] @ values``, as a float."""
    return float(values.sum() if sample_weight is None else sample_weight[rows] @ values)


# --------------------------------------------------------------------------------------------
# Row kernels (the Rust core, through the public API where it has one).
# --------------------------------------------------------------------------------------------

def _float64(z):
    return np.require(z, dtype=np.float64, requirements=["C", "A"])


def top_label_from_logits(logits, labels):
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


def temperature_objective(logits, labels, beta, weight):
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
    w = None if weight is None else _float64(weight)
    loss_sum, grad_sum, weight_sum = _core.temperature_objective(
        np.require(logits, requirements=["C", "A"]), k,
        np.require(labels, dtype=np.int64, requirements=["C", "A"]), float(beta), w)
    return float(loss_sum / weight_sum), float(grad_sum / weight_sum)


def sigmoid(z):
    """float64 ``sigmoid(z) = exp(-softplus(-z))``, the softplus from the BCE kernel."""
    z = _float64(z)
    return np.exp(-_xr.binary_cross_entropy_with_logits(z, np.ones_like(z), reduction="none"))


def probabilities(scores, binary, from_logits):
    """float64 probabilities of a chunk: (n,) for binary input, else (n, K)."""
    if not from_logits:
        return scores.astype(np.float64)
    return sigmoid(scores) if binary else _xr.softmax(_float64(scores))


def confidence_outcome(scores, labels, binary, from_logits):
    """(confidence float64 (N,), outcome bool (N,)) as scored by the calibration metrics."""
    if binary:
        return probabilities(scores, True, from_logits), labels.astype(bool)
    if from_logits:
        return top_label_from_logits(scores, labels)
    return scores.max(axis=1).astype(np.float64), scores.argmax(axis=1) == labels


def brier_rows(p, labels, binary):
    """Per-row squared error of a float64 probability chunk against the labels.

    ``p`` is overwritten (it is a temporary of the caller's).
    """
    if binary:
        d = p - labels
        return d * d
    p[np.arange(p.shape[0]), labels] -= 1.0
    return np.einsum("ij,ij->i", p, p)


def nll_rows(scores, labels, binary, from_logits):
    """Per-row negative log-likelihood of the labels, float64 (inf where p(label) = 0).

    From logits this is the cross-entropy kernel (softmax) or the BCE kernel (sigmoid), fed
    float64 so that float32 logits lose nothing.
    """
    if from_logits:
        z = _float64(scores)
        if binary:
            return _xr.binary_cross_entropy_with_logits(z, labels.astype(np.float64),
                                                        reduction="none")
        return _xr.cross_entropy(z, labels, reduction="none")
    if binary:
        p = scores.astype(np.float64)
        p_label = np.where(labels == 1, p, 1.0 - p)
    else:
        p_label = scores[np.arange(scores.shape[0]), labels].astype(np.float64)
    with np.errstate(divide="ignore"):
        return -np.log(p_label)


def cross_entropy_rows(logits, labels):
    """Per-row cross-entropy (float64, from float64 logits) and argmax == label, chunked.

    The loss is NaN for a row holding +inf, +inf where the label's logit is -inf.
    """
    n, k = logits.shape
    loss = np.empty(n)
    correct = np.empty(n, dtype=bool)
    for rows in row_chunks(n, k):
        z = _float64(logits[rows])
        loss[rows] = _xr.cross_entropy(z, labels[rows], reduction="none")
        correct[rows] = z.argmax(axis=1) == labels[rows]
    return loss, correct


def energy_rows(logits, temperature):
    """``-T * logsumexp(z / T)`` per row of a 2-D chunk, in float64.

    Computed as ``-(m + T * logsumexp((z - m) / T))`` with ``m = max z``: the shift comes
    before the division, so ``z / T`` may overflow (tiny T, huge logits) without the result
    doing so. Rows whose maximum is not finite are settled here: +inf gives -inf, all -inf
    gives +inf, NaN gives NaN (the kernel's logsumexp leaves those to its caller).
    """
    z = _float64(logits)
    m = z.max(axis=1)
    finite = np.isfinite(m)
    shift = np.where(finite, m, 0.0)
    with np.errstate(over="ignore", invalid="ignore"):
        shifted = (z - shift[:, None]) / temperature
    shifted[~finite] = 0.0
    with np.errstate(over="ignore"):
        energy = -(shift + temperature * _xr.logsumexp(shifted))
    return np.where(finite, energy, np.where(np.isnan(m), np.nan, -m))
