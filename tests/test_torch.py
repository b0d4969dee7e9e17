"""``xent_rs.torch`` against ``torch.nn.functional`` itself: values, dtypes and gradients
(with upstream gradients other than 1) over the parameter matrix, ``gradcheck`` in float64,
``opcheck`` on the registered operators, ``torch.compile(fullgraph=True)``, the modules, the
fallback to PyTorch, zero-copy reads, gradients computed only when wanted, errors, and the
ImportError without PyTorch."""

from __future__ import annotations

import inspect
import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

import xent_rs as xr  # noqa: E402
import xent_rs.torch as xt  # noqa: E402
from conftest import raises, run_script  # noqa: E402

REDUCTIONS = ("mean", "sum", "none")
SHAPES = [(7,), (6, 5), (3, 4, 2, 3)]  # (C,), (N, C), (N, C, d1, d2)
IGNORE = 2  # a real class, so that ignored targets exist in every shape
# (rtol, atol relative to the largest value) against PyTorch in the same dtype, or for
# 16-bit inputs against PyTorch in float32 on the same (rounded) logits.
TOL = {torch.float64: (1e-10, 1e-12), torch.float32: (2e-5, 1e-6),
       torch.float16: (2e-3, 2e-3), torch.bfloat16: (1.6e-2, 1.6e-2)}
SIXTEEN = (torch.float16, torch.bfloat16)


def reference_dtype(dtype):
    return torch.float32 if dtype in SIXTEEN else dtype


def assert_close(actual, expected, dtype):
    rtol, atol = TOL[dtype]
    actual, expected = actual.detach().double(), expected.detach().double()
    assert actual.shape == expected.shape
    finite = expected[torch.isfinite(expected)]
    scale = float(finite.abs().max()) if finite.numel() else 1.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol * max(scale, 1e-30),
                               equal_nan=True)


def upstream(loss, seed):
    """A non-unit upstream gradient: 3.7 for a reduced loss, random per row for "none"."""
    if loss.dim() == 0:
        return torch.tensor(3.7, dtype=loss.dtype)
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(loss.shape, generator=g, dtype=torch.float64) * 2 - 0.5).to(loss.dtype)


def loss_and_grad(fn, x, dtype, go=None):
    """``fn(x)`` with ``x`` cast to ``dtype``, and the gradient for the upstream gradient
    ``go`` (drawn by :func:`upstream` when None)."""
    leaf = x.detach().to(dtype).requires_grad_()
    loss = fn(leaf)
    go = upstream(loss, 1) if go is None else go
    loss.backward(go.to(loss.dtype))
    return loss, leaf.grad, go


def compare(ours, theirs, x, dtype):
    """Loss dtype, loss and gradient of ``ours`` against ``theirs`` (PyTorch, run in the
    reference dtype on the same rounded logits, with the same upstream gradient)."""
    x = x.to(dtype)  # round once: both see the same logits
    loss, grad, go = loss_and_grad(ours, x, dtype)
    ref_loss, ref_grad, _ = loss_and_grad(theirs, x, reference_dtype(dtype), go.double())
    assert loss.dtype == dtype and grad.dtype == dtype
    assert loss.shape == ref_loss.shape
    assert_close(loss, ref_loss, dtype)
    assert_close(grad, ref_grad, dtype)


def classes_and_batch(shape):
    return (shape[0], ()) if len(shape) == 1 else (shape[1], shape[:1] + shape[2:])


def ce_problem(shape, kind, ignore, seed=0):
    g = torch.Generator().manual_seed(seed)
    c, batch = classes_and_batch(shape)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 3
    if kind == "index":
        t = torch.randint(0, c, batch, generator=g)
        if ignore:
            t.view(-1)[::2] = IGNORE  # half the rows (the only row for (C,))
    else:
        t = torch.softmax(torch.randn(shape, generator=g, dtype=torch.float64) * 2,
                          dim=0 if len(shape) == 1 else 1)
    w = torch.rand(c, generator=g, dtype=torch.float64) + 0.25
    return x, t, w


def ce_args(t, w, dtype, kind, weighted, ignore, eps, reduction):
    """(target, kwargs) in the dtypes PyTorch wants for ``dtype`` (probabilities and
    weights in the logits' dtype, or float32 for the 16-bit reference)."""
    dt = reference_dtype(dtype)
    target = t if kind == "index" else t.to(dt)
    return target, dict(weight=w.to(dt) if weighted else None,
                        ignore_index=IGNORE if ignore else -100, reduction=reduction,
                        label_smoothing=eps)


CE_MATRIX = [c for c in itertools.product(REDUCTIONS, (False, True), (False, True), (0.0, 0.2),
                                          ("index", "probs"), SHAPES)
             if not (c[2] and c[4] == "probs")]  # ignore_index only applies to indices


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize(("reduction", "weighted", "ignore", "eps", "kind", "shape"), CE_MATRIX)
def test_cross_entropy_matches_torch(dtype, reduction, weighted, ignore, eps, kind, shape):
    x, t, w = ce_problem(shape, kind, ignore)
    target, kw = ce_args(t, w, dtype, kind, weighted, ignore, eps, reduction)
    compare(lambda z: xt.cross_entropy(z, target, **kw),
            lambda z: F.cross_entropy(z, target, **kw), x, dtype)


@pytest.mark.parametrize("dtype", SIXTEEN, ids=str)
@pytest.mark.parametrize(("reduction", "kind", "shape"),
                         list(itertools.product(REDUCTIONS, ("index", "probs"), SHAPES)))
def test_cross_entropy_16_bit_matches_torch_in_float32(dtype, reduction, kind, shape):
    x, t, w = ce_problem(shape, kind, ignore=kind == "index", seed=1)
    target, kw = ce_args(t, w, dtype, kind, True, kind == "index", 0.1, reduction)
    compare(lambda z: xt.cross_entropy(z, target, **kw),
            lambda z: F.cross_entropy(z, target, **kw), x, dtype)


def bce_problem(shape, weight, pos_weight, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 3
    y = torch.rand(shape, generator=g, dtype=torch.float64)
    w = {None: None, "full": torch.rand(shape, generator=g, dtype=torch.float64),
         "last": torch.rand(shape[-1:], generator=g, dtype=torch.float64) + 0.5,
         "scalar": torch.tensor(1.5, dtype=torch.float64)}[weight]
    pw = None if pos_weight is None else torch.rand(shape[-1:], generator=g,
                                                    dtype=torch.float64) * 3
    return x, y, w, pw


BCE_MATRIX = list(itertools.product(REDUCTIONS, (None, "full", "last", "scalar"),
                                    (None, "last"), SHAPES))


def _cast(t, dtype):
    return None if t is None else t.to(dtype)


# 16-bit inputs: every reduction and shape, with and without both weights.
BCE_CASES = ([(dtype, *case) for dtype in (torch.float32, torch.float64) for case in BCE_MATRIX]
             + [(dtype, *case) for dtype in SIXTEEN for case in BCE_MATRIX
                if case[1] in (None, "full") and (case[1] is None) == (case[2] is None)])


@pytest.mark.parametrize(("dtype", "reduction", "weight", "pos_weight", "shape"), BCE_CASES)
def test_bce_matches_torch(dtype, reduction, weight, pos_weight, shape):
    x, y, w, pw = bce_problem(shape, weight, pos_weight)
    dt = reference_dtype(dtype)
    y, w, pw = y.to(dt), _cast(w, dt), _cast(pw, dt)
    compare(lambda z: xt.binary_cross_entropy_with_logits(z, y, w, reduction, pw),
            lambda z: F.binary_cross_entropy_with_logits(z, y, w, reduction=reduction,
                                                         pos_weight=pw), x, dtype)


def test_pos_weight_broadcasts_like_torch():
    """pos_weight of shape (C, 1) against input (C, D): PyTorch broadcasts it, so do we."""
    x, y, _, _ = bce_problem((4, 3), None, None)
    pw = torch.tensor([[0.5], [1.0], [2.0], [3.0]], dtype=torch.float64)
    compare(lambda z: xt.binary_cross_entropy_with_logits(z, y, pos_weight=pw),
            lambda z: F.binary_cross_entropy_with_logits(z, y, pos_weight=pw), x,
            torch.float64)


def test_non_contiguous_input_and_targets():
    x, t, w = ce_problem((5, 6), "probs", False)
    xt_, tt = x.t().contiguous().t(), t.t().contiguous().t()  # column-major (N, C)
    assert not xt_.is_contiguous()
    compare(lambda z: xt.cross_entropy(z, tt, w), lambda z: F.cross_entropy(z, tt, w), xt_,
            torch.float64)
    y = torch.rand(6, 5, dtype=torch.float64).t()
    compare(lambda z: xt.binary_cross_entropy_with_logits(z, y),
            lambda z: F.binary_cross_entropy_with_logits(z, y), xt_, torch.float64)


def test_integer_targets_of_other_dtypes_and_empty_batches():
    x, t, _ = ce_problem((6, 5), "index", False)
    for target in (t.to(torch.int32), t.to(torch.uint8)):
        compare(lambda z: xt.cross_entropy(z, target), lambda z: F.cross_entropy(z, t), x,
                torch.float64)
    empty = torch.zeros(0, 5, dtype=torch.float64, requires_grad=True)
    none_t = torch.zeros(0, dtype=torch.int64)
    assert torch.isnan(xt.cross_entropy(empty, none_t)) and torch.isnan(
        F.cross_entropy(empty, none_t))
    assert xt.cross_entropy(empty, none_t, reduction="none").shape == (0,)


def test_mean_over_only_ignored_targets_is_nan_as_in_torch():
    x = torch.randn(3, 4, dtype=torch.float64)
    t = torch.full((3,), IGNORE)
    compare(lambda z: xt.cross_entropy(z, t, ignore_index=IGNORE),
            lambda z: F.cross_entropy(z, t, ignore_index=IGNORE), x, torch.float64)


# ------------------------------------------------------------------------------ autograd --

def test_gradcheck_float64():
    x, t, w = ce_problem((3, 4, 2), "index", True)
    _, p, _ = ce_problem((3, 4, 2), "probs", False)
    for reduction in REDUCTIONS:
        for target, kw in ((t, dict(ignore_index=IGNORE, label_smoothing=0.1)), (p, {})):
            assert torch.autograd.gradcheck(
                lambda z, target=target, kw=kw: xt.cross_entropy(z, target, w,
                                                                 reduction=reduction, **kw),
                (x.clone().requires_grad_(),))
        z, y, bw, pw = bce_problem((3, 4), "full", "last")
        assert torch.autograd.gradcheck(
            lambda z: xt.binary_cross_entropy_with_logits(z, y, bw, reduction, pw),
            (z.requires_grad_(),))


def test_repeated_backward_with_retain_graph_and_accumulation():
    """The upstream-gradient-1 shortcut hands autograd the saved gradient itself: repeated
    and accumulated backward passes must still add up (3 passes: 3x one pass)."""
    x, t, _ = ce_problem((6, 5), "index", False)
    x.requires_grad_()
    ref = x.clone().detach().requires_grad_()
    F.cross_entropy(ref, t).backward()
    loss = xt.cross_entropy(x, t)
    loss.backward(retain_graph=True)
    loss.backward(retain_graph=True)
    xt.cross_entropy(x, t).backward()  # a fresh graph, accumulated into the same .grad
    torch.testing.assert_close(x.grad, 3 * ref.grad, rtol=1e-12, atol=1e-15)


def test_second_derivative_is_refused():
    x, t, _ = ce_problem((4, 3), "index", False)
    x.requires_grad_()
    (g,) = torch.autograd.grad(xt.cross_entropy(x, t), x, create_graph=True)
    with pytest.raises(RuntimeError):
        g.sum().backward()


def test_gradient_reaches_non_leaf_inputs_and_parameters():
    """A Parameter and a non-leaf input (today's users hit "Can't call numpy() on Tensor
    that requires grad" when they hand those to the NumPy API)."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 3).double()
    inp, t = torch.randn(5, 4, dtype=torch.float64), torch.randint(0, 3, (5,))
    grads = []
    for fn in (xt.cross_entropy, F.cross_entropy):
        lin.zero_grad()
        (fn(lin(inp), t) * 2.5).backward()
        grads.append([p.grad.clone() for p in lin.parameters()])
    for ours, theirs in zip(*grads):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------- operators, compile --

def _opcheck(op, *args):
    result = torch.library.opcheck(op, args)
    assert set(result.values()) == {"SUCCESS"}, result


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_opcheck(reduction):
    x, t, w = ce_problem((5, 4), "index", True)
    _, p, _ = ce_problem((5, 4), "probs", False)
    ce = torch.ops.xent_rs.cross_entropy.default
    _opcheck(ce, x.clone().requires_grad_(), t, w, IGNORE, reduction, 0.1, True)
    _opcheck(ce, x.float().requires_grad_(), p.float(), None, -100, reduction, 0.0, True)
    _opcheck(ce, x, t, None, -100, reduction, 0.0, False)
    z, y, bw, pw = bce_problem((3, 4), "full", "last")
    bce = torch.ops.xent_rs.binary_cross_entropy_with_logits.default
    _opcheck(bce, z.requires_grad_(), y, bw, pw, reduction, True)
    _opcheck(bce, z.detach(), y, None, None, reduction, False)


def test_operator_returns_no_gradient_unless_asked():
    x, t, _ = ce_problem((5, 4), "index", False)
    loss, grad = torch.ops.xent_rs.cross_entropy(x, t, None, -100, "mean", 0.0, False)
    assert grad.numel() == 0
    loss, grad = torch.ops.xent_rs.cross_entropy(x, t, None, -100, "mean", 0.0, True)
    ref = x.clone().requires_grad_()
    F.cross_entropy(ref, t).backward()
    torch.testing.assert_close(grad, ref.grad, rtol=1e-12, atol=1e-15)
    # The operator called by hand without the gradient cannot give one.
    loss, _ = torch.ops.xent_rs.cross_entropy(x.clone().requires_grad_(), t, None, -100,
                                              "mean", 0.0, False)
    with pytest.raises(RuntimeError, match="need_grad=False"):
        loss.backward()


def test_compile_fullgraph_matches_eager():
    """Both functions inside one compiled function: a graph break fails (fullgraph=True),
    and values and gradients equal the eager ones. Two calls: index and probability
    targets (a recompile, not a break)."""
    torch._dynamo.reset()
    x, t, w = ce_problem((4, 5, 3), "index", True)
    _, p, _ = ce_problem((4, 5, 3), "probs", False)
    z, y, bw, pw = bce_problem((4, 3), "last", "last")

    def step(x, target, z):
        return (xt.cross_entropy(x, target, w, label_smoothing=0.1) * 2.0
                + xt.binary_cross_entropy_with_logits(z, y, bw, "none", pw).sum())

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    for target in (t, p):
        grads = []
        for fn in (compiled, step):
            xi, zi = x.clone().requires_grad_(), z.clone().requires_grad_()
            out = fn(xi, target, zi)
            out.backward()
            grads.append((out.detach(), xi.grad, zi.grad))
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_compile_inductor_module_without_grad():
    torch._dynamo.reset()
    x, t, _ = ce_problem((6, 5), "index", False)
    loss_fn = xt.CrossEntropyLoss(reduction="none")
    compiled = torch.compile(loss_fn, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x.float(), t), F.cross_entropy(
            x.float(), t, reduction="none"), rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------- modules --

def test_cross_entropy_loss_module():
    w = torch.rand(5, dtype=torch.float64) + 0.5
    ours = xt.CrossEntropyLoss(w, ignore_index=1, reduction="sum", label_smoothing=0.05)
    theirs = torch.nn.CrossEntropyLoss(w, ignore_index=1, reduction="sum",
                                       label_smoothing=0.05)
    assert isinstance(ours, torch.nn.CrossEntropyLoss) and isinstance(ours, torch.nn.Module)
    assert repr(ours) == repr(theirs) == "CrossEntropyLoss()"
    assert (ours.ignore_index, ours.reduction, ours.label_smoothing) == (1, "sum", 0.05)
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["weight"]
    assert "weight" in dict(ours.named_buffers())
    x, t, _ = ce_problem((6, 5, 2), "index", False)
    compare(lambda z: ours(z, t), lambda z: theirs(z, t), x, torch.float64)
    assert ours.float().weight.dtype == torch.float32  # the buffer moves with the module
    fresh = xt.CrossEntropyLoss(torch.ones(5, dtype=torch.float64), reduction="sum",
                                ignore_index=1, label_smoothing=0.05)
    fresh.load_state_dict(theirs.state_dict())
    torch.testing.assert_close(fresh.weight, w)


def test_bce_with_logits_loss_module():
    x, y, w, pw = bce_problem((4, 3), "last", "last")
    ours = xt.BCEWithLogitsLoss(w, reduction="mean", pos_weight=pw)
    theirs = torch.nn.BCEWithLogitsLoss(w, reduction="mean", pos_weight=pw)
    assert isinstance(ours, torch.nn.BCEWithLogitsLoss)
    assert repr(ours) == repr(theirs) == "BCEWithLogitsLoss()"
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["weight", "pos_weight"]
    compare(lambda z: ours(z, y), lambda z: theirs(z, y), x, torch.float64)
    assert xt.BCEWithLogitsLoss().reduction == "mean"


def test_modules_check_their_arguments_when_built():
    raises(ValueError, "reduction", xt.CrossEntropyLoss, reduction="avg")
    raises(ValueError, "label_smoothing", xt.CrossEntropyLoss, label_smoothing=1.5)
    raises(TypeError, "ignore_index", xt.CrossEntropyLoss, ignore_index=1.5)
    raises(TypeError, "weight", xt.CrossEntropyLoss, weight=[1.0, 2.0])
    raises(ValueError, "reduction", xt.BCEWithLogitsLoss, reduction=None)
    raises(TypeError, "pos_weight", xt.BCEWithLogitsLoss, pos_weight=2.0)


# ------------------------------------------------------- fallback, zero copy, lazy gradient --

def test_other_devices_fall_back_to_torch():
    x = torch.randn(4, 3, 2, device="meta")
    t = torch.zeros(4, 2, dtype=torch.int64, device="meta")
    loss = xt.cross_entropy(x, t, reduction="none")
    assert loss.device.type == "meta" and loss.shape == (4, 2)
    z = torch.randn(4, 3, device="meta")
    assert xt.binary_cross_entropy_with_logits(z, z).device.type == "meta"
    if torch.cuda.is_available():  # pragma: no cover - only where a GPU is present
        x, t, _ = ce_problem((6, 5), "index", False)
        torch.testing.assert_close(xt.cross_entropy(x.cuda(), t.cuda()).cpu(),
                                   F.cross_entropy(x, t))


@pytest.fixture
def kernel_calls(monkeypatch):
    """Records, for each call into the NumPy API, whether it was asked for the gradient
    and whether the logits it got share memory with a given tensor."""
    calls = []

    def spy(name):
        real = getattr(xr, name)

        def wrapper(logits, target, **kw):
            result = real(logits, target, **kw)
            calls.append(dict(return_grad=kw.get("return_grad", False), logits=logits,
                              result=result))
            return result
        monkeypatch.setattr(xr, name, wrapper)

    spy("cross_entropy")
    spy("binary_cross_entropy_with_logits")
    return calls


def _reads_in_place(call, tensor):
    return call["logits"].__array_interface__["data"][0] == tensor.data_ptr()


def test_fallback_when_a_target_requires_grad(kernel_calls):
    """PyTorch differentiates probability targets (and BCE targets); the kernels do not,
    so those calls go to torch.nn.functional, and give its gradients."""
    x, p, w = ce_problem((5, 4), "probs", False)
    z, y, bw, _ = bce_problem((5, 4), "full", None)
    for ours, theirs, target, args in ((xt.cross_entropy, F.cross_entropy, p, (w,)),
                                       (xt.binary_cross_entropy_with_logits,
                                        F.binary_cross_entropy_with_logits, y, (bw,))):
        grads = []
        for fn in (ours, theirs):
            ti, xi = target.clone().requires_grad_(), x.clone().requires_grad_()
            (fn(xi, ti, *args) * 1.5).backward()
            grads.append((ti.grad, xi.grad))
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b)
    assert kernel_calls == []
    with torch.no_grad():  # nothing is differentiated: the kernels do it
        xt.cross_entropy(x, p.clone().requires_grad_(), w)
    assert len(kernel_calls) == 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_n_by_c_input_is_read_in_place(kernel_calls, dtype):
    x = torch.randn(8, 5).to(dtype).requires_grad_()
    t = torch.randint(0, 5, (8,))
    xt.cross_entropy(x, t).backward()
    xt.binary_cross_entropy_with_logits(x, torch.rand(8, 5)).backward()
    assert len(kernel_calls) == 2
    assert all(_reads_in_place(c, x) for c in kernel_calls)
    if dtype == torch.bfloat16:
        assert kernel_calls[0]["logits"].dtype.name == "bfloat16"


def test_plain_backward_hands_over_the_kernels_gradient(kernel_calls):
    """After ``loss.backward()`` (upstream gradient 1, graph freed), ``x.grad`` is the
    buffer the kernel wrote: no product, no copy, and no zero-filled gradient for the
    operator's unused second output."""
    x = torch.randn(16, 9, requires_grad=True)
    xt.cross_entropy(x, torch.randint(0, 9, (16,))).backward()
    (call,) = kernel_calls
    assert x.grad.data_ptr() == call["result"][1].__array_interface__["data"][0]


def test_gradient_is_computed_only_when_needed(kernel_calls):
    x, t, _ = ce_problem((5, 4), "index", False)
    xt.cross_entropy(x, t)
    xt.cross_entropy(x.clone().requires_grad_(), t)
    with torch.no_grad():
        xt.cross_entropy(x.clone().requires_grad_(), t)
    xt.binary_cross_entropy_with_logits(x, x.sigmoid())
    assert [c["return_grad"] for c in kernel_calls] == [False, True, False, False]


# ----------------------------------------------------------------------- errors, typing --

def test_errors_name_the_argument():
    x, t, w = ce_problem((4, 3), "index", False)
    raises(TypeError, "input", xt.cross_entropy, x.numpy(), t)
    raises(TypeError, "target", xt.cross_entropy, x, [0, 1, 2, 0])
    raises(TypeError, "weight", xt.cross_entropy, x, t, [1.0, 1.0, 1.0])
    raises(ValueError, "reduction", xt.cross_entropy, x, t, reduction="avg")
    raises(ValueError, "label_smoothing", xt.cross_entropy, x, t, label_smoothing=-0.1)
    raises(ValueError, "target", xt.cross_entropy, x, t[:3])
    raises(ValueError, "target", xt.cross_entropy, x, torch.tensor([0, 1, 3, 0]))
    raises(ValueError, "weight", xt.cross_entropy, x, t, -w)
    raises(ValueError, "weight", xt.cross_entropy, x, t, w[:2])
    raises(ValueError, "input", xt.cross_entropy, torch.tensor(1.0), torch.tensor(0))
    raises(TypeError, "input", xt.binary_cross_entropy_with_logits, 1.0, x)
    for fn in (xt.cross_entropy, xt.binary_cross_entropy_with_logits):
        raises(TypeError, "input", fn, torch.zeros(4, 3, dtype=torch.int64), t)
    raises(ValueError, "target", xt.binary_cross_entropy_with_logits, x, x[:2])
    raises(ValueError, "pos_weight", xt.binary_cross_entropy_with_logits, x, x,
           pos_weight=torch.ones(2))
    raises(ValueError, "reduction", xt.binary_cross_entropy_with_logits, x, x, None, "avg")


def test_public_api_is_annotated_and_documented():
    gaps = []
    for name in xt.__all__:
        obj = getattr(xt, name)
        members = [(name, obj)] if inspect.isfunction(obj) else [
            (f"{name}.{a}", m) for a, m in vars(obj).items() if inspect.isfunction(m)]
        assert obj.__doc__ and "Parameters\n" in obj.__doc__, name
        for where, fn in members:
            sig = inspect.signature(fn)
            gaps += [f"{where}({p.name})" for p in sig.parameters.values()
                     if p.name != "self" and p.annotation is p.empty]
            gaps += [f"{where} -> ?"] if sig.return_annotation is sig.empty else []
    assert not gaps, gaps


def test_signatures_are_the_contracts():
    sig = {n: list(inspect.signature(getattr(xt, n)).parameters) for n in xt.__all__}
    assert sig["cross_entropy"] == ["input", "target", "weight", "ignore_index", "reduction",
                                    "label_smoothing", "z_loss", "softcap"]
    assert sig["binary_cross_entropy_with_logits"] == ["input", "target", "weight",
                                                       "reduction", "pos_weight"]
    assert sig["CrossEntropyLoss"] == ["weight", "ignore_index", "reduction",
                                       "label_smoothing", "z_loss", "softcap"]
    assert sig["BCEWithLogitsLoss"] == ["weight", "reduction", "pos_weight"]


def test_import_without_torch_names_the_package_to_install():
    out = run_script(
        "import sys\n"
        "sys.modules['torch'] = None\n"
        "import xent_rs as xr\n"
        "print(float(xr.cross_entropy([[0.0, 0.0]], [1])))\n"
        "for attempt in (lambda: xr.torch, lambda: __import__('xent_rs.torch')):\n"
        "    try:\n"
        "        attempt()\n"
        "    except ImportError as exc:\n"
        "        print(exc)\n", timeout=120)
    lines = out.splitlines()
    assert float(lines[0]) == pytest.approx(np.log(2.0))
    assert len(lines) == 3 and all("pip install xent_rs[torch]" in line for line in lines[1:])


def test_import_xent_rs_does_not_import_torch():
    out = run_script("import sys, xent_rs\nprint('torch' in sys.modules)\n", timeout=120)
    assert out.strip() == "False"
    out = run_script("import xent_rs\nprint(xent_rs.torch.__name__)\n", timeout=120)
    assert out.strip() == "xent_rs.torch"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_a_released_large_gradient_is_reused_and_a_live_one_never(dtype):
    # Gradients of >= 4 MiB come from a one-buffer cache: the buffer of a gradient PyTorch
    # has released is written again, one still alive never is.
    n, k = 2100, 1000  # 4.2 MB in 16-bit
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, k, generator=g).to(dtype).requires_grad_()
    t = torch.randint(0, k, (n,), generator=g)
    ref = x.detach().float().requires_grad_()
    F.cross_entropy(ref, t).backward()
    tol = {"rtol": 2e-2, "atol": 1e-6} if dtype != torch.float32 else {"rtol": 1e-4, "atol": 1e-9}
    kept = []
    for step in range(3):  # every gradient stays alive: three buffers
        x.grad = None
        xt.cross_entropy(x, t if step != 1 else t.flip(0)).backward()
        kept.append(x.grad)
    assert len({a.data_ptr() for a in kept}) == 3
    torch.testing.assert_close(kept[0].float(), ref.grad, **tol)
    torch.testing.assert_close(kept[2].float(), ref.grad, **tol)
    flipped = x.detach().float().requires_grad_()
    F.cross_entropy(flipped, t.flip(0)).backward()
    torch.testing.assert_close(kept[1].float(), flipped.grad, **tol)
    del kept
    ptrs = set()
    for _ in range(3):  # each released before the next step: one buffer, values still right
        x.grad = None
        xt.cross_entropy(x, t).backward()
        ptrs.add(x.grad.data_ptr())
        torch.testing.assert_close(x.grad.float(), ref.grad, **tol)
    assert len(ptrs) == 1
    y = torch.rand(n, k, generator=g).to(dtype)  # the BCE operator shares the cache
    z = x.detach().clone().requires_grad_()
    xt.binary_cross_entropy_with_logits(z, y).backward()
    zr = x.detach().float().requires_grad_()
    F.binary_cross_entropy_with_logits(zr, y.float()).backward()
    torch.testing.assert_close(z.grad.float(), zr.grad, **tol)
    assert z.grad.data_ptr() != x.grad.data_ptr()


def test_empty_cache_frees_the_kept_gradient_and_nothing_live():
    n, k = 2048, 1024  # 8 MiB float32 gradient: cached once released
    x = torch.randn(n, k, generator=torch.Generator().manual_seed(5), requires_grad=True)
    t = torch.zeros(n, dtype=torch.long)
    xt.empty_cache()
    xt.cross_entropy(x, t).backward()
    live = x.grad
    assert xt.empty_cache() == 0  # the gradient is alive: nothing kept
    x.grad = live = None
    assert xt.empty_cache() == n * k * 4
    assert xt.empty_cache() == 0
    xt.cross_entropy(x, t).backward()  # a fresh buffer: the values are still right
    ref = x.detach().clone().requires_grad_()
    F.cross_entropy(ref, t).backward()
    torch.testing.assert_close(x.grad, ref.grad, rtol=1e-4, atol=1e-9)
    del live
