//! Preferences between two outputs (`evalloop preferences`): how often the evaluator prefers
//! the output people preferred, how well people agree on the same pair, and each prompt
//! group's Bradley-Terry ranking of its outputs.
//!
//! # Pairs and votes
//! A preference event judges an unordered pair of requests `{A, B}`. Events on the same pair
//! are its votes, each turned to the pair's own orientation (its two request ids in sorted
//! order). The pair's verdict is the majority: the first output when it has more votes than the
//! second, the second when fewer, a tie otherwise (ties count for neither side). Only pairs
//! whose two outputs are logged, pass the filter and carry the evaluator's score count; the
//! others are counted as `unscored`.
//!
//! # Figures
//! - `accuracy`: the evaluator's pairwise accuracy against the pairs' verdicts
//!   ([`stats::preference::pairwise_accuracy`]: people's ties left out, an evaluator tie half a
//!   point, percentile bootstrap over pairs).
//! - `accuracy_per_judgement`: the same over single judgements (each event its own pair):
//!   the evaluator's agreement with one person, the figure to hold beside people's agreement.
//! - `agreement`: Krippendorff's alpha (nominal, over a, b and tie), kappa and percent
//!   agreement between the people who judged the same pair (pairs with two or more); an event
//!   without a `user_id` is a person of its own.
//! - `groups`: per prompt group, the Bradley-Terry strengths of its outputs from every vote
//!   (a tie half a win each, [`stats::preference::bradley_terry`]) with each output's evaluator
//!   score and their Spearman correlation. The fit is regularised: every output also plays one
//!   virtual tie against a reference output (left out of the result; strengths re-centred to
//!   mean 0), so that sparse votes (an output that never lost) give finite strengths shrunk
//!   towards the group's mean instead of none.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::Scope;
use crate::Result;
use crate::dataset::{metadata_group, prompt_group};
use crate::record::{Choice, FeedbackEvent, FeedbackValue};
use crate::stats::agreement::{MeasurementLevel, RaterAgreement, rater_agreement};
use crate::stats::preference::{JudgedPair, PairwiseAccuracy, bradley_terry, choice_units, pairwise_accuracy};
use crate::stats::{self, BootstrapConfig, Outcome, Undefined};
use crate::store::Store;

/// Options for [`preferences`].
#[derive(Debug, Clone, Default)]
pub struct PreferenceOptions {
    /// Bootstrap resamples for the intervals (0: none).
    pub bootstrap: usize,
    /// Seed of the bootstrap.
    pub seed: u64,
    /// The human dimension judged; `None` for the overall preferences.
    pub dimension: Option<String>,
    /// The metadata key naming a request's prompt group (`[dataset] group_key`); default a
    /// hash of the prompt, as the dataset builder groups.
    pub group_key: Option<String>,
}

/// One output in a group's ranking.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RankedOutput {
    pub request_id: String,
    /// Bradley-Terry log-strength, centred to mean 0 within the group.
    pub strength: f64,
    /// The evaluator's score.
    pub eval_score: f64,
}

/// A prompt group's Bradley-Terry ranking.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupRanking {
    pub group: String,
    /// Votes the fit used.
    pub votes: usize,
    /// Outputs, strongest first.
    pub outputs: Vec<RankedOutput>,
    /// Spearman correlation of strength and evaluator score over the outputs (needs 3).
    pub spearman: Outcome<f64>,
}

/// What `evalloop preferences` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PreferenceReport {
    pub evaluator: Option<String>,
    /// The dimension judged; `null` for the overall preferences.
    pub dimension: Option<String>,
    /// Preference events on the dimension.
    pub events: usize,
    /// Events left out: an output not logged, outside the filter or without the evaluator's
    /// score.
    pub unscored: usize,
    /// Distinct pairs judged (after leaving those out).
    pub pairs: usize,
    /// Distinct people who judged them.
    pub people: usize,
    /// The evaluator against each pair's majority verdict.
    pub accuracy: Outcome<PairwiseAccuracy>,
    /// The evaluator against each single judgement.
    pub accuracy_per_judgement: Outcome<PairwiseAccuracy>,
    /// Agreement between people on the same pair (nominal).
    pub agreement: RaterAgreement,
    /// Per group, the Bradley-Terry ranking, for groups with a defined fit.
    pub groups: Vec<GroupRanking>,
    /// Groups whose fit is undefined, with the reason (none in practice: the prior keeps every
    /// fit finite).
    pub groups_undefined: Vec<(String, String)>,
    /// Mean of the groups' defined Spearman correlations.
    pub mean_group_spearman: Outcome<f64>,
}

/// A judged pair in its own orientation: the sorted request ids and the vote; `None` for an
/// event that is not a preference.
pub fn oriented(e: &FeedbackEvent) -> Option<((String, String), Choice)> {
    let b = e.other_request_id.as_ref()?;
    let FeedbackValue::Choice(c) = e.value else { return None };
    Some(if e.request_id <= *b {
        ((e.request_id.clone(), b.clone()), c)
    } else {
        ((b.clone(), e.request_id.clone()), c.flipped())
    })
}

/// Counts one vote into a pair's votes `[a, b, tie]` (in the pair's orientation).
pub fn add_vote(votes: &mut [usize; 3], c: Choice) {
    votes[match c {
        Choice::A => 0,
        Choice::B => 1,
        Choice::Tie => 2,
    }] += 1;
}

/// A pair's verdict from its votes `[a, b, tie]` (in the pair's orientation): the side with
/// more votes, a tie when they are level.
pub fn majority(votes: [usize; 3]) -> Choice {
    match votes[0].cmp(&votes[1]) {
        std::cmp::Ordering::Greater => Choice::A,
        std::cmp::Ordering::Less => Choice::B,
        std::cmp::Ordering::Equal => Choice::Tie,
    }
}

/// Runs the analysis (see the module docs).
pub fn preferences(store: &dyn Store, scope: &Scope, opts: &PreferenceOptions) -> Result<PreferenceReport> {
    let filter = super::resolve_evaluator(store, &scope.filter)?;
    let events = store.preferences(opts.dimension.as_deref())?;
    let scores: BTreeMap<String, f64> =
        store.evaluated_requests(&filter)?.into_iter().map(|r| (r.request_id, r.eval_score)).collect();
    let judged: Vec<(&FeedbackEvent, (String, String), Choice)> = events
        .iter()
        .filter_map(|e| oriented(e).map(|(p, c)| (e, p, c)))
        .filter(|(_, (a, b), _)| scores.contains_key(a) && scores.contains_key(b))
        .collect();
    let cfg = BootstrapConfig { n_resamples: opts.bootstrap, seed: opts.seed, ..Default::default() };

    // Votes per pair, in the pair's orientation.
    let mut votes: BTreeMap<&(String, String), [usize; 3]> = BTreeMap::new();
    for (_, p, c) in &judged {
        add_vote(votes.entry(p).or_default(), *c);
    }
    let judged_pair = |(a, b): &(String, String), choice| JudgedPair { score_a: scores[a], score_b: scores[b], choice };
    let majority: Vec<JudgedPair> = votes.iter().map(|(p, v)| judged_pair(p, majority(*v))).collect();
    let single: Vec<JudgedPair> = judged.iter().map(|(_, p, c)| judged_pair(p, *c)).collect();
    let interval = |r: std::result::Result<PairwiseAccuracy, Undefined>| -> Outcome<PairwiseAccuracy> {
        r.map(|mut a| {
            if opts.bootstrap == 0 {
                a.ci = Outcome::Undefined(Undefined::new("no bootstrap asked for (--bootstrap 0)"));
            }
            a
        })
        .into()
    };

    // People on the same pair.
    let person = |e: &FeedbackEvent| e.user_id.clone().unwrap_or_else(|| format!("event:{}", e.event_id));
    let choices: Vec<(String, String, Choice)> =
        judged.iter().map(|(e, (a, b), c)| (format!("{a}\u{1f}{b}"), person(e), *c)).collect();
    let people: BTreeSet<&str> = choices.iter().map(|(_, p, _)| p.as_str()).collect();
    let agreement = rater_agreement(&choice_units(&choices), MeasurementLevel::Nominal, &cfg);

    // Bradley-Terry per group.
    let ids: Vec<String> =
        judged.iter().flat_map(|(_, (a, b), _)| [a.clone(), b.clone()]).collect::<BTreeSet<_>>().into_iter().collect();
    let groups_of: BTreeMap<String, String> = store
        .request_texts(&ids)?
        .into_iter()
        .map(|(id, t)| {
            let meta: serde_json::Value = serde_json::from_str(&t.metadata).unwrap_or_default();
            let g = opts
                .group_key
                .as_ref()
                .and_then(|k| metadata_group(meta.get(k)))
                .unwrap_or_else(|| prompt_group(&t.prompt));
            (id, g)
        })
        .collect();
    let mut by_group: BTreeMap<&str, Vec<(&str, &str, Choice)>> = BTreeMap::new();
    for (_, (a, b), c) in &judged {
        if groups_of[a] == groups_of[b] {
            by_group.entry(groups_of[a].as_str()).or_default().push((a, b, *c));
        }
    }
    let mut groups = Vec::new();
    let mut groups_undefined = Vec::new();
    for (g, comparisons) in by_group {
        let items: Vec<&str> =
            comparisons.iter().flat_map(|(a, b, _)| [*a, *b]).collect::<BTreeSet<_>>().into_iter().collect();
        let index: BTreeMap<&str, usize> = items.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let mut indexed: Vec<(usize, usize, Choice)> =
            comparisons.iter().map(|(a, b, c)| (index[a], index[b], *c)).collect();
        // The prior: one virtual tie of every output with a reference output (index n).
        let n = items.len();
        indexed.extend((0..n).map(|i| (i, n, Choice::Tie)));
        match bradley_terry(n + 1, &indexed) {
            Ok(mut fit) => {
                fit.log_strength.truncate(n);
                let mean = fit.log_strength.iter().sum::<f64>() / n as f64;
                fit.log_strength.iter_mut().for_each(|s| *s -= mean);
                let mut outputs: Vec<RankedOutput> = items
                    .iter()
                    .zip(&fit.log_strength)
                    .map(|(id, s)| RankedOutput { request_id: id.to_string(), strength: *s, eval_score: scores[*id] })
                    .collect();
                let strengths: Vec<f64> = outputs.iter().map(|o| o.strength).collect();
                let evals: Vec<f64> = outputs.iter().map(|o| o.eval_score).collect();
                let spearman = stats::corr::spearman(&strengths, &evals).map(|c| c.estimate).into();
                outputs.sort_by(|x, y| y.strength.total_cmp(&x.strength).then_with(|| x.request_id.cmp(&y.request_id)));
                groups.push(GroupRanking { group: g.to_string(), votes: comparisons.len(), outputs, spearman });
            }
            Err(u) => groups_undefined.push((g.to_string(), u.reason)),
        }
    }
    let defined: Vec<f64> = groups.iter().filter_map(|g| g.spearman.as_ref().copied()).collect();
    let mean_group_spearman = if defined.is_empty() {
        Outcome::Undefined(Undefined::new("no group has a defined Spearman (needs 3 ranked outputs, not constant)"))
    } else {
        Outcome::Defined(defined.iter().sum::<f64>() / defined.len() as f64)
    };
    Ok(PreferenceReport {
        evaluator: filter.evaluator.clone(),
        dimension: opts.dimension.clone(),
        events: events.len(),
        unscored: events.len() - judged.len(),
        pairs: votes.len(),
        people: people.len(),
        accuracy: interval(pairwise_accuracy(&majority, &cfg)),
        accuracy_per_judgement: interval(pairwise_accuracy(&single, &cfg)),
        agreement,
        groups,
        groups_undefined,
        mean_group_spearman,
    })
}
