//! The per-row work of the fused calibration pass, over one block of rows: written once,
//! compiled for the portable baseline and inside an AVX2+FMA `#[target_feature]` trampoline
//! (its loops vectorise there), chosen at run time. Every loop keeps the association of
//! its sums, so both compilations give the same bits.
//!
//! The one-vs-rest binning is split by the first edge `e_1`: most probabilities of a row of
//! many classes lie in bin 0, so they are added to dense per-class sums by a branch-free
//! masked loop, and only the few above it are binned one by one.
//!
//! Float32 (and widened 16-bit) logits take their probabilities from the row's float32
//! exponentials, not a float64 softmax (a float64 exponential per logit cost three times
//! the rest of the pass): their bin-0 forecasts are added by one vector pass
//! ([`onevsrest`]), the bin-0 weight per class is the rows' weight less what they put above
//! bin 0. Each such probability is within `3·2^-23` relative of the float64 one, and one
//! within [`EdgeGuard::REL`] of an edge is binned from the float64 softmax instead, so every
//! class lands in the bin its float64 probability has. Every sum over rows is f64, so the
//! numbers do not depend on how the rows are split; the sum of squares of a row is summed
//! in float32 lanes, so its last bits depend on the instruction set (float64 rows' do not).

use super::{onevsrest, Bins, CalibSpec};
use crate::error::{try_vec, Error};
use crate::real::{exp_sum, row_max, Real};
use crate::simd::{
    hard_block, hard_block_lanes, HardBlockStats, HardRows, HardTargets, HARD_BLOCK_ROWS,
};

/// Rows of 16-bit input widened at a time (a small float32 buffer that stays in cache).
const WIDEN_ROWS: usize = 64;

/// What a block computes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Stats {
    /// Every statistic of [`super::calib_stats_len`].
    All,
    /// Only the top-label bins `(3, slots)`.
    TopLabel,
}

/// A block's statistics (added from zero), or the first row (within the block) whose
/// scores are not valid: NaN, or for logits a `+inf` or a row of every logit `-inf`, for
/// probabilities a value outside `[0, 1]`.
pub type BlockResult = Result<Result<Vec<f64>, usize>, Error>;

pub fn block<T: Real>(
    x: &[T],
    labels: &[i64],
    weight: Option<&[f64]>,
    spec: CalibSpec<'_>,
    what: Stats,
    len: usize,
) -> BlockResult {
    let k = spec.k;
    let mut s = Scratch::new(k, len, what)?;
    if what == Stats::TopLabel && spec.from_logits && hard_block_lanes::<T>(k) > 0 {
        return Ok(top_rows(x, labels, weight, spec, &mut s.d).map(|()| s.d));
    }
    if T::NATIVE {
        return Ok(rows(x, labels, weight, spec, what, 0, &mut s).map(|()| s.finish(spec)));
    }
    let mut wide = try_vec(WIDEN_ROWS * k, <T::Work as crate::element::Element>::ZERO)?;
    for (i, xs) in x.chunks(WIDEN_ROWS * k).enumerate() {
        let r0 = i * WIDEN_ROWS;
        let nr = xs.len() / k;
        let wide = &mut wide[..xs.len()];
        T::widen(xs, wide);
        let w = weight.map(|w| &w[r0..r0 + nr]);
        if let Err(bad) = rows(wide, &labels[r0..r0 + nr], w, spec, what, r0, &mut s) {
            return Ok(Err(bad));
        }
    }
    Ok(Ok(s.finish(spec)))
}

/// Work space of a block: the statistics, one row's probabilities (or float32
/// exponentials), the dense bin-0 one-vs-rest sums per class, and what the float32 rows
/// need besides (see [`Scratch::add_float32`]).
struct Scratch {
    d: Vec<f64>,
    p: Vec<f64>,
    e: Vec<f32>,
    w0: Vec<f64>,
    f0: Vec<f64>,
    /// Weight the float32 rows put above bin 0, per class.
    above_w: Vec<f64>,
    /// Total weight of the float32 rows.
    w32: f64,
    /// A float32 row's classes not added as bin 0, as bits.
    bits: Vec<u64>,
}

/// What the per-row adders need of the bins: the rule and edges, `k`, bin 0's upper limit
/// (`p ≤ lim0`), and the float32 rows' edge guard.
#[derive(Clone, Copy)]
struct Layout<'a> {
    bins: Bins<'a>,
    k: usize,
    lim0: f64,
    guard: EdgeGuard,
}

impl Scratch {
    fn new(k: usize, len: usize, what: Stats) -> Result<Scratch, Error> {
        let kk = if what == Stats::All { k } else { 0 };
        Ok(Scratch {
            d: try_vec(len, 0.0)?,
            p: try_vec(kk, 0.0)?,
            e: try_vec(kk, 0.0)?,
            w0: try_vec(kk, 0.0)?,
            f0: try_vec(kk, 0.0)?,
            above_w: try_vec(kk, 0.0)?,
            w32: 0.0,
            bits: try_vec(kk.div_ceil(64), 0)?,
        })
    }

    /// The statistics with the dense bin-0 sums in their places (those slots were never
    /// touched otherwise). The float32 rows' bin-0 weight of class `j` is their total less
    /// what they put above bin 0.
    fn finish(mut self, spec: CalibSpec<'_>) -> Vec<f64> {
        let slots = spec.bins.slots();
        let ovr = 3 * slots;
        let parts = self.w0.iter().zip(&self.f0).zip(&self.above_w);
        for (j, ((&w, &f), &a)) in parts.enumerate() {
            self.d[ovr + j * slots] = w + (self.w32 - a);
            self.d[ovr + (spec.k + j) * slots] = f;
        }
        self.d
    }

    #[inline(always)]
    fn add(&mut self, at: Layout<'_>, j: usize, b: usize, w: f64, v: f64) {
        let (slots, ovr) = (at.bins.slots(), 3 * at.bins.slots());
        self.d[ovr + j * slots + b] += w;
        self.d[ovr + (at.k + j) * slots + b] += w * v;
    }

    #[inline(always)]
    fn add_label(&mut self, at: Layout<'_>, y: usize, w: f64, py: f64) {
        let slots = at.bins.slots();
        self.d[3 * slots + (2 * at.k + y) * slots + at.bins.index(py)] += w;
    }

    /// Adds the row of probabilities in `p` with label `y` and weight `w`; returns its
    /// Brier term.
    #[inline(always)]
    fn add_probabilities(&mut self, at: Layout<'_>, y: usize, w: f64) -> f64 {
        let lim0 = at.lim0;
        let mut above = false;
        for ((&pj, a), b) in self
            .p
            .iter()
            .zip(self.w0.iter_mut())
            .zip(self.f0.iter_mut())
        {
            let low = pj <= lim0;
            *a += if low { w } else { 0.0 };
            *b += if low { w * pj } else { 0.0 };
            above |= !low;
        }
        if above {
            for c in 0..self.p.len().div_ceil(8) {
                let ps = &self.p[8 * c..(8 * c + 8).min(at.k)];
                let mut mask = ps
                    .iter()
                    .enumerate()
                    .fold(0u32, |m, (i, &v)| m | (u32::from(v > lim0) << i));
                while mask != 0 {
                    let j = 8 * c + mask.trailing_zeros() as usize;
                    mask &= mask - 1;
                    let v = self.p[j];
                    self.add(at, j, at.bins.index(v), w, v);
                }
            }
        }
        let (p, py) = (&self.p, self.p[y]);
        let brier = sum_of_squares(&p[..y]) + sum_of_squares(&p[y + 1..]) + (py - 1.0).powi(2);
        self.add_label(at, y, w, py);
        brier
    }

    /// Adds a float32 row from its exponentials in `e` (`S = 1 + rest`, the row maximum's
    /// term exactly 1) with label `y` and weight `w`, the probabilities `e_j·(1/S)`, and
    /// returns its Brier term. The label's term of the sum of squares is `(1 − p_y)²`
    /// (`1 − p_y = rest/S` when `e_y = 1`). The Brier term does not depend on the bins.
    ///
    /// With `false`, a probability above the window below the first edge, or the
    /// maximum's `1/S = 1` for the rule that bins 1 apart, could be binned otherwise than
    /// from the float64 softmax (rare: within a few float32 ulps of an edge). The values
    /// below the window (certainly in bin 0), and those above it binned before, have then
    /// been added, and the caller bins the others (left in `bits`) and the label from the
    /// float64 softmax with [`Scratch::add_float64_rest`].
    #[inline(always)]
    fn add_float32(&mut self, at: Layout<'_>, rest: f64, y: usize, w: f64) -> (f64, bool) {
        const HALF_ULP_OF_ONE: f64 = 1.0 / (1u64 << 53) as f64;
        let g = at.guard;
        let total = 1.0 + rest;
        let inv = 1.0 / total;
        // The window around the first edge in terms of `e_j = p_j·S`, widened by 2^-20 to
        // cover the products' and the conversion's roundings.
        let lo = (g.lo * total * (1.0 - 1.0 / (1u64 << 20) as f64)) as f32;
        let hi = (g.hi * total * (1.0 + 1.0 / (1u64 << 20) as f64)) as f32;
        let ey = self.e[y];
        let scale = (w * inv) as f32;
        let split = onevsrest::add_low(
            &mut self.e,
            (lo, hi),
            scale,
            y,
            &mut self.f0,
            &mut self.bits,
        );
        self.w32 += w;
        let py = ey as f64 * inv;
        let miss = if ey == 1.0 { rest * inv } else { 1.0 - py };
        let brier = split.sq * (inv * inv) + miss * miss;
        let one = (rest - HALF_ULP_OF_ONE).abs() <= EdgeGuard::REL * HALF_ULP_OF_ONE;
        if !split.clear || (g.one_bin && one) {
            return (brier, false);
        }
        // Nothing lies in the window: the values above it are above bin 0. Those binned
        // here leave `bits` if another then turns out to need float64.
        for c in 0..self.bits.len() {
            let mut mask = self.bits[c];
            while mask != 0 {
                let j = 64 * c + mask.trailing_zeros() as usize;
                let v = self.e[j] as f64 * inv;
                let Some(b) = EdgeGuard::bin(at.bins, v) else {
                    self.bits[..c].fill(0);
                    self.bits[c] = mask;
                    return (brier, false);
                };
                mask &= mask - 1;
                self.add(at, j, b, w, v);
                self.above_w[j] += w;
            }
        }
        self.add_label(at, y, w, py);
        (brier, true)
    }

    /// Finishes a row [`Scratch::add_float32`] left: its float64 probabilities in `p`, the
    /// classes it did not add marked in `bits`.
    #[inline(always)]
    fn add_float64_rest(&mut self, at: Layout<'_>, y: usize, w: f64) {
        for c in 0..self.bits.len() {
            let mut mask = self.bits[c];
            while mask != 0 {
                let j = 64 * c + mask.trailing_zeros() as usize;
                mask &= mask - 1;
                let v = self.p[j];
                match at.bins.index(v) {
                    0 => self.f0[j] += w * v,
                    b => {
                        self.add(at, j, b, w, v);
                        self.above_w[j] += w;
                    }
                }
            }
        }
        self.add_label(at, y, w, self.p[y]);
    }
}

#[allow(clippy::too_many_arguments)]
fn rows<T: Real>(
    x: &[T],
    labels: &[i64],
    weight: Option<&[f64]>,
    spec: CalibSpec<'_>,
    what: Stats,
    r0: usize,
    s: &mut Scratch,
) -> Result<(), usize> {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::active() >= crate::simd::Isa::Avx2 {
        // SAFETY: `active()` is at least Avx2 only when the CPU reports avx2 and fma.
        return unsafe { rows_avx2(x, labels, weight, spec, what, r0, s) };
    }
    rows_impl(x, labels, weight, spec, what, r0, s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn rows_avx2<T: Real>(
    x: &[T],
    labels: &[i64],
    weight: Option<&[f64]>,
    spec: CalibSpec<'_>,
    what: Stats,
    r0: usize,
    s: &mut Scratch,
) -> Result<(), usize> {
    rows_impl(x, labels, weight, spec, what, r0, s)
}

/// `Σ v_j²` with four running sums (no single dependency chain).
#[inline(always)]
pub fn sum_of_squares(v: &[f64]) -> f64 {
    let mut acc = [0.0f64; 4];
    let mut chunks = v.chunks_exact(4);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += x * x;
        }
    }
    let tail: f64 = chunks.remainder().iter().map(|x| x * x).sum();
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// `(1 + rest, rest)` of stored exponentials whose maximum is exactly 1: `rest` sums every
/// entry but one 1 (the others that equal 1 count as 1), in four running sums; NaN when no
/// entry is 1 or one is NaN.
#[inline(always)]
fn stored_exp_sum(e: &[f64]) -> (f64, f64) {
    let mut acc = [0.0f64; 4];
    let mut ones = [0.0f64; 4];
    let mut chunks = e.chunks_exact(4);
    for c in &mut chunks {
        for ((a, o), &v) in acc.iter_mut().zip(ones.iter_mut()).zip(c) {
            let one = v == 1.0;
            *a += if one { 0.0 } else { v };
            *o += if one { 1.0 } else { 0.0 };
        }
    }
    let (mut tail, mut tail_ones) = (0.0f64, 0.0f64);
    for &v in chunks.remainder() {
        if v == 1.0 {
            tail_ones += 1.0;
        } else {
            tail += v;
        }
    }
    let ties = (ones[0] + ones[1]) + (ones[2] + ones[3]) + tail_ones;
    let rest = if ties == 0.0 {
        f64::NAN
    } else {
        ((acc[0] + acc[1]) + (acc[2] + acc[3]) + tail) + (ties - 1.0)
    };
    (1.0 + rest, rest)
}

/// The first index of `v` equal to `target` (`v` holds it).
#[inline(always)]
fn first_equal(v: &[f64], target: f64) -> usize {
    let mut chunks = v.chunks_exact(8);
    let mut base = 0;
    for c in &mut chunks {
        if c.iter().fold(false, |a, &x| a | (x == target)) {
            return base + c.iter().position(|&x| x == target).unwrap_or(0);
        }
        base += 8;
    }
    base + chunks
        .remainder()
        .iter()
        .position(|&x| x == target)
        .unwrap_or(0)
}

/// The first index of `x` equal to `target` (`x` holds it), sixteen at a time.
#[inline(always)]
fn first_equal_row<T: Real>(x: &[T], target: f64) -> usize {
    let mut chunks = x.chunks_exact(16);
    let mut base = 0;
    for c in &mut chunks {
        if c.iter().fold(false, |a, v| a | (v.to_f64() == target)) {
            break;
        }
        base += 16;
    }
    base + x[base..]
        .iter()
        .position(|v| v.to_f64() == target)
        .unwrap_or(0)
}

/// The float64 softmax of a row of logits with maximum `m` (finite, the row checked) into
/// `p`; returns `S − 1`.
#[inline(always)]
fn exact_probabilities<T: Real>(row: &[T], m: f64, p: &mut [f64]) -> f64 {
    for (pj, &v) in p.iter_mut().zip(row) {
        *pj = v.to_f64() - m;
    }
    crate::simd::exp_f64_in_place(p);
    let (total, rest) = stored_exp_sum(p);
    let inv = 1.0 / total;
    p.iter_mut().for_each(|pj| *pj *= inv);
    rest
}

/// Where a probability from float32 exponentials could be binned otherwise than its float64
/// value: each such probability `e_j·(1/S)` is within `3·2^-23` relative of the exact one
/// (`e_j` within 1 ulp, `S` summed from them in f64, the product rounded), so one farther
/// than [`EdgeGuard::REL`] relative from every interior edge is binned as the exact value
/// is.
#[derive(Clone, Copy)]
struct EdgeGuard {
    /// The window `(lo, hi]` around the first edge (none for the right rule's single bin).
    lo: f64,
    hi: f64,
    /// Bins of the rule with an extra bin for `v = 1`: the row maximum's probability `1/S`
    /// is exactly 1 when `S − 1 ≤ 2^-53`, so `S − 1` near `2^-53` is decided in float64.
    one_bin: bool,
}

impl EdgeGuard {
    const REL: f64 = 1.0 / (1u64 << 18) as f64;

    fn new(bins: Bins<'_>) -> EdgeGuard {
        // (A single bin of the right rule holds everything; torchmetrics' extra bin for 1
        // is then behind the first edge, 1 itself.)
        let (lo, hi) = if bins.edges.len() > 2 || !bins.right {
            let e1 = bins.edges[1];
            (e1 * (1.0 - Self::REL), e1 * (1.0 + Self::REL))
        } else {
            (f64::INFINITY, f64::INFINITY)
        };
        EdgeGuard {
            lo,
            hi,
            one_bin: !bins.right,
        }
    }

    /// The bin of `v` in `(0, 1]` (as [`Bins::index`] gives it), or `None` when `v` lies
    /// within the window of an interior edge. The edges are `b/n` to a few ulps, far
    /// inside the window, so away from them `⌊v·n⌋` is the bin itself.
    #[inline(always)]
    fn bin(bins: Bins<'_>, v: f64) -> Option<usize> {
        let n = bins.edges.len() - 1;
        let t = v * n as f64;
        let (f, tol) = (t.floor(), Self::REL * t);
        let b = f as usize;
        let near = ((t - f <= tol) & (b >= 1) & (b < n)) | ((f + 1.0 - t <= tol) & (b + 1 < n));
        let top = if bins.right { n - 1 } else { n };
        (!near).then_some(b.min(top))
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn rows_impl<T: Real>(
    x: &[T],
    labels: &[i64],
    weight: Option<&[f64]>,
    spec: CalibSpec<'_>,
    what: Stats,
    r0: usize,
    s: &mut Scratch,
) -> Result<(), usize> {
    let CalibSpec {
        k,
        from_logits,
        bins,
    } = spec;
    let slots = bins.slots();
    let ovr = 3 * slots;
    let sums = ovr + 3 * k * slots;
    // Bin 0 holds `p ≤ e_1` (right rule) or `p < e_1`, i.e. `p ≤` the float below `e_1`.
    let e1 = bins.edges[1];
    let lim0 = if bins.right || e1 <= 0.0 {
        e1
    } else {
        f64::from_bits(e1.to_bits() - 1)
    };
    let guard = EdgeGuard::new(bins);
    let at = Layout {
        bins,
        k,
        lim0,
        guard,
    };
    for (r, (row, &y)) in x.chunks(k).zip(labels).enumerate() {
        let w = weight.map_or(1.0, |w| w[r]);
        let y = y as usize;
        if what == Stats::TopLabel {
            let (conf, arg) = if from_logits {
                let m = row_max(row);
                // A NaN logit makes the sum NaN (the maximum may skip it).
                let total = exp_sum(row, m, None).total;
                if !m.is_finite() || total.is_nan() {
                    return Err(r0 + r);
                }
                (1.0 / total, first_equal_row(row, m))
            } else {
                let bad = row
                    .iter()
                    .fold(false, |a, v| a | !(v.to_f64() >= 0.0 && v.to_f64() <= 1.0));
                if bad {
                    return Err(r0 + r);
                }
                let m = row_max(row);
                (m, first_equal_row(row, m))
            };
            if w != 0.0 {
                add_top(&mut s.d, bins, conf, arg == y, w);
            }
            continue;
        }
        let (conf, arg, nll, brier) = if from_logits {
            let m = row_max(row);
            let x32 = T::as_f32(row);
            // The element type's own sum gives the confidence (what `top_label` computes);
            // a float32 row's exponentials are kept for its probabilities.
            let es = match x32 {
                Some(x) => crate::simd::exp_sum_f32(x, m as f32, Some(&mut s.e[..])),
                None => exp_sum(row, m, None),
            };
            // A NaN logit makes the sum NaN (the maximum may skip it).
            if !m.is_finite() || es.total.is_nan() {
                return Err(r0 + r);
            }
            if w == 0.0 {
                continue;
            }
            let conf = 1.0 / es.total;
            // `x_j = m` first where the row's first maximum is.
            let arg = first_equal_row(row, m);
            // (Matches, not `Option::map`: a closure would not inherit the target features.)
            let (rest, brier) = match x32 {
                Some(_) => {
                    let (brier, done) = s.add_float32(at, es.rest, y, w);
                    if !done {
                        exact_probabilities(row, m, &mut s.p);
                        s.add_float64_rest(at, y, w);
                    }
                    (es.rest, brier)
                }
                None => {
                    let rest = exact_probabilities(row, m, &mut s.p);
                    (rest, s.add_probabilities(at, y, w))
                }
            };
            (conf, arg, (m - row[y].to_f64()) + rest.ln_1p(), brier)
        } else {
            for (pj, &v) in s.p.iter_mut().zip(row) {
                *pj = v.to_f64();
            }
            if s.p
                .iter()
                .fold(false, |a, &v| a | !(0.0..=1.0).contains(&v))
            {
                return Err(r0 + r);
            }
            if w == 0.0 {
                continue;
            }
            let top = s.p.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let (arg, nll) = (first_equal(&s.p, top), -s.p[y].ln());
            (top, arg, nll, s.add_probabilities(at, y, w))
        };
        add_top(&mut s.d, bins, conf, arg == y, w);
        let hit = if arg == y { 1.0 } else { 0.0 };
        for (o, v) in s.d[sums..]
            .iter_mut()
            .zip([w, w * brier, w * nll, w * hit, w * conf])
        {
            *o += v;
        }
    }
    Ok(())
}

/// The top-label bins of float32 or 16-bit logits with `2 ≤ k ≤ 32`, one row per lane:
/// the statistics of [`crate::simd::hard_block`] (the row maximum, `S − 1` and the
/// labelled logit; its exponentials are the one-row kernels'), the confidence `1/S`, and
/// the label is the top class when its logit is the maximum and no earlier one is. The last
/// rows are padded to a block with copies of the first of them (left out of the sums), so a
/// row's confidence does not depend on where a block starts.
fn top_rows<T: Real>(
    x: &[T],
    labels: &[i64],
    weight: Option<&[f64]>,
    spec: CalibSpec<'_>,
    d: &mut [f64],
) -> Result<(), usize> {
    let (k, bins) = (spec.k, spec.bins);
    let lanes = hard_block_lanes::<T>(k);
    let mut tg = HardTargets {
        t: [0.0; HARD_BLOCK_ROWS],
        b: [0.0; HARD_BLOCK_ROWS],
    };
    let mut st = HardBlockStats::default();
    let mut pad: Vec<T> = Vec::new();
    for (b, (xs, ys)) in x
        .chunks(HARD_BLOCK_ROWS * k)
        .zip(labels.chunks(HARD_BLOCK_ROWS))
        .enumerate()
    {
        let nr = ys.len();
        let rr = nr.div_ceil(lanes) * lanes;
        let xb = if rr == nr {
            xs
        } else {
            pad.clear();
            pad.extend_from_slice(xs);
            for _ in nr..rr {
                pad.extend_from_slice(&xs[..k]);
            }
            &pad[..]
        };
        for (t, &y) in
            tg.t.iter_mut()
                .zip(ys.iter().chain(std::iter::repeat(&0)))
                .take(rr)
        {
            *t = y as f32;
        }
        let rows = HardRows {
            x: xb,
            grad: None,
            hess: None,
        };
        hard_block(rows, k, &tg, 0.0, &mut st);
        for (i, &y) in ys.iter().enumerate() {
            let r = b * HARD_BLOCK_ROWS + i;
            let rest = st.rest[i];
            if rest.is_nan() {
                return Err(r); // NaN, +inf, or nothing but -inf
            }
            let w = weight.map_or(1.0, |w| w[r]);
            if w == 0.0 {
                continue;
            }
            let (m, y) = (st.m[i] as f64, y as usize);
            let row = &xs[i * k..(i + 1) * k];
            let hit = st.xt[i] == st.m[i] && !row[..y].iter().any(|v| v.to_f64() == m);
            add_top(d, bins, 1.0 / (1.0 + rest), hit, w);
        }
    }
    Ok(())
}

/// Adds a row to the top-label bins `(3, slots)` at the start of `d`.
#[inline(always)]
fn add_top(d: &mut [f64], bins: Bins<'_>, conf: f64, hit: bool, w: f64) {
    let slots = bins.slots();
    let b = bins.index(conf);
    d[b] += w;
    d[slots + b] += w * conf;
    d[2 * slots + b] += if hit { w } else { 0.0 };
}
