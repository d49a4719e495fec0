//! The one error type of the core, shared by the service and the ports.
//!
//! Each port method documents which variants its implementations must return, so that the service
//! (and the HTTP mapping in the server) can rely on them whatever adapter is plugged in.

use crate::user::UserId;
use crate::validation::{FieldError, Invalid, join};

/// A boxed error from an adapter, kept as the `source` of an [`Error`] for logs.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input was well-formed but invalid; every offending field is listed.
    #[error("invalid input: {}", join(.0))]
    Validation(Vec<FieldError>),

    #[error("user {0} not found")]
    NotFound(UserId),

    /// Another user already has this email address (compared case-insensitively).
    #[error("a user with email {0:?} already exists")]
    DuplicateEmail(String),

    /// The user store could not be reached or did not answer in time; retrying later may work.
    #[error("the user store is unavailable")]
    StoreUnavailable(#[source] BoxError),

    /// The cache could not be reached or did not answer in time. The service never lets this
    /// fail a read or a write of users; it only surfaces where the cache is the point (`/cache`).
    #[error("the cache is unavailable")]
    CacheUnavailable(#[source] BoxError),

    /// Anything else: a bug or a broken invariant. Details go to the logs, never to clients.
    #[error("internal error")]
    Internal(#[source] BoxError),
}

impl Error {
    /// A validation error about a single field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    pub fn store_unavailable(source: impl Into<BoxError>) -> Self {
        Self::StoreUnavailable(source.into())
    }

    pub fn cache_unavailable(source: impl Into<BoxError>) -> Self {
        Self::CacheUnavailable(source.into())
    }

    pub fn internal(source: impl Into<BoxError>) -> Self {
        Self::Internal(source.into())
    }
}

impl From<Invalid> for Error {
    fn from(invalid: Invalid) -> Self {
        Self::Validation(invalid.0)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
