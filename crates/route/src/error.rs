//! Compile errors: every rejected field, located by JSON path, in document order.

use std::fmt;

/// One rejected field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FieldError {
    /// JSON path from the document root, e.g. `rules[3].matches[0].path.value`.
    pub path: String,
    /// Short lowercase reason, e.g. `invalid regular expression: ...`.
    pub message: String,
}

/// All errors of a rejected document, in document order. `Display` shows the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    pub errors: Vec<FieldError>,
}

impl CompileError {
    /// The first error in document order (the one `PUT /config` reports).
    pub fn first(&self) -> Option<&FieldError> {
        self.errors.first()
    }
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The config API reports the first error; the rest are in `errors`.
        match self.errors.first() {
            Some(first) => first.fmt(f),
            None => f.write_str("invalid config"),
        }
    }
}

impl std::error::Error for CompileError {}
