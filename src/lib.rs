//! evalloop: close the feedback loop of an LLM product.
//!
//! Production logs and human feedback go in through [`ingest`] into a [`store`]; the analysis
//! commands ([`analysis`], built on [`stats`]) measure how well the evaluator agrees with people;
//! [`dataset`] turns feedback into cohort-weighted training data; [`train`] fine-tunes a BERT
//! classifier ([`model`]) as the new evaluator; [`score`] applies it; [`report`] and [`pipeline`]
//! chain the stages into the weekly job.

pub mod analysis;
pub mod atomic;
pub mod cli;
pub mod config;
pub mod dataset;
pub mod error;
pub mod feedback;
pub mod ingest;
pub mod model;
pub mod pipeline;
pub mod record;
pub mod render;
pub mod report;
pub mod score;
pub mod simulate;
pub mod stats;
pub mod store;
pub mod train;

pub use error::{Error, Result};
