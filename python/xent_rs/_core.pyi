"""Type stubs for the Rust extension (private: use the functions in ``xent_rs``)."""

from typing import Optional

import numpy as np
import numpy.typing as npt

def cce_check_labels(
    labels: npt.NDArray[np.int64], k: int, ignore_index: int,
    weight: Optional[npt.NDArray[np.float64]] = None,
) -> float: ...
def cce_forward_backward(
    logits: np.ndarray, k: int, labels: Optional[npt.NDArray[np.int64]],
    probs: Optional[np.ndarray], weight: Optional[npt.NDArray[np.float64]],
    ignore_index: int, label_smoothing: float, scale: float, want_lse: bool,
    losses: Optional[np.ndarray] = None, lse: Optional[np.ndarray] = None,
    grad: Optional[np.ndarray] = None, hess: Optional[np.ndarray] = None,
    in_place: bool = False,
) -> float: ...
def bce_forward_backward(
    logits: np.ndarray, target: np.ndarray, last: int,
    weight: Optional[npt.NDArray[np.float64]], weight_full: bool,
    pos_weight: Optional[npt.NDArray[np.float64]], pos_weight_full: bool,
    label_smoothing: float, scale: float, losses: Optional[np.ndarray] = None,
    grad: Optional[np.ndarray] = None, hess: Optional[np.ndarray] = None,
    in_place: bool = False,
) -> float: ...
def rowwise(logits: np.ndarray, out: np.ndarray, k: int, kind: int,
            in_place: bool = False) -> None: ...
def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def simd_path() -> str: ...
def simd_paths_supported() -> list[str]: ...
