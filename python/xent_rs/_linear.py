"""Cross-entropy of a linear layer's output and InfoNCE, without the logits matrix."""

from __future__ import annotations

import math

import numpy as np

from . import _core
from . import _validate as _v

__all__: list[str] = ["linear_cross_entropy", "info_nce"]


def _compute_dtype(*arrays):
    """float64 when any input is float64, else float32 (16-bit inputs accumulate in float32)."""
    if any(a is not None and a.dtype == np.float64 for a in arrays):
        return np.dtype(np.float64)
    return np.dtype(np.float32)


def _as(arr, dtype):
    return None if arr is None else np.ascontiguousarray(arr, dtype=dtype)


def _matrix(value, name):
    arr = _v.float_array(value, name)
    if arr.ndim != 2:
        raise ValueError(f"{name}: must be 2-D, got shape {arr.shape}")
    return arr


def _labels(target, batch_shape):
    arr = _v.array(target, "target")
    if arr.dtype.kind == "f":
        arr = _v.float_indices(arr)
    elif arr.dtype.kind not in "iu":
        raise TypeError(f"target: must hold integer class indices, got "
                        f"{_v.kind_name(arr.dtype)} dtype ({arr.dtype})")
    if arr.shape != batch_shape:
        raise ValueError(f"target: must have shape {batch_shape} (hidden.shape[:-1]), got "
                         f"{arr.shape}")
    return _v.index_target(arr, batch_shape)


def _chunk(chunk_size):
    if chunk_size is None:
        return 0
    c = _v.integer(chunk_size, "chunk_size")
    if c <= 0:
        raise ValueError(f"chunk_size: must be a positive integer (rows per chunk), got {c}")
    return c


def _reduce(total, divisor, reduction, dtype):
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if reduction == "sum":
            return dtype.type(total)
        return dtype.type(np.float64(total) / np.float64(divisor))


def linear_cross_entropy(hidden, weight, target, *, bias=None, ignore_index=-100,
                         label_smoothing=0.0, z_loss=0.0, softcap=None, reduction="mean",
                         return_grad=False, chunk_size=None):
    r"""Cross-entropy of ``hidden @ weight.T + bias`` without the ``(N, V)`` logits.

    For rows :math:`h_i` (``hidden`` is ``(..., D)``, ``N`` rows), ``weight`` :math:`W`
    ``(V, D)`` and ``bias`` :math:`b`, the logits :math:`z_i = W h_i + b` are soft-capped when
    ``softcap`` :math:`c` is given, :math:`y = c \tanh(z / c)` (Gemma 2, Team 2024; ``-inf``
    stays masked), and each non-ignored row costs

    .. math:: \ell_i = \mathrm{CE}(y_i, t_i) + \zeta\,\mathrm{lse}(y_i)^2

    where CE is :func:`xent_rs.cross_entropy`'s (label smoothing as PyTorch) and the z-loss
    :math:`\zeta\,\mathrm{lse}^2` is PaLM's (Chowdhery et al. 2022), not weighted, and divided
    by the number of non-ignored rows for ``"mean"`` (as Liger-Kernel does). With
    :math:`g = \partial L/\partial y` (softmax minus target, plus
    :math:`2\zeta\,\mathrm{lse}\,\mathrm{softmax}`) and :math:`g_z = g\,(1 - (y/c)^2)`:
    ``grad_hidden = g_z @ W``, ``grad_weight = g_zᵀ @ hidden``, ``grad_bias = Σ_i g_z``.

    Rows are processed ``chunk_size`` at a time: only that chunk's ``(chunk_size, V)`` logits
    ever exist (turned into their gradient in place), as in Liger-Kernel's
    FusedLinearCrossEntropy (Hsu et al. 2024) and Apple's Cut Cross-Entropy (Wijmans et al.
    2024). The result does not depend on ``chunk_size`` beyond float32 rounding of the
    matrix products, and is bit-identical for any thread count.

    Parameters
    ----------
    hidden : array_like, float16, bfloat16, float32 or float64, shape (..., D)
    weight : array_like, float, shape (V, D)
    target : array_like of int, shape ``hidden.shape[:-1]``
        Class indices in ``[0, V)`` or ``ignore_index``.
    bias : array_like, float, shape (V,), optional
        ``-inf`` masks a class.
    ignore_index : int, default -100
    label_smoothing : float in [0, 1]
    z_loss : float >= 0, default 0
    softcap : float > 0, optional
    reduction : {"mean", "sum", "none"}
    return_grad : bool
        Also return ``grad_hidden`` (``hidden``'s shape), ``grad_weight`` and, when ``bias``
        is given, ``grad_bias``, each in its input's dtype, scaled like the loss.
    chunk_size : int > 0, optional
        Rows per chunk; by default as many as fit 48 MiB of logits (a multiple of 16 in
        [16, 4096]), e.g. 240 rows for ``V = 50257`` in float32.

    Returns
    -------
    loss or (loss, grad_hidden, grad_weight[, grad_bias])
        The loss is float32 (float64 when any input is float64), a scalar or, for ``"none"``,
        one value per row of ``hidden.shape[:-1]``.

    Examples
    --------
    >>> import numpy as np, xent_rs as xr
    >>> h = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    >>> w = np.array([[2.0, 0.0], [0.0, 2.0], [0.0, 0.0]], np.float32)
    >>> round(float(xr.linear_cross_entropy(h, w, np.array([0, 1]))), 5)
    0.23954
    """
    return _linear_ce(hidden, weight, target, bias, ignore_index, label_smoothing, z_loss,
                      softcap, reduction, return_grad, chunk_size, None)


def _fused(hidden, weight, target, bias, ignore_index, softcap, row_weight):
    """Gradients ``(grad_hidden, grad_weight, grad_bias or None)`` of ``Σ_i row_weight[i] ·
    loss_i`` (the backward of per-row losses, for the PyTorch adapter)."""
    res = _linear_ce(hidden, weight, target, bias, ignore_index, 0.0, 0.0, softcap, "sum",
                     True, None, row_weight)
    return res[1], res[2], (res[3] if bias is not None else None)


def _linear_ce(hidden, weight, target, bias, ignore_index, label_smoothing, z_loss, softcap,
               reduction, return_grad, chunk_size, row_weight):
    h = _v.float_array(hidden, "hidden", min_ndim=1)
    w = _matrix(weight, "weight")
    d = h.shape[-1]
    if w.shape[1] != d:
        raise ValueError(f"weight: must have shape (V, {d}) to match hidden's last axis "
                         f"(D={d}), got {w.shape}")
    v = w.shape[0]
    if v == 0:
        raise ValueError("weight: has no rows (V=0); need at least one class")
    b = None
    if bias is not None:
        b = _v.float_array(bias, "bias")
        if b.shape != (v,):
            raise ValueError(f"bias: must have shape ({v},) (one per row of weight), got "
                             f"{b.shape}")
    batch_shape = h.shape[:-1]
    labels = _labels(target, batch_shape)
    ignore_index = _v.integer(ignore_index, "ignore_index")
    if not -(2**63) <= ignore_index < 2**63:
        raise ValueError("ignore_index: must fit in a signed 64-bit integer")
    eps = _v.label_smoothing(label_smoothing)
    z = _v.real(z_loss, "z_loss")
    if not (math.isfinite(z) and z >= 0.0):
        raise ValueError(f"z_loss: must be finite and >= 0, got {z_loss!r}")
    cap = None if softcap is None else _v.positive_real(softcap, "softcap")
    reduction = _v.reduction(reduction)
    return_grad = _v.flag(return_grad, "return_grad")
    chunk = _chunk(chunk_size)

    dt = _compute_dtype(h, w, b)
    n = math.prod(batch_shape)
    hc, wc, bc = _as(h.reshape(n, d), dt), _as(w, dt), _as(b, dt)
    divisor = _core.cce_check_labels(labels, v, ignore_index, None)
    chunk = min(chunk, max(n, 1))
    losses = np.empty(n, dt) if reduction == "none" else None
    grads = (np.empty((n, d), dt), np.empty((v, d), dt),
             np.empty(v, dt) if b is not None else None) if return_grad else (None,) * 3
    rw = None
    if row_weight is not None:
        rw = np.ascontiguousarray(np.asarray(row_weight, dtype=dt).reshape(-1))
        if rw.shape != (n,):
            raise ValueError(f"row_weight: must have one value per row ({n}), got {rw.size}")
    total = _core.linear_cross_entropy(
        hc, wc, bc, labels, d, v, ignore_index, eps, z, cap,
        float(divisor) if reduction == "mean" else 1.0, 1.0, chunk,
        losses, *grads, rw,
    )
    loss = losses.reshape(batch_shape) if reduction == "none" else _reduce(
        total, divisor, reduction, dt)
    if not return_grad:
        return loss
    gh, gw, gb = grads
    out = [loss, gh.reshape(h.shape).astype(h.dtype, copy=False), gw.astype(w.dtype, copy=False)]
    if b is not None:
        out.append(gb.astype(b.dtype, copy=False))
    return tuple(out)


def info_nce(a, b, *, temperature=0.07, symmetric=True, reduction="mean", return_grad=False):
    r"""InfoNCE / CLIP contrastive loss of paired embeddings, without the ``(N, N)`` matrix.

    Row :math:`i` of :math:`S = a b^\top / \tau` scores the true pair :math:`(a_i, b_i)`
    against every :math:`b_j`: :math:`\ell^{a}_i = \mathrm{lse}(S_{i,:}) - S_{ii}` (van den Oord
    et al. 2018, "Representation Learning with Contrastive Predictive Coding"). With
    ``symmetric`` (CLIP, Radford et al. 2021) the other direction's
    :math:`\ell^{b}_i = \mathrm{lse}(S_{:,i}) - S_{ii}` is averaged in:
    :math:`\ell_i = (\ell^a_i + \ell^b_i) / 2`. Rows of :math:`S` are computed in chunks by
    the machinery of :func:`linear_cross_entropy` (``hidden=a/τ``, ``weight=b``, targets
    ``arange(N)``). Inputs are used as given (normalise them first for cosine similarity).

    Parameters
    ----------
    a, b : array_like, float16, bfloat16, float32 or float64, shape (N, D)
    temperature : float > 0, default 0.07
    symmetric : bool, default True
    reduction : {"mean", "sum", "none"}
        ``"none"``: one value per pair, :math:`\ell_i`.
    return_grad : bool
        Also return ``(grad_a, grad_b)`` of the reduced loss (of the sum for ``"none"``).

    Returns
    -------
    loss or (loss, grad_a, grad_b)

    Examples
    --------
    >>> import numpy as np, xent_rs as xr
    >>> e = np.eye(3, dtype=np.float32)
    >>> round(float(xr.info_nce(e, e, temperature=1.0)), 5)
    0.55144
    """
    x = _matrix(a, "a")
    y = _matrix(b, "b")
    if y.shape != x.shape:
        raise ValueError(f"b: must have the shape of a {x.shape}, got {y.shape}")
    tau = _v.positive_real(temperature, "temperature")
    symmetric = _v.flag(symmetric, "symmetric")
    reduction = _v.reduction(reduction)
    return_grad = _v.flag(return_grad, "return_grad")
    n, d = x.shape
    dt = _compute_dtype(x, y)
    xc, yc = _as(x, dt), _as(y, dt)
    labels = np.arange(n, dtype=np.int64)
    dirs = 2 if symmetric else 1
    divisor = float(dirs * (n if reduction == "mean" else 1))

    def one(h, w):
        losses = np.empty(n, dt) if reduction == "none" else None
        g = (np.empty((n, d), dt), np.empty((n, d), dt)) if return_grad else (None, None)
        total = _core.linear_cross_entropy(
            h, w, None, labels, d, n, -1, 0.0, 0.0, None, divisor, 1.0 / tau, 0,
            losses, *g, None)
        return total, losses, g

    if n == 0:
        loss = (np.empty(0, dt) if reduction == "none"
                else _reduce(0.0, 0.0 if reduction == "mean" else 1.0, reduction, dt))
        zeros = (np.zeros_like(x), np.zeros_like(y))
        return (loss, *zeros) if return_grad else loss
    t1, l1, (gh1, gw1) = one(xc, yc)
    if symmetric:
        t2, l2, (gh2, gw2) = one(yc, xc)
        total = t1 + t2
        if reduction == "none":
            losses = (l1 + l2) / dt.type(2)
        if return_grad:
            ga, gb = gh1 + gw2, gw1 + gh2
    else:
        total, losses = t1, l1
        if return_grad:
            ga, gb = gh1, gw1
    loss = losses if reduction == "none" else _reduce(total, divisor, "mean", dt)
    if not return_grad:
        return loss
    return loss, ga.astype(x.dtype, copy=False), gb.astype(y.dtype, copy=False)
