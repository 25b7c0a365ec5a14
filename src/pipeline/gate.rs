//! The promotion gate: the retrained evaluator replaces the base one only when its held-out
//! agreement with the human scores beats the base's by `margin` and the gain is significant,
//! one-sided at `alpha`. The agreement is the Spearman over every held-out request
//! (`gate_metric = "spearman"`: Williams' test for dependent correlations, or a paired
//! bootstrap over requests) or the mean within-group Spearman over the held-out groups
//! (`gate_metric = "group_spearman"`, how an evaluator ranks the outputs of one prompt: a paired
//! t-test over groups of the per-group difference, or a paired bootstrap over groups).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::RunConfig;
use crate::report;
use crate::stats::{self, BootstrapConfig};
use crate::store::ScoredRequest;

/// The significance test of the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateTest {
    /// Williams' t for two correlations sharing the human column (default; `spearman` only).
    Williams,
    /// A paired bootstrap of the difference: over requests (`spearman`) or over groups
    /// (`group_spearman`).
    PairedBootstrap,
    /// A one-sided paired t-test over groups of the per-group Spearman difference
    /// (`group_spearman` only).
    PairedT,
}

/// What the gate compares (`gate_metric`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateMetric {
    /// Spearman over every held-out request (default).
    #[default]
    Spearman,
    /// Mean within-group Spearman over the held-out groups with two or more requests and both
    /// correlations defined (needs `group_key`).
    GroupSpearman,
}

/// Checks that `gate_test` fits `gate_metric`; the error names both keys.
pub(super) fn check(cfg: &RunConfig) -> Result<(), String> {
    match (cfg.gate_metric, cfg.gate_test) {
        (GateMetric::Spearman, GateTest::PairedT) => {
            Err("[run] gate_test = \"paired_t\" compares groups: it needs gate_metric = \"group_spearman\"".into())
        }
        (GateMetric::GroupSpearman, GateTest::Williams) => {
            Err("[run] gate_test = \"williams\" compares two correlations over requests: with gate_metric = \
             \"group_spearman\" use \"paired_t\" or \"paired_bootstrap\""
                .into())
        }
        _ => Ok(()),
    }
}

/// One held-out group's columns: new scores, base scores, human scores.
type GroupColumns = (Vec<f64>, Vec<f64>, Vec<f64>);

/// Per held-out group with two or more rows and both Spearmans defined: (new, base).
fn group_pairs(new: &BTreeMap<&str, f64>, pre: &[(&ScoredRequest, f64)]) -> Vec<(f64, f64)> {
    let mut groups: BTreeMap<&str, GroupColumns> = BTreeMap::new();
    for (r, s) in pre {
        if let (Some(n), Some(g)) = (new.get(r.request_id.as_str()), r.group.as_deref()) {
            let e = groups.entry(g).or_default();
            e.0.push(*n);
            e.1.push(*s);
            e.2.push(r.human_score);
        }
    }
    groups
        .values()
        .filter(|(a, _, _)| a.len() >= 2)
        .filter_map(|(a, b, h)| {
            let ra = stats::corr::spearman(a, h).ok()?.estimate;
            let rb = stats::corr::spearman(b, h).ok()?.estimate;
            Some((ra, rb))
        })
        .collect()
}

/// The promotion decision on held-out pairs: (request, base score) and (request, new score).
pub(super) fn gate(
    cfg: &RunConfig,
    pre: &[(&ScoredRequest, f64)],
    post: &[(&ScoredRequest, f64)],
) -> report::GateDecision {
    let new: BTreeMap<&str, f64> = post.iter().map(|(r, s)| (r.request_id.as_str(), *s)).collect();
    if cfg.gate_metric == GateMetric::GroupSpearman {
        return gate_groups(cfg, &group_pairs(&new, pre));
    }
    let (mut a, mut b, mut h) = (Vec::new(), Vec::new(), Vec::new());
    for (r, s) in pre {
        if let Some(n) = new.get(r.request_id.as_str()) {
            a.push(*n);
            b.push(*s);
            h.push(r.human_score);
        }
    }
    let rho = |x: &[f64]| stats::corr::spearman(x, &h).ok().map(|c| c.estimate);
    let (new_s, base_s) = (rho(&a), rho(&b));
    let mut g = undecided(cfg, "spearman", base_s, new_s);
    let (Some(ns), Some(bs)) = (new_s, base_s) else {
        g.reason = format!("a held-out Spearman is undefined on {} requests; keeping the base evaluator", h.len());
        return g;
    };
    let significant = match cfg.gate_test {
        GateTest::Williams => {
            let r_ab = stats::corr::spearman(&a, &b).ok().map(|c| c.estimate);
            if let Some(rab) = r_ab
                && let Ok(w) = stats::dependent::williams_test(ns, bs, rab, h.len())
            {
                g.statistic = Some(w.statistic);
                // One-sided for new > base from the two-sided p.
                g.p_value = Some(if w.statistic > 0.0 { w.p_value / 2.0 } else { 1.0 - w.p_value / 2.0 });
            }
            g.p_value.is_some_and(|p| p < cfg.alpha)
        }
        GateTest::PairedBootstrap => {
            // Significant at one-sided alpha when the (1 - 2 alpha) percentile interval of the
            // paired difference lies above 0; the bootstrap gives no p-value.
            let boot = BootstrapConfig { n_resamples: cfg.bootstrap, seed: cfg.seed, level: 1.0 - 2.0 * cfg.alpha };
            match stats::dependent::paired_bootstrap_spearman_diff(&a, &b, &h, &boot) {
                Ok(d) => {
                    g.statistic = Some(d.ci.estimate);
                    d.ci.lower > 0.0
                }
                Err(_) => false,
            }
        }
        GateTest::PairedT => false,
    };
    decide(cfg, g, ns, bs, significant)
}

/// A decision not taken yet: the figures, no test result.
fn undecided(cfg: &RunConfig, metric: &str, base: Option<f64>, new: Option<f64>) -> report::GateDecision {
    report::GateDecision {
        promoted: false,
        reason: String::new(),
        base_spearman: base,
        new_spearman: new,
        margin: cfg.margin,
        metric: metric.into(),
        test: test_name(cfg.gate_test),
        statistic: None,
        p_value: None,
        alpha: Some(cfg.alpha),
    }
}

fn test_name(t: GateTest) -> String {
    match t {
        GateTest::Williams => "williams".into(),
        GateTest::PairedBootstrap => "paired_bootstrap".into(),
        GateTest::PairedT => "paired_t".into(),
    }
}

/// The gate on the mean within-group Spearman: `pairs` holds (new, base) per usable group.
fn gate_groups(cfg: &RunConfig, pairs: &[(f64, f64)]) -> report::GateDecision {
    let mean =
        |f: fn(&(f64, f64)) -> f64| (!pairs.is_empty()).then(|| pairs.iter().map(f).sum::<f64>() / pairs.len() as f64);
    let (new_s, base_s) = (mean(|p| p.0), mean(|p| p.1));
    let mut g = undecided(cfg, "group_spearman", base_s, new_s);
    let (Some(ns), Some(bs)) = (new_s, base_s) else {
        g.reason = "no held-out group has two requests with both Spearmans defined; keeping the base evaluator".into();
        return g;
    };
    let d: Vec<f64> = pairs.iter().map(|(a, b)| a - b).collect();
    let significant = match cfg.gate_test {
        GateTest::PairedT => match stats::dependent::paired_t_greater(&d) {
            Ok(t) => {
                g.statistic = Some(t.statistic);
                g.p_value = Some(t.p_value);
                t.p_value < cfg.alpha
            }
            Err(_) => false,
        },
        GateTest::PairedBootstrap => {
            let boot = BootstrapConfig { n_resamples: cfg.bootstrap, seed: cfg.seed, level: 1.0 - 2.0 * cfg.alpha };
            match stats::dependent::bootstrap_mean_diff(&d, &boot) {
                Ok(ci) => {
                    g.statistic = Some(ci.estimate);
                    ci.lower > 0.0
                }
                Err(_) => false,
            }
        }
        GateTest::Williams => false,
    };
    decide(cfg, g, ns, bs, significant)
}

/// The decision and its sentence, from the two figures and the test's verdict.
fn decide(cfg: &RunConfig, mut g: report::GateDecision, ns: f64, bs: f64, significant: bool) -> report::GateDecision {
    let what = if g.metric == "group_spearman" { "held-out group-level Spearman" } else { "held-out Spearman" };
    let gain = ns - bs;
    g.promoted = gain >= cfg.margin && significant;
    g.reason = if g.promoted {
        format!(
            "promoted: {what} {ns:.3} vs {bs:.3} (+{gain:.3} >= margin {}), significant under {} at {}",
            cfg.margin, g.test, cfg.alpha
        )
    } else if gain < cfg.margin {
        format!("kept the base evaluator: {what} {ns:.3} vs {bs:.3}, gain {gain:+.3} below margin {}", cfg.margin)
    } else {
        format!(
            "kept the base evaluator: gain {gain:+.3} is not significant ({} p = {}, alpha {})",
            g.test,
            g.p_value.map_or("undefined".into(), |p| format!("{p:.4}")),
            cfg.alpha
        )
    };
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(metric: GateMetric, test: GateTest) -> RunConfig {
        RunConfig { gate_metric: metric, gate_test: test, ..Default::default() }
    }

    #[test]
    fn tests_must_fit_the_metric() {
        assert!(check(&cfg(GateMetric::Spearman, GateTest::Williams)).is_ok());
        assert!(check(&cfg(GateMetric::GroupSpearman, GateTest::PairedT)).is_ok());
        assert!(check(&cfg(GateMetric::GroupSpearman, GateTest::PairedBootstrap)).is_ok());
        assert!(check(&cfg(GateMetric::Spearman, GateTest::PairedT)).unwrap_err().contains("group_spearman"));
        assert!(check(&cfg(GateMetric::GroupSpearman, GateTest::Williams)).unwrap_err().contains("paired_t"));
    }

    /// The group gate compares mean within-group Spearmans and promotes only on a significant
    /// paired t over groups (scipy's ttest_1samp on the same differences: p 0.0385).
    #[test]
    fn the_group_gate_tests_per_group_differences() {
        let d = [0.3, -0.1, 0.5, 0.2, 0.0, 0.4, -0.2, 0.6];
        let pairs: Vec<(f64, f64)> = d.iter().map(|x| (0.2 + x, 0.2)).collect();
        let g = gate_groups(&cfg(GateMetric::GroupSpearman, GateTest::PairedT), &pairs);
        assert!(g.promoted, "{g:?}");
        assert_eq!(g.metric, "group_spearman");
        assert!((g.p_value.unwrap() - 0.03846805564402953).abs() < 1e-9);
        assert!((g.new_spearman.unwrap() - 0.4125).abs() < 1e-12 && (g.base_spearman.unwrap() - 0.2).abs() < 1e-12);
        assert!(g.reason.starts_with("promoted: held-out group-level Spearman"), "{}", g.reason);
        let strict = RunConfig { alpha: 0.01, ..cfg(GateMetric::GroupSpearman, GateTest::PairedT) };
        assert!(!gate_groups(&strict, &pairs).promoted);
        let boot = gate_groups(&cfg(GateMetric::GroupSpearman, GateTest::PairedBootstrap), &pairs);
        assert_eq!(boot.test, "paired_bootstrap");
        assert!(!gate_groups(&cfg(GateMetric::GroupSpearman, GateTest::PairedT), &[]).promoted);
    }
}
