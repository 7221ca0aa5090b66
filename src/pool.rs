//! A bounded cache of large memory blocks for fresh outputs.
//!
//! The first write to a freshly mapped page makes the OS zero it: for a multi-megabyte
//! output that costs as much as the kernel that fills it (a 262 MB gradient: ~20 ms of page
//! zeroing against ~15 ms of work). Blocks given back when their array dies are kept, up to
//! a byte limit ([`set_limit`], `XENT_RS_OUTPUT_CACHE_MB`, default 1 GiB), and handed out
//! again for the next output of about the same size, already mapped. Blocks are 2 MiB
//! aligned and asked to be backed by huge pages, as NumPy does for its own large arrays.
//!
//! Only blocks of at least [`MIN_BYTES`] are cached; smaller outputs do not fault enough to
//! matter. The module knows nothing of Python: the binding plugs it into NumPy's allocator
//! hooks for the arrays this package returns.

use std::alloc::{self, Layout};
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Outputs of at least this many bytes come from the cache.
pub const MIN_BYTES: usize = 1 << 22;

/// Block alignment and size granularity: one huge page.
const ALIGN: usize = 1 << 21;

/// Idle bytes kept when `XENT_RS_OUTPUT_CACHE_MB` does not say otherwise.
pub const DEFAULT_LIMIT: usize = 1 << 30;

/// A cached block may be this much larger than the request it serves (a quarter).
const SLACK_DIVISOR: usize = 4;

/// The cache's bookkeeping, behind [`POOL`].
pub(crate) struct Pool {
    /// Blocks handed out: address -> capacity.
    live: BTreeMap<usize, usize>,
    /// Blocks given back, oldest first: (address, capacity).
    idle: Vec<(usize, usize)>,
    idle_bytes: usize,
    /// `None` until first read from the environment.
    limit: Option<usize>,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    live: BTreeMap::new(),
    idle: Vec::new(),
    idle_bytes: 0,
    limit: None,
});

impl Pool {
    /// The idle-byte limit, read from the environment on first use.
    fn limit(&mut self) -> usize {
        *self.limit.get_or_insert_with(limit_from_env)
    }
}

fn with_pool<R>(f: impl FnOnce(&mut Pool) -> R) -> R {
    f(&mut lock_pool())
}

/// The cache, locked (also by [`crate::fork`] across a `fork`).
pub(crate) fn lock_pool() -> MutexGuard<'static, Pool> {
    POOL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// In a forked child: unmaps the idle blocks. They are the parent's pages shared
/// copy-on-write, so reusing one would copy each page on its first write, which costs more
/// than a fresh page. Live blocks stay: arrays the child inherited still point at them, and
/// give them back as usual.
pub(crate) fn drop_idle_after_fork(pool: &mut Pool) {
    pool.idle_bytes = 0;
    unmap_blocks(std::mem::take(&mut pool.idle));
}

fn limit_from_env() -> usize {
    std::env::var("XENT_RS_OUTPUT_CACHE_MB")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .map_or(DEFAULT_LIMIT, |mb| mb.saturating_mul(1 << 20))
}

fn layout(capacity: usize) -> Option<Layout> {
    Layout::from_size_align(capacity, ALIGN).ok()
}

/// Maps a new block of `capacity` bytes (a multiple of [`ALIGN`]); null on failure.
fn map_block(capacity: usize) -> *mut u8 {
    let Some(layout) = layout(capacity) else {
        return std::ptr::null_mut();
    };
    // SAFETY: the layout has a non-zero size (capacity >= MIN_BYTES).
    let ptr = unsafe { alloc::alloc(layout) };
    #[cfg(target_os = "linux")]
    if !ptr.is_null() {
        // SAFETY: the range is the block just allocated, aligned to a page. A refusal (e.g.
        // transparent huge pages compiled out) leaves ordinary pages, which is fine.
        unsafe { libc::madvise(ptr.cast(), capacity, libc::MADV_HUGEPAGE) };
    }
    ptr
}

/// Unmaps blocks that were handed out by [`map_block`] and are no longer referenced.
fn unmap_blocks(blocks: Vec<(usize, usize)>) {
    for (addr, capacity) in blocks {
        if let Some(layout) = layout(capacity) {
            // SAFETY: the block was allocated by `map_block` with this layout and nothing
            // refers to it any more.
            unsafe { alloc::dealloc(addr as *mut u8, layout) };
        }
    }
}

/// A block of at least `size` bytes (`size >= MIN_BYTES`): a cached one when one fits,
/// else a new one. Null when memory is exhausted.
pub fn allocate(size: usize) -> *mut u8 {
    let Some(capacity) = size.checked_next_multiple_of(ALIGN) else {
        return std::ptr::null_mut();
    };
    let reused = with_pool(|pool| {
        let fits = |cap: usize| cap >= capacity && cap - capacity <= capacity / SLACK_DIVISOR;
        let best = pool
            .idle
            .iter()
            .enumerate()
            .rev()
            .filter(|&(_, &(_, cap))| fits(cap))
            .min_by_key(|&(_, &(_, cap))| cap)
            .map(|(i, _)| i)?;
        let (addr, cap) = pool.idle.remove(best);
        pool.idle_bytes -= cap;
        pool.live.insert(addr, cap);
        Some(addr as *mut u8)
    });
    if let Some(ptr) = reused {
        return ptr;
    }
    let ptr = map_block(capacity);
    if !ptr.is_null() {
        with_pool(|pool| pool.live.insert(ptr as usize, capacity));
    }
    ptr
}

/// The capacity of `ptr` if it is a block handed out by [`allocate`] and not yet released.
pub fn capacity(ptr: *const u8) -> Option<usize> {
    with_pool(|pool| pool.live.get(&(ptr as usize)).copied())
}

/// Takes back a block handed out by [`allocate`]: kept for reuse while the idle blocks fit
/// in the limit (the oldest are unmapped first), else unmapped. Returns `false`, doing
/// nothing, when `ptr` is not such a block.
pub fn release(ptr: *mut u8) -> bool {
    let Some(evicted) = with_pool(|pool| {
        let capacity = pool.live.remove(&(ptr as usize))?;
        pool.idle.push((ptr as usize, capacity));
        pool.idle_bytes += capacity;
        Some(evict(pool))
    }) else {
        return false;
    };
    unmap_blocks(evicted);
    true
}

/// Removes the oldest idle blocks until the idle bytes fit in the limit; returns them.
fn evict(pool: &mut Pool) -> Vec<(usize, usize)> {
    let limit = pool.limit();
    let mut evicted = Vec::new();
    while pool.idle_bytes > limit {
        let (addr, capacity) = pool.idle.remove(0);
        pool.idle_bytes -= capacity;
        evicted.push((addr, capacity));
    }
    evicted
}

/// The most idle bytes kept for reuse (0: outputs are not cached).
pub fn limit() -> usize {
    with_pool(Pool::limit)
}

/// Sets the most idle bytes kept for reuse; blocks beyond it are unmapped now.
pub fn set_limit(bytes: usize) {
    let evicted = with_pool(|pool| {
        pool.limit = Some(bytes);
        evict(pool)
    });
    unmap_blocks(evicted);
}

/// Bytes held by idle blocks.
pub fn idle_bytes() -> usize {
    with_pool(|pool| pool.idle_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pool is process-wide: its tests run one at a time.
    static SERIAL: Mutex<()> = Mutex::new(());

    #[test]
    fn blocks_are_reused_and_limited() {
        let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        set_limit(16 * ALIGN);
        let a = allocate(MIN_BYTES + 1);
        assert!(!a.is_null());
        assert!((a as usize).is_multiple_of(ALIGN));
        let cap = capacity(a).unwrap();
        assert!(cap > MIN_BYTES && cap.is_multiple_of(ALIGN));
        // SAFETY: the block holds `cap` writable bytes.
        unsafe { a.write_bytes(7, cap) };
        assert!(release(a));
        assert!(!release(a), "a block is released once");
        assert_eq!(idle_bytes(), cap);
        // Same size again: the same block, already mapped.
        let b = allocate(MIN_BYTES + 1);
        assert_eq!(a, b);
        assert_eq!(idle_bytes(), 0);
        // Much larger: a new block.
        let c = allocate(4 * cap);
        assert_ne!(c, b);
        assert!(release(b) && release(c));
        // Over the limit: the oldest idle block goes first.
        set_limit(4 * cap);
        assert_eq!(idle_bytes(), 4 * cap, "b is unmapped, c is kept");
        set_limit(0);
        assert_eq!(idle_bytes(), 0);
        let d = allocate(MIN_BYTES);
        assert!(release(d));
        assert_eq!(idle_bytes(), 0, "a zero limit keeps nothing");
        set_limit(DEFAULT_LIMIT);
    }

    #[test]
    fn foreign_pointers_are_not_taken() {
        let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        let mut x = 0u8;
        assert!(!release(&mut x));
        assert_eq!(capacity(&x), None);
    }
}
