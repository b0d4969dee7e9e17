//! The row primitives of the softmax family per element type, dispatched to the fastest path
//! the type has: portable f64 code by default, the run-time-selected SIMD kernels of
//! [`crate::simd`] for float32, float16 rows widened to float32.

pub use crate::element::Element;
use crate::error::{try_vec, Error};
use crate::rowstats::{exp_sum_of_stored, exp_sum_scalar, row_max_scalar, ExpSum, RowStats};
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
    /// The type rows are computed in: `Self`, or float32 for float16 (batch drivers widen
    /// each chunk into a float32 copy, compute there and round each output once).
    type Work: Real;
    /// Whether `Work` is `Self` (no widening).
    const NATIVE: bool = true;
    /// `out[j] = x[j]` as `Work` (exact).
    fn widen(x: &[Self], out: &mut [Self::Work]) {
        out.iter_mut()
            .zip(x)
            .for_each(|(o, &v)| *o = <Self::Work as Element>::from_f64(v.to_f64()));
    }
    /// `out[j] = w[j]`, rounded to `Self`.
    fn narrow(w: &[Self::Work], out: &mut [Self]) {
        out.iter_mut()
            .zip(w)
            .for_each(|(o, &v)| *o = Self::from_f64(v.to_f64()));
    }

    /// See [`row_max`].
    fn row_max(x: &[Self]) -> f64 {
        row_max_scalar(x)
    }
    /// See [`exp_sum`].
    fn exp_sum(x: &[Self], m: f64, store: Option<&mut [Self]>) -> ExpSum {
        exp_sum_scalar(x, m, store)
    }
    /// [`exp_sum`] without storing, possibly from a cheaper kernel that leaves the rounding
    /// of `x_j − m` in: the sum and a bound on the absolute error that adds to `S − 1`
    /// (0 here: the default is exact).
    fn exp_sum_loose(x: &[Self], m: f64) -> (ExpSum, f64) {
        (Self::exp_sum(x, m, None), 0.0)
    }
    /// [`Real::exp_sum_loose`] for a gradient's row, writing the exponentials to `store`
    /// when given (the cheaper kernel's are a few `1e-7`, at most `6e-6`, relative, and
    /// those that underflow exactly 0; exact here). The sum does not depend on `store`.
    fn exp_sum_loose_grad(x: &[Self], m: f64, store: Option<&mut [Self]>) -> (ExpSum, f64) {
        (Self::exp_sum(x, m, store), 0.0)
    }
    /// Overwrites the row with the exponentials [`Real::exp_sum_loose_grad`] stores.
    fn exp_loose_in_place(v: &mut [Self], m: f64) {
        Self::exp_sum_in_place(v, m);
    }
    /// Overwrites the row with its exponentials `exp(v_j − m)` and returns their sum as
    /// [`exp_sum`] would (exact in f64 here; float32 re-sums what it stored).
    fn exp_sum_in_place(v: &mut [Self], m: f64) -> ExpSum {
        v.iter_mut()
            .for_each(|e| *e = Self::from_f64((e.to_f64() - m).exp()));
        exp_sum_of_stored(v)
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

    #[inline]
    fn row_max(x: &[f32]) -> f64 {
        crate::simd::row_max_f32(x) as f64
    }
    #[inline]
    fn exp_sum(x: &[f32], m: f64, store: Option<&mut [f32]>) -> ExpSum {
        // `m` is a float32 row maximum, so the conversion is exact.
        crate::simd::exp_sum_f32(x, m as f32, store)
    }
    #[inline]
    fn exp_sum_loose(x: &[f32], m: f64) -> (ExpSum, f64) {
        crate::simd::exp_sum_loose_f32(x, m as f32)
    }
    #[inline]
    fn exp_sum_loose_grad(x: &[f32], m: f64, store: Option<&mut [f32]>) -> (ExpSum, f64) {
        crate::simd::exp_sum_loose_grad_f32(x, m as f32, store)
    }
    #[inline]
    fn exp_loose_in_place(v: &mut [f32], m: f64) {
        crate::simd::exp_loose_in_place_f32(v, m as f32)
    }
    #[inline]
    fn exp_sum_in_place(v: &mut [f32], m: f64) -> ExpSum {
        crate::simd::exp_sum_in_place_f32(v, m as f32)
    }
    #[inline]
    fn scale(v: &mut [f32], a: f64) {
        if v.len() < 32 {
            // Short rows: a plain (compiler-vectorised) loop beats the dispatched call.
            let a = a as f32;
            v.iter_mut().for_each(|e| *e *= a);
        } else {
            crate::simd::scale_f32(v, a as f32)
        }
    }
    #[inline]
    fn block_rows(k: usize) -> usize {
        crate::simd::block_rows_f32(k)
    }
    #[inline]
    fn row_block_stats(x: &[f32], k: usize, stats: &mut [RowStats], store: Option<&mut [f32]>) {
        crate::simd::row_block_stats_f32(x, k, stats, store)
    }
    #[inline]
    fn as_f32(x: &[f32]) -> Option<&[f32]> {
        Some(x)
    }
    #[inline]
    fn as_f32_mut(x: &mut [f32]) -> Option<&mut [f32]> {
        Some(x)
    }
}

impl Real for f64 {
    type Work = f64;
}

/// The 16-bit floats: half the bytes to read; the batch drivers widen their rows to float32
/// (exactly) and run them through the float32 kernels.
macro_rules! widened_to_f32 {
    ($($t:ty),*) => {$(
        impl Real for $t {
            type Work = f32;
            const NATIVE: bool = false;
            fn widen(x: &[Self], out: &mut [f32]) {
                x.convert_to_f32_slice(out);
            }
            fn narrow(w: &[f32], out: &mut [Self]) {
                out.convert_from_f32_slice(w);
            }
        }
    )*};
}

// IEEE half precision, and bfloat16 (JAX's and PyTorch's training dtype).
widened_to_f32!(half::f16, half::bf16);

/// A `Work` copy of `x` when `T` is not its own work type (`None` when it is).
pub fn widened<T: Real>(x: &[T]) -> Result<Option<Vec<T::Work>>, Error> {
    if T::NATIVE {
        return Ok(None);
    }
    let mut w = try_vec(x.len(), <T::Work as Element>::ZERO)?;
    T::widen(x, &mut w);
    Ok(Some(w))
}
