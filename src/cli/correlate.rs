//! `evalloop correlate`: how the evaluator's scores correlate with human scores.

use super::{FilterArgs, Outcome, render, scope, to_json};
use crate::Result;
use crate::analysis;
use crate::analysis::GroupBy;
use crate::config::Settings;
use crate::store;

#[derive(Debug, clap::Args)]
pub struct CorrelateArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Also report each cohort, evaluator or use case separately.
    #[arg(long, value_enum)]
    pub by: Option<GroupBy>,
    /// Percentile-bootstrap intervals with N resamples (0 = none).
    #[arg(long, default_value_t = 0)]
    pub bootstrap: usize,
    /// Seed of the bootstrap.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Group-level (summary-level) correlation over this metadata key (e.g. group_id).
    #[arg(long)]
    pub group_key: Option<String>,
}

/// Runs the analysis on the configured store.
pub fn run(settings: &Settings, a: CorrelateArgs) -> Result<Outcome> {
    super::check_bootstrap(a.bootstrap)?;
    let store = store::open(&settings.db)?;
    let opts =
        analysis::CorrelateOptions { by: a.by, bootstrap: a.bootstrap, seed: a.seed, group_key: a.group_key.clone() };
    let r = analysis::correlate(store.as_ref(), &scope(settings, &a.filter)?, &opts)?;
    Ok(Outcome::ok(render::correlate(&r), to_json(&r)))
}
