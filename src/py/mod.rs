//! The PyO3 binding: the only code that touches Python objects.
//!
//! Each function extracts and checks its arguments, dispatches once on the input's dtype,
//! runs the kernel with the GIL released ([`gil::detached`]) and wraps the outputs. Errors
//! become Python exceptions in one place ([`errors`]).

mod allocator;
mod arrays;
mod errors;
mod gil;
mod losses;
mod scoring;
mod softmax;

use pyo3::prelude::*;

use crate::{parallel, pool, simd};

/// Sets the number of worker threads (at least 1).
#[pyfunction]
fn set_num_threads(n: i64) -> PyResult<()> {
    let n = usize::try_from(n).map_err(|_| {
        crate::error::XentError::Value(format!("the number of threads must be at least 1, got {n}"))
    })?;
    Ok(parallel::set_num_threads(n)?)
}

/// The number of worker threads.
#[pyfunction]
fn get_num_threads() -> usize {
    parallel::num_threads()
}

/// Sets the most bytes of freed large outputs kept for reuse (0 turns the cache off).
#[pyfunction]
fn set_output_cache(max_bytes: i64) -> PyResult<()> {
    let bytes = usize::try_from(max_bytes).map_err(|_| {
        crate::error::XentError::Value(format!(
            "the output cache size must be at least 0 bytes, got {max_bytes}"
        ))
    })?;
    pool::set_limit(bytes);
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
    // Cargo.toml's version, the one source of the package's version (maturin writes the same
    // into the wheel's metadata); `xent_rs.__version__` is this.
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(softmax::log_softmax, m)?)?;
    m.add_function(wrap_pyfunction!(softmax::softmax, m)?)?;
    m.add_function(wrap_pyfunction!(softmax::logsumexp, m)?)?;
    m.add_function(wrap_pyfunction!(softmax::log_softmax_backward, m)?)?;
    m.add_function(wrap_pyfunction!(softmax::softmax_backward, m)?)?;
    m.add_function(wrap_pyfunction!(losses::cross_entropy, m)?)?;
    m.add_function(wrap_pyfunction!(losses::nll_loss, m)?)?;
    m.add_function(wrap_pyfunction!(losses::binary_cross_entropy, m)?)?;
    m.add_function(wrap_pyfunction!(
        losses::binary_cross_entropy_with_logits,
        m
    )?)?;
    m.add_function(wrap_pyfunction!(scoring::log_loss, m)?)?;
    m.add_function(wrap_pyfunction!(set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(get_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(set_output_cache, m)?)?;
    m.add_function(wrap_pyfunction!(get_output_cache, m)?)?;
    m.add_function(wrap_pyfunction!(simd_level, m)?)?;
    m.add_function(wrap_pyfunction!(set_simd_level, m)?)?;
    m.add_function(wrap_pyfunction!(supported_simd_levels, m)?)?;
    Ok(())
}
