//! Turns labelled feedback into cohort-weighted, leakage-free train/validation/test splits.
//!
//! `evalloop dataset build --config FILE --out DIR` reads every request with an evaluator score
//! and a human score (the `[human]` policy, see [`crate::feedback`]) from the store and writes
//! `train.jsonl`, `validation.jsonl`, `test.jsonl` (fields `cohort`, `group`, `is_disagreement`,
//! `label`, `output`, `prompt`, `request_id`, `weight`, rows sorted by `request_id`) and
//! `dataset_card.json` + `dataset_card.md`. Same config and same store give byte-identical files.
//!
//! # Labels
//! `label = "binary"` (default): good (human score `>= good_min`) is 1, bad (`<= bad_max`) is 0,
//! neutral requests are dropped. `"graded"`: `(human_score - 1) / 4`, in [0, 1], all requests.
//!
//! # Dimension labels (multi-task)
//! With `dimensions = ["coherence", "relevance"]` (default none) every row also gets
//! `labels: {"coherence": 0.75, "relevance": null}`: the request's mean rating on each
//! dimension (feedback events with that `dimension`, the store's `dimension_ratings`) mapped as
//! graded labels are, `(h - 1) / 4`, or `null` when the request has no rating on it. `label`
//! stays the primary label from the human-score policy, which never counts dimension ratings;
//! a request needs a primary label to be a row. The card gains per-dimension label counts.
//!
//! # Disagreements
//! The evaluator says good when `eval_score > eval_threshold` (default 0.7, as in the feedback-loop article). A request
//! is a disagreement when the evaluator says good and the human verdict is bad, or the evaluator
//! does not say good and the human verdict is good. A neutral human verdict never disagrees.
//! `source = "all"` (default) keeps every labelled request with disagreements marked;
//! `"disagreements"` keeps only those (the article's narrower set).
//!
//! # Weights
//! Each scheme in `weighting` is a factor; an example's weight is their product. Cohort rates come
//! from the store over all logged requests of the cohort: with `rate = "feedback"` (default, as in
//! the feedback-loop article) `r_c = with_feedback_c / requests_c` (any feedback event), `"explicit"` counts requests
//! with explicit feedback, `"labelled"` requests with a human score under the policy (the
//! probability that a request enters this dataset, the right one for `ipw` when implicit events
//! carry no score).
//!
//! - `none`: 1.
//! - `inverse_rate`: `1 / (r_c + 0.01)` (the article's).
//! - `ipw`: `min(1 / r~_c, max_weight)` with the smoothed rate
//!   `r~_c = (k_c + a * r) / (n_c + a)`, where `k_c / n_c` is the cohort's rate as counts,
//!   `r = sum k / sum n` the overall rate and `a = ipw_smoothing` (default 1 pseudo-request);
//!   `max_weight` defaults to 20.
//! - `class_balance`: `N / (K * N_k)` for an example of class k (good/bad for binary,
//!   good/neutral/bad for graded), N examples and K classes present, counted after `source`.
//! - `disagreement_boost`: `disagreement_boost` (default 2) for disagreements, 1 otherwise.
//! - `normalize`: applied last whatever its position: every weight is divided by the mean weight
//!   of the train split, so train weights average 1 (validation and test use the same divisor).
//!
//! Per split and cohort the card reports counts, weight sums and Kish's effective sample size
//! `(sum w)^2 / sum w^2`; a split-cohort cell with an effective size below `min_effective_size`
//! (default 30) gets a warning.
//!
//! # Subsampling (`max_examples`)
//! When there are more examples than `max_examples`, strata (cohort x class) are sampled without
//! replacement: stratum s with `N_s` examples keeps `m_s` of them, its proportional share of
//! `max_examples` by largest remainders, raised to `min(N_s, min_per_stratum)` (default 10), and each
//! kept weight is multiplied by `N_s / m_s` (Horvitz-Thompson: inclusion probability `m_s / N_s`),
//! so every stratum's weighted total is preserved in expectation. Subsampling runs before the
//! split; the floors can make the total exceed `max_examples` slightly.
//!
//! # Splits
//! Groups are the value of metadata `group_key` (default: none, a hash of the prompt; a request
//! without the key falls back to the hash too). A group's stratum is its most common cohort x class.
//! Groups are ordered by stratum and, within a stratum, by a seeded shuffle; each in turn goes to
//! the split whose example count falls furthest below its target share (`train_fraction`,
//! default 0.8, `validation_fraction`, default 0.1, test the rest). The result is a systematic,
//! stratified assignment where counts allow, exact overall fractions up to a group's size, and no
//! group in two splits.
//!
//! # Unlabelled outputs (`unlabelled`)
//! With `unlabelled = N` (default 0: none) the build also writes `unlabelled.jsonl` (fields
//! `cohort`, `group`, `output`, `prompt`, `request_id`, sorted by `request_id`): up to N logged
//! requests of the window that have no human score, drawn by a seeded shuffle, leaving out every
//! request whose group is in the validation or test split (so nothing of an evaluation group
//! reaches training). Training uses them only for self-supervised ranking pairs
//! (`[train] unlabelled`, `corruption_pairs`): the logged output against a corrupted copy of itself.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::atomic::{self, AtomicWriter};
use crate::feedback::{HumanPolicy, Verdict};
use crate::files::{
    CARD_FILE, CohortCard, DatasetCard, DatasetRow, DimensionCard, Label, SplitCard, UNLABELLED_FILE, UnlabelledRow,
};
use crate::hash::hash64;
use crate::store::{CohortStats, Filter, ScoredQuery, Store};
use crate::{Error, Result};

/// The cohort name used for requests without `metadata.user_cohort`.
pub const NO_COHORT: &str = "(none)";

pub use crate::files::LabelKind;

/// Which labelled requests become examples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    All,
    Disagreements,
}

/// One weighting factor; see the module docs for each formula.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scheme {
    None,
    InverseRate,
    Ipw,
    ClassBalance,
    DisagreementBoost,
    Normalize,
}

/// Which count makes a cohort's rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RateBasis {
    /// Requests with any feedback event (the article's).
    Feedback,
    /// Requests with explicit feedback.
    Explicit,
    /// Requests with a human score under the policy.
    Labelled,
}

/// `[dataset]`: every key optional; defaults on each field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatasetConfig {
    /// `binary` (default) or `graded`.
    pub label: LabelKind,
    /// `all` (default) or `disagreements`.
    pub source: SourceKind,
    /// Weight factors, multiplied; default `["ipw", "normalize"]`.
    pub weighting: Vec<Scheme>,
    /// Metadata field naming an example's group; default none (a hash of the prompt).
    pub group_key: Option<String>,
    /// Share of examples in train; default 0.8.
    pub train_fraction: f64,
    /// Share of examples in validation; default 0.1 (test gets the rest).
    pub validation_fraction: f64,
    /// Seed of the split and subsampling shuffles; default 7.
    pub seed: u64,
    /// Subsample to about this many examples; default none (keep all).
    pub max_examples: Option<usize>,
    /// Least examples a subsampled stratum keeps (when it has them); default 10.
    pub min_per_stratum: usize,
    /// The evaluator says good above this `overall`; default 0.7.
    pub eval_threshold: f64,
    /// `feedback` (default), `explicit` or `labelled`: what a cohort's rate counts.
    pub rate: RateBasis,
    /// `ipw` additive smoothing, in pseudo-requests at the overall rate; default 1.
    pub ipw_smoothing: f64,
    /// `ipw` clip; default 20.
    pub max_weight: f64,
    /// `disagreement_boost` factor k; default 2.
    pub disagreement_boost: f64,
    /// Warn when a split-cohort cell's Kish effective size is below this; default 30.
    pub min_effective_size: f64,
    /// Whose scores to use; default the store's only evaluator (an error when there are several).
    pub evaluator: Option<String>,
    /// Human dimensions whose ratings become per-row `labels` (see the module docs); default
    /// none (rows as without multi-task).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dimensions: Vec<String>,
    /// Write up to this many logged requests without a human score to `unlabelled.jsonl` (see
    /// the module docs); default 0 (none).
    #[serde(skip_serializing_if = "is_zero")]
    pub unlabelled: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Default for DatasetConfig {
    fn default() -> Self {
        DatasetConfig {
            label: LabelKind::Binary,
            source: SourceKind::All,
            weighting: vec![Scheme::Ipw, Scheme::Normalize],
            group_key: None,
            train_fraction: 0.8,
            validation_fraction: 0.1,
            seed: 7,
            max_examples: None,
            min_per_stratum: 10,
            eval_threshold: 0.7,
            rate: RateBasis::Feedback,
            ipw_smoothing: 1.0,
            max_weight: 20.0,
            disagreement_boost: 2.0,
            min_effective_size: 30.0,
            evaluator: None,
            dimensions: Vec::new(),
            unlabelled: 0,
        }
    }
}

impl DatasetConfig {
    /// Checks ranges; errors name the key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let (t, v) = (self.train_fraction, self.validation_fraction);
        if !(t > 0.0 && t <= 1.0) {
            return Err(format!("train_fraction = {t} is outside (0, 1]"));
        }
        if !(0.0..1.0).contains(&v) || t + v > 1.0 + 1e-9 {
            return Err(format!("validation_fraction = {v} must be in [0, 1) with train_fraction + it <= 1"));
        }
        if self.weighting.is_empty() {
            return Err("weighting is empty; use [\"none\"] for unit weights".into());
        }
        if !(self.ipw_smoothing >= 0.0 && self.ipw_smoothing.is_finite()) {
            return Err(format!("ipw_smoothing = {} must be >= 0", self.ipw_smoothing));
        }
        if self.max_weight.is_nan() || self.max_weight < 1.0 {
            return Err(format!("max_weight = {} must be >= 1", self.max_weight));
        }
        if !(self.disagreement_boost > 0.0 && self.disagreement_boost.is_finite()) {
            return Err(format!("disagreement_boost = {} must be positive", self.disagreement_boost));
        }
        if !(0.0..=1.0).contains(&self.eval_threshold) {
            return Err(format!("eval_threshold = {} is outside [0, 1]", self.eval_threshold));
        }
        if self.max_examples == Some(0) {
            return Err("max_examples = 0 keeps nothing".into());
        }
        if self.group_key.as_ref().is_some_and(|k| k.trim().is_empty()) {
            return Err("group_key is empty".into());
        }
        crate::record::check_dimension_list(&self.dimensions).map_err(|e| format!("dimensions{e}"))
    }
}

/// One labelled request, the unit every pure step below works on.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub request_id: String,
    pub prompt: String,
    pub output: String,
    /// 0/1 (binary) or in [0, 1] (graded).
    pub label: f64,
    /// `good`, `neutral` or `bad`: the human verdict, the class for stratification and balance.
    pub class: &'static str,
    /// Human score, 1-5.
    pub human_score: f64,
    /// Evaluator `overall`, in [0, 1].
    pub eval_score: f64,
    pub cohort: String,
    pub group: String,
    pub is_disagreement: bool,
    /// The product of the weighting factors so far.
    pub weight: f64,
    /// Per configured dimension, `(mean rating - 1) / 4`, or `None` without a rating on it.
    pub labels: BTreeMap<String, Option<f64>>,
}

/// A cohort's feedback counts, from [`Store::cohort_stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct CohortRate {
    /// Logged requests.
    pub requests: u64,
    /// Requests that count towards the rate under the chosen basis.
    pub counted: u64,
}

impl CohortRate {
    /// `counted / requests` (0 for an empty cohort).
    pub fn rate(&self) -> f64 {
        if self.requests == 0 { 0.0 } else { self.counted as f64 / self.requests as f64 }
    }
}

/// The feedback-loop article's `1 / (rate + 0.01)`.
pub fn inverse_rate_weight(rate: f64) -> f64 {
    1.0 / (rate + 0.01)
}

/// `min(1 / ((k + a r) / (n + a)), max_weight)`: inverse probability with additive smoothing
/// towards the overall rate `r`, clipped. A smoothed rate of 0 gives `max_weight`.
pub fn ipw_weight(counted: u64, requests: u64, overall_rate: f64, smoothing: f64, max_weight: f64) -> f64 {
    let denom = requests as f64 + smoothing;
    let r = if denom > 0.0 { (counted as f64 + smoothing * overall_rate) / denom } else { 0.0 };
    if r <= 0.0 { max_weight } else { (1.0 / r).min(max_weight) }
}

/// `N / (K * N_k)` per example, for the classes given.
pub fn class_balance_factors(classes: &[&str]) -> Vec<f64> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for c in classes {
        *counts.entry(c).or_insert(0) += 1;
    }
    let (n, k) = (classes.len() as f64, counts.len() as f64);
    classes.iter().map(|c| n / (k * counts[c] as f64)).collect()
}

/// Kish's effective sample size `(sum w)^2 / sum w^2`; 0 for no weights.
pub fn kish_ess(weights: impl IntoIterator<Item = f64>) -> f64 {
    let (s, s2) = weights.into_iter().fold((0.0, 0.0), |(s, s2), w| (s + w, s2 + w * w));
    if s2 > 0.0 { s * s / s2 } else { 0.0 }
}

/// The overall rate `sum counted / sum requests`.
pub fn overall_rate(rates: &BTreeMap<String, CohortRate>) -> f64 {
    let (k, n) = rates.values().fold((0u64, 0u64), |(k, n), r| (k + r.counted, n + r.requests));
    if n == 0 { 0.0 } else { k as f64 / n as f64 }
}

/// Multiplies each example's weight by every scheme's factor except `normalize` (see
/// [`normalize_on`]). Returns each cohort's factor per cohort-level scheme, for the card.
pub fn apply_weights(
    examples: &mut [Example],
    rates: &BTreeMap<String, CohortRate>,
    cfg: &DatasetConfig,
) -> BTreeMap<String, BTreeMap<&'static str, f64>> {
    let overall = overall_rate(rates);
    let mut factors: BTreeMap<String, BTreeMap<&'static str, f64>> = BTreeMap::new();
    for (c, r) in rates {
        let f = factors.entry(c.clone()).or_default();
        f.insert("inverse_rate", inverse_rate_weight(r.rate()));
        f.insert("ipw", ipw_weight(r.counted, r.requests, overall, cfg.ipw_smoothing, cfg.max_weight));
    }
    let balance = {
        let classes: Vec<&str> = examples.iter().map(|e| e.class).collect();
        class_balance_factors(&classes)
    };
    for (e, cb) in examples.iter_mut().zip(balance) {
        for s in &cfg.weighting {
            let f = match s {
                Scheme::None | Scheme::Normalize => 1.0,
                Scheme::InverseRate => {
                    factors.get(&e.cohort).and_then(|f| f.get("inverse_rate")).copied().unwrap_or(1.0)
                }
                Scheme::Ipw => factors.get(&e.cohort).and_then(|f| f.get("ipw")).copied().unwrap_or(1.0),
                Scheme::ClassBalance => cb,
                Scheme::DisagreementBoost if e.is_disagreement => cfg.disagreement_boost,
                Scheme::DisagreementBoost => 1.0,
            };
            e.weight *= f;
        }
    }
    factors
}

/// Divides every weight by the mean weight of the examples where `on` is true; returns the divisor.
pub fn normalize_on(weights: &mut [f64], on: &[bool]) -> f64 {
    let (s, n) = weights.iter().zip(on).filter(|(_, o)| **o).fold((0.0, 0usize), |(s, n), (w, _)| (s + w, n + 1));
    let mean = if n > 0 && s > 0.0 { s / n as f64 } else { 1.0 };
    for w in weights.iter_mut() {
        *w /= mean;
    }
    mean
}

/// What subsampling did to one stratum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StratumSample {
    pub cohort: String,
    pub class: String,
    pub available: usize,
    pub kept: usize,
    /// `available / kept`, the factor on kept weights.
    pub inflation: f64,
}

/// Keeps about `max_examples` examples, stratified by cohort x class (see the module docs);
/// kept weights are inflated by `N_s / m_s`. Output is sorted by request id.
pub fn subsample(
    mut examples: Vec<Example>,
    max_examples: usize,
    min_per_stratum: usize,
    seed: u64,
) -> (Vec<Example>, Vec<StratumSample>) {
    let n = examples.len();
    if n <= max_examples {
        return (examples, Vec::new());
    }
    examples.sort_by(|a, b| a.request_id.cmp(&b.request_id));
    let mut strata: BTreeMap<(String, &'static str), Vec<Example>> = BTreeMap::new();
    for e in examples {
        strata.entry((e.cohort.clone(), e.class)).or_default().push(e);
    }
    // Proportional allocation by largest remainders.
    let quotas: Vec<f64> = strata.values().map(|v| max_examples as f64 * v.len() as f64 / n as f64).collect();
    let mut alloc: Vec<usize> = quotas.iter().map(|q| q.floor() as usize).collect();
    let mut rest = max_examples.saturating_sub(alloc.iter().sum());
    let mut by_remainder: Vec<usize> = (0..quotas.len()).collect();
    by_remainder
        .sort_by(|&a, &b| (quotas[b] - quotas[b].floor()).total_cmp(&(quotas[a] - quotas[a].floor())).then(a.cmp(&b)));
    for i in by_remainder {
        if rest == 0 {
            break;
        }
        alloc[i] += 1;
        rest -= 1;
    }
    let mut kept = Vec::new();
    let mut report = Vec::new();
    for (((cohort, class), mut items), m) in strata.into_iter().zip(alloc) {
        let available = items.len();
        let m = m.max(min_per_stratum.min(available)).min(available).max(1);
        items.shuffle(&mut ChaCha8Rng::seed_from_u64(hash64(&[&seed.to_string(), "subsample", &cohort, class])));
        let inflation = available as f64 / m as f64;
        for mut e in items.into_iter().take(m) {
            e.weight *= inflation;
            kept.push(e);
        }
        report.push(StratumSample { cohort, class: class.to_string(), available, kept: m, inflation });
    }
    kept.sort_by(|a, b| a.request_id.cmp(&b.request_id));
    (kept, report)
}

/// The three splits, in file order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Validation,
    Test,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Validation, Split::Test];

    /// `train`, `validation`, `test`.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Validation => "validation",
            Split::Test => "test",
        }
    }
}

/// Assigns each group to a split (see the module docs); returns group -> split.
pub fn assign_splits(examples: &[Example], train: f64, validation: f64, seed: u64) -> BTreeMap<String, Split> {
    let targets = [train, validation, (1.0 - train - validation).max(0.0)];
    let mut groups: BTreeMap<&str, BTreeMap<(&str, &str), usize>> = BTreeMap::new();
    for e in examples {
        *groups.entry(&e.group).or_default().entry((&e.cohort, e.class)).or_insert(0) += 1;
    }
    let mut by_stratum: BTreeMap<(&str, &str), Vec<(&str, usize)>> = BTreeMap::new();
    for (g, cells) in &groups {
        // Most common cell; ties go to the smallest key (BTreeMap order, max_by keeps the last max).
        let (stratum, _) = cells.iter().rev().max_by_key(|(_, n)| **n).map(|(k, n)| (*k, *n)).unwrap_or((("", ""), 0));
        by_stratum.entry(stratum).or_default().push((g, cells.values().sum()));
    }
    let mut assigned = [0usize; 3];
    let mut total = 0usize;
    let mut out = BTreeMap::new();
    for ((cohort, class), mut gs) in by_stratum {
        gs.shuffle(&mut ChaCha8Rng::seed_from_u64(hash64(&[&seed.to_string(), "split", cohort, class])));
        for (g, size) in gs {
            let after = (total + size) as f64;
            let mut best = 0;
            let mut best_deficit = f64::NEG_INFINITY;
            for (i, t) in targets.iter().enumerate() {
                if *t <= 0.0 {
                    continue;
                }
                let deficit = t * after - assigned[i] as f64;
                if deficit > best_deficit + 1e-12 {
                    best = i;
                    best_deficit = deficit;
                }
            }
            assigned[best] += size;
            total += size;
            out.insert(g.to_string(), Split::ALL[best]);
        }
    }
    out
}

/// Counts and weight statistics of a set of examples.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CellStats {
    pub examples: usize,
    pub good: usize,
    pub neutral: usize,
    pub bad: usize,
    pub disagreements: usize,
    pub label_mean: f64,
    pub weighted_label_mean: f64,
    pub weight_sum: f64,
    pub weight_min: f64,
    pub weight_max: f64,
    /// Kish's `(sum w)^2 / sum w^2`.
    pub effective_size: f64,
}

impl CellStats {
    /// Accumulates the statistics of `examples`.
    pub fn of<'a>(examples: impl IntoIterator<Item = &'a Example>) -> CellStats {
        let mut s = CellStats { weight_min: f64::INFINITY, weight_max: f64::NEG_INFINITY, ..Default::default() };
        let (mut lsum, mut wl, mut w2) = (0.0, 0.0, 0.0);
        for e in examples {
            s.examples += 1;
            match e.class {
                "good" => s.good += 1,
                "bad" => s.bad += 1,
                _ => s.neutral += 1,
            }
            s.disagreements += usize::from(e.is_disagreement);
            lsum += e.label;
            wl += e.weight * e.label;
            s.weight_sum += e.weight;
            w2 += e.weight * e.weight;
            s.weight_min = s.weight_min.min(e.weight);
            s.weight_max = s.weight_max.max(e.weight);
        }
        if s.examples == 0 {
            s.weight_min = 0.0;
            s.weight_max = 0.0;
            return s;
        }
        s.label_mean = r6(lsum / s.examples as f64);
        s.weighted_label_mean = if s.weight_sum > 0.0 { r6(wl / s.weight_sum) } else { 0.0 };
        s.effective_size = if w2 > 0.0 { r6(s.weight_sum * s.weight_sum / w2) } else { 0.0 };
        s.weight_sum = r6(s.weight_sum);
        s.weight_min = r6(s.weight_min);
        s.weight_max = r6(s.weight_max);
        s
    }
}

/// Rounds to 6 decimals, the precision of every float evalloop writes into a dataset.
pub fn r6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// The result of [`build`]: the summary for people and the card.
#[derive(Debug, Clone)]
pub struct Built {
    pub text: String,
    pub card: DatasetCard,
    pub warnings: Vec<String>,
}

/// Builds the dataset from the store into `out` (created if needed).
pub fn build(store: &dyn Store, policy: &HumanPolicy, cfg: &DatasetConfig, out: &Path) -> Result<Built> {
    build_in(store, &Filter::default(), policy, cfg, out)
}

/// Builds the dataset from the requests in `window` (time range, cohort, metadata; its
/// evaluator is ignored: `cfg.evaluator` picks it) into `out`.
pub fn build_in(
    store: &dyn Store,
    window: &Filter,
    policy: &HumanPolicy,
    cfg: &DatasetConfig,
    out: &Path,
) -> Result<Built> {
    cfg.validate().map_err(|e| Error::Input(format!("[dataset]: {e}")))?;
    let evaluators = store.evaluators()?;
    let evaluator = match &cfg.evaluator {
        Some(e) if evaluators.contains(e) => e.clone(),
        Some(e) => {
            return Err(Error::Input(format!(
                "[dataset] evaluator {e:?} has no scores in the store (it has: {})",
                evaluators.join(", ")
            )));
        }
        None if evaluators.len() == 1 => evaluators[0].clone(),
        None if evaluators.is_empty() => {
            return Err(Error::Input(format!("store {} has no scored requests", store.location())));
        }
        None => {
            return Err(Error::Input(format!(
                "the store has several evaluators ({}); set [dataset] evaluator",
                evaluators.join(", ")
            )));
        }
    };
    let filter = Filter { evaluator: Some(evaluator.clone()), ..window.clone() };
    let rows = store.scored_requests(&ScoredQuery {
        filter: filter.clone(),
        policy: policy.clone(),
        group_key: cfg.group_key.clone(),
        with_text: true,
        limit: None,
    })?;
    let stats = store.cohort_stats(&filter, policy)?;
    let rates = cohort_rates(&stats, cfg.rate);
    let mut dimension_means: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for d in store.dimension_scores(&cfg.dimensions)? {
        dimension_means.entry(d.request_id).or_default().insert(d.dimension, d.mean);
    }

    let candidates = rows.len();
    let (mut dropped_neutral, mut dropped_agreeing) = (0usize, 0usize);
    let mut examples = Vec::new();
    for r in rows {
        let Some(text) = r.text else { continue };
        let verdict = policy.verdict(r.human_score);
        let class = match verdict {
            Verdict::Good => "good",
            Verdict::Neutral => "neutral",
            Verdict::Bad => "bad",
        };
        let label = match (cfg.label, verdict) {
            (LabelKind::Binary, Verdict::Neutral) => {
                dropped_neutral += 1;
                continue;
            }
            (LabelKind::Binary, Verdict::Good) => 1.0,
            (LabelKind::Binary, Verdict::Bad) => 0.0,
            (LabelKind::Graded, _) => ((r.human_score - 1.0) / 4.0).clamp(0.0, 1.0),
        };
        let is_disagreement = is_disagreement(r.eval_score, cfg.eval_threshold, verdict);
        if cfg.source == SourceKind::Disagreements && !is_disagreement {
            dropped_agreeing += 1;
            continue;
        }
        let group = r.group.unwrap_or_else(|| prompt_group(&text.prompt));
        let means = dimension_means.get(&r.request_id);
        let labels = cfg
            .dimensions
            .iter()
            .map(|d| {
                let h = means.and_then(|m| m.get(d));
                (d.clone(), h.map(|h| ((h - 1.0) / 4.0).clamp(0.0, 1.0)))
            })
            .collect();
        examples.push(Example {
            request_id: r.request_id,
            prompt: text.prompt,
            output: text.output,
            label,
            class,
            human_score: r.human_score,
            eval_score: r.eval_score,
            cohort: r.cohort.unwrap_or_else(|| NO_COHORT.to_string()),
            group,
            is_disagreement,
            weight: 1.0,
            labels,
        });
    }
    if examples.is_empty() {
        return Err(Error::Input(format!(
            "no examples: {candidates} requests with a human score, {dropped_neutral} neutral dropped, \
             {dropped_agreeing} agreeing dropped (source = disagreements)"
        )));
    }
    let factors = apply_weights(&mut examples, &rates, cfg);
    let available = examples.len();
    let (mut examples, strata) = match cfg.max_examples {
        Some(m) => subsample(examples, m, cfg.min_per_stratum, cfg.seed),
        None => (examples, Vec::new()),
    };
    let splits = assign_splits(&examples, cfg.train_fraction, cfg.validation_fraction, cfg.seed);
    let split_of = |e: &Example| splits.get(&e.group).copied().unwrap_or(Split::Train);
    let mut divisor = 1.0;
    if cfg.weighting.contains(&Scheme::Normalize) {
        let on: Vec<bool> = examples.iter().map(|e| split_of(e) == Split::Train).collect();
        let mut w: Vec<f64> = examples.iter().map(|e| e.weight).collect();
        divisor = normalize_on(&mut w, &on);
        for (e, w) in examples.iter_mut().zip(w) {
            e.weight = w;
        }
    }
    examples.sort_by(|a, b| a.request_id.cmp(&b.request_id));

    // Statistics and warnings.
    let mut warnings = Vec::new();
    let mut split_cards = BTreeMap::new();
    let mut text = format!(
        "dataset: {} examples ({} label, source {}, weighting {}) from evaluator {evaluator}\n",
        examples.len(),
        name_of(&cfg.label),
        name_of(&cfg.source),
        cfg.weighting.iter().map(name_of).collect::<Vec<_>>().join("+"),
    );
    let _ = writeln!(
        text,
        "  {:<10} {:<14} {:>8} {:>6} {:>6} {:>10} {:>10} {:>10}",
        "split", "cohort", "examples", "good", "bad", "label", "weight", "ess"
    );
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    for split in Split::ALL {
        let in_split: Vec<&Example> = examples.iter().filter(|e| split_of(e) == split).collect();
        let all = CellStats::of(in_split.iter().copied());
        let cohorts: BTreeSet<&str> = in_split.iter().map(|e| e.cohort.as_str()).collect();
        let mut by_cohort = BTreeMap::new();
        for c in cohorts {
            let cell = CellStats::of(in_split.iter().copied().filter(|e| e.cohort == c));
            let _ = writeln!(
                text,
                "  {:<10} {:<14} {:>8} {:>6} {:>6} {:>10.4} {:>10.3} {:>10.1}",
                split.name(),
                c,
                cell.examples,
                cell.good,
                cell.bad,
                cell.weighted_label_mean,
                cell.weight_sum,
                cell.effective_size
            );
            if cell.effective_size < cfg.min_effective_size {
                warnings.push(format!(
                    "{} split, cohort {c}: effective sample size {:.1} is below {} ({} examples)",
                    split.name(),
                    cell.effective_size,
                    cfg.min_effective_size,
                    cell.examples
                ));
            }
            by_cohort.insert(c.to_string(), cell);
        }
        let _ = writeln!(
            text,
            "  {:<10} {:<14} {:>8} {:>6} {:>6} {:>10.4} {:>10.3} {:>10.1}",
            split.name(),
            "(all)",
            all.examples,
            all.good,
            all.bad,
            all.weighted_label_mean,
            all.weight_sum,
            all.effective_size
        );
        if all.examples == 0 {
            warnings.push(format!("{} split is empty", split.name()));
        }
        split_cards.insert(split.name().to_string(), SplitCard { all, by_cohort });

        let mut w = AtomicWriter::create(&out.join(format!("{}.jsonl", split.name())))?;
        for e in in_split {
            let row = DatasetRow {
                cohort: Some(e.cohort.clone()),
                group: Some(e.group.clone()),
                is_disagreement: e.is_disagreement,
                label: match cfg.label {
                    LabelKind::Binary => Label::Binary(u8::from(e.label == 1.0)),
                    LabelKind::Graded => Label::Graded(r6(e.label)),
                },
                labels: (!cfg.dimensions.is_empty())
                    .then(|| e.labels.iter().map(|(d, v)| (d.clone(), v.map(r6))).collect()),
                output: e.output.clone(),
                prompt: e.prompt.clone(),
                request_id: e.request_id.clone(),
                weight: r6(e.weight),
            };
            w.write_json_line(&row)?;
        }
        w.commit()?;
    }
    let unlabelled = if cfg.unlabelled > 0 {
        let n =
            write_unlabelled(store, window, policy, cfg, &|g| splits.get(g).is_some_and(|s| *s != Split::Train), out)?;
        let _ = writeln!(text, "  unlabelled outputs: {n} (of at most {}), in unlabelled.jsonl", cfg.unlabelled);
        Some(n)
    } else {
        None
    };
    for wmsg in &warnings {
        tracing::warn!("{wmsg}");
    }
    if !warnings.is_empty() {
        let _ = writeln!(text, "{} warning(s), listed in dataset_card.md", warnings.len());
    }

    let cohort_card: BTreeMap<String, CohortCard> = rates
        .iter()
        .map(|(c, r)| {
            let f = factors.get(c).cloned().unwrap_or_default();
            let s = stats.iter().find(|s| s.cohort.as_deref().unwrap_or(NO_COHORT) == c);
            (
                c.clone(),
                CohortCard {
                    requests: r.requests,
                    with_feedback: s.map_or(0, |s| s.with_feedback),
                    with_explicit: s.map_or(0, |s| s.with_explicit),
                    with_human_score: s.map_or(0, |s| s.with_human_score),
                    rate: r6(r.rate()),
                    inverse_rate_factor: r6(f.get("inverse_rate").copied().unwrap_or(1.0)),
                    ipw_factor: r6(f.get("ipw").copied().unwrap_or(1.0)),
                },
            )
        })
        .collect();
    // Per dimension: examples with a label on it, overall and per split.
    let dimension_card: BTreeMap<String, DimensionCard> = cfg
        .dimensions
        .iter()
        .map(|d| {
            let has = |e: &&Example| e.labels.get(d).is_some_and(Option::is_some);
            let in_split = |split: Split| examples.iter().filter(|e| split_of(e) == split).filter(has).count();
            let v = DimensionCard {
                labelled: examples.iter().filter(has).count(),
                train: in_split(Split::Train),
                validation: in_split(Split::Validation),
                test: in_split(Split::Test),
            };
            (d.clone(), v)
        })
        .collect();
    if !cfg.dimensions.is_empty() {
        let _ = writeln!(
            text,
            "  dimension labels: {}",
            dimension_card
                .iter()
                .map(|(d, v)| format!("{d} {}/{}", v.labelled, examples.len()))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let card = DatasetCard {
        config: cfg.clone(),
        human_policy: policy.clone(),
        evaluator,
        candidates,
        dropped_neutral,
        dropped_agreeing,
        examples_before_subsampling: available,
        examples: examples.len(),
        normalize_divisor: r6(divisor),
        cohorts: cohort_card,
        subsampling: strata.iter().map(|s| StratumSample { inflation: r6(s.inflation), ..s.clone() }).collect(),
        splits: split_cards,
        groups: splits.len(),
        warnings: warnings.clone(),
        generator: format!("evalloop {}", env!("CARGO_PKG_VERSION")),
        dimensions: (!cfg.dimensions.is_empty()).then_some(dimension_card),
        unlabelled,
    };
    let card_json = card.to_json()?;
    atomic::write_atomic(&out.join(CARD_FILE), format!("{card_json}\n").as_bytes())?;
    let card_value: Value = serde_json::from_str(&card_json).map_err(|e| Error::Input(format!("{CARD_FILE}: {e}")))?;
    atomic::write_atomic(&out.join("dataset_card.md"), format!("{}\n", card_markdown(&card_value, &text)).as_bytes())?;
    Ok(Built { text: text.trim_end().to_string(), card, warnings })
}

/// Writes `unlabelled.jsonl` (module docs): up to `cfg.unlabelled` requests of `window` without a
/// human score under `policy` (for any evaluator) whose group is not `held` (validation or test),
/// by a seeded shuffle; returns the count.
fn write_unlabelled(
    store: &dyn Store,
    window: &Filter,
    policy: &HumanPolicy,
    cfg: &DatasetConfig,
    held: &dyn Fn(&str) -> bool,
    out: &Path,
) -> Result<usize> {
    let window = Filter { evaluator: None, ..window.clone() };
    // Requests with a human score under any evaluator (the dataset's rows are one evaluator's).
    let rated: std::collections::HashSet<String> = store
        .scored_requests(&ScoredQuery { filter: window.clone(), policy: policy.clone(), ..Default::default() })?
        .into_iter()
        .map(|r| r.request_id)
        .collect();
    let mut ids: Vec<String> = store.request_ids(&window)?.into_iter().filter(|id| !rated.contains(id)).collect();
    ids.shuffle(&mut ChaCha8Rng::seed_from_u64(hash64(&[&cfg.seed.to_string(), "unlabelled"])));
    let mut rows = Vec::new();
    // Read in chunks until enough rows outside the held-out groups are found.
    'chunks: for chunk in ids.chunks(4096) {
        for (id, t) in store.request_texts(chunk)? {
            let metadata: Value = serde_json::from_str(&t.metadata).unwrap_or(Value::Null);
            let group = metadata_group(cfg.group_key.as_ref().and_then(|k| metadata.get(k)))
                .unwrap_or_else(|| prompt_group(&t.prompt));
            if held(&group) {
                continue;
            }
            let cohort = metadata.get("user_cohort").and_then(Value::as_str).unwrap_or(NO_COHORT).to_string();
            rows.push((id, t.prompt, t.output, group, cohort));
            if rows.len() == cfg.unlabelled {
                break 'chunks;
            }
        }
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    let mut w = AtomicWriter::create(&out.join(UNLABELLED_FILE))?;
    for (id, prompt, output, group, cohort) in &rows {
        let row = UnlabelledRow {
            cohort: Some(cohort.clone()),
            group: Some(group.clone()),
            output: output.clone(),
            prompt: prompt.clone(),
            request_id: id.clone(),
        };
        w.write_json_line(&row)?;
    }
    w.commit()?;
    Ok(rows.len())
}

/// A metadata value as the group name the stores give it for a `group_key` (the `group` of
/// [`Store::scored_requests`]): text as it is, a boolean `"1"` or `"0"`, any other value its
/// JSON text; `None` for null or an absent key (the caller then falls back to the prompt hash).
/// `dataset build` names the groups of unlabelled requests with it, so that they match the
/// split's group names.
pub fn metadata_group(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::Null => None,
        Value::String(g) => Some(g.clone()),
        Value::Bool(b) => Some(if *b { "1" } else { "0" }.to_string()),
        v => Some(v.to_string()),
    }
}

/// Whether the evaluator (good when `eval_score > threshold`) and the human verdict disagree;
/// neutral never disagrees.
pub fn is_disagreement(eval_score: f64, threshold: f64, verdict: Verdict) -> bool {
    let eval_good = eval_score > threshold;
    match verdict {
        Verdict::Good => !eval_good,
        Verdict::Bad => eval_good,
        Verdict::Neutral => false,
    }
}

/// The group of a request without a group key: `prompt-` and 16 hex digits of a hash of the prompt.
pub fn prompt_group(prompt: &str) -> String {
    format!("prompt-{:016x}", hash64(&[prompt]))
}

/// Per-cohort counts for the chosen rate basis.
pub fn cohort_rates(stats: &[CohortStats], basis: RateBasis) -> BTreeMap<String, CohortRate> {
    stats
        .iter()
        .map(|s| {
            let counted = match basis {
                RateBasis::Feedback => s.with_feedback,
                RateBasis::Explicit => s.with_explicit,
                RateBasis::Labelled => s.with_human_score,
            };
            (s.cohort.clone().unwrap_or_else(|| NO_COHORT.to_string()), CohortRate { requests: s.requests, counted })
        })
        .collect()
}

fn name_of(v: &impl Serialize) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

fn card_markdown(card: &Value, summary: &str) -> String {
    let mut md = String::from("# Dataset card\n\n");
    let _ = writeln!(md, "Generated by {}.\n", card["generator"].as_str().unwrap_or("evalloop"));
    let _ = writeln!(
        md,
        "## Config\n\n```json\n{}\n```\n",
        serde_json::to_string_pretty(&card["config"]).unwrap_or_default()
    );
    let _ = writeln!(
        md,
        "Evaluator `{}`; {} requests with a human score, {} neutral dropped, {} agreeing dropped, \
         {} examples ({} before subsampling) in {} groups.\n",
        card["evaluator"].as_str().unwrap_or(""),
        card["candidates"],
        card["dropped_neutral"],
        card["dropped_agreeing"],
        card["examples"],
        card["examples_before_subsampling"],
        card["groups"],
    );
    md.push_str("## Cohorts\n\n| cohort | requests | with feedback | with explicit | with human score | rate | inverse_rate | ipw |\n|---|---:|---:|---:|---:|---:|---:|---:|\n");
    if let Some(cs) = card["cohorts"].as_object() {
        for (c, v) in cs {
            let _ = writeln!(
                md,
                "| {c} | {} | {} | {} | {} | {} | {} | {} |",
                v["requests"],
                v["with_feedback"],
                v["with_explicit"],
                v["with_human_score"],
                v["rate"],
                v["inverse_rate_factor"],
                v["ipw_factor"]
            );
        }
    }
    md.push_str("\n## Splits\n\n| split | cohort | examples | good | neutral | bad | disagreements | label mean | weighted label mean | weight sum | min | max | effective size |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for split in Split::ALL {
        let s = &card["splits"][split.name()];
        let mut rows: Vec<(String, &Value)> = Vec::new();
        if let Some(bc) = s["by_cohort"].as_object() {
            rows.extend(bc.iter().map(|(c, v)| (c.clone(), v)));
        }
        rows.push(("(all)".into(), s));
        for (c, v) in rows {
            let _ = writeln!(
                md,
                "| {} | {c} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                split.name(),
                v["examples"],
                v["good"],
                v["neutral"],
                v["bad"],
                v["disagreements"],
                v["label_mean"],
                v["weighted_label_mean"],
                v["weight_sum"],
                v["weight_min"],
                v["weight_max"],
                v["effective_size"]
            );
        }
    }
    if let Some(dims) = card["dimensions"].as_object() {
        md.push_str("\n## Dimension labels\n\n| dimension | labelled | train | validation | test |\n|---|---:|---:|---:|---:|\n");
        for (d, v) in dims {
            let _ = writeln!(md, "| {d} | {} | {} | {} | {} |", v["labelled"], v["train"], v["validation"], v["test"]);
        }
    }
    if let Some(w) = card["warnings"].as_array().filter(|w| !w.is_empty()) {
        md.push_str("\n## Warnings\n\n");
        for x in w {
            let _ = writeln!(md, "- {}", x.as_str().unwrap_or(""));
        }
    }
    let _ = write!(md, "\n## Summary\n\n```\n{summary}```");
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(id: usize, cohort: &str, class: &'static str, group: &str) -> Example {
        Example {
            request_id: format!("r{id:04}"),
            prompt: format!("p{group}"),
            output: format!("o{id}"),
            label: if class == "good" { 1.0 } else { 0.0 },
            class,
            human_score: if class == "good" { 5.0 } else { 1.0 },
            eval_score: 0.5,
            cohort: cohort.into(),
            group: group.into(),
            is_disagreement: class == "good",
            weight: 1.0,
            labels: BTreeMap::new(),
        }
    }

    /// 600 examples over 3 cohorts, 2 classes, groups of 3.
    fn population() -> Vec<Example> {
        (0..600)
            .map(|i| {
                let cohort = ["free", "pro", "team"][i % 3];
                let class = if i % 7 < 3 { "good" } else { "bad" };
                ex(i, cohort, class, &format!("g{}", i / 3))
            })
            .collect()
    }

    #[test]
    fn inverse_rate_is_the_seeds_formula() {
        assert!((inverse_rate_weight(0.0) - 100.0).abs() < 1e-9);
        assert!((inverse_rate_weight(0.24) - 4.0).abs() < 1e-12);
        assert!((inverse_rate_weight(0.99) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn ipw_smooths_towards_the_overall_rate_and_clips() {
        // (10 + 1 * 0.5) / (100 + 1) = 0.103960...; 1 / that = 9.619...
        assert!((ipw_weight(10, 100, 0.5, 1.0, 20.0) - 101.0 / 10.5).abs() < 1e-12);
        // No smoothing: exactly 1 / rate.
        assert!((ipw_weight(25, 100, 0.5, 0.0, 20.0) - 4.0).abs() < 1e-12);
        // Clipped.
        assert_eq!(ipw_weight(1, 1000, 0.01, 1.0, 20.0), 20.0);
        assert_eq!(ipw_weight(0, 0, 0.0, 0.0, 20.0), 20.0);
    }

    #[test]
    fn class_balance_equalises_class_totals() {
        let f = class_balance_factors(&["good", "good", "good", "bad"]);
        assert_eq!(f, vec![4.0 / 6.0, 4.0 / 6.0, 4.0 / 6.0, 2.0]);
        let good: f64 = f[..3].iter().sum();
        assert!((good - f[3]).abs() < 1e-12);
    }

    #[test]
    fn disagreement_boost_and_product_of_schemes() {
        let mut es = vec![ex(0, "a", "good", "g0"), ex(1, "a", "bad", "g1"), ex(2, "b", "bad", "g2")];
        let rates = BTreeMap::from([
            ("a".to_string(), CohortRate { requests: 10, counted: 5 }),
            ("b".to_string(), CohortRate { requests: 10, counted: 1 }),
        ]);
        let cfg = DatasetConfig {
            weighting: vec![Scheme::InverseRate, Scheme::ClassBalance, Scheme::DisagreementBoost],
            disagreement_boost: 3.0,
            ..Default::default()
        };
        apply_weights(&mut es, &rates, &cfg);
        let cb_good = 3.0 / 2.0;
        let cb_bad = 3.0 / 4.0;
        assert!((es[0].weight - inverse_rate_weight(0.5) * cb_good * 3.0).abs() < 1e-12);
        assert!((es[1].weight - inverse_rate_weight(0.5) * cb_bad).abs() < 1e-12);
        assert!((es[2].weight - inverse_rate_weight(0.1) * cb_bad).abs() < 1e-12);
    }

    #[test]
    fn none_gives_unit_weights_and_normalize_makes_train_mean_one() {
        let mut es = population();
        let rates = BTreeMap::new();
        apply_weights(&mut es, &rates, &DatasetConfig { weighting: vec![Scheme::None], ..Default::default() });
        assert!(es.iter().all(|e| e.weight == 1.0));
        let mut w = vec![1.0, 2.0, 3.0, 10.0];
        let d = normalize_on(&mut w, &[true, true, true, false]);
        assert_eq!(d, 2.0);
        assert_eq!(w, vec![0.5, 1.0, 1.5, 5.0]);
    }

    #[test]
    fn kish_effective_size() {
        assert_eq!(kish_ess([1.0, 1.0, 1.0, 1.0]), 4.0);
        // (1 + 3)^2 / (1 + 9) = 1.6
        assert!((kish_ess([1.0, 3.0]) - 1.6).abs() < 1e-12);
        assert_eq!(kish_ess(std::iter::empty()), 0.0);
    }

    #[test]
    fn disagreement_rule() {
        assert!(is_disagreement(0.9, 0.7, Verdict::Bad));
        assert!(is_disagreement(0.7, 0.7, Verdict::Good));
        assert!(!is_disagreement(0.9, 0.7, Verdict::Good));
        assert!(!is_disagreement(0.9, 0.7, Verdict::Neutral));
        assert!(!is_disagreement(0.1, 0.7, Verdict::Neutral));
    }

    #[test]
    fn subsampling_preserves_weighted_totals_in_expectation() {
        let mut pop = population();
        for (i, e) in pop.iter_mut().enumerate() {
            e.weight = 1.0 + (i % 5) as f64;
        }
        let total = |es: &[Example], c: &str, k: &str| -> f64 {
            es.iter().filter(|e| e.cohort == c && e.class == k).map(|e| e.weight).sum()
        };
        let seeds = 400;
        for (c, k) in [("free", "good"), ("pro", "bad"), ("team", "good")] {
            let truth = total(&pop, c, k);
            let mean: f64 = (0..seeds)
                .map(|s| {
                    let (kept, _) = subsample(pop.clone(), 90, 5, s);
                    total(&kept, c, k)
                })
                .sum::<f64>()
                / seeds as f64;
            assert!((mean - truth).abs() / truth < 0.02, "{c}/{k}: mean {mean} vs {truth}");
        }
        let (kept, report) = subsample(pop.clone(), 90, 5, 1);
        assert_eq!(kept.len(), 90);
        assert_eq!(report.len(), 6);
        // Under the limit: untouched.
        let (same, r) = subsample(pop.clone(), 1000, 5, 1);
        assert_eq!(same.len(), 600);
        assert!(r.is_empty());
    }

    #[test]
    fn no_group_crosses_splits_and_fractions_hold() {
        let pop = population();
        for seed in 0..20 {
            let splits = assign_splits(&pop, 0.8, 0.1, seed);
            let mut seen: BTreeMap<&str, Split> = BTreeMap::new();
            let mut counts = [0usize; 3];
            for e in &pop {
                let s = splits[&e.group];
                assert_eq!(*seen.entry(&e.group).or_insert(s), s, "group {} in two splits", e.group);
                counts[s as usize] += 1;
            }
            assert!((counts[0] as f64 / 600.0 - 0.8).abs() < 0.02, "{counts:?}");
            assert!((counts[1] as f64 / 600.0 - 0.1).abs() < 0.02, "{counts:?}");
            // Stratified: every cohort x class cell reaches validation and test.
            for split in [Split::Validation, Split::Test] {
                for c in ["free", "pro", "team"] {
                    assert!(pop.iter().any(|e| e.cohort == c && splits[&e.group] == split), "{c} missing");
                }
            }
        }
    }

    #[test]
    fn splits_and_subsamples_are_deterministic() {
        let pop = population();
        assert_eq!(assign_splits(&pop, 0.8, 0.1, 3), assign_splits(&pop, 0.8, 0.1, 3));
        assert_ne!(assign_splits(&pop, 0.8, 0.1, 3), assign_splits(&pop, 0.8, 0.1, 4));
        assert_eq!(subsample(pop.clone(), 100, 5, 9), subsample(pop.clone(), 100, 5, 9));
    }

    #[test]
    fn config_defaults_and_validation() {
        let c: DatasetConfig =
            toml::from_str("label = \"graded\"\nweighting = [\"inverse_rate\", \"normalize\"]").unwrap();
        assert_eq!(c.label, LabelKind::Graded);
        assert_eq!(c.train_fraction, 0.8);
        assert!(c.validate().is_ok());
        let bad = DatasetConfig { train_fraction: 0.95, validation_fraction: 0.1, ..Default::default() };
        assert!(bad.validate().unwrap_err().contains("validation_fraction"));
        assert!(toml::from_str::<DatasetConfig>("weighting = [\"ipw2\"]").is_err());
    }

    /// configs/dataset.toml says it shows the defaults; keep it honest.
    #[test]
    fn example_config_shows_the_defaults() {
        let cf: crate::config::ConfigFile = toml::from_str(include_str!("../../../configs/dataset.toml")).unwrap();
        let d: DatasetConfig = cf.dataset.unwrap().try_into().unwrap();
        assert_eq!(d, DatasetConfig { group_key: Some("group_id".into()), ..Default::default() });
        let s: crate::simulate::SimulateConfig = cf.simulate.unwrap().try_into().unwrap();
        assert_eq!(s, crate::simulate::SimulateConfig::default());
    }
}
