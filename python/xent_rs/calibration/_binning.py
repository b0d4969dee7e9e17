"""Bin edges, bin membership and the per-bin sums every binned metric is computed from.

Sums come in two forms: dense per-bin arrays (:func:`reliability_sums`, for the one-shot
functions, one ``np.bincount`` per call) and *entries*, pairs of flat bin indices and values
(:func:`reliability_entries`, :func:`ovr_entries`) whose cost is proportional to the rows
passed, not to the number of bins, for adding into statistics that are kept between calls.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from .. import _core
from .. import _validate as _v

Norm = Literal["l1", "l2", "max"]
Strategy = Literal["uniform", "quantile"]
Convention = Literal["right", "torchmetrics"]

NORMS = ("l1", "l2", "max")
STRATEGIES = ("uniform", "quantile")
CONVENTIONS = ("right", "torchmetrics")

#: The most bins any binned metric accepts (its statistics are a few arrays of that length).
MAX_BINS = 10**7


#: The most one-vs-rest bin slots, classes × bins (binary input: 1 × bins; the extra
#: torchmetrics bin counted), that :func:`brier_decomposition` and
#: :class:`CalibrationAccumulator` keep: three float64 each, 1.5 GiB at the limit.
MAX_BIN_SLOTS = 2**26


#: Up to this many one-vs-rest slots (classes × bins) the one-vs-rest statistics come from
#: the fused Rust pass (``_core.calib_stats``; its scratch is a few copies of them); beyond
#: it, from the NumPy path whose cost is proportional to the rows alone.
FUSED_MAX_SLOTS = 2**14


def _fused(scores, k, from_logits, labels, w, edges, convention, out, top_only, name):
    """Runs the fused Rust pass into ``out``; its in-pass validation names the first bad
    row, and :func:`_validate.scores` on the whole input then raises its usual error."""
    bad = _core.calib_stats(np.require(scores, requirements=["C", "A"]), k, from_logits,
                            np.require(labels, np.int64, ["C", "A"]), w, edges,
                            convention == "right", out, top_only)
    if bad >= 0:
        _v.score_values(scores, name, from_logits, False)
        raise ValueError(f"{name}: row {bad} holds values outside the domain")


def fused_ovr(scores, k, from_logits, labels, w, edges, convention, name="probs"):
    """The fused pass over (N, K) scores: (top-label sums (3, slots), one-vs-rest sums
    (3, K, slots), [weight, Brier, NLL, accuracy, confidence] sums), float64."""
    slots = n_slots(len(edges) - 1, convention)
    stats = np.zeros(3 * slots * (1 + k) + 5)
    _fused(scores, k, from_logits, labels, w, edges, convention, stats, False, name)
    return (stats[:3 * slots].reshape(3, slots),
            stats[3 * slots:3 * slots * (1 + k)].reshape(3, k, slots), stats[-5:])


def fused_top(scores, k, from_logits, labels, w, edges, convention, name="probs"):
    """Top-label sums (3, slots) of (N, K) scores from the fused pass: weight, confidence
    and outcome per bin."""
    slots = n_slots(len(edges) - 1, convention)
    stats = np.zeros(3 * slots)
    _fused(scores, k, from_logits, labels, w, edges, convention, stats, True, name)
    return stats.reshape(3, slots)


def check_n_bins(n_bins):
    """``n_bins`` as an int in ``[1, MAX_BINS]``."""
    return _v.bounded_integer(n_bins, "n_bins", 1, MAX_BINS)


def check_bin_slots(n_bins, convention, classes):
    """``ValueError`` naming ``n_bins`` when classes × bins exceeds :data:`MAX_BIN_SLOTS`.

    ``classes`` is K, or 0 for binary input (one class is binned).
    """
    c = max(classes, 1)
    slots = n_slots(n_bins, convention) * c
    if slots > MAX_BIN_SLOTS:
        raise ValueError(f"n_bins: {n_bins} bins for {c} class(es) need {slots} one-vs-rest "
                         f"bin slots, more than MAX_BIN_SLOTS = 2**26 = {MAX_BIN_SLOTS}; use "
                         f"fewer bins")


def edges(confidence, n_bins, strategy):
    """Uniform edges ``linspace(0, 1, n_bins + 1)`` or percentiles of ``confidence`` (per
    column for 2-D input)."""
    if strategy == "uniform":
        return np.linspace(0.0, 1.0, n_bins + 1)
    return np.percentile(confidence, np.linspace(0.0, 100.0, n_bins + 1), axis=0)


def n_slots(n_bins, convention):
    """Number of bins actually used: torchmetrics adds one for the last edge itself."""
    return n_bins + (convention == "torchmetrics")


def bin_index(values, edges, convention):
    """Bin of each value (any shape) for 1-D edges."""
    if convention == "right":
        return np.searchsorted(edges[1:-1], values, side="left")
    return np.searchsorted(edges, values, side="right") - 1


def bin_index_per_column(values, edges, convention):
    """Bin of each value of an (n, K) array, with edges (n_bins + 1, K), one column per class.

    The same rule as :func:`bin_index`, counted edge by edge (a loop over bins, not samples).
    """
    idx = np.zeros(values.shape, dtype=np.intp)
    if convention == "right":
        for e in edges[1:-1]:
            idx += values > e
    else:
        for e in edges[1:]:
            idx += values >= e
    return idx


def reliability_entries(confidence, outcome, sample_weight, edges, convention):
    """Flat indices into ``(3, slots)`` (weight, confidence, outcome sums) and their values."""
    slots = n_slots(len(edges) - 1, convention)
    b = bin_index(confidence, edges, convention)
    if sample_weight is None:
        values = (np.ones(len(b)), confidence, outcome.astype(np.float64))
    else:
        values = (sample_weight, sample_weight * confidence, sample_weight * outcome)
    return np.concatenate([b, b + slots, b + 2 * slots]), np.concatenate(values)


def reliability_sums(confidence, outcome, sample_weight, edges, convention):
    """Per-bin (total weight, weighted confidence sum, weighted outcome sum), (3, slots)."""
    slots = n_slots(len(edges) - 1, convention)
    idx, values = reliability_entries(confidence, outcome, sample_weight, edges, convention)
    return np.bincount(idx, values, minlength=3 * slots).reshape(3, slots)


def ovr_entries(p, labels, sample_weight, edges, convention, binary):
    """One-vs-rest entries of the Murphy decomposition for a float64 probability chunk.

    Flat indices into ``(3, C, slots)`` (C = 1 for binary input, else K): total weight,
    weighted forecast sum and weighted outcome sum of class c's probability in each bin,
    with their values. Uniform edges are shared by all classes, quantile edges have one
    column per class.
    """
    slots = n_slots(edges.shape[0] - 1, convention)
    if binary:
        p = p[:, None]
    n, c = p.shape
    if edges.ndim == 1:
        idx = bin_index(p, edges, convention)
    else:
        idx = bin_index_per_column(p, edges, convention)
    flat = idx + slots * np.arange(c)
    size = c * slots
    w = np.ones(n) if sample_weight is None else sample_weight
    if binary:
        hit, hit_value = flat[:, 0], w * labels
    else:
        hit, hit_value = flat[np.arange(n), labels], w
    index = np.concatenate([flat.ravel(), flat.ravel() + size, hit + 2 * size])
    values = np.concatenate([np.broadcast_to(w[:, None], (n, c)).ravel(),
                             (p * w[:, None]).ravel(), hit_value])
    return index, values


def error_from_sums(total, conf_sum, outcome_sum, norm):
    """Calibration error from per-bin sums: bins of zero weight are left out."""
    filled = total > 0
    gap = np.abs(outcome_sum[filled] - conf_sum[filled])
    n = total.sum()
    if norm == "l1":
        return float(gap.sum() / n)
    if norm == "l2":
        return float(math.sqrt((gap * gap / total[filled]).sum() / n))
    return float((gap / total[filled]).max())


def murphy_from_sums(big_w, big_f, big_o):
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
