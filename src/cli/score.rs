//! `evalloop score`: a trained evaluator's scores for a JSONL file or for the store.

use std::path::PathBuf;

use serde_json::json;

use super::{FilterArgs, Outcome};
use crate::config::Settings;
use crate::store;
use crate::{Error, Result};

#[derive(Debug, clap::Args)]
pub struct ScoreArgs {
    /// The trained model directory.
    #[arg(long)]
    pub model: PathBuf,
    /// JSON Lines with request_id, prompt, output.
    #[arg(long, requires = "output", conflicts_with = "store")]
    pub input: Option<PathBuf>,
    /// Where to write the input lines with `score` added.
    #[arg(long, requires = "input")]
    pub output: Option<PathBuf>,
    /// Score the store's logs (filtered) and store the scores as a new evaluator.
    #[arg(long)]
    pub store: bool,
    /// The new evaluator's name (default: the model directory's name).
    #[arg(long)]
    pub evaluator_name: Option<String>,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Pairs per forward pass.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Scores `--input` into `--output`, or the store's logs as a new evaluator.
pub fn run(settings: &Settings, a: ScoreArgs) -> Result<Outcome> {
    let device = crate::model::parse_device(&a.device)?;
    if let (Some(input), Some(output)) = (&a.input, &a.output) {
        let opts = crate::score::ScoreOptions { batch_size: a.batch_size, device, ..Default::default() };
        let s = crate::score::score_jsonl(&a.model, input, output, &opts)?;
        let text = format!("scored {} lines into {} (mean score {:.4})", s.rows, output.display(), s.mean_score);
        return Ok(Outcome::ok(text, json!({"rows": s.rows, "mean_score": s.mean_score, "output": output})));
    }
    if !a.store {
        return Err(Error::Input("score: give --input FILE --output FILE, or --store".into()));
    }
    let name = a.evaluator_name.clone().unwrap_or_else(|| {
        a.model.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "retrained".into())
    });
    let scorer = crate::score::Scorer::load(&a.model, &device)?.with_batch_size(a.batch_size);
    let mut store = store::open(&settings.db)?;
    let mut filter = a.filter.resolve()?;
    // A blended model needs each request's production score: that of the evaluator it was
    // trained beside (blend.json), else the one --evaluator names, else the store's only one.
    let production = match scorer.blend() {
        None => None,
        Some(b) => {
            if filter.evaluator.is_none() {
                filter.evaluator = match b.evaluator.clone() {
                    Some(e) => Some(e),
                    None => match store.evaluators()?.as_slice() {
                        [only] => Some(only.clone()),
                        names => {
                            return Err(Error::Input(format!(
                                "score: the model blends with the production evaluator's score and the store has \
                                 {} evaluators; name one with --evaluator",
                                names.len()
                            )));
                        }
                    },
                };
            }
            Some(store.eval_scores(&filter)?)
        }
    };
    let ids = store.request_ids(&filter)?;
    if production.as_ref().is_some_and(|p| p.len() != ids.len()) {
        return Err(Error::Input(format!(
            "score: {} requests but {} production scores for evaluator {:?}",
            ids.len(),
            production.as_ref().map_or(0, Vec::len),
            filter.evaluator
        )));
    }
    let mut outcome = crate::store::BatchOutcome::default();
    for (k, chunk) in ids.chunks(4096).enumerate() {
        let texts = store.request_texts(chunk)?;
        let pairs: Vec<(String, String)> = texts.into_iter().map(|(_, t)| (t.prompt, t.output)).collect();
        let part = production.as_ref().map(|p| &p[k * 4096..k * 4096 + chunk.len()]);
        let scores = scorer.score_blended(&pairs, part)?;
        let rows: Vec<(String, f64)> = chunk.iter().cloned().zip(scores).collect();
        outcome += crate::score::store_scores(store.as_mut(), &name, &rows)?;
    }
    let text = format!("scored {} requests in {} as evaluator {name:?}", outcome.stored, store.location());
    Ok(Outcome::ok(text, json!({"evaluator": name, "stored": outcome.stored})))
}
