//! Pearson, Spearman and Kendall tau-b correlations with p-values and confidence intervals.
//!
//! Every figure follows scipy 1.17: `pearsonr` (p from the null distribution of r, computed
//! as Student's t with n - 2 df; Fisher-z interval from `.confidence_interval()`), `spearmanr` (average
//! ranks, p from Student's t with n - 2 df) and `kendalltau` (tau-b, `method="auto"`: the exact
//! permutation p-value when there are no ties and n <= 33 or at most one discordant /
//! concordant pair, else the normal approximation with the tie-corrected variance).

use serde::Serialize;
use statrs::distribution::{ContinuousCDF, Normal, StudentsT};

use super::bootstrap::{BootstrapCi, BootstrapConfig, percentile_bootstrap};
use super::rank::rankdata;
use super::{Outcome, Undefined, check_pairs, is_constant};

/// How a p-value was computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PMethod {
    /// Student's t distribution.
    StudentT,
    /// Exact null distribution (permutations).
    Exact,
    /// Normal approximation.
    Normal,
}

/// Which correlation coefficient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CorrKind {
    /// Pearson's product-moment r.
    Pearson,
    /// Spearman's rho (Pearson on average ranks).
    Spearman,
    /// Kendall's tau-b.
    Kendall,
}

/// A correlation coefficient with its two-sided p-value (null: no association).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Corr {
    /// Number of pairs.
    pub n: usize,
    /// The coefficient, in [-1, 1].
    pub estimate: f64,
    /// Two-sided p-value, in [0, 1].
    pub p_value: f64,
    /// How `p_value` was computed.
    pub p_method: PMethod,
}

/// How a confidence interval was computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CiMethod {
    /// Fisher z = atanh(r) with standard error 1 / sqrt(n - 3) (scipy's Pearson interval).
    FisherZ,
    /// Fisher z with Fieller, Hartley and Pearson's (1957) standard error sqrt(1.06 / (n - 3)),
    /// the usual choice for Spearman's rho.
    FisherZFieller,
}

/// A two-sided confidence interval for a correlation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfidenceInterval {
    /// Confidence level in (0, 1), e.g. 0.95.
    pub level: f64,
    /// Lower bound, in [-1, 1].
    pub lower: f64,
    /// Upper bound, in [-1, 1].
    pub upper: f64,
    /// How the bounds were computed.
    pub method: CiMethod,
}

/// Pearson's r between `x` and `y` with the two-sided p-value of `scipy.stats.pearsonr`
/// (Student's t with n - 2 df on t = r sqrt((n - 2) / (1 - r^2))). Undefined for n < 3, a constant column or a non-finite value.
pub fn pearson(x: &[f64], y: &[f64]) -> Result<Corr, Undefined> {
    check_pairs(x, y, 3)?;
    let r = pearson_r(x, y)?;
    let n = x.len();
    // scipy uses the Beta(n/2 - 1, n/2 - 1) null distribution of r; the equivalent Student's t
    // form is used here because statrs' incomplete-beta continued fraction (140 iterations)
    // does not converge for Beta(a, a) near x = 1/2 when n is large (1e6 rows, small r).
    let dof = n as f64 - 2.0;
    let t = r * (dof / ((1.0 - r) * (1.0 + r))).max(0.0).sqrt();
    let p = student_t_two_sided(t, dof)?;
    Ok(Corr { n, estimate: r, p_value: p, p_method: PMethod::StudentT })
}

/// Spearman's rho (average ranks for ties) with the two-sided p-value of
/// `scipy.stats.spearmanr`: t = rho * sqrt((n - 2) / ((1 + rho)(1 - rho))), Student's t with
/// n - 2 df. Undefined for n < 3, a constant column or a non-finite value.
pub fn spearman(x: &[f64], y: &[f64]) -> Result<Corr, Undefined> {
    check_pairs(x, y, 3)?;
    let rho = spearman_rho(x, y)?;
    let n = x.len();
    let dof = n as f64 - 2.0;
    let t = rho * (dof / ((rho + 1.0) * (1.0 - rho))).max(0.0).sqrt();
    let p = student_t_two_sided(t, dof)?;
    Ok(Corr { n, estimate: rho, p_value: p, p_method: PMethod::StudentT })
}

/// Kendall's tau-b with the two-sided p-value of `scipy.stats.kendalltau` (`method="auto"`).
/// O(n log n) (Knight's algorithm). Undefined for n < 3, a constant column or a non-finite
/// value. `p_method` says whether the exact or the normal p-value was used.
pub fn kendall(x: &[f64], y: &[f64]) -> Result<Corr, Undefined> {
    check_pairs(x, y, 3)?;
    let c = kendall_counts(x, y);
    let tau = c.tau_b()?;
    let n = x.len() as u64;
    let exact = c.xtie == 0 && c.ytie == 0 && (n <= 33 || c.dis.min(c.tot - c.dis) <= 1);
    let (p, p_method) = if exact {
        (kendall_p_exact(n, c.tot - c.dis), PMethod::Exact)
    } else {
        let nf = n as f64;
        let m = nf * (nf - 1.0);
        let var = (m * (2.0 * nf + 5.0) - c.x1 as f64 - c.y1 as f64) / 18.0
            + (2 * c.xtie as u128 * c.ytie as u128) as f64 / m
            + c.x0 as f64 * c.y0 as f64 / (9.0 * m * (nf - 2.0));
        let z = c.con_minus_dis() as f64 / var.sqrt();
        (normal_two_sided(z), PMethod::Normal)
    };
    Ok(Corr { n: x.len(), estimate: tau, p_value: p, p_method })
}

/// The coefficient of `kind` alone (no p-value), for bootstraps and group averages.
/// Needs n >= 2 finite pairs and two non-constant columns.
pub fn coefficient(kind: CorrKind, x: &[f64], y: &[f64]) -> Result<f64, Undefined> {
    check_pairs(x, y, 2)?;
    match kind {
        CorrKind::Pearson => pearson_r(x, y),
        CorrKind::Spearman => spearman_rho(x, y),
        CorrKind::Kendall => kendall_counts(x, y).tau_b(),
    }
}

/// Fisher-z confidence interval for Pearson's `r` from `n` pairs at `level` (e.g. 0.95), as
/// scipy's `pearsonr(x, y).confidence_interval(level)`: tanh(atanh(r) -/+ z_{(1+level)/2} /
/// sqrt(n - 3)); [-1, 1] when n <= 3 (as scipy). Undefined for a level outside (0, 1) or r
/// outside [-1, 1].
pub fn pearson_fisher_ci(r: f64, n: usize, level: f64) -> Result<ConfidenceInterval, Undefined> {
    fisher_ci(r, n, level, 1.0, CiMethod::FisherZ)
}

/// Fisher-z confidence interval for Spearman's `rho` from `n` pairs at `level` (e.g. 0.95),
/// with Fieller, Hartley and Pearson's (1957) standard error sqrt(1.06 / (n - 3)), which
/// corrects the Pearson 1 / sqrt(n - 3) for the rank statistic's larger variance; [-1, 1]
/// when n <= 3.
pub fn spearman_fisher_ci(rho: f64, n: usize, level: f64) -> Result<ConfidenceInterval, Undefined> {
    fisher_ci(rho, n, level, 1.06, CiMethod::FisherZFieller)
}

fn fisher_ci(
    r: f64,
    n: usize,
    level: f64,
    var_numerator: f64,
    method: CiMethod,
) -> Result<ConfidenceInterval, Undefined> {
    super::check_level(level)?;
    if !(-1.0..=1.0).contains(&r) {
        return Err(Undefined::new(format!("correlation {r} is not in [-1, 1]")));
    }
    if n <= 3 {
        return Ok(ConfidenceInterval { level, lower: -1.0, upper: 1.0, method });
    }
    let h = normal_quantile(0.5 + level / 2.0);
    let se = (var_numerator / (n as f64 - 3.0)).sqrt();
    let z = r.atanh();
    Ok(ConfidenceInterval { level, lower: (z - h * se).tanh(), upper: (z + h * se).tanh(), method })
}

/// Seeded percentile-bootstrap interval for the coefficient of `kind`: resamples the (x, y)
/// pairs with replacement `cfg.n_resamples` times (ChaCha20 seeded with `cfg.seed`), drops
/// resamples where the coefficient is undefined (a constant resample) and takes the
/// `(1 -/+ level) / 2` percentiles (numpy linear interpolation). Deterministic given the seed.
pub fn bootstrap_corr_ci(
    x: &[f64],
    y: &[f64],
    kind: CorrKind,
    cfg: &BootstrapConfig,
) -> Result<BootstrapCi, Undefined> {
    check_pairs(x, y, 3)?;
    let estimate = coefficient(kind, x, y)?;
    let n = x.len();
    let mut xs = vec![0.0; n];
    let mut ys = vec![0.0; n];
    percentile_bootstrap(estimate, cfg, |rng| {
        for k in 0..n {
            let i = super::bootstrap::draw_index(rng, n);
            xs[k] = x[i];
            ys[k] = y[i];
        }
        coefficient(kind, &xs, &ys).ok()
    })
}

/// Settings for [`agreement`]. Defaults: level 0.95, no bootstrap.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgreementConfig {
    /// Confidence level of the Fisher-z intervals (and the bootstrap's own `level`), default 0.95.
    pub level: f64,
    /// Percentile bootstrap settings; `None` (default) skips the bootstrap intervals.
    pub bootstrap: Option<BootstrapConfig>,
}

impl Default for AgreementConfig {
    fn default() -> Self {
        AgreementConfig { level: 0.95, bootstrap: None }
    }
}

/// One coefficient with its intervals.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CorrWithCi {
    /// Coefficient, n and p-value.
    #[serde(flatten)]
    pub corr: Corr,
    /// Fisher-z interval (Pearson: 1/sqrt(n-3); Spearman: sqrt(1.06/(n-3))); `None` for Kendall.
    pub fisher_ci: Option<ConfidenceInterval>,
    /// Percentile-bootstrap interval; `None` when no bootstrap was asked for.
    pub bootstrap_ci: Option<Outcome<BootstrapCi>>,
}

/// Pearson, Spearman and Kendall agreement between evaluator scores and human scores.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgreementReport {
    /// Number of (x, y) pairs given.
    pub n: usize,
    /// Pearson's r.
    pub pearson: Outcome<CorrWithCi>,
    /// Spearman's rho.
    pub spearman: Outcome<CorrWithCi>,
    /// Kendall's tau-b.
    pub kendall: Outcome<CorrWithCi>,
}

/// All three correlations of evaluator scores `x` against human scores `y`, with Fisher-z
/// intervals at `cfg.level` and, when `cfg.bootstrap` is set, percentile-bootstrap intervals
/// (the same seed for all three).
pub fn agreement(x: &[f64], y: &[f64], cfg: &AgreementConfig) -> AgreementReport {
    let one = |kind: CorrKind| -> Result<CorrWithCi, Undefined> {
        let corr = match kind {
            CorrKind::Pearson => pearson(x, y)?,
            CorrKind::Spearman => spearman(x, y)?,
            CorrKind::Kendall => kendall(x, y)?,
        };
        let fisher_ci = match kind {
            CorrKind::Pearson => Some(pearson_fisher_ci(corr.estimate, corr.n, cfg.level)?),
            CorrKind::Spearman => Some(spearman_fisher_ci(corr.estimate, corr.n, cfg.level)?),
            CorrKind::Kendall => None,
        };
        let bootstrap_ci = cfg.bootstrap.as_ref().map(|b| bootstrap_corr_ci(x, y, kind, b).into());
        Ok(CorrWithCi { corr, fisher_ci, bootstrap_ci })
    };
    // The three are independent and each deterministic: Kendall (two sorts and a merge count)
    // runs beside Pearson and Spearman (two rankings) on rayon's pool, same results.
    let ((pearson, spearman), kendall) =
        rayon::join(|| (one(CorrKind::Pearson), one(CorrKind::Spearman)), || one(CorrKind::Kendall));
    AgreementReport { n: x.len(), pearson: pearson.into(), spearman: spearman.into(), kendall: kendall.into() }
}

// ---------------------------------------------------------------------------------------------
// Internals

/// Pearson's r of finite, equal-length columns (n >= 2); undefined for a constant column.
pub(crate) fn pearson_r(x: &[f64], y: &[f64]) -> Result<f64, Undefined> {
    if is_constant(x) {
        return Err(Undefined::new("x is constant"));
    }
    if is_constant(y) {
        return Err(Undefined::new("y is constant"));
    }
    let mx = super::mean(x);
    let my = super::mean(y);
    let (mut sxx, mut syy, mut sxy) = (0.0, 0.0, 0.0);
    for (&a, &b) in x.iter().zip(y) {
        let (dx, dy) = (a - mx, b - my);
        sxx += dx * dx;
        syy += dy * dy;
        sxy += dx * dy;
    }
    if sxx == 0.0 || syy == 0.0 || !sxx.is_finite() || !syy.is_finite() {
        return Err(Undefined::new("a column has zero or overflowing variance"));
    }
    // one square root keeps perfect agreement at exactly +/-1; split it if the product overflows
    let d = (sxx * syy).sqrt();
    let r = if d.is_finite() && d > 0.0 { sxy / d } else { sxy / sxx.sqrt() / syy.sqrt() };
    Ok(r.clamp(-1.0, 1.0))
}

/// Spearman's rho of finite, equal-length columns (n >= 2); undefined for a constant column.
pub(crate) fn spearman_rho(x: &[f64], y: &[f64]) -> Result<f64, Undefined> {
    if is_constant(x) {
        return Err(Undefined::new("x is constant"));
    }
    if is_constant(y) {
        return Err(Undefined::new("y is constant"));
    }
    pearson_r(&rankdata(x), &rankdata(y))
}

/// Pair counts for Kendall's tau (scipy's names): `tot` pairs, `dis` discordant, `xtie` /
/// `ytie` tied in x / y, `ntie` tied in both, and the tie sums x0 = sum t(t-1)(t-2),
/// x1 = sum t(t-1)(2t+5) (likewise y0, y1) of the variance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KendallCounts {
    pub tot: u64,
    pub dis: u64,
    pub xtie: u64,
    pub ytie: u64,
    pub ntie: u64,
    pub x0: u128,
    pub x1: u128,
    pub y0: u128,
    pub y1: u128,
}

impl KendallCounts {
    fn con_minus_dis(&self) -> i128 {
        self.tot as i128 - self.xtie as i128 - self.ytie as i128 + self.ntie as i128 - 2 * self.dis as i128
    }

    fn tau_b(&self) -> Result<f64, Undefined> {
        if self.xtie == self.tot {
            return Err(Undefined::new("x is constant"));
        }
        if self.ytie == self.tot {
            return Err(Undefined::new("y is constant"));
        }
        let tau = self.con_minus_dis() as f64
            / ((self.tot - self.xtie) as f64).sqrt()
            / ((self.tot - self.ytie) as f64).sqrt();
        Ok(tau.clamp(-1.0, 1.0))
    }
}

/// Knight's O(n log n) pair counting: sort by (x, y), count ties in runs, then count the
/// discordant pairs as the strict inversions of y found by a bottom-up merge sort.
pub(crate) fn kendall_counts(x: &[f64], y: &[f64]) -> KendallCounts {
    let n = x.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_unstable_by(|&a, &b| x[a].total_cmp(&x[b]).then(y[a].total_cmp(&y[b])));
    let xs: Vec<f64> = order.iter().map(|&i| x[i]).collect();
    let mut ys: Vec<f64> = order.iter().map(|&i| y[i]).collect();

    let (xtie, x0, x1) = tie_sums(&xs);
    let mut ntie = 0u64;
    let mut i = 0;
    while i < n {
        let mut j = i + 1;
        while j < n && xs[j] == xs[i] && ys[j] == ys[i] {
            j += 1;
        }
        let t = (j - i) as u64;
        ntie += t * (t - 1) / 2;
        i = j;
    }
    let dis = count_inversions(&mut ys);
    let (ytie, y0, y1) = tie_sums(&ys);
    let nn = n as u64;
    KendallCounts { tot: nn * nn.saturating_sub(1) / 2, dis, xtie, ytie, ntie, x0, x1, y0, y1 }
}

/// For sorted values: (sum t(t-1)/2, sum t(t-1)(t-2), sum t(t-1)(2t+5)) over tie runs t.
fn tie_sums(sorted: &[f64]) -> (u64, u128, u128) {
    let (mut pairs, mut s0, mut s1) = (0u64, 0u128, 0u128);
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i + 1;
        while j < sorted.len() && sorted[j] == sorted[i] {
            j += 1;
        }
        let t = (j - i) as u128;
        if t > 1 {
            pairs += (t * (t - 1) / 2) as u64;
            s0 += t * (t - 1) * (t - 2);
            s1 += t * (t - 1) * (2 * t + 5);
        }
        i = j;
    }
    (pairs, s0, s1)
}

/// Sorts `v` ascending and returns the number of pairs i < j with v[i] > v[j] (ties are not
/// inversions). Bottom-up merge sort, O(n log n).
fn count_inversions(v: &mut Vec<f64>) -> u64 {
    let n = v.len();
    let mut src = std::mem::take(v);
    let mut dst = vec![0.0; n];
    let mut inv = 0u64;
    let mut width = 1;
    while width < n {
        let mut lo = 0;
        while lo < n {
            let mid = (lo + width).min(n);
            let hi = (lo + 2 * width).min(n);
            let (mut i, mut j, mut k) = (lo, mid, lo);
            while i < mid && j < hi {
                if src[j] < src[i] {
                    dst[k] = src[j];
                    inv += (mid - i) as u64;
                    j += 1;
                } else {
                    dst[k] = src[i];
                    i += 1;
                }
                k += 1;
            }
            dst[k..k + (mid - i)].copy_from_slice(&src[i..mid]);
            k += mid - i;
            dst[k..k + (hi - j)].copy_from_slice(&src[j..hi]);
            lo = hi;
        }
        std::mem::swap(&mut src, &mut dst);
        width *= 2;
    }
    *v = src;
    inv
}

/// Exact two-sided p-value of Kendall's tau without ties for `n` items and `c` concordant
/// pairs, ported from scipy's `mstats_basic._kendall_p_exact` (Kendall 1970).
pub(crate) fn kendall_p_exact(n: u64, c: u64) -> f64 {
    let tot = n * (n - 1) / 2;
    let c = c.min(tot - c);
    let factorial = |k: u64| (1..=k).fold(1.0f64, |acc, i| acc * i as f64);
    let prob = if n <= 2 {
        1.0
    } else if c == 0 {
        if n < 171 { 2.0 / factorial(n) } else { 0.0 }
    } else if c == 1 {
        if n < 172 { 2.0 / factorial(n - 1) } else { 0.0 }
    } else if 4 * c == n * (n - 1) {
        1.0
    } else {
        let c = c as usize;
        let mut new = vec![0.0f64; c + 1];
        new[0] = 1.0;
        new[1] = 1.0;
        for j in 3..=n as usize {
            let scale = if n < 171 { 1.0 } else { j as f64 };
            let mut acc = 0.0;
            for v in new.iter_mut() {
                acc += *v;
                *v = acc / scale;
            }
            if j <= c {
                for k in (j..=c).rev() {
                    new[k] -= new[k - j];
                }
            }
        }
        let s: f64 = new.iter().sum();
        if n < 171 { 2.0 * s / factorial(n) } else { s }
    };
    prob.clamp(0.0, 1.0)
}

/// Two-sided p-value 2 * P(T >= |t|) for Student's t with `dof` degrees of freedom.
pub(crate) fn student_t_two_sided(t: f64, dof: f64) -> Result<f64, Undefined> {
    let dist = StudentsT::new(0.0, 1.0, dof).map_err(|e| Undefined::new(format!("student t with {dof} df: {e}")))?;
    Ok((2.0 * dist.sf(t.abs())).clamp(0.0, 1.0))
}

/// Two-sided p-value 2 * P(Z >= |z|) for the standard normal.
pub(crate) fn normal_two_sided(z: f64) -> f64 {
    (2.0 * standard_normal().sf(z.abs())).clamp(0.0, 1.0)
}

/// Standard normal survival function P(Z > z).
pub(crate) fn normal_sf(z: f64) -> f64 {
    standard_normal().sf(z)
}

/// Standard normal quantile at probability `p` in (0, 1).
pub(crate) fn normal_quantile(p: f64) -> f64 {
    standard_normal().inverse_cdf(p)
}

fn standard_normal() -> Normal {
    Normal::standard()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_kendall(x: &[f64], y: &[f64]) -> (i64, u64, u64) {
        // (concordant - discordant, x ties, y ties) by the O(n^2) definition
        let (mut s, mut tx, mut ty) = (0i64, 0u64, 0u64);
        for i in 0..x.len() {
            for j in i + 1..x.len() {
                let a = (x[i] - x[j]).signum() * (y[i] - y[j]).signum();
                if x[i] == x[j] {
                    tx += 1;
                }
                if y[i] == y[j] {
                    ty += 1;
                }
                if x[i] != x[j] && y[i] != y[j] {
                    s += a as i64;
                }
            }
        }
        (s, tx, ty)
    }

    #[test]
    fn knight_counts_match_the_quadratic_definition() {
        let mut state = 7u64;
        for n in [3usize, 5, 17, 64, 200] {
            let mut next = || {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 33) % 7) as f64
            };
            let x: Vec<f64> = (0..n).map(|_| next()).collect();
            let y: Vec<f64> = (0..n).map(|_| next()).collect();
            let c = kendall_counts(&x, &y);
            let (s, tx, ty) = naive_kendall(&x, &y);
            assert_eq!(c.con_minus_dis() as i64, s, "n={n}");
            assert_eq!((c.xtie, c.ytie), (tx, ty), "n={n}");
        }
    }

    #[test]
    fn undefined_cases_say_why() {
        assert!(pearson(&[1.0, 2.0], &[2.0, 1.0]).unwrap_err().reason.contains("n = 2"));
        let e = spearman(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]).unwrap_err();
        assert_eq!(e.reason, "x is constant");
        let e = kendall(&[1.0, 2.0, 3.0], &[5.0, 5.0, 5.0]).unwrap_err();
        assert_eq!(e.reason, "y is constant");
        assert!(pearson(&[1.0, f64::INFINITY, 3.0], &[1.0, 2.0, 3.0]).is_err());
        assert!(kendall(&[1.0, 2.0, 3.0], &[1.0, f64::NAN, 3.0]).is_err());
        assert!(spearman(&[1.0, 2.0, 3.0], &[1.0, 2.0]).is_err());
    }

    #[test]
    fn perfect_rank_agreement_has_unit_coefficients() {
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        let y = [10.0, 20.0, 30.0, 40.0, 500.0];
        assert_eq!(spearman(&x, &y).unwrap().estimate, 1.0);
        let k = kendall(&x, &y).unwrap();
        // 10 / sqrt(10) / sqrt(10), as scipy: 0.9999999999999999
        assert!((k.estimate - 1.0).abs() < 1e-15);
        // scipy.stats.kendalltau -> exact p = 2 / 5! = 1/60
        assert!((k.p_value - 1.0 / 60.0).abs() < 1e-15);
        assert_eq!(k.p_method, PMethod::Exact);
    }

    #[test]
    fn agreement_report_serializes_undefined_and_bootstrap() {
        let cfg =
            AgreementConfig { level: 0.9, bootstrap: Some(BootstrapConfig { n_resamples: 200, seed: 1, level: 0.9 }) };
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let r = agreement(&x, &[1.0, 3.0, 2.0, 5.0, 4.0, 6.0], &cfg);
        let k = r.kendall.as_ref().unwrap();
        assert!(k.fisher_ci.is_none() && k.bootstrap_ci.as_ref().is_some_and(|b| b.is_defined()));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["pearson"]["fisher_ci"]["level"], 0.9);
        assert_eq!(json["spearman"]["p_method"], "student_t");
        let flat = agreement(&x, &[2.0; 6], &cfg);
        let json = serde_json::to_value(&flat).unwrap();
        for k in ["pearson", "spearman", "kendall"] {
            assert_eq!(json[k]["undefined"], true, "{k}");
            assert_eq!(json[k]["reason"], "y is constant", "{k}");
        }
    }

    #[test]
    fn fisher_ci_brackets_r_and_is_trivial_for_n_3() {
        let ci = pearson_fisher_ci(0.5, 50, 0.95).unwrap();
        assert!(ci.lower < 0.5 && 0.5 < ci.upper);
        let wide = spearman_fisher_ci(0.5, 50, 0.95).unwrap();
        assert!(wide.lower < ci.lower && wide.upper > ci.upper);
        let t = pearson_fisher_ci(0.9, 3, 0.95).unwrap();
        assert_eq!((t.lower, t.upper), (-1.0, 1.0));
        assert!(pearson_fisher_ci(0.5, 50, 1.0).is_err());
    }
}
