"""Type stubs for the public xent_rs API (the contract is ``docs/api.md``).

The losses are overloaded on ``reduction`` and the ``return_*`` flags (as literals), so that
the type of what they return follows what was asked for::

    loss = xr.cross_entropy(z, y)                        # np.floating: float(loss)
    losses = xr.cross_entropy(z, y, reduction="none")    # ndarray: losses.shape
    loss, grad = xr.cross_entropy(z, y, return_grad=True)

Flags that are plain ``bool`` values (not literals) give the union of every outcome.
"""

from typing import Any, Literal, Optional, Tuple, Union, overload

import numpy as np
import numpy.typing as npt

__version__: str
__all__: list[str]
MAX_THREADS: int

FloatArray = npt.NDArray[np.floating[Any]]
#: A reduced loss: a NumPy float scalar (of the logits' dtype; float32 for 16-bit logits).
Scalar = np.floating[Any]
Reduced = Literal["mean", "sum"]
Reduction = Literal["mean", "sum", "none"]
Loss = Union[Scalar, FloatArray]
Result = Union[Loss, Tuple[Loss, FloatArray], Tuple[Loss, FloatArray, FloatArray],
               Tuple[Loss, FloatArray, FloatArray, FloatArray]]
_No = Literal[False]
_Yes = Literal[True]

@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    ignore_index: int = ..., label_smoothing: float = ...,
    reduction: Reduced = ..., out: Optional[FloatArray] = ...,
    return_grad: _No = ..., return_hess: _No = ..., return_lse: _No = ...,
) -> Scalar: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    ignore_index: int = ..., label_smoothing: float = ...,
    reduction: Reduced = ..., out: Optional[FloatArray] = ...,
    return_grad: _No = ..., return_hess: _No = ..., return_lse: _Yes,
) -> Tuple[Scalar, FloatArray]: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    ignore_index: int = ..., label_smoothing: float = ...,
    reduction: Reduced = ..., out: Optional[FloatArray] = ...,
    return_grad: _No = ..., return_hess: _Yes, return_lse: _No = ...,
) -> Tuple[Scalar, FloatArray]: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    ignore_index: int = ..., label_smoothing: float = ...,
    reduction: Reduced = ..., out: Optional[FloatArray] = ...,
    return_grad: _No = ..., return_hess: _Yes, return_lse: _Yes,
) -> Tuple[Scalar, FloatArray, FloatArray]: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    ignore_index: int = ..., label_smoothing: float = ...,
    reduction: Reduced = ..., out: Optional[FloatArray] = ...,
    return_grad: _Yes, return_hess: _No = ..., return_lse: _No = ...,
) -> Tuple[Scalar, FloatArray]: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    ignore_index: int = ..., label_smoothing: float = ...,
    reduction: Reduced = ..., out: Optional[FloatArray] = ...,
    return_grad: _Yes, return_hess: _No = ..., return_lse: _Yes,
) -> Tuple[Scalar, FloatArray, FloatArray]: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    ignore_index: int = ..., label_smoothing: float = ...,
    reduction: Reduced = ..., out: Optional[FloatArray] = ...,
    return_grad: _Yes, return_hess: _Yes, return_lse: _No = ...,
) -> Tuple[Scalar, FloatArray, FloatArray]: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    ignore_index: int = ..., label_smoothing: float = ...,
    reduction: Reduced = ..., out: Optional[FloatArray] = ...,
    return_grad: _Yes, return_hess: _Yes, return_lse: _Yes,
) -> Tuple[Scalar, FloatArray, FloatArray, FloatArray]: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    ignore_index: int = ..., label_smoothing: float = ...,
    reduction: Literal["none"], out: Optional[FloatArray] = ...,
    return_grad: _No = ..., return_hess: _No = ..., return_lse: _No = ...,
) -> FloatArray: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    ignore_index: int = ..., label_smoothing: float = ...,
    reduction: Literal["none"], out: Optional[FloatArray] = ...,
    return_grad: _No = ..., return_hess: _No = ..., return_lse: _Yes,
) -> Tuple[FloatArray, FloatArray]: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    ignore_index: int = ..., label_smoothing: float = ...,
    reduction: Literal["none"], out: Optional[FloatArray] = ...,
    return_grad: _No = ..., return_hess: _Yes, return_lse: _No = ...,
) -> Tuple[FloatArray, FloatArray]: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    ignore_index: int = ..., label_smoothing: float = ...,
    reduction: Literal["none"], out: Optional[FloatArray] = ...,
    return_grad: _No = ..., return_hess: _Yes, return_lse: _Yes,
) -> Tuple[FloatArray, FloatArray, FloatArray]: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    ignore_index: int = ..., label_smoothing: float = ...,
    reduction: Literal["none"], out: Optional[FloatArray] = ...,
    return_grad: _Yes, return_hess: _No = ..., return_lse: _No = ...,
) -> Tuple[FloatArray, FloatArray]: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    ignore_index: int = ..., label_smoothing: float = ...,
    reduction: Literal["none"], out: Optional[FloatArray] = ...,
    return_grad: _Yes, return_hess: _No = ..., return_lse: _Yes,
) -> Tuple[FloatArray, FloatArray, FloatArray]: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    ignore_index: int = ..., label_smoothing: float = ...,
    reduction: Literal["none"], out: Optional[FloatArray] = ...,
    return_grad: _Yes, return_hess: _Yes, return_lse: _No = ...,
) -> Tuple[FloatArray, FloatArray, FloatArray]: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    ignore_index: int = ..., label_smoothing: float = ...,
    reduction: Literal["none"], out: Optional[FloatArray] = ...,
    return_grad: _Yes, return_hess: _Yes, return_lse: _Yes,
) -> Tuple[FloatArray, FloatArray, FloatArray, FloatArray]: ...
@overload
def cross_entropy(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    ignore_index: int = ..., label_smoothing: float = ...,
    reduction: Reduction = ..., out: Optional[FloatArray] = ...,
    return_grad: bool = ..., return_hess: bool = ..., return_lse: bool = ...,
) -> Result: ...
@overload
def binary_cross_entropy_with_logits(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    pos_weight: Optional[npt.ArrayLike] = ..., label_smoothing: float = ...,
    reduction: Reduced = ..., out: Optional[FloatArray] = ...,
    return_grad: _No = ..., return_hess: _No = ...,
) -> Scalar: ...
@overload
def binary_cross_entropy_with_logits(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    pos_weight: Optional[npt.ArrayLike] = ..., label_smoothing: float = ...,
    reduction: Reduced = ..., out: Optional[FloatArray] = ...,
    return_grad: _No = ..., return_hess: _Yes,
) -> Tuple[Scalar, FloatArray]: ...
@overload
def binary_cross_entropy_with_logits(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    pos_weight: Optional[npt.ArrayLike] = ..., label_smoothing: float = ...,
    reduction: Reduced = ..., out: Optional[FloatArray] = ...,
    return_grad: _Yes, return_hess: _No = ...,
) -> Tuple[Scalar, FloatArray]: ...
@overload
def binary_cross_entropy_with_logits(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    pos_weight: Optional[npt.ArrayLike] = ..., label_smoothing: float = ...,
    reduction: Reduced = ..., out: Optional[FloatArray] = ...,
    return_grad: _Yes, return_hess: _Yes,
) -> Tuple[Scalar, FloatArray, FloatArray]: ...
@overload
def binary_cross_entropy_with_logits(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    pos_weight: Optional[npt.ArrayLike] = ..., label_smoothing: float = ...,
    reduction: Literal["none"], out: Optional[FloatArray] = ...,
    return_grad: _No = ..., return_hess: _No = ...,
) -> FloatArray: ...
@overload
def binary_cross_entropy_with_logits(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    pos_weight: Optional[npt.ArrayLike] = ..., label_smoothing: float = ...,
    reduction: Literal["none"], out: Optional[FloatArray] = ...,
    return_grad: _No = ..., return_hess: _Yes,
) -> Tuple[FloatArray, FloatArray]: ...
@overload
def binary_cross_entropy_with_logits(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    pos_weight: Optional[npt.ArrayLike] = ..., label_smoothing: float = ...,
    reduction: Literal["none"], out: Optional[FloatArray] = ...,
    return_grad: _Yes, return_hess: _No = ...,
) -> Tuple[FloatArray, FloatArray]: ...
@overload
def binary_cross_entropy_with_logits(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    pos_weight: Optional[npt.ArrayLike] = ..., label_smoothing: float = ...,
    reduction: Literal["none"], out: Optional[FloatArray] = ...,
    return_grad: _Yes, return_hess: _Yes,
) -> Tuple[FloatArray, FloatArray, FloatArray]: ...
@overload
def binary_cross_entropy_with_logits(
    logits: npt.ArrayLike, target: npt.ArrayLike, *, weight: Optional[npt.ArrayLike] = ...,
    pos_weight: Optional[npt.ArrayLike] = ..., label_smoothing: float = ...,
    reduction: Reduction = ..., out: Optional[FloatArray] = ...,
    return_grad: bool = ..., return_hess: bool = ...,
) -> Result: ...
def softmax(logits: npt.ArrayLike, *, out: Optional[FloatArray] = ...) -> FloatArray: ...
def log_softmax(logits: npt.ArrayLike, *, out: Optional[FloatArray] = ...) -> FloatArray: ...
def logsumexp(logits: npt.ArrayLike) -> FloatArray: ...
def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
