"""Hardening (issue 5), part 2: threads, the interpreter lock, fork, determinism and every
instruction-set path.

* Many Python threads calling every function at once on shared inputs (while yet another
  thread keeps changing the thread count) get results bit-identical to serial calls.
* Long calls release the interpreter lock: another Python thread runs while the worker is
  inside the core call (observed without a clock: forced lock switches are off).
* ``multiprocessing`` children started with ``fork`` after the parent has used (and is even
  using) the thread pool neither deadlock nor crash, and compute the parent's numbers; every
  such check runs in a subprocess with a timeout, so that a deadlock fails instead of hanging.
* Results are bit-identical for 1, 2, 3 and 8 threads and across repeated runs, for every
  loss, building block and calibration function.
* Every float32 instruction-set path this CPU supports, forced with ``XENT_RS_ISA``, matches
  the float64 reference (rtol 1e-5; per-row losses 1e-6). Different paths may differ from
  one another in the last bits (they use different exp/log1p approximations and summation
  widths); within one path, results never depend on the thread count.
"""

from __future__ import annotations

import math
import os
import sys
import textwrap
import threading
import time
import types

import numpy as np
import pytest

import xent_rs as xr
from xent_rs import _core
from xent_rs import calibration as cal
from xent_rs import reference as ref
from conftest import (assert_close, assert_releases_the_interpreter_lock,
                      core_call_seen_from_another_thread, run_script)

RNG = np.random.default_rng(77)


def as_bytes(res):
    """Every array in a (nested) result as raw bytes, for bit-for-bit comparison."""
    if isinstance(res, (tuple, list)) and not hasattr(res, "_fields"):
        return [b for r in res for b in as_bytes(r)]
    if hasattr(res, "_fields"):  # BrierDecomposition
        return [np.asarray(list(res), np.float64).tobytes()]
    if isinstance(res, cal.ReliabilityDiagram):
        return [a.tobytes() for a in (res.edges, res.counts, res.mean_confidence, res.accuracy)]
    if isinstance(res, cal.LossBreakdown):
        return [np.asarray(v).tobytes() for v in (
            res.class_loss, res.class_count, res.class_accuracy, res.class_loss_share,
            res.mean_loss, res.accuracy, res.confident_wrong_count, res.confident_wrong_share)]
    if isinstance(res, cal.CalibrationResult):
        return [np.asarray(list(res.as_dict().values()), np.float64).tobytes()] + \
            as_bytes(res.diagram)
    a = np.asarray(res)
    return [a.dtype.str.encode() + repr(a.shape).encode() + a.tobytes()]


# ------------------------------------------------------------------------- the workload --

def make_inputs(seed=0):
    rng = np.random.default_rng(seed)
    n, k = 3001, 311                                       # odd sizes: ragged chunks
    x32 = (rng.standard_normal((n, k)) * 4).astype(np.float32)
    x32[5, 7] = -np.inf                                    # a masked class
    t = rng.integers(0, k, n)
    t[: n // 2] = x32[: n // 2].argmax(axis=1)             # a finite temperature exists
    t[3] = -100                                            # an ignored row
    y = rng.random((n, k)).astype(np.float32)
    y /= y.sum(axis=1, keepdims=True)
    small = (rng.standard_normal((97, 3)) * 2).astype(np.float32)  # below the pool threshold
    ts = rng.integers(0, 3, 97)
    z = rng.standard_normal(1_000_003)
    yb = (rng.random(1_000_003) > 0.4).astype(np.float64)
    zb = rng.standard_normal((40_000, 30)).astype(np.float32)
    yb2 = (rng.random((40_000, 30)) > 0.5).astype(np.float32)
    w = rng.random(k) + 0.5
    pw_full = rng.random((40_000, 30))
    tb = (z[:200_000] + rng.standard_normal(200_000) > 0).astype(np.int64)
    return dict(x32=x32, x64=x32.astype(np.float64), x16=x32.astype(np.float16), t=t, y=y,
                small=small, ts=ts, z=z, yb=yb, zb=zb, yb2=yb2, w=w, pw_full=pw_full,
                pw=rng.random(30) * 2, tb=tb)


def workload(d):
    """Every public function, with the options that take different code paths."""
    x32, x64, x16, t, y, w = d["x32"], d["x64"], d["x16"], d["t"], d["y"], d["w"]
    tt = np.where(t < 0, 0, t)
    out = x32.copy()
    res = {
        "ce_index": xr.cross_entropy(x32, t, return_grad=True, return_hess=True,
                                     return_lse=True, label_smoothing=0.1, weight=w),
        "ce_index_none": xr.cross_entropy(x32, t, reduction="none", return_grad=True),
        "ce_probs": xr.cross_entropy(x32, y, return_grad=True, reduction="sum",
                                     return_hess=True),
        "ce_f64": xr.cross_entropy(x64, t, return_grad=True, label_smoothing=0.2,
                                   reduction="none", return_lse=True),
        "ce_f16": xr.cross_entropy(x16, t, return_grad=True, reduction="mean"),
        "ce_small": xr.cross_entropy(d["small"], d["ts"], return_grad=True, return_hess=True,
                                     reduction="none"),
        "ce_in_place": xr.cross_entropy(out, t, return_grad=True, out=out),
        "bce": xr.binary_cross_entropy_with_logits(d["z"], d["yb"], return_grad=True,
                                                   return_hess=True, label_smoothing=0.05),
        "bce_pw": xr.binary_cross_entropy_with_logits(d["zb"], d["yb2"], pos_weight=d["pw"],
                                                      weight=d["pw_full"], return_grad=True,
                                                      reduction="none"),
        "softmax": [xr.softmax(a) for a in (x32, x64, x16, d["small"])],
        "log_softmax": [xr.log_softmax(a) for a in (x32, x64, x16, d["small"])],
        "logsumexp": [xr.logsumexp(a) for a in (x32, x64, x16, d["small"])],
        "calibration_error": [cal.calibration_error(x32, tt, from_logits=True, norm=norm)
                              for norm in ("l1", "l2", "max")],
        "calibration_error_binary": cal.calibration_error(d["z"][:200_000], d["tb"],
                                                          from_logits=True),
        "reliability_diagram": cal.reliability_diagram(x64, tt, from_logits=True,
                                                       strategy="quantile"),
        "brier_score": cal.brier_score(x32, tt, from_logits=True),
        "brier_decomposition": cal.brier_decomposition(x32, tt, from_logits=True),
        "fit_temperature": cal.fit_temperature(x32, tt),
        "fit_temperature_weighted": cal.fit_temperature(x64, tt, weight=w),
        "energy_score": cal.energy_score(x32, temperature=1.5),
        "loss_breakdown": cal.loss_breakdown(x32, tt),
        "accumulator": cal.CalibrationAccumulator(from_logits=True).update(x32[:1500], tt[:1500])
        .update(x32[1500:], tt[1500:]).result(),
        "label_dependence": cal.label_dependence(d["yb2"][:, :8]),
    }
    return {key: as_bytes(value) for key, value in res.items()}


def assert_identical(a, b, what=""):
    assert a.keys() == b.keys()
    for key in a:
        assert len(a[key]) == len(b[key]), key
        for i, (u, v) in enumerate(zip(a[key], b[key])):
            assert u == v, f"{what}: {key}[{i}] differs"


@pytest.fixture(scope="module")
def inputs():
    return make_inputs()


# ---------------------------------------------------------- (a) many threads at once --

def test_many_threads_at_once_agree_with_serial_calls(inputs, restore_threads):
    """8 Python threads run the whole workload on the same shared (read-only) inputs at
    once, while a 9th keeps switching the thread count (rebuilding the pool under them):
    every result is bit-identical to a serial run."""
    xr.set_num_threads(2)
    serial = workload(inputs)
    results, errors = [None] * 8, []
    start = threading.Barrier(9)
    done = threading.Event()

    def worker(i):
        try:
            start.wait()
            results[i] = workload(inputs)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def switcher():
        start.wait()
        n = 0
        while not done.is_set():
            xr.set_num_threads((1, 2, 3, 8)[n % 4])
            n += 1
            time.sleep(0.002)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    sw = threading.Thread(target=switcher)
    for th in threads + [sw]:
        th.start()
    for th in threads:
        th.join()
    done.set()
    sw.join()
    assert not errors, errors
    for i, res in enumerate(results):
        assert_identical(res, serial, f"thread {i}")


def test_shared_output_buffers_are_refused_while_in_use():
    """Two threads passing the same out= buffer: each call either runs alone on it (the
    result is exact) or is refused by name because the other call holds it; never both
    writing at once."""
    x = (RNG.standard_normal((20_000, 100))).astype(np.float32)
    t = RNG.integers(0, 100, 20_000)
    want = xr.cross_entropy(x, t, return_grad=True)[1]
    out = np.empty_like(x)
    outcomes, errors = [], []

    def run():
        for _ in range(20):
            try:
                xr.cross_entropy(x, t, return_grad=True, out=out)
                outcomes.append("ran")
            except ValueError as exc:
                if not str(exc).startswith("out"):
                    errors.append(exc)
                outcomes.append("refused")
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    assert "ran" in outcomes
    np.testing.assert_array_equal(out, want)


# ----------------------------------------------------------- (b) the interpreter lock --
# Clock-free: conftest.assert_releases_the_interpreter_lock runs the call on a worker thread
# with forced lock switches off and checks that the main thread ran while the worker was
# inside the long core call, growing the problem until it has (at most 64M elements).

LOCK_SIZES = (1, 4, 16, 64)


@pytest.mark.parametrize("threads", [1, 2])
def test_long_cross_entropy_releases_the_interpreter_lock(threads, restore_threads):
    """Every row the same, so the losses and gradient have a closed form."""
    xr.set_num_threads(threads)
    k = 1000
    row = RNG.standard_normal(k) * 3
    m = row.max()
    lse = m + math.log(np.exp(row - m).sum())
    p = np.exp(row - lse)

    def make_call(size):
        n = size * 1000
        x = np.empty((n, k))
        x[...] = row
        t = (np.arange(n) * 7919) % k

        def check(res):
            losses, grad = res
            np.testing.assert_allclose(losses, lse - row[t], rtol=1e-12)
            for i in (0, 17, n - 1):
                np.testing.assert_allclose(grad[i], p - (np.arange(k) == t[i]), rtol=1e-10,
                                           atol=1e-15)
        return lambda: xr.cross_entropy(x, t, reduction="none", return_grad=True), check

    assert_releases_the_interpreter_lock(make_call, "cce_forward_backward", LOCK_SIZES)


def _softplus(z):
    return np.logaddexp(0.0, z)


def _bce_call(size):
    z = np.linspace(-5, 5, size * 1_000_000)
    y = (z > 0).astype(np.float64)

    def check(res):
        loss, grad = res
        want = np.mean(np.where(y > 0, _softplus(-z), _softplus(z)))
        assert float(loss) == pytest.approx(want, rel=1e-12)
        for i in (0, z.size // 3, z.size - 1):
            sig = 1 / (1 + math.exp(-z[i]))
            assert grad[i] == pytest.approx((sig - y[i]) / z.size, rel=1e-12)
    return lambda: xr.binary_cross_entropy_with_logits(z, y, return_grad=True), check


def _rowwise_call(fn):
    def make_call(size):
        k = 1000
        row = np.linspace(-3, 3, k, dtype=np.float32)
        x = np.empty((size * 1000, k), np.float32)
        x[...] = row
        lse = math.log(np.exp(row.astype(np.float64)).sum())
        if fn == "logsumexp":
            def check(res):
                np.testing.assert_allclose(res, lse, rtol=1e-6)
            return lambda: xr.logsumexp(x), check
        want = row - lse if fn == "log_softmax" else np.exp(row - lse)

        def check(res):
            for i in (0, x.shape[0] // 2, x.shape[0] - 1):
                np.testing.assert_allclose(res[i], want, rtol=1e-5, atol=1e-7)
        return lambda: getattr(xr, fn)(x), check
    return make_call


def _fit_temperature_call(size):
    """Identical rows, a third labelled 17 and the rest the top class 99: the objective is
    that of three rows, so the reference on those three gives the temperature."""
    n = size * 10_002
    row = np.linspace(-3, 3, 100, dtype=np.float32)
    x = np.empty((n, 100), np.float32)
    x[...] = row
    lab = np.where(np.arange(n) % 3 == 0, 17, 99)
    want = ref.fit_temperature(np.tile(row, (3, 1)), np.array([17, 99, 99]))

    def check(res):
        assert res == pytest.approx(want, rel=1e-5)
    return lambda: cal.fit_temperature(x, lab), check


def _calibration_error_call(size):
    """Identical rows: one confidence for all, a third of them right: ECE = |acc − conf|."""
    n = size * 10_002
    row = np.linspace(-3, 3, 100, dtype=np.float32)
    x = np.empty((n, 100), np.float32)
    x[...] = row
    lab = np.where(np.arange(n) % 3 == 0, 99, 0)
    conf = 1 / np.exp(row.astype(np.float64) - 3.0).sum()

    def check(res):
        assert res == pytest.approx(abs(1 / 3 - conf), rel=1e-6)
    return lambda: cal.calibration_error(x, lab, from_logits=True), check


OTHER_LONG_CALLS = {
    "bce": (_bce_call, "bce_forward_backward"),
    "softmax": (_rowwise_call("softmax"), "rowwise"),
    "log_softmax": (_rowwise_call("log_softmax"), "rowwise"),
    "logsumexp": (_rowwise_call("logsumexp"), "rowwise"),
    "fit_temperature": (_fit_temperature_call, "temperature_pass"),
    "calibration_error": (_calibration_error_call, "calib_stats"),
}


@pytest.mark.parametrize("fn", list(OTHER_LONG_CALLS))
def test_other_long_calls_release_the_interpreter_lock(fn, restore_threads):
    xr.set_num_threads(1)
    make_call, core_name = OTHER_LONG_CALLS[fn]
    assert_releases_the_interpreter_lock(make_call, core_name, LOCK_SIZES)


def test_the_lock_probe_tells_a_call_that_keeps_the_lock_from_one_that_releases_it():
    """The probe can fail: a C function that keeps the lock throughout (the builtin ``sum``
    over a range) is never caught from the other thread, one that lets it go
    (``time.sleep``) is."""
    fake = types.ModuleType("fake_core")
    fake.keeps = sum
    fake.releases = time.sleep
    n = 20_000_000
    result, seen = core_call_seen_from_another_thread(lambda: fake.keeps(range(n)), "keeps",
                                                      fake)
    assert result == n * (n - 1) // 2 and not seen
    result, seen = core_call_seen_from_another_thread(lambda: fake.releases(0.05),
                                                      "releases", fake)
    assert result is None and seen


# ------------------------------------------------------------------------- (c) fork --

FORK_SCRIPT = textwrap.dedent(r"""
    import hashlib, multiprocessing as mp, os, sys, threading, warnings
    import numpy as np
    import xent_rs as xr
    from xent_rs import calibration as cal
    warnings.simplefilter("ignore")          # fork with threads alive: DeprecationWarning

    N, K = 200_000, 50                       # 10M elements: uses the pool

    def data(seed):
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((N, K)).astype(np.float32) * 3
        t = rng.integers(0, K, N)
        t[: N // 2] = x[: N // 2].argmax(axis=1)
        return x, t

    def task(seed):
        x, t = data(seed)
        loss, grad = xr.cross_entropy(x, t, return_grad=True, label_smoothing=0.1)
        parts = [np.float64(loss).tobytes(), grad.tobytes(), xr.softmax(x[:50_000]).tobytes(),
                 xr.binary_cross_entropy_with_logits(x, (x > 0).astype(np.float32),
                                                     reduction="none").tobytes(),
                 np.float64(cal.fit_temperature(x[N // 2 - 20_000: N // 2 + 20_000],
                                                 t[N // 2 - 20_000: N // 2 + 20_000])).tobytes()]
        return os.getpid(), hashlib.sha256(b"".join(parts)).hexdigest()

    def grandchild(seed, q):
        q.put(task(seed)[1])

    def nested(seed, out):
        # A forked child uses its own (rebuilt) pool, then forks again.
        own = task(seed)[1]
        ctx = mp.get_context("fork")
        q = ctx.Queue()
        p = ctx.Process(target=grandchild, args=(seed, q))
        p.start()
        h = q.get(timeout=300)
        p.join(300)
        out.put((own, h))

    if __name__ == "__main__":
        xr.set_num_threads(2)
        want = {s: task(s)[1] for s in range(4)}   # the parent's pool now exists
        ctx = mp.get_context("fork")
        with ctx.Pool(2) as pool:
            got = pool.map(task, [0, 1, 2, 3, 0, 1])
        assert all(pid != os.getpid() for pid, _ in got)
        assert [h for _, h in got] == [want[s] for s in [0, 1, 2, 3, 0, 1]], "children differ"
        print("fork after use: ok", flush=True)

        # Fork while another parent thread is inside a parallel call (pool threads busy).
        x, t = data(9)
        stop = threading.Event()
        def busy():
            while not stop.is_set():
                xr.cross_entropy(x, t, return_grad=True)
        th = threading.Thread(target=busy)
        th.start()
        try:
            for rep in range(4):
                with ctx.Pool(2) as pool:
                    got = pool.map(task, [rep % 4, (rep + 1) % 4])
                assert [h for _, h in got] == [want[rep % 4], want[(rep + 1) % 4]]
        finally:
            stop.set()
            th.join()
        print("fork during a call: ok", flush=True)

        # A child forks a grandchild; and a child that changes its own thread count.
        for seed in (2, 3):
            q = ctx.Queue()
            p = ctx.Process(target=nested, args=(seed, q))
            p.start()
            assert q.get(timeout=300) == (want[seed], want[seed])
            p.join(300)
            assert p.exitcode == 0
        print("nested fork: ok", flush=True)

        pid = os.fork()
        if pid == 0:
            try:
                xr.set_num_threads(3)
                ok = task(1)[1] == want[1]
                xr.set_num_threads(1)
                ok = ok and task(2)[1] == want[2]
            except BaseException:
                ok = False
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
        # ... and the parent's own pool still works afterwards.
        assert task(3)[1] == want[3]
        print("os.fork: ok", flush=True)
""")


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_fork_children_compute_the_parents_numbers():
    out = run_script(FORK_SCRIPT, timeout=600)  # about 17 s idle on 2 cores
    for line in ("fork after use: ok", "fork during a call: ok", "nested fork: ok",
                 "os.fork: ok"):
        assert line in out, out


# ----------------------------------------------------------------- (d) determinism --

@pytest.mark.parametrize("isa", [None])
def test_bit_identical_for_any_thread_count_and_run(inputs, restore_threads, isa):
    runs = {}
    for n in (1, 2, 3, 8):
        xr.set_num_threads(n)
        runs[n] = workload(inputs)
        assert_identical(workload(inputs), runs[n], f"repeat with {n} threads")
    for n in (2, 3, 8):
        assert_identical(runs[n], runs[1], f"{n} threads vs 1")


DETERMINISM_SCRIPT = textwrap.dedent(r"""
    import hashlib, sys
    sys.path.insert(0, sys.argv[1])
    import xent_rs as xr
    import test_hardening_concurrency as H
    d = H.make_inputs(3)
    digests = set()
    for n in (1, 2, 3, 8):
        xr.set_num_threads(n)
        for _ in range(2):
            res = H.workload(d)
            h = hashlib.sha256()
            for key in sorted(res):
                for b in res[key]:
                    h.update(b)
            digests.add(h.hexdigest())
    assert len(digests) == 1, digests
    print(xr._core.simd_path(), digests.pop())
""")


@pytest.mark.parametrize("isa", _core.simd_paths_supported())
def test_bit_identical_for_any_thread_count_on_every_isa_path(isa):
    """The same determinism check with each instruction-set path forced, in a fresh process
    (the path is chosen once per process)."""
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    out = run_script(DETERMINISM_SCRIPT.replace("sys.argv[1]", repr(tests_dir)), timeout=300,
                     XENT_RS_ISA=isa)
    assert out.split()[0] == isa, out


# ------------------------------------------------------- (e) every instruction set --

ISA_CHECK = textwrap.dedent(r"""
    import numpy as np, xent_rs as xr
    from xent_rs import reference as ref
    rng = np.random.default_rng(11)
    worst_row = 0.0
    for k in (1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 100, 1000, 5003):
        n = 67
        x = (rng.standard_normal((n, k)) * rng.choice([0.5, 4.0, 20.0])).astype(np.float32)
        if k > 2:
            x[1, 1] = -np.inf                      # a masked class
            x[2, :] = x[2, 0]                      # ties
            x[3, 0] = 60.0                         # a very confident row
        t = rng.integers(0, k, n)
        t[: n // 2] = x[: n // 2].argmax(axis=1)   # confident, correct rows: tiny losses
        if k > 2:
            t[1] = 0
        kw = dict(reduction="none", return_grad=True, return_hess=True, return_lse=True)
        got = xr.cross_entropy(x, t, **kw)
        want = ref.cross_entropy(x, t, **kw)
        rl = want[0]
        ok = rl >= np.finfo(np.float32).tiny * 1e6  # losses representable with 1e-6 headroom
        rel = np.abs(got[0][ok] - rl[ok]) / rl[ok]
        worst_row = max(worst_row, float(rel.max(initial=0.0)))
        for a, b in zip(got[1:], want[1:]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
        for eps, y in ((0.1, None), (0.0, rng.random((n, k)).astype(np.float32))):
            tgt = t if y is None else y / y.sum(axis=1, keepdims=True)
            a = xr.cross_entropy(x, tgt, label_smoothing=eps, reduction="none")
            b = ref.cross_entropy(x, tgt, label_smoothing=eps, reduction="none")
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(xr.softmax(x), ref.softmax(x), rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(xr.log_softmax(x), ref.log_softmax(x), rtol=1e-5,
                                   atol=1e-6)
        np.testing.assert_allclose(xr.logsumexp(x), ref.logsumexp(x), rtol=1e-6, atol=1e-6)
        for reduction in ("mean", "sum"):
            a = xr.cross_entropy(x, t, reduction=reduction)
            b = ref.cross_entropy(x, t, reduction=reduction)
            assert abs(float(a) - b) <= 1e-5 * abs(b) + 1e-7, (k, reduction, a, b)
        z = x.ravel()[np.isfinite(x.ravel())]
        yb = rng.random(z.size).astype(np.float32)
        np.testing.assert_allclose(
            xr.binary_cross_entropy_with_logits(z, yb, reduction="none"),
            ref.binary_cross_entropy_with_logits(z, yb, reduction="none"), rtol=1e-5,
            atol=1e-7)
    assert worst_row <= 1e-6, worst_row
    print(xr._core.simd_path(), worst_row)
""")


@pytest.mark.parametrize("isa", _core.simd_paths_supported())
def test_every_supported_isa_path_matches_the_reference(isa):
    out = run_script(ISA_CHECK, timeout=300, XENT_RS_ISA=isa)
    path, worst = out.split()
    assert path == isa
    assert float(worst) <= 1e-6


def test_isa_requests_beyond_the_cpu_fall_back_to_the_best_path():
    """XENT_RS_ISA is case-insensitive; a request above what the CPU has (avx512 here if it
    lacks it) is capped at the best supported path, and an unknown value is ignored: never an
    illegal instruction."""
    supported = _core.simd_paths_supported()
    best = supported[-1]
    code = "import xent_rs as xr; print(xr._core.simd_path())"
    expect = {"avx512": best, " AVX2 ": "avx2" if "avx2" in supported else best,
              "Scalar": "scalar", "bogus": best, "": best, "sse9": best}
    for request, want in expect.items():
        out = run_script(code, timeout=60, XENT_RS_ISA=request).strip()
        assert out == want, (request, out)
    # Whatever path is in use, this process's results match the reference.
    x = (RNG.standard_normal((50, 40)) * 5).astype(np.float32)
    t = RNG.integers(0, 40, 50)
    assert_close(xr.cross_entropy(x, t, reduction="none"),
                 ref.cross_entropy(x, t, reduction="none"), np.float32, rtol=1e-6)
