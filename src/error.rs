//! The one error type of the core. It knows nothing of Python: the binding layer maps each
//! variant to one Python exception class, once (`src/py/errors.rs`).

use std::fmt;

/// Everything that can go wrong in a call, decided before any output is written.
#[derive(Clone, Debug, PartialEq)]
pub enum XentError {
    /// Shapes that do not fit together (Python `ValueError`).
    Shape(String),
    /// A value outside its domain, a bad option or argument (Python `ValueError`).
    Value(String),
    /// A class index outside `[0, classes)` that is not the ignore index (Python `IndexError`).
    ClassIndex {
        /// The offending target value.
        value: i128,
        /// Its position in the target array (one index per axis).
        position: Vec<usize>,
        /// Number of classes.
        classes: usize,
    },
    /// An unsupported type (Python `TypeError`).
    Type(String),
    /// The caller's poll function asked the call to stop (see [`crate::interrupt`]); the
    /// binding raises what the poll found (Python's `KeyboardInterrupt`, for one).
    Interrupted,
}

impl fmt::Display for XentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XentError::Shape(m) | XentError::Value(m) | XentError::Type(m) => f.write_str(m),
            XentError::Interrupted => f.write_str("the call was interrupted"),
            XentError::ClassIndex {
                value,
                position,
                classes: 0,
            } => write!(
                f,
                "target {value} at position {} is out of range: the input has 0 classes \
                 (every target must be ignore_index)",
                format_index(position),
            ),
            XentError::ClassIndex {
                value,
                position,
                classes,
            } => write!(
                f,
                "target {value} at position {} is out of bounds for {classes} classes \
                 (valid: 0 to {}, or ignore_index)",
                format_index(position),
                classes - 1,
            ),
        }
    }
}

impl std::error::Error for XentError {}

/// Formats a shape or a multi-index like Python prints a tuple: `(2, 3)`, `(4,)`, `()`.
pub fn format_index(ix: &[usize]) -> String {
    match ix {
        [] => "()".to_owned(),
        [one] => format!("({one},)"),
        _ => {
            let parts: Vec<String> = ix.iter().map(usize::to_string).collect();
            format!("({})", parts.join(", "))
        }
    }
}

/// Converts a flat C-order index into a multi-index of `shape`.
pub fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut ix = vec![0; shape.len()];
    for (slot, &dim) in ix.iter_mut().zip(shape).rev() {
        if dim > 0 {
            *slot = flat % dim;
            flat /= dim;
        }
    }
    ix
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuples_print_like_python() {
        assert_eq!(format_index(&[]), "()");
        assert_eq!(format_index(&[4]), "(4,)");
        assert_eq!(format_index(&[2, 3]), "(2, 3)");
    }

    #[test]
    fn unravel_is_c_order() {
        assert_eq!(unravel(5, &[2, 3]), vec![1, 2]);
        assert_eq!(unravel(0, &[2, 3]), vec![0, 0]);
        assert_eq!(unravel(7, &[2, 2, 2]), vec![1, 1, 1]);
    }

    #[test]
    fn class_index_message_names_value_and_position() {
        let e = XentError::ClassIndex {
            value: 7,
            position: vec![1, 2],
            classes: 3,
        };
        let m = e.to_string();
        assert!(
            m.contains('7') && m.contains("(1, 2)") && m.contains("3 classes"),
            "{m}"
        );
    }

    #[test]
    fn class_index_message_for_no_classes_says_so() {
        let e = XentError::ClassIndex {
            value: 0,
            position: vec![1],
            classes: 0,
        };
        let m = e.to_string();
        assert!(
            m.contains("the input has 0 classes") && m.contains("(1,)"),
            "{m}"
        );
        assert!(!m.contains("0 to 0"), "{m}");
    }
}
