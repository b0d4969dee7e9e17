//! The XLA FFI target behind `xent_rs.jax` on the CPU: XLA calls [`handler`] from its own
//! thread with its input and output buffers, and the common case (categorical cross-entropy
//! of integer class indices, no class weights, no `vmap` axes) runs the kernel on them
//! directly, without the interpreter lock. Every other call goes on to the Python handler
//! (a ctypes function pointer that `xent_rs.jax` hands over), which covers all of them.
//!
//! The structures are those of `xla/ffi/api/c_api.h` that the handler reads; it reports API
//! version 0.1, whose layout of them has not changed since.

use std::ffi::{c_char, c_int, c_void, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::batch::{self, Logits, Targets};
use crate::cce::{self, CceOutputs, CceSpec};
use crate::error::Error;
use crate::real::Real;

#[repr(C)]
struct ExtensionBase {
    struct_size: usize,
    kind: c_int,
    next: *mut ExtensionBase,
}

#[repr(C)]
struct ApiVersion {
    struct_size: usize,
    extension_start: *mut c_void,
    major: c_int,
    minor: c_int,
}

#[repr(C)]
struct Metadata {
    struct_size: usize,
    api_version: ApiVersion,
    traits: u32,
}

#[repr(C)]
struct MetadataExtension {
    base: ExtensionBase,
    metadata: *mut Metadata,
}

#[repr(C)]
struct Buffer {
    struct_size: usize,
    extension_start: *mut c_void,
    dtype: c_int,
    data: *mut c_void,
    rank: i64,
    dims: *const i64,
}

/// `XLA_FFI_Args` and `XLA_FFI_Rets`.
#[repr(C)]
struct List {
    struct_size: usize,
    extension_start: *mut c_void,
    size: i64,
    types: *const c_int,
    items: *const *mut Buffer,
}

#[repr(C)]
struct ByteSpan {
    ptr: *const u8,
    len: usize,
}

#[repr(C)]
struct Attrs {
    struct_size: usize,
    extension_start: *mut c_void,
    size: i64,
    types: *const c_int,
    names: *const *const ByteSpan,
    attrs: *const *const Scalar,
}

#[repr(C)]
struct Scalar {
    dtype: c_int,
    value: *const c_void,
}

#[repr(C)]
struct ErrorCreateArgs {
    struct_size: usize,
    extension_start: *mut c_void,
    message: *const c_char,
    errc: c_int,
}

#[repr(C)]
struct Api {
    struct_size: usize,
    extension_start: *mut c_void,
    api_version: ApiVersion,
    internal_api: *const c_void,
    error_create: unsafe extern "C" fn(*mut ErrorCreateArgs) -> *mut c_void,
}

#[repr(C)]
struct CallFrame {
    struct_size: usize,
    extension_start: *mut ExtensionBase,
    api: *const Api,
    ctx: *mut c_void,
    stage: c_int,
    args: List,
    rets: List,
    attrs: Attrs,
}

type Handler = unsafe extern "C" fn(*mut CallFrame) -> *mut c_void;

const METADATA_EXTENSION: c_int = 1;
const SCALAR_ATTR: c_int = 3;
const INVALID_ARGUMENT: c_int = 3;
const INTERNAL: c_int = 13;
const S32: c_int = 4;
const S64: c_int = 5;
const F16: c_int = 10;
const F32: c_int = 11;
const F64: c_int = 12;
const BF16: c_int = 16;

/// The Python handler's address (0 until `xent_rs.jax` registers it).
static FALLBACK: AtomicUsize = AtomicUsize::new(0);
/// Calls the fast path served (for the tests: which path a call took).
static FAST_CALLS: AtomicU64 = AtomicU64::new(0);

/// What the fast path needs, from the call's attributes (`xent_rs.jax` sets them only when
/// the call qualifies: `fast` 1).
struct Options {
    ndim: usize,
    ignore_index: i64,
    label_smoothing: f64,
    reduction: i64, // 0 mean, 1 sum, 2 none
    z_loss: f64,
    softcap: Option<f64>,
}

/// One scalar attribute by name, widened to f64 (i64 for `as_int`).
///
/// # Safety
/// `attrs` must be the call frame's attributes, as XLA passes them.
unsafe fn scalar(attrs: &Attrs, name: &str) -> Option<(c_int, *const c_void)> {
    for i in 0..usize::try_from(attrs.size).ok()? {
        // SAFETY: i < size, the length of XLA's types, names and attrs arrays; each name
        // points to a byte span of `len` bytes, each scalar attribute to an XLA_FFI_Scalar.
        unsafe {
            let span = &**attrs.names.add(i);
            let bytes = std::slice::from_raw_parts(span.ptr, span.len);
            if bytes == name.as_bytes() && *attrs.types.add(i) == SCALAR_ATTR {
                let s = &**attrs.attrs.add(i);
                return Some((s.dtype, s.value));
            }
        }
    }
    None
}

/// # Safety
/// As for [`scalar`].
unsafe fn int_attr(attrs: &Attrs, name: &str) -> Option<i64> {
    // SAFETY: the value points to a scalar of the dtype XLA names.
    unsafe {
        match scalar(attrs, name)? {
            (S64, v) => Some(*(v as *const i64)),
            (S32, v) => Some(i64::from(*(v as *const i32))),
            _ => None,
        }
    }
}

/// # Safety
/// As for [`scalar`].
unsafe fn float_attr(attrs: &Attrs, name: &str) -> Option<f64> {
    // SAFETY: the value points to a scalar of the dtype XLA names.
    unsafe {
        match scalar(attrs, name)? {
            (F64, v) => Some(*(v as *const f64)),
            (F32, v) => Some(f64::from(*(v as *const f32))),
            _ => None,
        }
    }
}

/// # Safety
/// As for [`scalar`].
unsafe fn options(attrs: &Attrs) -> Option<Options> {
    // SAFETY: forwarded.
    unsafe {
        if int_attr(attrs, "fast")? != 1 {
            return None;
        }
        let cap = float_attr(attrs, "softcap")?;
        Some(Options {
            ndim: usize::try_from(int_attr(attrs, "ndim")?).ok()?,
            ignore_index: int_attr(attrs, "ignore_index")?,
            label_smoothing: float_attr(attrs, "label_smoothing")?,
            reduction: int_attr(attrs, "reduction")?,
            z_loss: float_attr(attrs, "z_loss")?,
            softcap: (cap > 0.0).then_some(cap),
        })
    }
}

/// A buffer's dtype and dimensions.
///
/// # Safety
/// `b` must point to an XLA_FFI_Buffer.
unsafe fn dims<'a>(b: *const Buffer) -> (c_int, &'a [i64]) {
    // SAFETY: XLA's buffer has `rank` dimensions at `dims`.
    unsafe {
        let b = &*b;
        let rank = usize::try_from(b.rank).unwrap_or(0);
        let dims = if rank == 0 {
            &[][..]
        } else {
            std::slice::from_raw_parts(b.dims, rank)
        };
        (b.dtype, dims)
    }
}

/// The fast path's result: `None` when the call is not one it takes (the Python handler
/// does it), else the kernel's outcome.
enum Outcome {
    NotMine,
    Done(Result<(), Error>),
}

/// # Safety
/// `f` must be XLA's call frame of an execute call to this target.
unsafe fn fast_path(f: &CallFrame) -> Outcome {
    // SAFETY: the frame's lists hold `size` buffers each, as XLA passes them.
    unsafe {
        let Some(opt) = options(&f.attrs) else {
            return Outcome::NotMine;
        };
        let (n_args, n_rets) = (f.args.size, f.rets.size);
        if n_args != 2 || !(n_rets == 1 || n_rets == 2) || !(0..=2).contains(&opt.reduction) {
            return Outcome::NotMine;
        }
        let (xb, tb) = (*f.args.items, *f.args.items.add(1));
        let ((xt, xd), (tt, td)) = (dims(xb), dims(tb));
        // A vmap axis (the logits' rank is not the traced one) goes to the Python handler.
        if xd.len() != opt.ndim || xd.is_empty() || td != &xd[..xd.len() - 1] {
            return Outcome::NotMine;
        }
        let Ok(sizes) = xd
            .iter()
            .map(|&d| usize::try_from(d))
            .collect::<Result<Vec<_>, _>>()
        else {
            return Outcome::NotMine;
        };
        let k = sizes[sizes.len() - 1];
        let n: usize = sizes[..sizes.len() - 1].iter().product();
        if k == 0 || n == 0 {
            return Outcome::NotMine;
        }
        let labels_owned: Vec<i64>;
        let labels: &[i64] = match tt {
            S64 => std::slice::from_raw_parts((*tb).data as *const i64, n),
            S32 => {
                let t = std::slice::from_raw_parts((*tb).data as *const i32, n);
                labels_owned = t.iter().map(|&v| i64::from(v)).collect();
                &labels_owned
            }
            _ => return Outcome::NotMine,
        };
        let loss = *f.rets.items;
        let grad = (n_rets == 2).then(|| *f.rets.items.add(1));
        let (lt, ld) = dims(loss);
        let want_losses = if opt.reduction == 2 { td } else { &[][..] };
        if lt != xt || ld != want_losses || grad.is_some_and(|g| dims(g) != (xt, xd)) {
            return Outcome::NotMine;
        }
        let run = Run {
            opt: &opt,
            k,
            n,
            labels,
            x: (*xb).data,
            loss: (*loss).data,
            grad: grad.map(|g| (*g).data),
        };
        Outcome::Done(match xt {
            F32 => run.typed::<f32>(),
            F64 => run.typed::<f64>(),
            F16 => run.typed::<half::f16>(),
            BF16 => run.typed::<half::bf16>(),
            _ => return Outcome::NotMine,
        })
    }
}

#[cfg(target_os = "linux")]
extern "C" {
    fn madvise(addr: *mut c_void, len: usize, advice: c_int) -> c_int;
}

/// Asks Linux for transparent huge pages on a large output buffer before it is first
/// written, as NumPy does for its own large arrays and XLA does not for its fresh output
/// buffers (faulting a 1 GB gradient in 4 KiB pages costs several times the kernel; see
/// docs/jax.md). A hint only: failure changes nothing.
fn advise_huge_pages(data: *mut c_void, bytes: usize) {
    const HUGE: usize = 2 << 20;
    const MADV_HUGEPAGE: c_int = 14;
    if bytes < 2 * HUGE {
        return;
    }
    let addr = data as usize;
    let (start, end) = (addr.div_ceil(HUGE) * HUGE, (addr + bytes) / HUGE * HUGE);
    #[cfg(target_os = "linux")]
    if end > start {
        // SAFETY: [start, end) lies inside the output buffer XLA handed over; madvise only
        // changes how its pages are backed, never their contents.
        unsafe { madvise(start as *mut c_void, end - start, MADV_HUGEPAGE) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (start, end);
}

struct Run<'a> {
    opt: &'a Options,
    k: usize,
    n: usize,
    labels: &'a [i64],
    x: *mut c_void,
    loss: *mut c_void,
    grad: Option<*mut c_void>,
}

impl Run<'_> {
    /// What `xr.cross_entropy` does for index targets without weights, writing the loss
    /// (reduced as `_reduced` does: in float32 for 16-bit logits, then rounded once more
    /// to the logits' dtype, as the Python handler's assignment does) and the gradient.
    ///
    /// # Safety
    /// The pointers must be XLA's buffers of the checked shapes, of element type `T`.
    unsafe fn typed<T: Real>(&self) -> Result<(), Error> {
        let opt = self.opt;
        let divisor = batch::check_labels(self.labels, self.k, opt.ignore_index, None)?;
        let elems = self.n * self.k;
        if let Some(g) = self.grad {
            advise_huge_pages(g, elems * std::mem::size_of::<T>());
        }
        let mean = opt.reduction == 0;
        // SAFETY: XLA's input holds n·k elements of T; its outputs hold n losses (for
        // "none") or one, and n·k gradient elements, and are not aliased with the input.
        let (x, losses, grad) = unsafe {
            (
                std::slice::from_raw_parts(self.x as *const T, elems),
                (opt.reduction == 2)
                    .then(|| std::slice::from_raw_parts_mut(self.loss as *mut T, self.n)),
                self.grad
                    .map(|g| std::slice::from_raw_parts_mut(g as *mut T, elems)),
            )
        };
        let spec = CceSpec {
            k: self.k,
            weight: None,
            label_smoothing: opt.label_smoothing,
            divisor: if mean { divisor } else { 1.0 },
            want_lse: false,
            z_loss: opt.z_loss,
            z_divisor: if mean { divisor } else { 1.0 },
            softcap: opt.softcap,
        };
        let targets: Targets<'_, f64> = Targets::Index {
            labels: self.labels,
            ignore_index: opt.ignore_index,
        };
        let out = CceOutputs {
            losses,
            lse: None,
            grad,
            hess: None,
        };
        let sums = cce::cce_batch(Logits::Separate(x), targets, &spec, out)?;
        if opt.reduction != 2 {
            let total = sums.loss + sums.z;
            let value = if mean { total / divisor } else { total };
            let value = if std::mem::size_of::<T>() == 2 {
                f64::from(value as f32)
            } else {
                value
            };
            // SAFETY: the loss output of a reduced loss is one element of T.
            unsafe { *(self.loss as *mut T) = T::from_f64(value) };
        }
        Ok(())
    }
}

/// An XLA error carrying `message` (XLA owns it from here).
///
/// # Safety
/// `f` must be XLA's call frame.
unsafe fn error(f: &CallFrame, message: String, code: c_int) -> *mut c_void {
    let message = CString::new(message.replace('\0', " ")).unwrap_or_default();
    let mut args = ErrorCreateArgs {
        struct_size: std::mem::size_of::<ErrorCreateArgs>(),
        extension_start: std::ptr::null_mut(),
        message: message.as_ptr(),
        errc: code,
    };
    // SAFETY: XLA's API table has error_create, which copies the message.
    unsafe { ((*f.api).error_create)(&mut args) }
}

/// The FFI handler XLA calls.
///
/// # Safety
/// Called by XLA only, with its call frame.
unsafe extern "C" fn handler(frame: *mut CallFrame) -> *mut c_void {
    // SAFETY: XLA passes a valid call frame, and a metadata extension when it asks which
    // API the handler speaks.
    unsafe {
        let f = &*frame;
        let ext = f.extension_start;
        if !ext.is_null() && (*ext).kind == METADATA_EXTENSION {
            let meta = &mut *(*(ext as *mut MetadataExtension)).metadata;
            meta.api_version.major = 0;
            meta.api_version.minor = 1;
            return std::ptr::null_mut();
        }
        match catch_unwind(AssertUnwindSafe(|| fast_path(f))) {
            Ok(Outcome::Done(Ok(()))) => {
                FAST_CALLS.fetch_add(1, Ordering::Relaxed);
                std::ptr::null_mut()
            }
            Ok(Outcome::Done(Err(e))) => error(f, e.to_string(), INVALID_ARGUMENT),
            Ok(Outcome::NotMine) => match FALLBACK.load(Ordering::Acquire) {
                0 => error(
                    f,
                    "xent_rs.jax: no Python handler registered".into(),
                    INTERNAL,
                ),
                address => {
                    let python = std::mem::transmute::<usize, Handler>(address);
                    python(frame)
                }
            },
            Err(_) => error(
                f,
                "xent_rs internal error (a Rust panic); please report it with the inputs".into(),
                INTERNAL,
            ),
        }
    }
}

/// The handler as a PyCapsule for `jax.ffi.register_ffi_target`, after recording the
/// address of the Python handler that takes the calls the fast path does not. The Python
/// handler must stay alive as long as the target can be called (`xent_rs.jax` keeps it).
#[pyfunction]
fn xla_ffi_target(py: Python<'_>, python_handler: usize) -> PyResult<Py<PyAny>> {
    if python_handler == 0 {
        return Err(PyValueError::new_err(
            "python_handler: a null function pointer",
        ));
    }
    FALLBACK.store(python_handler, Ordering::Release);
    let pointer = handler as Handler as *mut c_void;
    // SAFETY: a capsule of a function pointer with no name and no destructor, as
    // jax.ffi.pycapsule makes them; PyCapsule_New returns a new reference or NULL with an
    // exception set.
    unsafe {
        let capsule = pyo3::ffi::PyCapsule_New(pointer, std::ptr::null(), None);
        Bound::from_owned_ptr_or_err(py, capsule).map(Bound::unbind)
    }
}

/// How many calls the fast path has served (tests tell the two paths apart with it).
#[pyfunction]
fn xla_ffi_fast_calls() -> u64 {
    FAST_CALLS.load(Ordering::Relaxed)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(xla_ffi_target, m)?)?;
    m.add_function(wrap_pyfunction!(xla_ffi_fast_calls, m)?)?;
    Ok(())
}
