//! Group commit: one thread owns the store's write connection and commits the rows of every
//! request queued within a few milliseconds in one transaction; each request is answered only
//! after its transaction committed, so a 2xx means the rows are durable.
//!
//! The common case (no row already stored) is one insert call per kind and one commit for the
//! whole group. When a group holds a row whose key is already stored, or the database refuses
//! it, the group is rolled back and redone one request at a time, row by row, so each row gets
//! its own status (`stored`, `duplicate`, `conflict`) and one bad request cannot fail the others.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use evalloop_core::record::{EvalLog, FeedbackEvent};
use evalloop_core::store::{BatchOutcome, RequestText, Store, StoreResult};
use serde::Serialize;
use tokio::sync::oneshot;

use crate::metrics::Metrics;

/// Most rows one transaction takes; the rest wait for the next.
const MAX_GROUP_ROWS: usize = 20_000;

/// The validated rows of one request.
#[derive(Debug)]
pub enum Rows {
    Logs(Vec<EvalLog>),
    Feedback(Vec<FeedbackEvent>),
}

impl Rows {
    /// Number of rows.
    pub fn len(&self) -> usize {
        match self {
            Rows::Logs(v) => v.len(),
            Rows::Feedback(v) => v.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What happened to one valid row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RowStatus {
    /// Newly stored.
    Stored,
    /// Its key was stored already, with the same content: nothing changed.
    Duplicate,
    /// Its key was stored already, with other content: nothing changed.
    Conflict,
}

/// The answer to one request: a status per row, in order, or why its transaction failed.
pub type Reply = Result<Vec<RowStatus>, String>;

struct Job {
    rows: Rows,
    reply: oneshot::Sender<Reply>,
}

/// The handle requests submit their rows through.
pub struct Writer {
    tx: mpsc::Sender<Option<Job>>,
    queued: Arc<AtomicUsize>,
    capacity: usize,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// The queue holds `capacity` rows already.
#[derive(Debug)]
pub struct Busy;

impl Writer {
    /// Opens the store `db` on a thread of its own and starts committing.
    pub fn start(db: &str, wait: Duration, capacity: usize, metrics: Arc<Metrics>) -> crate::Result<Writer> {
        let (tx, rx) = mpsc::channel::<Option<Job>>();
        let queued = Arc::new(AtomicUsize::new(0));
        let q = queued.clone();
        let thread = crate::reader::spawn_with_store("writer", db, move |store| run(store, &rx, wait, &q, &metrics))?;
        Ok(Writer { tx, queued, capacity, thread: std::sync::Mutex::new(Some(thread)) })
    }

    /// Queues a request's rows; the receiver answers once they are committed (or failed).
    pub fn submit(&self, rows: Rows) -> Result<oneshot::Receiver<Reply>, Busy> {
        let n = rows.len();
        let before = self.queued.fetch_add(n, Ordering::SeqCst);
        if before > 0 && before + n > self.capacity {
            self.queued.fetch_sub(n, Ordering::SeqCst);
            return Err(Busy);
        }
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Some(Job { rows, reply })).is_err() {
            self.queued.fetch_sub(n, Ordering::SeqCst);
            return Err(Busy);
        }
        Ok(rx)
    }

    /// Rows waiting for a transaction.
    pub fn queued_rows(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    /// Commits everything queued so far, then stops the thread and waits for it.
    pub fn shutdown(&self) {
        let _ = self.tx.send(None);
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

fn run(store: &mut dyn Store, rx: &mpsc::Receiver<Option<Job>>, wait: Duration, queued: &AtomicUsize, m: &Metrics) {
    let mut stopping = false;
    while !stopping {
        let first = match rx.recv() {
            Ok(Some(j)) => j,
            Ok(None) | Err(_) => break,
        };
        let mut rows = first.rows.len();
        let mut group = vec![first];
        let deadline = Instant::now() + wait;
        while rows < MAX_GROUP_ROWS {
            let next = match rx.try_recv() {
                Ok(j) => Ok(j),
                Err(mpsc::TryRecvError::Empty) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    rx.recv_timeout(left).map_err(|_| ())
                }
                Err(mpsc::TryRecvError::Disconnected) => Err(()),
            };
            match next {
                Ok(Some(j)) => {
                    rows += j.rows.len();
                    group.push(j);
                }
                Ok(None) => {
                    stopping = true;
                    break;
                }
                Err(()) => break,
            }
        }
        m.observe_group(rows);
        commit_group(store, group);
        queued.fetch_sub(rows, Ordering::SeqCst);
    }
    // Whatever raced the stop signal is still answered.
    while let Ok(Some(j)) = rx.try_recv() {
        let n = j.rows.len();
        commit_group(store, vec![j]);
        queued.fetch_sub(n, Ordering::SeqCst);
    }
}

fn commit_group(store: &mut dyn Store, group: Vec<Job>) {
    // The rows move into one vector per kind (no copy of their strings); each request keeps
    // its range.
    let mut logs: Vec<EvalLog> = Vec::new();
    let mut feedback: Vec<FeedbackEvent> = Vec::new();
    let mut parts = Vec::with_capacity(group.len());
    for j in group {
        match j.rows {
            Rows::Logs(v) => {
                let start = logs.len();
                logs.extend(v);
                parts.push((true, start..logs.len(), j.reply));
            }
            Rows::Feedback(v) => {
                let start = feedback.len();
                feedback.extend(v);
                parts.push((false, start..feedback.len(), j.reply));
            }
        }
    }
    match fast_path(store, &logs, &feedback) {
        Ok(true) => {
            for (_, range, reply) in parts {
                let _ = reply.send(Ok(vec![RowStatus::Stored; range.len()]));
            }
            return;
        }
        Ok(false) => {}
        Err(e) => tracing::debug!("group commit fell back to one request at a time: {e}"),
    }
    // Logs first, so feedback in the same group finds its log.
    parts.sort_by_key(|(is_log, _, _)| !is_log);
    for (is_log, range, reply) in parts {
        let rows = if is_log { RowsRef::Logs(&logs[range]) } else { RowsRef::Feedback(&feedback[range]) };
        let answer = one_job(store, rows);
        if let Err(e) = &answer {
            tracing::error!("a request's rows were not stored: {e}");
        }
        let _ = reply.send(answer.map_err(|e| e.to_string()));
    }
}

/// The rows of one request, borrowed.
#[derive(Clone, Copy)]
enum RowsRef<'a> {
    Logs(&'a [EvalLog]),
    Feedback(&'a [FeedbackEvent]),
}

impl RowsRef<'_> {
    fn len(self) -> usize {
        match self {
            RowsRef::Logs(v) => v.len(),
            RowsRef::Feedback(v) => v.len(),
        }
    }
}

/// The whole group in one transaction (logs first, so feedback finds its log); false (rolled
/// back) when some row's key was present.
fn fast_path(store: &mut dyn Store, logs: &[EvalLog], feedback: &[FeedbackEvent]) -> StoreResult<bool> {
    store.begin()?;
    let written = (|| {
        let mut o = BatchOutcome::default();
        if !logs.is_empty() {
            o += store.insert_logs(logs)?;
        }
        if !feedback.is_empty() {
            o += store.insert_feedback(feedback)?;
        }
        Ok(o)
    })();
    match written {
        Ok(o) if o.duplicate == 0 => {
            store.commit()?;
            Ok(true)
        }
        Ok(_) => {
            store.rollback()?;
            Ok(false)
        }
        Err(e) => {
            store.rollback()?;
            Err(e)
        }
    }
}

/// One request in its own transaction. The rows whose key is stored already are found first
/// (one read per distinct request) and the others inserted in one call; when that insert still
/// meets a stored key (a key held by another request, the same key twice in one body), the
/// request is redone row by row.
fn one_job(store: &mut dyn Store, rows: RowsRef<'_>) -> StoreResult<Vec<RowStatus>> {
    for row_by_row in [false, true] {
        store.begin()?;
        let out = (|| -> StoreResult<Option<Vec<RowStatus>>> {
            let mut out = vec![RowStatus::Stored; rows.len()];
            match rows {
                RowsRef::Logs(v) => {
                    if row_by_row {
                        for (l, s) in v.iter().zip(out.iter_mut()) {
                            if store.insert_logs(std::slice::from_ref(l))?.stored == 0 {
                                *s = RowStatus::Duplicate;
                            }
                        }
                        classify_logs(store, v, &mut out, false)?;
                    } else {
                        classify_logs(store, v, &mut out, true)?;
                        let new: Vec<EvalLog> = v
                            .iter()
                            .zip(&out)
                            .filter(|(_, s)| **s == RowStatus::Stored)
                            .map(|(l, _)| l.clone())
                            .collect();
                        if store.insert_logs(&new)?.duplicate > 0 {
                            return Ok(None);
                        }
                    }
                }
                RowsRef::Feedback(v) => {
                    if row_by_row {
                        for (e, s) in v.iter().zip(out.iter_mut()) {
                            if store.insert_feedback(std::slice::from_ref(e))?.stored == 0 {
                                *s = RowStatus::Duplicate;
                            }
                        }
                        classify_feedback(store, v, &mut out, false)?;
                    } else {
                        classify_feedback(store, v, &mut out, true)?;
                        let new: Vec<FeedbackEvent> = v
                            .iter()
                            .zip(&out)
                            .filter(|(_, s)| **s == RowStatus::Stored)
                            .map(|(e, _)| e.clone())
                            .collect();
                        if store.insert_feedback(&new)?.duplicate > 0 {
                            return Ok(None);
                        }
                    }
                }
            }
            Ok(Some(out))
        })();
        match out {
            Ok(Some(statuses)) => {
                store.commit()?;
                return Ok(statuses);
            }
            Ok(None) => store.rollback()?,
            Err(e) => {
                let _ = store.rollback();
                return Err(e);
            }
        }
    }
    Err(evalloop_core::store::StoreError::Invalid("rows kept meeting stored keys; not stored".into()))
}

/// Logs whose request id is stored: the same prompt and output is a duplicate, else a conflict.
/// With `probe`, every row is looked up (a row not found stays `Stored`); without, only the
/// rows an insert found present (marked `Duplicate`).
fn classify_logs(store: &dyn Store, logs: &[EvalLog], out: &mut [RowStatus], probe: bool) -> StoreResult<()> {
    let mut ids: Vec<String> = Vec::new();
    for (l, s) in logs.iter().zip(out.iter()) {
        // A store may refuse to read the texts of a request it does not hold.
        if (probe && store.log_exists(&l.request_id)?) || (!probe && *s != RowStatus::Stored) {
            ids.push(l.request_id.clone());
        }
    }
    if ids.is_empty() {
        return Ok(());
    }
    let stored: HashMap<String, RequestText> = store.request_texts(&ids)?.into_iter().collect();
    for (l, s) in logs.iter().zip(out.iter_mut()) {
        if !probe && *s == RowStatus::Stored {
            continue;
        }
        *s = match stored.get(&l.request_id) {
            None if probe => RowStatus::Stored,
            Some(t) if t.prompt == l.prompt && t.output == l.output => RowStatus::Duplicate,
            _ => RowStatus::Conflict,
        };
    }
    Ok(())
}

/// Feedback events whose id was stored: the same request, type, value and user is a duplicate,
/// else (another request holds the id, or other content) a conflict.
/// `probe` as for [`classify_logs`].
fn classify_feedback(
    store: &dyn Store,
    events: &[FeedbackEvent],
    out: &mut [RowStatus],
    probe: bool,
) -> StoreResult<()> {
    // One lookup by event id for every row to classify, whichever table holds it (dimension
    // ratings and preferences are kept apart from the other feedback).
    let asked: Vec<&str> = events
        .iter()
        .zip(out.iter())
        .filter(|(_, s)| probe || **s != RowStatus::Stored)
        .map(|(e, _)| e.event_id.as_str())
        .collect();
    let found: HashMap<String, FeedbackEvent> =
        store.stored_events(&asked)?.into_iter().flatten().map(|e| (e.event_id.clone(), e)).collect();
    for (e, s) in events.iter().zip(out.iter_mut()) {
        if !probe && *s == RowStatus::Stored {
            continue;
        }
        let stored = found.get(&e.event_id);
        *s = match stored {
            None if probe => RowStatus::Stored,
            Some(s)
                if s.request_id == e.request_id
                    && s.feedback_type == e.feedback_type
                    && s.value == e.value
                    && s.user_id == e.user_id
                    && s.dimension == e.dimension
                    && s.other_request_id == e.other_request_id =>
            {
                RowStatus::Duplicate
            }
            _ => RowStatus::Conflict,
        };
    }
    Ok(())
}
