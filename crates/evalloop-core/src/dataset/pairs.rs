//! Preference pairs for `dataset build`: the store's overall preferences between two outputs
//! of a prompt group, as `pairs.jsonl` beside the splits.
//!
//! Events on the same two requests are one pair; its verdict is the majority of their votes
//! ([`crate::analysis::majority`]); tied pairs are left out (the ranking loss has nothing to
//! learn from them), as are pairs with an output outside the window or unscored by the
//! dataset's evaluator, and pairs across two prompt groups (groups as the rows have them). A
//! pair takes the split of its group, so a group's rows and pairs are never in two splits, and
//! groups that only pairs have are assigned with the rows' groups (stratum: cohort x `pair`).
//! Its weight is the product of the cohort-level weighting factors (`inverse_rate`, `ipw`) of
//! the cohort of the request the preference was left on; `normalize` divides by the mean over
//! the train split's pairs.

use std::collections::{BTreeMap, BTreeSet};

use super::request::{LabelledRequest, NO_COHORT, metadata_group, prompt_group};
use crate::Result;
use crate::analysis::{add_vote, majority, oriented};
use crate::files::PairsCard;
use crate::record::Choice;
use crate::store::{Filter, Store};

/// A pair before its split is known.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    pub chosen: (String, String),
    pub rejected: (String, String),
    pub prompt: String,
    pub group: String,
    pub cohort: String,
    pub margin: u32,
}

/// The decisive pairs of the store's overall preferences within `filter` (which names the
/// evaluator), and the card's counts (without the per-split ones).
pub(super) fn collect(store: &dyn Store, filter: &Filter, group_key: Option<&str>) -> Result<(Vec<Pair>, PairsCard)> {
    let events = store.preferences(None)?;
    let mut card = PairsCard { events: events.len(), ..Default::default() };
    if events.is_empty() {
        return Ok((Vec::new(), card));
    }
    let mut votes: BTreeMap<(String, String), [usize; 3]> = BTreeMap::new();
    // The first event on a pair names the request whose cohort the pair takes.
    let mut first: BTreeMap<(String, String), String> = BTreeMap::new();
    for e in &events {
        let Some((p, c)) = oriented(e) else { continue };
        first.entry(p.clone()).or_insert_with(|| e.request_id.clone());
        add_vote(votes.entry(p).or_default(), c);
    }
    let scored: BTreeSet<String> = store.evaluated_requests(filter)?.into_iter().map(|r| r.request_id).collect();
    let logged: Vec<String> = votes
        .keys()
        .flat_map(|(a, b)| [a, b])
        .filter(|id| scored.contains(*id))
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let texts: BTreeMap<String, (String, String, String, String)> = store
        .request_texts(&logged)?
        .into_iter()
        .map(|(id, t)| {
            let meta: serde_json::Value = serde_json::from_str(&t.metadata).unwrap_or_default();
            let group = group_key.and_then(|k| metadata_group(meta.get(k))).unwrap_or_else(|| prompt_group(&t.prompt));
            let cohort = meta.get("user_cohort").and_then(|c| c.as_str()).unwrap_or(NO_COHORT).to_string();
            (id, (t.prompt, t.output, group, cohort))
        })
        .collect();
    let mut pairs = Vec::new();
    for ((a, b), v) in &votes {
        let (Some(ta), Some(tb)) = (texts.get(a), texts.get(b)) else {
            card.unlogged += 1;
            continue;
        };
        if ta.2 != tb.2 {
            card.cross_group += 1;
            continue;
        }
        let (chosen, rejected, margin) = match majority(*v) {
            Choice::Tie => {
                card.ties += 1;
                continue;
            }
            Choice::A => ((a, ta), (b, tb), v[0] - v[1]),
            Choice::B => ((b, tb), (a, ta), v[1] - v[0]),
        };
        let on = &texts[&first[&(a.clone(), b.clone())]];
        pairs.push(Pair {
            chosen: (chosen.0.clone(), chosen.1.1.clone()),
            rejected: (rejected.0.clone(), rejected.1.1.clone()),
            prompt: chosen.1.0.clone(),
            group: ta.2.clone(),
            cohort: on.3.clone(),
            margin: margin as u32,
        });
    }
    Ok((pairs, card))
}

/// Stand-ins for the pairs' groups in the split assignment: one per pair, stratum cohort x
/// `pair`, for groups that no labelled row has.
pub(super) fn split_stand_ins(pairs: &[Pair], rows: &[LabelledRequest]) -> Vec<LabelledRequest> {
    let labelled: BTreeSet<&str> = rows.iter().map(|r| r.group.as_str()).collect();
    pairs
        .iter()
        .filter(|p| !labelled.contains(p.group.as_str()))
        .map(|p| LabelledRequest {
            request_id: p.chosen.0.clone(),
            prompt: String::new(),
            output: String::new(),
            label: 0.0,
            class: "pair",
            human_score: f64::NAN,
            eval_score: f64::NAN,
            cohort: p.cohort.clone(),
            group: p.group.clone(),
            is_disagreement: false,
            weight: 0.0,
            labels: BTreeMap::new(),
        })
        .collect()
}
