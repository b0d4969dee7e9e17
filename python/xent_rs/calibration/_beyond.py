"""Calibration beyond the binned ECE: the debiased L2 estimator, classwise calibration error
and smooth ECE."""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
from numpy.typing import ArrayLike

from .. import _validate as _v
from . import _binning, _rows
from ._binning import Convention, Norm, Strategy


def debiased_from_sums(total, conf_sum, outcome_sum, count_per_weight=1.0):
    r"""Kumar et al.'s debiased L2 calibration error from per-bin sums.

    ``sqrt(max(Σ_b (n_b/N)(gap_b² − ȳ_b(1 − ȳ_b)/(n_b − 1)), 0))`` with ``n_b`` the bin's
    sample count, here ``total[b] * count_per_weight`` (the bin's weight in units of the
    mean sample weight: the count itself for unweighted data). A bin with ``n_b ≤ 1``
    contributes 0 (its weight still counts in N).
    """
    filled = total > 0
    wb = total[filled]
    gap = (outcome_sum[filled] - conf_sum[filled]) / wb
    ybar = outcome_sum[filled] / wb
    nb = wb * count_per_weight
    with np.errstate(divide="ignore", invalid="ignore"):
        term = np.where(nb > 1.0, gap * gap - ybar * (1.0 - ybar) / (nb - 1.0), 0.0)
    value = float((wb * term).sum() / total.sum())
    return math.sqrt(max(value, 0.0))


def classwise_from_sums(big_w, big_f, big_o, norm):
    """Mean over classes of the one-vs-rest calibration error, from (C, slots) sums."""
    return float(np.mean([_binning.error_from_sums(w, f, o, norm)
                          for w, f, o in zip(big_w, big_f, big_o)]))


def _setup(probs, labels, n_bins, norm, strategy, convention, from_logits, sample_weight):
    n_bins = _binning.check_n_bins(n_bins)
    _v.choice("norm", norm, _binning.NORMS)
    _v.choice("strategy", strategy, _binning.STRATEGIES)
    _v.choice("convention", convention, _binning.CONVENTIONS)
    from_logits = _v.flag(from_logits, "from_logits")
    scores, binary = _v.scores(probs, "probs", from_logits)
    labels = _v.labels(labels, scores.shape[0], None if binary else scores.shape[1])
    raw = _v.sample_weight(sample_weight, scores.shape[0])
    exponent = _rows.weight_exponent(raw, scores.shape[0])
    w = _rows.scaled_weights(raw, scores.shape[0], exponent)
    _rows.total_weight(w, scores.shape[0])
    return n_bins, scores, binary, labels, w, from_logits


def classwise_calibration_error(probs: ArrayLike, labels: ArrayLike, *, n_bins: int = 15,
                                norm: Norm = "l1", strategy: Strategy = "uniform",
                                convention: Convention = "right", from_logits: bool = False,
                                sample_weight: Optional[ArrayLike] = None) -> float:
    r"""Classwise calibration error (Kull et al. 2019): the mean over classes of the
    one-vs-rest calibration error of :math:`p_k` against :math:`[y = k]`.

    .. math::

        \mathrm{cwCE} = \frac{1}{K}\sum_{k=1}^{K} \mathrm{CE}_{\mathrm{norm}}\big(
        \{(p_{ik}, [y_i = k])\}_i\big)

    where each class's error is :func:`calibration_error`'s formula for the chosen ``norm``
    over that class's own bins (so for ``"l2"`` the mean of the per-class RMS errors, and for
    ``"l1"`` with uniform bins Kull et al.'s classwise ECE). Every class sees all N samples.
    Binary ``(N,)`` input is read as the two classes ``(1 − p, p)``.

    Parameters
    ----------
    probs : array_like, float, shape (N, K) or (N,)
        Probabilities, or logits with ``from_logits=True`` (softmax or sigmoid). For
        ``(N, K)`` logits with uniform bins, the per-class statistics come from the fused
        Rust pass (no ``(N, K)`` probability matrix).
    labels : array_like, int, shape (N,)
    n_bins, norm, strategy, convention, from_logits, sample_weight
        As in :func:`calibration_error`; quantile edges are per class.

    Returns
    -------
    float

    Raises
    ------
    TypeError, ValueError
        As :func:`calibration_error`.

    References
    ----------
    .. [1] M. Kull, M. Perello-Nieto, M. Kängsepp, T. Silva Filho, H. Song, P. Flach,
       "Beyond temperature scaling: obtaining well-calibrated multiclass probabilities with
       Dirichlet calibration", NeurIPS 2019.

    Examples
    --------
    >>> import numpy as np
    >>> from xent_rs.calibration import classwise_calibration_error
    >>> p = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.3, 0.7]])
    >>> round(classwise_calibration_error(p, [0, 1, 1, 1], n_bins=2), 4)
    0.25
    """
    n_bins, scores, binary, labels, w, from_logits = _setup(
        probs, labels, n_bins, norm, strategy, convention, from_logits, sample_weight)
    k = 2 if binary else scores.shape[1]
    _binning.check_bin_slots(n_bins, convention, k)
    slots = _binning.n_slots(n_bins, convention)
    if (strategy == "uniform" and not binary
            and k * slots <= _binning.FUSED_MAX_SLOTS):
        edges = _binning.edges(None, n_bins, strategy)
        _, ovr, _ = _binning.fused_ovr(scores, k, from_logits, labels, w, edges, convention)
        return classwise_from_sums(*ovr, norm)
    n = scores.shape[0]
    if binary:
        p1 = _rows.probabilities(scores, True, from_logits)
        full = np.stack([1.0 - p1, p1], axis=1)
        chunks = [(slice(0, n), full)]
        p_all = full
    elif strategy == "quantile":
        p_all = _rows.probabilities(scores, False, from_logits)
        chunks = [(slice(0, n), p_all)]
    else:
        p_all = None
        chunks = ((rows, _rows.probabilities(scores[rows], False, from_logits))
                  for rows in _rows.row_chunks(n, k))
    edges = _binning.edges(p_all, n_bins, strategy)
    big = np.zeros(3 * k * slots)
    for rows, p in chunks:
        wr = None if w is None else w[rows]
        np.add.at(big, *_binning.ovr_entries(p, labels[rows], wr, edges, convention, False))
    return classwise_from_sums(*big.reshape(3, k, slots), norm)


# --------------------------------------------------------------------------------------------
# Smooth ECE.
# --------------------------------------------------------------------------------------------

#: Grid points of the kernel smoothing: at least this many, and at least 40 per bandwidth.
_SMOOTH_MIN_GRID = 4001
_SMOOTH_MAX_GRID = 1 << 17
#: relplot's floor on the bandwidth (its ``eps``).
SMOOTH_MIN_SIGMA = 1e-3


def _deposit(f, values, m):
    """``values`` spread linearly onto the grid ``linspace(0, 1, m)`` (two neighbours)."""
    x = f * (m - 1)
    left = np.clip(x.astype(np.intp), 0, m - 2)
    frac = x - left
    grid = np.bincount(left, (1.0 - frac) * values, minlength=m)
    grid += np.bincount(left + 1, frac * values, minlength=m)
    return grid


def _reflected_smooth(grid, sigma):
    """The grid convolved with a Gaussian of width ``sigma`` cut at ±1/2 and reflected once
    at 0 and 1 (mass leaving ``[0, 1]`` is folded back), by FFT."""
    m = grid.shape[0]
    h = 1.0 / (m - 1)
    # Mirror images about 0 and about 1 (the edge points once each).
    ext = np.concatenate([grid[:0:-1], grid, grid[-2::-1]])
    # relplot's kernel support: |t - f| <= 1/2 (m is odd, so 1/2 is a grid step multiple).
    half = (m - 1) // 2
    offsets = np.arange(-half, half + 1) * h
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2) / (math.sqrt(2 * math.pi) * sigma)
    size = ext.shape[0] + kernel.shape[0] - 1
    nfft = 1 << (size - 1).bit_length()
    conv = np.fft.irfft(np.fft.rfft(ext, nfft) * np.fft.rfft(kernel, nfft), nfft)[:size]
    # ext index m - 1 is grid point 0; the full convolution shifts it by `half` more.
    return conv[m - 1 + half:m - 1 + half + m]


def smooth_ece_at(f, r, s, sigma, grids=None):
    r"""Smooth ECE at a fixed bandwidth: ``∫_0^1 |Σ_i s_i K_σ(t, f_i) r_i| dt / ∫_0^1 Σ_i s_i
    K_σ(t, f_i) dt`` (trapezoid rule on the grid), ``r = f − y``, ``s`` the sample weights.
    ``grids`` (a dict) keeps the deposits per grid size between calls."""
    m = int(min(_SMOOTH_MAX_GRID, max(_SMOOTH_MIN_GRID, math.ceil(40.0 / sigma) + 1))) | 1
    if grids is None:
        grids = {}
    if m not in grids:
        grids[m] = (_deposit(f, s * r, m), _deposit(f, s, m))
    num = _reflected_smooth(grids[m][0], sigma)
    den = _reflected_smooth(grids[m][1], sigma)
    trap = np.full(m, 1.0)
    trap[[0, -1]] = 0.5
    return float((trap * np.abs(num)).sum() / (trap * den).sum())


def smooth_from_outcomes(f, y, s=None):
    """Smooth ECE of confidences ``f`` and outcomes ``y`` (float64), weights ``s``."""
    if s is None:
        s = np.ones_like(f)
    r = f - y
    grids = {}

    def at(sigma):
        return smooth_ece_at(f, r, s, sigma, grids)

    def g(sigma):
        return at(sigma) - sigma

    lo, hi = SMOOTH_MIN_SIGMA, 1.0
    if g(lo) <= 0.0:
        return at(lo)
    if g(hi) >= 0.0:
        return at(hi)
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if g(mid) > 0.0:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-7:
            break
    return at(hi)


def smooth_calibration_error(probs: ArrayLike, labels: ArrayLike, *,
                             from_logits: bool = False,
                             sample_weight: Optional[ArrayLike] = None) -> float:
    r"""Smooth ECE (Błasiok & Nakkiran 2023) of the top-label (binary: positive-class)
    confidences, by relplot's algorithm.

    With residuals :math:`r_i = f_i - y_i` of confidences :math:`f_i` and outcomes
    :math:`y_i` and the Gaussian kernel :math:`K_\sigma(t, f)` reflected once at 0 and at 1
    (:math:`\phi_\sigma(t-f) + \phi_\sigma(t+f) + \phi_\sigma(t-2+f)`, each cut at
    :math:`|d| \le 1/2`),

    .. math::

        \mathrm{smECE}_\sigma = \frac{\int_0^1 |\sum_i K_\sigma(t, f_i)\, r_i|\,dt}
                                     {\int_0^1 \sum_i K_\sigma(t, f_i)\,dt},

    and the smooth ECE is :math:`\mathrm{smECE}_{\sigma^*}` at the fixed point
    :math:`\sigma^* = \mathrm{smECE}_{\sigma^*}` (the left side decreases in
    :math:`\sigma`), searched in :math:`[10^{-3}, 1]` as relplot does (its floor
    ``eps = 0.001``: if :math:`\mathrm{smECE}_{0.001} \le 0.001` that value is returned).
    Conventions pinned: the kernel is reflected once on each side and each Gaussian term is
    cut to :math:`|d| \le 1/2`, as relplot's ``ReflectedGaussianKernel`` (whose kernel is
    sampled on ``[-1/2, 1/2]``); the values are spread linearly onto a grid of
    ``max(4001, 40/σ + 1)`` points (relplot: 2000 for the kernel, 200 for the integral), the
    integral is the trapezoid rule, and the fixed point is bisected to 1e-7 (relplot: ten
    halvings, 1e-3). The result agrees with ``relplot.smECE`` within 1e-3 absolute (relplot's
    own discretisation is good to about 3e-4).

    Parameters
    ----------
    probs : array_like, float, shape (N, K) or (N,)
        Probabilities, or logits with ``from_logits=True``.
    labels : array_like, int, shape (N,)
    from_logits : bool, default False
    sample_weight : array_like, shape (N,), optional
        Non-negative weights of the kernel sums (relplot has none).

    Returns
    -------
    float
        In ``[0, 1]``.

    References
    ----------
    .. [1] J. Błasiok, P. Nakkiran, "Smooth ECE: Principled reliability diagrams via kernel
       smoothing", ICLR 2024 (arXiv:2309.12236, 2023).

    Examples
    --------
    >>> import numpy as np
    >>> from xent_rs.calibration import smooth_calibration_error
    >>> rng = np.random.default_rng(0)
    >>> f = rng.uniform(size=20000)
    >>> y = rng.uniform(size=20000) < f            # calibrated: smECE near 0
    >>> smooth_calibration_error(f, y) < 0.02
    True
    >>> y = rng.uniform(size=20000) < f ** 2       # overconfident
    >>> round(smooth_calibration_error(f, y), 3)
    0.167
    """
    from_logits = _v.flag(from_logits, "from_logits")
    scores, binary = _v.scores(probs, "probs", from_logits)
    labels = _v.labels(labels, scores.shape[0], None if binary else scores.shape[1])
    raw = _v.sample_weight(sample_weight, scores.shape[0])
    exponent = _rows.weight_exponent(raw, scores.shape[0])
    w = _rows.scaled_weights(raw, scores.shape[0], exponent)
    _rows.total_weight(w, scores.shape[0])
    f, y = _rows.confidence_outcome(scores, labels, binary, from_logits)
    return smooth_from_outcomes(f, y.astype(np.float64), w)
