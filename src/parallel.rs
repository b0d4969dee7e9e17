//! The library's own rayon pool, rebuilt after `fork`, and deterministic chunked work.
//!
//! Work is cut into chunks whose boundaries depend only on the problem shape, never on the
//! number of threads; per-chunk partial sums are combined in chunk order. Results are therefore
//! bit-identical for any thread count and from run to run.

use rayon::prelude::*;
use std::sync::{Arc, Mutex, OnceLock};

/// Elements (rows × classes) per chunk: large enough to amortise scheduling, small enough that
/// a chunk's rows and outputs stay in the L2 cache and both cores get work.
pub const CHUNK_ELEMS: usize = 1 << 15;

/// Below this many elements the work runs on the calling thread.
const PARALLEL_MIN_ELEMS: usize = 1 << 17;

struct PoolState {
    threads: usize,
    pid: u32,
    pool: Option<Arc<rayon::ThreadPool>>,
}

fn state() -> &'static Mutex<PoolState> {
    static STATE: OnceLock<Mutex<PoolState>> = OnceLock::new();
    STATE.get_or_init(|| {
        Mutex::new(PoolState {
            threads: default_threads(),
            pid: std::process::id(),
            pool: None,
        })
    })
}

fn lock_state() -> std::sync::MutexGuard<'static, PoolState> {
    // A panic never happens while the lock is held, but recover rather than propagate poison.
    state().lock().unwrap_or_else(|e| e.into_inner())
}

/// `XENT_RS_NUM_THREADS` if it is a positive integer, else the number of usable cores.
pub fn default_threads() -> usize {
    std::env::var("XENT_RS_NUM_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| (1..=1024).contains(&n))
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
}

pub fn set_num_threads(n: usize) {
    let mut st = lock_state();
    let n = n.max(1);
    if st.threads != n {
        st.threads = n;
        st.pool = None;
    }
}

pub fn get_num_threads() -> usize {
    lock_state().threads
}

/// The pool for the current process. A child created by `fork` inherits the parent's pool
/// object but none of its threads, so a pid change means: build a new pool and leak the old
/// one (dropping it would try to signal threads that do not exist in this process).
fn pool() -> Option<Arc<rayon::ThreadPool>> {
    let mut st = lock_state();
    let pid = std::process::id();
    if st.pid != pid {
        if let Some(old) = st.pool.take() {
            std::mem::forget(old);
        }
        st.pid = pid;
    }
    if st.threads <= 1 {
        return None;
    }
    if st.pool.is_none() {
        let built = rayon::ThreadPoolBuilder::new()
            .num_threads(st.threads)
            .thread_name(|i| format!("xent_rs-{i}"))
            .build()
            .ok()
            .map(Arc::new);
        st.pool = built;
    }
    st.pool.clone()
}

/// Runs `f` over `jobs` (in parallel when the problem has at least `PARALLEL_MIN_ELEMS`
/// elements) and returns the results in job order.
pub fn map_jobs<J, R, F>(jobs: Vec<J>, total_elems: usize, f: F) -> Vec<R>
where
    J: Send,
    R: Send,
    F: Fn(J) -> R + Sync + Send,
{
    if jobs.len() > 1 && total_elems >= PARALLEL_MIN_ELEMS {
        if let Some(pool) = pool() {
            return pool.install(|| jobs.into_par_iter().map(&f).collect());
        }
    }
    jobs.into_iter().map(f).collect()
}

/// Rows per chunk for rows of `k` elements.
pub fn rows_per_chunk(k: usize) -> usize {
    (CHUNK_ELEMS / k.max(1)).max(1)
}

/// Splits an optional buffer into `n` consecutive pieces of `len` elements (the last may be
/// shorter); `None` becomes `n` `None`s.
pub fn split_opt<T>(buf: Option<&mut [T]>, len: usize, n: usize) -> Vec<Option<&mut [T]>> {
    match buf {
        Some(b) => {
            let mut v: Vec<Option<&mut [T]>> = b.chunks_mut(len.max(1)).map(Some).collect();
            v.resize_with(n, || None);
            v
        }
        None => (0..n).map(|_| None).collect(),
    }
}

/// Sums partial results in order (the deterministic reduction).
pub fn ordered_sum(parts: &[f64]) -> f64 {
    parts.iter().sum()
}
