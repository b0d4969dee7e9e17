//! Bootstrap resampling of calibration statistics without copying the inputs.
//!
//! The caller computes, once, each sample's bin `b_i` and two statistics `a_i`, `c_i` (for
//! the binned metrics: confidence and outcome; for a mean such as the Brier score: the
//! per-sample value and 0, in one bin). Every resample `r` is then a weighted re-sum
//! `(Σ_i ω_ri s_i, Σ_i ω_ri s_i a_i, Σ_i ω_ri s_i c_i)` per bin, with `s_i` the sample
//! weight and `ω_ri` a Poisson(1) draw: the Poisson bootstrap (Hanley & MacGibbon 2006,
//! Chamandy et al. 2012), which approximates the multinomial bootstrap without a shared
//! total and lets every weight be drawn independently.
//!
//! # The weights (a documented counter-based scheme)
//! Samples are grouped by bin once (a stable counting sort). The `t`-th sample of bin `b`
//! (counting from 0) in resample `r` gets a 16-bit uniform `u`, a half of the 32-bit hash
//! `h = L(L(q ⊕ k1 ⊕ φ·b) ⊕ k2)` of its pair index `q = 8·⌊t/16⌋ + (t mod 8)` (low half for
//! `t mod 16 < 8`, high half otherwise), where `L` is Wellons' `lowbias32` integer hash,
//! `φ = 0x9E3779B9` and `(k1, k2)` the two halves of SplitMix64 applied to
//! `seed + (r + 1)·0x9E3779B97F4A7C15`. Then `ω = #{k ≥ 1 : u < T_k}` with
//! `T_k = round(2^16·P(X ≥ k))`, `X ~ Poisson(1)`: Poisson(1) quantised to 2^-16 (so
//! `ω ≤ 8`; the mean and variance of `ω` are 1 within 2e-5). A weight depends only on
//! `(seed, r, b, t)`, never on the thread that computes it, and each resample's sums run
//! in one fixed order (eight lanes of fused multiply-adds, reduced in order), so the results
//! are bitwise the same on any thread count and instruction set (the AVX2 path, chosen at
//! run time through `simd::active`, and the portable one).

use crate::error::{check_len, try_vec, Error};
use crate::parallel::map_jobs;

/// What to resample: the number of bins and of resamples, and the generator's seed.
#[derive(Clone, Copy, Debug)]
pub struct BootstrapSpec {
    pub slots: usize,
    pub n_resamples: usize,
    pub seed: u64,
}

/// `(n_resamples, 3, slots)`: per resample and bin, the sums of `ω s`, `ω s a`, `ω s c`.
pub fn bootstrap_len(spec: BootstrapSpec) -> usize {
    3 * spec.slots * spec.n_resamples
}

const LANES: usize = 8;
/// Samples per weight block: 8 hashes, each giving two 16-bit draws.
const STEP: usize = 2 * LANES;
/// Samples of one bin processed for every resample of a job before the next ones (they stay
/// in the first-level cache while the job's resamples run over them).
const BLOCK: usize = 2048;
/// Resamples per job (a fixed number: the jobs do not depend on the thread count).
const RESAMPLES_PER_JOB: usize = 32;

#[inline(always)]
fn lowbias32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^ (x >> 16)
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The keys `(k1, k2)` of resample `r`.
pub fn resample_keys(seed: u64, r: usize) -> (u32, u32) {
    let z = splitmix64(seed.wrapping_add((r as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)));
    (z as u32, (z >> 32) as u32)
}

/// `T_k = round(2^16 · P(X ≥ k))` for `k = 1..=8`, `X ~ Poisson(1)` (`T_9` rounds to 0).
pub fn poisson_thresholds() -> [u16; 8] {
    let mut t = [0u16; 8];
    let (mut term, mut below) = ((-1.0f64).exp(), 0.0f64);
    for (k, tk) in t.iter_mut().enumerate() {
        below += term;
        term /= (k + 1) as f64;
        *tk = ((1.0 - below) * 65536.0).round() as u16;
    }
    t
}

/// The weight of draw `u`.
#[inline(always)]
fn poisson(u: u16, t: &[u16; 8]) -> u16 {
    t.iter().map(|&tk| u16::from(u < tk)).sum()
}

/// The Poisson weight of sample `t` of bin `b` in the resample with keys `keys`, one at a
/// time (the kernel computes the same numbers sixteen at a time).
pub fn weight_of(keys: (u32, u32), b: usize, t: usize, thresholds: &[u16; 8]) -> u16 {
    let q = (8 * (t / STEP) + t % LANES) as u32;
    let h = hash(q, keys.0 ^ bin_key(b), keys.1);
    let u = if t % STEP < LANES {
        h as u16
    } else {
        (h >> 16) as u16
    };
    poisson(u, thresholds)
}

#[inline(always)]
fn bin_key(b: usize) -> u32 {
    (b as u32).wrapping_mul(0x9E37_79B9)
}

#[inline(always)]
fn hash(q: u32, k1: u32, k2: u32) -> u32 {
    lowbias32(lowbias32(q ^ k1) ^ k2)
}

/// The samples grouped by bin: weight `s`, `s·a`, `s·c`, and where each bin starts.
struct Sorted {
    s: Vec<f64>,
    sa: Vec<f64>,
    sc: Vec<f64>,
    start: Vec<usize>,
}

fn group_by_bin(
    bins: &[i64],
    a: &[f64],
    c: &[f64],
    weight: Option<&[f64]>,
    slots: usize,
) -> Result<Sorted, Error> {
    let n = bins.len();
    let mut start = try_vec(slots + 1, 0usize)?;
    for (position, &b) in bins.iter().enumerate() {
        if b < 0 || b as u64 >= slots as u64 {
            return Err(Error::Label {
                arg: "bins",
                position,
                value: b,
                k: slots,
                ignore_index: None,
            });
        }
        start[b as usize + 1] += 1;
    }
    for b in 0..slots {
        start[b + 1] += start[b];
    }
    let mut next = start.clone();
    let (mut s, mut sa, mut sc) = (try_vec(n, 0.0)?, try_vec(n, 0.0)?, try_vec(n, 0.0)?);
    for i in 0..n {
        let b = bins[i] as usize;
        let j = next[b];
        next[b] += 1;
        let w = weight.map_or(1.0, |w| w[i]);
        s[j] = w;
        sa[j] = w * a[i];
        sc[j] = w * c[i];
    }
    Ok(Sorted { s, sa, sc, start })
}

/// Eight lanes of the three running sums of one resample.
#[derive(Clone, Copy, Default)]
struct Lanes {
    w: [f64; LANES],
    a: [f64; LANES],
    c: [f64; LANES],
}

impl Lanes {
    fn total(&self) -> [f64; 3] {
        let sum = |v: &[f64; LANES]| v.iter().sum::<f64>();
        [sum(&self.w), sum(&self.a), sum(&self.c)]
    }
}

/// One block of one bin (samples `t0..t0 + len` of bin `b`) added to every resample of a job.
struct Block<'a> {
    s: &'a [f64],
    sa: &'a [f64],
    sc: &'a [f64],
    /// Position of the block's first sample within its bin (a multiple of [`STEP`]).
    t0: usize,
    bin_key: u32,
}

impl Block<'_> {
    /// Adds the block to the resamples of `keys` (one [`Lanes`] each): full steps of sixteen
    /// samples on the active instruction set, then the tail one sample at a time. Lane `i`
    /// adds sample `i` then sample `i + 8` of each step with a fused multiply-add (exactly
    /// rounded on every path), so every path gives the same bits.
    fn add_to(&self, keys: &[(u32, u32)], acc: &mut [Lanes], thresholds: &[u16; 8]) {
        let full = self.s.len() / STEP * STEP;
        #[cfg(target_arch = "x86_64")]
        if crate::simd::active() >= crate::simd::Isa::Avx2 {
            // SAFETY: the active path is at most what the CPU reports (`simd::active`), so
            // AVX2 and FMA are available.
            unsafe { x86::steps_avx2(self, full, keys, acc, thresholds) };
            self.tail(full, keys, acc, thresholds);
            return;
        }
        self.steps_scalar(full, keys, acc, thresholds);
        self.tail(full, keys, acc, thresholds);
    }

    fn steps_scalar(
        &self,
        full: usize,
        keys: &[(u32, u32)],
        acc: &mut [Lanes],
        thresholds: &[u16; 8],
    ) {
        for (l, &(k1, k2)) in acc.iter_mut().zip(keys) {
            let k1 = k1 ^ self.bin_key;
            for j in (0..full).step_by(STEP) {
                let q0 = (8 * ((self.t0 + j) / STEP)) as u32;
                for half in 0..2 {
                    for i in 0..LANES {
                        let h = hash(q0 + i as u32, k1, k2);
                        let u = (h >> (16 * half)) as u16;
                        let w = f64::from(poisson(u, thresholds));
                        let m = j + half * LANES + i;
                        l.w[i] = w.mul_add(self.s[m], l.w[i]);
                        l.a[i] = w.mul_add(self.sa[m], l.a[i]);
                        l.c[i] = w.mul_add(self.sc[m], l.c[i]);
                    }
                }
            }
        }
    }

    fn tail(&self, full: usize, keys: &[(u32, u32)], acc: &mut [Lanes], thresholds: &[u16; 8]) {
        for (l, &(k1, k2)) in acc.iter_mut().zip(keys) {
            for m in full..self.s.len() {
                let t = self.t0 + m;
                let q = (8 * (t / STEP) + t % LANES) as u32;
                let h = hash(q, k1 ^ self.bin_key, k2);
                let u = if t % STEP < LANES {
                    h as u16
                } else {
                    (h >> 16) as u16
                };
                let w = f64::from(poisson(u, thresholds));
                let i = t % LANES;
                l.w[i] = w.mul_add(self.s[m], l.w[i]);
                l.a[i] = w.mul_add(self.sa[m], l.a[i]);
                l.c[i] = w.mul_add(self.sc[m], l.c[i]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Block, Lanes, LANES, STEP};
    use std::arch::x86_64::*;

    /// `lowbias32` on eight lanes.
    #[inline(always)]
    unsafe fn mix(mut x: __m256i) -> __m256i {
        x = _mm256_xor_si256(x, _mm256_srli_epi32::<16>(x));
        x = _mm256_mullo_epi32(x, _mm256_set1_epi32(0x7feb_352d));
        x = _mm256_xor_si256(x, _mm256_srli_epi32::<15>(x));
        x = _mm256_mullo_epi32(x, _mm256_set1_epi32(0x846c_a68bu32 as i32));
        _mm256_xor_si256(x, _mm256_srli_epi32::<16>(x))
    }

    /// The Poisson weights of eight 16-bit draws (in 32-bit lanes), as two float64 halves.
    #[inline(always)]
    unsafe fn weights(u: __m256i, t: &[__m256i; 8]) -> (__m256d, __m256d) {
        let mut c = _mm256_setzero_si256();
        for tk in t {
            // The mask is −1 where u < T_k.
            c = _mm256_sub_epi32(c, _mm256_cmpgt_epi32(*tk, u));
        }
        (
            _mm256_cvtepi32_pd(_mm256_castsi256_si128(c)),
            _mm256_cvtepi32_pd(_mm256_extracti128_si256::<1>(c)),
        )
    }

    /// [`Block::steps_scalar`] eight lanes at a time.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; `full` must be a multiple of [`STEP`] no larger than
    /// the block.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn steps_avx2(
        b: &Block<'_>,
        full: usize,
        keys: &[(u32, u32)],
        acc: &mut [Lanes],
        thresholds: &[u16; 8],
    ) {
        debug_assert!(full.is_multiple_of(STEP) && full <= b.s.len());
        let t: [__m256i; 8] = thresholds.map(|v| _mm256_set1_epi32(i32::from(v)));
        let low16 = _mm256_set1_epi32(0xffff);
        let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let (s, sa, sc) = (b.s.as_ptr(), b.sa.as_ptr(), b.sc.as_ptr());
        for (l, &(k1, k2)) in acc.iter_mut().zip(keys) {
            let k1 = _mm256_set1_epi32((k1 ^ b.bin_key) as i32);
            let k2 = _mm256_set1_epi32(k2 as i32);
            let mut w = [
                _mm256_loadu_pd(l.w.as_ptr()),
                _mm256_loadu_pd(l.w.as_ptr().add(4)),
            ];
            let mut a = [
                _mm256_loadu_pd(l.a.as_ptr()),
                _mm256_loadu_pd(l.a.as_ptr().add(4)),
            ];
            let mut c = [
                _mm256_loadu_pd(l.c.as_ptr()),
                _mm256_loadu_pd(l.c.as_ptr().add(4)),
            ];
            let mut j = 0;
            while j < full {
                let q0 = _mm256_set1_epi32((8 * ((b.t0 + j) / STEP)) as i32);
                let q = _mm256_add_epi32(q0, lane);
                let h = mix(_mm256_xor_si256(mix(_mm256_xor_si256(q, k1)), k2));
                let halves = [_mm256_and_si256(h, low16), _mm256_srli_epi32::<16>(h)];
                for (half, u) in halves.into_iter().enumerate() {
                    let (w0, w1) = weights(u, &t);
                    let m = j + half * LANES;
                    // SAFETY (of the loads): m + 8 <= full <= the block's length.
                    w[0] = _mm256_fmadd_pd(w0, _mm256_loadu_pd(s.add(m)), w[0]);
                    w[1] = _mm256_fmadd_pd(w1, _mm256_loadu_pd(s.add(m + 4)), w[1]);
                    a[0] = _mm256_fmadd_pd(w0, _mm256_loadu_pd(sa.add(m)), a[0]);
                    a[1] = _mm256_fmadd_pd(w1, _mm256_loadu_pd(sa.add(m + 4)), a[1]);
                    c[0] = _mm256_fmadd_pd(w0, _mm256_loadu_pd(sc.add(m)), c[0]);
                    c[1] = _mm256_fmadd_pd(w1, _mm256_loadu_pd(sc.add(m + 4)), c[1]);
                }
                j += STEP;
            }
            _mm256_storeu_pd(l.w.as_mut_ptr(), w[0]);
            _mm256_storeu_pd(l.w.as_mut_ptr().add(4), w[1]);
            _mm256_storeu_pd(l.a.as_mut_ptr(), a[0]);
            _mm256_storeu_pd(l.a.as_mut_ptr().add(4), a[1]);
            _mm256_storeu_pd(l.c.as_mut_ptr(), c[0]);
            _mm256_storeu_pd(l.c.as_mut_ptr().add(4), c[1]);
        }
    }
}

/// Bootstrap sums of per-sample statistics: for each resample `r` and bin `b`, the sums of
/// `ω s`, `ω s a` and `ω s c` over the samples in bin `b` (see the module's documentation),
/// written to `out` as `(n_resamples, 3, slots)`. `bins[i]` must be in `[0, slots)`.
pub fn bootstrap_sums(
    bins: &[i64],
    a: &[f64],
    c: &[f64],
    weight: Option<&[f64]>,
    spec: BootstrapSpec,
    out: &mut [f64],
) -> Result<(), Error> {
    let n = bins.len();
    check_len(Some(a), n, "a")?;
    check_len(Some(c), n, "c")?;
    check_len(weight, n, "sample_weight")?;
    check_len(Some(&*out), bootstrap_len(spec), "out")?;
    if n > u32::MAX as usize {
        return Err(Error::Size {
            arg: "bins",
            expected: u32::MAX as usize,
            got: n,
        });
    }
    if spec.slots == 0 || spec.n_resamples == 0 {
        return Ok(());
    }
    let sorted = group_by_bin(bins, a, c, weight, spec.slots)?;
    let thresholds = poisson_thresholds();
    let jobs: Vec<(usize, &mut [f64])> = out
        .chunks_mut(RESAMPLES_PER_JOB * 3 * spec.slots)
        .enumerate()
        .collect();
    let work = n.saturating_mul(spec.n_resamples);
    map_jobs(jobs, work, |(job, out)| {
        let r0 = job * RESAMPLES_PER_JOB;
        let nr = out.len() / (3 * spec.slots);
        let keys: Vec<_> = (r0..r0 + nr).map(|r| resample_keys(spec.seed, r)).collect();
        let mut acc = vec![Lanes::default(); nr];
        for b in 0..spec.slots {
            let (lo, hi) = (sorted.start[b], sorted.start[b + 1]);
            acc.iter_mut().for_each(|l| *l = Lanes::default());
            let mut t0 = 0;
            while lo + t0 < hi {
                let end = (lo + t0 + BLOCK).min(hi);
                let block = Block {
                    s: &sorted.s[lo + t0..end],
                    sa: &sorted.sa[lo + t0..end],
                    sc: &sorted.sc[lo + t0..end],
                    t0,
                    bin_key: bin_key(b),
                };
                block.add_to(&keys, &mut acc, &thresholds);
                t0 += BLOCK;
            }
            for (r, l) in acc.iter().enumerate() {
                let [w, sa, sc] = l.total();
                let o = &mut out[r * 3 * spec.slots..(r + 1) * 3 * spec.slots];
                o[b] = w;
                o[spec.slots + b] = sa;
                o[2 * spec.slots + b] = sc;
            }
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_are_the_poisson_tail() {
        let t = poisson_thresholds();
        // P(X ≥ 1) = 1 − 1/e, P(X ≥ 2) = 1 − 2/e.
        assert_eq!(t[0], ((1.0 - (-1.0f64).exp()) * 65536.0).round() as u16);
        assert_eq!(
            t[1],
            ((1.0 - 2.0 * (-1.0f64).exp()) * 65536.0).round() as u16
        );
        assert_eq!(t[7], 1); // 65536 · P(X ≥ 8) = 0.67
        let mean: f64 = t.iter().map(|&v| f64::from(v)).sum::<f64>() / 65536.0;
        assert!((mean - 1.0).abs() < 2e-5, "{mean}");
    }

    /// The kernel against the weights computed one at a time, with unequal bins, a bin
    /// longer than a block and tails of every length.
    #[test]
    fn sums_equal_the_weights_one_at_a_time() {
        let n = 5000;
        let slots = 4;
        let bins: Vec<i64> = (0..n)
            .map(|i| if i % 7 == 0 { 0 } else { (i % 3 + 1) as i64 })
            .collect();
        let a: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin()).collect();
        let c: Vec<f64> = (0..n).map(|i| f64::from(i % 2 == 0)).collect();
        let w: Vec<f64> = (0..n).map(|i| 0.5 + (i % 5) as f64).collect();
        let spec = BootstrapSpec {
            slots,
            n_resamples: 40,
            seed: 7,
        };
        let mut out = vec![0.0; bootstrap_len(spec)];
        bootstrap_sums(&bins, &a, &c, Some(&w), spec, &mut out).unwrap();
        let t = poisson_thresholds();
        for r in [0usize, 1, 31, 32, 39] {
            let keys = resample_keys(spec.seed, r);
            let mut want = vec![0.0; 3 * slots];
            let mut count = vec![0usize; slots];
            for i in 0..n {
                let b = bins[i] as usize;
                let om = f64::from(weight_of(keys, b, count[b], &t));
                count[b] += 1;
                want[b] += om * w[i];
                want[slots + b] += om * w[i] * a[i];
                want[2 * slots + b] += om * w[i] * c[i];
            }
            let got = &out[r * 3 * slots..(r + 1) * 3 * slots];
            for (g, e) in got.iter().zip(&want) {
                assert!(
                    (g - e).abs() <= 1e-9 * e.abs().max(1.0),
                    "r={r}: {g} vs {e}"
                );
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx2_steps_give_the_bits_of_the_portable_ones() {
        if crate::simd::detected() < crate::simd::Isa::Avx2 {
            return;
        }
        let n = 2048;
        let s: Vec<f64> = (0..n).map(|i| 0.25 + (i % 7) as f64).collect();
        let sa: Vec<f64> = (0..n).map(|i| (i as f64 * 0.731).cos()).collect();
        let sc: Vec<f64> = (0..n).map(|i| f64::from(i % 3 == 0)).collect();
        let block = Block {
            s: &s,
            sa: &sa,
            sc: &sc,
            t0: 4096,
            bin_key: bin_key(5),
        };
        let keys: Vec<_> = (0..5).map(|r| resample_keys(11, r)).collect();
        let t = poisson_thresholds();
        let mut portable = vec![Lanes::default(); keys.len()];
        let mut vector = vec![Lanes::default(); keys.len()];
        block.steps_scalar(n, &keys, &mut portable, &t);
        // SAFETY: AVX2 (and FMA, detected with it) was checked above; n is a multiple of 16.
        unsafe { x86::steps_avx2(&block, n, &keys, &mut vector, &t) };
        for (p, v) in portable.iter().zip(&vector) {
            assert_eq!(p.w.map(f64::to_bits), v.w.map(f64::to_bits));
            assert_eq!(p.a.map(f64::to_bits), v.a.map(f64::to_bits));
            assert_eq!(p.c.map(f64::to_bits), v.c.map(f64::to_bits));
        }
    }

    #[test]
    fn the_weights_have_poisson_moments() {
        let t = poisson_thresholds();
        let keys = resample_keys(0, 3);
        let m = 200_000;
        let ws: Vec<f64> = (0..m)
            .map(|i| f64::from(weight_of(keys, 0, i, &t)))
            .collect();
        let mean = ws.iter().sum::<f64>() / m as f64;
        let var = ws.iter().map(|w| (w - mean).powi(2)).sum::<f64>() / m as f64;
        // Standard errors 0.0022 (mean) and 0.0032 (variance): 5 of them.
        assert!((mean - 1.0).abs() < 0.012, "{mean}");
        assert!((var - 1.0).abs() < 0.02, "{var}");
        let zeros = ws.iter().filter(|&&w| w == 0.0).count() as f64 / m as f64;
        assert!((zeros - (-1.0f64).exp()).abs() < 0.006, "{zeros}");
    }

    #[test]
    fn bad_bins_are_refused() {
        let spec = BootstrapSpec {
            slots: 2,
            n_resamples: 1,
            seed: 0,
        };
        let mut out = vec![0.0; bootstrap_len(spec)];
        let err = bootstrap_sums(&[0, 2], &[0.0; 2], &[0.0; 2], None, spec, &mut out);
        assert!(matches!(err, Err(Error::Label { position: 1, .. })));
    }
}
