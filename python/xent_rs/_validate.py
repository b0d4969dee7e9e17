"""Argument checking and normalisation for the public API.

Every public function funnels its arguments through here, so that the Rust core only ever sees
native-endian, aligned, C-contiguous float16/bfloat16/float32/float64 arrays of consistent
shapes, and every bad input becomes a ``TypeError`` or ``ValueError`` whose message starts
with the argument's name.
"""

from __future__ import annotations

import math
import numbers
import operator

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16))
REDUCTIONS = ("mean", "sum", "none")


_KIND_NAMES = {"b": "bool", "i": "integer", "u": "unsigned integer", "c": "complex",
               "O": "object", "U": "string", "S": "bytes"}


def kind_name(dtype):
    """A readable name for a dtype's kind ("integer", "bool", ...) for error messages."""
    return _KIND_NAMES.get(dtype.kind, str(dtype))


def _as_array(value, name):
    try:
        arr = np.asarray(value)  # subclasses (np.matrix, memmap) become plain arrays
    except (ValueError, TypeError) as exc:
        raise TypeError(f"{name}: cannot be converted to a NumPy array ({exc})") from None
    return arr


def _native(arr):
    """Native byte order, aligned and C-contiguous; no copy when it already is."""
    dtype = arr.dtype.newbyteorder("=") if not arr.dtype.isnative else arr.dtype
    return np.require(arr, dtype=dtype, requirements=["C", "A"])


def is_bfloat16(dtype):
    """``ml_dtypes.bfloat16`` (NumPy has no bfloat16 of its own; no import is needed to
    recognise it: an array of it exists only once ml_dtypes is loaded)."""
    return dtype.name == "bfloat16"


def float_array(value, name="logits", *, min_ndim=0):
    """A float16/bfloat16/float32/float64 array (read in place when already contiguous and
    native)."""
    if value is None:
        raise TypeError(f"{name}: expected a float array, got None")
    arr = _as_array(value, name)
    kind = arr.dtype.kind
    if is_bfloat16(arr.dtype):
        pass
    elif kind != "f":
        raise TypeError(f"{name}: must be a float16, bfloat16, float32 or float64 array, got "
                        f"{kind_name(arr.dtype)} dtype ({arr.dtype})")
    elif np.dtype(arr.dtype.newbyteorder("=")) not in FLOAT_DTYPES:
        raise TypeError(f"{name}: dtype {arr.dtype} is not supported; use float16, bfloat16, "
                        f"float32 or float64")
    if arr.ndim < min_ndim:
        raise ValueError(f"{name}: must have at least {min_ndim} dimension(s) (the class axis "
                         f"is the last), got shape {arr.shape}")
    return _native(arr)


def class_logits(value, name="logits"):
    arr = float_array(value, name, min_ndim=1)
    if arr.shape[-1] == 0:
        raise ValueError(f"{name}: the class axis (last) has size 0; need at least one class")
    return arr


def reduction(value):
    if not isinstance(value, str) or value not in REDUCTIONS:
        raise ValueError(f"reduction: must be one of 'mean', 'sum', 'none', got {value!r}")
    return value


def flag(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: must be True or False, got {type(value).__name__}")
    return bool(value)


def real(value, name):
    """A real number (not bool) as a Python float; ``TypeError`` naming ``name`` otherwise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: must be a real number, got {type(value).__name__}")
    return float(value)


def label_smoothing(value):
    eps = real(value, "label_smoothing")
    if not 0.0 <= eps <= 1.0:  # also rejects NaN
        raise ValueError(f"label_smoothing: must be in [0, 1], got {value!r}")
    return eps


def z_loss(value):
    """The z-loss coefficient: a finite real number >= 0."""
    z = real(value, "z_loss")
    if not (math.isfinite(z) and z >= 0.0):
        raise ValueError(f"z_loss: must be a finite number >= 0, got {value!r}")
    return z


def softcap(value):
    """The logit soft cap: ``None``, or a finite real number > 0."""
    if value is None:
        return None
    c = real(value, "softcap")
    if not (math.isfinite(c) and c > 0.0):
        raise ValueError(f"softcap: must be a finite number > 0 or None, got {value!r}")
    return c


def integer(value, name):
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: must be an integer, got bool")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name}: must be an integer, got {type(value).__name__}") from None


def nonneg_weights(value, name):
    """A float64 array of finite, non-negative weights (shape checked by the caller)."""
    arr = _as_array(value, name)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name}: must be a real-valued array, got dtype {arr.dtype}")
    # Native-endian, aligned, C-contiguous float64 (a misaligned or byte-swapped view is
    # copied: the kernels read it as a &[f64]); keeps 0-d arrays 0-d.
    arr = np.require(np.asarray(arr), dtype=np.float64, requirements=["C", "A"])
    if arr.size and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: must be finite (found NaN or inf)")
    if arr.size and np.any(arr < 0):
        raise ValueError(f"{name}: must be non-negative")
    return arr


def class_weight(value, k):
    if value is None:
        return None
    arr = nonneg_weights(value, "weight")
    if arr.shape != (k,):
        raise ValueError(f"weight: must have shape ({k},) (one weight per class), got "
                         f"{arr.shape}")
    return arr


def index_target(arr, batch_shape):
    """Class indices as contiguous int64 of the batch shape."""
    if arr.shape != batch_shape:
        raise ValueError(f"target: class indices must have shape {batch_shape} "
                         f"(logits.shape[:-1]), got {arr.shape}")
    if arr.dtype.kind == "u" and arr.dtype.itemsize == 8 and arr.size:
        if arr.max() > np.iinfo(np.int64).max:
            raise ValueError(f"target: class index {int(arr.max())} is out of range")
    # Aligned too: a misaligned int64 view (e.g. at byte offset 1 of a buffer) is copied.
    return np.require(np.asarray(arr), dtype=np.int64, requirements=["C", "A"]).reshape(-1)


def float_target(arr):
    """A float target in its own precision, as the core reads it: float32 and float64 as
    they are, 16-bit floats widened to float32 (exactly), anything else to float64."""
    if arr.dtype.kind == "f" and arr.dtype.itemsize == 2 or is_bfloat16(arr.dtype):
        return _native(arr.astype(np.float32))
    if np.dtype(arr.dtype.newbyteorder("=")) not in (np.dtype(np.float32), np.dtype(np.float64)):
        arr = arr.astype(np.float64)
    return _native(arr)


def float_indices(arr):
    """Whole-valued floats (as XGBoost, LightGBM and pandas hand out labels) as int64."""
    arr = arr.astype(np.float64)  # exact for every float dtype the core takes
    with np.errstate(invalid="ignore"):
        whole = np.isfinite(arr) & (np.floor(arr) == arr) & (np.abs(arr) < 2.0**63)
    if not whole.all():
        pos = np.unravel_index(int(np.argmin(whole.reshape(-1))), arr.shape)
        raise ValueError(f"target: float class indices must be whole numbers; found "
                         f"{arr[pos]!r} at position {tuple(int(i) for i in pos)} (a float target "
                         f"of the logits' shape would be read as class probabilities)")
    return arr.astype(np.int64)


def cce_target(value, logits):
    """('index', int64 labels) or ('probs', a float array of the logits' shape)."""
    if value is None:
        raise TypeError("target: expected class indices or probabilities, got None")
    arr = _as_array(value, "target")
    kind = arr.dtype.kind
    if is_bfloat16(arr.dtype):
        kind = "f"
    if kind in "iu":
        if arr.shape == logits.shape and arr.shape != logits.shape[:-1]:
            raise ValueError(f"target: an integer array of the logits' shape {logits.shape} "
                            f"looks like one-hot targets; pass them as float probabilities "
                            f"(e.g. target.astype(np.float32)), or pass class indices of shape "
                            f"{logits.shape[:-1]}")
        return "index", index_target(arr, logits.shape[:-1])
    if kind == "f" and arr.shape == logits.shape[:-1] and arr.shape != logits.shape:
        return "index", index_target(float_indices(arr), logits.shape[:-1])
    if kind == "f":
        if arr.shape != logits.shape:
            raise ValueError(f"target: class probabilities must have the shape of logits "
                             f"{logits.shape}, got {arr.shape}")
        # Kept in their own precision, not rounded to the logits' dtype.
        probs = float_target(arr)
        # ±inf is no probability (NaN is scored like the reference: a NaN row). One cheap
        # reduction first; the elementwise look only when it is not finite.
        with np.errstate(all="ignore"):
            total = np.sum(probs, dtype=np.float64)
        if not np.isfinite(total) and np.isinf(probs).any():
            raise ValueError("target: class probabilities must not be infinite")
        return "probs", probs
    raise TypeError(f"target: must be integer class indices or float class probabilities, "
                    f"got dtype {arr.dtype}")


def bce_target(value, logits):
    if value is None:
        raise TypeError("target: expected an array of values in [0, 1], got None")
    arr = _as_array(value, "target")
    if arr.dtype.kind not in "biuf" and not is_bfloat16(arr.dtype):
        raise TypeError(f"target: must be a real-valued or bool array, got dtype {arr.dtype}")
    if arr.shape != logits.shape:
        raise ValueError(f"target: must have the shape of logits {logits.shape}, got "
                         f"{arr.shape}")
    # In its own precision (a target of 0.3 is not rounded to float16 logits' 0.2998), but
    # as float32 for float32 or 16-bit logits whenever that is exact (0/1 labels, bools,
    # integers), so that the float32 vector kernel reads it.
    work = np.float64 if logits.dtype == np.float64 else np.float32
    if arr.dtype.kind in "biu":
        return _native(arr.astype(work))
    y = float_target(arr)
    if y.dtype != work and work == np.float32:
        y32 = y.astype(np.float32)
        if np.array_equal(y32, y):
            return y32
    return y


def broadcast_factor(value, name, shape):
    """(vector, full) for the kernel: the values along the last axis when the factor only
    varies along it (no copy of the logits' size), else one float64 per element."""
    if value is None:
        return None, False
    arr = nonneg_weights(value, name)
    try:
        b = np.broadcast_to(arr, shape)
    except ValueError:
        raise ValueError(f"{name}: shape {arr.shape} does not broadcast to logits "
                         f"{shape}") from None
    if b.size == 0:
        return None, False  # nothing to weigh
    if arr.size == 1:
        return arr.reshape(1), False  # one value for every element: no logits-sized copy
    if len(shape) >= 1 and all(s == 0 for s in b.strides[:-1]):
        return np.ascontiguousarray(b[(0,) * (len(shape) - 1)]), False
    return np.ascontiguousarray(b).reshape(-1), True


def out_array(out, logits, name="out"):
    """``out`` for a result of logits' shape and dtype; returns (out, in_place)."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name}: must be a NumPy array, got {type(out).__name__}")
    if out.shape != logits.shape:
        raise ValueError(f"{name}: must have shape {logits.shape}, got {out.shape}")
    if out.dtype != logits.dtype:
        raise ValueError(f"{name}: must have dtype {logits.dtype}, got {out.dtype}")
    if not out.flags.c_contiguous:
        raise ValueError(f"{name}: must be C-contiguous")
    if not out.flags.writeable:
        raise ValueError(f"{name}: must be writeable")
    if not out.flags.aligned:
        raise ValueError(f"{name}: must be aligned")
    same = (out.__array_interface__["data"][0] == logits.__array_interface__["data"][0]
            and out.strides == logits.strides)
    # An empty array shares no memory, but passing it as its own out is still in place.
    if np.may_share_memory(out, logits) or (same and out.size == 0):
        if not same:
            raise ValueError(f"{name}: overlaps logits without being logits itself; pass "
                             f"out=logits to write the result in place, or a separate array")
        return out, True
    return out, False


# --------------------------------------------------------------------------------------------
# Calibration inputs (xent_rs.calibration): scores of shape (N,) or (N, K), labels, sample
# weights and the binning options.
# --------------------------------------------------------------------------------------------

def array(value, name):
    """``np.asarray(value)``, refusing None (``TypeError`` naming ``name``)."""
    if value is None:
        raise TypeError(f"{name}: expected an array, got None")
    return _as_array(value, name)


def any_float_array(value, name):
    """A float array of any precision, native, aligned and C-contiguous: float16, bfloat16,
    float32 and float64 as they are (the kernels read them in place; no copy when the input
    already is so), wider floats as float64 (longdouble is rounded; beyond float64 ±inf)."""
    arr = array(value, name)
    if is_bfloat16(arr.dtype):
        return _native(arr)
    if arr.dtype.kind != "f":
        raise TypeError(f"{name}: must be a float array (probabilities or logits), got "
                        f"{kind_name(arr.dtype)} dtype ({arr.dtype})")
    dtype = arr.dtype.newbyteorder("=") if arr.dtype.itemsize <= 4 else np.float64
    with np.errstate(over="ignore"):  # a longdouble beyond float64 becomes ±inf, checked next
        return np.require(arr, dtype=dtype, requirements=["C", "A"])


def choice(name, value, choices):
    """``value`` if it is one of the strings ``choices``; ``ValueError`` otherwise."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}: must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def bounded_integer(value, name, lo, hi):
    """An integer in ``[lo, hi]`` (``TypeError`` for a non-integer, ``ValueError`` outside)."""
    value = integer(value, name)
    if not lo <= value <= hi:
        raise ValueError(f"{name}: must be an integer in [{lo}, {hi}], got {value}")
    return value


def positive_real(value, name):
    """A finite real number > 0, as a Python float."""
    value = real(value, name)
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"{name}: must be finite and > 0, got {value}")
    return value


def scores(value, name, from_logits, *, allow_empty=False, check_values=True):
    """(N,) (binary) or (N, K) probabilities or logits; returns ``(array, binary)``.

    Probabilities must lie in [0, 1]. Logits may be ±inf for binary input (sigmoid is
    defined there); for (N, K) input +inf, and a row of all -inf, leave the softmax undefined.
    NaN is refused either way. N = 0 is refused unless ``allow_empty``. With
    ``check_values=False`` only the type and shape are checked: the caller's fused pass
    checks the values (and calls :func:`score_values` for the message).
    """
    arr = any_float_array(value, name)
    if arr.ndim not in (1, 2):
        raise ValueError(f"{name}: must have shape (N,) (binary) or (N, K) (K classes), got "
                         f"shape {arr.shape}")
    binary = arr.ndim == 1
    if not binary and arr.shape[1] < 2:
        raise ValueError(f"{name}: (N, K) input needs K >= 2 classes, got shape {arr.shape}; "
                         f"pass binary scores as shape (N,)")
    if arr.shape[0] == 0:
        if allow_empty:
            return arr, binary
        raise ValueError(f"{name}: empty input (N = 0); the metric is undefined over no "
                         f"samples")
    if check_values:
        score_values(arr, name, from_logits, binary)
    return arr, binary


def score_values(arr, name, from_logits, binary):
    """The value checks of :func:`scores` on a non-empty array of the right shape."""
    if arr.dtype.itemsize == 2:
        _check_16_bit_scores(arr, name, from_logits, binary)
        return
    lo, hi = arr.min(), arr.max()
    if np.isnan(lo) or np.isnan(hi):
        raise ValueError(f"{name}: contains NaN")
    if from_logits:
        if not binary:
            if hi == np.inf:
                raise ValueError(f"{name}: contains +inf logits (the softmax is undefined)")
            if lo == -np.inf and (arr.max(axis=1) == -np.inf).any():
                raise ValueError(f"{name}: a row has every logit equal to -inf (no class left)")
    elif lo < 0 or hi > 1:
        raise ValueError(f"{name}: probabilities must lie in [0, 1], got values in "
                         f"[{lo}, {hi}] (pass from_logits=True for logits)")


#: (exponent mask = +inf, 1.0) as bits, for float16 and bfloat16.
_BITS_16 = {"float16": (0x7C00, 0x3C00), "bfloat16": (0x7F80, 0x3F80)}


def _check_16_bit_scores(arr, name, from_logits, binary):
    """The checks of :func:`scores` on the bits of float16 / bfloat16 scores: NumPy has no
    fast min/max for 16-bit floats, but its integer comparisons are vectorised."""
    inf, one = _BITS_16[np.dtype(arr.dtype).name]
    u = arr.view(np.uint16)
    if ((u & 0x7FFF) > inf).any():
        raise ValueError(f"{name}: contains NaN")
    if from_logits:
        if not binary:
            if (u == inf).any():
                raise ValueError(f"{name}: contains +inf logits (the softmax is undefined)")
            neg_inf = u == (0x8000 | inf)
            if neg_inf.any() and neg_inf.all(axis=1).any():
                raise ValueError(f"{name}: a row has every logit equal to -inf (no class left)")
    elif (u > 0x8000).any() or ((u > one) & (u < 0x8000)).any():
        wide = arr.astype(np.float32)
        raise ValueError(f"{name}: probabilities must lie in [0, 1], got values in "
                         f"[{wide.min()}, {wide.max()}] (pass from_logits=True for logits)")


def labels(value, n, n_classes, name="labels"):
    """int64 labels of shape (n,): 0/1 when ``n_classes`` is None (binary), else in [0, K).

    Bool labels and whole-valued float labels are accepted.
    """
    arr = array(value, name)
    kind = arr.dtype.kind
    if kind == "b":
        arr = arr.astype(np.int64)
    elif kind == "f":
        if arr.size and not (np.isfinite(arr).all() and (arr == np.round(arr)).all()):
            raise ValueError(f"{name}: float labels must be whole numbers")
    elif kind not in "iu":
        raise TypeError(f"{name}: must be an integer (or bool) array, got "
                        f"{kind_name(arr.dtype)} dtype ({arr.dtype})")
    if arr.shape != (n,):
        raise ValueError(f"{name}: expected shape ({n},) to match the scores, got {arr.shape}")
    if n:
        lo, hi = arr.min(), arr.max()
        if n_classes is None:
            if lo < 0 or hi > 1:
                raise ValueError(f"{name}: binary labels must be 0 or 1, got values in "
                                 f"[{lo}, {hi}]")
        elif lo < 0 or hi >= n_classes:
            raise ValueError(f"{name}: class labels must lie in [0, {n_classes}), got values "
                             f"in [{lo}, {hi}]")
    # Aligned too: a misaligned int64 view (a block shipped by Dask, a byte-offset buffer)
    # is copied, as the kernels read whole int64s.
    return np.require(arr, dtype=np.int64, requirements=["C", "A"])


def sample_weight(value, n):
    """None, or finite non-negative float64 weights of shape (n,)."""
    if value is None:
        return None
    arr = nonneg_weights(value, "sample_weight")
    if arr.shape != (n,):
        raise ValueError(f"sample_weight: expected shape ({n},), got {arr.shape}")
    return arr


def logits_and_labels(logits, label_values, weight):
    """(N, K) logits (binary (N,) logits become the two-class logits ``[0, z]``, since
    ``sigmoid(z) = softmax([0, z])[1]``), int64 labels in [0, K) and per-class weights."""
    z, binary = scores(logits, "logits", True)
    if binary:
        z = np.stack([np.zeros_like(z), z], axis=1)
    return z, labels(label_values, z.shape[0], z.shape[1]), class_weight(weight, z.shape[1])


# --------------------------------------------------------------------------------------------
# The cross-entropy variants (xent_rs._losses): their parameters.
# --------------------------------------------------------------------------------------------

def finite_real(value, name):
    """A finite real number, as a Python float."""
    value = real(value, name)
    if not math.isfinite(value):
        raise ValueError(f"{name}: must be finite, got {value}")
    return value


def nonneg_real(value, name):
    """A finite real number ≥ 0, as a Python float."""
    value = real(value, name)
    if not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"{name}: must be finite and >= 0, got {value}")
    return value


def gce_q(value):
    """The exponent of generalized cross-entropy, in (0, 1]."""
    value = real(value, "q")
    if not 0.0 < value <= 1.0:
        raise ValueError(f"q: must be in (0, 1], got {value}")
    return value


def sigmoid_focal_alpha(value):
    """torchvision's balancing factor: in [0, 1], or -1 (no balancing)."""
    value = real(value, "alpha")
    if not (0.0 <= value <= 1.0 or value == -1.0):
        raise ValueError(f"alpha: must be in [0, 1], or -1 to disable the balancing; got {value}")
    return value


def class_alpha(value, k):
    """``None``, or the focal loss' class factors as float64 of shape (1,) (one for every
    class) or (K,)."""
    if value is None:
        return None
    arr = nonneg_weights(value, "alpha")
    if arr.ndim == 0:
        return arr.reshape(1)
    if arr.shape != (k,):
        raise ValueError(f"alpha: must be a scalar or have shape ({k},) (one factor per class), "
                         f"got {arr.shape}")
    return arr


def index_only_target(value, logits, name):
    """Class indices (int64, flat) for a loss that takes no probability targets."""
    kind, tgt = cce_target(value, logits)
    if kind != "index":
        raise ValueError(f"target: {name} takes class indices of shape {logits.shape[:-1]}, not "
                         f"class probabilities")
    return tgt


def ignore_index(value):
    value = integer(value, "ignore_index")
    if not -(2**63) <= value < 2**63:
        raise ValueError("ignore_index: must fit in a signed 64-bit integer")
    return value
