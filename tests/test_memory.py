"""Contiguous inputs are read in place: no copy of the logits is ever made."""

from __future__ import annotations

import tracemalloc

import numpy as np

import xent_rs as xr


def peak_bytes(fn):
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_loss_of_a_100mb_array_allocates_no_copy():
    n, k = 25_000, 1_000  # 100 MB of float32
    x = np.random.default_rng(0).standard_normal((n, k), dtype=np.float32)
    t = np.zeros(n, dtype=np.int64)
    peak = peak_bytes(lambda: xr.cross_entropy(x, t))
    assert peak < 2_000_000, peak  # labels and scalars only, far below 100 MB
    # The gradient is the only logits-sized allocation, and with out= there is none.
    peak = peak_bytes(lambda: xr.cross_entropy(x, t, return_grad=True))
    assert x.nbytes <= peak < x.nbytes + 2_000_000
    out = np.empty_like(x)
    peak = peak_bytes(lambda: xr.cross_entropy(x, t, return_grad=True, out=out))
    assert peak < 2_000_000, peak
    peak = peak_bytes(lambda: xr.cross_entropy(x, t, return_grad=True, out=x))
    assert peak < 2_000_000, peak


def test_bce_and_building_blocks_allocate_no_copy():
    x = np.random.default_rng(1).standard_normal((5_000_000,), dtype=np.float32)  # 20 MB
    y = (x > 0).astype(np.float32)
    peak = peak_bytes(lambda: xr.binary_cross_entropy_with_logits(x, y))
    assert peak < 1_000_000, peak
    x2 = x.reshape(5_000, 1_000)
    peak = peak_bytes(lambda: xr.logsumexp(x2))
    assert peak < 1_000_000, peak
