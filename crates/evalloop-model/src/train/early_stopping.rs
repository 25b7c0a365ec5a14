//! Early stopping: which validation evaluation is the best so far (its weights are kept), how
//! many since have not improved on it, and when `patience` runs out.

use serde::{Deserialize, Serialize};

use super::config::{EvalMetric, TrainConfig};
use super::metrics::EvalMetrics;

/// Best-epoch tracking across validation evaluations. It is part of the checkpoint (its
/// fields sit flat among the checkpoint state's, as they always have), so a resumed run
/// continues with the same best and count.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct EarlyStopping {
    /// Best value of the watched metric (higher is better), if any.
    pub best_value: Option<f64>,
    /// 1-based epoch of the best checkpoint.
    pub best_epoch: Option<usize>,
    /// Evaluations since the last improvement.
    pub bad_epochs: usize,
    /// Early stopping fired.
    pub stopped_early: bool,
}

/// What one evaluation means for the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// These weights are the new best: keep them.
    pub keep: bool,
    /// Patience ran out: stop after this epoch.
    pub stop: bool,
}

impl EarlyStopping {
    /// Records the validation metrics `m` of epoch `epoch` (1-based) under `cfg`'s
    /// `eval_metric`, `keep_best` and `patience`. The first evaluation is always the best so
    /// far; later ones improve when their figure ([`metric_value`]) is higher, and a NaN figure
    /// never does. Without `keep_best` validation is only reported: the last weights are kept
    /// and nothing stops early.
    pub fn update(&mut self, epoch: usize, m: &EvalMetrics, cfg: &TrainConfig) -> Verdict {
        let value = metric_value(m, cfg.eval_metric);
        let improved = match self.best_value {
            None => !value.is_nan() || self.best_epoch.is_none(),
            Some(b) => value > b,
        };
        if !cfg.keep_best {
            return Verdict { keep: false, stop: false };
        }
        if improved {
            self.best_value = if value.is_nan() { None } else { Some(value) };
            self.best_epoch = Some(epoch);
            self.bad_epochs = 0;
        } else {
            self.bad_epochs += 1;
        }
        let stop = cfg.patience > 0 && self.bad_epochs >= cfg.patience;
        if stop {
            self.stopped_early = true;
        }
        Verdict { keep: improved, stop }
    }
}

/// The figure of `m` that `which` ranks by, oriented so that higher is better (the loss is
/// negated); NaN when undefined, which never counts as an improvement. Early stopping ranks
/// epochs by it and model selection ranks candidates by it.
pub(crate) fn metric_value(m: &EvalMetrics, which: EvalMetric) -> f64 {
    match which {
        EvalMetric::Loss => -m.loss,
        EvalMetric::Spearman => m.spearman.unwrap_or(f64::NAN),
        EvalMetric::Auc => m.auc.unwrap_or(f64::NAN),
        EvalMetric::Accuracy => m.accuracy.unwrap_or(f64::NAN),
        EvalMetric::GroupSpearman => m.group_spearman.unwrap_or(f64::NAN),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_loss(loss: f64) -> EvalMetrics {
        EvalMetrics {
            n: 1,
            loss,
            spearman: None,
            auc: None,
            accuracy: None,
            group_spearman: None,
            groups_used: 0,
            dimensions: Default::default(),
        }
    }

    #[test]
    fn patience_counts_evaluations_without_improvement() {
        let cfg = TrainConfig { eval_metric: EvalMetric::Loss, patience: 2, ..TrainConfig::default() };
        let mut es = EarlyStopping::default();
        assert_eq!(es.update(1, &with_loss(1.0), &cfg), Verdict { keep: true, stop: false });
        assert_eq!(es.update(2, &with_loss(0.5), &cfg), Verdict { keep: true, stop: false });
        assert_eq!(es.update(3, &with_loss(0.7), &cfg), Verdict { keep: false, stop: false });
        assert_eq!(es.update(4, &with_loss(0.5), &cfg), Verdict { keep: false, stop: true });
        assert_eq!((es.best_epoch, es.best_value, es.bad_epochs, es.stopped_early), (Some(2), Some(-0.5), 2, true));
    }

    #[test]
    fn an_undefined_first_figure_is_kept_until_a_defined_one() {
        let cfg = TrainConfig { eval_metric: EvalMetric::Spearman, ..TrainConfig::default() };
        let mut es = EarlyStopping::default();
        assert!(es.update(1, &with_loss(1.0), &cfg).keep);
        assert_eq!((es.best_epoch, es.best_value), (Some(1), None));
        assert!(!es.update(2, &with_loss(1.0), &cfg).keep);
        let defined = EvalMetrics { spearman: Some(-0.2), ..with_loss(1.0) };
        assert!(es.update(3, &defined, &cfg).keep);
        assert_eq!((es.best_epoch, es.best_value), (Some(3), Some(-0.2)));
    }

    #[test]
    fn without_keep_best_nothing_is_kept_or_stopped() {
        let cfg = TrainConfig { keep_best: false, patience: 1, ..TrainConfig::default() };
        let mut es = EarlyStopping::default();
        for epoch in 1..4 {
            assert_eq!(es.update(epoch, &with_loss(1.0), &cfg), Verdict { keep: false, stop: false });
        }
        assert_eq!(es, EarlyStopping::default());
    }
}
