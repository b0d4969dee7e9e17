//! Fused linear + cross-entropy and InfoNCE without the logits matrix.
//!
//! For `hidden (N, D)`, `weight (V, D)` and optional `bias (V,)` the loss is the cross-entropy
//! of `z = s · hidden @ weightᵀ + bias` (`s` is 1, or `1/τ` for InfoNCE), optionally soft-capped
//! `y = c · tanh(z / c)` (Gemma 2) and with a z-loss `ζ · lse(y)²` per non-ignored row (PaLM).
//! With `g = ∂L/∂y` from the cross-entropy row kernel ([`crate::cce::cce_row`]) plus
//! `2ζ · lse · softmax(y) / D`, and `g_z = g · (1 − (y/c)²)`:
//!
//! * `grad_hidden = s · g_z @ weight`, `grad_weight = s · g_zᵀ @ hidden`, `grad_bias = Σ_rows g_z`.
//!
//! Rows are processed `R` at a time (the chunk): its `R × V` logits exist only in one buffer,
//! which the row kernel overwrites with their gradient. Each chunk runs three parallel phases
//! whose pieces depend only on the shapes, never on the thread count: (A) the logits, one job
//! per slice of `V`; (B) loss and gradient rows then `grad_hidden` of a block of rows, one job
//! per block; (D) `grad_weight` and `grad_bias` of a slice of `V`, each accumulated over the
//! chunks in chunk order. Every output element is therefore computed by the same sequence of
//! operations for any thread count: results are bit-identical across thread counts.
//!
//! The products are the `gemm` crate's (run-time CPU dispatch; called single-threaded inside
//! each job, the library's pool supplies the parallelism).

use crate::batch::{check_labels, RowTarget};
use crate::cce::{cce_row, CceSpec, Derivs, RowResult};
use crate::error::{check_len, try_vec, Error};
use crate::parallel::{map_jobs, ordered_sum};
use crate::real::Real;

/// Columns of `V` per job of the logits and `grad_weight` phases.
const V_SLICE: usize = 1024;

/// Bytes of logits a chunk may hold when the caller does not choose `R`. Each chunk streams
/// `weight` through the row phase's two blocks and `grad_weight` through the last phase, about
/// `2/R` bytes of memory traffic per flop: a few hundred rows make that small against the
/// products (measured at `4096 × 768 × 50257`, 2 threads: the same CPU time for `R` = 240 and
/// 496, 5% more for 160), while 48 MiB keeps the extra memory under a tenth of what the unfused
/// computation holds (its logits, their softmax and their gradient: three `N × V` arrays).
const CHUNK_BYTES: usize = 48 << 20;

/// Rows per chunk when none is given: as many as fit [`CHUNK_BYTES`] of logits, a multiple of
/// 16 between 16 and 4096, and no more than the batch.
pub fn auto_chunk_rows(n: usize, v: usize, elem_bytes: usize) -> usize {
    let fit = CHUNK_BYTES / (v.max(1) * elem_bytes.max(1));
    let r = (fit / 16 * 16).clamp(16, 4096);
    r.min(n.max(1))
}

/// Rows per job of the row phase for a chunk of `r` rows: two blocks (each packs all of
/// `weight` for its `grad_hidden` product), at least 16 rows each.
fn block_rows(r: usize) -> usize {
    r.div_ceil(2).max(16)
}

/// The inputs of a call (row-major, contiguous).
#[derive(Clone, Copy)]
pub struct LinearInputs<'a, T> {
    /// `N × D`.
    pub hidden: &'a [T],
    /// `V × D`.
    pub weight: &'a [T],
    /// `V`.
    pub bias: Option<&'a [T]>,
    /// `N` class indices in `[0, V)` or `ignore_index`.
    pub labels: &'a [i64],
    /// `N` factors multiplying each row's gradient (an upstream gradient of per-row losses).
    pub row_weight: Option<&'a [T]>,
}

/// Parameters of a call.
#[derive(Clone, Copy, Debug)]
pub struct LinearSpec {
    pub d: usize,
    pub v: usize,
    pub ignore_index: i64,
    pub label_smoothing: f64,
    /// `ζ` of the z-loss `ζ · lse²` (0: none).
    pub z_loss: f64,
    /// `c` of the soft cap `c · tanh(z / c)`, positive; `None`: no cap.
    pub softcap: Option<f64>,
    /// Divides every gradient (the mean's divisor; 1 for the other reductions).
    pub divisor: f64,
    /// `s` in `z = s · hidden @ weightᵀ + bias`.
    pub scale: f64,
    /// Rows per chunk (`R`), at least 1.
    pub chunk_rows: usize,
}

/// Output buffers; the gradients are all written or none (`grad_bias` only with a bias).
pub struct LinearOutputs<'a, T> {
    /// `N` per-row losses.
    pub losses: Option<&'a mut [T]>,
    /// `N × D`.
    pub grad_hidden: Option<&'a mut [T]>,
    /// `V × D`.
    pub grad_weight: Option<&'a mut [T]>,
    /// `V`.
    pub grad_bias: Option<&'a mut [T]>,
}

/// The element types computed natively (the 16-bit ones are widened by the caller).
pub trait LinearReal: Real {
    fn tanh(self) -> Self;
}
impl LinearReal for f32 {
    #[inline(always)]
    fn tanh(self) -> Self {
        f32::tanh(self)
    }
}
impl LinearReal for f64 {
    #[inline(always)]
    fn tanh(self) -> Self {
        f64::tanh(self)
    }
}

/// A pointer handed to jobs that write disjoint parts of what it points to.
#[derive(Clone, Copy)]
struct Shared<T>(*mut T);
// SAFETY: every job given a `Shared` writes only the elements its own index range selects
// (disjoint across jobs), and the buffer outlives the jobs (`map_jobs` joins them).
unsafe impl<T> Send for Shared<T> {}
// SAFETY: as for `Send`: concurrent jobs never touch the same element.
unsafe impl<T> Sync for Shared<T> {}

impl<T> Shared<T> {
    /// The address of element `i` (a method, so that closures capture the whole `Shared`).
    fn at(self, i: usize) -> *mut T {
        self.0.wrapping_add(i)
    }
}

/// A matrix operand: `ptr[i · rs + j · cs]` is element `(i, j)`.
#[derive(Clone, Copy)]
struct Mat<T> {
    ptr: *const T,
    rs: usize,
    cs: usize,
}

/// `dst (m × n, row stride dst_rs) = [dst +] s · lhs (m × k) · rhs (k × n)`.
///
/// # Safety
/// Every element addressed by the strides must lie inside its allocation; `dst` must not be
/// read or written by anyone else meanwhile, nor overlap `lhs` or `rhs`.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul<T: LinearReal>(
    (m, n, k): (usize, usize, usize),
    dst: *mut T,
    dst_rs: usize,
    accumulate: bool,
    lhs: Mat<T>,
    rhs: Mat<T>,
    s: f64,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                // SAFETY: row `i` of `dst` has `n` elements at unit stride (the caller's
                // contract).
                unsafe { std::slice::from_raw_parts_mut(dst.add(i * dst_rs), n) }.fill(T::ZERO);
            }
        }
        return;
    }
    // SAFETY: the caller guarantees the extents; `gemm` reads `lhs`/`rhs` and writes `dst`
    // within them (alpha scales the old `dst`, read only when `read_dst`).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            lhs.ptr,
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.ptr,
            rhs.cs as isize,
            rhs.rs as isize,
            T::from_f64(1.0),
            T::from_f64(s),
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

fn check<T>(
    inp: &LinearInputs<'_, T>,
    spec: &LinearSpec,
    out: &LinearOutputs<'_, T>,
) -> Result<usize, Error> {
    let (d, v) = (spec.d, spec.v);
    if v == 0 {
        return Err(Error::Classes { k: 0, len: 0 });
    }
    let n = inp.labels.len();
    check_len(Some(inp.hidden), n * d, "hidden")?;
    check_len(Some(inp.weight), v * d, "weight")?;
    check_len(inp.bias, v, "bias")?;
    check_len(inp.row_weight, n, "row_weight")?;
    check_labels(inp.labels, v, spec.ignore_index, None)?;
    check_len(out.losses.as_deref(), n, "losses")?;
    check_len(out.grad_hidden.as_deref(), n * d, "grad_hidden")?;
    check_len(out.grad_weight.as_deref(), v * d, "grad_weight")?;
    check_len(out.grad_bias.as_deref(), v, "grad_bias")?;
    // The gradients come together: grad_hidden and grad_weight, and grad_bias with a bias.
    let want = out.grad_weight.is_some();
    let missing = [
        ("grad_hidden", n * d, out.grad_hidden.is_some() == want),
        (
            "grad_bias",
            v,
            out.grad_bias.is_some() == (want && inp.bias.is_some()),
        ),
    ];
    if let Some(&(arg, expected, _)) = missing.iter().find(|m| !m.2) {
        return Err(Error::Size {
            arg,
            expected,
            got: 0,
        });
    }
    Ok(n)
}

/// The soft cap applied to a run of logits, `-inf` (a masked class) left as it is.
#[inline]
fn cap<T: LinearReal>(x: &mut [T], c: f64) {
    let (c, inv) = (T::from_f64(c), 1.0 / c);
    for e in x.iter_mut() {
        let v = e.to_f64();
        if v != f64::NEG_INFINITY {
            *e = T::from_f64(c.to_f64() * T::from_f64(v * inv).tanh().to_f64());
        }
    }
}

/// Loss and (into `row`, when `grad`) gradient with respect to the capped logits of one row
/// whose logits are in `row`; `scratch` is a row of scratch space. The z-loss is the row
/// kernel's own (`cce` carries it); the soft cap's chain rule is applied here, because the
/// cap was applied to the whole chunk before the row kernel ran.
#[inline]
fn row_loss<T: LinearReal>(
    row: &mut [T],
    scratch: &mut [T],
    target: RowTarget<'_, f64>,
    spec: &LinearSpec,
    cce: &CceSpec<'_>,
    grad: bool,
    row_weight: f64,
) -> f64 {
    scratch.copy_from_slice(row);
    let derivs = if grad {
        Derivs::Grad(row)
    } else {
        Derivs::None
    };
    let RowResult { loss, z, .. } = cce_row(scratch, target, cce, derivs);
    let counted = !matches!(target, RowTarget::Ignored);
    if let (Some(c), true) = (spec.softcap, grad && counted) {
        let inv = 1.0 / c;
        for (g, &y) in row.iter_mut().zip(scratch.iter()) {
            let t = y.to_f64() * inv;
            let f = if t.is_finite() { 1.0 - t * t } else { 0.0 };
            *g = T::from_f64(g.to_f64() * f * row_weight);
        }
    } else if grad && counted && row_weight != 1.0 {
        T::scale(row, row_weight);
    }
    loss + z
}

/// `grad_weight` as one slice of `V_SLICE` rows per job (empty slices when `d` is 0).
fn weight_slices<T>(gw: &mut [T], d: usize, n: usize) -> Vec<&mut [T]> {
    if d == 0 {
        return (0..n).map(|_| &mut [][..]).collect();
    }
    gw.chunks_mut(V_SLICE * d).collect()
}

/// Loss of every row (and the gradients) of the fused linear + cross-entropy; returns the sum
/// of the row losses (f64, summed in a fixed order). Inconsistent inputs are an [`Error`],
/// checked before anything is written; so are scratch memory that cannot be had and a
/// cancelled call (outputs are then unspecified).
pub fn linear_cross_entropy<T: LinearReal>(
    inp: LinearInputs<'_, T>,
    spec: &LinearSpec,
    out: LinearOutputs<'_, T>,
) -> Result<f64, Error> {
    let n = check(&inp, spec, &out)?;
    let (d, v) = (spec.d, spec.v);
    let LinearOutputs {
        mut losses,
        mut grad_hidden,
        mut grad_weight,
        mut grad_bias,
    } = out;
    let want_grad = grad_weight.is_some();
    if let Some(gw) = grad_weight.as_deref_mut() {
        gw.fill(T::ZERO);
    }
    if let Some(gb) = grad_bias.as_deref_mut() {
        gb.fill(T::ZERO);
    }
    if n == 0 {
        return Ok(0.0);
    }
    let r_max = spec.chunk_rows.clamp(1, n);
    let cce = CceSpec {
        k: v,
        weight: None,
        label_smoothing: spec.label_smoothing,
        divisor: spec.divisor,
        want_lse: false,
        // No class weights here, so the mean's divisor is also the z-loss's (Liger's
        // non-ignored row count).
        z_loss: spec.z_loss,
        z_divisor: spec.divisor,
        // The cap is applied to the chunk's logits before the row kernel (see `cap`).
        softcap: None,
    };
    let mut buf = try_vec(
        r_max
            .checked_mul(v)
            .ok_or(Error::Alloc { bytes: usize::MAX })?,
        T::ZERO,
    )?;
    let mut partials = Vec::new();
    let slices: Vec<(usize, usize)> = (0..v)
        .step_by(V_SLICE)
        .map(|v0| (v0, (v0 + V_SLICE).min(v)))
        .collect();
    for (c, row0) in (0..n).step_by(r_max).enumerate() {
        let rows = r_max.min(n - row0);
        let h = &inp.hidden[row0 * d..(row0 + rows) * d];
        let labels = &inp.labels[row0..row0 + rows];
        let work = (rows * v).saturating_mul(d.max(1));

        // (A) logits of the chunk, a slice of V per job.
        let dst = Shared(buf.as_mut_ptr());
        map_jobs(slices.clone(), work, |(v0, v1)| {
            let wv = v1 - v0;
            // SAFETY: the job writes columns [v0, v1) of the `rows × v` chunk buffer (disjoint
            // from the other jobs'); `h` is `rows × d`, the weight slice `wv × d`, read only.
            unsafe {
                matmul(
                    (rows, wv, d),
                    dst.at(v0),
                    v,
                    false,
                    Mat {
                        ptr: h.as_ptr(),
                        rs: d,
                        cs: 1,
                    },
                    Mat {
                        ptr: inp.weight.as_ptr().add(v0 * d),
                        rs: 1,
                        cs: d,
                    },
                    spec.scale,
                );
            }
            for r in 0..rows {
                // SAFETY: columns [v0, v1) of row r, this job's own elements.
                let seg = unsafe { std::slice::from_raw_parts_mut(dst.at(r * v + v0), wv) };
                if let Some(b) = inp.bias {
                    for (x, &bj) in seg.iter_mut().zip(&b[v0..v1]) {
                        *x = T::from_f64(x.to_f64() + bj.to_f64());
                    }
                }
                if let Some(cap_at) = spec.softcap {
                    cap(seg, cap_at);
                }
            }
        })?;

        // (B) losses and gradient rows, then grad_hidden of each block of rows.
        let rb = block_rows(rows);
        let n_blocks = rows.div_ceil(rb);
        let gh_blocks: Vec<Option<&mut [T]>> = match grad_hidden.as_deref_mut() {
            Some(g) => g[row0 * d..(row0 + rows) * d]
                .chunks_mut((rb * d).max(1))
                .map(Some)
                .chain(std::iter::repeat_with(|| None))
                .take(n_blocks)
                .collect(),
            None => (0..n_blocks).map(|_| None).collect(),
        };
        let loss_blocks: Vec<Option<&mut [T]>> = match losses.as_deref_mut() {
            Some(l) => l[row0..row0 + rows].chunks_mut(rb).map(Some).collect(),
            None => (0..n_blocks).map(|_| None).collect(),
        };
        let jobs: Vec<_> = buf[..rows * v]
            .chunks_mut(rb * v)
            .zip(gh_blocks)
            .zip(loss_blocks)
            .enumerate()
            .collect();
        let block_sums = map_jobs(jobs, work, |(b, ((g, gh), mut ls))| -> Result<f64, Error> {
            let mut scratch = try_vec(v, T::ZERO)?;
            let mut sum = 0.0;
            let brows = g.len() / v;
            for (i, row) in g.chunks_mut(v).enumerate() {
                let t = labels[b * rb + i];
                let target = if t == spec.ignore_index {
                    RowTarget::Ignored
                } else {
                    RowTarget::Index(t as usize)
                };
                let rw = inp
                    .row_weight
                    .map_or(1.0, |w| w[row0 + b * rb + i].to_f64());
                let l = row_loss(row, &mut scratch, target, spec, &cce, want_grad, rw);
                sum += l;
                if let Some(ls) = ls.as_deref_mut() {
                    ls[i] = T::from_f64(l);
                }
            }
            if let Some(gh) = gh {
                // SAFETY: `gh` is this block's `brows × d` rows of grad_hidden (a slice of its
                // own); `g` is `brows × v`, the weight `v × d`.
                unsafe {
                    matmul(
                        (brows, d, v),
                        gh.as_mut_ptr(),
                        d,
                        false,
                        Mat {
                            ptr: g.as_ptr(),
                            rs: v,
                            cs: 1,
                        },
                        Mat {
                            ptr: inp.weight.as_ptr(),
                            rs: d,
                            cs: 1,
                        },
                        spec.scale,
                    );
                }
            }
            Ok(sum)
        })?;
        for s in block_sums {
            partials.push(s?);
        }

        // (D) grad_weight and grad_bias, a slice of V per job, accumulated in chunk order.
        if let Some(gw) = grad_weight.as_deref_mut() {
            let gb_slices: Vec<Option<&mut [T]>> = match grad_bias.as_deref_mut() {
                Some(gb) => gb.chunks_mut(V_SLICE).map(Some).collect(),
                None => (0..slices.len()).map(|_| None).collect(),
            };
            let g = &buf[..rows * v];
            let jobs: Vec<_> = slices
                .iter()
                .copied()
                .zip(weight_slices(gw, d, slices.len()))
                .zip(gb_slices)
                .collect();
            map_jobs(jobs, work, |(((v0, v1), gw), gb)| {
                let wv = v1 - v0;
                // SAFETY: `gw` is rows [v0, v1) of grad_weight (`wv × d`, a slice of its own);
                // the lhs is columns [v0, v1) of the `rows × v` gradient (read only), read
                // transposed; `h` is `rows × d`.
                unsafe {
                    matmul(
                        (wv, d, rows),
                        gw.as_mut_ptr(),
                        d,
                        c > 0,
                        Mat {
                            ptr: g.as_ptr().add(v0),
                            rs: 1,
                            cs: v,
                        },
                        Mat {
                            ptr: h.as_ptr(),
                            rs: d,
                            cs: 1,
                        },
                        spec.scale,
                    );
                }
                if let Some(gb) = gb {
                    let mut acc = vec![0.0f64; wv];
                    for row in g.chunks(v) {
                        for (a, &x) in acc.iter_mut().zip(&row[v0..v1]) {
                            *a += x.to_f64();
                        }
                    }
                    for (o, a) in gb.iter_mut().zip(acc) {
                        *o = T::from_f64(o.to_f64() + a);
                    }
                }
            })?;
        }
    }
    Ok(ordered_sum(&partials))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f64> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (s >> 11) as f64 / (1u64 << 52) as f64 - 1.0
            })
            .collect()
    }

    /// The unfused definition: full logits, softmax − onehot, chain rule.
    fn naive(
        h: &[f64],
        w: &[f64],
        b: &[f64],
        t: &[i64],
        d: usize,
        v: usize,
    ) -> (f64, Vec<f64>, Vec<f64>, Vec<f64>) {
        let n = t.len();
        let (mut loss, mut gh, mut gw, mut gb) =
            (0.0, vec![0.0; n * d], vec![0.0; v * d], vec![0.0; v]);
        for i in 0..n {
            let z: Vec<f64> = (0..v)
                .map(|j| (0..d).map(|k| h[i * d + k] * w[j * d + k]).sum::<f64>() + b[j])
                .collect();
            let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = m + z.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
            loss += lse - z[t[i] as usize];
            for j in 0..v {
                let g = (z[j] - lse).exp() - if j == t[i] as usize { 1.0 } else { 0.0 };
                gb[j] += g;
                for k in 0..d {
                    gh[i * d + k] += g * w[j * d + k];
                    gw[j * d + k] += g * h[i * d + k];
                }
            }
        }
        (loss, gh, gw, gb)
    }

    fn run<T: LinearReal>(
        h: &[T],
        w: &[T],
        b: &[T],
        t: &[i64],
        d: usize,
        v: usize,
        chunk: usize,
    ) -> (f64, Vec<T>, Vec<T>, Vec<T>) {
        let n = t.len();
        let (mut gh, mut gw, mut gb) =
            (vec![T::ZERO; n * d], vec![T::ZERO; v * d], vec![T::ZERO; v]);
        let spec = LinearSpec {
            d,
            v,
            ignore_index: -100,
            label_smoothing: 0.0,
            z_loss: 0.0,
            softcap: None,
            divisor: 1.0,
            scale: 1.0,
            chunk_rows: chunk,
        };
        let inp = LinearInputs {
            hidden: h,
            weight: w,
            bias: Some(b),
            labels: t,
            row_weight: None,
        };
        let out = LinearOutputs {
            losses: None,
            grad_hidden: Some(&mut gh),
            grad_weight: Some(&mut gw),
            grad_bias: Some(&mut gb),
        };
        let loss = linear_cross_entropy(inp, &spec, out).unwrap();
        (loss, gh, gw, gb)
    }

    #[test]
    fn float64_matches_the_unfused_definition_for_any_chunk() {
        let (n, d, v) = (23, 5, 1031);
        let (h, w, b) = (values(n * d, 1), values(v * d, 2), values(v, 3));
        let t: Vec<i64> = (0..n as i64).map(|i| (i * 97) % v as i64).collect();
        let want = naive(&h, &w, &b, &t, d, v);
        for chunk in [1, 7, 64] {
            let got = run(&h, &w, &b, &t, d, v, chunk);
            assert!((got.0 - want.0).abs() <= 1e-12 * want.0.abs());
            for (g, e) in [(&got.1, &want.1), (&got.2, &want.2), (&got.3, &want.3)] {
                for (a, b) in g.iter().zip(e.iter()) {
                    assert!((a - b).abs() <= 1e-12 * (1.0 + b.abs()), "{a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn float32_is_bit_identical_across_thread_counts() {
        let (n, d, v) = (300, 24, 2100);
        let f = |x: Vec<f64>| x.into_iter().map(|v| v as f32).collect::<Vec<f32>>();
        let (h, w, b) = (f(values(n * d, 4)), f(values(v * d, 5)), f(values(v, 6)));
        let t: Vec<i64> = (0..n as i64).map(|i| (i * 31) % v as i64).collect();
        let old = crate::parallel::get_num_threads();
        crate::parallel::set_num_threads(1);
        let one = run(&h, &w, &b, &t, d, v, 64);
        crate::parallel::set_num_threads(3);
        let three = run(&h, &w, &b, &t, d, v, 64);
        crate::parallel::set_num_threads(old);
        assert_eq!(one.0.to_bits(), three.0.to_bits());
        assert!(one
            .1
            .iter()
            .zip(&three.1)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        assert!(one
            .2
            .iter()
            .zip(&three.2)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        assert!(one
            .3
            .iter()
            .zip(&three.3)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
    }

    #[test]
    fn inconsistent_sizes_are_errors_not_panics() {
        let (h, w) = (vec![0.0f32; 6], vec![0.0f32; 8]);
        let spec = LinearSpec {
            d: 2,
            v: 4,
            ignore_index: -100,
            label_smoothing: 0.0,
            z_loss: 0.0,
            softcap: None,
            divisor: 1.0,
            scale: 1.0,
            chunk_rows: 2,
        };
        let call = |labels: &[i64], bias: Option<&[f32]>| {
            let inp = LinearInputs {
                hidden: &h,
                weight: &w,
                bias,
                labels,
                row_weight: None,
            };
            let out = LinearOutputs {
                losses: None,
                grad_hidden: None,
                grad_weight: None,
                grad_bias: None,
            };
            linear_cross_entropy(inp, &spec, out)
        };
        assert!(matches!(
            call(&[0, 1], None),
            Err(Error::Size { arg: "hidden", .. })
        ));
        assert!(matches!(
            call(&[0, 1, 2], Some(&[0.0; 3])),
            Err(Error::Size { arg: "bias", .. })
        ));
        assert!(matches!(
            call(&[0, 1, 4], None),
            Err(Error::Label { arg: "target", .. })
        ));
        assert!(call(&[0, 1, -100], None).is_ok());
    }
}
