//! The report's tables as plain text, and the formatting of their cells, shared by report.md
//! and report.html.

use super::schema::{
    Agreement, Calibration, Correlations, DatasetSummary, GateDecision, ReportData, ReportMeta, TrainingSummary,
};

/// A table as plain (unescaped) text; the markdown and HTML renderers escape it.
pub(super) struct Table {
    pub(super) header: Vec<String>,
    /// Right-align this column (numbers).
    pub(super) numeric: Vec<bool>,
    pub(super) rows: Vec<Vec<String>>,
}

impl Table {
    pub(super) fn new(header: &[&str], numeric: &[bool]) -> Table {
        Table { header: header.iter().map(|s| s.to_string()).collect(), numeric: numeric.to_vec(), rows: vec![] }
    }

    pub(super) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }
}

/// The text for an undefined statistic.
pub(super) const UNDEFINED: &str = "—";

/// `v` when it is a finite number; NaN and infinities are undefined.
pub(super) fn defined(v: Option<f64>) -> Option<f64> {
    v.filter(|x| x.is_finite())
}

pub(super) fn num(v: Option<f64>, digits: usize) -> String {
    defined(v).map_or(UNDEFINED.to_string(), |x| format!("{x:.digits$}"))
}

fn pval(v: Option<f64>) -> String {
    match defined(v) {
        None => UNDEFINED.to_string(),
        Some(p) if p != 0.0 && p < 1e-4 => format!("{p:.1e}"),
        Some(p) => format!("{p:.4}"),
    }
}

fn delta(pre: Option<f64>, post: Option<f64>, digits: usize) -> String {
    match (defined(pre), defined(post)) {
        (Some(a), Some(b)) => format!("{:+.digits$}", b - a),
        _ => UNDEFINED.to_string(),
    }
}

pub(super) fn ci(v: Option<[f64; 2]>) -> String {
    match v {
        Some([lo, hi]) if lo.is_finite() && hi.is_finite() => format!("[{lo:.3}, {hi:.3}]"),
        _ => UNDEFINED.to_string(),
    }
}

fn ci_label(a: &Agreement) -> String {
    match defined(a.ci_level) {
        Some(l) => format!("{}% CI", (l * 100.0).round()),
        None => "CI".to_string(),
    }
}

pub(super) fn headline_table(d: &ReportData) -> Table {
    let (pre, post) = (&d.pre.overall, &d.post.overall);
    let mut t = Table::new(&["", "pre (base)", "post (retrained)", "Δ"], &[false, true, true, true]);
    let ci_name = ci_label(&d.pre);
    let mut stat = |name: &str, a: Option<f64>, b: Option<f64>, a_ci, b_ci, a_p, b_p| {
        t.row(vec![name.to_string(), num(a, 3), num(b, 3), delta(a, b, 3)]);
        t.row(vec![format!("{name} {ci_name}"), ci(a_ci), ci(b_ci), String::new()]);
        t.row(vec![format!("{name} p"), pval(a_p), pval(b_p), String::new()]);
    };
    stat(
        "Spearman ρ",
        pre.spearman_r,
        post.spearman_r,
        pre.spearman_ci,
        post.spearman_ci,
        pre.spearman_p,
        post.spearman_p,
    );
    stat("Pearson r", pre.pearson_r, post.pearson_r, pre.pearson_ci, post.pearson_ci, pre.pearson_p, post.pearson_p);
    stat(
        "Kendall τ",
        pre.kendall_tau,
        post.kendall_tau,
        pre.kendall_ci,
        post.kendall_ci,
        pre.kendall_p,
        post.kendall_p,
    );
    let any_group = [pre, post].iter().any(|c| c.groups_used.is_some() || defined(c.group_mean_spearman).is_some());
    if any_group {
        let (a, b) = (pre.group_mean_spearman, post.group_mean_spearman);
        t.row(vec!["Group mean Spearman ρ".into(), num(a, 3), num(b, 3), delta(a, b, 3)]);
        let (a, b) = (pre.group_mean_kendall, post.group_mean_kendall);
        t.row(vec!["Group mean Kendall τ".into(), num(a, 3), num(b, 3), delta(a, b, 3)]);
        let g = |c: &Correlations| c.groups_used.map_or(UNDEFINED.to_string(), |g| g.to_string());
        t.row(vec!["Groups used".into(), g(pre), g(post), String::new()]);
    }
    t.row(vec!["n".into(), pre.n_samples.to_string(), post.n_samples.to_string(), String::new()]);
    t
}

pub(super) fn gate_table(g: &GateDecision) -> Table {
    let mut t = Table::new(&["", "value"], &[false, true]);
    t.row(vec!["Decision".into(), if g.promoted { "promoted" } else { "not promoted" }.into()]);
    let what = if g.metric == "group_spearman" { "group-level Spearman ρ" } else { "Spearman ρ" };
    t.row(vec![format!("Base {what}"), num(g.base_spearman, 3)]);
    t.row(vec![format!("New {what}"), num(g.new_spearman, 3)]);
    t.row(vec!["Improvement".into(), delta(g.base_spearman, g.new_spearman, 3)]);
    t.row(vec!["Required margin".into(), num(Some(g.margin), 3)]);
    t.row(vec!["Test".into(), if g.test.is_empty() { UNDEFINED.into() } else { g.test.clone() }]);
    t.row(vec!["Statistic".into(), num(g.statistic, 3)]);
    t.row(vec!["p-value".into(), pval(g.p_value)]);
    t.row(vec!["α".into(), num(g.alpha, 3)]);
    t
}

/// Cohort names of both sides, in first-seen order (pre's order, then post's extras).
fn cohort_union<'a>(a: impl Iterator<Item = &'a str>, b: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for c in a.chain(b) {
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

pub(super) fn per_cohort_rows(d: &ReportData) -> Vec<(&str, Option<&Correlations>, Option<&Correlations>)> {
    let names = cohort_union(
        d.pre.per_cohort.iter().map(|c| c.cohort.as_str()),
        d.post.per_cohort.iter().map(|c| c.cohort.as_str()),
    );
    names
        .into_iter()
        .map(|c| {
            let pre = d.pre.per_cohort.iter().find(|x| x.cohort == c).map(|x| &x.stats);
            let post = d.post.per_cohort.iter().find(|x| x.cohort == c).map(|x| &x.stats);
            (c, pre, post)
        })
        .collect()
}

pub(super) fn cohort_table(d: &ReportData) -> Table {
    let mut t = Table::new(
        &["cohort", "n", "ρ pre", "ρ post", "Δρ", "τ pre", "τ post", "r pre", "r post"],
        &[false, true, true, true, true, true, true, true, true],
    );
    for (c, pre, post) in per_cohort_rows(d) {
        let f = |s: Option<&Correlations>, g: fn(&Correlations) -> Option<f64>| s.and_then(g);
        let n = pre.or(post).map_or(0, |s| s.n_samples);
        let (rp, rq) = (f(pre, |s| s.spearman_r), f(post, |s| s.spearman_r));
        t.row(vec![
            c.to_string(),
            n.to_string(),
            num(rp, 3),
            num(rq, 3),
            delta(rp, rq, 3),
            num(f(pre, |s| s.kendall_tau), 3),
            num(f(post, |s| s.kendall_tau), 3),
            num(f(pre, |s| s.pearson_r), 3),
            num(f(post, |s| s.pearson_r), 3),
        ]);
    }
    t
}

pub(super) fn disagreement_table(d: &ReportData) -> Table {
    let mut t = Table::new(&["cohort", "n", "pre", "post", "Δ"], &[false, true, true, true, true]);
    for (c, x) in &d.disagreements_by_cohort {
        t.row(vec![
            c.clone(),
            x.n_samples.to_string(),
            x.pre.to_string(),
            x.post.to_string(),
            format!("{:+}", x.post as i64 - x.pre as i64),
        ]);
    }
    t
}

pub(super) fn calibration_table(d: &ReportData) -> Table {
    let (a, b) = (&d.calibration.pre, &d.calibration.post);
    let mut t = Table::new(&["", "pre (base)", "post (retrained)", "Δ"], &[false, true, true, true]);
    t.row(vec!["ECE (lower is better)".into(), num(a.ece, 3), num(b.ece, 3), delta(a.ece, b.ece, 3)]);
    t.row(vec!["Brier (lower is better)".into(), num(a.brier, 3), num(b.brier, 3), delta(a.brier, b.brier, 3)]);
    t.row(vec!["AUC".into(), num(a.auc, 3), num(b.auc, 3), delta(a.auc, b.auc, 3)]);
    t.row(vec!["n".into(), a.n_samples.to_string(), b.n_samples.to_string(), String::new()]);
    t
}

pub(super) fn reliability_table(c: &Calibration) -> Table {
    let mut t = Table::new(&["bin", "count", "mean predicted", "observed"], &[false, true, true, true]);
    for (i, b) in c.reliability.iter().enumerate() {
        // The last bin is closed: [0.9, 1.0].
        let close = if i + 1 == c.reliability.len() { ']' } else { ')' };
        t.row(vec![
            format!("[{:.2}, {:.2}{close}", b.lower, b.upper),
            b.count.to_string(),
            num(b.mean_predicted, 3),
            num(b.observed, 3),
        ]);
    }
    t
}

pub(super) fn split_table(d: &DatasetSummary) -> Table {
    let mut t = Table::new(
        &["split", "count", "effective size", "weight sum", "weight min", "weight mean", "weight max"],
        &[false, true, true, true, true, true, true],
    );
    for s in &d.splits {
        t.row(vec![
            s.split.clone(),
            s.count.to_string(),
            num(s.effective_size, 1),
            num(s.weight_sum, 2),
            num(s.weight_min, 3),
            num(s.weight_mean, 3),
            num(s.weight_max, 3),
        ]);
    }
    t
}

pub(super) fn cohort_split_table(d: &DatasetSummary) -> Table {
    let names = cohort_union(
        d.splits.iter().map(|s| s.split.as_str()),
        d.per_cohort.iter().flat_map(|c| c.splits.iter().map(|s| s.split.as_str())),
    );
    let mut header = vec!["cohort".to_string()];
    for n in &names {
        header.push(format!("{n} count"));
        header.push(format!("{n} eff. size"));
    }
    let mut t = Table {
        numeric: std::iter::once(false).chain(names.iter().flat_map(|_| [true, true])).collect(),
        header,
        rows: vec![],
    };
    for c in &d.per_cohort {
        let mut row = vec![c.cohort.clone()];
        for n in &names {
            match c.splits.iter().find(|s| s.split == *n) {
                Some(s) => {
                    row.push(s.count.to_string());
                    row.push(num(s.effective_size, 1));
                }
                None => row.extend([UNDEFINED.to_string(), UNDEFINED.to_string()]),
            }
        }
        t.row(row);
    }
    t
}

pub(super) fn training_table(tr: &TrainingSummary) -> Table {
    let mut t = Table::new(&["", "value"], &[false, true]);
    t.row(vec!["Base model".into(), tr.base_model.clone().unwrap_or_else(|| UNDEFINED.into())]);
    t.row(vec!["Epochs".into(), tr.epochs.to_string()]);
    t.row(vec!["Best step".into(), tr.best_step.map_or(UNDEFINED.into(), |s| s.to_string())]);
    t.row(vec!["Best validation Spearman ρ".into(), num(tr.best_val_spearman, 3)]);
    t.row(vec!["Throughput (examples/s)".into(), num(tr.examples_per_sec, 1)]);
    t.row(vec!["Wall time (s)".into(), num(tr.wall_secs, 1)]);
    if let Some(sel) = &tr.selection {
        t.row(vec!["Model selection".into(), sel.clone()]);
    }
    t
}

pub(super) fn meta_table(m: &ReportMeta) -> Table {
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| UNDEFINED.into());
    let mut t = Table::new(&["", "value"], &[false, false]);
    t.row(vec!["Run".into(), m.run_id.clone()]);
    t.row(vec!["Created".into(), m.created.clone()]);
    t.row(vec!["Base evaluator".into(), opt(&m.base_evaluator)]);
    t.row(vec!["Retrained evaluator".into(), opt(&m.new_evaluator)]);
    t.row(vec!["Held-out split".into(), m.eval_split.clone()]);
    t.row(vec!["Config hash".into(), opt(&m.config_hash)]);
    t.row(vec!["evalloop".into(), format!("{} (report schema v{})", m.evalloop_version, m.schema_version)]);
    t
}

pub(super) fn gate_headline(g: Option<&GateDecision>) -> (&'static str, String) {
    match g {
        Some(g) if g.promoted => ("PROMOTED", g.reason.clone()),
        Some(g) => ("NOT PROMOTED", g.reason.clone()),
        None => ("NO GATE DECISION", "the gate did not run for this report".to_string()),
    }
}
