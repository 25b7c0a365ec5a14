//! `evalloop disagreements`: requests where the evaluator and people disagree.

use std::path::PathBuf;

use super::{FilterArgs, Outcome, render, scope, to_json};
use crate::Result;
use crate::analysis;
use crate::config::Settings;
use crate::store;

#[derive(Debug, clap::Args)]
pub struct DisagreementsArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// The evaluator says good when its score is above this.
    #[arg(long, default_value_t = 0.7)]
    pub threshold: f64,
    /// Rows to show.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Write every disagreement (with prompt and output) to this JSON Lines file.
    #[arg(long)]
    pub export: Option<PathBuf>,
}

/// Runs the analysis on the configured store.
pub fn run(settings: &Settings, a: DisagreementsArgs) -> Result<Outcome> {
    super::check_range("threshold", a.threshold, 0.0, 1.0)?;
    let store = store::open(&settings.db)?;
    let r = analysis::disagreements(
        store.as_ref(),
        &scope(settings, &a.filter)?,
        a.threshold,
        a.limit,
        a.export.as_deref(),
    )?;
    Ok(Outcome::ok(render::disagreements(&r, a.export.as_deref()), to_json(&r)))
}
