"""The ``xent-rs`` command line: calibration report of predictions saved to disk.

``xent-rs report PREDICTIONS LABELS`` (also ``python -m xent_rs report ...``) streams the rows
of a ``.npy``, ``.npz`` or ``.parquet`` file through :class:`~xent_rs.calibration.
CalibrationAccumulator` one window of ``--chunk-rows`` rows at a time, so that files larger
than memory are scored with memory bounded by the window, and prints every metric of
:class:`~xent_rs.calibration.CalibrationResult` (a table, or one JSON object with ``--json``).
``--temperature`` fits temperature scaling on the same windows (one streamed pass per solver
step) and adds the metrics after it; ``--plot`` writes the reliability diagram.

Windows are read from the file itself, never through a memory map of the whole file: the
pages of a map stay resident once touched, so a walk over a mapped 1.5 GB file ends with
1.5 GB resident. Each window is read into a buffer of its own and freed after use.

Exit status: 0; 2 for a usage error (argparse's); 1 for data that cannot be read or does not
fit together, with one line on standard error naming the file and the problem.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import zipfile
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Protocol, Sequence, Tuple

import numpy as np

import xent_rs as xr
from . import _core
from .calibration import CalibrationAccumulator, CalibrationResult
from . import _validate
from .calibration import _rows, _temperature
from .calibration._bootstrap import StreamedBootstrap

__all__ = ["main", "build_parser", "DataError", "METRIC_KEYS", "BEYOND_KEYS", "REPORT_KEYS",
           "CHUNK_BYTES"]

#: About this many bytes of predictions are read per window when ``--chunk-rows`` is not given.
CHUNK_BYTES = 64 << 20

#: The keys of the JSON object (the ``CalibrationResult`` fields, and ``n_classes``).
METRIC_KEYS = ("count", "weight_sum", "n_classes", "accuracy", "nll", "ece", "rms", "mce",
               "brier", "reliability", "resolution", "uncertainty", "mean_confidence")
#: The keys added after them: classwise ECE and RMS, and the debiased RMS error.
BEYOND_KEYS = ("classwise_ece", "classwise_rms", "debiased_rms")
#: Every metric key of a report, in order.
REPORT_KEYS = METRIC_KEYS + BEYOND_KEYS
#: The interval level of ``--bootstrap``.
BOOTSTRAP_CONFIDENCE = 0.95

# Rows summing to 1 within this (and every value in [0, 1]) are guessed to be probabilities.
_GUESS_SUM_ATOL = 1e-3


class _Stream(Protocol):
    """What the ``.npy`` reader needs of a file or an archive member."""

    def read(self, size: int = -1) -> bytes: ...
    def readinto(self, buffer: Any) -> Optional[int]: ...
    def seek(self, offset: int, whence: int = 0) -> int: ...
    def tell(self) -> int: ...
    def __enter__(self) -> Any: ...
    def __exit__(self, *exc: Any) -> Any: ...


class _UsageError(Exception):
    """A usage error found only once the data is read (exit status 2, as argparse's)."""


class DataError(Exception):
    """Data that cannot be read or does not fit together: ``path`` and what is wrong."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = path, problem


# --------------------------------------------------------------------------------------------
# Sources: one array of a file, read window by window.
# --------------------------------------------------------------------------------------------

class Source:
    """One array in a file, ``n_rows`` rows of ``width`` values (``width`` 0: a 1-D array),
    read as consecutive blocks of rows by :meth:`blocks`.

    Attributes
    ----------
    name : str
        How messages name it: the path, with the array's key or columns where it has them.
    n_rows : int
    width : int
        K for an ``(N, K)`` array, 0 for ``(N,)``.
    dtype : numpy.dtype
        The dtype blocks arrive in.
    """

    name: str
    n_rows: int
    width: int
    dtype: np.dtype

    def blocks(self, rows: int) -> Iterator[np.ndarray]:
        """Consecutive blocks of about ``rows`` rows (any sizes), covering the array once."""
        raise NotImplementedError

    @property
    def row_bytes(self) -> int:
        """Bytes per row."""
        return max(self.width, 1) * self.dtype.itemsize


def _read_exact(stream: _Stream, out: np.ndarray, name: str) -> np.ndarray:
    """Fill ``out`` from ``stream``; a ``DataError`` if the stream ends first."""
    view = out.reshape(-1).view(np.uint8).data
    done = 0
    while done < len(view):
        got = stream.readinto(view[done:])
        if not got:
            raise DataError(name, f"the file is truncated (ended {len(view) - done} bytes "
                                  "before the array's last row)")
        done += got
    return out


class NpySource(Source):
    """A ``.npy`` array, or one member of a ``.npz`` archive, read from its stream.

    Parameters
    ----------
    name : str
        For messages.
    opener : callable
        Returns a fresh binary stream at the start of the ``.npy`` data (a file, or an
        archive member); called once here and once per pass over the rows.
    seekable : bool
        Whether the stream seeks cheaply (a file; not a compressed archive member), which
        Fortran-ordered arrays need to be read window by window.
    """

    def __init__(self, name: str, opener: Callable[[], _Stream], seekable: bool) -> None:
        self.name, self._open, self._seekable = name, opener, seekable
        with opener() as stream:
            try:
                version = np.lib.format.read_magic(stream)
                if version == (1, 0):
                    header = np.lib.format.read_array_header_1_0(stream)
                else:
                    header = np.lib.format.read_array_header_2_0(stream)
            except ValueError as exc:
                raise DataError(name, f"not a readable .npy array ({exc})") from None
            self._offset = stream.tell()
        shape, self._fortran, dtype = header
        self.dtype = np.dtype(dtype)
        if self.dtype.hasobject or self.dtype.names is not None:
            raise DataError(name, f"holds a {self.dtype} array, not numbers")
        if len(shape) not in (1, 2):
            raise DataError(name, f"expected an array of shape (N,) or (N, K), got shape "
                                  f"{tuple(shape)}")
        self.n_rows = int(shape[0])
        self.width = int(shape[1]) if len(shape) == 2 else 0
        self._fortran = self._fortran and self.width > 1

    def blocks(self, rows: int) -> Iterator[np.ndarray]:
        if self._fortran:
            yield from self._fortran_blocks(rows)
            return
        shape = (self.width,) if self.width else ()
        with self._open() as stream:
            stream.seek(self._offset)
            for start in range(0, self.n_rows, rows):
                n = min(rows, self.n_rows - start)
                yield _read_exact(stream, np.empty((n,) + shape, self.dtype), self.name)

    def _fortran_blocks(self, rows: int) -> Iterator[np.ndarray]:
        """Column-major data: one read per column and window (from a file), or the whole
        array at once (from a compressed archive member, whose stream cannot seek back)."""
        item, n_rows = self.dtype.itemsize, self.n_rows
        with self._open() as stream:
            if not self._seekable:
                stream.seek(self._offset)
                columns = np.empty((self.width, n_rows), self.dtype)
                yield np.ascontiguousarray(_read_exact(stream, columns, self.name).T)
                return
            for start in range(0, n_rows, rows):
                n = min(rows, n_rows - start)
                columns = np.empty((self.width, n), self.dtype)
                for j in range(self.width):
                    stream.seek(self._offset + (j * n_rows + start) * item)
                    _read_exact(stream, columns[j], self.name)
                yield np.ascontiguousarray(columns.T)


def _npy_file(path: str) -> NpySource:
    size = os.path.getsize(path)
    source = NpySource(path, lambda: open(path, "rb"), seekable=True)
    needed = source._offset + source.n_rows * source.row_bytes
    if size < needed:
        raise DataError(path, f"the file is truncated ({size} bytes; its header describes "
                              f"{needed})")
    return source


def _npz_member(path: str, key: Optional[str], option: str) -> NpySource:
    try:
        with zipfile.ZipFile(path) as archive:
            members = {n[:-4]: archive.getinfo(n) for n in archive.namelist()
                       if n.endswith(".npy")}
    except zipfile.BadZipFile as exc:
        raise DataError(path, f"not a readable .npz archive ({exc})") from None
    held = ", ".join(sorted(members)) or "no arrays"
    if key is None:
        if len(members) != 1:
            raise DataError(path, f"holds several arrays ({held}); choose one with {option}")
        key = next(iter(members))
    elif key not in members:
        raise DataError(path, f"has no array named {key!r} (it holds {held})")
    info = members[key]

    def opener() -> _Stream:
        archive = zipfile.ZipFile(path)
        return _ClosingStream(archive.open(info), archive)

    return NpySource(f"{path} (array {key!r})", opener,
                     seekable=info.compress_type == zipfile.ZIP_STORED)


class _ClosingStream:
    """An archive member's stream that closes its archive too."""

    def __init__(self, stream: Any, archive: zipfile.ZipFile) -> None:
        self._stream, self._archive = stream, archive  # stream: a zipfile.ZipExtFile

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._stream, attr)

    def __enter__(self) -> "_ClosingStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stream.close()
        self._archive.close()


def _pyarrow_parquet(path: str) -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(path, "reading Parquet needs pyarrow (pip install 'xent_rs[cli]' or "
                              "pip install pyarrow)") from None
    return pq


class ParquetSource(Source):
    """Columns of a Parquet file: one list column (``(N, K)``), one numeric column
    (``(N,)``), or several numeric columns (``(N, K)``, one class per column).

    Parameters
    ----------
    path : str
    columns : list of str
        The columns to read (one list column, or numeric columns).
    """

    def __init__(self, path: str, columns: List[str]) -> None:
        _pyarrow_parquet(path)
        import pyarrow as pa

        self.path, self.columns = path, columns
        self._file = _parquet_file(path)
        schema = self._file.schema_arrow
        self.n_rows = int(self._file.metadata.num_rows)
        types = [schema.field(c).type for c in columns]
        quoted = ", ".join(map(repr, columns))
        self.name = f"{path} (column{'s' if len(columns) > 1 else ''} {quoted})"
        self._list = len(columns) == 1 and _is_list(types[0])
        if self._list:
            value_type = types[0].value_type
            if not (pa.types.is_integer(value_type) or pa.types.is_floating(value_type)):
                raise DataError(self.name, f"holds lists of {value_type}, not numbers")
            self.dtype = np.dtype(value_type.to_pandas_dtype())
            self.width = self._first_list_length()
        else:
            for c, t in zip(columns, types):
                if not _is_numeric(t):
                    raise DataError(path, f"column {c!r} holds {t}, not numbers")
            dtypes = [np.dtype(t.to_pandas_dtype()) for t in types]
            if len(columns) == 1:
                self.dtype = dtypes[0]
            else:  # a common float dtype: float32 when every column is float32
                self.dtype = np.result_type(np.float32, *dtypes)
            self.width = len(columns) if len(columns) > 1 else 0

    def _first_list_length(self) -> int:
        t = self._file.schema_arrow.field(self.columns[0]).type
        if hasattr(t, "list_size"):
            return int(t.list_size)
        for batch in self._file.iter_batches(batch_size=1, columns=self.columns):
            return int(batch.column(0)[0:1].value_lengths()[0].as_py() or 0)
        return 0

    def blocks(self, rows: int) -> Iterator[np.ndarray]:
        start = 0
        for batch in _parquet_file(self.path).iter_batches(batch_size=rows,
                                                           columns=self.columns):
            for c, column in zip(self.columns, batch.columns):
                if column.null_count:
                    raise DataError(self.path, f"column {c!r} has missing (null) values "
                                               f"in rows {start}-{start + len(batch) - 1}")
            if self._list:
                yield self._list_block(batch.column(0), start)
            elif self.width == 0:
                yield batch.column(0).to_numpy(zero_copy_only=False)
            else:
                out = np.empty((len(batch), self.width), self.dtype)
                for j, column in enumerate(batch.columns):
                    out[:, j] = column.to_numpy(zero_copy_only=False)
                yield out
            start += len(batch)

    def _list_block(self, column: Any, start: int) -> np.ndarray:
        n, k = len(column), self.width
        if not hasattr(column.type, "list_size"):
            lengths = column.value_lengths().to_numpy(zero_copy_only=False)
            bad = np.flatnonzero(lengths != k)
            if bad.size:
                raise DataError(self.name, f"row {start + bad[0]} has {lengths[bad[0]]} "
                                           f"values, the first row {k}")
        values = column.flatten()
        if values.null_count:
            raise DataError(self.name, f"has missing (null) values in rows "
                                       f"{start}-{start + n - 1}")
        return values.to_numpy(zero_copy_only=False).astype(self.dtype, copy=False
                                                             ).reshape(n, k)


def _parquet_file(path: str) -> Any:
    pq = _pyarrow_parquet(path)
    try:
        return pq.ParquetFile(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(path, f"not a readable Parquet file ({_one_line(exc)})") from None


def _is_list(t: Any) -> bool:
    import pyarrow as pa
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _is_numeric(t: Any) -> bool:
    import pyarrow as pa
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)


def _parquet_columns(path: str) -> List[str]:
    return list(_parquet_file(path).schema_arrow.names)


def _suffix(path: str) -> str:
    return os.path.splitext(path)[1].lower()


def open_predictions(path: str, key: Optional[str], label_column: Optional[str]) -> Source:
    """The predictions in ``path``: a ``.npy`` file, the ``.npz`` member ``key``, or
    Parquet columns (``key``, the one list column, or every numeric column except
    ``label_column``)."""
    _exists(path)
    suffix = _suffix(path)
    if suffix == ".npy":
        return _npy_file(path)
    if suffix == ".npz":
        return _npz_member(path, key, "--key")
    if suffix == ".parquet":
        names = _parquet_columns(path)
        if key is not None:
            if key not in names:
                raise DataError(path, f"has no column {key!r} (it has {', '.join(names)})")
            return ParquetSource(path, [key])
        schema = _parquet_file(path).schema_arrow
        others = [c for c in names if c != label_column]
        lists = [c for c in others if _is_list(schema.field(c).type)]
        if len(lists) > 1:
            raise DataError(path, f"has several list columns ({', '.join(lists)}); choose "
                                  "one with --key")
        if lists:
            return ParquetSource(path, lists)
        numeric = [c for c in others if _is_numeric(schema.field(c).type)]
        if not numeric:
            raise DataError(path, "has no numeric or list column of predictions")
        return ParquetSource(path, numeric)
    raise DataError(path, f"unknown format {suffix or '(no suffix)'!r}: expected .npy, .npz "
                          "or .parquet")


def open_labels(path: str, key: Optional[str], predictions: str) -> Source:
    """The labels: a file like the predictions' (``key`` naming the ``.npz`` member or
    Parquet column), or the name of a column of the predictions' Parquet file."""
    if not os.path.exists(path) and _suffix(predictions) == ".parquet":
        if path in _parquet_columns(predictions):
            return ParquetSource(predictions, [path])
        _exists(path, f"no such file, nor a column of {predictions}")
    _exists(path)
    suffix = _suffix(path)
    if suffix == ".parquet":
        names = _parquet_columns(path)
        if key is None:
            if len(names) != 1:
                raise DataError(path, f"has several columns ({', '.join(names)}); choose "
                                      "the labels with --labels-key")
            key = names[0]
        elif key not in names:
            raise DataError(path, f"has no column {key!r} (it has {', '.join(names)})")
        source: Source = ParquetSource(path, [key])
    elif suffix == ".npz":
        source = _npz_member(path, key, "--labels-key")
    elif suffix == ".npy":
        source = _npy_file(path)
    else:
        raise DataError(path, f"unknown format {suffix or '(no suffix)'!r}: expected .npy, "
                              ".npz or .parquet")
    if source.width:
        raise DataError(source.name, f"labels must have shape (N,), got (N, {source.width})")
    return source


def _exists(path: str, problem: str = "no such file") -> None:
    if not os.path.isfile(path):
        raise DataError(path, problem if not os.path.exists(path) else "not a file")


# --------------------------------------------------------------------------------------------
# Windows: predictions and labels, row-aligned.
# --------------------------------------------------------------------------------------------

def rechunk(blocks: Iterator[np.ndarray], rows: int) -> Iterator[np.ndarray]:
    """Blocks of any sizes regrouped into windows of exactly ``rows`` rows (the last one
    shorter); a block already of that size passes through uncopied."""
    pending: List[np.ndarray] = []
    have = 0
    for block in blocks:
        while len(block):
            take = block[:rows - have]
            block = block[len(take):]
            pending.append(take)
            have += len(take)
            if have == rows:
                yield pending[0] if len(pending) == 1 else np.concatenate(pending)
                pending, have = [], 0
    if have:
        yield pending[0] if len(pending) == 1 else np.concatenate(pending)


@dataclass
class Data:
    """The predictions and labels of one report, and how to read them."""

    predictions: Source
    labels: Source
    chunk_rows: int
    progress: bool
    guess: str = ""  # how the first window was guessed to be logits or probabilities
    bootstrap: Any = None  # the StreamedBootstrap of the first pass, with --bootstrap

    def windows(self, desc: str) -> Iterator[Tuple[int, np.ndarray, np.ndarray]]:
        """``(start, predictions, labels)`` for consecutive windows of ``chunk_rows`` rows,
        with a progress bar on standard error when asked for and it is a terminal."""
        bar = _progress_bar(self.predictions.n_rows, desc, self.progress)
        preds = rechunk(self.predictions.blocks(self.chunk_rows), self.chunk_rows)
        labels = rechunk(self.labels.blocks(self.chunk_rows), self.chunk_rows)
        start = 0
        try:
            for p, y in zip(preds, labels):
                yield start, p, y
                start += len(p)
                if bar is not None:
                    bar.update(len(p))
        except OSError as exc:
            raise DataError(self.predictions.name, f"read failed ({_one_line(exc)})") from None
        finally:
            if bar is not None:
                bar.close()


def _progress_bar(total: int, desc: str, enabled: bool) -> Any:
    if not (enabled and sys.stderr.isatty()):
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # the bar is a convenience: without tqdm there is none
        return None
    return tqdm(total=total, desc=desc, unit="rows", unit_scale=True, file=sys.stderr,
                leave=False, dynamic_ncols=True)


def _bounds(start: int, n: int) -> str:
    return f"rows {start}-{start + n - 1}"


def _data_error(data: Data, start: int, n: int, exc: Exception) -> DataError:
    """A library ``ValueError``/``TypeError`` (its message starts with the argument's name)
    as a ``DataError`` naming the file the argument came from."""
    message = str(exc)
    name, _, problem = message.partition(": ")
    source = data.labels if name == "labels" else data.predictions
    if not problem or name not in ("labels", "probs_or_logits", "logits"):
        problem = message
    problem = problem.replace("from_logits=True", "--logits")  # the option's name here
    return DataError(source.name, f"{_bounds(start, n)}: {problem}")


def guess_kind(window: np.ndarray) -> Tuple[bool, str]:
    """Whether a window looks like logits, and why: probabilities lie in [0, 1] and
    (for ``(N, K)``) sum to 1 in every row."""
    if window.dtype.kind not in "fiub":
        return True, "not numbers"
    lo, hi = window.min(), window.max()
    if not (0.0 <= lo and hi <= 1.0):
        return True, f"values in [{lo:.4g}, {hi:.4g}], outside [0, 1]"
    if window.ndim == 2:
        sums = window.sum(axis=1, dtype=np.float64)
        if not np.allclose(sums, 1.0, rtol=0.0, atol=_GUESS_SUM_ATOL):
            return True, "values in [0, 1] but rows not summing to 1"
        return False, "values in [0, 1] with rows summing to 1"
    return False, "values in [0, 1]"


def _as_float(window: np.ndarray, source: Source, start: int) -> np.ndarray:
    if window.dtype.kind == "f":
        return window
    if window.dtype.kind in "iub":
        return window.astype(np.float64)
    raise DataError(source.name, f"{_bounds(start, len(window))}: predictions must be "
                                 f"numbers, got {window.dtype}")


def _binary_pairs(z: np.ndarray) -> np.ndarray:
    """Binary logits ``(N,)`` as the two-class logits ``[0, z]`` (as ``fit_temperature``)."""
    return np.stack([np.zeros_like(z), z], axis=1) if z.ndim == 1 else z


# --------------------------------------------------------------------------------------------
# The passes over the data.
# --------------------------------------------------------------------------------------------

@dataclass
class _TemperatureChecks:
    """What ``fit_temperature`` checks before solving, gathered over the windows."""

    constant: bool = True     # every row's unmasked logits equal: the loss ignores T
    all_top: bool = True      # every row's labelled class has the largest logit
    scale: float = 0.0        # the largest finite |logit|

    def add(self, z: np.ndarray, labels: np.ndarray) -> None:
        """Fold in one window of (validated) logits and labels."""
        z = _binary_pairs(z)
        live = _temperature._live_rows(z, labels, None)  # ValueError: a labelled -inf logit
        constant, scale, all_top = _temperature._scan(z, labels, live)
        self.constant = self.constant and constant
        self.all_top = self.all_top and all_top
        self.scale = max(self.scale, scale)


def accumulate(data: Data, args: argparse.Namespace, from_logits: Optional[bool],
               temperature: Optional[float] = None, desc: str = "report"
               ) -> Tuple[CalibrationResult, bool, Optional[_TemperatureChecks]]:
    """One pass: the metrics (of ``logits / temperature`` when given), whether the
    predictions are logits (``from_logits``, or guessed from the first window: the guess is
    kept in ``data.guess``), and, when ``args.temperature`` asks for it on the first pass,
    the temperature checks."""
    acc: Optional[CalibrationAccumulator] = None
    checks = _TemperatureChecks() if args.temperature and temperature is None else None
    boot = None
    if getattr(args, "bootstrap", None) and temperature is None:
        boot = StreamedBootstrap(args.bootstrap, args.bins, args.convention, args.seed)
        data.bootstrap = boot
    for start, p, y in data.windows(desc):
        p = _as_float(p, data.predictions, start)
        if acc is None:
            if from_logits is None:
                from_logits, reason = guess_kind(p)
                flag = "--probs" if from_logits else "--logits"
                data.guess = (f"read as {'logits' if from_logits else 'probabilities'} "
                              f"(first {len(p)} rows: {reason}); pass {flag} to say "
                              "otherwise")
                if args.temperature and not from_logits:
                    raise _UsageError(f"--temperature needs logits, and "
                                      f"{data.predictions.name} looks like probabilities "
                                      f"({reason}); pass --logits if they are logits")
            acc = CalibrationAccumulator(args.bins, convention=args.convention,
                                         from_logits=from_logits)
        try:
            if temperature is None:
                acc.update(p, y)
            else:  # logits / T in float64, a slice at a time (not a float64 copy of p)
                for rows in _rows.row_chunks(len(p), max(data.predictions.width, 1)):
                    acc.update(np.divide(p[rows], temperature, dtype=np.float64), y[rows])
            if checks is not None and from_logits:
                checks.add(p, acc_labels(y))
            if boot is not None:
                scores, _ = _validate.scores(p, "predictions", bool(from_logits),
                                             allow_empty=True)
                boot.update(scores, acc_labels(y), bool(from_logits))
        except (TypeError, ValueError) as exc:
            raise _data_error(data, start, len(p), exc) from None
    if acc is None:
        raise DataError(data.predictions.name, "holds no rows; the metrics are undefined")
    return acc.result(), bool(from_logits), checks


def acc_labels(y: np.ndarray) -> np.ndarray:
    """Labels as int64 (already validated by the accumulator's update)."""
    return np.ascontiguousarray(y, dtype=np.int64)


def fit_temperature_streamed(data: Data, checks: _TemperatureChecks) -> float:
    """``fit_temperature`` over the windows: the same checks and the same solver
    (bracketing, then Illinois regula falsi on the derivative in ``beta = 1/T``), with
    each derivative a sum of per-window sums from the core's fused objective."""
    if checks.constant:
        return 1.0
    scale = checks.scale if not 1e-100 <= checks.scale <= 1e100 else 1.0
    if checks.all_top:
        raise ValueError("every row's labelled class has the largest logit, so the loss "
                         "keeps decreasing as T -> 0; no finite temperature minimises it")
    passes = [0]

    def slope(beta: float) -> float:
        passes[0] += 1
        grad_sum = weight_sum = 0.0
        for _, z, y in data.windows(f"temperature, pass {passes[0]}"):
            z = _binary_pairs(_as_float(z, data.predictions, 0))
            if scale != 1.0:
                z = z / scale
            z = np.require(z, requirements=["C", "A"])
            _, g, w = _core.temperature_objective(z, z.shape[1], acc_labels(y), float(beta),
                                                  None)
            grad_sum += g
            weight_sum += w
        return grad_sum / weight_sum

    g_lo = slope(0.0)
    if not g_lo < 0:
        raise ValueError("the loss does not decrease for any T > 0 (the logits rank the "
                         "labels no better than chance), so it is minimised as T -> inf")
    beta_cap = 1e300 / max(1.0, checks.scale / scale)
    lo, g_lo, hi, g_hi = _temperature._bracket(slope, 0.0, g_lo, beta_cap)
    t = 1.0 / hi if g_hi == 0 else _temperature._regula_falsi(slope, lo, g_lo, hi, g_hi)
    t *= scale
    if not np.finfo(np.float64).tiny <= t < np.inf:
        raise ValueError(f"the fitted temperature is outside the float64 range (logits of "
                         f"magnitude {checks.scale:g})")
    return float(t)


# --------------------------------------------------------------------------------------------
# Output.
# --------------------------------------------------------------------------------------------

def metrics(result: CalibrationResult, n_classes: int) -> Dict[str, Any]:
    """The JSON keys of one result, in :data:`REPORT_KEYS` order."""
    values = dict(result.as_dict(), n_classes=n_classes)
    return {k: values[k] for k in REPORT_KEYS}


def _json_number(value: Any) -> Any:
    """JSON has no NaN or infinity: those are written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def to_json(report: Dict[str, Any]) -> str:
    """The report as one line of standard JSON."""
    def clean(v: Any) -> Any:
        if isinstance(v, dict):
            return {kk: clean(vv) for kk, vv in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(vv) for vv in v]
        return _json_number(v)

    clean = {k: clean(v) for k, v in report.items()}
    return json.dumps(clean, allow_nan=False)


def _cell(value: Any) -> str:
    if isinstance(value, int):
        return str(value)
    return f"{value:.6f}" if abs(value) < 1e6 else f"{value:.6g}"


def to_table(report: Dict[str, Any], header: str) -> str:
    """The report as a readable two- (or, after temperature scaling, three-) column table."""
    after = report.get("after_temperature")
    boot = report.get("bootstrap")
    intervals = boot["intervals"] if boot else {}
    lines = [header]
    if "temperature" in report:
        lines.append(f"temperature      {report['temperature']:.6g}")
    level = f"{100 * boot['confidence']:g}%" if boot else ""
    lines.append(f"{'metric':<16} {'value':>14}" + (f" {'after T':>14}" if after else "")
                 + (f" {level + ' low':>14} {level + ' high':>14}" if boot else ""))
    for key in REPORT_KEYS:
        row = f"{key:<16} {_cell(report[key]):>14}"
        if after:
            row += f" {_cell(after[key]):>14}"
        if key in intervals:
            low, high = intervals[key]
            row += f" {_cell(low):>14} {_cell(high):>14}"
        lines.append(row)
    if boot:
        lines.append(f"(intervals: {boot['n_resamples']} Poisson-bootstrap resamples, "
                     f"seed {boot['seed']})")
    return "\n".join(lines)


def _figure_class(path: str) -> Any:
    """matplotlib's ``Figure``; a ``DataError`` naming ``path`` without matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise DataError(path, "--plot needs matplotlib (pip install 'xent_rs[plot]')") from None
    return Figure


def write_plot(result: CalibrationResult, path: str) -> None:
    """The reliability diagram as a PNG at ``path`` (on a figure pyplot does not know)."""
    from .calibration._plot import FIGSIZE, _two_panels

    fig = _figure_class(path)(figsize=FIGSIZE, layout="constrained")
    try:
        result.diagram.plot(ax=_two_panels(fig), path=path)
    except (OSError, ValueError) as exc:
        raise DataError(path, f"cannot write the plot ({_one_line(exc)})") from None


# --------------------------------------------------------------------------------------------
# The command.
# --------------------------------------------------------------------------------------------

def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer in [0, 2**64), got {text!r}"
                                         ) from None
    if not 0 <= value < 2**64:
        raise argparse.ArgumentTypeError(f"expected an integer in [0, 2**64), got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``xent-rs`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="xent-rs", description="Calibration metrics of predictions saved to disk.")
    parser.add_argument("--version", action="version", version=f"xent-rs {xr.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    report = commands.add_parser(
        "report", help="calibration report of saved predictions",
        description="Stream PREDICTIONS and LABELS through the calibration accumulator and "
                    "print every metric (ECE, RMS, MCE, Brier and its decomposition, NLL, "
                    "accuracy, mean confidence).")
    report.add_argument("predictions", metavar="PREDICTIONS",
                        help=".npy, .npz (--key) or .parquet (a list column, or K numeric "
                             "columns) of shape (N, K), or (N,) for binary")
    report.add_argument("labels", metavar="LABELS",
                        help=".npy, .npz (--labels-key) or .parquet (--labels-key) of shape "
                             "(N,), or the name of a column of the PREDICTIONS Parquet file")
    kind = report.add_mutually_exclusive_group()
    kind.add_argument("--logits", dest="from_logits", action="store_const", const=True,
                      help="the predictions are logits (softmax / sigmoid)")
    kind.add_argument("--probs", dest="from_logits", action="store_const", const=False,
                      help="the predictions are probabilities")
    report.add_argument("--key", metavar="NAME",
                        help="the array of a PREDICTIONS .npz, or its Parquet column")
    report.add_argument("--labels-key", metavar="NAME",
                        help="the array of a LABELS .npz, or its Parquet column")
    report.add_argument("--bins", type=_positive_int, default=15, metavar="N",
                        help="uniform bins (default 15)")
    report.add_argument("--convention", choices=("right", "torchmetrics"), default="right",
                        help="bin edges: (e_i, e_i+1] as scikit-learn, or torchmetrics' "
                             "[e_i, e_i+1) (default right)")
    report.add_argument("--temperature", action="store_true",
                        help="fit temperature scaling (logits only) and report the metrics "
                             "after it too")
    report.add_argument("--bootstrap", type=_positive_int, metavar="N",
                        help="also report 95%% percentile-bootstrap intervals of ece, rms, "
                             "mce, brier, nll and accuracy from N Poisson resamples "
                             "(resampled in the core, streamed with the windows)")
    report.add_argument("--seed", type=_seed, default=0, metavar="S",
                        help="seed of the bootstrap (default 0; with the windows' starts it "
                             "fixes the intervals)")
    report.add_argument("--plot", metavar="PATH.png", help="write the reliability diagram")
    report.add_argument("--json", action="store_true",
                        help="print one JSON object instead of a table")
    report.add_argument("--chunk-rows", type=_positive_int, metavar="N",
                        help=f"rows per window (default: about {CHUNK_BYTES >> 20} MiB of "
                             "predictions)")
    report.add_argument("--threads", type=_positive_int, metavar="N",
                        help="threads of the library's pool (xent_rs.set_num_threads)")
    report.add_argument("--no-progress", action="store_true",
                        help="no progress bar (there is none when standard error is not a "
                             "terminal)")
    return parser


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _note(message: str) -> None:
    print(f"xent-rs: {message}", file=sys.stderr, flush=True)


def _check_usage(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Usage errors argparse cannot see (exit status 2); sets the thread count."""
    if args.temperature and args.from_logits is False:
        parser.error("--temperature needs logits; it cannot rescale probabilities (--probs)")
    if args.key is not None and _suffix(args.predictions) == ".npy":
        parser.error(f"--key: {args.predictions} is a .npy file, which holds one array")
    if args.labels_key is not None and _suffix(args.labels) == ".npy":
        parser.error(f"--labels-key: {args.labels} is a .npy file, which holds one array")
    try:
        CalibrationAccumulator(args.bins, convention=args.convention)
    except ValueError as exc:
        parser.error(f"--bins: {exc}")
    if args.threads is not None:
        try:
            xr.set_num_threads(args.threads)
        except ValueError as exc:
            parser.error(f"--threads: {exc}")


def open_data(args: argparse.Namespace) -> Data:
    """The predictions and labels the arguments name, checked to have as many rows, and
    nowhere to write the plot found before any row is read."""
    label_column = None
    if not os.path.exists(args.labels) and _suffix(args.predictions) == ".parquet":
        label_column = args.labels
    preds = open_predictions(args.predictions, args.key, label_column)
    labels = open_labels(args.labels, args.labels_key, args.predictions)
    if labels.n_rows != preds.n_rows:
        raise DataError(labels.name, f"has {labels.n_rows} labels for the {preds.n_rows} rows "
                                     f"of {preds.name}")
    if args.plot:  # before any row is read
        _figure_class(args.plot)
        if not os.path.isdir(os.path.dirname(os.path.abspath(args.plot))):
            raise DataError(args.plot, "cannot write the plot: no such directory")
    chunk_rows = args.chunk_rows or max(1, CHUNK_BYTES // preds.row_bytes)
    return Data(preds, labels, chunk_rows, not args.no_progress)


def compute(data: Data, args: argparse.Namespace, parser: argparse.ArgumentParser
            ) -> Tuple[Dict[str, Any], bool]:
    """The report's keys and whether the predictions were read as logits."""
    try:
        result, from_logits, checks = accumulate(data, args, args.from_logits)
    except _UsageError as exc:
        parser.error(str(exc))
    n_classes = data.predictions.width or 2
    out = metrics(result, n_classes)
    boot = getattr(data, "bootstrap", None)
    if boot is not None:
        out["bootstrap"] = {
            "n_resamples": boot.n_resamples, "confidence": BOOTSTRAP_CONFIDENCE,
            "seed": args.seed,
            "intervals": {k: list(v) for k, v in
                          boot.intervals(BOOTSTRAP_CONFIDENCE).items()}}
    if args.temperature:
        assert checks is not None
        try:
            t = fit_temperature_streamed(data, checks)
        except ValueError as exc:
            problem = str(exc).removeprefix("logits: ")
            raise DataError(data.predictions.name, f"temperature scaling: {problem}") from None
        after, _, _ = accumulate(data, args, True, temperature=t, desc="after temperature")
        out["temperature"] = t
        out["after_temperature"] = metrics(after, n_classes)
    if args.plot:
        write_plot(result, args.plot)
    return out, from_logits


def report(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run ``xent-rs report``; ``DataError`` for unreadable or inconsistent data."""
    _check_usage(args, parser)
    data = open_data(args)
    try:
        out, from_logits = compute(data, args, parser)
    except DataError as exc:
        if data.guess:  # one line: a guess the problem may come from goes with it
            raise DataError(exc.path, f"{exc.problem} ({data.predictions.name} "
                                      f"{data.guess})") from None
        raise
    if data.guess:
        _note(f"{data.predictions.name}: {data.guess}")
    if args.json:
        print(to_json(out))
    else:
        preds = data.predictions
        what = "logits" if from_logits else "probabilities"
        shape = f"{preds.n_rows} rows, " + (f"{preds.width} classes" if preds.width
                                             else "binary")
        print(to_table(out, f"{preds.name}: {what} ({shape}); labels {data.labels.name}"))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The ``xent-rs`` command; returns the exit status.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 1 for unreadable or inconsistent data (one line on standard error
        naming the file and the problem), 130 when interrupted.

    Raises
    ------
    SystemExit
        With status 2 for a usage error (argparse's message on standard error), and 0 for
        ``--help`` and ``--version``.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return report(args, parser)
    except DataError as exc:
        _note(_one_line(exc))
    except KeyboardInterrupt:
        _note("interrupted")
        return 130
    except MemoryError:
        _note("out of memory; try a smaller --chunk-rows")
    except BrokenPipeError:  # the reader of standard output went away (| head)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 1
    except OSError as exc:
        name = getattr(exc, "filename", None) or args.predictions
        _note(f"{name}: {_one_line(exc)}")
    except Exception as exc:  # noqa: BLE001 - never a traceback: one line, exit status 1
        _note(f"{args.predictions}: {type(exc).__name__}: {_one_line(exc)}")
    return 1
