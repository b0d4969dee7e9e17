"""Type stubs for the public xent_rs API (the contract is ``docs/api.md``).

The losses are overloaded on ``reduction`` and the ``return_*`` flags (as literals), so the
type of what they return follows what was asked for::

    loss = xr.cross_entropy(z, y)                        # np.floating: float(loss)
    losses = xr.cross_entropy(z, y, reduction="none")    # ndarray: losses.shape
    loss, grad = xr.cross_entropy(z, y, return_grad=True)

The other keyword arguments (``weight``, ``ignore_index``, ``label_smoothing``, ``out``, ...)
are the same in every overload and are typed once, by the ``*Options`` dictionaries. Flags
that are plain ``bool`` values (not literals) give ``Any``.
"""

from typing import Any, Optional, Tuple, TypedDict, overload

import numpy as np
import numpy.typing as npt
from typing_extensions import Unpack

from ._typing import FloatArray, No, Reduced, Reduction, Unreduced, Yes

__version__: str
__all__: list[str]
MAX_THREADS: int

#: A reduced loss: a NumPy float scalar (of the logits' dtype).
Scalar = np.floating[Any]

class CrossEntropyOptions(TypedDict, total=False):
    weight: Optional[npt.ArrayLike]
    ignore_index: int
    label_smoothing: float
    out: Optional[FloatArray]
    z_loss: float
    softcap: Optional[float]

class BCEOptions(TypedDict, total=False):
    weight: Optional[npt.ArrayLike]
    pos_weight: Optional[npt.ArrayLike]
    label_smoothing: float
    out: Optional[FloatArray]

@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, reduction: Reduced = ...,
    return_grad: No = ..., return_hess: No = ..., return_lse: No = ...,
    **options: Unpack[CrossEntropyOptions],
) -> Scalar: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, reduction: Reduced = ...,
    return_grad: No = ..., return_hess: No = ..., return_lse: Yes,
    **options: Unpack[CrossEntropyOptions],
) -> Tuple[Scalar, FloatArray]: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, reduction: Reduced = ...,
    return_grad: No = ..., return_hess: Yes, return_lse: No = ...,
    **options: Unpack[CrossEntropyOptions],
) -> Tuple[Scalar, FloatArray]: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, reduction: Reduced = ...,
    return_grad: No = ..., return_hess: Yes, return_lse: Yes,
    **options: Unpack[CrossEntropyOptions],
) -> Tuple[Scalar, FloatArray, FloatArray]: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, reduction: Reduced = ...,
    return_grad: Yes, return_hess: No = ..., return_lse: No = ...,
    **options: Unpack[CrossEntropyOptions],
) -> Tuple[Scalar, FloatArray]: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, reduction: Reduced = ...,
    return_grad: Yes, return_hess: No = ..., return_lse: Yes,
    **options: Unpack[CrossEntropyOptions],
) -> Tuple[Scalar, FloatArray, FloatArray]: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, reduction: Reduced = ...,
    return_grad: Yes, return_hess: Yes, return_lse: No = ...,
    **options: Unpack[CrossEntropyOptions],
) -> Tuple[Scalar, FloatArray, FloatArray]: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, reduction: Reduced = ...,
    return_grad: Yes, return_hess: Yes, return_lse: Yes,
    **options: Unpack[CrossEntropyOptions],
) -> Tuple[Scalar, FloatArray, FloatArray, FloatArray]: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, reduction: Unreduced,
    return_grad: No = ..., return_hess: No = ..., return_lse: No = ...,
    **options: Unpack[CrossEntropyOptions],
) -> FloatArray: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, reduction: Unreduced,
    return_grad: No = ..., return_hess: No = ..., return_lse: Yes,
    **options: Unpack[CrossEntropyOptions],
) -> Tuple[FloatArray, FloatArray]: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, reduction: Unreduced,
    return_grad: No = ..., return_hess: Yes, return_lse: No = ...,
    **options: Unpack[CrossEntropyOptions],
) -> Tuple[FloatArray, FloatArray]: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, reduction: Unreduced,
    return_grad: No = ..., return_hess: Yes, return_lse: Yes,
    **options: Unpack[CrossEntropyOptions],
) -> Tuple[FloatArray, FloatArray, FloatArray]: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, reduction: Unreduced,
    return_grad: Yes, return_hess: No = ..., return_lse: No = ...,
    **options: Unpack[CrossEntropyOptions],
) -> Tuple[FloatArray, FloatArray]: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, reduction: Unreduced,
    return_grad: Yes, return_hess: No = ..., return_lse: Yes,
    **options: Unpack[CrossEntropyOptions],
) -> Tuple[FloatArray, FloatArray, FloatArray]: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, reduction: Unreduced,
    return_grad: Yes, return_hess: Yes, return_lse: No = ...,
    **options: Unpack[CrossEntropyOptions],
) -> Tuple[FloatArray, FloatArray, FloatArray]: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, reduction: Unreduced,
    return_grad: Yes, return_hess: Yes, return_lse: Yes,
    **options: Unpack[CrossEntropyOptions],
) -> Tuple[FloatArray, FloatArray, FloatArray, FloatArray]: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, reduction: Reduction = ...,
    return_grad: bool = ..., return_hess: bool = ..., return_lse: bool = ...,
    **options: Unpack[CrossEntropyOptions],
) -> Any: ...
@overload
def binary_cross_entropy_with_logits(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, reduction: Reduced = ...,
    return_grad: No = ..., return_hess: No = ...,
    **options: Unpack[BCEOptions],
) -> Scalar: ...
@overload
def binary_cross_entropy_with_logits(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, reduction: Reduced = ...,
    return_grad: No = ..., return_hess: Yes,
    **options: Unpack[BCEOptions],
) -> Tuple[Scalar, FloatArray]: ...
@overload
def binary_cross_entropy_with_logits(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, reduction: Reduced = ...,
    return_grad: Yes, return_hess: No = ...,
    **options: Unpack[BCEOptions],
) -> Tuple[Scalar, FloatArray]: ...
@overload
def binary_cross_entropy_with_logits(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, reduction: Reduced = ...,
    return_grad: Yes, return_hess: Yes,
    **options: Unpack[BCEOptions],
) -> Tuple[Scalar, FloatArray, FloatArray]: ...
@overload
def binary_cross_entropy_with_logits(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, reduction: Unreduced,
    return_grad: No = ..., return_hess: No = ...,
    **options: Unpack[BCEOptions],
) -> FloatArray: ...
@overload
def binary_cross_entropy_with_logits(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, reduction: Unreduced,
    return_grad: No = ..., return_hess: Yes,
    **options: Unpack[BCEOptions],
) -> Tuple[FloatArray, FloatArray]: ...
@overload
def binary_cross_entropy_with_logits(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, reduction: Unreduced,
    return_grad: Yes, return_hess: No = ...,
    **options: Unpack[BCEOptions],
) -> Tuple[FloatArray, FloatArray]: ...
@overload
def binary_cross_entropy_with_logits(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, reduction: Unreduced,
    return_grad: Yes, return_hess: Yes,
    **options: Unpack[BCEOptions],
) -> Tuple[FloatArray, FloatArray, FloatArray]: ...
@overload
def binary_cross_entropy_with_logits(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, reduction: Reduction = ...,
    return_grad: bool = ..., return_hess: bool = ...,
    **options: Unpack[BCEOptions],
) -> Any: ...
def softmax(logits: npt.ArrayLike, *, out: Optional[FloatArray] = ...) -> FloatArray: ...
def log_softmax(logits: npt.ArrayLike, *, out: Optional[FloatArray] = ...) -> FloatArray: ...
def logsumexp(logits: npt.ArrayLike) -> FloatArray: ...
def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...

# --- cross-entropy variants (issue 12) ---
class FocalOptions(TypedDict, total=False):
    gamma: float
    alpha: Optional[npt.ArrayLike]
    ignore_index: int
    label_smoothing: float
    out: Optional[FloatArray]

class Poly1Options(TypedDict, total=False):
    epsilon: float
    ignore_index: int
    label_smoothing: float
    out: Optional[FloatArray]

class GCEOptions(TypedDict, total=False):
    q: float
    ignore_index: int
    out: Optional[FloatArray]

class SigmoidFocalOptions(TypedDict, total=False):
    alpha: float
    gamma: float
    out: Optional[FloatArray]

@overload
def focal_loss(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, reduction: Reduced = ...,
    return_grad: No = ..., **options: Unpack[FocalOptions],
) -> Scalar: ...
@overload
def focal_loss(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, reduction: Unreduced,
    return_grad: No = ..., **options: Unpack[FocalOptions],
) -> FloatArray: ...
@overload
def focal_loss(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, reduction: Reduced = ...,
    return_grad: Yes, **options: Unpack[FocalOptions],
) -> Tuple[Scalar, FloatArray]: ...
@overload
def focal_loss(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, reduction: Reduction = ...,
    return_grad: bool = ..., **options: Unpack[FocalOptions],
) -> Any: ...
@overload
def poly1_cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, reduction: Reduced = ...,
    return_grad: No = ..., **options: Unpack[Poly1Options],
) -> Scalar: ...
@overload
def poly1_cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, reduction: Unreduced,
    return_grad: No = ..., **options: Unpack[Poly1Options],
) -> FloatArray: ...
@overload
def poly1_cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, reduction: Reduced = ...,
    return_grad: Yes, **options: Unpack[Poly1Options],
) -> Tuple[Scalar, FloatArray]: ...
@overload
def poly1_cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, reduction: Reduction = ...,
    return_grad: bool = ..., **options: Unpack[Poly1Options],
) -> Any: ...
@overload
def generalized_cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, reduction: Reduced = ...,
    return_grad: No = ..., **options: Unpack[GCEOptions],
) -> Scalar: ...
@overload
def generalized_cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, reduction: Unreduced,
    return_grad: No = ..., **options: Unpack[GCEOptions],
) -> FloatArray: ...
@overload
def generalized_cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, reduction: Reduced = ...,
    return_grad: Yes, **options: Unpack[GCEOptions],
) -> Tuple[Scalar, FloatArray]: ...
@overload
def generalized_cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, reduction: Reduction = ...,
    return_grad: bool = ..., **options: Unpack[GCEOptions],
) -> Any: ...
@overload
def sigmoid_focal_loss(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, reduction: Unreduced = ...,
    return_grad: No = ..., **options: Unpack[SigmoidFocalOptions],
) -> FloatArray: ...
@overload
def sigmoid_focal_loss(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, reduction: Reduced,
    return_grad: No = ..., **options: Unpack[SigmoidFocalOptions],
) -> Scalar: ...
@overload
def sigmoid_focal_loss(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, reduction: Reduction = ...,
    return_grad: bool = ..., **options: Unpack[SigmoidFocalOptions],
) -> Any: ...
@overload
def energy_margin_loss(
    logits_in: npt.ArrayLike, logits_out: npt.ArrayLike, *, m_in: float = ...,
    m_out: float = ..., temperature: float = ..., return_grad: No = ...,
    out_in: None = ..., out_out: None = ...,
) -> Scalar: ...
@overload
def energy_margin_loss(
    logits_in: npt.ArrayLike, logits_out: npt.ArrayLike, *, m_in: float = ...,
    m_out: float = ..., temperature: float = ..., return_grad: Yes,
    out_in: Optional[FloatArray] = ..., out_out: Optional[FloatArray] = ...,
) -> Tuple[Scalar, FloatArray, FloatArray]: ...
@overload
def energy_margin_loss(
    logits_in: npt.ArrayLike, logits_out: npt.ArrayLike, *, m_in: float = ...,
    m_out: float = ..., temperature: float = ..., return_grad: bool = ...,
    out_in: Optional[FloatArray] = ..., out_out: Optional[FloatArray] = ...,
) -> Any: ...

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
