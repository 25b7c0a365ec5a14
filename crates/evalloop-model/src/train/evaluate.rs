//! Evaluation of a model on labelled rows: the training model on a split while training, a
//! finished model directory (through its scorer) for ensembles and model selection.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Device;

use super::config::LabelKind;
use super::data::{self, Example};
use super::metrics::{EvalAccumulator, EvalMetrics};
use super::setup::Setup;
use crate as model;
use crate::Encoded;

/// The metrics of `scorer`'s scores (as `evalloop score` gives them) on the rows of the named
/// split files of `dataset_dir`, pooled (missing files are empty); `None` without rows.
pub(super) fn evaluate_scorer(
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

/// The unweighted loss of a logit against its label: BCE with logits for binary, squared error
/// for graded.
fn example_loss(logit: f64, label: f64, kind: LabelKind) -> f64 {
    match kind {
        LabelKind::Binary => logit.max(0.0) - logit * label + (-logit.abs()).exp().ln_1p(),
        LabelKind::Graded => (logit - label) * (logit - label),
    }
}

/// The metrics of `model` on `examples` (encoded as `enc`): output 0 against the labels, and
/// outputs 1..K against the dimension labels.
pub(super) fn evaluate(
    model: &model::SequenceClassifier,
    setup: &Setup,
    examples: &[Example],
    enc: &[Encoded],
    batch_size: usize,
    device: &Device,
) -> evalloop_core::Result<EvalMetrics> {
    let outputs = model::predict(model, &setup.tokenizer, enc, batch_size, device, false, model::Precision::F32)?;
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
