//! Two-sample comparisons for the `impact` command: Welch's t, Mann-Whitney U, Cohen's d and
//! a bootstrap interval for the difference of means.
//!
//! Argument order is always (treatment `a`, baseline `b`): positive statistics mean `a` is
//! higher, as `scipy.stats.ttest_ind(a, b)` and `mannwhitneyu(a, b)`.

use rand_chacha::ChaCha20Rng;
use serde::Serialize;

use super::bootstrap::{BootstrapCi, BootstrapConfig, draw_index, percentile_bootstrap};
use super::corr::{PMethod, normal_sf, student_t_two_sided};
use super::rank::average_ranks;
use super::{Outcome, Undefined, check_finite, mean, var_ddof1};

/// Welch's unequal-variance t-test (two-sided).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WelchT {
    /// t = (mean(a) - mean(b)) / sqrt(var(a)/n_a + var(b)/n_b), variances with ddof = 1.
    pub statistic: f64,
    /// Two-sided p-value from Student's t with `df` degrees of freedom.
    pub p_value: f64,
    /// Welch-Satterthwaite degrees of freedom (not an integer in general).
    pub df: f64,
}

/// Welch's t-test of `a` against `b`, matching `scipy.stats.ttest_ind(a, b, equal_var=False)`.
/// Undefined when a sample has fewer than 2 values, a value is not finite, or both samples
/// have zero variance.
pub fn welch_t_test(a: &[f64], b: &[f64]) -> Result<WelchT, Undefined> {
    check_two_samples(a, b, 2)?;
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let vn1 = var_ddof1(a) / na;
    let vn2 = var_ddof1(b) / nb;
    let se2 = vn1 + vn2;
    if se2 <= 0.0 {
        return Err(Undefined::new("both samples have zero variance"));
    }
    let df = se2 * se2 / (vn1 * vn1 / (na - 1.0) + vn2 * vn2 / (nb - 1.0));
    let statistic = (mean(a) - mean(b)) / se2.sqrt();
    let p_value = student_t_two_sided(statistic, df)?;
    Ok(WelchT { statistic, p_value, df })
}

/// Mann-Whitney U test (two-sided).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MannWhitney {
    /// U of the first sample `a`: R_a - n_a (n_a + 1) / 2 with average ranks (scipy's U1).
    pub u: f64,
    /// Two-sided p-value.
    pub p_value: f64,
    /// `exact` or `normal` (tie-corrected, continuity-corrected normal approximation).
    pub p_method: PMethod,
}

/// Mann-Whitney U of `a` against `b`, matching `scipy.stats.mannwhitneyu(a, b)` defaults
/// (two-sided, `use_continuity=True`, `method="auto"`: exact when there are no ties and one
/// sample has at most 8 values, otherwise the normal approximation with tie correction and a
/// 0.5 continuity correction). When every value is tied the normal variance is 0 and, as
/// scipy, p = 1. Undefined for an empty sample or a non-finite value.
pub fn mann_whitney_u(a: &[f64], b: &[f64]) -> Result<MannWhitney, Undefined> {
    check_two_samples(a, b, 1)?;
    let (n1, n2) = (a.len(), b.len());
    let all: Vec<f64> = a.iter().chain(b).copied().collect();
    let (ranks, ties) = average_ranks(&all);
    let r1: f64 = ranks[..n1].iter().sum();
    let (n1f, n2f) = (n1 as f64, n2 as f64);
    let u1 = r1 - n1f * (n1f + 1.0) / 2.0;
    let u2 = n1f * n2f - u1;
    let u = u1.max(u2);
    let has_ties = ties.iter().any(|&t| t > 1);
    // scipy's _mwu_choose_method: asymptotic if both samples exceed 8 or there are ties
    let exact = (n1 <= 8 || n2 <= 8) && !has_ties;
    if exact {
        let p = mwu_exact_two_sided(n1, n2, u1.min(u2).round() as usize);
        return Ok(MannWhitney { u: u1, p_value: p, p_method: PMethod::Exact });
    }
    let n = n1f + n2f;
    let tie_term: f64 = ties.iter().map(|&t| (t as f64).powi(3) - t as f64).sum();
    let s = (n1f * n2f / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)))).sqrt();
    let p = if s > 0.0 {
        let z = (u - n1f * n2f / 2.0 - 0.5) / s;
        // scipy: p = 2 * ndtr(-z), clipped to 1 (z can be slightly negative when U = n1 n2 / 2)
        (2.0 * normal_sf(z)).clamp(0.0, 1.0)
    } else {
        1.0
    };
    Ok(MannWhitney { u: u1, p_value: p, p_method: PMethod::Normal })
}

/// Exact two-sided p-value 2 * P(U <= k) (clipped to 1) for sample sizes `n1`, `n2` without
/// ties: the counts of U are the coefficients of the Gaussian binomial [n1+n2 choose n1]_q,
/// built in exact 128-bit integers (f64 only if they would overflow).
fn mwu_exact_two_sided(n1: usize, n2: usize, k: usize) -> f64 {
    let (m, big) = (n1.min(n2), n1.max(n2));
    match gaussian_binomial_cdf_i128(m, big, k) {
        Some(p) => (2.0 * p).clamp(0.0, 1.0),
        None => (2.0 * gaussian_binomial_cdf_f64(m, big, k)).clamp(0.0, 1.0),
    }
}

/// P(U <= k) with exact integer counts; `None` on overflow.
fn gaussian_binomial_cdf_i128(m: usize, big: usize, k: usize) -> Option<f64> {
    let mut p = vec![0i128; k + 1];
    p[0] = 1;
    let mut total: i128 = 1;
    for i in 1..=m {
        let shift = big + i;
        for j in (shift..=k).rev() {
            p[j] = p[j].checked_sub(p[j - shift])?;
        }
        for j in i..=k {
            p[j] = p[j].checked_add(p[j - i])?;
        }
        total = total.checked_mul((big + i) as i128)? / i as i128;
    }
    let count = p.iter().try_fold(0i128, |acc, &v| acc.checked_add(v))?;
    Some(count as f64 / total as f64)
}

/// P(U <= k) with the same recurrence in f64 (only for sizes beyond 128-bit counts).
fn gaussian_binomial_cdf_f64(m: usize, big: usize, k: usize) -> f64 {
    let mut p = vec![0.0f64; k + 1];
    p[0] = 1.0;
    let mut total = 1.0f64;
    for i in 1..=m {
        let shift = big + i;
        for j in (shift..=k).rev() {
            p[j] -= p[j - shift];
        }
        for j in i..=k {
            p[j] += p[j - i];
        }
        total = total * (big + i) as f64 / i as f64;
    }
    p.iter().sum::<f64>() / total
}

/// Cohen's d with the pooled standard deviation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CohensD {
    /// d = (mean(a) - mean(b)) / pooled_sd.
    pub d: f64,
    /// sqrt(((n_a - 1) var(a) + (n_b - 1) var(b)) / (n_a + n_b - 2)), variances with ddof = 1.
    pub pooled_sd: f64,
}

/// Cohen's d of `a` against `b` with the pooled (ddof = 1) standard deviation, no small-sample
/// (Hedges) correction. Undefined for an empty sample, n_a + n_b < 3, a non-finite value or a
/// zero pooled standard deviation.
pub fn cohens_d(a: &[f64], b: &[f64]) -> Result<CohensD, Undefined> {
    check_two_samples(a, b, 1)?;
    if a.len() + b.len() < 3 {
        return Err(Undefined::new("n_a + n_b < 3"));
    }
    let ss = |v: &[f64]| {
        let m = mean(v);
        v.iter().map(|x| (x - m) * (x - m)).sum::<f64>()
    };
    let pooled_sd = ((ss(a) + ss(b)) / (a.len() + b.len() - 2) as f64).sqrt();
    if pooled_sd <= 0.0 {
        return Err(Undefined::new("pooled standard deviation is 0"));
    }
    Ok(CohensD { d: (mean(a) - mean(b)) / pooled_sd, pooled_sd })
}

/// Treatment-versus-baseline comparison for the `impact` command.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImpactComparison {
    /// Size of the treatment sample `a`.
    pub n_treatment: usize,
    /// Size of the baseline sample `b`.
    pub n_baseline: usize,
    /// Mean of `a` (0 when empty; see `n_treatment`).
    pub mean_treatment: f64,
    /// Mean of `b` (0 when empty; see `n_baseline`).
    pub mean_baseline: f64,
    /// mean(a) - mean(b).
    pub diff_means: f64,
    /// Percentile-bootstrap interval of mean(a) - mean(b), resampling each group separately.
    pub diff_ci: Outcome<BootstrapCi>,
    /// 100 * (mean(a) - mean(b)) / |mean(b)|; `None` when the baseline mean is 0 or a sample
    /// is empty.
    pub improvement_pct: Option<f64>,
    /// Welch's t-test.
    pub welch: Outcome<WelchT>,
    /// Mann-Whitney U test.
    pub mann_whitney: Outcome<MannWhitney>,
    /// Cohen's d (pooled SD).
    pub cohens_d: Outcome<CohensD>,
}

/// Compares treatment `a` with baseline `b`: means, their difference with a seeded bootstrap
/// interval (`cfg`), improvement in percent, Welch's t, Mann-Whitney U and Cohen's d.
pub fn compare_samples(a: &[f64], b: &[f64], cfg: &BootstrapConfig) -> ImpactComparison {
    let (ma, mb) = (mean(a), mean(b));
    let valid = check_two_samples(a, b, 1);
    let diff_ci = valid.clone().and_then(|()| bootstrap_diff_of_means(a, b, cfg));
    let improvement_pct = (valid.is_ok() && mb != 0.0).then(|| 100.0 * (ma - mb) / mb.abs());
    ImpactComparison {
        n_treatment: a.len(),
        n_baseline: b.len(),
        mean_treatment: ma,
        mean_baseline: mb,
        diff_means: ma - mb,
        diff_ci: diff_ci.into(),
        improvement_pct,
        welch: welch_t_test(a, b).into(),
        mann_whitney: mann_whitney_u(a, b).into(),
        cohens_d: cohens_d(a, b).into(),
    }
}

/// Seeded percentile-bootstrap interval for mean(a) - mean(b), resampling `a` and `b`
/// independently with replacement. Undefined for an empty sample or a non-finite value.
pub fn bootstrap_diff_of_means(a: &[f64], b: &[f64], cfg: &BootstrapConfig) -> Result<BootstrapCi, Undefined> {
    check_two_samples(a, b, 1)?;
    let resampled_mean = |rng: &mut ChaCha20Rng, v: &[f64]| {
        (0..v.len()).map(|_| v[draw_index(rng, v.len())]).sum::<f64>() / v.len() as f64
    };
    percentile_bootstrap(mean(a) - mean(b), cfg, |rng| {
        let ma = resampled_mean(rng, a);
        Some(ma - resampled_mean(rng, b))
    })
}

fn check_two_samples(a: &[f64], b: &[f64], min_n: usize) -> Result<(), Undefined> {
    for (v, name) in [(a, "a"), (b, "b")] {
        if v.len() < min_n {
            return Err(Undefined::new(format!("sample {name} has {} < {min_n} values", v.len())));
        }
        check_finite(v, name)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_mwu_counts_match_enumeration() {
        // all C(7, 3) = 35 placements of a 3-sample among 7 ranks, U = sum of a-ranks - 6
        let mut counts = [0u32; 13];
        for i in 1..=7 {
            for j in i + 1..=7 {
                for k in j + 1..=7 {
                    counts[i + j + k - 6] += 1;
                }
            }
        }
        for u in 0..=6 {
            let want = counts[..=u].iter().sum::<u32>() as f64 / 35.0;
            let got = gaussian_binomial_cdf_i128(3, 4, u).unwrap();
            assert!((got - want).abs() < 1e-15, "u={u}: {got} vs {want}");
            assert!((gaussian_binomial_cdf_f64(3, 4, u) - want).abs() < 1e-12);
        }
    }

    #[test]
    fn zero_baseline_gives_no_improvement_pct() {
        let c = compare_samples(&[1.0, 2.0, 3.0], &[-1.0, 0.0, 1.0], &BootstrapConfig::default());
        assert_eq!(c.improvement_pct, None);
        assert_eq!(c.diff_means, 2.0);
        let ci = c.diff_ci.ok().unwrap();
        assert!(ci.lower <= 2.0 && 2.0 <= ci.upper);
    }

    #[test]
    fn degenerate_samples_are_undefined() {
        assert!(welch_t_test(&[1.0], &[1.0, 2.0]).is_err());
        assert!(welch_t_test(&[1.0, 1.0], &[2.0, 2.0]).is_err());
        assert!(cohens_d(&[1.0, 1.0], &[1.0, 1.0]).is_err());
        assert!(mann_whitney_u(&[], &[1.0]).is_err());
        let all_tied = mann_whitney_u(&[1.0; 10], &[1.0; 10]).unwrap();
        assert_eq!(all_tied.p_value, 1.0);
    }
}
