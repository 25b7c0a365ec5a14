//! report.json's schema: [`ReportData`] and every section in it, as serde structs.

use std::collections::BTreeMap;

use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::{SCATTER_SEED, SCHEMA_VERSION};

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
    /// Agreement between people and the human ceiling beside the pre/post evaluators; absent
    /// when the run did not measure it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub human_ceiling: Option<super::HumanCeilingSection>,
    /// Both evaluators' pairwise accuracy against people's preferences on the held-out pairs;
    /// absent when the dataset has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferences: Option<super::PreferenceSection>,
    /// The base evaluator's agreement and the mean human score by week over the whole store,
    /// with the promotions of earlier runs; absent in reports written without it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<History>,
}

/// Figures by ISO week (UTC) over the store, for the time-series charts (`evalloop trend`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct History {
    /// The evaluator the agreement is of.
    pub evaluator: String,
    /// One point per week with requests, oldest first.
    pub points: Vec<HistoryPoint>,
    /// Runs whose gate promoted a new evaluator, by the week they started in.
    pub promotions: Vec<Promotion>,
}

/// One week of [`History`]; undefined figures are `None`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HistoryPoint {
    /// ISO week, as `2026-W50`.
    pub week: String,
    /// Requests the evaluator scored that week.
    pub requests: usize,
    /// Of those, requests with a human score.
    pub labelled: usize,
    /// Spearman's rho between evaluator and human scores.
    pub agreement: Option<f64>,
    /// Its 95% Fisher-z interval.
    pub agreement_ci: Option<[f64; 2]>,
    /// The mean human score (PPI++, stratified by cohort).
    pub human_score: Option<f64>,
    /// Its 95% interval.
    pub human_score_ci: Option<[f64; 2]>,
}

/// A promotion event of [`History`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Promotion {
    /// ISO week the run started in.
    pub week: String,
    /// The run's id.
    pub run_id: String,
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
    /// The base evaluator's held-out figure (`metric`).
    pub base_spearman: Option<f64>,
    /// The retrained evaluator's held-out figure (`metric`).
    pub new_spearman: Option<f64>,
    /// What the two figures are: `"spearman"` (over every held-out request) or
    /// `"group_spearman"` (mean within-group Spearman over the held-out groups).
    #[serde(default = "spearman_metric")]
    pub metric: String,
    /// The required improvement `new - base` (config `[run] margin`).
    pub margin: f64,
    /// The significance test: `"williams"`, `"paired_bootstrap"` or `"paired_t"`.
    pub test: String,
    /// The test statistic (Williams' t; for the bootstrap, the mean difference).
    pub statistic: Option<f64>,
    /// The test's one-sided p-value for `new > base`.
    pub p_value: Option<f64>,
    /// The significance level the p-value was compared with, e.g. `0.05`.
    pub alpha: Option<f64>,
}

fn spearman_metric() -> String {
    "spearman".into()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::MAX_SCATTER_POINTS;

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
}
