"""binary_cross_entropy_with_logits against the float64 reference and closed forms."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import xent_rs as xr
from xent_rs import reference as ref
from conftest import assert_close, random_logits

DTYPES = [np.float32, np.float64]


def both(z, y, **kw):
    flags = dict(return_grad=True, return_hess=True)
    return (xr.binary_cross_entropy_with_logits(z, y, **kw, **flags),
            ref.binary_cross_entropy_with_logits(z, y, **kw, **flags))


def check(fast, slow, dtype):
    loss, grad, hess = fast
    rloss, rgrad, rhess = slow
    for a in fast:
        assert np.asarray(a).dtype == np.dtype(dtype)
    assert_close(loss, rloss, dtype, scale_atol=False)
    assert_close(hess, rhess, dtype, scale_atol=False)
    # grad = w·[(a+b)·σ − a] is a difference; its natural size is w·(a+b)·σ ≈ 4·hess near 0.
    natural = max(np.max(np.abs(rgrad), initial=0), 4 * np.max(np.abs(rhess), initial=0))
    assert_close(grad, rgrad, dtype, scale=natural)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weight", [None, "full", "last", "scalar", "leading"])
@pytest.mark.parametrize("pos_weight", [None, "last", "scalar"])
@pytest.mark.parametrize("eps", [0.0, 0.2])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_every_parameter_combination(rng, dtype, weight, pos_weight, eps, reduction):
    shape = (23, 6)
    z = random_logits(rng, shape, dtype)
    y = rng.random(shape).astype(dtype)
    y[::3] = np.round(y[::3])
    w = {None: None, "full": rng.random(shape), "last": rng.random(6), "scalar": 0.7,
         "leading": rng.random((23, 1))}[weight]
    pw = {None: None, "last": rng.random(6) * 3, "scalar": 2.5}[pos_weight]
    fast, slow = both(z, y, weight=w, pos_weight=pw, label_smoothing=eps, reduction=reduction)
    check(fast, slow, dtype)


def test_closed_form():
    z = np.linspace(-40, 40, 81)
    for y in (0.0, 1.0):
        loss, grad = xr.binary_cross_entropy_with_logits(z, np.full_like(z, y),
                                                         reduction="none", return_grad=True)
        expected = np.logaddexp(0, -z) if y == 1 else np.logaddexp(0, z)
        np.testing.assert_allclose(loss, expected, rtol=1e-14)
        # σ(z) − y, written without cancellation: σ(z) − 1 = −σ(−z).
        expected_grad = -1 / (1 + np.exp(z)) if y == 1 else 1 / (1 + np.exp(-z))
        np.testing.assert_allclose(grad, expected_grad, rtol=1e-13, atol=1e-300)


def test_pos_weight_semantics():
    """PyTorch: loss = −w·[pw·y·log σ(z) + (1 − y)·log(1 − σ(z))]."""
    z = np.array([[0.3, -1.2], [2.0, 0.0]])
    y = np.array([[1.0, 0.0], [0.4, 1.0]])
    pw = np.array([3.0, 0.5])
    w = np.array([[1.0, 2.0], [0.5, 1.0]])
    s = 1 / (1 + np.exp(-z))
    expected = -w * (pw * y * np.log(s) + (1 - y) * np.log(1 - s))
    got = xr.binary_cross_entropy_with_logits(z, y, weight=w, pos_weight=pw, reduction="none")
    np.testing.assert_allclose(got, expected, rtol=1e-13)
    np.testing.assert_allclose(
        xr.binary_cross_entropy_with_logits(z, y, weight=w, pos_weight=pw), expected.mean(),
        rtol=1e-13)


def test_label_smoothing_matches_two_class_cross_entropy(rng):
    z = rng.standard_normal(50)
    y = rng.integers(0, 2, 50)
    eps = 0.2
    bce = xr.binary_cross_entropy_with_logits(z, y, label_smoothing=eps, reduction="none")
    two = np.stack([np.zeros_like(z), z], axis=1)
    cce = xr.cross_entropy(two, y, label_smoothing=eps, reduction="none")
    np.testing.assert_allclose(bce, cce, rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_extreme_logits(dtype):
    z = np.array([1e4, -1e4, 88.0, -88.0, 0.0, np.inf, -np.inf], dtype=dtype)
    y = np.array([1, 0, 1, 0, 1, 1, 0], dtype=dtype)
    fast, slow = both(z, y, reduction="none")
    check(fast, slow, dtype)
    np.testing.assert_array_equal(fast[0][[0, 1, 5, 6]], 0)
    z = np.array([np.inf, np.nan], dtype=dtype)
    loss = xr.binary_cross_entropy_with_logits(z, np.array([0, 1], dtype=dtype),
                                               reduction="none")
    assert loss[0] == np.inf and np.isnan(loss[1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_tiny_losses_keep_relative_precision(dtype):
    z = np.array([15.0, 30.0, 60.0, -70.0], dtype=dtype)
    y = np.array([1, 1, 1, 0], dtype=dtype)
    loss = xr.binary_cross_entropy_with_logits(z, y, reduction="none")
    expected = np.log1p(np.exp(-np.abs(z.astype(np.float64))))
    np.testing.assert_allclose(loss, expected, rtol=1e-6 if dtype == np.float32 else 1e-14)


@pytest.mark.parametrize("target_dtype", [np.bool_, np.int8, np.uint8, np.int64, np.float64])
def test_target_dtypes(rng, target_dtype):
    z = random_logits(rng, (10, 3), np.float32)
    y = rng.integers(0, 2, (10, 3)).astype(target_dtype)
    loss = xr.binary_cross_entropy_with_logits(z, y, reduction="none")
    assert_close(loss, ref.binary_cross_entropy_with_logits(z, y.astype(float),
                                                            reduction="none"), np.float32)


@pytest.mark.parametrize("shape", [(), (0,), (7,), (3, 0), (2, 3, 4)])
def test_shapes(rng, shape):
    z = rng.standard_normal(shape)
    y = rng.random(shape)
    fast, slow = both(z, y, reduction="none")
    check(fast, slow, np.float64)
    assert fast[0].shape == shape
    m = xr.binary_cross_entropy_with_logits(z, y)
    assert np.isnan(m) if z.size == 0 else np.isclose(m, slow[0].mean(), rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_out_separate_and_in_place(rng, dtype):
    z = random_logits(rng, (40, 5), dtype)
    y = rng.random((40, 5)).astype(dtype)
    loss, grad = xr.binary_cross_entropy_with_logits(z, y, return_grad=True)
    out = np.empty_like(z)
    _, g = xr.binary_cross_entropy_with_logits(z, y, return_grad=True, out=out)
    assert g is out
    np.testing.assert_array_equal(out, grad)
    z2 = z.copy()
    loss2, g2 = xr.binary_cross_entropy_with_logits(z2, y, return_grad=True, out=z2)
    assert g2 is z2 and loss2 == loss
    np.testing.assert_array_equal(z2, grad)


def test_non_contiguous(rng):
    z = rng.standard_normal((30, 8))[::2, ::-1]
    y = np.asfortranarray(rng.random((15, 8)))
    fast, slow = both(z, y, pos_weight=np.arange(1, 9.0))
    check(fast, slow, np.float64)


def test_gradient_by_finite_differences(rng):
    z = rng.standard_normal((4, 3))
    y = rng.random((4, 3))
    kw = dict(weight=rng.random((4, 3)), pos_weight=np.array([0.5, 1.0, 4.0]),
              label_smoothing=0.1)
    _, grad, hess = xr.binary_cross_entropy_with_logits(z, y, return_grad=True,
                                                        return_hess=True, **kw)
    h = 1e-6
    for idx in np.ndindex(z.shape):
        e = np.zeros_like(z)
        e[idx] = h
        fd = (xr.binary_cross_entropy_with_logits(z + e, y, **kw)
              - xr.binary_cross_entropy_with_logits(z - e, y, **kw)) / (2 * h)
        assert abs(fd - grad[idx]) < 1e-8
        g = lambda zz: xr.binary_cross_entropy_with_logits(zz, y, return_grad=True, **kw)[1]
        fd2 = (g(z + e)[idx] - g(z - e)[idx]) / (2 * h)
        assert abs(fd2 - hess[idx]) < 1e-7


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    dtype=st.sampled_from(DTYPES),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6),
    eps=st.sampled_from([0.0, 0.3]),
    reduction=st.sampled_from(["mean", "sum", "none"]),
)
def test_property_against_reference(data, dtype, shape, eps, reduction):
    z = data.draw(hnp.arrays(dtype, shape, elements=st.floats(-100, 100, width=32)))
    y = data.draw(hnp.arrays(dtype, shape, elements=st.floats(0, 1, width=32)))
    pw_shape = shape[-1:]  # (C,), or () for 0-d logits
    pw = data.draw(st.none() | hnp.arrays(np.float64, pw_shape, elements=st.floats(0, 5)))
    fast, slow = both(z, y, pos_weight=pw, label_smoothing=eps, reduction=reduction)
    check(fast, slow, dtype)


def test_float16(rng):
    z = random_logits(rng, (40, 7), np.float16)
    y = rng.random((40, 7)).astype(np.float16)
    fast, slow = both(z, y, reduction="none", pos_weight=np.arange(1, 8.0))
    for a, b in zip(fast, slow):
        assert a.dtype == np.float16
        assert_close(a, b, np.float32, rtol=2e-3, scale=4 * np.max(np.abs(slow[2])) + 1e-3)
