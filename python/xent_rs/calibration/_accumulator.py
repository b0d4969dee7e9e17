"""The streaming accumulator: every calibration metric in one pass, chunk by chunk."""

from __future__ import annotations

from typing import Optional

import numpy as np
from numpy.typing import ArrayLike

from .. import _validate as _v
from . import _binning, _rows
from ._binning import Convention
from ._results import CalibrationResult, diagram_from_sums


class CalibrationAccumulator:
    """Calibration metrics in one pass over data of any size, chunk by chunk.

    Keeps, for uniform bins, the per-bin weight, confidence and outcome sums, the per-class
    one-vs-rest bin sums of the Brier decomposition, and running sums of the Brier score,
    negative log-likelihood, accuracy and confidence. Accumulators of disjoint parts merge by
    adding these, so the result over any split of a data set (chunks of a memory-mapped array,
    files, distributed partitions) equals the one-shot functions on the whole of it, up to
    float64 rounding (about 1e-15 relative).

    Parameters
    ----------
    n_bins : int, default 15
        Uniform bins, edges ``np.linspace(0, 1, n_bins + 1)``.
    convention : {"right", "torchmetrics"}, default "right"
        As in :func:`calibration_error`.
    from_logits : bool, default False
        Whether updates pass logits (softmax / sigmoid) rather than probabilities.

    Examples
    --------
    >>> import numpy as np
    >>> from xent_rs.calibration import CalibrationAccumulator, calibration_error
    >>> rng = np.random.default_rng(1)
    >>> z, y = rng.normal(size=(1000, 4)), rng.integers(0, 4, size=1000)
    >>> acc = CalibrationAccumulator(n_bins=10, from_logits=True)
    >>> for rows in np.array_split(np.arange(1000), 7):
    ...     _ = acc.update(z[rows], y[rows])
    >>> r = acc.result()
    >>> r.count, abs(r.ece - calibration_error(z, y, n_bins=10, from_logits=True)) < 1e-12
    (1000, True)
    """

    def __init__(self, n_bins: int = 15, *, convention: Convention = "right",
                 from_logits: bool = False) -> None:
        self.n_bins = _binning.check_n_bins(n_bins)
        self.convention = _v.choice("convention", convention, _binning.CONVENTIONS)
        self.from_logits = _v.flag(from_logits, "from_logits")
        self._edges = np.linspace(0.0, 1.0, self.n_bins + 1)
        self._classes = None  # None until the first update: 0 for binary input, else K
        self._count = 0
        slots = _binning.n_slots(self.n_bins, self.convention)
        self._bins = np.zeros((3, slots))  # weight, confidence, outcome sums per bin
        self._ovr = None                   # (3, C, slots) one-vs-rest sums
        self._sums = np.zeros(5)           # weight, brier, nll, accuracy, confidence

    @property
    def count(self) -> int:
        """Number of samples seen."""
        return self._count

    def __repr__(self):
        shape = {None: "no data", 0: "binary"}.get(self._classes, f"K={self._classes}")
        return (f"CalibrationAccumulator(n_bins={self.n_bins}, convention={self.convention!r}, "
                f"from_logits={self.from_logits}; {self._count} samples, {shape})")

    def _adopt(self, classes, name):
        if self._classes is None:
            self._classes = classes
            self._ovr = np.zeros((3, max(classes, 1), self._bins.shape[1]))
        elif self._classes != classes:
            have = "binary (N,)" if self._classes == 0 else f"(N, {self._classes})"
            got = "binary (N,)" if classes == 0 else f"(N, {classes})"
            raise ValueError(f"{name}: got {got} input, but this accumulator holds {have} data")

    def update(self, probs_or_logits: ArrayLike, labels: ArrayLike,
               sample_weight: Optional[ArrayLike] = None) -> "CalibrationAccumulator":
        """Add a chunk of predictions.

        Parameters
        ----------
        probs_or_logits : array_like, float, shape (N, K) or (N,)
            Probabilities, or logits if the accumulator was made with ``from_logits=True``.
            Every chunk must have the same shape kind and K. ``N = 0`` is allowed (no-op).
        labels : array_like, int, shape (N,)
        sample_weight : array_like, shape (N,), optional

        Returns
        -------
        CalibrationAccumulator
            ``self``, for chaining.
        """
        name = "probs_or_logits"
        scores, binary = _v.scores(probs_or_logits, name, self.from_logits, allow_empty=True)
        n = scores.shape[0]
        labels = _v.labels(labels, n, None if binary else scores.shape[1])
        sample_weight = _v.sample_weight(sample_weight, n)
        self._adopt(0 if binary else scores.shape[1], name)
        if n == 0:
            return self
        k = 1 if binary else scores.shape[1]
        for rows in _rows.row_chunks(n, k):
            s, y = scores[rows], labels[rows]
            w = None if sample_weight is None else sample_weight[rows]
            conf, outcome = _rows.confidence_outcome(s, y, binary, self.from_logits)
            self._bins += _binning.reliability_sums(conf, outcome, w, self._edges,
                                                    self.convention)
            p = _rows.probabilities(s, binary, self.from_logits)
            hit = (p > 0.5) == y if binary else outcome
            index, values = _binning.ovr_entries(p, y, w, self._edges, self.convention, binary)
            self._ovr += np.bincount(index, values,
                                     minlength=self._ovr.size).reshape(self._ovr.shape)
            cols = (np.ones(len(y)), _rows.brier_rows(p, y, binary),
                    _rows.nll_rows(s, y, binary, self.from_logits), hit, conf)
            if w is not None:  # rows of weight 0 are left out, even with an infinite loss
                cols = [np.where(w > 0, c, 0.0) for c in cols]
            self._sums += [c.sum() if w is None else w @ c for c in cols]
        self._count += n
        return self

    def merge(self, other: "CalibrationAccumulator") -> "CalibrationAccumulator":
        """Add another accumulator's data to this one (in place; ``other`` is unchanged).

        Raises
        ------
        TypeError
            If ``other`` is not a CalibrationAccumulator.
        ValueError
            If the two differ in ``n_bins``, ``convention``, ``from_logits`` or input shape.
        """
        if not isinstance(other, CalibrationAccumulator):
            raise TypeError(f"other: expected a CalibrationAccumulator, got "
                            f"{type(other).__name__}")
        for attr in ("n_bins", "convention", "from_logits"):
            if getattr(self, attr) != getattr(other, attr):
                raise ValueError(f"other: {attr} differs ({getattr(other, attr)!r} vs "
                                 f"{getattr(self, attr)!r})")
        if other._classes is None:
            return self
        self._adopt(other._classes, "other")
        self._bins += other._bins
        self._ovr += other._ovr
        self._sums += other._sums
        self._count += other._count
        return self

    def result(self) -> CalibrationResult:
        """All metrics over the data seen so far.

        Returns
        -------
        CalibrationResult

        Raises
        ------
        ValueError
            If no data (or only zero total weight) has been added: the metrics are undefined.
        """
        total = self._sums[0]
        if self._count == 0 or total <= 0:
            raise ValueError("CalibrationAccumulator: no data (or zero total weight) has been "
                             "added; the metrics are undefined")
        w, c, o = self._bins
        reliability, resolution, uncertainty = _binning.murphy_from_sums(*self._ovr)
        return CalibrationResult(
            count=self._count,
            weight_sum=float(total),
            ece=_binning.error_from_sums(w, c, o, "l1"),
            rms=_binning.error_from_sums(w, c, o, "l2"),
            mce=_binning.error_from_sums(w, c, o, "max"),
            brier=float(self._sums[1] / total),
            reliability=reliability,
            resolution=resolution,
            uncertainty=uncertainty,
            nll=float(self._sums[2] / total),
            accuracy=float(self._sums[3] / total),
            mean_confidence=float(self._sums[4] / total),
            diagram=diagram_from_sums(self._edges, w, c, o, self.convention,
                                      self._classes == 0),
        )


