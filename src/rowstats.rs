//! Per-row statistics shared by every softmax-family kernel: the maximum, and the sum of
//! `exp(x_j − max)` split so that `log Σ` keeps full relative precision; and their portable
//! f64 implementations (the float32 SIMD paths compute the same statistics).

use crate::element::Element;

/// `max_j x_j` as f64 (`-inf` for a row of `-inf`; NaN entries may be skipped here: they
/// propagate through [`exp_sum_scalar`] instead).
pub fn row_max_scalar<T: Element>(x: &[T]) -> f64 {
    let mut m = f64::NEG_INFINITY;
    for &v in x {
        let v = v.to_f64();
        if v > m {
            m = v;
        }
    }
    m
}

/// `S = Σ_j exp(x_j − m)` for the row maximum `m`, kept as `S = 1 + rest`.
#[derive(Clone, Copy, Debug)]
pub struct ExpSum {
    /// `S`.
    pub total: f64,
    /// `S − 1`, summed from the non-maximal terms (and one per extra tie for the maximum), so
    /// it is exact even when it is far below the rounding error of 1.
    pub rest: f64,
}

/// The relative error of each term of the cheaper float32 exponential kernel beyond what its
/// bound covers (`simd::exp_nonpositive_loose`'s test holds it).
pub const LOOSE_TERM_REL: f64 = 1.6e-7;

impl ExpSum {
    /// `log S`: `log1p(rest)` where `rest` is small; `ln(S)` (cheaper, and within 5e-16
    /// relative of it: rounding `1 + rest` costs `2^-53 / rest`) once `rest > 0.25`.
    #[inline]
    pub fn log_sum(&self) -> f64 {
        if self.rest > 0.25 {
            self.total.ln()
        } else {
            self.rest.ln_1p()
        }
    }

    /// A bound on the error of `log S` in a sum from the cheaper kernel, with `bound` on
    /// what rounding `x_j − m` adds to `S − 1`: that bound's share plus the terms' own error
    /// (each within [`LOOSE_TERM_REL`]), over `S`.
    #[inline(always)]
    pub fn loose_log_error(&self, bound: f64) -> f64 {
        (bound + LOOSE_TERM_REL * self.rest) / self.total
    }

    /// Whether a sum from the cheaper kernel, with `bound` on the error it adds to `S − 1`,
    /// keeps the error of `log S` from that rounding within `2^-22` of `scale` (a loss that
    /// is at least `log S`: the terms' own error is below `LOOSE_TERM_REL·log S` anyway)
    /// and, when given, twice [`ExpSum::loose_log_error`] within `2^-22` of `|lse|` (see
    /// `cce::loose_is_enough`). NaN sums (bound NaN) pass: they stay NaN.
    #[inline(always)]
    pub fn loose_is_enough(&self, bound: f64, scale: f64, lse: Option<f64>) -> bool {
        if bound == 0.0 || bound.is_nan() {
            return true;
        }
        let tol = 1.0 / 4_194_304.0;
        bound / self.total <= scale * tol
            && lse.is_none_or(|lse| 2.0 * self.loose_log_error(bound) <= lse.abs() * tol)
    }
}

/// A row's statistics before its target is looked at.
#[derive(Clone, Copy, Debug)]
pub struct RowStats {
    /// The row maximum.
    pub m: f64,
    /// The split sum of `exp(x_j − m)`.
    pub es: ExpSum,
    /// `log S` (see [`ExpSum::log_sum`]; block kernels may compute it their own way).
    pub log_s: f64,
}

impl Default for RowStats {
    fn default() -> Self {
        RowStats {
            m: 0.0,
            es: ExpSum {
                total: 1.0,
                rest: 0.0,
            },
            log_s: 0.0,
        }
    }
}

/// Sums the exponentials of a row in f64 with the platform's `exp`, optionally writing each
/// `exp(x_j − m)` to `store`.
///
/// A NaN logit, a `+inf` logit or a row of all `-inf` makes `rest` NaN (through
/// `exp(NaN)` or `inf − inf`), so the row's loss, gradient and logsumexp are NaN, as in NumPy.
pub fn exp_sum_scalar<T: Element, S: Element>(x: &[T], m: f64, store: Option<&mut [S]>) -> ExpSum {
    let mut rest = 0.0f64;
    let mut ties = 0usize;
    let mut add = |d: f64| -> f64 {
        let e = d.exp();
        if d == 0.0 {
            ties += 1;
        } else {
            rest += e;
        }
        e
    };
    match store {
        Some(out) => {
            for (o, &v) in out.iter_mut().zip(x) {
                *o = S::from_f64(add(v.to_f64() - m));
            }
        }
        None => {
            for &v in x {
                add(v.to_f64() - m);
            }
        }
    }
    let rest = rest + ties.saturating_sub(1) as f64;
    // `ties == 0` only when m is ±inf or NaN: `rest` is already NaN then, except for a row
    // whose maximum is +inf and has no NaN partner (impossible: x_max − m = inf − inf = NaN).
    ExpSum {
        total: 1.0 + rest,
        rest,
    }
}

/// The [`ExpSum`] of a row of stored exponentials `exp(x_j − m)` (each maximum exactly 1),
/// summed in f64; NaN when no entry is 1 (the maximum itself was NaN).
pub fn exp_sum_of_stored<T: Element>(e: &[T]) -> ExpSum {
    let (mut rest, mut ties) = (0.0f64, 0usize);
    for &v in e {
        let v = v.to_f64();
        if v == 1.0 {
            ties += 1;
        } else {
            rest += v;
        }
    }
    let rest = match ties {
        0 if !e.is_empty() => f64::NAN,
        _ => rest + ties.saturating_sub(1) as f64,
    };
    ExpSum {
        total: 1.0 + rest,
        rest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_is_exact_for_a_confident_row() {
        let x = [0.0f64, -80.0, -90.0];
        let m = row_max_scalar(&x);
        let es = exp_sum_scalar::<_, f64>(&x, m, None);
        let want = (-80.0f64).exp() + (-90.0f64).exp();
        assert!((es.rest - want).abs() <= 1e-15 * want);
        assert_eq!(es.total, 1.0);
    }

    #[test]
    fn ties_count_once_each() {
        let x = [2.0f32, 2.0, 2.0];
        let es = exp_sum_scalar::<_, f64>(&x, row_max_scalar(&x), None);
        assert_eq!(es.rest, 2.0);
        assert_eq!(es.total, 3.0);
    }

    #[test]
    fn non_finite_rows_are_nan() {
        for x in [
            [f64::NEG_INFINITY, f64::NEG_INFINITY],
            [f64::NAN, 0.0],
            [f64::INFINITY, 0.0],
        ] {
            let es = exp_sum_scalar::<_, f64>(&x, row_max_scalar(&x), None);
            assert!(es.rest.is_nan(), "{x:?}");
        }
    }

    #[test]
    fn masked_classes_contribute_nothing() {
        let x = [1.0f64, f64::NEG_INFINITY, 0.0];
        let es = exp_sum_scalar::<_, f64>(&x, row_max_scalar(&x), None);
        assert!((es.rest - (-1.0f64).exp()).abs() < 1e-16);
    }
}
