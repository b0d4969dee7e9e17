r"""The cross-entropy variants: focal, sigmoid focal, poly-1, generalized CE, energy margin.

Each is one fused pass per row in the Rust core (row maximum, exponentials and their sum in
float64, the gradient written from the stored exponentials); for a class-index target without
label smoothing the gradient of focal, poly-1 and generalized CE is the cross-entropy
gradient :math:`p - e_t` times one scalar per row, so they cost about what
:func:`xent_rs.cross_entropy` costs. ``xent_rs.reference`` has the float64 definitions.
"""

from __future__ import annotations

import math

import numpy as np

from . import _core
from . import _validate as _v

__all__ = ["focal_loss", "sigmoid_focal_loss", "poly1_cross_entropy",
           "generalized_cross_entropy", "energy_margin_loss"]


def _reduced_dtype(dtype):
    """16-bit logits give a float32 reduced loss (a float16 mean keeps only 3 digits)."""
    return np.dtype(np.float32) if dtype.itemsize == 2 else dtype


def _reduced(total, divisor, reduction, dtype):
    dtype = _reduced_dtype(dtype)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if reduction == "sum":
            return dtype.type(total)
        return dtype.type(np.float64(total) / np.float64(divisor))


def _out(out, x, return_grad, name="out"):
    if out is None:
        return None, False
    if not return_grad:
        raise ValueError(f"{name}: given without return_grad=True ({name} receives the "
                         f"gradient)")
    return _v.out_array(out, x, name)


def _family(logits, target, family, param, alpha, ignore_index, label_smoothing, reduction,
            return_grad, out, index_only=None):
    x = _v.class_logits(logits)
    reduction = _v.reduction(reduction)
    return_grad = _v.flag(return_grad, "return_grad")
    ignore_index = _v.ignore_index(ignore_index)
    k = x.shape[-1]
    alpha = None if alpha is None else _v.class_alpha(alpha, k)
    if index_only:
        kind, tgt = "index", _v.index_only_target(target, x, index_only)
    else:
        kind, tgt = _v.cce_target(target, x)
    out, in_place = _out(out, x, return_grad)
    n = x.size // k
    if kind == "index":
        divisor = _core.family_check_labels(tgt, k, ignore_index)
        labels, probs = tgt, None
    else:
        divisor = n
        labels, probs = None, tgt.reshape(-1)
    losses = np.empty(x.shape[:-1], dtype=x.dtype) if reduction == "none" else None
    grad = (out if out is not None else np.empty_like(x)) if return_grad else None
    total = _core.family_forward_backward(
        grad if in_place else x, k, family, param, labels, probs, alpha, ignore_index,
        label_smoothing, divisor if reduction == "mean" else 1.0, losses, grad, in_place)
    loss = losses if reduction == "none" else _reduced(total, divisor, reduction, x.dtype)
    return (loss, grad) if return_grad else loss


def focal_loss(logits, target, *, gamma=2.0, alpha=None, ignore_index=-100,
               label_smoothing=0.0, reduction="mean", return_grad=False, out=None):
    r"""Softmax focal loss (Lin et al., *Focal Loss for Dense Object Detection*, ICCV 2017).

    For a row with logits :math:`x`, :math:`p = \mathrm{softmax}(x)` and target distribution
    :math:`q` (class index :math:`t`: :math:`q_k = (1-\varepsilon)[k=t] + \varepsilon/K`;
    probabilities :math:`y`: :math:`q_k = (1-\varepsilon) y_k + \varepsilon/K`):

    .. math:: \ell = -\sum_k \alpha_k (1-p_k)^\gamma q_k \log p_k

    and, with :math:`h_k = \alpha_k q_k (1-p_k)^{\gamma}\,(1 + \gamma p_k L_k / (1-p_k))`,
    :math:`L_k = -\log p_k`, the gradient :math:`\partial\ell/\partial x_j = p_j \sum_k h_k
    - h_j`; for a class index without smoothing that is :math:`h_t (p - e_t)`.

    Same value as Keras' ``CategoricalFocalCrossentropy(alpha=..., gamma=...,
    from_logits=True)`` with the same ``alpha``, without Keras' clipping of ``p`` to
    :math:`[10^{-7}, 1-10^{-7}]`; ``gamma=0`` with ``alpha=None`` is :func:`cross_entropy`.

    Parameters
    ----------
    logits : array_like, float16, bfloat16, float32 or float64, shape (..., K)
    target : array_like
        Class indices of shape ``logits.shape[:-1]`` (or ``ignore_index``), or float class
        probabilities of ``logits``' shape, as for :func:`cross_entropy`.
    gamma : float >= 0, default 2
        The focusing exponent.
    alpha : float or array_like of shape (K,), optional
        Non-negative class factors :math:`\alpha_k` (``None``: 1 for every class; Keras'
        default is a scalar 0.25).
    ignore_index : int, default -100
    label_smoothing : float in [0, 1], default 0
    reduction : {"mean", "sum", "none"}
        ``"mean"`` divides by the number of non-ignored rows (not by the factors).
    return_grad : bool
        Also return the gradient with respect to the logits (scaled like the loss).
    out : ndarray, optional
        Receives the gradient; ``out=logits`` works in place.

    Returns
    -------
    loss, [grad]
        A scalar (float32 for 16-bit logits) or, for ``"none"``, one loss per row in the
        logits' dtype; the gradient in the logits' dtype.

    Notes
    -----
    :math:`1 - p_t` of a maximal class is the non-maximal mass over the sum of exponentials
    and :math:`\log p_t` is ``log1p`` of that mass, so confident rows keep full relative
    precision (no clipping is needed).

    Examples
    --------
    >>> import numpy as np, xent_rs as xr
    >>> z = np.array([[2.0, 0.0, -1.0]])
    >>> p = np.exp(z[0]) / np.exp(z[0]).sum()
    >>> bool(np.isclose(xr.focal_loss(z, np.array([0])), -(1 - p[0]) ** 2 * np.log(p[0])))
    True
    """
    gamma = _v.nonneg_real(gamma, "gamma")
    eps = _v.label_smoothing(label_smoothing)
    return _family(logits, target, "focal", gamma, alpha, ignore_index, eps, reduction,
                   return_grad, out)


def poly1_cross_entropy(logits, target, *, epsilon=2.0, ignore_index=-100,
                        label_smoothing=0.0, reduction="mean", return_grad=False, out=None):
    r"""Poly-1 cross-entropy (Leng et al., *PolyLoss*, ICLR 2022).

    .. math:: \ell = -\sum_k q_k \log p_k + \varepsilon_1 \sum_k q_k (1 - p_k)

    (:math:`= \mathrm{CE} + \varepsilon_1 (1 - p_t)` for a class index), with :math:`q` the
    (smoothed) target distribution as in :func:`focal_loss`. The gradient is
    :math:`p_j \sum_k h_k - h_j`, :math:`h_k = q_k (1 + \varepsilon_1 p_k)`: for a class
    index :math:`(1 + \varepsilon_1 p_t)(p - e_t)`. Same value as optax's
    ``optax.losses.poly_loss_cross_entropy(logits, labels, epsilon)`` for probability
    labels; :math:`1 - p_k` of a confident class is computed without cancellation.

    Parameters
    ----------
    logits, target, ignore_index, label_smoothing, reduction, return_grad, out
        As for :func:`focal_loss` (``"mean"`` divides by the number of non-ignored rows).
    epsilon : float, default 2
        :math:`\varepsilon_1`, any finite value (the paper also uses negative ones).

    Returns
    -------
    loss, [grad]

    Examples
    --------
    >>> import numpy as np, xent_rs as xr
    >>> z = np.array([[0.0, 0.0]])
    >>> round(float(xr.poly1_cross_entropy(z, np.array([1]))), 6)  # log 2 + 2 * 0.5
    1.693147
    """
    epsilon = _v.finite_real(epsilon, "epsilon")
    eps = _v.label_smoothing(label_smoothing)
    return _family(logits, target, "poly1", epsilon, None, ignore_index, eps, reduction,
                   return_grad, out)


def generalized_cross_entropy(logits, target, *, q=0.7, ignore_index=-100, reduction="mean",
                              return_grad=False, out=None):
    r"""Generalized cross-entropy (Zhang & Sabuncu, *Generalized Cross Entropy Loss for
    Training Deep Neural Networks with Noisy Labels*, NeurIPS 2018).

    .. math:: \ell = \frac{1 - p_t^{\,q}}{q}

    for class index :math:`t`: the negative Box-Cox transform of :math:`p_t`, cross-entropy
    as :math:`q \to 0` and the mean absolute error of the probabilities (up to a factor) at
    :math:`q = 1`. Gradient :math:`p_t^{\,q} (p - e_t)`. Computed as
    :math:`-\mathrm{expm1}(-q L_t)/q` with :math:`L_t = -\log p_t`, so a confident row's
    tiny loss keeps its relative precision.

    Parameters
    ----------
    logits : array_like, float16, bfloat16, float32 or float64, shape (..., K)
    target : array_like of class indices, shape ``logits.shape[:-1]``
    q : float in (0, 1], default 0.7
    ignore_index, reduction, return_grad, out
        As for :func:`focal_loss`.

    Returns
    -------
    loss, [grad]

    Examples
    --------
    >>> import numpy as np, xent_rs as xr
    >>> z = np.array([[0.0, 0.0]])
    >>> round(float(xr.generalized_cross_entropy(z, np.array([0]), q=1.0)), 6)  # 1 - 1/2
    0.5
    """
    q = _v.gce_q(q)
    return _family(logits, target, "gce", q, None, ignore_index, 0.0, reduction, return_grad,
                   out, index_only="generalized_cross_entropy")


def sigmoid_focal_loss(logits, target, *, alpha=0.25, gamma=2.0, reduction="none",
                       return_grad=False, out=None):
    r"""Sigmoid focal loss (Lin et al. 2017), elementwise, as
    ``torchvision.ops.sigmoid_focal_loss(inputs, targets, alpha, gamma, reduction)``.

    With :math:`p = \sigma(z)`, :math:`p_t = p y + (1-p)(1-y)` and
    :math:`\alpha_t = \alpha y + (1-\alpha)(1-y)`:

    .. math:: \ell = \alpha_t (1-p_t)^\gamma\, \mathrm{BCE}(z, y)

    (no :math:`\alpha_t` when ``alpha=-1``). Computed from :math:`\log\sigma(\pm z)`:
    :math:`\mathrm{BCE} = -y \log\sigma(z) - (1-y)\log\sigma(-z)` and
    :math:`1 - p_t = y\,\sigma(-z) + (1-y)\,\sigma(z)`, so the tails are exact where
    torchvision's ``sigmoid`` followed by BCE rounds :math:`1 - p_t` to 0 (for
    :math:`|z| > 17` in float32, :math:`|z| > 37` in float64).

    Parameters
    ----------
    logits : array_like, float16, bfloat16, float32 or float64, any shape
    target : array_like, same shape, values in [0, 1] (bool and integer targets converted)
    alpha : float in [0, 1], or -1, default 0.25
    gamma : float >= 0, default 2
    reduction : {"none", "mean", "sum"}, default "none" (torchvision's)
        ``"mean"`` divides by the number of elements.
    return_grad : bool
        Also return the gradient with respect to the logits (scaled like the loss).
    out : ndarray, optional
        Receives the gradient; ``out=logits`` works in place.

    Returns
    -------
    loss, [grad]

    Examples
    --------
    >>> import numpy as np, xent_rs as xr
    >>> float(xr.sigmoid_focal_loss(np.array([0.0]), np.array([1.0]), alpha=-1, gamma=0)[0])
    0.6931471805599453
    """
    x = _v.float_array(logits)
    reduction = _v.reduction(reduction)
    return_grad = _v.flag(return_grad, "return_grad")
    alpha = _v.sigmoid_focal_alpha(alpha)
    gamma = _v.nonneg_real(gamma, "gamma")
    y = _v.bce_target(target, x)
    out, in_place = _out(out, x, return_grad)
    losses = np.empty_like(x) if reduction == "none" else None
    grad = (out if out is not None else np.empty_like(x)) if return_grad else None
    scale = 1.0
    if reduction == "mean":
        scale = math.inf if x.size == 0 else 1.0 / x.size
    total = _core.sigmoid_focal_forward_backward(
        (grad if in_place else x).reshape(-1), y.reshape(-1), alpha, gamma, scale,
        None if losses is None else losses.reshape(-1),
        None if grad is None else grad.reshape(-1), in_place)
    loss = losses if reduction == "none" else _reduced(total, x.size, reduction, x.dtype)
    return (loss, grad) if return_grad else loss


def energy_margin_loss(logits_in, logits_out, *, m_in=-25.0, m_out=-7.0, temperature=1.0,
                       return_grad=False, out_in=None, out_out=None):
    r"""The energy-bounded regulariser of Liu et al., *Energy-based Out-of-distribution
    Detection*, NeurIPS 2020 (their eq. 6, without its weight :math:`\lambda`).

    .. math:: \ell = \frac{1}{N_{in}}\sum_i \max(0, E(x_i) - m_{in})^2
              + \frac{1}{N_{out}}\sum_j \max(0, m_{out} - E(x'_j))^2

    with the free energy :math:`E(x) = -T \log\sum_k e^{x_k/T}` of each row, computed as
    :math:`-\max_k x_k - T \log\sum_k e^{(x_k - \max x)/T}` (no overflow). The gradient
    with respect to a row is :math:`\mp 2\max(0,\cdot)\,\mathrm{softmax}(x/T) / N`
    (minus for in-distribution rows). A mean over no rows is NaN.

    Parameters
    ----------
    logits_in : array_like, float16, bfloat16, float32 or float64, shape (..., K)
        Logits of in-distribution samples.
    logits_out : array_like, float16, bfloat16, float32 or float64, shape (..., K')
        Logits of auxiliary outlier samples.
    m_in, m_out : float, default -25 and -7 (the paper's CIFAR-10 margins)
        Finite, with ``m_in <= m_out`` (in-distribution energies are pushed below ``m_in``,
        outliers' above ``m_out``).
    temperature : float > 0, default 1
    return_grad : bool
        Also return the gradients with respect to ``logits_in`` and ``logits_out``.
    out_in, out_out : ndarray, optional
        Receive the two gradients (each of its logits' shape and dtype, C-contiguous), so
        that a training loop allocates nothing per call; ``out_in=logits_in`` (and
        ``out_out=logits_out``) work in place. Neither may overlap the other or the other
        side's logits.

    Returns
    -------
    loss, [grad_in, grad_out]
        The loss as a scalar of the promoted logits dtype (float32 for 16-bit logits); the
        gradients in their logits' dtypes.

    Examples
    --------
    >>> import numpy as np, xent_rs as xr
    >>> z_in = np.zeros((1, 2))  # E = -log 2, above m_in: (1 - log 2)^2
    >>> z_out = np.full((1, 2), -30.0)  # E = 30 - log 2, above m_out: nothing
    >>> round(float(xr.energy_margin_loss(z_in, z_out, m_in=-1.0, m_out=0.0)), 6)
    0.094159
    """
    x_in = _v.class_logits(logits_in, "logits_in")
    x_out = _v.class_logits(logits_out, "logits_out")
    m_in = _v.finite_real(m_in, "m_in")
    m_out = _v.finite_real(m_out, "m_out")
    if m_in > m_out:
        raise ValueError(f"m_in: must not exceed m_out (in-distribution energies are pushed "
                         f"below m_in, outliers' above m_out), got m_in={m_in} > m_out={m_out}")
    temperature = _v.positive_real(temperature, "temperature")
    return_grad = _v.flag(return_grad, "return_grad")
    out_in, in_place_in = _out(out_in, x_in, return_grad, "out_in")
    out_out, in_place_out = _out(out_out, x_out, return_grad, "out_out")
    for name, out, other in (("out_in", out_in, x_out), ("out_out", out_out, x_in)):
        if out is not None and np.may_share_memory(out, other):
            raise ValueError(f"{name}: overlaps the other side's logits")
    if out_in is not None and out_out is not None and np.may_share_memory(out_in, out_out):
        raise ValueError("out_out: overlaps out_in")
    total = np.float64(0.0)
    grads = []
    for x, margin, outlier, out, in_place in ((x_in, m_in, False, out_in, in_place_in),
                                              (x_out, m_out, True, out_out, in_place_out)):
        k = x.shape[-1]
        n = x.size // k
        grad = (out if out is not None else np.empty_like(x)) if return_grad else None
        s = _core.energy_margin(grad if in_place else x, k, temperature, margin, outlier,
                                float(n), grad, in_place)
        with np.errstate(divide="ignore", invalid="ignore"):
            total += np.float64(s) / np.float64(n)
        grads.append(grad)
    dtype = np.promote_types(_reduced_dtype(x_in.dtype), _reduced_dtype(x_out.dtype))
    with np.errstate(over="ignore", invalid="ignore"):
        loss = dtype.type(total)
    return (loss, grads[0], grads[1]) if return_grad else loss
