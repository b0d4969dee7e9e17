"""xent_rs.calibration under stress (issue 9): interrupted accumulator updates, bins that
cost memory per update, sample weights of any magnitude, a constant temperature objective,
and warnings escaping from extreme inputs."""

from __future__ import annotations

import math
import os
import sys
import tracemalloc
import warnings

import numpy as np
import pytest

import xent_rs as xr
from xent_rs import calibration as cal
from xent_rs import _calibration_reference as ref

PACKAGE_DIR = os.path.dirname(os.path.dirname(cal.__file__))  # xent_rs/


def problem(seed, n, k, *, from_logits=True, weighted=False):
    """Random scores (k = 0: binary (n,)), labels and optional weights (some exactly 0)."""
    rng = np.random.default_rng(seed)
    if from_logits:
        scores = rng.standard_normal((n,) if k == 0 else (n, k)) * 3.0
    elif k == 0:
        scores = rng.random(n)
    else:
        scores = rng.random((n, k)) ** 3
        scores /= scores.sum(axis=1, keepdims=True)
    labels = rng.integers(0, 2 if k == 0 else k, size=n)
    w = None
    if weighted:
        w = rng.random(n) * (rng.random(n) > 0.2)
        w[0] += 1.0
    return scores, labels, w


def snapshot(acc):
    """Everything an accumulator holds, comparable with ==."""
    state = acc._state
    if state is None:
        return None
    return state.classes, state.exponent, state.stats.tobytes()


def results_close(a, b, tol=1e-12):
    da, db = a.as_dict(), b.as_dict()
    assert da.keys() == db.keys()
    for key in da:
        x, y = da[key], db[key]
        assert x == y or abs(x - y) <= tol * max(1.0, abs(y)), (key, x, y)
    for name in ("counts", "mean_confidence", "accuracy"):
        np.testing.assert_allclose(getattr(a.diagram, name), getattr(b.diagram, name),
                                   rtol=tol, atol=0)


# ----------------------------------------------------------------------------------------------
# 1. Accumulator updates are all or nothing.
# ----------------------------------------------------------------------------------------------

class InterruptAt:
    """A tracer raising ``exc`` at the ``at``-th line executed inside xent_rs (a signal
    arriving between any two lines of the package); ``at=None`` only counts them."""

    def __init__(self, at, exc):
        self.at, self.exc, self.lines = at, exc, 0

    def __call__(self, frame, event, arg):
        return self.local if frame.f_code.co_filename.startswith(PACKAGE_DIR) else None

    def local(self, frame, event, arg):
        if event == "line":
            self.lines += 1
            if self.lines == self.at:
                raise self.exc()
        return self.local


def run_traced(tracer, fn):
    before = sys.gettrace()
    sys.settrace(tracer)
    try:
        fn()
    except (KeyboardInterrupt, MemoryError):
        return True
    finally:
        sys.settrace(before)
    return False


def scenarios():
    """(name, accumulator factory holding earlier data, the update to interrupt)."""
    z, y, w = problem(1, 300, 5, weighted=True)
    zb, yb, _ = problem(2, 200, 0)

    def held(n_bins=7, **kw):
        acc = cal.CalibrationAccumulator(n_bins, from_logits=True, **kw)
        return acc.update(z[:100], y[:100], w[:100])

    return [
        # several chunks of sparse entries into existing statistics
        ("chunks", held, lambda acc: acc.update(z[100:], y[100:], w[100:])),
        # the first update: the statistics are allocated and swapped in
        ("first", lambda: cal.CalibrationAccumulator(7, from_logits=True),
         lambda acc: acc.update(z, y, w)),
        # heavier weights than any so far: the held sums are rescaled
        ("rescale", held, lambda acc: acc.update(z[100:], y[100:], w[100:] * 1e200)),
        # more entries than slots: the update is folded into one dense array
        ("dense", lambda: held(n_bins=1), lambda acc: acc.update(z[100:], y[100:])),
        ("binary", lambda: cal.CalibrationAccumulator(4, from_logits=True).update(
            zb[:50], yb[:50]), lambda acc: acc.update(zb[50:], yb[50:])),
        ("merge", held, lambda acc: acc.merge(
            cal.CalibrationAccumulator(7, from_logits=True).update(z[100:], y[100:],
                                                                   w[100:] * 1e-250))),
    ]


@pytest.mark.parametrize("exc", [KeyboardInterrupt, MemoryError])
@pytest.mark.parametrize("index", range(6), ids=[s[0] for s in scenarios()])
def test_an_interrupted_update_changes_nothing(monkeypatch, index, exc):
    monkeypatch.setattr(cal._rows, "_CHUNK_ELEMENTS", 5 * 64)  # 64-row chunks
    name, make, step = scenarios()[index]
    clean = make()
    counter = InterruptAt(None, exc)
    assert not run_traced(counter, lambda: step(clean))
    done = snapshot(clean)
    assert counter.lines > 20
    unchanged = 0
    for at in range(1, counter.lines + 1):
        acc = make()
        before = snapshot(acc)
        interrupted = run_traced(InterruptAt(at, exc), lambda: step(acc))
        assert interrupted
        now = snapshot(acc)
        # Interrupted before the one-step commit: as before; after it: the whole update.
        assert now in (before, done), (name, at)
        if now == before:
            unchanged += 1
            step(acc)  # the retry counts the update once
            assert snapshot(acc) == done, (name, at)
    assert unchanged >= counter.lines - 3  # the commit is the update's last step


def test_a_helper_failing_on_its_jth_call_changes_nothing(monkeypatch):
    """The issue's recipe: an internal helper raises on its j-th call, for several j (on
    the NumPy path, which has such helpers; the fused path is one core call, below)."""
    monkeypatch.setattr(cal._binning, "FUSED_MAX_SLOTS", 0)
    monkeypatch.setattr(cal._rows, "_CHUNK_ELEMENTS", 4 * 50)  # 50-row chunks: 6 calls
    z, y, w = problem(3, 300, 4, weighted=True)
    clean = cal.CalibrationAccumulator(9, from_logits=True).update(z[:40], y[:40])
    clean.update(z, y, w)
    real = cal._rows.nll_rows
    for j in range(1, 7):
        calls = []

        def flaky(*args):
            calls.append(1)
            if len(calls) == j:
                raise KeyboardInterrupt
            return real(*args)

        acc = cal.CalibrationAccumulator(9, from_logits=True).update(z[:40], y[:40])
        before = snapshot(acc)
        monkeypatch.setattr(cal._rows, "nll_rows", flaky)
        with pytest.raises(KeyboardInterrupt):
            acc.update(z, y, w)
        monkeypatch.setattr(cal._rows, "nll_rows", real)
        assert snapshot(acc) == before and acc.count == 40
        acc.update(z, y, w)
        assert snapshot(acc) == snapshot(clean)
        results_close(acc.result(), clean.result(), 0)


@pytest.mark.parametrize("exc", [KeyboardInterrupt, MemoryError])
def test_an_interrupted_fused_pass_changes_nothing(monkeypatch, exc):
    z, y, w = problem(3, 300, 4, weighted=True)
    acc = cal.CalibrationAccumulator(9, from_logits=True).update(z[:40], y[:40])
    before = snapshot(acc)

    def interrupted(*args):
        raise exc

    monkeypatch.setattr(cal._binning._core, "calib_stats", interrupted)
    with pytest.raises(exc):
        acc.update(z, y, w)
    assert snapshot(acc) == before and acc.count == 40


@pytest.mark.parametrize("from_logits", [True, False])
@pytest.mark.parametrize("convention", ["right", "torchmetrics"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
def test_the_fused_pass_equals_the_numpy_path(monkeypatch, from_logits, convention, weighted,
                                               dtype):
    """The Rust pass (every statistic of an update at once) against the per-statistic NumPy
    path it replaces for small K × bins: the same sums to float64 rounding, except that
    float32 and 16-bit logits get float32 probabilities (forecast sums, Brier terms and the
    metrics within 1e-6) binned exactly as the float64 softmax bins them (every weight sum
    to float64 rounding)."""
    if dtype == "bfloat16":
        dtype = pytest.importorskip("ml_dtypes").bfloat16
    z, y, w = problem(7, 3000, 6, weighted=weighted)
    z = (z * 2).astype(dtype)
    scores = z if from_logits else xr.softmax(z.astype(np.float64)).astype(dtype)
    if not from_logits:
        scores = np.clip(scores, 0, 1)
    float32 = from_logits and np.dtype(dtype) != np.float64
    tol = 1e-6 if float32 else 1e-12
    accs = []
    for limit in (cal._binning.FUSED_MAX_SLOTS, 0):
        monkeypatch.setattr(cal._binning, "FUSED_MAX_SLOTS", limit)
        acc = cal.CalibrationAccumulator(11, convention=convention, from_logits=from_logits)
        for rows in np.array_split(np.arange(len(y)), 3):
            acc.update(scores[rows], y[rows], None if w is None else w[rows])
        accs.append(acc)
    results_close(accs[0].result(), accs[1].result(), tol)
    fused, numpy_path = (a._state.stats for a in accs)
    slots = 12 if convention == "torchmetrics" else 11
    ovr = fused[3 * slots:3 * slots * 7].reshape(3, 6, slots)
    ovr_numpy = numpy_path[3 * slots:3 * slots * 7].reshape(3, 6, slots)
    np.testing.assert_allclose(ovr[0], ovr_numpy[0], rtol=1e-12, atol=1e-12)  # bin weights
    np.testing.assert_allclose(ovr[2], ovr_numpy[2], rtol=1e-12, atol=1e-12)  # outcomes
    np.testing.assert_allclose(ovr[1], ovr_numpy[1], rtol=tol, atol=1e-12)    # forecasts
    one_shot = []
    for limit in (cal._binning.FUSED_MAX_SLOTS, 0):
        monkeypatch.setattr(cal._binning, "FUSED_MAX_SLOTS", limit)
        one_shot.append(cal.brier_decomposition(scores, y, n_bins=11, convention=convention,
                                                from_logits=from_logits, sample_weight=w))
    np.testing.assert_allclose(one_shot[0], one_shot[1], rtol=tol, atol=1e-15)


def edge_logits(rng, n, k, n_bins):
    """float32 logits whose float64 softmax puts each row's top probability on an interior
    bin edge to within the rounding of the logits (a few 1e-8 relative), or every seventh
    row (every row for one bin) at 1 or just below; some rows exactly 1/2 (two maxima, the
    other classes masked)."""
    z = rng.standard_normal((n, k)) * 2.0
    top = z.argmax(axis=1)
    rows = np.arange(n)
    others = np.ones((n, k), bool)
    others[rows, top] = False
    m = z[rows, top][:, None]
    r_now = np.where(others, np.exp(z - m), 0.0).sum(axis=1)
    # S - 1 around 2^-53, where the top probability 1/S rounds to 1 or not
    r_want = 2.0 ** -53 * rng.choice([0.5, 1.0, 1.0 + 1e-7, 2.0], n)
    if n_bins > 1:
        target = rng.integers(1, n_bins, n) / n_bins
        target = np.maximum(target, 2.0 / k)           # a top probability is at least 1/k
        r_want = np.where(np.arange(n) % 7 == 3, r_want, 1.0 / target - 1.0)
    z = np.where(others, z + np.log(r_want / r_now)[:, None], z)
    z[::50] = -np.inf
    z[::50, :2] = 0.0
    return z.astype(np.float32)


@pytest.mark.parametrize("convention", ["right", "torchmetrics"])
@pytest.mark.parametrize("n_bins", [1, 4, 15])
def test_float32_probabilities_at_edges_are_binned_as_in_float64(monkeypatch, convention,
                                                                 n_bins):
    """The fused pass forms float32 logits' probabilities in float32 and decides those near
    an edge (and torchmetrics' bin of probability 1) in float64: every class lands in the
    bin of its float64 softmax probability, as on the NumPy path."""
    rng = np.random.default_rng(n_bins)
    z = edge_logits(rng, 4000, 40, n_bins)
    y = rng.integers(0, 40, len(z))
    p = ref._softmax(z.astype(np.float64))
    if n_bins > 1:
        at_edge = np.abs(p * n_bins - np.round(p * n_bins)) < 1e-6 * p * n_bins
        assert at_edge.sum() > 2500                    # the test is about these
    stats = []
    for limit in (cal._binning.FUSED_MAX_SLOTS, 0):
        monkeypatch.setattr(cal._binning, "FUSED_MAX_SLOTS", limit)
        acc = cal.CalibrationAccumulator(n_bins, convention=convention, from_logits=True)
        for rows in np.array_split(np.arange(len(y)), 3):
            acc.update(z[rows], y[rows])
        stats.append(acc._state.stats)
    slots = n_bins + (convention == "torchmetrics")
    fused, numpy_path = (s[3 * slots:3 * slots * 41].reshape(3, 40, slots) for s in stats)
    np.testing.assert_array_equal(fused[0], numpy_path[0])   # bin counts
    np.testing.assert_array_equal(fused[2], numpy_path[2])   # label counts
    np.testing.assert_allclose(fused[1], numpy_path[1], rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("k", [3, 33, 100])
def test_16_bit_logits_give_the_numbers_of_their_float32_widening(dtype, k):
    """16-bit logits (widened a few rows at a time inside the fused pass): every statistic
    equals, bit for bit, that of the same logits widened to float32 by NumPy; rows with ties
    for the maximum (the first one is the prediction), a maximum of 0 and -0, masked
    classes, and labels on the tied classes."""
    if dtype == "bfloat16":
        dtype = pytest.importorskip("ml_dtypes").bfloat16
    rng = np.random.default_rng(k)
    z = rng.standard_normal((3000, k)) * 3.0
    z[::5] = np.round(z[::5])                       # ties
    z[1::7, :] = -5.0
    z[1::7, k // 2:] = 0.0                          # maximum 0, tied
    z[2::7, :2] = -0.0
    z[2::7, 2:] = -1.0                              # maximum -0
    z[3::11, 1] = -np.inf
    y = rng.integers(0, k, len(z))
    y[1::7] = k // 2
    half = z.astype(dtype)
    wide = half.astype(np.float32)
    for convention in ("right", "torchmetrics"):
        stats = []
        for scores in (half, wide):
            acc = cal.CalibrationAccumulator(10, convention=convention, from_logits=True)
            acc.update(scores, y)
            stats.append(acc._state.stats)
        np.testing.assert_array_equal(stats[0], stats[1])


def test_a_refused_update_changes_nothing():
    acc = cal.CalibrationAccumulator(5, from_logits=True).update(*problem(4, 50, 3)[:2])
    before = snapshot(acc)
    for bad in [lambda: acc.update(np.zeros((4, 4)), [0, 1, 2, 3]),       # another K
                lambda: acc.update(np.zeros((4, 3)), [0, 1, 2, 3]),       # label 3
                lambda: acc.update(np.zeros((2, 3)), [0, 1], [1.0, -1.0])]:
        with pytest.raises(ValueError):
            bad()
        assert snapshot(acc) == before


# ----------------------------------------------------------------------------------------------
# 2. Bin memory: allocated once, per-update work proportional to the rows; a documented limit.
# ----------------------------------------------------------------------------------------------

def traced_peak(fn):
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_one_row_update_costs_the_row_not_the_bins():
    n_bins, k = 100_000, 50                       # 5e6 one-vs-rest slots: 120 MB of sums
    z, y, _ = problem(5, 3, k)
    acc = cal.CalibrationAccumulator(n_bins, from_logits=True)
    state_bytes = 8 * 3 * (n_bins * (k + 1))
    first = traced_peak(lambda: acc.update(z[:1], y[:1]))
    assert state_bytes <= first < 1.05 * state_bytes  # the statistics, allocated once
    stats = acc._state.stats
    for i in (1, 2):
        peak = traced_peak(lambda: acc.update(z[i:i + 1], y[i:i + 1]))
        assert peak < 64 * 1024, peak                 # was two copies of the sums: 240 MB
        assert acc._state.stats is stats              # updated in place, not reallocated
    got = acc.result()
    assert got.count == 3
    assert got.ece == pytest.approx(cal.calibration_error(z, y, n_bins=n_bins,
                                                          from_logits=True), rel=1e-12)
    d = cal.brier_decomposition(z, y, n_bins=n_bins, from_logits=True)
    assert got.reliability == pytest.approx(d.reliability, rel=1e-12)
    assert got.resolution == pytest.approx(d.resolution, rel=1e-12, abs=1e-15)


def test_one_shot_decomposition_allocates_its_bins_once(monkeypatch):
    monkeypatch.setattr(cal._rows, "_CHUNK_ELEMENTS", 50 * 10)    # 10-row chunks: 20 of them
    n_bins, k = 20_000, 50
    z, y, _ = problem(6, 200, k)
    peak = traced_peak(lambda: cal.brier_decomposition(z, y, n_bins=n_bins, from_logits=True))
    assert peak < 1.5 * 8 * 3 * n_bins * k   # one (3, K, bins) array, not one per chunk
    r = ref.brier_decomposition(z, y, n_bins=n_bins, from_logits=True)
    got = cal.brier_decomposition(z, y, n_bins=n_bins, from_logits=True)
    assert got.reliability == pytest.approx(r["reliability"], rel=1e-12)


def test_classes_times_bins_beyond_the_limit_is_refused_naming_n_bins():
    assert cal.MAX_BIN_SLOTS == 2**26
    z = np.random.default_rng(7).standard_normal((1, 100))
    acc = cal.CalibrationAccumulator(n_bins=10**6, from_logits=True)   # 1e8 slots
    with pytest.raises(ValueError, match=r"^n_bins: .*2\*\*26"):
        acc.update(z, [3])
    assert acc._state is None and acc.count == 0
    acc.update(np.zeros((1, 60)), [0])          # 6e7 slots: within the limit
    with pytest.raises(ValueError, match="^n_bins:"):
        cal.brier_decomposition(np.full((2, 100), 0.01), [0, 1], n_bins=10**6)
    # The limit counts torchmetrics' extra bin: 2**20 bins + 1 for 64 classes is one row
    # of 64 slots too many.
    cal._binning.check_bin_slots(2**20 - 1, "torchmetrics", 64)
    cal._binning.check_bin_slots(2**20, "right", 64)
    with pytest.raises(ValueError, match="^n_bins:"):
        cal._binning.check_bin_slots(2**20, "torchmetrics", 64)
    cal._binning.check_bin_slots(10**7, "torchmetrics", 0)  # binary: one class binned


# ----------------------------------------------------------------------------------------------
# 3. Uniform sample weights change nothing, whatever their magnitude.
# ----------------------------------------------------------------------------------------------

SCALES = [1e306, 1e-306, 1e-310, 2.0**-1074, 1.7e308]


def close(a, b, tol=1e-12):
    return a == b or abs(a - b) <= tol * max(1.0, abs(b))


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("k", [0, 4])
def test_uniform_weights_of_any_magnitude_change_nothing(scale, k):
    n = 100                                     # n * 1.7e308 overflows: bins must not
    z, y, _ = problem(8, n, k)
    w = np.full(n, scale)
    kw = dict(from_logits=True)
    for strategy in ("uniform", "quantile"):
        for convention in ("right", "torchmetrics"):
            bins = dict(n_bins=8, strategy=strategy, convention=convention, **kw)
            for norm in ("l1", "l2", "max"):
                plain = cal.calibration_error(z, y, norm=norm, **bins)
                assert close(cal.calibration_error(z, y, norm=norm, sample_weight=w, **bins),
                             plain)
            d0 = cal.reliability_diagram(z, y, **bins)
            d1 = cal.reliability_diagram(z, y, sample_weight=w, **bins)
            np.testing.assert_allclose(d1.mean_confidence, d0.mean_confidence, rtol=1e-12)
            np.testing.assert_allclose(d1.accuracy, d0.accuracy, rtol=1e-12)
            finite = d0.counts * scale < np.inf
            np.testing.assert_allclose(d1.counts[finite], d0.counts[finite] * scale,
                                       rtol=1e-12)
            assert close(d1.calibration_error("l2"), d0.calibration_error("l2"))
            b0 = cal.brier_decomposition(z, y, **bins)
            b1 = cal.brier_decomposition(z, y, sample_weight=w, **bins)
            for a, b in zip(b1, b0):
                assert close(a, b), (b1, b0)
    assert close(cal.brier_score(z, y, sample_weight=w, **kw), cal.brier_score(z, y, **kw))
    plain = cal.CalibrationAccumulator(6, from_logits=True).update(z, y).result()
    heavy = cal.CalibrationAccumulator(6, from_logits=True)
    for rows in np.array_split(np.arange(n), 3):
        heavy.update(z[rows], y[rows], w[rows])
    got = heavy.result()
    assert got.weight_sum == pytest.approx(n * scale, rel=1e-12) or (
        n * scale == np.inf and got.weight_sum == np.inf)
    for key in ("ece", "rms", "mce", "brier", "reliability", "resolution", "uncertainty",
                "nll", "accuracy", "mean_confidence"):
        assert close(getattr(got, key), getattr(plain, key)), key
    merged = cal.CalibrationAccumulator(6, from_logits=True)
    merged.merge(cal.CalibrationAccumulator(6, from_logits=True).update(z[:40], y[:40],
                                                                          w[:40]))
    merged.merge(cal.CalibrationAccumulator(6, from_logits=True).update(z[40:], y[40:],
                                                                          w[40:]))
    assert close(merged.result().ece, plain.ece) and close(merged.result().nll, plain.nll)


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("binary", [False, True])
def test_uniform_class_weights_of_any_magnitude_leave_the_temperature(scale, binary):
    rng = np.random.default_rng(9)
    z = rng.standard_normal(400 if binary else (400, 4)) * 3.0
    if binary:  # labels drawn at temperature 1.8, so that a finite T fits
        y = (rng.random(400) < 1 / (1 + np.exp(-z / 1.8))).astype(int)
    else:
        p = np.exp(z / 1.8)
        y = ((p / p.sum(1, keepdims=True)).cumsum(1) < rng.random((400, 1))).sum(1).clip(0, 3)
    t = cal.fit_temperature(z, y)
    got = cal.fit_temperature(z, y, weight=np.full(2 if binary else 4, scale))
    assert got == pytest.approx(t, rel=1e-7)


def test_weights_spanning_the_float_range_merge_like_one_shot():
    """Parts weighted 1e-300 and 1e300: each accumulator keeps its own scale; merged, the
    light part is negligible exactly as in the one-shot metrics on the joined weights."""
    z, y, w = problem(10, 300, 3, weighted=True)
    scale = np.where(np.arange(300) < 150, 1e-300, 1e300)
    ws = w * scale
    one = cal.CalibrationAccumulator(5, from_logits=True).update(z[150:], y[150:], ws[150:])
    two = cal.CalibrationAccumulator(5, from_logits=True).update(z[:150], y[:150], ws[:150])
    for first, second in [(one, two), (two, one)]:
        acc = cal.CalibrationAccumulator(5, from_logits=True).merge(first).merge(second)
        got = acc.result()
        assert close(got.ece, cal.calibration_error(z, y, n_bins=5, from_logits=True,
                                                    sample_weight=ws))
        assert close(got.brier, cal.brier_score(z, y, from_logits=True, sample_weight=ws))
        assert close(got.ece, cal.calibration_error(z[150:], y[150:], n_bins=5,
                                                    from_logits=True, sample_weight=w[150:]))
        assert got.count == 300


# ----------------------------------------------------------------------------------------------
# 4. A temperature objective that does not depend on T.
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("z, y", [
    (np.zeros((5, 3)), [0, 1, 2, 0, 1]),                           # all equal
    (np.array([[2.0, 2.0], [-1.0, -1.0], [7.0, 7.0]]), [0, 1, 1]),  # equal within each row
    (np.array([[1.0, 1.0, -np.inf], [0.0, -np.inf, 0.0]]), [1, 2]),  # masked classes aside
    (np.zeros(4), [0, 1, 1, 0]),                                    # binary logits of 0
    (np.full((3, 4), 1e300), [0, 1, 2]),                            # beyond the rescaling
    (np.full((3, 4), 1e-300), [3, 1, 2]),
])
def test_a_constant_temperature_objective_gives_one(z, y):
    assert cal.fit_temperature(z, y) == 1.0
    assert ref.fit_temperature(z, y) == 1.0
    z2 = np.stack([np.zeros_like(z), z], axis=1) if np.ndim(z) == 1 else z
    losses = [ref.temperature_objective(z2, y, beta)[0] for beta in (1e-3, 1.0, 1e3)]
    assert max(losses) - min(losses) < 1e-12     # the loss really is constant


def test_constant_rows_do_not_hide_the_others():
    # Rows of equal logits add a constant; the other rows decide.
    const = np.zeros((3, 2))
    right = np.array([[3.0, 0.0], [0.0, 2.0]])
    with pytest.raises(ValueError, match="^logits:.*T -> 0"):
        cal.fit_temperature(np.vstack([const, right]), [0, 1, 0, 0, 1])
    rng = np.random.default_rng(11)
    z = rng.standard_normal((300, 3)) * 2.0
    y = rng.integers(0, 3, 300)
    both = cal.fit_temperature(np.vstack([z, np.zeros((50, 3))]), np.append(y, [0] * 50))
    assert both == pytest.approx(ref.fit_temperature(np.vstack([z, np.zeros((50, 3))]),
                                                     np.append(y, [0] * 50)), rel=1e-5)
    # Rows of weight zero do not count: what is left is constant.
    w = np.array([1.0, 0.0])
    assert cal.fit_temperature(np.array([[0.0, 0.0], [0.0, 5.0]]), [0, 1], weight=w) == 1.0


# ----------------------------------------------------------------------------------------------
# 5. No warning escapes from the package, whatever the input.
# ----------------------------------------------------------------------------------------------

def extreme_inputs():
    big = np.array([[1e308, -1e308, 0.0], [-1e308, 1e308, 1e308], [0.0, 0.0, -np.inf],
                    [5e-324, -5e-324, 0.0]])
    big32 = np.array([[3.4e38, -3.4e38, 0.0], [0.0, -3.4e38, 3.4e38]], dtype=np.float32)
    half = np.array([[65504.0, -65504.0], [0.0, 65504.0]], dtype=np.float16)
    binary = np.array([1e308, -1e308, np.inf, -np.inf, 0.0, 5e-324])
    wide = np.array([1e4000, -1e4000, 1.0], dtype=np.longdouble) if (
        np.finfo(np.longdouble).max > 1e308) else np.array([np.inf, -np.inf, 1.0])
    probs = np.array([[1.0, 0.0, 0.0], [5e-324, 1.0 - 5e-324, 0.0], [0.0, 0.0, 1.0]])
    pbin = np.array([0.0, 1.0, 5e-324, 1.0 - 2**-53])
    return [
        (big, [0, 1, 2, 0], True), (big32, [1, 0], True), (half, [1, 0], True),
        (binary, [0, 1, 0, 1, 1, 0], True), (wide, [0, 1, 1], True),
        (probs, [1, 0, 2], False), (pbin, [1, 0, 1, 0], False),
    ]


WEIGHTS = [None, "huge", "tiny", "mixed"]


def weights_for(kind, n):
    return {None: None, "huge": np.full(n, 1.7e308), "tiny": np.full(n, 5e-324),
            "mixed": np.resize([1.7e308, 5e-324, 0.0, 1.0], n)}[kind]


@pytest.mark.parametrize("case", range(7))
@pytest.mark.parametrize("wkind", WEIGHTS)
def test_no_warning_escapes_from_binned_metrics(case, wkind):
    scores, labels, fl = extreme_inputs()[case]
    w = weights_for(wkind, len(labels))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for strategy in ("uniform", "quantile"):
            for convention in ("right", "torchmetrics"):
                kw = dict(n_bins=4, strategy=strategy, convention=convention, from_logits=fl,
                          sample_weight=w)
                for norm in ("l1", "l2", "max"):
                    assert 0 <= cal.calibration_error(scores, labels, norm=norm, **kw) <= 1
                d = cal.reliability_diagram(scores, labels, **kw)
                d.calibration_error()
                assert all(math.isfinite(v) for v in cal.brier_decomposition(scores, labels,
                                                                               **kw))
        assert 0 <= cal.brier_score(scores, labels, from_logits=fl, sample_weight=w) <= 2
        acc = cal.CalibrationAccumulator(4, from_logits=fl)
        acc.update(scores, labels, w).update(scores, labels)
        acc.merge(cal.CalibrationAccumulator(4, from_logits=fl).update(scores, labels, w))
        r = acc.result()
        assert 0 <= r.ece <= 1 and r.nll >= 0


@pytest.mark.parametrize("case", range(5))
def test_no_warning_escapes_from_logit_diagnostics(case):
    z, y, _ = extreme_inputs()[case]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for t in (1e-310, 1e-300, 1.0, 1e300, 1.7e308):
            e = cal.energy_score(np.atleast_2d(z), temperature=t)
            assert not np.isnan(e).any()
        try:
            t = cal.fit_temperature(z, y)
            assert t > 0
        except ValueError as exc:
            assert str(exc).startswith(("logits", "labels")), exc
        for weight in (None, "huge"):
            k = 2 if np.ndim(z) == 1 else np.shape(z)[1]
            cw = None if weight is None else np.full(k, 1.7e308)
            try:
                cal.fit_temperature(z, y, weight=cw)
            except ValueError as exc:
                assert str(exc).startswith(("logits", "labels")), exc
        try:
            b = cal.loss_breakdown(z, y)
            assert b.mean_loss >= 0
        except ValueError as exc:
            assert str(exc).startswith(("logits", "labels")), exc


# --- values checked inside the fused pass (no NumPy scan before it) -------------------------

@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("row", [0, 2500, 4999])
def test_fused_pass_refuses_bad_scores_wherever_they_are(dtype, row):
    rng = np.random.default_rng(3)
    z = rng.normal(size=(5000, 7)).astype(dtype)
    p = (np.full((5000, 7), 1 / 7)).astype(dtype)
    y = rng.integers(0, 7, 5000)
    cases = [(z, True, (row, 3), np.nan, "NaN"), (z, True, (row, 6), np.inf, r"\+inf logits"),
             (z, True, (row, slice(None)), -np.inf, "every logit equal to -inf"),
             (p, False, (row, 1), 1.25, r"probabilities must lie in \[0, 1\]"),
             (p, False, (row, 0), -0.5, r"probabilities must lie in \[0, 1\]"),
             (p, False, (row, 0), np.nan, "NaN")]
    for good, logits, at, value, message in cases:
        bad = good.copy()
        bad[at] = value
        with pytest.raises(ValueError, match=message):
            cal.calibration_error(bad, y, from_logits=logits)
        with pytest.raises(ValueError, match=message):
            cal.reliability_diagram(bad, y, from_logits=logits)
        # Bad scores are named before bad labels, as when they were checked first.
        with pytest.raises(ValueError, match=message):
            cal.calibration_error(bad, y + 7, from_logits=logits)
        acc = cal.CalibrationAccumulator(n_bins=10, from_logits=logits)
        acc.update(good[:100], y[:100])
        before = acc.result()
        with pytest.raises(ValueError, match=message):
            acc.update(bad, y)
        with pytest.raises(ValueError, match=message):
            acc.update(bad, y[:10])
        assert acc.count == 100 and acc.result().ece == before.ece
