//! Fine-tunes the BERT evaluator on a dataset directory: weighted losses, AdamW, checkpoints, resume.
//!
//! [`train`] reads `train.jsonl`, `validation.jsonl`, `test.jsonl` and `dataset_card.json` from a
//! dataset directory (as `dataset build` writes them), fine-tunes the base model
//! ([`TrainConfig::base_model`]) and writes a Hugging Face model directory:
//!
//! - `config.json` (`architectures: ["BertForSequenceClassification"]`, `id2label`,
//!   `label2id`, `num_labels: 1`, `problem_type`: `multi_label_classification` for binary labels
//!   (one logit, BCE), `regression` for graded ones (MSE)); a multi-task model (below) has
//!   `num_labels = 1 + K` and `id2label = {"0": "score" (or "good"), "1": <dimension 1>, ...}`,
//! - `model.safetensors` (the best checkpoint by [`TrainConfig::eval_metric`] on the validation
//!   split, or the last weights without a validation split; Hugging Face names),
//! - `tokenizer.json`, `tokenizer_config.json` (and `vocab.txt`, `special_tokens_map.json` when
//!   the base has them),
//! - `training_config.json` (the [`TrainConfig`], label kind, effective `max_length`),
//! - `metrics.json` (validation and test metrics of the kept model, evaluation history),
//! - `metrics.jsonl` (one line per logged step and per evaluation).
//!
//! # Multi-task (`dimensions`)
//! With K human dimensions (`[train] dimensions`, else the dataset card's), the head has
//! `1 + K` outputs. Output 0 is the primary score: the objective, `eval_metric`, early stopping
//! and the scorer's `score` are about it alone. Output k (1..K) is dimension k, fitted to the
//! rows' `labels` by a graded MSE: loss = primary loss + `dimension_weight` x the mean over
//! dimensions of `sum_i m_ik w_i (z_ik - y_ik)^2 / sum_i m_ik w_i` (sums over the optimizer
//! batch; `m_ik = 0` where row i has no label on k; a dimension without labels in the batch
//! adds 0). Validation and test metrics carry the same figures per dimension (`dimensions`).
//!
//! While training, `train_state/checkpoint.safetensors` holds weights, AdamW moments, step,
//! dropout RNG position, data-order position and early-stopping state, written atomically
//! (temp file, fsync, rename, fsync of the directory) every `checkpoint_every` steps and at
//! each epoch end; `train_state/best.safetensors` holds the best weights so far. With
//! `resume`, training continues from the checkpoint and ends with the same weights and metrics
//! as an uninterrupted run with the same seed on the CPU.
//!
//! # Where things are
//! - [`train`] (here) picks the kind of run; [`TrainSummary`] is what every run reports.
//! - `setup`: the dataset read and encoded, the head and the resume fingerprint.
//! - `trainer`: the loop (epochs, steps, evaluation, checkpoints, progress, output).
//! - `step`: one optimizer step's batch assembly and loss composition.
//! - `shards`: the data-parallel forward and backward passes.
//! - `early_stopping`: the best epoch, patience and `keep_best`.
//! - `select`: ensembles (`seeds`) and model selection (`candidates`).
//! - `evaluate`, [`metrics`]: figures of a model on labelled rows.
//! - `output`, `metrics_log`, `checkpoint`: the files a run writes.
//! - [`config`], [`data`], [`loss`]: the settings, the dataset rows, the loss functions.

mod blend;
mod checkpoint;
pub mod config;
pub mod corrupt;
mod dapt;
pub mod data;
mod early_stopping;
mod error;
mod evaluate;
pub mod loss;
pub mod metrics;
mod metrics_log;
mod optim;
mod output;
mod select;
mod setup;
mod shards;
mod step;
mod trainer;

pub use blend::{BlendCorrelations, BlendSummary};
pub use config::{BlendRule, Corruption, EvalMetric, LabelKind, Objective, PairScope, TrainConfig, Truncation};
pub use dapt::DaptSummary;
pub use data::Example;
pub use evaluate::score_of;
pub use loss::{dimension_coefficients, dimension_loss, pairwise_loss, per_example_loss, weighted_loss};
pub use metrics::EvalMetrics;
pub use optim::lr_at;
pub use select::{CandidateResult, Selection, describe_selection};
pub use setup::DistillCheck;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate as model;
#[cfg(test)]
use trainer::run;

/// What a finished training run reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSummary {
    /// The model directory written.
    pub out_dir: PathBuf,
    /// Label kind trained for.
    pub label: LabelKind,
    /// Optimizer steps taken.
    pub steps: usize,
    /// Epochs completed (a partial last epoch cut by `max_steps` counts).
    pub epochs_completed: usize,
    /// True when early stopping ended the run.
    pub stopped_early: bool,
    /// Epoch (1-based) of the kept model, `None` without a validation split.
    pub best_epoch: Option<usize>,
    /// Validation metrics of the kept model.
    pub validation: Option<EvalMetrics>,
    /// Test metrics of the kept model.
    pub test: Option<EvalMetrics>,
    /// Every evaluation on the validation split, in order.
    pub history: Vec<EvalRecord>,
    /// For an ensemble (`seeds`), each member's summary in seed order; the metrics above are
    /// then those of the averaged scores (their `loss` is of the averaged score: BCE of the
    /// mean probability, squared error of the mean value).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<TrainSummary>,
    /// Model selection (`candidates`): what was compared and which model was kept; the
    /// figures above are then the kept candidate's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection: Option<Selection>,
    /// `blend_evaluator`: the blend with the production evaluator fitted after training (see
    /// `blend.json`); the figures above are the model's alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blend: Option<BlendSummary>,
    /// `distill`: the production evaluator's agreement with the labels and whether the soft
    /// pairs were trained on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distill: Option<DistillCheck>,
    /// `dapt_epochs`: the domain-adaptive pretraining stage the model started from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dapt: Option<DaptSummary>,
}

/// One evaluation on the validation split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    /// 1-based epoch.
    pub epoch: usize,
    /// Optimizer steps so far.
    pub step: usize,
    /// The metrics.
    pub metrics: EvalMetrics,
}

/// Fine-tunes `cfg.base_model` on `dataset_dir` and writes the model directory `out_dir`
/// (see the module docs for its files). With `resume`, continues from
/// `out_dir/train_state/checkpoint.safetensors` when there is one (the config and training
/// data must be the same; the device may differ).
///
/// With `cfg.seeds` non-empty it trains an ensemble instead: one member per seed into
/// `out_dir/member-<seed>/` (with `resume`, a member that has finished, i.e. has its
/// `metrics.json`, is kept), then writes `out_dir/ensemble.json` (see [`crate::score`]) and
/// `out_dir/metrics.json` with the ensemble's validation and test metrics.
///
/// With `cfg.candidates` non-empty it selects a model instead: the base configuration and each
/// candidate are trained into `out_dir/candidates/<name>/`, each is judged on the labels it did
/// not train on (see [`TrainConfig::candidates`]), and the best one's files are copied into
/// `out_dir`; the summary's `selection` says which and why.
pub fn train(
    dataset_dir: &Path,
    cfg: &TrainConfig,
    out_dir: &Path,
    resume: bool,
) -> evalloop_core::Result<TrainSummary> {
    if cfg.blend_evaluator {
        // The model (ensemble, selection) is trained as configured, then blended.
        cfg.validate("train config")?;
        let inner = TrainConfig { blend_evaluator: false, ..cfg.clone() };
        let mut summary = train(dataset_dir, &inner, out_dir, resume)?;
        summary.blend = Some(blend::fit(dataset_dir, cfg, out_dir)?);
        output::write_summary(out_dir, &summary)?;
        return Ok(summary);
    }
    let _ = std::fs::remove_file(out_dir.join(crate::files::BLEND_FILE));
    if cfg.dapt_epochs > 0 {
        // Pretrain the encoder on the dataset's texts, then train (ensemble, selection) from it.
        cfg.validate("train config")?;
        // What the scoring stage will read, checked before the pretraining spends its time.
        if cfg.unlabelled {
            data::check_unlabelled(&dataset_dir.join("unlabelled.jsonl"))?;
        }
        let device = model::parse_device(&cfg.device)?;
        let adapted = dapt::base_dir_in(out_dir);
        let summary_dapt = dapt::adapt(dataset_dir, cfg, &adapted, &device).map_err(evalloop_core::Error::from)?;
        let inner = TrainConfig { dapt_epochs: 0, base_model: adapted.display().to_string(), ..cfg.clone() };
        let mut summary = train(dataset_dir, &inner, out_dir, resume)?;
        summary.dapt = Some(summary_dapt);
        output::write_summary(out_dir, &summary)?;
        output::restore_base_model(out_dir, cfg)?;
        if !cfg.keep_checkpoints {
            std::fs::remove_dir_all(&adapted).map_err(|e| evalloop_core::Error::io(&adapted, e))?;
        }
        return Ok(summary);
    }
    if !cfg.candidates.is_empty() {
        return select::train_candidates(dataset_dir, cfg, out_dir, resume);
    }
    if !cfg.seeds.is_empty() {
        return select::train_ensemble(dataset_dir, cfg, out_dir, resume);
    }
    let device = model::parse_device(&cfg.device)?;
    match trainer::run(dataset_dir, cfg, out_dir, resume, &device, None)? {
        Some(summary) => Ok(summary),
        None => Err(evalloop_core::Error::Model("training stopped before the end".into())),
    }
}

/// Fits the blend stage (`[train] blend_evaluator`, with `cfg.blend_rule`) again on the model
/// already trained into `out_dir` from `dataset_dir`, without training: rewrites `blend.json`
/// and the `blend` of `metrics.json`, and returns it. The model is the same as a run with
/// `blend_evaluator = true` would train (the stage comes after training).
pub fn refit_blend(dataset_dir: &Path, cfg: &TrainConfig, out_dir: &Path) -> evalloop_core::Result<BlendSummary> {
    cfg.validate("train config")?;
    let path = out_dir.join("metrics.json");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        evalloop_core::Error::Input(format!(
            "{}: {e}; --blend-only needs a model trained by `evalloop train` in {}",
            path.display(),
            out_dir.display()
        ))
    })?;
    let mut summary: TrainSummary = serde_json::from_str(&text)
        .map_err(|e| evalloop_core::Error::Input(format!("{}: not a training summary: {e}", path.display())))?;
    let blend = blend::fit(dataset_dir, cfg, out_dir)?;
    summary.blend = Some(blend.clone());
    output::write_summary(out_dir, &summary)?;
    Ok(blend)
}

#[cfg(test)]
mod tests;
