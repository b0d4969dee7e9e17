"""Vector scaling (Guo et al. 2017): a per-class scale and bias fitted on held-out logits."""

from __future__ import annotations

from typing import Tuple

import numpy as np
from numpy.typing import ArrayLike

import xent_rs as _xr
from .. import _validate as _v
from . import _rows

#: Newton iterations before giving up (a convex problem: a handful suffice unless the
#: minimum is at infinity, i.e. the training rows are separable by scaling).
_MAX_ITER = 100
#: The stopping rule: the largest component of the gradient of the mean loss.
GRADIENT_TOLERANCE = 1e-9


def _objective(z, labels, w, b, with_grad):
    """Mean CE of ``z * w + b`` and (optionally) its (N, K) gradient with respect to the
    scaled logits, from the fused kernel."""
    s = z * w + b
    if not with_grad:
        return float(_xr.cross_entropy(s, labels)), s, None
    loss, g = _xr.cross_entropy(s, labels, return_grad=True)
    return float(loss), s, g


def _gradient(z, g):
    """(∂L/∂w, ∂L/∂b) from the per-logit gradient ``g`` of the mean loss."""
    return np.einsum("ij,ij->j", g, z), g.sum(axis=0)


def _hessian(z, p):
    """The exact Hessian of the mean CE in (w, b), 2K × 2K, from the probabilities ``p``.

    Per row, the Hessian in the scaled logits is ``diag(p) − p pᵀ``; with
    ``∂s_k/∂w_k = z_k`` and ``∂s_k/∂b_k = 1`` the blocks are
    ``H_ww = diag(Σ p z²) − (p∘z)ᵀ(p∘z)``, ``H_wb = diag(Σ p z) − (p∘z)ᵀ p`` and
    ``H_bb = diag(Σ p) − pᵀ p``, divided by N. Row chunks bound the temporaries.
    """
    n, k = z.shape
    h = np.zeros((2 * k, 2 * k))
    for rows in _rows.row_chunks(n, k):
        pr, zr = p[rows], z[rows]
        a = pr * zr
        h[:k, :k] += np.diag((a * zr).sum(axis=0)) - a.T @ a
        cross = np.diag(a.sum(axis=0)) - a.T @ pr
        h[:k, k:] += cross
        h[k:, :k] += cross.T
        h[k:, k:] += np.diag(pr.sum(axis=0)) - pr.T @ pr
    return h / n


def fit_vector_scaling(logits: ArrayLike, labels: ArrayLike) -> Tuple[np.ndarray, np.ndarray]:
    r"""Vector scaling (Guo et al. 2017): per-class scale ``w`` and bias ``b`` minimising the
    mean cross-entropy of ``logits * w + b`` on held-out data.

    .. math::

        (w, b) = \arg\min_{w, b \in \mathbb{R}^K} \frac{1}{N}\sum_i
        \mathrm{CE}(z_i \odot w + b,\; y_i)

    The objective is convex (cross-entropy of a linear map of the parameters). It is
    minimised by Newton's method with the exact Hessian (2K × 2K, built from the
    probabilities; ``diag(p) − p pᵀ`` per row) and a backtracking (Armijo) line search,
    from ``w = 1, b = 0``; the loss and its gradient come from the library's fused
    ``cross_entropy(..., return_grad=True)`` pass, reduced per class
    (``∂L/∂w_k = Σ_i g_ik z_ik``, ``∂L/∂b_k = Σ_i g_ik``). A common shift of ``b`` changes
    nothing, so the Hessian is singular along it; the Newton step is taken orthogonally to it
    and ``b`` is returned with mean zero. Iterations stop once every gradient component is
    below 1e-9 (the contract promises 1e-6). The cost per iteration is one fused pass plus
    ``O(N K²)`` for the Hessian.

    Parameters
    ----------
    logits : array_like, float, shape (N, K), K ≥ 2
        Finite held-out logits.
    labels : array_like, int, shape (N,)

    Returns
    -------
    (w, b) : tuple of ndarray, float64, shape (K,)
        Calibrated logits are ``logits * w + b``; ``b.mean() == 0`` (to rounding).

    Raises
    ------
    TypeError, ValueError
        For bad arguments (naming them), non-finite logits, and a search that ends without
        meeting the gradient bound. Rows that scaling separates completely have no finite
        minimiser: the loss keeps falling as ``w`` grows, and the search stops at the first
        point where the gradient is below the tolerance (large ``w``).

    References
    ----------
    .. [1] C. Guo, G. Pleiss, Y. Sun, K. Q. Weinberger, "On calibration of modern neural
       networks", ICML 2017 (section 4.2, matrix and vector scaling).

    Examples
    --------
    Logits whose second class is over-weighted by 2 and shifted by 1:

    >>> import numpy as np
    >>> from xent_rs.calibration import fit_vector_scaling
    >>> rng = np.random.default_rng(0)
    >>> true = rng.normal(size=(20000, 3))
    >>> y = (true + rng.gumbel(size=true.shape)).argmax(axis=1)   # softmax(true) calibrated
    >>> z = true.copy(); z[:, 1] = (true[:, 1] - 1.0) / 2.0
    >>> w, b = fit_vector_scaling(z, y)
    >>> np.round(w, 1).tolist(), round(float(b[1] - b[0]), 1)
    ([1.0, 2.0, 1.0], 1.0)
    """
    scores, binary = _v.scores(logits, "logits", True)
    if binary or scores.ndim != 2 or scores.shape[1] < 2:
        raise ValueError(f"logits: vector scaling needs (N, K) logits with K >= 2; got shape "
                         f"{scores.shape}")
    n, k = scores.shape
    labels = _v.labels(labels, n, k)
    if n == 0:
        raise ValueError("logits: no rows; the fit is undefined")
    z = np.asarray(scores, dtype=np.float64)
    if not np.isfinite(z).all():
        raise ValueError("logits: must be finite for vector scaling")
    w, b = np.ones(k), np.zeros(k)
    shift = np.concatenate([np.zeros(k), np.full(k, 1.0 / np.sqrt(k))])
    loss, s, g = _objective(z, labels, w, b, True)
    for _ in range(_MAX_ITER):
        gw, gb = _gradient(z, g)
        grad = np.concatenate([gw, gb])
        if np.abs(grad).max() < GRADIENT_TOLERANCE:
            break
        p = _xr.softmax(s)
        h = _hessian(z, p) + np.outer(shift, shift)
        try:
            step = -np.linalg.solve(h, grad)
        except np.linalg.LinAlgError:
            step = -np.linalg.lstsq(h, grad, rcond=None)[0]
        step -= shift * (shift @ step)
        slope = grad @ step
        if not slope < 0.0:
            step, slope = -grad, -(grad @ grad)
        t = 1.0
        while True:
            trial = _objective(z, labels, w + t * step[:k], b + t * step[k:], False)[0]
            if trial <= loss + 1e-4 * t * slope or t < 1e-10:
                break
            t *= 0.5
        if t < 1e-10 and trial >= loss:
            break
        w, b = w + t * step[:k], b + t * step[k:]
        loss, s, g = _objective(z, labels, w, b, True)
    gw, gb = _gradient(z, g)
    if max(np.abs(gw).max(), np.abs(gb).max()) >= 1e-6:
        raise ValueError("logits: vector scaling did not converge (gradient "
                         f"{max(np.abs(gw).max(), np.abs(gb).max()):.3g} after {_MAX_ITER} "
                         "Newton steps)")
    return w, b - b.mean()
