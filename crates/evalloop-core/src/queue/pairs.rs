//! The population of a preference queue, pairs of outputs of one prompt group, and each pair's
//! priority under the queue's strategy.
//!
//! # Pairs
//! The population is every unordered pair `{A, B}` of two requests of the same prompt group
//! (`--group-key`'s metadata value, or a hash of the prompt as `dataset build` and `evalloop
//! preferences` group) that `evaluator` scored in the window (and the other evaluators the
//! strategy compares, too). A pair is stored in its own orientation: A the smaller request id.
//! With `exclude_labelled`, pairs that already have a preference event (on the queue's
//! dimension) are left out. A group of `m` outputs gives `m (m - 1) / 2` pairs; populations
//! above [`MAX_PAIRS`] are refused (narrow the window).
//!
//! # Priorities
//! With `s` the evaluator's `overall` scores (and `t` the `--against` evaluator's, `m_k` the
//! ensemble members'):
//! - `random`: 1 for every pair.
//! - `disagreement`: `|(s_A - s_B) - (t_A - t_B)|`: how far the two evaluators disagree on
//!   the pair's margin; largest where they order the pair differently.
//! - `uncertainty`: with `--members`, the standard deviation over the members of their margins
//!   `m_k(A) - m_k(B)`; without, `1 - |s_A - s_B|`: the evaluator is least sure of the pairs
//!   whose outputs it scores alike.
//! - `cohort-balanced`: `(1 / (E_a (1 + h_a)) + 1 / (E_b (1 + h_b))) / 2`, where `a`, `b` are
//!   the cohorts of A and B, `E_c` counts the pairs' outputs in cohort c and `h_c` the cohort's
//!   requests with a human score: each cohort's share of the total priority is proportional to
//!   `1 / (1 + h_c)`, as in a request queue.
//! - `mix`: the mean of the normalised `cohort-balanced` priorities and those of
//!   `disagreement` (with `--against`) and `uncertainty` (with `--members`).
//!
//! The priorities go through the same design as a request queue's (`design.rs`), so every pair
//! is drawn with a known inclusion probability and `1 / probability` weights the pairs'
//! verdicts into unbiased estimates over all pairs of the population.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::Strategy;
use super::select::{Candidate, CreateOptions, check_compared_evaluators, groups_of, scores_of, strategy_priorities};
use crate::feedback::HumanPolicy;
use crate::store::{Filter, Store};
use crate::{Error, Result};

/// The most pairs a preference queue draws from.
pub const MAX_PAIRS: usize = 2_000_000;

/// The pairs of the population and their priorities under `o`'s strategy (see the module
/// docs), ordered by request ids.
pub fn pair_priorities(
    store: &dyn Store,
    policy: &HumanPolicy,
    o: &CreateOptions,
    evaluator: &str,
) -> Result<Vec<Candidate>> {
    if o.strategy == Strategy::Disagreement && o.against.is_none() {
        return Err(Error::Input("--strategy disagreement needs --against EVALUATOR (the retrained one)".into()));
    }
    if o.members.len() == 1 {
        return Err(Error::Input("--members: name at least two evaluators (an ensemble's members)".into()));
    }
    check_compared_evaluators(store, o)?;
    let base = scores_of(store, &o.window, evaluator)?;
    let use_against = o.against.is_some() && matches!(o.strategy, Strategy::Disagreement | Strategy::Mix);
    let use_members = !o.members.is_empty() && matches!(o.strategy, Strategy::Uncertainty | Strategy::Mix);
    let against = match (&o.against, use_against) {
        (Some(a), true) => Some(scores_of(store, &o.window, a)?),
        _ => None,
    };
    let members: Vec<BTreeMap<String, (f64, Option<String>)>> = if use_members {
        o.members.iter().map(|m| scores_of(store, &o.window, m)).collect::<Result<_>>()?
    } else {
        Vec::new()
    };
    let ids: Vec<String> = base
        .keys()
        .filter(|id| against.as_ref().is_none_or(|a| a.contains_key(*id)))
        .filter(|id| members.iter().all(|m| m.contains_key(*id)))
        .cloned()
        .collect();

    // Groups, then every pair inside a group.
    let mut groups = groups_of(store, &ids, o.group_key.as_deref())?;
    let total: usize = groups.values().map(|g| g.len() * g.len().saturating_sub(1) / 2).sum();
    if total > MAX_PAIRS {
        return Err(Error::Input(format!(
            "the population has {total} pairs of outputs of one group (more than {MAX_PAIRS}); narrow it with \
             --since / --until"
        )));
    }
    let judged: BTreeSet<(String, String)> = if o.exclude_labelled {
        store
            .preferences(o.dimension.as_deref())?
            .iter()
            .filter_map(crate::analysis::oriented)
            .map(|(p, _)| p)
            .collect()
    } else {
        BTreeSet::new()
    };
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    for members in groups.values_mut() {
        members.sort_unstable();
        for (i, a) in members.iter().enumerate() {
            for b in &members[i + 1..] {
                if !judged.contains(&(a.clone(), b.clone())) {
                    pairs.push((a, b));
                }
            }
        }
    }
    pairs.sort_unstable();

    let score = |m: &BTreeMap<String, (f64, Option<String>)>, id: &str| m[id].0;
    let margin = |m: &BTreeMap<String, (f64, Option<String>)>, (a, b): (&str, &str)| score(m, a) - score(m, b);
    let disagreement: Vec<f64> = match &against {
        Some(t) => pairs.iter().map(|p| (margin(&base, *p) - margin(t, *p)).abs()).collect(),
        None => Vec::new(),
    };
    let uncertainty: Vec<f64> = if !members.is_empty() {
        pairs
            .iter()
            .map(|p| {
                let v: Vec<f64> = members.iter().map(|m| margin(m, *p)).collect();
                let mean = v.iter().sum::<f64>() / v.len() as f64;
                (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() as f64 - 1.0)).sqrt()
            })
            .collect()
    } else {
        pairs.iter().map(|p| (1.0 - margin(&base, *p).abs()).max(0.0)).collect()
    };
    let balanced = || -> Result<Vec<f64>> {
        let f = Filter { evaluator: Some(evaluator.to_string()), ..o.window.clone() };
        let labelled: HashMap<Option<String>, u64> =
            store.cohort_stats(&f, policy)?.into_iter().map(|c| (c.cohort, c.with_human_score)).collect();
        let mut ends: HashMap<&Option<String>, usize> = HashMap::new();
        for (a, b) in &pairs {
            *ends.entry(&base[*a].1).or_default() += 1;
            *ends.entry(&base[*b].1).or_default() += 1;
        }
        let term = |id: &str| {
            let c = &base[id].1;
            1.0 / (ends[c] as f64 * (1.0 + labelled.get(c).copied().unwrap_or(0) as f64))
        };
        Ok(pairs.iter().map(|(a, b)| (term(a) + term(b)) / 2.0).collect())
    };
    // Without members the uncertainty is the evaluator's own (1 - |gap|): not a part of `mix`.
    let uncertainty_part = if members.is_empty() && o.strategy == Strategy::Mix { Vec::new() } else { uncertainty };
    let priority = strategy_priorities(o.strategy, pairs.len(), disagreement, uncertainty_part, balanced)?;
    Ok(pairs
        .into_iter()
        .zip(priority)
        .map(|((a, b), p)| Candidate { request_id: a.to_string(), other_request_id: Some(b.to_string()), priority: p })
        .collect())
}
