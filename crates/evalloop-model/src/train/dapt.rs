//! Domain-adaptive pretraining (`[train] dapt_epochs`): continued masked-language-model
//! training of the base encoder on the logged prompts and outputs before the scoring stage.
//!
//! The texts are the dataset's training, validation and `unlabelled` rows (never the test
//! split), encoded as the scoring stage encodes them (prompt and output as a pair, the run's
//! `max_length` and truncation). In each sequence every ordinary token (not a special token or
//! padding) is chosen with probability `dapt_mask_probability` (at least one per sequence); a
//! chosen token is replaced by the mask token 80% of the time, by a random ordinary token 10%,
//! and left as it is 10%, as BERT was pretrained. The prediction head is BERT's
//! (`cls.predictions`: dense, GELU, LayerNorm, then the word embeddings transposed plus a bias),
//! read from the base when it has one under those names and started fresh otherwise
//! (all-MiniLM-L6-v2 ships none; RoBERTa's `lm_head` is not read); its loss is the
//! cross-entropy of the original tokens at the chosen positions. AdamW with the run's betas,
//! weight decay and layer decay, `dapt_learning_rate` with linear warm-up over the first 10% of
//! the steps and linear decay, gradients clipped at `grad_clip`; dropout on. The choices of
//! positions and replacements come from a ChaCha8 stream seeded with `seed`, so a run is
//! reproducible on the CPU.
//!
//! The adapted encoder (the head and the classifier left out) is written as a base-model
//! directory (`config.json`, tokenizer files, `model.safetensors`) that the scoring stage then
//! starts from. BERT and RoBERTa-family encoders only.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::config::TrainConfig;
use super::data;
use super::error::Result;
use super::optim::{AdamW, lr_at};
use crate::bert::{LayerNorm, linear};
use crate::config::Family;
use crate::weights::{self, Param, TrainableModel};
use crate::{BertConfig, Encoded, PairTokenizer, SequenceClassifier};

/// What the pretraining stage did, in `metrics.json` (`dapt`).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct DaptSummary {
    /// Sequences it trained on (training, validation and unlabelled rows).
    pub texts: usize,
    pub epochs: usize,
    pub steps: usize,
    /// The mean masked-token cross-entropy over the first epoch's steps and over the last's.
    pub first_epoch_loss: f64,
    pub last_epoch_loss: f64,
    /// Masked positions over the whole run.
    pub masked_tokens: usize,
    pub seconds: f64,
}

/// The head's parameter names (BERT's `cls.predictions`).
const HEAD: [&str; 5] = [
    "cls.predictions.transform.dense.weight",
    "cls.predictions.transform.dense.bias",
    "cls.predictions.transform.LayerNorm.weight",
    "cls.predictions.transform.LayerNorm.bias",
    "cls.predictions.bias",
];

/// Runs the stage for `cfg` on the dataset in `dataset_dir` and writes the adapted base model
/// into `dir`; returns the summary.
pub(super) fn adapt(dataset_dir: &Path, cfg: &TrainConfig, dir: &Path, device: &Device) -> Result<DaptSummary> {
    let started = Instant::now();
    let base_dir = crate::resolve_base_model(&cfg.base_model)?;
    let mut config = BertConfig::from_file(&base_dir.join("config.json"))?;
    if !matches!(config.family(), Family::Bert | Family::Roberta) {
        return Err(evalloop_core::Error::Input(format!(
            "[train] dapt_epochs: domain-adaptive pretraining supports BERT and RoBERTa-family encoders; {} is {}",
            cfg.base_model, config.model_type
        ))
        .into());
    }
    config.set_classifier(&["score"], "regression");
    if let Some(p) = cfg.dropout {
        config.set_dropout(p);
    }
    let max_length = cfg.max_length.min(config.max_sequence_length());
    let tokenizer =
        PairTokenizer::from_file(&base_dir.join("tokenizer.json"), max_length)?.with_truncation(cfg.truncation)?;
    let mask_id = tokenizer.token_id("[MASK]").or_else(|| tokenizer.token_id("<mask>")).ok_or_else(|| {
        evalloop_core::Error::Input(format!(
            "[train] dapt_epochs: the tokenizer of {} has no [MASK] or <mask> token",
            cfg.base_model
        ))
    })?;
    let special = tokenizer.special_ids();
    let ordinary: Vec<u32> = (0..tokenizer.vocab_size().min(config.vocab_size) as u32)
        .filter(|i| special.binary_search(i).is_err())
        .collect();

    let texts = read_texts(dataset_dir)?;
    if texts.is_empty() {
        return Err(evalloop_core::Error::Input(format!(
            "[train] dapt_epochs: {} has no training, validation or unlabelled rows to pretrain on",
            dataset_dir.display()
        ))
        .into());
    }
    let pairs: Vec<(&str, &str)> = texts.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let encoded = tokenizer.encode_pairs(&pairs)?;

    // The encoder from the base checkpoint (its own head ignored), then the prediction head:
    // the base's `cls.predictions` when it has one, else fresh.
    let ckpt_path = base_dir.join("model.safetensors");
    let raw = candle_core::safetensors::load(&ckpt_path, &Device::Cpu)
        .map_err(|e| evalloop_core::Error::Model(format!("{}: {e}", ckpt_path.display())))?;
    let ckpt = weights::canonical_tensors(&raw, config.family())?;
    let (all, _) = weights::init_weights(&config, Some(ckpt), &ckpt_path, cfg.seed)?;
    let model = TrainableModel::new(&config, all, |n| !n.starts_with("classifier."), cfg.seed, device)?;
    let SequenceClassifier::Bert(net) = &model.model else {
        unreachable!("the family was checked above");
    };
    let h = config.hidden_size;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0xda97);
    let mut head_params = Vec::new();
    for name in HEAD {
        let shape: Vec<usize> = match name {
            "cls.predictions.transform.dense.weight" => vec![h, h],
            "cls.predictions.bias" => vec![config.vocab_size],
            _ => vec![h],
        };
        let t = match raw.get(name) {
            Some(t) if t.dims() == shape.as_slice() => t.to_dtype(DType::F32)?,
            _ if name.ends_with("dense.weight") => {
                let n = h * h;
                let v: Vec<f32> =
                    (0..n).map(|_| (weights::normal(&mut rng) * config.initializer_range) as f32).collect();
                Tensor::from_vec(v, shape, &Device::Cpu)?
            }
            _ if name.ends_with("LayerNorm.weight") => Tensor::ones(shape, DType::F32, &Device::Cpu)?,
            _ => Tensor::zeros(shape, DType::F32, &Device::Cpu)?,
        };
        let var = Var::from_tensor(&t.to_device(device)?)?;
        head_params.push(Param { name: name.to_string(), var, decay: !weights::is_no_decay(name) });
    }
    let head_tensors: HashMap<String, Tensor> =
        head_params.iter().map(|p| (p.name.clone(), p.var.as_tensor().clone())).collect();
    let vb = VarBuilder::from_tensors(head_tensors, DType::F32, device);
    let dense = linear(h, h, vb.pp("cls.predictions.transform.dense"))?;
    let norm = LayerNorm::load(vb.pp("cls.predictions.transform.LayerNorm"), h, config.layer_norm_eps)?;
    let decoder_bias = vb.get(config.vocab_size, "cls.predictions.bias")?;
    let word_embeddings = model
        .params()
        .iter()
        .find(|p| p.name.ends_with("embeddings.word_embeddings.weight"))
        .map(|p| p.var.as_tensor().clone())
        .ok_or_else(|| evalloop_core::Error::Model("the encoder has no word embeddings".into()))?;

    let params: Vec<Param> = model.params().iter().cloned().chain(head_params).collect();
    let mut opt = AdamW::new(&params, cfg, config.num_hidden_layers)?;
    let batch = cfg.batch_size.max(1);
    let steps_per_epoch = encoded.len().div_ceil(batch);
    let total = steps_per_epoch * cfg.dapt_epochs;
    let warmup = total / 10;
    let (mut step, mut masked_tokens) = (0usize, 0usize);
    let (mut first_epoch_loss, mut last_epoch_loss) = (0.0, 0.0);
    for epoch in 0..cfg.dapt_epochs {
        let mut order: Vec<usize> = (0..encoded.len()).collect();
        order.shuffle(&mut rng);
        let mut epoch_loss = 0.0;
        for chunk in order.chunks(batch) {
            let items: Vec<&Encoded> = chunk.iter().map(|&i| &encoded[i]).collect();
            let (masked, positions, labels) = mask_batch(&items, &special, &ordinary, mask_id, cfg, &mut rng);
            masked_tokens += labels.len();
            let refs: Vec<&Encoded> = masked.iter().collect();
            let b = tokenizer.collate(&refs, device)?;
            let (bsz, seq) = b.input_ids.dims2()?;
            let hidden = net.hidden_states(&b.input_ids, &b.token_type_ids, &b.attention_mask, true)?;
            let flat = hidden.reshape((bsz * seq, h))?;
            let rows: Vec<u32> = positions.iter().map(|(r, t)| (r * seq + t) as u32).collect();
            let picked = flat.index_select(&Tensor::new(rows.as_slice(), device)?, 0)?;
            let x = crate::bert::dense(&dense, &picked)?.gelu_erf()?;
            let x = norm.forward(&x)?;
            let logits = x.matmul(&word_embeddings.t()?)?.broadcast_add(&decoder_bias)?;
            let target = Tensor::new(labels.as_slice(), device)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &target)?;
            let grads = loss.backward()?;
            let mut g: Vec<Option<Tensor>> = params.iter().map(|p| grads.get(p.var.as_tensor()).cloned()).collect();
            let lr = lr_at(step, cfg.dapt_learning_rate, warmup, total);
            opt.step(&params, &mut g, lr, cfg.grad_clip)?;
            epoch_loss += loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            step += 1;
        }
        let mean = epoch_loss / steps_per_epoch as f64;
        if epoch == 0 {
            first_epoch_loss = mean;
        }
        last_epoch_loss = mean;
        tracing::info!(epoch = epoch + 1, loss = format!("{mean:.4}"), "domain-adaptive pretraining");
    }

    // The adapted encoder as a base-model directory (classifier and head left out).
    std::fs::create_dir_all(dir).map_err(|e| evalloop_core::Error::io(dir, e))?;
    let tensors: BTreeMap<String, Tensor> =
        model.tensors().into_iter().filter(|(k, _)| !k.starts_with("classifier.")).collect();
    let bytes = weights::safetensors_bytes(&tensors, None)?;
    evalloop_core::atomic::write_atomic(&dir.join("model.safetensors"), &bytes)?;
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"] {
        let src = base_dir.join(f);
        if src.is_file() {
            let bytes = std::fs::read(&src).map_err(|e| evalloop_core::Error::io(&src, e))?;
            evalloop_core::atomic::write_atomic(&dir.join(f), &bytes)?;
        }
    }
    Ok(DaptSummary {
        texts: encoded.len(),
        epochs: cfg.dapt_epochs,
        steps: step,
        first_epoch_loss,
        last_epoch_loss,
        masked_tokens,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The (prompt, output) texts of the training, validation and unlabelled rows.
fn read_texts(dataset_dir: &Path) -> evalloop_core::Result<Vec<(String, String)>> {
    let kind = data::read_label_kind(dataset_dir)?;
    let mut out = Vec::new();
    for split in ["train.jsonl", "validation.jsonl"] {
        for e in data::read_split(&dataset_dir.join(split), kind, split != "train.jsonl")? {
            out.push((e.prompt, e.output));
        }
    }
    let unlabelled = dataset_dir.join("unlabelled.jsonl");
    if unlabelled.is_file() {
        for e in data::read_unlabelled(&unlabelled, 0)? {
            out.push((e.prompt, e.output));
        }
    }
    Ok(out)
}

/// Masks a batch as the module docs say: the masked copies, the chosen positions (row, token)
/// and the original ids there.
fn mask_batch(
    items: &[&Encoded],
    special: &[u32],
    ordinary: &[u32],
    mask_id: u32,
    cfg: &TrainConfig,
    rng: &mut ChaCha8Rng,
) -> (Vec<Encoded>, Vec<(usize, usize)>, Vec<u32>) {
    let mut masked = Vec::with_capacity(items.len());
    let (mut positions, mut labels) = (Vec::new(), Vec::new());
    for (row, e) in items.iter().enumerate() {
        let mut ids = e.ids.clone();
        let candidates: Vec<usize> = (0..ids.len()).filter(|&t| special.binary_search(&ids[t]).is_err()).collect();
        let mut chosen: Vec<usize> =
            candidates.iter().copied().filter(|_| rng.random::<f64>() < cfg.dapt_mask_probability).collect();
        if chosen.is_empty() && !candidates.is_empty() {
            chosen.push(candidates[rng.random_range(0..candidates.len())]);
        }
        for t in chosen {
            positions.push((row, t));
            labels.push(ids[t]);
            let u: f64 = rng.random();
            if u < 0.8 {
                ids[t] = mask_id;
            } else if u < 0.9 && !ordinary.is_empty() {
                ids[t] = ordinary[rng.random_range(0..ordinary.len())];
            }
        }
        masked.push(Encoded { ids, type_ids: e.type_ids.clone() });
    }
    (masked, positions, labels)
}

/// The adapted base model's directory inside a run's output directory.
pub(super) fn base_dir_in(out_dir: &Path) -> PathBuf {
    out_dir.join("dapt-base")
}
