"""Type-checked by tests/test_stubs.py with ``mypy --strict`` against the shipped stubs (not
collected by pytest, never run): every line states a type the stubs must give."""

from __future__ import annotations

from typing import Any, Tuple

import numpy as np
import numpy.typing as npt

import xent_rs as xr
from xent_rs import _core, reference

FloatArray = npt.NDArray[np.floating[Any]]


def losses(z: FloatArray, y: npt.NDArray[np.int64]) -> Tuple[float, Tuple[int, ...]]:
    mean: float = float(xr.cross_entropy(z, y))
    total: np.floating[Any] = xr.cross_entropy(z, y, reduction="sum", weight=[1.0, 2.0])
    rows: Tuple[int, ...] = xr.cross_entropy(z, y, reduction="none").shape
    loss, grad = xr.cross_entropy(z, y, return_grad=True)
    grad_rows: FloatArray = grad[0]
    loss_rows, grad2 = xr.cross_entropy(z, y, reduction="none", return_grad=True, out=z)
    first: np.floating[Any] = loss_rows[0]
    loss3, grad3, hess3 = xr.cross_entropy(z, y, return_grad=True, return_hess=True)
    loss4, lse = xr.cross_entropy(z, y, return_lse=True, label_smoothing=0.1)
    _, _, _, lse5 = xr.cross_entropy(z, y, return_grad=True, return_hess=True,
                                    return_lse=True, ignore_index=-1)
    flag = bool(y.size)
    anything = xr.cross_entropy(z, y, return_grad=flag)  # not a literal: the union
    bce: float = float(xr.binary_cross_entropy_with_logits(z, z, pos_weight=[2.0]))
    b_loss, b_grad, b_hess = xr.binary_cross_entropy_with_logits(
        z, z, reduction="none", return_grad=True, return_hess=True)
    b_shape: Tuple[int, ...] = b_loss.shape
    p: FloatArray = xr.softmax(z)
    lp: FloatArray = xr.log_softmax(z, out=z)
    s: FloatArray = xr.logsumexp(z)
    xr.set_num_threads(xr.get_num_threads())
    r: float = float(reference.cross_entropy(z, y))
    r_loss, r_grad = reference.cross_entropy(z, y, return_grad=True)  # Any: a tuple
    r_rows: Tuple[int, ...] = reference.cross_entropy(z, y, reduction="none").shape
    rs: FloatArray = reference.softmax(z) + reference.log_softmax(z)
    path: str = _core.simd_path()
    return mean + float(total) + float(loss) + float(loss3) + float(loss4) + float(first) + \
        bce + r, rows + b_shape
