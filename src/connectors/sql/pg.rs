//! PostgreSQL's errors, read once for every part that talks to a server (the `postgres`
//! kind and the state store): the sentence to show, and what the error means for
//! trying again.

use crate::connectors::SystemError;

/// A failure that may pass: a serialization failure, a deadlock, a lock wait that timed
/// out, or an error below the protocol.
pub(crate) fn is_transient(e: &postgres::Error) -> bool {
    matches!(
        e.code().map(|c| c.code()),
        Some("40001" | "40P01" | "55P03")
    ) || e.as_db_error().is_none() && e.code().is_none()
}

/// The driver's error, classified, with the server's message and detail as its sentence.
pub(crate) fn system_error(e: postgres::Error) -> SystemError {
    SystemError::classified(db_message(&e), is_lost(&e), is_transient(&e), e)
}

/// Whether the connection went: closed, or the server ended the session
/// (`pg_terminate_backend`, a shutdown, a crash).
pub(crate) fn is_lost(e: &postgres::Error) -> bool {
    e.is_closed()
        || e.code().is_some_and(|c| {
            matches!(
                c.code(),
                "57P01" | "57P02" | "57P03" | "08000" | "08003" | "08006"
            )
        })
        || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
}

pub(crate) fn db_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            // Marked, so logs can leave it out: a detail may quote a row's values.
            Some(d) => format!("{} ({}{d})", db.message(), crate::error::DETAIL),
            None => db.message().to_string(),
        },
        None => e.to_string(),
    }
}
