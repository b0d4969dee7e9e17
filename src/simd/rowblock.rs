//! Short softmax rows (2 ≤ K ≤ [`HARD_BLOCK_MAX_K`]) with a class-index target, finished
//! one row per lane: a block of up to [`HARD_BLOCK_ROWS`] rows is transposed to columns (in
//! 8 × 8 register tiles), and per lane the maximum, the split sum of exponentials, `log S`,
//! the target's logit and the derivatives of `b·(p − onehot(t)) + a·p` (`a = zd·lse`) are
//! formed in vector registers, so that no loop over a row's elements runs in scalar code.
//! Several vectors of rows per call let the long per-row dependency chains (the sums, `log1p`,
//! the division) of one vector overlap with the work of the next. Rows may be float32 or
//! 16-bit floats (widened in registers, rounded once on output).
//!
//! Accuracy as the one-row kernels: the exponentials are those of
//! [`super::rowops`] (TwoSum-corrected `x − m`), `S − 1` is summed in f64 from the
//! non-maximal terms (so `log S` is `log1p` of it and a confident row keeps full relative
//! precision; rows whose `S − 1` is below 1e-25 are summed again in f64), and `1 − p_j` of a
//! maximal class is `(S − 1)/S`, never a subtraction from 1.

use super::log1p::log1p_nonnegative;
use super::rowops::TINY_REST;
use super::vector::{F32Vec, LaneElem};
use super::{Isa, SimdOp, FLUSH};
use std::any::TypeId;
use std::mem::MaybeUninit;

/// The most classes a row may have for the one-row-per-lane finish.
pub const HARD_BLOCK_MAX_K: usize = 32;

/// The most rows per call (a multiple of every path's lane count).
pub const HARD_BLOCK_ROWS: usize = 32;

/// Float32 values a block may hold.
const BLOCK_VALUES: usize = HARD_BLOCK_MAX_K * HARD_BLOCK_ROWS;

/// Per row of a block: the row maximum, `S − 1`, `log S` and the target's logit (the
/// maximum for an ignored row).
#[derive(Clone, Copy, Debug)]
pub struct HardBlockStats {
    pub m: [f32; HARD_BLOCK_ROWS],
    pub rest: [f64; HARD_BLOCK_ROWS],
    pub log_s: [f64; HARD_BLOCK_ROWS],
    pub xt: [f32; HARD_BLOCK_ROWS],
}

impl Default for HardBlockStats {
    fn default() -> Self {
        HardBlockStats {
            m: [0.0; HARD_BLOCK_ROWS],
            rest: [0.0; HARD_BLOCK_ROWS],
            log_s: [0.0; HARD_BLOCK_ROWS],
            xt: [0.0; HARD_BLOCK_ROWS],
        }
    }
}

/// Per row of a block: the target class (as a float) or −1 for an ignored row (zero
/// derivatives), and the coefficient `b` of `p − onehot(t)` (the target's weight over the
/// divisor).
#[derive(Clone, Copy, Debug)]
pub struct HardTargets {
    pub t: [f32; HARD_BLOCK_ROWS],
    pub b: [f32; HARD_BLOCK_ROWS],
}

/// A block of rows for [`hard_block`], of element type `E`.
struct HardBlock<'a, E> {
    /// `rows × k` logits, row-major; `rows` a multiple of the path's lanes, at most
    /// [`HARD_BLOCK_ROWS`].
    x: &'a [E],
    k: usize,
    tg: &'a HardTargets,
    /// The coefficient of `lse·p` added to the gradient (the z-loss's `2z / D_z`; 0 for none).
    zd: f32,
    /// Receives the gradient (`rows × k`, row-major) when given.
    grad: Option<&'a mut [E]>,
    /// Receives the Hessian diagonal `(b + a)·p·(1 − p) + zd·p²` when given.
    hess: Option<&'a mut [E]>,
    /// Receives the per-row statistics.
    out: &'a mut HardBlockStats,
}

/// Loads `n` elements at `p` into `n` float32s at `out`, a vector at a time.
#[inline(always)]
unsafe fn widen<V: F32Vec, E: LaneElem>(p: *const E, n: usize, out: *mut f32) {
    let mut i = 0;
    while i + V::LANES <= n {
        E::load::<V>(p.add(i)).store(out.add(i));
        i += V::LANES;
    }
    if i < n {
        E::load_partial::<V>(p.add(i), n - i, 0.0).store_partial(out.add(i), n - i);
    }
}

/// Stores `n` float32s at `src` as `n` elements at `p`, a vector at a time; with `SCALE`
/// each first multiplied by `scale` in float32.
#[inline(always)]
unsafe fn narrow<V: F32Vec, E: LaneElem, const SCALE: bool>(
    src: *const f32,
    n: usize,
    scale: f32,
    p: *mut E,
) {
    let a = V::splat(scale);
    let mut i = 0;
    while i + V::LANES <= n {
        let v = V::load(src.add(i));
        E::store::<V>(if SCALE { v.mul(a) } else { v }, p.add(i));
        i += V::LANES;
    }
    if i < n {
        let v = V::load_partial(src.add(i), n - i, 0.0);
        E::store_partial::<V>(if SCALE { v.mul(a) } else { v }, p.add(i), n - i);
    }
}

/// Row-major `r × k` at `rows` to columns (`cols[j·r + i] = rows[i·k + j]`), in 8 × 8
/// tiles (the last column tile overlapping the one before when 8 does not divide `k`) where
/// the path has 8 lanes or more (then 8 divides `r`).
///
/// # Safety
/// The CPU supports `V`'s instruction set; `rows` holds `r × k` floats and `cols` room for
/// as many, not overlapping them.
#[inline(always)]
pub unsafe fn to_columns<V: F32Vec>(rows: *const f32, k: usize, r: usize, cols: *mut f32) {
    if V::LANES < 8 {
        for i in 0..r {
            for j in 0..k {
                *cols.add(j * r + i) = *rows.add(i * k + j);
            }
        }
        return;
    }
    for i0 in (0..r).step_by(8) {
        if k < 8 {
            V::transpose8(rows.add(i0 * k), k, 8, k, cols.add(i0), r);
            continue;
        }
        let mut j0 = 0;
        loop {
            let j = j0.min(k - 8);
            V::transpose8(rows.add(i0 * k + j), k, 8, 8, cols.add(j * r + i0), r);
            j0 += 8;
            if j0 >= k {
                break;
            }
        }
    }
}

/// The inverse of [`to_columns`].
#[inline(always)]
unsafe fn to_rows<V: F32Vec>(cols: *const f32, k: usize, r: usize, rows: *mut f32) {
    if V::LANES < 8 {
        for i in 0..r {
            for j in 0..k {
                *rows.add(i * k + j) = *cols.add(j * r + i);
            }
        }
        return;
    }
    for i0 in (0..r).step_by(8) {
        if k < 8 {
            V::transpose8(cols.add(i0), r, k, 8, rows.add(i0 * k), k);
            continue;
        }
        let mut j0 = 0;
        loop {
            let j = j0.min(k - 8);
            V::transpose8(cols.add(j * r + i0), r, 8, 8, rows.add(i0 * k + j), k);
            j0 += 8;
            if j0 >= k {
                break;
            }
        }
    }
}

/// Writes the columns at `cols` as the row-major block `out` of element type `E`.
#[inline(always)]
unsafe fn store_rows<V: F32Vec, E: LaneElem>(cols: *const f32, k: usize, r: usize, out: &mut [E]) {
    match cast_mut::<E, f32>(out) {
        Some(o) => to_rows::<V>(cols, k, r, o.as_mut_ptr()),
        None => {
            let mut flat = MaybeUninit::<[f32; BLOCK_VALUES]>::uninit();
            let flat = flat.as_mut_ptr().cast::<f32>();
            to_rows::<V>(cols, k, r, flat);
            narrow::<V, E, false>(flat, r * k, 1.0, out.as_mut_ptr());
        }
    }
}

/// `exp(x − m)` of one vector, as the one-row kernels' `exp_shifted` for every lane whose result is not
/// flushed: the rounding error of `x − m` (TwoSum) is applied as `e·(1 + err)`, and lanes
/// whose `x − m` is below [`FLUSH`] are 0 (the TwoSum of a huge or infinite gap may be NaN
/// there; it is discarded with the lane). Lanes of `x ≥ m + FLUSH` get exactly what
/// `exp_shifted` gives; further below, both are 0 or below the smallest normal float.
#[inline(always)]
unsafe fn exp_gap<V: F32Vec>(x: V, m: V, neg_m: V) -> V {
    let s = x.sub(m);
    let bp = s.sub(x);
    let ap = s.sub(bp);
    let err = x.sub(ap).add(neg_m.sub(bp));
    let flush = V::splat(FLUSH);
    let e = super::exp::exp_nonpositive(flush.max_keep_nan(s));
    V::zero_where(s.lt(flush), e.fma(err, e))
}

/// One column of the first pass: its exponentials (stored over it when `STORE`), the
/// target's logit picked where `t` is `j`, the ties with the maximum counted and the rest
/// summed in f64.
#[inline(always)]
unsafe fn column_exp<V: F32Vec, const STORE: bool>(
    pc: *mut f32,
    j: usize,
    s: &mut ColumnSums<V>,
    acc: &mut V::F64Acc,
    ties: &mut V,
) {
    let c = V::load(pc);
    let e = exp_gap(c, s.m, s.neg_m);
    s.xt = V::select(s.t.eq(V::splat(j as f32)), c, s.xt);
    let tie = e.eq(s.one);
    *ties = ties.add(V::one_where(tie, s.one));
    *acc = V::acc_add(*acc, V::zero_where(tie, e));
    if STORE {
        e.store(pc);
    }
}

/// The first pass over the columns of the `LANES` rows at `pq` (column stride `r`): per
/// lane the maximum, the target's logit, the ties and the two f64 partial sums.
#[inline(always)]
unsafe fn first_pass<V: F32Vec, const STORE: bool>(
    pq: *mut f32,
    k: usize,
    r: usize,
    t: V,
) -> (ColumnSums<V>, V::F64Acc, V::F64Acc) {
    let mut mv = V::load(pq);
    for j in 1..k {
        mv = mv.max_keep_nan(V::load(pq.add(j * r)));
    }
    let mut s = ColumnSums {
        m: mv,
        neg_m: V::splat(0.0).sub(mv),
        one: V::splat(1.0),
        t,
        xt: mv,
        ties: V::splat(0.0),
    };
    // Two accumulators of each kind hide the latency of the adds.
    let (mut acc0, mut acc1) = (V::acc_zero(), V::acc_zero());
    let (mut ties0, mut ties1) = (V::splat(0.0), V::splat(0.0));
    let mut j = 0;
    while j + 2 <= k {
        column_exp::<V, STORE>(pq.add(j * r), j, &mut s, &mut acc0, &mut ties0);
        column_exp::<V, STORE>(pq.add((j + 1) * r), j + 1, &mut s, &mut acc1, &mut ties1);
        j += 2;
    }
    if j < k {
        column_exp::<V, STORE>(pq.add(j * r), j, &mut s, &mut acc0, &mut ties0);
    }
    s.ties = ties0.add(ties1);
    (s, acc0, acc1)
}

/// The per-lane state of the first pass over the columns.
struct ColumnSums<V> {
    m: V,
    neg_m: V,
    one: V,
    t: V,
    xt: V,
    ties: V,
}

impl<E: LaneElem> SimdOp for HardBlock<'_, E> {
    type Output = ();

    // Per-row arrays are indexed by row, as the vectors are by lane.
    #[allow(clippy::needless_range_loop)]
    #[inline(always)]
    unsafe fn eval<V: F32Vec>(self) {
        let (lanes, k) = (V::LANES, self.k);
        let r = self.x.len() / k.max(1);
        assert!((1..=HARD_BLOCK_MAX_K).contains(&k) && r * k == self.x.len());
        assert!(r <= HARD_BLOCK_ROWS && r.is_multiple_of(lanes));
        assert!(self.grad.as_ref().is_none_or(|g| g.len() == r * k));
        assert!(self.hess.as_ref().is_none_or(|h| h.len() == r * k));
        // SAFETY: `eval`'s contract gives V's instruction set; every buffer below holds
        // `BLOCK_VALUES ≥ r × k` floats and is read only where written before, in whole
        // vectors at multiples of `LANES` below `r × k`; `x`, `grad` and `hess` are `r × k`
        // long (asserted), and the transposes stay inside them.
        unsafe {
            let mut cols = MaybeUninit::<[f32; BLOCK_VALUES]>::uninit();
            let pc = cols.as_mut_ptr().cast::<f32>();
            match cast::<E, f32>(self.x) {
                Some(x) => to_columns::<V>(x.as_ptr(), k, r, pc),
                None => {
                    let mut flat = MaybeUninit::<[f32; BLOCK_VALUES]>::uninit();
                    let flat = flat.as_mut_ptr().cast::<f32>();
                    widen::<V, E>(self.x.as_ptr(), r * k, flat);
                    to_columns::<V>(flat, k, r, pc);
                }
            }
            let st = self.out;
            let one = V::splat(1.0);
            let (mut sum0, mut sum1) = ([0.0f64; HARD_BLOCK_ROWS], [0.0f64; HARD_BLOCK_ROWS]);
            let mut tie_n = [0.0f32; HARD_BLOCK_ROWS];
            let derivs = self.grad.is_some() || self.hess.is_some();
            for q in (0..r).step_by(lanes) {
                let pq = pc.add(q);
                let t = V::load(self.tg.t.as_ptr().add(q));
                let (s, acc0, acc1) = if derivs {
                    first_pass::<V, true>(pq, k, r, t)
                } else {
                    first_pass::<V, false>(pq, k, r, t)
                };
                V::acc_lanes(acc0, sum0.as_mut_ptr().add(q));
                V::acc_lanes(acc1, sum1.as_mut_ptr().add(q));
                s.ties.store(tie_n.as_mut_ptr().add(q));
                s.m.store(st.m.as_mut_ptr().add(q));
                s.xt.store(st.xt.as_mut_ptr().add(q));
            }
            let mut rest32 = [0.0f32; HARD_BLOCK_ROWS];
            let mut tiny = false;
            for i in 0..r {
                let rest = if tie_n[i] == 0.0 {
                    f64::NAN // the maximum itself gave NaN
                } else {
                    (sum0[i] + sum1[i]) + (tie_n[i] as f64 - 1.0)
                };
                st.rest[i] = rest;
                rest32[i] = rest as f32;
                tiny |= rest < TINY_REST;
            }
            let mut log32 = [0.0f32; HARD_BLOCK_ROWS];
            for q in (0..r).step_by(lanes) {
                log1p_nonnegative(V::load(rest32.as_ptr().add(q))).store(log32.as_mut_ptr().add(q));
            }
            for i in 0..r {
                st.log_s[i] = log32[i] as f64;
            }
            if tiny {
                // Terms the float32 exponentials flush could matter: those rows in f64.
                for i in 0..r {
                    if st.rest[i] >= TINY_REST || st.rest[i].is_nan() {
                        continue;
                    }
                    let m = st.m[i] as f64;
                    let mut rest = 0.0;
                    let mut ties = 0usize;
                    for j in 0..k {
                        let d = self.x[i * k + j].to_f32() as f64 - m;
                        if d == 0.0 {
                            ties += 1;
                        } else {
                            rest += d.exp();
                        }
                    }
                    let rest = rest + ties.saturating_sub(1) as f64;
                    st.rest[i] = rest;
                    st.log_s[i] = rest.ln_1p();
                    rest32[i] = rest as f32;
                }
            }
            if !derivs {
                return;
            }
            let mut lse32 = [0.0f32; HARD_BLOCK_ROWS];
            for i in 0..r {
                lse32[i] = (st.m[i] as f64 + st.log_s[i]) as f32;
            }
            let mut hcols = MaybeUninit::<[f32; BLOCK_VALUES]>::uninit();
            let ph = hcols.as_mut_ptr().cast::<f32>();
            let want_h = self.hess.is_some();
            for q in (0..r).step_by(lanes) {
                let tv = V::load(self.tg.t.as_ptr().add(q));
                let ignored = tv.lt(V::splat(0.0));
                let any_ignored = V::any(ignored);
                let rest = V::load(rest32.as_ptr().add(q));
                let inv_s = one.div(one.add(rest));
                let omp_max = rest.mul(inv_s);
                let zd = V::zero_where(ignored, V::splat(self.zd));
                let m = V::load(st.m.as_ptr().add(q));
                let a = zd.mul(V::load(lse32.as_ptr().add(q)));
                let b = V::load(self.tg.b.as_ptr().add(q));
                let ab = a.add(b);
                let scale = ab.mul(inv_s);
                // The target's entry −b (1 − p_t) + a p_t, its exponential recomputed (the
                // same bits as in its column); (a + b) p elsewhere.
                let e_t = exp_gap(V::load(st.xt.as_ptr().add(q)), m, V::splat(0.0).sub(m));
                let p_t = e_t.mul(inv_s);
                let omp_t = V::select(e_t.eq(one), omp_max, one.sub(p_t));
                let g_t = p_t.fma(a, V::splat(0.0).sub(b).mul(omp_t));
                for j in 0..k {
                    let at = j * r + q;
                    let e = V::load(pc.add(at));
                    if want_h {
                        let p = e.mul(inv_s);
                        let omp = V::select(e.eq(one), omp_max, one.sub(p));
                        let h = p.mul(omp).mul(ab).add(zd.mul(p).mul(p));
                        V::zero_where(ignored, h).store(ph.add(at));
                    }
                    let g = V::select(tv.eq(V::splat(j as f32)), g_t, e.mul(scale));
                    let g = if any_ignored {
                        V::zero_where(ignored, g)
                    } else {
                        g
                    };
                    g.store(pc.add(at));
                }
            }
            if let Some(g) = self.grad {
                store_rows::<V, E>(pc, k, r, g);
            }
            if let Some(h) = self.hess {
                store_rows::<V, E>(ph, k, r, h);
            }
        }
    }
}

/// The row granularity of [`hard_block`] for rows of `k` elements of type `E` on the
/// active path (blocks hold a multiple of it, up to [`HARD_BLOCK_ROWS`]); 0: no such kernel
/// for this `k`, type or path.
#[inline]
pub fn hard_block_lanes<E: 'static>(k: usize) -> usize {
    let id = TypeId::of::<E>();
    let lane_type = id == TypeId::of::<f32>()
        || id == TypeId::of::<half::f16>()
        || id == TypeId::of::<half::bf16>();
    match super::active() {
        _ if !lane_type || !(2..=HARD_BLOCK_MAX_K).contains(&k) => 0,
        Isa::Avx512 => 16,
        Isa::Avx2 => 8,
        Isa::Scalar => 0,
    }
}

/// `x` as a slice of `E` when `T` is `E`.
#[inline(always)]
pub(super) fn cast<T: 'static, E: 'static>(x: &[T]) -> Option<&[E]> {
    // SAFETY: `T` is `E` (same type id), so the slice is one of `E`s.
    (TypeId::of::<T>() == TypeId::of::<E>())
        .then(|| unsafe { std::slice::from_raw_parts(x.as_ptr().cast::<E>(), x.len()) })
}

/// See [`cast`].
#[inline(always)]
fn cast_mut<T: 'static, E: 'static>(x: &mut [T]) -> Option<&mut [E]> {
    // SAFETY: as in `cast`; the borrow of `x` moves into the result.
    (TypeId::of::<T>() == TypeId::of::<E>())
        .then(|| unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr().cast::<E>(), x.len()) })
}

/// Widens 16-bit floats to float32 (exactly), a vector at a time.
struct Widen<'a, E> {
    x: &'a [E],
    out: &'a mut [f32],
}
impl<E: LaneElem> SimdOp for Widen<'_, E> {
    type Output = ();
    #[inline(always)]
    unsafe fn eval<V: F32Vec>(self) {
        assert_eq!(self.x.len(), self.out.len());
        // SAFETY: `eval`'s contract gives V's instruction set; both slices hold `len` values.
        unsafe { widen::<V, E>(self.x.as_ptr(), self.x.len(), self.out.as_mut_ptr()) }
    }
}

/// Rounds float32 values, each first multiplied by `scale` in float32 (1 leaves them as
/// they are), to a 16-bit type (to nearest, ties to even), a vector at a time.
struct Narrow<'a, E> {
    w: &'a [f32],
    scale: f32,
    out: &'a mut [E],
}
impl<E: LaneElem> SimdOp for Narrow<'_, E> {
    type Output = ();
    #[inline(always)]
    unsafe fn eval<V: F32Vec>(self) {
        let (w, n, p) = (self.w.as_ptr(), self.w.len(), self.out.as_mut_ptr());
        assert_eq!(n, self.out.len());
        // SAFETY: `eval`'s contract gives V's instruction set; both slices hold `n` values.
        unsafe { narrow::<V, E, true>(w, n, self.scale, p) }
    }
}

/// Whether `T` is float16 or bfloat16 (the types [`widen_to_f32`] and [`narrow_from_f32`]
/// take).
pub fn is_lane_16<T: 'static>() -> bool {
    let id = TypeId::of::<T>();
    id == TypeId::of::<half::f16>() || id == TypeId::of::<half::bf16>()
}

/// `out[j] = x[j]` widened to float32 with the active path's conversions (F16C, AVX-512F),
/// when `T` is float16 or bfloat16; `false` (nothing written) for other types.
pub fn widen_to_f32<T: 'static>(x: &[T], out: &mut [f32]) -> bool {
    if let Some(x) = cast::<T, half::f16>(x) {
        super::dispatch(Widen { x, out });
    } else if let Some(x) = cast::<T, half::bf16>(x) {
        super::dispatch(Widen { x, out });
    } else {
        return false;
    }
    true
}

/// `out[j] = w[j]` rounded to `T` with the active path's conversions, when `T` is float16
/// or bfloat16; `false` (nothing written) for other types.
pub fn narrow_from_f32<T: 'static>(w: &[f32], out: &mut [T]) -> bool {
    scale_narrow_from_f32(w, 1.0, out)
}

/// `out[j] = f32(w[j]·a)` rounded to `T` ([`narrow_from_f32`] of `w` rescaled as
/// [`super::scale_f32`] rescales, in one pass), when `T` is float16 or bfloat16; `false`
/// (nothing written) for other types.
pub fn scale_narrow_from_f32<T: 'static>(w: &[f32], scale: f32, out: &mut [T]) -> bool {
    if TypeId::of::<T>() == TypeId::of::<half::f16>() {
        let out = cast_mut::<T, half::f16>(out).expect("float16");
        super::dispatch(Narrow { w, scale, out });
    } else if TypeId::of::<T>() == TypeId::of::<half::bf16>() {
        let out = cast_mut::<T, half::bf16>(out).expect("bfloat16");
        super::dispatch(Narrow { w, scale, out });
    } else {
        return false;
    }
    true
}

/// A block of rows of any element type: `rows × k` logits, row-major, and where given the
/// buffers (of the same length) that receive the gradient and the Hessian diagonal.
pub struct HardRows<'a, T> {
    pub x: &'a [T],
    pub grad: Option<&'a mut [T]>,
    pub hess: Option<&'a mut [T]>,
}

/// Runs one block on `isa`: per row (lane) the statistics into `out`, and the derivatives
/// of `b·(p − onehot(t)) + zd·lse·p` (Hessian diagonal `(b + zd·lse)·p(1 − p) + zd·p²`) into
/// `rows`, zero for ignored rows. The number of rows must be a multiple of the path's lanes
/// and at most [`HARD_BLOCK_ROWS`]; `None` for an element type without the kernel, or where
/// the CPU lacks `isa`.
pub fn hard_block_on<T: 'static>(
    isa: Isa,
    rows: HardRows<'_, T>,
    k: usize,
    tg: &HardTargets,
    zd: f32,
    out: &mut HardBlockStats,
) -> Option<()> {
    fn typed<E: LaneElem, T: 'static>(
        isa: Isa,
        rows: HardRows<'_, T>,
        k: usize,
        tg: &HardTargets,
        zd: f32,
        out: &mut HardBlockStats,
    ) -> Option<()> {
        let block = HardBlock::<E> {
            x: cast(rows.x)?,
            k,
            tg,
            zd,
            grad: rows.grad.map(|g| cast_mut(g).expect("same type as x")),
            hess: rows.hess.map(|h| cast_mut(h).expect("same type as x")),
            out,
        };
        super::dispatch_on(isa, block)
    }
    let id = TypeId::of::<T>();
    if id == TypeId::of::<f32>() {
        typed::<f32, T>(isa, rows, k, tg, zd, out)
    } else if id == TypeId::of::<half::f16>() {
        typed::<half::f16, T>(isa, rows, k, tg, zd, out)
    } else if id == TypeId::of::<half::bf16>() {
        typed::<half::bf16, T>(isa, rows, k, tg, zd, out)
    } else {
        None
    }
}

/// [`hard_block_on`] on the active path; the type must have [`hard_block_lanes`] > 0.
#[inline]
pub fn hard_block<T: 'static>(
    rows: HardRows<'_, T>,
    k: usize,
    tg: &HardTargets,
    zd: f32,
    out: &mut HardBlockStats,
) {
    hard_block_on(super::active(), rows, k, tg, zd, out).expect("a lane element type")
}

#[cfg(test)]
mod tests {
    use super::super::supported;
    use super::*;

    /// The f64 statistics and derivatives of one row (target `t`, `b`, `zd` as in the kernel).
    /// Also the size of each gradient entry's terms (a difference at the target).
    #[allow(clippy::type_complexity)]
    fn exact(x: &[f32], t: i32, b: f64, zd: f64) -> (f64, f64, f64, Vec<f64>, Vec<f64>, Vec<f64>) {
        let m = x.iter().fold(f64::NEG_INFINITY, |a, &v| a.max(v as f64));
        let (mut rest, mut ties) = (0.0f64, 0usize);
        for &v in x {
            let d = v as f64 - m;
            if d == 0.0 {
                ties += 1;
            } else {
                rest += d.exp();
            }
        }
        let rest = rest + ties.saturating_sub(1) as f64;
        let s = 1.0 + rest;
        let lse = m + rest.ln_1p();
        let (mut g, mut h) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        let mut size = vec![0.0; x.len()];
        if t >= 0 {
            let a = zd * lse;
            for (j, &v) in x.iter().enumerate() {
                let d = v as f64 - m;
                let p = d.exp() / s;
                let omp = if d == 0.0 { rest / s } else { 1.0 - p };
                // b (p − 1) as −b (1 − p): no cancellation near p = 1.
                g[j] = if j as i32 == t {
                    a * p - b * omp
                } else {
                    (a + b) * p
                };
                h[j] = (a + b) * p * omp + zd * p * p;
                size[j] = (a * p).abs() + (b * omp).abs() + g[j].abs();
            }
        }
        (m, rest, rest.ln_1p(), g, h, size)
    }

    fn block_rows_of(isa: Isa) -> usize {
        match isa {
            Isa::Scalar => 1,
            Isa::Avx2 => 8,
            Isa::Avx512 => 16,
        }
    }

    #[test]
    fn every_path_matches_f64_for_every_k_and_block_size() {
        for isa in supported() {
            let lanes = block_rows_of(isa);
            for k in 1..=HARD_BLOCK_MAX_K {
                for r in (lanes..=HARD_BLOCK_ROWS).step_by(lanes * 3) {
                    let mut x: Vec<f32> = (0..r * k)
                        .map(|i| ((i * 7919 % 211) as f32 - 105.0) * 0.21)
                        .collect();
                    let row = |i: usize| i % r * k..(i % r + 1) * k;
                    x[row(1)][k / 2] = f32::NEG_INFINITY; // a masked class
                    x[row(2)].fill(2.5); // all ties
                    x[row(3)][0] += 60.0; // confident: S − 1 ≈ 1e-26, refined in f64
                    x[row(4)].iter_mut().for_each(|v| *v += 1e30); // m − 87 rounds to m
                    x[row(5)].fill(f32::NEG_INFINITY); // all masked: NaN
                    x[row(6)][k - 1] = f32::NAN;
                    let mut tg = HardTargets {
                        t: [-1.0; HARD_BLOCK_ROWS],
                        b: [0.0; HARD_BLOCK_ROWS],
                    };
                    for i in 0..r {
                        tg.t[i] = if i % 5 == 4 {
                            -1.0
                        } else {
                            ((i * 3) % k) as f32
                        };
                        tg.b[i] = 0.25 + i as f32 * 0.125;
                    }
                    let zd = if k % 2 == 0 { 0.0 } else { 0.01 };
                    let (mut g, mut h) = (vec![7.0f32; r * k], vec![7.0f32; r * k]);
                    let mut st = HardBlockStats::default();
                    let rows = HardRows {
                        x: &x[..],
                        grad: Some(&mut g[..]),
                        hess: Some(&mut h[..]),
                    };
                    hard_block_on(isa, rows, k, &tg, zd, &mut st).unwrap();
                    for i in 0..r {
                        let xr = &x[i * k..(i + 1) * k];
                        let t = tg.t[i] as i32;
                        let (m, rest, log_s, eg, eh, gs) = exact(xr, t, tg.b[i] as f64, zd as f64);
                        let at = format!("{isa:?} k={k} r={r} row {i}");
                        if rest.is_nan() {
                            assert!(st.rest[i].is_nan() && st.log_s[i].is_nan(), "{at}");
                        } else {
                            assert_eq!(st.m[i] as f64, m, "{at}");
                            assert!((st.rest[i] - rest).abs() <= 3e-7 * rest, "{at}");
                            assert!((st.log_s[i] - log_s).abs() <= 3e-7 * log_s, "{at}");
                        }
                        if t >= 0 && !xr[t as usize].is_nan() {
                            assert_eq!(st.xt[i], xr[t as usize], "{at}");
                        }
                        for j in 0..k {
                            let (gv, hv) = (g[i * k + j] as f64, h[i * k + j] as f64);
                            if t < 0 {
                                assert!(gv == 0.0 && hv == 0.0, "{at}: ignored row {j}");
                            } else if eg[j].is_nan() {
                                assert!(gv.is_nan() && hv.is_nan(), "{at} {j}");
                            } else {
                                let size = gs[j] + 1e-30;
                                assert!(
                                    (gv - eg[j]).abs() <= 1e-6 * size,
                                    "{at} g{j}: {gv} {}",
                                    eg[j]
                                );
                                let size = eh[j].abs() + 1e-30;
                                assert!((hv - eh[j]).abs() <= 1e-6 * size, "{at} h{j}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn sixteen_bit_rows_give_the_widened_rows_results_rounded_once() {
        for isa in supported() {
            let lanes = block_rows_of(isa);
            for k in [2usize, 7, 8, 9, 16, 31, 32] {
                let r = lanes * 2;
                let x: Vec<half::f16> = (0..r * k)
                    .map(|i| half::f16::from_f32(((i * 37 % 101) as f32 - 50.0) * 0.3))
                    .collect();
                let x32: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
                let mut tg = HardTargets {
                    t: [-1.0; HARD_BLOCK_ROWS],
                    b: [1.0; HARD_BLOCK_ROWS],
                };
                for i in 0..r {
                    tg.t[i] = (i % k) as f32;
                }
                let mut g16 = vec![half::f16::ZERO; r * k];
                let mut g32 = vec![0.0f32; r * k];
                let (mut s16, mut s32) = (HardBlockStats::default(), HardBlockStats::default());
                let rows = HardRows {
                    x: &x[..],
                    grad: Some(&mut g16[..]),
                    hess: None,
                };
                hard_block_on(isa, rows, k, &tg, 0.0, &mut s16).unwrap();
                let rows = HardRows {
                    x: &x32[..],
                    grad: Some(&mut g32[..]),
                    hess: None,
                };
                hard_block_on(isa, rows, k, &tg, 0.0, &mut s32).unwrap();
                assert_eq!(s16.log_s, s32.log_s, "{isa:?} k={k}");
                for (a, b) in g16.iter().zip(&g32) {
                    assert_eq!(
                        a.to_bits(),
                        half::f16::from_f32(*b).to_bits(),
                        "{isa:?} k={k}"
                    );
                }
            }
        }
    }

    #[test]
    fn slice_conversions_match_the_half_crate() {
        let w: Vec<f32> = (0..1003)
            .map(|i| (i as f32 - 500.0) * 0.37 + 1e-3)
            .collect();
        let mut h = vec![half::f16::ZERO; w.len()];
        let mut b = vec![half::bf16::ZERO; w.len()];
        assert!(narrow_from_f32(&w, &mut h) && narrow_from_f32(&w, &mut b));
        let mut back = vec![0.0f32; w.len()];
        assert!(widen_to_f32(&h, &mut back));
        for ((&v, &hv), &bk) in w.iter().zip(&h).zip(&back) {
            assert_eq!(hv, half::f16::from_f32(v));
            assert_eq!(bk, hv.to_f32());
        }
        assert!(widen_to_f32(&b, &mut back));
        for ((&v, &bv), &bk) in w.iter().zip(&b).zip(&back) {
            assert_eq!(bv, half::bf16::from_f32(v));
            assert_eq!(bk, bv.to_f32());
        }
        assert!(!widen_to_f32(&w, &mut back) && !narrow_from_f32(&w, &mut back.clone()));
    }

    /// This thread's CPU time in seconds (a loaded machine inflates wall time).
    fn cpu_seconds() -> f64 {
        #[repr(C)]
        struct Timespec {
            sec: i64,
            nsec: i64,
        }
        extern "C" {
            fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
        }
        let mut ts = Timespec { sec: 0, nsec: 0 };
        // SAFETY: CLOCK_THREAD_CPUTIME_ID (3) and a valid out-pointer, as Linux's libc takes.
        unsafe { clock_gettime(3, &mut ts) };
        ts.sec as f64 + ts.nsec as f64 * 1e-9
    }

    /// Times the kernel (`cargo test --release bench_hard_block -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn bench_hard_block() {
        let isa = super::super::active();
        let lanes = HARD_BLOCK_ROWS;
        for k in [10usize, 32, 3] {
            let n = lanes * 1024;
            let x: Vec<f32> = (0..n * k)
                .map(|i| ((i * 7919 % 1000) as f32) * 0.01 - 5.0)
                .collect();
            let mut g = vec![0.0f32; n * k];
            let tg = HardTargets {
                t: [1.0; HARD_BLOCK_ROWS],
                b: [0.001; HARD_BLOCK_ROWS],
            };
            let mut st = HardBlockStats::default();
            for grad in [false, true] {
                let mut best = f64::INFINITY;
                for _ in 0..20 {
                    let t0 = cpu_seconds();
                    for (xb, gb) in x.chunks_exact(lanes * k).zip(g.chunks_exact_mut(lanes * k)) {
                        let rows = HardRows {
                            x: xb,
                            grad: grad.then_some(gb),
                            hess: None,
                        };
                        hard_block_on(isa, rows, k, &tg, 0.0, &mut st).unwrap();
                    }
                    best = best.min(cpu_seconds() - t0);
                }
                println!(
                    "{isa:?} k={k} grad={grad}: {:.2} ns/row",
                    best * 1e9 / n as f64
                );
            }
        }
    }
}
