//! `evalloop train`: fine-tune the evaluator on a dataset directory.

use std::path::PathBuf;

use super::render::opt;
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
    /// Do not train: fit only the blend with the production evaluator ([train] blend_rule) on
    /// the model already in --out, trained on --dataset (rewrites blend.json and metrics.json).
    #[arg(long, conflicts_with = "resume")]
    pub blend_only: bool,
}

/// Trains with the config's `[train]` (the device flag over it).
pub fn run(settings: &Settings, a: TrainArgs) -> Result<Outcome> {
    let mut cfg: crate::train::TrainConfig = settings.section("train", &settings.config.train)?;
    if let Some(d) = a.device {
        cfg.device = d;
    }
    if a.blend_only {
        let b = crate::train::refit_blend(&a.dataset, &cfg, &a.out)?;
        let text = format!(
            "blended {} with the production evaluator: weight {:.3} ({}); validation {} model {}, evaluator {}, blend {}",
            a.out.display(),
            b.weight,
            serde_json::to_string(&b.rule).unwrap_or_default().trim_matches('"'),
            serde_json::to_string(&b.metric).unwrap_or_default().trim_matches('"'),
            opt(b.validation_model, 3),
            opt(b.validation_evaluator, 3),
            opt(b.validation_blend, 3),
        );
        return Ok(Outcome::ok(text, to_json(&b)));
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
