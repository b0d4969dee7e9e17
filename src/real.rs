//! The row primitives of the softmax family per element type, dispatched to the fastest path
//! the type has: portable f64 code by default, the run-time-selected SIMD kernels of
//! [`crate::simd`] for float32, float16 rows widened to float32.

pub use crate::element::Element;
use crate::rowstats::{exp_sum_scalar, row_max_scalar, ExpSum, RowStats};
use half::slice::HalfFloatSliceExt;

/// `max_j x_j` as f64 (`-inf` for a row of `-inf`; NaN entries may be skipped here: they
/// propagate through [`exp_sum`] instead).
#[inline]
pub fn row_max<T: Real>(x: &[T]) -> f64 {
    T::row_max(x)
}

/// `Σ exp(x_j − m)` split as in [`ExpSum`], writing each `exp(x_j − m)` to `store` when given.
#[inline]
pub fn exp_sum<T: Real>(x: &[T], m: f64, store: Option<&mut [T]>) -> ExpSum {
    T::exp_sum(x, m, store)
}

/// An element type with its row primitives. The defaults are portable f64 code.
pub trait Real: Element {
    /// The type intermediate rows are kept in (float32 for float16 logits).
    type Work: Real;

    /// See [`row_max`].
    fn row_max(x: &[Self]) -> f64 {
        row_max_scalar(x)
    }
    /// See [`exp_sum`].
    fn exp_sum(x: &[Self], m: f64, store: Option<&mut [Self]>) -> ExpSum {
        exp_sum_scalar(x, m, store)
    }
    /// `v[j] *= a`.
    fn scale(v: &mut [Self], a: f64) {
        v.iter_mut()
            .for_each(|e| *e = Self::from_f64(e.to_f64() * a));
    }
    /// Rows per call of [`Real::row_block_stats`] for rows of `k` elements; 0 when the type
    /// has no such kernel for this `k`.
    fn block_rows(_k: usize) -> usize {
        0
    }
    /// The statistics of [`Real::block_rows`] rows of `k` elements at once (see
    /// [`RowStats`]), writing their exponentials to `store` when given.
    fn row_block_stats(
        _x: &[Self],
        _k: usize,
        _stats: &mut [RowStats],
        _store: Option<&mut [Self]>,
    ) {
        unreachable!("block_rows is 0")
    }
    /// The slice itself when `Self` is float32, for kernels with a float32 SIMD path.
    fn as_f32(_x: &[Self]) -> Option<&[f32]> {
        None
    }
    /// See [`Real::as_f32`].
    fn as_f32_mut(_x: &mut [Self]) -> Option<&mut [f32]> {
        None
    }
}

impl Real for f32 {
    type Work = f32;

    fn row_max(x: &[f32]) -> f64 {
        crate::simd::row_max_f32(x) as f64
    }
    fn exp_sum(x: &[f32], m: f64, store: Option<&mut [f32]>) -> ExpSum {
        // `m` is a float32 row maximum, so the conversion is exact.
        crate::simd::exp_sum_f32(x, m as f32, store)
    }
    fn scale(v: &mut [f32], a: f64) {
        if v.len() < 32 {
            // Short rows: a plain (compiler-vectorised) loop beats the dispatched call.
            let a = a as f32;
            v.iter_mut().for_each(|e| *e *= a);
        } else {
            crate::simd::scale_f32(v, a as f32)
        }
    }
    fn block_rows(k: usize) -> usize {
        crate::simd::block_rows_f32(k)
    }
    fn row_block_stats(x: &[f32], k: usize, stats: &mut [RowStats], store: Option<&mut [f32]>) {
        crate::simd::row_block_stats_f32(x, k, stats, store)
    }
    fn as_f32(x: &[f32]) -> Option<&[f32]> {
        Some(x)
    }
    fn as_f32_mut(x: &mut [f32]) -> Option<&mut [f32]> {
        Some(x)
    }
}

impl Real for f64 {
    type Work = f64;
}

/// IEEE half precision: half the bytes to read, computed in float32 / f64 inside.
impl Real for half::f16 {
    type Work = f32;

    // Rows are widened to float32 (exactly) and run through the float32 SIMD kernels.
    fn row_max(x: &[Self]) -> f64 {
        with_f32_rows(x.len(), |a, _| {
            x.convert_to_f32_slice(a);
            f32::row_max(a)
        })
    }
    fn exp_sum(x: &[Self], m: f64, store: Option<&mut [Self]>) -> ExpSum {
        with_f32_rows(x.len(), |a, b| {
            x.convert_to_f32_slice(a);
            match store {
                Some(s) => {
                    let es = f32::exp_sum(a, m, Some(b));
                    s.convert_from_f32_slice(b);
                    es
                }
                None => f32::exp_sum(a, m, None),
            }
        })
    }
    fn scale(v: &mut [Self], a: f64) {
        with_f32_rows(v.len(), |w, _| {
            v.convert_to_f32_slice(w);
            f32::scale(w, a);
            v.convert_from_f32_slice(w);
        })
    }
}

/// Runs `f` with two per-thread float32 rows of length `n` (reused across calls).
fn with_f32_rows<R>(n: usize, f: impl FnOnce(&mut [f32], &mut [f32]) -> R) -> R {
    thread_local! {
        static ROWS: std::cell::RefCell<(Vec<f32>, Vec<f32>)> =
            const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
    }
    ROWS.with(|rows| {
        let mut rows = rows.borrow_mut();
        let (a, b) = &mut *rows;
        a.resize(n, 0.0);
        b.resize(n, 0.0);
        f(a, b)
    })
}
