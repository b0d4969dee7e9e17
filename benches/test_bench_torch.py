"""``xent_rs.torch`` timings: loss + backward through the adapter against
``torch.nn.functional.cross_entropy`` at large shapes, and the adapter's per-call overhead on
a tiny input against calling ``xr.cross_entropy`` on NumPy arrays directly.

Run: ``.venv/bin/python -m pytest benches/test_bench_torch.py -q`` (``docs/torch.md`` has
the figures and the exact command). Each group is one shape and one operation; compare the
medians within a group. Implementations:

* ``xent_rs.torch``: ``xt.cross_entropy(x, t)`` on a float32 leaf that requires grad, then
  ``loss.backward()`` (the gradient lands in ``x.grad``);
* ``torch``: the same with ``torch.nn.functional.cross_entropy``;
* ``xent_rs.torch-uncached``: the same with the adapter's gradient cache off (every
  gradient fresh memory, as before the cache; in the large groups only);
* ``xent_rs-numpy``: ``xr.cross_entropy(x, t, return_grad=True)`` on the tensors' NumPy
  views (what the adapter costs on top of the core);
* in the ``loss`` groups, the same calls without a gradient (nothing requires grad).

Both libraries use their default thread counts (the usable cores).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

import xent_rs as xr  # noqa: E402
import xent_rs.torch as xt  # noqa: E402

LARGE = [(8_192, 32_000), (100_000, 1_000)]
SMALL = (4, 10)
IMPLS = ["torch", "xent_rs.torch", "xent_rs-numpy"]


def _problem(n, k):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, k, generator=g), torch.randint(0, k, (n,), generator=g)


def _loss_backward(impl, x, t):
    """A callable doing one loss + backward with ``impl`` (gradient into ``x.grad``, cleared
    first, so every round allocates it as a training step does)."""
    if impl == "xent_rs-numpy":
        xn, tn = x.detach().numpy(), t.numpy()
        return lambda: xr.cross_entropy(xn, tn, return_grad=True)[0]
    fn = xt.cross_entropy if impl == "xent_rs.torch" else F.cross_entropy

    def step():
        x.grad = None
        loss = fn(x, t)
        loss.backward()
        return loss
    return step


def _loss_only(impl, x, t):
    x = x.detach()
    if impl == "xent_rs-numpy":
        xn, tn = x.numpy(), t.numpy()
        return lambda: xr.cross_entropy(xn, tn)
    fn = xt.cross_entropy if impl == "xent_rs.torch" else F.cross_entropy
    return lambda: fn(x, t)


def _check(result, x, t):
    expected = xr.cross_entropy(x.detach().numpy(), t.numpy())
    value = result.item() if isinstance(result, torch.Tensor) else float(result)
    assert np.isclose(value, float(expected), rtol=1e-4)


@pytest.mark.parametrize("shape", LARGE, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("impl", IMPLS[:2] + ["xent_rs.torch-uncached"])
def test_loss_backward_large(benchmark, monkeypatch, impl, shape):
    if impl == "xent_rs.torch-uncached":
        monkeypatch.setattr(xt._GRADIENTS, "take", lambda shape, dtype: None)
        impl = "xent_rs.torch"
    x, t = _problem(*shape)
    x.requires_grad_()
    benchmark.group = f"torch cce {shape[0]}x{shape[1]} loss+backward"
    fn = _loss_backward(impl, x, t)
    result = benchmark.pedantic(fn, rounds=3, iterations=1, warmup_rounds=1)
    _check(result, x, t)
    ref = x.detach().clone().requires_grad_()
    F.cross_entropy(ref, t).backward()
    torch.testing.assert_close(x.grad, ref.grad, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("impl", IMPLS)
def test_per_call_overhead_loss_backward(benchmark, impl):
    x, t = _problem(*SMALL)
    x.requires_grad_()
    benchmark.group = f"torch cce {SMALL[0]}x{SMALL[1]} loss+backward (per call)"
    _check(benchmark(_loss_backward(impl, x, t)), x, t)


@pytest.mark.parametrize("impl", IMPLS)
def test_per_call_overhead_loss(benchmark, impl):
    x, t = _problem(*SMALL)
    benchmark.group = f"torch cce {SMALL[0]}x{SMALL[1]} loss, no grad (per call)"
    _check(benchmark(_loss_only(impl, x, t)), x, t)
