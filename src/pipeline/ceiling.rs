//! The run's human-ceiling section: agreement between people over the window, the base
//! evaluator against the ceiling there, and both evaluators against it on the held-out split.

use std::collections::{BTreeMap, BTreeSet};

use crate::Result;
use crate::analysis::{self, RaterAgreementOptions, RaterCells};
use crate::report::{CeilingFigures, HumanCeilingSection};
use crate::stats::Outcome;
use crate::store::{Filter, Store};

/// Krippendorff's lowest alpha for tentative conclusions (Krippendorff 2004, section 11.4.1):
/// the default of `[run] min_human_alpha`.
pub const DEFAULT_MIN_HUMAN_ALPHA: f64 = 0.667;

/// The section for the window's requests (`window`, without an evaluator), the base evaluator
/// `base`, the held-out request ids and the retrained evaluator's scores of them. A warning is
/// set when alpha between people is defined and under `min_alpha`.
pub(super) fn human_ceiling(
    store: &dyn Store,
    window: &Filter,
    base: &str,
    test_ids: &[String],
    new_scores: &BTreeMap<String, f64>,
    min_alpha: f64,
) -> Result<HumanCeilingSection> {
    let events = store.rater_events(&Filter { evaluator: Some(base.to_string()), ..window.clone() }, None)?;
    let opts = RaterAgreementOptions { bootstrap: 0, ..Default::default() };
    let people = analysis::rater_agreement_of(0, &events, Ok(base), &opts);
    let a = &people.ratings.agreement;
    let (human_alpha, human_alpha_reason) = match &a.alpha {
        Outcome::Defined(x) => (Some(*x), None),
        Outcome::Undefined(u) => (None, Some(u.reason.clone())),
    };
    let held: BTreeSet<&str> = test_ids.iter().map(String::as_str).collect();
    let held_events = events.iter().filter(|e| held.contains(e.event.request_id.as_str()));
    let cells = RaterCells::of(held_events, None).ratings;
    let pre_scores: BTreeMap<String, f64> = events
        .iter()
        .filter(|e| held.contains(e.event.request_id.as_str()))
        .filter_map(|e| Some((e.event.request_id.clone(), e.eval_score?)))
        .collect();
    let pre = analysis::human_ceiling(&cells, &pre_scores, base).into();
    let post = analysis::human_ceiling(&cells, new_scores, "the retrained evaluator").into();
    let warning = human_alpha.filter(|x| *x < min_alpha).map(|x| {
        format!(
            "people agree little with each other (Krippendorff's alpha {x:.3} < min_human_alpha {min_alpha} on {} \
             requests rated by two or more people): the labels are too noisy to judge an evaluator by, and no \
             evaluator can be expected to agree with them better than they agree with each other",
            a.items_used
        )
    });
    Ok(HumanCeilingSection {
        human_alpha,
        human_alpha_reason,
        items: a.items_used as u64,
        raters: a.raters_used as u64,
        window: CeilingFigures::of(&people.ratings.ceiling),
        pre: CeilingFigures::of(&pre),
        post: CeilingFigures::of(&post),
        warning,
    })
}
