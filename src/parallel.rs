//! The library's own rayon pool (fork-aware), deterministic chunked work, and cancellation.
//!
//! Work is cut into chunks whose boundaries depend only on the problem shape, never on the
//! number of threads; per-chunk partial sums are combined in chunk order. Results are therefore
//! bit-identical for any thread count and from run to run.
//!
//! Fork safety: the pool state is guarded by a tiny lock that records the owning process id
//! and is never held while threads are started. A child forked while another thread of the
//! parent held it sees a foreign owner (that thread does not exist in the child) and takes
//! the lock over, so no child can hang on state its parent left locked.

use crate::error::Error;
use rayon::prelude::*;
use std::cell::{RefCell, UnsafeCell};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

/// Elements (rows × classes) per chunk: large enough to amortise scheduling, small enough that
/// a chunk's rows and outputs stay in the L2 cache and both cores get work.
pub const CHUNK_ELEMS: usize = 1 << 15;

/// Below this many elements the work runs on the calling thread.
const PARALLEL_MIN_ELEMS: usize = 1 << 17;

struct PoolState {
    threads: usize,
    /// The process the pool's threads belong to.
    pid: u32,
    pool: Option<Arc<rayon::ThreadPool>>,
}

/// A lock whose word holds the owner's process id (0: free).
struct PidLock {
    owner: AtomicU32,
    state: UnsafeCell<Option<PoolState>>,
}

// SAFETY: `state` is only reached through `PidLock::with`, which holds the lock: one thread
// of one process at a time.
unsafe impl Sync for PidLock {}

static STATE: PidLock = PidLock {
    owner: AtomicU32::new(0),
    state: UnsafeCell::new(None),
};

impl PidLock {
    /// Runs `f` on the state with the lock held. `f` must be short and must not start
    /// threads, allocate much or call back into this module.
    fn with<R>(&self, f: impl FnOnce(&mut PoolState) -> R) -> R {
        let me = std::process::id().max(1);
        loop {
            match self
                .owner
                .compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => break,
                // Held by a thread of another process: we are a fork child and that thread
                // was not copied into us. Take the lock over.
                Err(other)
                    if other != 0
                        && other != me
                        && self
                            .owner
                            .compare_exchange(other, me, Ordering::Acquire, Ordering::Relaxed)
                            .is_ok() =>
                {
                    break
                }
                Err(_) => std::thread::yield_now(),
            }
        }
        // SAFETY: the lock is held (the owner word is ours), so no other thread touches the
        // state until it is released below.
        let state = unsafe { &mut *self.state.get() };
        let st = state.get_or_insert_with(|| PoolState {
            threads: default_threads(),
            pid: me,
            pool: None,
        });
        if st.pid != me {
            // A child inherits the parent's pool object but none of its threads: leak it
            // (dropping it would signal threads that do not exist in this process).
            std::mem::forget(st.pool.take());
            st.pid = me;
        }
        let r = f(st);
        self.owner.store(0, Ordering::Release);
        r
    }
}

/// `XENT_RS_NUM_THREADS` if it is an integer in 1..=1024, else the number of usable cores.
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
    let n = n.max(1);
    let old = STATE.with(|st| {
        if st.threads == n {
            return None;
        }
        st.threads = n;
        st.pool.take()
    });
    drop(old); // outside the lock: dropping a pool joins nothing but may take a while
}

pub fn get_num_threads() -> usize {
    STATE.with(|st| st.threads)
}

/// The pool for the current process, built (outside the lock) on first use.
fn pool() -> Option<Arc<rayon::ThreadPool>> {
    let (threads, pool) = STATE.with(|st| (st.threads, st.pool.clone()));
    if threads <= 1 || pool.is_some() {
        return pool;
    }
    let built = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("xent_rs-{i}"))
            .build()
            .ok()?,
    );
    // Another thread may have built one meanwhile, or changed the count: keep the first
    // pool of the current count.
    STATE.with(|st| {
        if st.threads != threads {
            return Some(built);
        }
        Some(st.pool.get_or_insert(built).clone())
    })
}

/// A flag a long call checks between chunks; set when the caller wants it to stop.
#[derive(Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
    fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Cancel>> = const { RefCell::new(None) };
}

/// Runs `f` on this thread with `cancel` as the flag every [`map_jobs`] inside it checks.
pub fn with_cancel<R>(cancel: &Cancel, f: impl FnOnce() -> R) -> R {
    let prev = CURRENT.with(|c| c.replace(Some(cancel.clone())));
    let r = f();
    CURRENT.with(|c| *c.borrow_mut() = prev);
    r
}

/// Runs `f` over `jobs` (in parallel when the problem has at least `PARALLEL_MIN_ELEMS`
/// elements) and returns the results in job order; [`Error::Cancelled`] when the calling
/// thread's [`Cancel`] flag was set before every job ran (outputs are then unspecified).
pub fn map_jobs<J, R, F>(jobs: Vec<J>, total_elems: usize, f: F) -> Result<Vec<R>, Error>
where
    J: Send,
    R: Send,
    F: Fn(J) -> R + Sync + Send,
{
    let cancel = CURRENT.with(|c| c.borrow().clone());
    let run = |j: J| match &cancel {
        Some(c) if c.is_set() => None,
        _ => Some(f(j)),
    };
    let out: Option<Vec<R>> = if jobs.len() > 1 && total_elems >= PARALLEL_MIN_ELEMS {
        match pool() {
            Some(pool) => pool.install(|| jobs.into_par_iter().map(run).collect()),
            None => jobs.into_iter().map(run).collect(),
        }
    } else {
        jobs.into_iter().map(run).collect()
    };
    out.ok_or(Error::Cancelled)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_flag_cancels_and_a_clear_one_does_not() {
        let jobs = || (0..64).collect::<Vec<usize>>();
        let c = Cancel::default();
        let ok = with_cancel(&c, || map_jobs(jobs(), 1 << 20, |j| j * 2));
        assert_eq!(ok.unwrap(), (0..64).map(|j| j * 2).collect::<Vec<_>>());
        c.cancel();
        let stopped = with_cancel(&c, || map_jobs(jobs(), 1 << 20, |j| j));
        assert_eq!(stopped, Err(Error::Cancelled));
        // Outside `with_cancel` nothing is cancelled.
        assert!(map_jobs(jobs(), 1 << 20, |j| j).is_ok());
    }

    #[test]
    fn a_lock_left_by_another_process_is_taken_over() {
        // As a fork child sees it: held by a thread of another process (the parent).
        let other = std::process::id().wrapping_add(1).max(1);
        let lock = PidLock {
            owner: AtomicU32::new(other),
            state: UnsafeCell::new(Some(PoolState {
                threads: 3,
                pid: other,
                pool: None,
            })),
        };
        assert_eq!(
            lock.with(|st| (st.threads, st.pid)),
            (3, std::process::id())
        );
        assert_eq!(lock.owner.load(Ordering::Acquire), 0);
    }
}
