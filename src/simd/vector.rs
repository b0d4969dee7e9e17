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
    /// `self · 2^n` by an integer add to the exponent bits, where `t = n + 1.5·2^23` holds
    /// the integer `n` in its low mantissa bits (magic-number rounding). Right only where
    /// the result stays a normal float; NaN lanes may come out as numbers.
    unsafe fn add_exponent(self, t: Self) -> Self;
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
    /// The mask as bits, lane `i` at bit `i`.
    unsafe fn bits(m: Self::Mask) -> u32;
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
    /// The accumulator whose lanes are the `LANES` f64 values at `p` (as [`Self::acc_lanes`]
    /// writes them).
    unsafe fn acc_load(p: *const f64) -> Self::F64Acc;
    /// Whether any lane is outside `[0, 1]` or NaN.
    unsafe fn any_outside_unit(self) -> bool;
    /// Whether every lane is exactly 0 (either sign) or 1.
    unsafe fn all_binary(self) -> bool;
    /// `LANES` IEEE half-precision values (their bits) at `p`, widened (exactly).
    unsafe fn load_f16(p: *const u16) -> Self;
    /// Stores the lanes at `p` as half precision, rounded to nearest (ties to even).
    unsafe fn store_f16(self, p: *mut u16);
    /// `LANES` bfloat16 values (their bits) at `p`, widened (exactly: a shift).
    unsafe fn load_bf16(p: *const u16) -> Self;
    /// Stores the lanes at `p` as bfloat16, rounded to nearest (ties to even); NaN stays NaN.
    unsafe fn store_bf16(self, p: *mut u16);
    /// Transposes a tile of at most 8 × 8 floats: reads `nr ≤ 8` rows of `nc ≤ 8` floats
    /// (row `i` at `src + i·ss`) and writes `nc` rows of `nr` floats (row `j` at `dst + j·ds`,
    /// `dst[j·ds + i] = src[i·ss + j]`), touching nothing else. The tile must not overlap
    /// itself.
    #[inline(always)]
    unsafe fn transpose8(
        src: *const f32,
        ss: usize,
        nr: usize,
        nc: usize,
        dst: *mut f32,
        ds: usize,
    ) {
        for i in 0..nr {
            for j in 0..nc {
                *dst.add(j * ds + i) = *src.add(i * ss + j);
            }
        }
    }
}

/// The bfloat16 bits of `v`, rounded to nearest (ties to even), NaN kept quiet.
#[inline(always)]
pub fn bf16_bits(v: f32) -> u16 {
    let b = v.to_bits();
    if v.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// An element type the float32 kernels load into and store from `F32Vec` lanes: float32
/// itself, or a 16-bit float widened in registers (never through a float32 copy in memory).
///
/// # Safety
/// As for [`F32Vec`]; full loads and stores need `V::LANES` elements at the pointer, partial
/// ones `n < V::LANES`.
#[allow(clippy::missing_safety_doc)]
pub trait LaneElem: Copy + 'static {
    unsafe fn load<V: F32Vec>(p: *const Self) -> V;
    unsafe fn store<V: F32Vec>(v: V, p: *mut Self);
    unsafe fn load_partial<V: F32Vec>(p: *const Self, n: usize, fill: f32) -> V;
    unsafe fn store_partial<V: F32Vec>(v: V, p: *mut Self, n: usize);
    fn to_f32(self) -> f32;
}

impl LaneElem for f32 {
    #[inline(always)]
    unsafe fn load<V: F32Vec>(p: *const f32) -> V {
        V::load(p)
    }
    #[inline(always)]
    unsafe fn store<V: F32Vec>(v: V, p: *mut f32) {
        v.store(p)
    }
    #[inline(always)]
    unsafe fn load_partial<V: F32Vec>(p: *const f32, n: usize, fill: f32) -> V {
        V::load_partial(p, n, fill)
    }
    #[inline(always)]
    unsafe fn store_partial<V: F32Vec>(v: V, p: *mut f32, n: usize) {
        v.store_partial(p, n)
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}

/// The 16-bit types: full vectors through the instruction set's conversions, tails through
/// a stack buffer of one vector.
macro_rules! lane_elem_16 {
    ($t:ty, $load:ident, $store:ident) => {
        impl LaneElem for $t {
            #[inline(always)]
            unsafe fn load<V: F32Vec>(p: *const $t) -> V {
                V::$load(p.cast::<u16>())
            }
            #[inline(always)]
            unsafe fn store<V: F32Vec>(v: V, p: *mut $t) {
                v.$store(p.cast::<u16>())
            }
            #[inline(always)]
            unsafe fn load_partial<V: F32Vec>(p: *const $t, n: usize, fill: f32) -> V {
                let mut buf = [<$t>::from_f32(fill); 16];
                std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), n);
                V::$load(buf.as_ptr().cast::<u16>())
            }
            #[inline(always)]
            unsafe fn store_partial<V: F32Vec>(v: V, p: *mut $t, n: usize) {
                let mut buf = [<$t>::ZERO; 16];
                v.$store(buf.as_mut_ptr().cast::<u16>());
                std::ptr::copy_nonoverlapping(buf.as_ptr(), p, n);
            }
            #[inline(always)]
            fn to_f32(self) -> f32 {
                <$t>::to_f32(self)
            }
        }
    };
}

lane_elem_16!(half::f16, load_f16, store_f16);
lane_elem_16!(half::bf16, load_bf16, store_bf16);

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
    unsafe fn add_exponent(self, t: Self) -> Self {
        Scalar(f32::from_bits(
            self.0.to_bits().wrapping_add(t.0.to_bits() << 23),
        ))
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
    unsafe fn bits(m: bool) -> u32 {
        u32::from(m)
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
    #[inline(always)]
    unsafe fn acc_load(p: *const f64) -> f64 {
        *p
    }
    #[inline(always)]
    unsafe fn any_outside_unit(self) -> bool {
        !(0.0..=1.0).contains(&self.0)
    }
    #[inline(always)]
    unsafe fn all_binary(self) -> bool {
        self.0 == 0.0 || self.0 == 1.0
    }
    #[inline(always)]
    unsafe fn load_f16(p: *const u16) -> Self {
        Scalar(half::f16::from_bits(*p).to_f32())
    }
    #[inline(always)]
    unsafe fn store_f16(self, p: *mut u16) {
        *p = half::f16::from_f32(self.0).to_bits()
    }
    #[inline(always)]
    unsafe fn load_bf16(p: *const u16) -> Self {
        Scalar(f32::from_bits((*p as u32) << 16))
    }
    #[inline(always)]
    unsafe fn store_bf16(self, p: *mut u16) {
        *p = bf16_bits(self.0)
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
