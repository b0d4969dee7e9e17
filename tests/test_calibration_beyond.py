"""Calibration beyond ECE (issue 15): the debiased L2 estimator, classwise and smooth
calibration error, bootstrap intervals resampled in the core, vector scaling, and their
accumulator and command-line forms.

Values are checked against the float64 twins in ``xent_rs.reference`` (plain loops, exact
kernels, the bootstrap weights rebuilt from their documented scheme) and against closed forms;
the packages the contract names are checked in ``test_calibration_peers.py``.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

import xent_rs as xr
from xent_rs import calibration as cal
from xent_rs import reference as ref
from xent_rs.calibration import _binning
from xent_rs.calibration._bootstrap import StreamedBootstrap


def logits_data(seed, n=600, k=5, scale=2.0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * scale
    y = (z + rng.gumbel(size=z.shape) * 1.5).argmax(axis=1)
    return z, y


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def binary_data(seed, n=600):
    rng = np.random.default_rng(seed)
    p = rng.uniform(size=n)
    return p, (rng.uniform(size=n) < p ** 1.5).astype(np.int64)


CASES = ["multiclass-probs", "multiclass-logits", "binary-probs", "binary-logits"]


def case(name, seed=0):
    if name.startswith("multiclass"):
        z, y = logits_data(seed)
        return (z, y, True) if name.endswith("logits") else (softmax(z), y, False)
    p, y = binary_data(seed)
    if name.endswith("logits"):
        return np.log(p) - np.log1p(-p), y, True
    return p, y, False


# ------------------------------------------------------------------------- debiased L2 --

@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
@pytest.mark.parametrize("convention", ["right", "torchmetrics"])
def test_debiased_matches_the_reference(name, strategy, convention):
    s, y, from_logits = case(name)
    kw = dict(n_bins=10, strategy=strategy, convention=convention, from_logits=from_logits)
    got = cal.calibration_error(s, y, norm="l2", debias=True, **kw)
    assert got == pytest.approx(ref.debiased_calibration_error(s, y, **kw), rel=1e-12, abs=1e-15)


def test_debiased_with_weights_matches_the_reference_and_unit_weights():
    z, y = logits_data(3)
    w = np.random.default_rng(3).uniform(0.0, 3.0, len(y))
    w[::7] = 0.0
    kw = dict(from_logits=True, n_bins=8)
    got = cal.calibration_error(z, y, norm="l2", debias=True, sample_weight=w, **kw)
    want = ref.debiased_calibration_error(z, y, sample_weight=w, **kw)
    assert got == pytest.approx(want, rel=1e-12)
    plain = cal.calibration_error(z, y, norm="l2", debias=True, **kw)
    assert cal.calibration_error(z, y, norm="l2", debias=True, sample_weight=np.full(len(y), 3.0),
                                 **kw) == pytest.approx(plain, rel=1e-14)


def test_debiased_closed_forms():
    # Bins [0, .5] and (.5, 1]: outcomes all 1, so no variance term:
    # 0.5 * 0.75**2 + 0.5 * 0.25**2 = 0.3125.
    p = np.array([0.25] * 4 + [0.75] * 4)
    assert cal.calibration_error(p, np.ones(8, int), n_bins=2, norm="l2", debias=True) == \
        pytest.approx(math.sqrt(0.3125), rel=1e-15)
    # Gaps 0 and within-bin variance 0.25 * 0.75 / 3: the estimate is negative, clipped to 0.
    y = np.array([0, 0, 1, 0, 1, 1, 1, 0])
    assert cal.calibration_error(p, y, n_bins=2, norm="l2", debias=True) == 0.0
    # A single-sample bin contributes 0; its weight still counts in N.
    p, y = np.array([0.1, 0.9, 0.9]), np.array([1, 1, 1])
    assert cal.calibration_error(p, y, n_bins=2, norm="l2", debias=True) == \
        pytest.approx(math.sqrt(2 / 3 * 0.01), rel=1e-12)


def test_debiasing_removes_the_variance_bias_on_calibrated_data():
    plain, debiased = [], []
    for seed in range(40):
        rng = np.random.default_rng(100 + seed)
        f = rng.uniform(size=2000)
        y = (rng.uniform(size=2000) < f).astype(int)
        plain.append(cal.calibration_error(f, y, norm="l2") ** 2)
        debiased.append(cal.calibration_error(f, y, norm="l2", debias=True) ** 2)
    # The plain square is about sum_b var_b / N = 1.3e-3 here; the debiased one is 0 in
    # expectation before the clip at 0 (about 2e-4 after it).
    assert np.mean(debiased) < 0.4 * np.mean(plain)


@pytest.mark.parametrize("norm", ["l1", "max"])
def test_debias_needs_l2(norm):
    with pytest.raises(ValueError, match="debias"):
        cal.calibration_error(np.array([0.2, 0.8]), np.array([0, 1]), norm=norm, debias=True)
    with pytest.raises(TypeError, match="debias"):
        cal.calibration_error(np.array([0.2, 0.8]), np.array([0, 1]), norm="l2", debias=1)


# --------------------------------------------------------------------------- classwise --

@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
def test_classwise_matches_the_reference(name, norm, strategy):
    s, y, from_logits = case(name, seed=1)
    for convention in ("right", "torchmetrics"):
        kw = dict(n_bins=7, norm=norm, strategy=strategy, convention=convention,
                  from_logits=from_logits)
        got = cal.classwise_calibration_error(s, y, **kw)
        assert got == pytest.approx(ref.classwise_calibration_error(s, y, **kw), rel=1e-12,
                                    abs=1e-15)


def test_classwise_closed_form_and_weights():
    # Class 0: bins {.2, .3} (outcomes 0, 0; gap .25) and {.9, .6} (1, 0; gap .25);
    # class 1: {.1, .4} (0, 1; gap .25) and {.8, .7} (1, 1; gap .25): 0.25 each.
    p = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.3, 0.7]])
    assert cal.classwise_calibration_error(p, [0, 1, 1, 1], n_bins=2) == \
        pytest.approx(0.25, rel=1e-14)
    z, y = logits_data(4)
    w = np.random.default_rng(4).uniform(size=len(y))
    got = cal.classwise_calibration_error(z, y, from_logits=True, sample_weight=w)
    want = ref.classwise_calibration_error(z, y, from_logits=True, sample_weight=w)
    assert got == pytest.approx(want, rel=1e-12)


def test_classwise_beyond_the_fused_slots_takes_the_chunked_path():
    k = _binning.FUSED_MAX_SLOTS // 15 + 10
    rng = np.random.default_rng(5)
    z = rng.normal(size=(40, k)) * 3
    y = rng.integers(0, k, 40)
    got = cal.classwise_calibration_error(z, y, from_logits=True)
    assert got == pytest.approx(ref.classwise_calibration_error(z, y, from_logits=True),
                                rel=1e-11)


# ------------------------------------------------------------------------------ smooth --

@pytest.mark.parametrize("name", CASES)
def test_smooth_matches_the_exact_kernel_reference(name):
    s, y, from_logits = case(name, seed=2)
    s, y = s[:250], y[:250]
    got = cal.smooth_calibration_error(s, y, from_logits=from_logits)
    want = ref.smooth_calibration_error(s, y, from_logits=from_logits, mesh=1001)
    assert got == pytest.approx(want, abs=1e-4)


def test_smooth_closed_form_for_one_confidence():
    # Every confidence 0.7, half the outcomes 1: the residual is 0.2 everywhere the kernel
    # reaches, so the smooth ECE is 0.2 whatever the bandwidth.
    f = np.full(1000, 0.7)
    y = np.arange(1000) % 2
    assert cal.smooth_calibration_error(f, y) == pytest.approx(0.2, abs=1e-12)


def test_smooth_weights_are_repeated_rows():
    p, y = binary_data(6, n=300)
    w = np.arange(300) % 3
    got = cal.smooth_calibration_error(p, y, sample_weight=w)
    want = cal.smooth_calibration_error(np.repeat(p, w), np.repeat(y, w))
    assert got == pytest.approx(want, abs=1e-12)


def test_smooth_is_small_when_calibrated_and_not_when_not():
    rng = np.random.default_rng(7)
    f = rng.uniform(size=50000)
    assert cal.smooth_calibration_error(f, rng.uniform(size=50000) < f) < 0.01
    assert cal.smooth_calibration_error(f, rng.uniform(size=50000) < f ** 3) > 0.2


# --------------------------------------------------------------------------- bootstrap --

BINNED = ("ece", "rms", "mce")


def reference_interval(metric, s, y, n_resamples, seed, confidence=0.95, **kw):
    """The interval from the reference's rebuilt weights and plain metrics."""
    from_logits = kw.get("from_logits", False)
    n = len(y)
    if metric in BINNED:
        p = s if not from_logits else (softmax(s) if s.ndim == 2 else 1 / (1 + np.exp(-s)))
        c = p if p.ndim == 1 else p.max(axis=1)
        edges = _binning.edges(c, kw.get("n_bins", 15), kw.get("strategy", "uniform"))
        bins = _binning.bin_index(c, edges, kw.get("convention", "right"))
    else:
        bins = np.zeros(n, dtype=np.int64)
    weights = ref.poisson_bootstrap_weights(bins, n_resamples, seed)
    values = ref.bootstrap_metric(metric, s, y, weights, **kw)
    tail = 50 * (1 - confidence)
    return np.nanpercentile(values, [tail, 100 - tail])


@pytest.mark.parametrize("metric", ["ece", "rms", "mce", "brier", "nll", "accuracy"])
@pytest.mark.parametrize("name", CASES)
def test_interval_is_the_reference_resampling(metric, name):
    s, y, from_logits = case(name, seed=8)
    s, y = s[:300], y[:300]
    kw = dict(from_logits=from_logits)
    if metric in BINNED:
        kw.update(n_bins=6, strategy="quantile" if "probs" in name else "uniform",
                  convention="torchmetrics" if "binary" in name else "right")
    est, low, high = cal.confidence_interval(metric, s, y, n_resamples=60, seed=9,
                                             confidence=0.9, **kw)
    want = reference_interval(metric, s, y, 60, 9, confidence=0.9, **kw)
    assert (low, high) == pytest.approx(tuple(want), rel=1e-10, abs=1e-13)
    assert low <= high


def test_interval_with_weights_is_the_reference_resampling():
    z, y = logits_data(10, n=400)
    w = np.random.default_rng(10).uniform(0, 2, 400)
    for metric in ("ece", "brier", "nll", "accuracy"):
        _, low, high = cal.confidence_interval(metric, z, y, n_resamples=40, seed=1,
                                               from_logits=True, sample_weight=w)
        want = reference_interval(metric, z, y, 40, 1, from_logits=True, sample_weight=w)
        assert (low, high) == pytest.approx(tuple(want), rel=1e-10, abs=1e-13), metric


@pytest.mark.parametrize("name", CASES)
def test_estimate_is_the_one_shot_metric(name):
    s, y, from_logits = case(name, seed=11)
    kw = dict(from_logits=from_logits)
    for metric, norm in (("ece", "l1"), ("rms", "l2"), ("mce", "max")):
        est = cal.confidence_interval(metric, s, y, n_resamples=5, n_bins=9, **kw)[0]
        assert est == cal.calibration_error(s, y, n_bins=9, norm=norm, **kw)
    assert cal.confidence_interval("brier", s, y, n_resamples=5, **kw)[0] == \
        pytest.approx(cal.brier_score(s, y, **kw), rel=1e-12)
    assert cal.confidence_interval("nll", s, y, n_resamples=5, **kw)[0] == \
        pytest.approx(ref.negative_log_likelihood(s, y, **kw), rel=1e-12)
    acc = cal.CalibrationAccumulator(from_logits=from_logits).update(s, y).result().accuracy
    assert cal.confidence_interval("accuracy", s, y, n_resamples=5, **kw)[0] == \
        pytest.approx(acc, rel=1e-15)


def test_intervals_are_reproducible_on_any_thread_count():
    z, y = logits_data(12, n=20000, k=8)
    before = xr.get_num_threads()
    try:
        runs = []
        for threads in (1, 2, 3):
            xr.set_num_threads(threads)
            runs.append(cal.confidence_interval("ece", z, y, n_resamples=300, seed=5,
                                                from_logits=True))
    finally:
        xr.set_num_threads(before)
    assert runs[0] == runs[1] == runs[2]
    other = cal.confidence_interval("ece", z, y, n_resamples=300, seed=6, from_logits=True)
    assert other[0] == runs[0][0] and other[1:] != runs[0][1:]


def test_intervals_are_the_same_on_the_portable_path():
    """XENT_RS_ISA=scalar forces the portable resampling loop: the same bits as AVX2."""
    code = ("import numpy as np; from xent_rs import calibration as cal; "
            "rng = np.random.default_rng(3); p = rng.uniform(size=5003); "
            "y = rng.uniform(size=5003) < p; "
            "print(repr(cal.confidence_interval('rms', p, y, n_resamples=64, seed=2)))")
    import os
    outs = []
    for isa in ("scalar", "avx512"):
        env = dict(os.environ, XENT_RS_ISA=isa)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env=env, timeout=120)
        assert proc.returncode == 0, proc.stderr
        outs.append(proc.stdout)
    assert outs[0] == outs[1]


def test_float32_logits_are_not_copied_and_give_the_float64_numbers():
    z, y = logits_data(13, n=2000)
    a = cal.confidence_interval("ece", z.astype(np.float32), y, n_resamples=50,
                                from_logits=True)
    b = cal.confidence_interval("ece", z.astype(np.float32).astype(np.float64), y,
                                n_resamples=50, from_logits=True)
    assert a == pytest.approx(b, abs=1e-6)


@pytest.mark.parametrize("metric", ["ece", "brier", "nll", "accuracy"])
def test_interval_coverage_on_known_population_values(metric):
    """Constant forecasts p = 0.9 of outcomes with rate 0.7: the population ECE is 0.2,
    the Brier score 0.7 * 0.01 + 0.3 * 0.81 = 0.25, the NLL -0.7 log .9 - 0.3 log .1 and
    the accuracy (of p > 0.5) 0.7. 200 seeded repetitions of N = 400: the 90% intervals'
    coverage has a standard error of 0.021; the bounds are more than 3 of them away."""
    truth = {"ece": 0.2, "brier": 0.25, "nll": -0.7 * math.log(0.9) - 0.3 * math.log(0.1),
             "accuracy": 0.7}[metric]
    rng = np.random.default_rng(2024)
    hits = 0
    for rep in range(200):
        y = (rng.uniform(size=400) < 0.7).astype(int)
        _, low, high = cal.confidence_interval(metric, np.full(400, 0.9), y, n_resamples=200,
                                               confidence=0.9, seed=rep)
        hits += low <= truth <= high
    assert 0.80 <= hits / 200 <= 0.97


@pytest.mark.parametrize("kwargs, name", [
    (dict(metric="bogus"), "metric"),
    (dict(confidence=0.0), "confidence"),
    (dict(confidence=1.0), "confidence"),
    (dict(confidence=1.5), "confidence"),
    (dict(n_resamples=0), "n_resamples"),
    (dict(seed=-1), "seed"),
    (dict(metric="brier", n_bins=10), "n_bins"),
    (dict(metric="nll", strategy="quantile"), "strategy"),
    (dict(norm="l2"), "norm"),
])
def test_interval_bad_arguments_name_themselves(kwargs, name):
    args = dict(metric="ece")
    args.update(kwargs)
    metric = args.pop("metric")
    with pytest.raises(ValueError, match=name):
        cal.confidence_interval(metric, np.array([0.2, 0.7, 0.9]), np.array([0, 1, 1]), **args)


def test_interval_type_errors():
    with pytest.raises(TypeError, match="n_resamples"):
        cal.confidence_interval("ece", np.array([0.2, 0.7]), np.array([0, 1]), n_resamples=2.5)
    with pytest.raises(TypeError, match="confidence"):
        cal.confidence_interval("ece", np.array([0.2, 0.7]), np.array([0, 1]), confidence="x")
    with pytest.raises(ValueError, match="labels"):
        cal.confidence_interval("ece", np.array([0.2, 0.7]), np.array([0, 2]))


def test_core_bootstrap_refuses_bad_bins_and_lengths():
    from xent_rs import _core
    out = np.zeros(3 * 2)
    with pytest.raises(ValueError, match="bins"):
        _core.bootstrap_sums(np.array([0, 5]), np.zeros(2), np.zeros(2), None, 2, 1, 0, out)
    with pytest.raises(ValueError, match="out"):
        _core.bootstrap_sums(np.array([0, 1]), np.zeros(2), np.zeros(2), None, 2, 2, 0, out)
    with pytest.raises(ValueError, match="a"):
        _core.bootstrap_sums(np.array([0, 1]), np.zeros(3), np.zeros(2), None, 2, 1, 0, out)


# ---------------------------------------------------------------------- vector scaling --

def test_vector_scaling_reaches_a_stationary_point():
    z, y = logits_data(14, n=3000, k=4)
    w, b = cal.fit_vector_scaling(z, y)
    loss, gw, gb = ref.vector_scaling_objective(z, y, w, b)
    assert np.abs(gw).max() < 1e-6 and np.abs(gb).max() < 1e-6
    assert abs(b.mean()) < 1e-12
    base = ref.vector_scaling_objective(z, y, np.ones(4), np.zeros(4))[0]
    assert loss < base


def test_vector_scaling_recovers_known_parameters():
    rng = np.random.default_rng(15)
    true = rng.normal(size=(60000, 3)) * 1.5
    y = (true + rng.gumbel(size=true.shape)).argmax(axis=1)
    scale, shift = np.array([0.5, 2.0, 1.0]), np.array([0.3, -0.6, 0.3])
    z = (true - shift) / scale      # so that z * scale + shift is calibrated
    w, b = cal.fit_vector_scaling(z.astype(np.float32), y)
    assert w == pytest.approx(scale, abs=0.05)
    assert b == pytest.approx(shift - shift.mean(), abs=0.05)


@pytest.mark.parametrize("logits, labels, match", [
    (np.zeros(4), np.zeros(4, int), "logits"),
    (np.zeros((4, 1)), np.zeros(4, int), "logits"),
    (np.array([[0.0, np.inf], [0.0, 1.0]]), np.array([0, 1]), "logits"),
    (np.array([[0.0, -np.inf], [0.0, 1.0]]), np.array([0, 1]), "logits"),
    (np.zeros((0, 3)), np.zeros(0, int), "logits"),
    (np.zeros((2, 3)), np.array([0, 3]), "labels"),
])
def test_vector_scaling_bad_inputs(logits, labels, match):
    with pytest.raises(ValueError, match=match):
        cal.fit_vector_scaling(logits, labels)


def test_vector_scaling_of_separable_rows_stops_where_the_gradient_vanishes():
    z, y = np.array([[2.0, 0.0], [0.0, 2.0]]), np.array([0, 1])
    w, b = cal.fit_vector_scaling(z, y)
    _, gw, gb = ref.vector_scaling_objective(z, y, w, b)
    assert (w > 5).all() and max(np.abs(gw).max(), np.abs(gb).max()) < 1e-6


# ------------------------------------------------------------- accumulator and the CLI --

@pytest.mark.parametrize("name", ["multiclass-logits", "binary-probs"])
@pytest.mark.parametrize("convention", ["right", "torchmetrics"])
def test_accumulator_gains_classwise_and_debiased(name, convention):
    s, y, from_logits = case(name, seed=16)
    acc = cal.CalibrationAccumulator(12, convention=convention, from_logits=from_logits)
    for start in range(0, len(y), 170):
        acc.update(s[start:start + 170], y[start:start + 170])
    r = acc.result()
    kw = dict(n_bins=12, convention=convention, from_logits=from_logits)
    assert r.classwise_ece == pytest.approx(ref.classwise_calibration_error(s, y, **kw),
                                            rel=1e-12)
    assert r.classwise_rms == pytest.approx(
        ref.classwise_calibration_error(s, y, norm="l2", **kw), rel=1e-12)
    assert r.debiased_rms == pytest.approx(ref.debiased_calibration_error(s, y, **kw),
                                           rel=1e-12, abs=1e-15)
    assert {"classwise_ece", "classwise_rms", "debiased_rms"} <= set(r.as_dict())


def _cli(*args):
    proc = subprocess.run([sys.executable, "-m", "xent_rs", "report", *map(str, args)],
                          capture_output=True, text=True, timeout=300)
    return proc


def test_cli_prints_the_new_metrics_and_bootstrap_intervals(tmp_path):
    z, y = logits_data(17, n=3000, k=4)
    np.save(tmp_path / "z.npy", z.astype(np.float32))
    np.save(tmp_path / "y.npy", y)
    proc = _cli(tmp_path / "z.npy", tmp_path / "y.npy", "--logits", "--json", "--bootstrap",
                50, "--chunk-rows", 1000, "--no-progress", "--seed", 3)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    want = cal.CalibrationAccumulator(from_logits=True).update(z.astype(np.float32), y).result()
    for key in ("classwise_ece", "classwise_rms", "debiased_rms"):
        assert got[key] == pytest.approx(getattr(want, key), rel=1e-9)
    boot = StreamedBootstrap(50, 15, "right", 3)
    z32 = z.astype(np.float32)
    for start in range(0, 3000, 1000):
        boot.update(z32[start:start + 1000], y[start:start + 1000], True)
    expected = boot.intervals(0.95)
    assert got["bootstrap"]["n_resamples"] == 50
    for metric, (low, high) in expected.items():
        assert got["bootstrap"]["intervals"][metric] == pytest.approx([low, high], rel=1e-12)
        if metric in ("brier", "nll", "accuracy"):
            assert low <= got[metric] <= high, metric
    table = _cli(tmp_path / "z.npy", tmp_path / "y.npy", "--bootstrap", 20, "--no-progress")
    assert table.returncode == 0, table.stderr
    rows = {line.split()[0]: line.split()[1:] for line in table.stdout.splitlines()[1:]}
    assert len(rows["ece"]) == 3 and len(rows["classwise_ece"]) == 1
    assert _cli(tmp_path / "z.npy", tmp_path / "y.npy", "--bootstrap", 0).returncode == 2


def test_streamed_bootstrap_of_one_chunk_covers_the_one_shot_estimate():
    z, y = logits_data(18, n=4000)
    boot = StreamedBootstrap(200, 15, "right", 0)
    boot.update(z, y, True)
    iv = boot.intervals(0.99)
    for metric in ("brier", "nll", "accuracy"):
        est = cal.confidence_interval(metric, z, y, n_resamples=1, from_logits=True)[0]
        low, high = iv[metric]
        assert low < est < high, metric
