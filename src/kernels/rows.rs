//! The row driver: how a per-row computation meets memory, SIMD and threads.
//!
//! A kernel over the class axis implements [`RowKernel`] twice: `row` for one contiguous
//! row, and `lanes` for as many rows as a vector has lanes, laid out by columns (class `c` of
//! lane `j` at `c * stride + j`). [`run_rows`] picks the layout:
//!
//! - class axis last and many classes: contiguous rows, one at a time, vectorised along the
//!   row;
//! - class axis not last (`inner > 1`, e.g. `(N, C, H, W)` with `axis=1`): the data already is
//!   by columns, so lanes run across the trailing axes with `stride = inner`, straight from
//!   memory;
//! - class axis last with few classes: rows are transposed 32 at a time into a small tile on
//!   the stack and processed by columns, vectorised across rows instead of along them.
//!
//! Rows are cut into data-sized blocks run on the private pool; each block runs with the CPU's
//! instruction set via [`crate::simd::dispatch`]. Each row yields one `f64` (a loss, a
//! logsumexp, or nothing) that is stored per row or summed per block in row order.
//!
//! The buffers hold a [`Storage`]: the kernels' own float, read and written in place, or
//! bfloat16, which each layout widens where it already copies (the tile, the strided span,
//! the gathered row) or, for contiguous rows, into one row of scratch, and narrows back
//! after the kernel ran ([`Stage`]). Kernels see `f32` either way, with the same lane groups
//! and tiles: a bfloat16 result is the `f32` result on the same values, rounded.

use std::ops::Range;

use crate::error::XentError;
use crate::float::{Float, Storage};
use crate::kernels::lanes::{Columns, MAX_LANES, V};
use crate::kernels::stage::Stage;
use crate::kernels::stats::{load_upto, map_row, store_upto};
use crate::kernels::{Layout, RawIn, RawOut};
use crate::parallel;
use crate::reduce::pairwise_sum;
use crate::simd::{self, Isa, Lane, Paired, Vector, WithIsa};

/// Rows per transposed tile; a multiple of every lane count. One lane group of a pair of
/// AVX-512 vectors: transposing and computing alternate finely enough for the loads of one
/// tile to overlap the arithmetic of the last (64 rows measured 6-8 % slower on W1).
pub(crate) const TILE_ROWS: usize = 32;

/// With the class axis last, rows of at most this many classes are processed by columns.
pub(crate) const MAX_SMALL_CLASSES: usize = 32;

/// Rows of at least this many bytes get the next row's input prefetched while they are
/// computed ([`Ptrs::ahead`]). A long row is read twice (its maximum, then its exponentials
/// from the caches), and without the prefetch the first read waits on memory with the
/// vector units idle: W3 CE forward -26 % at 1 thread. Shorter rows lose by it (8 KiB rows
/// +10 %: the hardware prefetcher already streams them); it pays from about 10 KiB.
const PREFETCH_ROW_BYTES: usize = 10 * 1024;

/// The most lanes of one vector: transposes work on single vectors.
const MAX_VECTOR_LANES: usize = 16;

/// The per-element buffers of one row (or one group of lanes).
///
/// `x` is always there; `x2` (a second input) and `out` (an output) are null when the
/// kernel does not use them. `out` may equal `x` (in place): kernels read an element of `x`
/// before writing the same element of `out` and never read `x` after writing `out`.
///
/// `stream` says whether kernels may write whole aligned vectors of `out` with non-temporal
/// stores (see [`stream_output`]); the driver fences the block when it is set.
///
/// `ahead` is the input of the row the kernel will be handed next, for kernels to prefetch
/// while they compute from this one (see [`stats::prefetch_row`]); null when rows are short
/// (the hardware prefetcher keeps up with them) unless the kernel asks for it anyway
/// ([`RowKernel::prefetches_short_rows`]), for lane groups, and for a block's last row.
///
/// `scratch` is one row's worth of values the kernel may use as it likes within a call of
/// `row` (contents unspecified on entry), for kernels that ask for it
/// ([`RowKernel::wants_scratch`]); null otherwise, and for lane groups.
///
/// [`stats::prefetch_row`]: crate::kernels::stats::prefetch_row
#[derive(Clone, Copy)]
pub(crate) struct Ptrs<T> {
    pub x: *const T,
    pub x2: *const T,
    pub out: *mut T,
    pub stream: bool,
    pub ahead: *const T,
    pub scratch: *mut T,
}

impl<T> Ptrs<T> {
    /// The same buffers `offset` elements further on (null stays null).
    ///
    /// # Safety
    /// `offset` must stay inside every non-null buffer.
    #[inline(always)]
    unsafe fn add(self, offset: usize) -> Self {
        // SAFETY: the caller keeps the offset inside each buffer; null pointers stay null.
        unsafe {
            Ptrs {
                x: self.x.add(offset),
                x2: if self.x2.is_null() {
                    self.x2
                } else {
                    self.x2.add(offset)
                },
                out: if self.out.is_null() {
                    self.out
                } else {
                    self.out.add(offset)
                },
                stream: self.stream,
                ahead: std::ptr::null(),
                scratch: self.scratch,
            }
        }
    }
}

/// The column-major buffers of one tile: input, second input and output, `len` values each.
struct Tile<T> {
    buf: Vec<T>,
    len: usize,
}

impl<T: Float> Tile<T> {
    fn new(len: usize) -> Self {
        Tile {
            buf: vec![T::ZERO; 3 * len],
            len,
        }
    }

    /// The input and second-input buffers, to fill.
    fn inputs(&mut self) -> (&mut [T], &mut [T]) {
        let (x, rest) = self.buf.split_at_mut(self.len);
        (x, &mut rest[..self.len])
    }

    /// The output buffer, to read back.
    fn output(&self) -> &[T] {
        &self.buf[2 * self.len..]
    }

    /// The lane group starting at lane `g` of the tile (classes `stride` apart), for a call
    /// whose buffers are `p` (a second input and an output only where the call has them).
    #[inline(always)]
    fn group<S>(&mut self, p: Ptrs<S>, g: usize, stride: usize) -> Columns<T> {
        let len = self.len;
        let base = self.buf.as_mut_ptr();
        // g < stride <= len keeps every offset inside its buffer of the tile, except with no
        // classes at all (an empty tile), where nothing is read or written through them:
        // `wrapping_add` keeps that pointer arithmetic defined.
        Columns::new(
            base.wrapping_add(g),
            if p.x2.is_null() {
                std::ptr::null()
            } else {
                base.wrapping_add(len + g)
            },
            if p.out.is_null() {
                std::ptr::null_mut()
            } else {
                base.wrapping_add(2 * len + g)
            },
            stride,
            stride,
        )
    }
}

/// A computation over the class axis. See the module docs.
pub(crate) trait RowKernel<T: Float>: Sync {
    /// Processes row `r`, whose `classes` values are contiguous at `p`; returns its result.
    fn row<I: Isa>(&self, isa: I, r: usize, p: Ptrs<T>, classes: usize) -> f64;

    /// Processes rows `r0 .. r0 + LANES` laid out by columns; only the first `valid` rows are
    /// real, the others are padding that must not touch per-row data. Returns each row's
    /// result in its lane, with 0 in the padding lanes.
    fn lanes<I: Isa>(
        &self,
        isa: I,
        r0: usize,
        valid: usize,
        cols: Columns<T>,
        classes: usize,
    ) -> V<T, I>;

    /// Checks the rows of a block, in the block's task; the values are summed over blocks by
    /// [`run_checked_rows`], which returns the first block's error instead. None by default.
    ///
    /// Contiguous rows are checked before `row` runs on them, so `row` may rely on the check.
    /// Lane groups are checked after `lanes` ran on them, when what the check reads is in the
    /// caches: so `lanes` must stay memory-safe for rows that fail the check, and only a call
    /// that writes nothing before it returns may check its rows here.
    fn check_rows(&self, rows: Range<usize>) -> Result<f64, XentError> {
        let _ = rows;
        Ok(0.0)
    }

    /// Whether `row` wants [`Ptrs::scratch`]: the driver then allocates one row of it per
    /// block. No by default.
    fn wants_scratch(&self) -> bool {
        false
    }

    /// Whether `row` is handed the next row to prefetch ([`Ptrs::ahead`]) whatever the
    /// length of the rows, not only from [`PREFETCH_ROW_BYTES`] on. For kernels whose first
    /// pass computes enough per element to leave the memory idle between its loads (the
    /// soft cap's `tanh`): there the hardware prefetcher falls behind on short rows too, and
    /// the prefetches cost nothing the arithmetic does not already hide. No by default.
    fn prefetches_short_rows(&self) -> bool {
        false
    }
}

/// One row of scratch for `kernel` (empty unless it asks for it), and the pointer to hand
/// over as [`Ptrs::scratch`] (null when empty).
fn row_scratch<T: Float, K: RowKernel<T>>(kernel: &K, classes: usize) -> Vec<T> {
    if kernel.wants_scratch() {
        vec![T::ZERO; classes]
    } else {
        Vec::new()
    }
}

/// [`Ptrs::scratch`] for a buffer from [`row_scratch`].
fn scratch_ptr<T>(scratch: &mut [T]) -> *mut T {
    if scratch.is_empty() {
        std::ptr::null_mut()
    } else {
        scratch.as_mut_ptr()
    }
}

/// What to do with each row's result.
#[derive(Clone, Copy)]
pub(crate) enum RowResults<T> {
    /// Nothing: the kernel's output is per element.
    Discard,
    /// Store it, rounded to `T`, at the row's index, and add them up as [`RowResults::Sum`]
    /// does (a caller that wants both the per-row results and their sum makes one pass).
    Store(RawOut<T>),
    /// Add them up (deterministically).
    Sum,
}

/// The per-element buffers of a whole call.
#[derive(Clone, Copy)]
pub(crate) struct RowBuffers<T> {
    pub x: RawIn<T>,
    pub x2: Option<RawIn<T>>,
    pub out: Option<RawOut<T>>,
}

/// Runs `kernel` on every row of `layout`; returns the sum of the row results when asked to
/// store or sum them (else 0).
pub(crate) fn run_rows<S: Storage, K: RowKernel<S::Compute>>(
    layout: Layout,
    kernel: &K,
    buffers: RowBuffers<S>,
    results: RowResults<S>,
) -> Result<f64, XentError> {
    run_checked_rows(layout, kernel, buffers, results).map(|(sum, _)| sum)
}

/// [`run_rows`], also returning the sum of the blocks' [`RowKernel::check_rows`] values, or
/// the error of the first block whose check fails.
pub(crate) fn run_checked_rows<S: Storage, K: RowKernel<S::Compute>>(
    layout: Layout,
    kernel: &K,
    buffers: RowBuffers<S>,
    results: RowResults<S>,
) -> Result<(f64, f64), XentError> {
    let rows = layout.rows();
    if rows == 0 {
        return Ok((0.0, 0.0));
    }
    let by_rows = layout.inner == 1 && layout.classes > MAX_SMALL_CLASSES;
    let stream = stream_output(&buffers, layout.len());
    let blocks = parallel::blocks(rows, layout.classes.max(1), TILE_ROWS);
    let outcomes = parallel::map_blocks(blocks, layout.len(), |range| {
        // See `RowKernel::check_rows` for why lane groups are checked after they ran.
        let checked_first = if by_rows {
            kernel.check_rows(range.clone())?
        } else {
            0.0
        };
        let sum = simd::dispatch(Block {
            layout,
            kernel,
            buffers,
            results,
            range: range.clone(),
            by_rows,
            stream,
        });
        let checked = if by_rows {
            checked_first
        } else {
            kernel.check_rows(range)?
        };
        Ok::<_, XentError>((sum, checked))
    })?;
    let mut sums = Vec::with_capacity(outcomes.len());
    let mut checks = Vec::with_capacity(outcomes.len());
    for outcome in outcomes {
        let (sum, checked) = outcome?;
        sums.push(sum);
        checks.push(checked);
    }
    Ok((pairwise_sum(&sums), pairwise_sum(&checks)))
}

/// Outputs of at least this many bytes may be written with non-temporal stores.
const STREAM_BYTES: usize = 16 << 20;

/// Whether kernels may write the output of a call with non-temporal stores: when it is large
/// (it would not stay in the caches anyway, and a normal store first reads each line it
/// writes) and not the input itself (whose lines the kernel has just read).
fn stream_output<S: Storage>(buffers: &RowBuffers<S>, elements: usize) -> bool {
    buffers.out.is_some_and(|out| {
        !std::ptr::eq(out.ptr().cast_const(), buffers.x.ptr())
            && elements * std::mem::size_of::<S>() >= STREAM_BYTES
    })
}

/// One block of rows, run with one instruction set.
struct Block<'k, S, K> {
    layout: Layout,
    kernel: &'k K,
    buffers: RowBuffers<S>,
    results: RowResults<S>,
    range: Range<usize>,
    by_rows: bool,
    stream: bool,
}

impl<S: Storage, K: RowKernel<S::Compute>> WithIsa for Block<'_, S, K> {
    type Output = f64;

    #[inline(always)]
    fn run<I: Isa>(self, isa: I) -> f64 {
        // Lane groups run two vectors wide (see `Paired`); contiguous rows push plain f64s.
        let mut acc = Accumulator::new(Paired::new(isa), self.results);
        if self.by_rows {
            self.run_by_rows(isa, &mut acc);
        } else if self.layout.inner == 1 {
            self.run_transposed(isa, &mut acc);
        } else if self.layout.classes > MAX_STRIDED_CLASSES {
            self.run_gathered(isa, &mut acc);
        } else {
            self.run_strided(isa, &mut acc);
        }
        if self.stream {
            isa.fence();
        }
        acc.total()
    }
}

/// Stores or sums row results. Lane results are summed lane-wise in f64 and reduced once
/// at the end of the block.
struct Accumulator<S: Storage, I: Isa> {
    results: RowResults<S>,
    sum: f64,
    lanes: <V<S::Compute, I> as Vector>::Wide,
}

impl<S: Storage, I: Isa> Accumulator<S, I> {
    fn new(isa: I, results: RowResults<S>) -> Self {
        Accumulator {
            results,
            sum: 0.0,
            lanes: V::<S::Compute, I>::wide_zero(isa),
        }
    }

    /// Takes the results of the `valid` rows from `r0` on, one per lane (padding lanes are 0).
    #[inline(always)]
    fn push_lanes(&mut self, r0: usize, valid: usize, values: V<S::Compute, I>) {
        match self.results {
            RowResults::Discard => {}
            // SAFETY: rows r0 .. r0+valid belong to this block; each is stored by it only.
            RowResults::Store(out) => {
                let to = out.ptr().wrapping_add(r0);
                match S::in_place_mut(to) {
                    // SAFETY: as above.
                    Some(to) => unsafe { store_upto(values, to, valid) },
                    None => {
                        let mut wide = [<S::Compute as Lane>::ZERO; MAX_LANES];
                        // SAFETY: `valid` values fit in `wide`; as above for `to`.
                        unsafe {
                            store_upto(values, wide.as_mut_ptr(), valid);
                            S::narrow_n(values.isa(), wide.as_ptr(), to, valid);
                        }
                    }
                }
                self.lanes = values.wide_add(self.lanes);
            }
            RowResults::Sum => self.lanes = values.wide_add(self.lanes),
        }
    }

    #[inline(always)]
    fn push(&mut self, r: usize, value: f64) {
        match self.results {
            RowResults::Discard => {}
            // SAFETY: `r` is a row of this block; each row is stored by one block only.
            RowResults::Store(out) => {
                // Rounded to the kernels' float first, as a result computed in it would be.
                let v = S::narrow(<S::Compute as Lane>::from_f64(value));
                // SAFETY: as above.
                unsafe { out.ptr().add(r).write(v) };
                self.sum += value;
            }
            RowResults::Sum => self.sum += value,
        }
    }

    /// The block's sum.
    fn total(self) -> f64 {
        self.sum + V::<S::Compute, I>::wide_sum(self.lanes)
    }
}

impl<S: Storage, K: RowKernel<S::Compute>> Block<'_, S, K> {
    fn base(&self) -> Ptrs<S> {
        Ptrs {
            x: self.buffers.x.ptr(),
            x2: self.buffers.x2.map_or(std::ptr::null(), |b| b.ptr()),
            out: self.buffers.out.map_or(std::ptr::null_mut(), |b| b.ptr()),
            stream: self.stream,
            ahead: std::ptr::null(),
            scratch: std::ptr::null_mut(),
        }
    }

    /// Contiguous rows, one at a time, each handed the next row of the block to prefetch when
    /// rows are long.
    ///
    /// Staged storage widens each row into one row of scratch, which the kernel overwrites
    /// with its output (in place, as kernels allow) before it is narrowed into the output.
    #[inline(always)]
    fn run_by_rows<I: Isa>(&self, isa: I, acc: &mut Accumulator<S, Paired<I>>) {
        let classes = self.layout.classes;
        let base = self.base();
        let prefetch = S::IN_PLACE
            && (self.kernel.prefetches_short_rows()
                || classes * std::mem::size_of::<S>() >= PREFETCH_ROW_BYTES);
        let mut x = Stage::<S>::new(true, classes);
        let mut x2 = Stage::<S>::new(!base.x2.is_null(), classes);
        let mut scratch = row_scratch(self.kernel, classes);
        let scratch = scratch_ptr(&mut scratch);
        for r in self.range.clone() {
            // SAFETY: row r spans elements r*C .. (r+1)*C of every buffer.
            let p = unsafe { base.add(r * classes) };
            // SAFETY: as above; each stage holds a row.
            let mut row = unsafe {
                Ptrs {
                    x: x.read(isa, p.x, classes),
                    x2: x2.read(isa, p.x2, classes),
                    out: x.write(p.out),
                    stream: p.stream && S::IN_PLACE,
                    ahead: std::ptr::null(),
                    scratch,
                }
            };
            if prefetch && r + 1 < self.range.end {
                // SAFETY: row r + 1 is in the block, so in the input.
                row.ahead = S::in_place(unsafe { p.x.add(classes) }).unwrap_or(std::ptr::null());
            }
            acc.push(r, self.kernel.row(isa, r, row, classes));
            // SAFETY: as above.
            unsafe { x.flush(isa, p.out, classes) };
        }
    }

    /// Few classes, class axis last: `TILE_ROWS` rows at a time are transposed into a tile of
    /// columns (a vector transpose per vector of rows), processed in lane groups of a
    /// [`Paired`] vector, and transposed back.
    ///
    /// Staged storage widens the tile's rows into scratch before they are transposed, and
    /// narrows the rows transposed back from the tile's output.
    #[inline(always)]
    fn run_transposed<I: Isa>(&self, isa: I, acc: &mut Accumulator<S, Paired<I>>) {
        let classes = self.layout.classes;
        let pair = Paired::new(isa);
        let lanes = V::<S::Compute, Paired<I>>::LANES;
        let base = self.base();
        let mut tile = Tile::new(classes * TILE_ROWS);
        let mut x = Stage::<S>::new(true, classes * TILE_ROWS);
        let mut x2 = Stage::<S>::new(!base.x2.is_null(), classes * TILE_ROWS);
        for r0 in self.range.clone().step_by(TILE_ROWS) {
            let n = TILE_ROWS.min(self.range.end - r0);
            // SAFETY: rows r0 .. r0+n lie inside every buffer.
            let p = unsafe { base.add(r0 * classes) };
            let (tx, tx2) = tile.inputs();
            // The rest of the block's rows may be read too (and then ignored): no other
            // thread writes them, and this one writes them only later. Scratch holds the
            // tile's rows only.
            let readable = if S::IN_PLACE {
                (self.range.end - r0) * classes
            } else {
                n * classes
            };
            // SAFETY: the block's rows from r0 on are readable at p.x (and p.x2); the stages
            // hold a tile's rows.
            unsafe {
                let from = x.read(isa, p.x, n * classes);
                transpose_in::<S::Compute, I>(isa, from, tx, n, readable, classes);
                if !p.x2.is_null() {
                    let from = x2.read(isa, p.x2, n * classes);
                    transpose_in::<S::Compute, I>(isa, from, tx2, n, readable, classes);
                }
            }
            for g in (0..n).step_by(lanes) {
                let cols = tile.group(p, g, TILE_ROWS);
                let valid = lanes.min(n - g);
                let values = self.kernel.lanes(pair, r0 + g, valid, cols, classes);
                acc.push_lanes(r0 + g, valid, values);
            }
            if !p.out.is_null() {
                // The input is in the tile by now: its stage is free for the output.
                let to = x.write(p.out);
                // SAFETY: n rows of `classes` values are writable at p.out, and fit the stage.
                unsafe {
                    transpose_out::<S::Compute, I>(isa, tile.output(), to, n, classes);
                    x.flush(isa, p.out, n * classes);
                }
            }
        }
    }

    /// Class axis not last with very many classes (more than [`MAX_STRIDED_CLASSES`]): each
    /// position's classes are gathered into a contiguous row, run by the row kernel, and its
    /// output scattered back. Scratch is one row per buffer, and the row kernel indexes
    /// classes as integers (the lane groups count them in the element type, exact in float32
    /// only up to 2^24).
    #[inline(always)]
    fn run_gathered<I: Isa>(&self, isa: I, acc: &mut Accumulator<S, Paired<I>>) {
        let Layout { classes, inner, .. } = self.layout;
        let base = self.base();
        let scratch = |used: bool| {
            if used {
                vec![<S::Compute as Lane>::ZERO; classes]
            } else {
                Vec::new()
            }
        };
        let mut x = scratch(true);
        let mut x2 = scratch(!base.x2.is_null());
        let mut out = scratch(!base.out.is_null());
        let mut own = row_scratch(self.kernel, classes);
        let own = scratch_ptr(&mut own);
        for r in self.range.clone() {
            let (o, i) = (r / inner, r % inner);
            // SAFETY: position (o, i) has `classes` values `inner` apart in every buffer.
            let p = unsafe { base.add(o * classes * inner + i) };
            // SAFETY: as above, for the inputs.
            unsafe {
                gather(p.x, inner, &mut x);
                if !p.x2.is_null() {
                    gather(p.x2, inner, &mut x2);
                }
            }
            let row = Ptrs {
                x: x.as_ptr(),
                x2: if p.x2.is_null() {
                    std::ptr::null()
                } else {
                    x2.as_ptr()
                },
                out: if p.out.is_null() {
                    std::ptr::null_mut()
                } else {
                    out.as_mut_ptr()
                },
                stream: false,
                ahead: std::ptr::null(),
                scratch: own,
            };
            acc.push(r, self.kernel.row(isa, r, row, classes));
            if !p.out.is_null() {
                for (c, v) in out.iter().enumerate() {
                    // SAFETY: as above, for the output.
                    unsafe { p.out.add(c * inner).write(S::narrow(*v)) };
                }
            }
        }
    }

    /// Class axis not last: lanes run along the trailing axes. A span of up to
    /// [`STRIDED_SPAN`] positions is copied, class by class, into a compact tile first: the
    /// classes lie `inner` values apart in memory, often a large power of two, which would map
    /// every class of a lane group onto the same cache set.
    #[inline(always)]
    fn run_strided<I: Isa>(&self, isa: I, acc: &mut Accumulator<S, Paired<I>>) {
        let Layout { classes, inner, .. } = self.layout;
        let pair = Paired::new(isa);
        let lanes = V::<S::Compute, Paired<I>>::LANES;
        let base = self.base();
        let span = (STRIDED_TILE / classes.max(1)).clamp(lanes, STRIDED_SPAN) / lanes * lanes;
        // The tile's classes lie `pitch` values apart: an odd number of cache lines, so that
        // they spread over the L1 cache's sets (a pitch of 1536 f32 puts every other class in
        // the same few sets: W5 `log_softmax` +20 %).
        let line = 64 / std::mem::size_of::<S::Compute>();
        let pitch = (span.div_ceil(line) | 1) * line;
        let mut tile = Tile::new(classes * pitch);
        let mut r = self.range.start;
        while r < self.range.end {
            let (o, i) = (r / inner, r % inner);
            let width = span.min(inner - i).min(self.range.end - r);
            // SAFETY: element (o, 0, i) and `width` positions of every class after it are in
            // bounds.
            let p = unsafe { base.add(o * classes * inner + i) };
            let (tx, tx2) = tile.inputs();
            // SAFETY: as above, for the inputs.
            unsafe {
                copy_span_in(isa, p.x, inner, tx, pitch, width, classes);
                if !p.x2.is_null() {
                    copy_span_in(isa, p.x2, inner, tx2, pitch, width, classes);
                }
            }
            for g in (0..width).step_by(lanes) {
                let cols = tile.group(p, g, pitch);
                let valid = lanes.min(width - g);
                let values = self.kernel.lanes(pair, r + g, valid, cols, classes);
                acc.push_lanes(r + g, valid, values);
            }
            if !p.out.is_null() {
                // SAFETY: as above, for the output.
                unsafe {
                    copy_span_out(
                        isa,
                        tile.output(),
                        pitch,
                        p.out,
                        inner,
                        width,
                        classes,
                        p.stream,
                    )
                };
            }
            r += width;
        }
    }
}

/// With the class axis not last, more classes than this are gathered into rows one position
/// at a time ([`Block::run_gathered`]) instead of a strided tile, which holds at least a
/// lane group's worth of positions of every class, three times (over 100 MiB per thread at
/// 2^16 float32 classes).
const MAX_STRIDED_CLASSES: usize = 1 << 16;

/// Most positions a strided tile holds per class.
const STRIDED_SPAN: usize = 2048;

/// Values a strided tile aims to hold (per buffer), to stay in the L2 cache.
const STRIDED_TILE: usize = 32768;

/// Copies (widens) the values `src[c * stride]` of every class `c` into `row`.
///
/// # Safety
/// `src + c * stride` must be readable for every `c < row.len()`.
#[inline(always)]
unsafe fn gather<S: Storage>(src: *const S, stride: usize, row: &mut [S::Compute]) {
    for (c, v) in row.iter_mut().enumerate() {
        // SAFETY: see the function's contract.
        *v = unsafe { *src.add(c * stride) }.widen();
    }
}

/// Copies (widens) `width` positions of each of `classes` rows `stride` apart into `tile`,
/// `span` apart, zero-filling each row of the tile past `width`.
///
/// # Safety
/// `src + c * stride` must be readable for `width` values for every class `c`.
#[inline(always)]
unsafe fn copy_span_in<S: Storage, I: Isa>(
    isa: I,
    src: *const S,
    stride: usize,
    tile: &mut [S::Compute],
    span: usize,
    width: usize,
    classes: usize,
) {
    for c in 0..classes {
        let row = &mut tile[c * span..(c + 1) * span];
        // SAFETY: see the function's contract; the tile's row holds `span >= width` values.
        unsafe { S::widen_n(isa, src.add(c * stride), row.as_mut_ptr(), width) };
        row[width..].fill(<S::Compute as Lane>::ZERO);
    }
}

/// The inverse of [`copy_span_in`] for an output tile. With `stream`, whole aligned vectors go
/// out with non-temporal stores (see [`map_row`]): a large output is then not read into the
/// caches before it is overwritten. Staged storage is narrowed with plain stores.
///
/// # Safety
/// `dst + c * stride` must be writable for `width` values for every class `c`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn copy_span_out<S: Storage, I: Isa>(
    isa: I,
    tile: &[S::Compute],
    span: usize,
    dst: *mut S,
    stride: usize,
    width: usize,
    classes: usize,
    stream: bool,
) {
    for c in 0..classes {
        let from = &tile[c * span..c * span + width];
        // SAFETY: see the function's contract.
        let to = unsafe { dst.add(c * stride) };
        match S::in_place_mut(to) {
            // SAFETY: see the function's contract.
            Some(to) if stream => unsafe { map_row(isa, from.as_ptr(), to, width, true, |v| v) },
            // SAFETY: see the function's contract.
            _ => unsafe { S::narrow_n(isa, from.as_ptr(), to, width) },
        }
    }
}

/// Copies `n` contiguous rows of `classes` values at `src` into `tile` by columns
/// (`TILE_ROWS` apart), zero-filling the rows after `n`: a `LANES x LANES` vector transpose per
/// lane group and run of `LANES` classes; only the first `classes` columns are stored.
/// `readable` (at least `n * classes`) values at `src` may be read.
///
/// Every loop here runs a constant `LANES` times, so the transposed block stays in registers.
///
/// # Safety
/// `src` must be readable for `readable` values.
#[inline(always)]
unsafe fn transpose_in<T: Float, I: Isa>(
    isa: I,
    src: *const T,
    tile: &mut [T],
    n: usize,
    readable: usize,
    classes: usize,
) {
    let lanes = V::<T, I>::LANES;
    let zero = V::<T, I>::splat(isa, T::ZERO);
    let end = n * classes;
    for g in (0..TILE_ROWS).step_by(lanes) {
        for c0 in (0..classes).step_by(lanes) {
            let width = lanes.min(classes - c0);
            let first = g * classes + c0;
            // SAFETY: c0 + width <= classes columns of the tile at row g.
            let to = unsafe { tile.as_mut_ptr().add(c0 * TILE_ROWS + g) };
            if g + lanes <= n && first + (lanes - 1) * classes + lanes <= readable {
                // Every row of the group holds a full vector from column c0 on (running into
                // the next rows: only the first `width` columns are kept). Plain loads in a
                // branch-free loop that unrolls, so the block stays in registers.
                let mut regs = [zero; MAX_VECTOR_LANES];
                for (j, reg) in regs[..lanes].iter_mut().enumerate() {
                    // SAFETY: first + j * classes + lanes <= readable values are readable.
                    *reg = unsafe { V::<T, I>::load(isa, src.add(first + j * classes)) };
                }
                // SAFETY: as above.
                unsafe { transpose_store(regs, to, width) };
            } else {
                let mut regs = [zero; MAX_VECTOR_LANES];
                for (j, reg) in regs[..lanes].iter_mut().enumerate() {
                    let row = g + j;
                    let at = row * classes + c0;
                    *reg = if at + lanes <= end {
                        // SAFETY: at + lanes <= n * classes values are readable.
                        unsafe { V::<T, I>::load(isa, src.add(at)) }
                    } else if row < n {
                        // SAFETY: row < n, and c0 + width <= classes.
                        unsafe { load_upto(isa, src.add(at), width, T::ZERO) }
                    } else {
                        zero
                    };
                }
                // SAFETY: as above.
                unsafe { transpose_store(regs, to, width) };
            }
        }
    }
}

/// Transposes the `LANES` rows in `regs` and stores the first `width` columns at `to`,
/// `TILE_ROWS` apart. Written apart from its callers so that each keeps its block in
/// registers.
///
/// # Safety
/// `to` must be writable for `width` columns of a tile.
#[inline(always)]
unsafe fn transpose_store<V: Vector>(
    mut regs: [V; MAX_VECTOR_LANES],
    to: *mut V::Elem,
    width: usize,
) {
    let lanes = V::LANES;
    V::transpose(&mut regs[..lanes]);
    for (c, reg) in regs[..lanes].iter().enumerate() {
        if c < width {
            // SAFETY: column c < width of the tile.
            unsafe { reg.store(to.add(c * TILE_ROWS)) };
        }
    }
}

/// Writes the first `n` columns of `tile` back as contiguous rows at `dst` (the inverse of
/// [`transpose_in`]).
///
/// # Safety
/// `dst` must be writable for `n * classes` values.
#[inline(always)]
unsafe fn transpose_out<T: Float, I: Isa>(
    isa: I,
    tile: &[T],
    dst: *mut T,
    n: usize,
    classes: usize,
) {
    let lanes = V::<T, I>::LANES;
    let zero = V::<T, I>::splat(isa, T::ZERO);
    for g in (0..n).step_by(lanes) {
        for c0 in (0..classes).step_by(lanes) {
            let width = lanes.min(classes - c0);
            let mut regs = [zero; MAX_VECTOR_LANES];
            for (c, reg) in regs[..lanes].iter_mut().enumerate() {
                if c < width {
                    // SAFETY: c0 + c < classes, a column of the tile.
                    *reg = unsafe {
                        V::<T, I>::load(isa, tile.as_ptr().add((c0 + c) * TILE_ROWS + g))
                    };
                }
            }
            V::<T, I>::transpose(&mut regs[..lanes]);
            for (j, reg) in regs[..lanes].iter().enumerate() {
                if g + j < n {
                    // SAFETY: row g + j < n, and c0 + width <= classes.
                    unsafe { store_upto(*reg, dst.add((g + j) * classes + c0), width) };
                }
            }
        }
    }
}
