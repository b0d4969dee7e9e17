"""Calibration timings: xent_rs's fused passes against what a NumPy user writes today.

Run: ``.venv/bin/python -m pytest benches/test_bench_calibration.py -q``. The summary prints
NumPy's median time divided by each implementation's (higher = faster).
"""

from __future__ import annotations

import numpy as np
import pytest

from xent_rs import calibration as cal

SHAPES = [(1_000_000, 100), (100_000, 1_000)]

try:  # optional peer, timed only when importable
    import torch
    from torchmetrics.functional.classification import multiclass_calibration_error
except ImportError:  # pragma: no cover
    multiclass_calibration_error = None


def numpy_ece(logits, labels, n_bins=15):
    """The usual NumPy recipe: full softmax matrix, max/argmax, uniform bins."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    conf = p.max(axis=1)
    correct = p.argmax(axis=1) == labels
    edges = np.linspace(0, 1, n_bins + 1)
    idx = np.clip(np.searchsorted(edges[1:-1], conf, side="left"), 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    gap = np.abs(np.bincount(idx, correct, n_bins) - np.bincount(idx, conf, n_bins))
    return float(gap.sum() / count.sum())


def numpy_fit_temperature(logits, labels):
    """The usual recipe: scipy's bounded scalar minimiser on a NumPy cross-entropy."""
    from scipy.optimize import minimize_scalar

    rows = np.arange(len(labels))

    def nll(t):
        z = logits / t
        m = z.max(axis=1)
        lse = m + np.log(np.exp(z - m[:, None]).sum(axis=1))
        return float(np.mean(lse - z[rows, labels]))

    return minimize_scalar(nll, bounds=(0.05, 20.0), method="bounded",
                           options={"xatol": 1e-6}).x


@pytest.fixture(scope="module", params=SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def problem(request):
    n, k = request.param
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((n, k), dtype=np.float32) * 3
    labels = rng.integers(0, k, n)
    labels[: n // 2] = logits[: n // 2].argmax(axis=1)  # a half-accurate classifier
    return logits, labels


IMPLS = ["xent_rs", "numpy"] + (["torchmetrics"] if multiclass_calibration_error else [])


@pytest.mark.parametrize("impl", IMPLS)
def test_calibration_error_from_logits(benchmark, problem, impl):
    logits, labels = problem
    benchmark.group = f"ece {logits.shape[0]}x{logits.shape[1]}"
    if impl == "xent_rs":
        fn = lambda: cal.calibration_error(logits, labels, from_logits=True)  # noqa: E731
    elif impl == "numpy":
        fn = lambda: numpy_ece(logits, labels)  # noqa: E731
    else:
        lt, yt = torch.from_numpy(logits), torch.from_numpy(labels)
        fn = lambda: float(multiclass_calibration_error(  # noqa: E731
            lt.softmax(1), yt, num_classes=logits.shape[1], n_bins=15))
    got = benchmark.pedantic(fn, rounds=5 if impl == "xent_rs" else 2, iterations=1,
                             warmup_rounds=1)
    assert abs(got - cal.calibration_error(logits, labels, from_logits=True)) < 1e-4


@pytest.mark.parametrize("impl", ["xent_rs", "numpy"])
def test_fit_temperature(benchmark, problem, impl):
    logits, labels = problem
    benchmark.group = f"fit_temperature {logits.shape[0]}x{logits.shape[1]}"
    fn = {"xent_rs": lambda: cal.fit_temperature(logits, labels),
          "numpy": lambda: numpy_fit_temperature(logits, labels)}[impl]
    got = benchmark.pedantic(fn, rounds=3 if impl == "xent_rs" else 1, iterations=1,
                             warmup_rounds=0)
    assert abs(got / cal.fit_temperature(logits, labels) - 1) < 1e-3
