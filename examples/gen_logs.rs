//! A tiny deterministic generator of eval logs and feedback events (JSON Lines), for benchmarks.
//!
//! `cargo run --release --example gen_logs -- N_LOGS N_FEEDBACK OUT_DIR [SEED]` writes
//! `OUT_DIR/logs.jsonl` and `OUT_DIR/feedback.jsonl`. Same arguments, same bytes. About 1% of the
//! feedback points at requests that have no log (orphans); events carry explicit `event_id`s.
//! (Kept under examples/ so as not to clash with the generator binary on main.)

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

const COHORTS: [&str; 4] = ["free", "pro", "enterprise", "trial"];
const USE_CASES: [&str; 3] = ["chat", "code", "summarise"];
const TYPES: [&str; 7] = [
    "explicit_thumbs_up",
    "explicit_thumbs_down",
    "explicit_rating",
    "explicit_text_comment",
    "implicit_usage",
    "implicit_edit",
    "implicit_discard",
];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n_logs: u64 = args.first().context("usage: gen_logs N_LOGS N_FEEDBACK OUT_DIR [SEED]")?.parse()?;
    let n_feedback: u64 = args.get(1).context("N_FEEDBACK missing")?.parse()?;
    let dir = PathBuf::from(args.get(2).context("OUT_DIR missing")?);
    let seed: u64 = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(7);
    std::fs::create_dir_all(&dir)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let start = 1_778_000_000i64; // 2026-05-05
    let span = 30 * 86_400i64;

    let mut w = BufWriter::with_capacity(1 << 20, File::create(dir.join("logs.jsonl"))?);
    for i in 0..n_logs {
        let cohort = COHORTS[rng.random_range(0..COHORTS.len())];
        let quality: f64 = rng.random();
        let ts = chrono::DateTime::from_timestamp(start + (i as i64 * span) / n_logs.max(1) as i64, 0)
            .context("timestamp")?;
        let row = json!({
            "request_id": format!("req-{i:09}"),
            "timestamp": ts.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "prompt": format!("Question {i}: how do I do thing {} with option {}?", i % 977, i % 13),
            "output": format!("Answer {i}: use approach {} and check step {}.", i % 101, i % 7),
            "eval_scores": {"overall": (quality * 1000.0).round() / 1000.0, "coherence": rng.random_range(1..=5)},
            "evaluator": "baseline",
            "metadata": {
                "user_cohort": cohort,
                "user_id": format!("u{}", rng.random_range(0..100_000)),
                "use_case": USE_CASES[(i % 3) as usize],
                "prompt_version": if i % 2 == 0 { "v1" } else { "v2" },
            },
        });
        serde_json::to_writer(&mut w, &row)?;
        w.write_all(b"\n")?;
    }
    w.flush()?;

    let mut w = BufWriter::with_capacity(1 << 20, File::create(dir.join("feedback.jsonl"))?);
    for j in 0..n_feedback {
        let orphan = rng.random_range(0..100) == 0;
        let req = if orphan { n_logs + j } else { rng.random_range(0..n_logs.max(1)) };
        let t = TYPES[rng.random_range(0..TYPES.len())];
        let value = match t {
            "explicit_rating" => json!(rng.random_range(1..=5)),
            "explicit_text_comment" => json!(format!("comment {j}")),
            "explicit_thumbs_up" | "explicit_thumbs_down" => json!(true),
            _ => json!(rng.random_bool(0.7)),
        };
        let ts = chrono::DateTime::from_timestamp(start + span + (j as i64 % span), 0).context("timestamp")?;
        let row = json!({
            "event_id": format!("ev-{j:09}"),
            "request_id": format!("req-{req:09}"),
            "feedback_type": t,
            "value": value,
            "user_id": format!("u{}", rng.random_range(0..100_000)),
            "timestamp": ts.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        });
        serde_json::to_writer(&mut w, &row)?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    Ok(())
}
