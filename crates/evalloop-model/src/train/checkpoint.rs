//! Resumable training state in one safetensors file: weights (`param/NAME`), AdamW moments
//! (`m/NAME`, `v/NAME`) and, in the header metadata (`evalloop_state`), the JSON
//! [`CheckpointState`]. Written atomically: temp file, fsync, rename, fsync of the directory.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::EvalRecord;
use super::optim::AdamW;
use crate::{RngState, TrainableModel, weights};

/// The non-tensor part of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CheckpointState {
    pub version: u32,
    /// Hash of the config and training data the run was started with.
    pub fingerprint: String,
    /// Optimizer steps taken.
    pub step: usize,
    /// 0-based epoch in progress.
    pub epoch: usize,
    /// Next micro-batch of the epoch's order (the data-order position).
    pub next_batch: usize,
    /// AdamW update count.
    pub adam_step: usize,
    /// Dropout stream position.
    pub rng: RngState,
    /// Shards each micro-batch is cut into (`data_parallel`, resolved when the run started;
    /// 1 in checkpoints written before it existed).
    #[serde(default = "one")]
    pub shards: usize,
    /// Best value of the watched metric (higher is better), if any.
    pub best_value: Option<f64>,
    /// 1-based epoch of the best checkpoint.
    pub best_epoch: Option<usize>,
    /// Evaluations since the last improvement.
    pub bad_epochs: usize,
    /// Early stopping fired.
    pub stopped_early: bool,
    /// Training loop finished.
    pub done: bool,
    /// Length of metrics.jsonl when this checkpoint was written (later lines are dropped on
    /// resume, as they will be written again).
    pub metrics_len: u64,
    /// Validation evaluations so far.
    pub history: Vec<EvalRecord>,
}

impl CheckpointState {
    pub(crate) fn new(fingerprint: String, rng: RngState, shards: usize) -> Self {
        CheckpointState {
            version: 1,
            fingerprint,
            step: 0,
            epoch: 0,
            next_batch: 0,
            adam_step: 0,
            rng,
            shards,
            best_value: None,
            best_epoch: None,
            bad_epochs: 0,
            stopped_early: false,
            done: false,
            metrics_len: 0,
            history: Vec::new(),
        }
    }
}

fn one() -> usize {
    1
}

/// The tensors of a checkpoint, by parameter name.
pub(crate) struct CheckpointTensors {
    pub params: HashMap<String, Tensor>,
    pub m: HashMap<String, Tensor>,
    pub v: HashMap<String, Tensor>,
}

/// Writes `bytes` to `path` atomically: a temp file beside it, fsync, rename, fsync of the
/// directory.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> evalloop_core::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let io = |e| evalloop_core::Error::io(&tmp, e);
    {
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(|e| evalloop_core::Error::io(path, e))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

pub(crate) fn write(
    path: &Path,
    state: &CheckpointState,
    tm: &TrainableModel,
    opt: &AdamW,
) -> evalloop_core::Result<()> {
    let mut tensors: BTreeMap<String, Tensor> = BTreeMap::new();
    let (m, v) = opt.moments();
    for (i, p) in tm.params().iter().enumerate() {
        tensors.insert(format!("param/{}", p.name), p.var.as_tensor().detach());
        tensors.insert(format!("m/{}", p.name), m[i].clone());
        tensors.insert(format!("v/{}", p.name), v[i].clone());
    }
    let json =
        serde_json::to_string(state).map_err(|e| evalloop_core::Error::Model(format!("checkpoint state: {e}")))?;
    let meta = [("evalloop_state".to_string(), json)].into_iter().collect();
    let bytes = weights::safetensors_bytes(&tensors, Some(meta))?;
    write_atomic(path, &bytes)
}

pub(crate) fn read(path: &Path) -> evalloop_core::Result<(CheckpointState, CheckpointTensors)> {
    let bytes = std::fs::read(path).map_err(|e| evalloop_core::Error::io(path, e))?;
    let bad = |msg: String| evalloop_core::Error::Model(format!("{}: {msg}", path.display()));
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
    let json = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("evalloop_state"))
        .ok_or_else(|| bad("no evalloop_state in the header".into()))?;
    let state: CheckpointState = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
    let all = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|e| bad(e.to_string()))?;
    let mut t = CheckpointTensors { params: HashMap::new(), m: HashMap::new(), v: HashMap::new() };
    for (k, v) in all {
        if let Some(n) = k.strip_prefix("param/") {
            t.params.insert(n.to_string(), v);
        } else if let Some(n) = k.strip_prefix("m/") {
            t.m.insert(n.to_string(), v);
        } else if let Some(n) = k.strip_prefix("v/") {
            t.v.insert(n.to_string(), v);
        }
    }
    Ok((state, t))
}
