"""Fused linear + cross-entropy (loss and both gradients), 2 threads, float32, against the
unfused computations and the GEMM floor, all measured in the same run.

Implementations (each computes the mean loss and the gradients of hidden and weight):

* ``xent_rs``: ``xr.linear_cross_entropy(h, w, t, return_grad=True)``;
* ``torch``: ``F.cross_entropy(F.linear(h, w), t)`` then ``backward()`` on CPU;
* ``numpy``: ``z = h @ w.T``, ``xr.cross_entropy(z, t, return_grad=True, out=z)``,
  ``g @ w`` and ``g.T @ h`` (NumPy's BLAS for the products);
* ``floor-numpy`` / ``floor-torch``: the three float32 products alone (``h @ w.T``,
  ``z @ w``, ``z.T @ h``): what any implementation must at least spend.

Shapes: ``XENT_RS_BENCH_LINEAR`` (comma-separated ``NxDxV``; default the issue's
``4096x768x50257,8192x1024x32000``; CI sets something small). Peak memory: ``python
benches/test_bench_linear.py`` prints the markdown table of ``docs/linear.md`` with each
implementation's time and the peak RSS of a subprocess running it once beyond the RSS after
its inputs were made (tracemalloc cannot see PyTorch's allocator).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import xent_rs as xr

THREADS = 2
SHAPES = [tuple(int(x) for x in s.split("x"))
          for s in os.environ.get("XENT_RS_BENCH_LINEAR", "4096x768x50257,8192x1024x32000")
          .split(",") if s]
IMPLS = ["xent_rs", "torch", "numpy", "floor-numpy", "floor-torch"]


def _limit_threads():
    xr.set_num_threads(THREADS)
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(THREADS)
    except ImportError:  # pragma: no cover
        pass
    try:
        import torch
        torch.set_num_threads(THREADS)
    except ImportError:  # pragma: no cover
        pass


def problem(n, d, v):
    rng = np.random.default_rng(0)
    h = rng.standard_normal((n, d), dtype=np.float32)
    w = rng.standard_normal((v, d), dtype=np.float32)
    w *= np.float32(1.0 / np.sqrt(d))
    t = rng.integers(0, v, n)
    return h, w, t


def make(impl, h, w, t):
    """A callable computing one loss + gradients with ``impl``; returns the loss."""
    if impl == "xent_rs":
        return lambda: xr.linear_cross_entropy(h, w, t, return_grad=True)[0]
    if impl == "numpy":
        def unfused():
            z = h @ w.T
            loss, g = xr.cross_entropy(z, t, return_grad=True, out=z)
            g @ w
            g.T @ h
            return loss
        return unfused
    if impl == "floor-numpy":
        def floor():
            z = h @ w.T
            z @ w
            z.T @ h
            return np.nan
        return floor
    import torch
    import torch.nn.functional as F
    th, tw, tt = torch.from_numpy(h), torch.from_numpy(w), torch.from_numpy(t)
    if impl == "floor-torch":
        def tfloor():
            z = th @ tw.T
            z @ tw
            z.T @ th
            return np.nan
        return tfloor

    def torch_step():
        hh = th.detach().requires_grad_(True)
        ww = tw.detach().requires_grad_(True)
        loss = F.cross_entropy(F.linear(hh, ww), tt)
        loss.backward()
        return loss.item()
    return torch_step


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("impl", IMPLS)
def test_linear_cross_entropy_loss_and_grads(benchmark, impl, shape):
    if impl in ("torch", "floor-torch"):
        pytest.importorskip("torch")
    _limit_threads()
    h, w, t = problem(*shape)
    benchmark.group = f"linear+CE {'x'.join(map(str, shape))} loss+grads, {THREADS} threads"
    fn = make(impl, h, w, t)
    loss = benchmark.pedantic(fn, rounds=2, iterations=1, warmup_rounds=0)
    if not np.isnan(loss):
        want = xr.linear_cross_entropy(h, w, t)
        assert np.isclose(float(loss), float(want), rtol=1e-4)


CHILD = """
import json, sys, time
sys.path.insert(0, {here!r})
import test_bench_linear as b
b._limit_threads()
h, w, t = b.problem({n}, {d}, {v})
fn = b.make({impl!r}, h, w, t)
base = b.rss("VmRSS")
b.reset_peak()
t0 = time.perf_counter()
fn()
elapsed = time.perf_counter() - t0
print(json.dumps(dict(extra=b.rss("VmHWM") - base, seconds=elapsed)))
"""


def rss(field):
    """``VmRSS`` (now) or ``VmHWM`` (peak since :func:`reset_peak`) in bytes (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def reset_peak():
    """Sets the peak RSS (``VmHWM``) to the current RSS (Linux's ``clear_refs`` value 5)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def measure_memory(impl, shape):
    """``(extra peak bytes, seconds)`` of one call of ``impl`` in a fresh interpreter."""
    n, d, v = shape
    code = CHILD.format(here=os.path.dirname(os.path.abspath(__file__)), n=n, d=d, v=v,
                        impl=impl)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return r["extra"], r["seconds"]


def best_time(fn, reps):
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def linear_rows(shapes=None, reps=2):
    """One row per shape for the speed table: seconds per implementation (best of ``reps``,
    same process, interleaved) and extra peak RSS (one subprocess per implementation)."""
    _limit_threads()
    rows = []
    for shape in shapes or SHAPES:
        h, w, t = problem(*shape)
        times = {impl: float("inf") for impl in IMPLS}
        for _ in range(reps):  # interleaved, so that load changes hit every implementation
            for impl in IMPLS:
                times[impl] = min(times[impl], best_time(make(impl, h, w, t), 1))
                print(f"{shape} {impl}: {times[impl]:.2f} s", file=sys.stderr, flush=True)
        del h, w, t
        memory = {impl: measure_memory(impl, shape)[0] for impl in IMPLS}
        rows.append(dict(shape=shape, threads=THREADS, seconds=times, extra_bytes=memory))
    return rows


def markdown(rows):
    lines = ["| N × D × V | implementation | time (s) | × floor | extra peak RSS (MiB) |",
             "|---|---|---:|---:|---:|"]
    for r in rows:
        floor = min(r["seconds"]["floor-numpy"], r["seconds"]["floor-torch"])
        for impl in IMPLS:
            s = r["seconds"][impl]
            lines.append(f"| {' × '.join(map(str, r['shape']))} | {impl} | {s:.2f} | "
                         f"{s / floor:.2f} | {r['extra_bytes'][impl] / 2**20:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    rows = linear_rows()
    print(json.dumps(rows, indent=1))
    print(markdown(rows))
