//! Correlation, calibration and hypothesis-test statistics, checked against scipy.
//!
//! Everything here is a pure function over slices (or a small accumulator) returning a plain
//! struct that derives `Debug, Clone, Serialize`. A statistic that is not defined for the input
//! (too few rows, a constant column, a non-finite value, a zero division) comes back as an
//! explicit [`Undefined`] with a reason, never as NaN. Functions return
//! `Result<T, Undefined>`; report structs hold the serializable [`Outcome<T>`], which writes a
//! defined value as the value itself and an undefined one as
//! `{"undefined": true, "reason": "..."}`.
//!
//! Reference values: `scripts/reference/reference_stats.py` (numpy, scipy, scikit-learn) writes the
//! fixtures in `tests/fixtures/stats/` that `tests/integration/stats_reference.rs` compares against.
//!
//! Submodules: [`rank`] (average ranks), [`corr`] (Pearson, Spearman, Kendall, CIs),
//! [`agreement`] (inter-rater agreement: Krippendorff's alpha, Cohen's kappa),
//! [`bootstrap`] (seeded percentile bootstrap), [`compare`] (two-sample tests for `impact`),
//! [`calibration`] (ECE, reliability table, Brier, ROC AUC, threshold metrics),
//! [`dependent`] (Williams' test, paired bootstrap of a Spearman difference), [`group`]
//! (group-level correlation), [`ppi`] (prediction-powered estimates of a mean) and [`fdr`]
//! (Benjamini-Hochberg).

#![warn(missing_docs)]

pub mod agreement;
pub mod bootstrap;
pub mod calibration;
pub mod compare;
pub mod corr;
pub mod dependent;
pub mod fdr;
pub mod group;
pub mod ppi;
pub mod preference;
pub mod rank;

use serde::Serialize;
use serde::ser::{SerializeStruct, Serializer};

pub use bootstrap::{BootstrapCi, BootstrapConfig};
pub use calibration::{
    BinStrategy, CalibrationAccumulator, CalibrationConfig, CalibrationReport, ReliabilityBin, ReliabilityTable,
    ThresholdMetrics,
};
pub use compare::{CohensD, ImpactComparison, MannWhitney, WelchT};
pub use corr::{AgreementConfig, AgreementReport, ConfidenceInterval, Corr, CorrKind, CorrWithCi, PMethod};
pub use dependent::{SpearmanDiff, WilliamsTest};
pub use group::GroupCorrelation;

/// Why a statistic is not defined for the given input (n too small, a constant column,
/// a non-finite value, a zero division). Serializes as `{"undefined": true, "reason": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("undefined: {reason}")]
pub struct Undefined {
    /// Human-readable reason, e.g. "x is constant" or "n = 2 < 3".
    pub reason: String,
}

impl Undefined {
    /// An undefined result with the given reason.
    pub fn new(reason: impl Into<String>) -> Self {
        Undefined { reason: reason.into() }
    }
}

impl Serialize for Undefined {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Undefined", 2)?;
        s.serialize_field("undefined", &true)?;
        s.serialize_field("reason", &self.reason)?;
        s.end()
    }
}

/// A statistic that is either defined (serialized as the value itself) or [`Undefined`]
/// (serialized as `{"undefined": true, "reason": "..."}`). Built from a `Result<T, Undefined>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Outcome<T> {
    /// The statistic is defined.
    Defined(T),
    /// The statistic is not defined; the reason says why.
    Undefined(Undefined),
}

impl<T> Outcome<T> {
    /// The defined value, if any.
    pub fn ok(self) -> Option<T> {
        match self {
            Outcome::Defined(v) => Some(v),
            Outcome::Undefined(_) => None,
        }
    }

    /// A reference to the defined value, if any.
    pub fn as_ref(&self) -> Option<&T> {
        match self {
            Outcome::Defined(v) => Some(v),
            Outcome::Undefined(_) => None,
        }
    }

    /// True when the statistic is defined.
    pub fn is_defined(&self) -> bool {
        matches!(self, Outcome::Defined(_))
    }

    /// Back to a `Result`, for `?` chaining.
    pub fn into_result(self) -> Result<T, Undefined> {
        match self {
            Outcome::Defined(v) => Ok(v),
            Outcome::Undefined(u) => Err(u),
        }
    }
}

impl<T> From<Result<T, Undefined>> for Outcome<T> {
    fn from(r: Result<T, Undefined>) -> Self {
        match r {
            Ok(v) => Outcome::Defined(v),
            Err(u) => Outcome::Undefined(u),
        }
    }
}

/// Checks that `x` and `y` are paired (same length), have at least `min_n` rows and are all
/// finite.
pub(crate) fn check_pairs(x: &[f64], y: &[f64], min_n: usize) -> Result<(), Undefined> {
    if x.len() != y.len() {
        return Err(Undefined::new(format!("x and y differ in length ({} vs {})", x.len(), y.len())));
    }
    if x.len() < min_n {
        return Err(Undefined::new(format!("n = {} < {min_n}", x.len())));
    }
    check_finite(x, "x")?;
    check_finite(y, "y")?;
    Ok(())
}

/// Checks that every value of `v` is finite; `name` names the column in the reason.
pub(crate) fn check_finite(v: &[f64], name: &str) -> Result<(), Undefined> {
    match v.iter().position(|a| !a.is_finite()) {
        Some(i) => Err(Undefined::new(format!("{name}[{i}] = {} is not finite", v[i]))),
        None => Ok(()),
    }
}

/// True when every value equals the first (an empty slice counts as constant).
pub(crate) fn is_constant(v: &[f64]) -> bool {
    v.iter().all(|&a| a == v[0])
}

/// Rejects a confidence level outside (0, 1).
pub(crate) fn check_level(level: f64) -> Result<(), Undefined> {
    if level > 0.0 && level < 1.0 {
        Ok(())
    } else {
        Err(Undefined::new(format!("confidence level {level} is not in (0, 1)")))
    }
}

/// Arithmetic mean; 0 for an empty slice (callers check n first).
pub(crate) fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.iter().sum::<f64>() / v.len() as f64
}

/// Sample variance with `ddof = 1` (numpy `var(ddof=1)`); callers ensure n >= 2.
pub(crate) fn var_ddof1(v: &[f64]) -> f64 {
    let m = mean(v);
    v.iter().map(|a| (a - m) * (a - m)).sum::<f64>() / (v.len() as f64 - 1.0)
}

/// Linear-interpolation quantile of sorted data, exactly as numpy's `percentile(a, 100 * q)`
/// with the default `method="linear"` (virtual index `(n - 1) * q`, numpy's `_lerp`).
/// `sorted` must be non-empty and ascending; `q` in [0, 1].
pub(crate) fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    let virtual_index = (n as f64 - 1.0) * q;
    if virtual_index >= n as f64 - 1.0 {
        return sorted[n - 1];
    }
    if virtual_index <= 0.0 {
        return sorted[0];
    }
    let prev = virtual_index.floor();
    let t = virtual_index - prev;
    let a = sorted[prev as usize];
    let b = sorted[prev as usize + 1];
    let diff = b - a;
    if t >= 0.5 { b - diff * (1.0 - t) } else { a + diff * t }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undefined_serializes_with_flag_and_reason() {
        let o: Outcome<f64> = Err(Undefined::new("x is constant")).into();
        let s = serde_json::to_string(&o).unwrap();
        assert_eq!(s, r#"{"undefined":true,"reason":"x is constant"}"#);
        let d: Outcome<f64> = Ok(0.5).into();
        assert_eq!(serde_json::to_string(&d).unwrap(), "0.5");
    }

    #[test]
    fn quantile_matches_numpy_linear() {
        // np.percentile([1, 2, 4, 8], [0, 25, 50, 90, 100]) = [1, 1.75, 3, 6.8, 8]
        let s = [1.0, 2.0, 4.0, 8.0];
        let got: Vec<f64> = [0.0, 0.25, 0.5, 0.9, 1.0].iter().map(|&q| quantile_sorted(&s, q)).collect();
        let want = [1.0, 1.75, 3.0, 6.8, 8.0];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{g} vs {w}");
        }
    }

    #[test]
    fn check_pairs_rejects_bad_input() {
        assert!(check_pairs(&[1.0, 2.0], &[1.0], 1).is_err());
        assert!(check_pairs(&[1.0, 2.0], &[1.0, 2.0], 3).is_err());
        let e = check_pairs(&[1.0, f64::NAN, 3.0], &[1.0, 2.0, 3.0], 3).unwrap_err();
        assert!(e.reason.contains("x[1]"), "{}", e.reason);
    }
}
