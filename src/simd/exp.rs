//! Vectorised `exp` for arguments in `[FLUSH, 0]`, the range softmax needs after subtracting
//! the row maximum (callers flush smaller arguments to 0 and never pass positive ones).
//!
//! Range reduction `x = n·ln2 + r` with `n` rounded by the magic-number trick (one FMA adds
//! `1.5·2^23`, which leaves `n` in the low mantissa bits) and `ln2` split in two (the high
//! part has few enough bits that `n·C1` is exact); then a degree-6 polynomial for `e^r` on
//! `|r| ≤ ln2/2` (relative minimax fit with `e^0 = 1` exact, 2e-9 before rounding), six
//! FMAs in Horner's form; and the scaling by `2^n` is an integer add of `n` to the
//! exponent bits. Maximum error measured against f64 `exp` over the whole range: 1 ulp (see
//! the test below).

use super::vector::F32Vec;

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// `1.5·2^23`: adding it rounds to an integer, held in the low mantissa bits.
const MAGIC: f32 = 12_582_912.0;
/// `c_1 … c_6` of `e^r ≈ 1 + r(c_1 + r(c_2 + …))`.
const C: [f32; 6] = [
    1.0,
    0.499_999_94,
    0.166_664_32,
    0.041_668,
    0.008_374_151,
    0.001_384_362_3,
];

/// `e^x` for `x` in `[FLUSH, 0]` (NaN in, NaN out).
///
/// # Safety
/// As for [`F32Vec`]: the CPU must support `V`'s instruction set.
#[inline(always)]
pub unsafe fn exp_nonpositive<V: F32Vec>(x: V) -> V {
    let t = x.fma(V::splat(LOG2E), V::splat(MAGIC));
    let n = t.sub(V::splat(MAGIC));
    let r = n.fma(V::splat(-LN2_HI), x);
    let r = n.fma(V::splat(-LN2_LO), r);
    let mut q = V::splat(C[5]);
    for &c in C[..5].iter().rev() {
        q = q.fma(r, V::splat(c));
    }
    let p = q.fma(r, V::splat(1.0));
    // Adding to the exponent bits does not keep a NaN a NaN (its payload's low bits shift
    // into them): `max` hands a NaN argument back, and is `p·2^n` (positive) otherwise.
    p.add_exponent(t).max_keep_nan(x)
}

/// `f32(ln 2)`, for the one-constant reduction of [`exp_nonpositive_loose`]: it is
/// `1.9e-9` above `ln 2`, so `x − n·LN2_F32` is off by `|n|·1.9e-9 ≤ 5.5e-9·|x|` (as
/// `|n| ≤ 2|x|/ln 2` wherever `n ≠ 0`).
const LN2_F32: f32 = std::f32::consts::LN_2;
/// `c_1 … c_5` of the degree-5 fit `e^r ≈ 1 + r(c_1 + r(c_2 + …))` on `|r| ≤ ln2/2`.
const C5: [f32; 5] = [
    0.999_999_7,
    0.499_991_5,
    0.166_676_36,
    0.041_897_93,
    0.008_290_315,
];

/// [`exp_nonpositive`] with one FMA in the reduction instead of two, a degree-5 polynomial
/// (relative minimax, 9e-8 before rounding) instead of degree 6, and no NaN handling, for
/// sums whose caller bounds the error instead: the result is `e^x·(1 + ε)` with
/// `|ε| ≤ LOOSE_TERM_REL + 5.5e-9·|x|` (`LOOSE_TERM_REL = 1.6e-7`, in `rowstats`, where the
/// callers' checks use it; the test below; 1.4e-7 at most measured; the second term
/// is 9% of the `2^-24·|x|` that rounding `x − m` to float32 already costs such a caller),
/// for `x` in `[FLUSH, 0]`. A NaN argument gives an unspecified value (callers learn of NaN
/// rows another way).
///
/// # Safety
/// As for [`F32Vec`]: the CPU must support `V`'s instruction set.
#[inline(always)]
pub unsafe fn exp_nonpositive_loose<V: F32Vec>(x: V) -> V {
    let t = x.fma(V::splat(LOG2E), V::splat(MAGIC));
    let n = t.sub(V::splat(MAGIC));
    let r = n.fma(V::splat(-LN2_F32), x);
    let mut q = V::splat(C5[4]);
    for &c in C5[..4].iter().rev() {
        q = q.fma(r, V::splat(c));
    }
    q.fma(r, V::splat(1.0)).add_exponent(t)
}

#[cfg(test)]
mod tests {
    use super::super::vector::Scalar;
    use super::*;
    use crate::testing::ulps_f32 as ulps;

    fn exp_scalar(x: f32) -> f32 {
        // SAFETY: the scalar path uses no special instructions.
        unsafe { exp_nonpositive(Scalar::splat_for_test(x)) }.value()
    }

    #[test]
    fn within_one_ulp_over_the_range() {
        let mut worst: f64 = 0.0;
        let mut x = super::super::FLUSH;
        while x <= 0.0 {
            worst = worst.max(ulps(exp_scalar(x), (x as f64).exp()));
            x += 0.000_731;
        }
        for x in [
            0.0,
            -0.0,
            -1e-30,
            -0.346_573_6,
            -0.346_573_8,
            super::super::FLUSH,
        ] {
            worst = worst.max(ulps(exp_scalar(x), (x as f64).exp()));
        }
        assert!(worst <= 1.0, "worst error {worst} ulp");
        assert_eq!(exp_scalar(0.0), 1.0);
    }

    #[test]
    fn loose_form_is_within_its_stated_bound() {
        // SAFETY: the scalar path uses no special instructions.
        let loose = |x: f32| unsafe { exp_nonpositive_loose(Scalar::splat_for_test(x)) }.value();
        let mut x = super::super::FLUSH;
        let mut worst: f64 = 0.0;
        while x <= 0.0 {
            let want = (x as f64).exp();
            let got = loose(x) as f64;
            let allowed = crate::rowstats::LOOSE_TERM_REL + 5.5e-9 * (x as f64).abs();
            worst = worst.max((got / want - 1.0).abs() / allowed);
            x += 0.000_173;
        }
        assert!(worst <= 1.0, "worst error {worst} of the bound");
        assert_eq!(loose(0.0), 1.0);
    }

    #[test]
    fn nan_stays_nan_whatever_its_payload() {
        for bits in [
            0x7fc0_0000u32,
            0x7fc0_0001,
            0x7fc0_01ff,
            0xffc0_0123,
            0x7f80_0001,
        ] {
            assert!(exp_scalar(f32::from_bits(bits)).is_nan(), "{bits:#x}");
        }
    }
}
