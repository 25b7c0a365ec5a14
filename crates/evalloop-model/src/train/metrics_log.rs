//! `metrics.jsonl`: one JSON line per logged training step (`"kind": "train"`) and per
//! evaluation (`"kind": "eval"`), appended as training goes and cut back to a checkpoint's
//! length on resume.

use std::io::{Seek, Write};
use std::path::{Path, PathBuf};

use super::metrics::EvalMetrics;
use crate::files::{DimensionLine, EvalLine, MetricsLine, TrainLine};

/// The open `metrics.jsonl` of a run.
pub(super) struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsLog {
    /// Opens `path` for appending, first cut to `keep_bytes` (a resumed checkpoint's length;
    /// `None`: emptied).
    pub(super) fn open(path: &Path, keep_bytes: Option<u64>) -> evalloop_core::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(path)
            .map_err(|e| evalloop_core::Error::io(path, e))?;
        file.set_len(keep_bytes.unwrap_or(0)).map_err(|e| evalloop_core::Error::io(path, e))?;
        let mut log = MetricsLog { path: path.to_path_buf(), file };
        log.file.seek(std::io::SeekFrom::End(0)).map_err(|e| evalloop_core::Error::io(path, e))?;
        Ok(log)
    }

    /// A `train` line: optimizer step `step`, 1-based `epoch`, the mean step loss since the
    /// last such line, the learning rate of the last step and the examples per second since
    /// the run (or its resumption) started.
    pub(super) fn train(
        &mut self,
        step: usize,
        epoch: usize,
        loss: f64,
        lr: f64,
        examples_per_sec: f64,
    ) -> evalloop_core::Result<()> {
        self.write(&MetricsLine::Train(TrainLine { epoch, examples_per_sec, loss, lr, step }))
    }

    /// An `eval` line: the metrics `m` on `split` (`validation` or `test`) after `step`
    /// optimizer steps, with the 1-based epoch they belong to (`null` for the test split of a
    /// run without a best epoch); per-dimension figures under `dimensions` when there are any.
    pub(super) fn eval(
        &mut self,
        split: &str,
        step: usize,
        epoch: Option<usize>,
        m: &EvalMetrics,
    ) -> evalloop_core::Result<()> {
        self.write(&MetricsLine::Eval(EvalLine {
            accuracy: m.accuracy,
            auc: m.auc,
            dimensions: m
                .dimensions
                .iter()
                .map(|(d, x)| {
                    let line =
                        DimensionLine { group_spearman: x.group_spearman, loss: x.loss, n: x.n, spearman: x.spearman };
                    (d.clone(), line)
                })
                .collect(),
            epoch,
            group_spearman: m.group_spearman,
            groups_used: m.groups_used,
            loss: m.loss,
            n: m.n,
            spearman: m.spearman,
            split: split.to_string(),
            step,
        }))
    }

    fn write(&mut self, line: &MetricsLine) -> evalloop_core::Result<()> {
        writeln!(self.file, "{}", line.to_line()).map_err(|e| evalloop_core::Error::io(&self.path, e))
    }

    /// Bytes written so far, made durable.
    pub(super) fn sync_len(&mut self) -> evalloop_core::Result<u64> {
        self.file.sync_data().map_err(|e| evalloop_core::Error::io(&self.path, e))?;
        let len = self.file.metadata().map_err(|e| evalloop_core::Error::io(&self.path, e))?.len();
        Ok(len)
    }
}
