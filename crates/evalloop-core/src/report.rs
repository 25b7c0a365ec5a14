//! The pre/post report: report.json, report.md and a self-contained report.html with plots.
//!
//! [`ReportData`] is report.json's schema (field by field in `docs/report-schema.md`). The
//! pipeline fills it from the statistics and the training run and calls [`write_report`];
//! `evalloop report --from report.json --out DIR` re-renders the three files with [`render`].
//!
//! Any statistic can be undefined (too few samples, a constant column): it is `None` here,
//! `null` in JSON and `—` in the tables, never NaN. report.md and report.html are built from
//! the same tables; report.html carries its plots as inline SVG drawn with plotters, and no
//! script, stylesheet or font from anywhere else. All user text (cohort names, evaluator names,
//! the gate's reason) is escaped.

// report.json's schema is public API that other tools read: keep every item documented.
#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The schema version this build writes into `meta.schema_version`; newer files are refused.
pub const SCHEMA_VERSION: u32 = 1;
/// The default cap on scatter points kept per side (pre, post) by [`Scatter::sample`].
pub const MAX_SCATTER_POINTS: usize = 2000;
/// The seed of the scatter subsample, fixed so that a report is reproducible.
pub const SCATTER_SEED: u64 = 0x5eed_2e90;
/// The file names [`write_report`] writes into its directory.
pub const JSON_FILE: &str = "report.json";
/// See [`JSON_FILE`].
pub const MD_FILE: &str = "report.md";
/// See [`JSON_FILE`].
pub const HTML_FILE: &str = "report.html";

/// Errors of the report stage (rendering; reading and writing files are [`Error::Io`] and
/// [`Error::Input`]).
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// plotters failed to draw one chart.
    #[error("drawing the {chart} chart: {message}")]
    Plot {
        /// The chart's `data-chart` id, e.g. `scatter-pre`.
        chart: String,
        /// plotters' message.
        message: String,
    },
}

// ---------------------------------------------------------------------------------------------
// Schema
// ---------------------------------------------------------------------------------------------

/// Everything a report shows; serialized as-is to report.json. Every section defaults to empty,
/// so a partial report.json still loads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReportData {
    /// Who wrote the report, when, for which run and config.
    pub meta: ReportMeta,
    /// Agreement of the base evaluator (the scores already in the logs) with human scores, on
    /// the held-out split named by `meta.eval_split`.
    pub pre: Agreement,
    /// Agreement of the retrained evaluator with human scores, on the same held-out split.
    pub post: Agreement,
    /// Calibration of each evaluator against the binary human verdict.
    pub calibration: PrePost<Calibration>,
    /// The training data: counts, weights and effective sizes per split and per cohort.
    pub dataset: DatasetSummary,
    /// The training run; `None` when training was skipped.
    pub training: Option<TrainingSummary>,
    /// The promotion gate's decision; `None` when the gate did not run.
    pub gate: Option<GateDecision>,
    /// Held-out disagreements between evaluator and human verdicts, keyed by cohort name
    /// (requests without a cohort go under `"(none)"`).
    pub disagreements_by_cohort: BTreeMap<String, Disagreements>,
    /// Evaluator vs human score pairs for the scatter plots, subsampled (see [`Scatter::sample`]).
    pub scatter: PrePost<Scatter>,
}

/// The same kind of section for the base evaluator (`pre`) and the retrained one (`post`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PrePost<T> {
    /// The base evaluator.
    pub pre: T,
    /// The retrained evaluator.
    pub post: T,
}

/// Provenance of a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReportMeta {
    /// report.json's schema version; default [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The evalloop version that wrote the report (`CARGO_PKG_VERSION`).
    pub evalloop_version: String,
    /// The run's id, as in the store's `runs` table.
    pub run_id: String,
    /// When the report was made, RFC 3339 in UTC.
    pub created: String,
    /// The hash of the resolved config the run used (hex), if known.
    pub config_hash: Option<String>,
    /// The base evaluator's name (as in the logs' `evaluator` field), if known.
    pub base_evaluator: Option<String>,
    /// The retrained evaluator's name or model path, if known.
    pub new_evaluator: Option<String>,
    /// The split the pre/post statistics are computed on; default `"test"`.
    pub eval_split: String,
}

impl Default for ReportMeta {
    fn default() -> Self {
        ReportMeta {
            schema_version: SCHEMA_VERSION,
            evalloop_version: env!("CARGO_PKG_VERSION").to_string(),
            run_id: String::new(),
            created: String::new(),
            config_hash: None,
            base_evaluator: None,
            new_evaluator: None,
            eval_split: "test".to_string(),
        }
    }
}

impl ReportMeta {
    /// Meta for a run made now: this build's version and schema, `created` = now (UTC).
    pub fn new(run_id: impl Into<String>) -> ReportMeta {
        ReportMeta {
            run_id: run_id.into(),
            created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            ..ReportMeta::default()
        }
    }
}

/// Correlation of one evaluator's scores with human scores: the whole held-out split
/// (flattened into this object in JSON) and each cohort.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Agreement {
    /// Dataset-level statistics over every held-out request.
    #[serde(flatten)]
    pub overall: Correlations,
    /// The confidence level of every `*_ci` in this section, e.g. `0.95`.
    pub ci_level: Option<f64>,
    /// How the CIs were made, e.g. `"fisher-z"` or `"bootstrap"`.
    pub ci_method: Option<String>,
    /// The same statistics per cohort, in the order the pipeline chose.
    pub per_cohort: Vec<CohortCorrelations>,
}

/// Correlation statistics between evaluator scores and human scores. `None` = undefined
/// (fewer than 3 pairs, or a constant column). p-values are two-sided.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Correlations {
    /// Pairs (requests with both an evaluator score and a human score) used.
    pub n_samples: u64,
    /// Pearson's r.
    pub pearson_r: Option<f64>,
    /// Pearson's p-value.
    pub pearson_p: Option<f64>,
    /// Confidence interval on r, `[lo, hi]`.
    pub pearson_ci: Option<[f64; 2]>,
    /// Spearman's rho.
    pub spearman_r: Option<f64>,
    /// Spearman's p-value.
    pub spearman_p: Option<f64>,
    /// Confidence interval on rho, `[lo, hi]`.
    pub spearman_ci: Option<[f64; 2]>,
    /// Kendall's tau-b.
    pub kendall_tau: Option<f64>,
    /// Kendall's p-value.
    pub kendall_p: Option<f64>,
    /// Confidence interval on tau, `[lo, hi]`.
    pub kendall_ci: Option<[f64; 2]>,
    /// Group level: the mean over groups (e.g. prompts with several outputs) of the
    /// within-group Spearman rho; `None` when not computed.
    pub group_mean_spearman: Option<f64>,
    /// Group level: the mean within-group Kendall tau.
    pub group_mean_kendall: Option<f64>,
    /// Group level: how many groups had a defined correlation and entered the means.
    pub groups_used: Option<u64>,
}

/// [`Correlations`] for one cohort (flattened into this object in JSON).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CohortCorrelations {
    /// The cohort's name, as in the logs' metadata (user text: escaped when rendered).
    pub cohort: String,
    /// The statistics on this cohort's held-out requests.
    #[serde(flatten)]
    pub stats: Correlations,
}

/// Calibration of an evaluator score read as P(human verdict = good).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Calibration {
    /// Pairs used.
    pub n_samples: u64,
    /// Expected calibration error over `reliability` (count-weighted mean |observed - predicted|).
    pub ece: Option<f64>,
    /// Brier score: mean squared error of the predicted probability.
    pub brier: Option<f64>,
    /// ROC AUC of the score against the binary human verdict.
    pub auc: Option<f64>,
    /// The reliability diagram's bins, in increasing order of `lower`.
    pub reliability: Vec<ReliabilityBin>,
}

/// One bin of a reliability diagram: predictions in `[lower, upper)` (the last bin is closed).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReliabilityBin {
    /// The bin's lower edge, a probability.
    pub lower: f64,
    /// The bin's upper edge, a probability.
    pub upper: f64,
    /// Predictions that fell in the bin.
    pub count: u64,
    /// Their mean predicted probability; `None` for an empty bin.
    pub mean_predicted: Option<f64>,
    /// The fraction of them whose human verdict is good; `None` for an empty bin.
    pub observed: Option<f64>,
}

/// The training data card.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DatasetSummary {
    /// The first log timestamp in the window, RFC 3339.
    pub window_start: Option<String>,
    /// The last log timestamp in the window, RFC 3339.
    pub window_end: Option<String>,
    /// One entry per split, conventionally `train`, `val`, `test` in that order.
    pub splits: Vec<SplitSummary>,
    /// The same per cohort.
    pub per_cohort: Vec<CohortSplits>,
}

/// Counts and weights of one split.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SplitSummary {
    /// The split's name: `train`, `val` or `test`.
    pub split: String,
    /// Examples in the split.
    pub count: u64,
    /// The sum of the per-example weights.
    pub weight_sum: Option<f64>,
    /// The smallest weight.
    pub weight_min: Option<f64>,
    /// The mean weight.
    pub weight_mean: Option<f64>,
    /// The largest weight.
    pub weight_max: Option<f64>,
    /// Kish's effective sample size, (Σw)² / Σw².
    pub effective_size: Option<f64>,
}

/// The per-split summary of one cohort.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CohortSplits {
    /// The cohort's name.
    pub cohort: String,
    /// One entry per split, as in [`DatasetSummary::splits`].
    pub splits: Vec<SplitSummary>,
}

/// The fine-tuning run that produced the retrained evaluator.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainingSummary {
    /// The checkpoint fine-tuned (a Hugging Face id or a path).
    pub base_model: Option<String>,
    /// Epochs run.
    pub epochs: u32,
    /// The optimizer step whose checkpoint was kept (best validation Spearman).
    pub best_step: Option<u64>,
    /// The validation Spearman rho at `best_step`.
    pub best_val_spearman: Option<f64>,
    /// Training throughput, examples per second.
    pub examples_per_sec: Option<f64>,
    /// Wall-clock training time, seconds.
    pub wall_secs: Option<f64>,
    /// Model selection (`[[train.candidates]]`): which candidate was kept and every
    /// candidate's figure, in words; `None` without selection.
    pub selection: Option<String>,
    /// Loss and validation curves, in increasing `step` order.
    pub curves: Vec<CurvePoint>,
}

/// One logged point of the training curves.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CurvePoint {
    /// Optimizer step (1-based).
    pub step: u64,
    /// Epoch at this step; fractional values are allowed (1.5 = half way through epoch 2).
    pub epoch: f64,
    /// Mean training loss since the previous point; `None` when not logged or not finite.
    pub train_loss: Option<f64>,
    /// Validation loss, at the points where validation ran.
    pub val_loss: Option<f64>,
    /// Validation Spearman rho, at the points where validation ran.
    pub val_spearman: Option<f64>,
}

/// The promotion gate: promote only if the new evaluator's held-out Spearman beats the base's by
/// `margin` and a test for dependent correlations says the difference is significant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GateDecision {
    /// Whether the retrained evaluator was promoted.
    pub promoted: bool,
    /// Why, in one sentence for people (user text: escaped when rendered).
    pub reason: String,
    /// The base evaluator's held-out Spearman rho.
    pub base_spearman: Option<f64>,
    /// The retrained evaluator's held-out Spearman rho.
    pub new_spearman: Option<f64>,
    /// The required improvement `new - base` (config `[run] margin`).
    pub margin: f64,
    /// The significance test, e.g. `"williams"` or `"paired_bootstrap"`.
    pub test: String,
    /// The test statistic (Williams' t; for the bootstrap, the mean difference).
    pub statistic: Option<f64>,
    /// The test's one-sided p-value for `new > base`.
    pub p_value: Option<f64>,
    /// The significance level the p-value was compared with, e.g. `0.05`.
    pub alpha: Option<f64>,
}

/// Disagreements in one cohort: held-out requests where the evaluator's verdict (its score at
/// its threshold) differs from the human verdict.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Disagreements {
    /// Held-out requests in the cohort with both verdicts.
    pub n_samples: u64,
    /// Disagreements of the base evaluator.
    pub pre: u64,
    /// Disagreements of the retrained evaluator.
    pub post: u64,
}

/// A deterministic subsample of (evaluator score, human score) pairs for a scatter plot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Scatter {
    /// Pairs with finite scores before subsampling.
    pub n_total: u64,
    /// At most the cap given to [`Scatter::sample`], in their original order.
    pub points: Vec<ScatterPoint>,
}

/// One held-out request in a scatter plot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScatterPoint {
    /// The evaluator's score.
    pub eval_score: f64,
    /// The human score.
    pub human_score: f64,
    /// The request's cohort (`"(none)"` when it has none).
    pub cohort: String,
}

impl Scatter {
    /// Keeps at most `cap` of the pairs with finite scores, chosen uniformly with the fixed
    /// [`SCATTER_SEED`], in their original order. Given the same number of pairs, pre and post
    /// keep the same positions, so pass both in the same request order to plot the same requests.
    pub fn sample(points: impl IntoIterator<Item = ScatterPoint>, cap: usize) -> Scatter {
        let finite: Vec<ScatterPoint> =
            points.into_iter().filter(|p| p.eval_score.is_finite() && p.human_score.is_finite()).collect();
        let n_total = finite.len() as u64;
        if finite.len() <= cap {
            return Scatter { n_total, points: finite };
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(SCATTER_SEED);
        let mut keep = rand::seq::index::sample(&mut rng, finite.len(), cap).into_vec();
        keep.sort_unstable();
        let mut slots: Vec<Option<ScatterPoint>> = finite.into_iter().map(Some).collect();
        let points = keep.into_iter().filter_map(|i| slots[i].take()).collect();
        Scatter { n_total, points }
    }
}

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

/// Writes report.json, report.md and report.html into `dir` (created if missing). Each file is
/// written to a temporary file in `dir` and renamed over the old one, so a reader never sees a
/// half-written report. report.json is checked to read back before anything is written.
pub fn write_report(dir: &Path, data: &ReportData) -> Result<()> {
    let json = to_json(data)?;
    let md = render_markdown(data);
    let html = render_html(data)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    write_atomic(&dir.join(JSON_FILE), json.as_bytes())?;
    write_atomic(&dir.join(MD_FILE), md.as_bytes())?;
    write_atomic(&dir.join(HTML_FILE), html.as_bytes())?;
    Ok(())
}

/// Re-renders a report: reads `from` (a report.json) and writes the three files into `out`.
/// Returns the data read.
pub fn render(from: &Path, out: &Path) -> Result<ReportData> {
    let data = read_report(from)?;
    write_report(out, &data)?;
    Ok(data)
}

/// Reads a report.json; errors name the file and the JSON position, or the schema version.
pub fn read_report(path: &Path) -> Result<ReportData> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let data: ReportData = serde_json::from_str(&text).map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
    if data.meta.schema_version > SCHEMA_VERSION {
        return Err(Error::Input(format!(
            "{}: report schema version {} is newer than this evalloop's ({SCHEMA_VERSION}); upgrade evalloop",
            path.display(),
            data.meta.schema_version
        )));
    }
    Ok(data)
}

/// report.json's text (pretty, with a final newline). serde_json writes a non-finite float as
/// `null`, which reads back as `None`; a non-finite value in a field that cannot be `None` would
/// not read back, so that is an error naming the field's position.
pub fn to_json(data: &ReportData) -> Result<String> {
    let mut text = serde_json::to_string_pretty(data)
        .map_err(|e| Error::Input(format!("report.json: cannot serialize the report: {e}")))?;
    serde_json::from_str::<ReportData>(&text).map_err(|e| {
        Error::Input(format!("report.json: a required number is not finite (it would be written as null): {e}"))
    })?;
    text.push('\n');
    Ok(text)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map_or("report".into(), |n| n.to_string_lossy().into_owned());
    let tmp: PathBuf = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        Ok(())
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

// ---------------------------------------------------------------------------------------------
// Tables, shared by report.md and report.html
// ---------------------------------------------------------------------------------------------

/// A table as plain (unescaped) text; the markdown and HTML renderers escape it.
struct Table {
    header: Vec<String>,
    /// Right-align this column (numbers).
    numeric: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(header: &[&str], numeric: &[bool]) -> Table {
        Table { header: header.iter().map(|s| s.to_string()).collect(), numeric: numeric.to_vec(), rows: vec![] }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }
}

/// The text for an undefined statistic.
const UNDEFINED: &str = "—";

fn defined(v: Option<f64>) -> Option<f64> {
    v.filter(|x| x.is_finite())
}

fn num(v: Option<f64>, digits: usize) -> String {
    defined(v).map_or(UNDEFINED.to_string(), |x| format!("{x:.digits$}"))
}

fn pval(v: Option<f64>) -> String {
    match defined(v) {
        None => UNDEFINED.to_string(),
        Some(p) if p != 0.0 && p < 1e-4 => format!("{p:.1e}"),
        Some(p) => format!("{p:.4}"),
    }
}

fn delta(pre: Option<f64>, post: Option<f64>, digits: usize) -> String {
    match (defined(pre), defined(post)) {
        (Some(a), Some(b)) => format!("{:+.digits$}", b - a),
        _ => UNDEFINED.to_string(),
    }
}

fn ci(v: Option<[f64; 2]>) -> String {
    match v {
        Some([lo, hi]) if lo.is_finite() && hi.is_finite() => format!("[{lo:.3}, {hi:.3}]"),
        _ => UNDEFINED.to_string(),
    }
}

fn ci_label(a: &Agreement) -> String {
    match defined(a.ci_level) {
        Some(l) => format!("{}% CI", (l * 100.0).round()),
        None => "CI".to_string(),
    }
}

fn headline_table(d: &ReportData) -> Table {
    let (pre, post) = (&d.pre.overall, &d.post.overall);
    let mut t = Table::new(&["", "pre (base)", "post (retrained)", "Δ"], &[false, true, true, true]);
    let ci_name = ci_label(&d.pre);
    let mut stat = |name: &str, a: Option<f64>, b: Option<f64>, a_ci, b_ci, a_p, b_p| {
        t.row(vec![name.to_string(), num(a, 3), num(b, 3), delta(a, b, 3)]);
        t.row(vec![format!("{name} {ci_name}"), ci(a_ci), ci(b_ci), String::new()]);
        t.row(vec![format!("{name} p"), pval(a_p), pval(b_p), String::new()]);
    };
    stat(
        "Spearman ρ",
        pre.spearman_r,
        post.spearman_r,
        pre.spearman_ci,
        post.spearman_ci,
        pre.spearman_p,
        post.spearman_p,
    );
    stat("Pearson r", pre.pearson_r, post.pearson_r, pre.pearson_ci, post.pearson_ci, pre.pearson_p, post.pearson_p);
    stat(
        "Kendall τ",
        pre.kendall_tau,
        post.kendall_tau,
        pre.kendall_ci,
        post.kendall_ci,
        pre.kendall_p,
        post.kendall_p,
    );
    let any_group = [pre, post].iter().any(|c| c.groups_used.is_some() || defined(c.group_mean_spearman).is_some());
    if any_group {
        let (a, b) = (pre.group_mean_spearman, post.group_mean_spearman);
        t.row(vec!["Group mean Spearman ρ".into(), num(a, 3), num(b, 3), delta(a, b, 3)]);
        let (a, b) = (pre.group_mean_kendall, post.group_mean_kendall);
        t.row(vec!["Group mean Kendall τ".into(), num(a, 3), num(b, 3), delta(a, b, 3)]);
        let g = |c: &Correlations| c.groups_used.map_or(UNDEFINED.to_string(), |g| g.to_string());
        t.row(vec!["Groups used".into(), g(pre), g(post), String::new()]);
    }
    t.row(vec!["n".into(), pre.n_samples.to_string(), post.n_samples.to_string(), String::new()]);
    t
}

fn gate_table(g: &GateDecision) -> Table {
    let mut t = Table::new(&["", "value"], &[false, true]);
    t.row(vec!["Decision".into(), if g.promoted { "promoted" } else { "not promoted" }.into()]);
    t.row(vec!["Base Spearman ρ".into(), num(g.base_spearman, 3)]);
    t.row(vec!["New Spearman ρ".into(), num(g.new_spearman, 3)]);
    t.row(vec!["Improvement".into(), delta(g.base_spearman, g.new_spearman, 3)]);
    t.row(vec!["Required margin".into(), num(Some(g.margin), 3)]);
    t.row(vec!["Test".into(), if g.test.is_empty() { UNDEFINED.into() } else { g.test.clone() }]);
    t.row(vec!["Statistic".into(), num(g.statistic, 3)]);
    t.row(vec!["p-value".into(), pval(g.p_value)]);
    t.row(vec!["α".into(), num(g.alpha, 3)]);
    t
}

/// Cohort names of both sides, in first-seen order (pre's order, then post's extras).
fn cohort_union<'a>(a: impl Iterator<Item = &'a str>, b: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for c in a.chain(b) {
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

fn per_cohort_rows(d: &ReportData) -> Vec<(&str, Option<&Correlations>, Option<&Correlations>)> {
    let names = cohort_union(
        d.pre.per_cohort.iter().map(|c| c.cohort.as_str()),
        d.post.per_cohort.iter().map(|c| c.cohort.as_str()),
    );
    names
        .into_iter()
        .map(|c| {
            let pre = d.pre.per_cohort.iter().find(|x| x.cohort == c).map(|x| &x.stats);
            let post = d.post.per_cohort.iter().find(|x| x.cohort == c).map(|x| &x.stats);
            (c, pre, post)
        })
        .collect()
}

fn cohort_table(d: &ReportData) -> Table {
    let mut t = Table::new(
        &["cohort", "n", "ρ pre", "ρ post", "Δρ", "τ pre", "τ post", "r pre", "r post"],
        &[false, true, true, true, true, true, true, true, true],
    );
    for (c, pre, post) in per_cohort_rows(d) {
        let f = |s: Option<&Correlations>, g: fn(&Correlations) -> Option<f64>| s.and_then(g);
        let n = pre.or(post).map_or(0, |s| s.n_samples);
        let (rp, rq) = (f(pre, |s| s.spearman_r), f(post, |s| s.spearman_r));
        t.row(vec![
            c.to_string(),
            n.to_string(),
            num(rp, 3),
            num(rq, 3),
            delta(rp, rq, 3),
            num(f(pre, |s| s.kendall_tau), 3),
            num(f(post, |s| s.kendall_tau), 3),
            num(f(pre, |s| s.pearson_r), 3),
            num(f(post, |s| s.pearson_r), 3),
        ]);
    }
    t
}

fn disagreement_table(d: &ReportData) -> Table {
    let mut t = Table::new(&["cohort", "n", "pre", "post", "Δ"], &[false, true, true, true, true]);
    for (c, x) in &d.disagreements_by_cohort {
        t.row(vec![
            c.clone(),
            x.n_samples.to_string(),
            x.pre.to_string(),
            x.post.to_string(),
            format!("{:+}", x.post as i64 - x.pre as i64),
        ]);
    }
    t
}

fn calibration_table(d: &ReportData) -> Table {
    let (a, b) = (&d.calibration.pre, &d.calibration.post);
    let mut t = Table::new(&["", "pre (base)", "post (retrained)", "Δ"], &[false, true, true, true]);
    t.row(vec!["ECE (lower is better)".into(), num(a.ece, 3), num(b.ece, 3), delta(a.ece, b.ece, 3)]);
    t.row(vec!["Brier (lower is better)".into(), num(a.brier, 3), num(b.brier, 3), delta(a.brier, b.brier, 3)]);
    t.row(vec!["AUC".into(), num(a.auc, 3), num(b.auc, 3), delta(a.auc, b.auc, 3)]);
    t.row(vec!["n".into(), a.n_samples.to_string(), b.n_samples.to_string(), String::new()]);
    t
}

fn reliability_table(c: &Calibration) -> Table {
    let mut t = Table::new(&["bin", "count", "mean predicted", "observed"], &[false, true, true, true]);
    for (i, b) in c.reliability.iter().enumerate() {
        // The last bin is closed: [0.9, 1.0].
        let close = if i + 1 == c.reliability.len() { ']' } else { ')' };
        t.row(vec![
            format!("[{:.2}, {:.2}{close}", b.lower, b.upper),
            b.count.to_string(),
            num(b.mean_predicted, 3),
            num(b.observed, 3),
        ]);
    }
    t
}

fn split_table(d: &DatasetSummary) -> Table {
    let mut t = Table::new(
        &["split", "count", "effective size", "weight sum", "weight min", "weight mean", "weight max"],
        &[false, true, true, true, true, true, true],
    );
    for s in &d.splits {
        t.row(vec![
            s.split.clone(),
            s.count.to_string(),
            num(s.effective_size, 1),
            num(s.weight_sum, 2),
            num(s.weight_min, 3),
            num(s.weight_mean, 3),
            num(s.weight_max, 3),
        ]);
    }
    t
}

fn cohort_split_table(d: &DatasetSummary) -> Table {
    let names = cohort_union(
        d.splits.iter().map(|s| s.split.as_str()),
        d.per_cohort.iter().flat_map(|c| c.splits.iter().map(|s| s.split.as_str())),
    );
    let mut header = vec!["cohort".to_string()];
    for n in &names {
        header.push(format!("{n} count"));
        header.push(format!("{n} eff. size"));
    }
    let mut t = Table {
        numeric: std::iter::once(false).chain(names.iter().flat_map(|_| [true, true])).collect(),
        header,
        rows: vec![],
    };
    for c in &d.per_cohort {
        let mut row = vec![c.cohort.clone()];
        for n in &names {
            match c.splits.iter().find(|s| s.split == *n) {
                Some(s) => {
                    row.push(s.count.to_string());
                    row.push(num(s.effective_size, 1));
                }
                None => row.extend([UNDEFINED.to_string(), UNDEFINED.to_string()]),
            }
        }
        t.row(row);
    }
    t
}

fn training_table(tr: &TrainingSummary) -> Table {
    let mut t = Table::new(&["", "value"], &[false, true]);
    t.row(vec!["Base model".into(), tr.base_model.clone().unwrap_or_else(|| UNDEFINED.into())]);
    t.row(vec!["Epochs".into(), tr.epochs.to_string()]);
    t.row(vec!["Best step".into(), tr.best_step.map_or(UNDEFINED.into(), |s| s.to_string())]);
    t.row(vec!["Best validation Spearman ρ".into(), num(tr.best_val_spearman, 3)]);
    t.row(vec!["Throughput (examples/s)".into(), num(tr.examples_per_sec, 1)]);
    t.row(vec!["Wall time (s)".into(), num(tr.wall_secs, 1)]);
    if let Some(sel) = &tr.selection {
        t.row(vec!["Model selection".into(), sel.clone()]);
    }
    t
}

fn meta_table(m: &ReportMeta) -> Table {
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| UNDEFINED.into());
    let mut t = Table::new(&["", "value"], &[false, false]);
    t.row(vec!["Run".into(), m.run_id.clone()]);
    t.row(vec!["Created".into(), m.created.clone()]);
    t.row(vec!["Base evaluator".into(), opt(&m.base_evaluator)]);
    t.row(vec!["Retrained evaluator".into(), opt(&m.new_evaluator)]);
    t.row(vec!["Held-out split".into(), m.eval_split.clone()]);
    t.row(vec!["Config hash".into(), opt(&m.config_hash)]);
    t.row(vec!["evalloop".into(), format!("{} (report schema v{})", m.evalloop_version, m.schema_version)]);
    t
}

fn gate_headline(g: Option<&GateDecision>) -> (&'static str, String) {
    match g {
        Some(g) if g.promoted => ("PROMOTED", g.reason.clone()),
        Some(g) => ("NOT PROMOTED", g.reason.clone()),
        None => ("NO GATE DECISION", "the gate did not run for this report".to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// Markdown
// ---------------------------------------------------------------------------------------------

/// Escapes text for a GitHub-flavoured markdown table cell or paragraph: HTML is shown, not
/// interpreted, and `|`, emphasis, links and line breaks cannot break the table.
pub fn md_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\\' | '|' | '*' | '_' | '`' | '[' | ']' | '#' | '~' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' | '\t' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

fn md_table(out: &mut String, t: &Table) {
    let cell = |s: &str| if s.is_empty() { " ".to_string() } else { md_escape(s) };
    let _ = writeln!(out, "| {} |", t.header.iter().map(|h| cell(h)).collect::<Vec<_>>().join(" | "));
    let aligns: Vec<&str> = t.numeric.iter().map(|&n| if n { "---:" } else { "---" }).collect();
    let _ = writeln!(out, "|{}|", aligns.join("|"));
    for r in &t.rows {
        let _ = writeln!(out, "| {} |", r.iter().map(|c| cell(c)).collect::<Vec<_>>().join(" | "));
    }
    out.push('\n');
}

/// report.md: the report's tables as GitHub-flavoured markdown, for a pull-request comment.
pub fn render_markdown(d: &ReportData) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "## evalloop report: run {}\n", md_escape(&d.meta.run_id));
    let (badge, reason) = gate_headline(d.gate.as_ref());
    let _ = writeln!(o, "**{badge}**: {}\n", md_escape(&reason));
    let _ = writeln!(o, "### Agreement with human scores (held-out `{}` split)\n", d.meta.eval_split.replace('`', "'"));
    md_table(&mut o, &headline_table(d));
    if let Some(g) = &d.gate {
        o.push_str("### Gate\n\n");
        md_table(&mut o, &gate_table(g));
    }
    if !d.pre.per_cohort.is_empty() || !d.post.per_cohort.is_empty() {
        o.push_str("### Per cohort\n\n");
        md_table(&mut o, &cohort_table(d));
    }
    if !d.disagreements_by_cohort.is_empty() {
        o.push_str("### Disagreements with the human verdict, by cohort\n\n");
        md_table(&mut o, &disagreement_table(d));
    }
    o.push_str("### Calibration\n\n");
    md_table(&mut o, &calibration_table(d));
    for (side, c) in [("pre", &d.calibration.pre), ("post", &d.calibration.post)] {
        if !c.reliability.is_empty() {
            let _ = writeln!(o, "<details><summary>Reliability bins, {side}</summary>\n");
            md_table(&mut o, &reliability_table(c));
            o.push_str("</details>\n\n");
        }
    }
    if !d.dataset.splits.is_empty() || !d.dataset.per_cohort.is_empty() {
        o.push_str("### Dataset\n\n");
        if let (Some(a), Some(b)) = (&d.dataset.window_start, &d.dataset.window_end) {
            let _ = writeln!(o, "Window: {} to {}\n", md_escape(a), md_escape(b));
        }
        md_table(&mut o, &split_table(&d.dataset));
        if !d.dataset.per_cohort.is_empty() {
            md_table(&mut o, &cohort_split_table(&d.dataset));
        }
    }
    if let Some(tr) = &d.training {
        o.push_str("### Training\n\n");
        md_table(&mut o, &training_table(tr));
    }
    o.push_str("<details><summary>Run</summary>\n\n");
    md_table(&mut o, &meta_table(&d.meta));
    o.push_str("</details>\n");
    o
}

// ---------------------------------------------------------------------------------------------
// HTML
// ---------------------------------------------------------------------------------------------

/// Escapes text for HTML element content and double- or single-quoted attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn html_table(out: &mut String, class: &str, t: &Table) {
    let align = |i: usize| if t.numeric.get(i).copied().unwrap_or(false) { " class=\"num\"" } else { "" };
    let _ = write!(out, "<table class=\"{class}\"><thead><tr>");
    for (i, h) in t.header.iter().enumerate() {
        let _ = write!(out, "<th{}>{}</th>", align(i), html_escape(h));
    }
    out.push_str("</tr></thead><tbody>\n");
    for r in &t.rows {
        out.push_str("<tr>");
        for (i, c) in r.iter().enumerate() {
            let tag = if i == 0 { "th" } else { "td" };
            let _ = write!(out, "<{tag}{}>{}</{tag}>", align(i), html_escape(c));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table>\n");
}

const CSS: &str = r#"
:root { --pre: #4e79a7; --post: #f28e2b; --ok: #2e7d32; --bad: #c62828; --muted: #666; }
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222; background: #fafafa;
       margin: 0 auto; max-width: 1200px; padding: 16px 24px 48px; line-height: 1.4; }
h1 { font-size: 1.6rem; margin: 0.2em 0; }
h2 { font-size: 1.25rem; margin: 1.6em 0 0.5em; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
h3 { font-size: 1.05rem; margin: 1.2em 0 0.4em; }
.sub { color: var(--muted); margin: 0; }
.badge { display: inline-block; font-weight: 700; padding: 4px 12px; border-radius: 4px; color: #fff; }
.badge.promoted { background: var(--ok); } .badge.rejected { background: var(--bad); }
.badge.none { background: var(--muted); }
.decision p { margin: 6px 0; }
table { border-collapse: collapse; margin: 8px 0 16px; background: #fff; font-size: 0.92rem; }
th, td { border: 1px solid #ddd; padding: 4px 10px; text-align: left; vertical-align: top; }
thead th { background: #f0f0f0; }
tbody th { font-weight: 600; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(460px, 1fr)); gap: 16px; }
figure { margin: 0; background: #fff; border: 1px solid #ddd; border-radius: 4px; padding: 6px; }
figure.wide { grid-column: 1 / -1; }
figure svg { display: block; width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: 0.85rem; padding: 2px 6px; }
details { margin: 6px 0 12px; } summary { cursor: pointer; color: var(--muted); }
.tables { display: flex; flex-wrap: wrap; gap: 24px; }
footer { margin-top: 32px; color: var(--muted); font-size: 0.85rem; }
"#;

/// report.html: one self-contained page (inline CSS and SVG; no script, no external resource;
/// a Content-Security-Policy forbids both in case any user text escaped escaping).
pub fn render_html(d: &ReportData) -> Result<String> {
    let charts = Charts::render(d)?;
    let mut o = String::with_capacity(256 * 1024);
    let run = html_escape(&d.meta.run_id);
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>evalloop report: run {run}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
    );
    let _ = writeln!(
        o,
        "<header><h1>evalloop report</h1><p class=\"sub\">run <code>{run}</code> · {} · held-out split <code>{}</code> · \
         base <code>{}</code> → retrained <code>{}</code></p></header>",
        html_escape(&d.meta.created),
        html_escape(&d.meta.eval_split),
        html_escape(d.meta.base_evaluator.as_deref().unwrap_or(UNDEFINED)),
        html_escape(d.meta.new_evaluator.as_deref().unwrap_or(UNDEFINED)),
    );

    // Gate.
    let (badge, reason) = gate_headline(d.gate.as_ref());
    let class = match &d.gate {
        Some(g) if g.promoted => "promoted",
        Some(_) => "rejected",
        None => "none",
    };
    let _ = writeln!(
        o,
        "<section id=\"gate\" class=\"decision\"><h2>Gate decision</h2>\
         <p><span class=\"badge {class}\">{badge}</span></p><p>{}</p>",
        html_escape(&reason)
    );
    if let Some(g) = &d.gate {
        html_table(&mut o, "gate", &gate_table(g));
    }
    o.push_str("</section>\n");

    // Agreement.
    let _ = writeln!(
        o,
        "<section id=\"agreement\"><h2>Agreement with human scores (held-out <code>{}</code> split)</h2>",
        html_escape(&d.meta.eval_split)
    );
    html_table(&mut o, "headline", &headline_table(d));
    let _ = writeln!(o, "<div class=\"charts\">{}{}</div></section>", charts.scatter_pre, charts.scatter_post);

    // Per cohort.
    o.push_str("<section id=\"cohorts\"><h2>Per cohort</h2>\n");
    html_table(&mut o, "cohorts", &cohort_table(d));
    let _ = writeln!(o, "<div class=\"charts\">{}</div>", charts.cohort_bars);
    if !d.disagreements_by_cohort.is_empty() {
        o.push_str("<h3>Disagreements with the human verdict</h3>\n");
        html_table(&mut o, "disagreements", &disagreement_table(d));
    }
    let _ = writeln!(o, "<div class=\"charts\">{}</div></section>", charts.disagreements);

    // Calibration.
    o.push_str("<section id=\"calibration\"><h2>Calibration</h2>\n");
    html_table(&mut o, "calibration", &calibration_table(d));
    let _ = writeln!(o, "<div class=\"charts\">{}{}</div>", charts.reliability_pre, charts.reliability_post);
    o.push_str("<details><summary>Reliability bins</summary><div class=\"tables\">");
    for (side, c) in [("pre", &d.calibration.pre), ("post", &d.calibration.post)] {
        let _ = write!(o, "<div><h3>{side}</h3>");
        html_table(&mut o, "reliability", &reliability_table(c));
        o.push_str("</div>");
    }
    o.push_str("</div></details></section>\n");

    // Training.
    o.push_str("<section id=\"training\"><h2>Training</h2>\n");
    match &d.training {
        Some(tr) => html_table(&mut o, "training", &training_table(tr)),
        None => o.push_str("<p>Training was skipped in this run.</p>\n"),
    }
    let _ = writeln!(o, "<div class=\"charts\">{}{}</div></section>", charts.loss, charts.val_spearman);

    // Dataset.
    o.push_str("<section id=\"dataset\"><h2>Dataset</h2>\n");
    if let (Some(a), Some(b)) = (&d.dataset.window_start, &d.dataset.window_end) {
        let _ = writeln!(o, "<p>Window: {} to {}</p>", html_escape(a), html_escape(b));
    }
    html_table(&mut o, "splits", &split_table(&d.dataset));
    if !d.dataset.per_cohort.is_empty() {
        html_table(&mut o, "cohort-splits", &cohort_split_table(&d.dataset));
    }
    o.push_str("</section>\n<footer>\n");
    html_table(&mut o, "meta", &meta_table(&d.meta));
    o.push_str("</footer>\n</body>\n</html>\n");
    Ok(o)
}

// ---------------------------------------------------------------------------------------------
// Charts (plotters, SVG into a String)
// ---------------------------------------------------------------------------------------------

/// Every chart of report.html, each a `<figure>` holding one `<svg class="chart" data-chart=ID>`.
struct Charts {
    scatter_pre: String,
    scatter_post: String,
    reliability_pre: String,
    reliability_post: String,
    cohort_bars: String,
    disagreements: String,
    loss: String,
    val_spearman: String,
}

/// The `data-chart` ids of the charts in report.html, in page order.
pub const CHART_IDS: [&str; 8] = [
    "scatter-pre",
    "scatter-post",
    "cohort-spearman",
    "disagreements",
    "reliability-pre",
    "reliability-post",
    "training-loss",
    "validation-spearman",
];

const PRE: RGBColor = RGBColor(0x4e, 0x79, 0xa7);
const POST: RGBColor = RGBColor(0xf2, 0x8e, 0x2b);
const GRAY: RGBColor = RGBColor(0x88, 0x88, 0x88);
const LIGHT: RGBColor = RGBColor(0xe6, 0xe6, 0xe6);
const TEXT: RGBColor = RGBColor(0x33, 0x33, 0x33);
/// Cohort colours (Tableau 10 without its gray, which means "other cohorts").
const COHORT_COLORS: [RGBColor; 9] = [
    RGBColor(0x4e, 0x79, 0xa7),
    RGBColor(0xf2, 0x8e, 0x2b),
    RGBColor(0xe1, 0x57, 0x59),
    RGBColor(0x76, 0xb7, 0xb2),
    RGBColor(0x59, 0xa1, 0x4f),
    RGBColor(0xed, 0xc9, 0x48),
    RGBColor(0xb0, 0x7a, 0xa1),
    RGBColor(0xff, 0x9d, 0xa7),
    RGBColor(0x9c, 0x75, 0x5f),
];
const FONT: &str = "sans-serif";

type PlotResult = std::result::Result<(), DrawingAreaErrorKind<std::io::Error>>;
type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

impl Charts {
    fn render(d: &ReportData) -> Result<Charts> {
        let colors = CohortColors::new(&d.scatter);
        let human =
            padded_range(d.scatter.pre.points.iter().chain(&d.scatter.post.points).map(|p| p.human_score), (0.0, 1.0));
        let rho = |a: &Agreement| match defined(a.overall.spearman_r) {
            Some(r) => format!(" (ρ = {r:.3})"),
            None => String::new(),
        };
        let scatter_pre = scatter_chart(
            "scatter-pre",
            &format!("Base evaluator vs human, pre{}", rho(&d.pre)),
            &d.scatter.pre,
            human,
            &colors,
        )?;
        let scatter_post = scatter_chart(
            "scatter-post",
            &format!("Retrained evaluator vs human, post{}", rho(&d.post)),
            &d.scatter.post,
            human,
            &colors,
        )?;
        let ece = |c: &Calibration| match defined(c.ece) {
            Some(e) => format!(" (ECE = {e:.3})"),
            None => String::new(),
        };
        let reliability_pre = reliability_chart(
            "reliability-pre",
            &format!("Reliability, pre{}", ece(&d.calibration.pre)),
            &d.calibration.pre,
            PRE,
        )?;
        let reliability_post = reliability_chart(
            "reliability-post",
            &format!("Reliability, post{}", ece(&d.calibration.post)),
            &d.calibration.post,
            POST,
        )?;
        let cats: Vec<Bar> = per_cohort_rows(d)
            .into_iter()
            .map(|(c, a, b)| Bar {
                label: c.to_string(),
                pre: a.and_then(|s| defined(s.spearman_r)),
                post: b.and_then(|s| defined(s.spearman_r)),
            })
            .collect();
        let cohort_bars = bar_chart(
            "cohort-spearman",
            "Spearman ρ with human scores, by cohort",
            "Spearman ρ",
            &cats,
            BarScale::Correlation,
        )?;
        let dis: Vec<Bar> = d
            .disagreements_by_cohort
            .iter()
            .map(|(c, x)| Bar { label: c.clone(), pre: Some(x.pre as f64), post: Some(x.post as f64) })
            .collect();
        let disagreements = bar_chart(
            "disagreements",
            "Disagreements with the human verdict, by cohort",
            "requests",
            &dis,
            BarScale::Count,
        )?;
        let empty = TrainingSummary::default();
        let tr = d.training.as_ref().unwrap_or(&empty);
        let loss = loss_chart(tr)?;
        let val_spearman = val_spearman_chart(tr)?;
        Ok(Charts {
            scatter_pre,
            scatter_post,
            reliability_pre,
            reliability_post,
            cohort_bars,
            disagreements,
            loss,
            val_spearman,
        })
    }
}

/// Draws one chart into an SVG string and wraps it in a `<figure>`; the `<svg>` gets
/// `class="chart"`, `data-chart=ID`, `role="img"`, an `aria-label` and a `<title>`.
fn svg_figure(
    id: &str,
    title: &str,
    size: (u32, u32),
    wide: bool,
    draw: impl FnOnce(&Area<'_>) -> PlotResult,
) -> Result<String> {
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, size).into_drawing_area();
        let drawn = root.fill(&WHITE).and_then(|_| draw(&root)).and_then(|_| root.present());
        drawn.map_err(|e| ReportError::Plot { chart: id.to_string(), message: e.to_string() })?;
    }
    let (id_e, title_e) = (html_escape(id), html_escape(title));
    let svg = buf.replacen(
        "<svg ",
        &format!("<svg class=\"chart\" data-chart=\"{id_e}\" role=\"img\" aria-label=\"{title_e}\" "),
        1,
    );
    let svg = match svg.find('>') {
        Some(i) => format!("{}<title>{title_e}</title>{}", &svg[..=i], &svg[i + 1..]),
        None => svg,
    };
    let class = if wide { " class=\"wide\"" } else { "" };
    Ok(format!("<figure{class} id=\"chart-{id_e}\">\n{svg}</figure>\n"))
}

/// A range covering the finite values with 5% padding; `fallback` when there are none, and
/// widened around a single value.
fn padded_range(values: impl Iterator<Item = f64>, fallback: (f64, f64)) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return fallback;
    }
    let span = hi - lo;
    if span <= f64::EPSILON * hi.abs().max(1.0) {
        let w = if lo.abs() > 0.0 { lo.abs() * 0.1 } else { 0.5 };
        return (lo - w, hi + w);
    }
    (lo - 0.05 * span, hi + 0.05 * span)
}

/// Truncates a label to `max` characters, with an ellipsis.
fn short(s: &str, max: usize) -> String {
    let s: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if s.chars().count() <= max {
        s
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

fn no_data(area: &Area<'_>, msg: &str) -> PlotResult {
    let (w, h) = area.dim_in_pixel();
    let style = TextStyle::from((FONT, 16).into_font()).color(&GRAY).pos(Pos::new(HPos::Center, VPos::Center));
    area.draw(&Text::new(msg.to_string(), (w as i32 / 2, h as i32 / 2), style))
}

/// Cohort colours shared by both scatter plots: the most frequent cohorts get their own colour,
/// the rest are gray "other".
struct CohortColors {
    /// (cohort, colour index) for the coloured cohorts, in legend order.
    named: Vec<String>,
}

impl CohortColors {
    fn new(s: &PrePost<Scatter>) -> CohortColors {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for p in s.pre.points.iter().chain(&s.post.points) {
            *counts.entry(p.cohort.as_str()).or_default() += 1;
        }
        let mut by_count: Vec<(&str, usize)> = counts.into_iter().collect();
        by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let named = if by_count.len() <= COHORT_COLORS.len() {
            by_count.iter().map(|(c, _)| c.to_string()).collect()
        } else {
            by_count.iter().take(COHORT_COLORS.len() - 1).map(|(c, _)| c.to_string()).collect()
        };
        CohortColors { named }
    }

    fn group(&self, cohort: &str) -> Option<usize> {
        self.named.iter().position(|c| c == cohort)
    }
}

fn scatter_chart(id: &str, title: &str, s: &Scatter, human: (f64, f64), colors: &CohortColors) -> Result<String> {
    let x = padded_range(s.points.iter().map(|p| p.eval_score), (0.0, 1.0));
    svg_figure(id, title, (580, 440), false, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 17))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(52)
            .build_cartesian_2d(x.0..x.1, human.0..human.1)?;
        chart
            .configure_mesh()
            .light_line_style(LIGHT.mix(0.5))
            .bold_line_style(LIGHT)
            .x_desc("evaluator score")
            .y_desc("human score")
            .label_style((FONT, 12))
            .axis_desc_style((FONT, 13))
            .draw()?;
        if s.points.is_empty() {
            return no_data(root, "no scored held-out requests");
        }
        // The named cohorts (at most as many as there are colours), then "other" in gray.
        let groups = colors.named.iter().zip(COHORT_COLORS).map(|(n, c)| (short(n, 24), c));
        for (g, (name, color)) in groups.chain([("other cohorts".to_string(), GRAY)]).enumerate() {
            let pts: Vec<(f64, f64)> = s
                .points
                .iter()
                .filter(|p| colors.group(&p.cohort).unwrap_or(colors.named.len()) == g)
                .map(|p| (p.eval_score, p.human_score))
                .collect();
            if pts.is_empty() {
                continue;
            }
            chart
                .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.mix(0.55).filled())))?
                .label(name)
                .legend(move |(x, y)| Circle::new((x + 6, y), 4, color.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.75))
            .border_style(LIGHT)
            .label_font((FONT, 12))
            .draw()?;
        let note = if (s.points.len() as u64) < s.n_total {
            format!("{} of {} requests shown", s.points.len(), s.n_total)
        } else {
            format!("{} requests", s.points.len())
        };
        let (w, h) = root.dim_in_pixel();
        let style = TextStyle::from((FONT, 11).into_font()).color(&GRAY).pos(Pos::new(HPos::Right, VPos::Bottom));
        root.draw(&Text::new(note, (w as i32 - 8, h as i32 - 4), style))
    })
}

fn reliability_chart(id: &str, title: &str, c: &Calibration, color: RGBColor) -> Result<String> {
    let pts: Vec<(f64, f64, u64)> = c
        .reliability
        .iter()
        .filter_map(|b| Some((defined(b.mean_predicted)?, defined(b.observed)?, b.count)))
        .collect();
    // The unit square, widened if a bin lies outside it, with room for the dots at the edges.
    let lo = pts.iter().map(|p| p.0.min(p.1)).fold(0.0_f64, f64::min) - 0.02;
    let hi = pts.iter().map(|p| p.0.max(p.1)).fold(1.0_f64, f64::max) + 0.02;
    let max_count = pts.iter().map(|p| p.2).max().unwrap_or(1).max(1) as f64;
    svg_figure(id, title, (580, 440), false, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 17))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(52)
            .build_cartesian_2d(lo..hi, lo..hi)?;
        chart
            .configure_mesh()
            .light_line_style(LIGHT.mix(0.5))
            .bold_line_style(LIGHT)
            .x_desc("mean predicted probability")
            .y_desc("observed frequency (human: good)")
            .label_style((FONT, 12))
            .axis_desc_style((FONT, 13))
            .draw()?;
        chart
            .draw_series(DashedLineSeries::new([(lo, lo), (hi, hi)], 6, 4, GRAY.stroke_width(1)))?
            .label("perfectly calibrated")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 14, y)], GRAY.stroke_width(1)));
        if pts.is_empty() {
            return no_data(root, "no calibration bins");
        }
        chart
            .draw_series(LineSeries::new(pts.iter().map(|p| (p.0, p.1)), color.stroke_width(2)))?
            .label("evaluator (dot area = count)")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 14, y)], color.stroke_width(2)));
        chart.draw_series(pts.iter().map(|p| {
            let r = 3.0 + 5.0 * (p.2 as f64 / max_count).sqrt();
            Circle::new((p.0, p.1), r.round() as i32, color.filled())
        }))?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.75))
            .border_style(LIGHT)
            .label_font((FONT, 12))
            .draw()
    })
}

/// One category of a grouped bar chart; `None` = undefined (drawn as "n/a").
struct Bar {
    label: String,
    pre: Option<f64>,
    post: Option<f64>,
}

#[derive(Clone, Copy, PartialEq)]
enum BarScale {
    /// Values in [-1, 1], labelled with 2 decimals.
    Correlation,
    /// Counts from 0, labelled as integers.
    Count,
}

fn bar_chart(id: &str, title: &str, y_desc: &str, bars: &[Bar], scale: BarScale) -> Result<String> {
    let n = bars.len().max(1);
    let values = bars.iter().flat_map(|b| [b.pre, b.post]).flatten();
    let (lo, hi) = match scale {
        BarScale::Correlation => {
            let (mut lo, mut hi) = (0.0_f64, 0.0_f64);
            for v in values {
                lo = lo.min(v);
                hi = hi.max(v);
            }
            // Room for the value labels above (below) the bars; the axis starts at 0 when no
            // value is negative.
            let lo = if lo < 0.0 { (lo - 0.12).max(-1.1) } else { 0.0 };
            (lo, (hi + 0.12).min(1.1))
        }
        BarScale::Count => (0.0, values.fold(1.0_f64, f64::max) * 1.15),
    };
    let base = 0.0_f64.clamp(lo, hi);
    let fmt = move |v: f64| match scale {
        // No "-0.00" for a value that rounds to zero.
        BarScale::Correlation => format!("{:.2}", if v.abs() < 0.005 { 0.0 } else { v }),
        BarScale::Count => format!("{:.0}", if v.abs() < 0.5 { 0.0 } else { v }),
    };
    // Category labels: horizontal (truncated to their slot) when at least 10 characters fit under
    // their bars, else rotated to read upwards. About 6 px per character at this font size.
    let width = 1160_u32;
    let fit_chars = (width as usize - 90) / n / 6;
    let longest = bars.iter().map(|b| b.label.chars().count()).max().unwrap_or(0);
    let rotated = fit_chars < longest.min(10);
    let labels: Vec<String> =
        bars.iter().map(|b| short(&b.label, if rotated { 24 } else { fit_chars.max(1) })).collect();
    let label_area = if rotated { 16 + 5 * labels.iter().map(|l| l.chars().count()).max().unwrap_or(0) } else { 30 };
    let height = 360 + label_area as u32;
    svg_figure(id, title, (width, height), true, |root| {
        let y_fmt = |v: &f64| fmt(*v);
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 17))
            .margin(12)
            .x_label_area_size(label_area as u32)
            .y_label_area_size(56)
            .build_cartesian_2d(-0.5..(n as f64 - 0.5), lo..hi)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(LIGHT.mix(0.5))
            .bold_line_style(LIGHT)
            .x_labels(n)
            .x_label_formatter(&|_| String::new())
            .y_label_formatter(&y_fmt)
            .y_desc(y_desc)
            .label_style((FONT, 12))
            .axis_desc_style((FONT, 13))
            .draw()?;
        if bars.is_empty() {
            return no_data(root, "no cohorts");
        }
        if lo < 0.0 {
            chart.draw_series(LineSeries::new([(-0.5, 0.0), (n as f64 - 0.5, 0.0)], TEXT.stroke_width(1)))?;
        }
        let value_labels = n <= 16;
        let mut elems: Vec<DynElement<'static, SVGBackend<'_>, (f64, f64)>> = Vec::new();
        for (i, b) in bars.iter().enumerate() {
            let c = i as f64;
            if b.pre.is_none() && b.post.is_none() {
                elems.push(Text::new("n/a".to_string(), (c, base), small_text(VPos::Bottom, &GRAY)).into_dyn());
                continue;
            }
            for (v, color, x) in [(b.pre, PRE, c - 0.2), (b.post, POST, c + 0.2)] {
                match v {
                    Some(v) => {
                        elems.push(Rectangle::new([(x - 0.18, base), (x + 0.18, v)], color.filled()).into_dyn());
                        if value_labels {
                            let anchor = if v >= base { VPos::Bottom } else { VPos::Top };
                            elems.push(Text::new(fmt(v), (x, v), small_text(anchor, &TEXT)).into_dyn());
                        }
                    }
                    None => {
                        elems.push(Text::new("n/a".to_string(), (x, base), small_text(VPos::Bottom, &GRAY)).into_dyn())
                    }
                }
            }
        }
        chart.draw_series(elems)?;
        // Category labels, drawn here rather than by the mesh so that they can be rotated.
        for (i, label) in labels.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(i as f64, lo));
            let style = TextStyle::from((FONT, 12).into_font()).color(&TEXT);
            let style = if rotated {
                style.transform(FontTransform::Rotate270).pos(Pos::new(HPos::Right, VPos::Center))
            } else {
                style.pos(Pos::new(HPos::Center, VPos::Top))
            };
            root.draw(&Text::new(label.clone(), (x, y + 8), style))?;
        }
        // The legend, top right beside the caption, clear of the bars.
        let (w, _) = root.dim_in_pixel();
        for (k, (name, color)) in [("pre (base)", PRE), ("post (retrained)", POST)].into_iter().enumerate() {
            let x = w as i32 - 260 + 120 * k as i32;
            root.draw(&Rectangle::new([(x, 12), (x + 12, 24)], color.filled()))?;
            let style = TextStyle::from((FONT, 12).into_font()).color(&TEXT).pos(Pos::new(HPos::Left, VPos::Center));
            root.draw(&Text::new(name, (x + 18, 18), style))?;
        }
        Ok(())
    })
}

fn small_text(anchor: VPos, color: &'static RGBColor) -> TextStyle<'static> {
    TextStyle::from((FONT, 11).into_font()).color(color).pos(Pos::new(HPos::Center, anchor))
}

fn step_range(tr: &TrainingSummary) -> (f64, f64) {
    padded_range(tr.curves.iter().map(|p| p.step as f64), (0.0, 1.0))
}

fn best_step_line(
    chart: &mut ChartContext<
        '_,
        SVGBackend<'_>,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    tr: &TrainingSummary,
    y: (f64, f64),
) -> PlotResult {
    if let Some(s) = tr.best_step {
        let s = s as f64;
        chart
            .draw_series(DashedLineSeries::new([(s, y.0), (s, y.1)], 5, 4, GRAY.stroke_width(1)))?
            .label(format!("best step ({s})"))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 14, y)], GRAY.stroke_width(1)));
    }
    Ok(())
}

fn loss_chart(tr: &TrainingSummary) -> Result<String> {
    let train: Vec<(f64, f64)> =
        tr.curves.iter().filter_map(|p| Some((p.step as f64, defined(p.train_loss)?))).collect();
    let val: Vec<(f64, f64)> = tr.curves.iter().filter_map(|p| Some((p.step as f64, defined(p.val_loss)?))).collect();
    let x = step_range(tr);
    let top = train.iter().chain(&val).map(|p| p.1).fold(0.0_f64, f64::max);
    let y = (0.0, if top > 0.0 { top * 1.1 } else { 1.0 });
    svg_figure("training-loss", "Training and validation loss", (580, 400), false, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption("Training and validation loss", (FONT, 17))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(56)
            .build_cartesian_2d(x.0..x.1, y.0..y.1)?;
        chart
            .configure_mesh()
            .light_line_style(LIGHT.mix(0.5))
            .bold_line_style(LIGHT)
            .x_desc("optimizer step")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_desc("loss")
            .label_style((FONT, 12))
            .axis_desc_style((FONT, 13))
            .draw()?;
        if train.is_empty() && val.is_empty() {
            return no_data(root, "no training curves");
        }
        if !train.is_empty() {
            chart
                .draw_series(LineSeries::new(train.iter().copied(), PRE.stroke_width(2)))?
                .label("train loss")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 14, y)], PRE.stroke_width(2)));
        }
        if !val.is_empty() {
            chart
                .draw_series(LineSeries::new(val.iter().copied(), POST.stroke_width(2)).point_size(3))?
                .label("validation loss")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 14, y)], POST.stroke_width(2)));
        }
        best_step_line(&mut chart, tr, y)?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.75))
            .border_style(LIGHT)
            .label_font((FONT, 12))
            .draw()
    })
}

fn val_spearman_chart(tr: &TrainingSummary) -> Result<String> {
    let val: Vec<(f64, f64)> =
        tr.curves.iter().filter_map(|p| Some((p.step as f64, defined(p.val_spearman)?))).collect();
    let x = step_range(tr);
    let y = padded_range(val.iter().map(|p| p.1), (0.0, 1.0));
    let y = (y.0.max(-1.05), y.1.min(1.05));
    svg_figure("validation-spearman", "Validation Spearman ρ", (580, 400), false, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption("Validation Spearman ρ", (FONT, 17))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(56)
            .build_cartesian_2d(x.0..x.1, y.0..y.1)?;
        chart
            .configure_mesh()
            .light_line_style(LIGHT.mix(0.5))
            .bold_line_style(LIGHT)
            .x_desc("optimizer step")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_desc("Spearman ρ")
            .label_style((FONT, 12))
            .axis_desc_style((FONT, 13))
            .draw()?;
        if val.is_empty() {
            return no_data(root, "no validation points");
        }
        let green = COHORT_COLORS[4];
        chart
            .draw_series(LineSeries::new(val.iter().copied(), green.stroke_width(2)).point_size(3))?
            .label("validation Spearman ρ")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 14, y)], green.stroke_width(2)));
        best_step_line(&mut chart, tr, y)?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.75))
            .border_style(LIGHT)
            .label_font((FONT, 12))
            .draw()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cohort name that would run script if it reached the page unescaped.
    const HOSTILE: &str = "<script>document.title='pwned'</script>";
    /// A cohort name that would break a markdown table unescaped.
    const PIPES: &str = "mobile|app *beta*";
    const COHORTS: [&str; 5] = ["enterprise", "free-tier", PIPES, HOSTILE, "日本語 ja"];

    fn normal(rng: &mut impl rand::Rng) -> f64 {
        let u1: f64 = rng.random::<f64>().max(1e-12);
        let u2: f64 = rng.random();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    fn round(x: f64, d: i32) -> f64 {
        let k = 10f64.powi(d);
        (x * k).round() / k
    }

    fn corr(n: u64, r: f64, p: f64) -> Correlations {
        Correlations {
            n_samples: n,
            pearson_r: Some(round(r - 0.02, 3)),
            pearson_p: Some(p),
            pearson_ci: Some([round(r - 0.09, 3), round(r + 0.07, 3)]),
            spearman_r: Some(r),
            spearman_p: Some(p),
            spearman_ci: Some([round(r - 0.08, 3), round(r + 0.07, 3)]),
            kendall_tau: Some(round(r * 0.72, 3)),
            kendall_p: Some(p),
            kendall_ci: Some([round(r * 0.72 - 0.06, 3), round(r * 0.72 + 0.05, 3)]),
            group_mean_spearman: None,
            group_mean_kendall: None,
            groups_used: None,
        }
    }

    fn split(name: &str, count: u64, w: f64) -> SplitSummary {
        SplitSummary {
            split: name.into(),
            count,
            weight_sum: Some(round(count as f64 * w, 2)),
            weight_min: Some(0.25),
            weight_mean: Some(w),
            weight_max: Some(4.0),
            effective_size: Some(round(count as f64 * 0.71, 1)),
        }
    }

    /// A realistic report with every section filled, a cohort with undefined statistics
    /// ("tiny"), hostile cohort names and a non-finite training loss.
    pub(super) fn synthetic() -> ReportData {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let (mut pre_pts, mut post_pts) = (Vec::new(), Vec::new());
        for i in 0..500 {
            let cohort = COHORTS[[0, 0, 1, 1, 1, 2, 3, 4][i % 8]];
            let z = normal(&mut rng);
            let human = round((0.55 + 0.22 * z).clamp(0.0, 1.0), 3);
            let judge = (5.5 + 2.0 * (0.45 * z + 0.89 * normal(&mut rng))).round().clamp(1.0, 10.0);
            let p = 1.0 / (1.0 + (-1.6 * (0.7 * z + 0.71 * normal(&mut rng))).exp());
            pre_pts.push(ScatterPoint { eval_score: judge, human_score: human, cohort: cohort.into() });
            post_pts.push(ScatterPoint { eval_score: round(p, 4), human_score: human, cohort: cohort.into() });
        }
        let bins = |post: bool| -> Vec<ReliabilityBin> {
            (0..10)
                .map(|b| {
                    let c = (b as f64 + 0.5) / 10.0;
                    let count = if post && b == 0 { 0 } else { [6, 14, 30, 55, 80, 92, 70, 48, 25, 10][b] };
                    let observed = if post { c + 0.04 * (b as f64 - 4.5) / 4.5 } else { 0.5 + 0.45 * (c - 0.5) };
                    ReliabilityBin {
                        lower: b as f64 / 10.0,
                        upper: (b + 1) as f64 / 10.0,
                        count,
                        mean_predicted: (count > 0).then(|| round(c + 0.01, 3)),
                        observed: (count > 0).then(|| round(observed, 3)),
                    }
                })
                .collect()
        };
        let cohort_stats = |post: bool| -> Vec<CohortCorrelations> {
            let base = [(0.44, 310), (0.39, 240), (0.28, 80), (0.51, 75), (0.47, 70)];
            let mut v: Vec<CohortCorrelations> = COHORTS
                .iter()
                .zip(base)
                .map(|(c, (r, n))| {
                    let r = if post { round(r + 0.17, 3) } else { r };
                    CohortCorrelations { cohort: c.to_string(), stats: corr(n, r, 1e-6) }
                })
                .collect();
            v.push(CohortCorrelations {
                cohort: "tiny".into(),
                stats: Correlations { n_samples: 2, ..Default::default() },
            });
            v
        };
        let mut pre = corr(775, 0.431, 3.2e-36);
        pre.group_mean_spearman = Some(0.402);
        pre.group_mean_kendall = Some(0.301);
        pre.groups_used = Some(118);
        let mut post = corr(775, 0.612, 1.1e-80);
        post.group_mean_spearman = Some(0.577);
        post.group_mean_kendall = None;
        post.groups_used = Some(118);
        let curves = (1..=18)
            .map(|k| {
                let step = k * 10;
                let s = step as f64;
                let val = step % 60 == 0;
                CurvePoint {
                    step,
                    epoch: round(s / 60.0, 3),
                    train_loss: if step == 70 {
                        None
                    } else {
                        Some(round(0.25 + 0.45 * (-s / 70.0).exp() + 0.02 * (s / 7.0).sin(), 4))
                    },
                    val_loss: val.then(|| [0.47, 0.41, 0.43][(step / 60 - 1) as usize]),
                    val_spearman: val.then(|| [0.52, 0.61, 0.6][(step / 60 - 1) as usize]),
                }
            })
            .collect();
        let mut disagreements = BTreeMap::new();
        for (c, (n, a, b)) in
            COHORTS.iter().zip([(310, 71, 52), (240, 66, 49), (80, 30, 31), (75, 12, 9), (70, 20, 11)])
        {
            disagreements.insert(c.to_string(), Disagreements { n_samples: n, pre: a, post: b });
        }
        disagreements.insert("tiny".into(), Disagreements { n_samples: 2, pre: 1, post: 0 });
        ReportData {
            meta: ReportMeta {
                run_id: "2026-11-23-weekly".into(),
                created: "2026-11-23T06:00:00Z".into(),
                config_hash: Some("9f2c1e4ab3d0".into()),
                base_evaluator: Some("gpt-judge-v3".into()),
                new_evaluator: Some("runs/2026-11-23-weekly/model".into()),
                evalloop_version: "0.1.0".into(),
                ..ReportMeta::default()
            },
            pre: Agreement {
                overall: pre,
                ci_level: Some(0.95),
                ci_method: Some("fisher-z".into()),
                per_cohort: cohort_stats(false),
            },
            post: Agreement {
                overall: post,
                ci_level: Some(0.95),
                ci_method: Some("fisher-z".into()),
                per_cohort: cohort_stats(true),
            },
            calibration: PrePost {
                pre: Calibration {
                    n_samples: 775,
                    ece: Some(0.118),
                    brier: Some(0.231),
                    auc: Some(0.702),
                    reliability: bins(false),
                },
                post: Calibration {
                    n_samples: 775,
                    ece: Some(0.031),
                    brier: Some(0.174),
                    auc: None,
                    reliability: bins(true),
                },
            },
            dataset: DatasetSummary {
                window_start: Some("2026-11-16T00:00:00Z".into()),
                window_end: Some("2026-11-22T23:59:59Z".into()),
                splits: vec![split("train", 3100, 1.0), split("val", 390, 1.0), split("test", 775, 1.0)],
                per_cohort: COHORTS
                    .iter()
                    .chain(&["tiny"])
                    .enumerate()
                    .map(|(i, c)| CohortSplits {
                        cohort: c.to_string(),
                        splits: vec![
                            split("train", 1240 / (i as u64 + 1), 0.8),
                            split("val", 160 / (i as u64 + 1), 0.8),
                            split("test", 310 / (i as u64 + 1), 0.8),
                        ],
                    })
                    .collect(),
            },
            training: Some(TrainingSummary {
                base_model: Some("google-bert/bert-base-uncased".into()),
                epochs: 3,
                best_step: Some(120),
                best_val_spearman: Some(0.61),
                examples_per_sec: Some(41.7),
                wall_secs: Some(223.0),
                // A candidate name from the config file: escaped like the cohort names.
                selection: Some(format!("base kept by spearman: base 0.412 (validation, 3 groups), {HOSTILE} 0.2")),
                curves,
            }),
            gate: Some(GateDecision {
                promoted: true,
                reason: "new Spearman 0.612 beats base 0.431 by 0.181 (margin 0.02); Williams' t = 5.1, p < 0.05"
                    .into(),
                base_spearman: Some(0.431),
                new_spearman: Some(0.612),
                margin: 0.02,
                test: "williams".into(),
                statistic: Some(5.1),
                p_value: Some(2.0e-7),
                alpha: Some(0.05),
            }),
            disagreements_by_cohort: disagreements,
            scatter: PrePost { pre: Scatter::sample(pre_pts, 400), post: Scatter::sample(post_pts, 400) },
        }
    }

    /// The `<figure>` of one chart.
    fn figure<'a>(html: &'a str, id: &str) -> &'a str {
        let start = html.find(&format!(" id=\"chart-{id}\">")).unwrap_or_else(|| panic!("no figure for chart {id}"));
        let end = html[start..].find("</figure>").expect("figure closes") + start;
        &html[start..end]
    }

    #[test]
    fn json_round_trips() {
        let d = synthetic();
        let text = to_json(&d).unwrap();
        let back: ReportData = serde_json::from_str(&text).unwrap();
        assert_eq!(back, d);
        // The documented top-level keys.
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        for k in
            ["meta", "pre", "post", "calibration", "dataset", "training", "gate", "disagreements_by_cohort", "scatter"]
        {
            assert!(v.get(k).is_some(), "report.json lacks {k}");
        }
        assert_eq!(v["pre"]["spearman_r"], serde_json::json!(0.431));
        assert_eq!(v["pre"]["per_cohort"][0]["cohort"], "enterprise");
        assert_eq!(v["pre"]["per_cohort"][5]["spearman_r"], serde_json::Value::Null);
    }

    #[test]
    fn non_finite_statistics_are_written_as_null_and_read_back_as_none() {
        let mut d = synthetic();
        d.pre.overall.pearson_r = Some(f64::NAN);
        d.calibration.post.ece = Some(f64::INFINITY);
        d.training.as_mut().unwrap().curves[0].train_loss = Some(f64::NEG_INFINITY);
        let text = to_json(&d).unwrap();
        assert!(!text.contains("NaN") && !text.to_lowercase().contains("inf"), "non-finite number in report.json");
        let back: ReportData = serde_json::from_str(&text).unwrap();
        assert_eq!(back.pre.overall.pearson_r, None);
        assert_eq!(back.calibration.post.ece, None);
        assert_eq!(back.training.unwrap().curves[0].train_loss, None);
        // And the renderers show them as undefined rather than "NaN".
        let md = render_markdown(&d);
        let html = render_html(&d).unwrap();
        assert!(!md.contains("NaN") && !md.contains("inf"));
        assert!(!html.contains("NaN"));
    }

    #[test]
    fn a_non_finite_required_number_is_an_error_not_an_unreadable_file() {
        let mut d = synthetic();
        d.gate.as_mut().unwrap().margin = f64::NAN;
        let e = to_json(&d).unwrap_err();
        assert!(matches!(e, Error::Input(_)), "{e}");
        let dir = tempfile::tempdir().unwrap();
        assert!(write_report(dir.path(), &d).is_err());
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "nothing written on error");
    }

    #[test]
    fn html_has_every_chart_with_its_marks() {
        let d = synthetic();
        let html = render_html(&d).unwrap();
        assert_eq!(html.matches("<svg").count(), CHART_IDS.len());
        for id in CHART_IDS {
            assert!(html.contains(&format!("data-chart=\"{id}\"")), "no chart {id}");
            let f = figure(&html, id);
            assert_eq!(f.matches("<title>").count(), 1, "{id} has one <title>");
            assert!(f.contains("</svg>"), "{id} closes");
        }
        // Scatter: one circle per point (plus legend markers).
        for (id, s) in [("scatter-pre", &d.scatter.pre), ("scatter-post", &d.scatter.post)] {
            let circles = figure(&html, id).matches("<circle").count();
            assert!(circles >= s.points.len(), "{id}: {circles} circles for {} points", s.points.len());
        }
        assert!(figure(&html, "scatter-pre").contains("Base evaluator vs human, pre (ρ = 0.431)"));
        assert!(figure(&html, "scatter-pre").contains("400 of 500 requests shown"));
        // Reliability: the diagonal (dashed, so several segments), the curve, a dot per non-empty bin.
        let rel = figure(&html, "reliability-post");
        assert!(rel.contains("perfectly calibrated"));
        assert!(rel.matches("<polyline").count() >= 3, "diagonal dashes and the curve");
        assert!(rel.matches("<circle").count() >= 9, "a dot per non-empty bin");
        assert!(figure(&html, "reliability-pre").contains("ECE = 0.118"));
        // Bars: two per cohort with both values, "n/a" where undefined (cohort "tiny").
        let bars = figure(&html, "cohort-spearman");
        assert!(bars.matches("<rect").count() >= 2 * COHORTS.len());
        assert_eq!(bars.matches(">\nn/a\n<").count(), 1, "tiny: one n/a for both sides");
        let dis = figure(&html, "disagreements");
        assert!(dis.matches("<rect").count() >= 2 * 6);
        // Curves: train and validation loss lines, the best-step marker.
        let loss = figure(&html, "training-loss");
        assert!(loss.contains("train loss") && loss.contains("validation loss") && loss.contains("best step (120)"));
        assert!(loss.matches("<polyline").count() >= 3);
        assert!(figure(&html, "validation-spearman").matches("<circle").count() >= 3);
    }

    #[test]
    fn html_is_self_contained() {
        let html = render_html(&synthetic()).unwrap();
        let lower = html.to_lowercase();
        for banned in ["<script", "<link", "src=\"http", "href=\"http", "@import", "url("] {
            assert!(!lower.contains(banned), "report.html contains {banned}");
        }
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("Content-Security-Policy"));
    }

    #[test]
    fn hostile_cohort_names_are_escaped_everywhere() {
        let d = synthetic();
        let html = render_html(&d).unwrap();
        assert!(!html.to_lowercase().contains("<script"), "raw <script> in report.html");
        assert!(html.contains("&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;"), "escaped in tables");
        let md = render_markdown(&d);
        assert!(!md.to_lowercase().contains("<script"), "raw <script> in report.md");
        assert!(md.contains("&lt;script&gt;"));
        assert!(md.contains("| mobile\\|app \\*beta\\* |"), "pipes and emphasis escaped in markdown");
        for text in [&html, &md] {
            assert!(text.contains("Model selection") && text.contains("base kept by spearman"), "selection row");
        }
    }

    /// Splits a markdown table row into cells, honouring `\|`.
    fn md_cells(line: &str) -> Vec<String> {
        let mut cells = vec![String::new()];
        let mut chars = line.trim().chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    let next = chars.next().unwrap_or(' ');
                    cells.last_mut().unwrap().extend(['\\', next]);
                }
                '|' => cells.push(String::new()),
                c => cells.last_mut().unwrap().push(c),
            }
        }
        // Drop the empty cells outside the leading and trailing pipes.
        cells[1..cells.len() - 1].iter().map(|c| c.trim().to_string()).collect()
    }

    #[test]
    fn markdown_tables_are_well_formed() {
        let md = render_markdown(&synthetic());
        let lines: Vec<&str> = md.lines().collect();
        let mut tables = 0;
        let mut i = 0;
        while i < lines.len() {
            if lines[i].starts_with('|') {
                tables += 1;
                let width = md_cells(lines[i]).len();
                assert!(lines[i + 1].starts_with("|---"), "alignment row after {}", lines[i]);
                assert_eq!(md_cells(lines[i + 1]).len(), width, "{}", lines[i + 1]);
                let mut j = i + 2;
                while j < lines.len() && lines[j].starts_with('|') {
                    assert_eq!(md_cells(lines[j]).len(), width, "row {:?} of table {:?}", lines[j], lines[i]);
                    j += 1;
                }
                assert!(j == lines.len() || lines[j].is_empty(), "a blank line ends table {:?}", lines[i]);
                i = j;
            } else {
                i += 1;
            }
        }
        // headline, gate, cohorts, disagreements, calibration, 2 reliability, splits, cohort splits,
        // training, meta.
        assert_eq!(tables, 11);
        assert!(md.contains("**PROMOTED**"));
        assert!(md.contains("| Spearman ρ | 0.431 | 0.612 | +0.181 |"), "{md}");
        assert!(md.contains("| Spearman ρ 95% CI | \\[0.351, 0.501\\] | \\[0.532, 0.682\\] |   |"));
        assert!(md.contains("| Spearman ρ p | 3.2e-36 | 1.1e-80 |   |"));
        assert!(md.contains("| tiny | 2 | — | — | — | — | — | — | — |"), "undefined stats are dashes");
        assert!(md.contains("| AUC | 0.702 | — | — |"));
    }

    #[test]
    fn an_empty_report_still_renders_every_chart() {
        let d = ReportData::default();
        let html = render_html(&d).unwrap();
        assert_eq!(html.matches("<svg").count(), CHART_IDS.len());
        assert!(html.contains("NO GATE DECISION"));
        assert!(html.contains("no scored held-out requests") && html.contains("no training curves"));
        let md = render_markdown(&d);
        assert!(md.contains("| n | 0 | 0 |   |"));
        assert_eq!(serde_json::from_str::<ReportData>(&to_json(&d).unwrap()).unwrap(), d);
    }

    #[test]
    fn scatter_sample_is_capped_deterministic_and_ordered() {
        let pts: Vec<ScatterPoint> = (0..5000)
            .map(|i| ScatterPoint {
                eval_score: if i == 17 { f64::NAN } else { i as f64 },
                human_score: 0.5,
                cohort: format!("c{}", i % 3),
            })
            .collect();
        let a = Scatter::sample(pts.clone(), MAX_SCATTER_POINTS);
        let b = Scatter::sample(pts.clone(), MAX_SCATTER_POINTS);
        assert_eq!(a, b);
        assert_eq!(a.n_total, 4999);
        assert_eq!(a.points.len(), MAX_SCATTER_POINTS);
        assert!(a.points.windows(2).all(|w| w[0].eval_score < w[1].eval_score), "original order kept");
        assert!(a.points.iter().all(|p| p.eval_score.is_finite()));
        let small = Scatter::sample(pts.into_iter().take(10), MAX_SCATTER_POINTS);
        assert_eq!(small.points.len(), 10);
    }

    #[test]
    fn write_report_writes_three_files_and_render_rereads_them() {
        let dir = tempfile::tempdir().unwrap();
        let d = synthetic();
        write_report(&dir.path().join("run"), &d).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(dir.path().join("run"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [HTML_FILE, JSON_FILE, MD_FILE], "no temporary files left");
        let out = dir.path().join("again");
        let back = render(&dir.path().join("run").join(JSON_FILE), &out).unwrap();
        assert_eq!(back, d);
        for f in [JSON_FILE, MD_FILE, HTML_FILE] {
            assert_eq!(
                std::fs::read(dir.path().join("run").join(f)).unwrap(),
                std::fs::read(out.join(f)).unwrap(),
                "{f} re-renders identically"
            );
        }
    }

    #[test]
    fn a_newer_schema_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(JSON_FILE);
        std::fs::write(&p, r#"{"meta": {"schema_version": 99}}"#).unwrap();
        let e = read_report(&p).unwrap_err();
        assert!(e.to_string().contains("schema version 99"), "{e}");
        std::fs::write(&p, r#"{"pre": {"spearman_r": "high"}}"#).unwrap();
        let e = read_report(&p).unwrap_err();
        assert!(matches!(e, Error::Input(_)) && e.to_string().contains("line 1"), "{e}");
    }

    /// tests/data/report-synthetic.json is this module's synthetic report, used by the browser
    /// test and scripts/screenshot-report.sh. Regenerate with `EVALLOOP_BLESS=1 cargo test`.
    #[test]
    fn synthetic_fixture_is_current() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/report-synthetic.json");
        let text = to_json(&synthetic()).unwrap();
        if std::env::var_os("EVALLOOP_BLESS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &text).unwrap();
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(on_disk == text, "{} is stale; rerun with EVALLOOP_BLESS=1", path.display());
    }
}
