"""Float64 reference twins of the cross-entropy variants: focal, sigmoid focal, poly-1,
generalized CE and energy margin.

Each follows its formula directly in NumPy float64 (see the fast functions in ``xent_rs``
for the papers). Two details are kept so that the reference is as exact as the kernels it
checks: ``log p`` is ``(x − m) − log1p(rest)`` with ``rest`` the non-maximal mass, and
``1 − p`` of a maximal class is ``rest / S``. A term whose target mass is zero is skipped.

The softmax-family losses are ``Σ_k q_k α_k g(p_k)``; their gradient is
``p_j Σ_k w_k − w_j`` with ``w_k = q_k α_k h(p_k)``, ``h(p) = −g'(p)·p``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["focal_loss", "sigmoid_focal_loss", "poly1_cross_entropy",
           "generalized_cross_entropy", "energy_margin_loss"]


def _softmax_parts(x):
    """``(log p, p, 1 − p)`` of rows ``x`` (N, K), without cancellation for confident rows."""
    m = np.max(x, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", over="ignore"):
        d = x - m
        e = np.exp(d)
        is_max = d == 0
        rest = np.sum(np.where(is_max, 0.0, e), axis=-1, keepdims=True)
        rest = rest + (np.sum(is_max, axis=-1, keepdims=True) - 1)  # ties: exact integers
        s = 1.0 + rest
        log_p = d - np.log1p(rest)
        p = e / s
        one_minus_p = np.where(is_max, rest / s, 1.0 - p)
    return log_p, p, one_minus_p


def _target_distribution(target, shape, ignore_index, label_smoothing):
    """``q`` (N, K) of index or probability targets (ignored rows all zero) for logits of
    ``shape``, and the mean's divisor (the number of non-ignored rows, or of rows)."""
    k = shape[-1]
    n = int(np.prod(shape[:-1]))
    t = np.asarray(target)
    if t.dtype.kind == "f" and t.shape == tuple(shape):
        q = (1 - label_smoothing) * t.reshape(n, k).astype(np.float64) + label_smoothing / k
        return q, n
    t = t.reshape(-1).astype(np.int64)
    keep = t != ignore_index
    q = np.zeros((n, k))
    q[keep] = label_smoothing / k
    q[np.nonzero(keep)[0], t[keep]] += 1 - label_smoothing
    return q, int(keep.sum())


def _reduce(losses, divisor, reduction, batch_shape):
    if reduction == "none":
        return losses.reshape(batch_shape)
    total = losses.sum()
    if reduction == "sum":
        return np.float64(total)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.float64(total) / np.float64(divisor)


def _family(logits, target, g_and_h, class_factor, ignore_index, label_smoothing, reduction,
            return_grad):
    x = np.asarray(logits, dtype=np.float64)
    batch_shape, k = x.shape[:-1], x.shape[-1]
    q, divisor = _target_distribution(target, x.shape, ignore_index, label_smoothing)
    x = x.reshape(-1, k)
    log_p, p, one_minus_p = _softmax_parts(x)
    qa = q * class_factor
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        g, h = g_and_h(p, one_minus_p, -log_p)
        losses = np.where(qa != 0, qa * g, 0.0).sum(axis=-1)
        w = np.where(qa != 0, qa * h, 0.0)
        # p_j Σ w − w_j, as p_j (Σ_{k≠j} w_k) − w_j (1 − p_j): no cancellation at p → 1.
        grad = p * (w.sum(axis=-1, keepdims=True) - w) - w * one_minus_p
    loss = _reduce(losses, divisor, reduction, batch_shape)
    if not return_grad:
        return loss
    if reduction == "mean":
        grad = grad / divisor
    return loss, grad.reshape(*batch_shape, k)


def focal_loss(logits, target, *, gamma=2.0, alpha=None, ignore_index=-100,
               label_smoothing=0.0, reduction="mean", return_grad=False):
    """``−Σ_k α_k (1 − p_k)^γ q_k log p_k`` (Lin et al. 2017); mean over non-ignored rows."""
    k = np.shape(logits)[-1]
    a = np.ones(k) if alpha is None else np.broadcast_to(np.asarray(alpha, np.float64), (k,))

    def g_and_h(p, u, nlp):
        ug = u**gamma
        ratio = np.where(u > 0, nlp / u, 1.0)  # L / u → 1 as p → 1
        extra = np.where(p == 0, 0.0, gamma * p * ratio)
        return ug * nlp, ug * (1 + extra)

    return _family(logits, target, g_and_h, a, ignore_index, label_smoothing, reduction,
                   return_grad)


def poly1_cross_entropy(logits, target, *, epsilon=2.0, ignore_index=-100,
                        label_smoothing=0.0, reduction="mean", return_grad=False):
    """``CE + ε Σ_k q_k (1 − p_k)`` (Leng et al. 2022); mean over non-ignored rows."""
    def g_and_h(p, u, nlp):
        return nlp + epsilon * u, 1 + epsilon * p

    return _family(logits, target, g_and_h, 1.0, ignore_index, label_smoothing, reduction,
                   return_grad)


def generalized_cross_entropy(logits, target, *, q=0.7, ignore_index=-100, reduction="mean",
                              return_grad=False):
    """``(1 − p_t^q) / q`` (Zhang & Sabuncu 2018), ``−expm1(q log p_t) / q``, index targets."""
    def g_and_h(p, u, nlp):
        return -np.expm1(-q * nlp) / q, np.exp(-q * nlp)

    return _family(logits, target, g_and_h, 1.0, ignore_index, 0.0, reduction, return_grad)


def _log_sigmoid(z):
    """``log σ(z) = −log(1 + e^{−z})``, stably."""
    return -np.logaddexp(0.0, -z)


def sigmoid_focal_loss(logits, target, *, alpha=0.25, gamma=2.0, reduction="none",
                       return_grad=False):
    """torchvision's ``α_t (1 − p_t)^γ BCE(z, y)``, from ``log σ(±z)``; mean over elements."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    log_s, log_sn = _log_sigmoid(z), _log_sigmoid(-z)
    s, sn = np.exp(log_s), np.exp(log_sn)
    bce = -(y * log_s + (1 - y) * log_sn)
    one_minus_pt = y * sn + (1 - y) * s
    alpha_t = alpha * y + (1 - alpha) * (1 - y) if alpha >= 0 else np.ones_like(z)
    wg = one_minus_pt**gamma
    losses = alpha_t * bce * wg
    loss = _reduce(losses, z.size, reduction, z.shape)
    if not return_grad:
        return loss
    # d/dz: BCE' = σ(z) − y; (1 − p_t)' = σ(z) σ(−z) (1 − 2y).
    with np.errstate(invalid="ignore", divide="ignore"):
        dw_over_w = np.where(one_minus_pt > 0, s * sn * (1 - 2 * y) / one_minus_pt, 0.0)
    grad = alpha_t * wg * ((s - y) + gamma * bce * dw_over_w)
    if reduction == "mean":
        grad = grad / z.size
    return loss, grad


def _energy(x, temperature):
    """``E = −T logsumexp(x / T)`` per row, and ``softmax(x / T)``."""
    z = x / temperature
    log_p, p, _ = _softmax_parts(z)
    # logsumexp(z) = max z − log p of the maximal class (= max z + log1p(rest)).
    lse = np.max(z, axis=-1) - np.max(log_p, axis=-1)
    return -temperature * lse, p


def energy_margin_loss(logits_in, logits_out, *, m_in=-25.0, m_out=-7.0, temperature=1.0,
                       return_grad=False):
    """``mean(relu(E_in − m_in)²) + mean(relu(m_out − E_out)²)`` (Liu et al. 2020)."""
    x_in = np.asarray(logits_in, dtype=np.float64)
    x_out = np.asarray(logits_out, dtype=np.float64)
    rows_in = x_in.reshape(-1, x_in.shape[-1])
    rows_out = x_out.reshape(-1, x_out.shape[-1])
    e_in, p_in = _energy(rows_in, temperature)
    e_out, p_out = _energy(rows_out, temperature)
    v_in = np.maximum(e_in - m_in, 0.0)
    v_out = np.maximum(m_out - e_out, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        loss = np.float64(np.mean(v_in**2) if v_in.size else np.nan) + np.float64(
            np.mean(v_out**2) if v_out.size else np.nan)
        if not return_grad:
            return loss
        grad_in = -2 * v_in[:, None] * p_in / len(rows_in)
        grad_out = 2 * v_out[:, None] * p_out / len(rows_out)
    return loss, grad_in.reshape(x_in.shape), grad_out.reshape(x_out.shape)
