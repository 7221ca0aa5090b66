//! Deterministic float64 sums.
//!
//! Every reduction over rows is cut into blocks whose boundaries depend only on the data's
//! shape ([`crate::parallel`]); each block sums its rows in order, and the block sums are
//! combined here by a fixed pairwise tree. The bits of the result therefore do not depend on
//! how many threads ran the blocks.

use crate::error::XentError;
use crate::float::Float;
use crate::parallel;

/// The float64 sum of `xs`, cut into data-sized blocks summed in order (in parallel for large
/// inputs) and combined pairwise: the same bits for any thread count.
pub fn sum<T: Float>(xs: &[T]) -> Result<f64, XentError> {
    let blocks = parallel::blocks(xs.len(), 1, 1);
    let partial = parallel::map_blocks(blocks, xs.len(), |r| {
        xs[r].iter().fold(0.0, |acc, &v| acc + v.to_f64())
    })?;
    Ok(pairwise_sum(&partial))
}

/// Sums `xs` by recursive halving: a fixed tree whose shape depends only on `xs.len()`.
pub fn pairwise_sum(xs: &[f64]) -> f64 {
    const LEAF: usize = 8;
    if xs.len() <= LEAF {
        return xs.iter().fold(0.0, |acc, &x| acc + x);
    }
    let mid = xs.len() / 2;
    pairwise_sum(&xs[..mid]) + pairwise_sum(&xs[mid..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_small_and_empty() {
        assert_eq!(pairwise_sum(&[]), 0.0);
        assert_eq!(pairwise_sum(&[1.0, 2.0, 3.0]), 6.0);
    }

    #[test]
    fn sum_of_a_large_slice_is_exact_for_integers() {
        let xs: Vec<f32> = (0..1_000_000).map(|i| (i % 7) as f32).collect();
        let want: f64 = xs.iter().map(|&v| v as f64).sum();
        assert_eq!(sum(&xs).unwrap(), want);
    }

    #[test]
    fn pairwise_beats_naive_on_many_small_terms() {
        let xs = vec![0.1; 1 << 20];
        let naive: f64 = xs.iter().sum();
        let exact = 0.1 * (1 << 20) as f64;
        assert!((pairwise_sum(&xs) - exact).abs() < (naive - exact).abs());
    }
}
