//! Plain-text renderings of the analysis results, for people at a terminal.

use crate::text::escape as esc;
use std::fmt::Write as _;
use std::path::Path;

use crate::analysis::{
    BiasReport, CalibrationSummary, CheckReport, CorrelateReport, Correlation, DisagreementReport, ImpactReport,
    MatrixAgreement, RaterAgreementReport,
};
use crate::stats::{self, Outcome};

fn num(x: Option<f64>) -> String {
    x.map_or("undefined".into(), |v| format!("{v:.4}"))
}

fn p(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| if v < 1e-4 { format!("{v:.2e}") } else { format!("{v:.4}") })
}

/// A figure with `digits` decimals, `-` where undefined.
pub(super) fn opt(x: Option<f64>, digits: usize) -> String {
    x.map_or("-".to_string(), |v| format!("{v:.digits$}"))
}

fn ci(x: Option<[f64; 2]>) -> String {
    x.map_or("-".into(), |[a, b]| format!("[{a:.3}, {b:.3}]"))
}

fn corr_lines(c: &Correlation, out: &mut String) {
    let _ = writeln!(out, "  n_samples    {}", c.n_samples);
    let rows = [
        ("pearson_r", c.pearson_r, c.pearson_p, c.pearson_ci, "pearson"),
        ("spearman_r", c.spearman_r, c.spearman_p, c.spearman_ci, "spearman"),
        ("kendall_tau", c.kendall_tau, c.kendall_p, None, "kendall"),
    ];
    for (name, r, pv, fci, key) in rows {
        match c.undefined.get(key) {
            Some(reason) => {
                let _ = writeln!(out, "  {name:<12} undefined ({reason})");
            }
            None => {
                let _ = writeln!(out, "  {name:<12} {}  p = {}  95% CI {}", num(r), p(pv), ci(fci));
            }
        }
    }
    if let Some(b) = &c.bootstrap {
        let _ = writeln!(
            out,
            "  bootstrap ({} resamples, seed {}): pearson {}  spearman {}  kendall {}",
            b.n_resamples,
            b.seed,
            ci(b.pearson_ci),
            ci(b.spearman_ci),
            ci(b.kendall_ci)
        );
    }
    if let Some(g) = &c.group_level {
        let _ = writeln!(
            out,
            "  group-level by {}: spearman {}  kendall {}  ({} of {} groups usable)",
            g.key,
            num(g.spearman_r),
            num(g.kendall_tau),
            g.groups_used,
            g.groups_total
        );
    }
}

/// `evalloop correlate`.
pub fn correlate(r: &CorrelateReport) -> String {
    let mut out = format!("evaluator {} vs human scores\n", esc(r.evaluator.as_deref().unwrap_or("(per evaluator)")));
    if let Some(reason) = r.overall.undefined.get("overall") {
        let _ = writeln!(out, "  overall: {reason}");
    } else {
        corr_lines(&r.overall, &mut out);
    }
    for g in &r.by {
        let _ = writeln!(out, "\n{}:", esc(g.group.as_deref().unwrap_or("-")));
        corr_lines(g, &mut out);
    }
    out.trim_end().to_string()
}

/// `evalloop calibration`.
pub fn calibration(s: &CalibrationSummary) -> String {
    let mut out = format!(
        "evaluator {} as P(good): {} labelled ({} good, {} bad; {} neutral left out)\n",
        esc(s.evaluator.as_deref().unwrap_or("-")),
        s.n_labelled,
        s.n_good,
        s.n_bad,
        s.n_neutral_dropped
    );
    let r = match &s.report {
        Outcome::Undefined(u) => return out + &format!("  undefined: {}", u.reason),
        Outcome::Defined(r) => r,
    };
    let o = |x: &Outcome<f64>| num(x.as_ref().copied());
    let _ = writeln!(out, "  ECE (equal-width, {} bins)  {:.4}", r.uniform.bins.len(), r.uniform.ece);
    let _ = writeln!(out, "  ECE (equal-mass, {} bins)   {:.4}", r.quantile.bins.len(), r.quantile.ece);
    let _ = writeln!(out, "  Brier score                 {:.4}", r.brier);
    let _ = writeln!(out, "  ROC AUC                     {}", o(&r.roc_auc));
    let t = &r.at_threshold;
    let _ = writeln!(
        out,
        "  at threshold {}: accuracy {}  precision {}  recall {}  F1 {}  Cohen's kappa {}",
        t.threshold,
        o(&t.accuracy),
        o(&t.precision),
        o(&t.recall),
        o(&t.f1),
        o(&t.cohen_kappa)
    );
    let _ = writeln!(
        out,
        "\n  reliability (equal-width)\n  {:>13}  {:>7}  {:>14}  {:>8}",
        "bin", "count", "mean predicted", "observed"
    );
    for b in &r.uniform.bins {
        let _ = writeln!(
            out,
            "  [{:.2}, {:.2}]  {:>7}  {:>14}  {:>8}",
            b.lower,
            b.upper,
            b.count,
            b.mean_predicted.map_or("-".into(), |v| format!("{v:.3}")),
            b.observed_frequency.map_or("-".into(), |v| format!("{v:.3}"))
        );
    }
    out.trim_end().to_string()
}

/// `evalloop disagreements`.
pub fn disagreements(r: &DisagreementReport, export: Option<&Path>) -> String {
    let mut out = format!(
        "evaluator {} (good when score > {}): {} labelled requests, {} disagreements (rate {})\n  evaluator good, people bad: {}\n  evaluator not good, people good: {}\n",
        esc(r.evaluator.as_deref().unwrap_or("-")),
        r.threshold,
        r.n_labelled,
        r.evaluator_good_human_bad + r.evaluator_bad_human_good,
        num(r.disagreement_rate),
        r.evaluator_good_human_bad,
        r.evaluator_bad_human_good
    );
    for (c, n) in &r.by_cohort {
        let _ = writeln!(out, "  cohort {}: {n}", esc(c));
    }
    for d in &r.rows {
        let cut = |s: &str| -> String {
            let one: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
            if one.chars().count() > 70 { one.chars().take(70).collect::<String>() + "..." } else { one }
        };
        let _ = writeln!(
            out,
            "\n{}  eval {:.3}  human {:.2} ({})  cohort {}\n  prompt: {}\n  output: {}",
            esc(&d.request_id),
            d.eval_score,
            d.human_score,
            if d.human_says_good { "good" } else { "bad" },
            esc(d.cohort.as_deref().unwrap_or("-")),
            esc(&cut(&d.prompt)),
            esc(&cut(&d.output))
        );
    }
    if let Some(p) = export {
        let _ = writeln!(out, "\nall disagreements written to {}", p.display());
    }
    out.trim_end().to_string()
}

/// `evalloop bias`.
pub fn bias(r: &BiasReport) -> String {
    let mut out = format!(
        "{:<16} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
        "cohort", "requests", "with fb", "rate", "explicit", "implicit", "positive", "mean ev"
    );
    for c in &r.cohorts {
        let _ = writeln!(
            out,
            "{:<16} {:>9} {:>9} {:>8.4} {:>8.4} {:>8.4} {:>8} {:>8}{}",
            esc(&c.cohort),
            c.requests,
            c.requests_with_feedback,
            c.feedback_rate,
            c.explicit_rate,
            c.implicit_rate,
            c.share_positive.map_or("-".into(), |v| format!("{v:.3}")),
            c.mean_eval_score.map_or("-".into(), |v| format!("{v:.3}")),
            if c.underrepresented { "  <- under-represented" } else { "" }
        );
    }
    let _ =
        write!(out, "median feedback rate {}; flagged below {} x median", num(r.median_feedback_rate), r.low_factor);
    out
}

/// A figure or "undefined: <reason>".
fn outcome<T>(x: &Outcome<T>, show: impl Fn(&T) -> String) -> String {
    match x {
        Outcome::Defined(v) => show(v),
        Outcome::Undefined(u) => format!("undefined: {}", u.reason),
    }
}

fn alpha_line(
    level: stats::agreement::MeasurementLevel,
    alpha: &Outcome<f64>,
    ci: &Outcome<stats::BootstrapCi>,
    out: &mut String,
) {
    let name = format!("alpha ({})", format!("{level:?}").to_lowercase());
    let interval = match (alpha, ci) {
        (Outcome::Undefined(_), _) => String::new(),
        (_, Outcome::Defined(c)) => format!("  95% CI [{:.3}, {:.3}]", c.lower, c.upper),
        (_, Outcome::Undefined(u)) => format!("  95% CI undefined: {}", u.reason),
    };
    let _ = writeln!(out, "  {name:<20} {}{interval}", outcome(alpha, |v| format!("{v:.4}")));
}

fn matrix_lines(title: &str, m: &MatrixAgreement, weighted: bool, out: &mut String) {
    let a = &m.agreement;
    let _ = writeln!(
        out,
        "\n{title}: {} requests rated by {} people; {} rated by two or more ({} raters, {} rater pairs sharing 2+ requests)",
        m.requests_rated, m.raters, a.items_used, a.raters_used, a.pairs_used
    );
    if a.items_used == 0 {
        let _ = writeln!(
            out,
            "  no request was rated by two or more people, so agreement between people cannot be measured"
        );
    }
    alpha_line(a.level, &a.alpha, &a.alpha_ci, out);
    for o in &m.other_levels {
        alpha_line(o.level, &o.alpha, &o.alpha_ci, out);
    }
    let kappa = |k: &Outcome<stats::agreement::PairwiseKappa>| {
        outcome(k, |k| {
            let left_out = if k.pairs_undefined > 0 {
                format!(", {} undefined left out", k.pairs_undefined)
            } else {
                String::new()
            };
            format!("{:.4}  (mean over {} pairs{left_out})", k.mean, k.pairs_used)
        })
    };
    let _ = writeln!(out, "  {:<20} {}", "Cohen's kappa", kappa(&a.kappa));
    if weighted {
        let _ = writeln!(out, "  {:<20} {}", "kappa (linear)", kappa(&a.kappa_linear));
        let _ = writeln!(out, "  {:<20} {}", "kappa (quadratic)", kappa(&a.kappa_quadratic));
    }
    let _ = writeln!(out, "  {:<20} {}", "percent agreement", outcome(&a.percent_agreement, |v| format!("{v:.4}")));
    let ceiling = outcome(&m.ceiling, |c| {
        let share = outcome(&c.share_of_ceiling, |s| format!("{:.0}% of the ceiling", s * 100.0));
        format!(
            "person vs the others {}, {} vs the others {} ({share}), {} vs one person {}  (Spearman, mean over {} raters)",
            outcome(&c.person_vs_others, |v| format!("{v:.3}")),
            c.evaluator.escape_debug(),
            outcome(&c.evaluator_vs_others, |v| format!("{v:.3}")),
            c.evaluator.escape_debug(),
            outcome(&c.evaluator_vs_person, |v| format!("{v:.3}")),
            c.raters_used
        )
    });
    let _ = writeln!(out, "  {:<20} {ceiling}", "human ceiling");
}

fn agreement_matrices(
    ratings: &MatrixAgreement,
    thumbs: Option<&MatrixAgreement>,
    dimension: Option<&str>,
    indent: &str,
    out: &mut String,
) {
    let title = match dimension {
        Some(d) => format!("{indent}ratings of {d} (1-5)"),
        None => format!("{indent}ratings (1-5)"),
    };
    matrix_lines(&title, ratings, true, out);
    if let Some(t) = thumbs {
        matrix_lines(&format!("{indent}thumbs (up = 1, down = 0)"), t, false, out);
    }
}

/// `evalloop agreement`.
pub fn agreement(r: &RaterAgreementReport) -> String {
    let mut out = format!(
        "agreement between people on {} requests ({} explicit events without a user_id skipped, {} replaced by the same user's later one)\n",
        r.requests, r.events_without_user, r.events_superseded
    );
    agreement_matrices(&r.ratings, r.thumbs.as_ref(), r.dimension.as_deref(), "", &mut out);
    for g in &r.groups {
        let by = match r.by {
            Some(crate::analysis::AgreementBy::UseCase) => "use case",
            _ => "cohort",
        };
        let _ = writeln!(
            out,
            "\n{by} {}: {} requests with feedback ({} events without a user_id skipped, {} replaced)",
            g.group.escape_debug(),
            g.requests_with_feedback,
            g.events_without_user,
            g.events_superseded
        );
        agreement_matrices(&g.ratings, g.thumbs.as_ref(), r.dimension.as_deref(), "  ", &mut out);
    }
    out.trim_end().to_string()
}

fn comparison(name: &str, c: &stats::ImpactComparison, significant: bool, out: &mut String) {
    let _ = writeln!(
        out,
        "{name}: before mean {:.4} (n {}), after mean {:.4} (n {}), change {:+.4}, improvement {}",
        c.mean_baseline,
        c.n_baseline,
        c.mean_treatment,
        c.n_treatment,
        c.diff_means,
        c.improvement_pct.map_or("undefined (zero or empty baseline)".into(), |v| format!("{v:+.2}%"))
    );
    if let Some(b) = c.diff_ci.as_ref() {
        let _ = writeln!(out, "  bootstrap 95% CI of the change [{:.4}, {:.4}]", b.lower, b.upper);
    }
    match c.welch.as_ref() {
        Some(w) => {
            let _ = writeln!(out, "  Welch's t {:.4} (df {:.1}), p = {}", w.statistic, w.df, p(Some(w.p_value)));
        }
        None => {
            let _ = writeln!(out, "  Welch's t undefined");
        }
    }
    if let Some(m) = c.mann_whitney.as_ref() {
        let _ = writeln!(out, "  Mann-Whitney U {:.1}, p = {}", m.u, p(Some(m.p_value)));
    }
    if let Some(d) = c.cohens_d.as_ref() {
        let _ = writeln!(out, "  Cohen's d {:.4}", d.d);
    }
    let _ = writeln!(out, "  significant: {significant}");
}

/// `evalloop impact`.
pub fn impact(r: &ImpactReport) -> String {
    let mut out = format!("impact of {} (alpha {})\n", r.split, r.alpha);
    comparison("evaluator scores", &r.eval_scores, r.eval_significant, &mut out);
    if let Some(h) = &r.human_scores {
        comparison("human scores", h, r.human_significant.unwrap_or(false), &mut out);
    }
    if let Some(a) = &r.agreement {
        let _ = writeln!(
            out,
            "agreement with people on {} shared requests: baseline spearman {}, candidate spearman {}",
            a.n_samples,
            num(a.baseline_spearman),
            num(a.candidate_spearman)
        );
        match a.williams.as_ref() {
            Some(w) => {
                let _ = writeln!(out, "  Williams' t {:.4} (df {}), p = {}", w.statistic, w.df, p(Some(w.p_value)));
            }
            None => {
                let _ = writeln!(out, "  Williams' test undefined");
            }
        }
    }
    match &r.ppi {
        Some(Outcome::Defined(c)) => {
            let _ = writeln!(
                out,
                "human score, PPI++ by cohort: {:.3} [{:.3}, {:.3}] -> {:.3} [{:.3}, {:.3}]; difference {:+.3}, 95% CI [{:.3}, {:.3}], z {:.3}, p = {}",
                c.before.estimate,
                c.before.lower,
                c.before.upper,
                c.after.estimate,
                c.after.lower,
                c.after.upper,
                c.difference,
                c.difference_ci[0],
                c.difference_ci[1],
                c.z,
                p(Some(c.p_value))
            );
        }
        Some(Outcome::Undefined(u)) => {
            let _ = writeln!(out, "human score, PPI++ by cohort: undefined ({})", u.reason);
        }
        None => {}
    }
    out.trim_end().to_string()
}

/// `evalloop check`.
pub fn check(r: &CheckReport) -> String {
    let mut out = format!("{:<36} {:>12} {:>12}  result\n", "check", "value", "required");
    for c in &r.checks {
        let _ = writeln!(
            out,
            "{:<36} {:>12} {:>12}  {}{}",
            c.name,
            c.value.map_or("undefined".into(), |v| format!("{v:.4}")),
            c.limit,
            if c.pass { "pass" } else { "FAIL" },
            c.reason.as_ref().map_or(String::new(), |r| format!(" ({r})"))
        );
    }
    let _ = write!(out, "{}", if r.pass { "PASS" } else { "FAIL" });
    out
}
