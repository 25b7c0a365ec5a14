//! The run's preference section: the base and retrained evaluators' pairwise accuracy against
//! people's preferences on the held-out split's pairs (`pairs.jsonl`, split `test`).

use std::collections::BTreeMap;
use std::path::Path;

use crate::Result;
use crate::files::{PAIRS_FILE, PairRow};
use crate::report::{PairwiseFigures, PreferenceSection};
use crate::stats::BootstrapConfig;
use crate::stats::preference::{Choice, JudgedPair, pairwise_accuracy};

/// The held-out pairs of the dataset; none when it has no `pairs.jsonl`.
pub(super) fn test_pairs(dataset_dir: &Path) -> Result<Vec<PairRow>> {
    let path = dataset_dir.join(PAIRS_FILE);
    if !path.exists() {
        return Ok(Vec::new());
    }
    Ok(crate::jsonl::read::<PairRow>(&path)?.into_iter().filter(|p| p.split == "test").collect())
}

/// The section for `pairs` with each evaluator's scores by request id; `None` without pairs.
pub(super) fn section(
    pairs: &[PairRow],
    base: &BTreeMap<String, f64>,
    new: &BTreeMap<String, f64>,
) -> Option<PreferenceSection> {
    if pairs.is_empty() {
        return None;
    }
    let cfg = BootstrapConfig { n_resamples: 1000, seed: 7, ..Default::default() };
    let of = |scores: &BTreeMap<String, f64>| {
        let judged: Vec<JudgedPair> = pairs
            .iter()
            .filter_map(|p| {
                Some(JudgedPair {
                    score_a: *scores.get(&p.request_id_chosen)?,
                    score_b: *scores.get(&p.request_id_rejected)?,
                    choice: Choice::A,
                })
            })
            .collect();
        PairwiseFigures::of(&pairwise_accuracy(&judged, &cfg).into())
    };
    Some(PreferenceSection { pairs: pairs.len() as u64, pre: of(base), post: of(new) })
}
