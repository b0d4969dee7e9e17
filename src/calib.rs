//! One-pass row statistics for calibration: top-label confidence and argmax of softmax
//! (no probability matrix is formed), and the temperature-scaling objective with its
//! derivative with respect to the inverse temperature `β`.
//!
//! For a row `z` with label `y`, `l(β) = logsumexp(β z) − β z_y` and
//! `l'(β) = E_{softmax(β z)}[z] − z_y = Σ_j p_j (z_j − m) + (m − z_y)`, `m = max z`, written
//! with the shifted logits so that nothing cancels. `l` is convex in `β`.

use crate::error::{check_len, rows_of, try_vec, Error};
use crate::parallel::{map_jobs, ordered_sum, rows_per_chunk, split_opt};
use crate::real::{exp_sum, row_max, widened, Element, Real};

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

/// Sums of `w_y·l(β)`, `w_y·l'(β)` and `w_y` over a batch (the caller divides).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TemperatureSums {
    pub loss: f64,
    pub dloss_dbeta: f64,
    pub weight: f64,
}

/// The temperature objective of one row, using `scratch` / `e` (length `K`) as work space.
fn temperature_row<T: Real>(
    x: &[T],
    y: usize,
    beta: f64,
    scratch: &mut [T::Work],
    e: &mut [T::Work],
) -> (f64, f64) {
    let m = row_max(x);
    for (s, &v) in scratch.iter_mut().zip(x) {
        let v = v.to_f64();
        // A masked class stays masked at every β (β = 0 included, where β·(−inf) is NaN).
        *s = <T::Work as Element>::from_f64(if v == f64::NEG_INFINITY { v } else { beta * v });
    }
    let mb = row_max(scratch);
    let es = exp_sum(scratch, mb, Some(e));
    let inv_s = 1.0 / es.total;
    let mut mean_shift = 0.0;
    for (&ej, &v) in e.iter().zip(x) {
        let ej = ej.to_f64();
        if ej != 0.0 {
            mean_shift += ej * (v.to_f64() - m);
        }
    }
    let zy = x[y].to_f64();
    let loss = (mb - beta * zy) + es.log_sum();
    let dloss = mean_shift * inv_s + (m - zy);
    (loss, dloss)
}

/// The temperature objective's parameters shared by every row.
#[derive(Clone, Copy)]
struct Temperature<'a> {
    k: usize,
    beta: f64,
    weight: Option<&'a [f64]>,
}

fn temperature_rows<T: Real>(
    x: &[T],
    labels: &[i64],
    p: Temperature<'_>,
) -> Result<TemperatureSums, Error> {
    if let Some(w) = widened(x)? {
        return temperature_rows(&w, labels, p);
    }
    let Temperature { k, beta, weight } = p;
    let mut scratch = try_vec(k, <T::Work as Element>::ZERO)?;
    let mut e = try_vec(k, <T::Work as Element>::ZERO)?;
    let mut sums = TemperatureSums::default();
    for (row, &y) in x.chunks(k).zip(labels) {
        let w = weight.map_or(1.0, |w| w[y as usize]);
        if w == 0.0 {
            continue;
        }
        let (l, d) = temperature_row(row, y as usize, beta, &mut scratch, &mut e);
        sums.loss += w * l;
        sums.dloss_dbeta += w * d;
        sums.weight += w;
    }
    Ok(sums)
}

/// The weighted sums of the temperature objective over the rows of `x` (one label each).
pub fn temperature_batch<T: Real>(
    x: &[T],
    k: usize,
    labels: &[i64],
    beta: f64,
    weight: Option<&[f64]>,
) -> Result<TemperatureSums, Error> {
    let n = rows_of(x.len(), k)?;
    check_len(Some(labels), n, "labels")?;
    check_len(weight, k, "weight")?;
    if let Some(position) = labels.iter().position(|&t| t < 0 || t as u64 >= k as u64) {
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
    let p = Temperature { k, beta, weight };
    let parts = map_jobs(jobs, n * k, |(x, t)| temperature_rows(x, t, p))?
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    Ok(TemperatureSums {
        loss: ordered_sum(&parts.iter().map(|p| p.loss).collect::<Vec<_>>()),
        dloss_dbeta: ordered_sum(&parts.iter().map(|p| p.dloss_dbeta).collect::<Vec<_>>()),
        weight: ordered_sum(&parts.iter().map(|p| p.weight).collect::<Vec<_>>()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        }
        let forward = (f(h).loss - f(0.0).loss) / h; // one-sided: O(h) error
        assert!((forward - f(0.0).dloss_dbeta).abs() < 1e-5);
        // β = 0: uniform over the five unmasked classes.
        assert!((f(0.0).loss - 5.0f64.ln()).abs() < 1e-15);
    }
}
