"""xent_rs.dask against the in-memory functions on the concatenated data: every reduction,
weights, ignore_index, label smoothing, probability targets, calibration of binary and
multiclass logits and probabilities, temperature scaling; uneven chunks (rows split anyhow,
the class axis split too); the threaded and processes schedulers and a dask.distributed
LocalCluster; laziness, dtypes, picklable partials, and errors naming the argument."""

from __future__ import annotations

import multiprocessing
import pickle
import textwrap
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
from dask.delayed import Delayed  # noqa: E402

import xent_rs as xr  # noqa: E402
import xent_rs.dask as xd  # noqa: E402
from xent_rs import calibration as cal  # noqa: E402

from conftest import raises, random_logits, random_probs, run_script, subprocess_env  # noqa: E402

# Float64 partial sums combined exactly: the contract's bound, for every result here.
RTOL = 1e-12

# Row chunks that split rows unevenly (and leave one chunk of a single row), with the class
# axis split as well: the functions rechunk it.
N = 1000
ROW_CHUNKS = {"one": (N,), "even": (250,) * 4, "uneven": (1, 330, 7, 500, 162)}


def close(actual, expected, rtol=RTOL):
    """``actual`` equals ``expected`` to ``rtol`` relative (and has its dtype)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    np.testing.assert_allclose(actual.astype(np.float64), expected.astype(np.float64),
                               rtol=rtol, atol=0)


def chunked(a, rows, cols=2):
    """``a`` as a Dask array with row chunks ``rows`` and (for 2-D) ``cols`` per class chunk."""
    return da.from_array(a, chunks=(rows,) + ((cols,) if a.ndim == 2 else ()))


def index_problem(rng, k, dtype):
    z = random_logits(rng, (N, k), dtype)
    y = rng.integers(0, k, N)
    y[::11] = -100
    return z, y


def result_fields(r):
    return {**r.as_dict(), **{f: getattr(r.diagram, f)
                              for f in ("edges", "counts", "mean_confidence", "accuracy")}}


def assert_same_report(report, expected, rtol=RTOL):
    assert isinstance(report, cal.CalibrationResult)
    got, want = result_fields(report), result_fields(expected)
    assert got.keys() == want.keys()
    for name in want:
        if name == "count":
            assert got[name] == want[name]
        else:
            np.testing.assert_allclose(got[name], want[name], rtol=rtol, atol=0,
                                       err_msg=name)


# --------------------------------------------------------------------------- import --

def test_import_xent_rs_does_not_import_dask():
    out = run_script("import sys, xent_rs, xent_rs.calibration; print('dask' in sys.modules)",
                     timeout=120)
    assert out.strip() == "False"


def test_missing_dask_raises_import_error_naming_the_extra():
    code = textwrap.dedent("""
        import sys
        sys.modules["dask"] = None  # as if Dask were not installed
        import xent_rs
        try:
            import xent_rs.dask
        except ImportError as exc:
            print(exc)
        try:
            xent_rs.dask
        except ImportError as exc:
            print(exc)
    """)
    out = run_script(code, timeout=120).splitlines()
    assert len(out) == 2 and all("pip install xent_rs[dask]" in line for line in out), out


# ------------------------------------------------------------------- cross_entropy --

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [1, 3, 7, 20])
@pytest.mark.parametrize("rows", sorted(ROW_CHUNKS))
def test_cross_entropy_index_targets(rng, dtype, k, rows):
    # float32 with 2 <= K <= 16 runs the core's multi-row kernel: exact only because the
    # rows are rechunked onto its grid (K = 3, 7); K = 1, 20 and float64 keep their chunks.
    z, y = index_problem(rng, k, dtype)
    w = rng.random(k) + 0.1
    zd = chunked(z, ROW_CHUNKS[rows])
    y0 = np.where(y < 0, 0, y)  # ignore class 0 instead
    for t, kw in ((y, {}), (y, {"weight": w}), (y, {"label_smoothing": 0.2}),
                  (y, {"weight": w, "label_smoothing": 1.0}),
                  (y0, {"ignore_index": 0, "weight": w, "label_smoothing": 0.1})):
        td = da.from_array(t, chunks=(400,))
        for reduction in ("mean", "sum"):
            got = xd.cross_entropy(zd, td, reduction=reduction, **kw)
            assert got.shape == () and got.dtype == np.dtype(dtype)
            close(got.compute(), xr.cross_entropy(z, t, reduction=reduction, **kw))
        rows_out = xd.cross_entropy(zd, td, reduction="none", **kw)
        assert rows_out.chunks == (ROW_CHUNKS[rows],)
        np.testing.assert_array_equal(rows_out.compute(),
                                      xr.cross_entropy(z, t, reduction="none", **kw))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [2, 9, 30])
def test_cross_entropy_probability_targets(rng, dtype, k):
    z = random_logits(rng, (N, k), dtype)
    p = random_probs(rng, (N, k), np.float64)
    zd = chunked(z, ROW_CHUNKS["uneven"], 4)
    pd = da.from_array(p, chunks=(300, 3))  # other chunks than the logits'
    for kw in ({}, {"weight": rng.random(k)}, {"label_smoothing": 0.3}):
        for reduction in ("mean", "sum"):
            close(xd.cross_entropy(zd, pd, reduction=reduction, **kw).compute(),
                  xr.cross_entropy(z, p, reduction=reduction, **kw))
        np.testing.assert_array_equal(xd.cross_entropy(zd, pd, reduction="none", **kw),
                                      xr.cross_entropy(z, p, reduction="none", **kw))


def test_cross_entropy_dask_weight_float_indices_and_numpy_inputs(rng):
    z, y = index_problem(rng, 5, np.float64)
    y[y < 0] = 0
    w = rng.random(5)
    want = xr.cross_entropy(z, y, weight=w)
    # A Dask weight, float class indices, plain NumPy inputs: the same number.
    close(xd.cross_entropy(chunked(z, 300), y.astype(np.float64),
                           weight=da.from_array(w, chunks=2)).compute(), want)
    got = xd.cross_entropy(z, y, weight=w)
    assert isinstance(got, da.Array)
    close(got.compute(), want)


def test_cross_entropy_several_row_axes_and_one_row(rng):
    z = random_logits(rng, (12, 35, 7), np.float32)
    y = rng.integers(0, 7, (12, 35))
    zd = da.from_array(z, chunks=(5, 9, 3))
    yd = da.from_array(y, chunks=(4, 20))
    for reduction in ("mean", "sum"):
        close(xd.cross_entropy(zd, yd, reduction=reduction).compute(),
              xr.cross_entropy(z, y, reduction=reduction))
    rows_out = xd.cross_entropy(zd, yd, reduction="none")
    assert rows_out.shape == (12, 35) and rows_out.chunks == zd.chunks[:-1]
    np.testing.assert_array_equal(rows_out.compute(), xr.cross_entropy(z, y, reduction="none"))
    # A single row (K,) with a 0-d target.
    one = xd.cross_entropy(da.from_array(z[0, 0], chunks=3), y[0, 0], reduction="none")
    assert one.shape == ()
    np.testing.assert_array_equal(one.compute(), xr.cross_entropy(z[0, 0], y[0, 0],
                                                                  reduction="none"))


def test_cross_entropy_dtypes(rng):
    z, y = index_problem(rng, 4, np.float16)
    zd = chunked(z, ROW_CHUNKS["uneven"])
    mean = xd.cross_entropy(zd, y)
    assert mean.dtype == np.float32 and mean.compute().dtype == np.float32  # as in memory
    close(mean.compute(), xr.cross_entropy(z, y))
    rows_out = xd.cross_entropy(zd, y, reduction="none")
    assert rows_out.dtype == np.float16
    np.testing.assert_array_equal(rows_out.compute(), xr.cross_entropy(z, y, reduction="none"))


def test_cross_entropy_mean_over_nothing_is_nan(rng):
    z = random_logits(rng, (10, 3), np.float64)
    assert np.isnan(xd.cross_entropy(chunked(z, 4), np.full(10, -100)).compute())


# ----------------------------------------------------- binary_cross_entropy_with_logits --

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bce_all_reductions_and_factors(rng, dtype):
    shape = (N, 6)
    z = random_logits(rng, shape, dtype)
    t = rng.random(shape)
    zd = da.from_array(z, chunks=(ROW_CHUNKS["uneven"], (4, 2)))  # last axis split too
    factors = [
        {},
        {"weight": rng.random(6)},
        {"weight": rng.random((N, 1))},                                  # per row
        {"weight": da.from_array(rng.random(shape), chunks=(300, 3))},   # full, Dask
        {"pos_weight": rng.random(6) * 3},
        {"pos_weight": da.from_array(rng.random(6) * 3, chunks=4), "weight": 2.5},
        {"label_smoothing": 0.1, "weight": rng.random((1, 6))},
    ]
    for kw in factors:
        mem = {key: (v.compute() if isinstance(v, da.Array) else v) for key, v in kw.items()}
        for reduction in ("mean", "sum"):
            got = xd.binary_cross_entropy_with_logits(zd, t, reduction=reduction, **kw)
            assert got.shape == ()
            close(got.compute(),
                  xr.binary_cross_entropy_with_logits(z, t, reduction=reduction, **mem))
        rows_out = xd.binary_cross_entropy_with_logits(zd, t, reduction="none", **kw)
        assert rows_out.chunks == zd.chunks
        np.testing.assert_array_equal(
            rows_out.compute(),
            xr.binary_cross_entropy_with_logits(z, t, reduction="none", **mem))


def test_bce_one_dimensional_zero_dimensional_and_integer_targets(rng):
    z = random_logits(rng, (N,), np.float32)
    y = rng.integers(0, 2, N)
    close(xd.binary_cross_entropy_with_logits(da.from_array(z, chunks=ROW_CHUNKS["uneven"]),
                                              y).compute(),
          xr.binary_cross_entropy_with_logits(z, y))
    scalar = xd.binary_cross_entropy_with_logits(np.float64(0.3), np.float64(1.0),
                                                 reduction="none")
    assert scalar.shape == ()
    close(scalar.compute(), xr.binary_cross_entropy_with_logits(np.float64(0.3),
                                                                np.float64(1.0),
                                                                reduction="none"))


# ------------------------------------------------------------------ calibration_report --

@pytest.mark.parametrize("kind", ["multiclass", "binary"])
@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("convention", ["right", "torchmetrics"])
def test_calibration_report_equals_one_pass_over_everything(rng, kind, from_logits,
                                                           convention):
    if kind == "multiclass":
        z = random_logits(rng, (N, 6), np.float32)
        labels = rng.integers(0, 6, N)
        scores = z if from_logits else xr.softmax(z)
        if not from_logits:
            scores[:5] = np.eye(6, dtype=np.float32)[:5]  # confidences of exactly 1.0
    else:
        z = random_logits(rng, (N,), np.float64)
        labels = rng.integers(0, 2, N)
        scores = z if from_logits else 1.0 / (1.0 + np.exp(-z))
    options = {"n_bins": 10, "convention": convention, "from_logits": from_logits}
    sd = chunked(scores, ROW_CHUNKS["uneven"], 4)
    report = xd.calibration_report(sd, da.from_array(labels, chunks=(600,)), **options)
    assert isinstance(report, Delayed)
    got = report.compute()
    assert_same_report(got, cal.CalibrationAccumulator(**options).update(scores, labels).result())
    # ... and so the one-shot functions on the concatenated data.
    one_shot = {"n_bins": 10, "convention": convention, "from_logits": from_logits}
    for norm, value in (("l1", got.ece), ("l2", got.rms), ("max", got.mce)):
        close(value, cal.calibration_error(scores, labels, norm=norm, **one_shot))
    close(got.brier, cal.brier_score(scores, labels, from_logits=from_logits))
    decomposition = cal.brier_decomposition(scores, labels, **one_shot)
    close(got.reliability, decomposition.reliability)
    close(got.resolution, decomposition.resolution)


def test_accumulator_merge_is_associative_to_rounding(rng):
    z = random_logits(rng, (N, 4), np.float64)
    y = rng.integers(0, 4, N)
    parts = [cal.CalibrationAccumulator(from_logits=True).update(z[s], y[s])
             for s in (slice(0, 100), slice(100, 650), slice(650, N))]
    left = xd._merge_accumulators([xd._merge_accumulators(parts[:2]), parts[2]])
    right = xd._merge_accumulators([parts[0], xd._merge_accumulators(parts[1:])])
    assert_same_report(left.result(), right.result(), rtol=1e-15)
    assert parts[0].count == 100  # merging leaves the parts as they were


# ------------------------------------------------------------------ fit_temperature --

def temperature_problem(rng, shape, true_t=2.0):
    z = rng.standard_normal(shape) * 3.0
    if len(shape) == 1:
        y = (rng.random(shape[0]) < 1.0 / (1.0 + np.exp(-z / true_t))).astype(np.int64)
        return z, y
    p = np.exp(z / true_t)
    p /= p.sum(axis=1, keepdims=True)
    return z, (p.cumsum(axis=1) < rng.random((shape[0], 1))).sum(axis=1)


@pytest.mark.parametrize("shape", [(N, 5), (N,)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fit_temperature_equals_in_memory(rng, shape, dtype):
    z, y = temperature_problem(rng, shape)
    z = z.astype(dtype)
    zd = da.from_array(z, chunks=(ROW_CHUNKS["uneven"],) + ((2,) if len(shape) == 2 else ()))
    t = xd.fit_temperature(zd, da.from_array(y, chunks=(350,)))
    assert isinstance(t, float)
    close(t, cal.fit_temperature(z, y))
    k = 5 if len(shape) == 2 else 2
    w = rng.random(k) * 1e10
    close(xd.fit_temperature(zd, y, weight=da.from_array(w)),
          cal.fit_temperature(z, y, weight=w))


def test_fit_temperature_huge_logits_and_constant_loss(rng):
    z, y = temperature_problem(rng, (N, 3))
    close(xd.fit_temperature(chunked(z * 1e150, 300), y), cal.fit_temperature(z * 1e150, y))
    assert xd.fit_temperature(chunked(np.ones((N, 3)), 300), y) == 1.0


def test_fit_temperature_errors_are_the_in_memory_ones(rng):
    z = random_logits(rng, (N, 3), np.float64)
    top = z.argmax(axis=1)
    for args, kw, name in (((z, top), {}, "logits"),
                           ((z, top), {"weight": np.zeros(3)}, "weight"),
                           ((z[:0], top[:0]), {}, "logits"),
                           ((z, top[:-1]), {}, "labels")):
        with pytest.raises(ValueError) as want:
            cal.fit_temperature(*args, **kw)
        err = raises(ValueError, name, xd.fit_temperature,
                     *(chunked(a, 300) if a.ndim == 2 else a for a in args), **kw)
        if name != "labels":
            assert str(err) == str(want.value)


# -------------------------------------------------------------- laziness and pickling --

def test_nothing_is_computed_before_compute(rng):
    z, y = index_problem(rng, 4, np.float64)
    y[y < 0] = 1
    loads = []

    def load():
        loads.append(1)
        return z

    zd = da.from_delayed(dask.delayed(load)(), shape=z.shape, dtype=z.dtype)
    results = [xd.cross_entropy(zd, y), xd.cross_entropy(zd, y, reduction="none"),
               xd.binary_cross_entropy_with_logits(zd[:, 0], (y % 2).astype(np.float64)),
               xd.calibration_report(zd, y, from_logits=True)]
    assert not loads
    mem = [xr.cross_entropy(z, y), xr.cross_entropy(z, y, reduction="none"),
           xr.binary_cross_entropy_with_logits(z[:, 0], (y % 2).astype(np.float64)),
           cal.CalibrationAccumulator(from_logits=True).update(z, y).result()]
    got = dask.compute(*results)
    assert loads
    for g, m in zip(got[:3], mem[:3]):
        close(g, m)
    assert_same_report(got[3], mem[3])


def test_partials_are_picklable_and_unpickle_to_the_same_result(rng):
    z, y = index_problem(rng, 4, np.float32)
    sums = xd._cce_sums(z, y, None, -100, 0.0)
    bce = xd._bce_sums(z, (z > 0).astype(np.float32), None, None, 0.0)
    y[y < 0] = 0
    acc = xd._accumulate(z, y, 15, "right", True)
    checks = xd._temperature_checks(z, y, None, None)
    slope = xd._temperature_sums(z, y, None, 0.5, None)
    for part in (sums, bce, checks, slope):
        np.testing.assert_array_equal(pickle.loads(pickle.dumps(part)), part)
    assert_same_report(pickle.loads(pickle.dumps(acc)).result(), acc.result(), rtol=0)
    report = xd.calibration_report(chunked(z, 300), y, from_logits=True)
    assert_same_report(pickle.loads(pickle.dumps(report)).compute(), report.compute(), rtol=0)


# ----------------------------------------------------------------------- schedulers --

SCHEDULER_CHECK = textwrap.dedent("""
    import numpy as np, dask, dask.array as da
    import xent_rs as xr, xent_rs.dask as xd
    from xent_rs import calibration as cal

    def check():
        rng = np.random.default_rng(7)
        z = (rng.standard_normal((400, 7)) * 3).astype(np.float32)
        y = rng.integers(0, 7, 400)
        zd, yd = da.from_array(z, chunks=(97, 3)), da.from_array(y, chunks=150)
        w = rng.random(7)
        pairs = [
            (xd.cross_entropy(zd, yd, weight=w, label_smoothing=0.1),
             xr.cross_entropy(z, y, weight=w, label_smoothing=0.1)),
            (xd.cross_entropy(zd, yd, reduction="none"), xr.cross_entropy(z, y, reduction="none")),
            (xd.binary_cross_entropy_with_logits(zd, (z > 0.5).astype(np.float32),
                                                 pos_weight=w, reduction="sum"),
             xr.binary_cross_entropy_with_logits(z, (z > 0.5).astype(np.float32),
                                                 pos_weight=w, reduction="sum")),
        ]
        got = dask.compute(*(p[0] for p in pairs))
        for g, (_, want) in zip(got, pairs):
            assert g.dtype == want.dtype, (g.dtype, want.dtype)
            np.testing.assert_allclose(g, want, rtol=1e-12, atol=0)
        report = xd.calibration_report(zd, yd, from_logits=True).compute()
        want = cal.CalibrationAccumulator(from_logits=True).update(z, y).result()
        for name, value in want.as_dict().items():
            np.testing.assert_allclose(getattr(report, name), value, rtol=1e-12, err_msg=name)
        t, t_mem = xd.fit_temperature(zd, yd), cal.fit_temperature(z, y)
        assert abs(t / t_mem - 1) <= 1e-12, (t, t_mem)
        return "ok"
""")


def test_threaded_scheduler():
    namespace = {}
    exec(SCHEDULER_CHECK, namespace)
    with dask.config.set(scheduler="threads"):
        assert namespace["check"]() == "ok"


def test_processes_scheduler(monkeypatch):
    # Every task's inputs and partial results cross a process boundary (pickled); the
    # workers import this very xent_rs.
    monkeypatch.setenv("PYTHONPATH", subprocess_env()["PYTHONPATH"])
    namespace = {}
    exec(SCHEDULER_CHECK, namespace)
    # One pool for every compute (fit_temperature computes once per solver step; a fresh
    # pool each time would start new interpreters each time).
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool, \
            dask.config.set(scheduler="processes", pool=pool):
        assert namespace["check"]() == "ok"


def test_distributed_local_cluster():
    pytest.importorskip("distributed")
    # In a child interpreter, killed with its workers if it hangs; loopback only.
    code = SCHEDULER_CHECK + textwrap.dedent("""
        from dask.distributed import Client, LocalCluster
        if __name__ == "__main__":
            with LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                              dashboard_address=None, host="127.0.0.1") as cluster, \\
                    Client(cluster) as client:
                assert len(client.scheduler_info()["workers"]) == 2
                print(check())
    """)
    assert run_script(code, timeout=300).strip().splitlines()[-1] == "ok"


# --------------------------------------------------------------------------- errors --

def test_errors_name_the_argument_at_once(rng):
    z = chunked(random_logits(rng, (20, 3), np.float32), 7)
    y = da.from_array(rng.integers(0, 3, 20), chunks=5)
    ce, bce = xd.cross_entropy, xd.binary_cross_entropy_with_logits
    raises(ValueError, "reduction", ce, z, y, reduction="avg")
    raises(ValueError, "label_smoothing", ce, z, y, label_smoothing=1.5)
    raises(TypeError, "ignore_index", ce, z, y, ignore_index=1.5)
    raises(TypeError, "logits", ce, z.astype(np.int32), y)
    raises(TypeError, "logits", ce, None, y)
    raises(ValueError, "logits", ce, da.zeros((20, 0), chunks=5), y)
    raises(ValueError, "target", ce, z, y[:-1])
    raises((TypeError, ValueError), "target", ce, z, da.zeros((20, 3), dtype=np.int64, chunks=5))
    raises(ValueError, "weight", ce, z, y, weight=np.ones(4))
    raises(ValueError, "weight", ce, z, y, weight=da.ones(4, chunks=2))
    raises(ValueError, "weight", ce, z, y, weight=-np.ones(3))
    raises(ValueError, "target", bce, z, y)
    raises(ValueError, "weight", bce, z, z, weight=np.ones((3, 1)))
    raises(ValueError, "pos_weight", bce, z, z, pos_weight=da.ones(4, chunks=2))
    raises(TypeError, "pos_weight", bce, z, z, pos_weight=np.ones(3, dtype=complex))
    raises(ValueError, "reduction", bce, z, z, reduction="max")
    report = xd.calibration_report
    raises(ValueError, "n_bins", report, z, y, n_bins=0)
    raises(ValueError, "convention", report, z, y, convention="left")
    raises(TypeError, "from_logits", report, z, y, from_logits=1)
    raises(ValueError, "probs", report, z[:, None], y)
    raises(ValueError, "probs", report, z[:0], y[:0])
    raises(ValueError, "labels", report, z, y[:-1])
    raises(TypeError, "labels", report, z, y.astype(np.complex64))
    raises(TypeError, "logits", xd.fit_temperature, y, y)
    unknown = z[da.from_array(np.arange(20) % 2 == 0, chunks=7)]  # rows of unknown count
    raises(ValueError, "logits", ce, unknown, y[:10])
    raises(ValueError, "probs", report, unknown, y[:10])


def test_value_errors_name_the_argument_at_compute(rng):
    z = chunked(random_logits(rng, (20, 3), np.float64), 7)
    bad = np.arange(20) % 4  # label 3 of 3 classes
    lazy = xd.cross_entropy(z, bad)  # builds fine: the values are read at compute time
    raises(ValueError, "target", lazy.compute)
    raises(ValueError, "weight", xd.cross_entropy(z, bad % 3,
                                                  weight=-da.ones(3, chunks=3)).compute)
    raises(ValueError, "probs", xd.calibration_report(z * 10, bad % 3).compute)
    raises(ValueError, "labels", xd.calibration_report(z, bad, from_logits=True).compute)
