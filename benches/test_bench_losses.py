"""Loss and loss+gradient timings: xent_rs against NumPy (and PyTorch CPU if importable).

Run: ``.venv/bin/python -m pytest benches -q`` (see the README). Each group is one shape and
one operation; the summary prints NumPy's time divided by each implementation's.
"""

from __future__ import annotations

import numpy as np
import pytest

import xent_rs as xr
from baselines import numpy_bce, numpy_cross_entropy, torch, torch_bce, torch_cross_entropy

CCE_SHAPES = [(1_000_000, 10), (100_000, 1_000), (8_192, 32_000), (2_048, 128_000)]
BCE_SHAPES = [(4_000_000,), (100_000, 100)]
IMPLS = ["xent_rs", "numpy"] + (["torch"] if torch is not None else [])


def _xent_cce(x, t, with_grad, out):
    if with_grad:
        return xr.cross_entropy(x, t, return_grad=True, out=out)
    return xr.cross_entropy(x, t)


def _xent_bce(z, y, with_grad, out):
    if with_grad:
        return xr.binary_cross_entropy_with_logits(z, y, return_grad=True, out=out)
    return xr.binary_cross_entropy_with_logits(z, y)


@pytest.fixture(scope="module", params=CCE_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def cce_problem(request):
    n, k = request.param
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, k), dtype=np.float32)
    t = rng.integers(0, k, n)
    return x, t, np.empty_like(x)


@pytest.fixture(scope="module", params=BCE_SHAPES, ids=lambda s: "x".join(map(str, s)))
def bce_problem(request):
    rng = np.random.default_rng(0)
    z = rng.standard_normal(request.param, dtype=np.float32)
    y = (rng.random(request.param) < 0.3).astype(np.float32)
    return z, y, np.empty_like(z)


@pytest.mark.parametrize("with_grad", [False, True], ids=["loss", "loss+grad"])
@pytest.mark.parametrize("impl", IMPLS)
def test_cross_entropy(benchmark, cce_problem, impl, with_grad):
    x, t, out = cce_problem
    benchmark.group = f"cce {x.shape[0]}x{x.shape[1]} {'loss+grad' if with_grad else 'loss'}"
    fn = {"xent_rs": lambda: _xent_cce(x, t, with_grad, out),
          "numpy": lambda: numpy_cross_entropy(x, t, with_grad),
          "torch": lambda: torch_cross_entropy(x, t, with_grad)}[impl]
    rounds = 10 if impl == "xent_rs" else 3
    res = benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)
    loss = res[0] if with_grad else res
    assert np.isclose(float(loss), float(xr.cross_entropy(x, t)), rtol=1e-4)


@pytest.mark.parametrize("with_grad", [False, True], ids=["loss", "loss+grad"])
@pytest.mark.parametrize("impl", IMPLS)
def test_bce(benchmark, bce_problem, impl, with_grad):
    z, y, out = bce_problem
    shape = "x".join(map(str, z.shape))
    benchmark.group = f"bce {shape} {'loss+grad' if with_grad else 'loss'}"
    fn = {"xent_rs": lambda: _xent_bce(z, y, with_grad, out),
          "numpy": lambda: numpy_bce(z, y, with_grad),
          "torch": lambda: torch_bce(z, y, with_grad)}[impl]
    rounds = 10 if impl == "xent_rs" else 3
    res = benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)
    loss = res[0] if with_grad else res
    assert np.isclose(float(loss), float(xr.binary_cross_entropy_with_logits(z, y)), rtol=1e-4)
