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


# --- streaming (issue 11): the accumulator over a memory-mapped file against one-shot -------

STREAM_ROWS = int(__import__("os").environ.get("XENT_RS_BENCH_STREAM_ROWS", 2_000_000))


@pytest.fixture(scope="module")
def memmapped(tmp_path_factory):
    """(STREAM_ROWS, 100) float32 logits written to a .npy in 100,000-row slabs, opened as a
    memory map; labels in memory; and the same logits as float16 (in memory)."""
    n, k = STREAM_ROWS, 100
    path = tmp_path_factory.mktemp("stream") / "logits.npy"
    m = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, k))
    rng = np.random.default_rng(0)
    labels = rng.integers(0, k, n)
    for i in range(0, n, 100_000):
        m[i:i + 100_000] = rng.standard_normal((min(100_000, n - i), k), dtype=np.float32) * 3
    m.flush()
    del m
    return np.load(path, mmap_mode="r"), labels


def accumulate(logits, labels, rows=65_536):
    acc = cal.CalibrationAccumulator(n_bins=15, from_logits=True)
    for i in range(0, len(labels), rows):
        acc.update(logits[i:i + rows], labels[i:i + rows])
    return acc.result()


@pytest.mark.parametrize("impl", ["one-shot calibration_error", "accumulator", "accumulator f16"])
def test_streaming_calibration(benchmark, memmapped, impl):
    """Targets: the accumulator (every metric) within 1.5x of one-shot ECE; float16 no
    slower than float32 (the ratios are read off the summary's times)."""
    logits, labels = memmapped
    benchmark.group = f"stream {logits.shape[0]}x{logits.shape[1]}"
    if impl == "accumulator f16":
        half = np.empty(logits.shape, np.float16)
        for i in range(0, len(labels), 100_000):
            half[i:i + 100_000] = logits[i:i + 100_000]
        fn = lambda: accumulate(half, labels).ece  # noqa: E731
    elif impl == "accumulator":
        fn = lambda: accumulate(logits, labels).ece  # noqa: E731
    else:
        fn = lambda: cal.calibration_error(logits, labels, from_logits=True)  # noqa: E731
    got = benchmark.pedantic(fn, rounds=3, iterations=1, warmup_rounds=1)
    assert abs(got - cal.calibration_error(logits, labels, from_logits=True)) < 1e-3
