//! Group-level assignment of examples to train, validation and test, stratified by cohort x class.

use std::collections::BTreeMap;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::request::LabelledRequest;
use crate::hash::hash64;

/// The three splits, in file order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Validation,
    Test,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Validation, Split::Test];

    /// `train`, `validation`, `test`.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Validation => "validation",
            Split::Test => "test",
        }
    }
}

/// Assigns each group to a split (see the module docs); returns group -> split.
pub fn assign_splits(examples: &[LabelledRequest], train: f64, validation: f64, seed: u64) -> BTreeMap<String, Split> {
    let targets = [train, validation, (1.0 - train - validation).max(0.0)];
    let mut groups: BTreeMap<&str, BTreeMap<(&str, &str), usize>> = BTreeMap::new();
    for e in examples {
        *groups.entry(&e.group).or_default().entry((&e.cohort, e.class)).or_insert(0) += 1;
    }
    let mut by_stratum: BTreeMap<(&str, &str), Vec<(&str, usize)>> = BTreeMap::new();
    for (g, cells) in &groups {
        // Most common cell; ties go to the smallest key (BTreeMap order, max_by keeps the last max).
        let (stratum, _) = cells.iter().rev().max_by_key(|(_, n)| **n).map(|(k, n)| (*k, *n)).unwrap_or((("", ""), 0));
        by_stratum.entry(stratum).or_default().push((g, cells.values().sum()));
    }
    let mut assigned = [0usize; 3];
    let mut total = 0usize;
    let mut out = BTreeMap::new();
    for ((cohort, class), mut gs) in by_stratum {
        gs.shuffle(&mut ChaCha8Rng::seed_from_u64(hash64(&[&seed.to_string(), "split", cohort, class])));
        for (g, size) in gs {
            let after = (total + size) as f64;
            let mut best = 0;
            let mut best_deficit = f64::NEG_INFINITY;
            for (i, t) in targets.iter().enumerate() {
                if *t <= 0.0 {
                    continue;
                }
                let deficit = t * after - assigned[i] as f64;
                if deficit > best_deficit + 1e-12 {
                    best = i;
                    best_deficit = deficit;
                }
            }
            assigned[best] += size;
            total += size;
            out.insert(g.to_string(), Split::ALL[best]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::fixtures::population;
    use crate::dataset::subsample::subsample;

    #[test]
    fn no_group_crosses_splits_and_fractions_hold() {
        let pop = population();
        for seed in 0..20 {
            let splits = assign_splits(&pop, 0.8, 0.1, seed);
            let mut seen: BTreeMap<&str, Split> = BTreeMap::new();
            let mut counts = [0usize; 3];
            for e in &pop {
                let s = splits[&e.group];
                assert_eq!(*seen.entry(&e.group).or_insert(s), s, "group {} in two splits", e.group);
                counts[s as usize] += 1;
            }
            assert!((counts[0] as f64 / 600.0 - 0.8).abs() < 0.02, "{counts:?}");
            assert!((counts[1] as f64 / 600.0 - 0.1).abs() < 0.02, "{counts:?}");
            // Stratified: every cohort x class cell reaches validation and test.
            for split in [Split::Validation, Split::Test] {
                for c in ["free", "pro", "team"] {
                    assert!(pop.iter().any(|e| e.cohort == c && splits[&e.group] == split), "{c} missing");
                }
            }
        }
    }

    #[test]
    fn splits_and_subsamples_are_deterministic() {
        let pop = population();
        assert_eq!(assign_splits(&pop, 0.8, 0.1, 3), assign_splits(&pop, 0.8, 0.1, 3));
        assert_ne!(assign_splits(&pop, 0.8, 0.1, 3), assign_splits(&pop, 0.8, 0.1, 4));
        assert_eq!(subsample(pop.clone(), 100, 5, 9), subsample(pop.clone(), 100, 5, 9));
    }
}
