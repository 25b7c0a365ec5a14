//! The store-facing tests, run against every backend: a fresh SQLite file, and a fresh schema on
//! the PostgreSQL server that `EVALLOOP_TEST_PG` names (`scripts/with-postgres.sh` sets it).
//! Without `EVALLOOP_TEST_PG` the PostgreSQL half of each test is skipped, and says so on stderr
//! (written past the test harness's capture, so it shows even when the test passes).
//!
//! Each test runs the same body on each backend, checks the expected values, and checks that
//! the backends agree with each other (floats to 1e-9).

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{TimeZone, Utc};
use evalloop::feedback::HumanPolicy;
use evalloop::record::{EvalLog, FeedbackEvent, FeedbackType};
use evalloop::store::postgres::PostgresStore;
use evalloop::store::sqlite::SqliteStore;
use evalloop::store::{BatchOutcome, Filter, RunRecord, ScoredQuery, Store};
use serde_json::{Value, json};

/// Keeps a backend's storage alive for the test, and removes it afterwards.
enum Scratch {
    Dir(#[allow(dead_code)] tempfile::TempDir),
    Schema { admin_url: String, schema: String },
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Scratch::Schema { admin_url, schema } = self
            && let Ok(mut c) = postgres::Client::connect(admin_url, postgres::NoTls)
        {
            let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"));
        }
    }
}

struct Backend {
    name: &'static str,
    /// The `--db` value that names this store.
    db: String,
    store: Box<dyn Store>,
    /// How to open another connection to the same store.
    reopen: Box<dyn Fn() -> Box<dyn Store>>,
    _scratch: Scratch,
}

static SCHEMA_SEQ: AtomicUsize = AtomicUsize::new(0);

/// A fresh SQLite file, and a fresh schema on `EVALLOOP_TEST_PG` when it is set.
fn backends(test: &str) -> Vec<Backend> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.db");
    let p2 = path.clone();
    let mut out = vec![Backend {
        name: "sqlite",
        db: path.display().to_string(),
        store: Box::new(SqliteStore::open(&path).expect("open sqlite")),
        reopen: Box::new(move || Box::new(SqliteStore::open(&p2).expect("reopen sqlite"))),
        _scratch: Scratch::Dir(dir),
    }];
    match std::env::var("EVALLOOP_TEST_PG") {
        Ok(url) if !url.is_empty() => {
            let schema = format!(
                "t_{}_{}_{}",
                test.chars().take(30).collect::<String>(),
                std::process::id(),
                SCHEMA_SEQ.fetch_add(1, Ordering::SeqCst)
            )
            .to_lowercase();
            let mut admin = postgres::Client::connect(&url, postgres::NoTls)
                .unwrap_or_else(|e| panic!("EVALLOOP_TEST_PG is set but the server does not answer: {e}"));
            admin.batch_execute(&format!("CREATE SCHEMA \"{schema}\"")).expect("create schema");
            let sep = if url.contains('?') { '&' } else { '?' };
            let store_url = format!("{url}{sep}options=-csearch_path%3D{schema}");
            let u2 = store_url.clone();
            out.push(Backend {
                name: "postgres",
                db: store_url.clone(),
                store: Box::new(PostgresStore::open(&store_url).expect("open postgres")),
                reopen: Box::new(move || Box::new(PostgresStore::open(&u2).expect("reopen postgres"))),
                _scratch: Scratch::Schema { admin_url: url, schema },
            });
        }
        _ => {
            // Straight to stderr: the harness captures eprintln!, and a skip must never be silent.
            let _ = writeln!(
                std::io::stderr(),
                "store_backends::{test}: PostgreSQL half SKIPPED: EVALLOOP_TEST_PG is not set \
                 (run `scripts/with-postgres.sh cargo test --release --workspace` to include it)"
            );
        }
    }
    out
}

/// Runs `body` on each backend; checks that all backends returned the same value (floats to 1e-9).
fn on_each_backend(test: &str, body: impl Fn(&mut dyn Store) -> Value) -> Value {
    let mut results: Vec<(&str, Value)> = Vec::new();
    for mut b in backends(test) {
        let v = body(b.store.as_mut());
        results.push((b.name, v));
    }
    let (first_name, first) = results[0].clone();
    for (name, v) in &results[1..] {
        if let Err(at) = json_close(&first, v, "$") {
            panic!(
                "{test}: {first_name} and {name} disagree at {at}\n{first_name}: {}\n{name}: {}",
                serde_json::to_string_pretty(&first).unwrap_or_default(),
                serde_json::to_string_pretty(v).unwrap_or_default()
            );
        }
    }
    first
}

/// Equal JSON, numbers to 1e-9 (relative); `Err` names where they differ.
fn json_close(a: &Value, b: &Value, at: &str) -> Result<(), String> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap_or(f64::NAN), y.as_f64().unwrap_or(f64::NAN));
            if (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0) { Ok(()) } else { Err(at.into()) }
        }
        (Value::Array(x), Value::Array(y)) => {
            if x.len() != y.len() {
                return Err(format!("{at} (length {} vs {})", x.len(), y.len()));
            }
            x.iter().zip(y).enumerate().try_for_each(|(i, (x, y))| json_close(x, y, &format!("{at}[{i}]")))
        }
        (Value::Object(x), Value::Object(y)) => {
            if x.len() != y.len() {
                return Err(format!("{at} (keys)"));
            }
            x.iter().try_for_each(|(k, xv)| match y.get(k) {
                Some(yv) => json_close(xv, yv, &format!("{at}.{k}")),
                None => Err(format!("{at}.{k} (missing)")),
            })
        }
        _ if a == b => Ok(()),
        _ => Err(at.into()),
    }
}

fn to_json<T: serde::Serialize>(v: T) -> Value {
    serde_json::to_value(v).expect("serialise")
}

const INJECTION: &str = "x'); DROP TABLE feedback_events;--";

fn log(id: &str, hour: u32, overall: f64, evaluator: Option<&str>, metadata: Value) -> EvalLog {
    let mut v = json!({
        "request_id": id,
        "timestamp": format!("2026-05-15T{hour:02}:00:00Z"),
        "prompt": format!("prompt of {id}"),
        "output": format!("output of {id}"),
        "eval_scores": {"overall": overall, "coherence": overall * 5.0},
        "metadata": metadata,
    });
    if let Some(e) = evaluator {
        v["evaluator"] = json!(e);
    }
    EvalLog::from_json(v, false).expect("valid log")
}

fn fb(id: &str, event: &str, t: &str, v: Value) -> FeedbackEvent {
    let now = Utc.with_ymd_and_hms(2026, 5, 16, 0, 0, 0).single().expect("time");
    FeedbackEvent::from_json(
        json!({"event_id": event, "request_id": id, "feedback_type": t, "value": v, "user_id": "u1",
                "timestamp": "2026-05-15T20:00:00Z"}),
        false,
        now,
    )
    .expect("valid feedback")
}

fn fixture_logs() -> Vec<EvalLog> {
    vec![
        log(
            "r01",
            1,
            0.9,
            None,
            json!({"user_cohort": "free", "group_id": "g1", "prompt_version": "v1", "flag": true}),
        ),
        log("r02", 2, 0.2, None, json!({"user_cohort": "free", "group_id": "g2", "prompt_version": "v2", "tier": 2})),
        log("r03", 3, 0.5, Some("judge-v2"), json!({"user_cohort": "pro", "group_id": "g1", "use_case": "code"})),
        log("r04", 4, 0.7, None, json!({"user_cohort": "pro", "flag": false, "tier": 2.5})),
        log("r05", 5, 0.1, None, json!({"group_id": "g2"})),
        log("R06", 6, 0.6, Some("judge-v2"), json!({"user_cohort": "pro", "use_case": "chat"})),
        log("r07", 7, 0.4, None, json!({"user_cohort": "free", "prompt_version": "v2"})),
        log("r08", 8, 0.8, None, json!({})),
    ]
}

fn fixture_feedback() -> Vec<FeedbackEvent> {
    vec![
        fb("r01", "e01", "explicit_thumbs_up", json!(true)),
        fb("r01", "e02", "explicit_rating", json!(2)),
        fb("r02", "e03", "explicit_thumbs_down", json!(true)),
        fb("r03", "e04", "implicit_discard", json!(true)),
        fb("r03", "e05", "explicit_text_comment", json!("too long")),
        fb("r04", "e06", "implicit_usage", json!(true)),
        fb("r04", "e07", "explicit_rating", json!(5)),
        fb("r05", "e08", "implicit_edit", json!(true)),
        fb("r05", "e09", "implicit_usage", json!(false)),
        fb("R06", "e10", "explicit_rating", json!(4)),
        fb("r07", "e11", "explicit_thumbs_up", json!(true)),
        fb("zz-orphan", "e12", "explicit_rating", json!(3)),
    ]
}

/// Ingests the fixture in two transactions (logs, then feedback) and returns the outcomes.
fn load(s: &mut dyn Store) -> (BatchOutcome, BatchOutcome) {
    s.begin().expect("begin");
    let l = s.insert_logs(&fixture_logs()).expect("insert logs");
    s.commit().expect("commit");
    s.begin().expect("begin");
    let f = s.insert_feedback(&fixture_feedback()).expect("insert feedback");
    s.commit().expect("commit");
    (l, f)
}

#[test]
fn insert_counts_stored_duplicate_and_orphaned() {
    on_each_backend("insert_counts", |s| {
        let (l, f) = load(s);
        assert_eq!(l, BatchOutcome { stored: 8, duplicate: 0, orphaned: 0 });
        assert_eq!(f, BatchOutcome { stored: 12, duplicate: 0, orphaned: 1 });
        // Again, with a duplicate inside the batch and one new row each.
        s.begin().unwrap();
        let mut logs = fixture_logs();
        let first_r09 = log("r09", 9, 0.3, None, json!({"user_cohort": "free"}));
        logs.push(first_r09);
        logs.push(log("r09", 9, 0.99, Some("other"), json!({"user_cohort": "pro"})));
        let l2 = s.insert_logs(&logs).unwrap();
        let mut events = fixture_feedback();
        events.push(fb("r09", "e13", "explicit_rating", json!(1)));
        events.push(fb("r09", "e13", "explicit_rating", json!(5)));
        events.push(fb("nolog", "e14", "explicit_thumbs_up", json!(true)));
        let f2 = s.insert_feedback(&events).unwrap();
        s.commit().unwrap();
        assert_eq!(l2, BatchOutcome { stored: 1, duplicate: 9, orphaned: 0 });
        assert_eq!(f2, BatchOutcome { stored: 2, duplicate: 13, orphaned: 1 });
        // The first r09 in the batch won, log and score.
        let r09 = s
            .scored_requests(&ScoredQuery {
                filter: Filter { cohort: Some("free".into()), ..Default::default() },
                ..Default::default()
            })
            .unwrap();
        let r09: Vec<_> = r09.iter().filter(|r| r.request_id == "r09").collect();
        assert_eq!(r09.len(), 1);
        assert_eq!((r09[0].evaluator.as_str(), r09[0].eval_score, r09[0].human_score), ("baseline", 0.3, 1.0));
        // insert_scores: existing requests stored (the last score in a batch wins), unknown orphaned.
        s.begin().unwrap();
        let sc = s
            .insert_scores(
                "new-eval",
                &[("r01".into(), 0.1), ("r02".into(), 0.2), ("r01".into(), 0.15), ("ghost".into(), 0.5)],
            )
            .unwrap();
        let sc2 = s.insert_scores("new-eval", &[("r02".into(), 0.25)]).unwrap();
        s.commit().unwrap();
        assert_eq!(sc, BatchOutcome { stored: 3, duplicate: 0, orphaned: 1 });
        assert_eq!(sc2, BatchOutcome { stored: 1, duplicate: 0, orphaned: 0 });
        let new = s.eval_scores(&Filter { evaluator: Some("new-eval".into()), ..Default::default() }).unwrap();
        assert_eq!(new, vec![0.15, 0.25]);
        json!({"logs": [l, l2], "feedback": [f, f2], "scores": [sc, sc2], "new": new})
    });
}

/// The query variants the analyses ask for.
fn queries() -> Vec<(&'static str, ScoredQuery)> {
    let at = |h| Utc.with_ymd_and_hms(2026, 5, 15, h, 0, 0).single().expect("time");
    let implicit = HumanPolicy {
        implicit_usage: Some(4.0),
        implicit_edit: Some(3.0),
        implicit_discard: Some(2.0),
        thumbs_up: 4.5,
        ..Default::default()
    };
    let f = |filter: Filter| ScoredQuery { filter, ..Default::default() };
    vec![
        ("default", ScoredQuery::default()),
        ("implicit policy", ScoredQuery { policy: implicit.clone(), ..Default::default() }),
        ("since/until", f(Filter { since: Some(at(2)), until: Some(at(7)), ..Default::default() })),
        ("cohort", ScoredQuery { policy: implicit, ..f(Filter { cohort: Some("pro".into()), ..Default::default() }) }),
        ("evaluator", f(Filter { evaluator: Some("judge-v2".into()), ..Default::default() })),
        ("metadata column", f(Filter { metadata: vec![("prompt_version".into(), "v2".into())], ..Default::default() })),
        ("metadata json", f(Filter { metadata: vec![("group_id".into(), "g1".into())], ..Default::default() })),
        ("metadata bool", f(Filter { metadata: vec![("flag".into(), "1".into())], ..Default::default() })),
        ("metadata number", f(Filter { metadata: vec![("tier".into(), "2".into())], ..Default::default() })),
        ("group key json", ScoredQuery { group_key: Some("group_id".into()), ..Default::default() }),
        ("group key column", ScoredQuery { group_key: Some("use_case".into()), ..Default::default() }),
        ("with text, limit", ScoredQuery { with_text: true, limit: Some(3), ..Default::default() }),
    ]
}

#[test]
fn scored_requests_agree_across_backends() {
    let all = on_each_backend("scored_requests", |s| {
        load(s);
        s.begin().unwrap();
        s.insert_scores("new-eval", &[("r01".into(), 0.11), ("r04".into(), 0.44)]).unwrap();
        s.commit().unwrap();
        let mut out = serde_json::Map::new();
        for (name, q) in queries() {
            out.insert(name.into(), to_json(s.scored_requests(&q).unwrap()));
        }
        Value::Object(out)
    });
    let ids = |name: &str| -> Vec<String> {
        all[name]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| format!("{}/{}", r["request_id"].as_str().unwrap(), r["evaluator"].as_str().unwrap()))
            .collect()
    };
    // Byte order: "R06" sorts before "r01", as SQLite's BINARY collation has it.
    assert_eq!(
        ids("default"),
        [
            "R06/judge-v2",
            "r01/baseline",
            "r01/new-eval",
            "r02/baseline",
            "r04/baseline",
            "r04/new-eval",
            "r07/baseline"
        ]
    );
    assert_eq!(all["default"][1]["human_score"], json!(3.5));
    assert_eq!(ids("implicit policy").len(), 9, "r03 (discard) and r05 (edit) now have a score");
    assert_eq!(all["implicit policy"][7]["human_score"], json!(3.0), "r05: edit 3, usage=false ignored");
    assert_eq!(ids("since/until"), ["R06/judge-v2", "r02/baseline", "r04/baseline", "r04/new-eval"]);
    assert_eq!(ids("cohort"), ["R06/judge-v2", "r03/judge-v2", "r04/baseline", "r04/new-eval"]);
    assert_eq!(ids("evaluator"), ["R06/judge-v2"]);
    assert_eq!(ids("metadata column"), ["r02/baseline", "r07/baseline"]);
    assert_eq!(ids("metadata json"), ["r01/baseline", "r01/new-eval"]);
    assert_eq!(ids("metadata bool"), ["r01/baseline", "r01/new-eval"]);
    assert_eq!(ids("metadata number"), ["r02/baseline"]);
    assert_eq!(all["group key json"][1]["group"], json!("g1"));
    assert_eq!(all["group key json"][0]["group"], Value::Null);
    assert_eq!(all["group key column"][0]["group"], json!("chat"));
    let t = &all["with text, limit"];
    assert_eq!(t.as_array().unwrap().len(), 3);
    assert_eq!(t[1]["text"]["prompt"], json!("prompt of r01"));
    assert_eq!(
        t[1]["text"]["metadata"],
        json!(r#"{"flag":true,"group_id":"g1","prompt_version":"v1","user_cohort":"free"}"#)
    );
}

#[test]
fn cohort_stats_eval_scores_stats_agree() {
    let all = on_each_backend("cohort_stats", |s| {
        load(s);
        let implicit = HumanPolicy { implicit_usage: Some(4.0), implicit_discard: Some(2.0), ..Default::default() };
        let at = Utc.with_ymd_and_hms(2026, 5, 15, 4, 0, 0).single().unwrap();
        let mut stats = to_json(s.stats().unwrap());
        stats["backend"] = Value::Null;
        stats["location"] = Value::Null;
        json!({
            "cohorts": to_json(s.cohort_stats(&Filter::default(), &HumanPolicy::default()).unwrap()),
            "cohorts_implicit": to_json(s.cohort_stats(&Filter::default(), &implicit).unwrap()),
            "cohorts_filtered": to_json(s.cohort_stats(
                &Filter { since: Some(at), evaluator: Some("judge-v2".into()), ..Default::default() },
                &HumanPolicy::default(),
            ).unwrap()),
            "eval_scores": s.eval_scores(&Filter::default()).unwrap(),
            "eval_scores_pro": s.eval_scores(&Filter { cohort: Some("pro".into()), ..Default::default() }).unwrap(),
            "evaluators": s.evaluators().unwrap(),
            "stats": stats,
        })
    });
    let c = &all["cohorts"];
    assert_eq!(c.as_array().unwrap().len(), 3);
    assert_eq!(c[0]["cohort"], Value::Null, "no cohort sorts first");
    assert_eq!(
        (&c[1]["cohort"], &c[1]["requests"], &c[1]["with_feedback"], &c[1]["with_human_score"], &c[1]["positive"]),
        (&json!("free"), &json!(3), &json!(3), &json!(3), &json!(1))
    );
    assert_eq!((&c[2]["with_explicit"], &c[2]["with_implicit"]), (&json!(3), &json!(2)));
    assert_eq!(all["cohorts_implicit"][2]["with_human_score"], json!(3));
    assert_eq!(all["cohorts_filtered"][2]["mean_eval_score"], json!(0.6));
    assert_eq!(all["eval_scores"], json!([0.6, 0.9, 0.2, 0.5, 0.7, 0.1, 0.4, 0.8]));
    assert_eq!(all["evaluators"], json!(["baseline", "judge-v2"]));
    let st = &all["stats"];
    assert_eq!((&st["logs"], &st["feedback_events"], &st["orphaned_feedback"]), (&json!(8), &json!(12), &json!(1)));
    assert_eq!(st["first_timestamp"], json!("2026-05-15T01:00:00.000000Z"));
    assert_eq!(st["schema_version"], json!(evalloop::store::sqlite::SCHEMA_VERSION));
}

#[test]
fn feedback_for_and_log_exists() {
    on_each_backend("feedback_for", |s| {
        load(s);
        let r01 = s.feedback_for("r01").unwrap();
        assert_eq!(r01.len(), 2);
        assert_eq!(r01, fixture_feedback()[..2].to_vec());
        assert_eq!(s.feedback_for("zz-orphan").unwrap().len(), 1);
        assert!(s.log_exists("r01").unwrap());
        assert!(!s.log_exists("zz-orphan").unwrap());
        let r03: Vec<Value> = s.feedback_for("r03").unwrap().iter().map(FeedbackEvent::to_json).collect();
        json!({"r03": r03, "none": s.feedback_for("nothing").unwrap().len()})
    });
}

#[test]
fn rolled_back_transaction_leaves_nothing() {
    on_each_backend("rollback", |s| {
        s.begin().unwrap();
        s.insert_logs(&fixture_logs()).unwrap();
        s.insert_feedback(&fixture_feedback()).unwrap();
        s.insert_scores("new-eval", &[("r01".into(), 0.5)]).unwrap();
        s.rollback().unwrap();
        let st = s.stats().unwrap();
        assert_eq!((st.logs, st.feedback_events), (0, 0));
        assert!(s.evaluators().unwrap().is_empty());
        // The store is usable after a rollback (PostgreSQL's staging tables may have gone with it).
        let (l, f) = load(s);
        assert_eq!((l.stored, f.stored), (8, 12));
        // Several batches in one transaction (strict ingest) are all or nothing too.
        s.begin().unwrap();
        s.insert_logs(&[log("x1", 1, 0.5, None, json!({}))]).unwrap();
        s.insert_logs(&[log("x2", 1, 0.5, None, json!({}))]).unwrap();
        s.rollback().unwrap();
        assert!(!s.log_exists("x1").unwrap() && !s.log_exists("x2").unwrap());
        json!(s.stats().unwrap().logs)
    });
}

#[test]
fn injection_text_is_stored_and_reported_as_plain_text() {
    let all = on_each_backend("injection", |s| {
        let logs = vec![
            log("i1", 1, 0.5, Some(INJECTION), json!({"user_cohort": INJECTION, INJECTION: INJECTION})),
            log(INJECTION, 2, 0.6, None, json!({"user_cohort": "plain", "k\"ey": "v'al"})),
        ];
        s.begin().unwrap();
        s.insert_logs(&logs).unwrap();
        s.insert_feedback(&[
            fb("i1", INJECTION, "explicit_rating", json!(4)),
            fb(INJECTION, "e2", "explicit_rating", json!(2)),
        ])
        .unwrap();
        s.commit().unwrap();
        let by_cohort = Filter { cohort: Some(INJECTION.into()), ..Default::default() };
        let by_key = Filter { metadata: vec![(INJECTION.into(), INJECTION.into())], ..Default::default() };
        let by_quote = Filter { metadata: vec![("k\"ey".into(), "v'al".into())], ..Default::default() };
        let rows = s
            .scored_requests(&ScoredQuery {
                filter: by_key.clone(),
                group_key: Some(INJECTION.into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].group.as_deref(), Some(INJECTION));
        assert_eq!(rows[0].evaluator, INJECTION);
        let st = s.stats().unwrap();
        assert_eq!(st.feedback_events, 2, "feedback_events is still there");
        assert!(st.cohorts.iter().any(|(c, n)| c.as_deref() == Some(INJECTION) && *n == 1));
        json!({
            "by_cohort": to_json(s.scored_requests(&ScoredQuery { filter: by_cohort.clone(), ..Default::default() }).unwrap()),
            "by_quote": to_json(s.scored_requests(&ScoredQuery { filter: by_quote, ..Default::default() }).unwrap()),
            "cohort_stats": to_json(s.cohort_stats(&by_cohort, &HumanPolicy::default()).unwrap()),
            "eval_scores": s.eval_scores(&Filter { evaluator: Some(INJECTION.into()), ..Default::default() }).unwrap(),
            "feedback_for": s.feedback_for(INJECTION).unwrap().iter().map(FeedbackEvent::to_json).collect::<Vec<_>>(),
            "event_id": s.feedback_for("i1").unwrap()[0].event_id,
            "cohorts": to_json(&st.cohorts),
            "evaluators": s.evaluators().unwrap(),
        })
    });
    assert_eq!(all["by_cohort"][0]["cohort"], json!(INJECTION));
    assert_eq!(all["by_quote"][0]["request_id"], json!(INJECTION));
    assert_eq!(all["event_id"], json!(INJECTION));
    assert_eq!(all["cohort_stats"][0]["requests"], json!(1));
    assert_eq!(all["eval_scores"], json!([0.5]));
}

#[test]
fn reopening_keeps_data_and_schema_version() {
    for mut b in backends("reopen") {
        load(b.store.as_mut());
        drop(std::mem::replace(&mut b.store, (b.reopen)()));
        let again = (b.reopen)();
        let st = again.stats().unwrap();
        assert_eq!((st.schema_version, st.logs), (evalloop::store::sqlite::SCHEMA_VERSION, 8), "{}", b.name);
        assert_eq!(st.backend, b.name);
        assert!(!st.location.contains("password"), "{}", st.location);
    }
}

#[test]
fn failed_statement_makes_commit_fail_not_quietly_roll_back() {
    // PostgreSQL only: SQLite stores the NUL character that PostgreSQL refuses.
    for mut b in backends("failed_statement").into_iter().filter(|b| b.name == "postgres") {
        let s = b.store.as_mut();
        s.begin().unwrap();
        s.insert_logs(&fixture_logs()[..2]).unwrap();
        let mut bad = log("nul", 1, 0.5, None, json!({}));
        bad.prompt = "a\u{0}b".into();
        let e = s.insert_logs(&[bad]).unwrap_err().to_string();
        assert!(e.contains("0x00"), "{e}");
        let e = s.commit().unwrap_err().to_string();
        assert!(e.contains("rolled back"), "{e}");
        assert!(!s.log_exists("r01").unwrap(), "nothing of the failed transaction stays");
        let (l, _) = load(s);
        assert_eq!(l.stored, 8, "the store works after the failure");
    }
}

/// Runs the binary with `--json`; returns its JSON output.
fn evalloop(db: &str, args: &[&str]) -> Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_evalloop"))
        .args(["--db", db, "--json"])
        .args(args)
        .env_remove("EVALLOOP_CONFIG")
        .output()
        .expect("run evalloop");
    assert!(out.status.success(), "evalloop {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

#[test]
fn commands_answer_alike_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, rows: Vec<Value>| {
        let p = dir.path().join(name);
        let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let logs = write("logs.jsonl", fixture_logs().iter().map(EvalLog::to_json).collect());
    let feedback = write("feedback.jsonl", fixture_feedback().iter().map(FeedbackEvent::to_json).collect());
    let mut results = Vec::new();
    for b in backends("commands") {
        let db = b.db.as_str();
        let mut st = evalloop(db, &["stats"]);
        assert_eq!(st["backend"], json!(b.name));
        st["backend"] = Value::Null;
        st["location"] = Value::Null;
        let mut r = serde_json::Map::new();
        r.insert("ingest_logs".into(), evalloop(db, &["ingest", "logs", &logs]));
        r.insert("ingest_logs_again".into(), evalloop(db, &["ingest", "logs", &logs, "--batch-size", "3"]));
        r.insert("ingest_feedback".into(), evalloop(db, &["ingest", "feedback", &feedback, "--strict"]));
        let record = [
            "record",
            "--request-id",
            "r08",
            "--type",
            "rating",
            "--value",
            "5",
            "--timestamp",
            "2026-05-15T21:00:00Z",
        ];
        r.insert("record".into(), evalloop(db, &record));
        r.insert("summary".into(), evalloop(db, &["summary", "r01"]));
        r.insert("summary_orphan".into(), evalloop(db, &["summary", "zz-orphan"]));
        r.insert("empty_stats".into(), st);
        let mut st = evalloop(db, &["stats"]);
        st["location"] = Value::Null;
        st["backend"] = Value::Null;
        r.insert("stats".into(), st);
        let r = Value::Object(r);
        results.push((b.name, r));
    }
    let first = &results[0].1;
    assert_eq!(first["ingest_logs"]["stored"], json!(8));
    assert_eq!(first["ingest_logs_again"]["duplicate"], json!(8));
    assert_eq!(first["ingest_feedback"]["orphaned"], json!(1));
    assert_eq!(first["summary"]["human_score"], json!(3.5));
    assert_eq!(first["stats"]["feedback_events"], json!(13));
    for (name, r) in &results[1..] {
        assert_eq!(r, first, "{name} differs from sqlite");
    }
}

#[test]
fn request_ids_texts_and_runs_agree() {
    on_each_backend("request_ids_texts_and_runs_agree", |s| {
        load(s);
        let ids = s.request_ids(&Filter::default()).unwrap();
        let some: Vec<String> = ids.iter().take(2).cloned().collect();
        let texts = s.request_texts(&some).unwrap();
        assert!(s.request_texts(&["no-such-request".to_string()]).is_err());
        let run = RunRecord {
            id: "r1".into(),
            started_at: "2026-05-31T00:00:00.000000Z".into(),
            config_hash: "abc".into(),
            status: "running".into(),
            run_dir: "runs/r1".into(),
            ..Default::default()
        };
        s.save_run(&run).unwrap();
        let done = RunRecord {
            status: "completed".into(),
            decision: Some("kept_baseline".into()),
            metrics: Some(serde_json::json!({"pre_spearman": 0.25})),
            ..run.clone()
        };
        s.save_run(&done).unwrap();
        let runs = s.runs().unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0], done);
        assert_eq!(s.run("r1").unwrap(), Some(done));
        serde_json::json!({"ids": ids, "texts": to_json(texts), "runs": to_json(runs)})
    });
}

/// Dimension ratings on both backends: stored apart (mixed in one batch with overall feedback),
/// duplicates and orphans counted, per-request means alike, and no answer of the analyses moved.
#[test]
fn dimension_ratings_agree_and_change_no_answer() {
    let dim = |id: &str, event: &str, v: i64, d: &str| {
        let now = Utc.with_ymd_and_hms(2026, 5, 16, 0, 0, 0).single().expect("time");
        FeedbackEvent::from_json(
            json!({"event_id": event, "request_id": id, "feedback_type": "explicit_rating", "value": v,
                   "dimension": d, "user_id": "u1", "timestamp": "2026-05-15T20:00:00Z"}),
            false,
            now,
        )
        .expect("valid dimension rating")
    };
    let all = on_each_backend("dimension_ratings", |s| {
        load(s);
        let answers = |s: &mut dyn Store| {
            let mut stats = to_json(s.stats().unwrap());
            stats["backend"] = Value::Null;
            stats["location"] = Value::Null;
            stats["dimension_ratings"] = Value::Null;
            json!({
                "scored": to_json(s.scored_requests(&ScoredQuery::default()).unwrap()),
                "cohorts": to_json(s.cohort_stats(&Filter::default(), &HumanPolicy::default()).unwrap()),
                "feedback_r01": format!("{:?}", s.feedback_for("r01").unwrap()),
                "stats": stats,
            })
        };
        let before = answers(s);
        let dims = vec![
            dim("r01", "d1", 1, "coherence"),
            dim("r01", "d2", 4, "coherence"),
            dim("r01", "d3", 2, "fluency"),
            dim("zz-none", "d4", 3, "coherence"),
        ];
        s.begin().unwrap();
        let first = s.insert_feedback(&dims).unwrap();
        s.commit().unwrap();
        let unchanged = answers(s) == before;
        // One batch mixing overall feedback, new and repeated dimension ratings.
        let mixed =
            vec![fb("r02", "plain-1", "explicit_rating", json!(5)), dims[0].clone(), dim("r02", "d5", 5, "fluency")];
        s.begin().unwrap();
        let again = s.insert_feedback(&mixed).unwrap();
        s.commit().unwrap();
        json!({
            "first": to_json(first),
            "again": to_json(again),
            "unchanged": unchanged,
            "feedback_events": s.stats().unwrap().feedback_events,
            "dimension_ratings": s.stats().unwrap().dimension_ratings,
            "scores": to_json(s.dimension_scores(&["coherence".into(), "fluency".into()]).unwrap()),
            "only_fluency": to_json(s.dimension_scores(&["fluency".into()]).unwrap()),
        })
    });
    assert_eq!(all["first"], json!({"stored": 4, "duplicate": 0, "orphaned": 1}));
    assert_eq!(all["unchanged"], json!(true), "dimension ratings changed an answer of the analyses");
    assert_eq!(all["again"], json!({"stored": 2, "duplicate": 1, "orphaned": 0}));
    assert_eq!((&all["feedback_events"], &all["dimension_ratings"]), (&json!(13), &json!(5)));
    assert_eq!(
        all["scores"],
        json!([
            {"request_id": "r01", "dimension": "coherence", "mean": 2.5, "ratings": 2},
            {"request_id": "r01", "dimension": "fluency", "mean": 2.0, "ratings": 1},
            {"request_id": "r02", "dimension": "fluency", "mean": 5.0, "ratings": 1},
            {"request_id": "zz-none", "dimension": "coherence", "mean": 3.0, "ratings": 1},
        ])
    );
    assert_eq!(all["only_fluency"].as_array().unwrap().len(), 2);
}

/// `dataset build` with `unlabelled` writes the same files on both backends: the unrated
/// logs (whatever their evaluator), none of a validation or test group.
#[test]
fn unlabelled_outputs_agree_across_backends() {
    let out = on_each_backend("unlabelled_outputs_agree_across_backends", |s| {
        load(s);
        let dir = tempfile::tempdir().unwrap();
        let cfg = evalloop::dataset::DatasetConfig {
            label: evalloop::dataset::LabelKind::Graded,
            weighting: vec![evalloop::dataset::Scheme::None],
            group_key: Some("group_id".into()),
            evaluator: Some("baseline".into()),
            train_fraction: 1.0,
            validation_fraction: 0.0,
            min_effective_size: 0.0,
            unlabelled: 100,
            ..Default::default()
        };
        evalloop::dataset::build(&*s, &HumanPolicy::default(), &cfg, dir.path()).unwrap();
        let rows: Vec<Value> = std::fs::read_to_string(dir.path().join("unlabelled.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        json!(rows)
    });
    let ids: Vec<&str> = out.as_array().unwrap().iter().map(|r| r["request_id"].as_str().unwrap()).collect();
    // r03 (a comment and a discard) and r05 (implicit only) carry no human score, r08 no
    // feedback; the rest are rated.
    assert_eq!(ids, ["r03", "r05", "r08"]);
    assert_eq!(out[1]["group"], "g2");
    assert_eq!(out[0]["cohort"], "pro");
}

/// `dataset::metadata_group` names a group as both stores do for a group key (it names the
/// groups of unlabelled requests, which must match the split's): text, booleans and numbers.
#[test]
fn metadata_group_matches_the_stores_group_names() {
    on_each_backend("metadata_group_matches_the_stores_group_names", |s| {
        load(s);
        let mut out = serde_json::Map::new();
        for key in ["group_id", "flag", "tier", "prompt_version"] {
            let q = ScoredQuery { group_key: Some(key.into()), with_text: true, ..Default::default() };
            let rows = s.scored_requests(&q).unwrap();
            assert!(rows.iter().any(|r| r.group.is_some()), "{key}: no request has it");
            for r in &rows {
                let metadata: Value = serde_json::from_str(&r.text.as_ref().unwrap().metadata).unwrap();
                assert_eq!(evalloop::dataset::metadata_group(metadata.get(key)), r.group, "{key} of {}", r.request_id);
            }
            out.insert(key.into(), json!(rows.iter().map(|r| r.group.clone()).collect::<Vec<_>>()));
        }
        Value::Object(out)
    });
}

#[test]
fn evaluated_requests_and_estimate_agree_across_backends() {
    let all = on_each_backend("evaluated", |s| {
        load(s);
        let judge = Filter { evaluator: Some("judge-v2".into()), ..Default::default() };
        let pro = Filter { cohort: Some("pro".into()), ..Default::default() };
        json!({
            "all": to_json(s.evaluated_requests(&Filter::default()).unwrap()),
            "judge": to_json(s.evaluated_requests(&judge).unwrap()),
            "pro": to_json(s.evaluated_requests(&pro).unwrap()),
        })
    });
    let ids = |v: &Value| -> Vec<String> {
        v.as_array().unwrap().iter().map(|r| r["request_id"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(ids(&all["all"]), ["R06", "r01", "r02", "r03", "r04", "r05", "r07", "r08"]);
    assert_eq!(ids(&all["judge"]), ["R06", "r03"]);
    assert_eq!(ids(&all["pro"]), ["R06", "r03", "r04"]);
    let r01 = &all["all"][1];
    assert_eq!((r01["cohort"].as_str(), r01["prompt_version"].as_str()), (Some("free"), Some("v1")));
    assert_eq!(r01["eval_score"], json!(0.9));
    assert_eq!(all["all"][3]["use_case"], json!("code"));

    let mut results = Vec::new();
    for mut b in backends("estimate") {
        load(b.store.as_mut());
        let e = ["estimate", "--evaluator", "judge-v2"];
        results.push((b.name, json!({
            "overall": evalloop(&b.db, &["estimate", "--evaluator", "baseline"]),
            "judge": evalloop(&b.db, &e),
            "by_cohort": evalloop(&b.db, &["estimate", "--evaluator", "baseline", "--by", "cohort", "--metric", "pass_rate"]),
                "trend": evalloop(&b.db, &["trend", "--evaluator", "baseline", "--every", "day", "--by", "cohort"]),
        })));
    }
    let first = &results[0].1;
    assert_eq!(first["overall"]["overall"]["requests"], json!(6));
    for (name, r) in &results[1..] {
        if let Err(at) = json_close(first, r, "$") {
            panic!("estimate: sqlite and {name} disagree at {at}");
        }
    }
}

/// `rater_events`: every request's explicit ratings and thumbs in one read, in the order
/// `feedback_for` gives each request's, filtered like the other reads, with the filter's
/// evaluator score; with a dimension, that dimension's ratings. Same answer on both backends.
#[test]
fn rater_events_read_every_requests_ratings_at_once() {
    let out = on_each_backend("rater_events", |s| {
        load(s);
        let now = Utc.with_ymd_and_hms(2026, 5, 16, 0, 0, 0).single().expect("time");
        let extra: Vec<FeedbackEvent> = [
            json!({"event_id": "x1", "request_id": "r01", "feedback_type": "explicit_rating", "value": 4,
                   "user_id": "u2", "timestamp": "2026-05-15T19:00:00Z"}),
            json!({"event_id": "x2", "request_id": "r01", "feedback_type": "explicit_rating", "value": 3,
                   "dimension": "coherence", "user_id": "u2", "timestamp": "2026-05-15T19:00:00Z"}),
            json!({"event_id": "x3", "request_id": "r03", "feedback_type": "explicit_rating", "value": 5,
                   "dimension": "coherence", "user_id": "u3", "timestamp": "2026-05-15T19:00:00Z"}),
            json!({"event_id": "x4", "request_id": "zz-orphan", "feedback_type": "explicit_rating", "value": 2,
                   "dimension": "coherence", "user_id": "u3", "timestamp": "2026-05-15T19:00:00Z"}),
        ]
        .into_iter()
        .map(|v| FeedbackEvent::from_json(v, false, now).expect("valid feedback"))
        .collect();
        s.begin().unwrap();
        s.insert_feedback(&extra).unwrap();
        s.commit().unwrap();
        let show = |evs: Vec<evalloop::store::RaterEvent>| -> Value {
            evs.into_iter()
                .map(|e| json!({"cohort": e.cohort, "use_case": e.use_case, "score": e.eval_score, "event": e.event.to_json()}))
                .collect()
        };
        let all = s.rater_events(&Filter::default(), None).unwrap();
        // The same events as one feedback_for per request, less implicit signals and comments.
        let mut want = Vec::new();
        for id in s.request_ids(&Filter::default()).unwrap() {
            want.extend(s.feedback_for(&id).unwrap().into_iter().filter(|e| {
                matches!(e.feedback_type, FeedbackType::Rating | FeedbackType::ThumbsUp | FeedbackType::ThumbsDown)
            }));
        }
        assert_eq!(all.iter().map(|e| e.event.clone()).collect::<Vec<_>>(), want);
        let judged = Filter { evaluator: Some("judge-v2".into()), ..Default::default() };
        let free = Filter { cohort: Some("free".into()), ..Default::default() };
        json!({
            "all": show(all),
            "judge": show(s.rater_events(&judged, None).unwrap()),
            "free": show(s.rater_events(&free, None).unwrap()),
            "coherence": show(s.rater_events(&Filter::default(), Some("coherence")).unwrap()),
            "fluency": show(s.rater_events(&Filter::default(), Some("fluency")).unwrap()),
        })
    });
    let ids = |k: &str| -> Vec<String> {
        out[k].as_array().unwrap().iter().map(|e| e["event"]["event_id"].as_str().unwrap().to_string()).collect()
    };
    // Request ids in byte order: R06 before r01.
    assert_eq!(ids("all"), ["e10", "x1", "e01", "e02", "e03", "e07", "e11"]);
    assert_eq!(ids("judge"), ["e10"]);
    assert_eq!(out["judge"][0]["score"], json!(0.6));
    assert_eq!(out["judge"][0]["use_case"], json!("chat"));
    assert_eq!(out["all"][0]["score"], Value::Null);
    assert_eq!(ids("free"), ["x1", "e01", "e02", "e03", "e11"]);
    assert_eq!(ids("coherence"), ["x2", "x3"]);
    assert_eq!(out["coherence"][1]["event"]["dimension"], json!("coherence"));
    assert_eq!(out["coherence"][1]["cohort"], json!("pro"));
    assert!(out["fluency"].as_array().unwrap().is_empty());
}

/// `implicit_edit` events keep their `edited_output` on both backends (read back by
/// `feedback_for`, `stored_events` and `edited_outputs`), and a store made before the column
/// existed gains it on open, its old events reading as edits without text.
#[test]
fn edited_outputs_are_stored_and_added_to_older_stores() {
    let edit = |id: &str, event: &str, text: Option<&str>, value: bool| {
        let mut v = json!({"event_id": event, "request_id": id, "feedback_type": "implicit_edit", "value": value,
                           "timestamp": format!("2026-05-15T2{}:00:00Z", event.len() % 4)});
        if let Some(t) = text {
            v["edited_output"] = json!(t);
        }
        FeedbackEvent::from_json(v, false, Utc::now()).expect("valid edit")
    };
    for mut b in backends("edited_outputs") {
        load(b.store.as_mut());
        // An older store: the column dropped again, as a store written before it existed.
        match &b._scratch {
            Scratch::Dir(_) => {
                let c = rusqlite::Connection::open(&b.db).expect("open file");
                c.execute_batch("ALTER TABLE feedback_events DROP COLUMN edited_output").expect("drop column");
            }
            Scratch::Schema { admin_url, schema } => {
                let mut c = postgres::Client::connect(admin_url, postgres::NoTls).expect("connect");
                c.batch_execute(&format!("ALTER TABLE \"{schema}\".feedback_events DROP COLUMN edited_output"))
                    .expect("drop column");
            }
        }
        drop(std::mem::replace(&mut b.store, (b.reopen)()));
        let s = b.store.as_mut();
        assert_eq!(s.feedback_for("r05").unwrap()[0].edited_output, None, "{}", b.name);
        s.begin().unwrap();
        let events = [
            edit("r01", "x1", Some("Kept, then rewritten:\n\u{1b}[31mline two"), true),
            edit("r01", "x22", Some(""), true),
            edit("r02", "x333", Some("not an edit after all"), false),
            edit("zz-orphan", "x4444", Some("no log"), true),
        ];
        assert_eq!(s.insert_feedback(&events).unwrap().stored, 4, "{}", b.name);
        s.commit().unwrap();
        let r01 = s.feedback_for("r01").unwrap();
        let texts: Vec<Option<&str>> = r01.iter().map(|e| e.edited_output.as_deref()).collect();
        assert!(texts.contains(&Some("Kept, then rewritten:\n\u{1b}[31mline two")) && texts.contains(&Some("")));
        let stored = s.stored_events(&["x1", "x333", "e08"]).unwrap();
        assert_eq!(stored[0].as_ref(), Some(&events[0]), "{}", b.name);
        assert_eq!(stored[1].as_ref(), Some(&events[2]), "{}", b.name);
        assert_eq!(stored[2].as_ref().and_then(|e| e.edited_output.clone()), None);
        // Only true edits with a text, of logged requests matching the filter.
        let all = s.edited_outputs(&Filter::default()).unwrap();
        let got: Vec<(&str, &str, &str)> =
            all.iter().map(|e| (e.request_id.as_str(), e.event_id.as_str(), e.edited_output.as_str())).collect();
        assert_eq!(got, [("r01", "x1", "Kept, then rewritten:\n\u{1b}[31mline two"), ("r01", "x22", "")], "{}", b.name);
        let pro = Filter { cohort: Some("pro".into()), ..Default::default() };
        assert!(s.edited_outputs(&pro).unwrap().is_empty(), "{}", b.name);
    }
}
