//! Bindings of the cross-entropy variants.

use numpy::{Element as NpElement, PyArray1, PyArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use super::args::{
    data, data_mut, each_float, input, output, targets, Factor, Floats, Labels, Probs,
};
use super::detach::run_detached;
use crate::batch::Logits;
use crate::losses::{self, EnergySpec, Family, FamilySpec, Outputs, Side};
use crate::real::Real;

/// The loss `family_forward_backward` computes, with its parameter.
fn family_of(name: &str, param: f64) -> PyResult<Family> {
    match name {
        "focal" => Ok(Family::Focal { gamma: param }),
        "poly1" => Ok(Family::Poly1 { epsilon: param }),
        "gce" => Ok(Family::Gce { q: param }),
        other => Err(PyValueError::new_err(format!(
            "family: must be 'focal', 'poly1' or 'gce', got {other:?}"
        ))),
    }
}

#[allow(clippy::too_many_arguments)]
fn family_typed<T: Real + NpElement, Y: Real + NpElement>(
    py: Python<'_>,
    logits: &Bound<'_, PyArrayDyn<T>>,
    labels: &Labels<'_>,
    probs: Option<&Bound<'_, PyArrayDyn<Y>>>,
    alpha: &Factor<'_>,
    ignore_index: i64,
    spec: FamilySpec<'_>,
    outs: [Option<&Bound<'_, PyAny>>; 2],
    in_place: bool,
) -> PyResult<f64> {
    let [losses, grad] = outs;
    let x = input((!in_place).then_some(logits), "logits")?;
    let t = input(labels.as_ref(), "target")?;
    let a = input(alpha.as_ref(), "alpha")?;
    let y = input(probs, "target")?;
    let (mut l, mut g) = (output::<T>(losses, "losses")?, output::<T>(grad, "out")?);
    let targets = targets(data(&t, "target")?, data(&y, "target")?, ignore_index)?;
    let elems = logits.len();
    let logits = data(&x, "logits")?.map_or(Logits::InGrad, Logits::Separate);
    let spec = FamilySpec {
        alpha: data(&a, "alpha")?,
        ..spec
    };
    let out = Outputs {
        losses: data_mut(&mut l, "losses")?,
        grad: data_mut(&mut g, "out")?,
    };
    run_detached(py, elems, || {
        losses::family_batch(logits, targets, &spec, out)
    })
}

/// Focal (`param` = γ), poly-1 (ε) or generalized CE (q) over `(N, K)` logits; returns the
/// sum of row losses. The gradient is divided by `divisor`.
#[pyfunction]
#[pyo3(signature = (logits, k, family, param, labels, probs, alpha, ignore_index,
                    label_smoothing, divisor, losses=None, grad=None, in_place=false))]
#[allow(clippy::too_many_arguments)]
fn family_forward_backward(
    py: Python<'_>,
    logits: Floats<'_>,
    k: usize,
    family: &str,
    param: f64,
    labels: Labels<'_>,
    probs: Option<Probs<'_>>,
    alpha: Factor<'_>,
    ignore_index: i64,
    label_smoothing: f64,
    divisor: f64,
    losses: Option<Bound<'_, PyAny>>,
    grad: Option<Bound<'_, PyAny>>,
    in_place: bool,
) -> PyResult<f64> {
    let spec = FamilySpec {
        k,
        family: family_of(family, param)?,
        alpha: None,
        label_smoothing,
        divisor,
    };
    let outs = [losses.as_ref(), grad.as_ref()];
    let (l, a, i) = (&labels, &alpha, ignore_index);
    match probs {
        None => {
            each_float!(logits, x => family_typed::<_, f64>(py, &x, l, None, a, i, spec, outs, in_place))
        }
        Some(Probs::F32(p)) => {
            each_float!(logits, x => family_typed(py, &x, l, Some(&p), a, i, spec, outs, in_place))
        }
        Some(Probs::F64(p)) => {
            each_float!(logits, x => family_typed(py, &x, l, Some(&p), a, i, spec, outs, in_place))
        }
    }
}

fn sigmoid_focal_typed<T: Real + NpElement, Y: Real + NpElement>(
    py: Python<'_>,
    logits: &Bound<'_, PyArrayDyn<T>>,
    target: &Bound<'_, PyArrayDyn<Y>>,
    spec: losses::SigmoidFocalSpec,
    outs: [Option<&Bound<'_, PyAny>>; 2],
    in_place: bool,
) -> PyResult<f64> {
    let [losses, grad] = outs;
    let x = input((!in_place).then_some(logits), "logits")?;
    let y = input(Some(target), "target")?;
    let (mut l, mut g) = (output::<T>(losses, "losses")?, output::<T>(grad, "out")?);
    let logits = data(&x, "logits")?.map_or(Logits::InGrad, Logits::Separate);
    let y = data(&y, "target")?.unwrap_or(&[]);
    let out = Outputs {
        losses: data_mut(&mut l, "losses")?,
        grad: data_mut(&mut g, "out")?,
    };
    run_detached(py, y.len(), || {
        losses::sigmoid_focal_batch(logits, y, &spec, out)
    })
}

/// torchvision's sigmoid focal loss over flat logits and targets (`alpha < 0`: no
/// balancing); returns the sum of element losses; the gradient is multiplied by `scale`.
#[pyfunction]
#[pyo3(signature = (logits, target, alpha, gamma, scale, losses=None, grad=None, in_place=false))]
#[allow(clippy::too_many_arguments)]
fn sigmoid_focal_forward_backward(
    py: Python<'_>,
    logits: Floats<'_>,
    target: Probs<'_>,
    alpha: f64,
    gamma: f64,
    scale: f64,
    losses: Option<Bound<'_, PyAny>>,
    grad: Option<Bound<'_, PyAny>>,
    in_place: bool,
) -> PyResult<f64> {
    let spec = losses::SigmoidFocalSpec {
        alpha,
        gamma,
        scale,
    };
    let outs = [losses.as_ref(), grad.as_ref()];
    match target {
        Probs::F32(y) => {
            each_float!(logits, x => sigmoid_focal_typed(py, &x, &y, spec, outs, in_place))
        }
        Probs::F64(y) => {
            each_float!(logits, x => sigmoid_focal_typed(py, &x, &y, spec, outs, in_place))
        }
    }
}

fn energy_typed<T: Real + NpElement>(
    py: Python<'_>,
    logits: &Bound<'_, PyArrayDyn<T>>,
    spec: EnergySpec,
    grad: Option<&Bound<'_, PyAny>>,
    in_place: bool,
) -> PyResult<f64> {
    let x = input((!in_place).then_some(logits), "logits")?;
    let mut g = output::<T>(grad, "grad")?;
    let x = data(&x, "logits")?.map_or(Logits::InGrad, Logits::Separate);
    let g = data_mut(&mut g, "grad")?;
    let len = match x {
        Logits::Separate(x) => x.len(),
        Logits::InGrad => g.as_deref().map_or(0, |g| g.len()),
    };
    run_detached(py, len, || losses::energy_batch(x, &spec, g))
}

/// Σ over rows of `relu(E − margin)²` (`outlier=False`) or `relu(margin − E)²`, with
/// `E = −T·logsumexp(x/T)`; the gradient (into `grad`) is divided by `divisor`; with
/// `in_place`, `logits` is `grad` itself and the rows are read from it.
#[pyfunction]
#[pyo3(signature = (logits, k, temperature, margin, outlier, divisor, grad=None, in_place=false))]
#[allow(clippy::too_many_arguments)]
fn energy_margin(
    py: Python<'_>,
    logits: Floats<'_>,
    k: usize,
    temperature: f64,
    margin: f64,
    outlier: bool,
    divisor: f64,
    grad: Option<Bound<'_, PyAny>>,
    in_place: bool,
) -> PyResult<f64> {
    if !(temperature.is_finite() && temperature > 0.0) {
        return Err(PyValueError::new_err("temperature: must be finite and > 0"));
    }
    let spec = EnergySpec {
        k,
        temperature,
        margin,
        side: if outlier { Side::Out } else { Side::In },
        divisor,
    };
    each_float!(logits, x => energy_typed(py, &x, spec, grad.as_ref(), in_place))
}

/// Checks labels against `[0, k)` / `ignore_index`; returns the number of non-ignored rows.
#[pyfunction]
fn family_check_labels(
    py: Python<'_>,
    labels: Bound<'_, PyArray1<i64>>,
    k: usize,
    ignore_index: i64,
) -> PyResult<usize> {
    let t = input(Some(&labels), "target")?;
    let t = data(&t, "target")?.unwrap_or(&[]);
    run_detached(py, t.len(), || losses::check_labels(t, k, ignore_index))
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(family_check_labels, m)?)?;
    m.add_function(wrap_pyfunction!(family_forward_backward, m)?)?;
    m.add_function(wrap_pyfunction!(sigmoid_focal_forward_backward, m)?)?;
    m.add_function(wrap_pyfunction!(energy_margin, m)?)?;
    Ok(())
}
