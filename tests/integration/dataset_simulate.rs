//! End to end: simulate on the shipped Newsroom sample -> ingest -> dataset build, on the real binary.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::cli_support::{evalloop, json};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn sample() -> PathBuf {
    root().join("data/example/newsroom-sample.jsonl")
}

fn lines(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn simulate(dir: &Path, out: &str, extra: &[&str]) -> Value {
    let mut c = evalloop(dir);
    c.args(["simulate", "--judgements"]).arg(sample()).args(["--dimension", "coherence", "--out", out]);
    c.args(extra);
    json(&mut c)
}

#[test]
fn simulate_ingest_build_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let s = simulate(dir, "sim", &["--seed", "3", "--holdout-groups", "4"]);
    assert_eq!(s["heldout_groups"].as_array().unwrap().len(), 4);
    let truth = lines(&dir.join("sim/truth.jsonl"));
    let logs = lines(&dir.join("sim/logs.jsonl"));
    let held = lines(&dir.join("sim/heldout.jsonl"));
    assert_eq!(truth.len(), 420);
    assert_eq!(logs.len() + held.len(), 420);
    assert_eq!(held.len() as u64, s["heldout_requests"].as_u64().unwrap());
    let held_groups: BTreeSet<&str> = held.iter().map(|h| h["group"].as_str().unwrap()).collect();
    assert_eq!(held_groups.len(), 4);
    for l in &logs {
        let g = l["metadata"]["group_id"].as_str().unwrap();
        assert!(!held_groups.contains(g), "held-out group {g} leaked into the logs");
        for k in ["user_cohort", "user_id", "system", "dataset", "use_case"] {
            assert!(l["metadata"][k].is_string(), "metadata.{k} missing");
        }
        let o = l["eval_scores"]["overall"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&o));
    }

    // Both files ingest with zero rejects.
    for (what, file) in [("logs", "sim/logs.jsonl"), ("feedback", "sim/feedback.jsonl")] {
        let r = json(evalloop(dir).args(["--db", "e.db", "ingest", what, file, "--strict"]));
        assert_eq!(r["rejected"], 0, "{what}: {r}");
        assert_eq!(r["orphaned"], 0, "{what}: {r}");
        assert!(r["stored"].as_u64().unwrap() > 0);
    }

    std::fs::write(
        dir.join("evalloop.toml"),
        "[store]\ndb = \"e.db\"\n\n[dataset]\nlabel = \"binary\"\nweighting = [\"ipw\", \"normalize\"]\n\
         group_key = \"group_id\"\nseed = 5\nmin_effective_size = 1.0\n",
    )
    .unwrap();
    let card = json(evalloop(dir).args(["--config", "evalloop.toml", "dataset", "build", "--out", "ds"]));
    assert_eq!(card["config"]["label"], "binary");
    let mut group_split: BTreeMap<String, &str> = BTreeMap::new();
    let mut total = 0;
    let mut train_weights = Vec::new();
    for split in ["train", "validation", "test"] {
        let rows = lines(&dir.join(format!("ds/{split}.jsonl")));
        total += rows.len();
        let mut prev = String::new();
        for r in &rows {
            let keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
            assert_eq!(
                keys,
                [
                    "cohort",
                    "evaluator_score",
                    "group",
                    "is_disagreement",
                    "label",
                    "output",
                    "prompt",
                    "request_id",
                    "weight"
                ]
            );
            assert!((0.0..=1.0).contains(&r["evaluator_score"].as_f64().unwrap()));
            let id = r["request_id"].as_str().unwrap().to_string();
            assert!(id > prev, "rows sorted by request_id");
            prev = id;
            assert!(matches!(r["label"].as_i64(), Some(0 | 1)));
            let g = r["group"].as_str().unwrap().to_string();
            assert!(!held_groups.contains(g.as_str()));
            assert_eq!(*group_split.entry(g.clone()).or_insert(split), split, "group {g} crosses splits");
            if split == "train" {
                train_weights.push(r["weight"].as_f64().unwrap());
            }
        }
    }
    assert!(total > 20, "only {total} examples");
    assert_eq!(card["examples"].as_u64().unwrap() as usize, total);
    let mean: f64 = train_weights.iter().sum::<f64>() / train_weights.len() as f64;
    assert!((mean - 1.0).abs() < 1e-4, "normalize: train mean weight {mean}");
    let md = std::fs::read_to_string(dir.join("ds/dataset_card.md")).unwrap();
    assert!(md.contains("effective size"));

    // Same config + same store = byte-identical output.
    evalloop(dir).args(["--config", "evalloop.toml", "dataset", "build", "--out", "ds2"]).assert().success();
    for f in ["train.jsonl", "validation.jsonl", "test.jsonl", "dataset_card.json", "dataset_card.md"] {
        let a = std::fs::read(dir.join("ds").join(f)).unwrap();
        let b = std::fs::read(dir.join("ds2").join(f)).unwrap();
        assert!(a == b, "{f} differs between two builds");
    }
    assert!(!dir.join("ds/unlabelled.jsonl").exists());

    // `unlabelled = N`: the labelled splits stay as they were; unlabelled.jsonl holds up to N
    // logged requests without explicit feedback, none of a validation or test group.
    let rated: BTreeSet<String> = lines(&dir.join("sim/feedback.jsonl"))
        .iter()
        .filter(|e| e["feedback_type"].as_str().unwrap().starts_with("explicit"))
        .map(|e| e["request_id"].as_str().unwrap().to_string())
        .collect();
    let logged: BTreeSet<&str> = logs.iter().map(|l| l["request_id"].as_str().unwrap()).collect();
    let config = std::fs::read_to_string(dir.join("evalloop.toml")).unwrap();
    for (n, out) in [(40, "ds3"), (40, "ds4"), (100_000, "ds5")] {
        std::fs::write(dir.join("u.toml"), format!("{config}unlabelled = {n}\n")).unwrap();
        let card = json(evalloop(dir).args(["--config", "u.toml", "dataset", "build", "--out", out]));
        for f in ["train.jsonl", "validation.jsonl", "test.jsonl"] {
            assert!(std::fs::read(dir.join("ds").join(f)).unwrap() == std::fs::read(dir.join(out).join(f)).unwrap());
        }
        let rows = lines(&dir.join(out).join("unlabelled.jsonl"));
        assert_eq!(card["unlabelled"].as_u64().unwrap() as usize, rows.len());
        let mut prev = String::new();
        for r in &rows {
            let keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
            assert_eq!(keys, ["cohort", "evaluator_score", "group", "output", "prompt", "request_id"]);
            let id = r["request_id"].as_str().unwrap();
            // The production evaluator's score of the request, for `[train] distill`.
            let overall =
                logs.iter().find(|l| l["request_id"] == id).unwrap()["eval_scores"]["overall"].as_f64().unwrap();
            assert!((r["evaluator_score"].as_f64().unwrap() - overall).abs() <= 5e-7, "{id}");
            assert!(id > prev.as_str(), "rows sorted by request_id");
            prev = id.to_string();
            assert!(logged.contains(id) && !rated.contains(id), "{id}: not an unrated logged request");
            let g = r["group"].as_str().unwrap();
            assert!(matches!(group_split.get(g), None | Some(&"train")), "{id}: group {g} is in an evaluation split");
        }
        if n == 40 {
            assert_eq!(rows.len(), 40);
        } else {
            // All of them: every unrated log outside the evaluation groups.
            let all = logs
                .iter()
                .filter(|l| !rated.contains(l["request_id"].as_str().unwrap()))
                .filter(|l| {
                    matches!(group_split.get(l["metadata"]["group_id"].as_str().unwrap()), None | Some(&"train"))
                })
                .count();
            assert_eq!(rows.len(), all);
            assert!(all > 40);
        }
    }
    assert!(
        std::fs::read(dir.join("ds3/unlabelled.jsonl")).unwrap()
            == std::fs::read(dir.join("ds4/unlabelled.jsonl")).unwrap()
    );
}

#[test]
fn simulate_is_byte_identical_for_a_seed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    simulate(dir, "a", &["--seed", "11"]);
    simulate(dir, "b", &["--seed", "11"]);
    simulate(dir, "c", &["--seed", "12"]);
    for f in ["logs.jsonl", "feedback.jsonl", "truth.jsonl", "heldout.jsonl"] {
        assert_eq!(std::fs::read(dir.join("a").join(f)).unwrap(), std::fs::read(dir.join("b").join(f)).unwrap(), "{f}");
    }
    assert_ne!(
        std::fs::read(dir.join("a/feedback.jsonl")).unwrap(),
        std::fs::read(dir.join("c/feedback.jsonl")).unwrap()
    );
}

/// The committed example (data/example/README.md) is what the documented command produces.
#[test]
fn committed_example_matches_its_command() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = root().join("data/example/simulate.toml");
    simulate(dir, "ex", &["--seed", "7", "--holdout-groups", "4", "--config", cfg.to_str().unwrap()]);
    for f in ["logs.jsonl", "feedback.jsonl", "truth.jsonl", "heldout.jsonl"] {
        let committed = std::fs::read(root().join("data/example").join(f)).unwrap();
        assert!(committed == std::fs::read(dir.join("ex").join(f)).unwrap(), "data/example/{f} is stale");
    }
    // panel.jsonl: the review panel's events of the same week, which simulate-panel.toml writes
    // on top of the same logs and product users' feedback.
    let panel_cfg = root().join("data/example/simulate-panel.toml");
    simulate(dir, "panel", &["--seed", "7", "--holdout-groups", "4", "--config", panel_cfg.to_str().unwrap()]);
    let read = |p: &Path| std::fs::read_to_string(p).unwrap();
    assert_eq!(read(&dir.join("panel/logs.jsonl")), read(&root().join("data/example/logs.jsonl")));
    let users: std::collections::BTreeSet<String> =
        read(&root().join("data/example/feedback.jsonl")).lines().map(str::to_string).collect();
    let all = read(&dir.join("panel/feedback.jsonl"));
    let extra: Vec<&str> = all.lines().filter(|l| !users.contains(*l)).collect();
    assert_eq!(all.lines().count(), users.len() + extra.len(), "every product user's event is kept");
    let committed = read(&root().join("data/example/panel.jsonl"));
    assert_eq!(committed.lines().collect::<Vec<_>>(), extra, "data/example/panel.jsonl is stale");
    assert!(extra.iter().all(|l| l.contains("\"user_id\":\"rater-")));
    // preferences.jsonl: the preference events of the same week where every rating is a
    // preference instead (simulate-preferences.toml).
    let pref_cfg = root().join("data/example/simulate-preferences.toml");
    simulate(dir, "prefs", &["--seed", "7", "--holdout-groups", "4", "--config", pref_cfg.to_str().unwrap()]);
    assert_eq!(read(&dir.join("prefs/logs.jsonl")), read(&root().join("data/example/logs.jsonl")));
    let prefs = read(&dir.join("prefs/feedback.jsonl"));
    let prefs: Vec<&str> = prefs.lines().filter(|l| l.contains("\"explicit_preference\"")).collect();
    let committed = read(&root().join("data/example/preferences.jsonl"));
    assert_eq!(committed.lines().collect::<Vec<_>>(), prefs, "data/example/preferences.jsonl is stale");
}

#[test]
fn simulate_names_missing_dimension_with_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let out = evalloop(tmp.path())
        .args(["simulate", "--judgements"])
        .arg(sample())
        .args(["--dimension", "nope", "--out", "x"])
        .assert()
        .code(2)
        .get_output()
        .stderr
        .clone();
    let err = String::from_utf8(out).unwrap();
    assert!(err.contains("newsroom-sample.jsonl:1") && err.contains("human.nope"), "{err}");
}

#[test]
fn outcome_dependent_feedback_over_reports_bad_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(
        dir.join("sim.toml"),
        "[simulate]\noutcome_slope = 3.0\n\n[[simulate.cohorts]]\nname = \"all\"\nshare = 1.0\nfeedback_rate = 0.3\n",
    )
    .unwrap();
    let mut c = evalloop(dir);
    c.args(["--config", "sim.toml", "simulate", "--judgements"]).arg(sample());
    c.args(["--dimension", "coherence", "--out", "o"]);
    json(&mut c);
    let truth = lines(&dir.join("o/truth.jsonl"));
    let mean = |xs: Vec<f64>| xs.iter().sum::<f64>() / xs.len() as f64;
    let p_low = mean(
        truth
            .iter()
            .filter(|t| t["perceived_score"].as_f64().unwrap() < 3.0)
            .map(|t| t["feedback_probability"].as_f64().unwrap())
            .collect(),
    );
    let p_high = mean(
        truth
            .iter()
            .filter(|t| t["perceived_score"].as_f64().unwrap() >= 4.0)
            .map(|t| t["feedback_probability"].as_f64().unwrap())
            .collect(),
    );
    assert!(p_low > 0.4 && p_high < 0.2, "low {p_low}, high {p_high}");
}

#[test]
fn disagreements_graded_subsampled_build() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ex = root().join("data/example");
    for (what, file) in [("logs", "logs.jsonl"), ("feedback", "feedback.jsonl")] {
        let r = json(evalloop(dir).args(["--db", "e.db", "ingest", what]).arg(ex.join(file)));
        assert_eq!(r["rejected"], 0);
    }
    std::fs::write(
        dir.join("c.toml"),
        "[dataset]\nlabel = \"graded\"\nsource = \"disagreements\"\nmax_examples = 12\nmin_per_stratum = 1\n\
         weighting = [\"inverse_rate\", \"class_balance\", \"disagreement_boost\", \"normalize\"]\n",
    )
    .unwrap();
    let card = json(evalloop(dir).args(["--db", "e.db", "--config", "c.toml", "dataset", "build", "--out", "ds"]));
    assert_eq!(card["config"]["label"], "graded");
    assert!(card["dropped_agreeing"].as_u64().unwrap() > 0);
    assert!(card["examples"].as_u64().unwrap() <= 14, "{}", card["examples"]);
    assert!(!card["subsampling"].as_array().unwrap().is_empty());
    for split in ["train", "validation", "test"] {
        for r in lines(&dir.join(format!("ds/{split}.jsonl"))) {
            assert_eq!(r["is_disagreement"], true);
            let l = r["label"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&l));
            assert!(r["group"].as_str().unwrap().starts_with("prompt-"), "no group_key: prompt hash");
        }
    }
}

/// `simulate --dimensions` adds one dimension rating per extra dimension to each rated request
/// and leaves the primary feedback as it was; `dataset build` with `dimensions` gives each row
/// `labels` from them, and its primary labels and splits are those of a build without.
#[test]
fn extra_dimensions_flow_from_simulate_into_dataset_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let args = ["--seed", "3", "--holdout-groups", "4"];
    simulate(dir, "one", &args);
    let s = simulate(dir, "multi", &[&args[..], &["--dimensions", "relevance,fluency"]].concat());
    assert_eq!(s["dimensions"], serde_json::json!(["relevance", "fluency"]));
    let plain = lines(&dir.join("one/feedback.jsonl"));
    let multi = lines(&dir.join("multi/feedback.jsonl"));
    let (primary, dims): (Vec<&Value>, Vec<&Value>) = multi.iter().partition(|e| e.get("dimension").is_none());
    assert_eq!(primary.into_iter().cloned().collect::<Vec<_>>(), plain, "primary feedback changed");
    let rated: BTreeSet<&str> = plain
        .iter()
        .filter(|e| e["feedback_type"] == "explicit_rating")
        .map(|e| e["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(dims.len(), 2 * rated.len());
    assert_eq!(s["dimension_ratings"].as_u64().unwrap() as usize, dims.len());
    let truth = lines(&dir.join("multi/truth.jsonl"));
    let by_id: BTreeMap<&str, &Value> = truth.iter().map(|t| (t["request_id"].as_str().unwrap(), t)).collect();
    for e in &dims {
        let id = e["request_id"].as_str().unwrap();
        assert!(rated.contains(id), "dimension rating on a request without a rating: {e}");
        let d = e["dimension"].as_str().unwrap();
        // Newsroom is on 1-5 and the default cohorts have no shift or noise: the rating is the
        // rounded judgement.
        let h = by_id[id]["human_scores"][d].as_f64().unwrap();
        assert_eq!(e["value"].as_f64().unwrap(), h.round(), "{e}");
    }
    assert!(lines(&dir.join("multi/heldout.jsonl")).iter().all(|h| h["human_scores"]["coherence"].is_number()));
    assert!(lines(&dir.join("one/truth.jsonl")).iter().all(|t| t.get("human_scores").is_none()));

    for (db, sim) in [("one.db", "one"), ("multi.db", "multi")] {
        for what in ["logs", "feedback"] {
            let file = format!("{sim}/{what}.jsonl");
            json(evalloop(dir).args(["--db", db, "ingest", what, &file, "--strict"]));
        }
    }
    let cfg =
        "[dataset]\nlabel = \"graded\"\nweighting = [\"none\"]\ngroup_key = \"group_id\"\nmin_effective_size = 0.0\n";
    std::fs::write(dir.join("plain.toml"), cfg).unwrap();
    std::fs::write(
        dir.join("mt.toml"),
        format!("{cfg}dimensions = [\"relevance\", \"fluency\", \"informativeness\"]\n"),
    )
    .unwrap();
    json(evalloop(dir).args(["--db", "one.db", "--config", "plain.toml", "dataset", "build", "--out", "ds-plain"]));
    let card =
        json(evalloop(dir).args(["--db", "multi.db", "--config", "mt.toml", "dataset", "build", "--out", "ds-mt"]));
    let mut labelled = 0;
    for split in ["train", "validation", "test"] {
        let a = lines(&dir.join(format!("ds-plain/{split}.jsonl")));
        let b = lines(&dir.join(format!("ds-mt/{split}.jsonl")));
        assert_eq!(a.len(), b.len());
        let mut n = 0;
        for (x, y) in a.iter().zip(&b) {
            let mut y = y.clone();
            let labels = y.as_object_mut().unwrap().remove("labels").unwrap();
            assert_eq!(*x, y, "a row changed besides its labels");
            // No request was rated on informativeness (not simulated): null everywhere.
            assert!(labels["informativeness"].is_null());
            let id = x["request_id"].as_str().unwrap();
            for d in ["relevance", "fluency"] {
                match labels[d].as_f64() {
                    Some(v) => {
                        let h = by_id[id]["human_scores"][d].as_f64().unwrap();
                        assert!((v - (h.round() - 1.0) / 4.0).abs() < 1e-9, "{id} {d}: {v} vs {h}");
                        n += usize::from(d == "relevance");
                    }
                    None => assert!(labels[d].is_null() && !rated.contains(id)),
                }
            }
        }
        assert_eq!(card["dimensions"]["relevance"][split].as_u64().unwrap() as usize, n, "{split}");
        assert_eq!(card["dimensions"]["informativeness"][split], 0);
        labelled += n;
    }
    assert!(labelled > 0);
    assert_eq!(card["dimensions"]["relevance"]["labelled"].as_u64().unwrap() as usize, labelled);
    assert_eq!(card["config"]["dimensions"], serde_json::json!(["relevance", "fluency", "informativeness"]));
}
