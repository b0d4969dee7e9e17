"""Float64 reference twins: cross-entropy of a linear layer's output and InfoNCE, without the logits matrix.

The twins do materialise the logits: they are the plain definitions (float64 NumPy, one
expression per formula) that the fused kernels are tested against.
"""

from __future__ import annotations

import numpy as np

__all__: list[str] = ["linear_cross_entropy", "info_nce"]


def _rows(logits, target, ignore_index, label_smoothing, z_loss):
    """Per-row loss and gradient (of the row loss) of capped logits ``(N, V)``."""
    n, v = logits.shape
    valid = target != ignore_index
    t = np.where(valid, target, 0)
    m = np.max(logits, axis=1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        lse = (m + np.log(np.sum(np.exp(logits - m), axis=1, keepdims=True)))[:, 0]
        logp = logits - lse[:, None]
        q = np.full((n, v), label_smoothing / v)
        q[np.arange(n), t] += 1.0 - label_smoothing
        loss = -np.sum(np.where(q > 0, q * logp, 0.0), axis=1) + z_loss * lse**2
        p = np.exp(logp)
        grad = p - q + 2.0 * z_loss * lse[:, None] * p
    return np.where(valid, loss, 0.0), np.where(valid[:, None], grad, 0.0), valid


def linear_cross_entropy(hidden, weight, target, *, bias=None, ignore_index=-100,
                         label_smoothing=0.0, z_loss=0.0, softcap=None, reduction="mean",
                         return_grad=False, chunk_size=None):
    """:func:`xent_rs.linear_cross_entropy` in float64 with the full logits (``chunk_size``
    is accepted and has no effect)."""
    h = np.asarray(hidden, dtype=np.float64)
    w = np.asarray(weight, dtype=np.float64)
    d = h.shape[-1]
    h2 = h.reshape(-1, d)
    t = np.asarray(target).reshape(-1).astype(np.int64)
    z = h2 @ w.T
    if bias is not None:
        z = z + np.asarray(bias, dtype=np.float64)
    if softcap is not None:
        with np.errstate(invalid="ignore"):
            y = np.where(np.isneginf(z), -np.inf, softcap * np.tanh(z / softcap))
    else:
        y = z
    loss, g, valid = _rows(y, t, ignore_index, label_smoothing, z_loss)
    count = int(valid.sum())
    if reduction == "none":
        out, scale = loss.reshape(h.shape[:-1]), 1.0
    elif reduction == "sum":
        out, scale = np.float64(loss.sum()), 1.0
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.float64(loss.sum()) / np.float64(count)
        scale = 1.0 / count if count else 0.0
    if not return_grad:
        return out
    g = g * scale
    if softcap is not None:
        with np.errstate(invalid="ignore"):
            g = np.where(np.isfinite(y), g * (1.0 - (y / softcap) ** 2), 0.0)
    res = [out, (g @ w).reshape(h.shape), g.T @ h2]
    if bias is not None:
        res.append(g.sum(axis=0))
    return tuple(res)


def info_nce(a, b, *, temperature=0.07, symmetric=True, reduction="mean", return_grad=False):
    """:func:`xent_rs.info_nce` in float64 with the full ``(N, N)`` similarity matrix."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    n = x.shape[0]
    s = x @ y.T / temperature
    idx = np.arange(n)
    la, ga, _ = _rows(s, idx, -1, 0.0, 0.0)
    if symmetric:
        lb, gb, _ = _rows(s.T.copy(), idx, -1, 0.0, 0.0)
        loss, gs = (la + lb) / 2.0, (ga + gb.T) / 2.0
    else:
        loss, gs = la, ga
    if reduction == "none":
        out, scale = loss, 1.0
    elif reduction == "sum":
        out, scale = np.float64(loss.sum()), 1.0
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.float64(loss.sum()) / np.float64(n)
        scale = 1.0 / n if n else 0.0
    if not return_grad:
        return out
    gs = gs * scale / temperature
    return out, gs @ y, gs.T @ x
