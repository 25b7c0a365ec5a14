//! The training loop's error type: tensor errors and evalloop's errors under one `?`.
//!
//! The loop mixes candle calls (`candle_core::Error`), the model layer's calls ([`ModelError`])
//! and file and data handling ([`evalloop_core::Error`]). `From<candle_core::Error> for
//! evalloop_core::Error` cannot be written in this crate (both types are foreign), so the loop's
//! functions return [`TrainError`], which every one of the three converts into, and the public
//! entry points turn it into an `evalloop_core::Error` with one `?`. A tensor error reads as it
//! does everywhere else in the model crate (`ModelError::Candle`'s "tensor error: ...").

use crate::ModelError;

/// An error inside the training loop; converts into [`evalloop_core::Error`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum TrainError {
    /// File, data or config handling.
    #[error(transparent)]
    Core(#[from] evalloop_core::Error),
    /// Model loading, tokenization or a tensor operation.
    #[error(transparent)]
    Model(#[from] ModelError),
}

impl From<candle_core::Error> for TrainError {
    fn from(e: candle_core::Error) -> Self {
        TrainError::Model(ModelError::from(e))
    }
}

impl From<TrainError> for evalloop_core::Error {
    fn from(e: TrainError) -> Self {
        match e {
            TrainError::Core(e) => e,
            TrainError::Model(e) => e.into(),
        }
    }
}

/// The training loop's result type.
pub(crate) type Result<T, E = TrainError> = std::result::Result<T, E>;
