"""fit_temperature's safeguarded Newton iteration: one fused pass per iteration giving the
slope and the curvature of the mean loss in beta = 1/T, a handful of passes in all, the
optimum of a dense float64 scan, weights as repeated rows, and the documented edge cases."""

import numpy as np
import pytest

from xent_rs import _core
from xent_rs import reference as ref
from xent_rs.calibration import fit_temperature
from xent_rs.calibration import _temperature


def problem(rng, n, k, t0, scale=3.0):
    """Logits and labels drawn from softmax(z / t0): the fitted T is near t0."""
    z = rng.standard_normal((n, k)) * scale
    p = np.exp(z / t0)
    p /= p.sum(axis=1, keepdims=True)
    return z, (p.cumsum(axis=1) < rng.random((n, 1))).sum(axis=1).clip(0, k - 1)


@pytest.fixture
def passes(monkeypatch):
    """The betas of every core pass fit_temperature makes."""
    seen = []
    for name in ("temperature_objective", "temperature_pass"):
        real = getattr(_core, name)

        def counting(*args, real=real, **kwargs):
            seen.append(args[3])
            return real(*args, **kwargs)

        monkeypatch.setattr(_core, name, counting)
    return seen


def numpy_temperature(z, y, w=None):
    """The root of the float64 mean slope, by NumPy bisection on beta (to 1e-14)."""
    z = z.astype(np.float64)
    zy = z[np.arange(len(y)), y]
    wy = np.ones(len(y)) if w is None else w[y]

    def slope(b):
        s = b * z
        p = np.exp(s - s.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        return np.dot(wy, (p * z).sum(axis=1) - zy)

    lo, hi = 0.0, 1.0
    while slope(hi) < 0:
        lo, hi = hi, 2 * hi
    while hi - lo > 1e-14 * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if slope(mid) < 0 else (lo, mid)
    return 2.0 / (lo + hi)


def mean_loss(z, y, betas, w=None):
    """The float64 mean loss at each beta, by NumPy (a dense scan)."""
    out = []
    zy = z[np.arange(len(y)), y]
    wy = np.ones(len(y)) if w is None else w[y]
    for b in betas:
        s = b * z
        m = s.max(axis=1)
        lse = m + np.log(np.exp(s - m[:, None]).sum(axis=1))
        out.append(np.dot(wy, lse - b * zy) / wy.sum())
    return np.array(out)


@pytest.mark.parametrize("k", [2, 10, 100])
@pytest.mark.parametrize("t0", [0.3, 1.0, 2.5, 8.0])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_a_handful_of_passes_each_with_the_curvature(passes, k, t0, dtype):
    rng = np.random.default_rng(k * 100 + int(t0 * 10))
    z, y = problem(rng, 2000, k, t0)
    z = z.astype(dtype)
    t = fit_temperature(z, y)
    assert 1 <= len(passes) <= 8, passes
    # float32 / float16 logits: the kernel's float32 exponentials move the root by ~1e-7.
    assert t == pytest.approx(numpy_temperature(z, y), rel=1e-9 if dtype == np.float64 else 2e-6)


def test_the_reference_on_a_small_problem():
    rng = np.random.default_rng(8)
    z, y = problem(rng, 60, 3, 1.8)
    w = np.array([1.0, 2.0, 0.5])
    assert fit_temperature(z, y, weight=w) == pytest.approx(ref.fit_temperature(z, y, weight=w),
                                                            rel=1e-6)


def test_the_curvature_is_the_derivative_of_the_slope():
    rng = np.random.default_rng(5)
    z, y = problem(rng, 500, 7, 1.5)
    w = rng.random(7) + 0.5
    c = np.zeros(1)
    h = 1e-5
    for beta in (0.0, 0.3, 1.0, 4.0):
        _, g, tw = _core.temperature_objective(z, 7, y, beta, w, c)
        _, gp, _ = _core.temperature_objective(z, 7, y, beta + h, w)
        _, gm, _ = _core.temperature_objective(z, 7, y, max(beta - h, 0.0), w)
        fd = (gp - gm) / (h + min(beta, h)) / tw
        assert c[0] / tw == pytest.approx(fd, rel=1e-6)
        # A variance: sum_i w_i Var_softmax(beta z_i)[z], by NumPy.
        p = np.exp(beta * z - (beta * z).max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        mu = (p * z).sum(axis=1)
        var = (p * (z - mu[:, None]) ** 2).sum(axis=1)
        assert c[0] == pytest.approx(np.dot(w[y], var), rel=1e-9)


@pytest.mark.parametrize("weighted", [False, True])
def test_the_optimum_of_a_dense_float64_scan(weighted):
    rng = np.random.default_rng(11)
    z, y = problem(rng, 1500, 4, 1.7)
    w = np.array([1.0, 3.0, 0.5, 2.0]) if weighted else None
    t = fit_temperature(z, y, weight=w)
    betas = np.exp(np.linspace(np.log(0.05), np.log(20.0), 4001))
    losses = mean_loss(z, y, betas, w)
    i = int(np.argmin(losses))
    assert 0 < i < len(betas) - 1
    # The fitted beta lies between the scan's neighbours of its minimum, and no scanned
    # beta has a lower loss than the fitted one.
    assert betas[i - 1] < 1.0 / t < betas[i + 1]
    assert mean_loss(z, y, [1.0 / t], w)[0] <= losses[i] + 1e-14


def test_class_weights_are_repeated_rows():
    rng = np.random.default_rng(2)
    z, y = problem(rng, 800, 3, 2.0)
    w = np.array([1.0, 3.0, 2.0])
    reps = w[y].astype(int)
    t = fit_temperature(z, y, weight=w)
    assert t == pytest.approx(fit_temperature(np.repeat(z, reps, axis=0),
                                              np.repeat(y, reps)), rel=1e-9)


def test_separable_data_has_no_finite_temperature(passes):
    z = np.array([[3.0, 0.0, -1.0], [0.0, 2.0, 1.0], [0.5, 0.0, 4.0]])
    with pytest.raises(ValueError, match="T -> 0"):
        fit_temperature(z, [0, 1, 2])
    assert passes == [1.0]       # seen by the first pass's scan, before any step


def test_labels_ranked_no_better_than_chance_raise_within_a_few_passes(passes):
    z = np.array([[3.0, 0.0], [0.0, 2.0], [1.0, 0.0]])
    with pytest.raises(ValueError, match="T -> inf"):
        fit_temperature(z, [1, 0, 1])
    assert 1 <= len(passes) <= 4 and passes[-1] == 0.0


def test_constant_rows_give_one_after_the_first_pass(passes):
    z = np.zeros((10, 4))
    assert fit_temperature(z, np.arange(10) % 4) == 1.0
    assert passes == [1.0]


@pytest.mark.parametrize("scale", [1e-150, 1e-30, 1e4, 1e150])
def test_logits_of_any_magnitude(passes, scale):
    rng = np.random.default_rng(4)
    z, y = problem(rng, 1000, 5, 1.3)
    t = fit_temperature(z, y)
    assert fit_temperature(z * scale, y) == pytest.approx(t * scale, rel=1e-6)


def test_the_newton_solver_on_a_closed_form():
    """L'(beta) = tanh(beta) - 1/2 (two classes with logits +-1, three rows in four
    labelled right): the root is atanh(1/2), and L'' = 1 - tanh^2."""
    seen = []

    def derivatives(beta):
        seen.append(beta)
        return np.tanh(beta) - 0.5, 1.0 - np.tanh(beta) ** 2

    t = _temperature._solve(derivatives, 1.0, False)
    assert t == pytest.approx(1.0 / np.arctanh(0.5), rel=1e-12)
    assert len(seen) <= 6
    z = np.array([[1.0, -1.0]] * 4)
    assert fit_temperature(z, [0, 0, 0, 1]) == pytest.approx(1.0 / np.arctanh(0.5), rel=1e-12)


@pytest.mark.parametrize("k", [2, 10, 33, 300])
@pytest.mark.parametrize("weighted", [False, True])
def test_float32_kernel_on_adversarial_rows(k, weighted):
    """Masked classes, tied rows, a ragged tail and zero-weight classes: the float32 fit is
    the float64 root of the same float32 logits (a masked class as a logit 1e4 below the
    row's maximum, which float64 exp flushes to 0 at every beta the root search visits)."""
    rng = np.random.default_rng(k + 7 * weighted)
    z, y = problem(rng, 1003, k, 1.7)
    z = z.astype(np.float32)
    rows = np.arange(0, len(y), 7)
    z[rows, (y[rows] + 1) % k] = -np.inf
    z[3::11] = 2.5
    w = None
    if weighted:
        w = rng.random(k) + 0.5
        w[k // 2] = 0.0
    t = fit_temperature(z, y, weight=w)
    z64 = z.astype(np.float64)
    z64 = np.where(np.isinf(z64), z64.max(axis=1, keepdims=True) - 1e4, z64)
    assert t == pytest.approx(numpy_temperature(z64, y, w), rel=2e-6)


def test_three_passes_at_the_benchmark_shape(passes):
    """Halley steps (the pass gives the third derivative too): the bench problem of the
    speed table (labels drawn at T = 2) takes three passes, the first also the scan."""
    rng = np.random.default_rng(0)
    z, y = problem(rng, 20000, 10, 2.0)
    t = fit_temperature(z.astype(np.float32), y)
    assert len(passes) <= 4 and passes[0] == 1.0
    assert t == pytest.approx(numpy_temperature(z.astype(np.float32), y), rel=2e-6)
