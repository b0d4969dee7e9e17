"""``xent_rs.jax`` against optax and JAX's own autodiff of optax-built losses: values and
gradients under ``jit``, ``grad``, ``value_and_grad`` and ``vmap``, for float32, float64
(x64 enabled), float16 and bfloat16 logits, through both host paths (the XLA FFI target and
the ``jax.pure_callback`` fallback); the errors (forward mode, second derivatives, gradients
with respect to targets, bad shapes and values); and the ImportError without JAX."""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")

import jax.numpy as jnp  # noqa: E402

import xent_rs.jax as xj  # noqa: E402
from conftest import run_script  # noqa: E402

F32 = {"rtol": 2e-5, "atol": 1e-6}
# 16-bit results against optax in float32 on the same (rounded) logits: one rounding of
# the result to the 16-bit dtype (float16: 2^-11, bfloat16: 2^-8 relative).
LOOSE = {jnp.float16: {"rtol": 2e-3, "atol": 2e-4}, jnp.bfloat16: {"rtol": 1.6e-2, "atol": 2e-3}}


@pytest.fixture(params=["ffi", "pure_callback"], autouse=True)
def host_path(request, monkeypatch):
    """Every test runs through the FFI target and through the pure_callback fallback."""
    if request.param == "ffi" and xj._FFI_TARGET is None:
        pytest.skip("this jaxlib refused the FFI target")
    monkeypatch.setattr(xj, "_FORCE_CALLBACK", request.param == "pure_callback")
    jax.clear_caches()  # the path is chosen when tracing: no trace of the other path reused
    yield request.param
    jax.clear_caches()


def problem(n=6, k=5, dtype=jnp.float32, seed=0):
    rng = np.random.default_rng(seed)
    z = jnp.asarray(rng.standard_normal((n, k)) * 2, dtype=dtype)
    y = jnp.asarray(rng.integers(0, k, n), dtype=jnp.int32)
    return z, y


def probs(shape, seed=1):
    p = np.random.default_rng(seed).random(shape) ** 2
    return jnp.asarray(p / p.sum(-1, keepdims=True), dtype=jnp.float32)


def close(actual, expected, **tol):
    np.testing.assert_allclose(np.asarray(actual, np.float64), np.asarray(expected, np.float64),
                               **(tol or F32))


# ----------------------------------------------------------- optax-built references --

def optax_cce(z, t, weight=None, ignore_index=-100, label_smoothing=0.0, reduction="mean"):
    """PyTorch's weighted, smoothed cross-entropy from optax pieces, index or probability
    targets: q_j = (1-ε) w_t [j=t] + ε w_j / K (index), w_j ((1-ε) y_j + ε/K) (probs)."""
    k = z.shape[-1]
    w = jnp.ones(k, z.dtype) if weight is None else weight
    eps = label_smoothing
    if jnp.issubdtype(t.dtype, jnp.integer):
        keep = t != ignore_index
        safe = jnp.where(keep, t, 0)
        hard = optax.softmax_cross_entropy_with_integer_labels(z, safe) * w[safe]
        smooth = optax.softmax_cross_entropy(z, jnp.broadcast_to(w / k, z.shape))
        rows = jnp.where(keep, (1 - eps) * hard + eps * smooth, 0.0)
        divisor = jnp.sum(jnp.where(keep, w[safe], 0.0))
    else:
        rows = optax.softmax_cross_entropy(z, w * ((1 - eps) * t + eps / k))
        divisor = rows.size
    if reduction == "none":
        return rows
    return jnp.sum(rows) / (divisor if reduction == "mean" else 1)


def optax_bce(z, y, weight=None, pos_weight=None, label_smoothing=0.0, reduction="mean"):
    """w·[pw·y·softplus(-z) + (1-y)·softplus(z)] with y ← y(1-ε) + ε/2, from optax's
    sigmoid_binary_cross_entropy (softplus(-z) is its loss at label 1)."""
    y = y * (1 - label_smoothing) + label_smoothing / 2
    rows = optax.sigmoid_binary_cross_entropy(z, y)
    if pos_weight is not None:
        rows = rows + (pos_weight - 1) * y * optax.sigmoid_binary_cross_entropy(
            z, jnp.ones_like(z))
    if weight is not None:
        rows = rows * weight
    return {"none": rows, "sum": jnp.sum(rows), "mean": jnp.mean(rows)}[reduction]


def check_loss_and_grad(ours, ref, z):
    """Value, ``jit`` value, ``grad``, ``jit(value_and_grad)`` of a scalar function of the
    logits against the optax-built one."""
    close(ours(z), ref(z))
    close(jax.jit(ours)(z), ref(z))
    close(jax.grad(ours)(z), jax.grad(ref)(z))
    (v, g), (rv, rg) = jax.jit(jax.value_and_grad(ours))(z), jax.value_and_grad(ref)(z)
    close(v, rv)
    close(g, rg)


# --------------------------------------------------------------------- cross_entropy --

@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_integer_labels_match_optax(reduction):
    z, y = problem()
    agg = jnp.mean if reduction == "mean" else jnp.sum
    check_loss_and_grad(
        lambda z: xj.cross_entropy(z, y, reduction=reduction),
        lambda z: agg(optax.softmax_cross_entropy_with_integer_labels(z, y)), z)


def test_reduction_none_scales_each_row_by_its_cotangent():
    z, y = problem(n=7)
    c = jnp.arange(7.0) - 3.0
    rows = xj.cross_entropy(z, y, reduction="none")
    close(rows, optax.softmax_cross_entropy_with_integer_labels(z, y))
    assert rows.shape == (7,) and rows.dtype == jnp.float32
    check_loss_and_grad(
        lambda z: jnp.sum(c * xj.cross_entropy(z, y, reduction="none")),
        lambda z: jnp.sum(c * optax.softmax_cross_entropy_with_integer_labels(z, y)), z)


def test_probability_targets_match_optax():
    z, _ = problem()
    p = probs(z.shape)
    check_loss_and_grad(lambda z: xj.cross_entropy(z, p),
                        lambda z: jnp.mean(optax.softmax_cross_entropy(z, p)), z)


@pytest.mark.parametrize("kind", ["index", "probs"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_weight_label_smoothing_ignore_index(kind, reduction):
    z, y = problem(n=9, k=4)
    w = jnp.array([0.5, 2.0, 1.0, 0.25])
    t = y.at[jnp.array([1, 4])].set(-1) if kind == "index" else probs(z.shape)
    opts = {"weight": w, "label_smoothing": 0.2, "reduction": reduction}
    if kind == "index":
        opts["ignore_index"] = -1
    c = jnp.linspace(0.5, 1.5, 9) if reduction == "none" else 1.0
    check_loss_and_grad(lambda z: jnp.sum(c * xj.cross_entropy(z, t, **opts)),
                        lambda z: jnp.sum(c * optax_cce(z, t, **opts)), z)
    if kind == "index" and reduction == "none":
        np.testing.assert_array_equal(np.asarray(xj.cross_entropy(z, t, **opts))[[1, 4]], 0.0)


def test_batch_axes_and_float_class_indices():
    z, y = problem(n=12, k=3)
    z3, y3 = z.reshape(2, 6, 3), y.reshape(2, 6)
    close(xj.cross_entropy(z3, y3), jnp.mean(optax.softmax_cross_entropy_with_integer_labels(z, y)))
    close(jax.grad(xj.cross_entropy)(z3, y3.astype(jnp.float32)).reshape(12, 3),
          jax.grad(lambda z: jnp.mean(optax.softmax_cross_entropy_with_integer_labels(z, y)))(z))


def test_mean_over_no_rows_is_nan():
    z, y = problem(n=3)
    assert np.isnan(float(jax.jit(xj.cross_entropy)(z, jnp.full(3, -100))))


# ----------------------------------------------------------------------- vmap --

def test_vmap_over_a_batch_of_problems():
    """Each problem is reduced on its own: logits, targets and weights batched or shared."""
    rng = np.random.default_rng(3)
    zs = jnp.asarray(rng.standard_normal((4, 6, 5)), jnp.float32)
    ys = jnp.asarray(rng.integers(0, 5, (4, 6)), jnp.int32)
    ws = jnp.asarray(rng.random((4, 5)) + 0.1, jnp.float32)

    def ours(z, y, w):
        return xj.cross_entropy(z, y, weight=w, label_smoothing=0.1)

    def ref(z, y, w):
        return optax_cce(z, y, weight=w, label_smoothing=0.1)

    for axes in [(0, 0, 0), (0, None, None), (0, 0, None), (0, None, 0)]:
        args = [a if ax == 0 else a[0] for a, ax in zip((zs, ys, ws), axes)]
        want = jax.vmap(ref, in_axes=axes)(*args)
        close(jax.jit(jax.vmap(ours, in_axes=axes))(*args), want)
        close(jax.jit(jax.vmap(jax.grad(ours), in_axes=axes))(*args),
              jax.vmap(jax.grad(ref), in_axes=axes)(*args))
        # the gradient of a sum of vmapped losses (vmap inside grad)
        close(jax.grad(lambda z: jnp.sum(jax.vmap(ours, in_axes=axes)(z, *args[1:])))(zs),
              jax.grad(lambda z: jnp.sum(jax.vmap(ref, in_axes=axes)(z, *args[1:])))(zs))


def test_nested_vmap_and_batch_axis_not_first():
    rng = np.random.default_rng(4)
    zs = jnp.asarray(rng.standard_normal((3, 2, 6, 5)), jnp.float32)
    ys = jnp.asarray(rng.integers(0, 5, (2, 6)), jnp.int32)
    ref = jax.vmap(jax.vmap(lambda z, y: jnp.mean(
        optax.softmax_cross_entropy_with_integer_labels(z, y)), (0, 0)), (0, None))(zs, ys)
    ours = jax.vmap(jax.vmap(xj.cross_entropy, (0, 0)), (0, None))
    close(jax.jit(ours)(zs, ys), ref)
    # batch axis 1 of the logits: vmap moves it in front for the host
    moved = jnp.moveaxis(zs[:, 0], 0, 1)  # (6, 3, 5): problems along axis 1
    close(jax.vmap(xj.cross_entropy, (1, None))(moved, ys[0]),
          jax.vmap(lambda z: jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
              z, ys[0])), 1)(moved))


def test_vmap_of_per_row_losses_and_bce():
    rng = np.random.default_rng(5)
    zs = jnp.asarray(rng.standard_normal((3, 4, 2)), jnp.float32)
    ys = jnp.asarray(rng.integers(0, 2, (3, 4, 2)), jnp.float32)
    pw = jnp.array([2.0, 0.5])
    close(jax.vmap(lambda z: xj.cross_entropy(z, jnp.array([0, 1, 1, 0]), reduction="none"))(zs),
          jax.vmap(lambda z: optax.softmax_cross_entropy_with_integer_labels(
              z, jnp.array([0, 1, 1, 0])))(zs))
    close(jax.jit(jax.vmap(jax.grad(lambda z, y: xj.binary_cross_entropy_with_logits(
        z, y, pos_weight=pw))))(zs, ys),
        jax.vmap(jax.grad(lambda z, y: optax_bce(z, y, pos_weight=pw)))(zs, ys))


# ---------------------------------------------------------- binary_cross_entropy --

@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bce_matches_optax(reduction):
    rng = np.random.default_rng(6)
    z = jnp.asarray(rng.standard_normal((5, 3)) * 3, jnp.float32)
    y = jnp.asarray(rng.random((5, 3)), jnp.float32)
    w = jnp.asarray(rng.random((5, 1)) + 0.5, jnp.float32)
    pw = jnp.array([1.0, 3.0, 0.5])
    c = jnp.asarray(rng.random((5, 3)), jnp.float32) if reduction == "none" else 1.0
    for opts in [{}, {"weight": w, "pos_weight": pw, "label_smoothing": 0.1}]:
        opts = dict(opts, reduction=reduction)
        check_loss_and_grad(
            lambda z: jnp.sum(c * xj.binary_cross_entropy_with_logits(z, y, **opts)),
            lambda z: jnp.sum(c * optax_bce(z, y, **opts)), z)
    assert xj.binary_cross_entropy_with_logits(z, y, reduction="none").shape == (5, 3)


def test_bce_integer_targets_and_zero_d_logits():
    z = jnp.array(0.7)
    close(xj.binary_cross_entropy_with_logits(z, jnp.array(1)), optax_bce(z, 1.0))
    close(jax.grad(xj.binary_cross_entropy_with_logits)(z, jnp.array(True)),
          jax.grad(optax_bce)(z, 1.0))


# ------------------------------------------------------------------------ dtypes --

def test_float64_with_x64():
    with jax.enable_x64(True):
        z, y = problem(dtype=jnp.float64)
        p = probs(z.shape).astype(jnp.float64)
        assert xj.cross_entropy(z, y).dtype == jnp.float64
        tol = {"rtol": 1e-12, "atol": 1e-14}
        for t, ref in [(y, lambda z: jnp.mean(
                optax.softmax_cross_entropy_with_integer_labels(z, y))),
                       (p, lambda z: jnp.mean(optax.softmax_cross_entropy(z, p)))]:
            v, g = jax.jit(jax.value_and_grad(xj.cross_entropy))(z, t)
            assert g.dtype == jnp.float64
            close(v, ref(z), **tol)
            close(g, jax.grad(ref)(z), **tol)
        b = (y[:, None] > 2).astype(jnp.float64) * jnp.ones_like(z)
        close(jax.grad(xj.binary_cross_entropy_with_logits)(z, b),
              jax.grad(optax_bce)(z, b), **tol)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16], ids=["float16", "bfloat16"])
def test_16_bit_logits(dtype):
    """Values against optax in float32 on the same rounded logits; dtypes those optax (and
    jnp.mean of optax) return for the 16-bit input itself."""
    z16, y = problem(n=16, k=10, dtype=dtype)
    z32 = z16.astype(jnp.float32)
    ref_rows = optax.softmax_cross_entropy_with_integer_labels(z16, y)
    rows = xj.cross_entropy(z16, y, reduction="none")
    assert rows.dtype == ref_rows.dtype == dtype
    assert xj.cross_entropy(z16, y).dtype == jnp.mean(ref_rows).dtype == dtype
    close(rows, optax.softmax_cross_entropy_with_integer_labels(z32, y), **LOOSE[dtype])
    v, g = jax.jit(jax.value_and_grad(xj.cross_entropy))(z16, y)
    assert g.dtype == dtype
    ref = lambda z: jnp.mean(optax.softmax_cross_entropy_with_integer_labels(z, y))  # noqa: E731
    close(v, ref(z32), **LOOSE[dtype])
    close(g, jax.grad(ref)(z32), **LOOSE[dtype])
    b = (z32 > 0).astype(jnp.float32)
    assert xj.binary_cross_entropy_with_logits(z16, b).dtype == dtype
    assert xj.binary_cross_entropy_with_logits(z16, b, reduction="none").dtype == \
        optax.sigmoid_binary_cross_entropy(z16, b).dtype == dtype
    close(jax.grad(xj.binary_cross_entropy_with_logits)(z16, b),
          jax.grad(optax_bce)(z32, b), **LOOSE[dtype])


def test_both_host_paths_agree_bitwise(host_path, monkeypatch):
    z, y = problem(n=50, k=7)
    f = jax.jit(jax.value_and_grad(lambda z: xj.cross_entropy(z, y, label_smoothing=0.3)))
    v, g = f(z)
    monkeypatch.setattr(xj, "_FORCE_CALLBACK", host_path == "ffi")  # the other path
    jax.clear_caches()
    v2, g2 = jax.jit(jax.value_and_grad(lambda z: xj.cross_entropy(z, y, label_smoothing=0.3)))(z)
    np.testing.assert_array_equal(np.asarray(v), np.asarray(v2))
    np.testing.assert_array_equal(np.asarray(g), np.asarray(g2))


def _fast_calls():
    from xent_rs import _core
    return _core.xla_ffi_fast_calls()


def _both_handlers(monkeypatch, f, *args):
    """``f(*args)`` jitted through the extension's FFI handler and through the ctypes one
    (every call sent on to it); the results and how many calls the former served itself."""
    out = []
    for fast in (True, False):
        monkeypatch.setattr(xj, "_FFI_FAST", fast)
        jax.clear_caches()
        before = _fast_calls()
        out.append((jax.block_until_ready(jax.jit(f)(*args)), _fast_calls() - before))
    return out


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float16, jnp.bfloat16, jnp.float64],
                         ids=["float32", "float16", "bfloat16", "float64"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", [{}, {"label_smoothing": 0.2, "ignore_index": 1},
                                     {"z_loss": 1e-3, "softcap": 3.0, "ignore_index": 0}],
                         ids=["plain", "smoothing-ignore", "zloss-softcap"])
def test_extension_handler_agrees_bitwise_with_the_ctypes_handler(host_path, monkeypatch,
                                                                   dtype, reduction, options):
    """The extension's FFI handler runs calls with int32/int64 class indices and no class
    weights itself; what it writes is bit for bit what the ctypes handler (the core's
    Python API on XLA's buffers) writes, for the loss alone and for loss and gradient."""
    if host_path != "ffi":
        pytest.skip("the FFI handlers only")
    with jax.enable_x64(dtype == jnp.float64):
        z, y = problem(n=40, k=9, dtype=dtype)
        if dtype == jnp.float64:
            y = y.astype(jnp.int64)
        loss = lambda z: xj.cross_entropy(z, y, reduction=reduction, **options)  # noqa: E731
        scalar = (lambda z: jnp.sum(loss(z))) if reduction == "none" else loss
        for f in (loss, jax.value_and_grad(scalar)):
            (fast, served), (slow, none_served) = _both_handlers(monkeypatch, f, z)
            assert (served, none_served) == (1, 0)
            for a, b in zip(jax.tree.leaves(fast), jax.tree.leaves(slow)):
                assert a.dtype == b.dtype == dtype
                np.testing.assert_array_equal(np.asarray(a, np.float64), np.asarray(b, np.float64))
        ref = lambda z: jnp.mean(optax.softmax_cross_entropy_with_integer_labels(z, y))  # noqa: E731
        if reduction == "mean" and not options and dtype == jnp.float32:
            close(fast[1], jax.grad(ref)(z))


def test_calls_the_extension_handler_does_not_take_go_to_the_ctypes_handler(host_path,
                                                                           monkeypatch):
    """Class weights, probabilities, float class indices and vmap axes: the ctypes handler
    does them (the extension's serves none of them), with the same results."""
    if host_path != "ffi":
        pytest.skip("the FFI handlers only")
    z, y = problem(n=12, k=5)
    zs = jnp.stack([z, 2 * z, -z])
    calls = [
        (lambda z: xj.cross_entropy(z, y, weight=jnp.arange(1.0, 6.0)), z),
        (lambda z: xj.cross_entropy(z, probs(z.shape)), z),
        (lambda z: xj.cross_entropy(z, y.astype(jnp.float32)), z),
        (lambda z: xj.cross_entropy(z, y.astype(jnp.int16)), z),
        (jax.vmap(jax.value_and_grad(lambda z: xj.cross_entropy(z, y))), zs),
        (lambda z: xj.binary_cross_entropy_with_logits(z, (z > 0).astype(z.dtype)), z),
    ]
    for f, arg in calls:
        (a, served), (b, _) = _both_handlers(monkeypatch, f, arg)
        assert served == 0
        for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
    vs, gs = jax.jit(jax.vmap(jax.value_and_grad(lambda z: xj.cross_entropy(z, y))))(zs)
    for i in range(3):  # each problem of the vmap as its own (fast) call
        v, g = jax.jit(jax.value_and_grad(lambda z: xj.cross_entropy(z, y)))(zs[i])
        np.testing.assert_array_equal(np.asarray(vs[i]), np.asarray(v))
        np.testing.assert_array_equal(np.asarray(gs[i]), np.asarray(g))


def test_extension_handler_reports_bad_labels_with_the_cores_message(host_path):
    if host_path != "ffi":
        pytest.skip("the FFI handlers only")
    z, y = problem()
    for labels in (y.at[4].set(-3), y.at[0].set(5)):
        with pytest.raises(jax.errors.JaxRuntimeError,
                           match=r"target: class index (-3|5) \(at flat position (4|0)\) is out "
                                 r"of range: must be in \[0, 5\) or equal to ignore_index=-100"):
            jax.block_until_ready(jax.jit(jax.value_and_grad(xj.cross_entropy))(z, labels))
    v = jax.jit(lambda z, y: xj.cross_entropy(z, y, ignore_index=-3))(z, y.at[4].set(-3))
    close(v, jnp.mean(optax.softmax_cross_entropy_with_integer_labels(z, y)[jnp.arange(6) != 4]))


# ------------------------------------------------------------------------ errors --

def test_forward_mode_and_second_derivatives_raise():
    z, y = problem()
    f = lambda z: xj.cross_entropy(z, y)  # noqa: E731
    with pytest.raises(TypeError, match="forward-mode"):
        jax.jvp(f, (z,), (jnp.ones_like(z),))
    with pytest.raises(TypeError, match="forward-mode"):
        jax.jacfwd(f)(z)
    with pytest.raises(TypeError, match="xent_rs.jax: second derivatives are not supported"):
        jax.hessian(f)(z)
    with pytest.raises(TypeError, match="xent_rs.jax: second derivatives are not supported"):
        jax.grad(lambda z: jnp.sum(jax.grad(f)(z) ** 2))(z)


def test_gradient_with_respect_to_targets_or_weights_raises():
    z, _ = problem()
    p = probs(z.shape)
    w = jnp.ones(z.shape[-1])
    with pytest.raises(TypeError, match="^target: .*stop_gradient"):
        jax.grad(xj.cross_entropy, argnums=1)(z, p)
    with pytest.raises(TypeError, match="^target: "):  # a target that depends on the logits
        jax.grad(lambda z: xj.cross_entropy(z, jax.nn.softmax(z)))(z)
    with pytest.raises(TypeError, match="^weight: "):
        jax.grad(lambda w: xj.cross_entropy(z, p, weight=w))(w)
    with pytest.raises(TypeError, match="^pos_weight: "):
        jax.grad(lambda pw: xj.binary_cross_entropy_with_logits(z, p, pos_weight=pw))(w)
    # stop_gradient makes it a constant: fine, and the same as optax's logits gradient
    close(jax.grad(lambda z: xj.cross_entropy(z, jax.lax.stop_gradient(jax.nn.softmax(z))))(z),
          jax.grad(lambda z: jnp.mean(optax.softmax_cross_entropy(
              z, jax.lax.stop_gradient(jax.nn.softmax(z)))))(z))


@pytest.mark.parametrize("call, exc, name", [
    (lambda z, y: xj.cross_entropy(z.astype(jnp.int32), y), TypeError, "logits"),
    (lambda z, y: xj.cross_entropy(z[0, 0], y), ValueError, "logits"),
    (lambda z, y: xj.cross_entropy(z[:, :0], y), ValueError, "logits"),
    (lambda z, y: xj.cross_entropy(z, y[:3]), ValueError, "target"),
    (lambda z, y: xj.cross_entropy(z, jnp.zeros(z.shape, jnp.int32)), TypeError, "target"),
    (lambda z, y: xj.cross_entropy(z, y > 1), TypeError, "target"),
    (lambda z, y: xj.cross_entropy(z, jnp.zeros((6, 4))), ValueError, "target"),
    (lambda z, y: xj.cross_entropy(z, y, weight=jnp.ones(4)), ValueError, "weight"),
    (lambda z, y: xj.cross_entropy(z, y, reduction="avg"), ValueError, "reduction"),
    (lambda z, y: xj.cross_entropy(z, y, label_smoothing=1.5), ValueError, "label_smoothing"),
    (lambda z, y: xj.cross_entropy(z, y, ignore_index=1.5), TypeError, "ignore_index"),
    (lambda z, y: xj.binary_cross_entropy_with_logits(z, y), ValueError, "target"),
    (lambda z, y: xj.binary_cross_entropy_with_logits(z, z, weight=jnp.ones(4)),
     ValueError, "weight"),
    (lambda z, y: xj.binary_cross_entropy_with_logits(z, z, pos_weight=jnp.ones((2, 5))),
     ValueError, "pos_weight"),
])
def test_bad_arguments_are_named_at_trace_time(call, exc, name):
    z, y = problem()
    for f in (call, jax.jit(call)):
        with pytest.raises(exc, match=f"^{name}: "):
            f(z, y)


def test_bad_values_are_reported_when_run():
    """Values are only known when the computation runs (eagerly too: every call is an XLA
    computation): a JaxRuntimeError carrying the core's message. Concrete weights are
    checked when traced."""
    z, y = problem()
    runtime = jax.errors.JaxRuntimeError
    for f in (xj.cross_entropy, jax.jit(xj.cross_entropy)):
        with pytest.raises(runtime, match="target: class index 9 .* out of range"):
            jax.block_until_ready(f(z, y.at[2].set(9)))
        with pytest.raises(runtime, match="target: float class indices must be whole"):
            jax.block_until_ready(f(z, y + 0.5))
    with pytest.raises(runtime, match="weight: must be non-negative"):
        jax.block_until_ready(jax.jit(lambda w: xj.cross_entropy(z, y, weight=w))(-jnp.ones(5)))
    with pytest.raises(ValueError, match="^weight: must be non-negative"):
        xj.cross_entropy(z, y, weight=-jnp.ones(5))
    with pytest.raises(ValueError, match="^pos_weight: must be finite"):
        xj.binary_cross_entropy_with_logits(z, z, pos_weight=jnp.full(5, jnp.inf))


# ----------------------------------------------------------------------- imports --

def test_import_without_jax_names_the_package():
    out = run_script(
        "import sys\n"
        "sys.modules['jax'] = None\n"
        "import xent_rs\n"
        "try:\n"
        "    import xent_rs.jax\n"
        "except ImportError as e:\n"
        "    print('ImportError:', e)\n"
        "try:\n"
        "    xent_rs.jax\n"
        "except ImportError as e:\n"
        "    print('attribute:', e)\n", timeout=120)
    assert "ImportError: xent_rs.jax needs JAX" in out and "pip install xent_rs[jax]" in out
    assert "attribute: xent_rs.jax needs JAX" in out


def test_import_xent_rs_does_not_import_jax():
    out = run_script("import sys, xent_rs\nprint('jax' in sys.modules)\n"
                     "xent_rs.jax\nprint('jax' in sys.modules)\n", timeout=120)
    assert out.split() == ["False", "True"]
