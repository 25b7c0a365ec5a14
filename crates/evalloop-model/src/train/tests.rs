//! Training tests with a tiny random BERT and synthetic pairs.

use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::TrainableModel;
use crate::testutil::{random_weights, tiny_config, write_tiny_base};

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
    write_card(dir, if kind == "binary" { LabelKind::Binary } else { LabelKind::Graded });
}

/// Groups of four outputs for one prompt each, with 0 to 3 good words among bad ones and the
/// share of good words as the graded label; one group per prompt, so ranking within a group
/// is what there is to learn.
fn write_ranking_dataset(dir: &Path, groups: [usize; 3], seed: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for (name, n_groups) in ["train", "validation", "test"].into_iter().zip(groups) {
        let mut lines = String::new();
        for g in 0..n_groups {
            let prompt = format!("{} question {}", FILLER[g % FILLER.len()], FILLER[(g / 7) % FILLER.len()]);
            for k in 0..4 {
                let mut words: Vec<&str> = (0..3)
                    .map(|j| {
                        if j < k { GOOD[rng.random_range(0..GOOD.len())] } else { BAD[rng.random_range(0..BAD.len())] }
                    })
                    .collect();
                words.push(FILLER[rng.random_range(0..FILLER.len())]);
                for j in (1..words.len()).rev() {
                    words.swap(j, rng.random_range(0..=j));
                }
                lines.push_str(
                    &serde_json::json!({
                        "request_id": format!("{name}-{g}-{k}"), "prompt": prompt,
                        "output": words.join(" "), "label": k as f64 / 4.0 + 0.1, "weight": 1.0,
                        "cohort": null, "group": format!("{name}-{g}"), "is_disagreement": false,
                    })
                    .to_string(),
                );
                lines.push('\n');
            }
        }
        std::fs::write(dir.join(format!("{name}.jsonl")), lines).unwrap();
    }
    write_card(dir, LabelKind::Graded);
}

/// The pairwise objective raises the held-out within-group ranking of a random model, with
/// group-aware batches (groups of 4, batch 8: two whole groups a batch).
#[test]
fn pairwise_training_raises_group_level_spearman() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    write_tiny_base(&base, 3, true);
    let data = tmp.path().join("data");
    write_ranking_dataset(&data, [24, 12, 12], 4);
    let cfg = TrainConfig {
        epochs: 8,
        dropout: Some(0.0),
        objective: Some(Objective::Pairwise),
        eval_metric: EvalMetric::GroupSpearman,
        ..tiny_cfg(&base)
    };
    let before =
        train(&data, &TrainConfig { learning_rate: 1e-12, epochs: 1, ..cfg.clone() }, &tmp.path().join("b"), false)
            .unwrap();
    let after = train(&data, &cfg, &tmp.path().join("a"), false).unwrap();
    let g0 = before.test.unwrap().group_spearman.unwrap();
    let t = after.test.clone().unwrap();
    let g1 = t.group_spearman.unwrap();
    eprintln!("pairwise toy: test group spearman {g0:.3} -> {g1:.3}, {t:?}");
    assert_eq!(t.groups_used, 12);
    assert!(g1 > 0.6 && g1 > g0 + 0.3, "{g0} -> {g1}");
    // Every step saw whole groups: 24 groups of 4 in batches of 8 = 12 steps an epoch.
    assert_eq!(after.steps, 8 * 12);
    let (head, tail) = first_and_last_train_loss(&tmp.path().join("a"));
    assert!(tail < head, "pairwise loss {head} -> {tail}");

    // graded+pairwise trains too, and layer-wise decay with it.
    let mixed =
        TrainConfig { objective: Some(Objective::GradedPairwise), layer_lr_decay: 0.8, pairwise_weight: 0.5, ..cfg };
    let m = train(&data, &mixed, &tmp.path().join("m"), false).unwrap();
    assert!(m.test.unwrap().group_spearman.unwrap() > g0, "graded+pairwise did not learn");
}

/// output_first is written into training_config.json and the scorer tokenizes the same way:
/// its scores equal the training run's own test predictions.
#[test]
fn output_first_truncation_is_used_by_the_scorer() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    write_tiny_base(&base, 3, true);
    let data = tmp.path().join("data");
    write_dataset(&data, 16, 8, "graded", 3);
    // Long prompts, so the two truncations differ.
    for split in ["train", "validation", "test"] {
        let p = data.join(format!("{split}.jsonl"));
        let text: String = std::fs::read_to_string(&p)
            .unwrap()
            .lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["prompt"] = serde_json::json!("what is the question ".repeat(8));
                format!("{v}\n")
            })
            .collect();
        std::fs::write(&p, text).unwrap();
    }
    let out = tmp.path().join("out");
    let cfg = TrainConfig { epochs: 1, max_length: 12, truncation: Truncation::OutputFirst, ..tiny_cfg(&base) };
    let s = train(&data, &cfg, &out, false).unwrap();
    let tc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("training_config.json")).unwrap()).unwrap();
    assert_eq!(tc["truncation"], "output_first");
    assert_eq!(tc["train"]["truncation"], "output_first");

    let test = data::read_split(&data.join("test.jsonl"), LabelKind::Graded, false).unwrap();
    let pairs: Vec<(String, String)> = test.iter().map(|e| (e.prompt.clone(), e.output.clone())).collect();
    let scorer = crate::score::Scorer::load(&out, &Device::Cpu).unwrap();
    let scores = scorer.score_pairs(&pairs).unwrap();
    let wmse: f64 = scores.iter().zip(&test).map(|(s, e)| e.weight * (s - e.label).powi(2)).sum::<f64>()
        / test.iter().map(|e| e.weight).sum::<f64>();
    let t = s.test.unwrap();
    assert!((wmse - t.loss).abs() < 1e-5, "scorer {wmse} vs training's test loss {}", t.loss);

    // The same model scored with longest-first truncation gives other scores.
    let tok = crate::PairTokenizer::from_file(&out.join("tokenizer.json"), 12).unwrap();
    let enc_lf = tok.encode_pairs(&pairs).unwrap();
    let tok_of = tok.clone().with_truncation(Truncation::OutputFirst).unwrap();
    let enc_of = tok_of.encode_pairs(&pairs).unwrap();
    assert_ne!(enc_lf, enc_of);
}

/// `seeds = [..]` trains one member per seed, and the directory scores as their mean.
#[test]
fn seeds_train_an_ensemble_that_scores_the_members_mean() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    write_tiny_base(&base, 3, true);
    let data = tmp.path().join("data");
    write_ranking_dataset(&data, [6, 3, 3], 5);
    let out = tmp.path().join("ens");
    let cfg = TrainConfig { epochs: 1, seeds: vec![11, 12], ..tiny_cfg(&base) };
    let s = train(&data, &cfg, &out, false).unwrap();
    assert_eq!(s.members.len(), 2);
    assert!(out.join("member-11/model.safetensors").is_file() && out.join("member-12/model.safetensors").is_file());
    let ens: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("ensemble.json")).unwrap()).unwrap();
    assert_eq!(ens["members"], serde_json::json!(["member-11", "member-12"]));
    let pairs = [("what question", "good bad"), ("why", "terrible answer")];
    let load = |p: &Path| crate::score::Scorer::load(p, &Device::Cpu).unwrap().score_pairs(&pairs).unwrap();
    let (a, b, e) = (load(&out.join("member-11")), load(&out.join("member-12")), load(&out));
    for i in 0..pairs.len() {
        assert!((e[i] - (a[i] + b[i]) / 2.0).abs() < 1e-6);
    }
    assert!(s.test.unwrap().group_spearman.is_some());
    // Resuming keeps finished members.
    let mtime = || std::fs::metadata(out.join("member-11/model.safetensors")).unwrap().modified().unwrap();
    let before = mtime();
    let again = train(&data, &cfg, &out, true).unwrap();
    assert_eq!(again.members.iter().map(|m| m.steps).collect::<Vec<_>>(), vec![s.members[0].steps; 2]);
    assert_eq!(mtime(), before);
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

/// Central differences of the pairwise loss against backprop, in f64, with a zero-weight pair
/// and pairs far apart in score (where a naive softplus overflows).
#[test]
fn pairwise_loss_gradient_matches_finite_differences() {
    let dev = Device::Cpu;
    let s0 = [0.3f64, -1.2, 2.0, 45.0, -40.0];
    let better = Tensor::new(&[0u32, 2, 1, 3, 4], &dev).unwrap();
    let worse = Tensor::new(&[1u32, 0, 4, 4, 3], &dev).unwrap();
    let pw = Tensor::new(&[1.0f64, 2.0, 0.0, 0.5, 1.5], &dev).unwrap();
    let s = Var::new(&s0, &dev).unwrap();
    let loss = pairwise_loss(s.as_tensor(), &better, &worse, &pw, 4.0).unwrap();
    let g = loss.backward().unwrap().get(s.as_tensor()).unwrap().to_vec1::<f64>().unwrap();
    let at = |ss: &[f64]| {
        pairwise_loss(&Tensor::new(ss, &dev).unwrap(), &better, &worse, &pw, 4.0).unwrap().to_scalar::<f64>().unwrap()
    };
    for i in 0..s0.len() {
        let h = 1e-6;
        let (mut up, mut down) = (s0, s0);
        up[i] += h;
        down[i] -= h;
        let numeric = (at(&up) - at(&down)) / (2.0 * h);
        assert!((g[i] - numeric).abs() < 1e-7, "s[{i}]: {} vs {numeric}", g[i]);
    }
    // The value: sum_p w_p ln(1 + exp(-(s_b - s_w))) / 4, computed directly.
    let sp = |d: f64| (-d).max(0.0) + (-d.abs()).exp().ln_1p();
    let want = (sp(0.3 + 1.2) + 2.0 * sp(2.0 - 0.3) + 0.5 * sp(85.0) + 1.5 * sp(-85.0)) / 4.0;
    assert!((loss.to_scalar::<f64>().unwrap() - want).abs() < 1e-12);
}

#[test]
fn batch_pairs_use_groups_label_gaps_and_weight_products() {
    let ex = |g: Option<&str>, label: f64, weight: f64| Example {
        request_id: String::new(),
        prompt: String::new(),
        output: String::new(),
        label,
        weight,
        group: g.map(str::to_string),
        labels: Vec::new(),
        evaluator: None,
    };
    let examples = vec![
        ex(Some("a"), 0.2, 1.0),
        ex(Some("a"), 0.9, 2.0),
        ex(Some("a"), 0.25, 3.0), // 0.05 from example 0: below pair_min_diff
        ex(Some("b"), 1.0, 1.0),  // another group
        ex(None, 0.0, 1.0),       // no group
        ex(Some("a"), 0.5, 0.0),  // weight 0
    ];
    let pairs = loss::batch_pairs(&examples, &[0, 1, 2, 3, 4, 5], 0.1, PairScope::Group);
    assert_eq!(pairs, vec![(1, 0, 2.0), (1, 2, 6.0)]);
    // Batch scope: every two rows with a label gap, whatever their groups (1.0 - 0.9 is just
    // under 0.1 in f64, so rows 1 and 3 make no pair).
    let pairs = loss::batch_pairs(&examples, &[0, 1, 2, 3, 4, 5], 0.1, PairScope::Batch);
    assert_eq!(
        pairs,
        vec![(1, 0, 2.0), (3, 0, 1.0), (0, 4, 1.0), (1, 2, 6.0), (1, 4, 2.0), (3, 2, 3.0), (2, 4, 3.0), (3, 4, 1.0)]
    );
}

/// Adding an example of weight 0 to a batch leaves every parameter gradient unchanged.
#[test]
fn weight_zero_example_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config();
    let tok = crate::PairTokenizer::from_file(&crate::testutil::write_tokenizer(dir.path()), 32).unwrap();
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
    let names = crate::weights::load_checkpoint(&out.join("model.safetensors"), crate::config::Family::Bert).unwrap();
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
    let cfg = TrainConfig {
        epochs: 4,
        grad_accum: 2,
        freeze_layers: 1,
        eval_metric: EvalMetric::GroupSpearman,
        ..tiny_cfg(&base)
    };
    let summary = train(&data, &cfg, &out, false).unwrap();
    assert_eq!(summary.label, LabelKind::Graded);
    assert_eq!(summary.steps, 4 * 3);
    let val = summary.validation.unwrap();
    assert!(val.auc.is_none() && val.spearman.is_some());
    // Every row is in group "g": the group-level figure is the one group's Spearman.
    assert_eq!(val.groups_used, 1);
    assert!((val.group_spearman.unwrap() - val.spearman.unwrap()).abs() < 1e-9, "{val:?}");
    let evals: Vec<serde_json::Value> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "eval")
        .collect();
    assert!(evals.iter().all(|v| v["group_spearman"].is_f64() && v["groups_used"] == 1), "{evals:?}");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["problem_type"], "regression");
    // The frozen layer is the base's, unchanged.
    let trained = crate::weights::load_checkpoint(&out.join("model.safetensors"), crate::config::Family::Bert).unwrap();
    let basew = crate::weights::load_checkpoint(&base.join("model.safetensors"), crate::config::Family::Bert).unwrap();
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

/// Adds multi-task labels to a dataset written by [`write_dataset`] / [`write_ranking_dataset`]:
/// `same` = the primary label, `opposite` = 1 - label (null on every third row), `never` =
/// always null; the card lists the three.
fn add_dimension_labels(dir: &Path) {
    for split in ["train", "validation", "test"] {
        let path = dir.join(format!("{split}.jsonl"));
        let mut out = String::new();
        for (i, line) in std::fs::read_to_string(&path).unwrap().lines().enumerate() {
            let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
            let y = v["label"].as_f64().unwrap();
            let opposite = if i % 3 == 2 { serde_json::Value::Null } else { serde_json::json!(1.0 - y) };
            v["labels"] = serde_json::json!({"same": y, "opposite": opposite, "never": null});
            out.push_str(&v.to_string());
            out.push('\n');
        }
        std::fs::write(&path, out).unwrap();
    }
    let card_path = dir.join("dataset_card.json");
    let mut card: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&card_path).unwrap()).unwrap();
    card["config"]["dimensions"] = serde_json::json!(["same", "opposite", "never"]);
    std::fs::write(card_path, card.to_string()).unwrap();
}

/// The dimension term by hand on a tiny batch: 3 rows, 2 dimensions, one label missing, in f64.
/// coef_k = 1 / (K * sum_i m_ik w_i): dimension 0 has rows 0, 1, 2 (weights 1, 2, 0.5: 3.5),
/// dimension 1 rows 0 and 2 (1.5).
#[test]
fn dimension_loss_matches_a_hand_computation() {
    let dev = Device::Cpu;
    let z = Tensor::new(&[[0.5f64, 0.1], [0.2, 0.9], [0.7, 0.4]], &dev).unwrap();
    let y = Tensor::new(&[[1.0f64, 0.0], [0.0, 0.0], [0.5, 1.0]], &dev).unwrap();
    let mw = Tensor::new(&[[1.0f64, 1.0], [2.0, 0.0], [0.5, 0.5]], &dev).unwrap();
    let coef = dimension_coefficients(&[3.5, 1.5]);
    assert_eq!(coef, vec![1.0 / 7.0, 1.0 / 3.0]);
    let loss = dimension_loss(&z, &y, &mw, &Tensor::new(coef.as_slice(), &dev).unwrap()).unwrap();
    let d0 = (1.0 * 0.25 + 2.0 * 0.04 + 0.5 * 0.04) / 3.5;
    let d1 = (1.0 * 0.01 + 0.5 * 0.36) / 1.5;
    assert!((loss.to_scalar::<f64>().unwrap() - (d0 + d1) / 2.0).abs() < 1e-12);
    // A dimension with no label in the batch: coefficient 0, and it adds nothing.
    assert_eq!(dimension_coefficients(&[3.5, 0.0]), vec![1.0 / 7.0, 0.0]);
    let mw0 = Tensor::new(&[[1.0f64, 0.0], [2.0, 0.0], [0.5, 0.0]], &dev).unwrap();
    let c0 = Tensor::new(dimension_coefficients(&[3.5, 0.0]).as_slice(), &dev).unwrap();
    let only0 = dimension_loss(&z, &y, &mw0, &c0).unwrap().to_scalar::<f64>().unwrap();
    assert!((only0 - d0 / 2.0).abs() < 1e-12);
}

/// With K = 2 every trainable tensor gets a gradient from primary + dimension loss, each
/// classifier row included; a dimension whose labels are all null adds exactly nothing (its
/// classifier row gets a zero gradient and the loss equals the loss without it).
#[test]
fn every_variable_gets_a_gradient_with_two_dimensions() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tiny_config();
    cfg.set_classifier(&["good", "same", "never"], "multi_label_classification");
    let tok = crate::PairTokenizer::from_file(&crate::testutil::write_tokenizer(dir.path()), 32).unwrap();
    let tm = TrainableModel::new(&cfg, random_weights(&cfg, 4), |_| true, 1, &Device::Cpu).unwrap();
    let pairs = [("what", "good answer"), ("why", "bad"), ("how is the question", "a terrible wrong answer")];
    let enc = tok.encode_pairs(&pairs).unwrap();
    let b = tok.collate(&enc.iter().collect::<Vec<_>>(), &Device::Cpu).unwrap();
    let out = tm.model.forward_t(&b.input_ids, &b.token_type_ids, &b.attention_mask, false).unwrap();
    assert_eq!(out.dims(), &[3, 3]);
    let dev = Device::Cpu;
    let primary = weighted_loss(
        &out.narrow(1, 0, 1).unwrap().flatten_all().unwrap(),
        &Tensor::new(&[1f32, 0., 1.], &dev).unwrap(),
        &Tensor::new(&[1f32, 2., 1.], &dev).unwrap(),
        LabelKind::Binary,
        4.0,
    )
    .unwrap();
    let dims = out.narrow(1, 1, 2).unwrap();
    // Dimension "same" labelled on rows 0 and 2, "never" on none.
    let y = Tensor::new(&[[0.9f32, 0.0], [0.0, 0.0], [0.3, 0.0]], &dev).unwrap();
    let mw = Tensor::new(&[[1f32, 0.0], [0.0, 0.0], [1.0, 0.0]], &dev).unwrap();
    let coef: Vec<f32> = dimension_coefficients(&[2.0, 0.0]).into_iter().map(|c| c as f32).collect();
    let dim_loss = dimension_loss(&dims, &y, &mw, &Tensor::new(coef.as_slice(), &dev).unwrap()).unwrap();
    // By hand: ((z0 - 0.9)^2 + (z2 - 0.3)^2) / 2, halved for the mean over K = 2 dimensions.
    let z = dims.to_vec2::<f32>().unwrap();
    let want = (((z[0][0] - 0.9).powi(2) + (z[2][0] - 0.3).powi(2)) / 2.0) / 2.0;
    assert!((dim_loss.to_scalar::<f32>().unwrap() - want).abs() < 1e-6);
    let loss = (primary + dim_loss).unwrap();
    let g = loss.backward().unwrap();
    for p in tm.params() {
        let gp = g.get(p.var.as_tensor()).unwrap_or_else(|| panic!("{} has no gradient", p.name));
        let max = gp.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(max > 0.0, "{} has a zero gradient", p.name);
    }
    let cls = tm.params().iter().find(|p| p.name == "classifier.weight").unwrap();
    let rows = g.get(cls.var.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
    assert!(rows[0].iter().any(|v| *v != 0.0) && rows[1].iter().any(|v| *v != 0.0), "rows 0, 1");
    assert!(rows[2].iter().all(|v| *v == 0.0), "the all-null dimension moved its row");
}

/// A multi-task run end to end: 1 + K outputs named in config.json, per-dimension metrics in
/// metrics.json and metrics.jsonl, the `same` dimension learnt, `score` writing `scores`, and
/// an ensemble averaging each dimension over its members.
#[test]
fn multi_task_training_writes_a_head_per_dimension_and_scores_them() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    write_tiny_base(&base, 3, true);
    let data = tmp.path().join("data");
    write_dataset(&data, 96, 32, "binary", 1);
    add_dimension_labels(&data);
    let out = tmp.path().join("out");
    let cfg = TrainConfig { epochs: 8, dropout: Some(0.0), learning_rate: 3e-3, ..tiny_cfg(&base) };
    let s = train(&data, &cfg, &out, false).unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["num_labels"], 4);
    assert_eq!(config["id2label"], serde_json::json!({"0": "good", "1": "same", "2": "opposite", "3": "never"}));
    assert_eq!(config["label2id"]["opposite"], 2);
    assert_eq!(config["problem_type"], "multi_label_classification");
    let weights = crate::weights::load_checkpoint(&out.join("model.safetensors"), crate::config::Family::Bert).unwrap();
    assert_eq!(weights["classifier.weight"].dims(), &[4, 32]);
    let val = s.validation.clone().unwrap();
    assert!(val.auc.unwrap() > 0.9, "primary output: {val:?}");
    let same = &val.dimensions["same"];
    assert!(same.spearman.unwrap() > 0.6, "{same:?}");
    assert!(val.dimensions["opposite"].spearman.unwrap() > 0.6, "{:?}", val.dimensions["opposite"]);
    assert!(val.dimensions["opposite"].n < same.n, "null labels are left out");
    assert_eq!(val.dimensions["never"].n, 0);
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert!(written["validation"]["dimensions"]["same"]["group_spearman"].is_f64());
    assert!(
        std::fs::read_to_string(out.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .any(|l| l.contains("\"dimensions\":{\"never\""))
    );

    // score: `scores` per line, named as the head; the primary score is a probability.
    let input = tmp.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"request_id\":\"a\",\"prompt\":\"what is the answer\",\"output\":\"good correct\"}\n\
         {\"request_id\":\"b\",\"prompt\":\"what is the answer\",\"output\":\"bad wrong\"}\n",
    )
    .unwrap();
    let scored = tmp.path().join("scored.jsonl");
    crate::score::score_jsonl(&out, &input, &scored, &crate::score::ScoreOptions::default()).unwrap();
    let rows: Vec<serde_json::Value> =
        std::fs::read_to_string(&scored).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let keys: Vec<&String> = rows[0]["scores"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["never", "opposite", "same"]);
    assert!((0.0..=1.0).contains(&rows[0]["score"].as_f64().unwrap()));
    assert!(rows[0]["scores"]["same"].as_f64().unwrap() > rows[1]["scores"]["same"].as_f64().unwrap());
    assert!(rows[0]["scores"]["opposite"].as_f64().unwrap() < rows[1]["scores"]["opposite"].as_f64().unwrap());

    // An ensemble averages each dimension over its members.
    let ens_dir = tmp.path().join("ens");
    let ens_cfg = TrainConfig { epochs: 1, seeds: vec![11, 12], ..cfg };
    let e = train(&data, &ens_cfg, &ens_dir, false).unwrap();
    assert_eq!(e.validation.unwrap().dimensions.len(), 3);
    let pairs = [("what", "good answer"), ("why", "terrible answer")];
    let load =
        |p: &Path| crate::score::Scorer::load(p, &Device::Cpu).unwrap().score_pairs_with_dimensions(&pairs).unwrap();
    let (a, b, m) = (load(&ens_dir.join("member-11")), load(&ens_dir.join("member-12")), load(&ens_dir));
    for i in 0..pairs.len() {
        assert!((m.0[i] - (a.0[i] + b.0[i]) / 2.0).abs() < 1e-6);
        for k in 0..3 {
            assert!((m.1[i][k] - (a.1[i][k] + b.1[i][k]) / 2.0).abs() < 1e-6);
        }
    }
    assert!(a.1[0].iter().zip(&b.1[0]).any(|(x, y)| (x - y).abs() > 1e-4), "members should differ");
}

/// Every primary objective trains with dimensions beside it (pairwise batches without pairs
/// still learn the dimensions), and `dimensions = []` keeps the one-output model on a
/// multi-task dataset.
#[test]
fn every_objective_trains_with_dimensions() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    write_tiny_base(&base, 3, true);
    let data = tmp.path().join("data");
    write_ranking_dataset(&data, [6, 3, 3], 5);
    add_dimension_labels(&data);
    for (i, objective) in [Objective::Graded, Objective::Pairwise, Objective::GradedPairwise].into_iter().enumerate() {
        let cfg = TrainConfig {
            epochs: 1,
            objective: Some(objective),
            dimensions: Some(vec!["opposite".into()]),
            dimension_weight: 0.5,
            ..tiny_cfg(&base)
        };
        let s = train(&data, &cfg, &tmp.path().join(format!("o{i}")), false).unwrap();
        let v = s.validation.unwrap();
        assert_eq!(v.dimensions.keys().collect::<Vec<_>>(), ["opposite"], "{objective:?}");
        assert!(v.dimensions["opposite"].loss.is_finite(), "{objective:?}");
    }
    let one = TrainConfig { epochs: 1, dimensions: Some(vec![]), ..tiny_cfg(&base) };
    let s = train(&data, &one, &tmp.path().join("one"), false).unwrap();
    assert!(s.validation.unwrap().dimensions.is_empty());
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("one/config.json")).unwrap()).unwrap();
    assert_eq!(config["num_labels"], 1);
    // A binary dataset with dimensions: the binary objective too.
    let bin = tmp.path().join("bin");
    write_dataset(&bin, 16, 8, "binary", 2);
    add_dimension_labels(&bin);
    let cfg = TrainConfig { epochs: 1, objective: Some(Objective::Binary), ..tiny_cfg(&base) };
    let s = train(&bin, &cfg, &tmp.path().join("b"), false).unwrap();
    assert_eq!(s.validation.unwrap().dimensions.len(), 3);
    // A training dimension the dataset lacks is named with file, line and field.
    let cfg = TrainConfig { epochs: 1, dimensions: Some(vec!["coherence".into()]), ..tiny_cfg(&base) };
    let err = train(&bin, &cfg, &tmp.path().join("c"), false).unwrap_err().to_string();
    assert!(err.contains("train.jsonl:1: field labels.coherence is missing"), "{err}");
}

fn weights_of(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let w = crate::weights::load_checkpoint(&dir.join("model.safetensors"), crate::config::Family::Bert).unwrap();
    w.into_iter().map(|(k, t)| (k, t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap())).collect()
}

/// With `data_parallel` shards the result depends on the shard count, not on the threads: the
/// same shards on pools of 1, 2 and 4 threads write the same bytes (dropout on, pairs across
/// shards, several dimensions).
#[test]
fn data_parallel_results_do_not_depend_on_threads() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    write_tiny_base(&base, 3, false);
    let data = tmp.path().join("data");
    write_ranking_dataset(&data, [10, 4, 4], 6);
    add_dimension_labels(&data);
    let cfg = TrainConfig {
        epochs: 2,
        dropout: Some(0.1),
        objective: Some(Objective::GradedPairwise),
        pair_scope: PairScope::Batch,
        data_parallel: 3,
        ..tiny_cfg(&base)
    };
    let mut models = Vec::new();
    for threads in [1, 2, 4] {
        let out = tmp.path().join(format!("t{threads}"));
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| train(&data, &cfg, &out, false)).unwrap();
        models.push(std::fs::read(out.join("model.safetensors")).unwrap());
    }
    assert!(models[0] == models[1] && models[1] == models[2], "shards on 1, 2, 4 threads differ");
    // Another shard count draws other dropout masks: a different (equally valid) run.
    let one = tmp.path().join("one");
    train(&data, &TrainConfig { data_parallel: 1, ..cfg }, &one, false).unwrap();
    assert_ne!(std::fs::read(one.join("model.safetensors")).unwrap(), models[0]);
}

/// Without dropout, cutting micro-batches into shards changes only the order of float sums:
/// the weights after training equal the unsharded run's within 1e-4 (relative), under every
/// loss term, with pairs that cross shards (`pair_scope = "batch"`) and gradient accumulation.
/// `adam_eps = 1` makes each update about proportional to the gradient: with the usual 1e-8,
/// AdamW would blow the rounding noise of gradients that are zero in exact arithmetic (the
/// attention key bias: softmax ignores a shift shared by all keys) up to full-size steps.
#[test]
fn sharded_gradients_equal_whole_batch_gradients() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    write_tiny_base(&base, 3, false);
    let data = tmp.path().join("data");
    write_ranking_dataset(&data, [8, 4, 4], 2);
    add_dimension_labels(&data);
    let cfg = TrainConfig {
        epochs: 1,
        dropout: Some(0.0),
        objective: Some(Objective::GradedPairwise),
        pair_scope: PairScope::Batch,
        grad_accum: 2,
        adam_eps: 1.0,
        weight_decay: 0.0,
        learning_rate: 0.5,
        ..tiny_cfg(&base)
    };
    let start = weights_of(&{
        let d = tmp.path().join("zero");
        train(&data, &TrainConfig { learning_rate: 1e-30, data_parallel: 1, ..cfg.clone() }, &d, false).unwrap();
        d
    });
    let run_with = |shards: usize| {
        let out = tmp.path().join(format!("s{shards}"));
        train(&data, &TrainConfig { data_parallel: shards, ..cfg.clone() }, &out, false).unwrap();
        weights_of(&out)
    };
    let whole = run_with(1);
    for shards in [2, 5] {
        let sharded = run_with(shards);
        let mut moved = 0;
        for (((name, a), (_, b)), (_, s)) in whole.iter().zip(&sharded).zip(&start) {
            let step = a.iter().zip(s).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            moved += usize::from(step > 0.0);
            for (x, y) in a.iter().zip(b) {
                assert!((x - y).abs() <= 1e-4 * step.max(1e-6) + 1e-6, "{shards} shards, {name}: {x} vs {y}");
            }
        }
        assert_eq!(moved, whole.len(), "every tensor should have been trained");
    }
}

/// Resuming a sharded run continues it exactly, with the shard count it started with.
#[test]
fn sharded_resume_equals_uninterrupted() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    write_tiny_base(&base, 3, false);
    let data = tmp.path().join("data");
    write_dataset(&data, 40, 16, "binary", 5);
    let cfg = TrainConfig { epochs: 2, checkpoint_every: 2, dropout: Some(0.1), data_parallel: 3, ..tiny_cfg(&base) };
    let full = tmp.path().join("full");
    train(&data, &cfg, &full, false).unwrap();
    let cut = tmp.path().join("cut");
    assert!(run(&data, &cfg, &cut, false, &Device::Cpu, Some(3)).unwrap().is_none());
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    pool.install(|| train(&data, &cfg, &cut, true)).unwrap();
    assert_eq!(
        std::fs::read(full.join("model.safetensors")).unwrap(),
        std::fs::read(cut.join("model.safetensors")).unwrap()
    );
}

/// Corrupted copies repeat for a seed and position, lose at least one word and keep one, and
/// are `None` for one-word outputs.
#[test]
fn corrupted_copies_are_deterministic_and_shorter() {
    let out = "the service validates input and returns a helpful reply";
    let drop = Corruption::Drop;
    let a = data::corrupt_output(out, 7, 3, drop).unwrap();
    assert_eq!(Some(a.clone()), data::corrupt_output(out, 7, 3, drop));
    assert_ne!(Some(a.clone()), data::corrupt_output(out, 7, 4, drop));
    let n = a.split_whitespace().count();
    assert!((1..9).contains(&n), "{a}");
    assert_eq!(data::corrupt_output("word", 7, 0, drop), None);
    assert_eq!(data::corrupt_output("two words", 1, 0, drop).unwrap().split_whitespace().count(), 1);
}

/// `corruption = "swap"` copies keep every word (same multiset, same length), change the order,
/// repeat for a seed and position, and are `None` when the copy equals the output.
#[test]
fn swapped_copies_keep_the_words_and_change_the_order() {
    let out = "the service validates input and returns a helpful reply to every user";
    let sorted = |s: &str| {
        let mut w: Vec<&str> = s.split_whitespace().collect();
        w.sort_unstable();
        w.join(" ")
    };
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..20 {
        // Two swaps at the same place undo each other: no copy then.
        let Some(c) = data::corrupt_output(out, 7, i, Corruption::Swap) else { continue };
        assert_eq!(Some(c.clone()), data::corrupt_output(out, 7, i, Corruption::Swap));
        assert_ne!(c, out);
        assert_eq!(sorted(&c), sorted(out));
        seen.insert(c);
    }
    assert!(seen.len() > 10, "copies barely vary: {seen:?}");
    assert_eq!(data::corrupt_output("word", 7, 0, Corruption::Swap), None);
    assert_eq!(data::corrupt_output("same same", 7, 0, Corruption::Swap), None);
    assert_eq!(data::corrupt_output("two words", 7, 0, Corruption::Swap).as_deref(), Some("words two"));
}

/// `unlabelled = true` reads the dataset's unlabelled.jsonl into the corruption pairs: training
/// repeats, differs from a run without them, and weights nothing by their (absent) labels; the
/// config and a missing file give errors that say what is needed.
#[test]
fn unlabelled_outputs_train_through_corruption_pairs() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    write_tiny_base(&base, 3, false);
    let data_dir = tmp.path().join("data");
    write_ranking_dataset(&data_dir, [6, 3, 3], 8);
    let cfg = TrainConfig {
        epochs: 2,
        objective: Some(Objective::GradedPairwise),
        corruption_pairs: 1.0,
        corruption: Corruption::Swap,
        unlabelled: true,
        data_parallel: 2,
        ..tiny_cfg(&base)
    };
    let missing = train(&data_dir, &cfg, &tmp.path().join("m"), false).unwrap_err().to_string();
    assert!(missing.contains("unlabelled.jsonl") && missing.contains("[dataset] unlabelled"), "{missing}");
    // Unlabelled rows: the train rows' texts under new ids and groups (labels dropped).
    let mut u = String::new();
    for line in std::fs::read_to_string(data_dir.join("train.jsonl")).unwrap().lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        let row = serde_json::json!({"request_id": format!("u-{}", r["request_id"].as_str().unwrap()),
            "prompt": r["prompt"], "output": r["output"], "group": format!("u-{}", r["group"].as_str().unwrap()),
            "cohort": null});
        u.push_str(&format!("{row}\n"));
    }
    std::fs::write(data_dir.join("unlabelled.jsonl"), u).unwrap();
    let bytes = |d: &str, c: &TrainConfig| {
        let out = tmp.path().join(d);
        train(&data_dir, c, &out, false).unwrap();
        std::fs::read(out.join("model.safetensors")).unwrap()
    };
    let a = bytes("a", &cfg);
    assert_eq!(a, bytes("b", &cfg));
    assert_ne!(a, bytes("without", &TrainConfig { unlabelled: false, ..cfg.clone() }));
    // Cut in the second epoch (whose swap copies are drawn anew) and resumed: the same model.
    let cut = tmp.path().join("cut");
    let resumable = TrainConfig { checkpoint_every: 1, ..cfg.clone() };
    assert!(run(&data_dir, &resumable, &cut, false, &Device::Cpu, Some(9)).unwrap().is_none());
    train(&data_dir, &resumable, &cut, true).unwrap();
    assert_eq!(std::fs::read(cut.join("model.safetensors")).unwrap(), a);
    std::fs::write(data_dir.join("unlabelled.jsonl"), "{\"request_id\": \"u\", \"prompt\": \"p\"}\n").unwrap();
    let bad = train(&data_dir, &cfg, &tmp.path().join("bad"), false).unwrap_err().to_string();
    assert!(bad.contains("unlabelled.jsonl:1") && bad.contains("output"), "{bad}");
    let err = TrainConfig::from_toml_str("[train]\nobjective = \"graded+pairwise\"\nunlabelled = true\n", "f.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unlabelled") && err.contains("corruption_pairs"), "{err}");
}

/// `corruption_pairs` trains (the copies add ranking pairs, no pointwise rows), repeats, changes
/// the result, and needs a pairwise objective.
#[test]
fn corruption_pairs_train_and_need_a_pairwise_objective() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    write_tiny_base(&base, 3, false);
    let data_dir = tmp.path().join("data");
    write_ranking_dataset(&data_dir, [6, 3, 3], 8);
    add_dimension_labels(&data_dir);
    let cfg = TrainConfig {
        epochs: 2,
        objective: Some(Objective::GradedPairwise),
        corruption_pairs: 0.5,
        data_parallel: 2,
        ..tiny_cfg(&base)
    };
    let bytes = |d: &str| {
        let out = tmp.path().join(d);
        train(&data_dir, &cfg, &out, false).unwrap();
        std::fs::read(out.join("model.safetensors")).unwrap()
    };
    let (a, b) = (bytes("a"), bytes("b"));
    assert_eq!(a, b);
    let plain = tmp.path().join("plain");
    train(&data_dir, &TrainConfig { corruption_pairs: 0.0, ..cfg.clone() }, &plain, false).unwrap();
    assert_ne!(std::fs::read(plain.join("model.safetensors")).unwrap(), a);
    let err = TrainConfig::from_toml_str("[train]\ncorruption_pairs = 1.0\n", "f.toml").unwrap_err().to_string();
    assert!(err.contains("corruption_pairs") && err.contains("pairwise"), "{err}");
}

/// `keep_best = false` keeps the last epoch's weights: the same bytes as training without a
/// validation split (evaluation draws no randomness), with the validation passes still logged.
#[test]
fn keep_best_false_keeps_the_last_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    write_tiny_base(&base, 3, false);
    let data_dir = tmp.path().join("data");
    write_ranking_dataset(&data_dir, [6, 3, 3], 8);
    let no_val = tmp.path().join("no-val");
    std::fs::create_dir_all(&no_val).unwrap();
    for f in ["train.jsonl", "dataset_card.json"] {
        std::fs::copy(data_dir.join(f), no_val.join(f)).unwrap();
    }
    let cfg = TrainConfig { epochs: 3, keep_best: false, patience: 1, ..tiny_cfg(&base) };
    let last = train(&data_dir, &cfg, &tmp.path().join("last"), false).unwrap();
    assert_eq!(last.best_epoch, None);
    assert_eq!(last.epochs_completed, 3, "patience is ignored without selection");
    train(&no_val, &cfg, &tmp.path().join("plain"), false).unwrap();
    let bytes = |d: &str| std::fs::read(tmp.path().join(d).join("model.safetensors")).unwrap();
    assert_eq!(bytes("last"), bytes("plain"));
    let metrics = std::fs::read_to_string(tmp.path().join("last/metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().filter(|l| l.contains("\"validation\"")).count(), 3);
}

/// `objective = "self_supervised"` learns from the corruption pairs alone: the labels do not
/// reach the model (reversed labels give the same bytes), it equals `pairwise` with no
/// qualifying labelled pair, and it needs `corruption_pairs`.
#[test]
fn self_supervised_ignores_the_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    write_tiny_base(&base, 3, false);
    let data_dir = tmp.path().join("data");
    write_ranking_dataset(&data_dir, [6, 3, 3], 8);
    let reversed = tmp.path().join("reversed");
    std::fs::create_dir_all(&reversed).unwrap();
    for f in ["validation.jsonl", "test.jsonl", "dataset_card.json"] {
        std::fs::copy(data_dir.join(f), reversed.join(f)).unwrap();
    }
    let mut lines = String::new();
    for line in std::fs::read_to_string(data_dir.join("train.jsonl")).unwrap().lines() {
        let mut r: serde_json::Value = serde_json::from_str(line).unwrap();
        r["label"] = serde_json::json!(1.0 - r["label"].as_f64().unwrap());
        lines.push_str(&format!("{r}\n"));
    }
    std::fs::write(reversed.join("train.jsonl"), lines).unwrap();
    let cfg = TrainConfig {
        epochs: 2,
        objective: Some(Objective::SelfSupervised),
        corruption_pairs: 1.0,
        corruption: Corruption::Swap,
        data_parallel: 2,
        ..tiny_cfg(&base)
    };
    let bytes = |data: &Path, d: &str, c: &TrainConfig| {
        let out = tmp.path().join(d);
        train(data, c, &out, false).unwrap();
        std::fs::read(out.join("model.safetensors")).unwrap()
    };
    let a = bytes(&data_dir, "a", &cfg);
    assert_eq!(a, bytes(&reversed, "reversed-model", &cfg));
    let no_labelled_pairs = TrainConfig { objective: Some(Objective::Pairwise), pair_min_diff: 2.0, ..cfg.clone() };
    assert_eq!(a, bytes(&data_dir, "pairwise", &no_labelled_pairs));
    let gp = TrainConfig { objective: Some(Objective::GradedPairwise), ..cfg.clone() };
    assert_ne!(bytes(&data_dir, "gp", &gp), bytes(&reversed, "gp-reversed", &gp));
    let err = TrainConfig::from_toml_str("[train]\nobjective = \"self_supervised\"\n", "f.toml").unwrap_err();
    assert!(err.to_string().contains("corruption_pairs"), "{err}");
    let err = TrainConfig::from_toml_str(
        "[train]\nobjective = \"self_supervised\"\ncorruption_pairs = 1.0\ndimensions = [\"fluency\"]\n",
        "f.toml",
    )
    .unwrap_err();
    assert!(err.to_string().contains("[train] dimensions"), "{err}");
}

/// `[[train.candidates]]` trains the base configuration and each candidate, keeps the one with
/// the best validation figure (whichever it is), copies its files into the output directory,
/// reports every figure, falls back to the dataset-level Spearman with few validation groups,
/// and keeps finished candidates on resume.
#[test]
fn model_selection_keeps_the_best_candidate() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    write_tiny_base(&base, 3, true);
    let data = tmp.path().join("data");
    write_ranking_dataset(&data, [24, 6, 6], 4);
    let text = format!(
        "[train]\nbase_model = {:?}\nepochs = 4\nbatch_size = 8\nmax_length = 32\nlearning_rate = 2e-3\n\
         dropout = 0.0\nobjective = \"pairwise\"\neval_metric = \"group_spearman\"\npatience = 0\n\
         [[train.candidates]]\nname = \"frozen\"\nlearning_rate = 1e-12\nepochs = 1\n",
        base.to_string_lossy()
    );
    let cfg = TrainConfig::from_toml_str(&text, "sel.toml").unwrap();
    assert_eq!(cfg.candidates.len(), 1);
    let out = tmp.path().join("sel");
    let s = train(&data, &cfg, &out, false).unwrap();
    let sel = s.selection.clone().unwrap();
    let read = |p: &Path| std::fs::read(p).unwrap();
    // Six validation groups, at least five needed: the group-level figure is compared.
    assert_eq!((sel.metric, sel.groups_used), (EvalMetric::GroupSpearman, 6));
    let names: Vec<&str> = sel.candidates.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["base", "frozen"]);
    for c in &sel.candidates {
        let m: TrainSummary = serde_json::from_slice(&read(&c.dir.join("metrics.json"))).unwrap();
        let v = m.validation.unwrap().group_spearman.unwrap();
        assert!((c.value.unwrap() - v).abs() < 1e-12, "{c:?} vs {v}");
    }
    let (learnt, frozen) = (sel.candidates[0].value.unwrap(), sel.candidates[1].value.unwrap());
    assert!(learnt > frozen + 0.3, "{learnt} vs {frozen}");
    assert_eq!(sel.chosen, "base");
    assert_eq!(read(&out.join("model.safetensors")), read(&out.join("candidates/base/model.safetensors")));
    assert_eq!(
        s.validation,
        serde_json::from_slice::<TrainSummary>(&read(&out.join("candidates/base/metrics.json"))).unwrap().validation
    );
    let on_disk: TrainSummary = serde_json::from_slice(&read(&out.join("metrics.json"))).unwrap();
    assert_eq!(on_disk.selection.as_ref(), Some(&sel));
    crate::score::Scorer::load(&out, &Device::Cpu).unwrap();

    // The other way round (the base learns nothing): the candidate is kept, its config too.
    let mut swapped = TrainConfig { learning_rate: 1e-12, epochs: 1, ..cfg.clone() };
    swapped.candidates[0].name = "learnt".into();
    swapped.candidates[0].overrides = toml::toml! { learning_rate = 2e-3
    epochs = 4 };
    let out2 = tmp.path().join("sel2");
    let s2 = train(&data, &swapped, &out2, false).unwrap();
    assert_eq!(s2.selection.as_ref().unwrap().chosen, "learnt");
    for f in ["model.safetensors", "training_config.json", "config.json"] {
        assert_eq!(read(&out2.join(f)), read(&out2.join("candidates/learnt").join(f)), "{f}");
    }
    // The same candidate training gives the same model as the base run above.
    assert_eq!(read(&out2.join("model.safetensors")), read(&out.join("model.safetensors")));

    // Fewer usable groups than select_min_groups: the dataset-level Spearman decides.
    let strict = TrainConfig { select_min_groups: 7, ..cfg.clone() };
    let mtime = || std::fs::metadata(out.join("candidates/frozen/model.safetensors")).unwrap().modified().unwrap();
    let before = mtime();
    // A leftover ensemble.json (an earlier ensemble run into the same directory) would make the
    // scorer read out/ as an ensemble: selection removes it.
    std::fs::write(out.join(crate::score::ENSEMBLE_FILE), "{}").unwrap();
    let s3 = train(&data, &strict, &out, true).unwrap();
    assert!(!out.join(crate::score::ENSEMBLE_FILE).exists());
    assert_eq!(mtime(), before, "a finished candidate is kept on resume");
    let sel3 = s3.selection.unwrap();
    assert_eq!(sel3.metric, EvalMetric::Spearman);
    for c in &sel3.candidates {
        let m: TrainSummary = serde_json::from_slice(&read(&c.dir.join("metrics.json"))).unwrap();
        let v = m.validation.unwrap().spearman.unwrap();
        assert!((c.value.unwrap() - v).abs() < 1e-12, "{c:?} vs {v}");
    }

    // A self-supervised candidate (no label in its loss) is judged on the training labels too:
    // its figure is the mean within-group Spearman over the train and validation groups.
    let mut ss = cfg.clone();
    ss.objective = Some(Objective::GradedPairwise);
    ss.corruption_pairs = 1.0;
    ss.candidates[0].name = "self_supervised".into();
    ss.candidates[0].overrides = toml::toml! { objective = "self_supervised" };
    let out4 = tmp.path().join("sel4");
    let sel4 = train(&data, &ss, &out4, false).unwrap().selection.unwrap();
    let judged: Vec<(&str, usize)> = sel4.candidates.iter().map(|c| (c.judged_on.as_str(), c.groups_used)).collect();
    assert_eq!(judged, [("validation", 6), ("train+validation", 30)]);
    let scorer = crate::score::Scorer::load(&out4.join("candidates/self_supervised"), &Device::Cpu).unwrap();
    let mut groups: std::collections::BTreeMap<String, (Vec<f64>, Vec<f64>)> = Default::default();
    for split in ["train.jsonl", "validation.jsonl"] {
        for line in std::fs::read_to_string(data.join(split)).unwrap().lines() {
            let r: serde_json::Value = serde_json::from_str(line).unwrap();
            let s = scorer.score_pairs(&[(r["prompt"].as_str().unwrap(), r["output"].as_str().unwrap())]).unwrap()[0];
            let g = groups.entry(r["group"].as_str().unwrap().to_string()).or_default();
            g.0.push(s);
            g.1.push(r["label"].as_f64().unwrap());
        }
    }
    let rhos: Vec<f64> =
        groups.values().map(|(s, l)| evalloop_core::stats::corr::spearman(s, l).unwrap().estimate).collect();
    let mean = rhos.iter().sum::<f64>() / rhos.len() as f64;
    assert!((sel4.candidates[1].value.unwrap() - mean).abs() < 1e-9, "{:?} vs {mean}", sel4.candidates[1]);
    assert_eq!(sel4.metric, EvalMetric::GroupSpearman);

    // Errors name the candidate and the key; selection needs a validation split.
    let bad = |extra: &str| TrainConfig::from_toml_str(&format!("{text}{extra}"), "sel.toml").unwrap_err().to_string();
    let e = bad("[[train.candidates]]\nname = \"frozen\"\n");
    assert!(e.contains("\"frozen\"") && e.contains("twice"), "{e}");
    let e = bad("[[train.candidates]]\nname = \"base\"\n");
    assert!(e.contains("\"base\""), "{e}");
    let e = bad("[[train.candidates]]\nname = \"x\"\nbatchsize = 3\n");
    assert!(e.contains("sel.toml: [[train.candidates]] \"x\"") && e.contains("batchsize"), "{e}");
    let e = bad("[[train.candidates]]\nname = \"x\"\nbatch_size = 0\n");
    assert!(e.contains("\"x\"") && e.contains("batch_size"), "{e}");
    let e = bad("[[train.candidates]]\nname = \"x/y\"\n");
    assert!(e.contains("letters"), "{e}");
    let e = bad("seeds = [1, 2]\n");
    assert!(e.contains("\"frozen\"") && e.contains("seeds cannot be set per candidate"), "{e}");
    let e = TrainConfig::from_toml_str(&text.replace("patience = 0\n", "patience = 0\nseeds = [1, 2]\n"), "sel.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("[train] candidates") && e.contains("seeds"), "{e}");
    let no_val = tmp.path().join("no-val");
    std::fs::create_dir_all(&no_val).unwrap();
    for f in ["train.jsonl", "dataset_card.json"] {
        std::fs::copy(data.join(f), no_val.join(f)).unwrap();
    }
    let e = train(&no_val, &TrainConfig { epochs: 1, ..cfg.clone() }, &tmp.path().join("nv"), false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("validation split"), "{e}");
}

/// A dataset card for a hand-made test dataset with labels of `kind`.
fn write_card(dir: &Path, kind: LabelKind) {
    let config = evalloop_core::dataset::DatasetConfig { label: kind, ..Default::default() };
    let card = evalloop_core::files::DatasetCard::hand_made(config);
    std::fs::write(dir.join("dataset_card.json"), card.to_json().unwrap()).unwrap();
}

/// `corruption_mix` draws its copies from several families, repeatably, trains differently from
/// one family alone, and names a bad family or weight.
#[test]
fn corruption_mix_trains_repeatably_and_checks_its_families() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    write_tiny_base(&base, 3, false);
    let data_dir = tmp.path().join("data");
    write_ranking_dataset(&data_dir, [6, 3, 3], 8);
    let mix: std::collections::BTreeMap<String, f64> =
        [("shuffle".to_string(), 1.0), ("insert".to_string(), 1.0), ("repeat".to_string(), 2.0)].into();
    let cfg = TrainConfig {
        epochs: 2,
        objective: Some(Objective::GradedPairwise),
        corruption_pairs: 1.0,
        corruption_mix: mix,
        ..tiny_cfg(&base)
    };
    let bytes = |d: &str, cfg: &TrainConfig| {
        let out = tmp.path().join(d);
        train(&data_dir, cfg, &out, false).unwrap();
        std::fs::read(out.join("model.safetensors")).unwrap()
    };
    let a = bytes("a", &cfg);
    assert_eq!(a, bytes("b", &cfg));
    let swap = TrainConfig { corruption_mix: Default::default(), corruption: Corruption::Swap, ..cfg.clone() };
    assert_ne!(a, bytes("swap", &swap));
    for (toml, needle) in [
        ("[train.corruption_mix]\nsentence_soup = 1.0\n", "corruption_mix.sentence_soup: unknown corruption family"),
        ("[train.corruption_mix]\nshuffle = -1.0\n", "corruption_mix.shuffle: -1 is not a number >= 0"),
        ("[train.corruption_mix]\nshuffle = 0.0\n", "corruption_mix: every weight is 0"),
    ] {
        let text = format!("[train]\nobjective = \"pairwise\"\ncorruption_pairs = 1.0\n{toml}");
        let err = TrainConfig::from_toml_str(&text, "f.toml").unwrap_err().to_string();
        assert!(err.contains(needle), "{err}");
    }
}

/// Adds `evaluator_score` to every row of the dataset's splits: `f(label, row index)`.
fn add_evaluator_scores(dir: &Path, f: impl Fn(f64, usize) -> f64) {
    for split in ["train", "validation", "test"] {
        let p = dir.join(format!("{split}.jsonl"));
        let text = std::fs::read_to_string(&p).unwrap();
        let mut out = String::new();
        for (i, line) in text.lines().enumerate() {
            let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
            let label = v["label"].as_f64().unwrap();
            v["evaluator_score"] = serde_json::json!(f(label, i));
            out.push_str(&v.to_string());
            out.push('\n');
        }
        std::fs::write(&p, out).unwrap();
    }
}

/// `blend_evaluator`: the model's score blended with the production evaluator's, chosen on the
/// validation split (by the search: never worse there than either alone; by the regression:
/// from the correlations it reports), written as blend.json and applied by every scorer, which
/// then needs the production score of each request; `refit_blend` fits it again without
/// training.
#[test]
fn blend_evaluator_blends_with_the_production_score() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    write_tiny_base(&base, 3, false);
    let data_dir = tmp.path().join("data");
    write_ranking_dataset(&data_dir, [6, 4, 4], 8);
    let cfg = TrainConfig {
        epochs: 1,
        objective: Some(Objective::GradedPairwise),
        eval_metric: EvalMetric::GroupSpearman,
        blend_evaluator: true,
        blend_rule: BlendRule::Search,
        ..tiny_cfg(&base)
    };
    // Rows without a production score: the stage says what is missing.
    let err = train(&data_dir, &cfg, &tmp.path().join("none"), false).unwrap_err().to_string();
    assert!(err.contains("validation.jsonl:1: field evaluator_score is missing"), "{err}");

    // A production evaluator that ranks well but on its own scale.
    add_evaluator_scores(&data_dir, |label, i| 0.2 + 0.5 * label + 0.01 * (i % 3) as f64);
    let out = tmp.path().join("m");
    let s = train(&data_dir, &cfg, &out, false).unwrap();
    let b = s.blend.clone().expect("a blend summary");
    let (vm, ve, vb) = (b.validation_model.unwrap(), b.validation_evaluator.unwrap(), b.validation_blend.unwrap());
    assert!(vb >= vm.max(ve) - 1e-12, "{b:?}");
    assert!((0.0..=1.0).contains(&b.weight));
    assert!(b.test_blend.is_some() && b.test_evaluator.is_some());
    let file = crate::files::BlendFile::read(&out).unwrap().expect("blend.json");
    assert_eq!(file.weight, b.weight);
    let on_disk: TrainSummary =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(on_disk.blend, Some(b));

    let scorer = crate::score::Scorer::load(&out, &Device::Cpu).unwrap();
    let pairs = [("what question", "good bad"), ("why", "terrible answer")];
    let err = scorer.score_blended(&pairs, None).unwrap_err().to_string();
    assert!(err.contains("production"), "{err}");
    let model = scorer.score_pairs(&pairs).unwrap();
    let blended = scorer.score_blended(&pairs, Some(&[0.3, 0.6])).unwrap();
    for i in 0..2 {
        assert_eq!(blended[i], file.apply(model[i], [0.3, 0.6][i]));
        assert!((0.0..=1.0).contains(&blended[i]));
    }

    // score --input: the production score from the row, else an error naming the line.
    let input = tmp.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"request_id\":\"a\",\"prompt\":\"what question\",\"output\":\"good bad\",\"eval_scores\":{\"overall\":0.3}}\n\
         {\"request_id\":\"b\",\"prompt\":\"why\",\"output\":\"terrible answer\",\"evaluator_score\":0.6}\n",
    )
    .unwrap();
    let output = tmp.path().join("out.jsonl");
    crate::score::score_jsonl(&out, &input, &output, &Default::default()).unwrap();
    let scored: Vec<f64> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["score"].as_f64().unwrap())
        .collect();
    assert_eq!(scored, blended);
    std::fs::write(&input, "{\"request_id\":\"a\",\"prompt\":\"p\",\"output\":\"o\"}\n").unwrap();
    let err = crate::score::score_jsonl(&out, &input, &output, &Default::default()).unwrap_err().to_string();
    assert!(err.contains("in.jsonl:1: field eval_scores.overall"), "{err}");

    // The regression rule on the same model, without training: this evaluator follows the
    // labels almost exactly, so it takes most of the blend, and the weight is the least-squares
    // one of the correlations reported.
    let regression = TrainConfig { blend_rule: BlendRule::Regression, ..cfg.clone() };
    let b = refit_blend(&data_dir, &regression, &out).unwrap();
    assert_eq!(b.rule, BlendRule::Regression);
    let c = b.correlations.clone().expect("the correlations");
    let labelled = ["train", "validation"]
        .iter()
        .map(|s| std::fs::read_to_string(data_dir.join(format!("{s}.jsonl"))).unwrap().lines().count())
        .sum::<usize>();
    assert_eq!(c.evaluator_rows, labelled);
    assert_eq!(c.within_groups, c.validation_within_df >= blend::MIN_WITHIN_DF);
    assert!(c.evaluator_label > 0.9, "{c:?}");
    let det = 1.0 - c.model_evaluator * c.model_evaluator;
    let bm = ((c.model_label - c.model_evaluator * c.evaluator_label) / det).max(0.0);
    let be = ((c.evaluator_label - c.model_evaluator * c.model_label) / det).max(0.0);
    assert!((b.weight - be / (bm + be)).abs() < 1e-12, "{b:?}");
    assert!(b.weight > 0.5, "{b:?}");
    assert_eq!(crate::files::BlendFile::read(&out).unwrap().unwrap().weight, b.weight);
    let on_disk: TrainSummary =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(on_disk.blend, Some(b));
    // An evaluator that ranks against the labels gets no share, whatever the search would see.
    add_evaluator_scores(&data_dir, |label, i| 0.9 - 0.5 * label + 0.01 * (i % 3) as f64);
    let b = refit_blend(&data_dir, &regression, &out).unwrap();
    assert!(b.correlations.as_ref().unwrap().evaluator_label < -0.9, "{b:?}");
    assert_eq!(b.weight, 0.0);
    // Without a trained model there is nothing to blend.
    let err = refit_blend(&data_dir, &regression, &tmp.path().join("empty")).unwrap_err().to_string();
    assert!(err.contains("--blend-only needs a model trained by `evalloop train`"), "{err}");

    // Trained again without the blend, the directory loses blend.json.
    train(&data_dir, &TrainConfig { blend_evaluator: false, ..cfg }, &out, false).unwrap();
    assert!(!out.join("blend.json").exists());
}

/// Preference pairs alone (no labelled train row) teach the within-group ranking that the
/// labels would: the train split's rows become `pairs.jsonl` (each two outputs of a group, the
/// better one chosen) and `train.jsonl` is emptied.
#[test]
fn preference_pairs_alone_raise_group_level_spearman() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    write_tiny_base(&base, 3, true);
    let data = tmp.path().join("data");
    write_ranking_dataset(&data, [24, 12, 12], 4);
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(data.join("train.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut pairs = String::new();
    for a in &rows {
        for b in &rows {
            if a["group"] == b["group"] && a["label"].as_f64() > b["label"].as_f64() {
                let row = serde_json::json!({
                    "chosen": a["output"], "cohort": "(none)", "group": a["group"], "margin": 1,
                    "prompt": a["prompt"], "rejected": b["output"], "request_id_chosen": a["request_id"],
                    "request_id_rejected": b["request_id"], "split": "train", "weight": 1.0,
                });
                pairs.push_str(&format!("{row}\n"));
            }
        }
    }
    std::fs::write(data.join("train.jsonl"), "").unwrap();
    let cfg = TrainConfig {
        epochs: 8,
        dropout: Some(0.0),
        objective: Some(Objective::Pairwise),
        eval_metric: EvalMetric::GroupSpearman,
        preference_pairs: 1.0,
        ..tiny_cfg(&base)
    };
    let missing = train(&data, &cfg, &tmp.path().join("x"), false).unwrap_err().to_string();
    assert!(missing.contains("pairs.jsonl") && missing.contains("preference_pairs"), "{missing}");
    std::fs::write(data.join("pairs.jsonl"), &pairs).unwrap();
    let before =
        train(&data, &TrainConfig { learning_rate: 1e-12, epochs: 1, ..cfg.clone() }, &tmp.path().join("b"), false)
            .unwrap();
    let after = train(&data, &cfg, &tmp.path().join("a"), false).unwrap();
    let g0 = before.test.unwrap().group_spearman.unwrap();
    let g1 = after.test.clone().unwrap().group_spearman.unwrap();
    eprintln!("preference pairs toy: test group spearman {g0:.3} -> {g1:.3}");
    assert!(g1 > 0.6 && g1 > g0 + 0.3, "{g0} -> {g1}");
    // Without the pairs there is nothing to train on.
    let none = TrainConfig { preference_pairs: 0.0, ..cfg.clone() };
    let empty = train(&data, &none, &tmp.path().join("n"), false).unwrap_err().to_string();
    assert!(empty.contains("no examples"), "{empty}");
    // A pair row with a bad weight is an error naming the line and the field.
    std::fs::write(data.join("pairs.jsonl"), pairs.replacen("\"weight\":1.0", "\"weight\":-1.0", 1)).unwrap();
    let bad = train(&data, &cfg, &tmp.path().join("w"), false).unwrap_err().to_string();
    assert!(bad.contains("pairs.jsonl:1") && bad.contains("weight"), "{bad}");
    let err = TrainConfig::from_toml_str("[train]\npreference_pairs = 1.0\n", "f.toml").unwrap_err().to_string();
    assert!(err.contains("preference_pairs") && err.contains("pairwise"), "{err}");
}

/// Each non-BERT family (the random fixtures of tests/fixtures/encoders/ as base models) trains
/// through the whole run: the loss falls, the directory is in its family's Hugging Face layout
/// (architectures, tensor names), and the scorer loaded from it reproduces the run's test loss.
#[test]
fn every_encoder_family_trains_and_scores() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/encoders");
    for (family, arch, prefix) in [
        ("roberta", "RobertaForSequenceClassification", "roberta."),
        ("xlm-roberta", "XLMRobertaForSequenceClassification", "roberta."),
        ("modernbert", "ModernBertForSequenceClassification", "model."),
        ("deberta-v3", "DebertaV2ForSequenceClassification", "deberta."),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("base");
        std::fs::create_dir_all(&base).unwrap();
        for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
            std::fs::copy(fixtures.join(family).join(f), base.join(f)).unwrap();
        }
        let data = tmp.path().join("data");
        write_dataset(&data, 48, 16, "graded", 2);
        let out = tmp.path().join("out");
        let cfg = TrainConfig { epochs: 6, dropout: Some(0.0), learning_rate: 1e-3, ..tiny_cfg(&base) };
        let summary = train(&data, &cfg, &out, false).unwrap();
        let (head, tail) = first_and_last_train_loss(&out);
        assert!(tail < head, "{family}: loss {head} -> {tail}");
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
        assert_eq!(config["architectures"][0], arch, "{family}");
        assert_eq!(config["model_type"], family.replace("-v3", "-v2"));
        assert_eq!(config["num_labels"], 1);
        let raw = candle_core::safetensors::load(out.join("model.safetensors"), &Device::Cpu).unwrap();
        assert!(
            raw.keys()
                .all(|k| ["classifier.", "head.", "pooler."].iter().any(|p| k.starts_with(p)) || k.starts_with(prefix)),
            "{family}: {:?}",
            raw.keys().collect::<Vec<_>>()
        );
        let test = data::read_split(&data.join("test.jsonl"), LabelKind::Graded, false).unwrap();
        let pairs: Vec<(String, String)> = test.iter().map(|e| (e.prompt.clone(), e.output.clone())).collect();
        let scores = crate::score::Scorer::load(&out, &Device::Cpu).unwrap().score_pairs(&pairs).unwrap();
        let wmse: f64 = scores.iter().zip(&test).map(|(s, e)| e.weight * (s - e.label).powi(2)).sum::<f64>()
            / test.iter().map(|e| e.weight).sum::<f64>();
        let t = summary.test.unwrap();
        assert!((wmse - t.loss).abs() < 1e-5, "{family}: scorer {wmse} vs training's test loss {}", t.loss);
    }
}

/// `distill` alone (no labelled pair: `pair_min_diff` above the label range) learns the
/// production evaluator's within-group ranking from its scores: an evaluator that ranks as the
/// labels do raises the held-out group-level Spearman, one that ranks against them lowers it.
#[test]
fn distill_learns_the_production_evaluators_ranking() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    write_tiny_base(&base, 3, true);
    let data = tmp.path().join("data");
    write_ranking_dataset(&data, [24, 12, 12], 4);
    let cfg = TrainConfig {
        epochs: 8,
        dropout: Some(0.0),
        objective: Some(Objective::Pairwise),
        eval_metric: EvalMetric::GroupSpearman,
        pair_min_diff: 2.0,
        distill: 1.0,
        ..tiny_cfg(&base)
    };
    let missing = train(&data, &cfg, &tmp.path().join("x"), false).unwrap_err().to_string();
    assert!(missing.contains("distill") && missing.contains("evaluator_score"), "{missing}");

    add_evaluator_scores(&data, |label, i| 0.1 + 0.6 * label + 0.001 * (i % 5) as f64);
    let before =
        train(&data, &TrainConfig { learning_rate: 1e-12, epochs: 1, ..cfg.clone() }, &tmp.path().join("b"), false)
            .unwrap();
    let along = train(&data, &cfg, &tmp.path().join("a"), false).unwrap();
    let g0 = before.test.unwrap().group_spearman.unwrap();
    let g1 = along.test.unwrap().group_spearman.unwrap();
    let check = along.distill.clone().expect("a distill check");
    assert!(check.used && check.agreement.unwrap() > 0.9 && check.groups > 0, "{check:?}");
    add_evaluator_scores(&data, |label, i| 0.9 - 0.6 * label + 0.001 * (i % 5) as f64);
    // An evaluator that ranks against the labels fails the agreement check: no distillation.
    let gated = train(&data, &cfg, &tmp.path().join("g"), false).unwrap();
    let check = gated.distill.clone().expect("a distill check");
    assert!(!check.used && check.agreement.unwrap() < -0.9, "{check:?}");
    let on_disk: TrainSummary =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("g/metrics.json")).unwrap()).unwrap();
    assert_eq!(on_disk.distill, Some(check));
    // Forced on (distill_min_agreement = -1), it learns that evaluator's ranking.
    let forced = TrainConfig { distill_min_agreement: -1.0, ..cfg.clone() };
    let against = train(&data, &forced, &tmp.path().join("r"), false).unwrap();
    let g2 = against.test.unwrap().group_spearman.unwrap();
    eprintln!("distill toy: test group spearman {g0:.3} -> {g1:.3} (evaluator along), {g2:.3} (against)");
    assert!(g1 > 0.6 && g1 > g0 + 0.3, "{g0} -> {g1}");
    assert!(g2 < 0.0 && g2 < g1 - 0.6, "{g2} vs {g1}");

    for (toml, needle) in [
        ("objective = \"graded\"\ndistill = 1.0\n", "distill: needs objective"),
        ("objective = \"pairwise\"\ndistill = -1.0\n", "distill: -1 is not a number >= 0"),
        ("objective = \"pairwise\"\ndistill = 1.0\ndistill_temperature = 0.0\n", "distill_temperature: 0 is not"),
        ("objective = \"pairwise\"\ndistill_min_agreement = 2.0\n", "distill_min_agreement: 2 is not in [-1, 1]"),
    ] {
        let err = TrainConfig::from_toml_str(&format!("[train]\n{toml}"), "f.toml").unwrap_err().to_string();
        assert!(err.contains(needle), "{err}");
    }
}

/// `dapt_epochs`: masked-language-model pretraining on the dataset's texts lowers its loss over
/// the epochs, is reproducible, and the scoring stage starts from the adapted encoder (not the
/// base); `training_config.json` still names the configured base model and the temporary copy
/// is removed.
#[test]
fn domain_adaptive_pretraining_adapts_the_encoder_the_scoring_stage_starts_from() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    write_tiny_base(&base, 3, false);
    let data_dir = tmp.path().join("data");
    write_dataset(&data_dir, 48, 8, "binary", 5);
    let cfg = TrainConfig { dapt_epochs: 6, dapt_learning_rate: 5e-3, epochs: 1, ..tiny_cfg(&base) };
    let out = tmp.path().join("m");
    let s = train(&data_dir, &cfg, &out, false).unwrap();
    let d = s.dapt.clone().expect("a pretraining summary");
    assert_eq!((d.texts, d.epochs, d.steps), (56, 6, 6 * 7), "{d:?}");
    assert!(d.masked_tokens >= d.steps * 8, "at least one masked token per sequence: {d:?}");
    assert!(d.last_epoch_loss < d.first_epoch_loss - 0.3, "the masked-token loss falls: {d:?}");
    assert!(!out.join("dapt-base").exists(), "the adapted copy is removed");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("training_config.json")).unwrap()).unwrap();
    assert_eq!(written["train"]["base_model"], base.to_string_lossy().as_ref());
    assert_eq!(written["train"]["dapt_epochs"], 6);
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["dapt"]["steps"], 42);

    // The same run again: the same pretraining and the same model.
    let again = train(&data_dir, &cfg, &tmp.path().join("m2"), false).unwrap();
    assert_eq!(
        again.dapt.as_ref().map(|d| (d.first_epoch_loss, d.last_epoch_loss)),
        Some((d.first_epoch_loss, d.last_epoch_loss))
    );
    let bytes = |p: &Path| std::fs::read(p.join("model.safetensors")).unwrap();
    assert_eq!(bytes(&out), bytes(&tmp.path().join("m2")));
    // Without the stage the model differs: the scoring stage started from the adapted encoder.
    let plain = TrainConfig { dapt_epochs: 0, ..cfg.clone() };
    train(&data_dir, &plain, &tmp.path().join("m3"), false).unwrap();
    assert_ne!(bytes(&out), bytes(&tmp.path().join("m3")));

    // An ensemble after one pretraining: each member starts from the adapted encoder (the
    // member with the run's seed is the single model above, byte for byte), each member's
    // `training_config.json` names the configured base model and its own seed.
    let ens_cfg = TrainConfig { seeds: vec![cfg.seed, cfg.seed + 1], ..cfg.clone() };
    let ens = tmp.path().join("ens");
    let es = train(&data_dir, &ens_cfg, &ens, false).unwrap();
    assert_eq!(es.dapt.as_ref().map(|d| d.steps), Some(42), "one pretraining for the ensemble");
    assert_eq!(es.members.len(), 2);
    assert!(!ens.join("dapt-base").exists(), "the adapted copy is removed");
    assert_eq!(bytes(&ens.join(format!("member-{}", cfg.seed))), bytes(&out));
    for seed in [cfg.seed, cfg.seed + 1] {
        let member: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(ens.join(format!("member-{seed}")).join("training_config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(member["train"]["base_model"], base.to_string_lossy().as_ref());
        assert_eq!(
            (member["train"]["seed"].as_u64(), member["train"]["seeds"].as_array().map(Vec::len)),
            (Some(seed), Some(0))
        );
    }
    crate::score::Scorer::load(&ens, &candle_core::Device::Cpu)
        .expect("the ensemble loads without its pretraining copy");

    // A scoring stage that would fail on a missing file fails before the pretraining runs.
    let needs = TrainConfig {
        unlabelled: true,
        corruption_pairs: 1.0,
        objective: Some(Objective::GradedPairwise),
        ..cfg.clone()
    };
    let err = train(&data_dir, &needs, &tmp.path().join("nu"), false).unwrap_err().to_string();
    assert!(err.contains("unlabelled.jsonl") && err.contains("[dataset] unlabelled = N"), "{err}");
    assert!(!tmp.path().join("nu").join("dapt-base").exists(), "no pretraining ran");

    // Bad settings name the key.
    let bad = TrainConfig { dapt_mask_probability: 1.5, ..cfg.clone() };
    let err = train(&data_dir, &bad, &tmp.path().join("bad"), false).unwrap_err().to_string();
    assert!(err.contains("dapt_mask_probability"), "{err}");
}
