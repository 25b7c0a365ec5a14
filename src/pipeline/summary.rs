//! The report's figures from a run's files and the held-out rows: agreement before and after,
//! calibration, disagreements per cohort, the dataset card's splits and the training curves.

use std::collections::BTreeMap;
use std::path::Path;

use crate::analysis::{self, CalibrationOptions};
use crate::config::Settings;
use crate::dataset::CellStats;
use crate::feedback::Verdict;
use crate::files::DatasetCard;
use crate::model::files::{METRICS_FILE, METRICS_LOG_FILE, MetricsLine};
use crate::report;
use crate::stats::Outcome;
use crate::store::ScoredRequest;

pub(super) fn correlations(rows: &[(&ScoredRequest, f64)], group_key: Option<&str>) -> report::Correlations {
    let x: Vec<f64> = rows.iter().map(|(_, s)| *s).collect();
    let y: Vec<f64> = rows.iter().map(|(r, _)| r.human_score).collect();
    let c = analysis::correlation_of(&x, &y, 0, 0);
    let mut out = report::Correlations {
        n_samples: c.n_samples as u64,
        pearson_r: c.pearson_r,
        pearson_p: c.pearson_p,
        pearson_ci: c.pearson_ci,
        spearman_r: c.spearman_r,
        spearman_p: c.spearman_p,
        spearman_ci: c.spearman_ci,
        kendall_tau: c.kendall_tau,
        kendall_p: c.kendall_p,
        ..Default::default()
    };
    if let Some(key) = group_key {
        let g: Vec<(String, f64, f64)> =
            rows.iter().filter_map(|(r, s)| r.group.clone().map(|g| (g, *s, r.human_score))).collect();
        let gl = analysis::group_level_of(key, &g);
        out.group_mean_spearman = gl.spearman_r;
        out.group_mean_kendall = gl.kendall_tau;
        out.groups_used = Some(gl.groups_used as u64);
    }
    out
}

pub(super) fn agreement(rows: &[(&ScoredRequest, f64)], group_key: Option<&str>) -> report::Agreement {
    let mut cohorts: BTreeMap<String, Vec<(&ScoredRequest, f64)>> = BTreeMap::new();
    for (r, s) in rows {
        cohorts.entry(r.cohort.clone().unwrap_or_else(|| "(none)".into())).or_default().push((*r, *s));
    }
    report::Agreement {
        overall: correlations(rows, group_key),
        ci_level: Some(0.95),
        ci_method: Some("fisher-z".into()),
        per_cohort: cohorts
            .into_iter()
            .map(|(cohort, v)| report::CohortCorrelations { cohort, stats: correlations(&v, group_key) })
            .collect(),
    }
}

pub(super) fn calibration(
    rows: &[(&ScoredRequest, f64)],
    settings: &Settings,
    opts: &CalibrationOptions,
) -> report::Calibration {
    let pairs: Vec<(f64, f64)> = rows.iter().map(|(r, s)| (s.clamp(0.0, 1.0), r.human_score)).collect();
    let s = analysis::calibration_of(&pairs, &settings.policy, opts);
    match s.report {
        Outcome::Defined(r) => report::Calibration {
            n_samples: s.n_labelled as u64,
            ece: Some(r.uniform.ece),
            brier: Some(r.brier),
            auc: r.roc_auc.ok(),
            reliability: r
                .uniform
                .bins
                .iter()
                .map(|b| report::ReliabilityBin {
                    lower: b.lower,
                    upper: b.upper,
                    count: b.count as u64,
                    mean_predicted: b.mean_predicted,
                    observed: b.observed_frequency,
                })
                .collect(),
        },
        Outcome::Undefined(_) => report::Calibration { n_samples: s.n_labelled as u64, ..Default::default() },
    }
}

pub(super) fn disagreements(
    held: &[(&ScoredRequest, Option<f64>)],
    settings: &Settings,
    threshold: f64,
) -> BTreeMap<String, report::Disagreements> {
    let mut out: BTreeMap<String, report::Disagreements> = BTreeMap::new();
    for (r, new) in held {
        let v = settings.policy.verdict(r.human_score);
        if v == Verdict::Neutral {
            continue;
        }
        let d = out.entry(r.cohort.clone().unwrap_or_else(|| "(none)".into())).or_default();
        d.n_samples += 1;
        d.pre += u64::from(analysis::is_disagreement(r.eval_score, v, threshold));
        if let Some(s) = new {
            d.post += u64::from(analysis::is_disagreement(*s, v, threshold));
        }
    }
    out
}

pub(super) fn dataset_summary(card: &DatasetCard, window: Option<&[String; 2]>) -> report::DatasetSummary {
    let split = |name: &str, s: &CellStats| report::SplitSummary {
        split: name.to_string(),
        count: s.examples as u64,
        weight_sum: Some(s.weight_sum),
        weight_min: Some(s.weight_min),
        weight_mean: (s.examples > 0).then(|| s.weight_sum / s.examples as f64),
        weight_max: Some(s.weight_max),
        effective_size: Some(s.effective_size),
    };
    let names = ["train", "validation", "test"];
    let splits = names.iter().filter_map(|n| card.splits.get(*n).map(|s| split(n, &s.all))).collect();
    // Each cohort's line of every split it appears in, cohorts in name order.
    let mut per_cohort: BTreeMap<&str, Vec<report::SplitSummary>> = BTreeMap::new();
    for n in names {
        for (cohort, cell) in card.splits.get(n).map(|s| &s.by_cohort).into_iter().flatten() {
            per_cohort.entry(cohort).or_default().push(split(n, cell));
        }
    }
    report::DatasetSummary {
        window_start: window.map(|w| w[0].clone()),
        window_end: window.map(|w| w[1].clone()),
        splits,
        per_cohort: per_cohort
            .into_iter()
            .map(|(cohort, splits)| report::CohortSplits { cohort: cohort.to_string(), splits })
            .collect(),
    }
}

pub(super) fn training_summary(model_dir: &Path, cfg: &crate::train::TrainConfig) -> Option<report::TrainingSummary> {
    let lines = MetricsLine::read_all(&model_dir.join(METRICS_LOG_FILE)).ok()?;
    let mut t = report::TrainingSummary { base_model: Some(cfg.base_model.clone()), ..Default::default() };
    let mut best: Option<(f64, u64)> = None;
    for line in lines {
        match line {
            MetricsLine::Train(l) => {
                t.examples_per_sec = Some(l.examples_per_sec);
                t.curves.push(report::CurvePoint {
                    step: l.step as u64,
                    epoch: l.epoch as f64,
                    train_loss: (!l.loss.is_nan()).then_some(l.loss),
                    ..Default::default()
                });
            }
            MetricsLine::Eval(l) if l.split == "validation" => {
                let (step, epoch) = (l.step as u64, l.epoch.unwrap_or(0) as f64);
                t.epochs = t.epochs.max(epoch as u32);
                if let Some(s) = l.spearman
                    && best.is_none_or(|(b, _)| s > b)
                {
                    best = Some((s, step));
                }
                t.curves.push(report::CurvePoint {
                    step,
                    epoch,
                    val_loss: (!l.loss.is_nan()).then_some(l.loss),
                    val_spearman: l.spearman,
                    ..Default::default()
                });
            }
            MetricsLine::Eval(_) => {}
        }
    }
    t.best_val_spearman = best.map(|b| b.0);
    t.best_step = best.map(|b| b.1);
    t.selection = std::fs::read_to_string(model_dir.join(METRICS_FILE))
        .ok()
        .and_then(|text| serde_json::from_str::<crate::train::TrainSummary>(&text).ok())
        .and_then(|m| m.selection)
        .map(|sel| crate::train::describe_selection(&sel));
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::DatasetConfig;
    use crate::files::SplitCard;

    /// The report's per-cohort split table comes from each split's `by_cohort` (it read a
    /// top-level `by_cohort` the card never had, so the table was always empty).
    #[test]
    fn dataset_summary_has_each_cohorts_splits() {
        let cell =
            |n: usize| CellStats { examples: n, weight_sum: n as f64, effective_size: n as f64, ..Default::default() };
        let mut card = DatasetCard::hand_made(DatasetConfig::default());
        card.splits.insert(
            "train".into(),
            SplitCard { all: cell(5), by_cohort: [("pro".to_string(), cell(3)), ("free".to_string(), cell(2))].into() },
        );
        card.splits.insert("test".into(), SplitCard { all: cell(1), by_cohort: [("pro".to_string(), cell(1))].into() });
        let d = dataset_summary(&card, None);
        assert_eq!(
            d.splits.iter().map(|s| (s.split.as_str(), s.count)).collect::<Vec<_>>(),
            [("train", 5), ("test", 1)]
        );
        let per: Vec<(&str, Vec<(&str, u64)>)> = d
            .per_cohort
            .iter()
            .map(|c| (c.cohort.as_str(), c.splits.iter().map(|s| (s.split.as_str(), s.count)).collect()))
            .collect();
        assert_eq!(per, [("free", vec![("train", 2)]), ("pro", vec![("train", 3), ("test", 1)])]);
        assert_eq!(d.splits[0].weight_mean, Some(1.0), "the mean weight of the split");
    }
}
