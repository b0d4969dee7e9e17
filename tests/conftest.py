"""Shared helpers: tolerances against the float64 reference, and random problem builders."""

from __future__ import annotations

import numpy as np
import pytest

# Relative tolerance of a result against the float64 reference, by the logits' dtype.
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}
# Per-row float32 losses are held to a tighter bound (issue 2: 1e-6).
ROW_LOSS_RTOL = {np.dtype(np.float32): 1e-6, np.dtype(np.float64): 1e-12}


def assert_close(actual, expected, dtype, *, rtol=None, scale_atol=True, scale=None):
    """``actual`` (any dtype) agrees with the float64 ``expected`` elementwise to ``rtol``;
    with ``scale_atol`` an absolute slack of ``rtol·scale`` (default ``max|expected|``) is
    allowed too, for entries that are differences of nearly equal numbers (gradients of soft
    targets). Values beyond the dtype's range are compared after rounding to it."""
    dtype = np.dtype(dtype)
    rtol = RTOL[dtype] if rtol is None else rtol
    actual = np.asarray(actual, dtype=np.float64)
    with np.errstate(over="ignore"):
        expected = np.asarray(expected, dtype=np.float64).astype(dtype).astype(np.float64)
    assert actual.shape == expected.shape
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    np.testing.assert_array_equal(actual[~finite & ~np.isnan(expected)],
                                  expected[~finite & ~np.isnan(expected)])
    if not finite.any():
        return
    if scale is None:
        scale = np.max(np.abs(expected[finite]))
    scale = scale if scale_atol else 0.0
    # Subnormal float32 results cannot carry full relative precision.
    tiny = np.finfo(dtype).tiny
    np.testing.assert_allclose(actual[finite], expected[finite], rtol=rtol,
                               atol=max(rtol * scale, tiny))


def random_logits(rng, shape, dtype, scale=3.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def random_probs(rng, shape, dtype):
    y = rng.random(shape) ** 3
    y /= y.sum(axis=-1, keepdims=True)
    return y.astype(dtype)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
