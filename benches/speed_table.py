"""The speed table of issues 3 and 14 in one run: xent_rs against NumPy, scikit-learn's loss
module and PyTorch CPU (each when importable) at 1 and 2 threads, each also as a multiple of
the memory floor measured in the same run; then float16 loss+grad (beside the same logits as
float32), ``calibration_error(from_logits=True)`` and ``fit_temperature`` against their
floors. The SIMD path it ran on is in the header (``XENT_RS_ISA`` forces a lower one).

    python benches/speed_table.py [--quick] [--threads 1 2] [--markdown] [--filter TEXT]

What is timed (float32 unless the row says float16):

* ``xent_rs``: ``xr.cross_entropy`` / ``xr.binary_cross_entropy_with_logits``; loss+grad
  writes into a reused ``out=`` buffer; ``xent_rs fresh`` lets it allocate the gradient
  (page faults included: allocation is a cost users pay). Threads: ``xr.set_num_threads``.
* ``numpy``: ``benches/baselines.py``. NumPy is single-threaded, so it is timed once per
  operation and the same time is shown at every thread count.
* ``sklearn``: ``sklearn._loss.loss.HalfMultinomialLoss(n_classes=K).loss_gradient`` /
  ``.loss`` and ``HalfBinomialLoss`` (private, Cython + OpenMP) with preallocated outputs and
  ``n_threads`` = the thread count. It returns per-sample losses; their mean is the same
  loss as xent_rs's. Multinomial wants ``y_true`` (class indices as floats) in the dtype of
  the logits; binomial wants 1-D arrays, so (N, C) BCE is passed flattened.
* ``torch``: ``F.cross_entropy`` / ``F.binary_cross_entropy_with_logits`` on
  ``torch.from_numpy`` views, forward (+ ``backward()``), ``torch.set_num_threads``.

Times are the minimum over repetitions after one warm-up call; the number of repetitions
adapts to the warm-up time (fewer for slow baselines) and is shown as ``reps``. ``--quick``
uses 1-3 repetitions and skips the slow baselines at the largest shapes (NumPy above 30 M
elements, all baselines above 100 M).

Memory floor: bytes that must move divided by the copy bandwidth measured in this run with
the same number of threads (each thread copies its share of a 256 MB float32 array with
``np.copyto``, which releases the GIL; bandwidth = bytes read + bytes written over the time;
measured at the start, before each shape and at the end, and the highest value is used, which
gives the lowest floor, the one least favourable to xent_rs). Reads and writes count
alike, so the bytes per element are: CCE loss 4 (read the logits), CCE loss+grad 8 (read the
logits, write the gradient), BCE loss 8 (read logits and targets), BCE loss+grad 12. A pure
read stream can run faster than a copy, so the loss-only floors are approximate.

Columns: ``vs best`` = the fastest baseline's time at that thread count divided by this time
(above 1: faster than every baseline); ``x floor`` = this time divided by the floor (1.0 is
the floor). Each implementation's loss is checked against xent_rs's (a warning is printed
when they disagree by more than 1e-3 relative), and xent_rs's loss against itself across
thread counts (it should be bit-identical). Progress goes to stderr as the run goes; the
table (text, or Markdown with ``--markdown``), the issue's targets at 2 threads and any
warnings go to stdout at the end (targets and warnings to stderr with ``--markdown``).
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import xent_rs as xr  # noqa: E402
from baselines import numpy_bce, numpy_cross_entropy, torch, torch_bce, torch_cross_entropy  # noqa: E402

try:  # optional, never a dependency
    import sklearn
    from sklearn._loss.loss import HalfBinomialLoss, HalfMultinomialLoss
except ImportError:  # pragma: no cover
    sklearn = None

CCE_SHAPES = [(1_000_000, 10), (100_000, 1_000), (8_192, 32_000), (2_048, 128_000)]
BCE_SHAPES = [(4_000_000,), (100_000, 100)]
# Issue 14's further rows: float16 logits (loss+grad; float32 targets for BCE), the fused
# calibration pass and the temperature fit (each against the read floor of float32 logits).
CCE16_SHAPES = [(1_000_000, 10), (100_000, 1_000), (2_048, 128_000)]
BCE16_SHAPES = [(4_000_000,)]
CALIB_SHAPES = [(1_000_000, 10), (100_000, 1_000)]
BYTES_PER_ELEMENT = {("cce", False): 4, ("cce", True): 8, ("bce", False): 8, ("bce", True): 12,
                     ("cce16", True): 4, ("bce16", True): 8, ("calib", False): 4,
                     ("temp", False): 4}
HALF_KINDS = ("cce16", "bce16")
BASELINES = ("numpy", "sklearn", "torch")
LOSS_RTOL = 1e-3
COPY_MB = 256

# (seconds of repetitions aimed for, fewest, most), after one warm-up call
REPS_FULL = {"xent": (2.0, 5, 20), "base": (4.0, 2, 5)}
REPS_QUICK = {"xent": (0.5, 2, 3), "base": (0.0, 1, 1)}


def log(msg, stream):
    print(msg, file=stream, flush=True)


def best_time(fn, reps, loss_of=None):
    """Minimum time of `fn` over repetitions after a warm-up; also the warm-up's loss."""
    budget, lo, hi = reps
    t0 = time.perf_counter()
    res = fn()
    first = time.perf_counter() - t0
    loss = float(loss_of(res)) if loss_of is not None else None
    del res
    n = max(lo, min(hi, math.ceil(budget / max(first, 1e-9))))
    best = math.inf
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best, loss, n


def copy_bandwidth(threads, repeat):
    """Bytes read + written per second copying 256 MB of float32 with `threads` threads."""
    src = np.ones(COPY_MB * 2**20 // 4, dtype=np.float32)
    dst = np.empty_like(src)
    edges = np.linspace(0, src.size, threads + 1).astype(np.int64)
    chunks = [(dst[a:b], src[a:b]) for a, b in zip(edges[:-1], edges[1:])]
    with ThreadPoolExecutor(threads) as pool:
        def run():
            for f in [pool.submit(np.copyto, d, s) for d, s in chunks]:
                f.result()
        t, _, _ = best_time(run, (0.0, repeat, repeat))
    return 2 * src.nbytes / t


def set_threads(n):
    xr.set_num_threads(n)
    if torch is not None:
        torch.set_num_threads(n)


def first(r):
    return r[0]


def same(r):
    return r


def cce_impls(x, t, out, threads, with_grad):
    n, k = x.shape
    impls = {}
    if with_grad:
        impls["xent_rs"] = (lambda: xr.cross_entropy(x, t, return_grad=True, out=out), first)
        impls["xent_rs fresh"] = (lambda: xr.cross_entropy(x, t, return_grad=True), first)
    else:
        impls["xent_rs"] = (lambda: xr.cross_entropy(x, t), same)
    impls["numpy"] = (lambda: numpy_cross_entropy(x, t, with_grad), first if with_grad else same)
    if sklearn is not None:
        sk = HalfMultinomialLoss(n_classes=k)
        y = t.astype(x.dtype)  # float class indices, same dtype as raw_prediction
        lo = np.empty(n, dtype=x.dtype)
        if with_grad:
            fn = lambda: sk.loss_gradient(y_true=y, raw_prediction=x, loss_out=lo,  # noqa: E731
                                          gradient_out=out, n_threads=threads)
        else:
            fn = lambda: sk.loss(y_true=y, raw_prediction=x, loss_out=lo,  # noqa: E731
                                 n_threads=threads)
        impls["sklearn"] = (fn, lambda r: lo.mean(dtype=np.float64))
    if torch is not None:
        impls["torch"] = (lambda: torch_cross_entropy(x, t, with_grad), first if with_grad else same)
    return impls


def bce_impls(z, y, out, threads, with_grad):
    impls = {}
    if with_grad:
        impls["xent_rs"] = (lambda: xr.binary_cross_entropy_with_logits(
            z, y, return_grad=True, out=out), first)
        impls["xent_rs fresh"] = (lambda: xr.binary_cross_entropy_with_logits(
            z, y, return_grad=True), first)
    else:
        impls["xent_rs"] = (lambda: xr.binary_cross_entropy_with_logits(z, y), same)
    impls["numpy"] = (lambda: numpy_bce(z, y, with_grad), first if with_grad else same)
    if sklearn is not None:
        sk = HalfBinomialLoss()
        zf, yf, gf = z.reshape(-1), y.reshape(-1), out.reshape(-1)  # it takes 1-D only
        lo = np.empty_like(zf)
        if with_grad:
            fn = lambda: sk.loss_gradient(y_true=yf, raw_prediction=zf, loss_out=lo,  # noqa: E731
                                          gradient_out=gf, n_threads=threads)
        else:
            fn = lambda: sk.loss(y_true=yf, raw_prediction=zf, loss_out=lo,  # noqa: E731
                                 n_threads=threads)
        impls["sklearn"] = (fn, lambda r: lo.mean(dtype=np.float64))
    if torch is not None:
        impls["torch"] = (lambda: torch_bce(z, y, with_grad), first if with_grad else same)
    return impls


def half_impls(kind, x, t, out):
    """float16 logits, and the same logits as float32 for comparison (not a baseline)."""
    x32, out32 = x.astype(np.float32), out.astype(np.float32)
    if kind == "cce16":
        fn = lambda a, o: xr.cross_entropy(a, t, return_grad=True, out=o)  # noqa: E731
    else:
        fn = lambda a, o: xr.binary_cross_entropy_with_logits(  # noqa: E731
            a, t, return_grad=True, out=o)
    return {"xent_rs": (lambda: fn(x, out), first),
            "xent_rs float32": (lambda: fn(x32, out32), first)}


def pass_impls(kind, x, t):
    from xent_rs.calibration import calibration_error, fit_temperature
    if kind == "calib":
        return {"xent_rs": (lambda: calibration_error(x, t, from_logits=True), same)}
    return {"xent_rs": (lambda: fit_temperature(x, t), same)}


def skipped(name, size, quick):
    if not quick or name not in BASELINES:
        return False
    return size > 100_000_000 or (name == "numpy" and size > 30_000_000)


def header_lines(threads, bw_samples):
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
                if ln.startswith("model name")), platform.processor() or "unknown CPU")
    versions = [f"Python {platform.python_version()}", f"NumPy {np.__version__}"]
    versions.append(f"scikit-learn {sklearn.__version__}" if sklearn else "scikit-learn absent")
    versions.append(f"PyTorch {torch.__version__}" if torch is not None else "PyTorch absent")
    bw = ", ".join(f"{n} thread{'s' if n > 1 else ''} {max(bw_samples[n]) / 1e9:.1f} GB/s "
                   f"(lowest {min(bw_samples[n]) / 1e9:.1f})" for n in threads)
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return [
        f"xent_rs {xr.__version__} speed table, {now}",
        f"machine: {cpu}, {os.cpu_count()} logical cores, xent_rs SIMD path "
        f"{xr._core.simd_path()}, load average {os.getloadavg()[0]:.2f} at start",
        f"versions: {', '.join(versions)}",
        f"copy bandwidth (read + write), best of {len(bw_samples[threads[0]])} measurements "
        f"through the run: {bw}",
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="few repetitions; skip slow baselines at the largest shapes")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    ap.add_argument("--filter", default="",
                    help="only operations whose name contains this, e.g. 'cce 1000000x10'")
    args = ap.parse_args()
    if any(n < 1 for n in args.threads):
        ap.error("--threads: positive integers")
    threads_list = list(dict.fromkeys(args.threads))
    reps = REPS_QUICK if args.quick else REPS_FULL
    copy_reps = 3 if args.quick else 7
    warnings_seen = []

    def warn(msg):
        warnings_seen.append(msg)
        log(f"WARNING: {msg}", sys.stderr)

    # The copy bandwidth is measured at the start, before each shape and at the end; the
    # floor uses the best (highest) value, the least favourable floor for xent_rs.
    bw_samples = {n: [] for n in threads_list}

    def measure_bandwidth():
        for n in threads_list:
            bw_samples[n].append(copy_bandwidth(n, copy_reps))

    measure_bandwidth()
    header = header_lines(threads_list, bw_samples)  # load average and date at the start
    log(f"# {header[0]}: progress (the table follows at the end)", sys.stderr)

    problems = ([("cce", s) for s in CCE_SHAPES] + [("bce", s) for s in BCE_SHAPES]
                + [("cce16", s) for s in CCE16_SHAPES] + [("bce16", s) for s in BCE16_SHAPES]
                + [("calib", s) for s in CALIB_SHAPES] + [("temp", s) for s in CALIB_SHAPES])
    titles = {"cce16": "cce float16", "bce16": "bce float16", "calib":
              "calibration_error(from_logits)", "temp": "fit_temperature"}
    rng = np.random.default_rng(0)
    rows = []
    for kind, shape in problems:
        name = f"{titles.get(kind, kind)} {'x'.join(map(str, shape))}"
        if kind in HALF_KINDS:
            ops = [(True, f"{name} loss+grad")]
        elif kind in ("calib", "temp"):
            ops = [(False, name)]
        else:
            ops = [(g, f"{name} {'loss+grad' if g else 'loss'}") for g in (False, True)]
        ops = [(g, op) for g, op in ops if args.filter in op]
        if not ops:
            continue
        measure_bandwidth()
        x = rng.standard_normal(shape, dtype=np.float32)
        if kind == "temp":  # labels drawn at T = 2 (a finite temperature fits)
            x *= 3.0
            p = np.exp(x / 2.0)
            p /= p.sum(axis=1, keepdims=True)
            t = (p.cumsum(axis=1) < rng.random((shape[0], 1))).sum(axis=1).clip(0, shape[1] - 1)
            del p
        elif kind in ("cce", "cce16", "calib"):
            t = rng.integers(0, shape[1], shape[0])
        else:
            t = (rng.random(shape) < 0.3).astype(np.float32)
        if kind in HALF_KINDS:
            x = x.astype(np.float16)
        out = np.empty_like(x)
        out.fill(0)  # fault the pages in now
        for with_grad, op in ops:
            numpy_done = None
            xent_loss = {}
            for n in threads_list:
                set_threads(n)
                if kind in HALF_KINDS:
                    impls = half_impls(kind, x, t, out)
                elif kind in ("calib", "temp"):
                    impls = pass_impls(kind, x, t)
                else:
                    impls = (cce_impls if kind == "cce" else bce_impls)(x, t, out, n, with_grad)
                times, nreps, notes = {}, {}, []
                for impl, (fn, loss_of) in impls.items():
                    if skipped(impl, x.size, args.quick):
                        notes.append(f"{impl} skipped (--quick)")
                        continue
                    if impl == "numpy" and numpy_done is not None:
                        times[impl], nreps[impl] = numpy_done
                        continue
                    r = reps["xent" if impl.startswith("xent") and kind != "temp" else "base"]
                    times[impl], loss, nreps[impl] = best_time(fn, r, loss_of)
                    if impl == "xent_rs float32":
                        continue  # rounded differently from the float16 result
                    if impl == "numpy":
                        numpy_done = times[impl], nreps[impl]
                    if impl == "xent_rs":
                        ref = loss
                        xent_loss[n] = loss
                    elif not math.isclose(loss, ref, rel_tol=LOSS_RTOL):
                        warn(f"{op}, {n} thread(s): {impl} loss {loss!r} differs from "
                             f"xent_rs's {ref!r}")
                rows.append(dict(op=op, kind=kind, shape=shape, with_grad=with_grad, threads=n,
                                 times=times, reps=nreps, notes=notes,
                                 bytes=x.size * BYTES_PER_ELEMENT[kind, with_grad]))
                log(f"  {op}, {n} thread(s): " + ", ".join(
                    f"{k} {v * 1e3:.1f} ms" for k, v in times.items()), sys.stderr)
            if len(set(xent_loss.values())) > 1:
                warn(f"{op}: xent_rs loss differs across thread counts: {xent_loss}")
        del x, t, out
    measure_bandwidth()

    for n in threads_list:
        lo, hi = min(bw_samples[n]), max(bw_samples[n])
        if hi > 1.25 * lo:
            warn(f"copy bandwidth with {n} thread(s) ranged from {lo / 1e9:.1f} to "
                 f"{hi / 1e9:.1f} GB/s during the run (machine busy?)")
    for r in rows:
        r["floor"] = r["bytes"] / max(bw_samples[r["threads"]])
        base = [r["times"][b] for b in BASELINES if b in r["times"]]
        r["best_base"] = min(base) if base else math.nan
    header[3] = header_lines(threads_list, bw_samples)[3]

    if args.markdown:
        markdown(rows, header, args.quick)
    else:
        table(rows, header)
    tail = sys.stderr if args.markdown else sys.stdout  # keep the Markdown clean
    targets(rows, tail)
    if warnings_seen:
        log(f"# {len(warnings_seen)} warning(s):", tail)
        for w in warnings_seen:
            log(f"#   {w}", tail)


def table(rows, header):
    for line in header:
        print(f"# {line}")
    print("# ms: minimum over reps; vs best: fastest baseline's time / this time; "
          "x floor: this time / memory floor")
    print(f"{'operation':<26} {'thr':>3}  {'implementation':<14} {'ms':>9} {'reps':>4} "
          f"{'vs best':>8} {'x floor':>8}")
    prev = None
    for r in rows:
        if prev is not None and r["op"] != prev:
            print()
        prev = r["op"]
        op, n = r["op"], r["threads"]
        print(f"{op:<26} {n:>3}  {'(floor)':<14} {r['floor'] * 1e3:9.2f}")
        for impl, tm in r["times"].items():
            vs = "–" if math.isnan(r["best_base"]) else f"{r['best_base'] / tm:.2f}x"
            print(f"{op:<26} {n:>3}  {impl:<14} {tm * 1e3:9.2f} {r['reps'][impl]:>4} "
                  f"{vs:>8} {tm / r['floor']:8.2f}")
        for note in r["notes"]:
            print(f"{op:<26} {n:>3}  ({note})")
    print()


def targets(rows, stream):
    """Issue 3's targets at 2 threads, when measured."""
    checks = []
    for r in rows:
        if r["threads"] != 2 or "xent_rs" not in r["times"]:
            continue
        xs, k = r["times"]["xent_rs"], r["shape"][-1]
        mult = xs / r["floor"]
        if r["kind"] == "cce" and r["with_grad"]:
            if not math.isnan(r["best_base"]):
                checks.append((r["op"], "≥ 5x the best baseline", r["best_base"] / xs >= 5,
                               f"{r['best_base'] / xs:.1f}x"))
            lim = 2.0 if k >= 1000 else 3.0
            checks.append((r["op"], f"≤ {lim:g}x floor", mult <= lim, f"{mult:.2f}x"))
        elif r["kind"] == "cce":  # loss only: issue 14 item 5
            lim = 1.5 if k >= 1000 else 3.0
            checks.append((r["op"], f"≤ {lim:g}x read floor", mult <= lim, f"{mult:.2f}x"))
        elif r["kind"] in HALF_KINDS:
            f32 = r["times"].get("xent_rs float32")
            if f32:
                checks.append((r["op"], "≤ float32's time", xs <= f32, f"{xs / f32:.2f}x"))
            if r["kind"] == "cce16" and k >= 1000:
                checks.append((r["op"], "≤ 3x floor", mult <= 3.0, f"{mult:.2f}x"))
        elif r["kind"] == "calib":
            checks.append((r["op"], "≤ 2.5x read floor", mult <= 2.5, f"{mult:.2f}x"))
        elif r["kind"] == "temp":
            checks.append((r["op"], "≤ 15x read floor", mult <= 15.0, f"{mult:.2f}x"))
        elif r["with_grad"]:
            checks.append((r["op"], "≤ 2x floor", mult <= 2.0, f"{mult:.2f}x"))
    if checks:
        log("# issue 3 and 14 targets (2 threads, reused out=):", stream)
        for op, what, ok, got in checks:
            log(f"  {'met ' if ok else 'MISS'} {op:<26} {what:<24} {got}", stream)


def markdown(rows, header, quick):
    names = ["xent_rs", "xent_rs fresh", "xent_rs float32", "numpy", "sklearn", "torch"]
    names = [n for n in names if any(n in r["times"] for r in rows)]
    label = {"xent_rs": "xent_rs, `out=`", "xent_rs fresh": "xent_rs, fresh grad",
             "xent_rs float32": "xent_rs, same logits as float32",
             "numpy": "NumPy", "sklearn": "scikit-learn", "torch": "PyTorch"}
    print(f"Measured {header[0].split(', ', 1)[1]} with `python benches/speed_table.py"
          f"{' --quick' if quick else ''} --markdown`.  ")
    for line in header[1:]:
        print(line[0].upper() + line[1:] + ".  ")
    print("Times in ms (minimum over repetitions); *vs best* is the fastest baseline's time "
          "over xent_rs's (`out=`); *× floor* is xent_rs's time over the memory floor "
          "(bytes moved / copy bandwidth at that thread count; for the loss-only, "
          "calibration and temperature rows the read floor of the logits). float16 rows "
          "move 2 bytes per logit and gradient (BCE targets float32).")
    print()
    print("| operation | threads | floor | " + " | ".join(label[n] for n in names)
          + " | vs best | × floor (`out=` / fresh) |")
    print("|---|--:|--:|" + "--:|" * len(names) + "--:|--:|")
    for r in rows:
        t = r["times"]
        cells = " | ".join(f"{t[n] * 1e3:.1f}" if n in t else "–" for n in names)
        xs = t.get("xent_rs")
        vs = f"{r['best_base'] / xs:.1f}×" if xs and not math.isnan(r["best_base"]) else "–"
        fl = f"{xs / r['floor']:.2f}" if xs else "–"
        if "xent_rs fresh" in t:
            fl += f" / {t['xent_rs fresh'] / r['floor']:.2f}"
        print(f"| {r['op']} | {r['threads']} | {r['floor'] * 1e3:.1f} | {cells} | {vs} | {fl} |")


if __name__ == "__main__":
    main()
