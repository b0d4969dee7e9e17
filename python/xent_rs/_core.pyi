"""Type stubs for the Rust extension (private: use the functions in ``xent_rs``).

Every function takes C-contiguous, aligned, native-endian arrays: logits of float16, bfloat16,
float32 or float64 (outputs of the logits' dtype), float targets (probabilities, BCE targets)
of float32 or float64, int64 labels, float64 weights; each checks sizes, labels and aliasing
itself. ``tests/test_stubs.py`` keeps these names and parameter lists equal to the compiled
module's ``__text_signature__``.
"""

from typing import Any, Optional, Tuple

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating[Any]]
IndexArray = npt.NDArray[np.int64]
WeightArray = npt.NDArray[np.float64]

def cce_check_labels(
    labels: IndexArray, k: int, ignore_index: int, weight: Optional[WeightArray] = None,
) -> float:
    """Validates index labels; returns the mean's divisor (Σ weight[label], non-ignored)."""
def cce_forward_backward(
    logits: FloatArray, k: int, labels: Optional[IndexArray], probs: Optional[FloatArray],
    weight: Optional[WeightArray], ignore_index: int, label_smoothing: float, divisor: float,
    want_lse: bool, losses: Optional[FloatArray] = None, lse: Optional[FloatArray] = None,
    grad: Optional[FloatArray] = None, hess: Optional[FloatArray] = None,
    in_place: bool = False, z_loss: float = 0.0, z_divisor: float = 1.0,
    softcap: Optional[float] = None,
) -> float:
    """Fused cross-entropy pass; fills the given outputs (gradient and Hessian divided by
    ``divisor``: the mean's, 1 for the other reductions; the z-loss's parts by
    ``z_divisor``), returns the loss sum (z-loss terms scaled by ``divisor / z_divisor``)."""
def bce_forward_backward(
    logits: FloatArray, target: FloatArray, last: int, weight: Optional[WeightArray],
    weight_full: bool, pos_weight: Optional[WeightArray], pos_weight_full: bool,
    label_smoothing: float, scale: float, losses: Optional[FloatArray] = None,
    grad: Optional[FloatArray] = None, hess: Optional[FloatArray] = None,
    in_place: bool = False,
) -> float:
    """Fused sigmoid BCE pass over flat arrays; fills the given outputs, returns the sum."""
def rowwise(
    logits: FloatArray, out: FloatArray, k: int,
    kind: str, in_place: bool = False,
) -> None:
    """``kind`` "softmax" / "log_softmax" (``out`` shaped like ``logits``) or "logsumexp"
    (one value per row)."""
def top_label(logits: FloatArray, k: int, conf: WeightArray, argmax: IndexArray) -> None:
    """Writes each row's top-label confidence (max softmax, float64) and first argmax."""
def temperature_objective(
    logits: FloatArray, k: int, labels: IndexArray, beta: float,
    weight: Optional[WeightArray] = None, curvature: Optional[WeightArray] = None,
) -> Tuple[float, float, float]:
    """(Σ w·loss, Σ w·d loss/d beta, Σ w) of cross-entropy at logits·beta; with
    ``curvature`` (float64, one element) also writes Σ w·d² loss/d beta² to it."""
def temperature_pass(
    logits: FloatArray, k: int, labels: IndexArray, beta: float,
    weight: Optional[WeightArray] = None, loss: bool = False, scan: bool = False,
) -> Tuple[float, float, float, float, float, float, bool, bool, bool, bool]:
    """One fused pass of the temperature fit at ``beta``: (Σ w·loss (with ``loss``), Σ w·l',
    Σ w·l'', Σ w·l''' (NaN where the pass has none), Σ w, then with ``scan``: largest finite
    |z|, some live row varying, some live label not on top, some row with NaN / +inf / only
    -inf, some live label logit -inf). Rows whose class has weight 0 are not live."""
def temperature_scan(
    logits: FloatArray, k: int, labels: IndexArray,
) -> Tuple[bool, float, bool]:
    """(every live row constant, largest finite |z|, every live label on top) in one pass;
    a label of -1 marks a row that is not live."""
def calib_stats(
    scores: FloatArray, k: int, from_logits: bool, labels: IndexArray,
    weight: Optional[WeightArray], edges: WeightArray, right: bool, out: WeightArray,
    top_only: bool = False,
) -> int:
    """Adds the streaming calibration statistics of (N, k) logits or probabilities to ``out``:
    top-label bin sums (3, slots), one-vs-rest bin sums (3, k, slots), then the weight, Brier,
    NLL, accuracy and confidence sums (``top_only``: the top-label bin sums alone). Returns
    -1, or the first row holding NaN, +inf or only -inf logits (probabilities outside
    [0, 1]); ``out`` is then unchanged."""
def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def simd_path() -> str:
    """The instruction-set path float32 rows run on: "scalar", "avx2" or "avx512"."""
def simd_paths_supported() -> list[str]:
    """Every path this CPU supports, lowest first."""

# --- cross-entropy variants (issue 12) ---
def family_check_labels(labels: IndexArray, k: int, ignore_index: int) -> int:
    """Validates index labels; returns the number of non-ignored rows."""
def family_forward_backward(
    logits: FloatArray, k: int, family: str, param: float, labels: Optional[IndexArray],
    probs: Optional[FloatArray], alpha: Optional[WeightArray], ignore_index: int,
    label_smoothing: float, divisor: float, losses: Optional[FloatArray] = None,
    grad: Optional[FloatArray] = None, in_place: bool = False,
) -> float:
    """Fused focal ("focal", param γ), poly-1 ("poly1", ε) or generalized CE ("gce", q)
    pass; fills the given outputs (gradient divided by ``divisor``), returns the loss sum."""
def sigmoid_focal_forward_backward(
    logits: FloatArray, target: FloatArray, alpha: float, gamma: float, scale: float,
    losses: Optional[FloatArray] = None, grad: Optional[FloatArray] = None,
    in_place: bool = False,
) -> float:
    """torchvision's sigmoid focal loss over flat arrays (gradient times ``scale``); returns
    the sum of element losses."""
def energy_margin(
    logits: FloatArray, k: int, temperature: float, margin: float, outlier: bool,
    divisor: float, grad: Optional[FloatArray] = None, in_place: bool = False,
) -> float:
    """Σ over rows of relu(E − margin)² (relu(margin − E)² for outliers), E = −T·lse(x/T);
    the gradient (into ``grad``) divided by ``divisor``."""

# --- bootstrap (issue 15) ---
def bootstrap_sums(
    bins: npt.NDArray[np.int64], a: WeightArray, c: WeightArray, weight: Optional[WeightArray],
    slots: int, n_resamples: int, seed: int, out: WeightArray,
) -> None:
    """Poisson-bootstrap sums (n_resamples, 3, slots) of the weight, ``a`` and ``c`` per bin,
    written to ``out`` (the weights' scheme is documented in the core's bootstrap module)."""

# --- linear cross-entropy and InfoNCE (issue 13) ---
def linear_cross_entropy(
    hidden: FloatArray, weight: FloatArray, bias: Optional[FloatArray], labels: IndexArray,
    d: int, v: int, ignore_index: int, label_smoothing: float, z_loss: float,
    softcap: Optional[float], divisor: float, scale: float, chunk_rows: int,
    losses: Optional[FloatArray] = None, grad_hidden: Optional[FloatArray] = None,
    grad_weight: Optional[FloatArray] = None, grad_bias: Optional[FloatArray] = None,
    row_weight: Optional[FloatArray] = None,
) -> float:
    """Fused ``cross_entropy(scale · hidden @ weight.T + bias, labels)`` over row chunks
    (float32 or float64, all arrays of hidden's dtype); fills the given outputs (gradients
    divided by ``divisor``, row i's times ``row_weight[i]``), returns the loss sum.
    ``chunk_rows`` 0: chosen from the shapes."""
def linear_auto_chunk_rows(n: int, v: int, elem_bytes: int) -> int:
    """The rows per chunk ``linear_cross_entropy`` uses when ``chunk_rows`` is 0."""
def xla_ffi_target(python_handler: int) -> object:
    """The XLA FFI handler of xent_rs.jax as a PyCapsule; calls it does not take itself go
    to the function at address ``python_handler`` (kept alive by the caller)."""
def xla_ffi_fast_calls() -> int: ...
