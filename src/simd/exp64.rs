//! `exp` of a float64 slice in place, four lanes at a time on AVX2+FMA (AVX-512 machines run
//! the same code), for the calibration statistics, which need every class's probability to
//! float64 precision.
//!
//! Cody–Waite reduction `x = n·ln2 + r`, `|r| ≤ ln2/2`, with `ln2` split in two (fdlibm's
//! constants: `n·LN2_HI` is exact for `|n| < 2^11`), then the Taylor polynomial of `e^r` to
//! degree 13 (truncation below 2^-60 relative on that interval) by Horner's rule with FMAs,
//! and the scaling by `2^n` from exponent bits. Within 2 ulp of the platform's `exp` (the
//! test measures it); arguments outside `[-708, 709]` (subnormal or overflowing results) and
//! NaN are left to the platform's `exp`.

use super::Isa;

const LOG2E: f64 = std::f64::consts::LOG2_E;
/// fdlibm's split of ln 2 (high part with 32 trailing zero bits, and the rest).
const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
/// `1/k!` for k = 13 down to 2.
const INV_FACT: [f64; 12] = [
    1.0 / 6_227_020_800.0,
    1.0 / 479_001_600.0,
    1.0 / 39_916_800.0,
    1.0 / 3_628_800.0,
    1.0 / 362_880.0,
    1.0 / 40_320.0,
    1.0 / 5_040.0,
    1.0 / 720.0,
    1.0 / 120.0,
    1.0 / 24.0,
    1.0 / 6.0,
    0.5,
];
const LO: f64 = -708.0;
const HI: f64 = 709.0;

/// `v[j] = exp(v[j])`.
pub fn exp_f64_in_place(v: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    if super::active() >= Isa::Avx2 {
        // SAFETY: `active()` is at least Avx2 only when the CPU reports avx2 and fma.
        unsafe { avx2::exp_in_place(v) };
        return;
    }
    v.iter_mut().for_each(|e| *e = e.exp());
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exp_in_place(v: &mut [f64]) {
        let mut chunks = v.chunks_exact_mut(4);
        for c in &mut chunks {
            // SAFETY: `c` holds exactly four f64s; the intrinsics need avx2 and fma (this
            // function's contract).
            unsafe {
                let x = _mm256_loadu_pd(c.as_ptr());
                let inside = _mm256_and_pd(
                    _mm256_cmp_pd::<_CMP_GE_OQ>(x, _mm256_set1_pd(LO)),
                    _mm256_cmp_pd::<_CMP_LE_OQ>(x, _mm256_set1_pd(HI)),
                );
                let out = exp4(x);
                _mm256_storeu_pd(c.as_mut_ptr(), out);
                if _mm256_movemask_pd(inside) != 0b1111 {
                    // Rare: a lane past the range (or NaN): the platform's exp for those.
                    let keep = _mm256_movemask_pd(inside);
                    let mut xs = [0.0f64; 4];
                    _mm256_storeu_pd(xs.as_mut_ptr(), x);
                    for (i, e) in c.iter_mut().enumerate() {
                        if keep & (1 << i) == 0 {
                            *e = xs[i].exp();
                        }
                    }
                }
            }
        }
        chunks
            .into_remainder()
            .iter_mut()
            .for_each(|e| *e = e.exp());
    }

    /// `e^x` for four lanes in `[LO, HI]`.
    #[inline(always)]
    unsafe fn exp4(x: __m256d) -> __m256d {
        // SAFETY: register arithmetic only; the caller has avx2 and fma.
        unsafe {
            let x = _mm256_max_pd(_mm256_min_pd(x, _mm256_set1_pd(HI)), _mm256_set1_pd(LO));
            let n = _mm256_round_pd::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm256_mul_pd(x, _mm256_set1_pd(LOG2E)),
            );
            let r = _mm256_fnmadd_pd(n, _mm256_set1_pd(LN2_HI), x);
            let r = _mm256_fnmadd_pd(n, _mm256_set1_pd(LN2_LO), r);
            let mut p = _mm256_set1_pd(INV_FACT[0]);
            for &c in &INV_FACT[1..] {
                p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(c));
            }
            // e^r = 1 + r + r²·p(r), the small terms added first.
            let r2 = _mm256_mul_pd(r, r);
            let er = _mm256_add_pd(_mm256_fmadd_pd(r2, p, r), _mm256_set1_pd(1.0));
            // 2^n from exponent bits: n in [-1022, 1023] here.
            let ni = _mm256_cvtpd_epi32(n);
            let bits = _mm256_slli_epi64::<52>(_mm256_add_epi64(
                _mm256_cvtepi32_epi64(ni),
                _mm256_set1_epi64x(1023),
            ));
            _mm256_mul_pd(er, _mm256_castsi256_pd(bits))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `|a − b|` in ulps of `b`.
    fn ulps64(a: f64, b: f64) -> f64 {
        let ulp = f64::from_bits(b.abs().to_bits() + 1) - b.abs();
        (a - b).abs() / ulp
    }

    #[test]
    fn within_two_ulp_of_the_platform_exp_over_the_range() {
        let mut xs: Vec<f64> = (0..200_001).map(|i| -745.0 + i as f64 * 0.00727).collect();
        xs.extend([
            0.0,
            -0.0,
            1e-300,
            -1e-17,
            709.5,
            -708.5,
            -1e4,
            f64::NEG_INFINITY,
        ]);
        xs.extend([f64::NAN, f64::INFINITY, 710.0, -746.0]);
        let mut got = xs.clone();
        exp_f64_in_place(&mut got);
        let mut worst: f64 = 0.0;
        for (&x, &g) in xs.iter().zip(&got) {
            let want = x.exp();
            if want.is_nan() {
                assert!(g.is_nan(), "{x}");
            } else if want == 0.0 || want.is_infinite() {
                assert_eq!(g, want, "{x}");
            } else {
                worst = worst.max(ulps64(g, want));
            }
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
        assert_eq!(got[200_001], 1.0); // exp(0) is exactly 1 (softmax maxima rely on it)
    }
}
