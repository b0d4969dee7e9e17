//! The element types the kernels read and write: conversions only.
//!
//! Kernels read logits of type `T` and do their arithmetic in `f64` (or, on the SIMD paths,
//! in float32 with f64 sums), so a float32 loss is rounded once, at the end, from a value
//! that carries far more precision than it needs.

/// A logits / gradient element type: float16, bfloat16, float32 or float64.
pub trait Element: Copy + Send + Sync + PartialOrd + 'static {
    const ZERO: Self;
    fn to_f64(self) -> f64;
    /// Rounds `v` to the nearest value of this type (once: no intermediate type).
    fn from_f64(v: f64) -> Self;
}

impl Element for f32 {
    const ZERO: Self = 0.0;
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}

impl Element for f64 {
    const ZERO: Self = 0.0;
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v
    }
}

impl Element for half::f16 {
    const ZERO: Self = half::f16::ZERO;
    #[inline(always)]
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        half::f16::from_f64(v)
    }
}

impl Element for half::bf16 {
    const ZERO: Self = half::bf16::ZERO;
    #[inline(always)]
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        half::bf16::from_f64(v)
    }
}
