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
//! Numerics: both loss terms are non-negative, so nothing cancels; `log S` is `log1p` of the
//! non-maximal exponentials (see [`crate::rowstats`]), so a confident, correct row whose loss is
//! 1e-30 keeps full relative precision; `1 − p_j` for a maximal logit is `(S − 1) / S`, not a
//! subtraction, so the target's gradient `−(1 − p_t)` keeps it too. Terms whose target mass
//! is exactly zero are skipped, so a masked (`-inf`) class costs nothing unless the target puts
//! mass on it (then the loss is `+inf`).

use crate::error::{check_len, rows_of, try_vec, Error};
use crate::parallel::{map_jobs, ordered_sum, rows_per_chunk, split_opt};
use crate::real::{exp_sum, row_max, Real};
use crate::rowstats::RowStats;

/// One row's target.
#[derive(Clone, Copy)]
pub enum RowTarget<'a, T> {
    /// The index equals `ignore_index`: loss, gradient and Hessian are zero.
    Ignored,
    /// A class index in `[0, K)`.
    Index(usize),
    /// A row of class probabilities (length `K`).
    Probs(&'a [T]),
}

/// The targets of a whole batch.
#[derive(Clone, Copy)]
pub enum Targets<'a, T> {
    /// One label per row, already checked with [`check_labels`].
    Index {
        labels: &'a [i64],
        ignore_index: i64,
    },
    /// `N × K` probabilities, row-major.
    Probs(&'a [T]),
}

/// Parameters shared by every row.
#[derive(Clone, Copy)]
pub struct CceSpec<'a> {
    pub k: usize,
    /// Per-class weights (length `K`), finite and non-negative.
    pub weight: Option<&'a [f64]>,
    pub label_smoothing: f64,
    /// Multiplies gradient and Hessian (`1 / divisor` for `reduction="mean"`).
    pub scale: f64,
    /// Compute logsumexp for ignored rows too.
    pub want_lse: bool,
}

impl CceSpec<'_> {
    #[inline(always)]
    fn w(&self, j: usize) -> f64 {
        self.weight.map_or(1.0, |w| w[j])
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

/// Loss and logsumexp of one row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowResult {
    pub loss: f64,
    pub lse: f64,
}

/// Checks every label (each in `[0, K)` or equal to `ignore_index`) and the weight's length,
/// and returns the `reduction="mean"` divisor: the sum of `weight[label]` over non-ignored
/// rows (their count without weights).
pub fn check_labels(
    labels: &[i64],
    k: usize,
    ignore_index: i64,
    weight: Option<&[f64]>,
) -> Result<f64, Error> {
    check_len(weight, k, "weight")?;
    let mut total = 0.0;
    for (position, &t) in labels.iter().enumerate() {
        if t == ignore_index {
            continue;
        }
        if t < 0 || t as u64 >= k as u64 {
            return Err(Error::Label {
                arg: "target",
                position,
                value: t,
                k,
                ignore_index: Some(ignore_index),
            });
        }
        total += weight.map_or(1.0, |w| w[t as usize]);
    }
    Ok(total)
}

/// Loss (and, into `derivs`, gradient / Hessian) of one row of logits.
pub fn cce_row<T: Real>(
    x: &[T],
    target: RowTarget<'_, T>,
    spec: &CceSpec<'_>,
    mut derivs: Derivs<'_, T>,
) -> RowResult {
    if let RowTarget::Ignored = target {
        if !spec.want_lse {
            return cce_row_finish(x, target, spec, derivs, RowStats::default());
        }
    }
    let m = row_max(x);
    let store: Option<&mut [T]> = match (&mut derivs, target) {
        (_, RowTarget::Ignored) | (Derivs::None, _) => None,
        (Derivs::Grad(g), _) | (Derivs::Both { grad: g, .. }, _) => Some(g),
        (Derivs::Hess(h), _) => Some(h),
    };
    let es = exp_sum(x, m, store);
    let st = RowStats {
        m,
        es,
        log_s: es.log_sum(),
    };
    cce_row_finish(x, target, spec, derivs, st)
}

/// The loss and derivatives of a row from its statistics; when derivatives are requested
/// (and the row is not ignored), the buffer that receives the gradient (else the Hessian)
/// already holds `exp(x_j − m)`.
pub fn cce_row_finish<T: Real>(
    x: &[T],
    target: RowTarget<'_, T>,
    spec: &CceSpec<'_>,
    mut derivs: Derivs<'_, T>,
    st: RowStats,
) -> RowResult {
    let k = x.len();
    let eps = spec.label_smoothing;
    let smooth = eps / k as f64;
    let RowStats { m, es, log_s } = st;
    if let (RowTarget::Index(t), 0.0) = (target, smooth) {
        match derivs {
            Derivs::None => return hard_target_row(x, t, spec, None, st),
            Derivs::Grad(g) => return hard_target_row(x, t, spec, Some(g), st),
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
            lse: m + log_s,
        };
    }

    // The weighted target distribution: q_j = base_j + [j == t]·c for an index target t.
    let q_prob = |y: &[T], j: usize| spec.w(j) * ((1.0 - eps) * y[j].to_f64() + smooth);
    // gap = Σ_{q_j≠0} q_j (m − x_j);  mass = Q = Σ q_j.
    let (gap, mass) = match target {
        RowTarget::Ignored => (0.0, 0.0),
        RowTarget::Index(t) => {
            let c = (1.0 - eps) * spec.w(t);
            let mut gap = if c != 0.0 {
                c * (m - x[t].to_f64())
            } else {
                0.0
            };
            let mut mass = c;
            if smooth != 0.0 {
                for (j, &xj) in x.iter().enumerate() {
                    let b = smooth * spec.w(j);
                    if b != 0.0 {
                        gap += b * (m - xj.to_f64());
                        mass += b;
                    }
                }
            }
            (gap, mass)
        }
        RowTarget::Probs(y) => {
            let (mut gap, mut mass) = (0.0, 0.0);
            for (j, &xj) in x.iter().enumerate() {
                let q = q_prob(y, j);
                if q != 0.0 {
                    gap += q * (m - xj.to_f64());
                    mass += q;
                }
            }
            (gap, mass)
        }
    };
    let loss = if mass != 0.0 { gap + mass * log_s } else { gap };

    let inv_s = 1.0 / es.total;
    let omp_max = es.rest * inv_s;
    let scale = spec.scale;
    // (gradient, Hessian) of element j from its stored exponential e.
    let derivs_at = |j: usize, e: f64| -> (f64, f64) {
        let p = e * inv_s;
        let omp = if x[j].to_f64() == m { omp_max } else { 1.0 - p };
        let g = match target {
            RowTarget::Index(t) => {
                let b = smooth * spec.w(j);
                if j == t {
                    let c = (1.0 - eps) * spec.w(t);
                    -c * omp + (mass - c) * p - b
                } else {
                    mass * p - b
                }
            }
            RowTarget::Probs(y) => mass * p - q_prob(y, j),
            RowTarget::Ignored => 0.0,
        };
        (scale * g, scale * mass * p * omp)
    };
    // The gradient from the exponentials stored in `g`; the same arithmetic whether or not
    // the Hessian is requested too, so results never depend on which outputs were asked for.
    let write_grad = |g: &mut [T]| match target {
        RowTarget::Index(t) if smooth == 0.0 => {
            // Hard target: every entry but the target's is a rescaled exponential.
            let e_t = g[t].to_f64();
            T::scale(g, scale * mass * inv_s);
            g[t] = T::from_f64(derivs_at(t, e_t).0);
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
    RowResult {
        loss,
        lse: m + log_s,
    }
}

/// The common case of [`cce_row_finish`], kept small so that short rows pay little per row:
/// a class-index target without label smoothing, loss and optionally the gradient
/// `scale·c·(p − onehot(t))`, `c = weight[t]`.
#[inline]
fn hard_target_row<T: Real>(
    x: &[T],
    t: usize,
    spec: &CceSpec<'_>,
    grad: Option<&mut [T]>,
    st: RowStats,
) -> RowResult {
    let c = spec.w(t);
    let xt = x[t].to_f64();
    let loss = if c != 0.0 {
        c * ((st.m - xt) + st.log_s)
    } else {
        0.0
    };
    if let Some(g) = grad {
        let inv_s = 1.0 / st.es.total;
        let e_t = g[t].to_f64();
        let one_minus_p = if xt == st.m {
            st.es.rest * inv_s
        } else {
            1.0 - e_t * inv_s
        };
        T::scale(g, spec.scale * c * inv_s);
        g[t] = T::from_f64(-spec.scale * c * one_minus_p);
    }
    RowResult {
        loss,
        lse: st.m + st.log_s,
    }
}

/// Output buffers of a batch; each is `N × K` (grad, hess) or `N` (losses, lse) long.
pub struct CceOutputs<'a, T> {
    pub losses: Option<&'a mut [T]>,
    pub lse: Option<&'a mut [T]>,
    pub grad: Option<&'a mut [T]>,
    pub hess: Option<&'a mut [T]>,
}

/// The logits of a batch: read-only, or the gradient buffer itself (in place: each row is
/// copied to a scratch row before its gradient overwrites it).
pub enum Logits<'a, T> {
    Separate(&'a [T]),
    InGrad,
}

/// Checks that the pieces of a batch fit together (sizes, labels, the in-place buffer) and
/// returns the number of rows.
fn check_batch<T>(
    logits: &Logits<'_, T>,
    targets: &Targets<'_, T>,
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
            check_labels(labels, k, ignore_index, spec.weight)?;
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

/// Runs a whole batch of rows of `spec.k` logits and returns the sum of the row losses (in
/// f64, summed in a fixed order, so it is the same for any thread count). Inconsistent
/// inputs are an [`Error`], checked before anything is written.
pub fn cce_batch<T: Real>(
    logits: Logits<'_, T>,
    targets: Targets<'_, T>,
    spec: &CceSpec<'_>,
    out: CceOutputs<'_, T>,
) -> Result<f64, Error> {
    let n = check_batch(&logits, &targets, spec, &out)?;
    let k = spec.k;
    let rpc = rows_per_chunk(k);
    let n_chunks = n.div_ceil(rpc);
    let in_place = matches!(logits, Logits::InGrad);
    let xs: Vec<Option<&[T]>> = match logits {
        Logits::Separate(x) => x.chunks((rpc * k).max(1)).map(Some).collect(),
        Logits::InGrad => vec![None; n_chunks],
    };
    let grads = split_opt(out.grad, rpc * k, n_chunks);
    let hesses = split_opt(out.hess, rpc * k, n_chunks);
    let losses = split_opt(out.losses, rpc, n_chunks);
    let lses = split_opt(out.lse, rpc, n_chunks);
    let jobs: Vec<_> = (0..n_chunks)
        .zip(xs)
        .zip(grads)
        .zip(hesses)
        .zip(losses.into_iter().zip(lses))
        .map(|((((c, x), g), h), (l, s))| (c, x, g, h, l, s))
        .collect();
    // Small rows are processed several at a time, one row per SIMD lane, where the element
    // type has such a kernel (float32); other rows one at a time.
    let block = T::block_rows(k);
    let partials = map_jobs(jobs, n * k, |(c, x, mut g, mut h, mut l, mut s)| {
        let row0 = c * rpc;
        let rows = rpc.min(n - row0);
        let mut scratch: Vec<T> = if in_place {
            try_vec(k * block.max(1), T::ZERO)?
        } else {
            Vec::new()
        };
        let mut stats = vec![RowStats::default(); block];
        let mut sum = 0.0;
        let mut r = 0;
        while r < rows {
            let span_rows = if block > 0 && r + block <= rows {
                block
            } else {
                1
            };
            let span = r * k..(r + span_rows) * k;
            let xs: &[T] = match x {
                Some(x) => &x[span.clone()],
                None => {
                    let gsrc = g.as_deref().expect("in-place needs the gradient buffer");
                    scratch[..span.len()].copy_from_slice(&gsrc[span.clone()]);
                    &scratch[..span.len()]
                }
            };
            if span_rows > 1 {
                let store = match (g.as_deref_mut(), h.as_deref_mut()) {
                    (Some(g), _) => Some(&mut g[span.clone()]),
                    (None, Some(h)) => Some(&mut h[span.clone()]),
                    (None, None) => None,
                };
                T::row_block_stats(xs, k, &mut stats, store);
            }
            for i in 0..span_rows {
                let rr = r + i;
                let row = rr * k..(rr + 1) * k;
                let xr = &xs[i * k..(i + 1) * k];
                let target = match targets {
                    Targets::Index {
                        labels,
                        ignore_index,
                    } => {
                        let t = labels[row0 + rr];
                        if t == ignore_index {
                            RowTarget::Ignored
                        } else {
                            RowTarget::Index(t as usize)
                        }
                    }
                    Targets::Probs(y) => {
                        let j = (row0 + rr) * k;
                        RowTarget::Probs(&y[j..j + k])
                    }
                };
                let derivs = match (g.as_deref_mut(), h.as_deref_mut()) {
                    (None, None) => Derivs::None,
                    (Some(g), None) => Derivs::Grad(&mut g[row]),
                    (None, Some(h)) => Derivs::Hess(&mut h[row]),
                    (Some(g), Some(h)) => Derivs::Both {
                        grad: &mut g[row.clone()],
                        hess: &mut h[row],
                    },
                };
                let res = if span_rows > 1 {
                    cce_row_finish(xr, target, spec, derivs, stats[i])
                } else {
                    cce_row(xr, target, spec, derivs)
                };
                sum += res.loss;
                if let Some(l) = l.as_deref_mut() {
                    l[rr] = T::from_f64(res.loss);
                }
                if let Some(s) = s.as_deref_mut() {
                    s[rr] = T::from_f64(res.lse);
                }
            }
            r += span_rows;
        }
        Ok(sum)
    });
    Ok(ordered_sum(
        &partials.into_iter().collect::<Result<Vec<_>, _>>()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(k: usize) -> CceSpec<'static> {
        CceSpec {
            k,
            weight: None,
            label_smoothing: 0.0,
            scale: 1.0,
            want_lse: true,
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
                let r = cce_row(&x, RowTarget::Index(t), &spec(k), Derivs::Grad(&mut g));
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
        let r = cce_row(&x, RowTarget::Index(0), &spec(3), Derivs::None);
        let want = (-60.0f64).exp() + (-65.0f64).exp();
        assert!((r.loss - want).abs() <= 1e-6 * want);
        let x64 = [60.0f64, 0.0, -5.0];
        let r = cce_row(&x64, RowTarget::Index(0), &spec(3), Derivs::None);
        assert!((r.loss - want).abs() <= 1e-14 * want);
        let mut g = [0.0f32; 3];
        cce_row(&x, RowTarget::Index(0), &spec(3), Derivs::Grad(&mut g));
        assert!(((g[0] as f64) + want).abs() <= 1e-6 * want);
    }

    #[test]
    fn masked_class_is_free_unless_targeted() {
        let x = [1.0f64, f64::NEG_INFINITY, 0.5];
        let mut g = [9.0; 3];
        let r = cce_row(&x, RowTarget::Index(0), &spec(3), Derivs::Grad(&mut g));
        assert!(r.loss.is_finite());
        assert_eq!(g[1], 0.0);
        let r = cce_row(&x, RowTarget::Index(1), &spec(3), Derivs::Grad(&mut g));
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
                Targets::Index {
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
        assert_eq!(s1.to_bits(), s2.to_bits());
        assert_eq!(s1.to_bits(), s3.to_bits());
        assert_eq!(g1, g2);
        assert_eq!(g1, g3);
    }

    #[test]
    fn labels_are_checked() {
        assert_eq!(check_labels(&[0, 2, -100], 3, -100, None), Ok(2.0));
        let bad = |position, value| Error::Label {
            arg: "target",
            position,
            value,
            k: 3,
            ignore_index: Some(-100),
        };
        assert_eq!(check_labels(&[0, 3], 3, -100, None), Err(bad(1, 3)));
        assert_eq!(check_labels(&[-1], 3, -100, None), Err(bad(0, -1)));
    }

    #[test]
    fn inconsistent_batches_are_errors_not_panics() {
        let x = [0.0f32; 12];
        let labels = [0i64, 1, 2, 0];
        let idx = |labels| Targets::Index {
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
            run(&x, Targets::Probs(&x[..9]), 3, none()),
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
