//! Calibration of a score in [0, 1] read as P(good) against binary human labels: ECE and the
//! reliability table (equal-width and equal-mass bins), Brier score, ROC AUC, and the
//! confusion-matrix metrics at a threshold. Optional per-sample weights travel with the data.
//!
//! Binning follows `sklearn.calibration.calibration_curve`: equal-width edges are
//! `np.linspace(0, 1, n_bins + 1)`, equal-mass edges are `np.percentile(scores,
//! np.linspace(0, 1, n_bins + 1) * 100)` (unweighted, linear interpolation), and a score goes
//! to bin `np.searchsorted(edges[1:-1], score)`, i.e. bins are (lower, upper] except the first,
//! which also holds its lower edge. The evaluator "says good" when score > threshold (strict).

use serde::Serialize;

use super::{Outcome, Undefined, quantile_sorted};

/// How the reliability bins are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BinStrategy {
    /// Equal-width bins over [0, 1] (sklearn `strategy="uniform"`).
    Uniform,
    /// Equal-mass bins at the score percentiles (sklearn `strategy="quantile"`).
    Quantile,
}

/// Calibration settings. Defaults: 10 bins, threshold 0.5.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CalibrationConfig {
    /// Number of reliability bins per strategy (default 10, at least 1).
    pub n_bins: usize,
    /// The evaluator says "good" when score > threshold (default 0.5).
    pub threshold: f64,
}

impl Default for CalibrationConfig {
    fn default() -> Self {
        CalibrationConfig { n_bins: 10, threshold: 0.5 }
    }
}

/// One row of the reliability table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReliabilityBin {
    /// Lower edge (exclusive, except for the first bin).
    pub lower: f64,
    /// Upper edge (inclusive).
    pub upper: f64,
    /// Number of samples in the bin.
    pub count: usize,
    /// Sum of their weights (equals `count` when unweighted).
    pub weight: f64,
    /// Weighted mean score in the bin; `None` for an empty (or zero-weight) bin.
    pub mean_predicted: Option<f64>,
    /// Weighted fraction of good labels in the bin; `None` for an empty (or zero-weight) bin.
    pub observed_frequency: Option<f64>,
}

/// Reliability table and expected calibration error for one binning strategy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReliabilityTable {
    /// How the bins were cut.
    pub strategy: BinStrategy,
    /// ECE = sum over non-empty bins of weight_b / total_weight * |observed_b - predicted_b|.
    pub ece: f64,
    /// All `n_bins` bins in ascending order, empty ones included.
    pub bins: Vec<ReliabilityBin>,
}

/// Confusion-matrix metrics at a threshold (predicted good = score > threshold), weighted
/// when weights are given, matching scikit-learn's `accuracy_score`, `precision_score`,
/// `recall_score`, `f1_score` and `cohen_kappa_score`; a zero division is undefined.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThresholdMetrics {
    /// The threshold (predicted good = score > threshold).
    pub threshold: f64,
    /// Weight of good labels predicted good.
    pub true_positive: f64,
    /// Weight of bad labels predicted good.
    pub false_positive: f64,
    /// Weight of bad labels predicted bad.
    pub true_negative: f64,
    /// Weight of good labels predicted bad.
    pub false_negative: f64,
    /// (tp + tn) / total.
    pub accuracy: Outcome<f64>,
    /// tp / (tp + fp); undefined when nothing is predicted good.
    pub precision: Outcome<f64>,
    /// tp / (tp + fn); undefined when no label is good.
    pub recall: Outcome<f64>,
    /// 2 tp / (2 tp + fp + fn); undefined when tp + fp + fn = 0.
    pub f1: Outcome<f64>,
    /// Cohen's kappa between labels and predictions; undefined when chance disagreement is 0
    /// (labels and predictions all one and the same class).
    pub cohen_kappa: Outcome<f64>,
}

/// Everything [`calibration`] measures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CalibrationReport {
    /// Number of samples.
    pub n: usize,
    /// Sum of weights (equals `n` when unweighted).
    pub total_weight: f64,
    /// Equal-width bins.
    pub uniform: ReliabilityTable,
    /// Equal-mass bins.
    pub quantile: ReliabilityTable,
    /// Weighted mean of (score - label)^2 (sklearn `brier_score_loss`), in [0, 1].
    pub brier: f64,
    /// ROC AUC with ties counted half, as sklearn `roc_auc_score`; undefined with one class.
    pub roc_auc: Outcome<f64>,
    /// Metrics at `threshold`.
    pub at_threshold: ThresholdMetrics,
}

/// Collects (score, label, weight) samples one at a time, then computes the
/// [`CalibrationReport`]. Inputs are validated in [`CalibrationAccumulator::compute`].
#[derive(Debug, Clone, Default)]
pub struct CalibrationAccumulator {
    scores: Vec<f64>,
    labels: Vec<bool>,
    weights: Vec<f64>,
}

impl CalibrationAccumulator {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one sample with weight 1: `score` in [0, 1] is P(good), `good` the human label.
    pub fn update(&mut self, score: f64, good: bool) {
        self.update_weighted(score, good, 1.0);
    }

    /// Adds one sample with a non-negative finite `weight`.
    pub fn update_weighted(&mut self, score: f64, good: bool, weight: f64) {
        self.scores.push(score);
        self.labels.push(good);
        self.weights.push(weight);
    }

    /// Number of samples added.
    pub fn len(&self) -> usize {
        self.scores.len()
    }

    /// True when no sample was added.
    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    /// The report over every sample added; see [`calibration`].
    pub fn compute(&self, cfg: &CalibrationConfig) -> Result<CalibrationReport, Undefined> {
        calibration(&self.scores, &self.labels, Some(&self.weights), cfg)
    }
}

/// Calibration of `scores` (P(good), each in [0, 1]) against `labels` (true = good), with
/// optional non-negative per-sample `weights` (`None` = all 1). Undefined when empty, on a
/// length mismatch, a score outside [0, 1], a negative or non-finite weight, a zero total
/// weight, or `n_bins = 0`.
pub fn calibration(
    scores: &[f64],
    labels: &[bool],
    weights: Option<&[f64]>,
    cfg: &CalibrationConfig,
) -> Result<CalibrationReport, Undefined> {
    let n = scores.len();
    if n == 0 {
        return Err(Undefined::new("no samples"));
    }
    if labels.len() != n || weights.is_some_and(|w| w.len() != n) {
        return Err(Undefined::new("scores, labels and weights differ in length"));
    }
    if cfg.n_bins == 0 {
        return Err(Undefined::new("n_bins = 0"));
    }
    if let Some(i) = scores.iter().position(|s| !(0.0..=1.0).contains(s)) {
        return Err(Undefined::new(format!("score[{i}] = {} is not in [0, 1]", scores[i])));
    }
    let ones;
    let w = match weights {
        Some(w) => w,
        None => {
            ones = vec![1.0; n];
            &ones
        }
    };
    if let Some(i) = w.iter().position(|v| !(v.is_finite() && *v >= 0.0)) {
        return Err(Undefined::new(format!("weight[{i}] = {} is not finite and >= 0", w[i])));
    }
    let total_weight: f64 = w.iter().sum();
    if total_weight <= 0.0 {
        return Err(Undefined::new("total weight is 0"));
    }
    let y: Vec<f64> = labels.iter().map(|&g| if g { 1.0 } else { 0.0 }).collect();
    let brier = scores.iter().zip(&y).zip(w).map(|((s, l), wi)| wi * (s - l) * (s - l)).sum::<f64>() / total_weight;
    Ok(CalibrationReport {
        n,
        total_weight,
        uniform: reliability(scores, &y, w, &uniform_edges(cfg.n_bins), BinStrategy::Uniform),
        quantile: reliability(scores, &y, w, &quantile_edges(scores, cfg.n_bins), BinStrategy::Quantile),
        brier,
        roc_auc: roc_auc(scores, labels, Some(w)).into(),
        at_threshold: threshold_metrics(scores, labels, w, cfg.threshold),
    })
}

/// `np.linspace(0, 1, n_bins + 1)`: edge i = i * (1 / n_bins), the last exactly 1.
fn uniform_edges(n_bins: usize) -> Vec<f64> {
    let step = 1.0 / n_bins as f64;
    let mut e: Vec<f64> = (0..=n_bins).map(|i| i as f64 * step).collect();
    e[n_bins] = 1.0;
    e
}

/// `np.percentile(scores, np.linspace(0, 1, n_bins + 1) * 100)`.
fn quantile_edges(scores: &[f64], n_bins: usize) -> Vec<f64> {
    let mut sorted = scores.to_vec();
    sorted.sort_unstable_by(f64::total_cmp);
    uniform_edges(n_bins).into_iter().map(|q| quantile_sorted(&sorted, q * 100.0 / 100.0)).collect()
}

fn reliability(scores: &[f64], y: &[f64], w: &[f64], edges: &[f64], strategy: BinStrategy) -> ReliabilityTable {
    let n_bins = edges.len() - 1;
    let interior = &edges[1..n_bins];
    let mut count = vec![0usize; n_bins];
    let mut weight = vec![0.0; n_bins];
    let mut sum_pred = vec![0.0; n_bins];
    let mut sum_true = vec![0.0; n_bins];
    for ((&s, &l), &wi) in scores.iter().zip(y).zip(w) {
        // np.searchsorted(side="left"): the number of interior edges strictly below s
        let b = interior.partition_point(|&e| e < s);
        count[b] += 1;
        weight[b] += wi;
        sum_pred[b] += wi * s;
        sum_true[b] += wi * l;
    }
    let total: f64 = weight.iter().sum();
    let mut ece = 0.0;
    let bins = (0..n_bins)
        .map(|b| {
            let (mean_predicted, observed_frequency) = if weight[b] > 0.0 {
                let (p, o) = (sum_pred[b] / weight[b], sum_true[b] / weight[b]);
                ece += weight[b] / total * (o - p).abs();
                (Some(p), Some(o))
            } else {
                (None, None)
            };
            ReliabilityBin {
                lower: edges[b],
                upper: edges[b + 1],
                count: count[b],
                weight: weight[b],
                mean_predicted,
                observed_frequency,
            }
        })
        .collect();
    ReliabilityTable { strategy, ece, bins }
}

/// ROC AUC of `scores` for `labels` (true = positive) with optional weights, as
/// `sklearn.metrics.roc_auc_score`: the probability that a random positive outscores a random
/// negative, ties counting 1/2 (the trapezoidal area). Undefined when only one class has
/// positive weight, or for a non-finite score.
pub fn roc_auc(scores: &[f64], labels: &[bool], weights: Option<&[f64]>) -> Result<f64, Undefined> {
    if labels.len() != scores.len() || weights.is_some_and(|w| w.len() != scores.len()) {
        return Err(Undefined::new("scores, labels and weights differ in length"));
    }
    super::check_finite(scores, "score")?;
    let wt = |i: usize| weights.map_or(1.0, |w| w[i]);
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_unstable_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let (mut neg_below, mut area) = (0.0, 0.0);
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        let (mut pos, mut neg) = (0.0, 0.0);
        while j < order.len() && scores[order[j]] == scores[order[i]] {
            let k = order[j];
            if labels[k] {
                pos += wt(k)
            } else {
                neg += wt(k)
            }
            j += 1;
        }
        area += pos * (neg_below + neg / 2.0);
        neg_below += neg;
        i = j;
    }
    let pos_total: f64 = (0..scores.len()).filter(|&k| labels[k]).map(wt).sum();
    let neg_total = neg_below;
    if pos_total <= 0.0 || neg_total <= 0.0 {
        return Err(Undefined::new("only one class is present"));
    }
    Ok(area / (pos_total * neg_total))
}

fn ratio(num: f64, den: f64, what: &str) -> Outcome<f64> {
    if den > 0.0 { Outcome::Defined(num / den) } else { Outcome::Undefined(Undefined::new(format!("{what} is 0"))) }
}

fn threshold_metrics(scores: &[f64], labels: &[bool], w: &[f64], threshold: f64) -> ThresholdMetrics {
    let (mut tp, mut fp, mut tn, mut fn_) = (0.0, 0.0, 0.0, 0.0);
    for ((&s, &good), &wi) in scores.iter().zip(labels).zip(w) {
        match (good, s > threshold) {
            (true, true) => tp += wi,
            (false, true) => fp += wi,
            (false, false) => tn += wi,
            (true, false) => fn_ += wi,
        }
    }
    let total = tp + fp + tn + fn_;
    // sklearn cohen_kappa_score on the 2x2 confusion matrix (rows: label, columns: prediction)
    let (pred_bad, pred_good) = (tn + fn_, tp + fp);
    let (true_bad, true_good) = (tn + fp, tp + fn_);
    let expected_disagreement = pred_bad * true_good / total + pred_good * true_bad / total;
    let cohen_kappa: Outcome<f64> =
        ratio(fp + fn_, expected_disagreement, "expected disagreement").into_result().map(|k| 1.0 - k).into();
    ThresholdMetrics {
        threshold,
        true_positive: tp,
        false_positive: fp,
        true_negative: tn,
        false_negative: fn_,
        accuracy: ratio(tp + tn, total, "total weight"),
        precision: ratio(tp, tp + fp, "tp + fp"),
        recall: ratio(tp, tp + fn_, "tp + fn"),
        f1: ratio(2.0 * tp, 2.0 * tp + fp + fn_, "2 tp + fp + fn"),
        cohen_kappa,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_class_makes_auc_and_kappa_undefined() {
        let r = calibration(&[0.2, 0.7, 0.9], &[true; 3], None, &CalibrationConfig::default()).unwrap();
        assert!(!r.roc_auc.is_defined());
        // labels all good, predictions mixed: precision defined, kappa defined (= 0)
        assert_eq!(r.at_threshold.precision, Outcome::Defined(1.0));
        assert_eq!(r.at_threshold.cohen_kappa, Outcome::Defined(0.0));
        let all_good = calibration(&[0.8, 0.9], &[true; 2], None, &CalibrationConfig::default()).unwrap();
        assert!(!all_good.at_threshold.cohen_kappa.is_defined());
        let none_pred = calibration(&[0.1, 0.2], &[true, false], None, &CalibrationConfig::default()).unwrap();
        assert!(!none_pred.at_threshold.precision.is_defined());
        assert_eq!(none_pred.at_threshold.f1, Outcome::Defined(0.0));
    }

    #[test]
    fn threshold_is_strict() {
        let r = calibration(&[0.5, 0.6], &[false, true], None, &CalibrationConfig::default()).unwrap();
        assert_eq!(r.at_threshold.true_negative, 1.0);
        assert_eq!(r.at_threshold.accuracy, Outcome::Defined(1.0));
    }

    #[test]
    fn integer_weights_equal_repetition() {
        let s = [0.1, 0.35, 0.35, 0.8, 0.95];
        let l = [false, true, false, true, true];
        let w = [2.0, 1.0, 3.0, 1.0, 2.0];
        let mut rs = Vec::new();
        let mut rl = Vec::new();
        for i in 0..s.len() {
            for _ in 0..w[i] as usize {
                rs.push(s[i]);
                rl.push(l[i]);
            }
        }
        let cfg = CalibrationConfig { n_bins: 4, threshold: 0.3 };
        let a = calibration(&s, &l, Some(&w), &cfg).unwrap();
        let b = calibration(&rs, &rl, None, &cfg).unwrap();
        assert!((a.brier - b.brier).abs() < 1e-15);
        assert_eq!(a.roc_auc, b.roc_auc);
        assert!((a.uniform.ece - b.uniform.ece).abs() < 1e-15);
        assert_eq!(a.at_threshold.cohen_kappa, b.at_threshold.cohen_kappa);
    }

    #[test]
    fn bad_inputs_are_undefined() {
        let cfg = CalibrationConfig::default();
        assert!(calibration(&[], &[], None, &cfg).is_err());
        assert!(calibration(&[1.2], &[true], None, &cfg).is_err());
        assert!(calibration(&[0.2], &[true], Some(&[-1.0]), &cfg).is_err());
        assert!(calibration(&[f64::NAN], &[true], None, &cfg).is_err());
        let mut acc = CalibrationAccumulator::new();
        acc.update(0.3, false);
        acc.update_weighted(0.9, true, 2.0);
        assert_eq!(acc.compute(&cfg).unwrap().total_weight, 3.0);
    }
}
