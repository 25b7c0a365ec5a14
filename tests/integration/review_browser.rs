//! The review page of `evalloop serve`: over plain HTTP on both stores (login, cookie flags,
//! scopes, bad answers, escaping, the events in the store; preference items and their sides; an
//! answer on an item that others finished; the login's rate limit; the review routes against
//! the OpenAPI document), and in a real headless Chromium driven over WebDriver
//! (`chromedriver`, Debian's `chromium-driver`): log in, label three items with the keyboard,
//! skip one, see the progress, judge a pair with the keyboard, find the events in the store.
//!
//! Without `chromium` and `chromedriver` on PATH the browser test says SKIPPED and passes,
//! unless `EVALLOOP_REQUIRE_CHROMIUM=1`. The PostgreSQL half of the HTTP test runs under
//! `scripts/with-postgres.sh`.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::browser_support::on_path;
use crate::serve_support::*;

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

/// Four more logs, outputs of one prompt group (`r6`-`r9`, metadata `group` = `g`), and a
/// preference queue `pq` of four of their six pairs, one reviewer per item.
fn setup_pairs(db: &str, dir: &Path) {
    let logs: String = (6..10)
        .map(|i| {
            let mut l = log(&format!("r{i}"), &format!("output {i} {EVIL}"));
            l["prompt"] = json!(format!("the shared prompt {EVIL}"));
            l["eval_scores"] = json!({"overall": 0.1 * i as f64});
            l["metadata"]["group"] = json!("g");
            format!("{l}\n")
        })
        .collect();
    let path = dir.join("pair-logs.jsonl");
    std::fs::write(&path, logs).unwrap();
    cli(db, &["ingest", "logs", path.to_str().unwrap()]);
    cli(
        db,
        &[
            "queue",
            "create",
            "--name",
            "pq",
            "--kind",
            "preference",
            "--strategy",
            "random",
            "--size",
            "4",
            "--group-key",
            "group",
        ],
    );
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

/// The request id whose output an item page shows in the element `id` (outputs read
/// `output N ...`).
fn shown_request(html: &str, id: &str) -> String {
    let start = html.find(&format!("<pre id=\"{id}\">output ")).unwrap_or_else(|| panic!("no {id} in {html}"));
    let rest = &html[start + id.len() + 18..];
    format!("r{}", rest.split(' ').next().unwrap())
}

/// Preference items over HTTP, an answer on an item finished meanwhile (409 and the next item),
/// the review routes of the OpenAPI document, and the login's rate limit.
fn review_pairs_contract(db: &str) {
    let dir = tempfile::tempdir().unwrap();
    let ann = setup(db, dir.path());
    setup_pairs(db, dir.path());
    let bob = make_key(db, "bob", "annotate");
    let srv = Server::start(db, CONFIG);
    let ann_cookie = session_cookie(&form(&srv, "/review/login", &format!("key={ann}"), None));
    let bob_cookie = session_cookie(&form(&srv, "/review/login", &format!("key={bob}"), None));

    // The pair side by side, escaped; `a` names the output shown on the left.
    let html = page(&srv, "/review/queues/pq", &ann_cookie).text();
    assert!(html.contains("id=\"output-a\"") && html.contains("id=\"output-b\""), "{html}");
    assert!(!html.contains("<script>window"), "markup from the log reached the page raw");
    assert!(html.contains("data-key=\"t\""));
    let left = shown_request(&html, "output-a");
    let right = shown_request(&html, "output-b");
    assert!(html.contains("name=\"position\" value=\"0\""));
    let a = form(&srv, "/review/queues/pq/answer", "position=0&answer=a", Some(&ann_cookie));
    assert_eq!(a.status, 303, "{}", a.text());
    assert_eq!(form(&srv, "/review/queues/pq/answer", "position=1&answer=4", Some(&ann_cookie)).status, 400);

    // bob still has item 0's page open; ann's label finished it (one reviewer per item).
    let a = form(&srv, "/review/queues/pq/answer", "position=0&answer=tie", Some(&bob_cookie));
    assert_eq!(a.status, 409, "{}", a.text());
    let html = a.text();
    assert!(html.contains("id=\"notice\"") && html.contains("your answer was not stored"), "{html}");
    assert!(html.contains("name=\"position\" value=\"1\""), "the page moves on to the next item: {html}");
    // bob prefers the left output of the other three pairs (each reviewer sees fixed sides).
    let mut lefts = vec![("ann", left.clone(), right.clone())];
    for position in 1..4 {
        let html = page(&srv, "/review/queues/pq", &bob_cookie).text();
        assert!(html.contains(&format!("name=\"position\" value=\"{position}\"")), "{html}");
        lefts.push(("bob", shown_request(&html, "output-a"), shown_request(&html, "output-b")));
        let a = form(&srv, "/review/queues/pq/answer", &format!("position={position}&answer=a"), Some(&bob_cookie));
        assert_eq!(a.status, 303, "{}", a.text());
    }
    assert!(page(&srv, "/review/queues/pq", &bob_cookie).text().contains("id=\"done\""));

    // Ten failed logins from one address in a minute; the eleventh try is refused, even with a
    // good key, with Retry-After.
    for n in 0..10 {
        let a = form(&srv, "/review/login", &format!("key=evk_guess{n}"), None);
        assert_eq!(a.status, 401, "try {n}: {}", a.text());
    }
    let a = form(&srv, "/review/login", &format!("key={ann}"), None);
    assert_eq!(a.status, 429, "{}", a.text());
    let wait: u64 = a.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    assert!(a.text().contains("too many failed logins"));
    // A session made before keeps working.
    assert_eq!(page(&srv, "/review/queues/pq", &ann_cookie).status, 200);

    // The review routes answer as the OpenAPI document says they exist (no fallback 404).
    let doc = srv.get("/v1/openapi.json", None).json();
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.contains_key("/review/queues/{queue}/answer"));
    for (path, ops) in paths {
        let concrete = path.replace("{queue}", "pq").replace("{request_id}", "r1");
        for method in ops.as_object().unwrap().keys() {
            let a = request(&srv.addr, &method.to_uppercase(), &concrete, None, None, &[("Cookie", &bob_cookie)]);
            let fallback = a.status == 404 && a.text().contains("no such route");
            assert!(!fallback, "{method} {path} is documented but not routed");
        }
    }
    assert_eq!(srv.stop(), 0);

    // Each answer in its pair's own orientation, `a` the output that was on the left; bob's
    // refused answer left nothing.
    let store = evalloop::store::open(db).unwrap();
    let prefs = store.preferences(None).unwrap();
    assert_eq!(prefs.len(), 4, "{prefs:?}");
    let mut swapped = 0;
    for (who, left, right) in &lefts {
        let mut pair = [left.clone(), right.clone()];
        pair.sort();
        let e = prefs
            .iter()
            .find(|e| e.request_id == pair[0] && e.other_request_id.as_deref() == Some(pair[1].as_str()))
            .unwrap_or_else(|| panic!("no event on {pair:?}: {prefs:?}"));
        assert_eq!(e.user_id.as_deref(), Some(*who));
        let preferred = match &e.value {
            evalloop::record::FeedbackValue::Choice(evalloop::record::Choice::A) => &e.request_id,
            evalloop::record::FeedbackValue::Choice(evalloop::record::Choice::B) => {
                e.other_request_id.as_ref().unwrap()
            }
            v => panic!("{v:?}"),
        };
        assert_eq!(preferred, left, "`a` is the output shown on the left");
        swapped += usize::from(left > right);
    }
    assert!((1..4).contains(&swapped), "both sides were shown first: {lefts:?}");
    let labels = store.queue_labels(Some("pq")).unwrap();
    assert_eq!(labels.len(), 4);
}

#[test]
fn preference_items_full_items_and_login_limit_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    review_pairs_contract(&sqlite_store(dir.path()));
}

#[test]
fn preference_items_full_items_and_login_limit_on_postgres() {
    let Some(pg) = PgSchema::new("reviewpairs") else { return };
    review_pairs_contract(&pg.url);
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
    setup_pairs(&db, dir.path());
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

    // A pair: the two outputs side by side; `b` prefers the one on the right.
    d.goto(&format!("{base}/review/queues/pq"));
    d.wait_text("#progress-text", "0 of 4 answered");
    let left = format!("r{}", d.text("#output-a").split(' ').nth(1).unwrap());
    let right = format!("r{}", d.text("#output-b").split(' ').nth(1).unwrap());
    assert!(d.text("#output-a").contains("<script>window.hacked = 1</script>"), "the output shows as text");
    d.press("b");
    d.wait_text("#progress-text", "1 of 4 answered (1 labelled, 0 skipped)");
    d.press("t");
    d.wait_text("#progress-text", "2 of 4 answered (2 labelled, 0 skipped)");
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
    let prefs = store.preferences(None).unwrap();
    assert_eq!(prefs.len(), 2, "{prefs:?}");
    let ties =
        prefs.iter().filter(|e| e.value == evalloop::record::FeedbackValue::Choice(evalloop::record::Choice::Tie));
    assert_eq!(ties.count(), 1);
    let mut pair = [left.as_str(), right.as_str()];
    pair.sort_unstable();
    let first = prefs.iter().find(|e| e.request_id == pair[0] && e.other_request_id.as_deref() == Some(pair[1]));
    let first = first.expect("the first pair's event");
    let want = if first.request_id == right { evalloop::record::Choice::A } else { evalloop::record::Choice::B };
    assert_eq!(first.value, evalloop::record::FeedbackValue::Choice(want), "the right-hand output was preferred");
    assert!(prefs.iter().all(|e| e.user_id.as_deref() == Some("ann")));
}
