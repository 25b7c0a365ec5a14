//! `evalloop trend`: the loop's figures per day or week, and the changes between consecutive
//! windows that survive false-discovery control.
//!
//! Per window (and per cohort or prompt version with `by`): requests and feedback volume and
//! rate (overall and per cohort), the mean evaluator score, the mean human score (PPI++,
//! stratified by cohort, as [`crate::estimate`]) and the evaluator-human agreement (Spearman
//! with its Fisher-z interval).
//!
//! Change detection compares each window with the one before it in the same series, on four
//! figures, each with a two-sided test:
//! - human score: `z = (theta_2 - theta_1) / sqrt(se_1^2 + se_2^2)` on the PPI++ estimates of
//!   the two (independent) windows;
//! - agreement: the difference of Fisher-z transformed Spearman coefficients over
//!   `sqrt(1.06 / (n_1 - 3) + 1.06 / (n_2 - 3))` (Fieller's standard error);
//! - evaluator score: Welch's t-test on the two windows' scores;
//! - feedback rate: the two-proportion z-test with the pooled rate.
//!
//! Every p-value of the run goes through Benjamini-Hochberg ([`crate::stats::fdr`]); a change is
//! flagged when its adjusted p-value (q-value) is at most the false-discovery rate (`fdr`,
//! default 0.05). Each change carries its size (`after - before`) with a 95% interval.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::analysis::{CheckResult, Scope, resolve_evaluator};
use crate::estimate::{EstimateOptions, Row, cell, iso_week};
use crate::stats::corr::{normal_quantile, normal_sf};
use crate::stats::fdr::benjamini_hochberg;
use crate::stats::ppi::MeanEstimate;
use crate::stats::{self, compare};
use crate::store::{EvaluatedRequest, ScoredQuery, Store};
use crate::{Error, Result};

/// How long a window is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Every {
    /// A UTC day, as `2026-12-07`.
    Day,
    /// An ISO week (UTC), as `2026-W50`.
    #[default]
    Week,
}

/// A dimension with one series per value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum TrendBy {
    /// `metadata.user_cohort`.
    Cohort,
    /// `metadata.prompt_version`.
    PromptVersion,
}

/// Options for [`trend`].
#[derive(Debug, Clone, Copy)]
pub struct TrendOptions {
    pub every: Every,
    pub by: Option<TrendBy>,
    /// The false-discovery rate of the change detection; default 0.05.
    pub fdr: f64,
}

impl Default for TrendOptions {
    fn default() -> Self {
        TrendOptions { every: Every::Week, by: None, fdr: 0.05 }
    }
}

/// `evalloop trend`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrendReport {
    pub evaluator: String,
    pub every: Every,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<TrendBy>,
    /// The false-discovery rate the changes are flagged at.
    pub fdr: f64,
    /// The tests, in words.
    pub test: String,
    /// One series, or one per value of `by` (requests without one as `group: null`).
    pub series: Vec<Series>,
    /// Every comparison of consecutive windows that could be tested, in series, window and
    /// figure order.
    pub changes: Vec<Change>,
}

impl TrendReport {
    /// The changes flagged under the false-discovery rate.
    pub fn flagged(&self) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(|c| c.flagged)
    }
}

/// The windows of one series, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    /// The value of `by`; absent without `by`, `null` for requests without a value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<Option<String>>,
    pub windows: Vec<Window>,
}

/// The figures of one window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Window {
    /// `2026-12-07` or `2026-W50`.
    pub window: String,
    pub requests: usize,
    /// Requests with a human score.
    pub labelled: usize,
    /// `labelled / requests`.
    pub feedback_rate: f64,
    /// Feedback volume and rate per cohort.
    pub cohorts: Vec<CohortFeedback>,
    /// Mean evaluator `overall` over every request of the window.
    pub mean_eval_score: f64,
    /// The mean human score, PPI++ stratified by cohort.
    pub human_score: Option<MeanEstimate>,
    /// Spearman's rho between evaluator and human scores on the labelled requests.
    pub agreement: Option<f64>,
    /// Its 95% Fisher-z interval (Fieller's standard error).
    pub agreement_ci: Option<[f64; 2]>,
    /// Figure -> why it is undefined.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub undefined: BTreeMap<String, String>,
}

/// Feedback in one cohort of a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CohortFeedback {
    /// `null` for requests without `metadata.user_cohort`.
    pub cohort: Option<String>,
    pub requests: usize,
    pub labelled: usize,
    pub rate: f64,
}

/// The figure a change is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Figure {
    HumanScore,
    Agreement,
    EvalScore,
    FeedbackRate,
}

/// A tested change between two consecutive windows of a series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<Option<String>>,
    pub figure: Figure,
    pub from: String,
    pub to: String,
    pub before: f64,
    pub after: f64,
    /// `after - before`.
    pub size: f64,
    /// 95% interval of the size.
    pub size_ci: [f64; 2],
    /// The test statistic (z, or Welch's t for the evaluator score).
    pub statistic: f64,
    pub p_value: f64,
    /// Benjamini-Hochberg adjusted p-value over every change of the report.
    pub q_value: f64,
    /// `q_value <= fdr`.
    pub flagged: bool,
}

/// The window a time falls in.
pub fn window_of(timestamp_us: i64, every: Every) -> String {
    match every {
        Every::Week => iso_week(timestamp_us),
        Every::Day => DateTime::<Utc>::from_timestamp_micros(timestamp_us)
            .map_or_else(|| "invalid-time".to_string(), |t| t.format("%Y-%m-%d").to_string()),
    }
}

/// One request with what the trend reads.
struct Req<'a> {
    r: &'a EvaluatedRequest,
    human: Option<f64>,
}

/// Runs `evalloop trend` on the store.
pub fn trend(store: &dyn Store, scope: &Scope, opts: &TrendOptions) -> Result<TrendReport> {
    if !(opts.fdr > 0.0 && opts.fdr < 1.0) {
        return Err(Error::Input(format!("false-discovery rate {} is not in (0, 1)", opts.fdr)));
    }
    let filter = resolve_evaluator(store, &scope.filter)?;
    let evaluator = filter.evaluator.clone().unwrap_or_default();
    let requests = store.evaluated_requests(&filter)?;
    let labels: HashMap<String, f64> = store
        .scored_requests(&ScoredQuery { filter: filter.clone(), policy: scope.policy.clone(), ..Default::default() })?
        .into_iter()
        .map(|r| (r.request_id, r.human_score))
        .collect();
    let mut by_series: BTreeMap<Option<&str>, BTreeMap<String, Vec<Req<'_>>>> = BTreeMap::new();
    for r in &requests {
        let group = match opts.by {
            None => None,
            Some(TrendBy::Cohort) => r.cohort.as_deref(),
            Some(TrendBy::PromptVersion) => r.prompt_version.as_deref(),
        };
        let req = Req { r, human: labels.get(&r.request_id).copied() };
        by_series.entry(group).or_default().entry(window_of(r.timestamp_us, opts.every)).or_default().push(req);
    }
    let mut series = Vec::new();
    let mut changes = Vec::new();
    for (group, windows) in &by_series {
        let group = opts.by.map(|_| group.map(str::to_string));
        let figures: Vec<(Window, Vec<f64>)> = windows.iter().map(|(w, reqs)| window(w, reqs)).collect();
        for pair in figures.windows(2) {
            changes.extend(compare_windows(&group, &pair[0], &pair[1]));
        }
        series.push(Series { group, windows: figures.into_iter().map(|(w, _)| w).collect() });
    }
    let q = benjamini_hochberg(&changes.iter().map(|c| c.p_value).collect::<Vec<_>>());
    for (c, q) in changes.iter_mut().zip(q) {
        c.q_value = q;
        c.flagged = q <= opts.fdr;
    }
    Ok(TrendReport {
        evaluator,
        every: opts.every,
        by: opts.by,
        fdr: opts.fdr,
        test: "consecutive windows, two-sided: human score z on PPI++ estimates; agreement z on Fisher-z Spearman \
               (se sqrt(1.06/(n-3))); evaluator score Welch's t; feedback rate two-proportion z; \
               Benjamini-Hochberg over all"
            .to_string(),
        series,
        changes,
    })
}

/// The figures of one window, and its evaluator scores (for Welch's test).
fn window(name: &str, reqs: &[Req<'_>]) -> (Window, Vec<f64>) {
    let scores: Vec<f64> = reqs.iter().map(|q| q.r.eval_score).collect();
    let (x, y): (Vec<f64>, Vec<f64>) = reqs.iter().filter_map(|q| q.human.map(|h| (q.r.eval_score, h))).unzip();
    let mut cohorts: BTreeMap<Option<&str>, (usize, usize)> = BTreeMap::new();
    for q in reqs {
        let e = cohorts.entry(q.r.cohort.as_deref()).or_default();
        e.0 += 1;
        e.1 += usize::from(q.human.is_some());
    }
    let rows: Vec<Row<'_>> = reqs
        .iter()
        .map(|q| Row {
            group: None,
            cohort: q.r.cohort.as_deref(),
            prediction: 1.0 + 4.0 * q.r.eval_score,
            value: q.human,
        })
        .collect();
    let refs: Vec<&Row<'_>> = rows.iter().collect();
    let est = cell(None, &refs, &EstimateOptions::default());
    let mut undefined = BTreeMap::new();
    if let Some(why) = est.undefined.get("ppi") {
        undefined.insert("human_score".to_string(), why.clone());
    }
    let (agreement, agreement_ci) = match stats::corr::spearman(&x, &y) {
        Ok(c) => {
            let ci = stats::corr::spearman_fisher_ci(c.estimate, x.len(), 0.95).ok().map(|ci| [ci.lower, ci.upper]);
            (Some(c.estimate), ci)
        }
        Err(u) => {
            undefined.insert("agreement".to_string(), u.reason);
            (None, None)
        }
    };
    let w = Window {
        window: name.to_string(),
        requests: reqs.len(),
        labelled: x.len(),
        feedback_rate: x.len() as f64 / reqs.len() as f64,
        cohorts: cohorts
            .into_iter()
            .map(|(c, (n, l))| CohortFeedback {
                cohort: c.map(str::to_string),
                requests: n,
                labelled: l,
                rate: l as f64 / n as f64,
            })
            .collect(),
        mean_eval_score: scores.iter().sum::<f64>() / scores.len() as f64,
        human_score: est.ppi,
        agreement,
        agreement_ci,
        undefined,
    };
    (w, scores)
}

/// The tests between two consecutive windows (module docs); a figure undefined in either
/// window is not tested.
fn compare_windows(group: &Option<Option<String>>, a: &(Window, Vec<f64>), b: &(Window, Vec<f64>)) -> Vec<Change> {
    let (wa, wb) = (&a.0, &b.0);
    let z95 = normal_quantile(0.975);
    let change = |figure, before: f64, after: f64, se: f64, statistic: f64, p_value: f64| Change {
        group: group.clone(),
        figure,
        from: wa.window.clone(),
        to: wb.window.clone(),
        before,
        after,
        size: after - before,
        size_ci: [after - before - z95 * se, after - before + z95 * se],
        statistic,
        p_value,
        q_value: 1.0,
        flagged: false,
    };
    let two_sided = |z: f64| (2.0 * normal_sf(z.abs())).min(1.0);
    let mut out = Vec::new();
    if let (Some(h1), Some(h2)) = (wa.human_score, wb.human_score) {
        let se = (h1.std_error.powi(2) + h2.std_error.powi(2)).sqrt();
        if se > 0.0 {
            let z = (h2.estimate - h1.estimate) / se;
            out.push(change(Figure::HumanScore, h1.estimate, h2.estimate, se, z, two_sided(z)));
        }
    }
    if let (Some(r1), Some(r2)) = (wa.agreement, wb.agreement)
        && wa.labelled > 3
        && wb.labelled > 3
        && r1.abs() < 1.0
        && r2.abs() < 1.0
    {
        let se = (1.06 / (wa.labelled as f64 - 3.0) + 1.06 / (wb.labelled as f64 - 3.0)).sqrt();
        let z = (r2.atanh() - r1.atanh()) / se;
        // The size's interval: the Fisher-z interval of the difference, mapped back through
        // tanh around each window's coefficient is not symmetric; the delta method gives the
        // standard error of rho_2 - rho_1 on the rho scale.
        let se_rho = ((1.0 - r1 * r1).powi(2) * 1.06 / (wa.labelled as f64 - 3.0)
            + (1.0 - r2 * r2).powi(2) * 1.06 / (wb.labelled as f64 - 3.0))
            .sqrt();
        out.push(change(Figure::Agreement, r1, r2, se_rho, z, two_sided(z)));
    }
    if let Ok(t) = compare::welch_t_test(&b.1, &a.1) {
        let var = |s: &[f64]| {
            let m = s.iter().sum::<f64>() / s.len() as f64;
            s.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (s.len() as f64 - 1.0) / s.len() as f64
        };
        let se = (var(&a.1) + var(&b.1)).sqrt();
        out.push(change(Figure::EvalScore, wa.mean_eval_score, wb.mean_eval_score, se, t.statistic, t.p_value));
    }
    let (n1, n2) = (wa.requests as f64, wb.requests as f64);
    let (p1, p2) = (wa.feedback_rate, wb.feedback_rate);
    let pooled = (wa.labelled + wb.labelled) as f64 / (n1 + n2);
    let se0 = (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)).sqrt();
    if se0 > 0.0 {
        let z = (p2 - p1) / se0;
        let se = (p1 * (1.0 - p1) / n1 + p2 * (1.0 - p2) / n2).sqrt();
        out.push(change(Figure::FeedbackRate, p1, p2, se, z, two_sided(z)));
    }
    out
}

/// The `check` thresholds on the latest window: the drop of the agreement and of the mean human
/// score from the week before the latest to the latest (`before - after`; a rise is a negative
/// drop). Undefined (and failing) when there are fewer than two weeks or the figure is
/// undefined in either.
pub fn drop_checks(
    store: &dyn Store,
    scope: &Scope,
    max_agreement_drop: Option<f64>,
    max_human_score_drop: Option<f64>,
) -> Result<Vec<CheckResult>> {
    let r = trend(store, scope, &TrendOptions::default())?;
    let windows = r.series.first().map_or(&[][..], |s| &s.windows[..]);
    let last_two = match windows {
        [.., a, b] => Ok((a, b)),
        _ => Err(format!("{} week(s) of requests, 2 needed", windows.len())),
    };
    let mut out = Vec::new();
    let mut push = |name: &str, max: f64, figure: fn(&Window) -> Option<f64>| {
        let drop = last_two.as_ref().map_err(Clone::clone).and_then(|(a, b)| match (figure(a), figure(b)) {
            (Some(x), Some(y)) => Ok((x - y, format!("{} -> {}", a.window, b.window))),
            _ => Err(format!("undefined in {} or {}", a.window, b.window)),
        });
        out.push(match drop {
            Ok((d, weeks)) => CheckResult {
                name: format!("{name} ({weeks})"),
                value: Some(d),
                limit: format!("<= {max}"),
                pass: d <= max,
                reason: None,
            },
            Err(why) => CheckResult {
                name: name.to_string(),
                value: None,
                limit: format!("<= {max}"),
                pass: false,
                reason: Some(why),
            },
        });
    };
    if let Some(m) = max_agreement_drop {
        push("agreement_drop", m, |w| w.agreement);
    }
    if let Some(m) = max_human_score_drop {
        push("human_score_drop", m, |w| w.human_score.map(|h| h.estimate));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_weeks_are_named_in_utc() {
        let t = "2026-12-06T23:30:00Z".parse::<DateTime<Utc>>().unwrap().timestamp_micros();
        assert_eq!(window_of(t, Every::Day), "2026-12-06");
        assert_eq!(window_of(t, Every::Week), "2026-W49");
    }
}
