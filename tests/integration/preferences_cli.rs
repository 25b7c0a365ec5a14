//! Preference feedback end to end, on SQLite and (with `EVALLOOP_TEST_PG`, set by
//! `scripts/with-postgres.sh`) PostgreSQL: validated ingest (A = B, a preference field on
//! another type, a bad choice, two groups with `--group-key`, conflicting repeats), idempotent
//! re-ingest, orphans, `record --type preference`, `stats`, and `evalloop preferences` whose
//! figures match a computation here from the files (majority per pair, pairwise accuracy,
//! agreement between people, Bradley-Terry); `dataset build` writes the pairs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use assert_cmd::Command;
use evalloop::stats::BootstrapConfig;
use evalloop::stats::agreement::{MeasurementLevel, krippendorff_alpha};
use evalloop::stats::preference::{Choice, JudgedPair, bradley_terry, choice_units, pairwise_accuracy};
use serde_json::{Value, json};

use crate::cli_support::{self, json, text};

fn evalloop(dir: &Path, db: &str) -> Command {
    let mut c = cli_support::evalloop(dir);
    c.args(["--db", db]);
    c
}

/// Two groups: g1 has outputs a1..a4 (scores 0.9, 0.6, 0.4, 0.1), g2 has b1..b3 (0.2, 0.5, 0.8).
const LOGS: [(&str, &str, f64); 7] = [
    ("a1", "g1", 0.9),
    ("a2", "g1", 0.6),
    ("a3", "g1", 0.4),
    ("a4", "g1", 0.1),
    ("b1", "g2", 0.2),
    ("b2", "g2", 0.5),
    ("b3", "g2", 0.8),
];

/// (A, B, choice, user): u1 and u2 judge a1/a2 alike, disagree on a2/a3 (u2 writes it as a3 vs
/// a2), u3 prefers a4 to a1 (so g1's comparisons are connected both ways), g2's people prefer
/// the output the evaluator scores lower.
const PREFS: [(&str, &str, &str, &str); 9] = [
    ("a1", "a2", "a", "u1"),
    ("a2", "a1", "b", "u2"),
    ("a2", "a3", "a", "u1"),
    ("a3", "a2", "a", "u2"),
    ("a3", "a4", "tie", "u3"),
    ("a1", "a4", "b", "u3"),
    ("b1", "b2", "a", "u4"),
    ("b2", "b3", "a", "u4"),
    ("b1", "b3", "tie", "u5"),
];

fn files(dir: &Path) {
    let mut logs = String::new();
    for (id, g, s) in LOGS {
        let _ = writeln!(
            logs,
            "{}",
            json!({"request_id": id, "timestamp": "2026-05-10T12:00:00Z", "prompt": format!("prompt of {g}"),
                   "output": format!("output {id}"), "eval_scores": {"overall": s},
                   "metadata": {"group_id": g, "user_cohort": "pro"}})
        );
    }
    std::fs::write(dir.join("logs.jsonl"), logs).unwrap();
    let mut fb = String::new();
    for (a, b, c, u) in PREFS {
        let _ = writeln!(
            fb,
            "{}",
            json!({"request_id": a, "other_request_id": b, "feedback_type": "explicit_preference", "value": c,
                   "user_id": u, "timestamp": "2026-05-11T09:00:00Z"})
        );
    }
    // Line 10: A = B; 11: a preference field on a rating; 12: a bad choice; 13: no B;
    // 14: outputs of two groups; 15: an orphan (no log for zz); 16: a rating that stays.
    for bad in [
        json!({"request_id": "a1", "other_request_id": "a1", "feedback_type": "explicit_preference", "value": "a"}),
        json!({"request_id": "a1", "other_request_id": "a2", "feedback_type": "explicit_rating", "value": 4}),
        json!({"request_id": "a1", "other_request_id": "a2", "feedback_type": "explicit_preference", "value": "left"}),
        json!({"request_id": "a1", "feedback_type": "explicit_preference", "value": "a"}),
        json!({"request_id": "a1", "other_request_id": "b1", "feedback_type": "explicit_preference", "value": "a"}),
        json!({"request_id": "a4", "other_request_id": "zz", "feedback_type": "explicit_preference", "value": "b"}),
        json!({"request_id": "a1", "feedback_type": "explicit_rating", "value": 5, "user_id": "u1"}),
    ] {
        let _ = writeln!(fb, "{bad}");
    }
    std::fs::write(dir.join("feedback.jsonl"), fb).unwrap();
}

fn databases(dir: &Path) -> Vec<String> {
    let mut dbs = vec![dir.join("t.db").display().to_string()];
    if let Ok(url) = std::env::var("EVALLOOP_TEST_PG")
        && !url.is_empty()
    {
        let schema = format!("preferences_cli_{}", std::process::id());
        let mut admin = postgres::Client::connect(&url, postgres::NoTls).expect("EVALLOOP_TEST_PG answers");
        admin.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}")).unwrap();
        let sep = if url.contains('?') { '&' } else { '?' };
        dbs.push(format!("{url}{sep}options=-csearch_path%3D{schema}"));
    }
    dbs
}

/// The figures `evalloop preferences` must give, computed here from the constants.
fn expected() -> (f64, f64, f64, Vec<f64>) {
    let score: BTreeMap<&str, f64> = LOGS.iter().map(|(id, _, s)| (*id, *s)).collect();
    // Votes per pair in sorted orientation.
    let mut votes: BTreeMap<(&str, &str), [usize; 3]> = BTreeMap::new();
    let mut single = Vec::new();
    let mut choices = Vec::new();
    for (a, b, c, u) in PREFS {
        let c = match c {
            "a" => Choice::A,
            "b" => Choice::B,
            _ => Choice::Tie,
        };
        let (p, c) = if a < b { ((a, b), c) } else { ((b, a), c.flipped()) };
        votes.entry(p).or_default()[match c {
            Choice::A => 0,
            Choice::B => 1,
            Choice::Tie => 2,
        }] += 1;
        single.push(JudgedPair { score_a: score[p.0], score_b: score[p.1], choice: c });
        choices.push((format!("{}|{}", p.0, p.1), u.to_string(), c));
    }
    let majority: Vec<JudgedPair> = votes
        .iter()
        .map(|(p, v)| {
            let c = if v[0] > v[1] {
                Choice::A
            } else if v[1] > v[0] {
                Choice::B
            } else {
                Choice::Tie
            };
            JudgedPair { score_a: score[p.0], score_b: score[p.1], choice: c }
        })
        .collect();
    let cfg = BootstrapConfig { n_resamples: 0, ..Default::default() };
    let acc = pairwise_accuracy(&majority, &cfg).unwrap().accuracy;
    let acc1 = pairwise_accuracy(&single, &cfg).unwrap().accuracy;
    let alpha = krippendorff_alpha(&choice_units(&choices), MeasurementLevel::Nominal).unwrap();
    // g1's Bradley-Terry strengths over a1..a4 from every vote.
    let idx = |id: &str| ["a1", "a2", "a3", "a4"].iter().position(|x| *x == id).unwrap();
    let g1: Vec<(usize, usize, Choice)> = PREFS
        .iter()
        .filter(|p| p.0.starts_with('a'))
        .map(|(a, b, c, _)| {
            (
                idx(a),
                idx(b),
                match *c {
                    "a" => Choice::A,
                    "b" => Choice::B,
                    _ => Choice::Tie,
                },
            )
        })
        .collect();
    // With the prior: one virtual tie of each output against a reference output (index 4).
    let mut g1 = g1;
    g1.extend((0..4).map(|i| (i, 4, Choice::Tie)));
    let mut bt = bradley_terry(5, &g1).unwrap().log_strength;
    bt.truncate(4);
    let mean = bt.iter().sum::<f64>() / 4.0;
    (acc, acc1, alpha, bt.iter().map(|s| s - mean).collect())
}

#[test]
fn preferences_ingest_analyse_and_build_pairs_on_every_store() {
    let d = tempfile::tempdir().unwrap();
    files(d.path());
    let (acc, acc1, alpha, bt) = expected();
    for db in databases(d.path()) {
        let on = if db.starts_with("postgres") { "postgres" } else { "sqlite" };
        json(evalloop(d.path(), &db).args(["ingest", "logs", "logs.jsonl"]));
        let s = json(evalloop(d.path(), &db).args(["ingest", "feedback", "feedback.jsonl", "--group-key", "group_id"]));
        assert_eq!(
            (s["stored"].as_u64(), s["rejected"].as_u64(), s["orphaned"].as_u64()),
            (Some(11), Some(5), Some(1)),
            "{on}: {s}"
        );
        let rejects: Vec<Value> = std::fs::read_to_string(d.path().join("feedback.jsonl.rejects.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let at: Vec<(u64, &str)> =
            rejects.iter().map(|r| (r["line"].as_u64().unwrap(), r["field"].as_str().unwrap())).collect();
        assert_eq!(
            at,
            [
                (10, "other_request_id"),
                (11, "other_request_id"),
                (12, "value"),
                (13, "other_request_id"),
                (14, "other_request_id")
            ],
            "{on}"
        );
        assert!(rejects[4]["error"].as_str().unwrap().contains("group"), "{on}: {}", rejects[4]);
        // Re-ingest: everything is a duplicate; a changed choice under a stored id is a conflict.
        let again =
            json(evalloop(d.path(), &db).args(["ingest", "feedback", "feedback.jsonl", "--group-key", "group_id"]));
        assert_eq!((again["stored"].as_u64(), again["duplicate"].as_u64()), (Some(0), Some(11)), "{on}: {again}");
        let first: Value = serde_json::from_str(
            &evalloop::record::FeedbackEvent::from_json(
                json!({"request_id": "a1", "other_request_id": "a2", "feedback_type": "explicit_preference", "value": "a",
                       "user_id": "u1", "timestamp": "2026-05-11T09:00:00Z"}),
                false,
                chrono::Utc::now(),
            )
            .unwrap()
            .to_json()
            .to_string(),
        )
        .unwrap();
        let mut changed = first.clone();
        changed["value"] = json!("b");
        std::fs::write(d.path().join("changed.jsonl"), format!("{changed}\n")).unwrap();
        let c = json(evalloop(d.path(), &db).args(["ingest", "feedback", "changed.jsonl"]));
        assert_eq!((c["conflict"].as_u64(), c["stored"].as_u64()), (Some(1), Some(0)), "{on}: {c}");

        let st = json(evalloop(d.path(), &db).arg("stats"));
        assert_eq!(st["preferences"].as_u64(), Some(10), "{on}: {st}");
        assert_eq!(st["feedback_events"].as_u64(), Some(1), "{on}: preferences are kept apart: {st}");

        let r = json(evalloop(d.path(), &db).args(["preferences", "--group-key", "group_id", "--bootstrap", "200"]));
        assert_eq!((r["events"].as_u64(), r["unscored"].as_u64()), (Some(10), Some(1)), "{on}: {r}");
        assert_eq!((r["pairs"].as_u64(), r["people"].as_u64()), (Some(7), Some(5)), "{on}: {r}");
        assert!((r["accuracy"]["accuracy"].as_f64().unwrap() - acc).abs() < 1e-12, "{on}: {r}");
        assert!((r["accuracy_per_judgement"]["accuracy"].as_f64().unwrap() - acc1).abs() < 1e-12, "{on}: {r}");
        assert!(r["accuracy"]["ci"]["lower"].as_f64().unwrap() <= acc, "{on}: {r}");
        assert!((r["agreement"]["alpha"].as_f64().unwrap() - alpha).abs() < 1e-12, "{on}: {r}");
        assert_eq!(r["agreement"]["items_used"].as_u64(), Some(2), "{on}: two pairs have two people");
        let g1 = r["groups"].as_array().unwrap().iter().find(|g| g["group"] == "g1").unwrap();
        for o in g1["outputs"].as_array().unwrap() {
            let i = ["a1", "a2", "a3", "a4"].iter().position(|x| *x == o["request_id"].as_str().unwrap()).unwrap();
            assert!((o["strength"].as_f64().unwrap() - bt[i]).abs() < 1e-9, "{on}: {o} vs {}", bt[i]);
        }
        let text = text(evalloop(d.path(), &db).args(["preferences", "--group-key", "group_id"]));
        assert!(text.contains("evaluator vs the pairs' majority") && text.contains("Bradley-Terry"), "{text}");

        // `record` stores one more, and names the option in its errors.
        let rec = json(evalloop(d.path(), &db).args([
            "record",
            "--request-id",
            "b3",
            "--type",
            "preference",
            "--other-request-id",
            "b1",
            "--value",
            "a",
            "--user",
            "u6",
        ]));
        assert_eq!(rec["stored"], json!(true), "{on}: {rec}");
        let err = evalloop(d.path(), &db)
            .args(["record", "--request-id", "b3", "--type", "preference", "--value", "a"])
            .assert()
            .failure()
            .get_output()
            .stderr
            .clone();
        assert!(String::from_utf8_lossy(&err).contains("--other-request-id"), "{}", String::from_utf8_lossy(&err));

        // The dataset: pairs.jsonl with the decisive pairs, the preferred output first.
        std::fs::write(
            d.path().join("ds.toml"),
            "[dataset]\nlabel = \"graded\"\ngroup_key = \"group_id\"\nmin_effective_size = 0.0\ntrain_fraction = 1.0\nvalidation_fraction = 0.0\n",
        )
        .unwrap();
        let out = d.path().join(format!("ds-{on}"));
        evalloop(d.path(), &db).args(["--config", "ds.toml", "dataset", "build", "--out"]).arg(&out).assert().success();
        let pairs: Vec<Value> = std::fs::read_to_string(out.join("pairs.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let got: Vec<(&str, &str)> = pairs
            .iter()
            .map(|p| (p["request_id_chosen"].as_str().unwrap(), p["request_id_rejected"].as_str().unwrap()))
            .collect();
        // a1>a2 (2 votes), a2/a3 split 1-1 and a3/a4 tied: left out; a4>a1, b1>b2, b2>b3,
        // b1/b3: tie then b3 by u6 -> b3.
        assert_eq!(got, [("a1", "a2"), ("a4", "a1"), ("b1", "b2"), ("b2", "b3"), ("b3", "b1")], "{on}");
        assert_eq!(pairs[0]["margin"], json!(2));
        assert_eq!(pairs[0]["chosen"], json!("output a1"));
        let card: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("dataset_card.json")).unwrap()).unwrap();
        assert_eq!(card["preference_pairs"]["ties"], json!(2), "{on}: {card}");
        assert_eq!(card["preference_pairs"]["unlogged"], json!(1), "{on}: {card}");
    }
}

/// `[simulate.preferences] share = 1` turns every rating into a preference and changes nothing
/// else: the same logs, thumbs and implicit events, as many preferences as there were ratings,
/// each between two outputs of one group; `share = 0` writes what a config without the section
/// writes.
#[test]
fn simulated_preferences_replace_ratings_one_for_one() {
    let d = tempfile::tempdir().unwrap();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/example/newsroom-sample.jsonl");
    let run = |name: &str, extra: &str| -> (String, Vec<Value>) {
        std::fs::write(d.path().join(format!("{name}.toml")), format!("[simulate]\nrating_noise = 0.5\n{extra}"))
            .unwrap();
        let db = d.path().join("unused.db").display().to_string();
        evalloop(d.path(), &db)
            .args([
                "--config",
                &format!("{name}.toml"),
                "simulate",
                "--dimension",
                "coherence",
                "--holdout-groups",
                "5",
            ])
            .arg("--judgements")
            .arg(&sample)
            .args(["--out", name])
            .assert()
            .success();
        let fb = std::fs::read_to_string(d.path().join(name).join("feedback.jsonl")).unwrap();
        let logs = std::fs::read_to_string(d.path().join(name).join("logs.jsonl")).unwrap();
        (logs, fb.lines().map(|l| serde_json::from_str(l).unwrap()).collect())
    };
    let (logs0, plain) = run("plain", "");
    let (logs_off, off) = run("off", "[simulate.preferences]\nshare = 0.0\n");
    let (logs1, all) = run("all", "[simulate.preferences]\nshare = 1.0\n");
    assert_eq!((&logs0, &plain), (&logs_off, &off));
    assert_eq!(logs0, logs1);
    let kind = |e: &Value| e["feedback_type"].as_str().unwrap().to_string();
    let ratings = plain.iter().filter(|e| kind(e) == "explicit_rating").count();
    let prefs: Vec<&Value> = all.iter().filter(|e| kind(e) == "explicit_preference").collect();
    assert!(ratings > 20, "{ratings} ratings");
    assert_eq!(prefs.len(), ratings);
    assert!(all.iter().all(|e| kind(e) != "explicit_rating"));
    let others = |v: &[Value]| {
        v.iter()
            .filter(|e| !kind(e).ends_with("_rating") && !kind(e).ends_with("_preference"))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(others(&plain), others(&all));
    let group_of: BTreeMap<String, String> = logs1
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|l| {
            (l["request_id"].as_str().unwrap().to_string(), l["metadata"]["group_id"].as_str().unwrap().to_string())
        })
        .collect();
    for p in prefs {
        let (a, b) = (p["request_id"].as_str().unwrap(), p["other_request_id"].as_str().unwrap());
        assert_ne!(a, b);
        assert_eq!(group_of[a], group_of[b], "{p}");
        assert!(["a", "b", "tie"].contains(&p["value"].as_str().unwrap()), "{p}");
    }
}
