//! What a batch of a softmax-family kernel reads: its logits (a separate buffer, or the
//! gradient buffer itself when computed in place) and its targets (class indices with
//! `ignore_index`, or rows of class probabilities), and the label check every index-target
//! kernel runs before it writes anything.

use crate::error::{check_len, Error};

/// The logits of a batch: read-only, or the gradient buffer itself (in place).
pub enum Logits<'a, T> {
    Separate(&'a [T]),
    InGrad,
}

/// One row's target.
#[derive(Clone, Copy)]
pub enum RowTarget<'a, Y> {
    /// The index equals `ignore_index`: loss, gradient and Hessian are zero.
    Ignored,
    /// A class index in `[0, K)`.
    Index(usize),
    /// A row of class probabilities (length `K`), of their own dtype.
    Probs(&'a [Y]),
}

/// The targets of a whole batch.
#[derive(Clone, Copy)]
pub enum Targets<'a, Y> {
    /// One label per row, each in `[0, K)` or equal to `ignore_index` (checked).
    Index {
        labels: &'a [i64],
        ignore_index: i64,
    },
    /// `N × K` probabilities, row-major.
    Probs(&'a [Y]),
}

impl<Y> Targets<'_, Y> {
    pub fn row(&self, r: usize, k: usize) -> RowTarget<'_, Y> {
        match *self {
            Targets::Index {
                labels,
                ignore_index,
            } => match labels[r] {
                t if t == ignore_index => RowTarget::Ignored,
                t => RowTarget::Index(t as usize),
            },
            Targets::Probs(y) => RowTarget::Probs(&y[r * k..(r + 1) * k]),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_checked_and_counted() {
        let bad = |position, value| Error::Label {
            arg: "target",
            position,
            value,
            k: 3,
            ignore_index: Some(-100),
        };
        assert_eq!(check_labels(&[0, 2, -100], 3, -100, None), Ok(2.0));
        assert_eq!(
            check_labels(&[0, 2, -100], 3, -100, Some(&[0.5, 1.0, 2.0])),
            Ok(2.5)
        );
        assert_eq!(check_labels(&[0, 3], 3, -100, None), Err(bad(1, 3)));
        assert_eq!(check_labels(&[-1], 3, -100, None), Err(bad(0, -1)));
    }

    #[test]
    fn rows_are_read_from_either_kind_of_target() {
        let t: Targets<'_, f64> = Targets::Index {
            labels: &[2, -100],
            ignore_index: -100,
        };
        assert!(matches!(t.row(0, 3), RowTarget::Index(2)));
        assert!(matches!(t.row(1, 3), RowTarget::Ignored));
        let y = [0.0, 1.0, 0.5, 0.5];
        match Targets::Probs(&y[..]).row(1, 2) {
            RowTarget::Probs(r) => assert_eq!(r, &[0.5, 0.5]),
            _ => panic!("a probability row"),
        }
    }
}
