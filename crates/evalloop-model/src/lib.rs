//! A sequence classifier on a BERT, RoBERTa / XLM-RoBERTa, ModernBERT or DeBERTa-v2/v3 encoder in candle, with Hugging Face tensor names and a LayerNorm that has a gradient.
//!
//! - [`alloc`]: mimalloc settings for the binaries (freed memory stays mapped).
//! - [`bert`]: the layers (`BertForSequenceClassification` and its parts, RoBERTa's variant
//!   included), each with `load(vb, cfg)` and `forward_t(.., train)`; real, seeded dropout.
//! - [`modernbert`]: ModernBERT's layers, built on the same trainable parts.
//! - [`deberta`]: DeBERTa-v2/v3's disentangled attention, on the same parts.
//! - [`classifier`]: [`SequenceClassifier`], the classifier of the family config.json names.
//! - [`config`]: the `config.json` serde struct ([`BertConfig`], its [`config::Family`]).
//! - [`tokenize`]: (prompt, output) pairs to padded id tensors ([`PairTokenizer`]).
//! - [`ops`]: fused CPU kernels with backward passes (LayerNorm, masked softmax, GELU) and
//!   AdamW's in-place update.
//! - [`hub`]: a base model from a local directory or the Hugging Face cache (offline).
//! - [`weights`]: checkpoint loading (with or without the `bert.` prefix), seeded initialisation
//!   of missing tensors, trainable `Var`s for training and plain mmaped tensors for inference.
//!
//! Tensor names follow Hugging Face's `BertForSequenceClassification` (`bert.embeddings.*`,
//! `bert.encoder.layer.N.*`, `bert.pooler.dense.*`, `classifier.weight`, `classifier.bias`) and
//! its RoBERTa and ModernBERT counterparts (`roberta.*`, `model.*`), so a
//! directory written by [`crate::train`] loads in transformers and a transformers checkpoint
//! loads here.

pub mod alloc;
pub mod bert;
pub mod classifier;
pub mod config;
pub mod deberta;
pub mod files;
pub mod hub;
pub mod modernbert;
pub mod ops;
pub mod tokenize;
pub mod weights;

pub mod score;
pub mod train;

pub use bert::{BertForSequenceClassification, DropoutRng, RngState};
pub use classifier::SequenceClassifier;
pub use config::{BertConfig, HiddenAct};
pub use hub::resolve_base_model;
pub use tokenize::{Batch, Encoded, PairTokenizer, Truncation};
pub use weights::{InferenceModel, TrainableModel};

use std::path::PathBuf;

use candle_core::Device;

/// Errors of model loading, tokenization and the tensor code.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A tensor operation failed (shape mismatch, missing tensor, device error).
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A JSON file (config.json, ...) does not parse.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The cause (with line and column).
        source: serde_json::Error,
    },
    /// A config value is unusable.
    #[error("{path}: {msg}")]
    Config {
        /// The config file it came from.
        path: PathBuf,
        /// What is wrong, naming the field.
        msg: String,
    },
    /// The tokenizer could not be loaded or failed on an input.
    #[error("tokenizer {path}: {msg}")]
    Tokenizer {
        /// The tokenizer.json.
        path: PathBuf,
        /// The tokenizers crate's message.
        msg: String,
    },
    /// A base model given as a repo id is not in the local Hugging Face cache.
    #[error(
        "base model '{repo}' is not in the Hugging Face cache at {cache} (missing {missing}); \
         {why}: run scripts/fetch-model.sh, or set base_model to a local directory holding \
         config.json, tokenizer.json and model.safetensors"
    )]
    NotInCache {
        /// The repo id, e.g. `sentence-transformers/all-MiniLM-L6-v2`.
        repo: String,
        /// The cache directory that was searched.
        cache: PathBuf,
        /// The first file that was not found.
        missing: String,
        /// Why nothing was downloaded (the build has no `hub-download` feature, or
        /// `HF_HUB_OFFLINE` is set).
        why: &'static str,
    },
    /// Downloading a base model from the hub failed (only with the `hub-download` feature).
    #[error("downloading {file} of base model '{repo}' into {cache}: {msg}")]
    Download {
        /// The repo id.
        repo: String,
        /// The file being fetched.
        file: String,
        /// The cache directory written to.
        cache: PathBuf,
        /// hf-hub's message.
        msg: String,
    },
    /// A checkpoint does not fit the config (a missing encoder tensor, a wrong shape).
    #[error("{path}: {msg}")]
    Checkpoint {
        /// The weights file.
        path: PathBuf,
        /// What does not fit.
        msg: String,
    },
    /// A device string that is not `cpu`, `cuda`, `cuda:N` or `auto`, or a device that is
    /// not available in this build.
    #[error("device '{0}': {1}")]
    Device(String, String),
}

impl ModelError {
    /// Wraps an I/O error with its path.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io { path: path.into(), source }
    }
}

impl From<ModelError> for evalloop_core::Error {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::Io { path, source } => evalloop_core::Error::Io { path, source },
            e @ (ModelError::Config { .. } | ModelError::Device(..)) => evalloop_core::Error::Input(e.to_string()),
            e => evalloop_core::Error::Model(e.to_string()),
        }
    }
}

/// Parses `--device`: `cpu`, `cuda` (= `cuda:0`), `cuda:N`, or `auto` (CUDA device 0 when this
/// build has the `cuda` feature and a GPU is present, else the CPU).
pub fn parse_device(spec: &str) -> evalloop_core::Result<Device> {
    Ok(parse_device_inner(spec)?)
}

fn parse_device_inner(spec: &str) -> Result<Device, ModelError> {
    let s = spec.trim().to_ascii_lowercase();
    let bad = |msg: &str| ModelError::Device(spec.to_string(), msg.to_string());
    match s.as_str() {
        "cpu" => Ok(Device::Cpu),
        "auto" => {
            if candle_core::utils::cuda_is_available() {
                Device::new_cuda(0).or(Ok(Device::Cpu))
            } else {
                Ok(Device::Cpu)
            }
        }
        _ => {
            let ordinal = if s == "cuda" {
                0
            } else if let Some(n) = s.strip_prefix("cuda:") {
                n.parse::<usize>().map_err(|_| bad("expected cpu, cuda, cuda:N (N a GPU index) or auto"))?
            } else {
                return Err(bad("expected cpu, cuda, cuda:N or auto"));
            };
            if !candle_core::utils::cuda_is_available() {
                return Err(bad("this build has no CUDA support (rebuild with `--features cuda`)"));
            }
            Device::new_cuda(ordinal).map_err(|e| bad(&e.to_string()))
        }
    }
}

/// The arithmetic of the encoder's linear layers when scoring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// f32 weights and activations (the model as trained).
    #[default]
    F32,
    /// int8 weights (one scale per output row) and activations (one scale per row, at each
    /// call), exact 32-bit integer sums, on the CPU ([`ops::linear_int8`]); the classification
    /// head stays f32.
    Int8,
}

impl Precision {
    /// The name `--precision` takes: `fp32` or `int8`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "fp32",
            Precision::Int8 => "int8",
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fp32" | "f32" => Ok(Precision::F32),
            "int8" => Ok(Precision::Int8),
            _ => Err(format!("unknown precision {s:?}: expected fp32 or int8")),
        }
    }
}

/// Every output (`num_labels` logits or values) of each encoded pair, in input order, evaluated
/// without dropout in batches of up to `batch_size` pairs sorted by length. With
/// `data_parallel` on the CPU and several rayon threads, batches run side by side, each with its
/// linear layers' gemm on one thread ([`ops::serial`]): small gemms split over threads scale
/// poorly. Batches are then cut so that every thread gets one when there are fewer pairs than
/// threads x `batch_size`. `precision` chooses the linear layers' arithmetic ([`Precision`]).
pub fn predict(
    model: &SequenceClassifier,
    tokenizer: &PairTokenizer,
    enc: &[Encoded],
    batch_size: usize,
    device: &Device,
    data_parallel: bool,
    precision: Precision,
) -> Result<Vec<Vec<f32>>, ModelError> {
    use rayon::prelude::*;
    let mut order: Vec<usize> = (0..enc.len()).collect();
    order.sort_by_key(|&i| enc[i].len());
    let forward = |chunk: &[usize]| -> Result<Vec<Vec<f32>>, ModelError> {
        let items: Vec<&Encoded> = chunk.iter().map(|&i| &enc[i]).collect();
        let batch = tokenizer.collate(&items, device)?;
        let out = ops::int8(precision == Precision::Int8, || {
            model.forward_t(&batch.input_ids, &batch.token_type_ids, &batch.attention_mask, false)
        })?;
        Ok(out.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?)
    };
    let threads = rayon::current_num_threads();
    let batch_size = batch_size.max(1);
    let chunks: Vec<Vec<Vec<f32>>> = if data_parallel && device.is_cpu() && threads > 1 && enc.len() > 1 {
        let size = batch_size.min(enc.len().div_ceil(threads));
        order.par_chunks(size).map(|c| ops::serial(|| forward(c))).collect::<Result<_, _>>()?
    } else {
        order.chunks(batch_size).map(forward).collect::<Result<_, _>>()?
    };
    let mut outputs = vec![Vec::new(); enc.len()];
    for (&i, row) in order.iter().zip(chunks.into_iter().flatten()) {
        outputs[i] = row;
    }
    Ok(outputs)
}

/// Test support: a tiny random BERT (2 layers, hidden 32, a made-up vocabulary) written as a
/// base-model directory, for this crate's unit and integration tests. Not part of the API.
#[doc(hidden)]
pub mod testutil;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_device_accepts_cpu_and_auto_and_rejects_junk() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        assert!(parse_device("CPU").unwrap().is_cpu());
        let auto = parse_device("auto").unwrap();
        if !candle_core::utils::cuda_is_available() {
            assert!(auto.is_cpu());
            let err = parse_device("cuda:0").unwrap_err().to_string();
            assert!(err.contains("cuda:0") && err.contains("--features cuda"), "{err}");
        }
        let err = parse_device("gpu").unwrap_err().to_string();
        assert!(err.contains("'gpu'"), "{err}");
        assert!(parse_device("cuda:x").is_err());
    }
}

#[cfg(test)]
mod model_tests;
