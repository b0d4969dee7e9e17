"""PyTorch adapter: ``torch.nn.functional`` / ``torch.nn`` drop-ins on the xent_rs kernels.

``cross_entropy``, ``binary_cross_entropy_with_logits``, ``CrossEntropyLoss`` and
``BCEWithLogitsLoss`` take PyTorch's arguments with PyTorch's meaning (class axis 1: input
``(C,)``, ``(N, C)`` or ``(N, C, d1, ...)``). CPU tensors of float16, bfloat16, float32 and
float64 run on the fused Rust kernels, which return the loss and its gradient from one pass
over the logits; anything else (another device, a target or weight that requires grad) goes
to ``torch.nn.functional``.

The kernels are registered as the operators ``torch.ops.xent_rs.cross_entropy`` and
``torch.ops.xent_rs.binary_cross_entropy_with_logits`` (``torch.library.custom_op``), with a
fake implementation for tracing and an autograd formula, so that ``torch.compile`` (also
with ``fullgraph=True``), ``torch.library.opcheck`` and ``torch.autograd.gradcheck`` work.
Each operator takes the logits with the class axis **last** and returns ``(loss, grad)``:
``grad`` is the gradient of the returned (reduced) loss with respect to the logits, computed
only when ``need_grad`` is true (otherwise an empty tensor), so the backward pass is a
multiplication by the upstream gradient (nothing at all for an upstream gradient of 1).

Needs PyTorch (``pip install xent_rs[torch]``); ``import xent_rs`` alone never imports it.

>>> import torch, xent_rs.torch as xt
>>> logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 0.0, 3.0]], requires_grad=True)
>>> loss = xt.cross_entropy(logits, torch.tensor([0, 2]))
>>> loss.backward()
>>> round(loss.item(), 6), logits.grad.shape
(0.168117, torch.Size([2, 3]))
"""

from __future__ import annotations

import math
import threading
import weakref
from typing import Any, Optional

import numpy as np

try:
    import torch
    import torch.nn.functional as F
except ImportError as exc:  # the message names what to install
    raise ImportError(
        "xent_rs.torch needs PyTorch, which is not installed: pip install xent_rs[torch] "
        "(or pip install torch)") from exc

from torch import Tensor
from torch.utils._python_dispatch import _get_current_dispatch_mode

import xent_rs as _xr
from xent_rs import _validate as _v

__all__ = [
    "cross_entropy",
    "binary_cross_entropy_with_logits",
    "CrossEntropyLoss",
    "BCEWithLogitsLoss",
    "linear_cross_entropy",
    "empty_cache",
]

#: Input dtypes the kernels take; any other goes to torch.nn.functional.
KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


# ------------------------------------------------------------------------ tensor <-> numpy --

try:  # NumPy has no bfloat16; without ml_dtypes bfloat16 tensors go to torch.nn.functional
    from ml_dtypes import bfloat16 as _BFLOAT16
except ImportError:  # pragma: no cover
    _BFLOAT16 = None


def _numpy(t: Tensor) -> np.ndarray:
    """The tensor's memory as a NumPy array (no copy). NumPy has no bfloat16: those tensors
    are read as int16 and viewed as ``ml_dtypes.bfloat16``, still without a copy."""
    t = t.detach()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(_BFLOAT16)
    return t.numpy()


def _tensor(a: np.ndarray, dtype: torch.dtype) -> Tensor:
    """A NumPy result of the logits' dtype as a tensor of ``dtype`` (no copy)."""
    if dtype == torch.bfloat16:
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


class _GradientCache:
    """The memory of the last large gradient that PyTorch released, for the next call that
    needs a gradient of the same size.

    A training step's gradient is fresh memory every step (``zero_grad(set_to_none=True)``,
    PyTorch's default, drops the last one), and the operating system zeroes fresh pages as
    they are first written: at ``(8192, 32000)`` float32 that is about a third of the step
    (docs/torch.md). When the tensor holding a gradient from here is freed, its buffer is
    kept (one buffer at most, so at most one gradient's worth of memory is held after the
    last step) and the next call of the same byte size writes into it instead. A gradient
    still alive is never handed out again: the buffer comes back only when the NumPy array
    that the tensor's storage holds is collected."""

    MIN_BYTES = 4 << 20  # below this malloc reuses freed memory anyway

    def __init__(self) -> None:
        self._free: Optional[np.ndarray] = None  # a 1-D uint8 array owning its memory
        self._lock = threading.Lock()

    def take(self, shape: tuple, dtype: np.dtype) -> Optional[np.ndarray]:
        """A 1-D uint8 buffer of exactly the gradient's size, or None (small, or none
        free of that size)."""
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes < self.MIN_BYTES:
            return None
        with self._lock:
            buf, self._free = self._free, None
        if buf is None or buf.nbytes != nbytes:
            buf = np.empty(nbytes, dtype=np.uint8)  # (a stale one of another size is freed)
        return buf

    def give_back(self, buf: np.ndarray) -> None:
        with self._lock:
            self._free = buf

    def clear(self) -> int:
        """Drops the kept buffer; returns its size in bytes (0 if none was kept)."""
        with self._lock:
            buf, self._free = self._free, None
        return 0 if buf is None else buf.nbytes

    def tensor(self, buf: np.ndarray, grad: np.ndarray, dtype: torch.dtype) -> Tensor:
        """``buf`` (which the core wrote ``grad`` into) as the gradient tensor; its memory
        returns here when the tensor's storage (which holds the array made here, and only
        it) is freed."""
        array = buf.view(np.int16 if dtype == torch.bfloat16 else grad.dtype)
        array = array.reshape(grad.shape)
        weakref.finalize(array, self.give_back, buf).atexit = False
        t = torch.from_numpy(array)
        return t.view(torch.bfloat16) if dtype == torch.bfloat16 else t


_GRADIENTS = _GradientCache()


def empty_cache() -> int:
    """Frees the memory of the released gradient that the adapter keeps for reuse.

    Loss functions here write a gradient of 4 MiB or more into the buffer of the last such
    gradient PyTorch has released (one buffer at most, never one a tensor still holds), so
    that a training step does not pay for fresh pages every step (docs/torch.md). After the
    last step that memory stays with the adapter until a gradient of another size is asked
    for, or until this is called (as ``torch.cuda.empty_cache`` does for PyTorch's own cache).

    Parameters
    ----------
    (none)

    Returns
    -------
    int
        The bytes freed (0 if no buffer was kept).

    Examples
    --------
    >>> import torch, xent_rs.torch as xt
    >>> x = torch.randn(2048, 1024, requires_grad=True)
    >>> xt.cross_entropy(x, torch.zeros(2048, dtype=torch.long)).backward()
    >>> x.grad = None  # the 8 MiB gradient is released, and kept for the next step
    >>> xt.empty_cache()
    8388608
    >>> xt.empty_cache()
    0
    """
    return _GRADIENTS.clear()


def _grad_buffer(x: np.ndarray, need_grad: bool) -> tuple[Optional[np.ndarray], Any]:
    """``(out, buf)`` for a kernel call on the NumPy logits ``x``: ``out`` the array to pass
    as the core's ``out`` (None: let it allocate), ``buf`` the cached buffer behind it."""
    if not need_grad:
        return None, None
    buf = _GRADIENTS.take(x.shape, x.dtype)
    return (None, None) if buf is None else (buf.view(x.dtype).reshape(x.shape), buf)


def _factor(t: Optional[Tensor]) -> Optional[np.ndarray]:
    """A weight as float64 NumPy (the dtype the kernels read weights in)."""
    return None if t is None else _numpy(t.to(torch.float64))


def _result(loss: Any, reduction: str, input: Tensor) -> Tensor:
    if reduction == "none":
        return _tensor(loss, input.dtype)
    # Reduced losses of 16-bit logits come back from the core in float32; PyTorch returns
    # the input's dtype: rounded once here (float32 -> float64 is exact).
    return torch.scalar_tensor(float(loss), dtype=input.dtype)


def _outputs(res: Any, reduction: str, input: Tensor, need_grad: bool,
             buf: Optional[np.ndarray] = None) -> tuple[Tensor, Tensor]:
    """The operators' ``(loss, grad)`` from the NumPy API's result (``grad`` empty unless
    ``need_grad``; ``buf``: the cached buffer the gradient was written into)."""
    if not need_grad:
        return _result(res, reduction, input), input.new_empty((0,))
    if buf is not None:
        return (_result(res[0], reduction, input),
                _GRADIENTS.tensor(buf, res[1], input.dtype))
    return _result(res[0], reduction, input), _tensor(res[1], input.dtype)


def _fake_outputs(input: Tensor, loss_shape: tuple, need_grad: bool) -> tuple[Tensor, Tensor]:
    """What :func:`_outputs` gives, as empty tensors of the right shapes (for tracing)."""
    return (input.new_empty(loss_shape),
            input.new_empty(input.shape if need_grad else (0,)))


# ------------------------------------------------------------------------------ operators --

@torch.library.custom_op("xent_rs::cross_entropy", mutates_args=(), device_types="cpu")
def _cross_entropy_op(input: Tensor, target: Tensor, weight: Optional[Tensor],
                      ignore_index: int, reduction: str, label_smoothing: float,
                      need_grad: bool, z_loss: float = 0.0,
                      softcap: Optional[float] = None) -> tuple[Tensor, Tensor]:
    """Softmax cross-entropy, class axis last; ``(loss, grad of loss)`` (grad empty unless
    ``need_grad``). ``target``: class indices of shape ``input.shape[:-1]`` or probabilities
    of ``input.shape``."""
    x = _numpy(input)
    out, buf = _grad_buffer(x, need_grad)
    res = _xr.cross_entropy(x, _numpy(target), weight=_factor(weight),
                            ignore_index=ignore_index, label_smoothing=label_smoothing,
                            reduction=reduction, return_grad=need_grad, z_loss=z_loss,
                            softcap=softcap, out=out)
    return _outputs(res, reduction, input, need_grad, buf)


@_cross_entropy_op.register_fake
def _cross_entropy_fake(input: Tensor, target: Tensor, weight: Optional[Tensor],
                        ignore_index: int, reduction: str, label_smoothing: float,
                        need_grad: bool, z_loss: float = 0.0,
                        softcap: Optional[float] = None) -> tuple[Tensor, Tensor]:
    return _fake_outputs(input, input.shape[:-1] if reduction == "none" else (), need_grad)


@torch.library.custom_op("xent_rs::binary_cross_entropy_with_logits", mutates_args=(),
                         device_types="cpu")
def _bce_op(input: Tensor, target: Tensor, weight: Optional[Tensor],
            pos_weight: Optional[Tensor], reduction: str,
            need_grad: bool) -> tuple[Tensor, Tensor]:
    """Sigmoid binary cross-entropy, elementwise; ``(loss, grad of loss)`` as above."""
    x = _numpy(input)
    out, buf = _grad_buffer(x, need_grad)
    res = _xr.binary_cross_entropy_with_logits(
        x, _numpy(target), weight=_factor(weight), pos_weight=_factor(pos_weight),
        reduction=reduction, return_grad=need_grad, out=out)
    return _outputs(res, reduction, input, need_grad, buf)


@_bce_op.register_fake
def _bce_fake(input: Tensor, target: Tensor, weight: Optional[Tensor],
              pos_weight: Optional[Tensor], reduction: str,
              need_grad: bool) -> tuple[Tensor, Tensor]:
    return _fake_outputs(input, input.shape if reduction == "none" else (), need_grad)


# ------------------------------------------------------------------------------- autograd --

def _eager_one(grad_output: Tensor) -> bool:
    """Whether the upstream gradient is a concrete scalar 1 (``loss.backward()``): then the
    saved gradient is already the answer, and a pass over it is saved. Never while tracing
    (torch.compile, opcheck): there the value is unknown and the product is traced."""
    return (type(grad_output) is Tensor and grad_output.dim() == 0
            and not torch.compiler.is_compiling() and _get_current_dispatch_mode() is None
            and grad_output.item() == 1.0)


def _save(ctx: Any, output: tuple[Tensor, Tensor], reduction: str, need_grad: bool) -> None:
    grad = output[1]
    ctx.mark_non_differentiable(grad)
    # Else autograd fills a zero "upstream gradient" of the logits' size for this output.
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(grad)
    ctx.reduction, ctx.need_grad = reduction, need_grad


def _cross_entropy_setup(ctx: Any, inputs: tuple, output: tuple[Tensor, Tensor]) -> None:
    _save(ctx, output, inputs[4], inputs[6])


def _bce_setup(ctx: Any, inputs: tuple, output: tuple[Tensor, Tensor]) -> None:
    _save(ctx, output, inputs[4], inputs[5])


def _chain(ctx: Any, grad_output: Optional[Tensor], row_axis: bool) -> Optional[Tensor]:
    """``grad_output · saved gradient``: the saved gradient is that of the reduced loss, or
    for ``"none"`` each row's own (``row_axis``: unsqueeze the per-row upstream gradient
    over the class axis). No upstream gradient (only the gradient output was used): None."""
    if grad_output is None:
        return None
    if any(ctx.needs_input_grad[1:]):
        raise NotImplementedError(
            "xent_rs.torch: the kernels give no gradient with respect to target or weights; "
            "xent_rs.torch's functions send such calls to torch.nn.functional")
    if not ctx.need_grad:
        raise RuntimeError(
            "xent_rs.torch: the operator ran with need_grad=False, so it has no gradient to "
            "give; call it with need_grad=True when the input requires grad")
    (grad,) = ctx.saved_tensors
    if ctx.reduction == "none":
        return grad * (grad_output.unsqueeze(-1) if row_axis else grad_output)
    if _eager_one(grad_output):
        return grad
    return grad * grad_output


@torch.autograd.function.once_differentiable
def _cross_entropy_backward(ctx: Any, grad_loss: Tensor, _grad: Tensor) -> tuple:
    return (_chain(ctx, grad_loss, True),) + (None,) * 8


@torch.autograd.function.once_differentiable
def _bce_backward(ctx: Any, grad_loss: Tensor, _grad: Tensor) -> tuple:
    return (_chain(ctx, grad_loss, False),) + (None,) * 5


_cross_entropy_op.register_autograd(_cross_entropy_backward, setup_context=_cross_entropy_setup)
_bce_op.register_autograd(_bce_backward, setup_context=_bce_setup)


# ------------------------------------------------------------------------- public functions --

def _tensor_arg(value: object, name: str, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, Tensor):
        raise TypeError(f"{name}: must be a torch.Tensor, got {type(value).__name__}")


def _logits_arg(input: object) -> None:
    _tensor_arg(input, "input")
    if not (input.is_floating_point() or input.device.type != "cpu"):
        raise TypeError(f"input: must be a float16, bfloat16, float32 or float64 tensor of "
                        f"logits, got {input.dtype}")


def _on_kernels(input: Tensor, others: tuple[Optional[Tensor], ...]) -> bool:
    """Whether the kernels can do this call: strided CPU tensors, an input dtype they take,
    and no gradient wanted for anything but the input."""
    if (input.device.type != "cpu" or input.layout != torch.strided
            or input.dtype not in KERNEL_DTYPES
            or (input.dtype == torch.bfloat16 and _BFLOAT16 is None)):
        return False
    grad_mode = torch.is_grad_enabled()
    return all(t is None or (t.device.type == "cpu" and t.layout == torch.strided
                             and not (grad_mode and t.requires_grad)) for t in others)


def _needs_grad(input: Tensor) -> bool:
    return torch.is_grad_enabled() and input.requires_grad


def _composed_cross_entropy(input: Tensor, target: Tensor, weight: Optional[Tensor],
                            ignore_index: int, reduction: str, label_smoothing: float,
                            z_loss: float, softcap: Optional[float]) -> Tensor:
    """The z-loss and soft cap written in torch (for calls the kernels do not take):
    ``F.cross_entropy(c·tanh(x/c), y) + z·lse²`` over the non-ignored rows, class axis 1."""
    x = input
    if softcap is not None:
        x = torch.where(x == -math.inf, x, softcap * torch.tanh(x / softcap))
    loss = F.cross_entropy(x, target, weight, ignore_index=ignore_index,
                           reduction=reduction, label_smoothing=label_smoothing)
    if z_loss == 0.0:
        return loss
    lse = torch.logsumexp(x, dim=1 if x.dim() > 1 else 0)
    if target.shape == input.shape:
        kept = torch.ones_like(lse, dtype=torch.bool)
    else:
        kept = target != ignore_index
    z = torch.where(kept, z_loss * lse * lse, torch.zeros_like(lse))
    if reduction == "none":
        return loss + z
    if reduction == "sum":
        return loss + z.sum()
    return loss + z.sum() / kept.sum()


def cross_entropy(input: Tensor, target: Tensor, weight: Optional[Tensor] = None,
                  ignore_index: int = -100, reduction: str = "mean",
                  label_smoothing: float = 0.0, z_loss: float = 0.0,
                  softcap: Optional[float] = None) -> Tensor:
    r"""Cross-entropy between logits and class targets, as ``torch.nn.functional.cross_entropy``.

    For a row with logits :math:`x`, :math:`p = \mathrm{softmax}(x)` and weighted target
    distribution :math:`q` (index target :math:`t`:
    :math:`q_j = w_t((1-\varepsilon)[j=t] + \varepsilon/C)`, with PyTorch's smoothing
    weights :math:`w_j` on the second term; probability target :math:`y`:
    :math:`q_j = w_j((1-\varepsilon) y_j + \varepsilon/C)`), the loss is
    :math:`-\sum_j q_j \log p_j`.

    Parameters
    ----------
    input : Tensor, shape (C,), (N, C) or (N, C, d1, ...)
        Unnormalised logits, class axis 1 (0 for 1-d input). float16, bfloat16, float32 or
        float64 on the CPU run on the xent_rs kernels; anything else goes to
        ``torch.nn.functional.cross_entropy``.
    target : Tensor
        Class indices (integer) of shape ``()``, ``(N,)`` or ``(N, d1, ...)``, values in
        ``[0, C)`` or ``ignore_index``; or class probabilities (float) of the input's shape.
    weight : Tensor, shape (C,), optional
        Finite, non-negative per-class weights.
    ignore_index : int, default -100
        Index targets equal to it contribute nothing (nor to the mean's divisor).
    reduction : {"mean", "sum", "none"}
        ``"mean"`` divides by the total weight of the non-ignored targets (index targets)
        or the number of rows (probabilities); ``"none"`` gives one loss per row, shape of
        the index target.
    label_smoothing : float in [0, 1], default 0
        Mixes the target with the uniform distribution, as PyTorch does.
    z_loss : float >= 0, default 0
        Adds ``z_loss · logsumexp(x)²`` per non-ignored row (PaLM's z-loss, Liger's
        ``lse_square_scale``; a mean divides it by the number of non-ignored rows), as in
        :func:`xent_rs.cross_entropy`.
    softcap : float > 0, optional
        Replaces the logits by ``softcap · tanh(x / softcap)`` first (Gemma 2); ``-inf``
        stays ``-inf``. Gradients are with respect to the raw logits.

    Returns
    -------
    Tensor
        The loss, of the input's dtype (computed in float32 or wider inside): a scalar, or
        per row for ``reduction="none"``. Differentiable with respect to ``input``; the
        gradient comes from the same fused pass as the loss and is only computed when
        ``input`` requires grad.

    Raises
    ------
    TypeError
        ``input``, ``target`` or ``weight`` is not a tensor, or a dtype the kernels refuse.
    ValueError
        A bad shape, ``reduction``, ``label_smoothing``, class index, or a negative or
        non-finite weight (PyTorch accepts negative weights; the kernels do not).

    Notes
    -----
    ``(N, C)`` input is read in place (no copy) when contiguous, and so is a contiguous
    bfloat16 tensor (viewed through ``ml_dtypes.bfloat16``). ``(N, C, d1, ...)`` input is
    first made class-axis-last, ``input.movedim(1, -1).contiguous()``, which copies it.
    Gradients with respect to a probability target or the weights are not computed by the
    kernels: when one of those requires grad the call goes to ``torch.nn.functional``. The
    gradient is once differentiable (a second derivative raises). ``z_loss`` and
    ``softcap`` have no ``torch.nn.functional`` equivalent: a call that goes to PyTorch with
    either gets the same loss composed in torch,
    ``F.cross_entropy(softcap·tanh(x/softcap), ...) + z_loss·lse²`` over the non-ignored rows
    (``-inf`` kept as ``-inf``; PyTorch's own probability-target loss is NaN at a masked
    class, as for the plain loss).

    Examples
    --------
    >>> import torch, xent_rs.torch as xt
    >>> x = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64, requires_grad=True)
    >>> loss = xt.cross_entropy(x, torch.tensor([2]))
    >>> round(loss.item(), 9)
    0.407605964
    >>> loss.backward()
    >>> x.grad
    tensor([[ 0.0900,  0.2447, -0.3348]], dtype=torch.float64)
    """
    _logits_arg(input)
    _tensor_arg(target, "target")
    _tensor_arg(weight, "weight", optional=True)
    reduction = _v.reduction(reduction)
    label_smoothing = _v.label_smoothing(label_smoothing)
    ignore_index = _v.integer(ignore_index, "ignore_index")
    z_loss = _v.z_loss(z_loss)
    softcap = _v.softcap(softcap)
    if not _on_kernels(input, (target, weight)):
        if z_loss != 0.0 or softcap is not None:
            return _composed_cross_entropy(input, target, weight, ignore_index, reduction,
                                           label_smoothing, z_loss, softcap)
        return F.cross_entropy(input, target, weight, ignore_index=ignore_index,
                               reduction=reduction, label_smoothing=label_smoothing)
    if input.dim() == 0:
        raise ValueError("input: must have a class axis (shape (C,), (N, C) or "
                         "(N, C, d1, ...)), got a 0-d tensor")
    index_shape = input.shape[:1] + input.shape[2:] if input.dim() > 1 else ()
    if target.shape != input.shape and target.shape != index_shape:
        raise ValueError(f"target: must have shape {tuple(index_shape)} (class indices) or "
                         f"{tuple(input.shape)} (class probabilities), got "
                         f"{tuple(target.shape)}")
    if input.dim() > 2:  # the kernels want the class axis last: a copy
        if target.shape == input.shape:
            target = target.movedim(1, -1)
        input = input.movedim(1, -1).contiguous()
    loss, _ = torch.ops.xent_rs.cross_entropy(input, target, weight, ignore_index, reduction,
                                              label_smoothing, _needs_grad(input), z_loss,
                                              softcap)
    return loss


def binary_cross_entropy_with_logits(input: Tensor, target: Tensor,
                                     weight: Optional[Tensor] = None, reduction: str = "mean",
                                     pos_weight: Optional[Tensor] = None) -> Tensor:
    r"""Sigmoid binary cross-entropy from logits, as
    ``torch.nn.functional.binary_cross_entropy_with_logits``.

    Elementwise :math:`\ell = -w\,[p_w\, y \log\sigma(z) + (1-y)\log(1-\sigma(z))]`,
    computed stably as :math:`w\,[p_w y\,\mathrm{softplus}(-z) + (1-y)\,\mathrm{softplus}(z)]`.

    Parameters
    ----------
    input : Tensor, any shape
        Logits. float16, bfloat16, float32 or float64 on the CPU run on the xent_rs
        kernels; anything else goes to ``torch.nn.functional``.
    target : Tensor, shape of ``input``
        Targets in [0, 1] (integer or bool targets are converted).
    weight : Tensor, optional
        Finite, non-negative weights broadcastable to ``input``.
    reduction : {"mean", "sum", "none"}
        ``"mean"`` divides by the number of elements (not by the weights), as PyTorch.
    pos_weight : Tensor, optional
        Finite, non-negative weight of the positive term, broadcast against ``input`` as
        PyTorch does (shape ``(C,)`` for input ``(..., C)``: along the last axis).

    Returns
    -------
    Tensor
        The loss, of the input's dtype: a scalar, or the input's shape for ``"none"``.
        Differentiable with respect to ``input`` (gradient from the same fused pass).

    Raises
    ------
    TypeError
        An argument that is not a tensor, or a dtype the kernels refuse.
    ValueError
        A bad ``reduction``, a target of another shape, a weight that does not broadcast,
        or a negative or non-finite weight.

    Notes
    -----
    Contiguous input of any shape is read in place; a weight that varies along more than
    the last axis is read as one float64 per element. As for :func:`cross_entropy`, a
    target or weight that requires grad sends the call to ``torch.nn.functional``.

    Examples
    --------
    >>> import torch, xent_rs.torch as xt
    >>> z = torch.tensor([0.0, 2.0], dtype=torch.float64, requires_grad=True)
    >>> loss = xt.binary_cross_entropy_with_logits(z, torch.tensor([1.0, 0.0]))
    >>> round(loss.item(), 9)
    1.410037596
    >>> loss.backward()
    >>> z.grad
    tensor([-0.2500,  0.4404], dtype=torch.float64)
    """
    _logits_arg(input)
    _tensor_arg(target, "target")
    _tensor_arg(weight, "weight", optional=True)
    _tensor_arg(pos_weight, "pos_weight", optional=True)
    reduction = _v.reduction(reduction)
    if not _on_kernels(input, (target, weight, pos_weight)):
        return F.binary_cross_entropy_with_logits(input, target, weight, reduction=reduction,
                                                  pos_weight=pos_weight)
    loss, _ = torch.ops.xent_rs.binary_cross_entropy_with_logits(
        input, target, weight, pos_weight, reduction, _needs_grad(input))
    return loss


# ---------------------------------------------------------------------------------- modules --

class CrossEntropyLoss(torch.nn.CrossEntropyLoss):
    r"""``torch.nn.CrossEntropyLoss`` computed by :func:`cross_entropy`.

    A subclass of PyTorch's module: the same attributes (``weight`` a buffer, so it moves
    with ``.to()`` and is in the ``state_dict``; ``ignore_index``, ``reduction``,
    ``label_smoothing``), the same ``repr``, and an ``isinstance`` check for PyTorch's class
    holds.

    Parameters
    ----------
    weight : Tensor, shape (C,), optional
        Finite, non-negative per-class weights.
    ignore_index : int, default -100
        Index targets equal to it contribute nothing.
    reduction : {"mean", "sum", "none"}
        As for :func:`cross_entropy`; checked here, not at the first call.
    label_smoothing : float in [0, 1], default 0
        As for :func:`cross_entropy`.
    z_loss : float >= 0, default 0
        As for :func:`cross_entropy` (attribute ``z_loss``).
    softcap : float > 0, optional
        As for :func:`cross_entropy` (attribute ``softcap``).

    Examples
    --------
    >>> import torch, xent_rs.torch as xt
    >>> loss_fn = xt.CrossEntropyLoss(label_smoothing=0.1)
    >>> loss_fn
    CrossEntropyLoss()
    >>> round(loss_fn(torch.zeros(2, 4), torch.tensor([1, 3])).item(), 6)  # log 4
    1.386294
    """

    def __init__(self, weight: Optional[Tensor] = None, ignore_index: int = -100,
                 reduction: str = "mean", label_smoothing: float = 0.0,
                 z_loss: float = 0.0, softcap: Optional[float] = None) -> None:
        _tensor_arg(weight, "weight", optional=True)
        super().__init__(weight=weight, ignore_index=_v.integer(ignore_index, "ignore_index"),
                         reduction=_v.reduction(reduction),
                         label_smoothing=_v.label_smoothing(label_smoothing))
        self.z_loss = _v.z_loss(z_loss)
        self.softcap = _v.softcap(softcap)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        """The loss of ``input`` against ``target`` (see :func:`cross_entropy`).

        Parameters
        ----------
        input : Tensor, shape (C,), (N, C) or (N, C, d1, ...)
            Logits, class axis 1.
        target : Tensor
            Class indices or class probabilities.

        Returns
        -------
        Tensor
            The loss, reduced as ``self.reduction`` says.
        """
        return cross_entropy(input, target, self.weight, self.ignore_index, self.reduction,
                             self.label_smoothing, self.z_loss, self.softcap)


class BCEWithLogitsLoss(torch.nn.BCEWithLogitsLoss):
    r"""``torch.nn.BCEWithLogitsLoss`` computed by :func:`binary_cross_entropy_with_logits`.

    A subclass of PyTorch's module (``weight`` and ``pos_weight`` are buffers, as there).

    Parameters
    ----------
    weight : Tensor, optional
        Finite, non-negative weights broadcastable to the input.
    reduction : {"mean", "sum", "none"}
        As for :func:`binary_cross_entropy_with_logits`; checked here.
    pos_weight : Tensor, optional
        Finite, non-negative weight of the positive term, broadcast along the last axis.

    Examples
    --------
    >>> import torch, xent_rs.torch as xt
    >>> loss_fn = xt.BCEWithLogitsLoss(pos_weight=torch.tensor([2.0]))
    >>> round(loss_fn(torch.zeros(3), torch.ones(3)).item(), 6)  # 2·log 2
    1.386294
    """

    def __init__(self, weight: Optional[Tensor] = None, reduction: str = "mean",
                 pos_weight: Optional[Tensor] = None) -> None:
        _tensor_arg(weight, "weight", optional=True)
        _tensor_arg(pos_weight, "pos_weight", optional=True)
        super().__init__(weight=weight, reduction=_v.reduction(reduction),
                         pos_weight=pos_weight)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        """The loss of ``input`` against ``target`` (see
        :func:`binary_cross_entropy_with_logits`).

        Parameters
        ----------
        input : Tensor
            Logits, any shape.
        target : Tensor
            Targets in [0, 1], shape of ``input``.

        Returns
        -------
        Tensor
            The loss, reduced as ``self.reduction`` says.
        """
        return binary_cross_entropy_with_logits(input, target, self.weight, self.reduction,
                                                self.pos_weight)


# --- linear_cross_entropy (issue 13) ---

@torch.library.custom_op("xent_rs::linear_cross_entropy", mutates_args=(), device_types="cpu")
def _linear_ce_op(e: Tensor, c: Tensor, targets: Tensor, bias: Optional[Tensor],
                  ignore_index: int, softcap: Optional[float], reduction: str,
                  need_grad: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Fused ``cross_entropy(e @ c.T + bias, targets)`` without the logits; returns
    ``(loss, grad_e, grad_c, grad_bias)``, the gradients of the reduced loss (empty unless
    ``need_grad``; ``grad_bias`` empty without a bias; never for ``"none"``, whose backward
    is :func:`_linear_ce_backward_op`)."""
    need = need_grad and reduction != "none"
    res = _xr.linear_cross_entropy(
        _numpy(e), _numpy(c), _numpy(targets), bias=None if bias is None else _numpy(bias),
        ignore_index=ignore_index, softcap=softcap, reduction=reduction, return_grad=need)
    if not need:
        return (_linear_loss(res, reduction, e), e.new_empty((0,)), c.new_empty((0,)),
                e.new_empty((0,)))
    gb = _tensor(res[3], bias.dtype) if bias is not None else e.new_empty((0,))
    return (_linear_loss(res[0], reduction, e), _tensor(res[1], e.dtype),
            _tensor(res[2], c.dtype), gb)


def _linear_loss(loss: Any, reduction: str, e: Tensor) -> Tensor:
    """The loss (float32 or float64 from the core) in ``e``'s dtype, as PyTorch gives it."""
    if reduction == "none":
        return torch.from_numpy(np.asarray(loss)).to(e.dtype)
    return torch.scalar_tensor(float(loss), dtype=e.dtype)


@_linear_ce_op.register_fake
def _linear_ce_fake(e: Tensor, c: Tensor, targets: Tensor, bias: Optional[Tensor],
                    ignore_index: int, softcap: Optional[float], reduction: str,
                    need_grad: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    need = need_grad and reduction != "none"
    loss = e.new_empty(e.shape[:-1] if reduction == "none" else ())
    return (loss, e.new_empty(e.shape if need else (0,)), c.new_empty(c.shape if need else (0,)),
            e.new_empty(bias.shape if need and bias is not None else (0,)))


@torch.library.custom_op("xent_rs::linear_cross_entropy_backward", mutates_args=(),
                         device_types="cpu")
def _linear_ce_backward_op(e: Tensor, c: Tensor, targets: Tensor, bias: Optional[Tensor],
                           grad_loss: Tensor, ignore_index: int,
                           softcap: Optional[float]) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of ``Σ_i grad_loss[i] · loss_i`` (per-row losses): ``(grad_e, grad_c,
    grad_bias)`` (``grad_bias`` empty without a bias), recomputed chunk by chunk."""
    from xent_rs._linear import _fused

    gh, gw, gb = _fused(_numpy(e), _numpy(c), _numpy(targets),
                        None if bias is None else _numpy(bias), ignore_index, softcap,
                        _numpy(grad_loss.to(e.dtype if e.dtype == torch.float64
                                            else torch.float32)))
    return (_tensor(gh, e.dtype), _tensor(gw, c.dtype),
            _tensor(gb, bias.dtype) if bias is not None else e.new_empty((0,)))


@_linear_ce_backward_op.register_fake
def _linear_ce_backward_fake(e: Tensor, c: Tensor, targets: Tensor, bias: Optional[Tensor],
                             grad_loss: Tensor, ignore_index: int,
                             softcap: Optional[float]) -> tuple[Tensor, Tensor, Tensor]:
    return (e.new_empty(e.shape), c.new_empty(c.shape),
            e.new_empty(bias.shape if bias is not None else (0,)))


def _linear_ce_setup(ctx: Any, inputs: tuple, output: tuple) -> None:
    e, c, targets, bias, ignore_index, softcap, reduction, need_grad = inputs
    ctx.mark_non_differentiable(*output[1:])
    ctx.set_materialize_grads(False)
    ctx.reduction, ctx.need_grad, ctx.has_bias = reduction, need_grad, bias is not None
    ctx.ignore_index, ctx.softcap = ignore_index, softcap
    if reduction == "none":
        ctx.save_for_backward(e, c, targets, bias)
    else:
        ctx.save_for_backward(*output[1:])


def _linear_ce_backward(ctx: Any, grad_loss: Optional[Tensor], *_unused: Any) -> tuple:
    none = (None,) * 8
    if grad_loss is None:
        return none
    if ctx.needs_input_grad[2]:
        raise NotImplementedError("xent_rs.torch.linear_cross_entropy: targets have no gradient")
    if not ctx.need_grad:
        raise RuntimeError(
            "xent_rs.torch: the operator ran with need_grad=False, so it has no gradient to "
            "give; call it with need_grad=True when e, c or bias requires grad")
    if ctx.reduction == "none":
        e, c, targets, bias = ctx.saved_tensors
        ge, gc, gb = torch.ops.xent_rs.linear_cross_entropy_backward(
            e, c, targets, bias, grad_loss, ctx.ignore_index, ctx.softcap)
    else:
        ge, gc, gb = ctx.saved_tensors
        if not _eager_one(grad_loss):
            ge, gc, gb = ge * grad_loss, gc * grad_loss, gb * grad_loss
    return (ge, gc, None, gb if ctx.has_bias else None) + (None,) * 4


_linear_ce_op.register_autograd(_linear_ce_backward, setup_context=_linear_ce_setup)


def linear_cross_entropy(e: Tensor, c: Tensor, targets: Tensor, bias: Optional[Tensor] = None,
                         ignore_index: int = -100, softcap: Optional[float] = None,
                         reduction: str = "mean") -> Tensor:
    r"""Cross-entropy of ``e @ c.T + bias`` without materialising the logits (autograd).

    Apple Cut Cross-Entropy's ``linear_cross_entropy`` arguments (Wijmans et al. 2024):
    embeddings ``e (..., D)``, classifier ``c (V, D)``, ``targets e.shape[:-1]``, optional
    ``bias (V,)``, ``softcap`` :math:`s` (logits :math:`s \tanh(z/s)`), ``reduction`` one of
    ``"mean"``, ``"sum"``, ``"none"``. CPU tensors run on :func:`xent_rs.linear_cross_entropy`
    (float32 compute; float64 in float64; 16-bit accumulated in float32), registered as
    ``torch.ops.xent_rs.linear_cross_entropy`` for ``torch.compile`` and ``opcheck``. With a
    reduced loss the gradients come from the forward pass (the logits are made once); with
    ``"none"`` the backward recomputes them chunk by chunk, weighted by the upstream
    gradient. Other devices or dtypes use ``F.linear`` + ``F.cross_entropy``.

    Parameters
    ----------
    e : Tensor, shape (..., D)
        Embeddings (the last hidden states).
    c : Tensor, shape (V, D)
        Classifier weights.
    targets : Tensor of int, shape ``e.shape[:-1]``
        Class indices in ``[0, V)`` or ``ignore_index``.
    bias : Tensor, shape (V,), optional
    ignore_index : int, default -100
    softcap : float > 0, optional
    reduction : {"mean", "sum", "none"}

    Returns
    -------
    Tensor
        The loss (``e``'s dtype): a scalar, or ``e.shape[:-1]`` for ``"none"``.

    Examples
    --------
    >>> import torch, xent_rs.torch as xt
    >>> e = torch.randn(8, 4, requires_grad=True); c = torch.randn(10, 4, requires_grad=True)
    >>> loss = xt.linear_cross_entropy(e, c, torch.randint(0, 10, (8,)))
    >>> loss.backward(); e.grad.shape, c.grad.shape
    (torch.Size([8, 4]), torch.Size([10, 4]))
    """
    _tensor_arg(e, "e")
    _tensor_arg(c, "c")
    _tensor_arg(targets, "targets")
    _tensor_arg(bias, "bias", optional=True)
    reduction = _v.reduction(reduction)
    if softcap is not None:
        softcap = _v.positive_real(softcap, "softcap")
    ignore_index = _v.integer(ignore_index, "ignore_index")
    tensors = (e, c, bias)
    on_kernels = all(
        t is None or (t.device.type == "cpu" and t.layout == torch.strided
                      and t.dtype in KERNEL_DTYPES
                      and not (t.dtype == torch.bfloat16 and _BFLOAT16 is None))
        for t in tensors) and targets.device.type == "cpu" and not targets.is_floating_point()
    if not on_kernels:
        logits = F.linear(e, c, bias)
        if softcap is not None:
            logits = softcap * torch.tanh(logits / softcap)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                               targets.reshape(-1), ignore_index=ignore_index,
                               reduction=reduction)
        return loss.reshape(targets.shape) if reduction == "none" else loss
    need = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    return torch.ops.xent_rs.linear_cross_entropy(
        e, c, targets, bias, ignore_index, softcap, reduction, need)[0]
