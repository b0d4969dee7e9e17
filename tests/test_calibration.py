"""xent_rs.calibration against its float64 reference, hand-computed cases and other libraries."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import xent_rs as xr
from xent_rs import calibration as cal
from xent_rs import _calibration_reference as ref

CONVENTIONS = ["right", "torchmetrics"]
STRATEGIES = ["uniform", "quantile"]
NORMS = ["l1", "l2", "max"]
FIELDS = ["reliability", "resolution", "uncertainty", "brier"]


def close(a, b, tol=1e-12):
    """Scalars agree to ``tol`` relative, with an absolute floor of ``tol`` (inf == inf)."""
    return a == b or abs(a - b) <= tol * max(1.0, abs(b))


def make_problem(seed, n, k, *, from_logits, coarse, dtype=np.float64, weighted=False):
    """Random scores (k = 0: binary (n,)), labels and optional weights (some exactly 0)."""
    rng = np.random.default_rng(seed)
    shape = (n,) if k == 0 else (n, k)
    if from_logits:
        scores = rng.standard_normal(shape) * 3.0
        if coarse:  # ties between classes, repeated confidences
            scores = np.round(scores * 2.0) / 2.0
    elif k == 0:
        scores = rng.random(n)
        if coarse:  # dyadic values that land exactly on uniform edges for n_bins in {2, 4, 8}
            scores = np.round(scores * 8.0) / 8.0
    else:
        scores = rng.random(shape) ** 3
        scores /= scores.sum(axis=1, keepdims=True)
        if coarse:
            scores = np.round(scores * 8.0) / 8.0
    labels = rng.integers(0, 2 if k == 0 else k, size=n)
    weights = None
    if weighted:
        weights = rng.random(n) * (rng.random(n) > 0.2)
        weights[0] = 1.0 + weights[0]
    return scores.astype(dtype), labels, weights


# ----------------------------------------------------------------------------------------------
# Fast against the reference.
# ----------------------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 80), k=st.sampled_from([0, 2, 3, 7]),
       from_logits=st.booleans(), coarse=st.booleans(), weighted=st.booleans(),
       n_bins=st.sampled_from([1, 2, 4, 8, 10, 15]))
def test_calibration_error_and_diagram_match_reference(seed, n, k, from_logits, coarse,
                                                       weighted, n_bins):
    scores, labels, w = make_problem(seed, n, k, from_logits=from_logits, coarse=coarse,
                                     weighted=weighted)
    for convention in CONVENTIONS:
        for strategy in STRATEGIES:
            if from_logits and coarse and strategy == "quantile":
                # Repeated confidences put quantile edges exactly on data points; the fused
                # kernel's and NumPy's exponentials may differ in the last bit there, which
                # moves a point across the edge. Uniform edges are not data points.
                continue
            kw = dict(n_bins=n_bins, strategy=strategy, convention=convention,
                      from_logits=from_logits, sample_weight=w)
            for norm in NORMS:
                fast = cal.calibration_error(scores, labels, norm=norm, **kw)
                slow = ref.calibration_error(scores, labels, norm=norm, **kw)
                assert isinstance(fast, float)
                assert close(fast, slow), (convention, strategy, norm, fast, slow)
            d = cal.reliability_diagram(scores, labels, **kw)
            edges, counts, conf, acc = ref.reliability_curve(scores, labels, **kw)
            # Quantile edges are percentiles of confidences that the fused kernel and the
            # reference compute with different (correctly rounded to 1 ulp) exponentials.
            np.testing.assert_allclose(d.edges, edges, rtol=1e-14, atol=0)
            np.testing.assert_allclose(d.counts, counts, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(d.mean_confidence, conf, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(d.accuracy, acc, rtol=1e-12, atol=1e-12)
            assert close(d.calibration_error("l1"), cal.calibration_error(scores, labels, **kw))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 80), k=st.sampled_from([0, 2, 3, 7]),
       from_logits=st.booleans(), coarse=st.booleans(), weighted=st.booleans(),
       n_bins=st.sampled_from([1, 3, 8, 15]))
def test_brier_and_decomposition_match_reference(seed, n, k, from_logits, coarse, weighted,
                                                 n_bins):
    scores, labels, w = make_problem(seed, n, k, from_logits=from_logits, coarse=coarse,
                                     weighted=weighted)
    kw = dict(from_logits=from_logits, sample_weight=w)
    brier = cal.brier_score(scores, labels, **kw)
    assert close(brier, ref.brier_score(scores, labels, **kw))
    assert 0.0 <= brier <= (1.0 if k == 0 else 2.0)
    for convention in CONVENTIONS:
        for strategy in STRATEGIES:
            d = cal.brier_decomposition(scores, labels, n_bins=n_bins, strategy=strategy,
                                        convention=convention, **kw)
            if from_logits and coarse and strategy == "quantile":
                # Repeated probabilities put quantile edges exactly on data points, where
                # the kernel's and NumPy's exponentials may differ in the last bit (see
                # above): the reference bins the kernel's own probabilities here.
                p = cal._rows.probabilities(scores, k == 0, True)
                r = ref.brier_decomposition(p, labels, n_bins=n_bins, strategy=strategy,
                                            convention=convention, sample_weight=w)
                r["brier"] = ref.brier_score(scores, labels, **kw)
            else:
                r = ref.brier_decomposition(scores, labels, n_bins=n_bins, strategy=strategy,
                                            convention=convention, **kw)
            for field in FIELDS:
                assert close(getattr(d, field), r[field]), (field, convention, strategy)
            assert d.brier == brier


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [0, 5])
def test_float32_input_matches_reference(dtype, k):
    scores, labels, w = make_problem(7, 3000, k, from_logits=True, coarse=False, dtype=dtype,
                                     weighted=True)
    for norm in NORMS:
        fast = cal.calibration_error(scores, labels, norm=norm, from_logits=True,
                                     sample_weight=w)
        slow = ref.calibration_error(scores, labels, norm=norm, from_logits=True,
                                     sample_weight=w)
        assert close(fast, slow, 1e-12 if dtype == np.float64 else 1e-6)


def test_top_label_hook_matches_softmax_and_ignores_chunking(monkeypatch):
    rng = np.random.default_rng(3)
    z = rng.standard_normal((1000, 9)) * 4.0
    z[::7, 3] = -np.inf                                   # masked classes
    z[::11] = np.round(z[::11])                           # ties
    z[5] = [1.0, 2.0, 2.0, 0.0, -1.0, 2.0, 0.0, 0.0, 0.0]  # argmax tie: first index wins
    y = rng.integers(0, 9, size=1000)
    y[5] = 2
    conf, correct = cal._top_label_from_logits(z, y)
    p = ref._softmax(z)
    assert conf.dtype == np.float64 and correct.dtype == bool
    np.testing.assert_allclose(conf, p.max(axis=1), rtol=1e-14)
    np.testing.assert_array_equal(correct, p.argmax(axis=1) == y)
    assert not correct[5]
    monkeypatch.setattr(cal._rows, "_CHUNK_ELEMENTS", 9 * 37)  # rows handled 37 at a time
    conf2, correct2 = cal._top_label_from_logits(z, y)
    np.testing.assert_array_equal(conf2, conf)
    np.testing.assert_array_equal(correct2, correct)


def test_temperature_objective_hook_matches_reference():
    rng = np.random.default_rng(4)
    z = rng.standard_normal((300, 6)) * 2.0
    z[::5, 1] = -np.inf
    y = rng.integers(0, 6, size=300)
    y[::5] = np.where(y[::5] == 1, 0, y[::5])
    weight = np.array([0.5, 1.0, 2.0, 0.0, 1.5, 1.0])
    for beta in [0.0, 0.3, 1.0, 4.0]:
        for wt in [None, weight]:
            loss, grad = cal._temperature_objective(z, y, beta, wt)
            rloss, rgrad = ref.temperature_objective(z, y, beta, wt)
            assert close(loss, rloss) and close(grad, rgrad), (beta, wt)
    # The derivative is the slope of the loss.
    h = 1e-6
    lp, _ = cal._temperature_objective(z, y, 0.7 + h, weight)
    lm, _ = cal._temperature_objective(z, y, 0.7 - h, weight)
    assert close((lp - lm) / (2 * h), cal._temperature_objective(z, y, 0.7, weight)[1], 1e-6)


# ----------------------------------------------------------------------------------------------
# Hand-computed cases: scikit-learn's conventions, torchmetrics' bin at 1.0, edges.
# ----------------------------------------------------------------------------------------------

P_BIN = np.array([0.0, 0.1, 0.2, 0.2, 0.4, 0.5, 0.6, 0.8, 0.9, 1.0])
Y_BIN = np.array([0, 0, 1, 0, 0, 1, 1, 1, 0, 1])


def test_reliability_curve_by_hand_sklearn_convention():
    # Edges linspace(0, 1, 6) = [0, .2, .4, .6000000000000001, .8, 1]; right-closed bins:
    # [0, .2] {0, .1, .2, .2} -> outcomes 0,0,1,0; (.2, .4] {.4} -> 0; (.4, .6+] {.5, .6} -> 1,1;
    # (.6+, .8] {.8} -> 1; (.8, 1] {.9, 1} -> 0,1.
    d = cal.reliability_diagram(P_BIN, Y_BIN, n_bins=5)
    np.testing.assert_array_equal(d.counts, [4, 1, 2, 1, 2])
    np.testing.assert_allclose(d.accuracy, [0.25, 0.0, 1.0, 1.0, 0.5], rtol=0, atol=1e-15)
    np.testing.assert_allclose(d.mean_confidence, [0.125, 0.4, 0.55, 0.8, 0.95], rtol=1e-15)
    ece = (4 * 0.125 + 1 * 0.4 + 2 * 0.45 + 1 * 0.2 + 2 * 0.45) / 10
    assert close(cal.calibration_error(P_BIN, Y_BIN, n_bins=5), ece, 1e-15)
    assert close(cal.calibration_error(P_BIN, Y_BIN, n_bins=5, norm="max"), 0.45, 1e-15)
    # (0 + .01 + .64 + .04 + .16 + .25 + .16 + .04 + .81 + 0) / 10
    assert close(cal.brier_score(P_BIN, Y_BIN), 0.211, 1e-15)


def test_quantile_curve_by_hand():
    # Linear-interpolated percentiles of the sorted P_BIN at 0, 20, ..., 100 % (positions
    # 0, 1.8, 3.6, 5.4, 7.2, 9): [0, .18, .32, .54, .82, 1]; two samples per bin:
    # {0, .1} -> 0,0; {.2, .2} -> 1,0; {.4, .5} -> 0,1; {.6, .8} -> 1,1; {.9, 1} -> 0,1.
    d = cal.reliability_diagram(P_BIN, Y_BIN, n_bins=5, strategy="quantile")
    np.testing.assert_allclose(d.edges, [0.0, 0.18, 0.32, 0.54, 0.82, 1.0], atol=1e-15)
    np.testing.assert_array_equal(d.counts, [2, 2, 2, 2, 2])
    np.testing.assert_allclose(d.accuracy, [0.0, 0.5, 0.5, 1.0, 0.5], atol=1e-15)
    np.testing.assert_allclose(d.mean_confidence, [0.05, 0.2, 0.45, 0.7, 0.95], atol=1e-15)


def test_against_sklearn():
    calibration = pytest.importorskip("sklearn.calibration")
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(5)
    for p, y in [(P_BIN, Y_BIN), (np.round(rng.random(500) * 8) / 8, rng.integers(0, 2, 500)),
                 (rng.random(500), rng.integers(0, 2, 500))]:
        for strategy in STRATEGIES:
            for n_bins in [2, 4, 5, 8]:
                prob_true, prob_pred = calibration.calibration_curve(y, p, n_bins=n_bins,
                                                                     strategy=strategy)
                d = cal.reliability_diagram(p, y, n_bins=n_bins, strategy=strategy)
                filled = d.counts > 0
                np.testing.assert_allclose(d.accuracy[filled], prob_true, rtol=1e-14)
                np.testing.assert_allclose(d.mean_confidence[filled], prob_pred, rtol=1e-14)
        assert close(cal.brier_score(p, y), metrics.brier_score_loss(y, p), 1e-14)
    probs = rng.random((200, 4))
    probs /= probs.sum(axis=1, keepdims=True)
    labels = rng.integers(0, 4, 200)
    w = rng.random(200)
    expected = metrics.brier_score_loss(labels, probs, labels=[0, 1, 2, 3], sample_weight=w)
    assert close(cal.brier_score(probs, labels, sample_weight=w), expected, 1e-14)


def test_torchmetrics_documented_values():
    # The examples in torchmetrics' binary_/multiclass_calibration_error docstrings.
    p = np.array([0.25, 0.25, 0.55, 0.75, 0.75])
    y = np.array([0, 0, 1, 1, 1])
    got = [cal.calibration_error(p, y, n_bins=2, norm=n, convention="torchmetrics")
           for n in NORMS]
    np.testing.assert_allclose(got, [0.2900, 0.2918, 0.3167], atol=5e-5)
    probs = np.array([[0.25, 0.20, 0.55], [0.55, 0.05, 0.40], [0.10, 0.30, 0.60],
                      [0.90, 0.05, 0.05]])
    labels = np.array([0, 1, 2, 0])
    got = [cal.calibration_error(probs, labels, n_bins=3, norm=n, convention="torchmetrics")
           for n in NORMS]
    np.testing.assert_allclose(got, [0.2000, 0.2082, 0.2333], atol=5e-5)


def test_torchmetrics_convention_confidence_exactly_one():
    # Top-label confidences [1, 1, .95, .92], correct [1, 0, 1, 1], 10 uniform bins.
    probs = np.array([[1.0, 0.0], [1.0, 0.0], [0.05, 0.95], [0.92, 0.08]])
    labels = np.array([0, 1, 1, 0])
    # torchmetrics: [.9, 1) holds .95, .92 (acc 1, conf .935); 1.0 has its own bin (acc .5).
    tm = dict(n_bins=10, convention="torchmetrics")
    assert close(cal.calibration_error(probs, labels, **tm), 0.5 * 0.065 + 0.5 * 0.5, 1e-14)
    assert close(cal.calibration_error(probs, labels, norm="max", **tm), 0.5, 1e-14)
    assert close(cal.calibration_error(probs, labels, norm="l2", **tm),
                 math.sqrt(0.5 * 0.065**2 + 0.5 * 0.25), 1e-14)
    d = cal.reliability_diagram(probs, labels, **tm)
    assert d.edges.shape == (12,) and d.edges[-1] == d.edges[-2] == 1.0
    np.testing.assert_array_equal(d.counts, [0] * 9 + [2, 2])
    np.testing.assert_allclose(d.accuracy[-2:], [1.0, 0.5])
    # scikit-learn's right-closed bins: (.9, 1] holds all four (acc .75, conf .9675).
    assert close(cal.calibration_error(probs, labels, n_bins=10), 0.2175, 1e-14)
    assert close(cal.calibration_error(probs, labels, n_bins=10, norm="max"), 0.2175, 1e-14)


def test_torchmetrics_convention_binary_one():
    p = np.array([1.0, 1.0, 0.75, 0.25])
    y = np.array([1, 0, 1, 0])
    # [0, .5): .25 gap .25; [.5, 1): .75 gap .25; {1}: acc .5, conf 1, gap .5 (half the mass).
    got = cal.calibration_error(p, y, n_bins=2, convention="torchmetrics")
    assert close(got, 0.25 * 0.25 + 0.25 * 0.25 + 0.5 * 0.5, 1e-15)
    # right-closed: [0, .5] gap .25 (1/4); (.5, 1]: acc 2/3, conf 11/12, gap .25 (3/4).
    assert close(cal.calibration_error(p, y, n_bins=2), 0.25, 1e-15)


def test_values_exactly_on_edges():
    p = np.array([0.0, 0.25, 0.5, 0.75, 1.0, 0.3])
    y = np.array([0, 1, 1, 0, 1, 1])
    right = cal.reliability_diagram(p, y, n_bins=4)
    np.testing.assert_array_equal(right.counts, [2, 2, 1, 1])  # (0..25], (.25, .5], ...
    tm = cal.reliability_diagram(p, y, n_bins=4, convention="torchmetrics")
    np.testing.assert_array_equal(tm.counts, [1, 2, 1, 1, 1])  # [0, .25), [.25, .5), ..., {1}
    np.testing.assert_allclose(tm.mean_confidence, [0.0, 0.275, 0.5, 0.75, 1.0])


def test_ties_score_the_first_maximal_class():
    probs = np.array([[0.4, 0.4, 0.2]])
    logits = np.log(probs)
    for scores, fl in [(probs, False), (logits, True)]:
        assert close(cal.calibration_error(scores, [0], n_bins=1, from_logits=fl), 0.6, 1e-15)
        assert close(cal.calibration_error(scores, [1], n_bins=1, from_logits=fl), 0.4, 1e-15)


def test_sample_weight_equals_repetition():
    scores, labels, _ = make_problem(11, 60, 4, from_logits=True, coarse=False)
    reps = np.random.default_rng(0).integers(0, 4, size=60)
    big_s, big_y = np.repeat(scores, reps, axis=0), np.repeat(labels, reps)
    for convention in CONVENTIONS:
        for norm in NORMS:
            kw = dict(n_bins=7, norm=norm, convention=convention, from_logits=True)
            a = cal.calibration_error(scores, labels, sample_weight=reps, **kw)
            assert close(a, cal.calibration_error(big_s, big_y, **kw))
    d = cal.brier_decomposition(scores, labels, sample_weight=reps, from_logits=True)
    e = cal.brier_decomposition(big_s, big_y, from_logits=True)
    for field in FIELDS:
        assert close(getattr(d, field), getattr(e, field))


def test_decomposition_is_exact_for_binwise_constant_forecasts():
    rng = np.random.default_rng(8)
    mids = np.arange(10) / 10 + 0.05
    p1 = rng.choice(mids, size=400)
    probs = np.stack([1.0 - p1, p1], axis=1)
    labels = (rng.random(400) < p1 ** 2).astype(int)
    for scores in [p1, probs]:
        d = cal.brier_decomposition(scores, labels, n_bins=10)
        assert close(d.reliability - d.resolution + d.uncertainty, d.brier, 1e-13)
        assert d.reliability > 0.01 and d.resolution > 0.01
    base = labels.mean()
    assert close(cal.brier_decomposition(probs, labels).uncertainty,
                 1.0 - base**2 - (1 - base) ** 2, 1e-15)


# ----------------------------------------------------------------------------------------------
# The accumulator equals the one-shot functions on the concatenated data.
# ----------------------------------------------------------------------------------------------

def one_shot(scores, labels, w, n_bins, convention, from_logits):
    kw = dict(n_bins=n_bins, convention=convention, from_logits=from_logits, sample_weight=w)
    d = cal.brier_decomposition(scores, labels, **kw)
    conf, outcome = ref._confidence_and_outcome(scores, labels, from_logits)
    wt = np.ones(len(labels)) if w is None else w
    if scores.ndim == 1:
        p = ref._probabilities(scores, from_logits)
        hit = (p > 0.5) == labels
    else:
        hit = outcome
    return {
        "ece": cal.calibration_error(scores, labels, norm="l1", **kw),
        "rms": cal.calibration_error(scores, labels, norm="l2", **kw),
        "mce": cal.calibration_error(scores, labels, norm="max", **kw),
        "brier": cal.brier_score(scores, labels, from_logits=from_logits, sample_weight=w),
        "reliability": d.reliability, "resolution": d.resolution,
        "uncertainty": d.uncertainty,
        "nll": ref.negative_log_likelihood(scores, labels, from_logits=from_logits,
                                           sample_weight=w),
        "accuracy": float((wt * hit).sum() / wt.sum()),
        "mean_confidence": float((wt * conf).sum() / wt.sum()),
        "count": len(labels), "weight_sum": float(wt.sum()),
    }


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 120), k=st.sampled_from([0, 2, 5]),
       from_logits=st.booleans(), weighted=st.booleans(), coarse=st.booleans(),
       convention=st.sampled_from(CONVENTIONS), n_bins=st.sampled_from([1, 4, 15]),
       data=st.data())
def test_accumulator_splits_and_merges_equal_one_shot(seed, n, k, from_logits, weighted,
                                                      coarse, convention, n_bins, data):
    scores, labels, w = make_problem(seed, n, k, from_logits=from_logits, coarse=coarse,
                                     weighted=weighted)
    cuts = sorted(data.draw(st.lists(st.integers(0, n), max_size=6)))
    bounds = [0, *cuts, n]
    parts = []
    for a, b in zip(bounds[:-1], bounds[1:]):  # some parts may be empty
        acc = cal.CalibrationAccumulator(n_bins, convention=convention, from_logits=from_logits)
        acc.update(scores[a:b], labels[a:b], None if w is None else w[a:b])
        parts.append(acc)
    order = data.draw(st.permutations(range(len(parts))))
    total = cal.CalibrationAccumulator(n_bins, convention=convention, from_logits=from_logits)
    for i in order:
        total.merge(parts[i])
    chained = cal.CalibrationAccumulator(n_bins, convention=convention, from_logits=from_logits)
    for a, b in zip(bounds[:-1], bounds[1:]):
        chained.update(scores[a:b], labels[a:b], None if w is None else w[a:b])
    expected = one_shot(scores, labels, w, n_bins, convention, from_logits)
    for acc in (total, chained):
        got = acc.result()
        for key, value in expected.items():
            assert close(getattr(got, key), value), (key, getattr(got, key), value)
        d = cal.reliability_diagram(scores, labels, n_bins=n_bins, convention=convention,
                                    from_logits=from_logits, sample_weight=w)
        np.testing.assert_allclose(got.diagram.counts, d.counts, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(got.diagram.accuracy, d.accuracy, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(got.diagram.mean_confidence, d.mean_confidence,
                                   rtol=1e-12, atol=1e-12)
    assert total.count == n


def test_accumulator_large_chunks(monkeypatch):
    monkeypatch.setattr(cal._rows, "_CHUNK_ELEMENTS", 6 * 1000)  # several chunks per update
    scores, labels, w = make_problem(21, 20000, 6, from_logits=True, coarse=False,
                                     weighted=True)
    acc = cal.CalibrationAccumulator(15, from_logits=True)
    for rows in np.array_split(np.arange(20000), 3):
        acc.update(scores[rows], labels[rows], w[rows])
    got = acc.result()
    expected = one_shot(scores, labels, w, 15, "right", True)
    for key, value in expected.items():
        assert close(getattr(got, key), value), key
    assert got.as_dict()["count"] == 20000 and "diagram" not in got.as_dict()


# ----------------------------------------------------------------------------------------------
# Temperature scaling, energy.
# ----------------------------------------------------------------------------------------------

def sample_labels(rng, logits, temperature):
    p = ref._softmax(logits / temperature)
    return np.minimum((p.cumsum(axis=1) < rng.random((len(p), 1))).sum(axis=1),
                      logits.shape[1] - 1)


@pytest.mark.parametrize("t0", [0.5, 1.0, 2.5])
def test_fit_temperature_recovers_known_temperature(t0):
    rng = np.random.default_rng(int(t0 * 10))
    z = rng.standard_normal((200_000, 10)) * 2.0
    y = sample_labels(rng, z, t0)
    t = cal.fit_temperature(z.astype(np.float32), y)
    assert isinstance(t, float)
    assert abs(t / t0 - 1) < 0.03, t
    # At the optimum the slope of the mean loss in beta = 1/T vanishes.
    _, slope = ref.temperature_objective(z[:2000], y[:2000], 1.0 / t)
    _, fast_slope = cal._temperature_objective(z.astype(np.float32), y, 1.0 / t, None)
    assert abs(fast_slope) < 1e-7
    assert abs(slope) < 0.1  # a 2000-row subsample: the slope there is only ~0 statistically


@pytest.mark.parametrize("binary", [False, True])
def test_fit_temperature_matches_reference(binary):
    rng = np.random.default_rng(9)
    if binary:
        z = rng.standard_normal(400) * 3.0
        y = (rng.random(400) < 1 / (1 + np.exp(-z / 1.8))).astype(int)
        weight = np.array([1.0, 2.5])
    else:
        z = rng.standard_normal((400, 4)) * 3.0
        y = sample_labels(rng, z, 1.8)
        weight = np.array([1.0, 0.5, 2.0, 1.5])
    for wt in [None, weight]:
        t = cal.fit_temperature(z, y, weight=wt)
        assert abs(t / ref.fit_temperature(z, y, weight=wt) - 1) < 1e-5
        z2 = np.stack([np.zeros_like(z), z], axis=1) if binary else z
        _, slope = ref.temperature_objective(z2, y, 1.0 / t, wt)
        assert abs(slope) < 1e-8
    if binary:
        assert abs(cal.fit_temperature(z, y) /
                    cal.fit_temperature(np.stack([np.zeros_like(z), z], axis=1), y) - 1) < 1e-9


def test_fit_temperature_degenerate_cases():
    z = np.array([[3.0, 0.0], [0.0, 2.0]])
    with pytest.raises(ValueError, match="^logits:.*T -> 0"):
        cal.fit_temperature(z, [0, 1])          # every row already right: T -> 0
    with pytest.raises(ValueError, match="^logits:.*T -> inf"):
        cal.fit_temperature(z, [1, 0])          # every row wrong: T -> inf
    with pytest.raises(ValueError, match="^labels:"):
        cal.fit_temperature(np.array([[0.0, -np.inf], [1.0, 0.0]]), [1, 1])
    with pytest.raises(ValueError, match="^weight:"):
        cal.fit_temperature(z, [0, 1], weight=[0.0, 0.0])


def test_energy_score_closed_form():
    rng = np.random.default_rng(10)
    z = rng.standard_normal((4, 3, 5))
    for t in [1.0, 0.5, 3.0]:
        expected = -t * np.log(np.exp(z / t).sum(axis=-1))
        np.testing.assert_allclose(cal.energy_score(z, temperature=t), expected, rtol=1e-14)
        np.testing.assert_allclose(cal.energy_score(z, temperature=t),
                                   ref.energy_score(z, temperature=t), rtol=1e-14)
    big = np.array([[1000.0, 1000.0, -np.inf], [-np.inf, -np.inf, -np.inf]])
    np.testing.assert_allclose(cal.energy_score(big), [-1000.0 - math.log(2.0), np.inf])
    e32 = cal.energy_score(z.astype(np.float32), temperature=2.0)
    assert e32.dtype == np.float32 and e32.shape == (4, 3)
    np.testing.assert_allclose(e32, -2.0 * np.log(np.exp(z / 2.0).sum(axis=-1)), rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# Diagnostics.
# ----------------------------------------------------------------------------------------------

def test_label_dependence_by_hand():
    independent = np.array([[0, 0], [0, 1], [1, 0], [1, 1]] * 3)
    mi = cal.label_dependence(independent)
    np.testing.assert_allclose(mi, np.diag([math.log(2)] * 2), atol=1e-15)
    a = np.array([1, 0, 0, 0, 1, 0, 0, 0])                 # p = 1/4
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))  # 0.5623...
    mi = cal.label_dependence(np.stack([a, a, 1 - a], axis=1).astype(bool))
    np.testing.assert_allclose(mi, np.full((3, 3), h), rtol=1e-14)
    # 2x2 table with joint frequencies .4 .1 / .1 .4 (marginals 1/2):
    t = np.array([[0, 0]] * 4 + [[0, 1]] + [[1, 0]] + [[1, 1]] * 4)
    expected = 2 * 0.4 * math.log(0.4 / 0.25) + 2 * 0.1 * math.log(0.1 / 0.25)
    assert close(cal.label_dependence(t)[0, 1], expected, 1e-14)


def test_label_dependence_is_the_loss_gap_of_independent_heads():
    rng = np.random.default_rng(12)
    a = rng.random(5000) < 0.3
    b = np.where(rng.random(5000) < 0.7, a, rng.random(5000) < 0.5)
    t = np.stack([a, b], axis=1).astype(np.float64)
    # Best input-free models: sigmoid heads at the marginal rates, softmax over the 4 combos
    # at the joint frequencies; their mean cross-entropies on the same data.
    pa, pb = a.mean(), b.mean()
    bce = -(np.where(a, np.log(pa), np.log(1 - pa)) + np.where(b, np.log(pb), np.log(1 - pb)))
    combo = 2 * a + b
    freq = np.bincount(combo, minlength=4) / len(combo)
    joint = -np.log(freq[combo])
    gap = bce.mean() - joint.mean()
    assert gap > 0.05
    assert close(cal.label_dependence(t)[0, 1], gap, 1e-12)
    np.testing.assert_allclose(cal.label_dependence(t), ref.label_dependence(t), rtol=1e-12,
                               atol=1e-15)


def test_label_dependence_matches_reference():
    rng = np.random.default_rng(13)
    t = (rng.random((300, 5)) < [0.1, 0.5, 0.9, 0.02, 0.5]).astype(np.int8)
    t[:, 4] = t[:, 1] ^ (rng.random(300) < 0.1)
    t[:, 3] = 0  # a constant column: zero entropy, zero information
    got = cal.label_dependence(t)
    np.testing.assert_allclose(got, ref.label_dependence(t), rtol=1e-12, atol=1e-15)
    assert got[3].max() == 0 and got[1, 4] > 0.3


@pytest.mark.parametrize("k", [0, 2, 6])
def test_loss_breakdown_matches_reference(k):
    rng = np.random.default_rng(14)
    shape = (500,) if k == 0 else (500, k)
    z = rng.standard_normal(shape) * 4.0
    y = rng.integers(0, max(k, 2), size=500)
    if k == 6:
        y[y == 5] = 4  # an absent class
    for threshold in [0.01, 0.2]:
        got = cal.loss_breakdown(z, y, threshold=threshold)
        exp = ref.loss_breakdown(z, y, threshold=threshold)
        for key, value in exp.items():
            np.testing.assert_allclose(getattr(got, key), value, rtol=1e-12, atol=1e-15,
                                       err_msg=key)
        assert close(got.mean_loss, float(xr.cross_entropy(
            z if k else np.stack([np.zeros_like(z), z], axis=1), y)), 1e-12)
        assert close(float(np.nansum(got.class_loss_share)), 1.0, 1e-12)
    assert got.confident_wrong_count > 0


def test_loss_breakdown_by_hand():
    z = np.array([[4.0, 0.0], [3.0, 0.0], [0.0, 6.0], [0.0, 1.0]])
    b = cal.loss_breakdown(z, np.array([0, 0, 0, 1]))
    losses = np.log1p(np.exp(-np.array([4.0, 3.0, -6.0, 1.0])))
    np.testing.assert_allclose(b.class_loss, [losses[:3].mean(), losses[3]], rtol=1e-14)
    np.testing.assert_array_equal(b.class_count, [3, 1])
    np.testing.assert_allclose(b.class_accuracy, [2 / 3, 1.0])
    assert b.confident_wrong_count == 1
    assert close(b.confident_wrong_share, losses[2] / losses.sum(), 1e-14)
    assert close(b.accuracy, 0.75, 1e-15)


# ----------------------------------------------------------------------------------------------
# Plotting, doctests.
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("convention", CONVENTIONS)
def test_plot_writes_png(tmp_path, convention):
    pytest.importorskip("matplotlib")
    scores, labels, _ = make_problem(15, 2000, 10, from_logits=True, coarse=False)
    d = cal.reliability_diagram(scores * 2, labels, n_bins=10, convention=convention,
                                from_logits=True)
    path = tmp_path / "reliability.png"
    fig, (ax_rel, ax_hist) = d.plot(path=path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert ax_hist is not None and fig is ax_rel.figure
    assert len(ax_rel.patches) == 2 * int((d.counts > 0).sum())  # accuracy and gap bars
    from matplotlib.figure import Figure
    ax = Figure().subplots()
    binary = cal.reliability_diagram(scores[:, 0], labels > 4, n_bins=5, from_logits=True)
    _, (ax_only, none) = binary.plot(ax=ax)
    assert ax_only is ax and none is None and ax_only.get_ylabel() == "Fraction of positives"
    import matplotlib.pyplot as plt
    plt.close(fig)  # plot() without ax draws on a pyplot figure


def test_doctests():
    attempted = 0
    for module in (cal, cal._metrics, cal._results, cal._temperature, cal._accumulator,
                   cal._diagnostics):
        result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.failed == 0, module.__name__
        attempted += result.attempted
    assert attempted > 20


# ----------------------------------------------------------------------------------------------
# Bad input: the right exception, naming the argument.
# ----------------------------------------------------------------------------------------------

P2 = np.array([[0.7, 0.3], [0.2, 0.8]])
Y2 = np.array([0, 1])

BAD = [
    (lambda: cal.calibration_error(np.array([[1, 0], [0, 1]]), Y2), TypeError, "probs"),
    (lambda: cal.calibration_error(np.zeros((2, 2, 2)), Y2), ValueError, "probs"),
    (lambda: cal.calibration_error(np.zeros((2, 1)), Y2), ValueError, "probs"),
    (lambda: cal.calibration_error(np.zeros((0, 2)), np.zeros(0, int)), ValueError, "probs"),
    (lambda: cal.calibration_error(np.array([[np.nan, 0.5], [0.5, 0.5]]), Y2), ValueError,
     "probs"),
    (lambda: cal.calibration_error(np.array([[1.5, 0.5], [0.5, 0.5]]), Y2), ValueError,
     "probs"),
    (lambda: cal.calibration_error(np.array([-0.1, 0.5]), Y2), ValueError, "probs"),
    (lambda: cal.calibration_error(np.array([[np.inf, 0], [0, 1]]), Y2, from_logits=True),
     ValueError, "probs"),
    (lambda: cal.calibration_error(np.array([[-np.inf, -np.inf], [0, 1]]), Y2,
                                   from_logits=True), ValueError, "probs"),
    (lambda: cal.calibration_error(np.array([np.nan, 0.0]), Y2, from_logits=True), ValueError,
     "probs"),
    (lambda: cal.calibration_error(P2, np.array([0, 2])), ValueError, "labels"),
    (lambda: cal.calibration_error(P2, np.array([-1, 0])), ValueError, "labels"),
    (lambda: cal.calibration_error(np.array([0.2, 0.9]), np.array([0, 2])), ValueError,
     "labels"),
    (lambda: cal.calibration_error(P2, np.array([0, 1, 1])), ValueError, "labels"),
    (lambda: cal.calibration_error(P2, np.array([0.5, 1.0])), ValueError, "labels"),
    (lambda: cal.calibration_error(P2, np.array(["a", "b"])), TypeError, "labels"),
    (lambda: cal.calibration_error(P2, Y2, n_bins=0), ValueError, "n_bins"),
    (lambda: cal.calibration_error(P2, Y2, n_bins=2.5), TypeError, "n_bins"),
    (lambda: cal.calibration_error(P2, Y2, n_bins=True), TypeError, "n_bins"),
    (lambda: cal.calibration_error(P2, Y2, norm="l3"), ValueError, "norm"),
    (lambda: cal.calibration_error(P2, Y2, strategy="kmeans"), ValueError, "strategy"),
    (lambda: cal.calibration_error(P2, Y2, convention="left"), ValueError, "convention"),
    (lambda: cal.calibration_error(P2, Y2, from_logits="yes"), TypeError, "from_logits"),
    (lambda: cal.calibration_error(P2, Y2, sample_weight=[1.0, -1.0]), ValueError,
     "sample_weight"),
    (lambda: cal.calibration_error(P2, Y2, sample_weight=[1.0, np.nan]), ValueError,
     "sample_weight"),
    (lambda: cal.calibration_error(P2, Y2, sample_weight=[1.0]), ValueError, "sample_weight"),
    (lambda: cal.calibration_error(P2, Y2, sample_weight=[0.0, 0.0]), ValueError,
     "sample_weight"),
    (lambda: cal.reliability_diagram(P2, Y2, n_bins=-3), ValueError, "n_bins"),
    (lambda: cal.reliability_diagram(P2, Y2).calibration_error("l0"), ValueError, "norm"),
    (lambda: cal.brier_score(np.array([[0.5, 0.5]]), [3]), ValueError, "labels"),
    (lambda: cal.brier_score(np.zeros(0), []), ValueError, "probs"),
    (lambda: cal.brier_decomposition(P2, Y2, strategy="equal"), ValueError, "strategy"),
    (lambda: cal.fit_temperature(np.array([[1, 0]]), [0]), TypeError, "logits"),
    (lambda: cal.fit_temperature(P2, Y2, weight=[1.0]), ValueError, "weight"),
    (lambda: cal.fit_temperature(P2, Y2, weight=[1.0, -1.0]), ValueError, "weight"),
    (lambda: cal.energy_score(P2, temperature=0.0), ValueError, "temperature"),
    (lambda: cal.energy_score(P2, temperature=np.inf), ValueError, "temperature"),
    (lambda: cal.energy_score(P2, temperature="1"), TypeError, "temperature"),
    (lambda: cal.energy_score(np.array([[1, 2]])), TypeError, "logits"),
    (lambda: cal.energy_score(np.zeros((2, 0))), ValueError, "logits"),
    (lambda: cal.loss_breakdown(P2, Y2, threshold=0.0), ValueError, "threshold"),
    (lambda: cal.loss_breakdown(P2, Y2, threshold=1.5), ValueError, "threshold"),
    (lambda: cal.loss_breakdown(P2, Y2, threshold=None), TypeError, "threshold"),
    (lambda: cal.loss_breakdown(np.array([[0.0, -np.inf]]), [1]), ValueError, "labels"),
    (lambda: cal.label_dependence(np.array([[0, 2]])), ValueError, "targets"),
    (lambda: cal.label_dependence(np.array([0, 1])), ValueError, "targets"),
    (lambda: cal.label_dependence(np.zeros((0, 3))), ValueError, "targets"),
    (lambda: cal.label_dependence(np.array([["a", "b"]])), TypeError, "targets"),
    (lambda: cal.CalibrationAccumulator(n_bins=0), ValueError, "n_bins"),
    (lambda: cal.CalibrationAccumulator(convention="sklearn"), ValueError, "convention"),
    (lambda: cal.CalibrationAccumulator().update(P2, Y2).update(np.array([0.5]), [1]),
     ValueError, "probs_or_logits"),
    (lambda: cal.CalibrationAccumulator().update(P2, np.array([0, 5])), ValueError, "labels"),
    (lambda: cal.CalibrationAccumulator().update(P2 * 3, Y2), ValueError, "probs_or_logits"),
    (lambda: cal.CalibrationAccumulator().merge(cal.CalibrationAccumulator(n_bins=10)),
     ValueError, "other"),
    (lambda: cal.CalibrationAccumulator().merge(
        cal.CalibrationAccumulator().update(np.array([0.5]), [1])).merge(
        cal.CalibrationAccumulator().update(P2, Y2)), ValueError, "other"),
    (lambda: cal.CalibrationAccumulator().merge({}), TypeError, "other"),
    (lambda: cal.CalibrationAccumulator().result(), ValueError, "CalibrationAccumulator"),
    (lambda: cal.CalibrationAccumulator().update(P2, Y2, [0.0, 0.0]).result(), ValueError,
     "CalibrationAccumulator"),
]


@pytest.mark.parametrize("call, exc, name", BAD, ids=[f"{i}-{b[2]}" for i, b in enumerate(BAD)])
def test_bad_input_raises_naming_the_argument(call, exc, name):
    with pytest.raises(exc, match=f"^{name}:"):
        call()


def test_bad_plot_axes():
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure
    axes = Figure().subplots(3)
    with pytest.raises(ValueError, match="^ax:"):
        cal.reliability_diagram(P2, Y2).plot(ax=list(axes))


def test_empty_chunks_and_read_only_results():
    acc = cal.CalibrationAccumulator(from_logits=True)
    acc.update(np.zeros((0, 3)), np.zeros(0, dtype=int))
    assert acc.count == 0
    acc.update(np.array([[2.0, 0.0, 0.0]]), [0])
    r = acc.result()
    assert r.count == 1 and r.accuracy == 1.0
    with pytest.raises(ValueError):
        r.diagram.counts[0] = 5.0  # result arrays are read-only
    with pytest.raises(ValueError, match="^probs_or_logits:"):
        acc.update(np.zeros((0, 4)), np.zeros(0, dtype=int))  # K must stay 3
