//! The PyO3 binding: the only code that touches Python objects.
//!
//! Each function extracts and checks its arguments, dispatches once on the input's dtype,
//! runs the kernel with the GIL released ([`gil::detached`]) and wraps the outputs. Errors
//! become Python exceptions in one place ([`errors`]).

mod allocator;
mod arrays;
mod errors;
mod gil;
mod linear;
mod losses;
mod scoring;
mod softmax;

use pyo3::prelude::*;

use crate::{parallel, pool, simd};

/// Sets the number of worker threads (at least 1, at most [`parallel::MAX_THREADS`]).
#[pyfunction]
fn set_num_threads(n: &Bound<'_, PyAny>) -> PyResult<()> {
    let count = count_arg(n, "the number of threads", 1, "")?;
    Ok(parallel::set_num_threads(count)?)
}

/// A Python integer as a count of at least `min` (in `unit`); anything smaller, or beyond 64
/// bits, is the `ValueError` naming `what` (PyO3's conversion would raise an `OverflowError`
/// naming nothing).
fn count_arg(value: &Bound<'_, PyAny>, what: &str, min: usize, unit: &str) -> PyResult<usize> {
    let refuse = || {
        crate::error::XentError::Value(format!("{what} must be at least {min}{unit}, got {value}"))
    };
    match value.extract::<i64>() {
        Ok(v) => usize::try_from(v)
            .ok()
            .filter(|&c| c >= min)
            .ok_or_else(|| refuse().into()),
        Err(e) if e.is_instance_of::<pyo3::exceptions::PyOverflowError>(value.py()) => {
            let negative = value.lt(0)?;
            if negative {
                Err(refuse().into())
            } else {
                Err(crate::error::XentError::Value(format!(
                    "{what} must fit in 64 bits, got {value}"
                ))
                .into())
            }
        }
        Err(e) => Err(e),
    }
}

/// The number of worker threads.
#[pyfunction]
fn get_num_threads() -> usize {
    parallel::num_threads()
}

/// Sets the most bytes of freed large outputs kept for reuse (0 turns the cache off).
#[pyfunction]
fn set_output_cache(max_bytes: &Bound<'_, PyAny>) -> PyResult<()> {
    pool::set_limit(count_arg(max_bytes, "the output cache size", 0, " bytes")?);
    Ok(())
}

/// The most bytes of freed large outputs kept for reuse.
#[pyfunction]
fn get_output_cache() -> usize {
    pool::limit()
}

/// The SIMD instruction set in use: "avx512", "avx2" or "scalar".
#[pyfunction]
fn simd_level() -> &'static str {
    simd::level().name()
}

/// Forces a SIMD instruction set (for testing every path on one machine).
#[pyfunction]
fn set_simd_level(name: &str) -> PyResult<()> {
    Ok(simd::set_level(simd::Level::parse(name)?)?)
}

/// The SIMD instruction sets this CPU supports, narrowest first.
#[pyfunction]
fn supported_simd_levels() -> Vec<&'static str> {
    simd::Level::ALL
        .into_iter()
        .filter(|l| l.is_supported())
        .map(simd::Level::name)
        .collect()
}

/// The private native module `xent_rs._core`.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // Before any call can start the pool: a forked child must not inherit it.
    crate::fork::register_handlers();
    // Cargo.toml's version, the one source of the package's version (maturin writes the same
    // into the wheel's metadata); `xent_rs.__version__` is this.
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(softmax::softmax, m)?)?;
    m.add_function(wrap_pyfunction!(softmax::logsumexp, m)?)?;
    m.add_function(wrap_pyfunction!(softmax::softmax_backward, m)?)?;
    m.add_function(wrap_pyfunction!(losses::class_loss, m)?)?;
    m.add_function(wrap_pyfunction!(losses::binary_loss, m)?)?;
    m.add_function(wrap_pyfunction!(losses::kl_div, m)?)?;
    m.add_class::<losses::PartialResult>()?;
    m.add_function(wrap_pyfunction!(linear::cross_entropy_denominator, m)?)?;
    m.add_function(wrap_pyfunction!(linear::matmul, m)?)?;
    m.add_function(wrap_pyfunction!(scoring::log_loss, m)?)?;
    m.add_class::<scoring::Summary>()?;
    m.add_function(wrap_pyfunction!(set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(get_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(set_output_cache, m)?)?;
    m.add_function(wrap_pyfunction!(get_output_cache, m)?)?;
    m.add_function(wrap_pyfunction!(simd_level, m)?)?;
    m.add_function(wrap_pyfunction!(set_simd_level, m)?)?;
    m.add_function(wrap_pyfunction!(supported_simd_levels, m)?)?;
    Ok(())
}
