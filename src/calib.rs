//! One-pass row statistics for calibration: top-label confidence and argmax of softmax
//! (no probability matrix is formed), the streaming statistics of every binned metric
//! ([`calib_stats`]), and the temperature-scaling objective with its derivative with
//! respect to the inverse temperature `β`.
//!
//! For a row `z` with label `y`, `l(β) = logsumexp(β z) − β z_y`,
//! `l'(β) = E_{softmax(β z)}[z] − z_y = Σ_j p_j (z_j − m) + (m − z_y)`, `m = max z`, written
//! with the shifted logits so that nothing cancels, and
//! `l''(β) = Var_{softmax(β z)}[z] = Σ_j p_j (z_j − m − μ)²`, `μ = Σ_j p_j (z_j − m)` (a sum
//! of squares: `l` is convex in `β`).

use crate::error::{check_len, rows_of, try_vec, Error};
use crate::parallel::{map_jobs, rows_per_chunk, split_opt};
use crate::real::{exp_sum, row_max, widened, Real};

mod kernel;
mod onevsrest;
mod pass;
mod temperature;

/// Top-label confidence `max softmax(x) = 1 / Σ exp(x_j − m)` and the first maximal index.
pub fn top_label_row<T: Real>(x: &[T]) -> (f64, i64) {
    let m = row_max(x);
    let arg = x
        .iter()
        .position(|v| v.to_f64() == m)
        .map_or(-1, |j| j as i64);
    let es = exp_sum(x, m, None);
    (1.0 / es.total, arg)
}

/// [`top_label_row`] for each of the rows of `x` (one confidence and one index per row).
pub fn top_label_batch<T: Real>(
    x: &[T],
    k: usize,
    conf: &mut [f64],
    argmax: &mut [i64],
) -> Result<(), Error> {
    let n = rows_of(x.len(), k)?;
    check_len(Some(conf), n, "confidence")?;
    check_len(Some(argmax), n, "argmax")?;
    let rpc = rows_per_chunk(k);
    let n_chunks = n.div_ceil(rpc);
    let jobs: Vec<_> = x
        .chunks((rpc * k).max(1))
        .zip(split_opt(Some(conf), rpc, n_chunks))
        .zip(split_opt(Some(argmax), rpc, n_chunks))
        .collect();
    map_jobs(jobs, n * k, |((x, c), a)| {
        top_label_rows(x, k, c.expect("chunk"), a.expect("chunk"))
    })?
    .into_iter()
    .collect()
}

fn top_label_rows<T: Real>(x: &[T], k: usize, c: &mut [f64], a: &mut [i64]) -> Result<(), Error> {
    if let Some(w) = widened(x)? {
        return top_label_rows(&w, k, c, a);
    }
    for ((row, cv), av) in x.chunks(k).zip(c.iter_mut()).zip(a.iter_mut()) {
        (*cv, *av) = top_label_row(row);
    }
    Ok(())
}

/// Every label in `[0, k)` (calibration labels have no `ignore_index`).
fn check_class_labels(labels: &[i64], k: usize) -> Result<(), Error> {
    match labels.iter().position(|&t| t < 0 || t as u64 >= k as u64) {
        Some(position) => Err(Error::Label {
            arg: "labels",
            position,
            value: labels[position],
            k,
            ignore_index: None,
        }),
        None => Ok(()),
    }
}

/// Calibration bins: edges `e_0 = 0 < … < e_n = 1` (as NumPy's `linspace` gives them) and
/// the rule that assigns a value to a bin.
#[derive(Clone, Copy)]
pub struct Bins<'a> {
    pub edges: &'a [f64],
    /// `true`: bin `b` holds `e_b < v ≤ e_{b+1}` (the first bin from 0 itself), scikit-learn's
    /// rule; `false`: `e_b ≤ v < e_{b+1}`, with one extra bin for `v = 1` (torchmetrics').
    pub right: bool,
}

impl Bins<'_> {
    fn n(&self) -> usize {
        self.edges.len() - 1
    }
    /// Bins actually used: torchmetrics' rule adds one for the last edge itself.
    pub fn slots(&self) -> usize {
        self.n() + usize::from(!self.right)
    }
    /// The bin of `v` in `[0, 1]`: NumPy's `searchsorted(edges[1:-1], v)` (right rule) or
    /// `searchsorted(edges, v, "right") − 1` (torchmetrics'), from a first guess `⌊v·n⌋`
    /// corrected against the edges themselves (so it is the same for every edge rounding).
    /// `v` is a probability, never NaN.
    #[inline(always)]
    pub(crate) fn index(&self, v: f64) -> usize {
        let (e, n) = (self.edges, self.n());
        let top = if self.right { n - 1 } else { n };
        let mut b = ((v * n as f64) as usize).min(top);
        if self.right {
            while b > 0 && e[b] >= v {
                b -= 1;
            }
            while b < top && e[b + 1] < v {
                b += 1;
            }
        } else {
            while b > 0 && e[b] > v {
                b -= 1;
            }
            while b < top && e[b + 1] <= v {
                b += 1;
            }
        }
        b
    }
}

/// The layout of [`calib_stats`]' output, for `slots` bins and `k` classes: top-label bins
/// `(3, slots)` (weight, confidence, outcome sums), one-vs-rest bins `(3, k, slots)`
/// (weight, forecast, outcome sums), then five sums (weight, Brier, NLL, accuracy,
/// confidence).
pub fn calib_stats_len(slots: usize, k: usize) -> usize {
    3 * slots * (1 + k) + 5
}

/// What [`calib_stats`] computes: rows of `k` classes, logits (softmax) or probabilities,
/// and the bins.
#[derive(Clone, Copy)]
pub struct CalibSpec<'a> {
    pub k: usize,
    pub from_logits: bool,
    pub bins: Bins<'a>,
}

/// Streaming calibration statistics of `(N, k)` logits (softmax) or probabilities with class
/// labels and optional sample weights, added to `out` (see [`calib_stats_len`]). One pass
/// per row: the maximum, the sum of exponentials, then each class's probability binned
/// once. Rows of weight 0 add nothing. The numbers are those of the one-shot metrics:
/// softmax probabilities `exp(x_j − m)·(1/S)` (float64 for float64 logits; for float32 and
/// 16-bit logits from the row's float32 exponentials, each within `3·2^-23` relative of the
/// float64 softmax, and put in the bin of the float64 value: a probability that near an
/// edge is decided in float64), top-label confidence `1/S` from the element type's own sum
/// (as `top_label` computes it), NLL `m − x_y + log S`.
///
/// The scores are validated in the same pass: `Ok(Some(row))` names the first row holding
/// NaN, or for logits `+inf` or nothing but `-inf`, for probabilities a value outside
/// `[0, 1]`; `out` is then unchanged.
pub fn calib_stats<T: Real>(
    x: &[T],
    labels: &[i64],
    weight: Option<&[f64]>,
    spec: CalibSpec<'_>,
    out: &mut [f64],
) -> Result<Option<usize>, Error> {
    let len = calib_stats_len(spec.bins.slots(), spec.k);
    fused(x, labels, weight, spec, pass::Stats::All, len, out)
}

/// The top-label bins `(3, slots)` (weight, confidence and outcome sums) of [`calib_stats`]
/// alone, added to `out`: no probability is formed, one exponential per element.
pub fn calib_top<T: Real>(
    x: &[T],
    labels: &[i64],
    weight: Option<&[f64]>,
    spec: CalibSpec<'_>,
    out: &mut [f64],
) -> Result<Option<usize>, Error> {
    let len = 3 * spec.bins.slots();
    fused(x, labels, weight, spec, pass::Stats::TopLabel, len, out)
}

fn fused<T: Real>(
    x: &[T],
    labels: &[i64],
    weight: Option<&[f64]>,
    spec: CalibSpec<'_>,
    what: pass::Stats,
    len: usize,
    out: &mut [f64],
) -> Result<Option<usize>, Error> {
    let CalibSpec { k, bins, .. } = spec;
    let n = rows_of(x.len(), k)?;
    check_len(Some(labels), n, "labels")?;
    check_len(weight, n, "sample_weight")?;
    if bins.edges.len() < 2 {
        return Err(Error::Size {
            arg: "edges",
            expected: 2,
            got: bins.edges.len(),
        });
    }
    check_len(Some(&*out), len, "out")?;
    check_class_labels(labels, k)?;
    // Fixed blocks of rows (independent of the thread count), reduced in order, a bounded
    // number of them alive at once; nothing is added before every row has been checked.
    let rows = rows_per_chunk(k).max(2048);
    let blocks: Vec<(usize, &[T])> = x.chunks(rows * k).enumerate().collect();
    let mut total = try_vec(len, 0.0f64)?;
    for group in blocks.chunks(64) {
        let deltas = map_jobs(group.to_vec(), group.len() * rows * k, |(b, xb)| {
            let r0 = b * rows;
            let nb = xb.len() / k;
            let w = weight.map(|w| &w[r0..r0 + nb]);
            pass::block(xb, &labels[r0..r0 + nb], w, spec, what, len)
                .map(|r| r.map_err(|bad| r0 + bad))
        })?;
        for d in deltas {
            match d? {
                Ok(d) => total.iter_mut().zip(d).for_each(|(o, v)| *o += v),
                Err(bad) => return Ok(Some(bad)),
            }
        }
    }
    out.iter_mut().zip(total).for_each(|(o, v)| *o += v);
    Ok(None)
}

/// Sums of `w_y·l(β)`, `w_y·l'(β)`, `w_y·l''(β)` and `w_y` over a batch (the caller divides).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TemperatureSums {
    pub loss: f64,
    pub dloss_dbeta: f64,
    pub d2loss_dbeta2: f64,
    pub weight: f64,
}

/// The weighted sums of the temperature objective over the rows of `x` (one label each).
pub fn temperature_batch<T: Real>(
    x: &[T],
    k: usize,
    labels: &[i64],
    beta: f64,
    weight: Option<&[f64]>,
) -> Result<TemperatureSums, Error> {
    let s = temperature_pass(x, k, labels, beta, weight, true, false)?;
    Ok(TemperatureSums {
        loss: s.loss,
        dloss_dbeta: s.slope,
        d2loss_dbeta2: s.curvature,
        weight: s.weight,
    })
}

pub use kernel::PassSums;

/// One pass over `(N, k)` logits at `β`: the weighted sums of the temperature objective's
/// slope and curvature (and of the loss, with `loss`), and with `scan` what the fit must
/// know before it starts (see [`PassSums`]; a row whose class has weight 0 counts for the
/// scale and the value checks only). Labels must be in `[0, k)`.
pub fn temperature_pass<T: Real>(
    x: &[T],
    k: usize,
    labels: &[i64],
    beta: f64,
    weight: Option<&[f64]>,
    loss: bool,
    scan: bool,
) -> Result<PassSums, Error> {
    let n = rows_of(x.len(), k)?;
    check_len(Some(labels), n, "labels")?;
    check_len(weight, k, "weight")?;
    let rpc = rows_per_chunk(k);
    let jobs: Vec<_> = x
        .chunks((rpc * k).max(1))
        .zip(labels.chunks(rpc.max(1)))
        .enumerate()
        .collect();
    let p = Temperature {
        k,
        beta,
        weight,
        loss,
        scan,
    };
    let parts = map_jobs(jobs, n * k, |(c, (x, t))| {
        if t.iter().fold(false, |a, &y| a | (y as u64 >= k as u64)) {
            return Ok(Err(c * rpc));
        }
        temperature_rows(x, t, p).map(Ok)
    })?;
    let mut total = PassSums::default();
    for part in parts {
        match part? {
            Ok(s) => total = total.join(s),
            Err(_) => return check_class_labels(labels, k).map(|()| total),
        }
    }
    Ok(total)
}

/// The parameters of a temperature pass shared by every row.
#[derive(Clone, Copy)]
struct Temperature<'a> {
    k: usize,
    beta: f64,
    weight: Option<&'a [f64]>,
    loss: bool,
    scan: bool,
}

fn temperature_rows<T: Real>(
    x: &[T],
    labels: &[i64],
    p: Temperature<'_>,
) -> Result<PassSums, Error> {
    let Temperature {
        k,
        beta,
        weight,
        loss,
        scan,
    } = p;
    if (kernel::MIN_BETA..=kernel::MAX_BETA).contains(&beta) {
        let spec = kernel::PassSpec {
            k,
            beta,
            weight,
            loss,
            scan,
        };
        if let Some(xf) = T::as_f32(x) {
            return Ok(kernel::pass_f32(xf, labels, spec));
        }
        if let Some(w) = widened(x)? {
            if let Some(xf) = <T::Work as Real>::as_f32(&w) {
                return Ok(kernel::pass_f32(xf, labels, spec));
            }
        }
    }
    if let Some(w) = widened(x)? {
        return temperature_rows(&w, labels, p);
    }
    let mut scratch = try_vec(k, T::ZERO)?;
    let mut e = try_vec(k, T::ZERO)?;
    let s = temperature::rows(x, labels, k, beta, weight, &mut scratch, &mut e);
    let mut out = PassSums {
        loss: s.loss,
        slope: s.dloss_dbeta,
        curvature: s.d2loss_dbeta2,
        third: f64::NAN,
        weight: s.weight,
        ..PassSums::default()
    };
    if scan {
        out = out.join(temperature::scan_pass(x, labels, k, weight));
    }
    Ok(out)
}

pub use temperature::Scan;

/// Before a temperature fit, in one pass over `(N, k)` logits: whether every live row's
/// unmasked logits are equal (the loss is then the same at every temperature), the largest
/// finite `|z|`, and whether every live row's labelled class has the largest logit. A
/// negative label marks a row that is not live (it counts for the scale only); the others
/// must be in `[0, k)`.
pub fn temperature_scan<T: Real>(x: &[T], k: usize, labels: &[i64]) -> Result<Scan, Error> {
    let n = rows_of(x.len(), k)?;
    check_len(Some(labels), n, "labels")?;
    if let Some(position) = labels.iter().position(|&t| t >= k as i64) {
        return Err(Error::Label {
            arg: "labels",
            position,
            value: labels[position],
            k,
            ignore_index: None,
        });
    }
    let rpc = rows_per_chunk(k);
    let jobs: Vec<_> = x
        .chunks((rpc * k).max(1))
        .zip(labels.chunks(rpc.max(1)))
        .collect();
    let parts = map_jobs(jobs, n * k, |(x, t)| temperature::scan_rows(x, t, k))?;
    Ok(parts.into_iter().fold(Scan::EMPTY, Scan::join))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_match_counting_edges_for_both_rules() {
        for n in [1usize, 2, 3, 7, 10, 15, 100] {
            // NumPy's linspace: i·(1/n), the last edge exactly 1.
            let step = 1.0 / n as f64;
            let mut edges: Vec<f64> = (0..=n).map(|i| i as f64 * step).collect();
            edges[n] = 1.0;
            let mut values: Vec<f64> = (0..=4000).map(|i| i as f64 / 4000.0).collect();
            values.extend(edges.iter().copied());
            values.extend(edges.iter().map(|&e| f64::from_bits(e.to_bits() + 1)));
            values.extend(edges[1..].iter().map(|&e| f64::from_bits(e.to_bits() - 1)));
            for right in [true, false] {
                let bins = Bins {
                    edges: &edges,
                    right,
                };
                for &v in &values {
                    let want = if right {
                        edges[1..n].iter().filter(|&&e| e < v).count()
                    } else {
                        edges.iter().filter(|&&e| e <= v).count() - 1
                    };
                    assert_eq!(bins.index(v), want, "n={n} right={right} v={v}");
                }
            }
        }
    }

    /// The one-vs-rest sums of the fused pass (bin 0 split off) against binning every
    /// probability with `Bins::index`, for values on, below and above the first edge.
    #[test]
    fn fused_one_vs_rest_bins_match_binning_each_value() {
        let (k, n_bins) = (5usize, 4usize);
        let edges: Vec<f64> = (0..=n_bins).map(|i| i as f64 / n_bins as f64).collect();
        let e1 = edges[1];
        let below = f64::from_bits(e1.to_bits() - 1);
        let above = f64::from_bits(e1.to_bits() + 1);
        let rows: Vec<[f64; 5]> = vec![
            [e1, e1, 0.5, 0.0, 0.0],
            [below, above, 0.5 - below - above + 0.5, 0.0, 0.0],
            [0.1, 0.2, 0.3, 0.15, 0.25],
            [1.0, 0.0, 0.0, 0.0, 0.0],
            [0.2; 5],
        ];
        let x: Vec<f64> = rows.iter().flatten().copied().collect();
        let labels: Vec<i64> = (0..rows.len() as i64).map(|i| i % k as i64).collect();
        let weight: Vec<f64> = (0..rows.len()).map(|i| 0.5 + i as f64).collect();
        for right in [true, false] {
            let bins = Bins {
                edges: &edges,
                right,
            };
            let slots = bins.slots();
            let spec = CalibSpec {
                k,
                from_logits: false,
                bins,
            };
            let mut out = vec![0.0; calib_stats_len(slots, k)];
            assert_eq!(
                calib_stats(&x, &labels, Some(&weight), spec, &mut out).unwrap(),
                None
            );
            let mut want = vec![0.0; 3 * k * slots];
            for ((row, &y), &w) in rows.iter().zip(&labels).zip(&weight) {
                for (j, &p) in row.iter().enumerate() {
                    let b = bins.index(p);
                    want[j * slots + b] += w;
                    want[(k + j) * slots + b] += w * p;
                }
                let y = y as usize;
                want[(2 * k + y) * slots + bins.index(row[y])] += w;
            }
            assert_eq!(
                &out[3 * slots..3 * slots + 3 * k * slots],
                &want[..],
                "right={right}"
            );
        }
        // A probability above 1 is reported by row, and nothing is added.
        let mut bad = x.clone();
        bad[3 * k + 2] = 1.5;
        let spec = CalibSpec {
            k,
            from_logits: false,
            bins: Bins {
                edges: &edges,
                right: true,
            },
        };
        let mut out = vec![0.0; calib_stats_len(n_bins, k)];
        assert_eq!(
            calib_stats(&bad, &labels, None, spec, &mut out).unwrap(),
            Some(3)
        );
        assert!(out.iter().all(|&v| v == 0.0));
    }

    /// The top-label bins of short float32 rows (one row per lane) against binning each
    /// row's `top_label_row`, on ties, masked classes and ragged block tails; a NaN, `+inf`
    /// or all `-inf` row is reported by position.
    #[test]
    fn top_label_bins_of_short_rows_match_each_row() {
        let n_bins = 10usize;
        let edges: Vec<f64> = (0..=n_bins).map(|i| i as f64 / n_bins as f64).collect();
        for k in [2usize, 3, 10, 32] {
            for n in [1usize, 7, 33, 70] {
                let mut x: Vec<f32> = (0..n * k)
                    .map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.5) * 9.0)
                    .collect();
                for i in (0..n).step_by(5) {
                    x[i * k..(i + 1) * k].iter_mut().for_each(|v| *v = 1.25);
                }
                for i in (2..n).step_by(6) {
                    x[i * k + 1] = f32::NEG_INFINITY;
                }
                let labels: Vec<i64> = (0..n as i64).map(|i| (i * 3) % k as i64).collect();
                let weight: Vec<f64> = (0..n).map(|i| (i % 4) as f64 * 0.5).collect();
                let bins = Bins {
                    edges: &edges,
                    right: true,
                };
                let spec = CalibSpec {
                    k,
                    from_logits: true,
                    bins,
                };
                let mut out = vec![0.0; 3 * n_bins];
                assert_eq!(
                    calib_top(&x, &labels, Some(&weight), spec, &mut out).unwrap(),
                    None
                );
                let mut want = vec![0.0; 3 * n_bins];
                for (i, row) in x.chunks(k).enumerate() {
                    let (c, a) = top_label_row(row);
                    let b = bins.index(c);
                    want[b] += weight[i];
                    want[n_bins + b] += weight[i] * c;
                    want[2 * n_bins + b] += if a == labels[i] { weight[i] } else { 0.0 };
                }
                for (g, w) in out.iter().zip(&want) {
                    assert!(
                        (g - w).abs() <= 1e-12 * w.abs().max(1.0),
                        "k={k} n={n}: {out:?} vs {want:?}"
                    );
                }
                for bad in [f32::NAN, f32::INFINITY] {
                    let mut y = x.clone();
                    y[(n - 1) * k + k - 1] = bad;
                    let mut out = vec![0.0; 3 * n_bins];
                    assert_eq!(
                        calib_top(&y, &labels, None, spec, &mut out).unwrap(),
                        Some(n - 1)
                    );
                    assert!(out.iter().all(|&v| v == 0.0));
                }
                let mut y = x.clone();
                y[(n - 1) * k..]
                    .iter_mut()
                    .for_each(|v| *v = f32::NEG_INFINITY);
                let mut out = vec![0.0; 3 * n_bins];
                assert_eq!(
                    calib_top(&y, &labels, None, spec, &mut out).unwrap(),
                    Some(n - 1)
                );
            }
        }
    }

    #[test]
    fn top_label_of_a_known_row() {
        let x = [0.0f64, (3.0f64).ln(), (3.0f64).ln()];
        let (c, a) = top_label_row(&x);
        assert!((c - 3.0 / 7.0).abs() < 1e-15);
        assert_eq!(a, 1);
    }

    #[test]
    fn temperature_derivative_matches_finite_differences() {
        let x: Vec<f64> = vec![1.0, -2.0, 0.5, f64::NEG_INFINITY, 3.0, 0.0];
        let labels = [0i64];
        let f = |b: f64| temperature_batch(&x, 6, &labels, b, None).unwrap();
        let h = 1e-6;
        for beta in [0.3, 1.0, 2.5] {
            let fd = (f(beta + h).loss - f(beta - h).loss) / (2.0 * h);
            let d = f(beta).dloss_dbeta;
            assert!((fd - d).abs() < 1e-6, "beta={beta}: {fd} vs {d}");
            let fd2 = (f(beta + h).dloss_dbeta - f(beta - h).dloss_dbeta) / (2.0 * h);
            let d2 = f(beta).d2loss_dbeta2;
            assert!(
                (fd2 - d2).abs() < 1e-6 * d2.max(1.0),
                "beta={beta}: {fd2} vs {d2}"
            );
        }
        let forward = (f(h).loss - f(0.0).loss) / h; // one-sided: O(h) error
        assert!((forward - f(0.0).dloss_dbeta).abs() < 1e-5);
        // β = 0: uniform over the five unmasked classes.
        assert!((f(0.0).loss - 5.0f64.ln()).abs() < 1e-15);
    }
}
