//! Writes evalloop's logits for a few sample pairs as JSON, for `scripts/reference/check_hf_parity.py`.
//!
//! ```text
//! cargo run --release --example hf_logits -- MODEL_DIR OUT.json [--train-from BASE_DIR]
//! ```
//! With `--train-from`, first fine-tunes BASE_DIR for a few steps on synthetic pairs into
//! MODEL_DIR (so the check covers a directory written by `train`, not only a base model).
#![allow(clippy::print_stdout)]

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use evalloop::score::Scorer;
use evalloop::train::{TrainConfig, train};

fn sample_pairs() -> Vec<(String, String)> {
    [
        ("What is the capital of France?", "Paris is the capital of France."),
        ("What is the capital of France?", "I think it's Berlin, or maybe Madrid."),
        ("Summarise the ticket.", "The customer cannot log in after the password reset; escalated."),
        ("Write a haiku about rain.", "Rain on the tin roof / a small drum for sleeping cats / the gutters sing on"),
        ("Translate 'thank you' to German.", "Danke."),
        ("hi", &"a very long answer that goes on and on ".repeat(40)),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect()
}

fn write_dataset(dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut lines = String::new();
    for i in 0..32 {
        let good = i % 2 == 0;
        let out = if good { "a correct and helpful answer" } else { "a wrong and useless answer" };
        lines.push_str(
            &serde_json::json!({
                "request_id": format!("r{i}"), "prompt": format!("question number {i}"),
                "output": out, "label": if good { 1.0 } else { 0.0 }, "weight": 1.0,
                "cohort": null, "group": "g", "is_disagreement": false,
            })
            .to_string(),
        );
        lines.push('\n');
    }
    for split in ["train", "validation"] {
        std::fs::write(dir.join(format!("{split}.jsonl")), &lines)?;
    }
    let config = evalloop::dataset::DatasetConfig { label: evalloop::files::LabelKind::Binary, ..Default::default() };
    std::fs::write(dir.join("dataset_card.json"), evalloop::files::DatasetCard::hand_made(config).to_json()?)?;
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 2 && !(args.len() == 4 && args[2] == "--train-from") {
        bail!("usage: hf_logits MODEL_DIR OUT.json [--train-from BASE_DIR]");
    }
    let model_dir = PathBuf::from(&args[0]);
    let out = PathBuf::from(&args[1]);
    if args.len() == 4 {
        let data = tempfile_dir()?;
        write_dataset(&data)?;
        let cfg = TrainConfig {
            base_model: args[3].clone(),
            epochs: 1,
            max_steps: 3,
            batch_size: 8,
            max_length: 128,
            learning_rate: 1e-4,
            ..Default::default()
        };
        train(&data, &cfg, &model_dir, false).context("training the parity model")?;
        std::fs::remove_dir_all(&data).ok();
    }
    let scorer = Scorer::load(&model_dir, &candle_core::Device::Cpu)?;
    let pairs = sample_pairs();
    let logits = scorer.logits_pairs(&pairs)?;
    let scores = scorer.score_pairs(&pairs)?;
    let json = serde_json::json!({"pairs": pairs, "logits": logits, "scores": scores});
    std::fs::write(&out, serde_json::to_string_pretty(&json)?)?;
    eprintln!("wrote {} logits to {}", logits.len(), out.display());
    Ok(())
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("evalloop-parity-data-{}", std::process::id()));
    Ok(dir)
}
