"""xent_rs.torch.linear_cross_entropy: an autograd operator equal to F.linear + F.cross_entropy."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional
xt = pytest.importorskip("xent_rs.torch")


def problem(seed, n=29, d=12, v=101, dtype=torch.float64, bias=True, ignore=3):
    g = torch.Generator().manual_seed(seed)
    e = torch.randn(n, d, generator=g, dtype=dtype)
    c = (torch.randn(v, d, generator=g, dtype=dtype) / d**0.5)
    b = torch.randn(v, generator=g, dtype=dtype) if bias else None
    t = torch.randint(0, v, (n,), generator=g)
    t[:ignore] = -100
    return e, c, b, t


def torch_loss(e, c, t, b=None, softcap=None, reduction="mean"):
    z = F.linear(e, c, b)
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    loss = F.cross_entropy(z.reshape(-1, z.shape[-1]), t.reshape(-1), reduction=reduction)
    return loss.reshape(t.shape) if reduction == "none" else loss


def grads_of(fn, *leaves):
    leaves = [x.detach().clone().requires_grad_(True) if x is not None else None for x in leaves]
    out = fn(*leaves)
    up = torch.linspace(0.5, 2.0, out.numel(), dtype=out.dtype).reshape(out.shape)
    (out * up).sum().backward()
    return out.detach(), [x.grad if x is not None else None for x in leaves]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("softcap", [None, 4.0])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_f_linear_plus_cross_entropy_with_gradients(reduction, softcap, bias):
    e, c, b, t = problem(0, bias=bias)
    ours, g_ours = grads_of(
        lambda e, c, b: xt.linear_cross_entropy(e, c, t, b, softcap=softcap,
                                                reduction=reduction), e, c, b)
    want, g_want = grads_of(
        lambda e, c, b: torch_loss(e, c, t, b, softcap=softcap, reduction=reduction), e, c, b)
    torch.testing.assert_close(ours, want, rtol=1e-12, atol=1e-13)
    for a, w in zip(g_ours, g_want):
        if w is None:
            assert a is None
        else:
            torch.testing.assert_close(a, w, rtol=1e-11, atol=1e-13)


def test_float32_and_leading_axes():
    e, c, b, t = problem(1, n=24, dtype=torch.float32, ignore=0)
    e3, t3 = e.reshape(2, 3, 4, -1), t.reshape(2, 3, 4)
    ours, g_ours = grads_of(lambda e, c: xt.linear_cross_entropy(e, c, t3), e3, c)
    want, g_want = grads_of(lambda e, c: torch_loss(e, c, t3), e3.double(), c.double())
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours.double(), want, rtol=2e-6, atol=0)
    for a, w in zip(g_ours, g_want):
        torch.testing.assert_close(a.double(), w, rtol=1e-4, atol=1e-6)


def test_bfloat16_inputs():
    pytest.importorskip("ml_dtypes")
    e, c, _, t = problem(2, dtype=torch.float32, bias=False)
    eb, cb = e.bfloat16(), c.bfloat16()
    loss = xt.linear_cross_entropy(eb, cb, t)
    assert loss.dtype == torch.bfloat16
    want = torch_loss(eb.double(), cb.double(), t)
    assert abs(loss.double().item() - want.item()) <= 1e-2 * abs(want.item())


def test_opcheck_passes():
    e, c, b, t = problem(3, n=7, d=5, v=11, ignore=1)
    op = torch.ops.xent_rs.linear_cross_entropy.default
    for reduction in ("mean", "none"):
        for bias in (b, None):
            args = (e.clone().requires_grad_(True), c.clone().requires_grad_(True), t,
                    None if bias is None else bias.clone().requires_grad_(True), -100, 3.0,
                    reduction, True)
            torch.library.opcheck(op, args)
    bw = torch.ops.xent_rs.linear_cross_entropy_backward.default
    torch.library.opcheck(bw, (e, c, t, b, torch.rand(7, dtype=e.dtype), -100, None))


def test_gradcheck():
    e, c, b, t = problem(4, n=5, d=3, v=7, ignore=1)
    for reduction in ("mean", "none"):
        torch.autograd.gradcheck(
            lambda e, c, b: xt.linear_cross_entropy(e, c, t, b, softcap=2.0,
                                                    reduction=reduction),
            (e.requires_grad_(True), c.requires_grad_(True), b.requires_grad_(True)))


def test_torch_compile_fullgraph():
    e, c, b, t = problem(5, n=9, d=4, v=13)
    f = torch.compile(lambda e, c, b: xt.linear_cross_entropy(e, c, t, b), fullgraph=True,
                      backend="eager")
    torch.testing.assert_close(f(e, c, b), torch_loss(e, c, t, b), rtol=1e-12, atol=0)


def test_bad_arguments_name_themselves():
    e, c, b, t = problem(6)
    with pytest.raises(ValueError, match="^weight:"):
        xt.linear_cross_entropy(e, c[:, :-1], t)
    with pytest.raises(ValueError, match="^bias:"):
        xt.linear_cross_entropy(e, c, t, b[:-1])
    with pytest.raises(ValueError, match="^softcap:"):
        xt.linear_cross_entropy(e, c, t, softcap=-1.0)
    with pytest.raises(TypeError, match="^e:"):
        xt.linear_cross_entropy(e.numpy(), c, t)
    with pytest.raises(ValueError, match="^reduction:"):
        xt.linear_cross_entropy(e, c, t, reduction="avg")


def test_no_grad_computes_no_gradient():
    e, c, b, t = problem(7)
    with torch.no_grad():
        loss = xt.linear_cross_entropy(e.requires_grad_(True), c, t, b)
    assert not loss.requires_grad
    torch.testing.assert_close(loss, torch_loss(e.detach(), c, t, b), rtol=1e-12, atol=0)
