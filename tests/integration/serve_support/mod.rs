//! Shared by the `serve_*` tests: start the real `evalloop serve` on a free loopback port
//! against a store, make keys with the real `evalloop keys`, speak HTTP/1.1 over a socket, and
//! the API contract that every store must pass.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_evalloop");

/// A fresh SQLite store in a temp dir.
pub fn sqlite_store(dir: &Path) -> String {
    dir.join("serve.db").display().to_string()
}

/// A fresh schema on `EVALLOOP_TEST_PG`, dropped at the end; `None` (said on stderr) without it.
pub struct PgSchema {
    pub url: String,
    admin: String,
    schema: String,
}

impl PgSchema {
    pub fn new(test: &str) -> Option<PgSchema> {
        let admin = match std::env::var("EVALLOOP_TEST_PG") {
            Ok(u) if !u.is_empty() => u,
            _ => {
                let _ = writeln!(std::io::stderr(), "{test}: EVALLOOP_TEST_PG is not set; PostgreSQL half skipped");
                return None;
            }
        };
        let schema = format!("serve_{}_{}", test, std::process::id()).to_lowercase();
        let mut c = postgres::Client::connect(&admin, postgres::NoTls)
            .unwrap_or_else(|e| panic!("EVALLOOP_TEST_PG is set but the server does not answer: {e}"));
        c.batch_execute(&format!("CREATE SCHEMA \"{schema}\"")).expect("create schema");
        let sep = if admin.contains('?') { '&' } else { '?' };
        let url = format!("{admin}{sep}options=-csearch_path%3D{schema}");
        Some(PgSchema { url, admin, schema })
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&self.admin, postgres::NoTls) {
            let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.schema));
        }
    }
}

/// `evalloop --db DB ARGS...`, checked to succeed; stdout.
pub fn cli(db: &str, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .env_remove("EVALLOOP_DB")
        .env_remove("EVALLOOP_CONFIG")
        .arg("--db")
        .arg(db)
        .args(args)
        .output()
        .expect("run evalloop");
    assert!(out.status.success(), "evalloop {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

/// `evalloop --db DB ARGS...` run in `dir`: exit code, stdout, stderr.
pub fn run_in(db: &str, dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .current_dir(dir)
        .env_remove("EVALLOOP_DB")
        .env_remove("EVALLOOP_CONFIG")
        .args(["--db", db])
        .args(args)
        .output()
        .expect("run evalloop");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `evalloop --db DB --json ARGS...` run in `dir`, checked to succeed; its JSON.
pub fn ok_json(db: &str, dir: &Path, args: &[&str]) -> Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let (code, out, err) = run_in(db, dir, &a);
    assert_eq!(code, 0, "evalloop {args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// A new key of `scope` named `name`.
pub fn make_key(db: &str, name: &str, scope: &str) -> String {
    let v: Value =
        serde_json::from_str(&cli(db, &["--json", "keys", "create", "--name", name, "--scope", scope])).unwrap();
    v["key"].as_str().expect("key").to_string()
}

/// A running `evalloop serve`; killed when dropped unless stopped.
pub struct Server {
    pub child: Child,
    pub addr: String,
    pub db: String,
    _config: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts the service on 127.0.0.1 port 0 with `config` as its `[serve]`-holding TOML.
    pub fn start(db: &str, config: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let cfg: PathBuf = dir.path().join("serve.toml");
        std::fs::write(&cfg, config).unwrap();
        let mut child = Command::new(BIN)
            .env_remove("EVALLOOP_DB")
            .env_remove("EVALLOOP_CONFIG")
            .args(["--db", db, "--config"])
            .arg(&cfg)
            .args(["serve", "--addr", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start evalloop serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("evalloop serve: listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Server { child, addr, db: db.to_string(), _config: Some(dir) }
    }

    /// SIGTERM, then the exit code.
    pub fn stop(mut self) -> i32 {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let status = self.child.wait().unwrap();
        status.code().unwrap_or(-1)
    }

    /// One request; `auth` is the bearer credential.
    pub fn call(&self, method: &str, path: &str, auth: Option<&str>, body: Option<(&str, &[u8])>) -> Answer {
        request(&self.addr, method, path, auth, body, &[])
    }

    /// POST of a JSON value.
    pub fn post(&self, path: &str, auth: Option<&str>, body: &Value) -> Answer {
        let b = serde_json::to_vec(body).unwrap();
        self.call("POST", path, auth, Some(("application/json", &b)))
    }

    pub fn get(&self, path: &str, auth: Option<&str>) -> Answer {
        self.call("GET", path, auth, None)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`).
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<(&str, &[u8])>,
    extra: &[(&str, &str)],
) -> Answer {
    try_request(addr, method, path, auth, body, extra).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// [`request`], with a failed connection or a cut-off answer as an error.
pub fn try_request(
    addr: &str,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<(&str, &[u8])>,
    extra: &[(&str, &str)],
) -> Result<Answer, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(a) = auth {
        head.push_str(&format!("Authorization: Bearer {a}\r\n"));
    }
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let payload = body.map(|(ct, b)| {
        head.push_str(&format!("Content-Type: {ct}\r\nContent-Length: {}\r\n", b.len()));
        b
    });
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).map_err(|e| format!("write: {e}"))?;
    if let Some(b) = payload {
        // A server may answer (413) and close before reading it all.
        let _ = s.write_all(b);
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_answer(&raw)
}

fn parse_answer(raw: &[u8]) -> Result<Answer, String> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no full HTTP head")?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 =
        lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).ok_or("no status line")?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string())))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    if headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked")) {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let nl = rest.windows(2).position(|w| w == b"\r\n").ok_or("cut-off chunk")?;
            let size = std::str::from_utf8(&rest[..nl]).map_err(|e| e.to_string())?;
            let n = usize::from_str_radix(size.trim(), 16).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            if rest.len() < nl + 4 + n {
                return Err("cut-off chunk".into());
            }
            out.extend_from_slice(&rest[nl + 2..nl + 2 + n]);
            rest = &rest[nl + 4 + n..];
        }
        body = out;
    }
    Ok(Answer { status, headers, body })
}

pub fn log(id: &str, output: &str) -> Value {
    json!({"request_id": id, "timestamp": "2026-12-01T10:00:00Z", "prompt": format!("prompt of {id}"),
           "output": output, "eval_scores": {"overall": 0.5}, "metadata": {"user_cohort": "free"}})
}

pub const CONFIG: &str = "[serve]\nmax_body_bytes = 65536\nmax_rows = 50\nkey_refresh_ms = 100\n\
    cors_origins = [\"http://app.example.test\"]\n";

/// Every route and status code of the API, against the store `db`.
pub fn api_contract(db: &str) {
    let ingest = make_key(db, "ingest-1", "ingest");
    let read = make_key(db, "read-1", "read");
    let admin = make_key(db, "admin-1", "admin");
    let srv = Server::start(db, CONFIG);

    // Health and the description need no key.
    let h = srv.get("/healthz", None);
    assert_eq!(h.status, 200, "{}", h.text());
    let doc = srv.get("/v1/openapi.json", None).json();
    assert_eq!(doc["openapi"], "3.0.3");
    assert!(doc["paths"]["/v1/requests/{request_id}/summary"]["get"].is_object());
    assert_eq!(srv.get("/nope", None).status, 404);

    // Keys: none, unknown, wrong scope.
    let a = srv.post("/v1/logs", None, &log("r1", "out"));
    assert_eq!(a.status, 401);
    assert_eq!(a.json()["error"]["code"], "unauthorized");
    assert_eq!(srv.post("/v1/logs", Some("evk_not-a-key"), &log("r1", "out")).status, 401);
    assert_eq!(srv.post("/v1/logs", Some(&read), &log("r1", "out")).status, 403);
    assert_eq!(srv.get("/v1/requests/r1/summary", Some(&ingest)).status, 403);

    // Logs: stored, then duplicate, then conflict (same id, other content); admin may post.
    let a = srv.post("/v1/logs", Some(&ingest), &log("r1", "out"));
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["rows"][0]["status"], "stored");
    let a = srv.post("/v1/logs", Some(&admin), &json!([log("r1", "out"), log("r2", "two"), log("r1", "other")]));
    let v = a.json();
    assert_eq!(a.status, 200);
    let statuses: Vec<&str> = v["rows"].as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["duplicate", "stored", "conflict"]);
    assert_eq!((v["stored"].as_u64(), v["duplicate"].as_u64(), v["conflict"].as_u64()), (Some(1), Some(1), Some(1)));

    // Feedback: an array with a bad row (named by its path), an injection string kept as text.
    let evil = "'); DROP TABLE feedback_events; -- <script>alert(1)</script> \u{1b}[31m";
    let a = srv.post(
        "/v1/feedback",
        Some(&ingest),
        &json!([
            {"request_id": "r1", "feedback_type": "explicit_thumbs_up", "event_id": "e1"},
            {"request_id": "r1", "feedback_type": "thumbs_sideways"},
            {"request_id": "r1", "feedback_type": "explicit_text_comment", "value": evil, "event_id": "e2"},
            {"request_id": "r1", "feedback_type": "explicit_rating", "value": 7}
        ]),
    );
    assert_eq!(a.status, 200, "{}", a.text());
    let v = a.json();
    assert_eq!(v["stored"], 2);
    assert_eq!(v["rejected"], 2);
    assert_eq!(v["rows"][1]["path"], "$[1].feedback_type");
    assert!(v["rows"][1]["reason"].as_str().unwrap().contains("unknown feedback_type"));
    assert_eq!(v["rows"][3]["path"], "$[3].value");
    assert_eq!(v["rows"][0]["id"], "e1");

    // NDJSON: per-line answers with the line number; a retry is a duplicate, a changed event
    // under the same id a conflict.
    let nd = "{\"request_id\": \"r2\", \"feedback_type\": \"explicit_rating\", \"value\": 4, \"event_id\": \"e3\"}\n\n\
              {\"request_id\": \"r2\", \"value\": 3}\n\
              {\"request_id\": \"r1\", \"feedback_type\": \"explicit_thumbs_up\", \"event_id\": \"e1\"}\n\
              {\"request_id\": \"r1\", \"feedback_type\": \"explicit_thumbs_down\", \"event_id\": \"e2\"}\n";
    let a = srv.call("POST", "/v1/feedback", Some(&ingest), Some(("application/x-ndjson", nd.as_bytes())));
    assert_eq!(a.status, 200, "{}", a.text());
    let v = a.json();
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows[0]["status"], "stored");
    assert_eq!(rows[1]["status"], "rejected");
    assert_eq!(rows[1]["line"], 3);
    assert_eq!(rows[1]["path"], "$.feedback_type");
    assert_eq!(rows[2]["status"], "duplicate");
    assert_eq!(rows[3]["status"], "conflict");

    // Preferences between two outputs: stored apart, validated with the field's path, a retry
    // a duplicate and another choice under the same id a conflict.
    let pref = |value: &str| {
        json!({"request_id": "r1", "other_request_id": "r2", "feedback_type": "explicit_preference",
               "value": value, "event_id": "p1", "user_id": "u1"})
    };
    let a = srv.post(
        "/v1/feedback",
        Some(&ingest),
        &json!([pref("a"), {"request_id": "r1", "other_request_id": "r1", "feedback_type": "explicit_preference", "value": "a"}]),
    );
    assert_eq!(a.status, 200, "{}", a.text());
    let v = a.json();
    assert_eq!(v["rows"][0]["status"], "stored", "{v}");
    assert_eq!(v["rows"][1]["path"], "$[1].other_request_id", "{v}");
    let a = srv.post("/v1/feedback", Some(&ingest), &json!([pref("a"), pref("b")]));
    let statuses: Vec<String> =
        a.json()["rows"].as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap().to_string()).collect();
    assert_eq!(statuses, ["duplicate", "conflict"], "{}", a.text());

    // An edit with its text: stored (the same edit again is a duplicate); the text on another
    // feedback type is a rejected row named by its path.
    let edit = json!({"request_id": "r1", "feedback_type": "implicit_edit", "event_id": "ed1", "edited_output": evil});
    let a = srv.post(
        "/v1/feedback",
        Some(&ingest),
        &json!([edit, {"request_id": "r1", "feedback_type": "explicit_thumbs_up", "edited_output": "x"}, edit]),
    );
    assert_eq!(a.status, 200, "{}", a.text());
    let v = a.json();
    let statuses: Vec<&str> = v["rows"].as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["stored", "rejected", "duplicate"]);
    assert_eq!(v["rows"][1]["path"], "$[1].edited_output");

    // Not parseable at all: 400, with the field when it can be named.
    let bad = br#"{"request_id": "r1", "feedback_type": "explicit_rating", "value": NaN}"#;
    let a = srv.call("POST", "/v1/feedback", Some(&ingest), Some(("application/json", bad)));
    assert_eq!(a.status, 400);
    assert_eq!(a.json()["error"]["path"], "$.value");
    assert!(a.json()["error"]["message"].as_str().unwrap().contains("NaN"));
    let a = srv.call("POST", "/v1/feedback", Some(&ingest), Some(("application/json", b"[{\"request_id\": ")));
    assert_eq!(a.status, 400);

    // Limits: body size and rows per request.
    let big = vec![b' '; 70_000];
    let a = srv.call("POST", "/v1/feedback", Some(&ingest), Some(("application/json", &big)));
    assert_eq!(a.status, 413);
    let many: Vec<Value> = (0..51)
        .map(|i| json!({"request_id": "r1", "feedback_type": "implicit_usage", "event_id": format!("m{i}")}))
        .collect();
    let a = srv.post("/v1/feedback", Some(&ingest), &json!(many));
    assert_eq!(a.status, 413);
    assert_eq!(a.json()["error"]["code"], "too_many_rows");

    // Summary: the comment comes back verbatim, as text.
    let s = srv.get("/v1/requests/r1/summary", Some(&read));
    assert_eq!(s.status, 200, "{}", s.text());
    let s = s.json();
    assert_eq!(s["thumbs_up"], 1);
    assert_eq!(s["comments"][0], evil);
    assert_eq!(s["edited_outputs"], json!([evil]));
    assert_eq!(s["log_present"], true);
    assert_eq!(srv.get("/v1/requests/nobody/summary", Some(&read)).status, 404);
    assert_eq!(srv.get("/v1/requests/r%2F..%2Fx/summary", Some(&admin)).status, 404);

    // Feedback tokens: scoped to one request and its allowed types, refused elsewhere.
    let t = srv.post(
        "/v1/feedback-tokens",
        Some(&ingest),
        &json!({"request_id": "r2", "feedback_types": ["thumbs-up", "explicit_text_comment"]}),
    );
    assert_eq!(t.status, 200, "{}", t.text());
    let token = t.json()["token"].as_str().unwrap().to_string();
    assert_eq!(t.json()["feedback_types"], json!(["explicit_thumbs_up", "explicit_text_comment"]));
    let a = srv.post("/v1/feedback", Some(&token), &json!({"request_id": "r2", "feedback_type": "explicit_thumbs_up"}));
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["stored"], 1);
    let a = srv.post("/v1/feedback", Some(&token), &json!({"request_id": "r1", "feedback_type": "explicit_thumbs_up"}));
    assert_eq!(a.status, 403);
    assert_eq!(a.json()["error"]["path"], "$.request_id");
    let a =
        srv.post("/v1/feedback", Some(&token), &json!({"request_id": "r2", "feedback_type": "explicit_thumbs_down"}));
    assert_eq!(a.status, 403);
    assert_eq!(srv.post("/v1/logs", Some(&token), &log("r9", "x")).status, 403);
    assert_eq!(srv.get("/v1/requests/r2/summary", Some(&token)).status, 403);
    assert_eq!(srv.post("/v1/feedback-tokens", Some(&read), &json!({"request_id": "r2"})).status, 403);
    let a = srv.post("/v1/feedback-tokens", Some(&ingest), &json!({"request_id": "r2", "feedback_types": ["nope"]}));
    assert_eq!(a.status, 400);
    assert_eq!(a.json()["error"]["path"], "$.feedback_types[0]");
    // A tampered token: another request's claims under this signature.
    let other = srv.post("/v1/feedback-tokens", Some(&ingest), &json!({"request_id": "r1"})).json();
    let forged =
        format!("{}.{}", other["token"].as_str().unwrap().split('.').next().unwrap(), token.split('.').nth(1).unwrap());
    assert_eq!(
        srv.post("/v1/feedback", Some(&forged), &json!({"request_id": "r1", "feedback_type": "explicit_thumbs_up"}))
            .status,
        401
    );
    // Expiry.
    let short = srv.post("/v1/feedback-tokens", Some(&ingest), &json!({"request_id": "r2", "ttl_s": 1})).json();
    std::thread::sleep(Duration::from_millis(2100));
    let a = srv.post(
        "/v1/feedback",
        Some(short["token"].as_str().unwrap()),
        &json!({"request_id": "r2", "feedback_type": "explicit_thumbs_up"}),
    );
    assert_eq!(a.status, 401);
    assert!(a.json()["error"]["message"].as_str().unwrap().contains("expired"));

    // CORS for the browser route.
    let pre = request(
        &srv.addr,
        "OPTIONS",
        "/v1/feedback",
        None,
        None,
        &[("Origin", "http://app.example.test"), ("Access-Control-Request-Method", "POST")],
    );
    assert_eq!(pre.status, 204);
    assert_eq!(pre.header("access-control-allow-origin"), Some("http://app.example.test"));
    assert!(pre.header("access-control-allow-headers").unwrap().contains("authorization"));
    let pre = request(&srv.addr, "OPTIONS", "/v1/feedback", None, None, &[("Origin", "http://evil.example.test")]);
    assert_eq!(pre.header("access-control-allow-origin"), None);

    // Metrics, for a read key.
    assert_eq!(srv.get("/metrics", Some(&ingest)).status, 403);
    let m = srv.get("/metrics", Some(&read));
    assert_eq!(m.status, 200);
    let m = m.text();
    assert!(m.contains("evalloop_http_requests_total{route=\"/v1/logs\",status=\"401\"} 2"), "{m}");
    assert!(m.contains("evalloop_rows_total{kind=\"feedback\",status=\"rejected\"}"), "{m}");
    assert!(m.contains("evalloop_commit_rows_count"), "{m}");

    // Revocation takes effect within key_refresh_ms.
    cli(db, &["keys", "revoke", "ingest-1"]);
    let start = Instant::now();
    loop {
        // A row that is rejected while the key works, so polling stores nothing.
        let st = srv.post("/v1/feedback", Some(&ingest), &json!({"request_id": "r1", "feedback_type": "poll"})).status;
        if st == 401 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "a revoked key still works ({st})");
        std::thread::sleep(Duration::from_millis(50));
    }
    let listed: Value = serde_json::from_str(&cli(db, &["--json", "keys", "list"])).unwrap();
    let names: Vec<&str> = listed["keys"].as_array().unwrap().iter().map(|k| k["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["admin-1", "ingest-1", "read-1"]);
    assert!(!listed.to_string().contains(&ingest), "keys list shows a key");

    // Concurrent writers share transactions; every acknowledged row is there once.
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let (addr, key) = (srv.addr.clone(), admin.clone());
            std::thread::spawn(move || {
                for i in 0..10 {
                    let ev =
                        json!({"request_id": "r2", "feedback_type": "implicit_usage", "event_id": format!("c{t}-{i}")});
                    let a = request(
                        &addr,
                        "POST",
                        "/v1/feedback",
                        Some(&key),
                        Some(("application/json", ev.to_string().as_bytes())),
                        &[],
                    );
                    assert_eq!(a.status, 200, "{}", a.text());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }

    // SIGTERM: exit 0; everything acknowledged is in the store.
    assert_eq!(srv.stop(), 0);
    let stats: Value = serde_json::from_str(&cli(db, &["--json", "stats"])).unwrap();
    assert_eq!(stats["logs"], 2, "{stats}");
    assert_eq!(stats["feedback_events"], 2 + 1 + 1 + 1 + 160, "{stats}");
}
