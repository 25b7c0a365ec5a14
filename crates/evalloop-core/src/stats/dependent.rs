//! Comparing two evaluators against the same human scores: Williams' test for two dependent
//! correlations sharing a variable, and a paired bootstrap of a Spearman difference.

use serde::Serialize;

use super::bootstrap::{BootstrapCi, BootstrapConfig, draw_index, percentile_bootstrap};
use super::corr::{CorrKind, coefficient, student_t_two_sided};
use super::{Undefined, check_pairs};

/// Williams' t-test of H0: r_xz = r_yz, where x and y (two evaluators) are both correlated
/// with z (the human scores) and with each other (r_xy), over the same n items.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WilliamsTest {
    /// Correlation of the first evaluator with the shared variable.
    pub r_xz: f64,
    /// Correlation of the second evaluator with the shared variable.
    pub r_yz: f64,
    /// Correlation between the two evaluators.
    pub r_xy: f64,
    /// Number of items.
    pub n: usize,
    /// Williams' t (positive when r_xz > r_yz).
    pub statistic: f64,
    /// Degrees of freedom, n - 3.
    pub df: f64,
    /// Two-sided p-value from Student's t with `df` degrees of freedom.
    pub p_value: f64,
}

/// Williams' (1959) test in Steiger's (1980, eq. 7) form:
/// t = (r_xz - r_yz) sqrt((n - 1)(1 + r_xy)) / sqrt(2 (n - 1)/(n - 3) |R| + rbar^2 (1 - r_xy)^3)
/// with |R| = 1 - r_xy^2 - r_xz^2 - r_yz^2 + 2 r_xy r_xz r_yz and rbar = (r_xz + r_yz) / 2;
/// df = n - 3, two-sided. Undefined for n <= 3, a correlation outside [-1, 1] or a
/// non-positive denominator (e.g. x and y identical).
pub fn williams_test(r_xz: f64, r_yz: f64, r_xy: f64, n: usize) -> Result<WilliamsTest, Undefined> {
    if n <= 3 {
        return Err(Undefined::new(format!("n = {n} <= 3")));
    }
    for (v, name) in [(r_xz, "r_xz"), (r_yz, "r_yz"), (r_xy, "r_xy")] {
        if !(-1.0..=1.0).contains(&v) {
            return Err(Undefined::new(format!("{name} = {v} is not in [-1, 1]")));
        }
    }
    let nf = n as f64;
    let det = 1.0 - r_xy * r_xy - r_xz * r_xz - r_yz * r_yz + 2.0 * r_xy * r_xz * r_yz;
    let rbar = (r_xz + r_yz) / 2.0;
    let den = 2.0 * (nf - 1.0) / (nf - 3.0) * det + rbar * rbar * (1.0 - r_xy).powi(3);
    if den <= 0.0 || !den.is_finite() {
        return Err(Undefined::new(format!("denominator {den} is not positive")));
    }
    let statistic = (r_xz - r_yz) * ((nf - 1.0) * (1.0 + r_xy)).sqrt() / den.sqrt();
    let df = nf - 3.0;
    let p_value = student_t_two_sided(statistic, df)?;
    Ok(WilliamsTest { r_xz, r_yz, r_xy, n, statistic, df, p_value })
}

/// Spearman(a, human) - Spearman(b, human) with a paired bootstrap interval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpearmanDiff {
    /// Spearman's rho of evaluator a with the human scores.
    pub rho_a: f64,
    /// Spearman's rho of evaluator b with the human scores.
    pub rho_b: f64,
    /// rho_a - rho_b, with the bootstrap interval (`ci.estimate` is the same number).
    pub ci: BootstrapCi,
}

/// Paired percentile bootstrap of Spearman(a, human) - Spearman(b, human): each resample
/// draws request indices with replacement and uses the same rows for both evaluators
/// (ChaCha20 seeded with `cfg.seed`; resamples with a constant column are dropped).
/// Undefined for n < 3, a length mismatch, a non-finite value or a constant column.
pub fn paired_bootstrap_spearman_diff(
    a: &[f64],
    b: &[f64],
    human: &[f64],
    cfg: &BootstrapConfig,
) -> Result<SpearmanDiff, Undefined> {
    check_pairs(a, human, 3)?;
    check_pairs(b, human, 3)?;
    let rho_a = coefficient(CorrKind::Spearman, a, human)?;
    let rho_b = coefficient(CorrKind::Spearman, b, human)?;
    let n = human.len();
    let (mut ra, mut rb, mut rh) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    let ci = percentile_bootstrap(rho_a - rho_b, cfg, |rng| {
        for k in 0..n {
            let i = draw_index(rng, n);
            ra[k] = a[i];
            rb[k] = b[i];
            rh[k] = human[i];
        }
        let da = coefficient(CorrKind::Spearman, &ra, &rh).ok()?;
        let db = coefficient(CorrKind::Spearman, &rb, &rh).ok()?;
        Some(da - db)
    })?;
    Ok(SpearmanDiff { rho_a, rho_b, ci })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn williams_is_antisymmetric_and_zero_for_equal_correlations() {
        let t = williams_test(0.6, 0.4, 0.5, 50).unwrap();
        let u = williams_test(0.4, 0.6, 0.5, 50).unwrap();
        assert!((t.statistic + u.statistic).abs() < 1e-15);
        assert_eq!(t.p_value, u.p_value);
        assert_eq!(williams_test(0.5, 0.5, 0.3, 20).unwrap().p_value, 1.0);
        assert!(williams_test(0.5, 0.4, 0.3, 3).is_err());
        assert!(williams_test(1.5, 0.4, 0.3, 30).is_err());
    }

    #[test]
    fn paired_bootstrap_is_deterministic_and_brackets_the_difference() {
        let h: Vec<f64> = (0..40).map(|i| (i % 5) as f64).collect();
        let a: Vec<f64> = (0..40).map(|i| (i % 5) as f64 + ((i * 7) % 3) as f64).collect();
        let b: Vec<f64> = (0..40).map(|i| ((i * 13) % 7) as f64).collect();
        let cfg = BootstrapConfig { n_resamples: 300, seed: 42, level: 0.95 };
        let d1 = paired_bootstrap_spearman_diff(&a, &b, &h, &cfg).unwrap();
        let d2 = paired_bootstrap_spearman_diff(&a, &b, &h, &cfg).unwrap();
        assert_eq!(d1, d2);
        assert!(d1.ci.lower <= d1.ci.estimate && d1.ci.estimate <= d1.ci.upper);
        assert!((d1.ci.estimate - (d1.rho_a - d1.rho_b)).abs() < 1e-15);
    }
}
