"""The cross-entropy variants against the peer libraries the contract names (each test skips
when its peer is absent): torchvision's ``ops.sigmoid_focal_loss``, optax's
``losses.poly_loss_cross_entropy`` and Keras 3's ``CategoricalFocalCrossentropy`` (compared
where its clipping of ``p`` to ``[1e-7, 1 − 1e-7]`` is inactive).

Checked with torchvision 0.29.2 (on torch 2.15.0), optax 0.2.8 (jax 0.10.2) and Keras 3.15.1
(numpy backend)."""

from __future__ import annotations

import os

import numpy as np
import pytest

import xent_rs as xr


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


# ------------------------------------------------------------------------- torchvision --

@pytest.mark.parametrize("alpha, gamma", [(0.25, 2.0), (-1.0, 2.0), (0.7, 0.5), (0.0, 0.0),
                                          (1.0, 3.0)])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_sigmoid_focal_matches_torchvision(rng, alpha, gamma, reduction):
    torch = pytest.importorskip("torch")
    ops = pytest.importorskip("torchvision.ops")
    z = rng.standard_normal((16, 5)) * 4  # |z| well below where torchvision loses precision
    y = (rng.random((16, 5)) < 0.4).astype(np.float64)
    y[:3] = rng.random((3, 5))  # soft targets
    zt = torch.tensor(z, requires_grad=True)
    want = ops.sigmoid_focal_loss(zt, torch.tensor(y), alpha=alpha, gamma=gamma,
                                  reduction=reduction)
    want.sum().backward()
    loss, grad = xr.sigmoid_focal_loss(z, y, alpha=alpha, gamma=gamma, reduction=reduction,
                                       return_grad=True)
    # torchvision forms 1 − p_t by subtraction: about 1e-11 relative lost at |z| ≈ 12 even in
    # float64, where ours is exact.
    np.testing.assert_allclose(loss, want.detach().numpy(), rtol=1e-9, atol=1e-300)
    np.testing.assert_allclose(grad, zt.grad.numpy(), rtol=1e-9, atol=1e-14)
    # The defaults are torchvision's.
    np.testing.assert_allclose(xr.sigmoid_focal_loss(z, y),
                               ops.sigmoid_focal_loss(torch.tensor(z), torch.tensor(y)).numpy(),
                               rtol=1e-9)


def test_sigmoid_focal_float32_agrees_with_torchvision_where_it_is_exact(rng):
    torch = pytest.importorskip("torch")
    ops = pytest.importorskip("torchvision.ops")
    z = (rng.standard_normal((64, 8)) * 3).astype(np.float32)
    y = (rng.random((64, 8)) < 0.3).astype(np.float32)
    want = ops.sigmoid_focal_loss(torch.tensor(z), torch.tensor(y)).numpy()
    np.testing.assert_allclose(xr.sigmoid_focal_loss(z, y), want, rtol=2e-5, atol=1e-7)


# ------------------------------------------------------------------------------- optax --

@pytest.mark.parametrize("epsilon", [2.0, 1.0, -1.0, 0.0])
def test_poly1_matches_optax(rng, epsilon):
    pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    import jax
    import jax.numpy as jnp

    z = (rng.standard_normal((32, 6)) * 3).astype(np.float32)
    onehot = np.eye(6, dtype=np.float32)[rng.integers(0, 6, 32)]
    soft = _softmax(rng.standard_normal((32, 6))).astype(np.float32)
    for labels in (onehot, soft):
        want = np.asarray(optax.losses.poly_loss_cross_entropy(
            jnp.asarray(z), jnp.asarray(labels), epsilon=epsilon))
        got = xr.poly1_cross_entropy(z, labels, epsilon=epsilon, reduction="none")
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)

        def mean_loss(x, labels=labels):
            return jnp.mean(optax.losses.poly_loss_cross_entropy(
                x, jnp.asarray(labels), epsilon=epsilon))

        want_g = np.asarray(jax.grad(mean_loss)(jnp.asarray(z)))
        _, g = xr.poly1_cross_entropy(z, labels, epsilon=epsilon, return_grad=True)
        np.testing.assert_allclose(g, want_g, rtol=1e-4, atol=1e-6)
    # Index targets are one-hot labels.
    t = np.argmax(onehot, axis=1)
    np.testing.assert_allclose(xr.poly1_cross_entropy(z, t, epsilon=epsilon, reduction="none"),
                               xr.poly1_cross_entropy(z, onehot, epsilon=epsilon,
                                                      reduction="none"), rtol=1e-6)


# ------------------------------------------------------------------------------- Keras --

@pytest.fixture(scope="module")
def keras():
    os.environ.setdefault("KERAS_BACKEND", "numpy")
    keras = pytest.importorskip("keras")
    return keras


@pytest.mark.parametrize("alpha, gamma", [(0.25, 2.0), (1.0, 0.5), ("per-class", 3.0),
                                          (0.25, 0.0)])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_focal_matches_keras_without_its_clipping(rng, keras, alpha, gamma, label_smoothing):
    k = 5
    a = list(np.linspace(0.1, 1.0, k)) if alpha == "per-class" else alpha
    # Logits of scale 2: every p is within Keras' clipping range [1e-7, 1 - 1e-7].
    z = rng.standard_normal((40, k)) * 2
    assert (_softmax(z) > 1e-7).all() and (_softmax(z) < 1 - 1e-7).all()
    t = rng.integers(0, k, 40)
    onehot = np.eye(k)[t]
    fl = keras.losses.CategoricalFocalCrossentropy(alpha=a, gamma=gamma, from_logits=True,
                                                   label_smoothing=label_smoothing,
                                                   reduction=None)
    want = np.asarray(fl(onehot.astype(np.float32), z.astype(np.float32)), dtype=np.float64)
    kw = {"alpha": a, "gamma": gamma, "label_smoothing": label_smoothing, "reduction": "none"}
    for target in (t, onehot):
        got = xr.focal_loss(z, target, **kw)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    # Keras' default reduction is the mean over the batch, as "mean" here.
    fl_mean = keras.losses.CategoricalFocalCrossentropy(alpha=a, gamma=gamma, from_logits=True,
                                                        label_smoothing=label_smoothing)
    np.testing.assert_allclose(xr.focal_loss(z, t, **{**kw, "reduction": "mean"}),
                               float(fl_mean(onehot.astype(np.float32), z.astype(np.float32))),
                               rtol=1e-5)
