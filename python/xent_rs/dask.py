r"""The losses and calibration metrics over ``dask.array`` data: out of core and on clusters.

Each function takes Dask arrays (NumPy arrays are wrapped with ``dask.array.from_array``),
class axis last as everywhere in xent_rs, and builds a graph on Dask's own tree reduction
(``dask.array.reduction``): every block gives a small partial result, partials are merged in a
tree (``split_every`` at a time), and the last merge gives the answer. Partials are exact
float64 statistics (loss sums and mean divisors, merged with ``math.fsum``) or
:class:`~xent_rs.calibration.CalibrationAccumulator` objects (merged with their ``merge``), so
the results equal the in-memory functions on the concatenated data up to float64 rounding
(1e-12 relative, in practice a few units in the last place) whatever the chunking and the
scheduler (threads, processes, ``dask.distributed``). Partials are plain picklable objects.

Blocks may be split anywhere along the row axes; the class axis is rechunked into one block,
so that every block holds whole rows. The core's float32 kernels for 2 to 16 classes compute
rows several at a time, in groups laid out from the start of each of the core's work chunks,
and a row's last bit depends on where it falls in that grid; for those inputs the rows are
rechunked so that every block starts on the grid, and the result is then bit for bit the
in-memory one (per-row losses are rechunked back to the input's row chunks).

Nothing is computed until asked, except :func:`fit_temperature` (an optimisation over the
data: one Dask reduction per step of the in-memory solver). Argument checks that need no data
(dtypes, shapes, options) run at once and raise what the in-memory function raises; checks of
the values (labels in range, finite weights) run in the blocks, at compute time.

>>> import numpy as np, dask.array as da
>>> import xent_rs as xr, xent_rs.dask as xd
>>> rng = np.random.default_rng(0)
>>> z, y = rng.normal(size=(1000, 5)), rng.integers(0, 5, size=1000)
>>> loss = xd.cross_entropy(da.from_array(z, chunks=(300, 2)), da.from_array(y, chunks=250))
>>> loss
dask.array<cross_entropy-aggregate, shape=(), dtype=float64, chunksize=(), chunktype=numpy.ndarray>
>>> bool(abs(loss.compute() / xr.cross_entropy(z, y) - 1) < 1e-12)
True
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, Callable, List, Literal, Optional, Tuple, Union

import numpy as np
from numpy.typing import ArrayLike

try:
    import dask.array as da
    from dask.delayed import Delayed
except ImportError as exc:  # pragma: no cover - exercised in a child interpreter
    raise ImportError("xent_rs.dask needs Dask (dask.array): pip install xent_rs[dask]") from exc

import xent_rs as _xr

from . import _core
from . import _validate as _v
from .calibration import CalibrationAccumulator, CalibrationResult
from .calibration import _rows
from .calibration import _temperature
from .calibration._binning import Convention

__all__ = ["cross_entropy", "binary_cross_entropy_with_logits", "calibration_report",
           "fit_temperature"]

#: A Dask array, or anything ``np.asarray`` takes (wrapped with ``dask.array.from_array``).
ArrayInput = Union["da.Array", ArrayLike]
Reduction = Literal["mean", "sum", "none"]

# The core's float32 kernels for 2 <= K <= 16 classes compute rows one per SIMD lane, in
# groups laid out from the start of each work chunk of 2**15 elements, and the rows left over
# one at a time (src/parallel.rs CHUNK_ELEMS, src/simd/rowops.rs BLOCK_MAX_K). A block that
# starts on a multiple of the chunk's rows computes every row as the in-memory call does.
_CORE_CHUNK_ELEMENTS = 1 << 15
_CORE_BLOCK_MAX_K = 16


# --------------------------------------------------------------------------------------------
# Inputs and chunking.
# --------------------------------------------------------------------------------------------

def _as_dask(value: ArrayInput, name: str) -> da.Array:
    """``value`` as a Dask array of known shape (``TypeError`` naming ``name`` for None)."""
    arr = value if isinstance(value, da.Array) else da.from_array(_v.array(value, name))
    if any(math.isnan(s) for s in arr.shape):
        raise ValueError(f"{name}: has unknown chunk sizes (shape {arr.shape}); call "
                         f".compute_chunk_sizes() first")
    return arr


def _probe(arr: da.Array, row_axes: int) -> np.ndarray:
    """An empty NumPy array of ``arr``'s dtype with no rows: the in-memory function checks it
    (dtype, trailing shape, options) and tells the result's dtype, reading no data."""
    if row_axes < 0:  # 0-d logits: the in-memory function says what is wrong with them
        return np.empty(arr.shape, dtype=arr.dtype)
    return np.empty((0,) + arr.shape[min(row_axes, 1):], dtype=arr.dtype)


def _grid_rows(k: int, dtype: np.dtype) -> Optional[int]:
    """The rows of the core's work chunk when a row's result depends on its place in it."""
    if dtype.kind == "f" and dtype.itemsize == 4 and 2 <= k <= _CORE_BLOCK_MAX_K:
        return _CORE_CHUNK_ELEMENTS // k
    return None


def _row_chunks(chunks: Tuple[int, ...], n: int, grid: Optional[int]) -> Tuple[int, ...]:
    """The row chunks to compute in: ``chunks`` itself, or (``grid`` given) blocks of a
    multiple of ``grid`` rows about as large as the largest of ``chunks``."""
    if grid is None:
        return chunks
    step = grid * max(1, round(max(chunks, default=0) / grid))
    full, rest = divmod(n, step)
    return (step,) * full + ((rest,) if rest or not full else ())


# --------------------------------------------------------------------------------------------
# The tree reduction: one partial per block, merged a few at a time.
# --------------------------------------------------------------------------------------------

def _leaves(parts: Any) -> list:
    """The partials of ``dask.array.reduction``'s nested lists (one level per axis)."""
    if not isinstance(parts, list):
        return [parts]
    return [leaf for part in parts for leaf in _leaves(part)]


def _identity(block: Any, axis: Any = None, keepdims: Any = None,
              computing_meta: bool = False) -> Any:
    return block


def _combine(parts: Any, axis: Any = None, keepdims: Any = None, computing_meta: bool = False,
             *, merge: Callable[[list], Any]) -> Any:
    return parts if computing_meta else merge(_leaves(parts))


def _aggregate(parts: Any, axis: Any = None, keepdims: Any = None,
               computing_meta: bool = False, *, merge: Callable[[list], Any],
               finish: Callable[[Any], Any]) -> Any:
    return parts if computing_meta else finish(merge(_leaves(parts)))


def _tree(parts: da.Array, merge: Callable[[list], Any], finish: Callable[[Any], Any],
          dtype: Any, name: str) -> da.Array:
    """A 0-d Dask array: ``finish`` of the ``merge`` of the partials in ``parts`` (an array
    with one partial object per block), reduced as a tree by ``dask.array.reduction``."""
    return da.reduction(parts, _identity, partial(_aggregate, merge=merge, finish=finish),
                        combine=partial(_combine, merge=merge), axis=None, keepdims=False,
                        dtype=dtype, concatenate=False, meta=np.empty((), dtype=dtype),
                        name=name)


def _per_block(func: Callable[..., Any], index: str, *args: Any, name: str,
               **kwargs: Any) -> da.Array:
    """One partial object per block of the blockwise ``func`` over ``args`` (array, index
    pairs; a NumPy value or None goes with index None)."""
    return da.blockwise(func, index, *args, adjust_chunks=dict.fromkeys(index, 1),
                        dtype=object, meta=np.empty((0,) * len(index), dtype=object),
                        concatenate=True, token=f"{name}-partials", **kwargs)


def _add_sums(parts: List[np.ndarray]) -> np.ndarray:
    """float64 statistics added up column by column, each sum correctly rounded."""
    return np.array([math.fsum(column) for column in zip(*parts)], dtype=np.float64)


def _finish_loss(sums: np.ndarray, reduction: str, dtype: np.dtype) -> Any:
    """The reduced loss from (loss sum, divisor), rounded as the in-memory functions round."""
    return _xr._reduced(sums[0], sums[1], reduction, dtype)  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------------
# Losses.
# --------------------------------------------------------------------------------------------

def _cce_sums(logits: np.ndarray, target: np.ndarray, weight: Optional[np.ndarray],
              ignore_index: int, eps: float) -> np.ndarray:
    """A block's float64 (loss sum, mean divisor), as ``xent_rs.cross_entropy`` has them
    before it divides and rounds."""
    x = _v.class_logits(logits)
    k = x.shape[-1]
    w = _v.class_weight(weight, k)
    kind, tgt = _v.cce_target(target, x)
    if kind == "index":
        divisor = _core.cce_check_labels(tgt, k, ignore_index, w)
        labels, probs = tgt, None
    else:
        divisor, labels, probs = x.size // k, None, tgt.reshape(-1)
    total = _core.cce_forward_backward(x, k, labels, probs, w, ignore_index, eps, 1.0, False)
    return np.array([total, divisor], dtype=np.float64)


def _cce_rows(logits: np.ndarray, target: np.ndarray, weight: Optional[np.ndarray],
              ignore_index: int, eps: float) -> np.ndarray:
    return _xr.cross_entropy(logits, target, weight=weight, ignore_index=ignore_index,
                             label_smoothing=eps, reduction="none")


def cross_entropy(logits: ArrayInput, target: ArrayInput, *,
                  weight: Optional[ArrayInput] = None, ignore_index: int = -100,
                  label_smoothing: float = 0.0, reduction: Reduction = "mean") -> da.Array:
    r"""Categorical cross-entropy of Dask arrays, as :func:`xent_rs.cross_entropy`.

    Parameters
    ----------
    logits : dask.array.Array or array_like, float, shape (..., K)
        Unnormalised scores, class axis last, chunked anyhow (the class axis is rechunked
        into one block).
    target : dask.array.Array or array_like
        Class indices of shape ``logits.shape[:-1]`` or class probabilities of the logits'
        shape, as for :func:`xent_rs.cross_entropy`; rechunked to the logits' rows.
    weight : dask.array.Array or array_like, shape (K,), optional
        Per-class weights (a Dask array is checked in the blocks, at compute time).
    ignore_index : int, default -100
    label_smoothing : float in [0, 1], default 0
    reduction : {"mean", "sum", "none"}
        ``"mean"`` divides the total loss by the total weight of the non-ignored rows (index
        targets) or by the number of rows, summed over the blocks.

    Returns
    -------
    dask.array.Array
        0-d, of the dtype :func:`xent_rs.cross_entropy` returns (float32 for 16-bit logits),
        or for ``"none"`` the per-row losses, shape ``logits.shape[:-1]``, in the input's row
        chunks. Nothing is computed until asked.

    Raises
    ------
    TypeError, ValueError
        At once for bad options, dtypes and shapes; at compute time for bad values (a label
        out of range, a negative weight); the message names the argument.

    Notes
    -----
    Each block gives its float64 loss sum and divisor (the core's own, before rounding);
    these are added with ``math.fsum`` in Dask's reduction tree and divided once, so the
    result is the in-memory one to float64 rounding of the sums.

    Examples
    --------
    >>> import numpy as np, dask.array as da, xent_rs.dask as xd
    >>> z = da.from_array(np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]), chunks=(1, 2))
    >>> round(float(xd.cross_entropy(z, np.array([2, 0]), reduction="sum").compute()), 9)
    1.506218253
    >>> xd.cross_entropy(z, np.array([2, 0]), reduction="none").compute()
    array([0.40760596, 1.09861229])
    """
    x, t = _as_dask(logits, "logits"), _as_dask(target, "target")
    if x.ndim >= 1 and t.shape not in (x.shape[:-1], x.shape):
        raise ValueError(f"target: must have shape {x.shape[:-1]} (class indices) or "
                         f"{x.shape} (class probabilities), got {t.shape}")
    dask_weight = weight if isinstance(weight, da.Array) else None
    probe = _xr.cross_entropy(
        _probe(x, x.ndim - 1), _probe(t, x.ndim - 1),
        weight=weight if dask_weight is None else np.zeros(dask_weight.shape, dask_weight.dtype),
        ignore_index=ignore_index, label_smoothing=label_smoothing, reduction=reduction)
    eps, ignore_index = float(label_smoothing), int(ignore_index)
    k, probs = x.shape[-1], t.shape == x.shape
    w: Any
    if dask_weight is None:
        w, w_index = _v.class_weight(weight, k), None
    else:
        w, w_index = dask_weight.rechunk(-1), "j"

    flat = x.reshape(-1, k) if x.ndim != 2 else x
    rows = _row_chunks(flat.chunks[0], flat.shape[0], _grid_rows(k, x.dtype))
    flat = flat.rechunk((rows, (k,)))
    t_flat = t.reshape((-1, k) if probs else (-1,)).rechunk((rows, (k,)) if probs else (rows,))
    args = (flat, "ij", t_flat, "ij" if probs else "i", w, w_index)
    options = {"ignore_index": ignore_index, "eps": eps}
    if reduction == "none":
        out = da.blockwise(_cce_rows, "i", *args, dtype=probe.dtype, concatenate=True,
                           meta=np.empty((0,), dtype=probe.dtype), token="cross_entropy",
                           **options)
        out = out.reshape(x.shape[:-1] or (1,)).rechunk(x.chunks[:-1] or ((1,),))
        return out if x.ndim > 1 else out[0]
    parts = _per_block(_cce_sums, "i", *args, name="cross_entropy", **options)
    return _tree(parts, _add_sums, partial(_finish_loss, reduction=reduction, dtype=x.dtype),
                 probe.dtype, "cross_entropy")


def _bce_sums(logits: np.ndarray, target: np.ndarray, weight: Optional[np.ndarray],
              pos_weight: Optional[np.ndarray], eps: float) -> np.ndarray:
    """A block's float64 (loss sum, number of elements), as
    ``xent_rs.binary_cross_entropy_with_logits`` has them before it divides and rounds."""
    x = _v.float_array(logits)
    y = _v.bce_target(target, x)
    w, w_full = _v.broadcast_factor(weight, "weight", x.shape)
    pw, pw_full = _v.broadcast_factor(pos_weight, "pos_weight", x.shape)
    last = x.shape[-1] if x.ndim else 1
    total = _core.bce_forward_backward(x.reshape(-1), y.reshape(-1), last, w, w_full, pw,
                                       pw_full, eps, 1.0)
    return np.array([total, x.size], dtype=np.float64)


def _bce_rows(logits: np.ndarray, target: np.ndarray, weight: Optional[np.ndarray],
              pos_weight: Optional[np.ndarray], eps: float) -> np.ndarray:
    return _xr.binary_cross_entropy_with_logits(logits, target, weight=weight,
                                                pos_weight=pos_weight, label_smoothing=eps,
                                                reduction="none")


def _bce_factor(value: Optional[ArrayInput], name: str,
                x: da.Array) -> Tuple[Optional[da.Array], Optional[np.ndarray]]:
    """(``weight`` or ``pos_weight`` as a Dask array of the logits' number of dimensions,
    chunked as the logits where it is not broadcast, or None; a NumPy stand-in for the
    probe). NumPy values are checked now, Dask ones in the blocks."""
    if value is None:
        return None, None
    if isinstance(value, da.Array):
        _v.nonneg_weights(np.zeros(0, value.dtype), name)  # the dtype; values at compute
        f = value
    else:
        f = _v.nonneg_weights(value, name)
    try:
        fits = np.broadcast_shapes(f.shape, x.shape) == x.shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"{name}: shape {f.shape} does not broadcast to logits {x.shape}")
    f = da.asarray(f).reshape((1,) * (x.ndim - f.ndim) + f.shape)
    f = f.rechunk(tuple((1,) if s == 1 else c for s, c in zip(f.shape, x.chunks)))
    return f, np.zeros((1,) * min(f.ndim, 1) + f.shape[1:])


def binary_cross_entropy_with_logits(logits: ArrayInput, target: ArrayInput, *,
                                     weight: Optional[ArrayInput] = None,
                                     pos_weight: Optional[ArrayInput] = None,
                                     label_smoothing: float = 0.0,
                                     reduction: Reduction = "mean") -> da.Array:
    r"""Sigmoid binary cross-entropy of Dask arrays, as
    :func:`xent_rs.binary_cross_entropy_with_logits`.

    The loss is elementwise, so blocks are used as they come (no rechunking of the logits).

    Parameters
    ----------
    logits : dask.array.Array or array_like, float, any shape
    target : dask.array.Array or array_like, same shape, values in [0, 1]
        Rechunked to the logits' chunks.
    weight, pos_weight : dask.array.Array or array_like, optional
        Non-negative factors broadcastable to ``logits`` (``pos_weight`` typically ``(C,)``,
        along the last axis), up to the logits' full shape; cut to the logits' blocks. NumPy
        values are checked at once, Dask ones in the blocks at compute time.
    label_smoothing : float in [0, 1], default 0
    reduction : {"mean", "sum", "none"}
        ``"mean"`` divides by the number of elements, as PyTorch.

    Returns
    -------
    dask.array.Array
        0-d, of the dtype the in-memory function returns, or for ``"none"`` the elementwise
        losses in the logits' chunks. Nothing is computed until asked.

    Raises
    ------
    TypeError, ValueError
        As :func:`cross_entropy`; the message names the argument.

    Examples
    --------
    >>> import numpy as np, dask.array as da, xent_rs.dask as xd
    >>> z = da.zeros((4, 3), chunks=(3, 2))
    >>> float(xd.binary_cross_entropy_with_logits(z, da.ones((4, 3))).compute())
    0.6931471805599453
    """
    x, t = _as_dask(logits, "logits"), _as_dask(target, "target")
    if t.shape != x.shape:
        raise ValueError(f"target: must have the shape of logits {x.shape}, got {t.shape}")
    w, w_probe = _bce_factor(weight, "weight", x)
    pw, pw_probe = _bce_factor(pos_weight, "pos_weight", x)
    probe = _xr.binary_cross_entropy_with_logits(
        _probe(x, x.ndim), _probe(t, x.ndim), weight=w_probe, pos_weight=pw_probe,
        label_smoothing=label_smoothing, reduction=reduction)
    scalar = x.ndim == 0
    if scalar:  # blocks need an axis; a 0-d input is one row of one element
        x, t = x[None], t[None]
        w, pw = (None if f is None else f[None] for f in (w, pw))
    index = "abcdefghijklmnopqrstuvwxyz"[:x.ndim]
    args = (x, index, t.rechunk(x.chunks), index) + tuple(
        a for f in (w, pw) for a in ((f, index) if f is not None else (None, None)))
    eps = float(label_smoothing)
    if reduction == "none":
        out = da.blockwise(_bce_rows, index, *args, eps=eps, dtype=probe.dtype,
                           meta=np.empty((0,) * x.ndim, dtype=probe.dtype),
                           token="binary_cross_entropy_with_logits")
        return out[0] if scalar else out
    parts = _per_block(_bce_sums, index, *args, eps=eps,
                       name="binary_cross_entropy_with_logits")
    return _tree(parts, _add_sums, partial(_finish_loss, reduction=reduction, dtype=x.dtype),
                 probe.dtype, "binary_cross_entropy_with_logits")


# --------------------------------------------------------------------------------------------
# Calibration.
# --------------------------------------------------------------------------------------------

def _scores_and_labels(scores: ArrayInput, labels: ArrayInput, name: str,
                       from_logits: bool) -> Tuple[da.Array, da.Array]:
    """(N, K) or (N,) scores with whole rows per block and labels in the same row chunks;
    dtype and shape checks as the in-memory functions make them, reading no data."""
    s, y = _as_dask(scores, name), _as_dask(labels, "labels")
    n = s.shape[0] if s.ndim else 0
    # The in-memory checks on no rows: the dtype, (N,) or (N, K) with K >= 2, and N > 0.
    _v.scores(np.empty((0,) + s.shape[1:], s.dtype), name, from_logits, allow_empty=n > 0)
    _v.labels(np.empty(0, y.dtype), 0, None if s.ndim == 1 else s.shape[1])
    if y.shape != (n,):
        raise ValueError(f"labels: expected shape ({n},) to match the scores, got {y.shape}")
    s = s.rechunk({1: -1}) if s.ndim == 2 else s
    return s, y.rechunk((s.chunks[0],))


def _accumulate(scores: np.ndarray, labels: np.ndarray, n_bins: int, convention: Convention,
                from_logits: bool) -> CalibrationAccumulator:
    """A block's accumulator."""
    acc = CalibrationAccumulator(n_bins, convention=convention, from_logits=from_logits)
    # Blocks that came over the network may start at any byte (the kernels read aligned
    # buffers; an aligned block is not copied).
    scores, labels = (np.require(a, requirements=["A"]) for a in (scores, labels))
    try:
        return acc.update(scores, labels)
    except (TypeError, ValueError) as exc:  # name the argument as calibration_report has it
        raise type(exc)(str(exc).replace("probs_or_logits:", "probs:", 1)) from None


def _merge_accumulators(parts: List[CalibrationAccumulator]) -> CalibrationAccumulator:
    """A new accumulator holding the data of ``parts`` (which stay as they are)."""
    first = parts[0]
    merged = CalibrationAccumulator(first.n_bins, convention=first.convention,
                                    from_logits=first.from_logits)
    for part in parts:
        merged.merge(part)
    return merged


def _calibration_result(acc: CalibrationAccumulator) -> CalibrationResult:
    return acc.result()


def calibration_report(probs: ArrayInput, labels: ArrayInput, *, n_bins: int = 15,
                       convention: Convention = "right",
                       from_logits: bool = False) -> Delayed:
    r"""Every calibration metric of Dask data, as a Dask Delayed of a
    :class:`~xent_rs.calibration.CalibrationResult`.

    Each block is scored by a :class:`~xent_rs.calibration.CalibrationAccumulator` (uniform
    bins); the accumulators are merged in Dask's reduction tree, which adds their float64
    statistics, so the result is what one accumulator over the concatenated data gives (and
    what :func:`~xent_rs.calibration.calibration_error`, :func:`~xent_rs.calibration.brier_score`
    and the rest give on it), to float64 rounding.

    Parameters
    ----------
    probs : dask.array.Array or array_like, float, shape (N, K) or (N,)
        Probabilities, or logits with ``from_logits=True``; ``(N,)`` is binary (p of the
        positive class). The class axis is rechunked into one block.
    labels : dask.array.Array or array_like, int, shape (N,)
        Rechunked to the rows of ``probs``.
    n_bins : int, default 15
    convention : {"right", "torchmetrics"}, default "right"
    from_logits : bool, default False

    Returns
    -------
    dask.delayed.Delayed
        ``.compute()`` gives the :class:`~xent_rs.calibration.CalibrationResult`.

    Raises
    ------
    TypeError, ValueError
        At once for bad options, dtypes, shapes and empty input; at compute time for bad
        values (NaN, probabilities outside [0, 1], labels out of range).

    Examples
    --------
    >>> import numpy as np, dask.array as da, xent_rs.dask as xd
    >>> p = da.from_array(np.array([0.9, 0.8, 0.3, 0.6]), chunks=2)
    >>> report = xd.calibration_report(p, np.array([1, 1, 0, 0]), n_bins=5)
    >>> r = report.compute()
    >>> r.count, round(r.brier, 4)
    (4, 0.125)
    """
    template = CalibrationAccumulator(n_bins, convention=convention, from_logits=from_logits)
    s, y = _scores_and_labels(probs, labels, "probs", template.from_logits)
    index = "ij" if s.ndim == 2 else "i"
    parts = _per_block(_accumulate, "i", s, index, y, "i", n_bins=template.n_bins,
                       convention=template.convention, from_logits=template.from_logits,
                       name="calibration_report")
    report = _tree(parts, _merge_accumulators, _calibration_result, object,
                   "calibration_report")
    return report.to_delayed().item()


# --------------------------------------------------------------------------------------------
# Temperature scaling.
# --------------------------------------------------------------------------------------------

def _temperature_rows(logits: np.ndarray, labels: np.ndarray, divide_by: Optional[float],
                      check: bool) -> Tuple[np.ndarray, np.ndarray]:
    """A block's (N, K) logits (binary (N,) ones as ``[0, z]``), divided by ``divide_by``
    when given, and int64 labels; with ``check``, validated as the in-memory function does."""
    if check:  # as _validate.logits_and_labels, but a block may be empty
        z, binary = _v.scores(logits, "logits", True, allow_empty=True)
        z = np.stack([np.zeros_like(z), z], axis=1) if binary else z
        y = _v.labels(labels, z.shape[0], z.shape[1])
    else:
        z = _v.any_float_array(logits, "logits")
        z = np.stack([np.zeros_like(z), z], axis=1) if z.ndim == 1 else z
        y = np.require(labels, dtype=np.int64, requirements=["C", "A"])
    return (z if divide_by is None else z / divide_by), y


def _temperature_checks(logits: np.ndarray, labels: np.ndarray, weight: Optional[np.ndarray],
                        divide_by: Optional[float]) -> np.ndarray:
    """What the in-memory solver looks at before it starts, for one block: (live rows,
    a live row's labelled logit is -inf, every live row's loss is constant in T, the largest
    finite |logit|, every live row's labelled class has the largest logit)."""
    z, y = _temperature_rows(logits, labels, divide_by, True)
    live = np.ones(len(y), dtype=bool) if weight is None else weight[y] > 0
    constant, scale, top = _temperature._scan(z, y, live)
    neginf = np.isneginf(z[np.arange(len(y)), y][live]).any()
    return np.array([live.sum(), neginf, constant, scale, top], dtype=np.float64)


def _merge_checks(parts: List[np.ndarray]) -> np.ndarray:
    live, neginf, constant, scale, top = np.array(parts).T
    return np.array([math.fsum(live), neginf.any(), constant.all(), scale.max(), top.all()])


def _temperature_sums(logits: np.ndarray, labels: np.ndarray, weight: Optional[np.ndarray],
                      beta: float, divide_by: Optional[float]) -> np.ndarray:
    """A block's float64 (sum of w·dloss/dbeta, sum of w·d²loss/dbeta², of w·d³loss/dbeta³
    (NaN where the pass has none), sum of w) at ``beta``, from one pass."""
    z, y = _temperature_rows(logits, labels, divide_by, False)
    sums = _core.temperature_pass(z, z.shape[1], y, beta, weight)
    return np.array(sums[1:5], dtype=np.float64)


def _fit(z: da.Array, y: da.Array, weight: Optional[np.ndarray],
         divide_by: Optional[float]) -> float:
    """The in-memory ``fit_temperature`` after its argument checks, one Dask pass per look
    at the data."""
    index = "ij" if z.ndim == 2 else "i"

    def reduce(func: Callable[..., np.ndarray], merge: Callable[[list], Any],
               finish: Callable[[Any], Any], **kwargs: Any) -> Any:
        parts = _per_block(func, "i", z, index, y, "i", weight, None, divide_by=divide_by,
                           name="fit_temperature", **kwargs)
        return _tree(parts, merge, finish, object, "fit_temperature").compute()

    live, neginf, constant, scale, top = reduce(_temperature_checks, _merge_checks,
                                                _identity)
    if live == 0:
        raise ValueError("weight: every row's class has weight 0; the loss is undefined")
    if neginf:
        raise ValueError("labels: a row's labelled class has logit -inf (infinite loss at "
                         "every temperature)")
    if constant:
        return 1.0
    if divide_by is None and not 1e-100 <= scale <= 1e100:
        # As in memory: T scales with the logits; search on z / scale, where 1/T stays in range.
        return _temperature._unscaled(_fit(z, y, weight, float(scale)), scale)

    def derivatives(beta: float) -> Tuple[float, float, float]:
        slope, curvature, third, total = reduce(_temperature_sums, _add_sums, _identity,
                                                beta=float(beta))
        return float(slope / total), float(curvature / total), float(third / total)

    return _temperature._solve(derivatives, float(scale), top)


def fit_temperature(logits: ArrayInput, labels: ArrayInput, *,
                    weight: Optional[ArrayInput] = None) -> float:
    r"""Temperature scaling of Dask data, as :func:`xent_rs.calibration.fit_temperature`.

    The same solver (bracketing, then regula falsi on the derivative of the mean loss in
    :math:`\beta = 1/T`), with every evaluation of the derivative one Dask reduction of the
    blocks' float64 sums (typically 8 to 17 passes over the data in all, one of them the
    checks). This function computes: it returns a float. ``persist()`` the inputs first when
    they are costly to produce.

    Parameters
    ----------
    logits : dask.array.Array or array_like, float, shape (N, K) or (N,)
        ``(N,)``: binary logits (sigmoid), read as ``[0, z]``. The class axis is rechunked
        into one block.
    labels : dask.array.Array or array_like, int, shape (N,)
    weight : array_like, shape (K,), optional
        Per-class weights (``(2,)`` for binary logits); a Dask array is computed first.

    Returns
    -------
    float
        The temperature ``T``, as the in-memory function finds it on the concatenated data.

    Raises
    ------
    TypeError, ValueError
        What the in-memory function raises, with the same messages.

    Examples
    --------
    >>> import numpy as np, dask.array as da, xent_rs.dask as xd
    >>> from xent_rs.calibration import fit_temperature
    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(2000, 4)) * 3.0
    >>> y = np.where(rng.random(2000) < 0.7, z.argmax(axis=1), rng.integers(0, 4, 2000))
    >>> t = xd.fit_temperature(da.from_array(z, chunks=300), y)
    >>> abs(t / fit_temperature(z, y) - 1) < 1e-9
    True
    """
    z, y = _scores_and_labels(logits, labels, "logits", True)
    w = _v.class_weight(weight.compute() if isinstance(weight, da.Array) else weight,
                        z.shape[1] if z.ndim == 2 else 2)
    if w is not None:  # only ratios matter: the largest weight into [1, 2), exactly
        w = _rows.scaled_weights(w, len(w), _rows.weight_exponent(w, len(w)))
    return _fit(z, y, w, None)
