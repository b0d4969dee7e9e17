"""Plain-NumPy float64 reference implementation of every xent_rs loss and building block.

Written to be read, not to be fast: each function follows the formula in its docstring
directly, in float64, with the same signature as the fast version (without ``out``). The test
suite checks the Rust core against these functions.

Two numerical details are kept even here, because without them the reference itself would be
less exact than the kernels it checks:

* ``log Σ exp(x − m)`` is computed as ``log1p`` of the non-maximal terms, so the loss of a
  confident, correct row (e.g. 1e-30) is exact rather than 0;
* ``1 − p`` for a maximal logit is ``(S − 1) / S`` rather than a subtraction.

Conventions (identical in the fast functions): a term whose target mass is exactly zero is
skipped, so a ``-inf`` (masked) logit costs nothing unless the target puts mass on it.
"""

from __future__ import annotations

import numpy as np

from . import _calibration_reference as _cal
from . import _reference_linear as _lin
from . import _reference_losses as _los
from ._calibration_reference import *  # noqa: F401,F403  (the calibration metrics)
from ._reference_linear import *  # noqa: F401,F403  (linear + CE, InfoNCE)
from ._reference_losses import *  # noqa: F401,F403  (the cross-entropy variants)

#: The losses and building blocks defined here, then the calibration metrics.
__all__ = ["cross_entropy", "binary_cross_entropy_with_logits", "log_softmax", "softmax",
           "logsumexp", *_cal.__all__, *_los.__all__, *_lin.__all__]


def _row_stats(x):
    """Row maximum ``m``, ``rest = Σ exp(x − m) − 1`` (without cancellation) and exp(x − m)."""
    m = np.max(x, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", over="ignore"):
        d = x - m
        e = np.exp(d)
        is_max = d == 0
        ties = is_max.sum(axis=-1, keepdims=True)
        # Non-maximal terms, plus one for each tie beyond the first; NaN propagates.
        rest = np.where(is_max, 0.0, e).sum(axis=-1, keepdims=True) + np.maximum(ties - 1, 0)
    return m, rest, e


def logsumexp(logits):
    """``log Σ_j exp(x_j)`` over the last axis."""
    x = np.asarray(logits, dtype=np.float64)
    if x.shape[-1] == 0:
        return np.full(x.shape[:-1], -np.inf)
    m, rest, _ = _row_stats(x)
    return (m + np.log1p(rest))[..., 0]


def log_softmax(logits):
    """``x_j − logsumexp(x)`` over the last axis."""
    x = np.asarray(logits, dtype=np.float64)
    m, rest, _ = _row_stats(x)
    with np.errstate(invalid="ignore"):
        return (x - m) - np.log1p(rest)


def softmax(logits):
    """``exp(x_j) / Σ_k exp(x_k)`` over the last axis."""
    x = np.asarray(logits, dtype=np.float64)
    m, rest, e = _row_stats(x)
    with np.errstate(invalid="ignore"):
        return e / (1.0 + rest)


def _reduce(row_losses, reduction, divisor):
    if reduction == "none":
        return row_losses
    total = np.sum(row_losses)
    if reduction == "sum":
        return np.float64(total)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.float64(total) / np.float64(divisor)


def _pack(loss, grad, hess, lse, return_grad, return_hess, return_lse):
    out = [loss]
    if return_grad:
        out.append(grad)
    if return_hess:
        out.append(hess)
    if return_lse:
        out.append(lse)
    return out[0] if len(out) == 1 else tuple(out)


def cross_entropy(logits, target, *, weight=None, ignore_index=-100, label_smoothing=0.0,
                  reduction="mean", return_grad=False, return_hess=False, return_lse=False,
                  z_loss=0.0, softcap=None):
    """Categorical cross-entropy with ``torch.nn.functional.cross_entropy`` semantics,
    class axis last.

    ``softcap`` ``c`` first maps the logits to ``y = c·tanh(x/c)`` (``-inf`` stays ``-inf``);
    ``z_loss`` ``z`` adds ``z·lse(y)²`` to every non-ignored row (a ``"mean"`` divides this
    term by the number of non-ignored rows). Derivatives are with respect to the raw ``x``:
    ``dL/dx = L'(y)·y'`` and ``d²L/dx² = L''(y)·y'² + L'(y)·y''`` with ``y' = sech²(x/c)``,
    ``y'' = −2·tanh(x/c)·sech²(x/c)/c``.

    For each row the weighted target distribution is

    * index target ``t``: ``q_j = (1−ε)·w_t·[j = t] + (ε/K)·w_j``,
    * probability target ``y``: ``q_j = w_j·((1−ε)·y_j + ε/K)``,

    the row loss is ``Σ_j q_j·(−log_softmax(x)_j)`` (zero-mass terms skipped), its gradient
    ``Q·p − q`` and its Hessian diagonal ``Q·p·(1 − p)`` with ``Q = Σ_j q_j``. ``mean`` divides
    by ``Σ w_t`` over non-ignored rows (index targets) or by the number of rows (probabilities).
    """
    x = np.asarray(logits, dtype=np.float64)
    k = x.shape[-1]
    xf = x.reshape(-1, k)
    if softcap is not None:
        c = float(softcap)
        raw = xf
        with np.errstate(over="ignore"):
            sech2 = 1.0 / np.cosh(raw / c) ** 2     # cosh overflows to inf: sech² = 0
        d_cap = sech2                                # dy/dx
        d2_cap = -2.0 * np.tanh(raw / c) * sech2 / c  # d²y/dx²
        xf = np.where(raw == -np.inf, -np.inf, c * np.tanh(raw / c))
    n = xf.shape[0]
    w = np.ones(k) if weight is None else np.asarray(weight, dtype=np.float64)
    eps = float(label_smoothing)
    tgt = np.asarray(target)

    m, rest, e = _row_stats(xf)
    big_s = 1.0 + rest
    with np.errstate(invalid="ignore", over="ignore"):
        neg_logp = (m - xf) + np.log1p(rest)        # −log_softmax, ≥ 0
        p = e / big_s
        one_minus_p = np.where(xf == m, rest / big_s, 1.0 - p)

    if np.issubdtype(tgt.dtype, np.integer):
        t = tgt.reshape(-1).astype(np.int64)
        kept = t != ignore_index
        t_safe = np.where(kept, t, 0)
        q = np.zeros((n, k))
        q += (eps / k) * w
        c = (1.0 - eps) * w[t_safe]
        q[np.arange(n), t_safe] += c
        q[~kept] = 0.0
        divisor = np.sum(w[t_safe][kept])
        # Q − c, the smoothing mass, summed rather than subtracted from Q.
        smooth_mass = (eps / k) * np.sum(w)
    else:
        y = np.asarray(tgt, dtype=np.float64).reshape(n, k)
        q = w * ((1.0 - eps) * y + eps / k)
        kept = np.ones(n, dtype=bool)
        c = None
        divisor = n

    with np.errstate(invalid="ignore", over="ignore"):
        row_loss = np.where(q != 0, q * neg_logp, 0.0).sum(axis=1)
        mass = q.sum(axis=1, keepdims=True)
        grad = mass * p - q
        hess = mass * p * one_minus_p
        if c is not None:
            # The target's own entry without cancellation: −c·(1 − p_t) + (Q − c)·p_t − b_t.
            rows = np.arange(n)
            b_t = (eps / k) * w[t_safe]
            grad[rows, t_safe] = np.where(
                kept,
                -c * one_minus_p[rows, t_safe] + smooth_mass * p[rows, t_safe] - b_t,
                0.0,
            )
        else:
            # A maximal class, where p and q may both be near 1: Q·p − q = (Q − q) − Q·(1 − p),
            # with Q − q the other classes' mass (non-maximal mass + the other maxima's).
            at_max = xf == m
            off = np.where(at_max, 0.0, q).sum(axis=1, keepdims=True)
            on = np.where(at_max, q, 0.0).sum(axis=1, keepdims=True)
            grad = np.where(at_max, (off + (on - q)) - mass * one_minus_p, grad)
    grad[~kept] = 0.0
    hess[~kept] = 0.0

    if reduction == "mean":
        # Divided, not multiplied by 1/divisor: a subnormal divisor has no finite reciprocal.
        with np.errstate(divide="ignore", invalid="ignore"):
            grad = np.where(kept[:, None], grad / np.float64(divisor), 0.0)
            hess = np.where(kept[:, None], hess / np.float64(divisor), 0.0)
    lse_rows = (m + np.log1p(rest))[:, 0]
    if z_loss != 0.0:
        z = float(z_loss)
        n_kept = np.count_nonzero(kept)
        z_rows = np.where(kept, z * lse_rows**2, 0.0)
        z_scale = 1.0 / n_kept if reduction == "mean" and n_kept else 1.0
        lse_col = lse_rows[:, None]
        with np.errstate(invalid="ignore"):
            z_grad = 2.0 * z * lse_col * p * z_scale
            z_hess = 2.0 * z * (p * p + lse_col * p * one_minus_p) * z_scale
        grad = grad + np.where(kept[:, None], z_grad, 0.0)
        hess = hess + np.where(kept[:, None], z_hess, 0.0)
    if softcap is not None:
        with np.errstate(invalid="ignore"):
            hess = np.where(kept[:, None], hess * d_cap**2 + grad * d2_cap, 0.0)
            grad = np.where(kept[:, None], grad * d_cap, 0.0)
    loss = _reduce(row_loss.reshape(x.shape[:-1]), reduction, divisor)
    if z_loss != 0.0:
        loss = loss + _reduce(z_rows.reshape(x.shape[:-1]), reduction, n_kept)
    lse = lse_rows.reshape(x.shape[:-1])
    return _pack(loss, grad.reshape(x.shape), hess.reshape(x.shape), lse,
                 return_grad, return_hess, return_lse)


def _softplus(z):
    """``log(1 + e^z)`` without overflow."""
    return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))


def binary_cross_entropy_with_logits(logits, target, *, weight=None, pos_weight=None,
                                     label_smoothing=0.0, reduction="mean",
                                     return_grad=False, return_hess=False):
    """Sigmoid binary cross-entropy with ``torch.nn.functional.binary_cross_entropy_with_logits``
    semantics:

    ``loss = w·[pw·y·softplus(−z) + (1 − y)·softplus(z)]`` with ``y ← y·(1−ε) + ε/2``,
    ``grad = w·[(pw·y + 1 − y)·σ(z) − pw·y]``, ``hess = w·(pw·y + 1 − y)·σ(z)·(1 − σ(z))``.
    Zero-coefficient terms (and zero-weight elements) contribute exactly zero. ``mean`` divides
    by the number of elements.
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    eps = float(label_smoothing)
    w = np.broadcast_to(1.0 if weight is None else np.asarray(weight, np.float64), z.shape)
    pw = np.broadcast_to(1.0 if pos_weight is None else np.asarray(pos_weight, np.float64),
                         z.shape)
    # The smoothed target y(1−ε) + ε/2 and its complement (1 − y)(1−ε) + ε/2, the complement
    # formed without subtracting the smoothed target from 1.
    a = pw * (y * (1.0 - eps) + eps / 2.0)
    b = (1.0 - y) * (1.0 - eps) + eps / 2.0
    with np.errstate(invalid="ignore", over="ignore"):
        loss = np.where(a != 0, a * _softplus(-z), 0.0) + np.where(b != 0, b * _softplus(z), 0.0)
        loss = np.where(np.isnan(z), np.nan, loss)
        sig = np.where(z >= 0, 1.0 / (1.0 + np.exp(-np.abs(z))),
                       np.exp(-np.abs(z)) / (1.0 + np.exp(-np.abs(z))))
        sig = np.where(np.isnan(z), np.nan, sig)
        one_minus_sig = np.where(z >= 0, np.exp(-np.abs(z)) / (1.0 + np.exp(-np.abs(z))),
                                 1.0 / (1.0 + np.exp(-np.abs(z))))
        grad = b * sig - a * one_minus_sig          # = (a + b)·σ − a, without cancellation
        hess = (a + b) * sig * one_minus_sig
    zero_w = w == 0
    loss = np.where(zero_w, 0.0, w * loss)
    grad = np.where(zero_w, 0.0, w * grad)
    hess = np.where(zero_w, 0.0, w * hess)
    if reduction == "mean":
        n = z.size
        with np.errstate(divide="ignore", invalid="ignore"):
            grad = grad / np.float64(n)
            hess = hess / np.float64(n)
    loss = _reduce(loss, reduction, z.size)
    return _pack(loss, grad, hess, None, return_grad, return_hess, False)
