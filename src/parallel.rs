//! The private thread pool and how work is cut into blocks.
//!
//! Work never runs on rayon's global pool: library users may have their own. The pool is
//! built on first use with `XENT_RS_NUM_THREADS` threads (default: the number of CPUs) and
//! rebuilt by [`set_num_threads`].
//!
//! Work is cut into blocks of about [`BLOCK_ELEMENTS`] elements. Block boundaries depend only
//! on the data's shape, never on the thread count, and block results come back in block
//! order, so a reduction over them (see [`crate::reduce`]) gives the same bits with 1 or N
//! threads. Inputs smaller than [`SERIAL_ELEMENTS`] run on the calling thread.

use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};

use rayon::prelude::*;
use rayon::{ThreadPool, ThreadPoolBuilder};

use crate::error::XentError;

/// Elements per block: large enough to amortise scheduling, small enough to stay in L2.
pub const BLOCK_ELEMENTS: usize = 1 << 17;

/// Below this many elements a call runs on the calling thread.
pub const SERIAL_ELEMENTS: usize = 1 << 15;

struct PoolState {
    threads: usize,
    pool: Option<Arc<ThreadPool>>,
}

static POOL: Mutex<PoolState> = Mutex::new(PoolState {
    threads: 0,
    pool: None,
});

fn default_threads() -> usize {
    std::env::var("XENT_RS_NUM_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn with_state<R>(f: impl FnOnce(&mut PoolState) -> R) -> R {
    let mut state = POOL.lock().unwrap_or_else(PoisonError::into_inner);
    if state.threads == 0 {
        state.threads = default_threads();
    }
    f(&mut state)
}

/// Number of threads work is spread over.
pub fn num_threads() -> usize {
    with_state(|s| s.threads)
}

/// Sets the number of threads (at least 1). Calls already running keep their pool.
pub fn set_num_threads(n: usize) -> Result<(), XentError> {
    if n == 0 {
        return Err(XentError::Value(
            "the number of threads must be at least 1, got 0".into(),
        ));
    }
    with_state(|s| {
        if s.threads != n {
            s.threads = n;
            s.pool = None;
        }
    });
    Ok(())
}

/// The pool for the current thread count, or `None` when one thread is asked for.
fn pool() -> Result<Option<Arc<ThreadPool>>, XentError> {
    with_state(|s| {
        if s.threads == 1 {
            return Ok(None);
        }
        if s.pool.is_none() {
            let pool = ThreadPoolBuilder::new()
                .num_threads(s.threads)
                .thread_name(|i| format!("xent-rs-{i}"))
                .build()
                .map_err(|e| XentError::Value(format!("could not start worker threads: {e}")))?;
            s.pool = Some(Arc::new(pool));
        }
        Ok(s.pool.clone())
    })
}

/// Cuts `units` work units into blocks of whole multiples of `align` units, each about
/// [`BLOCK_ELEMENTS`] elements when a unit holds `unit_elements` elements.
pub fn blocks(units: usize, unit_elements: usize, align: usize) -> Vec<Range<usize>> {
    let align = align.max(1);
    let per_block = (BLOCK_ELEMENTS / unit_elements.max(1))
        .max(1)
        .div_ceil(align)
        * align;
    (0..units)
        .step_by(per_block)
        .map(|start| start..(start + per_block).min(units))
        .collect()
}

/// Runs `f` on every block and returns the results in block order. Blocks run on the private
/// pool unless the whole job (`total_elements`) is small or one thread is configured.
pub fn map_blocks<R, F>(
    blocks: Vec<Range<usize>>,
    total_elements: usize,
    f: F,
) -> Result<Vec<R>, XentError>
where
    R: Send,
    F: Fn(Range<usize>) -> R + Sync,
{
    if blocks.len() <= 1 || total_elements < SERIAL_ELEMENTS {
        return Ok(blocks.into_iter().map(f).collect());
    }
    match pool()? {
        None => Ok(blocks.into_iter().map(f).collect()),
        Some(pool) => Ok(pool.install(|| blocks.into_par_iter().with_max_len(1).map(&f).collect())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_cover_every_unit_once_and_align() {
        let b = blocks(1000, 300, 64);
        assert_eq!(b.first().map(|r| r.start), Some(0));
        assert_eq!(b.last().map(|r| r.end), Some(1000));
        for w in b.windows(2) {
            assert_eq!(w[0].end, w[1].start);
            assert_eq!(w[0].len() % 64, 0);
        }
        assert!(blocks(0, 10, 1).is_empty());
    }

    #[test]
    fn blocks_do_not_depend_on_threads() {
        let before = blocks(123_457, 17, 16);
        set_num_threads(3).unwrap();
        assert_eq!(before, blocks(123_457, 17, 16));
    }

    #[test]
    fn zero_threads_is_refused() {
        assert!(set_num_threads(0).is_err());
    }

    #[test]
    fn map_blocks_keeps_order() {
        let b = blocks(1 << 20, 1, 1);
        let out = map_blocks(b.clone(), 1 << 20, |r| r.start).unwrap();
        assert_eq!(out, b.iter().map(|r| r.start).collect::<Vec<_>>());
    }
}
