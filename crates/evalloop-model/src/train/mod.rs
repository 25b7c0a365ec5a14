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
//! (temp file, fsync, rename) every `checkpoint_every` steps and at each epoch end;
//! `train_state/best.safetensors` holds the best weights so far. With `resume`, training
//! continues from the checkpoint and ends with the same weights and metrics as an uninterrupted
//! run with the same seed on the CPU.

mod checkpoint;
pub mod config;
pub mod data;
pub mod loss;
pub mod metrics;
mod optim;

pub use config::{Corruption, EvalMetric, LabelKind, Objective, PairScope, TrainConfig, Truncation};
pub use data::Example;
pub use loss::{dimension_coefficients, dimension_loss, pairwise_loss, per_example_loss, weighted_loss};
pub use metrics::EvalMetrics;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{D, DType, Device, Tensor, Var};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate as model;
use crate::{BertConfig, Encoded, ModelError, PairTokenizer, TrainableModel, ops, weights};
use checkpoint::{CheckpointState, write_atomic};
use metrics::EvalAccumulator;
use optim::AdamW;

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
}

/// How model selection (`[train] candidates`) chose among the trained configurations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    /// The metric compared: `eval_metric`, or `spearman` in place of `group_spearman` when a
    /// candidate's judged rows have fewer than `select_min_groups` usable groups.
    pub metric: EvalMetric,
    /// Usable groups (the fewest over the candidates' judged rows).
    pub groups_used: usize,
    /// The kept candidate's name.
    pub chosen: String,
    /// Every candidate in training order (`base` first), with its figure.
    pub candidates: Vec<CandidateResult>,
}

/// One line on a model selection: the kept candidate, the metric, and every candidate's figure
/// with the rows it was judged on, e.g. `self_supervised kept by spearman: base -0.123
/// (validation, 1 group), self_supervised 0.312 (train+validation, 13 groups)`.
pub fn describe_selection(sel: &Selection) -> String {
    // The name as the config spells it (serde's).
    let metric = serde_json::to_value(sel.metric).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    let each: Vec<String> = sel
        .candidates
        .iter()
        .map(|c| {
            let v = c.value.map_or("undefined".to_string(), |v| format!("{v:.3}"));
            let groups = if c.groups_used == 1 { "group" } else { "groups" };
            format!("{} {v} ({}, {} {groups})", c.name, c.judged_on, c.groups_used)
        })
        .collect();
    format!("{} kept by {metric}: {}", sel.chosen, each.join(", "))
}

/// One candidate of model selection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateResult {
    /// Its name (`base` for the base configuration).
    pub name: String,
    /// Its figure on the compared metric (`None` when undefined).
    pub value: Option<f64>,
    /// The rows it was judged on: `validation`, or `train+validation` for a self-supervised
    /// candidate (it trains on no label).
    pub judged_on: String,
    /// Usable groups in those rows.
    pub groups_used: usize,
    /// Its model directory.
    pub dir: PathBuf,
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
    if !cfg.candidates.is_empty() {
        return train_candidates(dataset_dir, cfg, out_dir, resume);
    }
    if !cfg.seeds.is_empty() {
        return train_ensemble(dataset_dir, cfg, out_dir, resume);
    }
    let device = model::parse_device(&cfg.device)?;
    match run(dataset_dir, cfg, out_dir, resume, &device, None)? {
        Some(summary) => Ok(summary),
        None => Err(evalloop_core::Error::Model("training stopped before the end".into())),
    }
}

/// Trains `cfg` into `dir`, or with `resume` reads the summary of a run that finished there
/// (its `metrics.json` and `model.safetensors` present): an ensemble member or a candidate.
fn train_or_reuse(
    dataset_dir: &Path,
    cfg: &TrainConfig,
    dir: &Path,
    resume: bool,
) -> evalloop_core::Result<TrainSummary> {
    let done = dir.join("metrics.json");
    if resume && done.is_file() && dir.join("model.safetensors").is_file() {
        let text = std::fs::read_to_string(&done).map_err(|e| evalloop_core::Error::io(&done, e))?;
        tracing::info!(dir = %dir.display(), "already trained");
        return serde_json::from_str(&text)
            .map_err(|e| evalloop_core::Error::Input(format!("{}: {e}", done.display())));
    }
    tracing::info!(seed = cfg.seed, dir = %dir.display(), "training");
    std::fs::create_dir_all(dir).map_err(|e| evalloop_core::Error::io(dir, e))?;
    train(dataset_dir, cfg, dir, resume)
}

fn train_ensemble(
    dataset_dir: &Path,
    cfg: &TrainConfig,
    out_dir: &Path,
    resume: bool,
) -> evalloop_core::Result<TrainSummary> {
    cfg.validate("train config")?;
    std::fs::create_dir_all(out_dir).map_err(|e| evalloop_core::Error::io(out_dir, e))?;
    let mut members = Vec::new();
    let mut names = Vec::new();
    for &seed in &cfg.seeds {
        let name = format!("member-{seed}");
        let member_cfg = TrainConfig { seed, seeds: Vec::new(), ..cfg.clone() };
        members.push(train_or_reuse(dataset_dir, &member_cfg, &out_dir.join(&name), resume)?);
        names.push(name);
    }
    let ens = crate::score::EnsembleFile { members: names, seeds: cfg.seeds.clone(), aggregate: "mean".into() };
    write_json(&out_dir.join(crate::score::ENSEMBLE_FILE), &ens)?;

    // The ensemble's own metrics: the averaged scores on the validation and test splits.
    let kind = members.first().map_or(LabelKind::Binary, |m| m.label);
    let device = model::parse_device(&cfg.device)?;
    let scorer = crate::score::Scorer::load(out_dir, &device)?.with_batch_size(cfg.eval_batch_size);
    let eval_split = |name: &str| evaluate_scorer(&scorer, dataset_dir, &[name], kind);
    let summary = TrainSummary {
        out_dir: out_dir.to_path_buf(),
        label: kind,
        steps: members.iter().map(|m| m.steps).sum(),
        epochs_completed: members.iter().map(|m| m.epochs_completed).max().unwrap_or(0),
        stopped_early: members.iter().any(|m| m.stopped_early),
        best_epoch: None,
        validation: eval_split("validation.jsonl")?,
        test: eval_split("test.jsonl")?,
        history: Vec::new(),
        members,
        selection: None,
    };
    write_json(&out_dir.join("metrics.json"), &summary)?;
    tracing::info!(out = %out_dir.display(), members = summary.members.len(), "ensemble trained");
    Ok(summary)
}

/// The metrics of `scorer`'s scores (as `evalloop score` gives them) on the rows of the named
/// split files of `dataset_dir`, pooled (missing files are empty); `None` without rows.
fn evaluate_scorer(
    scorer: &crate::score::Scorer,
    dataset_dir: &Path,
    splits: &[&str],
    kind: LabelKind,
) -> evalloop_core::Result<Option<EvalMetrics>> {
    let dimensions = scorer.dimensions().to_vec();
    let mut examples = Vec::new();
    for name in splits {
        examples.extend(data::read_split_with(&dataset_dir.join(name), kind, &dimensions, true)?);
    }
    if examples.is_empty() {
        return Ok(None);
    }
    let pairs: Vec<(&str, &str)> = examples.iter().map(|e| (e.prompt.as_str(), e.output.as_str())).collect();
    let (scores, dim_scores) = scorer.score_pairs_with_dimensions(&pairs)?;
    let mut acc = EvalAccumulator::default();
    for (e, &s) in examples.iter().zip(&scores) {
        let loss = match kind {
            LabelKind::Binary => {
                let p = s.clamp(1e-12, 1.0 - 1e-12);
                -(e.label * p.ln() + (1.0 - e.label) * (1.0 - p).ln())
            }
            LabelKind::Graded => (s - e.label) * (s - e.label),
        };
        acc.update_in_group(e.group.as_deref(), s, e.label, e.weight, loss);
    }
    let mut m = acc.compute(kind == LabelKind::Binary);
    m.dimensions = dimension_metrics(&dimensions, &examples, |i, k| dim_scores[i][k]);
    Ok(Some(m))
}

/// Model selection: trains the base configuration and each candidate into
/// `out_dir/candidates/<name>/` (with `resume`, a candidate with its `metrics.json` is kept),
/// compares their validation figures and copies the best one's files into `out_dir`.
fn train_candidates(
    dataset_dir: &Path,
    cfg: &TrainConfig,
    out_dir: &Path,
    resume: bool,
) -> evalloop_core::Result<TrainSummary> {
    cfg.validate("train config")?;
    let configs = cfg.candidate_configs("train config")?;
    let root = out_dir.join("candidates");
    std::fs::create_dir_all(&root).map_err(|e| evalloop_core::Error::io(&root, e))?;
    let mut trained = Vec::new();
    for (name, c) in &configs {
        let dir = root.join(name);
        let summary = train_or_reuse(dataset_dir, c, &dir, resume)?;
        trained.push((name.clone(), dir, summary));
    }
    // Each candidate is judged on the labels it did not train on: the validation split, and
    // for a self-supervised one (which uses no label) the training split's labels too.
    let mut judged: Vec<(&'static str, EvalMetrics)> = Vec::new();
    for ((name, dir, summary), (_, c)) in trained.iter().zip(&configs) {
        let Some(validation) = summary.validation.clone() else {
            return Err(evalloop_core::Error::Input(format!(
                "[train] candidates: candidate {name:?} has no validation figures; model selection needs a \
                 validation split ([dataset] validation_fraction > 0)"
            )));
        };
        if c.objective == Some(Objective::SelfSupervised) {
            let device = model::parse_device(&c.device)?;
            let scorer = crate::score::Scorer::load(dir, &device)?.with_batch_size(c.eval_batch_size);
            let splits = ["train.jsonl", "validation.jsonl"];
            if let Some(m) = evaluate_scorer(&scorer, dataset_dir, &splits, summary.label)? {
                judged.push(("train+validation", m));
                continue;
            }
        }
        judged.push(("validation", validation));
    }
    let groups_used = judged.iter().map(|(_, m)| m.groups_used).min().unwrap_or(0);
    let metric = match cfg.eval_metric {
        EvalMetric::GroupSpearman if groups_used < cfg.select_min_groups => EvalMetric::Spearman,
        m => m,
    };
    // Ranked as early stopping ranks epochs (`metric_value`: higher is better, NaN never
    // counts); reported as the metric's own figure.
    let mut best: Option<(usize, f64)> = None;
    for (i, (_, m)) in judged.iter().enumerate() {
        let v = metric_value(m, metric);
        if !v.is_nan() && best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    let figure = |m: &EvalMetrics| {
        let v = metric_value(m, metric);
        (!v.is_nan()).then_some(if metric == EvalMetric::Loss { -v } else { v })
    };
    // No candidate with a defined figure: keep the base configuration.
    let chosen = best.map_or(0, |(i, _)| i);
    let selection = Selection {
        metric,
        groups_used,
        chosen: trained[chosen].0.clone(),
        candidates: trained
            .iter()
            .zip(&judged)
            .map(|((name, dir, _), (on, m))| CandidateResult {
                name: name.clone(),
                value: figure(m),
                judged_on: on.to_string(),
                groups_used: m.groups_used,
                dir: dir.clone(),
            })
            .collect(),
    };
    let (_, chosen_dir, chosen_summary) = &trained[chosen];
    // The kept model's files (not its resumable state) into out_dir, each written atomically;
    // metrics.json last, so a directory with it is complete.
    let entries = std::fs::read_dir(chosen_dir).map_err(|e| evalloop_core::Error::io(chosen_dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| evalloop_core::Error::io(chosen_dir, e))?;
        let name = entry.file_name();
        if entry.file_type().map_err(|e| evalloop_core::Error::io(entry.path(), e))?.is_file() && name != "metrics.json"
        {
            files.push(name);
        }
    }
    files.sort();
    // A model directory with ensemble.json is scored as an ensemble: none may be left from an
    // earlier run into the same directory (a candidate is never an ensemble).
    let stale = out_dir.join(crate::score::ENSEMBLE_FILE);
    if stale.is_file() {
        std::fs::remove_file(&stale).map_err(|e| evalloop_core::Error::io(&stale, e))?;
    }
    for name in files {
        let from = chosen_dir.join(&name);
        let bytes = std::fs::read(&from).map_err(|e| evalloop_core::Error::io(&from, e))?;
        evalloop_core::atomic::write_atomic(&out_dir.join(&name), &bytes)?;
    }
    let summary = TrainSummary { out_dir: out_dir.to_path_buf(), selection: Some(selection), ..chosen_summary.clone() };
    write_json(&out_dir.join("metrics.json"), &summary)?;
    tracing::info!(chosen = %summary.selection.as_ref().map_or("", |s| s.chosen.as_str()), metric = ?metric, "model selected");
    Ok(summary)
}

/// Learning rate at optimizer step `step` (0-based): linear warmup to `peak` over `warmup`
/// steps (step k gets `(k + 1) / warmup`), then linear decay to 0 at `total`.
pub fn lr_at(step: usize, peak: f64, warmup: usize, total: usize) -> f64 {
    if step < warmup {
        peak * (step + 1) as f64 / warmup as f64
    } else if total <= warmup {
        peak
    } else {
        peak * ((total - step) as f64 / (total - warmup) as f64).max(0.0)
    }
}

struct Setup {
    kind: LabelKind,
    /// The trained human dimensions, outputs 1..K (empty: one output).
    dimensions: Vec<String>,
    objective: Objective,
    config: BertConfig,
    base_dir: PathBuf,
    tokenizer: PairTokenizer,
    train: Vec<Example>,
    train_enc: Vec<Encoded>,
    /// `corruption_pairs`: the encoded corrupted copy of each training example for the first
    /// epoch (`None` when off or when the output has no copy); see [`corrupted_copies`].
    train_corrupt: Vec<Option<Encoded>>,
    /// The labelled rows of `train` (the first ones; the rest are `unlabelled` outputs).
    labelled: usize,
    validation: Vec<Example>,
    validation_enc: Vec<Encoded>,
    test: Vec<Example>,
    test_enc: Vec<Encoded>,
    fingerprint: String,
}

/// The encoded corrupted copy of each of `train`'s outputs for `epoch` (all `None` without
/// `corruption_pairs`): `"drop"` copies are drawn once per run, `"swap"` copies anew each epoch
/// (from `seed` and the epoch), so a run and its resumption repeat.
fn corrupted_copies(
    tokenizer: &PairTokenizer,
    train: &[Example],
    cfg: &TrainConfig,
    epoch: usize,
) -> evalloop_core::Result<Vec<Option<Encoded>>> {
    if cfg.corruption_pairs <= 0.0 {
        return Ok(vec![None; train.len()]);
    }
    let seed = match cfg.corruption {
        Corruption::Drop => cfg.seed,
        Corruption::Swap => cfg.seed ^ (epoch as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03),
    };
    let copies: Vec<Option<String>> =
        train.iter().enumerate().map(|(i, e)| data::corrupt_output(&e.output, seed, i, cfg.corruption)).collect();
    let pairs: Vec<(&str, &str)> =
        train.iter().zip(&copies).filter_map(|(e, c)| c.as_deref().map(|c| (e.prompt.as_str(), c))).collect();
    let mut encoded = tokenizer.encode_pairs(&pairs)?.into_iter();
    Ok(copies.iter().map(|c| c.as_ref().and_then(|_| encoded.next())).collect())
}

fn setup(dataset_dir: &Path, cfg: &TrainConfig) -> evalloop_core::Result<Setup> {
    cfg.validate("train config")?;
    let label_kind = match cfg.label {
        Some(k) => k,
        None => data::read_label_kind(dataset_dir)?,
    };
    // The pointwise loss and head follow the objective when it names one.
    let kind = match cfg.objective {
        Some(Objective::Graded) => LabelKind::Graded,
        Some(Objective::Binary) if label_kind == LabelKind::Graded => {
            return Err(evalloop_core::Error::Input(
                "[train] objective: \"binary\" needs binary labels, the dataset is graded".into(),
            ));
        }
        Some(Objective::Binary) => LabelKind::Binary,
        _ => label_kind,
    };
    let objective = cfg.objective.unwrap_or(match kind {
        LabelKind::Binary => Objective::Binary,
        LabelKind::Graded => Objective::Graded,
    });
    if matches!(cfg.eval_metric, EvalMetric::Auc | EvalMetric::Accuracy) && kind == LabelKind::Graded {
        return Err(evalloop_core::Error::Input(format!(
            "[train] eval_metric: {:?} needs binary labels, the dataset is graded",
            cfg.eval_metric
        )));
    }
    let dimensions = match &cfg.dimensions {
        Some(d) => d.clone(),
        // Self-supervised training uses no label, so no dimension output either.
        None if objective == Objective::SelfSupervised => Vec::new(),
        None => data::read_card_dimensions(dataset_dir)?,
    };
    let train_path = dataset_dir.join("train.jsonl");
    let mut train = data::read_split_with(&train_path, kind, &dimensions, false)?;
    if train.is_empty() {
        return Err(evalloop_core::Error::Input(format!("{}: no examples", train_path.display())));
    }
    // Unlabelled outputs go after the labelled rows, with weight 0 (ranking pairs only).
    let labelled = train.len();
    if cfg.unlabelled {
        train.extend(data::read_unlabelled(&dataset_dir.join("unlabelled.jsonl"), dimensions.len())?);
    }
    let validation = data::read_split_with(&dataset_dir.join("validation.jsonl"), kind, &dimensions, true)?;
    let test = data::read_split_with(&dataset_dir.join("test.jsonl"), kind, &dimensions, true)?;

    let base_dir = model::resolve_base_model(&cfg.base_model)?;
    let mut config = BertConfig::from_file(&base_dir.join("config.json"))?;
    let (primary, problem_type) = match kind {
        LabelKind::Binary => ("good", "multi_label_classification"),
        LabelKind::Graded => ("score", "regression"),
    };
    if let Some(d) = dimensions.iter().find(|d| d.as_str() == primary) {
        return Err(evalloop_core::Error::Input(format!(
            "[train] dimensions: {d:?} is the name of output 0 (the primary score); rename the dimension"
        )));
    }
    let head: Vec<&str> = std::iter::once(primary).chain(dimensions.iter().map(String::as_str)).collect();
    config.set_classifier(&head, problem_type);
    if let Some(p) = cfg.dropout {
        config.hidden_dropout_prob = p;
        config.attention_probs_dropout_prob = p;
        config.classifier_dropout = None;
    }
    if cfg.freeze_layers > config.num_hidden_layers {
        return Err(evalloop_core::Error::Input(format!(
            "[train] freeze_layers: {} but the base model has {} layers",
            cfg.freeze_layers, config.num_hidden_layers
        )));
    }
    let max_length = cfg.max_length.min(config.max_position_embeddings);
    let tokenizer =
        PairTokenizer::from_file(&base_dir.join("tokenizer.json"), max_length)?.with_truncation(cfg.truncation)?;
    let enc = |xs: &[Example]| -> evalloop_core::Result<Vec<Encoded>> {
        let pairs: Vec<(&str, &str)> = xs.iter().map(|e| (e.prompt.as_str(), e.output.as_str())).collect();
        Ok(tokenizer.encode_pairs(&pairs)?)
    };
    let train_enc = enc(&train)?;
    let train_corrupt = corrupted_copies(&tokenizer, &train, cfg, 0)?;
    let validation_enc = enc(&validation)?;
    let test_enc = enc(&test)?;

    // What a checkpoint must agree with to be resumed: the config (less the device and
    // checkpoint bookkeeping) and the training data.
    let mut hasher = sha2::Sha256::new();
    let mut fp_cfg = cfg.clone();
    fp_cfg.device = String::new();
    fp_cfg.keep_checkpoints = false;
    hasher.update(serde_json::to_string(&fp_cfg).unwrap_or_default().as_bytes());
    hasher.update(format!("{kind:?}").as_bytes());
    for e in &train {
        hasher.update(e.request_id.as_bytes());
        hasher.update(e.label.to_le_bytes());
        hasher.update(e.weight.to_le_bytes());
        for l in &e.labels {
            hasher.update(l.unwrap_or(-1.0).to_le_bytes());
        }
    }
    for e in &train_enc {
        for id in &e.ids {
            hasher.update(id.to_le_bytes());
        }
    }
    let fingerprint = hex::encode(hasher.finalize());
    Ok(Setup {
        kind,
        dimensions,
        objective,
        config,
        base_dir,
        tokenizer,
        train,
        train_enc,
        train_corrupt,
        labelled,
        validation,
        validation_enc,
        test,
        test_enc,
        fingerprint,
    })
}

fn trainable_filter(cfg: &TrainConfig) -> impl Fn(&str) -> bool + use<> {
    let freeze_embeddings = cfg.freeze_embeddings;
    let freeze_layers = cfg.freeze_layers;
    move |name: &str| {
        if freeze_embeddings && name.starts_with("bert.embeddings.") {
            return false;
        }
        if let Some(rest) = name.strip_prefix("bert.encoder.layer.")
            && let Some(idx) = rest.split('.').next().and_then(|s| s.parse::<usize>().ok())
        {
            return idx >= freeze_layers;
        }
        true
    }
}

/// Per-dimension metrics (graded: squared-error loss, Spearman, group Spearman) over the
/// examples with a label on each dimension; `score(i, k)` is example i's output for dimension k.
fn dimension_metrics(
    dimensions: &[String],
    examples: &[Example],
    score: impl Fn(usize, usize) -> f64,
) -> BTreeMap<String, EvalMetrics> {
    dimensions
        .iter()
        .enumerate()
        .map(|(k, d)| {
            let mut acc = EvalAccumulator::default();
            for (i, e) in examples.iter().enumerate() {
                if let Some(y) = e.labels[k] {
                    let z = score(i, k);
                    acc.update_in_group(e.group.as_deref(), z, y, e.weight, (z - y) * (z - y));
                }
            }
            (d.clone(), acc.compute(false))
        })
        .collect()
}

/// The score reported for a logit: sigmoid for binary, identity for graded.
pub fn score_of(logit: f64, kind: LabelKind) -> f64 {
    match kind {
        LabelKind::Binary => 1.0 / (1.0 + (-logit).exp()),
        LabelKind::Graded => logit,
    }
}

fn example_loss(logit: f64, label: f64, kind: LabelKind) -> f64 {
    match kind {
        LabelKind::Binary => logit.max(0.0) - logit * label + (-logit.abs()).exp().ln_1p(),
        LabelKind::Graded => (logit - label) * (logit - label),
    }
}

fn evaluate(
    model: &model::BertForSequenceClassification,
    setup: &Setup,
    examples: &[Example],
    enc: &[Encoded],
    batch_size: usize,
    device: &Device,
) -> evalloop_core::Result<EvalMetrics> {
    let outputs = model::predict(model, &setup.tokenizer, enc, batch_size, device, false)?;
    let mut acc = EvalAccumulator::default();
    for (e, out) in examples.iter().zip(&outputs) {
        let z = out[0] as f64;
        acc.update_in_group(
            e.group.as_deref(),
            score_of(z, setup.kind),
            e.label,
            e.weight,
            example_loss(z, e.label, setup.kind),
        );
    }
    let mut m = acc.compute(setup.kind == LabelKind::Binary);
    m.dimensions = dimension_metrics(&setup.dimensions, examples, |i, k| outputs[i][k + 1] as f64);
    Ok(m)
}

/// A metrics.jsonl line's view of per-dimension metrics: `{dim: {loss, spearman,
/// group_spearman, n}}`.
fn dimensions_json(m: &EvalMetrics) -> serde_json::Value {
    m.dimensions
        .iter()
        .map(|(d, x)| {
            let v = serde_json::json!({
                "loss": x.loss, "spearman": x.spearman, "group_spearman": x.group_spearman, "n": x.n,
            });
            (d.clone(), v)
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn metric_value(m: &EvalMetrics, which: EvalMetric) -> f64 {
    // Higher is better for every value returned here; NaN never counts as an improvement.
    match which {
        EvalMetric::Loss => -m.loss,
        EvalMetric::Spearman => m.spearman.unwrap_or(f64::NAN),
        EvalMetric::Auc => m.auc.unwrap_or(f64::NAN),
        EvalMetric::Accuracy => m.accuracy.unwrap_or(f64::NAN),
        EvalMetric::GroupSpearman => m.group_spearman.unwrap_or(f64::NAN),
    }
}

fn model_err(e: candle_core::Error) -> evalloop_core::Error {
    evalloop_core::Error::from(ModelError::from(e))
}

struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsLog {
    fn open(path: &Path, keep_bytes: Option<u64>) -> evalloop_core::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(path)
            .map_err(|e| evalloop_core::Error::io(path, e))?;
        file.set_len(keep_bytes.unwrap_or(0)).map_err(|e| evalloop_core::Error::io(path, e))?;
        let mut log = MetricsLog { path: path.to_path_buf(), file };
        use std::io::Seek;
        log.file.seek(std::io::SeekFrom::End(0)).map_err(|e| evalloop_core::Error::io(path, e))?;
        Ok(log)
    }

    fn write(&mut self, value: &serde_json::Value) -> evalloop_core::Result<()> {
        writeln!(self.file, "{value}").map_err(|e| evalloop_core::Error::io(&self.path, e))
    }

    /// Bytes written so far, made durable.
    fn sync_len(&mut self) -> evalloop_core::Result<u64> {
        self.file.sync_data().map_err(|e| evalloop_core::Error::io(&self.path, e))?;
        let len = self.file.metadata().map_err(|e| evalloop_core::Error::io(&self.path, e))?.len();
        Ok(len)
    }
}

/// The training loop. `stop_after` (tests only) returns `None` after that many optimizer
/// steps, as if the process had been killed.
fn run(
    dataset_dir: &Path,
    cfg: &TrainConfig,
    out_dir: &Path,
    resume: bool,
    device: &Device,
    stop_after: Option<usize>,
) -> evalloop_core::Result<Option<TrainSummary>> {
    let setup = setup(dataset_dir, cfg)?;
    let state_dir = out_dir.join("train_state");
    std::fs::create_dir_all(&state_dir).map_err(|e| evalloop_core::Error::io(&state_dir, e))?;
    let ckpt_path = state_dir.join("checkpoint.safetensors");
    let best_path = state_dir.join("best.safetensors");

    // Initial weights: the base checkpoint plus a seeded head.
    let base_weights = setup.base_dir.join("model.safetensors");
    let ckpt = weights::load_checkpoint(&base_weights)?;
    let (init, report) = weights::init_weights(&setup.config, Some(ckpt), &base_weights, cfg.seed)?;
    tracing::info!(
        base = %setup.base_dir.display(),
        loaded = report.loaded.len(),
        initialized = ?report.initialized,
        unused = report.unused.len(),
        "base model loaded"
    );
    let mut tm = TrainableModel::new(&setup.config, init, trainable_filter(cfg), cfg.seed.wrapping_add(1), device)?;
    let mut opt = AdamW::new(tm.params(), cfg, setup.config.num_hidden_layers).map_err(model_err)?;

    let objective = setup.objective;
    let group_aware = objective.has_pairwise();
    let pointwise = objective.has_pointwise();
    let labelled_pairs = objective != Objective::SelfSupervised;
    let n_dims = setup.dimensions.len();
    let plan = |epoch: usize| data::epoch_batches(&setup.train, cfg.batch_size, cfg.seed, epoch, group_aware);
    // Group-aware batches can differ in number from epoch to epoch: count each epoch's steps.
    let mut total_steps: usize = (0..cfg.epochs).map(|e| plan(e).len().div_ceil(cfg.grad_accum)).sum();
    if cfg.max_steps > 0 && (cfg.epochs == 0 || cfg.max_steps < total_steps) {
        total_steps = cfg.max_steps;
    }
    let warmup =
        if cfg.warmup_steps > 0 { cfg.warmup_steps } else { (cfg.warmup_ratio * total_steps as f64).ceil() as usize };

    let shards = match cfg.data_parallel {
        _ if !device.is_cpu() => 1,
        0 => rayon::current_num_threads().max(1),
        n => n,
    };
    let mut state =
        CheckpointState::new(setup.fingerprint.clone(), tm.dropout_rng().state().map_err(model_err)?, shards);
    let metrics_path = out_dir.join("metrics.jsonl");
    let mut keep_metrics = None;
    if resume && ckpt_path.is_file() {
        let (st, tensors) = checkpoint::read(&ckpt_path)?;
        if st.fingerprint != setup.fingerprint {
            return Err(evalloop_core::Error::Input(format!(
                "{}: the checkpoint was written with another config or training data; \
                 run without --resume to start over",
                ckpt_path.display()
            )));
        }
        tm.set_params(&tensors.params).map_err(evalloop_core::Error::from)?;
        opt.restore(st.adam_step, &tensors.m, &tensors.v, tm.params()).map_err(model_err)?;
        tm.dropout_rng().restore(&st.rng).map_err(model_err)?;
        keep_metrics = Some(st.metrics_len);
        tracing::info!(step = st.step, epoch = st.epoch + 1, shards = st.shards, "resuming from checkpoint");
        state = st;
    } else if resume {
        tracing::info!(path = %ckpt_path.display(), "no checkpoint to resume from; starting over");
    }
    let mut log = MetricsLog::open(&metrics_path, keep_metrics)?;

    let bar = indicatif::ProgressBar::new(total_steps as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_position(state.step as u64);

    let save_checkpoint = |tm: &mut TrainableModel,
                           opt: &AdamW,
                           state: &mut CheckpointState,
                           log: &mut MetricsLog|
     -> evalloop_core::Result<()> {
        state.metrics_len = log.sync_len()?;
        state.rng = tm.dropout_rng().state().map_err(model_err)?;
        state.adam_step = opt.step_count();
        checkpoint::write(&ckpt_path, state, tm, opt)?;
        tracing::debug!(step = state.step, "checkpoint written");
        Ok(())
    };

    let started = Instant::now();
    let mut seen_since_start = 0usize;
    let mut running_loss = 0.0;
    let mut running_n = 0usize;
    let mut finished = state.done;
    while !finished {
        if state.epoch >= cfg.epochs.max(1) && cfg.epochs > 0 || state.step >= total_steps {
            break;
        }
        let batches = plan(state.epoch);
        let batches_per_epoch = batches.len();
        let epoch_copies;
        let train_corrupt = if state.epoch == 0 || cfg.corruption == Corruption::Drop {
            &setup.train_corrupt
        } else {
            epoch_copies = corrupted_copies(&setup.tokenizer, &setup.train, cfg, state.epoch)?;
            &epoch_copies
        };
        let mut epoch_cut = false;
        while state.next_batch < batches_per_epoch {
            let first = state.next_batch;
            let last = (first + cfg.grad_accum).min(batches_per_epoch);
            let micro: Vec<&[usize]> = batches[first..last].iter().map(Vec::as_slice).collect();
            let total_weight: f64 = micro.iter().flat_map(|m| m.iter()).map(|&i| setup.train[i].weight).sum();
            let mut pairs: Vec<Vec<(u32, u32, f64)>> = if group_aware && labelled_pairs {
                micro
                    .iter()
                    .map(|idx| loss::batch_pairs(&setup.train, idx, cfg.pair_min_diff, cfg.pair_scope))
                    .collect()
            } else {
                vec![Vec::new(); micro.len()]
            };
            // Corrupted copies sit after a micro-batch's rows, in the order of their originals.
            let copies: Vec<Vec<usize>> =
                micro.iter().map(|idx| (0..idx.len()).filter(|&a| train_corrupt[idx[a]].is_some()).collect()).collect();
            for ((p, idx), c) in pairs.iter_mut().zip(&micro).zip(&copies) {
                for (k, &a) in c.iter().enumerate() {
                    // An unlabelled output's pair counts as a unit-weight example's.
                    let base = if idx[a] < setup.labelled { setup.train[idx[a]].weight } else { 1.0 };
                    let w = base * cfg.corruption_pairs;
                    if w > 0.0 {
                        p.push((a as u32, (idx.len() + k) as u32, w));
                    }
                }
            }
            let total_pair_weight: f64 = pairs.iter().flatten().map(|p| p.2).sum();
            // Per dimension, the weight of the optimizer batch's rows with a label on it.
            let mut dim_totals = vec![0.0; n_dims];
            for &i in micro.iter().flat_map(|m| m.iter()) {
                let e = &setup.train[i];
                for (t, l) in dim_totals.iter_mut().zip(&e.labels) {
                    if l.is_some() {
                        *t += e.weight;
                    }
                }
            }
            let dim_coef = dimension_coefficients(&dim_totals);
            let use_pointwise = pointwise && total_weight > 0.0;
            let use_pairs = group_aware && total_pair_weight > 0.0;
            let use_dims = cfg.dimension_weight > 0.0 && dim_totals.iter().any(|&t| t > 0.0);
            let mut grads: Vec<Option<Tensor>> = vec![None; tm.params().len()];
            let mut step_loss = 0.0;
            for ((idx, batch_pairs), copies) in micro.iter().zip(&pairs).zip(&copies) {
                let has_dim_labels = use_dims && idx.iter().any(|&i| setup.train[i].labels.iter().any(Option::is_some));
                if !pointwise && batch_pairs.is_empty() && !has_dim_labels {
                    // Nothing to learn from this micro-batch under a purely pairwise loss.
                    continue;
                }
                // Rows: the micro-batch, then the corrupted copies (label 0, weight 0: ranked only).
                let rows = idx.len() + copies.len();
                let mut items: Vec<&Encoded> = idx.iter().map(|&i| &setup.train_enc[i]).collect();
                items.extend(copies.iter().filter_map(|&a| train_corrupt[idx[a]].as_ref()));
                let mut labels: Vec<f32> = idx.iter().map(|&i| setup.train[i].label as f32).collect();
                let mut wts: Vec<f32> = idx.iter().map(|&i| setup.train[i].weight as f32).collect();
                labels.resize(rows, 0.0);
                wts.resize(rows, 0.0);
                let labels = Tensor::from_vec(labels, rows, device).map_err(model_err)?;
                let wts = Tensor::from_vec(wts, rows, device).map_err(model_err)?;
                let shard_outputs = forward_shards(&tm, &setup, &items, state.shards, device)?;
                // One shard: the loss hangs off the model's outputs. Several: off a leaf holding
                // their values, whose gradient each shard then takes back through its own graph.
                let (outputs, joined) = match shard_outputs.as_slice() {
                    [one] => (one.clone(), None),
                    many => {
                        let values =
                            Tensor::cat(&many.iter().map(Tensor::detach).collect::<Vec<_>>(), 0).map_err(model_err)?;
                        let leaf = Var::from_tensor(&values).map_err(model_err)?;
                        (leaf.as_tensor().clone(), Some(leaf))
                    }
                };
                let logits = outputs.narrow(D::Minus1, 0, 1).and_then(|t| t.flatten_all()).map_err(model_err)?;
                let mut loss: Option<Tensor> = None;
                if use_pointwise {
                    loss = Some(weighted_loss(&logits, &labels, &wts, setup.kind, total_weight).map_err(model_err)?);
                }
                if use_pairs && !batch_pairs.is_empty() {
                    let better: Vec<u32> = batch_pairs.iter().map(|p| p.0).collect();
                    let worse: Vec<u32> = batch_pairs.iter().map(|p| p.1).collect();
                    let pw: Vec<f32> = batch_pairs.iter().map(|p| p.2 as f32).collect();
                    let np = batch_pairs.len();
                    let pair_loss = pairwise_loss(
                        &logits,
                        &Tensor::from_vec(better, np, device).map_err(model_err)?,
                        &Tensor::from_vec(worse, np, device).map_err(model_err)?,
                        &Tensor::from_vec(pw, np, device).map_err(model_err)?,
                        total_pair_weight,
                    )
                    .map_err(model_err)?;
                    // Under "graded+pairwise" the pair term is scaled even in a step without
                    // labelled rows (only unlabelled outputs and their copies).
                    let pair_loss =
                        if pointwise { (pair_loss * cfg.pairwise_weight).map_err(model_err)? } else { pair_loss };
                    loss = Some(match loss {
                        None => pair_loss,
                        Some(l) => (l + pair_loss).map_err(model_err)?,
                    });
                }
                if has_dim_labels {
                    let b = rows;
                    let mut y = Vec::with_capacity(b * n_dims);
                    let mut mw = Vec::with_capacity(b * n_dims);
                    for &i in idx.iter() {
                        let e = &setup.train[i];
                        for l in &e.labels {
                            y.push(l.unwrap_or(0.0) as f32);
                            mw.push(if l.is_some() { e.weight as f32 } else { 0.0 });
                        }
                    }
                    y.resize(b * n_dims, 0.0);
                    mw.resize(b * n_dims, 0.0);
                    let coef: Vec<f32> = dim_coef.iter().map(|&c| (c * cfg.dimension_weight) as f32).collect();
                    let dims_out = outputs.narrow(D::Minus1, 1, n_dims).map_err(model_err)?;
                    let dtype = dims_out.dtype();
                    let t = |v: Vec<f32>, shape: &[usize]| {
                        Tensor::from_vec(v, shape, device).and_then(|t| t.to_dtype(dtype)).map_err(model_err)
                    };
                    let dim_loss =
                        dimension_loss(&dims_out, &t(y, &[b, n_dims])?, &t(mw, &[b, n_dims])?, &t(coef, &[n_dims])?)
                            .map_err(model_err)?;
                    loss = Some(match loss {
                        None => dim_loss,
                        Some(l) => (l + dim_loss).map_err(model_err)?,
                    });
                }
                let Some(loss) = loss else { continue };
                step_loss += loss.to_dtype(DType::F64).and_then(|t| t.to_scalar::<f64>()).map_err(model_err)?;
                let g = loss.backward().map_err(model_err)?;
                match joined {
                    None => add_grads(&mut grads, &g, tm.params())?,
                    Some(leaf) => {
                        if let Some(g_out) = g.get(leaf.as_tensor()) {
                            for g in backward_shards(&shard_outputs, g_out)? {
                                add_grads(&mut grads, &g, tm.params())?;
                            }
                        }
                    }
                }
            }
            if use_pointwise || use_pairs || use_dims {
                let lr = lr_at(state.step, cfg.learning_rate, warmup, total_steps);
                opt.step(tm.params(), &mut grads, lr, cfg.grad_clip).map_err(model_err)?;
            }
            let examples: usize = micro.iter().map(|m| m.len()).sum();
            seen_since_start += examples;
            running_loss += step_loss;
            running_n += 1;
            state.step += 1;
            state.next_batch = last;
            let rate = seen_since_start as f64 / started.elapsed().as_secs_f64().max(1e-9);
            bar.set_position(state.step as u64);
            bar.set_message(format!("loss {step_loss:.4}  {rate:.1} ex/s"));
            if state.step.is_multiple_of(cfg.log_every) || state.step == total_steps {
                let lr = lr_at(state.step - 1, cfg.learning_rate, warmup, total_steps);
                log.write(&serde_json::json!({
                    "kind": "train", "step": state.step, "epoch": state.epoch + 1,
                    "loss": running_loss / running_n.max(1) as f64, "lr": lr,
                    "examples_per_sec": rate,
                }))?;
                // Logs go to stderr like the bar: hide the bar while the line is written.
                bar.suspend(|| {
                    tracing::info!(
                        step = state.step,
                        loss = running_loss / running_n.max(1) as f64,
                        lr,
                        examples_per_sec = rate,
                        "train"
                    )
                });
                running_loss = 0.0;
                running_n = 0;
            }
            if state.step >= total_steps {
                epoch_cut = state.next_batch < batches_per_epoch;
                break;
            }
            if cfg.checkpoint_every > 0 && state.step.is_multiple_of(cfg.checkpoint_every) {
                save_checkpoint(&mut tm, &opt, &mut state, &mut log)?;
            }
            if stop_after.is_some_and(|s| state.step >= s) {
                bar.abandon();
                return Ok(None);
            }
        }

        // End of an epoch (or of the step budget): evaluate, keep the best, maybe stop.
        let epoch_no = state.epoch + 1;
        if !setup.validation.is_empty() {
            let m = evaluate(&tm.model, &setup, &setup.validation, &setup.validation_enc, cfg.eval_batch_size, device)?;
            let mut line = serde_json::json!({
                "kind": "eval", "split": "validation", "step": state.step, "epoch": epoch_no,
                "loss": m.loss, "spearman": m.spearman, "group_spearman": m.group_spearman,
                "groups_used": m.groups_used, "auc": m.auc, "accuracy": m.accuracy, "n": m.n,
            });
            if !m.dimensions.is_empty() {
                line["dimensions"] = dimensions_json(&m);
            }
            log.write(&line)?;
            bar.suspend(|| {
                tracing::info!(
                    epoch = epoch_no,
                    step = state.step,
                    loss = m.loss,
                    spearman = ?m.spearman,
                    group_spearman = ?m.group_spearman,
                    auc = ?m.auc,
                    "validation"
                )
            });
            let value = metric_value(&m, cfg.eval_metric);
            let improved = match state.best_value {
                None => !value.is_nan() || state.best_epoch.is_none(),
                Some(b) => value > b,
            };
            state.history.push(EvalRecord { epoch: epoch_no, step: state.step, metrics: m });
            // Without selection (`keep_best = false`) validation is only reported: the last
            // weights are kept and nothing stops early.
            if cfg.keep_best {
                if improved {
                    state.best_value = if value.is_nan() { None } else { Some(value) };
                    state.best_epoch = Some(epoch_no);
                    state.bad_epochs = 0;
                    let bytes = weights::safetensors_bytes(&tm.tensors(), None)?;
                    write_atomic(&best_path, &bytes)?;
                } else {
                    state.bad_epochs += 1;
                }
                if cfg.patience > 0 && state.bad_epochs >= cfg.patience {
                    tracing::info!(epoch = epoch_no, patience = cfg.patience, "early stopping");
                    state.stopped_early = true;
                    finished = true;
                }
            }
        }
        state.epoch += 1;
        state.next_batch = 0;
        if epoch_cut || state.step >= total_steps || (cfg.epochs > 0 && state.epoch >= cfg.epochs) {
            finished = true;
        }
        state.done = finished;
        save_checkpoint(&mut tm, &opt, &mut state, &mut log)?;
        if stop_after.is_some_and(|s| state.step >= s) && !finished {
            bar.abandon();
            return Ok(None);
        }
    }
    bar.finish_and_clear();

    // The kept model: the best validation checkpoint, else the last weights.
    let final_weights: BTreeMap<String, Tensor> = if state.best_epoch.is_some() && best_path.is_file() {
        weights::load_checkpoint(&best_path)?
    } else {
        tm.tensors()
    };
    let infer = model::InferenceModel::from_tensors(&setup.config, final_weights.clone(), device)?;
    let validation = if setup.validation.is_empty() {
        None
    } else {
        Some(evaluate(&infer.model, &setup, &setup.validation, &setup.validation_enc, cfg.eval_batch_size, device)?)
    };
    let test = if setup.test.is_empty() {
        None
    } else {
        let m = evaluate(&infer.model, &setup, &setup.test, &setup.test_enc, cfg.eval_batch_size, device)?;
        let mut line = serde_json::json!({
            "kind": "eval", "split": "test", "step": state.step, "epoch": state.best_epoch,
            "loss": m.loss, "spearman": m.spearman, "group_spearman": m.group_spearman,
            "groups_used": m.groups_used, "auc": m.auc, "accuracy": m.accuracy, "n": m.n,
        });
        if !m.dimensions.is_empty() {
            line["dimensions"] = dimensions_json(&m);
        }
        log.write(&line)?;
        Some(m)
    };
    log.sync_len()?;

    let summary = TrainSummary {
        out_dir: out_dir.to_path_buf(),
        label: setup.kind,
        steps: state.step,
        epochs_completed: state.epoch,
        stopped_early: state.stopped_early,
        best_epoch: state.best_epoch,
        validation,
        test,
        history: state.history.clone(),
        members: Vec::new(),
        selection: None,
    };
    write_output(out_dir, cfg, &setup, &final_weights, &summary)?;
    if !cfg.keep_checkpoints {
        std::fs::remove_dir_all(&state_dir).map_err(|e| evalloop_core::Error::io(&state_dir, e))?;
    }
    tracing::info!(out = %out_dir.display(), steps = summary.steps, "training done");
    Ok(Some(summary))
}

/// The training forward pass of the encoded rows `items` of a micro-batch, cut into up to
/// `shards` contiguous shards: with one, a plain forward pass on the model's dropout stream; with
/// several, the shards run side by side on the rayon pool, shard `s` drawing its dropout masks
/// from stream `s` of the model's seed at the shared stream's position, which then moves on by
/// the most any shard drew (so masks, and results, depend on the shard count, not on threads or
/// timing). When every thread has a shard, each shard's linear layers run their gemm on its own
/// thread ([`ops::serial`]). Returns each shard's outputs `(rows, num_labels)`, with its graph.
fn forward_shards(
    tm: &TrainableModel,
    setup: &Setup,
    items: &[&Encoded],
    shards: usize,
    device: &Device,
) -> evalloop_core::Result<Vec<Tensor>> {
    let forward = |rows: &[&Encoded]| -> evalloop_core::Result<Tensor> {
        let batch = setup.tokenizer.collate(rows, device)?;
        tm.model.forward_t(&batch.input_ids, &batch.token_type_ids, &batch.attention_mask, true).map_err(model_err)
    };
    let size = items.len().div_ceil(shards.clamp(1, items.len().max(1)));
    if size >= items.len() {
        return Ok(vec![forward(items)?]);
    }
    let rng = tm.rng();
    let start = rng.word_pos().map_err(model_err)?;
    let n_shards = items.len().div_ceil(size);
    let done: Vec<(evalloop_core::Result<Tensor>, u128)> = items
        .par_chunks(size)
        .enumerate()
        .map(|(s, rows)| rng.with_stream(s as u64, start, || on_shard_thread(n_shards, || forward(rows))))
        .collect();
    rng.advance(done.iter().map(|d| d.1).max().unwrap_or(0)).map_err(model_err)?;
    done.into_iter().map(|d| d.0).collect()
}

/// Runs one of `shards` shards' work: with the linear layers' gemm on this thread
/// ([`ops::serial`]) when every thread of the pool has a shard, else split over the pool.
fn on_shard_thread<R>(shards: usize, f: impl FnOnce() -> R) -> R {
    if shards >= rayon::current_num_threads() { ops::serial(f) } else { f() }
}

/// The parameter gradients of each shard of [`forward_shards`], given the loss gradient
/// `g_out` with respect to the shards' outputs stacked in order: shard `s`'s backward pass of
/// `sum(outputs_s * g_out[rows of s])`, side by side on the rayon pool.
fn backward_shards(outputs: &[Tensor], g_out: &Tensor) -> evalloop_core::Result<Vec<candle_core::backprop::GradStore>> {
    let mut offsets = Vec::with_capacity(outputs.len());
    let mut at = 0;
    for o in outputs {
        offsets.push(at);
        at += o.dim(0).map_err(model_err)?;
    }
    outputs
        .par_iter()
        .zip(offsets)
        .map(|(o, off)| {
            on_shard_thread(outputs.len(), || -> candle_core::Result<_> {
                let g = g_out.narrow(0, off, o.dim(0)?)?;
                (o * g)?.sum_all()?.backward()
            })
            .map_err(model_err)
        })
        .collect()
}

/// Adds the gradients in `g` of the trainable parameters to their slots in `grads`.
fn add_grads(
    grads: &mut [Option<Tensor>],
    g: &candle_core::backprop::GradStore,
    params: &[weights::Param],
) -> evalloop_core::Result<()> {
    for (slot, p) in grads.iter_mut().zip(params) {
        if let Some(gp) = g.get(p.var.as_tensor()) {
            *slot = Some(match slot.take() {
                None => gp.clone(),
                Some(acc) => (acc + gp).map_err(model_err)?,
            });
        }
    }
    Ok(())
}

fn write_json(path: &Path, value: &impl Serialize) -> evalloop_core::Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| evalloop_core::Error::Model(format!("{}: {e}", path.display())))?;
    write_atomic(path, format!("{text}\n").as_bytes())
}

fn write_output(
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
    write_atomic(&out_dir.join("model.safetensors"), &bytes)?;
    write_json(&out_dir.join("config.json"), &setup.config)?;
    let max_length = setup.tokenizer.max_length();
    for f in ["tokenizer.json", "vocab.txt", "special_tokens_map.json"] {
        let src = setup.base_dir.join(f);
        if src.is_file() {
            let bytes = std::fs::read(&src).map_err(|e| evalloop_core::Error::io(&src, e))?;
            write_atomic(&out_dir.join(f), &bytes)?;
        }
    }
    let tc_src = setup.base_dir.join("tokenizer_config.json");
    let mut tok_cfg: serde_json::Value = if tc_src.is_file() {
        let text = std::fs::read_to_string(&tc_src).map_err(|e| evalloop_core::Error::io(&tc_src, e))?;
        serde_json::from_str(&text).map_err(|e| evalloop_core::Error::Input(format!("{}: {e}", tc_src.display())))?
    } else {
        serde_json::json!({"tokenizer_class": "BertTokenizer", "do_lower_case": true})
    };
    if let Some(obj) = tok_cfg.as_object_mut() {
        obj.insert("model_max_length".into(), max_length.into());
    }
    write_json(&out_dir.join("tokenizer_config.json"), &tok_cfg)?;
    write_json(
        &out_dir.join("training_config.json"),
        &serde_json::json!({
            "train": cfg,
            "label": setup.kind,
            "dimensions": setup.dimensions,
            "max_length": max_length,
            "truncation": cfg.truncation,
            "base_model_dir": setup.base_dir,
            "evalloop_version": env!("CARGO_PKG_VERSION"),
        }),
    )?;
    write_json(&out_dir.join("metrics.json"), summary)?;
    Ok(())
}

#[cfg(test)]
mod tests;
