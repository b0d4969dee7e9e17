//! Bindings of fused linear + cross-entropy and InfoNCE.

use numpy::{Element as NpElement, PyArray1, PyArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;

use super::args::{data, data_mut, input, output};
use super::detach::run_detached;
use crate::linear::{self, LinearInputs, LinearOutputs, LinearReal, LinearSpec};

/// The dtypes the fused kernel computes in (the Python layer widens 16-bit inputs).
#[derive(FromPyObject)]
enum Native<'py> {
    F32(Bound<'py, PyArrayDyn<f32>>),
    F64(Bound<'py, PyArrayDyn<f64>>),
}

fn same<'py, T: NpElement>(
    a: Option<&Bound<'py, PyAny>>,
    what: &str,
) -> PyResult<Option<Bound<'py, PyArrayDyn<T>>>> {
    a.map(|a| {
        a.cast::<PyArrayDyn<T>>()
            .map(|a| a.to_owned())
            .map_err(|_| PyTypeError::new_err(format!("{what}: must have the dtype of hidden")))
    })
    .transpose()
}

#[allow(clippy::too_many_arguments)]
fn typed<T: LinearReal + NpElement>(
    py: Python<'_>,
    hidden: &Bound<'_, PyArrayDyn<T>>,
    weight: &Bound<'_, PyAny>,
    bias: Option<&Bound<'_, PyAny>>,
    labels: &Bound<'_, PyArray1<i64>>,
    row_weight: Option<&Bound<'_, PyAny>>,
    spec: LinearSpec,
    outs: [Option<&Bound<'_, PyAny>>; 4],
) -> PyResult<f64> {
    let w = same::<T>(Some(weight), "weight")?;
    let b = same::<T>(bias, "bias")?;
    let rw = same::<T>(row_weight, "row_weight")?;
    let rw = input(rw.as_ref(), "row_weight")?;
    let (h, w, b) = (
        input(Some(hidden), "hidden")?,
        input(w.as_ref(), "weight")?,
        input(b.as_ref(), "bias")?,
    );
    let t = input(Some(labels), "target")?;
    let [losses, gh, gw, gb] = outs;
    let (mut l, mut gh, mut gw, mut gb) = (
        output::<T>(losses, "losses")?,
        output::<T>(gh, "grad_hidden")?,
        output::<T>(gw, "grad_weight")?,
        output::<T>(gb, "grad_bias")?,
    );
    let inp = LinearInputs {
        hidden: data(&h, "hidden")?.unwrap_or(&[]),
        weight: data(&w, "weight")?.unwrap_or(&[]),
        bias: data(&b, "bias")?,
        labels: data(&t, "target")?.unwrap_or(&[]),
        row_weight: data(&rw, "row_weight")?,
    };
    let out = LinearOutputs {
        losses: data_mut(&mut l, "losses")?,
        grad_hidden: data_mut(&mut gh, "grad_hidden")?,
        grad_weight: data_mut(&mut gw, "grad_weight")?,
        grad_bias: data_mut(&mut gb, "grad_bias")?,
    };
    let elems = inp.labels.len().saturating_mul(spec.v);
    run_detached(py, elems, || linear::linear_cross_entropy(inp, &spec, out))
}

/// Fused `cross_entropy(scale · hidden @ weight.T + bias, labels)` over row chunks; returns the
/// sum of the row losses and writes the requested per-row losses and gradients (each gradient
/// divided by `divisor`, row `i`'s also multiplied by `row_weight[i]` when given).
/// `chunk_rows` 0 picks the chunk from the shapes.
#[pyfunction]
#[pyo3(signature = (hidden, weight, bias, labels, d, v, ignore_index, label_smoothing, z_loss,
                    softcap, divisor, scale, chunk_rows, losses=None, grad_hidden=None,
                    grad_weight=None, grad_bias=None, row_weight=None))]
#[allow(clippy::too_many_arguments)]
fn linear_cross_entropy(
    py: Python<'_>,
    hidden: Native<'_>,
    weight: Bound<'_, PyAny>,
    bias: Option<Bound<'_, PyAny>>,
    labels: Bound<'_, PyArray1<i64>>,
    d: usize,
    v: usize,
    ignore_index: i64,
    label_smoothing: f64,
    z_loss: f64,
    softcap: Option<f64>,
    divisor: f64,
    scale: f64,
    chunk_rows: usize,
    losses: Option<Bound<'_, PyAny>>,
    grad_hidden: Option<Bound<'_, PyAny>>,
    grad_weight: Option<Bound<'_, PyAny>>,
    grad_bias: Option<Bound<'_, PyAny>>,
    row_weight: Option<Bound<'_, PyAny>>,
) -> PyResult<f64> {
    let (n, bytes) = match &hidden {
        Native::F32(h) => (h.len() / d.max(1), 4),
        Native::F64(h) => (h.len() / d.max(1), 8),
    };
    let spec = LinearSpec {
        d,
        v,
        ignore_index,
        label_smoothing,
        z_loss,
        softcap,
        divisor,
        scale,
        chunk_rows: if chunk_rows == 0 {
            linear::auto_chunk_rows(n, v, bytes)
        } else {
            chunk_rows
        },
    };
    let outs = [
        losses.as_ref(),
        grad_hidden.as_ref(),
        grad_weight.as_ref(),
        grad_bias.as_ref(),
    ];
    match hidden {
        Native::F32(h) => typed(
            py,
            &h,
            &weight,
            bias.as_ref(),
            &labels,
            row_weight.as_ref(),
            spec,
            outs,
        ),
        Native::F64(h) => typed(
            py,
            &h,
            &weight,
            bias.as_ref(),
            &labels,
            row_weight.as_ref(),
            spec,
            outs,
        ),
    }
}

/// The rows per chunk `linear_cross_entropy` uses when `chunk_rows` is 0.
#[pyfunction]
fn linear_auto_chunk_rows(n: usize, v: usize, elem_bytes: usize) -> usize {
    linear::auto_chunk_rows(n, v, elem_bytes)
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(linear_cross_entropy, m)?)?;
    m.add_function(wrap_pyfunction!(linear_auto_chunk_rows, m)?)?;
    Ok(())
}
