//! The one helper that runs a kernel with the GIL released.

use std::panic::{AssertUnwindSafe, catch_unwind};

use pyo3::prelude::*;

use crate::error::XentError;
use crate::parallel;
use crate::py::errors::panic_error;

/// Runs `f`, a kernel over `elements` values, with the GIL released (rayon work never holds
/// it), and turns its error, or a panic, into a Python exception.
///
/// Calls smaller than [`parallel::SERIAL_ELEMENTS`] run on the calling thread in microseconds;
/// they keep the GIL, whose release and reacquisition would cost more than the work.
pub(crate) fn detached<R, F>(py: Python<'_>, elements: usize, f: F) -> PyResult<R>
where
    R: Send,
    F: FnOnce() -> Result<R, XentError> + Send,
{
    let run = || catch_unwind(AssertUnwindSafe(f));
    let outcome = if elements < parallel::SERIAL_ELEMENTS {
        run()
    } else {
        py.detach(run)
    };
    match outcome {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(e.into()),
        Err(payload) => Err(panic_error(payload)),
    }
}
