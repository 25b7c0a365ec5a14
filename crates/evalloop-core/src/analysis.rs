//! The analysis commands: correlate, calibration, disagreements, bias, agreement between
//! people, preferences between two outputs, impact and the CI gate.
//!
//! Each reads whole result sets from the store (the join and the human-score aggregation run in
//! the database, see [`crate::store::Store::scored_requests`]) and computes its figures with
//! [`crate::stats`]. Undefined statistics are reported with their reason, never as NaN.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::feedback::{HumanPolicy, Verdict};
use crate::stats::{self, AgreementConfig, BootstrapConfig, CalibrationConfig, Outcome};
use crate::store::{CohortStats, Filter, ScoredColumns, ScoredQuery, ScoredRequest, Store};
use crate::{Error, Result};

mod preferences;
mod raters;
pub use preferences::*;
pub use raters::*;

/// What an analysis covers: the filter (window, evaluator, cohort, metadata) and the policy.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub filter: Filter,
    pub policy: HumanPolicy,
}

/// Picks the evaluator when the filter names none: the only one in the store, else an error
/// that lists them (mixing two evaluators' scores in one correlation would be meaningless).
pub fn resolve_evaluator(store: &dyn Store, filter: &Filter) -> Result<Filter> {
    if filter.evaluator.is_some() {
        return Ok(filter.clone());
    }
    let all = store.evaluators()?;
    match all.as_slice() {
        [] => Err(Error::Input(format!("store {} holds no eval logs yet; ingest some first", store.location()))),
        [one] => Ok(Filter { evaluator: Some(one.clone()), ..filter.clone() }),
        many => Err(Error::Input(format!(
            "store holds several evaluators ({}); pick one with --evaluator, or use --by evaluator",
            many.join(", ")
        ))),
    }
}

/// Options for [`correlate`].
#[derive(Debug, Clone, Default)]
pub struct CorrelateOptions {
    /// Split by a dimension as well as the overall figure.
    pub by: Option<GroupBy>,
    /// Bootstrap resamples for percentile intervals; 0 (default) for none.
    pub bootstrap: usize,
    /// Seed of the bootstrap.
    pub seed: u64,
    /// A metadata key (e.g. `group_id`) for group-level (summary-level) correlation.
    pub group_key: Option<String>,
}

/// A dimension to split correlations by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    Cohort,
    Evaluator,
    UseCase,
}

/// The agreement between evaluator and human scores over one set of requests, flat, with the
/// feedback-loop article's field names. A statistic that is undefined is `null` and its reason is in `undefined`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Correlation {
    /// The split value (`--by`), absent for the overall figure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub n_samples: usize,
    pub pearson_r: Option<f64>,
    pub pearson_p: Option<f64>,
    /// 95% Fisher-z interval, [lower, upper].
    pub pearson_ci: Option<[f64; 2]>,
    pub spearman_r: Option<f64>,
    pub spearman_p: Option<f64>,
    /// 95% Fisher-z interval with Fieller's standard error sqrt(1.06 / (n - 3)).
    pub spearman_ci: Option<[f64; 2]>,
    /// Kendall's tau-b.
    pub kendall_tau: Option<f64>,
    pub kendall_p: Option<f64>,
    /// Percentile-bootstrap intervals, when asked for (`--bootstrap N`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<BootstrapIntervals>,
    /// Mean within-group correlations, when a group key is given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_level: Option<GroupLevel>,
    /// Statistic name -> why it is undefined.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub undefined: BTreeMap<String, String>,
}

/// Bootstrap intervals of the three coefficients.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BootstrapIntervals {
    pub n_resamples: usize,
    pub seed: u64,
    pub pearson_ci: Option<[f64; 2]>,
    pub spearman_ci: Option<[f64; 2]>,
    pub kendall_ci: Option<[f64; 2]>,
}

/// Group-level (summary-level) correlation: the mean over groups of within-group coefficients.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupLevel {
    pub key: String,
    pub spearman_r: Option<f64>,
    pub kendall_tau: Option<f64>,
    pub groups_used: usize,
    pub groups_total: usize,
}

/// Computes [`Correlation`] for paired evaluator scores `x` and human scores `y`.
pub fn correlation_of(x: &[f64], y: &[f64], bootstrap: usize, seed: u64) -> Correlation {
    let cfg = AgreementConfig {
        level: 0.95,
        bootstrap: (bootstrap > 0).then_some(BootstrapConfig { n_resamples: bootstrap, seed, level: 0.95 }),
    };
    let a = stats::corr::agreement(x, y, &cfg);
    let mut c = Correlation { n_samples: a.n, ..Default::default() };
    let mut boot =
        cfg.bootstrap.as_ref().map(|b| BootstrapIntervals { n_resamples: b.n_resamples, seed, ..Default::default() });
    for (name, o) in [("pearson", &a.pearson), ("spearman", &a.spearman), ("kendall", &a.kendall)] {
        match o {
            Outcome::Undefined(u) => {
                c.undefined.insert(name.to_string(), u.reason.clone());
            }
            Outcome::Defined(v) => {
                let ci = v.fisher_ci.as_ref().map(|ci| [ci.lower, ci.upper]);
                let b = v.bootstrap_ci.as_ref().and_then(|b| b.as_ref()).map(|b| [b.lower, b.upper]);
                let (est, p) = (Some(v.corr.estimate), Some(v.corr.p_value));
                match name {
                    "pearson" => (c.pearson_r, c.pearson_p, c.pearson_ci) = (est, p, ci),
                    "spearman" => (c.spearman_r, c.spearman_p, c.spearman_ci) = (est, p, ci),
                    _ => (c.kendall_tau, c.kendall_p) = (est, p),
                }
                if let Some(bi) = &mut boot {
                    match name {
                        "pearson" => bi.pearson_ci = b,
                        "spearman" => bi.spearman_ci = b,
                        _ => bi.kendall_ci = b,
                    }
                }
            }
        }
    }
    c.bootstrap = boot;
    c
}

/// Adds the group-level figures for rows that carry a group.
pub fn group_level_of(key: &str, rows: &[(String, f64, f64)]) -> GroupLevel {
    let g = stats::group::group_correlation(rows, 2);
    GroupLevel {
        key: key.to_string(),
        spearman_r: g.mean_spearman.ok(),
        kendall_tau: g.mean_kendall.ok(),
        groups_used: g.groups_used,
        groups_total: g.groups_total,
    }
}

/// The correlation of the scored rows `cols` (all of them, or the given ones in their order),
/// with the group-level figure when `opts.group_key` is set.
fn correlation_of_columns(
    cols: &ScoredColumns,
    rows: Option<&[usize]>,
    opts: &CorrelateOptions,
    group: Option<String>,
) -> Correlation {
    let (x, y): (std::borrow::Cow<'_, [f64]>, std::borrow::Cow<'_, [f64]>) = match rows {
        None => (cols.eval_score.as_slice().into(), cols.human_score.as_slice().into()),
        Some(rows) => (
            rows.iter().map(|&i| cols.eval_score[i]).collect::<Vec<_>>().into(),
            rows.iter().map(|&i| cols.human_score[i]).collect::<Vec<_>>().into(),
        ),
    };
    let mut c = correlation_of(&x, &y, opts.bootstrap, opts.seed);
    c.group = group;
    if let Some(key) = &opts.group_key {
        let all: Vec<usize>;
        let rows = match rows {
            Some(r) => r,
            None => {
                all = (0..cols.len()).collect();
                &all
            }
        };
        let g: Vec<(String, f64, f64)> = rows
            .iter()
            .filter_map(|&i| cols.group(i).map(|g| (g.to_string(), cols.eval_score[i], cols.human_score[i])))
            .collect();
        c.group_level = Some(group_level_of(key, &g));
    }
    c
}

/// `evalloop correlate`: the overall figure and, with `by`, one per split value.
#[derive(Debug, Clone, Serialize)]
pub struct CorrelateReport {
    pub evaluator: Option<String>,
    #[serde(flatten)]
    pub overall: Correlation,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub by: Vec<Correlation>,
}

/// Correlates evaluator and human scores over the scope.
pub fn correlate(store: &dyn Store, scope: &Scope, opts: &CorrelateOptions) -> Result<CorrelateReport> {
    let filter = if opts.by == Some(GroupBy::Evaluator) {
        scope.filter.clone()
    } else {
        resolve_evaluator(store, &scope.filter)?
    };
    let q = ScoredQuery {
        filter: filter.clone(),
        policy: scope.policy.clone(),
        group_key: opts.group_key.clone(),
        ..Default::default()
    };
    let cols = store.scored_columns(&q)?;
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    if let Some(by) = opts.by {
        for i in 0..cols.len() {
            let k = match by {
                GroupBy::Cohort => cols.cohort(i),
                GroupBy::Evaluator => Some(cols.evaluator(i)),
                GroupBy::UseCase => cols.use_case(i),
            };
            let k = k.unwrap_or("(none)");
            match groups.get_mut(k) {
                Some(v) => v.push(i),
                None => {
                    groups.insert(k.to_string(), vec![i]);
                }
            }
        }
    }
    let overall = if opts.by == Some(GroupBy::Evaluator) && groups.len() > 1 {
        let mut c = Correlation::default();
        c.undefined.insert("overall".into(), "several evaluators; see the per-evaluator figures".into());
        c
    } else {
        correlation_of_columns(&cols, None, opts, None)
    };
    let by = groups.into_iter().map(|(k, v)| correlation_of_columns(&cols, Some(&v), opts, Some(k))).collect();
    Ok(CorrelateReport { evaluator: filter.evaluator, overall, by })
}

/// Options for [`calibration`].
#[derive(Debug, Clone)]
pub struct CalibrationOptions {
    /// Number of bins for the ECE and the reliability table; default 10.
    pub bins: usize,
    /// The evaluator says "good" when its score is above this; default 0.7 (as in the feedback-loop article).
    pub threshold: f64,
}

impl Default for CalibrationOptions {
    fn default() -> Self {
        CalibrationOptions { bins: 10, threshold: 0.7 }
    }
}

/// `evalloop calibration`: the evaluator score as P(good) against human good/bad.
#[derive(Debug, Clone, Serialize)]
pub struct CalibrationSummary {
    pub evaluator: Option<String>,
    /// Requests labelled good or bad (neutral ones are left out).
    pub n_labelled: usize,
    pub n_good: usize,
    pub n_bad: usize,
    pub n_neutral_dropped: usize,
    pub report: Outcome<stats::CalibrationReport>,
}

/// Calibration of `scores` against good/bad verdicts (neutral rows dropped).
pub fn calibration_of(rows: &[(f64, f64)], policy: &HumanPolicy, opts: &CalibrationOptions) -> CalibrationSummary {
    let mut acc = stats::CalibrationAccumulator::new();
    let (mut good, mut bad, mut neutral) = (0, 0, 0);
    for &(score, human) in rows {
        match policy.verdict(human) {
            Verdict::Good => {
                good += 1;
                acc.update(score, true);
            }
            Verdict::Bad => {
                bad += 1;
                acc.update(score, false);
            }
            Verdict::Neutral => neutral += 1,
        }
    }
    let cfg = CalibrationConfig { n_bins: opts.bins, threshold: opts.threshold };
    CalibrationSummary {
        evaluator: None,
        n_labelled: good + bad,
        n_good: good,
        n_bad: bad,
        n_neutral_dropped: neutral,
        report: acc.compute(&cfg).into(),
    }
}

/// Runs the calibration analysis over the scope.
pub fn calibration(store: &dyn Store, scope: &Scope, opts: &CalibrationOptions) -> Result<CalibrationSummary> {
    let filter = resolve_evaluator(store, &scope.filter)?;
    let q = ScoredQuery { filter: filter.clone(), policy: scope.policy.clone(), ..Default::default() };
    let cols = store.scored_columns(&q)?;
    let rows: Vec<(f64, f64)> = cols.eval_score.iter().copied().zip(cols.human_score.iter().copied()).collect();
    let mut s = calibration_of(&rows, &scope.policy, opts);
    s.evaluator = filter.evaluator;
    Ok(s)
}

/// One request where the evaluator and people disagree.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Disagreement {
    pub request_id: String,
    pub eval_score: f64,
    pub human_score: f64,
    pub human_says_good: bool,
    pub evaluator_says_good: bool,
    pub cohort: Option<String>,
    pub prompt: String,
    pub output: String,
}

/// `evalloop disagreements`.
#[derive(Debug, Clone, Serialize)]
pub struct DisagreementReport {
    pub evaluator: Option<String>,
    pub threshold: f64,
    /// Requests with a good or bad human verdict.
    pub n_labelled: usize,
    /// Evaluator says good (score > threshold), people say bad.
    pub evaluator_good_human_bad: usize,
    /// Evaluator says not good, people say good.
    pub evaluator_bad_human_good: usize,
    /// Disagreements / labelled; `null` when nothing is labelled.
    pub disagreement_rate: Option<f64>,
    /// Disagreements per cohort.
    pub by_cohort: BTreeMap<String, usize>,
    /// The first `limit` disagreements, by request_id.
    pub rows: Vec<Disagreement>,
}

/// Whether a scored request is a disagreement: the evaluator says good (score > threshold) and
/// people say bad, or the evaluator says not good and people say good. Neutral never disagrees.
pub fn is_disagreement(eval_score: f64, verdict: Verdict, threshold: f64) -> bool {
    let evaluator_good = eval_score > threshold;
    matches!((evaluator_good, verdict), (true, Verdict::Bad) | (false, Verdict::Good))
}

/// Finds disagreements; with `export`, writes every one of them (with text) as JSON Lines.
pub fn disagreements(
    store: &dyn Store,
    scope: &Scope,
    threshold: f64,
    limit: usize,
    export: Option<&Path>,
) -> Result<DisagreementReport> {
    let filter = resolve_evaluator(store, &scope.filter)?;
    let q = ScoredQuery { filter: filter.clone(), policy: scope.policy.clone(), ..Default::default() };
    let cols = store.scored_columns(&q)?;
    let mut rep = DisagreementReport {
        evaluator: filter.evaluator.clone(),
        threshold,
        n_labelled: 0,
        evaluator_good_human_bad: 0,
        evaluator_bad_human_good: 0,
        disagreement_rate: None,
        by_cohort: BTreeMap::new(),
        rows: Vec::new(),
    };
    let mut ids = Vec::new();
    for r in 0..cols.len() {
        let v = scope.policy.verdict(cols.human_score[r]);
        if v == Verdict::Neutral {
            continue;
        }
        rep.n_labelled += 1;
        if is_disagreement(cols.eval_score[r], v, threshold) {
            if v == Verdict::Bad {
                rep.evaluator_good_human_bad += 1;
            } else {
                rep.evaluator_bad_human_good += 1;
            }
            let cohort = cols.cohort(r).unwrap_or("(none)");
            match rep.by_cohort.get_mut(cohort) {
                Some(n) => *n += 1,
                None => {
                    rep.by_cohort.insert(cohort.to_string(), 1);
                }
            }
            ids.push(r);
        }
    }
    let n = rep.evaluator_good_human_bad + rep.evaluator_bad_human_good;
    rep.disagreement_rate = (rep.n_labelled > 0).then(|| n as f64 / rep.n_labelled as f64);
    let wanted = if export.is_some() { ids.len() } else { limit.min(ids.len()) };
    let id_list: Vec<String> = ids[..wanted].iter().map(|&r| cols.request_id(r).to_string()).collect();
    let texts = store.request_texts(&id_list)?;
    let mut writer = match export {
        Some(p) => Some(crate::atomic::AtomicWriter::create(p)?),
        None => None,
    };
    for (&r, (_, text)) in ids[..wanted].iter().zip(texts) {
        let d = Disagreement {
            request_id: cols.request_id(r).to_string(),
            eval_score: cols.eval_score[r],
            human_score: cols.human_score[r],
            human_says_good: scope.policy.verdict(cols.human_score[r]) == Verdict::Good,
            evaluator_says_good: cols.eval_score[r] > threshold,
            cohort: cols.cohort(r).map(str::to_string),
            prompt: text.prompt,
            output: text.output,
        };
        if let Some(w) = &mut writer {
            w.write_json_line(&d)?;
        }
        if rep.rows.len() < limit {
            rep.rows.push(d);
        }
    }
    if let Some(w) = writer {
        w.commit()?;
    }
    Ok(rep)
}

/// One cohort in `evalloop bias`.
#[derive(Debug, Clone, Serialize)]
pub struct CohortBias {
    pub cohort: String,
    pub requests: u64,
    pub requests_with_feedback: u64,
    /// Requests with any feedback / requests.
    pub feedback_rate: f64,
    pub explicit_rate: f64,
    pub implicit_rate: f64,
    /// Good verdicts / requests with a human score; `null` when none has one.
    pub share_positive: Option<f64>,
    pub mean_eval_score: Option<f64>,
    /// The feedback rate is below `low_factor` x the median cohort rate.
    pub underrepresented: bool,
}

/// `evalloop bias`.
#[derive(Debug, Clone, Serialize)]
pub struct BiasReport {
    pub median_feedback_rate: Option<f64>,
    /// A cohort is flagged when its rate is below this factor times the median; default 0.5.
    pub low_factor: f64,
    pub cohorts: Vec<CohortBias>,
}

/// Who leaves feedback: per-cohort rates, share positive, mean evaluator score, and a flag on
/// cohorts whose feedback rate is far below the median.
pub fn bias_of(stats: &[CohortStats], low_factor: f64) -> BiasReport {
    let rate = |n: u64, d: u64| if d == 0 { 0.0 } else { n as f64 / d as f64 };
    let mut rates: Vec<f64> = stats.iter().map(|c| rate(c.with_feedback, c.requests)).collect();
    rates.sort_by(f64::total_cmp);
    let median = match rates.len() {
        0 => None,
        n if n % 2 == 1 => Some(rates[n / 2]),
        n => Some((rates[n / 2 - 1] + rates[n / 2]) / 2.0),
    };
    let cohorts = stats
        .iter()
        .map(|c| {
            let fr = rate(c.with_feedback, c.requests);
            CohortBias {
                cohort: c.cohort.clone().unwrap_or_else(|| "(none)".into()),
                requests: c.requests,
                requests_with_feedback: c.with_feedback,
                feedback_rate: fr,
                explicit_rate: rate(c.with_explicit, c.requests),
                implicit_rate: rate(c.with_implicit, c.requests),
                share_positive: (c.with_human_score > 0).then(|| rate(c.positive, c.with_human_score)),
                mean_eval_score: c.mean_eval_score,
                underrepresented: median.is_some_and(|m| fr < low_factor * m),
            }
        })
        .collect();
    BiasReport { median_feedback_rate: median, low_factor, cohorts }
}

/// Runs the bias analysis over the scope.
pub fn bias(store: &dyn Store, scope: &Scope, low_factor: f64) -> Result<BiasReport> {
    let filter = resolve_evaluator(store, &scope.filter).unwrap_or_else(|_| scope.filter.clone());
    Ok(bias_of(&store.cohort_stats(&filter, &scope.policy)?, low_factor))
}

/// How `impact` splits requests into before and after.
#[derive(Debug, Clone)]
pub enum ImpactSplit {
    /// Requests before `before` against requests at or after `after`.
    Dates { before: chrono::DateTime<chrono::Utc>, after: chrono::DateTime<chrono::Utc> },
    /// Two evaluators over the same requests.
    Evaluators { baseline: String, candidate: String },
    /// `metadata[key] == before` against `metadata[key] == after`.
    Metadata { key: String, before: String, after: String },
}

impl ImpactSplit {
    /// The split that exactly one pair of options names: `before` and `after` (RFC 3339 or
    /// `YYYY-MM-DD`), `baseline_evaluator` and `candidate`, or `metadata` (`KEY=BEFORE:AFTER`);
    /// errors name the options as `--before`, `--after`, ... (the command line's flags).
    pub fn from_options(
        before: Option<&str>,
        after: Option<&str>,
        baseline_evaluator: Option<&str>,
        candidate: Option<&str>,
        metadata: Option<&str>,
    ) -> Result<ImpactSplit> {
        let date = |flag: &str, v: &str| {
            crate::record::parse_date_arg(v).map_err(|e| Error::Input(format!("--{flag}: {}", e.reason)))
        };
        match (before, after, baseline_evaluator, candidate, metadata) {
            (Some(b), Some(f), None, None, None) => {
                let (before, after) = (date("before", b)?, date("after", f)?);
                // Baseline is before --before, treatment at or after --after: a request between an
                // earlier --after and --before would count on both sides.
                if after < before {
                    return Err(Error::Input(format!(
                        "--after {f} is earlier than --before {b}: the windows would overlap; give --after at or \
                         after --before"
                    )));
                }
                Ok(ImpactSplit::Dates { before, after })
            }
            (None, None, Some(b), Some(c), None) => {
                Ok(ImpactSplit::Evaluators { baseline: b.to_string(), candidate: c.to_string() })
            }
            (None, None, None, None, Some(m)) => {
                let bad =
                    || Error::Input(format!("--metadata {m:?}: expected KEY=BEFORE:AFTER, e.g. prompt_version=v3:v4"));
                let (key, vals) = m.split_once('=').ok_or_else(bad)?;
                let (before, after) = vals.split_once(':').ok_or_else(bad)?;
                if key.is_empty() || before.is_empty() || after.is_empty() {
                    return Err(bad());
                }
                Ok(ImpactSplit::Metadata { key: key.into(), before: before.into(), after: after.into() })
            }
            _ => Err(Error::Input(
                "impact: give exactly one of --before/--after, --baseline-evaluator/--candidate, or --metadata".into(),
            )),
        }
    }
}

/// `evalloop impact`.
#[derive(Debug, Clone, Serialize)]
pub struct ImpactReport {
    pub split: String,
    pub alpha: f64,
    /// Evaluator `overall` scores, after (treatment) against before (baseline).
    pub eval_scores: stats::ImpactComparison,
    pub eval_significant: bool,
    /// Human scores, after against before; for an evaluator split the humans are the same, so
    /// this compares each evaluator's agreement with them instead (see `agreement`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub human_scores: Option<stats::ImpactComparison>,
    pub human_significant: Option<bool>,
    /// For an evaluator split: Spearman of each with the human scores and Williams' test.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agreement: Option<EvaluatorAgreement>,
    /// For a date or metadata split: the prediction-powered (PPI++) mean human score of each
    /// side, stratified by cohort, and the z-test of their difference (`evalloop estimate`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ppi: Option<Outcome<crate::estimate::PpiComparison>>,
}

/// Two evaluators' agreement with the same human scores.
#[derive(Debug, Clone, Serialize)]
pub struct EvaluatorAgreement {
    pub n_samples: usize,
    pub baseline_spearman: Option<f64>,
    pub candidate_spearman: Option<f64>,
    pub williams: Outcome<stats::WilliamsTest>,
}

fn significant(c: &stats::ImpactComparison, alpha: f64) -> bool {
    c.welch.as_ref().is_some_and(|w| w.p_value < alpha)
}

/// Measures the impact of a change: before/after on evaluator scores and on human scores.
pub fn impact(
    store: &dyn Store,
    scope: &Scope,
    split: &ImpactSplit,
    alpha: f64,
    bootstrap: usize,
    seed: u64,
) -> Result<ImpactReport> {
    let boot = BootstrapConfig { n_resamples: bootstrap.max(1), seed, level: 0.95 };
    let human = |f: &Filter| -> Result<Vec<ScoredRequest>> {
        Ok(store.scored_requests(&ScoredQuery {
            filter: f.clone(),
            policy: scope.policy.clone(),
            ..Default::default()
        })?)
    };
    let (before, after, label) = match split {
        ImpactSplit::Dates { before, after } => {
            let base = resolve_evaluator(store, &scope.filter)?;
            let b = Filter { until: Some(*before), ..base.clone() };
            let a = Filter { since: Some(*after), ..base };
            (b, a, format!("timestamp < {before} vs >= {after}"))
        }
        ImpactSplit::Metadata { key, before, after } => {
            let base = resolve_evaluator(store, &scope.filter)?;
            let mut b = base.clone();
            b.metadata.push((key.clone(), before.clone()));
            let mut a = base;
            a.metadata.push((key.clone(), after.clone()));
            (b, a, format!("metadata.{key} = {before} vs {after}"))
        }
        ImpactSplit::Evaluators { baseline, candidate } => {
            let b = Filter { evaluator: Some(baseline.clone()), ..scope.filter.clone() };
            let a = Filter { evaluator: Some(candidate.clone()), ..scope.filter.clone() };
            let eb = store.eval_scores(&b)?;
            let ea = store.eval_scores(&a)?;
            let eval_scores = stats::compare::compare_samples(&ea, &eb, &boot);
            // Pair the two evaluators on the requests both scored and people judged.
            let hb: BTreeMap<String, (f64, f64)> =
                human(&b)?.into_iter().map(|r| (r.request_id, (r.eval_score, r.human_score))).collect();
            let (mut xb, mut xa, mut y) = (Vec::new(), Vec::new(), Vec::new());
            for r in human(&a)? {
                if let Some((sb, h)) = hb.get(&r.request_id) {
                    xb.push(*sb);
                    xa.push(r.eval_score);
                    y.push(*h);
                }
            }
            let rho = |x: &[f64]| stats::corr::spearman(x, &y).ok().map(|c| c.estimate);
            let (rb, ra) = (rho(&xb), rho(&xa));
            let williams = match (ra, rb, stats::corr::spearman(&xa, &xb).ok()) {
                (Some(ra), Some(rb), Some(rab)) => {
                    stats::dependent::williams_test(ra, rb, rab.estimate, y.len()).into()
                }
                _ => Outcome::Undefined(stats::Undefined::new("a correlation is undefined on the paired requests")),
            };
            return Ok(ImpactReport {
                split: format!("evaluator {baseline} vs {candidate}"),
                alpha,
                eval_significant: significant(&eval_scores, alpha),
                eval_scores,
                human_scores: None,
                human_significant: None,
                agreement: Some(EvaluatorAgreement {
                    n_samples: y.len(),
                    baseline_spearman: rb,
                    candidate_spearman: ra,
                    williams,
                }),
                ppi: None,
            });
        }
    };
    let eval_scores = stats::compare::compare_samples(&store.eval_scores(&after)?, &store.eval_scores(&before)?, &boot);
    let hb: Vec<f64> = human(&before)?.iter().map(|r| r.human_score).collect();
    let ha: Vec<f64> = human(&after)?.iter().map(|r| r.human_score).collect();
    let human_scores = stats::compare::compare_samples(&ha, &hb, &boot);
    let ppi = crate::estimate::compare_sides(store, &scope.policy, &before, &after)?.into();
    Ok(ImpactReport {
        split: label,
        alpha,
        eval_significant: significant(&eval_scores, alpha),
        eval_scores,
        human_significant: Some(significant(&human_scores, alpha)),
        human_scores: Some(human_scores),
        agreement: None,
        ppi: Some(ppi),
    })
}

/// `[thresholds]` of a CI config: every key optional; an absent key is not checked.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    pub min_spearman_r: Option<f64>,
    pub min_pearson_r: Option<f64>,
    pub min_kendall_tau: Option<f64>,
    pub max_ece: Option<f64>,
    pub max_brier: Option<f64>,
    pub min_auc: Option<f64>,
    pub min_n_samples: Option<usize>,
    pub max_disagreement_rate: Option<f64>,
    /// Largest allowed drop of the evaluator-human Spearman from the week before the latest to
    /// the latest (ISO weeks, UTC; `evalloop trend`).
    pub max_agreement_drop: Option<f64>,
    /// Largest allowed drop of the mean human score (PPI++) from the week before the latest to
    /// the latest.
    pub max_human_score_drop: Option<f64>,
    /// Minimum Krippendorff's alpha (ordinal) between people on the overall 1-5 ratings of the
    /// requests several people rated: below it the labels are too noisy to judge an evaluator
    /// by; undefined (no request with two raters) fails too.
    pub min_human_alpha: Option<f64>,
    /// The evaluator-says-good threshold for disagreements and calibration; default 0.7.
    pub threshold: Option<f64>,
    /// ECE bins; default 10.
    pub bins: Option<usize>,
    /// Per-cohort minimums: `[thresholds.cohorts.NAME] min_spearman_r = .., min_n_samples = ..`.
    pub cohorts: BTreeMap<String, CohortThresholds>,
}

/// Per-cohort minimums for the CI gate.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CohortThresholds {
    pub min_spearman_r: Option<f64>,
    pub min_n_samples: Option<usize>,
}

/// One row of the gate's table.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub name: String,
    /// `None` when the statistic is undefined (that fails the check).
    pub value: Option<f64>,
    /// `>= x` or `<= x`.
    pub limit: String,
    pub pass: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `evalloop check`.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub evaluator: Option<String>,
    pub pass: bool,
    pub checks: Vec<CheckResult>,
}

fn check_min(name: &str, value: Option<f64>, min: f64, undefined: Option<&String>) -> CheckResult {
    CheckResult {
        name: name.into(),
        value,
        limit: format!(">= {min}"),
        pass: value.is_some_and(|v| v >= min),
        reason: if value.is_none() { Some(undefined.cloned().unwrap_or_else(|| "undefined".into())) } else { None },
    }
}

fn check_max(name: &str, value: Option<f64>, max: f64, undefined: Option<&str>) -> CheckResult {
    CheckResult {
        name: name.into(),
        value,
        limit: format!("<= {max}"),
        pass: value.is_some_and(|v| v <= max),
        reason: if value.is_none() { Some(undefined.unwrap_or("undefined").to_string()) } else { None },
    }
}

/// The CI gate: every configured threshold, evaluated over the scope.
pub fn check(store: &dyn Store, scope: &Scope, t: &Thresholds) -> Result<CheckReport> {
    let filter = resolve_evaluator(store, &scope.filter)?;
    let q = ScoredQuery { filter: filter.clone(), policy: scope.policy.clone(), ..Default::default() };
    let cols = store.scored_columns(&q)?;
    let threshold = t.threshold.unwrap_or(0.7);
    let opts = CorrelateOptions::default();
    let c = correlation_of_columns(&cols, None, &opts, None);
    let mut checks = Vec::new();
    if let Some(m) = t.min_n_samples {
        checks.push(check_min("n_samples", Some(c.n_samples as f64), m as f64, None));
    }
    if let Some(m) = t.min_spearman_r {
        checks.push(check_min("spearman_r", c.spearman_r, m, c.undefined.get("spearman")));
    }
    if let Some(m) = t.min_pearson_r {
        checks.push(check_min("pearson_r", c.pearson_r, m, c.undefined.get("pearson")));
    }
    if let Some(m) = t.min_kendall_tau {
        checks.push(check_min("kendall_tau", c.kendall_tau, m, c.undefined.get("kendall")));
    }
    if t.max_ece.is_some() || t.max_brier.is_some() || t.min_auc.is_some() {
        let pairs: Vec<(f64, f64)> = cols.eval_score.iter().copied().zip(cols.human_score.iter().copied()).collect();
        let cal = calibration_of(&pairs, &scope.policy, &CalibrationOptions { bins: t.bins.unwrap_or(10), threshold });
        let why = match &cal.report {
            Outcome::Undefined(u) => Some(u.reason.clone()),
            Outcome::Defined(_) => None,
        };
        let rep = cal.report.as_ref();
        if let Some(m) = t.max_ece {
            checks.push(check_max("ece", rep.map(|r| r.uniform.ece), m, why.as_deref()));
        }
        if let Some(m) = t.max_brier {
            checks.push(check_max("brier", rep.map(|r| r.brier), m, why.as_deref()));
        }
        if let Some(m) = t.min_auc {
            let auc = rep.and_then(|r| r.roc_auc.as_ref().copied());
            let why = why.or_else(|| match rep.map(|r| &r.roc_auc) {
                Some(Outcome::Undefined(u)) => Some(u.reason.clone()),
                _ => None,
            });
            checks.push(check_min("roc_auc", auc, m, why.as_ref()));
        }
    }
    if let Some(m) = t.max_disagreement_rate {
        let (mut n, mut d) = (0usize, 0usize);
        for (&e, &h) in cols.eval_score.iter().zip(&cols.human_score) {
            let v = scope.policy.verdict(h);
            if v != Verdict::Neutral {
                n += 1;
                d += usize::from(is_disagreement(e, v, threshold));
            }
        }
        let rate = (n > 0).then(|| d as f64 / n as f64);
        checks.push(check_max("disagreement_rate", rate, m, Some("no request is labelled good or bad")));
    }
    if let Some(m) = t.min_human_alpha {
        let opts = RaterAgreementOptions { bootstrap: 0, ..Default::default() };
        let people = rater_agreement(store, scope, &opts)?;
        let (alpha, why) = match &people.ratings.agreement.alpha {
            Outcome::Defined(a) => (Some(*a), None),
            Outcome::Undefined(u) => (None, Some(u.reason.clone())),
        };
        checks.push(check_min("human_alpha", alpha, m, why.as_ref()));
    }
    for (cohort, ct) in &t.cohorts {
        let sub: Vec<usize> = (0..cols.len()).filter(|&i| cols.cohort(i) == Some(cohort.as_str())).collect();
        let cc = correlation_of_columns(&cols, Some(&sub), &opts, Some(cohort.clone()));
        if let Some(m) = ct.min_n_samples {
            checks.push(check_min(&format!("cohort {cohort}: n_samples"), Some(cc.n_samples as f64), m as f64, None));
        }
        if let Some(m) = ct.min_spearman_r {
            checks.push(check_min(
                &format!("cohort {cohort}: spearman_r"),
                cc.spearman_r,
                m,
                cc.undefined.get("spearman"),
            ));
        }
    }
    if t.max_agreement_drop.is_some() || t.max_human_score_drop.is_some() {
        checks.extend(crate::trend::drop_checks(store, scope, t.max_agreement_drop, t.max_human_score_drop)?);
    }
    if checks.is_empty() {
        return Err(Error::Input("check: the config's [thresholds] names no threshold".into()));
    }
    Ok(CheckReport { evaluator: filter.evaluator, pass: checks.iter().all(|c| c.pass), checks })
}

/// JUnit XML for a check report: one test case per threshold, failures with value and limit.
pub fn junit_xml(r: &CheckReport) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&apos;")
    };
    let failures = r.checks.iter().filter(|c| !c.pass).count();
    let mut x = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"evalloop check\" tests=\"{}\" failures=\"{failures}\">\n  <testsuite name=\"evalloop.check\" tests=\"{}\" failures=\"{failures}\">\n",
        r.checks.len(),
        r.checks.len()
    );
    for c in &r.checks {
        let value = c.value.map_or("undefined".to_string(), |v| format!("{v}"));
        x.push_str(&format!("    <testcase classname=\"evalloop.check\" name=\"{}\"", esc(&c.name)));
        if c.pass {
            x.push_str("/>\n");
        } else {
            let msg = format!(
                "{} = {value}, required {}{}",
                c.name,
                c.limit,
                c.reason.as_ref().map_or(String::new(), |r| format!(" ({r})"))
            );
            x.push_str(&format!(">\n      <failure message=\"{}\"/>\n    </testcase>\n", esc(&msg)));
        }
    }
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neutral_never_disagrees_and_threshold_is_strict() {
        assert!(is_disagreement(0.71, Verdict::Bad, 0.7));
        assert!(!is_disagreement(0.7, Verdict::Bad, 0.7), "0.7 is not above the threshold");
        assert!(is_disagreement(0.7, Verdict::Good, 0.7));
        assert!(!is_disagreement(0.9, Verdict::Neutral, 0.7));
        assert!(!is_disagreement(0.1, Verdict::Neutral, 0.7));
    }

    #[test]
    fn bias_flags_cohorts_far_below_the_median_rate() {
        let c = |name: &str, requests, fb| CohortStats {
            cohort: Some(name.into()),
            requests,
            with_feedback: fb,
            with_explicit: fb,
            with_implicit: 0,
            with_human_score: fb,
            positive: fb / 2,
            mean_eval_score: Some(0.5),
        };
        let r = bias_of(&[c("a", 100, 10), c("b", 100, 12), c("c", 100, 2)], 0.5);
        assert_eq!(r.median_feedback_rate, Some(0.10));
        let flags: Vec<bool> = r.cohorts.iter().map(|c| c.underrepresented).collect();
        assert_eq!(flags, vec![false, false, true]);
    }

    #[test]
    fn undefined_correlations_carry_a_reason_not_nan() {
        let c = correlation_of(&[0.5, 0.5, 0.5, 0.5], &[1.0, 2.0, 3.0, 4.0], 0, 0);
        assert_eq!(c.pearson_r, None);
        assert!(c.undefined.contains_key("pearson"));
        let js = serde_json::to_string(&c).unwrap();
        assert!(!js.contains("NaN"), "{js}");
    }

    #[test]
    fn junit_escapes_and_counts_failures() {
        let r = CheckReport {
            evaluator: None,
            pass: false,
            checks: vec![
                CheckResult {
                    name: "spearman_r".into(),
                    value: Some(0.5),
                    limit: ">= 0.3".into(),
                    pass: true,
                    reason: None,
                },
                CheckResult {
                    name: "cohort <x>: n_samples".into(),
                    value: Some(3.0),
                    limit: ">= 10".into(),
                    pass: false,
                    reason: None,
                },
            ],
        };
        let x = junit_xml(&r);
        assert!(x.contains("failures=\"1\""));
        assert!(x.contains("cohort &lt;x&gt;: n_samples"));
    }
}
