//! Sigmoid binary cross-entropy from logits, elementwise, with PyTorch's
//! `binary_cross_entropy_with_logits` semantics:
//!
//! `loss = w · [a · softplus(−z) + b · softplus(z)]`, `a = pw · y`, `b = 1 − y`
//! `grad = w · [b σ(z) − a (1 − σ(z))]`, `hess = w · (a + b) σ(z) (1 − σ(z))`
//!
//! where `y` is the (label-smoothed) target, `w` the weight and `pw` the positive-class weight.
//! One exponential and one `log1p` per element: `softplus(±z) = max(±z, 0) + log1p(e^{−|z|})`.
//! Both loss terms are non-negative (no cancellation); a term whose coefficient is exactly zero
//! is skipped, so an infinite logit on the side the target agrees with costs exactly zero,
//! and a zero weight contributes exactly zero.

use crate::parallel::{map_jobs, ordered_sum, split_opt, CHUNK_ELEMS};
use crate::real::Real;
use crate::simd::BceConsts;

/// A factor broadcast over the flattened logits.
#[derive(Clone, Copy)]
pub enum Bcast<'a> {
    /// Absent: 1.
    One,
    /// The same value for every element.
    Const(f64),
    /// Repeats along the last axis: element `i` uses `v[i % v.len()]`.
    Last(&'a [f64]),
    /// One value per element.
    Full(&'a [f64]),
}

/// Parameters of a BCE batch.
#[derive(Clone, Copy)]
pub struct BceSpec<'a> {
    pub weight: Bcast<'a>,
    pub pos_weight: Bcast<'a>,
    pub label_smoothing: f64,
    /// Multiplies gradient and Hessian (`1 / numel` for `reduction="mean"`).
    pub scale: f64,
}

/// The first target that is not in `[0, 1]` (NaN included).
pub fn check_targets<T: Real>(y: &[T]) -> Option<usize> {
    y.iter().position(|&v| {
        let v = v.to_f64();
        !(0.0..=1.0).contains(&v)
    })
}

/// Loss, gradient and Hessian of one element.
#[inline]
pub fn bce_elem(z: f64, y: f64, w: f64, pw: f64, eps: f64) -> (f64, f64, f64) {
    if w == 0.0 {
        return (0.0, 0.0, 0.0);
    }
    let y = y * (1.0 - eps) + 0.5 * eps;
    let a = pw * y;
    let b = 1.0 - y;
    let e = (-z.abs()).exp();
    let l = e.ln_1p();
    let mut loss = 0.0;
    if a != 0.0 {
        loss += a * ((-z).max(0.0) + l);
    }
    if b != 0.0 {
        loss += b * (z.max(0.0) + l);
    }
    if z.is_nan() {
        loss = f64::NAN;
    }
    let inv = 1.0 / (1.0 + e);
    let (sig, one_minus_sig) = if z >= 0.0 {
        (inv, e * inv)
    } else {
        (e * inv, inv)
    };
    let sig = if z.is_nan() { f64::NAN } else { sig };
    // (a + b)σ − a written as bσ − a(1 − σ): exact for hard targets even where σ rounds to 1.
    let grad = b * sig - a * one_minus_sig;
    let hess = (a + b) * sig * one_minus_sig;
    (w * loss, w * grad, w * hess)
}

#[inline(always)]
fn at(b: Bcast<'_>, i: usize, col: usize) -> f64 {
    match b {
        Bcast::One => 1.0,
        Bcast::Const(c) => c,
        Bcast::Last(v) => v[col],
        Bcast::Full(v) => v[i],
    }
}

/// Output buffers, each as long as the logits.
pub struct BceOutputs<'a, T> {
    pub losses: Option<&'a mut [T]>,
    pub grad: Option<&'a mut [T]>,
    pub hess: Option<&'a mut [T]>,
}

/// Runs the flattened batch; `z == None` means in place (the logits are in `out.grad`).
/// `last` is the length of the last axis (for [`Bcast::Last`]). Returns the loss sum.
pub fn bce_batch<T: Real>(
    z: Option<&[T]>,
    y: &[T],
    spec: &BceSpec<'_>,
    last: usize,
    out: BceOutputs<'_, T>,
) -> f64 {
    let n = y.len();
    let chunk = CHUNK_ELEMS;
    let n_chunks = n.div_ceil(chunk);
    let zs: Vec<Option<&[T]>> = match z {
        Some(z) => z.chunks(chunk).map(Some).collect(),
        None => vec![None; n_chunks],
    };
    let jobs: Vec<_> = zs
        .into_iter()
        .zip(y.chunks(chunk))
        .zip(split_opt(out.losses, chunk, n_chunks))
        .zip(split_opt(out.grad, chunk, n_chunks))
        .zip(split_opt(out.hess, chunk, n_chunks))
        .enumerate()
        .map(|(c, ((((z, y), l), g), h))| (c, z, y, l, g, h))
        .collect();
    let last = last.max(1);
    let constant = |b: Bcast<'_>| match b {
        Bcast::One => Some(1.0),
        Bcast::Const(c) => Some(c),
        Bcast::Last(v) | Bcast::Full(v) if v.len() == 1 => Some(v[0]),
        _ => None,
    };
    let consts = match (constant(spec.weight), constant(spec.pos_weight)) {
        (Some(w), Some(pw)) => Some(BceConsts {
            weight: w as f32,
            pos_weight: pw as f32,
            label_smoothing: spec.label_smoothing as f32,
            scale: spec.scale as f32,
        }),
        _ => None,
    };
    let partials = map_jobs(jobs, n, |(c, z, y, mut l, mut g, mut h)| {
        if let Some(k) = &consts {
            let fast = T::bce_chunk_fast(
                z,
                y,
                k,
                l.as_deref_mut(),
                g.as_deref_mut(),
                h.as_deref_mut(),
            );
            if let Some(sum) = fast {
                return sum;
            }
        }
        let start = c * chunk;
        let mut col = start % last;
        let mut sum = 0.0;
        for (j, &yj) in y.iter().enumerate() {
            let i = start + j;
            let zj = match (z, g.as_deref()) {
                (Some(z), _) => z[j],
                (None, Some(g)) => g[j],
                (None, None) => unreachable!("in-place BCE needs the gradient buffer"),
            };
            let (lv, gv, hv) = bce_elem(
                zj.to_f64(),
                yj.to_f64(),
                at(spec.weight, i, col),
                at(spec.pos_weight, i, col),
                spec.label_smoothing,
            );
            sum += lv;
            if let Some(l) = l.as_deref_mut() {
                l[j] = T::from_f64(lv);
            }
            if let Some(g) = g.as_deref_mut() {
                g[j] = T::from_f64(gv * spec.scale);
            }
            if let Some(h) = h.as_deref_mut() {
                h[j] = T::from_f64(hv * spec.scale);
            }
            col += 1;
            if col == last {
                col = 0;
            }
        }
        sum
    });
    ordered_sum(&partials)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(z: f64, y: f64, pw: f64) -> f64 {
        let s = 1.0 / (1.0 + (-z).exp());
        -(pw * y * s.ln() + (1.0 - y) * (1.0 - s).ln())
    }

    #[test]
    fn matches_naive_in_the_safe_range() {
        for &z in &[-8.0, -1.5, 0.0, 0.3, 4.0, 9.0] {
            for &y in &[0.0, 0.25, 1.0] {
                for &pw in &[1.0, 3.0] {
                    let (l, g, h) = bce_elem(z, y, 1.0, pw, 0.0);
                    let want = naive(z, y, pw);
                    assert!((l - want).abs() < 1e-12 * want.max(1.0), "{z} {y} {pw}");
                    let s = 1.0 / (1.0 + (-z).exp());
                    assert!((g - ((pw * y + 1.0 - y) * s - pw * y)).abs() < 1e-14);
                    assert!((h - (pw * y + 1.0 - y) * s * (1.0 - s)).abs() < 1e-14);
                }
            }
        }
    }

    #[test]
    fn extreme_logits_are_exact() {
        let (l, g, _) = bce_elem(1e4, 1.0, 1.0, 1.0, 0.0);
        assert_eq!((l, g), (0.0, 0.0));
        let (l, _, _) = bce_elem(-1e4, 1.0, 1.0, 1.0, 0.0);
        assert_eq!(l, 1e4);
        let (l, _, _) = bce_elem(f64::INFINITY, 1.0, 1.0, 1.0, 0.0);
        assert_eq!(l, 0.0);
        let (l, _, _) = bce_elem(40.0, 1.0, 1.0, 1.0, 0.0);
        assert!((l - (-40.0f64).exp()).abs() < 1e-30);
        assert!(bce_elem(f64::NAN, 1.0, 1.0, 1.0, 0.0).0.is_nan());
    }
}
