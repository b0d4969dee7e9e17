"""Bootstrap confidence intervals of the calibration metrics, resampled in the Rust core."""

from __future__ import annotations

from typing import Any, Tuple

import numpy as np
from numpy.typing import ArrayLike

from .. import _core
from .. import _validate as _v
from . import _binning, _rows

#: The metrics :func:`confidence_interval` resamples.
METRICS = ("ece", "rms", "mce", "brier", "nll", "accuracy")
_BINNED = ("ece", "rms", "mce")
_NORM = {"ece": "l1", "rms": "l2", "mce": "max"}
#: The most resamples (their statistics are ``3 × bins`` float64 each).
MAX_RESAMPLES = 10**7
#: The most resampled statistics (3 × resamples × bins float64, 1 GiB).
MAX_STATISTICS = 2**27


def _errors_from_sums(w, c, o, norm):
    """:func:`_binning.error_from_sums` for a stack of resamples: (R, slots) sums."""
    filled = w > 0
    gap = np.abs(o - c)
    total = w.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        if norm == "l1":
            return gap.sum(axis=1) / total
        per_bin = np.where(filled, gap / np.where(filled, w, 1.0), 0.0)
        if norm == "l2":
            return np.sqrt((per_bin * gap).sum(axis=1) / total)
        out = np.where(filled, per_bin, -np.inf).max(axis=1)
    return np.where(total > 0, out, np.nan)


def _per_sample(metric, scores, labels, binary, from_logits, n_bins, strategy, convention):
    """(bins int64 (N,), a float64 (N,), c float64 (N,) or None, slots, norm or None)."""
    n = scores.shape[0]
    if metric in _BINNED:
        conf, outcome = _rows.confidence_outcome(scores, labels, binary, from_logits)
        edges = _binning.edges(conf, n_bins, strategy)
        bins = _binning.bin_index(conf, edges, convention).astype(np.int64)
        return bins, conf, outcome.astype(np.float64), _binning.n_slots(n_bins, convention)
    k = 1 if binary else scores.shape[1]
    if metric == "accuracy":
        if binary:
            p = _rows.probabilities(scores, True, from_logits)
            value = ((p > 0.5) == labels.astype(bool)).astype(np.float64)
        else:
            value = _rows.confidence_outcome(scores, labels, False, from_logits)[1]
            value = value.astype(np.float64)
    else:
        value = np.empty(n)
        for rows in _rows.row_chunks(n, k):
            if metric == "nll":
                value[rows] = _rows.nll_rows(scores[rows], labels[rows], binary, from_logits)
            else:
                p = _rows.probabilities(scores[rows], binary, from_logits)
                value[rows] = _rows.brier_rows(p, labels[rows], binary)
    return np.zeros(n, dtype=np.int64), value, None, 1


def _metric_from_sums(metric, sums):
    """The metric of each resample from its (R, 3, slots) sums."""
    w, a, c = sums[:, 0], sums[:, 1], sums[:, 2]
    if metric in _BINNED:
        return _errors_from_sums(w, a, c, _NORM[metric])
    with np.errstate(divide="ignore", invalid="ignore"):
        return a[:, 0] / w[:, 0]


def confidence_interval(metric: str, probs: ArrayLike, labels: ArrayLike, *,
                        n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0,
                        **metric_kwargs: Any) -> Tuple[float, float, float]:
    r"""Percentile-bootstrap confidence interval of a calibration metric.

    The per-sample statistics (bin, confidence and outcome for the binned metrics; the
    per-sample Brier term, negative log-likelihood or correctness otherwise) are computed
    once, from logits by the fused Rust passes (no ``(N, K)`` probability matrix for the
    binned metrics, NLL and accuracy; the Brier terms take row chunks); then each of the
    ``n_resamples`` resamples is a weighted re-sum in the Rust core, with independent
    Poisson(1) weights (the Poisson bootstrap, Hanley & MacGibbon 2006; Chamandy et al. 2012)
    drawn by a counter-based generator keyed by ``seed`` (Wellons' ``lowbias32`` hash of the
    sample's position, keyed per resample by SplitMix64; documented in the core's
    ``bootstrap`` module). The inputs are not copied, and the result is the same for a given
    seed on any thread count. The interval is
    ``[q_{(1-confidence)/2}, q_{(1+confidence)/2}]`` of the resampled metric values
    (``np.nanpercentile``, linear interpolation; a resample with no weight at all, possible
    only for tiny N, is left out).

    Bins are those of the data itself (for ``strategy="quantile"``, the data's
    percentiles), held fixed across resamples: the interval is that of the metric's sampling
    error at fixed bins.

    Parameters
    ----------
    metric : {"ece", "rms", "mce", "brier", "nll", "accuracy"}
        ``calibration_error`` with ``norm="l1"``, ``"l2"``, ``"max"``; :func:`brier_score`;
        the mean negative log-likelihood; the accuracy (binary: of ``p > 0.5``, as in
        :class:`CalibrationResult`).
    probs, labels : array_like
        As in :func:`calibration_error`.
    n_resamples : int, default 1000
        At least 1.
    confidence : float, default 0.95
        In (0, 1).
    seed : int, default 0
        In ``[0, 2**64)``.
    **metric_kwargs
        ``from_logits`` and ``sample_weight`` for every metric; ``n_bins``, ``strategy`` and
        ``convention`` for the binned ones (meanings as in :func:`calibration_error`). A
        sample's bootstrap weight multiplies its sample weight.

    Returns
    -------
    (estimate, low, high) : tuple of float
        ``estimate`` is the metric on the data itself (the same number as the one-shot
        function).

    Raises
    ------
    ValueError
        Unknown ``metric``, ``confidence`` outside (0, 1), ``n_resamples < 1``, an unknown
        keyword for the metric (naming it), and as :func:`calibration_error`.

    References
    ----------
    .. [1] B. Efron, R. J. Tibshirani, "An introduction to the bootstrap", Chapman & Hall
       1993 (the percentile interval).
    .. [2] J. A. Hanley, B. J. MacGibbon, "Creating non-parametric bootstrap samples using
       Poisson frequencies", Computer Methods and Programs in Biomedicine 83(1), 2006.
    .. [3] N. Chamandy, O. Muralidharan, A. Najmi, S. Naidu, "Estimating uncertainty for
       massive data streams", Google technical report, 2012.

    Examples
    --------
    >>> import numpy as np
    >>> from xent_rs.calibration import confidence_interval
    >>> rng = np.random.default_rng(0)
    >>> p = rng.uniform(size=5000)
    >>> y = rng.uniform(size=5000) < p
    >>> est, low, high = confidence_interval("brier", p, y, n_resamples=200)
    >>> bool(low < est < high), round(est, 2)
    (True, 0.17)
    """
    _v.choice("metric", metric, METRICS)
    n_resamples = _v.bounded_integer(n_resamples, "n_resamples", 1, MAX_RESAMPLES)
    confidence = _v.real(confidence, "confidence")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence: must be in (0, 1); got {confidence!r}")
    seed = _v.bounded_integer(seed, "seed", 0, 2**64 - 1)
    allowed = {"from_logits", "sample_weight"}
    if metric in _BINNED:
        allowed |= {"n_bins", "strategy", "convention"}
    for name in metric_kwargs:
        if name not in allowed:
            raise ValueError(f"{name}: not a keyword of metric {metric!r} (it takes "
                             f"{', '.join(sorted(allowed))})")
    from_logits = _v.flag(metric_kwargs.get("from_logits", False), "from_logits")
    n_bins = _binning.check_n_bins(metric_kwargs.get("n_bins", 15))
    strategy = metric_kwargs.get("strategy", "uniform")
    convention = metric_kwargs.get("convention", "right")
    _v.choice("strategy", strategy, _binning.STRATEGIES)
    _v.choice("convention", convention, _binning.CONVENTIONS)
    scores, binary = _v.scores(probs, "probs", from_logits)
    labels = _v.labels(labels, scores.shape[0], None if binary else scores.shape[1])
    n = scores.shape[0]
    raw = _v.sample_weight(metric_kwargs.get("sample_weight"), n)
    w = _rows.scaled_weights(raw, n, _rows.weight_exponent(raw, n))
    _rows.total_weight(w, n)
    bins, a, c, slots = _per_sample(metric, scores, labels, binary, from_logits, n_bins,
                                    strategy, convention)
    if n_resamples * 3 * slots > MAX_STATISTICS:
        raise ValueError(f"n_resamples: {n_resamples} resamples of {slots} bins need "
                         f"{3 * n_resamples * slots} float64 statistics, more than 2**27; "
                         f"use fewer resamples or bins")
    # The data itself: the same sums as the one-shot metrics (weight 1 each).
    ws = np.ones(n) if w is None else w
    own = np.stack([np.bincount(bins, ws, minlength=slots),
                    np.bincount(bins, ws * a, minlength=slots),
                    np.zeros(slots) if c is None else np.bincount(bins, ws * c,
                                                                  minlength=slots)])
    if metric in _BINNED:  # the very arithmetic of calibration_error
        estimate = _binning.error_from_sums(own[0], own[1], own[2], _NORM[metric])
    else:
        estimate = float(_metric_from_sums(metric, own[None])[0])
    out = np.zeros(n_resamples * 3 * slots)
    _core.bootstrap_sums(bins, np.require(a, np.float64, ["C", "A"]),
                         np.zeros(n) if c is None else np.require(c, np.float64, ["C", "A"]),
                         w, slots, n_resamples, seed, out)
    values = _metric_from_sums(metric, out.reshape(n_resamples, 3, slots))
    tail = 50.0 * (1.0 - confidence)
    if np.isnan(values).all():
        return estimate, float("nan"), float("nan")
    low, high = np.nanpercentile(values, [tail, 100.0 - tail])
    return estimate, float(low), float(high)



def _chunk_seed(seed, chunk):
    """An independent generator seed for the ``chunk``-th chunk of a stream (SplitMix64)."""
    mask = (1 << 64) - 1
    z = (seed + (chunk + 1) * 0xD1B54A32D192ED03) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)


class StreamedBootstrap:
    """Bootstrap sums of every :data:`METRICS` entry over data arriving chunk by chunk.

    Poisson resamples add up over chunks: each chunk's resample sums come from the core with
    a seed of its own (SplitMix64 of ``seed`` and the chunk's index), so the intervals depend
    on the seed and on where the chunks start, never on the thread count. Bins are uniform.
    """

    def __init__(self, n_resamples, n_bins, convention, seed=0):
        self.n_resamples = _v.bounded_integer(n_resamples, "n_resamples", 1, MAX_RESAMPLES)
        self.edges = _binning.edges(None, n_bins, "uniform")
        self.convention = convention
        self.slots = _binning.n_slots(n_bins, convention)
        self.seed, self.chunks = seed, 0
        self.binned = np.zeros((self.n_resamples, 3, self.slots))
        self.means = np.zeros((self.n_resamples, 3, 1))    # brier, nll
        self.hits = np.zeros((self.n_resamples, 3, 1))     # accuracy

    def _add(self, into, bins, a, c, seed):
        out = np.zeros(into.size)
        _core.bootstrap_sums(bins, np.require(a, np.float64, ["C", "A"]),
                             np.require(c, np.float64, ["C", "A"]), None, into.shape[2],
                             self.n_resamples, seed, out)
        into += out.reshape(into.shape)

    def update(self, scores, labels, from_logits):
        """Adds one chunk of validated scores ((N,) or (N, K)) and int64 labels."""
        n = scores.shape[0]
        if n == 0:
            return
        binary = scores.ndim == 1
        seed = _chunk_seed(self.seed, self.chunks)
        self.chunks += 1
        conf, outcome = _rows.confidence_outcome(scores, labels, binary, from_logits)
        bins = _binning.bin_index(conf, self.edges, self.convention).astype(np.int64)
        self._add(self.binned, bins, conf, outcome.astype(np.float64), seed)
        zeros = np.zeros(n, dtype=np.int64)
        brier = _per_sample("brier", scores, labels, binary, from_logits, 1, "uniform",
                            "right")[1]
        nll = _per_sample("nll", scores, labels, binary, from_logits, 1, "uniform", "right")[1]
        self._add(self.means, zeros, brier, nll, seed ^ 0x5555)
        hit = _per_sample("accuracy", scores, labels, binary, from_logits, 1, "uniform",
                          "right")[1]
        self._add(self.hits, zeros, hit, np.zeros(n), seed ^ 0xAAAA)

    def intervals(self, confidence=0.95):
        """{metric: (low, high)} percentile intervals."""
        with np.errstate(divide="ignore", invalid="ignore"):
            values = {m: _metric_from_sums(m, self.binned) for m in _BINNED}
            w = self.means[:, 0, 0]
            values["brier"] = self.means[:, 1, 0] / w
            values["nll"] = self.means[:, 2, 0] / w
            values["accuracy"] = self.hits[:, 1, 0] / self.hits[:, 0, 0]
        tail = 50.0 * (1.0 - confidence)
        out = {}
        for m in METRICS:
            v = values[m]
            if np.isnan(v).all():
                out[m] = (float("nan"), float("nan"))
            else:
                low, high = np.nanpercentile(v, [tail, 100.0 - tail])
                out[m] = (float(low), float(high))
        return out
