//! report.md: the report's tables as GitHub-flavoured markdown.

use std::fmt::Write as _;

use super::escape::md_escape;
use super::schema::ReportData;
use super::tables::{
    Table, calibration_table, cohort_split_table, cohort_table, disagreement_table, gate_headline, gate_table,
    headline_table, meta_table, reliability_table, split_table, training_table,
};

fn md_table(out: &mut String, t: &Table) {
    let cell = |s: &str| if s.is_empty() { " ".to_string() } else { md_escape(s) };
    let _ = writeln!(out, "| {} |", t.header.iter().map(|h| cell(h)).collect::<Vec<_>>().join(" | "));
    let aligns: Vec<&str> = t.numeric.iter().map(|&n| if n { "---:" } else { "---" }).collect();
    let _ = writeln!(out, "|{}|", aligns.join("|"));
    for r in &t.rows {
        let _ = writeln!(out, "| {} |", r.iter().map(|c| cell(c)).collect::<Vec<_>>().join(" | "));
    }
    out.push('\n');
}

/// report.md: the report's tables as GitHub-flavoured markdown, for a pull-request comment.
pub fn render_markdown(d: &ReportData) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "## evalloop report: run {}\n", md_escape(&d.meta.run_id));
    let (badge, reason) = gate_headline(d.gate.as_ref());
    let _ = writeln!(o, "**{badge}**: {}\n", md_escape(&reason));
    let _ = writeln!(o, "### Agreement with human scores (held-out `{}` split)\n", d.meta.eval_split.replace('`', "'"));
    md_table(&mut o, &headline_table(d));
    if let Some(h) = &d.human_ceiling {
        o.push_str("### The human ceiling\n\n");
        if let Some(w) = &h.warning {
            let _ = writeln!(o, "**Warning**: {}\n", md_escape(w));
        }
        let _ = writeln!(o, "{}\n", md_escape(&super::ceiling::ceiling_summary(h)));
        md_table(&mut o, &super::ceiling::ceiling_table(h));
    }
    if let Some(p) = &d.preferences {
        o.push_str("### Preferences on held-out pairs\n\n");
        md_table(&mut o, &super::preferences::preference_table(p));
    }
    if let Some(g) = &d.gate {
        o.push_str("### Gate\n\n");
        md_table(&mut o, &gate_table(g));
    }
    if !d.pre.per_cohort.is_empty() || !d.post.per_cohort.is_empty() {
        o.push_str("### Per cohort\n\n");
        md_table(&mut o, &cohort_table(d));
    }
    if !d.disagreements_by_cohort.is_empty() {
        o.push_str("### Disagreements with the human verdict, by cohort\n\n");
        md_table(&mut o, &disagreement_table(d));
    }
    o.push_str("### Calibration\n\n");
    md_table(&mut o, &calibration_table(d));
    for (side, c) in [("pre", &d.calibration.pre), ("post", &d.calibration.post)] {
        if !c.reliability.is_empty() {
            let _ = writeln!(o, "<details><summary>Reliability bins, {side}</summary>\n");
            md_table(&mut o, &reliability_table(c));
            o.push_str("</details>\n\n");
        }
    }
    if !d.dataset.splits.is_empty() || !d.dataset.per_cohort.is_empty() {
        o.push_str("### Dataset\n\n");
        if let (Some(a), Some(b)) = (&d.dataset.window_start, &d.dataset.window_end) {
            let _ = writeln!(o, "Window: {} to {}\n", md_escape(a), md_escape(b));
        }
        md_table(&mut o, &split_table(&d.dataset));
        if !d.dataset.per_cohort.is_empty() {
            md_table(&mut o, &cohort_split_table(&d.dataset));
        }
    }
    if let Some(tr) = &d.training {
        o.push_str("### Training\n\n");
        md_table(&mut o, &training_table(tr));
    }
    o.push_str("<details><summary>Run</summary>\n\n");
    md_table(&mut o, &meta_table(&d.meta));
    o.push_str("</details>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::synthetic;

    /// Splits a markdown table row into cells, honouring `\|`.
    fn md_cells(line: &str) -> Vec<String> {
        let mut cells = vec![String::new()];
        let mut chars = line.trim().chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    let next = chars.next().unwrap_or(' ');
                    cells.last_mut().unwrap().extend(['\\', next]);
                }
                '|' => cells.push(String::new()),
                c => cells.last_mut().unwrap().push(c),
            }
        }
        // Drop the empty cells outside the leading and trailing pipes.
        cells[1..cells.len() - 1].iter().map(|c| c.trim().to_string()).collect()
    }

    #[test]
    fn markdown_tables_are_well_formed() {
        let md = render_markdown(&synthetic());
        let lines: Vec<&str> = md.lines().collect();
        let mut tables = 0;
        let mut i = 0;
        while i < lines.len() {
            if lines[i].starts_with('|') {
                tables += 1;
                let width = md_cells(lines[i]).len();
                assert!(lines[i + 1].starts_with("|---"), "alignment row after {}", lines[i]);
                assert_eq!(md_cells(lines[i + 1]).len(), width, "{}", lines[i + 1]);
                let mut j = i + 2;
                while j < lines.len() && lines[j].starts_with('|') {
                    assert_eq!(md_cells(lines[j]).len(), width, "row {:?} of table {:?}", lines[j], lines[i]);
                    j += 1;
                }
                assert!(j == lines.len() || lines[j].is_empty(), "a blank line ends table {:?}", lines[i]);
                i = j;
            } else {
                i += 1;
            }
        }
        // headline, gate, cohorts, disagreements, calibration, 2 reliability, splits, cohort splits,
        // training, meta.
        assert_eq!(tables, 11);
        assert!(md.contains("**PROMOTED**"));
        assert!(md.contains("| Spearman ρ | 0.431 | 0.612 | +0.181 |"), "{md}");
        assert!(md.contains("| Spearman ρ 95% CI | \\[0.351, 0.501\\] | \\[0.532, 0.682\\] |   |"));
        assert!(md.contains("| Spearman ρ p | 3.2e-36 | 1.1e-80 |   |"));
        assert!(md.contains("| tiny | 2 | — | — | — | — | — | — | — |"), "undefined stats are dashes");
        assert!(md.contains("| AUC | 0.702 | — | — |"));
    }
}
