//! Vectorised `log1p(u)` for `u` in `[0, 2^30]` (softmax's `log1p(S − 1)`), and for `u` in
//! `[0, 1]` (BCE's `log1p(e^{−|z|})`, [`log1p_01`]).
//!
//! `w = 1 + u` is rounded; its rounding error `c = u − (w − 1)` is added back as `c / w`
//! (Goldberg's trick), so tiny `u` keeps full relative precision (`w = 1`, result `u`).
//! `log w = k·ln2 + log f` with `w = 2^k f`, `f` in `[√½, √2)`, and `log f` from the degree-9
//! polynomial of Cephes' `logf` in `f − 1` (Cody–Waite split of `ln 2` as in `exp`). Error
//! against f64 `ln_1p`: at most 2 ulp over the tested range (see the test).

use super::vector::F32Vec;

const SQRT_HALF: f32 = std::f32::consts::FRAC_1_SQRT_2;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
const P: [f32; 9] = [
    7.037_683_6e-2,
    -1.151_461e-1,
    1.167_699_9e-1,
    -1.242_014_1e-1,
    1.424_932_3e-1,
    -1.666_805_8e-1,
    2.000_071_4e-1,
    -2.499_999_4e-1,
    3.333_333e-1,
];

/// `log1p(u)` for `u ≥ 0` (NaN in, NaN out).
///
/// # Safety
/// As for [`F32Vec`]: the CPU must support `V`'s instruction set.
#[inline(always)]
pub unsafe fn log1p_nonnegative<V: F32Vec>(u: V) -> V {
    let one = V::splat(1.0);
    let w = one.add(u);
    let c = u.sub(w.sub(one)).div(w);
    let (k, f) = w.exponent_mantissa();
    // Move f from [1, 2) to [√½, √2): f ≥ √2 ⇔ f/2 ≥ √½.
    let big = f.gt(V::splat(2.0 * SQRT_HALF));
    let f = V::select(big, f.mul(V::splat(0.5)), f);
    let k = V::select(big, k.add(one), k);
    let x = f.sub(one);
    log_reduced(x, k, c)
}

/// `log1p(u)` for `u` in `[0, 1]` (NaN in, NaN out), given `w = 1 + u` (rounded) and
/// `inv = 1 / w`, which the caller shares (BCE's sigmoid is `1 / (1 + e^{−|z|})`): as
/// [`log1p_nonnegative`], without its division (the rounding error of `w` is added back as
/// `c · inv`) and without its exponent extraction (`w` is in `[1, 2]`).
///
/// # Safety
/// As for [`F32Vec`]: the CPU must support `V`'s instruction set.
#[inline(always)]
pub unsafe fn log1p_unit<V: F32Vec>(u: V, w: V, inv: V) -> V {
    let one = V::splat(1.0);
    let c = u.sub(w.sub(one)).mul(inv);
    let big = w.gt(V::splat(2.0 * SQRT_HALF));
    let x = V::select(big, w.mul(V::splat(0.5)), w).sub(one);
    let k = V::one_where(big, one);
    log_reduced(x, k, c)
}

/// `log1p(u) = u + u²·Q(u)` on `[0, 1]`: `Q(u) = (log1p(u) − u)/u²` (from −1/2 at 0 to
/// ln 2 − 1 at 1) fitted by linear programming to minimise the largest relative error of the
/// result (not of `Q`: its error counts `u²|Q|/log1p(u) ≤ 0.44` times), degree 8, then the
/// coefficients rounded to f32. Fit error 3e-10 relative; with the rounding of the Estrin
/// evaluation below, at most 2 ulp against f64 `ln_1p` (1.86 measured, see the test), as
/// [`log1p_unit`].
const Q01: [f32; 9] = [
    -0.499_999_9,
    0.333_325_55,
    -0.249_802_13,
    0.197_972_6,
    -0.156_103_28,
    0.110_441_5,
    -0.060_625_575,
    0.021_482_129,
    -0.003_543_687_3,
];

/// `log1p(u)` for `u` in `[0, 1]` (NaN in, NaN out): one polynomial, no division and no
/// exponent extraction, so that it does not wait for anything but `u`. Estrin's scheme keeps
/// the dependency chain at five operations after `u` (`u² → u⁴ → u⁸`, then two FMAs).
/// Tiny `u` keeps full relative precision (`u² Q(u)` is then far below an ulp of `u`).
///
/// # Safety
/// As for [`F32Vec`]: the CPU must support `V`'s instruction set.
#[inline(always)]
pub unsafe fn log1p_01<V: F32Vec>(u: V) -> V {
    let c = |i: usize| V::splat(Q01[i]);
    let u2 = u.mul(u);
    let u4 = u2.mul(u2);
    let u8 = u4.mul(u4);
    let p01 = c(1).fma(u, c(0));
    let p23 = c(3).fma(u, c(2));
    let p45 = c(5).fma(u, c(4));
    let p67 = c(7).fma(u, c(6));
    let p03 = p23.fma(u2, p01);
    let p47 = p67.fma(u2, p45);
    let q = p47.fma(u4, p03);
    let q = c(8).fma(u8, q);
    q.fma(u2, u)
}

/// `k·ln 2 + log(1 + x) + c` for a reduced argument `x` in `[√½ − 1, √2 − 1]`: the polynomial
/// both `log1p` forms finish with.
///
/// # Safety
/// As for [`F32Vec`]: the CPU must support `V`'s instruction set.
#[inline(always)]
unsafe fn log_reduced<V: F32Vec>(x: V, k: V, c: V) -> V {
    let z = x.mul(x);
    let mut p = V::splat(P[0]);
    for &coef in &P[1..] {
        p = p.fma(x, V::splat(coef));
    }
    let y = p.mul(x).mul(z);
    let y = k.fma(V::splat(LN2_LO), y);
    let y = z.fma(V::splat(-0.5), y);
    let r = x.add(y);
    let r = k.fma(V::splat(LN2_HI), r);
    r.add(c)
}

#[cfg(test)]
mod tests {
    use super::super::vector::Scalar;
    use super::*;
    use crate::testing::ulps_f32 as ulps;

    #[test]
    fn within_two_ulp() {
        let mut worst: f64 = 0.0;
        let mut u = 1e-30f32;
        while u < 1e9 {
            // SAFETY: the scalar path uses no special instructions.
            let got = unsafe { log1p_nonnegative(Scalar::splat_for_test(u)) }.value();
            worst = worst.max(ulps(got, (u as f64).ln_1p()));
            u *= 1.000_37;
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
        // SAFETY: as above.
        let zero = unsafe { log1p_nonnegative(Scalar::splat_for_test(0.0)) }.value();
        assert_eq!(zero, 0.0);
    }

    #[test]
    fn unit_form_within_two_ulp() {
        let mut worst: f64 = 0.0;
        let mut u = 1e-40f32;
        while u <= 1.0 {
            let s = Scalar::splat_for_test;
            let w = 1.0 + u;
            // SAFETY: the scalar path uses no special instructions.
            let got = unsafe { log1p_unit(s(u), s(w), s(1.0 / w)) }.value();
            worst = worst.max(ulps(got, (u as f64).ln_1p()));
            u = if u < 0.999 { u * 1.000_37 } else { u + 1e-4 };
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
    }

    #[test]
    fn polynomial_form_within_two_ulp() {
        let mut worst: f64 = 0.0;
        let mut u = 1e-37f32;
        while u <= 1.0 {
            // SAFETY: the scalar path uses no special instructions.
            let got = unsafe { log1p_01(Scalar::splat_for_test(u)) }.value();
            worst = worst.max(ulps(got, (u as f64).ln_1p()));
            u = if u < 1e-3 { u * 1.001 } else { u + 3e-7 };
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
        let tiny = f32::from_bits(1);
        for (u, want) in [
            (0.0f32, 0.0f32),
            (tiny, tiny),
            (1.0, std::f32::consts::LN_2),
        ] {
            // SAFETY: as above.
            let got = unsafe { log1p_01(Scalar::splat_for_test(u)) }.value();
            assert!(ulps(got, want as f64) <= 1.0, "{u}: {got}");
        }
        // SAFETY: as above.
        assert!(unsafe { log1p_01(Scalar::splat_for_test(f32::NAN)) }
            .value()
            .is_nan());
    }
}
