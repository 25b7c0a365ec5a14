//! `evalloop ingest logs|feedback|scores FILE`: validated, streaming, transactional ingest.

use std::path::PathBuf;

use clap::Subcommand;

use super::Outcome;
use crate::Result;
use crate::config::Settings;
use crate::ingest::{self, IngestOptions, Kind};
use crate::store;

#[derive(Debug, Subcommand)]
pub enum IngestWhat {
    /// Eval logs: request_id, timestamp, prompt, output, eval_scores, evaluator, metadata.
    Logs(IngestArgs),
    /// Feedback events: request_id, feedback_type, value, user_id, timestamp, event_id,
    /// dimension, other_request_id (preferences).
    Feedback(IngestArgs),
    /// Another evaluator's scores for stored requests: request_id, evaluator, eval_scores.
    Scores(IngestArgs),
}

#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// The file (`.jsonl`, `.csv`), or `-` for stdin.
    pub file: String,
    /// Stop at the first bad row and store nothing from this file.
    #[arg(long)]
    pub strict: bool,
    /// Where rejected rows go (default FILE.rejects.jsonl).
    #[arg(long)]
    pub rejects: Option<PathBuf>,
    /// Rows per transaction (1 to 1,000,000).
    #[arg(long, default_value_t = 10_000)]
    pub batch_size: usize,
    /// The longest line read, in bytes; a longer JSON Lines row is rejected, a longer CSV line
    /// stops the file.
    #[arg(long, default_value_t = crate::lines::DEFAULT_MAX_LINE_BYTES)]
    pub max_line_bytes: usize,
    /// Input format (default: by extension; stdin is jsonl).
    #[arg(long, value_parser = ["jsonl", "csv"])]
    pub format: Option<String>,
    /// The metadata key naming a request's prompt group (as `[dataset] group_key`): a
    /// preference between outputs of two different groups is rejected (feedback only).
    #[arg(long, value_name = "KEY")]
    pub group_key: Option<String>,
}

/// Ingests the file into the configured store.
pub fn run(settings: &Settings, what: IngestWhat) -> Result<Outcome> {
    let (kind, args) = match what {
        IngestWhat::Logs(a) => (Kind::Logs, a),
        IngestWhat::Feedback(a) => (Kind::Feedback, a),
        IngestWhat::Scores(a) => (Kind::Scores, a),
    };
    let opts = IngestOptions {
        strict: args.strict,
        batch_size: args.batch_size,
        rejects: args.rejects,
        format: args.format.as_deref().map(|f| if f == "csv" { ingest::Format::Csv } else { ingest::Format::Jsonl }),
        max_line_bytes: args.max_line_bytes,
        group_key: args.group_key,
    };
    let mut store = store::open(&settings.db)?;
    let s = ingest::ingest(store.as_mut(), kind, &args.file, &opts)?;
    Ok(Outcome::ok(s.to_string(), serde_json::to_value(&s).unwrap_or_default()))
}
