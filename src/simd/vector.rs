//! The vector operations the float32 kernels need, as a trait implemented per instruction set.

/// A vector of `LANES` f32 lanes.
///
/// # Safety
/// Every method may use instructions of the implementing instruction set: call them only
/// from code that has checked the CPU supports it (see [`super::active`]). Pointer methods
/// additionally need `LANES` readable (or writeable) f32s at the pointer.
// Every method shares the trait's safety contract above.
#[allow(clippy::missing_safety_doc)]
pub trait F32Vec: Copy {
    const LANES: usize;
    /// Lane mask (a vector of all-ones / all-zeros lanes, or a mask register).
    type Mask: Copy;
    /// Four or eight f64 lanes used to accumulate sums exactly enough.
    type F64Acc: Copy;

    unsafe fn splat(v: f32) -> Self;
    unsafe fn load(p: *const f32) -> Self;
    unsafe fn store(self, p: *mut f32);
    /// Loads the first `n < LANES` elements at `p` (reading nothing beyond them); the other
    /// lanes are `fill`.
    unsafe fn load_partial(p: *const f32, n: usize, fill: f32) -> Self;
    /// Stores the first `n < LANES` lanes at `p` (writing nothing beyond them).
    unsafe fn store_partial(self, p: *mut f32, n: usize);
    unsafe fn add(self, o: Self) -> Self;
    unsafe fn sub(self, o: Self) -> Self;
    unsafe fn mul(self, o: Self) -> Self;
    /// `self * b + c`, fused.
    unsafe fn fma(self, b: Self, c: Self) -> Self;
    /// Lane-wise maximum; where `o` is NaN the result is NaN.
    unsafe fn max_keep_nan(self, o: Self) -> Self;
    /// Round to the nearest integer (ties to even), as f32.
    unsafe fn round(self) -> Self;
    /// `2^n` for integer-valued lanes `n` in [-126, 127].
    unsafe fn pow2(n: Self) -> Self;
    unsafe fn eq(self, o: Self) -> Self::Mask;
    unsafe fn div(self, o: Self) -> Self;
    unsafe fn abs(self) -> Self;
    /// For positive, finite, normal lanes: `(k, f)` with `self = 2^k · f`, `f` in `[1, 2)`,
    /// `k` as f32.
    unsafe fn exponent_mantissa(self) -> (Self, Self);
    /// `self > o` (false where either is NaN).
    unsafe fn gt(self, o: Self) -> Self::Mask;
    /// True where the lane is NaN.
    unsafe fn is_nan(self) -> Self::Mask;
    /// `m ? a : b`.
    unsafe fn select(m: Self::Mask, a: Self, b: Self) -> Self;
    /// `self < o` (false where either is NaN).
    unsafe fn lt(self, o: Self) -> Self::Mask;
    /// Whether any lane of the mask is set.
    unsafe fn any(m: Self::Mask) -> bool;
    /// `m ? 0 : a`.
    unsafe fn zero_where(m: Self::Mask, a: Self) -> Self;
    /// `m ? a : 0`.
    unsafe fn one_where(m: Self::Mask, a: Self) -> Self;
    unsafe fn hmax(self) -> f32;
    unsafe fn hsum_f32(self) -> f32;
    unsafe fn acc_zero() -> Self::F64Acc;
    /// Converts the lanes to f64 and adds them to the accumulator.
    unsafe fn acc_add(acc: Self::F64Acc, v: Self) -> Self::F64Acc;
    unsafe fn acc_sum(acc: Self::F64Acc) -> f64;
    /// Writes the accumulator's `LANES` f64 values, lane `i` (the sum of lane `i` of every
    /// added vector) at `out + i`.
    unsafe fn acc_lanes(acc: Self::F64Acc, out: *mut f64);
}

/// The portable path: one lane, plain Rust.
#[derive(Clone, Copy)]
pub struct Scalar(f32);

impl F32Vec for Scalar {
    const LANES: usize = 1;
    type Mask = bool;
    type F64Acc = f64;

    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        Scalar(v)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Scalar(*p)
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        *p = self.0
    }
    #[inline(always)]
    unsafe fn load_partial(_p: *const f32, _n: usize, fill: f32) -> Self {
        Scalar(fill) // n < 1: nothing to read
    }
    #[inline(always)]
    unsafe fn store_partial(self, _p: *mut f32, _n: usize) {}
    #[inline(always)]
    unsafe fn add(self, o: Self) -> Self {
        Scalar(self.0 + o.0)
    }
    #[inline(always)]
    unsafe fn sub(self, o: Self) -> Self {
        Scalar(self.0 - o.0)
    }
    #[inline(always)]
    unsafe fn mul(self, o: Self) -> Self {
        Scalar(self.0 * o.0)
    }
    #[inline(always)]
    unsafe fn fma(self, b: Self, c: Self) -> Self {
        Scalar(self.0.mul_add(b.0, c.0))
    }
    #[inline(always)]
    unsafe fn max_keep_nan(self, o: Self) -> Self {
        if o.0.is_nan() || o.0 > self.0 {
            o
        } else {
            self
        }
    }
    #[inline(always)]
    unsafe fn round(self) -> Self {
        Scalar(self.0.round_ties_even())
    }
    #[inline(always)]
    unsafe fn pow2(n: Self) -> Self {
        Scalar(f32::from_bits(((n.0 as i32 + 127) as u32) << 23))
    }
    #[inline(always)]
    unsafe fn eq(self, o: Self) -> bool {
        self.0 == o.0
    }
    #[inline(always)]
    unsafe fn div(self, o: Self) -> Self {
        Scalar(self.0 / o.0)
    }
    #[inline(always)]
    unsafe fn abs(self) -> Self {
        Scalar(self.0.abs())
    }
    #[inline(always)]
    unsafe fn exponent_mantissa(self) -> (Self, Self) {
        let bits = self.0.to_bits();
        let k = ((bits >> 23) as i32 - 127) as f32;
        let f = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
        (Scalar(k), Scalar(f))
    }
    #[inline(always)]
    unsafe fn gt(self, o: Self) -> bool {
        self.0 > o.0
    }
    #[inline(always)]
    unsafe fn is_nan(self) -> bool {
        self.0.is_nan()
    }
    #[inline(always)]
    unsafe fn select(m: bool, a: Self, b: Self) -> Self {
        if m {
            a
        } else {
            b
        }
    }
    #[inline(always)]
    unsafe fn lt(self, o: Self) -> bool {
        self.0 < o.0
    }
    #[inline(always)]
    unsafe fn any(m: bool) -> bool {
        m
    }
    #[inline(always)]
    unsafe fn zero_where(m: bool, a: Self) -> Self {
        if m {
            Scalar(0.0)
        } else {
            a
        }
    }
    #[inline(always)]
    unsafe fn one_where(m: bool, a: Self) -> Self {
        if m {
            a
        } else {
            Scalar(0.0)
        }
    }
    #[inline(always)]
    unsafe fn hmax(self) -> f32 {
        self.0
    }
    #[inline(always)]
    unsafe fn hsum_f32(self) -> f32 {
        self.0
    }
    #[inline(always)]
    unsafe fn acc_zero() -> f64 {
        0.0
    }
    #[inline(always)]
    unsafe fn acc_add(acc: f64, v: Self) -> f64 {
        acc + v.0 as f64
    }
    #[inline(always)]
    unsafe fn acc_sum(acc: f64) -> f64 {
        acc
    }
    #[inline(always)]
    unsafe fn acc_lanes(acc: f64, out: *mut f64) {
        *out = acc
    }
}

#[cfg(test)]
impl Scalar {
    pub fn splat_for_test(v: f32) -> Self {
        Scalar(v)
    }
    pub fn value(self) -> f32 {
        self.0
    }
}
