//! Weighting: cohort rates, the per-example factors of each scheme (inverse rate, IPW, class
//! balance, disagreement boost), normalization and Kish's effective sample size.

use std::collections::BTreeMap;

use serde::Serialize;

use super::config::{DatasetConfig, RateBasis, Scheme};
use super::request::{LabelledRequest, NO_COHORT};
use crate::store::CohortStats;

/// A cohort's feedback counts, from [`Store::cohort_stats`](crate::store::Store::cohort_stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct CohortRate {
    /// Logged requests.
    pub requests: u64,
    /// Requests that count towards the rate under the chosen basis.
    pub counted: u64,
}

impl CohortRate {
    /// `counted / requests` (0 for an empty cohort).
    pub fn rate(&self) -> f64 {
        if self.requests == 0 { 0.0 } else { self.counted as f64 / self.requests as f64 }
    }
}

/// The feedback-loop article's `1 / (rate + 0.01)`.
pub fn inverse_rate_weight(rate: f64) -> f64 {
    1.0 / (rate + 0.01)
}

/// `min(1 / ((k + a r) / (n + a)), max_weight)`: inverse probability with additive smoothing
/// towards the overall rate `r`, clipped. A smoothed rate of 0 gives `max_weight`.
pub fn ipw_weight(counted: u64, requests: u64, overall_rate: f64, smoothing: f64, max_weight: f64) -> f64 {
    let denom = requests as f64 + smoothing;
    let r = if denom > 0.0 { (counted as f64 + smoothing * overall_rate) / denom } else { 0.0 };
    if r <= 0.0 { max_weight } else { (1.0 / r).min(max_weight) }
}

/// `N / (K * N_k)` per example, for the classes given.
pub fn class_balance_factors(classes: &[&str]) -> Vec<f64> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for c in classes {
        *counts.entry(c).or_insert(0) += 1;
    }
    let (n, k) = (classes.len() as f64, counts.len() as f64);
    classes.iter().map(|c| n / (k * counts[c] as f64)).collect()
}

/// Kish's effective sample size `(sum w)^2 / sum w^2`; 0 for no weights.
pub fn kish_ess(weights: impl IntoIterator<Item = f64>) -> f64 {
    let (s, s2) = weights.into_iter().fold((0.0, 0.0), |(s, s2), w| (s + w, s2 + w * w));
    if s2 > 0.0 { s * s / s2 } else { 0.0 }
}

/// The overall rate `sum counted / sum requests`.
pub fn overall_rate(rates: &BTreeMap<String, CohortRate>) -> f64 {
    let (k, n) = rates.values().fold((0u64, 0u64), |(k, n), r| (k + r.counted, n + r.requests));
    if n == 0 { 0.0 } else { k as f64 / n as f64 }
}

/// Multiplies each example's weight by every scheme's factor except `normalize` (see
/// [`normalize_on`]). Returns each cohort's factor per cohort-level scheme, for the card.
pub fn apply_weights(
    examples: &mut [LabelledRequest],
    rates: &BTreeMap<String, CohortRate>,
    cfg: &DatasetConfig,
) -> BTreeMap<String, BTreeMap<&'static str, f64>> {
    let overall = overall_rate(rates);
    let mut factors: BTreeMap<String, BTreeMap<&'static str, f64>> = BTreeMap::new();
    for (c, r) in rates {
        let f = factors.entry(c.clone()).or_default();
        f.insert("inverse_rate", inverse_rate_weight(r.rate()));
        f.insert("ipw", ipw_weight(r.counted, r.requests, overall, cfg.ipw_smoothing, cfg.max_weight));
    }
    let balance = {
        let classes: Vec<&str> = examples.iter().map(|e| e.class).collect();
        class_balance_factors(&classes)
    };
    for (e, cb) in examples.iter_mut().zip(balance) {
        for s in &cfg.weighting {
            let f = match s {
                // `queue` reads the store's queue items: applied by `build_in`.
                Scheme::None | Scheme::Normalize | Scheme::Queue => 1.0,
                Scheme::InverseRate => {
                    factors.get(&e.cohort).and_then(|f| f.get("inverse_rate")).copied().unwrap_or(1.0)
                }
                Scheme::Ipw => factors.get(&e.cohort).and_then(|f| f.get("ipw")).copied().unwrap_or(1.0),
                Scheme::ClassBalance => cb,
                Scheme::DisagreementBoost if e.is_disagreement => cfg.disagreement_boost,
                Scheme::DisagreementBoost => 1.0,
            };
            e.weight *= f;
        }
    }
    factors
}

/// Divides every weight by the mean weight of the examples where `on` is true; returns the divisor.
pub fn normalize_on(weights: &mut [f64], on: &[bool]) -> f64 {
    let (s, n) = weights.iter().zip(on).filter(|(_, o)| **o).fold((0.0, 0usize), |(s, n), (w, _)| (s + w, n + 1));
    let mean = if n > 0 && s > 0.0 { s / n as f64 } else { 1.0 };
    for w in weights.iter_mut() {
        *w /= mean;
    }
    mean
}

/// Per-cohort counts for the chosen rate basis.
pub fn cohort_rates(stats: &[CohortStats], basis: RateBasis) -> BTreeMap<String, CohortRate> {
    stats
        .iter()
        .map(|s| {
            let counted = match basis {
                RateBasis::Feedback => s.with_feedback,
                RateBasis::Explicit => s.with_explicit,
                RateBasis::Labelled => s.with_human_score,
            };
            (s.cohort.clone().unwrap_or_else(|| NO_COHORT.to_string()), CohortRate { requests: s.requests, counted })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::fixtures::{ex, population};

    #[test]
    fn inverse_rate_is_the_articles_formula() {
        assert!((inverse_rate_weight(0.0) - 100.0).abs() < 1e-9);
        assert!((inverse_rate_weight(0.24) - 4.0).abs() < 1e-12);
        assert!((inverse_rate_weight(0.99) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn ipw_smooths_towards_the_overall_rate_and_clips() {
        // (10 + 1 * 0.5) / (100 + 1) = 0.103960...; 1 / that = 9.619...
        assert!((ipw_weight(10, 100, 0.5, 1.0, 20.0) - 101.0 / 10.5).abs() < 1e-12);
        // No smoothing: exactly 1 / rate.
        assert!((ipw_weight(25, 100, 0.5, 0.0, 20.0) - 4.0).abs() < 1e-12);
        // Clipped.
        assert_eq!(ipw_weight(1, 1000, 0.01, 1.0, 20.0), 20.0);
        assert_eq!(ipw_weight(0, 0, 0.0, 0.0, 20.0), 20.0);
    }

    #[test]
    fn class_balance_equalises_class_totals() {
        let f = class_balance_factors(&["good", "good", "good", "bad"]);
        assert_eq!(f, vec![4.0 / 6.0, 4.0 / 6.0, 4.0 / 6.0, 2.0]);
        let good: f64 = f[..3].iter().sum();
        assert!((good - f[3]).abs() < 1e-12);
    }

    #[test]
    fn disagreement_boost_and_product_of_schemes() {
        let mut es = vec![ex(0, "a", "good", "g0"), ex(1, "a", "bad", "g1"), ex(2, "b", "bad", "g2")];
        let rates = BTreeMap::from([
            ("a".to_string(), CohortRate { requests: 10, counted: 5 }),
            ("b".to_string(), CohortRate { requests: 10, counted: 1 }),
        ]);
        let cfg = DatasetConfig {
            weighting: vec![Scheme::InverseRate, Scheme::ClassBalance, Scheme::DisagreementBoost],
            disagreement_boost: 3.0,
            ..Default::default()
        };
        apply_weights(&mut es, &rates, &cfg);
        let cb_good = 3.0 / 2.0;
        let cb_bad = 3.0 / 4.0;
        assert!((es[0].weight - inverse_rate_weight(0.5) * cb_good * 3.0).abs() < 1e-12);
        assert!((es[1].weight - inverse_rate_weight(0.5) * cb_bad).abs() < 1e-12);
        assert!((es[2].weight - inverse_rate_weight(0.1) * cb_bad).abs() < 1e-12);
    }

    #[test]
    fn none_gives_unit_weights_and_normalize_makes_train_mean_one() {
        let mut es = population();
        let rates = BTreeMap::new();
        apply_weights(&mut es, &rates, &DatasetConfig { weighting: vec![Scheme::None], ..Default::default() });
        assert!(es.iter().all(|e| e.weight == 1.0));
        let mut w = vec![1.0, 2.0, 3.0, 10.0];
        let d = normalize_on(&mut w, &[true, true, true, false]);
        assert_eq!(d, 2.0);
        assert_eq!(w, vec![0.5, 1.0, 1.5, 5.0]);
    }

    #[test]
    fn kish_effective_size() {
        assert_eq!(kish_ess([1.0, 1.0, 1.0, 1.0]), 4.0);
        // (1 + 3)^2 / (1 + 9) = 1.6
        assert!((kish_ess([1.0, 3.0]) - 1.6).abs() < 1e-12);
        assert_eq!(kish_ess(std::iter::empty()), 0.0);
    }
}
