//! report.html: one self-contained page with its stylesheet, the tables and the charts.

use std::fmt::Write as _;

use super::charts::Charts;
use super::escape::html_escape;
use super::schema::ReportData;
use super::tables::{
    Table, UNDEFINED, calibration_table, cohort_split_table, cohort_table, disagreement_table, gate_headline,
    gate_table, headline_table, meta_table, reliability_table, split_table, training_table,
};
use crate::Result;

fn html_table(out: &mut String, class: &str, t: &Table) {
    let align = |i: usize| if t.numeric.get(i).copied().unwrap_or(false) { " class=\"num\"" } else { "" };
    let _ = write!(out, "<table class=\"{class}\"><thead><tr>");
    for (i, h) in t.header.iter().enumerate() {
        let _ = write!(out, "<th{}>{}</th>", align(i), html_escape(h));
    }
    out.push_str("</tr></thead><tbody>\n");
    for r in &t.rows {
        out.push_str("<tr>");
        for (i, c) in r.iter().enumerate() {
            let tag = if i == 0 { "th" } else { "td" };
            let _ = write!(out, "<{tag}{}>{}</{tag}>", align(i), html_escape(c));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table>\n");
}

const CSS: &str = r#"
:root { --pre: #4e79a7; --post: #f28e2b; --ok: #2e7d32; --bad: #c62828; --muted: #666; }
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222; background: #fafafa;
       margin: 0 auto; max-width: 1200px; padding: 16px 24px 48px; line-height: 1.4; }
h1 { font-size: 1.6rem; margin: 0.2em 0; }
h2 { font-size: 1.25rem; margin: 1.6em 0 0.5em; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
h3 { font-size: 1.05rem; margin: 1.2em 0 0.4em; }
.sub { color: var(--muted); margin: 0; }
.badge { display: inline-block; font-weight: 700; padding: 4px 12px; border-radius: 4px; color: #fff; }
.badge.promoted { background: var(--ok); } .badge.rejected { background: var(--bad); }
.badge.none { background: var(--muted); }
.decision p { margin: 6px 0; }
table { border-collapse: collapse; margin: 8px 0 16px; background: #fff; font-size: 0.92rem; }
th, td { border: 1px solid #ddd; padding: 4px 10px; text-align: left; vertical-align: top; }
thead th { background: #f0f0f0; }
tbody th { font-weight: 600; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(460px, 1fr)); gap: 16px; }
figure { margin: 0; background: #fff; border: 1px solid #ddd; border-radius: 4px; padding: 6px; }
figure.wide { grid-column: 1 / -1; }
figure svg { display: block; width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: 0.85rem; padding: 2px 6px; }
details { margin: 6px 0 12px; } summary { cursor: pointer; color: var(--muted); }
.tables { display: flex; flex-wrap: wrap; gap: 24px; }
footer { margin-top: 32px; color: var(--muted); font-size: 0.85rem; }
"#;

/// report.html: one self-contained page (inline CSS and SVG; no script, no external resource;
/// a Content-Security-Policy forbids both in case any user text escaped escaping).
pub fn render_html(d: &ReportData) -> Result<String> {
    let charts = Charts::render(d)?;
    let mut o = String::with_capacity(256 * 1024);
    let run = html_escape(&d.meta.run_id);
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>evalloop report: run {run}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
    );
    let _ = writeln!(
        o,
        "<header><h1>evalloop report</h1><p class=\"sub\">run <code>{run}</code> · {} · held-out split <code>{}</code> · \
         base <code>{}</code> → retrained <code>{}</code></p></header>",
        html_escape(&d.meta.created),
        html_escape(&d.meta.eval_split),
        html_escape(d.meta.base_evaluator.as_deref().unwrap_or(UNDEFINED)),
        html_escape(d.meta.new_evaluator.as_deref().unwrap_or(UNDEFINED)),
    );

    // Gate.
    let (badge, reason) = gate_headline(d.gate.as_ref());
    let class = match &d.gate {
        Some(g) if g.promoted => "promoted",
        Some(_) => "rejected",
        None => "none",
    };
    let _ = writeln!(
        o,
        "<section id=\"gate\" class=\"decision\"><h2>Gate decision</h2>\
         <p><span class=\"badge {class}\">{badge}</span></p><p>{}</p>",
        html_escape(&reason)
    );
    if let Some(g) = &d.gate {
        html_table(&mut o, "gate", &gate_table(g));
    }
    o.push_str("</section>\n");

    // Agreement.
    let _ = writeln!(
        o,
        "<section id=\"agreement\"><h2>Agreement with human scores (held-out <code>{}</code> split)</h2>",
        html_escape(&d.meta.eval_split)
    );
    html_table(&mut o, "headline", &headline_table(d));
    let _ = writeln!(o, "<div class=\"charts\">{}{}</div></section>", charts.scatter_pre, charts.scatter_post);

    // The human ceiling.
    if let Some(h) = &d.human_ceiling {
        o.push_str("<section id=\"human-ceiling\"><h2>The human ceiling</h2>\n");
        if let Some(w) = &h.warning {
            let _ = writeln!(o, "<p class=\"warning\"><strong>Warning</strong>: {}</p>", html_escape(w));
        }
        let _ = writeln!(o, "<p>{}</p>", html_escape(&super::ceiling::ceiling_summary(h)));
        html_table(&mut o, "ceiling", &super::ceiling::ceiling_table(h));
        o.push_str("</section>\n");
    }
    if let Some(p) = &d.preferences {
        o.push_str("<section id=\"preferences\"><h2>Preferences on held-out pairs</h2>\n");
        let _ = writeln!(
            o,
            "<p>How often each evaluator scores the output people preferred higher, over {} held-out pairs.</p>",
            p.pairs
        );
        html_table(&mut o, "preferences", &super::preferences::preference_table(p));
        o.push_str("</section>\n");
    }

    // Per cohort.
    o.push_str("<section id=\"cohorts\"><h2>Per cohort</h2>\n");
    html_table(&mut o, "cohorts", &cohort_table(d));
    let _ = writeln!(o, "<div class=\"charts\">{}</div>", charts.cohort_bars);
    if !d.disagreements_by_cohort.is_empty() {
        o.push_str("<h3>Disagreements with the human verdict</h3>\n");
        html_table(&mut o, "disagreements", &disagreement_table(d));
    }
    let _ = writeln!(o, "<div class=\"charts\">{}</div></section>", charts.disagreements);

    // Calibration.
    o.push_str("<section id=\"calibration\"><h2>Calibration</h2>\n");
    html_table(&mut o, "calibration", &calibration_table(d));
    let _ = writeln!(o, "<div class=\"charts\">{}{}</div>", charts.reliability_pre, charts.reliability_post);
    o.push_str("<details><summary>Reliability bins</summary><div class=\"tables\">");
    for (side, c) in [("pre", &d.calibration.pre), ("post", &d.calibration.post)] {
        let _ = write!(o, "<div><h3>{side}</h3>");
        html_table(&mut o, "reliability", &reliability_table(c));
        o.push_str("</div>");
    }
    o.push_str("</div></details></section>\n");

    // Training.
    o.push_str("<section id=\"training\"><h2>Training</h2>\n");
    match &d.training {
        Some(tr) => html_table(&mut o, "training", &training_table(tr)),
        None => o.push_str("<p>Training was skipped in this run.</p>\n"),
    }
    let _ = writeln!(o, "<div class=\"charts\">{}{}</div></section>", charts.loss, charts.val_spearman);

    // Over time (evalloop trend), when the run recorded it.
    if let Some(h) = &d.history {
        o.push_str("<section id=\"history\"><h2>Over time</h2>\n");
        let _ = writeln!(o, "<div class=\"charts\">{}</div></section>", super::history::charts(h)?);
    }

    // Dataset.
    o.push_str("<section id=\"dataset\"><h2>Dataset</h2>\n");
    if let (Some(a), Some(b)) = (&d.dataset.window_start, &d.dataset.window_end) {
        let _ = writeln!(o, "<p>Window: {} to {}</p>", html_escape(a), html_escape(b));
    }
    html_table(&mut o, "splits", &split_table(&d.dataset));
    if !d.dataset.per_cohort.is_empty() {
        html_table(&mut o, "cohort-splits", &cohort_split_table(&d.dataset));
    }
    o.push_str("</section>\n<footer>\n");
    html_table(&mut o, "meta", &meta_table(&d.meta));
    o.push_str("</footer>\n</body>\n</html>\n");
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::synthetic;

    #[test]
    fn html_is_self_contained() {
        let html = render_html(&synthetic()).unwrap();
        let lower = html.to_lowercase();
        for banned in ["<script", "<link", "src=\"http", "href=\"http", "@import", "url("] {
            assert!(!lower.contains(banned), "report.html contains {banned}");
        }
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("Content-Security-Policy"));
    }
}
