//! Stratified subsampling to `max_examples`, with Horvitz-Thompson weight inflation.

use std::collections::BTreeMap;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::request::LabelledRequest;
use crate::hash::hash64;

/// What subsampling did to one stratum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StratumSample {
    pub cohort: String,
    pub class: String,
    pub available: usize,
    pub kept: usize,
    /// `available / kept`, the factor on kept weights.
    pub inflation: f64,
}

/// Keeps about `max_examples` examples, stratified by cohort x class (see the module docs);
/// kept weights are inflated by `N_s / m_s`. Output is sorted by request id.
pub fn subsample(
    mut examples: Vec<LabelledRequest>,
    max_examples: usize,
    min_per_stratum: usize,
    seed: u64,
) -> (Vec<LabelledRequest>, Vec<StratumSample>) {
    let n = examples.len();
    if n <= max_examples {
        return (examples, Vec::new());
    }
    examples.sort_by(|a, b| a.request_id.cmp(&b.request_id));
    let mut strata: BTreeMap<(String, &'static str), Vec<LabelledRequest>> = BTreeMap::new();
    for e in examples {
        strata.entry((e.cohort.clone(), e.class)).or_default().push(e);
    }
    // Proportional allocation by largest remainders.
    let quotas: Vec<f64> = strata.values().map(|v| max_examples as f64 * v.len() as f64 / n as f64).collect();
    let mut alloc: Vec<usize> = quotas.iter().map(|q| q.floor() as usize).collect();
    let mut rest = max_examples.saturating_sub(alloc.iter().sum());
    let mut by_remainder: Vec<usize> = (0..quotas.len()).collect();
    by_remainder
        .sort_by(|&a, &b| (quotas[b] - quotas[b].floor()).total_cmp(&(quotas[a] - quotas[a].floor())).then(a.cmp(&b)));
    for i in by_remainder {
        if rest == 0 {
            break;
        }
        alloc[i] += 1;
        rest -= 1;
    }
    let mut kept = Vec::new();
    let mut report = Vec::new();
    for (((cohort, class), mut items), m) in strata.into_iter().zip(alloc) {
        let available = items.len();
        let m = m.max(min_per_stratum.min(available)).min(available).max(1);
        items.shuffle(&mut ChaCha8Rng::seed_from_u64(hash64(&[&seed.to_string(), "subsample", &cohort, class])));
        let inflation = available as f64 / m as f64;
        for mut e in items.into_iter().take(m) {
            e.weight *= inflation;
            kept.push(e);
        }
        report.push(StratumSample { cohort, class: class.to_string(), available, kept: m, inflation });
    }
    kept.sort_by(|a, b| a.request_id.cmp(&b.request_id));
    (kept, report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::fixtures::population;

    #[test]
    fn subsampling_preserves_weighted_totals_in_expectation() {
        let mut pop = population();
        for (i, e) in pop.iter_mut().enumerate() {
            e.weight = 1.0 + (i % 5) as f64;
        }
        let total = |es: &[LabelledRequest], c: &str, k: &str| -> f64 {
            es.iter().filter(|e| e.cohort == c && e.class == k).map(|e| e.weight).sum()
        };
        let seeds = 400;
        for (c, k) in [("free", "good"), ("pro", "bad"), ("team", "good")] {
            let truth = total(&pop, c, k);
            let mean: f64 = (0..seeds)
                .map(|s| {
                    let (kept, _) = subsample(pop.clone(), 90, 5, s);
                    total(&kept, c, k)
                })
                .sum::<f64>()
                / seeds as f64;
            assert!((mean - truth).abs() / truth < 0.02, "{c}/{k}: mean {mean} vs {truth}");
        }
        let (kept, report) = subsample(pop.clone(), 90, 5, 1);
        assert_eq!(kept.len(), 90);
        assert_eq!(report.len(), 6);
        // Under the limit: untouched.
        let (same, r) = subsample(pop.clone(), 1000, 5, 1);
        assert_eq!(same.len(), 600);
        assert!(r.is_empty());
    }
}
