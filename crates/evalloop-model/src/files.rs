//! The files of a model directory that evalloop writes and reads beside the Hugging Face ones
//! (`config.json`, `model.safetensors`, the tokenizer files): one typed definition of each.
//!
//! - `training_config.json`: [`TrainingConfigFile`], how the model was trained;
//! - `metrics.jsonl`: one [`MetricsLine`] per logged training step and per evaluation;
//! - `metrics.json`: [`crate::train::TrainSummary`], the finished run;
//! - `ensemble.json`: [`EnsembleFile`], in an ensemble's directory only;
//! - `blend.json`: [`BlendFile`], in a model trained with `[train] blend_evaluator` only;
//!
//! and `scores.test.jsonl` of a weekly run, one [`ScoreRow`] per held-out request. Every object
//! is written with its keys in sorted order, as evalloop has always written them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use evalloop_core::files::{LabelKind, sorted_value};
use evalloop_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::Truncation;
use crate::train::config::TrainConfig;

/// `training_config.json`'s file name.
pub const TRAINING_CONFIG_FILE: &str = "training_config.json";
/// `ensemble.json`'s file name: the file that makes a model directory an ensemble.
pub const ENSEMBLE_FILE: &str = "ensemble.json";
/// `blend.json`'s file name: the file that makes a model's score a blend with the production
/// evaluator's.
pub const BLEND_FILE: &str = "blend.json";
/// `metrics.jsonl`'s file name.
pub const METRICS_LOG_FILE: &str = "metrics.jsonl";
/// `metrics.json`'s file name.
pub const METRICS_FILE: &str = "metrics.json";

/// `training_config.json`: the `[train]` config and what training settled from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingConfigFile {
    /// The base model's directory (resolved from `train.base_model`).
    pub base_model_dir: PathBuf,
    /// The human dimensions of outputs 1..K (empty for a one-output model).
    pub dimensions: Vec<String>,
    /// The evalloop version that trained it.
    pub evalloop_version: String,
    /// The label kind the head was trained for.
    pub label: LabelKind,
    /// The effective maximum length (the config's, capped by the base model's positions).
    pub max_length: usize,
    /// The `[train]` config, defaults filled in.
    pub train: TrainConfig,
    /// The truncation rule of the tokenizer.
    pub truncation: Truncation,
}

impl TrainingConfigFile {
    /// Reads `model_dir/training_config.json`: `None` when the directory has none (a model
    /// trained elsewhere); a file this version cannot read is refused with what to do.
    pub fn read(model_dir: &Path) -> Result<Option<TrainingConfigFile>> {
        let path = model_dir.join(TRAINING_CONFIG_FILE);
        let Ok(bytes) = std::fs::read(&path) else { return Ok(None) };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::Input(format!(
                "{}: {e}; written by another evalloop version: train the model again with `evalloop train`, \
                 or remove the file to score with config.json and the tokenizer's settings alone",
                path.display()
            ))
        })
    }

    /// Writes it into `model_dir` atomically (pretty JSON, keys sorted, a final newline).
    pub fn write(&self, model_dir: &Path) -> Result<()> {
        write_sorted(&model_dir.join(TRAINING_CONFIG_FILE), self)
    }
}

/// `blend.json`: the second stage of a model trained with `[train] blend_evaluator`. Its score
/// is `intercept + slope x ((1 - weight) z_model + weight z_evaluator)`, clamped to [0, 1],
/// where `z_model` is the model's own score and `z_evaluator` the production evaluator's
/// `overall`, each standardised by the mean and sd they had on the validation split. `weight`
/// was chosen on the validation split, `intercept` and `slope` (> 0) map the blend onto the
/// labels' scale (least squares on the validation split).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlendFile {
    /// The production evaluator whose `overall` is blended in (the dataset's `[dataset]
    /// evaluator`); `None`: the store's only evaluator.
    pub evaluator: Option<String>,
    pub evaluator_mean: f64,
    pub evaluator_sd: f64,
    pub intercept: f64,
    pub model_mean: f64,
    pub model_sd: f64,
    pub slope: f64,
    /// The production evaluator's share of the blend, in [0, 1].
    pub weight: f64,
}

impl BlendFile {
    /// The blended score of a request from the model's score and the production evaluator's
    /// `overall`.
    pub fn apply(&self, model: f64, evaluator: f64) -> f64 {
        let z = |x: f64, m: f64, sd: f64| (x - m) / if sd > 0.0 { sd } else { 1.0 };
        let b = (1.0 - self.weight) * z(model, self.model_mean, self.model_sd)
            + self.weight * z(evaluator, self.evaluator_mean, self.evaluator_sd);
        (self.intercept + self.slope * b).clamp(0.0, 1.0)
    }

    /// Reads `dir/blend.json`; `None` when there is none. Errors name the file.
    pub fn read(dir: &Path) -> Result<Option<BlendFile>> {
        let path = dir.join(BLEND_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let b: BlendFile = serde_json::from_str(&text).map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
        let finite = [b.evaluator_mean, b.evaluator_sd, b.intercept, b.model_mean, b.model_sd, b.slope, b.weight];
        if finite.iter().any(|x| !x.is_finite()) || !(0.0..=1.0).contains(&b.weight) || b.slope <= 0.0 {
            return Err(Error::Input(format!(
                "{}: every field must be finite, weight in [0, 1] and slope > 0",
                path.display()
            )));
        }
        Ok(Some(b))
    }

    /// Writes it into `dir` atomically (pretty JSON, keys sorted).
    pub fn write(&self, dir: &Path) -> Result<()> {
        write_sorted(&dir.join(BLEND_FILE), self)
    }
}

/// `ensemble.json`: the member directories (relative to the ensemble directory) and how their
/// scores are combined.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnsembleFile {
    /// Member model directories, relative to the ensemble directory.
    pub members: Vec<String>,
    /// The seeds the members were trained with, in member order.
    #[serde(default)]
    pub seeds: Vec<u64>,
    /// How scores are combined; only `"mean"` (the default).
    #[serde(default = "mean")]
    pub aggregate: String,
}

fn mean() -> String {
    "mean".to_string()
}

impl EnsembleFile {
    /// Reads `dir/ensemble.json`; `None` when `dir` is not an ensemble.
    pub fn read(dir: &Path) -> Result<Option<EnsembleFile>> {
        let path = dir.join(ENSEMBLE_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        serde_json::from_str(&text).map(Some).map_err(|e| Error::Input(format!("{}: {e}", path.display())))
    }

    /// Writes it into `dir` atomically (pretty JSON in field order, a final newline).
    pub fn write(&self, dir: &Path) -> Result<()> {
        evalloop_core::atomic::write_json_pretty(&dir.join(ENSEMBLE_FILE), self)
    }
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum MetricsLine {
    /// Every `log_every` optimizer steps: the running training loss.
    Train(TrainLine),
    /// At each epoch's end on the validation split, and once on the test split at the end.
    Eval(EvalLine),
}

/// A training line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainLine {
    /// 1-based epoch.
    pub epoch: usize,
    /// Examples per second since the process started training.
    pub examples_per_sec: f64,
    /// Mean loss over the steps since the last line (`null`, NaN, when undefined).
    #[serde(deserialize_with = "nan_if_null")]
    pub loss: f64,
    /// The learning rate of the last step.
    pub lr: f64,
    /// Optimizer steps so far.
    pub step: usize,
}

/// An evaluation line of `metrics.jsonl` (the metrics of [`crate::train::EvalMetrics`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalLine {
    /// Binary labels only.
    pub accuracy: Option<f64>,
    /// Binary labels only.
    pub auc: Option<f64>,
    /// Multi-task models: per dimension; absent for a one-output model.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dimensions: BTreeMap<String, DimensionLine>,
    /// 1-based epoch (the kept epoch on the test line; `null` without one).
    pub epoch: Option<usize>,
    /// Mean within-group Spearman.
    pub group_spearman: Option<f64>,
    /// Groups averaged into `group_spearman`.
    pub groups_used: usize,
    /// Weighted mean loss; `null` (NaN) when the weights sum to 0.
    #[serde(deserialize_with = "nan_if_null")]
    pub loss: f64,
    /// Examples.
    pub n: usize,
    /// Spearman of scores and labels.
    pub spearman: Option<f64>,
    /// `validation` or `test`.
    pub split: String,
    /// Optimizer steps so far.
    pub step: usize,
}

/// One dimension's figures on an evaluation line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DimensionLine {
    /// Mean within-group Spearman.
    pub group_spearman: Option<f64>,
    /// Weighted mean squared error; `null` (NaN) without labelled rows.
    #[serde(deserialize_with = "nan_if_null")]
    pub loss: f64,
    /// Rows with a label on the dimension.
    pub n: usize,
    /// Spearman of the dimension's output and labels.
    pub spearman: Option<f64>,
}

fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

impl MetricsLine {
    /// The line as written (compact JSON, keys sorted, no newline).
    pub fn to_line(&self) -> String {
        serde_json::to_value(self).map(|v| v.to_string()).unwrap_or_default()
    }

    /// Reads `path`'s lines; a line that does not parse (cut short by a killed process) is
    /// skipped with a warning naming file:line.
    pub fn read_all(path: &Path) -> Result<Vec<MetricsLine>> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            match evalloop_core::jsonl::parse_line(path, i + 1, line) {
                Ok(m) => out.push(m),
                Err(e) => tracing::warn!("{e}; line skipped"),
            }
        }
        Ok(out)
    }
}

/// One held-out request's score by the retrained evaluator (`scores.test.jsonl` of a run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreRow {
    /// The log's request id.
    pub request_id: String,
    /// The evaluator's score.
    pub score: f64,
}

/// Writes `value` to `path` atomically as pretty JSON with sorted keys and a final newline.
pub(crate) fn write_sorted<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let what = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    evalloop_core::atomic::write_json_pretty(path, &sorted_value(value, &what)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn training_config_round_trips_and_an_older_one_is_refused_with_the_way_out() {
        let d = tempfile::tempdir().unwrap();
        let f = TrainingConfigFile {
            base_model_dir: "/models/m".into(),
            dimensions: vec!["coherence".into()],
            evalloop_version: "0.1.0".into(),
            label: LabelKind::Graded,
            max_length: 128,
            train: TrainConfig::default(),
            truncation: Truncation::default(),
        };
        assert_eq!(TrainingConfigFile::read(d.path()).unwrap(), None, "no file: a model trained elsewhere");
        f.write(d.path()).unwrap();
        assert_eq!(TrainingConfigFile::read(d.path()).unwrap(), Some(f.clone()));
        let text = std::fs::read_to_string(d.path().join(TRAINING_CONFIG_FILE)).unwrap();
        let keys: Vec<&str> = text.lines().filter(|l| l.starts_with("  \"")).map(|l| l.trim()).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "sorted top-level keys: {keys:?}");
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v.as_object_mut().unwrap().remove("truncation");
        std::fs::write(d.path().join(TRAINING_CONFIG_FILE), v.to_string()).unwrap();
        let err = TrainingConfigFile::read(d.path()).unwrap_err().to_string();
        assert!(err.contains("truncation") && err.contains("evalloop train"), "{err}");
    }

    #[test]
    fn ensemble_file_round_trips() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(EnsembleFile::read(d.path()).unwrap(), None);
        let e = EnsembleFile { members: vec!["member-1".into()], seeds: vec![1], aggregate: "mean".into() };
        e.write(d.path()).unwrap();
        assert_eq!(EnsembleFile::read(d.path()).unwrap(), Some(e));
        std::fs::write(d.path().join(ENSEMBLE_FILE), r#"{"members": ["a"]}"#).unwrap();
        assert_eq!(EnsembleFile::read(d.path()).unwrap().unwrap().aggregate, "mean", "defaults of older files");
    }

    #[test]
    fn metrics_lines_round_trip_with_sorted_keys_and_nan_as_null() {
        let train = MetricsLine::Train(TrainLine { epoch: 1, examples_per_sec: 12.5, loss: 0.5, lr: 1e-4, step: 10 });
        let line = train.to_line();
        assert_eq!(line, r#"{"epoch":1,"examples_per_sec":12.5,"kind":"train","loss":0.5,"lr":0.0001,"step":10}"#);
        assert_eq!(serde_json::from_str::<MetricsLine>(&line).unwrap(), train);
        let eval = MetricsLine::Eval(EvalLine {
            accuracy: None,
            auc: None,
            dimensions: [(
                "coherence".to_string(),
                DimensionLine { group_spearman: None, loss: 0.25, n: 3, spearman: Some(0.5) },
            )]
            .into(),
            epoch: None,
            group_spearman: Some(0.1),
            groups_used: 2,
            loss: f64::NAN,
            n: 3,
            spearman: Some(0.2),
            split: "test".into(),
            step: 4,
        });
        let line = eval.to_line();
        assert!(line.starts_with(r#"{"accuracy":null,"auc":null,"dimensions":{"coherence":"#), "{line}");
        assert!(line.contains(r#""kind":"eval","loss":null,"#), "{line}");
        let MetricsLine::Eval(back) = serde_json::from_str::<MetricsLine>(&line).unwrap() else { panic!() };
        assert!(back.loss.is_nan());
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(METRICS_LOG_FILE);
        std::fs::write(&p, format!("{}\n{{\"kind\":\"tr\n", train.to_line())).unwrap();
        assert_eq!(MetricsLine::read_all(&p).unwrap(), vec![train], "a line cut short is skipped");
    }

    #[test]
    fn score_rows_round_trip() {
        let r = ScoreRow { request_id: "r1".into(), score: 0.25 };
        let line = serde_json::to_string(&r).unwrap();
        assert_eq!(line, r#"{"request_id":"r1","score":0.25}"#);
        assert_eq!(serde_json::from_str::<ScoreRow>(&line).unwrap(), r);
    }
}
