//! Test helpers: a made-up WordPiece vocabulary with its tokenizer.json, and a tiny random BERT.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::Tensor;

use super::config::BertConfig;
use super::weights::init_weights;

pub const PAD: u32 = 0;
pub const CLS: u32 = 2;

/// The made-up vocabulary: special tokens then a few words.
pub const VOCAB: &[&str] = &[
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "answer", "the", "a", "is", "helpful", "wrong",
    "correct", "yes", "no", "ok", "great", "terrible", "question", "what", "why", "how", "fine", "poor", "##s", "##ly",
    ".", ",", "?",
];

/// Writes a BERT-style tokenizer.json (BertNormalizer, BertPreTokenizer, WordPiece, the
/// `[CLS] A [SEP] B [SEP]` template) over [`VOCAB`] into `dir`; returns its path.
pub fn write_tokenizer(dir: &Path) -> PathBuf {
    let vocab: serde_json::Map<String, serde_json::Value> =
        VOCAB.iter().enumerate().map(|(i, t)| (t.to_string(), i.into())).collect();
    let added: Vec<serde_json::Value> = VOCAB[..5]
        .iter()
        .enumerate()
        .map(|(i, t)| {
            serde_json::json!({"id": i, "content": t, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let special = |t: &str, type_id: u32| serde_json::json!({"SpecialToken": {"id": t, "type_id": type_id}});
    let seq = |t: &str, type_id: u32| serde_json::json!({"Sequence": {"id": t, "type_id": type_id}});
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
            "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "TemplateProcessing",
            "single": [special("[CLS]", 0), seq("A", 0), special("[SEP]", 0)],
            "pair": [special("[CLS]", 0), seq("A", 0), special("[SEP]", 0), seq("B", 1), special("[SEP]", 1)],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [CLS], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
            "max_input_chars_per_word": 100, "vocab": vocab}
    });
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    path
}

/// A tiny BERT: 2 layers, hidden 32, 4 heads, the made-up vocabulary, one output.
pub fn tiny_config() -> BertConfig {
    let mut cfg = BertConfig {
        vocab_size: VOCAB.len(),
        hidden_size: 32,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 64,
        max_position_embeddings: 64,
        initializer_range: 0.2,
        ..Default::default()
    };
    cfg.set_classifier(&["good"], "multi_label_classification");
    cfg
}

/// Random weights for `cfg` (canonical names), seeded.
pub fn random_weights(cfg: &BertConfig, seed: u64) -> BTreeMap<String, Tensor> {
    init_weights(cfg, None, Path::new("random"), seed).unwrap().0
}

/// Writes a base-model directory (config.json, tokenizer.json, model.safetensors) for a tiny
/// random BERT; `with_prefix` false writes encoder names without `bert.` and no classifier,
/// like the sentence-transformers checkpoint.
pub fn write_tiny_base(dir: &Path, seed: u64, with_prefix: bool) -> BTreeMap<String, Tensor> {
    std::fs::create_dir_all(dir).unwrap();
    let mut cfg = tiny_config();
    cfg.architectures = vec!["BertModel".to_string()];
    cfg.id2label.clear();
    cfg.label2id.clear();
    cfg.problem_type = None;
    cfg.num_labels = None;
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    write_tokenizer(dir);
    let weights = random_weights(&tiny_config(), seed);
    let stored: std::collections::HashMap<String, Tensor> = weights
        .iter()
        .filter(|(k, _)| with_prefix || !k.starts_with("classifier."))
        .map(|(k, v)| {
            let name = if with_prefix { k.clone() } else { k.trim_start_matches("bert.").to_string() };
            (name, v.clone())
        })
        .collect();
    candle_core::safetensors::save(&stored, dir.join("model.safetensors")).unwrap();
    weights
}
