//! The promotion gate: the retrained evaluator replaces the base one only when its held-out
//! Spearman with the human scores beats the base's by `margin` and the gain is significant
//! (Williams' test for dependent correlations, or a paired bootstrap), one-sided at `alpha`.

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
    /// Williams' t for two correlations sharing the human column (default).
    Williams,
    /// A paired bootstrap over requests of the Spearman difference.
    PairedBootstrap,
}

/// The promotion decision on held-out pairs: (request, base score) and (request, new score).
pub(super) fn gate(
    cfg: &RunConfig,
    pre: &[(&ScoredRequest, f64)],
    post: &[(&ScoredRequest, f64)],
) -> report::GateDecision {
    let new: BTreeMap<&str, f64> = post.iter().map(|(r, s)| (r.request_id.as_str(), *s)).collect();
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
    let mut g = report::GateDecision {
        promoted: false,
        reason: String::new(),
        base_spearman: base_s,
        new_spearman: new_s,
        margin: cfg.margin,
        test: match cfg.gate_test {
            GateTest::Williams => "williams".into(),
            GateTest::PairedBootstrap => "paired_bootstrap".into(),
        },
        statistic: None,
        p_value: None,
        alpha: Some(cfg.alpha),
    };
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
    };
    let gain = ns - bs;
    g.promoted = gain >= cfg.margin && significant;
    g.reason = if g.promoted {
        format!(
            "promoted: held-out Spearman {ns:.3} vs {bs:.3} (+{gain:.3} >= margin {}), significant under {} at {}",
            cfg.margin, g.test, cfg.alpha
        )
    } else if gain < cfg.margin {
        format!(
            "kept the base evaluator: held-out Spearman {ns:.3} vs {bs:.3}, gain {gain:+.3} below margin {}",
            cfg.margin
        )
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
