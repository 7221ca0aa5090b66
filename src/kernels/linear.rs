//! Matrix products on the private pool, for the chunks of `linear_cross_entropy`.
//!
//! `C = A B`, or `C += A B` (accumulated in place: no block of `C`'s size to add), is cut
//! into tiles of `C`'s rows or of its columns, whichever dimension is longer (so that the
//! operand every tile reads whole, and packs again, is the smaller one). Each tile is one
//! single-threaded call of the `gemm` crate over the whole inner dimension, so a tile's
//! values depend on the shapes only, never on which thread computed it or how many there
//! are: the bits are the same for any thread count by construction. The threads share
//! nothing but the pool's hand-out of tiles: no barrier per panel of the inner dimension, as
//! a threaded BLAS has. `gemm` picks its AVX-512, AVX2+FMA or portable kernel at run time
//! (independently of [`crate::simd::set_level`]).

use std::ops::Range;

use crate::error::XentError;
use crate::parallel;

/// A float with a single-threaded general matrix product.
pub trait Gemm: Copy + Send + Sync + 'static {
    /// `C = A B`, or `C += A B` when `accumulate`, for `A` `m x k`, `B` `k x n`, `C`
    /// `m x n`, each given by a pointer to its first element and its row and column strides
    /// in elements. Without `accumulate`, `C` is only written (it may hold anything).
    ///
    /// # Safety
    ///
    /// Every element the shapes and strides reach must lie in its allocation; `C`'s must be
    /// writable and overlap neither `A`'s nor `B`'s.
    unsafe fn gemm(
        shape: (usize, usize, usize),
        a: (*const Self, isize, isize),
        b: (*const Self, isize, isize),
        accumulate: bool,
        c: (*mut Self, isize, isize),
    );
}

macro_rules! gemm_with {
    ($t:ty) => {
        impl Gemm for $t {
            unsafe fn gemm(
                (m, k, n): (usize, usize, usize),
                (a, rsa, csa): (*const Self, isize, isize),
                (b, rsb, csb): (*const Self, isize, isize),
                accumulate: bool,
                (c, rsc, csc): (*mut Self, isize, isize),
            ) {
                // `gemm` computes `dst = alpha dst + beta lhs rhs`, reading `dst` only with
                // `read_dst` (so an unset output is never read); its strides go column
                // first. One thread per call: the tiles are the parallelism.
                // SAFETY: the caller's contract is `gemm`'s.
                unsafe {
                    gemm::gemm(
                        m,
                        n,
                        k,
                        c,
                        csc,
                        rsc,
                        accumulate,
                        a,
                        csa,
                        rsa,
                        b,
                        csb,
                        rsb,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    )
                }
            }
        }
    };
}

gemm_with!(f32);
gemm_with!(f64);

/// How a matrix's values lie in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Row after row (C order).
    Rows,
    /// Column after column (Fortran order: the transpose of a C-order matrix).
    Columns,
}

/// The shape and order of a dense matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// How the values lie.
    pub order: Order,
}

impl Dims {
    /// The row and column strides, in elements.
    fn strides(self) -> (usize, usize) {
        match self.order {
            Order::Rows => (self.cols, 1),
            Order::Columns => (1, self.rows),
        }
    }

    /// `values.len()` checked against the shape (`what` names the matrix).
    fn check(self, len: usize, what: &str) -> Result<(), XentError> {
        if self.rows.checked_mul(self.cols) == Some(len) {
            return Ok(());
        }
        Err(XentError::Shape(format!(
            "{what} holds {len} values, not {} x {}",
            self.rows, self.cols
        )))
    }
}

/// The longest tile, in rows or columns of the output: enough work per tile to amortise its
/// packing, and a few tiles per thread on `linear_cross_entropy`'s class dimension.
const MAX_TILE: usize = 4096;
/// The shortest tile: below it the operand every tile packs whole costs more than the tile.
const MIN_TILE: usize = 256;

/// The tiles of a dimension of `len`: about eight of them, `MIN_TILE..=MAX_TILE` long
/// (multiples of 64, the kernels' register blocks divide it), from the length alone.
fn tiles(len: usize) -> Vec<Range<usize>> {
    let tile = len
        .div_ceil(8)
        .next_multiple_of(64)
        .clamp(MIN_TILE, MAX_TILE);
    (0..len)
        .step_by(tile)
        .map(|start| start..(start + tile).min(len))
        .collect()
}

/// The output's pointer, shared by the tiles that write disjoint parts of it.
#[derive(Clone, Copy)]
struct Shared<T>(*mut T);

// SAFETY: the tiles of one product write disjoint elements through it, and the product
// returns only after every tile has.
unsafe impl<T: Send> Send for Shared<T> {}
// SAFETY: as for `Send`.
unsafe impl<T: Send> Sync for Shared<T> {}

impl<T> Shared<T> {
    /// The pointer (a method, so that a closure captures the `Sync` wrapper, not its field).
    fn get(self) -> *mut T {
        self.0
    }
}

/// `c = a @ b`, or `c += a @ b` when `accumulate`, with the shapes `dims` (`a`, `b`, `c`):
/// a shape error when they do not fit, before anything is written. Runs on the private
/// pool; the bits do not depend on the thread count.
pub fn matmul<T: Gemm>(
    (a, da): (&[T], Dims),
    (b, db): (&[T], Dims),
    (c, dc): (&mut [T], Dims),
    accumulate: bool,
) -> Result<(), XentError> {
    da.check(a.len(), "a")?;
    db.check(b.len(), "b")?;
    dc.check(c.len(), "out")?;
    if da.cols != db.rows || dc.rows != da.rows || dc.cols != db.cols {
        return Err(XentError::Shape(format!(
            "cannot multiply {} x {} by {} x {} into {} x {}",
            da.rows, da.cols, db.rows, db.cols, dc.rows, dc.cols
        )));
    }
    let (m, k, n) = (da.rows, da.cols, db.cols);
    let ((rsa, csa), (rsb, csb), (rsc, csc)) = (da.strides(), db.strides(), dc.strides());
    let by_rows = m >= n;
    let out = Shared(c.as_mut_ptr());
    let work = m.saturating_mul(n).saturating_mul(k.max(1));
    let tiles = tiles(if by_rows { m } else { n });
    let stride = |s: usize| s as isize;
    parallel::map_blocks(tiles, work, |r| {
        let (start, len) = (r.start, r.len());
        // The tile's first elements: a row block of `a` and `c`, or a column block of `b`
        // and `c`.
        let (a0, b0, c0) = if by_rows {
            (start * rsa, 0, start * rsc)
        } else {
            (0, start * csb, start * csc)
        };
        let (tm, tn) = if by_rows { (len, n) } else { (m, len) };
        // SAFETY: the lengths were checked against the shapes, so every element the tile
        // reaches lies in its slice; `c` is borrowed mutably (so it overlaps neither `a`
        // nor `b`), and the tiles are disjoint blocks of its rows or of its columns.
        unsafe {
            T::gemm(
                (tm, k, tn),
                (a.as_ptr().add(a0), stride(rsa), stride(csa)),
                (b.as_ptr().add(b0), stride(rsb), stride(csb)),
                accumulate,
                (out.get().add(c0), stride(rsc), stride(csc)),
            );
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims(rows: usize, cols: usize, order: Order) -> Dims {
        Dims { rows, cols, order }
    }

    /// The values of a `rows x cols` matrix whose element `(i, j)` is `f(i, j)`, in `order`.
    fn fill(d: Dims, f: impl Fn(usize, usize) -> f64) -> Vec<f64> {
        let (rs, cs) = d.strides();
        let mut v = vec![0.0; d.rows * d.cols];
        for i in 0..d.rows {
            for j in 0..d.cols {
                v[i * rs + j * cs] = f(i, j);
            }
        }
        v
    }

    #[test]
    fn products_match_the_definition_in_every_order() {
        let value = |i: usize, j: usize| ((i * 7 + j * 3) % 11) as f64 - 5.0;
        for (m, k, n) in [(3, 5, 2), (300, 7, 9), (5, 9, 700), (0, 3, 4), (4, 0, 3)] {
            for (oa, ob, oc) in [
                (Order::Rows, Order::Columns, Order::Rows),
                (Order::Columns, Order::Rows, Order::Columns),
            ] {
                let (da, db, dc) = (dims(m, k, oa), dims(k, n, ob), dims(m, n, oc));
                let (a, b) = (fill(da, value), fill(db, |i, j| value(j, i)));
                let mut c = fill(dc, |i, j| (i + j) as f64);
                matmul((&a, da), (&b, db), (&mut c, dc), true).unwrap();
                let want = fill(dc, |i, j| {
                    let dot: f64 = (0..k).map(|p| value(i, p) * value(j, p)).sum();
                    dot + (i + j) as f64
                });
                assert_eq!(c, want, "{m} x {k} x {n}, accumulated");
                matmul((&a, da), (&b, db), (&mut c, dc), false).unwrap();
                let want = fill(dc, |i, j| (0..k).map(|p| value(i, p) * value(j, p)).sum());
                assert_eq!(c, want, "{m} x {k} x {n}");
            }
        }
    }

    #[test]
    fn float32_products_match_float64() {
        let (da, db, dc) = (
            dims(9, 300, Order::Rows),
            dims(300, 600, Order::Columns),
            dims(9, 600, Order::Rows),
        );
        let a: Vec<f32> = (0..9 * 300).map(|i| (i % 13) as f32 * 0.25).collect();
        let b: Vec<f32> = (0..300 * 600).map(|i| (i % 7) as f32 - 3.0).collect();
        let mut c = vec![0.0f32; 9 * 600];
        matmul((&a, da), (&b, db), (&mut c, dc), false).unwrap();
        let wide = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<_>>();
        let mut c64 = vec![0.0f64; 9 * 600];
        matmul((&wide(&a), da), (&wide(&b), db), (&mut c64, dc), false).unwrap();
        assert_eq!(wide(&c), c64);
    }

    #[test]
    fn shapes_that_do_not_fit_are_refused_before_writing() {
        let (a, b) = (vec![1.0f64; 6], vec![1.0f64; 6]);
        let mut c = vec![7.0f64; 4];
        // (a's shape, b's shape, c's shape, the message)
        let cases = [
            (
                (2, 3),
                (2, 3),
                (2, 2),
                "cannot multiply 2 x 3 by 2 x 3 into 2 x 2",
            ),
            ((2, 2), (2, 3), (2, 3), "a holds 6 values, not 2 x 2"),
        ];
        for (sa, sb, sc, message) in cases {
            let err = matmul(
                (&a, dims(sa.0, sa.1, Order::Rows)),
                (&b, dims(sb.0, sb.1, Order::Rows)),
                (&mut c, dims(sc.0, sc.1, Order::Rows)),
                false,
            );
            assert_eq!(err, Err(XentError::Shape(message.into())));
        }
        assert_eq!(c, vec![7.0; 4]);
    }

    #[test]
    fn tiles_cover_the_dimension_from_its_length_alone() {
        for len in [0, 1, 255, 256, 1000, 32_000, 128_256] {
            let t = tiles(len);
            assert_eq!(t.iter().map(Range::len).sum::<usize>(), len);
            assert!(t.iter().all(|r| r.len() <= MAX_TILE));
            assert!(t.windows(2).all(|w| w[0].end == w[1].start));
        }
        assert_eq!(tiles(128_256).len(), 32);
        assert_eq!(tiles(512).len(), 2);
    }
}
