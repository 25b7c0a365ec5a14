//! The SQLite store: one file (WAL mode), schema created and migrated by the program.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params, params_from_iter};

mod raw;

use raw::RawStmt;

use super::{
    BatchOutcome, CohortStats, DimensionScore, Filter, RequestText, RunRecord, ScoredColumns, ScoredQuery,
    ScoredRequest, ScoredRow, Store, StoreError, StoreResult, StoreStats,
};
use crate::feedback::HumanPolicy;
use crate::record::{EvalLog, FeedbackEvent, FeedbackValue, format_timestamp, from_micros, to_micros};

/// The schema version this program writes. Each entry of [`MIGRATIONS`] moves one version up.
pub const SCHEMA_VERSION: i64 = 5;

/// Migration `i` takes a store from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1: logs, scores, feedback.
    "CREATE TABLE eval_logs (
        request_id TEXT PRIMARY KEY,
        ts INTEGER NOT NULL,
        prompt TEXT NOT NULL,
        output TEXT NOT NULL,
        feedback_collected INTEGER,
        cohort TEXT,
        user_id TEXT,
        use_case TEXT,
        prompt_version TEXT,
        metadata TEXT NOT NULL
    );
    CREATE INDEX eval_logs_ts ON eval_logs(ts);
    CREATE INDEX eval_logs_cohort ON eval_logs(cohort);
    CREATE TABLE eval_scores (
        request_id TEXT NOT NULL,
        evaluator TEXT NOT NULL,
        overall REAL NOT NULL,
        scores TEXT NOT NULL,
        PRIMARY KEY (request_id, evaluator)
    ) WITHOUT ROWID;
    CREATE INDEX eval_scores_evaluator ON eval_scores(evaluator);
    CREATE TABLE feedback_events (
        event_id TEXT PRIMARY KEY,
        request_id TEXT NOT NULL,
        feedback_type TEXT NOT NULL,
        value_num REAL,
        value_text TEXT,
        user_id TEXT,
        ts INTEGER NOT NULL
    );
    CREATE INDEX feedback_events_request ON feedback_events(request_id, feedback_type, value_num);
    CREATE INDEX feedback_events_ts ON feedback_events(ts);",
    // 1 -> 2: runs of the weekly loop.
    "CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        config_hash TEXT NOT NULL,
        status TEXT NOT NULL,
        decision TEXT,
        run_dir TEXT NOT NULL,
        model_path TEXT,
        dataset_card TEXT,
        metrics TEXT
    );",
    // 2 -> 3: the cohort index carries request_id, so per-cohort aggregates (bias, dataset
    // rates) read the index alone instead of every wide log row.
    "DROP INDEX eval_logs_cohort;
    CREATE INDEX eval_logs_cohort ON eval_logs(cohort, request_id);",
    // 3 -> 4: integer keys and a narrow log table. `eval_logs` keeps one narrow row per request
    // (an INTEGER PRIMARY KEY `log_id`, the request id and the indexed columns); prompt, output
    // and metadata move to `log_texts`, so the analyses never read them. Scores are keyed by
    // (log_id, evaluator); feedback carries the log_id of its request, NULL while orphaned (the
    // partial index finds those when their log arrives). log_id keeps the old rowid, i.e. the
    // ingest order. Feedback has two indexes instead of three: by log_id (covering the human
    // score) and the orphans by request_id; the unused one on its time is gone.
    "CREATE TABLE eval_logs_v4 (
        log_id INTEGER PRIMARY KEY,
        request_id TEXT NOT NULL UNIQUE,
        ts INTEGER NOT NULL,
        cohort TEXT,
        use_case TEXT,
        user_id TEXT,
        prompt_version TEXT,
        feedback_collected INTEGER
    );
    INSERT INTO eval_logs_v4 (log_id, request_id, ts, cohort, use_case, user_id, prompt_version, feedback_collected)
        SELECT rowid, request_id, ts, cohort, use_case, user_id, prompt_version, feedback_collected
        FROM eval_logs ORDER BY rowid;
    CREATE TABLE log_texts (
        log_id INTEGER PRIMARY KEY,
        prompt TEXT NOT NULL,
        output TEXT NOT NULL,
        metadata TEXT NOT NULL
    );
    INSERT INTO log_texts (log_id, prompt, output, metadata)
        SELECT rowid, prompt, output, metadata FROM eval_logs ORDER BY rowid;
    CREATE TABLE eval_scores_v4 (
        log_id INTEGER NOT NULL,
        evaluator TEXT NOT NULL,
        overall REAL NOT NULL,
        scores TEXT NOT NULL,
        PRIMARY KEY (log_id, evaluator)
    ) WITHOUT ROWID;
    INSERT INTO eval_scores_v4 (log_id, evaluator, overall, scores)
        SELECT l.rowid, s.evaluator, s.overall, s.scores
        FROM eval_scores s JOIN eval_logs l ON l.request_id = s.request_id ORDER BY 1, 2;
    CREATE TABLE feedback_events_v4 (
        event_id TEXT PRIMARY KEY,
        request_id TEXT NOT NULL,
        log_id INTEGER,
        feedback_type TEXT NOT NULL,
        value_num REAL,
        value_text TEXT,
        user_id TEXT,
        ts INTEGER NOT NULL
    );
    INSERT INTO feedback_events_v4 (rowid, event_id, request_id, log_id, feedback_type, value_num, value_text,
            user_id, ts)
        SELECT f.rowid, f.event_id, f.request_id, l.rowid, f.feedback_type, f.value_num, f.value_text, f.user_id, f.ts
        FROM feedback_events f LEFT JOIN eval_logs l ON l.request_id = f.request_id ORDER BY f.rowid;
    DROP TABLE eval_logs;
    DROP TABLE eval_scores;
    DROP TABLE feedback_events;
    ALTER TABLE eval_logs_v4 RENAME TO eval_logs;
    ALTER TABLE eval_scores_v4 RENAME TO eval_scores;
    ALTER TABLE feedback_events_v4 RENAME TO feedback_events;
    CREATE INDEX eval_logs_ts ON eval_logs(ts);
    CREATE INDEX eval_logs_cohort ON eval_logs(cohort);
    CREATE INDEX eval_scores_evaluator ON eval_scores(evaluator);
    CREATE INDEX feedback_events_log ON feedback_events(log_id, feedback_type, value_num);
    CREATE INDEX feedback_events_orphans ON feedback_events(request_id) WHERE log_id IS NULL;",
    // 4 -> 5: integer evaluator ids and narrow scores. Evaluator names move to `evaluators`;
    // `eval_scores` keeps (evaluator_id, log_id, overall) keyed in that order, so one
    // evaluator's scores are one contiguous range (no separate evaluator index) and a lookup
    // compares integers, not text: about 21 bytes a row instead of 53. The other scores of an
    // ingested log (its `eval_scores` map without `overall`, as JSON), which no query reads,
    // move to `log_scores`, one row per log that has any.
    "CREATE TABLE evaluators (
        evaluator_id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE
    );
    INSERT INTO evaluators (name) SELECT DISTINCT evaluator FROM eval_scores ORDER BY evaluator;
    CREATE TABLE eval_scores_v5 (
        evaluator_id INTEGER NOT NULL,
        log_id INTEGER NOT NULL,
        overall REAL NOT NULL,
        PRIMARY KEY (evaluator_id, log_id)
    ) WITHOUT ROWID;
    INSERT INTO eval_scores_v5 (evaluator_id, log_id, overall)
        SELECT e.evaluator_id, s.log_id, s.overall FROM eval_scores s JOIN evaluators e ON e.name = s.evaluator
        ORDER BY 1, 2;
    CREATE TABLE log_scores (
        log_id INTEGER PRIMARY KEY,
        evaluator_id INTEGER NOT NULL,
        scores TEXT NOT NULL
    );
    INSERT INTO log_scores (log_id, evaluator_id, scores)
        SELECT s.log_id, e.evaluator_id, s.scores FROM eval_scores s JOIN evaluators e ON e.name = s.evaluator
        WHERE s.scores <> '{}' ORDER BY s.log_id;
    DROP TABLE eval_scores;
    ALTER TABLE eval_scores_v5 RENAME TO eval_scores;",
];

/// Ratings of one human dimension (feedback events with a `dimension`), kept apart from
/// `feedback_events` so that the human score and the analyses, which read only that table, are
/// unchanged by them. Created on open for new and existing stores alike (no schema version of
/// its own); keyed by request id, so a rating that comes before its log needs no attaching.
const DIMENSION_RATINGS_SQL: &str = "CREATE TABLE IF NOT EXISTS dimension_ratings (
        event_id TEXT PRIMARY KEY,
        request_id TEXT NOT NULL,
        dimension TEXT NOT NULL,
        value_num REAL NOT NULL,
        user_id TEXT,
        ts INTEGER NOT NULL
    );
    CREATE INDEX IF NOT EXISTS dimension_ratings_request ON dimension_ratings(request_id, dimension, value_num);";

/// Stores with fewer logs than this are read on one connection; larger ones are split by
/// `log_id` range over [`read_threads`] connections.
const PARALLEL_MIN_LOGS: i64 = 200_000;

/// Page cache of the extra reading connections, in KiB (the writer's is 64 MiB). Their reads
/// are one pass over each table; a small cache recycles its pages instead of touching fresh
/// memory for every page read.
const READER_CACHE_KIB: i64 = 8192;

/// How many connections read a large store at once: the available cores, at most 8.
fn read_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).min(8)
}

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
        // 16 KiB pages for a new file (an existing one keeps its own): the analyses read about
        // a gigabyte of pages at 10M logs, a quarter as many reads and cache lookups as 4 KiB.
        conn.execute_batch("PRAGMA page_size = 16384; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
            .map_err(err)?;
        conn.execute_batch(READ_PRAGMAS).map_err(err)?;
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
        Ok(store)
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        move |source| StoreError::Sqlite { path: self.path.display().to_string(), source }
    }

    /// The schema version recorded in the file (`PRAGMA user_version`).
    pub fn schema_version(&self) -> StoreResult<i64> {
        self.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(self.err())
    }

    fn migrate(&mut self) -> StoreResult<()> {
        let found = self.schema_version()?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                path: self.path.display().to_string(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if found == SCHEMA_VERSION {
            return Ok(());
        }
        // Every step in one transaction: a store that fails any step (3 -> 4 -> 5) is left as
        // it was, at its old version.
        let path = self.path.display().to_string();
        let tx = self.conn.transaction().map_err(|source| StoreError::Sqlite { path: path.clone(), source })?;
        MIGRATIONS
            .iter()
            .skip(found as usize)
            .try_for_each(|sql| tx.execute_batch(sql))
            .and_then(|_| tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}")))
            .and_then(|_| tx.commit())
            .map_err(|source| StoreError::Sqlite { path, source })
    }

    /// Direct access for tests and benchmarks.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Splits the `log_id` range into one chunk per reading thread when the store is large
    /// enough and no write transaction is open (other connections would not see its rows);
    /// otherwise one chunk covering everything.
    fn log_id_chunks(&self) -> StoreResult<Vec<(i64, i64)>> {
        let threads = read_threads() as i64;
        if self.in_tx || threads < 2 {
            return Ok(vec![(i64::MIN, i64::MAX)]);
        }
        let (lo, hi): (Option<i64>, Option<i64>) = self
            .conn
            .query_row(
                // Two subqueries: each is one B-tree descent, where MIN and MAX together scan.
                "SELECT (SELECT MIN(log_id) FROM eval_logs), (SELECT MAX(log_id) FROM eval_logs)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(self.err())?;
        let (Some(lo), Some(hi)) = (lo, hi) else { return Ok(vec![(i64::MIN, i64::MAX)]) };
        let span = hi.saturating_sub(lo).saturating_add(1);
        if span < self.parallel_min_logs.max(threads) {
            return Ok(vec![(i64::MIN, i64::MAX)]);
        }
        let step = span / threads;
        Ok((0..threads)
            .map(|i| {
                let a = if i == 0 { i64::MIN } else { lo + i * step };
                let b = if i == threads - 1 { i64::MAX } else { lo + (i + 1) * step - 1 };
                (a, b)
            })
            .collect())
    }

    /// Runs `f` once per `log_id` chunk. One chunk runs on this connection; several run each on
    /// a read-only connection of its own (WAL readers do not block each other), the first in
    /// this thread and the others in threads of their own, so none fills this connection's
    /// 64 MiB page cache with pages read once. Results come back in chunk order.
    fn on_chunks<T: Send>(
        &self,
        f: impl Fn(&Connection, i64, i64) -> rusqlite::Result<T> + Sync,
    ) -> StoreResult<Vec<T>> {
        let chunks = self.log_id_chunks()?;
        if let [(a, b)] = chunks[..] {
            return Ok(vec![f(&self.conn, a, b).map_err(self.err())?]);
        }
        let path = self.path.as_path();
        let f = &f;
        let reader = move |a: i64, b: i64| -> rusqlite::Result<T> {
            let conn =
                Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
            conn.execute_batch(READ_PRAGMAS)?;
            conn.execute_batch(&format!("PRAGMA cache_size = -{READER_CACHE_KIB};"))?;
            f(&conn, a, b)
        };
        let results: Vec<rusqlite::Result<T>> = std::thread::scope(|scope| {
            let others: Vec<_> = chunks[1..].iter().map(|&(a, b)| scope.spawn(move || reader(a, b))).collect();
            let mut results = vec![reader(chunks[0].0, chunks[0].1)];
            for h in others {
                results.push(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
            }
            results
        });
        results.into_iter().map(|r| r.map_err(self.err())).collect()
    }
}

/// Settings for every connection (the writer's and the extra readers').
const READ_PRAGMAS: &str = "PRAGMA busy_timeout = 10000;
     PRAGMA temp_store = MEMORY;";

/// SQL for the score one feedback event contributes under a policy; parameters ?1..?5 are the
/// thumbs-up, thumbs-down, usage, edit and discard scores (NULL = ignored). Table alias `f`.
const EVENT_SCORE_SQL: &str = "CASE f.feedback_type
        WHEN 'explicit_thumbs_up' THEN ?1
        WHEN 'explicit_thumbs_down' THEN ?2
        WHEN 'explicit_rating' THEN f.value_num
        WHEN 'implicit_usage' THEN CASE WHEN f.value_num = 1 THEN ?3 END
        WHEN 'implicit_edit' THEN CASE WHEN f.value_num = 1 THEN ?4 END
        WHEN 'implicit_discard' THEN CASE WHEN f.value_num = 1 THEN ?5 END
    END";

fn policy_params(p: &HumanPolicy) -> Vec<SqlValue> {
    let opt = |x: Option<f64>| x.map_or(SqlValue::Null, SqlValue::Real);
    vec![
        SqlValue::Real(p.thumbs_up),
        SqlValue::Real(p.thumbs_down),
        opt(p.implicit_usage),
        opt(p.implicit_edit),
        opt(p.implicit_discard),
    ]
}

/// A JSON path for a metadata key, quoted so any key is taken literally.
pub(crate) fn json_path(key: &str) -> String {
    format!("$.\"{}\"", key.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Column for a metadata key that has one, else a `json_extract` on the metadata text.
fn metadata_expr(key: &str, params: &mut Vec<SqlValue>) -> String {
    match key {
        "user_cohort" => "l.cohort".into(),
        "user_id" => "l.user_id".into(),
        "use_case" => "l.use_case".into(),
        "prompt_version" => "l.prompt_version".into(),
        _ => {
            params.push(SqlValue::Text(json_path(key)));
            format!(
                "CAST(json_extract((SELECT t.metadata FROM log_texts t WHERE t.log_id = l.log_id), ?{}) AS TEXT)",
                params.len()
            )
        }
    }
}

/// Appends `AND ...` conditions for a filter on `eval_logs l` (and `eval_scores s` when
/// `with_scores`: its evaluator by name, looked up once); values travel as parameters, never in
/// the SQL text.
fn filter_sql(f: &Filter, with_scores: bool, params: &mut Vec<SqlValue>) -> String {
    let mut sql = String::new();
    let push = |sql: &mut String, cond: &str, v: SqlValue, params: &mut Vec<SqlValue>| {
        params.push(v);
        sql.push_str(&format!(" AND {cond} ?{}", params.len()));
    };
    if let Some(t) = f.since {
        push(&mut sql, "l.ts >=", SqlValue::Integer(to_micros(&t)), params);
    }
    if let Some(t) = f.until {
        push(&mut sql, "l.ts <", SqlValue::Integer(to_micros(&t)), params);
    }
    if let Some(c) = &f.cohort {
        push(&mut sql, "l.cohort =", SqlValue::Text(c.clone()), params);
    }
    if with_scores && let Some(e) = &f.evaluator {
        params.push(SqlValue::Text(e.clone()));
        sql.push_str(&format!(
            " AND s.evaluator_id = (SELECT evaluator_id FROM evaluators WHERE name = ?{})",
            params.len()
        ));
    }
    for (k, v) in &f.metadata {
        let expr = metadata_expr(k, params);
        push(&mut sql, &format!("{expr} ="), SqlValue::Text(v.clone()), params);
    }
    sql
}

/// The scored-requests query of [`Store::scored_requests`] and its parameters; the caller
/// appends the chunk's `log_id` bounds as the last two parameters. `lean` (for
/// [`Store::scored_columns`]) leaves out the time and the count of scored events, which cost a
/// second evaluation of the event-score expression per feedback event.
fn scored_sql(q: &ScoredQuery, lean: bool) -> (String, Vec<SqlValue>) {
    let mut params = policy_params(&q.policy);
    let group = match &q.group_key {
        Some(k) => metadata_expr(k, &mut params),
        None => "NULL".into(),
    };
    let (text, text_join) = if q.with_text {
        ("t.prompt, t.output, t.metadata", " CROSS JOIN log_texts t")
    } else {
        ("NULL, NULL, NULL", "")
    };
    let text_cond = if q.with_text { " AND t.log_id = l.log_id" } else { "" };
    let cond = filter_sql(&q.filter, true, &mut params);
    let order = match q.limit {
        Some(n) => {
            params.push(SqlValue::Integer(n as i64));
            format!(" ORDER BY l.request_id, e.name LIMIT ?{}", params.len())
        }
        None => String::new(),
    };
    let (lo, hi) = (params.len() + 1, params.len() + 2);
    let (ts, count) = if lean { ("0", "0".to_string()) } else { ("l.ts", format!("COUNT({EVENT_SCORE_SQL})")) };
    // The feedback aggregate comes in log_id order from its covering index and drives
    // integer-key lookups into the narrow log table and the scores (CROSS JOIN fixes that
    // order). Without a limit the rows are sorted by the caller, and a large store is read in
    // log_id chunks on several connections at once.
    let sql = format!(
        "WITH h AS (
            SELECT f.log_id, AVG({EVENT_SCORE_SQL}) AS human, {count} AS n
            FROM feedback_events f WHERE f.log_id BETWEEN ?{lo} AND ?{hi} GROUP BY f.log_id
         )
         SELECT l.request_id, {ts}, e.name, s.overall, h.human, h.n, l.cohort, l.use_case, {group}, {text}
         FROM h CROSS JOIN eval_logs l CROSS JOIN evaluators e CROSS JOIN eval_scores s{text_join}
         WHERE l.log_id = h.log_id AND s.evaluator_id = e.evaluator_id AND s.log_id = h.log_id
             AND h.human IS NOT NULL{text_cond}{cond}
         {order}"
    );
    (sql, params)
}

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
        let err = self.err();
        let mut out = BatchOutcome::default();
        let mut log_stmt = self
            .conn
            .prepare_cached(
                "INSERT INTO eval_logs (request_id, ts, feedback_collected, cohort, user_id, use_case, prompt_version)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT(request_id) DO NOTHING",
            )
            .map_err(&err)?;
        let mut text_stmt = self
            .conn
            .prepare_cached("INSERT INTO log_texts (log_id, prompt, output, metadata) VALUES (?1, ?2, ?3, ?4)")
            .map_err(&err)?;
        let mut score_stmt = self
            .conn
            .prepare_cached(
                "INSERT INTO eval_scores (evaluator_id, log_id, overall) VALUES (?1, ?2, ?3)
                 ON CONFLICT(evaluator_id, log_id) DO NOTHING",
            )
            .map_err(&err)?;
        let mut others_stmt = self
            .conn
            .prepare_cached("INSERT INTO log_scores (log_id, evaluator_id, scores) VALUES (?1, ?2, ?3)")
            .map_err(&err)?;
        // Feedback that came before its log is attached to it here; when there is none (the
        // usual case, read from the small partial index), the per-log update is skipped.
        let orphans: bool = self
            .conn
            .query_row("SELECT EXISTS (SELECT 1 FROM feedback_events WHERE log_id IS NULL)", [], |r| r.get(0))
            .map_err(&err)?;
        let mut attach = self
            .conn
            .prepare_cached("UPDATE feedback_events SET log_id = ?1 WHERE request_id = ?2 AND log_id IS NULL")
            .map_err(&err)?;
        for l in logs {
            let n = log_stmt
                .execute(params![
                    l.request_id,
                    to_micros(&l.timestamp),
                    l.feedback_collected,
                    l.meta_str("user_cohort"),
                    l.meta_str("user_id"),
                    l.meta_str("use_case"),
                    l.meta_str("prompt_version"),
                ])
                .map_err(&err)?;
            if n == 0 {
                out.duplicate += 1;
                continue;
            }
            out.stored += 1;
            let log_id = self.conn.last_insert_rowid();
            let metadata = serde_json::to_string(&l.metadata).unwrap_or_else(|_| "{}".into());
            text_stmt.execute(params![log_id, l.prompt, l.output, metadata]).map_err(&err)?;
            // After last_insert_rowid: a new evaluator's id is an insert too.
            let evaluator_id = self.evaluator_id(&l.evaluator)?;
            score_stmt.execute(params![evaluator_id, log_id, l.overall()]).map_err(&err)?;
            let others: BTreeMap<&str, f64> =
                l.eval_scores.iter().filter(|(k, _)| k.as_str() != "overall").map(|(k, v)| (k.as_str(), *v)).collect();
            if !others.is_empty() {
                let others = serde_json::to_string(&others).unwrap_or_else(|_| "{}".into());
                others_stmt.execute(params![log_id, evaluator_id, others]).map_err(&err)?;
            }
            if orphans {
                attach.execute(params![log_id, l.request_id]).map_err(&err)?;
            }
        }
        Ok(out)
    }

    fn insert_feedback(&mut self, events: &[FeedbackEvent]) -> StoreResult<BatchOutcome> {
        let err = self.err();
        let mut out = BatchOutcome::default();
        let mut stmt = self
            .conn
            .prepare_cached(
                "INSERT INTO feedback_events (event_id, request_id, log_id, feedback_type, value_num, value_text,
                     user_id, ts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT(event_id) DO NOTHING",
            )
            .map_err(&err)?;
        let mut dim_stmt = self
            .conn
            .prepare_cached(
                "INSERT INTO dimension_ratings (event_id, request_id, dimension, value_num, user_id, ts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(event_id) DO NOTHING",
            )
            .map_err(&err)?;
        let mut log_id =
            self.conn.prepare_cached("SELECT log_id FROM eval_logs WHERE request_id = ?1").map_err(&err)?;
        for e in events {
            let text = match &e.value {
                FeedbackValue::Text(t) => Some(t.as_str()),
                _ => None,
            };
            let id: Option<i64> = log_id.query_row([&e.request_id], |r| r.get(0)).optional().map_err(&err)?;
            let n = match &e.dimension {
                Some(d) => dim_stmt.execute(params![
                    e.event_id,
                    e.request_id,
                    d,
                    e.value.as_number(),
                    e.user_id,
                    to_micros(&e.timestamp),
                ]),
                None => stmt.execute(params![
                    e.event_id,
                    e.request_id,
                    id,
                    e.feedback_type.as_str(),
                    e.value.as_number(),
                    text,
                    e.user_id,
                    to_micros(&e.timestamp),
                ]),
            }
            .map_err(&err)?;
            if n == 0 {
                out.duplicate += 1;
                continue;
            }
            out.stored += 1;
            if id.is_none() {
                out.orphaned += 1;
            }
        }
        Ok(out)
    }

    fn insert_scores(&mut self, evaluator: &str, scores: &[(String, f64)]) -> StoreResult<BatchOutcome> {
        let err = self.err();
        let mut out = BatchOutcome::default();
        let mut stmt = self
            .conn
            .prepare_cached(
                "INSERT INTO eval_scores (evaluator_id, log_id, overall)
                 SELECT ?2, l.log_id, ?3 FROM eval_logs l WHERE l.request_id = ?1
                 ON CONFLICT(evaluator_id, log_id) DO UPDATE SET overall = excluded.overall",
            )
            .map_err(&err)?;
        let evaluator = self.evaluator_id(evaluator)?;
        for (id, score) in scores {
            if stmt.execute(params![id, evaluator, score]).map_err(&err)? == 0 {
                out.orphaned += 1;
            } else {
                out.stored += 1;
            }
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
                "SELECT event_id, feedback_type, value_num, value_text, user_id, ts FROM feedback_events
                 WHERE log_id = (SELECT log_id FROM eval_logs WHERE request_id = ?1)
                 UNION ALL
                 SELECT event_id, feedback_type, value_num, value_text, user_id, ts FROM feedback_events
                 WHERE log_id IS NULL AND request_id = ?1
                 ORDER BY ts, event_id",
            )
            .map_err(self.err())?;
        let rows = s
            .query_map([request_id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<f64>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            })
            .map_err(self.err())?;
        let mut out = Vec::new();
        for row in rows {
            out.push(super::stored_event(request_id, row.map_err(self.err())?)?);
        }
        Ok(out)
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
        let (sql, params) = scored_sql(q, false);
        let run = |conn: &Connection, a: i64, b: i64| -> rusqlite::Result<Vec<ScoredRequest>> {
            // Reserving the row bound once spares the copies and fresh pages of a doubling
            // vector of large rows.
            let events = chunk_row_bound(conn, a, b)?;
            let mut params = params.clone();
            params.extend([SqlValue::Integer(a), SqlValue::Integer(b)]);
            let mut stmt = conn.prepare(&sql)?;
            let mut out = Vec::with_capacity(q.limit.map_or(events, |n| events.min(n as i64)).max(0) as usize);
            for row in stmt.query_map(params_from_iter(params.iter()), scored_row)? {
                out.push(row?);
            }
            Ok(out)
        };
        if q.limit.is_some() {
            return run(&self.conn, i64::MIN, i64::MAX).map_err(self.err());
        }
        // Appending to the first chunk's vector (reserved for every chunk) copies only the
        // other chunks' rows, where a fresh vector would copy all of them into fresh pages.
        let mut chunks = self.on_chunks(run)?.into_iter();
        let mut rows = chunks.next().unwrap_or_default();
        for chunk in chunks {
            rows.extend(chunk);
        }
        rows.sort_unstable_by(|a, b| (&a.request_id, &a.evaluator).cmp(&(&b.request_id, &b.evaluator)));
        Ok(rows)
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
        let rows = stmt
            .query_map(params_from_iter(dimensions.iter()), |r| {
                Ok(DimensionScore {
                    request_id: r.get(0)?,
                    dimension: r.get(1)?,
                    mean: r.get(2)?,
                    ratings: r.get::<_, i64>(3)? as u64,
                })
            })
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    fn scored_columns(&self, q: &ScoredQuery) -> StoreResult<ScoredColumns> {
        if q.with_text || q.limit.is_some() {
            return Ok(ScoredColumns::from_rows(
                &self.scored_requests(&ScoredQuery { with_text: false, ..q.clone() })?,
            ));
        }
        let (sql, params) = scored_sql(q, true);
        let run = |conn: &Connection, a: i64, b: i64| -> rusqlite::Result<ScoredColumns> {
            let events = chunk_row_bound(conn, a, b)?;
            let mut params = params.clone();
            params.extend([SqlValue::Integer(a), SqlValue::Integer(b)]);
            let mut stmt = conn.prepare(&sql)?;
            let mut rows = stmt.query(params_from_iter(params.iter()))?;
            let mut out = ScoredColumns::with_capacity(events.max(0) as usize);
            while let Some(r) = rows.next()? {
                out.push(ScoredRow {
                    request_id: r.get_ref(0)?.as_str()?,
                    evaluator: r.get_ref(2)?.as_str()?,
                    eval_score: r.get(3)?,
                    human_score: r.get(4)?,
                    cohort: r.get_ref(6)?.as_str_or_null()?,
                    use_case: r.get_ref(7)?.as_str_or_null()?,
                    group: r.get_ref(8)?.as_str_or_null()?,
                });
            }
            Ok(out)
        };
        let mut chunks = self.on_chunks(run)?.into_iter();
        let mut cols = chunks.next().unwrap_or_default();
        for chunk in chunks {
            cols.append(&chunk);
        }
        cols.sort_by_request();
        Ok(cols)
    }

    fn cohort_stats(&self, filter: &Filter, policy: &HumanPolicy) -> StoreResult<Vec<CohortStats>> {
        // Per window of log_ids: first each log's cohort, as a code in an array indexed by
        // log_id; then the scores and the feedback aggregate in log_id order, each row looking
        // its cohort up there. A constant number of queries per window and no per-log seeks.
        //
        // Without a time or metadata filter the cohorts come from the cohort index, one range
        // per cohort value (its log_ids in order, no text per row); otherwise from a scan of
        // the narrow logs with the filter.
        let by_index = filter.since.is_none() && filter.until.is_none() && filter.metadata.is_empty();
        let mut log_params = Vec::new();
        let cond = filter_sql(&Filter { evaluator: None, ..filter.clone() }, false, &mut log_params);
        let logs_sql = format!(
            "SELECT l.log_id, l.cohort FROM eval_logs l WHERE l.log_id BETWEEN ?{} AND ?{}{cond} ORDER BY l.log_id",
            log_params.len() + 1,
            log_params.len() + 2
        );
        // One evaluator's scores are one range of the primary key (evaluator_id, log_id): one
        // scan per evaluator (the named one, or each in the store), merged here by log_id, and a
        // request's score is the mean over its evaluators (a `GROUP BY log_id` over the whole
        // table would sort all of it, for each chunk).
        let scores_sql = "SELECT log_id, overall FROM eval_scores
             WHERE evaluator_id = ?3 AND log_id BETWEEN ?1 AND ?2 ORDER BY log_id";
        let evaluator_ids: Vec<i64> = {
            let (sql, p) = match &filter.evaluator {
                Some(e) => ("SELECT evaluator_id FROM evaluators WHERE name = ?1", vec![SqlValue::Text(e.clone())]),
                None => ("SELECT evaluator_id FROM evaluators ORDER BY evaluator_id", Vec::new()),
            };
            let mut stmt = self.conn.prepare(sql).map_err(self.err())?;
            stmt.query_map(params_from_iter(p.iter()), |r| r.get(0))
                .map_err(self.err())?
                .collect::<Result<_, _>>()
                .map_err(self.err())?
        };
        let feedback_sql = format!(
            "SELECT f.log_id, MAX(f.feedback_type LIKE 'explicit%'), MAX(f.feedback_type LIKE 'implicit%'),
                    AVG({EVENT_SCORE_SQL})
             FROM feedback_events f WHERE f.log_id BETWEEN ?6 AND ?7 GROUP BY f.log_id ORDER BY f.log_id"
        );
        let policy_params = policy_params(policy);
        let good_min = policy.good_min;
        let window_len = self.cohort_window.max(1);
        let run = |conn: &Connection, a: i64, b: i64| -> rusqlite::Result<Vec<(Option<String>, CohortAcc)>> {
            // All windows read one snapshot (a reader's own transaction; on this connection,
            // the caller's when one is open).
            let _snapshot = match conn.is_autocommit() {
                true => Some(rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Deferred)?),
                false => None,
            };
            let (lo, hi): (Option<i64>, Option<i64>) = conn.query_row(
                "SELECT (SELECT log_id FROM eval_logs WHERE log_id >= ?1 ORDER BY log_id LIMIT 1),
                        (SELECT log_id FROM eval_logs WHERE log_id <= ?2 ORDER BY log_id DESC LIMIT 1)",
                [a, b],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let (Some(lo), Some(hi)) = (lo, hi) else { return Ok(Vec::new()) };
            // The cohort values to read from the index (`None`: scan the logs instead).
            let values = match (&filter.cohort, by_index) {
                (_, false) => None,
                (Some(c), true) => Some(vec![Some(c.as_bytes().to_vec())]),
                (None, true) => cohort_values(conn)?,
            };
            let mut cohorts = CohortCodes::default();
            if let Some(values) = &values {
                for v in values {
                    cohorts.code_of(v.as_deref());
                }
            }
            let span = (hi - lo).saturating_add(1).min(window_len);
            let mut codes: Vec<u32> = vec![NO_COHORT; span as usize];
            let mut next = Some(lo);
            while let Some(w0) = next.filter(|&w| w <= hi) {
                let w1 = w0.saturating_add(window_len - 1).min(hi);
                next = w1.checked_add(1);
                let window = [SqlValue::Integer(w0), SqlValue::Integer(w1)];
                codes.fill(NO_COHORT);
                let len = (w1 - w0 + 1) as usize;
                let slot = move |id: i64| usize::try_from(id - w0).ok().filter(|&i| i < len);
                match &values {
                    Some(values) => {
                        for (code, v) in values.iter().enumerate() {
                            let mut logs = match v {
                                Some(t) => RawStmt::new(
                                    conn,
                                    "SELECT log_id FROM eval_logs WHERE cohort = ?3 AND log_id BETWEEN ?1 AND ?2
                                     ORDER BY log_id",
                                    &[window[0].clone(), window[1].clone(), utf8(t)],
                                )?,
                                None => RawStmt::new(
                                    conn,
                                    "SELECT log_id FROM eval_logs WHERE cohort IS NULL AND log_id BETWEEN ?1 AND ?2
                                     ORDER BY log_id",
                                    &window,
                                )?,
                            };
                            let acc = &mut cohorts.accs[code];
                            while logs.step()? {
                                if let Some(i) = slot(logs.int(0)) {
                                    codes[i] = code as u32;
                                    acc.requests += 1;
                                }
                            }
                        }
                    }
                    None => {
                        let mut lp = log_params.clone();
                        lp.extend(window.clone());
                        let mut logs = RawStmt::new(conn, &logs_sql, &lp)?;
                        while logs.step()? {
                            if let Some(i) = slot(logs.int(0)) {
                                let code = cohorts.code_of(logs.text(1));
                                codes[i] = code as u32;
                                cohorts.accs[code].requests += 1;
                            }
                        }
                    }
                }
                // The scores and feedback are read between the first and the last log coded (a
                // rare cohort's or time range's logs may fill few windows, or a small part of one).
                let coded = codes[..len]
                    .iter()
                    .position(|&c| c != NO_COHORT)
                    .zip(codes[..len].iter().rposition(|&c| c != NO_COHORT));
                let Some((first, last)) = coded else { continue };
                let coded = [SqlValue::Integer(w0 + first as i64), SqlValue::Integer(w0 + last as i64)];
                let code_at = |id: i64| slot(id).map(|i| codes[i]).filter(|&c| c != NO_COHORT);
                // Each evaluator's cursor and its current (log_id, overall), None once exhausted.
                let mut scores = Vec::with_capacity(evaluator_ids.len());
                for &e in &evaluator_ids {
                    let mut stmt = RawStmt::new(conn, scores_sql, &[coded[0].clone(), coded[1].clone(), e.into()])?;
                    let head = next_score(&mut stmt)?;
                    scores.push((stmt, head));
                }
                // Log by log in log_id order: the mean of its evaluators' scores.
                while let Some(log_id) = scores.iter().filter_map(|(_, h)| h.map(|(id, _)| id)).min() {
                    let (mut sum, mut n) = (0.0, 0u32);
                    for (rows, head) in scores.iter_mut() {
                        if let Some((id, v)) = *head
                            && id == log_id
                        {
                            sum += v;
                            n += 1;
                            *head = next_score(rows)?;
                        }
                    }
                    if let Some(code) = code_at(log_id) {
                        let acc = &mut cohorts.accs[code as usize];
                        acc.score_sum.add(sum / f64::from(n));
                        acc.scored += 1;
                    }
                }
                let mut fp = policy_params.clone();
                fp.extend(coded);
                let mut fb = RawStmt::new(conn, &feedback_sql, &fp)?;
                while fb.step()? {
                    let Some(code) = code_at(fb.int(0)) else { continue };
                    let acc = &mut cohorts.accs[code as usize];
                    acc.with_feedback += 1;
                    acc.with_explicit += fb.int(1) as u64;
                    acc.with_implicit += fb.int(2) as u64;
                    if let Some(h) = fb.opt_real(3) {
                        acc.with_human_score += 1;
                        acc.positive += u64::from(h >= good_min);
                    }
                }
            }
            Ok(cohorts.into_named())
        };
        let mut merged: BTreeMap<Option<String>, CohortAcc> = BTreeMap::new();
        for (cohort, acc) in self.on_chunks(run)?.into_iter().flatten() {
            merged.entry(cohort).or_default().merge(&acc);
        }
        Ok(merged
            .into_iter()
            .map(|(cohort, a)| CohortStats {
                cohort,
                requests: a.requests,
                with_feedback: a.with_feedback,
                with_explicit: a.with_explicit,
                with_implicit: a.with_implicit,
                with_human_score: a.with_human_score,
                positive: a.positive,
                mean_eval_score: (a.scored > 0).then(|| a.score_sum.value() / a.scored as f64),
            })
            .collect())
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

    fn request_ids(&self, filter: &Filter) -> StoreResult<Vec<String>> {
        let mut params = Vec::new();
        let cond = filter_sql(filter, true, &mut params);
        let join = if filter.evaluator.is_some() { "JOIN eval_scores s ON s.log_id = l.log_id" } else { "" };
        let sql = format!("SELECT l.request_id FROM eval_logs l {join} WHERE 1 = 1{cond} ORDER BY l.request_id");
        let mut stmt = self.conn.prepare(&sql).map_err(self.err())?;
        let rows = stmt.query_map(params_from_iter(params.iter()), |r| r.get(0)).map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    fn request_texts(&self, ids: &[String]) -> StoreResult<Vec<(String, RequestText)>> {
        ids.iter().map(|id| Ok((id.clone(), self.text_of(id)?))).collect()
    }

    fn save_run(&mut self, r: &RunRecord) -> StoreResult<()> {
        let js = |v: &Option<serde_json::Value>| v.as_ref().map(|v| v.to_string());
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
                    js(&r.dataset_card),
                    js(&r.metrics)
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
        let parse = |t: Option<String>| t.and_then(|t| serde_json::from_str(&t).ok());
        let rows = s
            .query_map([], |r| {
                Ok(RunRecord {
                    id: r.get(0)?,
                    started_at: r.get(1)?,
                    finished_at: r.get(2)?,
                    config_hash: r.get(3)?,
                    status: r.get(4)?,
                    decision: r.get(5)?,
                    run_dir: r.get(6)?,
                    model_path: r.get(7)?,
                    dataset_card: parse(r.get(8)?),
                    metrics: parse(r.get(9)?),
                })
            })
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }
}

impl SqliteStore {
    /// The `evaluator_id` of an evaluator name, added to `evaluators` when new.
    fn evaluator_id(&self, name: &str) -> StoreResult<i64> {
        if let Some(&id) = self.evaluator_ids.borrow().get(name) {
            return Ok(id);
        }
        let err = self.err();
        let mut add = self
            .conn
            .prepare_cached("INSERT INTO evaluators (name) VALUES (?1) ON CONFLICT(name) DO NOTHING")
            .map_err(&err)?;
        add.execute([name]).map_err(&err)?;
        let mut get = self.conn.prepare_cached("SELECT evaluator_id FROM evaluators WHERE name = ?1").map_err(&err)?;
        let id: i64 = get.query_row([name], |r| r.get(0)).map_err(&err)?;
        self.evaluator_ids.borrow_mut().insert(name.to_string(), id);
        Ok(id)
    }

    /// `(key, count)` pairs from a two-column query.
    fn counted<K: rusqlite::types::FromSql>(&self, sql: &str) -> StoreResult<Vec<(K, u64)>> {
        let mut s = self.conn.prepare(sql).map_err(self.err())?;
        let rows = s.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64))).map_err(self.err())?;
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
            Some(r) => Ok(RequestText {
                prompt: r.get(0).map_err(self.err())?,
                output: r.get(1).map_err(self.err())?,
                metadata: r.get(2).map_err(self.err())?,
            }),
            None => Err(StoreError::Invalid(format!("no log for request {id:?}"))),
        }
    }
}

/// The number of rows to reserve for the scored requests of the `log_id` chunk `[a, b]`: its
/// feedback event count, which bounds the rows of one evaluator. The first chunk's buffer
/// receives the other chunks' rows too, so its bound covers all of them (`on_chunks` gives the
/// first chunk `a = i64::MIN`).
fn chunk_row_bound(conn: &Connection, a: i64, b: i64) -> rusqlite::Result<i64> {
    let upper = if a == i64::MIN { i64::MAX } else { b };
    conn.query_row("SELECT COUNT(*) FROM feedback_events WHERE log_id BETWEEN ?1 AND ?2", [a, upper], |r| r.get(0))
}

/// The next `(log_id, overall)` of a scores cursor, `None` once it is exhausted.
fn next_score(rows: &mut RawStmt<'_>) -> rusqlite::Result<Option<(i64, f64)>> {
    Ok(rows.step()?.then(|| (rows.int(0), rows.real(1))))
}

/// One row of the scored-requests query.
fn scored_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ScoredRequest> {
    let prompt: Option<String> = r.get(9)?;
    let text = match prompt {
        Some(prompt) => Some(Box::new(RequestText { prompt, output: r.get(10)?, metadata: r.get(11)? })),
        None => None,
    };
    Ok(ScoredRequest {
        request_id: r.get(0)?,
        timestamp_us: r.get(1)?,
        evaluator: r.get(2)?,
        eval_score: r.get(3)?,
        human_score: r.get(4)?,
        n_scored_events: r.get::<_, i64>(5)? as u64,
        cohort: r.get(6)?,
        use_case: r.get(7)?,
        group: r.get(8)?,
        text,
    })
}

/// A compensated (Kahan-Babuska-Neumaier) sum, as SQLite's own `SUM` and `AVG` keep it.
#[derive(Debug, Clone, Copy, Default)]
struct KbnSum {
    sum: f64,
    err: f64,
}

impl KbnSum {
    fn add(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.err += (self.sum - t) + x;
        } else {
            self.err += (x - t) + self.sum;
        }
        self.sum = t;
    }

    fn merge(&mut self, o: &KbnSum) {
        self.add(o.sum);
        self.err += o.err;
    }

    fn value(&self) -> f64 {
        self.sum + self.err
    }
}

/// Per-cohort counts of [`Store::cohort_stats`] for one chunk of logs; chunks merge exactly.
#[derive(Debug, Clone, Copy, Default)]
struct CohortAcc {
    requests: u64,
    with_feedback: u64,
    with_explicit: u64,
    with_implicit: u64,
    with_human_score: u64,
    positive: u64,
    scored: u64,
    score_sum: KbnSum,
}

impl CohortAcc {
    fn merge(&mut self, o: &CohortAcc) {
        self.requests += o.requests;
        self.with_feedback += o.with_feedback;
        self.with_explicit += o.with_explicit;
        self.with_implicit += o.with_implicit;
        self.with_human_score += o.with_human_score;
        self.positive += o.positive;
        self.scored += o.scored;
        self.score_sum.merge(&o.score_sum);
    }
}

/// How many log_ids `cohort_stats` codes at once: the window's array of cohort codes is 4 MiB.
const COHORT_WINDOW: i64 = 1 << 20;

/// The code of a log_id in the window that is not in the filtered logs.
const NO_COHORT: u32 = u32::MAX;

/// At most this many cohort values are read one index range each; more, and the logs are
/// scanned instead.
const MAX_COHORT_RANGES: usize = 256;

/// The distinct values of `eval_logs.cohort` (`None` for NULL), in index order, found by one
/// index seek each; `None` when they are more than [`MAX_COHORT_RANGES`] or any is not valid
/// text (the index ranges would then not cover every log exactly as the scan does).
fn cohort_values(conn: &Connection) -> rusqlite::Result<Option<Vec<Option<Vec<u8>>>>> {
    let mut values = Vec::new();
    let has_null = conn.query_row("SELECT EXISTS (SELECT 1 FROM eval_logs WHERE cohort IS NULL)", [], |r| r.get(0))?;
    if has_null {
        values.push(None);
    }
    let mut first =
        RawStmt::new(conn, "SELECT cohort FROM eval_logs WHERE cohort IS NOT NULL ORDER BY cohort LIMIT 1", &[])?;
    let mut next = match first.step()? {
        true => first.text(0).map(<[u8]>::to_vec),
        false => return Ok(Some(values)),
    };
    loop {
        let Some(v) = next.take() else { return Ok(None) };
        if values.len() >= MAX_COHORT_RANGES || std::str::from_utf8(&v).is_err() {
            return Ok(None);
        }
        let mut after =
            RawStmt::new(conn, "SELECT cohort FROM eval_logs WHERE cohort > ?1 ORDER BY cohort LIMIT 1", &[utf8(&v)])?;
        values.push(Some(v));
        if !after.step()? {
            return Ok(Some(values));
        }
        next = after.text(0).map(<[u8]>::to_vec);
    }
}

/// A cohort value (valid UTF-8: [`cohort_values`] checks) as a text parameter.
fn utf8(v: &[u8]) -> SqlValue {
    SqlValue::Text(String::from_utf8_lossy(v).into_owned())
}

/// The cohorts of one `cohort_stats` chunk: value (bytes; `None` for NULL and non-text) ->
/// code, and each code's counts.
#[derive(Default)]
struct CohortCodes {
    values: Vec<Option<Vec<u8>>>,
    accs: Vec<CohortAcc>,
    last: usize,
}

impl CohortCodes {
    /// The code of a cohort value, added when new; the previous row's cohort is tried first.
    fn code_of(&mut self, v: Option<&[u8]>) -> usize {
        if self.last < self.values.len() && self.values[self.last].as_deref() == v {
            return self.last;
        }
        self.last = match self.values.iter().position(|c| c.as_deref() == v) {
            Some(i) => i,
            None => {
                self.values.push(v.map(<[u8]>::to_vec));
                self.accs.push(CohortAcc::default());
                self.values.len() - 1
            }
        };
        self.last
    }

    /// The cohorts that had logs in the chunk, named.
    fn into_named(self) -> Vec<(Option<String>, CohortAcc)> {
        self.values
            .into_iter()
            .zip(self.accs)
            .filter(|(_, a)| a.requests > 0)
            .map(|(v, a)| (v.map(|t| String::from_utf8_lossy(&t).into_owned()), a))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::EvalLog;
    use chrono::Utc;
    use serde_json::json;

    fn log(id: &str, cohort: &str, overall: f64) -> EvalLog {
        EvalLog::from_json(
            json!({"request_id": id, "timestamp": "2026-05-15T10:00:00Z", "prompt": "p", "output": "o",
                    "eval_scores": {"overall": overall}, "metadata": {"user_cohort": cohort, "group_id": "g"}}),
            false,
        )
        .unwrap()
    }

    fn fb(id: &str, t: &str, v: serde_json::Value) -> FeedbackEvent {
        FeedbackEvent::from_json(json!({"request_id": id, "feedback_type": t, "value": v}), false, Utc::now()).unwrap()
    }

    #[test]
    fn scored_requests_average_all_explicit_events() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        s.begin().unwrap();
        s.insert_logs(&[log("a", "free", 0.9), log("b", "pro", 0.2), log("c", "pro", 0.5)]).unwrap();
        let o = s
            .insert_feedback(&[
                fb("a", "explicit_thumbs_up", json!(true)),
                fb("a", "explicit_rating", json!(2)),
                fb("b", "explicit_thumbs_down", json!(true)),
                fb("c", "implicit_discard", json!(true)),
                fb("zzz", "explicit_rating", json!(3)),
            ])
            .unwrap();
        s.commit().unwrap();
        assert_eq!(o, BatchOutcome { stored: 5, duplicate: 0, orphaned: 1 });
        let q = ScoredQuery { group_key: Some("group_id".into()), ..Default::default() };
        let rows = s.scored_requests(&q).unwrap();
        assert_eq!(rows.len(), 2, "c has only an unmapped implicit event; zzz is orphaned");
        assert_eq!(rows[0].human_score, 3.5);
        assert_eq!(rows[0].group.as_deref(), Some("g"));
        assert_eq!(rows[1].human_score, 1.0);
        let policy = HumanPolicy { implicit_discard: Some(2.0), ..Default::default() };
        let rows = s.scored_requests(&ScoredQuery { policy, ..Default::default() }).unwrap();
        assert_eq!(rows.len(), 3);
        let cs = s.cohort_stats(&Filter::default(), &HumanPolicy::default()).unwrap();
        assert_eq!(cs.len(), 2);
        assert_eq!((cs[1].requests, cs[1].with_feedback, cs[1].with_implicit), (2, 2, 1));
    }

    /// Logs over three cohorts (and none), two evaluators, metadata keys; feedback of every
    /// kind, one orphan.
    fn fixture() -> (Vec<EvalLog>, Vec<FeedbackEvent>, Vec<(String, f64)>) {
        let cohorts = ["free", "pro", "enterprise", ""];
        let logs: Vec<EvalLog> = (0..40)
            .map(|i| {
                let mut l = log(&format!("r{:03}", (i * 7) % 40), cohorts[i % 4], (i as f64 * 0.37) % 1.0);
                if i % 4 == 3 {
                    l.metadata.remove("user_cohort");
                }
                l.metadata.insert("tier".into(), json!(format!("t{}", i % 3)));
                l
            })
            .collect();
        let kinds = [
            ("explicit_thumbs_up", json!(true)),
            ("explicit_thumbs_down", json!(true)),
            ("explicit_rating", json!(4)),
            ("explicit_rating", json!(1)),
            ("explicit_text_comment", json!("hm")),
            ("implicit_usage", json!(true)),
            ("implicit_discard", json!(false)),
        ];
        let mut events: Vec<FeedbackEvent> = (0..60)
            .map(|j| {
                let (t, v) = &kinds[j % kinds.len()];
                let mut e = fb(&format!("r{:03}", (j * 11) % 37), t, v.clone());
                e.event_id = format!("e{j:03}");
                e
            })
            .collect();
        let mut orphan = fb("zzz", "explicit_rating", json!(3));
        orphan.event_id = "e-orphan".into();
        events.push(orphan);
        let second: Vec<(String, f64)> =
            (0..40).step_by(3).map(|i| (format!("r{i:03}"), (i as f64 * 0.11) % 1.0)).collect();
        (logs, events, second)
    }

    fn load(s: &mut SqliteStore, logs: &[EvalLog], events: &[FeedbackEvent], second: &[(String, f64)]) {
        s.begin().unwrap();
        s.insert_logs(logs).unwrap();
        s.insert_feedback(events).unwrap();
        s.insert_scores("judge-v2", second).unwrap();
        s.commit().unwrap();
    }

    /// Everything the analyses read, as JSON (the store's location left out).
    fn answers(s: &SqliteStore) -> serde_json::Value {
        let judge = Filter { evaluator: Some("judge-v2".into()), ..Default::default() };
        let tier = Filter { metadata: vec![("tier".into(), "t1".into())], ..Default::default() };
        let policy = HumanPolicy { implicit_usage: Some(4.0), ..Default::default() };
        let queries = [
            ScoredQuery::default(),
            ScoredQuery {
                filter: judge.clone(),
                with_text: true,
                group_key: Some("tier".into()),
                ..Default::default()
            },
            ScoredQuery { filter: tier.clone(), policy: policy.clone(), limit: Some(3), ..Default::default() },
            ScoredQuery { filter: Filter { cohort: Some("pro".into()), ..Default::default() }, ..Default::default() },
        ];
        let mut stats = s.stats().unwrap();
        stats.location.clear();
        let ids = s.request_ids(&Filter::default()).unwrap();
        let feedback = ["r000", "zzz"].map(|id| format!("{:?}", s.feedback_for(id).unwrap()));
        json!({
            "scored": queries.iter().map(|q| s.scored_requests(q).unwrap()).collect::<Vec<_>>(),
            "cohorts": [
                s.cohort_stats(&Filter::default(), &HumanPolicy::default()).unwrap(),
                s.cohort_stats(&judge, &policy).unwrap(),
                s.cohort_stats(&tier, &HumanPolicy::default()).unwrap(),
            ],
            "eval_scores": [s.eval_scores(&Filter::default()).unwrap(), s.eval_scores(&judge).unwrap()],
            "ids": [&ids, &s.request_ids(&judge).unwrap()],
            "texts": s.request_texts(&ids).unwrap(),
            "feedback": feedback,
            "stats": stats,
        })
    }

    /// Writes the fixture with the version-3 schema and SQL, as the previous release did.
    fn write_v3(path: &Path, logs: &[EvalLog], events: &[FeedbackEvent], second: &[(String, f64)]) {
        let mut c = Connection::open(path).unwrap();
        let tx = c.transaction().unwrap();
        for sql in &MIGRATIONS[..3] {
            tx.execute_batch(sql).unwrap();
        }
        tx.execute_batch("PRAGMA user_version = 3").unwrap();
        for l in logs {
            let n = tx
                .execute(
                    "INSERT INTO eval_logs (request_id, ts, prompt, output, feedback_collected, cohort, user_id,
                         use_case, prompt_version, metadata)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT(request_id) DO NOTHING",
                    params![
                        l.request_id,
                        to_micros(&l.timestamp),
                        l.prompt,
                        l.output,
                        l.feedback_collected,
                        l.meta_str("user_cohort"),
                        l.meta_str("user_id"),
                        l.meta_str("use_case"),
                        l.meta_str("prompt_version"),
                        serde_json::to_string(&l.metadata).unwrap(),
                    ],
                )
                .unwrap();
            if n == 1 {
                tx.execute(
                    "INSERT INTO eval_scores (request_id, evaluator, overall, scores) VALUES (?1, ?2, ?3, '{}')",
                    params![l.request_id, l.evaluator, l.overall()],
                )
                .unwrap();
            }
        }
        for e in events {
            let text = match &e.value {
                FeedbackValue::Text(t) => Some(t.as_str()),
                _ => None,
            };
            tx.execute(
                "INSERT INTO feedback_events (event_id, request_id, feedback_type, value_num, value_text, user_id, ts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    e.event_id,
                    e.request_id,
                    e.feedback_type.as_str(),
                    e.value.as_number(),
                    text,
                    e.user_id,
                    to_micros(&e.timestamp)
                ],
            )
            .unwrap();
        }
        for (id, score) in second {
            tx.execute(
                "INSERT INTO eval_scores (request_id, evaluator, overall, scores) VALUES (?1, 'judge-v2', ?2, '{}')",
                params![id, score],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }

    #[test]
    fn version_3_store_migrates_and_answers_the_same() {
        let (logs, events, second) = fixture();
        let dir = tempfile::tempdir().unwrap();
        let mut fresh = SqliteStore::open(&dir.path().join("fresh.db")).unwrap();
        load(&mut fresh, &logs, &events, &second);
        let old = dir.path().join("old.db");
        write_v3(&old, &logs, &events, &second);
        let migrated = SqliteStore::open(&old).unwrap();
        assert_eq!(migrated.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(answers(&migrated), answers(&fresh));
        assert_eq!(migrated.stats().unwrap().orphaned_feedback, 1);
        // The migrated store keeps taking writes: the orphan's log arrives.
        let mut migrated = migrated;
        migrated.begin().unwrap();
        migrated.insert_logs(&[log("zzz", "pro", 0.3)]).unwrap();
        migrated.commit().unwrap();
        assert_eq!(migrated.stats().unwrap().orphaned_feedback, 0);
    }

    #[test]
    fn failed_migration_leaves_the_version_3_store_untouched() {
        let (logs, events, second) = fixture();
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old.db");
        write_v3(&old, &logs, &events, &second);
        // A table in the way of the migration makes it fail half-way through.
        Connection::open(&old).unwrap().execute_batch("CREATE TABLE eval_scores_v4 (x)").unwrap();
        assert!(SqliteStore::open(&old).is_err());
        let c = Connection::open(&old).unwrap();
        let version: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        let logs_v4: i64 = c
            .query_row("SELECT COUNT(*) FROM sqlite_master WHERE name IN ('eval_logs_v4', 'log_texts')", [], |r| {
                r.get(0)
            })
            .unwrap();
        let prompt: i64 =
            c.query_row("SELECT COUNT(*) FROM eval_logs WHERE prompt IS NOT NULL", [], |r| r.get(0)).unwrap();
        assert_eq!((version, logs_v4, prompt), (3, 0, 40));
    }

    /// Writes the fixture with the version-4 schema: version 3, then the 3 -> 4 step alone.
    fn write_v4(path: &Path, logs: &[EvalLog], events: &[FeedbackEvent], second: &[(String, f64)]) {
        write_v3(path, logs, events, second);
        let mut c = Connection::open(path).unwrap();
        let tx = c.transaction().unwrap();
        tx.execute_batch(MIGRATIONS[3]).unwrap();
        // An ingested log's other scores, as version 4 kept them beside `overall`.
        tx.execute_batch(
            "UPDATE eval_scores SET scores = '{\"coherence\":2.5}' WHERE evaluator = 'baseline'
                 AND log_id = (SELECT log_id FROM eval_logs WHERE request_id = 'r007');
             PRAGMA user_version = 4;",
        )
        .unwrap();
        tx.commit().unwrap();
    }

    #[test]
    fn version_4_store_migrates_and_answers_the_same() {
        let (logs, events, second) = fixture();
        let dir = tempfile::tempdir().unwrap();
        let mut fresh = SqliteStore::open(&dir.path().join("fresh.db")).unwrap();
        load(&mut fresh, &logs, &events, &second);
        let old = dir.path().join("old.db");
        write_v4(&old, &logs, &events, &second);
        let mut migrated = SqliteStore::open(&old).unwrap();
        assert_eq!(migrated.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(answers(&migrated), answers(&fresh));
        let others: Vec<(String, String, String)> = migrated
            .connection()
            .prepare(
                "SELECT l.request_id, e.name, o.scores FROM log_scores o JOIN eval_logs l ON l.log_id = o.log_id
                 JOIN evaluators e ON e.evaluator_id = o.evaluator_id",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(others, [("r007".to_string(), "baseline".to_string(), r#"{"coherence":2.5}"#.to_string())]);
        // The migrated store keeps taking writes, with a new evaluator and other scores.
        let mut extra = log("zzz", "pro", 0.3);
        extra.eval_scores.insert("fluency".into(), 0.25);
        migrated.begin().unwrap();
        migrated.insert_logs(&[extra]).unwrap();
        migrated.insert_scores("judge-v3", &[("zzz".into(), 0.75)]).unwrap();
        migrated.commit().unwrap();
        assert_eq!(migrated.evaluators().unwrap(), ["baseline", "judge-v2", "judge-v3"]);
        let stored: String = migrated
            .connection()
            .query_row(
                "SELECT scores FROM log_scores o JOIN eval_logs l USING (log_id) WHERE l.request_id = 'zzz'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(stored, r#"{"fluency":0.25}"#);
    }

    #[test]
    fn failed_migration_leaves_the_version_4_store_untouched() {
        let (logs, events, second) = fixture();
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old.db");
        write_v4(&old, &logs, &events, &second);
        Connection::open(&old).unwrap().execute_batch("CREATE TABLE eval_scores_v5 (x)").unwrap();
        assert!(SqliteStore::open(&old).is_err());
        let c = Connection::open(&old).unwrap();
        let version: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        let new_tables: i64 = c
            .query_row("SELECT COUNT(*) FROM sqlite_master WHERE name IN ('evaluators', 'log_scores')", [], |r| {
                r.get(0)
            })
            .unwrap();
        let scores: i64 = c.query_row("SELECT COUNT(scores) FROM eval_scores", [], |r| r.get(0)).unwrap();
        assert_eq!((version, new_tables, scores), (4, 0, 40 + second.len() as i64));
    }

    #[test]
    fn migration_from_version_3_is_one_transaction() {
        // The 3 -> 4 step succeeds, the 4 -> 5 step fails: the store stays at version 3.
        let (logs, events, second) = fixture();
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old.db");
        write_v3(&old, &logs, &events, &second);
        Connection::open(&old).unwrap().execute_batch("CREATE TABLE eval_scores_v5 (x)").unwrap();
        assert!(SqliteStore::open(&old).is_err());
        let c = Connection::open(&old).unwrap();
        let version: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        let v4_tables: i64 =
            c.query_row("SELECT COUNT(*) FROM sqlite_master WHERE name = 'log_texts'", [], |r| r.get(0)).unwrap();
        assert_eq!((version, v4_tables), (3, 0));
    }

    #[test]
    fn evaluator_added_in_a_rolled_back_transaction_is_added_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        s.begin().unwrap();
        s.insert_logs(&[log("a", "free", 0.9)]).unwrap();
        s.commit().unwrap();
        s.begin().unwrap();
        s.insert_scores("judge", &[("a".into(), 0.5)]).unwrap();
        s.rollback().unwrap();
        assert_eq!(s.evaluators().unwrap(), ["baseline"]);
        s.begin().unwrap();
        let o = s.insert_scores("judge", &[("a".into(), 0.25)]).unwrap();
        s.commit().unwrap();
        assert_eq!(o.stored, 1);
        assert_eq!(s.evaluators().unwrap(), ["baseline", "judge"]);
        let judge = Filter { evaluator: Some("judge".into()), ..Default::default() };
        assert_eq!(s.eval_scores(&judge).unwrap(), [0.25]);
    }

    #[test]
    fn chunked_reads_on_several_connections_answer_as_one() {
        let (logs, events, second) = fixture();
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        load(&mut s, &logs, &events, &second);
        let one = answers(&s);
        s.parallel_min_logs = 0;
        let chunks = s.log_id_chunks().unwrap();
        assert_eq!(chunks.len(), read_threads(), "the store is split when the machine has cores to spare");
        assert_eq!(answers(&s), one);
    }

    /// `cohort_stats` as one `GROUP BY` over the logs, written apart from the store's scans: the
    /// counts, and the mean score (SQLite's `AVG`, so compared within rounding).
    fn cohort_stats_by_sql(s: &SqliteStore, evaluator: Option<&str>, policy: &HumanPolicy) -> Vec<CohortStats> {
        let mut params = policy_params(policy);
        params.push(SqlValue::Real(policy.good_min));
        params.push(evaluator.map_or(SqlValue::Null, |e| SqlValue::Text(e.into())));
        let sql = format!(
            "WITH h AS (SELECT f.log_id, MAX(f.feedback_type LIKE 'explicit%') AS ex,
                     MAX(f.feedback_type LIKE 'implicit%') AS im, AVG({EVENT_SCORE_SQL}) AS human
                 FROM feedback_events f WHERE f.log_id IS NOT NULL GROUP BY f.log_id),
             sc AS (SELECT s.log_id, AVG(s.overall) AS score FROM eval_scores s JOIN evaluators e USING (evaluator_id)
                 WHERE ?7 IS NULL OR e.name = ?7 GROUP BY s.log_id)
             SELECT l.cohort, COUNT(*), COUNT(h.log_id), TOTAL(h.ex), TOTAL(h.im), COUNT(h.human),
                 TOTAL(h.human >= ?6), AVG(sc.score)
             FROM eval_logs l LEFT JOIN h ON h.log_id = l.log_id LEFT JOIN sc ON sc.log_id = l.log_id
             GROUP BY l.cohort ORDER BY l.cohort"
        );
        let mut stmt = s.connection().prepare(&sql).unwrap();
        let n = |r: &rusqlite::Row<'_>, i| r.get::<_, f64>(i).map(|x| x as u64);
        stmt.query_map(params_from_iter(params.iter()), |r| {
            Ok(CohortStats {
                cohort: r.get(0)?,
                requests: n(r, 1)?,
                with_feedback: n(r, 2)?,
                with_explicit: n(r, 3)?,
                with_implicit: n(r, 4)?,
                with_human_score: n(r, 5)?,
                positive: n(r, 6)?,
                mean_eval_score: r.get(7)?,
            })
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    #[test]
    fn cohort_stats_from_index_ranges_windows_and_chunks_equal_the_log_scan() {
        let (mut logs, events, second) = fixture();
        // An empty cohort value (not NULL) and a log with no scores' evaluator but the first.
        logs.push(log("r100", "", 0.25));
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        load(&mut s, &logs, &events, &second);
        let usage = HumanPolicy { implicit_usage: Some(4.0), ..Default::default() };
        let early = Some(chrono::DateTime::<Utc>::from_timestamp(0, 0).unwrap());
        let filters = [
            Filter::default(),
            Filter { evaluator: Some("judge-v2".into()), ..Default::default() },
            Filter { cohort: Some("pro".into()), ..Default::default() },
            Filter { cohort: Some(String::new()), ..Default::default() },
            Filter { cohort: Some("nobody".into()), ..Default::default() },
        ];
        let all = |s: &SqliteStore| -> Vec<Vec<CohortStats>> {
            filters
                .iter()
                .flat_map(|f| [HumanPolicy::default(), usage.clone()].map(|p| s.cohort_stats(f, &p).unwrap()))
                .collect()
        };
        let by_index = all(&s);
        // A time filter that keeps every log reads the cohorts from the log scan instead.
        let scanned: Vec<Vec<CohortStats>> = filters
            .iter()
            .flat_map(|f| {
                let f = Filter { since: early, ..f.clone() };
                [HumanPolicy::default(), usage.clone()].map(|p| s.cohort_stats(&f, &p).unwrap())
            })
            .collect();
        assert_eq!(by_index, scanned);
        assert_eq!(by_index[0].len(), 5, "free, pro, enterprise, the empty value and NULL");
        assert_eq!(by_index[8], Vec::new(), "an unknown cohort has no logs");
        for (got, evaluator, policy) in [
            (&by_index[0], None, HumanPolicy::default()),
            (&by_index[1], None, usage.clone()),
            (&by_index[2], Some("judge-v2"), HumanPolicy::default()),
        ] {
            assert_close(got, &cohort_stats_by_sql(&s, evaluator, &policy));
        }
        // Windows of a few log_ids (one chunk: the same sums in the same order) answer alike.
        s.cohort_window = 3;
        assert_eq!(all(&s), by_index);
        // Chunks on several connections merge their sums: equal within rounding.
        s.parallel_min_logs = 0;
        for (got, want) in all(&s).iter().zip(&by_index) {
            assert_close(got, want);
        }
    }

    /// Equal counts and cohorts, mean scores equal within rounding.
    fn assert_close(got: &[CohortStats], want: &[CohortStats]) {
        let counts = |c: &[CohortStats]| {
            c.iter().map(|c| CohortStats { mean_eval_score: None, ..c.clone() }).collect::<Vec<_>>()
        };
        assert_eq!(counts(got), counts(want));
        for (g, w) in got.iter().zip(want) {
            match (g.mean_eval_score, w.mean_eval_score) {
                (Some(g), Some(w)) => assert!((g - w).abs() < 1e-12, "{g} vs {w}"),
                (g, w) => assert_eq!(g, w),
            }
        }
    }

    #[test]
    fn cohort_stats_inside_a_write_transaction_see_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        s.begin().unwrap();
        s.insert_logs(&[log("a", "free", 0.5), log("b", "pro", 0.25)]).unwrap();
        let cs = s.cohort_stats(&Filter::default(), &HumanPolicy::default()).unwrap();
        assert_eq!(
            cs.iter().map(|c| (c.cohort.as_deref(), c.requests)).collect::<Vec<_>>(),
            [(Some("free"), 1), (Some("pro"), 1)]
        );
        s.rollback().unwrap();
        assert_eq!(s.cohort_stats(&Filter::default(), &HumanPolicy::default()).unwrap(), Vec::new());
    }

    #[test]
    fn scored_columns_hold_the_scored_requests_rows() {
        let (logs, events, second) = fixture();
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        load(&mut s, &logs, &events, &second);
        let judge = Filter { evaluator: Some("judge-v2".into()), ..Default::default() };
        let policy = HumanPolicy { implicit_usage: Some(4.0), ..Default::default() };
        let queries = [
            ScoredQuery::default(),
            ScoredQuery { filter: judge, group_key: Some("tier".into()), ..Default::default() },
            ScoredQuery { policy, group_key: Some("user_cohort".into()), ..Default::default() },
            ScoredQuery { limit: Some(3), with_text: true, ..Default::default() },
        ];
        for parallel_min_logs in [PARALLEL_MIN_LOGS, 0] {
            s.parallel_min_logs = parallel_min_logs;
            for q in &queries {
                let want = ScoredColumns::from_rows(&s.scored_requests(q).unwrap());
                let cols = s.scored_columns(q).unwrap();
                assert!(!cols.is_empty());
                let rows = |c: &ScoredColumns| (0..c.len()).map(|i| format!("{:?}", c.row(i))).collect::<Vec<_>>();
                assert_eq!(rows(&cols), rows(&want), "{q:?} with parallel_min_logs {parallel_min_logs}");
            }
        }
    }

    #[test]
    fn orphaned_feedback_counts_once_its_log_arrives() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        s.begin().unwrap();
        let o = s.insert_feedback(&[fb("late", "explicit_rating", json!(5))]).unwrap();
        s.commit().unwrap();
        assert_eq!(o.orphaned, 1);
        assert!(s.scored_requests(&ScoredQuery::default()).unwrap().is_empty());
        s.begin().unwrap();
        s.insert_logs(&[log("late", "pro", 0.4), log("other", "pro", 0.6)]).unwrap();
        s.commit().unwrap();
        let rows = s.scored_requests(&ScoredQuery::default()).unwrap();
        assert_eq!((rows.len(), rows[0].request_id.as_str(), rows[0].human_score), (1, "late", 5.0));
        assert_eq!(s.stats().unwrap().orphaned_feedback, 0);
        let cs = s.cohort_stats(&Filter::default(), &HumanPolicy::default()).unwrap();
        assert_eq!((cs[0].requests, cs[0].with_feedback, cs[0].positive), (2, 1, 1));
    }

    /// Dimension ratings land in their own table: the human score, cohort figures and the
    /// feedback table answer as without them; their means come back per request and dimension.
    #[test]
    fn dimension_ratings_are_stored_apart_and_change_no_answer() {
        let (logs, events, second) = fixture();
        let dir = tempfile::tempdir().unwrap();
        let mut plain = SqliteStore::open(&dir.path().join("plain.db")).unwrap();
        load(&mut plain, &logs, &events, &second);
        let mut with = SqliteStore::open(&dir.path().join("with.db")).unwrap();
        load(&mut with, &logs, &events, &second);
        let rating = |id: &str, v: u8, dim: &str, user: &str| {
            FeedbackEvent::from_json(
                json!({"request_id": id, "feedback_type": "explicit_rating", "value": v, "dimension": dim,
                       "user_id": user, "timestamp": "2026-05-15T11:00:00Z"}),
                false,
                Utc::now(),
            )
            .unwrap()
        };
        let dims = [
            rating("r000", 1, "coherence", "u1"),
            rating("r000", 4, "coherence", "u2"),
            rating("r000", 5, "relevance", "u1"),
            rating("r007", 2, "fluency", "u1"),
            rating("nolog", 3, "coherence", "u1"),
        ];
        with.begin().unwrap();
        let o = with.insert_feedback(&dims).unwrap();
        let again = with.insert_feedback(&dims[..2]).unwrap();
        with.commit().unwrap();
        assert_eq!(o, BatchOutcome { stored: 5, duplicate: 0, orphaned: 1 });
        assert_eq!(again, BatchOutcome { stored: 0, duplicate: 2, orphaned: 0 });
        let mut a = answers(&with);
        assert_eq!(a["stats"]["dimension_ratings"], 5);
        a["stats"]["dimension_ratings"] = json!(0);
        assert_eq!(a, answers(&plain), "dimension ratings changed an answer");
        let got = with.dimension_scores(&["coherence".into(), "relevance".into()]).unwrap();
        let got: Vec<(&str, &str, f64, u64)> =
            got.iter().map(|d| (d.request_id.as_str(), d.dimension.as_str(), d.mean, d.ratings)).collect();
        assert_eq!(
            got,
            vec![("nolog", "coherence", 3.0, 1), ("r000", "coherence", 2.5, 2), ("r000", "relevance", 5.0, 1)]
        );
        assert!(with.dimension_scores(&[]).unwrap().is_empty());
        // A store opened again (as an existing one is) keeps the table and its rows.
        drop(with);
        let reopened = SqliteStore::open(&dir.path().join("with.db")).unwrap();
        assert_eq!(reopened.dimension_scores(&["fluency".into()]).unwrap().len(), 1);
    }

    #[test]
    fn new_stores_use_16_kib_pages() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        let size: i64 = s.connection().query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
        assert_eq!(size, 16384);
    }

    #[test]
    fn reopening_keeps_schema_version() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.db");
        drop(SqliteStore::open(&p).unwrap());
        let s = SqliteStore::open(&p).unwrap();
        assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
    }
}
