//! `evalloop estimate`: how good the product is, per cohort, prompt version, use case or week,
//! from the few human labels alone (classical) and with the evaluator's score on every request
//! (prediction-powered, PPI++), with their intervals.
//!
//! People label a few percent of the requests, and not at random: some cohorts leave far more
//! feedback than others. Labels are taken as random within a cohort only, so every estimate is
//! stratified by cohort ([`crate::stats::ppi::stratified`]): each cohort is estimated on its
//! own, with its labelling probability `labelled / requests` (the cohort rate that the dataset's
//! inverse-rate weights invert), and the cohorts are combined with their shares of the requests.
//! A cohort with fewer than 2 labels cannot be estimated; it is left out, said so, and the
//! estimate then stands for the share of requests it covers (`share_covered`).
//!
//! Labels that came from annotation queues (`evalloop queue`) are not random within a cohort:
//! they leave the stratified estimate (a request keeps the score of its other feedback) and are
//! estimated per queue with the queue's selection probabilities (`queues`; see `queues.rs`).
//!
//! The evaluator's `overall` (in [0, 1]) predicts the metric: `1 + 4 * overall` for the mean
//! human score (1-5), `overall` itself as the probability of a pass (human score `>= good_min`)
//! for the pass rate. PPI++ needs no calibration: it measures the evaluator's bias on the labels
//! and tunes how much to trust it (`lambda`, 0 = labels only).

use std::collections::BTreeMap;
use std::collections::HashMap;

mod queues;
pub use queues::QueueEstimate;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::analysis::{Scope, resolve_evaluator};
use crate::stats::ppi::{IntervalKind, MeanEstimate, PpiMean, ppi_mean, stratified};
use crate::store::{EvaluatedRequest, ScoredQuery, Store};
use crate::{Error, Result};

/// What to estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Metric {
    /// The mean human score (1-5) under the `[human]` policy.
    #[default]
    MeanHumanScore,
    /// The share of requests whose human score is `>= good_min` (default 4).
    PassRate,
}

/// A dimension to estimate per value of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum EstimateBy {
    /// `metadata.user_cohort`.
    Cohort,
    /// `metadata.prompt_version`.
    PromptVersion,
    /// `metadata.use_case`.
    UseCase,
    /// The ISO week of the request's time (UTC), as `2026-W49`.
    Week,
}

/// Options for [`estimate`].
#[derive(Debug, Clone, Copy)]
pub struct EstimateOptions {
    pub metric: Metric,
    /// One estimate per value of this dimension, beside the overall one.
    pub by: Option<EstimateBy>,
    /// Two-sided interval level; default 0.95.
    pub level: f64,
    /// Default [`IntervalKind::SmallSample`].
    pub interval: IntervalKind,
}

impl Default for EstimateOptions {
    fn default() -> Self {
        EstimateOptions { metric: Metric::default(), by: None, level: 0.95, interval: IntervalKind::default() }
    }
}

/// `evalloop estimate`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EstimateReport {
    pub evaluator: String,
    pub metric: Metric,
    /// How the evaluator's `overall` predicts the metric.
    pub prediction: String,
    /// Two-sided interval level.
    pub level: f64,
    pub interval: IntervalKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<EstimateBy>,
    /// Every request in scope.
    pub overall: CellEstimate,
    /// One per value of `by`, sorted (requests without a value first, as `group: null`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<CellEstimate>,
    /// Labels from annotation queues left out of the estimates above (their requests keep the
    /// score of their other feedback).
    #[serde(skip_serializing_if = "is_zero")]
    pub queue_labels_left_out: usize,
    /// One estimate per annotation queue with labels, weighted by its selection probabilities.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub queues: Vec<QueueEstimate>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The estimates for one set of requests (all of them, or one value of `by`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CellEstimate {
    /// The value of `by`; absent for the overall estimate, `null` for requests without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<Option<String>>,
    /// Requests the evaluator scored.
    pub requests: usize,
    /// Of those, requests with a human score.
    pub labelled: usize,
    /// The plain mean of the labels, ignoring who labels more (for comparison; biased when
    /// cohorts are labelled at different rates and differ in quality).
    pub labelled_mean: Option<f64>,
    /// Share of the requests in the cohorts that could be estimated (1 when all could).
    pub share_covered: f64,
    /// Labels only, stratified by cohort.
    pub classical: Option<MeanEstimate>,
    /// Prediction-powered (PPI++), stratified by cohort.
    pub ppi: Option<MeanEstimate>,
    /// The labels the classical estimate would need for the PPI++ interval's width.
    pub effective_labels: Option<f64>,
    /// `effective_labels - labels used`.
    pub labels_gained: Option<f64>,
    /// The cohorts: labelling probability, weight and power tuning of each.
    pub strata: Vec<Stratum>,
    /// Statistic -> why it is undefined.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub undefined: BTreeMap<String, String>,
}

/// One cohort of a cell.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stratum {
    /// `null` for requests without `metadata.user_cohort`.
    pub cohort: Option<String>,
    pub requests: usize,
    pub labelled: usize,
    /// `labelled / requests`: the probability that a request of this cohort got a label.
    pub labelling_probability: f64,
    /// `requests / labelled`: the inverse-probability weight of a label (`null` without labels).
    pub weight: Option<f64>,
    /// The PPI++ power-tuning weight of the evaluator in this cohort, in [0, 1].
    pub lambda: Option<f64>,
    /// Why the cohort is left out of the estimate, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub left_out: Option<String>,
}

/// A request as the estimate sees it: its group, cohort, the evaluator's prediction of the
/// metric and, when labelled, the metric's value.
pub(crate) struct Row<'a> {
    pub(crate) group: Option<String>,
    pub(crate) cohort: Option<&'a str>,
    pub(crate) prediction: f64,
    pub(crate) value: Option<f64>,
}

/// The ISO week (UTC) of a time in microseconds since the epoch, as `2026-W49`.
pub fn iso_week(timestamp_us: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(timestamp_us)
        .map_or_else(|| "invalid-time".to_string(), |t| t.format("%G-W%V").to_string())
}

fn group_of(r: &EvaluatedRequest, by: EstimateBy) -> Option<String> {
    match by {
        EstimateBy::Cohort => r.cohort.clone(),
        EstimateBy::PromptVersion => r.prompt_version.clone(),
        EstimateBy::UseCase => r.use_case.clone(),
        EstimateBy::Week => Some(iso_week(r.timestamp_us)),
    }
}

/// Runs `evalloop estimate` on the store.
pub fn estimate(store: &dyn Store, scope: &Scope, opts: &EstimateOptions) -> Result<EstimateReport> {
    if !(opts.level > 0.0 && opts.level < 1.0) {
        return Err(Error::Input(format!("interval level {} is not in (0, 1)", opts.level)));
    }
    let filter = resolve_evaluator(store, &scope.filter)?;
    let evaluator = filter.evaluator.clone().unwrap_or_default();
    let requests = store.evaluated_requests(&filter)?;
    let mut labels: HashMap<String, f64> = store
        .scored_requests(&ScoredQuery { filter: filter.clone(), policy: scope.policy.clone(), ..Default::default() })?
        .into_iter()
        .map(|r| (r.request_id, r.human_score))
        .collect();
    // Queue labels leave the stratified estimate: their requests keep their other feedback's score.
    // Preference queues judge pairs, not single requests: their labels give no human score.
    let queue_labels: Vec<_> = store.queue_labels(None)?.into_iter().filter(|l| l.other_request_id.is_none()).collect();
    let (queue_events, queued) = queues::queue_label_events(&queue_labels);
    let mut queued_events: BTreeMap<String, Vec<crate::record::FeedbackEvent>> = BTreeMap::new();
    for id in queued {
        let events = store.feedback_for(&id)?;
        if labels.contains_key(&id) {
            match queues::organic_score(&events, &queue_events, &scope.policy) {
                Some(h) => labels.insert(id.clone(), h),
                None => labels.remove(&id),
            };
        }
        queued_events.insert(id, events);
    }
    let scores: BTreeMap<&str, f64> = requests.iter().map(|r| (r.request_id.as_str(), r.eval_score)).collect();
    let queue_estimates = if queue_events.is_empty() {
        Vec::new()
    } else {
        queues::queue_estimates(
            store,
            &store.queues()?,
            &queue_labels,
            &scores,
            &queued_events,
            &scope.policy,
            opts.metric,
            opts.level,
        )?
    };
    let good_min = scope.policy.good_min;
    let rows: Vec<Row<'_>> = requests
        .iter()
        .map(|r| {
            let human = labels.get(&r.request_id).copied();
            let (prediction, value) = match opts.metric {
                Metric::MeanHumanScore => (1.0 + 4.0 * r.eval_score, human),
                Metric::PassRate => (r.eval_score, human.map(|h| f64::from(u8::from(h >= good_min)))),
            };
            Row { group: opts.by.and_then(|b| group_of(r, b)), cohort: r.cohort.as_deref(), prediction, value }
        })
        .collect();
    let all: Vec<&Row<'_>> = rows.iter().collect();
    let overall = cell(None, &all, opts);
    let mut groups = Vec::new();
    if opts.by.is_some() {
        let mut by_value: BTreeMap<Option<&str>, Vec<&Row<'_>>> = BTreeMap::new();
        for r in &rows {
            by_value.entry(r.group.as_deref()).or_default().push(r);
        }
        groups = by_value.into_iter().map(|(g, rs)| cell(Some(g.map(str::to_string)), &rs, opts)).collect();
    }
    let prediction = match opts.metric {
        Metric::MeanHumanScore => "1 + 4 * overall (the evaluator's score on the 1-5 scale)".to_string(),
        Metric::PassRate => format!("overall as P(human score >= {good_min})"),
    };
    Ok(EstimateReport {
        evaluator,
        metric: opts.metric,
        prediction,
        level: opts.level,
        interval: opts.interval,
        by: opts.by,
        overall,
        groups,
        queue_labels_left_out: queue_events.len(),
        queues: queue_estimates,
    })
}

/// The estimates of one cell: one PPI++ estimate per cohort, combined with the cohorts' shares.
pub(crate) fn cell(group: Option<Option<String>>, rows: &[&Row<'_>], opts: &EstimateOptions) -> CellEstimate {
    #[derive(Default)]
    struct Parts {
        y: Vec<f64>,
        yhat: Vec<f64>,
        unlabelled: Vec<f64>,
    }
    let mut cohorts: BTreeMap<Option<&str>, Parts> = BTreeMap::new();
    for r in rows {
        let p = cohorts.entry(r.cohort).or_default();
        match r.value {
            Some(v) => {
                p.y.push(v);
                p.yhat.push(r.prediction);
            }
            None => p.unlabelled.push(r.prediction),
        }
    }
    let total = rows.len();
    let labelled: usize = cohorts.values().map(|p| p.y.len()).sum();
    let mut estimated: Vec<(PpiMean, f64)> = Vec::new();
    let mut strata = Vec::new();
    for (cohort, p) in &cohorts {
        let n_c = p.y.len() + p.unlabelled.len();
        let mut s = Stratum {
            cohort: cohort.map(str::to_string),
            requests: n_c,
            labelled: p.y.len(),
            labelling_probability: p.y.len() as f64 / n_c as f64,
            weight: (!p.y.is_empty()).then(|| n_c as f64 / p.y.len() as f64),
            lambda: None,
            left_out: None,
        };
        match ppi_mean(&p.y, &p.yhat, &p.unlabelled, None, opts.interval, opts.level) {
            Ok(m) => {
                s.lambda = Some(m.lambda);
                estimated.push((m, n_c as f64 / total as f64));
            }
            Err(u) => s.left_out = Some(u.reason),
        }
        strata.push(s);
    }
    let labelled_mean = (labelled > 0).then(|| cohorts.values().flat_map(|p| &p.y).sum::<f64>() / labelled as f64);
    let mut c = CellEstimate {
        group,
        requests: total,
        labelled,
        labelled_mean,
        share_covered: 0.0,
        classical: None,
        ppi: None,
        effective_labels: None,
        labels_gained: None,
        strata,
        undefined: BTreeMap::new(),
    };
    let covered: usize = c.strata.iter().filter(|s| s.left_out.is_none()).map(|s| s.requests).sum();
    match stratified(&estimated, opts.level) {
        Ok(s) => {
            c.share_covered = covered as f64 / total as f64;
            c.classical = Some(s.classical);
            c.ppi = Some(s.ppi);
            c.effective_labels = Some(s.effective_labels);
            c.labels_gained = Some(s.effective_labels - s.n_labelled as f64);
        }
        Err(u) => {
            let reason = if total == 0 { "no request in scope".to_string() } else { u.reason };
            for k in ["classical", "ppi", "effective_labels"] {
                c.undefined.insert(k.to_string(), reason.clone());
            }
        }
    }
    c
}

/// The PPI++ mean human score of two sides of a change (`impact`) and their difference.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PpiComparison {
    /// The baseline side.
    pub before: MeanEstimate,
    /// The treatment side.
    pub after: MeanEstimate,
    /// `after - before`.
    pub difference: f64,
    /// Its 95% interval, `difference +- 1.96 sqrt(se_before^2 + se_after^2)`.
    pub difference_ci: [f64; 2],
    /// `difference / sqrt(se_before^2 + se_after^2)`.
    pub z: f64,
    /// Two-sided p-value of `z`.
    pub p_value: f64,
}

/// [`PpiComparison`] of the mean human score between the requests of `before` and of `after`
/// (disjoint sets, so independent estimates), each stratified by cohort as [`estimate`] does.
/// Undefined when either side has no cohort with 2 labels, or both standard errors are 0.
pub fn compare_sides(
    store: &dyn Store,
    policy: &crate::feedback::HumanPolicy,
    before: &crate::store::Filter,
    after: &crate::store::Filter,
) -> Result<std::result::Result<PpiComparison, crate::stats::Undefined>> {
    let side = |f: &crate::store::Filter, name: &str| -> Result<std::result::Result<MeanEstimate, String>> {
        let scope = Scope { filter: f.clone(), policy: policy.clone() };
        let r = estimate(store, &scope, &EstimateOptions::default())?;
        Ok(r.overall.ppi.ok_or_else(|| {
            format!("{name}: {}", r.overall.undefined.get("ppi").cloned().unwrap_or_else(|| "undefined".into()))
        }))
    };
    let (b, a) = match (side(before, "before")?, side(after, "after")?) {
        (Ok(b), Ok(a)) => (b, a),
        (Err(why), _) | (_, Err(why)) => return Ok(Err(crate::stats::Undefined::new(why))),
    };
    let se = (b.std_error.powi(2) + a.std_error.powi(2)).sqrt();
    if se <= 0.0 {
        return Ok(Err(crate::stats::Undefined::new("both standard errors are 0")));
    }
    let difference = a.estimate - b.estimate;
    let z = difference / se;
    let q = crate::stats::corr::normal_quantile(0.975);
    Ok(Ok(PpiComparison {
        before: b,
        after: a,
        difference,
        difference_ci: [difference - q * se, difference + q * se],
        z,
        p_value: (2.0 * crate::stats::corr::normal_sf(z.abs())).min(1.0),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cohort: Option<&'static str>, prediction: f64, value: Option<f64>) -> Row<'static> {
        Row { group: None, cohort, prediction, value }
    }

    #[test]
    fn iso_weeks_follow_iso_8601() {
        // 2026-12-07 is a Monday of ISO week 50; 2027-01-01 (a Friday) is in 2026's week 53.
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap().timestamp_micros();
        assert_eq!(iso_week(t("2026-12-07T10:00:00Z")), "2026-W50");
        assert_eq!(iso_week(t("2027-01-01T00:00:00Z")), "2026-W53");
    }

    #[test]
    fn a_cohort_with_one_label_is_left_out_and_coverage_says_so() {
        let rows = [
            row(Some("a"), 4.0, Some(4.0)),
            row(Some("a"), 2.0, Some(2.0)),
            row(Some("a"), 3.0, None),
            row(Some("b"), 5.0, Some(5.0)),
            row(Some("b"), 5.0, None),
            row(None, 1.0, None),
        ];
        let refs: Vec<&Row<'_>> = rows.iter().collect();
        let c = cell(None, &refs, &EstimateOptions::default());
        assert_eq!((c.requests, c.labelled), (6, 3));
        assert!((c.share_covered - 0.5).abs() < 1e-12);
        let b = c.strata.iter().find(|s| s.cohort.as_deref() == Some("b")).unwrap();
        assert!(b.left_out.as_deref().unwrap().contains("at least 2"));
        let none = c.strata.iter().find(|s| s.cohort.is_none()).unwrap();
        assert_eq!((none.labelling_probability, none.weight), (0.0, None));
        let a = c.strata.iter().find(|s| s.cohort.as_deref() == Some("a")).unwrap();
        assert!((a.labelling_probability - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(a.weight, Some(1.5));
        assert_eq!(c.classical.unwrap().estimate, 3.0);
        assert!((c.labelled_mean.unwrap() - 11.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn no_labels_leave_every_estimate_undefined_with_a_reason() {
        let rows = [row(Some("a"), 4.0, None)];
        let refs: Vec<&Row<'_>> = rows.iter().collect();
        let c = cell(None, &refs, &EstimateOptions::default());
        assert!(c.ppi.is_none() && c.classical.is_none());
        assert!(c.undefined["ppi"].contains("no stratum"));
    }
}
