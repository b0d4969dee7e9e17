r"""Cross-entropy custom objectives for XGBoost and LightGBM.

Each factory returns a callable that the library calls once per boosting round with the raw
margins and the training set; it answers the gradient and Hessian diagonal of the summed loss
with respect to the margins, computed by the fused kernels of :func:`xent_rs.cross_entropy`
(softmax margins ``(n, K)``) or :func:`xent_rs.binary_cross_entropy_with_logits` (sigmoid
margins ``(n,)``). Neither library is imported here: the callables read plain arrays and the
data set's ``get_label()`` and ``get_weight()``.

>>> import numpy as np
>>> from xent_rs.boosting import xgboost_objective
>>> class Data:  # stands in for an xgboost.DMatrix
...     def get_label(self): return np.array([0.0, 2.0], dtype=np.float32)
...     def get_weight(self): return np.array([], dtype=np.float32)
>>> grad, hess = xgboost_objective()(np.zeros((2, 3), dtype=np.float32), Data())
>>> grad.round(6)  # p - onehot(y), p = 1/3 (float32, to a few ulps)
array([[-0.666667,  0.333333,  0.333333],
       [ 0.333333,  0.333333, -0.666667]], dtype=float32)
>>> hess.round(6)  # 2 p (1 - p) = 4/9, as multi:softprob
array([[0.444444, 0.444444, 0.444444],
       [0.444444, 0.444444, 0.444444]], dtype=float32)
"""

from __future__ import annotations

from typing import Any, Callable, Literal, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _validate as _v
from . import binary_cross_entropy_with_logits, cross_entropy, log_softmax, softmax
from ._losses import focal_loss

__all__ = ["xgboost_objective", "lightgbm_objective"]

#: The ``hessian`` choices for softmax margins.
HESSIANS = ("exact", "xgboost", "lightgbm")

#: XGBoost's ``multi:softprob`` floors every Hessian entry at this value (``kRtEps``).
XGBOOST_HESSIAN_FLOOR = 1e-16

Hessian = Literal["exact", "xgboost", "lightgbm"]
Margins = NDArray[np.floating[Any]]
GradHess = tuple[Margins, Margins]


class LabelledData(Protocol):
    """What an objective reads from the training set: an ``xgboost.DMatrix`` or a
    ``lightgbm.Dataset`` (or anything else with these two methods)."""

    def get_label(self) -> ArrayLike | None:
        """The labels, one per row (floats)."""

    def get_weight(self) -> ArrayLike | None:
        """The sample weights, one per row; ``None`` or empty when there are none."""


Objective = Callable[[Margins, LabelledData], GradHess]


def xgboost_objective(*, weight: ArrayLike | None = None, label_smoothing: float = 0.0,
                      pos_weight: float | None = None,
                      hessian: Hessian = "xgboost", focal_gamma: float = 0.0) -> Objective:
    r"""A cross-entropy objective for ``xgboost.train(..., obj=...)``.

    Parameters
    ----------
    weight : array_like, shape (K,), optional
        Finite, non-negative per-class weights (softmax margins only), as
        :func:`xent_rs.cross_entropy`'s ``weight``.
    label_smoothing : float in [0, 1], default 0
        Softmax margins: the target mixes with the uniform distribution over the K classes.
        Sigmoid margins: labels become ``y·(1−ε) + ε/2``.
    pos_weight : float, optional
        Finite, non-negative weight of the positive class (sigmoid margins only), as
        XGBoost's ``scale_pos_weight``.
    hessian : {"xgboost", "exact", "lightgbm"}, default "xgboost"
        The Hessian diagonal for softmax margins: ``"exact"`` is :math:`Q p(1-p)`;
        ``"xgboost"`` is twice that times the sample weight, floored at 1e-16, as XGBoost's
        ``multi:softprob``; ``"lightgbm"`` is :math:`K/(K-1)` times the exact one, as
        LightGBM's ``multiclass``. Sigmoid margins always get :math:`p(1-p)` (times the
        weights), as both libraries' binary objectives.
    focal_gamma : float >= 0, default 0
        Softmax margins: the focal multiclass objective (:func:`xent_rs.focal_loss` with
        ``gamma=focal_gamma`` and the class weights as its ``alpha``) with its exact
        Hessian diagonal (see Notes), transformed by ``hessian`` as above. ``0`` is the
        cross-entropy objective, unchanged. Needs ``label_smoothing=0``.

    Returns
    -------
    callable
        ``obj(predt, dtrain) -> (grad, hess)``. ``predt``: the raw margins, ``(n, K)`` for a
        multi-class model (``num_class = K``), ``(n,)`` (or ``(n, 1)``) for a binary one, or
        the flat row-major ``(n·K,)`` of older XGBoost versions; ``dtrain``: the
        ``xgboost.DMatrix`` (its ``get_label()`` gives the labels as floats, whole numbers
        in ``[0, K)`` for softmax margins and values in ``[0, 1]`` for sigmoid ones; its
        ``get_weight()`` the sample weights). ``grad`` and ``hess`` have ``predt``'s shape
        and dtype.

    Raises
    ------
    ValueError, TypeError
        For a bad argument here; for bad margins, labels or weights when ``obj`` is called.
        Each message starts with the argument's name.

    See Also
    --------
    lightgbm_objective : the same objective for LightGBM.
    xent_rs.cross_entropy, xent_rs.binary_cross_entropy_with_logits : what computes it.

    Notes
    -----
    For a row with margins :math:`x`, :math:`p = \mathrm{softmax}(x)`, weighted target
    :math:`q` (its total :math:`Q`) and sample weight :math:`s`, the gradient is
    :math:`s\,(Q p - q)` (:math:`p - e_y` without class weights or smoothing), exactly
    ``multi:softprob``'s. To reproduce the built-in's trees, start both from the same
    margin: ``base_score=0`` for both with multi-class models; for binary ones the built-in
    reads ``base_score`` as a probability and a custom objective as a margin, so
    ``base_score=0.5`` for ``binary:logistic`` matches ``base_score=0`` here.

    The focal objective (Lin et al. 2017; ``focal_gamma`` :math:`=\gamma > 0`) of a row with
    label :math:`t` is :math:`\ell = -a_t u^\gamma \log p_t` with :math:`u = 1 - p_t`,
    :math:`L = -\log p_t` and :math:`a_t` the class weight. Its gradient is
    :math:`c\,(p - e_t)` with :math:`c = a_t u^\gamma (1 + \gamma p_t r)`, :math:`r = L/u`
    (:math:`\to 1` as :math:`p_t \to 1`). Differentiating once more,
    :math:`\partial c / \partial x_j = c'(p_t)\, p_t (\delta_{jt} - p_j)` with
    :math:`-c'(p_t)\,p_t = k = a_t \gamma p_t u^{\gamma-1} (2 - L + (\gamma-1) p_t r)`, so
    the exact Hessian diagonal is

    .. math:: H_{jj} = c\, p_j (1 - p_j) + k\,(p_j - \delta_{jt})^2 ,

    which is :math:`a_t p_j(1-p_j)` at :math:`\gamma = 0`. It is negative for badly
    classified rows when :math:`\gamma > 0` (the focal loss is not convex in the margins):
    ``hessian="xgboost"`` floors it at 1e-16, the other two pass it on as it is.

    Examples
    --------
    >>> import numpy as np, xgboost as xgb  # doctest: +SKIP
    >>> from sklearn.datasets import load_digits  # doctest: +SKIP
    >>> X, y = load_digits(return_X_y=True)  # doctest: +SKIP
    >>> dtrain = xgb.DMatrix(X, y)  # doctest: +SKIP
    >>> params = {"num_class": 10, "base_score": 0.0, "disable_default_eval_metric": 1}
    >>> bst = xgb.train(params, dtrain, 10, obj=xgboost_objective())  # doctest: +SKIP
    >>> bst.predict(dtrain, output_margin=True).shape  # doctest: +SKIP
    (1797, 10)
    """
    return _objective("row", weight, label_smoothing, pos_weight, hessian,
                      ("predt", "dtrain"), focal_gamma)


def lightgbm_objective(*, weight: ArrayLike | None = None, label_smoothing: float = 0.0,
                       pos_weight: float | None = None,
                       hessian: Hessian = "lightgbm", focal_gamma: float = 0.0) -> Objective:
    r"""A cross-entropy objective for LightGBM's ``params["objective"]``.

    Parameters
    ----------
    weight : array_like, shape (K,), optional
        Finite, non-negative per-class weights (softmax margins only).
    label_smoothing : float in [0, 1], default 0
        As for :func:`xgboost_objective`.
    pos_weight : float, optional
        Finite, non-negative weight of the positive class (sigmoid margins only), as
        LightGBM's ``scale_pos_weight``.
    hessian : {"lightgbm", "exact", "xgboost"}, default "lightgbm"
        As for :func:`xgboost_objective`; the default, :math:`K/(K-1)\,p(1-p)`, is
        LightGBM's ``multiclass`` Hessian.
    focal_gamma : float >= 0, default 0
        The focal multiclass objective, as for :func:`xgboost_objective` (LightGBM users'
        request microsoft/LightGBM#3706); ``0`` is cross-entropy, unchanged.

    Returns
    -------
    callable
        ``f(preds, train_data) -> (grad, hess)``. ``preds``: the raw scores, ``(n, K)`` for
        a multi-class model (LightGBM 4), ``(n,)`` for a binary one, or the flat
        class-major ``(K·n,)`` of LightGBM 3; ``train_data``: the ``lightgbm.Dataset``
        (labels from ``get_label()``, sample weights from ``get_weight()``). ``grad`` and
        ``hess`` have ``preds``' shape and dtype.

    Raises
    ------
    ValueError, TypeError
        As for :func:`xgboost_objective`.

    See Also
    --------
    xgboost_objective : the same objective for XGBoost.

    Notes
    -----
    LightGBM starts a built-in objective from the class priors (``boost_from_average``) and
    a custom one from 0: set ``boost_from_average=False`` on the built-in to compare them.
    With a custom objective, ``predict(..., raw_score=True)`` gives the margins.

    Examples
    --------
    >>> import lightgbm as lgb  # doctest: +SKIP
    >>> from sklearn.datasets import load_digits  # doctest: +SKIP
    >>> X, y = load_digits(return_X_y=True)  # doctest: +SKIP
    >>> params = {"objective": lightgbm_objective(), "num_class": 10, "verbose": -1}
    >>> booster = lgb.train(params, lgb.Dataset(X, y), 10)  # doctest: +SKIP
    >>> booster.predict(X, raw_score=True).shape  # doctest: +SKIP
    (1797, 10)
    """
    return _objective("class", weight, label_smoothing, pos_weight, hessian,
                      ("preds", "train_data"), focal_gamma)


def _objective(flat_order: Literal["row", "class"], weight: ArrayLike | None,
               label_smoothing: float, pos_weight: float | None, hessian: str,
               names: tuple[str, str], focal_gamma: float = 0.0) -> Objective:
    """Validate the factory's arguments once; the callable validates each call's data.

    ``flat_order`` is how a library lays out multi-class margins in one flat array:
    XGBoost row-major (``i·K + k``), LightGBM class-major (``k·n + i``).
    """
    hessian = _v.choice("hessian", hessian, HESSIANS)
    eps = _v.label_smoothing(label_smoothing)
    class_weight = None if weight is None else _v.nonneg_weights(weight, "weight")
    if class_weight is not None and class_weight.ndim != 1:
        raise ValueError(f"weight: must be one weight per class, shape (K,), got shape "
                         f"{class_weight.shape}")
    pw = None if pos_weight is None else _v.real(pos_weight, "pos_weight")
    if pw is not None and not (np.isfinite(pw) and pw >= 0):
        raise ValueError(f"pos_weight: must be finite and non-negative, got {pos_weight!r}")
    gamma = _v.nonneg_real(focal_gamma, "focal_gamma")
    if gamma != 0.0 and eps != 0.0:
        raise ValueError("focal_gamma: the focal objective takes no label_smoothing")
    if gamma != 0.0 and pw is not None:
        raise ValueError("focal_gamma: applies to softmax margins (n, K), not with pos_weight")
    margins_name, data_name = names

    def objective(margins: Margins, data: LabelledData) -> GradHess:
        z = _v.float_array(margins, margins_name)
        label = _v.array(data.get_label(), f"{data_name}.get_label()")
        if label.ndim != 1:
            raise ValueError(f"{data_name}.get_label(): must be one label per row, shape "
                             f"(n,), got shape {label.shape}")
        n = label.shape[0]
        sample_weight = _sample_weight(data.get_weight(), n, data_name)
        z2, restore = _as_rows(z, n, flat_order, margins_name)
        if z2.ndim == 1:
            if class_weight is not None:
                raise ValueError(f"weight: per-class weights need softmax margins (n, K); "
                                 f"{margins_name} are binary (n,): use pos_weight")
            if gamma != 0.0:
                raise ValueError(f"focal_gamma: applies to softmax margins (n, K); "
                                 f"{margins_name} are binary (n,)")
            grad, hess = _sigmoid(z2, label, sample_weight, eps, pw, data_name)
        else:
            if pw is not None:
                raise ValueError(f"pos_weight: applies to binary margins (n,); {margins_name} "
                                 f"have shape {z2.shape} (K = {z2.shape[1]} classes): use "
                                 f"weight")
            grad, hess = _softmax(z2, label, sample_weight, class_weight, eps, hessian,
                                  data_name, gamma)
        return restore(grad), restore(hess)

    return objective


def _sample_weight(value: ArrayLike | None, n: int, data_name: str) -> NDArray[np.float64] | None:
    """None (no weights: ``None`` or an empty array, as XGBoost reports none) or (n,)."""
    if value is None or np.size(value) == 0:
        return None
    arr: NDArray[np.float64] = _v.nonneg_weights(value, f"{data_name}.get_weight()")
    if arr.shape != (n,):
        raise ValueError(f"{data_name}.get_weight(): expected one weight per row, shape "
                         f"({n},), got {arr.shape}")
    return arr


def _as_rows(z: Margins, n: int, flat_order: str,
             name: str) -> tuple[Margins, Callable[[Margins], Margins]]:
    """The margins as (n,) (sigmoid) or C-contiguous (n, K) (softmax), and the map that puts
    a result of that shape back into the caller's layout."""
    if z.ndim == 2 and z.shape[0] == n:
        if z.shape[1] == 1:  # a single-output model: sigmoid margins as a column
            return z.reshape(n), lambda a: a.reshape(n, 1)
        return np.ascontiguousarray(z), lambda a: a
    if z.ndim == 1 and z.size == n:
        return z, lambda a: a
    if z.ndim == 1 and n > 0 and z.size % n == 0:
        k = z.size // n
        if flat_order == "row":
            return z.reshape(n, k), lambda a: a.reshape(-1)
        return np.ascontiguousarray(z.reshape(k, n).T), lambda a: a.T.reshape(-1)
    raise ValueError(f"{name}: shape {z.shape} does not match the {n} labels; expected "
                     f"({n},) (binary), ({n}, K) or a flat ({n}·K,) (K classes)")


def _softmax(z: Margins, label: NDArray[Any], sample_weight: NDArray[np.float64] | None,
             class_weight: NDArray[np.float64] | None, eps: float, hessian: str,
             data_name: str, gamma: float = 0.0) -> GradHess:
    k = z.shape[1]
    target = _v.labels(label, z.shape[0], k, name=f"{data_name}.get_label()")
    if class_weight is not None and class_weight.shape != (k,):
        raise ValueError(f"weight: must have shape ({k},) (one weight per class), got "
                         f"{class_weight.shape}")
    if gamma != 0.0:
        grad, hess = _focal(z, target, class_weight, gamma)
    else:
        _, grad, hess = cross_entropy(z, target, weight=class_weight, label_smoothing=eps,
                                      reduction="sum", return_grad=True, return_hess=True)
    # Each row's loss is independent, so a sample weight scales its row exactly.
    if sample_weight is not None:
        s = sample_weight.astype(z.dtype)[:, None]
        grad *= s
        hess *= s
    if hessian == "xgboost":
        hess *= 2
        np.maximum(hess, XGBOOST_HESSIAN_FLOOR, out=hess)
    elif hessian == "lightgbm":
        hess *= k / (k - 1)
    return grad, hess


def _focal(z: Margins, target: NDArray[Any], class_weight: NDArray[np.float64] | None,
           gamma: float) -> GradHess:
    """Gradient (the fused kernel's) and exact Hessian diagonal (see the Notes of
    :func:`xgboost_objective`) of the summed focal loss."""
    _, grad = focal_loss(z, target, gamma=gamma, alpha=class_weight, reduction="sum",
                         return_grad=True)
    # p (1 − p) without cancellation (the cross-entropy Hessian), p, and L = −log p_t.
    _, p1p = cross_entropy(z, target, reduction="none", return_hess=True)
    zf = z.astype(np.float64)
    p = softmax(zf)
    rows = np.arange(z.shape[0])
    nll = -log_softmax(zf)[rows, target]
    u = -np.expm1(-nll)  # 1 − p_t from L: exact as p_t → 1
    pt = p[rows, target]
    a = np.ones(z.shape[0]) if class_weight is None else class_weight[target]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        r = np.where(u > 0, nll / u, 1.0)
        c = a * u**gamma * (1 + gamma * pt * r)
        kk = np.where(u > 0, a * gamma * pt * u ** (gamma - 1) * (2 - nll + (gamma - 1) * pt * r),
                      0.0)
    d = p.copy()
    d[rows, target] = -u
    hess = c[:, None] * p1p.astype(np.float64) + kk[:, None] * d * d
    return grad, hess.astype(z.dtype)


def _sigmoid(z: Margins, label: NDArray[Any], sample_weight: NDArray[np.float64] | None,
             eps: float, pos_weight: float | None, data_name: str) -> GradHess:
    name = f"{data_name}.get_label()"
    if label.dtype.kind not in "biuf":
        raise TypeError(f"{name}: must be real numbers, got {_v.kind_name(label.dtype)} dtype "
                        f"({label.dtype})")
    if np.isnan(label).any():
        raise ValueError(f"{name}: binary labels must lie in [0, 1], found NaN")
    if label.size and not (label.min() >= 0 and label.max() <= 1):
        raise ValueError(f"{name}: binary labels must lie in [0, 1], got values in "
                         f"[{label.min()}, {label.max()}]")
    _, grad, hess = binary_cross_entropy_with_logits(
        z, label.astype(np.float64), weight=sample_weight, pos_weight=pos_weight,
        label_smoothing=eps, reduction="sum", return_grad=True, return_hess=True)
    return grad, hess
