//! Numerically stable softmax, log-softmax and logsumexp, and the cross-entropy family with
//! gradients from one fused pass, on contiguous buffers.
//!
//! The crate is the compute core of the `xent_rs` Python package, but the kernels know
//! nothing of Python: they take slices, shapes and options, and return
//! `Result<_, XentError>`. The PyO3 binding (`py`, behind the default `python` feature) is
//! the only place that touches Python objects.
//!
//! - [`simd`]: vector exp/log with runtime CPU dispatch (AVX-512, AVX2+FMA, scalar).
//! - [`kernels`]: the softmax family, cross entropy, NLL, binary cross entropy.
//! - [`parallel`]: the private thread pool and the data-sized blocks work is split into.
//! - [`reduce`]: deterministic float64 sums.
//! - [`pool`]: the bounded cache of large output blocks.
//! - [`interrupt`]: stopping a long call midway when its caller asks (Ctrl-C).
//! - [`fork`]: the state a forked child must not inherit (the pool's threads, held locks).

pub mod error;
pub mod float;
pub mod fork;
pub mod interrupt;
pub mod simd;

pub use error::XentError;
pub use float::Float;
pub mod kernels;
pub mod parallel;
pub mod pool;
pub mod reduce;

#[cfg(feature = "python")]
mod py;
