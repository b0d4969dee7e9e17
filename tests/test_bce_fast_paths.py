"""The BCE vector kernel's fast paths on every instruction-set path this CPU has
(``XENT_RS_ISA`` in a child interpreter) at 1 and 2 threads: hard (0/1) and soft targets,
float16 and bfloat16 logits widened in registers, logits past float32's exponent range
(the flushed-lane fix-up), all against the float64 reference; target range checks done
inside the fused pass, reporting the exact first bad position, with ``out=logits`` left
untouched by a failed call."""

import textwrap

import numpy as np
import pytest

import xent_rs as xr
from xent_rs import _core
from xent_rs import reference as ref
from conftest import run_script as _run_script

PATHS = _core.simd_paths_supported()

# Runs in the child: checks against the float64 reference, prints "ok".
CHILD = r"""
import os
import numpy as np, xent_rs as xr
from xent_rs import reference as ref
import ml_dtypes

ISA = os.environ["XENT_RS_ISA"]
xr.set_num_threads(int(os.environ["BCE_TEST_THREADS"]))
assert xr._core.simd_path() == ISA, xr._core.simd_path()
rng = np.random.default_rng(7)
N = 140_007                       # several chunks, in parallel, and a ragged tail
special = np.array([0.0, 1e4, -1e4, 88.0, -88.0, 90.0, -95.0, 104.0, 30.0, -30.0,
                    np.inf, -np.inf])
z64 = rng.standard_normal(N) * 4.0
z64[rng.integers(0, N, 600)] = rng.choice(special, 600)
targets = {
    "hard": rng.integers(0, 2, N).astype(np.float32),
    "soft": rng.random(N).astype(np.float32),
    "mixed": np.where(rng.random(N) < 0.5, rng.integers(0, 2, N), rng.random(N)).astype(
        np.float32),
}
dtypes = [np.float32, np.float16, ml_dtypes.bfloat16]
cases = [dict(), dict(pos_weight=np.array([3.0]), weight=np.array(0.5)),
         dict(label_smoothing=0.1), dict(pos_weight=np.array([0.0]))]

def ulp(v, dtype):
    v = np.abs(v.astype(dtype)).astype(np.float64)
    return np.nextafter(v.astype(dtype), np.array(np.inf, dtype)).astype(np.float64) - v

for dtype in dtypes:
    z = z64.astype(dtype)
    for tname, y in targets.items():
        for kw in cases:
            kw = dict(kw, reduction="none", return_grad=True, return_hess=True)
            got = xr.binary_cross_entropy_with_logits(z, y, **kw)
            want = ref.binary_cross_entropy_with_logits(z.astype(np.float64), y, **kw)
            for name, a, r in zip(("loss", "grad", "hess"), got, want):
                assert a.dtype == np.dtype(dtype), (name, a.dtype)
                a = a.astype(np.float64)
                with np.errstate(over="ignore"):
                    r_t = r.astype(dtype).astype(np.float64)
                fin = np.isfinite(r_t)
                assert np.array_equal(np.isnan(a), np.isnan(r_t)), (dtype, tname, kw, name)
                assert np.array_equal(a[~fin & ~np.isnan(r_t)], r_t[~fin & ~np.isnan(r_t)])
                size = np.abs(r)
                if name == "grad":   # a difference for soft targets: its terms' size
                    size = np.abs(r) + 4 * np.abs(want[2])
                if dtype == np.float32:
                    tol = 1e-6 * size + 1e-44
                else:                # the float32 working value rounded once
                    tol = 0.5 * ulp(r, dtype) * (1 + 2.0**-8) + 2e-7 * size + 1e-44
                err = np.abs(a - r)
                bad = fin & ~(err <= tol)
                assert not bad.any(), (ISA, dtype, tname, kw, name, z[bad][:4], y[bad][:4],
                                       a[bad][:4], r[bad][:4])
            # The mean is the sum of the element losses over N (bit-stable across threads).
            mean = xr.binary_cross_entropy_with_logits(z, y, **dict(kw, reduction="mean",
                                                                     return_hess=False))[0]
            fin = np.isfinite(want[0])
            if fin.all():
                assert abs(float(mean) - want[0].mean()) <= 1e-6 * abs(want[0].mean()) + 1e-30
            print(dtype.__name__ if hasattr(dtype, "__name__") else dtype, tname,
                  repr(float(mean)))

# Bad targets: the exact first position, on the fused path and in place.
for dtype in dtypes:
    z = z64.astype(dtype)
    for first in (0, 5, 32767, 32768, 100_001, N - 1):
        for value in (-1e-30, 1.0000001, np.nan, 2.0, -np.inf):
            y = targets["mixed"].copy()
            y[first] = value
            if first + 40_000 < N:
                y[first + 40_000] = -1.0          # a later chunk's bad target is not the one
            for kw in (dict(), dict(return_grad=True), dict(return_grad=True, out="self"),
                       dict(weight=np.array(0.0))):
                kw = dict(kw)
                zz = z.copy()
                if kw.get("out") == "self":
                    kw["out"] = zz
                try:
                    xr.binary_cross_entropy_with_logits(zz, y, **kw)
                except ValueError as e:
                    assert f"at flat position {first}" in str(e), (ISA, dtype, first, str(e))
                else:
                    raise AssertionError("no error")
                # out=logits: the logits are untouched by the failed call.
                assert np.array_equal(zz.view(np.uint8), z.view(np.uint8))
print("ok")
"""


def run_child(isa, threads):
    return _run_script(textwrap.dedent(CHILD), 900, XENT_RS_ISA=isa,
                       BCE_TEST_THREADS=str(threads))


@pytest.mark.parametrize("isa", PATHS)
def test_every_path_matches_the_reference_and_reports_the_first_bad_target(isa):
    one, two = run_child(isa, 1), run_child(isa, 2)
    assert one.splitlines()[-1] == "ok"
    # Deterministic chunking: the mean losses are bit-identical at 1 and 2 threads.
    assert one == two


def test_float16_results_are_the_float32_results_of_the_widened_logits_rounded_once():
    """On the active path, float16 logits give exactly what their float32 widening gives,
    rounded once to float16 (widened in registers, the same kernel)."""
    rng = np.random.default_rng(3)
    z16 = (rng.standard_normal(50_001) * 5).astype(np.float16)
    y = rng.integers(0, 2, 50_001).astype(np.float32)
    kw = dict(reduction="none", return_grad=True)
    l16, g16 = xr.binary_cross_entropy_with_logits(z16, y, **kw)
    l32, g32 = xr.binary_cross_entropy_with_logits(z16.astype(np.float32), y, **kw)
    np.testing.assert_array_equal(l16, l32.astype(np.float16))
    np.testing.assert_array_equal(g16, g32.astype(np.float16))


def test_a_bad_target_reports_its_position_in_a_multi_dimensional_batch():
    z = np.zeros((300, 1000), np.float32)
    y = np.zeros((300, 1000), np.float32)
    y[170, 3] = 1.5
    y[299, 999] = -1.0
    with pytest.raises(ValueError, match=r"target: values must be in \[0, 1\]; found 1.5 at "
                                         r"flat position 170003"):
        xr.binary_cross_entropy_with_logits(z, y, return_grad=True, out=z)
    assert not z.any()


def test_soft_and_hard_targets_in_one_vector_agree_with_the_reference():
    # Lanes of one vector mixing 0/1 and soft targets take the general form.
    z = np.linspace(-20, 20, 33).astype(np.float32)
    y = np.array([0, 1] * 16 + [0.5], np.float32)
    for pw in (None, np.array([2.0])):
        got = xr.binary_cross_entropy_with_logits(z, y, pos_weight=pw, reduction="none")
        want = ref.binary_cross_entropy_with_logits(z.astype(np.float64), y, pos_weight=pw,
                                                    reduction="none")
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-44)
