"""Temperature scaling (Guo et al. 2017) and energy scores (Liu et al. 2020)."""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
from numpy.typing import ArrayLike

from .. import _core
from .. import _validate as _v
from . import _rows

# The regula falsi of the command line's streaming fit (cli.py) stops when the bracket on
# beta = 1/T is this narrow, relative to beta.
_TEMPERATURE_RTOL = 1e-8
_TEMPERATURE_MAX_ITER = 200
# fit_temperature's Newton iteration (in log beta) stops at a step this small (then the
# next one would be about its square), or at one below _NOISE_RTOL that no longer shrinks
# (the rounding of the kernel's float32 sums is reached).
_NEWTON_RTOL = 1e-6
_NOISE_RTOL = 1e-4
_NEWTON_MAX_ITER = 100
# ... and stops after a Halley step whose estimated error is below this (relative).
_HALLEY_ERROR = 1e-9


def fit_temperature(logits: ArrayLike, labels: ArrayLike, *,
                    weight: Optional[ArrayLike] = None) -> float:
    r"""Temperature scaling: the T > 0 minimising the mean cross-entropy of ``logits / T``.

    With :math:`\beta = 1/T` the mean loss
    :math:`L(\beta) = \frac{1}{W}\sum_i w_{y_i}\,[\operatorname{logsumexp}(\beta z_i) -
    \beta z_{i,y_i}]` is convex, and its derivative
    :math:`L'(\beta) = \frac{1}{W}\sum_i w_{y_i}\,(\mathbb{E}_{\mathrm{softmax}(\beta z_i)}[z]
    - z_{i,y_i})` increases from :math:`L'(0)` to a limit :math:`\ge 0`. The root of
    :math:`L'(0)` to a limit :math:`\ge 0`; its second derivative
    :math:`L''(\beta) = \frac{1}{W}\sum_i w_{y_i}\,\mathrm{Var}_{\mathrm{softmax}(\beta z_i)}[z]`
    is a variance. Each iteration is one fused pass over the logits giving :math:`L'`,
    :math:`L''` and the third derivative together (the first pass, at :math:`\beta = 1`,
    also checks the values and finds the largest :math:`|z|`), and takes a Halley step in
    :math:`\log\beta` (a Newton step where the third derivative does not help), kept inside
    the bracket of the root that the signs of :math:`L'` seen so far give, bisecting when a
    step would leave it (Numerical Recipes' ``rtsafe``), starting at
    :math:`\beta = \min(1, 30/\max|z|)`. Convergence is cubic: typically 3 or 4 passes. It
    stops when a Halley step's estimated error is below :math:`10^{-9}`, a Newton step is
    below :math:`10^{-6}\beta`, or one below :math:`10^{-4}\beta` no longer shrinks (the
    rounding of float32 or 16-bit logits' kernel is reached). The result is accurate to a
    relative :math:`10^{-6}`.

    Parameters
    ----------
    logits : array_like, float, shape (N, K) or (N,)
        Logits of a held-out set (``(N,)``: binary, sigmoid; treated as the two-class logits
        ``[0, z]``). ``-inf`` masks a class, but not a row's labelled class.
    labels : array_like, int, shape (N,)
    weight : array_like, shape (K,), optional
        Per-class weights, as ``cross_entropy``'s ``weight`` (weighted mean over rows).
        ``(2,)`` for binary logits. Only their ratios matter (they are scaled by a power of
        two first, so uniform weights of any magnitude give the unweighted temperature).

    Returns
    -------
    float
        The temperature ``T``; divide logits by it before the softmax. When the loss does
        not depend on ``T`` at all, because every weighted row's logits are equal (apart from
        masked classes), every ``T`` gives the same probabilities and 1.0 (leave the logits
        as they are) is returned.

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
    .. [1] Temperature scaling: section 4.2 of C. Guo, G. Pleiss, Y. Sun, K. Q. Weinberger,
       "On calibration of modern neural networks", ICML 2017, arXiv:1706.04599.

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
    arr, binary = _v.scores(logits, "logits", True, check_values=False)
    try:
        z = np.stack([np.zeros_like(arr), arr], axis=1) if binary else arr
        labels = _v.labels(labels, z.shape[0], z.shape[1])
        weight = _v.class_weight(weight, z.shape[1])
    except (TypeError, ValueError):  # bad logits are reported first, as when checked first
        _v.score_values(arr, "logits", True, binary)
        raise
    if weight is not None:  # only ratios matter: the largest weight into [1, 2), exactly
        exponent = _rows.weight_exponent(weight, len(weight))
        weight = _rows.scaled_weights(weight, len(weight), exponent)
    z = np.require(z, requirements=["C", "A"])
    w = None if weight is None else np.require(weight, dtype=np.float64, requirements=["C", "A"])
    # The first pass at beta = 1 also checks the values and gathers what the fit must know.
    (_, slope, curvature, third, total, scale, varying, missed, bad,
     masked_label) = _core.temperature_pass(z, z.shape[1], labels, 1.0, w, False, True)
    if bad:
        _v.score_values(arr, "logits", True, binary)
        raise ValueError("logits: contains NaN or infinite logits (the softmax is undefined)")
    if not total > 0:
        raise ValueError("weight: every row's class has weight 0; the loss is undefined")
    if masked_label:
        raise ValueError(_MASKED_LABEL)
    if not varying:
        return 1.0
    if not 1e-100 <= scale <= 1e100:
        # T scales with the logits: search on z / scale, where 1/T stays in range.
        return _unscaled(fit_temperature(z / scale, labels, weight=weight), scale)
    return _solve(_derivatives(z, labels, w), scale, not missed,
                  known={1.0: (slope / total, curvature / total, third / total)})


def _derivatives(z, labels, weight):
    """``beta -> (L'(beta), L''(beta))`` of the weighted mean loss, one pass per call."""
    z = np.require(z, requirements=["C", "A"])
    labels = np.require(labels, dtype=np.int64, requirements=["C", "A"])
    w = None if weight is None else np.require(weight, dtype=np.float64, requirements=["C", "A"])

    def derivatives(beta):
        _, slope_sum, curvature_sum, third_sum, weight_sum = _core.temperature_pass(
            z, z.shape[1], labels, float(beta), w)[:5]
        return slope_sum / weight_sum, curvature_sum / weight_sum, third_sum / weight_sum

    return derivatives


def _halley_step(g, h, t, beta, x):
    """Halley's step in ``u = log(beta)`` from ``L'``, ``L''`` and the third derivative ``t`` at ``beta``
    (``g_u = beta L''``, ``g_uu = g_u + beta^2 t``), or None where it is not usable (no
    third derivative, or a step not within a factor 2 of Newton's ``x``)."""
    if not (math.isfinite(t) and math.isfinite(x) and x != 0):
        return None
    gu = beta * h
    den = 2.0 * gu * gu - g * (gu + beta * beta * t)
    if not den > 0:
        return None
    xh = -2.0 * g * gu / den
    return xh if 0.5 <= xh / x <= 2.0 else None


def _unscaled(t, scale):
    """The temperature of logits ``scale`` times those ``t`` was fitted on; ``ValueError``
    when it leaves the float64 range."""
    t = t * scale
    if not np.finfo(np.float64).tiny <= t < np.inf:
        raise ValueError("logits: the fitted temperature is outside the float64 range "
                         f"(logits of magnitude {scale:g})")
    return float(t)


def _solve(derivatives, scale, all_top, known=None):
    """The temperature where the derivative of the mean loss in ``beta = 1/T`` is zero, for
    logits whose largest finite magnitude is ``scale``, by the safeguarded Newton iteration
    of :func:`fit_temperature`; ``derivatives(beta)`` gives ``(L'(beta), L''(beta))``
    (``L'`` increasing: the loss is convex); ``known`` maps a ``beta`` already evaluated to
    its ``(L', L'')``. ``ValueError`` when no finite ``T > 0`` minimises the loss. Shared by
    the in-memory and the Dask fits (each supplies its own ``derivatives``)."""
    if all_top:
        raise ValueError(_ALL_TOP)
    beta_cap = 1e300 / max(1.0, scale)
    # The root is in (lo, hi); lo = 0 is only known to have a negative slope once seen.
    lo, hi, lo_seen = 0.0, math.inf, False
    beta = min(1.0, 30.0 / scale) if scale > 0 else 1.0
    previous = math.inf
    known = dict(known or {})
    for _ in range(_NEWTON_MAX_ITER):
        g, h, *third = known.pop(beta) if beta in known else derivatives(beta)
        if beta == 0.0 and not g < 0:
            raise ValueError(_CHANCE)
        if g == 0:
            return float(1.0 / beta)
        if g < 0:
            lo, lo_seen = beta, True
        else:
            hi = beta
        if beta == 0.0:
            nxt = -g / h if h > 0 else math.nan
        else:
            # Newton in u = log(beta): u -= L'/(beta L''). It never steps to beta <= 0,
            # and moves further right than Newton in beta (L' is concave there).
            x = -g / (beta * h) if h > 0 else math.nan
            xh = _halley_step(g, h, third[0] if third else math.nan, beta, x)
            if xh is not None:
                # Halley's step differs from Newton's by about Newton's own error, c x^2;
                # its error, about c^2 |x|^3, is then (xh - x)^2 / |xh|.
                if abs(xh) <= 1e-2 and (xh - x) ** 2 <= _HALLEY_ERROR * abs(xh):
                    return float(1.0 / (beta * math.exp(xh)))
                x = xh
            size = abs(x)
            if size <= _NEWTON_RTOL or (size <= _NOISE_RTOL and size > 0.25 * previous):
                return float(1.0 / (beta * math.exp(x)))
            previous = size
            nxt = beta * math.exp(min(x, 30.0)) if x == x else math.nan
        if not lo < nxt < hi:
            if hi == math.inf:
                nxt = 16.0 * beta  # a flat slope far left of the root: widen geometrically
                if nxt > beta_cap:
                    raise ValueError(_TO_ZERO)
            elif not lo_seen:
                nxt = 0.0  # every slope so far positive: look at beta = 0 (L'(0) < 0?)
            else:
                nxt = math.sqrt(lo * hi) if lo > 0 and hi > 4.0 * lo else 0.5 * (lo + hi)
        if lo_seen and hi - lo <= _NEWTON_RTOL * lo:
            return float(2.0 / (lo + hi))
        beta = nxt
    return float(2.0 / (lo + hi)) if hi < math.inf else float(1.0 / beta)


_ALL_TOP = ("logits: every row's labelled class has the largest logit, so the loss keeps "
            "decreasing as T -> 0; no finite temperature minimises it")
_CHANCE = ("logits: the loss does not decrease for any T > 0 (the logits rank the labels no "
           "better than chance), so it is minimised as T -> inf")
_MASKED_LABEL = ("labels: a row's labelled class has logit -inf (infinite loss at every "
                 "temperature)")
_TO_ZERO = ("logits: the loss keeps decreasing as T -> 0; no finite temperature minimises it")


def _live_rows(z, labels, weight):
    """The rows of positive weight; ``ValueError`` when there are none, or when one has an
    infinite loss at every temperature."""
    n = z.shape[0]
    if weight is not None:
        live = weight[labels] > 0
        if not live.any():
            raise ValueError("weight: every row's class has weight 0; the loss is undefined")
    else:
        live = np.ones(n, dtype=bool)
    if np.isneginf(z[np.arange(n), labels][live]).any():
        raise ValueError(_MASKED_LABEL)
    return live


def _scan(z, labels, live):
    """One fused Rust pass over the logits (no temporary of their size, so a memory-mapped
    file costs only the pages read): whether every live row's unmasked logits are equal
    (then softmax(z / T), and the loss, are the same for every T), the largest finite
    ``|z|``, and whether every live row's labelled class has the largest logit."""
    marked = np.where(live, labels, -1).astype(np.int64, copy=False)
    constant, scale, all_top = _core.temperature_scan(np.require(z, requirements=["C", "A"]),
                                                      z.shape[1], marked)
    return bool(constant), float(scale), bool(all_top)


def _bracket(slope, lo, g_lo, beta_cap):
    """Double ``hi`` from 1 until the slope is no longer negative: ``lo < root <= hi``."""
    hi, g_hi = 1.0, slope(1.0)
    while g_hi < 0:
        lo, g_lo = hi, g_hi
        hi *= 2.0
        if hi > beta_cap:
            raise ValueError("logits: the loss keeps decreasing as T -> 0; no finite "
                             "temperature minimises it")
        g_hi = slope(hi)
    return lo, g_lo, hi, g_hi


def _regula_falsi(slope, lo, g_lo, hi, g_hi):
    """The root of the increasing ``slope`` in ``(lo, hi)``, returned as T = 1 / beta."""
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
    out-of-distribution detection score. Computed stably (max-shifted) in float64, with the
    library's logsumexp kernel.

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
    temperature = _v.positive_real(temperature, "temperature")
    arr = _v.any_float_array(logits, "logits")
    if arr.ndim < 1 or arr.shape[-1] == 0:
        raise ValueError(f"logits: must have shape (..., K) with K >= 1, got {arr.shape}")
    k = arr.shape[-1]
    flat = arr.reshape(-1, k)
    out = np.empty(flat.shape[0], dtype=arr.dtype)
    for rows in _rows.row_chunks(flat.shape[0], k):
        with np.errstate(over="ignore"):  # beyond the float32 range: -inf, as NumPy rounds
            out[rows] = _rows.energy_rows(flat[rows], temperature)
    return out.reshape(arr.shape[:-1])
