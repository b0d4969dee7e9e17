//! Categorical cross-entropy from logits: loss, gradient, Hessian diagonal and logsumexp of a
//! row in one fused pass (max; exponentials and their sum, stored in the output buffer; the
//! gradient by rescaling them), with PyTorch's `cross_entropy` semantics.
//!
//! For one row with logits `x`, maximum `m`, weighted target distribution `q` (total mass
//! `Q = Σ q_j`) and `S = Σ exp(x_j − m)`:
//!
//! * `loss = Σ_{q_j ≠ 0} q_j (m − x_j) + Q · log S`
//! * `grad_j = Q p_j − q_j`, `hess_j = Q p_j (1 − p_j)`, with `p = softmax(x)`
//!
//! both divided by the reduction's divisor `D` (the weight of the batch for a mean).
//!
//! Numerics: both loss terms are non-negative, so nothing cancels; `log S` is `log1p` of the
//! non-maximal exponentials (see [`crate::rowstats`]), so a confident, correct row whose loss is
//! 1e-30 keeps full relative precision; `1 − p_j` for a maximal logit is `(S − 1) / S`, not a
//! subtraction, and where `p_j` and `q_j` are both near 1 the gradient is formed as
//! `(Q − q_j) − Q (1 − p_j)` with `Q − q_j` summed from the other classes' mass, so nothing
//! cancels there either. `D` divides each row's factors (a subnormal divisor has no finite
//! reciprocal). Terms whose target mass is exactly zero are skipped, so a masked (`-inf`)
//! class costs nothing unless the target puts mass on it (then the loss is `+inf`).

use crate::batch::{check_labels, Logits, RowTarget, Targets};
use crate::element::Element;
use crate::error::{check_len, rows_of, try_vec, Error};
use crate::parallel::{map_jobs, ordered_sum, rows_per_chunk, split_opt};
use crate::real::{exp_sum, row_max, Real};
use crate::rowstats::{ExpSum, RowStats};
use crate::simd::{HardBlockStats, HardRows, HardTargets, HARD_BLOCK_ROWS};

/// Parameters shared by every row.
#[derive(Clone, Copy)]
pub struct CceSpec<'a> {
    pub k: usize,
    /// Per-class weights (length `K`), finite and non-negative.
    pub weight: Option<&'a [f64]>,
    pub label_smoothing: f64,
    /// Divides gradient and Hessian (the mean's divisor; 1 for the other reductions).
    pub divisor: f64,
    /// Compute logsumexp for ignored rows too.
    pub want_lse: bool,
    /// The z-loss coefficient (finite, non-negative; 0 for none).
    pub z_loss: f64,
    /// Divides the z-loss's gradient and Hessian (the mean's: the number of non-ignored rows).
    pub z_divisor: f64,
    /// The soft cap `c` (finite, positive), or `None`.
    pub softcap: Option<f64>,
}

impl CceSpec<'_> {
    #[inline(always)]
    fn w(&self, j: usize) -> f64 {
        self.weight.map_or(1.0, |w| w[j])
    }
    /// `v / D`, as a product where `1 / D` is finite.
    #[inline(always)]
    fn per_divisor(&self, v: f64) -> f64 {
        per(v, self.divisor)
    }
    /// The row's z-loss `z lse²` and `2 z / D_z` (0 without a z-loss).
    #[inline(always)]
    fn z_terms(&self, lse: f64) -> (f64, f64) {
        if self.z_loss == 0.0 {
            (0.0, 0.0)
        } else {
            (
                self.z_loss * lse * lse,
                per(2.0 * self.z_loss, self.z_divisor),
            )
        }
    }
}

/// `v / d`, as a product where `1 / d` is finite.
#[inline(always)]
fn per(v: f64, d: f64) -> f64 {
    let inv = 1.0 / d;
    if inv.is_finite() {
        v * inv
    } else {
        v / d
    }
}

/// Which derivative buffers a row writes (each of length `K`).
pub enum Derivs<'a, T> {
    None,
    Grad(&'a mut [T]),
    Hess(&'a mut [T]),
    Both {
        grad: &'a mut [T],
        hess: &'a mut [T],
    },
}

impl<T> Derivs<'_, T> {
    /// The buffer that receives the exponentials: the gradient's, else the Hessian's.
    fn store(&mut self) -> Option<&mut [T]> {
        match self {
            Derivs::None => None,
            Derivs::Grad(g) | Derivs::Both { grad: g, .. } => Some(g),
            Derivs::Hess(h) => Some(h),
        }
    }
}

/// Loss and logsumexp of one row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowResult {
    /// The cross-entropy term.
    pub loss: f64,
    /// The z-loss term `z lse²` (0 for an ignored row).
    pub z: f64,
    pub lse: f64,
}

/// The sums over a batch of the rows' cross-entropy and z-loss terms.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct CceSums {
    pub loss: f64,
    pub z: f64,
}

/// What a row's target contributes, read from the logits before they may be overwritten.
#[derive(Clone, Copy, Default)]
struct TargetTerms {
    /// `Σ_{q_j≠0} q_j (m − x_j)`.
    gap: f64,
    /// `Q = Σ q_j`.
    mass: f64,
    /// Index targets: `c = (1 − ε) w_t`, the mass on the target beyond smoothing.
    c: f64,
    /// Index targets: `Σ_j ε w_j / K` (so that `Q − c` never needs a subtraction).
    /// Probabilities: the mass on non-maximal classes (so that `Q − q_j` for a maximal
    /// class is this plus the other maxima's mass, not a subtraction from `Q`).
    off: f64,
    /// Probabilities: the mass on the maximal classes.
    at_max: f64,
}

#[inline(always)]
fn target_terms<T: Real, Y: Element>(
    x: &[T],
    m: f64,
    target: RowTarget<'_, Y>,
    spec: &CceSpec<'_>,
) -> TargetTerms {
    let eps = spec.label_smoothing;
    let smooth = eps / spec.k as f64;
    match target {
        RowTarget::Ignored => TargetTerms::default(),
        RowTarget::Index(t) => {
            let c = (1.0 - eps) * spec.w(t);
            let mut gap = if c != 0.0 {
                c * (m - x[t].to_f64())
            } else {
                0.0
            };
            let mut off = 0.0;
            if smooth != 0.0 {
                for (j, &xj) in x.iter().enumerate() {
                    let b = smooth * spec.w(j);
                    if b != 0.0 {
                        gap += b * (m - xj.to_f64());
                        off += b;
                    }
                }
            }
            TargetTerms {
                gap,
                mass: c + off,
                c,
                off,
                at_max: 0.0,
            }
        }
        RowTarget::Probs(y) => {
            let mut tt = TargetTerms::default();
            for (j, &xj) in x.iter().enumerate() {
                let q = q_prob(spec, y, j, eps, smooth);
                if q != 0.0 {
                    let xj = xj.to_f64();
                    tt.gap += q * (m - xj);
                    tt.mass += q;
                    if xj != m {
                        tt.off += q;
                    } else {
                        tt.at_max += q;
                    }
                }
            }
            tt
        }
    }
}

/// `q_j` of a probability target.
#[inline(always)]
fn q_prob<Y: Element>(spec: &CceSpec<'_>, y: &[Y], j: usize, eps: f64, smooth: f64) -> f64 {
    spec.w(j) * ((1.0 - eps) * y[j].to_f64() + smooth)
}

/// Loss (and, into `derivs`, gradient / Hessian) of one row of logits `x`.
pub fn cce_row<T: Real, Y: Element>(
    x: &[T],
    target: RowTarget<'_, Y>,
    spec: &CceSpec<'_>,
    mut derivs: Derivs<'_, T>,
) -> RowResult {
    if let (RowTarget::Ignored, false) = (target, spec.want_lse) {
        return cce_row_finish(
            target,
            spec,
            derivs,
            RowStats::default(),
            Default::default(),
        );
    }
    let m = row_max(x);
    let tt = target_terms(x, m, target, spec);
    let store = match target {
        RowTarget::Ignored => None,
        _ => derivs.store(),
    };
    let es = match store {
        // Derivatives need no exponential better than the cheaper kernel's; the loss's sum
        // is checked as for the loss alone.
        Some(store) => {
            let (es, bound) = T::exp_sum_loose_grad(x, m, Some(store));
            if loose_is_enough(es, bound, &tt, m) {
                es
            } else {
                exp_sum(x, m, None)
            }
        }
        None => loss_exp_sum(x, m, &tt),
    };
    let st = RowStats {
        m,
        es,
        log_s: es.log_sum(),
    };
    cce_row_finish(target, spec, derivs, st, tt)
}

/// The split sum of a row whose exponentials are not kept, from the cheaper kernel when the
/// error it leaves is below `2^-22` of the row's loss (`Q log S + gap` for target mass `Q`;
/// `log S` alone when there is none, which bounds the error of the logsumexp relative to
/// its `log S` part), else exactly. The error is what rounding `x_j − m` adds to `S − 1`,
/// so to `log S` at most that over `S`.
#[inline(always)]
fn loss_exp_sum<T: Real>(x: &[T], m: f64, tt: &TargetTerms) -> ExpSum {
    let (es, bound) = T::exp_sum_loose(x, m);
    if loose_is_enough(es, bound, tt, m) {
        es
    } else {
        exp_sum(x, m, None)
    }
}

/// Whether a sum from the cheaper kernel, with `bound` on the error it adds to `S − 1`, is
/// within `2^-22` of the row's loss (see [`loss_exp_sum`]): of its cross-entropy term, and
/// of `lse` and the z-loss `z·lse²` (an error `δ` in `log S` is `2δ/|lse|` of that term, and
/// `lse` may be near 0, as for log-probabilities passed as logits). The test is the same
/// whatever the call asks for, so a row's results do not depend on which other outputs are
/// requested. NaN rows (bound NaN) keep their NaN.
#[inline(always)]
fn loose_is_enough(es: ExpSum, bound: f64, tt: &TargetTerms, m: f64) -> bool {
    let log_s = es.log_sum();
    let scale = if tt.mass > 0.0 {
        log_s + tt.gap / tt.mass
    } else {
        log_s
    };
    es.loose_is_enough(bound, scale, Some(m + log_s))
}

/// [`cce_row`] for a row whose logits are in the gradient buffer, with no second copy: the
/// maximum, the target's terms and the sum of exponentials are read first, then the
/// exponentials overwrite the logits (one more pass over the row than [`cce_row`]).
fn cce_row_in_place<T: Real, Y: Element>(
    target: RowTarget<'_, Y>,
    spec: &CceSpec<'_>,
    grad: &mut [T],
    hess: Option<&mut [T]>,
) -> RowResult {
    let m = row_max(grad);
    let tt = target_terms(grad, m, target, spec);
    // The sums and exponentials of [`cce_row`] with a separate gradient, bit for bit.
    let es = if matches!(target, RowTarget::Ignored) {
        loss_exp_sum(grad, m, &tt)
    } else {
        let (es, bound) = T::exp_sum_loose_grad(grad, m, None);
        let es = if loose_is_enough(es, bound, &tt, m) {
            es
        } else {
            exp_sum(grad, m, None)
        };
        T::exp_loose_in_place(grad, m);
        es
    };
    let st = RowStats {
        m,
        es,
        log_s: es.log_sum(),
    };
    let derivs = match hess {
        Some(hess) => Derivs::Both { grad, hess },
        None => Derivs::Grad(grad),
    };
    cce_row_finish(target, spec, derivs, st, tt)
}

/// Per-thread scratch rows of the soft-capped path.
struct CapScratch<C> {
    /// `tanh(x_j / c)`.
    t: Vec<f64>,
    /// The capped row minus its maximum.
    y: Vec<C>,
    /// The gradient with respect to `y` when only the Hessian is requested.
    g: Vec<C>,
    /// The exponentials when no derivative is requested (float32 rows).
    e: Vec<C>,
}

/// [`cce_row`] of the soft-capped row `c·tanh(x/c)` of `x`, derivatives with respect to `x`
/// (see the module's notes). `x` may be the gradient buffer's own row (in place): it is read
/// before anything is written.
fn capped_row<T: Real, Y: Element>(
    x: Option<&[T]>,
    target: RowTarget<'_, Y>,
    spec: &CceSpec<'_>,
    cap: f64,
    mut derivs: Derivs<'_, T>,
    sc: &mut CapScratch<T>,
) -> RowResult {
    if let (RowTarget::Ignored, false) = (target, spec.want_lse) {
        return cce_row_finish(
            target,
            spec,
            derivs,
            RowStats::default(),
            Default::default(),
        );
    }
    let k = spec.k;
    let x = match (x, &mut derivs) {
        (Some(x), _) => x,
        (None, Derivs::Grad(g)) | (None, Derivs::Both { grad: g, .. }) => &**g,
        _ => unreachable!("in place has the gradient"),
    };
    let tb = &mut sc.t[..k];
    let t_max = match T::as_f32(x) {
        Some(x32) => crate::simd::tanh_f32_to_f64(x32, 1.0 / cap, tb),
        None => {
            let two_over_c = 2.0 / cap;
            for (tj, &xj) in tb.iter_mut().zip(x) {
                *tj = -(xj.to_f64().abs() * two_over_c);
            }
            crate::simd::exp_f64_in_place(tb);
            // tanh(u) = sign(u)·(1 − e)/(1 + e), e = exp(−2|u|) ≤ 1: no overflow.
            let mut t_max = f64::NEG_INFINITY;
            for (tj, &xj) in tb.iter_mut().zip(x) {
                *tj = ((1.0 - *tj) / (1.0 + *tj)).copysign(xj.to_f64());
                t_max = if *tj > t_max { *tj } else { t_max };
            }
            t_max
        }
    };
    let x_max = row_max(x);
    // A row of `-inf` is NaN, as without the cap; a `-inf` logit stays masked.
    let m = if x_max == f64::NEG_INFINITY {
        f64::NAN
    } else {
        cap * t_max
    };
    let ys = &mut sc.y[..k];
    match (T::as_f32(x), T::as_f32_mut(ys)) {
        (Some(x32), Some(y32)) if !m.is_nan() => {
            crate::simd::shift_capped_f32(tb, x32, cap, m, y32)
        }
        _ => {
            for ((yj, &tj), &xj) in ys.iter_mut().zip(tb.iter()).zip(x) {
                let d = cap * tj - m;
                *yj = T::from_f64(if xj.to_f64() == f64::NEG_INFINITY && !m.is_nan() {
                    f64::NEG_INFINITY
                } else {
                    d
                });
            }
        }
    }
    let mut derivs = match derivs {
        Derivs::Hess(h) => Derivs::Both {
            grad: &mut sc.g[..k],
            hess: h,
        },
        d => d,
    };
    let tt = target_terms(ys, 0.0, target, spec);
    // Rounding `d_j = c·t_j − m` to float32 costs up to 2^-25·|d_j| absolute in the exponent,
    // too much for a confident row's tiny loss (its terms have |d_j| up to 2c): the
    // exponentials, stored in full, are corrected by `e_j·(d_j − d32_j)`, and so is their sum.
    let rounded = T::as_f32(ys).is_some();
    let ys = &sc.y[..k];
    let store = match target {
        RowTarget::Ignored => None,
        _ => derivs.store(),
    };
    let store = match store {
        Some(s) => Some(s),
        None if rounded => Some(&mut sc.e[..k]),
        None => None,
    };
    let es = match store {
        Some(e) => {
            let mut es = exp_sum(ys, 0.0, Some(&mut *e));
            if let (Some(e32), Some(y32)) = (T::as_f32_mut(e), T::as_f32(ys)) {
                es.rest += crate::simd::refine_rounded_exps_f32(e32, y32, tb, cap, m);
                es.total = 1.0 + es.rest;
            }
            es
        }
        None => exp_sum(ys, 0.0, None),
    };
    let st = RowStats {
        m,
        es,
        log_s: es.log_sum(),
    };
    let (grad, hess) = match derivs {
        Derivs::None => (None, None),
        Derivs::Grad(g) => (Some(g), None),
        Derivs::Both { grad, hess } => (Some(grad), Some(hess)),
        Derivs::Hess(_) => unreachable!("made Both above"),
    };
    let ignored = matches!(target, RowTarget::Ignored);
    match (grad, hess) {
        (None, _) => cce_row_finish(target, spec, Derivs::<T>::None, st, tt),
        (Some(g), None) if ignored => cce_row_finish(target, spec, Derivs::Grad(g), st, tt),
        (Some(grad), Some(hess)) if ignored => {
            cce_row_finish(target, spec, Derivs::Both { grad, hess }, st, tt)
        }
        (Some(g), None) => {
            let res = cce_row_finish(target, spec, Derivs::Grad(&mut *g), st, tt);
            // dy/dx = sech²(u) = (1 − t)(1 + t): where t rounds to ±1 the true value is below
            // 1e-16, so the absolute error is nil.
            match T::as_f32_mut(g) {
                Some(g32) => crate::simd::mul_sech2_f32(g32, tb),
                None => {
                    for (gj, &tj) in g.iter_mut().zip(tb.iter()) {
                        *gj = T::from_f64(gj.to_f64() * ((1.0 - tj) * (1.0 + tj)));
                    }
                }
            }
            res
        }
        (Some(g), Some(h)) => {
            let res = cce_row_finish(
                target,
                spec,
                Derivs::Both {
                    grad: &mut *g,
                    hess: &mut *h,
                },
                st,
                tt,
            );
            // d²L/dx² = L''(y) (dy/dx)² + L'(y) d²y/dx², d²y/dx² = −2 t sech²(u) / c.
            let curve = -2.0 / cap;
            for ((gj, hj), &tj) in g.iter_mut().zip(h.iter_mut()).zip(tb.iter()) {
                let s = (1.0 - tj) * (1.0 + tj);
                let gy = gj.to_f64();
                let mut hx = hj.to_f64() * s * s;
                if gy != 0.0 {
                    hx += gy * curve * tj * s;
                }
                *hj = T::from_f64(hx);
                *gj = T::from_f64(gy * s);
            }
            res
        }
    }
}

/// The loss and derivatives of a row from its statistics and target terms; when derivatives
/// are requested (and the row is not ignored), the buffer that receives the gradient (else
/// the Hessian) already holds `exp(x_j − m)`. A maximal logit is one whose exponential is 1.
fn cce_row_finish<T: Real, Y: Element>(
    target: RowTarget<'_, Y>,
    spec: &CceSpec<'_>,
    mut derivs: Derivs<'_, T>,
    st: RowStats,
    tt: TargetTerms,
) -> RowResult {
    let eps = spec.label_smoothing;
    let smooth = eps / spec.k as f64;
    let RowStats { m, es, log_s } = st;
    let lse = m + log_s;
    if let (RowTarget::Index(t), 0.0) = (target, smooth) {
        match derivs {
            Derivs::None => return hard_target_row::<T>(t, spec, None, st, tt),
            Derivs::Grad(g) => return hard_target_row(t, spec, Some(g), st, tt),
            _ => {}
        }
    }
    if let RowTarget::Ignored = target {
        match &mut derivs {
            Derivs::None => {}
            Derivs::Grad(g) => g.fill(T::ZERO),
            Derivs::Hess(h) => h.fill(T::ZERO),
            Derivs::Both { grad, hess } => {
                grad.fill(T::ZERO);
                hess.fill(T::ZERO);
            }
        }
        return RowResult {
            loss: 0.0,
            z: 0.0,
            lse,
        };
    }
    let (z, z_d) = spec.z_terms(lse);
    let loss = if tt.mass != 0.0 {
        tt.gap + tt.mass * log_s
    } else {
        tt.gap
    };

    let inv_s = 1.0 / es.total;
    let omp_max = es.rest * inv_s;
    let mass_d = spec.per_divisor(tt.mass);
    // (gradient, Hessian) of element j from its stored exponential e.
    let derivs_at = |j: usize, e: f64| -> (f64, f64) {
        let p = e * inv_s;
        let at_max = e == 1.0;
        let omp = if at_max { omp_max } else { 1.0 - p };
        let g = match target {
            RowTarget::Index(t) => {
                let b = smooth * spec.w(j);
                if j == t {
                    // −c (1 − p_t) + (Q − c) p_t − b_t, with Q − c summed, not subtracted.
                    -tt.c * omp + tt.off * p - b
                } else {
                    tt.mass * p - b
                }
            }
            RowTarget::Probs(y) => {
                let q = q_prob(spec, y, j, eps, smooth);
                if at_max {
                    // Q p_j − q_j = (Q − q_j) − Q (1 − p_j); Q − q_j is the other classes'
                    // mass: the non-maximal mass plus that of the other maxima.
                    (tt.off + (tt.at_max - q)) - tt.mass * omp
                } else {
                    tt.mass * p - q
                }
            }
            RowTarget::Ignored => 0.0,
        };
        let (mut g, mut h) = (spec.per_divisor(g), mass_d * p * omp);
        if z_d != 0.0 {
            g += z_d * lse * p;
            h += z_d * (p * p + lse * p * omp);
        }
        (g, h)
    };
    // The gradient from the exponentials stored in `g`; the same arithmetic whether or not
    // the Hessian is requested too, so results never depend on which outputs were asked for.
    let write_grad = |g: &mut [T]| match target {
        RowTarget::Index(t) if smooth == 0.0 => {
            hard_target_grad(g, t, spec.per_divisor(tt.c), z_d * lse, st)
        }
        _ => {
            for (j, v) in g.iter_mut().enumerate() {
                *v = T::from_f64(derivs_at(j, v.to_f64()).0);
            }
        }
    };
    match derivs {
        Derivs::None => {}
        Derivs::Grad(g) => write_grad(g),
        Derivs::Hess(h) => {
            for (j, v) in h.iter_mut().enumerate() {
                *v = T::from_f64(derivs_at(j, v.to_f64()).1);
            }
        }
        Derivs::Both { grad, hess } => {
            for (j, (gv, hv)) in grad.iter().zip(hess.iter_mut()).enumerate() {
                *hv = T::from_f64(derivs_at(j, gv.to_f64()).1);
            }
            write_grad(grad);
        }
    }
    RowResult { loss, z, lse }
}

/// The common case of [`cce_row_finish`], kept small so that short rows pay little per row:
/// a class-index target without label smoothing, loss and optionally the gradient
/// `c·(p − onehot(t)) / D + 2 z lse p / D_z`, `c = weight[t]`.
#[inline(always)]
fn hard_target_row<T: Real>(
    t: usize,
    spec: &CceSpec<'_>,
    grad: Option<&mut [T]>,
    st: RowStats,
    tt: TargetTerms,
) -> RowResult {
    let (res, c_d, a) = hard_target_loss(spec, st, tt);
    if let Some(g) = grad {
        hard_target_grad(g, t, c_d, a, st);
    }
    res
}

/// [`hard_target_row`]'s loss, and the gradient's factors `c_d = c / D` and `a = 2 z lse /
/// D_z` for [`hard_target_grad`].
#[inline(always)]
fn hard_target_loss(spec: &CceSpec<'_>, st: RowStats, tt: TargetTerms) -> (RowResult, f64, f64) {
    let c = tt.c;
    let loss = if c != 0.0 { tt.gap + c * st.log_s } else { 0.0 };
    let lse = st.m + st.log_s;
    let (z, z_d) = spec.z_terms(lse);
    (RowResult { loss, z, lse }, spec.per_divisor(c), z_d * lse)
}

/// `c_d·(p − onehot(t)) + a·p` from the exponentials stored in `g`: every entry but the
/// target's is a rescaled exponential.
#[inline(always)]
fn hard_target_grad<T: Real>(g: &mut [T], t: usize, c_d: f64, a: f64, st: RowStats) {
    let (factor, g_t) = hard_target_terms(g[t].to_f64(), c_d, a, st);
    T::scale(g, factor);
    g[t] = T::from_f64(g_t);
}

/// The factor [`hard_target_grad`] rescales the stored exponentials by, and the target's
/// entry it writes, from the target's exponential `e_t`.
#[inline(always)]
fn hard_target_terms(e_t: f64, c_d: f64, a: f64, st: RowStats) -> (f64, f64) {
    let inv_s = 1.0 / st.es.total;
    let one_minus_p = if e_t == 1.0 {
        st.es.rest * inv_s
    } else {
        1.0 - e_t * inv_s
    };
    let g_t = if a == 0.0 {
        -c_d * one_minus_p
    } else {
        -c_d * one_minus_p + a * e_t * inv_s
    };
    ((c_d + a) * inv_s, g_t)
}

/// Output buffers of a batch; each is `N × K` (grad, hess) or `N` (losses, lse) long.
pub struct CceOutputs<'a, T> {
    pub losses: Option<&'a mut [T]>,
    pub lse: Option<&'a mut [T]>,
    pub grad: Option<&'a mut [T]>,
    pub hess: Option<&'a mut [T]>,
}

/// In place, rows up to this many classes are copied to a scratch row (one pass fewer);
/// longer rows are computed without a copy.
const IN_PLACE_COPY_MAX: usize = 1 << 16;

/// [`check_labels`] (the same result, and the same error for the first bad label) with
/// the common cases in one branch-free pass the compiler vectorises: the range check over
/// every label, and without weights the divisor as a count of the kept rows (the sum of
/// ones it equals exactly).
pub fn check_index_labels(
    labels: &[i64],
    k: usize,
    ignore_index: i64,
    weight: Option<&[f64]>,
) -> Result<f64, Error> {
    // Chunks in parallel (the counts are integers: any order gives the same total).
    let jobs: Vec<&[i64]> = labels.chunks(1 << 16).collect();
    let parts = crate::parallel::map_jobs(jobs, labels.len(), |c| scan_labels(c, k, ignore_index))?;
    let (bad, kept) = parts
        .iter()
        .fold((0u64, 0u64), |(b, n), &(cb, cn)| (b | cb, n + cn));
    if bad != 0 || weight.is_some() {
        return check_labels(labels, k, ignore_index, weight);
    }
    Ok(kept as f64)
}

/// `(nonzero if a label is outside [0, k) and not ignored, the number not ignored)`; the loop
/// is compiled for AVX2 too (64-bit compares: baseline x86-64 cannot vectorise it).
fn scan_labels(labels: &[i64], k: usize, ignore_index: i64) -> (u64, u64) {
    #[inline(always)]
    fn scan(labels: &[i64], k: usize, ignore_index: i64) -> (u64, u64) {
        let (mut bad, mut kept) = (0u64, 0u64);
        for &t in labels {
            let ignored = t == ignore_index;
            bad |= (!ignored & (t as u64 >= k as u64)) as u64;
            kept += !ignored as u64;
        }
        (bad, kept)
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn scan_avx2(labels: &[i64], k: usize, ignore_index: i64) -> (u64, u64) {
        scan(labels, k, ignore_index)
    }
    #[cfg(target_arch = "x86_64")]
    if crate::simd::active() >= crate::simd::Isa::Avx2 {
        // SAFETY: `active()` is at least Avx2 only when the CPU reports avx2.
        return unsafe { scan_avx2(labels, k, ignore_index) };
    }
    scan(labels, k, ignore_index)
}

/// Checks that the pieces of a batch fit together (sizes, labels, the in-place buffer) and
/// returns the number of rows.
fn check_batch<T, Y>(
    logits: &Logits<'_, T>,
    targets: &Targets<'_, Y>,
    spec: &CceSpec<'_>,
    out: &CceOutputs<'_, T>,
) -> Result<usize, Error> {
    let k = spec.k;
    let len = match logits {
        Logits::Separate(x) => x.len(),
        Logits::InGrad => out
            .grad
            .as_deref()
            .ok_or(Error::InPlace { arg: "out" })?
            .len(),
    };
    let n = rows_of(len, k)?;
    match *targets {
        Targets::Index {
            labels,
            ignore_index,
        } => {
            check_len(Some(labels), n, "target")?;
            check_index_labels(labels, k, ignore_index, spec.weight)?;
        }
        Targets::Probs(y) => check_len(Some(y), n * k, "target")?,
    }
    check_len(spec.weight, k, "weight")?;
    check_len(out.losses.as_deref(), n, "losses")?;
    check_len(out.lse.as_deref(), n, "lse")?;
    check_len(out.grad.as_deref(), n * k, "out")?;
    check_len(out.hess.as_deref(), n * k, "hess")?;
    Ok(n)
}

/// One chunk of consecutive rows: its logits (`None`: in the gradient buffer) and outputs.
struct Chunk<'a, C, O> {
    row0: usize,
    x: Option<&'a [C]>,
    grad: Option<&'a mut [C]>,
    hess: Option<&'a mut [C]>,
    losses: Option<&'a mut [O]>,
    lse: Option<&'a mut [O]>,
}

/// The rows of a chunk computed in `C`, with row results written as `O`; returns the sums
/// of the row losses' terms.
fn cce_chunk<C: Real, Y: Element, O: Element>(
    ch: Chunk<'_, C, O>,
    targets: &Targets<'_, Y>,
    spec: &CceSpec<'_>,
) -> Result<CceSums, Error> {
    let k = spec.k;
    let Chunk {
        row0,
        x,
        mut grad,
        mut hess,
        mut losses,
        mut lse,
    } = ch;
    let len = x.map_or_else(|| grad.as_deref().map_or(0, |g| g.len()), |x| x.len());
    let rows = len / k;
    // Small rows are processed several at a time, one row per SIMD lane, where the element
    // type has such a kernel (float32); other rows one at a time.
    if let Some(cap) = spec.softcap {
        return capped_chunk(row0, x, grad, hess, losses, lse, targets, spec, cap);
    }
    let hard = hard_block_lanes::<C, Y>(targets, spec);
    let block = if hard > 0 {
        HARD_BLOCK_ROWS
    } else {
        C::block_rows(k)
    };
    let copy_rows = x.is_none() && k <= IN_PLACE_COPY_MAX;
    let mut scratch: Vec<C> = if copy_rows {
        try_vec(k * block.max(1), C::ZERO)?
    } else {
        Vec::new()
    };
    let mut stats = vec![RowStats::default(); block];
    let mut hard_stats = HardBlockStats::default();
    // A block's worth of rows for a ragged tail through the vector finish.
    let mut tail = TailBlock::<C>::new(if hard > 0 { hard * k } else { 0 })?;
    let mut sum = CceSums::default();
    let mut r = 0;
    while r < rows {
        let span_rows = if hard > 0 {
            // Whole vectors of rows, then the ragged tail (padded with ignored rows).
            match (rows - r).min(HARD_BLOCK_ROWS) - (rows - r).min(HARD_BLOCK_ROWS) % hard {
                0 => rows - r,
                whole => whole,
            }
        } else if block > 0 && r + block <= rows {
            block
        } else {
            1
        };
        let span = r * k..(r + span_rows) * k;
        let xs: Option<&[C]> = match x {
            Some(x) => Some(&x[span.clone()]),
            None if copy_rows => {
                let src = grad.as_deref().expect("checked: in place has the gradient");
                scratch[..span.len()].copy_from_slice(&src[span.clone()]);
                Some(&scratch[..span.len()])
            }
            None => None,
        };
        if let (true, Some(xs)) = (hard > 0, xs) {
            let mut g = grad.as_deref_mut().map(|g| &mut g[span.clone()]);
            let mut h = hess.as_deref_mut().map(|h| &mut h[span.clone()]);
            let padded = span_rows % hard != 0;
            let block_rows = HardRows {
                x: if padded {
                    // The tail rows, then rows of zeros whose targets are ignored.
                    tail.x[..xs.len()].copy_from_slice(xs);
                    &tail.x
                } else {
                    xs
                },
                grad: match (&g, padded) {
                    (Some(_), true) => Some(&mut tail.g[..]),
                    _ => g.as_deref_mut(),
                },
                hess: match (&h, padded) {
                    (Some(_), true) => Some(&mut tail.h[..]),
                    _ => h.as_deref_mut(),
                },
            };
            hard_block(
                row0,
                r,
                span_rows,
                block_rows,
                targets,
                spec,
                &mut hard_stats,
                &mut sum,
                losses.as_deref_mut(),
                lse.as_deref_mut(),
            );
            if padded {
                if let Some(g) = g {
                    g.copy_from_slice(&tail.g[..g.len()]);
                }
                if let Some(h) = h {
                    h.copy_from_slice(&tail.h[..h.len()]);
                }
            }
            r += span_rows;
            continue;
        }
        if let (true, Some(xs)) = (span_rows > 1, xs) {
            let store = match (grad.as_deref_mut(), hess.as_deref_mut()) {
                (Some(g), _) => Some(&mut g[span.clone()]),
                (None, Some(h)) => Some(&mut h[span.clone()]),
                (None, None) => None,
            };
            C::row_block_stats(xs, k, &mut stats, store);
        }
        for i in 0..span_rows {
            let rr = r + i;
            let row = rr * k..(rr + 1) * k;
            let target = targets.row(row0 + rr, k);
            let res = match xs {
                None => cce_row_in_place(
                    target,
                    spec,
                    &mut grad.as_deref_mut().expect("checked")[row.clone()],
                    hess.as_deref_mut().map(|h| &mut h[row]),
                ),
                Some(xs) => {
                    let xr = &xs[i * k..(i + 1) * k];
                    let derivs = match (grad.as_deref_mut(), hess.as_deref_mut()) {
                        (None, None) => Derivs::None,
                        (Some(g), None) => Derivs::Grad(&mut g[row]),
                        (None, Some(h)) => Derivs::Hess(&mut h[row]),
                        (Some(g), Some(h)) => Derivs::Both {
                            grad: &mut g[row.clone()],
                            hess: &mut h[row],
                        },
                    };
                    if span_rows > 1 {
                        let tt = target_terms(xr, stats[i].m, target, spec);
                        cce_row_finish(target, spec, derivs, stats[i], tt)
                    } else {
                        cce_row(xr, target, spec, derivs)
                    }
                }
            };
            record(&mut sum, res, rr, losses.as_deref_mut(), lse.as_deref_mut());
        }
        r += span_rows;
    }
    Ok(sum)
}

/// Scratch rows for the ragged tail of a chunk: logits (zero past the tail's rows), and
/// the derivatives the kernel writes before the tail's rows are copied out.
struct TailBlock<C> {
    x: Vec<C>,
    g: Vec<C>,
    h: Vec<C>,
}

impl<C: Element> TailBlock<C> {
    fn new(len: usize) -> Result<Self, Error> {
        Ok(TailBlock {
            x: try_vec(len, C::ZERO)?,
            g: try_vec(len, C::ZERO)?,
            h: try_vec(len, C::ZERO)?,
        })
    }
}

/// The row granularity of the one-row-per-lane finish for this batch (0: none): class-index
/// targets without label smoothing, on a path and element type that have the kernel.
fn hard_block_lanes<C: Real, Y>(targets: &Targets<'_, Y>, spec: &CceSpec<'_>) -> usize {
    match targets {
        Targets::Index { .. } if spec.label_smoothing == 0.0 && spec.softcap.is_none() => {
            crate::simd::hard_block_lanes::<C>(spec.k)
        }
        _ => 0,
    }
}

/// The rows `r .. r + n` of a chunk whose first row is `row0` through the vector finish:
/// the derivatives written to `rows`, the results recorded.
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
fn hard_block<C: Real, Y, O: Element>(
    row0: usize,
    r: usize,
    n: usize,
    rows: HardRows<'_, C>,
    targets: &Targets<'_, Y>,
    spec: &CceSpec<'_>,
    st: &mut HardBlockStats,
    sum: &mut CceSums,
    losses: Option<&mut [O]>,
    lse: Option<&mut [O]>,
) {
    let Targets::Index {
        labels,
        ignore_index,
    } = *targets
    else {
        unreachable!("the vector finish takes index targets")
    };
    let mut tg = HardTargets {
        t: [-1.0; HARD_BLOCK_ROWS],
        b: [0.0; HARD_BLOCK_ROWS],
    };
    let mut c = [0.0f64; HARD_BLOCK_ROWS];
    let inv_d = 1.0 / spec.divisor;
    let finite_inv = inv_d.is_finite();
    for (i, &label) in labels[row0 + r..row0 + r + n].iter().enumerate() {
        if label != ignore_index {
            let ti = label as usize;
            c[i] = match spec.weight {
                Some(w) => w[ti],
                None => 1.0,
            };
            tg.t[i] = ti as f32;
            tg.b[i] = if finite_inv {
                c[i] * inv_d
            } else {
                c[i] / spec.divisor
            } as f32;
        }
    }
    let zd = spec.z_terms(1.0).1 as f32;
    crate::simd::hard_block(rows, spec.k, &tg, zd, st);
    let mut row_loss = [0.0f64; HARD_BLOCK_ROWS];
    let mut row_lse = [0.0f64; HARD_BLOCK_ROWS];
    for i in 0..n {
        let (m, log_s) = (st.m[i] as f64, st.log_s[i]);
        row_lse[i] = m + log_s;
        let ci = c[i];
        // `c = 0` (an ignored row, or a zero weight) costs nothing, even against a masked
        // target (whose gap is infinite).
        let l = ci * (m - st.xt[i] as f64) + ci * log_s;
        row_loss[i] = if ci != 0.0 { l } else { 0.0 };
    }
    // Four partial sums in a fixed order (the block's rows depend only on the shape).
    let mut part = [0.0f64; 4];
    for (i, &l) in row_loss[..n].iter().enumerate() {
        part[i % 4] += l;
    }
    sum.loss += (part[0] + part[1]) + (part[2] + part[3]);
    let mut row_z = [0.0f64; HARD_BLOCK_ROWS];
    if spec.z_loss != 0.0 {
        for i in 0..n {
            if tg.t[i] >= 0.0 {
                row_z[i] = spec.z_terms(row_lse[i]).0;
                sum.z += row_z[i];
            }
        }
    }
    if let Some(l) = losses {
        for (o, (&v, &z)) in l[r..r + n].iter_mut().zip(row_loss.iter().zip(&row_z)) {
            *o = O::from_f64(v + z);
        }
    }
    if let Some(s) = lse {
        for i in 0..n {
            let ignored = tg.t[i] < 0.0;
            let v = if ignored && !spec.want_lse {
                0.0
            } else {
                row_lse[i]
            };
            s[r + i] = O::from_f64(v);
        }
    }
}

/// Adds row `r`'s result to the sums and writes its loss and logsumexp where asked.
#[inline(always)]
fn record<O: Element>(
    sum: &mut CceSums,
    res: RowResult,
    r: usize,
    losses: Option<&mut [O]>,
    lse: Option<&mut [O]>,
) {
    sum.loss += res.loss;
    sum.z += res.z;
    if let Some(l) = losses {
        l[r] = O::from_f64(res.loss + res.z);
    }
    if let Some(s) = lse {
        s[r] = O::from_f64(res.lse);
    }
}

/// [`capped_row`] of a float32 row with a class-index target and no label smoothing, by one
/// float32 pass ([`crate::simd::capped_exp_sum_f32`]) that stores `exp(u_j − u_m)·sech²`
/// for the gradient's rescaling; the Hessian, when requested, comes from [`capped_row`]
/// (so the loss and gradient never depend on whether it is). `None`, with nothing written,
/// for a row [`capped_row`] must do: a NaN or infinite maximum, or more than `K/16` logits
/// beyond the float32 region.
fn capped_row_f32<C: Real, Y: Element>(
    x: Option<&[C]>,
    t: usize,
    spec: &CceSpec<'_>,
    cap: f64,
    derivs: Derivs<'_, C>,
    sc: &mut CapScratch<C>,
) -> Option<RowResult> {
    let (grad, hess) = match derivs {
        Derivs::None => (None, None),
        Derivs::Grad(g) => (Some(g), None),
        Derivs::Hess(h) => (None, Some(h)),
        Derivs::Both { grad, hess } => (Some(grad), Some(hess)),
    };
    let (p, x_t) = {
        let xs = C::as_f32(x.or(grad.as_deref())?)?;
        let (x_m, far) = crate::simd::capped_prepass_f32(xs, cap);
        if !x_m.is_finite() || far > spec.k / 16 {
            return None;
        }
        (crate::simd::CapRow::new(cap, x_m), xs[t])
    };
    if let Some(h) = hess {
        let xs = x.or(grad.as_deref()).expect("in place has the gradient");
        capped_row(
            Some(xs),
            RowTarget::<Y>::Index(t),
            spec,
            cap,
            Derivs::Hess(h),
            sc,
        );
    }
    let (d_t, e_t, s_t) = crate::simd::capped_one_f32(x_t, p);
    let c = spec.w(t);
    let tt = TargetTerms {
        gap: if c != 0.0 { -c * d_t } else { 0.0 },
        mass: c,
        c,
        off: 0.0,
        at_max: 0.0,
    };
    let x32 = x.and_then(C::as_f32);
    let g32 = grad.and_then(C::as_f32_mut);
    let stats = |es: crate::rowstats::ExpSum| RowStats {
        m: p.m,
        es,
        log_s: es.log_sum(),
    };
    Some(match g32 {
        Some(g) => {
            let st = stats(crate::simd::capped_exp_sum_f32(x32, Some(&mut *g), p));
            g[t] = e_t as f32;
            let res = hard_target_row(t, spec, Some(&mut *g), st, tt);
            g[t] = (g[t] as f64 * s_t) as f32;
            res
        }
        None => {
            let st = stats(crate::simd::capped_exp_sum_f32(x32, None, p));
            hard_target_row::<f32>(t, spec, None, st, tt)
        }
    })
}

/// The derivative buffers of one row of a chunk.
fn row_derivs<'a, C>(
    grad: Option<&'a mut [C]>,
    hess: Option<&'a mut [C]>,
    row: &std::ops::Range<usize>,
) -> Derivs<'a, C> {
    match (grad, hess) {
        (None, None) => Derivs::None,
        (Some(g), None) => Derivs::Grad(&mut g[row.clone()]),
        (None, Some(h)) => Derivs::Hess(&mut h[row.clone()]),
        (Some(g), Some(h)) => Derivs::Both {
            grad: &mut g[row.clone()],
            hess: &mut h[row.clone()],
        },
    }
}

/// [`cce_chunk`] with a soft cap: one row at a time through [`capped_row`].
#[allow(clippy::too_many_arguments)]
fn capped_chunk<C: Real, Y: Element, O: Element>(
    row0: usize,
    x: Option<&[C]>,
    mut grad: Option<&mut [C]>,
    mut hess: Option<&mut [C]>,
    mut losses: Option<&mut [O]>,
    mut lse: Option<&mut [O]>,
    targets: &Targets<'_, Y>,
    spec: &CceSpec<'_>,
    cap: f64,
) -> Result<CceSums, Error> {
    let k = spec.k;
    let len = x.map_or_else(|| grad.as_deref().map_or(0, |g| g.len()), |x| x.len());
    let is_f32 = C::as_f32(&[]).is_some();
    let mut sc = CapScratch {
        t: try_vec(k, 0.0)?,
        y: try_vec(k, C::ZERO)?,
        g: if hess.is_some() {
            try_vec(k, C::ZERO)?
        } else {
            Vec::new()
        },
        e: if is_f32 {
            try_vec(k, C::ZERO)?
        } else {
            Vec::new()
        },
    };
    let mut sum = CceSums::default();
    for r in 0..len / k {
        let row = r * k..(r + 1) * k;
        let target = targets.row(row0 + r, k);
        let fast = match (target, is_f32 && spec.label_smoothing == 0.0) {
            (RowTarget::Index(t), true) => Some(t),
            _ => None,
        };
        let xr = x.map(|x| &x[row.clone()]);
        let res = match fast {
            Some(t) => {
                let derivs = row_derivs(grad.as_deref_mut(), hess.as_deref_mut(), &row);
                capped_row_f32::<C, Y>(xr, t, spec, cap, derivs, &mut sc)
            }
            None => None,
        };
        let res = match res {
            Some(res) => res,
            None => {
                let derivs = row_derivs(grad.as_deref_mut(), hess.as_deref_mut(), &row);
                capped_row(xr, target, spec, cap, derivs, &mut sc)
            }
        };
        record(&mut sum, res, r, losses.as_deref_mut(), lse.as_deref_mut());
    }
    Ok(sum)
}

/// [`cce_chunk`] for a type computed in a wider one: the chunk's logits are widened into a
/// scratch copy, the derivatives computed there and rounded once into the outputs.
fn cce_chunk_widened<T: Real, Y: Element>(
    ch: Chunk<'_, T, T>,
    targets: &Targets<'_, Y>,
    spec: &CceSpec<'_>,
) -> Result<CceSums, Error> {
    if crate::simd::is_lane_16::<T>() {
        return widened_f32_chunk(ch, targets, spec);
    }
    let Chunk {
        row0,
        x,
        grad,
        hess,
        losses,
        lse,
    } = ch;
    let src = x.or(grad.as_deref()).unwrap_or(&[]);
    let zero = <T::Work as Element>::ZERO;
    let mut xw = try_vec(src.len(), zero)?;
    T::widen(src, &mut xw);
    let mut gw = grad.as_ref().map(|g| try_vec(g.len(), zero)).transpose()?;
    let mut hw = hess.as_ref().map(|h| try_vec(h.len(), zero)).transpose()?;
    let wide = Chunk {
        row0,
        x: Some(&xw),
        grad: gw.as_deref_mut(),
        hess: hw.as_deref_mut(),
        losses,
        lse,
    };
    let sum = cce_chunk::<T::Work, Y, T>(wide, targets, spec)?;
    if let (Some(g), Some(gw)) = (grad, &gw) {
        T::narrow(gw, g);
    }
    if let (Some(h), Some(hw)) = (hess, &hw) {
        T::narrow(hw, h);
    }
    Ok(sum)
}

thread_local! {
    /// Per-thread float32 scratch of [`widened_f32_chunk`] (logits, gradient, Hessian), kept
    /// between chunks so that a chunk neither allocates nor zeroes its copies.
    static WIDE_SCRATCH: std::cell::RefCell<[Vec<f32>; 3]> = const {
        std::cell::RefCell::new([Vec::new(), Vec::new(), Vec::new()])
    };
}

/// [`cce_chunk_widened`] for float16 and bfloat16: rows longer than the one-row-per-lane
/// kernels take read their logits in registers ([`half_rows`]); shorter ones and
/// soft-capped rows have the chunk widened into per-thread float32 scratch with the
/// dispatched conversions (F16C, AVX-512F) and computed by the float32 kernels. Either way
/// the derivatives are rounded once into the outputs with the same conversions.
fn widened_f32_chunk<T: Real, Y: Element>(
    ch: Chunk<'_, T, T>,
    targets: &Targets<'_, Y>,
    spec: &CceSpec<'_>,
) -> Result<CceSums, Error> {
    WIDE_SCRATCH.with(|cell| {
        let mut bufs = cell.borrow_mut();
        let [xw, gw, hw] = &mut *bufs;
        let n = ch.x.or(ch.grad.as_deref()).map_or(0, <[T]>::len);
        for (buf, need) in [
            (&mut *xw, true),
            (&mut *gw, ch.grad.is_some()),
            (&mut *hw, ch.hess.is_some()),
        ] {
            if need && buf.len() < n {
                *buf = try_vec(n, 0.0f32)?;
            }
        }
        if spec.softcap.is_none() && f32::block_rows(spec.k) == 0 {
            return half_rows(ch, targets, spec, [xw, gw, hw]);
        }
        let Chunk {
            row0,
            x,
            grad,
            hess,
            losses,
            lse,
        } = ch;
        let src = x.or(grad.as_deref()).unwrap_or(&[]);
        let widened = crate::simd::widen_to_f32(src, &mut xw[..n]);
        debug_assert!(widened, "a 16-bit float");
        let wide = Chunk {
            row0,
            x: Some(&xw[..n]),
            grad: grad.is_some().then(|| &mut gw[..n]),
            hess: hess.is_some().then(|| &mut hw[..n]),
            losses,
            lse,
        };
        let sum = cce_chunk::<f32, Y, T>(wide, targets, spec)?;
        for (out, w) in [(grad, &*gw), (hess, &*hw)] {
            if let Some(o) = out {
                crate::simd::narrow_from_f32(&w[..n], o);
            }
        }
        Ok(sum)
    })
}

/// [`widened_f32_chunk`] for rows too long for the one-row-per-lane kernels: each row's
/// maximum and sum of exponentials read from the 16-bit logits and widened in registers
/// (no float32 copy of the logits), the float32 exponentials stored in per-thread scratch
/// of one row, the derivatives computed there by [`cce_row_finish`] and rounded into the
/// outputs. Every result is the float32 kernels' on the widened row, bit for bit (the rare
/// exact re-sum widens the row into `xw` and runs the float32 kernel). `x == None`: the
/// logits are in `grad` (in place; each row is read in full before it is written).
fn half_rows<T: Real, Y: Element>(
    ch: Chunk<'_, T, T>,
    targets: &Targets<'_, Y>,
    spec: &CceSpec<'_>,
    [xw, gw, hw]: [&mut Vec<f32>; 3],
) -> Result<CceSums, Error> {
    let Chunk {
        row0,
        x,
        mut grad,
        mut hess,
        mut losses,
        mut lse,
    } = ch;
    let k = spec.k;
    let len = x.or(grad.as_deref()).map_or(0, <[T]>::len);
    // (The derivatives' scratch is there only for the derivatives asked for.)
    let (kg, kh) = (
        k * usize::from(grad.is_some()),
        k * usize::from(hess.is_some()),
    );
    let (xw, gw, hw) = (&mut xw[..k], &mut gw[..kg], &mut hw[..kh]);
    let mut sum = CceSums::default();
    for r in 0..len / k {
        let row = r * k..(r + 1) * k;
        let target = targets.row(row0 + r, k);
        let (res, rescale) = {
            let xr: &[T] = match x {
                Some(x) => &x[row.clone()],
                None => &grad.as_deref().expect("checked: in place has the gradient")[row.clone()],
            };
            let derivs = match (grad.is_some(), hess.is_some()) {
                (false, false) => Derivs::None,
                (true, false) => Derivs::Grad(&mut *gw),
                (false, true) => Derivs::Hess(&mut *hw),
                (true, true) => Derivs::Both {
                    grad: &mut *gw,
                    hess: &mut *hw,
                },
            };
            half_row(xr, target, spec, derivs, xw)
        };
        match (rescale, grad.as_deref_mut()) {
            // The common row (class index, no smoothing, gradient only): the exponentials
            // rescaled and rounded in one pass, the target's entry rounded as float32 would.
            (Some((factor, t, g_t)), Some(g)) => {
                let o = &mut g[row.clone()];
                crate::simd::scale_narrow_from_f32(gw, factor as f32, o);
                crate::simd::narrow_from_f32(&[g_t as f32], &mut o[t..t + 1]);
            }
            _ => {
                for (out, w) in [(grad.as_deref_mut(), &*gw), (hess.as_deref_mut(), &*hw)] {
                    if let Some(o) = out {
                        crate::simd::narrow_from_f32(w, &mut o[row.clone()]);
                    }
                }
            }
        }
        record(&mut sum, res, r, losses.as_deref_mut(), lse.as_deref_mut());
    }
    Ok(sum)
}

/// [`cce_row`] of a 16-bit row into float32 derivatives (see [`half_rows`]). For a class
/// index without smoothing and the gradient alone, the derivatives are left as the stored
/// exponentials, with the factor that rescales them and the target's entry (what
/// [`hard_target_grad`] would apply) returned for the caller's one-pass rescale and rounding.
fn half_row<T: Real, Y: Element>(
    x: &[T],
    target: RowTarget<'_, Y>,
    spec: &CceSpec<'_>,
    mut derivs: Derivs<'_, f32>,
    xw: &mut [f32],
) -> (RowResult, Option<(f64, usize, f64)>) {
    if let (RowTarget::Ignored, false) = (target, spec.want_lse) {
        let none = RowStats::default();
        return (
            cce_row_finish(target, spec, derivs, none, Default::default()),
            None,
        );
    }
    let m32 = crate::simd::row_max_16(x).expect("a 16-bit float");
    let m = m32 as f64;
    let tt = target_terms(x, m, target, spec);
    let store = match target {
        RowTarget::Ignored => None,
        _ => derivs.store(),
    };
    let grad = store.is_some();
    let (es, bound) = crate::simd::exp_sum_loose_16(x, m32, grad, store).expect("16-bit");
    let es = if loose_is_enough(es, bound, &tt, m) {
        es
    } else {
        let widened = crate::simd::widen_to_f32(x, xw);
        debug_assert!(widened, "a 16-bit float");
        exp_sum(&*xw, m, None)
    };
    let st = RowStats {
        m,
        es,
        log_s: es.log_sum(),
    };
    let smooth = spec.label_smoothing / spec.k as f64; // as in `cce_row_finish`
    if let (RowTarget::Index(t), 0.0, Derivs::Grad(g)) = (target, smooth, &derivs) {
        let (res, c_d, a) = hard_target_loss(spec, st, tt);
        let (factor, g_t) = hard_target_terms(f64::from(g[t]), c_d, a, st);
        return (res, Some((factor, t, g_t)));
    }
    (cce_row_finish(target, spec, derivs, st, tt), None)
}

/// Runs a whole batch of rows of `spec.k` logits and returns the sums of the row losses'
/// cross-entropy and z-loss terms (in f64, summed in a fixed order, so they are the same for
/// any thread count). Inconsistent
/// inputs are an [`Error`], checked before anything is written; so is scratch memory that
/// cannot be had, and a cancelled call (outputs are then unspecified).
pub fn cce_batch<T: Real, Y: Element>(
    logits: Logits<'_, T>,
    targets: Targets<'_, Y>,
    spec: &CceSpec<'_>,
    out: CceOutputs<'_, T>,
) -> Result<CceSums, Error> {
    let n = check_batch(&logits, &targets, spec, &out)?;
    let k = spec.k;
    let rpc = rows_per_chunk(k);
    let n_chunks = n.div_ceil(rpc);
    let xs: Vec<Option<&[T]>> = match logits {
        Logits::Separate(x) => x.chunks((rpc * k).max(1)).map(Some).collect(),
        Logits::InGrad => vec![None; n_chunks],
    };
    let grads = split_opt(out.grad, rpc * k, n_chunks);
    let hesses = split_opt(out.hess, rpc * k, n_chunks);
    let losses = split_opt(out.losses, rpc, n_chunks);
    let lses = split_opt(out.lse, rpc, n_chunks);
    let jobs: Vec<Chunk<'_, T, T>> = xs
        .into_iter()
        .zip(grads)
        .zip(hesses)
        .zip(losses.into_iter().zip(lses))
        .enumerate()
        .map(|(c, (((x, grad), hess), (losses, lse)))| Chunk {
            row0: c * rpc,
            x,
            grad,
            hess,
            losses,
            lse,
        })
        .collect();
    let direct = hard_block_lanes::<T, Y>(&targets, spec) > 0;
    let partials = map_jobs(jobs, n * k, |ch| {
        if T::NATIVE || direct {
            cce_chunk::<T, Y, T>(ch, &targets, spec)
        } else {
            cce_chunk_widened(ch, &targets, spec)
        }
    })?;
    let partials = partials.into_iter().collect::<Result<Vec<_>, _>>()?;
    let loss: Vec<f64> = partials.iter().map(|p| p.loss).collect();
    let z: Vec<f64> = partials.iter().map(|p| p.z).collect();
    Ok(CceSums {
        loss: ordered_sum(&loss),
        z: ordered_sum(&z),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    type Idx<'a> = Targets<'a, f64>;

    fn spec(k: usize) -> CceSpec<'static> {
        CceSpec {
            k,
            weight: None,
            label_smoothing: 0.0,
            divisor: 1.0,
            want_lse: true,
            z_loss: 0.0,
            z_divisor: 1.0,
            softcap: None,
        }
    }

    /// Plain two-pass reference: loss = lse − x_t, grad = softmax − onehot.
    fn naive(x: &[f64], t: usize) -> (f64, Vec<f64>) {
        let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = x.iter().map(|v| (v - m).exp()).sum();
        let lse = m + s.ln();
        let g = x
            .iter()
            .enumerate()
            .map(|(j, v)| (v - lse).exp() - if j == t { 1.0 } else { 0.0 })
            .collect();
        (lse - x[t], g)
    }

    #[test]
    fn matches_naive_for_every_length_1_to_20() {
        for k in 1..=20usize {
            let x: Vec<f64> = (0..k).map(|j| ((j * 37 % 11) as f64) * 0.7 - 3.0).collect();
            for t in 0..k {
                let mut g = vec![0.0; k];
                let r = cce_row(
                    &x,
                    RowTarget::<'_, f64>::Index(t),
                    &spec(k),
                    Derivs::Grad(&mut g),
                );
                let (want, gw) = naive(&x, t);
                assert!(
                    (r.loss - want).abs() <= 1e-13 * want.abs().max(1.0),
                    "k={k} t={t}"
                );
                for j in 0..k {
                    assert!((g[j] - gw[j]).abs() < 1e-14, "k={k} t={t} j={j}");
                }
            }
        }
    }

    #[test]
    fn tiny_loss_keeps_relative_precision() {
        let x = [60.0f32, 0.0, -5.0];
        let r = cce_row(&x, RowTarget::<'_, f64>::Index(0), &spec(3), Derivs::None);
        let want = (-60.0f64).exp() + (-65.0f64).exp();
        assert!((r.loss - want).abs() <= 1e-6 * want);
        let x64 = [60.0f64, 0.0, -5.0];
        let r = cce_row(&x64, RowTarget::<'_, f64>::Index(0), &spec(3), Derivs::None);
        assert!((r.loss - want).abs() <= 1e-14 * want);
        let mut g = [0.0f32; 3];
        cce_row(
            &x,
            RowTarget::<'_, f64>::Index(0),
            &spec(3),
            Derivs::Grad(&mut g),
        );
        assert!(((g[0] as f64) + want).abs() <= 1e-6 * want);
    }

    #[test]
    fn masked_class_is_free_unless_targeted() {
        let x = [1.0f64, f64::NEG_INFINITY, 0.5];
        let mut g = [9.0; 3];
        let r = cce_row(
            &x,
            RowTarget::<'_, f64>::Index(0),
            &spec(3),
            Derivs::Grad(&mut g),
        );
        assert!(r.loss.is_finite());
        assert_eq!(g[1], 0.0);
        let r = cce_row(
            &x,
            RowTarget::<'_, f64>::Index(1),
            &spec(3),
            Derivs::Grad(&mut g),
        );
        assert_eq!(r.loss, f64::INFINITY);
        assert_eq!(g[1], -1.0);
    }

    #[test]
    fn batch_is_independent_of_thread_count() {
        let n = 3000;
        let k = 97;
        let x: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7919 % 1000) as f32) * 0.013 - 6.0)
            .collect();
        let labels: Vec<i64> = (0..n).map(|i| (i * 31 % k) as i64).collect();
        let run = |threads: usize| {
            crate::parallel::set_num_threads(threads);
            let mut g = vec![0.0f32; n * k];
            let s = cce_batch(
                Logits::Separate(&x),
                Idx::Index {
                    labels: &labels,
                    ignore_index: -100,
                },
                &spec(k),
                CceOutputs {
                    losses: None,
                    lse: None,
                    grad: Some(&mut g),
                    hess: None,
                },
            )
            .unwrap();
            (s, g)
        };
        let (s1, g1) = run(1);
        let (s2, g2) = run(2);
        let (s3, g3) = run(3);
        assert_eq!(s1, s2);
        assert_eq!(s1, s3);
        assert_eq!(g1, g2);
        assert_eq!(g1, g3);
    }

    /// The row loss (CE + z-loss) of `c·tanh(x/c)` written out in f64.
    fn naive_capped(x: &[f64], t: usize, z: f64, cap: f64) -> f64 {
        let y: Vec<f64> = x.iter().map(|v| cap * (v / cap).tanh()).collect();
        let m = y.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + y.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        lse - y[t] + z * lse * lse
    }

    #[test]
    fn z_loss_and_softcap_derivatives_match_finite_differences() {
        let k = 6;
        let x: Vec<f64> = (0..k).map(|j| ((j * 7 % 5) as f64) * 1.3 - 2.5).collect();
        let (t, z, cap) = (2, 0.3, 2.0);
        let spec = CceSpec {
            z_loss: z,
            softcap: Some(cap),
            ..spec(k)
        };
        let mut g = vec![0.0; k];
        let mut h = vec![0.0; k];
        let batch = cce_batch(
            Logits::Separate(&x),
            Idx::Index {
                labels: &[t as i64],
                ignore_index: -100,
            },
            &spec,
            CceOutputs {
                losses: None,
                lse: None,
                grad: Some(&mut g),
                hess: Some(&mut h),
            },
        )
        .unwrap();
        let want = naive_capped(&x, t, z, cap);
        assert!((batch.loss + batch.z - want).abs() < 1e-13 * want.abs());
        let d = 1e-4;
        for j in 0..k {
            let at = |dx: f64| {
                let mut v = x.clone();
                v[j] += dx;
                naive_capped(&v, t, z, cap)
            };
            let fd = (at(d) - at(-d)) / (2.0 * d);
            let fd2 = (at(d) - 2.0 * at(0.0) + at(-d)) / (d * d);
            assert!((g[j] - fd).abs() < 1e-8, "grad {j}: {} vs {fd}", g[j]);
            assert!((h[j] - fd2).abs() < 1e-5, "hess {j}: {} vs {fd2}", h[j]);
        }
    }

    #[test]
    fn softcap_in_place_equals_separate_and_is_thread_independent() {
        let (n, k) = (2500, 53);
        let x: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7919 % 1000) as f32) * 0.05 - 25.0)
            .collect();
        let labels: Vec<i64> = (0..n).map(|i| (i * 31 % k) as i64).collect();
        let spec = CceSpec {
            z_loss: 1e-3,
            softcap: Some(7.0),
            ..spec(k)
        };
        let idx = Idx::Index {
            labels: &labels,
            ignore_index: -100,
        };
        let run = |threads: usize, in_place: bool| {
            crate::parallel::set_num_threads(threads);
            let mut g = if in_place {
                x.clone()
            } else {
                vec![0.0f32; n * k]
            };
            let logits = if in_place {
                Logits::InGrad
            } else {
                Logits::Separate(&x)
            };
            let out = CceOutputs {
                losses: None,
                lse: None,
                grad: Some(&mut g),
                hess: None,
            };
            (cce_batch(logits, idx, &spec, out).unwrap(), g)
        };
        let (s1, g1) = run(1, false);
        for (threads, in_place) in [(2, false), (3, false), (1, true), (2, true)] {
            let (s, g) = run(threads, in_place);
            assert_eq!(s, s1);
            assert_eq!(g, g1);
        }
    }

    #[test]
    fn inconsistent_batches_are_errors_not_panics() {
        let x = [0.0f32; 12];
        let labels = [0i64, 1, 2, 0];
        let idx = |labels| Idx::Index {
            labels,
            ignore_index: -100,
        };
        let none = || CceOutputs::<f32> {
            losses: None,
            lse: None,
            grad: None,
            hess: None,
        };
        let run = |x: &[f32], t, k, out| cce_batch(Logits::Separate(x), t, &spec(k), out);
        assert!(matches!(
            run(&x, idx(&labels), 0, none()),
            Err(Error::Classes { .. })
        ));
        assert!(matches!(
            run(&x, idx(&labels), 5, none()),
            Err(Error::Classes { .. })
        ));
        assert!(matches!(
            run(&x, idx(&labels[..3]), 3, none()),
            Err(Error::Size { .. })
        ));
        assert!(matches!(
            run(&x, idx(&[0, 1, 7, 0]), 3, none()),
            Err(Error::Label { .. })
        ));
        assert!(matches!(
            run(&x, Targets::Probs(&[0.5f64; 9]), 3, none()),
            Err(Error::Size { .. })
        ));
        let mut short = [0.0f32; 11];
        let out = CceOutputs {
            grad: Some(&mut short),
            ..none()
        };
        assert!(matches!(
            run(&x, idx(&labels), 3, out),
            Err(Error::Size { arg: "out", .. })
        ));
        let in_place = cce_batch(Logits::InGrad, idx(&labels), &spec(3), none());
        assert_eq!(in_place, Err(Error::InPlace { arg: "out" }));
    }
}
