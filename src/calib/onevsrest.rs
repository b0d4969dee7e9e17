//! The float32 rows' share of the calibration pass's one-vs-rest statistics, as one vector
//! kernel over a row's stored exponentials `e` (its probabilities are `e_j·(1/S)`): the
//! bin-0 forecast sums of the values certainly in bin 0 (each term converted to f64 and
//! added there, so the sums do not depend on how rows are grouped), the positions of the
//! others as bits, whether any lies in the window around the first edge, and the sum of
//! squares.

use crate::simd::{dispatch, F32Vec, SimdOp};

/// What [`add_low`] found besides the sums it added.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LowSplit {
    /// No element lies in `(lo, hi]`.
    pub clear: bool,
    /// `Σ_{j ≠ skip} e_j²`, summed in float32 lanes (two per vector lane, each at most
    /// `⌈len/(2·LANES)⌉` terms) and those in f64.
    pub sq: f64,
}

/// `f_j += scale·e_j` (the product in float32, added in f64) wherever `e_j ≤ lo`
/// (`0 < lo ≤ hi`); writes the positions of the others to `rest` as bits (element `j` at
/// bit `j % 64` of word `j / 64`; the `⌈len/64⌉` words overwritten), and returns whether
/// none lies in `(lo, hi]` and the sum of squares.
pub fn add_low(
    e: &mut [f32],
    (lo, hi): (f32, f32),
    scale: f32,
    skip: usize,
    f: &mut [f64],
    rest: &mut [u64],
) -> LowSplit {
    dispatch(AddLow {
        e,
        lo,
        hi,
        scale,
        skip,
        f,
        rest,
    })
}

struct AddLow<'a> {
    e: &'a mut [f32],
    lo: f32,
    hi: f32,
    scale: f32,
    skip: usize,
    f: &'a mut [f64],
    rest: &'a mut [u64],
}

impl SimdOp for AddLow<'_> {
    type Output = LowSplit;
    #[inline(always)]
    unsafe fn eval<V: F32Vec>(self) -> LowSplit {
        let AddLow {
            e,
            lo,
            hi,
            scale,
            skip,
            f,
            rest,
        } = self;
        let (n, l) = (e.len(), V::LANES);
        assert!(f.len() == n && rest.len() * 64 >= n);
        // The skipped element is taken out of the sum of squares (as 0) and added alone.
        let e_skip = std::mem::replace(&mut e[skip], 0.0);
        let c = Consts {
            lo: V::splat(lo),
            hi: V::splat(hi),
            scale: V::splat(scale),
        };
        let (pe, pf) = (e.as_ptr(), f.as_mut_ptr());
        let full = n - n % l;
        let (mut sq0, mut sq1) = (V::splat(0.0), V::splat(0.0));
        let (mut near, mut word) = (0u32, 0u64);
        // SAFETY: `eval`'s contract gives the instruction set; `e` and `f` are distinct
        // slices of `n` elements, full vectors are read and written at `i + l ≤ full ≤ n`.
        // `l` divides 64, so a vector's bits never straddle two words.
        unsafe {
            // The bits gather in a register, a word stored at each 64 (an `|=` in memory
            // per vector would chain the vectors through store forwarding).
            let mut i = 0;
            while i + 2 * l <= full {
                let (b0, n0) = low_step(pe.add(i), pf.add(i), &c, &mut sq0);
                let (b1, n1) = low_step(pe.add(i + l), pf.add(i + l), &c, &mut sq1);
                word |= (u64::from(b0) | u64::from(b1) << l) << (i % 64);
                near |= n0 | n1;
                i += 2 * l;
                if i % 64 == 0 {
                    rest[i / 64 - 1] = word;
                    word = 0;
                }
            }
            while i < full {
                let (b, nb) = low_step(pe.add(i), pf.add(i), &c, &mut sq0);
                word |= u64::from(b) << (i % 64);
                near |= nb;
                i += l;
                if i % 64 == 0 {
                    rest[i / 64 - 1] = word;
                    word = 0;
                }
            }
        }
        // The tail (fewer than `l` elements) one at a time.
        let mut tail_sq = 0.0f32;
        for j in full..n {
            let x = e[j];
            if x <= lo {
                f[j] += (x * scale) as f64;
            } else {
                word |= 1 << (j % 64);
                near |= u32::from(x <= hi);
            }
            tail_sq += x * x;
        }
        if n % 64 != 0 {
            rest[n / 64] = word;
        }
        e[skip] = e_skip;
        if e_skip <= lo {
            f[skip] += (scale * e_skip) as f64;
        } else {
            rest[skip / 64] |= 1 << (skip % 64);
            near |= u32::from(e_skip <= hi);
        }
        LowSplit {
            clear: near == 0,
            sq: sq0.hsum_f32() as f64 + sq1.hsum_f32() as f64 + tail_sq as f64,
        }
    }
}

#[derive(Clone, Copy)]
struct Consts<V> {
    lo: V,
    hi: V,
    scale: V,
}

/// One vector of [`add_low`] at `pe`, `pf`: adds the low lanes to `f` and `x²` to `sq`;
/// returns the bits of the lanes above `lo` and of those in `(lo, hi]`. (A function, not a
/// closure: a closure would not inherit the caller's target features.)
///
/// # Safety
/// The CPU supports `V`'s instruction set; `pe` and `pf` are valid for `LANES` elements.
#[inline(always)]
unsafe fn low_step<V: F32Vec>(
    pe: *const f32,
    pf: *mut f64,
    c: &Consts<V>,
    sq: &mut V,
) -> (u32, u32) {
    // SAFETY: the caller's contract.
    unsafe {
        let x = V::load(pe);
        let up = x.gt(c.lo);
        let v = V::zero_where(up, x.mul(c.scale));
        V::acc_lanes(V::acc_add(V::acc_load(pf), v), pf);
        *sq = x.fma(x, *sq);
        let (b, top) = (V::bits(up), V::bits(x.gt(c.hi)));
        (b, b & !top)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel on every instruction set against plain loops, for lengths around the
    /// vector widths and a skipped element anywhere.
    #[test]
    fn kernel_matches_plain_loops() {
        let mut seed = 7u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 40) as f32 / (1u64 << 24) as f32
        };
        for n in [
            1usize, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 48, 64, 65, 100, 130,
        ] {
            let e: Vec<f32> = (0..n).map(|_| next() * next()).collect();
            let (lo, hi) = (0.3f32, 0.31f32);
            let want_clear = !e.iter().any(|&x| x > lo && x <= hi);
            let mut want_bits = vec![0u64; n.div_ceil(64)];
            for (j, &x) in e.iter().enumerate() {
                if x > lo {
                    want_bits[j / 64] |= 1 << (j % 64);
                }
            }
            for isa in crate::simd::supported() {
                for skip in [0, n / 2, n - 1] {
                    let mut f: Vec<f64> = (0..n).map(|j| j as f64).collect();
                    let mut bits = vec![u64::MAX; n.div_ceil(64)];
                    let mut ee = e.clone();
                    let op = AddLow {
                        e: &mut ee,
                        lo,
                        hi,
                        scale: 0.5,
                        skip,
                        f: &mut f,
                        rest: &mut bits,
                    };
                    let got = crate::simd::dispatch_on(isa, op).unwrap();
                    assert_eq!(ee, e);
                    assert_eq!(
                        (got.clear, &bits),
                        (want_clear, &want_bits),
                        "n={n} {isa:?}"
                    );
                    for (j, (&x, &fj)) in e.iter().zip(&f).enumerate() {
                        let want = j as f64 + if x <= lo { (0.5 * x) as f64 } else { 0.0 };
                        assert_eq!(fj, want, "n={n} j={j} {isa:?}");
                    }
                    let want: f64 = e
                        .iter()
                        .enumerate()
                        .filter(|&(j, _)| j != skip)
                        .map(|(_, &x)| (x * x) as f64)
                        .sum();
                    let err = (got.sq - want).abs();
                    assert!(err <= 1e-6 * want.max(1e-30), "{} {want}", got.sq);
                }
            }
        }
    }
}
