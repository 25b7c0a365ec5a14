//! Agreement between people (`evalloop agreement`) and the human ceiling an evaluator is
//! judged against, from the explicit ratings and thumbs of the requests several people rated.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::Scope;
use crate::Result;
use crate::record::{FeedbackType, FeedbackValue};
use crate::stats::agreement::MeasurementLevel;
use crate::stats::{self, BootstrapConfig, Outcome, Undefined};
use crate::store::{RaterEvent, Store};

/// The level of measurement `evalloop agreement` uses (`--level`, default `auto`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AgreementLevel {
    /// Nominal for thumbs; ordinal (the headline) and interval for 1-5 ratings.
    #[default]
    Auto,
    /// Nominal for both thumbs and ratings.
    Nominal,
    /// Ordinal for both.
    Ordinal,
    /// Interval for both.
    Interval,
}

/// What `evalloop agreement --by` splits the requests by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum AgreementBy {
    /// `metadata.user_cohort`.
    Cohort,
    /// `metadata.use_case` (`--by use-case` or `use_case`).
    #[value(alias = "use_case")]
    UseCase,
}

/// Options for [`rater_agreement`].
#[derive(Debug, Clone)]
pub struct RaterAgreementOptions {
    /// Level of measurement of alpha; default [`AgreementLevel::Auto`].
    pub level: AgreementLevel,
    /// Bootstrap resamples for the interval of alpha; default 1000 (0 leaves it undefined).
    pub bootstrap: usize,
    /// Seed of the bootstrap; default 7.
    pub seed: u64,
    /// Read the ratings on this human dimension instead of the overall ratings and thumbs;
    /// default none.
    pub dimension: Option<String>,
    /// Also report each cohort or use case on its own; default none.
    pub by: Option<AgreementBy>,
}

impl Default for RaterAgreementOptions {
    fn default() -> Self {
        RaterAgreementOptions { level: AgreementLevel::Auto, bootstrap: 1000, seed: 7, dimension: None, by: None }
    }
}

/// Krippendorff's alpha at one further level of measurement, beside a matrix's headline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlphaAtLevel {
    pub level: MeasurementLevel,
    pub alpha: Outcome<f64>,
    /// 95% percentile bootstrap interval over requests.
    pub alpha_ci: Outcome<stats::BootstrapCi>,
}

/// Raters need this many requests that they, at least one other person and the evaluator
/// rated to enter the human ceiling (Spearman's rho on fewer says little).
pub const MIN_CEILING_ITEMS: usize = 5;

/// The human ceiling: how well the evaluator agrees with people beside how well one person
/// agrees with the others. For each rater `j` with at least [`MIN_CEILING_ITEMS`] requests that
/// `j` and at least one other person rated (and the evaluator scored), on those requests: the
/// Spearman correlation of `j` with the mean of the other people's values (leave-one-rater-out),
/// of the evaluator with that same mean, and of the evaluator with `j`. Each figure is the
/// unweighted mean over the raters where all three are defined. Spearman, not kappa, because the
/// evaluator's score is continuous.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HumanCeiling {
    /// The evaluator whose `overall` score is compared.
    pub evaluator: String,
    /// Raters whose three correlations entered the means.
    pub raters_used: usize,
    /// Raters with enough requests whose correlations were undefined (a constant column), left
    /// out.
    pub raters_undefined: usize,
    /// Mean Spearman of one person with the mean of the others: the ceiling.
    pub person_vs_others: Outcome<f64>,
    /// Mean Spearman of the evaluator with the same means of the others.
    pub evaluator_vs_others: Outcome<f64>,
    /// Mean Spearman of the evaluator with each single person.
    pub evaluator_vs_person: Outcome<f64>,
    /// `evaluator_vs_others / person_vs_others`: the share of the agreement people reach with
    /// each other that the evaluator reaches; undefined when the ceiling is not positive.
    pub share_of_ceiling: Outcome<f64>,
}

/// Agreement between people on one kind of explicit feedback (1-5 ratings or thumbs).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MatrixAgreement {
    /// Requests with at least one value of this kind from a known user.
    pub requests_rated: usize,
    /// Users who gave at least one value of this kind.
    pub raters: usize,
    /// The headline figures: items and raters used (requests rated by two or more people),
    /// alpha with its level and 95% bootstrap interval, mean Cohen's kappa over rater pairs,
    /// percent agreement.
    pub agreement: stats::agreement::RaterAgreement,
    /// Alpha at the other levels reported (interval for ratings under `--level auto`).
    pub other_levels: Vec<AlphaAtLevel>,
    /// The evaluator against the human ceiling; undefined when no single evaluator is known
    /// (name one with `--evaluator`) or too few requests have several raters.
    pub ceiling: Outcome<HumanCeiling>,
}

/// One cohort's or use case's agreement (`--by`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgreementGroup {
    /// The cohort or use case; `(none)` for requests without one.
    pub group: String,
    /// Requests of the group with an explicit rating or thumb (or a rating on the dimension).
    pub requests_with_feedback: usize,
    pub events_without_user: usize,
    pub events_superseded: usize,
    pub ratings: MatrixAgreement,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thumbs: Option<MatrixAgreement>,
}

/// `evalloop agreement`: do people agree with each other?
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RaterAgreementReport {
    /// Requests in the filter.
    pub requests: usize,
    /// The human dimension read (`--dimension`); absent for the overall ratings and thumbs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dimension: Option<String>,
    /// Explicit ratings and thumbs skipped because they carry no `user_id`.
    pub events_without_user: usize,
    /// Explicit ratings and thumbs replaced by a later one of the same kind from the same user
    /// on the same request.
    pub events_superseded: usize,
    /// Overall 1-5 `explicit_rating`s, or with `--dimension` the ratings on that dimension.
    pub ratings: MatrixAgreement,
    /// Thumbs: up = 1, down = 0 (absent with `--dimension`: thumbs carry no dimension).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thumbs: Option<MatrixAgreement>,
    /// What `groups` splits by (`--by`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<AgreementBy>,
    /// Each group's agreement, in the order of their names.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<AgreementGroup>,
}

/// One reliability matrix being filled: per request, per user, the latest value and its time.
pub type Cells = BTreeMap<String, BTreeMap<String, (chrono::DateTime<chrono::Utc>, f64)>>;

/// Puts one value in `cells`, keeping the latest per request and user (by timestamp; on equal
/// timestamps the one put later wins). Returns whether an earlier value was replaced.
fn put_latest(cells: &mut Cells, e: &RaterEvent, user: &str, value: f64) -> bool {
    let slot = cells.entry(e.event.request_id.clone()).or_default();
    match slot.get(user) {
        Some((ts, _)) if *ts > e.event.timestamp => true,
        Some(_) => {
            slot.insert(user.to_string(), (e.event.timestamp, value));
            true
        }
        None => {
            slot.insert(user.to_string(), (e.event.timestamp, value));
            false
        }
    }
}

/// The matrices of a set of events: overall (or dimension) ratings and thumbs, with the counts
/// of events without a user and of superseded ones.
#[derive(Debug, Default)]
pub struct RaterCells {
    pub ratings: Cells,
    pub thumbs: Cells,
    pub without_user: usize,
    pub superseded: usize,
}

impl RaterCells {
    /// Sorts the explicit ratings (those of `dimension` when given, else the overall ones) and
    /// thumbs into their matrices; other events are ignored.
    pub fn of<'a>(events: impl IntoIterator<Item = &'a RaterEvent>, dimension: Option<&str>) -> RaterCells {
        let mut c = RaterCells::default();
        for e in events {
            let (cells, value) = match (e.event.feedback_type, &e.event.value) {
                (FeedbackType::Rating, FeedbackValue::Rating(r)) if e.event.dimension.as_deref() == dimension => {
                    (&mut c.ratings, f64::from(*r))
                }
                (FeedbackType::ThumbsUp, _) if dimension.is_none() => (&mut c.thumbs, 1.0),
                (FeedbackType::ThumbsDown, _) if dimension.is_none() => (&mut c.thumbs, 0.0),
                _ => continue,
            };
            match &e.event.user_id {
                None => c.without_user += 1,
                Some(user) => c.superseded += usize::from(put_latest(cells, e, user, value)),
            }
        }
        c
    }
}

/// The reliability matrix of `cells`: rows the requests in id order, columns the users in id
/// order.
pub fn units_of(cells: &Cells) -> Vec<Vec<Option<f64>>> {
    let users: BTreeSet<&String> = cells.values().flat_map(|row| row.keys()).collect();
    let column: BTreeMap<&String, usize> = users.iter().enumerate().map(|(i, u)| (*u, i)).collect();
    cells
        .values()
        .map(|row| {
            let mut r = vec![None; users.len()];
            for (u, (_, v)) in row {
                r[column[u]] = Some(*v);
            }
            r
        })
        .collect()
}

/// The human ceiling (see [`HumanCeiling`]) of the matrix `cells` against the evaluator's
/// scores by request id.
pub fn human_ceiling(
    cells: &Cells,
    scores: &BTreeMap<String, f64>,
    evaluator: &str,
) -> Result<HumanCeiling, Undefined> {
    // Per rater: (evaluator score, the rater's value, the mean of the others) on each request
    // the rater and someone else rated and the evaluator scored.
    let mut per_rater: BTreeMap<&str, Vec<(f64, f64, f64)>> = BTreeMap::new();
    for (request, row) in cells {
        let Some(&score) = scores.get(request) else { continue };
        if row.len() < 2 {
            continue;
        }
        let total: f64 = row.values().map(|(_, v)| v).sum();
        for (user, (_, v)) in row {
            let others = (total - v) / (row.len() - 1) as f64;
            per_rater.entry(user.as_str()).or_default().push((score, *v, others));
        }
    }
    let (mut person, mut eval_others, mut eval_person, mut undefined) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for items in per_rater.values().filter(|v| v.len() >= MIN_CEILING_ITEMS) {
        let e: Vec<f64> = items.iter().map(|t| t.0).collect();
        let p: Vec<f64> = items.iter().map(|t| t.1).collect();
        let o: Vec<f64> = items.iter().map(|t| t.2).collect();
        let rho = |a: &[f64], b: &[f64]| stats::corr::spearman(a, b).ok().map(|c| c.estimate);
        match (rho(&p, &o), rho(&e, &o), rho(&e, &p)) {
            (Some(a), Some(b), Some(c)) => {
                person.push(a);
                eval_others.push(b);
                eval_person.push(c);
            }
            _ => undefined += 1,
        }
    }
    if person.is_empty() {
        return Err(Undefined::new(if undefined > 0 {
            format!("the correlations are undefined for all {undefined} raters with enough requests")
        } else {
            format!(
                "no rater has {MIN_CEILING_ITEMS} or more requests that another person also rated and {evaluator} scored"
            )
        }));
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (ceiling, reached) = (mean(&person), mean(&eval_others));
    let share = if ceiling > 0.0 {
        Outcome::Defined(reached / ceiling)
    } else {
        Outcome::Undefined(Undefined::new(format!("people do not agree with each other (ceiling {ceiling:.3} <= 0)")))
    };
    Ok(HumanCeiling {
        evaluator: evaluator.to_string(),
        raters_used: person.len(),
        raters_undefined: undefined,
        person_vs_others: Outcome::Defined(ceiling),
        evaluator_vs_others: Outcome::Defined(reached),
        evaluator_vs_person: Outcome::Defined(mean(&eval_person)),
        share_of_ceiling: share,
    })
}

/// The evaluator scores a ceiling is taken against, or why there are none.
pub type CeilingScores<'a> = std::result::Result<(&'a str, &'a BTreeMap<String, f64>), &'a Undefined>;

/// The agreement figures of `cells` at `levels` (the first is the headline), and the ceiling
/// against `scores`.
pub fn matrix_agreement(
    cells: &Cells,
    levels: &[MeasurementLevel],
    cfg: &BootstrapConfig,
    scores: CeilingScores<'_>,
) -> MatrixAgreement {
    let units = units_of(cells);
    let agreement = stats::agreement::rater_agreement(&units, levels[0], cfg);
    let other_levels = levels[1..]
        .iter()
        .map(|&level| AlphaAtLevel {
            level,
            alpha: stats::agreement::krippendorff_alpha(&units, level).into(),
            alpha_ci: stats::agreement::krippendorff_alpha_ci(&units, level, cfg).into(),
        })
        .collect();
    let ceiling = match scores {
        Ok((name, scores)) => human_ceiling(cells, scores, name).into(),
        Err(why) => Outcome::Undefined(why.clone()),
    };
    let raters = cells.values().flat_map(|row| row.keys()).collect::<BTreeSet<_>>().len();
    MatrixAgreement { requests_rated: cells.len(), raters, agreement, other_levels, ceiling }
}

/// Levels of measurement for (ratings, thumbs) under an option.
fn levels(level: AgreementLevel) -> (&'static [MeasurementLevel], &'static [MeasurementLevel]) {
    use MeasurementLevel as L;
    match level {
        AgreementLevel::Auto => (&[L::Ordinal, L::Interval], &[L::Nominal]),
        AgreementLevel::Nominal => (&[L::Nominal], &[L::Nominal]),
        AgreementLevel::Ordinal => (&[L::Ordinal], &[L::Ordinal]),
        AgreementLevel::Interval => (&[L::Interval], &[L::Interval]),
    }
}

/// The figures of one set of events: (without user, superseded, ratings, thumbs).
fn figures<'a>(
    events: impl IntoIterator<Item = &'a RaterEvent>,
    opts: &RaterAgreementOptions,
    scores: CeilingScores<'_>,
) -> (usize, usize, usize, MatrixAgreement, Option<MatrixAgreement>) {
    let cells = RaterCells::of(events, opts.dimension.as_deref());
    let cfg = BootstrapConfig { n_resamples: opts.bootstrap, seed: opts.seed, level: 0.95 };
    let (rating_levels, thumb_levels) = levels(opts.level);
    let requests: BTreeSet<&String> = cells.ratings.keys().chain(cells.thumbs.keys()).collect();
    let ratings = matrix_agreement(&cells.ratings, rating_levels, &cfg, scores);
    let thumbs = opts.dimension.is_none().then(|| matrix_agreement(&cells.thumbs, thumb_levels, &cfg, scores));
    (requests.len(), cells.without_user, cells.superseded, ratings, thumbs)
}

/// Agreement between people from the explicit feedback on the given requests: one reliability
/// matrix of overall 1-5 ratings (or, with a dimension, of the ratings on it) and one of thumbs
/// (up = 1, down = 0), rows the requests, columns the `user_id`s. Events without a user are
/// skipped and counted; when one user gave several events of a kind on one request, the latest
/// counts. Implicit signals and comments are left out. `evaluator` names the evaluator whose
/// scores the events carry (for the ceiling), or says why there is none.
pub fn rater_agreement_of(
    requests: usize,
    events: &[RaterEvent],
    evaluator: std::result::Result<&str, &Undefined>,
    opts: &RaterAgreementOptions,
) -> RaterAgreementReport {
    let scores: BTreeMap<String, f64> =
        events.iter().filter_map(|e| Some((e.event.request_id.clone(), e.eval_score?))).collect();
    let ceiling_scores: CeilingScores<'_> = evaluator.map(|name| (name, &scores));
    let (_, without_user, superseded, ratings, thumbs) = figures(events, opts, ceiling_scores);
    let mut groups = Vec::new();
    if let Some(by) = opts.by {
        let mut split: BTreeMap<String, Vec<&RaterEvent>> = BTreeMap::new();
        for e in events {
            let key = match by {
                AgreementBy::Cohort => e.cohort.as_deref(),
                AgreementBy::UseCase => e.use_case.as_deref(),
            };
            split.entry(key.unwrap_or("(none)").to_string()).or_default().push(e);
        }
        for (group, evs) in split {
            let (n, without_user, superseded, ratings, thumbs) = figures(evs, opts, ceiling_scores);
            groups.push(AgreementGroup {
                group,
                requests_with_feedback: n,
                events_without_user: without_user,
                events_superseded: superseded,
                ratings,
                thumbs,
            });
        }
    }
    RaterAgreementReport {
        requests,
        dimension: opts.dimension.clone(),
        events_without_user: without_user,
        events_superseded: superseded,
        ratings,
        thumbs,
        by: opts.by,
        groups,
    }
}

/// The evaluator a ceiling is taken against: the filter's, else the store's only one.
pub fn ceiling_evaluator(store: &dyn Store, scope: &Scope) -> Result<std::result::Result<String, Undefined>> {
    if let Some(e) = &scope.filter.evaluator {
        return Ok(Ok(e.clone()));
    }
    let all = store.evaluators()?;
    Ok(match all.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(Undefined::new("the store holds no evaluator scores")),
        many => Err(Undefined::new(format!(
            "the store holds several evaluators ({}); name one with --evaluator for the ceiling",
            many.join(", ")
        ))),
    })
}

/// Runs [`rater_agreement_of`] over the requests in the scope's filter: two queries (the
/// request ids, and [`Store::rater_events`] for the feedback of all of them), whatever the
/// number of requests.
pub fn rater_agreement(store: &dyn Store, scope: &Scope, opts: &RaterAgreementOptions) -> Result<RaterAgreementReport> {
    let ids = store.request_ids(&scope.filter)?;
    let evaluator = ceiling_evaluator(store, scope)?;
    let filter = match &evaluator {
        Ok(e) => crate::store::Filter { evaluator: Some(e.clone()), ..scope.filter.clone() },
        Err(_) => scope.filter.clone(),
    };
    let events = store.rater_events(&filter, opts.dimension.as_deref())?;
    Ok(rater_agreement_of(ids.len(), &events, evaluator.as_deref(), opts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::FeedbackEvent;

    fn at(h: u32) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::parse_from_rfc3339(&format!("2026-01-01T{h:02}:00:00Z")).unwrap().to_utc()
    }

    fn ev(req: &str, t: FeedbackType, v: FeedbackValue, user: Option<&str>, h: u32, dim: Option<&str>) -> RaterEvent {
        RaterEvent {
            cohort: Some(if req < "b" { "free" } else { "pro" }.into()),
            use_case: None,
            eval_score: None,
            event: FeedbackEvent {
                event_id: format!("{req}-{h}-{user:?}"),
                request_id: req.into(),
                feedback_type: t,
                value: v,
                user_id: user.map(String::from),
                timestamp: at(h),
                dimension: dim.map(String::from),
                other_request_id: None,
            },
        }
    }

    fn rating(req: &str, v: u8, user: Option<&str>, h: u32) -> RaterEvent {
        ev(req, FeedbackType::Rating, FeedbackValue::Rating(v), user, h, None)
    }

    fn events() -> Vec<RaterEvent> {
        vec![
            rating("a", 1, Some("u1"), 2),
            rating("a", 4, Some("u1"), 1), // earlier than the 1: superseded by it
            rating("a", 2, Some("u2"), 1),
            rating("b", 5, Some("u1"), 1),
            rating("b", 5, Some("u2"), 1),
            rating("b", 3, None, 1),
            ev("b", FeedbackType::Rating, FeedbackValue::Rating(1), Some("u3"), 1, Some("coherence")),
            ev("a", FeedbackType::Rating, FeedbackValue::Rating(4), Some("u1"), 1, Some("coherence")),
            ev("b", FeedbackType::Rating, FeedbackValue::Rating(2), Some("u1"), 1, Some("coherence")),
            ev("a", FeedbackType::Usage, FeedbackValue::Bool(true), Some("u3"), 1, None),
            ev("a", FeedbackType::ThumbsUp, FeedbackValue::Bool(true), Some("u1"), 1, None),
            ev("a", FeedbackType::ThumbsDown, FeedbackValue::Bool(true), Some("u2"), 1, None),
        ]
    }

    fn no_evaluator() -> Undefined {
        Undefined::new("no evaluator")
    }

    #[test]
    fn rater_agreement_keeps_the_latest_event_and_skips_events_without_a_user() {
        let opts = RaterAgreementOptions { bootstrap: 50, ..Default::default() };
        let why = no_evaluator();
        let rep = rater_agreement_of(2, &events(), Err(&why), &opts);
        assert_eq!((rep.events_without_user, rep.events_superseded), (1, 1));
        assert_eq!((rep.ratings.requests_rated, rep.ratings.raters), (2, 2));
        let units = vec![vec![Some(1.0), Some(2.0)], vec![Some(5.0), Some(5.0)]];
        use MeasurementLevel as L;
        let want = stats::agreement::krippendorff_alpha(&units, L::Ordinal).unwrap();
        assert_eq!(rep.ratings.agreement.level, L::Ordinal);
        assert_eq!(rep.ratings.agreement.alpha.as_ref(), Some(&want));
        assert_eq!(rep.ratings.other_levels[0].level, L::Interval);
        let thumbs = rep.thumbs.as_ref().unwrap();
        assert_eq!(thumbs.agreement.level, L::Nominal);
        assert_eq!(thumbs.agreement.percent_agreement.as_ref(), Some(&0.0));
        assert_eq!(thumbs.agreement.items_used, 1);
        assert_eq!(rep.ratings.ceiling, Outcome::Undefined(why));
        assert!(rep.groups.is_empty() && rep.dimension.is_none());
    }

    #[test]
    fn a_dimension_reads_only_its_ratings_and_no_thumbs() {
        let opts = RaterAgreementOptions { bootstrap: 0, dimension: Some("coherence".into()), ..Default::default() };
        let rep = rater_agreement_of(2, &events(), Err(&no_evaluator()), &opts);
        assert!(rep.thumbs.is_none());
        assert_eq!((rep.ratings.requests_rated, rep.ratings.raters), (2, 2));
        // Columns u1, u3: a = (4, -), b = (2, 1).
        let units = vec![vec![Some(4.0), None], vec![Some(2.0), Some(1.0)]];
        assert_eq!(units_of(&RaterCells::of(&events(), Some("coherence")).ratings), units);
        assert_eq!(rep.ratings.agreement.items_used, 1);
        assert_eq!(rep.events_without_user, 0);
    }

    #[test]
    fn by_cohort_splits_the_events_by_their_requests_cohort() {
        let opts = RaterAgreementOptions { bootstrap: 0, by: Some(AgreementBy::Cohort), ..Default::default() };
        let rep = rater_agreement_of(2, &events(), Err(&no_evaluator()), &opts);
        let names: Vec<&str> = rep.groups.iter().map(|g| g.group.as_str()).collect();
        assert_eq!(names, ["free", "pro"]);
        let (free, pro) = (&rep.groups[0], &rep.groups[1]);
        assert_eq!((free.requests_with_feedback, free.events_superseded, free.events_without_user), (1, 1, 0));
        assert_eq!((pro.requests_with_feedback, pro.events_without_user), (1, 1));
        assert_eq!(free.ratings.agreement.percent_agreement.as_ref(), Some(&0.0));
        assert_eq!(pro.ratings.agreement.percent_agreement.as_ref(), Some(&1.0));
        assert!(pro.thumbs.as_ref().unwrap().agreement.items_used == 0);
    }

    /// Three raters on six requests; the ceiling's figures computed by hand from Spearman.
    #[test]
    fn human_ceiling_is_leave_one_rater_out_beside_the_evaluator() {
        let values =
            [[1.0, 2.0, 1.0], [2.0, 1.0, 2.0], [3.0, 3.0, 4.0], [4.0, 5.0, 3.0], [5.0, 4.0, 5.0], [2.0, 2.0, 3.0]];
        let eval = [0.1, 0.3, 0.2, 0.9, 0.6, 0.4];
        let mut cells = Cells::new();
        let mut scores = BTreeMap::new();
        for (i, row) in values.iter().enumerate() {
            let id = format!("r{i}");
            scores.insert(id.clone(), eval[i]);
            for (j, v) in row.iter().enumerate() {
                cells.entry(id.clone()).or_default().insert(format!("u{j}"), (at(1), *v));
            }
        }
        let c = human_ceiling(&cells, &scores, "e").unwrap();
        let rho = |a: &[f64], b: &[f64]| stats::corr::spearman(a, b).unwrap().estimate;
        let (mut person, mut eval_others, mut eval_person) = (0.0, 0.0, 0.0);
        for j in 0..3 {
            let p: Vec<f64> = values.iter().map(|r| r[j]).collect();
            let o: Vec<f64> = values.iter().map(|r| (r.iter().sum::<f64>() - r[j]) / 2.0).collect();
            person += rho(&p, &o) / 3.0;
            eval_others += rho(&eval, &o) / 3.0;
            eval_person += rho(&eval, &p) / 3.0;
        }
        let close = |o: &Outcome<f64>, want: f64| (o.as_ref().unwrap() - want).abs() < 1e-12;
        assert_eq!((c.raters_used, c.raters_undefined), (3, 0));
        assert!(close(&c.person_vs_others, person));
        assert!(close(&c.evaluator_vs_others, eval_others));
        assert!(close(&c.evaluator_vs_person, eval_person));
        assert!(close(&c.share_of_ceiling, eval_others / person));
        // Too few shared requests: undefined, with the reason.
        let few: Cells = cells.into_iter().take(MIN_CEILING_ITEMS - 1).collect();
        let why = human_ceiling(&few, &scores, "e").unwrap_err();
        assert!(why.reason.contains("no rater has 5 or more requests"), "{}", why.reason);
    }
}
