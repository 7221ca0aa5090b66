//! Vectorised building blocks shared by the kernels: maxima and sums of exponentials along a
//! contiguous row, and the same down the columns of a group of lanes.
//!
//! All of them are `#[inline(always)]`: they are compiled into the caller's instruction set.

use crate::float::Float;
use crate::interrupt;
use crate::kernels::lanes::{Columns, V};
use crate::simd::{Isa, Vector};

/// Number of f32/f64 vectors summed in the element precision before widening to f64 when
/// summing down columns.
const COLUMN_FLUSH: usize = 16;

/// Largest value of the contiguous row `x[..n]`.
///
/// # Safety
/// `x` must be readable for `n` values.
#[inline(always)]
pub(crate) unsafe fn row_max<T: Float, I: Isa>(isa: I, x: *const T, n: usize) -> T {
    let lanes = V::<T, I>::LANES;
    let ninf = V::<T, I>::splat(isa, T::NEG_INFINITY);
    let mut acc = [ninf; 4];
    let mut i = 0;
    while i + 4 * lanes <= n {
        if interrupt::stopped_at(i) {
            return T::ZERO;
        }
        let end = n.min(i + interrupt::ROW_CHECK);
        while i + 4 * lanes <= end {
            for (k, a) in acc.iter_mut().enumerate() {
                // SAFETY: i + (k+1)*lanes <= n.
                *a = a.max(unsafe { V::<T, I>::load(isa, x.add(i + k * lanes)) });
            }
            i += 4 * lanes;
        }
    }
    while i + lanes <= n {
        // SAFETY: i + lanes <= n.
        acc[0] = acc[0].max(unsafe { V::<T, I>::load(isa, x.add(i)) });
        i += lanes;
    }
    if i < n {
        // SAFETY: n - i values remain.
        acc[1] =
            acc[1].max(unsafe { V::<T, I>::load_partial(isa, x.add(i), n - i, T::NEG_INFINITY) });
    }
    acc[0].max(acc[1]).max(acc[2].max(acc[3])).reduce_max()
}

/// Stores `tanh(x * inv)` of the contiguous row `x[..n]` at `t` and returns the largest of
/// them (the soft cap's first pass: it reads the row once, and the passes after it read `t`
/// from the caches). Prefetches the next row at `ahead` (see [`prefetch_row`]).
///
/// The maximum of the stored values, not the `tanh` of the row's maximum: the shift of the
/// exponentials is then exactly the largest capped logit as computed, whether or not the
/// vector `tanh` is monotonic to the last bit.
///
/// # Safety
/// `x` must be readable and `t` writable for `n` values.
#[inline(always)]
pub(crate) unsafe fn row_tanh_max<T: Float, I: Isa>(
    isa: I,
    x: *const T,
    n: usize,
    inv: T,
    t: *mut T,
    ahead: *const T,
) -> T {
    let lanes = V::<T, I>::LANES;
    let inv = V::<T, I>::splat(isa, inv);
    let ninf = V::<T, I>::splat(isa, T::NEG_INFINITY);
    let mut acc = [ninf; 4];
    let mut i = 0;
    while i + 4 * lanes <= n {
        if interrupt::stopped_at(i) {
            return T::ZERO;
        }
        let end = n.min(i + interrupt::ROW_CHECK);
        while i + 4 * lanes <= end {
            prefetch_row(ahead, i, 4 * lanes);
            for (k, a) in acc.iter_mut().enumerate() {
                // SAFETY: i + (k+1)*lanes <= n.
                unsafe {
                    let v = T::tanh(V::<T, I>::load(isa, x.add(i + k * lanes)).mul(inv));
                    v.store(t.add(i + k * lanes));
                    *a = a.max(v);
                }
            }
            i += 4 * lanes;
        }
    }
    while i < n {
        let k = lanes.min(n - i);
        // SAFETY: k values remain; padding lanes hold -inf, whose tanh (-1) is no larger than
        // any value's.
        unsafe {
            let v = T::tanh(load_upto(isa, x.add(i), k, T::NEG_INFINITY).mul(inv));
            store_upto(v, t.add(i), k);
            acc[1] = acc[1].max(v);
        }
        i += k;
    }
    acc[0].max(acc[1]).max(acc[2].max(acc[3])).reduce_max()
}

/// Asks for the cache lines holding `ahead[i..i + count]` (`ahead` is the next row's input,
/// [`Ptrs::ahead`]), without waiting for them; nothing when `ahead` is null. Kernels call it
/// for each stretch of the row they compute from the caches, at the same offsets, so that the
/// whole next row is on its way by the end of this one.
///
/// [`Ptrs::ahead`]: crate::kernels::rows::Ptrs::ahead
#[inline(always)]
pub(crate) fn prefetch_row<T>(ahead: *const T, i: usize, count: usize) {
    if ahead.is_null() {
        return;
    }
    let bytes = count * std::mem::size_of::<T>();
    for offset in (0..bytes).step_by(CACHE_LINE) {
        // A prefetch never faults, so the address needs no bounds; `wrapping_add` keeps the
        // arithmetic defined whatever it is.
        let line = ahead.wrapping_add(i).cast::<u8>().wrapping_add(offset);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch reads nothing architecturally and cannot fault.
        unsafe {
            use std::arch::x86_64::{_MM_HINT_T1, _mm_prefetch};
            _mm_prefetch::<_MM_HINT_T1>(line.cast::<i8>());
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = line;
    }
}

/// Bytes of a cache line, the unit [`prefetch_row`] asks for.
const CACHE_LINE: usize = 64;

/// `Σ exp(x - m)` over the contiguous row `x[..n]`, accumulated in f64 (each group of four
/// vectors is added in the element precision first, then widened). When `e` is not null,
/// also stores `exp(x - m)` there (`e` may equal `x`). Prefetches the next row at `ahead`
/// (see [`prefetch_row`]).
///
/// # Safety
/// `x` must be readable and `e` (unless null) writable for `n` values.
#[inline(always)]
pub(crate) unsafe fn row_sum_exp<T: Float, I: Isa>(
    isa: I,
    x: *const T,
    n: usize,
    m: T,
    e: *mut T,
    ahead: *const T,
) -> f64 {
    let lanes = V::<T, I>::LANES;
    let mv = V::<T, I>::splat(isa, m);
    let mut acc = V::<T, I>::wide_zero(isa);
    let mut i = 0;
    while i + 4 * lanes <= n {
        if interrupt::stopped_at(i) {
            return 1.0;
        }
        let end = n.min(i + interrupt::ROW_CHECK);
        while i + 4 * lanes <= end {
            prefetch_row(ahead, i, 4 * lanes);
            // SAFETY: i + 4 * lanes <= n.
            let v = unsafe {
                [
                    T::exp(V::<T, I>::load(isa, x.add(i)).sub(mv)),
                    T::exp(V::<T, I>::load(isa, x.add(i + lanes)).sub(mv)),
                    T::exp(V::<T, I>::load(isa, x.add(i + 2 * lanes)).sub(mv)),
                    T::exp(V::<T, I>::load(isa, x.add(i + 3 * lanes)).sub(mv)),
                ]
            };
            if !e.is_null() {
                for (k, vk) in v.iter().enumerate() {
                    // SAFETY: as above.
                    unsafe { vk.store(e.add(i + k * lanes)) };
                }
            }
            acc = v[0].add(v[1]).add(v[2].add(v[3])).wide_add(acc);
            i += 4 * lanes;
        }
    }
    while i < n {
        let k = lanes.min(n - i);
        // SAFETY: k values remain; a partial load fills with -inf, whose exp is 0.
        let v = T::exp(unsafe { load_upto(isa, x.add(i), k, T::NEG_INFINITY) }.sub(mv));
        if !e.is_null() {
            // SAFETY: k values remain.
            unsafe { store_upto(v, e.add(i), k) };
        }
        acc = v.wide_add(acc);
        i += k;
    }
    V::<T, I>::wide_sum(acc)
}

/// Loads `k <= LANES` values, filling the rest with `fill`.
///
/// # Safety
/// `p` must be readable for `k` values.
#[inline(always)]
pub(crate) unsafe fn load_upto<T: Float, I: Isa>(
    isa: I,
    p: *const T,
    k: usize,
    fill: T,
) -> V<T, I> {
    if k == V::<T, I>::LANES {
        // SAFETY: k values are readable.
        unsafe { V::<T, I>::load(isa, p) }
    } else {
        // SAFETY: k values are readable.
        unsafe { V::<T, I>::load_partial(isa, p, k, fill) }
    }
}

/// Stores the first `k <= LANES` lanes.
///
/// # Safety
/// `p` must be writable for `k` values.
#[inline(always)]
pub(crate) unsafe fn store_upto<T: Float, I: Isa>(v: V<T, I>, p: *mut T, k: usize) {
    if k == V::<T, I>::LANES {
        // SAFETY: k values are writable.
        unsafe { v.store(p) }
    } else {
        // SAFETY: k values are writable.
        unsafe { v.store_partial(p, k) }
    }
}

/// The length of the first piece when a row of `n` values at `out` is written a vector at a
/// time with [`put`]: up to where `out` reaches vector alignment (a whole vector when it is
/// aligned already, or when `stream` is off), so that every later whole vector is aligned.
#[inline(always)]
fn first_piece<T: Float, I: Isa>(out: *mut T, n: usize, stream: bool) -> usize {
    let lanes = V::<T, I>::LANES;
    let skew = (out as usize / std::mem::size_of::<T>()) % lanes;
    if !stream || skew == 0 {
        lanes.min(n)
    } else {
        (lanes - skew).min(n)
    }
}

/// Stores the first `k <= LANES` lanes at `p`; a whole vector with a non-temporal store when
/// `stream` is on (see [`first_piece`] for the alignment this needs).
///
/// # Safety
/// `p` must be writable for `k` values, and aligned to the vector when `stream` and
/// `k == LANES`.
#[inline(always)]
unsafe fn put<T: Float, I: Isa>(v: V<T, I>, p: *mut T, k: usize, stream: bool) {
    if stream && k == V::<T, I>::LANES {
        // SAFETY: see the function's contract.
        unsafe { v.stream(p) }
    } else {
        // SAFETY: see the function's contract.
        unsafe { store_upto(v, p, k) }
    }
}

/// Writes `f(x[i])` to `out[i]` for the `n` values of a row, a vector at a time with [`put`]:
/// with `stream`, whole vectors go out with non-temporal stores, aligned by [`first_piece`].
/// `out` may equal `x` (each piece is read before it is written).
///
/// # Safety
/// `x` must be readable and `out` writable for `n` values.
#[inline(always)]
pub(crate) unsafe fn map_row<T: Float, I: Isa>(
    isa: I,
    x: *const T,
    out: *mut T,
    n: usize,
    stream: bool,
    f: impl Fn(V<T, I>) -> V<T, I>,
) {
    let lanes = V::<T, I>::LANES;
    let first = first_piece::<T, I>(out, n, stream);
    let (mut i, mut k) = (0, first);
    while i < n {
        if interrupt::stopped_at(i) {
            return;
        }
        let end = n.min(i + interrupt::ROW_CHECK);
        while i < end {
            // SAFETY: i + k <= n values at `x` and `out`; `put` streams only whole vectors, which
            // `first_piece` aligned.
            unsafe {
                put(
                    f(load_upto(isa, x.add(i), k, T::ZERO)),
                    out.add(i),
                    k,
                    stream,
                )
            };
            i += k;
            k = lanes.min(n - i);
        }
    }
}

/// Lane-wise maximum of the input's columns.
///
/// # Safety
/// `cols` must hold `classes` columns.
#[inline(always)]
pub(crate) unsafe fn col_max<T: Float, I: Isa>(
    isa: I,
    cols: &Columns<T>,
    classes: usize,
) -> V<T, I> {
    let mut m = V::<T, I>::splat(isa, T::NEG_INFINITY);
    for c in 0..classes {
        // SAFETY: see the function's contract.
        m = m.max(unsafe { cols.x(isa, c) });
    }
    m
}

/// Lane-wise `Σ_c exp(x_c - m)` of the input's columns (see [`ColumnSum`]), rounded to the
/// element precision. With `store`, also writes `exp(x_c - m)` to the output's columns.
///
/// # Safety
/// `cols` must hold `classes` columns, and an output when `store`.
#[inline(always)]
pub(crate) unsafe fn col_sum_exp<T: Float, I: Isa>(
    isa: I,
    cols: &Columns<T>,
    classes: usize,
    m: V<T, I>,
    store: bool,
) -> V<T, I> {
    // Each run of COLUMN_FLUSH classes is a plain loop (a counter or a store test inside the
    // loop costs more than the exponentials around them leave room for).
    let mut sum = ColumnSum::<T, I>::new(isa);
    for c0 in (0..classes).step_by(COLUMN_FLUSH) {
        let end = classes.min(c0 + COLUMN_FLUSH);
        let mut run = V::<T, I>::splat(isa, T::ZERO);
        if store {
            for c in c0..end {
                // SAFETY: see the function's contract.
                let v = T::exp(unsafe { cols.x(isa, c) }.sub(m));
                // SAFETY: see the function's contract.
                unsafe { v.store(cols.out(c)) };
                run = run.add(v);
            }
        } else {
            for c in c0..end {
                // SAFETY: see the function's contract.
                run = run.add(T::exp(unsafe { cols.x(isa, c) }.sub(m)));
            }
        }
        sum.add_run(run);
    }
    sum.total()
}

/// A lane-wise sum down columns: summed in the element precision over runs of 16 classes,
/// and in f64 across runs (like [`col_sum_exp`]). A sum of one run (16 classes or fewer)
/// never leaves the element precision.
#[derive(Clone, Copy)]
pub(crate) struct ColumnSum<T: Float, I: Isa> {
    wide: Option<<V<T, I> as Vector>::Wide>,
    part: V<T, I>,
    count: usize,
}

impl<T: Float, I: Isa> ColumnSum<T, I> {
    /// An empty sum.
    #[inline(always)]
    pub(crate) fn new(isa: I) -> Self {
        ColumnSum {
            wide: None,
            part: V::<T, I>::splat(isa, T::ZERO),
            count: 0,
        }
    }

    /// Adds one column.
    #[inline(always)]
    pub(crate) fn add(&mut self, v: V<T, I>) {
        if self.count == COLUMN_FLUSH {
            self.flush();
        }
        self.part = self.part.add(v);
        self.count += 1;
    }

    /// Adds the element-precision sum of a run of at most `COLUMN_FLUSH` columns that the
    /// caller added up itself, as a run of its own (the run before it is widened first).
    #[inline(always)]
    pub(crate) fn add_run(&mut self, run: V<T, I>) {
        if self.count > 0 {
            self.flush();
        }
        self.part = run;
        self.count = COLUMN_FLUSH;
    }

    /// Widens the current run into the f64 sum.
    #[inline(always)]
    fn flush(&mut self) {
        let isa = self.part.isa();
        let wide = self.wide.unwrap_or(V::<T, I>::wide_zero(isa));
        self.wide = Some(self.part.wide_add(wide));
        self.part = V::<T, I>::splat(isa, T::ZERO);
        self.count = 0;
    }

    /// The sum, rounded to the element precision.
    #[inline(always)]
    pub(crate) fn total(self) -> V<T, I> {
        match self.wide {
            Some(wide) => V::<T, I>::narrow(self.part.wide_add(wide)),
            None => self.part,
        }
    }
}
