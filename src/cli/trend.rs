//! `evalloop trend`: the loop's figures per day or week and the changes between windows.

use std::fmt::Write as _;

use super::render::opt;
use super::{FilterArgs, Outcome, scope, to_json};
use crate::Result;
use crate::config::Settings;
use crate::store;
use crate::trend::{self, Every, Figure, TrendBy, TrendOptions, TrendReport};

#[derive(Debug, clap::Args)]
pub struct TrendArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Window length: a UTC day or an ISO week.
    #[arg(long, value_enum, default_value_t = Every::Week)]
    pub every: Every,
    /// One series per cohort or prompt version.
    #[arg(long, value_enum)]
    pub by: Option<TrendBy>,
    /// False-discovery rate of the change detection (Benjamini-Hochberg), in (0, 1).
    #[arg(long, default_value_t = 0.05)]
    pub fdr: f64,
}

/// Runs the trend on the configured store.
pub fn run(settings: &Settings, a: TrendArgs) -> Result<Outcome> {
    let store = store::open(&settings.db)?;
    let opts = TrendOptions { every: a.every, by: a.by, fdr: a.fdr };
    let r = trend::trend(store.as_ref(), &scope(settings, &a.filter)?, &opts)?;
    Ok(Outcome::ok(render(&r), to_json(&r)))
}

/// User text with control characters escaped.
fn plain(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

fn figure_name(f: Figure) -> &'static str {
    match f {
        Figure::HumanScore => "human score",
        Figure::Agreement => "agreement",
        Figure::EvalScore => "evaluator score",
        Figure::FeedbackRate => "feedback rate",
    }
}

/// The report as text for a terminal.
pub fn render(r: &TrendReport) -> String {
    let mut out = String::new();
    let every = match r.every {
        Every::Day => "day",
        Every::Week => "week",
    };
    let _ = writeln!(out, "evaluator {}, per {every}", plain(&r.evaluator));
    for s in &r.series {
        if let Some(g) = &s.group {
            let _ = writeln!(out, "{}", g.as_deref().map_or("(none)".to_string(), plain));
        }
        let _ = writeln!(
            out,
            "  {:<10} {:>8} {:>8} {:>7} {:>7} {:>24} {:>7} {:>17}",
            "window", "requests", "labelled", "rate", "eval", "human score (PPI++)", "rho", "rho 95% CI"
        );
        for w in &s.windows {
            let human = w
                .human_score
                .map_or("-".to_string(), |h| format!("{:.3} [{:.3}, {:.3}]", h.estimate, h.lower, h.upper));
            let ci = w.agreement_ci.map_or("-".to_string(), |[a, b]| format!("[{a:.3}, {b:.3}]"));
            let _ = writeln!(
                out,
                "  {:<10} {:>8} {:>8} {:>7.3} {:>7.3} {:>24} {:>7} {:>17}",
                w.window,
                w.requests,
                w.labelled,
                w.feedback_rate,
                w.mean_eval_score,
                human,
                opt(w.agreement, 3),
                ci
            );
        }
    }
    let flagged: Vec<_> = r.flagged().collect();
    let _ = writeln!(
        out,
        "changes: {} tested, {} flagged at false-discovery rate {}",
        r.changes.len(),
        flagged.len(),
        r.fdr
    );
    let _ = writeln!(out, "  test: {}", r.test);
    for c in flagged {
        let group = c
            .group
            .as_ref()
            .map_or(String::new(), |g| format!("{}: ", g.as_deref().map_or("(none)".to_string(), plain)));
        let _ = writeln!(
            out,
            "  {group}{} {} -> {}: {:.3} -> {:.3} ({:+.3}, 95% CI [{:.3}, {:.3}]), p {:.2e}, q {:.2e}",
            figure_name(c.figure),
            c.from,
            c.to,
            c.before,
            c.after,
            c.size,
            c.size_ci[0],
            c.size_ci[1],
            c.p_value,
            c.q_value
        );
    }
    out
}
