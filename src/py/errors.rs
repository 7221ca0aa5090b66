//! The one mapping from core errors (and panics) to Python exceptions.

use pyo3::PyErr;
use pyo3::exceptions::{
    PyIndexError, PyKeyboardInterrupt, PyRuntimeError, PyTypeError, PyValueError,
};

use crate::error::XentError;

impl From<XentError> for PyErr {
    fn from(e: XentError) -> PyErr {
        let message = e.to_string();
        match e {
            XentError::Shape(_) | XentError::Value(_) => PyValueError::new_err(message),
            XentError::ClassIndex { .. } => PyIndexError::new_err(message),
            XentError::Type(_) => PyTypeError::new_err(message),
            // A stop the binding asked for without a pending exception (not expected).
            XentError::Interrupted => PyKeyboardInterrupt::new_err(message),
        }
    }
}

/// A Rust panic caught at the boundary, reported as a Python `RuntimeError`.
#[cold]
pub(crate) fn panic_error(payload: Box<dyn std::any::Any + Send>) -> PyErr {
    let detail = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned());
    PyRuntimeError::new_err(format!(
        "internal error in xent_rs (please report it): {detail}"
    ))
}
