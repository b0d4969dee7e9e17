"""xent_rs demo: softmax regression on scikit-learn's bundled digits, trained with xent_rs
gradients, then the speed of the fused kernel against the plain-NumPy reference."""

from __future__ import annotations

import time

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import xent_rs as xr
from xent_rs import reference


def train(epochs=30, lr=0.5, batch=128, weight_decay=1e-4, seed=0):
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=seed,
                                              stratify=y)
    rng = np.random.default_rng(seed)
    k = 10
    w = np.zeros((x.shape[1], k), dtype=np.float32)
    b = np.zeros(k, dtype=np.float32)
    grad_buf = np.empty((batch, k), dtype=np.float32)
    print(f"softmax regression on digits: {len(x_tr)} train / {len(x_te)} test images, "
          f"{x.shape[1]} features, {k} classes")
    print(f"{'epoch':>5} {'train loss':>11} {'test loss':>10} {'test acc':>9}")
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(x_tr))
        for start in range(0, len(order), batch):
            idx = order[start:start + batch]
            logits = x_tr[idx] @ w + b
            out = grad_buf[: len(idx)]
            _, g = xr.cross_entropy(logits, y_tr[idx], return_grad=True,
                                    label_smoothing=0.05, out=out)
            w -= lr * (x_tr[idx].T @ g + weight_decay * w)
            b -= lr * g.sum(axis=0)
        train_loss = xr.cross_entropy(x_tr @ w + b, y_tr)
        test_logits = x_te @ w + b
        test_loss = xr.cross_entropy(test_logits, y_te)
        acc = np.mean(np.argmax(test_logits, axis=1) == y_te)
        if epoch <= 3 or epoch % 5 == 0:
            print(f"{epoch:>5} {train_loss:>11.4f} {test_loss:>10.4f} {acc:>9.2%}")
    return w, b, (x_te, y_te)


def best_of(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def speed(n=100_000, k=1_000):
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((n, k), dtype=np.float32)
    labels = rng.integers(0, k, n)
    out = np.empty_like(logits)
    t_fast = best_of(lambda: xr.cross_entropy(logits, labels, return_grad=True, out=out), 5)
    t_ref = best_of(lambda: reference.cross_entropy(logits, labels, return_grad=True), 2)
    loss_fast = float(xr.cross_entropy(logits, labels))
    loss_ref = float(reference.cross_entropy(logits, labels))
    print(f"\ncross_entropy loss+gradient, float32 ({n:,} x {k:,}), "
          f"{xr.get_num_threads()} thread(s):")
    print(f"  xent_rs:          {t_fast * 1e3:9.1f} ms")
    print(f"  NumPy reference:  {t_ref * 1e3:9.1f} ms   ({t_ref / t_fast:.1f}x slower)")
    print(f"  loss {loss_fast:.7f} vs reference {loss_ref:.7f} "
          f"(relative difference {abs(loss_fast - loss_ref) / loss_ref:.1e})")


if __name__ == "__main__":
    train()
    speed()
