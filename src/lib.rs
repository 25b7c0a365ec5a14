//! evalloop: close the feedback loop of an LLM product.
//!
//! The `evalloop` binary is a thin layer over two library crates, whose dependencies point
//! one way (`evalloop` -> `evalloop-model` -> `evalloop-core`):
//!
//! - `evalloop-core`: production logs and human feedback go in through [`ingest`] into a
//!   [`store`]; the analyses ([`analysis`], built on [`stats`]) measure how well the evaluator
//!   agrees with people; [`dataset`] turns feedback into cohort-weighted training data;
//!   [`report`] renders a run; [`files`] defines the dataset directory's files.
//! - `evalloop-model`: the BERT classifier ([`model`]), fine-tuned by [`train`] and applied by
//!   [`score`]; `model::files` defines the model directory's files.
//! - this crate: the command line ([`cli`]) and the weekly loop with its promotion gate
//!   ([`pipeline`]).
//!
//! The layers are re-exported here under their module names, so `evalloop::store`,
//! `evalloop::train` and the others name the same items as the crates do.

pub mod cli;
pub mod pipeline;

pub use evalloop_core::{Error, Result};
pub use evalloop_core::{
    analysis, atomic, config, dataset, error, estimate, export, feedback, files, hash, ingest, json_row, jsonl, lines,
    queue, record, report, simulate, stats, store, text, trend,
};
pub use evalloop_model as model;
pub use evalloop_model::{score, train};
