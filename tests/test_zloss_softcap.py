"""cross_entropy's z_loss= and softcap= against the float64 reference, closed forms and
finite differences."""

from __future__ import annotations

import numpy as np
import pytest

import xent_rs as xr
from xent_rs import reference as ref
from conftest import ROW_LOSS_RTOL, assert_close, random_logits, random_probs

DTYPES = [np.float32, np.float64]
FLAGS = dict(return_grad=True, return_hess=True, return_lse=True)
VARIANTS = [dict(z_loss=1e-2), dict(softcap=5.0), dict(z_loss=0.3, softcap=2.0)]


def both(logits, target, **kw):
    return (xr.cross_entropy(logits, target, **kw, **FLAGS),
            ref.cross_entropy(logits, target, **kw, **FLAGS))


def check(fast, slow, dtype, *, row_losses=False):
    loss, grad, hess, lse = fast
    rloss, rgrad, rhess, rlse = slow
    assert np.asarray(loss).dtype == np.dtype(dtype)
    assert grad.dtype == np.dtype(dtype) and hess.dtype == np.dtype(dtype)
    assert_close(loss, rloss, dtype, rtol=ROW_LOSS_RTOL[np.dtype(dtype)] if row_losses
                 else None, scale_atol=False)
    natural = max(np.max(np.abs(rgrad), initial=0), np.max(np.abs(rhess), initial=0))
    assert_close(grad, rgrad, dtype, scale=natural)
    assert_close(hess, rhess, dtype, scale=natural)
    assert_close(lse, rlse, dtype, scale_atol=False)


def z_term_by_hand(x, t, z, ignore_index=-100, reduction="mean"):
    """``z·lse²`` of the non-ignored rows, written out with ``np.logaddexp.reduce``."""
    lse = np.logaddexp.reduce(np.asarray(x, np.float64), axis=-1)
    kept = t != ignore_index
    rows = np.where(kept, z * lse**2, 0.0)
    if reduction == "none":
        return rows
    return rows.sum() / (kept.sum() if reduction == "mean" else 1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["index", "probs"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("eps", [0.0, 0.2])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("variant", VARIANTS, ids=["z", "cap", "both"])
def test_every_combination_against_the_reference(rng, dtype, kind, weighted, eps, reduction,
                                                 variant):
    n, k = 29, 10
    x = random_logits(rng, (n, k), dtype, scale=4.0)
    if kind == "index":
        t = rng.integers(0, k, n)
        t[::4] = -100
    else:
        t = random_probs(rng, (n, k), dtype)
    w = rng.random(k) * 2 if weighted else None
    fast, slow = both(x, t, weight=w, label_smoothing=eps, reduction=reduction, **variant)
    check(fast, slow, dtype, row_losses=reduction == "none")


def test_z_loss_is_the_plain_loss_plus_z_lse_squared_over_non_ignored_rows(rng):
    """The closed form of the contract: not multiplied by class weights, divided by the number
    of non-ignored rows (not the weight sum) for a mean."""
    n, k, z = 40, 7, 0.05
    x = random_logits(rng, (n, k), np.float64)
    t = rng.integers(0, k, n)
    t[::3] = -100
    w = rng.random(k) + 0.1
    for reduction in ["mean", "sum", "none"]:
        plain = xr.cross_entropy(x, t, weight=w, reduction=reduction)
        got = xr.cross_entropy(x, t, weight=w, reduction=reduction, z_loss=z)
        want = plain + z_term_by_hand(x, t, z, reduction=reduction)
        np.testing.assert_allclose(got, want, rtol=1e-13)


def test_z_loss_gradient_closed_form(rng):
    n, k, z = 12, 6, 0.2
    x = random_logits(rng, (n, k), np.float64)
    t = rng.integers(0, k, n)
    t[0] = -100
    _, g0, h0 = xr.cross_entropy(x, t, return_grad=True, return_hess=True)
    _, g, h = xr.cross_entropy(x, t, z_loss=z, return_grad=True, return_hess=True)
    lse = np.logaddexp.reduce(x, axis=-1, keepdims=True)
    p = np.exp(x - lse)
    kept = (t != -100)[:, None]
    m = kept.sum()
    np.testing.assert_allclose(g - g0, np.where(kept, 2 * z * lse * p / m, 0), atol=1e-15)
    np.testing.assert_allclose(h - h0, np.where(kept, 2 * z * (p * p + lse * p * (1 - p)) / m,
                                                0), atol=1e-15)


def test_probability_targets_cover_every_row(rng):
    n, k, z = 9, 5, 0.1
    x = random_logits(rng, (n, k), np.float64)
    y = random_probs(rng, (n, k), np.float64)
    got = xr.cross_entropy(x, y, z_loss=z)
    lse = np.logaddexp.reduce(x, axis=-1)
    np.testing.assert_allclose(got, xr.cross_entropy(x, y) + z * np.mean(lse**2), rtol=1e-13)


def test_softcap_is_cross_entropy_of_the_capped_logits(rng):
    n, k, c = 30, 8, 3.0
    x = random_logits(rng, (n, k), np.float64, scale=10.0)
    t = rng.integers(0, k, n)
    capped = c * np.tanh(x / c)
    for reduction in ["mean", "none"]:
        np.testing.assert_allclose(xr.cross_entropy(x, t, softcap=c, reduction=reduction),
                                   xr.cross_entropy(capped, t, reduction=reduction),
                                   rtol=1e-13)
    _, g, lse = xr.cross_entropy(x, t, softcap=c, return_grad=True, return_lse=True)
    _, gy = xr.cross_entropy(capped, t, return_grad=True)
    np.testing.assert_allclose(g, gy * (1 - np.tanh(x / c) ** 2), atol=1e-15)
    np.testing.assert_allclose(lse, np.logaddexp.reduce(capped, axis=-1), rtol=1e-14)


def numeric_derivs(f, x, h=1e-6):
    """Central differences of the scalar ``f`` and of its gradient ``g`` (second derivative
    on the diagonal) at ``x``."""
    grad = np.zeros_like(x)
    hess = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        fp, gp = f(xp)
        fm, gm = f(xm)
        grad[i] = (fp - fm) / (2 * h)
        hess[i] = (gp[i] - gm[i]) / (2 * h)
    return grad, hess


@pytest.mark.parametrize("kind", ["index", "probs"])
@pytest.mark.parametrize("variant", VARIANTS, ids=["z", "cap", "both"])
def test_derivatives_by_finite_differences(rng, kind, variant):
    n, k = 4, 5
    x = random_logits(rng, (n, k), np.float64, scale=2.0)
    t = (np.array([0, 3, -100, 4]) if kind == "index"
         else random_probs(rng, (n, k), np.float64))
    kw = dict(weight=np.array([1.0, 0.5, 2.0, 1.5, 0.7]), label_smoothing=0.1, **variant)

    def f(v):
        loss, g = xr.cross_entropy(v, t, return_grad=True, **kw)
        return float(loss), g

    _, g, h = xr.cross_entropy(x, t, return_grad=True, return_hess=True, **kw)
    ng, nh = numeric_derivs(f, x)
    np.testing.assert_allclose(g, ng, atol=1e-8)
    np.testing.assert_allclose(h, nh, atol=1e-7)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", [30.0, 1e4])
@pytest.mark.parametrize("variant", VARIANTS + [dict(z_loss=1e-4, softcap=30.0)],
                         ids=["z", "cap", "both", "palm-gemma"])
def test_adversarial_logits_row_losses(rng, dtype, scale, variant):
    """Large logits, masked classes and confident rows: float32 per-row losses within 1e-6
    relative of the float64 reference."""
    n, k = 64, 10
    x = random_logits(rng, (n, k), dtype, scale=scale)
    t = rng.integers(0, k, n)
    x[::3, 1] = -np.inf
    t[::3] = np.where(t[::3] == 1, 0, t[::3])
    x[1::5, t[1::5]] += dtype(3 * scale)  # confident, correct rows: tiny losses
    fast, slow = both(x, t, reduction="none", **variant)
    check(fast, slow, dtype, row_losses=True)


@pytest.mark.parametrize("grad", [False, True])
def test_rows_whose_logsumexp_is_near_zero_keep_every_row_loss(grad):
    """A z-loss on rows whose logsumexp is 0.15 to 0.3 from 0 (either sign) while ``log S``
    is about 3 (maximum -3, the other 63 logits equal, so the float32 exponentials' own
    errors all have one sign), the target class weighted 0: the row loss is ``z·lse²``
    alone, whose relative error is ``2δ/|lse|`` for an error ``δ`` in ``log S``. The cheaper
    kernel's sum must be checked against ``|lse|`` too: checked against ``log S`` only,
    these rows came out 1.4e-6 off; summed exactly, 7.8e-7. (Nearer 0 no float32
    exponential is precise enough.)"""
    k = 64
    lse = np.concatenate([np.linspace(0.15, 0.3, 200), -np.linspace(0.15, 0.3, 200)])
    c = np.log((np.exp(lse + 3.0) - 1.0) / (k - 1)) - 3.0
    x = np.concatenate([np.full((lse.size, 1), -3.0), np.repeat(c[:, None], k - 1, axis=1)],
                       axis=1).astype(np.float32)
    t = np.zeros(lse.size, np.int64)
    w = np.ones(k)
    w[0] = 0.0
    kw = dict(weight=w, z_loss=0.5, reduction="none")
    want, rlse = ref.cross_entropy(x.astype(np.float64), t, return_lse=True, **kw)
    flags = dict(return_grad=True, return_lse=True) if grad else dict(return_lse=True)
    got = xr.cross_entropy(x, t, **flags, **kw)
    assert_close(got[0], want, np.float32, rtol=ROW_LOSS_RTOL[np.dtype(np.float32)],
                 scale_atol=False)
    assert_close(got[-1], rlse, np.float32, scale_atol=False)


@pytest.mark.parametrize("variant", VARIANTS, ids=["z", "cap", "both"])
def test_masked_class_stays_masked(variant):
    x = np.array([[1.0, -np.inf, 0.5, 2.0]])
    loss, g, h = xr.cross_entropy(x, np.array([0]), return_grad=True, return_hess=True,
                                  **variant)
    assert np.isfinite(loss)
    assert g[0, 1] == 0.0 and h[0, 1] == 0.0
    cap = variant.get("softcap")
    z = variant.get("z_loss", 0.0)
    kept = x[:, [0, 2, 3]]
    y = kept if cap is None else cap * np.tanh(kept / cap)
    lse = np.logaddexp.reduce(y, axis=-1)
    np.testing.assert_allclose(loss, lse - y[0, 0] + z * lse**2, rtol=1e-14)
    # Targeting the masked class is an infinite loss, as without the options.
    assert xr.cross_entropy(x, np.array([1]), **variant) == np.inf


@pytest.mark.parametrize("variant", VARIANTS, ids=["z", "cap", "both"])
def test_non_finite_rows_are_nan_and_ignored_rows_zero(variant):
    x = np.array([[-np.inf, -np.inf, -np.inf], [np.nan, 0.0, 1.0], [np.nan, 0.0, 1.0],
                  [0.0, 1.0, 2.0]])
    t = np.array([0, 1, -100, 2])
    loss, g = xr.cross_entropy(x, t, reduction="none", return_grad=True, **variant)
    assert np.isnan(loss[0]) and np.isnan(loss[1])
    assert loss[2] == 0.0 and np.all(g[2] == 0.0)
    assert np.isfinite(loss[3]) and np.all(np.isfinite(g[3]))


def test_softcap_saturates_without_overflow():
    """Logits far beyond the cap: the capped values are ±c and sech² underflows to 0 (no
    inf·0); +inf maps to c."""
    c = 1.5
    x = np.array([[1e30, -1e30, 0.0, 3e38], [np.inf, 0.0, -1.0, 2.0]])
    loss, g, h = xr.cross_entropy(x, np.array([2, 3]), softcap=c, reduction="none",
                                  return_grad=True, return_hess=True)
    y = np.array([[c, -c, 0.0, c], [c, 0.0, c * np.tanh(-1 / c), c * np.tanh(2 / c)]])
    want = np.logaddexp.reduce(y, axis=-1) - y[[0, 1], [2, 3]]
    np.testing.assert_allclose(loss, want, rtol=1e-14)
    assert np.all(np.isfinite(g)) and np.all(np.isfinite(h))
    assert g[0, 0] == 0.0 and g[0, 1] == 0.0 and g[0, 3] == 0.0 and g[1, 0] == 0.0


@pytest.mark.parametrize("k", [1, 2, 10])
@pytest.mark.parametrize("dtype", DTYPES)
def test_small_class_counts(rng, k, dtype):
    n = 50
    x = random_logits(rng, (n, k), dtype, scale=5.0)
    t = rng.integers(0, k, n)
    for variant in VARIANTS:
        check(*both(x, t, reduction="none", **variant), dtype, row_losses=True)
        check(*both(x, t, **variant), dtype)


def test_k1_closed_form():
    x = np.array([[3.0], [-2.0]])
    loss, g = xr.cross_entropy(x, np.array([0, 0]), z_loss=0.5, softcap=4.0,
                               reduction="none", return_grad=True)
    y = 4.0 * np.tanh(x[:, 0] / 4.0)
    np.testing.assert_allclose(loss, 0.5 * y**2, rtol=1e-14)
    np.testing.assert_allclose(g[:, 0], 2 * 0.5 * y * (1 - np.tanh(x[:, 0] / 4) ** 2),
                               rtol=1e-13)


@pytest.mark.parametrize("variant", VARIANTS, ids=["z", "cap", "both"])
def test_large_vocabulary(rng, variant):
    n, k = 3, 32000
    x = random_logits(rng, (n, k), np.float32, scale=5.0)
    t = np.array([5, -100, 31999])
    check(*both(x, t, reduction="none", **variant), np.float32, row_losses=True)
    check(*both(x, t, label_smoothing=0.1, **variant), np.float32)


@pytest.mark.parametrize("variant", VARIANTS, ids=["z", "cap", "both"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_empty_batch(variant, reduction):
    x = np.zeros((0, 4), np.float32)
    loss, g = xr.cross_entropy(x, np.zeros(0, np.int64), reduction=reduction,
                               return_grad=True, **variant)
    assert g.shape == (0, 4)
    if reduction == "mean":
        assert np.isnan(loss)
    elif reduction == "sum":
        assert loss == 0.0
    else:
        assert loss.shape == (0,)


def test_all_rows_ignored_mean_is_nan():
    x = np.ones((3, 4))
    loss, g = xr.cross_entropy(x, np.full(3, -100), z_loss=0.1, return_grad=True)
    assert np.isnan(loss) and np.all(g == 0.0)


@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16"])
@pytest.mark.parametrize("variant", VARIANTS, ids=["z", "cap", "both"])
def test_16_bit_logits(rng, dtype_name, variant):
    if dtype_name == "bfloat16":
        ml_dtypes = pytest.importorskip("ml_dtypes")
        dtype = np.dtype(ml_dtypes.bfloat16)
        rtol = 2.0**-7
    else:
        dtype = np.dtype(np.float16)
        rtol = 2.0**-10
    n, k = 20, 9
    x = random_logits(rng, (n, k), np.float32, scale=6.0).astype(dtype)
    t = rng.integers(0, k, n)
    loss, g, h, lse = xr.cross_entropy(x, t, reduction="none", **variant, **FLAGS)
    rl, rg, rh, rlse = ref.cross_entropy(x.astype(np.float64), t, reduction="none",
                                         **variant, **FLAGS)
    assert g.dtype == dtype and h.dtype == dtype and loss.dtype == dtype
    for a, b in [(loss, rl), (lse, rlse), (g, rg), (h, rh)]:
        a = np.asarray(a, np.float64)
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.max(np.abs(b)))
    # The reduced loss is float32, accumulated from exact row values.
    mean = xr.cross_entropy(x, t, **variant)
    assert mean.dtype == np.float32
    np.testing.assert_allclose(mean, ref.cross_entropy(x.astype(np.float64), t, **variant),
                               rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", VARIANTS, ids=["z", "cap", "both"])
def test_out_and_in_place(rng, dtype, variant):
    n, k = 33, 12
    x = random_logits(rng, (n, k), dtype)
    t = rng.integers(0, k, n)
    loss, g = xr.cross_entropy(x, t, return_grad=True, **variant)
    out = np.empty_like(x)
    loss2, g2 = xr.cross_entropy(x, t, return_grad=True, out=out, **variant)
    assert g2 is out and loss2 == loss
    np.testing.assert_array_equal(g2, g)
    xc = x.copy()
    loss3, g3 = xr.cross_entropy(xc, t, return_grad=True, out=xc, **variant)
    assert g3 is xc and loss3 == loss
    np.testing.assert_array_equal(g3, g)
    # In place with the Hessian too, and probability targets.
    y = random_probs(rng, (n, k), dtype)
    want = xr.cross_entropy(x, y, return_grad=True, return_hess=True, **variant)
    xc = x.copy()
    got = xr.cross_entropy(xc, y, return_grad=True, return_hess=True, out=xc, **variant)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("variant", VARIANTS, ids=["z", "cap", "both"])
def test_outputs_do_not_depend_on_what_else_is_requested(rng, variant):
    n, k = 40, 7
    x = random_logits(rng, (n, k), np.float32)
    t = rng.integers(0, k, n)
    loss, g, h, lse = xr.cross_entropy(x, t, **variant, **FLAGS)
    assert xr.cross_entropy(x, t, **variant) == loss
    _, h_only = xr.cross_entropy(x, t, return_hess=True, **variant)
    np.testing.assert_array_equal(h_only, h)
    _, g_only = xr.cross_entropy(x, t, return_grad=True, **variant)
    np.testing.assert_array_equal(g_only, g)


@pytest.mark.parametrize("variant", VARIANTS, ids=["z", "cap", "both"])
def test_same_result_for_any_thread_count(rng, variant):
    n, k = 3000, 97  # enough rows for several chunks
    x = random_logits(rng, (n, k), np.float32)
    t = rng.integers(0, k, n)
    before = xr.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            xr.set_num_threads(threads)
            results.append(xr.cross_entropy(x, t, return_grad=True, **variant))
    finally:
        xr.set_num_threads(before)
    for loss, g in results[1:]:
        assert loss == results[0][0]
        np.testing.assert_array_equal(g, results[0][1])


def test_zero_z_loss_and_no_cap_are_the_plain_loss_bit_for_bit(rng):
    x = random_logits(rng, (25, 6), np.float32)
    t = rng.integers(0, 6, 25)
    a = xr.cross_entropy(x, t, **FLAGS)
    b = xr.cross_entropy(x, t, z_loss=0.0, softcap=None, **FLAGS)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("value", [-1e-3, -np.inf, np.inf, np.nan])
def test_bad_z_loss(value):
    with pytest.raises(ValueError, match="^z_loss"):
        xr.cross_entropy(np.zeros((2, 3)), np.array([0, 1]), z_loss=value)
    with pytest.raises(ValueError, match="^z_loss"):
        ref_core_call(z_loss=value)


@pytest.mark.parametrize("value", [0.0, -2.0, np.inf, -np.inf, np.nan])
def test_bad_softcap(value):
    with pytest.raises(ValueError, match="^softcap"):
        xr.cross_entropy(np.zeros((2, 3)), np.array([0, 1]), softcap=value)
    with pytest.raises(ValueError, match="^softcap"):
        ref_core_call(softcap=value)


@pytest.mark.parametrize("name", ["z_loss", "softcap"])
@pytest.mark.parametrize("value", ["0.1", True, [0.1], 1j])
def test_non_numbers_are_type_errors_naming_the_argument(name, value):
    with pytest.raises(TypeError, match=f"^{name}"):
        xr.cross_entropy(np.zeros((2, 3)), np.array([0, 1]), **{name: value})


def ref_core_call(**kw):
    """The extension called directly (skipping Python's checks) refuses bad values too."""
    from xent_rs import _core
    x = np.zeros((2, 3))
    return _core.cce_forward_backward(x, 3, np.array([0, 1]), None, None, -100, 0.0, 1.0,
                                      False, **kw)


def test_numpy_scalars_are_accepted(rng):
    x = random_logits(rng, (5, 4), np.float64)
    t = rng.integers(0, 4, 5)
    np.testing.assert_array_equal(
        xr.cross_entropy(x, t, z_loss=np.float32(0.25), softcap=np.int64(3)),
        xr.cross_entropy(x, t, z_loss=0.25, softcap=3.0))


@pytest.mark.parametrize("k", [2, 10])
@pytest.mark.parametrize("outputs", ["loss", "grad", "hess", "in_place"])
def test_capped_confident_rows_keep_relative_precision(rng, k, outputs):
    """A capped row's shift ``c·tanh(x/c) − max`` reaches ``-2c``; rounded to float32 it would
    cost ``2^-25·2c`` relative in a confident row's loss ``≈ Σ exp(d_j)``: the kernel corrects
    for the rounding, whichever outputs are asked for."""
    n, c = 300, 30.0
    x = (rng.standard_normal((n, k)) * 30).astype(np.float32)
    t = rng.integers(0, k, n)
    x[np.arange(n), t] = np.float32(200.0)  # y_t ≈ c: losses down to exp(-60)
    want = ref.cross_entropy(x, t, softcap=c, reduction="none")
    kw = dict(softcap=c, reduction="none")
    if outputs == "loss":
        got = xr.cross_entropy(x, t, **kw)
    elif outputs == "grad":
        got = xr.cross_entropy(x, t, return_grad=True, **kw)[0]
    elif outputs == "hess":
        got = xr.cross_entropy(x, t, return_hess=True, **kw)[0]
    else:
        xc = x.copy()
        got = xr.cross_entropy(xc, t, return_grad=True, out=xc, **kw)[0]
    assert np.min(want) < 1e-10
    np.testing.assert_allclose(got, want, rtol=ROW_LOSS_RTOL[np.dtype(np.float32)])


def test_in_place_beyond_the_copied_row_length(rng):
    """Rows longer than the in-place scratch copy (2^16 classes) read the logits from the
    gradient buffer itself."""
    x = random_logits(rng, (2, 70_000), np.float32)
    t = np.array([3, 69_999])
    kw = dict(z_loss=1e-3, softcap=10.0, return_grad=True)
    loss, g = xr.cross_entropy(x, t, **kw)
    xc = x.copy()
    loss2, g2 = xr.cross_entropy(xc, t, out=xc, **kw)
    assert loss2 == loss
    np.testing.assert_array_equal(g2, g)
    np.testing.assert_allclose(loss, ref.cross_entropy(x, t, z_loss=1e-3, softcap=10.0),
                               rtol=1e-6)


@pytest.mark.parametrize("c", [2.0, 30.0, 1e3])
@pytest.mark.parametrize("scale", [0.5, 4.0, 12.0])
def test_float32_capped_pass_at_its_edges(rng, c, scale):
    """Rows long enough for the float32 pass (few logits beyond ``min(c/2, 14)``): confident
    rows whose target is the maximum (losses down to ``exp(-2c)``), a tied maximum, masked
    classes, a target beyond the float32 region, odd lengths (vector tails), the z-loss and
    class weights: per-row losses within 1e-6 relative, gradients and the Hessian against
    the reference, and the same values in place."""
    n, k = 60, 261
    x = (rng.standard_normal((n, k)) * scale).astype(np.float32)
    x = np.clip(x, -min(c / 2, 14) * 0.999, min(c / 2, 14) * 0.999).astype(np.float32)
    t = rng.integers(0, k, n)
    rows = np.arange(n)
    x[::4, 7] = -np.inf
    t[::4] = np.where(t[::4] == 7, 8, t[::4])
    conf = rows[1::4]
    x[conf, t[conf]] = np.float32(min(c / 2, 14) * 0.999) + np.float32(3 * scale)
    x[2::8, t[2::8]] = x[2::8].max(axis=1)  # the target ties the maximum
    x[3::8, t[3::8]] = np.float32(5 * c)  # a target far beyond the cap
    w = rng.random(k) + 0.5
    for kw in [dict(softcap=c), dict(softcap=c, z_loss=1e-4, weight=w)]:
        fast, slow = both(x, t, reduction="none", **kw)
        check(fast, slow, np.float32, row_losses=True)
        xc = x.copy()
        loss, g = xr.cross_entropy(xc, t, reduction="none", return_grad=True, out=xc, **kw)
        np.testing.assert_array_equal(loss, fast[0])
        np.testing.assert_array_equal(g, fast[1])


def test_float32_capped_pass_rows_beyond_the_region_fall_back(rng):
    """Rows with many logits beyond the float32 region take the float64 path: same
    precision."""
    n, k, c = 20, 300, 10.0
    x = (rng.standard_normal((n, k)) * 30).astype(np.float32)
    t = rng.integers(0, k, n)
    x[::2, t[::2]] = 500.0
    fast, slow = both(x, t, reduction="none", softcap=c)
    check(fast, slow, np.float32, row_losses=True)
