"""Input conveniences (issue 10, item 1): lazily loaded submodules, whole-valued float class
indices, bfloat16 logits, float32 reduced losses for 16-bit logits, and the errors that
point at the fix (one-hot integer targets, non-whole float indices)."""

from __future__ import annotations

import numpy as np
import pytest

import xent_rs as xr
from xent_rs import _core, reference as ref
from conftest import run_script

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)


# --- lazily loaded submodules ---------------------------------------------------------------

def test_submodules_load_on_first_use_and_no_framework_is_imported():
    out = run_script("""
import sys
import xent_rs as xr
print(sorted(m for m in ("xent_rs.calibration", "xent_rs.reference", "torch", "jax",
                         "xgboost", "lightgbm", "matplotlib") if m in sys.modules))
print(xr.calibration.calibration_error.__module__.startswith("xent_rs.calibration"),
      xr.reference.cross_entropy.__module__)
try:
    xr.no_such_thing
except AttributeError as e:
    print("AttributeError", e)
""", 120)
    lines = out.splitlines()
    assert lines[0] == "[]"
    assert lines[1] == "True xent_rs.reference"
    assert lines[2].startswith("AttributeError") and "no_such_thing" in lines[2]


def test_submodules_are_listed_by_dir():
    assert {"calibration", "reference", "torch", "jax", "boosting"} <= set(dir(xr))


# --- float class indices --------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_whole_float_indices_are_class_indices(rng, dtype):
    x = rng.standard_normal((40, 7)).astype(np.float32)
    t = rng.integers(0, 7, 40)
    t[3] = -100
    want = xr.cross_entropy(x, t, label_smoothing=0.1, return_grad=True)
    got = xr.cross_entropy(x, t.astype(dtype), label_smoothing=0.1, return_grad=True)
    assert got[0] == want[0]
    np.testing.assert_array_equal(got[1], want[1])


def test_float_indices_of_one_row():
    # logits (K,): a 0-d float target is an index; a (K,) float target is probabilities.
    x = np.array([0.0, 1.0, 2.0])
    assert xr.cross_entropy(x, np.float64(2.0)) == pytest.approx(
        ref.cross_entropy(x, np.int64(2)), rel=1e-12)
    p = np.array([0.0, 0.0, 1.0])
    assert xr.cross_entropy(x, p) == pytest.approx(ref.cross_entropy(x, p), rel=1e-12)


@pytest.mark.parametrize("bad, pos", [(1.5, (1,)), (np.nan, (1,)), (np.inf, (1,)),
                                      (2.0**70, (1,))])
def test_non_whole_float_indices_are_refused_naming_the_position(bad, pos):
    t = np.array([0.0, bad, 2.0])
    with pytest.raises(ValueError, match=rf"target: .*whole.*position {pos!r}".replace(
            "(", r"\(").replace(")", r"\)")):
        xr.cross_entropy(np.zeros((3, 4)), t)


def test_one_hot_integer_targets_get_a_pointer_to_probabilities():
    with pytest.raises(ValueError, match="target: .*one-hot.*float probabilities"):
        xr.cross_entropy(np.zeros((3, 4), np.float32), np.eye(4, dtype=np.int64)[:3])
    # As floats they are probabilities, and give the index loss.
    onehot = np.eye(4)[[0, 1, 3]]
    assert xr.cross_entropy(np.zeros((3, 4)), onehot) == pytest.approx(np.log(4), rel=1e-12)


# --- bfloat16 -------------------------------------------------------------------------------

def bf16_logits(rng, shape, scale=3.0):
    return (rng.standard_normal(shape) * scale).astype(BF16)


def bf16_ulp(v):
    """The bfloat16 spacing at ``|v|`` (8 significant bits), as float64."""
    a = np.abs(np.asarray(v, np.float64))
    e = np.floor(np.log2(np.maximum(a, 2.0**-126)))
    return 2.0 ** (e - 7)


def test_bfloat16_cross_entropy_matches_the_reference(rng):
    x = bf16_logits(rng, (300, 37))
    t = rng.integers(0, 37, 300)
    loss, g, h, lse = xr.cross_entropy(x, t, label_smoothing=0.05, return_grad=True,
                                       return_hess=True, return_lse=True)
    x64 = x.astype(np.float64)
    lr, gr, hr, lser = ref.cross_entropy(x64, t, label_smoothing=0.05, return_grad=True,
                                         return_hess=True, return_lse=True)
    assert loss.dtype == np.float32  # a reduced loss of 16-bit logits is float32
    assert float(loss) == pytest.approx(lr, rel=1e-6)
    assert g.dtype == h.dtype == lse.dtype == BF16
    for got, want in ((g, gr), (h, hr), (lse, lser)):
        # Rounded once to bfloat16 from a float32 value: half a bfloat16 ulp (plus slack
        # for the float32 working value, 2^-16 of it).
        err = np.abs(got.astype(np.float64) - want)
        assert (err <= bf16_ulp(want) * (0.5 + 2.0**-8) + 1e-38).all()
    per_row = xr.cross_entropy(x, t, reduction="none")
    assert per_row.dtype == BF16


@pytest.mark.parametrize("isa", _core.simd_paths_supported())
def test_bfloat16_on_every_instruction_set(isa):
    out = run_script("""
import numpy as np, ml_dtypes, xent_rs as xr
x = np.array([[12.0, 0.0, 0.0], [-1e30, 3.0, 3.0]], ml_dtypes.bfloat16)
l, g = xr.cross_entropy(x, np.array([1, 2]), reduction="sum", return_grad=True)
print(repr(float(l)), *[repr(float(v)) for v in g.ravel()])
""", 120, XENT_RS_ISA=isa)
    vals = [float(v) for v in out.split()]
    x64 = np.array([[12.0, 0.0, 0.0], [-1e30, 3.0, 3.0]], BF16).astype(np.float64)
    lr, gr = ref.cross_entropy(x64, np.array([1, 2]), reduction="sum", return_grad=True)
    assert vals[0] == pytest.approx(lr, rel=1e-6)
    np.testing.assert_array_equal(vals[1:], gr.astype(BF16).astype(np.float64).ravel())


def test_bfloat16_building_blocks_and_bce(rng):
    x = bf16_logits(rng, (50, 9))
    x64 = x.astype(np.float64)
    for fn, rf in ((xr.softmax, ref.softmax), (xr.log_softmax, ref.log_softmax),
                   (xr.logsumexp, ref.logsumexp)):
        got = fn(x)
        assert got.dtype == BF16
        want = rf(x64)
        assert (np.abs(got.astype(np.float64) - want) <=
                bf16_ulp(want) * (0.5 + 2.0**-8) + 1e-38).all(), fn.__name__
    y = (rng.random((50, 9)) < 0.5).astype(np.float32)
    loss, g = xr.binary_cross_entropy_with_logits(x, y, return_grad=True)
    lr, gr = ref.binary_cross_entropy_with_logits(x64, y, return_grad=True)
    assert loss.dtype == np.float32 and g.dtype == BF16
    assert float(loss) == pytest.approx(lr, rel=1e-6)
    assert (np.abs(g.astype(np.float64) - gr) <= bf16_ulp(gr) * (0.5 + 2.0**-8) + 1e-38).all()


def test_bfloat16_in_place(rng):
    x = bf16_logits(rng, (20, 5))
    t = rng.integers(0, 5, 20)
    _, want = xr.cross_entropy(x, t, return_grad=True)
    y = x.copy()
    _, g = xr.cross_entropy(y, t, return_grad=True, out=y)
    assert g is y
    np.testing.assert_array_equal(g.view(np.uint16), want.view(np.uint16))


# --- reduced losses of 16-bit logits ----------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float16, BF16])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_reduced_losses_of_16_bit_logits_are_float32(rng, dtype, reduction):
    x = (rng.standard_normal((1000, 20)) * 2).astype(dtype)
    t = rng.integers(0, 20, 1000)
    loss = xr.cross_entropy(x, t, reduction=reduction)
    assert isinstance(loss, np.float32)
    want = ref.cross_entropy(x.astype(np.float64), t, reduction=reduction)
    # float32 keeps ~7 digits of the mean (float16 kept 3: 3.611 for 3.6117).
    assert float(loss) == pytest.approx(want, rel=2e-7)
    bce = xr.binary_cross_entropy_with_logits(x, (t % 2).astype(np.float32)[:, None] *
                                              np.ones(20, np.float32), reduction=reduction)
    assert isinstance(bce, np.float32)


def test_float_targets_keep_their_own_precision_for_bce():
    # 0.3 is 0.2998 in float16: the target is used as given, not rounded to the logits'.
    z = np.array([4.0], np.float16)
    got = xr.binary_cross_entropy_with_logits(z, np.array([0.3]), reduction="sum")
    want = ref.binary_cross_entropy_with_logits(np.array([4.0]), np.array([0.3]),
                                                reduction="sum")
    assert float(got) == pytest.approx(want, rel=1e-6)


# --- 16-bit calibration inputs: read in place, checked on their bits --------------------------

@pytest.mark.parametrize("dtype", [np.float16, BF16])
def test_16_bit_scores_are_checked_like_float32(dtype):
    from xent_rs import calibration as cal

    y = np.array([0, 1, 2])
    good = np.array([[0.5, 0.25, 0.25], [0.0, 1.0, -0.0], [0.125, 0.125, 0.75]])
    got = cal.calibration_error(good.astype(dtype), y, n_bins=4)
    assert got == pytest.approx(cal.calibration_error(good.astype(dtype).astype(np.float32),
                                                      y, n_bins=4), abs=0)
    cases = [(np.nan, False, "NaN"), (1.5, False, r"probabilities must lie in \[0, 1\]"),
             (-0.25, False, r"probabilities must lie in \[0, 1\]"),
             (np.inf, True, r"\+inf logits"), (np.nan, True, "NaN")]
    for value, logits, message in cases:
        bad = good.copy()
        bad[1, 1] = value
        with pytest.raises(ValueError, match=message):
            cal.calibration_error(bad.astype(dtype), y, from_logits=logits)
    masked = np.zeros((3, 3))
    masked[2] = -np.inf
    with pytest.raises(ValueError, match="every logit equal to -inf"):
        cal.calibration_error(masked.astype(dtype), y, from_logits=True)
    ok = np.zeros((3, 3))
    ok[2, :2] = -np.inf  # one class left in every row: fine
    assert np.isfinite(cal.calibration_error(ok.astype(dtype), y, from_logits=True))
