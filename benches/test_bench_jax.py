"""``xent_rs.jax`` against optax: ``jax.jit(jax.value_and_grad(loss))`` of the mean
cross-entropy, float32, on the CPU backend.

Run: ``JAX_PLATFORMS=cpu .venv/bin/python -m pytest benches/test_bench_jax.py -q``
(``-k 8192x32000`` picks one shape). Groups:

* ``jax cce <n>x<k> loss+grad``: ``xent_rs.jax-ffi`` (the XLA FFI target the adapter uses
  on the CPU: the extension's handler, which runs this call without the interpreter),
  ``xent_rs.jax-ffi-ctypes`` (the same target with every call sent on to the adapter's
  ctypes handler, as calls with class weights, probabilities or ``vmap`` axes go),
  ``xent_rs.jax-callback`` (the ``jax.pure_callback`` fallback) and ``optax``
  (``softmax_cross_entropy_with_integer_labels`` then ``jnp.mean``, differentiated by JAX);
* ``jax overhead 8x10 loss+grad``: the same on a tiny input, plus ``xent_rs-numpy`` (the
  core called on NumPy arrays): the difference is the adapter's per-call overhead;
* ``jax vmap 64x(256x100) loss+grad``: ``jax.vmap`` over 64 problems that share their
  targets, on both paths, with ``vmap_method="expand_dims"`` (the adapter's) and
  ``"broadcast_all"`` (which tiles the shared targets first).

The ratios the summary prints are to NumPy's time, and there is no NumPy implementation
here: compare the medians (docs/jax.md has the figures of one run).
"""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")

import jax.numpy as jnp  # noqa: E402

import xent_rs as xr  # noqa: E402
import xent_rs.jax as xj  # noqa: E402

SHAPES = [(8_192, 32_000), (100_000, 1_000)]
IMPLS = ["xent_rs.jax-ffi", "xent_rs.jax-ffi-ctypes", "xent_rs.jax-callback", "optax"]


def optax_mean(z, y):
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(z, y))


def step(impl, monkeypatch, vmap_method=None):
    """The jitted loss+grad of ``impl``, traced on the path it names."""
    monkeypatch.setattr(xj, "_FORCE_CALLBACK", impl == "xent_rs.jax-callback")
    monkeypatch.setattr(xj, "_FFI_FAST", impl != "xent_rs.jax-ffi-ctypes")
    if vmap_method is not None:
        monkeypatch.setattr(xj, "_VMAP_METHOD", vmap_method)
    jax.clear_caches()
    return jax.jit(jax.value_and_grad(optax_mean if impl == "optax" else xj.cross_entropy))


def problem(n, k, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, k), dtype=np.float32)
    y = rng.integers(0, k, n).astype(np.int32)
    return z, y


def timed(benchmark, fn, rounds):
    return benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("impl", IMPLS)
def test_loss_and_grad(benchmark, monkeypatch, shape, impl):
    z, y = problem(*shape)
    zj, yj = jnp.asarray(z), jnp.asarray(y)
    benchmark.group = f"jax cce {shape[0]}x{shape[1]} loss+grad"
    f = step(impl, monkeypatch)
    loss, grad = timed(benchmark, lambda: jax.block_until_ready(f(zj, yj)), rounds=3)
    assert np.isclose(float(loss), float(xr.cross_entropy(z, y)), rtol=1e-5)
    assert grad.shape == shape and grad.dtype == jnp.float32


@pytest.mark.parametrize("impl", IMPLS + ["xent_rs-numpy"])
def test_per_call_overhead(benchmark, monkeypatch, impl):
    z, y = problem(8, 10)
    benchmark.group = "jax overhead 8x10 loss+grad"
    if impl == "xent_rs-numpy":
        out = np.empty_like(z)
        fn = lambda: xr.cross_entropy(z, y, return_grad=True, out=out)  # noqa: E731
    else:
        zj, yj = jnp.asarray(z), jnp.asarray(y)
        f = step(impl, monkeypatch)
        fn = lambda: jax.block_until_ready(f(zj, yj))  # noqa: E731
    loss, _ = benchmark.pedantic(fn, rounds=2000, iterations=1, warmup_rounds=20)
    assert np.isclose(float(loss), float(xr.cross_entropy(z, y)), rtol=1e-6)


@pytest.mark.parametrize("vmap_method", ["expand_dims", "broadcast_all"])
@pytest.mark.parametrize("impl", ["xent_rs.jax-ffi", "xent_rs.jax-callback"])
def test_vmap_method(benchmark, monkeypatch, impl, vmap_method):
    rng = np.random.default_rng(1)
    zs = jnp.asarray(rng.standard_normal((64, 256, 100), dtype=np.float32))
    y = jnp.asarray(rng.integers(0, 100, 256).astype(np.int32))
    benchmark.group = "jax vmap 64x(256x100) loss+grad"
    f = step(impl, monkeypatch, vmap_method)
    g = jax.jit(jax.vmap(f, in_axes=(0, None)))
    loss, _ = timed(benchmark, lambda: jax.block_until_ready(g(zs, y)), rounds=50)
    np.testing.assert_allclose(np.asarray(loss), jax.vmap(optax_mean, (0, None))(zs, y),
                               rtol=1e-5)
