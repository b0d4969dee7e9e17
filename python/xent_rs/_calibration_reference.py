"""Plain float64 NumPy definitions of the calibration metrics and diagnostics.

Written for clarity, not speed: every bin, class and pair is its own loop iteration, with the
bin membership spelled out as inequalities rather than computed by ``searchsorted``. The tests
check ``xent_rs.calibration`` against these; ``xent_rs.reference`` re-exports them.
Arguments are assumed valid (no checking).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "calibration_error",
    "reliability_curve",
    "brier_score",
    "brier_decomposition",
    "negative_log_likelihood",
    "temperature_objective",
    "fit_temperature",
    "energy_score",
    "loss_breakdown",
    "label_dependence",
    "debiased_calibration_error",
    "classwise_calibration_error",
    "smooth_calibration_error",
    "poisson_bootstrap_weights",
    "bootstrap_metric",
    "vector_scaling_objective",
]


def _softmax(z):
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _sigmoid(z):
    z = np.asarray(z, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -z))


def _probabilities(probs, from_logits):
    probs = np.asarray(probs)
    if from_logits:
        return _sigmoid(probs) if probs.ndim == 1 else _softmax(probs)
    return probs.astype(np.float64)


def _weights(sample_weight, n):
    if sample_weight is None:
        return np.ones(n)
    return np.asarray(sample_weight, dtype=np.float64)


def _confidence_and_outcome(probs, labels, from_logits):
    """Binary: (p(positive), label). Multiclass: (max probability, first argmax == label)."""
    p = _probabilities(probs, from_logits)
    labels = np.asarray(labels).astype(np.int64)
    if p.ndim == 1:
        return p, labels.astype(np.float64)
    confidence = np.empty(len(p))
    outcome = np.empty(len(p))
    for i in range(len(p)):
        best = int(np.argmax(p[i]))
        confidence[i] = p[i, best]
        outcome[i] = 1.0 if best == labels[i] else 0.0
    return confidence, outcome


def _bin_edges(confidence, n_bins, strategy):
    if strategy == "uniform":
        return np.linspace(0.0, 1.0, n_bins + 1)
    return np.percentile(confidence, np.linspace(0.0, 100.0, n_bins + 1))


def _bin_masks(values, edges, convention):
    """One boolean mask per bin.

    "right": bin b is (e_b, e_{b+1}]; the first bin has no lower limit and the last no upper
    limit (it holds everything above e_{n-1}).
    "torchmetrics": bin b is [e_b, e_{b+1}) for b < n, plus bin n holding values >= e_n.
    """
    n_bins = len(edges) - 1
    masks = []
    if convention == "right":
        for b in range(n_bins):
            above = values > edges[b] if b > 0 else np.ones(values.shape, dtype=bool)
            below = values <= edges[b + 1] if b < n_bins - 1 else np.ones(values.shape, bool)
            masks.append(above & below)
    else:
        for b in range(n_bins):
            masks.append((values >= edges[b]) & (values < edges[b + 1]))
        masks.append(values >= edges[n_bins])
    return masks


def reliability_curve(probs, labels, *, n_bins=15, strategy="uniform", convention="right",
                      from_logits=False, sample_weight=None):
    """(edges, weight per bin, mean confidence per bin, mean outcome per bin); NaN if empty.

    For "torchmetrics" the returned edges get a repeated last edge for the extra bin.
    """
    confidence, outcome = _confidence_and_outcome(probs, labels, from_logits)
    w = _weights(sample_weight, len(confidence))
    edges = _bin_edges(confidence, n_bins, strategy)
    counts, mean_conf, accuracy = [], [], []
    for mask in _bin_masks(confidence, edges, convention):
        total = w[mask].sum()
        counts.append(total)
        if total > 0:
            mean_conf.append((w[mask] * confidence[mask]).sum() / total)
            accuracy.append((w[mask] * outcome[mask]).sum() / total)
        else:
            mean_conf.append(np.nan)
            accuracy.append(np.nan)
    if convention == "torchmetrics":
        edges = np.append(edges, edges[-1])
    return edges, np.array(counts), np.array(mean_conf), np.array(accuracy)


def calibration_error(probs, labels, *, n_bins=15, norm="l1", strategy="uniform",
                      convention="right", from_logits=False, sample_weight=None):
    """ECE (l1), RMS calibration error (l2) or MCE (max, over non-empty bins)."""
    _, counts, mean_conf, accuracy = reliability_curve(
        probs, labels, n_bins=n_bins, strategy=strategy, convention=convention,
        from_logits=from_logits, sample_weight=sample_weight)
    total = counts.sum()
    l1 = l2 = 0.0
    worst = 0.0
    for n_b, c_b, a_b in zip(counts, mean_conf, accuracy):
        if n_b > 0:
            gap = abs(a_b - c_b)
            l1 += n_b / total * gap
            l2 += n_b / total * gap ** 2
            worst = max(worst, gap)
    return {"l1": l1, "l2": math.sqrt(l2), "max": worst}[norm]


def _one_hot(labels, k):
    y = np.zeros((len(labels), k))
    for i, label in enumerate(labels):
        y[i, int(label)] = 1.0
    return y


def brier_score(probs, labels, *, from_logits=False, sample_weight=None):
    """Weighted mean of sum_k (p_k - y_k)^2, or of (p - y)^2 for binary input."""
    p = _probabilities(probs, from_logits)
    labels = np.asarray(labels)
    w = _weights(sample_weight, len(p))
    if p.ndim == 1:
        per_row = (p - labels) ** 2
    else:
        per_row = ((p - _one_hot(labels, p.shape[1])) ** 2).sum(axis=1)
    return float((w * per_row).sum() / w.sum())


def brier_decomposition(probs, labels, *, n_bins=15, strategy="uniform", convention="right",
                        from_logits=False, sample_weight=None):
    """Murphy's (reliability, resolution, uncertainty, brier), one-vs-rest summed over classes."""
    p = _probabilities(probs, from_logits)
    labels = np.asarray(labels)
    w = _weights(sample_weight, len(p))
    if p.ndim == 1:
        forecasts, outcomes = p[:, None], np.asarray(labels, dtype=np.float64)[:, None]
    else:
        forecasts, outcomes = p, _one_hot(labels, p.shape[1])
    total = w.sum()
    reliability = resolution = uncertainty = 0.0
    for k in range(forecasts.shape[1]):
        f, o = forecasts[:, k], outcomes[:, k]
        base = (w * o).sum() / total
        uncertainty += base * (1.0 - base)
        edges = _bin_edges(f, n_bins, strategy)
        for mask in _bin_masks(f, edges, convention):
            n_b = w[mask].sum()
            if n_b > 0:
                f_b = (w[mask] * f[mask]).sum() / n_b
                o_b = (w[mask] * o[mask]).sum() / n_b
                reliability += n_b / total * (f_b - o_b) ** 2
                resolution += n_b / total * (o_b - base) ** 2
    brier = brier_score(probs, labels, from_logits=from_logits, sample_weight=sample_weight)
    return {"reliability": reliability, "resolution": resolution,
            "uncertainty": uncertainty, "brier": brier}


def negative_log_likelihood(probs, labels, *, from_logits=False, sample_weight=None):
    """Weighted mean of -log p(label) (binary: -log p or -log(1 - p))."""
    p = _probabilities(probs, from_logits)
    labels = np.asarray(labels).astype(np.int64)
    w = _weights(sample_weight, len(p))
    total = 0.0
    for i in range(len(p)):
        if w[i] == 0:
            continue  # a sample of weight zero is left out, even where its loss is infinite
        if p.ndim == 1:
            q = p[i] if labels[i] == 1 else 1.0 - p[i]
        else:
            q = p[i, labels[i]]
        total += w[i] * (-math.log(q) if q > 0 else math.inf)
    return float(total / w.sum())


def temperature_objective(logits, labels, beta, weight=None):
    """(mean cross-entropy of beta * logits, its derivative in beta); class-weighted mean."""
    z = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64)
    w = np.ones(z.shape[1]) if weight is None else np.asarray(weight, dtype=np.float64)
    loss_sum = grad_sum = weight_sum = 0.0
    for i in range(len(z)):
        # A masked class (-inf) stays masked at every beta, beta = 0 included.
        row = np.array([beta * v if np.isfinite(v) else -math.inf for v in z[i]])
        top = row.max()
        p = np.exp(row - top)
        p /= p.sum()
        loss = top + math.log(np.exp(row - top).sum()) - row[labels[i]]
        expected = sum(p_k * z_k for p_k, z_k in zip(p, z[i]) if np.isfinite(z_k))
        wi = w[labels[i]]
        loss_sum += wi * loss
        grad_sum += wi * (expected - z[i, labels[i]])
        weight_sum += wi
    return loss_sum / weight_sum, grad_sum / weight_sum


def fit_temperature(logits, labels, *, weight=None):
    """T minimising the mean cross-entropy of logits / T: a log-spaced grid, then golden section.

    Binary (N,) logits are treated as the two-class logits [0, z]. When every weighted row's
    unmasked logits are equal the loss is the same for every T, and 1.0 is returned.
    """
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim == 1:
        z = np.stack([np.zeros_like(z), z], axis=1)
    labels = np.asarray(labels).astype(np.int64)
    rows = [z[i] for i in range(len(z)) if weight is None or weight[labels[i]] > 0]
    if all(len(set(row[np.isfinite(row)].tolist())) == 1 for row in rows):
        return 1.0

    def loss(log_t):
        return temperature_objective(z, labels, math.exp(-log_t), weight)[0]

    grid = np.linspace(math.log(1e-3), math.log(1e3), 121)
    values = [loss(g) for g in grid]
    best = int(np.argmin(values))
    a = grid[max(best - 1, 0)]
    b = grid[min(best + 1, len(grid) - 1)]
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = loss(c), loss(d)
    while b - a > 1e-10:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = loss(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = loss(d)
    return math.exp((a + b) / 2.0)


def energy_score(logits, *, temperature=1.0):
    """-T * logsumexp(logits / T) over the last axis, float64."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    flat = z.reshape(-1, z.shape[-1])
    out = np.empty(len(flat))
    for i, row in enumerate(flat):
        top = row.max()
        if np.isneginf(top):
            out[i] = math.inf
        else:
            out[i] = -temperature * (top + math.log(np.exp(row - top).sum()))
    return out.reshape(z.shape[:-1])


def loss_breakdown(logits, labels, *, threshold=0.01):
    """Per-class mean loss, count, accuracy and loss share; confidently wrong rows' share."""
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim == 1:
        z = np.stack([np.zeros_like(z), z], axis=1)
    labels = np.asarray(labels).astype(np.int64)
    k = z.shape[1]
    p = _softmax(z)
    losses = np.empty(len(z))
    for i in range(len(z)):
        top = z[i].max()
        losses[i] = top + math.log(np.exp(z[i] - top).sum()) - z[i, labels[i]]
    correct = np.array([int(np.argmax(z[i])) == labels[i] for i in range(len(z))])
    total = losses.sum()
    class_loss, class_count, class_acc, share = [], [], [], []
    for c in range(k):
        mask = labels == c
        class_count.append(int(mask.sum()))
        class_loss.append(losses[mask].mean() if mask.any() else np.nan)
        class_acc.append(correct[mask].mean() if mask.any() else np.nan)
        share.append(losses[mask].sum() / total if total > 0 else np.nan)
    wrong = np.array([p[i, labels[i]] < threshold for i in range(len(z))])
    return {
        "class_loss": np.array(class_loss),
        "class_count": np.array(class_count),
        "class_accuracy": np.array(class_acc),
        "class_loss_share": np.array(share),
        "mean_loss": float(losses.mean()),
        "accuracy": float(correct.mean()),
        "threshold": float(threshold),
        "confident_wrong_count": int(wrong.sum()),
        "confident_wrong_share": float(losses[wrong].sum() / total) if total > 0 else np.nan,
    }


def label_dependence(targets):
    """Pairwise mutual information (nats) between 0/1 label columns, from a 2x2 table per pair."""
    t = np.asarray(targets).astype(np.int64)
    n, n_labels = t.shape
    out = np.zeros((n_labels, n_labels))
    for a in range(n_labels):
        for b in range(n_labels):
            joint = np.zeros((2, 2))
            for i in range(n):
                joint[t[i, a], t[i, b]] += 1.0
            joint /= n
            pa, pb = joint.sum(axis=1), joint.sum(axis=0)
            mi = 0.0
            for u in range(2):
                for v in range(2):
                    if joint[u, v] > 0:
                        mi += joint[u, v] * math.log(joint[u, v] / (pa[u] * pb[v]))
            out[a, b] = max(mi, 0.0)
    return out


# --- calibration beyond ECE (issue 15) ---

def debiased_calibration_error(probs, labels, *, n_bins=15, strategy="uniform",
                               convention="right", from_logits=False, sample_weight=None):
    """Kumar et al.'s debiased L2 error: sqrt(max(sum_b n_b/N (gap_b^2 - a_b(1 - a_b) /
    (n_b - 1)), 0)), a_b the bin's accuracy; n_b the bin's weight over the mean weight of the
    weighted rows (its count when unweighted); bins with n_b <= 1 contribute 0."""
    confidence, _ = _confidence_and_outcome(probs, labels, from_logits)
    w = _weights(sample_weight, len(confidence))
    per_weight = np.count_nonzero(w) / w.sum()
    _, counts, mean_conf, accuracy = reliability_curve(
        probs, labels, n_bins=n_bins, strategy=strategy, convention=convention,
        from_logits=from_logits, sample_weight=sample_weight)
    total = counts.sum()
    value = 0.0
    for n_b, c_b, a_b in zip(counts, mean_conf, accuracy):
        size = n_b * per_weight
        if n_b > 0 and size > 1:
            value += n_b / total * ((a_b - c_b) ** 2 - a_b * (1.0 - a_b) / (size - 1.0))
    return math.sqrt(max(value, 0.0))


def classwise_calibration_error(probs, labels, *, n_bins=15, norm="l1", strategy="uniform",
                                convention="right", from_logits=False, sample_weight=None):
    """Mean over classes of calibration_error of p_k against [y = k] (binary: (1-p, p))."""
    p = _probabilities(probs, from_logits)
    labels = np.asarray(labels).astype(np.int64)
    if p.ndim == 1:
        p = np.stack([1.0 - p, p], axis=1)
    errors = []
    for k in range(p.shape[1]):
        outcome = (labels == k).astype(np.int64)
        errors.append(calibration_error(p[:, k], outcome, n_bins=n_bins, norm=norm,
                                        strategy=strategy, convention=convention,
                                        sample_weight=sample_weight))
    return float(np.mean(errors))


def _reflected_kernel(t, f, sigma):
    """phi(t - f) + phi(t + f) + phi(t - 2 + f): the Gaussian reflected once at 0 and 1, cut
    to |d| <= 1/2 (relplot's kernel support)."""
    def phi(d):
        g = np.exp(-0.5 * (d / sigma) ** 2) / (math.sqrt(2 * math.pi) * sigma)
        return np.where(np.abs(d) <= 0.5 + 1e-12, g, 0.0)
    return phi(t - f) + phi(t + f) + phi(t - 2.0 + f)


def smooth_calibration_error(probs, labels, *, from_logits=False, sample_weight=None,
                             mesh=2001):
    """Smooth ECE at the fixed point sigma = smECE(sigma), with the kernel evaluated exactly
    at every sample and mesh point (Simpson's rule on ``mesh`` points, bisection to 1e-8)."""
    f, y = _confidence_and_outcome(probs, labels, from_logits)
    w = _weights(sample_weight, len(f))
    t = np.linspace(0.0, 1.0, mesh)
    simpson = np.ones(mesh)
    simpson[1:-1:2], simpson[2:-1:2] = 4.0, 2.0

    def at(sigma):
        num = np.zeros(mesh)
        den = np.zeros(mesh)
        for start in range(0, len(f), 512):
            fk, rk = f[start:start + 512], (w * (f - y))[start:start + 512]
            k = _reflected_kernel(t[:, None], fk[None, :], sigma)
            num += k @ rk
            den += k @ w[start:start + 512]
        return float((simpson * np.abs(num)).sum() / (simpson * den).sum())

    lo, hi = 1e-3, 1.0
    if at(lo) <= lo:
        return at(lo)
    while hi - lo > 1e-8:
        mid = (lo + hi) / 2.0
        if at(mid) > mid:
            lo = mid
        else:
            hi = mid
    return at(hi)


def _lowbias32(x):
    x = np.asarray(x, dtype=np.uint64) & 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def _splitmix64(z):
    mask = (1 << 64) - 1
    z = (z + 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)


def poisson_bootstrap_weights(bins, n_resamples, seed):
    """The core's bootstrap weights, (n_resamples, N) float64, from its documented scheme.

    The t-th sample (in input order) of bin b in resample r: q = 8 floor(t/16) + t mod 8,
    h = L(L(q ^ k1 ^ (0x9E3779B9 b)) ^ k2) with L Wellons' lowbias32 and (k1, k2) the halves
    of SplitMix64(seed + (r + 1) 0x9E3779B97F4A7C15); u the low 16 bits of h when
    t mod 16 < 8, else the high ones; the weight is #{k in 1..8 : u < round(2^16 P(X >= k))},
    X ~ Poisson(1).
    """
    bins = np.asarray(bins).astype(np.int64)
    t = np.zeros(len(bins), dtype=np.int64)
    seen = {}
    for i, b in enumerate(bins):
        t[i] = seen.get(int(b), 0)
        seen[int(b)] = t[i] + 1
    q = 8 * (t // 16) + t % 8
    high = (t % 16) >= 8
    tail, below, term = [], 0.0, math.exp(-1.0)
    for k in range(1, 9):
        below += term
        term /= k
        tail.append(round((1.0 - below) * 65536.0))
    out = np.zeros((n_resamples, len(bins)))
    bin_key = (bins.astype(np.uint64) * 0x9E3779B9) & 0xFFFFFFFF
    for r in range(n_resamples):
        z = _splitmix64((seed + (r + 1) * 0x9E3779B97F4A7C15) & ((1 << 64) - 1))
        k1, k2 = z & 0xFFFFFFFF, z >> 32
        h = _lowbias32(_lowbias32(q.astype(np.uint64) ^ k1 ^ bin_key) ^ k2)
        u = np.where(high, h >> 16, h & 0xFFFF)
        out[r] = sum((u < tk).astype(np.float64) for tk in tail)
    return out


def bootstrap_metric(metric, probs, labels, weights, *, n_bins=15, strategy="uniform",
                     convention="right", from_logits=False, sample_weight=None):
    """The metric of each resample, given its (R, N) weights: the weights times the sample
    weights fed to the plain metrics (bins fixed at the data's own edges)."""
    base = _weights(sample_weight, len(np.asarray(labels)))
    conf, _ = _confidence_and_outcome(probs, labels, from_logits)
    edges = _bin_edges(conf, n_bins, strategy)
    out = []
    for omega in np.asarray(weights, dtype=np.float64):
        w = omega * base
        if w.sum() == 0:
            out.append(math.nan)
        elif metric in ("ece", "rms", "mce"):
            norm = {"ece": "l1", "rms": "l2", "mce": "max"}[metric]
            out.append(_error_at_edges(conf, probs, labels, from_logits, edges, convention,
                                       w, norm))
        elif metric == "brier":
            out.append(brier_score(probs, labels, from_logits=from_logits, sample_weight=w))
        elif metric == "nll":
            out.append(negative_log_likelihood(probs, labels, from_logits=from_logits,
                                               sample_weight=w))
        else:
            p = _probabilities(probs, from_logits)
            y = np.asarray(labels).astype(np.int64)
            hit = (p > 0.5) == (y == 1) if p.ndim == 1 else p.argmax(axis=1) == y
            out.append(float((w * hit).sum() / w.sum()))
    return np.array(out)


def _error_at_edges(conf, probs, labels, from_logits, edges, convention, w, norm):
    _, outcome = _confidence_and_outcome(probs, labels, from_logits)
    total = w.sum()
    l1 = l2 = worst = 0.0
    for mask in _bin_masks(conf, edges, convention):
        n_b = w[mask].sum()
        if n_b > 0:
            gap = abs((w[mask] * outcome[mask]).sum() / n_b - (w[mask] * conf[mask]).sum() / n_b)
            l1 += n_b / total * gap
            l2 += n_b / total * gap ** 2
            worst = max(worst, gap)
    return {"l1": l1, "l2": math.sqrt(l2), "max": worst}[norm]


def vector_scaling_objective(logits, labels, w, b):
    """(mean cross-entropy of logits * w + b, its gradient in w, its gradient in b)."""
    z = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64)
    n, k = z.shape
    loss, gw, gb = 0.0, np.zeros(k), np.zeros(k)
    for i in range(n):
        s = z[i] * w + b
        top = s.max()
        e = np.exp(s - top)
        p = e / e.sum()
        loss += top + math.log(e.sum()) - s[labels[i]]
        d = p.copy()
        d[labels[i]] -= 1.0
        gw += d * z[i]
        gb += d
    return loss / n, gw / n, gb / n
