//! The cross-entropy variants: focal, sigmoid focal, poly-1, generalized CE, energy margin.
//!
//! **Softmax family** (focal, poly-1, generalized CE). Each is `Σ_k q_k α_k g(p_k)` for a
//! per-class function `g` of `p = softmax(x)`, a target distribution `q` and class factors
//! `α` (focal only; 1 otherwise). With `h(p) = −g'(p)·p`, the gradient is
//!
//! `∂/∂x_j = p_j H − q_j α_j h(p_j)`, `H = Σ_k q_k α_k h(p_k)`,
//!
//! so for a hard target `t` (no label smoothing) it is the cross-entropy gradient
//! `p − e_t` times the row scalar `α_t h(p_t)`: one pass for the maximum, one for the
//! exponentials (stored in the gradient buffer), one rescaling them, as plain cross-entropy.
//! With `L = −log p`, `u = 1 − p`:
//!
//! * focal (Lin et al. 2017): `g = u^γ L`, `h = u^γ (1 + γ p L / u)`;
//! * poly-1 (Leng et al. 2022): `g = L + ε u`, `h = 1 + ε p`;
//! * generalized CE (Zhang & Sabuncu 2018): `g = (1 − p^q) / q`, `h = p^q`.
//!
//! Numerics: `L = (m − x) + log S` with `log S` the `log1p` of the non-maximal mass, and
//! `u` of a maximal class is that mass over `S` (not `1 − p` by subtraction; a non-maximal
//! class has `p < 1/2`, where the subtraction is exact enough), so `u^γ` and `L` keep full
//! relative precision as `p → 1`, and `L / u → 1` stays finite. `p^q = exp(−q L)` and
//! `1 − p^q = −expm1(−q L)`. Every term of `h` is non-negative for focal, so nothing
//! cancels; at a maximal class the gradient is `−h_j u_j + p_j (H − h_j)` with `H − h_j`
//! summed from the other classes. Terms whose target mass is exactly zero are skipped (a
//! masked `-inf` class costs nothing unless targeted).
//!
//! **Sigmoid focal** (torchvision's): elementwise `α_t · BCE(z, y) · w^γ` with
//! `w = y σ(−z) + (1 − y) σ(z)` (`1 − p_t`, a convex combination: no cancellation) and
//! `BCE = y softplus(−z) + (1 − y) softplus(z)` from `log σ(±z)` in float64.
//!
//! **Energy margin** (Liu et al. 2020): `relu(E − m)²` (in-distribution rows) or
//! `relu(m − E)²` (outliers) with `E = −T·logsumexp(x/T) = −m_x − T log Σ exp((x − m_x)/T)`;
//! `∂E/∂x = −softmax(x/T)`.

use crate::batch::{self, Logits, RowTarget, Targets};
use crate::element::Element;
use crate::error::{check_len, rows_of, try_vec, Error};
use crate::parallel::{map_jobs, ordered_sum, rows_per_chunk, split_opt, CHUNK_ELEMS};
use crate::real::{exp_sum, row_max, widened, Real};
use crate::rowstats::{ExpSum, RowStats};
use crate::simd::{dispatch, exp_nonpositive, log1p_unit, F32Vec, SimdOp, FLUSH};

/// Which loss of the softmax family, with its parameter.
#[derive(Clone, Copy, Debug)]
pub enum Family {
    /// `γ ≥ 0`.
    Focal { gamma: f64 },
    /// Any finite `ε`.
    Poly1 { epsilon: f64 },
    /// `q ∈ (0, 1]`.
    Gce { q: f64 },
}

impl Family {
    /// By how much this loss can multiply a relative error in `S` (in `L` and in `1 − p`),
    /// where the cheaper bounded kernel may serve its gradient rows: `1 + γ` for the focal
    /// loss with `γ ≤ 2` (`(1 − p)^γ`), 1 for poly-1 with `ε ≥ 0` and for GCE; `None`
    /// (exact sums) for larger `γ` and for a negative `ε` (`L + ε(1 − p)` cancels).
    #[inline(always)]
    fn loose_weight(self) -> Option<f64> {
        match self {
            Family::Focal { gamma } if gamma <= 2.0 => Some(1.0 + gamma),
            Family::Poly1 { epsilon } if epsilon >= 0.0 => Some(1.0),
            Family::Gce { .. } => Some(1.0),
            _ => None,
        }
    }

    /// `(g(p), h(p))` of a class from `p`, `u = 1 − p` and `L = −log p` (all exact).
    #[inline(always)]
    fn terms(self, p: f64, u: f64, l: f64) -> (f64, f64) {
        match self {
            Family::Focal { gamma } => {
                let ug = pow_gamma(u, gamma);
                // γ p L / u: L / u → 1 as u → 0 (and p = 0 only for a masked class).
                let ratio = if u > 0.0 { l / u } else { 1.0 };
                let extra = if p == 0.0 || gamma == 0.0 {
                    0.0
                } else {
                    gamma * p * ratio
                };
                (ug * l, ug * (1.0 + extra))
            }
            Family::Poly1 { epsilon } => (l + epsilon * u, 1.0 + epsilon * p),
            Family::Gce { q } => {
                let pq = (-q * l).exp();
                (-(-q * l).exp_m1() / q, pq)
            }
        }
    }
}

/// Parameters shared by every row.
#[derive(Clone, Copy)]
pub struct FamilySpec<'a> {
    pub k: usize,
    pub family: Family,
    /// Per-class factors: one value for every class, or `K` (finite, non-negative).
    pub alpha: Option<&'a [f64]>,
    pub label_smoothing: f64,
    /// Divides the gradient (the mean's divisor; 1 for the other reductions).
    pub divisor: f64,
}

impl FamilySpec<'_> {
    #[inline(always)]
    fn alpha(&self, j: usize) -> f64 {
        match self.alpha {
            None => 1.0,
            Some([a]) => *a,
            Some(a) => a[j],
        }
    }
    /// `v / D`, as a product where `1 / D` is finite.
    #[inline(always)]
    fn per_divisor(&self, v: f64) -> f64 {
        let inv = 1.0 / self.divisor;
        if inv.is_finite() {
            v * inv
        } else {
            v / self.divisor
        }
    }
}

/// Output buffers: per-row losses (`N`) and the gradient (`N × K`).
pub struct Outputs<'a, T> {
    pub losses: Option<&'a mut [T]>,
    pub grad: Option<&'a mut [T]>,
}

/// Checks labels (each in `[0, K)` or `ignore_index`); returns the number of non-ignored rows.
pub fn check_labels(labels: &[i64], k: usize, ignore_index: i64) -> Result<usize, Error> {
    Ok(batch::check_labels(labels, k, ignore_index, None)? as usize)
}

/// `p`, `1 − p` of a class from its exponential `e = exp(x − m)` and the row's sum.
#[inline(always)]
fn p_and_u(e: f64, es: ExpSum) -> (f64, f64) {
    let p = e / es.total;
    let u = if e == 1.0 {
        es.rest / es.total
    } else {
        1.0 - p
    };
    (p, u)
}

/// One row of the softmax family: returns its loss, writes its gradient to `grad`.
fn family_row<C: Real, Y: Element>(
    x: &[C],
    target: RowTarget<'_, Y>,
    spec: &FamilySpec<'_>,
    grad: Option<&mut [C]>,
) -> f64 {
    let RowTarget::Index(t) = target else {
        if let RowTarget::Ignored = target {
            if let Some(g) = grad {
                g.fill(C::ZERO);
            }
            return 0.0;
        }
        return general_row(x, target, spec, grad);
    };
    if spec.label_smoothing != 0.0 {
        return general_row(x, target, spec, grad);
    }
    let a = spec.alpha(t);
    if a == 0.0 {
        if let Some(g) = grad {
            g.fill(C::ZERO);
        }
        return 0.0;
    }
    let m = row_max(x);
    let mut g = grad;
    let d = x[t].to_f64() - m;
    let es = match (g.as_deref_mut(), spec.family.loose_weight()) {
        // The gradient's exponentials from the cheaper kernel, its sum checked as in
        // `cross_entropy` against the row's cross-entropy `log S − d`, the bound scaled by
        // what the loss does to a relative error.
        (Some(store), Some(w)) => {
            let (es, bound) = C::exp_sum_loose_grad(x, m, Some(store));
            if es.loose_is_enough(bound * w, es.log_sum() - d, None) {
                es
            } else {
                exp_sum(x, m, None)
            }
        }
        (store, _) => exp_sum(x, m, store),
    };
    let st = RowStats {
        m,
        es,
        log_s: es.log_sum(),
    };
    let (p, u) = p_and_u(d.exp(), es);
    let l = -d + st.log_s;
    let (value, h) = spec.family.terms(p, u, l);
    if let Some(g) = g {
        // c·(p − e_t): every entry a rescaled exponential but the target's, −c (1 − p_t).
        let c = spec.per_divisor(a * h);
        C::scale(g, c / es.total);
        g[t] = C::from_f64(-c * u);
    }
    a * value
}

/// The general form `p_j H − q_j α_j h(p_j)` (label smoothing, probability targets).
fn general_row<C: Real, Y: Element>(
    x: &[C],
    target: RowTarget<'_, Y>,
    spec: &FamilySpec<'_>,
    grad: Option<&mut [C]>,
) -> f64 {
    let k = spec.k;
    let eps = spec.label_smoothing;
    let smooth = eps / k as f64;
    let q = |j: usize| -> f64 {
        match target {
            RowTarget::Index(t) => {
                if j == t {
                    (1.0 - eps) + smooth
                } else {
                    smooth
                }
            }
            RowTarget::Probs(y) => (1.0 - eps) * y[j].to_f64() + smooth,
            RowTarget::Ignored => 0.0,
        }
    };
    let m = row_max(x);
    let mut g = grad;
    let es = exp_sum(x, m, g.as_deref_mut());
    let log_s = es.log_sum();
    // (weighted h, loss term) of class j.
    let class = |j: usize, qj: f64| -> (f64, f64) {
        let d = x[j].to_f64() - m;
        let (p, u) = p_and_u(d.exp(), es);
        let (value, h) = spec.family.terms(p, u, -d + log_s);
        let w = qj * spec.alpha(j);
        (w * h, w * value)
    };
    let (mut loss, mut h_off, mut h_at) = (0.0, 0.0, 0.0);
    for (j, &xj) in x.iter().enumerate() {
        let qj = q(j);
        if qj == 0.0 || spec.alpha(j) == 0.0 {
            continue;
        }
        let (h, v) = class(j, qj);
        loss += v;
        if xj.to_f64() == m {
            h_at += h;
        } else {
            h_off += h;
        }
    }
    if let Some(g) = g {
        let total_h = h_off + h_at;
        for (j, gv) in g.iter_mut().enumerate() {
            let (p, u) = p_and_u(gv.to_f64(), es);
            let qj = q(j);
            let hj = if qj == 0.0 || spec.alpha(j) == 0.0 {
                0.0
            } else {
                class(j, qj).0
            };
            let v = if x[j].to_f64() == m {
                -hj * u + p * (h_off + (h_at - hj))
            } else {
                p * total_h - hj
            };
            *gv = C::from_f64(spec.per_divisor(v));
        }
    }
    loss
}

/// One chunk of consecutive rows: its logits (`None`: in the gradient buffer) and outputs.
struct Chunk<'a, C, O> {
    row0: usize,
    x: Option<&'a [C]>,
    grad: Option<&'a mut [C]>,
    losses: Option<&'a mut [O]>,
}

/// What a batch driver needs from a row kernel: the loss of row `r` (of the whole batch)
/// of logits `x`, its gradient written to `grad`.
trait RowKernel: Sync {
    fn k(&self) -> usize;
    fn row<C: Real>(&self, r: usize, x: &[C], grad: Option<&mut [C]>) -> f64;
}

/// The rows of a chunk computed in `C`, with per-row losses written as `O`; returns the sum
/// of the row losses. In place, each row is copied to a scratch row first.
fn run_chunk<C: Real, O: Element, R: RowKernel>(
    ch: Chunk<'_, C, O>,
    kern: &R,
) -> Result<f64, Error> {
    let k = kern.k();
    let Chunk {
        row0,
        x,
        mut grad,
        mut losses,
    } = ch;
    let len = x.map_or_else(|| grad.as_deref().map_or(0, |g| g.len()), |x| x.len());
    let rows = len / k;
    let mut scratch: Vec<C> = if x.is_none() {
        try_vec(k, C::ZERO)?
    } else {
        Vec::new()
    };
    let mut sum = 0.0;
    for r in 0..rows {
        let span = r * k..(r + 1) * k;
        let g = grad.as_deref_mut().map(|g| &mut g[span.clone()]);
        let loss = match x {
            Some(x) => kern.row(row0 + r, &x[span], g),
            None => {
                let g = g.expect("checked: in place has the gradient");
                scratch.copy_from_slice(g);
                kern.row(row0 + r, &scratch, Some(g))
            }
        };
        sum += loss;
        if let Some(l) = losses.as_deref_mut() {
            l[r] = O::from_f64(loss);
        }
    }
    Ok(sum)
}

/// [`run_chunk`] for a type computed in a wider one: the chunk's logits are widened into a
/// scratch copy, the gradient computed there and rounded once into the output.
fn run_chunk_widened<T: Real, R: RowKernel>(ch: Chunk<'_, T, T>, kern: &R) -> Result<f64, Error> {
    let Chunk {
        row0,
        x,
        grad,
        losses,
    } = ch;
    let src = x.or(grad.as_deref()).unwrap_or(&[]);
    let xw = widened(src)?.expect("a widened type");
    let zero = <T::Work as Element>::ZERO;
    let mut gw = grad.as_ref().map(|g| try_vec(g.len(), zero)).transpose()?;
    let wide = Chunk {
        row0,
        x: Some(&xw[..]),
        grad: gw.as_deref_mut(),
        losses,
    };
    let sum = run_chunk::<T::Work, T, R>(wide, kern)?;
    if let (Some(g), Some(gw)) = (grad, &gw) {
        T::narrow(gw, g);
    }
    Ok(sum)
}

/// Rows of `kern.k()` logits in deterministic chunks on the pool; the sum of the row losses
/// (summed in chunk order: the same for any thread count). `n` rows, sizes checked.
fn run_batch<T: Real, R: RowKernel>(
    logits: Logits<'_, T>,
    n: usize,
    kern: &R,
    out: Outputs<'_, T>,
) -> Result<f64, Error> {
    let k = kern.k();
    let rpc = rows_per_chunk(k);
    let n_chunks = n.div_ceil(rpc);
    let xs: Vec<Option<&[T]>> = match logits {
        Logits::Separate(x) => x.chunks((rpc * k).max(1)).map(Some).collect(),
        Logits::InGrad => vec![None; n_chunks],
    };
    let grads = split_opt(out.grad, rpc * k, n_chunks);
    let losses = split_opt(out.losses, rpc, n_chunks);
    let jobs: Vec<Chunk<'_, T, T>> = xs
        .into_iter()
        .zip(grads)
        .zip(losses)
        .enumerate()
        .map(|(c, ((x, grad), losses))| Chunk {
            row0: c * rpc,
            x,
            grad,
            losses,
        })
        .collect();
    let partials = map_jobs(jobs, n * k, |ch| {
        if T::NATIVE {
            run_chunk::<T, T, R>(ch, kern)
        } else {
            run_chunk_widened(ch, kern)
        }
    })?;
    Ok(ordered_sum(
        &partials.into_iter().collect::<Result<Vec<_>, _>>()?,
    ))
}

/// The number of rows of a batch whose logits are `x` or, in place, in `grad`.
fn batch_rows<T>(logits: &Logits<'_, T>, k: usize, out: &Outputs<'_, T>) -> Result<usize, Error> {
    let len = match logits {
        Logits::Separate(x) => x.len(),
        Logits::InGrad => out
            .grad
            .as_deref()
            .ok_or(Error::InPlace { arg: "out" })?
            .len(),
    };
    let n = rows_of(len, k)?;
    check_len(out.losses.as_deref(), n, "losses")?;
    check_len(out.grad.as_deref(), n * k, "out")?;
    Ok(n)
}

struct FamilyKernel<'a, Y> {
    targets: Targets<'a, Y>,
    spec: FamilySpec<'a>,
}

impl<Y: Element> RowKernel for FamilyKernel<'_, Y> {
    fn k(&self) -> usize {
        self.spec.k
    }
    #[inline]
    fn row<C: Real>(&self, r: usize, x: &[C], grad: Option<&mut [C]>) -> f64 {
        family_row(x, self.targets.row(r, self.spec.k), &self.spec, grad)
    }
}

/// Focal / poly-1 / generalized CE over a batch: fills the outputs, returns the sum of the
/// row losses. Inconsistent inputs are an [`Error`], checked before anything is written.
pub fn family_batch<T: Real, Y: Element>(
    logits: Logits<'_, T>,
    targets: Targets<'_, Y>,
    spec: &FamilySpec<'_>,
    out: Outputs<'_, T>,
) -> Result<f64, Error> {
    let k = spec.k;
    let n = batch_rows(&logits, k, &out)?;
    match targets {
        Targets::Index {
            labels,
            ignore_index,
        } => {
            check_len(Some(labels), n, "target")?;
            check_labels(labels, k, ignore_index)?;
        }
        Targets::Probs(y) => check_len(Some(y), n * k, "target")?,
    }
    match spec.alpha {
        None => {}
        Some(a) if a.len() == 1 => {}
        Some(a) => check_len(Some(a), k, "alpha")?,
    }
    let kern = FamilyKernel {
        targets,
        spec: *spec,
    };
    run_batch(logits, n, &kern, out)
}

/// Which side of the energy margin a batch is on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Side {
    /// In-distribution rows: `relu(E − m)²`.
    In,
    /// Outliers: `relu(m − E)²`.
    Out,
}

/// Parameters of an energy-margin batch.
#[derive(Clone, Copy, Debug)]
pub struct EnergySpec {
    pub k: usize,
    /// `T > 0`.
    pub temperature: f64,
    pub margin: f64,
    pub side: Side,
    /// Divides the gradient (the mean's divisor).
    pub divisor: f64,
}

impl RowKernel for EnergySpec {
    fn k(&self) -> usize {
        self.k
    }
    fn row<C: Real>(&self, _r: usize, x: &[C], grad: Option<&mut [C]>) -> f64 {
        let t = self.temperature;
        let m = row_max(x);
        let mut g = grad;
        let gap_of = |es: ExpSum| {
            let energy = -m - t * es.log_sum();
            match self.side {
                Side::In => energy - self.margin,
                Side::Out => self.margin - energy,
            }
        };
        let (es, gap) = if t == 1.0 {
            // The cheaper kernel's sum (and exponentials, for the gradient), kept where the
            // error it can leave in `log S` is small next to `|gap|` (rows near their margin
            // are summed again exactly).
            let (es, bound) = C::exp_sum_loose_grad(x, m, g.as_deref_mut());
            let gap = gap_of(es);
            if loose_gap_is_enough(es, bound, gap) {
                (es, gap)
            } else {
                let es = exp_sum(x, m, None);
                (es, gap_of(es))
            }
        } else {
            let es = scaled_exp_sum(x, m, t, g.as_deref_mut());
            (es, gap_of(es))
        };
        let v = if gap > 0.0 { gap } else { 0.0 };
        let v = if gap.is_nan() { gap } else { v };
        if let Some(g) = g {
            if v == 0.0 {
                g.fill(C::ZERO);
            } else {
                // ∂v²/∂x = ∓2v·softmax(x/T), the exponentials already in `g`.
                let sign = if self.side == Side::In { -2.0 } else { 2.0 };
                let inv = 1.0 / self.divisor;
                let c = if inv.is_finite() {
                    sign * v * inv
                } else {
                    sign * v / self.divisor
                };
                C::scale(g, c / es.total);
            }
        }
        v * v
    }
}

/// Whether a sum from the cheaper kernel, with `bound` on what rounding `x − m` adds to
/// `S − 1`, is good enough for an energy-margin row: the error of `log S`
/// ([`ExpSum::loose_log_error`]) is an error in the gap. A positive gap's loss `gap²` must
/// stay within `2^-21` relative (twice the error within `2^-21·gap`); a negative gap only
/// needs its sign (the loss and gradient are then 0).
#[inline(always)]
fn loose_gap_is_enough(es: ExpSum, bound: f64, gap: f64) -> bool {
    if bound.is_nan() || es.total.is_nan() {
        return true; // a NaN row stays NaN
    }
    let err = es.loose_log_error(bound);
    if gap > 0.0 {
        2.0 * err <= gap * (1.0 / 2_097_152.0)
    } else {
        2.0 * err < -gap
    }
}

/// `Σ exp((x_j − m) / T)` in f64, kept as [`ExpSum`], writing each term to `store`.
fn scaled_exp_sum<C: Real>(x: &[C], m: f64, t: f64, store: Option<&mut [C]>) -> ExpSum {
    let (mut rest, mut ties) = (0.0f64, 0usize);
    let mut term = |v: C| -> f64 {
        let d = (v.to_f64() - m) / t;
        let e = d.exp();
        if d == 0.0 {
            ties += 1;
        } else {
            rest += e;
        }
        e
    };
    match store {
        Some(out) => out
            .iter_mut()
            .zip(x)
            .for_each(|(o, &v)| *o = C::from_f64(term(v))),
        None => x.iter().for_each(|&v| {
            term(v);
        }),
    }
    let rest = if ties == 0 {
        f64::NAN
    } else {
        rest + (ties - 1) as f64
    };
    ExpSum {
        total: 1.0 + rest,
        rest,
    }
}

/// The sum over rows of `relu(E − m)²` (or `relu(m − E)²`), the gradient into `grad`.
pub fn energy_batch<T: Real>(
    logits: Logits<'_, T>,
    spec: &EnergySpec,
    grad: Option<&mut [T]>,
) -> Result<f64, Error> {
    let out = Outputs { losses: None, grad };
    let n = batch_rows(&logits, spec.k, &out)?;
    run_batch(logits, n, spec, out)
}

/// Parameters of torchvision's sigmoid focal loss.
#[derive(Clone, Copy, Debug)]
pub struct SigmoidFocalSpec {
    /// In `[0, 1]`, or negative: no balancing.
    pub alpha: f64,
    pub gamma: f64,
    /// Multiplies the gradient (`1/N` for the mean).
    pub scale: f64,
}

/// `w^γ`, with the common exponents as products.
#[inline(always)]
fn pow_gamma(w: f64, gamma: f64) -> f64 {
    if gamma == 2.0 {
        w * w
    } else if gamma == 0.0 {
        1.0
    } else if gamma == 1.0 {
        w
    } else {
        w.powf(gamma)
    }
}

/// Loss and derivative of one element (logit `z`, target `y ∈ [0, 1]`).
#[cfg(test)]
fn sigmoid_focal(z: f64, y: f64, spec: &SigmoidFocalSpec) -> (f64, f64) {
    sigmoid_focal_e(z, (-z.abs()).exp(), y, spec)
}

/// [`sigmoid_focal`] given `e = exp(−|z|)`.
#[inline(always)]
fn sigmoid_focal_e(z: f64, e: f64, y: f64, spec: &SigmoidFocalSpec) -> (f64, f64) {
    // With e = exp(−|z|): σ(|z|) = 1/(1 + e), σ(−|z|) = e/(1 + e),
    // log σ(|z|) = −log1p(e), log σ(−|z|) = −|z| − log1p(e).
    let abs = z.abs();
    let l1p = e.ln_1p();
    let inv = 1.0 / (1.0 + e);
    let (big, small, log_big, log_small) = (inv, e * inv, -l1p, -abs - l1p);
    let (s, sn, log_s, log_sn) = if z >= 0.0 {
        (big, small, log_big, log_small)
    } else {
        (small, big, log_small, log_big)
    };
    // Terms of zero weight are skipped (z = ±inf with a hard target is no 0·inf).
    let mut bce = 0.0;
    if y != 0.0 {
        bce -= y * log_s;
    }
    if y != 1.0 {
        bce -= (1.0 - y) * log_sn;
    }
    let bce = if z.is_nan() { z } else { bce };
    let w = y * sn + (1.0 - y) * s;
    let gamma = spec.gamma;
    let wg = pow_gamma(w, gamma);
    let a = if spec.alpha >= 0.0 {
        spec.alpha * y + (1.0 - spec.alpha) * (1.0 - y)
    } else {
        1.0
    };
    // dBCE/dz = σ(z) − y = (1 − y) σ(z) − y σ(−z); dw/dz = σ(z) σ(−z) (1 − 2y), |dw/dz| ≤ w.
    let dbce = (1.0 - y) * s - y * sn;
    let extra = if gamma == 0.0 || bce == 0.0 || w <= 0.0 {
        0.0
    } else {
        gamma * bce * (s * sn * (1.0 - 2.0 * y) / w)
    };
    (a * bce * wg, a * wg * (dbce + extra))
}

/// `x` as a slice of `E` when `T` is `E`.
fn same_type<T: 'static, E: 'static>(x: &[T]) -> Option<&[E]> {
    (std::any::TypeId::of::<T>() == std::any::TypeId::of::<E>()).then(|| {
        // SAFETY: `T` and `E` are the same type, so the cast changes nothing.
        unsafe { std::slice::from_raw_parts(x.as_ptr().cast::<E>(), x.len()) }
    })
}

/// See [`same_type`].
fn same_type_mut<T: 'static, E: 'static>(x: &mut [T]) -> Option<&mut [E]> {
    (std::any::TypeId::of::<T>() == std::any::TypeId::of::<E>()).then(|| {
        // SAFETY: `T` and `E` are the same type; the borrow of `x` moves into the result.
        unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr().cast::<E>(), x.len()) }
    })
}

/// The float32 constants of a sigmoid focal batch.
#[derive(Clone, Copy)]
struct FocalConsts {
    /// `α`, or `-1` for none.
    alpha: f32,
    gamma: f32,
    scale: f32,
}

/// One vector of the sigmoid focal loss and its (unscaled) derivative in float32, for
/// `|z| ≤ −FLUSH` (no flushed exponential) and `γ ∈ {0, 1, 2}` (powers as products): the
/// formulas of [`sigmoid_focal_e`] with one `exp`, one division and one `log1p` per element.
/// Every sum is of terms of one sign, and nothing is subtracted from 1, so each lane is
/// within a few ulp. `hard`: every target is exactly 0 or 1 (the short form).
#[inline(always)]
unsafe fn sigmoid_focal_vec<V: F32Vec>(z: V, y: V, c: &FocalConsts, hard: bool) -> (V, V) {
    let zero = V::splat(0.0);
    let one = V::splat(1.0);
    let e = exp_nonpositive(zero.sub(z.abs()));
    let w1 = one.add(e);
    let inv = one.div(w1);
    let l = log1p_unit(e, w1, inv);
    let neg = z.lt(zero);
    let small = e.mul(inv);
    // σ(z), σ(−z), softplus(z) = −log σ(−z), softplus(−z) = −log σ(z).
    let s = V::select(neg, small, inv);
    let sn = V::select(neg, inv, small);
    let sp_pos = zero.max_keep_nan(z).add(l);
    let sp_neg = zero.max_keep_nan(zero.sub(z)).add(l);
    let (bce, w, dbce, sign, a) = if hard {
        let pos = y.gt(V::splat(0.5));
        let a = if c.alpha < 0.0 {
            one
        } else {
            V::select(pos, V::splat(c.alpha), V::splat(1.0 - c.alpha))
        };
        (
            V::select(pos, sp_neg, sp_pos),
            V::select(pos, sn, s),
            V::select(pos, zero.sub(sn), s),
            V::select(pos, V::splat(-1.0), one),
            a,
        )
    } else {
        let ny = one.sub(y);
        let a = if c.alpha < 0.0 {
            one
        } else {
            V::splat(c.alpha)
                .mul(y)
                .add(V::splat(1.0 - c.alpha).mul(ny))
        };
        (
            y.mul(sp_neg).add(ny.mul(sp_pos)),
            y.mul(sn).add(ny.mul(s)),
            ny.mul(s).sub(y.mul(sn)),
            one.sub(y.add(y)),
            a,
        )
    };
    // w^γ and γ·w^(γ−1): dw/dz = σ(z)σ(−z)(1 − 2y), so d(w^γ)/dz needs no division by w.
    let (wg, dwg) = match c.gamma as u32 {
        0 => (one, zero),
        1 => (w, one),
        _ => (w.mul(w), w.add(w)),
    };
    let a_bce = a.mul(bce);
    let loss = a_bce.mul(wg);
    let grad = a
        .mul(wg.mul(dbce))
        .add(a_bce.mul(dwg).mul(s.mul(sn)).mul(sign));
    (loss, grad)
}

/// The float32 sigmoid focal kernel over a chunk: `z` (null: in `grad`), targets `y`;
/// returns the loss sum, or the position of the chunk's first target outside `[0, 1]`
/// (found before the vector holding it is written; earlier vectors are written).
struct SigmoidFocalChunk<'a> {
    z: *const f32,
    y: &'a [f32],
    c: FocalConsts,
    spec: SigmoidFocalSpec,
    losses: Option<&'a mut [f32]>,
    grad: Option<&'a mut [f32]>,
}

static ONES: [f32; 16] = [1.0; 16];

impl SimdOp for SigmoidFocalChunk<'_> {
    type Output = Result<f64, usize>;
    #[inline(always)]
    unsafe fn eval<V: F32Vec>(self) -> Result<f64, usize> {
        let SigmoidFocalChunk {
            z,
            y,
            c,
            spec,
            mut losses,
            mut grad,
        } = self;
        let n = y.len();
        let lanes = V::LANES;
        let mut acc = V::acc_zero();
        let mut extra = 0.0f64;
        let mut i = 0;
        // SAFETY: `z`, `y` and the outputs hold `n` elements (the caller's contract); full
        // vectors are read and written at `i + LANES ≤ n`, the tail masked. In place, a
        // vector's logits are read before its gradient overwrites them.
        unsafe {
            let limit = V::splat(-FLUSH);
            let scale = V::splat(c.scale);
            while i < n {
                let len = lanes.min(n - i);
                let (zv, yv) = if len == lanes {
                    (V::load(z.add(i)), V::load(y.as_ptr().add(i)))
                } else {
                    (
                        V::load_partial(z.add(i), len, 0.0),
                        V::load_partial(y.as_ptr().add(i), len, 0.0),
                    )
                };
                let hard = yv.all_binary();
                if !hard && yv.any_outside_unit() {
                    let bad = y[i..i + len].iter().position(|v| !(0.0..=1.0).contains(v));
                    return Err(i + bad.expect("a lane outside [0, 1]"));
                }
                // |z| past float32's exponent range, or NaN: this vector in float64.
                let abs = zv.abs();
                if V::any(abs.gt(limit)) || V::any(abs.is_nan()) {
                    let mut zs = [0.0f32; 16];
                    std::ptr::copy_nonoverlapping(z.add(i), zs.as_mut_ptr(), len);
                    for j in 0..len {
                        let zj = zs[j] as f64;
                        let (l, d) = sigmoid_focal_e(zj, (-zj.abs()).exp(), y[i + j] as f64, &spec);
                        extra += l;
                        if let Some(o) = losses.as_deref_mut() {
                            o[i + j] = l as f32;
                        }
                        if let Some(g) = grad.as_deref_mut() {
                            g[i + j] = (d * spec.scale) as f32;
                        }
                    }
                    i += len;
                    continue;
                }
                let (l, g) = sigmoid_focal_vec(zv, yv, &c, hard);
                if len == lanes {
                    acc = V::acc_add(acc, l);
                    if let Some(o) = losses.as_deref_mut() {
                        l.store(o.as_mut_ptr().add(i));
                    }
                    if let Some(o) = grad.as_deref_mut() {
                        g.mul(scale).store(o.as_mut_ptr().add(i));
                    }
                } else {
                    acc = V::acc_add(acc, l.mul(V::load_partial(ONES.as_ptr(), len, 0.0)));
                    if let Some(o) = losses.as_deref_mut() {
                        l.store_partial(o.as_mut_ptr().add(i), len);
                    }
                    if let Some(o) = grad.as_deref_mut() {
                        g.mul(scale).store_partial(o.as_mut_ptr().add(i), len);
                    }
                }
                i += len;
            }
            Ok(V::acc_sum(acc) + extra)
        }
    }
}

/// [`sigmoid_focal_batch`] for float32 targets: the float32 vector kernel when the logits
/// are float32 too (`Some`), else `None` with nothing touched. Sizes are checked.
fn sigmoid_focal_f32<T: Element>(
    logits: Logits<'_, T>,
    y: &[f32],
    spec: &SigmoidFocalSpec,
    out: Outputs<'_, T>,
) -> Result<Option<f64>, Error> {
    let logits = match logits {
        Logits::Separate(x) => match same_type::<T, f32>(x) {
            Some(x) => Logits::Separate(x),
            None => return Ok(None),
        },
        Logits::InGrad => Logits::InGrad,
    };
    let grad: Option<&mut [f32]> = match out.grad {
        Some(g) => match same_type_mut::<T, f32>(g) {
            Some(g) => Some(g),
            None => return Ok(None),
        },
        None => None,
    };
    let losses: Option<&mut [f32]> = match out.losses {
        Some(l) => match same_type_mut::<T, f32>(l) {
            Some(l) => Some(l),
            None => return Ok(None),
        },
        None => None,
    };
    let c = FocalConsts {
        alpha: if spec.alpha < 0.0 {
            -1.0
        } else {
            spec.alpha as f32
        },
        gamma: spec.gamma as f32,
        scale: spec.scale as f32,
    };
    let n = y.len();
    let n_chunks = n.div_ceil(CHUNK_ELEMS);
    let xs: Vec<Option<&[f32]>> = match logits {
        Logits::Separate(x) => x.chunks(CHUNK_ELEMS).map(Some).collect(),
        Logits::InGrad => vec![None; n_chunks],
    };
    let grads = split_opt(grad, CHUNK_ELEMS, n_chunks);
    let losses = split_opt(losses, CHUNK_ELEMS, n_chunks);
    let jobs: Vec<_> = xs
        .into_iter()
        .zip(grads)
        .zip(losses)
        .zip(y.chunks(CHUNK_ELEMS))
        .collect();
    let partials = map_jobs(jobs, n, |(((x, grad), losses), y)| {
        let z = match (x, grad.as_deref()) {
            (Some(x), _) => x.as_ptr(),
            (None, Some(g)) => g.as_ptr(),
            (None, None) => return Ok(0.0),
        };
        dispatch(SigmoidFocalChunk {
            z,
            y,
            c,
            spec: *spec,
            losses,
            grad,
        })
    })?;
    let mut sums = Vec::with_capacity(partials.len());
    for (chunk, p) in partials.into_iter().enumerate() {
        match p {
            Ok(s) => sums.push(s),
            Err(at) => {
                let position = chunk * CHUNK_ELEMS + at;
                return Err(Error::Target {
                    position,
                    value: y[position] as f64,
                });
            }
        }
    }
    Ok(Some(ordered_sum(&sums)))
}

/// Elementwise sigmoid focal loss over flat logits (`None`: in the gradient buffer) and
/// targets; fills the outputs and returns the sum of the element losses.
pub fn sigmoid_focal_batch<T: Element, Y: Element>(
    logits: Logits<'_, T>,
    target: &[Y],
    spec: &SigmoidFocalSpec,
    out: Outputs<'_, T>,
) -> Result<f64, Error> {
    let n = target.len();
    match logits {
        Logits::Separate(x) => check_len(Some(x), n, "logits")?,
        Logits::InGrad => {
            out.grad.as_deref().ok_or(Error::InPlace { arg: "out" })?;
        }
    }
    check_len(out.losses.as_deref(), n, "losses")?;
    check_len(out.grad.as_deref(), n, "out")?;
    let f32_logits = same_type::<T, f32>(&[]).is_some();
    if let (Some(y), true) = (same_type::<Y, f32>(target), f32_logits) {
        if matches!(spec.gamma, 0.0 | 1.0 | 2.0) {
            let sum = sigmoid_focal_f32(logits, y, spec, out)?;
            return Ok(sum.expect("float32 logits"));
        }
    }
    if let Some(position) = target
        .iter()
        .position(|y| !(0.0..=1.0).contains(&y.to_f64()))
    {
        let value = target[position].to_f64();
        return Err(Error::Target { position, value });
    }
    let n_chunks = n.div_ceil(CHUNK_ELEMS);
    let xs: Vec<Option<&[T]>> = match logits {
        Logits::Separate(x) => x.chunks(CHUNK_ELEMS).map(Some).collect(),
        Logits::InGrad => vec![None; n_chunks],
    };
    let grads = split_opt(out.grad, CHUNK_ELEMS, n_chunks);
    let losses = split_opt(out.losses, CHUNK_ELEMS, n_chunks);
    let jobs: Vec<_> = xs
        .into_iter()
        .zip(grads)
        .zip(losses)
        .zip(target.chunks(CHUNK_ELEMS))
        .collect();
    let partials = map_jobs(jobs, n, |(((x, mut grad), mut losses), y)| {
        let mut sum = 0.0;
        // The exponentials of a block at a time, by the vectorised float64 `exp`.
        const BLOCK: usize = 64;
        let (mut zs, mut es) = ([0.0f64; BLOCK], [0.0f64; BLOCK]);
        for b0 in (0..y.len()).step_by(BLOCK) {
            let len = BLOCK.min(y.len() - b0);
            for j in 0..len {
                zs[j] = match (x, grad.as_deref()) {
                    (Some(x), _) => x[b0 + j].to_f64(),
                    (None, Some(g)) => g[b0 + j].to_f64(),
                    (None, None) => unreachable!("checked: in place has the gradient"),
                };
                es[j] = -zs[j].abs();
            }
            crate::simd::exp_f64_in_place(&mut es[..len]);
            for j in 0..len {
                let i = b0 + j;
                let (loss, d) = sigmoid_focal_e(zs[j], es[j], y[i].to_f64(), spec);
                sum += loss;
                if let Some(l) = losses.as_deref_mut() {
                    l[i] = T::from_f64(loss);
                }
                if let Some(g) = grad.as_deref_mut() {
                    g[i] = T::from_f64(d * spec.scale);
                }
            }
        }
        sum
    })?;
    Ok(ordered_sum(&partials))
}

#[cfg(test)]
mod tests {
    use super::*;

    type Idx<'a> = Targets<'a, f64>;

    fn spec(k: usize, family: Family) -> FamilySpec<'static> {
        FamilySpec {
            k,
            family,
            alpha: None,
            label_smoothing: 0.0,
            divisor: 1.0,
        }
    }

    /// Naive f64 softmax.
    fn softmax(x: &[f64]) -> Vec<f64> {
        let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = x.iter().map(|v| (v - m).exp()).sum();
        x.iter().map(|v| (v - m).exp() / s).collect()
    }

    fn naive_loss(x: &[f64], t: usize, family: Family) -> f64 {
        let p = softmax(x)[t];
        match family {
            Family::Focal { gamma } => -(1.0 - p).powf(gamma) * p.ln(),
            Family::Poly1 { epsilon } => -p.ln() + epsilon * (1.0 - p),
            Family::Gce { q } => (1.0 - p.powf(q)) / q,
        }
    }

    fn row_of(x: &[f64], t: usize, s: &FamilySpec<'_>) -> (f64, Vec<f64>) {
        let mut g = vec![0.0; x.len()];
        let l = family_row(x, RowTarget::<'_, f64>::Index(t), s, Some(&mut g));
        (l, g)
    }

    const FAMILIES: [Family; 4] = [
        Family::Focal { gamma: 2.0 },
        Family::Focal { gamma: 0.5 },
        Family::Poly1 { epsilon: 2.0 },
        Family::Gce { q: 0.7 },
    ];

    #[test]
    fn loss_and_gradient_match_naive_and_finite_differences() {
        let x = [0.3f64, -1.2, 2.0, 0.7, -0.1];
        for family in FAMILIES {
            for t in 0..x.len() {
                let (l, g) = row_of(&x, t, &spec(5, family));
                let want = naive_loss(&x, t, family);
                assert!((l - want).abs() <= 1e-13 * want.abs(), "{family:?} t={t}");
                for j in 0..x.len() {
                    let h = 1e-6;
                    let (mut a, mut b) = (x, x);
                    a[j] += h;
                    b[j] -= h;
                    let fd = (naive_loss(&a, t, family) - naive_loss(&b, t, family)) / (2.0 * h);
                    assert!((g[j] - fd).abs() < 1e-8, "{family:?} t={t} j={j}");
                }
            }
        }
    }

    #[test]
    fn general_form_equals_hard_target_form() {
        let x = [0.3f64, -1.2, 2.0, 0.7, -0.1];
        for family in FAMILIES {
            let s = spec(5, family);
            for t in 0..x.len() {
                let (l, g) = row_of(&x, t, &s);
                let mut onehot = [0.0f64; 5];
                onehot[t] = 1.0;
                let mut g2 = vec![0.0; 5];
                let l2 = general_row(&x, RowTarget::Probs(&onehot[..]), &s, Some(&mut g2));
                assert!((l - l2).abs() <= 1e-14 * l.abs().max(1e-300));
                for j in 0..5 {
                    assert!((g[j] - g2[j]).abs() < 1e-15, "{family:?} t={t} j={j}");
                }
            }
        }
    }

    #[test]
    fn confident_rows_keep_relative_precision() {
        // p_t = 1/(1 + e^-40): L ≈ e^-40, 1 − p ≈ e^-40.
        let x = [40.0f32, 0.0];
        let tiny = (-40.0f64).exp();
        let cases = [
            (Family::Focal { gamma: 2.0 }, tiny.powi(3)),
            (Family::Poly1 { epsilon: 2.0 }, 3.0 * tiny),
            (Family::Gce { q: 0.5 }, tiny),
        ];
        for (family, want) in cases {
            let l = family_row(&x, RowTarget::<'_, f64>::Index(0), &spec(2, family), None);
            assert!((l - want).abs() <= 1e-6 * want, "{family:?}: {l} vs {want}");
        }
    }

    #[test]
    fn sigmoid_focal_tails_are_exact() {
        let s = SigmoidFocalSpec {
            alpha: -1.0,
            gamma: 2.0,
            scale: 1.0,
        };
        // y = 1, z = 40: BCE = log1p(e^-40), w = σ(−40).
        let (l, _) = sigmoid_focal(40.0, 1.0, &s);
        let e = (-40.0f64).exp();
        let want = e.ln_1p() * (e / (1.0 + e)).powi(2);
        assert!((l - want).abs() <= 1e-14 * want);
        // Derivative against finite differences at a few points and targets.
        for &(z, y) in &[(0.3, 1.0), (-2.0, 0.0), (1.5, 0.3), (-0.7, 0.8)] {
            let (_, d) = sigmoid_focal(z, y, &s);
            let h = 1e-6;
            let fd = (sigmoid_focal(z + h, y, &s).0 - sigmoid_focal(z - h, y, &s).0) / (2.0 * h);
            assert!((d - fd).abs() < 1e-8, "z={z} y={y}");
        }
    }

    #[test]
    fn energy_gradient_matches_finite_differences() {
        let x = [1.0f64, -0.5, 2.5, 0.0];
        for (side, margin) in [(Side::In, -4.0), (Side::Out, -1.0)] {
            for temperature in [1.0, 0.7] {
                let s = EnergySpec {
                    k: 4,
                    temperature,
                    margin,
                    side,
                    divisor: 1.0,
                };
                let mut g = [0.0; 4];
                s.row(0, &x[..], Some(&mut g[..]));
                for j in 0..4 {
                    let h = 1e-6;
                    let (mut a, mut b) = (x, x);
                    a[j] += h;
                    b[j] -= h;
                    let fd = (s.row::<f64>(0, &a, None) - s.row::<f64>(0, &b, None)) / (2.0 * h);
                    assert!((g[j] - fd).abs() < 1e-7, "{side:?} T={temperature} j={j}");
                }
            }
        }
    }

    #[test]
    fn batch_is_independent_of_thread_count() {
        let (n, k) = (3000, 97);
        let x: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7919 % 1000) as f32) * 0.013 - 6.0)
            .collect();
        let labels: Vec<i64> = (0..n).map(|i| (i * 31 % k) as i64).collect();
        let run = |threads: usize| {
            crate::parallel::set_num_threads(threads);
            let mut g = vec![0.0f32; n * k];
            let s = family_batch(
                Logits::Separate(&x),
                Idx::Index {
                    labels: &labels,
                    ignore_index: -100,
                },
                &FamilySpec {
                    label_smoothing: 0.1,
                    ..spec(k, Family::Focal { gamma: 2.0 })
                },
                Outputs {
                    losses: None,
                    grad: Some(&mut g),
                },
            )
            .unwrap();
            (s, g)
        };
        let (s1, g1) = run(1);
        let (s2, g2) = run(3);
        assert_eq!(s1.to_bits(), s2.to_bits());
        assert_eq!(g1, g2);
    }

    #[test]
    fn inconsistent_batches_are_errors_not_panics() {
        let x = [0.0f32; 12];
        let idx = |labels| Idx::Index {
            labels,
            ignore_index: -100,
        };
        let none = || Outputs::<f32> {
            losses: None,
            grad: None,
        };
        let s = |k| spec(k, Family::Gce { q: 0.5 });
        let run = |t, k, out| family_batch(Logits::Separate(&x[..]), t, &s(k), out);
        assert!(matches!(
            run(idx(&[0, 1, 2, 0]), 5, none()),
            Err(Error::Classes { .. })
        ));
        assert!(matches!(
            run(idx(&[0, 1, 2]), 3, none()),
            Err(Error::Size { .. })
        ));
        assert!(matches!(
            run(idx(&[0, 1, 3, 0]), 3, none()),
            Err(Error::Label { .. })
        ));
        let alpha = [1.0, 2.0];
        let bad_alpha = family_batch(
            Logits::Separate(&x[..]),
            idx(&[0, 1, 2, 0]),
            &FamilySpec {
                alpha: Some(&alpha),
                ..s(3)
            },
            none(),
        );
        assert!(matches!(bad_alpha, Err(Error::Size { arg: "alpha", .. })));
        let in_place = family_batch(Logits::<f32>::InGrad, idx(&[0]), &s(3), none());
        assert_eq!(in_place, Err(Error::InPlace { arg: "out" }));
        let e = EnergySpec {
            k: 5,
            temperature: 1.0,
            margin: 0.0,
            side: Side::In,
            divisor: 1.0,
        };
        assert!(matches!(
            energy_batch(Logits::Separate(&x[..]), &e, None),
            Err(Error::Classes { .. })
        ));
        let sf = SigmoidFocalSpec {
            alpha: 0.25,
            gamma: 2.0,
            scale: 1.0,
        };
        let short = [0.0f64; 11];
        assert!(matches!(
            sigmoid_focal_batch(Logits::Separate(&x[..]), &short[..], &sf, none()),
            Err(Error::Size { .. })
        ));
        let mut y = [0.5f64; 12];
        y[7] = f64::NAN;
        assert!(matches!(
            sigmoid_focal_batch(Logits::Separate(&x[..]), &y[..], &sf, none()),
            Err(Error::Target { position: 7, .. })
        ));
    }
}
