"""Shared helpers: tolerances against the float64 reference, random problem builders, and the
fixtures and runners that several test files use (thread-count restore, child interpreters,
named-error checks, odd memory layouts, the interpreter-lock probe)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import xent_rs as xr
from xent_rs import _core

# No clock in any property test: Hypothesis's per-example deadline (200 ms) and its
# "data generation too slow" check both fail on a loaded machine, so both are off for the
# whole suite (a test's own @settings inherits this profile).
settings.register_profile("xent_rs", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("xent_rs")

# Relative tolerance of a result against the float64 reference, by the logits' dtype.
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}
# Per-row float32 losses are held to a tighter bound (issue 2: 1e-6).
ROW_LOSS_RTOL = {np.dtype(np.float32): 1e-6, np.dtype(np.float64): 1e-12}


def assert_close(actual, expected, dtype, *, rtol=None, scale_atol=True, scale=None):
    """``actual`` (any dtype) agrees with the float64 ``expected`` elementwise to ``rtol``;
    with ``scale_atol`` an absolute slack of ``rtol·scale`` (default ``max|expected|``) is
    allowed too, for entries that are differences of nearly equal numbers (gradients of soft
    targets). Values beyond the dtype's range are compared after rounding to it."""
    dtype = np.dtype(dtype)
    rtol = RTOL[dtype] if rtol is None else rtol
    actual = np.asarray(actual, dtype=np.float64)
    with np.errstate(over="ignore"):
        expected = np.asarray(expected, dtype=np.float64).astype(dtype).astype(np.float64)
    assert actual.shape == expected.shape
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    np.testing.assert_array_equal(actual[~finite & ~np.isnan(expected)],
                                  expected[~finite & ~np.isnan(expected)])
    if not finite.any():
        return
    if scale is None:
        scale = np.max(np.abs(expected[finite]))
    scale = scale if scale_atol else 0.0
    # Subnormal float32 results cannot carry full relative precision.
    tiny = np.finfo(dtype).tiny
    np.testing.assert_allclose(actual[finite], expected[finite], rtol=rtol,
                               atol=max(rtol * scale, tiny))


def random_logits(rng, shape, dtype, scale=3.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def random_probs(rng, shape, dtype):
    y = rng.random(shape) ** 3
    y /= y.sum(axis=-1, keepdims=True)
    return y.astype(dtype)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def restore_threads():
    """Puts the library's thread count back after a test that changes it."""
    before = xr.get_num_threads()
    yield
    xr.set_num_threads(before)


# ------------------------------------------------------------------- errors and layouts --

def raises(exc, name, fn, *args, **kw):
    """``fn(*args, **kw)`` raises ``exc`` with a message starting with ``name``."""
    with pytest.raises(exc) as info:
        fn(*args, **kw)
    assert str(info.value).startswith(name), (name, str(info.value))
    return info.value


def misaligned(a):
    """A copy of ``a`` whose data starts one byte into a uint8 buffer."""
    a = np.asarray(a)
    buf = np.zeros(a.nbytes + 1, dtype=np.uint8)
    view = buf[1:].view(a.dtype).reshape(a.shape)
    view[...] = a
    assert a.dtype.itemsize == 1 or not view.flags.aligned
    return view


# ------------------------------------------------------------------ child interpreters --

def subprocess_env(**extra):
    """The environment for a child Python that imports this very xent_rs."""
    env = dict(os.environ, **extra)
    root = os.path.dirname(os.path.dirname(os.path.abspath(xr.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


def run_script(code, timeout, **env):
    """Runs ``code`` in a fresh interpreter (environment ``subprocess_env(**env)``) in its
    own process group and returns its standard output. A non-zero exit fails the test; on
    timeout the whole group (pool workers included) is killed and the test fails. The
    timeout only guards against a deadlock: set it far above the script's run time on a
    loaded machine."""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env=subprocess_env(**env))
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, err = proc.communicate()
        pytest.fail(f"timed out after {timeout} s (deadlock?)\n{out[-2000:]}\n{err[-2000:]}")
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out[-2000:]}\n{err[-4000:]}"
    return out


# ---------------------------------------------------------------- the interpreter lock --

def core_call_seen_from_another_thread(call, want, module=_core):
    """Runs ``call()`` on a worker thread and reports whether the main thread ran Python
    code while the worker was inside the function ``want`` of ``module`` (``xent_rs._core``).
    No clock is involved:

    * every public function of the module is wrapped so that a list names it from just
      before the real call to just after it;
    * forced switches of the interpreter lock are off (a switch interval of an hour), so a
      thread holding the lock keeps it until it lets go of it itself.

    The main thread waits for the lock and looks at the list each time it gets it; it can
    get it only when the worker lets go: inside a core call that detaches from the
    interpreter, in a NumPy loop that does, or when the worker has finished. Seeing the
    name ``want`` on the list therefore proves that that core function let the lock go.
    Returns ``(result, seen)``: the call's result and whether the main thread caught the
    worker inside ``want``."""
    inside = []

    def wrap(name, fn):
        def wrapper(*args, **kwargs):
            inside.append(name)
            try:
                return fn(*args, **kwargs)
            finally:
                inside.pop()
        return wrapper

    state = {}

    def worker():
        try:
            state["result"] = call()
        except BaseException as exc:  # noqa: BLE001 - re-raised on the main thread
            state["error"] = exc

    seen = False
    interval = sys.getswitchinterval()
    with pytest.MonkeyPatch.context() as mp:
        for name in dir(module):
            fn = getattr(module, name)
            if callable(fn) and not name.startswith("_"):
                mp.setattr(module, name, wrap(name, fn))
        sys.setswitchinterval(3600.0)
        try:
            th = threading.Thread(target=worker)
            th.start()                   # returns once the worker has let the lock go
            while not seen and th.is_alive():
                seen = want in inside    # nothing between here and the check lets it go
                if not seen:
                    time.sleep(1e-4)     # hand the lock back until the worker lets go again
            th.join()
        finally:
            sys.setswitchinterval(interval)
    if "error" in state:
        raise state["error"]
    return state["result"], seen


def assert_releases_the_interpreter_lock(make_call, want, sizes=(1, 4, 16, 64)):
    """``make_call(size)`` returns ``(call, check)`` for a problem of about ``size`` million
    elements; ``check(result)`` asserts the result's values. The size grows until the main
    thread has caught the worker inside the core function ``want`` (on a fast or busy
    machine a small call may end before the main thread is scheduled); a call that keeps
    the lock fails at the largest size."""
    for size in sizes:
        call, check = make_call(size)
        result, seen = core_call_seen_from_another_thread(call, want)
        check(result)
        del result
        if seen:
            return
    pytest.fail(f"no other Python thread ran while the worker was inside _core.{want}, up "
                f"to {sizes[-1]}M elements")
