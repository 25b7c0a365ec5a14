//! `unlabelled.jsonl`: logged requests without a human score, kept out of held-out groups.

use std::path::Path;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

use super::config::DatasetConfig;
use super::request::{NO_COHORT, metadata_group, prompt_group};
use crate::Result;
use crate::atomic::AtomicWriter;
use crate::feedback::HumanPolicy;
use crate::files::{UNLABELLED_FILE, UnlabelledRow};
use crate::hash::hash64;
use crate::store::{Filter, ScoredQuery, Store};

/// Writes `unlabelled.jsonl` (module docs): up to `cfg.unlabelled` requests of `window` without a
/// human score under `policy` (for any evaluator) whose group is not `held` (validation or test),
/// by a seeded shuffle, each with `evaluator`'s score where it has one; returns the count.
pub(super) fn write_unlabelled(
    store: &dyn Store,
    evaluator: &str,
    window: &Filter,
    policy: &HumanPolicy,
    cfg: &DatasetConfig,
    held: &dyn Fn(&str) -> bool,
    out: &Path,
) -> Result<usize> {
    let scores: std::collections::HashMap<String, f64> = store
        .evaluated_requests(&Filter { evaluator: Some(evaluator.to_string()), ..window.clone() })?
        .into_iter()
        .filter(|r| r.eval_score.is_finite())
        .map(|r| (r.request_id, r.eval_score))
        .collect();
    let window = Filter { evaluator: None, ..window.clone() };
    // Requests with a human score under any evaluator (the dataset's rows are one evaluator's).
    let rated: std::collections::HashSet<String> = store
        .scored_requests(&ScoredQuery { filter: window.clone(), policy: policy.clone(), ..Default::default() })?
        .into_iter()
        .map(|r| r.request_id)
        .collect();
    let mut ids: Vec<String> = store.request_ids(&window)?.into_iter().filter(|id| !rated.contains(id)).collect();
    ids.shuffle(&mut ChaCha8Rng::seed_from_u64(hash64(&[&cfg.seed.to_string(), "unlabelled"])));
    let mut rows = Vec::new();
    // Read in chunks until enough rows outside the held-out groups are found.
    'chunks: for chunk in ids.chunks(4096) {
        for (id, t) in store.request_texts(chunk)? {
            let metadata: Value = serde_json::from_str(&t.metadata).unwrap_or(Value::Null);
            let group = metadata_group(cfg.group_key.as_ref().and_then(|k| metadata.get(k)))
                .unwrap_or_else(|| prompt_group(&t.prompt));
            if held(&group) {
                continue;
            }
            let cohort = metadata.get("user_cohort").and_then(Value::as_str).unwrap_or(NO_COHORT).to_string();
            rows.push((id, t.prompt, t.output, group, cohort));
            if rows.len() == cfg.unlabelled {
                break 'chunks;
            }
        }
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    let mut w = AtomicWriter::create(&out.join(UNLABELLED_FILE))?;
    for (id, prompt, output, group, cohort) in &rows {
        let row = UnlabelledRow {
            cohort: Some(cohort.clone()),
            group: Some(group.clone()),
            evaluator_score: scores.get(id).map(|&s| super::cells::r6(s)),
            output: output.clone(),
            prompt: prompt.clone(),
            request_id: id.clone(),
        };
        w.write_json_line(&row)?;
    }
    w.commit()?;
    Ok(rows.len())
}
