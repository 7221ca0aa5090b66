//! Two vectors of an instruction set used as one vector of twice the lanes.
//!
//! Kernels that run across rows (a lane group: one row per lane) are chains of dependent
//! operations per group, an exponential and a logarithm deep, and one group's chain is longer
//! than the CPU can look ahead. Written over [`Pair`], the same kernel code runs two groups
//! with their operations interleaved, so one group's latency hides behind the other's work.
//! Every operation is the base instruction set's, lane for lane, so results are unchanged.

use super::{Isa, Vector};

/// The instruction set `I` with vectors of twice the lanes ([`Pair`]s of `I`'s vectors).
#[derive(Clone, Copy, Debug)]
pub struct Paired<I>(I);

impl<I: Isa> Paired<I> {
    /// `I`, paired.
    #[inline(always)]
    pub fn new(isa: I) -> Self {
        Paired(isa)
    }
}

impl<I: Isa> Isa for Paired<I> {
    type F32 = Pair<I::F32>;
    type F64 = Pair<I::F64>;

    #[inline(always)]
    fn fence(self) {
        self.0.fence();
    }

    #[inline(always)]
    unsafe fn widen_bf16(self, src: *const u16, dst: *mut f32, n: usize) {
        // SAFETY: the caller's contract.
        unsafe { self.0.widen_bf16(src, dst, n) }
    }

    #[inline(always)]
    unsafe fn narrow_bf16(self, src: *const f32, dst: *mut u16, n: usize) {
        // SAFETY: the caller's contract.
        unsafe { self.0.narrow_bf16(src, dst, n) }
    }
}

/// Lanes `0 .. V::LANES` in `lo`, the rest in `hi`.
#[derive(Clone, Copy, Debug)]
pub struct Pair<V> {
    lo: V,
    hi: V,
}

impl<V: Vector> Pair<V> {
    #[inline(always)]
    fn both(lo: V, hi: V) -> Self {
        Pair { lo, hi }
    }
}

/// Most lanes of a base vector (AVX-512 `f32`).
const MAX_HALF: usize = 16;

/// The listed lane-wise methods of [`Vector`] for [`Pair`]: the base method on each half.
macro_rules! halves {
    (binary: $($f:ident),*) => {$(
        #[inline(always)]
        fn $f(self, o: Self) -> Self {
            Pair::both(self.lo.$f(o.lo), self.hi.$f(o.hi))
        }
    )*};
    (write: $($f:ident),*) => {$(
        #[inline(always)]
        unsafe fn $f(self, p: *mut V::Elem) {
            // SAFETY: the caller guarantees 2 * V::LANES writable values (for `stream`
            // aligned to as many, so each half is aligned to its own lane count).
            unsafe {
                self.lo.$f(p);
                self.hi.$f(p.add(V::LANES));
            }
        }
    )*};
    (unary: $($f:ident),*) => {$(
        #[inline(always)]
        fn $f(self) -> Self {
            Pair::both(self.lo.$f(), self.hi.$f())
        }
    )*};
    (compare: $($f:ident),*) => {$(
        #[inline(always)]
        fn $f(self, o: Self) -> Self::Mask {
            (self.lo.$f(o.lo), self.hi.$f(o.hi))
        }
    )*};
    (test: $($f:ident),*) => {$(
        #[inline(always)]
        fn $f(self) -> Self::Mask {
            (self.lo.$f(), self.hi.$f())
        }
    )*};
}

impl<V: Vector> Vector for Pair<V> {
    type Elem = V::Elem;
    type Isa = Paired<V::Isa>;
    type Wide = (V::Wide, V::Wide);
    type Mask = (V::Mask, V::Mask);
    const LANES: usize = 2 * V::LANES;

    #[inline(always)]
    fn splat(isa: Paired<V::Isa>, x: V::Elem) -> Self {
        let v = V::splat(isa.0, x);
        Pair::both(v, v)
    }
    #[inline(always)]
    fn isa(self) -> Paired<V::Isa> {
        Paired(self.lo.isa())
    }
    #[inline(always)]
    unsafe fn load(isa: Paired<V::Isa>, p: *const V::Elem) -> Self {
        // SAFETY: the caller guarantees 2 * V::LANES readable values.
        unsafe { Pair::both(V::load(isa.0, p), V::load(isa.0, p.add(V::LANES))) }
    }
    #[inline(always)]
    unsafe fn load_partial(
        isa: Paired<V::Isa>,
        p: *const V::Elem,
        n: usize,
        fill: V::Elem,
    ) -> Self {
        // SAFETY: the caller guarantees `n` readable values; each half reads only its own.
        unsafe {
            if n >= V::LANES {
                Pair::both(
                    V::load(isa.0, p),
                    V::load_partial(isa.0, p.add(V::LANES), n - V::LANES, fill),
                )
            } else {
                Pair::both(V::load_partial(isa.0, p, n, fill), V::splat(isa.0, fill))
            }
        }
    }
    halves!(write: store, stream);
    #[inline(always)]
    unsafe fn store_partial(self, p: *mut V::Elem, n: usize) {
        // SAFETY: the caller guarantees `n` writable values; each half writes only its own.
        unsafe {
            if n >= V::LANES {
                self.lo.store(p);
                self.hi.store_partial(p.add(V::LANES), n - V::LANES);
            } else {
                self.lo.store_partial(p, n);
            }
        }
    }
    #[inline(always)]
    unsafe fn load_labels(isa: Paired<V::Isa>, p: *const i64, ignore: i64) -> Self {
        // SAFETY: the caller guarantees 2 * V::LANES readable values.
        unsafe {
            Pair::both(
                V::load_labels(isa.0, p, ignore),
                V::load_labels(isa.0, p.add(V::LANES), ignore),
            )
        }
    }

    halves!(binary: add, sub, mul, div, max, min, ldexp);
    halves!(unary: abs, round);
    #[inline(always)]
    fn mul_add(self, b: Self, c: Self) -> Self {
        Pair::both(self.lo.mul_add(b.lo, c.lo), self.hi.mul_add(b.hi, c.hi))
    }
    #[inline(always)]
    fn frexp(self) -> (Self, Self) {
        let ((ml, el), (mh, eh)) = (self.lo.frexp(), self.hi.frexp());
        (Pair::both(ml, mh), Pair::both(el, eh))
    }

    /// By quarters: the base transposes of the four `V::LANES`-square blocks, with the two
    /// off-diagonal blocks trading places.
    fn transpose(rows: &mut [Self]) {
        let l = V::LANES;
        assert!(
            rows.len() == 2 * l && l <= MAX_HALF,
            "a {0} x {0} transpose",
            2 * l
        );
        let fill = rows[0].lo;
        let mut quarters = [[fill; MAX_HALF]; 4];
        for (j, r) in rows[..l].iter().enumerate() {
            quarters[0][j] = r.lo;
            quarters[1][j] = r.hi;
        }
        for (j, r) in rows[l..].iter().enumerate() {
            quarters[2][j] = r.lo;
            quarters[3][j] = r.hi;
        }
        for q in quarters.iter_mut() {
            V::transpose(&mut q[..l]);
        }
        for c in 0..l {
            rows[c] = Pair::both(quarters[0][c], quarters[2][c]);
            rows[l + c] = Pair::both(quarters[1][c], quarters[3][c]);
        }
    }

    halves!(compare: lt, le, eq);
    halves!(test: is_nan);
    #[inline(always)]
    fn select(m: Self::Mask, a: Self, b: Self) -> Self {
        Pair::both(V::select(m.0, a.lo, b.lo), V::select(m.1, a.hi, b.hi))
    }

    #[inline(always)]
    fn reduce_max(self) -> V::Elem {
        let (a, b) = (self.lo.reduce_max(), self.hi.reduce_max());
        if b > a { b } else { a }
    }
    #[inline(always)]
    fn reduce_sum(self) -> f64 {
        self.lo.reduce_sum() + self.hi.reduce_sum()
    }
    #[inline(always)]
    fn wide_zero(isa: Paired<V::Isa>) -> Self::Wide {
        (V::wide_zero(isa.0), V::wide_zero(isa.0))
    }
    #[inline(always)]
    fn wide_add(self, acc: Self::Wide) -> Self::Wide {
        (self.lo.wide_add(acc.0), self.hi.wide_add(acc.1))
    }
    #[inline(always)]
    fn wide_sum(acc: Self::Wide) -> f64 {
        V::wide_sum(acc.0) + V::wide_sum(acc.1)
    }
    #[inline(always)]
    fn narrow(acc: Self::Wide) -> Self {
        Pair::both(V::narrow(acc.0), V::narrow(acc.1))
    }
}
