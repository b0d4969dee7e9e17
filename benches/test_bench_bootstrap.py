"""Bootstrap intervals (issue 15): 1,000 resamples of ECE on 1,000,000 x 100 float32 logits
against one ``calibration_error`` call on the same logits. Target: at most 5x.

Run: ``.venv/bin/python -m pytest benches/test_bench_bootstrap.py -q -s``; the shape and the
number of resamples come from ``XENT_RS_BENCH_BOOTSTRAP_ROWS`` / ``_CLASSES`` / ``_RESAMPLES``
(defaults 1,000,000, 100, 1,000; CI runs a small shape). The summary line prints the ratio of
the two medians, both measured in this run. A NumPy baseline (``np.random.poisson`` weights
and ``np.bincount`` per resample over the same per-sample statistics, the usual recipe) is
timed on ``XENT_RS_BENCH_BOOTSTRAP_NUMPY_RESAMPLES`` resamples (default 20) and scaled.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from xent_rs import calibration as cal

ROWS = int(os.environ.get("XENT_RS_BENCH_BOOTSTRAP_ROWS", 1_000_000))
CLASSES = int(os.environ.get("XENT_RS_BENCH_BOOTSTRAP_CLASSES", 100))
RESAMPLES = int(os.environ.get("XENT_RS_BENCH_BOOTSTRAP_RESAMPLES", 1000))
NUMPY_RESAMPLES = int(os.environ.get("XENT_RS_BENCH_BOOTSTRAP_NUMPY_RESAMPLES", 20))

_MEDIANS: dict = {}


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((ROWS, CLASSES), dtype=np.float32) * 3
    labels = rng.integers(0, CLASSES, ROWS)
    labels[: ROWS // 2] = logits[: ROWS // 2].argmax(axis=1)
    return logits, labels


def numpy_bootstrap_ece(logits, labels, n_resamples, n_bins=15, seed=0):
    """Per-sample confidence, correctness and bin once, then Poisson weights and three
    bincounts per resample."""
    conf, correct = cal._top_label_from_logits(logits, labels)
    idx = np.searchsorted(np.linspace(0, 1, n_bins + 1)[1:-1], conf, side="left")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_resamples):
        w = rng.poisson(1.0, len(conf)).astype(np.float64)
        gap = np.abs(np.bincount(idx, w * correct, n_bins) - np.bincount(idx, w * conf, n_bins))
        values.append(gap.sum() / w.sum())
    return np.percentile(values, [2.5, 97.5])


NUMPY = f"numpy, {NUMPY_RESAMPLES} resamples"


@pytest.mark.parametrize("impl", ["calibration_error", "confidence_interval", NUMPY])
def test_bootstrap_against_one_call(benchmark, problem, impl):
    logits, labels = problem
    benchmark.group = f"bootstrap {ROWS}x{CLASSES}, {RESAMPLES} resamples"
    if impl == "calibration_error":
        fn = lambda: cal.calibration_error(logits, labels, from_logits=True)  # noqa: E731
        rounds = 3
    elif impl == "confidence_interval":
        fn = lambda: cal.confidence_interval("ece", logits, labels,  # noqa: E731
                                             n_resamples=RESAMPLES, from_logits=True)
        rounds = 3
    else:
        fn = lambda: numpy_bootstrap_ece(logits, labels, NUMPY_RESAMPLES)  # noqa: E731
        rounds = 1
    got = benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)
    _MEDIANS[impl] = benchmark.stats.stats.median
    if impl == "confidence_interval":
        est, low, high = got
        assert est == cal.calibration_error(logits, labels, from_logits=True)
        assert low <= high
        if "calibration_error" in _MEDIANS:
            ratio = _MEDIANS[impl] / _MEDIANS["calibration_error"]
            print(f"\nconfidence_interval({RESAMPLES} resamples) / calibration_error: "
                  f"{ratio:.2f}x (target <= 5x)")
    if impl == NUMPY and "calibration_error" in _MEDIANS:
        scaled = _MEDIANS[impl] * RESAMPLES / NUMPY_RESAMPLES
        print(f"\nNumPy recipe, scaled to {RESAMPLES} resamples: {scaled:.2f} s = "
              f"{scaled / _MEDIANS['calibration_error']:.1f}x calibration_error")
