//! Test support for the kernels: naive float64 references, deterministic inputs, and a way to
//! run a check at every SIMD level without tests racing on the global level.

use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::kernels::Layout;
use crate::simd::{self, Level};

/// Serialises the tests that switch the global SIMD level or thread count.
static GLOBAL: Mutex<()> = Mutex::new(());

/// Holds the global settings for one test; restores the best level when dropped.
pub(crate) struct Exclusive(#[allow(dead_code)] MutexGuard<'static, ()>);

impl Drop for Exclusive {
    fn drop(&mut self) {
        simd::set_level(Level::best()).expect("the best level is supported");
    }
}

/// Takes the global settings for the duration of a test.
pub(crate) fn exclusive() -> Exclusive {
    Exclusive(GLOBAL.lock().unwrap_or_else(PoisonError::into_inner))
}

/// Runs `check` once per SIMD level this CPU supports, with that level active.
pub(crate) fn at_every_level(mut check: impl FnMut(Level)) {
    for level in Level::ALL.into_iter().filter(|l| l.is_supported()) {
        simd::set_level(level).expect("supported level");
        check(level);
    }
}

/// Layouts that exercise every path of the row driver: contiguous rows (many classes), the
/// transposed tile (few classes, partial tiles), and strided lanes (class axis not last, with
/// full and partial lane groups).
pub(crate) fn layouts() -> Vec<Layout> {
    vec![
        Layout {
            outer: 7,
            classes: 100,
            inner: 1,
        },
        Layout {
            outer: 3,
            classes: 1031,
            inner: 1,
        },
        Layout {
            outer: 131,
            classes: 5,
            inner: 1,
        },
        Layout {
            outer: 9,
            classes: 1,
            inner: 1,
        },
        Layout {
            outer: 2,
            classes: 6,
            inner: 37,
        },
        Layout {
            outer: 3,
            classes: 40,
            inner: 3,
        },
    ]
}

/// Deterministic pseudo-random values in `[-scale, scale]`.
pub(crate) fn values(n: usize, seed: u64, scale: f64) -> Vec<f64> {
    let mut state = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// Row `r` of a layout as a vector (class values in order).
pub(crate) fn row(x: &[f64], layout: Layout, r: usize) -> Vec<f64> {
    let (o, i) = (r / layout.inner, r % layout.inner);
    (0..layout.classes)
        .map(|c| x[(o * layout.classes + c) * layout.inner + i])
        .collect()
}

/// Flat index of class `c` of row `r`.
pub(crate) fn at(layout: Layout, r: usize, c: usize) -> usize {
    let (o, i) = (r / layout.inner, r % layout.inner);
    (o * layout.classes + c) * layout.inner + i
}

/// Naive `logsumexp` of a row.
pub(crate) fn lse(row: &[f64]) -> f64 {
    let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
}

/// Asserts `got` is within `tol` (relative, with the same absolute floor) of `want`.
pub(crate) fn assert_close(got: f64, want: f64, tol: f64, what: &str) {
    let ok = (got.is_nan() && want.is_nan())
        || got == want
        || (got - want).abs() <= tol * (1.0 + want.abs());
    assert!(ok, "{what}: got {got}, want {want}");
}
