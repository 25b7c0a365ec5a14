//! Preference pairs (prompt, chosen, rejected) for DPO and reward models: by score margin
//! within a prompt, from edits, and from preference events.

use std::collections::BTreeMap;

use super::rows::{LabelSource, PairRow, Source};
use super::{Candidate, Plan};

/// One output and its score (a human score 1-5, or 1/0 for an evaluator's confident verdict).
#[derive(Debug, Clone, Copy)]
pub struct Side<'a> {
    pub candidate: &'a Candidate,
    pub score: f64,
}

/// Every pair of outputs of one prompt (same group and same prompt text) whose scores differ by
/// at least `margin`, the higher one chosen; outputs with the same text are not paired. Within a
/// prompt the outputs go by score (highest first), then request id.
pub fn score_margin_pairs(sides: &[Side<'_>], margin: f64, source: Source, label_source: LabelSource) -> Vec<PairRow> {
    let mut prompts: BTreeMap<(&str, &str), Vec<Side<'_>>> = BTreeMap::new();
    for s in sides {
        prompts.entry((&s.candidate.group, &s.candidate.prompt)).or_default().push(*s);
    }
    let mut out = Vec::new();
    for (_, mut group) in prompts {
        group.sort_by(|a, b| {
            b.score.total_cmp(&a.score).then_with(|| a.candidate.request_id.cmp(&b.candidate.request_id))
        });
        for (i, hi) in group.iter().enumerate() {
            for lo in &group[i + 1..] {
                // Scores are sums of small multiples of 0.5 or 1: a tolerance keeps a margin of
                // exactly 1 from missing a pair by rounding.
                if hi.score - lo.score + 1e-9 < margin || hi.candidate.output == lo.candidate.output {
                    continue;
                }
                out.push(pair(
                    hi.candidate,
                    &hi.candidate.output,
                    lo.candidate,
                    &lo.candidate.output,
                    source,
                    label_source,
                ));
            }
        }
    }
    out
}

/// An edited output (chosen) over the output it replaced (rejected), for each edit.
pub fn edit_pairs(edits: &[(Candidate, String)]) -> Vec<PairRow> {
    edits.iter().map(|(c, text)| pair(c, text, c, &c.output, Source::Edit, LabelSource::Human)).collect()
}

/// The pairs from A/B preference events between two outputs of the same prompt group
/// (`explicit_preference`): the decisive pairs `dataset build` writes to `pairs.jsonl` (the
/// majority of the votes on each pair, ties left out; see [`crate::dataset`]), the preferred
/// output chosen, outside the held-out groups unless `include_test`.
pub fn preference_pairs(plan: &Plan, include_test: bool) -> Vec<PairRow> {
    plan.pairs
        .iter()
        .filter(|p| !super::held_out(plan, include_test, &p.group))
        .map(|p| {
            let side = |(id, output): &(String, String)| Candidate {
                request_id: id.clone(),
                prompt: p.prompt.clone(),
                output: output.clone(),
                cohort: p.cohort.clone(),
                group: p.group.clone(),
            };
            let (chosen, rejected) = (side(&p.chosen), side(&p.rejected));
            pair(&chosen, &chosen.output, &rejected, &rejected.output, Source::Preference, LabelSource::Human)
        })
        .collect()
}

fn pair(
    chosen: &Candidate,
    chosen_text: &str,
    rejected: &Candidate,
    rejected_text: &str,
    source: Source,
    label_source: LabelSource,
) -> PairRow {
    PairRow {
        chosen: chosen_text.to_string(),
        cohort: chosen.cohort.clone(),
        group: chosen.group.clone(),
        label_source,
        prompt: chosen.prompt.clone(),
        rejected: rejected_text.to_string(),
        rejected_request_id: rejected.request_id.clone(),
        request_id: chosen.request_id.clone(),
        source,
        weight: 1.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &str, group: &str, prompt: &str, output: &str) -> Candidate {
        Candidate {
            request_id: id.into(),
            prompt: prompt.into(),
            output: output.into(),
            cohort: "free".into(),
            group: group.into(),
        }
    }

    #[test]
    fn pairs_need_the_margin_the_same_prompt_and_different_texts() {
        let cs = [
            c("r1", "g", "p", "best"),
            c("r2", "g", "p", "middle"),
            c("r3", "g", "p", "worst"),
            c("r4", "g", "p", "worst"),
            c("r5", "g", "other prompt", "bad"),
            c("r6", "h", "p", "elsewhere"),
        ];
        let scores = [5.0, 4.0, 1.0, 3.0, 1.0, 1.0];
        let sides: Vec<Side<'_>> = cs.iter().zip(scores).map(|(c, score)| Side { candidate: c, score }).collect();
        let got: Vec<(String, String)> = score_margin_pairs(&sides, 1.0, Source::ScoreMargin, LabelSource::Human)
            .into_iter()
            .map(|p| (p.request_id, p.rejected_request_id))
            .collect();
        // r3 and r4 have the same text: never paired with each other; r5 and r6 are alone.
        let want = [("r1", "r2"), ("r1", "r4"), ("r1", "r3"), ("r2", "r4"), ("r2", "r3")];
        assert_eq!(got, want.map(|(a, b)| (a.to_string(), b.to_string())));
        let wide = score_margin_pairs(&sides, 3.0, Source::ScoreMargin, LabelSource::Human);
        assert_eq!(wide.len(), 2, "{wide:?}");
        assert!(wide.iter().all(|p| p.chosen != p.rejected && p.prompt == "p"));
    }

    #[test]
    fn an_edit_is_chosen_over_its_output() {
        let p = edit_pairs(&[(c("r1", "g", "p", "draft"), "final".into())]);
        assert_eq!((p[0].chosen.as_str(), p[0].rejected.as_str()), ("final", "draft"));
        assert_eq!((p[0].request_id.as_str(), p[0].rejected_request_id.as_str()), ("r1", "r1"));
        assert_eq!(p[0].source, Source::Edit);
    }
}
