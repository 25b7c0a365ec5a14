//! One labelled request ([`LabelledRequest`]) and the rules that name its cohort and group and mark it as
//! a disagreement.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::feedback::Verdict;
use crate::hash::hash64;

/// The cohort name used for requests without `metadata.user_cohort`.
pub const NO_COHORT: &str = "(none)";

/// One labelled request, the unit every pure step of the build works on.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledRequest {
    pub request_id: String,
    pub prompt: String,
    pub output: String,
    /// 0/1 (binary) or in [0, 1] (graded).
    pub label: f64,
    /// `good`, `neutral` or `bad`: the human verdict, the class for stratification and balance.
    pub class: &'static str,
    /// Human score, 1-5.
    pub human_score: f64,
    /// Evaluator `overall`, in [0, 1].
    pub eval_score: f64,
    pub cohort: String,
    pub group: String,
    pub is_disagreement: bool,
    /// The product of the weighting factors so far.
    pub weight: f64,
    /// Per configured dimension, `(mean rating - 1) / 4`, or `None` without a rating on it.
    pub labels: BTreeMap<String, Option<f64>>,
}

/// A metadata value as the group name the stores give it for a `group_key` (the `group` of
/// [`Store::scored_requests`](crate::store::Store::scored_requests)): text as it is, a boolean `"1"` or `"0"`, any other value its
/// JSON text; `None` for null or an absent key (the caller then falls back to the prompt hash).
/// `dataset build` names the groups of unlabelled requests with it, so that they match the
/// split's group names.
pub fn metadata_group(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::Null => None,
        Value::String(g) => Some(g.clone()),
        Value::Bool(b) => Some(if *b { "1" } else { "0" }.to_string()),
        v => Some(v.to_string()),
    }
}

/// Whether the evaluator (good when `eval_score > threshold`) and the human verdict disagree;
/// neutral never disagrees.
pub fn is_disagreement(eval_score: f64, threshold: f64, verdict: Verdict) -> bool {
    let eval_good = eval_score > threshold;
    match verdict {
        Verdict::Good => !eval_good,
        Verdict::Bad => eval_good,
        Verdict::Neutral => false,
    }
}

/// The group of a request without a group key: `prompt-` and 16 hex digits of a hash of the prompt.
pub fn prompt_group(prompt: &str) -> String {
    format!("prompt-{:016x}", hash64(&[prompt]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disagreement_rule() {
        assert!(is_disagreement(0.9, 0.7, Verdict::Bad));
        assert!(is_disagreement(0.7, 0.7, Verdict::Good));
        assert!(!is_disagreement(0.9, 0.7, Verdict::Good));
        assert!(!is_disagreement(0.9, 0.7, Verdict::Neutral));
        assert!(!is_disagreement(0.1, 0.7, Verdict::Neutral));
    }
}
