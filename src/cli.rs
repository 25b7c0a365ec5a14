//! Command-line arguments (raw, as clap parses them) and the dispatch to the stages.
//!
//! Commands return an [`Outcome`] (text for people, JSON for machines, an exit code); only
//! `main.rs` prints.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use serde_json::{Value, json};

use crate::analysis::{self, GroupBy, Scope};
use crate::config::Settings;
use crate::feedback::FeedbackSummary;
use crate::ingest::{self, IngestOptions, Kind};
use crate::record::parse_date_arg;
use crate::record::{FeedbackEvent, FeedbackType};
use crate::report;
use crate::store;
use crate::store::Filter;
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
    /// Record one feedback event (the feedback-loop article's record_feedback).
    Record(RecordArgs),
    /// Summarise the feedback on one request (the feedback-loop article's get_feedback_summary).
    Summary {
        /// The request to summarise.
        request_id: String,
    },
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
}

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// A directory from `evalloop dataset build` (train/validation/test.jsonl, dataset_card.json).
    #[arg(long)]
    pub dataset: PathBuf,
    /// The model directory to write (Hugging Face layout).
    #[arg(long)]
    pub out: PathBuf,
    /// Continue from the latest checkpoint in --out.
    #[arg(long)]
    pub resume: bool,
    /// cpu, cuda, cuda:N or auto (default: [train] device, else cpu).
    #[arg(long)]
    pub device: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ScoreArgs {
    /// The trained model directory.
    #[arg(long)]
    pub model: PathBuf,
    /// JSON Lines with request_id, prompt, output.
    #[arg(long, requires = "output", conflicts_with = "store")]
    pub input: Option<PathBuf>,
    /// Where to write the input lines with `score` added.
    #[arg(long, requires = "input")]
    pub output: Option<PathBuf>,
    /// Score the store's logs (filtered) and store the scores as a new evaluator.
    #[arg(long)]
    pub store: bool,
    /// The new evaluator's name (default: the model directory's name).
    #[arg(long)]
    pub evaluator_name: Option<String>,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Pairs per forward pass.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The run directory (default: [run] out_dir/<run id>); an existing one is resumed.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum RunsWhat {
    /// Every run, newest first.
    List,
    /// One run in full.
    Show {
        /// The run id.
        id: String,
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

#[derive(Debug, clap::Args)]
pub struct CorrelateArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Also report each cohort, evaluator or use case separately.
    #[arg(long, value_enum)]
    pub by: Option<GroupBy>,
    /// Percentile-bootstrap intervals with N resamples (0 = none).
    #[arg(long, default_value_t = 0)]
    pub bootstrap: usize,
    /// Seed of the bootstrap.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Group-level (summary-level) correlation over this metadata key (e.g. group_id).
    #[arg(long)]
    pub group_key: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct CalibrationArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Bins for ECE and the reliability table (equal-width and equal-mass both reported).
    #[arg(long, default_value_t = 10)]
    pub bins: usize,
    /// The evaluator says good when its score is above this.
    #[arg(long, default_value_t = 0.7)]
    pub threshold: f64,
}

#[derive(Debug, clap::Args)]
pub struct DisagreementsArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// The evaluator says good when its score is above this.
    #[arg(long, default_value_t = 0.7)]
    pub threshold: f64,
    /// Rows to show.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Write every disagreement (with prompt and output) to this JSON Lines file.
    #[arg(long)]
    pub export: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct BiasArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Flag cohorts whose feedback rate is below this factor times the median rate.
    #[arg(long, default_value_t = 0.5)]
    pub low_factor: f64,
}

#[derive(Debug, clap::Args)]
pub struct ImpactArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Baseline: requests before this date (with --after).
    #[arg(long, requires = "after")]
    pub before: Option<String>,
    /// Treatment: requests at or after this date (with --before).
    #[arg(long, requires = "before")]
    pub after: Option<String>,
    /// Compare two evaluators on the same requests (with --candidate).
    #[arg(long, requires = "candidate")]
    pub baseline_evaluator: Option<String>,
    #[arg(long, requires = "baseline_evaluator")]
    pub candidate: Option<String>,
    /// KEY=BEFORE:AFTER, e.g. prompt_version=v3:v4.
    #[arg(long)]
    pub metadata: Option<String>,
    /// Significance level.
    #[arg(long, default_value_t = 0.05)]
    pub alpha: f64,
    /// Bootstrap resamples for the interval of the difference.
    #[arg(long, default_value_t = 2000)]
    pub bootstrap: usize,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Also write the results as JUnit XML (one test case per threshold).
    #[arg(long)]
    pub junit: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum DatasetWhat {
    /// Write train/validation/test.jsonl and dataset_card.json/.md into --out.
    Build {
        /// The output directory (created if needed).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// A human-judgement file (JSON Lines: dataset, item_id, group_id, system, source, reference, output, human).
    #[arg(long)]
    pub judgements: PathBuf,
    /// The human dimension to use as the true score (e.g. coherence).
    #[arg(long)]
    pub dimension: String,
    /// The output directory (created if needed).
    #[arg(long)]
    pub out: PathBuf,
    /// Seed of every random draw (default: [simulate] seed, else 7).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Keep this many whole groups out of logs and feedback (default: [simulate] holdout_groups, else 0).
    #[arg(long)]
    pub holdout_groups: Option<usize>,
    /// Extra human dimensions to rate alongside --dimension, comma-separated (e.g.
    /// relevance,fluency): one dimension rating event each per rated request (default:
    /// [simulate] dimensions, else none).
    #[arg(long, value_delimiter = ',')]
    pub dimensions: Option<Vec<String>>,
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
        Command::Train(a) => {
            let mut cfg: crate::train::TrainConfig = settings.section("train", &settings.config.train)?;
            if let Some(d) = a.device {
                cfg.device = d;
            }
            let s = crate::train::train(&a.dataset, &cfg, &a.out, a.resume)?;
            let mut text = format!(
                "trained {} steps over {} epochs{}; best epoch {}; model in {}",
                s.steps,
                s.epochs_completed,
                if s.stopped_early { " (stopped early)" } else { "" },
                s.best_epoch.map_or("-".into(), |e| e.to_string()),
                s.out_dir.display()
            );
            if let Some(sel) = &s.selection {
                text.push_str(&format!("\nmodel selection: {}", crate::train::describe_selection(sel)));
            }
            Ok(Outcome::ok(text, to_json(&s)))
        }
        Command::Score(a) => score(&settings, a),
        Command::Run(a) => {
            let o = crate::pipeline::run(&settings, a.out.as_deref())?;
            let mut text = format!("run {} in {}\n", o.run_id, o.run_dir.display());
            let f = |x: Option<f64>| x.map_or("undefined".into(), |v| format!("{v:.4}"));
            text.push_str(&format!(
                "held-out spearman: base {}  retrained {}\n",
                f(o.pre_spearman),
                f(o.post_spearman)
            ));
            if let Some(r) = &o.gate_reason {
                text.push_str(&format!("gate: {r}\n"));
            }
            for (step, secs) in &o.timings {
                text.push_str(&format!("  {step:<10} {secs:8.1} s\n"));
            }
            if let Some(h) = &o.report_html {
                text.push_str(&format!("report: {}", h.display()));
            }
            Ok(Outcome { text: text.trim_end().to_string(), json: to_json(&o), code: o.exit_code })
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
        Command::Correlate(a) => {
            let store = store::open(&settings.db)?;
            let opts = analysis::CorrelateOptions {
                by: a.by,
                bootstrap: a.bootstrap,
                seed: a.seed,
                group_key: a.group_key.clone(),
            };
            let r = analysis::correlate(store.as_ref(), &scope(&settings, &a.filter)?, &opts)?;
            Ok(Outcome::ok(crate::render::correlate(&r), to_json(&r)))
        }
        Command::Calibration(a) => {
            if a.bins == 0 || !(0.0..=1.0).contains(&a.threshold) {
                return Err(Error::Input("--bins must be at least 1 and --threshold within [0, 1]".into()));
            }
            let store = store::open(&settings.db)?;
            let opts = analysis::CalibrationOptions { bins: a.bins, threshold: a.threshold };
            let r = analysis::calibration(store.as_ref(), &scope(&settings, &a.filter)?, &opts)?;
            Ok(Outcome::ok(crate::render::calibration(&r), to_json(&r)))
        }
        Command::Disagreements(a) => {
            let store = store::open(&settings.db)?;
            let r = analysis::disagreements(
                store.as_ref(),
                &scope(&settings, &a.filter)?,
                a.threshold,
                a.limit,
                a.export.as_deref(),
            )?;
            Ok(Outcome::ok(crate::render::disagreements(&r, a.export.as_deref()), to_json(&r)))
        }
        Command::Bias(a) => {
            let store = store::open(&settings.db)?;
            let r = analysis::bias(store.as_ref(), &scope(&settings, &a.filter)?, a.low_factor)?;
            Ok(Outcome::ok(crate::render::bias(&r), to_json(&r)))
        }
        Command::Impact(a) => impact(&settings, a),
        Command::Runs { what } => {
            let store = store::open(&settings.db)?;
            match what {
                RunsWhat::List => {
                    let runs = store.runs()?;
                    let mut text =
                        format!("{:<28} {:<22} {:<10} {:<14} run dir\n", "id", "started", "status", "decision");
                    for r in &runs {
                        text.push_str(&format!(
                            "{:<28} {:<22} {:<10} {:<14} {}\n",
                            r.id,
                            r.started_at.get(..19).unwrap_or(&r.started_at),
                            r.status,
                            r.decision.as_deref().unwrap_or("-"),
                            r.run_dir
                        ));
                    }
                    if runs.is_empty() {
                        text = "no runs recorded yet".into();
                    }
                    Ok(Outcome::ok(text.trim_end().to_string(), to_json(&runs)))
                }
                RunsWhat::Show { id } => {
                    let r = store.run(&id)?.ok_or_else(|| Error::Input(format!("no run with id {id:?}")))?;
                    let text = serde_json::to_string_pretty(&r).unwrap_or_default();
                    Ok(Outcome::ok(text, to_json(&r)))
                }
            }
        }
        Command::Check(a) => {
            let t: analysis::Thresholds = settings.section("thresholds", &settings.config.thresholds)?;
            if settings.config.thresholds.is_none() {
                return Err(Error::Input("check needs --config FILE with a [thresholds] section".into()));
            }
            let store = store::open(&settings.db)?;
            let r = analysis::check(store.as_ref(), &scope(&settings, &a.filter)?, &t)?;
            if let Some(p) = &a.junit {
                crate::atomic::write_atomic(p, analysis::junit_xml(&r).as_bytes())?;
            }
            Ok(Outcome { text: crate::render::check(&r), json: to_json(&r), code: if r.pass { 0 } else { 1 } })
        }
        Command::Dataset { what: DatasetWhat::Build { out } } => {
            let cfg: crate::dataset::DatasetConfig = settings.section("dataset", &settings.config.dataset)?;
            let store = store::open(&settings.db)?;
            let built = crate::dataset::build(store.as_ref(), &settings.policy, &cfg, &out)?;
            Ok(Outcome::ok(built.text, to_json(&built.card)))
        }
        Command::Simulate(a) => {
            let mut cfg: crate::simulate::SimulateConfig = settings.section("simulate", &settings.config.simulate)?;
            if let Some(s) = a.seed {
                cfg.seed = s;
            }
            if let Some(n) = a.holdout_groups {
                cfg.holdout_groups = n;
            }
            if let Some(d) = a.dimensions {
                cfg.dimensions = d;
            }
            let s = crate::simulate::simulate(&a.judgements, &a.dimension, &a.out, &cfg)?;
            Ok(Outcome::ok(s.to_string().trim_end().to_string(), serde_json::to_value(&s).unwrap_or_default()))
        }
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or_default()
}

fn scope(settings: &Settings, f: &FilterArgs) -> Result<Scope> {
    Ok(Scope { filter: f.resolve()?, policy: settings.policy.clone() })
}

fn score(settings: &Settings, a: ScoreArgs) -> Result<Outcome> {
    let device = crate::model::parse_device(&a.device)?;
    if let (Some(input), Some(output)) = (&a.input, &a.output) {
        let opts = crate::score::ScoreOptions { batch_size: a.batch_size, device, ..Default::default() };
        let s = crate::score::score_jsonl(&a.model, input, output, &opts)?;
        let text = format!("scored {} lines into {} (mean score {:.4})", s.rows, output.display(), s.mean_score);
        return Ok(Outcome::ok(text, json!({"rows": s.rows, "mean_score": s.mean_score, "output": output})));
    }
    if !a.store {
        return Err(Error::Input("score: give --input FILE --output FILE, or --store".into()));
    }
    let name = a.evaluator_name.clone().unwrap_or_else(|| {
        a.model.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "retrained".into())
    });
    let scorer = crate::score::Scorer::load(&a.model, &device)?.with_batch_size(a.batch_size);
    let mut store = store::open(&settings.db)?;
    let ids = store.request_ids(&a.filter.resolve()?)?;
    let mut outcome = crate::store::BatchOutcome::default();
    for chunk in ids.chunks(4096) {
        let texts = store.request_texts(chunk)?;
        let pairs: Vec<(String, String)> = texts.into_iter().map(|(_, t)| (t.prompt, t.output)).collect();
        let scores = scorer.score_pairs(&pairs)?;
        let rows: Vec<(String, f64)> = chunk.iter().cloned().zip(scores).collect();
        store.begin()?;
        outcome += store.insert_scores(&name, &rows)?;
        store.commit()?;
    }
    let text = format!("scored {} requests in {} as evaluator {name:?}", outcome.stored, store.location());
    Ok(Outcome::ok(text, json!({"evaluator": name, "stored": outcome.stored})))
}

fn impact(settings: &Settings, a: ImpactArgs) -> Result<Outcome> {
    let date = |flag: &str, v: &str| parse_date_arg(v).map_err(|e| Error::Input(format!("--{flag}: {}", e.reason)));
    let split = match (&a.before, &a.after, &a.baseline_evaluator, &a.candidate, &a.metadata) {
        (Some(b), Some(f), None, None, None) => {
            analysis::ImpactSplit::Dates { before: date("before", b)?, after: date("after", f)? }
        }
        (None, None, Some(b), Some(c), None) => {
            analysis::ImpactSplit::Evaluators { baseline: b.clone(), candidate: c.clone() }
        }
        (None, None, None, None, Some(m)) => {
            let bad =
                || Error::Input(format!("--metadata {m:?}: expected KEY=BEFORE:AFTER, e.g. prompt_version=v3:v4"));
            let (key, vals) = m.split_once('=').ok_or_else(bad)?;
            let (before, after) = vals.split_once(':').ok_or_else(bad)?;
            if key.is_empty() || before.is_empty() || after.is_empty() {
                return Err(bad());
            }
            analysis::ImpactSplit::Metadata { key: key.into(), before: before.into(), after: after.into() }
        }
        _ => {
            return Err(Error::Input(
                "impact: give exactly one of --before/--after, --baseline-evaluator/--candidate, or --metadata".into(),
            ));
        }
    };
    if !(0.0..1.0).contains(&a.alpha) || a.alpha == 0.0 {
        return Err(Error::Input(format!("--alpha {} must be in (0, 1)", a.alpha)));
    }
    let store = store::open(&settings.db)?;
    let r = analysis::impact(store.as_ref(), &scope(settings, &a.filter)?, &split, a.alpha, a.bootstrap, a.seed)?;
    Ok(Outcome::ok(crate::render::impact(&r), to_json(&r)))
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
    let event = FeedbackEvent::from_json(row, true, chrono::Utc::now())
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
    if s.dimension_ratings > 0 {
        t.push_str(&format!("dimension ratings {} (not part of the human score)\n", s.dimension_ratings));
    }
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
