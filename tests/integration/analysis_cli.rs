//! The analysis commands on a small store whose figures scipy / scikit-learn computed
//! (`scripts/reference/reference_analysis.py` wrote `tests/fixtures/analysis/`).

use serde_json::Value;

use crate::cli_support::{bin, json};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/analysis");

fn store() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    bin(d.path()).args(["ingest", "logs", &format!("{FIXTURES}/logs.jsonl")]).assert().success();
    bin(d.path()).args(["ingest", "feedback", &format!("{FIXTURES}/feedback.jsonl")]).assert().success();
    d
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(format!("{FIXTURES}/expected.json")).unwrap()).unwrap()
}

fn close(got: &Value, want: &Value, rel: f64, what: &str) {
    let (g, w) = (got.as_f64().unwrap_or_else(|| panic!("{what}: {got}")), want.as_f64().unwrap());
    assert!((g - w).abs() <= rel * w.abs().max(1e-300), "{what}: got {g}, scipy {w}");
}

#[test]
fn correlate_matches_scipy() {
    let d = store();
    let e = expected();
    let c = json(bin(d.path()).args(["correlate"]));
    assert_eq!(c["n_samples"], e["n_samples"]);
    for k in ["pearson_r", "spearman_r", "kendall_tau"] {
        close(&c[k], &e[k], 1e-9, k);
    }
    for k in ["pearson_p", "spearman_p", "kendall_p"] {
        close(&c[k], &e[k], 1e-6, k);
    }
    close(&c["pearson_ci"][0], &e["pearson_ci"][0], 1e-9, "pearson_ci lower");
    close(&c["pearson_ci"][1], &e["pearson_ci"][1], 1e-9, "pearson_ci upper");
}

#[test]
fn the_seed_bugs_stay_fixed() {
    let d = store();
    let e = expected();
    // A thumbs-up does not win over everything: t1 averages 5, 1 and 2.
    let s = json(bin(d.path()).args(["summary", "t1"]));
    close(&s["human_score"], &e["t1_human"], 1e-12, "t1 human score");
    // Ratings count by their value: t2 (score 0.95, rating 1) is a disagreement.
    let r = json(bin(d.path()).args(["disagreements", "--limit", "100"]));
    assert_eq!(
        r["evaluator_good_human_bad"].as_u64().unwrap() + r["evaluator_bad_human_good"].as_u64().unwrap(),
        e["disagreements"].as_u64().unwrap()
    );
    let ids: Vec<&str> = r["rows"].as_array().unwrap().iter().map(|x| x["request_id"].as_str().unwrap()).collect();
    assert!(ids.contains(&"t2"), "{ids:?}");
    assert_eq!(r["n_labelled"], e["n_labelled"]);
    // implicit_discard carries no score by default: t3 is not in the correlation ...
    let c = json(bin(d.path()).args(["correlate", "--cohort", "c"]));
    assert_eq!(c["n_samples"], 0);
    assert!(c["undefined"]["spearman"].as_str().unwrap().contains('3'), "{c}");
    // ... but counts once the policy maps it.
    let cfg = d.path().join("p.toml");
    std::fs::write(&cfg, "[human]\nimplicit_discard = 2\n").unwrap();
    let c = json(bin(d.path()).args(["correlate", "--config"]).arg(&cfg));
    assert_eq!(c["n_samples"], e["n_samples"].as_u64().unwrap() + 1);
}

#[test]
fn export_writes_every_disagreement_with_text() {
    let d = store();
    let r = json(bin(d.path()).args(["disagreements", "--limit", "1", "--export", "dis.jsonl"]));
    assert_eq!(r["rows"].as_array().unwrap().len(), 1);
    let text = std::fs::read_to_string(d.path().join("dis.jsonl")).unwrap();
    let rows: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len() as u64, expected()["disagreements"].as_u64().unwrap());
    assert!(
        rows.iter().all(|r| r["prompt"].is_string() && r["output"].is_string() && r["human_says_good"].is_boolean())
    );
}

#[test]
fn calibration_matches_sklearn() {
    let d = store();
    let e = expected();
    let c = json(bin(d.path()).args(["calibration", "--bins", "5"]));
    assert_eq!(c["n_labelled"], e["n_labelled"]);
    close(&c["report"]["brier"], &e["brier"], 1e-9, "brier");
    close(&c["report"]["roc_auc"], &e["roc_auc"], 1e-9, "roc_auc");
    assert_eq!(c["report"]["uniform"]["bins"].as_array().unwrap().len(), 5);
}

#[test]
fn correlate_by_cohort_and_evaluator_choice() {
    let d = store();
    let c = json(bin(d.path()).args(["correlate", "--by", "cohort", "--bootstrap", "200", "--group-key", "group_id"]));
    let groups: Vec<&str> = c["by"].as_array().unwrap().iter().map(|g| g["group"].as_str().unwrap()).collect();
    assert_eq!(groups, vec!["a", "b"]);
    let b = &c["bootstrap"];
    assert!(b["spearman_ci"][0].as_f64().unwrap() <= c["spearman_r"].as_f64().unwrap());
    assert!(c["group_level"]["groups_used"].as_u64().unwrap() > 0);
    // Same seed, same interval.
    let again =
        json(bin(d.path()).args(["correlate", "--by", "cohort", "--bootstrap", "200", "--group-key", "group_id"]));
    assert_eq!(c, again);
    // A second evaluator makes the default ambiguous.
    std::fs::write(
        d.path().join("l2.jsonl"),
        r#"{"request_id": "x1", "timestamp": "2026-05-21T00:00:00Z", "prompt": "p", "output": "o", "eval_scores": {"overall": 0.3}, "evaluator": "judge-v2"}"#,
    )
    .unwrap();
    bin(d.path()).args(["ingest", "logs", "l2.jsonl"]).assert().success();
    bin(d.path())
        .args(["correlate"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("several evaluators (baseline, judge-v2)"));
    let c = json(bin(d.path()).args(["correlate", "--evaluator", "baseline"]));
    assert_eq!(c["n_samples"], expected()["n_samples"]);
}

#[test]
fn impact_matches_scipy_welch_and_mann_whitney() {
    let d = store();
    let e = &expected()["impact"];
    let r =
        json(bin(d.path()).args(["impact", "--before", "2026-05-15", "--after", "2026-05-15", "--bootstrap", "500"]));
    close(&r["human_scores"]["welch"]["statistic"], &e["human_welch_t"], 1e-9, "welch t");
    close(&r["human_scores"]["welch"]["p_value"], &e["human_welch_p"], 1e-6, "welch p");
    close(&r["human_scores"]["mann_whitney"]["u"], &e["human_mwu_u"], 1e-12, "U");
    close(&r["human_scores"]["mann_whitney"]["p_value"], &e["human_mwu_p"], 1e-6, "U p");
    close(&r["eval_scores"]["welch"]["statistic"], &e["eval_welch_t"], 1e-9, "eval welch t");
    close(&r["eval_scores"]["mean_baseline"], &e["eval_mean_before"], 1e-12, "mean before");
    close(&r["eval_scores"]["mean_treatment"], &e["eval_mean_after"], 1e-12, "mean after");
    assert_eq!(r["eval_significant"], false);
    // The metadata split selects the same requests here.
    let m = json(bin(d.path()).args(["impact", "--metadata", "prompt_version=v3:v4", "--bootstrap", "500"]));
    assert_eq!(m["eval_scores"]["n_baseline"], 20);
    bin(d.path()).args(["impact", "--metadata", "prompt_version"]).assert().code(2);
    bin(d.path()).args(["impact"]).assert().code(2);
}

#[test]
fn check_gate_exit_codes_and_junit() {
    let d = store();
    let pass = d.path().join("pass.toml");
    std::fs::write(&pass, "[thresholds]\nmin_spearman_r = 0.5\nmin_n_samples = 40\nmax_disagreement_rate = 0.2\n")
        .unwrap();
    bin(d.path()).args(["check", "--config"]).arg(&pass).assert().code(0);
    let fail = d.path().join("fail.toml");
    std::fs::write(
        &fail,
        "[thresholds]\nmin_spearman_r = 0.9\nmax_ece = 0.5\n[thresholds.cohorts.a]\nmin_n_samples = 1000\n",
    )
    .unwrap();
    bin(d.path())
        .args(["check", "--junit", "j.xml", "--config"])
        .arg(&fail)
        .assert()
        .code(1)
        .stdout(predicates::str::contains("FAIL"));
    let x = std::fs::read_to_string(d.path().join("j.xml")).unwrap();
    assert!(x.contains("tests=\"3\" failures=\"2\""), "{x}");
    assert!(x.contains("name=\"cohort a: n_samples\""), "{x}");
    let bad = d.path().join("bad.toml");
    std::fs::write(&bad, "[thresholds]\nmin_spearmen_r = 0.3\n").unwrap();
    bin(d.path())
        .args(["check", "--config"])
        .arg(&bad)
        .assert()
        .code(2)
        .stderr(predicates::str::contains("min_spearmen_r"));
}

#[test]
fn bias_reports_rates_per_cohort() {
    let d = store();
    let b = json(bin(d.path()).args(["bias"]));
    let cohorts = b["cohorts"].as_array().unwrap();
    let names: Vec<&str> = cohorts.iter().map(|c| c["cohort"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["a", "b", "c"]);
    assert_eq!(cohorts[2]["implicit_rate"], 1.0);
    assert_eq!(cohorts[2]["explicit_rate"], 0.0);
    assert_eq!(cohorts[0]["requests"], 21);
}
