"""Argument checking and normalisation for the public API.

Every public function funnels its arguments through here, so that the Rust core only ever sees
native-endian, aligned, C-contiguous float32/float64 arrays of consistent shapes, and every bad
input becomes a ``TypeError`` or ``ValueError`` whose message starts with the argument's name.
"""

from __future__ import annotations

import numbers
import operator

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16))
REDUCTIONS = ("mean", "sum", "none")


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


def float_array(value, name="logits", *, min_ndim=0):
    """A float16/32/64 array (read in place when already contiguous and native)."""
    if value is None:
        raise TypeError(f"{name}: expected a float array, got None")
    arr = _as_array(value, name)
    kind = arr.dtype.kind
    if kind != "f":
        what = {"b": "bool", "i": "integer", "u": "unsigned integer", "c": "complex",
                "O": "object", "U": "string", "S": "bytes"}.get(kind, str(arr.dtype))
        raise TypeError(f"{name}: must be a float16, float32 or float64 array, got {what} dtype "
                        f"({arr.dtype})")
    if np.dtype(arr.dtype.newbyteorder("=")) not in FLOAT_DTYPES:
        raise TypeError(f"{name}: dtype {arr.dtype} is not supported; use float16, float32 "
                        f"or float64")
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


def label_smoothing(value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"label_smoothing: must be a real number, got {type(value).__name__}")
    eps = float(value)
    if not 0.0 <= eps <= 1.0:  # also rejects NaN
        raise ValueError(f"label_smoothing: must be in [0, 1], got {value!r}")
    return eps


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


def cce_target(value, logits):
    """('index', int64 labels) or ('probs', array of the logits' dtype and shape)."""
    if value is None:
        raise TypeError("target: expected class indices or probabilities, got None")
    arr = _as_array(value, "target")
    kind = arr.dtype.kind
    if kind in "iu":
        return "index", index_target(arr, logits.shape[:-1])
    if kind == "f":
        if arr.shape != logits.shape:
            raise ValueError(f"target: class probabilities must have the shape of logits "
                             f"{logits.shape}, got {arr.shape}")
        probs = _native(arr.astype(logits.dtype, copy=False))
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
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"target: must be a real-valued or bool array, got dtype {arr.dtype}")
    if arr.shape != logits.shape:
        raise ValueError(f"target: must have the shape of logits {logits.shape}, got "
                         f"{arr.shape}")
    return _native(arr.astype(logits.dtype, copy=False))


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
    if np.may_share_memory(out, logits):
        same = (out.__array_interface__["data"][0] == logits.__array_interface__["data"][0]
                and out.strides == logits.strides)
        if not same:
            raise ValueError(f"{name}: overlaps logits without being logits itself; pass "
                             f"out=logits to write the result in place, or a separate array")
        return out, True
    return out, False
