//! The SQLite store: one file (WAL mode), schema created and migrated by the program.
//!
//! By concern: `schema` holds the migrations, `query` builds the SQL of the filtered reads,
//! `write` inserts logs, feedback and scores, `chunks` splits the reads of a large store over
//! several connections, `scored` reads the scored requests and `scan` computes the per-cohort
//! figures in one pass, stepping statements through SQLite's C API (`raw`). This file holds
//! the store itself and its smaller reads.

mod chunks;
mod leases;
mod query;
mod queue;
mod raw;
mod scan;
mod schema;
mod scored;
#[cfg(test)]
mod tests;
mod write;

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use super::rows;
use super::{
    BatchOutcome, CohortStats, DimensionScore, EditedOutput, EvaluatedRequest, Filter, RaterEvent, RequestText,
    RunRecord, ScoredColumns, ScoredQuery, ScoredRequest, Store, StoreError, StoreResult, StoreStats, StoredLog,
};
use crate::feedback::HumanPolicy;
use crate::record::{EvalLog, FeedbackEvent, format_timestamp, from_micros};
use chunks::PARALLEL_MIN_LOGS;
use query::filter_sql;
use scan::COHORT_WINDOW;
pub use schema::SCHEMA_VERSION;
use schema::{DIMENSION_RATINGS_SQL, PREFERENCES_SQL};

/// A store in one SQLite file.
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    in_tx: bool,
    /// Below this many logs, reads stay on one connection (see [`PARALLEL_MIN_LOGS`]).
    parallel_min_logs: i64,
    /// log_ids per window of `cohort_stats` (see [`COHORT_WINDOW`]; tests make it small).
    cohort_window: i64,
    /// Evaluator name -> `evaluator_id`, as written or read by this connection; cleared on
    /// rollback (an id inserted by a rolled-back transaction is gone).
    evaluator_ids: std::cell::RefCell<std::collections::HashMap<String, i64>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path` and migrates it to [`SCHEMA_VERSION`].
    pub fn open(path: &Path) -> StoreResult<SqliteStore> {
        let err = |source| StoreError::Sqlite { path: path.display().to_string(), source };
        let conn = Connection::open(path).map_err(err)?;
        // The busy timeout first: on a new file, switching to WAL takes a lock that another
        // process opening the same file at the same time may hold.
        conn.execute_batch(READ_PRAGMAS).map_err(err)?;
        // 16 KiB pages for a new file (an existing one keeps its own): the analyses read about
        // a gigabyte of pages at 10M logs, a quarter as many reads and cache lookups as 4 KiB.
        set_journal_mode(&conn).map_err(err)?;
        conn.execute_batch("PRAGMA cache_size = -65536;").map_err(err)?;
        let mut store = SqliteStore {
            conn,
            path: path.to_path_buf(),
            in_tx: false,
            parallel_min_logs: PARALLEL_MIN_LOGS,
            cohort_window: COHORT_WINDOW,
            evaluator_ids: Default::default(),
        };
        store.migrate()?;
        store.conn.execute_batch(DIMENSION_RATINGS_SQL).map_err(store.err())?;
        store.conn.execute_batch(PREFERENCES_SQL).map_err(store.err())?;
        store.conn.execute_batch(crate::store::leases::LEASES_SQL).map_err(store.err())?;
        store.add_edited_output()?;
        store.conn.execute_batch(queue::QUEUE_TABLES_SQL).map_err(store.err())?;
        queue::migrate_pairs(&store)?;
        Ok(store)
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        move |source| StoreError::Sqlite { path: self.path.display().to_string(), source }
    }

    /// The schema version recorded in the file (`PRAGMA user_version`).
    pub fn schema_version(&self) -> StoreResult<i64> {
        self.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(self.err())
    }

    /// Direct access for tests and benchmarks.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

/// Sets the page size of a new file and switches it to WAL.
///
/// On a file that is not yet in WAL mode the switch turns a read lock into a write lock, and
/// when another process is switching the same file at the same moment SQLite answers "database
/// is locked" at once instead of waiting (waiting could deadlock the two). So the switch is
/// retried, with a growing pause, for as long as the busy timeout would have waited.
fn set_journal_mode(conn: &Connection) -> rusqlite::Result<()> {
    const SQL: &str = "PRAGMA page_size = 16384; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;";
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(BUSY_TIMEOUT_MS);
    let mut pause_ms = 2;
    loop {
        match conn.execute_batch(SQL) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(pause_ms));
                pause_ms = (pause_ms * 2).min(100);
            }
            done => return done,
        }
    }
}

/// How long a connection waits for another's lock before answering "database is locked" (the
/// `busy_timeout` of [`READ_PRAGMAS`]).
const BUSY_TIMEOUT_MS: u64 = 10_000;

/// Settings for every connection (the writer's and the extra readers').
const READ_PRAGMAS: &str = "PRAGMA busy_timeout = 10000;
     PRAGMA temp_store = MEMORY;";

impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn begin(&mut self) -> StoreResult<()> {
        if !self.in_tx {
            self.conn.execute_batch("BEGIN IMMEDIATE").map_err(self.err())?;
            self.in_tx = true;
        }
        Ok(())
    }

    fn commit(&mut self) -> StoreResult<()> {
        if self.in_tx {
            self.conn.execute_batch("COMMIT").map_err(self.err())?;
            self.in_tx = false;
        }
        Ok(())
    }

    fn rollback(&mut self) -> StoreResult<()> {
        self.evaluator_ids.borrow_mut().clear();
        if self.in_tx {
            self.conn.execute_batch("ROLLBACK").map_err(self.err())?;
            self.in_tx = false;
        }
        Ok(())
    }

    fn insert_logs(&mut self, logs: &[EvalLog]) -> StoreResult<BatchOutcome> {
        write::insert_logs(self, logs)
    }

    fn insert_feedback(&mut self, events: &[FeedbackEvent]) -> StoreResult<BatchOutcome> {
        write::insert_feedback(self, events)
    }

    fn insert_scores(&mut self, evaluator: &str, scores: &[(String, f64)]) -> StoreResult<BatchOutcome> {
        write::insert_scores(self, evaluator, scores)
    }

    fn stored_logs(&self, keys: &[(&str, &str)]) -> StoreResult<Vec<Option<StoredLog>>> {
        let err = self.err();
        let mut log = self
            .conn
            .prepare_cached(
                "SELECT l.log_id, l.ts, t.prompt, t.output, t.metadata, l.feedback_collected
                 FROM eval_logs l JOIN log_texts t ON t.log_id = l.log_id WHERE l.request_id = ?1",
            )
            .map_err(&err)?;
        let mut score = self
            .conn
            .prepare_cached(
                "SELECT s.overall, o.scores FROM evaluators e JOIN eval_scores s ON s.evaluator_id = e.evaluator_id
                 LEFT JOIN log_scores o ON o.log_id = s.log_id AND o.evaluator_id = e.evaluator_id
                 WHERE e.name = ?1 AND s.log_id = ?2",
            )
            .map_err(&err)?;
        let mut out = Vec::with_capacity(keys.len());
        for &(request_id, evaluator) in keys {
            let found = log
                .query_row([request_id], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, Option<bool>>(5)?,
                    ))
                })
                .optional()
                .map_err(&err)?;
            let Some((log_id, ts, prompt, output, metadata, feedback_collected)) = found else {
                out.push(None);
                continue;
            };
            let scored: Option<(f64, Option<String>)> =
                score.query_row(params![evaluator, log_id], |r| Ok((r.get(0)?, r.get(1)?))).optional().map_err(&err)?;
            out.push(Some(rows::stored_log(ts, prompt, output, &metadata, feedback_collected, scored)?));
        }
        Ok(out)
    }

    fn stored_events(&self, event_ids: &[&str]) -> StoreResult<Vec<Option<FeedbackEvent>>> {
        let err = self.err();
        let mut s = self
            .conn
            .prepare_cached(
                "SELECT request_id, feedback_type, value_num, value_text, user_id, ts, NULL, NULL, edited_output
                 FROM feedback_events WHERE event_id = ?1
                 UNION ALL
                 SELECT request_id, 'explicit_rating', value_num, NULL, user_id, ts, dimension, NULL, NULL
                 FROM dimension_ratings WHERE event_id = ?1
                 UNION ALL
                 SELECT request_id, 'explicit_preference', NULL, choice, user_id, ts, dimension, other_request_id, NULL
                 FROM preferences WHERE event_id = ?1 LIMIT 1",
            )
            .map_err(&err)?;
        let mut out = Vec::with_capacity(event_ids.len());
        for &id in event_ids {
            let row = s.query_row([id], |r| rows::stored_event_row(id, r)).optional().map_err(&err)?;
            out.push(row.map(rows::stored_event_with_dimension).transpose()?);
        }
        Ok(out)
    }

    fn log_exists(&self, request_id: &str) -> StoreResult<bool> {
        let mut s = self.conn.prepare_cached("SELECT 1 FROM eval_logs WHERE request_id = ?1").map_err(self.err())?;
        s.exists([request_id]).map_err(self.err())
    }

    fn feedback_for(&self, request_id: &str) -> StoreResult<Vec<FeedbackEvent>> {
        let mut s = self
            .conn
            .prepare_cached(
                "SELECT event_id, feedback_type, value_num, value_text, user_id, ts, edited_output FROM feedback_events
                 WHERE log_id = (SELECT log_id FROM eval_logs WHERE request_id = ?1)
                 UNION ALL
                 SELECT event_id, feedback_type, value_num, value_text, user_id, ts, edited_output FROM feedback_events
                 WHERE log_id IS NULL AND request_id = ?1
                 ORDER BY ts, event_id",
            )
            .map_err(self.err())?;
        let rows = s.query_map([request_id], |r| rows::edit_feedback_row(r)).map_err(self.err())?;
        let mut out = Vec::new();
        for row in rows {
            out.push(rows::stored_edit_event(request_id, row.map_err(self.err())?)?);
        }
        Ok(out)
    }

    fn preferences(&self, dimension: Option<&str>) -> StoreResult<Vec<FeedbackEvent>> {
        let mut s = self
            .conn
            .prepare_cached(
                "SELECT event_id, request_id, other_request_id, dimension, choice, user_id, ts FROM preferences
                 WHERE dimension IS ?1 ORDER BY ts, event_id",
            )
            .map_err(self.err())?;
        let rows = s.query_map([dimension], |r| rows::preference_row(r)).map_err(self.err())?;
        let mut out = Vec::new();
        for row in rows {
            out.push(rows::stored_preference(row.map_err(self.err())?)?);
        }
        Ok(out)
    }

    fn lease_plan(&mut self, job: &str, ranges: &[crate::store::leases::PlannedRange]) -> StoreResult<bool> {
        self.plan_leases(job, ranges)
    }

    fn lease_next(
        &mut self,
        job: &str,
        worker: &str,
        ttl_ms: i64,
    ) -> StoreResult<Option<crate::store::leases::LeasedRange>> {
        self.next_lease(job, worker, ttl_ms)
    }

    fn lease_finish(
        &mut self,
        job: &str,
        range_no: i64,
        worker: &str,
        evaluator: &str,
        scores: &[(String, f64)],
    ) -> StoreResult<bool> {
        self.finish_lease(job, range_no, worker, evaluator, scores)
    }

    fn lease_progress(&self, job: &str) -> StoreResult<crate::store::leases::LeaseProgress> {
        self.leases_of(job)
    }

    fn stats(&self) -> StoreResult<StoreStats> {
        let err = self.err();
        let count = |sql: &str| -> StoreResult<u64> {
            self.conn.query_row(sql, [], |r| r.get::<_, i64>(0)).map(|n| n as u64).map_err(self.err())
        };
        let mut st = StoreStats {
            backend: "sqlite".into(),
            location: self.location(),
            schema_version: self.schema_version()?,
            logs: count("SELECT COUNT(*) FROM eval_logs")?,
            feedback_events: count("SELECT COUNT(*) FROM feedback_events")?,
            orphaned_feedback: count("SELECT COUNT(*) FROM feedback_events WHERE log_id IS NULL")?,
            dimension_ratings: count("SELECT COUNT(*) FROM dimension_ratings")?,
            preferences: count("SELECT COUNT(*) FROM preferences")?,
            ..Default::default()
        };
        st.feedback_by_type = self.counted(
            "SELECT feedback_type, COUNT(*) FROM feedback_events GROUP BY feedback_type ORDER BY feedback_type",
        )?;
        st.cohorts = self.counted("SELECT cohort, COUNT(*) FROM eval_logs GROUP BY cohort ORDER BY cohort")?;
        st.evaluators = self.counted(
            "SELECT e.name, (SELECT COUNT(*) FROM eval_scores s WHERE s.evaluator_id = e.evaluator_id) AS n
                 FROM evaluators e WHERE n > 0 ORDER BY e.name",
        )?;
        let (lo, hi): (Option<i64>, Option<i64>) = self
            .conn
            .query_row("SELECT MIN(ts), MAX(ts) FROM eval_logs", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(&err)?;
        st.first_timestamp = lo.map(|t| format_timestamp(&from_micros(t)));
        st.last_timestamp = hi.map(|t| format_timestamp(&from_micros(t)));
        Ok(st)
    }

    fn evaluators(&self) -> StoreResult<Vec<String>> {
        let mut s = self
            .conn
            .prepare(
                "SELECT e.name FROM evaluators e
                     WHERE EXISTS (SELECT 1 FROM eval_scores s WHERE s.evaluator_id = e.evaluator_id) ORDER BY e.name",
            )
            .map_err(self.err())?;
        let rows = s.query_map([], |r| r.get(0)).map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    fn scored_requests(&self, q: &ScoredQuery) -> StoreResult<Vec<ScoredRequest>> {
        scored::scored_requests(self, q)
    }

    fn dimension_scores(&self, dimensions: &[String]) -> StoreResult<Vec<DimensionScore>> {
        if dimensions.is_empty() {
            return Ok(Vec::new());
        }
        let marks: Vec<String> = (1..=dimensions.len()).map(|i| format!("?{i}")).collect();
        let sql = format!(
            "SELECT request_id, dimension, AVG(value_num), COUNT(*) FROM dimension_ratings
             WHERE dimension IN ({}) GROUP BY request_id, dimension ORDER BY request_id, dimension",
            marks.join(", ")
        );
        let mut stmt = self.conn.prepare(&sql).map_err(self.err())?;
        let rows =
            stmt.query_map(params_from_iter(dimensions.iter()), |r| rows::dimension_score(r)).map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    fn scored_columns(&self, q: &ScoredQuery) -> StoreResult<ScoredColumns> {
        scored::scored_columns(self, q)
    }

    fn cohort_stats(&self, filter: &Filter, policy: &HumanPolicy) -> StoreResult<Vec<CohortStats>> {
        scan::cohort_stats(self, filter, policy)
    }

    fn eval_scores(&self, filter: &Filter) -> StoreResult<Vec<f64>> {
        let mut params = Vec::new();
        let cond = filter_sql(filter, true, &mut params);
        let sql = format!(
            "SELECT s.overall FROM eval_logs l JOIN eval_scores s ON s.log_id = l.log_id
                 JOIN evaluators e ON e.evaluator_id = s.evaluator_id
             WHERE 1 = 1{cond} ORDER BY l.request_id, e.name"
        );
        let mut stmt = self.conn.prepare(&sql).map_err(self.err())?;
        let rows = stmt.query_map(params_from_iter(params.iter()), |r| r.get(0)).map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    fn evaluated_requests(&self, filter: &Filter) -> StoreResult<Vec<EvaluatedRequest>> {
        let mut params = Vec::new();
        let cond = filter_sql(filter, true, &mut params);
        let sql = format!(
            "SELECT l.request_id, l.ts, s.overall, l.cohort, l.use_case, l.prompt_version
             FROM eval_logs l JOIN eval_scores s ON s.log_id = l.log_id
                 JOIN evaluators e ON e.evaluator_id = s.evaluator_id
             WHERE 1 = 1{cond} ORDER BY l.request_id, e.name"
        );
        let mut stmt = self.conn.prepare(&sql).map_err(self.err())?;
        let rows =
            stmt.query_map(params_from_iter(params.iter()), |r| rows::evaluated_request(r)).map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    fn request_ids(&self, filter: &Filter) -> StoreResult<Vec<String>> {
        let mut params = Vec::new();
        let cond = filter_sql(filter, true, &mut params);
        let join = if filter.evaluator.is_some() { "JOIN eval_scores s ON s.log_id = l.log_id" } else { "" };
        let sql = format!("SELECT l.request_id FROM eval_logs l {join} WHERE 1 = 1{cond} ORDER BY l.request_id");
        let mut stmt = self.conn.prepare(&sql).map_err(self.err())?;
        let rows = stmt.query_map(params_from_iter(params.iter()), |r| r.get(0)).map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    fn rater_events(&self, filter: &Filter, dimension: Option<&str>) -> StoreResult<Vec<RaterEvent>> {
        let mut params = Vec::new();
        let cond = filter_sql(filter, true, &mut params);
        let (score, join) = match filter.evaluator {
            Some(_) => ("s.overall", "JOIN eval_scores s ON s.log_id = l.log_id"),
            None => ("NULL", ""),
        };
        let sql = match dimension {
            Some(d) => {
                params.push(rusqlite::types::Value::Text(d.to_string()));
                format!(
                    "SELECT l.request_id, l.cohort, l.use_case, {score}, r.event_id, 'explicit_rating', r.value_num,
                         NULL, r.user_id, r.ts
                     FROM eval_logs l {join} JOIN dimension_ratings r ON r.request_id = l.request_id
                     WHERE r.dimension = ?{}{cond} ORDER BY l.request_id, r.ts, r.event_id",
                    params.len()
                )
            }
            None => format!(
                "SELECT l.request_id, l.cohort, l.use_case, {score}, f.event_id, f.feedback_type, f.value_num,
                     f.value_text, f.user_id, f.ts
                 FROM eval_logs l {join} JOIN feedback_events f ON f.log_id = l.log_id
                 WHERE f.feedback_type IN {}{cond} ORDER BY l.request_id, f.ts, f.event_id",
                rows::RATER_TYPES_SQL
            ),
        };
        let mut stmt = self.conn.prepare(&sql).map_err(self.err())?;
        let found = stmt.query_map(params_from_iter(params.iter()), |r| rows::rater_row(r)).map_err(self.err())?;
        let mut out = Vec::new();
        for row in found {
            out.push(rows::stored_rater_event(row.map_err(self.err())?, dimension)?);
        }
        Ok(out)
    }

    fn edited_outputs(&self, filter: &Filter) -> StoreResult<Vec<EditedOutput>> {
        let mut params = Vec::new();
        let cond = filter_sql(filter, false, &mut params);
        let sql = format!(
            "SELECT l.request_id, f.event_id, f.ts, f.edited_output
             FROM eval_logs l JOIN feedback_events f ON f.log_id = l.log_id
             WHERE f.feedback_type = 'implicit_edit' AND f.value_num = 1 AND f.edited_output IS NOT NULL{cond}
             ORDER BY l.request_id, f.ts, f.event_id"
        );
        let mut stmt = self.conn.prepare(&sql).map_err(self.err())?;
        let found = stmt.query_map(params_from_iter(params.iter()), |r| rows::edited_output(r)).map_err(self.err())?;
        found.collect::<Result<_, _>>().map_err(self.err())
    }

    fn request_texts(&self, ids: &[String]) -> StoreResult<Vec<(String, RequestText)>> {
        ids.iter().map(|id| Ok((id.clone(), self.text_of(id)?))).collect()
    }

    fn save_run(&mut self, r: &RunRecord) -> StoreResult<()> {
        self.conn
            .execute(
                "INSERT INTO runs (id, started_at, finished_at, config_hash, status, decision, run_dir, model_path,
                     dataset_card, metrics) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT(id) DO UPDATE SET finished_at = excluded.finished_at, status = excluded.status,
                     decision = excluded.decision, model_path = excluded.model_path,
                     dataset_card = excluded.dataset_card, metrics = excluded.metrics",
                params![
                    r.id,
                    r.started_at,
                    r.finished_at,
                    r.config_hash,
                    r.status,
                    r.decision,
                    r.run_dir,
                    r.model_path,
                    rows::run_json(&r.dataset_card),
                    rows::run_json(&r.metrics)
                ],
            )
            .map_err(self.err())?;
        Ok(())
    }

    fn runs(&self) -> StoreResult<Vec<RunRecord>> {
        let mut s = self
            .conn
            .prepare(
                "SELECT id, started_at, finished_at, config_hash, status, decision, run_dir, model_path, dataset_card,
                     metrics FROM runs ORDER BY started_at DESC, id DESC",
            )
            .map_err(self.err())?;
        let rows = s.query_map([], |r| rows::run_record(r)).map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    fn create_queue(&mut self, spec: &crate::queue::QueueSpec, items: &[crate::queue::QueueItem]) -> StoreResult<()> {
        queue::create_queue(self, spec, items)
    }

    fn queues(&self) -> StoreResult<Vec<crate::queue::QueueSpec>> {
        queue::queues(self)
    }

    fn queue(&self, name: &str) -> StoreResult<Option<crate::queue::QueueSpec>> {
        queue::queue(self, name)
    }

    fn queue_items(&self, q: Option<&str>) -> StoreResult<Vec<crate::queue::QueueItem>> {
        queue::queue_items(self, q)
    }

    fn queue_labels(&self, q: Option<&str>) -> StoreResult<Vec<crate::queue::QueueLabel>> {
        queue::queue_labels(self, q)
    }

    fn insert_queue_labels(&mut self, labels: &[crate::queue::QueueLabel]) -> StoreResult<BatchOutcome> {
        queue::insert_queue_labels(self, labels)
    }

    fn lock_queue(&mut self, _name: &str) -> StoreResult<()> {
        // `begin` took the database's write lock (BEGIN IMMEDIATE) for the whole transaction.
        Ok(())
    }
}

impl SqliteStore {
    /// `(key, count)` pairs from a two-column query.
    fn counted<K: rows::Value>(&self, sql: &str) -> StoreResult<Vec<(K, u64)>> {
        let mut s = self.conn.prepare(sql).map_err(self.err())?;
        let rows = s.query_map([], |r| rows::counted(r)).map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    fn text_of(&self, id: &str) -> StoreResult<RequestText> {
        let mut s = self
            .conn
            .prepare_cached(
                "SELECT t.prompt, t.output, t.metadata FROM eval_logs l JOIN log_texts t ON t.log_id = l.log_id
                 WHERE l.request_id = ?1",
            )
            .map_err(self.err())?;
        let mut rows = s.query([id]).map_err(self.err())?;
        match rows.next().map_err(self.err())? {
            Some(r) => rows::request_text(r, std::convert::identity).map_err(self.err()),
            None => Err(StoreError::Invalid(format!("no log for request {id:?}"))),
        }
    }
}
