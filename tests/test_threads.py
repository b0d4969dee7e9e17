"""Thread control, and bit-identical results for any thread count."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import xent_rs as xr


def test_set_and_get(restore_threads):
    xr.set_num_threads(3)
    assert xr.get_num_threads() == 3
    xr.set_num_threads(1)
    assert xr.get_num_threads() == 1


def test_environment_variable_sets_the_default():
    code = "import xent_rs as xr; print(xr.get_num_threads())"
    env = dict(os.environ, XENT_RS_NUM_THREADS="5")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "5"
    env.pop("XENT_RS_NUM_THREADS")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert int(out) == len(os.sched_getaffinity(0))


def run_all(x, t, y, z, yb):
    return (
        xr.cross_entropy(x, t, return_grad=True, return_hess=True, return_lse=True,
                         label_smoothing=0.1),
        xr.cross_entropy(x, y, return_grad=True, reduction="sum"),
        xr.binary_cross_entropy_with_logits(z, yb, return_grad=True),
        xr.softmax(x), xr.log_softmax(x), xr.logsumexp(x),
    )


def flatten(res):
    for r in res:
        if isinstance(r, tuple):
            yield from flatten(r)
        else:
            yield np.asarray(r)


def test_results_bit_identical_for_any_thread_count(restore_threads):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3000, 311), dtype=np.float32) * 4
    t = rng.integers(0, 311, 3000)
    y = rng.random((3000, 311)).astype(np.float32)
    z = rng.standard_normal(1_000_003)
    yb = rng.random(1_000_003)
    results = []
    for n in (1, 2, 3, 8):
        xr.set_num_threads(n)
        results.append(list(flatten(run_all(x, t, y, z, yb))))
        results.append(list(flatten(run_all(x, t, y, z, yb))))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert a.tobytes() == b.tobytes()
