"""Ratios of the cross-entropy variants to plain ``xr.cross_entropy`` with gradient, measured
interleaved (plain and each variant called in turn, ``--reps`` rounds, medians), one
thread, float32, gradients into reused ``out=`` buffers: the figures of docs/losses.md's
Speed table. Interleaving keeps the ratios honest on a shared, loaded machine, where
pytest-benchmark's groups run minutes apart.

Run: ``PYTHONPATH=python .venv/bin/python benches/interleaved_family.py`` (options:
``--which softcap,energy,bce,sigmoid_focal`` (also ``focal``, ``poly1``, ``gce``), ``--shapes 100000x1000,8192x32000``,
``--scale 1`` for the logits' standard deviation, ``--reps 3``). To compare two builds,
run it once with each on ``PYTHONPATH``, back to back.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import xent_rs as xr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--which", default="softcap,energy,bce,sigmoid_focal")
    ap.add_argument("--shapes", default="100000x1000,8192x32000")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    xr.set_num_threads(1)
    which = args.which.split(",")
    for shape in args.shapes.split(","):
        n, k = (int(v) for v in shape.split("x"))
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, k), dtype=np.float32) * np.float32(args.scale)
        t = rng.integers(0, k, n)
        y = (rng.random((n, k)) < 0.3).astype(np.float32)
        out = np.zeros_like(x)
        h = n // 2

        def call(name):
            if name == "plain":
                return xr.cross_entropy(x, t, return_grad=True, out=out)
            if name == "softcap":
                return xr.cross_entropy(x, t, softcap=30.0, return_grad=True, out=out)
            if name == "energy":
                try:
                    return xr.energy_margin_loss(x[:h], x[h:], m_in=-7.0, m_out=-5.0,
                                                 return_grad=True, out_in=out[:h],
                                                 out_out=out[h:])
                except TypeError:  # a build without out_in=/out_out=
                    return xr.energy_margin_loss(x[:h], x[h:], m_in=-7.0, m_out=-5.0,
                                                 return_grad=True)
            if name == "bce":
                return xr.binary_cross_entropy_with_logits(x, y, return_grad=True, out=out)
            if name == "sigmoid_focal":
                return xr.sigmoid_focal_loss(x, y, reduction="mean", return_grad=True,
                                             out=out)
            if name == "focal":
                return xr.focal_loss(x, t, gamma=2.0, return_grad=True, out=out)
            if name == "poly1":
                return xr.poly1_cross_entropy(x, t, epsilon=1.0, return_grad=True, out=out)
            if name == "gce":
                return xr.generalized_cross_entropy(x, t, q=0.7, return_grad=True, out=out)
            raise ValueError(name)

        names = ["plain"] + which
        times = {w: [] for w in names}
        for w in names:
            call(w)  # warm-up
        for _ in range(args.reps):
            for w in names:
                t0 = time.perf_counter()
                call(w)
                times[w].append(time.perf_counter() - t0)
        med = {w: float(np.median(v)) for w, v in times.items()}
        cols = " ".join(f"{w}={med[w] * 1e3:.0f}ms({med[w] / med['plain']:.2f}x)"
                        for w in names)
        print(f"{n}x{k} {cols}", flush=True)


if __name__ == "__main__":
    main()
