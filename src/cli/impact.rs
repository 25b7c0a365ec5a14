//! `evalloop impact`: before/after comparison of a change.

use super::{FilterArgs, Outcome, render, scope, to_json};
use crate::analysis;
use crate::config::Settings;
use crate::store;
use crate::{Error, Result};

#[derive(Debug, clap::Args)]
pub struct ImpactArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Baseline: requests before this date (with --after).
    #[arg(long, requires = "after")]
    pub before: Option<String>,
    /// Treatment: requests at or after this date (with --before).
    #[arg(long, requires = "before")]
    pub after: Option<String>,
    /// Compare two evaluators on the same requests (with --candidate).
    #[arg(long, requires = "candidate")]
    pub baseline_evaluator: Option<String>,
    #[arg(long, requires = "baseline_evaluator")]
    pub candidate: Option<String>,
    /// KEY=BEFORE:AFTER, e.g. prompt_version=v3:v4.
    #[arg(long)]
    pub metadata: Option<String>,
    /// Significance level.
    #[arg(long, default_value_t = 0.05)]
    pub alpha: f64,
    /// Bootstrap resamples for the interval of the difference.
    #[arg(long, default_value_t = 2000)]
    pub bootstrap: usize,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

/// Compares the two sides the flags name.
pub fn run(settings: &Settings, a: ImpactArgs) -> Result<Outcome> {
    super::check_bootstrap(a.bootstrap)?;
    let split = analysis::ImpactSplit::from_options(
        a.before.as_deref(),
        a.after.as_deref(),
        a.baseline_evaluator.as_deref(),
        a.candidate.as_deref(),
        a.metadata.as_deref(),
    )?;
    if !(0.0..1.0).contains(&a.alpha) || a.alpha == 0.0 {
        return Err(Error::Input(format!("--alpha {} must be in (0, 1)", a.alpha)));
    }
    let store = store::open(&settings.db)?;
    let r = analysis::impact(store.as_ref(), &scope(settings, &a.filter)?, &split, a.alpha, a.bootstrap, a.seed)?;
    Ok(Outcome::ok(render::impact(&r), to_json(&r)))
}
