//! Arguments as the bindings take them: the accepted arrays (one derived enum per argument,
//! not a dtype switch), borrowing NumPy buffers in place with clear errors, and the one
//! mapping of the core's [`Error`] to Python exceptions.

use numpy::ndarray::Dimension;
use numpy::{
    Element as NpElement, PyArray, PyArray1, PyArrayDyn, PyArrayMethods, PyReadonlyArray,
    PyReadwriteArrayDyn,
};
use pyo3::exceptions::{PyKeyboardInterrupt, PyMemoryError, PyTypeError, PyValueError};
use pyo3::prelude::*;

use crate::batch::Targets;
use crate::error::Error;

/// Logits of any accepted dtype, not yet borrowed (an in-place call borrows them as `out`).
pub enum Floats<'py> {
    F32(Bound<'py, PyArrayDyn<f32>>),
    F64(Bound<'py, PyArrayDyn<f64>>),
    F16(Bound<'py, PyArrayDyn<half::f16>>),
    BF16(Bound<'py, PyArrayDyn<half::bf16>>),
}

/// Whether `ob` is an array of `ml_dtypes.bfloat16` (NumPy has no such dtype of its own, so
/// the name is asked first: looking the dtype up when ml_dtypes is not loaded would fail).
fn is_bfloat16(ob: &Bound<'_, PyAny>) -> bool {
    ob.getattr("dtype")
        .and_then(|d| d.getattr("name"))
        .is_ok_and(|n| n.eq("bfloat16").unwrap_or(false))
}

impl<'py> FromPyObject<'_, 'py> for Floats<'py> {
    type Error = PyErr;
    fn extract(ob: Borrowed<'_, 'py, PyAny>) -> PyResult<Self> {
        if let Ok(a) = ob.cast::<PyArrayDyn<f32>>() {
            return Ok(Floats::F32(a.to_owned()));
        }
        if let Ok(a) = ob.cast::<PyArrayDyn<f64>>() {
            return Ok(Floats::F64(a.to_owned()));
        }
        if let Ok(a) = ob.cast::<PyArrayDyn<half::f16>>() {
            return Ok(Floats::F16(a.to_owned()));
        }
        if is_bfloat16(&ob) {
            if let Ok(a) = ob.cast::<PyArrayDyn<half::bf16>>() {
                return Ok(Floats::BF16(a.to_owned()));
            }
        }
        Err(PyTypeError::new_err(
            "logits: must be a NumPy array of float16, bfloat16, float32 or float64",
        ))
    }
}

/// `$body` with `$a` bound to the typed array inside `$floats` (a [`Floats`]).
macro_rules! each_float {
    ($floats:expr, $a:ident => $body:expr) => {
        match $floats {
            Floats::F32($a) => $body,
            Floats::F64($a) => $body,
            Floats::F16($a) => $body,
            Floats::BF16($a) => $body,
        }
    };
}
pub(crate) use each_float;

/// Float targets (class probabilities, BCE targets) in their own precision, independent of
/// the logits' dtype (the Python layer widens 16-bit targets to float32, exactly).
#[derive(FromPyObject)]
pub enum Probs<'py> {
    F32(Bound<'py, PyArrayDyn<f32>>),
    F64(Bound<'py, PyArrayDyn<f64>>),
}

pub fn to_py(e: Error) -> PyErr {
    match e {
        Error::Alloc { .. } => PyMemoryError::new_err(e.to_string()),
        Error::Cancelled => PyKeyboardInterrupt::new_err(e.to_string()),
        _ => PyValueError::new_err(e.to_string()),
    }
}
fn borrow_err(what: &str, e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(format!(
        "{what}: cannot be used here ({e}): it may share memory with another argument; only out=logits may overlap an input"
    ))
}

/// Borrows an input array read-only; `None` stays `None`.
pub fn input<'py, T: NpElement, D: Dimension>(
    a: Option<&Bound<'py, PyArray<T, D>>>,
    what: &str,
) -> PyResult<Option<PyReadonlyArray<'py, T, D>>> {
    a.map(|a| a.try_readonly().map_err(|e| borrow_err(what, e)))
        .transpose()
}

/// Borrows an optional output buffer of the logits' dtype for writing.
pub fn output<'py, T: NpElement>(
    a: Option<&Bound<'py, PyAny>>,
    what: &str,
) -> PyResult<Option<PyReadwriteArrayDyn<'py, T>>> {
    a.map(|a| {
        let arr = a.cast::<PyArrayDyn<T>>().map_err(|_| {
            PyValueError::new_err(format!("{what}: must be an array of the logits' dtype"))
        })?;
        arr.try_readwrite().map_err(|e| borrow_err(what, e))
    })
    .transpose()
}

/// The contiguous data of a borrowed input.
pub fn data<'a, T: NpElement, D: Dimension>(
    a: &'a Option<PyReadonlyArray<'_, T, D>>,
    what: &str,
) -> PyResult<Option<&'a [T]>> {
    a.as_ref()
        .map(|a| {
            a.as_slice()
                .map_err(|_| PyValueError::new_err(format!("{what}: must be C-contiguous")))
        })
        .transpose()
}

/// The contiguous data of a borrowed output.
pub fn data_mut<'a, T: NpElement>(
    a: &'a mut Option<PyReadwriteArrayDyn<'_, T>>,
    what: &str,
) -> PyResult<Option<&'a mut [T]>> {
    a.as_mut()
        .map(|a| {
            a.as_slice_mut()
                .map_err(|_| PyValueError::new_err(format!("{what}: must be C-contiguous")))
        })
        .transpose()
}

pub type Labels<'py> = Option<Bound<'py, PyArray1<i64>>>;
pub type Factor<'py> = Option<Bound<'py, PyArray1<f64>>>;

/// The targets of a softmax-family call: index labels or probabilities, exactly one of them.
pub fn targets<'a, Y>(
    labels: Option<&'a [i64]>,
    probs: Option<&'a [Y]>,
    ignore_index: i64,
) -> PyResult<Targets<'a, Y>> {
    match (labels, probs) {
        (Some(labels), None) => Ok(Targets::Index {
            labels,
            ignore_index,
        }),
        (None, Some(y)) => Ok(Targets::Probs(y)),
        _ => Err(to_py(Error::TargetKind)),
    }
}
