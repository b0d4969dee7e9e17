//! The float32 soft-capped row: `e_j = exp(u_j − u_m)` for the capped logits
//! `u = c·tanh(x/c)` and their maximum `u_m`, to about 1e-7 relative, in one pass of float32
//! vector arithmetic (no float64 `tanh` of the row), for the soft-capped cross-entropy.
//!
//! The exponent must be right to about 3e-7 *absolute* (a confident row's loss is
//! `≈ Σ e_j`, so an absolute error `δ` in `d_j = u_j − u_m` is a relative error `δ` in it),
//! while `u_j` itself is of size `c`: `c·tanh(x/c)` rounded to float32 is `c·6e-8` off. So
//! `u` is never rounded. Near the origin `u = x − w` with the small correction
//! `w = x·r(a)`, `a = x/c`, `r(a) = 1 − tanh(a)/a = a²/3 − 2a⁴/15 + …` (a minimax polynomial in
//! `a²`: within 2e-8 relative for `|a| ≤ 1/2`), and
//! `d_j = (x_j − M_hi) − M_lo − w_j`, where `x_j − M_hi` is split exactly by TwoSum and
//! `M_hi + M_lo` is `u_m` (float64, split in two floats). The only rounding that is not
//! relative to a small quantity is that of `w` (a few ulp of `|w| ≤ 1`), so
//! `|δ| ≲ 3e-7`; `exp(d_hi)·(1 + d_lo)` then carries it into the exponential. The region is
//! `|x| ≤ x0 = min(c/2, 14)`, which keeps `|w| ≤ 0.93`; lanes outside it (few, in rows
//! of moderate logits; the callers send rows with many of them elsewhere) are computed one
//! by one in float64 and their exponentials summed in float64 on the side. The maximum's
//! own lanes are exactly `e = 1` (`d = 0`), `-inf` lanes exactly 0.

use super::exp::exp_nonpositive;
use super::vector::F32Vec;
use super::{dispatch, SimdOp, FLUSH};
use crate::rowstats::ExpSum;

/// The per-row constants of the capped pass.
#[derive(Clone, Copy, Debug)]
pub struct CapRow {
    /// The cap `c` (finite, positive).
    pub c: f64,
    /// The row's largest logit.
    pub x_m: f32,
    /// `u_m = c·tanh(x_m/c)`, float64.
    pub m: f64,
    /// `sech²(x_m/c)`.
    s_m: f64,
    /// The float32 region's bound.
    x0: f32,
    m_hi: f32,
    m_lo: f32,
    inv_c: f32,
}

/// `|x| ≤` this (and `c/2`) is computed in float32.
const X0_MAX: f32 = 14.0;

/// `r(a)/a²` as a polynomial in `s = a²` on `[0, 1/4]`: a minimax (Lawson) fit, within
/// 2e-8 relative (below the float32 evaluation's own 1.5 ulp; `|w| < 1`, so 2e-8 absolute).
const R: [f32; 5] = [
    0.333_333_3,
    -0.133_332_25,
    0.053_933_48,
    -0.021_470_737,
    0.006_943_048_4,
];

impl CapRow {
    /// The constants of a row with cap `c` and finite largest logit `x_m`.
    pub fn new(c: f64, x_m: f32) -> CapRow {
        let t = (x_m as f64 / c).tanh();
        let m = c * t;
        let m_hi = m as f32;
        CapRow {
            c,
            x_m,
            m,
            s_m: (1.0 - t) * (1.0 + t),
            x0: Self::bound(c),
            m_hi,
            m_lo: (m - m_hi as f64) as f32,
            inv_c: (1.0 / c) as f32,
        }
    }

    /// The float32 region's bound for cap `c`: `|x| ≤ min(c/2, 14)`.
    pub fn bound(c: f64) -> f32 {
        ((c / 2.0) as f32).min(X0_MAX)
    }

    /// `(d, e, sech²(x/c))` of one element computed in float64 (outside the float32
    /// region, and the maximum's own value).
    #[inline]
    fn scalar(&self, x: f32) -> (f64, f64, f64) {
        if x == f32::NEG_INFINITY {
            return (f64::NEG_INFINITY, 0.0, 0.0);
        }
        if x == self.x_m {
            return (0.0, 1.0, self.s_m);
        }
        let t = (x as f64 / self.c).tanh();
        let d = self.c * t - self.m;
        (d, d.exp(), (1.0 - t) * (1.0 + t))
    }
}

/// One vector of the float32 region: `(d_hi, d_lo, e, sech²)` (the maximum's own lanes
/// are the caller's: `d = 0` exactly).
#[inline(always)]
unsafe fn lanes<V: F32Vec>(x: V, p: &CapRow) -> (V, V, V, V) {
    let a = x.mul(V::splat(p.inv_c));
    let s = a.mul(a);
    let mut q = V::splat(R[4]);
    for &c in R[..4].iter().rev() {
        q = q.fma(s, V::splat(c));
    }
    let r = s.mul(q);
    let w = x.mul(r);
    // TwoSum: x − M_hi = h + err exactly.
    let neg_mhi = V::splat(-p.m_hi);
    let h = x.add(neg_mhi);
    let bp = h.sub(x);
    let ap = h.sub(bp);
    let err = x.sub(ap).add(neg_mhi.sub(bp));
    let lo = err.sub(V::splat(p.m_lo)).sub(w);
    // Fast2Sum; where |h| < |lo| both are below 1 and the sum's rounding is negligible.
    let d_hi = h.add(lo);
    let d_lo = lo.sub(d_hi.sub(h));
    // Below FLUSH (only when the maximum is far beyond the region) the exponential is 0.
    let flush = V::splat(FLUSH);
    let e = exp_nonpositive(d_hi.max_keep_nan(flush));
    let e = V::zero_where(d_hi.lt(flush), e.fma(d_lo, e));
    let t = a.sub(a.mul(r));
    let sech2 = V::splat(1.0).sub(t.mul(t));
    (d_hi, d_lo, e, sech2)
}

/// The lanes of `xs` beyond the float32 region other than the maximum's, recomputed in
/// float64: their exponentials are added to `side` and become 0 in `es`; `gs` gets
/// `e·sech²`.
#[inline(never)]
fn far_lanes(xs: &[f32], es: &mut [f32], gs: &mut [f32], p: &CapRow, side: &mut f64) {
    for ((&x, e), g) in xs.iter().zip(es).zip(gs) {
        if x.abs() > p.x0 && x != p.x_m {
            let (_, e64, s64) = p.scalar(x);
            *side += e64;
            *e = 0.0;
            *g = (e64 * s64) as f32;
        }
    }
}

/// The pass over a row: `px` read, `e_j·sech²_j` written at `ps` unless null (`ps` may be
/// `px`: each vector is read before it is written).
struct CappedPass {
    px: *const f32,
    ps: *mut f32,
    n: usize,
    p: CapRow,
}

impl SimdOp for CappedPass {
    type Output = ExpSum;
    #[inline(always)]
    unsafe fn eval<V: F32Vec>(self) -> ExpSum {
        let CappedPass { px, ps, n, p } = self;
        let lanes_n = V::LANES;
        let one = V::splat(1.0);
        let x0 = V::splat(p.x0);
        let xm = V::splat(p.x_m);
        let s_m = V::splat(p.s_m as f32);
        let mut acc = V::acc_zero();
        let mut ties = V::splat(0.0);
        // The exponentials of the float64 lanes, summed in float64.
        let mut side = 0.0f64;
        let full = n - n % lanes_n;
        let mut i = 0;
        while i < n {
            let len = if i < full { lanes_n } else { n - full };
            // SAFETY: the loads and stores cover [i, i + len) of the n floats at px / ps
            // (the caller's contract); a partial vector is read and written masked.
            unsafe {
                let x = if len == lanes_n {
                    V::load(px.add(i))
                } else {
                    V::load_partial(px.add(i), len, f32::NEG_INFINITY)
                };
                let (_, _, e, s) = lanes(x, &p);
                // The maximum's lanes: e = 1 exactly, counted apart from the sum (so that
                // S − 1 keeps the last bits of the small terms).
                let at_max = x.eq(xm);
                ties = ties.add(V::one_where(at_max, one));
                let mut e = V::zero_where(at_max, e);
                let mut g = V::select(at_max, s_m, e.mul(s));
                if V::any(x.abs().gt(x0)) {
                    let mut b = [[0.0f32; 16]; 3];
                    x.store(b[0].as_mut_ptr());
                    e.store(b[1].as_mut_ptr());
                    g.store(b[2].as_mut_ptr());
                    let [xs, es, gs] = &mut b;
                    far_lanes(&xs[..lanes_n], es, gs, &p, &mut side);
                    e = V::load(es.as_ptr());
                    g = V::load(gs.as_ptr());
                }
                acc = V::acc_add(acc, e);
                if !ps.is_null() {
                    if len == lanes_n {
                        g.store(ps.add(i));
                    } else {
                        g.store_partial(ps.add(i), len);
                    }
                }
            }
            i += len;
        }
        // SAFETY: register arithmetic on this path's vectors.
        let (vec_sum, ties) = unsafe { (V::acc_sum(acc), ties.hsum_f32()) };
        let ties = ties as f64;
        let rest = vec_sum + side + (ties - 1.0).max(0.0);
        ExpSum {
            total: 1.0 + rest,
            rest,
        }
    }
}

/// The largest element of a row (NaN if any is NaN) and how many have `|x| > bound`.
struct PrePass<'a>(&'a [f32], f32);

impl SimdOp for PrePass<'_> {
    type Output = (f32, usize);
    #[inline(always)]
    unsafe fn eval<V: F32Vec>(self) -> (f32, usize) {
        let (x, bound) = (self.0, V::splat(self.1));
        // SAFETY: every load reads `LANES` elements inside `x`; the tail is read masked.
        unsafe {
            let mut mx = V::splat(f32::NEG_INFINITY);
            let mut nan = V::splat(0.0);
            let mut count = V::splat(0.0);
            let one = V::splat(1.0);
            let mut chunks = x.chunks_exact(V::LANES);
            for c in &mut chunks {
                let v = V::load(c.as_ptr());
                mx = mx.max_keep_nan(v);
                nan = nan.add(V::one_where(v.is_nan(), one));
                count = count.add(V::one_where(v.abs().gt(bound), one));
            }
            let tail = chunks.remainder();
            if !tail.is_empty() {
                let v = V::load_partial(tail.as_ptr(), tail.len(), 0.0);
                mx = mx.max_keep_nan(V::load_partial(
                    tail.as_ptr(),
                    tail.len(),
                    f32::NEG_INFINITY,
                ));
                nan = nan.add(V::one_where(v.is_nan(), one));
                count = count.add(V::one_where(v.abs().gt(bound), one));
            }
            let m = if nan.hsum_f32() > 0.0 {
                f32::NAN
            } else {
                mx.hmax()
            };
            (m, count.hsum_f32() as usize)
        }
    }
}

/// `(max x, #{j : |x_j| > CapRow::bound(c)})` of a row; the maximum is NaN when any
/// element is.
pub fn capped_prepass_f32(x: &[f32], c: f64) -> (f32, usize) {
    dispatch(PrePass(x, CapRow::bound(c)))
}

/// `S = Σ_j exp(u_j − u_m)` of the capped row (split as in [`ExpSum`]), writing
/// `exp(u_j − u_m)·sech²(x_j/c)` to `store` when given. `x = None` reads the row from
/// `store` itself (in place). The row has no NaN and `p.x_m` is its (finite) maximum.
pub fn capped_exp_sum_f32(x: Option<&[f32]>, store: Option<&mut [f32]>, p: CapRow) -> ExpSum {
    let (px, ps, n) = match (x, store) {
        (Some(x), None) => (x.as_ptr(), std::ptr::null_mut(), x.len()),
        (Some(x), Some(s)) => {
            assert_eq!(x.len(), s.len());
            (x.as_ptr(), s.as_mut_ptr(), x.len())
        }
        (None, Some(s)) => (s.as_ptr(), s.as_mut_ptr(), s.len()),
        (None, None) => {
            return ExpSum {
                total: 1.0,
                rest: 0.0,
            }
        }
    };
    dispatch(CappedPass { px, ps, n, p })
}

/// `(d, e, sech²)` of one element exactly as [`capped_exp_sum_f32`] computes it
/// (`d = u − u_m`, `e = exp(d)`), for the target's terms.
pub fn capped_one_f32(x: f32, p: CapRow) -> (f64, f64, f64) {
    if x.is_nan() || x.abs() > p.x0 || x == p.x_m {
        return p.scalar(x);
    }
    struct One(f32, CapRow);
    impl SimdOp for One {
        type Output = (f64, f64, f64);
        #[inline(always)]
        unsafe fn eval<V: F32Vec>(self) -> (f64, f64, f64) {
            // SAFETY: register arithmetic, and stores into local arrays of 16 floats.
            unsafe {
                let (d_hi, d_lo, e, s) = lanes(V::splat(self.0), &self.1);
                let mut b = [[0.0f32; 16]; 4];
                for (v, o) in [d_hi, d_lo, e, s].into_iter().zip(b.iter_mut()) {
                    v.store(o.as_mut_ptr());
                }
                (
                    b[0][0] as f64 + b[1][0] as f64,
                    b[2][0] as f64,
                    b[3][0] as f64,
                )
            }
        }
    }
    dispatch(One(x, p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(x: f32, c: f64, x_m: f32) -> f64 {
        let m = c * (x_m as f64 / c).tanh();
        c * (x as f64 / c).tanh() - m
    }

    #[test]
    fn exponent_is_right_to_3e_7_absolute_over_the_float32_region() {
        for c in [1.0, 5.0, 30.0, 100.0, 1e4] {
            let x0 = CapRow::bound(c);
            for x_m in [x0, x0 * 0.3, -x0 * 0.2, 3.0 * x0, 200.0] {
                let p = CapRow::new(c, x_m);
                let mut worst: f64 = 0.0;
                let steps = 20_000;
                for i in 0..=steps {
                    let x = -x0 + 2.0 * x0 * i as f32 / steps as f32;
                    if x > x_m {
                        continue;
                    }
                    let (d, e, s) = capped_one_f32(x, p);
                    let want = exact(x, c, x_m);
                    if want < -87.0 {
                        assert!(e == 0.0 || want > -87.4, "{c} {x_m} {x}");
                        continue; // flushed to 0, as without the cap
                    }
                    worst = worst.max((d - want).abs());
                    assert!((e / want.exp() - 1.0).abs() < 5e-7, "{c} {x_m} {x}");
                    let t = (x as f64 / c).tanh();
                    assert!((s - (1.0 - t * t)).abs() < 3e-7, "{c} {x}");
                }
                assert!(worst < 3e-7, "c = {c}, x_m = {x_m}: {worst}");
            }
        }
    }

    #[test]
    fn pass_sums_and_stores_like_float64() {
        let c = 30.0;
        let n = 1003;
        let x: Vec<f32> = (0..n)
            .map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) * 40.0)
            .chain([f32::NEG_INFINITY])
            .collect();
        let (x_m, count) = capped_prepass_f32(&x, c);
        assert_eq!(x_m, x.iter().cloned().fold(f32::NEG_INFINITY, f32::max));
        assert_eq!(count, x.iter().filter(|v| v.abs() > 14.0).count());
        let p = CapRow::new(c, x_m);
        let mut g = vec![0.0f32; x.len()];
        let es = capped_exp_sum_f32(Some(&x), Some(&mut g), p);
        let mut rest = 0.0;
        let mut seen_max = false;
        for (&xj, &gj) in x.iter().zip(&g) {
            let d = exact(xj, c, x_m);
            let t = (xj as f64 / c).tanh();
            if xj == x_m && !seen_max {
                seen_max = true;
            } else {
                rest += d.exp();
            }
            let want = d.exp() * (1.0 - t * t);
            assert!((gj as f64 - want).abs() <= 4e-7 * want.max(1e-30), "{xj}");
        }
        assert!((es.rest / rest - 1.0).abs() < 3e-7);
        let mut inplace = x.clone();
        let es2 = capped_exp_sum_f32(None, Some(&mut inplace), p);
        assert_eq!(es2.rest, es.rest);
        assert_eq!(inplace, g);
        assert_eq!(capped_exp_sum_f32(Some(&x), None, p).rest, es.rest);
    }
}
