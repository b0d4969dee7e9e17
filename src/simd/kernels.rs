//! The float32 row kernels, generic over the vector type and instantiated per instruction
//! set in `x86.rs` (and for [`Scalar`](super::vector::Scalar)).

use super::exp::exp_nonpositive;
use super::vector::F32Vec;
use crate::rowstats::ExpSum;

/// Arguments below this underflow float32's normal range; their exponential is flushed to 0.
const FLUSH: f32 = -87.336_54;

pub type ExpSumF32 = ExpSum;

/// Loads the `x.len() < LANES` elements of a row's tail, filling the rest with `fill`.
#[inline(always)]
unsafe fn load_tail<V: F32Vec>(x: &[f32], fill: f32) -> V {
    V::load_partial(x.as_ptr(), x.len(), fill)
}

#[inline(always)]
pub fn row_max<V: F32Vec>(x: &[f32]) -> f32 {
    // SAFETY: the caller (a `#[target_feature]` wrapper or the scalar path) guarantees V's
    // instruction set; every load reads `LANES` elements inside `x`, or the masked tail.
    unsafe {
        let mut acc = V::splat(f32::NEG_INFINITY);
        let mut chunks = x.chunks_exact(V::LANES);
        for c in &mut chunks {
            acc = acc.max_keep_nan(V::load(c.as_ptr()));
        }
        let tail = chunks.remainder();
        if !tail.is_empty() {
            acc = acc.max_keep_nan(load_tail::<V>(tail, f32::NEG_INFINITY));
        }
        acc.hmax()
    }
}

/// One vector of `exp(x − m)`, exact to about 1 ulp even where `x − m` is not representable:
/// the rounding error of the subtraction (Knuth's TwoSum) is applied as `e·(1 + err)`.
/// `lo_bound = m + FLUSH` (rounded): lanes below it underflow and are exactly 0. The test is
/// on the input itself, not on `x − m`, so it stays right when `m` is so large that
/// `m + FLUSH` rounds to `m` (then every smaller lane is at least one ulp of `m`, far more
/// than 87, below it).
#[inline(always)]
unsafe fn exp_shifted<V: F32Vec>(v: V, m: V, neg_m: V, lo_bound: V) -> V {
    let under = v.lt(lo_bound); // false for NaN, which must propagate
                                // Clamping keeps TwoSum away from inf − inf and the exponent of 2^n in range.
    let xc = lo_bound.max_keep_nan(v);
    let s = xc.sub(m);
    let bp = s.sub(xc);
    let ap = s.sub(bp);
    let err = xc.sub(ap).add(neg_m.sub(bp));
    // `m + FLUSH` may also round down (by up to half an ulp of m): lanes between it and
    // m + FLUSH underflow too.
    let flush = V::splat(FLUSH);
    let e = exp_nonpositive(flush.max_keep_nan(s));
    V::zero_where(under, V::zero_where(s.lt(flush), e.fma(err, e)))
}

/// Accumulates exponentials: the ones that are exactly 1 (the maximum and its ties) are
/// counted, the others summed in f64, so `S − 1` is exact to the last bit of the small terms.
struct SumState<V: F32Vec> {
    acc: V::F64Acc,
    ties: V,
}

impl<V: F32Vec> SumState<V> {
    #[inline(always)]
    unsafe fn new() -> Self {
        SumState {
            acc: V::acc_zero(),
            ties: V::splat(0.0),
        }
    }
    #[inline(always)]
    unsafe fn add(&mut self, e: V, one: V) {
        let tie = e.eq(one);
        self.ties = self.ties.add(V::one_where(tie, one));
        self.acc = V::acc_add(self.acc, V::zero_where(tie, e));
    }
}

#[inline(always)]
pub fn exp_sum<V: F32Vec>(x: &[f32], m: f32, mut store: Option<&mut [f32]>) -> ExpSum {
    // SAFETY: as in `row_max`; loads read `LANES` elements at `i < full` inside `x`, stores
    // write them inside `store` (same length as `x`); the tail is read and written masked.
    unsafe {
        let mv = V::splat(m);
        let neg_m = V::splat(-m);
        let lo_bound = V::splat(m + FLUSH);
        let one = V::splat(1.0);
        // Two independent accumulators hide the latency of the f64 adds.
        let (mut s0, mut s1) = (SumState::<V>::new(), SumState::<V>::new());
        let n = x.len();
        let full = n - n % V::LANES;
        let px = x.as_ptr();
        let mut i = 0;
        while i + 2 * V::LANES <= full {
            let e0 = exp_shifted(V::load(px.add(i)), mv, neg_m, lo_bound);
            let e1 = exp_shifted(V::load(px.add(i + V::LANES)), mv, neg_m, lo_bound);
            s0.add(e0, one);
            s1.add(e1, one);
            if let Some(s) = store.as_deref_mut() {
                e0.store(s.as_mut_ptr().add(i));
                e1.store(s.as_mut_ptr().add(i + V::LANES));
            }
            i += 2 * V::LANES;
        }
        if i < full {
            let e = exp_shifted(V::load(px.add(i)), mv, neg_m, lo_bound);
            s0.add(e, one);
            if let Some(s) = store.as_deref_mut() {
                e.store(s.as_mut_ptr().add(i));
            }
        }
        if full < n {
            let v = load_tail::<V>(&x[full..], f32::NEG_INFINITY);
            let e = exp_shifted(v, mv, neg_m, lo_bound);
            s1.add(e, one);
            if let Some(s) = store {
                e.store_partial(s[full..].as_mut_ptr(), n - full);
            }
        }
        let ties = s0.ties.add(s1.ties).hsum_f32() as f64;
        let rest = V::acc_sum(s0.acc) + V::acc_sum(s1.acc) + (ties - 1.0).max(0.0);
        // No tie at all means the maximum itself gave NaN: the row is NaN.
        let rest = if ties == 0.0 && n > 0 { f64::NAN } else { rest };
        ExpSum {
            total: 1.0 + rest,
            rest,
        }
    }
}

#[inline(always)]
pub fn scale<V: F32Vec>(v: &mut [f32], a: f32) {
    // SAFETY: as in `row_max`; loads and stores stay inside `v`.
    unsafe {
        let av = V::splat(a);
        let mut chunks = v.chunks_exact_mut(V::LANES);
        for c in &mut chunks {
            V::load(c.as_ptr()).mul(av).store(c.as_mut_ptr());
        }
        for e in chunks.into_remainder() {
            *e *= a;
        }
    }
}
