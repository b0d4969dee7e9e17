"""Calibration beyond ECE against the packages the contract names: ``uncertainty-calibration``
(Kumar et al.'s debiased L2 estimator) and Apple's ``relplot`` (smooth ECE), plus SciPy's
optimiser for vector scaling. Each test skips when its package is absent
(``pip install uncertainty-calibration relplot``)."""

from __future__ import annotations

import numpy as np
import pytest

from xent_rs import calibration as cal


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _multiclass(seed, n, k=4):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * 2
    y = (z / 1.7 + rng.gumbel(size=z.shape)).argmax(axis=1)
    return z, y


# The equal-mass bins of uncertainty-calibration coincide with np.percentile's when the
# confidences are distinct and N = 0 or 1 mod 15 (its default 15 bins).
SIZES = [15 * 40, 15 * 40 + 1, 15 * 133, 15 * 133 + 1]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("seed", [0, 1])
def test_debiased_equals_uncertainty_calibration_top_label(n, seed):
    utils = pytest.importorskip("calibration.utils", reason="pip install uncertainty-calibration")
    z, y = _multiclass(seed, n)
    p = _softmax(z)
    assert len(np.unique(p.max(axis=1))) == n
    want = utils.get_calibration_error(p, y, p=2, debias=True, mode="top-label")
    got = cal.calibration_error(p, y, n_bins=15, norm="l2", strategy="quantile", debias=True)
    assert got == pytest.approx(want, rel=1e-10, abs=1e-14)
    got_logits = cal.calibration_error(z, y, n_bins=15, norm="l2", strategy="quantile",
                                       debias=True, from_logits=True)
    assert got_logits == pytest.approx(want, rel=1e-9, abs=1e-12)
    plain = utils.get_calibration_error(p, y, p=2, debias=False, mode="top-label")
    assert cal.calibration_error(p, y, n_bins=15, norm="l2", strategy="quantile") == \
        pytest.approx(plain, rel=1e-10)


@pytest.mark.parametrize("n", SIZES[:2])
def test_debiased_equals_uncertainty_calibration_binary(n):
    utils = pytest.importorskip("calibration.utils", reason="pip install uncertainty-calibration")
    rng = np.random.default_rng(7)
    p = rng.uniform(0.01, 0.99, n)
    y = (rng.uniform(size=n) < p ** 1.3).astype(np.int64)
    want = utils.get_calibration_error(p, y, p=2, debias=True)
    got = cal.calibration_error(p, y, n_bins=15, norm="l2", strategy="quantile", debias=True)
    assert got == pytest.approx(want, rel=1e-10, abs=1e-14)


def _relplot():
    return pytest.importorskip("relplot", reason="pip install relplot")


@pytest.mark.parametrize("seed, n, kind", [
    (0, 3000, "random"), (1, 20000, "square"), (2, 5000, "calibrated"), (3, 2000, "shrunk"),
    (4, 500, "square"), (5, 100000, "shrunk"), (6, 40, "square"),
])
def test_smooth_within_1e3_of_relplot(seed, n, kind):
    relplot = _relplot()
    rng = np.random.default_rng(seed)
    f = rng.uniform(size=n)
    g = {"random": np.full(n, 0.3), "square": f ** 2, "calibrated": f,
         "shrunk": 0.5 + 0.6 * (f - 0.5)}[kind]
    y = (rng.uniform(size=n) < g).astype(np.int64)
    want = relplot.smECE(f, y.astype(np.float64))
    assert cal.smooth_calibration_error(f, y) == pytest.approx(want, abs=1e-3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_smooth_top_label_within_1e3_of_relplot(seed):
    relplot = _relplot()
    z, y = _multiclass(seed, 4000, k=10)
    f, correct = relplot.multiclass_logits_to_confidences(z, y)
    want = relplot.smECE(f, correct)
    assert cal.smooth_calibration_error(z, y, from_logits=True) == pytest.approx(want, abs=1e-3)
    assert cal.smooth_calibration_error(_softmax(z), y) == pytest.approx(want, abs=1e-3)


def test_vector_scaling_is_scipys_minimum():
    optimize = pytest.importorskip("scipy.optimize")
    z, y = _multiclass(9, 3000, k=5)
    k = z.shape[1]

    def loss(theta):
        s = z * theta[:k] + theta[k:]
        m = s.max(axis=1)
        lse = m + np.log(np.exp(s - m[:, None]).sum(axis=1))
        return float((lse - s[np.arange(len(y)), y]).mean())

    w, b = cal.fit_vector_scaling(z, y)
    best = optimize.minimize(loss, np.concatenate([np.ones(k), np.zeros(k)]), method="BFGS",
                             options={"gtol": 1e-10})
    assert loss(np.concatenate([w, b])) <= best.fun + 1e-10
    bw, bb = best.x[:k], best.x[k:] - best.x[k:].mean()
    assert w == pytest.approx(bw, abs=1e-4) and b == pytest.approx(bb, abs=1e-4)
