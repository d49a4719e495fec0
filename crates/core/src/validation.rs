//! Why an input was rejected: one [`FieldError`] per offending field, gathered into [`Invalid`].
//!
//! The parsers in [`crate::user`] return these and [`crate::Error::Validation`] carries them on,
//! so the dependencies run one way: `error` → `user` → `validation`, and `error` → `validation`.

use std::fmt;

/// Why one input field was rejected.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    /// The field's name as the client sent it (`name`, `email`, `limit`, …).
    pub field: String,
    /// A human-readable reason.
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.field, self.message)
    }
}

/// Every invalid field of one input, reported at once (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub Vec<FieldError>);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid input: {}", join(&self.0))
    }
}

impl std::error::Error for Invalid {}

/// `name must not be empty; email must contain '@'`.
pub(crate) fn join(fields: &[FieldError]) -> String {
    let parts: Vec<String> = fields.iter().map(ToString::to_string).collect();
    parts.join("; ")
}

impl From<FieldError> for Invalid {
    fn from(error: FieldError) -> Self {
        Self(vec![error])
    }
}
