//! The model directory a run leaves: weights, `config.json`, the tokenizer files,
//! `training_config.json` and `metrics.json`, each written atomically.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Tensor;
use serde::Serialize;

use super::TrainSummary;
use super::config::TrainConfig;
use super::setup::Setup;
use crate::files::TrainingConfigFile;
use crate::weights;

/// Writes `value` to `path` as pretty JSON with a final newline, atomically.
pub(super) fn write_json(path: &Path, value: &impl Serialize) -> evalloop_core::Result<()> {
    evalloop_core::atomic::write_json_pretty(path, value)
}

/// Writes the model directory `out_dir` of a finished run: `model.safetensors` (`final_weights`,
/// Hugging Face names), `config.json`, the base model's tokenizer files (`tokenizer_config.json`
/// with the effective `model_max_length`), `training_config.json` and `metrics.json` (`summary`).
pub(super) fn write_output(
    out_dir: &Path,
    cfg: &TrainConfig,
    setup: &Setup,
    final_weights: &BTreeMap<String, Tensor>,
    summary: &TrainSummary,
) -> evalloop_core::Result<()> {
    let bytes = weights::safetensors_bytes(
        final_weights,
        Some([("format".to_string(), "pt".to_string())].into_iter().collect()),
    )?;
    evalloop_core::atomic::write_atomic(&out_dir.join("model.safetensors"), &bytes)?;
    write_json(&out_dir.join("config.json"), &setup.config)?;
    write_tokenizer_files(out_dir, setup)?;
    write_training_config(out_dir, cfg, setup)?;
    write_summary(out_dir, summary)
}

/// `metrics.json`: the run's [`TrainSummary`]. Written last, so a model directory with it is
/// complete.
pub(super) fn write_summary(out_dir: &Path, summary: &TrainSummary) -> evalloop_core::Result<()> {
    write_json(&out_dir.join("metrics.json"), summary)
}

/// The base model's tokenizer files (`tokenizer.json`, and `vocab.txt`,
/// `special_tokens_map.json` when it has them) and its `tokenizer_config.json` (without one, a
/// BERT default for BERT and transformers' generic fast tokenizer for the other families) with
/// the effective `model_max_length`.
fn write_tokenizer_files(out_dir: &Path, setup: &Setup) -> evalloop_core::Result<()> {
    for f in ["tokenizer.json", "vocab.txt", "special_tokens_map.json"] {
        let src = setup.base_dir.join(f);
        if src.is_file() {
            let bytes = std::fs::read(&src).map_err(|e| evalloop_core::Error::io(&src, e))?;
            evalloop_core::atomic::write_atomic(&out_dir.join(f), &bytes)?;
        }
    }
    let tc_src = setup.base_dir.join("tokenizer_config.json");
    let mut tok_cfg: serde_json::Value = if tc_src.is_file() {
        let text = std::fs::read_to_string(&tc_src).map_err(|e| evalloop_core::Error::io(&tc_src, e))?;
        serde_json::from_str(&text).map_err(|e| evalloop_core::Error::Input(format!("{}: {e}", tc_src.display())))?
    } else if setup.config.family() == crate::config::Family::Bert {
        serde_json::json!({"tokenizer_class": "BertTokenizer", "do_lower_case": true})
    } else {
        serde_json::json!({"tokenizer_class": "PreTrainedTokenizerFast"})
    };
    if let Some(obj) = tok_cfg.as_object_mut() {
        obj.insert("model_max_length".into(), setup.tokenizer.max_length().into());
    }
    write_json(&out_dir.join("tokenizer_config.json"), &tok_cfg)?;
    Ok(())
}

/// `training_config.json`: the [`TrainConfig`], the label kind, the dimensions, the effective
/// `max_length` and truncation, the base model's directory and evalloop's version.
fn write_training_config(out_dir: &Path, cfg: &TrainConfig, setup: &Setup) -> evalloop_core::Result<()> {
    let file = TrainingConfigFile {
        base_model_dir: setup.base_dir.clone(),
        dimensions: setup.dimensions.clone(),
        evalloop_version: env!("CARGO_PKG_VERSION").to_string(),
        label: setup.kind,
        max_length: setup.tokenizer.max_length(),
        train: cfg.clone(),
        truncation: cfg.truncation,
    };
    file.write(out_dir)
}

/// Rewrites `training_config.json` of a run whose scoring stage started from an adapted copy of
/// the base model (`dapt_epochs`): the file names the configured base model and settings, not
/// the temporary copy. In an ensemble's directory, each member's file (with its own seed).
pub(super) fn restore_base_model(out_dir: &Path, cfg: &TrainConfig) -> evalloop_core::Result<()> {
    if let Some(ens) = crate::files::EnsembleFile::read(out_dir)? {
        for (i, member) in ens.members.iter().enumerate() {
            let seed = ens.seeds.get(i).copied().unwrap_or(cfg.seed);
            restore_base_model(&out_dir.join(member), &TrainConfig { seed, seeds: Vec::new(), ..cfg.clone() })?;
        }
        return Ok(());
    }
    let path = out_dir.join("training_config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| evalloop_core::Error::io(&path, e))?;
    let mut v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| evalloop_core::Error::Input(format!("{}: {e}", path.display())))?;
    let base = crate::resolve_base_model(&cfg.base_model)?;
    v["train"] = serde_json::to_value(cfg).map_err(|e| evalloop_core::Error::Model(e.to_string()))?;
    v["base_model_dir"] = serde_json::to_value(base).map_err(|e| evalloop_core::Error::Model(e.to_string()))?;
    write_json(&path, &v)
}
