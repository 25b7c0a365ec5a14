//! The log store: eval logs, evaluator scores, feedback events and runs, behind one trait.
//!
//! [`Store`] is the seam between the stages and the database. SQLite ([`sqlite::SqliteStore`],
//! one file, the default) implements it; a PostgreSQL implementation sits behind the same trait.
//! Heavy joins and aggregations run inside the database: the analysis stages ask for whole result
//! sets ([`Store::scored_requests`], [`Store::cohort_stats`]), never one query per request.
//! Both backends turn rows into records with the same mappers (`rows`).

pub mod leases;
pub mod postgres;
mod rows;
pub mod sqlite;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::feedback::HumanPolicy;
use crate::queue::{QueueItem, QueueLabel, QueueSpec};
use crate::record::{EvalLog, FeedbackEvent};

/// Errors from a store backend.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite store {path}: {source}")]
    Sqlite { path: String, source: rusqlite::Error },
    #[error("store {path}: schema version {found} is newer than this program understands ({supported})")]
    SchemaTooNew { path: String, found: i64, supported: i64 },
    /// A query was asked something it cannot answer (bad filter, unknown evaluator...).
    #[error("{0}")]
    Invalid(String),
    #[error("postgres store {url}: {message}")]
    Postgres { url: String, message: String },
}

impl StoreError {
    /// Whether the error is the caller's (bad filter or argument) rather than the database's.
    pub fn is_input(&self) -> bool {
        matches!(self, StoreError::Invalid(_))
    }
}

/// Result of one store call.
pub type StoreResult<T> = std::result::Result<T, StoreError>;

/// What happened to the rows of one insert call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BatchOutcome {
    /// Rows newly stored.
    pub stored: u64,
    /// Rows whose key (`request_id`, `event_id`) was already present; nothing changed for them.
    pub duplicate: u64,
    /// Feedback rows stored whose `request_id` has no log yet.
    pub orphaned: u64,
}

impl std::ops::AddAssign for BatchOutcome {
    fn add_assign(&mut self, o: BatchOutcome) {
        self.stored += o.stored;
        self.duplicate += o.duplicate;
        self.orphaned += o.orphaned;
    }
}

/// Which requests a query covers. Empty fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Requests at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Requests strictly before this time.
    pub until: Option<DateTime<Utc>>,
    /// Only this evaluator's scores.
    pub evaluator: Option<String>,
    /// Only this `metadata.user_cohort`.
    pub cohort: Option<String>,
    /// Metadata equalities (`prompt_version = v3`), compared as text.
    pub metadata: Vec<(String, String)>,
}

/// Options for [`Store::scored_requests`].
#[derive(Debug, Clone, Default)]
pub struct ScoredQuery {
    pub filter: Filter,
    pub policy: HumanPolicy,
    /// A metadata key whose value is returned as [`ScoredRequest::group`].
    pub group_key: Option<String>,
    /// Also return prompt, output and metadata.
    pub with_text: bool,
    /// Return at most this many rows (in request order); `None` for all.
    pub limit: Option<u64>,
}

/// A request with both an evaluator score and a human score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoredRequest {
    pub request_id: String,
    /// Microseconds since the epoch.
    pub timestamp_us: i64,
    pub evaluator: String,
    /// The evaluator's `overall`, in [0, 1].
    pub eval_score: f64,
    /// The aggregated human score (1-5) under the query's policy.
    pub human_score: f64,
    /// Feedback events that carried a score.
    pub n_scored_events: u64,
    pub cohort: Option<String>,
    pub use_case: Option<String>,
    /// The value of the query's group key, when asked and present.
    pub group: Option<String>,
    /// Present when the query asked `with_text`. Boxed: the analyses that read no text hold
    /// hundreds of thousands of rows, and a pointer keeps each row 64 bytes smaller.
    pub text: Option<Box<RequestText>>,
}

/// The rows of [`Store::scored_requests`] as columns, in the same order (by request id, then
/// evaluator), with what `correlate`, `calibration` and `disagreements` read: no time, count of
/// events or text. Every request id is in one buffer, and the evaluator, cohort, use case and
/// group are codes into one dictionary of their distinct values: a row takes about 50 bytes and
/// no allocation of its own, where a [`ScoredRequest`] takes 160 bytes and four strings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScoredColumns {
    /// Every row's request id, one after the other.
    ids: String,
    /// Where row `i`'s request id ends in `ids`.
    id_ends: Vec<usize>,
    evaluator: Vec<u32>,
    /// The evaluator's `overall`, in [0, 1].
    pub eval_score: Vec<f64>,
    /// The aggregated human score (1-5) under the query's policy.
    pub human_score: Vec<f64>,
    cohort: Vec<u32>,
    use_case: Vec<u32>,
    group: Vec<u32>,
    /// Code -> value; code 0 is `None`.
    names: Vec<Option<String>>,
    /// Value -> code, for the values past the first few (which are found by a scan).
    codes: std::collections::HashMap<String, u32>,
}

/// One row for [`ScoredColumns::push`], borrowing its strings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoredRow<'a> {
    pub request_id: &'a str,
    pub evaluator: &'a str,
    pub eval_score: f64,
    pub human_score: f64,
    pub cohort: Option<&'a str>,
    pub use_case: Option<&'a str>,
    pub group: Option<&'a str>,
}

/// Dictionaries up to this size are searched by a scan, larger ones through the hash map.
const SCAN_NAMES: usize = 16;

impl ScoredColumns {
    /// Empty columns with room for `rows` rows (request ids of about 16 bytes).
    pub fn with_capacity(rows: usize) -> ScoredColumns {
        let mut c = ScoredColumns { names: vec![None], ..Default::default() };
        c.ids.reserve(rows * 16);
        c.id_ends.reserve(rows);
        c.evaluator.reserve(rows);
        c.eval_score.reserve(rows);
        c.human_score.reserve(rows);
        c.cohort.reserve(rows);
        c.use_case.reserve(rows);
        c.group.reserve(rows);
        c
    }

    /// The columns of `rows`, in their order (their text, if any, is dropped).
    pub fn from_rows(rows: &[ScoredRequest]) -> ScoredColumns {
        let mut c = ScoredColumns::with_capacity(rows.len());
        for r in rows {
            c.push(ScoredRow {
                request_id: &r.request_id,
                evaluator: &r.evaluator,
                eval_score: r.eval_score,
                human_score: r.human_score,
                cohort: r.cohort.as_deref(),
                use_case: r.use_case.as_deref(),
                group: r.group.as_deref(),
            });
        }
        c
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.id_ends.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.id_ends.is_empty()
    }

    fn code(&mut self, value: Option<&str>) -> u32 {
        let Some(v) = value else { return 0 };
        if self.names.len() <= SCAN_NAMES {
            if let Some(i) = self.names.iter().skip(1).position(|n| n.as_deref() == Some(v)) {
                return i as u32 + 1;
            }
        } else if let Some(&c) = self.codes.get(v) {
            return c;
        }
        let c = self.names.len() as u32;
        self.names.push(Some(v.to_string()));
        if self.names.len() > SCAN_NAMES {
            // Past the scan's size: index every name (once, then each new one).
            for (i, n) in self.names.iter().enumerate().skip(1 + self.codes.len()) {
                self.codes.insert(n.clone().unwrap_or_default(), i as u32);
            }
        }
        c
    }

    /// Appends a row.
    pub fn push(&mut self, r: ScoredRow<'_>) {
        if self.names.is_empty() {
            self.names.push(None);
        }
        self.ids.push_str(r.request_id);
        self.id_ends.push(self.ids.len());
        let e = self.code(Some(r.evaluator));
        self.evaluator.push(e);
        self.eval_score.push(r.eval_score);
        self.human_score.push(r.human_score);
        let c = self.code(r.cohort);
        self.cohort.push(c);
        let u = self.code(r.use_case);
        self.use_case.push(u);
        let g = self.code(r.group);
        self.group.push(g);
    }

    /// Row `i`, borrowing its strings.
    pub fn row(&self, i: usize) -> ScoredRow<'_> {
        ScoredRow {
            request_id: self.request_id(i),
            evaluator: self.evaluator(i),
            eval_score: self.eval_score[i],
            human_score: self.human_score[i],
            cohort: self.cohort(i),
            use_case: self.use_case(i),
            group: self.group(i),
        }
    }

    /// Row `i`'s request id.
    pub fn request_id(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.id_ends[i - 1] };
        &self.ids[start..self.id_ends[i]]
    }

    fn name(&self, code: u32) -> Option<&str> {
        self.names[code as usize].as_deref()
    }

    /// Row `i`'s evaluator.
    pub fn evaluator(&self, i: usize) -> &str {
        self.name(self.evaluator[i]).unwrap_or_default()
    }

    /// Row `i`'s `metadata.user_cohort`.
    pub fn cohort(&self, i: usize) -> Option<&str> {
        self.name(self.cohort[i])
    }

    /// Row `i`'s `metadata.use_case`.
    pub fn use_case(&self, i: usize) -> Option<&str> {
        self.name(self.use_case[i])
    }

    /// Row `i`'s value of the query's group key.
    pub fn group(&self, i: usize) -> Option<&str> {
        self.name(self.group[i])
    }

    /// Appends `other`'s rows after this one's.
    pub fn append(&mut self, other: &ScoredColumns) {
        for i in 0..other.len() {
            self.push(other.row(i));
        }
    }

    /// Orders the rows by request id, then evaluator, as [`Store::scored_requests`] returns
    /// them; rows already in that order (the usual case: ids given in ingest order) are not
    /// moved.
    pub fn sort_by_request(&mut self) {
        fn key(c: &ScoredColumns, i: usize) -> (&str, &str) {
            (c.request_id(i), c.evaluator(i))
        }
        if (1..self.len()).all(|i| key(self, i - 1) <= key(self, i)) {
            return;
        }
        let mut order: Vec<usize> = (0..self.len()).collect();
        order.sort_unstable_by(|&a, &b| key(self, a).cmp(&key(self, b)));
        let mut sorted = ScoredColumns::with_capacity(self.len());
        for i in order {
            sorted.push(self.row(i));
        }
        *self = sorted;
    }
}

/// A request with its evaluator score, labelled or not: what prediction-powered estimates read
/// (the evaluator on every request, the human score on the few that have one).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvaluatedRequest {
    pub request_id: String,
    /// Microseconds since the epoch.
    pub timestamp_us: i64,
    /// The evaluator's `overall`, in [0, 1].
    pub eval_score: f64,
    /// `metadata.user_cohort`.
    pub cohort: Option<String>,
    /// `metadata.use_case`.
    pub use_case: Option<String>,
    /// `metadata.prompt_version`.
    pub prompt_version: Option<String>,
}

/// The text of a request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestText {
    pub prompt: String,
    pub output: String,
    /// The metadata object as JSON text.
    pub metadata: String,
}

/// Who leaves feedback, per cohort: requests, those with feedback of each kind, and the mean
/// evaluator score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CohortStats {
    /// `None` for logs without `metadata.user_cohort`.
    pub cohort: Option<String>,
    pub requests: u64,
    /// Requests with any feedback event.
    pub with_feedback: u64,
    pub with_explicit: u64,
    pub with_implicit: u64,
    /// Requests with a human score under the policy.
    pub with_human_score: u64,
    /// Of those, how many are good (`>= good_min`).
    pub positive: u64,
    /// Mean evaluator `overall` over all the cohort's requests (for the filter's evaluator).
    pub mean_eval_score: Option<f64>,
}

/// Totals for `evalloop stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StoreStats {
    pub backend: String,
    pub location: String,
    pub schema_version: i64,
    pub logs: u64,
    pub feedback_events: u64,
    /// Feedback events whose request has no log.
    pub orphaned_feedback: u64,
    /// Ratings of one human dimension (`dimension_ratings`, apart from `feedback_events`).
    pub dimension_ratings: u64,
    /// Preferences between two outputs (`preferences`, apart from `feedback_events`).
    pub preferences: u64,
    /// `feedback_type` -> count.
    pub feedback_by_type: Vec<(String, u64)>,
    /// Cohort (`null` for none) -> number of logs.
    pub cohorts: Vec<(Option<String>, u64)>,
    /// Evaluator -> number of scored requests.
    pub evaluators: Vec<(String, u64)>,
    pub first_timestamp: Option<String>,
    pub last_timestamp: Option<String>,
}

/// A request's ratings on one human dimension (events with a `dimension`), aggregated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DimensionScore {
    pub request_id: String,
    pub dimension: String,
    /// Mean of the request's ratings on the dimension, on the 1-5 scale.
    pub mean: f64,
    /// Ratings averaged.
    pub ratings: u64,
}

/// One explicit rating or thumb on a request, with what `agreement` groups and compares by
/// ([`Store::rater_events`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RaterEvent {
    /// The request's `metadata.user_cohort`.
    pub cohort: Option<String>,
    /// The request's `metadata.use_case`.
    pub use_case: Option<String>,
    /// The `overall` score of the filter's evaluator on the request; `None` when the filter
    /// names no evaluator.
    pub eval_score: Option<f64>,
    /// The event; its `dimension` is set when the events were read for one.
    pub event: FeedbackEvent,
}

/// The text a user turned a request's output into (an `implicit_edit` with `edited_output`),
/// from [`Store::edited_outputs`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EditedOutput {
    pub request_id: String,
    pub event_id: String,
    /// Microseconds since the epoch.
    pub timestamp_us: i64,
    pub edited_output: String,
}

/// One recorded run of the weekly loop (`evalloop run`), as `evalloop runs` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct RunRecord {
    /// Unique id, e.g. `20260531T120000Z-1a2b3c4d`.
    pub id: String,
    /// RFC 3339.
    pub started_at: String,
    pub finished_at: Option<String>,
    /// SHA-256 of the config file's bytes, hex.
    pub config_hash: String,
    /// `running`, `completed` or `failed`.
    pub status: String,
    /// `promoted`, `kept_baseline`, or `null` before the gate ran.
    pub decision: Option<String>,
    /// The run directory (report, dataset, model).
    pub run_dir: String,
    pub model_path: Option<String>,
    /// The dataset card, as JSON.
    pub dataset_card: Option<serde_json::Value>,
    /// Headline metrics (pre/post correlations, gate numbers), as JSON.
    pub metrics: Option<serde_json::Value>,
}

/// A stored eval log as one evaluator scored it: what ingest compares a row that repeats its
/// `request_id` with.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredLog {
    /// Microseconds since the epoch.
    pub timestamp_us: i64,
    pub prompt: String,
    pub output: String,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub feedback_collected: Option<bool>,
    /// The asked evaluator's `overall`; `None` when that evaluator has not scored the request.
    pub overall: Option<f64>,
    /// The asked evaluator's other scores, when the log was ingested with them (else empty).
    pub other_scores: std::collections::BTreeMap<String, f64>,
}

/// A log store. All writes happen between [`Store::begin`] and [`Store::commit`].
pub trait Store {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    /// Where the store lives (a path, or a URL without password).
    fn location(&self) -> String;

    /// Opens a write transaction.
    fn begin(&mut self) -> StoreResult<()>;
    /// Commits the open transaction.
    fn commit(&mut self) -> StoreResult<()>;
    /// Rolls back the open transaction; nothing written since [`Store::begin`] stays.
    fn rollback(&mut self) -> StoreResult<()>;

    /// Inserts logs and their evaluator scores; an existing `request_id` is a duplicate.
    fn insert_logs(&mut self, logs: &[EvalLog]) -> StoreResult<BatchOutcome>;
    /// Inserts feedback; an existing `event_id` is a duplicate; an unknown request is orphaned.
    /// Events with a `dimension` go to the `dimension_ratings` table, the others to
    /// `feedback_events` (which the human score and every analysis read), in the same
    /// transaction; event ids are unique within each table.
    fn insert_feedback(&mut self, events: &[FeedbackEvent]) -> StoreResult<BatchOutcome>;
    /// Stores `overall` scores of a new evaluator for existing requests, replacing that
    /// evaluator's earlier score for the same request. Unknown requests are counted as orphaned
    /// and not stored.
    fn insert_scores(&mut self, evaluator: &str, scores: &[(String, f64)]) -> StoreResult<BatchOutcome>;

    /// The stored logs of `(request_id, evaluator)` pairs, in the given order (`None` where no
    /// log has the id), with that evaluator's scores: what ingest compares repeated rows with.
    fn stored_logs(&self, keys: &[(&str, &str)]) -> StoreResult<Vec<Option<StoredLog>>>;
    /// The stored feedback events (or dimension ratings) with these event ids, in the given
    /// order; `None` where none has the id.
    fn stored_events(&self, event_ids: &[&str]) -> StoreResult<Vec<Option<FeedbackEvent>>>;

    /// Whether a log with this id exists.
    fn log_exists(&self, request_id: &str) -> StoreResult<bool>;
    /// A request's feedback events, oldest first.
    fn feedback_for(&self, request_id: &str) -> StoreResult<Vec<FeedbackEvent>>;
    /// Totals for `evalloop stats`.
    fn stats(&self) -> StoreResult<StoreStats>;
    /// Evaluator names present in the store, sorted.
    fn evaluators(&self) -> StoreResult<Vec<String>>;

    /// Requests with an evaluator score and a human score, ordered by `request_id`: the one
    /// join every analysis stands on, run inside the database.
    fn scored_requests(&self, q: &ScoredQuery) -> StoreResult<Vec<ScoredRequest>>;
    /// The mean rating of every request on each of `dimensions` that it has ratings for,
    /// ordered by `request_id` then dimension (orphaned ratings included).
    fn dimension_scores(&self, dimensions: &[String]) -> StoreResult<Vec<DimensionScore>>;
    /// [`Store::scored_requests`] as [`ScoredColumns`] (same rows, same order). The default
    /// builds them from `scored_requests`; a backend may read them directly.
    fn scored_columns(&self, q: &ScoredQuery) -> StoreResult<ScoredColumns> {
        Ok(ScoredColumns::from_rows(&self.scored_requests(&ScoredQuery { with_text: false, ..q.clone() })?))
    }
    /// Per-cohort feedback rates, ordered by cohort (`None` first).
    fn cohort_stats(&self, filter: &Filter, policy: &HumanPolicy) -> StoreResult<Vec<CohortStats>>;
    /// The evaluator `overall` of every request matching the filter (with or without feedback).
    fn eval_scores(&self, filter: &Filter) -> StoreResult<Vec<f64>>;
    /// Every request matching the filter that the filter's evaluator scored (with or without
    /// feedback), ordered by `request_id` then evaluator.
    fn evaluated_requests(&self, filter: &Filter) -> StoreResult<Vec<EvaluatedRequest>>;
    /// Ids of the logs matching the filter (with a score from the filter's evaluator, when it
    /// names one), ordered by id.
    fn request_ids(&self, filter: &Filter) -> StoreResult<Vec<String>>;
    /// The explicit ratings and thumbs on the logs matching the filter (with `dimension`: the
    /// ratings on that dimension instead), ordered by request id, then time, then event id, as
    /// [`Store::feedback_for`] orders one request's: one query for every request. With an
    /// evaluator in the filter, only the requests it scored, each event carrying its score.
    fn rater_events(&self, filter: &Filter, dimension: Option<&str>) -> StoreResult<Vec<RaterEvent>>;
    /// The stored `explicit_preference` events on `dimension` (`None`: the overall preferences,
    /// those without a dimension), in time order (then by `event_id`), whether or not their logs
    /// exist.
    fn preferences(&self, dimension: Option<&str>) -> StoreResult<Vec<FeedbackEvent>>;

    /// Writes job `job`'s plan of ranges unless the job has one; true when this call wrote it
    /// (see [`leases`]).
    fn lease_plan(&mut self, job: &str, ranges: &[leases::PlannedRange]) -> StoreResult<bool>;
    /// Leases the job's first range that is to do or whose lease expired to `worker` for
    /// `ttl_ms` milliseconds; `None` when no range is left to lease.
    fn lease_next(&mut self, job: &str, worker: &str, ttl_ms: i64) -> StoreResult<Option<leases::LeasedRange>>;
    /// In one transaction: when `worker` still holds the range, stores `scores` as `evaluator`'s
    /// and marks the range done (true); else writes nothing (false: another worker took it over).
    fn lease_finish(
        &mut self,
        job: &str,
        range_no: i64,
        worker: &str,
        evaluator: &str,
        scores: &[(String, f64)],
    ) -> StoreResult<bool>;
    /// Where job `job` stands.
    fn lease_progress(&self, job: &str) -> StoreResult<leases::LeaseProgress>;

    /// The edited outputs (`implicit_edit` events with value true and an `edited_output`) of the
    /// logs matching the filter (its evaluator is ignored), ordered by request id, then time,
    /// then event id: one query for every request.
    fn edited_outputs(&self, filter: &Filter) -> StoreResult<Vec<EditedOutput>>;
    /// Prompt, output and metadata of the given requests, in the given order; an unknown id is
    /// an error.
    fn request_texts(&self, ids: &[String]) -> StoreResult<Vec<(String, RequestText)>>;

    /// Inserts or replaces a run record (by id).
    fn save_run(&mut self, run: &RunRecord) -> StoreResult<()>;
    /// Every run, newest first.
    fn runs(&self) -> StoreResult<Vec<RunRecord>>;
    /// The run with this id, if any.
    fn run(&self, id: &str) -> StoreResult<Option<RunRecord>> {
        Ok(self.runs()?.into_iter().find(|r| r.id == id))
    }

    /// Stores a new annotation queue and its items (tables `review_queues`, `queue_items`); a
    /// name in use is an input error. Call between [`Store::begin`] and [`Store::commit`].
    fn create_queue(&mut self, spec: &QueueSpec, items: &[QueueItem]) -> StoreResult<()>;
    /// Every queue, by name.
    fn queues(&self) -> StoreResult<Vec<QueueSpec>>;
    /// The queue named `name`, if any.
    fn queue(&self, name: &str) -> StoreResult<Option<QueueSpec>>;
    /// The items of queue `queue` by position (`None`: of every queue, by queue then position).
    fn queue_items(&self, queue: Option<&str>) -> StoreResult<Vec<QueueItem>>;
    /// Reviewers' answers on queue `queue` (`None`: on every queue), oldest first.
    fn queue_labels(&self, queue: Option<&str>) -> StoreResult<Vec<QueueLabel>>;
    /// Records reviewers' answers (table `queue_labels`); an answer by the same reviewer on the
    /// same item (request, or pair) of the same queue is a duplicate and changes nothing.
    fn insert_queue_labels(&mut self, labels: &[QueueLabel]) -> StoreResult<BatchOutcome>;
    /// Holds queue `name` until the open transaction ends, so that answers on it are recorded
    /// one at a time (each reads the labels the previous one stored). Call after
    /// [`Store::begin`]. SQLite's `BEGIN IMMEDIATE` holds the whole file already; PostgreSQL
    /// locks the queue's row.
    fn lock_queue(&mut self, name: &str) -> StoreResult<()>;
}

/// Opens the store a `--db` value names: a `postgres://` URL or a SQLite file path.
pub fn open(db: &str) -> crate::Result<Box<dyn Store>> {
    if db.starts_with("postgres://") || db.starts_with("postgresql://") {
        return Ok(Box::new(postgres::PostgresStore::open(db)?));
    }
    let path = std::path::Path::new(db);
    check_sqlite_path(db)?;
    // A store in a folder that does not exist yet (`out/weekly/evalloop.db` on a fresh clone)
    // gets its folder, as the file itself is created when missing.
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
        std::fs::create_dir_all(parent).map_err(|e| {
            crate::Error::Input(format!("store {db}: cannot create its folder {}: {e}", parent.display()))
        })?;
    }
    Ok(Box::new(sqlite::SqliteStore::open(path)?))
}

/// Refuses the SQLite names that open a temporary database whose rows are lost at exit: an
/// empty path (an unset `EVALLOOP_DB=""` in CI), `:memory:` and in-memory `file:` URIs.
fn check_sqlite_path(db: &str) -> crate::Result<()> {
    let why = if db.trim().is_empty() {
        Some("the store path is empty (was EVALLOOP_DB, --db or [store] db set to \"\"?)")
    } else if db == ":memory:" || (db.starts_with("file:") && (db.contains(":memory:") || db.contains("mode=memory"))) {
        Some("an in-memory SQLite database keeps nothing after the command ends")
    } else {
        None
    };
    match why {
        Some(w) => Err(crate::Error::Input(format!(
            "store {db:?}: {w}; give a file path (default {}) or a postgres:// URL",
            crate::config::DEFAULT_DB
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: &str, evaluator: &str, group: usize) -> ScoredRequest {
        ScoredRequest {
            request_id: id.into(),
            timestamp_us: id.len() as i64,
            evaluator: evaluator.into(),
            eval_score: group as f64 / 40.0,
            human_score: 1.0 + (group % 5) as f64,
            n_scored_events: group as u64,
            cohort: (!group.is_multiple_of(3)).then(|| format!("c{}", group % 3)),
            use_case: None,
            group: Some(format!("g{group}")),
            text: None,
        }
    }

    #[test]
    fn scored_columns_sort_like_rows_with_many_distinct_values() {
        // 30 distinct groups: past the scanned dictionary, into the hash map.
        let mut rows: Vec<ScoredRequest> = (0..60)
            .map(|i| request(&format!("r{:02}", (i * 7) % 30), if i < 30 { "b" } else { "a" }, i % 30))
            .collect();
        let mut cols = ScoredColumns::from_rows(&rows[..25]);
        cols.append(&ScoredColumns::from_rows(&rows[25..]));
        cols.sort_by_request();
        rows.sort_by(|a, b| (&a.request_id, &a.evaluator).cmp(&(&b.request_id, &b.evaluator)));
        let want = ScoredColumns::from_rows(&rows);
        assert_eq!(cols.len(), 60);
        assert_eq!((0..60).map(|i| cols.row(i)).collect::<Vec<_>>(), (0..60).map(|i| want.row(i)).collect::<Vec<_>>());
        assert_eq!((cols.request_id(0), cols.evaluator(0), cols.evaluator(1)), ("r00", "a", "b"));
        assert_eq!(cols.cohort(0), None);
    }
}
