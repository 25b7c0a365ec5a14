//! `evalloop calibration`: the evaluator score read as P(good).

use super::{FilterArgs, Outcome, render, scope, to_json};
use crate::analysis;
use crate::config::Settings;
use crate::store;
use crate::{Error, Result};

/// The most reliability bins: finer bins hold too few requests to say anything.
const MAX_BINS: usize = 10_000;

#[derive(Debug, clap::Args)]
pub struct CalibrationArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Bins for ECE and the reliability table (equal-width and equal-mass both reported).
    #[arg(long, default_value_t = 10)]
    pub bins: usize,
    /// The evaluator says good when its score is above this.
    #[arg(long, default_value_t = 0.7)]
    pub threshold: f64,
}

/// Runs the analysis on the configured store.
pub fn run(settings: &Settings, a: CalibrationArgs) -> Result<Outcome> {
    if a.bins == 0 || a.bins > MAX_BINS || !(0.0..=1.0).contains(&a.threshold) {
        return Err(Error::Input(format!("--bins must be 1 to {MAX_BINS} and --threshold within [0, 1]")));
    }
    let store = store::open(&settings.db)?;
    let opts = analysis::CalibrationOptions { bins: a.bins, threshold: a.threshold };
    let r = analysis::calibration(store.as_ref(), &scope(settings, &a.filter)?, &opts)?;
    Ok(Outcome::ok(render::calibration(&r), to_json(&r)))
}
