//! The foundation commands, run as the built binary in a temp dir: ingest (good, bad, strict,
//! duplicate, orphan, stdin, CSV, interrupted), record, summary, stats.

use std::process::Command as StdCommand;

use serde_json::Value;

use crate::cli_support::{bin, json, write};

const LOGS: &str = r#"{"request_id": "r1", "timestamp": "2026-05-15T10:00:00Z", "prompt": "Summarise A", "output": "A", "eval_scores": {"overall": 0.9, "coherence": 4}, "metadata": {"user_cohort": "free", "use_case": "summarize"}}
{"request_id": "r2", "timestamp": "2026-05-15T11:00:00+02:00", "prompt": "Summarise B", "output": "B", "eval_scores": {"overall": 0.1}, "evaluator": "judge-v1", "metadata": {"user_cohort": "pro"}}

{"request_id": "r3", "timestamp": "2026-05-16T09:30:00Z", "prompt": "Q", "output": "O", "eval_scores": {"overall": 0.5}, "feedback_collected": true}
"#;

#[test]
fn good_logs_and_feedback_are_stored_and_counted() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "logs.jsonl", LOGS);
    let s = json(bin(d.path()).args(["ingest", "logs", "logs.jsonl"]));
    assert_eq!((s["read"].as_u64(), s["stored"].as_u64(), s["rejected"].as_u64()), (Some(3), Some(3), Some(0)));
    write(
        d.path(),
        "fb.jsonl",
        r#"{"request_id": "r1", "feedback_type": "explicit_thumbs_up", "value": true, "user_id": "u1"}
{"request_id": "r1", "feedback_type": "explicit_text_comment", "value": "Great summary, thanks!", "user_id": "u1"}
{"request_id": "r1", "feedback_type": "explicit_rating", "value": 2}
{"request_id": "r1", "feedback_type": "implicit_discard"}
{"request_id": "r2", "feedback_type": "implicit_edit", "value": false, "timestamp": "2026-05-15T12:00:00Z"}
"#,
    );
    let s = json(bin(d.path()).args(["ingest", "feedback", "fb.jsonl"]));
    assert_eq!((s["stored"].as_u64(), s["orphaned"].as_u64()), (Some(5), Some(0)));
    let sum = json(bin(d.path()).args(["summary", "r1"]));
    assert_eq!(sum["thumbs_up"], 1);
    assert_eq!(sum["avg_rating"], 2.0);
    assert_eq!(sum["comments"][0], "Great summary, thanks!");
    assert_eq!(sum["usage_indicators"]["implicit_discard"], true);
    assert_eq!(sum["human_score"], 3.5, "thumbs-up (5) and rating 2 average to 3.5");
    let st = json(bin(d.path()).args(["stats"]));
    assert_eq!(st["logs"], 3);
    assert_eq!(st["feedback_events"], 5);
    assert_eq!(st["evaluators"], serde_json::json!([["baseline", 2], ["judge-v1", 1]]));
    assert_eq!(st["first_timestamp"], "2026-05-15T09:00:00.000000Z", "offsets are normalised to UTC");
}

#[test]
fn every_kind_of_bad_row_is_named_with_file_line_and_field() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "logs.jsonl",
        r#"{"request_id": "ok", "timestamp": "2026-05-15T10:00:00Z", "prompt": "p", "output": "o", "eval_scores": {"overall": 0.5}}
{"timestamp": "2026-05-15T10:00:00Z", "prompt": "p", "output": "o", "eval_scores": {"overall": 0.5}}
{"request_id": "b", "timestamp": "last tuesday", "prompt": "p", "output": "o", "eval_scores": {"overall": 0.5}}
{"request_id": "c", "timestamp": "2026-05-15T10:00:00Z", "prompt": "p", "output": "o", "eval_scores": {"overall": NaN}}
{"request_id": "d", "timestamp": "2026-05-15T10:00:00Z", "prompt": "p", "output": "o", "eval_scores": {"overall": "0.5"}}
{"request_id": "e", "timestamp": "2026-05-15T10:00:00Z", "prompt": "p", "output": "o", "eval_scores": {"overall": 1.2}}
not json at all
"#,
    );
    let s = json(bin(d.path()).args(["ingest", "logs", "logs.jsonl"]));
    assert_eq!((s["stored"].as_u64(), s["rejected"].as_u64()), (Some(1), Some(6)));
    let rejects = std::fs::read_to_string(d.path().join("logs.jsonl.rejects.jsonl")).unwrap();
    let rows: Vec<Value> = rejects.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let got: Vec<(u64, &str)> =
        rows.iter().map(|r| (r["line"].as_u64().unwrap(), r["field"].as_str().unwrap())).collect();
    assert_eq!(
        got,
        vec![
            (2, "request_id"),
            (3, "timestamp"),
            (4, "eval_scores.overall"),
            (5, "eval_scores.overall"),
            (6, "eval_scores.overall"),
            (7, "")
        ]
    );
    assert!(rows[2]["error"].as_str().unwrap().contains("NaN"));
    assert!(rows[4]["error"].as_str().unwrap().contains("outside [0, 1]"));

    write(
        d.path(),
        "fb.jsonl",
        r#"{"request_id": "ok", "feedback_type": "explicit_rating", "value": 7}
{"request_id": "ok", "feedback_type": "explicit_like"}
{"request_id": "ok", "feedback_type": "explicit_rating", "value": "4"}
{"request_id": "ok", "feedback_type": "implicit_usage", "value": true, "timestamp": "2026-13-01T00:00:00Z"}
{"feedback_type": "explicit_thumbs_up"}
{"request_id": "ok", "feedback_type": "explicit_rating", "value": 4}
"#,
    );
    let out = bin(d.path()).args(["ingest", "feedback", "fb.jsonl"]).assert().success().get_output().clone();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("fb.jsonl:1: field `value`: rating 7 is not an integer from 1 to 5"), "{stderr}");
    assert!(stderr.contains("fb.jsonl:2: field `feedback_type`: unknown feedback_type"), "{stderr}");
    assert!(stderr.contains("fb.jsonl:3: field `value`"), "{stderr}");
    assert!(stderr.contains("fb.jsonl:4: field `timestamp`"), "{stderr}");
    assert!(stderr.contains("fb.jsonl:5: field `request_id`: missing"), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("read 6, stored 1, duplicate 0, rejected 5, orphaned 0"), "{stdout}");
}

#[test]
fn strict_stores_nothing_from_a_file_with_a_bad_row() {
    let d = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for i in 0..50 {
        text.push_str(&format!(
            r#"{{"request_id": "r{i}", "timestamp": "2026-05-15T10:00:00Z", "prompt": "p", "output": "o", "eval_scores": {{"overall": 0.5}}}}"#
        ));
        text.push('\n');
    }
    text.push_str(r#"{"request_id": "bad", "timestamp": "2026-05-15T10:00:00Z", "prompt": "p", "output": "o", "eval_scores": {}}"#);
    text.push('\n');
    write(d.path(), "logs.jsonl", &text);
    bin(d.path())
        .args(["ingest", "logs", "logs.jsonl", "--strict", "--batch-size", "7"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("logs.jsonl:51: field `eval_scores.overall`: missing"))
        .stderr(predicates::str::contains("nothing from this file was stored"));
    let st = json(bin(d.path()).args(["stats"]));
    assert_eq!(st["logs"], 0);
    // Without --strict the 50 good rows go in.
    let s = json(bin(d.path()).args(["ingest", "logs", "logs.jsonl", "--batch-size", "7"]));
    assert_eq!((s["stored"].as_u64(), s["rejected"].as_u64()), (Some(50), Some(1)));
}

#[test]
fn reingest_is_idempotent_and_orphans_are_reported() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "logs.jsonl", LOGS);
    write(
        d.path(),
        "fb.jsonl",
        r#"{"request_id": "r1", "feedback_type": "explicit_rating", "value": 4}
{"request_id": "later", "feedback_type": "explicit_thumbs_down"}
"#,
    );
    let s = json(bin(d.path()).args(["ingest", "feedback", "fb.jsonl"]));
    assert_eq!((s["stored"].as_u64(), s["orphaned"].as_u64()), (Some(2), Some(2)));
    json(bin(d.path()).args(["ingest", "logs", "logs.jsonl"]));
    let s = json(bin(d.path()).args(["ingest", "logs", "logs.jsonl"]));
    assert_eq!((s["stored"].as_u64(), s["duplicate"].as_u64()), (Some(0), Some(3)));
    let s = json(bin(d.path()).args(["ingest", "feedback", "fb.jsonl"]));
    assert_eq!((s["stored"].as_u64(), s["duplicate"].as_u64()), (Some(0), Some(2)), "derived event ids are stable");
    let st = json(bin(d.path()).args(["stats"]));
    assert_eq!(st["orphaned_feedback"], 1, "r1's log arrived; `later` is still orphaned");
    let sum = json(bin(d.path()).args(["summary", "later"]));
    assert_eq!(sum["log_present"], false);
}

#[test]
fn stdin_and_csv_inputs() {
    let d = tempfile::tempdir().unwrap();
    let s = json(bin(d.path()).args(["ingest", "logs", "-"]).write_stdin(LOGS));
    assert_eq!(s["stored"], 3);
    assert_eq!(s["file"], "<stdin>");
    write(
        d.path(),
        "more.csv",
        "request_id,timestamp,prompt,output,eval_scores.overall,eval_scores.fluency,metadata.user_cohort,feedback_collected\n\
         c1,2026-05-17T10:00:00Z,\"Prompt, with comma\",Out,0.75,3.5,free,true\n\
         c2,2026-05-17T10:00:00Z,P,O,NaN,1,free,false\n\
         c3,2026-05-17T10:00:00Z,P,O,0.25,,pro,\n",
    );
    let s = json(bin(d.path()).args(["ingest", "logs", "more.csv"]));
    assert_eq!((s["stored"].as_u64(), s["rejected"].as_u64()), (Some(2), Some(1)));
    let rejects = std::fs::read_to_string(d.path().join("more.csv.rejects.jsonl")).unwrap();
    let r: Value = serde_json::from_str(rejects.lines().next().unwrap()).unwrap();
    assert_eq!((r["line"].as_u64(), r["field"].as_str()), (Some(3), Some("eval_scores.overall")));
    write(
        d.path(),
        "fb.csv",
        "request_id,feedback_type,value,user_id\nc1,explicit_rating,5,u9\nc1,explicit_rating,6,u9\n",
    );
    let s = json(bin(d.path()).args(["ingest", "feedback", "fb.csv"]));
    assert_eq!((s["stored"].as_u64(), s["rejected"].as_u64()), (Some(1), Some(1)));
    let st = json(bin(d.path()).args(["stats"]));
    assert_eq!(st["cohorts"], serde_json::json!([[null, 1], ["free", 2], ["pro", 2]]));
}

#[test]
fn record_validates_like_ingest() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "logs.jsonl", LOGS);
    json(bin(d.path()).args(["ingest", "logs", "logs.jsonl"]));
    bin(d.path())
        .args(["record", "--request-id", "r2", "--type", "rating", "--value", "7"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("rating 7 is not an integer from 1 to 5"));
    bin(d.path()).args(["record", "--request-id", "r2", "--type", "comment"]).assert().code(2);
    let r =
        json(bin(d.path()).args(["record", "--request-id", "r2", "--type", "rating", "--value", "4", "--user", "u"]));
    assert_eq!((r["stored"].as_bool(), r["value"].as_u64()), (Some(true), Some(4)));
    let r = json(bin(d.path()).args(["record", "--request-id", "nope", "--type", "thumbs-up"]));
    assert_eq!(r["orphaned"], true);
    let sum = json(bin(d.path()).args(["summary", "r2"]));
    assert_eq!(sum["avg_rating"], 4.0);
    bin(d.path()).args(["summary", "unknown"]).assert().code(2);
}

/// Kill -9 an ingest mid-file: the store must open and hold whole batches only.
#[test]
fn interrupted_ingest_keeps_whole_batches() {
    let d = tempfile::tempdir().unwrap();
    let generator = assert_cmd::cargo::cargo_bin("gen-logs");
    let st = StdCommand::new(generator)
        .args(["--logs", "400000", "--feedback", "0", "--out"])
        .arg(d.path())
        .output()
        .unwrap();
    assert!(st.status.success());
    let db = d.path().join("t.db");
    let mut child = StdCommand::new(assert_cmd::cargo::cargo_bin("evalloop"))
        .arg("--db")
        .arg(&db)
        .args(["ingest", "logs", "--batch-size", "1000"])
        .arg(d.path().join("logs.jsonl"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until some batches are committed, then kill without warning.
    let start = std::time::Instant::now();
    loop {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let wal = std::fs::metadata(d.path().join("t.db-wal")).map(|m| m.len()).unwrap_or(0);
        if wal > 2_000_000 || start.elapsed().as_secs() > 20 {
            break;
        }
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    let st = json(bin(d.path()).args(["stats"]));
    let n = st["logs"].as_u64().unwrap();
    assert!(status.code().is_none() || n < 400_000, "the ingest should have been killed mid-file");
    assert_eq!(n % 1000, 0, "only whole batches are stored, got {n}");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let ok: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(ok, "ok");
    let scores: i64 = conn.query_row("SELECT COUNT(*) FROM eval_scores", [], |r| r.get(0)).unwrap();
    assert_eq!(scores as u64, n, "every stored log has its evaluator score");
    // Re-running the ingest completes the file without duplicating anything.
    let s = json(bin(d.path()).args(["ingest", "logs", "logs.jsonl"]));
    assert_eq!((s["stored"].as_u64().unwrap(), s["duplicate"].as_u64().unwrap()), (400_000 - n, n));
}

/// Dimension ratings (docs/guide/multi-dimension.md) are stored, from JSONL and from a CSV
/// `dimension` column, and change no correlate figure; a dimension on another feedback type
/// is rejected with file, line and field.
#[test]
fn dimension_ratings_are_stored_and_change_no_correlate_figure() {
    let d = tempfile::tempdir().unwrap();
    let mut logs = String::new();
    let mut fb = String::new();
    for i in 0..12 {
        logs.push_str(&format!(
            "{{\"request_id\": \"q{i}\", \"timestamp\": \"2026-05-15T10:00:00Z\", \"prompt\": \"p\", \"output\": \"o\", \"eval_scores\": {{\"overall\": {}}}, \"metadata\": {{\"user_cohort\": \"{}\"}}}}\n",
            (i * 7 % 12) as f64 / 12.0,
            ["free", "pro"][i % 2]
        ));
        fb.push_str(&format!(
            "{{\"request_id\": \"q{i}\", \"feedback_type\": \"explicit_rating\", \"value\": {}, \"user_id\": \"u\"}}\n",
            1 + i % 5
        ));
    }
    write(d.path(), "logs.jsonl", &logs);
    write(d.path(), "fb.jsonl", &fb);
    json(bin(d.path()).args(["ingest", "logs", "logs.jsonl", "--strict"]));
    json(bin(d.path()).args(["ingest", "feedback", "fb.jsonl", "--strict"]));
    let before = json(bin(d.path()).args(["correlate"]));

    // Dimension ratings opposite to the overall ones: were they counted, every figure would move.
    let mut dims = String::new();
    for i in 0..12 {
        dims.push_str(&format!(
            "{{\"request_id\": \"q{i}\", \"feedback_type\": \"explicit_rating\", \"value\": {}, \"dimension\": \"coherence\", \"user_id\": \"u\"}}\n",
            5 - i % 5
        ));
    }
    write(d.path(), "dims.jsonl", &dims);
    let s = json(bin(d.path()).args(["ingest", "feedback", "dims.jsonl", "--strict"]));
    assert_eq!(s["stored"], 12);
    write(
        d.path(),
        "dims.csv",
        "request_id,feedback_type,value,dimension,user_id\nq1,explicit_rating,2,relevance,u\nq2,explicit_rating,5,,u2\n",
    );
    let s = json(bin(d.path()).args(["ingest", "feedback", "dims.csv", "--strict"]));
    assert_eq!(s["stored"], 2);
    // The CSV row with an empty dimension is an overall rating; the store compared with below
    // gets the same overall rating and no dimension ratings.
    let st = json(bin(d.path()).args(["stats"]));
    assert_eq!((st["feedback_events"].as_u64(), st["dimension_ratings"].as_u64()), (Some(13), Some(13)));

    let e = tempfile::tempdir().unwrap();
    write(e.path(), "logs.jsonl", &logs);
    write(e.path(), "fb.jsonl", &fb);
    write(e.path(), "overall.csv", "request_id,feedback_type,value,dimension,user_id\nq2,explicit_rating,5,,u2\n");
    json(bin(e.path()).args(["ingest", "logs", "logs.jsonl", "--strict"]));
    json(bin(e.path()).args(["ingest", "feedback", "fb.jsonl", "--strict"]));
    json(bin(e.path()).args(["ingest", "feedback", "overall.csv", "--strict"]));
    let with_dims = json(bin(d.path()).args(["correlate"]));
    let without = json(bin(e.path()).args(["correlate"]));
    assert_eq!(with_dims, without, "dimension ratings changed correlate");
    assert_eq!(json(bin(d.path()).args(["bias"])), json(bin(e.path()).args(["bias"])));
    assert_ne!(before, without, "the overall CSV rating counts (sanity)");

    // A dimension on a thumbs-up: rejected, named by file, line and field; --strict stores nothing.
    write(
        d.path(),
        "bad.jsonl",
        "{\"request_id\": \"q1\", \"feedback_type\": \"explicit_rating\", \"value\": 4, \"dimension\": \"coherence\", \"user_id\": \"v\"}\n\
         {\"request_id\": \"q1\", \"feedback_type\": \"explicit_thumbs_up\", \"dimension\": \"coherence\"}\n",
    );
    let out = bin(d.path())
        .args(["ingest", "feedback", "bad.jsonl", "--strict"])
        .assert()
        .failure()
        .get_output()
        .stderr
        .clone();
    let err = String::from_utf8_lossy(&out);
    assert!(err.contains("bad.jsonl:2") && err.contains("field `dimension`"), "{err}");
    let st = json(bin(d.path()).args(["stats"]));
    assert_eq!(st["dimension_ratings"], 13, "--strict stored part of the file");
}
