//! AVX2+FMA and AVX-512F implementations of [`F32Vec`], and the `#[target_feature]`
//! trampolines that run a [`SimdOp`] with them.

use super::vector::F32Vec;
use super::SimdOp;

/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn run_avx2<Op: SimdOp>(op: Op) -> Op::Output {
    // SAFETY: this function's own contract: the CPU supports avx2, fma and f16c.
    unsafe { op.eval::<avx2::V>() }
}

/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
pub unsafe fn run_avx512<Op: SimdOp>(op: Op) -> Op::Output {
    // SAFETY: this function's own contract: the CPU supports avx512f.
    unsafe { op.eval::<avx512::V>() }
}

/// [`F32Vec::transpose8`] with AVX: eight (masked) row loads, three rounds of shuffles,
/// eight (masked) row stores.
///
/// # Safety
/// The CPU supports AVX2 (AVX-512F implies it); the pointers are valid for the rows and
/// columns named, as in [`F32Vec::transpose8`].
#[inline(always)]
unsafe fn transpose8_avx(
    src: *const f32,
    ss: usize,
    nr: usize,
    nc: usize,
    dst: *mut f32,
    ds: usize,
) {
    use std::arch::x86_64::*;
    // SAFETY: the caller's contract: AVX2 is available; loads read `nc` floats of each of
    // the first `nr` rows (masked when `nc < 8`), stores write `nr` floats of `nc` rows.
    unsafe {
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let col_mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(nc as i32), lanes);
        let row_mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(nr as i32), lanes);
        let mut r = [_mm256_setzero_ps(); 8];
        for (i, ri) in r.iter_mut().enumerate().take(nr) {
            *ri = if nc == 8 {
                _mm256_loadu_ps(src.add(i * ss))
            } else {
                _mm256_maskload_ps(src.add(i * ss), col_mask)
            };
        }
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        let o = [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ];
        for (j, oj) in o.iter().enumerate().take(nc) {
            if nr == 8 {
                _mm256_storeu_ps(dst.add(j * ds), *oj);
            } else {
                _mm256_maskstore_ps(dst.add(j * ds), row_mask, *oj);
            }
        }
    }
}

pub mod avx2 {
    use super::F32Vec;
    use std::arch::x86_64::*;

    #[derive(Clone, Copy)]
    pub struct V(__m256);

    /// All-ones in the first `n` 32-bit lanes.
    #[inline(always)]
    unsafe fn tail_mask(n: usize) -> __m256i {
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), lanes)
    }

    impl F32Vec for V {
        const LANES: usize = 8;
        type Mask = __m256;
        type F64Acc = (__m256d, __m256d);

        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            V(_mm256_set1_ps(v))
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            V(_mm256_loadu_ps(p))
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            _mm256_storeu_ps(p, self.0)
        }
        #[inline(always)]
        unsafe fn load_partial(p: *const f32, n: usize, fill: f32) -> Self {
            let m = tail_mask(n);
            let v = _mm256_maskload_ps(p, m);
            V(_mm256_blendv_ps(
                _mm256_set1_ps(fill),
                v,
                _mm256_castsi256_ps(m),
            ))
        }
        #[inline(always)]
        unsafe fn store_partial(self, p: *mut f32, n: usize) {
            _mm256_maskstore_ps(p, tail_mask(n), self.0)
        }
        #[inline(always)]
        unsafe fn add(self, o: Self) -> Self {
            V(_mm256_add_ps(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn sub(self, o: Self) -> Self {
            V(_mm256_sub_ps(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn mul(self, o: Self) -> Self {
            V(_mm256_mul_ps(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn fma(self, b: Self, c: Self) -> Self {
            V(_mm256_fmadd_ps(self.0, b.0, c.0))
        }
        #[inline(always)]
        unsafe fn max_keep_nan(self, o: Self) -> Self {
            // vmaxps returns its second operand when either is NaN.
            V(_mm256_max_ps(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn round(self) -> Self {
            V(_mm256_round_ps::<
                { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
            >(self.0))
        }
        #[inline(always)]
        unsafe fn pow2(n: Self) -> Self {
            let i = _mm256_add_epi32(_mm256_cvtps_epi32(n.0), _mm256_set1_epi32(127));
            V(_mm256_castsi256_ps(_mm256_slli_epi32::<23>(i)))
        }
        #[inline(always)]
        unsafe fn add_exponent(self, t: Self) -> Self {
            let shifted = _mm256_slli_epi32::<23>(_mm256_castps_si256(t.0));
            V(_mm256_castsi256_ps(_mm256_add_epi32(
                _mm256_castps_si256(self.0),
                shifted,
            )))
        }
        #[inline(always)]
        unsafe fn eq(self, o: Self) -> __m256 {
            _mm256_cmp_ps::<_CMP_EQ_OQ>(self.0, o.0)
        }
        #[inline(always)]
        unsafe fn div(self, o: Self) -> Self {
            V(_mm256_div_ps(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn abs(self) -> Self {
            V(_mm256_andnot_ps(_mm256_set1_ps(-0.0), self.0))
        }
        #[inline(always)]
        unsafe fn exponent_mantissa(self) -> (Self, Self) {
            let bits = _mm256_castps_si256(self.0);
            let k = _mm256_sub_epi32(_mm256_srli_epi32::<23>(bits), _mm256_set1_epi32(127));
            let f = _mm256_or_si256(
                _mm256_and_si256(bits, _mm256_set1_epi32(0x007f_ffff)),
                _mm256_set1_epi32(0x3f80_0000),
            );
            (V(_mm256_cvtepi32_ps(k)), V(_mm256_castsi256_ps(f)))
        }
        #[inline(always)]
        unsafe fn gt(self, o: Self) -> __m256 {
            _mm256_cmp_ps::<_CMP_GT_OQ>(self.0, o.0)
        }
        #[inline(always)]
        unsafe fn is_nan(self) -> __m256 {
            _mm256_cmp_ps::<_CMP_UNORD_Q>(self.0, self.0)
        }
        #[inline(always)]
        unsafe fn select(m: __m256, a: Self, b: Self) -> Self {
            V(_mm256_blendv_ps(b.0, a.0, m))
        }
        #[inline(always)]
        unsafe fn lt(self, o: Self) -> __m256 {
            _mm256_cmp_ps::<_CMP_LT_OQ>(self.0, o.0)
        }
        #[inline(always)]
        unsafe fn any(m: __m256) -> bool {
            _mm256_movemask_ps(m) != 0
        }
        #[inline(always)]
        unsafe fn bits(m: __m256) -> u32 {
            _mm256_movemask_ps(m) as u32
        }
        #[inline(always)]
        unsafe fn zero_where(m: __m256, a: Self) -> Self {
            V(_mm256_andnot_ps(m, a.0))
        }
        #[inline(always)]
        unsafe fn one_where(m: __m256, a: Self) -> Self {
            V(_mm256_and_ps(m, a.0))
        }
        #[inline(always)]
        unsafe fn hmax(self) -> f32 {
            let mut b = [0.0f32; 8];
            _mm256_storeu_ps(b.as_mut_ptr(), self.0);
            b.iter()
                .fold(f32::NEG_INFINITY, |a, &v| if v > a { v } else { a })
        }
        #[inline(always)]
        unsafe fn hsum_f32(self) -> f32 {
            let mut b = [0.0f32; 8];
            _mm256_storeu_ps(b.as_mut_ptr(), self.0);
            b.iter().sum()
        }
        #[inline(always)]
        unsafe fn acc_zero() -> Self::F64Acc {
            (_mm256_setzero_pd(), _mm256_setzero_pd())
        }
        #[inline(always)]
        unsafe fn acc_add(acc: Self::F64Acc, v: Self) -> Self::F64Acc {
            let lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v.0));
            let hi = _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(v.0));
            (_mm256_add_pd(acc.0, lo), _mm256_add_pd(acc.1, hi))
        }
        #[inline(always)]
        unsafe fn acc_lanes(acc: Self::F64Acc, out: *mut f64) {
            _mm256_storeu_pd(out, acc.0);
            _mm256_storeu_pd(out.add(4), acc.1);
        }
        #[inline(always)]
        unsafe fn acc_load(p: *const f64) -> Self::F64Acc {
            (_mm256_loadu_pd(p), _mm256_loadu_pd(p.add(4)))
        }
        #[inline(always)]
        unsafe fn acc_sum(acc: Self::F64Acc) -> f64 {
            let mut b = [0.0f64; 4];
            _mm256_storeu_pd(b.as_mut_ptr(), _mm256_add_pd(acc.0, acc.1));
            (b[0] + b[1]) + (b[2] + b[3])
        }
        #[inline(always)]
        unsafe fn any_outside_unit(self) -> bool {
            let below = _mm256_cmp_ps::<_CMP_NGE_UQ>(self.0, _mm256_setzero_ps());
            let above = _mm256_cmp_ps::<_CMP_NLE_UQ>(self.0, _mm256_set1_ps(1.0));
            _mm256_movemask_ps(_mm256_or_ps(below, above)) != 0
        }
        #[inline(always)]
        unsafe fn all_binary(self) -> bool {
            let zero = _mm256_cmp_ps::<_CMP_EQ_OQ>(self.0, _mm256_setzero_ps());
            let one = _mm256_cmp_ps::<_CMP_EQ_OQ>(self.0, _mm256_set1_ps(1.0));
            _mm256_movemask_ps(_mm256_or_ps(zero, one)) == 0xff
        }
        #[inline(always)]
        unsafe fn load_f16(p: *const u16) -> Self {
            V(_mm256_cvtph_ps(_mm_loadu_si128(p.cast())))
        }
        #[inline(always)]
        unsafe fn store_f16(self, p: *mut u16) {
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(self.0);
            _mm_storeu_si128(p.cast(), h)
        }
        #[inline(always)]
        unsafe fn load_bf16(p: *const u16) -> Self {
            let w = _mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast()));
            V(_mm256_castsi256_ps(_mm256_slli_epi32::<16>(w)))
        }
        #[inline(always)]
        unsafe fn store_bf16(self, p: *mut u16) {
            let b = _mm256_castps_si256(self.0);
            let odd = _mm256_and_si256(_mm256_srli_epi32::<16>(b), _mm256_set1_epi32(1));
            let rounded = _mm256_add_epi32(b, _mm256_add_epi32(odd, _mm256_set1_epi32(0x7fff)));
            let quiet = _mm256_or_si256(b, _mm256_set1_epi32(0x0040_0000));
            let nan = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_UNORD_Q>(self.0, self.0));
            let r = _mm256_srli_epi32::<16>(_mm256_blendv_epi8(rounded, quiet, nan));
            let packed =
                _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256::<1>(r));
            _mm_storeu_si128(p.cast(), packed)
        }
        #[inline(always)]
        unsafe fn transpose8(
            src: *const f32,
            ss: usize,
            nr: usize,
            nc: usize,
            dst: *mut f32,
            ds: usize,
        ) {
            super::transpose8_avx(src, ss, nr, nc, dst, ds)
        }
    }
}

pub mod avx512 {
    use super::F32Vec;
    use std::arch::x86_64::*;

    #[derive(Clone, Copy)]
    pub struct V(__m512);

    impl F32Vec for V {
        const LANES: usize = 16;
        type Mask = __mmask16;
        type F64Acc = (__m512d, __m512d);

        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            V(_mm512_set1_ps(v))
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            V(_mm512_loadu_ps(p))
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            _mm512_storeu_ps(p, self.0)
        }
        #[inline(always)]
        unsafe fn load_partial(p: *const f32, n: usize, fill: f32) -> Self {
            V(_mm512_mask_loadu_ps(
                _mm512_set1_ps(fill),
                (1u16 << n) - 1,
                p,
            ))
        }
        #[inline(always)]
        unsafe fn store_partial(self, p: *mut f32, n: usize) {
            _mm512_mask_storeu_ps(p, (1u16 << n) - 1, self.0)
        }
        #[inline(always)]
        unsafe fn add(self, o: Self) -> Self {
            V(_mm512_add_ps(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn sub(self, o: Self) -> Self {
            V(_mm512_sub_ps(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn mul(self, o: Self) -> Self {
            V(_mm512_mul_ps(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn fma(self, b: Self, c: Self) -> Self {
            V(_mm512_fmadd_ps(self.0, b.0, c.0))
        }
        #[inline(always)]
        unsafe fn max_keep_nan(self, o: Self) -> Self {
            // vmaxps returns its second operand when either is NaN.
            V(_mm512_max_ps(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn round(self) -> Self {
            V(_mm512_roundscale_ps::<
                { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
            >(self.0))
        }
        #[inline(always)]
        unsafe fn pow2(n: Self) -> Self {
            let i = _mm512_add_epi32(_mm512_cvtps_epi32(n.0), _mm512_set1_epi32(127));
            V(_mm512_castsi512_ps(_mm512_slli_epi32::<23>(i)))
        }
        #[inline(always)]
        unsafe fn add_exponent(self, t: Self) -> Self {
            let shifted = _mm512_slli_epi32::<23>(_mm512_castps_si512(t.0));
            V(_mm512_castsi512_ps(_mm512_add_epi32(
                _mm512_castps_si512(self.0),
                shifted,
            )))
        }
        #[inline(always)]
        unsafe fn eq(self, o: Self) -> __mmask16 {
            _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(self.0, o.0)
        }
        #[inline(always)]
        unsafe fn div(self, o: Self) -> Self {
            V(_mm512_div_ps(self.0, o.0))
        }
        #[inline(always)]
        unsafe fn abs(self) -> Self {
            V(_mm512_abs_ps(self.0))
        }
        #[inline(always)]
        unsafe fn exponent_mantissa(self) -> (Self, Self) {
            let bits = _mm512_castps_si512(self.0);
            let k = _mm512_sub_epi32(_mm512_srli_epi32::<23>(bits), _mm512_set1_epi32(127));
            let f = _mm512_or_si512(
                _mm512_and_si512(bits, _mm512_set1_epi32(0x007f_ffff)),
                _mm512_set1_epi32(0x3f80_0000),
            );
            (V(_mm512_cvtepi32_ps(k)), V(_mm512_castsi512_ps(f)))
        }
        #[inline(always)]
        unsafe fn gt(self, o: Self) -> __mmask16 {
            _mm512_cmp_ps_mask::<_CMP_GT_OQ>(self.0, o.0)
        }
        #[inline(always)]
        unsafe fn is_nan(self) -> __mmask16 {
            _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(self.0, self.0)
        }
        #[inline(always)]
        unsafe fn select(m: __mmask16, a: Self, b: Self) -> Self {
            V(_mm512_mask_blend_ps(m, b.0, a.0))
        }
        #[inline(always)]
        unsafe fn lt(self, o: Self) -> __mmask16 {
            _mm512_cmp_ps_mask::<_CMP_LT_OQ>(self.0, o.0)
        }
        #[inline(always)]
        unsafe fn any(m: __mmask16) -> bool {
            m != 0
        }
        #[inline(always)]
        unsafe fn bits(m: __mmask16) -> u32 {
            u32::from(m)
        }
        #[inline(always)]
        unsafe fn zero_where(m: __mmask16, a: Self) -> Self {
            V(_mm512_maskz_mov_ps(!m, a.0))
        }
        #[inline(always)]
        unsafe fn one_where(m: __mmask16, a: Self) -> Self {
            V(_mm512_maskz_mov_ps(m, a.0))
        }
        #[inline(always)]
        unsafe fn hmax(self) -> f32 {
            let mut b = [0.0f32; 16];
            _mm512_storeu_ps(b.as_mut_ptr(), self.0);
            b.iter()
                .fold(f32::NEG_INFINITY, |a, &v| if v > a { v } else { a })
        }
        #[inline(always)]
        unsafe fn hsum_f32(self) -> f32 {
            let mut b = [0.0f32; 16];
            _mm512_storeu_ps(b.as_mut_ptr(), self.0);
            b.iter().sum()
        }
        #[inline(always)]
        unsafe fn acc_zero() -> Self::F64Acc {
            (_mm512_setzero_pd(), _mm512_setzero_pd())
        }
        #[inline(always)]
        unsafe fn acc_add(acc: Self::F64Acc, v: Self) -> Self::F64Acc {
            let lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v.0));
            let hi_bits = _mm512_extracti64x4_epi64::<1>(_mm512_castps_si512(v.0));
            let hi = _mm512_cvtps_pd(_mm256_castsi256_ps(hi_bits));
            (_mm512_add_pd(acc.0, lo), _mm512_add_pd(acc.1, hi))
        }
        #[inline(always)]
        unsafe fn acc_lanes(acc: Self::F64Acc, out: *mut f64) {
            _mm512_storeu_pd(out, acc.0);
            _mm512_storeu_pd(out.add(8), acc.1);
        }
        #[inline(always)]
        unsafe fn acc_load(p: *const f64) -> Self::F64Acc {
            (_mm512_loadu_pd(p), _mm512_loadu_pd(p.add(8)))
        }
        #[inline(always)]
        unsafe fn acc_sum(acc: Self::F64Acc) -> f64 {
            let mut b = [0.0f64; 8];
            _mm512_storeu_pd(b.as_mut_ptr(), _mm512_add_pd(acc.0, acc.1));
            ((b[0] + b[1]) + (b[2] + b[3])) + ((b[4] + b[5]) + (b[6] + b[7]))
        }
        #[inline(always)]
        unsafe fn any_outside_unit(self) -> bool {
            let below = _mm512_cmp_ps_mask::<_CMP_NGE_UQ>(self.0, _mm512_setzero_ps());
            let above = _mm512_cmp_ps_mask::<_CMP_NLE_UQ>(self.0, _mm512_set1_ps(1.0));
            (below | above) != 0
        }
        #[inline(always)]
        unsafe fn all_binary(self) -> bool {
            let zero = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(self.0, _mm512_setzero_ps());
            let one = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(self.0, _mm512_set1_ps(1.0));
            (zero | one) == 0xffff
        }
        #[inline(always)]
        unsafe fn load_f16(p: *const u16) -> Self {
            V(_mm512_cvtph_ps(_mm256_loadu_si256(p.cast())))
        }
        #[inline(always)]
        unsafe fn store_f16(self, p: *mut u16) {
            let h = _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(self.0);
            _mm256_storeu_si256(p.cast(), h)
        }
        #[inline(always)]
        unsafe fn load_bf16(p: *const u16) -> Self {
            let w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(p.cast()));
            V(_mm512_castsi512_ps(_mm512_slli_epi32::<16>(w)))
        }
        #[inline(always)]
        unsafe fn store_bf16(self, p: *mut u16) {
            let b = _mm512_castps_si512(self.0);
            let odd = _mm512_and_si512(_mm512_srli_epi32::<16>(b), _mm512_set1_epi32(1));
            let rounded = _mm512_add_epi32(b, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff)));
            let quiet = _mm512_or_si512(b, _mm512_set1_epi32(0x0040_0000));
            let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(self.0, self.0);
            let r = _mm512_srli_epi32::<16>(_mm512_mask_blend_epi32(nan, rounded, quiet));
            _mm256_storeu_si256(p.cast(), _mm512_cvtepi32_epi16(r))
        }
        #[inline(always)]
        unsafe fn transpose8(
            src: *const f32,
            ss: usize,
            nr: usize,
            nc: usize,
            dst: *mut f32,
            ds: usize,
        ) {
            super::transpose8_avx(src, ss, nr, nc, dst, ds)
        }
    }
}
