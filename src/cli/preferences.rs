//! `evalloop preferences`: the evaluator against people's preferences between two outputs,
//! people's agreement on the same pair, and each group's Bradley-Terry ranking.

use std::fmt::Write as _;

use super::{FilterArgs, Outcome, scope, to_json};
use crate::Result;
use crate::analysis::{self, PreferenceOptions, PreferenceReport};
use crate::config::Settings;
use crate::stats::Outcome as Stat;
use crate::stats::preference::PairwiseAccuracy;
use crate::store;
use crate::text::escape as esc;

#[derive(Debug, clap::Args)]
pub struct PreferencesArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Preferences on this human dimension (e.g. coherence) instead of the overall ones.
    #[arg(long)]
    pub dimension: Option<String>,
    /// The metadata key naming a request's prompt group (default: the prompt itself).
    #[arg(long, value_name = "KEY")]
    pub group_key: Option<String>,
    /// Bootstrap resamples for the 95% intervals (0: none).
    #[arg(long, default_value_t = 1000)]
    pub bootstrap: usize,
    /// Seed of the bootstrap.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Groups listed with their ranking in the text output (all of them are in --json).
    #[arg(long, default_value_t = 5)]
    pub show_groups: usize,
}

/// Runs the analysis on the configured store.
pub fn run(settings: &Settings, a: PreferencesArgs) -> Result<Outcome> {
    super::check_bootstrap(a.bootstrap)?;
    if let Some(d) = &a.dimension
        && !crate::record::is_dimension_name(d)
    {
        return Err(crate::Error::Input(format!("--dimension {d:?} is not a dimension name ([a-z0-9_]+)")));
    }
    let store = store::open(&settings.db)?;
    let opts =
        PreferenceOptions { bootstrap: a.bootstrap, seed: a.seed, dimension: a.dimension, group_key: a.group_key };
    let r = analysis::preferences(store.as_ref(), &scope(settings, &a.filter)?, &opts)?;
    Ok(Outcome::ok(render(&r, a.show_groups), to_json(&r)))
}

fn accuracy_line(name: &str, a: &Stat<PairwiseAccuracy>, out: &mut String) {
    match a {
        Stat::Defined(a) => {
            let ci = match &a.ci {
                Stat::Defined(c) => format!(", 95% CI [{:.3}, {:.3}]", c.lower, c.upper),
                Stat::Undefined(_) => String::new(),
            };
            let _ = writeln!(
                out,
                "{name}: {:.3}{ci} over {} decisive ({} ties left out, {} evaluator ties counted half)",
                a.accuracy, a.decisive, a.ties, a.evaluator_ties
            );
        }
        Stat::Undefined(u) => {
            let _ = writeln!(out, "{name}: undefined ({})", u.reason);
        }
    }
}

fn render(r: &PreferenceReport, show_groups: usize) -> String {
    let on = r.dimension.as_deref().map_or("overall".to_string(), |d| format!("dimension {d}"));
    let mut out = format!(
        "preferences ({on}) of evaluator {}: {} events, {} pairs, {} people ({} events left out: an output not \
         logged, filtered out or not scored)\n",
        esc(r.evaluator.as_deref().unwrap_or("-")),
        r.events,
        r.pairs,
        r.people,
        r.unscored
    );
    accuracy_line("evaluator vs the pairs' majority", &r.accuracy, &mut out);
    accuracy_line("evaluator vs single judgements", &r.accuracy_per_judgement, &mut out);
    let g = &r.agreement;
    match (&g.alpha, &g.percent_agreement) {
        (Stat::Defined(alpha), pa) => {
            let ci = match &g.alpha_ci {
                Stat::Defined(c) => format!(" [{:.3}, {:.3}]", c.lower, c.upper),
                Stat::Undefined(_) => String::new(),
            };
            let pa = pa.as_ref().map_or("undefined".to_string(), |p| format!("{p:.3}"));
            let _ = writeln!(
                out,
                "people on the same pair: Krippendorff's alpha (nominal) {alpha:.3}{ci}, percent agreement {pa}, \
                 {} pairs judged by 2+ people, {} people",
                g.items_used, g.raters_used
            );
        }
        (Stat::Undefined(u), _) => {
            let _ = writeln!(out, "people on the same pair: undefined ({})", u.reason);
        }
    }
    let mean = r.mean_group_spearman.as_ref().map_or("undefined".to_string(), |m| format!("{m:.3}"));
    let _ = writeln!(
        out,
        "Bradley-Terry rankings: {} groups fitted ({} undefined), mean Spearman of strength vs evaluator {mean}",
        r.groups.len(),
        r.groups_undefined.len()
    );
    for grp in r.groups.iter().take(show_groups) {
        let rho = grp.spearman.as_ref().map_or("undefined".to_string(), |m| format!("{m:.3}"));
        let _ = writeln!(out, "  group {} ({} votes, Spearman {rho}):", esc(&grp.group), grp.votes);
        for o in &grp.outputs {
            let _ = writeln!(out, "    {:>8.3}  eval {:.3}  {}", o.strength, o.eval_score, esc(&o.request_id));
        }
    }
    out.trim_end().to_string()
}
