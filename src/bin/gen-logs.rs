//! gen-logs: synthetic eval logs and feedback of any size, for tests and benchmarks.
//!
//! Requests are spread over cohorts whose feedback rates differ (a fixed table, cohort
//! `enterprise` leaving feedback ten times as often as `free`); each request has a latent quality,
//! the evaluator score is that quality plus noise, and feedback (ratings, thumbs, comments,
//! implicit signals) follows the quality. Output is deterministic given `--seed`.
//!
//! Usage: gen-logs --logs N --feedback M --out DIR [--seed S] [--days D]
#![allow(clippy::print_stdout)]

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Parser;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Cohorts with their share of requests and relative feedback rate.
const COHORTS: &[(&str, f64, f64)] =
    &[("free", 0.55, 0.5), ("pro", 0.25, 1.5), ("enterprise", 0.12, 5.0), ("internal", 0.08, 3.0)];
const USE_CASES: &[&str] = &["summarize", "qa", "rewrite", "classify"];
const WORDS: &[&str] = &[
    "the",
    "report",
    "customer",
    "model",
    "quarterly",
    "revenue",
    "summary",
    "shows",
    "growth",
    "risk",
    "team",
    "product",
    "launch",
    "delay",
    "support",
    "ticket",
    "answer",
    "question",
    "policy",
    "update",
    "market",
    "user",
    "feedback",
    "quality",
    "issue",
    "resolved",
    "pending",
    "review",
    "draft",
    "final",
];

#[derive(Parser)]
#[command(about = "Writes synthetic logs.jsonl and feedback.jsonl")]
struct Args {
    /// Number of eval logs.
    #[arg(long, default_value_t = 10_000)]
    logs: u64,
    /// Number of feedback events.
    #[arg(long, default_value_t = 2_000)]
    feedback: u64,
    /// Output directory (created).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Requests are spread over this many days ending 2026-05-31.
    #[arg(long, default_value_t = 28)]
    days: u64,
}

fn words(rng: &mut ChaCha8Rng, n: usize, out: &mut String) {
    for i in 0..n {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(WORDS[rng.random_range(0..WORDS.len())]);
    }
}

/// The latent quality of request `i` in [0, 1], reproducible without storing it.
fn quality(seed: u64, i: u64) -> f64 {
    let mut r = ChaCha8Rng::seed_from_u64(seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    r.random::<f64>()
}

fn cohort_of(i: u64) -> usize {
    // Deterministic assignment by share: a cheap hash of i into [0, 1).
    let h = (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64 / (1u64 << 53) as f64;
    let mut acc = 0.0;
    for (k, (_, share, _)) in COHORTS.iter().enumerate() {
        acc += share;
        if h < acc {
            return k;
        }
    }
    COHORTS.len() - 1
}

fn main() -> Result<()> {
    let a = Args::parse();
    if a.logs == 0 && a.feedback > 0 {
        bail!("--feedback needs at least one log");
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let end = 1_780_185_600i64; // 2026-05-31T00:00:00Z
    let span = (a.days.max(1) * 86_400) as i64;
    let mut rng = ChaCha8Rng::seed_from_u64(a.seed);

    let logs_path = a.out.join("logs.jsonl");
    let mut w = BufWriter::with_capacity(1 << 20, File::create(&logs_path).context("creating logs.jsonl")?);
    let mut prompt = String::new();
    let mut output = String::new();
    for i in 0..a.logs {
        let q = quality(a.seed, i);
        let noise: f64 = rng.random::<f64>() - 0.5;
        let overall = (0.55 * q + 0.45 * (0.5 + noise)).clamp(0.0, 1.0);
        let ts = end - span + (i as i64 * span) / a.logs.max(1) as i64;
        let t = chrono::DateTime::from_timestamp(ts, 0).unwrap_or_default().format("%Y-%m-%dT%H:%M:%SZ");
        prompt.clear();
        output.clear();
        words(&mut rng, 12, &mut prompt);
        words(&mut rng, 20, &mut output);
        let cohort = COHORTS[cohort_of(i)].0;
        writeln!(
            w,
            r#"{{"request_id":"req-{i:09}","timestamp":"{t}","prompt":"{prompt}","output":"{output}","eval_scores":{{"overall":{overall:.4},"coherence":{:.3}}},"evaluator":"baseline","metadata":{{"user_cohort":"{cohort}","user_id":"u{}","use_case":"{}","prompt_version":"v{}","group_id":"g{}"}}}}"#,
            1.0 + 4.0 * q,
            i % 5000,
            USE_CASES[(i % USE_CASES.len() as u64) as usize],
            3 + (i * 2 / a.logs.max(1)),
            i / 4,
        )?;
    }
    w.flush()?;

    // Feedback: choose a cohort in proportion to share x rate, then a request of that cohort by
    // rejection sampling, then an event that follows the request's quality.
    let weights: Vec<f64> = COHORTS.iter().map(|(_, s, r)| s * r).collect();
    let total: f64 = weights.iter().sum();
    let fb_path = a.out.join("feedback.jsonl");
    let mut w = BufWriter::with_capacity(1 << 20, File::create(&fb_path).context("creating feedback.jsonl")?);
    for j in 0..a.feedback {
        let mut x = rng.random::<f64>() * total;
        let mut c = 0;
        while c + 1 < weights.len() && x >= weights[c] {
            x -= weights[c];
            c += 1;
        }
        let i = loop {
            let i = rng.random_range(0..a.logs);
            if cohort_of(i) == c {
                break i;
            }
        };
        let q = quality(a.seed, i);
        let kind: f64 = rng.random();
        let ts = end + (j as i64 * 3600) / a.feedback.max(1) as i64;
        let t = chrono::DateTime::from_timestamp(ts, 0).unwrap_or_default().format("%Y-%m-%dT%H:%M:%SZ");
        let user = rng.random_range(0..5000);
        let (ftype, value) = if kind < 0.45 {
            let r = (1.0 + 4.0 * q + (rng.random::<f64>() - 0.5) * 1.5).round().clamp(1.0, 5.0);
            ("explicit_rating", format!("{r}"))
        } else if kind < 0.75 {
            let good = rng.random::<f64>() < q;
            (if good { "explicit_thumbs_up" } else { "explicit_thumbs_down" }, "true".to_string())
        } else if kind < 0.8 {
            ("explicit_text_comment", format!("\"{}\"", if q > 0.5 { "helpful, thanks" } else { "not what I asked" }))
        } else if q > 0.6 {
            ("implicit_usage", "true".to_string())
        } else if q > 0.3 {
            ("implicit_edit", "true".to_string())
        } else {
            ("implicit_discard", "true".to_string())
        };
        writeln!(
            w,
            r#"{{"event_id":"ev-{j:09}","request_id":"req-{i:09}","feedback_type":"{ftype}","value":{value},"user_id":"u{user}","timestamp":"{t}"}}"#
        )?;
    }
    w.flush()?;
    println!(
        "wrote {} logs to {} and {} feedback events to {}",
        a.logs,
        logs_path.display(),
        a.feedback,
        fb_path.display()
    );
    Ok(())
}
