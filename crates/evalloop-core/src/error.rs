//! The crate's top-level error, and how each kind maps to an exit code.
//!
//! Exit codes: 0 ok, 1 a check failed (the CI gate, a promotion gate), 2 bad input or usage,
//! 3 anything else (I/O, store, model runtime).

use std::path::PathBuf;

/// Every error a command can end with. Areas with their own enums convert into it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input or usage: a malformed row (with file:line and field), a bad flag, a bad config.
    #[error("{0}")]
    Input(String),
    /// A check ran and failed (exit code 1).
    #[error("{0}")]
    CheckFailed(String),
    /// Reading or writing a file.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// plotters failed to draw one of the report's charts.
    #[error("drawing the {chart} chart: {message}")]
    Chart {
        /// The chart's `data-chart` id, e.g. `scatter-pre`.
        chart: String,
        /// plotters' message.
        message: String,
    },
    /// Model loading, training or inference.
    #[error("{0}")]
    Model(String),
    /// A failure inside evalloop itself (a panicked worker thread), with what it was doing.
    #[error("internal error: {0}")]
    Internal(String),
    /// The HTTP service (`evalloop serve`) could not start or run: the address, the store.
    #[error("{0}")]
    Service(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The process exit code for this error: 1 check failed, 2 bad input, 3 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::CheckFailed(_) => 1,
            Error::Input(_) => 2,
            Error::Store(e) if e.is_input() => 2,
            _ => 3,
        }
    }

    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io { path: path.into(), source }
    }
}
