//! Fault test of `evalloop serve`: under load from concurrent clients that record every event
//! the service acknowledged, the server is killed with SIGKILL; after a restart every
//! acknowledged event is in the store exactly once, and sending them all again adds nothing.
//! On SQLite, and on PostgreSQL when `EVALLOOP_TEST_PG` is set.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::serve_support::*;

/// The event with this id; its content depends on the id only, so a resend is a duplicate.
fn event(id: &str) -> Value {
    json!({"event_id": id, "request_id": format!("req-{}", id.len() % 7), "feedback_type": "implicit_usage",
           "value": true, "timestamp": "2026-12-01T10:00:00Z"})
}

/// Every stored feedback event id, read straight from the database.
fn stored_ids(db: &str) -> Vec<String> {
    if db.starts_with("postgres") {
        let mut c = postgres::Client::connect(db, postgres::NoTls).unwrap();
        c.query("SELECT event_id FROM feedback_events", &[]).unwrap().iter().map(|r| r.get(0)).collect()
    } else {
        let c = rusqlite::Connection::open(db).unwrap();
        let mut st = c.prepare("SELECT event_id FROM feedback_events").unwrap();
        st.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    }
}

fn kill_under_load(db: &str) {
    let key = make_key(db, "load", "ingest");
    let mut srv = Server::start(db, "[serve]\nrate_limit_per_s = 0\n");
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let clients: Vec<_> = (0..16)
        .map(|t| {
            let (addr, key, acked) = (srv.addr.clone(), key.clone(), acked.clone());
            std::thread::spawn(move || {
                for i in 0.. {
                    let ids: Vec<String> = (0..5).map(|j| format!("f-{t}-{i}-{j}")).collect();
                    let body = Value::Array(ids.iter().map(|id| event(id)).collect()).to_string();
                    let done = try_request(
                        &addr,
                        "POST",
                        "/v1/feedback",
                        Some(&key),
                        Some(("application/json", body.as_bytes())),
                        &[],
                    );
                    match done {
                        Ok(a) if a.status == 200 => {
                            assert_eq!(a.json()["stored"], 5, "{}", a.text());
                            acked.lock().unwrap().extend(ids);
                        }
                        // Refused, reset or cut off by the kill: not acknowledged.
                        _ => return,
                    }
                }
            })
        })
        .collect();
    // The kill comes once the load is real (at least 100 acknowledged events) and still going,
    // however slow the machine: a fixed wait left too few on a loaded CI runner.
    let start = std::time::Instant::now();
    while acked.lock().unwrap().len() < 100 && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    srv.child.kill().expect("SIGKILL the server");
    srv.child.wait().unwrap();
    for c in clients {
        let _ = c.join();
    }
    let acked: Vec<String> = std::mem::take(&mut *acked.lock().unwrap());
    assert!(acked.len() >= 100, "too little load before the kill: {} events", acked.len());

    let stored = stored_ids(db);
    let unique: HashSet<&String> = stored.iter().collect();
    assert_eq!(unique.len(), stored.len(), "an event is stored twice");
    let missing: Vec<&String> = acked.iter().filter(|id| !unique.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );

    // Restart; resend every acknowledged event: all duplicates, nothing added.
    let srv = Server::start(db, "[serve]\nrate_limit_per_s = 0\nmax_rows = 1000\n");
    for chunk in acked.chunks(1000) {
        let body = Value::Array(chunk.iter().map(|id| event(id)).collect());
        let a = srv.post("/v1/feedback", Some(&key), &body);
        assert_eq!(a.status, 200, "{}", a.text());
        assert_eq!(a.json()["duplicate"].as_u64(), Some(chunk.len() as u64), "{}", a.text());
    }
    assert_eq!(srv.stop(), 0);
    assert_eq!(stored_ids(db).len(), stored.len());
}

#[test]
fn kill_9_under_load_loses_no_acknowledged_event_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    kill_under_load(&sqlite_store(dir.path()));
}

#[test]
fn kill_9_under_load_loses_no_acknowledged_event_on_postgres() {
    let Some(pg) = PgSchema::new("fault") else { return };
    kill_under_load(&pg.url);
}
