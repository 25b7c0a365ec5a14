//! Test fixtures shared by the dataset module's tests: examples and a small population.

use std::collections::BTreeMap;

use super::request::LabelledRequest;

/// LabelledRequest `r{id:04}` of `class` in `cohort` and `group`, unit weight; good ones are disagreements.
pub(super) fn ex(id: usize, cohort: &str, class: &'static str, group: &str) -> LabelledRequest {
    LabelledRequest {
        request_id: format!("r{id:04}"),
        prompt: format!("p{group}"),
        output: format!("o{id}"),
        label: if class == "good" { 1.0 } else { 0.0 },
        class,
        human_score: if class == "good" { 5.0 } else { 1.0 },
        eval_score: 0.5,
        cohort: cohort.into(),
        group: group.into(),
        is_disagreement: class == "good",
        weight: 1.0,
        labels: BTreeMap::new(),
    }
}

/// 600 examples over 3 cohorts, 2 classes, groups of 3.
pub(super) fn population() -> Vec<LabelledRequest> {
    (0..600)
        .map(|i| {
            let cohort = ["free", "pro", "team"][i % 3];
            let class = if i % 7 < 3 { "good" } else { "bad" };
            ex(i, cohort, class, &format!("g{}", i / 3))
        })
        .collect()
}
