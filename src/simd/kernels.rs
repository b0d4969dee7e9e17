//! The float32 row kernels, generic over the vector type and instantiated per instruction
//! set in `x86.rs` (and for [`Scalar`](super::vector::Scalar)).

use super::exp::exp_nonpositive;
use super::vector::F32Vec;
use crate::rowstats::ExpSum;

/// Arguments below this underflow float32's normal range; their exponential is flushed to 0.
const FLUSH: f32 = -87.336_54;

pub type ExpSumF32 = ExpSum;

/// Loads up to `LANES` elements (`x.len() < LANES`), filling the rest with `fill`.
#[inline(always)]
unsafe fn load_tail<V: F32Vec>(x: &[f32], fill: f32) -> V {
    let mut buf = [fill; 16];
    buf[..x.len()].copy_from_slice(x);
    V::load(buf.as_ptr())
}

#[inline(always)]
pub fn row_max<V: F32Vec>(x: &[f32]) -> f32 {
    // SAFETY: the caller (a `#[target_feature]` wrapper or the scalar path) guarantees V's
    // instruction set; every load reads `LANES` elements inside `x` or the tail buffer.
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
#[inline(always)]
unsafe fn exp_shifted<V: F32Vec>(v: V, m: V, neg_m: V, lo_bound: V) -> V {
    // −inf (and anything far below the maximum) becomes a finite value whose exponential
    // underflows, so TwoSum never sees inf − inf; NaN passes through.
    let xc = lo_bound.max_keep_nan(v);
    let s = xc.sub(m);
    let bp = s.sub(xc);
    let ap = s.sub(bp);
    let err = xc.sub(ap).add(neg_m.sub(bp));
    let flush = V::splat(FLUSH);
    let e = exp_nonpositive(flush.max_keep_nan(s));
    let e = e.fma(err, e);
    V::select(s.not_lt(flush), e, V::splat(0.0))
}

#[inline(always)]
pub fn exp_sum<V: F32Vec>(x: &[f32], m: f32, mut store: Option<&mut [f32]>) -> ExpSum {
    // SAFETY: as in `row_max`; stores write `LANES` elements inside `store` (same length as
    // `x`) or into the tail buffer.
    unsafe {
        let mv = V::splat(m);
        let neg_m = V::splat(-m);
        let lo_bound = V::splat(m - 104.0);
        let zero = V::splat(0.0);
        let one = V::splat(1.0);
        let mut acc = V::acc_zero();
        let mut ties = zero;
        let n = x.len();
        let full = n - n % V::LANES;
        let mut step = |e: V| -> V {
            let tie = e.eq(one);
            ties = ties.add(V::select(tie, one, zero));
            acc = V::acc_add(acc, V::select(tie, zero, e));
            e
        };
        let mut i = 0;
        while i < full {
            let e = step(exp_shifted(V::load(x.as_ptr().add(i)), mv, neg_m, lo_bound));
            if let Some(s) = store.as_deref_mut() {
                e.store(s.as_mut_ptr().add(i));
            }
            i += V::LANES;
        }
        if full < n {
            let v = load_tail::<V>(&x[full..], f32::NEG_INFINITY);
            let e = step(exp_shifted(v, mv, neg_m, lo_bound));
            if let Some(s) = store {
                let mut buf = [0.0f32; 16];
                e.store(buf.as_mut_ptr());
                s[full..].copy_from_slice(&buf[..n - full]);
            }
        }
        let ties = ties.hsum_f32() as f64;
        let rest = V::acc_sum(acc) + (ties - 1.0).max(0.0);
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
