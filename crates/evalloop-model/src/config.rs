//! The Hugging Face `config.json` of a BERT model, as a serde struct.

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

/// The most weights a model may have (4 billion, 16 GB in f32).
pub const MAX_PARAMETERS: u128 = 4_000_000_000;

/// A BERT config as transformers writes it, plus the sequence-classification fields
/// (`architectures`, `id2label`, `label2id`, `problem_type`, `num_labels`). Keys this struct does
/// not know are kept in `extra` and written back unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BertConfig {
    /// e.g. `["BertForSequenceClassification"]`; empty in many base models.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub architectures: Vec<String>,
    /// Always `"bert"` here.
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
            extra: BTreeMap::new(),
        }
    }
}

impl BertConfig {
    /// Reads and validates a config.json.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        let cfg: BertConfig =
            serde_json::from_str(&text).map_err(|source| ModelError::Json { path: path.to_path_buf(), source })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Checks the values the model code relies on; `origin` names the file in errors.
    pub fn validate(&self, origin: &Path) -> Result<(), ModelError> {
        let bad = |msg: String| ModelError::Config { path: origin.to_path_buf(), msg };
        if self.model_type != "bert" {
            return Err(bad(format!("model_type is '{}', only 'bert' is supported", self.model_type)));
        }
        if self.position_embedding_type != "absolute" {
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
        for (name, p) in [
            ("hidden_dropout_prob", self.hidden_dropout_prob),
            ("attention_probs_dropout_prob", self.attention_probs_dropout_prob),
            ("classifier_dropout", self.classifier_dropout.unwrap_or(0.0)),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(bad(format!("{name} is {p}, expected a probability in [0, 1)")));
            }
        }
        if self.num_labels() == 0 {
            return Err(bad("num_labels is 0".to_string()));
        }
        for (name, v) in [("layer_norm_eps", self.layer_norm_eps), ("initializer_range", self.initializer_range)] {
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
            ("type_vocab_size", self.type_vocab_size, 1 << 10),
            ("num_labels", self.num_labels(), 1 << 16),
        ] {
            if v == 0 || v > max {
                return Err(bad(format!("{name} is {v}, expected 1 to {max}")));
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

    /// Dropout probability before the classifier.
    pub fn classifier_dropout_prob(&self) -> f64 {
        self.classifier_dropout.unwrap_or(self.hidden_dropout_prob)
    }

    /// Width of one attention head.
    pub fn head_size(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Turns a base config into a sequence classifier's: `architectures`, `id2label`,
    /// `label2id`, `num_labels` and `problem_type` set for the given label names.
    pub fn set_classifier(&mut self, labels: &[&str], problem_type: &str) {
        self.architectures = vec!["BertForSequenceClassification".to_string()];
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
