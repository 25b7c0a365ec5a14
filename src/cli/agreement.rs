//! `evalloop agreement`: do people agree with each other on the same requests?

use super::{FilterArgs, Outcome, render, scope, to_json};
use crate::Result;
use crate::analysis::{self, AgreementBy, AgreementLevel, RaterAgreementOptions};
use crate::config::Settings;
use crate::store;

#[derive(Debug, clap::Args)]
pub struct AgreementArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Level of measurement of Krippendorff's alpha (auto: nominal for thumbs, ordinal and
    /// interval for 1-5 ratings).
    #[arg(long, value_enum, default_value_t = AgreementLevel::Auto)]
    pub level: AgreementLevel,
    /// Bootstrap resamples for the 95% interval of alpha (0: no interval).
    #[arg(long, default_value_t = 1000)]
    pub bootstrap: usize,
    /// Seed of the bootstrap.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Agreement on the ratings of this human dimension (e.g. coherence) instead of the overall
    /// ratings and thumbs.
    #[arg(long)]
    pub dimension: Option<String>,
    /// Also report each cohort or use case on its own.
    #[arg(long, value_enum)]
    pub by: Option<AgreementBy>,
}

/// Runs the analysis on the configured store.
pub fn run(settings: &Settings, a: AgreementArgs) -> Result<Outcome> {
    super::check_bootstrap(a.bootstrap)?;
    let store = store::open(&settings.db)?;
    if let Some(d) = &a.dimension
        && !crate::record::is_dimension_name(d)
    {
        return Err(crate::Error::Input(format!("--dimension {d:?} is not a dimension name ([a-z0-9_]+)")));
    }
    let opts = RaterAgreementOptions {
        level: a.level,
        bootstrap: a.bootstrap,
        seed: a.seed,
        dimension: a.dimension,
        by: a.by,
    };
    let r = analysis::rater_agreement(store.as_ref(), &scope(settings, &a.filter)?, &opts)?;
    Ok(Outcome::ok(render::agreement(&r), to_json(&r)))
}
