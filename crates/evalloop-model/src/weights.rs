//! Weights: the parameter list of a config, checkpoint loading under canonical Hugging Face names
//! (the family's `bert.` / `roberta.` / `model.` prefix added when missing), seeded
//! initialisation of what a base checkpoint lacks (pooler, heads, classifier), trainable `Var`s
//! for training, and mmaped plain tensors for inference.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::ModelError;
use super::bert::DropoutRng;
use super::classifier::SequenceClassifier;
use super::config::{BertConfig, Family};

/// How a parameter is initialised when the checkpoint does not have it (as transformers does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    /// Normal(0, `initializer_range`).
    Normal,
    /// All zeros (biases).
    Zeros,
    /// All ones (LayerNorm weights).
    Ones,
}

/// One parameter of the model: canonical name, shape, and initialiser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamSpec {
    /// Hugging Face name, e.g. `bert.encoder.layer.0.attention.self.query.weight`.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Initialiser for a missing tensor.
    pub init: Init,
}

/// Every parameter of the sequence classifier of `cfg`'s family, in a fixed order.
pub fn param_specs(cfg: &BertConfig) -> Vec<ParamSpec> {
    match cfg.family() {
        Family::ModernBert => return modernbert_param_specs(cfg),
        Family::Deberta => return deberta_param_specs(cfg),
        Family::Bert | Family::Roberta => {}
    }
    let h = cfg.hidden_size;
    let prefix = cfg.family().prefix();
    let mut specs = Vec::new();
    let mut push = |name: String, shape: Vec<usize>, init: Init| specs.push(ParamSpec { name, shape, init });
    let linear = |push: &mut dyn FnMut(String, Vec<usize>, Init), p: &str, i: usize, o: usize| {
        push(format!("{p}.weight"), vec![o, i], Init::Normal);
        push(format!("{p}.bias"), vec![o], Init::Zeros);
    };
    let ln = |push: &mut dyn FnMut(String, Vec<usize>, Init), p: &str| {
        push(format!("{p}.weight"), vec![h], Init::Ones);
        push(format!("{p}.bias"), vec![h], Init::Zeros);
    };
    let e = format!("{prefix}.embeddings");
    push(format!("{e}.word_embeddings.weight"), vec![cfg.vocab_size, h], Init::Normal);
    push(format!("{e}.position_embeddings.weight"), vec![cfg.max_position_embeddings, h], Init::Normal);
    push(format!("{e}.token_type_embeddings.weight"), vec![cfg.type_vocab_size, h], Init::Normal);
    ln(&mut push, &format!("{e}.LayerNorm"));
    for l in 0..cfg.num_hidden_layers {
        let p = format!("{prefix}.encoder.layer.{l}");
        for qkv in ["query", "key", "value"] {
            linear(&mut push, &format!("{p}.attention.self.{qkv}"), h, h);
        }
        linear(&mut push, &format!("{p}.attention.output.dense"), h, h);
        ln(&mut push, &format!("{p}.attention.output.LayerNorm"));
        linear(&mut push, &format!("{p}.intermediate.dense"), h, cfg.intermediate_size);
        linear(&mut push, &format!("{p}.output.dense"), cfg.intermediate_size, h);
        ln(&mut push, &format!("{p}.output.LayerNorm"));
    }
    if cfg.family() == Family::Roberta {
        linear(&mut push, "classifier.dense", h, h);
        linear(&mut push, "classifier.out_proj", h, cfg.num_labels());
    } else {
        linear(&mut push, "bert.pooler.dense", h, h);
        linear(&mut push, "classifier", h, cfg.num_labels());
    }
    specs
}

/// ModernBERT's parameters (`model.*`, the prediction head `head.*`, `classifier`); biases
/// and norm biases only where the config asks for them.
fn modernbert_param_specs(cfg: &BertConfig) -> Vec<ParamSpec> {
    let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
    let m = &cfg.modernbert;
    let mut specs = Vec::new();
    let mut push = |name: String, shape: Vec<usize>, init: Init| specs.push(ParamSpec { name, shape, init });
    let linear = |push: &mut dyn FnMut(String, Vec<usize>, Init), p: &str, i: usize, o: usize, bias: Option<bool>| {
        push(format!("{p}.weight"), vec![o, i], Init::Normal);
        if bias.unwrap_or(false) {
            push(format!("{p}.bias"), vec![o], Init::Zeros);
        }
    };
    let norm = |push: &mut dyn FnMut(String, Vec<usize>, Init), p: &str| {
        push(format!("{p}.weight"), vec![h], Init::Ones);
        if m.norm_bias.unwrap_or(false) {
            push(format!("{p}.bias"), vec![h], Init::Zeros);
        }
    };
    push("model.embeddings.tok_embeddings.weight".to_string(), vec![cfg.vocab_size, h], Init::Normal);
    norm(&mut push, "model.embeddings.norm");
    for l in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{l}");
        if l > 0 {
            norm(&mut push, &format!("{p}.attn_norm"));
        }
        linear(&mut push, &format!("{p}.attn.Wqkv"), h, 3 * h, m.attention_bias);
        linear(&mut push, &format!("{p}.attn.Wo"), h, h, m.attention_bias);
        norm(&mut push, &format!("{p}.mlp_norm"));
        linear(&mut push, &format!("{p}.mlp.Wi"), h, 2 * i, m.mlp_bias);
        linear(&mut push, &format!("{p}.mlp.Wo"), i, h, m.mlp_bias);
    }
    norm(&mut push, "model.final_norm");
    linear(&mut push, "head.dense", h, h, m.classifier_bias);
    norm(&mut push, "head.norm");
    linear(&mut push, "classifier", h, cfg.num_labels(), Some(true));
    specs
}

/// DeBERTa-v2's parameters (`deberta.*`, `pooler.dense`, `classifier`): absolute positions
/// and token types only where the config has them, the relative embedding and its LayerNorm,
/// and the relative projections when `share_att_key` is off.
fn deberta_param_specs(cfg: &BertConfig) -> Vec<ParamSpec> {
    let (h, d) = (cfg.hidden_size, &cfg.deberta);
    let mut specs = Vec::new();
    let mut push = |name: String, shape: Vec<usize>, init: Init| specs.push(ParamSpec { name, shape, init });
    let linear = |push: &mut dyn FnMut(String, Vec<usize>, Init), p: &str, i: usize, o: usize| {
        push(format!("{p}.weight"), vec![o, i], Init::Normal);
        push(format!("{p}.bias"), vec![o], Init::Zeros);
    };
    let ln = |push: &mut dyn FnMut(String, Vec<usize>, Init), p: &str| {
        push(format!("{p}.weight"), vec![h], Init::Ones);
        push(format!("{p}.bias"), vec![h], Init::Zeros);
    };
    let e = "deberta.embeddings";
    push(format!("{e}.word_embeddings.weight"), vec![cfg.vocab_size, h], Init::Normal);
    if d.position_biased_input.unwrap_or(true) {
        push(format!("{e}.position_embeddings.weight"), vec![cfg.max_position_embeddings, h], Init::Normal);
    }
    if cfg.type_vocab_size > 0 {
        push(format!("{e}.token_type_embeddings.weight"), vec![cfg.type_vocab_size, h], Init::Normal);
    }
    ln(&mut push, &format!("{e}.LayerNorm"));
    let (c2p, p2c) = cfg.deberta_terms();
    let own = !d.share_att_key.unwrap_or(false);
    for l in 0..cfg.num_hidden_layers {
        let p = format!("deberta.encoder.layer.{l}");
        for proj in ["query_proj", "key_proj", "value_proj"] {
            linear(&mut push, &format!("{p}.attention.self.{proj}"), h, h);
        }
        if own && c2p {
            linear(&mut push, &format!("{p}.attention.self.pos_key_proj"), h, h);
        }
        if own && p2c {
            linear(&mut push, &format!("{p}.attention.self.pos_query_proj"), h, h);
        }
        linear(&mut push, &format!("{p}.attention.output.dense"), h, h);
        ln(&mut push, &format!("{p}.attention.output.LayerNorm"));
        linear(&mut push, &format!("{p}.intermediate.dense"), h, cfg.intermediate_size);
        linear(&mut push, &format!("{p}.output.dense"), cfg.intermediate_size, h);
        ln(&mut push, &format!("{p}.output.LayerNorm"));
    }
    if d.relative_attention.unwrap_or(false) {
        push("deberta.encoder.rel_embeddings.weight".to_string(), vec![2 * cfg.deberta_span(), h], Init::Normal);
        if deberta_norm_rel(cfg) {
            ln(&mut push, "deberta.encoder.LayerNorm");
        }
    }
    linear(&mut push, "pooler.dense", h, h);
    linear(&mut push, "classifier", h, cfg.num_labels());
    specs
}

/// Whether DeBERTa's relative embedding is normalised (`"layer_norm"` in `norm_rel_ebd`).
pub(crate) fn deberta_norm_rel(cfg: &BertConfig) -> bool {
    cfg.deberta.norm_rel_ebd.as_deref().unwrap_or("none").to_lowercase().split('|').any(|t| t.trim() == "layer_norm")
}

/// True for parameters that get no weight decay: biases and LayerNorm weights (`LayerNorm`,
/// or ModernBERT's `norm`, `attn_norm`, `mlp_norm`, `final_norm`).
pub fn is_no_decay(name: &str) -> bool {
    name.ends_with(".bias") || name.contains("LayerNorm") || name.split('.').any(|part| part.ends_with("norm"))
}

/// True for the embedding parameters of any family (`bert.embeddings.*`,
/// `roberta.embeddings.*`, `model.embeddings.*`).
pub fn is_embedding(name: &str) -> bool {
    ["bert.embeddings.", "roberta.embeddings.", "model.embeddings.", "deberta.embeddings."]
        .iter()
        .any(|p| name.starts_with(p))
}

/// The encoder layer a parameter belongs to (`bert.encoder.layer.N.*`,
/// `roberta.encoder.layer.N.*`, `model.layers.N.*`), or `None`.
pub fn layer_index(name: &str) -> Option<usize> {
    let rest = ["bert.encoder.layer.", "roberta.encoder.layer.", "model.layers.", "deberta.encoder.layer."]
        .iter()
        .find_map(|p| name.strip_prefix(p))?;
    rest.split('.').next()?.parse().ok()
}

/// True for the parameters a base checkpoint may lack, initialised then: the classifier and
/// what sits between the encoder and it (BERT's and DeBERTa's poolers, ModernBERT's prediction
/// head).
fn is_head(name: &str) -> bool {
    ["classifier.", "bert.pooler.", "head.", "pooler."].iter().any(|p| name.starts_with(p))
}

/// A checkpoint name under Hugging Face's canonical sequence-classification names of `family`:
/// the prefix (`bert.`, `roberta.`, `model.`) added when missing, old `gamma`/`beta` LayerNorm
/// names mapped; `None` for tensors the model does not use (`position_ids` buffers,
/// pre-training heads: BERT's `cls.*`, RoBERTa's `lm_head.*`, ModernBERT's `decoder.*`,
/// DeBERTa's `lm_predictions.*` and `mask_predictions.*`).
pub fn canonical_name(name: &str, family: Family) -> Option<String> {
    if name.ends_with("position_ids") {
        return None;
    }
    let keep_root: &[&str] = match family {
        Family::Bert => {
            let name = name.strip_prefix("model.").unwrap_or(name);
            if name.starts_with("cls.") {
                return None;
            }
            return Some(bert_name(name));
        }
        Family::Roberta if name.starts_with("lm_head.") => return None,
        Family::Roberta => &["roberta.", "classifier."],
        Family::ModernBert if name.starts_with("decoder.") => return None,
        Family::ModernBert => &["model.", "head.", "classifier."],
        Family::Deberta
            if ["lm_predictions.", "mask_predictions.", "cls.", "lm_head."].iter().any(|p| name.starts_with(p)) =>
        {
            return None;
        }
        Family::Deberta => &["deberta.", "pooler.", "classifier."],
    };
    if keep_root.iter().any(|p| name.starts_with(p)) {
        Some(name.to_string())
    } else {
        Some(format!("{}.{name}", family.prefix()))
    }
}

/// BERT's canonical name of `name` (see [`canonical_name`]).
fn bert_name(name: &str) -> String {
    let name = if name.starts_with("bert.") || name.starts_with("classifier.") {
        name.to_string()
    } else {
        format!("bert.{name}")
    };
    match name.strip_suffix(".gamma") {
        Some(stem) if stem.ends_with("LayerNorm") => format!("{stem}.weight"),
        _ => match name.strip_suffix(".beta") {
            Some(stem) if stem.ends_with("LayerNorm") => format!("{stem}.bias"),
            _ => name,
        },
    }
}

/// Reads a safetensors checkpoint onto the CPU as f32 under `family`'s canonical names.
pub fn load_checkpoint(path: &Path, family: Family) -> Result<BTreeMap<String, Tensor>, ModelError> {
    let raw = candle_core::safetensors::load(path, &Device::Cpu)
        .map_err(|e| ModelError::Checkpoint { path: path.to_path_buf(), msg: e.to_string() })?;
    canonical_tensors(&raw, family)
}

/// The tensors of a checkpoint as read (`raw`, its own names) as f32 under `family`'s canonical
/// names; pre-training heads are left out (see [`canonical_name`]).
pub fn canonical_tensors(
    raw: &std::collections::HashMap<String, Tensor>,
    family: Family,
) -> Result<BTreeMap<String, Tensor>, ModelError> {
    let mut out = BTreeMap::new();
    for (name, t) in raw {
        if let Some(canon) = canonical_name(name, family) {
            out.insert(canon, t.to_dtype(DType::F32)?);
        }
    }
    Ok(out)
}

/// What [`init_weights`] took from the checkpoint and what it initialised.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InitReport {
    /// Parameters read from the checkpoint.
    pub loaded: Vec<String>,
    /// Parameters newly initialised (missing or, for the classifier, of another shape).
    pub initialized: Vec<String>,
    /// Checkpoint tensors the model does not use.
    pub unused: Vec<String>,
}

/// The full parameter set for `cfg`: tensors from `checkpoint` where present, the rest drawn
/// from a ChaCha8 stream seeded with `seed` (normal with `initializer_range`, zeros, ones).
/// The encoder must be complete in the checkpoint (`origin` names it in errors); the pooler,
/// prediction head and classifier may be missing, and a classifier of another shape is
/// replaced.
pub fn init_weights(
    cfg: &BertConfig,
    checkpoint: Option<BTreeMap<String, Tensor>>,
    origin: &Path,
    seed: u64,
) -> Result<(BTreeMap<String, Tensor>, InitReport), ModelError> {
    // A checkpoint, even an empty one, must hold the whole encoder: only `None` (no base
    // model) starts from random weights.
    let must_exist = checkpoint.is_some();
    let mut ckpt = checkpoint.unwrap_or_default();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut report = InitReport::default();
    let mut out = BTreeMap::new();
    for spec in param_specs(cfg) {
        let optional = is_head(&spec.name);
        if let Some(t) = ckpt.remove(&spec.name) {
            if t.dims() == spec.shape.as_slice() {
                report.loaded.push(spec.name.clone());
                out.insert(spec.name, t);
                continue;
            }
            if !spec.name.starts_with("classifier.") {
                return Err(ModelError::Checkpoint {
                    path: origin.to_path_buf(),
                    msg: format!("tensor {} has shape {:?}, the config needs {:?}", spec.name, t.dims(), spec.shape),
                });
            }
        } else if must_exist && !optional {
            return Err(ModelError::Checkpoint {
                path: origin.to_path_buf(),
                msg: format!("tensor {} is missing (with or without the {}. prefix)", spec.name, cfg.family().prefix()),
            });
        }
        let n: usize = spec.shape.iter().product();
        let values: Vec<f32> = match spec.init {
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
            Init::Normal => (0..n).map(|_| (normal(&mut rng) * cfg.initializer_range) as f32).collect(),
        };
        report.initialized.push(spec.name.clone());
        out.insert(spec.name, Tensor::from_vec(values, spec.shape, &Device::Cpu)?);
    }
    report.unused = ckpt.into_keys().collect();
    Ok((out, report))
}

/// A standard normal draw (Box-Muller).
pub(crate) fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A trainable parameter.
#[derive(Debug, Clone)]
pub struct Param {
    /// Canonical name.
    pub name: String,
    /// The variable the optimizer updates.
    pub var: Var,
    /// Whether weight decay applies (not for biases and LayerNorm weights).
    pub decay: bool,
}

/// A model whose trainable parameters are `Var`s (the frozen ones are plain tensors, so no
/// gradient is computed for them).
#[derive(Debug, Clone)]
pub struct TrainableModel {
    /// The network.
    pub model: SequenceClassifier,
    /// Its config.
    pub config: BertConfig,
    params: Vec<Param>,
    frozen: BTreeMap<String, Tensor>,
    rng: DropoutRng,
}

impl TrainableModel {
    /// Builds the model on `device` from a full parameter set (see [`init_weights`]);
    /// parameters for which `trainable(name)` is false stay constant. Dropout masks come from a
    /// stream seeded with `dropout_seed`.
    pub fn new(
        config: &BertConfig,
        weights: BTreeMap<String, Tensor>,
        trainable: impl Fn(&str) -> bool,
        dropout_seed: u64,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let mut params = Vec::new();
        let mut frozen = BTreeMap::new();
        let mut all: HashMap<String, Tensor> = HashMap::new();
        for (name, t) in weights {
            let t = t.to_dtype(DType::F32)?.to_device(device)?;
            if trainable(&name) {
                let var = Var::from_tensor(&t)?;
                all.insert(name.clone(), var.as_tensor().clone());
                params.push(Param { decay: !is_no_decay(&name), name, var });
            } else {
                all.insert(name.clone(), t.clone());
                frozen.insert(name, t);
            }
        }
        let rng = DropoutRng::new(dropout_seed);
        let vb = VarBuilder::from_tensors(all, DType::F32, device);
        let model = SequenceClassifier::load(vb, config, &rng)?;
        Ok(TrainableModel { model, config: config.clone(), params, frozen, rng })
    }

    /// The trainable parameters, in name order.
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// The dropout stream every dropout layer of the model draws from.
    pub fn rng(&self) -> &DropoutRng {
        &self.rng
    }

    /// The dropout stream, to save or restore its position.
    pub fn dropout_rng(&mut self) -> &mut DropoutRng {
        &mut self.rng
    }

    /// Every weight, trainable and frozen, under canonical names.
    pub fn tensors(&self) -> BTreeMap<String, Tensor> {
        let mut out = self.frozen.clone();
        for p in &self.params {
            out.insert(p.name.clone(), p.var.as_tensor().detach());
        }
        out
    }

    /// Sets the trainable parameters from `weights` (names must match).
    pub fn set_params(&self, weights: &HashMap<String, Tensor>) -> Result<(), ModelError> {
        for p in &self.params {
            let t = weights
                .get(&p.name)
                .ok_or_else(|| ModelError::Candle(candle_core::Error::msg(format!("no saved value for {}", p.name))))?;
            p.var.set(&t.to_device(p.var.device())?)?;
        }
        Ok(())
    }
}

/// Serialises tensors as safetensors bytes (on the CPU), with optional string metadata.
pub fn safetensors_bytes(
    tensors: &BTreeMap<String, Tensor>,
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<u8>, ModelError> {
    let cpu: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(k, t)| Ok((k.clone(), t.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<Result<_, candle_core::Error>>()?;
    safetensors::serialize(cpu.iter().map(|(k, t)| (k.as_str(), t)), metadata)
        .map_err(|e| ModelError::Candle(candle_core::Error::msg(e.to_string())))
}

/// A trained classifier loaded for inference: plain (memory-mapped) tensors, no `Var`s, so no
/// gradient graph is recorded.
#[derive(Debug, Clone)]
pub struct InferenceModel {
    /// The network.
    pub model: SequenceClassifier,
    /// Its config.json.
    pub config: BertConfig,
}

impl InferenceModel {
    /// Loads `dir/config.json` and `dir/model.safetensors` (names with or without the family's
    /// prefix).
    pub fn load(dir: &Path, device: &Device) -> Result<Self, ModelError> {
        let config = BertConfig::from_file(&dir.join("config.json"))?;
        let weights = dir.join("model.safetensors");
        if !weights.is_file() {
            return Err(ModelError::Checkpoint {
                path: weights,
                msg: "not found (only safetensors weights are loaded)".to_string(),
            });
        }
        // SAFETY: the file is memory-mapped read-only; like every mmap it must not be truncated
        // while the model is loaded, which the training code never does (it writes a new file
        // and renames it).
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, device)? };
        let model = SequenceClassifier::load(vb, &config, &DropoutRng::new(0))
            .map_err(|e| ModelError::Checkpoint { path: weights.clone(), msg: e.to_string() })?;
        Ok(InferenceModel { model, config })
    }

    /// Builds an inference model from in-memory tensors (canonical names), e.g. a base model
    /// with an initialised head.
    pub fn from_tensors(
        config: &BertConfig,
        weights: BTreeMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let vb = VarBuilder::from_tensors(weights.into_iter().collect(), DType::F32, device);
        let model = SequenceClassifier::load(vb, config, &DropoutRng::new(0))?;
        Ok(InferenceModel { model, config: config.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_names_add_the_bert_prefix_once() {
        assert_eq!(
            canonical_name("embeddings.word_embeddings.weight", Family::Bert).as_deref(),
            Some("bert.embeddings.word_embeddings.weight")
        );
        assert_eq!(canonical_name("bert.pooler.dense.bias", Family::Bert).as_deref(), Some("bert.pooler.dense.bias"));
        assert_eq!(canonical_name("classifier.weight", Family::Bert).as_deref(), Some("classifier.weight"));
        assert_eq!(
            canonical_name("encoder.layer.0.output.LayerNorm.gamma", Family::Bert).as_deref(),
            Some("bert.encoder.layer.0.output.LayerNorm.weight")
        );
        assert_eq!(canonical_name("embeddings.position_ids", Family::Bert), None);
        // RoBERTa: `roberta.` added, the masked-LM head dropped; ModernBERT keeps `model.`.
        let r = |n: &str| canonical_name(n, Family::Roberta);
        assert_eq!(
            r("embeddings.word_embeddings.weight").as_deref(),
            Some("roberta.embeddings.word_embeddings.weight")
        );
        assert_eq!(r("classifier.out_proj.bias").as_deref(), Some("classifier.out_proj.bias"));
        assert_eq!(r("lm_head.dense.weight"), None);
        let m = |n: &str| canonical_name(n, Family::ModernBert);
        assert_eq!(m("model.layers.0.attn.Wqkv.weight").as_deref(), Some("model.layers.0.attn.Wqkv.weight"));
        assert_eq!(m("layers.0.attn.Wqkv.weight").as_deref(), Some("model.layers.0.attn.Wqkv.weight"));
        assert_eq!(m("head.norm.weight").as_deref(), Some("head.norm.weight"));
        assert_eq!(m("decoder.bias"), None);
        assert!(is_no_decay("model.layers.1.attn_norm.weight") && is_no_decay("head.norm.weight"));
        assert!(!is_no_decay("model.layers.1.attn.Wqkv.weight"));
        assert_eq!(layer_index("model.layers.12.mlp.Wi.weight"), Some(12));
        assert_eq!(layer_index("roberta.encoder.layer.3.output.dense.bias"), Some(3));
        assert_eq!(layer_index("classifier.dense.weight"), None);
        assert!(is_embedding("roberta.embeddings.LayerNorm.bias") && !is_embedding("model.final_norm.weight"));
        assert!(is_no_decay("bert.embeddings.LayerNorm.weight"));
        assert!(is_no_decay("classifier.bias"));
        assert!(!is_no_decay("classifier.weight"));
    }
}

#[cfg(test)]
mod hardening_tests {
    use super::*;
    use crate::testutil::{random_weights, tiny_config};

    /// Regression: a base checkpoint with no tensors made every tensor optional, so training
    /// started from random weights and succeeded.
    #[test]
    fn empty_base_checkpoint_is_refused() {
        let cfg = tiny_config();
        let err = init_weights(&cfg, Some(BTreeMap::new()), Path::new("base/model.safetensors"), 1).unwrap_err();
        assert!(err.to_string().contains("is missing"), "{err}");
        // A checkpoint missing one encoder tensor is refused too; the head may be missing.
        let mut w = random_weights(&cfg, 1);
        w.retain(|k, _| !k.starts_with("classifier."));
        assert!(init_weights(&cfg, Some(w.clone()), Path::new("base"), 1).is_ok());
        w.remove("bert.embeddings.word_embeddings.weight");
        assert!(init_weights(&cfg, Some(w), Path::new("base"), 1).is_err());
    }

    /// Regression: absurd sizes passed validation and aborted on a 1.5 PB allocation;
    /// `layer_norm_eps = -1` passed and the model output NaN.
    #[test]
    fn absurd_config_sizes_are_refused_before_allocating() {
        let origin = Path::new("m/config.json");
        for cfg in [
            BertConfig { vocab_size: 1 << 40, ..tiny_config() },
            BertConfig { hidden_size: 1 << 20, num_attention_heads: 1, ..tiny_config() },
            BertConfig {
                num_hidden_layers: 1000,
                intermediate_size: 100_000,
                hidden_size: 30_000,
                num_attention_heads: 1,
                ..tiny_config()
            },
            BertConfig { layer_norm_eps: -1.0, ..tiny_config() },
            BertConfig { layer_norm_eps: f64::NAN, ..tiny_config() },
            BertConfig { max_position_embeddings: 0, ..tiny_config() },
        ] {
            let err = cfg.validate(origin).unwrap_err().to_string();
            assert!(err.contains("m/config.json"), "{err}");
        }
        assert!(tiny_config().validate(origin).is_ok());
    }
}
