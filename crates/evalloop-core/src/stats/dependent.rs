//! Comparing two evaluators against the same human scores: Williams' test for two dependent
//! correlations sharing a variable, a paired bootstrap of a Spearman difference, and the paired
//! tests over groups of per-group differences (a one-sided t-test and a bootstrap of the mean).

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

/// A one-sided paired t-test of H0: mean(d) <= 0 against mean(d) > 0, over paired differences
/// `d` (one per independent unit: per group, the new evaluator's within-group Spearman minus the
/// base's), as scipy's `ttest_1samp(d, 0, alternative="greater")`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairedT {
    /// Number of differences.
    pub n: usize,
    /// Their mean.
    pub mean: f64,
    /// t = mean / (sd / sqrt(n)), sd with n - 1.
    pub statistic: f64,
    /// One-sided p-value P(T >= t), T with n - 1 degrees of freedom.
    pub p_value: f64,
}

/// See [`PairedT`]. Undefined for fewer than 2 differences, a non-finite one, or all equal.
pub fn paired_t_greater(d: &[f64]) -> Result<PairedT, Undefined> {
    let n = d.len();
    if n < 2 {
        return Err(Undefined::new(format!("a paired t-test needs 2 or more differences, got {n}")));
    }
    if d.iter().any(|x| !x.is_finite()) {
        return Err(Undefined::new("a difference is not finite".to_string()));
    }
    let mean = d.iter().sum::<f64>() / n as f64;
    let var = d.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1) as f64;
    if var <= 0.0 {
        return Err(Undefined::new("every difference is the same".to_string()));
    }
    let statistic = mean / (var / n as f64).sqrt();
    let two = super::corr::student_t_two_sided(statistic, (n - 1) as f64)?;
    let p_value = if statistic > 0.0 { two / 2.0 } else { 1.0 - two / 2.0 };
    Ok(PairedT { n, mean, statistic, p_value })
}

/// Percentile bootstrap of the mean of paired differences `d` (units resampled with
/// replacement; ChaCha20 seeded with `cfg.seed`). Undefined for fewer than 2 differences.
pub fn bootstrap_mean_diff(d: &[f64], cfg: &BootstrapConfig) -> Result<BootstrapCi, Undefined> {
    let n = d.len();
    if n < 2 {
        return Err(Undefined::new(format!("a bootstrap of the mean needs 2 or more differences, got {n}")));
    }
    let mean = d.iter().sum::<f64>() / n as f64;
    percentile_bootstrap(mean, cfg, |rng| Some((0..n).map(|_| d[draw_index(rng, n)]).sum::<f64>() / n as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// scipy.stats.ttest_1samp([0.3, -0.1, 0.5, 0.2, 0.0, 0.4, -0.2, 0.6], 0,
    /// alternative="greater") (scipy 1.17.1): statistic 2.0724663502271343, p 0.03846805564402953.
    #[test]
    fn paired_t_matches_scipy() {
        let d = [0.3, -0.1, 0.5, 0.2, 0.0, 0.4, -0.2, 0.6];
        let t = paired_t_greater(&d).unwrap();
        assert!((t.statistic - 2.0724663502271343).abs() < 1e-12, "{t:?}");
        assert!((t.p_value - 0.03846805564402953).abs() < 1e-9, "{t:?}");
        let neg: Vec<f64> = d.iter().map(|x| -x).collect();
        assert!((paired_t_greater(&neg).unwrap().p_value - (1.0 - 0.03846805564402953)).abs() < 1e-9);
        assert!(paired_t_greater(&[0.1]).is_err() && paired_t_greater(&[0.2, 0.2]).is_err());
        let cfg = BootstrapConfig { n_resamples: 500, seed: 3, level: 0.9 };
        let ci = bootstrap_mean_diff(&d, &cfg).unwrap();
        assert_eq!(ci, bootstrap_mean_diff(&d, &cfg).unwrap());
        assert!(ci.lower < 0.2125 && 0.2125 < ci.upper && (ci.estimate - 0.2125).abs() < 1e-12);
    }

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
