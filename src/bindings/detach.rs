//! Running a core call with the interpreter released, interruptible by Ctrl-C.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

use super::args::to_py;
use crate::error::Error;
use crate::parallel;

/// Calls over this many elements run on a helper thread while the calling thread watches
/// for signals (a few milliseconds of work; below it the call simply runs).
const INTERRUPTIBLE_ELEMS: usize = 1 << 20;

/// How often a long call's caller checks for a pending signal (Ctrl-C).
const SIGNAL_POLL: std::time::Duration = std::time::Duration::from_millis(20);

type Outcome<R> = std::thread::Result<Result<R, Error>>;

/// Runs a core call over `elems` elements with the interpreter released. A long call runs
/// on a helper thread while this one checks for signals every [`SIGNAL_POLL`]: on Ctrl-C
/// the call is cancelled at its next chunk and `KeyboardInterrupt` raised (outputs are then
/// unspecified). A panic would be a bug in xent_rs; it becomes a `RuntimeError` rather than
/// a `PanicException` (which derives from `BaseException` and escapes `except Exception`).
pub fn run_detached<R: Send>(
    py: Python<'_>,
    elems: usize,
    f: impl FnOnce() -> Result<R, Error> + Send,
) -> PyResult<R> {
    let outcome = if elems < INTERRUPTIBLE_ELEMS {
        py.detach(|| std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)))
    } else {
        watching_signals(py, f)?
    };
    outcome
        .map_err(|_| {
            PyRuntimeError::new_err(
                "xent_rs internal error (a Rust panic); please report it with the inputs",
            )
        })?
        .map_err(to_py)
}

/// Runs `f` on a helper thread; `Err` with the signal's exception (`f` cancelled and
/// joined) when a signal handler raised one meanwhile.
fn watching_signals<R: Send>(
    py: Python<'_>,
    f: impl FnOnce() -> Result<R, Error> + Send,
) -> PyResult<Outcome<R>> {
    let cancel = parallel::Cancel::default();
    let (tx, mut rx) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| {
        let worker = s.spawn(|| {
            let f = std::panic::AssertUnwindSafe(|| parallel::with_cancel(&cancel, f));
            let r = std::panic::catch_unwind(f);
            let _ = tx.send(());
            r
        });
        let mut interrupt = Ok(());
        loop {
            let (waited, back) = py.detach(move || (rx.recv_timeout(SIGNAL_POLL), rx));
            rx = back;
            if !matches!(waited, Err(std::sync::mpsc::RecvTimeoutError::Timeout)) {
                break;
            }
            if let Err(e) = py.check_signals() {
                cancel.cancel();
                interrupt = Err(e);
                break;
            }
        }
        let outcome = py.detach(move || worker.join()).unwrap_or_else(Err);
        interrupt.map(|()| outcome)
    })
}
