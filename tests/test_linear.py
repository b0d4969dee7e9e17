"""linear_cross_entropy and info_nce against the unfused float64 composition."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest

import xent_rs as xr
from xent_rs import reference as ref


def problem(seed, n, d, v, dtype=np.float64, *, bias=True, ignore=0, scale=1.0):
    rng = np.random.default_rng(seed)
    h = (rng.standard_normal((n, d)) * scale).astype(dtype)
    w = (rng.standard_normal((v, d)) / np.sqrt(d)).astype(dtype)
    b = rng.standard_normal(v).astype(dtype) if bias else None
    t = rng.integers(0, v, n)
    if ignore:
        t[rng.choice(n, ignore, replace=False)] = -100
    return h, w, b, t


def unfused(h, w, b, t, **kw):
    """The composition the fused call must equal: reference cross-entropy of the full
    logits, and its gradients with respect to the layer by the chain rule, by hand."""
    h64, w64 = h.astype(np.float64), w.astype(np.float64)
    h2 = h64.reshape(t.size, h.shape[-1])
    z = h2 @ w64.T
    if b is not None:
        z = z + b.astype(np.float64)
    red = kw.get("reduction", "mean")
    loss, g = ref.cross_entropy(z, t.reshape(-1), reduction=red, return_grad=True,
                                label_smoothing=kw.get("label_smoothing", 0.0))
    if red == "none":
        loss = loss.reshape(t.shape)
    out = [loss, (g @ w64).reshape(h.shape), g.T @ h2]
    if b is not None:
        out.append(g.sum(axis=0))
    return out


def close(actual, expected, rtol, atol_rel=None):
    expected = np.asarray(expected, np.float64)
    scale = np.max(np.abs(expected)) if expected.size else 0.0
    atol = (rtol if atol_rel is None else atol_rel) * scale
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=rtol, atol=atol)


@pytest.mark.parametrize("chunk", [1, 7, 64, None])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_float64_equals_the_unfused_composition(chunk, reduction):
    h, w, b, t = problem(0, 37, 13, 1031, ignore=5)  # V not a multiple of anything
    got = xr.linear_cross_entropy(h, w, t, bias=b, reduction=reduction, return_grad=True,
                                  chunk_size=chunk)
    want = unfused(h, w, b, t, reduction=reduction)
    assert len(got) == 4
    for a, e in zip(got, want):
        close(a, e, 1e-12)


@pytest.mark.parametrize("chunk", [1, 7, 64, None])
def test_float32_within_rounding_of_the_products(chunk):
    h, w, b, t = problem(1, 70, 48, 777, np.float32, ignore=3)
    loss, gh, gw, gb = xr.linear_cross_entropy(h, w, t, bias=b, reduction="none",
                                               return_grad=True, chunk_size=chunk)
    assert loss.dtype == gh.dtype == gw.dtype == gb.dtype == np.float32
    want = unfused(h, w, b, t, reduction="none")
    # float32 logits carry about 1e-7·Σ|h_d w_d| of rounding; losses are O(log V).
    close(loss, want[0], 2e-6)
    for a, e in zip((gh, gw, gb), want[1:]):
        close(a, e, 1e-4, 2e-6)


def test_chunk_size_changes_only_rounding_and_threads_change_nothing():
    h, w, b, t = problem(2, 200, 32, 3001, np.float32, ignore=10)
    base = xr.linear_cross_entropy(h, w, t, bias=b, return_grad=True, chunk_size=64)
    for chunk in (1, 7, 200, None):
        other = xr.linear_cross_entropy(h, w, t, bias=b, return_grad=True, chunk_size=chunk)
        for a, e in zip(other, base):
            close(a, e, 1e-5, 1e-6)
    old = xr.get_num_threads()
    try:
        for threads in (1, 2, 3):
            xr.set_num_threads(threads)
            again = xr.linear_cross_entropy(h, w, t, bias=b, return_grad=True, chunk_size=64)
            for a, e in zip(again, base):
                np.testing.assert_array_equal(a, e)  # bit-identical
    finally:
        xr.set_num_threads(old)


def test_extra_leading_axes_and_no_bias():
    h, w, _, t = problem(3, 24, 8, 50, bias=False)
    h3, t3 = h.reshape(2, 3, 4, 8), t.reshape(2, 3, 4)
    loss, gh, gw = xr.linear_cross_entropy(h3, w, t3, return_grad=True, reduction="none",
                                           chunk_size=5)
    assert loss.shape == (2, 3, 4) and gh.shape == h3.shape and gw.shape == w.shape
    want = unfused(h3, w, None, t3, reduction="none")
    for a, e in zip((loss, gh, gw), want):
        close(a, e, 1e-12)


@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("zl", [0.0, 1e-3])
@pytest.mark.parametrize("cap", [None, 5.0])
def test_z_loss_softcap_label_smoothing_match_the_reference(eps, zl, cap):
    h, w, b, t = problem(4, 45, 16, 301, ignore=4, scale=3.0)
    kw = dict(bias=b, label_smoothing=eps, z_loss=zl, softcap=cap, return_grad=True)
    got = xr.linear_cross_entropy(h, w, t, chunk_size=8, **kw)
    want = ref.linear_cross_entropy(h, w, t, **kw)
    for a, e in zip(got, want):
        close(a, e, 1e-11)
    got32 = xr.linear_cross_entropy(*(x.astype(np.float32) for x in (h, w)), t,
                                    chunk_size=8, **{**kw, "bias": b.astype(np.float32)})
    for a, e in zip(got32, want):
        close(a, e, 1e-4, 3e-6)


def test_reference_twin_is_the_textbook_formula():
    # Closed form: z-loss and softcap on one row by hand.
    h = np.array([[1.0, -2.0]])
    w = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    c, zeta = 2.0, 0.01
    z = h @ w.T
    y = c * np.tanh(z / c)
    lse = np.log(np.exp(y).sum())
    want = lse - y[0, 1] + zeta * lse**2
    got = ref.linear_cross_entropy(h, w, np.array([1]), softcap=c, z_loss=zeta)
    assert got == pytest.approx(want, rel=1e-14)
    assert xr.linear_cross_entropy(h, w, np.array([1]), softcap=c, z_loss=zeta) == \
        pytest.approx(want, rel=1e-13)


def test_z_loss_mean_divides_by_the_non_ignored_rows_and_ignores_class_weighting():
    h, w, b, t = problem(5, 20, 6, 11, ignore=7)
    zl = 0.5
    plain = xr.linear_cross_entropy(h, w, t, bias=b, reduction="none")
    withz = xr.linear_cross_entropy(h, w, t, bias=b, reduction="none", z_loss=zl)
    z = h @ w.T + b
    lse = np.log(np.exp(z).sum(axis=1))
    valid = t != -100
    np.testing.assert_allclose(withz - plain, np.where(valid, zl * lse**2, 0.0), rtol=1e-12,
                               atol=1e-14)
    mean = xr.linear_cross_entropy(h, w, t, bias=b, z_loss=zl)
    assert mean == pytest.approx(withz.sum() / valid.sum(), rel=1e-13)


def test_masked_classes_stay_masked_under_softcap():
    h, w, b, t = problem(6, 10, 4, 9)
    b[[2, 5]] = -np.inf
    t[t == 2] = 0
    t[t == 5] = 1
    got = xr.linear_cross_entropy(h, w, t, bias=b, softcap=3.0, return_grad=True)
    want = ref.linear_cross_entropy(h, w, t, bias=b, softcap=3.0, return_grad=True)
    for a, e in zip(got, want):
        close(a, e, 1e-12)
    assert np.isfinite(got[0]) and np.all(got[3][[2, 5]] == 0.0)
    # Without the cap the masked class is still exactly zero probability.
    z = h @ w.T + b
    assert xr.linear_cross_entropy(h, w, t, bias=b) == pytest.approx(
        ref.cross_entropy(z, t), rel=1e-13)


@pytest.mark.parametrize("v", [1, 2, 10])
def test_few_classes_and_empty_batches(v):
    h, w, b, t = problem(7, 9, 5, v)
    got = xr.linear_cross_entropy(h, w, t, bias=b, return_grad=True, chunk_size=4)
    for a, e in zip(got, unfused(h, w, b, t)):
        close(a, e, 1e-12)
    e = xr.linear_cross_entropy(h[:0], w, t[:0], bias=b, return_grad=True)
    assert np.isnan(e[0]) and e[1].shape == (0, 5)
    assert np.all(e[2] == 0) and np.all(e[3] == 0)
    assert xr.linear_cross_entropy(h[:0], w, t[:0], reduction="sum") == 0.0


def test_all_rows_ignored_gives_nan_mean_and_zero_gradients():
    h, w, b, t = problem(8, 6, 3, 4)
    t[:] = -100
    loss, gh, gw, gb = xr.linear_cross_entropy(h, w, t, bias=b, return_grad=True)
    assert np.isnan(loss)
    assert not gh.any() and not gw.any() and not gb.any()


def test_large_logits_scale():
    h, w, b, t = problem(9, 16, 8, 40, scale=1e4)
    got = xr.linear_cross_entropy(h, w, t, bias=b, reduction="none", return_grad=True)
    for a, e in zip(got, unfused(h, w, b, t, reduction="none")):
        close(a, e, 1e-11)


def test_sixteen_bit_inputs_accumulate_in_float32():
    ml = pytest.importorskip("ml_dtypes")
    h, w, b, t = problem(10, 12, 8, 30, np.float32)
    for dt in (np.float16, ml.bfloat16):
        hh, ww = h.astype(dt), w.astype(dt)
        loss, gh, gw = xr.linear_cross_entropy(hh, ww, t, return_grad=True)
        assert loss.dtype == np.float32 and gh.dtype == dt and gw.dtype == dt
        want = unfused(hh.astype(np.float64), ww.astype(np.float64), None, t)
        close(loss, want[0], 1e-6)
        close(gh.astype(np.float64), want[1], 1e-2, 1e-2)


def test_mixed_float64_computes_in_float64():
    h, w, b, t = problem(11, 5, 4, 6)
    loss = xr.linear_cross_entropy(h, w.astype(np.float32), t)
    assert loss.dtype == np.float64


@pytest.mark.parametrize("call, match", [
    (lambda h, w, b, t: xr.linear_cross_entropy(h, w[:, :-1], t), "weight"),
    (lambda h, w, b, t: xr.linear_cross_entropy(h, w[0], t), "weight"),
    (lambda h, w, b, t: xr.linear_cross_entropy(h, w[:0], t), "weight"),
    (lambda h, w, b, t: xr.linear_cross_entropy(h, w, t, bias=b[:-1]), "bias"),
    (lambda h, w, b, t: xr.linear_cross_entropy(h, w, t[:-1]), "target"),
    (lambda h, w, b, t: xr.linear_cross_entropy(h, w, t + 100), "target"),
    (lambda h, w, b, t: xr.linear_cross_entropy(h, w, -t - 1), "target"),
    (lambda h, w, b, t: xr.linear_cross_entropy(h, w, t, chunk_size=0), "chunk_size"),
    (lambda h, w, b, t: xr.linear_cross_entropy(h, w, t, chunk_size=-3), "chunk_size"),
    (lambda h, w, b, t: xr.linear_cross_entropy(h, w, t, softcap=0.0), "softcap"),
    (lambda h, w, b, t: xr.linear_cross_entropy(h, w, t, z_loss=-1.0), "z_loss"),
    (lambda h, w, b, t: xr.linear_cross_entropy(h, w, t, label_smoothing=2.0),
     "label_smoothing"),
    (lambda h, w, b, t: xr.linear_cross_entropy(h, w, t, reduction="avg"), "reduction"),
    (lambda h, w, b, t: xr.info_nce(h, h[:-1]), "b"),
    (lambda h, w, b, t: xr.info_nce(h, h, temperature=0.0), "temperature"),
    (lambda h, w, b, t: xr.info_nce(h, h, temperature=-1.0), "temperature"),
    (lambda h, w, b, t: xr.info_nce(h[0], h[0]), "a"),
])
def test_bad_input_raises_value_error_naming_the_argument(call, match):
    h, w, b, t = problem(12, 6, 4, 5)
    with pytest.raises(ValueError, match=f"^{match}:"):
        call(h, w, b, t)


def test_bad_types_raise_type_error():
    h, w, b, t = problem(13, 6, 4, 5)
    with pytest.raises(TypeError, match="^hidden:"):
        xr.linear_cross_entropy(h.astype(np.int32), w, t)
    with pytest.raises(TypeError, match="^target:"):
        xr.linear_cross_entropy(h, w, t.astype(str))
    with pytest.raises(TypeError, match="^chunk_size:"):
        xr.linear_cross_entropy(h, w, t, chunk_size=2.5)


def test_the_core_refuses_inconsistent_buffers():
    from xent_rs import _core
    h, w, _, t = problem(14, 6, 4, 5, np.float32)
    with pytest.raises(ValueError, match="^hidden:"):
        _core.linear_cross_entropy(h, w, None, t, 3, 5, -100, 0.0, 0.0, None, 1.0, 1.0, 0)
    with pytest.raises(ValueError, match="^grad_hidden:"):
        _core.linear_cross_entropy(h, w, None, t, 4, 5, -100, 0.0, 0.0, None, 1.0, 1.0, 0,
                                   None, None, np.empty((5, 4), np.float32))
    with pytest.raises(TypeError, match="^weight:"):
        _core.linear_cross_entropy(h, w.astype(np.float64), None, t, 4, 5, -100, 0.0, 0.0,
                                   None, 1.0, 1.0, 0)


# --- InfoNCE ---------------------------------------------------------------------------

def clip_loss_numpy(a, b, tau):
    """CLIP's loss written out: mean of the two directions' cross-entropies against arange."""
    s = a.astype(np.float64) @ b.astype(np.float64).T / tau
    idx = np.arange(len(a))
    return 0.5 * (ref.cross_entropy(s, idx) + ref.cross_entropy(s.T, idx))


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_info_nce_matches_the_reference(symmetric, reduction):
    rng = np.random.default_rng(20)
    a, b = rng.standard_normal((2, 67, 9))
    got = xr.info_nce(a, b, temperature=0.3, symmetric=symmetric, reduction=reduction,
                      return_grad=True)
    want = ref.info_nce(a, b, temperature=0.3, symmetric=symmetric, reduction=reduction,
                        return_grad=True)
    for x, e in zip(got, want):
        close(x, e, 1e-12)
    got32 = xr.info_nce(a.astype(np.float32), b.astype(np.float32), temperature=0.3,
                        symmetric=symmetric, reduction=reduction, return_grad=True)
    for x, e in zip(got32, want):
        close(x, e, 1e-4, 3e-6)


def test_info_nce_against_the_clip_composition_and_torch():
    rng = np.random.default_rng(21)
    a, b = rng.standard_normal((2, 40, 16))
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    loss = xr.info_nce(a, b, temperature=0.07)
    assert loss == pytest.approx(clip_loss_numpy(a, b, 0.07), rel=1e-12)
    torch = pytest.importorskip("torch")
    ta = torch.tensor(a, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    s = ta @ tb.T / 0.07
    idx = torch.arange(40)
    tl = 0.5 * (torch.nn.functional.cross_entropy(s, idx)
                + torch.nn.functional.cross_entropy(s.T, idx))
    tl.backward()
    loss, ga, gb = xr.info_nce(a, b, temperature=0.07, return_grad=True)
    assert loss == pytest.approx(tl.item(), rel=1e-12)
    close(ga, ta.grad.numpy(), 1e-11)
    close(gb, tb.grad.numpy(), 1e-11)


def test_info_nce_none_is_the_mean_of_both_directions_rows():
    rng = np.random.default_rng(22)
    a, b = rng.standard_normal((2, 11, 3))
    s = a @ b.T / 0.5
    idx = np.arange(11)
    rows = 0.5 * (ref.cross_entropy(s, idx, reduction="none")
                  + ref.cross_entropy(s.T, idx, reduction="none"))
    close(xr.info_nce(a, b, temperature=0.5, reduction="none"), rows, 1e-12)
    close(xr.info_nce(a, b, temperature=0.5, symmetric=False, reduction="none"),
          ref.cross_entropy(s, idx, reduction="none"), 1e-12)


def test_info_nce_empty_and_single_pair():
    z = np.zeros((0, 4))
    assert np.isnan(xr.info_nce(z, z))
    one = np.ones((1, 4))
    loss, ga, gb = xr.info_nce(one, one, return_grad=True)
    assert loss == 0.0 and not ga.any() and not gb.any()


# --- memory ----------------------------------------------------------------------------

def test_no_logits_sized_allocation_tracemalloc():
    n, d, v = 2048, 16, 8192  # logits would be 64 MB of float32
    h, w, b, t = problem(30, n, d, v, np.float32)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        xr.linear_cross_entropy(h, w, t, bias=b, return_grad=True, chunk_size=64)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    outputs = h.nbytes + w.nbytes + b.nbytes
    assert peak < outputs + 1_000_000, (peak, outputs)  # the gradients, no (N, V) array


CHILD = """
import resource, sys, numpy as np, xent_rs as xr
n, d, v = 8192, 8, 32768
rng = np.random.default_rng(0)
h = rng.standard_normal((n, d), dtype=np.float32)
w = rng.standard_normal((v, d), dtype=np.float32)
t = rng.integers(0, v, n)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
loss, gh, gw = xr.linear_cross_entropy(h, w, t, return_grad=True)
assert np.isfinite(loss)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(before, after)
"""


PARENT = """
import resource, subprocess, sys
out = subprocess.run([sys.executable, "-c", sys.argv[1]], capture_output=True, text=True,
                     check=True)
print(out.stdout.strip(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


@pytest.mark.slow
def test_no_logits_sized_allocation_peak_rss_of_a_child():
    import os
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    # A small parent (no NumPy) runs the child, so its RUSAGE_CHILDREN peak is the child's.
    out = subprocess.run([sys.executable, "-c", PARENT, textwrap.dedent(CHILD)], env=env,
                         capture_output=True, text=True, check=True, timeout=600)
    before, after, child_peak = (int(x) * 1024 for x in out.stdout.split())
    # The logits of 8192 × 32768 float32 would be 1 GiB; the chunk buffer is 48 MiB.
    assert after - before < 150 * 2**20, (before, after)
    assert child_peak < 500 * 2**20, child_peak
    assert child_peak >= after  # the parent saw the child's own peak


def test_zero_features_and_huge_chunk_size():
    h, w, b, t = problem(15, 6, 0, 4)
    loss, gh, gw, gb = xr.linear_cross_entropy(h, w, t, bias=b, return_grad=True,
                                               chunk_size=10**30)
    want = unfused(h, w, b, t)
    for a, e in zip((loss, gh, gw, gb), want):
        close(a, e, 1e-12)
    assert gh.shape == (6, 0) and gw.shape == (4, 0)
