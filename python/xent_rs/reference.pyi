"""Type stubs for ``xent_rs.reference``: the plain-NumPy float64 definitions (same signatures
as the fast functions, without ``out``; everything is returned in float64)."""

from typing import Any, Dict, Literal, Optional, Tuple, Union, overload

import numpy as np
import numpy.typing as npt

__all__: list[str]

FloatArray = npt.NDArray[np.float64]
Scalar = np.float64
Reduced = Literal["mean", "sum"]
Reduction = Literal["mean", "sum", "none"]
Loss = Union[Scalar, FloatArray]
Result = Union[Loss, Tuple[Loss, FloatArray], Tuple[Loss, FloatArray, FloatArray],
               Tuple[Loss, FloatArray, FloatArray, FloatArray]]
_No = Literal[False]
_Yes = Literal[True]
Norm = Literal["l1", "l2", "max"]
Strategy = Literal["uniform", "quantile"]
Convention = Literal["right", "torchmetrics"]

def logsumexp(logits: npt.ArrayLike) -> FloatArray: ...
def log_softmax(logits: npt.ArrayLike) -> FloatArray: ...
def softmax(logits: npt.ArrayLike) -> FloatArray: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    ignore_index: int = ..., label_smoothing: float = ...,
    reduction: Reduced = ...,
    return_grad: _No = ..., return_hess: _No = ..., return_lse: _No = ...,
) -> Scalar: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    ignore_index: int = ..., label_smoothing: float = ...,
    reduction: Reduced = ...,
    return_grad: _No = ..., return_hess: _No = ..., return_lse: _Yes,
) -> Tuple[Scalar, FloatArray]: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    ignore_index: int = ..., label_smoothing: float = ...,
    reduction: Reduced = ...,
    return_grad: _No = ..., return_hess: _Yes, return_lse: _No = ...,
) -> Tuple[Scalar, FloatArray]: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    ignore_index: int = ..., label_smoothing: float = ...,
    reduction: Reduced = ...,
    return_grad: _No = ..., return_hess: _Yes, return_lse: _Yes,
) -> Tuple[Scalar, FloatArray, FloatArray]: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    ignore_index: int = ..., label_smoothing: float = ...,
    reduction: Reduced = ...,
    return_grad: _Yes, return_hess: _No = ..., return_lse: _No = ...,
) -> Tuple[Scalar, FloatArray]: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    ignore_index: int = ..., label_smoothing: float = ...,
    reduction: Reduced = ...,
    return_grad: _Yes, return_hess: _No = ..., return_lse: _Yes,
) -> Tuple[Scalar, FloatArray, FloatArray]: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    ignore_index: int = ..., label_smoothing: float = ...,
    reduction: Reduced = ...,
    return_grad: _Yes, return_hess: _Yes, return_lse: _No = ...,
) -> Tuple[Scalar, FloatArray, FloatArray]: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    ignore_index: int = ..., label_smoothing: float = ...,
    reduction: Reduced = ...,
    return_grad: _Yes, return_hess: _Yes, return_lse: _Yes,
) -> Tuple[Scalar, FloatArray, FloatArray, FloatArray]: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    ignore_index: int = ..., label_smoothing: float = ...,
    reduction: Literal["none"],
    return_grad: _No = ..., return_hess: _No = ..., return_lse: _No = ...,
) -> FloatArray: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    ignore_index: int = ..., label_smoothing: float = ...,
    reduction: Literal["none"],
    return_grad: _No = ..., return_hess: _No = ..., return_lse: _Yes,
) -> Tuple[FloatArray, FloatArray]: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    ignore_index: int = ..., label_smoothing: float = ...,
    reduction: Literal["none"],
    return_grad: _No = ..., return_hess: _Yes, return_lse: _No = ...,
) -> Tuple[FloatArray, FloatArray]: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    ignore_index: int = ..., label_smoothing: float = ...,
    reduction: Literal["none"],
    return_grad: _No = ..., return_hess: _Yes, return_lse: _Yes,
) -> Tuple[FloatArray, FloatArray, FloatArray]: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    ignore_index: int = ..., label_smoothing: float = ...,
    reduction: Literal["none"],
    return_grad: _Yes, return_hess: _No = ..., return_lse: _No = ...,
) -> Tuple[FloatArray, FloatArray]: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    ignore_index: int = ..., label_smoothing: float = ...,
    reduction: Literal["none"],
    return_grad: _Yes, return_hess: _No = ..., return_lse: _Yes,
) -> Tuple[FloatArray, FloatArray, FloatArray]: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    ignore_index: int = ..., label_smoothing: float = ...,
    reduction: Literal["none"],
    return_grad: _Yes, return_hess: _Yes, return_lse: _No = ...,
) -> Tuple[FloatArray, FloatArray, FloatArray]: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    ignore_index: int = ..., label_smoothing: float = ...,
    reduction: Literal["none"],
    return_grad: _Yes, return_hess: _Yes, return_lse: _Yes,
) -> Tuple[FloatArray, FloatArray, FloatArray, FloatArray]: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    ignore_index: int = ..., label_smoothing: float = ...,
    reduction: Reduction = ...,
    return_grad: bool = ..., return_hess: bool = ..., return_lse: bool = ...,
) -> Result: ...
@overload
def binary_cross_entropy_with_logits(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    pos_weight: Optional[npt.ArrayLike] = ..., label_smoothing: float = ...,
    reduction: Reduced = ...,
    return_grad: _No = ..., return_hess: _No = ...,
) -> Scalar: ...
@overload
def binary_cross_entropy_with_logits(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    pos_weight: Optional[npt.ArrayLike] = ..., label_smoothing: float = ...,
    reduction: Reduced = ...,
    return_grad: _No = ..., return_hess: _Yes,
) -> Tuple[Scalar, FloatArray]: ...
@overload
def binary_cross_entropy_with_logits(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    pos_weight: Optional[npt.ArrayLike] = ..., label_smoothing: float = ...,
    reduction: Reduced = ...,
    return_grad: _Yes, return_hess: _No = ...,
) -> Tuple[Scalar, FloatArray]: ...
@overload
def binary_cross_entropy_with_logits(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    pos_weight: Optional[npt.ArrayLike] = ..., label_smoothing: float = ...,
    reduction: Reduced = ...,
    return_grad: _Yes, return_hess: _Yes,
) -> Tuple[Scalar, FloatArray, FloatArray]: ...
@overload
def binary_cross_entropy_with_logits(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    pos_weight: Optional[npt.ArrayLike] = ..., label_smoothing: float = ...,
    reduction: Literal["none"],
    return_grad: _No = ..., return_hess: _No = ...,
) -> FloatArray: ...
@overload
def binary_cross_entropy_with_logits(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    pos_weight: Optional[npt.ArrayLike] = ..., label_smoothing: float = ...,
    reduction: Literal["none"],
    return_grad: _No = ..., return_hess: _Yes,
) -> Tuple[FloatArray, FloatArray]: ...
@overload
def binary_cross_entropy_with_logits(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    pos_weight: Optional[npt.ArrayLike] = ..., label_smoothing: float = ...,
    reduction: Literal["none"],
    return_grad: _Yes, return_hess: _No = ...,
) -> Tuple[FloatArray, FloatArray]: ...
@overload
def binary_cross_entropy_with_logits(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    pos_weight: Optional[npt.ArrayLike] = ..., label_smoothing: float = ...,
    reduction: Literal["none"],
    return_grad: _Yes, return_hess: _Yes,
) -> Tuple[FloatArray, FloatArray, FloatArray]: ...
@overload
def binary_cross_entropy_with_logits(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    pos_weight: Optional[npt.ArrayLike] = ..., label_smoothing: float = ...,
    reduction: Reduction = ...,
    return_grad: bool = ..., return_hess: bool = ...,
) -> Result: ...
def reliability_curve(
    probs: npt.ArrayLike, labels: npt.ArrayLike, *, n_bins: int = ..., strategy: Strategy = ...,
    convention: Convention = ..., from_logits: bool = ...,
    sample_weight: Optional[npt.ArrayLike] = ...,
) -> Tuple[FloatArray, FloatArray, FloatArray, FloatArray]: ...
def calibration_error(
    probs: npt.ArrayLike, labels: npt.ArrayLike, *, n_bins: int = ..., norm: Norm = ...,
    strategy: Strategy = ..., convention: Convention = ..., from_logits: bool = ...,
    sample_weight: Optional[npt.ArrayLike] = ...,
) -> float: ...
def brier_score(
    probs: npt.ArrayLike, labels: npt.ArrayLike, *, from_logits: bool = ...,
    sample_weight: Optional[npt.ArrayLike] = ...,
) -> float: ...
def brier_decomposition(
    probs: npt.ArrayLike, labels: npt.ArrayLike, *, n_bins: int = ..., strategy: Strategy = ...,
    convention: Convention = ..., from_logits: bool = ...,
    sample_weight: Optional[npt.ArrayLike] = ...,
) -> Dict[str, float]: ...
def negative_log_likelihood(
    probs: npt.ArrayLike, labels: npt.ArrayLike, *, from_logits: bool = ...,
    sample_weight: Optional[npt.ArrayLike] = ...,
) -> float: ...
def temperature_objective(
    logits: npt.ArrayLike, labels: npt.ArrayLike, beta: float,
    weight: Optional[npt.ArrayLike] = ...,
) -> Tuple[float, float]: ...
def fit_temperature(
    logits: npt.ArrayLike, labels: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
) -> float: ...
def energy_score(logits: npt.ArrayLike, *, temperature: float = ...) -> FloatArray: ...
def loss_breakdown(
    logits: npt.ArrayLike, labels: npt.ArrayLike, *, threshold: float = ...,
) -> Dict[str, Any]: ...
def label_dependence(targets: npt.ArrayLike) -> FloatArray: ...
