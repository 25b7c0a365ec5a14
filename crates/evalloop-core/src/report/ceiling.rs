//! The report's human-ceiling section: how well people agree with each other, and the base and
//! retrained evaluators beside that ceiling.

use serde::{Deserialize, Serialize};

use super::tables::{Table, num};
use crate::analysis::HumanCeiling;
use crate::stats::Outcome;

/// The human ceiling of one evaluator on one set of requests (see
/// `analysis::HumanCeiling`); every figure `None` with `reason` when undefined.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CeilingFigures {
    /// Raters whose correlations entered the means.
    pub raters_used: u64,
    /// Mean Spearman of one person with the mean of the others (leave-one-rater-out).
    pub person_vs_others: Option<f64>,
    /// Mean Spearman of the evaluator with the same means of the others.
    pub evaluator_vs_others: Option<f64>,
    /// Mean Spearman of the evaluator with each single person.
    pub evaluator_vs_person: Option<f64>,
    /// `evaluator_vs_others / person_vs_others`.
    pub share_of_ceiling: Option<f64>,
    /// Why the figures are undefined.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl CeilingFigures {
    /// The figures of a computed ceiling.
    pub fn of(c: &Outcome<HumanCeiling>) -> CeilingFigures {
        match c {
            Outcome::Defined(c) => CeilingFigures {
                raters_used: c.raters_used as u64,
                person_vs_others: c.person_vs_others.as_ref().copied(),
                evaluator_vs_others: c.evaluator_vs_others.as_ref().copied(),
                evaluator_vs_person: c.evaluator_vs_person.as_ref().copied(),
                share_of_ceiling: c.share_of_ceiling.as_ref().copied(),
                reason: match &c.share_of_ceiling {
                    Outcome::Undefined(u) => Some(u.reason.clone()),
                    Outcome::Defined(_) => None,
                },
            },
            Outcome::Undefined(u) => CeilingFigures { reason: Some(u.reason.clone()), ..Default::default() },
        }
    }
}

/// Agreement between people and the human ceiling, over the run's window and on the held-out
/// split, from the overall 1-5 ratings of the requests two or more people rated.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HumanCeilingSection {
    /// Krippendorff's alpha (ordinal) between people over the window; `None` when undefined.
    pub human_alpha: Option<f64>,
    /// Why `human_alpha` is undefined.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub human_alpha_reason: Option<String>,
    /// Requests rated by two or more people in the window.
    pub items: u64,
    /// People who rated those requests.
    pub raters: u64,
    /// The base evaluator against the ceiling over the whole window.
    pub window: CeilingFigures,
    /// The base evaluator on the held-out split.
    pub pre: CeilingFigures,
    /// The retrained evaluator on the held-out split.
    pub post: CeilingFigures,
    /// Set when the labels are too noisy to judge an evaluator by (`human_alpha` under
    /// `[run] min_human_alpha`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

fn pct(v: Option<f64>) -> String {
    num(v.map(|x| x * 100.0), 0) + if v.is_some_and(f64::is_finite) { "%" } else { "" }
}

/// The section's one-line summary of agreement between people (plain text).
pub(super) fn ceiling_summary(h: &HumanCeilingSection) -> String {
    match (h.human_alpha, &h.human_alpha_reason) {
        (Some(a), _) => format!(
            "Krippendorff's alpha (ordinal) between people: {a:.3}, on {} requests rated by two or more of {} people.",
            h.items, h.raters
        ),
        (None, why) => format!(
            "Agreement between people is undefined: {}.",
            why.as_deref().unwrap_or("no request was rated by two or more people")
        ),
    }
}

/// The ceiling table: the base evaluator over the window, and base and retrained on the
/// held-out split.
pub(super) fn ceiling_table(h: &HumanCeilingSection) -> Table {
    let mut t = Table::new(
        &["Spearman, mean over raters", "base, whole window", "pre (base), held-out", "post (retrained), held-out"],
        &[false, true, true, true],
    );
    let cols = [&h.window, &h.pre, &h.post];
    let mut row = |name: &str, f: &dyn Fn(&CeilingFigures) -> String| {
        let mut cells = vec![name.to_string()];
        cells.extend(cols.iter().map(|c| f(c)));
        t.row(cells);
    };
    row("person vs the others (the ceiling)", &|c| num(c.person_vs_others, 3));
    row("evaluator vs the others", &|c| num(c.evaluator_vs_others, 3));
    row("share of the ceiling", &|c| pct(c.share_of_ceiling));
    row("evaluator vs one person", &|c| num(c.evaluator_vs_person, 3));
    row("raters used", &|c| c.raters_used.to_string());
    row("undefined because", &|c| c.reason.clone().unwrap_or_default());
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{ReportData, render_html, render_markdown};

    fn section() -> HumanCeilingSection {
        let figures = |share: Option<f64>| CeilingFigures {
            raters_used: 12,
            person_vs_others: Some(0.6),
            evaluator_vs_others: share.map(|s| s * 0.6),
            evaluator_vs_person: Some(0.3),
            share_of_ceiling: share,
            reason: None,
        };
        HumanCeilingSection {
            human_alpha: Some(0.412),
            human_alpha_reason: None,
            items: 80,
            raters: 20,
            window: figures(Some(0.5)),
            pre: figures(Some(0.45)),
            post: CeilingFigures { reason: Some("no rater has 5 <or> more".into()), ..Default::default() },
            warning: Some("people agree <little>".into()),
        }
    }

    #[test]
    fn the_section_renders_beside_pre_and_post_and_round_trips() {
        let d = ReportData { human_ceiling: Some(section()), ..Default::default() };
        let md = render_markdown(&d);
        assert!(md.contains("### The human ceiling"), "{md}");
        assert!(md.contains("alpha (ordinal) between people: 0.412, on 80 requests rated by two or more of 20 people"));
        assert!(md.contains("| share of the ceiling | 50% | 45% | — |"), "{md}");
        assert!(md.contains("| person vs the others (the ceiling) | 0.600 | 0.600 | — |"), "{md}");
        let html = render_html(&d).unwrap();
        assert!(html.contains("<section id=\"human-ceiling\">"));
        assert!(html.contains("people agree &lt;little&gt;") && !html.contains("<little>"));
        assert!(html.contains("no rater has 5 &lt;or&gt; more"));
        let text = serde_json::to_string(&d).unwrap();
        let back: ReportData = serde_json::from_str(&text).unwrap();
        assert_eq!(back, d);
        // A report without the section has no such key and renders no such heading.
        let plain = ReportData::default();
        assert!(!serde_json::to_string(&plain).unwrap().contains("human_ceiling"));
        assert!(!render_markdown(&plain).contains("human ceiling"));
    }
}
