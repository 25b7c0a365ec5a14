//! The browser snippet in a real browser: headless Chromium loads `examples/serve/feedback.html`
//! from an origin of its own (a page server in this test), the snippet served by the real
//! `evalloop serve` mounts its buttons, a click on thumbs-up posts with a feedback token across
//! origins (CORS), and the event is in the store.
//!
//! Needs Debian's `chromium` on PATH, as `report_browser.rs`; without it the test says so and
//! passes, unless `EVALLOOP_REQUIRE_CHROMIUM=1`.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::browser_support::{HEADLESS, on_path};
use crate::serve_support::*;

/// Answers every request on `listener` with the page it receives on `page`, from a thread.
fn serve_page(listener: TcpListener, page: std::sync::mpsc::Receiver<String>) {
    std::thread::spawn(move || {
        let Ok(page) = page.recv() else { return };
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { continue };
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                page.len()
            );
            let _ = c.write_all(head.as_bytes());
            let _ = c.write_all(page.as_bytes());
        }
    });
}

#[test]
fn a_click_on_thumbs_up_lands_as_a_feedback_event() {
    let Some(chromium) = on_path("chromium") else {
        let msg = "serve_browser: SKIPPED: `chromium` is not on PATH (install it with `apt-get install -y chromium`)";
        assert!(std::env::var_os("EVALLOOP_REQUIRE_CHROMIUM").is_none(), "{msg}");
        let _ = writeln!(std::io::stderr(), "{msg}");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_store(dir.path());
    let key = make_key(&db, "backend", "admin");

    // The page has an origin of its own, known before the service starts (CORS).
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/serve/feedback.html")).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let page_origin = format!("http://{}", listener.local_addr().unwrap());
    let (page_tx, page_rx) = std::sync::mpsc::channel();
    serve_page(listener, page_rx);
    let srv = Server::start(&db, &format!("[serve]\ncors_origins = [\"{page_origin}\"]\n"));
    let token = srv.post(
        "/v1/feedback-tokens",
        Some(&key),
        &json!({"request_id": "req-42", "feedback_types": ["thumbs-up", "thumbs-down"]}),
    );
    assert_eq!(token.status, 200, "{}", token.text());
    let token = token.json()["token"].as_str().unwrap().to_string();
    // The example as a server would render it, plus a click on the first button once mounted.
    let page = example
        .replace("FEEDBACK_TOKEN", &token)
        .replace("http://127.0.0.1:8080", &format!("http://{}", srv.addr))
        .replace(
            "</body>",
            "<script>window.addEventListener('load', function () {\n\
               document.querySelector('.evalloop-feedback button').click();\n\
             });</script>\n</body>",
        );
    page_tx.send(page).unwrap();

    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(&chromium)
        .args(HEADLESS)
        .args(["--virtual-time-budget=10000", "--dump-dom"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("{page_origin}/"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("chromium did not finish in 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let dom = reader.join().unwrap();
    assert!(dom.contains("evalloop-feedback"), "the snippet mounted its widget: {}", &dom[..dom.len().min(2000)]);
    // The answer element's own tag (the page's CSS names the state too).
    let at = dom.find("<div class=\"answer\"").expect("the answer element");
    let tag = &dom[at..at + dom[at..].find('>').unwrap()];
    assert!(tag.contains("data-evalloop-state=\"sent\""), "the click was posted and acknowledged: {tag}");

    let s = srv.get("/v1/requests/req-42/summary", Some(&key));
    assert_eq!(s.status, 200, "{}", s.text());
    assert_eq!(s.json()["thumbs_up"], 1);
    assert_eq!(srv.stop(), 0);
}
