//! The one helper that runs a kernel with the GIL released.

use std::panic::{AssertUnwindSafe, catch_unwind};

use pyo3::prelude::*;

use crate::error::XentError;
use crate::py::errors::panic_error;

/// Runs `f` with the GIL released (rayon work never holds it) and turns its error, or a
/// panic, into a Python exception.
pub(crate) fn detached<R, F>(py: Python<'_>, f: F) -> PyResult<R>
where
    R: Send,
    F: FnOnce() -> Result<R, XentError> + Send,
{
    match py.detach(|| catch_unwind(AssertUnwindSafe(f))) {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(e.into()),
        Err(payload) => Err(panic_error(payload)),
    }
}
