"""xent_rs demo: softmax regression on scikit-learn's bundled digits, trained with xent_rs
gradients; then its calibration before and after temperature scaling (with a reliability
diagram written to demo_out/reliability.png), and the speed of the fused kernel against a
fast float32 NumPy implementation, PyTorch (when installed) and the float64 reference, all
timed in the same run."""

from __future__ import annotations

import time

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import xent_rs as xr
from xent_rs import calibration as cal
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


def calibrate(w, b, held_out, out_dir="demo_out"):
    """Fit a temperature on one half of the held-out images, score the other half."""
    x, y = held_out
    half = len(x) // 2
    fit_logits, eval_logits = x[:half] @ w + b, x[half:] @ w + b
    fit_y, eval_y = y[:half], y[half:]
    t = cal.fit_temperature(fit_logits, fit_y)
    print(f"\ncalibration on {len(eval_y)} held-out images (temperature fitted on {half} "
          f"others): T = {t:.3f}")
    print(f"{'':>20} {'ECE':>7} {'MCE':>7} {'Brier':>7} {'NLL':>7} {'acc':>7}")
    for name, logits in (("before scaling", eval_logits), ("after scaling", eval_logits / t)):
        ece = cal.calibration_error(logits, eval_y, n_bins=10, from_logits=True)
        mce = cal.calibration_error(logits, eval_y, n_bins=10, norm="max", from_logits=True)
        brier = cal.brier_score(logits, eval_y, from_logits=True)
        nll = float(xr.cross_entropy(logits, eval_y))
        acc = np.mean(np.argmax(logits, axis=1) == eval_y)
        print(f"{name:>20} {ece:7.4f} {mce:7.4f} {brier:7.4f} {nll:7.4f} {acc:7.2%}")
    beyond_ece(fit_logits, fit_y, eval_logits, eval_y, t)
    try:
        import matplotlib
    except ImportError:
        print("(matplotlib not installed: no reliability diagram)")
        return
    matplotlib.use("Agg")
    import os

    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "reliability.png")
    diagram = cal.reliability_diagram(eval_logits / t, eval_y, n_bins=10, from_logits=True)
    diagram.plot(path=path)
    print(f"reliability diagram (after scaling) written to {path}")


def beyond_ece(fit_logits, fit_y, eval_logits, eval_y, t, n_resamples=1000):
    """The metrics beyond ECE, with 95% bootstrap intervals, before and after temperature
    scaling and after vector scaling (both fitted on the other half)."""
    w, b = cal.fit_vector_scaling(fit_logits, fit_y)
    print(f"\nbeyond ECE (95% intervals: {n_resamples} Poisson-bootstrap resamples, seed 0)")
    print(f"{'':>20} {'ECE [95% interval]':>23} {'Brier [95% interval]':>23} "
          f"{'classwise':>9} {'debiased':>8} {'smooth':>7}")
    for name, logits in (("before scaling", eval_logits), ("temperature scaling", eval_logits / t),
                         ("vector scaling", eval_logits * w + b)):
        e, e_lo, e_hi = cal.confidence_interval("ece", logits, eval_y, n_bins=10,
                                                from_logits=True, n_resamples=n_resamples)
        s, s_lo, s_hi = cal.confidence_interval("brier", logits, eval_y, from_logits=True,
                                                n_resamples=n_resamples)
        cw = cal.classwise_calibration_error(logits, eval_y, n_bins=10, from_logits=True)
        deb = cal.calibration_error(logits, eval_y, n_bins=10, norm="l2", debias=True,
                                    from_logits=True)
        smooth = cal.smooth_calibration_error(logits, eval_y, from_logits=True)
        print(f"{name:>20} {e:7.4f} [{e_lo:.4f}, {e_hi:.4f}] {s:7.4f} [{s_lo:.4f}, {s_hi:.4f}] "
              f"{cw:9.4f} {deb:8.4f} {smooth:7.4f}")


def best_of(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def numpy_loss_and_grad(logits, labels, buf):
    """What a careful NumPy user writes: vectorised, stable (subtract the row maximum), all in
    float32, in place in a preallocated buffer."""
    n = len(labels)
    rows = np.arange(n)
    m = logits.max(axis=1, keepdims=True)
    np.subtract(logits, m, out=buf)
    picked = buf[rows, labels]                       # x_t − m
    np.exp(buf, out=buf)
    s = buf.sum(axis=1, keepdims=True)
    loss = np.mean(np.log(s[:, 0]) - picked)
    buf /= s * np.float32(n)                          # softmax / n
    buf[rows, labels] -= np.float32(1.0 / n)
    return loss, buf


def torch_loss_and_grad(logits, labels):
    """torch.nn.functional.cross_entropy forward and backward on CPU (None: no PyTorch)."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    torch.set_num_threads(xr.get_num_threads())
    x = torch.from_numpy(logits)
    t = torch.from_numpy(labels)

    def run():
        xt = x.detach().requires_grad_(True)
        loss = F.cross_entropy(xt, t)
        loss.backward()
        return float(loss.detach()), xt.grad

    return run


def reference_loss(logits, labels, rows=10_000):
    """The float64 reference's mean loss, a slice of rows at a time (little memory)."""
    total = sum(float(reference.cross_entropy(logits[i:i + rows], labels[i:i + rows],
                                              reduction="sum"))
                for i in range(0, len(labels), rows))
    return total / len(labels)


def speed(n=100_000, k=1_000, reference_rows=10_000):
    """Loss + gradient of a float32 (n, k) batch, each implementation timed in this run
    (best of several), each loss checked against the float64 reference. The reference
    itself is timed on its first ``reference_rows`` rows and scaled to n (it is linear in
    the rows; on the whole batch it would take longer than the rest of the demo)."""
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((n, k), dtype=np.float32)
    labels = rng.integers(0, k, n)
    out = np.empty_like(logits)
    buf = np.empty_like(logits)
    timings = {"xent_rs": best_of(
        lambda: xr.cross_entropy(logits, labels, return_grad=True, out=out), 5)}
    losses = {"xent_rs": float(xr.cross_entropy(logits, labels))}
    timings["NumPy float32"] = best_of(lambda: numpy_loss_and_grad(logits, labels, buf), 3)
    losses["NumPy float32"] = float(numpy_loss_and_grad(logits, labels, buf)[0])
    torch_run = torch_loss_and_grad(logits, labels)
    if torch_run is not None:
        timings["PyTorch CPU"] = best_of(torch_run, 3)
        losses["PyTorch CPU"] = torch_run()[0]
    part = slice(0, reference_rows)
    timings["NumPy float64 reference"] = best_of(
        lambda: reference.cross_entropy(logits[part], labels[part], return_grad=True),
        1) * n / reference_rows
    exact = losses["NumPy float64 reference"] = reference_loss(logits, labels)
    print(f"\ncross_entropy loss + gradient, float32 ({n:,} x {k:,}), "
          f"{xr.get_num_threads()} thread(s), best time in this run:")
    t_fast = timings["xent_rs"]
    for name, t in timings.items():
        ratio = "" if name == "xent_rs" else f"   xent_rs {t / t_fast:5.1f}x faster"
        err = abs(losses[name] - exact) / exact
        print(f"  {name:<24} {t * 1e3:8.1f} ms   loss rel. error {err:.1e}{ratio}")
    print(f"  (the reference timed on {reference_rows:,} rows, scaled to {n:,})")
    if torch_run is None:
        print("  (PyTorch not installed: not compared; pip install torch to compare)")


if __name__ == "__main__":
    w, b, held_out = train()
    calibrate(w, b, held_out)
    speed()
