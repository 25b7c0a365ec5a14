//! Prediction-powered inference for a mean (PPI++, with power tuning) beside the classical
//! labels-only estimate, one stratum at a time and combined over strata.
//!
//! The evaluator predicts `yhat` on every request; people label a few (`y`, with the
//! evaluator's `yhat` on the same requests). PPI++ (Angelopoulos, Duchi and Zrnic, "PPI++:
//! Efficient Prediction-Powered Inference", 2023) estimates the mean of `y` as
//!
//! ```text
//! theta = lambda * mean(yhat_unlabelled) + mean(y - lambda * yhat)
//! se^2  = lambda^2 var(yhat_unlabelled) / N + var(y - lambda * yhat) / n
//! ```
//!
//! with `lambda = cov(y, yhat) / ((1 + n / N) var(yhat))` clipped to [0, 1] (0 gives the
//! classical estimate, 1 plain PPI), and a normal (z) interval. The formulas, including the
//! population (ddof 0) variances of the interval and the pooled sample (ddof 1) variance of
//! `yhat` in `lambda`, are those of `ppi_py.ppi_mean_ci` / `ppi_mean_pointestimate` (PyPI
//! `ppi-python` 0.2.3, unweighted), which `scripts/reference/reference_ppi.py` runs to write the
//! fixtures of `tests/integration/ppi_reference.rs`. The labelled and unlabelled sets are independent
//! samples of one population: pass the requests without a label as `yhat_unlabelled`.
//!
//! That interval ([`IntervalKind::Normal`]) is asymptotic. With the tens of labels a cohort
//! gets, [`IntervalKind::SmallSample`] (evalloop's default) uses sample (ddof 1) variances and a
//! Student t quantile whose degrees of freedom come from Welch-Satterthwaite over the labelled
//! (`n - 1`) and unlabelled (`N - 1`) terms; it tends to the normal interval as `n` grows.
//!
//! When people label some groups more than others, labels are random only within a group
//! (a stratum, e.g. a cohort). [`stratified`] then combines per-stratum estimates with the
//! strata's shares of the population: `theta = sum_h s_h theta_h`, `se^2 = sum_h s_h^2 se_h^2`
//! (stratified PPI, Fisch et al. 2024), for the classical and the PPI++ estimate alike.

use serde::Serialize;

use serde::Deserialize;
use statrs::distribution::{ContinuousCDF, StudentsT};

use super::Undefined;
use super::corr::normal_quantile;

/// How an interval is built (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntervalKind {
    /// Population (ddof 0) variances and a normal quantile: `ppi_py`'s interval.
    Normal,
    /// Sample (ddof 1) variances and a Student t quantile with Welch-Satterthwaite degrees of
    /// freedom (the default).
    #[default]
    SmallSample,
}

/// A point estimate with its standard error and two-sided interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MeanEstimate {
    /// The estimated mean.
    pub estimate: f64,
    /// Its standard error.
    pub std_error: f64,
    /// Degrees of freedom of the t quantile; absent for a normal interval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub df: Option<f64>,
    /// Lower end of the interval at the requested level.
    pub lower: f64,
    /// Upper end of the interval at the requested level.
    pub upper: f64,
}

impl MeanEstimate {
    /// `estimate +- q * std_error`, with `q` the quantile of a two-sided `level` (0.95) of the
    /// standard normal (`df` `None`, 1.96) or of Student's t with `df` degrees of freedom.
    pub fn new(estimate: f64, std_error: f64, df: Option<f64>, level: f64) -> MeanEstimate {
        let p = 0.5 + level / 2.0;
        let q = match df.and_then(|d| StudentsT::new(0.0, 1.0, d).ok()) {
            Some(t) => t.inverse_cdf(p),
            None => normal_quantile(p),
        };
        MeanEstimate { estimate, std_error, df, lower: estimate - q * std_error, upper: estimate + q * std_error }
    }

    /// `upper - lower`.
    pub fn width(&self) -> f64 {
        self.upper - self.lower
    }
}

/// The classical and the PPI++ estimate of one mean.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PpiMean {
    /// Labelled requests (`y`).
    pub n_labelled: usize,
    /// Requests without a label (`yhat_unlabelled`).
    pub n_unlabelled: usize,
    /// The power-tuning weight of the evaluator, in [0, 1].
    pub lambda: f64,
    /// The mean of the labels with its interval.
    pub classical: MeanEstimate,
    /// The prediction-powered estimate with its interval.
    pub ppi: MeanEstimate,
}

impl PpiMean {
    /// The labelled sample size the classical estimate would need for the PPI++ standard
    /// error: `n * (se_classical / se_ppi)^2` (`n` when both are 0).
    pub fn effective_labels(&self) -> f64 {
        effective_labels(self.n_labelled as f64, self.classical.std_error, self.ppi.std_error)
    }
}

/// `n * (se_classical / se_ppi)^2`; `n` when the PPI standard error is 0.
pub fn effective_labels(n: f64, se_classical: f64, se_ppi: f64) -> f64 {
    if se_ppi > 0.0 { n * (se_classical / se_ppi).powi(2) } else { n }
}

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

/// The variance of the mean of `x`: `var(x) / n`, the variance with ddof 0 (as numpy's
/// `std()`, [`IntervalKind::Normal`]) or ddof 1; with the degrees of freedom `n - 1` for the
/// second.
fn var_of_mean(x: &[f64], kind: IntervalKind) -> (f64, Option<f64>) {
    let n = x.len() as f64;
    let m = mean(x);
    let ss = x.iter().map(|v| (v - m).powi(2)).sum::<f64>();
    match kind {
        IntervalKind::Normal => (ss / n / n, None),
        IntervalKind::SmallSample => (ss / (n - 1.0) / n, Some(n - 1.0)),
    }
}

/// Welch-Satterthwaite: the degrees of freedom of a sum of independent variance terms
/// `(variance, df)`; `None` (normal) when any term has none, or when the sum is 0.
pub fn satterthwaite(terms: &[(f64, Option<f64>)]) -> Option<f64> {
    let total: f64 = terms.iter().map(|(v, _)| v).sum();
    let mut denom = 0.0;
    for (v, df) in terms {
        if *v > 0.0 {
            denom += v * v / (*df)?;
        }
    }
    (total > 0.0 && denom > 0.0).then(|| total * total / denom)
}

fn check(name: &str, x: &[f64]) -> Result<(), Undefined> {
    match x.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(Undefined::new(format!("{name}[{i}] is not finite"))),
        None => Ok(()),
    }
}

/// The classical estimate: the mean of `y` with standard error `std(y) / sqrt(n)` (ddof 0 and
/// a normal quantile under [`IntervalKind::Normal`], as `ppi_py.classical_mean_ci`; ddof 1 and
/// t with `n - 1` degrees of freedom otherwise). Undefined for fewer than 2 labels or a
/// non-finite value.
pub fn classical_mean(y: &[f64], kind: IntervalKind, level: f64) -> Result<MeanEstimate, Undefined> {
    if y.len() < 2 {
        return Err(Undefined::new(format!("{} labelled request(s), at least 2 needed", y.len())));
    }
    check("y", y)?;
    let (var, df) = var_of_mean(y, kind);
    Ok(MeanEstimate::new(mean(y), var.sqrt(), df, level))
}

/// The power-tuning weight of PPI++ for a mean (`ppi_py`'s `_calc_lam_glm` with an identity
/// Hessian, clipped): `cov(y, yhat) / ((1 + n / N) var(yhat ++ yhat_unlabelled))`, the
/// covariance with ddof 0, the pooled variance with ddof 1, computed around the plain PPI
/// estimate (which cancels). 0 when the evaluator's scores are constant.
pub fn ppi_lambda(y: &[f64], yhat: &[f64], yhat_unlabelled: &[f64]) -> f64 {
    let (n, big_n) = (y.len() as f64, yhat_unlabelled.len() as f64);
    let (my, mh) = (mean(y), mean(yhat));
    let cov = y.iter().zip(yhat).map(|(a, b)| (a - my) * (b - mh)).sum::<f64>() / n;
    let pooled = yhat.iter().chain(yhat_unlabelled);
    let total = n + big_n;
    let pm = pooled.clone().sum::<f64>() / total;
    let var = pooled.map(|v| (v - pm).powi(2)).sum::<f64>() / (total - 1.0);
    if var <= 0.0 {
        return 0.0;
    }
    let lambda = cov / ((1.0 + n / big_n) * var);
    if lambda.is_finite() { lambda.clamp(0.0, 1.0) } else { 0.0 }
}

/// The classical and PPI++ estimates of the mean of `y` (module docs). `yhat[i]` is the
/// evaluator's prediction for the request labelled `y[i]`; `yhat_unlabelled` are its
/// predictions on the requests without a label. `lambda`: `None` tunes it, `Some(l)` fixes it
/// (1: plain PPI). With no unlabelled request the PPI++ estimate is the classical one
/// (`lambda` 0); with one, its variance term counts only when `N >= 2` under
/// [`IntervalKind::SmallSample`]. Undefined for fewer than 2 labels, unequal lengths or a
/// non-finite value.
pub fn ppi_mean(
    y: &[f64],
    yhat: &[f64],
    yhat_unlabelled: &[f64],
    lambda: Option<f64>,
    kind: IntervalKind,
    level: f64,
) -> Result<PpiMean, Undefined> {
    if y.len() != yhat.len() {
        return Err(Undefined::new(format!("{} labels but {} predictions for them", y.len(), yhat.len())));
    }
    let classical = classical_mean(y, kind, level)?;
    check("yhat", yhat)?;
    check("yhat_unlabelled", yhat_unlabelled)?;
    let (n, big_n) = (y.len(), yhat_unlabelled.len());
    if big_n == 0 {
        return Ok(PpiMean { n_labelled: n, n_unlabelled: 0, lambda: 0.0, classical, ppi: classical });
    }
    let lambda = lambda.unwrap_or_else(|| ppi_lambda(y, yhat, yhat_unlabelled));
    let rectifier: Vec<f64> = y.iter().zip(yhat).map(|(a, b)| a - lambda * b).collect();
    let estimate = lambda * mean(yhat_unlabelled) + mean(&rectifier);
    let imputed = match var_of_mean(yhat_unlabelled, kind) {
        (_, Some(df)) if df < 1.0 => (0.0, None),
        (v, df) => (lambda * lambda * v, df),
    };
    let rectifier = var_of_mean(&rectifier, kind);
    let df = satterthwaite(&[imputed, rectifier]);
    let ppi = MeanEstimate::new(estimate, (imputed.0 + rectifier.0).sqrt(), df, level);
    Ok(PpiMean { n_labelled: n, n_unlabelled: big_n, lambda, classical, ppi })
}

/// The classical and PPI++ estimates combined over strata.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StratifiedMean {
    /// Labels over all strata.
    pub n_labelled: usize,
    /// Sum of the strata's population shares (1 when every stratum could be estimated).
    pub share_covered: f64,
    /// `sum_h s_h theta_h` of the classical estimates.
    pub classical: MeanEstimate,
    /// `sum_h s_h theta_h` of the PPI++ estimates.
    pub ppi: MeanEstimate,
    /// [`effective_labels`] of the two combined standard errors.
    pub effective_labels: f64,
}

/// Combines per-stratum estimates `(estimate, population share)`: the shares are renormalised
/// over the strata given (which then stand for the population they cover, `share_covered`);
/// the degrees of freedom are Welch-Satterthwaite's over the strata's `(s_h^2 se_h^2, df_h)`.
/// Undefined for no strata or shares that sum to 0.
pub fn stratified(strata: &[(PpiMean, f64)], level: f64) -> Result<StratifiedMean, Undefined> {
    let total: f64 = strata.iter().map(|(_, s)| s).sum();
    if strata.is_empty() || total <= 0.0 || !total.is_finite() {
        return Err(Undefined::new("no stratum with at least 2 labelled requests"));
    }
    let combine = |pick: fn(&PpiMean) -> MeanEstimate| {
        let mut est = 0.0;
        let mut terms = Vec::with_capacity(strata.len());
        for (m, s) in strata {
            let (w, e) = (s / total, pick(m));
            est += w * e.estimate;
            terms.push((w * w * e.std_error * e.std_error, e.df));
        }
        let var: f64 = terms.iter().map(|(v, _)| v).sum();
        MeanEstimate::new(est, var.sqrt(), satterthwaite(&terms), level)
    };
    let classical = combine(|m| m.classical);
    let ppi = combine(|m| m.ppi);
    let n_labelled = strata.iter().map(|(m, _)| m.n_labelled).sum::<usize>();
    Ok(StratifiedMean {
        n_labelled,
        share_covered: total,
        classical,
        ppi,
        effective_labels: effective_labels(n_labelled as f64, classical.std_error, ppi.std_error),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lambda_zero_is_the_classical_estimate() {
        let y = [1.0, 2.0, 4.0, 5.0, 3.0];
        let yhat = [1.5, 2.0, 3.5, 4.0, 3.0];
        let u = [2.0, 3.0, 4.0];
        let m = ppi_mean(&y, &yhat, &u, Some(0.0), IntervalKind::Normal, 0.95).unwrap();
        assert_eq!(m.ppi, m.classical);
        assert!((m.classical.estimate - 3.0).abs() < 1e-12);
        assert!((m.classical.std_error - (2.0f64 / 5.0).sqrt()).abs() < 1e-12);
        let s = ppi_mean(&y, &yhat, &u, Some(0.0), IntervalKind::SmallSample, 0.95).unwrap();
        assert!((s.classical.std_error - (2.5f64 / 5.0).sqrt()).abs() < 1e-12);
        assert_eq!(s.classical.df, Some(4.0));
        // t(4) 0.975 quantile, scipy.stats.t.ppf(0.975, 4)
        let q = (s.classical.upper - s.classical.estimate) / s.classical.std_error;
        assert!((q - 2.7764451051977987).abs() < 1e-9, "{q}");
    }

    #[test]
    fn a_perfect_evaluator_gets_lambda_near_one_and_a_narrower_interval() {
        let y: Vec<f64> = (0..50).map(|i| (i % 5) as f64 + 1.0).collect();
        let u: Vec<f64> = (0..500).map(|i| (i % 5) as f64 + 1.0).collect();
        let m = ppi_mean(&y, &y, &u, None, IntervalKind::SmallSample, 0.95).unwrap();
        assert!(m.lambda > 0.85 && m.lambda <= 1.0, "{}", m.lambda);
        assert!(m.ppi.width() < 0.5 * m.classical.width());
        assert!(m.effective_labels() > 4.0 * 50.0);
    }

    #[test]
    fn a_useless_evaluator_gets_lambda_zero() {
        let y = [1.0, 5.0, 1.0, 5.0];
        let yhat = [0.3, 0.3, 0.3, 0.3];
        let m = ppi_mean(&y, &yhat, &[0.3, 0.3], None, IntervalKind::SmallSample, 0.95).unwrap();
        assert_eq!(m.lambda, 0.0);
        assert_eq!(m.ppi.estimate, m.classical.estimate);
    }

    #[test]
    fn undefined_inputs_say_why() {
        assert!(
            ppi_mean(&[1.0], &[1.0], &[1.0], None, IntervalKind::Normal, 0.95)
                .unwrap_err()
                .reason
                .contains("at least 2")
        );
        assert!(
            ppi_mean(&[1.0, 2.0], &[1.0], &[1.0], None, IntervalKind::Normal, 0.95)
                .unwrap_err()
                .reason
                .contains("predictions")
        );
        let e = ppi_mean(&[1.0, 2.0], &[1.0, f64::NAN], &[1.0], None, IntervalKind::Normal, 0.95).unwrap_err();
        assert_eq!(e.reason, "yhat[1] is not finite");
        assert!(stratified(&[], 0.95).is_err());
    }

    #[test]
    fn no_unlabelled_requests_leave_the_classical_estimate() {
        let m = ppi_mean(&[1.0, 3.0], &[0.0, 1.0], &[], None, IntervalKind::SmallSample, 0.95).unwrap();
        assert_eq!((m.lambda, m.ppi), (0.0, m.classical));
    }

    #[test]
    fn one_stratum_is_its_own_estimate_and_shares_weigh_strata() {
        let a = ppi_mean(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0], &[2.0, 2.0], None, IntervalKind::Normal, 0.95).unwrap();
        let b = ppi_mean(&[4.0, 5.0, 4.0], &[4.0, 5.0, 4.0], &[4.5], None, IntervalKind::Normal, 0.95).unwrap();
        let one = stratified(&[(a, 0.3)], 0.95).unwrap();
        assert!((one.ppi.estimate - a.ppi.estimate).abs() < 1e-12);
        assert!((one.ppi.std_error - a.ppi.std_error).abs() < 1e-12);
        let two = stratified(&[(a, 0.25), (b, 0.75)], 0.95).unwrap();
        let want = 0.25 * a.classical.estimate + 0.75 * b.classical.estimate;
        assert!((two.classical.estimate - want).abs() < 1e-12);
        assert_eq!(two.n_labelled, 6);
    }

    #[test]
    fn satterthwaite_of_one_term_is_its_df_and_normal_terms_stay_normal() {
        assert_eq!(satterthwaite(&[(0.3, Some(7.0))]), Some(7.0));
        assert_eq!(satterthwaite(&[(0.3, Some(7.0)), (0.1, None)]), None);
        // two equal terms with 9 df each: (2v)^2 / (2 v^2 / 9) = 18
        assert!((satterthwaite(&[(0.2, Some(9.0)), (0.2, Some(9.0))]).unwrap() - 18.0).abs() < 1e-12);
        assert_eq!(satterthwaite(&[(0.0, Some(3.0))]), None);
    }
}
