"""Type stubs for the public xent_rs API (see ``shared/API.md``)."""

from typing import Any, Literal, Optional, Tuple, Union

import numpy as np
import numpy.typing as npt

__version__: str

Reduction = Literal["mean", "sum", "none"]
FloatArray = npt.NDArray[np.floating[Any]]
# A reduced loss is a NumPy scalar of the logits' dtype; "none" gives an array.
Loss = Union[np.floating[Any], FloatArray]
Result = Union[Loss, Tuple[Union[Loss, FloatArray], ...]]

def cross_entropy(
    logits: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    weight: Optional[npt.ArrayLike] = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    reduction: Reduction = "mean",
    return_grad: bool = False,
    return_hess: bool = False,
    return_lse: bool = False,
    out: Optional[FloatArray] = None,
) -> Result: ...
def binary_cross_entropy_with_logits(
    logits: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    weight: Optional[npt.ArrayLike] = None,
    pos_weight: Optional[npt.ArrayLike] = None,
    label_smoothing: float = 0.0,
    reduction: Reduction = "mean",
    return_grad: bool = False,
    return_hess: bool = False,
    out: Optional[FloatArray] = None,
) -> Result: ...
def softmax(logits: npt.ArrayLike, *, out: Optional[FloatArray] = None) -> FloatArray: ...
def log_softmax(logits: npt.ArrayLike, *, out: Optional[FloatArray] = None) -> FloatArray: ...
def logsumexp(logits: npt.ArrayLike) -> FloatArray: ...
def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
