//! The floating-point element types the kernels accept.
//!
//! Kernels read logits of type `T` and do their arithmetic in `f64`, so a float32 loss is
//! rounded once, at the end, from a value that carries far more precision than it needs.

use crate::rowstats::{exp_sum_scalar, row_max_scalar, ExpSum};
use half::slice::HalfFloatSliceExt;

/// A logits / gradient element type. The row primitives default to portable f64 code;
/// float32 overrides them with the SIMD kernels chosen at run time ([`crate::simd`]).
pub trait Real: Copy + Send + Sync + PartialOrd + 'static {
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
    const ZERO: Self;
    /// The type intermediate rows are kept in (float32 for float16 logits).
    type Work: Real;

    /// `max_j x_j` (see [`crate::rowstats::row_max`]).
    fn row_max(x: &[Self]) -> f64 {
        row_max_scalar(x)
    }
    /// `Σ exp(x_j − m)`, split exactly (see [`crate::rowstats::exp_sum`]).
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
    /// [`crate::cce::cce_row_finish`]), writing their exponentials to `store` when given.
    fn row_block_stats(
        _x: &[Self],
        _k: usize,
        _stats: &mut [crate::cce::RowStats],
        _store: Option<&mut [Self]>,
    ) {
        unreachable!("block_rows is 0")
    }
    /// A vectorised BCE chunk with constant weights, where the type has one (see
    /// [`crate::simd::bce_chunk_f32`]); `None` means: use the portable per-element loop.
    fn bce_chunk_fast(
        _z: Option<&[Self]>,
        _y: &[Self],
        _c: &crate::simd::BceConsts,
        _losses: Option<&mut [Self]>,
        _grad: Option<&mut [Self]>,
        _hess: Option<&mut [Self]>,
    ) -> Option<f64> {
        None
    }
}

impl Real for f32 {
    type Work = f32;
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    const ZERO: Self = 0.0;

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
    fn row_block_stats(
        x: &[f32],
        k: usize,
        stats: &mut [crate::cce::RowStats],
        store: Option<&mut [f32]>,
    ) {
        crate::simd::row_block_stats_f32(x, k, stats, store)
    }
    fn bce_chunk_fast(
        z: Option<&[f32]>,
        y: &[f32],
        c: &crate::simd::BceConsts,
        losses: Option<&mut [f32]>,
        grad: Option<&mut [f32]>,
        hess: Option<&mut [f32]>,
    ) -> Option<f64> {
        Some(crate::simd::bce_chunk_f32(z, y, c, losses, grad, hess))
    }
}

impl Real for f64 {
    type Work = f64;
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v
    }
    const ZERO: Self = 0.0;
}

/// IEEE half precision: computed in f64 inside, rounded once on output, so half-precision
/// logits halve the bytes read without losing accuracy beyond the output's own rounding.
impl Real for half::f16 {
    type Work = f32;
    #[inline(always)]
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        half::f16::from_f64(v)
    }
    const ZERO: Self = half::f16::ZERO;

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
