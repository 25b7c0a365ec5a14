//! Parity of every encoder family (BERT, RoBERTa, XLM-RoBERTa, ModernBERT, DeBERTa-v2/v3) with
//! transformers: the small random sequence classifiers of tests/fixtures/encoders/ (written by tests/python/make_encoder_fixtures.py with transformers
//! 5.23.0 and torch 2.15.0) tokenize to transformers' ids and give its logits within 1e-4, on
//! the inference path, the training path, and from a base checkpoint in the encoder-only layout
//! (and within 5% of the largest logit with int8 linear layers); and each family trains: every parameter gets a gradient and one step lowers the loss.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use evalloop_model::config::Family;
use evalloop_model::weights::{InferenceModel, TrainableModel, init_weights, load_checkpoint};
use evalloop_model::{Batch, BertConfig, DropoutRng, PairTokenizer, SequenceClassifier};

/// What the generator wrote next to each model.
#[derive(serde::Deserialize)]
struct Expected {
    pairs: Vec<(String, String)>,
    input_ids: Vec<Vec<u32>>,
    logits: Vec<Vec<f64>>,
}

fn fixture(family: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/encoders").join(family)
}

fn read(dir: &Path) -> (BertConfig, Expected, PairTokenizer, Batch) {
    let cfg = BertConfig::from_file(&dir.join("config.json")).unwrap();
    let expected: Expected = serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    let tok = PairTokenizer::from_file(&dir.join("tokenizer.json"), cfg.max_sequence_length()).unwrap();
    assert_eq!(tok.pad_id(), cfg.pad_token_id, "{}: pad id", dir.display());
    let enc = tok.encode_pairs(&expected.pairs).unwrap();
    let ids: Vec<Vec<u32>> = enc.iter().map(|e| e.ids.clone()).collect();
    assert_eq!(ids, expected.input_ids, "{}: token ids differ from transformers'", dir.display());
    let batch = tok.collate(&enc.iter().collect::<Vec<_>>(), &Device::Cpu).unwrap();
    (cfg, expected, tok, batch)
}

fn max_diff(ours: &Tensor, theirs: &[Vec<f64>]) -> f64 {
    let ours = ours.to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap();
    assert_eq!(ours.len(), theirs.len());
    ours.iter().flatten().zip(theirs.iter().flatten()).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max)
}

fn logits(m: &SequenceClassifier, b: &Batch, train: bool) -> Tensor {
    m.forward_t(&b.input_ids, &b.token_type_ids, &b.attention_mask, train).unwrap()
}

fn check_parity(family: &str, want: Family) {
    let dir = fixture(family);
    let (cfg, expected, _tok, batch) = read(&dir);
    assert_eq!(cfg.family(), want);
    // Inference: the checkpoint memory-mapped as it is.
    let inf = InferenceModel::load(&dir, &Device::Cpu).unwrap();
    let d = max_diff(&logits(&inf.model, &batch, false), &expected.logits);
    assert!(d < 1e-4, "{family}: inference logits differ from transformers' by {d:e}");
    // int8 linear layers (`--precision int8`): close to the f32 logits, relative to their size
    // (2-3% on these 32-wide random models).
    let d8 = max_diff(&evalloop_model::ops::int8(true, || logits(&inf.model, &batch, false)), &expected.logits);
    let size = expected.logits.iter().flatten().fold(0f64, |m, v| m.max(v.abs()));
    eprintln!("{family}: int8 logits within {d8:e} of transformers' (largest logit {size:e})");
    assert!(d8 > 0.0 && d8 < 0.05 * size, "{family}: int8 logits differ by {d8:e} (largest logit {size:e})");
    // Training: canonical names, trainable variables, the fused kernels with backward passes.
    let ckpt = load_checkpoint(&dir.join("model.safetensors"), cfg.family()).unwrap();
    let (weights, report) = init_weights(&cfg, Some(ckpt), &dir, 1).unwrap();
    assert!(report.initialized.is_empty() && report.unused.is_empty(), "{family}: {report:?}");
    let tm = TrainableModel::new(&cfg, weights, |_| true, 1, &Device::Cpu).unwrap();
    let d = max_diff(&logits(&tm.model, &batch, false), &expected.logits);
    assert!(d < 1e-4, "{family}: training-path logits differ from transformers' by {d:e}");
}

#[test]
fn bert_matches_transformers() {
    check_parity("bert", Family::Bert);
}

#[test]
fn roberta_matches_transformers() {
    check_parity("roberta", Family::Roberta);
}

#[test]
fn xlm_roberta_matches_transformers() {
    check_parity("xlm-roberta", Family::Roberta);
}

#[test]
fn modernbert_matches_transformers() {
    check_parity("modernbert", Family::ModernBert);
}

#[test]
fn deberta_v3_matches_transformers() {
    check_parity("deberta-v3", Family::Deberta);
}

#[test]
fn deberta_v2_matches_transformers() {
    check_parity("deberta-v2", Family::Deberta);
}

/// A base checkpoint as a bare encoder is stored (`RobertaModel` / `ModernBertModel`: no
/// prefix, no head) loads its encoder under the family's prefix and gets a seeded head.
#[test]
fn encoder_only_checkpoints_load_with_a_seeded_head() {
    for (family, prefix, head) in [
        (
            "roberta",
            "roberta.",
            &[
                "classifier.dense.bias",
                "classifier.dense.weight",
                "classifier.out_proj.bias",
                "classifier.out_proj.weight",
            ][..],
        ),
        (
            "modernbert",
            "model.",
            &["classifier.bias", "classifier.weight", "head.dense.weight", "head.norm.weight"][..],
        ),
    ] {
        let dir = fixture(family);
        let cfg = BertConfig::from_file(&dir.join("config.json")).unwrap();
        let full = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
        let bare: HashMap<String, Tensor> =
            full.iter().filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v.clone()))).collect();
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("model.safetensors");
        candle_core::safetensors::save(&bare, &path).unwrap();
        let ckpt = load_checkpoint(&path, cfg.family()).unwrap();
        let (weights, report) = init_weights(&cfg, Some(ckpt), &path, 3).unwrap();
        let mut initialized = report.initialized.clone();
        initialized.sort();
        assert_eq!(initialized, head, "{family}");
        for (k, v) in &full {
            if k.starts_with(prefix) {
                let same = (v - &weights[k]).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                assert_eq!(same, 0.0, "{family}: {k}");
            }
        }
        // A missing encoder tensor is an error naming it.
        let mut broken = load_checkpoint(&path, cfg.family()).unwrap();
        let victim =
            format!("{prefix}embeddings.{}", if family == "roberta" { "LayerNorm.weight" } else { "norm.weight" });
        broken.remove(&victim);
        let err = init_weights(&cfg, Some(broken), &path, 3).unwrap_err().to_string();
        assert!(err.contains(&victim), "{err}");
    }
}

/// Every parameter gets a finite, nonzero gradient, and one plain gradient step on a squared
/// loss lowers it (dropout off, so both losses are of the same function).
fn check_one_step_lowers_the_loss(family: &str) {
    let dir = fixture(family);
    let (cfg, _expected, _tok, batch) = read(&dir);
    let ckpt = load_checkpoint(&dir.join("model.safetensors"), cfg.family()).unwrap();
    let (weights, _) = init_weights(&cfg, Some(ckpt), &dir, 1).unwrap();
    let tm = TrainableModel::new(&cfg, weights, |_| true, 1, &Device::Cpu).unwrap();
    let target =
        Tensor::new(&[[1f32, -1., 0.5], [-0.5, 0.5, 1.], [0., 1., -1.], [1., 1., -0.5]], &Device::Cpu).unwrap();
    let loss_of = |tm: &TrainableModel| -> Tensor {
        (logits(&tm.model, &batch, false) - &target).unwrap().sqr().unwrap().mean_all().unwrap()
    };
    let before = loss_of(&tm);
    let grads = before.backward().unwrap();
    let lr = 0.002;
    for p in tm.params() {
        let g = grads.get(p.var.as_tensor()).unwrap_or_else(|| panic!("{family}: no gradient for {}", p.name));
        let norm = g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(norm.is_finite() && norm > 0.0, "{family}: {} has gradient norm {norm}", p.name);
        p.var.set(&(p.var.as_tensor() - (g * lr).unwrap()).unwrap()).unwrap();
    }
    let (before, after) = (before.to_scalar::<f32>().unwrap(), loss_of(&tm).to_scalar::<f32>().unwrap());
    assert!(after < before, "{family}: loss {before} -> {after}");
}

#[test]
fn roberta_trains() {
    check_one_step_lowers_the_loss("roberta");
}

#[test]
fn xlm_roberta_trains() {
    check_one_step_lowers_the_loss("xlm-roberta");
}

#[test]
fn modernbert_trains() {
    check_one_step_lowers_the_loss("modernbert");
}

#[test]
fn deberta_trains() {
    check_one_step_lowers_the_loss("deberta-v3");
    check_one_step_lowers_the_loss("deberta-v2");
}

/// ModernBERT's backward pass (rotary positions, GeGLU, the sliding-window mask, mean pooling,
/// norms without bias) against central differences of the loss in f64.
#[test]
fn modernbert_gradient_matches_finite_differences() {
    check_finite_differences("modernbert", |token| {
        vec![
            ("model.embeddings.tok_embeddings.weight", token * 32 + 3),
            ("model.embeddings.norm.weight", 5),
            ("model.layers.0.attn.Wqkv.weight", 17),
            ("model.layers.1.attn.Wqkv.weight", 32 * 40 + 9),
            ("model.layers.1.attn_norm.weight", 2),
            ("model.layers.2.mlp.Wi.weight", 50 * 32 + 1),
            ("model.layers.2.mlp.Wo.weight", 100),
            ("head.dense.weight", 33),
            ("classifier.bias", 1),
        ]
    });
}

/// DeBERTa's backward pass (the gathered relative terms, the normalised relative embedding,
/// the shared and the own position projections) against central differences in f64.
#[test]
fn deberta_gradient_matches_finite_differences() {
    check_finite_differences("deberta-v3", |token| {
        vec![
            ("deberta.embeddings.word_embeddings.weight", token * 32 + 3),
            ("deberta.encoder.rel_embeddings.weight", 3 * 32 + 7),
            ("deberta.encoder.LayerNorm.weight", 4),
            ("deberta.encoder.layer.0.attention.self.key_proj.weight", 70),
            ("deberta.encoder.layer.1.attention.self.query_proj.bias", 9),
            ("pooler.dense.weight", 12),
        ]
    });
    check_finite_differences("deberta-v2", |_| {
        vec![
            ("deberta.encoder.layer.0.attention.self.pos_key_proj.weight", 40),
            ("deberta.encoder.layer.1.attention.self.pos_query_proj.weight", 300),
            ("deberta.embeddings.position_embeddings.weight", 2 * 32 + 5),
            ("deberta.embeddings.token_type_embeddings.weight", 32 + 1),
        ]
    });
}

/// Central differences of a squared loss of `family`'s fixture against backprop at the
/// entries `checks(token)` names (`token`: an id the batch holds, for embedding rows).
fn check_finite_differences(family: &str, checks: impl Fn(usize) -> Vec<(&'static str, usize)>) {
    let dir = fixture(family);
    let (cfg, expected, _tok, batch) = read(&dir);
    let token = expected.input_ids[0][1] as usize;
    let checks = checks(token);
    let base: HashMap<String, Tensor> = load_checkpoint(&dir.join("model.safetensors"), cfg.family())
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.to_dtype(DType::F64).unwrap()))
        .collect();
    let target =
        Tensor::new(&[[1f64, -1., 0.5], [-0.5, 0.5, 1.], [0., 1., -1.], [1., 1., -0.5]], &Device::Cpu).unwrap();
    let loss_of = |w: &HashMap<String, Tensor>| -> Tensor {
        let vb = VarBuilder::from_tensors(w.clone(), DType::F64, &Device::Cpu);
        let m = SequenceClassifier::load(vb, &cfg, &DropoutRng::new(0)).unwrap();
        (logits(&m, &batch, false) - &target).unwrap().sqr().unwrap().mean_all().unwrap()
    };
    let mut vars = base.clone();
    let mut handles = BTreeMap::new();
    for &(name, _) in &checks {
        let v = Var::from_tensor(&base[name]).unwrap();
        vars.insert(name.to_string(), v.as_tensor().clone());
        handles.insert(name, v);
    }
    let grads = loss_of(&vars).backward().unwrap();
    for (name, idx) in checks {
        let g = grads.get(handles[name].as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let shifted = |delta: f64| -> f64 {
            let t = &base[name];
            let mut flat = t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            flat[idx] += delta;
            let mut w = base.clone();
            w.insert(name.to_string(), Tensor::from_vec(flat, t.shape(), &Device::Cpu).unwrap());
            loss_of(&w).to_scalar::<f64>().unwrap()
        };
        let h = 1e-5;
        let numeric = (shifted(h) - shifted(-h)) / (2.0 * h);
        let analytic = g[idx];
        let err = (analytic - numeric).abs() / (1e-8 + analytic.abs().max(numeric.abs()));
        assert!(err < 1e-4, "{family} {name}[{idx}]: analytic {analytic} numeric {numeric}");
        assert!(analytic.abs() > 1e-8, "{family} {name}[{idx}] gradient is zero");
    }
}

/// A config.json whose model_type this crate does not build is refused, naming the field and
/// the types it does build.
#[test]
fn unknown_model_type_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("config.json");
    std::fs::write(&path, r#"{"model_type": "deberta", "hidden_size": 32, "num_attention_heads": 4}"#).unwrap();
    let err = BertConfig::from_file(&path).unwrap_err().to_string();
    assert!(err.contains("config.json") && err.contains("model_type") && err.contains("'deberta'"), "{err}");
    assert!(err.contains("'modernbert'") && err.contains("'xlm-roberta'") && err.contains("'deberta-v2'"), "{err}");
}

/// DeBERTa-v2 configs: the older `"c2p|p2c"` string, transformers' defaults for absent keys,
/// and the options this crate does not build refused by name.
#[test]
fn deberta_config_reads_old_forms_and_refuses_what_it_does_not_build() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("config.json");
    let base = r#""model_type": "deberta-v2", "hidden_size": 32, "num_attention_heads": 4, "relative_attention": true"#;
    std::fs::write(&path, format!(r#"{{{base}, "pos_att_type": "p2c|c2p"}}"#)).unwrap();
    let cfg = BertConfig::from_file(&path).unwrap();
    assert_eq!(cfg.family(), Family::Deberta);
    assert_eq!(cfg.deberta_terms(), (true, true));
    assert_eq!((cfg.type_vocab_size, cfg.layer_norm_eps), (0, 1e-7));
    assert_eq!(cfg.deberta_span(), 512);
    for (extra, field) in [
        (r#""conv_kernel_size": 3"#, "conv_kernel_size"),
        (r#""pos_att_type": ["c2p", "p2p"]"#, "pos_att_type"),
        (r#""embedding_size": 16"#, "embedding_size"),
    ] {
        std::fs::write(&path, format!("{{{base}, {extra}}}")).unwrap();
        let err = BertConfig::from_file(&path).unwrap_err().to_string();
        assert!(err.contains(field) && err.contains("config.json"), "{err}");
    }
}
