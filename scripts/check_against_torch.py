"""Compares xent_rs with PyTorch CPU on every parameter combination that both support.

Not part of CI (PyTorch is a multi-GB download): run it by hand where torch is importable,
e.g. ``python scripts/check_against_torch.py``. Prints the largest relative difference of each
case and exits non-zero if any exceeds the tolerance.
"""

from __future__ import annotations

import itertools
import sys

import numpy as np
import torch
import torch.nn.functional as F

import xent_rs as xr

torch.set_default_dtype(torch.float64)
rng = np.random.default_rng(0)
worst = []


def rel(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    same_nonfinite = np.array_equal(np.isfinite(a), np.isfinite(b))
    if not same_nonfinite:
        return np.inf
    fin = np.isfinite(a)
    if not fin.any():
        return 0.0
    return float(np.max(np.abs(a[fin] - b[fin]) / np.maximum(np.abs(b[fin]), 1e-12)))


def record(name, *pairs):
    r = max(rel(a, b) for a, b in pairs)
    worst.append((r, name))


n, k = 29, 7
x = rng.standard_normal((n, k)) * 3
x[4, 2] = -np.inf
idx = rng.integers(0, k, n)
idx[idx == 2] = 0
idx[[3, 9]] = -100
probs = rng.random((n, k))
probs[:, 2] = 0
probs /= probs.sum(1, keepdims=True)
for kind, weighted, eps, red in itertools.product(["index", "probs"], [False, True],
                                                  [0.0, 0.2], ["mean", "sum", "none"]):
    w = rng.random(k) + 0.1 if weighted else None
    tgt = idx if kind == "index" else probs
    # With probability targets PyTorch multiplies 0 · (−inf) for a masked class and returns
    # NaN; xent_rs skips zero-mass terms (API.md), so compare those on finite logits only.
    xs = x if kind == "index" else np.where(np.isfinite(x), x, -30.0)
    xt = torch.tensor(xs, requires_grad=True)
    lt = F.cross_entropy(xt, torch.tensor(tgt), weight=None if w is None else torch.tensor(w),
                         label_smoothing=eps, reduction=red)
    lt.sum().backward()
    loss, grad = xr.cross_entropy(xs, tgt, weight=w, label_smoothing=eps, reduction=red,
                                  return_grad=True)
    record(f"cross_entropy {kind} w={weighted} eps={eps} {red}",
           (loss, lt.detach().numpy()), (grad, xt.grad.numpy()))

z = rng.standard_normal((13, 5)) * 4
y = rng.random((13, 5))
for wk, pwk, red in itertools.product([None, "full", "last"], [None, "last"],
                                      ["mean", "sum", "none"]):
    w = {None: None, "full": rng.random((13, 5)), "last": rng.random(5)}[wk]
    pw = None if pwk is None else rng.random(5) * 3
    zt = torch.tensor(z, requires_grad=True)
    lt = F.binary_cross_entropy_with_logits(
        zt, torch.tensor(y), weight=None if w is None else torch.tensor(w),
        pos_weight=None if pw is None else torch.tensor(pw), reduction=red)
    lt.sum().backward()
    loss, grad = xr.binary_cross_entropy_with_logits(z, y, weight=w, pos_weight=pw,
                                                     reduction=red, return_grad=True)
    record(f"bce weight={wk} pos_weight={pwk} {red}", (loss, lt.detach().numpy()),
           (grad, zt.grad.numpy()))

for fn, tfn in ((xr.softmax, torch.softmax), (xr.log_softmax, torch.log_softmax)):
    record(fn.__name__, (fn(x), tfn(torch.tensor(x), -1).numpy()))
record("logsumexp", (xr.logsumexp(x), torch.logsumexp(torch.tensor(x), -1).numpy()))

bad = [(r, name) for r, name in worst if r > 1e-12]
for r, name in sorted(worst, reverse=True)[:5]:
    print(f"{r:9.2e}  {name}")
print(f"{len(worst)} cases, {len(bad)} above 1e-12 (torch {torch.__version__})")
sys.exit(1 if bad else 0)
