//! The command line: arguments (raw, as clap parses them), one module per command, and the
//! dispatch to them.
//!
//! Commands return an [`Outcome`] (text for people, JSON for machines, an exit code); only
//! `main.rs` prints.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use serde_json::Value;

use crate::analysis::Scope;
use crate::config::Settings;
use crate::record::parse_date_arg;
use crate::store::Filter;
use crate::{Error, Result};

mod agreement;
mod bias;
mod calibration;
mod check;
mod correlate;
mod dataset;
mod disagreements;
mod estimate;
mod export;
mod impact;
mod ingest;
mod keys;
mod preferences;
mod queue;
mod record;
pub mod render;
mod report;
mod run;
mod runs;
mod score;
mod serve;
mod simulate;
mod stats;
mod summary;
mod train;
mod trend;

pub use agreement::AgreementArgs;
pub use bias::BiasArgs;
pub use calibration::CalibrationArgs;
pub use check::CheckArgs;
pub use correlate::CorrelateArgs;
pub use dataset::DatasetWhat;
pub use disagreements::DisagreementsArgs;
pub use estimate::EstimateArgs;
pub use export::ExportArgs;
pub use impact::ImpactArgs;
pub use ingest::{IngestArgs, IngestWhat};
pub use keys::KeysWhat;
pub use preferences::PreferencesArgs;
pub use queue::QueueWhat;
pub use record::RecordArgs;
pub use report::ReportArgs;
pub use run::RunArgs;
pub use runs::RunsWhat;
pub use score::ScoreArgs;
pub use serve::ServeArgs;
pub use simulate::SimulateArgs;
pub use summary::SummaryArgs;
pub use train::TrainArgs;
pub use trend::TrendArgs;

/// evalloop: measure and retrain an LLM evaluator against human feedback.
#[derive(Debug, Parser)]
#[command(name = "evalloop", version, about, long_about = None)]
pub struct Cli {
    /// The store: a SQLite file (default evalloop.db) or a postgres:// URL.
    #[arg(long, global = true, env = "EVALLOOP_DB")]
    pub db: Option<String>,
    /// A TOML config file ([store], [human], [thresholds], [dataset], [train], [run], ...).
    #[arg(long, global = true, env = "EVALLOOP_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// More log output on stderr (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ingest eval logs or feedback events from JSON Lines or CSV (`-` for stdin).
    Ingest {
        #[command(subcommand)]
        what: IngestWhat,
    },
    /// Record one feedback event (the feedback-loop article's record_feedback).
    Record(RecordArgs),
    /// Summarise the feedback on one request (the feedback-loop article's get_feedback_summary).
    Summary(SummaryArgs),
    /// Counts of logs, feedback by type, cohorts, evaluators and the time range.
    Stats,
    /// Correlation of evaluator and human scores (Pearson, Spearman, Kendall tau-b, CIs).
    Correlate(CorrelateArgs),
    /// The evaluator score as P(good): ECE, Brier, ROC AUC, threshold metrics, reliability table.
    Calibration(CalibrationArgs),
    /// Requests where the evaluator and people disagree.
    Disagreements(DisagreementsArgs),
    /// Who leaves feedback: rates per cohort, share positive, under-represented cohorts.
    Bias(BiasArgs),
    /// Do people agree with each other: Krippendorff's alpha, Cohen's kappa, percent agreement.
    Agreement(AgreementArgs),
    /// The evaluator against people's preferences between two outputs, with Bradley-Terry rankings.
    Preferences(PreferencesArgs),
    /// How good the product is: mean human score or pass rate, classical and prediction-powered.
    Estimate(EstimateArgs),
    /// The figures per day or week, and the changes between windows (FDR-controlled).
    Trend(TrendArgs),
    /// Before/after comparison of a change: Welch's t, Mann-Whitney U, Cohen's d, bootstrap CI.
    Impact(ImpactArgs),
    /// The CI gate: thresholds from the config's [thresholds]; exit 1 when one fails.
    Check(CheckArgs),
    /// Recorded runs of the weekly loop.
    Runs {
        #[command(subcommand)]
        what: RunsWhat,
    },
    /// Build labelled, cohort-weighted train/validation/test files from the store ([dataset]).
    Dataset {
        #[command(subcommand)]
        what: DatasetWhat,
    },
    /// Datasets to fine-tune the LLM itself: sft, kto, dpo or reward rows, JSON Lines or Parquet.
    Export(ExportArgs),
    /// Write eval logs, biased feedback and ground truth from a human-judgement file ([simulate]).
    Simulate(SimulateArgs),
    /// Re-render report.md and report.html (and report.json) from a report.json.
    Report(ReportArgs),
    /// Fine-tune the BERT evaluator on a dataset directory ([train] in --config).
    Train(TrainArgs),
    /// Score requests with a trained evaluator: a JSONL file, or the store as a new evaluator.
    Score(ScoreArgs),
    /// The weekly loop from --config: ingest, dataset, train, score, report, gate.
    Run(RunArgs),
    /// The HTTP service: logs and feedback as they happen, summaries, feedback tokens ([serve]).
    Serve(ServeArgs),
    /// The service's API keys: create, list, revoke.
    Keys {
        #[command(subcommand)]
        what: KeysWhat,
    },
    /// Annotation queues: requests chosen for people to label, with selection probabilities.
    Queue {
        #[command(subcommand)]
        what: QueueWhat,
    },
}

/// Which requests an analysis covers.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FilterArgs {
    /// Requests at or after this time (RFC 3339 or YYYY-MM-DD).
    #[arg(long)]
    pub since: Option<String>,
    /// Requests before this time (RFC 3339 or YYYY-MM-DD).
    #[arg(long)]
    pub until: Option<String>,
    /// The evaluator whose scores to use (default: the only one in the store).
    #[arg(long)]
    pub evaluator: Option<String>,
    /// Only this cohort (metadata.user_cohort).
    #[arg(long)]
    pub cohort: Option<String>,
}

impl FilterArgs {
    /// The validated filter.
    pub fn resolve(&self) -> Result<Filter> {
        let date = |flag: &str, v: &Option<String>| -> Result<Option<chrono::DateTime<chrono::Utc>>> {
            v.as_deref()
                .map(|s| parse_date_arg(s).map_err(|e| Error::Input(format!("--{flag}: {}", e.reason))))
                .transpose()
        };
        Ok(Filter {
            since: date("since", &self.since)?,
            until: date("until", &self.until)?,
            evaluator: self.evaluator.clone(),
            cohort: self.cohort.clone(),
            metadata: Vec::new(),
        })
    }
}

/// What a command produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// For people (stdout).
    pub text: String,
    /// For machines (`--json`).
    pub json: Value,
    /// 0 ok, 1 a check failed.
    pub code: i32,
}

impl Outcome {
    pub(crate) fn ok(text: String, json: Value) -> Outcome {
        Outcome { text, json, code: 0 }
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<Outcome> {
    let settings = Settings::resolve(cli.config.as_deref(), cli.db.clone())?;
    match cli.command {
        Command::Ingest { what } => ingest::run(&settings, what),
        Command::Record(a) => record::run(&settings, a),
        Command::Summary(a) => summary::run(&settings, a),
        Command::Stats => stats::run(&settings),
        Command::Correlate(a) => correlate::run(&settings, a),
        Command::Calibration(a) => calibration::run(&settings, a),
        Command::Disagreements(a) => disagreements::run(&settings, a),
        Command::Bias(a) => bias::run(&settings, a),
        Command::Agreement(a) => agreement::run(&settings, a),
        Command::Preferences(a) => preferences::run(&settings, a),
        Command::Estimate(a) => estimate::run(&settings, a),
        Command::Trend(a) => trend::run(&settings, a),
        Command::Impact(a) => impact::run(&settings, a),
        Command::Check(a) => check::run(&settings, a),
        Command::Runs { what } => runs::run(&settings, what),
        Command::Dataset { what } => dataset::run(&settings, what),
        Command::Export(a) => export::run(&settings, a),
        Command::Simulate(a) => simulate::run(&settings, a),
        Command::Report(a) => report::run(a),
        Command::Train(a) => train::run(&settings, a),
        Command::Score(a) => score::run(&settings, a),
        Command::Run(a) => run::run(&settings, a),
        Command::Serve(a) => serve::run(&settings, a),
        Command::Keys { what } => keys::run(&settings, what),
        Command::Queue { what } => queue::run(&settings, what),
    }
}

/// The most bootstrap resamples a command takes: beyond it the intervals no longer change
/// and the run only takes longer.
pub(crate) const MAX_BOOTSTRAP: usize = 100_000;

/// Refuses a resample count over [`MAX_BOOTSTRAP`].
pub(crate) fn check_bootstrap(n: usize) -> Result<()> {
    if n > MAX_BOOTSTRAP {
        return Err(Error::Input(format!("--bootstrap {n}: at most {MAX_BOOTSTRAP} resamples")));
    }
    Ok(())
}

/// Refuses a flag value that is not a finite number within `[lo, hi]`.
pub(crate) fn check_range(flag: &str, v: f64, lo: f64, hi: f64) -> Result<()> {
    if !(v.is_finite() && (lo..=hi).contains(&v)) {
        return Err(Error::Input(format!("--{flag} {v}: expected a number within [{lo}, {hi}]")));
    }
    Ok(())
}

pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or_default()
}

pub(crate) fn scope(settings: &Settings, f: &FilterArgs) -> Result<Scope> {
    Ok(Scope { filter: f.resolve()?, policy: settings.policy.clone() })
}
