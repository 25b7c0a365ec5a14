//! The weekly loop: ingest, dataset build, train, score, report and gate, chained from a TOML config.
//!
//! `evalloop run --config configs/weekly.toml [--out RUN_DIR]` makes (or, given an existing
//! RUN_DIR, resumes) one run. Each step writes its output into the run directory and is skipped
//! when that output is already there, so a killed run continues where it stopped (training itself
//! resumes from its last checkpoint). Steps can be switched off with `[run] skip = [...]`.
//!
//! The gate promotes the retrained evaluator only if its held-out Spearman with the human scores
//! beats the base evaluator's by `margin` and the difference is significant under Williams' test
//! for dependent correlations sharing the human column (or a paired bootstrap over requests),
//! one-sided at `alpha`. Every run is recorded in the store's `runs` table.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::analysis::CalibrationOptions;
use crate::config::Settings;
use crate::files::{DatasetCard, DatasetRow};
use crate::ingest::{self, IngestOptions, Kind};
use crate::jsonl;
use crate::model::files::ScoreRow;
use crate::report::{self, ReportData};
use crate::store::{Filter, RunRecord, ScoredQuery, ScoredRequest, Store};
use crate::{Error, Result};

mod ceiling;
mod gate;
mod history;
mod preferences;
mod summary;

use gate::gate;
pub use gate::{GateMetric, GateTest};
use summary::{agreement, calibration, dataset_summary, disagreements, training_summary};

/// A step of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    Ingest,
    Dataset,
    Train,
    Score,
    Report,
    Gate,
}

/// `[run]`: the weekly loop. Every key has a default.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// Log files to ingest first (JSONL or CSV); default none.
    pub ingest_logs: Vec<PathBuf>,
    /// Feedback files to ingest first; default none.
    pub ingest_feedback: Vec<PathBuf>,
    /// Use only requests from the last N days before the newest log; default none (all).
    pub window_days: Option<u32>,
    /// Use only requests newer than the last completed run's window end; default false.
    pub since_last_run: bool,
    /// Where run directories go (`<out_dir>/<run id>`); default `runs`.
    pub out_dir: PathBuf,
    /// Steps to skip; default none.
    pub skip: Vec<Step>,
    /// The base evaluator (already in the logs); default the evaluator with the most scores.
    pub base_evaluator: Option<String>,
    /// Required Spearman improvement of the new evaluator over the base; default 0.02.
    pub margin: f64,
    /// One-sided significance level of the gate's test; default 0.05.
    pub alpha: f64,
    /// What the gate compares: `spearman` (default, over every held-out request) or
    /// `group_spearman` (mean within-group Spearman over the held-out groups; needs `group_key`).
    pub gate_metric: GateMetric,
    /// `williams` (default; `spearman` only), `paired_bootstrap`, or `paired_t` (`group_spearman`
    /// only: a t-test over groups).
    pub gate_test: GateTest,
    /// Bootstrap resamples (paired bootstrap gate, intervals); default 2000.
    pub bootstrap: usize,
    /// Seed of the bootstraps; default 7.
    pub seed: u64,
    /// Exit 1 when the gate does not promote; default false.
    pub fail_on_regression: bool,
    /// The evaluator-says-good threshold (disagreements); default 0.7.
    pub threshold: f64,
    /// Reliability bins; default 10.
    pub bins: usize,
    /// Write the retrained evaluator's held-out scores into the store as evaluator
    /// `evalloop-<run id>`, so `correlate --evaluator` and `impact` can compare; default true.
    pub write_scores: bool,
    /// A metadata key for group-level (summary-level) correlations; default the dataset's
    /// `group_key`.
    pub group_key: Option<String>,
    /// Warn (in the output and the report) when Krippendorff's alpha between people on the
    /// window's 1-5 ratings is under this; default 0.667.
    pub min_human_alpha: f64,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            ingest_logs: Vec::new(),
            ingest_feedback: Vec::new(),
            window_days: None,
            since_last_run: false,
            out_dir: PathBuf::from("runs"),
            skip: Vec::new(),
            base_evaluator: None,
            margin: 0.02,
            alpha: 0.05,
            gate_metric: GateMetric::Spearman,
            gate_test: GateTest::Williams,
            bootstrap: 2000,
            seed: 7,
            fail_on_regression: false,
            threshold: 0.7,
            bins: 10,
            write_scores: true,
            group_key: None,
            min_human_alpha: ceiling::DEFAULT_MIN_HUMAN_ALPHA,
        }
    }
}

/// The run directory's `run.json`: what each step did, for resuming and for `runs show`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct RunState {
    id: String,
    started_at: String,
    config_hash: String,
    window: Option<[String; 2]>,
    steps: BTreeMap<String, Value>,
}

/// What `evalloop run` ends with.
#[derive(Debug, Clone, Serialize)]
pub struct RunOutcome {
    pub run_id: String,
    pub run_dir: PathBuf,
    pub report_html: Option<PathBuf>,
    pub promoted: Option<bool>,
    pub gate_reason: Option<String>,
    pub pre_spearman: Option<f64>,
    pub post_spearman: Option<f64>,
    /// Seconds per step.
    pub timings: BTreeMap<String, f64>,
    /// 1 when `fail_on_regression` and the gate did not promote, else 0.
    pub exit_code: i32,
    /// What the run warns about (labels too noisy to judge an evaluator by).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Runs (or resumes) the weekly loop.
pub fn run(settings: &Settings, out: Option<&Path>) -> Result<RunOutcome> {
    let cfg: RunConfig = settings.section("run", &settings.config.run)?;
    gate::check(&cfg).map_err(Error::Input)?;
    if !(0.0..1.0).contains(&cfg.alpha) || cfg.alpha == 0.0 {
        return Err(Error::Input(format!("[run] alpha = {} must be in (0, 1)", cfg.alpha)));
    }
    let config_text = match &settings.config_path {
        Some(p) => std::fs::read(p).map_err(|e| Error::io(p, e))?,
        None => Vec::new(),
    };
    let config_hash = hex::encode(Sha256::digest(&config_text));
    let now = chrono::Utc::now();
    let fresh_id = format!("{}-{}", now.format("%Y%m%dT%H%M%SZ"), &config_hash[..8]);
    let run_dir = out.map(Path::to_path_buf).unwrap_or_else(|| cfg.out_dir.join(&fresh_id));
    std::fs::create_dir_all(&run_dir).map_err(|e| Error::io(&run_dir, e))?;
    let state_path = run_dir.join("run.json");
    let mut state: RunState = match std::fs::read(&state_path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| Error::Input(format!("{}: not a run state file: {e}", state_path.display())))?,
        Err(_) => RunState {
            id: fresh_id,
            started_at: crate::record::format_timestamp(&now),
            config_hash: config_hash.clone(),
            ..Default::default()
        },
    };
    if state.config_hash != config_hash {
        return Err(Error::Input(format!(
            "{}: this run was made with another config (hash {}), not resuming it with {}",
            run_dir.display(),
            &state.config_hash[..12],
            &config_hash[..12]
        )));
    }
    let save_state = |s: &RunState| {
        crate::atomic::write_atomic(&state_path, serde_json::to_string_pretty(s).unwrap_or_default().as_bytes())
    };
    save_state(&state)?;

    let mut store = crate::store::open(&settings.db)?;
    let mut record = RunRecord {
        id: state.id.clone(),
        started_at: state.started_at.clone(),
        config_hash: config_hash.clone(),
        status: "running".into(),
        run_dir: run_dir.display().to_string(),
        ..Default::default()
    };
    store.save_run(&record)?;
    let result = steps(settings, &cfg, store.as_mut(), &run_dir, &mut state, &save_state);
    match &result {
        Ok(o) => {
            record.status = "completed".into();
            record.decision = o.promoted.map(|p| if p { "promoted".into() } else { "kept_baseline".into() });
            record.metrics = Some(json!({
                "pre_spearman": o.pre_spearman,
                "post_spearman": o.post_spearman,
                "gate_reason": o.gate_reason,
                "timings": o.timings,
            }));
        }
        Err(e) => {
            record.status = "failed".into();
            record.metrics = Some(json!({ "error": format!("{e}") }));
        }
    }
    record.finished_at = Some(crate::record::format_timestamp(&chrono::Utc::now()));
    let model = run_dir.join("model");
    record.model_path = model.join("model.safetensors").exists().then(|| model.display().to_string());
    record.dataset_card =
        std::fs::read(run_dir.join("dataset/dataset_card.json")).ok().and_then(|b| serde_json::from_slice(&b).ok());
    store.save_run(&record)?;
    result
}

fn skipped(cfg: &RunConfig, s: Step) -> bool {
    cfg.skip.contains(&s)
}

fn timed<T>(timings: &mut BTreeMap<String, f64>, name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let t = std::time::Instant::now();
    let r = f();
    timings.insert(name.to_string(), t.elapsed().as_secs_f64());
    tracing::info!(step = name, secs = t.elapsed().as_secs_f64(), "step done");
    r
}

fn steps(
    settings: &Settings,
    cfg: &RunConfig,
    store: &mut dyn Store,
    run_dir: &Path,
    state: &mut RunState,
    save_state: &dyn Fn(&RunState) -> Result<()>,
) -> Result<RunOutcome> {
    let mut timings = BTreeMap::new();
    let mut outcome = RunOutcome {
        run_id: state.id.clone(),
        run_dir: run_dir.to_path_buf(),
        report_html: None,
        promoted: None,
        gate_reason: None,
        pre_spearman: None,
        post_spearman: None,
        timings: BTreeMap::new(),
        exit_code: 0,
        warnings: Vec::new(),
    };

    // 1. Ingest new files.
    if !skipped(cfg, Step::Ingest) && !state.steps.contains_key("ingest") {
        let summaries = timed(&mut timings, "ingest", || {
            let mut out = Vec::new();
            for (kind, files) in [(Kind::Logs, &cfg.ingest_logs), (Kind::Feedback, &cfg.ingest_feedback)] {
                for f in files {
                    let s = ingest::ingest(
                        store,
                        kind,
                        &f.display().to_string(),
                        &IngestOptions { rejects: Some(run_dir.join("ingest.rejects.jsonl")), ..Default::default() },
                    )?;
                    out.push(serde_json::to_value(&s).unwrap_or_default());
                }
            }
            Ok(out)
        })?;
        state.steps.insert("ingest".into(), Value::Array(summaries));
        save_state(state)?;
    }

    // 2. The window and the base evaluator.
    let base = match &cfg.base_evaluator {
        Some(e) => e.clone(),
        None => {
            let stats = store.stats()?;
            stats
                .evaluators
                .iter()
                .filter(|(e, _)| !e.starts_with("evalloop-"))
                .max_by_key(|(_, n)| *n)
                .or_else(|| stats.evaluators.iter().max_by_key(|(_, n)| *n))
                .map(|(e, _)| e.clone())
                .ok_or_else(|| Error::Input("the store holds no eval logs: configure [run] ingest_logs".into()))?
        }
    };
    let window = match &state.window {
        Some([a, b]) => Filter {
            since: Some(crate::record::parse_date_arg(a).map_err(|e| Error::Input(e.reason))?),
            until: Some(crate::record::parse_date_arg(b).map_err(|e| Error::Input(e.reason))?),
            ..Default::default()
        },
        None => {
            let st = store.stats()?;
            let last = st.last_timestamp.as_deref().and_then(|t| crate::record::parse_date_arg(t).ok());
            let end = last.map(|t| t + chrono::Duration::microseconds(1));
            let mut since = cfg.window_days.and_then(|d| last.map(|t| t - chrono::Duration::days(i64::from(d))));
            if cfg.since_last_run
                && let Some(prev) = store.runs()?.into_iter().find(|r| r.status == "completed" && r.id != state.id)
                && let Some(w) = prev.metrics.as_ref().and_then(|m| m["window_end"].as_str())
                && let Ok(t) = crate::record::parse_date_arg(w)
            {
                since = Some(since.map_or(t, |s| s.max(t)));
            }
            let f = Filter { since, until: end, ..Default::default() };
            let fmt = |t: Option<chrono::DateTime<chrono::Utc>>, d: &str| {
                t.map_or(d.to_string(), |t| crate::record::format_timestamp(&t))
            };
            state.window = Some([fmt(f.since, "1970-01-01T00:00:00Z"), fmt(f.until, "9999-01-01T00:00:00Z")]);
            save_state(state)?;
            f
        }
    };

    // 3. Dataset.
    let dataset_dir = run_dir.join("dataset");
    let mut ds_cfg: crate::dataset::DatasetConfig = settings.section("dataset", &settings.config.dataset)?;
    if ds_cfg.evaluator.is_none() {
        ds_cfg.evaluator = Some(base.clone());
    }
    if !skipped(cfg, Step::Dataset) && !dataset_dir.join("dataset_card.json").exists() {
        timed(&mut timings, "dataset", || {
            crate::dataset::build_in(store, &window, &settings.policy, &ds_cfg, &dataset_dir)
        })?;
    }
    let card = DatasetCard::read(&dataset_dir)?;

    // 4. Train.
    let model_dir = run_dir.join("model");
    let train_cfg: crate::train::TrainConfig = settings.section("train", &settings.config.train)?;
    if !skipped(cfg, Step::Train) && !model_dir.join("metrics.json").exists() {
        timed(&mut timings, "train", || crate::train::train(&dataset_dir, &train_cfg, &model_dir, true))?;
    }

    // 5. Score the held-out test split with the retrained evaluator.
    let scores_path = run_dir.join("scores.test.jsonl");
    let test: Vec<DatasetRow> = jsonl::read(&dataset_dir.join("test.jsonl"))?;
    let held_pairs = preferences::test_pairs(&dataset_dir)?;
    let base_scores: BTreeMap<String, f64> = if held_pairs.is_empty() {
        BTreeMap::new()
    } else {
        let f = Filter { evaluator: Some(base.clone()), ..window.clone() };
        store.evaluated_requests(&f)?.into_iter().map(|r| (r.request_id, r.eval_score)).collect()
    };
    if !skipped(cfg, Step::Score) && !scores_path.exists() {
        timed(&mut timings, "score", || {
            let device = crate::model::parse_device(&train_cfg.device)?;
            let scorer = crate::score::Scorer::load(&model_dir, &device)?;
            // The test rows, then the outputs of held-out preference pairs that are not rows.
            let mut items: Vec<(&str, &str, &str, Option<f64>)> = test
                .iter()
                .map(|r| (r.request_id.as_str(), r.prompt.as_str(), r.output.as_str(), r.evaluator_score))
                .collect();
            let mut seen: std::collections::BTreeSet<&str> = items.iter().map(|i| i.0).collect();
            for p in &held_pairs {
                for (id, output) in [(&p.request_id_chosen, &p.chosen), (&p.request_id_rejected, &p.rejected)] {
                    if seen.insert(id) {
                        items.push((id, &p.prompt, output, base_scores.get(id).copied()));
                    }
                }
            }
            let pairs: Vec<(&str, &str)> = items.iter().map(|i| (i.1, i.2)).collect();
            // A blended model (`[train] blend_evaluator`) builds on the production score of each
            // row; a row without one (a dataset of an older version) makes it an error.
            let production: Option<Vec<f64>> = items.iter().map(|i| i.3).collect();
            let scores = scorer.score_blended(&pairs, production.as_deref())?;
            let mut w = crate::atomic::AtomicWriter::create(&scores_path)?;
            for (i, s) in items.iter().zip(&scores) {
                w.write_json_line(&ScoreRow { request_id: i.0.to_string(), score: *s })?;
            }
            w.commit()
        })?;
    }
    let new_scores: BTreeMap<String, f64> = if scores_path.exists() {
        jsonl::read::<ScoreRow>(&scores_path)?.into_iter().map(|r| (r.request_id, r.score)).collect()
    } else {
        BTreeMap::new()
    };
    let evaluator_name = format!("evalloop-{}", state.id);
    if cfg.write_scores && !new_scores.is_empty() && !state.steps.contains_key("write_scores") {
        let pairs: Vec<(String, f64)> = new_scores.iter().map(|(k, v)| (k.clone(), *v)).collect();
        let o = crate::score::store_scores(store, &evaluator_name, &pairs)?;
        state.steps.insert("write_scores".into(), json!({"evaluator": evaluator_name, "stored": o.stored}));
        save_state(state)?;
    }

    // 6. Report and 7. gate, on the held-out test split.
    let group_key = cfg.group_key.clone().or_else(|| ds_cfg.group_key.clone());
    let q = ScoredQuery {
        filter: Filter { evaluator: Some(base.clone()), ..window.clone() },
        policy: settings.policy.clone(),
        group_key: group_key.clone(),
        ..Default::default()
    };
    let by_id: BTreeMap<String, ScoredRequest> =
        store.scored_requests(&q)?.into_iter().map(|r| (r.request_id.clone(), r)).collect();
    let held: Vec<(&ScoredRequest, Option<f64>)> = test
        .iter()
        .filter_map(|r| by_id.get(&r.request_id))
        .map(|r| (r, new_scores.get(&r.request_id).copied()))
        .collect();
    let mut data = ReportData { meta: report::ReportMeta::new(state.id.clone()), ..Default::default() };
    data.meta.config_hash = Some(state.config_hash.clone());
    data.meta.base_evaluator = Some(base.clone());
    data.meta.new_evaluator = Some(model_dir.display().to_string());
    let pre: Vec<(&ScoredRequest, f64)> = held.iter().map(|(r, _)| (*r, r.eval_score)).collect();
    let post: Vec<(&ScoredRequest, f64)> = held.iter().filter_map(|(r, s)| s.map(|s| (*r, s))).collect();
    data.pre = agreement(&pre, group_key.as_deref());
    data.post = agreement(&post, group_key.as_deref());
    let cal_opts = CalibrationOptions { bins: cfg.bins, threshold: cfg.threshold };
    data.calibration.pre = calibration(&pre, settings, &cal_opts);
    data.calibration.post = calibration(&post, settings, &cal_opts);
    data.disagreements_by_cohort = disagreements(&held, settings, cfg.threshold);
    let point = |(r, s): &(&ScoredRequest, f64)| report::ScatterPoint {
        eval_score: *s,
        human_score: r.human_score,
        cohort: r.cohort.clone().unwrap_or_else(|| "(none)".into()),
    };
    data.scatter.pre = report::Scatter::sample(pre.iter().map(point), 2000);
    data.scatter.post = report::Scatter::sample(post.iter().map(point), 2000);
    data.dataset = dataset_summary(&card, state.window.as_ref());
    data.training = training_summary(&model_dir, &train_cfg);
    data.history = Some(history::history(store, settings, &base)?);
    let test_ids: Vec<String> = test.iter().map(|r| r.request_id.clone()).collect();
    let people = ceiling::human_ceiling(store, &window, &base, &test_ids, &new_scores, cfg.min_human_alpha)?;
    outcome.warnings.extend(people.warning.clone());
    data.human_ceiling = Some(people);
    data.preferences = preferences::section(&held_pairs, &base_scores, &new_scores);
    outcome.pre_spearman = data.pre.overall.spearman_r;
    outcome.post_spearman = data.post.overall.spearman_r;

    if !skipped(cfg, Step::Gate) {
        let g = gate(cfg, &pre, &post);
        outcome.promoted = Some(g.promoted);
        outcome.gate_reason = Some(g.reason.clone());
        if g.promoted {
            std::fs::create_dir_all(&cfg.out_dir).map_err(|e| Error::io(&cfg.out_dir, e))?;
            let promoted = json!({
                "run_id": state.id, "model": model_dir, "evaluator": evaluator_name,
                "spearman": g.new_spearman, "base_spearman": g.base_spearman, "metric": g.metric,
            });
            crate::atomic::write_atomic(
                &cfg.out_dir.join("promoted.json"),
                serde_json::to_string_pretty(&promoted).unwrap_or_default().as_bytes(),
            )?;
        }
        if !g.promoted && cfg.fail_on_regression {
            outcome.exit_code = 1;
        }
        data.gate = Some(g);
    }
    if !skipped(cfg, Step::Report) {
        timed(&mut timings, "report", || report::write_report(run_dir, &data))?;
        outcome.report_html = Some(run_dir.join("report.html"));
    }
    state.steps.insert("timings".into(), serde_json::to_value(&timings).unwrap_or_default());
    save_state(state)?;
    outcome.timings = timings;
    Ok(outcome)
}
