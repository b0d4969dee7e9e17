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

use crate::error::{check_len, Error};
use crate::parallel::{map_jobs, ordered_sum, split_opt, CHUNK_ELEMS};
use crate::real::Real;
use crate::simd::{dispatch, exp_nonpositive, log1p_nonnegative, F32Vec, SimdOp, FLUSH};

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

/// Every target in `[0, 1]` (NaN is not).
pub fn check_targets<T: Real>(y: &[T]) -> Result<(), Error> {
    match y.iter().position(|&v| !(0.0..=1.0).contains(&v.to_f64())) {
        Some(position) => Err(Error::Target {
            position,
            value: y[position].to_f64(),
        }),
        None => Ok(()),
    }
}

impl Bcast<'_> {
    /// Checks that the factor broadcasts over `n` elements whose last axis has `last`.
    fn check(&self, n: usize, last: usize, arg: &'static str) -> Result<(), Error> {
        match *self {
            Bcast::One | Bcast::Const(_) => Ok(()),
            Bcast::Last(v) if last == 0 => check_len(Some(v), 1, arg),
            Bcast::Last(v) => check_len(Some(v), last, arg),
            Bcast::Full(v) => check_len(Some(v), n, arg),
        }
    }
}

/// Loss, gradient and Hessian of one element.
#[inline]
pub fn bce_elem(z: f64, y: f64, w: f64, pw: f64, eps: f64) -> (f64, f64, f64) {
    if w == 0.0 {
        return (0.0, 0.0, 0.0);
    }
    // The smoothed target and its complement, each without a subtraction of nearly equal
    // numbers: 1 − (y(1−ε) + ε/2) = (1 − y)(1−ε) + ε/2.
    let a = pw * (y * (1.0 - eps) + 0.5 * eps);
    let b = (1.0 - y) * (1.0 - eps) + 0.5 * eps;
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

/// Constant factors of a BCE chunk (no per-element weights), as given (f64) and as the
/// float32 vector kernel uses them (each product formed in f64, rounded once).
#[derive(Clone, Copy)]
struct BceConsts {
    weight: f64,
    pos_weight: f64,
    label_smoothing: f64,
    /// Multiplies gradient and Hessian.
    scale: f64,
    w32: f32,
    ws32: f32,
    pw32: f32,
    one_minus_eps32: f32,
    half_eps32: f32,
    /// Beyond `|z| > -FLUSH` the float32 exponential is flushed; up to this `|z|` the
    /// weighted result may still be representable, so such vectors are computed in f64.
    fixup_limit32: f32,
}

impl BceConsts {
    fn new(weight: f64, pos_weight: f64, label_smoothing: f64, scale: f64) -> Self {
        let eps = label_smoothing;
        // The largest factor a flushed exponential can be multiplied by (a + b ≤ pw + 1).
        let coef = (pos_weight.max(0.0) + 1.0) * weight * scale.max(1.0);
        BceConsts {
            weight,
            pos_weight,
            label_smoothing,
            scale,
            w32: weight as f32,
            ws32: (weight * scale) as f32,
            pw32: pos_weight as f32,
            one_minus_eps32: (1.0 - eps) as f32,
            half_eps32: (0.5 * eps) as f32,
            // exp(−|z|)·coef stays above the smallest float32 subnormal (2^-149 ≈ e^-103.3).
            fixup_limit32: (104.0 + coef.max(1.0).ln()) as f32,
        }
    }
}

static ONES: [f32; 16] = [1.0; 16];

/// One vector of BCE: (loss, grad, hess), the formulas of [`crate::bce`] with one `exp`
/// and one `log1p` per element.
#[inline(always)]
unsafe fn bce_vec<V: F32Vec>(z: V, y: V, c: &BceConsts) -> (V, V, V) {
    let zero = V::splat(0.0);
    let one = V::splat(1.0);
    let (ome, he) = (V::splat(c.one_minus_eps32), V::splat(c.half_eps32));
    let a = V::splat(c.pw32).mul(y.fma(ome, he));
    // 1 − y is exact for y in [1/2, 1]; the smoothing is added after it, not before.
    let b = one.sub(y).fma(ome, he);
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
    let ws = V::splat(c.ws32);
    // b·σ − a·(1 − σ): no cancellation when either coefficient is zero (hard targets).
    let grad = ws.mul(b.mul(sig).sub(a.mul(one_minus_sig)));
    let hess = ws.mul(ab.mul(sig).mul(one_minus_sig));
    (V::splat(c.w32).mul(loss), grad, hess)
}

/// Elements `at..at + z.len()` of a chunk in f64 (see [`needs_f64`]), written to the outputs;
/// returns their loss sum. Out of line: it must not crowd the vector loop's registers.
#[cold]
#[inline(never)]
fn bce_f64_span(
    z: &[f32],
    y: &[f32],
    c: &BceConsts,
    at: usize,
    outs: [&mut Option<&mut [f32]>; 3],
) -> f64 {
    let [losses, grad, hess] = outs;
    let mut sum = 0.0;
    for (j, (&zj, &yj)) in z.iter().zip(y).enumerate() {
        let (l, g, h) = bce_elem(
            zj as f64,
            yj as f64,
            c.weight,
            c.pos_weight,
            c.label_smoothing,
        );
        sum += l;
        for (o, v) in [
            (&mut *losses, l),
            (&mut *grad, g * c.scale),
            (&mut *hess, h * c.scale),
        ] {
            if let Some(o) = o.as_deref_mut() {
                o[at + j] = v as f32;
            }
        }
    }
    sum
}

/// Whether a vector has a lane whose exponential the float32 kernel flushes although the
/// weighted result is representable (`-FLUSH < |z| < fixup_limit`).
#[inline(always)]
unsafe fn needs_f64<V: F32Vec>(z: V, c: &BceConsts) -> bool {
    let az = z.abs();
    let flushed = az.gt(V::splat(-FLUSH));
    V::any(V::select(flushed, az, V::splat(f32::INFINITY)).lt(V::splat(c.fixup_limit32)))
}

/// BCE over a float32 chunk with constant weights. `z == None`: the logits are in `grad`
/// (in place). Evaluates to the sum of the element losses (f64).
struct BceChunk<'a> {
    z: Option<&'a [f32]>,
    y: &'a [f32],
    c: &'a BceConsts,
    losses: Option<&'a mut [f32]>,
    grad: Option<&'a mut [f32]>,
    hess: Option<&'a mut [f32]>,
}

impl SimdOp for BceChunk<'_> {
    type Output = f64;
    #[inline(always)]
    unsafe fn eval<V: F32Vec>(self) -> f64 {
        bce_chunk::<V>(self)
    }
}

#[inline(always)]
fn bce_chunk<V: F32Vec>(op: BceChunk<'_>) -> f64 {
    let BceChunk {
        z,
        y,
        c,
        mut losses,
        mut grad,
        mut hess,
    } = op;
    let n = y.len();
    if c.weight == 0.0 {
        // A zero weight contributes exactly zero, whatever the logit (even ±inf or NaN).
        for o in [&mut losses, &mut grad, &mut hess].into_iter().flatten() {
            o.fill(0.0);
        }
        return 0.0;
    }
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
        let mut extra = 0.0f64;
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
            // Cheap test first (one compare): is any |z| past float32's exponent range?
            if V::any(zv.abs().gt(V::splat(-FLUSH))) && needs_f64(zv, c) {
                // Rare (|z| just past float32's exponent range): this vector in f64.
                // Copied out first: in place, `zp` is the gradient buffer written below.
                let mut zs = [0.0f32; 16];
                std::ptr::copy_nonoverlapping(zp.add(i), zs.as_mut_ptr(), len);
                let outs = [&mut losses, &mut grad, &mut hess];
                extra += bce_f64_span(&zs[..len], &y[i..i + len], c, i, outs);
                i += len;
                continue;
            }
            let (l, g, h) = bce_vec(zv, yv, c);
            acc = V::acc_add(acc, l.mul(valid));
            put(l, &mut losses, i, len);
            put(g, &mut grad, i, len);
            put(h, &mut hess, i, len);
            i += len;
        }
        V::acc_sum(acc) + extra
    }
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
/// `last` is the length of the last axis (for [`Bcast::Last`]). Returns the loss sum, or an
/// [`Error`] (before anything is written) when the pieces do not fit together.
pub fn bce_batch<T: Real, Y: Real>(
    z: Option<&[T]>,
    y: &[Y],
    spec: &BceSpec<'_>,
    last: usize,
    out: BceOutputs<'_, T>,
) -> Result<f64, Error> {
    let n = y.len();
    check_len(z, n, "logits")?;
    check_len(out.losses.as_deref(), n, "losses")?;
    check_len(out.grad.as_deref(), n, "out")?;
    check_len(out.hess.as_deref(), n, "hess")?;
    if z.is_none() && out.grad.is_none() {
        return Err(Error::InPlace { arg: "out" });
    }
    spec.weight.check(n, last, "weight")?;
    spec.pos_weight.check(n, last, "pos_weight")?;
    check_targets(y)?;
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
        (Some(w), Some(pw)) => Some(BceConsts::new(w, pw, spec.label_smoothing, spec.scale)),
        _ => None,
    };
    let partials = map_jobs(jobs, n, |(c, z, y, mut l, mut g, mut h)| {
        // The vector kernel: float32 logits and targets with constant factors.
        let f32_logits = T::as_f32(&[]).is_some();
        if let (Some(c), Some(y), true) = (&consts, Y::as_f32(y), f32_logits) {
            return dispatch(BceChunk {
                z: z.map(|z| T::as_f32(z).expect("float32 logits")),
                y,
                c,
                losses: l.as_deref_mut().and_then(T::as_f32_mut),
                grad: g.as_deref_mut().and_then(T::as_f32_mut),
                hess: h.as_deref_mut().and_then(T::as_f32_mut),
            });
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
    Ok(ordered_sum(&partials?))
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
    fn simd_chunk_matches_the_f64_kernel_on_every_path() {
        let z: Vec<f32> = (0..83)
            .map(|i| ((i * 37 % 83) as f32 - 41.0) * 0.9)
            .chain([
                0.0,
                1e4,
                -1e4,
                f32::INFINITY,
                f32::NEG_INFINITY,
                88.0,
                -88.0,
                30.0,
            ])
            .collect();
        let y: Vec<f32> = (0..z.len()).map(|i| [0.0, 1.0, 0.25][i % 3]).collect();
        for isa in crate::simd::supported() {
            for &(pw, eps, w) in &[(1.0f32, 0.0f32, 1.0f32), (3.0, 0.1, 0.5), (0.0, 0.0, 2.0)] {
                let c = BceConsts::new(w as f64, pw as f64, eps as f64, 0.25);
                let n = z.len();
                let (mut l, mut g, mut h) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
                let op = BceChunk {
                    z: Some(&z),
                    y: &y,
                    c: &c,
                    losses: Some(&mut l),
                    grad: Some(&mut g),
                    hess: Some(&mut h),
                };
                let total = crate::simd::dispatch_on(isa, op).unwrap();
                let mut want_total = 0.0;
                for i in 0..n {
                    let (wl, wg, wh) =
                        bce_elem(z[i] as f64, y[i] as f64, w as f64, pw as f64, eps as f64);
                    want_total += wl;
                    // The gradient b·σ − a·(1 − σ) of a soft target is a difference: its
                    // natural size is that of the terms, about 4·hess.
                    let natural = (wg.abs() + 4.0 * wh.abs()) * 0.25;
                    let close = |a: f32, b: f64, what: &str| {
                        let size = if what == "grad" { natural } else { b.abs() };
                        let tol = 4e-7 * size + 1e-37;
                        assert!(
                            (a as f64 - b).abs() <= tol || (a as f64 == b),
                            "{isa:?} {what} z={} y={}: {a} vs {b}",
                            z[i],
                            y[i]
                        );
                    };
                    close(l[i], wl, "loss");
                    close(g[i], wg * 0.25, "grad");
                    close(h[i], wh * 0.25, "hess");
                }
                assert!(
                    total == want_total || (total - want_total).abs() <= 4e-7 * want_total.abs(),
                    "{isa:?}: {total} vs {want_total}"
                );
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
