//! The report's preference section: the base and retrained evaluators' pairwise accuracy
//! against people's preferences on the held-out split's pairs.

use serde::{Deserialize, Serialize};

use super::tables::{Table, num};
use crate::stats::Outcome;
use crate::stats::preference::PairwiseAccuracy;

/// One evaluator's pairwise accuracy; `None` figures with `reason` when undefined.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PairwiseFigures {
    /// Share of the decisive pairs where the evaluator scores the preferred output higher.
    pub accuracy: Option<f64>,
    /// Lower end of the percentile bootstrap 95% interval over pairs.
    pub ci_lower: Option<f64>,
    /// Upper end of that interval.
    pub ci_upper: Option<f64>,
    /// Pairs the accuracy is over.
    pub pairs: u64,
    /// Why the figures are undefined.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl PairwiseFigures {
    /// The figures of a computed accuracy.
    pub fn of(a: &Outcome<PairwiseAccuracy>) -> PairwiseFigures {
        match a {
            Outcome::Defined(a) => {
                let ci = a.ci.as_ref();
                PairwiseFigures {
                    accuracy: Some(a.accuracy),
                    ci_lower: ci.map(|c| c.lower),
                    ci_upper: ci.map(|c| c.upper),
                    pairs: a.decisive as u64,
                    reason: None,
                }
            }
            Outcome::Undefined(u) => PairwiseFigures { reason: Some(u.reason.clone()), ..Default::default() },
        }
    }
}

/// People's preferences between two outputs on the held-out split (`pairs.jsonl`'s test pairs):
/// how often each evaluator scores the preferred output higher.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PreferenceSection {
    /// Held-out pairs with a decisive majority.
    pub pairs: u64,
    /// The base evaluator.
    pub pre: PairwiseFigures,
    /// The retrained evaluator.
    pub post: PairwiseFigures,
}

/// The section's table.
pub(super) fn preference_table(p: &PreferenceSection) -> Table {
    let mut t = Table::new(&["pairwise accuracy", "pre (base)", "post (retrained)"], &[false, true, true]);
    let ci = |f: &PairwiseFigures| match (f.ci_lower, f.ci_upper) {
        (Some(l), Some(u)) => format!("{l:.3} - {u:.3}"),
        _ => "-".into(),
    };
    t.row(vec!["accuracy".into(), num(p.pre.accuracy, 3), num(p.post.accuracy, 3)]);
    t.row(vec!["95% CI (bootstrap over pairs)".into(), ci(&p.pre), ci(&p.post)]);
    t.row(vec!["pairs".into(), p.pre.pairs.to_string(), p.post.pairs.to_string()]);
    t.row(vec![
        "undefined because".into(),
        p.pre.reason.clone().unwrap_or_default(),
        p.post.reason.clone().unwrap_or_default(),
    ]);
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{ReportData, render_html, render_markdown};

    #[test]
    fn the_section_renders_in_both_reports_and_is_absent_without_pairs() {
        let s = PreferenceSection {
            pairs: 12,
            pre: PairwiseFigures {
                accuracy: Some(0.5),
                ci_lower: Some(0.25),
                ci_upper: Some(0.75),
                pairs: 12,
                reason: None,
            },
            post: PairwiseFigures {
                accuracy: Some(0.75),
                ci_lower: Some(0.5),
                ci_upper: Some(0.92),
                pairs: 12,
                reason: None,
            },
        };
        let d = ReportData { preferences: Some(s), ..Default::default() };
        let md = render_markdown(&d);
        assert!(md.contains("### Preferences on held-out pairs") && md.contains("0.750"), "{md}");
        let html = render_html(&d).unwrap();
        assert!(html.contains("id=\"preferences\"") && html.contains("0.500 - 0.920"));
        let plain = ReportData::default();
        assert!(!render_markdown(&plain).contains("Preferences on held-out pairs"));
        assert!(!serde_json::to_string(&plain).unwrap().contains("\"preferences\""));
    }
}
