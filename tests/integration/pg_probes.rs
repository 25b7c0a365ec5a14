//! The hardening probes against PostgreSQL, through the real binary: bad rows and conflicting
//! duplicates, concurrent ingests of one store, `kill -9` of an ingest (whole batches stay, a
//! re-run completes the file), reads during an ingest (each sees whole batches), and a server
//! restart in the middle of an ingest (the ingest fails with a message, committed batches stay,
//! a re-run completes the file). The probes take turns (one lock), since one restarts the server.
//!
//! Runs against the server `EVALLOOP_TEST_PG` names (`scripts/with-postgres.sh` sets it), in a
//! schema of its own; without it, each test says on stderr that it was skipped.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Held by each probe for its whole run: the restart probe must not pull the server from under
/// the others.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

/// A fresh schema's URL, or `None` (and a note on stderr) without a server.
fn pg(test: &str) -> Option<String> {
    let url = match std::env::var("EVALLOOP_TEST_PG") {
        Ok(u) if !u.is_empty() => u,
        _ => {
            let _ = writeln!(std::io::stderr(), "pg_probes::{test}: SKIPPED: EVALLOOP_TEST_PG is not set");
            return None;
        }
    };
    let schema = format!("probe_{test}_{}", std::process::id());
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).expect("EVALLOOP_TEST_PG answers");
    admin.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}")).unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    Some(format!("{url}{sep}options=-csearch_path%3D{schema}"))
}

fn evalloop(dir: &Path, db: &str) -> StdCommand {
    let mut c = StdCommand::new(assert_cmd::cargo::cargo_bin("evalloop"));
    c.current_dir(dir).env_remove("EVALLOOP_DB").env_remove("EVALLOOP_CONFIG").args(["--db", db]);
    c
}

fn json(c: &mut StdCommand) -> Value {
    let out = c.arg("--json").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn logs(prefix: &str, n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                r#"{{"request_id": "{prefix}{i:07}", "timestamp": "2026-05-15T10:00:00Z", "prompt": "p", "output": "o", "eval_scores": {{"overall": 0.5}}}}"#
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn pg_bad_rows_and_conflicting_duplicates() {
    let _turn = turn();
    let Some(db) = pg("conflicts") else { return };
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("a.jsonl"), logs("r", 3)).unwrap();
    json(evalloop(d.path(), &db).args(["ingest", "logs", "a.jsonl"]));
    let b = logs("r", 3).replacen("\"prompt\": \"p\"", "\"prompt\": \"changed\"", 1)
        + "\n{\"request_id\": \"x\", \"timestamp\": \"9999-12-31T23:59:59-23:59\", \"prompt\": \"p\", \"output\": \"o\", \"eval_scores\": {\"overall\": 0.5}}\nnot json";
    std::fs::write(d.path().join("b.jsonl"), b).unwrap();
    let s = json(evalloop(d.path(), &db).args(["ingest", "logs", "b.jsonl"]));
    assert_eq!(
        (s["stored"].as_u64(), s["duplicate"].as_u64(), s["rejected"].as_u64(), s["conflict"].as_u64()),
        (Some(0), Some(2), Some(3), Some(1)),
        "{s}"
    );
    let out = evalloop(d.path(), &db).args(["ingest", "logs", "b.jsonl", "--strict"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    // Scores of a second evaluator, then the same again, then a conflicting one.
    std::fs::write(
        d.path().join("s.jsonl"),
        r#"{"request_id": "r0000000", "evaluator": "judge-v2", "eval_scores": {"overall": 0.25}}"#,
    )
    .unwrap();
    assert_eq!(json(evalloop(d.path(), &db).args(["ingest", "scores", "s.jsonl"]))["stored"], 1);
    assert_eq!(json(evalloop(d.path(), &db).args(["ingest", "scores", "s.jsonl"]))["duplicate"], 1);
    std::fs::write(
        d.path().join("s2.jsonl"),
        r#"{"request_id": "r0000000", "evaluator": "judge-v2", "eval_scores": {"overall": 0.5}}"#,
    )
    .unwrap();
    assert_eq!(json(evalloop(d.path(), &db).args(["ingest", "scores", "s2.jsonl"]))["conflict"], 1);
    // Feedback reusing an event id for another value.
    std::fs::write(
        d.path().join("f.jsonl"),
        "{\"event_id\": \"e1\", \"request_id\": \"r0000001\", \"feedback_type\": \"explicit_rating\", \"value\": 4}\n\
         {\"event_id\": \"e1\", \"request_id\": \"r0000001\", \"feedback_type\": \"explicit_rating\", \"value\": 2}",
    )
    .unwrap();
    let s = json(evalloop(d.path(), &db).args(["ingest", "feedback", "f.jsonl"]));
    assert_eq!((s["stored"].as_u64(), s["conflict"].as_u64()), (Some(1), Some(1)), "{s}");
}

#[test]
fn pg_concurrent_ingests() {
    let _turn = turn();
    let Some(db) = pg("concurrent") else { return };
    let d = tempfile::tempdir().unwrap();
    // Four files, each overlapping the next by half.
    for p in 0..4 {
        let rows: Vec<String> = (p * 500..p * 500 + 1000)
            .map(|i| format!(r#"{{"request_id": "c{i:07}", "timestamp": "2026-05-15T10:00:00Z", "prompt": "p", "output": "o", "eval_scores": {{"overall": 0.5}}}}"#))
            .collect();
        std::fs::write(d.path().join(format!("c{p}.jsonl")), rows.join("\n")).unwrap();
    }
    let running: Vec<_> = (0..4)
        .map(|p| {
            evalloop(d.path(), &db)
                .args(["ingest", "logs", &format!("c{p}.jsonl"), "--batch-size", "100"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in running {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(json(evalloop(d.path(), &db).arg("stats"))["logs"], 2500);
}

#[test]
fn pg_kill_9_of_ingest_keeps_whole_batches_and_reads_see_them() {
    let _turn = turn();
    let Some(db) = pg("kill") else { return };
    let d = tempfile::tempdir().unwrap();
    let n = 200_000;
    let batch = 1000;
    std::fs::write(d.path().join("big.jsonl"), logs("k", n)).unwrap();
    let mut child = evalloop(d.path(), &db)
        .args(["ingest", "logs", "big.jsonl", "--batch-size", &batch.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Read while it writes: every count is whole batches.
    let start = Instant::now();
    let mut seen = Vec::new();
    loop {
        let c = json(evalloop(d.path(), &db).arg("stats"))["logs"].as_u64().unwrap();
        assert_eq!(c % batch, 0, "a read saw part of a batch: {c}");
        seen.push(c);
        if c >= 3 * batch || start.elapsed() > Duration::from_secs(60) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // SIGKILL (std's kill), mid-file.
    child.kill().unwrap();
    let _ = child.wait();
    let after = json(evalloop(d.path(), &db).arg("stats"))["logs"].as_u64().unwrap();
    assert_eq!(after % batch, 0, "kill -9 left part of a batch: {after}");
    let s = json(evalloop(d.path(), &db).args(["ingest", "logs", "big.jsonl", "--batch-size", &batch.to_string()]));
    assert_eq!(s["stored"].as_u64().unwrap() + s["duplicate"].as_u64().unwrap(), n as u64);
    assert_eq!(json(evalloop(d.path(), &db).arg("stats"))["logs"], n);
    let _ = writeln!(
        std::io::stderr(),
        "pg_probes: killed the ingest at {after} of {n} logs; reads during it saw {seen:?}; re-ingest completed"
    );
}

/// The server restarts (`pg_ctl restart -m fast`, from `scripts/with-postgres.sh`) while an
/// ingest writes: the ingest ends with a non-zero exit and a message, the committed batches stay
/// whole, and running the same ingest again completes the file.
#[test]
fn pg_server_restart_during_ingest() {
    let _turn = turn();
    let Some(db) = pg("restart") else { return };
    let restart = match std::env::var("EVALLOOP_TEST_PG_RESTART") {
        Ok(r) if !r.trim().is_empty() => r,
        _ => {
            let _ = writeln!(std::io::stderr(), "pg_probes::restart: SKIPPED: EVALLOOP_TEST_PG_RESTART is not set");
            return;
        }
    };
    let d = tempfile::tempdir().unwrap();
    let n = 200_000;
    let batch = 1000;
    std::fs::write(d.path().join("big.jsonl"), logs("r", n)).unwrap();
    let child = evalloop(d.path(), &db)
        .args(["ingest", "logs", "big.jsonl", "--batch-size", &batch.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        let c = json(evalloop(d.path(), &db).arg("stats"))["logs"].as_u64().unwrap();
        if c >= 3 * batch || start.elapsed() > Duration::from_secs(60) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let words: Vec<&str> = restart.split_whitespace().collect();
    let out = StdCommand::new(words[0]).args(&words[1..]).output().unwrap();
    assert!(out.status.success(), "restart failed: {}", String::from_utf8_lossy(&out.stderr));
    let done = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&done.stderr).to_string();
    let after = json(evalloop(d.path(), &db).arg("stats"))["logs"].as_u64().unwrap();
    if done.status.success() {
        // The file ended before the server went down: nothing to probe, but nothing lost.
        assert_eq!(after, n as u64);
    } else {
        assert!(!stderr.trim().is_empty() && !stderr.contains("panicked"), "{stderr}");
        assert!(after < n as u64 && after.is_multiple_of(batch), "the restart left part of a batch: {after}");
    }
    let s = json(evalloop(d.path(), &db).args(["ingest", "logs", "big.jsonl", "--batch-size", &batch.to_string()]));
    assert_eq!(s["stored"].as_u64().unwrap() + s["duplicate"].as_u64().unwrap(), n as u64);
    assert_eq!(json(evalloop(d.path(), &db).arg("stats"))["logs"], n);
    let _ = writeln!(
        std::io::stderr(),
        "pg_probes: server restarted at {after} of {n} logs (ingest exit {:?}: {}); re-ingest completed",
        done.status.code(),
        stderr.lines().last().unwrap_or("")
    );
}
