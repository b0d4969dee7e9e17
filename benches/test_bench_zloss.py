"""``cross_entropy`` with gradient, float32: plain against ``z_loss=1e-4``, ``softcap=30`` and
both, and the straightforward NumPy formulation of both, in the same run (target: each
variant within 1.3x of plain).

Run: ``.venv/bin/python -m pytest benches/test_bench_zloss.py -q``. Shapes come from
``XENT_RS_BENCH_ZLOSS_SHAPES`` (default ``100000x1000,8192x32000``; CI sets small ones); the
thread count from the first entry of ``XENT_BENCH_THREADS`` (default 1). The summary prints
NumPy's median time over each implementation's; the ratio of a variant to plain is
``plain ratio / variant ratio``, both measured in this run.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import xent_rs as xr

SHAPES = [tuple(int(v) for v in s.split("x")) for s in
          os.environ.get("XENT_RS_BENCH_ZLOSS_SHAPES", "100000x1000,8192x32000").split(",")
          if s.strip()]
THREADS = int(os.environ.get("XENT_BENCH_THREADS", "1").split(",")[0])
Z, CAP = 1e-4, 30.0
VARIANTS = {"plain": {}, "z_loss": dict(z_loss=Z), "softcap": dict(softcap=CAP),
            "both": dict(z_loss=Z, softcap=CAP)}


def numpy_zloss_softcap(x, t, z, c):
    """Loss and gradient of the mean of ``CE(c·tanh(x/c)) + z·lse²``, written plainly."""
    n = x.shape[0]
    th = np.tanh(x / c)
    y = c * th
    m = y.max(axis=1, keepdims=True)
    e = np.exp(y - m)
    s = e.sum(axis=1, keepdims=True)
    lse = m + np.log(s)
    rows = np.arange(n)
    loss = np.mean(lse[:, 0] - y[rows, t] + z * lse[:, 0] ** 2)
    g = e / s * (1 + 2 * z * lse)
    g[rows, t] -= 1
    g *= (1 - th * th) / n
    return loss, g


@pytest.fixture(scope="module", params=SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def problem(request):
    n, k = request.param
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, k), dtype=np.float32) * 4
    t = rng.integers(0, k, n)
    out = np.empty_like(x)
    out.fill(0)  # fault the pages in once, outside the timings
    return x, t, out


@pytest.fixture
def one_thread_count():
    saved = xr.get_num_threads()
    xr.set_num_threads(THREADS)
    yield
    xr.set_num_threads(saved)


@pytest.mark.parametrize("impl", list(VARIANTS) + ["numpy"])
def test_zloss_softcap(benchmark, one_thread_count, problem, impl):
    x, t, out = problem
    n, k = x.shape
    benchmark.group = f"cce+z/softcap {n}x{k} loss+grad {THREADS}t"
    if impl == "numpy":
        fn = lambda: numpy_zloss_softcap(x, t, Z, CAP)  # noqa: E731
        expected = xr.cross_entropy(x, t, z_loss=Z, softcap=CAP)
        rounds = 2
    else:
        kw = VARIANTS[impl]
        fn = lambda: xr.cross_entropy(x, t, return_grad=True, out=out, **kw)  # noqa: E731
        expected = xr.cross_entropy(x, t, **kw)
        rounds = 5
    res = benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)
    assert np.isclose(float(res[0]), float(expected), rtol=1e-4)
