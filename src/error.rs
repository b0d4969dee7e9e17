//! The core's typed errors: what a caller (the bindings, or any Rust code) gets back instead
//! of an out-of-bounds access or a panic when the pieces of a call do not fit together.

use std::fmt;

/// Why a kernel call was refused or stopped.
#[derive(Clone, Debug, PartialEq)]
pub enum Error {
    /// `arg` does not have the size the other arguments imply.
    Size {
        arg: &'static str,
        expected: usize,
        got: usize,
    },
    /// The class axis has size 0, or a size the logits' length is not a multiple of.
    Classes { k: usize, len: usize },
    /// A class index outside `[0, k)` that is not `ignore_index`.
    Label {
        arg: &'static str,
        position: usize,
        value: i64,
        k: usize,
        ignore_index: Option<i64>,
    },
    /// A BCE target outside `[0, 1]` (or NaN).
    Target { position: usize, value: f64 },
    /// Neither (or both) of class indices and class probabilities were given.
    TargetKind,
    /// An in-place call without the buffer that holds the logits.
    InPlace { arg: &'static str },
    /// Scratch memory of `bytes` bytes could not be allocated.
    Alloc { bytes: usize },
    /// The call was cancelled (an interrupt arrived) before it finished.
    Cancelled,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Size { arg, expected, got } => {
                write!(f, "{arg}: has {got} elements where {expected} are needed")
            }
            Error::Classes { k: 0, .. } => write!(f, "logits: the class axis has size 0"),
            Error::Classes { k, len } => {
                write!(f, "logits: {len} elements do not make rows of {k} classes")
            }
            Error::Label {
                arg,
                position,
                value,
                k,
                ignore_index,
            } => {
                write!(
                    f,
                    "{arg}: class index {value} (at flat position {position}) is out of range: must be in [0, {k})"
                )?;
                match ignore_index {
                    Some(i) => write!(f, " or equal to ignore_index={i}"),
                    None => Ok(()),
                }
            }
            Error::Target { position, value } => write!(
                f,
                "target: values must be in [0, 1]; found {value} at flat position {position}"
            ),
            Error::TargetKind => write!(
                f,
                "target: give exactly one of class indices and class probabilities"
            ),
            Error::InPlace { arg } => {
                write!(
                    f,
                    "{arg}: an in-place call needs this buffer (it holds the logits)"
                )
            }
            Error::Alloc { bytes } => write!(f, "cannot allocate {bytes} bytes of scratch memory"),
            Error::Cancelled => write!(f, "interrupted"),
        }
    }
}

impl std::error::Error for Error {}

/// Checks that an optional buffer has `expected` elements.
pub fn check_len<T>(buf: Option<&[T]>, expected: usize, arg: &'static str) -> Result<(), Error> {
    match buf {
        Some(b) if b.len() != expected => Err(Error::Size {
            arg,
            expected,
            got: b.len(),
        }),
        _ => Ok(()),
    }
}

/// The number of rows of `len` elements of `k` classes.
pub fn rows_of(len: usize, k: usize) -> Result<usize, Error> {
    if k == 0 || !len.is_multiple_of(k) {
        return Err(Error::Classes { k, len });
    }
    Ok(len / k)
}

/// A `Vec` of `n` copies of `v`, or [`Error::Alloc`] (never an abort) when memory is short.
pub fn try_vec<T: Clone>(n: usize, v: T) -> Result<Vec<T>, Error> {
    let mut out = Vec::new();
    out.try_reserve_exact(n).map_err(|_| Error::Alloc {
        bytes: n.saturating_mul(std::mem::size_of::<T>()),
    })?;
    out.resize(n, v);
    Ok(out)
}
