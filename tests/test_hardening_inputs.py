"""Hardening (issue 5), part 1: a systematic bad- and odd-input suite for every public function.

Every case has exactly one documented outcome: **R** — the result equals the float64 reference
(``xent_rs.reference``, or a closed form stated in the test; "= clean" means bit-identical to
the same call on a clean native, aligned, C-contiguous copy, whose agreement with the reference
is checked here too), or **E** — a ``TypeError`` / ``ValueError`` whose message starts with
the name of the argument at fault. Nothing else passes: no other exception type, no crash, no
Rust panic (``pyo3_runtime.PanicException`` derives from ``BaseException``; the bindings turn a
caught panic into ``RuntimeError``, which fails these tests as well).

Functions: ``xr.cross_entropy`` (CE), ``xr.binary_cross_entropy_with_logits`` (BCE),
``xr.softmax`` / ``xr.log_softmax`` / ``xr.logsumexp`` (rowwise), ``xr.set_num_threads``, and in
``xent_rs.calibration``: ``calibration_error``, ``reliability_diagram``, ``brier_score``,
``brier_decomposition``, ``fit_temperature``, ``energy_score``, ``CalibrationAccumulator``,
``loss_breakdown``, ``label_dependence`` (cal).

| input class                                            | where            | outcome             |
|--------------------------------------------------------|------------------|---------------------|
| scores None, strings, bytes, object, complex, datetime,| every function   | E TypeError naming  |
| structured, longdouble, ragged lists                   |                  | logits / probs /    |
|                                                        |                  | probs_or_logits /   |
|                                                        |                  | targets             |
| bool or integer scores                                 | all but          | E TypeError         |
|                                                        | label_dependence | (label_dependence:  |
|                                                        |                  | R, 0/1 data)        |
| array-likes: lists, tuples, np.matrix, memmap,         | every function   | R (= clean)         |
| read-only arrays                                       |                  |                     |
| other arguments of the wrong type (target, weight,     | every function   | E TypeError naming  |
| flags, reduction, ignore_index, label_smoothing, n,    |                  | the argument (bad   |
| n_bins, norm, strategy, convention, from_logits,       |                  | strings for choices:|
| sample_weight, temperature, threshold, other)          |                  | ValueError)         |
| 0-d logits                                             | CE, rowwise, cal | E ValueError        |
| 0-d logits                                             | BCE              | R (elementwise)     |
| K = 0                                                  | CE, rowwise,     | E ValueError logits |
|                                                        | energy, cal      | / probs             |
| K = 0 / zero-size batch                                | BCE; CE (0, K),  | R: empty results,   |
|                                                        | (2, 0, K);       | sum 0, mean NaN     |
|                                                        | rowwise (0, K)   | (as the reference)  |
| N = 0                                                  | cal one-shot     | E ValueError        |
|                                                        | Accumulator      | update: no-op;      |
|                                                        |                  | result(): E         |
| mismatched or merely broadcastable targets, labels,    | every function   | E ValueError naming |
| weights, sample weights (no implicit broadcasting      |                  | the argument        |
| except BCE weight / pos_weight, as PyTorch)            |                  |                     |
| labels of every integer dtype (and big-endian)         | CE, cal          | R (= int64 labels)  |
| labels < 0, >= K, 2**40, dtype max, uint64 >= 2**63    | CE, cal          | E ValueError target |
|                                                        |                  | / labels            |
| ignore_index 0, K, -1, -2**63, 2**63-1, dtype extremes | CE               | R                   |
| ignore_index >= 2**63, float, None, bool               | CE               | E ignore_index      |
| NaN / ±inf logits (every position, every option)       | CE, BCE, rowwise | R (NaN rows / inf   |
|                                                        |                  | exactly as ref.)    |
| NaN / +inf logits                                      | cal (N, K)       | E ValueError        |
| ±inf binary logits                                     | cal (N,)         | R (sigmoid 0 / 1)   |
| NaN probability targets                                | CE               | R (NaN rows)        |
| ±inf probability targets                               | CE               | R or E target       |
| NaN / ±inf BCE targets, weights, pos_weight,           | CE, BCE, cal     | E ValueError naming |
| label_smoothing, sample_weight, class weight,          |                  | the argument        |
| temperature, threshold                                 |                  |                     |
| extreme but finite values (1e308 logits, tiny T)       | energy_score,    | R (closed form)     |
|                                                        | fit_temperature  |                     |
| out=: wrong shape, dtype, byte order, layout,          | CE, BCE, softmax,| E ValueError / Type-|
| read-only, misaligned, not an array, without           | log_softmax      | Error naming out    |
| return_grad, overlapping views of logits or target     |                  |                     |
| that are not the logits themselves                     |                  |                     |
| out=logits, out=a view with logits' own data & strides | CE, BCE, softmax,| R (in place)        |
|                                                        | log_softmax      |                     |
| out= np.matrix / np.memmap                             | softmax, CE      | R, written to out   |
| non-native byte order, misaligned (byte offset 1),     | every array      | R (= clean)         |
| negative strides, non-contiguous, Fortran order        | argument of      |                     |
|                                                        | every function   |                     |
| logits mutated by another Python thread during a call  | CE, BCE, softmax | no crash; each row's|
| (writer swaps whole-array values between 0 and c)      |                  | result within the   |
|                                                        |                  | envelope of values  |
|                                                        |                  | any mix of the two  |
|                                                        |                  | states gives; exact |
|                                                        |                  | again once it stops |
| set_num_threads(n): n < 1, n >= 2**64, non-integers    | set_num_threads  | E naming n          |
| set_num_threads(2**40)                                 | set_num_threads  | E naming n, or the  |
|                                                        |                  | next call finishes  |
|                                                        |                  | promptly, correctly |
| n_bins = 2**62 (unallocatable)                         | cal              | E ValueError naming |
|                                                        |                  | n_bins, or          |
|                                                        |                  | MemoryError         |
| private _core functions called with inconsistent sizes,| xent_rs._core    | TypeError,          |
| dtypes, layouts, labels, aliasing (no validation)      |                  | ValueError, or      |
|                                                        |                  | OverflowError (int  |
|                                                        |                  | conversion), never  |
|                                                        |                  | a panic             |
| random hostile objects in every argument (hypothesis)  | every function   | a result, or E      |
"""

from __future__ import annotations

import math
import textwrap
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import xent_rs as xr
from xent_rs import _core
from xent_rs import calibration as cal
from xent_rs import reference as ref
from conftest import assert_close, misaligned, raises, run_script

pytestmark = pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")

INT_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]
RNG = np.random.default_rng(55)
N, K = 37, 5
X32 = (RNG.standard_normal((N, K)) * 3).astype(np.float32)
X64 = X32.astype(np.float64)
T = RNG.integers(0, K, N)
T[:20] = X32[:20].argmax(axis=1)  # mostly right: a finite temperature exists
TB = (X32[:, 0] > 0).astype(np.int64)  # binary labels, mostly right, 6 wrong
TB[:6] = 1 - TB[:6]
P32 = RNG.random((N, K)).astype(np.float32)
P32 /= P32.sum(axis=1, keepdims=True)
Y32 = (RNG.random((N, K)) > 0.5).astype(np.float32)
W = RNG.random(K) + 0.5
PW = RNG.random(K) * 3
SW = RNG.random(N) + 0.1
HW = np.ones(N, np.float64)


def variant(a, kind):
    """``a`` with the same values in an odd memory layout."""
    a = np.asarray(a)
    if kind == "big_endian":
        return a.astype(a.dtype.newbyteorder(">"))
    if kind == "misaligned":
        return misaligned(a)
    if kind == "reversed":  # negative strides along every axis
        return np.flip(np.flip(a).copy())
    if kind == "strided":  # every other element of a larger buffer
        big = np.zeros(a.shape + (2,), dtype=a.dtype)
        big[..., 0] = a
        return big[..., 0]
    if kind == "fortran":
        return np.asfortranarray(a)
    if kind == "readonly":
        c = a.copy()
        c.flags.writeable = False
        return c
    raise AssertionError(kind)


VARIANTS = ["big_endian", "misaligned", "reversed", "strided", "fortran", "readonly"]


def flat_values(res):
    """Every number in a result (tuples, arrays, scalars, result objects), as float64 arrays."""
    if isinstance(res, tuple) and not hasattr(res, "_fields"):
        out = []
        for r in res:
            out += flat_values(r)
        return out
    if hasattr(res, "_asdict"):  # BrierDecomposition
        return [np.asarray(list(res), dtype=np.float64)]
    if isinstance(res, cal.ReliabilityDiagram):
        return [res.edges, res.counts, res.mean_confidence, res.accuracy]
    if isinstance(res, cal.LossBreakdown):
        return [res.class_loss, res.class_count.astype(np.float64), res.class_accuracy,
                res.class_loss_share,
                np.array([res.mean_loss, res.accuracy, res.confident_wrong_count,
                          res.confident_wrong_share])]
    if isinstance(res, cal.CalibrationResult):
        d = res.as_dict()
        return [np.array([float(v) for v in d.values()])] + flat_values(res.diagram)
    return [np.asarray(res, dtype=np.float64)]


def assert_same(a, b):
    """Bit-identical results (NaN equal to NaN)."""
    fa, fb = flat_values(a), flat_values(b)
    assert len(fa) == len(fb)
    for u, v in zip(fa, fb):
        assert u.shape == v.shape
        np.testing.assert_array_equal(u, v)


# Calibration functions that take (scores, labels): (name of the scores argument, call).
CAL2 = {
    "calibration_error": ("probs", lambda s, y, **kw: cal.calibration_error(
        s, y, from_logits=True, **kw)),
    "reliability_diagram": ("probs", lambda s, y, **kw: cal.reliability_diagram(
        s, y, from_logits=True, **kw)),
    "brier_score": ("probs", lambda s, y, **kw: cal.brier_score(s, y, from_logits=True, **kw)),
    "brier_decomposition": ("probs", lambda s, y, **kw: cal.brier_decomposition(
        s, y, from_logits=True, **kw)),
    "fit_temperature": ("logits", lambda s, y, **kw: cal.fit_temperature(s, y, **kw)),
    "loss_breakdown": ("logits", lambda s, y, **kw: cal.loss_breakdown(s, y, **kw)),
    "accumulator": ("probs_or_logits", lambda s, y, **kw: cal.CalibrationAccumulator(
        from_logits=True).update(s, y, **kw).result()),
}
# Which of them take sample_weight (the others take a per-class `weight` or nothing).
CAL2_SAMPLE_WEIGHT = ["calibration_error", "reliability_diagram", "brier_score",
                      "brier_decomposition", "accumulator"]

ROWWISE = {"softmax": xr.softmax, "log_softmax": xr.log_softmax, "logsumexp": xr.logsumexp}


# =============================================================================================
# Wrong types
# =============================================================================================

BAD_SCORE_OBJECTS = {
    "None": None,
    "strings": [["a", "b"], ["c", "d"]],
    "bytes": np.array([[b"a", b"b"]]),
    "object": np.array([[1.0, 2.0], [3.0, 4.0]], dtype=object),
    "complex": np.zeros((2, 2), dtype=complex),
    "datetime": np.zeros((2, 2), dtype="M8[s]"),
    "timedelta": np.zeros((2, 2), dtype="m8[s]"),
    "structured": np.zeros((2, 2), dtype=[("a", "f4"), ("b", "f4")]),
    "longdouble": np.zeros((2, 2), dtype=np.longdouble),
    "ragged": [[1.0], [1.0, 2.0]],
    "dict": {"a": 1.0},
}
INT_LIKE_SCORES = {
    "bool": np.zeros((2, 2), dtype=bool),
    "int8": np.zeros((2, 2), dtype=np.int8),
    "int64": np.zeros((2, 2), dtype=np.int64),
    "uint64": np.zeros((2, 2), dtype=np.uint64),
}


@pytest.mark.parametrize("bad", list(BAD_SCORE_OBJECTS) + list(INT_LIKE_SCORES))
def test_bad_logits_types_everywhere(bad):
    value = {**BAD_SCORE_OBJECTS, **INT_LIKE_SCORES}[bad]
    if np.dtype(np.longdouble) == np.dtype(np.float64) and bad == "longdouble":
        pytest.skip("longdouble is float64 on this platform")
    t2 = np.array([0, 1])
    raises(TypeError, "logits", xr.cross_entropy, value, t2)
    raises(TypeError, "logits", xr.binary_cross_entropy_with_logits, value, np.zeros((2, 2)))
    for fn in ROWWISE.values():
        raises(TypeError, "logits", fn, value)
    if bad == "longdouble":  # calibration takes any float array (see the next test)
        return
    for name, (arg, fn) in CAL2.items():
        raises(TypeError, arg, fn, value, t2)
    raises(TypeError, "logits", cal.energy_score, value)
    if bad in INT_LIKE_SCORES:  # 0/1 integer and bool data are label_dependence's input
        got = cal.label_dependence(value)
        np.testing.assert_allclose(got, ref.label_dependence(value), rtol=1e-12, atol=1e-15)
    else:
        raises(TypeError, "targets", cal.label_dependence, value)


def test_longdouble_scores_in_calibration_are_float64():
    """The calibration module takes any float array, converting longdouble to float64."""
    x = X64.astype(np.longdouble)
    for name, (_, fn) in CAL2.items():
        assert_same(fn(x, T), fn(X64, T))
    assert_same(cal.energy_score(x), cal.energy_score(X64))
    y = (X64 > 0).astype(np.longdouble)
    assert_same(cal.label_dependence(y), cal.label_dependence(y.astype(np.float64)))


def _array_like(kind, a, tmp_path):
    """``a`` as a list, tuple, np.matrix (2-D only), np.memmap or read-only array."""
    a = np.asarray(a)
    if kind == "list":
        return a.tolist()
    if kind == "tuple":
        return tuple(map(tuple, a.tolist())) if a.ndim == 2 else tuple(a.tolist())
    if kind == "matrix":
        return np.matrix(a) if a.ndim == 2 else a
    if kind == "memmap":
        path = tmp_path / f"memmap{len(list(tmp_path.iterdir()))}"  # one file per array
        m = np.memmap(path, dtype=a.dtype, mode="w+", shape=a.shape)
        m[...] = a
        return m
    return variant(a, "readonly")


ARRAY_LIKES = ["list", "tuple", "matrix", "memmap", "readonly"]


@pytest.mark.parametrize("kind", ARRAY_LIKES)
@pytest.mark.parametrize("name", list(CAL2) + ["energy_score", "label_dependence"])
def test_array_likes_are_accepted_by_calibration(kind, name, tmp_path):
    """ndarray subclasses (np.matrix) are read as plain arrays, like np.asarray does."""
    make = lambda a: _array_like(kind, a, tmp_path)  # noqa: E731
    if name == "energy_score":
        assert_same(cal.energy_score(make(X64)), cal.energy_score(X64))
    elif name == "label_dependence":
        y01 = (X64 > 0).astype(np.int64)
        assert_same(cal.label_dependence(make(y01)), cal.label_dependence(y01))
    else:
        fn = CAL2[name][1]
        assert_same(fn(make(X64), make(T)), fn(X64, T))
        assert_same(fn(make(X64[:, 0]), make(TB)), fn(X64[:, 0], TB))


@pytest.mark.parametrize("kind", ARRAY_LIKES)
def test_array_likes_are_accepted(kind, tmp_path):
    make = lambda a: _array_like(kind, a, tmp_path)  # noqa: E731
    x, t = X64, T
    assert_same(xr.cross_entropy(make(x), make(t), return_grad=True, reduction="none"),
                xr.cross_entropy(x, t, return_grad=True, reduction="none"))
    got = xr.binary_cross_entropy_with_logits(make(x), make(Y32.astype(np.float64)),
                                              reduction="none", return_grad=True)
    want = xr.binary_cross_entropy_with_logits(x, Y32.astype(np.float64), reduction="none",
                                               return_grad=True)
    assert_same(tuple(np.asarray(g) for g in got), want)
    for fn in ROWWISE.values():
        np.testing.assert_array_equal(np.asarray(fn(make(x))), fn(x))
    # ... and the clean call is the reference.
    assert_close(xr.cross_entropy(x, t, reduction="none"),
                 ref.cross_entropy(x, t, reduction="none"), np.float64)


@pytest.mark.parametrize("bad, exc", [
    (None, TypeError), (np.zeros(N, complex), TypeError), (np.zeros(N, object), TypeError),
    (np.array(["a"] * N), TypeError), (np.zeros(N, "M8[s]"), TypeError),
    (np.zeros(N, bool), TypeError), ([[0], [1, 2]], TypeError)])
def test_bad_target_types(bad, exc):
    raises(exc, "target", xr.cross_entropy, X32, bad)


@pytest.mark.parametrize("bad", [None, np.zeros((N, K), complex), np.zeros((N, K), object),
                                 np.full((N, K), "a"), np.zeros((N, K), "M8[s]")])
def test_bad_bce_target_types(bad):
    raises(TypeError, "target", xr.binary_cross_entropy_with_logits, X32, bad)


@pytest.mark.parametrize("bad", [["a"] * K, np.ones(K, complex), np.ones(K, object),
                                 np.ones(K, "M8[s]"), [[1.0], [1.0, 2.0]]])
def test_bad_weight_types(bad):
    raises(TypeError, "weight", xr.cross_entropy, X32, T, weight=bad)
    raises(TypeError, "weight", xr.binary_cross_entropy_with_logits, X32, Y32, weight=bad)
    raises(TypeError, "pos_weight", xr.binary_cross_entropy_with_logits, X32, Y32,
           pos_weight=bad)
    raises(TypeError, "weight", cal.fit_temperature, X32, T, weight=bad)


def test_bool_weights_are_zero_one_weights():
    w = np.array([True, False, True, True, False])
    assert_close(xr.cross_entropy(X64, T, weight=w, reduction="none"),
                 ref.cross_entropy(X64, T, weight=w.astype(float), reduction="none"),
                 np.float64)


@pytest.mark.parametrize("flag", ["return_grad", "return_hess", "return_lse"])
@pytest.mark.parametrize("bad", [None, 1, 0, "yes", 1.0, np.array(True)])
def test_bad_flags(flag, bad):
    raises(TypeError, flag, xr.cross_entropy, X32, T, **{flag: bad})
    if flag != "return_lse":
        raises(TypeError, flag, xr.binary_cross_entropy_with_logits, X32, Y32, **{flag: bad})


def test_numpy_bool_flags_work():
    got = xr.cross_entropy(X64, T, return_grad=np.bool_(True), return_lse=np.True_)
    want = ref.cross_entropy(X64, T, return_grad=True, return_lse=True)
    for a, b in zip(got, want):
        assert_close(a, b, np.float64)


@pytest.mark.parametrize("bad", [None, 1.5, "3", True, np.float64(2.0), [1], 2**63, 2**64,
                                 -(2**63) - 1, np.uint64(2**64 - 1)])
def test_bad_ignore_index(bad):
    exc = ValueError if isinstance(bad, (int, np.integer)) and not isinstance(bad, bool) \
        else TypeError
    raises(exc, "ignore_index", xr.cross_entropy, X32, T, ignore_index=bad)


@pytest.mark.parametrize("bad, exc", [
    ("0.1", TypeError), (None, TypeError), (0.1 + 0j, TypeError), (True, TypeError),
    (np.array(0.1), TypeError), ([0.1], TypeError), (-1e-300, ValueError),
    (1.0 + 1e-15, ValueError), (-np.inf, ValueError), (np.inf, ValueError),
    (np.nan, ValueError), (np.float32(np.nan), ValueError)])
def test_bad_label_smoothing(bad, exc):
    raises(exc, "label_smoothing", xr.cross_entropy, X32, T, label_smoothing=bad)
    raises(exc, "label_smoothing", xr.binary_cross_entropy_with_logits, X32, Y32,
           label_smoothing=bad)


@pytest.mark.parametrize("eps", [np.float32(0.25), np.float16(0.25), 0.25, 1, 0,
                                 __import__("fractions").Fraction(1, 4)])
def test_real_label_smoothing_types(eps):
    got = xr.cross_entropy(X64, T, label_smoothing=eps, reduction="none")
    assert_close(got, ref.cross_entropy(X64, T, label_smoothing=float(eps), reduction="none"),
                 np.float64)


@pytest.mark.parametrize("bad", [None, "avg", "MEAN", "", 0, b"mean", ["mean"]])
def test_bad_reduction(bad):
    raises(ValueError, "reduction", xr.cross_entropy, X32, T, reduction=bad)
    raises(ValueError, "reduction", xr.binary_cross_entropy_with_logits, X32, Y32,
           reduction=bad)


@pytest.mark.parametrize("bad, exc", [
    (None, TypeError), ("2", TypeError), (2.0, TypeError), (True, TypeError),
    ([2], TypeError), (0, ValueError), (-1, ValueError), (-(2**70), ValueError),
    (2**64, ValueError), (2**70, ValueError)])
def test_bad_set_num_threads(bad, exc, restore_threads):
    """2**64 and above do not fit the core's usize: still a ValueError naming n (not an
    OverflowError from the argument conversion)."""
    before = xr.get_num_threads()
    raises(exc, "n", xr.set_num_threads, bad)
    assert xr.get_num_threads() == before


def test_numpy_integer_thread_counts(restore_threads):
    for n in (np.int8(2), np.uint64(3), np.int64(1)):
        xr.set_num_threads(n)
        assert xr.get_num_threads() == int(n)
        assert xr.cross_entropy(X64, T) == xr.cross_entropy(X64, T)


HUGE_THREADS = textwrap.dedent("""
    import numpy as np, xent_rs as xr
    try:
        xr.set_num_threads(2**40)
    except ValueError as exc:
        assert str(exc).startswith("n"), exc
        print("refused")
    else:
        x = np.zeros((4000, 500), np.float32)          # big enough for the thread pool
        loss = xr.cross_entropy(x, np.zeros(4000, np.int64))
        assert abs(float(loss) - np.log(500)) < 1e-6, loss
        print("ran")
""")


def test_absurd_thread_count_neither_hangs_nor_crashes():
    """set_num_threads(2**40) must be refused (ValueError naming n) or leave the library
    usable: the next call that would use the pool returns the right loss (a hang fails
    after 120 s; the script takes about a second)."""
    out = run_script(HUGE_THREADS, timeout=120)
    assert out.strip() in ("refused", "ran")


CAL_CHOICES = [("norm", "l3"), ("norm", None), ("strategy", "equal"), ("strategy", 1),
               ("convention", "left"), ("convention", b"right")]


@pytest.mark.parametrize("arg, bad", CAL_CHOICES)
def test_bad_calibration_choices(arg, bad):
    raises(ValueError, arg, cal.calibration_error, X32, T, from_logits=True, **{arg: bad})
    if arg != "norm":
        for fn in (cal.reliability_diagram, cal.brier_decomposition):
            raises(ValueError, arg, fn, X32, T, from_logits=True, **{arg: bad})
    if arg == "convention":
        raises(ValueError, arg, cal.CalibrationAccumulator, convention=bad)


@pytest.mark.parametrize("bad, exc", [(0, ValueError), (-3, ValueError), (1.5, TypeError),
                                      (True, TypeError), (None, TypeError), ("5", TypeError),
                                      (np.float64(5), TypeError)])
def test_bad_n_bins(bad, exc):
    for fn in (cal.calibration_error, cal.reliability_diagram, cal.brier_decomposition):
        raises(exc, "n_bins", fn, X32, T, from_logits=True, n_bins=bad)
    raises(exc, "n_bins", cal.CalibrationAccumulator, n_bins=bad)


@pytest.mark.parametrize("fn", ["calibration_error", "reliability_diagram",
                                "brier_decomposition", "accumulator"])
def test_unallocatable_n_bins_is_refused_by_name(fn):
    """n_bins = 2**62 cannot be allocated: a ValueError naming n_bins (or a MemoryError),
    not NumPy's anonymous 'array is too big'."""
    call = {"calibration_error": lambda: cal.calibration_error(X32, T, n_bins=2**62,
                                                               from_logits=True),
            "reliability_diagram": lambda: cal.reliability_diagram(X32, T, n_bins=2**62,
                                                                   from_logits=True),
            "brier_decomposition": lambda: cal.brier_decomposition(X32, T, n_bins=2**62,
                                                                   from_logits=True),
            "accumulator": lambda: cal.CalibrationAccumulator(n_bins=2**62)}[fn]
    try:
        call()
    except MemoryError:
        return
    except ValueError as exc:
        assert str(exc).startswith("n_bins"), str(exc)
        return
    pytest.fail("n_bins=2**62 was accepted")


@pytest.mark.parametrize("bad", [None, 1, "yes", 1.0])
def test_bad_from_logits(bad):
    for fn in (cal.calibration_error, cal.reliability_diagram, cal.brier_score,
               cal.brier_decomposition):
        raises(TypeError, "from_logits", fn, P32, T, from_logits=bad)
    raises(TypeError, "from_logits", cal.CalibrationAccumulator, from_logits=bad)


@pytest.mark.parametrize("bad, exc", [
    (["a"] * N, TypeError), (np.ones(N, complex), TypeError), (np.ones(N, object), TypeError),
    (np.ones((N, 1)), ValueError), (np.ones(N + 1), ValueError), (1.0, ValueError),
    (np.full(N, np.nan), ValueError), (np.full(N, np.inf), ValueError),
    (np.full(N, -np.inf), ValueError), (-SW, ValueError), (np.zeros(N), ValueError)])
def test_bad_sample_weight(bad, exc):
    for name in CAL2_SAMPLE_WEIGHT:
        if name == "accumulator" and bad is not None and np.shape(bad) == (N,) and \
                np.asarray(bad).dtype.kind == "f" and not np.asarray(bad).any():
            # A chunk of zero weight is fine for an accumulator; result() refuses.
            raises(ValueError, "CalibrationAccumulator", CAL2[name][1], X32, T,
                   sample_weight=bad)
            continue
        raises(exc, "sample_weight", CAL2[name][1], X32, T, sample_weight=bad)


@pytest.mark.parametrize("bad, exc", [
    (None, TypeError), ("1", TypeError), (True, TypeError), (np.array(1.0), TypeError),
    (0, ValueError), (-1.0, ValueError), (np.nan, ValueError), (np.inf, ValueError),
    (-np.inf, ValueError), (-0.0, ValueError)])
def test_bad_temperature(bad, exc):
    raises(exc, "temperature", cal.energy_score, X32, temperature=bad)


@pytest.mark.parametrize("bad, exc", [
    (None, TypeError), ("0.1", TypeError), (False, TypeError), (0.0, ValueError),
    (-0.1, ValueError), (1.5, ValueError), (np.nan, ValueError), (np.inf, ValueError),
    (-np.inf, ValueError)])
def test_bad_threshold(bad, exc):
    raises(exc, "threshold", cal.loss_breakdown, X32, T, threshold=bad)


def test_accumulator_misuse():
    acc = cal.CalibrationAccumulator(n_bins=7, from_logits=True)
    raises(ValueError, "CalibrationAccumulator", acc.result)
    acc.update(np.zeros((0, K)), np.zeros(0, np.int64))          # an empty chunk: no-op
    assert acc.count == 0
    raises(ValueError, "CalibrationAccumulator", acc.result)
    raises(ValueError, "probs_or_logits", acc.update, np.zeros((3, K + 1)), [0, 1, 2])
    raises(ValueError, "probs_or_logits", acc.update, np.zeros(3), [0, 1, 1])
    raises(TypeError, "other", acc.merge, 3)
    raises(TypeError, "other", acc.merge, None)
    raises(ValueError, "other", acc.merge, cal.CalibrationAccumulator(n_bins=8,
                                                                      from_logits=True))
    raises(ValueError, "other", acc.merge, cal.CalibrationAccumulator(n_bins=7))
    other = cal.CalibrationAccumulator(n_bins=7, from_logits=True).update(np.zeros(3),
                                                                          [0, 1, 1])
    raises(ValueError, "other", acc.merge, other)
    # The failed calls left it untouched: it still scores data exactly like the one-shot call.
    acc.update(X32, T)
    assert acc.count == N
    assert abs(acc.result().ece - cal.calibration_error(X32, T, n_bins=7, from_logits=True)) \
        < 1e-12


# =============================================================================================
# Wrong shapes and ranks
# =============================================================================================

def test_zero_dim_logits():
    raises(ValueError, "logits", xr.cross_entropy, np.float64(1.0), np.int64(0))
    raises(ValueError, "logits", xr.cross_entropy, np.array(1.0), np.array(0))
    for fn in ROWWISE.values():
        raises(ValueError, "logits", fn, np.array(1.0))
    for name, (arg, fn) in CAL2.items():
        raises(ValueError, arg, fn, np.array(1.0), np.array(0))
    raises(ValueError, "logits", cal.energy_score, np.array(1.0))
    raises(ValueError, "targets", cal.label_dependence, np.array(1))
    # BCE is elementwise: a 0-d input is one element.
    got = xr.binary_cross_entropy_with_logits(np.array(0.7), np.array(1.0), reduction="none",
                                              return_grad=True, return_hess=True)
    want = ref.binary_cross_entropy_with_logits(0.7, 1.0, reduction="none", return_grad=True,
                                                return_hess=True)
    for a, b in zip(got, want):
        assert np.asarray(a).shape == ()
        assert_close(a, b, np.float64)


def test_empty_class_axis():
    for x in (np.zeros((3, 0)), np.zeros((0,)), np.zeros((2, 3, 0))):
        raises(ValueError, "logits", xr.cross_entropy, x, np.zeros(x.shape[:-1], np.int64))
        for fn in ROWWISE.values():
            raises(ValueError, "logits", fn, x)
        raises(ValueError, "logits", cal.energy_score, x)
    for name, (arg, fn) in CAL2.items():
        raises(ValueError, arg, fn, np.zeros((3, 0)), [0, 0, 0])
        raises(ValueError, arg, fn, np.zeros((3, 1)), [0, 0, 0])  # K = 1: not a classifier


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(0, 4), (2, 0, 4), (0, 1), (5, 1), (2, 3, 1)])
@pytest.mark.parametrize("kind", ["index", "probs"])
def test_zero_size_and_single_class_cross_entropy(reduction, shape, kind):
    """Empty batches: as the reference (sum 0, mean NaN). K = 1: the closed form (softmax
    is 1, so loss, gradient and Hessian are 0 and logsumexp is the logit)."""
    x = RNG.standard_normal(shape).astype(np.float32)
    t = np.zeros(shape[:-1], np.int64) if kind == "index" else np.ones(shape, np.float32)
    got = xr.cross_entropy(x, t, reduction=reduction, return_grad=True, return_hess=True,
                           return_lse=True, label_smoothing=0.1)
    if x.size == 0:
        want = ref.cross_entropy(x, t, reduction=reduction, return_grad=True,
                                 return_hess=True, return_lse=True, label_smoothing=0.1)
    else:
        zero = np.zeros(shape[:-1]) if reduction == "none" else 0.0
        want = (zero, np.zeros(shape), np.zeros(shape), x[..., 0].astype(np.float64))
    for a, b in zip(got, want):
        assert np.asarray(a).dtype == np.float32
        assert np.shape(a) == np.shape(b)
        if x.size == 0:
            np.testing.assert_array_equal(np.asarray(a, np.float64), b)  # sum 0, mean NaN
        else:  # (1 − ε) + ε/K is 1 up to a float64 rounding: zeros up to 1e-16
            np.testing.assert_allclose(np.asarray(a, np.float64), b, rtol=1e-7, atol=1e-15)
    if reduction == "mean":
        assert np.isnan(got[0]) == (x.size == 0)
    out = np.empty_like(x)
    assert xr.cross_entropy(x, t, return_grad=True, out=out)[1] is out


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(0,), (3, 0), (0, 3), (2, 0, 3)])
def test_zero_size_bce(reduction, shape):
    x = np.zeros(shape, np.float64)
    pw = np.ones(shape[-1])
    got = xr.binary_cross_entropy_with_logits(x, x, reduction=reduction, return_grad=True,
                                              return_hess=True, pos_weight=pw, weight=2.0)
    want = ref.binary_cross_entropy_with_logits(x, x, reduction=reduction, return_grad=True,
                                                return_hess=True, pos_weight=pw, weight=2.0)
    for a, b in zip(got, want):
        assert np.shape(a) == np.shape(b)
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("shape", [(0, 4), (2, 0, 4)])
def test_zero_size_rowwise(shape):
    x = np.zeros(shape, np.float32)
    for name, fn in ROWWISE.items():
        got = fn(x)
        want = getattr(ref, name)(x)
        assert got.shape == want.shape and got.dtype == np.float32
    assert cal.energy_score(np.zeros(shape)).shape == shape[:-1]


def test_zero_rows_calibration():
    for name, (arg, fn) in CAL2.items():
        if name == "accumulator":  # an empty chunk is a no-op; result() refuses
            arg = "CalibrationAccumulator"
        raises(ValueError, arg, fn, np.zeros((0, K)), np.zeros(0, np.int64))
        raises(ValueError, arg, fn, np.zeros(0), np.zeros(0, np.int64))
    raises(ValueError, "targets", cal.label_dependence, np.zeros((0, 3)))
    # No label columns is not an error: the (0, 0) matrix of the reference.
    got = cal.label_dependence(np.zeros((5, 0)))
    assert got.shape == (0, 0) == ref.label_dependence(np.zeros((5, 0), np.int64)).shape


@pytest.mark.parametrize("bad", [T[:-1], T[:, None], T[None, :], np.append(T, 0),
                                 np.zeros((N, K), np.int64), np.array(0), T.reshape(1, N)])
def test_mismatched_index_targets(bad):
    raises(ValueError, "target", xr.cross_entropy, X32, bad)


@pytest.mark.parametrize("bad", [P32[:, :-1], P32[:1], P32[:, :1], P32[None], P32.T.copy(),
                                 P32[0], np.float32(0.2)])
def test_probability_targets_never_broadcast(bad):
    raises(ValueError, "target", xr.cross_entropy, X32, bad)


@pytest.mark.parametrize("bad", [Y32[:1], Y32[:, :1], Y32[0], Y32[None], np.float32(1.0),
                                 Y32.T.copy()])
def test_bce_target_must_match_exactly(bad):
    raises(ValueError, "target", xr.binary_cross_entropy_with_logits, X32, bad)


@pytest.mark.parametrize("arg", ["weight", "pos_weight"])
@pytest.mark.parametrize("bad", [np.ones(K + 1), np.ones(N), np.ones((2, N, K)),
                                 np.ones((K, 1)), np.ones((N + 1, 1))])
def test_bce_factor_broadcasting_mistakes(arg, bad):
    raises(ValueError, arg, xr.binary_cross_entropy_with_logits, X32, Y32, **{arg: bad})


@pytest.mark.parametrize("arg, good", [("weight", np.full((N, 1), 2.0)),
                                       ("pos_weight", np.arange(N, dtype=float)[:, None]),
                                       ("weight", np.float64(3.0)), ("pos_weight", [[2.0]]),
                                       ("weight", RNG.random((N, K)))])
def test_bce_factors_broadcast_as_pytorch(arg, good):
    got = xr.binary_cross_entropy_with_logits(X64, Y32, reduction="none", return_grad=True,
                                              **{arg: good})
    want = ref.binary_cross_entropy_with_logits(X64, Y32, reduction="none", return_grad=True,
                                                **{arg: good})
    for a, b in zip(got, want):
        assert_close(a, b, np.float64)


@pytest.mark.parametrize("shape", [(1_000_000,), (1000, 1000), (10, 100, 1000)])
@pytest.mark.parametrize("factor", ["scalar", "one_element", "last_axis"])
def test_bce_factors_that_vary_at_most_along_the_last_axis_are_not_copied(shape, factor):
    """A scalar (or last-axis) weight / pos_weight is applied without a logits-sized
    temporary: for 1-D logits too, where a float64 copy would be twice the logits."""
    import tracemalloc

    x = np.zeros(shape, np.float32)
    y = np.zeros(shape, np.float32)
    f = {"scalar": 2.0, "one_element": np.array([2.0]),
         "last_axis": np.full(shape[-1], 2.0)}[factor]
    tracemalloc.start()
    try:
        loss = xr.binary_cross_entropy_with_logits(x, y, weight=f, pos_weight=f,
                                                   label_smoothing=0.5, reduction="sum")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # z = 0, y' = 0.25: each element's loss is 2·(2·0.25 + 0.75)·log 2.
    assert float(loss) == pytest.approx(x.size * 2 * 1.25 * math.log(2), rel=1e-6)
    # At most one float64 vector along the last axis per factor (none for 1-D logits, whose
    # last axis is everything) and validation temporaries the size of the factor itself,
    # never one float64 per logit.
    allowed = 100_000 + (2 * 8 * shape[-1] if len(shape) > 1 else 0) + 2 * np.size(f)
    assert peak < allowed, (peak, x.nbytes)


@pytest.mark.parametrize("bad", [np.ones(K + 1), np.ones((1, K)), np.ones((K, 1)), 2.0,
                                 np.ones(0)])
def test_class_weight_shapes(bad):
    raises(ValueError, "weight", xr.cross_entropy, X32, T, weight=bad)
    raises(ValueError, "weight", cal.fit_temperature, X32, T, weight=bad)


def test_batch_shape_mistakes():
    x = RNG.standard_normal((2, 3, 4))
    good = RNG.integers(0, 4, (2, 3))
    assert_close(xr.cross_entropy(x, good, reduction="none"),
                 ref.cross_entropy(x, good, reduction="none"), np.float64)
    for bad in (good.reshape(6), good.reshape(3, 2), good[:, :, None], good[None]):
        raises(ValueError, "target", xr.cross_entropy, x, bad)


@pytest.mark.parametrize("bad", [T[:-1], T[:, None], np.array(0), np.append(T, 1)])
def test_mismatched_calibration_labels(bad):
    for name, (arg, fn) in CAL2.items():
        raises(ValueError, "labels", fn, X32, bad)


def test_calibration_score_ranks():
    for name, (arg, fn) in CAL2.items():
        raises(ValueError, arg, fn, np.zeros((2, 3, 4)), [0, 1])
    raises(ValueError, "targets", cal.label_dependence, np.zeros((2, 3, 4), np.int64))
    raises(ValueError, "targets", cal.label_dependence, np.zeros(3, np.int64))
    # energy_score takes any (..., K) batch.
    z = RNG.standard_normal((2, 3, 4))
    np.testing.assert_allclose(cal.energy_score(z), ref.energy_score(z), rtol=1e-13)


# =============================================================================================
# Labels: every integer dtype, out of range, extreme
# =============================================================================================

@pytest.mark.parametrize("dtype", INT_DTYPES)
@pytest.mark.parametrize("order", ["<", ">"])
def test_every_integer_label_dtype(dtype, order):
    t = T.astype(np.dtype(dtype).newbyteorder(order))
    want = xr.cross_entropy(X32, T, reduction="none", return_grad=True)
    assert_same(xr.cross_entropy(X32, t, reduction="none", return_grad=True), want)
    assert_close(want[0], ref.cross_entropy(X32, T, reduction="none"), np.float32)
    for name, (_, fn) in CAL2.items():
        assert_same(fn(X32, t), fn(X32, T))
    y = Y32.astype(np.dtype(dtype).newbyteorder(order))
    assert_same(xr.binary_cross_entropy_with_logits(X32, y, reduction="none"),
                xr.binary_cross_entropy_with_logits(X32, Y32, reduction="none"))


def _bad_labels(dtype):
    info = np.iinfo(dtype)
    bad = [K, info.max]
    if info.min < 0:
        bad += [-1, info.min]
    if info.max >= 2**40:
        bad += [2**40]
    if dtype == np.uint64:
        bad += [2**63, 2**64 - 100]  # beyond int64: must not wrap onto ignore_index
    return bad


@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_out_of_range_labels_every_dtype(dtype):
    for value in _bad_labels(dtype):
        t = T.astype(dtype)
        t[N // 2] = value
        raises(ValueError, "target", xr.cross_entropy, X32, t)
        for name, (_, fn) in CAL2.items():
            raises(ValueError, "labels", fn, X32, t)
    # Binary calibration labels must be 0/1.
    for value in [2, np.iinfo(dtype).max] + ([-1] if np.iinfo(dtype).min < 0 else []):
        t = (T % 2).astype(dtype)
        t[3] = value
        for name, (_, fn) in CAL2.items():
            raises(ValueError, "labels", fn, X32[:, 0], t)
    # BCE targets outside [0, 1].
    y = Y32.astype(dtype)
    y[1, 1] = 2
    raises(ValueError, "target", xr.binary_cross_entropy_with_logits, X32, y)


@pytest.mark.parametrize("bad", [1.5, np.nan, np.inf, -np.inf, 1e300, -1.0])
def test_float_calibration_labels(bad):
    t = T.astype(np.float64)
    for name, (_, fn) in CAL2.items():
        assert_same(fn(X32, t), fn(X32, T))  # whole-valued floats are labels
    t[5] = bad
    for name, (_, fn) in CAL2.items():
        raises(ValueError, "labels", fn, X32, t)


@pytest.mark.parametrize("ignore_index, dtype", [
    (0, np.int64), (K, np.int64), (-1, np.int64), (-(2**63), np.int64), (2**63 - 1, np.int64),
    (2**40, np.int64), (255, np.uint8), (-128, np.int8), (-100, np.int8), (2**64 - 1 - 2**63,
                                                                          np.uint64)])
def test_ignore_index_values(ignore_index, dtype):
    t = T.astype(dtype)
    t[::3] = ignore_index  # every third row ignored
    for eps in (0.0, 0.3):
        for reduction in ("mean", "sum", "none"):
            got = xr.cross_entropy(X64, t, ignore_index=ignore_index, label_smoothing=eps,
                                   reduction=reduction, return_grad=True, weight=W)
            want = ref.cross_entropy(X64, t.astype(np.int64), ignore_index=ignore_index,
                                     label_smoothing=eps, reduction=reduction,
                                     return_grad=True, weight=W)
            for a, b in zip(got, want):
                assert_close(a, b, np.float64)
    # Every row ignored: mean is NaN (as PyTorch), the gradient is zero.
    t[:] = ignore_index
    loss, grad = xr.cross_entropy(X64, t, ignore_index=ignore_index, return_grad=True)
    assert np.isnan(loss) and not grad.any()


# =============================================================================================
# NaN and ±inf in every argument
# =============================================================================================

SPECIAL = [0.0, 1.5, -2.0, 40.0, -40.0, 700.0, -700.0, np.nan, np.inf, -np.inf]


def special_arrays(dtype):
    elems = st.sampled_from(SPECIAL) | st.floats(-50, 50, width=32)
    return hnp.arrays(dtype, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=6),
                      elements=elems)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(x=special_arrays(np.float64) | special_arrays(np.float32), data=st.data())
def test_non_finite_logits_match_the_reference(x, data):
    n, k = x.shape
    dtype = x.dtype
    kind = data.draw(st.sampled_from(["index", "probs"]))
    if kind == "index":
        t = np.array(data.draw(st.lists(st.integers(-1, k - 1), min_size=n, max_size=n)))
        t[t == -1] = -100
    else:
        t = np.array(data.draw(st.lists(st.floats(0, 1), min_size=n * k, max_size=n * k)),
                     dtype=dtype).reshape(n, k)
    eps = data.draw(st.sampled_from([0.0, 0.25]))
    w = data.draw(st.sampled_from([None, "w"]))
    w = None if w is None else np.linspace(0.0, 2.0, k)
    reduction = data.draw(st.sampled_from(["none", "sum", "mean"]))
    kw = dict(label_smoothing=eps, weight=w, reduction=reduction, return_grad=True,
              return_hess=True, return_lse=True)
    with np.errstate(all="ignore"):
        got = xr.cross_entropy(x, t, **kw)
        want = ref.cross_entropy(x, t, **kw)
        for a, b in zip(got, want):
            assert np.asarray(a).dtype == dtype
            assert_close(a, b, dtype, rtol=1e-4 if dtype == np.float32 else 1e-10)
        for name, fn in ROWWISE.items():
            assert_close(fn(x), getattr(ref, name)(x), dtype,
                         rtol=1e-4 if dtype == np.float32 else 1e-10)
        y = np.abs(np.nan_to_num(x, nan=0.5, posinf=1.0, neginf=0.0)) % 1.0
        pw = data.draw(st.sampled_from([None, "pw"]))
        pw = None if pw is None else np.linspace(0.5, 3.0, k)
        got = xr.binary_cross_entropy_with_logits(x, y, pos_weight=pw, reduction=reduction,
                                                  return_grad=True, return_hess=True,
                                                  label_smoothing=eps)
        want = ref.binary_cross_entropy_with_logits(x, y.astype(dtype), pos_weight=pw,
                                                    reduction=reduction, return_grad=True,
                                                    return_hess=True, label_smoothing=eps)
        for a, b in zip(got, want):
            assert_close(a, b, dtype, rtol=1e-4 if dtype == np.float32 else 1e-10)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_logits_every_dtype(dtype, value):
    x = np.array([[value, 0, 1], [value] * 3, [0, value, 1], [1, 2, 3], [0, 0, value]],
                 dtype=dtype)
    t = np.array([0, 0, 1, 2, 0])
    kw = dict(reduction="none", return_grad=True, return_hess=True, return_lse=True)
    with np.errstate(all="ignore"):
        got = xr.cross_entropy(x, t, **kw)
        want = ref.cross_entropy(x, t, **kw)
    rtol = {np.float16: 2e-3, np.float32: 1e-5, np.float64: 1e-12}[dtype]
    for a, b in zip(got, want):
        assert a.dtype == dtype
        assert_close(a, b, np.float32 if dtype == np.float16 else dtype, rtol=rtol)
    # Rows without a non-finite value are untouched by their neighbours.
    assert np.isfinite(got[0][3])


@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_infinite_probability_targets(value):
    """A probability target of ±inf is no probability: either refused (ValueError naming
    target) or scored like the reference (whose zero-mass-skipping sum gives ±inf/NaN)."""
    y = np.full((4, 3), 0.25)
    y[:, 0] = value
    x = np.array([[3.0, 0.0, 1.0], [0.0, 3.0, 1.0], [1.0, 1.0, 1.0], [-1.0, 0.0, 2.0]])
    try:
        got = xr.cross_entropy(x, y, reduction="none")
    except ValueError as exc:
        assert str(exc).startswith("target"), exc
        return
    with np.errstate(all="ignore"):
        want = ref.cross_entropy(x, y, reduction="none")
    assert_close(got, want, np.float64)


def test_nan_and_odd_probability_targets_are_scored_like_the_reference():
    y = P32.astype(np.float64).copy()
    y[3, 1] = np.nan
    y[4] = [-1.0, 2.0, 0.0, 0.0, 0.0]           # not a distribution, but finite: scored
    y[5] = 0.0                                   # no mass: loss and gradient 0
    kw = dict(reduction="none", return_grad=True, return_hess=True, label_smoothing=0.1)
    got = xr.cross_entropy(X64, y, **kw)
    want = ref.cross_entropy(X64, y, **kw)
    for a, b in zip(got, want):
        assert_close(a, b, np.float64)
    assert np.isnan(got[0][3]) and np.isfinite(np.delete(got[0], 3)).all()


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, -1e-300])
def test_non_finite_or_negative_factors_are_refused(value):
    w = W.copy()
    w[2] = value
    raises(ValueError, "weight", xr.cross_entropy, X32, T, weight=w)
    raises(ValueError, "weight", xr.binary_cross_entropy_with_logits, X32, Y32, weight=w)
    raises(ValueError, "weight", xr.binary_cross_entropy_with_logits, X32, Y32, weight=value)
    raises(ValueError, "pos_weight", xr.binary_cross_entropy_with_logits, X32, Y32,
           pos_weight=w)
    raises(ValueError, "pos_weight", xr.binary_cross_entropy_with_logits, X32, Y32,
           pos_weight=value)
    raises(ValueError, "weight", cal.fit_temperature, X32, T, weight=w)
    if not value < 0:
        y = Y32.copy()
        y[0, 0] = value
        raises(ValueError, "target", xr.binary_cross_entropy_with_logits, X32, y)


@pytest.mark.parametrize("name", list(CAL2))
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_calibration_scores(name, value):
    arg, fn = CAL2[name]
    x = X64.copy()
    x[3, 1] = value
    if value == -np.inf:
        # A masked class is fine for (N, K) logits unless it is a row's label (fit, breakdown).
        t = T.copy()
        t[3] = 0 if T[3] == 1 else T[3]
        got = fn(x, t)
        if name == "fit_temperature":  # at T = inf a masked class stays masked: no twin
            assert got == pytest.approx(ref.fit_temperature(x, t), rel=1e-5)
        else:
            z = x.copy()
            z[3, 1] = -1e300  # the same probabilities, finitely
            assert_same(got, fn(z, t))
    else:
        raises(ValueError, arg, fn, x, T)
    # Probabilities must be finite and in [0, 1].
    if name in ("calibration_error", "reliability_diagram", "brier_score",
                "brier_decomposition"):
        p = P32.astype(np.float64).copy()
        p[3, 1] = value
        probs_fn = getattr(cal, name)
        raises(ValueError, "probs", probs_fn, p, T)


@pytest.mark.parametrize("name", ["calibration_error", "reliability_diagram", "brier_score",
                                  "brier_decomposition", "accumulator"])
def test_infinite_binary_logits_are_certain_probabilities(name):
    """(N,) binary logits of ±inf are probabilities 1 / 0 (sigmoid), as the reference."""
    z = np.array([np.inf, -np.inf, 0.3, -1.2, 2.0, np.inf])
    y = np.array([1, 0, 0, 1, 1, 1])
    got = CAL2[name][1](z, y)
    zz = np.array([800.0, -800.0, 0.3, -1.2, 2.0, 800.0])  # sigmoid saturates to 1 / 0 exactly
    assert_same(got, CAL2[name][1](zz, y))
    if name == "calibration_error":
        assert abs(got - ref.calibration_error(z, y, from_logits=True)) < 1e-12


def test_fit_temperature_and_loss_breakdown_with_certain_binary_rows():
    """A binary logit of +inf labelled 1 (or -inf labelled 0) is a certain, correct row:
    zero loss and zero slope at every temperature. It changes nothing but the row count."""
    z = np.array([2.0, -1.0, 0.5, -2.0, 1.5, 3.0, -0.5, 1.0])
    y = np.array([1, 0, 1, 0, 1, 0, 1, 1])
    base_t = cal.fit_temperature(z, y)
    base = cal.loss_breakdown(z, y)
    for extra, label in ((np.inf, 1), (-np.inf, 0)):
        zz, yy = np.append(z, extra), np.append(y, label)
        try:
            t = cal.fit_temperature(zz, yy)
        except ValueError as exc:  # refusing ±inf binary logits by name is acceptable too
            assert str(exc).startswith("logits"), exc
        else:
            assert abs(t / base_t - 1) < 1e-6
        try:
            b = cal.loss_breakdown(zz, yy)
        except ValueError as exc:
            assert str(exc).startswith("logits"), exc
        else:
            assert abs(b.mean_loss * 9 - base.mean_loss * 8) < 1e-12, b.mean_loss
            assert b.accuracy == (base.accuracy * 8 + 1) / 9
    # +inf labelled 0 has an infinite loss: refused, or an infinite mean loss; never NaN.
    try:
        b = cal.loss_breakdown(np.append(z, np.inf), np.append(y, 0))
    except ValueError as exc:
        assert str(exc).startswith(("labels", "logits")), exc
    else:
        assert b.mean_loss == np.inf


@pytest.mark.parametrize("z, temperature, expected", [
    ([[1.0, 2.0]], 1e-310, -2.0),                         # z / T overflows: -max(z)
    ([[1.0, 2.0]], 1e-300, -2.0),
    ([[1e308, 0.0]], 0.5, -1e308),                        # z / T overflows
    ([[-1e308, -1e308]], 0.5, 1e308 - 0.5 * math.log(2)),
    ([[1e308, 1e308]], 1.0, -1e308 - math.log(2)),
    ([[3.0, 3.0, 3.0]], 1e300, -3.0 - 1e300 * math.log(3)),
])
def test_energy_score_extremes(z, temperature, expected):
    """energy = -T·logsumexp(z/T) = -(m + T·log Σ exp((z − m)/T)), finite for finite z."""
    got = cal.energy_score(np.array(z), temperature=temperature)
    assert got.shape == (1,)
    assert got[0] == pytest.approx(expected, rel=1e-12), got


def test_energy_score_non_finite_rows():
    z = np.array([[np.inf, 0.0], [np.inf, -np.inf], [-np.inf, -np.inf], [np.nan, 1.0],
                  [np.inf, np.nan], [0.0, -np.inf]])
    with np.errstate(all="ignore"):
        got = cal.energy_score(z)
    # logsumexp of a row holding +inf (and no NaN) is +inf; of an all -inf row, -inf.
    np.testing.assert_array_equal(got, [-np.inf, -np.inf, np.inf, np.nan, np.nan, -0.0])


@pytest.mark.parametrize("scale", [1e-305, 1e-300, 1e-150, 1e-8, 1.0, 1e8, 1e150, 1e300])
def test_fit_temperature_scales_with_the_logits(scale):
    """Two correct rows [a, 0] and one wrong row [0, a] (label 0): L'(β) = 0 at
    e^{βa} = 2, so T = a / ln 2 exactly, for any scale a."""
    z = np.array([[scale, 0.0], [0.0, scale], [scale, 0.0]])
    got = cal.fit_temperature(z, [0, 0, 0])
    assert got == pytest.approx(scale / math.log(2), rel=1e-6)


def test_fit_temperature_below_float_range_is_refused_by_name():
    z = np.array([[5e-324, 0.0], [0.0, 5e-324], [5e-324, 0.0]])  # T would be subnormal
    raises(ValueError, "logits", cal.fit_temperature, z, [0, 0, 0])


# =============================================================================================
# out= misuse
# =============================================================================================

def _grad_calls(x, out):
    return {
        "cross_entropy": lambda: xr.cross_entropy(x, T, return_grad=True, out=out),
        "bce": lambda: xr.binary_cross_entropy_with_logits(x, Y32, return_grad=True, out=out),
        "softmax": lambda: xr.softmax(x, out=out),
        "log_softmax": lambda: xr.log_softmax(x, out=out),
    }


def _bad_outs(x):
    big = np.zeros((N + 1, K), x.dtype)
    big[:N] = x
    wide = np.zeros((N, 2 * K), x.dtype)
    ro = np.empty_like(x)
    ro.flags.writeable = False
    return {
        "shape": (ValueError, np.empty((N, K + 1), x.dtype)),
        "shape_T": (ValueError, np.empty((K, N), x.dtype)),
        "flat": (ValueError, np.empty(N * K, x.dtype)),
        "dtype": (ValueError, np.empty((N, K), np.float64)),
        "float16": (ValueError, np.empty((N, K), np.float16)),
        "int": (ValueError, np.empty((N, K), np.int32)),
        "byte_order": (ValueError, np.empty((N, K), ">f4")),
        "fortran": (ValueError, np.empty((N, K), x.dtype, order="F")),
        "strided": (ValueError, wide[:, ::2]),
        "readonly": (ValueError, ro),
        "misaligned": (ValueError, misaligned(np.empty_like(x))),
        "list": (TypeError, np.empty_like(x).tolist()),
        "scalar": (TypeError, 0.0),
    }


@pytest.mark.parametrize("fn", ["cross_entropy", "bce", "softmax", "log_softmax"])
@pytest.mark.parametrize("case", list(_bad_outs(X32)))
def test_out_misuse(fn, case):
    exc, out = _bad_outs(X32)[case]
    x = X32.copy()
    raises(exc, "out", _grad_calls(x, out)[fn])
    np.testing.assert_array_equal(x, X32)  # the logits are untouched


@pytest.mark.parametrize("fn", ["cross_entropy", "bce", "softmax", "log_softmax"])
@pytest.mark.parametrize("overlap", ["next_row", "next_element", "every_other", "transposed"])
def test_out_overlapping_the_logits_is_refused(fn, overlap):
    if overlap == "transposed":  # a square array and its transpose: same data, other layout
        buf = RNG.standard_normal((K, K)).astype(np.float32)
        x, out = buf, buf.T
        calls = {
            "cross_entropy": lambda: xr.cross_entropy(x, T[:K], return_grad=True, out=out),
            "bce": lambda: xr.binary_cross_entropy_with_logits(x, Y32[:K, :K],
                                                               return_grad=True, out=out),
            "softmax": lambda: xr.softmax(x, out=out),
            "log_softmax": lambda: xr.log_softmax(x, out=out),
        }
        before = buf.copy()
        raises(ValueError, "out", calls[fn])
        np.testing.assert_array_equal(buf, before)
        return
    flat = np.zeros(2 * N * K + 2, np.float32)
    if overlap == "next_row":
        x = flat[: N * K].reshape(N, K)
        out = flat[K: K + N * K].reshape(N, K)
    elif overlap == "next_element":
        x = flat[: N * K].reshape(N, K)
        out = flat[1: 1 + N * K].reshape(N, K)
    else:  # logits on the even elements, out on the odd ones: interleaved, disjoint bytes,
        x = flat[0: 2 * N * K: 2].reshape(N, K)  # but out is not contiguous anyway
        out = flat[1: 2 * N * K: 2].reshape(N, K)
    x[...] = X32
    before = flat.copy()
    raises(ValueError, "out", _grad_calls(x, out)[fn])
    np.testing.assert_array_equal(flat, before)


@pytest.mark.parametrize("fn", ["cross_entropy", "bce"])
def test_out_aliasing_the_target_is_refused(fn):
    if fn == "cross_entropy":
        y = P32.copy()
        call = lambda out: xr.cross_entropy(X32, y, return_grad=True, out=out)  # noqa: E731
    else:
        y = Y32.copy()
        call = lambda out: xr.binary_cross_entropy_with_logits(  # noqa: E731
            X32, y, return_grad=True, out=out)
    before = y.copy()
    raises(ValueError, "out", call, y)
    big = np.zeros((N + 1, K), np.float32)
    big[:N] = y
    yv = big[:N]
    call2 = (lambda: xr.cross_entropy(X32, yv, return_grad=True, out=big[1:])) \
        if fn == "cross_entropy" else \
        (lambda: xr.binary_cross_entropy_with_logits(X32, yv, return_grad=True, out=big[1:]))
    raises(ValueError, "out", call2)
    np.testing.assert_array_equal(y, before)


def test_out_given_without_return_grad():
    raises(ValueError, "out", xr.cross_entropy, X32, T, out=np.empty_like(X32))
    raises(ValueError, "out", xr.binary_cross_entropy_with_logits, X32, Y32,
           out=np.empty_like(X32))
    with pytest.raises(TypeError):  # logsumexp has no out
        xr.logsumexp(X32, out=np.empty(N, np.float32))


@pytest.mark.parametrize("kind", ["big_endian", "fortran", "misaligned", "strided"])
def test_out_is_logits_that_needed_a_copy(kind):
    """out=logits where logits is not usable in place (it had to be converted): refused by
    name, logits untouched."""
    x = variant(X32, kind)
    before = np.array(x, copy=True)
    for call in _grad_calls(x, x).values():
        raises(ValueError, "out", call)
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("same", ["itself", "view", "reshaped_view"])
def test_out_is_the_logits_in_place(same):
    for fn, want in [
        ("cross_entropy", ref.cross_entropy(X32, T, return_grad=True)[1]),
        ("bce", ref.binary_cross_entropy_with_logits(X32, Y32, return_grad=True)[1]),
        ("softmax", ref.softmax(X32)),
        ("log_softmax", ref.log_softmax(X32)),
    ]:
        x = X32.copy()
        out = {"itself": x, "view": x.view(), "reshaped_view": x.reshape(-1).reshape(N, K)}[same]
        res = _grad_calls(x, out)[fn]()
        got = res[1] if isinstance(res, tuple) else res
        assert got is out
        assert_close(x, want, np.float32)


def test_out_subclasses_receive_the_result(tmp_path):
    mm = np.memmap(tmp_path / "out", dtype=np.float32, mode="w+", shape=(N, K))
    assert xr.softmax(X32, out=mm) is mm
    assert_close(np.asarray(mm), ref.softmax(X32), np.float32)
    mat = np.matrix(np.zeros((N, K), np.float32))
    _, g = xr.cross_entropy(X32, T, return_grad=True, out=mat)
    assert g is mat
    assert_close(np.asarray(mat), ref.cross_entropy(X32, T, return_grad=True)[1], np.float32)


# =============================================================================================
# Byte order, alignment, strides: every array argument of every function
# =============================================================================================

@pytest.mark.parametrize("kind", VARIANTS)
def test_layouts_cross_entropy_each_argument(kind):
    kw = dict(reduction="none", return_grad=True, return_hess=True, return_lse=True,
              label_smoothing=0.05)
    clean_i = xr.cross_entropy(X32, T, weight=W, **kw)
    clean_p = xr.cross_entropy(X32, P32, weight=W, **kw)
    for a, b in zip(clean_i, ref.cross_entropy(X32, T, weight=W, **kw)):
        assert_close(a, b, np.float32)
    v = lambda a: variant(a, kind)  # noqa: E731
    assert_same(xr.cross_entropy(v(X32), T, weight=W, **kw), clean_i)
    assert_same(xr.cross_entropy(X32, v(T), weight=W, **kw), clean_i)
    assert_same(xr.cross_entropy(X32, T, weight=v(W), **kw), clean_i)
    assert_same(xr.cross_entropy(v(X32), v(T), weight=v(W), **kw), clean_i)
    assert_same(xr.cross_entropy(X32, v(P32), weight=W, **kw), clean_p)
    assert_same(xr.cross_entropy(v(X32), v(P32), weight=v(W), **kw), clean_p)
    # 3-D logits with every argument odd, and float16 / float64.
    x3 = X32.reshape(1, N, K)
    assert_same(xr.cross_entropy(v(x3), v(T.reshape(1, N)), weight=v(W), **kw),
                tuple(a.reshape(1, *a.shape) for a in clean_i))
    for dt in (np.float16, np.float64):
        assert_same(xr.cross_entropy(v(X32.astype(dt)), v(T), **kw),
                    xr.cross_entropy(X32.astype(dt), T, **kw))


@pytest.mark.parametrize("kind", VARIANTS)
def test_layouts_bce_each_argument(kind):
    kw = dict(reduction="none", return_grad=True, return_hess=True)
    full_w = RNG.random((N, K))
    v = lambda a: variant(a, kind)  # noqa: E731
    for w in (W, full_w, None):
        clean = xr.binary_cross_entropy_with_logits(X32, Y32, weight=w, pos_weight=PW, **kw)
        for a, b in zip(clean, ref.binary_cross_entropy_with_logits(X32, Y32, weight=w,
                                                                   pos_weight=PW, **kw)):
            assert_close(a, b, np.float32)
        vw = None if w is None else v(w)
        assert_same(xr.binary_cross_entropy_with_logits(v(X32), Y32, weight=w,
                                                        pos_weight=PW, **kw), clean)
        assert_same(xr.binary_cross_entropy_with_logits(X32, v(Y32), weight=w,
                                                        pos_weight=PW, **kw), clean)
        assert_same(xr.binary_cross_entropy_with_logits(X32, Y32, weight=vw,
                                                        pos_weight=PW, **kw), clean)
        assert_same(xr.binary_cross_entropy_with_logits(X32, Y32, weight=w,
                                                        pos_weight=v(PW), **kw), clean)
        assert_same(xr.binary_cross_entropy_with_logits(v(X32), v(Y32), weight=vw,
                                                        pos_weight=v(PW), **kw), clean)


@pytest.mark.parametrize("kind", VARIANTS)
def test_layouts_rowwise(kind):
    for dt in (np.float16, np.float32, np.float64):
        x = X32.astype(dt)
        for name, fn in ROWWISE.items():
            clean = fn(x)
            assert_same(fn(variant(x, kind)), clean)
            assert_same(fn(variant(x.reshape(1, N, K), kind)), clean.reshape(1, *clean.shape))


@pytest.mark.parametrize("kind", VARIANTS)
@pytest.mark.parametrize("name", list(CAL2))
def test_layouts_calibration_each_argument(kind, name):
    _, fn = CAL2[name]
    v = lambda a: variant(a, kind)  # noqa: E731
    for x in (X32, X64, X32[:, 0].copy(), X32.astype(np.float16)):
        t = T if x.ndim == 2 else TB
        clean = fn(x, t)
        assert_same(fn(v(x), t), clean)
        assert_same(fn(x, v(t)), clean)
        assert_same(fn(v(x), v(t)), clean)
        if name in CAL2_SAMPLE_WEIGHT:
            clean_w = fn(x, t, sample_weight=SW)
            assert_same(fn(v(x), v(t), sample_weight=v(SW)), clean_w)
        elif name == "fit_temperature":
            w = W if x.ndim == 2 else W[:2]
            clean_w = fn(x, t, weight=w)
            assert_same(fn(x, t, weight=v(w)), clean_w)
            assert_same(fn(v(x), v(t), weight=v(w)), clean_w)


def test_clean_calibration_calls_match_the_reference():
    assert cal.calibration_error(X64, T, from_logits=True, sample_weight=SW) == pytest.approx(
        ref.calibration_error(X64, T, from_logits=True, sample_weight=SW), rel=1e-12, abs=1e-15)
    assert cal.brier_score(X64, T, from_logits=True) == pytest.approx(
        ref.brier_score(X64, T, from_logits=True), rel=1e-12)
    d = cal.brier_decomposition(X64, T, from_logits=True)
    r = ref.brier_decomposition(X64, T, from_logits=True)
    for key in ("reliability", "resolution", "uncertainty", "brier"):
        assert getattr(d, key) == pytest.approx(r[key], rel=1e-10, abs=1e-14)
    assert cal.fit_temperature(X64, T) == pytest.approx(ref.fit_temperature(X64, T), rel=1e-5)
    lb = cal.loss_breakdown(X64, T)
    assert lb.mean_loss == pytest.approx(ref.loss_breakdown(X64, T)["mean_loss"], rel=1e-12)
    np.testing.assert_allclose(cal.energy_score(X64, temperature=0.7),
                               ref.energy_score(X64, temperature=0.7), rtol=1e-13)


@pytest.mark.parametrize("kind", VARIANTS)
def test_layouts_energy_and_label_dependence(kind):
    for x in (X32, X64, X32.astype(np.float16)):
        assert_same(cal.energy_score(variant(x, kind), temperature=2.0),
                    cal.energy_score(x, temperature=2.0))
    y = (X32 > 0).astype(np.int64)
    for yy in (y, y.astype(np.uint8), y.astype(bool), y.astype(np.float32)):
        assert_same(cal.label_dependence(variant(yy, kind)), cal.label_dependence(y))
    np.testing.assert_allclose(cal.label_dependence(y), ref.label_dependence(y), rtol=1e-12,
                               atol=1e-15)


# =============================================================================================
# Logits mutated by another thread while a call runs
# =============================================================================================

def _mutation_stress(call, check, x, states, seconds=1.5):
    """Runs ``call`` repeatedly while another thread overwrites ``x`` with whole arrays from
    ``states``; ``check`` asserts each result lies in the envelope of every mix of them."""
    stop = threading.Event()
    flips = [0]

    def writer():
        i = 0
        while not stop.is_set():
            np.copyto(x, states[i % len(states)])
            i += 1
            flips[0] = i

    th = threading.Thread(target=writer)
    th.start()
    calls = 0
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline or calls < 5:
            check(call())
            calls += 1
    finally:
        stop.set()
        th.join()
    assert flips[0] > 5 and calls >= 5  # both sides really ran


def test_concurrent_mutation_cross_entropy_stays_in_the_envelope():
    """Rows hold values 0 or c (any mix, even one read twice inconsistently). Each row is
    either NaN — the float32 kernels read a row twice (maximum, then exponentials) and flag
    a row whose maximum is no longer there as NaN — or its loss lies in
    [-c, 2c + log(K + 1)] and its gradient in [-1, 1]; never ±inf. Once the writer stops,
    the result is exact again."""
    n, k, c = 6000, 97, 4.0
    x = np.zeros((n, k), np.float32)
    t = RNG.integers(0, k, n)
    states = [np.zeros_like(x), np.full_like(x, c)]

    def check(res):
        losses, grad = res
        assert losses.shape == (n,) and grad.shape == (n, k)
        assert not np.isinf(losses).any() and not np.isinf(grad).any()
        ok = np.isfinite(losses)
        if ok.any():
            assert losses[ok].min() >= -c - 1e-4
            assert losses[ok].max() <= 2 * c + math.log(k + 1) + 1e-4
            g = grad[ok]
            assert np.abs(g[np.isfinite(g)]).max(initial=0.0) <= 1 + 1e-5

    _mutation_stress(lambda: xr.cross_entropy(x, t, reduction="none", return_grad=True),
                     check, x, states)
    x[...] = c
    assert_close(xr.cross_entropy(x, t, reduction="none"), np.full(n, math.log(k)),
                 np.float32)


def test_concurrent_mutation_softmax_and_bce_stay_in_the_envelope():
    n, k, c = 6000, 97, 4.0
    x = np.zeros((n, k), np.float64)
    states = [np.zeros_like(x), np.full_like(x, c)]
    ones = np.ones_like(x)

    def check_softmax(p):
        assert p.shape == (n, k)
        assert np.isfinite(p).all() and p.min() >= 0 and p.max() <= 1 + 1e-12
        assert p.sum(axis=1).max() <= 1 + 1e-9

    def check_bce(res):
        loss, grad = res
        # Every element is 0 or c: loss between softplus(-c) and log 2, grad between
        # sigmoid(0) - 1 and sigmoid(c) - 1.
        lo = math.log1p(math.exp(-c))
        assert loss.min() >= lo - 1e-12 and loss.max() <= math.log(2) + 1e-12
        assert grad.min() >= -0.5 - 1e-12 and grad.max() <= 1 / (1 + math.exp(-c)) - 1 + 1e-12

    _mutation_stress(lambda: xr.softmax(x), check_softmax, x, states, seconds=1.0)
    _mutation_stress(lambda: xr.binary_cross_entropy_with_logits(
        x, ones, reduction="none", return_grad=True), check_bce, x, states, seconds=1.0)
    x[...] = 0.0
    np.testing.assert_allclose(xr.softmax(x), 1.0 / k, rtol=1e-15)


# =============================================================================================
# The private core: no Rust panic ever reaches Python
# =============================================================================================

class Panicked(AssertionError):
    pass


def core_outcome(fn, *args):
    """Calls a private binding. Returns None (it ran) or the TypeError / ValueError /
    OverflowError (PyO3's conversion of an out-of-range integer) it raised; anything else
    (a PanicException, which is a BaseException, or the RuntimeError a caught panic becomes)
    fails the test."""
    try:
        fn(*args)
    except (TypeError, ValueError, OverflowError) as exc:
        return exc
    except BaseException as exc:  # noqa: BLE001 - what this test is about
        raise Panicked(f"{getattr(fn, '__name__', fn)}{_describe(args)} raised "
                       f"{type(exc).__module__}.{type(exc).__name__}: {exc}") from None
    return None


def _describe(args):
    parts = []
    for a in args:
        if isinstance(a, np.ndarray):
            parts.append(f"<{a.dtype}{list(a.shape)}>")
        else:
            parts.append(repr(a)[:30])
    return "(" + ", ".join(parts) + ")"


F32 = np.float32
XC = np.zeros((4, 3), F32)
LAB = np.zeros(4, np.int64)
_RO = np.zeros((4, 3), F32)
_RO.flags.writeable = False
_SHARED = np.zeros((4, 3), F32)
_P = np.full((4, 3), 1 / 3, F32)
_TL = np.zeros(4)
_SM, _LSE = "softmax", "logsumexp"

# Every call is inconsistent in some way the Python layer would have caught.
CORE_BAD_CALLS = {
    "cce_labels_short": (_core.cce_forward_backward, XC, 3, LAB[:3], None, None, -100, 0.0,
                         1.0, False),
    "cce_label_too_big": (_core.cce_forward_backward, XC, 3, np.array([0, 3, 0, 0]), None,
                          None, -100, 0.0, 1.0, False),
    "cce_label_negative": (_core.cce_forward_backward, XC, 3, np.array([0, -1, 0, 0]), None,
                           None, -100, 0.0, 1.0, False),
    "cce_label_huge_grad": (_core.cce_forward_backward, XC, 3,
                            np.array([0, 2**40, 0, 0]), None, None, -100, 0.0, 1.0, False,
                            None, None, np.zeros((4, 3), F32)),
    "cce_label_too_big_smooth_hess": (_core.cce_forward_backward, XC, 3,
                                      np.array([5, 0, 0, 0]), None, None, -100, 0.1, 1.0,
                                      False, None, None, None, np.zeros((4, 3), F32)),
    "cce_label_too_big_parallel": (_core.cce_forward_backward, np.zeros((60000, 3), F32), 3,
                                   np.full(60000, 7), None, None, -100, 0.0, 1.0, False),
    "cce_k_zero": (_core.cce_forward_backward, XC, 0, LAB, None, None, -100, 0.0, 1.0,
                   False),
    "cce_k_not_dividing": (_core.cce_forward_backward, XC, 5, LAB, None, None, -100, 0.0,
                           1.0, False),
    "cce_k_huge": (_core.cce_forward_backward, XC, 2**63, LAB, None, None, -100, 0.0, 1.0,
                   False),
    "cce_k_negative": (_core.cce_forward_backward, XC, -1, LAB, None, None, -100, 0.0, 1.0,
                       False),
    "cce_probs_short": (_core.cce_forward_backward, XC, 3, None, np.zeros(5, F32), None,
                        -100, 0.0, 1.0, False),
    # Probabilities keep their own float dtype (issue 9); an integer array is none.
    "cce_probs_dtype": (_core.cce_forward_backward, XC, 3, None, np.zeros((4, 3), np.int32),
                        None, -100, 0.0, 1.0, False),
    "cce_both_targets": (_core.cce_forward_backward, XC, 3, LAB, _P, None, -100, 0.0, 1.0,
                         False),
    "cce_no_target": (_core.cce_forward_backward, XC, 3, None, None, None, -100, 0.0, 1.0,
                      False),
    "cce_weight_short": (_core.cce_forward_backward, XC, 3, LAB, None, np.ones(2), -100, 0.0,
                         1.0, False),
    "cce_weight_2d": (_core.cce_forward_backward, XC, 3, LAB, None, np.ones((1, 3)), -100,
                      0.0, 1.0, False),
    "cce_losses_short": (_core.cce_forward_backward, XC, 3, LAB, None, None, -100, 0.0, 1.0,
                         False, np.zeros(3, F32)),
    "cce_lse_dtype": (_core.cce_forward_backward, XC, 3, LAB, None, None, -100, 0.0, 1.0,
                      True, None, np.zeros(4)),
    "cce_grad_short": (_core.cce_forward_backward, XC, 3, LAB, None, None, -100, 0.0, 1.0,
                       False, None, None, np.zeros(5, F32)),
    "cce_grad_dtype": (_core.cce_forward_backward, XC, 3, LAB, None, None, -100, 0.0, 1.0,
                       False, None, None, np.zeros(12)),
    "cce_grad_readonly": (_core.cce_forward_backward, XC, 3, LAB, None, None, -100, 0.0, 1.0,
                          False, None, None, _RO),
    "cce_grad_is_logits": (_core.cce_forward_backward, _SHARED, 3, LAB, None, None, -100,
                           0.0, 1.0, False, None, None, _SHARED),
    "cce_grad_is_probs": (_core.cce_forward_backward, XC, 3, None, _P, None, -100, 0.0, 1.0,
                          False, None, None, _P),
    "cce_hess_is_grad": (_core.cce_forward_backward, XC, 3, LAB, None, None, -100, 0.0, 1.0,
                         False, None, None, _SHARED, _SHARED),
    "cce_in_place_no_grad": (_core.cce_forward_backward, XC, 3, LAB, None, None, -100, 0.0,
                             1.0, False, None, None, None, None, True),
    "cce_in_place_grad_dtype": (_core.cce_forward_backward, XC, 3, LAB, None, None, -100,
                                0.0, 1.0, False, None, None, np.zeros((4, 3)), None, True),
    "cce_logits_int": (_core.cce_forward_backward, XC.astype(np.int32), 3, LAB, None, None,
                       -100, 0.0, 1.0, False),
    "cce_logits_big_endian": (_core.cce_forward_backward, XC.astype(">f4"), 3, LAB, None,
                              None, -100, 0.0, 1.0, False),
    "cce_logits_misaligned": (_core.cce_forward_backward, misaligned(XC), 3, LAB, None, None,
                              -100, 0.0, 1.0, False),
    "cce_logits_strided": (_core.cce_forward_backward, np.zeros((4, 6), F32)[:, ::2], 3, LAB,
                           None, None, -100, 0.0, 1.0, False),
    "cce_logits_list": (_core.cce_forward_backward, [[1.0, 2.0, 3.0]], 3, LAB[:1], None,
                        None, -100, 0.0, 1.0, False),
    "cce_logits_none": (_core.cce_forward_backward, None, 3, LAB, None, None, -100, 0.0, 1.0,
                        False),
    "cce_labels_int32": (_core.cce_forward_backward, XC, 3, LAB.astype(np.int32), None, None,
                         -100, 0.0, 1.0, False),
    "cce_labels_big_endian": (_core.cce_forward_backward, XC, 3, LAB.astype(">i8"), None,
                              None, -100, 0.0, 1.0, False),
    "cce_labels_strided": (_core.cce_forward_backward, XC, 3, np.zeros(8, np.int64)[::2],
                           None, None, -100, 0.0, 1.0, False),
    "cce_labels_misaligned": (_core.cce_forward_backward, XC, 3, misaligned(LAB), None, None,
                              -100, 0.0, 1.0, False),
    "check_labels_k_zero": (_core.cce_check_labels, LAB, 0, -100),
    "check_labels_out_of_range": (_core.cce_check_labels, np.array([0, 9]), 3, -100),
    "check_labels_weight_short": (_core.cce_check_labels, np.array([0, 2]), 3, -100,
                                  np.ones(2)),
    "check_labels_weight_empty": (_core.cce_check_labels, np.array([0]), 3, -100,
                                  np.ones(0)),
    "bce_logits_2d": (_core.bce_forward_backward, XC, XC[:2], 3, None, False, None, False,
                      0.0, 1.0),
    "bce_target_short": (_core.bce_forward_backward, XC.ravel(), XC.ravel()[:5], 3, None,
                         False, None, False, 0.0, 1.0),
    # Targets keep their own float dtype (issue 9); an integer array is none.
    "bce_target_dtype": (_core.bce_forward_backward, XC.ravel(), np.zeros(12, np.int32), 3,
                         None, False, None, False, 0.0, 1.0),
    "bce_target_out_of_range": (_core.bce_forward_backward, XC.ravel(), np.full(12, 2, F32),
                                3, None, False, None, False, 0.0, 1.0),
    "bce_target_nan": (_core.bce_forward_backward, XC.ravel(), np.full(12, np.nan, F32), 3,
                       None, False, None, False, 0.0, 1.0),
    "bce_target_none": (_core.bce_forward_backward, XC.ravel(), None, 3, None, False, None,
                        False, 0.0, 1.0),
    "bce_weight_last_short": (_core.bce_forward_backward, XC.ravel(), XC.ravel(), 3,
                              np.ones(2), False, None, False, 0.0, 1.0),
    "bce_weight_full_short": (_core.bce_forward_backward, XC.ravel(), XC.ravel(), 3,
                              np.ones(5), True, None, False, 0.0, 1.0),
    "bce_pos_weight_last_long": (_core.bce_forward_backward, XC.ravel(), XC.ravel(), 3, None,
                                 False, np.ones(4), False, 0.0, 1.0),
    "bce_last_zero_pos_weight_empty": (_core.bce_forward_backward, XC.ravel(), XC.ravel(), 0,
                                       None, False, np.ones(0), False, 0.0, 1.0),
    "bce_last_zero_weight_empty": (_core.bce_forward_backward, XC.ravel(), XC.ravel(), 0,
                                   np.ones(0), False, None, False, 0.0, 1.0),
    "bce_grad_short": (_core.bce_forward_backward, XC.ravel(), XC.ravel(), 3, None, False,
                       None, False, 0.0, 1.0, None, np.zeros(5, F32)),
    "bce_in_place_no_grad": (_core.bce_forward_backward, XC.ravel(), XC.ravel(), 3, None,
                             False, None, False, 0.0, 1.0, None, None, None, True),
    "bce_grad_is_target": (_core.bce_forward_backward, XC.ravel(), _SHARED.ravel(), 3, None,
                           False, None, False, 0.0, 1.0, None, _SHARED.ravel()),
    "bce_weight_2d": (_core.bce_forward_backward, XC.ravel(), XC.ravel(), 3, np.ones((1, 3)),
                      False, None, False, 0.0, 1.0),
    "rowwise_out_short": (_core.rowwise, XC, np.zeros(5, F32), 3, _SM),
    "rowwise_kind_unknown": (_core.rowwise, XC, np.zeros((4, 3), F32), 3, "softmin"),
    "rowwise_kind_case": (_core.rowwise, XC, np.zeros((4, 3), F32), 3, "SOFTMAX"),
    "rowwise_kind_empty": (_core.rowwise, XC, np.zeros((4, 3), F32), 3, ""),
    "rowwise_kind_int": (_core.rowwise, XC, np.zeros((4, 3), F32), 3, 0),
    "rowwise_kind_float": (_core.rowwise, XC, np.zeros((4, 3), F32), 3, 0.5),
    "rowwise_lse_out_rows": (_core.rowwise, XC, np.zeros(3, F32), 3, _LSE),
    "rowwise_k_not_dividing": (_core.rowwise, np.zeros(6, F32), np.zeros(6, F32), 4, _SM),
    "rowwise_k_zero": (_core.rowwise, np.zeros(5, F32), np.zeros(5, F32), 0, _SM),
    "rowwise_k_zero_lse": (_core.rowwise, np.zeros(0, F32), np.zeros(3, F32), 0, _LSE),
    "rowwise_lse_in_place": (_core.rowwise, np.zeros(6, F32), np.zeros(3, F32), 2, _LSE,
                             True),
    "rowwise_out_dtype": (_core.rowwise, XC, np.zeros((4, 3)), 3, _SM),
    "rowwise_out_is_logits": (_core.rowwise, _SHARED, _SHARED, 3, _SM),
    "rowwise_out_overlaps": (_core.rowwise, _SHARED.ravel()[:9], _SHARED.ravel()[3:], 3,
                             _SM),
    "top_label_conf_short": (_core.top_label, XC, 3, np.zeros(3), np.zeros(4, np.int64)),
    "top_label_k_zero": (_core.top_label, XC, 0, np.zeros(4), np.zeros(4, np.int64)),
    "top_label_conf_dtype": (_core.top_label, XC, 3, np.zeros(4, F32),
                             np.zeros(4, np.int64)),
    "top_label_argmax_dtype": (_core.top_label, XC, 3, np.zeros(4), np.zeros(4, np.int32)),
    "top_label_aliased": (_core.top_label, XC, 3, _TL, _TL.view(np.int64)),
    "temperature_labels_short": (_core.temperature_objective, XC, 3, LAB[:2], 1.0),
    "temperature_label_too_big": (_core.temperature_objective, XC, 3,
                                  np.array([0, 1, 7, 0]), 1.0),
    "temperature_label_negative": (_core.temperature_objective, XC, 3,
                                   np.array([0, -1, 0, 0]), 1.0),
    "temperature_label_int64_min": (_core.temperature_objective, XC, 3,
                                    np.array([0, -(2**63), 0, 0]), 1.0),
    "temperature_weight_short": (_core.temperature_objective, XC, 3, LAB, 1.0, np.ones(2)),
    "temperature_k_zero": (_core.temperature_objective, XC, 0, LAB, 1.0),
    "set_threads_zero": (_core.set_num_threads, 0),
    "set_threads_negative": (_core.set_num_threads, -1),
    "set_threads_huge": (_core.set_num_threads, 2**64),
}


@pytest.mark.parametrize("case", list(CORE_BAD_CALLS))
def test_private_core_refuses_inconsistent_calls(case):
    fn, *args = CORE_BAD_CALLS[case]
    exc = core_outcome(fn, *args)
    assert exc is not None, f"{case}: an inconsistent call was accepted"


def _random_array():
    return st.one_of(
        st.none(),
        hnp.arrays(st.sampled_from([np.float32, np.float64, np.float16, np.int64, np.int32,
                                    np.bool_]), st.integers(0, 13)),
        hnp.arrays(st.sampled_from([np.float32, np.float64]),
                   st.tuples(st.integers(0, 5), st.integers(0, 5))),
        hnp.arrays(np.int64, st.integers(0, 7), elements=st.integers(-3, 8)),
    )


def _core_call(data):
    """A consistent call of a random private entry point (the kind the Python layer makes),
    then one to three of its arguments replaced by something inconsistent: a random array,
    another k, an out-of-range label, a wrong in_place flag."""
    n = data.draw(st.sampled_from([1, 2, 3, 5, 0]))
    k = data.draw(st.sampled_from([3, 1, 2, 5]))
    dt = data.draw(st.sampled_from([np.float16, np.float32, np.float64]))
    x = np.linspace(-3, 3, n * k).astype(dt).reshape(n, k)
    labels = (np.arange(n) % k).astype(np.int64)
    probs = np.full((n, k), 1.0 / k, dt)
    weight = np.ones(k)
    fn = data.draw(st.sampled_from(["cce", "check", "bce", "rowwise", "top", "temp"]))
    if fn == "cce":
        target = data.draw(st.sampled_from(["index", "probs"]))
        args = [x, k, labels if target == "index" else None,
                probs if target == "probs" else None, weight, -100, 0.1, 1.0, True,
                np.empty(n, dt), np.empty(n, dt), np.empty((n, k), dt), np.empty((n, k), dt),
                False]
        call = _core.cce_forward_backward
    elif fn == "check":
        args, call = [labels, k, -100, weight], _core.cce_check_labels
    elif fn == "bce":
        args = [x.ravel(), (x.ravel() > 0).astype(dt), k, weight, False, weight, False, 0.1,
                1.0, np.empty(n * k, dt), np.empty(n * k, dt), np.empty(n * k, dt), False]
        call = _core.bce_forward_backward
    elif fn == "rowwise":
        op = data.draw(st.sampled_from(["softmax", "log_softmax", "logsumexp"]))
        args = [x, np.empty(n if op == "logsumexp" else (n, k), dt), k, op, False]
        call = _core.rowwise
    elif fn == "top":
        args = [x, k, np.empty(n), np.empty(n, np.int64)]
        call = _core.top_label
    else:
        args = [x, k, labels, 1.0, weight]
        call = _core.temperature_objective
    # Which arguments to spoil: the label-like ones most often (the kernels index with them).
    label_slots = [i for i, a in enumerate(args)
                   if isinstance(a, np.ndarray) and a.dtype == np.int64 and a.size]
    n_spoil = data.draw(st.sampled_from([1, 1, 1, 2, 3]))
    positions = set()
    for _ in range(n_spoil):
        if label_slots and data.draw(st.booleans()):
            positions.add(data.draw(st.sampled_from(label_slots)))
        else:
            positions.add(data.draw(st.integers(0, len(args) - 1)))
    for i in sorted(positions):
        old = args[i]
        if isinstance(old, bool):
            args[i] = not old
        elif isinstance(old, int):  # k, ignore_index
            args[i] = data.draw(st.sampled_from([0, 1, k + 1, 2 * k, -1, 2**63, -(2**63)]))
        elif isinstance(old, str):  # rowwise's kind
            args[i] = data.draw(st.sampled_from(["", "softmin", "LOGSUMEXP", "softmax ", 2]))
        elif isinstance(old, float):
            args[i] = data.draw(st.sampled_from([np.nan, np.inf, -1.0, 0.0, 2.0]))
        elif i in label_slots:
            bad = old.copy()
            bad[data.draw(st.integers(0, old.size - 1))] = data.draw(
                st.sampled_from([-1, k, k + 7, 2**40, -(2**63), 2**63 - 1]))
            args[i] = bad
        elif isinstance(old, np.ndarray) and old.dtype == np.float64 and old.shape == (k,) \
                and data.draw(st.booleans()):
            args[i] = old[: data.draw(st.integers(0, k - 1))]  # a short weight vector
        else:
            args[i] = data.draw(_random_array())
    return call, args


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_private_core_fuzz_never_panics(data):
    """Consistent calls of every private entry point with one to three arguments made
    inconsistent: each call runs or raises TypeError / ValueError / OverflowError, never a
    panic."""
    call, args = _core_call(data)
    with np.errstate(all="ignore"):
        core_outcome(call, *args)


# =============================================================================================
# Hostile objects in every argument of every public function
# =============================================================================================

HOSTILE = [None, "abc", b"x", 1.5, -1, 0, 3, True, 2**70, -(2**70), float("nan"),
           float("inf"), -float("inf"), 1 + 2j, object(), [], [[]], [["a"]], [1, "a"], {},
           (), np.array([]), np.array(np.nan), np.zeros((4, 0)), np.zeros((0, 3)),
           np.ones((4, 3), np.int8), np.ones(3, ">f8"), np.full((4, 3), np.inf),
           np.full((4, 3), np.nan), np.array(["x"]), np.zeros(4, complex), np.zeros(4, object),
           np.zeros(4, "M8[s]"), np.zeros((4, 3), np.float16), np.full(4, -5),
           np.full(4, 2**40), np.ones((4, 3), bool), np.ones((1, 3)), np.ones(4), slice(None),
           Ellipsis, print]


def _valid_calls():
    x = X32[:4, :3].copy()
    t = np.array([0, 1, 2, 0])
    y = Y32[:4, :3].copy()
    return {
        "cross_entropy": (xr.cross_entropy, [x, t],
                          dict(weight=None, ignore_index=-100, label_smoothing=0.0,
                               reduction="mean", return_grad=False, return_hess=False,
                               return_lse=False, out=None)),
        "bce": (xr.binary_cross_entropy_with_logits, [x, y],
                dict(weight=None, pos_weight=None, label_smoothing=0.0, reduction="mean",
                     return_grad=False, return_hess=False, out=None)),
        "softmax": (xr.softmax, [x], dict(out=None)),
        "log_softmax": (xr.log_softmax, [x], dict(out=None)),
        "logsumexp": (xr.logsumexp, [x], {}),
        "calibration_error": (cal.calibration_error, [x, t],
                              dict(n_bins=5, norm="l1", strategy="uniform",
                                   convention="right", from_logits=True,
                                   sample_weight=None)),
        "reliability_diagram": (cal.reliability_diagram, [x, t],
                                dict(n_bins=5, strategy="uniform", convention="right",
                                     from_logits=True, sample_weight=None)),
        "brier_score": (cal.brier_score, [x, t], dict(from_logits=True, sample_weight=None)),
        "brier_decomposition": (cal.brier_decomposition, [x, t],
                                dict(n_bins=5, strategy="quantile", convention="right",
                                     from_logits=True, sample_weight=None)),
        "fit_temperature": (cal.fit_temperature, [X32, T], dict(weight=None)),
        "energy_score": (cal.energy_score, [x], dict(temperature=1.0)),
        "loss_breakdown": (cal.loss_breakdown, [x, t], dict(threshold=0.01)),
        "label_dependence": (cal.label_dependence, [y], {}),
        "accumulator_update": (
            lambda a, b, sample_weight=None: cal.CalibrationAccumulator(
                n_bins=4, from_logits=True).update(a, b, sample_weight).result(),
            [x, t], dict(sample_weight=None)),
        "accumulator_init": (lambda n_bins=15, convention="right", from_logits=False:
                             cal.CalibrationAccumulator(n_bins, convention=convention,
                                                        from_logits=from_logits),
                             [], dict(n_bins=15, convention="right", from_logits=False)),
    }


VALID = _valid_calls()


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(VALID)), data=st.data())
def test_hostile_arguments_give_a_result_or_a_named_error(name, data):
    """One or two arguments replaced by a hostile object: the call returns, or raises a
    TypeError / ValueError whose message starts with the name of a replaced argument
    (for positional ones, the function's name for it)."""
    fn, pos, kw = VALID[name]
    pos, kw = list(pos), dict(kw)
    pos_names = {"cross_entropy": ["logits", "target"], "bce": ["logits", "target"],
                 "softmax": ["logits"], "log_softmax": ["logits"], "logsumexp": ["logits"],
                 "calibration_error": ["probs", "labels"],
                 "reliability_diagram": ["probs", "labels"],
                 "brier_score": ["probs", "labels"], "brier_decomposition": ["probs", "labels"],
                 "fit_temperature": ["logits", "labels"], "energy_score": ["logits"],
                 "loss_breakdown": ["logits", "labels"], "label_dependence": ["targets"],
                 "accumulator_update": ["probs_or_logits", "labels"],
                 "accumulator_init": []}[name]
    slots = [("pos", i) for i in range(len(pos))] + [("kw", key) for key in kw]
    chosen = data.draw(st.lists(st.sampled_from(slots), min_size=1, max_size=2, unique=True))
    names = set()
    for where, key in chosen:
        value = data.draw(st.sampled_from(HOSTILE))
        if key == "n_bins" and isinstance(value, int) and abs(value) > 2**20:
            value = 2**20  # unallocatable bin counts are tested on their own above
        if where == "pos":
            pos[key] = value
            names.add(pos_names[key])
        else:
            kw[key] = value
            names.add(key)
    try:
        with np.errstate(all="ignore"):
            fn(*pos, **kw)
    except (TypeError, ValueError) as exc:
        msg = str(exc)
        # Errors about a consequence of a replaced argument may name a related one (e.g. a
        # bad target shape names 'target' after 'logits' changed): accept any argument name
        # of the call, but never an anonymous message.
        allowed = set(pos_names) | set(kw) | names | {"CalibrationAccumulator", "other"}
        assert any(msg.startswith(n) for n in allowed), (name, chosen, msg)
