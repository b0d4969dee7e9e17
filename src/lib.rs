//! xent_rs: fused, numerically exact cross-entropy kernels over slices.
//!
//! The crate is pure Rust; the Python bindings live in `bindings` behind the `python`
//! feature, which maturin enables.

pub mod bce;
pub mod calib;
pub mod cce;
pub mod parallel;
pub mod real;
pub mod rowstats;
pub mod simd;
pub mod softmax;

#[cfg(feature = "python")]
mod bindings;
