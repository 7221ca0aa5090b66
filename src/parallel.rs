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
//!
//! Calls of at least [`WATCH_ELEMENTS`] elements made under [`crate::interrupt::with_poll`]
//! run their blocks on the pool (even with one thread) while the calling thread polls, so
//! that they can stop midway (see [`crate::interrupt`]).
//!
//! A forked child inherits the pool's bookkeeping but none of its threads: the child handler
//! of [`crate::fork`] drops the pool there (without touching its dead threads), and the
//! child's first parallel call starts a fresh one.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use rayon::prelude::*;
use rayon::{ThreadPool, ThreadPoolBuilder};

use crate::error::XentError;
use crate::interrupt;

/// Elements per block: large enough to amortise scheduling, small enough to stay in L2.
pub const BLOCK_ELEMENTS: usize = 1 << 17;

/// Below this many elements a call runs on the calling thread.
pub const SERIAL_ELEMENTS: usize = 1 << 15;

/// From this many elements on, a call made under [`crate::interrupt::with_poll`] is watched:
/// it can stop midway. Smaller calls take well under 100 ms and are not worth the hand-over
/// to the pool (tens of microseconds).
pub const WATCH_ELEMENTS: usize = 1 << 24;

/// The pool and its thread count, behind [`POOL`].
pub(crate) struct PoolState {
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
        .map(|n| n.min(MAX_THREADS))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn with_state<R>(f: impl FnOnce(&mut PoolState) -> R) -> R {
    let mut state = lock_state();
    if state.threads == 0 {
        state.threads = default_threads();
    }
    f(&mut state)
}

/// The pool's state, locked (also by [`crate::fork`] across a `fork`).
pub(crate) fn lock_state() -> MutexGuard<'static, PoolState> {
    POOL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// In a forked child: forgets the parent's pool, whose threads do not exist here. Dropping it
/// would wake and wait for them; the few bytes it holds are left behind instead. The thread
/// count is kept.
pub(crate) fn forget_pool_after_fork(state: &mut PoolState) {
    if let Some(pool) = state.pool.take() {
        std::mem::forget(pool);
    }
}

/// Number of threads work is spread over.
pub fn num_threads() -> usize {
    with_state(|s| s.threads)
}

/// The most threads [`set_num_threads`] takes. Starting a thread costs tens of microseconds
/// to milliseconds, so a count far beyond any machine's CPUs (a typo, `2**40`) would make the
/// next parallel call spend minutes starting threads; this is a few times the CPUs of the
/// largest machines.
pub const MAX_THREADS: usize = 4096;

/// Sets the number of threads (1 to [`MAX_THREADS`]). Calls already running keep their pool.
pub fn set_num_threads(n: usize) -> Result<(), XentError> {
    if n == 0 {
        return Err(XentError::Value(
            "the number of threads must be at least 1, got 0".into(),
        ));
    }
    if n > MAX_THREADS {
        return Err(XentError::Value(format!(
            "the number of threads must be at most {MAX_THREADS}, got {n}"
        )));
    }
    with_state(|s| {
        if s.threads != n {
            s.threads = n;
            s.pool = None;
        }
    });
    Ok(())
}

/// The pool for the current thread count, or `None` when one thread is asked for and the
/// call is not `watched` (a watched call runs on a pool of one thread then).
fn pool(watched: bool) -> Result<Option<Arc<ThreadPool>>, XentError> {
    with_state(|s| {
        if s.threads == 1 && !watched {
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
    if total_elements >= WATCH_ELEMENTS
        && interrupt::polling()
        && let Some(pool) = pool(true)?
    {
        return map_watched(&pool, blocks, &f);
    }
    if blocks.len() <= 1 || total_elements < SERIAL_ELEMENTS {
        return Ok(blocks.into_iter().map(f).collect());
    }
    match pool(false)? {
        None => Ok(blocks.into_iter().map(f).collect()),
        Some(pool) => Ok(pool.install(|| blocks.into_par_iter().with_max_len(1).map(&f).collect())),
    }
}

/// [`map_blocks`] for a watched call: the pool's threads take blocks in turn while the
/// calling thread polls every [`interrupt::POLL_INTERVAL`]; when the poll says stop, the
/// workers stop at their next block (or inside a long row, see [`interrupt::stopped_at`]) and
/// the call is [`XentError::Interrupted`]. Results come back in block order, as from
/// [`map_blocks`], whichever thread computed them.
fn map_watched<R, F>(
    pool: &ThreadPool,
    blocks: Vec<Range<usize>>,
    f: &F,
) -> Result<Vec<R>, XentError>
where
    R: Send,
    F: Fn(Range<usize>) -> R + Sync,
{
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let slots: Vec<Mutex<Option<R>>> = blocks.iter().map(|_| Mutex::new(None)).collect();
    let workers = pool.current_num_threads().min(blocks.len()).max(1);
    let finished = Finished::default();
    pool.in_place_scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|_| {
                let _done = finished.on_drop();
                interrupt::with_stop_flag(&stop, || {
                    while !stop.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(block) = blocks.get(i) else { break };
                        let result = f(block.clone());
                        *slots[i].lock().unwrap_or_else(PoisonError::into_inner) = Some(result);
                    }
                });
            });
        }
        finished.wait(workers, || {
            if interrupt::poll() {
                stop.store(true, Ordering::Relaxed);
            }
        });
    });
    if stop.load(Ordering::Relaxed) {
        return Err(XentError::Interrupted);
    }
    Ok(slots
        .into_iter()
        .map(|slot| {
            slot.into_inner()
                .unwrap_or_else(PoisonError::into_inner)
                .expect("every block ran")
        })
        .collect())
}

/// A count of the workers of a watched call that have finished, and a way to wait for it.
#[derive(Default)]
struct Finished {
    count: Mutex<usize>,
    changed: Condvar,
}

impl Finished {
    /// A guard that counts one worker as finished when it is dropped, also when the worker
    /// unwinds (so that a panicking block never leaves the calling thread waiting).
    fn on_drop(&self) -> impl Drop + '_ {
        struct Done<'a>(&'a Finished);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                *self.0.count.lock().unwrap_or_else(PoisonError::into_inner) += 1;
                self.0.changed.notify_one();
            }
        }
        Done(self)
    }

    /// Waits until `workers` have finished, calling `tick` every [`interrupt::POLL_INTERVAL`]
    /// meanwhile (without holding the count's lock).
    fn wait(&self, workers: usize, mut tick: impl FnMut()) {
        let mut count = self.count.lock().unwrap_or_else(PoisonError::into_inner);
        while *count < workers {
            let (guard, timeout) = self
                .changed
                .wait_timeout(count, interrupt::POLL_INTERVAL)
                .unwrap_or_else(PoisonError::into_inner);
            count = guard;
            if timeout.timed_out() && *count < workers {
                drop(count);
                tick();
                count = self.count.lock().unwrap_or_else(PoisonError::into_inner);
            }
        }
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
    fn watched_calls_give_the_same_results_and_stop_when_asked() {
        let b = blocks(WATCH_ELEMENTS, 1, 1);
        let starts: Vec<usize> = b.iter().map(|r| r.start).collect();
        let never = || false;
        let out = interrupt::with_poll(&never, || {
            map_blocks(b.clone(), WATCH_ELEMENTS, |r| r.start)
        });
        assert_eq!(out, Ok(starts));

        let ran = AtomicUsize::new(0);
        let slow = |r: Range<usize>| {
            std::thread::sleep(std::time::Duration::from_millis(2));
            ran.fetch_add(1, Ordering::Relaxed);
            r.start
        };
        let always = || true;
        let stopped = interrupt::with_poll(&always, || map_blocks(b.clone(), WATCH_ELEMENTS, slow));
        assert_eq!(stopped, Err(XentError::Interrupted));
        let ran = ran.into_inner();
        assert!(0 < ran && ran < b.len(), "{ran} of {} blocks ran", b.len());
    }

    #[test]
    fn a_panicking_watched_block_does_not_hang_the_call() {
        let b = blocks(WATCH_ELEMENTS, 1, 1);
        let never = || false;
        let outcome = std::panic::catch_unwind(|| {
            interrupt::with_poll(&never, || {
                map_blocks(b.clone(), WATCH_ELEMENTS, |r| {
                    assert!(r.start != BLOCK_ELEMENTS, "block 1 fails");
                    r.start
                })
            })
        });
        assert!(outcome.is_err());
    }

    #[test]
    fn map_blocks_keeps_order() {
        let b = blocks(1 << 20, 1, 1);
        let out = map_blocks(b.clone(), 1 << 20, |r| r.start).unwrap();
        assert_eq!(out, b.iter().map(|r| r.start).collect::<Vec<_>>());
    }
}
