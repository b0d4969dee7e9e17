"""Binned calibration metrics: calibration error, reliability diagrams, Brier score and
Murphy's decomposition."""

from __future__ import annotations

from typing import Optional

import numpy as np
from numpy.typing import ArrayLike

from .. import _validate as _v
from . import _binning, _rows
from ._binning import Convention, Norm, Strategy
from ._results import BrierDecomposition, ReliabilityDiagram, diagram_from_sums


def _weights(sample_weight, n):
    """Validated sample weights scaled by a power of two (the largest in [1, 2)), their
    total and the exponent; ``ValueError`` naming ``sample_weight`` when they sum to zero."""
    raw = _v.sample_weight(sample_weight, n)
    exponent = _rows.weight_exponent(raw, n)
    w = _rows.scaled_weights(raw, n, exponent)
    return w, _rows.total_weight(w, n), exponent


def _binned(probs, labels, n_bins, strategy, convention, from_logits, sample_weight):
    n_bins = _binning.check_n_bins(n_bins)
    _v.choice("strategy", strategy, _binning.STRATEGIES)
    _v.choice("convention", convention, _binning.CONVENTIONS)
    from_logits = _v.flag(from_logits, "from_logits")
    scores, binary = _v.scores(probs, "probs", from_logits, check_values=False)
    # Uniform bins of (N, K) scores: the fused Rust pass checks the values as it bins them.
    fused = strategy == "uniform" and not binary
    if not fused:
        _v.score_values(scores, "probs", from_logits, binary)
    try:
        labels = _v.labels(labels, scores.shape[0], None if binary else scores.shape[1])
        w, _, exponent = _weights(sample_weight, scores.shape[0])
    except (TypeError, ValueError):
        if fused:  # bad scores are reported first, as when they are checked first
            _v.score_values(scores, "probs", from_logits, binary)
        raise
    if fused:
        edges = _binning.edges(None, n_bins, strategy)
        sums = _binning.fused_top(scores, scores.shape[1], from_logits, labels, w, edges,
                                  convention)
        return edges, sums, binary, exponent
    confidence, outcome = _rows.confidence_outcome(scores, labels, binary, from_logits)
    edges = _binning.edges(confidence, n_bins, strategy)
    sums = _binning.reliability_sums(confidence, outcome, w, edges, convention)
    return edges, sums, binary, exponent


def calibration_error(probs: ArrayLike, labels: ArrayLike, *, n_bins: int = 15,
                      norm: Norm = "l1", strategy: Strategy = "uniform",
                      convention: Convention = "right", from_logits: bool = False,
                      sample_weight: Optional[ArrayLike] = None,
                      debias: bool = False) -> float:
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
        weight is zero counts as empty. Quantile edges ignore them. Only their ratios
        matter: they are scaled by a power of two before any sum (exact), so uniform weights
        of any magnitude, 1e306 or a subnormal 1e-310, give the unweighted numbers.
    debias : bool, default False
        With ``norm="l2"``: the debiased estimator of Kumar et al. 2019 [3]_,
        ``sqrt(max(Σ_b (n_b/N)(gap_b² − ȳ_b(1 − ȳ_b)/(n_b − 1)), 0))`` over the same bins
        (``ȳ_b`` the bin's mean outcome; a bin of one sample contributes 0, its weight still
        counts in N). The plain squared gap overestimates the squared error by about
        ``ȳ_b(1 − ȳ_b)/n_b`` per bin; this removes it. With ``strategy="quantile"`` it is the
        ``uncertainty-calibration`` package's ``get_calibration_error(probs, labels, p=2,
        debias=True, mode="top-label")`` (15 bins there) whenever its equal-mass bins
        coincide with ``np.percentile``'s (distinct confidences, N ≡ 0 or 1 mod
        ``n_bins``): both put a value on an edge in the lower bin. With ``sample_weight``,
        ``n_b`` is the bin's weight in units of the mean weight of the weighted rows (its
        count when the weights are equal). Another ``norm``: ``ValueError`` naming
        ``debias``.

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
    .. [3] A. Kumar, P. Liang, T. Ma, "Verified uncertainty calibration", NeurIPS 2019.

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
    _v.choice("norm", norm, _binning.NORMS)
    debias = _v.flag(debias, "debias")
    if debias and norm != "l2":
        raise ValueError(f"debias: the debiased estimator is defined for norm='l2' only; "
                         f"got norm={norm!r}")
    _, (total, conf_sum, outcome_sum), _, _ = _binned(probs, labels, n_bins, strategy,
                                                      convention, from_logits, sample_weight)
    if debias:
        from ._beyond import debiased_from_sums
        return debiased_from_sums(total, conf_sum, outcome_sum,
                                  _count_per_weight(sample_weight, total.sum()))
    return _binning.error_from_sums(total, conf_sum, outcome_sum, norm)


def _count_per_weight(sample_weight, total):
    """Rows of positive weight per unit of (scaled) total weight; 1 without weights."""
    if sample_weight is None:
        return 1.0
    return float(np.count_nonzero(np.asarray(sample_weight, dtype=np.float64))) / total


def reliability_diagram(probs: ArrayLike, labels: ArrayLike, *, n_bins: int = 15,
                        strategy: Strategy = "uniform", convention: Convention = "right",
                        from_logits: bool = False,
                        sample_weight: Optional[ArrayLike] = None) -> ReliabilityDiagram:
    """Per-bin confidence and accuracy: the data of a reliability diagram.

    Takes the arguments of :func:`calibration_error` (without ``norm``) and bins the same way.
    For binary ``(N,)`` input and ``convention="right"``, the non-empty bins' ``accuracy`` and
    ``mean_confidence`` are scikit-learn's ``calibration_curve`` ``prob_true`` and
    ``prob_pred``.

    Parameters
    ----------
    probs, labels, n_bins, strategy, convention, from_logits, sample_weight
        As in :func:`calibration_error`.

    Returns
    -------
    ReliabilityDiagram
        ``edges``, ``counts`` (total weight per bin), ``mean_confidence`` and ``accuracy``
        (NaN for empty bins), a ``plot(ax=None, path=None)`` method, and a PNG picture in
        notebooks.

    Raises
    ------
    TypeError, ValueError
        As :func:`calibration_error`.

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
    edges, sums, binary, exponent = _binned(probs, labels, n_bins, strategy, convention,
                                            from_logits, sample_weight)
    return diagram_from_sums(edges, *sums, convention, binary, exponent)


def _brier_setup(probs, labels, from_logits, sample_weight):
    from_logits = _v.flag(from_logits, "from_logits")
    scores, binary = _v.scores(probs, "probs", from_logits)
    labels = _v.labels(labels, scores.shape[0], None if binary else scores.shape[1])
    w, total, _ = _weights(sample_weight, scores.shape[0])
    return scores, labels, w, total, binary, from_logits


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
        Non-negative weights, scaled as in :func:`calibration_error` (only ratios matter).

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
    scores, labels, w, total, binary, from_logits = _brier_setup(probs, labels, from_logits,
                                                                 sample_weight)
    return float(_brier_sum(scores, labels, w, binary, from_logits) / total)


#: One bin: the fused pass's Brier sum is the same whatever the bins.
_ONE_BIN = np.array([0.0, 1.0])


def _brier_sum(scores, labels, w, binary, from_logits):
    """The weighted sum of the rows' Brier terms; (N, K) input from the fused Rust pass, so
    that :func:`brier_decomposition`'s ``brier`` is this very number."""
    if not binary:
        return _binning.fused_ovr(scores, scores.shape[1], from_logits, labels, w, _ONE_BIN,
                                  "right")[2][1]
    acc = 0.0
    for rows in _rows.row_chunks(scores.shape[0], 1):
        p = _rows.probabilities(scores[rows], binary, from_logits)
        acc += _rows.weighted_sum(_rows.brier_rows(p, labels[rows], binary), w, rows)
    return acc


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
    probs, labels, from_logits, sample_weight
        The forecasts and outcomes, as in :func:`brier_score`.
    n_bins, strategy, convention
        How each class's forecasts are binned, as in :func:`calibration_error`.

    Returns
    -------
    BrierDecomposition
        Named tuple ``(reliability, resolution, uncertainty, brier)``, where ``brier`` is
        :func:`brier_score` of the same input.

    Raises
    ------
    TypeError, ValueError
        As :func:`calibration_error`, and ``ValueError`` naming ``n_bins`` when K × ``n_bins``
        (the one-vs-rest bins) exceeds :data:`MAX_BIN_SLOTS` (2**26).

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
    n_bins = _binning.check_n_bins(n_bins)
    _v.choice("strategy", strategy, _binning.STRATEGIES)
    _v.choice("convention", convention, _binning.CONVENTIONS)
    scores, labels, w, total, binary, from_logits = _brier_setup(probs, labels, from_logits,
                                                                 sample_weight)
    n = scores.shape[0]
    k = 1 if binary else scores.shape[1]
    _binning.check_bin_slots(n_bins, convention, 0 if binary else k)
    if strategy == "quantile":
        p = _rows.probabilities(scores, binary, from_logits)
        edges = _binning.edges(p, n_bins, strategy)
        chunks = [(slice(0, n), p)]
    else:
        edges = _binning.edges(None, n_bins, strategy)
        chunks = ((rows, _rows.probabilities(scores[rows], binary, from_logits))
                  for rows in _rows.row_chunks(n, k))
    slots = _binning.n_slots(n_bins, convention)
    if strategy == "uniform" and not binary and k * slots <= _binning.FUSED_MAX_SLOTS:
        # The accumulator's fused Rust pass (the same numbers, one pass, no matrix).
        _, ovr, sums = _binning.fused_ovr(scores, k, from_logits, labels, w, edges,
                                          convention)
        return BrierDecomposition(*_binning.murphy_from_sums(*ovr), float(sums[1] / total))
    big = np.zeros(3 * k * slots)  # one dense array; each chunk adds its entries only
    for rows, p in chunks:
        wr = None if w is None else w[rows]
        np.add.at(big, *_binning.ovr_entries(p, labels[rows], wr, edges, convention, binary))
    brier = _brier_sum(scores, labels, w, binary, from_logits)
    return BrierDecomposition(*_binning.murphy_from_sums(*big.reshape(3, k, slots)),
                              float(brier / total))
