//! Resumable training state in one safetensors file: weights (`param/NAME`), AdamW moments
//! (`m/NAME`, `v/NAME`) and, in the header metadata (`evalloop_state`), the JSON
//! [`CheckpointState`]. Written atomically ([`evalloop_core::atomic::write_atomic`]: temp file,
//! fsync, rename, fsync of the directory).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::EvalRecord;
use super::early_stopping::EarlyStopping;
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
    /// Best epoch so far and evaluations since (`best_value`, `best_epoch`, `bad_epochs`,
    /// `stopped_early`, flat in the JSON).
    #[serde(flatten)]
    pub early_stopping: EarlyStopping,
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
            early_stopping: EarlyStopping::default(),
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

/// Writes the checkpoint of `state`, `tm`'s trainable parameters and `opt`'s moments to
/// `path`, atomically.
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
    evalloop_core::atomic::write_atomic(path, &bytes)
}

/// Reads a checkpoint written by [`write`]: its state and its tensors (on the CPU).
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
