//! `evalloop simulate`: realistic logs and biased feedback from human judgements.

use std::path::PathBuf;

use super::Outcome;
use crate::Result;
use crate::config::Settings;

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// A human-judgement file (JSON Lines: dataset, item_id, group_id, system, source, reference, output, human).
    #[arg(long)]
    pub judgements: PathBuf,
    /// The human dimension to use as the true score (e.g. coherence).
    #[arg(long)]
    pub dimension: String,
    /// The output directory (created if needed).
    #[arg(long)]
    pub out: PathBuf,
    /// Seed of every random draw (default: [simulate] seed, else 7).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Keep this many whole groups out of logs and feedback (default: [simulate] holdout_groups, else 0).
    #[arg(long)]
    pub holdout_groups: Option<usize>,
    /// Extra human dimensions to rate alongside --dimension, comma-separated (e.g.
    /// relevance,fluency): one dimension rating event each per rated request (default:
    /// [simulate] dimensions, else none).
    #[arg(long, value_delimiter = ',')]
    pub dimensions: Option<Vec<String>>,
}

/// Simulates the config's `[simulate]` with the flags over it.
pub fn run(settings: &Settings, a: SimulateArgs) -> Result<Outcome> {
    let mut cfg: crate::simulate::SimulateConfig = settings.section("simulate", &settings.config.simulate)?;
    if let Some(s) = a.seed {
        cfg.seed = s;
    }
    if let Some(n) = a.holdout_groups {
        cfg.holdout_groups = n;
    }
    if let Some(d) = a.dimensions {
        cfg.dimensions = d;
    }
    let s = crate::simulate::simulate(&a.judgements, &a.dimension, &a.out, &cfg)?;
    Ok(Outcome::ok(s.to_string().trim_end().to_string(), serde_json::to_value(&s).unwrap_or_default()))
}
