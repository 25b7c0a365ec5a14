//! `evalloop train`: fine-tune the evaluator on a dataset directory.

use std::path::PathBuf;

use super::{Outcome, to_json};
use crate::Result;
use crate::config::Settings;

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// A directory from `evalloop dataset build` (train/validation/test.jsonl, dataset_card.json).
    #[arg(long)]
    pub dataset: PathBuf,
    /// The model directory to write (Hugging Face layout).
    #[arg(long)]
    pub out: PathBuf,
    /// Continue from the latest checkpoint in --out.
    #[arg(long)]
    pub resume: bool,
    /// cpu, cuda, cuda:N or auto (default: [train] device, else cpu).
    #[arg(long)]
    pub device: Option<String>,
}

/// Trains with the config's `[train]` (the device flag over it).
pub fn run(settings: &Settings, a: TrainArgs) -> Result<Outcome> {
    let mut cfg: crate::train::TrainConfig = settings.section("train", &settings.config.train)?;
    if let Some(d) = a.device {
        cfg.device = d;
    }
    let s = crate::train::train(&a.dataset, &cfg, &a.out, a.resume)?;
    let mut text = format!(
        "trained {} steps over {} epochs{}; best epoch {}; model in {}",
        s.steps,
        s.epochs_completed,
        if s.stopped_early { " (stopped early)" } else { "" },
        s.best_epoch.map_or("-".into(), |e| e.to_string()),
        s.out_dir.display()
    );
    if let Some(sel) = &s.selection {
        text.push_str(&format!("\nmodel selection: {}", crate::train::describe_selection(sel)));
    }
    Ok(Outcome::ok(text, to_json(&s)))
}
