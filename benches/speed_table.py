"""The speed table of issue 3 in one run: xent_rs against NumPy, scikit-learn's loss module
and PyTorch CPU (each when importable) at 1 and 2 threads, each time also as a multiple of
the memory floor measured in the same run.

    python benches/speed_table.py [--quick] [--threads 1 2] [--markdown]

Times are the minimum over repetitions after a warm-up. The floor for an operation is the
bytes it must move divided by the copy bandwidth measured here with the same number of
threads (each thread copying its share of a 256 MB float32 array with ``np.copyto``; a copy
reads and writes, so its bandwidth counts both). Bytes per element: CCE loss 4 (read the
logits), CCE loss+grad 8 (read logits, write gradient), BCE loss 8 (read logits and
targets), BCE loss+grad 12. "vs best" is the fastest baseline's time divided by xent_rs's
(higher is better); "floor x" is xent_rs's time divided by the floor (1.0 is the floor).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import xent_rs as xr  # noqa: E402
from baselines import numpy_bce, numpy_cross_entropy, torch, torch_bce, torch_cross_entropy  # noqa: E402

try:
    from sklearn._loss.loss import HalfBinomialLoss, HalfMultinomialLoss
    import sklearn
except ImportError:  # pragma: no cover
    sklearn = None

CCE_SHAPES = [(1_000_000, 10), (100_000, 1_000), (8_192, 32_000), (2_048, 128_000)]
BCE_SHAPES = [(4_000_000,), (100_000, 100)]


def best_time(fn, repeat):
    fn()  # warm-up (first touch of fresh buffers, thread start-up)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def copy_bandwidth(threads, repeat):
    src = np.ones(64 * 2**20, dtype=np.float32)  # 256 MB
    dst = np.empty_like(src)
    parts = np.array_split(np.arange(src.size), threads)
    bounds = [(p[0], p[-1] + 1) for p in parts]
    with ThreadPoolExecutor(threads) as pool:
        def run():
            list(pool.map(lambda b: np.copyto(dst[b[0]:b[1]], src[b[0]:b[1]]), bounds))
        t = best_time(run, repeat)
    return 2 * src.nbytes / t


def cce_impls(x, t, threads, with_grad):
    n, k = x.shape
    out = np.empty_like(x)
    impls = {
        "xent_rs": (lambda: xr.cross_entropy(x, t, return_grad=True, out=out)) if with_grad
        else (lambda: xr.cross_entropy(x, t)),
    }
    if with_grad:
        impls["xent_rs (fresh grad)"] = lambda: xr.cross_entropy(x, t, return_grad=True)
    impls["numpy"] = lambda: numpy_cross_entropy(x, t, with_grad)
    if sklearn is not None:
        loss = HalfMultinomialLoss(n_classes=k)
        y = t.astype(np.float32)  # the Cython loss wants one dtype throughout
        lo = np.empty(n, dtype=np.float32)
        go = np.empty_like(x)
        if with_grad:
            impls["sklearn"] = lambda: loss.loss_gradient(y, x, loss_out=lo, gradient_out=go,
                                                          n_threads=threads)
        else:
            impls["sklearn"] = lambda: loss.loss(y, x, loss_out=lo, n_threads=threads)
    if torch is not None:
        impls["torch"] = lambda: torch_cross_entropy(x, t, with_grad)
    return impls


def bce_impls(z, y, threads, with_grad):
    out = np.empty_like(z)
    impls = {
        "xent_rs": (lambda: xr.binary_cross_entropy_with_logits(z, y, return_grad=True,
                                                                out=out)) if with_grad
        else (lambda: xr.binary_cross_entropy_with_logits(z, y)),
    }
    if with_grad:
        impls["xent_rs (fresh grad)"] = lambda: xr.binary_cross_entropy_with_logits(
            z, y, return_grad=True)
    impls["numpy"] = lambda: numpy_bce(z, y, with_grad)
    if sklearn is not None:
        loss = HalfBinomialLoss()
        zf, yf = z.reshape(-1), y.reshape(-1)
        lo, go = np.empty_like(zf), np.empty_like(zf)
        if with_grad:
            impls["sklearn"] = lambda: loss.loss_gradient(yf, zf, loss_out=lo, gradient_out=go,
                                                          n_threads=threads)
        else:
            impls["sklearn"] = lambda: loss.loss(yf, zf, loss_out=lo, n_threads=threads)
    if torch is not None:
        impls["torch"] = lambda: torch_bce(z, y, with_grad)
    return impls


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions, smaller set")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = ap.parse_args()
    fast_rep, slow_rep = (3, 1) if args.quick else (7, 3)

    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
                if ln.startswith("model name")), platform.processor())
    versions = [f"numpy {np.__version__}"]
    versions += [f"scikit-learn {sklearn.__version__}"] if sklearn else []
    versions += [f"torch {torch.__version__}"] if torch is not None else []
    print(f"# xent_rs speed table, {datetime.date.today()}, {cpu}, "
          f"{xr._core.simd_path()} path; {', '.join(versions)}")

    rng = np.random.default_rng(0)
    rows = []
    for threads in args.threads:
        xr.set_num_threads(threads)
        if torch is not None:
            torch.set_num_threads(threads)
        bw = copy_bandwidth(threads, fast_rep)
        print(f"# {threads} thread(s): copy bandwidth {bw / 1e9:.1f} GB/s (read + write)")
        problems = [("cce", s) for s in CCE_SHAPES] + [("bce", s) for s in BCE_SHAPES]
        if args.quick:
            problems = problems[:2] + problems[-1:]
        for kind, shape in problems:
            if kind == "cce":
                x = rng.standard_normal(shape, dtype=np.float32)
                t = rng.integers(0, shape[1], shape[0])
            else:
                x = rng.standard_normal(shape, dtype=np.float32)
                t = (rng.random(shape) < 0.3).astype(np.float32)
            for with_grad in (False, True):
                impls = (cce_impls if kind == "cce" else bce_impls)(x, t, threads, with_grad)
                bytes_per = {("cce", False): 4, ("cce", True): 8,
                             ("bce", False): 8, ("bce", True): 12}[kind, with_grad]
                floor = x.size * bytes_per / bw
                times = {name: best_time(fn, fast_rep if name.startswith("xent") else slow_rep)
                         for name, fn in impls.items()}
                base = {n: v for n, v in times.items() if not n.startswith("xent")}
                best_base = min(base.values())
                op = f"{kind} {'x'.join(map(str, shape))} {'loss+grad' if with_grad else 'loss'}"
                rows.append((threads, op, times, best_base, floor))
                if not args.markdown:
                    xs = times["xent_rs"]
                    others = "  ".join(f"{n} {v * 1e3:8.1f}" for n, v in times.items()
                                       if n != "xent_rs")
                    print(f"{threads}t {op:<28} xent_rs {xs * 1e3:7.1f} ms  "
                          f"vs best {best_base / xs:5.1f}x  floor x {xs / floor:4.1f}  "
                          f"| {others}")
    if args.markdown:
        names = sorted({n for r in rows for n in r[2]}, key=lambda n: (not n.startswith("xent"), n))
        print("| threads | operation | " + " | ".join(f"{n} (ms)" for n in names)
              + " | vs best baseline | xent_rs / floor |")
        print("|" + "---|" * (len(names) + 4))
        for threads, op, times, best_base, floor in rows:
            cells = " | ".join(f"{times[n] * 1e3:.1f}" if n in times else "–" for n in names)
            xs = times["xent_rs"]
            print(f"| {threads} | {op} | {cells} | {best_base / xs:.1f}x | {xs / floor:.1f} |")


if __name__ == "__main__":
    main()
