//! Run-time instruction-set dispatch for float32 vector kernels.
//!
//! A kernel is a type implementing [`SimdOp`]: its `eval` is written once, generic over a
//! vector type ([`F32Vec`]), and [`dispatch`] runs it on AVX-512F, AVX2+FMA or the portable
//! scalar path through one `#[target_feature]` trampoline per instruction set (the pattern of
//! rten's `rten-simd` dispatch). So a new kernel is one `impl SimdOp`, in the file of the
//! loss it belongs to; this module knows no loss. The best path the CPU supports is chosen
//! once, at first use; `XENT_RS_ISA=scalar|avx2|avx512` forces a lower one (a request above
//! what the CPU supports falls back to the best supported), so the tests can check every
//! path this machine has against the reference. Shipped builds target the baseline CPU:
//! nothing here depends on compile-time `target-cpu`.

mod exp;
mod exp64;
mod log1p;
mod rowblock;
mod rowops;
mod softcap;
mod vector;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::sync::OnceLock;

pub use exp::{exp_nonpositive, exp_nonpositive_loose};
pub use exp64::{
    exp_f64_in_place, mul_sech2_f32, refine_rounded_exps_f32, shift_capped_f32, tanh_f32_to_f64,
};
pub use log1p::{log1p_01, log1p_nonnegative, log1p_unit};
pub use rowblock::{
    hard_block, hard_block_lanes, hard_block_on, is_lane_16, narrow_from_f32,
    scale_narrow_from_f32, to_columns, widen_to_f32, HardBlockStats, HardRows, HardTargets,
    HARD_BLOCK_MAX_K, HARD_BLOCK_ROWS,
};
pub use rowops::{
    block_rows_f32, exp_loose_in_place_f32, exp_sum_f32, exp_sum_f32_on, exp_sum_in_place_f32,
    exp_sum_loose_16, exp_sum_loose_f32, exp_sum_loose_f32_on, exp_sum_loose_grad_f32,
    row_block_stats_f32, row_max_16, row_max_f32, row_max_f32_on, scale_f32, BLOCK_MAX_K,
};
pub use softcap::{capped_exp_sum_f32, capped_one_f32, capped_prepass_f32, CapRow};
pub use vector::{bf16_bits, F32Vec, LaneElem};

/// Asks for the cache line at `p` to be brought close (a hint: it never faults, so `p` may
/// point past the end of a buffer, e.g. at the row after the last).
#[inline(always)]
pub fn prefetch(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetcht0` is an SSE instruction (baseline on x86-64) that reads no memory
    // architecturally and cannot fault, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Arguments below this underflow float32's normal range; their exponential is flushed to 0.
pub const FLUSH: f32 = -87.336_54;

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
        if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
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

/// A float32 vector kernel, evaluated generically over the instruction set.
pub trait SimdOp {
    type Output;
    /// Runs the kernel with vectors of type `V`. Implementations are `#[inline(always)]`, so
    /// that they compile inside the caller's `#[target_feature]` trampoline.
    ///
    /// # Safety
    /// The CPU must support `V`'s instruction set; [`dispatch`] guarantees it.
    unsafe fn eval<V: F32Vec>(self) -> Self::Output;
}

fn run<Op: SimdOp>(isa: Isa, op: Op) -> Op::Output {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `run` is only called with `isa <= detected()`, and `Isa::Avx512` is only
        // detected when the CPU reports avx512f.
        Isa::Avx512 => unsafe { x86::run_avx512(op) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above; `Isa::Avx2` is only detected when the CPU reports avx2, fma
        // and f16c.
        Isa::Avx2 => unsafe { x86::run_avx2(op) },
        // SAFETY: the scalar vector type uses no special instructions.
        _ => unsafe { op.eval::<vector::Scalar>() },
    }
}

/// Runs `op` on the active path ([`active`]).
#[inline]
pub fn dispatch<Op: SimdOp>(op: Op) -> Op::Output {
    run(active(), op)
}

/// Runs `op` on an explicitly chosen path (for tests and benchmarks); `None` when the CPU
/// does not support it.
pub fn dispatch_on<Op: SimdOp>(isa: Isa, op: Op) -> Option<Op::Output> {
    (isa <= detected()).then(|| run(isa, op))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Widens 16-bit values and narrows float32 ones on a path.
    struct RoundTrip<'a> {
        bits: &'a [u16],
        f32s: &'a [f32],
        bf16: bool,
        widened: &'a mut [f32],
        narrowed: &'a mut [u16],
    }

    impl SimdOp for RoundTrip<'_> {
        type Output = ();
        unsafe fn eval<V: F32Vec>(self) {
            for i in (0..self.bits.len() - V::LANES + 1).step_by(V::LANES) {
                let (p, q) = (self.bits.as_ptr().add(i), self.f32s.as_ptr().add(i));
                let (w, n) = (
                    self.widened.as_mut_ptr().add(i),
                    self.narrowed.as_mut_ptr().add(i),
                );
                if self.bf16 {
                    V::load_bf16(p).store(w);
                    V::load(q).store_bf16(n);
                } else {
                    V::load_f16(p).store(w);
                    V::load(q).store_f16(n);
                }
            }
        }
    }

    #[test]
    fn sixteen_bit_conversions_match_the_half_crate_on_every_path() {
        let bits: Vec<u16> = (0..=u16::MAX).collect();
        // Every f16 and bf16 value, midpoints between neighbours (ties), and specials.
        let mut f32s: Vec<f32> = Vec::new();
        for &b in &bits {
            let h = half::f16::from_bits(b).to_f32();
            let next = half::f16::from_bits(b.wrapping_add(1)).to_f32();
            f32s.extend([h, 0.5 * (h + next), f32::from_bits((b as u32) << 16)]);
            f32s.push(f32::from_bits(((b as u32) << 16) | 0x8000));
            f32s.push(f32::from_bits(((b as u32) << 16) | 0x8001));
        }
        f32s.extend([f32::MAX, f32::MIN, f32::INFINITY, f32::NAN, 1e-45, 65520.0]);
        f32s.truncate(f32s.len() / 16 * 16);
        let n = bits.len().min(f32s.len());
        for isa in supported() {
            for bf16 in [false, true] {
                let (mut widened, mut narrowed) = (vec![0.0f32; n], vec![0u16; n]);
                let op = RoundTrip {
                    bits: &bits[..n],
                    f32s: &f32s[..n],
                    bf16,
                    widened: &mut widened,
                    narrowed: &mut narrowed,
                };
                dispatch_on(isa, op).unwrap();
                for i in 0..n {
                    let (want_w, want_n) = if bf16 {
                        let b = half::bf16::from_bits(bits[i]);
                        (b.to_f32(), half::bf16::from_f32(f32s[i]).to_bits())
                    } else {
                        let h = half::f16::from_bits(bits[i]);
                        (h.to_f32(), half::f16::from_f32(f32s[i]).to_bits())
                    };
                    let same = widened[i].to_bits() == want_w.to_bits()
                        || (widened[i].is_nan() && want_w.is_nan());
                    assert!(same, "{isa:?} bf16={bf16} widen {:#x}", bits[i]);
                    let nan = f32s[i].is_nan();
                    let ok = if nan {
                        narrowed[i] & 0x7fff > 0x7c00 || bf16 && narrowed[i] & 0x7fff > 0x7f80
                    } else {
                        narrowed[i] == want_n
                    };
                    assert!(
                        ok,
                        "{isa:?} bf16={bf16} narrow {} -> {:#x} vs {want_n:#x}",
                        f32s[i], narrowed[i]
                    );
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
