"""Diagnostics of a cross-entropy loss: where it comes from (per class, confidently wrong
rows), and how dependent multi-label targets are (which head they need)."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from .. import _validate as _v
from . import _rows
from ._results import LossBreakdown


def loss_breakdown(logits: ArrayLike, labels: ArrayLike, *,
                   threshold: float = 0.01) -> LossBreakdown:
    r"""Where the cross-entropy comes from: per class, and from confidently wrong predictions.

    The loss of a row is :math:`\ell_i = \operatorname{logsumexp}(z_i) - z_{i,y_i}`. Per class
    :math:`k` (over the rows labelled :math:`k`) this reports the mean loss, the count, the
    accuracy and the share :math:`\sum_{y_i = k} \ell_i / \sum_i \ell_i` of the total loss.
    A row is *confidently wrong* when its labelled class gets probability below ``threshold``
    (:math:`\ell_i > -\log(\text{threshold})`; for :math:`K \le 1/\text{threshold}` such a row
    is always misclassified). A few such rows often dominate a mean cross-entropy: label
    noise, or a model that is over-confident where it errs.

    Parameters
    ----------
    logits : array_like, float, shape (N, K) or (N,)
        ``(N,)``: binary (sigmoid) logits, reported as the two classes 0 and 1.
    labels : array_like, int, shape (N,)
    threshold : float, default 0.01
        In ``(0, 1]``.

    Returns
    -------
    LossBreakdown
        ``class_loss``, ``class_count``, ``class_accuracy``, ``class_loss_share`` (arrays
        of shape (K,)), ``mean_loss``, ``accuracy``, ``threshold``,
        ``confident_wrong_count`` and ``confident_wrong_share`` (NaN when the total loss
        is 0).

    Raises
    ------
    ValueError
        For bad arguments, empty input, or a labelled class with logit ``-inf`` (infinite
        loss).

    Examples
    --------
    >>> import numpy as np
    >>> from xent_rs.calibration import loss_breakdown
    >>> z = np.array([[4.0, 0.0], [3.0, 0.0], [0.0, 6.0], [0.0, 1.0]])
    >>> b = loss_breakdown(z, np.array([0, 0, 0, 1]))
    >>> b.class_count.tolist(), b.class_accuracy.tolist()
    ([3, 1], [0.6666666666666666, 1.0])
    >>> b.confident_wrong_count, round(b.confident_wrong_share, 3)
    (1, 0.94)
    """
    threshold = _v.real(threshold, "threshold")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold: must lie in (0, 1], got {threshold}")
    z, labels, _ = _v.logits_and_labels(logits, labels, None)
    k = z.shape[1]
    loss, correct = _rows.cross_entropy_rows(z, labels)
    if np.isnan(loss).any():
        raise ValueError("logits: a row's loss is undefined (a binary logit of +inf); pass "
                         "finite logits")
    if np.isinf(loss).any():
        raise ValueError("labels: a row's loss is infinite (its labelled class has logit -inf, "
                         "or the loss exceeds the float64 range)")
    count = np.bincount(labels, minlength=k)
    loss_sum = np.bincount(labels, weights=loss, minlength=k)
    hits = np.bincount(labels, weights=correct, minlength=k)
    total = loss.sum()
    wrong = loss > -math.log(threshold)
    with np.errstate(invalid="ignore", divide="ignore"):
        present = count > 0
        class_loss = np.where(present, loss_sum / np.maximum(count, 1), np.nan)
        class_acc = np.where(present, hits / np.maximum(count, 1), np.nan)
        share = loss_sum / total if total > 0 else np.full(k, np.nan)
        wrong_share = float(loss[wrong].sum() / total) if total > 0 else math.nan
    return LossBreakdown(class_loss=class_loss, class_count=count.astype(np.int64),
                         class_accuracy=class_acc, class_loss_share=share,
                         mean_loss=float(total / len(loss)), accuracy=float(correct.mean()),
                         threshold=threshold, confident_wrong_count=int(wrong.sum()),
                         confident_wrong_share=wrong_share)


def label_dependence(targets: ArrayLike) -> np.ndarray:
    r"""Pairwise mutual information (nats) between the binary label columns of multi-label data.

    .. math::

        I(Y_a; Y_b) = \sum_{u, v \in \{0, 1\}} p_{ab}(u, v)
        \log \frac{p_{ab}(u, v)}{p_a(u)\, p_b(v)}

    from the empirical joint frequencies (:math:`0 \log 0 = 0`); the diagonal holds each
    label's entropy :math:`H(Y_a) = I(Y_a; Y_a)`.

    Why it matters for the choice of head: a softmax over the four joint combinations of a
    pair can express any joint distribution, so the best expected loss it can reach is the
    joint entropy :math:`H(Y_a, Y_b)`; two independent sigmoid (BCE) heads model
    :math:`p(a)\,p(b)`, whose best expected loss is :math:`H(Y_a) + H(Y_b)`. Since
    :math:`H(Y_a) + H(Y_b) - H(Y_a, Y_b) = I(Y_a; Y_b)`, the mutual information is exactly
    the expected cross-entropy (nats per sample) that independent heads give up against the
    joint softmax. Computed from the labels alone, this is the gap for models of the label
    distribution without inputs; for a model with inputs :math:`x` the gap is the conditional
    mutual information :math:`I(Y_a; Y_b \mid X)`, which the features may explain away (or,
    more rarely, increase). Near-zero entries say independent heads lose nothing; large ones
    say the pair should share a softmax (or the model should capture the dependence).

    Parameters
    ----------
    targets : array_like, shape (N, L)
        0/1 labels (bool, integer, or float equal to 0 or 1), one column per label.

    Returns
    -------
    ndarray, float64, shape (L, L)
        Symmetric, non-negative; entry ``[a, b]`` is :math:`I(Y_a; Y_b)` in nats.

    Raises
    ------
    TypeError, ValueError
        For a non-numeric array, a shape other than (N, L), values other than 0/1, or
        ``N = 0``.

    Examples
    --------
    >>> import numpy as np
    >>> from xent_rs.calibration import label_dependence
    >>> y = np.array([[0, 0, 1], [0, 1, 1], [1, 0, 0], [1, 1, 0]])
    >>> label_dependence(y).round(4)
    array([[0.6931, 0.    , 0.6931],
           [0.    , 0.6931, 0.    ],
           [0.6931, 0.    , 0.6931]])
    """
    arr = _v.array(targets, "targets")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"targets: must be a 0/1 array, got {_v.kind_name(arr.dtype)} dtype "
                        f"({arr.dtype})")
    if arr.ndim != 2:
        raise ValueError(f"targets: must have shape (N, L), got {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError("targets: empty input (N = 0); the mutual information is undefined")
    if not ((arr == 0) | (arr == 1)).all():
        raise ValueError("targets: values must be 0 or 1")
    t = arr.astype(np.float64)
    n = float(t.shape[0])
    n11 = t.T @ t                        # co-occurrence counts, exact below 2**53
    n1 = np.diag(n11).copy()
    n10 = n1[:, None] - n11
    n01 = n1[None, :] - n11
    n00 = n - n1[:, None] - n1[None, :] + n11
    p1 = n1 / n
    p0 = 1.0 - p1
    mi = np.zeros_like(n11)
    with np.errstate(divide="ignore", invalid="ignore"):
        for count, pa, pb in ((n11, p1[:, None], p1[None, :]), (n10, p1[:, None], p0[None, :]),
                              (n01, p0[:, None], p1[None, :]), (n00, p0[:, None], p0[None, :])):
            pj = count / n
            mi += np.where(pj > 0, pj * np.log(pj / (pa * pb)), 0.0)
    mi = np.maximum(mi, 0.0)  # clip rounding below zero
    return (mi + mi.T) / 2.0