//! Runs of several models: ensembles (`seeds`: one member per seed, scored as the mean) and
//! model selection (`candidates`: the base configuration and each candidate trained, judged on
//! the labels they did not train on, the best kept).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::{EvalMetric, LabelKind, Objective, TrainConfig};
use super::early_stopping::metric_value;
use super::evaluate::evaluate_scorer;
use super::metrics::EvalMetrics;
use super::output::write_summary;
use super::{TrainSummary, train};
use crate as model;

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

/// Trains `cfg` into `dir`, or with `resume` reads the summary of a run that finished there
/// (its `metrics.json` and `model.safetensors` present): an ensemble member or a candidate.
pub(super) fn train_or_reuse(
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

/// An ensemble: one member per seed of `cfg.seeds` into `out_dir/member-<seed>/`, then
/// `ensemble.json` and `metrics.json` with the averaged scores' validation and test metrics.
pub(super) fn train_ensemble(
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
    write_ensemble(out_dir, &ens)?;

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
        distill: members.first().and_then(|m| m.distill.clone()),
        dapt: None,
        members,
        selection: None,
        blend: None,
    };
    write_summary(out_dir, &summary)?;
    tracing::info!(out = %out_dir.display(), members = summary.members.len(), "ensemble trained");
    Ok(summary)
}

/// Model selection: trains the base configuration and each candidate into
/// `out_dir/candidates/<name>/` (with `resume`, a candidate with its `metrics.json` is kept),
/// judges each on the labels it did not train on ([`judge`]), keeps the best ([`choose`]) and
/// copies its files into `out_dir`.
pub(super) fn train_candidates(
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
    let mut judged = Vec::new();
    for ((name, dir, summary), (_, c)) in trained.iter().zip(&configs) {
        judged.push(judge(dataset_dir, name, dir, summary, c)?);
    }
    let (chosen, selection) = choose(cfg, &trained, &judged);
    let metric = selection.metric;
    let (_, chosen_dir, chosen_summary) = &trained[chosen];
    copy_model_files(chosen_dir, out_dir)?;
    let summary = TrainSummary { out_dir: out_dir.to_path_buf(), selection: Some(selection), ..chosen_summary.clone() };
    write_summary(out_dir, &summary)?;
    tracing::info!(chosen = %summary.selection.as_ref().map_or("", |s| s.chosen.as_str()), metric = ?metric, "model selected");
    Ok(summary)
}

/// The figures a trained candidate is judged by, and on which rows: the labels it did not
/// train on, i.e. its validation figures, or for a self-supervised candidate (which uses no
/// label) its scores on the training and validation splits together.
fn judge(
    dataset_dir: &Path,
    name: &str,
    dir: &Path,
    summary: &TrainSummary,
    c: &TrainConfig,
) -> evalloop_core::Result<(&'static str, EvalMetrics)> {
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
            return Ok(("train+validation", m));
        }
    }
    Ok(("validation", validation))
}

/// Compares the `judged` figures of the `trained` candidates (in training order, `base`
/// first) on `cfg.eval_metric` (`spearman` in place of `group_spearman` below
/// `select_min_groups` usable groups): the index of the kept one and the [`Selection`].
fn choose(
    cfg: &TrainConfig,
    trained: &[(String, PathBuf, TrainSummary)],
    judged: &[(&'static str, EvalMetrics)],
) -> (usize, Selection) {
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
            .zip(judged)
            .map(|((name, dir, _), (on, m))| CandidateResult {
                name: name.clone(),
                value: figure(m),
                judged_on: on.to_string(),
                groups_used: m.groups_used,
                dir: dir.clone(),
            })
            .collect(),
    };
    (chosen, selection)
}

/// Copies the kept candidate's model files (not its resumable state, nor its `metrics.json`,
/// which the caller writes last so that a directory with it is complete) from `chosen_dir`
/// into `out_dir`, each atomically, and removes an `ensemble.json` left there.
fn copy_model_files(chosen_dir: &Path, out_dir: &Path) -> evalloop_core::Result<()> {
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
    Ok(())
}

/// `ensemble.json` in `out_dir`: the members' directories and seeds (see [`crate::score`]).
fn write_ensemble(out_dir: &Path, ens: &crate::score::EnsembleFile) -> evalloop_core::Result<()> {
    ens.write(out_dir)
}
