"""The streaming accumulator: every calibration metric in one pass, chunk by chunk.

The statistics live in one flat float64 array, allocated once (at the first update) and
added to in one NumPy call per update, so that an update is all or nothing: an exception
(``KeyboardInterrupt``, ``MemoryError``) anywhere in it leaves the accumulator as it was.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np
from numpy.typing import ArrayLike

from .. import _validate as _v
from . import _binning, _rows
from ._binning import Convention
from ._beyond import classwise_from_sums, debiased_from_sums
from ._results import CalibrationResult, diagram_from_sums


def _mirrored(v, torchmetrics):
    """Per-bin sums of ``1 − p`` from those of ``p``: the bins reversed (torchmetrics' extra
    bin of ``p = 1`` goes to the first bin, where ``1 − p = 0`` lands)."""
    if not torchmetrics:
        return v[::-1]
    out = np.append(v[:-1][::-1], 0.0)
    out[0] += v[-1]
    return out


def _classwise(ovr, binary, norm, torchmetrics):
    """Classwise error from the one-vs-rest sums; binary: the positive class and its mirror
    (forecast 1 − p, outcome 1 − y, in the bins of p reversed)."""
    if not binary:
        return classwise_from_sums(*ovr, norm)
    w, f, o = (v[0] for v in ovr)
    mirror = tuple(_mirrored(v, torchmetrics) for v in (w, w - f, w - o))
    return 0.5 * (_binning.error_from_sums(w, f, o, norm)
                  + _binning.error_from_sums(*mirror, norm))


class _Layout:
    """Where each statistic sits in the flat state array, for ``slots`` bins and C classes
    (C = 1 for binary input)."""

    def __init__(self, slots, classes):
        self.slots, self.c = slots, max(classes, 1)
        self.ovr = 3 * slots                       # (3, slots): weight, confidence, outcome
        self.sums = self.ovr + 3 * self.c * slots  # (3, C, slots): weight, forecast, outcome
        self.count = self.sums + 5                 # 5: weight, brier, nll, accuracy, conf.
        self.size = self.count + 1                 # 1: rows seen (exact below 2**53)

    def rescaled(self, stats, shift):
        """A copy of ``stats`` with the weighted sums times ``2**shift`` (the count kept)."""
        out = stats.copy()
        out[:self.count] = _rows.scale_by_power_of_two(out[:self.count], shift)
        return out


class _State(NamedTuple):
    classes: int        # 0 for binary input, else K
    exponent: int       # the weighted sums are stored times 2**-exponent
    stats: np.ndarray   # flat float64, as _Layout says


class _Delta:
    """One update's additions to the state: (index, value) entries while they are fewer
    than the state has slots, folded into one dense array once they would be more. Either
    way the work and memory are proportional to the update, not to classes × bins."""

    def __init__(self, size):
        self.size, self.length = size, 0
        self.entries, self.dense = [], None

    def add(self, index, values):
        if self.dense is None and self.length + len(index) > self.size:
            self.dense = np.zeros(self.size)
            for i, v in self.entries:
                np.add.at(self.dense, i, v)
            self.entries = None
        if self.dense is not None:
            np.add.at(self.dense, index, values)
        else:
            self.entries.append((index, values))
            self.length += len(index)

    def apply(self, stats):
        """Add everything to ``stats`` in one NumPy call: all of it, or (on an exception
        before the call) nothing."""
        if self.dense is not None:
            np.add(stats, self.dense, out=stats)
        else:
            index = np.concatenate([i for i, _ in self.entries])
            values = np.concatenate([v for _, v in self.entries])
            np.add.at(stats, index, values)


def _has_weight(state, layout):
    return state.stats[layout.sums] > 0


class CalibrationAccumulator:
    """Calibration metrics in one pass over data of any size, chunk by chunk.

    Keeps, for uniform bins, the per-bin weight, confidence and outcome sums, the per-class
    one-vs-rest bin sums of the Brier decomposition, and running sums of the Brier score,
    negative log-likelihood, accuracy and confidence. Accumulators of disjoint parts merge by
    adding these, so the result over any split of a data set (chunks of a memory-mapped array,
    files, distributed partitions) equals the one-shot functions on the whole of it, up to
    float64 rounding (about 1e-15 relative).

    The statistics are allocated once, at the first update: about ``24 * n_bins * (C + 1)``
    bytes for C classes (C = 1 for binary input), with at most :data:`MAX_BIN_SLOTS`
    (2**26) one-vs-rest slots ``C * n_bins`` (a ``ValueError`` naming ``n_bins`` beyond).
    An update costs time and memory in proportion to its rows times K, whatever ``n_bins``
    is, and is all or nothing: an exception anywhere in it (``KeyboardInterrupt``,
    ``MemoryError``) leaves the accumulator as it was, so that the update can be retried.
    Sample weights are scaled by a power of two before they are summed (exact; the scale
    is kept with the sums), so weights of any magnitude give the numbers their ratios give;
    an update whose largest weight passes a power of two that no earlier weight reached
    rescales (copies) the statistics once. Counts are exact up to 2**53 samples.

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
        self._slots = _binning.n_slots(self.n_bins, self.convention)
        self._state = None  # a _State from the first update on

    @property
    def count(self) -> int:
        """Number of samples seen."""
        if self._state is None:
            return 0
        return int(self._state.stats[_Layout(self._slots, self._state.classes).count])

    def __repr__(self):
        classes = None if self._state is None else self._state.classes
        shape = {None: "no data", 0: "binary"}.get(classes, f"K={classes}")
        return (f"CalibrationAccumulator(n_bins={self.n_bins}, convention={self.convention!r}, "
                f"from_logits={self.from_logits}; {self.count} samples, {shape})")

    def _layout_for(self, classes, name):
        """The layout for ``classes``; ``ValueError`` naming ``name`` if the data held so
        far has another shape, or naming ``n_bins`` if the statistics would be too large."""
        if self._state is None:
            _binning.check_bin_slots(self.n_bins, self.convention, classes)
        elif self._state.classes != classes:
            held = self._state.classes
            have = "binary (N,)" if held == 0 else f"(N, {held})"
            got = "binary (N,)" if classes == 0 else f"(N, {classes})"
            raise ValueError(f"{name}: got {got} input, but this accumulator holds {have} data")
        return _Layout(self._slots, classes)

    def _commit(self, classes, exponent, layout, apply):
        """Make ``apply`` (one NumPy call adding to a stats array) the accumulator's last
        change: in place when the scale stays, else on a rescaled copy swapped in by one
        assignment. Nothing before it changes ``self``."""
        state = self._state
        if state is not None and state.exponent == exponent:
            apply(state.stats)
            return
        if state is None:
            stats = np.zeros(layout.size)
        else:
            stats = layout.rescaled(state.stats, state.exponent - exponent)
        apply(stats)
        self._state = _State(classes, exponent, stats)

    def _exponent(self, layout, incoming):
        """The common scale of the held sums and sums whose own scale is ``incoming``."""
        state = self._state
        if state is None or not _has_weight(state, layout):
            return incoming if incoming is not None else (0 if state is None else state.exponent)
        return state.exponent if incoming is None else max(state.exponent, incoming)

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

        Raises
        ------
        TypeError, ValueError
            For bad arguments (the message names the argument), for input of another shape
            than the data held, and (first update) when K × ``n_bins`` exceeds
            :data:`MAX_BIN_SLOTS`. The accumulator is then unchanged.
        """
        name = "probs_or_logits"
        scores, binary = _v.scores(probs_or_logits, name, self.from_logits, allow_empty=True,
                                   check_values=False)
        n = scores.shape[0]
        classes = 0 if binary else scores.shape[1]
        # (N, K) chunks go through the fused Rust pass, which checks the values itself.
        fused = not binary and n and classes * self._slots <= _binning.FUSED_MAX_SLOTS
        if n and not fused:
            _v.score_values(scores, name, self.from_logits, binary)
        try:
            labels = _v.labels(labels, n, None if binary else scores.shape[1])
            raw = _v.sample_weight(sample_weight, n)
            layout = self._layout_for(classes, name)
        except (TypeError, ValueError):
            if fused:  # bad scores are reported first, as when they are checked first
                _v.score_values(scores, name, self.from_logits, binary)
            raise
        exponent = self._exponent(layout, _rows.weight_exponent(raw, n))
        w = _rows.scaled_weights(raw, n, exponent)
        if fused:
            # Every statistic in one fused Rust pass over the chunk, into a fresh array.
            top, ovr, sums = _binning.fused_ovr(scores, classes, self.from_logits, labels, w,
                                                self._edges, self.convention, name)
            dense = np.concatenate([top.ravel(), ovr.ravel(), sums, [float(n)]])
            self._commit(classes, exponent, layout, lambda into: np.add(into, dense, out=into))
            return self
        delta = _Delta(layout.size)
        for rows in _rows.row_chunks(n, 1 if binary else classes):
            delta.add(*self._entries(layout, scores[rows], labels[rows],
                                     None if w is None else w[rows], binary))
        delta.add(np.array([layout.count]), np.array([float(n)]))
        self._commit(classes, exponent, layout, delta.apply)
        return self

    def _entries(self, layout, s, y, w, binary):
        """A chunk's (flat index, value) entries: bins, one-vs-rest bins and the sums."""
        conf, outcome = _rows.confidence_outcome(s, y, binary, self.from_logits)
        b_index, b_values = _binning.reliability_entries(conf, outcome, w, self._edges,
                                                         self.convention)
        p = _rows.probabilities(s, binary, self.from_logits)
        hit = (p > 0.5) == y if binary else outcome
        o_index, o_values = _binning.ovr_entries(p, y, w, self._edges, self.convention,
                                                 binary)
        cols = (_rows.brier_rows(p, y, binary), _rows.nll_rows(s, y, binary, self.from_logits),
                hit, conf)
        if w is None:
            sums = [float(len(y))] + [c.sum() for c in cols]
        else:  # rows of weight 0 are left out, even with an infinite loss
            live = w > 0
            sums = [w.sum()] + [w @ np.where(live, c, 0.0) for c in cols]
        return (np.concatenate([b_index, o_index + layout.ovr, layout.sums + np.arange(5)]),
                np.concatenate([b_values, o_values, sums]))

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
        theirs = other._state
        if theirs is None:
            return self
        layout = self._layout_for(theirs.classes, "other")
        exponent = self._exponent(layout, theirs.exponent if _has_weight(theirs, layout)
                                  else None)
        if theirs.exponent == exponent:
            stats = theirs.stats
        else:
            stats = layout.rescaled(theirs.stats, theirs.exponent - exponent)
        self._commit(theirs.classes, exponent, layout,
                     lambda into: np.add(into, stats, out=into))
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
        state = self._state
        layout = None if state is None else _Layout(self._slots, state.classes)
        if state is None or state.stats[layout.count] == 0 or not _has_weight(state, layout):
            raise ValueError("CalibrationAccumulator: no data (or zero total weight) has been "
                             "added; the metrics are undefined")
        stats, slots = state.stats, self._slots
        w, c, o = stats[:layout.ovr].reshape(3, slots)
        ovr = stats[layout.ovr:layout.sums].reshape(3, layout.c, slots)
        total, brier, nll, accuracy, confidence = stats[layout.sums:layout.count]
        reliability, resolution, uncertainty = _binning.murphy_from_sums(*ovr)
        tm = self.convention == "torchmetrics"
        return CalibrationResult(
            count=int(stats[layout.count]),
            weight_sum=float(_rows.scale_by_power_of_two(total, state.exponent)),
            ece=_binning.error_from_sums(w, c, o, "l1"),
            rms=_binning.error_from_sums(w, c, o, "l2"),
            mce=_binning.error_from_sums(w, c, o, "max"),
            brier=float(brier / total),
            reliability=reliability,
            resolution=resolution,
            uncertainty=uncertainty,
            nll=float(nll / total),
            accuracy=float(accuracy / total),
            mean_confidence=float(confidence / total),
            classwise_ece=_classwise(ovr, state.classes == 0, "l1", tm),
            classwise_rms=_classwise(ovr, state.classes == 0, "l2", tm),
            debiased_rms=debiased_from_sums(w, c, o, stats[layout.count] / total),
            diagram=diagram_from_sums(self._edges, w, c, o, self.convention,
                                      state.classes == 0, state.exponent),
        )
