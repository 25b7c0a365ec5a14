//! Training tests with a tiny random BERT and synthetic pairs.

use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::model::testutil::{random_weights, tiny_config, write_tiny_base};

const GOOD: &[&str] = &["good", "correct", "helpful", "great", "fine"];
const BAD: &[&str] = &["bad", "wrong", "terrible", "poor", "no"];
const FILLER: &[&str] = &["the", "a", "answer", "is", "ok", "question", "yes"];

/// Writes train/validation/test JSONL of separable pairs (the output says a good or a bad
/// word) and a dataset card.
fn write_dataset(dir: &Path, n_train: usize, n_val: usize, kind: &str, seed: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut split = |name: &str, n: usize| {
        let mut lines = String::new();
        for i in 0..n {
            let good = rng.random_bool(0.5);
            let mut words: Vec<&str> =
                (0..rng.random_range(2..6)).map(|_| FILLER[rng.random_range(0..FILLER.len())]).collect();
            let key = if good { GOOD } else { BAD };
            words.insert(rng.random_range(0..=words.len()), key[rng.random_range(0..key.len())]);
            let label = if kind == "binary" {
                if good { 1.0 } else { 0.0 }
            } else if good {
                0.8
            } else {
                0.2
            };
            let prompt = format!("what is the answer {}", FILLER[i % FILLER.len()]);
            lines.push_str(
                &serde_json::json!({
                    "request_id": format!("{name}-{i}"), "prompt": prompt,
                    "output": words.join(" "), "label": label, "weight": 1.0 + (i % 3) as f64,
                    "cohort": null, "group": "g", "is_disagreement": false,
                })
                .to_string(),
            );
            lines.push('\n');
        }
        std::fs::write(dir.join(format!("{name}.jsonl")), lines).unwrap();
    };
    split("train", n_train);
    split("validation", n_val);
    split("test", n_val);
    std::fs::write(dir.join("dataset_card.json"), serde_json::json!({"config": {"label": kind}}).to_string()).unwrap();
}

fn tiny_cfg(base: &Path) -> TrainConfig {
    TrainConfig {
        base_model: base.to_string_lossy().to_string(),
        epochs: 2,
        batch_size: 8,
        max_length: 32,
        learning_rate: 2e-3,
        log_every: 1,
        patience: 0,
        ..Default::default()
    }
}

/// Central differences of the weighted loss against backprop, in f64, both label kinds, with
/// a zero weight among the examples.
#[test]
fn weighted_loss_gradient_matches_finite_differences() {
    let dev = Device::Cpu;
    let z0 = [2.5f64, -1.0, 0.3, -40.0, 35.0];
    let labels = Tensor::new(&[1f64, 0., 1., 0., 1.], &dev).unwrap();
    let graded = Tensor::new(&[0.9f64, 0.1, 0.5, 0.0, 1.0], &dev).unwrap();
    let w = Tensor::new(&[1f64, 2., 0., 0.5, 1.5], &dev).unwrap();
    for (kind, y) in [(LabelKind::Binary, &labels), (LabelKind::Graded, &graded)] {
        let z = Var::new(&z0, &dev).unwrap();
        let loss = weighted_loss(z.as_tensor(), y, &w, kind, 5.0).unwrap();
        let g = loss.backward().unwrap().get(z.as_tensor()).unwrap().to_vec1::<f64>().unwrap();
        for i in 0..z0.len() {
            let at = |d: f64| {
                let mut zz = z0;
                zz[i] += d;
                let t = Tensor::new(&zz, &dev).unwrap();
                weighted_loss(&t, y, &w, kind, 5.0).unwrap().to_scalar::<f64>().unwrap()
            };
            let h = 1e-6;
            let numeric = (at(h) - at(-h)) / (2.0 * h);
            assert!((g[i] - numeric).abs() < 1e-7, "{kind:?} z[{i}]: {} vs {numeric}", g[i]);
        }
        assert_eq!(g[2], 0.0, "weight-0 example has a gradient");
    }
    // The loss value itself: BCE of z = 2.5, y = 1 is ln(1 + e^-2.5).
    let one = weighted_loss(
        &Tensor::new(&[2.5f64], &dev).unwrap(),
        &Tensor::new(&[1f64], &dev).unwrap(),
        &Tensor::new(&[1f64], &dev).unwrap(),
        LabelKind::Binary,
        1.0,
    )
    .unwrap()
    .to_scalar::<f64>()
    .unwrap();
    assert!((one - (1.0 + (-2.5f64).exp()).ln()).abs() < 1e-12);
}

/// Adding an example of weight 0 to a batch leaves every parameter gradient unchanged.
#[test]
fn weight_zero_example_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config();
    let tok = crate::model::PairTokenizer::from_file(&crate::model::testutil::write_tokenizer(dir.path()), 32).unwrap();
    let tm = TrainableModel::new(&cfg, random_weights(&cfg, 4), |_| true, 1, &Device::Cpu).unwrap();
    let grads_for = |pairs: &[(&str, &str)], labels: &[f32], w: &[f32]| {
        let enc = tok.encode_pairs(pairs).unwrap();
        let b = tok.collate(&enc.iter().collect::<Vec<_>>(), &Device::Cpu).unwrap();
        let z = tm.model.forward_t(&b.input_ids, &b.token_type_ids, &b.attention_mask, false).unwrap();
        let z = z.flatten_all().unwrap();
        let y = Tensor::new(labels, &Device::Cpu).unwrap();
        let w = Tensor::new(w, &Device::Cpu).unwrap();
        let loss = weighted_loss(&z, &y, &w, LabelKind::Binary, 3.0).unwrap();
        let g = loss.backward().unwrap();
        tm.params()
            .iter()
            .map(|p| g.get(p.var.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap())
            .collect::<Vec<_>>()
    };
    let base = grads_for(&[("what", "good answer"), ("why", "bad")], &[1.0, 0.0], &[1.0, 2.0]);
    let with_zero = grads_for(
        &[("what", "good answer"), ("why", "bad"), ("how is the question", "a terrible wrong answer")],
        &[1.0, 0.0, 1.0],
        &[1.0, 2.0, 0.0],
    );
    for (a, b) in base.iter().zip(&with_zero) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-6 + 1e-4 * x.abs(), "{x} vs {y}");
        }
    }
}

fn first_and_last_train_loss(out: &Path) -> (f64, f64) {
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let losses: Vec<f64> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "train")
        .map(|v| v["loss"].as_f64().unwrap())
        .collect();
    let k = 3.min(losses.len());
    let head = losses[..k].iter().sum::<f64>() / k as f64;
    let tail = losses[losses.len() - k..].iter().sum::<f64>() / k as f64;
    (head, tail)
}

#[test]
fn loss_falls_on_a_separable_toy_set_and_output_is_a_hf_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    write_tiny_base(&base, 3, false);
    let data = tmp.path().join("data");
    write_dataset(&data, 96, 32, "binary", 1);
    let out = tmp.path().join("out");
    let cfg = TrainConfig { epochs: 12, dropout: Some(0.0), learning_rate: 3e-3, ..tiny_cfg(&base) };
    let summary = train(&data, &cfg, &out, false).unwrap();
    assert_eq!(summary.steps, 12 * 12);
    let (head, tail) = first_and_last_train_loss(&out);
    assert!(tail < 0.5 * head, "loss {head} -> {tail}");
    let val = summary.validation.clone().unwrap();
    eprintln!("toy run: train loss {head:.4} -> {tail:.4}, validation {val:?}, test {:?}", summary.test);
    assert!(val.auc.unwrap() > 0.9, "{val:?}");
    let test = summary.test.clone().unwrap();
    assert!(test.auc.unwrap() > 0.9, "{test:?}");

    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "training_config.json",
        "metrics.json",
        "metrics.jsonl",
    ] {
        assert!(out.join(f).is_file(), "missing {f}");
    }
    assert!(!out.join("train_state").exists());
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "BertForSequenceClassification");
    assert_eq!(config["problem_type"], "multi_label_classification");
    assert_eq!(config["id2label"]["0"], "good");
    assert_eq!(config["num_labels"], 1);
    let names = crate::model::weights::load_checkpoint(&out.join("model.safetensors")).unwrap();
    assert!(names.contains_key("bert.encoder.layer.1.output.dense.weight"));
    assert!(names.contains_key("classifier.bias"));
    let raw = candle_core::safetensors::load(out.join("model.safetensors"), &Device::Cpu).unwrap();
    assert!(raw.keys().all(|k| k.starts_with("bert.") || k.starts_with("classifier.")));
}

#[test]
fn graded_labels_train_with_mse() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    write_tiny_base(&base, 3, true);
    let data = tmp.path().join("data");
    write_dataset(&data, 48, 16, "graded", 2);
    let out = tmp.path().join("out");
    let cfg = TrainConfig { epochs: 4, grad_accum: 2, freeze_layers: 1, ..tiny_cfg(&base) };
    let summary = train(&data, &cfg, &out, false).unwrap();
    assert_eq!(summary.label, LabelKind::Graded);
    assert_eq!(summary.steps, 4 * 3);
    let val = summary.validation.unwrap();
    assert!(val.auc.is_none() && val.spearman.is_some());
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["problem_type"], "regression");
    // The frozen layer is the base's, unchanged.
    let trained = crate::model::weights::load_checkpoint(&out.join("model.safetensors")).unwrap();
    let basew = crate::model::weights::load_checkpoint(&base.join("model.safetensors")).unwrap();
    let k = "bert.encoder.layer.0.attention.self.query.weight";
    assert_eq!(trained[k].to_vec2::<f32>().unwrap(), basew[k].to_vec2::<f32>().unwrap());
    let k = "bert.encoder.layer.1.attention.self.query.weight";
    assert_ne!(trained[k].to_vec2::<f32>().unwrap(), basew[k].to_vec2::<f32>().unwrap());
}

fn without_rates(metrics_jsonl: &str) -> Vec<serde_json::Value> {
    metrics_jsonl
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            if let Some(o) = v.as_object_mut() {
                o.remove("examples_per_sec");
            }
            v
        })
        .collect()
}

/// A run stopped after a checkpoint (and one step past it, as a kill -9 would leave it) and
/// resumed ends with the same weights, metrics.json and metrics.jsonl as an uninterrupted one.
#[test]
fn resume_equals_uninterrupted() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    write_tiny_base(&base, 3, false);
    let data = tmp.path().join("data");
    write_dataset(&data, 40, 16, "binary", 5);
    // 40 examples, batch 8, accum 2: 3 steps an epoch, 9 steps in all; dropout on.
    let cfg = TrainConfig { epochs: 3, grad_accum: 2, checkpoint_every: 2, dropout: Some(0.1), ..tiny_cfg(&base) };
    let full = tmp.path().join("full");
    let a = train(&data, &cfg, &full, false).unwrap();
    assert_eq!(a.steps, 9);

    let cut = tmp.path().join("cut");
    // Checkpoints at steps 2, 3 (epoch end), 4; "killed" after step 5.
    assert!(run(&data, &cfg, &cut, false, &Device::Cpu, Some(5)).unwrap().is_none());
    assert!(cut.join("train_state/checkpoint.safetensors").is_file());
    assert!(!cut.join("model.safetensors").exists());
    let b = train(&data, &cfg, &cut, true).unwrap();

    assert_eq!(a.history, b.history);
    assert_eq!(a.validation, b.validation);
    assert_eq!(
        std::fs::read(full.join("model.safetensors")).unwrap(),
        std::fs::read(cut.join("model.safetensors")).unwrap()
    );
    let ma: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(full.join("metrics.json")).unwrap()).unwrap();
    let mut mb: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cut.join("metrics.json")).unwrap()).unwrap();
    mb["out_dir"] = ma["out_dir"].clone();
    assert_eq!(ma, mb);
    assert_eq!(
        without_rates(&std::fs::read_to_string(full.join("metrics.jsonl")).unwrap()),
        without_rates(&std::fs::read_to_string(cut.join("metrics.jsonl")).unwrap())
    );
}

#[test]
fn resume_refuses_a_checkpoint_from_another_config() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    write_tiny_base(&base, 3, false);
    let data = tmp.path().join("data");
    write_dataset(&data, 16, 8, "binary", 5);
    let cfg = TrainConfig { checkpoint_every: 1, ..tiny_cfg(&base) };
    let out = tmp.path().join("out");
    assert!(run(&data, &cfg, &out, false, &Device::Cpu, Some(1)).unwrap().is_none());
    let other = TrainConfig { learning_rate: 1e-4, ..cfg };
    let err = train(&data, &other, &out, true).unwrap_err().to_string();
    assert!(err.contains("another config"), "{err}");
}

#[test]
fn lr_schedule_warms_up_then_decays_to_zero() {
    assert_eq!(lr_at(0, 1.0, 4, 10), 0.25);
    assert_eq!(lr_at(3, 1.0, 4, 10), 1.0);
    assert_eq!(lr_at(4, 1.0, 4, 10), 1.0);
    assert!((lr_at(7, 1.0, 4, 10) - 0.5).abs() < 1e-12);
    assert_eq!(lr_at(10, 1.0, 4, 10), 0.0);
    assert_eq!(lr_at(0, 1.0, 0, 10), 1.0);
}

/// A short fine-tuning of the real MiniLM on synthetic pairs.
#[test]
fn real_minilm_fine_tunes_a_few_steps() {
    let Some(dir) = std::env::var_os("EVALLOOP_TEST_MODEL_DIR") else {
        eprintln!("skipped: set EVALLOOP_TEST_MODEL_DIR to a MiniLM directory (scripts/fetch-model.sh)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 16, 8, "binary", 1);
    let out = tmp.path().join("out");
    let cfg = TrainConfig {
        base_model: Path::new(&dir).to_string_lossy().to_string(),
        epochs: 1,
        batch_size: 8,
        max_length: 64,
        ..Default::default()
    };
    let s = train(&data, &cfg, &out, false).unwrap();
    assert_eq!(s.steps, 2);
    assert!(s.validation.unwrap().loss.is_finite());
    let _ = DType::F32;
}
