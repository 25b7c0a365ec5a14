//! The human ceiling in the CI gate and the weekly loop, on the real binary: `check`'s
//! `min_human_alpha` passes and fails on alpha between people, and `run` warns, and reports the
//! ceiling beside the pre/post figures, when the labels are too noisy to judge an evaluator by.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::cli_support::{evalloop, text};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Simulates the Newsroom sample with a review panel whose reviewers are `noise_sd` noisy.
fn simulate(dir: &Path, noise_sd: f64) -> PathBuf {
    let toml = format!(
        "[simulate]\nholdout_groups = 0\n\n[simulate.raters]\nmulti_rated = 0.6\npanel = 8\nnoise_sd = {noise_sd}\n"
    );
    std::fs::write(dir.join("sim.toml"), toml).unwrap();
    let out = dir.join("sim");
    evalloop(dir)
        .args(["--config", "sim.toml", "simulate", "--judgements"])
        .arg(root().join("data/example/newsroom-sample.jsonl"))
        .args(["--dimension", "coherence", "--out"])
        .arg(&out)
        .assert()
        .success();
    out
}

fn check(dir: &Path, db: &Path, min: &str) -> (i32, Value) {
    std::fs::write(dir.join("ci.toml"), format!("[thresholds]\nmin_human_alpha = {min}\n")).unwrap();
    let o = evalloop(dir).arg("--db").arg(db).args(["--config", "ci.toml", "check", "--json"]).output().unwrap();
    (o.status.code().unwrap(), serde_json::from_slice(&o.stdout).unwrap())
}

#[test]
fn check_min_human_alpha_passes_fails_and_fails_when_undefined() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let sim = simulate(dir, 0.5);
    let db = dir.join("t.db");
    for kind in ["logs", "feedback"] {
        evalloop(dir)
            .arg("--db")
            .arg(&db)
            .args(["ingest", kind])
            .arg(sim.join(format!("{kind}.jsonl")))
            .assert()
            .success();
    }
    let (code, r) = check(dir, &db, "0.2");
    assert_eq!(code, 0, "{r}");
    let alpha = r["checks"][0]["value"].as_f64().unwrap();
    assert_eq!(r["checks"][0]["name"], "human_alpha");
    let (code, r) = check(dir, &db, &format!("{}", alpha + 0.01));
    assert_eq!((code, &r["pass"]), (1, &Value::Bool(false)), "{r}");

    // The shipped example: one person per request, so alpha is undefined and the check fails.
    let one = dir.join("one.db");
    for kind in ["logs", "feedback"] {
        let f = root().join(format!("data/example/{kind}.jsonl"));
        evalloop(dir).arg("--db").arg(&one).args(["ingest", kind]).arg(f).assert().success();
    }
    let (code, r) = check(dir, &one, "0.2");
    assert_eq!(code, 1, "{r}");
    assert!(r["checks"][0]["reason"].as_str().unwrap().contains("two or more raters"), "{r}");
}

#[test]
fn run_warns_when_people_disagree_and_reports_the_ceiling() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let sim = simulate(dir, 2.0);
    let base = dir.join("base");
    evalloop::model::testutil::write_tiny_base(&base, 7, false);
    let cfg = format!(
        r#"[store]
db = "{db}"

[run]
ingest_logs = ["{sim}/logs.jsonl"]
ingest_feedback = ["{sim}/feedback.jsonl"]
out_dir = "{runs}"
min_human_alpha = 0.9
skip = ["gate"]

[dataset]
label = "graded"
group_key = "group_id"
train_fraction = 0.5
validation_fraction = 0.1

[train]
base_model = "{base}"
epochs = 1
batch_size = 8
max_length = 32
"#,
        db = dir.join("run.db").display(),
        sim = sim.display(),
        runs = dir.join("runs").display(),
        base = base.display(),
    );
    std::fs::write(dir.join("weekly.toml"), cfg).unwrap();
    let run_dir = dir.join("run");
    let text = text(evalloop(dir).args(["--config", "weekly.toml", "run", "--out"]).arg(&run_dir));
    assert!(text.contains("warning: people agree little with each other"), "{text}");
    let report: Value = serde_json::from_slice(&std::fs::read(run_dir.join("report.json")).unwrap()).unwrap();
    let h = &report["human_ceiling"];
    assert!(h["human_alpha"].as_f64().unwrap() < 0.9, "{h}");
    assert!(h["items"].as_u64().unwrap() > 50, "{h}");
    assert!(h["window"]["person_vs_others"].as_f64().is_some(), "{h}");
    assert!(h["warning"].as_str().unwrap().contains("too noisy to judge an evaluator by"));
    // Pre and post sit on the same held-out requests: the same ceiling when both are defined.
    if let (Some(a), Some(b)) = (h["pre"]["person_vs_others"].as_f64(), h["post"]["person_vs_others"].as_f64()) {
        assert_eq!(a, b);
    }
    let md = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    assert!(md.contains("### The human ceiling") && md.contains("**Warning**"), "{md}");
}
