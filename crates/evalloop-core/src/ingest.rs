//! Streaming, validated, transactional ingest of eval logs and feedback events (JSON Lines or CSV).
//!
//! A reader thread parses and validates rows into batches; the calling thread writes each batch
//! in its own transaction, so a killed ingest leaves only whole batches. Bad rows are named with
//! file:line and field; by default they go to a rejects file and the rest is stored; with
//! `strict`, the first bad row rolls back everything this file wrote. A row that repeats a
//! stored key (`request_id`, `event_id`, request and evaluator for scores) is a duplicate when
//! it is identical and a conflict, rejected like a bad row, when it is not. Limits and the
//! reading of ambiguous input are in docs/guide/ingest.md.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use chrono::Utc;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::lines::{CappedLines, Line, LineReader};
use crate::record::{EvalLog, FeedbackEvent, FieldError, to_micros};
use crate::store::{BatchOutcome, Store, StoredLog};
use crate::{Error, Result};

/// Which kind of record a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Logs,
    Feedback,
    /// Scores of another evaluator for stored requests: `request_id`, `evaluator`, `eval_scores`.
    Scores,
}

/// The largest `batch_size` accepted: a batch is held in memory and written in one transaction.
pub const MAX_BATCH_SIZE: usize = 1_000_000;

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
    /// The longest line read, in bytes; a longer one is rejected (JSON Lines) or stops the
    /// file (CSV). Default [`crate::lines::DEFAULT_MAX_LINE_BYTES`] (16 MiB).
    pub max_line_bytes: usize,
    /// The metadata key that names a request's prompt group (`[dataset] group_key`): with it,
    /// a preference between outputs of two different groups is rejected. Default none: not
    /// checked.
    pub group_key: Option<String>,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            strict: false,
            batch_size: 10_000,
            rejects: None,
            format: None,
            max_line_bytes: crate::lines::DEFAULT_MAX_LINE_BYTES,
            group_key: None,
        }
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
    /// Rows that repeat a stored key with different content (also counted in `rejected`).
    pub conflict: u64,
    /// Top-level keys no field has (`metdata`), ignored, each with the first line it is on.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ignored_fields: Vec<IgnoredField>,
    /// The rejects file, when any row was rejected.
    pub rejects_file: Option<String>,
}

/// An unknown top-level key ingest ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IgnoredField {
    pub field: String,
    /// The first line that has it.
    pub line: u64,
}

impl std::fmt::Display for IngestSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ingest {} {}: read {}, stored {}, duplicate {}, rejected {}, orphaned {}",
            self.kind,
            crate::text::escape(&self.file),
            self.read,
            self.stored,
            self.duplicate,
            self.rejected,
            self.orphaned
        )?;
        if self.conflict > 0 {
            write!(f, " ({} of them conflicting with stored rows)", self.conflict)?;
        }
        if !self.ignored_fields.is_empty() {
            let names: Vec<String> = self
                .ignored_fields
                .iter()
                .map(|i| format!("`{}` (line {})", crate::text::escape(&i.field), i.line))
                .collect();
            write!(f, "; unknown fields ignored: {}", names.join(", "))?;
        }
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
        crate::text::escape(&format!("{}:{}:{} {}", self.source, self.line, field, self.error)).into_owned()
    }
}

/// One row of `ingest scores`: another evaluator's scores for a stored request.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreRow {
    pub request_id: String,
    pub evaluator: String,
    /// `overall`, in [0, 1]; the row's other scores are checked but not stored.
    pub overall: f64,
}

impl ScoreRow {
    /// The fields a scores row may have.
    pub const FIELDS: [&'static str; 3] = ["request_id", "evaluator", "eval_scores"];

    /// Validates a parsed JSON object as a scores row, as a log's `evaluator` and
    /// `eval_scores` are validated.
    pub fn from_json(value: Value, from_text: bool) -> std::result::Result<ScoreRow, FieldError> {
        crate::record::reject_nul(&value, "")?;
        let obj = match value {
            Value::Object(m) => m,
            _ => return Err(FieldError::new("", "expected a JSON object")),
        };
        let string = |key: &str| match obj.get(key) {
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
            None | Some(Value::Null) | Some(Value::String(_)) => Err(FieldError::new(key, "missing")),
            Some(_) => Err(FieldError::new(key, "expected a string")),
        };
        let request_id = string("request_id")?;
        let evaluator = string("evaluator")?;
        let scores = crate::record::parse_scores(obj.get("eval_scores"), from_text)?;
        Ok(ScoreRow { request_id, evaluator, overall: scores["overall"] })
    }
}

enum Rows {
    Logs(Vec<EvalLog>),
    Feedback(Vec<FeedbackEvent>),
    Scores(Vec<ScoreRow>),
}

impl Rows {
    fn new(kind: Kind, cap: usize) -> Rows {
        // A batch grows as rows come; a huge --batch-size reserves nothing up front.
        let cap = cap.min(4096);
        match kind {
            Kind::Logs => Rows::Logs(Vec::with_capacity(cap)),
            Kind::Feedback => Rows::Feedback(Vec::with_capacity(cap)),
            Kind::Scores => Rows::Scores(Vec::with_capacity(cap)),
        }
    }
    fn len(&self) -> usize {
        match self {
            Rows::Logs(v) => v.len(),
            Rows::Feedback(v) => v.len(),
            Rows::Scores(v) => v.len(),
        }
    }
    /// Keeps the rows whose flag is true.
    fn retain(&mut self, keep: &[bool]) {
        fn filter<T>(v: &mut Vec<T>, keep: &[bool]) {
            let mut i = 0;
            v.retain(|_| {
                i += 1;
                keep[i - 1]
            });
        }
        match self {
            Rows::Logs(v) => filter(v, keep),
            Rows::Feedback(v) => filter(v, keep),
            Rows::Scores(v) => filter(v, keep),
        }
    }
}

/// One batch from the reader: validated rows with their lines, rejects in line order, rows
/// read, and unknown fields first seen in it.
struct Batch {
    rows: Rows,
    lines: Vec<u64>,
    rejects: Vec<Reject>,
    read: u64,
    ignored: Vec<IgnoredField>,
}

impl Batch {
    fn new(kind: Kind, size: usize) -> Batch {
        Batch { rows: Rows::new(kind, size), lines: Vec::new(), rejects: Vec::new(), read: 0, ignored: Vec::new() }
    }
}

/// Ingests one file (or `-` for stdin) into the store.
pub fn ingest(store: &mut dyn Store, kind: Kind, source: &str, opts: &IngestOptions) -> Result<IngestSummary> {
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
    ingest_reader(store, kind, &label, input, format, &rejects_path, opts)
}

/// Ingests rows read from `input` (named `label` in messages).
fn ingest_reader(
    store: &mut dyn Store,
    kind: Kind,
    label: &str,
    input: Box<dyn Read + Send>,
    format: Format,
    rejects_path: &Path,
    opts: &IngestOptions,
) -> Result<IngestSummary> {
    if opts.batch_size == 0 || opts.batch_size > MAX_BATCH_SIZE {
        return Err(Error::Input(format!(
            "--batch-size {}: expected 1 to {MAX_BATCH_SIZE} rows per transaction",
            opts.batch_size
        )));
    }
    let batch_size = opts.batch_size;
    let mut summary = IngestSummary { file: label.to_string(), kind: kind_name(kind).into(), ..Default::default() };

    let (tx, rx) = mpsc::sync_channel::<std::result::Result<Batch, Error>>(2);
    let reader_label = label.to_string();
    let strict = opts.strict;
    let max_line = opts.max_line_bytes;
    let reader = std::thread::spawn(move || {
        let send = |b| tx.send(b).is_ok();
        let mut batcher = Batcher::new(kind, &reader_label, batch_size, strict, &send);
        let result = match format {
            Format::Jsonl => read_jsonl(input, max_line, &mut batcher),
            Format::Csv => read_csv(input, max_line, &mut batcher),
        };
        if let Err(e) = result {
            let _ = tx.send(Err(e));
        }
    });

    let mut rejects_out: Option<BufWriter<File>> = None;
    let mut outcome = BatchOutcome::default();
    let mut duplicates = 0u64;
    if opts.strict {
        store.begin()?;
    }
    let mut failure: Option<Error> = None;
    for msg in rx.iter() {
        let mut batch = match msg {
            Ok(b) => b,
            Err(e) => {
                failure = Some(e);
                break;
            }
        };
        summary.read += batch.read;
        for i in batch.ignored.drain(..) {
            tracing::warn!(
                "{}:{}: unknown field `{}` ignored (expected one of {})",
                crate::text::escape(label),
                i.line,
                crate::text::escape(&i.field),
                fields_of(kind).join(", ")
            );
            summary.ignored_fields.push(i);
        }
        // Rows that repeat a stored key: identical ones are duplicates, others conflicts.
        let checked = check_repeats(store, label, &mut batch).and_then(|found| {
            if let Some(key) = &opts.group_key {
                check_preference_groups(store, label, key, &mut batch)?;
            }
            Ok(found)
        });
        match checked {
            Ok((conflicts, dup)) => {
                summary.conflict += conflicts as u64;
                duplicates += dup;
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
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
                    let f = File::create(rejects_path).map_err(|e| Error::io(rejects_path, e))?;
                    rejects_out.insert(BufWriter::new(f))
                }
            };
            serde_json::to_writer(&mut *w, r).map_err(|e| Error::io(rejects_path, e.into()))?;
            w.write_all(b"\n").map_err(|e| Error::io(rejects_path, e))?;
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
            Rows::Scores(v) => insert_score_rows(store, v),
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
    // A reader that panicked has read only part of the input: the ingest failed, whatever
    // the batches before said.
    if let Err(panic) = reader.join() {
        let what = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("no message");
        failure.get_or_insert(Error::Internal(format!(
            "{}: reading the input failed unexpectedly ({}); nothing after the last stored batch was stored",
            crate::text::escape(label),
            crate::text::escape(what)
        )));
    }
    if let Some(w) = &mut rejects_out {
        w.flush().map_err(|e| Error::io(rejects_path, e))?;
    }
    if let Some(e) = failure {
        store.rollback()?;
        return Err(e);
    }
    if opts.strict {
        store.commit()?;
    }
    summary.stored = outcome.stored;
    summary.duplicate = outcome.duplicate + duplicates;
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
        Kind::Scores => "scores",
    }
}

fn fields_of(k: Kind) -> &'static [&'static str] {
    match k {
        Kind::Logs => &EvalLog::FIELDS,
        Kind::Feedback => &FeedbackEvent::FIELDS,
        Kind::Scores => &ScoreRow::FIELDS,
    }
}

/// Stores scores rows whose repeats `check_repeats` has taken out: each evaluator's rows in
/// one call. Rows for a request with no log are orphaned and not stored.
fn insert_score_rows(store: &mut dyn Store, rows: &[ScoreRow]) -> crate::store::StoreResult<BatchOutcome> {
    let mut by_evaluator: std::collections::BTreeMap<&str, Vec<(String, f64)>> = Default::default();
    for r in rows {
        by_evaluator.entry(&r.evaluator).or_default().push((r.request_id.clone(), r.overall));
    }
    let mut out = BatchOutcome::default();
    for (evaluator, scores) in by_evaluator {
        out += store.insert_scores(evaluator, &scores)?;
    }
    Ok(out)
}

/// The stored form of a log, for comparing a repeated row with what is stored.
fn stored_form(l: &EvalLog) -> StoredLog {
    let mut others = l.eval_scores.clone();
    let overall = others.remove("overall");
    StoredLog {
        timestamp_us: to_micros(&l.timestamp),
        prompt: l.prompt.clone(),
        output: l.output.clone(),
        metadata: l.metadata.clone(),
        feedback_collected: l.feedback_collected,
        overall,
        other_scores: others,
    }
}

/// The first field in which a repeated log differs from the stored one.
fn log_difference(new: &StoredLog, old: &StoredLog) -> Option<&'static str> {
    if old.overall.is_none() {
        return Some("evaluator");
    }
    [
        ("timestamp", new.timestamp_us != old.timestamp_us),
        ("prompt", new.prompt != old.prompt),
        ("output", new.output != old.output),
        ("eval_scores.overall", new.overall != old.overall),
        ("eval_scores", new.other_scores != old.other_scores),
        ("feedback_collected", new.feedback_collected != old.feedback_collected),
        ("metadata", new.metadata != old.metadata),
    ]
    .into_iter()
    .find_map(|(f, differs)| differs.then_some(f))
}

/// The first field in which a repeated feedback event differs from the stored one. Timestamps
/// are not compared: an event without one takes the time of its ingest.
fn event_difference(new: &FeedbackEvent, old: &FeedbackEvent) -> Option<&'static str> {
    [
        ("request_id", new.request_id != old.request_id),
        ("feedback_type", new.feedback_type != old.feedback_type),
        ("value", new.value != old.value),
        ("user_id", new.user_id != old.user_id),
        ("dimension", new.dimension != old.dimension),
    ]
    .into_iter()
    .find_map(|(f, differs)| differs.then_some(f))
}

/// Compares the batch's rows with the stored rows (and the batch's earlier rows) of the same
/// key: a conflicting row leaves the batch as a reject; a repeated identical scores row leaves
/// it as a duplicate (logs and feedback duplicates are counted by the store). Returns
/// (conflicts, duplicates taken out).
fn check_repeats(store: &dyn Store, label: &str, batch: &mut Batch) -> Result<(usize, u64)> {
    let n = batch.rows.len();
    let mut keep = vec![true; n];
    let mut conflicts: Vec<(usize, String, String)> = Vec::new();
    let mut duplicates = 0u64;
    match &batch.rows {
        Rows::Logs(v) => {
            let keys: Vec<(&str, &str)> = v.iter().map(|l| (l.request_id.as_str(), l.evaluator.as_str())).collect();
            let stored = store.stored_logs(&keys)?;
            let mut first: std::collections::HashMap<&str, usize> = Default::default();
            for (i, l) in v.iter().enumerate() {
                let (old, whose) = match (&stored[i], first.get(l.request_id.as_str())) {
                    (Some(old), _) => (old.clone(), "the stored log"),
                    (None, Some(&j)) => (stored_form(&v[j]), "an earlier row"),
                    (None, None) => {
                        first.insert(&l.request_id, i);
                        continue;
                    }
                };
                let mut old = old;
                if whose == "an earlier row" && v[first[l.request_id.as_str()]].evaluator != l.evaluator {
                    old.overall = None;
                }
                if let Some(field) = log_difference(&stored_form(l), &old) {
                    let why = if field == "evaluator" {
                        format!(
                            "request {:?} is already logged with another evaluator's scores; add {:?}'s scores \
                             to it with `evalloop ingest scores`",
                            l.request_id, l.evaluator
                        )
                    } else {
                        format!(
                            "conflicts with {whose} for request {:?}: `{field}` differs (a repeated request_id must \
                             repeat the whole row)",
                            l.request_id
                        )
                    };
                    keep[i] = false;
                    conflicts.push((i, field.to_string(), why));
                }
            }
        }
        Rows::Feedback(v) => {
            let ids: Vec<&str> = v.iter().map(|e| e.event_id.as_str()).collect();
            let stored = store.stored_events(&ids)?;
            let mut first: std::collections::HashMap<&str, usize> = Default::default();
            for (i, e) in v.iter().enumerate() {
                let (old, whose) = match (&stored[i], first.get(e.event_id.as_str())) {
                    (Some(old), _) => (old, "the stored event"),
                    (None, Some(&j)) => (&v[j], "an earlier row"),
                    (None, None) => {
                        first.insert(&e.event_id, i);
                        continue;
                    }
                };
                if let Some(field) = event_difference(e, old) {
                    keep[i] = false;
                    conflicts.push((
                        i,
                        field.to_string(),
                        format!(
                            "conflicts with {whose} with event_id {:?}: `{field}` differs (an event_id names one event)",
                            e.event_id
                        ),
                    ));
                }
            }
        }
        Rows::Scores(v) => {
            let keys: Vec<(&str, &str)> = v.iter().map(|r| (r.request_id.as_str(), r.evaluator.as_str())).collect();
            let stored = store.stored_logs(&keys)?;
            let mut first: std::collections::HashMap<(&str, &str), usize> = Default::default();
            for (i, r) in v.iter().enumerate() {
                let key = (r.request_id.as_str(), r.evaluator.as_str());
                let old = match (first.get(&key), stored[i].as_ref().and_then(|s| s.overall)) {
                    (Some(&j), _) => Some(v[j].overall),
                    (None, old) => {
                        first.insert(key, i);
                        old
                    }
                };
                match old {
                    None => {}
                    Some(x) if x == r.overall => {
                        keep[i] = false;
                        duplicates += 1;
                    }
                    Some(x) => {
                        keep[i] = false;
                        conflicts.push((
                            i,
                            "eval_scores.overall".into(),
                            format!(
                                "conflicts with the stored score {x} of evaluator {:?} for request {:?}",
                                r.evaluator, r.request_id
                            ),
                        ));
                    }
                }
            }
        }
    }
    let count = conflicts.len();
    reject_rows(label, batch, conflicts, keep);
    Ok((count, duplicates))
}

/// Moves rows `(index, field, error)` of `batch` to its rejects, and drops them and the other
/// rows whose `keep` is false.
fn reject_rows(label: &str, batch: &mut Batch, rejected: Vec<(usize, String, String)>, mut keep: Vec<bool>) {
    for (i, field, error) in rejected {
        keep[i] = false;
        let raw = match &batch.rows {
            Rows::Logs(v) => v[i].to_json().to_string(),
            Rows::Feedback(v) => v[i].to_json().to_string(),
            Rows::Scores(v) => serde_json::json!({
                "request_id": v[i].request_id, "evaluator": v[i].evaluator, "eval_scores": {"overall": v[i].overall}
            })
            .to_string(),
        };
        batch.rejects.push(Reject { source: label.to_string(), line: batch.lines[i], field, error, raw });
    }
    if keep.iter().any(|k| !k) {
        batch.rows.retain(&keep);
        let mut i = 0;
        batch.lines.retain(|_| {
            i += 1;
            keep[i - 1]
        });
        batch.rejects.sort_by_key(|r| r.line);
    }
}

/// Rejects preferences whose two outputs are both logged in different prompt groups (the
/// metadata value of `group_key`; a log without the key is in no named group and passes).
fn check_preference_groups(store: &dyn Store, label: &str, group_key: &str, batch: &mut Batch) -> Result<()> {
    let Rows::Feedback(v) = &batch.rows else { return Ok(()) };
    let prefs: Vec<usize> = (0..v.len()).filter(|&i| v[i].other_request_id.is_some()).collect();
    if prefs.is_empty() {
        return Ok(());
    }
    let keys: Vec<(&str, &str)> = prefs
        .iter()
        .flat_map(|&i| [v[i].request_id.as_str(), v[i].other_request_id.as_deref().unwrap_or_default()])
        .map(|id| (id, ""))
        .collect();
    let stored = store.stored_logs(&keys)?;
    let mut rejected = Vec::new();
    for (k, &i) in prefs.iter().enumerate() {
        let group =
            |log: &Option<crate::store::StoredLog>| log.as_ref().and_then(|l| l.metadata.get(group_key).cloned());
        if let (Some(ga), Some(gb)) = (group(&stored[2 * k]), group(&stored[2 * k + 1]))
            && ga != gb
        {
            rejected.push((
                i,
                "other_request_id".to_string(),
                format!(
                    "request {:?} is in group {ga} and request {:?} in group {gb} (metadata {group_key:?}); a \
                     preference compares two outputs of one prompt group",
                    v[i].request_id,
                    v[i].other_request_id.as_deref().unwrap_or_default(),
                ),
            ));
        }
    }
    let keep = vec![true; batch.rows.len()];
    reject_rows(label, batch, rejected, keep);
    Ok(())
}

/// Accumulates validated rows and rejects into batches and hands them on.
struct Batcher<'a> {
    kind: Kind,
    label: &'a str,
    size: usize,
    strict: bool,
    now: chrono::DateTime<Utc>,
    cur: Batch,
    /// Unknown top-level keys seen so far (each reported once).
    unknown: std::collections::BTreeSet<String>,
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
            cur: Batch::new(kind, size),
            unknown: Default::default(),
            send,
        }
    }

    /// Takes one parsed row; returns false when the consumer is gone or strict mode must stop.
    fn push(&mut self, line: u64, parsed: std::result::Result<Value, FieldError>, raw: &[u8], from_text: bool) -> bool {
        self.cur.read += 1;
        if let Ok(Value::Object(obj)) = &parsed {
            let known = fields_of(self.kind);
            for k in obj.keys() {
                if !known.contains(&k.as_str()) && !self.unknown.contains(k) {
                    self.unknown.insert(k.clone());
                    self.cur.ignored.push(IgnoredField { field: k.clone(), line });
                }
            }
        }
        let checked = parsed.and_then(|v| match &mut self.cur.rows {
            Rows::Logs(rows) => EvalLog::from_json(v, from_text).map(|l| rows.push(l)),
            Rows::Feedback(rows) => FeedbackEvent::from_json(v, from_text, self.now).map(|e| rows.push(e)),
            Rows::Scores(rows) => ScoreRow::from_json(v, from_text).map(|r| rows.push(r)),
        });
        match checked {
            Ok(()) => self.cur.lines.push(line),
            Err(e) => {
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
        }
        if self.cur.rows.len() >= self.size { self.flush() } else { true }
    }

    fn flush(&mut self) -> bool {
        let stop = self.strict && !self.cur.rejects.is_empty();
        let batch = std::mem::replace(&mut self.cur, Batch::new(self.kind, self.size));
        (self.send)(Ok(batch)) && !stop
    }
}

/// Reads rows into the batcher until the input ends or the batcher says stop.
fn read_jsonl(input: Box<dyn Read + Send>, max_line: usize, b: &mut Batcher<'_>) -> Result<()> {
    let label = b.label;
    let mut lines = LineReader::new(BufReader::with_capacity(1 << 20, input), max_line);
    while let Some((line, text)) = lines.next_line().map_err(|e| Error::io(label, e))? {
        let (parsed, row) = match text {
            Line::TooLong { bytes, head } => (
                Err(FieldError::new(
                    "",
                    format!("the line is {bytes} bytes, longer than the limit of {max_line} (--max-line-bytes)"),
                )),
                head,
            ),
            Line::Text(row) => {
                if row.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let parsed = match std::str::from_utf8(row) {
                    Err(e) => Err(FieldError::new("", format!("not valid UTF-8 (byte {})", e.valid_up_to()))),
                    Ok(text) => crate::json_row::parse_row(text),
                };
                (parsed, row)
            }
        };
        if !b.push(line, parsed, row, false) {
            return Ok(());
        }
    }
    b.flush();
    Ok(())
}

/// Parses one row's JSON text as `ingest` does (repeated keys refused, syntax errors naming
/// the JSON path); for callers that validate rows one at a time (the HTTP service).
pub fn parse_json_row(text: &str) -> std::result::Result<Value, FieldError> {
    crate::json_row::parse_row(text)
}

/// Reads rows into the batcher until the input ends or the batcher says stop.
fn read_csv(input: Box<dyn Read + Send>, max_line: usize, b: &mut Batcher<'_>) -> Result<()> {
    let label = b.label;
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(false)
        .from_reader(BufReader::with_capacity(1 << 20, CappedLines::new(input, max_line)));
    let headers =
        rdr.headers().map_err(|e| Error::Input(format!("{label}:1: cannot read the CSV header: {e}")))?.clone();
    check_csv_header(&headers).map_err(|e| Error::Input(format!("{label}:1: {e}")))?;
    let mut rec = csv::ByteRecord::new();
    loop {
        let line = rdr.position().line();
        match rdr.read_byte_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {
                let line = rec.position().map_or(line, |p| p.line());
                let raw = csv_raw(&rec);
                let parsed = csv_row(&headers, &rec);
                if !b.push(line, parsed, &raw, true) {
                    return Ok(());
                }
            }
            Err(e) => {
                // The error's own position names the row's first line; the raw row, when the
                // reader got that far, is what was read of it.
                let line = e.position().map_or(line, |p| p.line());
                let raw = csv_raw(&rec);
                let parsed = Err(FieldError::new("", format!("malformed CSV: {e}")));
                if !b.push(line, parsed, &raw, true) {
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

/// The cells of a CSV record joined by commas (quotes are not restored), for a reject's `raw`.
fn csv_raw(rec: &csv::ByteRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(rec.as_slice().len() + rec.len());
    for (i, cell) in rec.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(cell);
    }
    out
}

/// Refuses a header that is ambiguous: a column named twice, or a JSON column (`eval_scores`,
/// `metadata`) beside dotted columns that fill the same object (`eval_scores.overall`).
fn check_csv_header(headers: &csv::StringRecord) -> std::result::Result<(), String> {
    let mut seen = std::collections::BTreeSet::new();
    for h in headers {
        if !seen.insert(h) {
            return Err(format!("the column `{}` appears more than once in the header", crate::text::escape(h)));
        }
    }
    for parent in ["eval_scores", "metadata"] {
        let dotted = headers.iter().find(|h| h.split_once('.').is_some_and(|(p, _)| p == parent));
        if let (true, Some(d)) = (seen.contains(parent), dotted) {
            return Err(format!(
                "the header has both `{parent}` (a JSON object) and `{}`; use one or the other",
                crate::text::escape(d)
            ));
        }
    }
    Ok(())
}

/// A CSV row as a JSON object: `eval_scores.X` and `metadata.X` columns nest; empty cells are
/// absent, except `output`, where an empty cell is an empty answer.
fn csv_row(headers: &csv::StringRecord, rec: &csv::ByteRecord) -> std::result::Result<Value, FieldError> {
    let mut obj = Map::new();
    for (h, cell) in headers.iter().zip(rec.iter()) {
        let cell = std::str::from_utf8(cell).map_err(|_| FieldError::new(h, "not valid UTF-8"))?;
        if cell.is_empty() && h != "output" {
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
    use crate::store::sqlite::SqliteStore;

    /// A reader that gives some rows and then panics, as a parsing bug would.
    struct PanicsAfter(Vec<u8>);

    impl Read for PanicsAfter {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                panic!("a bug in the reader");
            }
            let n = out.len().min(self.0.len());
            out[..n].copy_from_slice(&self.0[..n]);
            self.0.drain(..n);
            Ok(n)
        }
    }

    /// Regression: the reader thread's panic was ignored (`reader.join()`), so the ingest
    /// reported what it had stored and succeeded.
    #[test]
    fn failed_ingest_exits_nonzero() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        let row = r#"{"request_id": "a", "timestamp": "2026-01-01T00:00:00Z", "prompt": "p", "output": "o", "eval_scores": {"overall": 0.5}}"#;
        let input = Box::new(PanicsAfter(format!("{row}\n").into_bytes()));
        for strict in [false, true] {
            let opts = IngestOptions { strict, ..Default::default() };
            let rejects = dir.path().join("r.jsonl");
            let e =
                ingest_reader(&mut store, Kind::Logs, "in.jsonl", input.clone_box(), Format::Jsonl, &rejects, &opts)
                    .unwrap_err();
            assert_eq!(e.exit_code(), 3, "{e}");
            assert!(e.to_string().contains("a bug in the reader"), "{e}");
        }
    }

    impl PanicsAfter {
        fn clone_box(&self) -> Box<dyn Read + Send> {
            Box::new(PanicsAfter(self.0.clone()))
        }
    }

    #[test]
    fn batch_size_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        for size in [0, MAX_BATCH_SIZE + 1, usize::MAX] {
            let opts = IngestOptions { batch_size: size, ..Default::default() };
            let e = ingest_reader(
                &mut store,
                Kind::Logs,
                "in.jsonl",
                Box::new(io::empty()),
                Format::Jsonl,
                &dir.path().join("r.jsonl"),
                &opts,
            )
            .unwrap_err();
            assert_eq!(e.exit_code(), 2, "{e}");
        }
    }
}
