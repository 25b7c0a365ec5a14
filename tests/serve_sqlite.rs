//! `evalloop serve` on a SQLite store, run as the real binary on a free loopback port: every
//! route and status code, and the limits that need a server of their own.

mod serve_support;

use serde_json::json;
use serve_support::*;

#[test]
fn api_contract_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    api_contract(&sqlite_store(dir.path()));
}

#[test]
fn rate_limit_answers_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_store(dir.path());
    let key = make_key(&db, "k", "ingest");
    let srv = Server::start(&db, "[serve]\nrate_limit_per_s = 0.5\nrate_limit_burst = 3\n");
    let ev = json!({"request_id": "r", "feedback_type": "implicit_usage"});
    let statuses: Vec<u16> = (0..5).map(|_| srv.post("/v1/feedback", Some(&key), &ev).status).collect();
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    let a = srv.post("/v1/feedback", Some(&key), &ev);
    assert_eq!(a.json()["error"]["code"], "rate_limited");
    let wait: u64 = a.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    // Another key has its own allowance.
    let other = make_key(&db, "k2", "ingest");
    std::thread::sleep(std::time::Duration::from_millis(1200));
    assert_eq!(srv.post("/v1/feedback", Some(&other), &ev).status, 200);
    assert_eq!(srv.stop(), 0);
}

#[test]
fn bad_serve_config_is_refused_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[serve]\nmax_rows = 0\n").unwrap();
    let out = std::process::Command::new(BIN)
        .args(["--db", &sqlite_store(dir.path()), "--config"])
        .arg(&cfg)
        .args(["serve", "--addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_rows"));
}
