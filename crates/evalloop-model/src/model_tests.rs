//! Tests of the whole model with a tiny random BERT built in the test.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::testutil::{self, random_weights, tiny_config, write_tiny_base};
use super::weights::{InferenceModel, TrainableModel, init_weights, load_checkpoint, safetensors_bytes};
use super::{BertForSequenceClassification, DropoutRng, PairTokenizer};

fn pairs() -> Vec<(String, String)> {
    [("what is the answer?", "the answer is good"), ("why", "bad, wrong and terrible answer"), ("how is it", "ok")]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn batch(dir: &std::path::Path) -> super::Batch {
    let tok = PairTokenizer::from_file(&testutil::write_tokenizer(dir), 32).unwrap();
    let enc = tok.encode_pairs(&pairs()).unwrap();
    tok.collate(&enc.iter().collect::<Vec<_>>(), &Device::Cpu).unwrap()
}

#[test]
fn every_trainable_variable_gets_a_nonzero_gradient() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config();
    let tm = TrainableModel::new(&cfg, random_weights(&cfg, 1), |_| true, 2, &Device::Cpu).unwrap();
    assert_eq!(tm.params().len(), super::weights::param_specs(&cfg).len());
    let b = batch(dir.path());
    let logits = tm.model.forward_t(&b.input_ids, &b.token_type_ids, &b.attention_mask, true).unwrap();
    assert_eq!(logits.dims(), &[3, 1]);
    let loss = logits.sqr().unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    for p in tm.params() {
        let g = grads.get(p.var.as_tensor()).unwrap_or_else(|| panic!("no gradient for {}", p.name));
        let s = g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(s > 0.0 && s.is_finite(), "{}: gradient sum {s}", p.name);
    }
}

#[test]
fn frozen_parameters_are_plain_tensors() {
    let cfg = tiny_config();
    let tm =
        TrainableModel::new(&cfg, random_weights(&cfg, 1), |n| !n.starts_with("bert.embeddings."), 2, &Device::Cpu)
            .unwrap();
    assert!(tm.params().iter().all(|p| !p.name.starts_with("bert.embeddings.")));
    assert_eq!(tm.tensors().len(), super::weights::param_specs(&cfg).len());
}

#[test]
fn save_load_round_trip_gives_identical_logits_with_and_without_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config();
    let b = batch(dir.path());
    let tm = TrainableModel::new(&cfg, random_weights(&cfg, 5), |_| true, 2, &Device::Cpu).unwrap();
    let ours = tm.model.forward_t(&b.input_ids, &b.token_type_ids, &b.attention_mask, false).unwrap();
    let ours = ours.to_vec2::<f32>().unwrap();

    // Our own output layout: bert.* + classifier.*, mmaped back as plain tensors.
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("config.json"), serde_json::to_string(&cfg).unwrap()).unwrap();
    std::fs::write(out.join("model.safetensors"), safetensors_bytes(&tm.tensors(), None).unwrap()).unwrap();
    let inf = InferenceModel::load(&out, &Device::Cpu).unwrap();
    let back = inf.model.forward_t(&b.input_ids, &b.token_type_ids, &b.attention_mask, false).unwrap();
    let back = back.to_vec2::<f32>().unwrap();
    // The same tensors in memory give bitwise the same logits as the file read back.
    let mem = InferenceModel::from_tensors(&cfg, tm.tensors(), &Device::Cpu).unwrap();
    let mem = mem.model.forward_t(&b.input_ids, &b.token_type_ids, &b.attention_mask, false).unwrap();
    assert_eq!(mem.to_vec2::<f32>().unwrap(), back);
    // Inference uses candle's fused LayerNorm/softmax, training the composed ops: equal up to
    // float rounding.
    for (x, y) in back.iter().flatten().zip(ours.iter().flatten()) {
        assert!((x - y).abs() < 1e-5, "{x} vs {y}");
    }

    // A checkpoint without the `bert.` prefix and a classifier stored separately loads the same.
    let flat: HashMap<String, Tensor> =
        tm.tensors().into_iter().map(|(k, v)| (k.trim_start_matches("bert.").to_string(), v)).collect();
    let vb = VarBuilder::from_tensors(flat, DType::F32, &Device::Cpu);
    let m = BertForSequenceClassification::load(vb, &cfg, &DropoutRng::new(0)).unwrap();
    let flat_logits = m.forward_t(&b.input_ids, &b.token_type_ids, &b.attention_mask, false).unwrap();
    assert_eq!(flat_logits.to_vec2::<f32>().unwrap(), back);
}

#[test]
fn base_checkpoint_without_prefix_gets_a_seeded_head() {
    let dir = tempfile::tempdir().unwrap();
    let written = write_tiny_base(dir.path(), 9, false);
    let ckpt = load_checkpoint(&dir.path().join("model.safetensors"), crate::config::Family::Bert).unwrap();
    assert!(ckpt.keys().all(|k| k.starts_with("bert.")));
    let cfg = tiny_config();
    let (w1, report) = init_weights(&cfg, Some(ckpt.clone()), dir.path(), 3).unwrap();
    assert_eq!(report.initialized, vec!["classifier.weight", "classifier.bias"]);
    assert!(report.unused.is_empty());
    let (w2, _) = init_weights(&cfg, Some(ckpt), dir.path(), 3).unwrap();
    let same = |a: &Tensor, b: &Tensor| a.to_vec2::<f32>().unwrap() == b.to_vec2::<f32>().unwrap();
    assert!(same(&w1["classifier.weight"], &w2["classifier.weight"]));
    assert!(same(&w1["bert.pooler.dense.weight"], &written["bert.pooler.dense.weight"]));
    // A missing encoder tensor is an error naming it.
    let mut broken = load_checkpoint(&dir.path().join("model.safetensors"), crate::config::Family::Bert).unwrap();
    broken.remove("bert.encoder.layer.1.output.dense.weight");
    let err = init_weights(&cfg, Some(broken), dir.path(), 3).unwrap_err().to_string();
    assert!(err.contains("bert.encoder.layer.1.output.dense.weight"), "{err}");
}

/// Central differences of the loss of the whole model in f64 against backprop, for a few
/// entries of encoder, LayerNorm, embedding and head parameters.
#[test]
fn model_gradient_matches_finite_differences() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config();
    let b = batch(dir.path());
    let base: HashMap<String, Tensor> =
        random_weights(&cfg, 11).into_iter().map(|(k, v)| (k, v.to_dtype(DType::F64).unwrap())).collect();
    let labels = Tensor::new(&[1f64, 0., 1.], &Device::Cpu).unwrap();
    let wts = Tensor::new(&[1f64, 2., 0.5], &Device::Cpu).unwrap();
    let loss_of = |w: &HashMap<String, Tensor>| -> Tensor {
        let vb = VarBuilder::from_tensors(w.clone(), DType::F64, &Device::Cpu);
        let m = BertForSequenceClassification::load(vb, &cfg, &DropoutRng::new(0)).unwrap();
        let z = m.forward_t(&b.input_ids, &b.token_type_ids, &b.attention_mask, false).unwrap();
        let z = z.flatten_all().unwrap();
        crate::train::weighted_loss(&z, &labels, &wts, crate::train::LabelKind::Binary, 3.5).unwrap()
    };
    let checks = [
        ("bert.encoder.layer.0.attention.self.query.weight", 7usize),
        ("bert.encoder.layer.1.output.LayerNorm.weight", 3),
        ("bert.embeddings.LayerNorm.bias", 5),
        ("bert.embeddings.word_embeddings.weight", 5 * 32 + 1),
        ("bert.pooler.dense.weight", 40),
        ("classifier.bias", 0),
    ];
    let mut vars = base.clone();
    let mut var_handles = HashMap::new();
    for (name, _) in checks {
        let v = candle_core::Var::from_tensor(&base[name]).unwrap();
        vars.insert(name.to_string(), v.as_tensor().clone());
        var_handles.insert(name, v);
    }
    let grads = loss_of(&vars).backward().unwrap();
    for (name, idx) in checks {
        let g = grads.get(var_handles[name].as_tensor()).unwrap().flatten_all().unwrap();
        let analytic = g.to_vec1::<f64>().unwrap()[idx];
        let h = 1e-5;
        let shifted = |delta: f64| -> f64 {
            let t = &base[name];
            let mut flat = t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            flat[idx] += delta;
            let mut w = base.clone();
            w.insert(name.to_string(), Tensor::from_vec(flat, t.shape(), &Device::Cpu).unwrap());
            loss_of(&w).to_scalar::<f64>().unwrap()
        };
        let numeric = (shifted(h) - shifted(-h)) / (2.0 * h);
        let err = (analytic - numeric).abs() / (1e-8 + analytic.abs().max(numeric.abs()));
        assert!(err < 1e-4, "{name}[{idx}]: analytic {analytic} numeric {numeric}");
        assert!(analytic.abs() > 1e-8, "{name}[{idx}] gradient is zero");
    }
}

/// The real MiniLM (scripts/fetch-model.sh) loads and gives finite logits.
#[test]
fn real_minilm_loads_and_gives_finite_logits() {
    let Some(dir) = std::env::var_os("EVALLOOP_TEST_MODEL_DIR") else {
        eprintln!("skipped: set EVALLOOP_TEST_MODEL_DIR to a MiniLM directory (scripts/fetch-model.sh)");
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let mut cfg = super::BertConfig::from_file(&dir.join("config.json")).unwrap();
    cfg.set_classifier(&["good"], "multi_label_classification");
    let ckpt = load_checkpoint(&dir.join("model.safetensors"), crate::config::Family::Bert).unwrap();
    let (w, report) = init_weights(&cfg, Some(ckpt), &dir, 7).unwrap();
    assert_eq!(report.initialized, vec!["classifier.weight", "classifier.bias"]);
    let inf = InferenceModel::from_tensors(&cfg, w, &Device::Cpu).unwrap();
    let tok = PairTokenizer::from_file(&dir.join("tokenizer.json"), 128).unwrap();
    let enc = tok.encode_pairs(&pairs()).unwrap();
    assert_eq!(enc[0].ids[0], 101);
    let b = tok.collate(&enc.iter().collect::<Vec<_>>(), &Device::Cpu).unwrap();
    let z = inf.model.forward_t(&b.input_ids, &b.token_type_ids, &b.attention_mask, false).unwrap();
    let z = z.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(z.len(), 3);
    assert!(z.iter().all(|v| v.is_finite()), "{z:?}");
}
