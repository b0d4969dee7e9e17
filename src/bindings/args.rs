//! Arguments as the bindings take them: the accepted arrays (one derived enum per argument,
//! not a dtype switch), borrowing NumPy buffers in place with clear errors, and the one
//! mapping of the core's [`Error`] to Python exceptions.

use numpy::ndarray::Dimension;
use numpy::{
    Element as NpElement, PyArray, PyArray1, PyArrayDyn, PyArrayMethods, PyReadonlyArray,
    PyReadwriteArrayDyn,
};
use pyo3::exceptions::{PyKeyboardInterrupt, PyMemoryError, PyValueError};
use pyo3::prelude::*;

use crate::error::Error;

/// Logits of any accepted dtype, not yet borrowed (an in-place call borrows them as `out`).
#[derive(FromPyObject)]
pub enum Floats<'py> {
    F32(Bound<'py, PyArrayDyn<f32>>),
    F64(Bound<'py, PyArrayDyn<f64>>),
    F16(Bound<'py, PyArrayDyn<half::f16>>),
}

/// `$body` with `$a` bound to the typed array inside `$floats` (a [`Floats`]).
macro_rules! each_float {
    ($floats:expr, $a:ident => $body:expr) => {
        match $floats {
            Floats::F32($a) => $body,
            Floats::F64($a) => $body,
            Floats::F16($a) => $body,
        }
    };
}
pub(crate) use each_float;

/// Class probabilities of any accepted dtype (independent of the logits').
#[derive(FromPyObject)]
pub enum Probs<'py> {
    F32(Bound<'py, PyArrayDyn<f32>>),
    F64(Bound<'py, PyArrayDyn<f64>>),
    F16(Bound<'py, PyArrayDyn<half::f16>>),
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
