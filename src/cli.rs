//! Command-line arguments (raw, as clap parses them) and the dispatch to the stages.
//!
//! Commands return an [`Outcome`] (text for people, JSON for machines, an exit code); only
//! `main.rs` prints.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use serde_json::{Value, json};

use crate::config::Settings;
use crate::feedback::FeedbackSummary;
use crate::ingest::{self, IngestOptions, Kind};
use crate::record::{FeedbackEvent, FeedbackType};
use crate::report;
use crate::store;
use crate::{Error, Result};

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
    /// Record one feedback event (the seed's record_feedback).
    Record(RecordArgs),
    /// Summarise the feedback on one request (the seed's get_feedback_summary).
    Summary {
        /// The request to summarise.
        request_id: String,
    },
    /// Counts of logs, feedback by type, cohorts, evaluators and the time range.
    Stats,
    /// Re-render report.md and report.html (and report.json) from a report.json.
    Report(ReportArgs),
}

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The report.json to render (as written by `evalloop run`).
    #[arg(long)]
    pub from: PathBuf,
    /// The directory to write report.json, report.md and report.html into (default: the
    /// directory of --from).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum IngestWhat {
    /// Eval logs: request_id, timestamp, prompt, output, eval_scores, evaluator, metadata.
    Logs(IngestArgs),
    /// Feedback events: request_id, feedback_type, value, user_id, timestamp, event_id.
    Feedback(IngestArgs),
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
    /// Rows per transaction.
    #[arg(long, default_value_t = 10_000)]
    pub batch_size: usize,
    /// Input format (default: by extension; stdin is jsonl).
    #[arg(long, value_parser = ["jsonl", "csv"])]
    pub format: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct RecordArgs {
    #[arg(long)]
    pub request_id: String,
    /// thumbs-up, thumbs-down, rating, comment, usage, edit or discard.
    #[arg(long = "type", value_parser = ["thumbs-up", "thumbs-down", "rating", "comment", "usage", "edit", "discard"])]
    pub feedback_type: String,
    /// 1-5 for rating, the text for comment, true/false for usage/edit/discard (default true).
    #[arg(long)]
    pub value: Option<String>,
    #[arg(long)]
    pub user: Option<String>,
    /// RFC 3339; default now.
    #[arg(long)]
    pub timestamp: Option<String>,
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
    fn ok(text: String, json: Value) -> Outcome {
        Outcome { text, json, code: 0 }
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<Outcome> {
    let settings = Settings::resolve(cli.config.as_deref(), cli.db.clone())?;
    match cli.command {
        Command::Ingest { what } => {
            let (kind, args) = match what {
                IngestWhat::Logs(a) => (Kind::Logs, a),
                IngestWhat::Feedback(a) => (Kind::Feedback, a),
            };
            let opts = IngestOptions {
                strict: args.strict,
                batch_size: args.batch_size,
                rejects: args.rejects,
                format: args
                    .format
                    .as_deref()
                    .map(|f| if f == "csv" { ingest::Format::Csv } else { ingest::Format::Jsonl }),
            };
            let mut store = store::open(&settings.db)?;
            let s = ingest::ingest(store.as_mut(), kind, &args.file, &opts)?;
            Ok(Outcome::ok(s.to_string(), serde_json::to_value(&s).unwrap_or_default()))
        }
        Command::Record(a) => record(&settings, a),
        Command::Summary { request_id } => {
            let store = store::open(&settings.db)?;
            let events = store.feedback_for(&request_id)?;
            let present = store.log_exists(&request_id)?;
            if events.is_empty() && !present {
                return Err(Error::Input(format!("no log and no feedback for request {request_id:?}")));
            }
            let s = FeedbackSummary::from_events(&request_id, &events, &settings.policy, present);
            Ok(Outcome::ok(summary_text(&s, &settings), serde_json::to_value(&s).unwrap_or_default()))
        }
        Command::Report(a) => {
            let out = a.out.unwrap_or_else(|| match a.from.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            });
            let data = report::render(&a.from, &out)?;
            let files: Vec<PathBuf> =
                [report::JSON_FILE, report::MD_FILE, report::HTML_FILE].iter().map(|f| out.join(f)).collect();
            let text = format!(
                "wrote {} (run {})",
                files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", "),
                data.meta.run_id
            );
            let js = json!({ "out": out, "files": files, "run_id": data.meta.run_id });
            Ok(Outcome::ok(text, js))
        }
        Command::Stats => {
            let store = store::open(&settings.db)?;
            let s = store.stats()?;
            Ok(Outcome::ok(stats_text(&s), serde_json::to_value(&s).unwrap_or_default()))
        }
    }
}

fn record(settings: &Settings, a: RecordArgs) -> Result<Outcome> {
    let t = FeedbackType::from_cli(&a.feedback_type)
        .ok_or_else(|| Error::Input(format!("--type: unknown feedback type {:?}", a.feedback_type)))?;
    let row = json!({
        "request_id": a.request_id,
        "feedback_type": t.as_str(),
        "value": a.value,
        "user_id": a.user,
        "timestamp": a.timestamp,
    });
    let event = FeedbackEvent::from_json(&row, true, chrono::Utc::now())
        .map_err(|e| Error::Input(format!("record: {}", e.to_string().replace("field `", "`--"))))?;
    let mut store = store::open(&settings.db)?;
    store.begin()?;
    let o = store.insert_feedback(std::slice::from_ref(&event))?;
    store.commit()?;
    let mut text = if o.stored == 1 {
        format!("recorded {} on {} (event {})", t.as_str(), event.request_id, event.event_id)
    } else {
        format!("already recorded: event {} on {}", event.event_id, event.request_id)
    };
    if o.orphaned == 1 {
        text.push_str(&format!("\nwarning: no log for request {} yet; kept as orphaned", event.request_id));
    }
    let mut js = event.to_json();
    js["stored"] = json!(o.stored == 1);
    js["orphaned"] = json!(o.orphaned == 1);
    Ok(Outcome::ok(text, js))
}

fn summary_text(s: &FeedbackSummary, settings: &Settings) -> String {
    let mut t = format!(
        "request {}{}\n  thumbs_up {}, thumbs_down {}\n  avg_rating {} ({} ratings)\n",
        s.request_id,
        if s.log_present { "" } else { " (orphaned: no log yet)" },
        s.thumbs_up,
        s.thumbs_down,
        s.avg_rating.map_or("-".into(), |r| format!("{r:.2}")),
        s.n_ratings,
    );
    t.push_str(&format!("  comments ({}):\n", s.comments.len()));
    for c in &s.comments {
        t.push_str(&format!("    {c:?}\n"));
    }
    let ind: Vec<String> = s.usage_indicators.iter().map(|(k, v)| format!("{k}={v}")).collect();
    t.push_str(&format!("  usage_indicators: {}\n", if ind.is_empty() { "-".into() } else { ind.join(", ") }));
    match s.human_score {
        Some(h) => t.push_str(&format!(
            "  human score {h:.2} ({})",
            serde_json::to_value(settings.policy.verdict(h)).unwrap_or_default().as_str().unwrap_or("")
        )),
        None => t.push_str("  human score - (no scored feedback)"),
    }
    t
}

fn stats_text(s: &crate::store::StoreStats) -> String {
    let mut t = format!(
        "store {} ({}, schema v{})\nlogs {}\nfeedback events {} ({} orphaned)\n",
        s.location, s.backend, s.schema_version, s.logs, s.feedback_events, s.orphaned_feedback
    );
    for (k, n) in &s.feedback_by_type {
        t.push_str(&format!("  {k:<24} {n}\n"));
    }
    t.push_str("cohorts:\n");
    for (c, n) in &s.cohorts {
        t.push_str(&format!("  {:<24} {n}\n", c.as_deref().unwrap_or("(none)")));
    }
    t.push_str("evaluators:\n");
    for (e, n) in &s.evaluators {
        t.push_str(&format!("  {e:<24} {n}\n"));
    }
    t.push_str(&format!(
        "time range {} .. {}",
        s.first_timestamp.as_deref().unwrap_or("-"),
        s.last_timestamp.as_deref().unwrap_or("-")
    ));
    t
}
