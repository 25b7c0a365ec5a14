//! The `[dataset]` settings: labels, sources, weighting schemes, rate basis, and their validation.

use serde::{Deserialize, Serialize};

pub use crate::files::LabelKind;

/// Which labelled requests become examples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    All,
    Disagreements,
}

/// One weighting factor; see the module docs for each formula.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scheme {
    None,
    InverseRate,
    Ipw,
    ClassBalance,
    DisagreementBoost,
    Normalize,
    /// `min(1 / pi, max_weight)` for a request labelled through an annotation queue that drew it
    /// with probability `pi`; 1 for the others.
    Queue,
}

/// Which count makes a cohort's rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RateBasis {
    /// Requests with any feedback event (the article's).
    Feedback,
    /// Requests with explicit feedback.
    Explicit,
    /// Requests with a human score under the policy.
    Labelled,
}

/// `[dataset]`: every key optional; defaults on each field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatasetConfig {
    /// `binary` (default) or `graded`.
    pub label: LabelKind,
    /// `all` (default) or `disagreements`.
    pub source: SourceKind,
    /// Weight factors, multiplied; default `["ipw", "normalize"]`.
    pub weighting: Vec<Scheme>,
    /// Metadata field naming an example's group; default none (a hash of the prompt).
    pub group_key: Option<String>,
    /// Share of examples in train; default 0.8.
    pub train_fraction: f64,
    /// Share of examples in validation; default 0.1 (test gets the rest).
    pub validation_fraction: f64,
    /// Seed of the split and subsampling shuffles; default 7.
    pub seed: u64,
    /// Subsample to about this many examples; default none (keep all).
    pub max_examples: Option<usize>,
    /// Least examples a subsampled stratum keeps (when it has them); default 10.
    pub min_per_stratum: usize,
    /// The evaluator says good above this `overall`; default 0.7.
    pub eval_threshold: f64,
    /// `feedback` (default), `explicit` or `labelled`: what a cohort's rate counts.
    pub rate: RateBasis,
    /// `ipw` additive smoothing, in pseudo-requests at the overall rate; default 1.
    pub ipw_smoothing: f64,
    /// `ipw` clip; default 20.
    pub max_weight: f64,
    /// `disagreement_boost` factor k; default 2.
    pub disagreement_boost: f64,
    /// Warn when a split-cohort cell's Kish effective size is below this; default 30.
    pub min_effective_size: f64,
    /// Whose scores to use; default the store's only evaluator (an error when there are several).
    pub evaluator: Option<String>,
    /// Human dimensions whose ratings become per-row `labels` (see the module docs); default
    /// none (rows as without multi-task).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dimensions: Vec<String>,
    /// Write up to this many logged requests without a human score to `unlabelled.jsonl` (see
    /// the module docs); default 0 (none).
    #[serde(skip_serializing_if = "is_zero")]
    pub unlabelled: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Default for DatasetConfig {
    fn default() -> Self {
        DatasetConfig {
            label: LabelKind::Binary,
            source: SourceKind::All,
            weighting: vec![Scheme::Ipw, Scheme::Normalize],
            group_key: None,
            train_fraction: 0.8,
            validation_fraction: 0.1,
            seed: 7,
            max_examples: None,
            min_per_stratum: 10,
            eval_threshold: 0.7,
            rate: RateBasis::Feedback,
            ipw_smoothing: 1.0,
            max_weight: 20.0,
            disagreement_boost: 2.0,
            min_effective_size: 30.0,
            evaluator: None,
            dimensions: Vec::new(),
            unlabelled: 0,
        }
    }
}

impl DatasetConfig {
    /// Checks ranges; errors name the key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let (t, v) = (self.train_fraction, self.validation_fraction);
        if !(t > 0.0 && t <= 1.0) {
            return Err(format!("train_fraction = {t} is outside (0, 1]"));
        }
        if !(0.0..1.0).contains(&v) || t + v > 1.0 + 1e-9 {
            return Err(format!("validation_fraction = {v} must be in [0, 1) with train_fraction + it <= 1"));
        }
        if self.weighting.is_empty() {
            return Err("weighting is empty; use [\"none\"] for unit weights".into());
        }
        if !(self.ipw_smoothing >= 0.0 && self.ipw_smoothing.is_finite()) {
            return Err(format!("ipw_smoothing = {} must be >= 0", self.ipw_smoothing));
        }
        if self.max_weight.is_nan() || self.max_weight < 1.0 {
            return Err(format!("max_weight = {} must be >= 1", self.max_weight));
        }
        if !(self.disagreement_boost > 0.0 && self.disagreement_boost.is_finite()) {
            return Err(format!("disagreement_boost = {} must be positive", self.disagreement_boost));
        }
        if !(0.0..=1.0).contains(&self.eval_threshold) {
            return Err(format!("eval_threshold = {} is outside [0, 1]", self.eval_threshold));
        }
        if self.max_examples == Some(0) {
            return Err("max_examples = 0 keeps nothing".into());
        }
        if self.group_key.as_ref().is_some_and(|k| k.trim().is_empty()) {
            return Err("group_key is empty".into());
        }
        crate::record::check_dimension_list(&self.dimensions).map_err(|e| format!("dimensions{e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_validation() {
        let c: DatasetConfig =
            toml::from_str("label = \"graded\"\nweighting = [\"inverse_rate\", \"normalize\"]").unwrap();
        assert_eq!(c.label, LabelKind::Graded);
        assert_eq!(c.train_fraction, 0.8);
        assert!(c.validate().is_ok());
        let bad = DatasetConfig { train_fraction: 0.95, validation_fraction: 0.1, ..Default::default() };
        assert!(bad.validate().unwrap_err().contains("validation_fraction"));
        assert!(toml::from_str::<DatasetConfig>("weighting = [\"ipw2\"]").is_err());
    }

    /// configs/dataset.toml says it shows the defaults; keep it honest.
    #[test]
    fn example_config_shows_the_defaults() {
        let cf: crate::config::ConfigFile = toml::from_str(include_str!("../../../../configs/dataset.toml")).unwrap();
        let d: DatasetConfig = cf.dataset.unwrap().try_into().unwrap();
        assert_eq!(d, DatasetConfig { group_key: Some("group_id".into()), ..Default::default() });
        let s: crate::simulate::SimulateConfig = cf.simulate.unwrap().try_into().unwrap();
        assert_eq!(s, crate::simulate::SimulateConfig::default());
    }
}
