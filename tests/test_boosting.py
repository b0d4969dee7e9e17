"""``xent_rs.boosting``: the XGBoost and LightGBM custom objectives.

* Unit: the gradient and Hessian against closed forms and ``xent_rs.reference`` for every
  ``hessian`` mode, class weights, label smoothing, ``pos_weight``, sample weights, dtypes and
  each library's layouts (on stand-in data sets: no library needed); argument errors.
* Training: each library's built-in objective against ours from the same starting margin, on
  scikit-learn's bundled data sets; the raw margins must agree to the bounds below.
* The README text (``docs/boosting.md``): its examples run.
"""

from __future__ import annotations

import doctest
import os
import re

import numpy as np
import pytest
from conftest import assert_close, raises, run_script

import xent_rs as xr
from xent_rs import boosting, reference as ref

FACTORIES = {"xgboost": boosting.xgboost_objective, "lightgbm": boosting.lightgbm_objective}
DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                    "boosting.md")

# Largest |raw margin difference| from the built-in objective after ROUNDS rounds, on the
# training rows (margins reach about 5). Measured with XGBoost 3.2 / LightGBM 4.7 on one
# thread: XGBoost ≤ 1.9e-6 (multi:softprob computes its softmax in float32, we round once
# from float64), LightGBM 0 (identical trees). Bounds with margin for other CPUs' roundings.
XGBOOST_MATCH = 1e-5
LIGHTGBM_MATCH = 1e-6
# With another Hessian the trees must differ by far more (measured about 3 and 1.3): the
# comparison sees the Hessian.
OTHER_HESSIAN_GAP = 0.1
ROUNDS = 20
# Class weights exact in float32 (LightGBM keeps sample weights in float32; a weight that
# is not exact there shifts near-tied split gains on load_digits and changes the trees).
CLASS_WEIGHT = np.arange(1, 11) / 4.0


class Data:
    """Stands in for an ``xgboost.DMatrix`` / ``lightgbm.Dataset``."""

    def __init__(self, label, weight=None):
        self.label, self.weight = label, weight

    def get_label(self):
        return self.label

    def get_weight(self):
        return self.weight


def softmax_problem(rng, n=7, k=4, dtype=np.float64):
    z = (rng.standard_normal((n, k)) * 3).astype(dtype)
    label = rng.integers(0, k, n).astype(np.float32)  # labels arrive as floats
    return z, label


def expected_softmax(z, label, *, sample_weight=None, weight=None, eps=0.0, hessian="exact"):
    """The float64 reference, rows scaled by the sample weights, then the Hessian mode."""
    k = z.shape[1]
    _, grad, hess = ref.cross_entropy(z, label.astype(np.int64), weight=weight,
                                      label_smoothing=eps, reduction="sum",
                                      return_grad=True, return_hess=True)
    s = np.ones(len(label)) if sample_weight is None else np.asarray(sample_weight, np.float64)
    grad, hess = grad * s[:, None], hess * s[:, None]
    if hessian == "xgboost":
        hess = np.maximum(2 * hess, boosting.XGBOOST_HESSIAN_FLOOR)
    elif hessian == "lightgbm":
        hess = hess * k / (k - 1)
    return grad, hess


# ------------------------------------------------------------------------ closed forms --

@pytest.mark.parametrize("library", FACTORIES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_default_is_the_builtin_closed_form(rng, library, dtype):
    """Without extras: grad = p − onehot(y), hess = 2p(1−p) (XGBoost) or K/(K−1)·p(1−p)."""
    z, label = softmax_problem(rng, dtype=dtype)
    grad, hess = FACTORIES[library]()(z, Data(label))
    z64 = z.astype(np.float64)
    p = np.exp(z64 - z64.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    factor = 2.0 if library == "xgboost" else 4 / 3
    assert grad.dtype == hess.dtype == dtype and grad.shape == hess.shape == z.shape
    assert_close(grad, p - np.eye(4)[label.astype(int)], dtype)
    assert_close(hess, factor * p * (1 - p), dtype, scale_atol=False)


@pytest.mark.parametrize("library", FACTORIES)
def test_sigmoid_closed_form_ignores_hessian(rng, library):
    """Binary margins: grad = σ(z) − y, hess = σ(z)(1−σ(z)) whatever ``hessian`` says."""
    z = rng.standard_normal(9) * 3
    label = rng.integers(0, 2, 9).astype(np.float32)
    p = 1 / (1 + np.exp(-z))
    for hessian in boosting.HESSIANS:
        grad, hess = FACTORIES[library](hessian=hessian)(z, Data(label))
        assert_close(grad, p - label, np.float64)
        assert_close(hess, p * (1 - p), np.float64, scale_atol=False)


# ------------------------------------------------------------------ against the reference --

@pytest.mark.parametrize("hessian", boosting.HESSIANS)
@pytest.mark.parametrize("factory", FACTORIES.values())
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("extras", ["none", "class_weight", "smoothing", "sample_weight", "all"])
def test_softmax_matches_reference(rng, hessian, factory, dtype, extras):
    z, label = softmax_problem(rng, n=11, k=5, dtype=dtype)
    weight = rng.uniform(0.1, 3.0, 5) if extras in ("class_weight", "all") else None
    eps = 0.2 if extras in ("smoothing", "all") else 0.0
    sw = rng.uniform(0.0, 2.0, 11) if extras in ("sample_weight", "all") else None
    grad, hess = factory(weight=weight, label_smoothing=eps, hessian=hessian)(z, Data(label, sw))
    want_g, want_h = expected_softmax(z, label, sample_weight=sw, weight=weight, eps=eps,
                                      hessian=hessian)
    assert grad.dtype == hess.dtype == dtype
    assert_close(grad, want_g, dtype)
    assert_close(hess, want_h, dtype, scale_atol=False)


@pytest.mark.parametrize("factory", FACTORIES.values())
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_matches_reference(rng, factory, dtype):
    n = 13
    z = (rng.standard_normal(n) * 4).astype(dtype)
    label = rng.random(n).astype(np.float32)  # soft labels in [0, 1] are allowed
    label[:4] = [0, 1, 0, 1]
    sw = rng.uniform(0.0, 2.0, n)
    grad, hess = factory(pos_weight=2.5, label_smoothing=0.1)(z, Data(label, sw))
    _, want_g, want_h = ref.binary_cross_entropy_with_logits(
        z, label, weight=sw, pos_weight=2.5, label_smoothing=0.1, reduction="sum",
        return_grad=True, return_hess=True)
    assert grad.dtype == hess.dtype == dtype and grad.shape == (n,)
    assert_close(grad, want_g, dtype)
    assert_close(hess, want_h, dtype, scale_atol=False)


def test_xgboost_hessian_floor(rng):
    """``"xgboost"``: a zero sample weight (or a saturated row) still gets a 1e-16 Hessian,
    as multi:softprob; the exact Hessian is 0 there."""
    z, label = softmax_problem(rng)
    z[1] = [0.0, -200.0, -200.0, -200.0]
    label[1] = 0
    sw = np.ones(7)
    sw[0] = 0.0
    _, hess = boosting.xgboost_objective()(z, Data(label, sw))
    np.testing.assert_array_equal(hess[0], boosting.XGBOOST_HESSIAN_FLOOR)
    np.testing.assert_array_equal(hess[1], boosting.XGBOOST_HESSIAN_FLOOR)
    _, exact = boosting.xgboost_objective(hessian="exact")(z, Data(label, sw))
    np.testing.assert_array_equal(exact[0], 0.0)
    assert np.all(hess[2:] == 2 * exact[2:])


@pytest.mark.parametrize("empty", [None, np.array([], dtype=np.float32)])
def test_no_sample_weights(rng, empty):
    """XGBoost reports no weights as an empty array, LightGBM as None: both mean 1."""
    z, label = softmax_problem(rng)
    want = boosting.xgboost_objective()(z, Data(label, np.ones(7)))
    got = boosting.xgboost_objective()(z, Data(label, empty))
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


# -------------------------------------------------------------------------------- layouts --

def test_layouts(rng):
    """Each result comes back in the layout its margins came in: (n, K); a Fortran-ordered
    (n, K) view (LightGBM 4); flat row-major (n·K,) (older XGBoost); flat class-major (K·n,)
    (LightGBM 3); (n, 1) and (n,) binary margins."""
    z, label = softmax_problem(rng, n=6, k=3)
    want_g, want_h = boosting.lightgbm_objective()(z, Data(label))
    fortran = np.asfortranarray(z)
    got = boosting.lightgbm_objective()(fortran, Data(label))
    for a, b in zip(got, (want_g, want_h)):
        np.testing.assert_array_equal(a, b)
    got = boosting.lightgbm_objective()(z.T.reshape(-1), Data(label))
    for a, b in zip(got, (want_g, want_h)):
        np.testing.assert_array_equal(a, b.T.reshape(-1))
    xg = boosting.xgboost_objective()(z, Data(label))
    got = boosting.xgboost_objective()(z.reshape(-1), Data(label))
    for a, b in zip(got, xg):
        np.testing.assert_array_equal(a, b.reshape(-1))

    zb = rng.standard_normal(6)
    yb = (rng.random(6) < 0.5).astype(np.float32)
    flat = boosting.xgboost_objective()(zb, Data(yb))
    column = boosting.xgboost_objective()(zb[:, None], Data(yb))
    for a, b in zip(column, flat):
        assert a.shape == (6, 1)
        np.testing.assert_array_equal(a[:, 0], b)


# --------------------------------------------------------------------------------- errors --

def test_factory_argument_errors():
    for factory in FACTORIES.values():
        raises(ValueError, "hessian", factory, hessian="newton")
        raises(ValueError, "hessian", factory, hessian=None)
        raises(ValueError, "label_smoothing", factory, label_smoothing=1.5)
        raises(TypeError, "label_smoothing", factory, label_smoothing="0.1")
        raises(ValueError, "weight", factory, weight=[1.0, -1.0])
        raises(ValueError, "weight", factory, weight=[1.0, np.nan])
        raises(ValueError, "weight", factory, weight=[[1.0, 2.0]])
        raises(ValueError, "pos_weight", factory, pos_weight=-1.0)
        raises(ValueError, "pos_weight", factory, pos_weight=np.inf)
        raises(TypeError, "pos_weight", factory, pos_weight=[2.0])


@pytest.mark.parametrize("library", FACTORIES)
def test_call_errors(rng, library):
    obj = FACTORIES[library]()
    margins, data = ("predt", "dtrain") if library == "xgboost" else ("preds", "train_data")
    z, label = softmax_problem(rng, n=5, k=3)
    bad = label.copy()
    bad[0] = 1.5
    e = raises(ValueError, f"{data}.get_label()", obj, z, Data(bad))
    assert "whole" in str(e)
    bad[0] = 3.0
    e = raises(ValueError, f"{data}.get_label()", obj, z, Data(bad))
    assert "[0, 3)" in str(e)
    bad[0] = -1.0
    raises(ValueError, f"{data}.get_label()", obj, z, Data(bad))
    bad[0] = np.nan
    raises(ValueError, f"{data}.get_label()", obj, z, Data(bad))
    raises(ValueError, f"{data}.get_label()", obj, z, Data(label[:, None]))
    raises(ValueError, margins, obj, z[:4], Data(label))
    raises(ValueError, margins, obj, z.reshape(-1)[:14], Data(label))
    raises(TypeError, margins, obj, z.astype(np.int64), Data(label))
    raises(ValueError, f"{data}.get_weight()", obj, z, Data(label, np.ones(4)))
    raises(ValueError, f"{data}.get_weight()", obj, z, Data(label, -np.ones(5)))
    raises(ValueError, "weight", FACTORIES[library](weight=[1.0, 2.0]), z, Data(label))
    raises(ValueError, "pos_weight", FACTORIES[library](pos_weight=2.0), z, Data(label))

    zb = rng.standard_normal(5)
    yb = np.array([0, 1, 1, 0, 1], dtype=np.float32)
    for value in (1.5, -0.5, np.nan):
        bad = yb.copy()
        bad[2] = value
        e = raises(ValueError, f"{data}.get_label()", obj, zb, Data(bad))
        assert "[0, 1]" in str(e)
    raises(TypeError, f"{data}.get_label()", obj, zb, Data(np.array(["a"] * 5)))
    raises(ValueError, "weight", FACTORIES[library](weight=[1.0, 2.0]), zb, Data(yb))


# ------------------------------------------------------------------------------- packaging --

def test_import_does_not_import_the_libraries():
    out = run_script("import sys, xent_rs, xent_rs.boosting; xent_rs.boosting.xgboost_objective();"
                     "print(sorted({'xgboost', 'lightgbm', 'sklearn'} & set(sys.modules)))",
                     timeout=120)
    assert out.strip() == "[]"
    assert xr.boosting is boosting


def test_doctests():
    result = doctest.testmod(boosting, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0


# ------------------------------------------------------------- training against built-ins --

LIBRARIES = ["xgboost", "lightgbm"]
MATCH = {"xgboost": XGBOOST_MATCH, "lightgbm": LIGHTGBM_MATCH}
# The built-ins, started from margin 0 as a custom objective starts (base_score is read as a
# probability by binary:logistic, as a margin by multi:softprob and custom objectives).
BUILTIN = {
    "xgboost": {"multiclass": {"objective": "multi:softprob", "base_score": 0.0},
                "binary": {"objective": "binary:logistic", "base_score": 0.5}},
    "lightgbm": {"multiclass": {"objective": "multiclass", "boost_from_average": False},
                 "binary": {"objective": "binary", "boost_from_average": False}},
}
# The margins' dtype each library hands a custom objective.
MARGIN_DTYPE = {"xgboost": np.dtype(np.float32), "lightgbm": np.dtype(np.float64)}


@pytest.fixture(scope="module")
def digits():
    datasets = pytest.importorskip("sklearn.datasets")
    return datasets.load_digits(return_X_y=True)


@pytest.fixture(scope="module")
def cancer():
    datasets = pytest.importorskip("sklearn.datasets")
    return datasets.load_breast_cancer(return_X_y=True)


def sample_weights(n):
    """Random sample weights, exact in float32 (as both libraries store them)."""
    return np.random.default_rng(7).uniform(0.2, 2.0, n).astype(np.float32)


def train(library, X, y, *, obj=None, weight=None, **params):
    """Raw margins on the training rows after ROUNDS rounds on one thread, and the set of
    (shape, dtype) the custom objective ``obj`` was handed; without one, ``params`` name
    the built-in."""
    lib = pytest.importorskip(library)
    seen = set()

    def custom(margins, data):
        seen.add((margins.shape, margins.dtype))
        return obj(margins, data)

    if library == "xgboost":
        if obj is not None:
            params = {"base_score": 0.0, "disable_default_eval_metric": 1, **params}
        dtrain = lib.DMatrix(X, y, weight=weight)
        bst = lib.train({"nthread": 1, "max_depth": 4, **params}, dtrain, ROUNDS,
                        obj=None if obj is None else custom)
        return bst.predict(dtrain, output_margin=True), seen
    if obj is not None:
        params = {**params, "objective": custom}
    booster = lib.train({"num_threads": 1, "verbose": -1, "deterministic": True,
                         "num_leaves": 15, **params}, lib.Dataset(X, y, weight=weight), ROUNDS)
    return booster.predict(X, raw_score=True), seen


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("weighted", [False, True])
def test_multiclass_matches_builtin(digits, library, weighted):
    X, y = digits
    sw = sample_weights(len(y)) if weighted else None
    builtin, _ = train(library, X, y, weight=sw, num_class=10,
                       **BUILTIN[library]["multiclass"])
    ours, seen = train(library, X, y, weight=sw, num_class=10,
                       obj=FACTORIES[library]())
    assert seen == {((len(y), 10), MARGIN_DTYPE[library])}  # both pass (n, K)
    assert np.abs(ours - builtin).max() <= MATCH[library]
    exact, _ = train(library, X, y, weight=sw, num_class=10,
                     obj=FACTORIES[library](hessian="exact"))
    assert np.abs(exact - builtin).max() >= OTHER_HESSIAN_GAP


@pytest.mark.parametrize("library", LIBRARIES)
def test_class_weights_are_label_sample_weights(digits, library):
    """Class weights w train what the built-in trains with sample weights w[y]."""
    X, y = digits
    builtin, _ = train(library, X, y, weight=CLASS_WEIGHT[y], num_class=10,
                       **BUILTIN[library]["multiclass"])
    ours, _ = train(library, X, y, num_class=10,
                    obj=FACTORIES[library](weight=CLASS_WEIGHT))
    assert np.abs(ours - builtin).max() <= MATCH[library]


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("pos_weight", [None, 3.0])
def test_binary_matches_builtin(cancer, library, weighted, pos_weight):
    X, y = cancer
    sw = sample_weights(len(y)) if weighted else None
    extra = {} if pos_weight is None else {"scale_pos_weight": pos_weight}
    builtin, _ = train(library, X, y, weight=sw, **BUILTIN[library]["binary"], **extra)
    ours, seen = train(library, X, y, weight=sw,
                       obj=FACTORIES[library](pos_weight=pos_weight))
    assert seen == {((len(y),), MARGIN_DTYPE[library])}
    assert np.abs(ours - builtin).max() <= MATCH[library]


# ----------------------------------------------------------------------------- the README --

@pytest.mark.parametrize("library", LIBRARIES)
def test_docs_examples_run(digits, library, capsys):
    """Each example in docs/boosting.md runs and prints a difference within our bound."""
    pytest.importorskip(library)
    with open(DOCS, encoding="utf-8") as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
    (code,) = [b for b in blocks if f"import {library} as" in b]
    exec(compile(code, DOCS, "exec"), {})
    printed = float(capsys.readouterr().out.split()[-1])
    assert printed <= MATCH[library]
