"""Largest relative error of xent_rs's float32 per-row losses against the float64 reference,
over random and adversarial inputs (prints one line per case and the overall maximum).

Run: ``python benches/accuracy_report.py`` (uses the instruction-set path in use; set
XENT_RS_ISA to force another).
"""

from __future__ import annotations

import numpy as np

import xent_rs as xr
from xent_rs import reference as ref


def cases(rng):
    for k in (2, 10, 100, 1_000, 32_000, 256_000):
        n = max(4, min(2_000, 4_000_000 // k))
        for scale in (1.0, 3.0, 30.0, 1e4):
            x = (rng.standard_normal((n, k)) * scale).astype(np.float32)
            t = rng.integers(0, k, n)
            t[: n // 2] = x[: n // 2].argmax(axis=1)  # confident, correct rows: tiny losses
            yield f"K={k:<7} scale={scale:<7g}", x, t


def main():
    rng = np.random.default_rng(0)
    worst = 0.0
    print(f"instruction set: {xr._core.simd_path()}")
    for name, x, t in cases(rng):
        got = xr.cross_entropy(x, t, reduction="none").astype(np.float64)
        exact = ref.cross_entropy(x, t, reduction="none")
        normal = exact >= np.finfo(np.float32).tiny  # exact value is a normal float32
        rel = np.abs(got[normal] - exact[normal]) / exact[normal]
        r = float(rel.max()) if rel.size else 0.0
        worst = max(worst, r)
        print(f"{name}  rows={normal.sum():5d}  max rel err {r:.2e}")
    print(f"largest float32 per-row relative error: {worst:.2e}")


if __name__ == "__main__":
    main()
