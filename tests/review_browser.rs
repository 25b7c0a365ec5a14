//! The review page of `evalloop serve`: over plain HTTP on both stores (login, cookie flags,
//! scopes, bad answers, escaping, the events in the store), and in a real headless Chromium
//! driven over WebDriver (`chromedriver`, Debian's `chromium-driver`): log in, label three items
//! with the keyboard, skip one, see the progress, find the events in the store.
//!
//! Without `chromium` and `chromedriver` on PATH the browser test says SKIPPED and passes,
//! unless `EVALLOOP_REQUIRE_CHROMIUM=1`. The PostgreSQL half of the HTTP test runs under
//! `scripts/with-postgres.sh`.

mod serve_support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use serve_support::*;

const EVIL: &str = "<script>window.hacked = 1</script><img src=x onerror=\"window.hacked = 2\">";

/// A store with six logs (their prompts carry markup), a random rating queue of five items
/// and a key `ann` of scope `annotate`; returns the key.
fn setup(db: &str, dir: &Path) -> String {
    let logs: String = (0..6)
        .map(|i| {
            let mut l = log(&format!("r{i}"), &format!("output {i} {EVIL}"));
            l["prompt"] = json!(format!("prompt {i} {EVIL}"));
            l["eval_scores"] = json!({"overall": 0.1 * i as f64});
            format!("{l}\n")
        })
        .collect();
    let path = dir.join("logs.jsonl");
    std::fs::write(&path, logs).unwrap();
    cli(db, &["ingest", "logs", path.to_str().unwrap()]);
    cli(db, &["queue", "create", "--name", "q", "--strategy", "random", "--size", "5"]);
    make_key(db, "ann", "annotate")
}

/// The `evalloop_review` cookie a login sets.
fn session_cookie(a: &Answer) -> String {
    let set = a.header("set-cookie").expect("a session cookie");
    set.split(';').next().unwrap().to_string()
}

fn form(srv: &Server, path: &str, body: &str, cookie: Option<&str>) -> Answer {
    let mut extra = Vec::new();
    if let Some(c) = cookie {
        extra.push(("Cookie", c));
    }
    request(&srv.addr, "POST", path, None, Some(("application/x-www-form-urlencoded", body.as_bytes())), &extra)
}

fn page(srv: &Server, path: &str, cookie: &str) -> Answer {
    request(&srv.addr, "GET", path, None, None, &[("Cookie", cookie)])
}

fn review_contract(db: &str) {
    let dir = tempfile::tempdir().unwrap();
    let key = setup(db, dir.path());
    let read = make_key(db, "reader", "read");
    let srv = Server::start(db, CONFIG);

    // Not logged in: the login form; a wrong key or scope: refused.
    let a = srv.get("/review", None);
    assert_eq!(a.status, 200);
    assert!(a.text().contains("name=\"key\""));
    assert!(a.header("content-security-policy").unwrap().contains("script-src 'self'"));
    assert_eq!(form(&srv, "/review/login", "key=evk_nope", None).status, 401);
    let a = form(&srv, "/review/login", &format!("key={read}"), None);
    assert_eq!(a.status, 403);
    assert!(a.text().contains("scope annotate"), "{}", a.text());
    assert_eq!(srv.get("/review/queues/q", None).status, 303);
    assert_eq!(page(&srv, "/review/queues/q", "evalloop_review=forged.value").status, 303);

    // Log in: an HttpOnly, SameSite=Strict cookie.
    let a = form(&srv, "/review/login", &format!("key={key}"), None);
    assert_eq!(a.status, 303, "{}", a.text());
    let set = a.header("set-cookie").unwrap();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Path=/review"), "{set}");
    let cookie = session_cookie(&a);
    let idx = page(&srv, "/review", &cookie);
    assert!(idx.text().contains("href=\"/review/queues/q\""), "{}", idx.text());

    // The item page: text escaped, no score.
    let p = page(&srv, "/review/queues/q", &cookie);
    assert_eq!(p.status, 200);
    let html = p.text();
    assert!(!html.contains("<script>window"), "markup from the log reached the page raw");
    assert!(html.contains("&lt;script&gt;window.hacked = 1&lt;/script&gt;"));
    assert!(html.contains("value=\"0\""), "the first item is position 0");
    assert_eq!(page(&srv, "/review/queues/nope", &cookie).status, 404);

    // Answers: bad ones refused, good ones stored; a thumb on a rating queue is refused.
    assert_eq!(form(&srv, "/review/queues/q/answer", "position=0&answer=9", Some(&cookie)).status, 400);
    assert_eq!(form(&srv, "/review/queues/q/answer", "position=0&answer=up", Some(&cookie)).status, 400);
    assert_eq!(form(&srv, "/review/queues/q/answer", "position=99&answer=3", Some(&cookie)).status, 400);
    assert_eq!(form(&srv, "/review/queues/q/answer", "answer=3", Some(&cookie)).status, 400);
    let a = form(&srv, "/review/queues/q/answer", "position=0&answer=3&comment=%3Cb%3Efine%3C%2Fb%3E", Some(&cookie));
    assert_eq!(a.status, 303);
    assert_eq!(a.header("location"), Some("/review/queues/q"));
    assert_eq!(form(&srv, "/review/queues/q/answer", "position=1&answer=skip", Some(&cookie)).status, 303);
    let p = page(&srv, "/review/queues/q", &cookie).text();
    assert!(p.contains("value=\"2\""), "the next item is position 2");
    assert!(p.contains("2 of 5 answered (1 labelled, 1 skipped)"), "{p}");

    // Revoking the key ends the session.
    cli(db, &["keys", "revoke", "ann"]);
    let start = Instant::now();
    while page(&srv, "/review/queues/q", &cookie).status != 303 {
        assert!(start.elapsed() < Duration::from_secs(5), "a revoked key's session still works");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(srv.stop(), 0);
    let shown: Value = serde_json::from_str(&cli(db, &["--json", "queue", "show", "q", "--bootstrap", "0"])).unwrap();
    assert_eq!(shown["progress"]["labels"], 1);
    assert_eq!(shown["progress"]["skips"], 1);
    let export = cli(db, &["queue", "export", "q"]);
    let first: Value = serde_json::from_str(export.lines().next().unwrap()).unwrap();
    assert_eq!(first["answers"][0]["reviewer"], "ann");
    assert_eq!(first["answers"][0]["value"], 3.0);
    assert_eq!(first["answers"][0]["comment"], "<b>fine</b>");
}

#[test]
fn review_page_over_http_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    review_contract(&sqlite_store(dir.path()));
}

#[test]
fn review_page_over_http_on_postgres() {
    let Some(pg) = PgSchema::new("review") else { return };
    review_contract(&pg.url);
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// One HTTP/1.1 exchange with chromedriver: the answer is read up to its `Content-Length`
/// (chromedriver keeps the connection open, so reading to the end would wait for a timeout).
fn webdriver(addr: &str, method: &str, path: &str, body: Option<Value>) -> Result<(u16, Value), String> {
    use std::io::{BufRead, BufReader, Read};
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(60))).map_err(|e| e.to_string())?;
    // POSTs without parameters still send an empty object, as WebDriver requires.
    let body = match (method, body) {
        (_, Some(b)) => b.to_string(),
        ("POST", None) => "{}".to_string(),
        _ => String::new(),
    };
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).and_then(|_| s.write_all(body.as_bytes())).map_err(|e| format!("write: {e}"))?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| format!("read: {e}"))?;
    let status: u16 = line.split(' ').nth(1).and_then(|c| c.parse().ok()).ok_or(format!("status line {line:?}"))?;
    let mut length = 0usize;
    loop {
        line.clear();
        r.read_line(&mut line).map_err(|e| format!("read: {e}"))?;
        if line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().map_err(|_| format!("content-length {v:?}"))?;
        }
    }
    let mut buf = vec![0u8; length];
    r.read_exact(&mut buf).map_err(|e| format!("read body: {e}"))?;
    let v = serde_json::from_slice(&buf).map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&buf)))?;
    Ok((status, v))
}

/// A chromedriver on a free port, killed when dropped, with one browser session.
struct Driver {
    child: Child,
    addr: String,
    session: String,
}

impl Driver {
    fn start(chromium: &Path, chromedriver: &Path, profile: &Path) -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let addr = format!("127.0.0.1:{port}");
        let mut d = Driver { child, addr, session: String::new() };
        let start = Instant::now();
        loop {
            if let Ok((_, v)) = webdriver(&d.addr, "GET", "/status", None)
                && v["value"]["ready"] == true
            {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "chromedriver did not start in 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.display().to_string(),
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let v = d.call("POST", "/session", Some(caps));
        d.session = v["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {v}")).to_string();
        d
    }

    /// One WebDriver command; its `value`.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = webdriver(&self.addr, method, path, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert_eq!(status, 200, "WebDriver {method} {path}: {v}");
        v["value"].clone()
    }

    fn session(&self, method: &str, rest: &str, body: Option<Value>) -> Value {
        self.call(method, &format!("/session/{}{rest}", self.session), body)
    }

    fn goto(&self, url: &str) {
        self.session("POST", "/url", Some(json!({"url": url})));
    }

    /// The element matching a CSS selector.
    fn find(&self, css: &str) -> String {
        let v = self.session("POST", "/element", Some(json!({"using": "css selector", "value": css})));
        v.as_object().and_then(|o| o.values().next()).and_then(Value::as_str).unwrap().to_string()
    }

    fn text(&self, css: &str) -> String {
        let e = self.find(css);
        self.session("GET", &format!("/element/{e}/text"), None).as_str().unwrap_or_default().to_string()
    }

    /// Presses and releases one key, as a person would on the page, once the page (and its
    /// script) has loaded.
    fn press(&self, key: &str) {
        let start = Instant::now();
        while self.session("POST", "/execute/sync", Some(json!({"script": "return document.readyState", "args": []})))
            != "complete"
        {
            assert!(start.elapsed() < Duration::from_secs(20), "the page did not finish loading");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.session(
            "POST",
            "/actions",
            Some(json!({"actions": [{"type": "key", "id": "keyboard", "actions": [
                {"type": "keyDown", "value": key}, {"type": "keyUp", "value": key}]}]})),
        );
    }

    /// The element's text, or `None` while the page has no such element (it may be between
    /// two pages: a find or a read can fail as the next page replaces this one).
    fn try_text(&self, css: &str) -> Option<String> {
        let base = format!("/session/{}", self.session);
        let (st, v) = webdriver(
            &self.addr,
            "POST",
            &format!("{base}/element"),
            Some(json!({"using": "css selector", "value": css})),
        )
        .ok()?;
        let e = v["value"].as_object().filter(|_| st == 200)?.values().next()?.as_str()?.to_string();
        let (st, v) = webdriver(&self.addr, "GET", &format!("{base}/element/{e}/text"), None).ok()?;
        (st == 200).then(|| v["value"].as_str().unwrap_or_default().to_string())
    }

    /// Waits until the element's text contains `want`.
    fn wait_text(&self, css: &str, want: &str) {
        let start = Instant::now();
        loop {
            if self.try_text(css).is_some_and(|t| t.contains(want)) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{css} never said {want:?}: {:?}",
                self.try_text("body")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = webdriver(&self.addr, "DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_reviewer_labels_with_the_keyboard_in_a_real_browser() {
    let (Some(chromium), Some(chromedriver)) = (on_path("chromium"), on_path("chromedriver")) else {
        let msg = "review_browser: SKIPPED: `chromium` or `chromedriver` is not on PATH \
                   (install them with `apt-get install -y chromium chromium-driver`)";
        assert!(std::env::var_os("EVALLOOP_REQUIRE_CHROMIUM").is_none(), "{msg}");
        let _ = writeln!(std::io::stderr(), "{msg}");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_store(dir.path());
    let key = setup(&db, dir.path());
    let srv = Server::start(&db, CONFIG);
    let profile = tempfile::tempdir().unwrap();
    let d = Driver::start(&chromium, &chromedriver, profile.path());
    let base = format!("http://{}", srv.addr);

    // Log in with the key.
    d.goto(&format!("{base}/review"));
    let field = d.find("#key");
    d.session("POST", &format!("/element/{field}/value"), Some(json!({"text": key})));
    let button = d.find("#login");
    d.session("POST", &format!("/element/{button}/click"), None);
    d.wait_text("#reviewer", "ann");

    // Three labels and a skip, all from the keyboard.
    d.goto(&format!("{base}/review/queues/q"));
    d.wait_text("#progress-text", "0 of 5 answered");
    assert!(d.text("#prompt").contains("<script>window.hacked = 1</script>"), "the prompt shows as text");
    let mut shown = Vec::new();
    for (n, key) in ["4", "2", "s", "5"].iter().enumerate() {
        let output = d.text("#output");
        shown.push(output.split(' ').nth(1).unwrap().to_string());
        d.press(key);
        d.wait_text("#progress-text", &format!("{} of 5 answered", n + 1));
    }
    assert_eq!(d.text("#progress-text"), "4 of 5 answered (3 labelled, 1 skipped)");
    let hacked =
        d.session("POST", "/execute/sync", Some(json!({"script": "return window.hacked === undefined", "args": []})));
    assert_eq!(hacked, true, "markup in a log ran in the page");
    drop(d);
    assert_eq!(srv.stop(), 0);

    // The events, with the reviewer as user_id.
    let store = evalloop::store::open(&db).unwrap();
    let want = [(0, Some(4)), (1, Some(2)), (2, None), (3, Some(5))];
    for (i, rating) in want {
        let id = format!("r{}", shown[i]);
        let ev = store.feedback_for(&id).unwrap();
        match rating {
            Some(r) => {
                assert_eq!(ev.len(), 1, "{id}: {ev:?}");
                assert_eq!(ev[0].user_id.as_deref(), Some("ann"));
                assert_eq!(ev[0].value, evalloop::record::FeedbackValue::Rating(r));
            }
            None => assert!(ev.is_empty(), "a skip stored an event: {ev:?}"),
        }
    }
    let labels = store.queue_labels(Some("q")).unwrap();
    assert_eq!(labels.len(), 4);
}
