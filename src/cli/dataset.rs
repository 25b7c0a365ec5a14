//! `evalloop dataset build`: labelled, cohort-weighted splits from the store.

use std::path::PathBuf;

use clap::Subcommand;

use super::{Outcome, to_json};
use crate::Result;
use crate::config::Settings;
use crate::store;

#[derive(Debug, Subcommand)]
pub enum DatasetWhat {
    /// Write train/validation/test.jsonl and dataset_card.json/.md into --out.
    Build {
        /// The output directory (created if needed).
        #[arg(long)]
        out: PathBuf,
    },
}

/// Builds the dataset the config's `[dataset]` describes.
pub fn run(settings: &Settings, what: DatasetWhat) -> Result<Outcome> {
    let DatasetWhat::Build { out } = what;
    let cfg: crate::dataset::DatasetConfig = settings.section("dataset", &settings.config.dataset)?;
    let store = store::open(&settings.db)?;
    let built = crate::dataset::build(store.as_ref(), &settings.policy, &cfg, &out)?;
    Ok(Outcome::ok(built.text, to_json(&built.card)))
}
