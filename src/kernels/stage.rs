//! Staging of a narrow [`Storage`] (bfloat16) as the kernels' float: a small scratch buffer
//! widened into before a kernel runs on a piece of a buffer and narrowed from after, where
//! a buffer of the kernels' own float is used in place. The row driver stages rows, tiles
//! and spans; the element-wise kernels stage chunks.

use crate::float::Storage;
use crate::simd::{Isa, Lane};

/// Where a kernel reads or writes a buffer of storage `S` as `S::Compute` values: the buffer
/// itself when `S` is read in place, else a scratch buffer, widened into before the kernel
/// runs and narrowed from after it ran.
pub(crate) struct Stage<S: Storage> {
    scratch: Vec<S::Compute>,
}

impl<S: Storage> Stage<S> {
    /// Scratch for `len` values where `S` needs it and the buffer is `used`.
    pub(crate) fn new(used: bool, len: usize) -> Self {
        Stage {
            scratch: if used && !S::IN_PLACE {
                vec![<S::Compute as Lane>::ZERO; len]
            } else {
                Vec::new()
            },
        }
    }

    /// The `n` values at `src` as compute values: `src` itself, or widened into the scratch.
    /// Null stays null.
    ///
    /// # Safety
    /// `src` must be null or readable for `n` values, at most the scratch's length.
    #[inline(always)]
    pub(crate) unsafe fn read<I: Isa>(
        &mut self,
        isa: I,
        src: *const S,
        n: usize,
    ) -> *const S::Compute {
        if src.is_null() {
            return std::ptr::null();
        }
        match S::in_place(src) {
            Some(p) => p,
            None => {
                debug_assert!(n <= self.scratch.len());
                let to = self.scratch.as_mut_ptr();
                // SAFETY: see the function's contract.
                unsafe { S::widen_n(isa, src, to, n) };
                to.cast_const()
            }
        }
    }

    /// Where a kernel writes the values meant for `dst`: `dst` itself, or the scratch (then
    /// [`Stage::flush`] narrows them into `dst`). Null stays null.
    #[inline(always)]
    pub(crate) fn write(&mut self, dst: *mut S) -> *mut S::Compute {
        if dst.is_null() {
            return std::ptr::null_mut();
        }
        S::in_place_mut(dst).unwrap_or(self.scratch.as_mut_ptr())
    }

    /// Narrows the first `n` values written through [`Stage::write`] into `dst` (nothing when
    /// they were written in place, or `dst` is null).
    ///
    /// # Safety
    /// `dst` must be null or writable for `n` values, at most the scratch's length.
    #[inline(always)]
    pub(crate) unsafe fn flush<I: Isa>(&self, isa: I, dst: *mut S, n: usize) {
        if !dst.is_null() && !S::IN_PLACE {
            debug_assert!(n <= self.scratch.len());
            // SAFETY: see the function's contract.
            unsafe { S::narrow_n(isa, self.scratch.as_ptr(), dst, n) }
        }
    }
}
