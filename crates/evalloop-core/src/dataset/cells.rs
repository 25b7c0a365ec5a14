//! Counts and weight statistics of a split or split-cohort cell, rounded as the card writes them.

use serde::{Deserialize, Serialize};

use super::request::LabelledRequest;

/// Counts and weight statistics of a set of examples.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CellStats {
    pub examples: usize,
    pub good: usize,
    pub neutral: usize,
    pub bad: usize,
    pub disagreements: usize,
    pub label_mean: f64,
    pub weighted_label_mean: f64,
    pub weight_sum: f64,
    pub weight_min: f64,
    pub weight_max: f64,
    /// Kish's `(sum w)^2 / sum w^2`.
    pub effective_size: f64,
}

impl CellStats {
    /// Accumulates the statistics of `examples`.
    pub fn of<'a>(examples: impl IntoIterator<Item = &'a LabelledRequest>) -> CellStats {
        let mut s = CellStats { weight_min: f64::INFINITY, weight_max: f64::NEG_INFINITY, ..Default::default() };
        let (mut lsum, mut wl, mut w2) = (0.0, 0.0, 0.0);
        for e in examples {
            s.examples += 1;
            match e.class {
                "good" => s.good += 1,
                "bad" => s.bad += 1,
                _ => s.neutral += 1,
            }
            s.disagreements += usize::from(e.is_disagreement);
            lsum += e.label;
            wl += e.weight * e.label;
            s.weight_sum += e.weight;
            w2 += e.weight * e.weight;
            s.weight_min = s.weight_min.min(e.weight);
            s.weight_max = s.weight_max.max(e.weight);
        }
        if s.examples == 0 {
            s.weight_min = 0.0;
            s.weight_max = 0.0;
            return s;
        }
        s.label_mean = r6(lsum / s.examples as f64);
        s.weighted_label_mean = if s.weight_sum > 0.0 { r6(wl / s.weight_sum) } else { 0.0 };
        s.effective_size = if w2 > 0.0 { r6(s.weight_sum * s.weight_sum / w2) } else { 0.0 };
        s.weight_sum = r6(s.weight_sum);
        s.weight_min = r6(s.weight_min);
        s.weight_max = r6(s.weight_max);
        s
    }
}

/// Rounds to 6 decimals, the precision of every float evalloop writes into a dataset.
pub fn r6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}
