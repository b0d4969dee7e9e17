"""``xent_rs.boosting``'s focal multiclass objective (``focal_gamma``): gradient and exact
Hessian diagonal against finite differences of ``xent_rs.reference.focal_loss``; ``γ = 0``
is the cross-entropy objective bit for bit; a short training run of each library."""

from __future__ import annotations

import numpy as np
import pytest

from xent_rs import boosting, reference as ref

FACTORIES = {"xgboost": boosting.xgboost_objective, "lightgbm": boosting.lightgbm_objective}


class Data:
    def __init__(self, label, weight=None):
        self.label, self.weight = label, weight

    def get_label(self):
        return self.label

    def get_weight(self):
        return self.weight


def problem(rng, n=6, k=4, scale=3.0):
    z = rng.standard_normal((n, k)) * scale
    label = rng.integers(0, k, n).astype(np.float32)
    return z, label


def summed_focal(z, label, gamma, weight):
    return ref.focal_loss(z, label.astype(np.int64), gamma=gamma, alpha=weight, reduction="sum")


@pytest.mark.parametrize("library", FACTORIES)
@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0, 3.5])
@pytest.mark.parametrize("weighted", [False, True])
def test_gradient_and_hessian_are_finite_differences_of_the_reference(rng, library, gamma,
                                                                       weighted):
    z, label = problem(rng)
    weight = np.array([0.5, 1.0, 2.0, 1.5]) if weighted else None
    obj = FACTORIES[library](hessian="exact", focal_gamma=gamma, weight=weight)
    grad, hess = obj(z, Data(label))
    h1, h2 = 1e-6, 1e-4
    f0 = summed_focal(z, label, gamma, weight)
    fd_g, fd_h = np.empty_like(z), np.empty_like(z)
    for i in np.ndindex(z.shape):
        a, b = z.copy(), z.copy()
        a[i] += h1
        b[i] -= h1
        fd_g[i] = (summed_focal(a, label, gamma, weight)
                   - summed_focal(b, label, gamma, weight)) / (2 * h1)
        a, b = z.copy(), z.copy()
        a[i] += h2
        b[i] -= h2
        fd_h[i] = (summed_focal(a, label, gamma, weight) - 2 * f0
                   + summed_focal(b, label, gamma, weight)) / h2**2
    np.testing.assert_allclose(grad, fd_g, atol=1e-8)
    np.testing.assert_allclose(hess, fd_h, atol=1e-5)


def test_a_badly_classified_row_has_a_negative_exact_hessian():
    # p_t ≈ 4.5e-5: H_tt ≈ p_t (1 + γ (2 − L)) < 0 for L = −log p_t ≈ 10 (not convex there).
    z = np.array([[0.0, 10.0, 0.0]])
    label = np.array([0.0])
    _, exact = boosting.xgboost_objective(hessian="exact", focal_gamma=2.0)(z, Data(label))
    h = 1e-3
    f = [summed_focal(z + np.array([[d, 0, 0]]), label, 2.0, None) for d in (-h, 0.0, h)]
    np.testing.assert_allclose(exact[0, 0], (f[0] - 2 * f[1] + f[2]) / h**2, rtol=1e-4)
    assert exact[0, 0] < 0
    _, floored = boosting.xgboost_objective(focal_gamma=2.0)(z, Data(label))
    assert floored[0, 0] == boosting.XGBOOST_HESSIAN_FLOOR


def test_hessian_of_a_confident_row_keeps_its_precision():
    # p_t = 1 − 2e-9: the Hessian is of size u^{γ+1}, finite and positive.
    z = np.array([[20.0, 0.0, -3.0]])
    _, hess = boosting.xgboost_objective(hessian="exact", focal_gamma=0.5)(z, Data(
        np.array([0.0])))
    assert np.isfinite(hess).all() and (hess > 0).all()
    h = 1e-3
    f = [summed_focal(z + np.array([[d, 0, 0]]), np.array([0.0]), 0.5, None)
         for d in (-h, 0.0, h)]
    np.testing.assert_allclose(hess[0, 0], (f[0] - 2 * f[1] + f[2]) / h**2, rtol=1e-3)


@pytest.mark.parametrize("library", FACTORIES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gamma_zero_is_the_cross_entropy_objective_exactly(rng, library, dtype):
    z, label = problem(rng, n=20, k=5)
    z = z.astype(dtype)
    w = np.linspace(0.5, 2.0, 5)
    sw = rng.uniform(0.5, 2.0, 20)
    for kw in ({}, {"weight": w}, {"label_smoothing": 0.1}, {"hessian": "exact"}):
        a = FACTORIES[library](**kw)(z, Data(label, sw))
        b = FACTORIES[library](focal_gamma=0.0, **kw)(z, Data(label, sw))
        for x, y in zip(a, b):
            assert x.dtype == y.dtype and x.tobytes() == y.tobytes()
    # And the focal objective tends to it continuously.
    for hessian in ("exact", "xgboost", "lightgbm"):
        a = FACTORIES[library](hessian=hessian)(z, Data(label, sw))
        b = FACTORIES[library](hessian=hessian, focal_gamma=1e-9)(z, Data(label, sw))
        tol = 1e-6 if dtype == np.float32 else 1e-7
        for x, y in zip(a, b):
            np.testing.assert_allclose(y, x, rtol=tol, atol=tol)


def test_sample_weights_and_hessian_modes(rng):
    z, label = problem(rng, n=8, k=3)
    sw = rng.uniform(0.5, 2.0, 8)
    g, h = boosting.lightgbm_objective(hessian="exact", focal_gamma=2.0)(z, Data(label))
    gw, hw = boosting.lightgbm_objective(hessian="exact", focal_gamma=2.0)(z, Data(label, sw))
    np.testing.assert_allclose(gw, g * sw[:, None], rtol=1e-14)
    np.testing.assert_allclose(hw, h * sw[:, None], rtol=1e-14)
    _, hl = boosting.lightgbm_objective(focal_gamma=2.0)(z, Data(label))
    np.testing.assert_allclose(hl, h * 3 / 2, rtol=1e-14)
    _, hx = boosting.xgboost_objective(focal_gamma=2.0)(z, Data(label))
    np.testing.assert_allclose(hx, np.maximum(2 * h, boosting.XGBOOST_HESSIAN_FLOOR),
                               rtol=1e-14)


@pytest.mark.parametrize("library", FACTORIES)
def test_bad_focal_gamma(library):
    for bad in (-1.0, np.nan, np.inf):
        with pytest.raises(ValueError, match="^focal_gamma"):
            FACTORIES[library](focal_gamma=bad)
    with pytest.raises(TypeError, match="^focal_gamma"):
        FACTORIES[library](focal_gamma="2")
    with pytest.raises(ValueError, match="^focal_gamma"):
        FACTORIES[library](focal_gamma=2.0, label_smoothing=0.1)
    with pytest.raises(ValueError, match="^focal_gamma"):
        FACTORIES[library](focal_gamma=2.0)(np.zeros(3), Data(np.array([0.0, 1.0, 1.0])))


ROUNDS = 15


@pytest.mark.parametrize("library", FACTORIES)
def test_a_short_training_run_lowers_the_focal_loss(library):
    datasets = pytest.importorskip("sklearn.datasets")
    lib = pytest.importorskip(library)
    X, y = datasets.load_digits(return_X_y=True)
    obj = FACTORIES[library](focal_gamma=2.0)
    if library == "xgboost":
        dtrain = lib.DMatrix(X, y)
        bst = lib.train({"nthread": 1, "max_depth": 4, "num_class": 10, "base_score": 0.0,
                         "disable_default_eval_metric": 1}, dtrain, ROUNDS, obj=obj)
        margins = bst.predict(dtrain, output_margin=True)
    else:
        booster = lib.train({"num_threads": 1, "verbose": -1, "deterministic": True,
                             "num_leaves": 15, "num_class": 10, "objective": obj},
                            lib.Dataset(X, y), ROUNDS)
        margins = booster.predict(X, raw_score=True)
    start = ref.focal_loss(np.zeros((len(y), 10)), y, gamma=2.0)
    end = ref.focal_loss(margins, y, gamma=2.0)
    assert end < 0.2 * start
    assert (np.argmax(margins, axis=1) == y).mean() > 0.9
