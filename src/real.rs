//! The floating-point element types the kernels accept.
//!
//! Kernels read logits of type `T` and do their arithmetic in `f64`, so a float32 loss is
//! rounded once, at the end, from a value that carries far more precision than it needs.

/// A logits / gradient element type.
pub trait Real: Copy + Send + Sync + PartialOrd + 'static {
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
    const ZERO: Self;
}

impl Real for f32 {
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    const ZERO: Self = 0.0;
}

impl Real for f64 {
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
