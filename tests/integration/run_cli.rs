//! The weekly loop end to end on the real binary: the shipped example data, a tiny random BERT
//! as the base model (written in the test), every step, the run record, resume and the gate's
//! exit code.

use std::path::Path;

use serde_json::Value;

use crate::cli_support::{evalloop, json};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn config(dir: &Path, extra_run: &str) -> std::path::PathBuf {
    let base = dir.join("base");
    if !base.exists() {
        evalloop::model::testutil::write_tiny_base(&base, 7, false);
    }
    let ex = root().join("data/example");
    let text = format!(
        r#"[store]
db = "{db}"

[run]
ingest_logs = ["{ex}/logs.jsonl"]
ingest_feedback = ["{ex}/feedback.jsonl"]
out_dir = "{runs}"
group_key = "group_id"
{extra_run}

[dataset]
label = "graded"
group_key = "group_id"
train_fraction = 0.7
validation_fraction = 0.15

[train]
base_model = "{base}"
epochs = 1
batch_size = 8
max_length = 48
"#,
        db = dir.join("t.db").display(),
        ex = ex.display(),
        runs = dir.join("runs").display(),
        base = base.display(),
    );
    let p = dir.join(format!("weekly{}.toml", extra_run.len()));
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn weekly_loop_runs_every_step_records_the_run_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = config(dir, "");
    let run_dir = dir.join("run1");
    let o = json(evalloop(dir).arg("--config").arg(&cfg).args(["run", "--out"]).arg(&run_dir));
    for step in ["ingest", "dataset", "train", "score", "report"] {
        assert!(o["timings"][step].is_number(), "step {step} did not run: {o}");
    }
    assert!(o["promoted"].is_boolean());
    for f in [
        "report.json",
        "report.md",
        "report.html",
        "model/config.json",
        "model/model.safetensors",
        "dataset/test.jsonl",
    ] {
        assert!(run_dir.join(f).exists(), "{f} missing");
    }
    let report: Value = serde_json::from_slice(&std::fs::read(run_dir.join("report.json")).unwrap()).unwrap();
    let n = report["pre"]["n_samples"].as_u64().unwrap();
    assert!(n >= 10, "held-out split too small: {n}");
    assert_eq!(report["post"]["n_samples"].as_u64().unwrap(), n, "pre and post cover the same requests");
    assert!(report["gate"]["test"] == "williams");
    assert!(report["training"]["curves"].as_array().unwrap().len() > 1);
    let html = std::fs::read_to_string(run_dir.join("report.html")).unwrap();
    assert!(html.matches("<svg").count() >= 5, "plots missing from report.html");
    // The example logs span one ISO week: one point of agreement and human score.
    let weeks = report["history"]["points"].as_array().expect("history in report.json");
    assert_eq!(weeks.len(), 1);
    assert!(weeks[0]["human_score"].is_number() && weeks[0]["agreement"].is_number());
    assert!(html.contains("data-chart=\"agreement-by-week\"") && html.contains("data-chart=\"human-score-by-week\""));

    // The run is recorded, and the retrained evaluator's held-out scores are in the store.
    let runs = json(evalloop(dir).arg("--config").arg(&cfg).args(["runs", "list"]));
    assert_eq!(runs.as_array().unwrap().len(), 1);
    let run = &runs[0];
    assert_eq!(run["status"], "completed");
    assert_eq!(run["id"], o["run_id"]);
    assert!(run["dataset_card"]["splits"].is_object());
    let new_eval = format!("evalloop-{}", o["run_id"].as_str().unwrap());
    let c = json(evalloop(dir).arg("--config").arg(&cfg).args(["correlate", "--evaluator", &new_eval]));
    assert_eq!(c["n_samples"].as_u64().unwrap(), n);

    // Resuming the same run directory redoes nothing that is already there.
    let again = json(evalloop(dir).arg("--config").arg(&cfg).args(["run", "--out"]).arg(&run_dir));
    assert_eq!(again["run_id"], o["run_id"]);
    for step in ["ingest", "dataset", "train", "score"] {
        assert!(again["timings"].get(step).is_none(), "step {step} ran again: {again}");
    }
    assert_eq!(again["pre_spearman"], o["pre_spearman"]);
    assert_eq!(again["post_spearman"], o["post_spearman"]);
}

#[test]
fn gate_failure_exits_1_with_fail_on_regression() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // A margin no evaluator can clear.
    let cfg = config(dir, "margin = 2.0\nfail_on_regression = true\nskip = [\"report\"]");
    let out = evalloop(dir).arg("--config").arg(&cfg).arg("run").assert().code(1).get_output().stdout.clone();
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("kept the base evaluator") && text.contains("below margin 2"), "{text}");
    let runs = json(evalloop(dir).arg("--config").arg(&cfg).args(["runs", "list"]));
    assert_eq!(runs[0]["decision"], "kept_baseline");
    // A run made with another config is not resumed over.
    let other = config(dir, "");
    let run_dir = runs[0]["run_dir"].as_str().unwrap();
    evalloop(dir)
        .arg("--config")
        .arg(&other)
        .args(["run", "--out", run_dir])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("another config"));
}

/// The weekly loop with model selection: the recommended base configuration and a
/// self-supervised candidate on the example's unlabelled outputs. `train` keeps one of the two
/// (its files in model/), the report says which and on what figures, and the held-out scores
/// of whichever was kept (a self-supervised model's are not on the label scale) go through
/// every report section.
#[test]
fn weekly_loop_with_model_selection() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = config(dir, "");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("validation_fraction = 0.15\n", "validation_fraction = 0.15\nunlabelled = 200\n")
        + "objective = \"graded+pairwise\"\ncorruption_pairs = 1.0\ncorruption = \"swap\"\nunlabelled = true\n\
         keep_best = false\neval_metric = \"group_spearman\"\n\
         [[train.candidates]]\nname = \"self_supervised\"\nobjective = \"self_supervised\"\n";
    std::fs::write(&cfg, text).unwrap();
    let run_dir = dir.join("run");
    let o = json(evalloop(dir).arg("--config").arg(&cfg).args(["run", "--out"]).arg(&run_dir));
    assert!(o["post_spearman"].is_number(), "{o}");
    let metrics: Value = serde_json::from_slice(&std::fs::read(run_dir.join("model/metrics.json")).unwrap()).unwrap();
    let chosen = metrics["selection"]["chosen"].as_str().unwrap().to_string();
    assert!(chosen == "base" || chosen == "self_supervised", "{metrics}");
    let judged: Vec<&str> = metrics["selection"]["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["judged_on"].as_str().unwrap())
        .collect();
    assert_eq!(judged, ["validation", "train+validation"]);
    let kept = std::fs::read(run_dir.join("model/model.safetensors")).unwrap();
    assert_eq!(kept, std::fs::read(run_dir.join("model/candidates").join(&chosen).join("model.safetensors")).unwrap());
    let report: Value = serde_json::from_slice(&std::fs::read(run_dir.join("report.json")).unwrap()).unwrap();
    let line = report["training"]["selection"].as_str().unwrap();
    assert!(line.starts_with(&format!("{chosen} kept by ")) && line.contains("self_supervised "), "{line}");
    let md = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    assert!(md.contains("Model selection"), "report.md lacks the selection row");
}

/// With preferences in the store, the run's dataset has pairs, the retrained evaluator trains
/// on them, and the report compares both evaluators on the held-out pairs.
#[test]
fn weekly_loop_reports_pairwise_accuracy_on_held_out_preferences() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = config(dir, "");
    let ex = root().join("data/example");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        &format!("ingest_feedback = [\"{}/feedback.jsonl\"]", ex.display()),
        &format!("ingest_feedback = [\"{0}/feedback.jsonl\", \"{0}/preferences.jsonl\"]", ex.display()),
    ) + "objective = \"graded+pairwise\"\npreference_pairs = 1.0\n";
    assert!(text.contains("preferences.jsonl"));
    std::fs::write(&cfg, text).unwrap();
    let run_dir = dir.join("run");
    json(evalloop(dir).arg("--config").arg(&cfg).args(["run", "--out"]).arg(&run_dir));
    let pairs = std::fs::read_to_string(run_dir.join("dataset/pairs.jsonl")).unwrap();
    let held = pairs.lines().filter(|l| l.contains("\"split\":\"test\"")).count();
    assert!(held >= 10, "{held} held-out pairs");
    let report: Value = serde_json::from_slice(&std::fs::read(run_dir.join("report.json")).unwrap()).unwrap();
    let p = &report["preferences"];
    assert_eq!(p["pairs"].as_u64(), Some(held as u64), "{p}");
    for side in ["pre", "post"] {
        let a = p[side]["accuracy"].as_f64().unwrap_or_else(|| panic!("{side}: {p}"));
        assert!((0.0..=1.0).contains(&a) && p[side]["pairs"].as_u64().unwrap() > 0, "{p}");
    }
    let md = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    assert!(md.contains("### Preferences on held-out pairs"), "{md}");
}

/// The weekly loop with a base model of each non-BERT family (the parity fixtures of
/// tests/fixtures/encoders/): every step runs, and the model it leaves is in the family's
/// Hugging Face layout.
#[test]
fn weekly_loop_runs_on_every_encoder_family() {
    for (family, arch) in [
        ("roberta", "RobertaForSequenceClassification"),
        ("modernbert", "ModernBertForSequenceClassification"),
        ("deberta-v3", "DebertaV2ForSequenceClassification"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let base = dir.join("base");
        std::fs::create_dir_all(&base).unwrap();
        for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
            std::fs::copy(root().join("tests/fixtures/encoders").join(family).join(f), base.join(f)).unwrap();
        }
        let cfg = config(dir, "");
        let run_dir = dir.join("run");
        let o = json(evalloop(dir).arg("--config").arg(&cfg).args(["run", "--out"]).arg(&run_dir));
        for step in ["train", "score", "report"] {
            assert!(o["timings"][step].is_number(), "{family}: step {step} did not run: {o}");
        }
        assert!(o["post_spearman"].is_number(), "{family}: {o}");
        let config: Value = serde_json::from_slice(&std::fs::read(run_dir.join("model/config.json")).unwrap()).unwrap();
        assert_eq!(config["architectures"][0], arch, "{family}");
    }
}
