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
