//! The report's history: the evaluator's agreement with people and the mean human score by
//! week, with their 95% intervals and the promotions marked, as report.html's time-series plots
//! and report.md's table.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::charts::{FONT, GRAY, LIGHT, POST, PRE, PlotResult, no_data, padded_range, svg_figure};
use super::schema::{History, HistoryPoint};
use super::tables::{Table, ci, num};
use crate::Result;

/// The `data-chart` ids of the history charts, in page order.
pub const HISTORY_CHART_IDS: [&str; 2] = ["agreement-by-week", "human-score-by-week"];

/// Both charts, as `<figure>`s.
pub(super) fn charts(h: &History) -> Result<String> {
    let agreement = week_chart(
        h,
        HISTORY_CHART_IDS[0],
        &format!("Agreement of {} with people, by week", short(&h.evaluator)),
        "Spearman ρ",
        PRE,
        |p| p.agreement.map(|v| (v, p.agreement_ci)),
    )?;
    let human =
        week_chart(h, HISTORY_CHART_IDS[1], "Mean human score by week (PPI++)", "mean human score", POST, |p| {
            p.human_score.map(|v| (v, p.human_score_ci))
        })?;
    Ok(format!("{agreement}{human}"))
}

/// report.md's table of the history: one row per week, the promotions of the week by run id.
pub(super) fn history_table(h: &History) -> Table {
    let mut t = Table::new(
        &["week", "requests", "labelled", "Spearman ρ", "95% CI", "mean human score", "95% CI", "promoted"],
        &[false, true, true, true, false, true, false, false],
    );
    for p in &h.points {
        let promoted: Vec<&str> =
            h.promotions.iter().filter(|pr| pr.week == p.week).map(|pr| pr.run_id.as_str()).collect();
        t.row(vec![
            p.week.clone(),
            p.requests.to_string(),
            p.labelled.to_string(),
            num(p.agreement, 3),
            ci(p.agreement_ci),
            num(p.human_score, 3),
            ci(p.human_score_ci),
            promoted.join(", "),
        ]);
    }
    t
}

/// An evaluator name for a title: control characters dropped, at most 40 characters.
fn short(s: &str) -> String {
    let s: String = s.chars().filter(|c| !c.is_control()).collect();
    if s.chars().count() <= 40 { s } else { format!("{}…", s.chars().take(39).collect::<String>()) }
}

type Value = Option<(f64, Option<[f64; 2]>)>;

/// One figure over the weeks: a line through the defined values, a vertical bar for each
/// interval, and a dashed line at each promotion.
fn week_chart(
    h: &History,
    id: &str,
    title: &str,
    y_desc: &str,
    color: RGBColor,
    value: impl Fn(&HistoryPoint) -> Value,
) -> Result<String> {
    let pts: Vec<(f64, f64, Option<[f64; 2]>)> =
        h.points.iter().enumerate().filter_map(|(i, p)| value(p).map(|(v, ci)| (i as f64, v, ci))).collect();
    let y = padded_range(
        pts.iter().flat_map(|(_, v, ci)| [Some(*v), ci.map(|c| c[0]), ci.map(|c| c[1])]).flatten(),
        (0.0, 1.0),
    );
    let n = h.points.len().max(1) as f64;
    let weeks: Vec<String> = h.points.iter().map(|p| p.week.clone()).collect();
    let promotions: Vec<(f64, String)> = h
        .promotions
        .iter()
        .filter_map(|pr| weeks.iter().position(|w| *w == pr.week).map(|i| (i as f64, pr.run_id.clone())))
        .collect();
    svg_figure(id, title, (580, 400), false, |root| -> PlotResult {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 17))
            .margin(12)
            .x_label_area_size(46)
            .y_label_area_size(56)
            .build_cartesian_2d(-0.5..n - 0.5, y.0..y.1)?;
        chart
            .configure_mesh()
            .light_line_style(LIGHT.mix(0.5))
            .bold_line_style(LIGHT)
            .x_labels(weeks.len().clamp(1, 12))
            .x_label_formatter(&|v| {
                let i = v.round();
                if (v - i).abs() < 1e-6 && i >= 0.0 {
                    weeks.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .x_desc("ISO week")
            .y_desc(y_desc)
            .label_style((FONT, 11))
            .axis_desc_style((FONT, 13))
            .draw()?;
        if pts.is_empty() {
            return no_data(root, "no week with enough labels");
        }
        for (x, run) in &promotions {
            chart.draw_series(DashedLineSeries::new([(*x, y.0), (*x, y.1)], 5, 4, GRAY.stroke_width(1)))?;
            let style = TextStyle::from((FONT, 11).into_font()).color(&GRAY).pos(Pos::new(HPos::Left, VPos::Top));
            let label = format!("promoted {}", run.chars().take(16).collect::<String>());
            chart.draw_series(std::iter::once(Text::new(label, (*x, y.1), style)))?;
        }
        let bar = color.mix(0.6).stroke_width(1);
        chart.draw_series(
            pts.iter().filter_map(|(x, _, ci)| ci.map(|[lo, hi]| PathElement::new([(*x, lo), (*x, hi)], bar))),
        )?;
        for end in [0, 1] {
            chart.draw_series(pts.iter().filter_map(|(x, _, ci)| {
                ci.map(|c| PathElement::new([(*x - 0.08, c[end]), (*x + 0.08, c[end])], bar))
            }))?;
        }
        chart
            .draw_series(LineSeries::new(pts.iter().map(|(x, v, _)| (*x, *v)), color.stroke_width(2)).point_size(3))?
            .label(y_desc.to_string())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 14, y)], color.stroke_width(2)));
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::schema::Promotion;

    fn history() -> History {
        let point = |w: usize, a: Option<f64>| HistoryPoint {
            week: format!("2026-W{:02}", 45 + w),
            requests: 100,
            labelled: 20,
            agreement: a,
            agreement_ci: a.map(|v| [v - 0.2, v + 0.1]),
            human_score: Some(3.0 + 0.1 * w as f64),
            human_score_ci: Some([2.8, 3.5]),
        };
        History {
            evaluator: "judge\u{1b}[31m".into(),
            points: vec![point(0, Some(0.4)), point(1, None), point(2, Some(0.5))],
            promotions: vec![
                Promotion { week: "2026-W46".into(), run_id: "20261110T120000Z-1a2b".into() },
                Promotion { week: "2025-W01".into(), run_id: "before-the-window".into() },
            ],
        }
    }

    #[test]
    fn both_charts_with_points_intervals_and_the_promotion_in_the_window() {
        let svg = charts(&history()).unwrap();
        for id in HISTORY_CHART_IDS {
            assert!(svg.contains(&format!("data-chart=\"{id}\"")), "{id}");
        }
        assert!(svg.contains("2026-W45") && svg.contains("2026-W47"));
        assert_eq!(svg.matches("promoted 20261110T120000Z").count(), 2);
        assert!(!svg.contains("before-the-window"));
        assert!(!svg.contains('\u{1b}'), "control characters are dropped from the title");
    }

    #[test]
    fn no_defined_point_says_so() {
        let mut h = history();
        for p in &mut h.points {
            p.agreement = None;
        }
        let svg = charts(&h).unwrap();
        assert!(svg.contains("no week with enough labels"));
    }

    #[test]
    fn report_md_has_the_history_table_with_promotions() {
        let mut d = crate::report::tests::synthetic();
        d.history = Some(history());
        let md = crate::report::render_markdown(&d);
        assert!(md.contains("### Over time"), "{md}");
        assert!(!md.contains('\u{1b}'), "{md}");
        assert!(
            md.contains("| 2026-W45 | 100 | 20 | 0.400 | \\[0.200, 0.500\\] | 3.000 | \\[2.800, 3.500\\] |   |"),
            "{md}"
        );
        assert!(
            md.contains("| 2026-W46 | 100 | 20 | — | — | 3.100 | \\[2.800, 3.500\\] | 20261110T120000Z-1a2b |"),
            "{md}"
        );
        assert!(!md.contains("before-the-window"), "a promotion outside the weeks is not a row");
        let without = crate::report::render_markdown(&crate::report::tests::synthetic());
        assert!(!without.contains("### Over time"));
    }

    #[test]
    fn a_report_with_history_round_trips_and_renders_it() {
        let mut d = crate::report::tests::synthetic();
        d.history = Some(history());
        let json = serde_json::to_string(&d).unwrap();
        let back: crate::report::ReportData = serde_json::from_str(&json).unwrap();
        assert_eq!(back, d);
        let html = crate::report::render_html(&d).unwrap();
        assert!(html.contains("<section id=\"history\">"));
        let without = crate::report::render_html(&crate::report::tests::synthetic()).unwrap();
        assert!(!without.contains("id=\"history\""));
    }
}
