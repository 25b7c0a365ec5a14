//! `evalloop serve` on a SQLite store, run as the real binary on a free loopback port: every
//! route and status code, and the limits that need a server of their own.

use serde_json::json;

use crate::serve_support::*;

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

/// Behind a trusted proxy the review login limit counts each forwarded client apart; a client
/// that is not a trusted proxy cannot pick its address with the header.
#[test]
fn review_login_limit_reads_forwarded_for_only_from_trusted_proxies() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_store(dir.path());
    let login = |srv: &Server, key: &str, forwarded: &str| {
        let body = format!("key={key}");
        request(
            &srv.addr,
            "POST",
            "/review/login",
            None,
            Some(("application/x-www-form-urlencoded", body.as_bytes())),
            &[("X-Forwarded-For", forwarded)],
        )
        .status
    };
    // The test connects from 127.0.0.1: a trusted proxy here.
    let srv = Server::start(&db, "[serve]\ntrusted_proxies = [\"127.0.0.0/8\"]\n");
    for n in 0..10 {
        assert_eq!(login(&srv, &format!("evk_guess{n}"), "198.51.100.1"), 401);
    }
    assert_eq!(login(&srv, "evk_guess", "198.51.100.1"), 429, "the forwarded client is limited");
    assert_eq!(login(&srv, "evk_guess", "198.51.100.2"), 401, "another client behind the proxy is not");
    // A forged address left of the proxy's own entry does not escape the limit.
    assert_eq!(login(&srv, "evk_guess", "203.0.113.9, 198.51.100.1"), 429);
    assert_eq!(srv.stop(), 0);
    // Without trusted proxies the header is ignored: every try counts against the peer.
    let srv = Server::start(&db, "[serve]\n");
    for n in 0..10 {
        assert_eq!(login(&srv, &format!("evk_guess{n}"), &format!("198.51.100.{n}")), 401);
    }
    assert_eq!(login(&srv, "evk_guess", "198.51.100.99"), 429);
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
