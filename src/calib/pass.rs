//! The per-row work of the fused calibration pass, over one block of rows: written once,
//! compiled for the portable baseline and inside an AVX2+FMA `#[target_feature]` trampoline
//! (its loops vectorise there), chosen at run time. Every loop keeps the association of
//! its sums, so both compilations give the same bits.
//!
//! The one-vs-rest binning is split by the first edge `e_1`: most probabilities of a row of
//! many classes lie in bin 0, so they are added to dense per-class sums by a branch-free
//! masked loop, and only the few above it are binned one by one.

use super::{Bins, CalibSpec};
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

/// Work space of a block: the statistics, one row's probabilities, and the dense bin-0
/// one-vs-rest sums per class.
struct Scratch {
    d: Vec<f64>,
    p: Vec<f64>,
    w0: Vec<f64>,
    f0: Vec<f64>,
}

impl Scratch {
    fn new(k: usize, len: usize, what: Stats) -> Result<Scratch, Error> {
        let kk = if what == Stats::All { k } else { 0 };
        Ok(Scratch {
            d: try_vec(len, 0.0)?,
            p: try_vec(kk, 0.0)?,
            w0: try_vec(kk, 0.0)?,
            f0: try_vec(kk, 0.0)?,
        })
    }

    /// The statistics with the dense bin-0 sums in their places (those slots were never
    /// touched otherwise, so this is the sum the rows gave, in their order).
    fn finish(mut self, spec: CalibSpec<'_>) -> Vec<f64> {
        let slots = spec.bins.slots();
        let ovr = 3 * slots;
        for (j, (&w, &f)) in self.w0.iter().zip(&self.f0).enumerate() {
            self.d[ovr + j * slots] = w;
            self.d[ovr + (spec.k + j) * slots] = f;
        }
        self.d
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
    let Scratch { d, p, w0, f0 } = s;
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
                add_top(d, bins, conf, arg == y, w);
            }
            continue;
        }
        let (conf, arg, nll) = if from_logits {
            let m = row_max(row);
            for (pj, &v) in p.iter_mut().zip(row) {
                *pj = v.to_f64() - m;
            }
            // `x_j − m = 0` exactly where `x_j = m` (the first maximum).
            let arg = first_equal(p, 0.0);
            crate::simd::exp_f64_in_place(p);
            let (total, rest) = stored_exp_sum(p);
            if !m.is_finite() || total.is_nan() {
                return Err(r0 + r);
            }
            if w == 0.0 {
                continue;
            }
            // The element type's own sum for the confidence (what `top_label` gives); the
            // float64 softmax for the probabilities (what `softmax` of float64 logits gives).
            let conf = 1.0 / exp_sum(row, m, None).total;
            let inv = 1.0 / total;
            p.iter_mut().for_each(|pj| *pj *= inv);
            (conf, arg, (m - row[y].to_f64()) + rest.ln_1p())
        } else {
            for (pj, &v) in p.iter_mut().zip(row) {
                *pj = v.to_f64();
            }
            if p.iter().fold(false, |a, &v| a | !(0.0..=1.0).contains(&v)) {
                return Err(r0 + r);
            }
            if w == 0.0 {
                continue;
            }
            let top = p.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            (top, first_equal(p, top), -p[y].ln())
        };
        let hit = arg == y;
        add_top(d, bins, conf, hit, w);
        let mut above = false;
        for ((&pj, a), b) in p.iter().zip(w0.iter_mut()).zip(f0.iter_mut()) {
            let low = pj <= lim0;
            *a += if low { w } else { 0.0 };
            *b += if low { w * pj } else { 0.0 };
            above |= !low;
        }
        if above {
            for (c, ps) in p.chunks(8).enumerate() {
                let mut mask = ps
                    .iter()
                    .enumerate()
                    .fold(0u32, |m, (i, &v)| m | (u32::from(v > lim0) << i));
                while mask != 0 {
                    let j = 8 * c + mask.trailing_zeros() as usize;
                    mask &= mask - 1;
                    let b = bins.index(p[j]);
                    d[ovr + j * slots + b] += w;
                    d[ovr + (k + j) * slots + b] += w * p[j];
                }
            }
        }
        d[ovr + (2 * k + y) * slots + bins.index(p[y])] += w;
        let brier = sum_of_squares(&p[..y]) + sum_of_squares(&p[y + 1..]) + (p[y] - 1.0).powi(2);
        let hit = if hit { 1.0 } else { 0.0 };
        for (o, v) in d[sums..]
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
