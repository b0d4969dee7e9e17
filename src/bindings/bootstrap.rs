//! Bindings of bootstrap calibration statistics.

use numpy::PyArray1;
use pyo3::prelude::*;

use super::args::{data, data_mut, input, output, Factor};
use super::detach::run_detached;
use crate::bootstrap::{self, BootstrapSpec};

/// Poisson-bootstrap sums `(n_resamples, 3, slots)` of per-sample bins and statistics,
/// written to the float64 `out`.
#[pyfunction]
#[pyo3(signature = (bins, a, c, weight, slots, n_resamples, seed, out))]
#[allow(clippy::too_many_arguments)]
fn bootstrap_sums(
    py: Python<'_>,
    bins: Bound<'_, PyArray1<i64>>,
    a: Bound<'_, PyArray1<f64>>,
    c: Bound<'_, PyArray1<f64>>,
    weight: Factor<'_>,
    slots: usize,
    n_resamples: usize,
    seed: u64,
    out: Bound<'_, PyAny>,
) -> PyResult<()> {
    let (bb, ab, cb) = (
        input(Some(&bins), "bins")?,
        input(Some(&a), "a")?,
        input(Some(&c), "c")?,
    );
    let wb = input(weight.as_ref(), "sample_weight")?;
    let mut o = output::<f64>(Some(&out), "out")?;
    let (b, a, c) = (
        data(&bb, "bins")?.unwrap_or(&[]),
        data(&ab, "a")?.unwrap_or(&[]),
        data(&cb, "c")?.unwrap_or(&[]),
    );
    let w = data(&wb, "sample_weight")?;
    let o = data_mut(&mut o, "out")?.unwrap_or(&mut []);
    let spec = BootstrapSpec {
        slots,
        n_resamples,
        seed,
    };
    run_detached(py, b.len().saturating_mul(n_resamples), || {
        bootstrap::bootstrap_sums(b, a, c, w, spec, o)
    })
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(bootstrap_sums, m)?)?;
    Ok(())
}
