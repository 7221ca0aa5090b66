//! The one helper that runs a kernel with the GIL released.

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};

use pyo3::prelude::*;

use crate::error::XentError;
use crate::py::errors::panic_error;
use crate::{interrupt, parallel};

/// Runs `f`, a kernel over `elements` values, with the GIL released (rayon work never holds
/// it), and turns its error, or a panic, into a Python exception.
///
/// Calls smaller than [`parallel::SERIAL_ELEMENTS`] run on the calling thread in microseconds;
/// they keep the GIL, whose release and reacquisition would cost more than the work.
///
/// On the main thread, where Python runs its signal handlers, a large call checks for pending
/// signals while it runs ([`crate::interrupt`]): when a handler raises (`KeyboardInterrupt`
/// for Ctrl-C), the call stops within about [`interrupt::POLL_INTERVAL`] plus one block and
/// raises that exception; the outputs it allocated are dropped by the caller.
pub(crate) fn detached<R, F>(py: Python<'_>, elements: usize, f: F) -> PyResult<R>
where
    R: Send,
    F: FnOnce() -> Result<R, XentError> + Send,
{
    if elements < parallel::SERIAL_ELEMENTS {
        return finish(catch_unwind(AssertUnwindSafe(f)), None);
    }
    if elements < parallel::WATCH_ELEMENTS || !on_main_thread() {
        return finish(py.detach(|| catch_unwind(AssertUnwindSafe(f))), None);
    }
    let (outcome, raised) = py.detach(|| {
        let raised = RefCell::new(None);
        let poll = || match Python::attach(|py| py.check_signals()) {
            Ok(()) => false,
            Err(e) => {
                *raised.borrow_mut() = Some(e);
                true
            }
        };
        let outcome = interrupt::with_poll(&poll, || catch_unwind(AssertUnwindSafe(f)));
        (outcome, raised.into_inner())
    });
    finish(outcome, raised)
}

/// The result of a kernel run, with the exception a signal handler raised during it.
fn finish<R>(
    outcome: std::thread::Result<Result<R, XentError>>,
    raised: Option<PyErr>,
) -> PyResult<R> {
    match (outcome, raised) {
        (Ok(Ok(r)), _) => Ok(r),
        (Ok(Err(XentError::Interrupted)), Some(e)) => Err(e),
        (Ok(Err(e)), _) => Err(e.into()),
        (Err(payload), _) => Err(panic_error(payload)),
    }
}

/// Whether this is the process's main thread, the only one on which Python runs signal
/// handlers (after a `fork`, the forking thread is the child's main thread).
fn on_main_thread() -> bool {
    #[cfg(target_os = "linux")]
    {
        // The raw system call: glibc's `gettid` wrapper is newer (2.30) than the oldest glibc
        // the wheel supports (manylinux2014, glibc 2.17).
        // SAFETY: both calls only read the calling thread's and process's ids.
        unsafe { libc::syscall(libc::SYS_gettid) == libc::c_long::from(libc::getpid()) }
    }
    #[cfg(not(target_os = "linux"))]
    {
        true
    }
}
