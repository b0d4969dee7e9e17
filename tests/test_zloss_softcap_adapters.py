"""``z_loss=`` and ``softcap=`` on ``xent_rs.torch`` and ``xent_rs.jax`` against the same
composition written in the framework itself (``F.cross_entropy(c·tanh(x/c), y) +
z·mean(lse²)`` and its optax twin), values and gradients; the operators under ``opcheck`` and
``torch.compile(fullgraph=True)``; both JAX host paths. Each half skips without its
framework."""

from __future__ import annotations

import math
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

VARIANTS = [dict(z_loss=1e-2), dict(softcap=3.0), dict(z_loss=0.2, softcap=2.0)]
IDS = ["z", "cap", "both"]


# ---------------------------------------------------------------------------------- torch --

def _torch():
    return pytest.importorskip("torch")


def torch_composed(x, t, *, weight=None, ignore_index=-100, reduction="mean",
                   label_smoothing=0.0, z_loss=0.0, softcap=None):
    """The framework-only formulation, class axis 1 (as torch.nn.functional)."""
    torch = _torch()
    import torch.nn.functional as F
    if softcap is not None:
        x = softcap * torch.tanh(x / softcap)
    loss = F.cross_entropy(x, t, weight, ignore_index=ignore_index, reduction=reduction,
                           label_smoothing=label_smoothing)
    lse = torch.logsumexp(x, dim=1 if x.dim() > 1 else 0)
    kept = (torch.ones_like(lse, dtype=torch.bool) if t.shape == x.shape
            else t != ignore_index)
    zrow = torch.where(kept, z_loss * lse**2, torch.zeros_like(lse))
    if reduction == "none":
        return loss + zrow
    if reduction == "sum":
        return loss + zrow.sum()
    return loss + zrow.sum() / kept.sum()


def torch_problem(shape, kind, dtype=None, seed=0):
    torch = _torch()
    dtype = dtype or torch.float64
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 3).to(dtype)
    c = shape[1] if len(shape) > 1 else shape[0]
    index_shape = shape[:1] + shape[2:] if len(shape) > 1 else ()
    if kind == "index":
        t = torch.randint(0, c, index_shape, generator=g)
        if t.dim():
            t.view(-1)[::3] = -100
    else:
        t = torch.rand(shape, generator=g, dtype=torch.float64).softmax(dim=1 if len(shape) > 1
                                                                        else 0).to(dtype)
    return x, t


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(7,), (6, 5), (3, 4, 2)])
@pytest.mark.parametrize("kind", ["index", "probs"])
def test_torch_values_and_gradients(variant, reduction, shape, kind):
    torch = _torch()
    import xent_rs.torch as xt
    x, t = torch_problem(shape, kind)
    if kind == "index" and len(shape) == 1:
        t = torch.tensor(2)
    w = torch.rand(shape[1] if len(shape) > 1 else shape[0], dtype=torch.float64) + 0.2
    kw = dict(weight=w, reduction=reduction, label_smoothing=0.1, **variant)
    ours_x, theirs_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours = xt.cross_entropy(ours_x, t, **kw)
    theirs = torch_composed(theirs_x, t, **kw)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)
    up = torch.rand(ours.shape, dtype=torch.float64) + 0.5  # an upstream gradient, not 1
    (ours * up).sum().backward()
    (theirs * up).sum().backward()
    torch.testing.assert_close(ours_x.grad, theirs_x.grad, rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize("dtype_name", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
def test_torch_dtypes(dtype_name, variant):
    torch = _torch()
    import xent_rs.torch as xt
    dtype = getattr(torch, dtype_name)
    x, t = torch_problem((8, 6), "index", dtype)
    ours_x = x.clone().requires_grad_()
    loss = xt.cross_entropy(ours_x, t, **variant)
    loss.backward()
    assert loss.dtype == dtype and ours_x.grad.dtype == dtype
    ref_x = x.double().requires_grad_()
    ref = torch_composed(ref_x, t, **variant)
    ref.backward()
    tol = {"float32": 2e-6, "float16": 2e-3, "bfloat16": 1.6e-2}[dtype_name]
    torch.testing.assert_close(loss.double(), ref, rtol=tol, atol=tol)
    torch.testing.assert_close(ours_x.grad.double(), ref_x.grad, rtol=tol,
                               atol=tol * ref_x.grad.abs().max().item())


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
def test_torch_module(variant):
    torch = _torch()
    import xent_rs.torch as xt
    x, t = torch_problem((6, 5), "index")
    fn = xt.CrossEntropyLoss(reduction="sum", **variant)
    assert fn.z_loss == variant.get("z_loss", 0.0) and fn.softcap == variant.get("softcap")
    assert isinstance(fn, torch.nn.CrossEntropyLoss)
    torch.testing.assert_close(fn(x, t), torch_composed(x, t, reduction="sum", **variant),
                               rtol=1e-12, atol=1e-14)


def test_torch_gradcheck():
    torch = _torch()
    import xent_rs.torch as xt
    x, t = torch_problem((4, 5), "index")
    x.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda v: xt.cross_entropy(v, t, z_loss=0.1, softcap=2.5, label_smoothing=0.05), (x,))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_torch_opcheck(reduction):
    torch = _torch()
    import xent_rs.torch  # noqa: F401  (registers the operators)
    x, t = torch_problem((5, 4), "index")
    w = torch.rand(4, dtype=torch.float64) + 0.1
    ce = torch.ops.xent_rs.cross_entropy.default
    for args in [(x.clone().requires_grad_(), t, w, -100, reduction, 0.1, True, 0.05, 3.0),
                 (x.float().requires_grad_(), t, None, -100, reduction, 0.0, True, 0.0, 1.5),
                 (x, t, None, -100, reduction, 0.0, False, 0.3, None)]:
        result = torch.library.opcheck(ce, args)
        assert set(result.values()) == {"SUCCESS"}, result


def test_torch_compile_fullgraph_matches_eager():
    torch = _torch()
    import xent_rs.torch as xt
    torch._dynamo.reset()
    x, t = torch_problem((6, 5), "index")

    def step(v):
        return xt.cross_entropy(v, t, z_loss=1e-2, softcap=4.0) * 3.0

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    grads = []
    for fn in (compiled, step):
        xi = x.clone().requires_grad_()
        out = fn(xi)
        out.backward()
        grads.append((out.detach(), xi.grad))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_torch_fallback_composes_in_torch():
    """A call the kernels do not take (a probability target that requires grad) goes to the
    torch composition, with the same value."""
    torch = _torch()
    import xent_rs.torch as xt
    x, p = torch_problem((6, 5), "probs")
    pg = p.clone().requires_grad_()
    got = xt.cross_entropy(x, pg, z_loss=0.1, softcap=2.0)
    got.backward()
    assert pg.grad is not None
    torch.testing.assert_close(got, xt.cross_entropy(x, p, z_loss=0.1, softcap=2.0),
                               rtol=1e-12, atol=1e-14)
    assert torch.isfinite(got)


@pytest.mark.parametrize("name,value", [("z_loss", -1.0), ("z_loss", math.nan),
                                        ("softcap", 0.0), ("softcap", math.inf)])
def test_torch_bad_values(name, value):
    torch = _torch()
    import xent_rs.torch as xt
    x, t = torch_problem((3, 4), "index")
    with pytest.raises(ValueError, match=f"^{name}"):
        xt.cross_entropy(x, t, **{name: value})
    with pytest.raises(ValueError, match=f"^{name}"):
        xt.CrossEntropyLoss(**{name: value})


# ------------------------------------------------------------------------------------ jax --

def _jax():
    jax = pytest.importorskip("jax")
    pytest.importorskip("optax")
    return jax


@pytest.fixture(params=["ffi", "pure_callback"])
def host_path(request, monkeypatch):
    _jax()
    import jax
    import xent_rs.jax as xj
    if request.param == "ffi" and xj._FFI_TARGET is None:
        pytest.skip("this jaxlib refused the FFI target")
    monkeypatch.setattr(xj, "_FORCE_CALLBACK", request.param == "pure_callback")
    jax.clear_caches()
    yield request.param
    jax.clear_caches()


def jax_composed(x, t, *, reduction="mean", z_loss=0.0, softcap=None, ignore_index=-100):
    import jax.numpy as jnp
    import optax
    if softcap is not None:
        x = softcap * jnp.tanh(x / softcap)
    kept = t != ignore_index
    ce = optax.softmax_cross_entropy_with_integer_labels(x, jnp.where(kept, t, 0))
    lse = jax_logsumexp(x)
    rows = jnp.where(kept, ce + z_loss * lse**2, 0.0)
    if reduction == "none":
        return rows
    if reduction == "sum":
        return rows.sum()
    return rows.sum() / kept.sum()


def jax_logsumexp(x):
    import jax
    return jax.nn.logsumexp(x, axis=-1)


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_jax_values_and_gradients(host_path, variant, reduction):
    jax = _jax()
    import jax.numpy as jnp
    import xent_rs.jax as xj
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((7, 5)) * 3, dtype=jnp.float32)
    t = rng.integers(0, 5, 7)
    t[::3] = -100
    t = jnp.asarray(t, dtype=jnp.int32)

    def ours(v):
        return jnp.sum(xj.cross_entropy(v, t, reduction=reduction, **variant))

    def theirs(v):
        return jnp.sum(jax_composed(v, t, reduction=reduction, **variant))

    lo, go = jax.jit(jax.value_and_grad(ours))(x)
    lt, gt = jax.jit(jax.value_and_grad(theirs))(x)
    np.testing.assert_allclose(lo, lt, rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(go, gt, rtol=2e-5, atol=1e-6)


def test_jax_vmap(host_path):
    jax = _jax()
    import jax.numpy as jnp
    import xent_rs.jax as xj
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.standard_normal((3, 6, 4)), dtype=jnp.float32)
    t = jnp.asarray(rng.integers(0, 4, (3, 6)), dtype=jnp.int32)
    kw = dict(z_loss=0.05, softcap=2.0)
    got = jax.vmap(lambda a, b: xj.cross_entropy(a, b, **kw))(x, t)
    want = jax.vmap(lambda a, b: jax_composed(a, b, **kw))(x, t)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)


def test_jax_bad_values(host_path):
    _jax()
    import jax.numpy as jnp
    import xent_rs.jax as xj
    x, t = jnp.zeros((2, 3)), jnp.array([0, 1])
    with pytest.raises(ValueError, match="^z_loss"):
        xj.cross_entropy(x, t, z_loss=-1.0)
    with pytest.raises(ValueError, match="^softcap"):
        xj.cross_entropy(x, t, softcap=-2.0)
