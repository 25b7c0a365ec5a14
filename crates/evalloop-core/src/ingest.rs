//! Streaming, validated, transactional ingest of eval logs and feedback events (JSON Lines or CSV).
//!
//! A reader thread parses and validates rows into batches; the calling thread writes each batch
//! in its own transaction, so a killed ingest leaves only whole batches. Bad rows are named with
//! file:line and field; by default they go to a rejects file and the rest is stored; with
//! `strict`, the first bad row rolls back everything this file wrote.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use chrono::Utc;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::record::{EvalLog, FeedbackEvent, FieldError};
use crate::store::{BatchOutcome, Store};
use crate::{Error, Result};

/// Which kind of record a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Logs,
    Feedback,
}

/// Input format; by default chosen from the extension (`.csv` is CSV, anything else JSON Lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jsonl,
    Csv,
}

/// How to ingest.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Abort at the first bad row and store nothing from the file. Default false.
    pub strict: bool,
    /// Rows per transaction. Default 10,000.
    pub batch_size: usize,
    /// Where bad rows go; default `<FILE>.rejects.jsonl` (`stdin.rejects.jsonl` for `-`).
    pub rejects: Option<PathBuf>,
    /// Forced format; default by extension.
    pub format: Option<Format>,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions { strict: false, batch_size: 10_000, rejects: None, format: None }
    }
}

/// What an ingest did; printed as one line, or as JSON with `--json`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IngestSummary {
    pub file: String,
    pub kind: String,
    /// Non-blank rows read.
    pub read: u64,
    pub stored: u64,
    pub duplicate: u64,
    pub rejected: u64,
    pub orphaned: u64,
    /// The rejects file, when any row was rejected.
    pub rejects_file: Option<String>,
}

impl std::fmt::Display for IngestSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ingest {} {}: read {}, stored {}, duplicate {}, rejected {}, orphaned {}",
            self.kind, self.file, self.read, self.stored, self.duplicate, self.rejected, self.orphaned
        )?;
        if let Some(r) = &self.rejects_file {
            write!(f, " (rejects in {r})")?;
        }
        Ok(())
    }
}

/// A rejected row, as written to the rejects file.
#[derive(Debug, Clone, Serialize)]
pub struct Reject {
    pub source: String,
    pub line: u64,
    pub field: String,
    pub error: String,
    /// The row as read (lossy UTF-8, cut at 64 KiB).
    pub raw: String,
}

impl Reject {
    fn describe(&self) -> String {
        let field = if self.field.is_empty() { String::new() } else { format!(" field `{}`:", self.field) };
        format!("{}:{}:{} {}", self.source, self.line, field, self.error)
    }
}

enum Rows {
    Logs(Vec<EvalLog>),
    Feedback(Vec<FeedbackEvent>),
}

impl Rows {
    fn new(kind: Kind, cap: usize) -> Rows {
        match kind {
            Kind::Logs => Rows::Logs(Vec::with_capacity(cap)),
            Kind::Feedback => Rows::Feedback(Vec::with_capacity(cap)),
        }
    }
    fn len(&self) -> usize {
        match self {
            Rows::Logs(v) => v.len(),
            Rows::Feedback(v) => v.len(),
        }
    }
}

/// One batch from the reader: validated rows, rejects in line order, rows read.
struct Batch {
    rows: Rows,
    rejects: Vec<Reject>,
    read: u64,
}

/// Ingests one file (or `-` for stdin) into the store.
pub fn ingest(store: &mut dyn Store, kind: Kind, source: &str, opts: &IngestOptions) -> Result<IngestSummary> {
    let batch_size = opts.batch_size.max(1);
    let format =
        opts.format.unwrap_or(if source.to_ascii_lowercase().ends_with(".csv") { Format::Csv } else { Format::Jsonl });
    let input: Box<dyn Read + Send> = if source == "-" {
        Box::new(io::stdin())
    } else {
        Box::new(File::open(source).map_err(|e| Error::io(source, e))?)
    };
    let label = if source == "-" { "<stdin>".to_string() } else { source.to_string() };
    let rejects_path = opts.rejects.clone().unwrap_or_else(|| {
        if source == "-" { PathBuf::from("stdin.rejects.jsonl") } else { default_rejects_path(Path::new(source)) }
    });
    let mut summary = IngestSummary { file: label.clone(), kind: kind_name(kind).into(), ..Default::default() };

    let (tx, rx) = mpsc::sync_channel::<std::result::Result<Batch, Error>>(2);
    let reader_label = label.clone();
    let strict = opts.strict;
    let reader = std::thread::spawn(move || {
        let send = |b| tx.send(b).is_ok();
        let mut batcher = Batcher::new(kind, &reader_label, batch_size, strict, &send);
        let result = match format {
            Format::Jsonl => read_jsonl(input, &mut batcher),
            Format::Csv => read_csv(input, &mut batcher),
        };
        if let Err(e) = result {
            let _ = tx.send(Err(e));
        }
    });

    let mut rejects_out: Option<BufWriter<File>> = None;
    let mut outcome = BatchOutcome::default();
    if opts.strict {
        store.begin()?;
    }
    let mut failure: Option<Error> = None;
    for msg in rx.iter() {
        let batch = match msg {
            Ok(b) => b,
            Err(e) => {
                failure = Some(e);
                break;
            }
        };
        summary.read += batch.read;
        if opts.strict
            && let Some(r) = batch.rejects.first()
        {
            failure = Some(Error::Input(format!("{} (--strict: nothing from this file was stored)", r.describe())));
            break;
        }
        for r in &batch.rejects {
            tracing::warn!("{}", r.describe());
            let w = match &mut rejects_out {
                Some(w) => w,
                None => {
                    let f = File::create(&rejects_path).map_err(|e| Error::io(&rejects_path, e))?;
                    rejects_out.insert(BufWriter::new(f))
                }
            };
            serde_json::to_writer(&mut *w, r).map_err(|e| Error::io(&rejects_path, e.into()))?;
            w.write_all(b"\n").map_err(|e| Error::io(&rejects_path, e))?;
        }
        summary.rejected += batch.rejects.len() as u64;
        if batch.rows.len() == 0 {
            continue;
        }
        if !opts.strict {
            store.begin()?;
        }
        let written = match &batch.rows {
            Rows::Logs(v) => store.insert_logs(v),
            Rows::Feedback(v) => store.insert_feedback(v),
        };
        match written {
            Ok(o) => outcome += o,
            Err(e) => {
                failure = Some(e.into());
                break;
            }
        }
        if !opts.strict {
            store.commit()?;
        }
    }
    drop(rx);
    let _ = reader.join();
    if let Some(w) = &mut rejects_out {
        w.flush().map_err(|e| Error::io(&rejects_path, e))?;
    }
    if let Some(e) = failure {
        store.rollback()?;
        return Err(e);
    }
    if opts.strict {
        store.commit()?;
    }
    summary.stored = outcome.stored;
    summary.duplicate = outcome.duplicate;
    summary.orphaned = outcome.orphaned;
    if rejects_out.is_some() {
        summary.rejects_file = Some(rejects_path.display().to_string());
    }
    Ok(summary)
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Logs => "logs",
        Kind::Feedback => "feedback",
    }
}

/// Accumulates validated rows and rejects into batches and hands them on.
struct Batcher<'a> {
    kind: Kind,
    label: &'a str,
    size: usize,
    strict: bool,
    now: chrono::DateTime<Utc>,
    cur: Batch,
    send: &'a dyn Fn(std::result::Result<Batch, Error>) -> bool,
}

impl<'a> Batcher<'a> {
    fn new(
        kind: Kind,
        label: &'a str,
        size: usize,
        strict: bool,
        send: &'a dyn Fn(std::result::Result<Batch, Error>) -> bool,
    ) -> Self {
        Batcher {
            kind,
            label,
            size,
            strict,
            now: Utc::now(),
            cur: Batch { rows: Rows::new(kind, size), rejects: Vec::new(), read: 0 },
            send,
        }
    }

    /// Takes one parsed row; returns false when the consumer is gone or strict mode must stop.
    fn push(&mut self, line: u64, parsed: std::result::Result<Value, FieldError>, raw: &[u8], from_text: bool) -> bool {
        self.cur.read += 1;
        let checked = parsed.and_then(|v| match &mut self.cur.rows {
            Rows::Logs(rows) => EvalLog::from_json(v, from_text).map(|l| rows.push(l)),
            Rows::Feedback(rows) => FeedbackEvent::from_json(v, from_text, self.now).map(|e| rows.push(e)),
        });
        if let Err(e) = checked {
            let cut = raw.len().min(64 * 1024);
            self.cur.rejects.push(Reject {
                source: self.label.to_string(),
                line,
                field: e.field,
                error: e.reason,
                raw: String::from_utf8_lossy(&raw[..cut]).into_owned(),
            });
            if self.strict {
                return self.flush();
            }
        }
        if self.cur.rows.len() >= self.size { self.flush() } else { true }
    }

    fn flush(&mut self) -> bool {
        let stop = self.strict && !self.cur.rejects.is_empty();
        let batch = std::mem::replace(
            &mut self.cur,
            Batch { rows: Rows::new(self.kind, self.size), rejects: Vec::new(), read: 0 },
        );
        (self.send)(Ok(batch)) && !stop
    }
}

/// Reads rows into the batcher until the input ends or the batcher says stop.
fn read_jsonl(input: Box<dyn Read + Send>, b: &mut Batcher<'_>) -> Result<()> {
    let label = b.label;
    let mut r = BufReader::with_capacity(1 << 20, input);
    let mut buf = Vec::with_capacity(4096);
    let mut line = 0u64;
    loop {
        buf.clear();
        let n = r.read_until(b'\n', &mut buf).map_err(|e| Error::io(label, e))?;
        if n == 0 {
            break;
        }
        line += 1;
        let mut row: &[u8] = &buf;
        while let [rest @ .., b'\n' | b'\r'] = row {
            row = rest;
        }
        if row.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let parsed = match std::str::from_utf8(row) {
            Err(e) => Err(FieldError::new("", format!("not valid UTF-8 (byte {})", e.valid_up_to()))),
            Ok(text) => serde_json::from_str::<Value>(text).map_err(|e| json_error(text, &e)),
        };
        if !b.push(line, parsed, row, false) {
            return Ok(());
        }
    }
    b.flush();
    Ok(())
}

/// Parses one row's JSON text as `ingest` does, naming the field a syntax error sits in; for
/// callers that validate rows one at a time (the HTTP service).
pub fn parse_json_row(text: &str) -> std::result::Result<Value, FieldError> {
    serde_json::from_str::<Value>(text).map_err(|e| json_error(text, &e))
}

/// Names the field a JSON syntax error sits in, when it can: `"overall": NaN` is reported as
/// field `overall`, not just a column number.
fn json_error(text: &str, e: &serde_json::Error) -> FieldError {
    let col = e.column().saturating_sub(1).min(text.len());
    let before = text.get(..col).unwrap_or("");
    let field = before
        .rfind("\":")
        .and_then(|end| before[..end].rfind('"').map(|start| before[start + 1..end].to_string()))
        .unwrap_or_default();
    let hint = if text.get(col..).is_some_and(|t| t.starts_with("NaN") || t.contains("Infinity")) {
        " (NaN and Infinity are not numbers in JSON)"
    } else {
        ""
    };
    FieldError::new(field, format!("invalid JSON at column {}: {e}{hint}", e.column()))
}

/// Reads rows into the batcher until the input ends or the batcher says stop.
fn read_csv(input: Box<dyn Read + Send>, b: &mut Batcher<'_>) -> Result<()> {
    let label = b.label;
    let mut rdr = csv::ReaderBuilder::new().flexible(false).from_reader(BufReader::with_capacity(1 << 20, input));
    let headers =
        rdr.headers().map_err(|e| Error::Input(format!("{label}:1: cannot read the CSV header: {e}")))?.clone();
    let mut rec = csv::ByteRecord::new();
    loop {
        let line = rdr.position().line() + 1;
        match rdr.read_byte_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {
                let line = rec.position().map_or(line, |p| p.line());
                let raw = rec.as_slice().to_vec();
                let parsed = csv_row(&headers, &rec);
                if !b.push(line, parsed, &raw, true) {
                    return Ok(());
                }
            }
            Err(e) => {
                let parsed = Err(FieldError::new("", format!("malformed CSV: {e}")));
                if !b.push(line, parsed, b"", true) {
                    return Ok(());
                }
                if !matches!(e.kind(), csv::ErrorKind::UnequalLengths { .. } | csv::ErrorKind::Utf8 { .. }) {
                    break;
                }
            }
        }
    }
    b.flush();
    Ok(())
}

/// A CSV row as a JSON object: `eval_scores.X` and `metadata.X` columns nest; empty cells are absent.
fn csv_row(headers: &csv::StringRecord, rec: &csv::ByteRecord) -> std::result::Result<Value, FieldError> {
    let mut obj = Map::new();
    for (h, cell) in headers.iter().zip(rec.iter()) {
        let cell = std::str::from_utf8(cell).map_err(|_| FieldError::new(h, "not valid UTF-8"))?;
        if cell.is_empty() {
            continue;
        }
        match h.split_once('.') {
            Some((parent @ ("eval_scores" | "metadata"), key)) => {
                let entry = obj.entry(parent).or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(m) = entry {
                    m.insert(key.to_string(), Value::String(cell.to_string()));
                }
            }
            _ => {
                obj.insert(h.to_string(), Value::String(cell.to_string()));
            }
        }
    }
    Ok(Value::Object(obj))
}

/// Where a file's rejects go by default.
pub fn default_rejects_path(source: &Path) -> PathBuf {
    PathBuf::from(format!("{}.rejects.jsonl", source.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_error_names_the_nan_field() {
        let text = r#"{"request_id": "a", "eval_scores": {"overall": NaN}}"#;
        let e = serde_json::from_str::<Value>(text).unwrap_err();
        let f = json_error(text, &e);
        assert_eq!(f.field, "overall");
        assert!(f.reason.contains("NaN"), "{}", f.reason);
    }
}
