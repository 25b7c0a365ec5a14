//! `evalloop check`: the CI gate on the config's `[thresholds]`.

use std::path::PathBuf;

use super::{FilterArgs, Outcome, render, scope, to_json};
use crate::analysis;
use crate::config::Settings;
use crate::store;
use crate::{Error, Result};

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Also write the results as JUnit XML (one test case per threshold).
    #[arg(long)]
    pub junit: Option<PathBuf>,
}

/// Runs the analysis on the configured store.
pub fn run(settings: &Settings, a: CheckArgs) -> Result<Outcome> {
    let t: analysis::Thresholds = settings.section("thresholds", &settings.config.thresholds)?;
    if settings.config.thresholds.is_none() {
        return Err(Error::Input("check needs --config FILE with a [thresholds] section".into()));
    }
    let store = store::open(&settings.db)?;
    let r = analysis::check(store.as_ref(), &scope(settings, &a.filter)?, &t)?;
    if let Some(p) = &a.junit {
        crate::atomic::write_atomic(p, analysis::junit_xml(&r).as_bytes())?;
    }
    Ok(Outcome { text: render::check(&r), json: to_json(&r), code: if r.pass { 0 } else { 1 } })
}
