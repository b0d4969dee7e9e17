//! Helpers shared by the kernel unit tests.

/// `|a − b|` in units of the float32 ulp at `b` (the exact value, as f64).
pub fn ulps_f32(a: f32, b: f64) -> f64 {
    let b32 = b as f32;
    let ulp = (f32::from_bits(b32.abs().to_bits() + 1) - b32.abs()) as f64;
    (a as f64 - b).abs() / ulp
}
