//! PyO3 wrappers. Each one only converts arguments, borrows the NumPy buffers in place,
//! releases the interpreter around the kernel, and converts back. All checking of values
//! that Python can do cheaply happens in `python/xent_rs/_validate.py`; what reaches here
//! has the right dtypes, shapes and layout, and anything else is a `TypeError`/`ValueError`,
//! never a panic.

use numpy::{
    Element, PyArrayDyn, PyReadonlyArray1, PyReadonlyArrayDyn, PyReadwriteArrayDyn,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;

use crate::bce::{self, Bcast, BceOutputs, BceSpec};
use crate::calib;
use crate::cce::{self, CceOutputs, CceSpec, Logits, Targets};
use crate::parallel;
use crate::real::Real;
use crate::softmax::{self, RowFn};

/// Runs a kernel with the interpreter released. Inputs are checked before any kernel runs,
/// so a panic would be a bug in xent_rs; it becomes a `RuntimeError` here rather than a
/// `PanicException` (which derives from `BaseException` and escapes `except Exception`).
fn run_detached<R: Send>(py: Python<'_>, f: impl FnOnce() -> R + Send) -> PyResult<R> {
    py.detach(|| std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)))
        .map_err(|_| {
            PyRuntimeError::new_err(
                "xent_rs internal error (a Rust panic); please report it with the inputs",
            )
        })
}

fn contiguous<'a, T: Element>(a: &'a PyReadonlyArrayDyn<'_, T>, what: &str) -> PyResult<&'a [T]> {
    a.as_slice()
        .map_err(|_| PyValueError::new_err(format!("{what}: must be C-contiguous")))
}

fn contiguous_mut<'a, T: Element>(
    a: &'a mut PyReadwriteArrayDyn<'_, T>,
    what: &str,
) -> PyResult<&'a mut [T]> {
    a.as_slice_mut()
        .map_err(|_| PyValueError::new_err(format!("{what}: must be C-contiguous and writeable")))
}

fn readonly<'py, T: Element>(
    a: Option<&Bound<'py, PyAny>>,
    what: &str,
) -> PyResult<Option<PyReadonlyArrayDyn<'py, T>>> {
    a.map(|a| {
        a.extract::<PyReadonlyArrayDyn<'py, T>>()
            .map_err(|_| PyTypeError::new_err(format!("{what}: wrong array type or dtype")))
    })
    .transpose()
}

fn readwrite<'py, T: Element>(
    a: Option<&Bound<'py, PyAny>>,
    what: &str,
) -> PyResult<Option<PyReadwriteArrayDyn<'py, T>>> {
    a.map(|a| {
        a.extract::<PyReadwriteArrayDyn<'py, T>>().map_err(|e| {
            PyValueError::new_err(format!(
                "{what}: must be a writeable array of the logits' dtype ({e})"
            ))
        })
    })
    .transpose()
}

/// Calls `$body` with `$T` bound to the element type of `$arr` (float32, float64, float16).
macro_rules! dispatch_float {
    ($arr:expr, $T:ident => $body:expr) => {{
        let arr: &Bound<'_, PyAny> = $arr;
        if arr.cast::<PyArrayDyn<f32>>().is_ok() {
            type $T = f32;
            $body
        } else if arr.cast::<PyArrayDyn<f64>>().is_ok() {
            type $T = f64;
            $body
        } else if arr.cast::<PyArrayDyn<half::f16>>().is_ok() {
            type $T = half::f16;
            $body
        } else {
            Err(PyTypeError::new_err(
                "logits: must be a float16, float32 or float64 NumPy array",
            ))
        }
    }};
}

/// Checks labels against `[0, k)` / `ignore_index`; returns the `mean` divisor.
#[pyfunction]
#[pyo3(signature = (labels, k, ignore_index, weight=None))]
fn cce_check_labels(
    py: Python<'_>,
    labels: PyReadonlyArray1<'_, i64>,
    k: usize,
    ignore_index: i64,
    weight: Option<PyReadonlyArray1<'_, f64>>,
) -> PyResult<f64> {
    let t = labels
        .as_slice()
        .map_err(|_| PyValueError::new_err("target: must be contiguous"))?;
    let w = weight
        .as_ref()
        .map(|w| w.as_slice())
        .transpose()
        .map_err(|_| PyValueError::new_err("weight: must be contiguous"))?;
    if w.is_some_and(|w| w.len() != k) {
        return Err(PyValueError::new_err("weight: must have shape (K,)"));
    }
    run_detached(py, || cce::check_labels(t, k, ignore_index, w))?
        .map_err(|b| {
            PyValueError::new_err(format!(
                "target: class index {} (at flat position {}) is out of range: must be in [0, {k}) or equal to ignore_index={ignore_index}",
                b.value, b.row
            ))
        })
}

#[allow(clippy::too_many_arguments)]
fn cce_typed<T: Real + Element>(
    py: Python<'_>,
    logits: &Bound<'_, PyAny>,
    k: usize,
    labels: Option<PyReadonlyArray1<'_, i64>>,
    probs: Option<&Bound<'_, PyAny>>,
    spec: CceSpec<'_>,
    ignore_index: i64,
    outs: [Option<&Bound<'_, PyAny>>; 4],
    in_place: bool,
) -> PyResult<f64> {
    let [losses, lse, grad, hess] = outs;
    let x_ro = if in_place {
        None
    } else {
        readonly::<T>(Some(logits), "logits")?
    };
    let y_ro = readonly::<T>(probs, "target")?;
    let mut l_rw = readwrite::<T>(losses, "losses")?;
    let mut s_rw = readwrite::<T>(lse, "lse")?;
    let mut g_rw = readwrite::<T>(grad, "out")?;
    let mut h_rw = readwrite::<T>(hess, "hess")?;
    let x = x_ro.as_ref().map(|a| contiguous(a, "logits")).transpose()?;
    let y = y_ro.as_ref().map(|a| contiguous(a, "target")).transpose()?;
    let t = labels
        .as_ref()
        .map(|a| a.as_slice())
        .transpose()
        .map_err(|_| PyValueError::new_err("target: must be contiguous"))?;
    let n_elems = if in_place {
        g_rw.as_ref().map_or(0, |g| g.len())
    } else {
        x.map_or(0, |x| x.len())
    };
    let n = n_elems.checked_div(k).unwrap_or(0);
    let targets = match (t, y) {
        (Some(labels), None) if labels.len() == n => Targets::Index {
            labels,
            ignore_index,
        },
        (None, Some(y)) if y.len() == n * k => Targets::Probs(y),
        _ => return Err(PyValueError::new_err("target: shape does not match logits")),
    };
    let out = CceOutputs {
        losses: l_rw
            .as_mut()
            .map(|a| contiguous_mut(a, "losses"))
            .transpose()?,
        lse: s_rw
            .as_mut()
            .map(|a| contiguous_mut(a, "lse"))
            .transpose()?,
        grad: g_rw
            .as_mut()
            .map(|a| contiguous_mut(a, "out"))
            .transpose()?,
        hess: h_rw
            .as_mut()
            .map(|a| contiguous_mut(a, "hess"))
            .transpose()?,
    };
    for (buf, len, what) in [
        (out.losses.as_deref().map(|b| b.len()), n, "losses"),
        (out.lse.as_deref().map(|b| b.len()), n, "lse"),
        (out.grad.as_deref().map(|b| b.len()), n * k, "out"),
        (out.hess.as_deref().map(|b| b.len()), n * k, "hess"),
    ] {
        if buf.is_some_and(|b| b != len) {
            return Err(PyValueError::new_err(format!("{what}: wrong size")));
        }
    }
    if in_place && out.grad.is_none() {
        return Err(PyValueError::new_err(
            "out: in-place needs the gradient buffer",
        ));
    }
    if let Some(w) = spec.weight {
        if w.len() != k {
            return Err(PyValueError::new_err("weight: must have shape (K,)"));
        }
    }
    if let Targets::Index { labels, .. } = targets {
        // The kernel indexes rows with the labels: check them here as well, so that no call
        // (even one that skips the Python layer) can read out of bounds.
        if let Err(b) = cce::check_labels(labels, k, ignore_index, None) {
            return Err(PyValueError::new_err(format!(
                "target: class index {} is out of range [0, {k})",
                b.value
            )));
        }
    }
    let logits = match x {
        Some(x) => Logits::Separate(x),
        None => Logits::InGrad,
    };
    run_detached(py, || cce::cce_batch(logits, targets, &spec, n, out))
}

/// Fused categorical cross-entropy over `(N, K)` logits; returns the sum of row losses.
#[pyfunction]
#[pyo3(signature = (logits, k, labels, probs, weight, ignore_index, label_smoothing, scale,
                    want_lse, losses=None, lse=None, grad=None, hess=None, in_place=false))]
#[allow(clippy::too_many_arguments)]
fn cce_forward_backward(
    py: Python<'_>,
    logits: &Bound<'_, PyAny>,
    k: usize,
    labels: Option<PyReadonlyArray1<'_, i64>>,
    probs: Option<&Bound<'_, PyAny>>,
    weight: Option<PyReadonlyArray1<'_, f64>>,
    ignore_index: i64,
    label_smoothing: f64,
    scale: f64,
    want_lse: bool,
    losses: Option<&Bound<'_, PyAny>>,
    lse: Option<&Bound<'_, PyAny>>,
    grad: Option<&Bound<'_, PyAny>>,
    hess: Option<&Bound<'_, PyAny>>,
    in_place: bool,
) -> PyResult<f64> {
    if k == 0 {
        return Err(PyValueError::new_err("logits: the class axis has size 0"));
    }
    let w = weight
        .as_ref()
        .map(|w| w.as_slice())
        .transpose()
        .map_err(|_| PyValueError::new_err("weight: must be contiguous"))?;
    let spec = CceSpec {
        k,
        weight: w,
        label_smoothing,
        scale,
        want_lse,
    };
    let outs = [losses, lse, grad, hess];
    dispatch_float!(logits, T => cce_typed::<T>(py, logits, k, labels, probs, spec, ignore_index, outs, in_place))
}

fn bcast<'a>(
    a: &'a Option<PyReadonlyArray1<'_, f64>>,
    full: bool,
    what: &str,
) -> PyResult<Bcast<'a>> {
    match a {
        None => Ok(Bcast::One),
        Some(a) => {
            let s = a
                .as_slice()
                .map_err(|_| PyValueError::new_err(format!("{what}: must be contiguous")))?;
            Ok(match (full, s) {
                (false, [c]) => Bcast::Const(*c),
                (true, _) => Bcast::Full(s),
                (false, _) => Bcast::Last(s),
            })
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn bce_typed<T: Real + Element>(
    py: Python<'_>,
    logits: &Bound<'_, PyAny>,
    target: &Bound<'_, PyAny>,
    spec: BceSpec<'_>,
    last: usize,
    outs: [Option<&Bound<'_, PyAny>>; 3],
    in_place: bool,
) -> PyResult<f64> {
    let [losses, grad, hess] = outs;
    let x_ro = if in_place {
        None
    } else {
        readonly::<T>(Some(logits), "logits")?
    };
    let y_ro = readonly::<T>(Some(target), "target")?.expect("target given");
    let mut l_rw = readwrite::<T>(losses, "losses")?;
    let mut g_rw = readwrite::<T>(grad, "out")?;
    let mut h_rw = readwrite::<T>(hess, "hess")?;
    let x = x_ro.as_ref().map(|a| contiguous(a, "logits")).transpose()?;
    let y = contiguous(&y_ro, "target")?;
    let out = BceOutputs {
        losses: l_rw
            .as_mut()
            .map(|a| contiguous_mut(a, "losses"))
            .transpose()?,
        grad: g_rw
            .as_mut()
            .map(|a| contiguous_mut(a, "out"))
            .transpose()?,
        hess: h_rw
            .as_mut()
            .map(|a| contiguous_mut(a, "hess"))
            .transpose()?,
    };
    let n = y.len();
    let sizes_ok = x.is_none_or(|x| x.len() == n)
        && out.losses.as_deref().is_none_or(|b| b.len() == n)
        && out.grad.as_deref().is_none_or(|b| b.len() == n)
        && out.hess.as_deref().is_none_or(|b| b.len() == n);
    if !sizes_ok || (in_place && out.grad.is_none()) {
        return Err(PyValueError::new_err("target: shape does not match logits"));
    }
    for (b, what) in [(spec.weight, "weight"), (spec.pos_weight, "pos_weight")] {
        let ok = match b {
            Bcast::One | Bcast::Const(_) => true,
            Bcast::Last(v) => last >= 1 && v.len() == last,
            Bcast::Full(v) => v.len() == n,
        };
        if !ok {
            return Err(PyValueError::new_err(format!(
                "{what}: does not broadcast to logits"
            )));
        }
    }
    if let Some(i) = bce::check_targets(y) {
        return Err(PyValueError::new_err(format!(
            "target: values must be in [0, 1]; found {} at flat position {i}",
            y[i].to_f64()
        )));
    }
    let z = x;
    run_detached(py, || bce::bce_batch(z, y, &spec, last, out))
}

/// Elementwise sigmoid BCE over flattened logits; returns the sum of element losses.
#[pyfunction]
#[pyo3(signature = (logits, target, last, weight, weight_full, pos_weight, pos_weight_full,
                    label_smoothing, scale, losses=None, grad=None, hess=None, in_place=false))]
#[allow(clippy::too_many_arguments)]
fn bce_forward_backward(
    py: Python<'_>,
    logits: &Bound<'_, PyAny>,
    target: &Bound<'_, PyAny>,
    last: usize,
    weight: Option<PyReadonlyArray1<'_, f64>>,
    weight_full: bool,
    pos_weight: Option<PyReadonlyArray1<'_, f64>>,
    pos_weight_full: bool,
    label_smoothing: f64,
    scale: f64,
    losses: Option<&Bound<'_, PyAny>>,
    grad: Option<&Bound<'_, PyAny>>,
    hess: Option<&Bound<'_, PyAny>>,
    in_place: bool,
) -> PyResult<f64> {
    let spec = BceSpec {
        weight: bcast(&weight, weight_full, "weight")?,
        pos_weight: bcast(&pos_weight, pos_weight_full, "pos_weight")?,
        label_smoothing,
        scale,
    };
    let outs = [losses, grad, hess];
    dispatch_float!(logits, T => bce_typed::<T>(py, logits, target, spec, last, outs, in_place))
}

fn rowwise_typed<T: Real + Element>(
    py: Python<'_>,
    logits: &Bound<'_, PyAny>,
    out: &Bound<'_, PyAny>,
    k: usize,
    f: Option<RowFn>,
    in_place: bool,
) -> PyResult<()> {
    let x_ro = if in_place {
        None
    } else {
        readonly::<T>(Some(logits), "logits")?
    };
    let mut o_rw = readwrite::<T>(Some(out), "out")?.expect("out given");
    let x = x_ro.as_ref().map(|a| contiguous(a, "logits")).transpose()?;
    let o = contiguous_mut(&mut o_rw, "out")?;
    let n = match x {
        Some(x) => x.len().checked_div(k).unwrap_or(0),
        None => o.len().checked_div(k).unwrap_or(0),
    };
    match f {
        Some(f) => {
            if o.len() != n * k || x.is_some_and(|x| x.len() != n * k) {
                return Err(PyValueError::new_err("out: must have the shape of logits"));
            }
            run_detached(py, || softmax::softmax_batch(x, o, k, f))?;
        }
        None => {
            let x = x.ok_or_else(|| PyValueError::new_err("logsumexp cannot run in place"))?;
            if o.len() != n || (k > 0 && x.len() != n * k) {
                return Err(PyValueError::new_err("out: must have one element per row"));
            }
            run_detached(py, || softmax::logsumexp_batch(x, o, k))?;
        }
    }
    Ok(())
}

/// `kind`: 0 = softmax, 1 = log_softmax, 2 = logsumexp (one value per row into `out`).
#[pyfunction]
#[pyo3(signature = (logits, out, k, kind, in_place=false))]
fn rowwise(
    py: Python<'_>,
    logits: &Bound<'_, PyAny>,
    out: &Bound<'_, PyAny>,
    k: usize,
    kind: u8,
    in_place: bool,
) -> PyResult<()> {
    let f = match kind {
        0 => Some(RowFn::Softmax),
        1 => Some(RowFn::LogSoftmax),
        2 => None,
        _ => return Err(PyValueError::new_err("kind: must be 0, 1 or 2")),
    };
    dispatch_float!(logits, T => rowwise_typed::<T>(py, logits, out, k, f, in_place))
}

#[pyfunction]
fn set_num_threads(n: usize) -> PyResult<()> {
    if n == 0 || n > 1024 {
        return Err(PyValueError::new_err("n: must be an integer in [1, 1024]"));
    }
    parallel::set_num_threads(n);
    Ok(())
}

#[pyfunction]
fn get_num_threads() -> usize {
    parallel::get_num_threads()
}

fn top_label_typed<T: Real + Element>(
    py: Python<'_>,
    logits: &Bound<'_, PyAny>,
    k: usize,
    conf: &Bound<'_, PyAny>,
    argmax: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let x_ro = readonly::<T>(Some(logits), "logits")?.expect("given");
    let mut c_rw = readwrite::<f64>(Some(conf), "confidence")?.expect("given");
    let mut a_rw = readwrite::<i64>(Some(argmax), "argmax")?.expect("given");
    let x = contiguous(&x_ro, "logits")?;
    let c = contiguous_mut(&mut c_rw, "confidence")?;
    let a = contiguous_mut(&mut a_rw, "argmax")?;
    if k == 0 || x.len() != c.len() * k || a.len() != c.len() {
        return Err(PyValueError::new_err(
            "logits: shape does not match the outputs",
        ));
    }
    run_detached(py, || calib::top_label_batch(x, k, c, a))
}

/// Top-label softmax confidence (float64) and first argmax (int64) of each row, in one pass.
#[pyfunction]
fn top_label(
    py: Python<'_>,
    logits: &Bound<'_, PyAny>,
    k: usize,
    conf: &Bound<'_, PyAny>,
    argmax: &Bound<'_, PyAny>,
) -> PyResult<()> {
    dispatch_float!(logits, T => top_label_typed::<T>(py, logits, k, conf, argmax))
}

fn temperature_typed<T: Real + Element>(
    py: Python<'_>,
    logits: &Bound<'_, PyAny>,
    k: usize,
    labels: &[i64],
    beta: f64,
    weight: Option<&[f64]>,
) -> PyResult<(f64, f64, f64)> {
    let x_ro = readonly::<T>(Some(logits), "logits")?.expect("given");
    let x = contiguous(&x_ro, "logits")?;
    if k == 0 || x.len() != labels.len() * k {
        return Err(PyValueError::new_err(
            "labels: must have one label per row of logits",
        ));
    }
    if weight.is_some_and(|w| w.len() != k) {
        return Err(PyValueError::new_err("weight: must have shape (K,)"));
    }
    if let Some(&bad) = labels.iter().find(|&&t| t < 0 || t as u64 >= k as u64) {
        return Err(PyValueError::new_err(format!(
            "labels: {bad} is out of range [0, {k})"
        )));
    }
    let s = run_detached(py, || calib::temperature_batch(x, k, labels, beta, weight))?;
    Ok((s.loss, s.dloss_dbeta, s.weight))
}

/// Weighted sums of the temperature objective `l(β)`, `l'(β)` and of the weights.
#[pyfunction]
#[pyo3(signature = (logits, k, labels, beta, weight=None))]
fn temperature_objective(
    py: Python<'_>,
    logits: &Bound<'_, PyAny>,
    k: usize,
    labels: PyReadonlyArray1<'_, i64>,
    beta: f64,
    weight: Option<PyReadonlyArray1<'_, f64>>,
) -> PyResult<(f64, f64, f64)> {
    let t = labels
        .as_slice()
        .map_err(|_| PyValueError::new_err("labels: must be contiguous"))?;
    let w = weight
        .as_ref()
        .map(|w| w.as_slice())
        .transpose()
        .map_err(|_| PyValueError::new_err("weight: must be contiguous"))?;
    dispatch_float!(logits, T => temperature_typed::<T>(py, logits, k, t, beta, w))
}

/// The float32 instruction-set path in use (`XENT_RS_ISA` can force a lower one).
#[pyfunction]
fn simd_path() -> &'static str {
    crate::simd::active().name()
}

/// Every float32 instruction-set path this CPU supports.
#[pyfunction]
fn simd_paths_supported() -> Vec<&'static str> {
    crate::simd::supported()
        .into_iter()
        .map(|i| i.name())
        .collect()
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(top_label, m)?)?;
    m.add_function(wrap_pyfunction!(temperature_objective, m)?)?;
    m.add_function(wrap_pyfunction!(simd_path, m)?)?;
    m.add_function(wrap_pyfunction!(simd_paths_supported, m)?)?;
    m.add_function(wrap_pyfunction!(cce_check_labels, m)?)?;
    m.add_function(wrap_pyfunction!(cce_forward_backward, m)?)?;
    m.add_function(wrap_pyfunction!(bce_forward_backward, m)?)?;
    m.add_function(wrap_pyfunction!(rowwise, m)?)?;
    m.add_function(wrap_pyfunction!(set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(get_num_threads, m)?)?;
    Ok(())
}
