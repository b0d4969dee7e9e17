"""softmax, log_softmax and logsumexp against the reference and closed forms."""

from __future__ import annotations

import numpy as np
import pytest

import xent_rs as xr
from xent_rs import reference as ref
from conftest import assert_close, random_logits

DTYPES = [np.float32, np.float64]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1,), (5,), (3, 1), (4, 7), (2, 3, 300), (0, 4)])
@pytest.mark.parametrize("scale", [1.0, 30.0, 1e4])
def test_against_reference(rng, dtype, shape, scale):
    x = random_logits(rng, shape, dtype, scale=scale)
    for fast, slow in ((xr.softmax, ref.softmax), (xr.log_softmax, ref.log_softmax)):
        got = fast(x)
        assert got.dtype == dtype and got.shape == shape
        assert_close(got, slow(x), dtype, scale_atol=fast is xr.softmax)
    lse = xr.logsumexp(x)
    assert lse.shape == shape[:-1] and lse.dtype == dtype
    assert_close(lse, ref.logsumexp(x), dtype, scale_atol=False)


def test_closed_forms():
    x = np.array([[1000.0, 1000.0], [-1000.0, -1000.0]])
    np.testing.assert_allclose(xr.logsumexp(x), x[:, 0] + np.log(2), rtol=1e-15)
    np.testing.assert_array_equal(xr.softmax(x), 0.5)
    np.testing.assert_allclose(xr.log_softmax(x), -np.log(2), rtol=1e-15)
    # log_softmax of the maximum of a confident row is −Σ_{j≠max} e^{x_j − m}, not 0.
    ls = xr.log_softmax(np.array([0.0, -50.0], dtype=np.float32))
    assert ls[0] != 0 and abs(ls[0] / -np.exp(-50.0) - 1) < 1e-6


def test_masked_and_nan_rows():
    x = np.array([[0.0, -np.inf], [-np.inf, -np.inf], [np.nan, 1.0]])
    p = xr.softmax(x)
    np.testing.assert_array_equal(p[0], [1.0, 0.0])
    assert np.all(np.isnan(p[1:]))
    lse = xr.logsumexp(x)
    assert lse[0] == 0 and np.isnan(lse[1]) and np.isnan(lse[2])
    ls = xr.log_softmax(x)
    assert ls[0, 1] == -np.inf and ls[0, 0] == 0


@pytest.mark.parametrize("fn", [xr.softmax, xr.log_softmax])
def test_out_and_in_place(rng, fn):
    x = random_logits(rng, (20, 9), np.float32)
    expected = fn(x)
    out = np.empty_like(x)
    assert fn(x, out=out) is out
    np.testing.assert_array_equal(out, expected)
    assert fn(x, out=x) is x
    np.testing.assert_array_equal(x, expected)


def test_non_contiguous(rng):
    x = rng.standard_normal((10, 16))[:, ::2].T
    assert_close(xr.softmax(x), ref.softmax(x), np.float64)
    assert_close(xr.logsumexp(x), ref.logsumexp(x), np.float64)


def test_float16(rng):
    x = random_logits(rng, (50, 37), np.float16)
    for fast, slow in ((xr.softmax, ref.softmax), (xr.log_softmax, ref.log_softmax),
                       (xr.logsumexp, ref.logsumexp)):
        got = fast(x)
        assert got.dtype == np.float16
        assert_close(got, slow(x), np.float32, rtol=2e-3, scale_atol=fast is xr.softmax)
