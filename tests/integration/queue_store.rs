//! Annotation queues on both stores, through the real binary and the library: `queue create`
//! with each strategy stores items with their selection probabilities; answers land as feedback
//! events linked to the queue; `queue show`, `queue export`, `bias` and `dataset build` (the
//! `queue` weight factor, the card's count) read them. The PostgreSQL half runs under
//! `scripts/with-postgres.sh` (`EVALLOOP_TEST_PG`) and says so on stderr when skipped.

use std::path::Path;

use chrono::Utc;
use evalloop::queue::{self, Answer, Recorded};
use serde_json::Value;

use crate::serve_support::{PgSchema, ok_json, run_in as run};

const LOGS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/example/logs.jsonl");
const FEEDBACK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/example/feedback.jsonl");

/// A second evaluator on every example request: the first one's score moved by an amount that
/// grows with the request's position, so disagreements differ between requests.
fn write_retrained_scores(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("retrained.jsonl");
    let mut out = String::new();
    for (i, line) in std::fs::read_to_string(LOGS).unwrap().lines().enumerate() {
        let v: Value = serde_json::from_str(line).unwrap();
        let base = v["eval_scores"]["overall"].as_f64().unwrap();
        let moved = if i % 4 == 0 { 1.0 - base } else { (base + 0.01).min(1.0) };
        out.push_str(&format!(
            "{{\"request_id\": {}, \"evaluator\": \"retrained\", \"eval_scores\": {{\"overall\": {moved}}}}}\n",
            v["request_id"]
        ));
    }
    std::fs::write(&path, out).unwrap();
    path
}

fn queue_contract(db: &str) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok_json(db, d, &["ingest", "logs", LOGS]);
    ok_json(db, d, &["ingest", "feedback", FEEDBACK]);
    let scores = write_retrained_scores(d);
    ok_json(db, d, &["ingest", "scores", scores.to_str().unwrap()]);
    let base = ["--evaluator", "baseline-unigram-f1"];

    // random: every item with probability size / N.
    let mut args = vec!["queue", "create", "--name", "rand", "--strategy", "random", "--size", "20"];
    args.extend_from_slice(&base);
    let r = ok_json(db, d, &args);
    assert_eq!(r["queue"]["population"], 392);
    let items = r["items"].as_array().unwrap();
    assert_eq!(items.len(), 20);
    for i in items {
        assert!((i["probability"].as_f64().unwrap() - 20.0 / 392.0).abs() < 1e-12, "{i}");
    }

    // disagreement: probabilities follow |base - retrained|, floored at 0.2 * n / N.
    let mut args = vec![
        "queue",
        "create",
        "--name",
        "dis",
        "--strategy",
        "disagreement",
        "--size",
        "30",
        "--against",
        "retrained",
        "--reviewers-per-item",
        "2",
    ];
    args.extend_from_slice(&base);
    let r = ok_json(db, d, &args);
    let items = r["items"].as_array().unwrap();
    assert_eq!(items.len(), 30);
    let mut ids: Vec<&str> = items.iter().map(|i| i["request_id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 30, "an item drawn twice");
    let floor = 0.2 * 30.0 / 392.0;
    let mut by_priority: Vec<(f64, f64)> =
        items.iter().map(|i| (i["priority"].as_f64().unwrap(), i["probability"].as_f64().unwrap())).collect();
    by_priority.sort_by(|a, b| a.0.total_cmp(&b.0));
    for w in by_priority.windows(2) {
        assert!(w[0].1 <= w[1].1 + 1e-12, "probability falls as priority rises: {w:?}");
    }
    assert!(by_priority.iter().all(|(_, p)| *p >= floor - 1e-12 && *p <= 1.0));
    // The large disagreements (every fourth request) dominate the draw.
    let large = by_priority.iter().filter(|(s, _)| *s > 0.05).count();
    assert!(large >= 15, "only {large} of 30 items have a large disagreement");

    // Refusals: a name in use, a size above the population, missing inputs.
    let (code, _, err) = run(db, d, &["queue", "create", "--name", "rand", "--strategy", "random", "--size", "2"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("exists already"), "{err}");
    let (code, _, err) = run(db, d, &["queue", "create", "--name", "big", "--strategy", "random", "--size", "999"]);
    assert_eq!(code, 2);
    assert!(err.contains("several evaluators") || err.contains("only 392"), "{err}");
    let (code, _, err) = run(
        db,
        d,
        &["queue", "create", "--name", "u", "--strategy", "uncertainty", "--size", "2", "--evaluator", "retrained"],
    );
    assert_eq!(code, 2);
    assert!(err.contains("--members"), "{err}");
    let (code, _, err) = run(db, d, &["queue", "show", "nope"]);
    assert_eq!(code, 2);
    assert!(err.contains("queues: dis, rand"), "{err}");

    // uncertainty and mix run on stored members; cohort-balanced on cohorts.
    let r = ok_json(
        db,
        d,
        &[
            "queue",
            "create",
            "--name",
            "unc",
            "--strategy",
            "uncertainty",
            "--size",
            "10",
            "--evaluator",
            "retrained",
            "--members",
            "baseline-unigram-f1,retrained",
        ],
    );
    assert_eq!(r["items"].as_array().unwrap().len(), 10);
    let mut args = vec![
        "queue",
        "create",
        "--name",
        "mix",
        "--strategy",
        "mix",
        "--size",
        "10",
        "--against",
        "retrained",
        "--kind",
        "thumbs",
    ];
    args.extend_from_slice(&base);
    assert_eq!(ok_json(db, d, &args)["queue"]["strategy"], "mix");

    // cohort-balanced: priority 1 / (N_c * (1 + h_c)) from the cohort's requests and human scores.
    let mut args = vec!["queue", "create", "--name", "bal", "--strategy", "cohort-balanced", "--size", "30"];
    args.extend_from_slice(&base);
    let bal = ok_json(db, d, &args);
    {
        let store = evalloop::store::open(db).unwrap();
        let f = evalloop::store::Filter { evaluator: Some("baseline-unigram-f1".into()), ..Default::default() };
        let stats = store.cohort_stats(&f, &evalloop::feedback::HumanPolicy::default()).unwrap();
        let cohort_of: std::collections::HashMap<String, Option<String>> =
            store.evaluated_requests(&f).unwrap().into_iter().map(|r| (r.request_id, r.cohort)).collect();
        for it in bal["items"].as_array().unwrap() {
            let c = &cohort_of[it["request_id"].as_str().unwrap()];
            let st = stats.iter().find(|s| &s.cohort == c).unwrap();
            let want = 1.0 / (st.requests as f64 * (1.0 + st.with_human_score as f64));
            assert!((it["priority"].as_f64().unwrap() - want).abs() < 1e-15, "{it} in {c:?}");
        }
    }

    // Answers through the library, as the review page records them.
    let mut store = evalloop::store::open(db).unwrap();
    let spec = store.queue("dis").unwrap().unwrap();
    let items = store.queue_items(Some("dis")).unwrap();
    let now = Utc::now();
    for (n, it) in items.iter().take(6).enumerate() {
        let rating = 1 + (n % 5) as u8;
        let r = queue::record_answer(store.as_mut(), &spec, it, "ann", &Answer::Rating(rating), Some("ok"), now);
        assert_eq!(r.unwrap(), Recorded::Stored);
        let r = queue::record_answer(store.as_mut(), &spec, it, "bob", &Answer::Rating(rating), None, now);
        assert_eq!(r.unwrap(), Recorded::Stored);
    }
    // A repeated answer changes nothing; a skip stores no event; a third label on an item with
    // its two is refused and leaves no event (regression: it was stored as an extra label).
    let r = queue::record_answer(store.as_mut(), &spec, &items[0], "ann", &Answer::Rating(5), None, now);
    assert_eq!(r.unwrap(), Recorded::Duplicate);
    let r = queue::record_answer(store.as_mut(), &spec, &items[0], "cid", &Answer::Rating(5), None, now);
    assert_eq!(r.unwrap(), Recorded::Full);
    assert!(store.feedback_for(&items[0].request_id).unwrap().iter().all(|e| e.user_id.as_deref() != Some("cid")));
    let r = queue::record_answer(store.as_mut(), &spec, &items[6], "ann", &Answer::Skip, None, now);
    assert_eq!(r.unwrap(), Recorded::Stored);
    assert!(queue::record_answer(store.as_mut(), &spec, &items[7], "ann", &Answer::Thumb(true), None, now).is_err());
    let labels = store.queue_labels(Some("dis")).unwrap();
    assert_eq!(labels.len(), 13);
    assert_eq!(queue::next_item(&spec, &items, &labels, "ann").unwrap().position, 7);
    assert_eq!(queue::next_item(&spec, &items, &labels, "cid").unwrap().position, 6);
    let ev = store.feedback_for(&items[0].request_id).unwrap();
    let mine: Vec<_> = ev.iter().filter(|e| e.user_id.as_deref() == Some("ann")).collect();
    assert_eq!(mine.len(), 2, "{ev:?}");
    assert_eq!(mine[0].event_id, format!("queue:dis:{}:ann", items[0].position));
    drop(store);

    // show: progress per reviewer, agreement (two identical raters) and the IPW mean.
    let s = ok_json(db, d, &["queue", "show", "dis", "--bootstrap", "0"]);
    assert_eq!(s["progress"]["done"], 6);
    assert_eq!(s["progress"]["labels"], 12);
    assert_eq!(s["progress"]["skips"], 1);
    assert_eq!(s["progress"]["reviewers"][0], serde_json::json!({"reviewer": "ann", "labelled": 6, "skipped": 1}));
    assert_eq!(s["agreement"]["ratings"]["agreement"]["percent_agreement"], 1.0, "{}", s["agreement"]);
    let probs: Vec<f64> = items.iter().take(6).map(|i| i.probability).collect();
    let want: f64 = probs.iter().enumerate().map(|(n, p)| (1 + n % 5) as f64 / p).sum::<f64>()
        / probs.iter().map(|p| 1.0 / p).sum::<f64>();
    assert!((s["ipw_mean"]["mean"].as_f64().unwrap() - want).abs() < 1e-9, "{}", s["ipw_mean"]);
    let (_, text, _) = run(db, d, &["queue", "show", "dis", "--bootstrap", "0"]);
    assert!(text.contains("6 of 30 items done, 12 of 60 labels, 1 skips"), "{text}");

    // export: one line per item, answers with values and comments.
    let (code, out, _) = run(db, d, &["queue", "export", "dis"]);
    assert_eq!(code, 0);
    let lines: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 30);
    assert_eq!(lines[0]["answers"][0]["comment"], "ok");
    assert_eq!(lines[0]["answers"][0]["value"], 1.0);
    assert!((lines[0]["ipw_weight"].as_f64().unwrap() * probs[0] - 1.0).abs() < 1e-12);
    assert_eq!(lines[6]["answers"][0]["outcome"], "skipped");

    // import: a bad row stores nothing and names file:line and field; then the answers land.
    let imp = d.join("answers.jsonl");
    let r7 = &items[7].request_id;
    let r8 = &items[8].request_id;
    std::fs::write(
        &imp,
        format!(
            "{{\"request_id\": \"{r7}\", \"reviewer\": \"cid\", \"answer\": 4}}\n\
             {{\"request_id\": \"{r8}\", \"reviewer\": \"cid\", \"answer\": 6}}\n"
        ),
    )
    .unwrap();
    let (code, _, err) = run(db, d, &["queue", "import", "dis", imp.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("answers.jsonl:2: answer: rating 6"), "{err}");
    std::fs::write(
        &imp,
        format!(
            "{{\"request_id\": \"{r7}\", \"reviewer\": \"cid\", \"answer\": 4}}\n\
             {{\"request_id\": \"{r8}\", \"reviewer\": \"cid\", \"answer\": \"skip\"}}\n"
        ),
    )
    .unwrap();
    let n = ok_json(db, d, &["queue", "import", "dis", imp.to_str().unwrap()]);
    assert_eq!((n["stored"].as_u64(), n["duplicate"].as_u64()), (Some(2), Some(0)));
    assert_eq!(ok_json(db, d, &["queue", "import", "dis", imp.to_str().unwrap()])["duplicate"], 2);

    // --exclude-labelled: the next round leaves out every request with a human score.
    let store = evalloop::store::open(db).unwrap();
    let q = evalloop::store::ScoredQuery {
        filter: evalloop::store::Filter { evaluator: Some("baseline-unigram-f1".into()), ..Default::default() },
        ..Default::default()
    };
    let labelled: std::collections::BTreeSet<String> =
        store.scored_requests(&q).unwrap().into_iter().map(|r| r.request_id).collect();
    drop(store);
    assert!(labelled.contains(r7.as_str()));
    let mut args =
        vec!["queue", "create", "--name", "next", "--strategy", "random", "--size", "20", "--exclude-labelled"];
    args.extend_from_slice(&base);
    let next = ok_json(db, d, &args);
    assert_eq!(next["queue"]["population"].as_u64().unwrap() as usize, 392 - labelled.len());
    for it in next["items"].as_array().unwrap() {
        let id = it["request_id"].as_str().unwrap();
        assert!(!labelled.contains(id), "{id} has a label already");
    }

    // list, bias and the dataset.
    let l = ok_json(db, d, &["queue", "list"]);
    assert_eq!(l["queues"].as_array().unwrap().len(), 6);
    let b = ok_json(db, d, &["bias", "--evaluator", "baseline-unigram-f1"]);
    assert_eq!(b["from_queues"]["labels"], 13);
    assert_eq!(b["from_queues"]["requests"], 7);
    let cfg = d.join("dataset.toml");
    std::fs::write(
        &cfg,
        "[dataset]\nlabel = \"graded\"\nevaluator = \"baseline-unigram-f1\"\nweighting = [\"queue\"]\nmax_weight = 1000.0\n",
    )
    .unwrap();
    let out = d.join("ds");
    let (code, text, err) =
        run(db, d, &["--config", cfg.to_str().unwrap(), "dataset", "build", "--out", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(text.contains("labels from annotation queues: 7 of"), "{text}");
    let card: Value = serde_json::from_str(&std::fs::read_to_string(out.join("dataset_card.json")).unwrap()).unwrap();
    assert_eq!(card["queue_examples"], 7);
    let mut weights = std::collections::BTreeMap::new();
    for split in ["train", "validation", "test"] {
        for line in std::fs::read_to_string(out.join(format!("{split}.jsonl"))).unwrap().lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            weights.insert(v["request_id"].as_str().unwrap().to_string(), v["weight"].as_f64().unwrap());
        }
    }
    for it in items.iter().take(6) {
        let w = weights[&it.request_id];
        assert!((w - (1.0 / it.probability * 1e6).round() / 1e6).abs() < 1e-6, "{}: {w}", it.request_id);
    }
    let untouched = weights.iter().find(|(id, _)| !items.iter().take(6).any(|i| &&i.request_id == id)).unwrap();
    assert_eq!(*untouched.1, 1.0);
}

#[test]
fn queues_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    queue_contract(&dir.path().join("q.db").display().to_string());
}

#[test]
fn queues_on_postgres() {
    let Some(pg) = PgSchema::new("queue") else { return };
    queue_contract(&pg.url);
}
