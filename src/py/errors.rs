//! The one mapping from core errors (and panics) to Python exceptions.

use pyo3::exceptions::{
    PyIndexError, PyKeyboardInterrupt, PyRuntimeError, PyTypeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::error::XentError;

impl From<XentError> for PyErr {
    fn from(e: XentError) -> PyErr {
        let message = e.to_string();
        match e {
            XentError::Shape(_) | XentError::Value(_) => PyValueError::new_err(message),
            XentError::ClassIndex { position, .. } => class_index_error(message, position),
            XentError::Type(_) => PyTypeError::new_err(message),
            // A stop the binding asked for without a pending exception (not expected).
            XentError::Interrupted => PyKeyboardInterrupt::new_err(message),
        }
    }
}

/// The `IndexError` of a class index out of range, blaming the target at `position` (the
/// `argument` and `position` attributes of `python/xent_rs/_errors.py`).
fn class_index_error(message: String, position: Vec<usize>) -> PyErr {
    Python::attach(|py| {
        let err = PyIndexError::new_err(message);
        let value = err.value(py);
        // Attaching plain attributes to a fresh exception cannot fail short of memory, and
        // the error stays a correct IndexError without them.
        let _ = value.setattr("argument", "target");
        let _ = value.setattr("position", PyTuple::new(py, position).ok());
        err
    })
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
