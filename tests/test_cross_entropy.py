"""cross_entropy against the float64 reference and closed forms."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import xent_rs as xr
from xent_rs import reference as ref
from conftest import ROW_LOSS_RTOL, assert_close, random_logits, random_probs

DTYPES = [np.float32, np.float64]


def both(logits, target, **kw):
    """Fast and reference results, all outputs requested."""
    flags = dict(return_grad=True, return_hess=True, return_lse=True)
    return xr.cross_entropy(logits, target, **kw, **flags), ref.cross_entropy(
        logits, target, **kw, **flags)


def check(fast, slow, dtype, *, loss_rtol=None, strict_grad=False):
    loss, grad, hess, lse = fast
    rloss, rgrad, rhess, rlse = slow
    assert np.asarray(loss).dtype == np.dtype(dtype)
    assert grad.dtype == np.dtype(dtype) and hess.dtype == np.dtype(dtype)
    assert_close(loss, rloss, dtype, rtol=loss_rtol, scale_atol=False)
    # A gradient entry is a difference Q·p − q; its natural size is that of Q·p.
    natural = max(np.max(np.abs(rgrad), initial=0), np.max(np.abs(rhess), initial=0))
    assert_close(grad, rgrad, dtype, scale_atol=not strict_grad, scale=natural)
    assert_close(hess, rhess, dtype, scale_atol=not strict_grad)
    assert_close(lse, rlse, dtype, scale_atol=False)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["index", "probs"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("eps", [0.0, 0.15])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_every_parameter_combination(rng, dtype, kind, weighted, eps, reduction):
    n, k = 37, 11
    x = random_logits(rng, (n, k), dtype)
    if kind == "index":
        t = rng.integers(0, k, n)
        t[::5] = -100  # some ignored rows
    else:
        t = random_probs(rng, (n, k), dtype)
    w = rng.random(k) * 2 if weighted else None
    fast, slow = both(x, t, weight=w, label_smoothing=eps, reduction=reduction)
    strict = kind == "index" and eps == 0.0
    check(fast, slow, dtype, loss_rtol=ROW_LOSS_RTOL[np.dtype(dtype)] if reduction == "none"
          else None, strict_grad=strict)


@pytest.mark.parametrize("dtype", DTYPES)
def test_uniform_logits_closed_form(dtype):
    for k in (1, 2, 7, 1000):
        x = np.full((3, k), 0.5, dtype=dtype)
        loss, grad = xr.cross_entropy(x, np.array([0, k - 1, k // 2]), return_grad=True)
        assert abs(float(loss) - np.log(k)) <= 1e-6 * max(np.log(k), 1e-300) + 1e-12
        expected = np.full((3, k), 1.0 / k)
        expected[[0, 1, 2], [0, k - 1, k // 2]] -= 1.0
        assert_close(grad, expected / 3, dtype)


def test_two_class_closed_form():
    # loss = softplus(x_other − x_target); its derivative is σ(x_other − x_target).
    d = np.linspace(-30, 30, 61)
    x = np.stack([np.zeros_like(d), d], axis=1)
    loss, grad = xr.cross_entropy(x, np.zeros(61, dtype=np.int64), reduction="none",
                                  return_grad=True)
    np.testing.assert_allclose(loss, np.logaddexp(0, d), rtol=1e-14)
    sig = 1 / (1 + np.exp(-d))
    np.testing.assert_allclose(grad[:, 1], sig, rtol=1e-14)
    np.testing.assert_allclose(grad[:, 0], -sig, rtol=1e-14)


@pytest.mark.parametrize("dtype", DTYPES)
def test_confident_rows_keep_relative_precision(rng, dtype):
    """Issue 2: float32 per-row losses within 1e-6 of the exact value, even when tiny."""
    for scale in (3.0, 30.0):
        for k in (10, 1000):
            x = random_logits(rng, (400, k), dtype, scale=scale)
            t = np.argmax(x, axis=1)
            t[::3] = rng.integers(0, k, len(t[::3]))
            loss = xr.cross_entropy(x, t, reduction="none")
            exact = ref.cross_entropy(x, t, reduction="none")
            normal = exact >= np.finfo(dtype).tiny
            assert normal.sum() > 200
            rel = np.abs(loss[normal] - exact[normal]) / exact[normal]
            assert rel.max() <= ROW_LOSS_RTOL[np.dtype(dtype)]


def test_large_k_float32_sum_accuracy(rng):
    k = 256_000
    x = random_logits(rng, (3, k), np.float32, scale=1.0)
    t = np.array([0, 5, k - 1])
    loss = xr.cross_entropy(x, t, reduction="none")
    assert_close(loss, ref.cross_entropy(x, t, reduction="none"), np.float32, rtol=1e-6,
                 scale_atol=False)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["index", "probs"])
def test_masked_classes(rng, dtype, kind):
    n, k = 20, 6
    x = random_logits(rng, (n, k), dtype)
    x[:, 2] = -np.inf
    x[3, :4] = -np.inf
    if kind == "index":
        t = rng.integers(0, k, n)
        t[t == 2] = 0
        t[3] = 5
    else:
        t = random_probs(rng, (n, k), dtype)
        t[:, 2] = 0
        t /= t.sum(axis=1, keepdims=True)
        t[3, :4] = 0
    fast, slow = both(x, t, reduction="none")
    check(fast, slow, dtype)
    loss, grad = fast[0], fast[1]
    assert np.all(np.isfinite(loss))
    assert np.all(grad[:, 2] == 0)


@pytest.mark.parametrize("kind", ["index", "probs", "smoothing"])
def test_targeting_a_masked_class_gives_inf(kind):
    x = np.array([[0.0, -np.inf, 1.0]])
    if kind == "index":
        t, eps = np.array([1]), 0.0
    elif kind == "probs":
        t, eps = np.array([[0.5, 0.5, 0.0]]), 0.0
    else:
        t, eps = np.array([0]), 0.1
    loss, grad = xr.cross_entropy(x, t, label_smoothing=eps, return_grad=True)
    assert float(loss) == np.inf
    assert np.all(np.isfinite(grad))
    _, rgrad = ref.cross_entropy(x, t, label_smoothing=eps, return_grad=True)
    np.testing.assert_allclose(grad, rgrad, rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_and_all_masked_rows_are_nan(dtype):
    x = np.array([[np.nan, 0, 1], [-np.inf] * 3, [np.inf, 0, 0], [0, 1, 2]], dtype=dtype)
    t = np.array([0, 0, 1, 2])
    loss, grad, lse = xr.cross_entropy(x, t, reduction="none", return_grad=True,
                                       return_lse=True)
    assert np.all(np.isnan(loss[:3])) and np.isfinite(loss[3])
    assert np.all(np.isnan(grad[:3])) and np.all(np.isfinite(grad[3]))
    assert np.all(np.isnan(lse[:3]))
    assert np.isnan(xr.cross_entropy(x, t))


@pytest.mark.parametrize("dtype", DTYPES)
def test_huge_logits(rng, dtype):
    x = random_logits(rng, (50, 9), dtype, scale=1e4)
    t = rng.integers(0, 9, 50)
    fast, slow = both(x, t, reduction="none")
    check(fast, slow, dtype)
    y = random_probs(rng, (50, 9), dtype)
    fast, slow = both(x, y, reduction="sum", label_smoothing=0.05)
    check(fast, slow, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_one_class(dtype):
    x = np.array([[3.0], [-1e4]], dtype=dtype)
    loss, grad, hess, lse = xr.cross_entropy(x, np.array([0, 0]), reduction="none",
                                             return_grad=True, return_hess=True,
                                             return_lse=True)
    np.testing.assert_array_equal(loss, [0, 0])
    np.testing.assert_array_equal(grad, 0)
    np.testing.assert_array_equal(hess, 0)
    np.testing.assert_array_equal(lse, x[:, 0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_empty_batch(dtype, reduction):
    x = np.zeros((0, 5), dtype=dtype)
    loss, grad = xr.cross_entropy(x, np.zeros(0, dtype=np.int64), reduction=reduction,
                                  return_grad=True)
    assert grad.shape == (0, 5) and grad.dtype == dtype
    if reduction == "mean":
        assert np.isnan(loss)
    elif reduction == "sum":
        assert loss == 0
    else:
        assert loss.shape == (0,)


def test_mean_over_only_ignored_rows_is_nan():
    loss, grad = xr.cross_entropy(np.zeros((3, 4)), np.full(3, -100), return_grad=True)
    assert np.isnan(loss)
    np.testing.assert_array_equal(grad, 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_extra_leading_axes(rng, dtype):
    x = random_logits(rng, (2, 3, 5, 7), dtype)
    t = rng.integers(0, 7, (2, 3, 5))
    fast, slow = both(x, t, reduction="none", weight=rng.random(7))
    assert fast[0].shape == (2, 3, 5) and fast[1].shape == x.shape
    check(fast, slow, dtype)
    fast, slow = both(x, random_probs(rng, x.shape, dtype), reduction="mean")
    check(fast, slow, dtype)


@pytest.mark.parametrize("layout", ["fortran", "strided", "negative", "transposed"])
def test_non_contiguous_inputs(rng, layout):
    base = random_logits(rng, (40, 12), np.float64)
    if layout == "fortran":
        x = np.asfortranarray(base)
    elif layout == "strided":
        x = random_logits(rng, (40, 24), np.float64)[:, ::2]
    elif layout == "negative":
        x = base[::-1, ::-1]
    else:
        x = np.ascontiguousarray(base.T).T
    t = rng.integers(0, 12, 40)[::-1]
    fast, slow = both(x, t)
    check(fast, slow, np.float64)


@pytest.mark.parametrize("label_dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8,
                                         np.uint16, np.uint32, np.uint64, np.intp])
def test_every_integer_label_dtype(rng, label_dtype):
    x = random_logits(rng, (30, 5), np.float32)
    t = rng.integers(0, 5, 30).astype(label_dtype)
    loss = xr.cross_entropy(x, t, reduction="none")
    assert_close(loss, ref.cross_entropy(x, t.astype(np.int64), reduction="none"),
                 np.float32, rtol=1e-6)


def test_ignore_index_inside_class_range(rng):
    x = random_logits(rng, (10, 4), np.float64)
    t = np.array([0, 1, 2, 3, 1, 1, 0, 2, 3, 1])
    fast, slow = both(x, t, ignore_index=1, label_smoothing=0.2, weight=[1, 2, 3, 4])
    check(fast, slow, np.float64)
    kept = t != 1
    direct = xr.cross_entropy(x[kept], t[kept], label_smoothing=0.2, weight=[1, 2, 3, 4])
    np.testing.assert_allclose(fast[0], direct, rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_out_separate_and_in_place(rng, dtype):
    x = random_logits(rng, (64, 33), dtype)
    t = rng.integers(0, 33, 64)
    loss, grad = xr.cross_entropy(x, t, return_grad=True)
    out = np.full_like(x, 7.0)
    loss2, g2 = xr.cross_entropy(x, t, return_grad=True, out=out)
    assert g2 is out
    np.testing.assert_array_equal(out, grad)
    assert loss2 == loss
    x2 = x.copy()
    loss3, g3, h3 = xr.cross_entropy(x2, t, return_grad=True, return_hess=True, out=x2)
    assert g3 is x2
    np.testing.assert_array_equal(x2, grad)
    assert loss3 == loss
    _, h = xr.cross_entropy(x, t, return_hess=True)
    np.testing.assert_array_equal(h3, h)


def test_in_place_with_leading_axes_and_probs(rng):
    x = random_logits(rng, (3, 4, 9), np.float64)
    y = random_probs(rng, x.shape, np.float64)
    _, rgrad = ref.cross_entropy(x, y, return_grad=True, label_smoothing=0.1)
    xr.cross_entropy(x, y, return_grad=True, label_smoothing=0.1, out=x)
    assert_close(x, rgrad, np.float64)


@pytest.mark.parametrize("kind", ["index", "probs"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gradient_and_hessian_by_finite_differences(rng, kind, reduction):
    n, k = 6, 5
    x = rng.standard_normal((n, k))
    t = rng.integers(0, k, n) if kind == "index" else random_probs(rng, (n, k), np.float64)
    kw = dict(weight=rng.random(k) + 0.5, label_smoothing=0.1, reduction=reduction)

    def total(z):
        return float(np.sum(xr.cross_entropy(z, t, **kw)))

    def grad_total(z):
        return xr.cross_entropy(z, t, return_grad=True, **kw)[1]

    _, grad, hess = xr.cross_entropy(x, t, return_grad=True, return_hess=True, **kw)
    h = 1e-6
    for i, j in itertools.product(range(n), range(k)):
        e = np.zeros_like(x)
        e[i, j] = h
        fd = (total(x + e) - total(x - e)) / (2 * h)
        assert abs(fd - grad[i, j]) < 1e-7
        fd2 = (grad_total(x + e)[i, j] - grad_total(x - e)[i, j]) / (2 * h)
        assert abs(fd2 - hess[i, j]) < 1e-6


def test_label_smoothing_matches_pytorch_formula(rng):
    """PyTorch: (1−ε)·nll + (ε/K)·smooth, both divided by Σ w[t] over kept rows."""
    n, k, eps = 12, 5, 0.3
    x = rng.standard_normal((n, k))
    t = rng.integers(0, k, n)
    t[[1, 4]] = -100
    w = rng.random(k) + 0.1
    logp = ref.log_softmax(x)
    kept = t != -100
    tk = t[kept]
    nll = -(w[tk] * logp[kept, tk]).sum() / w[tk].sum()
    smooth = -(logp[kept] * w).sum() / w[tk].sum()
    expected = (1 - eps) * nll + eps / k * smooth
    got = xr.cross_entropy(x, t, weight=w, label_smoothing=eps)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    # Probability targets: smoothing mixes the target, mean divides by the row count.
    y = random_probs(rng, (n, k), np.float64)
    ys = y * (1 - eps) + eps / k
    expected = -(ys * w * logp).sum() / n
    got = xr.cross_entropy(x, y, weight=w, label_smoothing=eps)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_lists_are_accepted():
    loss = xr.cross_entropy([[1.0, 2.0, 3.0]], [2])
    np.testing.assert_allclose(loss, np.log(np.exp([1, 2, 3]).sum()) - 3, rtol=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    dtype=st.sampled_from(DTYPES),
    n=st.integers(0, 9),
    k=st.integers(1, 40),
    kind=st.sampled_from(["index", "probs"]),
    eps=st.sampled_from([0.0, 0.1, 1.0]),
    reduction=st.sampled_from(["mean", "sum", "none"]),
)
def test_property_against_reference(data, dtype, n, k, kind, eps, reduction):
    elems = st.floats(-50, 50, width=32)
    x = data.draw(hnp.arrays(dtype, (n, k), elements=elems))
    if kind == "index":
        t = data.draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, k - 1)))
    else:
        t = data.draw(hnp.arrays(dtype, (n, k), elements=st.floats(0, 1, width=32)))
    w = data.draw(st.none() | hnp.arrays(np.float64, (k,), elements=st.floats(0, 3)))
    fast, slow = both(x, t, weight=w, label_smoothing=eps, reduction=reduction)
    check(fast, slow, dtype)


@pytest.mark.parametrize("kind", ["index", "probs"])
@pytest.mark.parametrize("k", [3, 10, 1000])
def test_float16_logits(rng, kind, k):
    """float16 in, float16 out, computed in float32/float64 inside: results are the float64
    reference of the float16 inputs, rounded once (half precision: 2^-11 relative)."""
    x = random_logits(rng, (64, k), np.float16)
    x[0, 1] = -np.inf
    t = rng.integers(0, k, 64) if kind == "index" else random_probs(rng, (64, k), np.float16)
    if kind == "index":
        t[t == 1] = 0
    else:
        t[0, 1] = 0
    fast, slow = both(x, t, reduction="none", label_smoothing=0.0)
    for a, b in zip(fast, slow):
        assert a.dtype == np.float16
        natural = max(np.max(np.abs(slow[1])), np.max(np.abs(slow[2])))
        assert_close(a, b, np.float32, rtol=2e-3, scale=natural)
    loss = xr.cross_entropy(x, t)
    # A reduced loss of 16-bit logits is float32 (issue 10): ~7 digits, not float16's 3.
    assert loss.dtype == np.float32
    assert abs(float(loss) / float(ref.cross_entropy(x, t)) - 1) < 1e-6
    out = x.copy()
    xr.cross_entropy(out, t, return_grad=True, out=out)
    np.testing.assert_array_equal(out, xr.cross_entropy(x, t, return_grad=True)[1])


def test_terms_below_float32_range_still_count_in_a_tiny_loss():
    """A confident row whose loss, e^-82.68 ≈ 1.24e-36, also has terms near e^-92 (below
    float32's normal range): the kernels flush those, so such rows are re-summed exactly."""
    row = np.array([110.82898, -30.838142, -42.49684, -15.896395, -39.614994, -19.878653,
                    -24.909199, 28.148752, 18.853891, -16.467024], dtype=np.float32)
    for x in (row[None], np.tile(row, (8, 1)), np.tile(row, (16, 1))):  # one row, blocks
        t = np.zeros(len(x), dtype=np.int64)
        loss = xr.cross_entropy(x, t, reduction="none")
        exact = ref.cross_entropy(x, t, reduction="none")
        np.testing.assert_allclose(loss, exact, rtol=1e-6)


@pytest.mark.parametrize("threads", [1, 2])
def test_loss_only_rows_where_shifting_by_the_maximum_rounds_stay_exact(threads):
    # The loss-only float32 kernel of rows of K > 32 leaves the rounding of x − max in when
    # its bound says the loss cannot feel it, and sums exactly otherwise; rows of K ≤ 32
    # (one row per lane) are always summed exactly, and are checked here too. These rows are built so that it
    # can: a maximum with low bits (0.3, 10.1), the other mass far below it (|x − m| of
    # 20 to 80, where that rounding is up to 4e-6 relative per term), and the target on
    # the maximum, so the loss is the tiny non-maximal mass itself.
    # The worst case: every x_j a multiple of u = 2^-18 in [−64, −32) and the maximum
    # 3/8 of a u off one, so every x_j − m rounds the same way, by 3u/8 (1.4e-6 relative
    # in each exponential).
    rng = np.random.default_rng(7)
    u = 2.0**-18
    rows = []
    for k in (10, 32, 40, 1000, 4099):
        for top in (0.3, 10.1, -7.7, 1234.567):
            far = top - rng.uniform(20.0, 80.0, size=k - 1)
            rows.append(np.concatenate([[top], far]).astype(np.float32))
            mixed = top - rng.uniform(0.0, 3.0, size=k - 1)
            rows.append(np.concatenate([[top], mixed]).astype(np.float32))
        for top in (0.3, -7.7):
            m = (np.floor(top / u) + 0.375) * u
            lo, hi = max(-64.0, m - 64.0) + 1.0, min(-32.0, m - 32.0) - 1.0
            far = rng.uniform(lo, hi, size=k - 1)
            row = np.concatenate([[m], far]).astype(np.float32)
            assert row[0] == m and np.all((row[1:] >= -64) & (row[1:] < -32))
            rows.append(row)
    prev = xr.get_num_threads()
    xr.set_num_threads(threads)
    try:
        for row in rows:
            x = np.stack([row, row[::-1]])
            t = np.array([0, len(row) - 1])
            got = xr.cross_entropy(x, t, reduction="none")
            want = ref.cross_entropy(x.astype(np.float64), t, reduction="none")
            np.testing.assert_allclose(got, want, rtol=ROW_LOSS_RTOL[np.dtype(np.float32)], atol=0)
    finally:
        xr.set_num_threads(prev)


def _half_dtypes():
    kinds = [np.float16]
    try:
        import ml_dtypes
        kinds.append(ml_dtypes.bfloat16)
    except ImportError:  # pragma: no cover
        pass
    return kinds


@pytest.mark.parametrize("dtype", _half_dtypes(), ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("k", [33, 1000, 4099])
@pytest.mark.parametrize("threads", [1, 2])
def test_long_16_bit_rows_are_the_float32_rows_of_their_widened_logits(dtype, k, threads):
    """Rows of K > 32 in float16/bfloat16 are read in registers (no float32 copy of the
    logits): their gradients and Hessians are exactly the float32 kernels' on the widened
    logits, rounded once, and their losses and logsumexps the same values to a 16-bit ulp,
    for index and probability targets, smoothing, ignored and masked rows, a z-loss (rows
    whose lse is near 0 take the exact re-sum) and in place."""
    rng = np.random.default_rng(k)
    n = max(40, 140_000 // k + 1)  # enough elements to run on both threads
    x = (rng.standard_normal((n, k)) * 3).astype(dtype)
    x[3, :5] = -np.inf
    x[5] = np.log(np.full(k, 1.0 / k))  # log-probabilities: lse near 0
    x[7] = x[7, 0]  # all ties
    t = rng.integers(0, k, n)
    t[3], t[9] = 7, -100
    probs = rng.random((n, k)).astype(np.float32)
    probs /= probs.sum(axis=1, keepdims=True)
    probs[3, :5] = 0
    x32 = x.astype(np.float32)
    prev = xr.get_num_threads()
    xr.set_num_threads(threads)
    try:
        for target, kw in [(t, {}), (t, dict(label_smoothing=0.1)), (t, dict(z_loss=1e-2)),
                           (probs, {}), (t, dict(return_hess=True))]:
            kw = dict(kw, reduction="none", return_grad=True, return_lse=True)
            got = xr.cross_entropy(x, target.astype(dtype) if target is probs else target, **kw)
            want = xr.cross_entropy(x32, target.astype(dtype).astype(np.float32)
                                    if target is probs else target, **kw)
            losses, grads, lses = got[0], got[1:-1], got[-1]
            for g, w in zip(grads, want[1:-1]):
                assert g.dtype == dtype
                np.testing.assert_array_equal(g, w.astype(dtype))
            for a, b in ((losses, want[0]), (lses, want[-1])):
                a, b = a.astype(np.float64), b.astype(np.float64)
                fin = np.isfinite(b)  # (smoothing onto a masked class: an infinite loss)
                np.testing.assert_array_equal(a[~fin], b[~fin])
                # Rounded once from float64 against float32's rounding of the same value.
                half_ulp = np.abs(b[fin]) * 2.0 ** -(8 if dtype is not np.float16 else 11)
                assert (np.abs(a[fin] - b[fin]) <= half_ulp * 1.01 + 1e-30).all(), kw
            out = x.copy()
            xr.cross_entropy(out, t, return_grad=True, out=out)
            np.testing.assert_array_equal(out, xr.cross_entropy(x, t, return_grad=True)[1])
    finally:
        xr.set_num_threads(prev)
