//! Rows of the temperature objective (see the parent module), compiled for the portable
//! baseline and inside an AVX2+FMA `#[target_feature]` trampoline, chosen at run time: the
//! scaling of a row and its moments are loops that vectorise there (the exponentials are
//! the float32 row kernel's). Every sum keeps its association, so both compilations give
//! the same bits.

use super::{PassSums, TemperatureSums};
use crate::real::{exp_sum, row_max, Real};

/// The weighted sums of the rows of `x` (`k` classes each, one label each) at `β`, with
/// `scratch` and `e` (`k` each) as work space.
pub fn rows<T: Real>(
    x: &[T],
    labels: &[i64],
    k: usize,
    beta: f64,
    weight: Option<&[f64]>,
    scratch: &mut [T],
    e: &mut [T],
) -> TemperatureSums {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::active() >= crate::simd::Isa::Avx2 {
        // SAFETY: `active()` is at least Avx2 only when the CPU reports avx2 and fma.
        return unsafe { rows_avx2(x, labels, k, beta, weight, scratch, e) };
    }
    rows_impl(x, labels, k, beta, weight, scratch, e)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_avx2<T: Real>(
    x: &[T],
    labels: &[i64],
    k: usize,
    beta: f64,
    weight: Option<&[f64]>,
    scratch: &mut [T],
    e: &mut [T],
) -> TemperatureSums {
    rows_impl(x, labels, k, beta, weight, scratch, e)
}

#[inline(always)]
fn rows_impl<T: Real>(
    x: &[T],
    labels: &[i64],
    k: usize,
    beta: f64,
    weight: Option<&[f64]>,
    scratch: &mut [T],
    e: &mut [T],
) -> TemperatureSums {
    let mut sums = TemperatureSums::default();
    for (row, &y) in x.chunks(k).zip(labels) {
        let w = weight.map_or(1.0, |w| w[y as usize]);
        if w == 0.0 {
            continue;
        }
        let (l, d, d2) = row_terms(row, y as usize, beta, scratch, e);
        sums.loss += w * l;
        sums.dloss_dbeta += w * d;
        sums.d2loss_dbeta2 += w * d2;
        sums.weight += w;
    }
    sums
}

/// The objective of one row and its first two derivatives in `β`.
#[inline(always)]
fn row_terms<T: Real>(
    x: &[T],
    y: usize,
    beta: f64,
    scratch: &mut [T],
    e: &mut [T],
) -> (f64, f64, f64) {
    let m = row_max(x);
    for (s, &v) in scratch.iter_mut().zip(x) {
        let v = v.to_f64();
        // A masked class stays masked at every β (β = 0 included, where β·(−inf) is NaN).
        *s = T::from_f64(if v == f64::NEG_INFINITY { v } else { beta * v });
    }
    // β ≥ 0 and rounding is monotone, so the maximum of the rounded products is the
    // rounded product of the maximum.
    let mb = if m.is_finite() {
        T::from_f64(beta * m).to_f64()
    } else {
        row_max(scratch)
    };
    let es = exp_sum(scratch, mb, Some(e));
    let inv_s = 1.0 / es.total;
    // Σ e_j d_j and Σ e_j d_j², d_j = z_j − m ≤ 0 (masked classes, e_j = 0, left out), in
    // four running sums each. The variance E[d²] − E[d]² loses at most a factor K of the
    // float64 precision (the maximum's weight is at least 1/K); it only sizes Newton steps.
    let (mut s1, mut s2) = ([0.0f64; 4], [0.0f64; 4]);
    let (mut ec, mut xc) = (e.chunks_exact(4), x.chunks_exact(4));
    for (ce, cx) in (&mut ec).zip(&mut xc) {
        let (ce, cx): (&[T; 4], &[T; 4]) = (ce.try_into().unwrap(), cx.try_into().unwrap());
        let (ej, v) = (ce.map(|v| v.to_f64()), cx.map(|v| v.to_f64()));
        for i in 0..4 {
            let d = if ej[i] != 0.0 { v[i] - m } else { 0.0 };
            let ed = ej[i] * d;
            s1[i] += ed;
            s2[i] += ed * d;
        }
    }
    let (mut t1, mut t2) = (0.0f64, 0.0f64);
    for (&ej, &v) in ec.remainder().iter().zip(xc.remainder()) {
        let ej = ej.to_f64();
        if ej != 0.0 {
            let d = v.to_f64() - m;
            t1 += ej * d;
            t2 += ej * d * d;
        }
    }
    let mu = ((s1[0] + s1[1]) + (s1[2] + s1[3]) + t1) * inv_s;
    let second = ((s2[0] + s2[1]) + (s2[2] + s2[3]) + t2) * inv_s;
    let zy = x[y].to_f64();
    let loss = (mb - beta * zy) + es.log_sum();
    let dloss = mu + (m - zy);
    (loss, dloss, (second - mu * mu).max(0.0))
}

/// What the temperature fit needs to know of its rows before it starts (see
/// [`super::temperature_scan`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scan {
    /// Every live row's unmasked logits are equal.
    pub constant: bool,
    /// The largest finite `|z|` of every row.
    pub scale: f64,
    /// Every live row's labelled class has the largest logit.
    pub all_top: bool,
}

impl Scan {
    pub const EMPTY: Scan = Scan {
        constant: true,
        scale: 0.0,
        all_top: true,
    };

    pub fn join(self, o: Scan) -> Scan {
        Scan {
            constant: self.constant && o.constant,
            scale: self.scale.max(o.scale),
            all_top: self.all_top && o.all_top,
        }
    }
}

/// [`Scan`] of rows of `k` logits; a negative label marks a row that is not live.
pub fn scan_rows<T: Real>(x: &[T], labels: &[i64], k: usize) -> Scan {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::active() >= crate::simd::Isa::Avx2 {
        // SAFETY: `active()` is at least Avx2 only when the CPU reports avx2 and fma.
        return unsafe { scan_avx2(x, labels, k) };
    }
    scan_impl(x, labels, k)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn scan_avx2<T: Real>(x: &[T], labels: &[i64], k: usize) -> Scan {
    scan_impl(x, labels, k)
}

#[inline(always)]
fn scan_impl<T: Real>(x: &[T], labels: &[i64], k: usize) -> Scan {
    let mut s = Scan::EMPTY;
    for (row, &y) in x.chunks(k).zip(labels) {
        // Eight lanes each (max and min are exact in any order).
        let mut big = [0.0f64; 8];
        let mut top = [f64::NEG_INFINITY; 8];
        let mut bottom = [f64::INFINITY; 8];
        let mut chunks = row.chunks_exact(8);
        let mut lane = |i: usize, v: f64| {
            let a = v.abs();
            big[i] = big[i].max(if a < f64::INFINITY { a } else { 0.0 });
            top[i] = top[i].max(v);
            bottom[i] = bottom[i].min(if v > f64::NEG_INFINITY {
                v
            } else {
                f64::INFINITY
            });
        };
        for c in &mut chunks {
            let c: &[T; 8] = c.try_into().unwrap();
            for (i, v) in c.map(|v| v.to_f64()).into_iter().enumerate() {
                lane(i, v);
            }
        }
        for &v in chunks.remainder() {
            lane(0, v.to_f64());
        }
        let big = big.iter().fold(0.0f64, |a, &b| a.max(b));
        let top = top.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
        let bottom = bottom.iter().fold(f64::INFINITY, |a, &b| a.min(b));
        s.scale = s.scale.max(big);
        if y >= 0 {
            s.constant &= top == bottom;
            s.all_top &= row[y as usize].to_f64() >= top;
        }
    }
    s
}

/// The scan part of [`PassSums`] for rows of `k` logits of any type, in f64 (labels in
/// `[0, k)`; a row whose class has weight 0 counts for the scale and the value checks only).
pub fn scan_pass<T: Real>(x: &[T], labels: &[i64], k: usize, weight: Option<&[f64]>) -> PassSums {
    let mut out = PassSums::default();
    for (row, &y) in x.chunks(k).zip(labels) {
        let (mut top, mut low, mut nan) = (f64::NEG_INFINITY, f64::INFINITY, false);
        for v in row.iter().map(|v| v.to_f64()) {
            nan |= v.is_nan();
            top = top.max(v);
            if v > f64::NEG_INFINITY {
                low = low.min(v);
            }
        }
        if nan || top == f64::INFINITY || top == f64::NEG_INFINITY {
            out.bad = true;
            continue;
        }
        out.scale = out.scale.max(top.abs()).max(low.abs());
        if weight.map_or(1.0, |w| w[y as usize]) != 0.0 {
            let xy = row[y as usize].to_f64();
            out.varying |= low != top;
            out.missed |= xy != top;
            out.masked_label |= xy == f64::NEG_INFINITY;
        }
    }
    out
}
