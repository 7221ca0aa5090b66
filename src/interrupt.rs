//! Stopping a long call midway, when its caller asks.
//!
//! The core knows nothing of signals. A front end that wants its long calls to stop (the
//! Python binding, for Ctrl-C) runs them under [`with_poll`], giving a function that says
//! whether to stop (Python's pending-signal check). [`crate::parallel::map_blocks`] then runs
//! the blocks of every call of at least [`crate::parallel::WATCH_ELEMENTS`] elements on the
//! pool while the calling thread asks that function every [`POLL_INTERVAL`]. Once it says
//! stop, a flag shared by the call's workers makes each of them stop at its next block, or
//! within [`ROW_CHECK`] values inside a long row (`stopped_at`, which the row loops ask), and
//! the call returns [`crate::error::XentError::Interrupted`]: what it wrote by then is
//! unspecified, and a caller must drop it.
//!
//! Calls without a poll function, smaller calls and work outside a watched call never stop:
//! `stopped_at` is false there.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often the calling thread asks its poll function while the workers compute.
pub const POLL_INTERVAL: Duration = Duration::from_millis(40);

/// Values of one row between two reads of the stop flag, a power of two (and so a multiple
/// of every vector group a row loop steps by): about 0.2 ms of any row pass.
pub const ROW_CHECK: usize = 1 << 19;

/// A poll function borrowed for the duration of [`with_poll`].
type Poll = *const (dyn Fn() -> bool + 'static);

thread_local! {
    /// The calling thread's poll function, while it runs under [`with_poll`].
    static POLL: Cell<Option<Poll>> = const { Cell::new(None) };
    /// The stop flag of the watched call whose block this (worker) thread is computing.
    static STOP: Cell<*const AtomicBool> = const { Cell::new(std::ptr::null()) };
}

/// Runs `f` on this thread with `poll` as the answer to "should the call stop?" for every
/// watched call `f` makes (see the module docs). Calls nest: the innermost poll applies.
pub fn with_poll<R>(poll: &dyn Fn() -> bool, f: impl FnOnce() -> R) -> R {
    // SAFETY: only the lifetime is erased. The pointer lives in this thread's slot until the
    // guard below puts the previous value back, which happens before `poll`'s borrow ends
    // (also when `f` unwinds), and it is only called on this thread, inside `f`.
    let erased: Poll = unsafe {
        std::mem::transmute::<*const (dyn Fn() -> bool + '_), Poll>(std::ptr::from_ref(poll))
    };
    let _restore = Restore(POLL.replace(Some(erased)));
    f()
}

/// Puts the previous poll function back when a [`with_poll`] scope ends.
struct Restore(Option<Poll>);

impl Drop for Restore {
    fn drop(&mut self) {
        POLL.set(self.0);
    }
}

/// Whether this thread runs under [`with_poll`].
pub(crate) fn polling() -> bool {
    POLL.get().is_some()
}

/// Asks this thread's poll function whether to stop; false without one.
pub(crate) fn poll() -> bool {
    match POLL.get() {
        // SAFETY: the pointer is live while it is in the slot (see `with_poll`), and this is
        // the thread that put it there.
        Some(f) => unsafe { (*f)() },
        None => false,
    }
}

/// Runs `f` on a worker thread with `flag` as its stop flag (read by [`stopped_at`]).
pub(crate) fn with_stop_flag<R>(flag: &AtomicBool, f: impl FnOnce() -> R) -> R {
    struct Clear(*const AtomicBool);
    impl Drop for Clear {
        fn drop(&mut self) {
            STOP.set(self.0);
        }
    }
    let _clear = Clear(STOP.replace(std::ptr::from_ref(flag)));
    f()
}

/// Whether the watched call this thread works for has been asked to stop. Row loops read it
/// through [`stopped_at`] and give up the row when it is set (the call's results are then
/// dropped, so what the row holds does not matter).
#[inline]
fn stopped() -> bool {
    let flag = STOP.get();
    // SAFETY: a non-null flag is the one `with_stop_flag` set for the block this thread is
    // computing, and it outlives that block.
    !flag.is_null() && unsafe { (*flag).load(Ordering::Relaxed) }
}

/// Whether a row loop starting its stretch of [`ROW_CHECK`] values at `start` should give
/// up the row: never at the row's start (so rows shorter than one stretch never read the
/// flag), else the stop flag's answer. Row loops run in stretches of [`ROW_CHECK`] values, the
/// loop inside each stretch unchanged, so the values meet the same arithmetic in the same
/// order whether or not a call is watched.
#[inline(always)]
pub(crate) fn stopped_at(start: usize) -> bool {
    start != 0 && stopped()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_is_scoped_to_with_poll() {
        assert!(!polling());
        assert!(!poll());
        let yes = || true;
        let inner = with_poll(&yes, || {
            let no = || false;
            let nested = with_poll(&no, poll);
            (polling(), poll(), nested)
        });
        assert_eq!(inner, (true, true, false));
        assert!(!polling());
    }

    #[test]
    fn stop_flag_is_scoped_and_read() {
        let flag = AtomicBool::new(false);
        assert!(!stopped());
        with_stop_flag(&flag, || {
            assert!(!stopped());
            flag.store(true, Ordering::Relaxed);
            assert!(stopped());
            assert!(!stopped_at(0), "a row is never given up before it starts");
            assert!(stopped_at(2 * ROW_CHECK));
        });
        assert!(!stopped());
    }
}
