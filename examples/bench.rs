//! Training and scoring throughput of evalloop on a base model, for `scripts/bench/bench-train.sh`.
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo run --release --example bench -- BASE_DIR [TRAIN_STEPS] [SCORE_BATCHES]
//! ```
//! Training: the real `train()` loop (full fine-tuning, dropout on, AdamW, batch 16, every pair
//! truncated to exactly 128 tokens); the first step is left out as warmup. Scoring:
//! `Scorer::score_pairs` (tokenization included), batch 32 x 128 tokens, in fp32 and then with
//! int8 linear layers (`Precision::Int8`). Prints one JSON line.
//! `SHARDS` sets `[train] data_parallel` (default 0: one shard per thread).
#![allow(clippy::print_stdout)]
// A benchmark script: its result is its stdout.

use std::time::Instant;

/// The `evalloop` binary's allocator (src/main.rs), so that the benchmark measures what the
/// `train` and `score` commands do (glibc's malloc returns the large activation buffers to the
/// kernel and page-faults them back in on every step).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::{Context, Result};
use evalloop::score::Scorer;
use evalloop::train::{TrainConfig, train};

/// A pair long enough that longest-first truncation cuts it to 128 tokens.
fn long_pair(i: usize) -> (String, String) {
    let prompt = format!("question {i}: ") + &"please explain how the system handles requests ".repeat(12);
    let output = format!("answer {i}: ") + &"the service validates input and returns a helpful reply ".repeat(12);
    (prompt, output)
}

fn main() -> Result<()> {
    evalloop::model::alloc::candle_ops_inline();
    evalloop::model::alloc::keep_freed_memory();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let base = args.first().context("usage: bench BASE_DIR [TRAIN_STEPS] [SCORE_BATCHES]")?;
    let steps: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(4);
    let score_batches: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(4);
    let tmp = std::env::temp_dir().join(format!("evalloop-bench-{}", std::process::id()));
    let data = tmp.join("data");
    std::fs::create_dir_all(&data)?;
    let batch = 16;
    let n = batch * (steps + 1);
    let mut lines = String::new();
    for i in 0..n {
        let (p, o) = long_pair(i);
        lines.push_str(
            &serde_json::json!({"request_id": format!("r{i}"), "prompt": p, "output": o,
                "label": (i % 2) as f64, "weight": 1.0, "cohort": null, "group": "g",
                "is_disagreement": false})
            .to_string(),
        );
        lines.push('\n');
    }
    std::fs::write(data.join("train.jsonl"), lines)?;
    let config = evalloop::dataset::DatasetConfig { label: evalloop::files::LabelKind::Binary, ..Default::default() };
    std::fs::write(data.join("dataset_card.json"), evalloop::files::DatasetCard::hand_made(config).to_json()?)?;
    let out = tmp.join("model");
    let cfg = TrainConfig {
        base_model: base.clone(),
        epochs: 1,
        batch_size: batch,
        max_length: 128,
        log_every: 1,
        data_parallel: std::env::var("SHARDS").ok().map(|s| s.parse()).transpose()?.unwrap_or(0),
        ..Default::default()
    };
    train(&data, &cfg, &out, false)?;
    // examples_per_sec in metrics.jsonl is cumulative since the start of the loop.
    let times: Vec<f64> = std::fs::read_to_string(out.join("metrics.jsonl"))?
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == "train")
        .map(|v| {
            let k = v["step"].as_f64().unwrap_or(0.0);
            k * batch as f64 / v["examples_per_sec"].as_f64().unwrap_or(f64::NAN)
        })
        .collect();
    let train_eps = (batch * (times.len() - 1)) as f64 / (times[times.len() - 1] - times[0]);

    let scorer = Scorer::load(&out, &candle_core::Device::Cpu)?.with_batch_size(32);
    let pairs: Vec<(String, String)> = (0..32 * score_batches).map(long_pair).collect();
    scorer.score_pairs(&pairs[..32])?; // warmup
    let t = Instant::now();
    let fp32 = scorer.score_pairs(&pairs)?;
    let score_sps = pairs.len() as f64 / t.elapsed().as_secs_f64();
    // The same scoring with int8 linear layers (`--precision int8`).
    let scorer = scorer.with_precision(evalloop::model::Precision::Int8)?;
    scorer.score_pairs(&pairs[..32])?; // warmup (quantizes the weights)
    let t = Instant::now();
    let int8 = scorer.score_pairs(&pairs)?;
    let int8_sps = pairs.len() as f64 / t.elapsed().as_secs_f64();
    let rho = evalloop::stats::corr::spearman(&fp32, &int8).map(|c| c.estimate).unwrap_or(f64::NAN);
    println!(
        "{}",
        serde_json::json!({"impl": "evalloop-candle", "train_examples_per_sec": train_eps,
            "score_seq_per_sec": score_sps, "int8_score_seq_per_sec": int8_sps,
            "int8_spearman_vs_fp32": rho, "train_steps_timed": times.len() - 1,
            "score_seqs_timed": pairs.len()})
    );
    std::fs::remove_dir_all(&tmp).ok();
    Ok(())
}
