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

use std::any::TypeId;

use crate::error::{check_len, Error};
use crate::parallel::{map_jobs, ordered_sum, split_opt, CHUNK_ELEMS};
use crate::real::{Element, Real};
use crate::simd::{dispatch, log1p_01, F32Vec, LaneElem, SimdOp, FLUSH};

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
    /// `weight · pos_weight` and `weight · scale · pos_weight`: the positive term's factors
    /// of loss and gradient, so that each costs one multiplication per element.
    wpw32: f32,
    wspw32: f32,
    one_minus_eps32: f32,
    half_eps32: f32,
    /// Beyond `|z| > -FLUSH` the float32 exponential is flushed; up to this `|z|` the
    /// weighted result may still be representable, so such vectors are computed in f64.
    fixup_limit32: f32,
    /// Targets of exactly 0 or 1 may take the short form: no smoothing, and a positive
    /// class weight (a zero one must skip its term, `0 · inf`).
    hard_ok: bool,
}

impl BceConsts {
    /// `None` where a factor the float32 kernel multiplies by is not a normal float32 (or
    /// zero, for a zero positive-class weight): the f64 path then keeps full precision.
    fn new(weight: f64, pos_weight: f64, label_smoothing: f64, scale: f64) -> Option<Self> {
        let usable = |v: f64| v == 0.0 || (v as f32).is_normal();
        let factors = [weight, weight * scale, pos_weight];
        let products = [weight * pos_weight, weight * scale * pos_weight];
        if !factors.iter().chain(&products).all(|&v| usable(v)) {
            return None;
        }
        let eps = label_smoothing;
        // The largest factor a flushed exponential can be multiplied by (a + b ≤ pw + 1).
        let coef = (pos_weight.max(0.0) + 1.0) * weight * scale.max(1.0);
        Some(BceConsts {
            weight,
            pos_weight,
            label_smoothing,
            scale,
            w32: weight as f32,
            ws32: (weight * scale) as f32,
            pw32: pos_weight as f32,
            wpw32: (weight * pos_weight) as f32,
            wspw32: (weight * scale * pos_weight) as f32,
            one_minus_eps32: (1.0 - eps) as f32,
            half_eps32: (0.5 * eps) as f32,
            // exp(−|z|)·coef stays above the smallest float32 subnormal (2^-149 ≈ e^-103.3).
            fixup_limit32: (104.0 + coef.max(1.0).ln()) as f32,
            hard_ok: eps == 0.0 && (pos_weight as f32) > 0.0 && (pos_weight as f32).is_finite(),
        })
    }
}

static ONES: [f32; 16] = [1.0; 16];

/// Cephes' `expf` polynomial (as in [`crate::simd::exp_nonpositive`]), highest degree first.
const EXP_P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];

/// `e^{−a}` for `a = |z|` in `[0, −FLUSH]` (NaN in, NaN out); larger `a` give unspecified
/// values that the caller zeroes. [`crate::simd::exp_nonpositive`]'s reduction and polynomial
/// on `−a`, arranged for a short dependency chain: no negation or clamp before the
/// reduction `a = m·ln2 + s`, and the polynomial in `s` by Estrin's scheme with its
/// coefficients' signs flipped, so that `u = s − s²·P(−s)` is the `−(r + r²·P(r))` of
/// `r = −s` and `e^{−a} = (1 − u)·2^{−m}` (no rounding of `1 − s` first). At most 1 ulp
/// against f64 `exp` (see the test).
#[inline(always)]
unsafe fn exp_neg<V: F32Vec>(a: V) -> V {
    let m = a.mul(V::splat(std::f32::consts::LOG2_E)).round();
    let s = m.fma(V::splat(-0.693_359_4), a);
    let s = m.fma(V::splat(2.121_944_4e-4), s);
    let s2 = s.mul(s);
    let s4 = s2.mul(s2);
    let p = |i: usize| V::splat(EXP_P[i]);
    let n = |i: usize| V::splat(-EXP_P[i]);
    // −P(−s) = (p4 s − p5) + s²(p2 s − p3) + s⁴(p0 s − p1).
    let lo = p(4).fma(s, n(5));
    let mid = p(2).fma(s, n(3));
    let hi = p(0).fma(s, n(1));
    let q = hi.fma(s4, mid.fma(s2, lo));
    let u = q.fma(s2, s);
    // The clamp only keeps `pow2`'s argument in range for the lanes the caller zeroes.
    let scale = V::pow2(V::splat(0.0).sub(m).max_keep_nan(V::splat(-126.0)));
    V::splat(1.0).sub(u).mul(scale)
}

/// One vector of BCE: (loss, grad, hess), the formulas of [`crate::bce`] with one `exp`, one
/// `log1p` (a polynomial in `e^{−|z|}` that does not wait for the division) and, with
/// `DERIV`, one division per element (`1 / (1 + e^{−|z|})` gives the sigmoid). `hard`: every
/// lane's target is exactly 0 or 1 and the constants allow the short form
/// ([`BceConsts::hard_ok`]), which gives the same bits as the general one (one coefficient is
/// then exactly zero and skipped). Without `DERIV` only the loss; the Hessian only with `HESS`.
#[inline(always)]
unsafe fn bce_vec<V: F32Vec, const DERIV: bool, const HESS: bool>(
    z: V,
    y: V,
    c: &BceConsts,
    hard: bool,
) -> (V, V, V) {
    let zero = V::splat(0.0);
    let one = V::splat(1.0);
    let az = z.abs();
    let e = V::zero_where(az.gt(V::splat(-FLUSH)), exp_neg(az));
    let l = log1p_01(e);
    // σ(z) and 1 − σ(z), each as one quotient (no cancellation): 1/(1+e) on the side of z's
    // sign, e/(1+e) on the other.
    let sigmoid = |inv: V| {
        let neg = z.lt(zero);
        let ei = e.mul(inv);
        (V::select(neg, ei, inv), V::select(neg, inv, ei))
    };
    let (w32, ws) = (V::splat(c.w32), V::splat(c.ws32));
    if hard {
        // Target 1: pw·softplus(−z); target 0: softplus(z). Either is softplus(t) with
        // t = ∓z, and the gradient's factor is σ(t) = 1 − σ(z) or σ(z) respectively.
        let pos = y.gt(V::splat(0.5));
        let t = V::select(pos, zero.sub(z), z);
        let lw = V::select(pos, V::splat(c.wpw32), w32);
        let loss = lw.mul(zero.max_keep_nan(t).add(l));
        if !DERIV {
            return (loss, zero, zero);
        }
        let inv = one.div(one.add(e));
        let st = V::select(t.lt(zero), e.mul(inv), inv);
        let grad = V::select(pos, zero.sub(V::splat(c.wspw32).mul(st)), ws.mul(st));
        if !HESS {
            return (loss, grad, zero);
        }
        let (sig, one_minus_sig) = sigmoid(inv);
        let coef = V::select(pos, V::splat(c.pw32), one);
        return (loss, grad, ws.mul(coef.mul(sig).mul(one_minus_sig)));
    }
    let (ome, he) = (V::splat(c.one_minus_eps32), V::splat(c.half_eps32));
    let ys = y.fma(ome, he);
    let a = V::splat(c.pw32).mul(ys);
    // 1 − y is exact for y in [1/2, 1]; the smoothing is added after it, not before.
    let b = one.sub(y).fma(ome, he);
    let sp_neg = zero.max_keep_nan(zero.sub(z)).add(l);
    let sp_pos = zero.max_keep_nan(z).add(l);
    // Zero coefficients contribute exactly zero (no 0 · inf). The weight is folded into each
    // coefficient as in the hard form (`wpw · 1`, `w · 1` are exact there).
    let (la, lb) = (V::splat(c.wpw32).mul(ys), w32.mul(b));
    let loss =
        V::zero_where(a.eq(zero), la.mul(sp_neg)).add(V::zero_where(b.eq(zero), lb.mul(sp_pos)));
    let loss = V::select(z.is_nan(), z, loss);
    if !DERIV {
        return (loss, zero, zero);
    }
    let (sig, one_minus_sig) = sigmoid(one.div(one.add(e)));
    // b·σ − a·(1 − σ), scaled: no cancellation when either coefficient is zero (hard targets).
    let (ga, gb) = (V::splat(c.wspw32).mul(ys), ws.mul(b));
    let grad = gb.mul(sig).sub(ga.mul(one_minus_sig));
    if !HESS {
        return (loss, grad, zero);
    }
    let hess = ws.mul(a.add(b).mul(sig).mul(one_minus_sig));
    (loss, grad, hess)
}

/// Elements `at..at + z.len()` of a chunk in f64 (see [`needs_f64`]), written to the outputs;
/// returns their loss sum. Out of line: it must not crowd the vector loop's registers.
#[cold]
#[inline(never)]
fn bce_f64_span<E: LaneElem + Element>(
    z: &[E],
    y: &[f32],
    c: &BceConsts,
    at: usize,
    outs: [&mut Option<&mut [E]>; 3],
) -> f64 {
    let [losses, grad, hess] = outs;
    let mut sum = 0.0;
    for (j, (&zj, &yj)) in z.iter().zip(y).enumerate() {
        let (l, g, h) = bce_elem(
            zj.to_f64(),
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
                o[at + j] = E::from_f64(v);
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

/// BCE over a chunk of float32 targets and logits of a lane type (float32, or a 16-bit
/// float widened in registers) with constant weights. `z == None`: the logits are in `grad`
/// (in place). Evaluates to the sum of the element losses (f64), or to the position of the
/// chunk's first target outside `[0, 1]` (checked in the same pass, before the vector that
/// holds it is written; earlier vectors of the chunk are written).
struct BceChunk<'a, E> {
    z: Option<&'a [E]>,
    y: &'a [f32],
    c: &'a BceConsts,
    losses: Option<&'a mut [E]>,
    grad: Option<&'a mut [E]>,
    hess: Option<&'a mut [E]>,
}

impl<E: LaneElem + Element> SimdOp for BceChunk<'_, E> {
    type Output = Result<f64, usize>;
    #[inline(always)]
    unsafe fn eval<V: F32Vec>(self) -> Result<f64, usize> {
        match (self.grad.is_some(), self.hess.is_some()) {
            (_, true) => bce_chunk::<V, E, true, true>(self),
            (true, false) => bce_chunk::<V, E, true, false>(self),
            (false, false) => bce_chunk::<V, E, false, false>(self),
        }
    }
}

#[inline(always)]
fn bce_chunk<V: F32Vec, E: LaneElem + Element, const DERIV: bool, const HESS: bool>(
    op: BceChunk<'_, E>,
) -> Result<f64, usize> {
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
        if let Some(p) = y.iter().position(|v| !(0.0..=1.0).contains(v)) {
            return Err(p);
        }
        for o in [&mut losses, &mut grad, &mut hess].into_iter().flatten() {
            o.fill(E::ZERO);
        }
        return Ok(0.0);
    }
    let zp: *const E = match (z, grad.as_deref()) {
        (Some(z), _) => z.as_ptr(),
        (None, Some(g)) => g.as_ptr(),
        (None, None) => return Ok(0.0),
    };
    // SAFETY: as in `row_max`. `z`, `y` and every output have `n` elements (checked by the
    // caller); full vectors are read and written at `i + LANES <= n`, the tail masked. In
    // place, the logits of a vector are read before its gradient overwrites them.
    unsafe {
        let mut acc = V::acc_zero();
        let mut extra = 0.0f64;
        let (mut pending, mut paired) = (V::splat(0.0), false);
        let mut i = 0;
        let put = |v: V, out: &mut Option<&mut [E]>, i: usize, len: usize| {
            if let Some(o) = out.as_deref_mut() {
                if len == V::LANES {
                    E::store(v, o.as_mut_ptr().add(i));
                } else {
                    E::store_partial(v, o.as_mut_ptr().add(i), len);
                }
            }
        };
        while i < n {
            let len = V::LANES.min(n - i);
            let (zv, yv) = if len == V::LANES {
                (E::load::<V>(zp.add(i)), V::load(y.as_ptr().add(i)))
            } else {
                (
                    E::load_partial::<V>(zp.add(i), len, 0.0),
                    V::load_partial(y.as_ptr().add(i), len, 0.0),
                )
            };
            let hard = yv.all_binary();
            if !hard && yv.any_outside_unit() {
                let bad = y[i..i + len].iter().position(|v| !(0.0..=1.0).contains(v));
                return Err(i + bad.expect("a lane outside [0, 1]"));
            }
            // Cheap test first (one compare): is any |z| past float32's exponent range?
            if V::any(zv.abs().gt(V::splat(-FLUSH))) && needs_f64(zv, c) {
                // Rare (|z| just past float32's exponent range): this vector in f64.
                // Copied out first: in place, `zp` is the gradient buffer written below.
                let mut zs = [E::ZERO; 16];
                std::ptr::copy_nonoverlapping(zp.add(i), zs.as_mut_ptr(), len);
                let outs = [&mut losses, &mut grad, &mut hess];
                extra += bce_f64_span(&zs[..len], &y[i..i + len], c, i, outs);
                i += len;
                continue;
            }
            let (l, g, h) = bce_vec::<V, DERIV, HESS>(zv, yv, c, hard && c.hard_ok);
            if len == V::LANES {
                // Whole vectors are summed in pairs in f32 first (losses are ≥ 0: one more
                // rounding of 2^-24 relative), halving the conversions to f64.
                if paired {
                    acc = V::acc_add(acc, pending.add(l));
                } else {
                    pending = l;
                }
                paired = !paired;
            } else {
                acc = V::acc_add(acc, l.mul(V::load_partial(ONES.as_ptr(), len, 0.0)));
            }
            put(l, &mut losses, i, len);
            if DERIV {
                put(g, &mut grad, i, len);
            }
            if HESS {
                put(h, &mut hess, i, len);
            }
            i += len;
        }
        if paired {
            acc = V::acc_add(acc, pending);
        }
        Ok(V::acc_sum(acc) + extra)
    }
}

/// `x` as a slice of `E` when `T` is `E`.
fn typed<T: 'static, E: 'static>(x: &[T]) -> Option<&[E]> {
    (TypeId::of::<T>() == TypeId::of::<E>()).then(|| {
        // SAFETY: `T` and `E` are the same type, so the cast changes nothing.
        unsafe { std::slice::from_raw_parts(x.as_ptr().cast::<E>(), x.len()) }
    })
}

/// See [`typed`].
fn typed_mut<T: 'static, E: 'static>(x: &mut [T]) -> Option<&mut [E]> {
    (TypeId::of::<T>() == TypeId::of::<E>()).then(|| {
        // SAFETY: `T` and `E` are the same type; the borrow of `x` moves into the result.
        unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr().cast::<E>(), x.len()) }
    })
}

/// The vector kernel on a chunk whose logits are of lane type `E`; `None` when `T` is not
/// `E` (nothing is touched then).
fn lane_chunk<T: Element, E: LaneElem + Element>(
    z: Option<&[T]>,
    y: &[f32],
    c: &BceConsts,
    outs: [&mut Option<&mut [T]>; 3],
) -> Option<Result<f64, usize>> {
    if TypeId::of::<T>() != TypeId::of::<E>() {
        return None;
    }
    let [l, g, h] = outs;
    Some(dispatch(BceChunk::<E> {
        z: z.and_then(typed::<T, E>),
        y,
        c,
        losses: l.as_deref_mut().and_then(typed_mut::<T, E>),
        grad: g.as_deref_mut().and_then(typed_mut::<T, E>),
        hess: h.as_deref_mut().and_then(typed_mut::<T, E>),
    }))
}

/// Every target in `[0, 1]`, in parallel chunks (the first bad position is reported).
fn check_targets_parallel<Y: Real>(y: &[Y]) -> Result<(), Error> {
    let jobs: Vec<_> = y.chunks(CHUNK_ELEMS).enumerate().collect();
    let found = map_jobs(jobs, y.len(), |(c, y)| {
        check_targets(y).map_err(|e| match e {
            Error::Target { position, value } => Error::Target {
                position: c * CHUNK_ELEMS + position,
                value,
            },
            e => e,
        })
    })?;
    found.into_iter().collect()
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
/// A target outside `[0, 1]` is found in the fused pass: the outputs may then be partly
/// written, except in place, where every target is checked before anything is written.
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
    if z.is_none() {
        // In place the logits are the gradient buffer: nothing may be written before every
        // target is known to be good. Otherwise the targets are checked in the fused pass.
        check_targets_parallel(y)?;
    }
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
        (Some(w), Some(pw)) => BceConsts::new(w, pw, spec.label_smoothing, spec.scale),
        _ => None,
    };
    let partials = map_jobs(jobs, n, |(c, z, y, mut l, mut g, mut h)| {
        let start = c * chunk;
        let bad = |j: usize| Error::Target {
            position: start + j,
            value: y[j].to_f64(),
        };
        // The vector kernel: float32 targets, logits of a lane type, constant factors.
        if let (Some(consts), Some(y32)) = (&consts, Y::as_f32(y)) {
            let mut done = lane_chunk::<T, f32>(z, y32, consts, [&mut l, &mut g, &mut h]);
            if done.is_none() {
                done = lane_chunk::<T, half::f16>(z, y32, consts, [&mut l, &mut g, &mut h]);
            }
            if done.is_none() {
                done = lane_chunk::<T, half::bf16>(z, y32, consts, [&mut l, &mut g, &mut h]);
            }
            if let Some(r) = done {
                return r.map_err(bad);
            }
        }
        let mut col = start % last;
        let mut sum = 0.0;
        for (j, &yj) in y.iter().enumerate() {
            let i = start + j;
            let yj = yj.to_f64();
            if !(0.0..=1.0).contains(&yj) {
                return Err(bad(j));
            }
            let zj = match (z, g.as_deref()) {
                (Some(z), _) => z[j],
                (None, Some(g)) => g[j],
                (None, None) => unreachable!("in-place BCE needs the gradient buffer"),
            };
            let (lv, gv, hv) = bce_elem(
                zj.to_f64(),
                yj,
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
        Ok(sum)
    })?;
    // The first failing chunk in order holds the first bad target.
    let sums = partials.into_iter().collect::<Result<Vec<f64>, Error>>()?;
    Ok(ordered_sum(&sums))
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
                let c = BceConsts::new(w as f64, pw as f64, eps as f64, 0.25).unwrap();
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
                let total = crate::simd::dispatch_on(isa, op).unwrap().unwrap();
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

    type ChunkResult<E> = Result<(f64, Vec<E>, Vec<E>, Vec<E>), usize>;

    fn run_chunk<E: LaneElem + Element>(
        isa: crate::simd::Isa,
        z: &[E],
        y: &[f32],
        c: &BceConsts,
    ) -> ChunkResult<E> {
        let n = z.len();
        let (mut l, mut g, mut h) = (vec![E::ZERO; n], vec![E::ZERO; n], vec![E::ZERO; n]);
        let op = BceChunk {
            z: Some(z),
            y,
            c,
            losses: Some(&mut l),
            grad: Some(&mut g),
            hess: Some(&mut h),
        };
        let total = crate::simd::dispatch_on(isa, op).unwrap()?;
        Ok((total, l, g, h))
    }

    fn logits() -> Vec<f32> {
        (0..203)
            .map(|i| ((i * 37 % 203) as f32 - 101.0) * 0.37)
            .chain([
                0.0,
                1e4,
                -1e4,
                f32::INFINITY,
                f32::NEG_INFINITY,
                88.0,
                -90.0,
            ])
            .collect()
    }

    #[test]
    fn the_hard_target_form_gives_the_general_forms_bits() {
        let z = logits();
        let y: Vec<f32> = (0..z.len()).map(|i| (i % 2) as f32).collect();
        for isa in crate::simd::supported() {
            for pw in [1.0, 3.0] {
                let fast = BceConsts::new(0.5, pw, 0.0, 0.25).unwrap();
                let slow = BceConsts {
                    hard_ok: false,
                    ..fast
                };
                let a = run_chunk(isa, &z, &y, &fast).unwrap();
                let b = run_chunk(isa, &z, &y, &slow).unwrap();
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(a.0, b.0, "{isa:?}");
                assert_eq!(bits(&a.1), bits(&b.1), "{isa:?}");
                assert_eq!(bits(&a.2), bits(&b.2), "{isa:?}");
                assert_eq!(bits(&a.3), bits(&b.3), "{isa:?}");
            }
        }
    }

    #[test]
    fn the_first_bad_target_of_a_chunk_is_reported() {
        let z = logits();
        for isa in crate::simd::supported() {
            for bad in [0usize, 7, 8, 9, 100, z.len() - 1] {
                for v in [-1e-30f32, 1.0 + 1e-7, f32::NAN, -0.5, 2.0] {
                    let mut y: Vec<f32> = (0..z.len()).map(|i| [0.0, 1.0, 0.5][i % 3]).collect();
                    y[bad] = v;
                    if bad + 3 < y.len() {
                        y[bad + 3] = -1.0; // a later one is not reported
                    }
                    let c = BceConsts::new(1.0, 1.0, 0.0, 1.0).unwrap();
                    assert_eq!(run_chunk(isa, &z, &y, &c).err(), Some(bad), "{isa:?} {v}");
                    let zero = BceConsts::new(0.0, 1.0, 0.0, 1.0).unwrap();
                    assert_eq!(run_chunk(isa, &z, &y, &zero).err(), Some(bad), "{isa:?}");
                }
            }
        }
    }

    #[test]
    fn sixteen_bit_logits_match_their_float32_values() {
        let z32 = logits();
        let y: Vec<f32> = (0..z32.len()).map(|i| [0.0, 1.0, 0.3][i % 3]).collect();
        let c = BceConsts::new(1.0, 2.0, 0.0, 1.0).unwrap();
        for isa in crate::simd::supported() {
            let z16: Vec<half::f16> = z32.iter().map(|&v| half::f16::from_f32(v)).collect();
            let zb: Vec<half::bf16> = z32.iter().map(|&v| half::bf16::from_f32(v)).collect();
            let w16: Vec<f32> = z16.iter().map(|v| v.to_f32()).collect();
            let wb: Vec<f32> = zb.iter().map(|v| v.to_f32()).collect();
            let (t16, l16, g16, _) = run_chunk(isa, &z16, &y, &c).unwrap();
            let (t32, l32, g32, _) = run_chunk(isa, &w16, &y, &c).unwrap();
            // The float32 working values, rounded once (ties to even) to the 16-bit type.
            for i in 0..z32.len() {
                assert_eq!(
                    l16[i].to_bits(),
                    half::f16::from_f32(l32[i]).to_bits(),
                    "{i}"
                );
                assert_eq!(
                    g16[i].to_bits(),
                    half::f16::from_f32(g32[i]).to_bits(),
                    "{i}"
                );
            }
            assert_eq!(t16, t32);
            let (tb, lb, gb, _) = run_chunk(isa, &zb, &y, &c).unwrap();
            let (tb32, lb32, gb32, _) = run_chunk(isa, &wb, &y, &c).unwrap();
            for i in 0..z32.len() {
                assert_eq!(
                    lb[i].to_bits(),
                    half::bf16::from_f32(lb32[i]).to_bits(),
                    "{i}"
                );
                assert_eq!(
                    gb[i].to_bits(),
                    half::bf16::from_f32(gb32[i]).to_bits(),
                    "{i}"
                );
            }
            assert_eq!(tb, tb32);
        }
    }

    /// `exp_neg` over a slice (whole vectors; the length a multiple of 16).
    struct ExpNeg<'a>(&'a [f32], &'a mut [f32]);

    impl SimdOp for ExpNeg<'_> {
        type Output = ();
        unsafe fn eval<V: F32Vec>(self) {
            for i in (0..self.0.len()).step_by(V::LANES) {
                exp_neg(V::load(self.0.as_ptr().add(i))).store(self.1.as_mut_ptr().add(i));
            }
        }
    }

    #[test]
    fn the_exponential_is_within_one_ulp_on_every_path() {
        let mut a: Vec<f32> = (0..)
            .map(|i| i as f32 * 0.000_731)
            .take_while(|&a| a <= -FLUSH)
            .collect();
        a.extend([0.0, -FLUSH, f32::NAN]);
        a.resize(a.len().next_multiple_of(16), 1.0);
        for isa in crate::simd::supported() {
            let mut got = vec![0.0; a.len()];
            crate::simd::dispatch_on(isa, ExpNeg(&a, &mut got)).unwrap();
            let mut worst: f64 = 0.0;
            for (&x, &g) in a.iter().zip(&got) {
                if x.is_nan() {
                    assert!(g.is_nan(), "{isa:?}");
                } else {
                    worst = worst.max(crate::testing::ulps_f32(g, (-(x as f64)).exp()));
                }
            }
            assert!(worst <= 1.0, "{isa:?}: worst error {worst} ulp");
            assert_eq!(got[a.iter().position(|&x| x == 0.0).unwrap()], 1.0);
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
