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
mod rowops;
mod vector;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::sync::OnceLock;

pub use exp::exp_nonpositive;
pub use exp64::{
    exp_f64_in_place, mul_sech2_f32, refine_rounded_exps_f32, shift_capped_f32, tanh_f32_to_f64,
};
pub use log1p::log1p_nonnegative;
pub use rowops::{
    block_rows_f32, exp_sum_f32, exp_sum_f32_on, exp_sum_in_place_f32, row_block_stats_f32,
    row_max_f32, row_max_f32_on, scale_f32, BLOCK_MAX_K,
};
pub use vector::F32Vec;

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
        // SAFETY: as above; `Isa::Avx2` is only detected when the CPU reports avx2 and fma.
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

    #[test]
    fn forcing_a_path_is_capped_by_the_cpu() {
        assert!(active() <= detected());
        assert!(supported().contains(&Isa::Scalar));
    }
}
