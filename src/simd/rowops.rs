//! The float32 row statistics of the softmax family (row maximum, split sum of
//! exponentials, rescaling, and the one-row-per-lane block for short rows), written once over
//! [`F32Vec`] and run on the path [`super::dispatch`] picks.

use super::exp::{exp_nonpositive, exp_nonpositive_loose};
use super::log1p::log1p_nonnegative;
use super::rowblock::cast;
use super::vector::{F32Vec, LaneElem};
use super::{dispatch, dispatch_on, Isa, SimdOp, FLUSH};
use crate::element::Element;
use crate::rowstats::{exp_sum_of_stored, exp_sum_scalar, ExpSum, RowStats};

#[inline(always)]
fn row_max<V: F32Vec, E: LaneElem>(x: &[E]) -> f32 {
    // SAFETY: the caller (a `#[target_feature]` wrapper or the scalar path) guarantees V's
    // instruction set; every load reads `LANES` elements inside `x`, or the masked tail.
    unsafe {
        let mut acc = V::splat(f32::NEG_INFINITY);
        let mut chunks = x.chunks_exact(V::LANES);
        for c in &mut chunks {
            acc = acc.max_keep_nan(E::load::<V>(c.as_ptr()));
        }
        let tail = chunks.remainder();
        if !tail.is_empty() {
            let t = E::load_partial::<V>(tail.as_ptr(), tail.len(), f32::NEG_INFINITY);
            acc = acc.max_keep_nan(t);
        }
        acc.hmax()
    }
}

/// One vector of `exp(x − m)`, exact to about 1 ulp even where `x − m` is not representable:
/// the rounding error of the subtraction (Knuth's TwoSum) is applied as `e·(1 + err)`.
/// `lo_bound = m + FLUSH` (rounded): lanes below it underflow and are exactly 0. The test is
/// on the input itself, not on `x − m`, so it stays right when `m` is so large that
/// `m + FLUSH` rounds to `m` (then every smaller lane is at least one ulp of `m`, far more
/// than 87, below it).
#[inline(always)]
unsafe fn exp_shifted<V: F32Vec>(v: V, m: V, neg_m: V, lo_bound: V) -> V {
    let under = v.lt(lo_bound); // false for NaN, which must propagate
                                // Clamping keeps TwoSum away from inf − inf and the exponent of 2^n in range.
    let xc = lo_bound.max_keep_nan(v);
    let s = xc.sub(m);
    let bp = s.sub(xc);
    let ap = s.sub(bp);
    let err = xc.sub(ap).add(neg_m.sub(bp));
    // `m + FLUSH` may also round down (by up to half an ulp of m): lanes between it and
    // m + FLUSH underflow too.
    let flush = V::splat(FLUSH);
    let e = exp_nonpositive(flush.max_keep_nan(s));
    V::zero_where(under, V::zero_where(s.lt(flush), e.fma(err, e)))
}

/// Accumulates exponentials: the ones that are exactly 1 (the maximum and its ties) are
/// counted, the others summed in f64, so `S − 1` is exact to the last bit of the small terms.
struct SumState<V: F32Vec> {
    acc: V::F64Acc,
    ties: V,
}

impl<V: F32Vec> SumState<V> {
    #[inline(always)]
    unsafe fn new() -> Self {
        SumState {
            acc: V::acc_zero(),
            ties: V::splat(0.0),
        }
    }
    /// The vector with its ties (lanes where `tie` is set) taken out and counted.
    #[inline(always)]
    unsafe fn untie(&mut self, e: V, tie: V::Mask, one: V) -> V {
        self.ties = self.ties.add(V::one_where(tie, one));
        V::zero_where(tie, e)
    }
    #[inline(always)]
    unsafe fn add(&mut self, e: V, one: V) {
        let e = self.untie(e, e.eq(one), one);
        self.acc = V::acc_add(self.acc, e);
    }
    /// Four vectors at once, `tie` marking the lanes to count and leave out: each lane's
    /// four other terms (all below 1, of one sign) are summed pairwise in float32 (two
    /// roundings, 1.2e-7 relative at most) and converted to f64 once; the tie counts are
    /// summed the same way (exact small integers). One dependent add per accumulator per
    /// four vectors, not one per vector.
    #[inline(always)]
    unsafe fn add4(&mut self, e: [V; 4], tie: [V::Mask; 4], one: V) {
        // (No closures here: they would not inherit the caller's target features, and the
        // intrinsics in them would become calls.)
        let t01 = V::one_where(tie[0], one).add(V::one_where(tie[1], one));
        let t23 = V::one_where(tie[2], one).add(V::one_where(tie[3], one));
        self.ties = self.ties.add(t01.add(t23));
        let z01 = V::zero_where(tie[0], e[0]).add(V::zero_where(tie[1], e[1]));
        let z23 = V::zero_where(tie[2], e[2]).add(V::zero_where(tie[3], e[3]));
        self.acc = V::acc_add(self.acc, z01.add(z23));
    }
    /// `S` and `S − 1` (NaN when no lane was a tie: the maximum itself gave NaN), from this
    /// state and `other` (a second one, for latency, or an empty one).
    #[inline(always)]
    unsafe fn finish(self, other: Self, n: usize) -> ExpSum {
        let ties = self.ties.add(other.ties).hsum_f32() as f64;
        let sum = V::acc_sum(self.acc) + V::acc_sum(other.acc);
        let rest = sum + (ties - 1.0).max(0.0);
        let rest = if ties == 0.0 && n > 0 { f64::NAN } else { rest };
        ExpSum {
            total: 1.0 + rest,
            rest,
        }
    }
}

/// Prefetches the floats `i .. i + len` of the row after the `n` at `px` (rows of a batch are
/// contiguous): that row's maximum pass then reads from cache while this compute-bound pass
/// would otherwise leave the memory idle.
#[inline(always)]
fn prefetch_next_row<E>(px: *const E, n: usize, i: usize, len: usize) {
    let line = 64 / std::mem::size_of::<E>(); // elements per 64-byte cache line
    let mut j = 0;
    while j < len {
        super::prefetch(px.wrapping_add(n + i + j).cast());
        j += line;
    }
}

/// The exponentials of the `n` floats at `px`, stored at `ps` unless it is null; `ps` may
/// equal `px` (in place: each vector is read before it is overwritten).
///
/// # Safety
/// The CPU supports `V`'s instruction set; `px` (and a non-null `ps`) are valid for `n`
/// floats; `ps` is either `px` or does not overlap it.
#[inline(always)]
unsafe fn exp_sum_raw<V: F32Vec>(px: *const f32, n: usize, m: f32, ps: *mut f32) -> ExpSum {
    // SAFETY: loads read `LANES` elements at `i < full`, inside the `n` at `px`; stores write
    // the same positions at `ps`; the tail is read and written masked.
    unsafe {
        let mv = V::splat(m);
        let neg_m = V::splat(-m);
        let lo_bound = V::splat(m + FLUSH);
        let one = V::splat(1.0);
        // Each term goes to f64 on its own (no float32 partial sums), so that this sum and
        // the other kernels' (the short-row block, the calibration pass) agree to the last
        // bits of f64, not of float32; two accumulators hide the latency of the f64 adds.
        let (mut sum, mut sum1) = (SumState::<V>::new(), SumState::<V>::new());
        let full = n - n % V::LANES;
        let store = !ps.is_null();
        let mut i = 0;
        while i + 4 * V::LANES <= full {
            prefetch_next_row(px, n, i, 4 * V::LANES);
            let e = [
                exp_shifted(V::load(px.add(i)), mv, neg_m, lo_bound),
                exp_shifted(V::load(px.add(i + V::LANES)), mv, neg_m, lo_bound),
                exp_shifted(V::load(px.add(i + 2 * V::LANES)), mv, neg_m, lo_bound),
                exp_shifted(V::load(px.add(i + 3 * V::LANES)), mv, neg_m, lo_bound),
            ];
            if store {
                for (u, eu) in e.iter().enumerate() {
                    eu.store(ps.add(i + u * V::LANES));
                }
            }
            sum.add(e[0], one);
            sum1.add(e[1], one);
            sum.add(e[2], one);
            sum1.add(e[3], one);
            i += 4 * V::LANES;
        }
        while i < full {
            let e = exp_shifted(V::load(px.add(i)), mv, neg_m, lo_bound);
            sum1.add(e, one);
            if store {
                e.store(ps.add(i));
            }
            i += V::LANES;
        }
        if full < n {
            let v = V::load_partial(px.add(full), n - full, f32::NEG_INFINITY);
            let e = exp_shifted(v, mv, neg_m, lo_bound);
            sum.add(e, one);
            if store {
                e.store_partial(ps.add(full), n - full);
            }
        }
        sum.finish(sum1, n)
    }
}

/// [`exp_sum_raw`] without storing, without the TwoSum correction of `x − m` and with the
/// cheaper [`exp_nonpositive_loose`]: the rounding of each shifted logit (at most
/// `|x_j − m|·2^-24`, relative, in its exponential) and the reduction's `5.5e-9·|x_j − m|`
/// are left in, and bounded instead, as are the terms below `FLUSH` (each counted as
/// `2^-126`). Returns the sum and that bound on the absolute error it adds to `S − 1`,
/// `1.01·(2^-24 + 5.5e-9)·Σ_j e_j |x_j − m| + n·2^-126`.
///
/// With `ZERO`, the terms below `FLUSH` are exactly 0 (the sum of a gradient's
/// exponentials); with `STORE` (which needs `ZERO`) the exponentials are also written to
/// `ps` (which may be `px`: each vector is read before it is written), so a masked class
/// keeps a zero gradient.
///
/// # Safety
/// As for [`exp_sum_raw`], with `px` valid for `n` floats (and `ps`, with `STORE`).
#[inline(always)]
unsafe fn exp_sum_loose_raw<V: F32Vec, E: LaneElem, const STORE: bool, const ZERO: bool>(
    px: *const E,
    n: usize,
    m: f32,
    ps: *mut f32,
) -> (ExpSum, f64) {
    /// `(e, x − m clamped to FLUSH)` of one vector.
    #[inline(always)]
    unsafe fn one_vec<V: F32Vec, const ZERO: bool>(v: V, mv: V, flush: V) -> (V, V) {
        // `v − m` of `−inf` is `−inf` (no inf − inf: m is finite or the row is NaN anyway);
        // it and everything below FLUSH is clamped for `exp`, which makes its term
        // `exp(FLUSH) = 2^-126` instead of a smaller one (counted in the bound; with `ZERO`,
        // zeroed). A NaN row has a NaN maximum: no lane is a tie, so its sum is NaN whatever
        // `exp` gives.
        let s = v.sub(mv);
        let sc = flush.max_keep_nan(s);
        let e = exp_nonpositive_loose(sc);
        if ZERO {
            (V::zero_where(s.lt(flush), e), sc)
        } else {
            (e, sc)
        }
    }
    // SAFETY: loads read `LANES` elements at `i < full`, inside the `n` at `px`; the tail is
    // read masked.
    unsafe {
        let mv = V::splat(m);
        let flush = V::splat(FLUSH);
        let lo_pad = V::splat(f32::MIN);
        let zero = V::splat(0.0);
        let one = V::splat(1.0);
        let mut sum = SumState::<V>::new();
        let mut b = V::splat(0.0);
        let full = n - n % V::LANES;
        let mut i = 0;
        while i + 4 * V::LANES <= full {
            prefetch_next_row(px, n, i, 4 * V::LANES);
            let (e0, s0) = one_vec::<V, ZERO>(E::load(px.add(i)), mv, flush);
            let (e1, s1) = one_vec::<V, ZERO>(E::load(px.add(i + V::LANES)), mv, flush);
            let (e2, s2) = one_vec::<V, ZERO>(E::load(px.add(i + 2 * V::LANES)), mv, flush);
            let (e3, s3) = one_vec::<V, ZERO>(E::load(px.add(i + 3 * V::LANES)), mv, flush);
            if STORE {
                e0.store(ps.add(i));
                e1.store(ps.add(i + V::LANES));
                e2.store(ps.add(i + 2 * V::LANES));
                e3.store(ps.add(i + 3 * V::LANES));
            }
            // One dependent FMA per vector: four per iteration, far below its length.
            b = e3.fma(s3, e2.fma(s2, e1.fma(s1, e0.fma(s0, b))));
            // The maximum's lanes (`x − m = 0`, at least one per row) are rare: one test
            // for the four vectors, and the lane masks only where it finds one.
            let top = s0.max_keep_nan(s1).max_keep_nan(s2.max_keep_nan(s3));
            if V::any(top.eq(zero)) {
                let t = [s0.eq(zero), s1.eq(zero), s2.eq(zero), s3.eq(zero)];
                sum.add4([e0, e1, e2, e3], t, one);
            } else {
                sum.acc = V::acc_add(sum.acc, e0.add(e1).add(e2.add(e3)));
            }
            i += 4 * V::LANES;
        }
        while i < n {
            let v = if i < full {
                E::load::<V>(px.add(i))
            } else {
                E::load_partial::<V>(px.add(full), n - full, f32::NEG_INFINITY)
            };
            let (e, sc) = one_vec::<V, ZERO>(v, mv, flush);
            let tie = sc.eq(zero);
            // (The padding of a partial vector is `-inf`: its lanes are zeroed here.)
            let e = V::zero_where(v.lt(lo_pad), e);
            if STORE {
                if i < full {
                    e.store(ps.add(i));
                } else {
                    e.store_partial(ps.add(full), n - full);
                }
            }
            b = e.fma(sc, b);
            let e = sum.untie(e, tie, one);
            sum.acc = V::acc_add(sum.acc, e);
            i += V::LANES;
        }
        // Per term `e_j·|x_j − m|` times `2^-24` (rounding `x_j − m`) plus `5.5e-9` (the
        // one-constant reduction of `exp_nonpositive_loose`), with a 1% margin for the
        // bound's own float32 sum; and `2^-126` for each clamped term.
        let bound = -(b.hsum_f32() as f64) * ((1.0 / 16_777_216.0 + 5.5e-9) * 1.01)
            + n as f64 * f64::from(f32::MIN_POSITIVE);
        (sum.finish(SumState::new(), n), bound)
    }
}

#[inline(always)]
fn scale<V: F32Vec>(v: &mut [f32], a: f32) {
    // SAFETY: as in `row_max`; loads and stores stay inside `v`.
    unsafe {
        let av = V::splat(a);
        let mut chunks = v.chunks_exact_mut(V::LANES);
        for c in &mut chunks {
            V::load(c.as_ptr()).mul(av).store(c.as_mut_ptr());
        }
        for e in chunks.into_remainder() {
            *e *= a;
        }
    }
}

/// The most classes a row may have to be processed one row per lane.
pub const BLOCK_MAX_K: usize = 16;

/// Statistics of `LANES` rows of `k <= BLOCK_MAX_K` elements at once, one row per lane, so
/// that short rows do not leave most lanes idle or pay a horizontal reduction each: per row
/// the maximum, the split sum `S − 1` (f64) and `log S` (f32 `log1p`), and, when `store` is
/// given, the exponentials (row-major, like `x`).
#[inline(always)]
fn row_block<V: F32Vec>(
    x: &[f32],
    k: usize,
    m_out: &mut [f32],
    rest_out: &mut [f64],
    log_out: &mut [f32],
    store: Option<&mut [f32]>,
) {
    let lanes = V::LANES;
    assert!(k <= BLOCK_MAX_K && x.len() == lanes * k && m_out.len() >= lanes);
    // SAFETY: as in `row_max`; the staging buffers hold `BLOCK_MAX_K × 16` values and we
    // use `k × LANES`, reading and writing whole vectors at multiples of `LANES`.
    unsafe {
        // Transpose through a staging buffer: plain loads and stores beat hardware gathers.
        let mut columns = [0.0f32; BLOCK_MAX_K * 16]; // (zeroing 1 KB is cheap next to exp)
        for (i, row) in x.chunks_exact(k).enumerate() {
            for (j, &v) in row.iter().enumerate() {
                columns[j * lanes + i] = v;
            }
        }
        let pc = columns.as_ptr();
        let mut mv = V::splat(f32::NEG_INFINITY);
        for j in 0..k {
            mv = mv.max_keep_nan(V::load(pc.add(j * lanes)));
        }
        let neg_m = V::splat(0.0).sub(mv);
        let lo_bound = mv.add(V::splat(FLUSH));
        let one = V::splat(1.0);
        let mut sums = SumState::<V>::new();
        let mut staged = [0.0f32; BLOCK_MAX_K * 16];
        for j in 0..k {
            let e = exp_shifted(V::load(pc.add(j * lanes)), mv, neg_m, lo_bound);
            sums.add(e, one);
            e.store(staged.as_mut_ptr().add(j * lanes));
        }
        let mut acc = [0.0f64; 16];
        let mut ties = [0.0f32; 16];
        let mut rest32 = [0.0f32; 16];
        V::acc_lanes(sums.acc, acc.as_mut_ptr());
        sums.ties.store(ties.as_mut_ptr());
        mv.store(m_out.as_mut_ptr());
        for i in 0..lanes {
            let rest = if ties[i] == 0.0 {
                f64::NAN // the maximum itself gave NaN
            } else {
                acc[i] + (ties[i] as f64 - 1.0)
            };
            rest_out[i] = rest;
            rest32[i] = rest as f32;
        }
        log1p_nonnegative(V::load(rest32.as_ptr())).store(log_out.as_mut_ptr());
        if let Some(st) = store {
            for (i, row) in st.chunks_exact_mut(k).enumerate() {
                for (j, v) in row.iter_mut().enumerate() {
                    *v = staged[j * lanes + i];
                }
            }
        }
    }
}

/// A row of logits of one of the lane types: one dispatched function per kernel serves
/// all three (separate instances for the 16-bit types moved the float32 code, which on the
/// 2-core VM measured made 2-thread float32 calls 15% slower).
#[derive(Clone, Copy)]
enum Lanes<'a> {
    F32(&'a [f32]),
    F16(&'a [half::f16]),
    Bf16(&'a [half::bf16]),
}

struct RowMaxAny<'a>(Lanes<'a>);
impl SimdOp for RowMaxAny<'_> {
    type Output = f32;
    #[inline(always)]
    unsafe fn eval<V: F32Vec>(self) -> f32 {
        match self.0 {
            Lanes::F32(x) => row_max::<V, f32>(x),
            Lanes::F16(x) => row_max::<V, half::f16>(x),
            Lanes::Bf16(x) => row_max::<V, half::bf16>(x),
        }
    }
}

struct ExpSumLooseAny<'a> {
    x: Lanes<'a>,
    m: f32,
}
impl SimdOp for ExpSumLooseAny<'_> {
    type Output = (ExpSum, f64);
    #[inline(always)]
    unsafe fn eval<V: F32Vec>(self) -> (ExpSum, f64) {
        let m = self.m;
        // SAFETY: `eval`'s contract gives the instruction set.
        unsafe {
            match self.x {
                Lanes::F32(x) => loose_sum::<V, _>(x, m),
                Lanes::F16(x) => loose_sum::<V, _>(x, m),
                Lanes::Bf16(x) => loose_sum::<V, _>(x, m),
            }
        }
    }
}

struct ExpSumLooseGradAny<'a> {
    x: Lanes<'a>,
    m: f32,
    store: Option<&'a mut [f32]>,
}
impl SimdOp for ExpSumLooseGradAny<'_> {
    type Output = (ExpSum, f64);
    #[inline(always)]
    unsafe fn eval<V: F32Vec>(self) -> (ExpSum, f64) {
        let (m, store) = (self.m, self.store);
        // SAFETY: `eval`'s contract gives the instruction set.
        unsafe {
            match self.x {
                Lanes::F32(x) => loose_grad_sum::<V, _>(x, m, store),
                Lanes::F16(x) => loose_grad_sum::<V, _>(x, m, store),
                Lanes::Bf16(x) => loose_grad_sum::<V, _>(x, m, store),
            }
        }
    }
}

/// Where the exponentials of a row go.
enum ExpStore<'a> {
    /// Read `x`, store into `store` (same length) when given.
    Read(&'a [f32], Option<&'a mut [f32]>),
    /// Overwrite the row with its exponentials.
    InPlace(&'a mut [f32]),
}

struct ExpSumOp<'a> {
    rows: ExpStore<'a>,
    m: f32,
}
impl SimdOp for ExpSumOp<'_> {
    type Output = ExpSum;
    #[inline(always)]
    unsafe fn eval<V: F32Vec>(self) -> ExpSum {
        let (px, n, ps) = match self.rows {
            ExpStore::Read(x, None) => (x.as_ptr(), x.len(), std::ptr::null_mut()),
            ExpStore::Read(x, Some(s)) => {
                assert_eq!(x.len(), s.len());
                (x.as_ptr(), x.len(), s.as_mut_ptr())
            }
            ExpStore::InPlace(v) => (v.as_ptr(), v.len(), v.as_mut_ptr()),
        };
        // SAFETY: `eval`'s contract gives the instruction set; the pointers come from slices
        // of `n` floats, and a separate `store` is a distinct `&mut` (cannot overlap `x`).
        unsafe { exp_sum_raw::<V>(px, n, self.m, ps) }
    }
}

/// The loss's sum of a row of lane type `E`.
///
/// # Safety
/// The CPU supports `V`'s instruction set.
#[inline(always)]
unsafe fn loose_sum<V: F32Vec, E: LaneElem>(x: &[E], m: f32) -> (ExpSum, f64) {
    // SAFETY: the caller's contract; pointer and length come from one slice.
    unsafe { exp_sum_loose_raw::<V, E, false, false>(x.as_ptr(), x.len(), m, std::ptr::null_mut()) }
}

/// A gradient's sum (flushed terms exactly 0) of a row of lane type `E`, its exponentials
/// stored when asked.
///
/// # Safety
/// The CPU supports `V`'s instruction set.
#[inline(always)]
unsafe fn loose_grad_sum<V: F32Vec, E: LaneElem>(
    x: &[E],
    m: f32,
    store: Option<&mut [f32]>,
) -> (ExpSum, f64) {
    // SAFETY: the caller's contract; the pointers and lengths come from slices of `n`
    // elements (a store is a distinct `&mut`, so it cannot overlap).
    unsafe {
        match store {
            None => {
                exp_sum_loose_raw::<V, E, false, true>(x.as_ptr(), x.len(), m, std::ptr::null_mut())
            }
            Some(s) => {
                assert_eq!(s.len(), x.len());
                let (px, ps) = (x.as_ptr(), s.as_mut_ptr());
                exp_sum_loose_raw::<V, E, true, true>(px, x.len(), m, ps)
            }
        }
    }
}

/// A gradient's exponentials written over its logits.
struct ExpLooseInPlace<'a> {
    v: &'a mut [f32],
    m: f32,
}
impl SimdOp for ExpLooseInPlace<'_> {
    type Output = ();
    #[inline(always)]
    unsafe fn eval<V: F32Vec>(self) {
        let (p, n) = (self.v.as_mut_ptr(), self.v.len());
        // SAFETY: `eval`'s contract gives the instruction set; one slice of `n` floats, read
        // and written in place (the kernel reads each vector before writing it).
        unsafe {
            exp_sum_loose_raw::<V, f32, true, true>(p, n, self.m, p);
        }
    }
}

struct Scale<'a>(&'a mut [f32], f32);
impl SimdOp for Scale<'_> {
    type Output = ();
    #[inline(always)]
    unsafe fn eval<V: F32Vec>(self) {
        scale::<V>(self.0, self.1)
    }
}

/// The outputs of one row block: per lane the maximum, `S − 1` and `log S`.
struct BlockOut {
    m: [f32; 16],
    rest: [f64; 16],
    log_s: [f32; 16],
}

struct RowBlock<'a> {
    x: &'a [f32],
    k: usize,
    store: Option<&'a mut [f32]>,
}
impl SimdOp for RowBlock<'_> {
    type Output = BlockOut;
    #[inline(always)]
    unsafe fn eval<V: F32Vec>(self) -> BlockOut {
        let mut o = BlockOut {
            m: [0.0; 16],
            rest: [0.0; 16],
            log_s: [0.0; 16],
        };
        row_block::<V>(
            self.x,
            self.k,
            &mut o.m,
            &mut o.rest,
            &mut o.log_s,
            self.store,
        );
        o
    }
}

/// `max_j x_j` of a float32 row (`-inf` for an empty row; NaN is not guaranteed to win, but
/// a NaN logit still makes the row NaN through [`exp_sum_f32`]).
#[inline]
pub fn row_max_f32(x: &[f32]) -> f32 {
    dispatch(RowMaxAny(Lanes::F32(x)))
}

/// `Σ exp(x_j − m)` of a float32 row split as in [`ExpSum`], writing each exponential to
/// `store` when given.
#[inline]
pub fn exp_sum_f32(x: &[f32], m: f32, store: Option<&mut [f32]>) -> ExpSum {
    let es = dispatch(ExpSumOp {
        rows: ExpStore::Read(x, store),
        m,
    });
    refine_tiny_rest(x, m, es)
}

/// [`exp_sum_f32`] of a row whose exponentials are not wanted, without correcting the
/// rounding of `x_j − m` (about a third fewer operations): returns the sum and a bound on the
/// absolute error that rounding adds to `S − 1` (see [`exp_sum_loose_raw`]), for the caller
/// to compare with the accuracy it needs, and to call [`exp_sum_f32`] when it is not met.
#[inline]
pub fn exp_sum_loose_f32(x: &[f32], m: f32) -> (ExpSum, f64) {
    refine_loose(
        x,
        m,
        dispatch(ExpSumLooseAny {
            x: Lanes::F32(x),
            m,
        }),
    )
}

/// [`exp_sum_loose_f32`] for a gradient: the terms below `FLUSH` are exactly 0, and with
/// `store` the exponentials are written there, each within `2^-22 + 6.5e-8·|x_j − m|`
/// relative (at most 6e-6, for the smallest terms). With and without `store` the sum is
/// the same, bit for bit.
#[inline]
pub fn exp_sum_loose_grad_f32(x: &[f32], m: f32, store: Option<&mut [f32]>) -> (ExpSum, f64) {
    let x32 = Lanes::F32(x);
    refine_loose(x, m, dispatch(ExpSumLooseGradAny { x: x32, m, store }))
}

/// Overwrites the row with the exponentials [`exp_sum_loose_grad_f32`] would store.
#[inline]
pub fn exp_loose_in_place_f32(v: &mut [f32], m: f32) {
    dispatch(ExpLooseInPlace { v, m });
}

/// The loose sum, or for a row whose `S − 1` is tiny, the exact f64 sum (bound 0).
#[inline(always)]
fn refine_loose<E: Element>(x: &[E], m: f32, (es, bound): (ExpSum, f64)) -> (ExpSum, f64) {
    if es.rest < TINY_REST {
        return (exp_sum_scalar::<_, f32>(x, m as f64, None), 0.0);
    }
    (es, bound)
}

/// [`exp_sum_loose_f32`] (or, with `store`, [`exp_sum_loose_grad_f32`]) on an explicit
/// path (its raw kernel, without the refinement).
pub fn exp_sum_loose_f32_on(
    isa: Isa,
    x: &[f32],
    m: f32,
    store: Option<&mut [f32]>,
) -> Option<(ExpSum, f64)> {
    match store {
        None => dispatch_on(
            isa,
            ExpSumLooseAny {
                x: Lanes::F32(x),
                m,
            },
        ),
        store => dispatch_on(
            isa,
            ExpSumLooseGradAny {
                x: Lanes::F32(x),
                m,
                store,
            },
        ),
    }
}

/// `x` as [`Lanes`] when `T` is a 16-bit float.
fn lanes_16<T: 'static>(x: &[T]) -> Option<Lanes<'_>> {
    match cast::<T, half::f16>(x) {
        Some(h) => Some(Lanes::F16(h)),
        None => cast::<T, half::bf16>(x).map(Lanes::Bf16),
    }
}

/// [`row_max_f32`] of a float16 or bfloat16 row, widened in registers.
pub fn row_max_16<T: 'static>(x: &[T]) -> Option<f32> {
    Some(dispatch(RowMaxAny(lanes_16(x)?)))
}

/// The loose sums of a float16 or bfloat16 row, widened in registers.
pub fn exp_sum_loose_16<T: Element>(
    x: &[T],
    m: f32,
    grad: bool,
    store: Option<&mut [f32]>,
) -> Option<(ExpSum, f64)> {
    let lanes = lanes_16(x)?;
    let raw = match grad {
        false => dispatch(ExpSumLooseAny { x: lanes, m }),
        true => dispatch(ExpSumLooseGradAny { x: lanes, m, store }),
    };
    Some(refine_loose(x, m, raw))
}

/// [`exp_sum_f32`] overwriting the row with its exponentials (no second buffer).
#[inline]
pub fn exp_sum_in_place_f32(v: &mut [f32], m: f32) -> ExpSum {
    let es = dispatch(ExpSumOp {
        rows: ExpStore::InPlace(v),
        m,
    });
    if es.rest < TINY_REST {
        // The logits are gone: re-sum from the (flushed) float32 exponentials. Their sum is
        // tiny, so only its relative precision matters, and the flushed terms are below
        // 2^-126 each: rows this confident keep ~1e-7 relative unless K·2^-126 matters.
        return exp_sum_of_stored(v);
    }
    es
}

/// Below this `S − 1`, terms that the float32 kernels flush (each below 2^-126) could
/// matter at 1e-7 relative: such rows (extremely confident ones) are summed again in f64.
pub(super) const TINY_REST: f64 = 1e-25;

/// `es`, or for a row whose `S − 1` is tiny, the exact f64 sum (the stored float32
/// exponentials stay as they are: they only feed gradients).
fn refine_tiny_rest(x: &[f32], m: f32, es: ExpSum) -> ExpSum {
    if es.rest < TINY_REST {
        exp_sum_scalar::<_, f32>(x, m as f64, None)
    } else {
        es
    }
}

/// `v[j] *= a`.
#[inline]
pub fn scale_f32(v: &mut [f32], a: f32) {
    dispatch(Scale(v, a))
}

/// Rows per [`row_block_stats_f32`] call for rows of `k` float32 elements (0: none).
#[inline]
pub fn block_rows_f32(k: usize) -> usize {
    match super::active() {
        _ if !(2..=BLOCK_MAX_K).contains(&k) => 0,
        Isa::Avx512 => 16,
        Isa::Avx2 => 8,
        Isa::Scalar => 0,
    }
}

/// Row statistics of [`block_rows_f32`] rows at once, one row per lane.
#[inline]
pub fn row_block_stats_f32(x: &[f32], k: usize, stats: &mut [RowStats], store: Option<&mut [f32]>) {
    block_stats(x, k, dispatch(RowBlock { x, k, store }), stats)
}

#[inline]
fn block_stats(x: &[f32], k: usize, o: BlockOut, stats: &mut [RowStats]) {
    for (i, st) in stats.iter_mut().enumerate() {
        let es = ExpSum {
            total: 1.0 + o.rest[i],
            rest: o.rest[i],
        };
        let refined = refine_tiny_rest(&x[i * k..(i + 1) * k], o.m[i], es);
        *st = RowStats {
            m: o.m[i] as f64,
            es: refined,
            log_s: if refined.rest == es.rest {
                o.log_s[i] as f64
            } else {
                refined.log_sum()
            },
        };
    }
}

/// The same kernels on an explicitly chosen path (for tests and benchmarks); `None` when the
/// CPU does not support it.
pub fn exp_sum_f32_on(isa: Isa, x: &[f32], m: f32, store: Option<&mut [f32]>) -> Option<ExpSum> {
    dispatch_on(
        isa,
        ExpSumOp {
            rows: ExpStore::Read(x, store),
            m,
        },
    )
}

/// [`row_max_f32`] on an explicit path.
pub fn row_max_f32_on(isa: Isa, x: &[f32]) -> Option<f32> {
    dispatch_on(isa, RowMaxAny(Lanes::F32(x)))
}

#[cfg(test)]
mod tests {
    use super::super::supported;
    use super::*;

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
                let want = exp_sum_scalar::<_, f32>(&x, m as f64, None);
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
    fn the_loose_sum_is_within_its_bound_on_every_path() {
        let mut all = rows();
        // Far terms only, and a maximum with low bits, where `x − m` rounds.
        all.push(
            (0..37)
                .map(|j| 0.3 - 20.0 - j as f32 * 1.37)
                .chain([0.3])
                .collect(),
        );
        all.push(
            (0..45)
                .map(|j| 1e-10 * j as f32 - 60.0)
                .chain([10.1])
                .collect(),
        );
        for isa in supported() {
            for x in &all {
                let m = row_max_f32_on(isa, x).unwrap();
                let (got, bound) = exp_sum_loose_f32_on(isa, x, m, None).unwrap();
                let want = exp_sum_scalar::<_, f32>(x, m as f64, None);
                if want.rest.is_nan() {
                    assert!(got.rest.is_nan(), "{isa:?} {x:?}");
                    continue;
                }
                // `(2^-24 + 5.5e-9)·Σ e_j|x_j − m|`, plus `2^-126` per term (those below
                // FLUSH count as that, the others' share is negligible).
                let exact_shift: f64 = x
                    .iter()
                    .map(|&v| (v as f64) - (m as f64))
                    .filter(|&s| s >= FLUSH as f64)
                    .map(|s| s.exp() * s.abs())
                    .sum::<f64>()
                    * (2f64.powi(-24) + 5.5e-9);
                let flushed = x.len() as f64 * 2f64.powi(-126);
                assert!(
                    bound >= exact_shift + flushed
                        && bound <= 1.02 * exact_shift + 1.0001 * flushed,
                    "{isa:?} {x:?} {bound} {exact_shift}"
                );
                let tol = 3e-7 * want.rest + bound + 1e-37;
                assert!(
                    (got.rest - want.rest).abs() <= tol,
                    "{isa:?} {x:?}: {got:?} {want:?} {bound}"
                );
                // Storing: no larger error, each stored term within its stated bound, and
                // the terms below FLUSH exactly 0.
                let mut e = vec![f32::NAN; x.len()];
                let (st, sb) = exp_sum_loose_f32_on(isa, x, m, Some(&mut e)).unwrap();
                assert!(
                    sb <= bound && (st.rest - want.rest).abs() <= tol,
                    "{isa:?} {x:?}"
                );
                for (&v, &ej) in x.iter().zip(&e) {
                    let d = v as f64 - m as f64;
                    if d < FLUSH as f64 {
                        assert_eq!(ej, 0.0, "{isa:?} {v}");
                    } else {
                        let rel = (ej as f64 / d.exp() - 1.0).abs();
                        assert!(rel <= 2.4e-7 + 6.5e-8 * d.abs(), "{isa:?} {v} {rel}");
                    }
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
                let (loose, _) = exp_sum_loose_f32_on(isa, &x, m, None).unwrap();
                assert!(loose.rest.is_nan(), "{isa:?} {x:?}");
                let mut e = vec![0.0f32; x.len()];
                let (stored, _) = exp_sum_loose_f32_on(isa, &x, m, Some(&mut e)).unwrap();
                assert!(stored.rest.is_nan(), "{isa:?} {x:?}");
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
            for k in 2..=BLOCK_MAX_K {
                let mut x: Vec<f32> = (0..lanes * k)
                    .map(|i| ((i * 7919 % 97) as f32 - 48.0) * 0.37)
                    .collect();
                x[k + 1] = f32::NEG_INFINITY; // a masked class
                x[2 * k..3 * k].fill(f32::NEG_INFINITY); // an all-masked row
                x[3 * k] = f32::NAN;
                x[4 * k..5 * k].fill(2.5); // all ties
                x[5 * k] = 1e30; // a huge maximum
                let mut e = vec![0.0f32; x.len()];
                let o = dispatch_on(
                    isa,
                    RowBlock {
                        x: &x,
                        k,
                        store: Some(&mut e),
                    },
                )
                .unwrap();
                for i in 0..lanes {
                    let row = &x[i * k..(i + 1) * k];
                    let m = row_max_f32_on(Isa::Scalar, row).unwrap();
                    let want = exp_sum_scalar::<_, f32>(row, m as f64, None);
                    if want.rest.is_nan() {
                        assert!(
                            o.rest[i].is_nan() && o.log_s[i].is_nan(),
                            "{isa:?} k={k} row {i}"
                        );
                        continue;
                    }
                    assert!(
                        (o.rest[i] - want.rest).abs() <= 3e-7 * want.rest,
                        "{isa:?} k={k} row {i}"
                    );
                    let want_log = want.rest.ln_1p();
                    assert!(
                        (o.log_s[i] as f64 - want_log).abs() <= 3e-7 * want_log,
                        "{isa:?} k={k} row {i}"
                    );
                    for j in 0..k {
                        let exact = ((row[j] as f64) - (o.m[i] as f64)).exp();
                        let err = (e[i * k + j] as f64 - exact).abs();
                        assert!(err <= 2.0 * f32::EPSILON as f64 * exact + 1.2e-38);
                    }
                }
            }
        }
    }
}
