//! What a training run starts from: the dataset's splits read and encoded, the label kind and
//! objective resolved, the base model's config with its new head, the tokenizer, and the
//! fingerprint a checkpoint must match to be resumed.

use std::path::{Path, PathBuf};

use sha2::Digest;

use super::config::{EvalMetric, LabelKind, Objective, TrainConfig};
use super::corrupt;
use super::data::{self, Example};
use crate as model;
use crate::{BertConfig, Encoded, PairTokenizer};

/// A training run's inputs, read and checked once before the loop.
pub(super) struct Setup {
    /// The label kind of the pointwise loss and of output 0.
    pub kind: LabelKind,
    /// The trained human dimensions, outputs 1..K (empty: one output).
    pub dimensions: Vec<String>,
    /// The objective (`[train] objective`, else the label kind's).
    pub objective: Objective,
    /// The base model's config with the classification head set.
    pub config: BertConfig,
    /// The base model's directory.
    pub base_dir: PathBuf,
    pub tokenizer: PairTokenizer,
    pub train: Vec<Example>,
    pub train_enc: Vec<Encoded>,
    /// `corruption_pairs`: the encoded corrupted copy of each training example for the first
    /// epoch (`None` when off or when the output has no copy); see [`corrupted_copies`].
    pub train_corrupt: Vec<Option<Encoded>>,
    /// The labelled rows of `train` (the first ones; the rest are `unlabelled` outputs and
    /// the outputs of preference pairs that are not labelled rows).
    pub labelled: usize,
    /// `preference_pairs`: per row of `train`, the pairs it is the chosen output of, as (the
    /// rejected output's row, the pair's loss weight); empty when off.
    pub preferences: std::collections::HashMap<usize, Vec<(usize, f64)>>,
    /// `distill`: the temperature of its soft targets in score units (`distill_temperature` x
    /// the sd of the training rows' evaluator scores); 0 when off or turned off by the check.
    pub distill_scale: f64,
    /// `distill`: the agreement check that decided whether it ran.
    pub distill: Option<DistillCheck>,
    pub validation: Vec<Example>,
    pub validation_enc: Vec<Encoded>,
    pub test: Vec<Example>,
    pub test_enc: Vec<Encoded>,
    /// Hash of the config (less the device and checkpoint bookkeeping) and the training data.
    pub fingerprint: String,
}

/// The encoded corrupted copy of each of `train`'s outputs for `epoch` (all `None` without
/// `corruption_pairs`): `"drop"` copies are drawn once per run, the other families and
/// mixtures (`corruption_mix`) anew each epoch (from `seed` and the epoch), so a run and its
/// resumption repeat. `insert` and `replace` borrow a sentence from the output of a training
/// example of another group, drawn from the same stream.
pub(super) fn corrupted_copies(
    tokenizer: &PairTokenizer,
    train: &[Example],
    cfg: &TrainConfig,
    epoch: usize,
) -> evalloop_core::Result<Vec<Option<Encoded>>> {
    if cfg.corruption_pairs <= 0.0 {
        return Ok(vec![None; train.len()]);
    }
    let seed = if cfg.corruption_per_epoch() {
        cfg.seed ^ (epoch as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03)
    } else {
        cfg.seed
    };
    let families = cfg.corruption_families().map_err(|e| evalloop_core::Error::Input(format!("[train] {e}")))?;
    let copies: Vec<Option<String>> = train
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let ctx = corrupt::Context { prompt: &e.prompt, donor: donor(train, i, seed) };
            match families.first_key_value() {
                // One family: its own stream, as `corruption` alone always drew.
                Some((&kind, _)) if families.len() == 1 => corrupt::corrupt(&e.output, ctx, seed, i, kind),
                _ => corrupt::corrupt_mixed(&e.output, ctx, seed, i, &families).map(|(_, c)| c),
            }
        })
        .collect();
    let pairs: Vec<(&str, &str)> =
        train.iter().zip(&copies).filter_map(|(e, c)| c.as_deref().map(|c| (e.prompt.as_str(), c))).collect();
    let mut encoded = tokenizer.encode_pairs(&pairs)?.into_iter();
    Ok(copies.iter().map(|c| c.as_ref().and_then(|_| encoded.next())).collect())
}

/// The output of another group's example to borrow a sentence from, for example `i`: drawn
/// from `seed` and `i` (eight tries, then none).
fn donor(train: &[Example], i: usize, seed: u64) -> Option<&str> {
    use rand::{Rng, SeedableRng};
    if train.len() < 2 {
        return None;
    }
    let mut rng =
        rand_chacha::ChaCha8Rng::seed_from_u64(seed.rotate_left(17) ^ (i as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9));
    (0..8)
        .map(|_| &train[rng.random_range(0..train.len())])
        .find(|d| d.group.is_none() || d.group != train[i].group)
        .map(|d| d.output.as_str())
}

/// `preference_pairs`: reads the train split's pairs of `pairs.jsonl` and maps each output to
/// its row of `train`: a labelled row (the first `labelled`) with the same request id, else a
/// row appended with weight 0 and no label (ranked only, batched with its group). Returns, per
/// chosen row, its (rejected row, loss weight) pairs.
fn preference_rows(
    dataset_dir: &Path,
    cfg: &TrainConfig,
    train: &mut Vec<Example>,
    labelled: usize,
    dims: usize,
) -> evalloop_core::Result<std::collections::HashMap<usize, Vec<(usize, f64)>>> {
    let mut out: std::collections::HashMap<usize, Vec<(usize, f64)>> = Default::default();
    if cfg.preference_pairs <= 0.0 {
        return Ok(out);
    }
    let path = dataset_dir.join(evalloop_core::files::PAIRS_FILE);
    if !path.exists() {
        return Err(evalloop_core::Error::Input(format!(
            "[train] preference_pairs: {} is missing (dataset build writes it when the store holds preferences)",
            path.display()
        )));
    }
    let mut row_of: std::collections::HashMap<String, usize> =
        train[..labelled].iter().enumerate().map(|(i, e)| (e.request_id.clone(), i)).collect();
    for p in data::read_pairs(&path, "train")? {
        let mut row = |id: &str, output: &str| {
            *row_of.entry(id.to_string()).or_insert_with(|| {
                train.push(Example {
                    request_id: id.to_string(),
                    prompt: p.prompt.clone(),
                    output: output.to_string(),
                    label: 0.0,
                    weight: 0.0,
                    group: Some(p.group.clone()),
                    labels: vec![None; dims],
                    evaluator: None,
                });
                train.len() - 1
            })
        };
        let chosen = row(&p.request_id_chosen, &p.chosen);
        let rejected = row(&p.request_id_rejected, &p.rejected);
        let w = p.weight * cfg.preference_pairs;
        if w > 0.0 {
            out.entry(chosen).or_default().push((rejected, w));
        }
    }
    Ok(out)
}

/// Whether `distill` ran, and why: the production evaluator's agreement with the labels.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DistillCheck {
    /// The group-level Spearman of `evaluator_score` with the label over the labelled training
    /// and validation rows (the dataset-level Spearman when `groups` is 0); `None` when
    /// undefined.
    pub agreement: Option<f64>,
    /// Groups averaged into `agreement`.
    pub groups: usize,
    /// Labelled rows with an evaluator score.
    pub rows: usize,
    /// `distill_min_agreement`.
    pub min_agreement: f64,
    /// Whether the soft pairs were trained on.
    pub used: bool,
}

/// `distill`'s temperature in score units (`distill_temperature` x the population sd of the
/// evaluator scores of `train`'s rows) and the agreement check; (0, None) when `distill` is off,
/// (0, check) when the evaluator agrees with the labels less than `distill_min_agreement`.
/// Errors when no training row has a score, or all have the same one.
fn distill_setup(
    cfg: &TrainConfig,
    train: &[Example],
    labelled: usize,
    validation: &[Example],
    train_path: &Path,
) -> evalloop_core::Result<(f64, Option<DistillCheck>)> {
    if cfg.distill <= 0.0 {
        return Ok((0.0, None));
    }
    let scores: Vec<f64> = train.iter().filter_map(|e| e.evaluator).collect();
    let n = scores.len() as f64;
    let mean = scores.iter().sum::<f64>() / n;
    let sd = (scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / n).sqrt();
    if scores.is_empty() || sd.is_nan() || sd <= 0.0 {
        return Err(evalloop_core::Error::Input(format!(
            "[train] distill: {} training rows of {} carry a varying field evaluator_score (the production \
             evaluator's score, written by `evalloop dataset build` of this version); nothing to distil",
            scores.len(),
            train_path.display()
        )));
    }
    let judged: Vec<(&str, f64, f64)> = train[..labelled]
        .iter()
        .chain(validation)
        .filter_map(|e| Some((e.group.as_deref().unwrap_or(""), e.evaluator?, e.label)))
        .collect();
    let grouped: Vec<(&str, f64, f64)> = judged.iter().filter(|r| !r.0.is_empty()).copied().collect();
    let g = evalloop_core::stats::group::group_correlation(&grouped, 2);
    let (agreement, groups) = match g.mean_spearman.ok() {
        Some(a) => (Some(a), g.groups_used),
        None => {
            let (x, y): (Vec<f64>, Vec<f64>) = judged.iter().map(|r| (r.1, r.2)).unzip();
            (evalloop_core::stats::corr::coefficient(evalloop_core::stats::corr::CorrKind::Spearman, &x, &y).ok(), 0)
        }
    };
    let used = cfg.distill_min_agreement <= -1.0 || agreement.is_some_and(|a| a >= cfg.distill_min_agreement);
    let check = DistillCheck { agreement, groups, rows: judged.len(), min_agreement: cfg.distill_min_agreement, used };
    if !used {
        tracing::warn!(
            agreement = ?agreement,
            min = cfg.distill_min_agreement,
            "distill is off for this run: the production evaluator agrees with the labels less than distill_min_agreement"
        );
        return Ok((0.0, Some(check)));
    }
    Ok((cfg.distill_temperature * sd, Some(check)))
}

/// Reads and checks everything a run of `cfg` on `dataset_dir` needs (see [`Setup`]).
pub(super) fn setup(dataset_dir: &Path, cfg: &TrainConfig) -> evalloop_core::Result<Setup> {
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
    // Unlabelled outputs go after the labelled rows, with weight 0 (ranking pairs only).
    let labelled = train.len();
    if cfg.unlabelled {
        train.extend(data::read_unlabelled(&dataset_dir.join("unlabelled.jsonl"), dimensions.len())?);
    }
    let preferences = preference_rows(dataset_dir, cfg, &mut train, labelled, dimensions.len())?;
    if labelled == 0 && preferences.is_empty() {
        return Err(evalloop_core::Error::Input(format!("{}: no examples", train_path.display())));
    }
    let validation = data::read_split_with(&dataset_dir.join("validation.jsonl"), kind, &dimensions, true)?;
    let (distill_scale, distill) = distill_setup(cfg, &train, labelled, &validation, &train_path)?;
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
        config.set_dropout(p);
    }
    if cfg.freeze_layers > config.num_hidden_layers {
        return Err(evalloop_core::Error::Input(format!(
            "[train] freeze_layers: {} but the base model has {} layers",
            cfg.freeze_layers, config.num_hidden_layers
        )));
    }
    let max_length = cfg.max_length.min(config.max_sequence_length());
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

    let mut fingerprint_pairs: Vec<(usize, usize, f64)> =
        preferences.iter().flat_map(|(c, v)| v.iter().map(|(r, w)| (*c, *r, *w))).collect();
    fingerprint_pairs.sort_by_key(|p| (p.0, p.1));
    let fingerprint = fingerprint(cfg, kind, &train, &train_enc, &fingerprint_pairs);
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
        preferences,
        distill_scale,
        distill,
        validation,
        validation_enc,
        test,
        test_enc,
        fingerprint,
    })
}

/// What a checkpoint must agree with to be resumed: the config (less the device and
/// checkpoint bookkeeping), the label kind and the training data (ids, labels, weights and
/// token ids), as a hex SHA-256.
fn fingerprint(
    cfg: &TrainConfig,
    kind: LabelKind,
    train: &[Example],
    train_enc: &[Encoded],
    pairs: &[(usize, usize, f64)],
) -> String {
    let mut hasher = sha2::Sha256::new();
    let mut fp_cfg = cfg.clone();
    fp_cfg.device = String::new();
    fp_cfg.keep_checkpoints = false;
    hasher.update(serde_json::to_string(&fp_cfg).unwrap_or_default().as_bytes());
    hasher.update(format!("{kind:?}").as_bytes());
    for e in train {
        hasher.update(e.request_id.as_bytes());
        hasher.update(e.label.to_le_bytes());
        hasher.update(e.weight.to_le_bytes());
        for l in &e.labels {
            hasher.update(l.unwrap_or(-1.0).to_le_bytes());
        }
    }
    for e in train_enc {
        for id in &e.ids {
            hasher.update(id.to_le_bytes());
        }
    }
    if cfg.distill > 0.0 {
        for e in train {
            hasher.update(e.evaluator.unwrap_or(-1.0).to_le_bytes());
        }
    }
    for (c, r, w) in pairs {
        hasher.update((*c as u64).to_le_bytes());
        hasher.update((*r as u64).to_le_bytes());
        hasher.update(w.to_le_bytes());
    }
    hex::encode(hasher.finalize())
}

/// Which parameters train: all but the embeddings under `freeze_embeddings` and the first
/// `freeze_layers` encoder layers.
pub(super) fn trainable_filter(cfg: &TrainConfig) -> impl Fn(&str) -> bool + use<> {
    let freeze_embeddings = cfg.freeze_embeddings;
    let freeze_layers = cfg.freeze_layers;
    move |name: &str| {
        if freeze_embeddings && model::weights::is_embedding(name) {
            return false;
        }
        match model::weights::layer_index(name) {
            Some(idx) => idx >= freeze_layers,
            None => true,
        }
    }
}
