//! `[simulate.raters]` on the shipped Newsroom sample, on the real binary: the defaults change
//! nothing, the same seed gives the same bytes, the review panel rates the documented share of
//! requests several times over, and `agreement` measures people's agreement and the human
//! ceiling on what it wrote.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::cli_support::{evalloop, json};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Simulates the sample into `dir/out` with `toml` as the config file.
fn simulate(dir: &Path, out: &str, toml: &str) -> Value {
    std::fs::write(dir.join(format!("{out}.toml")), toml).unwrap();
    let mut c = evalloop(dir);
    c.arg("--config").arg(format!("{out}.toml"));
    c.args(["simulate", "--judgements"]).arg(root().join("data/example/newsroom-sample.jsonl"));
    c.args(["--dimension", "coherence", "--dimensions", "relevance", "--out", out, "--seed", "5"]);
    json(&mut c)
}

fn read(dir: &Path, f: &str) -> Vec<u8> {
    std::fs::read(dir.join(f)).unwrap()
}

const PANEL: &str = "[simulate.raters]\nmulti_rated = 0.4\nper_request = 3\npanel = 12\nuser_bias_sd = 0.4\n";

#[test]
fn the_defaults_change_nothing_and_a_seed_gives_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    simulate(dir, "none", "");
    let explicit = "[simulate.raters]\nmulti_rated = 0.0\nuser_bias_sd = 0.0\npanel = 9\n";
    let off = simulate(dir, "off", explicit);
    assert!(off.get("panel_requests").is_none());
    for f in ["logs.jsonl", "feedback.jsonl", "truth.jsonl", "heldout.jsonl", "simulate.json"] {
        assert!(read(dir, &format!("none/{f}")) == read(dir, &format!("off/{f}")), "{f} changed with the defaults");
    }
    simulate(dir, "a", PANEL);
    simulate(dir, "b", PANEL);
    for f in ["logs.jsonl", "feedback.jsonl", "truth.jsonl", "simulate.json"] {
        assert!(read(dir, &format!("a/{f}")) == read(dir, &format!("b/{f}")), "{f} differs for one seed");
    }
    // The logs and the truth do not depend on the raters.
    assert!(read(dir, "a/logs.jsonl") == read(dir, "none/logs.jsonl"));
    assert!(read(dir, "a/feedback.jsonl") != read(dir, "none/feedback.jsonl"));
}

#[test]
fn the_panel_rates_the_share_and_agreement_measures_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let s = simulate(dir, "sim", PANEL);
    let logs = s["logs"].as_u64().unwrap();
    let panel = s["panel_requests"].as_u64().unwrap();
    let share = panel as f64 / logs as f64;
    assert!((0.3..=0.5).contains(&share), "{panel} of {logs} requests multi-rated at 0.4");
    // Three reviewers, two dimensions each.
    assert_eq!(s["panel_ratings"].as_u64().unwrap(), panel * 3 * 2);

    let feedback: Vec<Value> = std::fs::read_to_string(dir.join("sim/feedback.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut raters: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for e in feedback.iter().filter(|e| e["feedback_type"] == "explicit_rating" && e.get("dimension").is_none()) {
        raters.entry(e["request_id"].as_str().unwrap()).or_default().insert(e["user_id"].as_str().unwrap());
    }
    let multi = raters.values().filter(|r| r.len() >= 3).count() as u64;
    assert!(multi >= panel, "{multi} requests with 3+ raters, {panel} reviewed");
    let reviewers: BTreeSet<&str> = raters.values().flatten().filter(|u| u.starts_with("rater-")).copied().collect();
    assert_eq!(reviewers.len(), 12);

    let db = dir.join("t.db");
    for (kind, f) in [("logs", "sim/logs.jsonl"), ("feedback", "sim/feedback.jsonl")] {
        evalloop(dir).arg("--db").arg(&db).args(["ingest", kind, f]).assert().success();
    }
    let a = json(evalloop(dir).arg("--db").arg(&db).args(["agreement", "--bootstrap", "100"]));
    let r = &a["ratings"]["agreement"];
    assert!(r["items_used"].as_u64().unwrap() >= panel);
    let alpha = r["alpha"].as_f64().unwrap();
    assert!(alpha > 0.3 && alpha < 0.95, "alpha {alpha}");
    let c = &a["ratings"]["ceiling"];
    assert_eq!(c["evaluator"], "baseline-unigram-f1");
    assert!(c["raters_used"].as_u64().unwrap() >= 10, "{c}");
    let (ceiling, reached) = (c["person_vs_others"].as_f64().unwrap(), c["evaluator_vs_others"].as_f64().unwrap());
    assert!(ceiling > reached, "people agree with each other ({ceiling}) more than unigram F1 does ({reached})");
    let d =
        json(evalloop(dir).arg("--db").arg(&db).args(["agreement", "--bootstrap", "0", "--dimension", "relevance"]));
    assert!(d["ratings"]["agreement"]["items_used"].as_u64().unwrap() >= panel);
    assert!(d["ratings"]["agreement"]["alpha"].as_f64().is_some());
}
