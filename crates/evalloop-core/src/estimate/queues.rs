//! Labels from annotation queues in `evalloop estimate`: they were not given at random within a
//! cohort (a queue picks requests on purpose, each with a known probability), so they leave the
//! cohort-stratified estimate (a request keeps the score of its other feedback, or none) and get
//! an estimate of their own per queue, weighted by the queue's selection probabilities.
//!
//! For queue q, its labelled requests i (the mean of their queue labels under the human-score
//! policy, `y_i`), the evaluator's prediction `f_i` and the selection probability `pi_i`:
//! - classical: the Hajek estimate `sum(y_i / pi_i) / sum(1 / pi_i)` of the mean over the
//!   queue's pool (the requests it drew from), with the linearised standard error
//!   ([`crate::queue::design::ipw_mean_clustered`]; a whole-group queue's units are its prompt
//!   groups);
//! - prediction-powered: the mean prediction over the pool plus the Hajek estimate of the mean
//!   residual `y_i - f_i` (a difference estimator; its standard error is the residuals'). The pool
//!   is rebuilt from the queue's evaluator and window; when its size is not the queue's recorded
//!   population (requests added since, or a queue drawn with `--exclude-labelled`), the pool mean
//!   is unknown and only the classical estimate is given.
//!
//! Intervals are Student's t at the report's level with the number of sampling units (requests,
//! or a whole-group queue's groups) less one as degrees of freedom.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;
use statrs::distribution::{ContinuousCDF, StudentsT};

use super::Metric;
use crate::Result;
use crate::feedback::HumanPolicy;
use crate::queue::design::ipw_mean_clustered;
use crate::queue::sampling_units;
use crate::queue::{QueueLabel, QueueSpec};
use crate::record::FeedbackEvent;
use crate::stats::ppi::MeanEstimate;
use crate::store::{Filter, Store};

/// One queue's estimate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueEstimate {
    pub queue: String,
    pub strategy: String,
    /// Requests the queue drew from (its recorded population).
    pub pool: usize,
    /// Requests with a label from the queue.
    pub labelled: usize,
    /// The smallest and largest selection probability of those.
    pub probability_min: Option<f64>,
    pub probability_max: Option<f64>,
    /// Labels only, weighted by `1 / pi`.
    pub classical: Option<MeanEstimate>,
    /// The evaluator over the pool, corrected by the weighted residuals.
    pub ppi: Option<MeanEstimate>,
    /// Statistic -> why it is undefined.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub undefined: BTreeMap<String, String>,
}

/// The queue labels' feedback events (their ids), and the requests they are on.
pub(super) fn queue_label_events(labels: &[QueueLabel]) -> (HashSet<String>, Vec<String>) {
    let ids: HashSet<String> = labels.iter().filter_map(|l| l.event_id.clone()).collect();
    let mut requests: Vec<String> =
        labels.iter().filter(|l| l.event_id.is_some()).map(|l| l.request_id.clone()).collect();
    requests.sort();
    requests.dedup();
    (ids, requests)
}

/// The human score of a request from its feedback `events` other than the queue labels
/// `exclude`.
pub(super) fn organic_score(events: &[FeedbackEvent], exclude: &HashSet<String>, policy: &HumanPolicy) -> Option<f64> {
    policy.human_score(events.iter().filter(|e| !exclude.contains(&e.event_id)))
}

/// The interval at `level` with Student's t on `units - 1` degrees of freedom.
fn interval(est: f64, se: f64, units: usize, level: f64) -> MeanEstimate {
    let df = units.saturating_sub(1).max(1) as f64;
    let q = StudentsT::new(0.0, 1.0, df).map(|t| t.inverse_cdf(0.5 + level / 2.0)).unwrap_or(1.96);
    MeanEstimate { estimate: est, std_error: se, df: Some(df), lower: est - q * se, upper: est + q * se }
}

/// The estimate of every queue with labels. `scores` are the estimate's evaluator's scores by
/// request id, `events` the feedback of every request with a queue label.
#[allow(clippy::too_many_arguments)]
pub(super) fn queue_estimates(
    store: &dyn Store,
    specs: &[QueueSpec],
    labels: &[QueueLabel],
    scores: &BTreeMap<&str, f64>,
    events: &BTreeMap<String, Vec<FeedbackEvent>>,
    policy: &HumanPolicy,
    metric: Metric,
    level: f64,
) -> Result<Vec<QueueEstimate>> {
    let mut out = Vec::new();
    let predict = |s: f64| match metric {
        Metric::MeanHumanScore => 1.0 + 4.0 * s,
        Metric::PassRate => s,
    };
    let value = |h: f64| match metric {
        Metric::MeanHumanScore => h,
        Metric::PassRate => f64::from(u8::from(h >= policy.good_min)),
    };
    for spec in specs {
        let mine: Vec<&QueueLabel> = labels.iter().filter(|l| l.queue == spec.name && l.event_id.is_some()).collect();
        if mine.is_empty() {
            continue;
        }
        let ids: HashSet<&str> = mine.iter().filter_map(|l| l.event_id.as_deref()).collect();
        let items: BTreeMap<String, f64> =
            store.queue_items(Some(&spec.name))?.into_iter().map(|i| (i.request_id, i.probability)).collect();
        // Per labelled request: the mean of its queue labels' scores.
        let mut requests: Vec<&str> = mine.iter().map(|l| l.request_id.as_str()).collect();
        requests.sort_unstable();
        requests.dedup();
        // Each labelled request's sampling unit (its group in a whole-group queue).
        let owned: Vec<String> = requests.iter().map(|r| r.to_string()).collect();
        let unit_of: BTreeMap<&str, usize> =
            requests.iter().copied().zip(sampling_units(store, spec, &owned)?).collect();
        let mut ys: Vec<(f64, f64)> = Vec::new();
        let mut ys_units: Vec<usize> = Vec::new();
        let mut residuals: Vec<(f64, f64)> = Vec::new();
        let mut residual_units: Vec<usize> = Vec::new();
        let mut undefined = BTreeMap::new();
        for r in &requests {
            let mine = events.get(*r).map_or(&[][..], Vec::as_slice);
            let Some(h) = policy.human_score(mine.iter().filter(|e| ids.contains(e.event_id.as_str()))) else {
                continue;
            };
            let Some(&pi) = items.get(*r) else { continue };
            ys.push((value(h), pi));
            ys_units.push(unit_of[r]);
            match scores.get(r) {
                Some(s) => {
                    residuals.push((value(h) - predict(*s), pi));
                    residual_units.push(unit_of[r]);
                }
                None => {
                    undefined.insert("ppi".to_string(), format!("request {r:?} has no score of the evaluator"));
                }
            }
        }
        let probs: Vec<f64> = ys.iter().map(|(_, p)| *p).collect();
        let classical = match ipw_mean_clustered(&ys, &ys_units) {
            Ok(m) => Some(interval(m.mean, m.std_error, m.units, level)),
            Err(u) => {
                undefined.insert("classical".into(), u.reason);
                None
            }
        };
        // The pool: the queue's evaluator's requests in its window, as it drew them.
        let parse = |s: &Option<String>| {
            s.as_deref()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|d| d.with_timezone(&chrono::Utc))
        };
        let pool_filter = Filter {
            evaluator: Some(spec.evaluator.clone()),
            since: parse(&spec.since),
            until: parse(&spec.until),
            ..Default::default()
        };
        let pool = store.request_ids(&pool_filter)?;
        let ppi = if undefined.contains_key("ppi") {
            None
        } else if pool.len() != spec.population {
            undefined.insert(
                "ppi".into(),
                format!(
                    "the queue drew from {} requests and its evaluator and window now give {}: the pool's mean \
                     prediction is unknown",
                    spec.population,
                    pool.len()
                ),
            );
            None
        } else {
            let preds: Vec<f64> = pool.iter().filter_map(|id| scores.get(id.as_str()).map(|s| predict(*s))).collect();
            if preds.len() != pool.len() {
                undefined.insert("ppi".into(), "some requests of the pool have no score of the evaluator".into());
                None
            } else {
                let mean_pred = preds.iter().sum::<f64>() / preds.len().max(1) as f64;
                match ipw_mean_clustered(&residuals, &residual_units) {
                    Ok(m) => Some(interval(mean_pred + m.mean, m.std_error, m.units, level)),
                    Err(u) => {
                        undefined.insert("ppi".into(), u.reason);
                        None
                    }
                }
            }
        };
        out.push(QueueEstimate {
            queue: spec.name.clone(),
            strategy: spec.strategy.as_str().to_string(),
            pool: spec.population,
            labelled: ys.len(),
            probability_min: probs.iter().copied().reduce(f64::min),
            probability_max: probs.iter().copied().reduce(f64::max),
            classical,
            ppi,
            undefined,
        });
    }
    Ok(out)
}
