"""Hardening (issue 5), part 3: arrays with more than 2**31 elements (no 32-bit index
overflow anywhere).

The big inputs are ``np.zeros`` arrays: the kernel maps them lazily, and pages that are only
read are the shared zero page, so a read-only 9.6 GB input costs almost no memory. A few
entries at positions on both sides of 2**31 (and in the row that straddles it) are set to
known values, so that a wrong index shows up as a wrong number, and results are checked
against closed forms:

* all-zero logits: softmax is uniform, a row's loss is log K, BCE's element loss log 2;
* with label smoothing ε the BCE target of a zero label is ε/2 everywhere (no target memory
  is written), which makes ``pos_weight`` and ``weight`` matter at every position.

Peak resident memory: about 0.1 GB for the read-only tests, 8.6 GB for the in-place BCE
gradient (float32) and 4.8 GB for the in-place cross-entropy gradient (float16). Marked ``slow`` (deselect locally with ``-m 'not slow'``);
CI runs them. Each takes well under two minutes on two cores.
"""

from __future__ import annotations

import gc
import math
import textwrap

import numpy as np
import pytest

import xent_rs as xr
from xent_rs import calibration as cal
from conftest import run_script

pytestmark = pytest.mark.slow

TWO31 = 2**31


def softplus(z):
    return max(z, 0.0) + math.log1p(math.exp(-abs(z)))


def sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z))


@pytest.fixture
def free_memory():
    yield
    gc.collect()


# ------------------------------------------------------------------------------ BCE --

def test_bce_sum_and_mean_beyond_two_to_the_31(free_memory):
    """2**31 + 1 float32 logits and targets (8.6 GB each, read-only zero pages)."""
    n = TWO31 + 1
    z = np.zeros(n, dtype=np.float32)
    y = np.zeros(n, dtype=np.float32)
    special = {5: (3.0, 1.0), TWO31 - 1: (-2.0, 1.0), TWO31: (4.0, 0.0)}  # index: (z, y)
    for i, (zi, yi) in special.items():
        z[i], y[i] = zi, yi

    def element_loss(zi, yi, eps=0.0, pw=1.0, w=1.0):
        yy = yi * (1 - eps) + eps / 2
        return w * (pw * yy * softplus(-zi) + (1 - yy) * softplus(zi))

    base = (n - len(special)) * math.log(2)
    want = base + sum(element_loss(zi, yi) for zi, yi in special.values())
    total = xr.binary_cross_entropy_with_logits(z, y, reduction="sum")
    assert total.dtype == np.float32
    assert float(total) == pytest.approx(want, rel=1e-6)
    mean = xr.binary_cross_entropy_with_logits(z, y)
    assert float(mean) == pytest.approx(want / n, rel=1e-6)
    del z, y


SCALAR_FACTORS = textwrap.dedent(r"""
    import math, resource, sys
    import numpy as np
    import xent_rs as xr
    n = 2**31 + 1
    # The inputs are lazily mapped zero pages (17.2 GB of address space, ~no memory); allow
    # 3 GB more, so that a logits-sized temporary fails with MemoryError instead of driving
    # the machine out of memory.
    limit = 2 * 4 * n + 3 * 2**30
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    z = np.zeros(n, dtype=np.float32)
    y = np.zeros(n, dtype=np.float32)
    z[2**31] = 4.0
    def sp(v):
        return max(v, 0.0) + math.log1p(math.exp(-abs(v)))
    eps, pw, w = 0.5, 3.0, 0.25
    yy = eps / 2
    def loss(v):
        return w * (pw * yy * sp(-v) + (1 - yy) * sp(v))
    want = (n - 1) * loss(0.0) + loss(4.0)
    try:
        got = xr.binary_cross_entropy_with_logits(z, y, reduction="sum", label_smoothing=eps,
                                                  pos_weight=pw, weight=w)
    except MemoryError as exc:
        sys.exit(f"a scalar weight / pos_weight made a logits-sized copy: {exc}")
    assert abs(float(got) / want - 1) < 1e-6, (float(got), want)
    print("ok")
""")


def test_bce_scalar_factors_beyond_two_to_the_31(free_memory):
    """A scalar ``weight`` and ``pos_weight`` with label smoothing on 2**31 + 1 float32
    logits: every element's loss changes, and no logits-sized temporary may be made (it
    would be 17 GB of float64 here). Runs in a subprocess with an address-space limit."""
    assert run_script(SCALAR_FACTORS, timeout=900).strip() == "ok"


def test_bce_per_column_factors_beyond_two_to_the_31(free_memory):
    """A (46341, 46341) float32 matrix (2**31 + 4633 elements, read-only zero pages) with
    pos_weight and weight varying along the last axis: element i uses column i mod C."""
    r = c = 46341
    assert r * c > TWO31
    z = np.zeros((r, c), dtype=np.float32)
    y = np.zeros((r, c), dtype=np.float32)
    pw = np.linspace(0.0, 4.0, c)
    w = np.linspace(2.0, 0.5, c)
    eps = 0.5
    yy = eps / 2  # every target after smoothing
    per_col = w * (pw * yy + (1 - yy)) * math.log(2)
    # Set entries after 2**31 (row 46340 starts at 2,147,395,600; 2**31 falls in it).
    last = r - 1
    assert last * c < TWO31 < (last + 1) * c
    cols = [0, TWO31 - last * c - 1, TWO31 - last * c, c - 1]
    vals = [2.5, -1.5, 6.0, -7.0]
    for j, v in zip(cols, vals):
        z[last, j] = v
    want = r * per_col.sum()
    for j, v in zip(cols, vals):
        want += w[j] * (pw[j] * yy * softplus(-v) + (1 - yy) * softplus(v)) - per_col[j]
    total = xr.binary_cross_entropy_with_logits(z, y, reduction="sum", label_smoothing=eps,
                                                pos_weight=pw, weight=w)
    assert float(total) == pytest.approx(want, rel=2e-6)
    del z, y


def test_bce_in_place_gradient_beyond_two_to_the_31(free_memory):
    """2**31 + 1 float32 logits (8.6 GB, all written: the gradient replaces them; the
    targets stay read-only zero pages)."""
    n = TWO31 + 1
    z = np.zeros(n, dtype=np.float32)
    y = np.zeros(n, dtype=np.float32)
    idx = [0, TWO31 - 1, TWO31]
    vals = [1.0, -2.0, 3.0]
    z[idx] = vals
    y[TWO31] = 1.0
    eps = 0.5

    def element(zi, yi):
        yy = yi * (1 - eps) + eps / 2
        loss = yy * softplus(-zi) + (1 - yy) * softplus(zi)
        return loss, sigmoid(zi) - yy

    want = (n - 3) * element(0.0, 0.0)[0] + sum(
        element(v, float(i == TWO31))[0] for i, v in zip(idx, vals))
    loss, grad = xr.binary_cross_entropy_with_logits(z, y, reduction="sum",
                                                     label_smoothing=eps, return_grad=True,
                                                     out=z)
    assert grad is z and grad.dtype == np.float32
    assert float(loss) == pytest.approx(want, rel=1e-6)
    g0 = element(0.0, 0.0)[1]
    for i, v in zip(idx, vals):
        assert float(grad[i]) == pytest.approx(element(v, float(i == TWO31))[1], rel=1e-6)
    for i in (1, 12345, TWO31 - 2, TWO31 - 4097):
        assert float(grad[i]) == pytest.approx(g0, rel=1e-6)
    # Every zero logit got the same gradient: a strided sample over the whole range.
    pos = np.arange(7, n, 99_991)
    sample = grad[pos[~np.isin(pos, idx)]]
    assert np.all(sample == sample[0]), np.unique(sample)
    assert float(sample[0]) == pytest.approx(g0, rel=1e-6)
    del z, y, grad


# ------------------------------------------------------------------- cross-entropy --

N, K = 40_000, 60_000  # 2.4e9 elements
ROW_STRADDLING = TWO31 // K  # 35791: starts before 2**31 and ends after it


def _special_rows(x, t):
    """Writes a few known entries; returns {row: expected loss} for them."""
    r1, r2 = ROW_STRADDLING, N - 1
    assert r1 * K < TWO31 < (r1 + 1) * K
    j_after = TWO31 - r1 * K + 5          # in row r1, after the 2**31 boundary
    x[r1, 0] = 2.0
    x[r1, j_after] = 4.0
    t[r1] = j_after
    x[r2, 123] = -3.0
    t[r2] = 123
    lse1 = math.log(math.exp(2.0) + math.exp(4.0) + (K - 2))
    lse2 = math.log(math.exp(-3.0) + (K - 1))
    return {r1: (lse1 - 4.0, lse1, j_after), r2: (lse2 + 3.0, lse2, 123)}


def test_cross_entropy_beyond_two_to_the_31_float32(free_memory):
    """(40000, 60000) float32 logits (9.6 GB of read-only zero pages)."""
    x = np.zeros((N, K), dtype=np.float32)
    t = (np.arange(N) * 7) % K
    special = _special_rows(x, t)
    log_k = math.log(K)

    losses, lse = xr.cross_entropy(x, t, reduction="none", return_lse=True)
    assert losses.shape == (N,) and losses.dtype == np.float32
    rest = np.ones(N, bool)
    rest[list(special)] = False
    np.testing.assert_allclose(losses[rest], log_k, rtol=1e-6)
    np.testing.assert_allclose(lse[rest], log_k, rtol=1e-6)
    for r, (loss_r, lse_r, _) in special.items():
        assert float(losses[r]) == pytest.approx(loss_r, rel=1e-6)
        assert float(lse[r]) == pytest.approx(lse_r, rel=1e-6)

    want_sum = (N - len(special)) * log_k + sum(v[0] for v in special.values())
    assert float(xr.cross_entropy(x, t, reduction="sum")) == pytest.approx(want_sum, rel=1e-6)
    assert float(xr.cross_entropy(x, t)) == pytest.approx(want_sum / N, rel=1e-6)

    # Label smoothing reads every logit of every row against the target distribution.
    eps = 0.3
    got = xr.cross_entropy(x, t, reduction="none", label_smoothing=eps)
    np.testing.assert_allclose(got[rest], log_k, rtol=1e-6)  # uniform rows: still log K
    r1 = ROW_STRADDLING
    loss_r1, lse_r1, j = special[r1]
    row = np.zeros(K)
    row[0], row[j] = 2.0, 4.0
    want_r1 = (1 - eps) * (lse_r1 - 4.0) + eps * (lse_r1 - row.mean())
    assert float(got[r1]) == pytest.approx(want_r1, rel=1e-6)

    lse_only = xr.logsumexp(x)
    np.testing.assert_allclose(lse_only[rest], log_k, rtol=1e-6)
    assert float(lse_only[r1]) == pytest.approx(lse_r1, rel=1e-6)
    del x


def test_calibration_error_beyond_two_to_the_31(free_memory):
    """The fused top-label kernel over (40000, 60000) float32 logits: all-zero rows have
    confidence 1/K and argmax 0 (the first maximum)."""
    x = np.zeros((N, K), dtype=np.float32)
    t = np.zeros(N, np.int64)
    t[1::2] = 1                                # half the all-zero rows right, half wrong
    special = _special_rows(x, t)
    conf = np.full(N, 1.0 / K)
    correct = t == 0
    for r, (_, lse_r, j) in special.items():
        top = max(float(x[r].max()), 0.0)      # the row's largest logit
        conf[r] = math.exp(top - lse_r)
        argmax = int(np.argmax(x[r]))
        correct[r] = argmax == t[r]
    # Every confidence is below 1/15: one bin, ECE = |accuracy − mean confidence|.
    assert conf.max() < 1 / 15
    want = abs(correct.mean() - conf.mean())
    got = cal.calibration_error(x, t, from_logits=True)
    assert got == pytest.approx(want, rel=1e-9)
    del x


def test_cross_entropy_beyond_two_to_the_31_float16(free_memory):
    """(40000, 60000) float16 logits (4.8 GB of read-only zero pages), loss only: per-row
    losses stay float16, the mean is one rounding of the exact value."""
    x = np.zeros((N, K), dtype=np.float16)
    t = (np.arange(N) * 7) % K
    special = _special_rows(x, t)
    log_k = math.log(K)
    losses = xr.cross_entropy(x, t, reduction="none")
    assert losses.shape == (N,) and losses.dtype == np.float16
    rest = np.ones(N, bool)
    rest[list(special)] = False
    np.testing.assert_array_equal(losses[rest], np.float16(log_k))
    for r, (loss_r, _, _) in special.items():
        assert float(losses[r]) == pytest.approx(loss_r, rel=1e-3)
    want_mean = ((N - len(special)) * log_k + sum(v[0] for v in special.values())) / N
    assert float(xr.cross_entropy(x, t)) == pytest.approx(want_mean, rel=1e-3)
    del x


def test_cross_entropy_in_place_gradient_beyond_two_to_the_31_float16(free_memory):
    """(40000, 60000) float16 logits (4.8 GB, all written: out=logits)."""
    x = np.zeros((N, K), dtype=np.float16)
    t = (np.arange(N) * 7) % K
    special = _special_rows(x, t)
    before = {r: x[r].astype(np.float64) for r in special}
    loss, grad = xr.cross_entropy(x, t, reduction="sum", return_grad=True, out=x)
    assert grad is x
    log_k = math.log(K)
    want_sum = (N - len(special)) * log_k + sum(v[0] for v in special.values())
    # 4.4e5 is beyond float16's range: the reduced loss of 16-bit logits is float32.
    assert loss.dtype == np.float32
    assert float(loss) == pytest.approx(want_sum, rel=1e-6)
    for r in (0, 1, ROW_STRADDLING - 1, ROW_STRADDLING + 1, N - 2):
        row = grad[r]
        assert float(row[t[r]]) == pytest.approx(1.0 / K - 1.0, rel=1e-3)
        others = np.delete(row, t[r])
        assert np.all(others == others[0]), np.unique(others)  # uniform
        # 1/K is a float16 subnormal here: 0.4% steps.
        assert float(others[0]) == pytest.approx(1.0 / K, rel=4e-3)
    for r, (_, lse_r, j) in special.items():
        p = np.exp(before[r] - lse_r)
        p[j] -= 1.0
        np.testing.assert_allclose(grad[r].astype(np.float64), p, rtol=2e-3, atol=6e-8)
    del x, grad
