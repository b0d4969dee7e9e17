"""Straightforward implementations that a NumPy (or PyTorch) user would write, to time
xent_rs against in the same run."""

from __future__ import annotations

import numpy as np

try:  # optional: only timed when importable, never a dependency
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover
    torch = None


def numpy_cross_entropy(x, t, with_grad):
    n = x.shape[0]
    m = x.max(axis=1, keepdims=True)
    e = np.exp(x - m)
    s = e.sum(axis=1, keepdims=True)
    rows = np.arange(n)
    loss = np.mean(m[:, 0] + np.log(s[:, 0]) - x[rows, t])
    if not with_grad:
        return loss
    g = e / s
    g[rows, t] -= 1
    g /= n
    return loss, g


def numpy_bce(z, y, with_grad):
    loss = np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z))))
    if not with_grad:
        return loss
    return loss, (1 / (1 + np.exp(-z)) - y) / z.size


def torch_cross_entropy(x, t, with_grad):
    xt = torch.from_numpy(x).requires_grad_(with_grad)
    loss = F.cross_entropy(xt, torch.from_numpy(t))
    if not with_grad:
        return loss.item()
    loss.backward()
    return loss.item(), xt.grad


def torch_bce(z, y, with_grad):
    zt = torch.from_numpy(z).requires_grad_(with_grad)
    loss = F.binary_cross_entropy_with_logits(zt, torch.from_numpy(y))
    if not with_grad:
        return loss.item()
    loss.backward()
    return loss.item(), zt.grad
