//! `softmax`, `log_softmax` and `logsumexp` over the last axis (rows of `k` elements), from
//! the same row statistics as the cross-entropy kernel: `log_softmax_j = (x_j − m) −
//! log1p(S − 1)`, `softmax_j = exp(x_j − m) / S`. In place needs no second buffer.

use crate::error::{check_len, rows_of, Error};
use crate::parallel::{map_jobs, rows_per_chunk};
use crate::real::{exp_sum, row_max, widened, Element, Real};

/// Which function of the row to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowFn {
    Softmax,
    LogSoftmax,
}

/// One row: `out` receives `softmax(x)` or `log_softmax(x)`.
pub fn softmax_row<T: Real>(x: &[T], out: &mut [T], f: RowFn) {
    let m = row_max(x);
    match f {
        RowFn::Softmax => {
            let inv = 1.0 / exp_sum(x, m, Some(&mut *out)).total;
            T::scale(out, inv);
        }
        RowFn::LogSoftmax => {
            let log_s = exp_sum(x, m, None).log_sum();
            out.iter_mut()
                .zip(x)
                .for_each(|(o, &v)| *o = T::from_f64((v.to_f64() - m) - log_s));
        }
    }
}

/// [`softmax_row`] overwriting the row itself.
pub fn softmax_row_in_place<T: Real>(v: &mut [T], f: RowFn) {
    let m = row_max(v);
    match f {
        RowFn::Softmax => {
            // The stored exponentials are the same whether or not the sum is refined.
            let inv = 1.0 / T::exp_sum_in_place(v, m).total;
            T::scale(v, inv);
        }
        RowFn::LogSoftmax => {
            let log_s = exp_sum(v, m, None).log_sum();
            v.iter_mut()
                .for_each(|o| *o = T::from_f64((o.to_f64() - m) - log_s));
        }
    }
}

/// The rows of one chunk, computed in `T::Work` when `T` is widened.
fn softmax_chunk<T: Real>(x: Option<&[T]>, o: &mut [T], k: usize, f: RowFn) -> Result<(), Error> {
    if let Some(mut w) = widened(x.unwrap_or(o))? {
        softmax_chunk::<T::Work>(None, &mut w, k, f)?;
        T::narrow(&w, o);
        return Ok(());
    }
    for (r, orow) in o.chunks_mut(k).enumerate() {
        match x {
            Some(x) => softmax_row(&x[r * k..(r + 1) * k], orow, f),
            None => softmax_row_in_place(orow, f),
        }
    }
    Ok(())
}

/// Writes `f` of each row of `x` into `out` (same length). `x == None` means in place: `out`
/// holds the logits.
pub fn softmax_batch<T: Real>(
    x: Option<&[T]>,
    out: &mut [T],
    k: usize,
    f: RowFn,
) -> Result<(), Error> {
    check_len(x, out.len(), "logits")?;
    rows_of(out.len(), k)?;
    if out.is_empty() {
        return Ok(());
    }
    let chunk = rows_per_chunk(k) * k;
    let total = out.len();
    let jobs: Vec<(Option<&[T]>, &mut [T])> = match x {
        Some(x) => x
            .chunks(chunk)
            .map(Some)
            .zip(out.chunks_mut(chunk))
            .collect(),
        None => out.chunks_mut(chunk).map(|o| (None, o)).collect(),
    };
    map_jobs(jobs, total, |(x, o)| softmax_chunk(x, o, k, f))?
        .into_iter()
        .collect()
}

/// `logsumexp` of each row of `x` into `out` (one element per row).
pub fn logsumexp_batch<T: Real>(x: &[T], out: &mut [T], k: usize) -> Result<(), Error> {
    check_len(Some(out), rows_of(x.len(), k)?, "out")?;
    if out.is_empty() {
        return Ok(());
    }
    let rpc = rows_per_chunk(k);
    let jobs: Vec<(&[T], &mut [T])> = x.chunks(rpc * k).zip(out.chunks_mut(rpc)).collect();
    map_jobs(jobs, x.len(), |(x, o)| lse_rows(x, o, k))?
        .into_iter()
        .collect()
}

fn lse_rows<T: Real, O: Element>(x: &[T], o: &mut [O], k: usize) -> Result<(), Error> {
    if let Some(w) = widened(x)? {
        return lse_rows::<T::Work, O>(&w, o, k);
    }
    for (xr, ov) in x.chunks(k).zip(o.iter_mut()) {
        let m = row_max(xr);
        *ov = O::from_f64(m + exp_sum(xr, m, None).log_sum());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_log_softmax_matches() {
        for k in 1..=20usize {
            let x: Vec<f64> = (0..k).map(|j| (j as f64 * 1.3).sin() * 5.0).collect();
            let mut p = vec![0.0; k];
            let mut lp = vec![0.0; k];
            softmax_row(&x, &mut p, RowFn::Softmax);
            softmax_row(&x, &mut lp, RowFn::LogSoftmax);
            let s: f64 = p.iter().sum();
            assert!((s - 1.0).abs() < 1e-14);
            for j in 0..k {
                assert!((lp[j].exp() - p[j]).abs() < 1e-14);
            }
        }
    }

    #[test]
    fn in_place_equals_out_of_place() {
        let k = 7;
        let x: Vec<f32> = (0..k * 50).map(|i| (i as f32 * 0.37).cos() * 9.0).collect();
        for f in [RowFn::Softmax, RowFn::LogSoftmax] {
            let mut a = vec![0.0f32; x.len()];
            softmax_batch(Some(&x), &mut a, k, f).unwrap();
            let mut b = x.clone();
            softmax_batch(None, &mut b, k, f).unwrap();
            assert_eq!(a, b);
        }
    }
}
