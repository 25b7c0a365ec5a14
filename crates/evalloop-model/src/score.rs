//! Batch inference with a trained evaluator, to JSONL or back into the store.
//!
//! [`Scorer`] loads a model directory written by [`crate::train::train`] (or any Hugging Face
//! `BertForSequenceClassification` directory with config.json, model.safetensors and
//! tokenizer.json) as plain memory-mapped tensors, and scores (prompt, output) pairs: the
//! probability of "good" (sigmoid of the logit) for binary models, the regression value for
//! graded ones (`problem_type: "regression"`). Pairs are scored in batches sorted by token
//! length, so little work goes to padding.
//!
//! A directory with an `ensemble.json` (written by training with `seeds = [..]`) is an
//! ensemble: `{"members": ["member-1", "member-2", ...], "aggregate": "mean"}`, each member a
//! model directory relative to it. Its score is the mean of the members' scores (probabilities
//! for binary models, values for graded ones); the members must share the label kind.
//!
//! A multi-task model (trained with `dimensions`: `training_config.json` lists them and the
//! head has `1 + K` outputs) scores output 0 as above, and gives each dimension k the value of
//! output k, named by `id2label`; an ensemble averages each dimension over its members, which
//! must have the same dimensions.
//!
//! [`score_jsonl`] applies it to a JSONL file whose lines carry `request_id`, `prompt`,
//! `output`, and writes each line back with `score` added (and `scores: {dimension: value}` for
//! a multi-task model). Writing scores into the store as a
//! new evaluator is left to the caller (the CLI), which can use [`Scorer::score_pairs`].

use std::path::{Path, PathBuf};

use candle_core::Device;
use evalloop_core::files::LabelKind;

use crate::{InferenceModel, PairTokenizer, Precision, Truncation};

use crate::files::{BlendFile, TRAINING_CONFIG_FILE, TrainingConfigFile};
pub use crate::files::{ENSEMBLE_FILE, EnsembleFile};
pub use crate::parse_device;

/// Default number of pairs per forward pass.
pub const DEFAULT_BATCH_SIZE: usize = 32;

/// A loaded evaluator model: one model, or the members of an ensemble.
#[derive(Debug)]
pub struct Scorer {
    members: Vec<Member>,
    device: Device,
    kind: LabelKind,
    /// Dimension names of outputs 1..K (empty for a one-output model).
    dimensions: Vec<String>,
    batch_size: usize,
    dir: PathBuf,
    /// `blend.json` of the directory loaded: the model's score is blended with the production
    /// evaluator's (see [`Scorer::blend`]).
    blend: Option<BlendFile>,
    /// The linear layers' arithmetic ([`Scorer::with_precision`]).
    precision: Precision,
}

/// One model with its tokenizer.
#[derive(Debug)]
struct Member {
    model: InferenceModel,
    tokenizer: PairTokenizer,
}

impl Scorer {
    /// Loads a model directory, or an ensemble directory (one with [`ENSEMBLE_FILE`]): every
    /// member as [`Scorer::load_model`] would, with scores averaged.
    pub fn load(model_dir: &Path, device: &Device) -> evalloop_core::Result<Self> {
        let mut scorer = Self::load_unblended(model_dir, device)?;
        scorer.blend = BlendFile::read(model_dir)?;
        Ok(scorer)
    }

    /// The blend of a model trained with `[train] blend_evaluator` (`blend.json`): its scores
    /// ([`Scorer::score_pairs`]) are the model's alone, and [`BlendFile::apply`] turns each into
    /// the evaluator's score with the request's production `overall`. Callers that score with
    /// such a model must apply it; [`Scorer::score_blended`] does.
    pub fn blend(&self) -> Option<&BlendFile> {
        self.blend.as_ref()
    }

    /// The evaluator's scores of `pairs`: the model's, blended with `evaluator_scores` (the
    /// production evaluator's `overall` of each pair, in order) when the model has a blend.
    /// Without a blend `evaluator_scores` is not used; with one it must be given, one per pair.
    pub fn score_blended<S: AsRef<str>>(
        &self,
        pairs: &[(S, S)],
        evaluator_scores: Option<&[f64]>,
    ) -> evalloop_core::Result<Vec<f64>> {
        self.blended(self.score_pairs(pairs)?, evaluator_scores)
    }

    /// The model's `scores` blended with `evaluator_scores` (one per score) when the model has a
    /// blend; as they are without one.
    fn blended(&self, scores: Vec<f64>, evaluator_scores: Option<&[f64]>) -> evalloop_core::Result<Vec<f64>> {
        let Some(b) = &self.blend else { return Ok(scores) };
        match evaluator_scores {
            Some(e) if e.len() == scores.len() => Ok(scores.iter().zip(e).map(|(m, e)| b.apply(*m, *e)).collect()),
            _ => Err(evalloop_core::Error::Input(format!(
                "{}: the model blends its score with the production evaluator's ({}); give each request's \
                 production score",
                self.dir.display(),
                crate::files::BLEND_FILE
            ))),
        }
    }

    fn load_unblended(model_dir: &Path, device: &Device) -> evalloop_core::Result<Self> {
        let ens_path = model_dir.join(ENSEMBLE_FILE);
        let Some(ens) = EnsembleFile::read(model_dir)? else {
            return Self::load_model(model_dir, device);
        };
        if ens.aggregate != "mean" {
            return Err(evalloop_core::Error::Input(format!(
                "{}: field aggregate is {:?}, only \"mean\" is known",
                ens_path.display(),
                ens.aggregate
            )));
        }
        if ens.members.is_empty() {
            return Err(evalloop_core::Error::Input(format!("{}: field members is empty", ens_path.display())));
        }
        let mut members = Vec::new();
        let mut kind = None;
        let mut dimensions: Option<Vec<String>> = None;
        for m in &ens.members {
            let one = Self::load_model(&model_dir.join(m), device)?;
            if kind.is_some_and(|k| k != one.kind) {
                return Err(evalloop_core::Error::Input(format!(
                    "{}: member {m} is {:?}, the others {:?}",
                    ens_path.display(),
                    one.kind,
                    kind
                )));
            }
            if let Some(d) = dimensions.as_ref().filter(|d| **d != one.dimensions) {
                return Err(evalloop_core::Error::Input(format!(
                    "{}: member {m} has dimensions {:?}, the others {d:?}",
                    ens_path.display(),
                    one.dimensions
                )));
            }
            kind = Some(one.kind);
            dimensions = Some(one.dimensions);
            members.extend(one.members);
        }
        tracing::info!(model = %model_dir.display(), members = members.len(), "ensemble loaded");
        Ok(Scorer {
            members,
            device: device.clone(),
            kind: kind.unwrap_or(LabelKind::Binary),
            dimensions: dimensions.unwrap_or_default(),
            batch_size: DEFAULT_BATCH_SIZE,
            dir: model_dir.to_path_buf(),
            blend: None,
            precision: Precision::F32,
        })
    }

    /// Number of models averaged (1 for a plain model directory).
    pub fn num_members(&self) -> usize {
        self.members.len()
    }

    /// The truncation rule of the (first) model.
    pub fn truncation(&self) -> Truncation {
        self.members.first().map(|m| m.tokenizer.truncation()).unwrap_or_default()
    }

    /// Loads `model_dir` (config.json, model.safetensors, tokenizer.json) on `device`. The
    /// truncation length is `max_length` from training_config.json, else
    /// `model_max_length` from tokenizer_config.json, else 512, capped by the model's
    /// `max_position_embeddings`. The truncation rule is `truncation` from training_config.json
    /// (as training used it), else longest-first. Batch size [`DEFAULT_BATCH_SIZE`].
    pub fn load_model(model_dir: &Path, device: &Device) -> evalloop_core::Result<Self> {
        let model = InferenceModel::load(model_dir, device)?;
        let kind = match model.config.problem_type.as_deref() {
            Some("regression") => LabelKind::Graded,
            _ => LabelKind::Binary,
        };
        let training_path = model_dir.join(TRAINING_CONFIG_FILE);
        let training = TrainingConfigFile::read(model_dir)?;
        let tokenizer_max_length = || -> Option<usize> {
            let text = std::fs::read_to_string(model_dir.join("tokenizer_config.json")).ok()?;
            let v: serde_json::Value = serde_json::from_str(&text).ok()?;
            v.get("model_max_length")?.as_u64().map(|n| n as usize)
        };
        let max_length = training
            .as_ref()
            .map(|t| t.max_length)
            .or_else(tokenizer_max_length)
            .unwrap_or(512)
            .min(model.config.max_sequence_length());
        let truncation = training.as_ref().map(|t| t.truncation).unwrap_or_default();
        let dimensions = training.map(|t| t.dimensions).unwrap_or_default();
        check_dimensions(&training_path, &dimensions, model_dir, &model.config)?;
        let tokenizer =
            PairTokenizer::from_file(&model_dir.join("tokenizer.json"), max_length)?.with_truncation(truncation)?;
        tracing::info!(model = %model_dir.display(), ?kind, max_length, ?truncation, "scorer loaded");
        Ok(Scorer {
            members: vec![Member { model, tokenizer }],
            device: device.clone(),
            kind,
            dimensions,
            batch_size: DEFAULT_BATCH_SIZE,
            dir: model_dir.to_path_buf(),
            blend: None,
            precision: Precision::F32,
        })
    }

    /// Scores with the linear layers in `precision` ([`Precision::Int8`]: int8 weights and
    /// activations, on the CPU only; the default is f32). An error for int8 on another device.
    pub fn with_precision(mut self, precision: Precision) -> evalloop_core::Result<Self> {
        if precision == Precision::Int8 && !self.device.is_cpu() {
            return Err(evalloop_core::Error::Input(format!(
                "{}: int8 scoring runs on the CPU; score on the GPU in fp32",
                self.dir.display()
            )));
        }
        if precision == Precision::Int8 && !crate::ops::int8_has_vnni() {
            tracing::warn!(
                "int8 scoring on a CPU without AVX-512 VNNI runs on 16-bit integer products and is \
                 slower than fp32 here (BENCHMARKS.md, \"int8 scoring\"); the scores are the same"
            );
        }
        self.precision = precision;
        Ok(self)
    }

    /// The linear layers' arithmetic.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Sets the number of pairs per forward pass (at least 1).
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// Binary (scores are probabilities) or graded (scores are values).
    pub fn label_kind(&self) -> LabelKind {
        self.kind
    }

    /// The dimensions of outputs 1..K, in output order (empty for a one-output model).
    pub fn dimensions(&self) -> &[String] {
        &self.dimensions
    }

    /// The model directory.
    pub fn model_dir(&self) -> &Path {
        &self.dir
    }

    /// Raw outputs `(n, num_labels)` per pair, in input order; for an ensemble, the mean of
    /// the members' outputs.
    pub fn logits_pairs<S: AsRef<str>>(&self, pairs: &[(S, S)]) -> evalloop_core::Result<Vec<Vec<f32>>> {
        let mut sum: Vec<Vec<f32>> = Vec::new();
        for m in &self.members {
            let z = self.member_logits(m, pairs)?;
            if sum.is_empty() {
                sum = z;
            } else {
                for (acc, row) in sum.iter_mut().zip(z) {
                    for (a, v) in acc.iter_mut().zip(row) {
                        *a += v;
                    }
                }
            }
        }
        let k = self.members.len().max(1) as f32;
        Ok(sum.into_iter().map(|row| row.into_iter().map(|v| v / k).collect()).collect())
    }

    fn member_logits<S: AsRef<str>>(&self, m: &Member, pairs: &[(S, S)]) -> evalloop_core::Result<Vec<Vec<f32>>> {
        let enc = m.tokenizer.encode_pairs(pairs)?;
        Ok(crate::predict(&m.model.model, &m.tokenizer, &enc, self.batch_size, &self.device, true, self.precision)?)
    }

    /// One score per (prompt, output) pair, in input order: sigmoid of the logit for binary
    /// models (with two or more outputs: softmax probability of the last label), the output
    /// value for graded ones; for an ensemble, the mean of the members' scores.
    pub fn score_pairs<S: AsRef<str>>(&self, pairs: &[(S, S)]) -> evalloop_core::Result<Vec<f64>> {
        Ok(self.score_pairs_with_dimensions(pairs)?.0)
    }

    /// [`Scorer::score_pairs`], plus each pair's values on the model's dimensions (outputs
    /// 1..K, in [`Scorer::dimensions`] order; empty rows for a one-output model); for an
    /// ensemble, each the mean over the members.
    pub fn score_pairs_with_dimensions<S: AsRef<str>>(
        &self,
        pairs: &[(S, S)],
    ) -> evalloop_core::Result<(Vec<f64>, Vec<Vec<f64>>)> {
        let n_dims = self.dimensions.len();
        let mut sum = vec![0.0; pairs.len()];
        let mut dims = vec![vec![0.0; n_dims]; pairs.len()];
        for m in &self.members {
            let logits = self.member_logits(m, pairs)?;
            for ((acc, dacc), z) in sum.iter_mut().zip(dims.iter_mut()).zip(&logits) {
                *acc += match (self.kind, z.len()) {
                    (LabelKind::Graded, _) => z[0] as f64,
                    // One logit, or one beside the dimensions' values: P(good) is its sigmoid.
                    (LabelKind::Binary, n) if n == 1 + n_dims => 1.0 / (1.0 + (-(z[0] as f64)).exp()),
                    (LabelKind::Binary, _) => {
                        let max = z.iter().cloned().fold(f32::MIN, f32::max) as f64;
                        let sum: f64 = z.iter().map(|v| (*v as f64 - max).exp()).sum();
                        (z[z.len() - 1] as f64 - max).exp() / sum
                    }
                };
                for (a, v) in dacc.iter_mut().zip(&z[1..]) {
                    *a += *v as f64;
                }
            }
        }
        let k = self.members.len().max(1) as f64;
        let scores: Vec<f64> = sum.into_iter().map(|v| v / k).collect();
        let dims: Vec<Vec<f64>> = dims.into_iter().map(|row| row.into_iter().map(|v| v / k).collect()).collect();
        // A broken model (NaN weights, a config that passes validation but overflows) gives
        // NaN; no score at all is better than a null one stored or written as if it were one.
        if let Some(i) = (0..scores.len()).find(|&i| !scores[i].is_finite() || dims[i].iter().any(|v| !v.is_finite())) {
            return Err(evalloop_core::Error::Model(format!(
                "model {}: pair {} of the batch got a non-finite score ({}); its weights or config.json are broken",
                self.dir.display(),
                i + 1,
                scores[i]
            )));
        }
        Ok((scores, dims))
    }
}

/// Checks that the dimensions of a multi-task model (`dimensions` of training_config.json at
/// `path`) match the head: `num_labels = 1 + K` and `id2label` naming output k as dimension k.
/// Errors name the file and field.
fn check_dimensions(
    path: &Path,
    dims: &[String],
    model_dir: &Path,
    config: &crate::BertConfig,
) -> evalloop_core::Result<()> {
    if dims.is_empty() {
        return Ok(());
    }
    if config.num_labels() != 1 + dims.len() {
        return Err(evalloop_core::Error::Input(format!(
            "{}: field dimensions lists {} dimensions but config.json has num_labels {} (expected 1 + {})",
            path.display(),
            dims.len(),
            config.num_labels(),
            dims.len()
        )));
    }
    for (k, d) in dims.iter().enumerate() {
        let named = config.id2label.get(&(k + 1).to_string());
        if named != Some(d) {
            return Err(evalloop_core::Error::Input(format!(
                "{}: field id2label.{} is {named:?}, training_config.json's dimensions[{k}] is {d:?}",
                model_dir.join("config.json").display(),
                k + 1
            )));
        }
    }
    Ok(())
}

/// Stores `rows` (request id, score) as evaluator `evaluator`'s scores in one transaction;
/// what the weekly loop and `evalloop score --store` write back.
pub fn store_scores(
    store: &mut dyn evalloop_core::store::Store,
    evaluator: &str,
    rows: &[(String, f64)],
) -> evalloop_core::Result<evalloop_core::store::BatchOutcome> {
    store.begin()?;
    let o = store.insert_scores(evaluator, rows)?;
    store.commit()?;
    Ok(o)
}

/// Options of [`score_jsonl`].
#[derive(Debug, Clone)]
pub struct ScoreOptions {
    /// Pairs per forward pass (default 32).
    pub batch_size: usize,
    /// Where to run (default CPU).
    pub device: Device,
    /// Lines scored per chunk, bounding memory on large files (default 4096).
    pub chunk_lines: usize,
    /// The linear layers' arithmetic (default f32; [`Scorer::with_precision`]).
    pub precision: Precision,
}

impl Default for ScoreOptions {
    fn default() -> Self {
        ScoreOptions {
            batch_size: DEFAULT_BATCH_SIZE,
            device: Device::Cpu,
            chunk_lines: 4096,
            precision: Precision::F32,
        }
    }
}

/// What [`score_jsonl`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreSummary {
    /// Lines scored.
    pub rows: usize,
    /// Mean score (NaN when there were no rows).
    pub mean_score: f64,
}

/// Reads `input` (JSONL, each line an object with string fields `request_id`, `prompt`,
/// `output`; blank lines skipped), scores every line with the model in `model_dir`, and writes
/// `output` with each object unchanged plus `score` (a number), in input order. `output` is
/// written to a temp file and renamed at the end. Errors name file:line and field.
pub fn score_jsonl(
    model_dir: &Path,
    input: &Path,
    output: &Path,
    opts: &ScoreOptions,
) -> evalloop_core::Result<ScoreSummary> {
    let scorer =
        Scorer::load(model_dir, &opts.device)?.with_batch_size(opts.batch_size).with_precision(opts.precision)?;
    let text = std::fs::read_to_string(input).map_err(|e| evalloop_core::Error::io(input, e))?;
    let mut rows: Vec<serde_json::Map<String, serde_json::Value>> = Vec::new();
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut evaluator_scores: Vec<f64> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("{}:{}", input.display(), i + 1);
        let obj: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(line).map_err(|e| evalloop_core::Error::Input(format!("{at}: {e}")))?;
        let field = |name: &str| -> evalloop_core::Result<String> {
            obj.get(name)
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .ok_or_else(|| evalloop_core::Error::Input(format!("{at}: field {name} is missing or not a string")))
        };
        field("request_id")?;
        pairs.push((field("prompt")?, field("output")?));
        if scorer.blend().is_some() {
            // A blended model needs the production evaluator's score: `evaluator_score` (a
            // dataset row), `eval_score` (simulate's truth and held-out rows) or
            // `eval_scores.overall` (a log).
            let e = obj
                .get("evaluator_score")
                .or_else(|| obj.get("eval_score"))
                .or_else(|| obj.get("eval_scores").and_then(|v| v.get("overall")))
                .and_then(serde_json::Value::as_f64)
                .filter(|x| x.is_finite())
                .ok_or_else(|| {
                    evalloop_core::Error::Input(format!(
                        "{at}: field eval_scores.overall (or evaluator_score) is missing or not a number; the model \
                         blends its score with the production evaluator's ({})",
                        crate::files::BLEND_FILE
                    ))
                })?;
            evaluator_scores.push(e);
        }
        rows.push(obj);
    }
    let mut scores = Vec::with_capacity(pairs.len());
    let mut dim_scores = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(opts.chunk_lines.max(1)) {
        let (s, d) = scorer.score_pairs_with_dimensions(chunk)?;
        scores.extend(s);
        dim_scores.extend(d);
    }
    let scores = scorer.blended(scores, Some(&evaluator_scores))?;
    let mut w = evalloop_core::atomic::AtomicWriter::create(output)?;
    for ((mut obj, s), d) in rows.into_iter().zip(&scores).zip(&dim_scores) {
        obj.insert("score".to_string(), serde_json::json!(s));
        if !scorer.dimensions().is_empty() {
            let named: serde_json::Map<String, serde_json::Value> =
                scorer.dimensions().iter().zip(d).map(|(k, v)| (k.clone(), serde_json::json!(v))).collect();
            obj.insert("scores".to_string(), serde_json::Value::Object(named));
        }
        w.write_json_line(&serde_json::Value::Object(obj))?;
    }
    w.commit()?;
    let mean = if scores.is_empty() { f64::NAN } else { scores.iter().sum::<f64>() / scores.len() as f64 };
    Ok(ScoreSummary { rows: scores.len(), mean_score: mean })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{random_weights, tiny_config, write_tokenizer};
    use crate::weights::safetensors_bytes;

    fn write_model(dir: &Path) {
        let cfg = tiny_config();
        std::fs::write(dir.join("config.json"), serde_json::to_string(&cfg).unwrap()).unwrap();
        std::fs::write(dir.join("model.safetensors"), safetensors_bytes(&random_weights(&cfg, 8), None).unwrap())
            .unwrap();
        write_tokenizer(dir);
    }

    /// A model whose output is NaN (here a NaN classifier bias) is an error naming the model,
    /// for `score_pairs` and for `score --input`, which then writes no output file (defect 9 of
    /// the hardening work: `"score": null` with exit 0 before).
    #[test]
    fn a_model_that_outputs_nan_is_an_error_not_a_null_score() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = tiny_config();
        std::fs::write(dir.path().join("config.json"), serde_json::to_string(&cfg).unwrap()).unwrap();
        let mut w = random_weights(&cfg, 8);
        let key = w.keys().find(|k| k.starts_with("classifier.") && k.ends_with("bias")).unwrap().clone();
        let shape = w[&key].dims().to_vec();
        w.insert(key, candle_core::Tensor::full(f32::NAN, shape, &Device::Cpu).unwrap());
        std::fs::write(dir.path().join("model.safetensors"), safetensors_bytes(&w, None).unwrap()).unwrap();
        write_tokenizer(dir.path());
        let scorer = Scorer::load(dir.path(), &Device::Cpu).unwrap();
        let err = scorer.score_pairs(&[("a prompt", "an output")]).unwrap_err().to_string();
        assert!(err.contains("non-finite score"), "{err}");
        let input = dir.path().join("in.jsonl");
        std::fs::write(&input, "{\"request_id\":\"r\",\"prompt\":\"a\",\"output\":\"b\"}\n").unwrap();
        let output = dir.path().join("out.jsonl");
        let err = score_jsonl(dir.path(), &input, &output, &ScoreOptions::default()).unwrap_err().to_string();
        assert!(err.contains("non-finite score"), "{err}");
        assert!(!output.exists());
    }

    #[test]
    fn scores_do_not_depend_on_batching_or_order() {
        let dir = tempfile::tempdir().unwrap();
        write_model(dir.path());
        let pairs: Vec<(String, String)> =
            (0..9).map(|i| ("what is the answer".to_string(), "good ".repeat(i + 1) + "bad")).collect();
        let one = Scorer::load(dir.path(), &Device::Cpu).unwrap().with_batch_size(1);
        let four = Scorer::load(dir.path(), &Device::Cpu).unwrap().with_batch_size(4);
        let a = one.score_pairs(&pairs).unwrap();
        let b = four.score_pairs(&pairs).unwrap();
        assert_eq!(one.label_kind(), LabelKind::Binary);
        for (x, y) in a.iter().zip(&b) {
            assert!((0.0..=1.0).contains(x));
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
    }

    /// Eleven pairs of five lengths, for the tests that vary threads and batches.
    fn varied_pairs() -> Vec<(String, String)> {
        (0..11).map(|i| ("what is the answer".to_string(), "good ".repeat(i % 5 + 1) + "bad")).collect()
    }

    /// With several threads, batches run side by side on one thread's gemm each; the scores
    /// are those of the one-thread path.
    #[test]
    fn data_parallel_scoring_equals_one_thread() {
        let dir = tempfile::tempdir().unwrap();
        write_model(dir.path());
        let pairs = varied_pairs();
        let scorer = Scorer::load(dir.path(), &Device::Cpu).unwrap().with_batch_size(4);
        let on = |threads| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| scorer.score_pairs(&pairs).unwrap())
        };
        let (one, two, three) = (on(1), on(2), on(3));
        for ((a, b), c) in one.iter().zip(&two).zip(&three) {
            assert!((a - b).abs() < 1e-6 && (a - c).abs() < 1e-6, "{a} {b} {c}");
        }
    }

    /// int8 scoring: close to fp32 (a random tiny model's scores sit near 0.5, so the gap is
    /// small in absolute terms), not equal to it, deterministic, nearly the same whatever the
    /// threads and batches, and through `score_jsonl` the same as `score_pairs`.
    #[test]
    fn int8_scores_are_close_to_fp32_and_do_not_depend_on_threads() {
        let dir = tempfile::tempdir().unwrap();
        write_model(dir.path());
        let pairs = varied_pairs();
        let fp32 = Scorer::load(dir.path(), &Device::Cpu).unwrap().score_pairs(&pairs).unwrap();
        let scorer = Scorer::load(dir.path(), &Device::Cpu).unwrap().with_precision(Precision::Int8).unwrap();
        assert_eq!(scorer.precision(), Precision::Int8);
        let on = |threads, batch| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let s = Scorer::load(dir.path(), &Device::Cpu)
                .unwrap()
                .with_batch_size(batch)
                .with_precision(Precision::Int8)
                .unwrap();
            pool.install(|| s.score_pairs(&pairs).unwrap())
        };
        let int8 = scorer.score_pairs(&pairs).unwrap();
        assert_eq!(int8, scorer.score_pairs(&pairs).unwrap());
        // Other batches pad to other lengths, which moves the f32 attention's last bits, and
        // now and then an activation lands on the other side of a rounding step.
        for other in [on(1, 4), on(3, 2)] {
            for (a, b) in int8.iter().zip(&other) {
                assert!((a - b).abs() < 1e-3, "{a} vs {b}");
            }
        }
        assert_ne!(int8, fp32);
        let spread = fp32.iter().fold(0f64, |m, v| m.max((v - fp32[0]).abs()));
        for (a, b) in fp32.iter().zip(&int8) {
            assert!((a - b).abs() < 0.05 * spread.max(1e-3) + 2e-3, "{a} vs {b} (spread {spread})");
        }
        let input = dir.path().join("in.jsonl");
        let lines: String = pairs
            .iter()
            .enumerate()
            .map(|(i, (p, o))| {
                serde_json::json!({"request_id": format!("r{i}"), "prompt": p, "output": o}).to_string() + "\n"
            })
            .collect();
        std::fs::write(&input, lines).unwrap();
        let output = dir.path().join("out.jsonl");
        let opts = ScoreOptions { precision: Precision::Int8, ..Default::default() };
        score_jsonl(dir.path(), &input, &output, &opts).unwrap();
        let written: Vec<f64> = std::fs::read_to_string(&output)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["score"].as_f64().unwrap())
            .collect();
        assert_eq!(written, int8);
    }

    #[test]
    fn score_jsonl_adds_a_score_and_keeps_fields_and_order() {
        let dir = tempfile::tempdir().unwrap();
        write_model(dir.path());
        let input = dir.path().join("in.jsonl");
        std::fs::write(
            &input,
            "{\"request_id\":\"r1\",\"prompt\":\"what\",\"output\":\"good answer\",\"extra\":3}\n\n\
             {\"request_id\":\"r2\",\"prompt\":\"why\",\"output\":\"bad\"}\n",
        )
        .unwrap();
        let output = dir.path().join("out.jsonl");
        let s = score_jsonl(dir.path(), &input, &output, &ScoreOptions::default()).unwrap();
        assert_eq!(s.rows, 2);
        let lines: Vec<serde_json::Value> =
            std::fs::read_to_string(&output).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines[0]["request_id"], "r1");
        assert_eq!(lines[0]["extra"], 3);
        assert!(lines[1]["score"].as_f64().is_some());

        std::fs::write(&input, "{\"request_id\":\"r1\",\"prompt\":\"what\"}\n").unwrap();
        let err = score_jsonl(dir.path(), &input, &output, &ScoreOptions::default()).unwrap_err();
        assert!(err.to_string().contains("in.jsonl:1: field output"), "{err}");
    }

    #[test]
    fn an_ensemble_scores_the_mean_of_its_members() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = tiny_config();
        for (name, seed) in [("member-1", 8), ("member-2", 9)] {
            let d = dir.path().join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("config.json"), serde_json::to_string(&cfg).unwrap()).unwrap();
            std::fs::write(d.join("model.safetensors"), safetensors_bytes(&random_weights(&cfg, seed), None).unwrap())
                .unwrap();
            write_tokenizer(&d);
        }
        let pairs = [("what", "good answer"), ("why", "bad"), ("how", "a wrong answer")];
        let a = Scorer::load(&dir.path().join("member-1"), &Device::Cpu).unwrap().score_pairs(&pairs).unwrap();
        let b = Scorer::load(&dir.path().join("member-2"), &Device::Cpu).unwrap().score_pairs(&pairs).unwrap();
        let ens = EnsembleFile {
            members: vec!["member-1".into(), "member-2".into()],
            seeds: vec![1, 2],
            aggregate: "mean".into(),
        };
        std::fs::write(dir.path().join(ENSEMBLE_FILE), serde_json::to_string(&ens).unwrap()).unwrap();
        let scorer = Scorer::load(dir.path(), &Device::Cpu).unwrap();
        assert_eq!(scorer.num_members(), 2);
        let e = scorer.score_pairs(&pairs).unwrap();
        for i in 0..pairs.len() {
            assert!((e[i] - (a[i] + b[i]) / 2.0).abs() < 1e-9, "{e:?} vs {a:?} {b:?}");
        }
        assert!(a.iter().zip(&b).any(|(x, y)| (x - y).abs() > 1e-4), "members should differ");
    }
}
