//! `exp` of a float64 slice in place for the fused calibration pass: the reduction of
//! `simd::exp_f64_in_place` (Cody–Waite with fdlibm's split of ln 2, `|r| ≤ ln2/2`, the
//! Taylor polynomial of `e^r` to degree 13), with the polynomial by Estrin's scheme instead
//! of Horner's rule: its dependency chain is five operations deep instead of thirteen, so
//! that the loop is bound by the FMA units rather than by their latency (the pass spends
//! most of its time here). Within 2 ulp of the platform's `exp` (the test measures it);
//! arguments outside `[-708, 709]` and NaN are left to the platform's `exp`.

/// `v[j] = exp(v[j])`.
pub fn exp_in_place(v: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::active() >= crate::simd::Isa::Avx2 {
        // SAFETY: `active()` is at least Avx2 only when the CPU reports avx2 and fma.
        unsafe { avx2::exp_in_place(v) };
        return;
    }
    v.iter_mut().for_each(|e| *e = e.exp());
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    const LOG2E: f64 = std::f64::consts::LOG2_E;
    const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
    const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
    const LO: f64 = -708.0;
    const HI: f64 = 709.0;

    /// `1/(i+2)!` for i = 0..12.
    const C: [f64; 12] = [
        0.5,
        1.0 / 6.0,
        1.0 / 24.0,
        1.0 / 120.0,
        1.0 / 720.0,
        1.0 / 5_040.0,
        1.0 / 40_320.0,
        1.0 / 362_880.0,
        1.0 / 3_628_800.0,
        1.0 / 39_916_800.0,
        1.0 / 479_001_600.0,
        1.0 / 6_227_020_800.0,
    ];

    /// # Safety
    /// The CPU must support avx2 and fma.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exp_in_place(v: &mut [f64]) {
        let mut chunks = v.chunks_exact_mut(4);
        for c in &mut chunks {
            // SAFETY: `c` holds exactly four f64s; the intrinsics need avx2 and fma (this
            // function's contract).
            unsafe {
                let x = _mm256_loadu_pd(c.as_ptr());
                let inside = _mm256_movemask_pd(_mm256_and_pd(
                    _mm256_cmp_pd::<_CMP_GE_OQ>(x, _mm256_set1_pd(LO)),
                    _mm256_cmp_pd::<_CMP_LE_OQ>(x, _mm256_set1_pd(HI)),
                ));
                _mm256_storeu_pd(c.as_mut_ptr(), exp4(x));
                if inside != 0b1111 {
                    // Rare: a lane past the range (or NaN): the platform's exp for those.
                    let mut xs = [0.0f64; 4];
                    _mm256_storeu_pd(xs.as_mut_ptr(), x);
                    for (i, e) in c.iter_mut().enumerate() {
                        if inside & (1 << i) == 0 {
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
            let s = |c: f64| _mm256_set1_pd(c);
            let x = _mm256_max_pd(_mm256_min_pd(x, s(HI)), s(LO));
            let n = _mm256_round_pd::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm256_mul_pd(x, s(LOG2E)),
            );
            let r = _mm256_fnmadd_pd(n, s(LN2_HI), x);
            let r = _mm256_fnmadd_pd(n, s(LN2_LO), r);
            let r2 = _mm256_mul_pd(r, r);
            let r4 = _mm256_mul_pd(r2, r2);
            let r8 = _mm256_mul_pd(r4, r4);
            let q = |i: usize| _mm256_fmadd_pd(s(C[i + 1]), r, s(C[i]));
            let s0 = _mm256_fmadd_pd(q(2), r2, q(0));
            let s1 = _mm256_fmadd_pd(q(6), r2, q(4));
            let s2 = _mm256_fmadd_pd(q(10), r2, q(8));
            let p = _mm256_fmadd_pd(s2, r8, _mm256_fmadd_pd(s1, r4, s0));
            // e^r = 1 + r + r²·p(r), the small terms added first.
            let er = _mm256_add_pd(_mm256_fmadd_pd(r2, p, r), s(1.0));
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

    fn ulps(a: f64, b: f64) -> f64 {
        let ulp = f64::from_bits(b.abs().to_bits() + 1) - b.abs();
        (a - b).abs() / ulp
    }

    #[test]
    fn within_two_ulp_of_the_platform_exp_over_the_range() {
        let mut xs: Vec<f64> = (0..200_001).map(|i| -750.0 + i as f64 * 0.0073).collect();
        xs.extend((0..20_001).map(|i| -1.0 + i as f64 * 1e-4));
        xs.extend([
            0.0,
            -0.0,
            f64::NEG_INFINITY,
            f64::NAN,
            709.5,
            -708.5,
            1e-300,
        ]);
        let mut got = xs.clone();
        exp_in_place(&mut got);
        let mut worst = 0.0f64;
        for (&x, &g) in xs.iter().zip(&got) {
            let want = x.exp();
            if want.is_nan() {
                assert!(g.is_nan());
            } else if want == 0.0 || want.is_infinite() {
                assert_eq!(g, want, "x={x}");
            } else {
                worst = worst.max(ulps(g, want));
            }
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
    }
}
