"""JAX adapter: xent_rs's fused loss kernels as differentiable, jittable JAX functions.

``cross_entropy`` and ``binary_cross_entropy_with_logits`` take JAX arrays (class axis last,
as in the core API) and work on concrete arrays and inside ``jax.jit``, ``jax.grad``,
``jax.value_and_grad`` and ``jax.vmap``. The kernel is called through an XLA FFI target
that reads XLA's input buffers and writes the loss and gradient into XLA's output buffers,
without copies: the extension's handler (Rust, no interpreter lock) runs the common case,
categorical cross-entropy of int32/int64 class indices without class weights, and hands
every other call to a ctypes handler here that runs the core's Python API on the buffers.
On other backends, or if the target cannot be registered, the kernel is called through
``jax.pure_callback`` (which copies every input and output once more). Its one fused pass gives the loss and the gradient together, and
the gradient is saved for the backward pass (a ``jax.custom_vjp``), so the backward pass is
one multiplication by the cotangent (which XLA drops when the cotangent is the literal 1
of ``jax.grad``).

* Reverse mode only: ``jax.jvp`` / ``jax.jacfwd`` raise JAX's ``TypeError`` ("can't apply
  forward-mode autodiff (jvp) to a custom_vjp function"); a second derivative
  (``jax.hessian``, ``grad`` of ``grad``) raises a ``TypeError`` naming xent_rs.
* Not differentiable with respect to ``target``, ``weight`` or ``pos_weight``: asking for
  such a gradient (directly, or through a value that depends on what is differentiated)
  raises a ``TypeError`` naming the argument; wrap it in ``jax.lax.stop_gradient``.
* Returned dtypes are optax's: per-row losses (``reduction="none"``) in the logits' dtype, as
  ``optax.softmax_cross_entropy_with_integer_labels`` and
  ``optax.sigmoid_binary_cross_entropy`` return them, and a ``"mean"`` or ``"sum"`` in the
  logits' dtype too, as ``jnp.mean`` / ``jnp.sum`` of those give (16-bit logits: the core
  accumulates in float64 and rounds once). The gradient has the logits' dtype.
* Shapes and dtypes are checked when the function is traced (``TypeError`` /
  ``ValueError`` naming the argument); values (class indices in range, finite
  non-negative weights) when it runs, as a ``jax.errors.JaxRuntimeError`` carrying the
  core's message (eagerly too: every call is an XLA computation). Weights that are
  concrete arrays are checked at trace time as well.
* ``jax.vmap`` sends the whole batch of problems to the host in one call
  (``vmap_method="expand_dims"``: a shared argument arrives with a leading axis of size 1,
  not tiled), and each problem is reduced on its own, exactly as an unbatched call would.

The kernels run on the CPU: on an accelerator backend the arrays travel to the host and
back (``jax.pure_callback``), so this adapter is meant for CPU training and evaluation.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import sys
import threading
from typing import Any, NamedTuple

import numpy as np

try:
    import jax
    import jax.numpy as jnp
    from jax.typing import ArrayLike
except ImportError as exc:  # the framework is optional: say what to install
    raise ImportError("xent_rs.jax needs JAX, which is not installed: "
                      "pip install xent_rs[jax] (or pip install jax)") from exc

from . import _core
from . import _validate as _v
from . import binary_cross_entropy_with_logits as _core_bce
from . import cross_entropy as _core_cce

__all__ = ["cross_entropy", "binary_cross_entropy_with_logits"]

#: How ``jax.vmap`` batches the host call. "expand_dims" sends the whole batch in one call
#: and gives an argument that is not batched a leading axis of size 1 (the host broadcasts
#: it with zero strides); "broadcast_all" would tile it to the batch size first (a copy of
#: the shared targets or weights per problem, for nothing). See docs/jax.md for timings.
_VMAP_METHOD = "expand_dims"

_FLOATS = tuple(np.dtype(d) for d in (jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64))


class _Spec(NamedTuple):
    """What the host call needs besides the arrays; static and hashable (one compiled
    callback per distinct value)."""

    loss: str                        # "cce" | "bce"
    options: tuple[tuple[str, Any], ...]  # keyword arguments of the core function
    ndims: tuple[tuple[str, int], ...]    # each array argument's rank when traced
    loss_shape: tuple[int, ...]      # the loss's shape for one problem


# ------------------------------------------------------------------------ host side --

def _problem(a, index):
    """Problem ``index`` (over the leading vmap axes) of one host argument: an axis of
    size 1 is an argument that was not batched on it, shared by every problem."""
    return a[tuple(0 if n == 1 else i for i, n in zip(index, a.shape))]


def _run(spec, x, arrays, loss, grad):
    """Runs the core on every problem of the batch, writing the losses into ``loss`` and
    the gradients (when ``grad`` is an array) into ``grad``: one call unless under
    ``jax.vmap``, where the leading axes index the problems (each reduced on its own)."""
    ndims = dict(spec.ndims)
    lead = x.shape[:x.ndim - ndims["logits"]]
    core = _core_cce if spec.loss == "cce" else _core_bce
    for index in np.ndindex(*lead):
        args = {k: _problem(a, index) for k, a in arrays.items()}
        if grad is not None:
            value, _ = core(x[index], **args, **dict(spec.options), return_grad=True,
                            out=grad[index + (...,)])  # a view, even 0-d
        else:
            value = core(x[index], **args, **dict(spec.options))
        with np.errstate(over="ignore"):  # a float32 mean beyond float16's range is inf
            loss[index] = value


def _present(spec):
    """The names of the array arguments other than logits that were given."""
    return [k for k, n in spec.ndims[1:] if n >= 0]


def _callback_host(spec, want_grad, logits, arrays):
    """The ``jax.pure_callback`` fallback: fresh outputs, which JAX then copies."""
    x = np.asarray(logits)
    arrays = {k: np.asarray(a) for k, a in arrays.items()}
    lead = x.shape[:x.ndim - dict(spec.ndims)["logits"]]
    loss = np.empty(lead + spec.loss_shape, dtype=x.dtype)
    grad = np.empty_like(x) if want_grad else None
    _run(spec, x, arrays, loss, grad)
    return (loss, grad) if want_grad else loss


@functools.lru_cache(maxsize=256)
def _callback(spec, want_grad):
    # One callable per (spec, want_grad), so that equal calls share JAX's compiled callback.
    return functools.partial(_callback_host, spec, want_grad)


def _call_host(spec, want_grad, logits, arrays):
    """The host computation as a JAX operation: the FFI target when compiling for the CPU
    (and registered), ``jax.pure_callback`` otherwise (other backends, or forced)."""
    loss = jax.ShapeDtypeStruct(spec.loss_shape, logits.dtype)
    shapes = (loss, jax.ShapeDtypeStruct(logits.shape, logits.dtype)) if want_grad else loss
    arrays = {k: a for k, a in arrays.items() if a is not None}

    def callback(logits, arrays):
        return jax.pure_callback(_callback(spec, want_grad), shapes, logits, arrays,
                                 vmap_method=_VMAP_METHOD)

    if _FFI_TARGET is None or _FORCE_CALLBACK:
        return callback(logits, arrays)

    def ffi(logits, arrays):
        # In the order of spec.ndims, which the handler follows (a dict that has been
        # through a JAX transformation comes back with its keys sorted).
        operands = [arrays[k] for k in _present(spec)]
        call = jax.ffi.ffi_call(_FFI_TARGET, shapes, vmap_method=_VMAP_METHOD)
        return call(logits, *operands, spec_id=np.int64(_spec_id(spec, want_grad)),
                    **_fast_attributes(spec, operands))

    return jax.lax.platform_dependent(logits, arrays, cpu=ffi, default=callback)


_REDUCTIONS = {"mean": 0, "sum": 1, "none": 2}


def _fast_attributes(spec, operands):
    """The attributes that let the extension's FFI handler run the call itself, without
    the interpreter: categorical cross-entropy of int32/int64 class indices without class
    weights (``fast=1``; the handler still sends a call under ``vmap`` to the Python
    handler, telling it by the logits' rank). ``fast=0`` for every other call."""
    opts = dict(spec.options)
    fast = (_FFI_FAST and spec.loss == "cce" and len(operands) == 1
            and np.dtype(operands[0].dtype) in (np.dtype(np.int32), np.dtype(np.int64))
            and -(2**63) <= opts["ignore_index"] < 2**63)
    if not fast:
        return {"fast": np.int64(0)}
    cap = opts.get("softcap")
    return {"fast": np.int64(1), "ndim": np.int64(dict(spec.ndims)["logits"]),
            "ignore_index": np.int64(opts["ignore_index"]),
            "label_smoothing": np.float64(opts["label_smoothing"]),
            "reduction": np.int64(_REDUCTIONS[opts["reduction"]]),
            "z_loss": np.float64(opts.get("z_loss", 0.0)),
            "softcap": np.float64(0.0 if cap is None else cap)}


# ------------------------------------------------------- the XLA FFI target (ctypes) --
# The extension's handler (src/bindings/xla_ffi.rs) is the registered target; the calls it
# does not take itself come here, to a Python function behind a ctypes function pointer:
# XLA hands it its own input and output buffers, the core reads the former and writes the
# loss and gradient straight into the latter. (jax.pure_callback, the
# fallback, copies every input on the way in and every output on the way out.) The
# structures below are those of xla/ffi/api/c_api.h that the handler reads; it reports
# API version 0.1, whose layout of these has not changed since.

class _ExtensionBase(ctypes.Structure):
    pass


_ExtensionBase._fields_ = [("struct_size", ctypes.c_size_t), ("type", ctypes.c_int),
                           ("next", ctypes.POINTER(_ExtensionBase))]


class _ApiVersion(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("extension_start", ctypes.c_void_p),
                ("major", ctypes.c_int), ("minor", ctypes.c_int)]


class _Metadata(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("api_version", _ApiVersion),
                ("traits", ctypes.c_uint32)]


class _MetadataExtension(ctypes.Structure):
    _fields_ = [("extension_base", _ExtensionBase), ("metadata", ctypes.POINTER(_Metadata))]


class _Buffer(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("extension_start", ctypes.c_void_p),
                ("dtype", ctypes.c_int), ("data", ctypes.c_void_p), ("rank", ctypes.c_int64),
                ("dims", ctypes.POINTER(ctypes.c_int64))]


class _List(ctypes.Structure):  # XLA_FFI_Args and XLA_FFI_Rets
    _fields_ = [("struct_size", ctypes.c_size_t), ("extension_start", ctypes.c_void_p),
                ("size", ctypes.c_int64), ("types", ctypes.POINTER(ctypes.c_int)),
                ("items", ctypes.POINTER(ctypes.c_void_p))]


class _Attrs(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("extension_start", ctypes.c_void_p),
                ("size", ctypes.c_int64), ("types", ctypes.POINTER(ctypes.c_int)),
                ("names", ctypes.POINTER(ctypes.c_void_p)),
                ("attrs", ctypes.POINTER(ctypes.c_void_p))]


class _ByteSpan(ctypes.Structure):
    _fields_ = [("ptr", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _Scalar(ctypes.Structure):
    _fields_ = [("dtype", ctypes.c_int), ("value", ctypes.c_void_p)]


class _ErrorCreateArgs(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("extension_start", ctypes.c_void_p),
                ("message", ctypes.c_char_p), ("errc", ctypes.c_int)]


_ErrorCreate = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.POINTER(_ErrorCreateArgs))


class _Api(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("extension_start", ctypes.c_void_p),
                ("api_version", _ApiVersion), ("internal_api", ctypes.c_void_p),
                ("error_create", _ErrorCreate)]


class _CallFrame(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t),
                ("extension_start", ctypes.POINTER(_ExtensionBase)),
                ("api", ctypes.POINTER(_Api)), ("ctx", ctypes.c_void_p), ("stage", ctypes.c_int),
                ("args", _List), ("rets", _List), ("attrs", _Attrs)]


_METADATA_EXTENSION, _SCALAR_ATTR, _INVALID_ARGUMENT = 1, 3, 3
_FFI_DTYPES = {1: np.bool_, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.uint8,
               7: np.uint16, 8: np.uint32, 9: np.uint64, 10: np.float16, 11: np.float32,
               12: np.float64, 16: jnp.bfloat16}
_SPECS: list[tuple[_Spec, bool]] = []
_SPEC_IDS: dict[tuple[_Spec, bool], int] = {}
_SPEC_LOCK = threading.Lock()


def _spec_id(spec, want_grad):
    """The number the FFI call carries as its attribute to name its (spec, want_grad)."""
    key = (spec, want_grad)
    with _SPEC_LOCK:
        if key not in _SPEC_IDS:
            _SPEC_IDS[key] = len(_SPECS)
            _SPECS.append(key)
        return _SPEC_IDS[key]


def _buffer_array(address):
    """A NumPy view of an XLA buffer (no copy; writeable, as the outputs must be)."""
    b = ctypes.cast(address, ctypes.POINTER(_Buffer)).contents
    shape = tuple(b.dims[i] for i in range(b.rank))
    dtype = np.dtype(_FFI_DTYPES[b.dtype])
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes == 0:
        return np.empty(shape, dtype)
    raw = (ctypes.c_char * nbytes).from_address(b.data)
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def _libc_madvise():
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int], ctypes.c_int
    return fn


_MADVISE = _libc_madvise()
_MADV_HUGEPAGE, _HUGE_PAGE = 14, 2 << 20


def _advise_huge_pages(a):
    """Asks Linux for transparent huge pages on a large output buffer before it is first
    written, as NumPy does for its own large allocations. XLA's fresh output buffers are
    not so advised, and faulting in 4 KiB pages made writing a 1 GB gradient take ~9x as
    long as the kernel itself (docs/jax.md). A hint only: failure changes nothing."""
    if _MADVISE is None or a.nbytes < 2 * _HUGE_PAGE:
        return
    addr = a.__array_interface__["data"][0]
    start = -(-addr // _HUGE_PAGE) * _HUGE_PAGE
    end = (addr + a.nbytes) // _HUGE_PAGE * _HUGE_PAGE
    if end > start:
        _MADVISE(start, end - start, _MADV_HUGEPAGE)


def _spec_id_attribute(attrs):
    """The ``spec_id`` scalar among the call's attributes (XLA sorts them by name)."""
    for i in range(attrs.size):
        name = ctypes.cast(attrs.names[i], ctypes.POINTER(_ByteSpan)).contents
        if ctypes.string_at(name.ptr, name.len) == b"spec_id" and attrs.types[i] == _SCALAR_ATTR:
            return ctypes.cast(attrs.attrs[i], ctypes.POINTER(_Scalar)).contents
    raise RuntimeError("xent_rs.jax: the FFI call lost its spec_id attribute")


def _ffi_execute(frame):
    f = frame.contents
    ext = f.extension_start
    if ext and ext.contents.type == _METADATA_EXTENSION:  # XLA asks which API we speak
        meta = ctypes.cast(ext, ctypes.POINTER(_MetadataExtension)).contents.metadata.contents
        meta.api_version.major, meta.api_version.minor = 0, 1
        return None
    try:
        scalar = _spec_id_attribute(f.attrs)
        spec, want_grad = _SPECS[ctypes.cast(scalar.value, ctypes.POINTER(ctypes.c_int64))[0]]
        ins = [_buffer_array(f.args.items[i]) for i in range(f.args.size)]
        outs = [_buffer_array(f.rets.items[i]) for i in range(f.rets.size)]
        for out in outs:
            _advise_huge_pages(out)
        arrays = dict(zip(_present(spec), ins[1:]))
        _run(spec, ins[0], arrays, outs[0], outs[1] if want_grad else None)
        return None
    except Exception as exc:  # noqa: BLE001 - handed to XLA, which raises it in the caller
        message = str(exc).encode("utf-8", "replace")
        args = _ErrorCreateArgs(ctypes.sizeof(_ErrorCreateArgs), None, message,
                                _INVALID_ARGUMENT)
        return f.api.contents.error_create(ctypes.byref(args))


_HANDLER = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.POINTER(_CallFrame))(_ffi_execute)


def _register():
    """Registers the FFI target: the extension's handler (which runs the common case
    itself, without the interpreter, and hands every other call to the ctypes handler
    above), or the ctypes handler alone where the extension has none. None (then
    jax.pure_callback is used) where this JAX has no ``jax.ffi`` or refuses the handler."""
    name = "xent_rs_host_loss"
    python = ctypes.cast(_HANDLER, ctypes.c_void_p).value
    try:
        target = _core.xla_ffi_target(python)
    except AttributeError:  # an extension built without it
        target = jax.ffi.pycapsule(_HANDLER)
    try:
        jax.ffi.register_ffi_target(name, target, platform="cpu")
    except Exception:  # noqa: BLE001 - any failure means: use the portable fallback
        return None
    return name


#: False sends every FFI call to the ctypes handler (tests and benchmarks compare them).
_FFI_FAST = True
_FFI_TARGET = _register()
#: True routes every call through ``jax.pure_callback`` (tests and benchmarks use it; the
#: environment variable is the escape hatch should a future jaxlib change the FFI layout).
_FORCE_CALLBACK = os.environ.get("XENT_RS_JAX_PURE_CALLBACK", "") == "1"


# ------------------------------------------------------------------- differentiation --

@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _loss_and_grad(spec, logits, arrays):
    return _call_host(spec, True, logits, arrays)


@_loss_and_grad.defjvp
def _no_second_derivative(spec, primals, tangents):
    # Reached only when the forward pass of the reverse-mode rule is itself differentiated.
    raise TypeError("xent_rs.jax: second derivatives are not supported (the gradient "
                    "comes from the fused kernel, which has no derivative of its own); "
                    "only reverse-mode first derivatives with respect to logits")


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _loss(spec, logits, arrays):
    return _call_host(spec, False, logits, arrays)


def _loss_fwd(spec, logits, arrays):
    for name, a in arrays.items():
        if a is not None and a.perturbed:
            raise TypeError(f"{name}: xent_rs.jax losses are differentiable with respect to "
                            f"logits only; wrap {name} in jax.lax.stop_gradient")
    loss, grad = _loss_and_grad(spec, logits.value,
                                {k: None if a is None else a.value for k, a in arrays.items()})
    return loss, grad


def _loss_bwd(spec, grad, cotangent):
    # The saved gradient is of the reduced loss, or per row for "none" (the core's gradient
    # of the sum of rows, each row its own): scale by the cotangent, row by row for "none".
    if isinstance(cotangent, jax.custom_derivatives.SymbolicZero):
        return jnp.zeros_like(grad), None
    if spec.loss == "cce" and cotangent.ndim:
        cotangent = cotangent[..., None]
    return (cotangent * grad).astype(grad.dtype), None


_loss.defvjp(_loss_fwd, _loss_bwd, symbolic_zeros=True)


# ------------------------------------------------------------------- trace-time checks --

def _float_logits(logits, min_ndim):
    x = jnp.asarray(logits)
    if np.dtype(x.dtype) not in _FLOATS:
        raise TypeError(f"logits: must be a float16, bfloat16, float32 or float64 array, got "
                        f"{_v.kind_name(np.dtype(x.dtype))} dtype ({x.dtype})")
    if x.ndim < min_ndim:
        raise ValueError(f"logits: must have at least {min_ndim} dimension(s) (the class axis "
                         f"is the last), got shape {x.shape}")
    if min_ndim and x.shape[-1] == 0:
        raise ValueError("logits: the class axis (last) has size 0; need at least one class")
    return x


def _real_array(value, name):
    a = jnp.asarray(value)
    if not (jnp.issubdtype(a.dtype, jnp.integer) or jnp.issubdtype(a.dtype, jnp.floating)
            or a.dtype == jnp.bool_):
        raise TypeError(f"{name}: must be a real-valued array, got dtype {a.dtype}")
    return a


def _factor(value, name):
    """An optional weight: real-valued, its values checked now when they are known."""
    if value is None:
        return None
    a = _real_array(value, name)
    if not isinstance(a, jax.core.Tracer):
        _v.nonneg_weights(np.asarray(a), name)
    return a


def _broadcast_factor(value, name, shape):
    a = _factor(value, name)
    if a is not None:
        try:
            ok = np.broadcast_shapes(a.shape, shape) == tuple(shape)
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"{name}: shape {a.shape} does not broadcast to logits {shape}")
    return a


def _cce_target(target, x):
    t = jnp.asarray(target)
    batch = x.shape[:-1]
    if jnp.issubdtype(t.dtype, jnp.integer):
        if t.shape == x.shape and t.shape != batch:
            raise TypeError(f"target: an integer array of the logits' shape {x.shape} looks "
                            f"like one-hot targets; pass them as float probabilities, or "
                            f"class indices of shape {batch}")
        if t.shape != batch:
            raise ValueError(f"target: class indices must have shape {batch} "
                             f"(logits.shape[:-1]), got {t.shape}")
    elif jnp.issubdtype(t.dtype, jnp.floating):
        if t.shape not in (x.shape, batch):
            raise ValueError(f"target: class probabilities must have the shape of logits "
                             f"{x.shape} (or whole-valued class indices of shape {batch}), "
                             f"got {t.shape}")
    else:
        raise TypeError(f"target: must be integer class indices or float class "
                        f"probabilities, got dtype {t.dtype}")
    return t


def _spec(loss, options, loss_shape, **arrays):
    ndims = tuple((k, -1 if a is None else a.ndim) for k, a in arrays.items())
    return _Spec(loss, tuple(options.items()), ndims, tuple(loss_shape))


# ------------------------------------------------------------------------ public API --

def cross_entropy(logits: ArrayLike, target: ArrayLike, *, weight: ArrayLike | None = None,
                  ignore_index: int = -100, label_smoothing: float = 0.0,
                  reduction: str = "mean", z_loss: float = 0.0,
                  softcap: float | None = None) -> jax.Array:
    r"""Categorical cross-entropy from unnormalised logits, for JAX (class axis last).

    The loss of :func:`xent_rs.cross_entropy` (``torch.nn.functional.cross_entropy``
    semantics, class axis last): for a row with :math:`p = \mathrm{softmax}(x)` and weighted
    target distribution :math:`q`, :math:`-\sum_j q_j \log p_j`. Differentiable with
    ``jax.grad`` with respect to ``logits`` (reverse mode, first order); works under
    ``jax.jit`` and ``jax.vmap``.

    Parameters
    ----------
    logits : jax.Array, float16, bfloat16, float32 or float64, shape (..., K)
        Unnormalised scores; ``-inf`` masks a class. float64 needs ``jax_enable_x64``.
    target : jax.Array
        Class indices of shape ``logits.shape[:-1]`` (any integer dtype, values in
        ``[0, K)`` or ``ignore_index``; whole-valued floats are read as indices too), or
        float class probabilities of shape ``logits.shape``, used in their own precision.
        Not differentiable.
    weight : jax.Array, shape (K,), optional
        Finite, non-negative per-class weights. Not differentiable.
    ignore_index, label_smoothing, reduction
        As for :func:`xent_rs.cross_entropy` (a mean over no non-ignored row is NaN).
    z_loss, softcap
        As for :func:`xent_rs.cross_entropy`: ``z_loss · logsumexp²`` added per non-ignored
        row (PaLM; Liger's ``lse_square_scale``), and logits replaced by
        ``softcap · tanh(x / softcap)`` first (Gemma 2; ``-inf`` stays ``-inf``); static
        Python numbers (one compiled callback per value).

    Returns
    -------
    jax.Array
        The loss in the logits' dtype: a scalar, or shape ``logits.shape[:-1]`` for
        ``"none"`` (as ``optax.softmax_cross_entropy_with_integer_labels`` and ``jnp.mean``
        of it return).

    Raises
    ------
    TypeError
        A wrong dtype; a gradient asked for with respect to ``target`` or ``weight``; a
        second derivative (``jax.jvp`` raises JAX's own ``TypeError`` for forward mode).
    ValueError
        A wrong shape, ``reduction`` or ``label_smoothing``, or a concrete ``weight`` with
        a negative or non-finite value, at trace time.
    jax.errors.JaxRuntimeError
        A class index out of range, or a bad traced weight value, when the computation
        runs (the message is the core's ``ValueError``).

    Notes
    -----
    The forward pass computes the loss and its gradient in one fused pass on the host (an
    XLA FFI target on the CPU backend, ``jax.pure_callback`` on others) and saves the
    gradient; the backward pass multiplies it by the cotangent (row by row for ``"none"``).
    Without differentiation only the loss is computed.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import xent_rs.jax as xj
    >>> logits = jnp.array([[2.0, 0.5, -1.0], [0.0, 0.0, 3.0]])
    >>> labels = jnp.array([0, 2])
    >>> loss, grad = jax.jit(jax.value_and_grad(xj.cross_entropy))(logits, labels)
    >>> round(float(loss), 6)
    0.168117
    >>> grad.shape, grad.dtype
    ((2, 3), dtype('float32'))
    """
    x = _float_logits(logits, 1)
    reduction = _v.reduction(reduction)
    options = {"ignore_index": _v.integer(ignore_index, "ignore_index"),
               "label_smoothing": _v.label_smoothing(label_smoothing),
               "reduction": reduction}
    z, cap = _v.z_loss(z_loss), _v.softcap(softcap)
    if z != 0.0 or cap is not None:
        options.update(z_loss=z, softcap=cap)
    t = _cce_target(target, x)
    w = _factor(weight, "weight")
    if w is not None and w.shape != (x.shape[-1],):
        raise ValueError(f"weight: must have shape ({x.shape[-1]},) (one weight per class), "
                         f"got {w.shape}")
    loss_shape = x.shape[:-1] if reduction == "none" else ()
    arrays = {"target": t, "weight": w}
    return _loss(_spec("cce", options, loss_shape, logits=x, **arrays), x, arrays)


def binary_cross_entropy_with_logits(logits: ArrayLike, target: ArrayLike, *,
                                     weight: ArrayLike | None = None,
                                     pos_weight: ArrayLike | None = None,
                                     label_smoothing: float = 0.0,
                                     reduction: str = "mean") -> jax.Array:
    r"""Sigmoid binary cross-entropy from logits, elementwise, for JAX.

    The loss of :func:`xent_rs.binary_cross_entropy_with_logits`
    (``torch.nn.functional.binary_cross_entropy_with_logits`` semantics):
    :math:`\ell = -w\,[p_w\, y \log\sigma(z) + (1-y)\log(1-\sigma(z))]`, computed stably.
    Differentiable with ``jax.grad`` with respect to ``logits`` (reverse mode, first
    order); works under ``jax.jit`` and ``jax.vmap``.

    Parameters
    ----------
    logits : jax.Array, float16, bfloat16, float32 or float64, any shape
        float64 needs ``jax_enable_x64``.
    target : jax.Array, same shape, values in [0, 1]
        Integer or bool targets are converted. Not differentiable.
    weight : jax.Array, optional
        Finite, non-negative, broadcastable to ``logits``. Not differentiable.
    pos_weight : jax.Array, optional
        Finite, non-negative weight of positive examples, broadcastable to ``logits``
        (shape ``(C,)`` for logits ``(..., C)``). Not differentiable.
    label_smoothing : float in [0, 1]
        Targets become ``y·(1−ε) + ε/2`` (as Keras and optax).
    reduction : {"mean", "sum", "none"}
        ``"mean"`` divides by the number of elements (not the weights), as PyTorch.

    Returns
    -------
    jax.Array
        The loss in the logits' dtype: a scalar, or the logits' shape for ``"none"`` (as
        ``optax.sigmoid_binary_cross_entropy`` and ``jnp.mean`` of it return).

    Raises
    ------
    TypeError, ValueError, jax.errors.JaxRuntimeError
        As for :func:`cross_entropy`.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import xent_rs.jax as xj
    >>> z, y = jnp.array([0.0, 2.0]), jnp.array([1.0, 0.0])
    >>> round(float(xj.binary_cross_entropy_with_logits(z, y, reduction="sum")), 5)
    2.82008
    >>> jax.grad(xj.binary_cross_entropy_with_logits)(z, y)
    Array([-0.25     ,  0.4403985], dtype=float32)
    """
    x = _float_logits(logits, 0)
    options = {"label_smoothing": _v.label_smoothing(label_smoothing),
               "reduction": _v.reduction(reduction)}
    t = _real_array(target, "target")
    if t.shape != x.shape:
        raise ValueError(f"target: must have the shape of logits {x.shape}, got {t.shape}")
    arrays = {"target": t, "weight": _broadcast_factor(weight, "weight", x.shape),
              "pos_weight": _broadcast_factor(pos_weight, "pos_weight", x.shape)}
    loss_shape = x.shape if options["reduction"] == "none" else ()
    return _loss(_spec("bce", options, loss_shape, logits=x, **arrays), x, arrays)
