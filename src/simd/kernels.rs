//! The float32 row kernels, generic over the vector type and instantiated per instruction
//! set in `x86.rs` (and for [`Scalar`](super::vector::Scalar)).

use super::exp::exp_nonpositive;
use super::log1p::log1p_nonnegative;
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
        while i + 4 * V::LANES <= full {
            let e0 = exp_shifted(V::load(px.add(i)), mv, neg_m, lo_bound);
            let e1 = exp_shifted(V::load(px.add(i + V::LANES)), mv, neg_m, lo_bound);
            let e2 = exp_shifted(V::load(px.add(i + 2 * V::LANES)), mv, neg_m, lo_bound);
            let e3 = exp_shifted(V::load(px.add(i + 3 * V::LANES)), mv, neg_m, lo_bound);
            s0.add(e0, one);
            s1.add(e1, one);
            s0.add(e2, one);
            s1.add(e3, one);
            if let Some(s) = store.as_deref_mut() {
                e0.store(s.as_mut_ptr().add(i));
                e1.store(s.as_mut_ptr().add(i + V::LANES));
                e2.store(s.as_mut_ptr().add(i + 2 * V::LANES));
                e3.store(s.as_mut_ptr().add(i + 3 * V::LANES));
            }
            i += 4 * V::LANES;
        }
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

/// Constant factors of a BCE chunk (no per-element weights).
#[derive(Clone, Copy)]
pub struct BceConsts {
    pub weight: f32,
    pub pos_weight: f32,
    pub label_smoothing: f32,
    /// Multiplies gradient and Hessian.
    pub scale: f32,
}

static ONES: [f32; 16] = [1.0; 16];

/// One vector of BCE: (loss, grad, hess), the formulas of [`crate::bce`] with one `exp`
/// and one `log1p` per element.
#[inline(always)]
unsafe fn bce_vec<V: F32Vec>(z: V, y: V, c: &BceConsts) -> (V, V, V) {
    let zero = V::splat(0.0);
    let one = V::splat(1.0);
    let eps = c.label_smoothing;
    let y = y.fma(V::splat(1.0 - eps), V::splat(0.5 * eps));
    let a = V::splat(c.pos_weight).mul(y);
    let b = one.sub(y);
    let flush = V::splat(FLUSH);
    let nz = zero.sub(z.abs());
    let e = V::zero_where(nz.lt(flush), exp_nonpositive(flush.max_keep_nan(nz)));
    let l = log1p_nonnegative(e);
    let sp_neg = zero.max_keep_nan(zero.sub(z)).add(l);
    let sp_pos = zero.max_keep_nan(z).add(l);
    // Zero coefficients contribute exactly zero (no 0 · inf).
    let loss =
        V::zero_where(a.eq(zero), a.mul(sp_neg)).add(V::zero_where(b.eq(zero), b.mul(sp_pos)));
    let loss = V::select(z.is_nan(), z, loss);
    let inv = one.div(one.add(e));
    let neg = z.lt(zero);
    let sig = V::select(neg, e.mul(inv), inv);
    let one_minus_sig = V::select(neg, inv, e.mul(inv));
    let ab = a.add(b);
    let ws = V::splat(c.weight * c.scale);
    // b·σ − a·(1 − σ): no cancellation when either coefficient is zero (hard targets).
    let grad = ws.mul(b.mul(sig).sub(a.mul(one_minus_sig)));
    let hess = ws.mul(ab.mul(sig).mul(one_minus_sig));
    (V::splat(c.weight).mul(loss), grad, hess)
}

/// BCE over a chunk with constant weights. `z == None`: the logits are in `grad` (in place).
/// Returns the sum of the element losses (f64).
#[inline(always)]
pub fn bce_chunk<V: F32Vec>(
    z: Option<&[f32]>,
    y: &[f32],
    c: &BceConsts,
    mut losses: Option<&mut [f32]>,
    mut grad: Option<&mut [f32]>,
    mut hess: Option<&mut [f32]>,
) -> f64 {
    let n = y.len();
    let zp: *const f32 = match (z, grad.as_deref()) {
        (Some(z), _) => z.as_ptr(),
        (None, Some(g)) => g.as_ptr(),
        (None, None) => return 0.0,
    };
    // SAFETY: as in `row_max`. `z`, `y` and every output have `n` elements (checked by the
    // caller); full vectors are read and written at `i + LANES <= n`, the tail masked. In
    // place, the logits of a vector are read before its gradient overwrites them.
    unsafe {
        let mut acc = V::acc_zero();
        let mut i = 0;
        let put = |v: V, out: &mut Option<&mut [f32]>, i: usize, len: usize| {
            if let Some(o) = out.as_deref_mut() {
                if len == V::LANES {
                    v.store(o.as_mut_ptr().add(i));
                } else {
                    v.store_partial(o.as_mut_ptr().add(i), len);
                }
            }
        };
        while i < n {
            let len = V::LANES.min(n - i);
            let (zv, yv, valid) = if len == V::LANES {
                (
                    V::load(zp.add(i)),
                    V::load(y.as_ptr().add(i)),
                    V::splat(1.0),
                )
            } else {
                (
                    V::load_partial(zp.add(i), len, 0.0),
                    V::load_partial(y.as_ptr().add(i), len, 0.0),
                    V::load_partial(ONES.as_ptr(), len, 0.0),
                )
            };
            let (l, g, h) = bce_vec(zv, yv, c);
            acc = V::acc_add(acc, l.mul(valid));
            put(l, &mut losses, i, len);
            put(g, &mut grad, i, len);
            put(h, &mut hess, i, len);
            i += len;
        }
        V::acc_sum(acc)
    }
}

/// The most classes a row may have to be processed one row per lane.
pub const BLOCK_MAX_K: usize = 16;

/// Statistics of `LANES` rows of `k <= BLOCK_MAX_K` elements at once, one row per lane, so
/// that short rows do not leave most lanes idle or pay a horizontal reduction each: per row
/// the maximum, the split sum `S − 1` (f64) and `log S` (f32 `log1p`), and, when `store` is
/// given, the exponentials (row-major, like `x`).
#[inline(always)]
pub fn row_block<V: F32Vec>(
    x: &[f32],
    k: usize,
    m_out: &mut [f32],
    rest_out: &mut [f64],
    log_out: &mut [f32],
    store: Option<&mut [f32]>,
) {
    let lanes = V::LANES;
    assert!(k <= BLOCK_MAX_K && x.len() == lanes * k && m_out.len() >= lanes);
    // SAFETY: as in `row_max`; the staging buffers hold `BLOCK_MAX_K × 16` values and we
    // use `k × LANES`, reading and writing whole vectors at multiples of `LANES`.
    unsafe {
        // Transpose through a staging buffer: plain loads and stores beat hardware gathers.
        let mut columns = [0.0f32; BLOCK_MAX_K * 16]; // (zeroing 1 KB is cheap next to exp)
        for (i, row) in x.chunks_exact(k).enumerate() {
            for (j, &v) in row.iter().enumerate() {
                columns[j * lanes + i] = v;
            }
        }
        let pc = columns.as_ptr();
        let mut mv = V::splat(f32::NEG_INFINITY);
        for j in 0..k {
            mv = mv.max_keep_nan(V::load(pc.add(j * lanes)));
        }
        let neg_m = V::splat(0.0).sub(mv);
        let lo_bound = mv.add(V::splat(FLUSH));
        let one = V::splat(1.0);
        let mut sums = SumState::<V>::new();
        let mut staged = [0.0f32; BLOCK_MAX_K * 16];
        for j in 0..k {
            let e = exp_shifted(V::load(pc.add(j * lanes)), mv, neg_m, lo_bound);
            sums.add(e, one);
            e.store(staged.as_mut_ptr().add(j * lanes));
        }
        let mut acc = [0.0f64; 16];
        let mut ties = [0.0f32; 16];
        let mut rest32 = [0.0f32; 16];
        V::acc_lanes(sums.acc, acc.as_mut_ptr());
        sums.ties.store(ties.as_mut_ptr());
        mv.store(m_out.as_mut_ptr());
        for i in 0..lanes {
            let rest = if ties[i] == 0.0 {
                f64::NAN // the maximum itself gave NaN
            } else {
                acc[i] + (ties[i] as f64 - 1.0)
            };
            rest_out[i] = rest;
            rest32[i] = rest as f32;
        }
        log1p_nonnegative(V::load(rest32.as_ptr())).store(log_out.as_mut_ptr());
        if let Some(st) = store {
            for (i, row) in st.chunks_exact_mut(k).enumerate() {
                for (j, v) in row.iter_mut().enumerate() {
                    *v = staged[j * lanes + i];
                }
            }
        }
    }
}
