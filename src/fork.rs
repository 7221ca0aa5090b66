//! What a forked child must not inherit.
//!
//! `fork` copies the memory of a process but only the thread that called it. A child of a
//! process that had made a parallel call would otherwise find the pool of [`crate::parallel`]
//! with no threads behind it (and wait for them forever), and any lock another thread held at
//! the moment of the fork locked for good. Handlers registered with `pthread_atfork` (by
//! [`register_handlers`], which the Python binding calls when it is imported) take both of
//! the crate's locks before the fork, so
//! that no other thread holds one while memory is copied, and release them after it; in the
//! child they also drop the parent's pool (the first parallel call there starts a fresh one)
//! and its idle output blocks (`pool::drop_idle_after_fork`). The parent's pool is
//! untouched.

use std::cell::RefCell;
use std::sync::{MutexGuard, Once};

use crate::{parallel, pool};

/// Both locks, held by the forking thread from `prepare` to `parent`/`child`.
struct Held {
    threads: MutexGuard<'static, parallel::PoolState>,
    outputs: MutexGuard<'static, pool::Pool>,
}

thread_local! {
    static HELD: RefCell<Option<Held>> = const { RefCell::new(None) };
}

/// Registers the fork handlers, once per process (later calls do nothing).
pub fn register_handlers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        #[cfg(unix)]
        // SAFETY: the handlers are plain functions that live as long as the process (an
        // extension module is never unloaded). A failure (ENOMEM) leaves fork unhandled, as
        // before; nothing else depends on it.
        unsafe {
            libc::pthread_atfork(Some(prepare), Some(parent), Some(child));
        }
    });
}

/// Before `fork`, on the forking thread: takes both locks (in the order no other code nests
/// them in: the pool's state is never locked while the output cache is).
extern "C" fn prepare() {
    let threads = parallel::lock_state();
    let outputs = pool::lock_pool();
    HELD.with(|h| *h.borrow_mut() = Some(Held { threads, outputs }));
}

/// After `fork`, in the parent: releases the locks.
extern "C" fn parent() {
    HELD.with(|h| drop(h.borrow_mut().take()));
}

/// After `fork`, in the child (whose only thread is the one that forked): drops the parent's
/// pool and idle blocks, then releases the locks.
extern "C" fn child() {
    HELD.with(|h| {
        if let Some(mut held) = h.borrow_mut().take() {
            parallel::forget_pool_after_fork(&mut held.threads);
            pool::drop_idle_after_fork(&mut held.outputs);
        }
    });
}
