//! Group-level correlation: Spearman and Kendall within each group (e.g. the responses to one
//! prompt), averaged over the groups where they are defined.

use std::collections::BTreeMap;

use serde::Serialize;

use super::corr::{CorrKind, coefficient};
use super::{Outcome, Undefined};

/// Mean within-group Spearman and Kendall correlations.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupCorrelation {
    /// Mean Spearman's rho over the used groups; undefined when no group is usable.
    pub mean_spearman: Outcome<f64>,
    /// Mean Kendall's tau-b over the same groups; undefined when no group is usable.
    pub mean_kendall: Outcome<f64>,
    /// Number of distinct groups.
    pub groups_total: usize,
    /// Groups averaged.
    pub groups_used: usize,
    /// Groups skipped: fewer than `min_group_size` rows, a constant column or a non-finite value.
    pub groups_skipped: usize,
    /// The minimum group size that was applied (at least 2).
    pub min_group_size: usize,
}

/// Groups `rows` = (group key, evaluator score x, human score y) by key, computes Spearman's
/// rho and Kendall's tau-b within each group and averages them (unweighted) over the groups
/// with at least `min_group_size` rows (raised to 2 if smaller), finite values and both columns
/// non-constant. `min_group_size = 2` keeps pairs (each contributes +1 or -1), the usual
/// group-level practice; use 3 to match the per-group p-value convention (n >= 3) elsewhere
/// in this module. Skipped groups are counted, not averaged as 0 or NaN.
pub fn group_correlation<K: Ord>(rows: &[(K, f64, f64)], min_group_size: usize) -> GroupCorrelation {
    let min_n = min_group_size.max(2);
    let mut groups: BTreeMap<&K, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for (k, x, y) in rows {
        let g = groups.entry(k).or_default();
        g.0.push(*x);
        g.1.push(*y);
    }
    let (mut sum_s, mut sum_k, mut used) = (0.0, 0.0, 0usize);
    for (x, y) in groups.values() {
        if x.len() < min_n {
            continue;
        }
        let (Ok(s), Ok(k)) = (coefficient(CorrKind::Spearman, x, y), coefficient(CorrKind::Kendall, x, y)) else {
            continue;
        };
        sum_s += s;
        sum_k += k;
        used += 1;
    }
    let mean = |sum: f64| -> Outcome<f64> {
        if used > 0 {
            Outcome::Defined(sum / used as f64)
        } else {
            Outcome::Undefined(Undefined::new("no group has enough rows and two non-constant columns"))
        }
    };
    GroupCorrelation {
        mean_spearman: mean(sum_s),
        mean_kendall: mean(sum_k),
        groups_total: groups.len(),
        groups_used: used,
        groups_skipped: groups.len() - used,
        min_group_size: min_n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_small_and_constant_groups() {
        let rows = vec![
            ("a", 1.0, 1.0),
            ("a", 2.0, 2.0),
            ("a", 3.0, 3.0),
            ("b", 1.0, 3.0),
            ("b", 2.0, 2.0),
            ("b", 3.0, 1.0),
            ("c", 1.0, 5.0), // constant y
            ("c", 2.0, 5.0),
            ("d", 4.0, 1.0), // single row
        ];
        let g = group_correlation(&rows, 2);
        assert_eq!((g.groups_total, g.groups_used, g.groups_skipped), (4, 2, 2));
        assert_eq!(g.mean_spearman, Outcome::Defined(0.0));
        assert_eq!(g.mean_kendall, Outcome::Defined(0.0));
        let none = group_correlation(&rows[6..], 2);
        assert!(!none.mean_spearman.is_defined());
    }
}
