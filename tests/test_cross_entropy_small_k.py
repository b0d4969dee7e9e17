"""cross_entropy's one-row-per-lane finish for short rows (2 <= K <= 32, class-index
targets) on every instruction-set path this CPU has (``XENT_RS_ISA`` in a child
interpreter), at 1 and 2 threads, against the float64 reference: every K from 2 to 33 (so
K not a multiple of the lane count, and the first K past the kernel), batches that are not
a multiple of the block (ragged tails go row by row), huge and tiny logits, masked (-inf)
classes, all-masked and NaN rows, ties, confident rows whose loss is far below 1e-7,
ignore_index, class weights, the z-loss, float16 and bfloat16 logits, gradient, Hessian,
logsumexp and in-place outputs."""

import textwrap

import numpy as np
import pytest

import xent_rs as xr
from xent_rs import _core
from conftest import run_script as _run_script

PATHS = _core.simd_paths_supported()

CHILD = r"""
import os
import numpy as np, xent_rs as xr
from xent_rs import reference as ref
import ml_dtypes

ISA = os.environ["XENT_RS_ISA"]
xr.set_num_threads(int(os.environ["CE_TEST_THREADS"]))
assert xr._core.simd_path() == ISA, xr._core.simd_path()
rng = np.random.default_rng(11)


def ulp(v, dtype):
    v = np.abs(v.astype(dtype)).astype(np.float64)
    return np.nextafter(v.astype(dtype), np.array(np.inf, dtype)).astype(np.float64) - v


def logits(n, k):
    x = rng.standard_normal((n, k)) * rng.choice([0.01, 1.0, 4.0, 30.0], (n, 1))
    for i in range(0, n, 7):  # adversarial rows, at positions that move through the lanes
        kind = (i // 7) % 10
        if kind == 0:
            x[i, rng.integers(0, k)] = -np.inf          # a masked class
        elif kind == 1:
            x[i] = np.where(rng.random(k) < 0.5, -np.inf, x[i])
            x[i, 0] = 1.0                               # several masked, one kept
        elif kind == 2:
            x[i] = 2.5                                  # all ties
        elif kind == 3:
            x[i, rng.integers(0, k)] += 60.0            # confident: S - 1 near 1e-26
        elif kind == 4:
            x[i] += 1e30                                # huge maximum, m - 87 rounds to m
        elif kind == 5:
            x[i] = 2.0**29 - 32.0 * rng.integers(0, 6, k)  # m + FLUSH rounds down
        elif kind == 6:
            x[i, rng.integers(0, k)] += 20.0            # confident: loss near 1e-9
        elif kind == 7 and i % 3 == 0:
            x[i] = -np.inf                              # all masked: NaN
        elif kind == 8 and i % 3 == 0:
            x[i, rng.integers(0, k)] = np.nan           # NaN
        elif kind == 9:
            x[i] = rng.standard_normal(k) * 1e-3        # nearly uniform
    return x


def same_bits(a, b):
    # Bit-identical, except that NaNs (whose payload is not part of the result) only need
    # to be NaN in both.
    a, b = np.asarray(a), np.asarray(b)
    nan = np.isnan(a.astype(np.float32))
    if not np.array_equal(nan, np.isnan(b.astype(np.float32))):
        return False
    return np.array_equal(a[~nan].view(np.uint8), b[~nan].view(np.uint8))


def check(got, want, dtype, name, ctx, size=None):
    a = np.asarray(got, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        r_t = np.asarray(want, dtype=np.float64).astype(dtype).astype(np.float64)
    assert np.array_equal(np.isnan(a), np.isnan(r_t)), (ctx, name)
    inf = ~np.isfinite(r_t) & ~np.isnan(r_t)
    assert np.array_equal(a[inf], r_t[inf]), (ctx, name)
    fin = np.isfinite(r_t)
    size = np.abs(r_t) if size is None else size
    if dtype == np.float32:
        tol = (1e-6 if name == "loss" else 3e-6) * size + 1.2e-38
    else:                        # the float32 working value rounded once
        tol = 0.5 * ulp(np.asarray(want), dtype) * (1 + 2.0**-8) + 3e-6 * size + 1.2e-38
    with np.errstate(invalid="ignore"):
        err = np.abs(a - np.asarray(want, dtype=np.float64))
    bad = fin & ~(err <= tol)
    assert not bad.any(), (ISA, ctx, name, np.argwhere(bad)[:3].tolist(), a[bad][:3],
                           r_t[bad][:3])


cases = [dict(), dict(weight="w"), dict(z_loss=1e-3), dict(weight="w", z_loss=0.5)]
dtypes = [np.float32, np.float16, ml_dtypes.bfloat16]
sizes = [1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 40, 63, 64, 65, 100]
for k in range(2, 34):
    n = sizes[k % len(sizes)] + 64 * (k % 3)
    x64 = logits(n, k)
    t = rng.integers(0, k, n)
    t[rng.random(n) < 0.15] = -100
    w = rng.random(k) * 3
    w[0] = 0.0                               # a zero-weight class
    for dtype in dtypes:
        x = x64.astype(dtype)
        xw = x.astype(np.float64)            # the logits the kernel sees
        for kw in cases:
            kw = {key: (w if v == "w" else v) for key, v in kw.items()}
            ctx = (k, n, np.dtype(dtype).name, sorted(kw))
            flags = dict(reduction="none", return_grad=True, return_hess=True,
                         return_lse=True)
            loss, grad, hess, lse = xr.cross_entropy(x, t, **kw, **flags)
            rloss, rgrad, rhess, rlse = ref.cross_entropy(xw, t, **kw, **flags)
            assert grad.dtype == np.dtype(dtype) and hess.dtype == np.dtype(dtype)
            check(loss, rloss, dtype, "loss", ctx)
            check(lse, rlse, dtype, "lse", ctx)
            scale = np.max(np.abs(np.nan_to_num(rgrad, posinf=0, neginf=0)), initial=0)
            check(grad, rgrad, dtype, "grad", ctx, size=np.abs(rgrad) + 1e-7 * scale)
            check(hess, rhess, dtype, "hess", ctx, size=np.abs(rhess) + 1e-7 * scale)
            ignored = t == -100
            assert np.all(grad[ignored] == 0) and np.all(hess[ignored] == 0), ctx
            assert np.all(loss[ignored] == 0), ctx
            # The gradient does not depend on which other outputs were asked for, nor on
            # whether it is computed in place.
            g2 = xr.cross_entropy(x, t, reduction="none", return_grad=True, **kw)[1]
            assert same_bits(g2, grad), ctx
            xi = x.copy()
            l3, g3 = xr.cross_entropy(xi, t, reduction="none", return_grad=True, out=xi, **kw)
            assert g3 is xi and same_bits(g3, grad), ctx
            assert same_bits(l3, loss), ctx
            _, h4 = xr.cross_entropy(x, t, return_hess=True, **kw)
            mean = xr.cross_entropy(x, t, **kw)
            print(k, np.dtype(dtype).name, sorted(kw), repr(float(mean)),
                  float(np.abs(h4.astype(np.float64)).sum()))

# Many rows of K = 10 over several chunks: per-row losses, and the mean against the
# reference (float32 rows summed in float64 keep 1e-6 of the mean).
n, k = 70_001, 10
x = (rng.standard_normal((n, k)) * 3).astype(np.float32)
t = rng.integers(0, k, n)
t[::13] = -100
loss, grad = xr.cross_entropy(x, t, reduction="none", return_grad=True)
rloss, rgrad = ref.cross_entropy(x.astype(np.float64), t, reduction="none", return_grad=True)
check(loss, rloss, np.float32, "loss", "big")
check(grad, rgrad, np.float32, "grad", "big", size=np.abs(rgrad) + 1e-7)
mean, gm = xr.cross_entropy(x, t, return_grad=True)
want = rloss[t != -100].mean()
assert abs(float(mean) - want) <= 1e-6 * want
print("big", repr(float(mean)), float(np.abs(gm.astype(np.float64)).sum()))

# 16-bit rows past the short-row kernel go through per-thread float32 scratch reused from
# chunk to chunk (the last chunk shorter): many chunks, in place and not, with the Hessian.
n, k = 1_501, 200
for dtype in (np.float16, ml_dtypes.bfloat16):
    x = (rng.standard_normal((n, k)) * 3).astype(dtype)
    t = rng.integers(0, k, n)
    flags = dict(reduction="none", return_grad=True, return_hess=True)
    loss, grad, hess = xr.cross_entropy(x, t, **flags)
    rloss, rgrad, rhess = ref.cross_entropy(x.astype(np.float64), t, **flags)
    check(loss, rloss, dtype, "loss", ("wide", dtype))
    check(grad, rgrad, dtype, "grad", ("wide", dtype), size=np.abs(rgrad) + 1e-7)
    check(hess, rhess, dtype, "hess", ("wide", dtype), size=np.abs(rhess) + 1e-7)
    xi = x.copy()
    _, gi = xr.cross_entropy(xi, t, reduction="none", return_grad=True, out=xi)
    assert same_bits(gi, grad)
    print("wide", np.dtype(dtype).name, float(np.abs(grad.astype(np.float64)).sum()))
print("ok")
"""


def run_child(isa, threads):
    return _run_script(textwrap.dedent(CHILD), 900, XENT_RS_ISA=isa,
                       CE_TEST_THREADS=str(threads))


@pytest.mark.parametrize("isa", PATHS)
def test_every_path_matches_the_reference_for_every_short_row_length(isa):
    one, two = run_child(isa, 1), run_child(isa, 2)
    assert one.splitlines()[-1] == "ok"
    # Deterministic chunking: means and gradients are bit-identical at 1 and 2 threads.
    assert one == two


@pytest.mark.parametrize("k", [2, 3, 8, 10, 16, 17, 31, 32])
def test_16_bit_gradients_are_the_float32_ones_rounded_once(k):
    """Within the vector blocks (the batch a multiple of 8 rows and one chunk), float16 and
    bfloat16 logits give exactly the float32 gradient of their widened values, rounded."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    rng = np.random.default_rng(k)
    n = 8 * (1000 // k)
    for dtype in (np.float16, ml_dtypes.bfloat16):
        x = (rng.standard_normal((n, k)) * 4).astype(dtype)
        t = rng.integers(0, k, n)
        _, g = xr.cross_entropy(x, t, return_grad=True)
        _, g32 = xr.cross_entropy(x.astype(np.float32), t, return_grad=True)
        np.testing.assert_array_equal(g.view(np.uint16), g32.astype(dtype).view(np.uint16))


def test_a_confident_row_keeps_its_tiny_loss_in_every_lane():
    """Rows whose loss is ~1e-26 (below float32's rounding of 1) in every lane position and
    in the ragged tail: the loss is log1p of the other terms, not log of a sum near 1."""
    from xent_rs import reference as ref
    for k in (2, 5, 10, 32):
        n = 43
        x = np.zeros((n, k), np.float32)
        x[:, 0] = 60.0
        x[:, 1:] = -np.linspace(0, 3, k - 1)
        t = np.zeros(n, np.int64)
        loss = xr.cross_entropy(x, t, reduction="none")
        want = ref.cross_entropy(x.astype(np.float64), t, reduction="none")
        np.testing.assert_allclose(loss, want, rtol=1e-6)
        assert np.all(loss > 0)
