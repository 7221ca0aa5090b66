//! The kernels: the softmax family, cross entropy, NLL, binary cross entropy, the binary
//! focal loss and the KL divergence.
//!
//! Every public kernel takes slices, a [`Layout`] and options, checks that they fit, and
//! returns `Result<_, XentError>` before writing anything when they do not.

pub mod binary;
pub mod cross_entropy;
pub mod kl_div;
pub mod linear;
pub mod log_loss;
pub mod softmax;

#[cfg(test)]
mod bf16;
mod lanes;
mod rows;
mod stage;
mod stats;
#[cfg(test)]
mod testing;

use crate::error::{XentError, format_index};

/// How per-sample losses are combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduction {
    /// One loss per sample.
    None,
    /// The weighted mean (see the module docs for the denominator).
    Mean,
    /// The sum.
    Sum,
}

impl Reduction {
    /// Parses `"none"`, `"mean"` or `"sum"`.
    pub fn parse(name: &str) -> Result<Reduction, XentError> {
        match name {
            "none" => Ok(Reduction::None),
            "mean" => Ok(Reduction::Mean),
            "sum" => Ok(Reduction::Sum),
            _ => Err(XentError::Value(format!(
                "reduction must be \"none\", \"mean\" or \"sum\", got {name:?}"
            ))),
        }
    }
}

/// The upstream gradient.
#[derive(Clone, Copy, Debug)]
pub enum GradOutput<'a, T> {
    /// For `mean` and `sum` (and `none` meaning all ones).
    Scalar(f64),
    /// For `none`: one value per sample.
    PerSample(&'a [T]),
}

/// What one loss call computed before its reduction: what a one-shot call divides, and what a
/// streaming accumulator adds up exactly, chunk after chunk.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Partial {
    /// The sum of the per-sample losses (each with its weights), in f64: the `sum` reduction.
    pub loss_sum: f64,
    /// What the `mean` reduction divides by: the summed weight of the counted samples for
    /// hard targets, the number (or summed sample weight) of the samples for soft targets,
    /// the number of elements for binary cross entropy; 0 where torch's mean is NaN.
    pub denominator: f64,
}

impl Partial {
    /// The reduced loss: the sum, or the mean (NaN over a zero denominator, as torch's). For
    /// [`Reduction::None`] the per-sample losses are elsewhere; this is their sum.
    pub fn reduce(self, reduction: Reduction) -> f64 {
        match reduction {
            Reduction::Sum | Reduction::None => self.loss_sum,
            Reduction::Mean if self.denominator == 0.0 => f64::NAN,
            Reduction::Mean => self.loss_sum / self.denominator,
        }
    }
}

/// A C-order tensor seen around its class axis: `outer × classes × inner`.
///
/// Row `r = o * inner + i` holds the `classes` values at `o*classes*inner + c*inner + i`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Product of the dimensions before the class axis.
    pub outer: usize,
    /// Length of the class axis.
    pub classes: usize,
    /// Product of the dimensions after the class axis.
    pub inner: usize,
}

impl Layout {
    /// The layout of `shape` around `axis`, which must be in range.
    pub fn new(shape: &[usize], axis: usize) -> Result<Layout, XentError> {
        if axis >= shape.len() {
            return Err(XentError::Value(format!(
                "axis {axis} is out of range for an input of shape {}",
                format_index(shape)
            )));
        }
        Ok(Layout {
            outer: shape[..axis].iter().product(),
            classes: shape[axis],
            inner: shape[axis + 1..].iter().product(),
        })
    }

    /// Number of rows (positions along every axis but the class axis).
    pub fn rows(&self) -> usize {
        self.outer * self.inner
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.rows() * self.classes
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Class-index targets of any integer type, read as `i64`.
#[derive(Clone, Copy, Debug)]
pub enum Targets<'a> {
    /// `int8` targets.
    I8(&'a [i8]),
    /// `int16` targets.
    I16(&'a [i16]),
    /// `int32` targets.
    I32(&'a [i32]),
    /// `int64` targets.
    I64(&'a [i64]),
    /// `uint8` targets.
    U8(&'a [u8]),
    /// `uint16` targets.
    U16(&'a [u16]),
    /// `uint32` targets.
    U32(&'a [u32]),
    /// `uint64` targets.
    U64(&'a [u64]),
}

impl Targets<'_> {
    /// Number of targets.
    pub fn len(&self) -> usize {
        match self {
            Targets::I8(t) => t.len(),
            Targets::I16(t) => t.len(),
            Targets::I32(t) => t.len(),
            Targets::I64(t) => t.len(),
            Targets::U8(t) => t.len(),
            Targets::U16(t) => t.len(),
            Targets::U32(t) => t.len(),
            Targets::U64(t) => t.len(),
        }
    }

    /// Whether there are no targets.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Target `i` exactly, for messages.
    pub fn exact(&self, i: usize) -> i128 {
        match self {
            Targets::U64(t) => t[i] as i128,
            _ => self.get(i) as i128,
        }
    }

    /// Target `i` as `i64`; `uint64` values beyond `i64::MAX` read as `i64::MAX`.
    #[inline(always)]
    pub fn get(&self, i: usize) -> i64 {
        match self {
            Targets::I8(t) => t[i] as i64,
            Targets::I16(t) => t[i] as i64,
            Targets::I32(t) => t[i] as i64,
            Targets::I64(t) => t[i],
            Targets::U8(t) => t[i] as i64,
            Targets::U16(t) => t[i] as i64,
            Targets::U32(t) => t[i] as i64,
            Targets::U64(t) => i64::try_from(t[i]).unwrap_or(i64::MAX),
        }
    }
}

/// Where a kernel reads its input and writes its per-element output.
pub enum Io<'a, T> {
    /// Read the input; no per-element output.
    Read(&'a [T]),
    /// Read the input, write the per-element output to a separate buffer of the same length.
    ReadWrite {
        /// The input.
        input: &'a [T],
        /// The output.
        out: &'a mut [T],
    },
    /// Read the buffer and overwrite it with the per-element output.
    InPlace(&'a mut [T]),
}

impl<T> Io<'_, T> {
    /// Length of the input.
    pub fn len(&self) -> usize {
        match self {
            Io::Read(x) => x.len(),
            Io::ReadWrite { input, .. } => input.len(),
            Io::InPlace(x) => x.len(),
        }
    }

    /// Whether the input is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a per-element output is written.
    pub fn writes(&self) -> bool {
        !matches!(self, Io::Read(_))
    }

    /// Raw views for the kernels, after checking the output's length.
    fn raw(&mut self) -> Result<(RawIn<T>, Option<RawOut<T>>), XentError> {
        match self {
            Io::Read(x) => Ok((RawIn::new(x), None)),
            Io::ReadWrite { input, out } => {
                if out.len() != input.len() {
                    return Err(XentError::Shape(format!(
                        "the output holds {} values but the input {}",
                        out.len(),
                        input.len()
                    )));
                }
                Ok((RawIn::new(input), Some(RawOut::new(out))))
            }
            Io::InPlace(x) => {
                let out = RawOut::new(x);
                Ok((RawIn { ptr: out.ptr }, Some(out)))
            }
        }
    }
}

/// A read-only buffer shared by the blocks of one call.
///
/// Made from a borrowed slice that outlives the call; never dereferenced after it.
#[derive(Clone, Copy)]
pub(crate) struct RawIn<T> {
    ptr: *const T,
}

/// A writable buffer shared by the blocks of one call; each element is written by one block.
///
/// Made from a borrowed slice that outlives the call; never dereferenced after it.
#[derive(Clone, Copy)]
pub(crate) struct RawOut<T> {
    ptr: *mut T,
}

// SAFETY: a RawIn is only read, and the slice it came from outlives every block.
unsafe impl<T: Sync> Send for RawIn<T> {}
// SAFETY: as above.
unsafe impl<T: Sync> Sync for RawIn<T> {}
// SAFETY: blocks write disjoint elements, and the slice it came from outlives every block.
unsafe impl<T: Send> Send for RawOut<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for RawOut<T> {}

impl<T> RawIn<T> {
    fn new(x: &[T]) -> Self {
        RawIn { ptr: x.as_ptr() }
    }
    #[inline(always)]
    fn ptr(self) -> *const T {
        self.ptr
    }
}

impl<T> RawOut<T> {
    fn new(x: &mut [T]) -> Self {
        RawOut {
            ptr: x.as_mut_ptr(),
        }
    }
    #[inline(always)]
    fn ptr(self) -> *mut T {
        self.ptr
    }
}

/// Checks that a buffer holds `want` values.
fn check_len(what: &str, got: usize, want: usize) -> Result<(), XentError> {
    if got == want {
        Ok(())
    } else {
        Err(XentError::Shape(format!(
            "{what} holds {got} values, expected {want}"
        )))
    }
}
