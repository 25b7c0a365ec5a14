//! `evalloop bias`: who leaves feedback, per cohort.

use super::{FilterArgs, Outcome, render, scope, to_json};
use crate::Result;
use crate::analysis;
use crate::config::Settings;
use crate::store;

#[derive(Debug, clap::Args)]
pub struct BiasArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Flag cohorts whose feedback rate is below this factor times the median rate.
    #[arg(long, default_value_t = 0.5)]
    pub low_factor: f64,
}

/// Runs the analysis on the configured store.
pub fn run(settings: &Settings, a: BiasArgs) -> Result<Outcome> {
    super::check_range("low-factor", a.low_factor, 0.0, 1.0e6)?;
    let store = store::open(&settings.db)?;
    let r = analysis::bias(store.as_ref(), &scope(settings, &a.filter)?, a.low_factor)?;
    // Labels people gave through annotation queues are chosen, not volunteered: say how many.
    let from_queues = crate::queue::provenance(store.as_ref())?;
    let mut text = render::bias(&r);
    let mut json = to_json(&r);
    if from_queues.labels > 0 {
        text.push_str(&format!(
            "\nfrom annotation queues: {} label(s) on {} request(s) ({}); their selection probabilities are in \
             `evalloop queue export`",
            from_queues.labels,
            from_queues.requests,
            from_queues
                .queues
                .iter()
                .filter(|q| q.labels > 0)
                .map(|q| format!("{} {}", crate::text::escape(&q.queue), q.labels))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    json["from_queues"] = to_json(&from_queues);
    Ok(Outcome::ok(text, json))
}
