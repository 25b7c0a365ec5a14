//! Inter-rater agreement: Krippendorff's alpha, Cohen's kappa over rater pairs, percent agreement.
//!
//! The input is a reliability matrix: one row per unit (a rated request), one column per rater,
//! `None` where that rater did not rate that unit. A row shorter than the widest row is missing
//! the remaining raters. Values are numbers (1-5 ratings, 0/1 thumbs); every present value must
//! be finite.
//!
//! - [`krippendorff_alpha`] follows Krippendorff's definition through the coincidence matrix
//!   (Krippendorff, *Computing Krippendorff's Alpha-Reliability*, 2011): a unit with fewer than
//!   two values is not pairable and is dropped; `alpha = 1 - D_o / D_e`. It matches the
//!   `krippendorff` Python package's `alpha(reliability_data=..., level_of_measurement=...)`.
//! - [`cohen_kappa`] matches scikit-learn's `cohen_kappa_score(y1, y2, weights=...)` with the
//!   labels the sorted union of both raters' values; linear and quadratic weights are taken on
//!   the label indices, as scikit-learn does, not on the values.
//! - [`pairwise_kappa`] averages Cohen's kappa over every rater pair that shares at least
//!   [`MIN_SHARED_ITEMS`] units.
//! - [`percent_agreement`] is the mean over pairable units of the share of agreeing rater pairs
//!   within the unit (Fleiss' `P_i`, averaged unweighted over units).
//!
//! Reference values: `scripts/reference/reference_agreement.py` (krippendorff, scikit-learn)
//! writes `tests/fixtures/agreement/`, which `tests/integration/agreement_reference.rs` compares against.

use serde::Serialize;

use super::bootstrap::{BootstrapCi, BootstrapConfig, draw_index, percentile_bootstrap};
use super::{Outcome, Undefined, check_finite, check_level};

/// The fewest units two raters must share for their Cohen's kappa to enter [`pairwise_kappa`].
pub const MIN_SHARED_ITEMS: usize = 2;

/// Krippendorff's level of measurement: which distance between two values counts as
/// disagreement. Serializes in lower case (`"nominal"`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MeasurementLevel {
    /// Any two different values disagree equally (thumbs, categories).
    Nominal,
    /// Distance by the number of pairable values ranked between the two (1-5 ratings read as
    /// ranks).
    Ordinal,
    /// Squared difference of the values (1-5 ratings read as equally spaced).
    Interval,
    /// Squared relative difference `((c - k) / (c + k))^2`, 0 where `c + k = 0`; meant for
    /// non-negative values with a true zero.
    Ratio,
}

/// Weights of Cohen's kappa, as scikit-learn's `weights` argument. Serializes in lower case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KappaWeights {
    /// Every disagreement weighs 1 (`weights=None`).
    Unweighted,
    /// Disagreement weighs `|i - j|` on the label indices (`weights="linear"`).
    Linear,
    /// Disagreement weighs `(i - j)^2` on the label indices (`weights="quadratic"`).
    Quadratic,
}

/// One unit's values as (index into the domain, count) with the unit's number of values.
#[derive(Debug, Clone)]
struct UnitCounts {
    counts: Vec<(usize, f64)>,
    m: f64,
}

/// The pairable part of a reliability matrix: units with two or more values, their value
/// counts over the sorted domain of pairable values.
#[derive(Debug, Clone)]
struct Pairable {
    domain: Vec<f64>,
    units: Vec<UnitCounts>,
}

/// Number of raters (columns) of a reliability matrix: the length of its widest row.
fn n_raters(units: &[Vec<Option<f64>>]) -> usize {
    units.iter().map(Vec::len).max().unwrap_or(0)
}

/// Rejects a non-finite value, naming its unit and rater.
fn check_values(units: &[Vec<Option<f64>>]) -> Result<(), Undefined> {
    for (u, row) in units.iter().enumerate() {
        for (r, v) in row.iter().enumerate() {
            if let Some(v) = v
                && !v.is_finite()
            {
                return Err(Undefined::new(format!("unit {u}, rater {r}: value {v} is not finite")));
            }
        }
    }
    Ok(())
}

/// The units with at least two values, counted over the sorted domain of their values.
fn pairable(units: &[Vec<Option<f64>>]) -> Result<Pairable, Undefined> {
    check_values(units)?;
    let rows: Vec<Vec<f64>> =
        units.iter().map(|row| row.iter().flatten().copied().collect::<Vec<f64>>()).filter(|v| v.len() >= 2).collect();
    let mut domain: Vec<f64> = rows.iter().flatten().copied().collect();
    domain.sort_unstable_by(f64::total_cmp);
    domain.dedup();
    let units = rows
        .iter()
        .map(|values| {
            let mut counts: Vec<(usize, f64)> = Vec::new();
            for v in values {
                let i = domain.partition_point(|d| d.total_cmp(v).is_lt());
                match counts.iter_mut().find(|(j, _)| *j == i) {
                    Some((_, c)) => *c += 1.0,
                    None => counts.push((i, 1.0)),
                }
            }
            UnitCounts { counts, m: values.len() as f64 }
        })
        .collect();
    Ok(Pairable { domain, units })
}

/// Alpha over the given units (counted over `domain`): builds the coincidence matrix
/// `o[c][k] = sum_u n_uc (n_uk - [c = k]) / (m_u - 1)`, the expected coincidences
/// `e[c][k] = (n_c n_k - [c = k] n_c) / (n - 1)` and returns `1 - sum(o d) / sum(e d)`.
fn alpha_from_counts(domain: &[f64], units: &[&UnitCounts], level: MeasurementLevel) -> Result<f64, Undefined> {
    let v = domain.len();
    let mut o = vec![0.0; v * v];
    for unit in units {
        for &(c, nc) in &unit.counts {
            for &(k, nk) in &unit.counts {
                let same = if c == k { 1.0 } else { 0.0 };
                o[c * v + k] += nc * (nk - same) / (unit.m - 1.0);
            }
        }
    }
    let n_v: Vec<f64> = (0..v).map(|k| (0..v).map(|c| o[c * v + k]).sum()).collect();
    let n: f64 = n_v.iter().sum();
    if n < 2.0 {
        return Err(Undefined::new("no unit has values from two or more raters"));
    }
    let present: Vec<usize> = (0..v).filter(|&c| n_v[c] > 0.0).collect();
    if present.len() < 2 {
        return Err(Undefined::new(format!(
            "every pairable value is {}, so there is no variation to agree on",
            domain[present[0]]
        )));
    }
    // Ordinal distances use the cumulative counts: sum_{g=c..k} n_g = cum[k + 1] - cum[c].
    let mut cum = vec![0.0; v + 1];
    for c in 0..v {
        cum[c + 1] = cum[c] + n_v[c];
    }
    let distance = |c: usize, k: usize| -> f64 {
        if c == k {
            return 0.0;
        }
        let (a, b) = (domain[c], domain[k]);
        match level {
            MeasurementLevel::Nominal => 1.0,
            MeasurementLevel::Ordinal => {
                let (lo, hi) = (c.min(k), c.max(k));
                let between = cum[hi + 1] - cum[lo] - (n_v[lo] + n_v[hi]) / 2.0;
                between * between
            }
            MeasurementLevel::Interval => (a - b) * (a - b),
            MeasurementLevel::Ratio => {
                let s = a + b;
                if s == 0.0 { 0.0 } else { ((a - b) / s).powi(2) }
            }
        }
    };
    let (mut d_o, mut d_e) = (0.0, 0.0);
    for c in 0..v {
        for k in 0..v {
            let d = distance(c, k);
            let same = if c == k { n_v[c] } else { 0.0 };
            d_o += o[c * v + k] * d;
            d_e += (n_v[c] * n_v[k] - same) / (n - 1.0) * d;
        }
    }
    if d_e == 0.0 {
        return Err(Undefined::new("expected disagreement is 0"));
    }
    Ok(1.0 - d_o / d_e)
}

/// Krippendorff's alpha of a reliability matrix (rows: units, columns: raters, `None`:
/// missing) at the given level of measurement. Units with fewer than two values are not
/// pairable and are dropped. Undefined for a non-finite value, when no unit has two values,
/// when all pairable values are equal (no variation), or when the expected disagreement is 0.
pub fn krippendorff_alpha(units: &[Vec<Option<f64>>], level: MeasurementLevel) -> Result<f64, Undefined> {
    let p = pairable(units)?;
    let refs: Vec<&UnitCounts> = p.units.iter().collect();
    alpha_from_counts(&p.domain, &refs, level)
}

/// Krippendorff's alpha with a percentile bootstrap interval over units: each resample draws
/// as many pairable units as there are, with replacement, and recomputes alpha over them
/// (resamples where alpha is undefined, e.g. with one value only, are left out; see
/// [`percentile_bootstrap`]). This is the plain unit bootstrap, not Hayes and Krippendorff's
/// (2007) bootstrap of the coincidences. Undefined where [`krippendorff_alpha`] is, for a
/// level outside (0, 1), or when most resamples are undefined.
pub fn krippendorff_alpha_ci(
    units: &[Vec<Option<f64>>],
    level: MeasurementLevel,
    cfg: &BootstrapConfig,
) -> Result<BootstrapCi, Undefined> {
    check_level(cfg.level)?;
    let p = pairable(units)?;
    let all: Vec<&UnitCounts> = p.units.iter().collect();
    let estimate = alpha_from_counts(&p.domain, &all, level)?;
    let n = all.len();
    let mut drawn: Vec<&UnitCounts> = Vec::with_capacity(n);
    percentile_bootstrap(estimate, cfg, |rng| {
        drawn.clear();
        drawn.extend((0..n).map(|_| all[draw_index(rng, n)]));
        alpha_from_counts(&p.domain, &drawn, level).ok()
    })
}

/// Cohen's kappa between two raters' paired labels `a[i]`, `b[i]`, as scikit-learn's
/// `cohen_kappa_score(a, b, weights=...)`: labels are the sorted union of both raters'
/// values, and `kappa = 1 - sum(w * observed) / sum(w * expected)`. Undefined for unequal
/// lengths, no pairs, a non-finite value, or when the expected disagreement is 0 (both raters
/// gave one and the same label throughout).
pub fn cohen_kappa(a: &[f64], b: &[f64], weights: KappaWeights) -> Result<f64, Undefined> {
    if a.len() != b.len() {
        return Err(Undefined::new(format!("the raters' labels differ in length ({} vs {})", a.len(), b.len())));
    }
    if a.is_empty() {
        return Err(Undefined::new("no paired labels"));
    }
    check_finite(a, "a")?;
    check_finite(b, "b")?;
    let mut labels: Vec<f64> = a.iter().chain(b).copied().collect();
    labels.sort_unstable_by(f64::total_cmp);
    labels.dedup();
    let l = labels.len();
    let index = |x: &f64| labels.partition_point(|d| d.total_cmp(x).is_lt());
    let mut confusion = vec![0.0; l * l];
    for (x, y) in a.iter().zip(b) {
        confusion[index(x) * l + index(y)] += 1.0;
    }
    let rows: Vec<f64> = (0..l).map(|i| (0..l).map(|j| confusion[i * l + j]).sum()).collect();
    let cols: Vec<f64> = (0..l).map(|j| (0..l).map(|i| confusion[i * l + j]).sum()).collect();
    let total = a.len() as f64;
    let weight = |i: usize, j: usize| -> f64 {
        let d = i.abs_diff(j) as f64;
        match weights {
            KappaWeights::Unweighted => {
                if i == j {
                    0.0
                } else {
                    1.0
                }
            }
            KappaWeights::Linear => d,
            KappaWeights::Quadratic => d * d,
        }
    };
    let (mut observed, mut expected) = (0.0, 0.0);
    for i in 0..l {
        for j in 0..l {
            let w = weight(i, j);
            observed += w * confusion[i * l + j];
            expected += w * (rows[i] * cols[j] / total);
        }
    }
    if expected == 0.0 {
        return Err(Undefined::new(format!(
            "both raters gave only the label {}, so chance disagreement is 0",
            labels[0]
        )));
    }
    Ok(1.0 - observed / expected)
}

/// Cohen's kappa of one rater pair over the units both rated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairKappa {
    /// The first rater's column.
    pub rater_a: usize,
    /// The second rater's column (`rater_b > rater_a`).
    pub rater_b: usize,
    /// Units both raters rated.
    pub n_shared: usize,
    /// The pair's kappa over those units.
    pub kappa: Outcome<f64>,
}

/// Cohen's kappa of every rater pair `(a, b)`, `a < b`, sharing at least [`MIN_SHARED_ITEMS`]
/// units, in order of `a` then `b`. Pairs sharing fewer units are left out.
pub fn pair_kappas(units: &[Vec<Option<f64>>], weights: KappaWeights) -> Vec<PairKappa> {
    let r = n_raters(units);
    let at = |row: &Vec<Option<f64>>, j: usize| row.get(j).copied().flatten();
    let mut out = Vec::new();
    for a in 0..r {
        for b in a + 1..r {
            let (xs, ys): (Vec<f64>, Vec<f64>) =
                units.iter().filter_map(|row| Some((at(row, a)?, at(row, b)?))).unzip();
            if xs.len() >= MIN_SHARED_ITEMS {
                let kappa = cohen_kappa(&xs, &ys, weights).into();
                out.push(PairKappa { rater_a: a, rater_b: b, n_shared: xs.len(), kappa });
            }
        }
    }
    out
}

/// Cohen's kappa averaged over rater pairs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairwiseKappa {
    /// The weighting used.
    pub weights: KappaWeights,
    /// Unweighted mean of the defined pair kappas.
    pub mean: f64,
    /// Pairs whose kappa entered the mean.
    pub pairs_used: usize,
    /// Pairs sharing at least [`MIN_SHARED_ITEMS`] units whose kappa was undefined (left out).
    pub pairs_undefined: usize,
}

/// Mean Cohen's kappa over every rater pair sharing at least [`MIN_SHARED_ITEMS`] units
/// (see [`pair_kappas`]); pairs whose kappa is undefined are left out and counted. Undefined
/// for a non-finite value or when no pair has a defined kappa.
pub fn pairwise_kappa(units: &[Vec<Option<f64>>], weights: KappaWeights) -> Result<PairwiseKappa, Undefined> {
    check_values(units)?;
    let pairs = pair_kappas(units, weights);
    let defined: Vec<f64> = pairs.iter().filter_map(|p| p.kappa.as_ref().copied()).collect();
    if defined.is_empty() {
        return Err(Undefined::new(if pairs.is_empty() {
            format!("no two raters share {MIN_SHARED_ITEMS} or more units")
        } else {
            format!("kappa is undefined for all {} rater pairs", pairs.len())
        }));
    }
    Ok(PairwiseKappa {
        weights,
        mean: defined.iter().sum::<f64>() / defined.len() as f64,
        pairs_used: defined.len(),
        pairs_undefined: pairs.len() - defined.len(),
    })
}

/// Percent agreement: for each unit with `m >= 2` values, the share of its `m (m - 1)` ordered
/// pairs of ratings by different raters that are equal; then the unweighted mean over those
/// units (Fleiss' `P_i` and `P-bar`). In [0, 1]. Undefined for a non-finite value or when no
/// unit has two values.
pub fn percent_agreement(units: &[Vec<Option<f64>>]) -> Result<f64, Undefined> {
    let p = pairable(units)?;
    if p.units.is_empty() {
        return Err(Undefined::new("no unit has values from two or more raters"));
    }
    let total: f64 =
        p.units.iter().map(|u| u.counts.iter().map(|&(_, c)| c * (c - 1.0)).sum::<f64>() / (u.m * (u.m - 1.0))).sum();
    Ok(total / p.units.len() as f64)
}

/// Everything `evalloop agreement` reports for one reliability matrix.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RaterAgreement {
    /// Level of measurement of alpha.
    pub level: MeasurementLevel,
    /// Units with values from two or more raters (the pairable units).
    pub items_used: usize,
    /// Raters with at least one value in a pairable unit.
    pub raters_used: usize,
    /// Rater pairs sharing at least [`MIN_SHARED_ITEMS`] units (the pairs kappa is taken over;
    /// each [`PairwiseKappa`] says how many of them had a defined kappa).
    pub pairs_used: usize,
    /// Krippendorff's alpha at `level`.
    pub alpha: Outcome<f64>,
    /// Percentile bootstrap interval of alpha over units.
    pub alpha_ci: Outcome<BootstrapCi>,
    /// Mean unweighted Cohen's kappa over rater pairs.
    pub kappa: Outcome<PairwiseKappa>,
    /// Mean linear-weighted Cohen's kappa over rater pairs.
    pub kappa_linear: Outcome<PairwiseKappa>,
    /// Mean quadratic-weighted Cohen's kappa over rater pairs.
    pub kappa_quadratic: Outcome<PairwiseKappa>,
    /// Percent agreement (see [`percent_agreement`]).
    pub percent_agreement: Outcome<f64>,
}

/// Computes every figure of [`RaterAgreement`] for a reliability matrix (rows: units,
/// columns: raters). `cfg` drives the bootstrap interval of alpha.
pub fn rater_agreement(units: &[Vec<Option<f64>>], level: MeasurementLevel, cfg: &BootstrapConfig) -> RaterAgreement {
    let pairable_rows: Vec<&Vec<Option<f64>>> = units.iter().filter(|row| row.iter().flatten().count() >= 2).collect();
    let raters_used = (0..n_raters(units))
        .filter(|&j| pairable_rows.iter().any(|row| row.get(j).copied().flatten().is_some()))
        .count();
    let kappa = pairwise_kappa(units, KappaWeights::Unweighted);
    let pairs_used = match &kappa {
        Ok(k) => k.pairs_used + k.pairs_undefined,
        Err(_) => pair_kappas(units, KappaWeights::Unweighted).len(),
    };
    RaterAgreement {
        level,
        items_used: pairable_rows.len(),
        raters_used,
        pairs_used,
        alpha: krippendorff_alpha(units, level).into(),
        alpha_ci: krippendorff_alpha_ci(units, level, cfg).into(),
        kappa: kappa.into(),
        kappa_linear: pairwise_kappa(units, KappaWeights::Linear).into(),
        kappa_quadratic: pairwise_kappa(units, KappaWeights::Quadratic).into(),
        percent_agreement: percent_agreement(units).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Krippendorff (2011), section C: 4 coders x 12 units with missing values, given here as
    /// rows of units. Published: nominal 0.743, ordinal 0.815, interval 0.849, ratio 0.797.
    fn textbook() -> Vec<Vec<Option<f64>>> {
        let coders: [[f64; 12]; 4] = [
            [1., 2., 3., 3., 2., 1., 4., 1., 2., 0., 0., 0.],
            [1., 2., 3., 3., 2., 2., 4., 1., 2., 5., 0., 3.],
            [0., 3., 3., 3., 2., 3., 4., 2., 2., 5., 1., 0.],
            [1., 2., 3., 3., 2., 4., 4., 1., 2., 5., 1., 0.],
        ];
        (0..12).map(|u| coders.iter().map(|c| (c[u] != 0.0).then_some(c[u])).collect()).collect()
    }

    #[test]
    fn textbook_example_matches_krippendorff() {
        let m = textbook();
        // Nominal by hand: n = 40 pairable values (unit 12 has one value) with n_c = (9, 13,
        // 10, 5, 3) for values 1..5; the off-diagonal coincidences sum to 8 (units 2, 6 and 8
        // give 2, 4 and 2), so alpha = 1 - (n - 1) * 8 / (n^2 - sum n_c^2).
        let by_hand = 1.0 - 39.0 * 8.0 / (1600.0 - (81.0 + 169.0 + 100.0 + 25.0 + 9.0));
        let nominal = krippendorff_alpha(&m, MeasurementLevel::Nominal).unwrap();
        assert!((nominal - by_hand).abs() < 1e-12, "{nominal} vs {by_hand}");
        assert!((nominal - 0.743).abs() < 5e-4, "{nominal}");
        for (level, want) in
            [(MeasurementLevel::Ordinal, 0.815), (MeasurementLevel::Interval, 0.849), (MeasurementLevel::Ratio, 0.797)]
        {
            let got = krippendorff_alpha(&m, level).unwrap();
            assert!((got - want).abs() < 5e-4, "{level:?}: {got} vs {want}");
        }
    }

    #[test]
    fn kappa_matches_sklearn_docstring_and_hand_weights() {
        // sklearn: cohen_kappa_score(["neg","pos","neg","neu","pos"], ["neg","pos","neg","neu","neg"]) = 0.6875
        // coded neg = 0, neu = 1, pos = 2.
        let a = [0.0, 2.0, 0.0, 1.0, 2.0];
        let b = [0.0, 2.0, 0.0, 1.0, 0.0];
        assert!((cohen_kappa(&a, &b, KappaWeights::Unweighted).unwrap() - 0.6875).abs() < 1e-12);
        // Weights act on label indices: relabelling 0, 1, 2 as 1, 5, 40 changes nothing.
        let relabel = |v: &[f64]| v.iter().map(|&x| [1.0, 5.0, 40.0][x as usize]).collect::<Vec<f64>>();
        for w in [KappaWeights::Linear, KappaWeights::Quadratic] {
            let k1 = cohen_kappa(&a, &b, w).unwrap();
            let k2 = cohen_kappa(&relabel(&a), &relabel(&b), w).unwrap();
            assert_eq!(k1, k2);
        }
        // Linear by hand: one disagreement (2 vs 0) of weight 2 observed; expected
        // sum |i - j| r_i c_j / n from the marginals rows (2, 1, 2) and columns (3, 1, 1).
        let rows = [2.0, 1.0, 2.0];
        let cols = [3.0, 1.0, 1.0];
        let mut expected = 0.0;
        for (i, r) in rows.iter().enumerate() {
            for (j, c) in cols.iter().enumerate() {
                expected += i.abs_diff(j) as f64 * r * c / 5.0;
            }
        }
        let want = 1.0 - 2.0 / expected;
        assert!((cohen_kappa(&a, &b, KappaWeights::Linear).unwrap() - want).abs() < 1e-12);
    }

    #[test]
    fn undefined_cases_say_why() {
        let none: Vec<Vec<Option<f64>>> = vec![vec![Some(1.0), None], vec![None, Some(2.0)]];
        let e = krippendorff_alpha(&none, MeasurementLevel::Nominal).unwrap_err();
        assert!(e.reason.contains("no unit"), "{}", e.reason);
        assert!(percent_agreement(&none).is_err());
        assert!(pairwise_kappa(&none, KappaWeights::Unweighted).unwrap_err().reason.contains("share"));

        let constant = vec![vec![Some(3.0), Some(3.0)], vec![Some(3.0), Some(3.0), Some(3.0)], vec![Some(5.0)]];
        for level in [MeasurementLevel::Nominal, MeasurementLevel::Ordinal, MeasurementLevel::Interval] {
            let e = krippendorff_alpha(&constant, level).unwrap_err();
            assert!(e.reason.contains("no variation"), "{}", e.reason);
        }
        assert_eq!(percent_agreement(&constant), Ok(1.0));
        let e = pairwise_kappa(&constant, KappaWeights::Quadratic).unwrap_err();
        assert!(e.reason.contains("undefined for all 1"), "{}", e.reason);
        assert!(cohen_kappa(&[2.0, 2.0], &[2.0, 2.0], KappaWeights::Linear).unwrap_err().reason.contains("only"));

        let nan = vec![vec![Some(1.0), Some(f64::NAN)], vec![Some(1.0), Some(2.0)]];
        let e = krippendorff_alpha(&nan, MeasurementLevel::Interval).unwrap_err();
        assert!(e.reason.contains("unit 0, rater 1"), "{}", e.reason);
        assert!(cohen_kappa(&[1.0], &[1.0, 2.0], KappaWeights::Unweighted).is_err());
        assert!(cohen_kappa(&[], &[], KappaWeights::Unweighted).is_err());
        assert!(krippendorff_alpha(&[], MeasurementLevel::Nominal).is_err());

        let cfg = BootstrapConfig { level: 1.0, ..Default::default() };
        assert!(krippendorff_alpha_ci(&textbook(), MeasurementLevel::Nominal, &cfg).is_err());
    }

    #[test]
    fn percent_agreement_by_hand() {
        // unit 1: 3 values (1, 1, 2): 2 of 6 ordered pairs agree; unit 2: (4, 4): 1;
        // unit 3 has one value and is dropped. Mean (1/3 + 1) / 2 = 2/3.
        let m = vec![vec![Some(1.0), Some(1.0), Some(2.0)], vec![Some(4.0), None, Some(4.0)], vec![None, Some(5.0)]];
        assert!((percent_agreement(&m).unwrap() - 2.0 / 3.0).abs() < 1e-15);
    }

    #[test]
    fn summary_counts_and_seeded_interval() {
        let m = textbook();
        let cfg = BootstrapConfig { n_resamples: 400, seed: 7, level: 0.9 };
        let s = rater_agreement(&m, MeasurementLevel::Nominal, &cfg);
        assert_eq!(s.items_used, 11);
        assert_eq!(s.raters_used, 4);
        assert_eq!(s.pairs_used, 6);
        assert_eq!(s, rater_agreement(&m, MeasurementLevel::Nominal, &cfg));
        let ci = s.alpha_ci.as_ref().unwrap();
        assert_eq!(Some(&ci.estimate), s.alpha.as_ref());
        assert!(ci.lower <= ci.estimate && ci.estimate <= ci.upper, "{ci:?}");
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["level"], "nominal");
        assert_eq!(json["kappa_linear"]["weights"], "linear");

        let other = rater_agreement(&m, MeasurementLevel::Nominal, &BootstrapConfig { seed: 8, ..cfg });
        assert_ne!(other.alpha_ci, s.alpha_ci);
    }

    #[test]
    fn ragged_rows_are_missing_the_remaining_raters() {
        let ragged = vec![vec![Some(1.0), Some(2.0), Some(2.0)], vec![Some(2.0), Some(2.0)], vec![Some(1.0)]];
        let padded: Vec<Vec<Option<f64>>> = ragged
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r.resize(3, None);
                r
            })
            .collect();
        for level in [MeasurementLevel::Nominal, MeasurementLevel::Interval] {
            assert_eq!(krippendorff_alpha(&ragged, level), krippendorff_alpha(&padded, level));
        }
        assert_eq!(pair_kappas(&ragged, KappaWeights::Linear), pair_kappas(&padded, KappaWeights::Linear));
    }
}
