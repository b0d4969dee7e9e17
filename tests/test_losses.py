"""The cross-entropy variants (focal, sigmoid focal, poly-1, generalized CE, energy margin)
against their float64 references in ``xent_rs.reference``, finite differences and closed
forms; bad parameters; threads; ``out=``."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ROW_LOSS_RTOL, assert_close, random_logits, random_probs

import xent_rs as xr
from xent_rs import reference as ref

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
DTYPES = [np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16), BF16]
# A 16-bit result is rounded once on output: its tolerance is the dtype's rounding.
TOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12, np.dtype(np.float16): 2e-3,
       BF16: 1e-2}

# (name, keyword arguments) of every softmax-family variant checked.
FAMILY = [
    ("focal_loss", {}),
    ("focal_loss", {"gamma": 0.5, "alpha": 0.25}),
    ("focal_loss", {"gamma": 3.0, "alpha": "per-class"}),
    ("poly1_cross_entropy", {}),
    ("poly1_cross_entropy", {"epsilon": -1.0}),
    ("generalized_cross_entropy", {}),
    ("generalized_cross_entropy", {"q": 1.0}),
]
SMOOTHABLE = {"focal_loss", "poly1_cross_entropy"}


# The smallest positive value of each dtype: a result that underflows there is compared
# with that absolute slack.
SMALLEST = {np.dtype(np.float32): 2.0**-149, np.dtype(np.float64): 5e-324,
            np.dtype(np.float16): 2.0**-24, BF16: 2.0**-133}


def check(actual, expected, dtype, *, scale_atol=True, rtol=None):
    """``actual`` agrees with the float64 ``expected`` rounded to ``dtype``, within the
    dtype's tolerance (relative, plus ``rtol·max|expected|`` with ``scale_atol``)."""
    dtype = np.dtype(dtype)
    rtol = TOL[dtype] if rtol is None else rtol
    with np.errstate(over="ignore"):
        expected = np.asarray(expected, np.float64).astype(dtype).astype(np.float64)
    actual = np.asarray(actual).astype(np.float64)
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    inf = np.isinf(expected)
    np.testing.assert_array_equal(actual[inf], expected[inf])
    finite = np.isfinite(expected)
    if not finite.any():
        return
    scale = np.max(np.abs(expected[finite])) if scale_atol else 0.0
    np.testing.assert_allclose(actual[finite], expected[finite], rtol=rtol,
                               atol=max(rtol * scale, 2 * SMALLEST[dtype]))


def _reduced_dtype(dtype):
    return np.dtype(np.float32) if dtype.itemsize == 2 else dtype


def _kwargs(kw, k):
    kw = dict(kw)
    if kw.get("alpha") == "per-class":
        kw["alpha"] = np.linspace(0.1, 2.0, k)
    return kw


def _ids(case):
    return case[0] + "-" + ",".join(f"{k}={v}" for k, v in case[1].items())


def _labels(rng, n, k, ignore=False):
    t = rng.integers(0, k, n)
    if ignore and n:
        t[::3] = -100
    return t


def _as_f64(x):
    return np.asarray(x).astype(np.float64)


@pytest.mark.parametrize("case", FAMILY, ids=_ids)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("k", [1, 2, 10])
@pytest.mark.parametrize("scale", [3.0, 30.0, 1e4])
def test_family_matches_reference(rng, case, dtype, k, scale):
    name, kw = case
    kw = _kwargs(kw, k)
    x = random_logits(rng, (37, k), np.float64, scale).astype(dtype)
    t = _labels(rng, 37, k, ignore=True)
    fast, slow = getattr(xr, name), getattr(ref, name)
    for reduction in ("mean", "sum", "none"):
        loss, grad = fast(x, t, reduction=reduction, return_grad=True, **kw)
        want, want_g = slow(_as_f64(x), t, reduction=reduction, return_grad=True, **kw)
        if reduction == "none":
            assert loss.dtype == dtype and loss.shape == (37,)
            check(loss, want, dtype)
        else:
            assert np.asarray(loss).dtype == (np.float32 if dtype.itemsize == 2 else dtype)
            check(loss, want, _reduced_dtype(dtype), rtol=TOL[dtype])
        assert grad.dtype == dtype and grad.shape == x.shape
        check(grad, want_g, dtype)


@pytest.mark.parametrize("case", FAMILY, ids=_ids)
@pytest.mark.parametrize("scale", [3.0, 30.0, 1e4])
def test_float32_row_losses_within_1e_6_relative(rng, case, scale):
    name, kw = case
    for k in (2, 10, 1000):
        kw_k = _kwargs(kw, k)
        x = random_logits(rng, (200, k), np.float32, scale)
        # Confident, correct rows too: the target is often the maximum.
        t = np.where(rng.random(200) < 0.5, np.argmax(x, axis=1), _labels(rng, 200, k))
        got = getattr(xr, name)(x, t, reduction="none", **kw_k)
        want = getattr(ref, name)(_as_f64(x), t, reduction="none", **kw_k)
        assert_close(got, want, np.float32, rtol=ROW_LOSS_RTOL[np.dtype(np.float32)],
                     scale_atol=False)


@pytest.mark.parametrize("case", FAMILY, ids=_ids)
def test_family_gradient_is_the_finite_difference_of_the_reference(rng, case):
    name, kw = case
    k = 5
    kw = _kwargs(kw, k)
    x = random_logits(rng, (4, k), np.float64, 2.0)
    t = _labels(rng, 4, k)
    _, g = getattr(xr, name)(x, t, reduction="sum", return_grad=True, **kw)
    h = 1e-6
    fd = np.empty_like(x)
    for i in np.ndindex(x.shape):
        a, b = x.copy(), x.copy()
        a[i] += h
        b[i] -= h
        slow = getattr(ref, name)
        fd[i] = (slow(a, t, reduction="sum", **kw) - slow(b, t, reduction="sum", **kw)) / (2 * h)
    np.testing.assert_allclose(g, fd, atol=1e-8)


@pytest.mark.parametrize("name", sorted(SMOOTHABLE))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_label_smoothing_and_probability_targets(rng, name, dtype):
    x = random_logits(rng, (30, 7), dtype, 4.0)
    t = _labels(rng, 30, 7, ignore=True)
    y = random_probs(rng, (30, 7), np.float64)
    fast, slow = getattr(xr, name), getattr(ref, name)
    kw = {"alpha": np.linspace(0.5, 1.5, 7)} if name == "focal_loss" else {"epsilon": 1.5}
    for target, eps in ((t, 0.1), (y, 0.0), (y, 0.2)):
        for reduction in ("mean", "none"):
            loss, grad = fast(x, target, label_smoothing=eps, reduction=reduction,
                              return_grad=True, **kw)
            want, want_g = slow(_as_f64(x), target, label_smoothing=eps, reduction=reduction,
                                return_grad=True, **kw)
            assert_close(loss, want, dtype)
            assert_close(grad, want_g, dtype)
    # The general form (smoothing) agrees with the hard-target one at the limit.
    a = fast(x, t, label_smoothing=1e-300, reduction="none", **kw)
    b = fast(x, t, reduction="none", **kw)
    assert_close(a, b, dtype)


def test_special_cases_are_cross_entropy_and_closed_forms(rng):
    x = random_logits(rng, (50, 6), np.float64, 3.0)
    t = _labels(rng, 50, 6, ignore=True)
    ce, ce_g = xr.cross_entropy(x, t, return_grad=True)
    for fl in (xr.focal_loss(x, t, gamma=0.0, return_grad=True),
               xr.poly1_cross_entropy(x, t, epsilon=0.0, return_grad=True)):
        np.testing.assert_allclose(fl[0], ce, rtol=1e-14)
        np.testing.assert_allclose(fl[1], ce_g, rtol=1e-13, atol=1e-16)
    keep = t != -100
    p = np.exp(x - x.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    pt = p[np.arange(50), np.where(keep, t, 0)]
    np.testing.assert_allclose(xr.generalized_cross_entropy(x, t, q=1.0, reduction="none"),
                               np.where(keep, 1 - pt, 0), rtol=1e-13)
    np.testing.assert_allclose(xr.focal_loss(x, t, gamma=2.0, alpha=0.25, reduction="none"),
                               np.where(keep, -0.25 * (1 - pt) ** 2 * np.log(pt), 0),
                               rtol=1e-12)
    # GCE → CE as q → 0.
    np.testing.assert_allclose(xr.generalized_cross_entropy(x, t, q=1e-9), ce, rtol=1e-7)


def test_confident_rows_are_exact_where_subtraction_would_give_zero():
    # 1 − p_t = 2e-9 is below float32's resolution of 1: a subtraction would give 0.
    x = np.array([[20.0, 0.0, -3.0]], dtype=np.float32)
    rest = np.exp(-20.0) + np.exp(-23.0)
    t = np.array([0])
    np.testing.assert_allclose(xr.focal_loss(x, t, reduction="none")[0],
                               (rest / (1 + rest)) ** 2 * np.log1p(rest), rtol=1e-6)
    np.testing.assert_allclose(xr.poly1_cross_entropy(x, t, reduction="none")[0],
                               np.log1p(rest) + 2 * rest / (1 + rest), rtol=1e-6)
    np.testing.assert_allclose(xr.generalized_cross_entropy(x, t, q=0.5, reduction="none")[0],
                               -np.expm1(-0.5 * np.log1p(rest)) / 0.5, rtol=1e-6)
    _, g = xr.focal_loss(x, t, reduction="sum", return_grad=True)
    assert g[0, 0] < 0 and np.isfinite(g).all()


@pytest.mark.parametrize("case", FAMILY, ids=_ids)
def test_masked_classes_cost_nothing_unless_targeted(case):
    name, kw = case
    kw = _kwargs(kw, 4)
    x = np.array([[1.0, -np.inf, 0.5, -np.inf], [0.0, 2.0, -np.inf, 1.0]], dtype=np.float32)
    t = np.array([0, 1])
    loss, g = getattr(xr, name)(x, t, reduction="none", return_grad=True, **kw)
    want, want_g = getattr(ref, name)(_as_f64(x), t, reduction="none", return_grad=True, **kw)
    assert np.isfinite(loss).all()
    assert_close(loss, want, np.float32)
    assert_close(g, want_g, np.float32)
    assert g[0, 1] == 0 and g[0, 3] == 0 and g[1, 2] == 0


@pytest.mark.parametrize("case", FAMILY, ids=_ids)
def test_many_classes_few_rows(rng, case):
    name, kw = case
    k = 32000
    kw = _kwargs(kw, k)
    x = random_logits(rng, (3, k), np.float32, 5.0)
    t = np.array([5, int(np.argmax(x[1])), 31999])
    loss, g = getattr(xr, name)(x, t, reduction="none", return_grad=True, **kw)
    want, want_g = getattr(ref, name)(_as_f64(x), t, reduction="none", return_grad=True, **kw)
    assert_close(loss, want, np.float32, rtol=1e-6, scale_atol=False)
    assert_close(g, want_g, np.float32)


@pytest.mark.parametrize("case", FAMILY, ids=_ids)
def test_empty_batches_and_all_ignored(case):
    name, kw = case
    kw = _kwargs(kw, 3)
    fn = getattr(xr, name)
    x = np.zeros((0, 3), dtype=np.float32)
    t = np.zeros(0, dtype=np.int64)
    assert np.isnan(fn(x, t, **kw))
    assert fn(x, t, reduction="sum", **kw) == 0
    loss, g = fn(x, t, reduction="none", return_grad=True, **kw)
    assert loss.shape == (0,) and g.shape == (0, 3)
    x = np.ones((2, 3), dtype=np.float32)
    loss, g = fn(x, np.array([-100, -100]), return_grad=True, **kw)
    assert np.isnan(loss) and (g == 0).all()


@pytest.mark.parametrize("case", FAMILY, ids=_ids)
def test_batch_shapes_and_out(rng, case):
    name, kw = case
    kw = _kwargs(kw, 4)
    fn = getattr(xr, name)
    x = random_logits(rng, (2, 3, 4), np.float32)
    t = _labels(rng, 6, 4).reshape(2, 3)
    loss, g = fn(x, t, reduction="none", return_grad=True, **kw)
    assert loss.shape == (2, 3) and g.shape == x.shape
    buf = np.empty_like(x)
    _, g2 = fn(x, t, return_grad=True, out=buf, **kw)
    assert g2 is buf
    y = x.copy()
    _, g3 = fn(y, t, return_grad=True, out=y, **kw)
    assert g3 is y
    np.testing.assert_array_equal(g3, g2)
    _, g4 = fn(x, t, return_grad=True, **kw)
    np.testing.assert_array_equal(g4, g2)
    with pytest.raises(ValueError, match="^out"):
        fn(x, t, out=buf, **kw)
    with pytest.raises(ValueError, match="^out"):
        fn(x, t, return_grad=True, out=np.empty((2, 3, 4)), **kw)


@pytest.mark.parametrize("case", FAMILY[:1] + FAMILY[3:4] + FAMILY[5:6], ids=_ids)
def test_results_do_not_depend_on_the_thread_count(rng, case, restore_threads):
    name, kw = case
    x = random_logits(rng, (3000, 100), np.float32)
    t = _labels(rng, 3000, 100, ignore=True)
    fn = getattr(xr, name)
    smoothing = [0.0] if name == "generalized_cross_entropy" else [0.0, 0.1]
    for eps in smoothing:
        kw_eps = dict(kw, label_smoothing=eps) if eps else kw
        runs = []
        for n in (1, 2, 3):
            xr.set_num_threads(n)
            runs.append(fn(x, t, return_grad=True, **kw_eps))
        for loss, grad in runs[1:]:
            assert loss.tobytes() == runs[0][0].tobytes()
            assert grad.tobytes() == runs[0][1].tobytes()


@pytest.mark.parametrize("call, arg", [
    (lambda x, t: xr.focal_loss(x, t, gamma=-0.1), "gamma"),
    (lambda x, t: xr.focal_loss(x, t, gamma=np.nan), "gamma"),
    (lambda x, t: xr.focal_loss(x, t, alpha=-1.0), "alpha"),
    (lambda x, t: xr.focal_loss(x, t, alpha=[1.0, 2.0]), "alpha"),
    (lambda x, t: xr.focal_loss(x, t, alpha=[1.0, np.inf, 1.0]), "alpha"),
    (lambda x, t: xr.focal_loss(x, t, label_smoothing=1.5), "label_smoothing"),
    (lambda x, t: xr.focal_loss(x, t, reduction="avg"), "reduction"),
    (lambda x, t: xr.focal_loss(x, np.array([0, 3]), ), "target"),
    (lambda x, t: xr.focal_loss(x, np.array([0, 1, 2])), "target"),
    (lambda x, t: xr.poly1_cross_entropy(x, t, epsilon=np.inf), "epsilon"),
    (lambda x, t: xr.generalized_cross_entropy(x, t, q=0.0), "q"),
    (lambda x, t: xr.generalized_cross_entropy(x, t, q=1.5), "q"),
    (lambda x, t: xr.generalized_cross_entropy(x, t, q=-0.5), "q"),
    (lambda x, t: xr.generalized_cross_entropy(x, np.full((2, 3), 1 / 3)), "target"),
    (lambda x, t: xr.sigmoid_focal_loss(x, np.ones_like(x), alpha=1.5), "alpha"),
    (lambda x, t: xr.sigmoid_focal_loss(x, np.ones_like(x), alpha=-0.5), "alpha"),
    (lambda x, t: xr.sigmoid_focal_loss(x, np.ones_like(x), gamma=-1), "gamma"),
    (lambda x, t: xr.sigmoid_focal_loss(x, np.full_like(x, 2.0)), "target"),
    (lambda x, t: xr.sigmoid_focal_loss(x, np.ones(3)), "target"),
    (lambda x, t: xr.energy_margin_loss(x, x, temperature=0.0), "temperature"),
    (lambda x, t: xr.energy_margin_loss(x, x, temperature=-1.0), "temperature"),
    (lambda x, t: xr.energy_margin_loss(x, x, m_in=np.nan), "m_in"),
    (lambda x, t: xr.energy_margin_loss(x, x, m_out=np.inf), "m_out"),
    (lambda x, t: xr.energy_margin_loss(x, x, m_in=0.0, m_out=-1.0), "m_in"),
    (lambda x, t: xr.energy_margin_loss(np.zeros((2, 0)), x), "logits_in"),
])
def test_bad_parameters_raise_value_error_naming_them(call, arg):
    x = np.zeros((2, 3), dtype=np.float32)
    t = np.array([0, 2])
    with pytest.raises(ValueError, match=f"^{arg}"):
        call(x, t)


def test_bad_types_raise_type_error_naming_them():
    x = np.zeros((2, 3), dtype=np.float32)
    t = np.array([0, 2])
    with pytest.raises(TypeError, match="^gamma"):
        xr.focal_loss(x, t, gamma="2")
    with pytest.raises(TypeError, match="^logits"):
        xr.poly1_cross_entropy(x.astype(np.int32), t)
    with pytest.raises(TypeError, match="^return_grad"):
        xr.generalized_cross_entropy(x, t, return_grad=1)
    with pytest.raises(TypeError, match="^logits_out"):
        xr.energy_margin_loss(x, None)


# ----------------------------------------------------------------------- sigmoid focal --

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("scale", [3.0, 30.0, 1e4])
@pytest.mark.parametrize("alpha, gamma", [(0.25, 2.0), (-1.0, 0.5), (0.7, 0.0)])
def test_sigmoid_focal_matches_reference(rng, dtype, scale, alpha, gamma):
    x = random_logits(rng, (20, 7), np.float64, scale).astype(dtype)
    y = np.where(rng.random((20, 7)) < 0.5, 1.0, 0.0)
    y[0] = rng.random(7)  # soft targets too
    for reduction in ("none", "mean", "sum"):
        loss, g = xr.sigmoid_focal_loss(x, y, alpha=alpha, gamma=gamma, reduction=reduction,
                                        return_grad=True)
        want, want_g = ref.sigmoid_focal_loss(_as_f64(x), y, alpha=alpha, gamma=gamma,
                                              reduction=reduction, return_grad=True)
        assert g.dtype == dtype
        if reduction == "none":
            assert loss.dtype == dtype
            rtol = ROW_LOSS_RTOL.get(dtype, TOL[dtype])
            check(loss, want, dtype, rtol=rtol, scale_atol=False)
        else:
            check(loss, want, _reduced_dtype(dtype), rtol=TOL[dtype])
        check(g, want_g, dtype)


def test_sigmoid_focal_tails_and_finite_differences(rng):
    # |z| > 17: torchvision's sigmoid-then-BCE rounds 1 − p_t to 0 in float32.
    z = np.array([20.0, 25.0, -25.0, 28.0], dtype=np.float32)
    y = np.array([1.0, 1.0, 0.0, 1.0])
    got = xr.sigmoid_focal_loss(z, y, alpha=-1, gamma=2.0)
    e = np.exp(-np.abs(z.astype(np.float64)))
    want = np.log1p(e) * (e / (1 + e)) ** 2
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert (got > 0).all()
    x = random_logits(rng, (3, 4), np.float64, 2.0)
    y = rng.random((3, 4))
    _, g = xr.sigmoid_focal_loss(x, y, reduction="sum", return_grad=True)
    h = 1e-6
    fd = np.empty_like(x)
    for i in np.ndindex(x.shape):
        a, b = x.copy(), x.copy()
        a[i] += h
        b[i] -= h
        fd[i] = (ref.sigmoid_focal_loss(a, y, reduction="sum")
                 - ref.sigmoid_focal_loss(b, y, reduction="sum")) / (2 * h)
    np.testing.assert_allclose(g, fd, atol=1e-8)


def test_sigmoid_focal_out_in_place_and_empty(rng):
    x = random_logits(rng, (5, 3), np.float32)
    y = (rng.random((5, 3)) < 0.3).astype(np.float32)
    _, g = xr.sigmoid_focal_loss(x, y, reduction="mean", return_grad=True)
    z = x.copy()
    _, g2 = xr.sigmoid_focal_loss(z, y, reduction="mean", return_grad=True, out=z)
    assert g2 is z
    np.testing.assert_array_equal(g, g2)
    e = np.zeros((0, 3), dtype=np.float32)
    assert np.isnan(xr.sigmoid_focal_loss(e, e, reduction="mean"))
    assert xr.sigmoid_focal_loss(e, e).shape == (0, 3)


# ----------------------------------------------------------------------- energy margin --

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("temperature", [1.0, 0.5, 3.0])
@pytest.mark.parametrize("k", [1, 2, 10])
def test_energy_margin_matches_reference(rng, dtype, temperature, k):
    x_in = random_logits(rng, (40, k), np.float64, 6.0).astype(dtype)
    x_out = random_logits(rng, (25, k), np.float64, 6.0).astype(dtype)
    kw = {"m_in": -8.0, "m_out": -2.0, "temperature": temperature}
    loss, g_in, g_out = xr.energy_margin_loss(x_in, x_out, return_grad=True, **kw)
    want, w_in, w_out = ref.energy_margin_loss(_as_f64(x_in), _as_f64(x_out),
                                               return_grad=True, **kw)
    assert want > 0 and (w_in != 0).any() and (w_out != 0).any()
    assert g_in.dtype == dtype and g_out.dtype == dtype
    check(loss, want, _reduced_dtype(dtype), rtol=TOL[dtype])
    check(g_in, w_in, dtype)
    check(g_out, w_out, dtype)


@pytest.mark.parametrize("c0", [-1.0, -2.5])
def test_energy_margin_rows_near_their_margin_keep_float32_precision(c0):
    """In-distribution rows all 0.1 above ``m_in`` (outliers far above ``m_out``: loss 0),
    each row a maximum and 63 equal logits ``c0 ± 0.01`` below it, so the float32
    exponentials' own errors have one sign: the loss ``0.01`` per row carries
    ``2δ/0.1`` for an error ``δ`` in ``log S``. Checked against ``log S`` instead of the
    gap, the cheaper kernel's sums left the mean 1.4e-6 to 1.7e-6 off; summed exactly,
    3e-7 at most."""
    k = 64
    gaps = np.linspace(c0 - 0.01, c0 + 0.01, 300)
    m = 7.25 - np.log1p((k - 1) * np.exp(gaps))          # every row's energy -7.25
    x = np.concatenate([m[:, None], np.repeat((m + gaps)[:, None], k - 1, axis=1)],
                       axis=1).astype(np.float32)
    xo = x - np.float32(10.0)
    e = float(-np.logaddexp.reduce(x.astype(np.float64), axis=1).mean())
    kw = dict(m_in=e - 0.1, m_out=e + 0.1, return_grad=True)
    fast = xr.energy_margin_loss(x, xo, **kw)
    slow = ref.energy_margin_loss(x.astype(np.float64), xo.astype(np.float64), **kw)
    assert abs(float(fast[0]) / slow[0] - 1) < 1e-6
    for g, rg in zip(fast[1:], slow[1:]):
        assert_close(g, rg, np.float32)


def test_energy_margin_closed_form_and_finite_differences(rng):
    # E = −T log(K e^{c/T}) = −c − T log K for a constant row c.
    x_in = np.full((1, 4), 2.0)
    x_out = np.full((1, 4), -1.0)
    e_in, e_out = -2.0 - 0.5 * np.log(4), 1.0 - 0.5 * np.log(4)
    loss = xr.energy_margin_loss(x_in, x_out, m_in=-5.0, m_out=3.0, temperature=0.5)
    np.testing.assert_allclose(loss, (e_in + 5) ** 2 + (3 - e_out) ** 2, rtol=1e-14)
    x_in = random_logits(rng, (3, 4), np.float64, 4.0)
    x_out = random_logits(rng, (2, 4), np.float64, 4.0)
    kw = {"m_in": -6.0, "m_out": -1.0, "temperature": 0.8}
    _, g_in, g_out = xr.energy_margin_loss(x_in, x_out, return_grad=True, **kw)
    h = 1e-6
    for x, g, which in ((x_in, g_in, 0), (x_out, g_out, 1)):
        fd = np.empty_like(x)
        for i in np.ndindex(x.shape):
            a, b = x.copy(), x.copy()
            a[i] += h
            b[i] -= h
            args_a = (a, x_out) if which == 0 else (x_in, a)
            args_b = (b, x_out) if which == 0 else (x_in, b)
            fd[i] = (ref.energy_margin_loss(*args_a, **kw)
                     - ref.energy_margin_loss(*args_b, **kw)) / (2 * h)
        np.testing.assert_allclose(g, fd, atol=1e-7)


def test_energy_margin_large_logits_and_empty(rng, restore_threads):
    x_in = random_logits(rng, (10, 5), np.float32, 1e4)
    x_out = random_logits(rng, (10, 5), np.float32, 1e4)
    loss = xr.energy_margin_loss(x_in, x_out, m_in=-1e4, m_out=-5e3)
    want = ref.energy_margin_loss(_as_f64(x_in), _as_f64(x_out), m_in=-1e4, m_out=-5e3)
    assert np.isfinite(loss)
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    assert np.isnan(xr.energy_margin_loss(np.zeros((0, 5)), x_out))
    _, g_in, g_out = xr.energy_margin_loss(np.zeros((0, 5)), x_out, return_grad=True)
    assert g_in.shape == (0, 5) and np.isfinite(g_out).all()
    x = random_logits(rng, (3000, 64), np.float32)
    runs = []
    for n in (1, 3):
        xr.set_num_threads(n)
        runs.append(xr.energy_margin_loss(x, x[::-1].copy(), m_in=-5, m_out=-1,
                                          return_grad=True))
    assert all(a.tobytes() == b.tobytes() for a, b in zip(*runs))


def test_docstring_and_docs_examples_run():
    import doctest
    import os

    from xent_rs import _losses

    assert doctest.testmod(_losses).failed == 0
    docs = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                        "losses.md")
    result = doctest.testfile(docs, module_relative=False)
    assert result.attempted > 5 and result.failed == 0


@pytest.mark.parametrize("dtype", [np.float16, BF16, np.float64], ids=str)
def test_in_place_for_every_dtype(rng, dtype):
    x = random_logits(rng, (9, 5), np.float32).astype(dtype)
    t = _labels(rng, 9, 5)
    y = (rng.random((9, 5)) < 0.5).astype(np.float32)
    for call in (lambda z, **kw: xr.focal_loss(z, t, label_smoothing=0.1, **kw),
                 lambda z, **kw: xr.generalized_cross_entropy(z, t, **kw),
                 lambda z, **kw: xr.sigmoid_focal_loss(z, y, **kw)):
        loss, g = call(x, return_grad=True)
        z = x.copy()
        loss2, g2 = call(z, return_grad=True, out=z)
        assert g2 is z and g2.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(np.asarray(loss2), np.asarray(loss))
        np.testing.assert_array_equal(g2, g)


def test_sigmoid_focal_does_not_depend_on_the_thread_count(rng, restore_threads):
    z = random_logits(rng, (400, 500), np.float32)
    y = (rng.random((400, 500)) < 0.3).astype(np.float32)
    runs = []
    for n in (1, 3):
        xr.set_num_threads(n)
        runs.append(xr.sigmoid_focal_loss(z, y, reduction="mean", return_grad=True))
    assert runs[0][0].tobytes() == runs[1][0].tobytes()
    assert runs[0][1].tobytes() == runs[1][1].tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_energy_margin_out_buffers_and_in_place(rng, dtype, temperature):
    """``out_in=``/``out_out=`` receive the same gradients (bit for bit) as fresh arrays,
    separately or in place."""
    x_in = (rng.standard_normal((37, 11)) * 3).astype(dtype)
    x_out = (rng.standard_normal((5, 2, 11)) * 3 - 4).astype(dtype)
    kw = dict(m_in=-4.0, m_out=-1.0, temperature=temperature, return_grad=True)
    loss, g_in, g_out = xr.energy_margin_loss(x_in, x_out, **kw)
    o_in, o_out = np.full_like(x_in, np.nan), np.full_like(x_out, np.nan)
    got = xr.energy_margin_loss(x_in, x_out, out_in=o_in, out_out=o_out, **kw)
    assert got[1] is o_in and got[2] is o_out and got[0] == loss
    np.testing.assert_array_equal(o_in, g_in)
    np.testing.assert_array_equal(o_out, g_out)
    a, b = x_in.copy(), x_out.copy()
    got = xr.energy_margin_loss(a, b, out_in=a, out_out=b, **kw)
    assert got[1] is a and got[2] is b and got[0] == loss
    np.testing.assert_array_equal(a, g_in)
    np.testing.assert_array_equal(b, g_out)
    only = xr.energy_margin_loss(x_in, x_out, out_out=o_out, **kw)
    np.testing.assert_array_equal(only[1], g_in)


def test_energy_margin_bad_out_buffers():
    x = np.zeros((3, 4))
    y = np.zeros((2, 4))
    with pytest.raises(ValueError, match="^out_in: given without return_grad"):
        xr.energy_margin_loss(x, y, out_in=np.zeros_like(x))
    with pytest.raises(ValueError, match="^out_out: must have shape"):
        xr.energy_margin_loss(x, y, return_grad=True, out_out=np.zeros((3, 4)))
    with pytest.raises(ValueError, match="^out_in: must have dtype"):
        xr.energy_margin_loss(x, y, return_grad=True, out_in=np.zeros((3, 4), np.float32))
    with pytest.raises(TypeError, match="^out_out"):
        xr.energy_margin_loss(x, y, return_grad=True, out_out=[[0.0] * 4] * 2)
    z = np.zeros((3, 4))
    with pytest.raises(ValueError, match="^out_in: overlaps the other side"):
        xr.energy_margin_loss(x, z, return_grad=True, out_in=z)
    buf = np.zeros((3, 4))
    with pytest.raises(ValueError, match="^out_out: overlaps out_in"):
        xr.energy_margin_loss(x, x.copy(), return_grad=True, out_in=buf, out_out=buf)


@pytest.mark.parametrize("scale", [1.0, 6.0, 40.0, 1e4])
@pytest.mark.parametrize("alpha, gamma", [(0.25, 2.0), (-1.0, 1.0), (0.6, 0.0)])
@pytest.mark.parametrize("soft", [False, True])
def test_sigmoid_focal_float32_kernel_against_the_reference(rng, scale, alpha, gamma, soft):
    """Float32 logits and targets take the float32 vector kernel (γ ∈ {0, 1, 2}): per-element
    losses within 1e-6 relative of the float64 reference, including logits at float32's
    exponent limit (|z| ≈ 87.3, where a vector goes to float64), NaN, ±inf, soft targets
    and an odd length (vector tails); the gradient against the reference, in place too."""
    n = 1001
    z = (rng.standard_normal(n) * scale).astype(np.float32)
    z[:6] = [87.0, -87.3, 87.4, -88.0, 103.0, -0.0]
    z[6:9] = [np.inf, -np.inf, np.nan]
    y = (rng.random(n) if soft else (rng.random(n) < 0.4)).astype(np.float32)
    y[:9] = [1, 0, 1, 0, 0, 1, 1, 0, 0] if not soft else y[:9]
    loss, g = xr.sigmoid_focal_loss(z, y, alpha=alpha, gamma=gamma, return_grad=True)
    with np.errstate(invalid="ignore"):  # the reference's ±inf lanes are not compared
        want, want_g = ref.sigmoid_focal_loss(z.astype(np.float64), y.astype(np.float64),
                                              alpha=alpha, gamma=gamma, return_grad=True)
    assert np.isnan(loss[8]) and np.isnan(g[8])
    if not soft:  # an infinite logit on its target's side costs exactly nothing
        assert loss[6] == 0.0 and loss[7] == 0.0 and g[6] == 0.0 and g[7] == 0.0
    ok = np.isfinite(z)
    check(loss[ok], want[ok], np.float32, rtol=ROW_LOSS_RTOL[np.dtype(np.float32)],
          scale_atol=False)
    check(g[ok], want_g[ok], np.float32)
    zc = z.copy()
    loss2, g2 = xr.sigmoid_focal_loss(zc, y, alpha=alpha, gamma=gamma, return_grad=True,
                                      out=zc)
    np.testing.assert_array_equal(loss2, loss)
    np.testing.assert_array_equal(g2, g)
    total = xr.sigmoid_focal_loss(z[ok], y[ok], alpha=alpha, gamma=gamma, reduction="sum")
    np.testing.assert_allclose(total, want[ok].sum(), rtol=1e-5)


def test_sigmoid_focal_float32_kernel_reports_the_first_bad_target():
    z = np.zeros(100, np.float32)
    y = np.zeros(100, np.float32)
    y[37], y[80] = 1.5, -1.0
    with pytest.raises(ValueError, match="target"):
        xr.sigmoid_focal_loss(z, y)
