//! Run-time instruction-set dispatch for the float32 row kernels.
//!
//! The kernels in [`kernels`] are written once, generic over a vector type ([`F32Vec`]), and
//! instantiated for AVX-512F, AVX2+FMA and a portable scalar path. The best path the CPU
//! supports is chosen once, at first use; `XENT_RS_ISA=scalar|avx2|avx512` forces a lower one
//! (a request above what the CPU supports falls back to the best supported), so the tests can
//! check every path this machine has against the reference. Shipped builds target the
//! baseline CPU: nothing here depends on compile-time `target-cpu`.

mod exp;
mod kernels;
mod log1p;
mod vector;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::sync::OnceLock;

pub use kernels::{BceConsts, ExpSumF32};

/// An instruction-set path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    Scalar,
    Avx2,
    Avx512,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    fn parse(s: &str) -> Option<Isa> {
        match s.trim().to_ascii_lowercase().as_str() {
            "scalar" => Some(Isa::Scalar),
            "avx2" => Some(Isa::Avx2),
            "avx512" => Some(Isa::Avx512),
            _ => None,
        }
    }
}

/// The best path this CPU supports.
pub fn detected() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Isa::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Isa::Avx2;
        }
    }
    Isa::Scalar
}

/// Every path this CPU supports, lowest first.
pub fn supported() -> Vec<Isa> {
    [Isa::Scalar, Isa::Avx2, Isa::Avx512]
        .into_iter()
        .filter(|&i| i <= detected())
        .collect()
}

/// The path in use: `XENT_RS_ISA` if set (capped at what the CPU supports), else the best.
pub fn active() -> Isa {
    static ACTIVE: OnceLock<Isa> = OnceLock::new();
    *ACTIVE.get_or_init(|| {
        let best = detected();
        match std::env::var("XENT_RS_ISA")
            .ok()
            .and_then(|s| Isa::parse(&s))
        {
            Some(req) => req.min(best),
            None => best,
        }
    })
}

macro_rules! dispatch {
    ($isa:expr, $f:ident($($arg:expr),*)) => {{
        match $isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                // SAFETY: `Isa::Avx512` is only ever returned when the CPU reports avx512f.
                unsafe { x86::avx512::$f($($arg),*) }
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                // SAFETY: `Isa::Avx2` is only ever returned when the CPU reports avx2 and fma.
                unsafe { x86::avx2::$f($($arg),*) }
            }
            _ => kernels::$f::<vector::Scalar>($($arg),*),
        }
    }};
}

/// `max_j x_j` of a float32 row (`-inf` for an empty row; NaN is not guaranteed to win, but
/// a NaN logit still makes the row NaN through [`exp_sum_f32`]).
pub fn row_max_f32(x: &[f32]) -> f32 {
    dispatch!(active(), row_max(x))
}

/// `Σ exp(x_j − m)` of a float32 row split as in [`crate::rowstats::ExpSum`], writing each
/// exponential to `store` when given.
pub fn exp_sum_f32(x: &[f32], m: f32, store: Option<&mut [f32]>) -> ExpSumF32 {
    let es = dispatch!(active(), exp_sum(x, m, store));
    refine_tiny_rest(x, m, es)
}

/// Below this `S − 1`, terms that the float32 kernels flush (each below 2^-126) could
/// matter at 1e-7 relative: such rows (extremely confident ones) are summed again in f64.
const TINY_REST: f64 = 1e-25;

/// `es`, or for a row whose `S − 1` is tiny, the exact f64 sum (the stored float32
/// exponentials stay as they are: they only feed gradients).
fn refine_tiny_rest(x: &[f32], m: f32, es: ExpSumF32) -> ExpSumF32 {
    if es.rest < TINY_REST {
        crate::rowstats::exp_sum_scalar(x, m as f64, None)
    } else {
        es
    }
}

/// `v[j] *= a`.
pub fn scale_f32(v: &mut [f32], a: f32) {
    dispatch!(active(), scale(v, a))
}

/// Rows per [`row_block_stats_f32`] call for rows of `k` float32 elements (0: none).
pub fn block_rows_f32(k: usize) -> usize {
    match active() {
        _ if !(2..=kernels::BLOCK_MAX_K).contains(&k) => 0,
        Isa::Avx512 => 16,
        Isa::Avx2 => 8,
        Isa::Scalar => 0,
    }
}

/// Row statistics of [`block_rows_f32`] rows at once, one row per lane.
pub fn row_block_stats_f32(
    x: &[f32],
    k: usize,
    stats: &mut [crate::cce::RowStats],
    store: Option<&mut [f32]>,
) {
    let (mut m, mut rest, mut log_s) = ([0.0f32; 16], [0.0f64; 16], [0.0f32; 16]);
    dispatch!(
        active(),
        row_block(x, k, &mut m, &mut rest, &mut log_s, store)
    );
    for (i, st) in stats.iter_mut().enumerate() {
        let es = crate::rowstats::ExpSum {
            total: 1.0 + rest[i],
            rest: rest[i],
        };
        let refined = refine_tiny_rest(&x[i * k..(i + 1) * k], m[i], es);
        *st = crate::cce::RowStats {
            m: m[i] as f64,
            es: refined,
            log_s: if refined.rest == es.rest {
                log_s[i] as f64
            } else {
                refined.log_sum()
            },
        };
    }
}

/// Sigmoid BCE over a float32 chunk with constant weights (see [`crate::bce`]); returns the
/// sum of element losses. `z == None` means in place (the logits are in `grad`).
pub fn bce_chunk_f32(
    z: Option<&[f32]>,
    y: &[f32],
    c: &BceConsts,
    losses: Option<&mut [f32]>,
    grad: Option<&mut [f32]>,
    hess: Option<&mut [f32]>,
) -> f64 {
    dispatch!(active(), bce_chunk(z, y, c, losses, grad, hess))
}

/// [`bce_chunk_f32`] on an explicit path.
pub fn bce_chunk_f32_on(
    isa: Isa,
    z: &[f32],
    y: &[f32],
    c: &BceConsts,
    losses: &mut [f32],
    grad: &mut [f32],
    hess: &mut [f32],
) -> Option<f64> {
    (isa <= detected()).then(|| {
        dispatch!(
            isa,
            bce_chunk(Some(z), y, c, Some(losses), Some(grad), Some(hess))
        )
    })
}

/// The same kernels on an explicitly chosen path (for tests and benchmarks); `None` when the
/// CPU does not support it.
pub fn exp_sum_f32_on(isa: Isa, x: &[f32], m: f32, store: Option<&mut [f32]>) -> Option<ExpSumF32> {
    (isa <= detected()).then(|| dispatch!(isa, exp_sum(x, m, store)))
}

/// [`row_max_f32`] on an explicit path.
pub fn row_max_f32_on(isa: Isa, x: &[f32]) -> Option<f32> {
    (isa <= detected()).then(|| dispatch!(isa, row_max(x)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rowstats::exp_sum_scalar;

    fn rows() -> Vec<Vec<f32>> {
        let mut rows = Vec::new();
        for k in 1..=40usize {
            rows.push((0..k).map(|j| ((j * 7 % 13) as f32) * 1.7 - 9.0).collect());
            rows.push((0..k).map(|j| ((j * 5 % 11) as f32) * 9.1 - 40.0).collect());
        }
        let mut masked: Vec<f32> = (0..19).map(|j| j as f32 * 0.3).collect();
        masked[3] = f32::NEG_INFINITY;
        masked[18] = f32::NEG_INFINITY;
        rows.push(masked);
        rows.push(vec![5.0; 17]); // all ties
        rows.push(vec![0.0, -30.0, -60.0, -86.0, -90.0, -200.0, -1e30]);
        // Maxima so large that m − 87 rounds to m.
        rows.push(vec![3e9, 0.0, -3e9, 3e9 - 256.0]);
        rows.push((0..21).map(|j| 1e30 - j as f32 * 1e23).collect());
        rows.push(vec![3.0e38, -3.0e38, 1.0, 3.0e38]);
        // m + FLUSH rounds down to m − 96 here (ulp 32 below 2^29).
        let m29 = 536_870_912.0f32;
        rows.push(vec![m29, m29 - 96.0, m29 - 64.0, m29 - 32.0, m29 - 160.0]);
        rows
    }

    #[test]
    fn every_path_matches_the_f64_sum_for_every_length() {
        for isa in supported() {
            for x in rows() {
                let m = row_max_f32_on(isa, &x).unwrap();
                assert_eq!(m, x.iter().cloned().fold(f32::NEG_INFINITY, f32::max));
                let mut e = vec![0.0f32; x.len()];
                let got = exp_sum_f32_on(isa, &x, m, Some(&mut e)).unwrap();
                let want = exp_sum_scalar(&x, m as f64, None);
                let tol = 3e-7 * want.rest + 1e-37;
                assert!(
                    (got.rest - want.rest).abs() <= tol,
                    "{isa:?} {x:?}: {got:?} {want:?}"
                );
                for (j, &v) in x.iter().enumerate() {
                    let exact = ((v as f64) - (m as f64)).exp();
                    let err = (e[j] as f64 - exact).abs();
                    assert!(
                        err <= 2.0 * f32::EPSILON as f64 * exact + 1.2e-38,
                        "{isa:?} {j}"
                    );
                }
            }
        }
    }

    #[test]
    fn non_finite_rows_are_nan_on_every_path() {
        for isa in supported() {
            for x in [
                vec![f32::NEG_INFINITY; 9],
                vec![1.0, f32::NAN, 0.0],
                vec![f32::INFINITY, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0],
                vec![0.0; 8].into_iter().chain([f32::NAN]).collect(),
            ] {
                let m = row_max_f32_on(isa, &x).unwrap();
                let got = exp_sum_f32_on(isa, &x, m, None).unwrap();
                assert!(got.rest.is_nan(), "{isa:?} {x:?}");
            }
        }
    }

    #[test]
    fn bce_every_path_matches_the_f64_kernel() {
        let z: Vec<f32> = (0..83)
            .map(|i| ((i * 37 % 83) as f32 - 41.0) * 0.9)
            .chain([
                0.0,
                1e4,
                -1e4,
                f32::INFINITY,
                f32::NEG_INFINITY,
                88.0,
                -88.0,
                30.0,
            ])
            .collect();
        let y: Vec<f32> = (0..z.len()).map(|i| [0.0, 1.0, 0.25][i % 3]).collect();
        for isa in supported() {
            for &(pw, eps, w) in &[(1.0f32, 0.0f32, 1.0f32), (3.0, 0.1, 0.5), (0.0, 0.0, 2.0)] {
                let c = BceConsts {
                    weight: w,
                    pos_weight: pw,
                    label_smoothing: eps,
                    scale: 0.25,
                };
                let n = z.len();
                let (mut l, mut g, mut h) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
                let total = bce_chunk_f32_on(isa, &z, &y, &c, &mut l, &mut g, &mut h).unwrap();
                let mut want_total = 0.0;
                for i in 0..n {
                    let (wl, wg, wh) = crate::bce::bce_elem(
                        z[i] as f64,
                        y[i] as f64,
                        w as f64,
                        pw as f64,
                        eps as f64,
                    );
                    want_total += wl;
                    // The gradient b·σ − a·(1 − σ) of a soft target is a difference: its
                    // natural size is that of the terms, about 4·hess.
                    let natural = (wg.abs() + 4.0 * wh.abs()) * 0.25;
                    let close = |a: f32, b: f64, what: &str| {
                        let size = if what == "grad" { natural } else { b.abs() };
                        let tol = 4e-7 * size + 1e-37;
                        assert!(
                            (a as f64 - b).abs() <= tol || (a as f64 == b),
                            "{isa:?} {what} z={} y={}: {a} vs {b}",
                            z[i],
                            y[i]
                        );
                    };
                    close(l[i], wl, "loss");
                    close(g[i], wg * 0.25, "grad");
                    close(h[i], wh * 0.25, "hess");
                }
                assert!(
                    total == want_total || (total - want_total).abs() <= 4e-7 * want_total.abs(),
                    "{isa:?}: {total} vs {want_total}"
                );
            }
        }
    }

    #[test]
    fn row_blocks_match_one_row_at_a_time_on_every_path() {
        for isa in supported() {
            let lanes = match isa {
                Isa::Avx512 => 16,
                Isa::Avx2 => 8,
                Isa::Scalar => continue,
            };
            for k in 2..=kernels::BLOCK_MAX_K {
                let mut x: Vec<f32> = (0..lanes * k)
                    .map(|i| ((i * 7919 % 97) as f32 - 48.0) * 0.37)
                    .collect();
                x[k + 1] = f32::NEG_INFINITY; // a masked class
                x[2 * k..3 * k].fill(f32::NEG_INFINITY); // an all-masked row
                x[3 * k] = f32::NAN;
                x[4 * k..5 * k].fill(2.5); // all ties
                x[5 * k] = 1e30; // a huge maximum
                let (mut m, mut rest, mut log_s) = ([0.0f32; 16], [0.0f64; 16], [0.0f32; 16]);
                let mut e = vec![0.0f32; x.len()];
                // SAFETY: `isa` is supported by this CPU (it comes from `supported()`).
                unsafe {
                    match isa {
                        Isa::Avx512 => x86::avx512::row_block(
                            &x,
                            k,
                            &mut m,
                            &mut rest,
                            &mut log_s,
                            Some(&mut e),
                        ),
                        _ => {
                            x86::avx2::row_block(&x, k, &mut m, &mut rest, &mut log_s, Some(&mut e))
                        }
                    }
                }
                for i in 0..lanes {
                    let row = &x[i * k..(i + 1) * k];
                    let want =
                        exp_sum_scalar(row, row_max_f32_on(Isa::Scalar, row).unwrap() as f64, None);
                    if want.rest.is_nan() {
                        assert!(
                            rest[i].is_nan() && log_s[i].is_nan(),
                            "{isa:?} k={k} row {i}"
                        );
                        continue;
                    }
                    assert!(
                        (rest[i] - want.rest).abs() <= 3e-7 * want.rest,
                        "{isa:?} k={k} row {i}"
                    );
                    let want_log = want.rest.ln_1p();
                    assert!(
                        (log_s[i] as f64 - want_log).abs() <= 3e-7 * want_log,
                        "{isa:?} k={k} row {i}"
                    );
                    for j in 0..k {
                        let exact = ((row[j] as f64) - (m[i] as f64)).exp();
                        let err = (e[i * k + j] as f64 - exact).abs();
                        assert!(err <= 2.0 * f32::EPSILON as f64 * exact + 1.2e-38);
                    }
                }
            }
        }
    }

    #[test]
    fn forcing_a_path_is_capped_by_the_cpu() {
        assert!(active() <= detected());
        assert!(supported().contains(&Isa::Scalar));
    }
}
