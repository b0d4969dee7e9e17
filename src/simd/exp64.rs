//! `exp` of a float64 slice in place, four lanes at a time on AVX2+FMA (AVX-512 machines run
//! the same code), for the calibration statistics, which need every class's probability to
//! float64 precision.
//!
//! Cody–Waite reduction `x = n·ln2 + r`, `|r| ≤ ln2/2`, with `ln2` split in two (fdlibm's
//! constants: `n·LN2_HI` is exact for `|n| < 2^11`), then the Taylor polynomial of `e^r` to
//! degree 13 (truncation below 2^-60 relative on that interval) by Estrin's scheme with FMAs,
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

/// `out[j] = tanh(x[j]·scale)` in f64, as `±(1 − e)/(1 + e)` with `e = exp(−2|x·scale|)`
/// (no overflow; NaN stays NaN, ±inf gives ±1); returns the largest `out[j]` (NaN skipped;
/// `-inf` for an empty or all-NaN row). Within a few ulp of the platform's `tanh` (the test
/// measures it), for the soft-capped cross-entropy.
pub fn tanh_f32_to_f64(x: &[f32], scale: f64, out: &mut [f64]) -> f64 {
    let out = &mut out[..x.len()];
    #[cfg(target_arch = "x86_64")]
    if super::active() >= Isa::Avx2 {
        // SAFETY: `active()` is at least Avx2 only when the CPU reports avx2 and fma.
        return unsafe { avx2::tanh_from_f32(x, scale, out) };
    }
    tanh_scalar(x, scale, out)
}

/// `out[j] = c·t[j] − m` rounded to f32, or `-inf` where `x[j]` is `-inf` (a masked entry of
/// a soft-capped row; all lengths equal).
pub fn shift_capped_f32(t: &[f64], x: &[f32], c: f64, m: f64, out: &mut [f32]) {
    let (t, out) = (&t[..x.len()], &mut out[..x.len()]);
    #[cfg(target_arch = "x86_64")]
    if super::active() >= Isa::Avx2 {
        // SAFETY: `active()` is at least Avx2 only when the CPU reports avx2 and fma.
        return unsafe { avx2::shift_capped(t, x, c, m, out) };
    }
    shift_scalar(t, x, c, m, out)
}

fn shift_scalar(t: &[f64], x: &[f32], c: f64, m: f64, out: &mut [f32]) {
    for ((o, &tj), &xj) in out.iter_mut().zip(t).zip(x) {
        *o = if xj == f32::NEG_INFINITY {
            f32::NEG_INFINITY
        } else {
            (c * tj - m) as f32
        };
    }
}

/// For stored exponentials `e[j] = exp(d32[j])` of `d32[j] = f32(c·t[j] − m)`: each nonzero
/// `e[j]` becomes `e[j]·(1 + lo[j])`, `lo[j] = (c·t[j] − m) − d32[j]` (the exponential of the
/// unrounded argument to first order), rounded once; returns `Σ e[j]·lo[j]` (all lengths
/// equal).
pub fn refine_rounded_exps_f32(e: &mut [f32], d32: &[f32], t: &[f64], c: f64, m: f64) -> f64 {
    let (d32, t) = (&d32[..e.len()], &t[..e.len()]);
    #[cfg(target_arch = "x86_64")]
    if super::active() >= Isa::Avx2 {
        // SAFETY: `active()` is at least Avx2 only when the CPU reports avx2 and fma.
        return unsafe { avx2::refine_rounded_exps(e, d32, t, c, m) };
    }
    refine_scalar(e, d32, t, c, m)
}

fn refine_scalar(e: &mut [f32], d32: &[f32], t: &[f64], c: f64, m: f64) -> f64 {
    let mut fix = 0.0;
    for ((ej, &dj), &tj) in e.iter_mut().zip(d32).zip(t) {
        let v = *ej as f64;
        if v != 0.0 {
            let dv = v * ((c * tj - m) - dj as f64);
            fix += dv;
            *ej = (v + dv) as f32;
        }
    }
    fix
}

/// `g[j] *= (1 − t[j])(1 + t[j])` (`sech²` from `tanh`), the product in f64, rounded once.
pub fn mul_sech2_f32(g: &mut [f32], t: &[f64]) {
    let t = &t[..g.len()];
    #[cfg(target_arch = "x86_64")]
    if super::active() >= Isa::Avx2 {
        // SAFETY: `active()` is at least Avx2 only when the CPU reports avx2 and fma.
        return unsafe { avx2::mul_sech2(g, t) };
    }
    mul_sech2_scalar(g, t)
}

fn mul_sech2_scalar(g: &mut [f32], t: &[f64]) {
    for (gj, &tj) in g.iter_mut().zip(t) {
        *gj = (*gj as f64 * ((1.0 - tj) * (1.0 + tj))) as f32;
    }
}

fn tanh_scalar(x: &[f32], scale: f64, out: &mut [f64]) -> f64 {
    let mut top = f64::NEG_INFINITY;
    for (o, &v) in out.iter_mut().zip(x) {
        let u = v as f64 * scale;
        let e = (-2.0 * u.abs()).exp();
        *o = ((1.0 - e) / (1.0 + e)).copysign(u);
        top = if *o > top { *o } else { top };
    }
    top
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;
    use std::arch::x86_64::*;

    /// See [`shift_capped_f32`].
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; the slices have equal lengths.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn shift_capped(t: &[f64], x: &[f32], c: f64, m: f64, out: &mut [f32]) {
        let n4 = x.len() / 4 * 4;
        // SAFETY: each access covers [i, i + 4) with i + 4 ≤ n4 ≤ every length; the
        // intrinsics need avx2 and fma (this function's contract).
        unsafe {
            let (vc, vm) = (_mm256_set1_pd(c), _mm256_set1_pd(m));
            let ninf = _mm_set1_ps(f32::NEG_INFINITY);
            let mut i = 0;
            while i < n4 {
                // Not fused: the maximum's entry must be exactly c·t − m = 0.
                let d = _mm256_sub_pd(_mm256_mul_pd(vc, _mm256_loadu_pd(t.as_ptr().add(i))), vm);
                let d = _mm256_cvtpd_ps(d);
                let masked = _mm_cmpeq_ps(_mm_loadu_ps(x.as_ptr().add(i)), ninf);
                _mm_storeu_ps(out.as_mut_ptr().add(i), _mm_blendv_ps(d, ninf, masked));
                i += 4;
            }
        }
        shift_scalar(&t[n4..], &x[n4..], c, m, &mut out[n4..]);
    }

    /// See [`refine_rounded_exps_f32`].
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; the slices have equal lengths.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn refine_rounded_exps(
        e: &mut [f32],
        d32: &[f32],
        t: &[f64],
        c: f64,
        m: f64,
    ) -> f64 {
        let n4 = e.len() / 4 * 4;
        // SAFETY: each access covers [i, i + 4) with i + 4 ≤ n4 ≤ every length; the
        // intrinsics need avx2 and fma (this function's contract).
        let fix = unsafe {
            let (vc, vm) = (_mm256_set1_pd(c), _mm256_set1_pd(m));
            let zero = _mm256_setzero_pd();
            let mut acc = zero;
            let mut i = 0;
            while i < n4 {
                let v = _mm256_cvtps_pd(_mm_loadu_ps(e.as_ptr().add(i)));
                let d = _mm256_sub_pd(_mm256_mul_pd(vc, _mm256_loadu_pd(t.as_ptr().add(i))), vm);
                let lo = _mm256_sub_pd(d, _mm256_cvtps_pd(_mm_loadu_ps(d32.as_ptr().add(i))));
                // Zero exponentials (masked or flushed entries, where lo may be inf) stay 0.
                let live = _mm256_cmp_pd::<_CMP_NEQ_UQ>(v, zero);
                let dv = _mm256_and_pd(_mm256_mul_pd(v, lo), live);
                acc = _mm256_add_pd(acc, dv);
                _mm_storeu_ps(e.as_mut_ptr().add(i), _mm256_cvtpd_ps(_mm256_add_pd(v, dv)));
                i += 4;
            }
            let mut lanes = [0.0f64; 4];
            _mm256_storeu_pd(lanes.as_mut_ptr(), acc);
            (lanes[0] + lanes[1]) + (lanes[2] + lanes[3])
        };
        fix + refine_scalar(&mut e[n4..], &d32[n4..], &t[n4..], c, m)
    }

    /// See [`mul_sech2_f32`].
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; the slices have equal lengths.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn mul_sech2(g: &mut [f32], t: &[f64]) {
        let n4 = g.len() / 4 * 4;
        // SAFETY: each access covers [i, i + 4) with i + 4 ≤ n4 ≤ both lengths; the
        // intrinsics need avx2 and fma (this function's contract).
        unsafe {
            let one = _mm256_set1_pd(1.0);
            let mut i = 0;
            while i < n4 {
                let tv = _mm256_loadu_pd(t.as_ptr().add(i));
                let s = _mm256_mul_pd(_mm256_sub_pd(one, tv), _mm256_add_pd(one, tv));
                let gv = _mm256_cvtps_pd(_mm_loadu_ps(g.as_ptr().add(i)));
                _mm_storeu_ps(g.as_mut_ptr().add(i), _mm256_cvtpd_ps(_mm256_mul_pd(gv, s)));
                i += 4;
            }
        }
        mul_sech2_scalar(&mut g[n4..], &t[n4..]);
    }

    /// See [`tanh_f32_to_f64`].
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; `out` is as long as `x`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tanh_from_f32(x: &[f32], scale: f64, out: &mut [f64]) -> f64 {
        let n4 = x.len() / 4 * 4;
        // SAFETY: each load reads x[i..i + 4] and each store writes out[i..i + 4], i + 4 ≤ n4
        // ≤ both lengths; the intrinsics need avx2 and fma (this function's contract).
        let mut top = unsafe {
            let sign = _mm256_set1_pd(-0.0);
            let one = _mm256_set1_pd(1.0);
            let m2s = _mm256_set1_pd(-2.0 * scale.abs());
            let s = _mm256_set1_pd(scale);
            let mut top = _mm256_set1_pd(f64::NEG_INFINITY);
            let mut i = 0;
            while i < n4 {
                let v = _mm256_cvtps_pd(_mm_loadu_ps(x.as_ptr().add(i)));
                // exp4 clamps its argument to [-708, 709]: exp(-708) still rounds t to 1.
                let e = exp4(_mm256_mul_pd(_mm256_andnot_pd(sign, v), m2s));
                let t = _mm256_div_pd(_mm256_sub_pd(one, e), _mm256_add_pd(one, e));
                let t = _mm256_or_pd(t, _mm256_and_pd(sign, _mm256_mul_pd(v, s)));
                let nan = _mm256_cmp_pd::<_CMP_UNORD_Q>(v, v);
                let t = _mm256_blendv_pd(t, v, nan);
                _mm256_storeu_pd(out.as_mut_ptr().add(i), t);
                // max_pd returns its second operand when the first is NaN.
                top = _mm256_max_pd(t, top);
                i += 4;
            }
            let mut lanes = [0.0f64; 4];
            _mm256_storeu_pd(lanes.as_mut_ptr(), top);
            lanes
                .iter()
                .fold(f64::NEG_INFINITY, |m, &v| if v > m { v } else { m })
        };
        let rest = tanh_scalar(&x[n4..], scale, &mut out[n4..]);
        if rest > top {
            top = rest;
        }
        top
    }

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
            // p(r) = Σ r^i/(i+2)! by Estrin's scheme: a dependency chain five operations
            // deep instead of Horner's twelve, so the loop is bound by the FMA units rather
            // than by their latency.
            let c = |i: usize| _mm256_set1_pd(INV_FACT[11 - i]); // 1/(i+2)!
            let q = |i: usize| _mm256_fmadd_pd(c(i + 1), r, c(i));
            let r2 = _mm256_mul_pd(r, r);
            let r4 = _mm256_mul_pd(r2, r2);
            let r8 = _mm256_mul_pd(r4, r4);
            let s0 = _mm256_fmadd_pd(q(2), r2, q(0));
            let s1 = _mm256_fmadd_pd(q(6), r2, q(4));
            let s2 = _mm256_fmadd_pd(q(10), r2, q(8));
            let p = _mm256_fmadd_pd(s2, r8, _mm256_fmadd_pd(s1, r4, s0));
            // e^r = 1 + r + r²·p(r), the small terms added first.
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

    #[test]
    fn tanh_is_within_a_few_ulp_and_keeps_special_values() {
        let mut xs: Vec<f32> = (0..40_001).map(|i| -200.0 + i as f32 * 0.01).collect();
        xs.extend([0.0, -0.0, 1e-30, -1e-30, 1e30, -1e30, f32::INFINITY]);
        xs.extend([f32::NEG_INFINITY, f32::NAN, 3e38, -3e38, 1e-3, -7e-4]);
        for scale in [1.0 / 30.0, 0.5, 2.0] {
            let mut out = vec![0.0; xs.len()];
            let top = tanh_f32_to_f64(&xs, scale, &mut out);
            let mut want_top = f64::NEG_INFINITY;
            for (&x, &t) in xs.iter().zip(&out) {
                let want = (x as f64 * scale).tanh();
                if want.is_nan() {
                    assert!(t.is_nan(), "{x}");
                    continue;
                }
                want_top = want_top.max(want);
                // Absolute error: t = (1 − e)/(1 + e) loses relative precision near 0, where
                // only its absolute error matters to the capped loss.
                assert!((t - want).abs() <= 4.0 * f64::EPSILON, "{x}: {t} vs {want}");
                assert_eq!(t.is_sign_negative(), want.is_sign_negative(), "{x}");
            }
            assert!((top - want_top).abs() <= 4.0 * f64::EPSILON);
        }
    }

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
