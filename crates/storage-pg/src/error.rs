//! Errors of setting up the PostgreSQL adapter. Errors of individual operations are
//! [`userstack_core::Error`]s, as the port requires; [`classify`] makes them.

use tokio_postgres::error::SqlState;
use userstack_core::Error as CoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The driver's own message is terse ("db error"); the server's reason (e.g. "password
    /// authentication failed for user …") is in the source chain, so it is spelled out here.
    #[error("cannot connect to PostgreSQL: {}", describe(.0))]
    Connect(#[source] tokio_postgres::Error),

    #[error("PostgreSQL did not complete the connection within {0:?}")]
    ConnectTimeout(std::time::Duration),

    #[error("migration {version} ({name}) failed: {}", describe(.source))]
    Migration {
        version: i32,
        name: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },

    #[error(
        "the database has migration {0} applied, which this build does not know; refusing to run an older build against a newer schema"
    )]
    UnknownMigration(i32),

    #[error("PostgreSQL query failed: {}", describe(.0))]
    Query(#[source] tokio_postgres::Error),
}

impl Error {
    /// Whether retrying cannot help: the server answered and refused us (bad password, unknown
    /// user or database). Start-up fails at once on these instead of waiting out its timeout.
    pub fn is_permanent(&self) -> bool {
        let code = match self {
            Error::Connect(e) => e.code(),
            Error::ConnectTimeout(_) => return false,
            _ => return true,
        };
        code.is_some_and(|c| {
            c.code().starts_with("28") // invalid authorization / password
                || *c == SqlState::INVALID_CATALOG_NAME // no such database
        })
    }
}

/// The driver error with the server's message, if the server sent one.
fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => error.to_string(),
    }
}

/// Maps a driver error to the core error the port promises: connection trouble and server
/// shutdowns are `StoreUnavailable` (the client may retry), anything else is `Internal`.
pub(crate) fn classify(error: tokio_postgres::Error) -> CoreError {
    let unavailable = match error.code() {
        // No SQLSTATE: the socket failed or closed, or the connection attempt did.
        None => true,
        Some(code) => {
            code.code().starts_with("08") // connection exceptions
                || *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
                || *code == SqlState::TOO_MANY_CONNECTIONS
                || *code == SqlState::QUERY_CANCELED
        }
    };
    if unavailable {
        CoreError::store_unavailable(error)
    } else {
        CoreError::internal(error)
    }
}

pub(crate) fn is_unique_violation(error: &tokio_postgres::Error) -> bool {
    error.code() == Some(&SqlState::UNIQUE_VIOLATION)
}
