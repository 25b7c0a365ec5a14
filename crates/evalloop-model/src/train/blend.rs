//! The blend stage (`[train] blend_evaluator`): after training, the model's score is blended
//! with the production evaluator's `overall`, so the retrained evaluator builds on the scores
//! it is meant to improve instead of starting from nothing.
//!
//! On the validation split both scores are standardised; the production evaluator's share `w`
//! is chosen from 0, 0.05, ..., 1 by the run's `eval_metric` (Spearman for `loss`), the
//! smallest `w` among the best; then a least-squares line maps the blend onto the labels'
//! scale (a slope that is not positive is replaced by the ratio of the sds, so the order is
//! kept). The result is `blend.json` ([`BlendFile`]) in the model directory, which every scorer
//! applies, and a [`BlendSummary`] in `metrics.json`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::config::{EvalMetric, TrainConfig};
use super::metrics::{EvalAccumulator, EvalMetrics};
use crate::files::BlendFile;
use crate::score::Scorer;
use evalloop_core::files::{DatasetCard, DatasetRow, LabelKind};

/// What the blend stage chose and what each score gave, in `metrics.json` (`blend`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlendSummary {
    /// The production evaluator's share of the blend.
    pub weight: f64,
    /// The metric `weight` was chosen by.
    pub metric: EvalMetric,
    /// Validation figure of the model alone (weight 0), of the production evaluator alone
    /// (weight 1) and of the blend chosen; `None` where undefined.
    pub validation_model: Option<f64>,
    pub validation_evaluator: Option<f64>,
    pub validation_blend: Option<f64>,
    /// The test split's metrics of the blended score, of the model alone and of the
    /// production evaluator alone (`None` without test rows).
    pub test_blend: Option<EvalMetrics>,
    pub test_model: Option<EvalMetrics>,
    pub test_evaluator: Option<EvalMetrics>,
}

/// One labelled row as the stage sees it.
struct Row {
    model: f64,
    evaluator: f64,
    label: f64,
    weight: f64,
    group: Option<String>,
}

fn read_rows(dataset_dir: &Path, split: &str, scorer: &Scorer) -> evalloop_core::Result<Vec<Row>> {
    let path = dataset_dir.join(format!("{split}.jsonl"));
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let rows: Vec<(usize, DatasetRow)> = evalloop_core::jsonl::read_numbered(&path)?;
    let pairs: Vec<(&str, &str)> = rows.iter().map(|(_, r)| (r.prompt.as_str(), r.output.as_str())).collect();
    let scores = scorer.score_pairs(&pairs)?;
    rows.into_iter()
        .zip(scores)
        .map(|((line, r), model)| {
            let evaluator = r.evaluator_score.ok_or_else(|| {
                evalloop_core::Error::Input(format!(
                    "{}:{line}: field evaluator_score is missing; [train] blend_evaluator needs a dataset \
                     built by `evalloop dataset build` of this version (it writes the production evaluator's score)",
                    path.display()
                ))
            })?;
            Ok(Row { model, evaluator, label: r.label.value(), weight: r.weight, group: r.group })
        })
        .collect()
}

fn mean_sd(xs: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let n = xs.clone().count().max(1) as f64;
    let m = xs.clone().sum::<f64>() / n;
    let var = xs.map(|x| (x - m) * (x - m)).sum::<f64>() / n;
    (m, var.sqrt())
}

fn metrics_of(rows: &[Row], score: impl Fn(&Row) -> f64, binary: bool) -> EvalMetrics {
    let mut acc = EvalAccumulator::default();
    for r in rows {
        let s = score(r);
        acc.update_in_group(r.group.as_deref(), s, r.label, r.weight, (s - r.label) * (s - r.label));
    }
    acc.compute(binary)
}

fn figure(m: &EvalMetrics, metric: EvalMetric) -> Option<f64> {
    match metric {
        EvalMetric::GroupSpearman => m.group_spearman,
        EvalMetric::Auc => m.auc,
        EvalMetric::Accuracy => m.accuracy,
        EvalMetric::Spearman | EvalMetric::Loss => m.spearman,
    }
}

/// Fits the blend of the model in `out_dir` (trained on `dataset_dir` under `cfg`) on the
/// validation split, writes `out_dir/blend.json` and returns what it chose. Errors: no
/// validation split, or rows without `evaluator_score`.
pub(super) fn fit(dataset_dir: &Path, cfg: &TrainConfig, out_dir: &Path) -> evalloop_core::Result<BlendSummary> {
    let device = crate::parse_device(&cfg.device)?;
    // The model alone: a blend.json of an earlier run is not applied while fitting.
    let _ = std::fs::remove_file(out_dir.join(crate::files::BLEND_FILE));
    let scorer = Scorer::load(out_dir, &device)?.with_batch_size(cfg.eval_batch_size.max(1));
    let binary = scorer.label_kind() == LabelKind::Binary;
    let validation = read_rows(dataset_dir, "validation", &scorer)?;
    if validation.len() < 2 {
        return Err(evalloop_core::Error::Input(format!(
            "[train] blend_evaluator: the blend is chosen on the validation split, which has {} rows in {}",
            validation.len(),
            dataset_dir.display()
        )));
    }
    let test = read_rows(dataset_dir, "test", &scorer)?;
    let (model_mean, model_sd) = mean_sd(validation.iter().map(|r| r.model));
    let (evaluator_mean, evaluator_sd) = mean_sd(validation.iter().map(|r| r.evaluator));
    let mut blend = BlendFile {
        evaluator: DatasetCard::read(dataset_dir)?.config.evaluator,
        evaluator_mean,
        evaluator_sd,
        intercept: 0.0,
        model_mean,
        model_sd,
        slope: 1.0,
        weight: 0.0,
    };
    let metric = cfg.eval_metric;
    let at = |b: &BlendFile, w: f64| -> Option<f64> {
        let b = BlendFile { weight: w, ..b.clone() };
        figure(&metrics_of(&validation, |r| b.apply_unclamped(r.model, r.evaluator), binary), metric)
    };
    let mut best: Option<(f64, f64)> = None;
    for k in 0..=20 {
        let w = k as f64 / 20.0;
        if let Some(v) = at(&blend, w)
            && best.is_none_or(|(_, bv)| v > bv + 1e-12)
        {
            best = Some((w, v));
        }
    }
    blend.weight = best.map_or(0.0, |(w, _)| w);
    // The labels' scale: least squares of the label on the blend (weights 1).
    let xs: Vec<f64> = validation.iter().map(|r| blend.apply_unclamped(r.model, r.evaluator)).collect();
    let (xm, xsd) = mean_sd(xs.iter().copied());
    let (ym, ysd) = mean_sd(validation.iter().map(|r| r.label));
    let cov = xs.iter().zip(&validation).map(|(x, r)| (x - xm) * (r.label - ym)).sum::<f64>() / xs.len() as f64;
    let mut slope = if xsd > 0.0 { cov / (xsd * xsd) } else { 0.0 };
    if !(slope > 0.0 && slope.is_finite()) {
        slope = if xsd > 0.0 && ysd > 0.0 { ysd / xsd } else { 1.0 };
    }
    blend.slope = slope;
    blend.intercept = ym - slope * xm;
    blend.write(out_dir)?;

    let test_of = |score: &dyn Fn(&Row) -> f64| (!test.is_empty()).then(|| metrics_of(&test, score, binary));
    Ok(BlendSummary {
        weight: blend.weight,
        metric,
        validation_model: at(&blend, 0.0),
        validation_evaluator: at(&blend, 1.0),
        validation_blend: at(&blend, blend.weight),
        test_blend: test_of(&|r| blend.apply(r.model, r.evaluator)),
        test_model: test_of(&|r| r.model),
        test_evaluator: test_of(&|r| r.evaluator),
    })
}

impl BlendFile {
    /// [`BlendFile::apply`] without the clamp to [0, 1] and the label-scale line, for choosing
    /// the weight and fitting the line.
    fn apply_unclamped(&self, model: f64, evaluator: f64) -> f64 {
        let z = |x: f64, m: f64, sd: f64| (x - m) / if sd > 0.0 { sd } else { 1.0 };
        (1.0 - self.weight) * z(model, self.model_mean, self.model_sd)
            + self.weight * z(evaluator, self.evaluator_mean, self.evaluator_sd)
    }
}
