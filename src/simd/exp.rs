//! Vectorised `exp` for arguments in `[-87.33, 0]`, the range softmax needs after subtracting
//! the row maximum (callers flush smaller arguments to 0 and never pass positive ones).
//!
//! Cody–Waite range reduction `x = n·ln2 + r` with `ln2` split in two (the high part has few
//! enough bits that `n·C1` is exact), then the degree-6 polynomial of Cephes' `expf` for
//! `e^r` on `|r| ≤ ln2/2`, evaluated with FMAs, and the scaling by `2^n` built from exponent
//! bits (`n ≥ −126`, so `2^n` is normal). Maximum error measured against f64 `exp` over the
//! whole range: 1 ulp (see the test below).

use super::vector::F32Vec;

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
const P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];

/// `e^x` for `x` in `[-87.33, 0]` (NaN in, NaN out).
///
/// # Safety
/// As for [`F32Vec`]: the CPU must support `V`'s instruction set.
#[inline(always)]
pub unsafe fn exp_nonpositive<V: F32Vec>(x: V) -> V {
    let n = x.mul(V::splat(LOG2E)).round();
    let r = n.fma(V::splat(-LN2_HI), x);
    let r = n.fma(V::splat(-LN2_LO), r);
    let mut p = V::splat(P[0]);
    for &c in &P[1..] {
        p = p.fma(r, V::splat(c));
    }
    let r2 = r.mul(r);
    let p = p.fma(r2, r).add(V::splat(1.0));
    p.mul(V::pow2(n))
}

#[cfg(test)]
mod tests {
    use super::super::vector::Scalar;
    use super::*;
    use crate::testing::ulps_f32 as ulps;

    #[test]
    fn within_one_ulp_over_the_range() {
        let mut worst: f64 = 0.0;
        let mut x = -87.33f32;
        while x <= 0.0 {
            let got: f32 = {
                // SAFETY: the scalar path uses no special instructions.
                let v = unsafe { exp_nonpositive(Scalar::splat_for_test(x)) };
                v.value()
            };
            worst = worst.max(ulps(got, (x as f64).exp()));
            x += 0.000_731;
        }
        assert!(worst <= 1.0, "worst error {worst} ulp");
    }
}
