//! A fuzzing harness: hostile inputs, generated deterministically from a seed, against ingest of
//! logs, feedback and scores (JSON Lines and CSV) and against model loading. Asserts no panic,
//! no hang and a consistent store afterwards.
//!
//! Each area runs for a time budget (`EVALLOOP_FUZZ_SECS`, default 2 seconds) with a seed from
//! `EVALLOOP_FUZZ_SEED` or the clock; the seed is printed, and every failure names it, so
//! `EVALLOOP_FUZZ_SEED=N cargo test --release --test integration fuzz_ingest::` replays a
//! failing run. With `EVALLOOP_TEST_PG` set (`scripts/with-postgres.sh`), the ingest areas also
//! run against a fresh PostgreSQL schema.

use std::io::Write as _;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use evalloop::ingest::{Format, IngestOptions, Kind, ingest};
use evalloop::store::Store;
use evalloop::store::sqlite::SqliteStore;

/// splitmix64: small, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

fn seed() -> u64 {
    let s = std::env::var("EVALLOOP_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(7, |d| d.as_nanos() as u64)
    });
    // Straight to stderr, so the seed shows even when the harness captures output.
    let _ = writeln!(std::io::stderr(), "fuzz_ingest: seed {s} (EVALLOOP_FUZZ_SEED={s} replays it)");
    s
}

fn budget() -> Duration {
    Duration::from_secs_f64(std::env::var("EVALLOOP_FUZZ_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(2.0))
}

const IDS: [&str; 6] = ["r1", "r2", "r3", "r\u{1b}[2J", "r\nlogs 9", "r-ü"];
const TIMES: [&str; 8] = [
    "2026-05-15T10:00:00Z",
    "2026-05-15T10:00:00.123456789+02:00",
    "9999-12-31T23:59:59-23:59",
    "0000-01-01T00:00:00Z",
    "2026-02-30T00:00:00Z",
    "last tuesday",
    "",
    "1970-01-01T00:00:00Z",
];
const NUMBERS: [&str; 12] =
    ["0.5", "0", "1", "-0", "1e308", "-1e308", "1.0000000001", "NaN", "Infinity", "\"0.5\"", "null", "1e-400"];
const TEXTS: [&str; 8] = ["p", "", " ", "\u{0}", "\u{1b}]0;title\u{7}", "\u{feff}x", "\\ud800", "long"];

/// A JSON string literal of `s` (or a long one for "long").
fn jstr(s: &str, rng: &mut Rng) -> String {
    if s == "long" {
        return format!("\"{}\"", "x".repeat(rng.below(5000)));
    }
    serde_json::to_string(s).unwrap()
}

/// One row of the kind, mostly valid, with hostile values picked by `rng`.
fn json_row(kind: Kind, rng: &mut Rng) -> String {
    let (id, ts, text) = (*rng.pick(&IDS), *rng.pick(&TIMES), *rng.pick(&TEXTS));
    let id = jstr(id, rng);
    let ts = jstr(ts, rng);
    let num = rng.pick(&NUMBERS).to_string();
    let text = jstr(text, rng);
    let mut row = match kind {
        Kind::Logs => format!(
            r#"{{"request_id": {id}, "timestamp": {ts}, "prompt": {text}, "output": "o", "eval_scores": {{"overall": {num}}}, "evaluator": "{}", "metadata": {{"user_cohort": {text}}}}}"#,
            rng.pick(&["baseline", "judge-v2", ""])
        ),
        Kind::Feedback => format!(
            r#"{{"request_id": {id}, "feedback_type": "{}", "value": {}, "event_id": "{}", "timestamp": {ts}}}"#,
            rng.pick(&["explicit_rating", "explicit_thumbs_up", "explicit_text_comment", "implicit_edit", "bogus"]),
            rng.pick(&["1", "5", "7", "true", "\"great\"", "null", "2.5", "[]"]),
            rng.pick(&["e1", "e2", "e3"])
        ),
        Kind::Scores => format!(
            r#"{{"request_id": {id}, "evaluator": "{}", "eval_scores": {{"overall": {num}}}}}"#,
            rng.pick(&["judge-v2", "judge-v3", ""])
        ),
    };
    // Structural damage now and then.
    match rng.below(12) {
        0 => {
            let at = rng.below(row.len());
            row = row.chars().take(at).collect();
        }
        1 => row = row.replacen("\"request_id\"", "\"request_id\": \"dup\", \"request_id\"", 1),
        2 => row = format!("{}{}", "[".repeat(rng.below(5000)), row),
        3 => row = row.replacen("\"prompt\"", "\"metdata\": 1, \"prompt\"", 1),
        4 => row = row.replace(", ", ",\r"),
        _ => {}
    }
    row
}

/// Bytes of one input file: rows joined by assorted line ends, with byte-level damage.
fn json_file(kind: Kind, rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    if rng.chance(8) {
        out.extend_from_slice(b"\xEF\xBB\xBF");
    }
    for _ in 0..rng.below(40) {
        out.extend_from_slice(json_row(kind, rng).as_bytes());
        let ends: [&[u8]; 4] = [b"\n", b"\r\n", b"\r", b"\n\n"];
        let end = *rng.pick(&ends);
        out.extend_from_slice(end);
    }
    damage(&mut out, rng);
    out
}

/// A CSV file of the kind, with ragged rows, quotes and damage.
fn csv_file(kind: Kind, rng: &mut Rng) -> Vec<u8> {
    let header = match kind {
        Kind::Logs => *rng.pick(&[
            "request_id,timestamp,prompt,output,eval_scores.overall,metadata.user_cohort",
            "request_id,request_id,timestamp",
            "request_id,timestamp,prompt,output,eval_scores,eval_scores.overall",
            "request_id,timestamp,prompt,output,eval_scores.overall,metdata.user_cohort",
        ]),
        Kind::Feedback => "request_id,feedback_type,value,user_id,event_id",
        Kind::Scores => "request_id,evaluator,eval_scores.overall",
    };
    let mut out = header.as_bytes().to_vec();
    out.push(b'\n');
    let cols = header.split(',').count();
    for _ in 0..rng.below(30) {
        let n = if rng.chance(6) { rng.below(cols + 2) } else { cols };
        let cells: Vec<String> = (0..n)
            .map(|_| {
                rng.pick(&[
                    "r1",
                    "2026-05-15T10:00:00Z",
                    "0.5",
                    "1.5",
                    "explicit_rating",
                    "4",
                    "",
                    "\"quoted, with comma\"",
                    "\"unterminated",
                    "judge-v2",
                    "e1",
                ])
                .to_string()
            })
            .collect();
        out.extend_from_slice(cells.join(",").as_bytes());
        let ends: [&[u8]; 2] = [b"\n", b"\r\n"];
        let end = *rng.pick(&ends);
        out.extend_from_slice(end);
    }
    damage(&mut out, rng);
    out
}

/// Flips, drops or inserts a few bytes (NUL, CR, invalid UTF-8, quotes).
fn damage(bytes: &mut Vec<u8>, rng: &mut Rng) {
    for _ in 0..rng.below(4) {
        if bytes.is_empty() {
            return;
        }
        let at = rng.below(bytes.len());
        match rng.below(3) {
            0 => bytes[at] = *rng.pick(&[0u8, b'\r', 0xff, 0xc3, b'"', b'{', b',']),
            1 => {
                bytes.remove(at);
            }
            _ => bytes.insert(at, *rng.pick(&[0u8, b'\r', 0xfe, b'\\'])),
        }
    }
}

/// Runs `f` on a thread of its own; a panic or a run past `limit` fails with `what`.
fn guarded<T: Send + 'static>(what: String, limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        let r = f();
        let _ = tx.send(());
        r
    });
    match rx.recv_timeout(limit) {
        Ok(()) => h.join().unwrap_or_else(|_| panic!("{what}: panicked")),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: panicked"),
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: still running after {limit:?} (a hang)"),
    }
}

/// The store-wide invariants every ingest must keep, whatever it was given.
fn check_consistent(store: &SqliteStore, what: &str) {
    let c = store.connection();
    let q = |sql: &str| -> i64 { c.query_row(sql, [], |r| r.get(0)).unwrap() };
    let ok: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(ok, "ok", "{what}");
    assert_eq!(
        q("SELECT COUNT(*) FROM eval_scores WHERE overall < 0 OR overall > 1 OR overall != overall"),
        0,
        "{what}"
    );
    assert_eq!(
        q("SELECT COUNT(*) FROM feedback_events WHERE feedback_type = 'explicit_rating'
             AND (value_num < 1 OR value_num > 5 OR value_num != CAST(value_num AS INTEGER))"),
        0,
        "{what}"
    );
    assert_eq!(
        q("SELECT COUNT(*) FROM eval_logs l WHERE NOT EXISTS (SELECT 1 FROM log_texts t WHERE t.log_id = l.log_id)"),
        0,
        "{what}"
    );
    assert_eq!(
        q("SELECT COUNT(*) FROM eval_logs WHERE ts < -62135596800000000 OR ts > 253402300799999999"),
        0,
        "{what}"
    );
    assert_eq!(q("SELECT COUNT(*) FROM eval_logs WHERE request_id = '' OR trim(request_id) = ''"), 0, "{what}");
}

/// Open stores to fuzz: a SQLite file, and a fresh PostgreSQL schema when one is configured.
fn stores(dir: &Path, name: &str) -> Vec<(String, Box<dyn Store + Send>)> {
    let mut out: Vec<(String, Box<dyn Store + Send>)> =
        vec![("sqlite".into(), Box::new(SqliteStore::open(&dir.join(format!("{name}.db"))).unwrap()))];
    if let Ok(url) = std::env::var("EVALLOOP_TEST_PG")
        && !url.is_empty()
    {
        let schema = format!("fuzz_{name}_{}", std::process::id());
        let mut admin = postgres::Client::connect(&url, postgres::NoTls).expect("EVALLOOP_TEST_PG answers");
        admin.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}")).unwrap();
        let sep = if url.contains('?') { '&' } else { '?' };
        let store_url = format!("{url}{sep}options=-csearch_path%3D{schema}");
        out.push(("postgres".into(), Box::new(evalloop::store::postgres::PostgresStore::open(&store_url).unwrap())));
    }
    out
}

/// Fuzzes one ingest area until its budget is spent; returns the inputs tried per backend.
fn fuzz_area(name: &str, kind: Kind, format: Format) -> Vec<(String, u64)> {
    let seed = seed() ^ (name.len() as u64).wrapping_mul(0x1234_5678);
    let dir = tempfile::tempdir().unwrap();
    let mut counts = Vec::new();
    for (backend, store) in stores(dir.path(), name) {
        let mut rng = Rng(seed);
        let store = std::sync::Arc::new(std::sync::Mutex::new(store));
        let start = Instant::now();
        let mut tried = 0u64;
        // Logs first, so feedback and scores have requests to hit.
        {
            let mut s = store.lock().unwrap();
            let f = dir.path().join("base.jsonl");
            let rows: Vec<String> = IDS.iter().map(|id| {
                format!(r#"{{"request_id": {}, "timestamp": "2026-05-15T10:00:00Z", "prompt": "p", "output": "o", "eval_scores": {{"overall": 0.5}}}}"#, serde_json::to_string(id).unwrap())
            }).collect();
            std::fs::write(&f, rows.join("\n")).unwrap();
            ingest(s.as_mut(), Kind::Logs, f.to_str().unwrap(), &IngestOptions::default()).unwrap();
        }
        while start.elapsed() < budget() {
            let case = rng.next();
            let mut r = Rng(case);
            let bytes = match format {
                Format::Jsonl => json_file(kind, &mut r),
                Format::Csv => csv_file(kind, &mut r),
            };
            let ext = if format == Format::Csv { "csv" } else { "jsonl" };
            let file = dir.path().join(format!("in.{ext}"));
            std::fs::write(&file, &bytes).unwrap();
            let opts = IngestOptions {
                strict: r.chance(4),
                batch_size: 1 + r.below(12),
                rejects: Some(dir.path().join("rejects.jsonl")),
                format: Some(format),
                max_line_bytes: if r.chance(5) { 64 + r.below(400) } else { 1 << 20 },
                group_key: None,
            };
            let what = format!("{name} on {backend}, seed {seed}, case {case}, strict {}", opts.strict);
            let st = store.clone();
            let path = file.to_str().unwrap().to_string();
            let result = guarded(what.clone(), Duration::from_secs(20), move || {
                let mut s = st.lock().unwrap_or_else(|p| p.into_inner());
                ingest(s.as_mut(), kind, &path, &opts).map_err(|e| (e.exit_code(), e.to_string()))
            });
            match result {
                // Every row read is counted once: stored, duplicate or rejected (conflicts are
                // rejected); a score for a request with no log is orphaned and not stored, where
                // an orphaned feedback event is stored.
                Ok(s) => {
                    let orphans_apart = if kind == Kind::Scores { s.orphaned } else { 0 };
                    assert_eq!(s.read, s.stored + s.duplicate + s.rejected + orphans_apart, "{what}: {s:?}")
                }
                // Bad input, or a header it refuses: exit 2. Nothing else is expected.
                Err((code, msg)) => assert_eq!(code, 2, "{what}: {msg}"),
            }
            tried += 1;
        }
        if backend == "sqlite" {
            let s = SqliteStore::open(&dir.path().join(format!("{name}.db"))).unwrap();
            check_consistent(&s, &format!("{name}, seed {seed}"));
        }
        let _ = writeln!(std::io::stderr(), "fuzz_ingest: {name} on {backend}: {tried} inputs, no panic, no hang");
        counts.push((backend, tried));
    }
    counts
}

#[test]
fn fuzz_ingest_logs_jsonl() {
    assert!(fuzz_area("logs_jsonl", Kind::Logs, Format::Jsonl).iter().all(|(_, n)| *n > 0));
}

#[test]
fn fuzz_ingest_feedback_jsonl() {
    assert!(fuzz_area("feedback_jsonl", Kind::Feedback, Format::Jsonl).iter().all(|(_, n)| *n > 0));
}

#[test]
fn fuzz_ingest_scores_jsonl() {
    assert!(fuzz_area("scores_jsonl", Kind::Scores, Format::Jsonl).iter().all(|(_, n)| *n > 0));
}

#[test]
fn fuzz_ingest_csv() {
    for (name, kind) in [("logs_csv", Kind::Logs), ("feedback_csv", Kind::Feedback), ("scores_csv", Kind::Scores)] {
        assert!(fuzz_area(name, kind, Format::Csv).iter().all(|(_, n)| *n > 0));
    }
}

/// Hostile model directories: config.json with absurd or broken values, a safetensors file cut
/// short or with flipped header bytes. Loading must fail cleanly or succeed, never panic, abort
/// or allocate without bound.
#[test]
fn fuzz_model_loading() {
    use evalloop::model::config::BertConfig;
    use evalloop::model::weights::{init_weights, load_checkpoint};
    let seed = seed();
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    evalloop::model::testutil::write_tiny_base(&base, 1, true);
    let config = std::fs::read_to_string(base.join("config.json")).unwrap();
    let weights = std::fs::read(base.join("model.safetensors")).unwrap();
    let keys = [
        "vocab_size",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "max_position_embeddings",
        "type_vocab_size",
        "layer_norm_eps",
        "initializer_range",
        "hidden_dropout_prob",
    ];
    let values = ["0", "-1", "1e300", "18446744073709551615", "1099511627776", "NaN", "\"x\"", "null", "3", "-1.0"];
    let start = Instant::now();
    let mut tried = 0u64;
    while start.elapsed() < budget() {
        let case = rng.next();
        let mut r = Rng(case);
        let m = dir.path().join("m");
        std::fs::create_dir_all(&m).unwrap();
        let mut cfg: serde_json::Value = serde_json::from_str(&config).unwrap();
        for _ in 0..1 + r.below(3) {
            let v = r.pick(&values);
            cfg[*r.pick(&keys)] = serde_json::from_str(v).unwrap_or(serde_json::Value::Null);
        }
        let mut cfg_text = cfg.to_string();
        if r.chance(6) {
            cfg_text.truncate(r.below(cfg_text.len()));
        }
        std::fs::write(m.join("config.json"), cfg_text).unwrap();
        let mut w = weights.clone();
        match r.below(4) {
            0 => w.truncate(r.below(w.len())),
            1 => {
                for _ in 0..1 + r.below(4) {
                    let at = r.below(w.len().min(600));
                    w[at] = r.next() as u8;
                }
            }
            _ => {}
        }
        std::fs::write(m.join("model.safetensors"), &w).unwrap();
        let what = format!("model loading, seed {seed}, case {case}");
        let md = m.clone();
        guarded(what, Duration::from_secs(20), move || {
            let Ok(cfg) = BertConfig::from_file(&md.join("config.json")) else { return };
            let Ok(ckpt) = load_checkpoint(&md.join("model.safetensors"), cfg.family()) else { return };
            let _ = init_weights(&cfg, Some(ckpt), &md, 1);
        });
        tried += 1;
    }
    let _ = writeln!(std::io::stderr(), "fuzz_ingest: model loading: {tried} inputs, no panic, no hang");
    assert!(tried > 0);
}
