//! Regression tests of the hardening defects (issue 17), each named after the defect it pins:
//! the real binary in a temp dir, on SQLite.

use std::path::Path;

use assert_cmd::Command;
use serde_json::Value;

use crate::cli_support::{bin, evalloop, text, write};

fn json_out(c: &mut Command) -> Value {
    let out = c.arg("--json").assert().success().get_output().clone();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
}

fn log(id: &str, prompt: &str, overall: f64) -> String {
    format!(
        r#"{{"request_id": "{id}", "timestamp": "2026-05-15T10:00:00Z", "prompt": "{prompt}", "output": "o", "eval_scores": {{"overall": {overall}}}}}"#
    )
}

fn rejects(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn failed_ingest_exits_nonzero() {
    // The reader thread used to panic on this batch size (capacity overflow) while ingest
    // printed "read 0, stored 0" and exited 0.
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "logs.jsonl", &log("a", "p", 0.5));
    for flags in [&["--batch-size", "18446744073709551615"][..], &["--batch-size", "18446744073709551615", "--strict"]]
    {
        let out =
            bin(d.path()).args(["ingest", "logs", "logs.jsonl"]).args(flags).assert().failure().get_output().clone();
        assert_ne!(out.status.code(), Some(0));
        assert!(String::from_utf8_lossy(&out.stderr).contains("--batch-size"));
    }
}

#[test]
fn empty_store_path_is_refused() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "logs.jsonl", &log("a", "p", 0.5));
    write(d.path(), "empty.toml", "[store]\ndb = \"\"\n");
    let run = |c: &mut Command| {
        let out = c.args(["ingest", "logs", "logs.jsonl"]).assert().code(2).get_output().clone();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(err.contains("store"), "{err}");
    };
    let plain = || evalloop(d.path());
    run(plain().args(["--db", ""]));
    run(plain().args(["--db", ":memory:"]));
    run(plain().args(["--db", "file::memory:?cache=shared"]));
    run(plain().env("EVALLOOP_DB", ""));
    run(plain().args(["--config", "empty.toml"]));
}

#[test]
fn store_in_a_missing_folder_is_created() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "logs.jsonl", &log("a", "p", 0.5));
    let db = d.path().join("out/weekly/evalloop.db");
    let mut c = evalloop(d.path());
    c.arg("--db").arg(&db);
    let s = json_out(c.args(["ingest", "logs", "logs.jsonl"]));
    assert_eq!(s["stored"], 1);
    assert!(db.exists());
}

#[test]
fn concurrent_first_use_of_new_store() {
    let d = tempfile::tempdir().unwrap();
    let procs = 6;
    for p in 0..procs {
        let rows: Vec<String> = (0..50).map(|i| log(&format!("p{p}-{i}"), "p", 0.5)).collect();
        write(d.path(), &format!("logs{p}.jsonl"), &(rows.join("\n") + "\n"));
    }
    let exe = assert_cmd::cargo::cargo_bin("evalloop");
    for round in 0..3 {
        let db = d.path().join(format!("together{round}.db"));
        let running: Vec<_> = (0..procs)
            .map(|p| {
                std::process::Command::new(&exe)
                    .current_dir(d.path())
                    .env_remove("EVALLOOP_DB")
                    .env_remove("EVALLOOP_CONFIG")
                    .arg("--db")
                    .arg(&db)
                    .args(["ingest", "logs", &format!("logs{p}.jsonl")])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in running {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "round {round}: {}", String::from_utf8_lossy(&out.stderr));
        }
        let mut c = evalloop(d.path());
        c.arg("--db").arg(&db);
        let st = json_out(c.arg("stats"));
        assert_eq!(st["logs"], procs * 50);
    }
}

#[test]
fn text_output_escapes_control_characters() {
    let d = tempfile::tempdir().unwrap();
    let evil_cohort = "\\u001b]0;owned\\u0007\\u001b[2J";
    let evil_id = "r1\\nlogs 999";
    let mut rows = Vec::new();
    let mut fb = Vec::new();
    for i in 0..12 {
        let id = if i == 0 { evil_id.to_string() } else { format!("r{i:02}") };
        rows.push(format!(
            r#"{{"request_id": "{id}", "timestamp": "2026-05-15T10:00:00Z", "prompt": "p\u001b]8;;http://x\u0007", "output": "o", "eval_scores": {{"overall": {}}}, "evaluator": "ev\u001b[31m", "metadata": {{"user_cohort": "{evil_cohort}"}}}}"#,
            if i % 2 == 0 { 0.95 } else { 0.05 }
        ));
        fb.push(format!(
            r#"{{"request_id": "{id}", "feedback_type": "explicit_rating", "value": {}, "user_id": "u{i}"}}"#,
            if i % 3 == 0 { 1 } else { 5 }
        ));
        fb.push(format!(
            r#"{{"request_id": "{id}", "feedback_type": "explicit_text_comment", "value": "nice\u001b[2J\nlogs 0", "user_id": "u{i}"}}"#
        ));
    }
    write(d.path(), "logs.jsonl", &(rows.join("\n") + "\n"));
    write(d.path(), "fb.jsonl", &(fb.join("\n") + "\n"));
    bin(d.path()).args(["ingest", "logs", "logs.jsonl", "--strict"]).assert().success();
    bin(d.path()).args(["ingest", "feedback", "fb.jsonl", "--strict"]).assert().success();
    for args in [
        &["stats"][..],
        &["bias"],
        &["correlate", "--by", "cohort"],
        &["disagreements", "--threshold", "0.5"],
        &["summary", "r1\nlogs 999"],
    ] {
        let text = text(bin(d.path()).args(args));
        assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "{args:?} printed a control character: {text:?}");
        assert!(!text.lines().any(|l| l.starts_with("logs 999") || l.starts_with("logs 0")), "{args:?}: {text}");
    }
}

#[test]
fn conflicting_duplicates_are_rejected() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "a.jsonl", &format!("{}\n{}\n", log("r1", "p", 0.5), log("r2", "p", 0.5)));
    bin(d.path()).args(["ingest", "logs", "a.jsonl"]).assert().success();
    // r1 identical (a duplicate), r2 changed (a conflict), r3 twice with different content in
    // the same file (the second is a conflict), r1 from another evaluator (a conflict).
    let other = log("r1", "p", 0.5).replace("\"eval_scores\"", "\"evaluator\": \"judge-v2\", \"eval_scores\"");
    write(
        d.path(),
        "b.jsonl",
        &[log("r1", "p", 0.5), log("r2", "changed", 0.5), log("r3", "p", 0.5), log("r3", "p", 0.7), other].join("\n"),
    );
    let s = json_out(bin(d.path()).args(["ingest", "logs", "b.jsonl"]));
    assert_eq!(
        (s["stored"].as_u64(), s["duplicate"].as_u64(), s["rejected"].as_u64(), s["conflict"].as_u64()),
        (Some(1), Some(1), Some(3), Some(3)),
        "{s}"
    );
    let r = rejects(&d.path().join("b.jsonl.rejects.jsonl"));
    let got: Vec<(u64, &str)> = r.iter().map(|r| (r["line"].as_u64().unwrap(), r["field"].as_str().unwrap())).collect();
    assert_eq!(got, [(2, "prompt"), (4, "eval_scores.overall"), (5, "evaluator")]);
    assert!(r[2]["error"].as_str().unwrap().contains("ingest scores"), "{}", r[2]["error"]);
    // Under --strict a conflict fails the file; an identical re-ingest stays silent.
    bin(d.path()).args(["ingest", "logs", "b.jsonl", "--strict"]).assert().code(2);
    let s = json_out(bin(d.path()).args(["ingest", "logs", "a.jsonl", "--strict"]));
    assert_eq!((s["duplicate"].as_u64(), s["rejected"].as_u64()), (Some(2), Some(0)));

    // A feedback event_id reused for another request or value.
    write(
        d.path(),
        "f1.jsonl",
        r#"{"event_id": "e1", "request_id": "r1", "feedback_type": "explicit_rating", "value": 4}"#,
    );
    write(
        d.path(),
        "f2.jsonl",
        r#"{"event_id": "e1", "request_id": "r1", "feedback_type": "explicit_rating", "value": 4}
{"event_id": "e1", "request_id": "r2", "feedback_type": "explicit_rating", "value": 4}
{"event_id": "e1", "request_id": "r1", "feedback_type": "explicit_rating", "value": 2}
"#,
    );
    bin(d.path()).args(["ingest", "feedback", "f1.jsonl"]).assert().success();
    let s = json_out(bin(d.path()).args(["ingest", "feedback", "f2.jsonl"]));
    assert_eq!((s["duplicate"].as_u64(), s["conflict"].as_u64()), (Some(1), Some(2)), "{s}");
    let r = rejects(&d.path().join("f2.jsonl.rejects.jsonl"));
    let got: Vec<&str> = r.iter().map(|r| r["field"].as_str().unwrap()).collect();
    assert_eq!(got, ["request_id", "value"]);
}

#[test]
fn ingest_scores_adds_a_second_evaluator() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "a.jsonl", &format!("{}\n{}\n", log("r1", "p", 0.5), log("r2", "p", 0.5)));
    bin(d.path()).args(["ingest", "logs", "a.jsonl"]).assert().success();
    write(
        d.path(),
        "s.jsonl",
        r#"{"request_id": "r1", "evaluator": "judge-v2", "eval_scores": {"overall": 0.25}}
{"request_id": "r2", "evaluator": "judge-v2", "eval_scores": {"overall": 0.75, "coherence": 3}}
{"request_id": "nope", "evaluator": "judge-v2", "eval_scores": {"overall": 0.75}}
{"request_id": "r1", "evaluator": "judge-v2", "eval_scores": {"overall": 1.5}}
"#,
    );
    let s = json_out(bin(d.path()).args(["ingest", "scores", "s.jsonl"]));
    assert_eq!(
        (s["stored"].as_u64(), s["orphaned"].as_u64(), s["rejected"].as_u64()),
        (Some(2), Some(1), Some(1)),
        "{s}"
    );
    let st = json_out(bin(d.path()).arg("stats"));
    assert_eq!(st["evaluators"], serde_json::json!([["baseline", 2], ["judge-v2", 2]]));
    // Idempotent: the same file again stores nothing; a different score is a conflict.
    let s = json_out(bin(d.path()).args(["ingest", "scores", "s.jsonl"]));
    assert_eq!((s["stored"].as_u64(), s["duplicate"].as_u64()), (Some(0), Some(2)), "{s}");
    write(d.path(), "s2.jsonl", r#"{"request_id": "r1", "evaluator": "judge-v2", "eval_scores": {"overall": 0.3}}"#);
    let s = json_out(bin(d.path()).args(["ingest", "scores", "s2.jsonl"]));
    assert_eq!((s["stored"].as_u64(), s["conflict"].as_u64()), (Some(0), Some(1)), "{s}");
    // The CSV form.
    write(d.path(), "s.csv", "request_id,evaluator,eval_scores.overall\nr1,judge-v3,0.5\n");
    let s = json_out(bin(d.path()).args(["ingest", "scores", "s.csv"]));
    assert_eq!(s["stored"], 1, "{s}");
}

#[test]
fn utf8_bom_and_cr_line_ends_are_read() {
    let d = tempfile::tempdir().unwrap();
    let bom = format!("\u{feff}{}\n{}\n", log("a", "p", 0.5), log("b", "p", 0.5));
    write(d.path(), "bom.jsonl", &bom);
    let s = json_out(bin(d.path()).args(["ingest", "logs", "bom.jsonl", "--strict"]));
    assert_eq!(s["stored"], 2);
    let cr = format!("{}\r{}\r{}\r", log("c", "p", 0.5), log("d", "p", 0.5), log("e", "p", 0.5));
    write(d.path(), "cr.jsonl", &cr);
    let s = json_out(bin(d.path()).args(["ingest", "logs", "cr.jsonl", "--strict"]));
    assert_eq!((s["read"].as_u64(), s["stored"].as_u64()), (Some(3), Some(3)));
}

#[test]
fn csv_errors_name_their_own_line() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "logs.csv",
        "request_id,timestamp,prompt,output,eval_scores.overall\n\
         a,2026-05-15T10:00:00Z,p,o,0.5\n\
         b,2026-05-15T10:00:00Z,p\n\
         c,2026-05-15T10:00:00Z,p,o,0.5\n",
    );
    let s = json_out(bin(d.path()).args(["ingest", "logs", "logs.csv"]));
    assert_eq!((s["stored"].as_u64(), s["rejected"].as_u64()), (Some(2), Some(1)));
    let r = rejects(&d.path().join("logs.csv.rejects.jsonl"));
    assert_eq!(r[0]["line"], 3, "{:?}", r[0]);
    assert_eq!(r[0]["raw"], "b,2026-05-15T10:00:00Z,p");
}

#[test]
fn long_line_is_rejected_and_the_stream_goes_on() {
    let d = tempfile::tempdir().unwrap();
    let long = log("big", &"x".repeat(5000), 0.5);
    write(d.path(), "logs.jsonl", &format!("{}\n{long}\n{}\n", log("a", "p", 0.5), log("b", "p", 0.5)));
    let s = json_out(bin(d.path()).args(["ingest", "logs", "logs.jsonl", "--max-line-bytes", "1000"]));
    assert_eq!((s["stored"].as_u64(), s["rejected"].as_u64()), (Some(2), Some(1)));
    let r = rejects(&d.path().join("logs.jsonl.rejects.jsonl"));
    assert_eq!(r[0]["line"], 2);
    assert!(r[0]["error"].as_str().unwrap().contains("--max-line-bytes"));
    // The default limit takes the row.
    let s = json_out(bin(d.path()).args(["ingest", "logs", "logs.jsonl"]));
    assert_eq!(s["stored"], 1);
}

#[test]
fn unbounded_numeric_flags_are_refused() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "logs.jsonl", &log("a", "p", 0.5));
    // Refused before the store is read (this one is empty), naming the flag.
    for (args, flag) in [
        (&["calibration", "--bins", "10000000"][..], "--bins"),
        (&["calibration", "--bins", "100000000"], "--bins"),
        (&["correlate", "--bootstrap", "18446744073709551615"], "--bootstrap"),
        (&["impact", "--before", "2026-05-16", "--after", "2026-05-16", "--bootstrap", "100000000000"], "--bootstrap"),
        (&["agreement", "--bootstrap", "18446744073709551615"], "--bootstrap"),
        (&["ingest", "logs", "logs.jsonl", "--batch-size", "100000000"], "--batch-size"),
    ] {
        let out = bin(d.path()).args(args).timeout(std::time::Duration::from_secs(20)).assert().code(2);
        let err = String::from_utf8_lossy(&out.get_output().stderr).to_string();
        assert!(err.contains(flag), "{args:?}: {err}");
    }
}

#[test]
fn inconsistent_validation_is_made_consistent() {
    let d = tempfile::tempdir().unwrap();
    for args in [
        &["disagreements", "--threshold", "NaN"][..],
        &["disagreements", "--threshold", "inf"],
        &["disagreements", "--threshold", "2"],
        &["bias", "--low-factor", "NaN"],
        &["bias", "--low-factor", "-1"],
        &["impact", "--before", "2026-05-16", "--after", "2026-05-15"],
    ] {
        bin(d.path()).args(args).assert().code(2);
    }
}

#[test]
fn timestamps_outside_rfc3339_are_rejected() {
    let d = tempfile::tempdir().unwrap();
    let at = |id: &str, ts: &str| log(id, "p", 0.5).replace("2026-05-15T10:00:00Z", ts);
    write(
        d.path(),
        "logs.jsonl",
        &[at("a", "9999-12-31T23:59:59-23:59"), at("b", "0000-01-01T00:00:00Z"), at("c", "9999-12-31T23:59:59Z")]
            .join("\n"),
    );
    let s = json_out(bin(d.path()).args(["ingest", "logs", "logs.jsonl"]));
    assert_eq!((s["stored"].as_u64(), s["rejected"].as_u64()), (Some(1), Some(2)));
    let r = rejects(&d.path().join("logs.jsonl.rejects.jsonl"));
    assert!(r.iter().all(|r| r["field"] == "timestamp"));
    bin(d.path()).args(["correlate", "--since", "0000-01-01T00:00:00Z"]).assert().code(2);
}

#[test]
fn ambiguous_input_is_refused_or_warned() {
    let d = tempfile::tempdir().unwrap();
    // Repeated JSON keys and an empty prompt: rejected, naming the field.
    write(
        d.path(),
        "logs.jsonl",
        &[
            log("d1", "p", 0.5).replace("\"request_id\": \"d1\"", "\"request_id\": \"d1\", \"request_id\": \"d2\""),
            log("e", "", 0.5),
            log("m", "p", 0.5).replace("\"eval_scores\"", "\"metdata\": {\"user_cohort\": \"pro\"}, \"eval_scores\""),
        ]
        .join("\n"),
    );
    let out = bin(d.path()).args(["--json", "ingest", "logs", "logs.jsonl"]).assert().success().get_output().clone();
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((s["stored"].as_u64(), s["rejected"].as_u64()), (Some(1), Some(2)));
    assert_eq!(s["ignored_fields"], serde_json::json!([{"field": "metdata", "line": 3}]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field `metdata`"));
    let r = rejects(&d.path().join("logs.jsonl.rejects.jsonl"));
    let fields: Vec<&str> = r.iter().map(|r| r["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["request_id", "prompt"]);
    // The same empty prompt in CSV is rejected the same way; an empty output is kept in both.
    write(
        d.path(),
        "logs.csv",
        "request_id,timestamp,prompt,output,eval_scores.overall\nc1,2026-05-15T10:00:00Z,,o,0.5\nc2,2026-05-15T10:00:00Z,p,,0.5\n",
    );
    let s = json_out(bin(d.path()).args(["ingest", "logs", "logs.csv"]));
    assert_eq!((s["stored"].as_u64(), s["rejected"].as_u64()), (Some(1), Some(1)));
    write(d.path(), "e.jsonl", &log("e2", "p", 0.5).replace("\"output\": \"o\"", "\"output\": \"\""));
    let s = json_out(bin(d.path()).args(["ingest", "logs", "e.jsonl"]));
    assert_eq!(s["stored"], 1);
    // Ambiguous CSV headers refuse the file.
    write(d.path(), "dup.csv", "request_id,request_id,timestamp\na,b,2026-05-15T10:00:00Z\n");
    write(
        d.path(),
        "both.csv",
        "request_id,timestamp,prompt,output,eval_scores,eval_scores.overall\na,2026-05-15T10:00:00Z,p,o,\"{\"\"overall\"\": 0.1}\",0.5\n",
    );
    for f in ["dup.csv", "both.csv"] {
        let out = bin(d.path()).args(["ingest", "logs", f]).assert().code(2).get_output().clone();
        assert!(String::from_utf8_lossy(&out.stderr).contains(":1:"), "{f}");
    }
}

/// Found by the fuzzing harness: a NUL character was stored by SQLite and failed the whole
/// ingest on PostgreSQL (exit 3); both refuse the row now, naming the field.
#[test]
fn nul_characters_are_rejected_on_every_backend() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "logs.jsonl",
        &[log("a", "p\\u0000q", 0.5), log("b\\u0000", "p", 0.5), log("c", "p", 0.5)].join("\n"),
    );
    write(d.path(), "s.csv", "request_id,evaluator,eval_scores.overall\nc\0,judge-v2,0.5\nc,judge-v2,0.5\n");
    let mut dbs = vec![d.path().join("t.db").display().to_string()];
    // And on PostgreSQL, in a schema of its own, when `scripts/with-postgres.sh` gives one.
    if let Ok(url) = std::env::var("EVALLOOP_TEST_PG")
        && !url.is_empty()
    {
        let schema = format!("hardening_nul_{}", std::process::id());
        let mut admin = postgres::Client::connect(&url, postgres::NoTls).expect("EVALLOOP_TEST_PG answers");
        admin.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}")).unwrap();
        let sep = if url.contains('?') { '&' } else { '?' };
        dbs.push(format!("{url}{sep}options=-csearch_path%3D{schema}"));
    }
    for db in dbs {
        let mut c = evalloop(d.path());
        c.args(["--db", &db]);
        let s = json_out(c.args(["ingest", "logs", "logs.jsonl"]));
        assert_eq!((s["stored"].as_u64(), s["rejected"].as_u64()), (Some(1), Some(2)), "{s}");
        let r = rejects(&d.path().join("logs.jsonl.rejects.jsonl"));
        assert_eq!(r.iter().map(|r| r["field"].as_str().unwrap()).collect::<Vec<_>>(), ["prompt", "request_id"]);
        let mut c = evalloop(d.path());
        c.args(["--db", &db]);
        let s = json_out(c.args(["ingest", "scores", "s.csv"]));
        assert_eq!((s["stored"].as_u64(), s["rejected"].as_u64()), (Some(1), Some(1)), "{s}");
    }
}
