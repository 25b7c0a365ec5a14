//! `evalloop export KIND --out DIR`: datasets to fine-tune the LLM itself (SFT, KTO, DPO,
//! reward) from the store's feedback, in JSON Lines or Parquet, with a dataset card.

use std::path::PathBuf;

use super::{FilterArgs, Outcome, check_range, to_json};
use crate::config::Settings;
use crate::export::{self, DEFAULT_MARGIN, ExportFormat, ExportKind, ExportOptions, Scored};
use crate::store;
use crate::{Error, Result};

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// What to export: sft (prompt/completion and messages), kto (completion + bool label),
    /// dpo (prompt/chosen/rejected), reward (the same pairs).
    #[arg(value_enum)]
    pub kind: ExportKind,
    /// The output directory (written whole or not at all; an existing one must be empty or an
    /// earlier export).
    #[arg(long)]
    pub out: PathBuf,
    /// jsonl (default) or parquet.
    #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
    pub format: ExportFormat,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Only this use case (metadata.use_case).
    #[arg(long)]
    pub use_case: Option<String>,
    /// Keep the groups of the evaluator's test split (left out by default).
    #[arg(long)]
    pub include_test_split: bool,
    /// dpo/reward: the least human-score difference (1-5 scale) of two outputs of one prompt
    /// to make a pair.
    #[arg(long, default_value_t = DEFAULT_MARGIN)]
    pub margin: f64,
    /// Add rows the retrained evaluator in this model directory labels with confidence
    /// (requests without a human score).
    #[arg(long, requires = "min_confidence")]
    pub expand_with: Option<PathBuf>,
    /// With --expand-with: keep a request when the evaluator's P(good) is at least this (a good
    /// row) or at most 1 minus this (a bad row); in [0.5, 1].
    #[arg(long, requires = "expand_with")]
    pub min_confidence: Option<f64>,
    /// With --expand-with: pairs per forward pass.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// With --expand-with: cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Writes the export the arguments describe.
pub fn run(settings: &Settings, a: ExportArgs) -> Result<Outcome> {
    let mut cfg: crate::dataset::DatasetConfig = settings.section("dataset", &settings.config.dataset)?;
    // --evaluator picks the evaluator as `[dataset] evaluator` does (its split is held out).
    if let Some(e) = &a.filter.evaluator {
        cfg.evaluator = Some(e.clone());
    }
    let mut window = a.filter.resolve()?;
    window.evaluator = None;
    if let Some(u) = &a.use_case {
        window.metadata.push(("use_case".into(), u.clone()));
    }
    let opts = ExportOptions {
        kind: a.kind,
        format: a.format,
        include_test_split: a.include_test_split,
        margin: a.margin,
        expand: match (&a.expand_with, a.min_confidence) {
            (Some(m), Some(p)) => {
                check_range("min-confidence", p, 0.5, 1.0)?;
                Some((m.display().to_string(), p))
            }
            _ => None,
        },
    };
    opts.validate()?;
    let store = store::open(&settings.db)?;
    let plan = export::plan(store.as_ref(), &window, &settings.policy, &cfg)?;
    let scored = match &a.expand_with {
        None => Vec::new(),
        Some(model) => {
            let candidates = export::unlabelled_candidates(
                store.as_ref(),
                &window,
                &settings.policy,
                &cfg,
                &plan,
                a.include_test_split,
            )?;
            let device = crate::model::parse_device(&a.device)?;
            let scorer = crate::score::Scorer::load(model, &device)?.with_batch_size(a.batch_size);
            let pairs: Vec<(&str, &str)> = candidates.iter().map(|c| (c.prompt.as_str(), c.output.as_str())).collect();
            // The model's own P(good); a blended model's score before its blend.
            let p = scorer.score_pairs(&pairs)?;
            if let Some(bad) = p.iter().find(|p| !p.is_finite()) {
                return Err(Error::Model(format!("{}: the model scored a request {bad}", model.display())));
            }
            candidates.into_iter().zip(p).map(|(candidate, p_good)| Scored { candidate, p_good }).collect()
        }
    };
    let inputs =
        export::Inputs { store: store.as_ref(), window: &window, policy: &settings.policy, cfg: &cfg, plan: &plan };
    let done = export::export(inputs, &opts, &scored, &a.out)?;
    Ok(Outcome::ok(done.text, to_json(&done.card)))
}
