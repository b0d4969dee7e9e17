//! PyO3 bindings, the only module that names Python: extract the arguments, borrow the NumPy
//! buffers in place, release the interpreter around the core call, map the core's typed
//! [`Error`] to a Python exception once. Policy checks on Python values live in
//! `python/xent_rs/_validate.py`; consistency checks that protect memory live in the core, so
//! a call that skips the Python layer gets a `ValueError`, never an out-of-bounds access.

mod args;
mod bootstrap;
mod detach;
mod linear;
mod losses;
mod xla_ffi;

use numpy::{Element as NpElement, PyArray1, PyArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::batch::Logits;
use crate::bce::{self, Bcast, BceOutputs, BceSpec};
use crate::calib;
use crate::cce::{self, CceOutputs, CceSpec};
use crate::parallel;
use crate::real::Real;
use crate::softmax::{self, RowFn};
use args::{data, data_mut, each_float, input, output, targets, Factor, Floats, Labels, Probs};
use detach::run_detached;

/// Checks labels against `[0, k)` / `ignore_index`; returns the `mean` divisor.
#[pyfunction]
#[pyo3(signature = (labels, k, ignore_index, weight=None))]
fn cce_check_labels(
    py: Python<'_>,
    labels: Bound<'_, PyArray1<i64>>,
    k: usize,
    ignore_index: i64,
    weight: Factor<'_>,
) -> PyResult<f64> {
    let (t, w) = (
        input(Some(&labels), "target")?,
        input(weight.as_ref(), "weight")?,
    );
    let (t, w) = (data(&t, "target")?.unwrap_or(&[]), data(&w, "weight")?);
    run_detached(py, t.len(), || {
        cce::check_index_labels(t, k, ignore_index, w)
    })
}

#[allow(clippy::too_many_arguments)]
fn cce_typed<T: Real + NpElement, Y: Real + NpElement>(
    py: Python<'_>,
    logits: &Bound<'_, PyArrayDyn<T>>,
    labels: Labels<'_>,
    probs: Option<&Bound<'_, PyArrayDyn<Y>>>,
    weight: Factor<'_>,
    ignore_index: i64,
    spec: CceSpec<'_>,
    outs: [Option<&Bound<'_, PyAny>>; 4],
    in_place: bool,
) -> PyResult<cce::CceSums> {
    let [losses, lse, grad, hess] = outs;
    let x = input((!in_place).then_some(logits), "logits")?;
    let t = input(labels.as_ref(), "target")?;
    let w = input(weight.as_ref(), "weight")?;
    let y = input(probs, "target")?;
    let (mut l, mut s) = (output::<T>(losses, "losses")?, output::<T>(lse, "lse")?);
    let (mut g, mut h) = (output::<T>(grad, "out")?, output::<T>(hess, "hess")?);
    let targets = targets(data(&t, "target")?, data(&y, "target")?, ignore_index)?;
    let elems = logits.len();
    let logits = data(&x, "logits")?.map_or(Logits::InGrad, Logits::Separate);
    let spec = CceSpec {
        weight: data(&w, "weight")?,
        ..spec
    };
    let out = CceOutputs {
        losses: data_mut(&mut l, "losses")?,
        lse: data_mut(&mut s, "lse")?,
        grad: data_mut(&mut g, "out")?,
        hess: data_mut(&mut h, "hess")?,
    };
    run_detached(py, elems, || cce::cce_batch(logits, targets, &spec, out))
}

/// Fused categorical cross-entropy over `(N, K)` logits; returns the sum of row losses.
/// Gradient and Hessian are divided by `divisor` (the mean's; 1 for the other reductions),
/// the z-loss's by `z_divisor`; the z-loss terms enter the returned sum multiplied by
/// `divisor / z_divisor`, so that dividing it by `divisor` gives the mean.
#[pyfunction]
#[pyo3(signature = (logits, k, labels, probs, weight, ignore_index, label_smoothing, divisor,
                    want_lse, losses=None, lse=None, grad=None, hess=None, in_place=false,
                    z_loss=0.0, z_divisor=1.0, softcap=None))]
#[allow(clippy::too_many_arguments)]
fn cce_forward_backward(
    py: Python<'_>,
    logits: Floats<'_>,
    k: usize,
    labels: Labels<'_>,
    probs: Option<Probs<'_>>,
    weight: Factor<'_>,
    ignore_index: i64,
    label_smoothing: f64,
    divisor: f64,
    want_lse: bool,
    losses: Option<Bound<'_, PyAny>>,
    lse: Option<Bound<'_, PyAny>>,
    grad: Option<Bound<'_, PyAny>>,
    hess: Option<Bound<'_, PyAny>>,
    in_place: bool,
    z_loss: f64,
    z_divisor: f64,
    softcap: Option<f64>,
) -> PyResult<f64> {
    if !(z_loss.is_finite() && z_loss >= 0.0) {
        return Err(PyValueError::new_err(format!(
            "z_loss: must be a finite number >= 0, got {z_loss}"
        )));
    }
    if let Some(c) = softcap.filter(|c| !(c.is_finite() && *c > 0.0)) {
        return Err(PyValueError::new_err(format!(
            "softcap: must be a finite number > 0 (or None), got {c}"
        )));
    }
    let spec = CceSpec {
        k,
        weight: None,
        label_smoothing,
        divisor,
        want_lse,
        z_loss,
        z_divisor,
        softcap,
    };
    let outs = [losses.as_ref(), lse.as_ref(), grad.as_ref(), hess.as_ref()];
    let (w, i) = (weight, ignore_index);
    let sums = match probs {
        None => {
            each_float!(logits, a => cce_typed::<_, f64>(py, &a, labels, None, w, i, spec, outs, in_place))
        }
        Some(Probs::F32(p)) => {
            each_float!(logits, a => cce_typed(py, &a, labels, Some(&p), w, i, spec, outs, in_place))
        }
        Some(Probs::F64(p)) => {
            each_float!(logits, a => cce_typed(py, &a, labels, Some(&p), w, i, spec, outs, in_place))
        }
    }?;
    Ok(if sums.z == 0.0 {
        sums.loss
    } else {
        sums.loss + sums.z * (divisor / z_divisor)
    })
}

/// A broadcast factor: absent, one value, one per last-axis position, or one per element.
fn bcast<'a>(v: Option<&'a [f64]>, full: bool) -> Bcast<'a> {
    match (v, full) {
        (None, _) => Bcast::One,
        (Some([c]), false) => Bcast::Const(*c),
        (Some(v), true) => Bcast::Full(v),
        (Some(v), false) => Bcast::Last(v),
    }
}

#[allow(clippy::too_many_arguments)]
fn bce_typed<T: Real + NpElement, Y: Real + NpElement>(
    py: Python<'_>,
    logits: &Bound<'_, PyArrayDyn<T>>,
    target: &Bound<'_, PyArrayDyn<Y>>,
    last: usize,
    factors: [(Factor<'_>, bool); 2],
    label_smoothing: f64,
    scale: f64,
    outs: [Option<&Bound<'_, PyAny>>; 3],
    in_place: bool,
) -> PyResult<f64> {
    let [(weight, w_full), (pos_weight, pw_full)] = factors;
    let [losses, grad, hess] = outs;
    let x = input((!in_place).then_some(logits), "logits")?;
    let y = input(Some(target), "target")?;
    let (w, pw) = (
        input(weight.as_ref(), "weight")?,
        input(pos_weight.as_ref(), "pos_weight")?,
    );
    let mut l = output::<T>(losses, "losses")?;
    let (mut g, mut h) = (output::<T>(grad, "out")?, output::<T>(hess, "hess")?);
    let spec = BceSpec {
        weight: bcast(data(&w, "weight")?, w_full),
        pos_weight: bcast(data(&pw, "pos_weight")?, pw_full),
        label_smoothing,
        scale,
    };
    let (z, y) = (data(&x, "logits")?, data(&y, "target")?.unwrap_or(&[]));
    let out = BceOutputs {
        losses: data_mut(&mut l, "losses")?,
        grad: data_mut(&mut g, "out")?,
        hess: data_mut(&mut h, "hess")?,
    };
    run_detached(py, y.len(), || bce::bce_batch(z, y, &spec, last, out))
}

/// Elementwise sigmoid BCE over flattened logits; returns the sum of element losses.
#[pyfunction]
#[pyo3(signature = (logits, target, last, weight, weight_full, pos_weight, pos_weight_full,
                    label_smoothing, scale, losses=None, grad=None, hess=None, in_place=false))]
#[allow(clippy::too_many_arguments)]
fn bce_forward_backward(
    py: Python<'_>,
    logits: Floats<'_>,
    target: Probs<'_>,
    last: usize,
    weight: Factor<'_>,
    weight_full: bool,
    pos_weight: Factor<'_>,
    pos_weight_full: bool,
    label_smoothing: f64,
    scale: f64,
    losses: Option<Bound<'_, PyAny>>,
    grad: Option<Bound<'_, PyAny>>,
    hess: Option<Bound<'_, PyAny>>,
    in_place: bool,
) -> PyResult<f64> {
    let factors = [(weight, weight_full), (pos_weight, pos_weight_full)];
    let outs = [losses.as_ref(), grad.as_ref(), hess.as_ref()];
    match target {
        Probs::F32(y) => {
            each_float!(logits, a => bce_typed(py, &a, &y, last, factors, label_smoothing, scale, outs, in_place))
        }
        Probs::F64(y) => {
            each_float!(logits, a => bce_typed(py, &a, &y, last, factors, label_smoothing, scale, outs, in_place))
        }
    }
}

/// The row function `rowwise` computes.
enum RowKind {
    Each(RowFn),
    LogSumExp,
}

impl<'py> FromPyObject<'_, 'py> for RowKind {
    type Error = PyErr;
    fn extract(ob: Borrowed<'_, 'py, PyAny>) -> PyResult<Self> {
        match &*ob.extract::<String>()? {
            "softmax" => Ok(RowKind::Each(RowFn::Softmax)),
            "log_softmax" => Ok(RowKind::Each(RowFn::LogSoftmax)),
            "logsumexp" => Ok(RowKind::LogSumExp),
            other => Err(PyValueError::new_err(format!(
                "kind: must be 'softmax', 'log_softmax' or 'logsumexp', got {other:?}"
            ))),
        }
    }
}

fn rowwise_typed<T: Real + NpElement>(
    py: Python<'_>,
    logits: &Bound<'_, PyArrayDyn<T>>,
    out: &Bound<'_, PyAny>,
    k: usize,
    kind: RowKind,
    in_place: bool,
) -> PyResult<()> {
    let x = input((!in_place).then_some(logits), "logits")?;
    let mut o = output::<T>(Some(out), "out")?;
    let (x, o) = (
        data(&x, "logits")?,
        data_mut(&mut o, "out")?.unwrap_or(&mut []),
    );
    match kind {
        RowKind::Each(f) => run_detached(py, o.len(), || softmax::softmax_batch(x, o, k, f)),
        RowKind::LogSumExp => {
            let x = x.ok_or_else(|| PyValueError::new_err("logsumexp cannot run in place"))?;
            run_detached(py, x.len(), || softmax::logsumexp_batch(x, o, k))
        }
    }
}

/// `softmax`, `log_softmax` (into `out`, the logits' shape) or `logsumexp` (one per row).
#[pyfunction]
#[pyo3(signature = (logits, out, k, kind, in_place=false))]
fn rowwise(
    py: Python<'_>,
    logits: Floats<'_>,
    out: Bound<'_, PyAny>,
    k: usize,
    kind: RowKind,
    in_place: bool,
) -> PyResult<()> {
    each_float!(logits, a => rowwise_typed(py, &a, &out, k, kind, in_place))
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

fn top_label_typed<T: Real + NpElement>(
    py: Python<'_>,
    logits: &Bound<'_, PyArrayDyn<T>>,
    k: usize,
    conf: &Bound<'_, PyAny>,
    argmax: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let x = input(Some(logits), "logits")?;
    let (mut c, mut a) = (
        output::<f64>(Some(conf), "confidence")?,
        output::<i64>(Some(argmax), "argmax")?,
    );
    let x = data(&x, "logits")?.unwrap_or(&[]);
    let c = data_mut(&mut c, "confidence")?.unwrap_or(&mut []);
    let a = data_mut(&mut a, "argmax")?.unwrap_or(&mut []);
    run_detached(py, x.len(), || calib::top_label_batch(x, k, c, a))
}

/// Top-label softmax confidence (float64) and first argmax (int64) of each row, in one pass.
#[pyfunction]
fn top_label(
    py: Python<'_>,
    logits: Floats<'_>,
    k: usize,
    conf: Bound<'_, PyAny>,
    argmax: Bound<'_, PyAny>,
) -> PyResult<()> {
    each_float!(logits, a => top_label_typed(py, &a, k, &conf, &argmax))
}

fn temperature_typed<T: Real + NpElement>(
    py: Python<'_>,
    logits: &Bound<'_, PyArrayDyn<T>>,
    k: usize,
    labels: &Bound<'_, PyArray1<i64>>,
    beta: f64,
    weight: Factor<'_>,
) -> PyResult<calib::TemperatureSums> {
    let (x, t) = (
        input(Some(logits), "logits")?,
        input(Some(labels), "labels")?,
    );
    let w = input(weight.as_ref(), "weight")?;
    let (x, t) = (
        data(&x, "logits")?.unwrap_or(&[]),
        data(&t, "labels")?.unwrap_or(&[]),
    );
    let w = data(&w, "weight")?;
    run_detached(py, x.len(), || calib::temperature_batch(x, k, t, beta, w))
}

/// Weighted sums of the temperature objective `l(β)`, `l'(β)` and of the weights; with
/// `curvature` (a float64 array of one element), `Σ w·l''(β)` of the same pass is written
/// to it (a Newton step's worth of information from one read of the logits).
#[pyfunction]
#[pyo3(signature = (logits, k, labels, beta, weight=None, curvature=None))]
fn temperature_objective(
    py: Python<'_>,
    logits: Floats<'_>,
    k: usize,
    labels: Bound<'_, PyArray1<i64>>,
    beta: f64,
    weight: Factor<'_>,
    curvature: Option<Bound<'_, PyAny>>,
) -> PyResult<(f64, f64, f64)> {
    let mut c = output::<f64>(curvature.as_ref(), "curvature")?;
    let c = data_mut(&mut c, "curvature")?;
    if c.as_ref().is_some_and(|c| c.len() != 1) {
        return Err(PyValueError::new_err(
            "curvature: must have exactly one element",
        ));
    }
    let s = each_float!(logits, a => temperature_typed(py, &a, k, &labels, beta, weight))?;
    if let Some(c) = c {
        c[0] = s.d2loss_dbeta2;
    }
    Ok((s.loss, s.dloss_dbeta, s.weight))
}

#[allow(clippy::too_many_arguments)]
fn temperature_pass_typed<T: Real + NpElement>(
    py: Python<'_>,
    logits: &Bound<'_, PyArrayDyn<T>>,
    k: usize,
    labels: &Bound<'_, PyArray1<i64>>,
    beta: f64,
    weight: Factor<'_>,
    loss: bool,
    scan: bool,
) -> PyResult<calib::PassSums> {
    let (x, t) = (
        input(Some(logits), "logits")?,
        input(Some(labels), "labels")?,
    );
    let w = input(weight.as_ref(), "weight")?;
    let (x, t) = (
        data(&x, "logits")?.unwrap_or(&[]),
        data(&t, "labels")?.unwrap_or(&[]),
    );
    let w = data(&w, "weight")?;
    run_detached(py, x.len(), || {
        calib::temperature_pass(x, k, t, beta, w, loss, scan)
    })
}

/// One fused pass of the temperature fit at `beta`: `(loss_sum, slope_sum, curvature_sum,
/// third_sum, weight_sum, scale, varying, missed, bad, masked_label)` (`third_sum` the
/// weighted third derivative, NaN where the pass has none); the loss only with `loss`, the
/// last five only with `scan` (the largest finite `|z|`; whether some live row has two
/// different unmasked logits, a labelled class without the largest logit, a labelled logit
/// of -inf; whether some row holds NaN, +inf or nothing but -inf). A row whose class has
/// weight 0 is not live.
#[pyfunction]
#[pyo3(signature = (logits, k, labels, beta, weight=None, loss=false, scan=false))]
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn temperature_pass(
    py: Python<'_>,
    logits: Floats<'_>,
    k: usize,
    labels: Bound<'_, PyArray1<i64>>,
    beta: f64,
    weight: Factor<'_>,
    loss: bool,
    scan: bool,
) -> PyResult<(f64, f64, f64, f64, f64, f64, bool, bool, bool, bool)> {
    let s = each_float!(logits, a => temperature_pass_typed(py, &a, k, &labels, beta, weight, loss, scan))?;
    Ok((
        s.loss,
        s.slope,
        s.curvature,
        s.third,
        s.weight,
        s.scale,
        s.varying,
        s.missed,
        s.bad,
        s.masked_label,
    ))
}

fn temperature_scan_typed<T: Real + NpElement>(
    py: Python<'_>,
    logits: &Bound<'_, PyArrayDyn<T>>,
    k: usize,
    labels: &Bound<'_, PyArray1<i64>>,
) -> PyResult<(bool, f64, bool)> {
    let (x, t) = (
        input(Some(logits), "logits")?,
        input(Some(labels), "labels")?,
    );
    let (x, t) = (
        data(&x, "logits")?.unwrap_or(&[]),
        data(&t, "labels")?.unwrap_or(&[]),
    );
    let s = run_detached(py, x.len(), || calib::temperature_scan(x, k, t))?;
    Ok((s.constant, s.scale, s.all_top))
}

/// `(constant, scale, all_top)` of `(N, k)` logits before a temperature fit, one pass (a
/// label of -1 marks a row of zero weight: it counts for the scale only).
#[pyfunction]
fn temperature_scan(
    py: Python<'_>,
    logits: Floats<'_>,
    k: usize,
    labels: Bound<'_, PyArray1<i64>>,
) -> PyResult<(bool, f64, bool)> {
    each_float!(logits, a => temperature_scan_typed(py, &a, k, &labels))
}

#[allow(clippy::too_many_arguments)]
fn calib_stats_typed<T: Real + NpElement>(
    py: Python<'_>,
    scores: &Bound<'_, PyArrayDyn<T>>,
    k: usize,
    from_logits: bool,
    labels: &Bound<'_, PyArray1<i64>>,
    weight: Factor<'_>,
    edges: &Bound<'_, PyArray1<f64>>,
    right: bool,
    out: &Bound<'_, PyAny>,
    top_only: bool,
) -> PyResult<i64> {
    let (x, t) = (
        input(Some(scores), "scores")?,
        input(Some(labels), "labels")?,
    );
    let (w, e) = (
        input(weight.as_ref(), "sample_weight")?,
        input(Some(edges), "edges")?,
    );
    let mut o = output::<f64>(Some(out), "out")?;
    let (x, t) = (
        data(&x, "scores")?.unwrap_or(&[]),
        data(&t, "labels")?.unwrap_or(&[]),
    );
    let (w, edges) = (
        data(&w, "sample_weight")?,
        data(&e, "edges")?.unwrap_or(&[]),
    );
    let o = data_mut(&mut o, "out")?.unwrap_or(&mut []);
    let spec = calib::CalibSpec {
        k,
        from_logits,
        bins: calib::Bins { edges, right },
    };
    let bad = run_detached(py, x.len(), || {
        if top_only {
            calib::calib_top(x, t, w, spec, o)
        } else {
            calib::calib_stats(x, t, w, spec, o)
        }
    })?;
    Ok(bad.map_or(-1, |r| r as i64))
}

/// Adds the streaming calibration statistics of `(N, k)` scores to the float64 `out`
/// (with `top_only`, the top-label bins alone). Returns -1, or the first row whose scores
/// are not valid (`out` is then unchanged).
#[pyfunction]
#[pyo3(signature = (scores, k, from_logits, labels, weight, edges, right, out, top_only=false))]
#[allow(clippy::too_many_arguments)]
fn calib_stats(
    py: Python<'_>,
    scores: Floats<'_>,
    k: usize,
    from_logits: bool,
    labels: Bound<'_, PyArray1<i64>>,
    weight: Factor<'_>,
    edges: Bound<'_, PyArray1<f64>>,
    right: bool,
    out: Bound<'_, PyAny>,
    top_only: bool,
) -> PyResult<i64> {
    each_float!(scores, a => calib_stats_typed(py, &a, k, from_logits, &labels, weight, &edges, right, &out, top_only))
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
    m.add_function(wrap_pyfunction!(calib_stats, m)?)?;
    m.add_function(wrap_pyfunction!(temperature_scan, m)?)?;
    m.add_function(wrap_pyfunction!(temperature_pass, m)?)?;
    m.add_function(wrap_pyfunction!(simd_path, m)?)?;
    m.add_function(wrap_pyfunction!(simd_paths_supported, m)?)?;
    m.add_function(wrap_pyfunction!(cce_check_labels, m)?)?;
    m.add_function(wrap_pyfunction!(cce_forward_backward, m)?)?;
    m.add_function(wrap_pyfunction!(bce_forward_backward, m)?)?;
    m.add_function(wrap_pyfunction!(rowwise, m)?)?;
    m.add_function(wrap_pyfunction!(set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(get_num_threads, m)?)?;
    losses::register(m)?;
    bootstrap::register(m)?;
    linear::register(m)?;
    xla_ffi::register(m)?;
    Ok(())
}
