//! `evalloop estimate`: the mean human score or pass rate, from the labels alone and
//! prediction-powered, with intervals.

use std::fmt::Write as _;

use super::{FilterArgs, Outcome, scope, to_json};
use crate::Result;
use crate::config::Settings;
use crate::estimate::{self, CellEstimate, EstimateBy, EstimateOptions, EstimateReport, Metric};
use crate::stats::ppi::{IntervalKind, MeanEstimate};
use crate::store;

#[derive(Debug, clap::Args)]
pub struct EstimateArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// What to estimate: the mean human score (1-5) or the pass rate (human score >= good_min).
    #[arg(long, value_enum, default_value_t = Metric::MeanHumanScore)]
    pub metric: Metric,
    /// Also one estimate per cohort, prompt version, use case or ISO week.
    #[arg(long, value_enum)]
    pub by: Option<EstimateBy>,
    /// Two-sided level of the intervals, in (0, 1).
    #[arg(long, default_value_t = 0.95)]
    pub level: f64,
    /// The asymptotic normal interval of ppi-python (ddof 0, z) instead of the small-sample
    /// one (ddof 1, Student t).
    #[arg(long)]
    pub normal_interval: bool,
}

/// Runs the estimate on the configured store.
pub fn run(settings: &Settings, a: EstimateArgs) -> Result<Outcome> {
    let store = store::open(&settings.db)?;
    let opts = EstimateOptions {
        metric: a.metric,
        by: a.by,
        level: a.level,
        interval: if a.normal_interval { IntervalKind::Normal } else { IntervalKind::SmallSample },
    };
    let r = estimate::estimate(store.as_ref(), &scope(settings, &a.filter)?, &opts)?;
    Ok(Outcome::ok(render(&r), to_json(&r)))
}

/// User text (cohort, prompt version, use case, evaluator names) with control characters
/// escaped, so that it cannot move the cursor or recolour a terminal.
fn plain(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

fn group_name(g: &Option<String>) -> String {
    g.as_deref().map_or("(none)".to_string(), plain)
}

fn interval(e: &Option<MeanEstimate>, why: Option<&String>) -> String {
    match (e, why) {
        (Some(e), _) => format!("{:.3}  [{:.3}, {:.3}]  se {:.4}", e.estimate, e.lower, e.upper, e.std_error),
        (None, Some(why)) => format!("undefined ({})", plain(why)),
        (None, None) => "undefined".to_string(),
    }
}

fn cell_lines(c: &CellEstimate, level: f64, out: &mut String) {
    let pct = (level * 100.0).round();
    let labelled_mean = c.labelled_mean.map_or("-".to_string(), |m| format!("{m:.3}"));
    let _ = writeln!(out, "  requests {}  labelled {}  plain mean of labels {labelled_mean}", c.requests, c.labelled);
    let _ = writeln!(out, "  classical {pct}%  {}", interval(&c.classical, c.undefined.get("classical")));
    let _ = writeln!(out, "  PPI++     {pct}%  {}", interval(&c.ppi, c.undefined.get("ppi")));
    if let (Some(eff), Some(gain)) = (c.effective_labels, c.labels_gained) {
        let _ = writeln!(out, "  effective labels {eff:.1} ({gain:+.1} from the evaluator)");
    }
    if c.share_covered > 0.0 && c.strata.iter().any(|s| s.left_out.is_some()) {
        let _ = writeln!(
            out,
            "  covers {:.1}% of the requests: cohorts with fewer than 2 labels are left out",
            100.0 * c.share_covered
        );
    }
    let _ = writeln!(
        out,
        "  {:<16} {:>8} {:>8} {:>10} {:>8} {:>7}",
        "cohort", "requests", "labelled", "P(label)", "weight", "lambda"
    );
    for s in &c.strata {
        let weight = s.weight.map_or("-".to_string(), |w| format!("{w:.2}"));
        let lambda = s.lambda.map_or("-".to_string(), |l| format!("{l:.3}"));
        let note = s.left_out.as_deref().map_or(String::new(), |why| format!("  left out: {}", plain(why)));
        let _ = writeln!(
            out,
            "  {:<16} {:>8} {:>8} {:>10.4} {:>8} {:>7}{note}",
            group_name(&s.cohort),
            s.requests,
            s.labelled,
            s.labelling_probability,
            weight,
            lambda
        );
    }
}

/// The report as text for a terminal.
pub fn render(r: &EstimateReport) -> String {
    let mut out = String::new();
    let metric = match r.metric {
        Metric::MeanHumanScore => "mean human score",
        Metric::PassRate => "pass rate",
    };
    let _ = writeln!(out, "{metric}, evaluator {} (prediction: {})", plain(&r.evaluator), r.prediction);
    let kind = match r.interval {
        IntervalKind::SmallSample => "Student t, Welch-Satterthwaite df",
        IntervalKind::Normal => "normal",
    };
    let _ = writeln!(out, "stratified by cohort; {kind} intervals");
    let _ = writeln!(out, "overall");
    cell_lines(&r.overall, r.level, &mut out);
    for g in &r.groups {
        let by = match r.by {
            Some(EstimateBy::Cohort) => "cohort",
            Some(EstimateBy::PromptVersion) => "prompt_version",
            Some(EstimateBy::UseCase) => "use_case",
            Some(EstimateBy::Week) => "week",
            None => "group",
        };
        let _ = writeln!(out, "{by} {}", group_name(&g.group.clone().flatten()));
        cell_lines(g, r.level, &mut out);
    }
    if r.queue_labels_left_out > 0 {
        let _ = writeln!(
            out,
            "{} labels from annotation queues are left out above (not random within a cohort); per queue, \
             weighted by its selection probabilities:",
            r.queue_labels_left_out
        );
    }
    let pct = (r.level * 100.0).round();
    for q in &r.queues {
        let range = match (q.probability_min, q.probability_max) {
            (Some(lo), Some(hi)) => format!("P(selected) {lo:.4}-{hi:.4}"),
            _ => "no labelled request".to_string(),
        };
        let _ = writeln!(
            out,
            "queue {} ({}): pool {}, labelled {}, {range}",
            plain(&q.queue),
            q.strategy,
            q.pool,
            q.labelled
        );
        let _ = writeln!(out, "  classical {pct}%  {}", interval(&q.classical, q.undefined.get("classical")));
        let _ = writeln!(out, "  PPI       {pct}%  {}", interval(&q.ppi, q.undefined.get("ppi")));
    }
    out
}
