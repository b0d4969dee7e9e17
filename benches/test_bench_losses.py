"""Loss and loss+gradient timings: xent_rs against NumPy, scikit-learn's loss module and
PyTorch CPU (the last two only when importable).

Run: ``.venv/bin/python -m pytest benches -q`` (see the README); ``-k 1000000x10`` picks one
shape. Each group is one shape and one operation; the summary prints NumPy's time divided by
each implementation's. ``benches/speed_table.py`` prints the issue-3 table (ratios to the
best baseline and to the memory floor) in one run.

Implementations, each at 1 and 2 threads (``XENT_BENCH_THREADS=1,2,4`` changes the list):

* ``xent_rs-<n>t``: gradient into a reused ``out=`` buffer; ``xent_rs-<n>t-fresh``: a freshly
  allocated gradient (loss+grad only, page faults included);
* ``numpy`` (single-threaded, timed once);
* ``sklearn-<n>t``: ``HalfMultinomialLoss(n_classes=K)`` / ``HalfBinomialLoss`` ``loss`` or
  ``loss_gradient`` with preallocated outputs and ``n_threads=n`` (their per-sample losses
  average to the same loss as xent_rs's);
* ``torch-<n>t``: forward (+ backward) after ``torch.set_num_threads(n)``.

Rounds are fewer at large shapes and for the slow baselines, so that a full run stays within
a few minutes per shape on a small machine.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import xent_rs as xr
from baselines import numpy_bce, numpy_cross_entropy, torch, torch_bce, torch_cross_entropy

try:  # optional, never a dependency
    from sklearn._loss.loss import HalfBinomialLoss, HalfMultinomialLoss
except ImportError:  # pragma: no cover
    HalfBinomialLoss = HalfMultinomialLoss = None

CCE_SHAPES = [(1_000_000, 10), (100_000, 1_000), (8_192, 32_000), (2_048, 128_000)]
BCE_SHAPES = [(4_000_000,), (100_000, 100)]
THREADS = [int(n) for n in os.environ.get("XENT_BENCH_THREADS", "1,2").split(",") if n.strip()]

IMPLS = [f"xent_rs-{n}t" for n in THREADS] + [f"xent_rs-{n}t-fresh" for n in THREADS]
IMPLS += ["numpy"]
IMPLS += [f"sklearn-{n}t" for n in THREADS] if HalfMultinomialLoss is not None else []
IMPLS += [f"torch-{n}t" for n in THREADS] if torch is not None else []
# (impl, with_grad); a fresh gradient only exists for loss+grad
CASES = [(impl, g) for g in (False, True) for impl in IMPLS if g or not impl.endswith("fresh")]
CASE_IDS = [f"{impl}-{'loss+grad' if g else 'loss'}" for impl, g in CASES]


def _parse(impl):
    """'xent_rs-2t-fresh' -> ('xent_rs', 2, True); 'numpy' -> ('numpy', None, False)."""
    parts = impl.split("-")
    threads = int(parts[1][:-1]) if len(parts) > 1 else None
    return parts[0], threads, parts[-1] == "fresh"


def _rounds(lib, size):
    """Timed rounds (after one warm-up): fewer for big inputs and slow baselines."""
    if lib == "xent_rs":
        return 10 if size <= 20_000_000 else 5
    return 3 if size <= 20_000_000 else (2 if size <= 150_000_000 else 1)


@pytest.fixture
def threads(request):
    """Sets xent_rs's (and PyTorch's) thread count for one test, then restores it."""
    saved = xr.get_num_threads(), torch.get_num_threads() if torch is not None else None
    yield lambda n: (xr.set_num_threads(n),
                     torch.set_num_threads(n) if torch is not None else None)
    xr.set_num_threads(saved[0])
    if torch is not None:
        torch.set_num_threads(saved[1])


@pytest.fixture(scope="module", params=CCE_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def cce_problem(request):
    n, k = request.param
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, k), dtype=np.float32)
    t = rng.integers(0, k, n)
    out = np.empty_like(x)
    out.fill(0)  # fault the pages in once, outside the timings
    return x, t, out


@pytest.fixture(scope="module", params=BCE_SHAPES, ids=lambda s: "x".join(map(str, s)))
def bce_problem(request):
    rng = np.random.default_rng(0)
    z = rng.standard_normal(request.param, dtype=np.float32)
    y = (rng.random(request.param) < 0.3).astype(np.float32)
    out = np.empty_like(z)
    out.fill(0)
    return z, y, out


def _run(benchmark, fn, loss_of, lib, size, expected):
    res = benchmark.pedantic(fn, rounds=_rounds(lib, size), iterations=1, warmup_rounds=1)
    assert np.isclose(float(loss_of(res)), float(expected), rtol=1e-4)


@pytest.mark.parametrize(("impl", "with_grad"), CASES, ids=CASE_IDS)
def test_cross_entropy(benchmark, threads, cce_problem, impl, with_grad):
    x, t, out = cce_problem
    n, k = x.shape
    lib, nthreads, fresh = _parse(impl)
    benchmark.group = f"cce {n}x{k} {'loss+grad' if with_grad else 'loss'}"
    if nthreads is not None:
        threads(nthreads)
    first = (lambda r: r[0]) if with_grad else (lambda r: r)
    if lib == "xent_rs":
        if not with_grad:
            fn = lambda: xr.cross_entropy(x, t)  # noqa: E731
        elif fresh:
            fn = lambda: xr.cross_entropy(x, t, return_grad=True)  # noqa: E731
        else:
            fn = lambda: xr.cross_entropy(x, t, return_grad=True, out=out)  # noqa: E731
    elif lib == "numpy":
        fn = lambda: numpy_cross_entropy(x, t, with_grad)  # noqa: E731
    elif lib == "sklearn":
        sk = HalfMultinomialLoss(n_classes=k)
        y = t.astype(x.dtype)  # class indices as floats, in the logits' dtype
        lo = np.empty(n, dtype=x.dtype)
        if with_grad:
            fn = lambda: sk.loss_gradient(y_true=y, raw_prediction=x, loss_out=lo,  # noqa: E731
                                          gradient_out=out, n_threads=nthreads)
        else:
            fn = lambda: sk.loss(y_true=y, raw_prediction=x, loss_out=lo,  # noqa: E731
                                 n_threads=nthreads)
        first = lambda r: lo.mean(dtype=np.float64)  # noqa: E731
    else:
        fn = lambda: torch_cross_entropy(x, t, with_grad)  # noqa: E731
    _run(benchmark, fn, first, lib, x.size, xr.cross_entropy(x, t))


@pytest.mark.parametrize(("impl", "with_grad"), CASES, ids=CASE_IDS)
def test_bce(benchmark, threads, bce_problem, impl, with_grad):
    z, y, out = bce_problem
    lib, nthreads, fresh = _parse(impl)
    shape = "x".join(map(str, z.shape))
    benchmark.group = f"bce {shape} {'loss+grad' if with_grad else 'loss'}"
    if nthreads is not None:
        threads(nthreads)
    first = (lambda r: r[0]) if with_grad else (lambda r: r)
    bce = xr.binary_cross_entropy_with_logits
    if lib == "xent_rs":
        if not with_grad:
            fn = lambda: bce(z, y)  # noqa: E731
        elif fresh:
            fn = lambda: bce(z, y, return_grad=True)  # noqa: E731
        else:
            fn = lambda: bce(z, y, return_grad=True, out=out)  # noqa: E731
    elif lib == "numpy":
        fn = lambda: numpy_bce(z, y, with_grad)  # noqa: E731
    elif lib == "sklearn":
        sk = HalfBinomialLoss()
        zf, yf, gf = z.reshape(-1), y.reshape(-1), out.reshape(-1)  # 1-D arrays only
        lo = np.empty_like(zf)
        if with_grad:
            fn = lambda: sk.loss_gradient(y_true=yf, raw_prediction=zf, loss_out=lo,  # noqa: E731
                                          gradient_out=gf, n_threads=nthreads)
        else:
            fn = lambda: sk.loss(y_true=yf, raw_prediction=zf, loss_out=lo,  # noqa: E731
                                 n_threads=nthreads)
        first = lambda r: lo.mean(dtype=np.float64)  # noqa: E731
    else:
        fn = lambda: torch_bce(z, y, with_grad)  # noqa: E731
    _run(benchmark, fn, first, lib, z.size, bce(z, y))
