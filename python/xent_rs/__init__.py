"""xent_rs: fast, exact cross-entropy losses and gradients for NumPy arrays.

The losses follow PyTorch's ``torch.nn.functional`` semantics with the class axis **last**;
the work is done by fused Rust kernels that read NumPy buffers in place, with the interpreter
released and on the library's own thread pool. See ``xent_rs.reference`` for the plain-NumPy
float64 definitions and ``xent_rs.calibration`` for calibration metrics.

>>> import numpy as np, xent_rs as xr
>>> logits = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 3.0]], dtype=np.float32)
>>> loss, grad = xr.cross_entropy(logits, np.array([0, 2]), return_grad=True)
>>> round(float(loss), 6)
0.168117
>>> grad.shape, grad.dtype
((2, 3), dtype('float32'))
"""

from __future__ import annotations

import math

import numpy as np

from . import _core
from . import _validate as _v

__all__ = [
    "cross_entropy",
    "binary_cross_entropy_with_logits",
    "log_softmax",
    "softmax",
    "logsumexp",
    "set_num_threads",
    "get_num_threads",
]

__version__ = "0.1.0"

#: The most threads :func:`set_num_threads` accepts (each is an operating-system thread).
MAX_THREADS = 1024


def _pack(loss, grad, hess, lse):
    out = [loss] + [a for a in (grad, hess, lse) if a is not None]
    return out[0] if len(out) == 1 else tuple(out)


def _reduced(total, divisor, reduction, dtype):
    # 16-bit logits give a float32 reduced loss. A reduced loss beyond the dtype's range is
    # ±inf (as the sum of its rows would be): no RuntimeWarning from the cast escapes.
    dtype = np.dtype(np.float32) if dtype.itemsize == 2 else dtype
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if reduction == "sum":
            return dtype.type(total)
        return dtype.type(np.float64(total) / np.float64(divisor))


def _grad_scale(reduction, divisor):
    if reduction != "mean":
        return 1.0
    return math.inf if divisor == 0 else 1.0 / float(divisor)


#: Submodules loaded on first attribute access (PEP 562): ``import xent_rs`` imports no
#: framework; an adapter whose framework is missing raises ImportError when first touched.
_SUBMODULES = ("calibration", "reference", "torch", "jax", "boosting", "dask", "cli")


def __getattr__(name):
    if name not in _SUBMODULES:
        raise AttributeError(f"module 'xent_rs' has no attribute {name!r}")
    import importlib

    return importlib.import_module(f"{__name__}.{name}")


def __dir__():
    return sorted(set(globals()) | set(_SUBMODULES))


def cross_entropy(logits, target, *, weight=None, ignore_index=-100, label_smoothing=0.0,
                  reduction="mean", return_grad=False, return_hess=False, return_lse=False,
                  out=None, z_loss=0.0, softcap=None):
    r"""Categorical cross-entropy from unnormalised logits (class axis last).

    Same semantics as ``torch.nn.functional.cross_entropy`` with the class axis moved from
    1 to -1. For a row with logits :math:`x`, :math:`p = \mathrm{softmax}(x)` and weighted
    target distribution :math:`q` (index target :math:`t`:
    :math:`q_j = (1-\varepsilon) w_t [j=t] + \varepsilon w_j / K`; probability target
    :math:`y`: :math:`q_j = w_j ((1-\varepsilon) y_j + \varepsilon/K)`), the loss is
    :math:`-\sum_j q_j \log p_j`, the gradient :math:`Q p - q` and the Hessian diagonal
    :math:`Q p (1-p)`, with :math:`Q = \sum_j q_j`.

    Two optional terms for large-vocabulary training. ``softcap`` :math:`c` first replaces
    the logits by :math:`c \tanh(x/c)` (logit soft-capping, Gemma Team 2024, "Gemma 2:
    Improving Open Language Models at a Practical Size", arXiv:2408.00118); everything
    above, ``z_loss`` and ``return_lse`` included, is then of the capped logits, while the
    gradient and Hessian are with respect to the raw logits (chain rule, with
    :math:`\partial y/\partial x = \mathrm{sech}^2(x/c)` computed as
    :math:`4e/(1+e)^2`, :math:`e = e^{-2|x|/c}`, so nothing overflows). A ``-inf`` logit
    stays ``-inf``: a masked class stays masked (zero probability and gradient) instead of
    becoming :math:`-c`. ``z_loss`` :math:`z` adds :math:`z\,\mathrm{lse}(x)^2` to every
    non-ignored row's loss (the auxiliary z-loss of Chowdhery et al. 2022, "PaLM: Scaling
    Language Modeling with Pathways", arXiv:2204.02311, §5), with gradient
    :math:`2 z\,\mathrm{lse}\,p` and Hessian diagonal
    :math:`2 z (p^2 + \mathrm{lse}\,p (1-p))`. It is not multiplied by class weights,
    and ``"mean"`` divides it by the number of non-ignored rows (all rows for probability
    targets), not by the total weight: the semantics of Liger-Kernel's
    ``LigerCrossEntropyLoss(lse_square_scale=z)`` (``ops/cross_entropy.py``: the per-row
    ``z_loss = lse_square_scale * lse * lse`` is added to the row loss, divided by
    ``n_non_ignore`` for the mean while the weighted CE term is divided by
    ``sum_non_ignore_weight``; label smoothing does not touch it).

    Parameters
    ----------
    logits : array_like, float16, bfloat16, float32 or float64, shape (..., K)
        Unnormalised scores; ``-inf`` masks a class. Read in place when C-contiguous.
        16-bit floats (float16, ``ml_dtypes.bfloat16``) are widened to float32 inside and
        rounded once on output.
    target : array_like
        Class indices of shape ``logits.shape[:-1]`` (values in ``[0, K)`` or
        ``ignore_index``): any integer dtype, or whole-valued floats (as XGBoost, LightGBM
        and pandas hand out labels); or float class probabilities of shape
        ``logits.shape``, used in their own precision (not rounded to the logits' dtype).
    weight : array_like, shape (K,), optional
        Finite, non-negative per-class weights.
    ignore_index : int, default -100
        Rows whose index target equals it contribute nothing (index targets only).
    label_smoothing : float in [0, 1], default 0
        Mixes the target with the uniform distribution, as PyTorch does.
    reduction : {"mean", "sum", "none"}
        ``"mean"`` divides by the total weight of non-ignored rows (index targets) or the
        number of rows (probabilities); a mean over nothing is NaN. ``"none"`` returns one
        loss per row (0 for ignored rows).
    return_grad, return_hess, return_lse : bool
        Also return the gradient, the Hessian diagonal (both with respect to the logits,
        scaled like the loss) and ``logsumexp(logits)`` per row.
    out : ndarray, optional
        Receives the gradient (needs ``return_grad=True``): shape and dtype of ``logits``,
        C-contiguous, writeable. ``out=logits`` overwrites the logits in place.
    z_loss : float >= 0, default 0
        The z-loss coefficient (PaLM uses 1e-4); per-row losses (``"none"``) include it.
    softcap : float > 0, optional
        The soft cap :math:`c` (Gemma 2 uses 30 for its final logits); ``None`` for none.

    Returns
    -------
    loss, [grad], [hess], [lse]
        ``loss`` is a NumPy scalar of the logits' dtype, float32 for 16-bit logits (a
        float16 mean keeps only 3 digits), or an array of the logits' dtype for ``"none"``;
        the others follow in this order when requested, as a tuple.

    Notes
    -----
    One fused pass per row (maximum, exponentials and their sum, gradient by rescaling the
    stored exponentials), accumulated in float64: float32 per-row losses are within about
    1e-7 relative of the exact value, including confident rows whose loss is tiny (the
    logarithm is taken as ``log1p`` of the non-maximal terms). Terms whose target mass is
    exactly zero are skipped, so a masked class costs nothing unless targeted; a row of all
    ``-inf`` or with a NaN gives NaN. ``z_loss`` costs next to nothing (a few operations per
    row). ``softcap`` keeps the same accuracy: :math:`\tanh` is evaluated in float64 and the
    capped row is shifted by its maximum in float64 before it is rounded to the working
    precision, which costs about 3 to 4 times the plain pass on float32 rows (AVX2).

    Examples
    --------
    >>> import numpy as np, xent_rs as xr
    >>> z = np.array([[1.0, 2.0, 3.0]])
    >>> float(xr.cross_entropy(z, np.array([2])))  # doctest: +ELLIPSIS
    0.40760596444...
    >>> float(xr.cross_entropy(z, np.array([[0.0, 0.0, 1.0]])))  # doctest: +ELLIPSIS
    0.40760596444...
    """
    x = _v.class_logits(logits)
    reduction = _v.reduction(reduction)
    return_grad = _v.flag(return_grad, "return_grad")
    return_hess = _v.flag(return_hess, "return_hess")
    return_lse = _v.flag(return_lse, "return_lse")
    eps = _v.label_smoothing(label_smoothing)
    z = _v.z_loss(z_loss)
    cap = _v.softcap(softcap)
    ignore_index = _v.integer(ignore_index, "ignore_index")
    if not -(2**63) <= ignore_index < 2**63:
        raise ValueError("ignore_index: must fit in a signed 64-bit integer")
    k = x.shape[-1]
    w = _v.class_weight(weight, k)
    kind, tgt = _v.cce_target(target, x)
    in_place = False
    if out is not None:
        if not return_grad:
            raise ValueError("out: given without return_grad=True (out receives the gradient)")
        out, in_place = _v.out_array(out, x)

    n = x.size // k
    if kind == "index":
        divisor = _core.cce_check_labels(tgt, k, ignore_index, w)
        labels, probs = tgt, None
        # The z-loss's mean divides by the number of non-ignored rows (Liger's n_non_ignore).
        kept = divisor if w is None or z == 0.0 else np.count_nonzero(tgt != ignore_index)
    else:
        divisor = kept = n
        labels, probs = None, tgt.reshape(-1)

    batch_shape = x.shape[:-1]
    losses = np.empty(batch_shape, dtype=x.dtype) if reduction == "none" else None
    lse = np.empty(batch_shape, dtype=x.dtype) if return_lse else None
    grad = (out if out is not None else np.empty_like(x)) if return_grad else None
    hess = np.empty_like(x) if return_hess else None
    total = _core.cce_forward_backward(
        grad if in_place else x, k, labels, probs, w, ignore_index, eps,
        divisor if reduction == "mean" else 1.0, return_lse,
        losses, lse, grad, hess, in_place,
        z, float(kept) if reduction == "mean" else 1.0, cap,
    )
    loss = losses if reduction == "none" else _reduced(total, divisor, reduction, x.dtype)
    return _pack(loss, grad, hess, lse)


def binary_cross_entropy_with_logits(logits, target, *, weight=None, pos_weight=None,
                                     label_smoothing=0.0, reduction="mean",
                                     return_grad=False, return_hess=False, out=None):
    r"""Sigmoid binary cross-entropy from logits, elementwise.

    Same semantics as ``torch.nn.functional.binary_cross_entropy_with_logits``:
    :math:`\ell = -w\,[p_w\, y \log\sigma(z) + (1-y)\log(1-\sigma(z))]`, computed stably as
    :math:`w\,[p_w y\,\mathrm{softplus}(-z) + (1-y)\,\mathrm{softplus}(z)]`.

    Parameters
    ----------
    logits : array_like, float16, bfloat16, float32 or float64, any shape
    target : array_like, same shape, values in [0, 1]
        Integer or bool targets are converted.
    weight : array_like, optional
        Finite, non-negative, broadcastable to ``logits``.
    pos_weight : array_like, optional
        Finite, non-negative weight of positive examples, broadcastable along the last axis
        (shape ``(C,)`` for logits ``(..., C)``).
    label_smoothing : float in [0, 1]
        Targets become ``y·(1−ε) + ε/2`` (as Keras and Optax).
    reduction : {"mean", "sum", "none"}
        ``"mean"`` divides by the number of elements (not the weights), as PyTorch.
    return_grad, return_hess : bool
        Also return the gradient :math:`w[(p_w y + 1 - y)\sigma(z) - p_w y]` and the Hessian
        diagonal :math:`w (p_w y + 1 - y)\sigma(z)(1-\sigma(z))`, scaled like the loss.
    out : ndarray, optional
        Receives the gradient, as for :func:`cross_entropy` (``out=logits`` works in place).

    Returns
    -------
    loss, [grad], [hess]

    Examples
    --------
    >>> import numpy as np, xent_rs as xr
    >>> float(xr.binary_cross_entropy_with_logits(np.array([0.0]), np.array([1.0])))
    0.6931471805599453
    """
    x = _v.float_array(logits)
    reduction = _v.reduction(reduction)
    return_grad = _v.flag(return_grad, "return_grad")
    return_hess = _v.flag(return_hess, "return_hess")
    eps = _v.label_smoothing(label_smoothing)
    y = _v.bce_target(target, x)
    w, w_full = _v.broadcast_factor(weight, "weight", x.shape)
    pw, pw_full = _v.broadcast_factor(pos_weight, "pos_weight", x.shape)
    in_place = False
    if out is not None:
        if not return_grad:
            raise ValueError("out: given without return_grad=True (out receives the gradient)")
        out, in_place = _v.out_array(out, x)
    last = x.shape[-1] if x.ndim else 1
    losses = np.empty_like(x) if reduction == "none" else None
    grad = (out if out is not None else np.empty_like(x)) if return_grad else None
    hess = np.empty_like(x) if return_hess else None
    total = _core.bce_forward_backward(
        (grad if in_place else x).reshape(-1), y.reshape(-1), last, w, w_full, pw, pw_full,
        eps, _grad_scale(reduction, x.size),
        None if losses is None else losses.reshape(-1),
        None if grad is None else grad.reshape(-1),
        None if hess is None else hess.reshape(-1),
        in_place,
    )
    loss = losses if reduction == "none" else _reduced(total, x.size, reduction, x.dtype)
    return _pack(loss, grad, hess, None)


def _rowwise(logits, out, kind):
    x = _v.class_logits(logits)
    if out is None:
        out, in_place = np.empty_like(x), False
    else:
        out, in_place = _v.out_array(out, x)
    _core.rowwise(out if in_place else x, out, x.shape[-1], kind, in_place)
    return out


def softmax(logits, *, out=None):
    r"""Softmax over the last axis: :math:`p_j = e^{x_j} / \sum_k e^{x_k}`, computed stably.

    Parameters
    ----------
    logits : array_like, float16, bfloat16, float32 or float64, shape (..., K)
        Unnormalised scores, class axis last (K ≥ 1); ``-inf`` masks a class.
    out : ndarray, optional
        Receives the result: shape and dtype of ``logits``, C-contiguous, writeable.
        ``out=logits`` overwrites the logits in place.

    Returns
    -------
    ndarray, shape and dtype of ``logits``
        The probabilities (``out`` itself when given); each row sums to 1 up to rounding.

    Notes
    -----
    One pass finds the row maximum :math:`m`; a second writes :math:`e^{x_j - m}` and adds
    them up (in float64) to :math:`S`; a third scales the row by :math:`1/S`. Nothing
    overflows, and float16 rows are widened inside and rounded once on output. A masked
    class (``-inf``) gets probability 0; a row of all ``-inf`` or with a NaN gives NaN.

    Examples
    --------
    >>> import numpy as np, xent_rs as xr
    >>> xr.softmax(np.array([0.0, np.log(3.0)]))
    array([0.25, 0.75])
    >>> xr.softmax(np.array([[1000.0, 1000.0, -np.inf]]))  # no overflow; masked class 0
    array([[0.5, 0.5, 0. ]])
    >>> xr.softmax(np.zeros((2, 4), dtype=np.float16)).dtype
    dtype('float16')
    """
    return _rowwise(logits, out, "softmax")


def log_softmax(logits, *, out=None):
    r"""Log-softmax over the last axis: :math:`x_j - \log \sum_k e^{x_k}`, computed stably.

    Parameters
    ----------
    logits : array_like, float16, bfloat16, float32 or float64, shape (..., K)
        As for :func:`softmax`.
    out : ndarray, optional
        As for :func:`softmax`: same shape and dtype as ``logits``, and may be ``logits``.

    Returns
    -------
    ndarray, shape and dtype of ``logits``
        The log-probabilities, all ≤ 0 (``out`` itself when given).

    Notes
    -----
    Computed as :math:`(x_j - m) - \log(1 + r)` with :math:`m` the row maximum and
    :math:`r = \sum_k e^{x_k - m} - 1` summed without the maximal term, so a confident row
    keeps full relative precision where ``log(softmax(x))`` would round to 0 or ``-inf``.
    A masked class gives ``-inf``; a row of all ``-inf`` or with a NaN gives NaN.

    Examples
    --------
    >>> import numpy as np, xent_rs as xr
    >>> xr.log_softmax(np.array([0.0, 0.0]))
    array([-0.69314718, -0.69314718])
    >>> float(xr.log_softmax(np.array([0.0, -50.0]))[0])  # log(1 + e^-50), not 0
    -1.9287498479639178e-22
    """
    return _rowwise(logits, out, "log_softmax")


def logsumexp(logits):
    r"""Log-sum-exp over the last axis: :math:`\log \sum_k e^{x_k}`, computed stably.

    Parameters
    ----------
    logits : array_like, float16, bfloat16, float32 or float64, shape (..., K)
        Unnormalised scores, class axis last (K ≥ 1); ``-inf`` masks a class.

    Returns
    -------
    ndarray, shape ``logits.shape[:-1]``, dtype of ``logits``
        One value per row (a 0-d array for 1-d input). This is the negative energy score
        used for out-of-distribution detection, and what ``cross_entropy(...,
        return_lse=True)`` also returns.

    Notes
    -----
    Computed as :math:`m + \log(1 + r)` with :math:`m` the row maximum and
    :math:`r = \sum_k e^{x_k - m} - 1` (the maximal term left out of the sum), so large
    logits do not overflow and a dominant logit is exact. A masked class (``-inf``) adds
    nothing; a row of all ``-inf``, or with a NaN, gives NaN (as the losses do).

    Examples
    --------
    >>> import numpy as np, xent_rs as xr
    >>> float(xr.logsumexp(np.array([1000.0, 1000.0])))  # doctest: +ELLIPSIS
    1000.693147...
    >>> xr.logsumexp(np.log(np.array([[1.0, 3.0], [2.0, 2.0]])))
    array([1.38629436, 1.38629436])
    >>> xr.logsumexp(np.zeros((3, 5, 2), dtype=np.float32)).shape
    (3, 5)
    """
    x = _v.class_logits(logits)
    out = np.empty(x.shape[:-1], dtype=x.dtype)
    _core.rowwise(x, out, x.shape[-1], "logsumexp", False)
    return out


def set_num_threads(n):
    """Set the number of threads xent_rs uses (results do not depend on it)."""
    n = _v.integer(n, "n")
    if not 1 <= n <= MAX_THREADS:
        raise ValueError(f"n: must be an integer in [1, {MAX_THREADS}], got {n}")
    _core.set_num_threads(n)


def get_num_threads():
    """The number of threads xent_rs uses (``XENT_RS_NUM_THREADS`` or the usable cores)."""
    return _core.get_num_threads()


# The cross-entropy variants (issue 12) and the losses that never build the logits matrix
# (issue 13) live in their own modules; their names are part of this package's API.
from . import _linear, _losses  # noqa: E402
from ._linear import *  # noqa: E402,F401,F403
from ._losses import *  # noqa: E402,F401,F403

__all__ += [*_losses.__all__, *_linear.__all__]
