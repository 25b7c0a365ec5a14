//! The strategies' priorities over a population read from the store, and `queue create`: the
//! priorities through the sampling design into stored items.
//!
//! The population is every request in the window that `evaluator` scored (and, for the
//! strategies that compare scores, that the other evaluators scored too). Priorities:
//! - `random`: 1 for every request.
//! - `disagreement`: `|s_evaluator - s_against|`, both `overall` scores in [0, 1] (the base
//!   evaluator against the latest retrained one, scored into the store by `evalloop score`).
//! - `uncertainty`: the standard deviation of the `overall` scores of the ensemble's members
//!   (`members`, each scored into the store under its own evaluator name): the members of a
//!   retrained ensemble (`[train] seeds`) disagree where the training data leaves the model
//!   unsure. At least two members.
//! - `cohort-balanced`: `1 / (N_c * (1 + h_c))` for a request of cohort c, where `N_c` is the
//!   cohort's requests in the population and `h_c` its requests that already have a human score:
//!   each cohort's share of the queue falls with the human scores it already has, and is spread
//!   evenly inside the cohort.
//! - `mix`: the mean of the priorities, each divided by its sum, of `cohort-balanced` and of
//!   `disagreement` (when `against` is given) and `uncertainty` (when `members` are).
//!
//! The priorities then become selection weights with the floor and inclusion probabilities for
//! `size` items (see `design.rs`). Preference queues draw pairs instead of requests, with the
//! pair priorities of `pairs.rs`, through the same design.

use std::collections::{BTreeMap, HashMap};

use chrono::Utc;

use super::design::{floored_weights, inclusion_probabilities, systematic_sample};
use super::{QueueItem, QueueKind, QueueSpec, Strategy, check_name};
use crate::dataset::{metadata_group, prompt_group};
use crate::feedback::HumanPolicy;
use crate::store::{Filter, Store};
use crate::{Error, Result};

/// What `queue create` asks for.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    pub name: String,
    pub kind: QueueKind,
    pub strategy: Strategy,
    pub size: usize,
    /// Default 1.
    pub reviewers_per_item: usize,
    pub dimension: Option<String>,
    /// `None`: the store's only evaluator.
    pub evaluator: Option<String>,
    pub against: Option<String>,
    pub members: Vec<String>,
    /// The metadata key naming a request's prompt group (`None`: a hash of the prompt), for
    /// preference queues (pairs come from one group) and `whole_groups`.
    pub group_key: Option<String>,
    /// Rating and thumbs queues: draw whole prompt groups (cluster sampling): `size` counts
    /// groups, every request of a drawn group is an item, each with its group's probability.
    pub whole_groups: bool,
    /// The uniform share of the selection weights, in [0, 1]; default 0.2.
    pub floor: f64,
    pub seed: u64,
    /// The window (its evaluator is ignored).
    pub window: Filter,
    /// Leave out the requests that already have a human score (under the policy): rounds of
    /// active learning label new requests. The probabilities are then those of a draw from the
    /// requests left, and estimates from the queue are about them.
    pub exclude_labelled: bool,
}

/// A population request (or pair of requests) with its priority.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub request_id: String,
    /// Output B of a pair (preference queues).
    pub other_request_id: Option<String>,
    pub priority: f64,
}

/// The `overall` score and cohort of every request in the window that `evaluator` scored.
pub(super) fn scores_of(
    store: &dyn Store,
    window: &Filter,
    evaluator: &str,
) -> Result<BTreeMap<String, (f64, Option<String>)>> {
    let f = Filter { evaluator: Some(evaluator.to_string()), ..window.clone() };
    Ok(store.evaluated_requests(&f)?.into_iter().map(|r| (r.request_id, (r.eval_score, r.cohort))).collect())
}

pub(super) fn normalised(v: &[f64]) -> Vec<f64> {
    let s: f64 = v.iter().sum();
    if s > 0.0 { v.iter().map(|x| x / s).collect() } else { vec![1.0 / v.len() as f64; v.len()] }
}

/// Each of `n` candidates' priority under `strategy`, from the per-candidate `disagreement`
/// and `uncertainty` priorities (empty when not computed) and the `cohort-balanced` ones
/// (computed only when needed); `mix` is the mean of the normalised parts at hand.
pub(super) fn strategy_priorities(
    strategy: Strategy,
    n: usize,
    disagreement: Vec<f64>,
    uncertainty: Vec<f64>,
    balanced: impl Fn() -> Result<Vec<f64>>,
) -> Result<Vec<f64>> {
    Ok(match strategy {
        Strategy::Random => vec![1.0; n],
        Strategy::Disagreement => disagreement,
        Strategy::Uncertainty => uncertainty,
        Strategy::CohortBalanced => balanced()?,
        Strategy::Mix => {
            let mut parts = vec![normalised(&balanced()?)];
            if !disagreement.is_empty() {
                parts.push(normalised(&disagreement));
            }
            if !uncertainty.is_empty() {
                parts.push(normalised(&uncertainty));
            }
            (0..n).map(|i| parts.iter().map(|p| p[i]).sum::<f64>() / parts.len() as f64).collect()
        }
    })
}

/// Refuses `--against` and `--members` evaluators without scores in the store.
pub(super) fn check_compared_evaluators(store: &dyn Store, o: &CreateOptions) -> Result<()> {
    let known = store.evaluators()?;
    match o.against.iter().chain(&o.members).find(|e| !known.contains(e)) {
        Some(e) => {
            Err(Error::Input(format!("evaluator {e:?} has no scores in the store (it has: {})", known.join(", "))))
        }
        None => Ok(()),
    }
}

/// Scores by request id: the `overall` score and the cohort.
type Scores = BTreeMap<String, (f64, Option<String>)>;

/// A request queue's population: the requests (ordered by id) and the scores its strategy reads.
struct Population {
    ids: Vec<String>,
    base: Scores,
    /// `--against`'s scores, when the strategy compares with it.
    against: Option<Scores>,
    /// The ensemble members' scores, when the strategy reads them.
    members: Vec<Scores>,
}

impl Population {
    /// Reads the population of `o` from the store, checking the strategy's inputs.
    fn read(store: &dyn Store, policy: &HumanPolicy, o: &CreateOptions, evaluator: &str) -> Result<Population> {
        let base = scores_of(store, &o.window, evaluator)?;
        if o.strategy == Strategy::Disagreement && o.against.is_none() {
            return Err(Error::Input("--strategy disagreement needs --against EVALUATOR (the retrained one)".into()));
        }
        if o.strategy == Strategy::Uncertainty && o.members.len() < 2 {
            return Err(Error::Input(format!(
                "--strategy uncertainty needs --members with at least two evaluators (the members of a retrained \
                 ensemble, each scored into the store); got {}",
                o.members.len()
            )));
        }
        check_compared_evaluators(store, o)?;
        let use_against = o.against.is_some() && matches!(o.strategy, Strategy::Disagreement | Strategy::Mix);
        let use_members = o.members.len() >= 2 && matches!(o.strategy, Strategy::Uncertainty | Strategy::Mix);
        let against = match (&o.against, use_against) {
            (Some(a), true) => Some(scores_of(store, &o.window, a)?),
            _ => None,
        };
        let members: Vec<Scores> = if use_members {
            o.members.iter().map(|m| scores_of(store, &o.window, m)).collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        let labelled: std::collections::HashSet<String> = if o.exclude_labelled {
            let q = crate::store::ScoredQuery {
                filter: Filter { evaluator: Some(evaluator.to_string()), ..o.window.clone() },
                policy: policy.clone(),
                ..Default::default()
            };
            store.scored_requests(&q)?.into_iter().map(|r| r.request_id).collect()
        } else {
            Default::default()
        };
        // The base evaluator's requests that every other evaluator used scored.
        let ids: Vec<String> = base
            .keys()
            .filter(|id| !labelled.contains(*id))
            .filter(|id| against.as_ref().is_none_or(|a| a.contains_key(*id)))
            .filter(|id| members.iter().all(|m| m.contains_key(*id)))
            .cloned()
            .collect();
        Ok(Population { ids, base, against, members })
    }

    /// `|s - t|` of a request (empty without `--against`).
    fn disagreement(&self, id: &str) -> Option<f64> {
        self.against.as_ref().map(|a| (self.base[id].0 - a[id].0).abs())
    }

    /// The members' standard deviation of `value` (a score or a margin); `None` without members.
    fn spread(&self, value: impl Fn(&Scores) -> f64) -> Option<f64> {
        if self.members.is_empty() {
            return None;
        }
        let v: Vec<f64> = self.members.iter().map(value).collect();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        Some((v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() as f64 - 1.0)).sqrt())
    }

    /// The `cohort-balanced` priority of every request of the population, in `ids`' order.
    fn balanced(
        &self,
        store: &dyn Store,
        policy: &HumanPolicy,
        o: &CreateOptions,
        evaluator: &str,
    ) -> Result<Vec<f64>> {
        let f = Filter { evaluator: Some(evaluator.to_string()), ..o.window.clone() };
        let labelled: HashMap<Option<String>, u64> =
            store.cohort_stats(&f, policy)?.into_iter().map(|c| (c.cohort, c.with_human_score)).collect();
        let mut size: HashMap<&Option<String>, usize> = HashMap::new();
        for id in &self.ids {
            *size.entry(&self.base[id].1).or_default() += 1;
        }
        Ok(self
            .ids
            .iter()
            .map(|id| {
                let c = &self.base[id].1;
                let h = labelled.get(c).copied().unwrap_or(0) as f64;
                1.0 / (size[c] as f64 * (1.0 + h))
            })
            .collect())
    }
}

/// The population and each request's priority under `o`'s strategy, ordered by request id.
pub fn priorities(
    store: &dyn Store,
    policy: &HumanPolicy,
    o: &CreateOptions,
    evaluator: &str,
) -> Result<Vec<Candidate>> {
    let pop = Population::read(store, policy, o, evaluator)?;
    let disagreement: Vec<f64> = pop.ids.iter().filter_map(|id| pop.disagreement(id)).collect();
    let uncertainty: Vec<f64> = pop.ids.iter().filter_map(|id| pop.spread(|m| m[id].0)).collect();
    let balanced = || pop.balanced(store, policy, o, evaluator);
    let priority = strategy_priorities(o.strategy, pop.ids.len(), disagreement, uncertainty, balanced)?;
    Ok(pop
        .ids
        .iter()
        .zip(priority)
        .map(|(id, p)| Candidate { request_id: id.clone(), other_request_id: None, priority: p })
        .collect())
}

/// The prompt groups of `ids`: `group_key`'s metadata value, or a hash of the prompt (as
/// `dataset build` groups), each group's requests in `ids`' order.
pub(super) fn groups_of(
    store: &dyn Store,
    ids: &[String],
    group_key: Option<&str>,
) -> Result<BTreeMap<String, Vec<String>>> {
    let mut group: HashMap<String, String> = HashMap::new();
    for (id, t) in store.request_texts(ids)? {
        let meta: serde_json::Value = serde_json::from_str(&t.metadata).unwrap_or_default();
        let g = group_key.and_then(|k| metadata_group(meta.get(k))).unwrap_or_else(|| prompt_group(&t.prompt));
        group.insert(id, g);
    }
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for id in ids {
        if let Some(g) = group.get(id) {
            out.entry(g.clone()).or_default().push(id.clone());
        }
    }
    Ok(out)
}

/// A prompt group of a whole-group queue's population, with its priority.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupCandidate {
    pub group: String,
    /// Its requests, by id.
    pub requests: Vec<String>,
    pub priority: f64,
}

/// The prompt groups of the population and each group's priority under `o`'s strategy, ordered
/// by group (see docs/guide/queues.md, "Whole groups"). A group of two or more requests:
/// `disagreement` the mean over its pairs of `|(s_A - s_B) - (t_A - t_B)|` (how far the two
/// evaluators disagree on the group's ranking), `uncertainty` the mean over its pairs of the
/// members' spread of the margin; a group of one request: the request's own priority. In every
/// group, `cohort-balanced` is the mean of its requests' priorities; `mix` as for requests.
pub fn group_priorities(
    store: &dyn Store,
    policy: &HumanPolicy,
    o: &CreateOptions,
    evaluator: &str,
) -> Result<Vec<GroupCandidate>> {
    let pop = Population::read(store, policy, o, evaluator)?;
    let groups = groups_of(store, &pop.ids, o.group_key.as_deref())?;
    // Mean over a group's pairs of `pair`, or `single` of its only request.
    let over = |members: &[String], pair: &dyn Fn(&str, &str) -> Option<f64>, single: &dyn Fn(&str) -> Option<f64>| {
        if members.len() == 1 {
            return single(&members[0]);
        }
        let mut v = Vec::new();
        for (i, a) in members.iter().enumerate() {
            for b in &members[i + 1..] {
                v.push(pair(a, b)?);
            }
        }
        Some(v.iter().sum::<f64>() / v.len() as f64)
    };
    let margin = |m: &Scores, a: &str, b: &str| m[a].0 - m[b].0;
    let pair_disagreement =
        |a: &str, b: &str| pop.against.as_ref().map(|t| (margin(&pop.base, a, b) - margin(t, a, b)).abs());
    let pair_spread = |a: &str, b: &str| pop.spread(|m| margin(m, a, b));
    let disagreement: Vec<f64> =
        groups.values().filter_map(|g| over(g, &pair_disagreement, &|id| pop.disagreement(id))).collect();
    let uncertainty: Vec<f64> =
        groups.values().filter_map(|g| over(g, &pair_spread, &|id| pop.spread(|m| m[id].0))).collect();
    let balanced = || -> Result<Vec<f64>> {
        let per: HashMap<&str, f64> =
            pop.ids.iter().map(String::as_str).zip(pop.balanced(store, policy, o, evaluator)?).collect();
        Ok(groups.values().map(|g| g.iter().map(|id| per[id.as_str()]).sum::<f64>() / g.len() as f64).collect())
    };
    let priority = strategy_priorities(o.strategy, groups.len(), disagreement, uncertainty, balanced)?;
    Ok(groups
        .into_iter()
        .zip(priority)
        .map(|((group, requests), priority)| GroupCandidate { group, requests, priority })
        .collect())
}

/// Draws a queue of `o.size` items (requests, or pairs for a preference queue) and stores it
/// with its spec; returns both. Refuses a name in use, a size above the population, and
/// strategies missing their inputs.
pub fn create(store: &mut dyn Store, policy: &HumanPolicy, o: &CreateOptions) -> Result<(QueueSpec, Vec<QueueItem>)> {
    check_name(&o.name).map_err(Error::Input)?;
    if o.group_key.is_some() && o.kind != QueueKind::Preference && !o.whole_groups {
        return Err(Error::Input(
            "--group-key applies to preference queues and --whole-groups (it names the prompt groups)".into(),
        ));
    }
    if o.whole_groups && o.kind == QueueKind::Preference {
        return Err(Error::Input(
            "--whole-groups applies to rating and thumbs queues; a preference queue's items are pairs of one group \
             already"
                .into(),
        ));
    }
    if o.kind == QueueKind::Thumbs && o.dimension.is_some() {
        return Err(Error::Input("--dimension applies to rating queues; thumbs carry no dimension".into()));
    }
    if let Some(d) = &o.dimension
        && !crate::record::is_dimension_name(d)
    {
        return Err(Error::Input(format!("--dimension {d:?} is not a dimension name ([a-z0-9_]+)")));
    }
    if o.size == 0 {
        return Err(Error::Input("--size 0: a queue needs at least one item".into()));
    }
    if o.reviewers_per_item == 0 {
        return Err(Error::Input("--reviewers-per-item 0: each item needs at least one reviewer".into()));
    }
    if !(o.floor.is_finite() && (0.0..=1.0).contains(&o.floor)) {
        return Err(Error::Input(format!("--floor {}: expected a number within [0, 1]", o.floor)));
    }
    if o.strategy != Strategy::Random && o.floor == 0.0 {
        tracing::warn!("--floor 0: requests with priority 0 cannot be drawn, and estimates cover only the others");
    }
    if store.queue(&o.name)?.is_some() {
        return Err(Error::Input(format!("a queue named {:?} exists already", o.name)));
    }
    let known = store.evaluators()?;
    let evaluator = match &o.evaluator {
        Some(e) if known.contains(e) => e.clone(),
        Some(e) => {
            return Err(Error::Input(format!(
                "--evaluator {e:?} has no scores in the store (it has: {})",
                known.join(", ")
            )));
        }
        None if known.len() == 1 => known[0].clone(),
        None if known.is_empty() => {
            return Err(Error::Input(format!("store {} has no scored requests", store.location())));
        }
        None => {
            return Err(Error::Input(format!(
                "the store has several evaluators ({}); name the population's with --evaluator",
                known.join(", ")
            )));
        }
    };
    let floor = if o.strategy == Strategy::Random { 1.0 } else { o.floor };
    let seed = crate::hash::hash64(&[&o.name, &o.seed.to_string()]);
    // The sampling units: whole groups, or single requests / pairs; each its items (request,
    // output B of a pair) with one priority. What the population holds is named in the size error.
    type Unit = (Vec<(String, Option<String>)>, f64);
    let (units, what): (Vec<Unit>, &str) = if o.whole_groups {
        let groups = group_priorities(store, policy, o, &evaluator)?;
        let units = groups.into_iter().map(|g| (g.requests.into_iter().map(|r| (r, None)).collect(), g.priority));
        (units.collect(), "prompt group(s)")
    } else {
        let cands = if o.kind == QueueKind::Preference {
            super::pairs::pair_priorities(store, policy, o, &evaluator)?
        } else {
            priorities(store, policy, o, &evaluator)?
        };
        let what = if o.kind == QueueKind::Preference { "pair(s) of outputs of one group" } else { "request(s)" };
        (cands.into_iter().map(|c| (vec![(c.request_id, c.other_request_id)], c.priority)).collect(), what)
    };
    if units.len() < o.size {
        return Err(Error::Input(format!(
            "--size {}{}: the population has only {} {} scored by {}",
            o.size,
            if o.whole_groups { " --whole-groups" } else { "" },
            units.len(),
            what,
            [Some(&evaluator), o.against.as_ref()].into_iter().flatten().cloned().collect::<Vec<_>>().join(" and ")
        )));
    }
    let prios: Vec<f64> = units.iter().map(|u| u.1).collect();
    let pi = inclusion_probabilities(&floored_weights(&prios, floor), o.size);
    let items: Vec<QueueItem> = systematic_sample(&pi, seed)
        .iter()
        .flat_map(|&u| units[u].0.iter().map(move |m| (u, m)))
        .enumerate()
        .map(|(pos, (u, (request, other)))| QueueItem {
            queue: o.name.clone(),
            position: pos as u32,
            request_id: request.clone(),
            other_request_id: other.clone(),
            probability: pi[u],
            priority: units[u].1,
        })
        .collect();
    let population: usize = units.iter().map(|u| u.0.len()).sum();
    let spec = QueueSpec {
        name: o.name.clone(),
        kind: o.kind,
        strategy: o.strategy,
        size: items.len(),
        reviewers_per_item: o.reviewers_per_item,
        dimension: o.dimension.clone(),
        evaluator,
        against: o.against.clone(),
        members: o.members.clone(),
        group_key: o.group_key.clone(),
        whole_groups: o.whole_groups,
        floor,
        population,
        seed: o.seed,
        since: o.window.since.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        until: o.window.until.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        created_at: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    };
    store.begin()?;
    match store.create_queue(&spec, &items) {
        Ok(()) => store.commit()?,
        Err(e) => {
            let _ = store.rollback();
            return Err(e.into());
        }
    }
    Ok((spec, items))
}
