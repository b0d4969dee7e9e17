//! The temperature objective of float32 rows as one vector kernel per chunk (dispatched
//! once per chunk, not per row): rows of at most [`BLOCK_MAX_K`] classes one row per lane
//! (a block of `LANES` rows transposed to columns in 8 × 8 tiles; the last rows of a chunk
//! padded to a block, so a row's numbers never depend on where a chunk starts), longer rows
//! a vector at a time. Optionally the same pass also gathers what the fit must know before
//! it starts ([`PassSums::scale`] and the flags), so the fit needs no separate scan.
//!
//! Numerics, for `MIN_BETA ≤ β ≤ MAX_BETA`: per element `u = β·(x − m)` (float32, `β` split in two floats so
//! that the pass is evaluated at `β` itself; `m` the row maximum, masked classes kept out)
//! and `e = exp(u)` (the float32 `exp`, 1 ulp); per row `S = Σe` and the moments
//! `E[u^p] = Σ e·u^p / S`, `p ≤ 3`. Only terms with `u ≥ −87.3` are not flushed, so the
//! moments stay in range for logits of any magnitude; the moments of `x − m` are theirs
//! over `β^p`, applied to the float64 totals. Short rows sum their at most 32 terms in
//! float32 lanes, long rows flush float32 partial sums of 64 terms into float64; every
//! total over rows is float64. Per row the float32 rounding is about 1e-7 of the row's
//! terms, unbiased, and averages out over the rows of a fit.

use crate::simd::{
    dispatch, exp_nonpositive, log1p_nonnegative, to_columns, F32Vec, SimdOp, FLUSH,
};

/// The most classes a row may have for the one-row-per-lane block.
pub const BLOCK_MAX_K: usize = 32;
/// The most lanes of any path (AVX-512).
const MAX_LANES: usize = 16;
/// Vectors of a long row summed in float32 before they are added to the float64 sums.
const FLUSH_VECTORS: usize = 8;
/// The largest `β` the kernel takes (beyond it `β·(x − m)` could overflow float32 for
/// ordinary logit gaps; the portable rows take it).
pub const MAX_BETA: f64 = 1e30;
/// The smallest: `−f32::MAX·β` is then far below the flush limit (a masked class stays out).
pub const MIN_BETA: f64 = 1e-30;

/// Weighted sums of one pass over rows (`Σ w·l`, `Σ w·l'`, `Σ w·l''`, `Σ w·l'''`, `Σ w`, the
/// derivatives in `β`), and, when the pass scans, the largest finite `|z|` and flags over
/// the rows.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PassSums {
    pub loss: f64,
    pub slope: f64,
    pub curvature: f64,
    /// The weighted third derivative, `Σ w·E[(z − E z)³]` under `softmax(β z)`: it shapes
    /// a Halley step, so its cancellation in float32 only costs that step some precision.
    pub third: f64,
    pub weight: f64,
    /// The largest finite `|z|` of every row (scan only).
    pub scale: f64,
    /// Some live row has two different unmasked logits (scan only).
    pub varying: bool,
    /// Some live row's labelled class does not have the largest logit (scan only).
    pub missed: bool,
    /// Some row holds NaN, `+inf`, or nothing but `-inf` (scan only).
    pub bad: bool,
    /// Some live row's labelled logit is `-inf` (scan only).
    pub masked_label: bool,
}

impl PassSums {
    pub fn join(self, o: PassSums) -> PassSums {
        PassSums {
            loss: self.loss + o.loss,
            slope: self.slope + o.slope,
            curvature: self.curvature + o.curvature,
            third: self.third + o.third,
            weight: self.weight + o.weight,
            scale: self.scale.max(o.scale),
            varying: self.varying | o.varying,
            missed: self.missed | o.missed,
            bad: self.bad | o.bad,
            masked_label: self.masked_label | o.masked_label,
        }
    }
}

/// What a pass computes besides the slope and curvature.
#[derive(Clone, Copy)]
pub struct PassSpec<'a> {
    pub k: usize,
    /// In `[MIN_BETA, MAX_BETA]`.
    pub beta: f64,
    /// Per-class weights (a row of weight 0 is not live: it adds nothing to the sums).
    pub weight: Option<&'a [f64]>,
    pub loss: bool,
    pub scan: bool,
}

/// The pass over the rows of `x` (`labels` in `[0, k)`, checked by the caller).
pub fn pass_f32(x: &[f32], labels: &[i64], spec: PassSpec<'_>) -> PassSums {
    match (spec.loss, spec.scan) {
        (false, false) => dispatch(Pass::<false, false> { x, labels, spec }),
        (true, false) => dispatch(Pass::<true, false> { x, labels, spec }),
        (false, true) => dispatch(Pass::<false, true> { x, labels, spec }),
        (true, true) => dispatch(Pass::<true, true> { x, labels, spec }),
    }
}

struct Pass<'a, const LOSS: bool, const SCAN: bool> {
    x: &'a [f32],
    labels: &'a [i64],
    spec: PassSpec<'a>,
}

/// Vector constants of a pass.
#[derive(Clone, Copy)]
struct Consts<V> {
    /// `β = hi + lo` as two float32s.
    beta_hi: V,
    beta_lo: V,
    flush: V,
    neg_max: V,
    neg_inf: V,
    inf: V,
    zero: V,
    one: V,
    half: V,
}

/// The per-element step: `e = exp(u)`, `u = β·(c − m)`, of one vector of logits `c`
/// against the maxima `m`, and `u` clamped at the flush limit (finite, so that `e·u^p = 0`
/// where `e` is). A masked (`-inf`) lane's gap is clamped to `−f32::MAX`, which `β ≥
/// MIN_BETA` takes below the flush limit: its `e` is 0. NaN in `c` or `m` (so also a row
/// of nothing but `-inf`) gives NaN in both.
#[inline(always)]
unsafe fn exp_step<V: F32Vec>(c: V, m: V, q: &Consts<V>) -> (V, V) {
    let d = q.neg_max.max_keep_nan(c.sub(m));
    let u = d.fma(q.beta_lo, d.mul(q.beta_hi));
    let uc = q.flush.max_keep_nan(u);
    (V::zero_where(u.lt(q.flush), exp_nonpositive(uc)), uc)
}

/// Per-row values summed over a chunk (weighted): `log S`, `E[u]`, `Var[u]`, the third
/// central moment of `u`, and `z_y − m`.
#[derive(Clone, Copy, Default)]
struct RowSums {
    log_s: f64,
    mu: f64,
    var: f64,
    c3: f64,
    dy: f64,
}

impl RowSums {
    #[inline(always)]
    fn add(&mut self, w: f64, v: [f64; 5]) {
        self.log_s += w * v[0];
        self.mu += w * v[1];
        self.var += w * v[2];
        self.c3 += w * v[3];
        self.dy += w * v[4];
    }
}

/// Running float64 sums of a chunk: [`RowSums`] of whole unweighted blocks in vector
/// accumulators, of every other row in `scalar`.
struct Acc<V: F32Vec> {
    v: [V::F64Acc; 5],
    rows: usize,
    scalar: RowSums,
    out: PassSums,
}

/// `(E[u], Var[u], E[(u − E u)³])` from `S` and `Σ e·u^p`.
#[inline(always)]
fn moments(s: f64, s1: f64, s2: f64, s3: f64) -> (f64, f64, f64) {
    let (mu, m2) = (s1 / s, s2 / s);
    (
        mu,
        (m2 - mu * mu).max(0.0),
        s3 / s - mu * (3.0 * m2 - 2.0 * mu * mu),
    )
}

impl<const LOSS: bool, const SCAN: bool> SimdOp for Pass<'_, LOSS, SCAN> {
    type Output = PassSums;

    #[inline(always)]
    unsafe fn eval<V: F32Vec>(self) -> PassSums {
        let k = self.spec.k;
        let n = self.labels.len();
        let beta = self.spec.beta;
        assert!(k >= 1 && self.x.len() == n * k && (MIN_BETA..=MAX_BETA).contains(&beta));
        assert!(!self
            .labels
            .iter()
            .fold(false, |a, &y| a | (y as u64 >= k as u64)));
        assert!(self.spec.weight.is_none_or(|w| w.len() == k));
        let beta_hi = beta as f32;
        let q = Consts {
            beta_hi: V::splat(beta_hi),
            beta_lo: V::splat((beta - beta_hi as f64) as f32),
            flush: V::splat(FLUSH),
            neg_max: V::splat(-f32::MAX),
            neg_inf: V::splat(f32::NEG_INFINITY),
            inf: V::splat(f32::INFINITY),
            zero: V::splat(0.0),
            one: V::splat(1.0),
            half: V::splat(0.5),
        };
        let mut acc = Acc::<V> {
            v: [V::acc_zero(); 5],
            rows: 0,
            scalar: RowSums::default(),
            out: PassSums::default(),
        };
        let lanes = V::LANES;
        let mut r = 0;
        if lanes >= 8 && (2..=BLOCK_MAX_K).contains(&k) {
            while r + lanes <= n {
                // SAFETY: `eval`'s contract gives V's instruction set; rows `r..r + lanes`
                // are inside `x` (n·k long, asserted) and their labels are below k.
                unsafe { self.block::<V>(self.x.as_ptr().add(r * k), r, lanes, &q, &mut acc) };
                r += lanes;
            }
            if r < n {
                // The last rows padded to a block with copies of the first of them (lanes
                // left out of every sum).
                let mut pad = [0.0f32; BLOCK_MAX_K * MAX_LANES];
                let (tail, first) = (&self.x[r * k..], &self.x[r * k..(r + 1) * k]);
                pad[..tail.len()].copy_from_slice(tail);
                for i in n - r..lanes {
                    pad[i * k..(i + 1) * k].copy_from_slice(first);
                }
                // SAFETY: as above; `pad` holds `lanes` rows of k.
                unsafe { self.block::<V>(pad.as_ptr(), r, n - r, &q, &mut acc) };
                r = n;
            }
        }
        for i in r..n {
            // SAFETY: as above, for row i.
            unsafe { self.row::<V>(i, &q, &mut acc) };
        }
        let mut t = acc.scalar;
        let [a0, a1, a2, a3, a4] = acc.v;
        t.log_s += V::acc_sum(a0);
        t.mu += V::acc_sum(a1);
        t.var += V::acc_sum(a2);
        t.c3 += V::acc_sum(a3);
        t.dy += V::acc_sum(a4);
        let mut out = acc.out;
        out.loss = if LOSS { t.log_s - beta * t.dy } else { 0.0 };
        out.slope = t.mu / beta - t.dy;
        out.curvature = t.var / (beta * beta);
        out.third = t.c3 / (beta * beta * beta);
        if self.spec.weight.is_none() {
            out.weight += acc.rows as f64;
        }
        out
    }
}

impl<const LOSS: bool, const SCAN: bool> Pass<'_, LOSS, SCAN> {
    /// The class weight of row `i` (1 without weights).
    #[inline(always)]
    fn weight_of(&self, i: usize) -> f64 {
        self.spec.weight.map_or(1.0, |w| w[self.labels[i] as usize])
    }

    /// Adds row `i`'s values (`log S`, `E[u]`, `Var[u]`, third moment, `z_y − m`) with its
    /// weight, unless that is 0.
    #[inline(always)]
    fn add_row(&self, i: usize, v: [f64; 5], acc: &mut Acc<impl F32Vec>) {
        let w = self.weight_of(i);
        if w != 0.0 {
            acc.scalar.add(w, v);
            acc.out.weight += if self.spec.weight.is_some() { w } else { 0.0 };
            acc.rows += usize::from(self.spec.weight.is_none());
        }
    }

    /// `LANES` rows of `k` at `x`, one per lane, the first `count` of them rows `r0..` of
    /// the pass (the others are left out). Per-lane arrays are indexed by lane.
    ///
    /// # Safety
    /// The CPU supports V's instruction set, `LANES ≥ 8` and `2 ≤ k ≤ 32`; `x` holds
    /// `LANES·k` floats; rows `r0..r0 + count` are rows of the pass.
    #[allow(clippy::needless_range_loop)]
    #[inline(always)]
    unsafe fn block<V: F32Vec>(
        &self,
        x: *const f32,
        r0: usize,
        count: usize,
        q: &Consts<V>,
        acc: &mut Acc<V>,
    ) {
        let (k, lanes) = (self.spec.k, V::LANES);
        let mut cols = std::mem::MaybeUninit::<[f32; BLOCK_MAX_K * MAX_LANES]>::uninit();
        let pc = cols.as_mut_ptr().cast::<f32>();
        // SAFETY: the caller's contract; `cols` holds k·LANES floats, every one written by
        // the transpose before it is read, in whole vectors at multiples of LANES.
        unsafe {
            to_columns::<V>(x, k, lanes, pc);
            let mut xy = [0.0f32; MAX_LANES];
            for (i, v) in xy.iter_mut().enumerate().take(count) {
                *v = *x.add(i * k + self.labels[r0 + i] as usize);
            }
            let mut m = V::load(pc);
            for j in 1..k {
                m = m.max_keep_nan(V::load(pc.add(j * lanes)));
            }
            let (mut s, mut s1, mut s2, mut s3) = (q.zero, q.zero, q.zero, q.zero);
            let (mut rest, mut ties, mut low) = (q.zero, q.zero, q.inf);
            for j in 0..k {
                let c = V::load(pc.add(j * lanes));
                let (e, u) = exp_step(c, m, q);
                s = s.add(e);
                let eu = e.mul(u);
                s1 = s1.add(eu);
                let eu2 = eu.mul(u);
                s2 = s2.add(eu2);
                s3 = eu2.fma(u, s3);
                if LOSS {
                    let tie = c.eq(m);
                    rest = rest.add(V::zero_where(tie, e));
                    ties = ties.add(V::one_where(tie, q.one));
                }
                if SCAN {
                    let cm = V::select(c.eq(q.neg_inf), q.inf, c);
                    low = V::select(cm.lt(low), cm, low);
                }
            }
            let dy = V::load(xy.as_ptr()).sub(m);
            let inv = q.one.div(s);
            let mu = s1.mul(inv);
            let m2 = s2.mul(inv);
            let mu2 = mu.mul(mu);
            let var = q.zero.max_keep_nan(m2.sub(mu2));
            // E[(u − μ)³] = E[u³] − μ (3 E[u²] − 2μ²).
            let c3 = s3
                .mul(inv)
                .sub(mu.mul(m2.mul(V::splat(3.0)).sub(mu2.add(mu2))));
            let log_s = if LOSS {
                log1p_nonnegative(rest.add(ties.sub(q.one)))
            } else {
                q.zero
            };
            let whole = count == lanes && self.spec.weight.is_none();
            if SCAN && whole && !(V::any(s.lt(q.half)) || V::any(s.is_nan())) {
                // A whole block of live rows (no weights), none of them bad: `scan_row`'s
                // checks for every lane at once. In a valid row `low ≤ m` and `xy ≤ m`, so
                // "differs from m" is "below m".
                let xv = V::load(xy.as_ptr());
                let out = &mut acc.out;
                out.scale = out.scale.max(m.abs().max_keep_nan(low.abs()).hmax() as f64);
                out.varying |= V::any(low.lt(m));
                out.missed |= V::any(xv.lt(m));
                out.masked_label |= V::any(xv.eq(q.neg_inf));
            } else if SCAN {
                let mut lanes3 = [[0.0f32; MAX_LANES]; 3];
                for (v, a) in [m, low, s].into_iter().zip(lanes3.iter_mut()) {
                    v.store(a.as_mut_ptr());
                }
                let [mm, ll, ss] = lanes3;
                for i in 0..count {
                    self.scan_row(r0 + i, mm[i], ll[i], xy[i], ss[i], &mut acc.out);
                }
            }
            let vals = [log_s, mu, var, c3, dy];
            if self.spec.weight.is_none() && count == lanes {
                for (a, v) in acc.v.iter_mut().zip(vals) {
                    *a = V::acc_add(*a, v);
                }
                acc.rows += lanes;
            } else {
                let mut lanes5 = [[0.0f32; MAX_LANES]; 5];
                for (v, a) in vals.into_iter().zip(lanes5.iter_mut()) {
                    v.store(a.as_mut_ptr());
                }
                for i in 0..count {
                    let v = [0, 1, 2, 3, 4].map(|j| lanes5[j][i] as f64);
                    self.add_row(r0 + i, v, acc);
                }
            }
        }
    }

    /// The scan's part of row `i`: its maximum `m`, smallest unmasked logit `low`, labelled
    /// logit `xy` and sum of exponentials `s` (at least 1, its maximum's term, in a valid
    /// row; NaN for a NaN or `+inf` logit or a row of nothing but `-inf`).
    #[inline(always)]
    fn scan_row(&self, i: usize, m: f32, low: f32, xy: f32, s: f32, out: &mut PassSums) {
        if s.is_nan() || s < 0.5 {
            out.bad = true;
            return;
        }
        out.scale = out.scale.max((m as f64).abs()).max((low as f64).abs());
        if self.weight_of(i) != 0.0 {
            out.varying |= low != m;
            out.missed |= xy != m;
            out.masked_label |= xy == f32::NEG_INFINITY;
        }
    }

    /// Row `i`, a vector at a time.
    ///
    /// # Safety
    /// The CPU supports V's instruction set; the row is inside `x`, its label below `k`.
    #[inline(always)]
    unsafe fn row<V: F32Vec>(&self, i: usize, q: &Consts<V>, acc: &mut Acc<V>) {
        let (k, lanes) = (self.spec.k, V::LANES);
        let y = self.labels[i] as usize;
        // SAFETY: the caller's contract; full vectors are read below `k`, the last one
        // partially.
        unsafe {
            let x = self.x.as_ptr().add(i * k);
            let full = k - k % lanes;
            let mut mv = q.neg_inf;
            let mut j = 0;
            while j < full {
                mv = mv.max_keep_nan(V::load(x.add(j)));
                j += lanes;
            }
            if full < k {
                mv = mv.max_keep_nan(V::load_partial(x.add(full), k - full, f32::NEG_INFINITY));
            }
            let m32 = mv.hmax();
            let m = V::splat(m32);
            let mut f = [V::acc_zero(); 6];
            let mut low = q.inf;
            let mut j = 0;
            while j < k {
                let (mut s, mut s1, mut s2, mut s3) = (q.zero, q.zero, q.zero, q.zero);
                let (mut rest, mut ties) = (q.zero, q.zero);
                let mut v = 0;
                while v < FLUSH_VECTORS && j < k {
                    let c = if j + lanes <= k {
                        V::load(x.add(j))
                    } else {
                        V::load_partial(x.add(j), k - j, f32::NEG_INFINITY)
                    };
                    let (e, u) = exp_step(c, m, q);
                    s = s.add(e);
                    let eu = e.mul(u);
                    s1 = s1.add(eu);
                    let eu2 = eu.mul(u);
                    s2 = s2.add(eu2);
                    s3 = eu2.fma(u, s3);
                    if LOSS {
                        let tie = c.eq(m);
                        rest = rest.add(V::zero_where(tie, e));
                        ties = ties.add(V::one_where(tie, q.one));
                    }
                    if SCAN {
                        let cm = V::select(c.eq(q.neg_inf), q.inf, c);
                        low = V::select(cm.lt(low), cm, low);
                    }
                    j += lanes;
                    v += 1;
                }
                for (a, v) in f.iter_mut().zip([s, s1, s2, s3, rest, ties]) {
                    *a = V::acc_add(*a, v);
                }
            }
            let [s, s1, s2, s3, rest, ties] = f.map(|a| V::acc_sum(a));
            let xy = *x.add(y);
            if SCAN {
                // The smallest unmasked logit over the lanes.
                let mut ll = [0.0f32; MAX_LANES];
                low.store(ll.as_mut_ptr());
                let low = ll[..lanes].iter().fold(f32::INFINITY, |a, &b| a.min(b));
                self.scan_row(i, m32, low, xy, s as f32, &mut acc.out);
            }
            let (mu, var, c3) = moments(s, s1, s2, s3);
            let log_s = if LOSS {
                (rest + (ties - 1.0)).ln_1p()
            } else {
                0.0
            };
            self.add_row(i, [log_s, mu, var, c3, xy as f64 - m32 as f64], acc);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::{dispatch_on, supported};

    /// The f64 sums of one row: (log S − β d_y, slope, curvature, third), d = z − max.
    fn exact(x: &[f32], y: usize, beta: f64) -> (f64, f64, f64, f64) {
        let m = x.iter().fold(f64::NEG_INFINITY, |a, &v| a.max(v as f64));
        let live: Vec<f64> = x
            .iter()
            .filter(|&&v| v > f32::NEG_INFINITY)
            .map(|&v| v as f64 - m)
            .collect();
        let e: Vec<f64> = live.iter().map(|d| (beta * d).exp()).collect();
        let s: f64 = e.iter().sum();
        let mom = |p: i32| e.iter().zip(&live).map(|(e, d)| e * d.powi(p)).sum::<f64>() / s;
        let (mu, m2, m3) = (mom(1), mom(2), mom(3));
        let dy = x[y] as f64 - m;
        (
            s.ln() - beta * dy,
            mu - dy,
            m2 - mu * mu,
            m3 - 3.0 * mu * m2 + 2.0 * mu.powi(3),
        )
    }

    fn on(isa: crate::simd::Isa, x: &[f32], labels: &[i64], spec: PassSpec<'_>) -> PassSums {
        let op = Pass::<true, true> { x, labels, spec };
        dispatch_on(isa, op).expect("a supported path")
    }

    fn rows(k: usize, n: usize, seed: u64) -> (Vec<f32>, Vec<i64>) {
        let mut state = seed;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as f64 / (1u64 << 31) as f64
        };
        let mut x: Vec<f32> = (0..n * k).map(|_| ((next() - 0.5) * 12.0) as f32).collect();
        let labels: Vec<i64> = (0..n)
            .map(|_| (next() * k as f64) as i64 % k as i64)
            .collect();
        // Adversarial rows: masked classes (not the labelled one), ties, a huge spread.
        for i in (0..n).step_by(7) {
            let j = (labels[i] as usize + 1) % k;
            if k > 1 {
                x[i * k + j] = f32::NEG_INFINITY;
            }
        }
        for i in (3..n).step_by(11) {
            x[i * k..(i + 1) * k].iter_mut().for_each(|v| *v = 2.5);
        }
        for i in (5..n).step_by(13) {
            x[i * k] = 1e30;
            x[i * k + k - 1] = -1e30;
        }
        (x, labels)
    }

    #[test]
    fn sums_match_float64_rows_on_every_path() {
        for k in [1usize, 2, 3, 7, 8, 10, 16, 31, 32, 33, 100, 257] {
            for n in [1usize, 5, 8, 17, 40] {
                let (x, labels) = rows(k, n, (k * 1000 + n) as u64);
                let w: Vec<f64> = (0..k)
                    .map(|j| if j % 5 == 3 { 0.0 } else { 0.5 + j as f64 })
                    .collect();
                for beta in [1e-3, 0.37, 1.0, 3.0] {
                    for weight in [None, Some(&w[..])] {
                        let (mut want, mut tw) = ([0.0f64; 4], 0.0);
                        let mut size = [0.0f64; 4];
                        for (i, &y) in labels.iter().enumerate() {
                            let wi = weight.map_or(1.0, |w| w[y as usize]);
                            if wi == 0.0 {
                                continue;
                            }
                            let r = exact(&x[i * k..(i + 1) * k], y as usize, beta);
                            for (j, v) in [r.0, r.1, r.2, r.3].into_iter().enumerate() {
                                want[j] += wi * v;
                                size[j] += wi * v.abs().max(1.0);
                            }
                            tw += wi;
                        }
                        let spec = PassSpec {
                            k,
                            beta,
                            weight,
                            loss: true,
                            scan: true,
                        };
                        for isa in supported() {
                            let got = on(isa, &x, &labels, spec);
                            let vals = [got.loss, got.slope, got.curvature, got.third];
                            for j in 0..4 {
                                // The third moment's cancellation in float32 is larger.
                                let tol = if j == 3 { 3e-4 } else { 2e-5 } * size[j];
                                assert!(
                                    (vals[j] - want[j]).abs() <= tol,
                                    "{isa:?} k={k} n={n} beta={beta} sum {j}: {} vs {}",
                                    vals[j],
                                    want[j]
                                );
                            }
                            assert_eq!(got.weight, tw);
                            assert!(!got.bad && !got.masked_label);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_row_gives_the_same_numbers_wherever_a_block_starts() {
        for k in [2usize, 10, 32, 40] {
            let (x, labels) = rows(k, 29, k as u64);
            let spec = PassSpec {
                k,
                beta: 0.8,
                weight: None,
                loss: true,
                scan: false,
            };
            for isa in supported() {
                let whole = on(isa, &x, &labels, spec);
                for cut in [1usize, 3, 8, 13, 28] {
                    let a = on(isa, &x[..cut * k], &labels[..cut], spec);
                    let b = on(isa, &x[cut * k..], &labels[cut..], spec);
                    let joined = a.join(b);
                    for (u, v) in [
                        (joined.slope, whole.slope),
                        (joined.curvature, whole.curvature),
                        (joined.loss, whole.loss),
                    ] {
                        assert!(
                            (u - v).abs() <= 1e-12 * v.abs().max(1.0),
                            "k={k} cut={cut}: {u} vs {v}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_scan_sees_bad_rows_masked_labels_and_the_scale() {
        let k = 10;
        for isa in supported() {
            // Whole blocks of 8 and 16 rows take the vector checks, the rest the per-row ones.
            for n in [8usize, 11, 3, 16, 37] {
                for bad_value in [f32::NAN, f32::INFINITY] {
                    let (mut x, labels) = rows(k, n, 9);
                    x[(n - 1) * k + 4] = bad_value;
                    let spec = PassSpec {
                        k,
                        beta: 1.0,
                        weight: None,
                        loss: false,
                        scan: true,
                    };
                    assert!(on(isa, &x, &labels, spec).bad, "{isa:?} n={n} {bad_value}");
                }
                let (mut x, labels) = rows(k, n, 9);
                x[..k].iter_mut().for_each(|v| *v = f32::NEG_INFINITY);
                let spec = PassSpec {
                    k,
                    beta: 1.0,
                    weight: None,
                    loss: false,
                    scan: true,
                };
                assert!(on(isa, &x, &labels, spec).bad);
                let (mut x, labels) = rows(k, n, 9);
                x[(n - 1) * k + labels[n - 1] as usize] = f32::NEG_INFINITY;
                let got = on(isa, &x, &labels, spec);
                assert!(got.masked_label && !got.bad && got.missed && got.varying);
                let mut w = vec![1.0; k];
                w[labels[n - 1] as usize] = 0.0;
                let spec_w = PassSpec {
                    weight: Some(&w),
                    ..spec
                };
                // A row of weight 0 is not live: its -inf label does not count.
                assert!(!on(isa, &x, &labels, spec_w).masked_label);
                let x: Vec<f32> = (0..n * k)
                    .map(|i| if i % k == 0 { 2.0 } else { -7.5 })
                    .collect();
                let got = on(isa, &x, &vec![0; n], spec);
                assert!(!got.missed && got.varying && got.scale == 7.5);
                for r in [0, n / 2, n - 1] {
                    // One row whose label is not its top class, wherever it falls.
                    let mut labels = vec![0; n];
                    labels[r] = 1;
                    assert!(on(isa, &x, &labels, spec).missed, "{isa:?} n={n} row {r}");
                }
                let mut x2 = x.clone();
                x2[(n / 2) * k + 3] = -9.25;
                assert_eq!(on(isa, &x2, &vec![0; n], spec).scale, 9.25);
                let x = vec![-3.0f32; n * k];
                let got = on(isa, &x, &vec![1; n], spec);
                assert!(!got.varying && !got.missed && got.scale == 3.0);
            }
        }
    }
}
