"""xent_rs.dask on a dask.distributed LocalCluster against the in-memory call on the same data.

Run: ``.venv/bin/python -m pytest benches/test_bench_dask.py -q -p no:cacheprovider``
(from the repository root, with xent_rs importable by the workers: installed, or
``PYTHONPATH=$PWD/python``). The cluster has 2 worker processes of 1 thread each; the data are
scattered to it first (8 blocks of 50,000 rows), so the timings are of the computation and
Dask's scheduling, not of shipping the data. Each timing is the median of 3 runs.
"""

from __future__ import annotations

import numpy as np
import pytest

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

import xent_rs as xr  # noqa: E402
import xent_rs.dask as xd  # noqa: E402
from xent_rs import calibration as cal  # noqa: E402

SHAPE = (400_000, 100)
ROWS_PER_BLOCK = 50_000


@pytest.fixture(scope="module")
def problem():
    n, k = SHAPE
    rng = np.random.default_rng(0)
    logits = rng.standard_normal(SHAPE, dtype=np.float32) * 3
    labels = rng.integers(0, k, n)
    labels[: n // 2] = logits[: n // 2].argmax(axis=1)  # a half-accurate classifier
    return logits, labels


@pytest.fixture(scope="module")
def cluster_data(problem):
    logits, labels = problem
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  dashboard_address=None, host="127.0.0.1") as cluster, \
            distributed.Client(cluster) as client:
        yield client, scattered(client, logits), scattered(client, labels)


def scattered(client, a):
    """``a`` as a Dask array whose blocks were sent to the workers once (not in a graph)."""
    blocks = [a[i:i + ROWS_PER_BLOCK] for i in range(0, len(a), ROWS_PER_BLOCK)]
    futures = client.scatter(blocks)
    return da.concatenate([da.from_delayed(f, shape=b.shape, dtype=b.dtype)
                           for f, b in zip(futures, blocks)])


CASES = {
    "cross_entropy": (lambda z, y: xr.cross_entropy(z, y),
                      lambda z, y: xd.cross_entropy(z, y).compute()),
    "calibration_report": (
        lambda z, y: cal.CalibrationAccumulator(from_logits=True).update(z, y).result(),
        lambda z, y: xd.calibration_report(z, y, from_logits=True).compute()),
    "fit_temperature": (cal.fit_temperature, xd.fit_temperature),
}


@pytest.mark.parametrize("impl", ["in-memory", "dask-cluster"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_dask_vs_in_memory(benchmark, problem, cluster_data, case, impl):
    benchmark.group = f"{case} {SHAPE[0]}x{SHAPE[1]} float32"
    in_memory, on_dask = CASES[case]
    if impl == "in-memory":
        result = benchmark.pedantic(in_memory, args=problem, rounds=3, iterations=1)
    else:
        _, z, y = cluster_data
        result = benchmark.pedantic(on_dask, args=(z, y), rounds=3, iterations=1)
    want = in_memory(*problem)
    for got, expected in ((result, want),) if case != "calibration_report" else (
            (getattr(result, f), getattr(want, f)) for f in ("ece", "nll", "brier")):
        assert abs(float(got) / float(expected) - 1) <= 1e-12
