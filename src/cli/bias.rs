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
    Ok(Outcome::ok(render::bias(&r), to_json(&r)))
}
