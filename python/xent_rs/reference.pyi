"""Type stubs for ``xent_rs.reference``: the plain-NumPy float64 definitions (the fast
functions' signatures without ``out``; everything is returned in float64)."""

from typing import Any, Dict, Literal, Optional, Tuple, overload

import numpy as np
import numpy.typing as npt

from ._typing import No, Reduced, Reduction, Unreduced

__all__: list[str]

Array64 = npt.NDArray[np.float64]
Norm = Literal["l1", "l2", "max"]
Strategy = Literal["uniform", "quantile"]
Convention = Literal["right", "torchmetrics"]

def logsumexp(logits: npt.ArrayLike) -> Array64: ...
def log_softmax(logits: npt.ArrayLike) -> Array64: ...
def softmax(logits: npt.ArrayLike) -> Array64: ...
# Precise for the loss alone; with a return_* flag, Any (the tuple: the fast functions' stubs
# type every combination).
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    ignore_index: int = ..., label_smoothing: float = ..., reduction: Reduced = ...,
    return_grad: No = ..., return_hess: No = ..., return_lse: No = ...,
    z_loss: float = ..., softcap: Optional[float] = ...,
) -> np.float64: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    ignore_index: int = ..., label_smoothing: float = ..., reduction: Unreduced,
    return_grad: No = ..., return_hess: No = ..., return_lse: No = ...,
    z_loss: float = ..., softcap: Optional[float] = ...,
) -> Array64: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    ignore_index: int = ..., label_smoothing: float = ..., reduction: Reduction = ...,
    return_grad: bool = ..., return_hess: bool = ..., return_lse: bool = ...,
    z_loss: float = ..., softcap: Optional[float] = ...,
) -> Any: ...
@overload
def binary_cross_entropy_with_logits(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    pos_weight: Optional[npt.ArrayLike] = ..., label_smoothing: float = ...,
    reduction: Reduced = ..., return_grad: No = ..., return_hess: No = ...,
) -> np.float64: ...
@overload
def binary_cross_entropy_with_logits(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    pos_weight: Optional[npt.ArrayLike] = ..., label_smoothing: float = ...,
    reduction: Unreduced, return_grad: No = ..., return_hess: No = ...,
) -> Array64: ...
@overload
def binary_cross_entropy_with_logits(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    pos_weight: Optional[npt.ArrayLike] = ..., label_smoothing: float = ...,
    reduction: Reduction = ..., return_grad: bool = ..., return_hess: bool = ...,
) -> Any: ...
def reliability_curve(
    probs: npt.ArrayLike, labels: npt.ArrayLike, *, n_bins: int = ..., strategy: Strategy = ...,
    convention: Convention = ..., from_logits: bool = ...,
    sample_weight: Optional[npt.ArrayLike] = ...,
) -> Tuple[Array64, Array64, Array64, Array64]: ...
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
def energy_score(logits: npt.ArrayLike, *, temperature: float = ...) -> Array64: ...
def loss_breakdown(
    logits: npt.ArrayLike, labels: npt.ArrayLike, *, threshold: float = ...,
) -> Dict[str, Any]: ...
def label_dependence(targets: npt.ArrayLike) -> Array64: ...

# --- cross-entropy variants (issue 12) ---
def focal_loss(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, gamma: float = ...,
    alpha: Optional[npt.ArrayLike] = ..., ignore_index: int = ..., label_smoothing: float = ...,
    reduction: Reduction = ..., return_grad: bool = ...,
) -> Any: ...
def sigmoid_focal_loss(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, alpha: float = ..., gamma: float = ...,
    reduction: Reduction = ..., return_grad: bool = ...,
) -> Any: ...
def poly1_cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, epsilon: float = ...,
    ignore_index: int = ..., label_smoothing: float = ..., reduction: Reduction = ...,
    return_grad: bool = ...,
) -> Any: ...
def generalized_cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, q: float = ..., ignore_index: int = ...,
    reduction: Reduction = ..., return_grad: bool = ...,
) -> Any: ...
def energy_margin_loss(
    logits_in: npt.ArrayLike, logits_out: npt.ArrayLike, *, m_in: float = ...,
    m_out: float = ..., temperature: float = ..., return_grad: bool = ...,
) -> Any: ...

# --- bootstrap (issue 15) ---
def debiased_calibration_error(
    probs: npt.ArrayLike, labels: npt.ArrayLike, *, n_bins: int = ..., strategy: Strategy = ...,
    convention: Convention = ..., from_logits: bool = ...,
    sample_weight: Optional[npt.ArrayLike] = ...,
) -> float: ...
def classwise_calibration_error(
    probs: npt.ArrayLike, labels: npt.ArrayLike, *, n_bins: int = ..., norm: Norm = ...,
    strategy: Strategy = ..., convention: Convention = ..., from_logits: bool = ...,
    sample_weight: Optional[npt.ArrayLike] = ...,
) -> float: ...
def smooth_calibration_error(
    probs: npt.ArrayLike, labels: npt.ArrayLike, *, from_logits: bool = ...,
    sample_weight: Optional[npt.ArrayLike] = ..., mesh: int = ...,
) -> float: ...
def poisson_bootstrap_weights(bins: npt.ArrayLike, n_resamples: int, seed: int) -> Array64: ...
def bootstrap_metric(
    metric: str, probs: npt.ArrayLike, labels: npt.ArrayLike, weights: npt.ArrayLike, *,
    n_bins: int = ..., strategy: Strategy = ..., convention: Convention = ...,
    from_logits: bool = ..., sample_weight: Optional[npt.ArrayLike] = ...,
) -> Array64: ...
def vector_scaling_objective(
    logits: npt.ArrayLike, labels: npt.ArrayLike, w: npt.ArrayLike, b: npt.ArrayLike,
) -> Tuple[float, Array64, Array64]: ...

# --- linear cross-entropy and InfoNCE (issue 13) ---
def linear_cross_entropy(
    hidden: npt.ArrayLike, weight: npt.ArrayLike, target: npt.ArrayLike, *,
    bias: Optional[npt.ArrayLike] = ..., ignore_index: int = ..., label_smoothing: float = ...,
    z_loss: float = ..., softcap: Optional[float] = ..., reduction: Reduction = ...,
    return_grad: bool = ..., chunk_size: Optional[int] = ...,
) -> Any: ...
def info_nce(
    a: npt.ArrayLike, b: npt.ArrayLike, *, temperature: float = ..., symmetric: bool = ...,
    reduction: Reduction = ..., return_grad: bool = ...,
) -> Any: ...
