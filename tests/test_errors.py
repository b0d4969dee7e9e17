"""Every bad input in API.md's "Errors" section raises the documented exception, and the
message names the argument."""

from __future__ import annotations

import numpy as np
import pytest

import xent_rs as xr
from conftest import raises

X = np.zeros((4, 3), dtype=np.float32)
T = np.array([0, 1, 2, 0])


@pytest.mark.parametrize("bad", [np.zeros((4, 3), dtype=np.int64), np.zeros((4, 3), bool),
                                 np.zeros((4, 3), complex), np.zeros((4, 3), object),
                                 np.array([["a", "b"]]), None, np.zeros((4, 3), np.longdouble)])
def test_logits_dtype(bad):
    raises(TypeError, "logits", xr.cross_entropy, bad, T[: len(bad)] if bad is not None
           else T)
    raises(TypeError, "logits", xr.binary_cross_entropy_with_logits, bad, bad)
    for fn in (xr.softmax, xr.log_softmax, xr.logsumexp):
        raises(TypeError, "logits", fn, bad)


def test_logits_shape():
    raises(ValueError, "logits", xr.cross_entropy, np.float32(1.0), np.array(0))
    raises(ValueError, "logits", xr.cross_entropy, np.zeros((4, 0)), np.zeros(4, int))
    raises(ValueError, "logits", xr.softmax, np.zeros((4, 0)))


def test_target_shape_and_kind():
    raises(ValueError, "target", xr.cross_entropy, X, np.array([0, 1, 2]))
    raises(ValueError, "target", xr.cross_entropy, X, np.zeros((4, 1), int))
    raises(ValueError, "target", xr.cross_entropy, X, np.zeros((4, 4), np.float32))
    raises(TypeError, "target", xr.cross_entropy, X, np.zeros(4, bool))
    raises(TypeError, "target", xr.cross_entropy, X, None)
    raises(TypeError, "target", xr.cross_entropy, X, np.array(["a"] * 4))
    raises(ValueError, "target", xr.binary_cross_entropy_with_logits, X, np.zeros((4, 2)))


@pytest.mark.parametrize("label", [3, -1, -101, 2**40])
def test_label_out_of_range(label):
    t = T.copy()
    t[2] = label
    raises(ValueError, "target", xr.cross_entropy, X, t)


def test_unsigned_label_beyond_int64():
    t = np.array([0, 1, 2, 2**64 - 100], dtype=np.uint64)  # would wrap to ignore_index
    raises(ValueError, "target", xr.cross_entropy, X, t)


@pytest.mark.parametrize("value", [-0.1, 1.5, np.nan])
def test_bce_target_out_of_unit_interval(value):
    y = np.zeros((4, 3))
    y[1, 1] = value
    raises(ValueError, "target", xr.binary_cross_entropy_with_logits, X, y)


@pytest.mark.parametrize("reduction", ["avg", None, "MEAN", 1])
def test_bad_reduction(reduction):
    raises(ValueError, "reduction", xr.cross_entropy, X, T, reduction=reduction)
    raises(ValueError, "reduction", xr.binary_cross_entropy_with_logits, X, X,
           reduction=reduction)


@pytest.mark.parametrize("eps", [-0.01, 1.01, np.nan, np.inf])
def test_label_smoothing_range(eps):
    raises(ValueError, "label_smoothing", xr.cross_entropy, X, T, label_smoothing=eps)
    raises(ValueError, "label_smoothing", xr.binary_cross_entropy_with_logits, X, X,
           label_smoothing=eps)


def test_label_smoothing_type():
    raises(TypeError, "label_smoothing", xr.cross_entropy, X, T, label_smoothing="0.1")


@pytest.mark.parametrize("w", [[1, 1, -1], [1, np.nan, 1], [1, np.inf, 1]])
def test_bad_weights(w):
    raises(ValueError, "weight", xr.cross_entropy, X, T, weight=w)
    raises(ValueError, "weight", xr.binary_cross_entropy_with_logits, X, X, weight=w)
    raises(ValueError, "pos_weight", xr.binary_cross_entropy_with_logits, X, X, pos_weight=w)


def test_weight_shapes():
    raises(ValueError, "weight", xr.cross_entropy, X, T, weight=[1, 1])
    raises(ValueError, "weight", xr.cross_entropy, X, T, weight=np.ones((3, 1)))
    raises(ValueError, "weight", xr.binary_cross_entropy_with_logits, X, X,
           weight=np.ones(2))
    raises(ValueError, "pos_weight", xr.binary_cross_entropy_with_logits, X, X,
           pos_weight=np.ones(4))
    raises(TypeError, "weight", xr.cross_entropy, X, T, weight=["a", "b", "c"])


def test_out_misuse():
    raises(ValueError, "out", xr.cross_entropy, X, T, out=np.empty_like(X))
    raises(ValueError, "out", xr.cross_entropy, X, T, return_grad=True,
           out=np.empty((4, 4), np.float32))
    raises(ValueError, "out", xr.cross_entropy, X, T, return_grad=True,
           out=np.empty((4, 3), np.float64))
    raises(ValueError, "out", xr.cross_entropy, X, T, return_grad=True,
           out=np.empty((3, 4), np.float32).T)
    ro = np.empty_like(X)
    ro.flags.writeable = False
    raises(ValueError, "out", xr.cross_entropy, X, T, return_grad=True, out=ro)
    raises(TypeError, "out", xr.cross_entropy, X, T, return_grad=True, out=[[0.0] * 3] * 4)
    big = np.zeros((5, 3), np.float32)
    raises(ValueError, "out", xr.cross_entropy, big[1:], T, return_grad=True, out=big[:4])
    raises(ValueError, "out", xr.binary_cross_entropy_with_logits, X, X,
           out=np.empty_like(X))
    raises(ValueError, "out", xr.softmax, X, out=np.empty((4, 4), np.float32))


def test_flags_and_ints():
    raises(TypeError, "return_grad", xr.cross_entropy, X, T, return_grad="yes")
    raises(TypeError, "ignore_index", xr.cross_entropy, X, T, ignore_index=1.5)
    raises(ValueError, "n", xr.set_num_threads, 0)
    raises(TypeError, "n", xr.set_num_threads, 2.0)
