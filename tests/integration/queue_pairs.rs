//! Preference queues and full items on both stores: `queue create --kind preference` draws pairs
//! of outputs of one group with the documented priorities and probabilities; answers land as
//! `explicit_preference` events; an answer on an item that has its labels is refused; `queue
//! show`, `queue export` and `queue import` handle pairs; queue tables made before pairs are
//! migrated on open. The PostgreSQL half runs under `scripts/with-postgres.sh`
//! (`EVALLOOP_TEST_PG`) and says so on stderr when skipped.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use chrono::Utc;
use evalloop::queue::{self, Answer, QueueItem, Recorded};
use evalloop::record::{Choice, FeedbackValue};
use serde_json::Value;

use crate::queue_support::{FEEDBACK, LOGS, example};
use crate::serve_support::{PgSchema, ok_json, run_in as run};

fn create(db: &str, d: &Path, name: &str, strategy: &str, size: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        "queue",
        "create",
        "--kind",
        "preference",
        "--name",
        name,
        "--strategy",
        strategy,
        "--size",
        size,
        "--group-key",
        "group_id",
        "--evaluator",
        "baseline-unigram-f1",
    ];
    args.extend_from_slice(extra);
    ok_json(db, d, &args)
}

fn pair_of(v: &Value) -> (String, String) {
    (v["request_id"].as_str().unwrap().to_string(), v["other_request_id"].as_str().unwrap().to_string())
}

fn pairs_contract(db: &str) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ex = example(d);
    ok_json(db, d, &["ingest", "logs", LOGS]);
    ok_json(db, d, &["ingest", "feedback", FEEDBACK]);
    ok_json(db, d, &["ingest", "scores", d.join("retrained.jsonl").to_str().unwrap()]);
    // 56 groups of 7 outputs: 56 * 21 pairs.
    let pairs_total = 56 * 21;

    // random: every pair of one group, with probability n / pairs.
    let r = create(db, d, "pr", "random", "12", &["--reviewers-per-item", "2"]);
    assert_eq!(r["queue"]["population"], pairs_total);
    assert_eq!(r["queue"]["group_key"], "group_id");
    let items = r["items"].as_array().unwrap();
    assert_eq!(items.len(), 12);
    let mut seen = std::collections::BTreeSet::new();
    for i in items {
        let (a, b) = pair_of(i);
        assert!(a < b, "a pair is stored with the smaller id first: {i}");
        assert_eq!(ex.group[&a], ex.group[&b], "a pair across groups: {i}");
        assert!((i["probability"].as_f64().unwrap() - 12.0 / pairs_total as f64).abs() < 1e-12, "{i}");
        assert!(seen.insert((a, b)), "a pair drawn twice");
    }

    // disagreement: |(s_a - s_b) - (t_a - t_b)|, probabilities rising with it, floored.
    let r = create(db, d, "pd", "disagreement", "40", &["--against", "retrained"]);
    let items = r["items"].as_array().unwrap();
    let mut by_priority = Vec::new();
    for i in items {
        let (a, b) = pair_of(i);
        let want = ((ex.base[&a] - ex.base[&b]) - (ex.retrained[&a] - ex.retrained[&b])).abs();
        assert!((i["priority"].as_f64().unwrap() - want).abs() < 1e-12, "{i}: want {want}");
        by_priority.push((want, i["probability"].as_f64().unwrap()));
    }
    by_priority.sort_by(|x, y| x.0.total_cmp(&y.0));
    for w in by_priority.windows(2) {
        assert!(w[0].1 <= w[1].1 + 1e-12, "probability falls as priority rises: {w:?}");
    }
    let floor = 0.2 * 40.0 / pairs_total as f64;
    assert!(by_priority.iter().all(|(_, p)| *p >= floor - 1e-12 && *p <= 1.0));

    // uncertainty without members: 1 - |s_a - s_b|, the pairs the evaluator scores alike.
    let r = create(db, d, "pu", "uncertainty", "10", &[]);
    for i in r["items"].as_array().unwrap() {
        let (a, b) = pair_of(i);
        let want = 1.0 - (ex.base[&a] - ex.base[&b]).abs();
        assert!((i["priority"].as_f64().unwrap() - want).abs() < 1e-12, "{i}");
    }

    // cohort-balanced: (1 / (E_a (1 + h_a)) + 1 / (E_b (1 + h_b))) / 2, E_c the pairs' ends in c.
    let r = create(db, d, "pc", "cohort-balanced", "10", &[]);
    {
        let store = evalloop::store::open(db).unwrap();
        let f = evalloop::store::Filter { evaluator: Some("baseline-unigram-f1".into()), ..Default::default() };
        let h: HashMap<Option<String>, u64> = store
            .cohort_stats(&f, &evalloop::feedback::HumanPolicy::default())
            .unwrap()
            .into_iter()
            .map(|c| (c.cohort, c.with_human_score))
            .collect();
        let mut ends: HashMap<&str, f64> = HashMap::new();
        for c in ex.cohort.values() {
            *ends.entry(c.as_str()).or_default() += 6.0; // each output is in 6 pairs of its group
        }
        let term = |id: &str| {
            let c = ex.cohort[id].as_str();
            1.0 / (ends[c] * (1.0 + h[&Some(c.to_string())] as f64))
        };
        for i in r["items"].as_array().unwrap() {
            let (a, b) = pair_of(i);
            let want = (term(&a) + term(&b)) / 2.0;
            assert!((i["priority"].as_f64().unwrap() - want).abs() < 1e-15, "{i}: want {want}");
        }
    }

    // Refusals: --group-key on a rating queue; a size above the pairs.
    let (code, _, err) = run(
        db,
        d,
        &["queue", "create", "--name", "x", "--strategy", "random", "--size", "2", "--group-key", "group_id"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--group-key applies to preference queues"), "{err}");
    let (code, _, err) = run(
        db,
        d,
        &["queue", "create", "--name", "x", "--kind", "preference", "--strategy", "random", "--size", "99999"],
    );
    assert_eq!(code, 2);
    assert!(err.contains("pair(s) of outputs of one group") || err.contains("several evaluators"), "{err}");

    // Answers through the library: ann and bob judge the first four pairs of "pr" (K = 2).
    let mut store = evalloop::store::open(db).unwrap();
    let spec = store.queue("pr").unwrap().unwrap();
    let items = store.queue_items(Some("pr")).unwrap();
    let now = Utc::now();
    let votes = [Choice::A, Choice::B, Choice::A, Choice::Tie];
    for (it, c) in items.iter().zip(votes) {
        for who in ["ann", "bob"] {
            let r = queue::record_answer(store.as_mut(), &spec, it, who, &Answer::Prefer(c), None, now).unwrap();
            assert_eq!(r, Recorded::Stored);
        }
    }
    // A third label on a done item is refused and stores nothing; a repeat is a duplicate.
    let r = queue::record_answer(store.as_mut(), &spec, &items[0], "cid", &Answer::Prefer(Choice::B), None, now);
    assert_eq!(r.unwrap(), Recorded::Full);
    let r = queue::record_answer(store.as_mut(), &spec, &items[0], "ann", &Answer::Prefer(Choice::B), None, now);
    assert_eq!(r.unwrap(), Recorded::Duplicate);
    assert!(queue::record_answer(store.as_mut(), &spec, &items[5], "ann", &Answer::Rating(3), None, now).is_err());
    let labels = store.queue_labels(Some("pr")).unwrap();
    assert_eq!(labels.len(), 8);
    assert!(labels.iter().all(|l| l.reviewer != "cid"), "the refused answer left a label");
    assert_eq!(queue::next_item(&spec, &items, &labels, "cid").unwrap().position, 4);
    let prefs = store.preferences(None).unwrap();
    let first: Vec<_> = prefs.iter().filter(|e| e.request_id == items[0].request_id).collect();
    assert_eq!(first.len(), 2, "{first:?}");
    assert_eq!(first[0].other_request_id, items[0].other_request_id);
    assert_eq!(first[0].value, FeedbackValue::Choice(Choice::A));
    assert_eq!(first[0].feedback_type.as_str(), "explicit_preference");
    assert!(prefs.iter().all(|e| e.user_id.as_deref() != Some("cid")));

    // One request in two pairs: the same reviewer answers both (the label's key is the pair).
    let big = store.queue("pd").unwrap().unwrap();
    let big_items = store.queue_items(Some("pd")).unwrap();
    let mut by_request: BTreeMap<&str, Vec<&QueueItem>> = BTreeMap::new();
    for i in &big_items {
        by_request.entry(&i.request_id).or_default().push(i);
        by_request.entry(i.other_request_id.as_deref().unwrap()).or_default().push(i);
    }
    let shared = by_request.values().find(|v| v.len() >= 2).expect("40 pairs of 392 outputs share one");
    for it in &shared[..2] {
        let r = queue::record_answer(store.as_mut(), &big, it, "ann", &Answer::Prefer(Choice::B), Some("close"), now);
        assert_eq!(r.unwrap(), Recorded::Stored);
    }
    drop(store);

    // show: identical reviewers agree fully; the weighted pairwise accuracy by hand.
    let s = ok_json(db, d, &["queue", "show", "pr", "--bootstrap", "0"]);
    assert_eq!(s["progress"]["done"], 4);
    assert_eq!(s["agreement"]["percent_agreement"], 1.0, "{}", s["agreement"]);
    assert_eq!(s["tied_pairs"], 1);
    let mut num = 0.0;
    let mut den = 0.0;
    for (it, c) in items.iter().zip(votes).take(3) {
        let (sa, sb) = (ex.base[&it.request_id], ex.base[it.other_request_id.as_ref().unwrap()]);
        let y = if sa == sb {
            0.5
        } else if (c == Choice::A) == (sa > sb) {
            1.0
        } else {
            0.0
        };
        num += y / it.probability;
        den += 1.0 / it.probability;
    }
    assert!((s["pairwise_accuracy"]["mean"].as_f64().unwrap() - num / den).abs() < 1e-12, "{}", s["pairwise_accuracy"]);
    let (_, text, _) = run(db, d, &["queue", "show", "pr", "--bootstrap", "0"]);
    assert!(text.contains("4 of 12 items done, 8 of 24 labels"), "{text}");
    assert!(text.contains("3 decisive pairs, 1 tied"), "{text}");

    // export: pairs and choices.
    let (code, out, _) = run(db, d, &["queue", "export", "pr"]);
    assert_eq!(code, 0);
    let lines: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 12);
    assert_eq!(lines[1]["other_request_id"].as_str(), items[1].other_request_id.as_deref());
    assert_eq!(lines[1]["answers"][0]["choice"], "b");

    // import: a pair named in reverse order has its a and b swapped; a missing other id is refused.
    let imp = d.join("prefs.jsonl");
    let (a5, b5) = (&items[5].request_id, items[5].other_request_id.as_ref().unwrap());
    std::fs::write(&imp, format!("{{\"request_id\": \"{a5}\", \"reviewer\": \"dan\", \"answer\": \"a\"}}\n")).unwrap();
    let (code, _, err) = run(db, d, &["queue", "import", "pr", imp.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("prefs.jsonl:1: other_request_id: missing"), "{err}");
    let a0 = &items[0].request_id;
    let b0 = items[0].other_request_id.as_ref().unwrap();
    std::fs::write(
        &imp,
        format!(
            "{{\"request_id\": \"{b5}\", \"other_request_id\": \"{a5}\", \"reviewer\": \"dan\", \"answer\": \"a\"}}\n\
             {{\"request_id\": \"{a0}\", \"other_request_id\": \"{b0}\", \"reviewer\": \"dan\", \"answer\": \"tie\"}}\n"
        ),
    )
    .unwrap();
    let n = ok_json(db, d, &["queue", "import", "pr", imp.to_str().unwrap()]);
    assert_eq!((n["stored"].as_u64(), n["full"].as_u64()), (Some(1), Some(1)), "{n}");
    let store = evalloop::store::open(db).unwrap();
    let dan: Vec<_> =
        store.preferences(None).unwrap().into_iter().filter(|e| e.user_id.as_deref() == Some("dan")).collect();
    assert_eq!(dan.len(), 1);
    assert_eq!((&dan[0].request_id, dan[0].value.clone()), (a5, FeedbackValue::Choice(Choice::B)));
}

#[test]
fn preference_queues_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    pairs_contract(&dir.path().join("q.db").display().to_string());
}

#[test]
fn preference_queues_on_postgres() {
    let Some(pg) = PgSchema::new("qpairs") else { return };
    pairs_contract(&pg.url);
}

/// The queue tables as the first release of queues made them, with one label.
const OLD_TABLES: &str =
    "CREATE TABLE review_queues (name TEXT PRIMARY KEY, spec TEXT NOT NULL, created_at TEXT NOT NULL);
    CREATE TABLE queue_items (queue TEXT NOT NULL, position BIGINT NOT NULL, request_id TEXT NOT NULL,
        probability DOUBLE PRECISION NOT NULL, priority DOUBLE PRECISION NOT NULL, PRIMARY KEY (queue, position));
    CREATE TABLE queue_labels (queue TEXT NOT NULL, request_id TEXT NOT NULL, reviewer TEXT NOT NULL,
        outcome TEXT NOT NULL, event_id TEXT, ts BIGINT NOT NULL, PRIMARY KEY (queue, request_id, reviewer));
    INSERT INTO queue_items VALUES ('old', 0, 'r1', 0.5, 1.0);
    INSERT INTO queue_labels VALUES ('old', 'r1', 'ann', 'labelled', 'queue:old:0:ann', 1000000);";

fn check_migrated(db: &str) {
    let mut store = evalloop::store::open(db).unwrap();
    let labels = store.queue_labels(Some("old")).unwrap();
    assert_eq!(labels.len(), 1);
    assert_eq!((labels[0].reviewer.as_str(), labels[0].other_request_id.as_deref()), ("ann", None));
    assert_eq!(store.queue_items(Some("old")).unwrap()[0].other_request_id, None);
    // Two pairs sharing r1, answered by ann: both stored.
    let mut pair = labels[0].clone();
    for other in ["r2", "r3"] {
        pair.other_request_id = Some(other.into());
        assert_eq!(store.insert_queue_labels(std::slice::from_ref(&pair)).unwrap().stored, 1);
    }
    assert_eq!(store.insert_queue_labels(std::slice::from_ref(&pair)).unwrap().duplicate, 1);
    drop(store);
    // Opening again changes nothing.
    assert_eq!(evalloop::store::open(db).unwrap().queue_labels(Some("old")).unwrap().len(), 3);
}

#[test]
fn queue_tables_from_before_pairs_are_migrated_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    rusqlite::Connection::open(&path).unwrap().execute_batch(OLD_TABLES).unwrap();
    check_migrated(&path.display().to_string());
}

#[test]
fn queue_tables_from_before_pairs_are_migrated_on_postgres() {
    let Some(pg) = PgSchema::new("qmigrate") else { return };
    let mut c = postgres::Client::connect(&pg.url, postgres::NoTls).unwrap();
    c.batch_execute(OLD_TABLES).unwrap();
    drop(c);
    check_migrated(&pg.url);
}

/// Eight reviewers answer the same item of a two-reviewer queue at once, each on a connection
/// of their own: exactly two labels are stored, the other six are refused as full.
fn racing_answers(db: &str) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok_json(db, d, &["ingest", "logs", LOGS]);
    ok_json(
        db,
        d,
        &["queue", "create", "--name", "race", "--strategy", "random", "--size", "3", "--reviewers-per-item", "2"],
    );
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|n| {
            let (db, barrier) = (db.to_string(), barrier.clone());
            std::thread::spawn(move || {
                let mut store = evalloop::store::open(&db).unwrap();
                let spec = store.queue("race").unwrap().unwrap();
                let item = store.queue_items(Some("race")).unwrap().remove(0);
                barrier.wait();
                let who = format!("rev-{n}");
                queue::record_answer(store.as_mut(), &spec, &item, &who, &Answer::Rating(4), None, Utc::now()).unwrap()
            })
        })
        .collect();
    let outcomes: Vec<Recorded> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(outcomes.iter().filter(|r| **r == Recorded::Stored).count(), 2, "{outcomes:?}");
    assert_eq!(outcomes.iter().filter(|r| **r == Recorded::Full).count(), 6, "{outcomes:?}");
    let store = evalloop::store::open(db).unwrap();
    let labels = store.queue_labels(Some("race")).unwrap();
    assert_eq!(labels.len(), 2);
    let events = store.feedback_for(&labels[0].request_id).unwrap();
    assert_eq!(events.iter().filter(|e| e.event_id.starts_with("queue:race:")).count(), 2, "{events:?}");
}

#[test]
fn racing_answers_store_k_labels_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    racing_answers(&dir.path().join("race.db").display().to_string());
}

#[test]
fn racing_answers_store_k_labels_on_postgres() {
    let Some(pg) = PgSchema::new("qrace") else { return };
    racing_answers(&pg.url);
}
