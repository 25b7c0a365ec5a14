//! Evaluation metrics of a classifier's scores against labels: weighted loss, Spearman, AUC,
//! accuracy, and the group-level Spearman. Accumulators in the burn style (`update` then
//! `compute`); the statistics themselves are [`evalloop_core::stats`]'s, so training and the
//! agreement analysis compute Spearman and AUC with the same code.
//!
//! The group-level (summary-level) Spearman is how an evaluator is used: it ranks the outputs
//! for one prompt. It is Spearman's rho between scores and labels within each `group` (the
//! dataset's `group` field), averaged without weights over the groups with at least two
//! examples and non-constant scores and labels ([`evalloop_core::stats::group::group_correlation`]).

use evalloop_core::stats::calibration::roc_auc;
use evalloop_core::stats::corr::{CorrKind, coefficient};
use serde::{Deserialize, Serialize};

/// Metrics of one evaluation pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalMetrics {
    /// Number of examples.
    pub n: usize,
    /// Weighted mean loss (BCE with logits for binary, MSE for graded); NaN (written as null)
    /// when the weights sum to 0.
    #[serde(deserialize_with = "nan_if_null")]
    pub loss: f64,
    /// Spearman rank correlation between scores and labels (`None` when undefined: fewer than
    /// two examples or constant scores or labels).
    pub spearman: Option<f64>,
    /// ROC AUC of the scores for label >= 0.5 (binary labels only; `None` when one class is
    /// absent).
    pub auc: Option<f64>,
    /// Share of examples where score >= 0.5 agrees with label >= 0.5 (binary labels only).
    pub accuracy: Option<f64>,
    /// Mean within-group Spearman of scores with labels over the groups where it is defined
    /// (see the module docs); `None` when no group is usable (no `group` field, singleton
    /// groups, constant labels within every group).
    #[serde(default)]
    pub group_spearman: Option<f64>,
    /// Groups averaged into `group_spearman`.
    #[serde(default)]
    pub groups_used: usize,
    /// Multi-task models: the same metrics per human dimension (outputs 1..K against the
    /// rows' `labels`, graded: `loss` is the weighted MSE), over the rows with a label on it;
    /// empty (and not written) for a one-output model.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub dimensions: std::collections::BTreeMap<String, EvalMetrics>,
}

fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// Collects (score, label, weight, loss) of each example, then computes [`EvalMetrics`].
#[derive(Debug, Clone, Default)]
pub struct EvalAccumulator {
    scores: Vec<f64>,
    labels: Vec<f64>,
    groups: Vec<(String, f64, f64)>,
    weighted_loss: f64,
    weight: f64,
}

impl EvalAccumulator {
    /// Adds one example: its score (probability for binary, value for graded), label, weight
    /// and unweighted loss.
    pub fn update(&mut self, score: f64, label: f64, weight: f64, loss: f64) {
        self.scores.push(score);
        self.labels.push(label);
        self.weighted_loss += weight * loss;
        self.weight += weight;
    }

    /// Adds one example as [`EvalAccumulator::update`] does, and counts it in `group` for the
    /// group-level Spearman (examples without a group only count in the dataset-level figures).
    pub fn update_in_group(&mut self, group: Option<&str>, score: f64, label: f64, weight: f64, loss: f64) {
        self.update(score, label, weight, loss);
        if let Some(g) = group {
            self.groups.push((g.to_string(), score, label));
        }
    }

    /// The metrics so far; `binary` adds AUC and accuracy.
    pub fn compute(&self, binary: bool) -> EvalMetrics {
        let n = self.scores.len();
        let loss = if self.weight > 0.0 { self.weighted_loss / self.weight } else { f64::NAN };
        let (auc, accuracy) = if binary {
            let correct = self.scores.iter().zip(&self.labels).filter(|(s, l)| (**s >= 0.5) == (**l >= 0.5)).count();
            let acc = if n > 0 { Some(correct as f64 / n as f64) } else { None };
            (auc(&self.scores, &self.labels), acc)
        } else {
            (None, None)
        };
        let g = evalloop_core::stats::group::group_correlation(&self.groups, 2);
        EvalMetrics {
            n,
            loss,
            spearman: spearman(&self.scores, &self.labels),
            auc,
            accuracy,
            group_spearman: g.mean_spearman.ok(),
            groups_used: g.groups_used,
            dimensions: std::collections::BTreeMap::new(),
        }
    }
}

/// Spearman's rho of `x` and `y` ([`coefficient`]: Pearson's r of average ranks, as
/// `scipy.stats.spearmanr`); `None` when undefined: fewer than two pairs, a constant column, or
/// a non-finite value.
fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    coefficient(CorrKind::Spearman, x, y).ok()
}

/// ROC AUC of `scores` with positives `label >= 0.5` ([`roc_auc`], ties counted half, as
/// `sklearn.metrics.roc_auc_score`); `None` when a class is absent or a score is not finite.
fn auc(scores: &[f64], labels: &[f64]) -> Option<f64> {
    let positive: Vec<bool> = labels.iter().map(|&l| l >= 0.5).collect();
    roc_auc(scores, &positive, None).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Reference values from scipy:
    //   from scipy.stats import spearmanr; from sklearn.metrics import roc_auc_score
    //   spearmanr([0.1, 0.4, 0.35, 0.8, 0.8], [0, 0, 1, 1, 1]).statistic  -> 0.5923488777590924
    //   roc_auc_score([0, 0, 1, 1, 1], [0.1, 0.4, 0.35, 0.8, 0.8])         -> 0.8333333333333333
    #[test]
    fn spearman_and_auc_match_scipy_with_ties() {
        let s = [0.1, 0.4, 0.35, 0.8, 0.8];
        let l = [0.0, 0.0, 1.0, 1.0, 1.0];
        assert!((spearman(&s, &l).unwrap() - 0.5923488777590924).abs() < 1e-12);
        assert!((auc(&s, &l).unwrap() - 0.8333333333333333).abs() < 1e-12);
        assert_eq!(spearman(&[1.0, 1.0], &[0.0, 1.0]), None);
        assert_eq!(auc(&s, &[1.0; 5]), None);
        // The accumulator reports the same figures.
        let mut acc = EvalAccumulator::default();
        for (&s, &l) in s.iter().zip(&l) {
            acc.update(s, l, 1.0, 0.0);
        }
        let m = acc.compute(true);
        assert_eq!((m.spearman, m.auc), (spearman(&s, &l), auc(&s, &l)));
    }

    /// Group "a" ranks perfectly, "b" backwards, "c" has constant labels (skipped), "d" is a
    /// singleton (skipped), and ungrouped rows only count in the overall Spearman.
    #[test]
    fn group_spearman_averages_usable_groups() {
        let mut acc = EvalAccumulator::default();
        for (g, s, l) in [
            (Some("a"), 0.1, 0.0),
            (Some("a"), 0.5, 0.5),
            (Some("a"), 0.9, 1.0),
            (Some("b"), 0.9, 0.2),
            (Some("b"), 0.1, 0.8),
            (Some("c"), 0.3, 0.5),
            (Some("c"), 0.4, 0.5),
            (Some("d"), 0.4, 0.1),
            (None, 0.7, 0.7),
        ] {
            acc.update_in_group(g, s, l, 1.0, 0.0);
        }
        let m = acc.compute(false);
        assert_eq!(m.n, 9);
        assert_eq!(m.groups_used, 2);
        assert!((m.group_spearman.unwrap() - 0.0).abs() < 1e-12, "{m:?}");
        let mut one = EvalAccumulator::default();
        one.update(0.1, 0.0, 1.0, 0.0);
        one.update(0.2, 1.0, 1.0, 0.0);
        assert_eq!(one.compute(false).group_spearman, None);
    }
}
