//! The library's error type. Each variant says which layer failed; the binary maps them
//! to exit codes (config → 2, everything else → 1).

use crate::config::ConfigError;
use crate::connectors::ConnectorError;
use crate::state::StateError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    #[error("state store: {0}")]
    State(#[from] StateError),
    /// A request that names something that does not exist (a link, a key, a conflict).
    #[error("{0}")]
    NotFound(String),
    /// A scan stopped because whatever consumed it failed first (that failure is the one
    /// reported).
    #[error("the scan was stopped")]
    Stopped,
    /// Stopped on request (`watch` on SIGTERM/SIGINT) between batches: every batch
    /// written so far is committed, and the next run finishes the work.
    #[error(
        "stopped on request between batches; everything written so far is committed, and the next run finishes the work"
    )]
    StopRequested,
    /// A system refused a whole batch for one reason: the link stopped (exit 1).
    #[error("{0}")]
    Refused(String),
}

/// Where a system's message quotes its detail, which may hold a row's values (a unique
/// key, a failing row): kept for the person running a command, left out of logs.
pub(crate) const DETAIL: &str = "detail: ";

/// `text` without the details a system added to its messages (see [`DETAIL`]): what
/// `watch` logs, since record values never go to logs.
pub fn without_details(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let marker = format!("({DETAIL}");
    while let Some(at) = rest.find(&marker) {
        out.push_str(&rest[..at]);
        out.push_str("(detail left out of the log)");
        // The detail ends at its matching parenthesis.
        let mut depth = 0usize;
        let mut end = rest.len();
        for (i, c) in rest[at..].char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = at + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

impl Error {
    /// Whether this is, or wraps, a stop on request (see [`Error::StopRequested`]).
    pub fn is_stop_request(&self) -> bool {
        match self {
            Error::StopRequested => true,
            Error::Connector(ConnectorError::Consumer(inner)) => inner.is_stop_request(),
            _ => false,
        }
    }

    /// Whether the problem is in the config (exit code 2) rather than a failure (1).
    pub fn is_config(&self) -> bool {
        match self {
            Error::Config(_) => true,
            Error::Connector(ConnectorError::Consumer(inner)) => inner.is_config(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn details_are_left_out_of_what_is_logged() {
        let text = "insert into people: duplicate key value violates unique constraint \"people_email_key\" (detail: Key (email)=(ada@example.com) already exists.); the link stopped";
        let logged = super::without_details(text);
        assert!(!logged.contains("ada@example.com"), "{logged}");
        assert!(logged.contains("people_email_key"), "{logged}");
        assert!(logged.ends_with("; the link stopped"), "{logged}");
    }
}
