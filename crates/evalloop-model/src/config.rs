//! The Hugging Face `config.json` of an encoder (BERT, RoBERTa / XLM-RoBERTa, ModernBERT,
//! DeBERTa-v2/v3), as one serde struct; `model_type` picks the [`Family`].

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::ModelError;

/// The activation of the feed-forward block (`hidden_act` in config.json).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum HiddenAct {
    /// Exact GELU (erf), transformers' `"gelu"`.
    #[default]
    #[serde(rename = "gelu")]
    Gelu,
    /// Tanh-approximated GELU (`"gelu_new"`, `"gelu_pytorch_tanh"`, `"gelu_fast"`).
    #[serde(rename = "gelu_new", alias = "gelu_pytorch_tanh", alias = "gelu_fast")]
    GeluTanh,
    /// ReLU.
    #[serde(rename = "relu")]
    Relu,
}

/// The encoder families this crate builds, chosen by config.json's `model_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `"bert"`: absolute positions, token types, a pooler (`bert.*`).
    Bert,
    /// `"roberta"` and `"xlm-roberta"`: the BERT encoder with positions offset by
    /// `pad_token_id + 1`, token type 0 only, no pooler, and a two-layer classification head
    /// (`roberta.*`, `classifier.dense`, `classifier.out_proj`).
    Roberta,
    /// `"modernbert"`: pre-norm layers without biases, rotary positions, GeGLU, local and global
    /// attention alternating (`model.*`, `head.*`, `classifier`).
    ModernBert,
    /// `"deberta-v2"` (DeBERTa-v2 and v3): disentangled attention with relative positions
    /// (`deberta.*`, `pooler.dense`, `classifier`).
    Deberta,
}

impl Family {
    /// The prefix of the encoder's tensors in a sequence-classification checkpoint.
    pub fn prefix(self) -> &'static str {
        match self {
            Family::Bert => "bert",
            Family::Roberta => "roberta",
            Family::ModernBert => "model",
            Family::Deberta => "deberta",
        }
    }

    /// transformers' class name of the sequence classifier, for `architectures`.
    pub fn classifier_architecture(self, model_type: &str) -> &'static str {
        match (self, model_type) {
            (Family::Bert, _) => "BertForSequenceClassification",
            (Family::Roberta, "xlm-roberta") => "XLMRobertaForSequenceClassification",
            (Family::Roberta, _) => "RobertaForSequenceClassification",
            (Family::ModernBert, _) => "ModernBertForSequenceClassification",
            (Family::Deberta, _) => "DebertaV2ForSequenceClassification",
        }
    }
}

/// The `model_type`s this crate loads.
pub const MODEL_TYPES: [&str; 5] = ["bert", "roberta", "xlm-roberta", "modernbert", "deberta-v2"];

/// The most weights a model may have (4 billion, 16 GB in f32).
pub const MAX_PARAMETERS: u128 = 4_000_000_000;

/// ModernBERT's keys of config.json (transformers' `ModernBertConfig`), each `None` when the
/// file does not have it; the accessors of [`BertConfig`] supply transformers' defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ModernBertFields {
    /// LayerNorm epsilon (default 1e-5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub norm_eps: Option<f64>,
    /// Whether the LayerNorms have a bias (default false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub norm_bias: Option<bool>,
    /// Whether `Wqkv` and the attention's `Wo` have biases (default false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attention_bias: Option<bool>,
    /// Whether the feed-forward `Wi` and `Wo` have biases (default false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mlp_bias: Option<bool>,
    /// Whether the head's dense layer has a bias (default false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classifier_bias: Option<bool>,
    /// The GeGLU activation (default exact GELU).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hidden_activation: Option<HiddenAct>,
    /// The head's activation (default exact GELU).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classifier_activation: Option<HiddenAct>,
    /// Rotary base of the global-attention layers (default 160000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global_rope_theta: Option<f64>,
    /// Rotary base of the local-attention layers; `None` means `global_rope_theta`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_rope_theta: Option<f64>,
    /// Every how many layers attention is global (layer 0 always is) (default 3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global_attn_every_n_layers: Option<usize>,
    /// Width of the local attention window in tokens: a token sees those at most half of it
    /// away (default 128).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_attention: Option<usize>,
    /// Dropout after the embedding LayerNorm (default 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding_dropout: Option<f64>,
    /// Dropout on attention probabilities and the attention output (default 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attention_dropout: Option<f64>,
    /// Dropout inside the feed-forward block (default 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mlp_dropout: Option<f64>,
    /// `"cls"` (the first token) or `"mean"` (over the tokens) before the head (default
    /// `"cls"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classifier_pooling: Option<String>,
    /// Per layer, `"full_attention"` or `"sliding_attention"` (transformers 5 writes it); when
    /// present it overrides `global_attn_every_n_layers`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer_types: Option<Vec<String>>,
    /// Rotary settings per attention kind (transformers 5 writes it): `"full_attention"` and
    /// `"sliding_attention"`, each with `rope_type` (only `"default"` is supported) and
    /// `rope_theta`; a theta present here overrides `global_rope_theta` / `local_rope_theta`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rope_parameters: Option<BTreeMap<String, RopeParameters>>,
}

/// DeBERTa-v2's keys of config.json (transformers' `DebertaV2Config`), each `None` when the file
/// does not have it; the accessors of [`BertConfig`] supply transformers' defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct DebertaFields {
    /// Whether attention has the relative-position terms (default false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relative_attention: Option<bool>,
    /// Relative distance cap; below 1 means `max_position_embeddings` (default -1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_relative_positions: Option<i64>,
    /// Log-bucket count of relative positions (DeBERTa-v3: 256); below 1 means none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position_buckets: Option<i64>,
    /// Whether absolute position embeddings are added to the input (default true; v3: false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position_biased_input: Option<bool>,
    /// The relative terms: `["c2p", "p2c"]`, or the older `"c2p|p2c"` string.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pos_att_type: Option<PosAttType>,
    /// `"layer_norm"` to normalise the relative embeddings (default `"none"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub norm_rel_ebd: Option<String>,
    /// Whether the relative terms reuse `query_proj` / `key_proj` (default false: their own
    /// `pos_query_proj` / `pos_key_proj`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub share_att_key: Option<bool>,
    /// Width of the pooler; only `hidden_size` is supported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pooler_hidden_size: Option<usize>,
    /// Dropout before the pooler's dense layer (default 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pooler_dropout: Option<f64>,
    /// The pooler's activation (default exact GELU).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pooler_hidden_act: Option<HiddenAct>,
    /// Dropout before the classifier; `None` means `hidden_dropout_prob`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cls_dropout: Option<f64>,
    /// The first layer's convolution (DeBERTa-v2 xlarge); not supported when above 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conv_kernel_size: Option<usize>,
    /// Width of the word embeddings; only `hidden_size` is supported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding_size: Option<usize>,
    /// Width of one attention head; only `hidden_size / num_attention_heads` is supported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attention_head_size: Option<usize>,
}

/// DeBERTa's `pos_att_type`: a list, or the older `|`-separated string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PosAttType {
    /// `["c2p", "p2c"]`.
    List(Vec<String>),
    /// `"c2p|p2c"`.
    Text(String),
}

impl PosAttType {
    /// The entries, trimmed and lowercased.
    pub fn entries(&self) -> Vec<String> {
        match self {
            PosAttType::List(v) => v.iter().map(|t| t.trim().to_lowercase()).collect(),
            PosAttType::Text(t) => t.split('|').map(|t| t.trim().to_lowercase()).filter(|t| !t.is_empty()).collect(),
        }
    }
}

/// One entry of ModernBERT's `rope_parameters`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RopeParameters {
    /// `"default"` (plain rotary positions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rope_type: Option<String>,
    /// The rotary base.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    /// Other keys, kept as they are.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// A BERT config as transformers writes it, plus the sequence-classification fields
/// (`architectures`, `id2label`, `label2id`, `problem_type`, `num_labels`). Keys this struct does
/// not know are kept in `extra` and written back unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BertConfig {
    /// e.g. `["BertForSequenceClassification"]`; empty in many base models.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub architectures: Vec<String>,
    /// `"bert"`, `"roberta"`, `"xlm-roberta"` or `"modernbert"` (see [`Family`]).
    pub model_type: String,
    /// Number of rows of the word embedding (default 30522).
    pub vocab_size: usize,
    /// Width of every hidden state (default 768).
    pub hidden_size: usize,
    /// Number of encoder layers (default 12).
    pub num_hidden_layers: usize,
    /// Number of attention heads; divides `hidden_size` (default 12).
    pub num_attention_heads: usize,
    /// Width of the feed-forward block (default 3072).
    pub intermediate_size: usize,
    /// Feed-forward activation (default exact GELU).
    pub hidden_act: HiddenAct,
    /// Dropout after embeddings and each sub-layer (default 0.1).
    pub hidden_dropout_prob: f64,
    /// Dropout on attention probabilities (default 0.1).
    pub attention_probs_dropout_prob: f64,
    /// Dropout before the classifier; `None` means `hidden_dropout_prob`.
    pub classifier_dropout: Option<f64>,
    /// Longest sequence the position embedding covers (default 512).
    pub max_position_embeddings: usize,
    /// Number of token types (segments) (default 2).
    pub type_vocab_size: usize,
    /// Standard deviation of the normal init of new weights (default 0.02).
    pub initializer_range: f64,
    /// LayerNorm epsilon (default 1e-12).
    pub layer_norm_eps: f64,
    /// Id of the padding token (default 0).
    pub pad_token_id: u32,
    /// Only `"absolute"` is supported.
    pub position_embedding_type: String,
    /// Output index (as a string, JSON object keys) to label name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub id2label: BTreeMap<String, String>,
    /// Label name to output index.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub label2id: BTreeMap<String, usize>,
    /// `"multi_label_classification"` (one logit per label, BCE), `"regression"` (MSE) or
    /// `"single_label_classification"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem_type: Option<String>,
    /// Number of outputs of the classifier; see [`BertConfig::num_labels`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_labels: Option<usize>,
    /// ModernBERT's own keys (absent from other families' files).
    #[serde(flatten)]
    pub modernbert: ModernBertFields,
    /// DeBERTa-v2's own keys (absent from other families' files).
    #[serde(flatten)]
    pub deberta: DebertaFields,
    /// Every other key of config.json, kept as is.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Default for BertConfig {
    fn default() -> Self {
        BertConfig {
            architectures: Vec::new(),
            model_type: "bert".to_string(),
            vocab_size: 30522,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: HiddenAct::Gelu,
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
            classifier_dropout: None,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            initializer_range: 0.02,
            layer_norm_eps: 1e-12,
            pad_token_id: 0,
            position_embedding_type: "absolute".to_string(),
            id2label: BTreeMap::new(),
            label2id: BTreeMap::new(),
            problem_type: None,
            num_labels: None,
            modernbert: ModernBertFields::default(),
            deberta: DebertaFields::default(),
            extra: BTreeMap::new(),
        }
    }
}

impl BertConfig {
    /// The encoder family of `model_type` (BERT for a type [`BertConfig::validate`] refuses).
    pub fn family(&self) -> Family {
        match self.model_type.as_str() {
            "roberta" | "xlm-roberta" => Family::Roberta,
            "modernbert" => Family::ModernBert,
            "deberta-v2" => Family::Deberta,
            _ => Family::Bert,
        }
    }

    /// Dropout after the embeddings (`hidden_dropout_prob`; ModernBERT's `embedding_dropout`).
    pub fn embedding_dropout_prob(&self) -> f64 {
        match self.family() {
            Family::ModernBert => self.modernbert.embedding_dropout.unwrap_or(0.0),
            _ => self.hidden_dropout_prob,
        }
    }

    /// Dropout on attention probabilities (`attention_probs_dropout_prob`; ModernBERT's
    /// `attention_dropout`, which also applies to the attention output).
    pub fn attention_dropout_prob(&self) -> f64 {
        match self.family() {
            Family::ModernBert => self.modernbert.attention_dropout.unwrap_or(0.0),
            _ => self.attention_probs_dropout_prob,
        }
    }

    /// Dropout after each sub-layer (`hidden_dropout_prob`; ModernBERT's `mlp_dropout`, inside
    /// the feed-forward block).
    pub fn hidden_dropout(&self) -> f64 {
        match self.family() {
            Family::ModernBert => self.modernbert.mlp_dropout.unwrap_or(0.0),
            _ => self.hidden_dropout_prob,
        }
    }

    /// Sets every dropout probability of the encoder and the head to `p`, under the family's
    /// own keys.
    pub fn set_dropout(&mut self, p: f64) {
        match self.family() {
            Family::ModernBert => {
                let m = &mut self.modernbert;
                (m.embedding_dropout, m.attention_dropout, m.mlp_dropout) = (Some(p), Some(p), Some(p));
                self.classifier_dropout = Some(p);
            }
            Family::Deberta => {
                self.hidden_dropout_prob = p;
                self.attention_probs_dropout_prob = p;
                self.classifier_dropout = None;
                self.deberta.cls_dropout = None;
                self.deberta.pooler_dropout = Some(p);
            }
            _ => {
                self.hidden_dropout_prob = p;
                self.attention_probs_dropout_prob = p;
                self.classifier_dropout = None;
            }
        }
    }

    /// ModernBERT's LayerNorm epsilon (`norm_eps`, default 1e-5).
    pub fn norm_eps(&self) -> f64 {
        self.modernbert.norm_eps.unwrap_or(1e-5)
    }

    /// Whether ModernBERT layer `layer` attends globally: `layer_types` when present, else
    /// every `global_attn_every_n_layers`-th layer from layer 0 (default 3).
    pub fn is_global_layer(&self, layer: usize) -> bool {
        let m = &self.modernbert;
        match m.layer_types.as_ref().and_then(|t| t.get(layer)) {
            Some(t) => t == "full_attention",
            None => layer.is_multiple_of(m.global_attn_every_n_layers.unwrap_or(3).max(1)),
        }
    }

    /// ModernBERT's rotary base of global (`true`) or local layers: `rope_parameters` when it
    /// has one, else `global_rope_theta` (default 160000) / `local_rope_theta` (default 10000).
    pub fn rope_theta(&self, global: bool) -> f64 {
        let m = &self.modernbert;
        let key = if global { "full_attention" } else { "sliding_attention" };
        let from_params = m.rope_parameters.as_ref().and_then(|p| p.get(key)).and_then(|r| r.rope_theta);
        let own =
            if global { m.global_rope_theta.unwrap_or(160_000.0) } else { m.local_rope_theta.unwrap_or(10_000.0) };
        from_params.unwrap_or(own)
    }

    /// How far a token of a local ModernBERT layer sees: `local_attention / 2` tokens either
    /// side (default 64).
    pub fn local_half_window(&self) -> usize {
        self.modernbert.local_attention.unwrap_or(128) / 2
    }

    /// DeBERTa's relative terms: (content-to-position, position-to-content); none without
    /// `relative_attention`.
    pub fn deberta_terms(&self) -> (bool, bool) {
        if !self.deberta.relative_attention.unwrap_or(false) {
            return (false, false);
        }
        let t = self.deberta.pos_att_type.as_ref().map(PosAttType::entries).unwrap_or_default();
        (t.iter().any(|t| t == "c2p"), t.iter().any(|t| t == "p2c"))
    }

    /// DeBERTa's relative distance cap: `max_relative_positions`, else `max_position_embeddings`.
    pub fn deberta_max_relative(&self) -> usize {
        match self.deberta.max_relative_positions {
            Some(m) if m >= 1 => m as usize,
            _ => self.max_position_embeddings,
        }
    }

    /// DeBERTa's log-bucket count (0: none).
    pub fn deberta_buckets(&self) -> usize {
        self.deberta.position_buckets.filter(|b| *b > 0).unwrap_or(0) as usize
    }

    /// DeBERTa's attention span: the buckets when bucketed, else the distance cap; the relative
    /// embedding has `2 * span` rows.
    pub fn deberta_span(&self) -> usize {
        match self.deberta_buckets() {
            0 => self.deberta_max_relative(),
            b => b,
        }
    }

    /// Reads and validates a config.json. Keys a family's transformers config defaults
    /// differently from BERT's are filled with that family's defaults when absent (DeBERTa-v2:
    /// `type_vocab_size` 0, `layer_norm_eps` 1e-7; ModernBERT: `pad_token_id` 50283,
    /// `max_position_embeddings` 8192).
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        let json = |source| ModelError::Json { path: path.to_path_buf(), source };
        let mut value: serde_json::Value = serde_json::from_str(&text).map_err(json)?;
        if let Some(obj) = value.as_object_mut() {
            let defaults: &[(&str, serde_json::Value)] = match obj.get("model_type").and_then(|t| t.as_str()) {
                Some("deberta-v2") => &[("type_vocab_size", 0.into()), ("layer_norm_eps", 1e-7.into())],
                Some("modernbert") => &[("pad_token_id", 50283.into()), ("max_position_embeddings", 8192.into())],
                _ => &[],
            };
            for (k, v) in defaults {
                obj.entry(*k).or_insert_with(|| v.clone());
            }
        }
        let cfg: BertConfig = serde_json::from_value(value).map_err(json)?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Checks the values the model code relies on; `origin` names the file in errors.
    pub fn validate(&self, origin: &Path) -> Result<(), ModelError> {
        let bad = |msg: String| ModelError::Config { path: origin.to_path_buf(), msg };
        if !MODEL_TYPES.contains(&self.model_type.as_str()) {
            return Err(bad(format!(
                "model_type is '{}', supported: {}",
                self.model_type,
                MODEL_TYPES.map(|t| format!("'{t}'")).join(", ")
            )));
        }
        let family = self.family();
        if matches!(family, Family::Bert | Family::Roberta) && self.position_embedding_type != "absolute" {
            return Err(bad(format!(
                "position_embedding_type is '{}', only 'absolute' is supported",
                self.position_embedding_type
            )));
        }
        if self.hidden_size == 0
            || self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(bad(format!(
                "hidden_size ({}) must be a positive multiple of num_attention_heads ({})",
                self.hidden_size, self.num_attention_heads
            )));
        }
        let m = &self.modernbert;
        for (name, p) in [
            ("hidden_dropout_prob", self.hidden_dropout_prob),
            ("attention_probs_dropout_prob", self.attention_probs_dropout_prob),
            ("classifier_dropout", self.classifier_dropout.unwrap_or(0.0)),
            ("embedding_dropout", m.embedding_dropout.unwrap_or(0.0)),
            ("pooler_dropout", self.deberta.pooler_dropout.unwrap_or(0.0)),
            ("cls_dropout", self.deberta.cls_dropout.unwrap_or(0.0)),
            ("attention_dropout", m.attention_dropout.unwrap_or(0.0)),
            ("mlp_dropout", m.mlp_dropout.unwrap_or(0.0)),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(bad(format!("{name} is {p}, expected a probability in [0, 1)")));
            }
        }
        if self.num_labels() == 0 {
            return Err(bad("num_labels is 0".to_string()));
        }
        for (name, v) in [
            ("layer_norm_eps", self.layer_norm_eps),
            ("initializer_range", self.initializer_range),
            ("norm_eps", self.norm_eps()),
            ("global_rope_theta", m.global_rope_theta.unwrap_or(1.0)),
            ("local_rope_theta", m.local_rope_theta.unwrap_or(1.0)),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(bad(format!("{name} is {v}, expected a finite positive number")));
            }
        }
        // Sizes are checked before anything is allocated: an absurd one would otherwise ask
        // for petabytes.
        for (name, v, max) in [
            ("vocab_size", self.vocab_size, 1 << 22),
            ("hidden_size", self.hidden_size, 1 << 15),
            ("num_hidden_layers", self.num_hidden_layers, 1 << 10),
            ("intermediate_size", self.intermediate_size, 1 << 17),
            ("max_position_embeddings", self.max_position_embeddings, 1 << 17),
            ("type_vocab_size", self.type_vocab_size.max(usize::from(family == Family::Deberta)), 1 << 10),
            ("num_labels", self.num_labels(), 1 << 16),
            ("global_attn_every_n_layers", m.global_attn_every_n_layers.unwrap_or(1), 1 << 10),
            ("local_attention", m.local_attention.unwrap_or(2), 1 << 17),
        ] {
            if v == 0 || v > max {
                return Err(bad(format!("{name} is {v}, expected 1 to {max}")));
            }
        }
        if family == Family::Roberta && self.max_position_embeddings <= self.pad_token_id as usize + 1 {
            return Err(bad(format!(
                "max_position_embeddings is {}, but RoBERTa positions start at pad_token_id + 1 = {}",
                self.max_position_embeddings,
                self.pad_token_id as usize + 1
            )));
        }
        if family == Family::Deberta {
            let d = &self.deberta;
            for (name, v, want) in [
                ("conv_kernel_size", d.conv_kernel_size.unwrap_or(0), 0),
                ("embedding_size", d.embedding_size.unwrap_or(self.hidden_size), self.hidden_size),
                ("pooler_hidden_size", d.pooler_hidden_size.unwrap_or(self.hidden_size), self.hidden_size),
                ("attention_head_size", d.attention_head_size.unwrap_or(self.head_size()), self.head_size()),
            ] {
                if v != want {
                    return Err(bad(format!("{name} is {v}; only {want} is supported")));
                }
            }
            if let Some(t) = d.pos_att_type.as_ref().map(PosAttType::entries)
                && let Some(bad_t) = t.iter().find(|t| *t != "c2p" && *t != "p2c")
            {
                return Err(bad(format!("pos_att_type has '{bad_t}', expected 'c2p' and/or 'p2c'")));
            }
            if self.deberta_span() > 1 << 17 {
                return Err(bad(format!("the relative span {} is more than {}", self.deberta_span(), 1 << 17)));
            }
        }
        if family == Family::ModernBert {
            if !self.head_size().is_multiple_of(2) {
                return Err(bad(format!(
                    "hidden_size / num_attention_heads is {}, rotary positions need an even head size",
                    self.head_size()
                )));
            }
            if let Some(p) = m.classifier_pooling.as_deref()
                && p != "cls"
                && p != "mean"
            {
                return Err(bad(format!("classifier_pooling is '{p}', expected 'cls' or 'mean'")));
            }
            if let Some(types) = &m.layer_types {
                if types.len() != self.num_hidden_layers {
                    return Err(bad(format!(
                        "layer_types has {} entries, num_hidden_layers is {}",
                        types.len(),
                        self.num_hidden_layers
                    )));
                }
                if let Some((i, t)) =
                    types.iter().enumerate().find(|(_, t)| *t != "full_attention" && *t != "sliding_attention")
                {
                    return Err(bad(format!(
                        "layer_types[{i}] is '{t}', expected 'full_attention' or 'sliding_attention'"
                    )));
                }
            }
            for (key, r) in m.rope_parameters.iter().flatten() {
                if let Some(t) = r.rope_type.as_deref().filter(|t| *t != "default") {
                    return Err(bad(format!("rope_parameters.{key}.rope_type is '{t}', only 'default' is supported")));
                }
                if let Some(v) = r.rope_theta.filter(|v| !(v.is_finite() && *v > 0.0)) {
                    return Err(bad(format!(
                        "rope_parameters.{key}.rope_theta is {v}, expected a finite positive number"
                    )));
                }
            }
        }
        let params = self.parameter_count();
        if params > MAX_PARAMETERS {
            return Err(bad(format!(
                "the sizes give {params} parameters, more than the {MAX_PARAMETERS} this program loads"
            )));
        }
        Ok(())
    }

    /// The number of weights of the encoder and its head, counted without allocating.
    pub fn parameter_count(&self) -> u128 {
        let h = self.hidden_size as u128;
        if self.family() == Family::ModernBert {
            let i = self.intermediate_size as u128;
            let m = &self.modernbert;
            let nb = |on: Option<bool>, n: u128| if on.unwrap_or(false) { n } else { 0 };
            let norm = h + nb(m.norm_bias, h);
            let layer = 2 * norm + 4 * h * h + nb(m.attention_bias, 4 * h) + 3 * h * i + nb(m.mlp_bias, 2 * i + h);
            let head = h * h + nb(m.classifier_bias, h) + norm + (h + 1) * self.num_labels() as u128;
            return self.vocab_size as u128 * h + norm + self.num_hidden_layers as u128 * layer + norm + head;
        }
        if self.family() == Family::Deberta {
            let i = self.intermediate_size as u128;
            let d = &self.deberta;
            let positions =
                if d.position_biased_input.unwrap_or(true) { self.max_position_embeddings as u128 } else { 0 };
            let embeddings = (self.vocab_size as u128 + positions + self.type_vocab_size as u128) * h + 2 * h;
            let (c2p, p2c) = self.deberta_terms();
            let own = if d.share_att_key.unwrap_or(false) { 0 } else { u128::from(c2p) + u128::from(p2c) };
            let layer = (4 + own) * (h * h + h) + 2 * h + (h * i + i) + (i * h + h) + 2 * h;
            let relative =
                if self.deberta_terms() == (false, false) { 0 } else { 2 * self.deberta_span() as u128 * h + 2 * h };
            let head = (h * h + h) + (h + 1) * self.num_labels() as u128;
            return embeddings + self.num_hidden_layers as u128 * layer + relative + head;
        }
        let embeddings = (self.vocab_size + self.max_position_embeddings + self.type_vocab_size) as u128 * h + 2 * h;
        let i = self.intermediate_size as u128;
        let layer = 4 * (h * h + h) + 2 * h + (h * i + i) + (i * h + h) + 2 * h;
        let head = (h * h + h) + (h + 1) * self.num_labels() as u128;
        embeddings + self.num_hidden_layers as u128 * layer + head
    }

    /// Number of classifier outputs: the size of `id2label` when set, else `num_labels`, else 2
    /// (transformers' default).
    pub fn num_labels(&self) -> usize {
        if !self.id2label.is_empty() { self.id2label.len() } else { self.num_labels.unwrap_or(2) }
    }

    /// Dropout probability before the classifier (`classifier_dropout`, else
    /// `hidden_dropout_prob`; ModernBERT's default is 0; DeBERTa reads `cls_dropout`).
    pub fn classifier_dropout_prob(&self) -> f64 {
        match self.family() {
            Family::ModernBert => self.classifier_dropout.unwrap_or(0.0),
            // transformers reads `cls_dropout` here, not `classifier_dropout`.
            Family::Deberta => self.deberta.cls_dropout.unwrap_or(self.hidden_dropout_prob),
            _ => self.classifier_dropout.unwrap_or(self.hidden_dropout_prob),
        }
    }

    /// The longest sequence the position embedding covers: `max_position_embeddings`, less
    /// `pad_token_id + 1` for RoBERTa (whose positions start there).
    pub fn max_sequence_length(&self) -> usize {
        match self.family() {
            Family::Roberta => self.max_position_embeddings.saturating_sub(self.pad_token_id as usize + 1),
            _ => self.max_position_embeddings,
        }
    }

    /// Width of one attention head.
    pub fn head_size(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Turns a base config into a sequence classifier's: `architectures`, `id2label`,
    /// `label2id`, `num_labels` and `problem_type` set for the given label names.
    pub fn set_classifier(&mut self, labels: &[&str], problem_type: &str) {
        self.architectures = vec![self.family().classifier_architecture(&self.model_type).to_string()];
        self.id2label = labels.iter().enumerate().map(|(i, l)| (i.to_string(), l.to_string())).collect();
        self.label2id = labels.iter().enumerate().map(|(i, l)| (l.to_string(), i)).collect();
        self.num_labels = Some(labels.len());
        self.problem_type = Some(problem_type.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minilm_config_parses_and_round_trips_unknown_keys() {
        let text = r#"{"_name_or_path": "nreimers/MiniLM-L6-H384-uncased",
          "architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1,
          "gradient_checkpointing": false, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
          "hidden_size": 384, "initializer_range": 0.02, "intermediate_size": 1536,
          "layer_norm_eps": 1e-12, "max_position_embeddings": 512, "model_type": "bert",
          "num_attention_heads": 12, "num_hidden_layers": 6, "pad_token_id": 0,
          "position_embedding_type": "absolute", "transformers_version": "4.8.2",
          "type_vocab_size": 2, "use_cache": true, "vocab_size": 30522}"#;
        let mut cfg: BertConfig = serde_json::from_str(text).unwrap();
        cfg.validate(Path::new("config.json")).unwrap();
        assert_eq!(cfg.hidden_size, 384);
        assert_eq!(cfg.head_size(), 32);
        assert_eq!(cfg.num_labels(), 2);
        cfg.set_classifier(&["good"], "multi_label_classification");
        let out = serde_json::to_value(&cfg).unwrap();
        assert_eq!(out["transformers_version"], "4.8.2");
        assert_eq!(out["architectures"][0], "BertForSequenceClassification");
        assert_eq!(out["id2label"]["0"], "good");
        assert_eq!(out["label2id"]["good"], 0);
        assert_eq!(out["num_labels"], 1);
        let back: BertConfig = serde_json::from_value(out).unwrap();
        assert_eq!(back, cfg);
    }

    #[test]
    fn validate_names_the_bad_field() {
        let cfg = BertConfig { hidden_size: 30, num_attention_heads: 4, ..Default::default() };
        let err = cfg.validate(Path::new("x/config.json")).unwrap_err().to_string();
        assert!(err.contains("x/config.json") && err.contains("num_attention_heads"), "{err}");
    }
}
