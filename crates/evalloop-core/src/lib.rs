//! evalloop-core: the layers of evalloop below the model, with no candle in them.
//!
//! Production logs and human feedback ([`record`], [`feedback`]) go in through [`ingest`] into
//! a [`store`] (SQLite or PostgreSQL); the analyses ([`analysis`], built on [`stats`]) measure
//! how well an evaluator agrees with people; [`dataset`] turns feedback into cohort-weighted
//! training data and [`export`] datasets to fine-tune the LLM itself, [`estimate`] gives prediction-powered estimates of quality, and [`simulate`]
//! makes realistic logs and biased feedback from human judgements; [`trend`] follows the
//! figures over time; [`report`] renders a run of the weekly loop. [`config`] reads the TOML config;
//! [`files`] defines the dataset directory's files; [`atomic`] writes a whole file or nothing
//! (every file but the ones that grow as work goes on: ingest rejects, training metrics).

pub mod analysis;
pub mod atomic;
pub mod config;
pub mod dataset;
pub mod error;
pub mod estimate;
pub mod export;
pub mod feedback;
pub mod files;
pub mod hash;
pub mod ingest;
pub mod json_row;
pub mod jsonl;
pub mod lines;
pub mod queue;
pub mod record;
pub mod report;
pub mod simulate;
pub mod stats;
pub mod store;
pub mod text;
pub mod trend;

pub use error::{Error, Result};
