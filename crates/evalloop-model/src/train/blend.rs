//! The blend stage (`[train] blend_evaluator`): after training, the model's score is blended
//! with the production evaluator's `overall`, so the retrained evaluator builds on the scores
//! it is meant to improve instead of starting from nothing.
//!
//! On the validation split both scores are standardised and the production evaluator's share
//! `w` is chosen by `blend_rule`:
//! - `regression` (the default): the least-squares weights of the two standardised scores for
//!   the label, `b = R^-1 r`, from three Pearson correlations taken within prompt groups (each
//!   group centred on its own means; the whole split is one group when `eval_metric` is not
//!   `group_spearman`, or when the validation split has fewer than [`MIN_WITHIN_DF`]
//!   within-group degrees of freedom): the model's with the label and with the evaluator on the
//!   validation split, and the evaluator's with the label on the training and validation splits,
//!   which it never saw, so that figure rests on several times the labels. A negative weight becomes 0
//!   (so does the evaluator's when its correlation with the label is not positive) and
//!   `w = b_evaluator / (b_model + b_evaluator)`. Three correlations are steadier than the
//!   search below on a validation split of a few groups, which can pick a large `w` for an
//!   evaluator that ranks worse than chance there.
//! - `search`: `w` in 0, 0.05, ..., 1 with the best validation `eval_metric` (Spearman for
//!   `loss`), the smallest among the best.
//!
//! Then a least-squares line maps the blend onto the labels' scale (a slope that is not positive
//! is replaced by the ratio of the sds, so the order is kept). The result is `blend.json`
//! ([`BlendFile`]) in the model directory, which every scorer applies, and a [`BlendSummary`] in
//! `metrics.json`. [`super::refit_blend`] fits the stage again on a trained model (`evalloop
//! train --blend-only`).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::config::{BlendRule, EvalMetric, TrainConfig};
use super::metrics::{EvalAccumulator, EvalMetrics};
use crate::files::BlendFile;
use crate::score::Scorer;
use evalloop_core::files::{DatasetCard, DatasetRow, LabelKind};

/// What the blend stage chose and what each score gave, in `metrics.json` (`blend`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlendSummary {
    /// The production evaluator's share of the blend.
    pub weight: f64,
    /// The metric of the validation figures below (and of `weight` under `search`).
    pub metric: EvalMetric,
    /// How `weight` was chosen.
    #[serde(default = "search_rule")]
    pub rule: BlendRule,
    /// Under `regression`, the correlations the weight was computed from.
    #[serde(default)]
    pub correlations: Option<BlendCorrelations>,
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

/// The blend summaries written before `blend_rule` came from the search.
fn search_rule() -> BlendRule {
    BlendRule::Search
}

/// The within-group Pearson correlations behind a `regression` blend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlendCorrelations {
    /// The model's score with the label (validation split).
    pub model_label: f64,
    /// The production evaluator's score with the label (training and validation splits).
    pub evaluator_label: f64,
    /// The labelled rows behind `evaluator_label`.
    pub evaluator_rows: usize,
    /// The model's score with the evaluator's (validation split).
    pub model_evaluator: f64,
    /// Whether the correlations were taken within prompt groups: under `group_spearman`, when
    /// the validation split has at least 10 within-group degrees of freedom (`MIN_WITHIN_DF`).
    #[serde(default)]
    pub within_groups: bool,
    /// The validation split's within-group degrees of freedom (rows less groups, over the groups
    /// of two or more rows).
    #[serde(default)]
    pub validation_within_df: usize,
}

/// Below this many within-group degrees of freedom on the validation split, the regression
/// rule takes its correlations over the whole splits instead: with groups of two outputs
/// (BAGEL) a validation split of twenty rows has one to three, and a correlation within them is
/// +1 or -1 by chance.
pub const MIN_WITHIN_DF: usize = 10;

/// One labelled row as the stage sees it.
struct Row {
    model: f64,
    evaluator: f64,
    label: f64,
    weight: f64,
    group: Option<String>,
}

/// The rows of one split, scored by `scorer` (without one, `model` is 0).
fn read_rows(dataset_dir: &Path, split: &str, scorer: Option<&Scorer>) -> evalloop_core::Result<Vec<Row>> {
    let path = dataset_dir.join(format!("{split}.jsonl"));
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let rows: Vec<(usize, DatasetRow)> = evalloop_core::jsonl::read_numbered(&path)?;
    let scores = match scorer {
        Some(scorer) => {
            let pairs: Vec<(&str, &str)> = rows.iter().map(|(_, r)| (r.prompt.as_str(), r.output.as_str())).collect();
            scorer.score_pairs(&pairs)?
        }
        None => vec![0.0; rows.len()],
    };
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
    let validation = read_rows(dataset_dir, "validation", Some(&scorer))?;
    if validation.len() < 2 {
        return Err(evalloop_core::Error::Input(format!(
            "[train] blend_evaluator: the blend is chosen on the validation split, which has {} rows in {}",
            validation.len(),
            dataset_dir.display()
        )));
    }
    let test = read_rows(dataset_dir, "test", Some(&scorer))?;
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
    let mut correlations = None;
    blend.weight = match cfg.blend_rule {
        BlendRule::Search => {
            let mut best: Option<(f64, f64)> = None;
            for k in 0..=20 {
                let w = k as f64 / 20.0;
                if let Some(v) = at(&blend, w)
                    && best.is_none_or(|(_, bv)| v > bv + 1e-12)
                {
                    best = Some((w, v));
                }
            }
            best.map_or(0.0, |(w, _)| w)
        }
        BlendRule::Regression => {
            let train = read_rows(dataset_dir, "train", None)?;
            let c = regression_correlations(&validation, &train, metric == EvalMetric::GroupSpearman);
            let w = regression_weight(&c);
            correlations = Some(c);
            w
        }
    };
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
        rule: cfg.blend_rule,
        correlations,
        validation_model: at(&blend, 0.0),
        validation_evaluator: at(&blend, 1.0),
        validation_blend: at(&blend, blend.weight),
        test_blend: test_of(&|r| blend.apply(r.model, r.evaluator)),
        test_model: test_of(&|r| r.model),
        test_evaluator: test_of(&|r| r.evaluator),
    })
}

/// Weighted Pearson correlations of the columns `f(row)` with each other, over rows centred on
/// their group's weighted means (`within`), or on the whole set's; `None` for a column without
/// spread.
fn correlations<const K: usize>(rows: &[&Row], within: bool, f: impl Fn(&Row) -> [f64; K]) -> [[Option<f64>; K]; K] {
    let mut groups: std::collections::HashMap<Option<&str>, Vec<&Row>> = Default::default();
    for r in rows {
        groups.entry(if within { r.group.as_deref() } else { None }).or_default().push(r);
    }
    let mut cov = [[0.0; K]; K];
    for members in groups.values().filter(|m| m.len() >= 2) {
        let total: f64 = members.iter().map(|r| r.weight).sum();
        if total <= 0.0 {
            continue;
        }
        let mut mean = [0.0; K];
        for r in members {
            let x = f(r);
            for k in 0..K {
                mean[k] += r.weight * x[k] / total;
            }
        }
        for r in members {
            let x = f(r);
            for i in 0..K {
                for j in 0..K {
                    cov[i][j] += r.weight * (x[i] - mean[i]) * (x[j] - mean[j]);
                }
            }
        }
    }
    let mut out = [[None; K]; K];
    for i in 0..K {
        for j in 0..K {
            let d = (cov[i][i] * cov[j][j]).sqrt();
            out[i][j] = (d > 0.0 && d.is_finite()).then(|| cov[i][j] / d);
        }
    }
    out
}

fn regression_correlations(validation: &[Row], train: &[Row], group_metric: bool) -> BlendCorrelations {
    let mut sizes: std::collections::HashMap<Option<&str>, usize> = Default::default();
    for r in validation {
        *sizes.entry(r.group.as_deref()).or_default() += 1;
    }
    let validation_within_df = sizes.values().filter(|&&n| n >= 2).map(|n| n - 1).sum::<usize>();
    let within = group_metric && validation_within_df >= MIN_WITHIN_DF;
    let val: Vec<&Row> = validation.iter().collect();
    let v = correlations(&val, within, |r| [r.model, r.evaluator, r.label]);
    let labelled: Vec<&Row> = train.iter().chain(validation).collect();
    let e = correlations(&labelled, within, |r| [r.evaluator, r.label]);
    BlendCorrelations {
        model_label: v[0][2].unwrap_or(0.0),
        evaluator_label: e[0][1].unwrap_or(0.0),
        evaluator_rows: labelled.len(),
        model_evaluator: v[0][1].unwrap_or(0.0),
        within_groups: within,
        validation_within_df,
    }
}

/// The evaluator's share from the least-squares weights of two standardised predictors with
/// correlations `model_label`, `evaluator_label` with the label and `model_evaluator` with each
/// other; a negative weight counts as 0 (0 when both are). An evaluator that does not rank
/// with the labels at all gets no share, even where the regression would give it one as a
/// suppressor of the model's error.
fn regression_weight(c: &BlendCorrelations) -> f64 {
    let (rm, re, rme) = (c.model_label, c.evaluator_label, c.model_evaluator);
    if re <= 0.0 {
        return 0.0;
    }
    let det = 1.0 - rme * rme;
    let (bm, be) = if det > 1e-9 { ((rm - rme * re) / det, (re - rme * rm) / det) } else { (rm, re) };
    let (bm, be) = (bm.max(0.0), be.max(0.0));
    if bm + be > 0.0 { be / (bm + be) } else { 0.0 }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(group: &str, model: f64, evaluator: f64, label: f64) -> Row {
        Row { model, evaluator, label, weight: 1.0, group: Some(group.into()) }
    }

    /// Groups where the evaluator ranks the outputs of each prompt right but the prompts'
    /// levels the wrong way round (Simpson's paradox): within groups it correlates positively,
    /// over the whole split negatively; with too few within-group degrees of freedom the rule
    /// falls back to the whole split.
    #[test]
    fn regression_correlations_are_within_groups_when_the_validation_split_allows() {
        let mut rows = Vec::new();
        for g in 0..4 {
            let level = g as f64;
            for i in 0..4 {
                let label = level + 0.1 * i as f64;
                // Evaluator: right within the group, levels reversed; model: noise-free label.
                rows.push(row(&format!("g{g}"), label, -2.0 * level + 0.1 * i as f64, label));
            }
        }
        let c = regression_correlations(&rows, &[], true);
        assert_eq!(c.validation_within_df, 12);
        assert!(c.within_groups);
        assert!((c.evaluator_label - 1.0).abs() < 1e-9 && (c.model_label - 1.0).abs() < 1e-9, "{c:?}");
        let whole = regression_correlations(&rows, &[], false);
        assert!(!whole.within_groups && whole.evaluator_label < -0.9, "{whole:?}");
        // Three groups of two rows: 3 degrees of freedom, so the whole split.
        let few: Vec<Row> = rows
            .iter()
            .filter(|r| r.group.as_deref() != Some("g3"))
            .take(6)
            .map(|r| row(r.group.as_deref().unwrap(), r.model, r.evaluator, r.label))
            .collect();
        let c = regression_correlations(&few, &[], true);
        assert!(c.validation_within_df < MIN_WITHIN_DF && !c.within_groups, "{c:?}");
        // The training rows count for the evaluator only.
        let c = regression_correlations(&rows, &rows, true);
        assert_eq!(c.evaluator_rows, 32);
    }

    #[test]
    fn regression_weight_follows_the_least_squares_weights() {
        let c = |m, e, me| BlendCorrelations {
            model_label: m,
            evaluator_label: e,
            evaluator_rows: 100,
            model_evaluator: me,
            within_groups: true,
            validation_within_df: 20,
        };
        // Independent predictors of equal strength share equally.
        assert!((regression_weight(&c(0.5, 0.5, 0.0)) - 0.5).abs() < 1e-12);
        // The evaluator adds nothing beyond the model it is collinear with.
        assert_eq!(regression_weight(&c(0.6, 0.3, 0.5)), 0.0);
        // An evaluator that does not rank with the labels gets nothing, even as a suppressor.
        assert_eq!(regression_weight(&c(0.6, -0.05, -0.5)), 0.0);
        // A model worse than chance leaves everything to the evaluator.
        assert_eq!(regression_weight(&c(-0.2, 0.4, 0.0)), 1.0);
    }
}
