//! `evalloop-load`: a load generator for `evalloop serve` (the benchmark and the fault test).
//!
//! Opens `--connections` keep-alive HTTP/1.1 connections to `--addr` and, on each, posts
//! feedback events (`--batch` per request) for `--duration-s` seconds or until `--events` are
//! sent; prints requests/s, events/s and latency percentiles as JSON. With `--acked FILE` it
//! writes the `event_id` of every event the service acknowledged with a 2xx, one per line;
//! `--replay FILE` sends exactly the events named in such a file again. `--emit FILE` writes
//! `--events` events as JSON Lines for `evalloop ingest` instead of sending anything.
#![allow(clippy::print_stdout)]

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

struct Args {
    addr: String,
    key: String,
    connections: usize,
    batch: usize,
    duration: Option<Duration>,
    events: Option<u64>,
    prefix: String,
    acked: Option<String>,
    replay: Option<String>,
    emit: Option<String>,
}

fn usage(msg: &str) -> ! {
    eprintln!(
        "evalloop-load: {msg}\nusage: evalloop-load --addr HOST:PORT --key KEY [--connections 64] [--batch 1] \
         [--duration-s 10 | --events N] [--prefix ID] [--acked FILE] [--replay FILE] | --emit FILE --events N"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        addr: String::new(),
        key: String::new(),
        connections: 64,
        batch: 1,
        duration: None,
        events: None,
        prefix: "ev".into(),
        acked: None,
        replay: None,
        emit: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        let num =
            |v: String, f: &str| -> u64 { v.parse().unwrap_or_else(|_| usage(&format!("{f}: {v:?} is not a number"))) };
        match flag.as_str() {
            "--addr" => a.addr = val(),
            "--key" => a.key = val(),
            "--connections" => a.connections = num(val(), &flag).max(1) as usize,
            "--batch" => a.batch = num(val(), &flag).max(1) as usize,
            "--duration-s" => a.duration = Some(Duration::from_secs_f64(num(val(), &flag) as f64)),
            "--events" => a.events = Some(num(val(), &flag)),
            "--prefix" => a.prefix = val(),
            "--acked" => a.acked = Some(val()),
            "--replay" => a.replay = Some(val()),
            "--emit" => a.emit = Some(val()),
            other => usage(&format!("unknown flag {other}")),
        }
    }
    if a.emit.is_none() && (a.addr.is_empty() || a.key.is_empty()) {
        usage("--addr and --key are required");
    }
    if a.duration.is_none() && a.events.is_none() && a.replay.is_none() {
        usage("give --duration-s, --events or --replay");
    }
    a
}

/// The event with this id: its content is a function of the id, so a replay is a duplicate.
fn event(id: &str) -> String {
    let n: u64 = id.bytes().fold(0, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
    format!(
        r#"{{"event_id":"{id}","request_id":"load-{}","feedback_type":"implicit_usage","value":true,"user_id":"u-{}","timestamp":"2026-12-01T10:00:00Z"}}"#,
        n % 1000,
        n % 97
    )
}

struct Shared {
    next: AtomicU64,
    limit: u64,
    replay: Option<Vec<String>>,
    stop: AtomicBool,
    acked: Mutex<Vec<String>>,
    keep_acked: bool,
    lat_us: Mutex<Vec<u64>>,
    ok: AtomicU64,
    failed: AtomicU64,
    statuses: Mutex<std::collections::BTreeMap<u16, u64>>,
}

impl Shared {
    /// The ids of the next request, or `None` when done.
    fn take(&self, prefix: &str, batch: usize) -> Option<Vec<String>> {
        if self.stop.load(Ordering::Relaxed) {
            return None;
        }
        let start = self.next.fetch_add(batch as u64, Ordering::SeqCst);
        if start >= self.limit {
            return None;
        }
        let end = (start + batch as u64).min(self.limit);
        Some(
            (start..end)
                .map(|i| match &self.replay {
                    Some(ids) => ids[i as usize].clone(),
                    None => format!("{prefix}-{i}"),
                })
                .collect(),
        )
    }
}

async fn post(conn: &mut Option<BufReader<TcpStream>>, addr: &str, key: &str, body: &[u8]) -> std::io::Result<u16> {
    if conn.is_none() {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        *conn = Some(BufReader::new(s));
    }
    let c = conn.as_mut().unwrap_or_else(|| unreachable!());
    let head = format!(
        "POST /v1/feedback HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut req = head.into_bytes();
    req.extend_from_slice(body);
    c.get_mut().write_all(&req).await?;
    let mut line = String::new();
    if c.read_line(&mut line).await? == 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed"));
    }
    let status: u16 = line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut len = 0usize;
    let mut close = false;
    loop {
        line.clear();
        c.read_line(&mut line).await?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            } else if k.eq_ignore_ascii_case("connection") && v.trim().eq_ignore_ascii_case("close") {
                close = true;
            }
        }
    }
    let mut body = vec![0u8; len];
    c.read_exact(&mut body).await?;
    if close {
        *conn = None;
    }
    Ok(status)
}

async fn worker(sh: Arc<Shared>, addr: String, key: String, prefix: String, batch: usize) {
    let mut conn = None;
    while let Some(ids) = sh.take(&prefix, batch) {
        let body = if ids.len() == 1 {
            event(&ids[0])
        } else {
            format!("[{}]", ids.iter().map(|i| event(i)).collect::<Vec<_>>().join(","))
        };
        let t = Instant::now();
        match post(&mut conn, &addr, &key, body.as_bytes()).await {
            Ok(status) => {
                let us = t.elapsed().as_micros() as u64;
                sh.lat_us.lock().await.push(us);
                *sh.statuses.lock().await.entry(status).or_default() += 1;
                if (200..300).contains(&status) {
                    sh.ok.fetch_add(ids.len() as u64, Ordering::Relaxed);
                    if sh.keep_acked {
                        sh.acked.lock().await.extend(ids);
                    }
                } else {
                    sh.failed.fetch_add(ids.len() as u64, Ordering::Relaxed);
                }
            }
            Err(_) => {
                conn = None;
                sh.failed.fetch_add(ids.len() as u64, Ordering::Relaxed);
                *sh.statuses.lock().await.entry(0).or_default() += 1;
                // The server is gone or restarting: do not spin.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn main() {
    let a = parse_args();
    if let Some(path) = &a.emit {
        let n = a.events.unwrap_or_else(|| usage("--emit needs --events"));
        let mut f =
            std::io::BufWriter::new(std::fs::File::create(path).unwrap_or_else(|e| usage(&format!("{path}: {e}"))));
        for i in 0..n {
            let _ = writeln!(f, "{}", event(&format!("{}-{i}", a.prefix)));
        }
        let _ = f.flush();
        return;
    }
    let replay = a.replay.as_ref().map(|p| {
        std::fs::read_to_string(p)
            .unwrap_or_else(|e| usage(&format!("{p}: {e}")))
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect::<Vec<_>>()
    });
    let limit = match (&replay, a.events) {
        (Some(r), _) => r.len() as u64,
        (None, Some(n)) => n,
        (None, None) => u64::MAX,
    };
    let sh = Arc::new(Shared {
        next: AtomicU64::new(0),
        limit,
        replay,
        stop: AtomicBool::new(false),
        acked: Mutex::new(Vec::new()),
        keep_acked: a.acked.is_some(),
        lat_us: Mutex::new(Vec::new()),
        ok: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        statuses: Mutex::new(Default::default()),
    });
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap_or_else(|e| usage(&e.to_string()));
    let start = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..a.connections {
            tasks.push(tokio::spawn(worker(sh.clone(), a.addr.clone(), a.key.clone(), a.prefix.clone(), a.batch)));
        }
        if let Some(d) = a.duration {
            let sh2 = sh.clone();
            tokio::spawn(async move {
                tokio::time::sleep(d).await;
                sh2.stop.store(true, Ordering::SeqCst);
            });
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    let secs = start.elapsed().as_secs_f64();
    let mut lat = rt.block_on(async { sh.lat_us.lock().await.clone() });
    lat.sort_unstable();
    let statuses = rt.block_on(async { sh.statuses.lock().await.clone() });
    if let Some(path) = &a.acked {
        let ids = rt.block_on(async { sh.acked.lock().await.clone() });
        let mut text = ids.join("\n");
        text.push('\n');
        if let Err(e) = std::fs::write(path, text) {
            usage(&format!("{path}: {e}"));
        }
    }
    let ok = sh.ok.load(Ordering::Relaxed);
    let out = serde_json::json!({
        "connections": a.connections,
        "batch": a.batch,
        "seconds": secs,
        "requests": lat.len(),
        "requests_per_s": lat.len() as f64 / secs,
        "events_acknowledged": ok,
        "events_failed": sh.failed.load(Ordering::Relaxed),
        "events_per_s": ok as f64 / secs,
        "p50_ms": percentile(&lat, 0.50),
        "p99_ms": percentile(&lat, 0.99),
        "statuses": statuses.iter().map(|(k, v)| (k.to_string(), *v)).collect::<std::collections::BTreeMap<_, _>>(),
    });
    println!("{out}");
}
