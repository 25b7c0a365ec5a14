//! The PostgreSQL store: the same schema, migrations and results as SQLite, on a server.
//!
//! Writes go through `COPY ... (FORMAT binary)` into session-local staging tables, then one
//! `INSERT ... SELECT ... ON CONFLICT DO NOTHING` per table moves them into place and counts
//! stored, duplicate and orphaned rows, all inside the transaction the caller opened with
//! [`Store::begin`]. Reads are one SQL statement each, parameterised (user values and metadata
//! keys travel as `$n` parameters, never in the SQL text) and streamed back row by row.
//!
//! # Citus
//! The SQL sticks to what Citus runs on tables distributed by `request_id` (`eval_logs`,
//! `eval_scores` and `feedback_events` co-located): every join and every grouped subquery is on
//! `request_id`, so [`Store::scored_requests`], [`Store::cohort_stats`], [`Store::eval_scores`] and
//! the orphan counts push down to the shards; lookups by one `request_id` ([`Store::log_exists`],
//! [`Store::feedback_for`]) route to one shard. `ON CONFLICT DO NOTHING` names no key, so the
//! same statements work when `feedback_events` is keyed `(request_id, event_id)`, as Citus
//! requires of a table distributed by `request_id`. Staging tables are temporary (coordinator
//! only); Citus moves their rows to the shards in the `INSERT ... SELECT`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use postgres::binary_copy::BinaryCopyInWriter;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::{ToSql, Type};
use postgres::{Client, NoTls, Row};

mod queue;

use super::rows;
use super::{
    BatchOutcome, CohortStats, DimensionScore, EditedOutput, EvaluatedRequest, Filter, RaterEvent, RequestText,
    RunRecord, ScoredQuery, ScoredRequest, Store, StoreError, StoreResult, StoreStats, StoredLog,
};
use crate::feedback::HumanPolicy;
use crate::record::{EvalLog, FeedbackEvent, format_timestamp, from_micros, to_micros};

/// The schema version this program writes; kept equal to [`super::sqlite::SCHEMA_VERSION`], one
/// entry of `MIGRATIONS` per version, so both backends move in lock-step.
pub const SCHEMA_VERSION: i64 = 5;

/// Migration `i` takes a store from version `i` to `i + 1` (the PostgreSQL spelling of the
/// SQLite migration with the same index). Text keys use the "C" collation so that ordering is
/// byte order, as SQLite's `BINARY`.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1: logs, scores, feedback.
    r#"CREATE TABLE eval_logs (
        request_id TEXT COLLATE "C" PRIMARY KEY,
        ts BIGINT NOT NULL,
        prompt TEXT NOT NULL,
        output TEXT NOT NULL,
        feedback_collected BOOLEAN,
        cohort TEXT COLLATE "C",
        user_id TEXT,
        use_case TEXT,
        prompt_version TEXT,
        metadata JSONB NOT NULL
    );
    CREATE INDEX eval_logs_ts ON eval_logs(ts);
    CREATE INDEX eval_logs_cohort ON eval_logs(cohort);
    CREATE TABLE eval_scores (
        request_id TEXT COLLATE "C" NOT NULL,
        evaluator TEXT COLLATE "C" NOT NULL,
        overall DOUBLE PRECISION NOT NULL,
        scores JSONB NOT NULL,
        PRIMARY KEY (request_id, evaluator)
    );
    CREATE INDEX eval_scores_evaluator ON eval_scores(evaluator);
    CREATE TABLE feedback_events (
        event_id TEXT COLLATE "C" PRIMARY KEY,
        request_id TEXT COLLATE "C" NOT NULL,
        feedback_type TEXT COLLATE "C" NOT NULL,
        value_num DOUBLE PRECISION,
        value_text TEXT,
        user_id TEXT,
        ts BIGINT NOT NULL
    );
    CREATE INDEX feedback_events_request ON feedback_events(request_id, feedback_type, value_num);
    CREATE INDEX feedback_events_ts ON feedback_events(ts);"#,
    // 1 -> 2: runs of the weekly loop (a small reference table; on Citus, a reference table).
    r#"CREATE TABLE runs (
        id TEXT COLLATE "C" PRIMARY KEY,
        started_at TEXT COLLATE "C" NOT NULL,
        finished_at TEXT,
        config_hash TEXT NOT NULL,
        status TEXT NOT NULL,
        decision TEXT,
        run_dir TEXT NOT NULL,
        model_path TEXT,
        dataset_card JSONB,
        metrics JSONB
    );"#,
    // 2 -> 3: the cohort index carries request_id (an index-only scan for per-cohort aggregates).
    r#"DROP INDEX eval_logs_cohort;
    CREATE INDEX eval_logs_cohort ON eval_logs(cohort, request_id);"#,
    // 3 -> 4: the SQLite store moved to integer keys and a narrow log table (its analyses were
    // bound by B-tree seeks on text keys). PostgreSQL hash-joins and reads only the columns a
    // query names, so its tables stay as they are; this step only records the version.
    "SELECT 1",
    // 4 -> 5: the SQLite store moved evaluator names to integer ids and the other scores out of
    // `eval_scores`; PostgreSQL keeps its tables, as for version 4.
    "SELECT 1",
];

/// Holds the schema version: one row, created by the first migration run.
const VERSION_TABLE: &str = "evalloop_schema";

/// Key of the advisory lock that serialises migrations of one database.
const MIGRATION_LOCK: i64 = 0x6576_616c_6c6f_6f70; // "evalloop"

/// Session-local staging tables that COPY fills; created once per session, emptied per batch.
const STAGING_SQL: &str = r#"
    CREATE TEMP TABLE IF NOT EXISTS evalloop_stage_logs (
        seq INT NOT NULL, request_id TEXT COLLATE "C" NOT NULL, ts BIGINT NOT NULL, prompt TEXT NOT NULL,
        output TEXT NOT NULL, feedback_collected BOOLEAN, cohort TEXT COLLATE "C", user_id TEXT, use_case TEXT,
        prompt_version TEXT, metadata TEXT NOT NULL, evaluator TEXT COLLATE "C" NOT NULL,
        overall DOUBLE PRECISION NOT NULL, scores TEXT NOT NULL
    );
    CREATE TEMP TABLE IF NOT EXISTS evalloop_stage_feedback (
        seq INT NOT NULL, event_id TEXT COLLATE "C" NOT NULL, request_id TEXT COLLATE "C" NOT NULL,
        feedback_type TEXT COLLATE "C" NOT NULL, value_num DOUBLE PRECISION, value_text TEXT, user_id TEXT,
        ts BIGINT NOT NULL, edited_output TEXT
    );
    CREATE TEMP TABLE IF NOT EXISTS evalloop_stage_scores (
        seq INT NOT NULL, request_id TEXT COLLATE "C" NOT NULL, overall DOUBLE PRECISION NOT NULL
    );
    CREATE TEMP TABLE IF NOT EXISTS evalloop_stage_dimensions (
        seq INT NOT NULL, event_id TEXT COLLATE "C" NOT NULL, request_id TEXT COLLATE "C" NOT NULL,
        dimension TEXT COLLATE "C" NOT NULL, value_num DOUBLE PRECISION NOT NULL, user_id TEXT, ts BIGINT NOT NULL
    );"#;

/// Ratings of one human dimension, apart from `feedback_events` (see the SQLite store's
/// `DIMENSION_RATINGS_SQL`): created on open, for new and existing databases, under the
/// migration lock. On Citus, distribute it by `request_id` like `feedback_events`. The same
/// step adds `feedback_events.edited_output` where it is missing (see the SQLite store's
/// `add_edited_output`).
const DIMENSION_RATINGS_SQL: &str = r#"CREATE TABLE IF NOT EXISTS dimension_ratings (
        event_id TEXT COLLATE "C" PRIMARY KEY,
        request_id TEXT COLLATE "C" NOT NULL,
        dimension TEXT COLLATE "C" NOT NULL,
        value_num DOUBLE PRECISION NOT NULL,
        user_id TEXT,
        ts BIGINT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS dimension_ratings_request ON dimension_ratings(request_id, dimension);
    ALTER TABLE feedback_events ADD COLUMN IF NOT EXISTS edited_output TEXT;"#;

/// Preferences between two outputs, apart from `feedback_events` (see the SQLite store's
/// `PREFERENCES_SQL`): created on open with `dimension_ratings`. On Citus, distribute it by
/// `request_id` like `feedback_events`.
const PREFERENCES_SQL: &str = r#"CREATE TABLE IF NOT EXISTS preferences (
        event_id TEXT COLLATE "C" PRIMARY KEY,
        request_id TEXT COLLATE "C" NOT NULL,
        other_request_id TEXT COLLATE "C" NOT NULL,
        dimension TEXT COLLATE "C",
        choice TEXT NOT NULL,
        user_id TEXT,
        ts BIGINT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS preferences_request ON preferences(request_id);
    CREATE INDEX IF NOT EXISTS preferences_other ON preferences(other_request_id);"#;

/// Inserts a batch of preferences given as arrays (first occurrence of an `event_id` wins);
/// returns stored and, of those, orphaned (either output without a log).
const INSERT_PREFERENCES_SQL: &str = "WITH ins AS (
        INSERT INTO preferences (event_id, request_id, other_request_id, dimension, choice, user_id, ts)
        SELECT DISTINCT ON (event_id) event_id, request_id, other_request_id, dimension, choice, user_id, ts
        FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int8[])
             WITH ORDINALITY AS t(event_id, request_id, other_request_id, dimension, choice, user_id, ts, ord)
        ORDER BY event_id, ord
        ON CONFLICT DO NOTHING
        RETURNING request_id, other_request_id
    )
    SELECT COUNT(*), COUNT(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM eval_logs l WHERE l.request_id = ins.request_id)
                                         OR NOT EXISTS (SELECT 1 FROM eval_logs l
                                                        WHERE l.request_id = ins.other_request_id))
    FROM ins";

/// Moves staged dimension ratings into `dimension_ratings` (first occurrence of an `event_id`
/// wins); returns stored and, of those, orphaned, as [`MOVE_FEEDBACK_SQL`] does.
const MOVE_DIMENSIONS_SQL: &str = "WITH ins AS (
        INSERT INTO dimension_ratings (event_id, request_id, dimension, value_num, user_id, ts)
        SELECT DISTINCT ON (event_id) event_id, request_id, dimension, value_num, user_id, ts
        FROM evalloop_stage_dimensions ORDER BY event_id, seq
        ON CONFLICT DO NOTHING
        RETURNING request_id
    )
    SELECT COUNT(*), COUNT(*) - COUNT(l.request_id)
    FROM ins LEFT JOIN eval_logs l ON l.request_id = ins.request_id";

/// Moves staged logs into `eval_logs` (first occurrence of a `request_id` in the batch wins, an
/// existing one is a duplicate) and their scores into `eval_scores`, for newly stored logs only.
/// Returns the number stored. On Citus: an INSERT ... SELECT from a coordinator-local table,
/// rows routed to shards by `request_id`.
const MOVE_LOGS_SQL: &str = "WITH ins AS (
        INSERT INTO eval_logs (request_id, ts, prompt, output, feedback_collected, cohort, user_id, use_case,
                               prompt_version, metadata)
        SELECT DISTINCT ON (request_id) request_id, ts, prompt, output, feedback_collected, cohort, user_id,
               use_case, prompt_version, metadata::jsonb
        FROM evalloop_stage_logs ORDER BY request_id, seq
        ON CONFLICT DO NOTHING
        RETURNING request_id
    ), sc AS (
        INSERT INTO eval_scores (request_id, evaluator, overall, scores)
        SELECT DISTINCT ON (s.request_id) s.request_id, s.evaluator, s.overall, s.scores::jsonb
        FROM evalloop_stage_logs s JOIN ins ON ins.request_id = s.request_id
        ORDER BY s.request_id, s.seq
        ON CONFLICT DO NOTHING
    )
    SELECT COUNT(*) FROM ins";

/// Moves staged feedback into `feedback_events` (first occurrence of an `event_id` wins);
/// returns stored and, of those, orphaned (no log yet). The orphan join is on `request_id`.
const MOVE_FEEDBACK_SQL: &str = "WITH ins AS (
        INSERT INTO feedback_events (event_id, request_id, feedback_type, value_num, value_text, user_id, ts,
            edited_output)
        SELECT DISTINCT ON (event_id) event_id, request_id, feedback_type, value_num, value_text, user_id, ts,
            edited_output
        FROM evalloop_stage_feedback ORDER BY event_id, seq
        ON CONFLICT DO NOTHING
        RETURNING request_id
    )
    SELECT COUNT(*), COUNT(*) - COUNT(l.request_id)
    FROM ins LEFT JOIN eval_logs l ON l.request_id = ins.request_id";

/// Staged scores whose request has a log (each counts as stored, as SQLite counts each upsert).
const COUNT_SCORED_SQL: &str =
    "SELECT COUNT(*) FROM evalloop_stage_scores s JOIN eval_logs l ON l.request_id = s.request_id";

/// Upserts staged scores of evaluator `$1` for existing requests; the last score of a request in
/// the batch wins, as SQLite's row-by-row upsert leaves it. Keyed on `(request_id, evaluator)`.
const MOVE_SCORES_SQL: &str = "INSERT INTO eval_scores (request_id, evaluator, overall, scores)
    SELECT DISTINCT ON (s.request_id) s.request_id, $1::text, s.overall, '{}'::jsonb
    FROM evalloop_stage_scores s JOIN eval_logs l ON l.request_id = s.request_id
    ORDER BY s.request_id, s.seq DESC
    ON CONFLICT (request_id, evaluator) DO UPDATE SET overall = EXCLUDED.overall";

/// A store in a PostgreSQL database.
pub struct PostgresStore {
    /// Behind a lock because the read methods take `&self` and a client needs `&mut`.
    client: Mutex<Client>,
    /// The URL without its password.
    shown: String,
    in_tx: bool,
    /// Whether a statement failed since [`Store::begin`]: the server has then aborted the
    /// transaction, and a `COMMIT` would quietly roll back, so [`Store::commit`] reports it.
    tx_failed: AtomicBool,
    /// Whether this session's staging tables surely exist (reset on rollback, which may undo them).
    staged: bool,
}

/// Query parameters, and the `$n::type` placeholders that name them in the SQL text.
#[derive(Default)]
struct Params(Vec<Box<dyn ToSql + Sync>>);

impl Params {
    /// Adds a value; returns its placeholder, cast to `ty` so the server never has to guess.
    fn bind<T: ToSql + Sync + 'static>(&mut self, value: T, ty: &str) -> String {
        self.0.push(Box::new(value));
        format!("${}::{ty}", self.0.len())
    }

    fn refs(&self) -> impl ExactSizeIterator<Item = &(dyn ToSql + Sync)> {
        self.0.iter().map(|b| b.as_ref())
    }
}

/// The score one feedback event (alias `f`) contributes under a policy: the PostgreSQL spelling
/// of the SQLite store's `EVENT_SCORE_SQL`, with the policy's scores as parameters.
fn event_score_sql(p: &HumanPolicy, params: &mut Params) -> String {
    let up = params.bind(p.thumbs_up, "float8");
    let down = params.bind(p.thumbs_down, "float8");
    let usage = params.bind(p.implicit_usage, "float8");
    let edit = params.bind(p.implicit_edit, "float8");
    let discard = params.bind(p.implicit_discard, "float8");
    format!(
        "CASE f.feedback_type
            WHEN 'explicit_thumbs_up' THEN {up}
            WHEN 'explicit_thumbs_down' THEN {down}
            WHEN 'explicit_rating' THEN f.value_num
            WHEN 'implicit_usage' THEN CASE WHEN f.value_num = 1 THEN {usage} END
            WHEN 'implicit_edit' THEN CASE WHEN f.value_num = 1 THEN {edit} END
            WHEN 'implicit_discard' THEN CASE WHEN f.value_num = 1 THEN {discard} END
        END"
    )
}

/// Column for a metadata key that has one, else `metadata ->> $key` (the key is a parameter).
/// Booleans read as `1`/`0`, as SQLite's `json_extract` gives them, so filters match alike.
fn metadata_expr(key: &str, params: &mut Params) -> String {
    match key {
        "user_cohort" => "l.cohort".into(),
        "user_id" => "l.user_id".into(),
        "use_case" => "l.use_case".into(),
        "prompt_version" => "l.prompt_version".into(),
        _ => {
            let k = params.bind(key.to_string(), "text");
            format!(
                "(CASE WHEN jsonb_typeof(l.metadata -> {k}) = 'boolean'
                       THEN CASE WHEN (l.metadata -> {k}) = 'true'::jsonb THEN '1' ELSE '0' END
                       ELSE l.metadata ->> {k} END)"
            )
        }
    }
}

/// `AND ...` conditions for a filter on `eval_logs l` (and `eval_scores s` when `with_scores`).
fn filter_sql(f: &Filter, with_scores: bool, params: &mut Params) -> String {
    let mut sql = String::new();
    if let Some(t) = f.since {
        sql.push_str(&format!(" AND l.ts >= {}", params.bind(to_micros(&t), "int8")));
    }
    if let Some(t) = f.until {
        sql.push_str(&format!(" AND l.ts < {}", params.bind(to_micros(&t), "int8")));
    }
    if let Some(c) = &f.cohort {
        sql.push_str(&format!(" AND l.cohort = {}", params.bind(c.clone(), "text")));
    }
    if with_scores && let Some(e) = &f.evaluator {
        sql.push_str(&format!(" AND s.evaluator = {}", params.bind(e.clone(), "text")));
    }
    for (k, v) in &f.metadata {
        let expr = metadata_expr(k, params);
        sql.push_str(&format!(" AND {expr} = {}", params.bind(v.clone(), "text")));
    }
    sql
}

/// The URL as it may be shown: the password (in the user part or a `password=` parameter) cut.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{user}@{host}")
        }
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|kv| if kv.starts_with("password=") { "password=***".to_string() } else { kv.to_string() })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// A server error's message, detail and SQLSTATE, or the client error with its cause.
fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{}: {} (SQLSTATE {})", db.severity(), db.message(), db.code().code());
            if let Some(d) = db.detail() {
                s.push_str(&format!("; {d}"));
            }
            if let Some(w) = db.where_() {
                s.push_str(&format!("; at {w}"));
            }
            s
        }
        None => {
            // The client error's Display leaves out its cause ("error connecting to server").
            let mut s = e.to_string();
            let mut cause = std::error::Error::source(e);
            while let Some(c) = cause {
                s.push_str(&format!(": {c}"));
                cause = c.source();
            }
            s
        }
    }
}

impl PostgresStore {
    /// Connects to the database a `postgres://` URL names (no TLS) and migrates it to
    /// [`SCHEMA_VERSION`]. Tables go to the first schema on the connection's `search_path`
    /// (set one with `?options=-csearch_path%3Dname`).
    pub fn open(url: &str) -> StoreResult<PostgresStore> {
        let shown = redact_url(url);
        let config: postgres::Config =
            url.parse().map_err(|e| StoreError::Invalid(format!("postgres URL {shown}: {e}")))?;
        let client =
            config.connect(NoTls).map_err(|e| StoreError::Postgres { url: shown.clone(), message: describe(&e) })?;
        let mut store = PostgresStore {
            client: Mutex::new(client),
            shown,
            in_tx: false,
            tx_failed: AtomicBool::new(false),
            staged: false,
        };
        store.migrate()?;
        store.create_dimension_ratings()?;
        store.create_queue_tables()?;
        Ok(store)
    }

    /// Creates `dimension_ratings` and `preferences` when missing; the migration lock keeps two processes opening
    /// one new database from racing on it.
    fn create_dimension_ratings(&mut self) -> StoreResult<()> {
        let err = |e: postgres::Error| StoreError::Postgres { url: self.shown.clone(), message: describe(&e) };
        let mut c = self.client.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut tx = c.transaction().map_err(err)?;
        tx.execute("SELECT pg_advisory_xact_lock($1::int8)", &[&MIGRATION_LOCK]).map_err(err)?;
        tx.batch_execute(DIMENSION_RATINGS_SQL).map_err(err)?;
        tx.batch_execute(PREFERENCES_SQL).map_err(err)?;
        tx.batch_execute(crate::store::leases::LEASES_SQL).map_err(err)?;
        tx.commit().map_err(err)
    }

    fn err(&self) -> impl Fn(postgres::Error) -> StoreError + '_ {
        move |e| {
            self.tx_failed.store(true, Ordering::Relaxed);
            StoreError::Postgres { url: self.shown.clone(), message: describe(&e) }
        }
    }

    fn client(&self) -> MutexGuard<'_, Client> {
        // A panic while holding the lock leaves the client as usable as it was; keep going.
        self.client.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The schema version recorded in the database; 0 before the first migration.
    pub fn schema_version(&self) -> StoreResult<i64> {
        let mut c = self.client();
        let exists: Option<String> = c
            .query_one("SELECT to_regclass($1::text)::text", &[&VERSION_TABLE])
            .and_then(|r| r.try_get(0))
            .map_err(self.err())?;
        if exists.is_none() {
            return Ok(0);
        }
        let row = c.query_opt(&format!("SELECT version FROM {VERSION_TABLE}"), &[]).map_err(self.err())?;
        match row {
            Some(r) => r.try_get(0).map_err(self.err()),
            None => Ok(0),
        }
    }

    fn migrate(&mut self) -> StoreResult<()> {
        let found = self.schema_version()?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew { path: self.shown.clone(), found, supported: SCHEMA_VERSION });
        }
        if found == SCHEMA_VERSION {
            return Ok(());
        }
        let err = |e: postgres::Error| StoreError::Postgres { url: self.shown.clone(), message: describe(&e) };
        let mut c = self.client.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut tx = c.transaction().map_err(err)?;
        // Another process may be migrating the same database: wait for it, then re-read.
        tx.execute("SELECT pg_advisory_xact_lock($1::int8)", &[&MIGRATION_LOCK]).map_err(err)?;
        tx.batch_execute(&format!("CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (version BIGINT NOT NULL)"))
            .map_err(err)?;
        let found: i64 = match tx.query_opt(&format!("SELECT version FROM {VERSION_TABLE}"), &[]).map_err(err)? {
            Some(r) => r.try_get(0).map_err(err)?,
            None => {
                tx.execute(&format!("INSERT INTO {VERSION_TABLE} (version) VALUES (0)"), &[]).map_err(err)?;
                0
            }
        };
        if found > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew { path: self.shown.clone(), found, supported: SCHEMA_VERSION });
        }
        for sql in MIGRATIONS.iter().skip(found as usize) {
            tx.batch_execute(sql).map_err(err)?;
        }
        tx.execute(&format!("UPDATE {VERSION_TABLE} SET version = $1::int8"), &[&SCHEMA_VERSION]).map_err(err)?;
        tx.commit().map_err(err)
    }

    /// Runs `f` inside the caller's transaction, or inside one of its own when none is open.
    fn in_transaction<T>(&mut self, f: impl FnOnce(&mut Self) -> StoreResult<T>) -> StoreResult<T> {
        if self.in_tx {
            let r = f(self);
            if r.is_err() {
                self.tx_failed.store(true, Ordering::Relaxed);
            }
            return r;
        }
        self.begin()?;
        match f(self) {
            Ok(v) => {
                self.commit()?;
                Ok(v)
            }
            Err(e) => {
                // The first error is the one worth reporting.
                let _ = self.rollback();
                Err(e)
            }
        }
    }

    /// Creates the staging tables if this session may not have them, and empties `table`.
    fn prepare_stage(&mut self, table: &str) -> StoreResult<()> {
        let mut sql = String::new();
        if !self.staged {
            sql.push_str(STAGING_SQL);
        }
        sql.push_str(&format!("TRUNCATE {table};"));
        self.client().batch_execute(&sql).map_err(self.err())?;
        self.staged = true;
        Ok(())
    }

    /// COPYs rows into a staging table in binary format; `row` writes one record.
    fn copy_rows<T>(
        &self,
        table: &str,
        types: &[Type],
        rows: &[T],
        mut row: impl FnMut(&mut BinaryCopyInWriter<'_>, i32, &T) -> Result<(), postgres::Error>,
    ) -> StoreResult<()> {
        let mut c = self.client();
        let sink = c.copy_in(&format!("COPY {table} FROM STDIN (FORMAT binary)")).map_err(self.err())?;
        let mut w = BinaryCopyInWriter::new(sink, types);
        for (i, r) in rows.iter().enumerate() {
            let seq = i32::try_from(i)
                .map_err(|_| StoreError::Invalid(format!("a batch of {} rows is too large", rows.len())))?;
            row(&mut w, seq, r).map_err(self.err())?;
        }
        w.finish().map_err(self.err())?;
        Ok(())
    }

    /// Runs a query and converts each row as it arrives (rows are streamed, not collected first).
    fn query_map<T>(
        &self,
        sql: &str,
        params: &Params,
        mut f: impl FnMut(&Row) -> Result<T, postgres::Error>,
    ) -> StoreResult<Vec<T>> {
        let mut c = self.client();
        let mut rows = c.query_raw(sql, params.refs()).map_err(self.err())?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(self.err())? {
            out.push(f(&row).map_err(self.err())?);
        }
        Ok(out)
    }

    /// Stores events that all carry a `dimension` into `dimension_ratings`.
    fn insert_dimension_ratings(&mut self, events: &[FeedbackEvent]) -> StoreResult<BatchOutcome> {
        if events.is_empty() {
            return Ok(BatchOutcome::default());
        }
        self.prepare_stage("evalloop_stage_dimensions")?;
        let types = [Type::INT4, Type::TEXT, Type::TEXT, Type::TEXT, Type::FLOAT8, Type::TEXT, Type::INT8];
        self.copy_rows("evalloop_stage_dimensions", &types, events, |w, seq, e| {
            w.write(&[
                &seq,
                &e.event_id,
                &e.request_id,
                &e.dimension.as_deref().unwrap_or_default(),
                &e.value.as_number().unwrap_or(f64::NAN),
                &e.user_id,
                &to_micros(&e.timestamp),
            ])
        })?;
        let (stored, orphaned): (i64, i64) = self
            .client()
            .query_one(MOVE_DIMENSIONS_SQL, &[])
            .and_then(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .map_err(self.err())?;
        let stored = stored as u64;
        Ok(BatchOutcome { stored, duplicate: events.len() as u64 - stored, orphaned: orphaned as u64 })
    }

    /// Stores events that are all preferences into `preferences`.
    fn insert_preferences(&mut self, events: &[FeedbackEvent]) -> StoreResult<BatchOutcome> {
        if events.is_empty() {
            return Ok(BatchOutcome::default());
        }
        let col = |f: &dyn Fn(&FeedbackEvent) -> Option<String>| events.iter().map(f).collect::<Vec<_>>();
        let ids = col(&|e| Some(e.event_id.clone()));
        let a = col(&|e| Some(e.request_id.clone()));
        let b = col(&|e| e.other_request_id.clone());
        let dims = col(&|e| e.dimension.clone());
        let choices = col(&|e| e.value.to_json().as_str().map(str::to_string));
        let users = col(&|e| e.user_id.clone());
        let ts: Vec<i64> = events.iter().map(|e| to_micros(&e.timestamp)).collect();
        let (stored, orphaned): (i64, i64) = self
            .client()
            .query_one(INSERT_PREFERENCES_SQL, &[&ids, &a, &b, &dims, &choices, &users, &ts])
            .and_then(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .map_err(self.err())?;
        let stored = stored as u64;
        Ok(BatchOutcome { stored, duplicate: events.len() as u64 - stored, orphaned: orphaned as u64 })
    }

    fn count(&self, sql: &str) -> StoreResult<u64> {
        let v: i64 = self.client().query_one(sql, &[]).and_then(|r| r.try_get(0)).map_err(self.err())?;
        Ok(v as u64)
    }

    /// `(key, count)` pairs from a two-column query.
    fn counted<K: rows::Value>(&self, sql: &str) -> StoreResult<Vec<(K, u64)>> {
        self.query_map(sql, &Params::default(), rows::counted)
    }
}

/// A postgres row read from its second column on (the first is the input's ordinal).
struct ShiftedRow<'a>(&'a postgres::Row);

impl rows::Row for ShiftedRow<'_> {
    type Error = postgres::Error;
    fn col<T: rows::Value>(&self, i: usize) -> Result<T, postgres::Error> {
        self.0.try_get(i + 1)
    }
}

impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn location(&self) -> String {
        self.shown.clone()
    }

    fn begin(&mut self) -> StoreResult<()> {
        if !self.in_tx {
            self.client().batch_execute("BEGIN").map_err(self.err())?;
            self.in_tx = true;
            self.tx_failed.store(false, Ordering::Relaxed);
        }
        Ok(())
    }

    fn commit(&mut self) -> StoreResult<()> {
        if self.in_tx {
            if self.tx_failed.load(Ordering::Relaxed) {
                self.rollback()?;
                return Err(StoreError::Postgres {
                    url: self.shown.clone(),
                    message: "commit after a failed statement: the transaction was rolled back".into(),
                });
            }
            self.in_tx = false;
            self.client().batch_execute("COMMIT").map_err(self.err())?;
        }
        Ok(())
    }

    fn rollback(&mut self) -> StoreResult<()> {
        if self.in_tx {
            self.in_tx = false;
            self.staged = false;
            self.client().batch_execute("ROLLBACK").map_err(self.err())?;
        }
        Ok(())
    }

    fn insert_logs(&mut self, logs: &[EvalLog]) -> StoreResult<BatchOutcome> {
        if logs.is_empty() {
            return Ok(BatchOutcome::default());
        }
        self.in_transaction(|s| {
            s.prepare_stage("evalloop_stage_logs")?;
            let types = [
                Type::INT4,
                Type::TEXT,
                Type::INT8,
                Type::TEXT,
                Type::TEXT,
                Type::BOOL,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::FLOAT8,
                Type::TEXT,
            ];
            s.copy_rows("evalloop_stage_logs", &types, logs, |w, seq, l| {
                let others = rows::other_scores(l).unwrap_or_else(|| "{}".into());
                w.write(&[
                    &seq,
                    &l.request_id,
                    &to_micros(&l.timestamp),
                    &l.prompt,
                    &l.output,
                    &l.feedback_collected,
                    &l.meta_str("user_cohort"),
                    &l.meta_str("user_id"),
                    &l.meta_str("use_case"),
                    &l.meta_str("prompt_version"),
                    &serde_json::Value::Object(l.metadata.clone()).to_string(),
                    &l.evaluator,
                    &l.overall(),
                    &others,
                ])
            })?;
            let stored = s.count(MOVE_LOGS_SQL)?;
            Ok(BatchOutcome { stored, duplicate: logs.len() as u64 - stored, orphaned: 0 })
        })
    }

    fn insert_feedback(&mut self, events: &[FeedbackEvent]) -> StoreResult<BatchOutcome> {
        if events.iter().any(|e| e.dimension.is_some() || e.other_request_id.is_some()) {
            let (prefs, rest): (Vec<FeedbackEvent>, Vec<FeedbackEvent>) =
                events.iter().cloned().partition(|e| e.other_request_id.is_some());
            let (dims, plain): (Vec<FeedbackEvent>, Vec<FeedbackEvent>) =
                rest.into_iter().partition(|e| e.dimension.is_some());
            return self.in_transaction(|s| {
                let mut out = s.insert_feedback(&plain)?;
                out += s.insert_dimension_ratings(&dims)?;
                out += s.insert_preferences(&prefs)?;
                Ok(out)
            });
        }
        if events.is_empty() {
            return Ok(BatchOutcome::default());
        }
        self.in_transaction(|s| {
            s.prepare_stage("evalloop_stage_feedback")?;
            let types = [
                Type::INT4,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::FLOAT8,
                Type::TEXT,
                Type::TEXT,
                Type::INT8,
                Type::TEXT,
            ];
            s.copy_rows("evalloop_stage_feedback", &types, events, |w, seq, e| {
                let text = rows::stored_text(&e.value);
                w.write(&[
                    &seq,
                    &e.event_id,
                    &e.request_id,
                    &e.feedback_type.as_str(),
                    &e.value.as_number(),
                    &text,
                    &e.user_id,
                    &to_micros(&e.timestamp),
                    &e.edited_output,
                ])
            })?;
            let (stored, orphaned): (i64, i64) = s
                .client()
                .query_one(MOVE_FEEDBACK_SQL, &[])
                .and_then(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .map_err(s.err())?;
            let stored = stored as u64;
            Ok(BatchOutcome { stored, duplicate: events.len() as u64 - stored, orphaned: orphaned as u64 })
        })
    }

    fn insert_scores(&mut self, evaluator: &str, scores: &[(String, f64)]) -> StoreResult<BatchOutcome> {
        if scores.is_empty() {
            return Ok(BatchOutcome::default());
        }
        self.in_transaction(|s| {
            s.prepare_stage("evalloop_stage_scores")?;
            s.copy_rows("evalloop_stage_scores", &[Type::INT4, Type::TEXT, Type::FLOAT8], scores, |w, seq, r| {
                w.write(&[&seq, &r.0, &r.1])
            })?;
            let stored = s.count(COUNT_SCORED_SQL)?;
            s.client().execute(MOVE_SCORES_SQL, &[&evaluator]).map_err(s.err())?;
            Ok(BatchOutcome { stored, duplicate: 0, orphaned: scores.len() as u64 - stored })
        })
    }

    fn stored_logs(&self, keys: &[(&str, &str)]) -> StoreResult<Vec<Option<StoredLog>>> {
        let ids: Vec<&str> = keys.iter().map(|k| k.0).collect();
        let evaluators: Vec<&str> = keys.iter().map(|k| k.1).collect();
        let rows = self
            .client()
            .query(
                "SELECT k.ord, l.ts, l.prompt, l.output, l.metadata::text, l.feedback_collected, s.overall,
                     s.scores::text
                 FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(rid, ev, ord)
                 JOIN eval_logs l ON l.request_id = k.rid
                 LEFT JOIN eval_scores s ON s.request_id = k.rid AND s.evaluator = k.ev",
                &[&ids, &evaluators],
            )
            .map_err(self.err())?;
        let mut out: Vec<Option<StoredLog>> = vec![None; keys.len()];
        for r in rows {
            let get = |r: &postgres::Row| -> Result<_, postgres::Error> {
                Ok((
                    r.try_get::<_, i64>(0)?,
                    r.try_get::<_, i64>(1)?,
                    r.try_get::<_, String>(2)?,
                    r.try_get::<_, String>(3)?,
                    r.try_get::<_, String>(4)?,
                    r.try_get::<_, Option<bool>>(5)?,
                    r.try_get::<_, Option<f64>>(6)?,
                    r.try_get::<_, Option<String>>(7)?,
                ))
            };
            let (ord, ts, prompt, output, metadata, fc, overall, scores) = get(&r).map_err(self.err())?;
            let scored = overall.map(|o| (o, scores));
            if let Some(slot) = out.get_mut((ord - 1) as usize) {
                *slot = Some(rows::stored_log(ts, prompt, output, &metadata, fc, scored)?);
            }
        }
        Ok(out)
    }

    fn stored_events(&self, event_ids: &[&str]) -> StoreResult<Vec<Option<FeedbackEvent>>> {
        let rows = self
            .client()
            .query(
                "SELECT k.ord, f.request_id, f.feedback_type, f.value_num, f.value_text, f.user_id, f.ts,
                     NULL::text, NULL::text, f.edited_output
                 FROM unnest($1::text[]) WITH ORDINALITY AS k(id, ord) JOIN feedback_events f ON f.event_id = k.id
                 UNION ALL
                 SELECT k.ord, d.request_id, 'explicit_rating', d.value_num, NULL, d.user_id, d.ts, d.dimension,
                     NULL::text, NULL::text
                 FROM unnest($1::text[]) WITH ORDINALITY AS k(id, ord) JOIN dimension_ratings d ON d.event_id = k.id
                 UNION ALL
                 SELECT k.ord, p.request_id, 'explicit_preference', NULL, p.choice, p.user_id, p.ts, p.dimension,
                     p.other_request_id, NULL::text
                 FROM unnest($1::text[]) WITH ORDINALITY AS k(id, ord) JOIN preferences p ON p.event_id = k.id",
                &[&event_ids],
            )
            .map_err(self.err())?;
        let mut out: Vec<Option<FeedbackEvent>> = vec![None; event_ids.len()];
        for r in rows {
            let ord: i64 = r.try_get(0).map_err(self.err())?;
            let Some(&id) = event_ids.get((ord - 1) as usize) else { continue };
            let shifted = ShiftedRow(&r);
            let row = rows::stored_event_row(id, &shifted).map_err(self.err())?;
            out[(ord - 1) as usize] = Some(rows::stored_event_with_dimension(row)?);
        }
        Ok(out)
    }

    fn log_exists(&self, request_id: &str) -> StoreResult<bool> {
        self.client()
            .query_one("SELECT EXISTS (SELECT 1 FROM eval_logs WHERE request_id = $1::text)", &[&request_id])
            .and_then(|r| r.try_get(0))
            .map_err(self.err())
    }

    fn feedback_for(&self, request_id: &str) -> StoreResult<Vec<FeedbackEvent>> {
        let mut params = Params::default();
        let id = params.bind(request_id.to_string(), "text");
        let sql = format!(
            "SELECT event_id, feedback_type, value_num, value_text, user_id, ts, edited_output FROM feedback_events
             WHERE request_id = {id} ORDER BY ts, event_id"
        );
        let stored = self.query_map(&sql, &params, rows::edit_feedback_row)?;
        stored.into_iter().map(|row| rows::stored_edit_event(request_id, row)).collect()
    }

    fn stats(&self) -> StoreResult<StoreStats> {
        let mut st = StoreStats {
            backend: "postgres".into(),
            location: self.location(),
            schema_version: self.schema_version()?,
            logs: self.count("SELECT COUNT(*) FROM eval_logs")?,
            feedback_events: self.count("SELECT COUNT(*) FROM feedback_events")?,
            orphaned_feedback: self.count(
                "SELECT COUNT(*) FROM feedback_events f WHERE NOT EXISTS
                 (SELECT 1 FROM eval_logs l WHERE l.request_id = f.request_id)",
            )?,
            dimension_ratings: self.count("SELECT COUNT(*) FROM dimension_ratings")?,
            preferences: self.count("SELECT COUNT(*) FROM preferences")?,
            ..Default::default()
        };
        st.feedback_by_type = self.counted(
            "SELECT feedback_type, COUNT(*) FROM feedback_events GROUP BY feedback_type ORDER BY feedback_type",
        )?;
        st.cohorts =
            self.counted("SELECT cohort, COUNT(*) FROM eval_logs GROUP BY cohort ORDER BY cohort NULLS FIRST")?;
        st.evaluators =
            self.counted("SELECT evaluator, COUNT(*) FROM eval_scores GROUP BY evaluator ORDER BY evaluator")?;
        let (lo, hi): (Option<i64>, Option<i64>) = self
            .client()
            .query_one("SELECT MIN(ts), MAX(ts) FROM eval_logs", &[])
            .and_then(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .map_err(self.err())?;
        st.first_timestamp = lo.map(|t| format_timestamp(&from_micros(t)));
        st.last_timestamp = hi.map(|t| format_timestamp(&from_micros(t)));
        Ok(st)
    }

    fn evaluators(&self) -> StoreResult<Vec<String>> {
        self.query_map("SELECT DISTINCT evaluator FROM eval_scores ORDER BY evaluator", &Params::default(), |r| {
            r.try_get(0)
        })
    }

    /// Citus: `h` groups by `request_id` and every join is on it, so the whole query runs on the
    /// shards; the coordinator merges the sorted streams and applies the limit.
    fn scored_requests(&self, q: &ScoredQuery) -> StoreResult<Vec<ScoredRequest>> {
        let mut params = Params::default();
        let score = event_score_sql(&q.policy, &mut params);
        let group = match &q.group_key {
            Some(k) => metadata_expr(k, &mut params),
            None => "NULL::text".into(),
        };
        let text = if q.with_text { "l.prompt, l.output, l.metadata::text" } else { "NULL, NULL, NULL" };
        let cond = filter_sql(&q.filter, true, &mut params);
        let limit = match q.limit {
            Some(n) => format!(" LIMIT {}", params.bind(i64::try_from(n).unwrap_or(i64::MAX), "int8")),
            None => String::new(),
        };
        let sql = format!(
            "WITH h AS (
                SELECT f.request_id, AVG({score}) AS human, COUNT({score}) AS n
                FROM feedback_events f GROUP BY f.request_id
             )
             SELECT l.request_id, l.ts, s.evaluator, s.overall, h.human, h.n, l.cohort, l.use_case, {group}, {text}
             FROM h JOIN eval_logs l ON l.request_id = h.request_id
                    JOIN eval_scores s ON s.request_id = l.request_id
             WHERE h.human IS NOT NULL{cond}
             ORDER BY l.request_id, s.evaluator{limit}"
        );
        self.query_map(&sql, &params, |r| rows::scored_request(r, canonical_json))
    }

    /// Citus: `h` and `s` group by `request_id` (pushed down whole); the outer GROUP BY cohort
    /// runs as partial aggregates on the shards, merged on the coordinator.
    fn dimension_scores(&self, dimensions: &[String]) -> StoreResult<Vec<DimensionScore>> {
        if dimensions.is_empty() {
            return Ok(Vec::new());
        }
        let mut params = Params::default();
        let dims = params.bind(dimensions.to_vec(), "text[]");
        let sql = format!(
            "SELECT request_id, dimension, AVG(value_num), COUNT(*) FROM dimension_ratings
             WHERE dimension = ANY({dims}) GROUP BY request_id, dimension ORDER BY request_id, dimension"
        );
        self.query_map(&sql, &params, rows::dimension_score)
    }

    fn cohort_stats(&self, filter: &Filter, policy: &HumanPolicy) -> StoreResult<Vec<CohortStats>> {
        let mut params = Params::default();
        let score = event_score_sql(policy, &mut params);
        let good = params.bind(policy.good_min, "float8");
        let score_cond = match &filter.evaluator {
            Some(e) => format!("WHERE evaluator = {}", params.bind(e.clone(), "text")),
            None => String::new(),
        };
        let cond = filter_sql(&Filter { evaluator: None, ..filter.clone() }, false, &mut params);
        let sql = format!(
            "WITH h AS (
                SELECT f.request_id,
                       MAX(CASE WHEN f.feedback_type LIKE 'explicit%' THEN 1 ELSE 0 END) AS ex,
                       MAX(CASE WHEN f.feedback_type LIKE 'implicit%' THEN 1 ELSE 0 END) AS im,
                       AVG({score}) AS human
                FROM feedback_events f GROUP BY f.request_id
             ), s AS (
                SELECT request_id, AVG(overall) AS overall FROM eval_scores {score_cond} GROUP BY request_id
             )
             SELECT l.cohort, COUNT(*), COUNT(h.request_id), COALESCE(SUM(h.ex), 0), COALESCE(SUM(h.im), 0),
                    COUNT(h.human), COALESCE(SUM(CASE WHEN h.human >= {good} THEN 1 ELSE 0 END), 0),
                    AVG(s.overall)
             FROM eval_logs l LEFT JOIN h ON h.request_id = l.request_id
                              LEFT JOIN s ON s.request_id = l.request_id
             WHERE TRUE{cond}
             GROUP BY l.cohort ORDER BY l.cohort NULLS FIRST"
        );
        self.query_map(&sql, &params, |r| {
            let n = |i| r.try_get::<_, i64>(i).map(|x| x as u64);
            Ok(CohortStats {
                cohort: r.try_get(0)?,
                requests: n(1)?,
                with_feedback: n(2)?,
                with_explicit: n(3)?,
                with_implicit: n(4)?,
                with_human_score: n(5)?,
                positive: n(6)?,
                mean_eval_score: r.try_get(7)?,
            })
        })
    }

    /// Citus: a co-located join on `request_id`, pushed down; the coordinator merges the order.
    fn eval_scores(&self, filter: &Filter) -> StoreResult<Vec<f64>> {
        let mut params = Params::default();
        let cond = filter_sql(filter, true, &mut params);
        let sql = format!(
            "SELECT s.overall FROM eval_logs l JOIN eval_scores s ON s.request_id = l.request_id
             WHERE TRUE{cond} ORDER BY l.request_id, s.evaluator"
        );
        self.query_map(&sql, &params, |r| r.try_get(0))
    }

    /// Citus: a co-located join on `request_id`, pushed down; the coordinator merges the order.
    fn evaluated_requests(&self, filter: &Filter) -> StoreResult<Vec<EvaluatedRequest>> {
        let mut params = Params::default();
        let cond = filter_sql(filter, true, &mut params);
        let sql = format!(
            "SELECT l.request_id, l.ts, s.overall, l.cohort, l.use_case, l.prompt_version
             FROM eval_logs l JOIN eval_scores s ON s.request_id = l.request_id
             WHERE TRUE{cond} ORDER BY l.request_id, s.evaluator"
        );
        self.query_map(&sql, &params, rows::evaluated_request)
    }

    /// Citus: a co-located join on `request_id`, pushed down.
    fn request_ids(&self, filter: &Filter) -> StoreResult<Vec<String>> {
        let mut params = Params::default();
        let cond = filter_sql(filter, true, &mut params);
        let join = if filter.evaluator.is_some() { "JOIN eval_scores s ON s.request_id = l.request_id" } else { "" };
        let sql = format!("SELECT l.request_id FROM eval_logs l {join} WHERE TRUE{cond} ORDER BY l.request_id");
        self.query_map(&sql, &params, |r| r.try_get(0))
    }

    fn preferences(&self, dimension: Option<&str>) -> StoreResult<Vec<FeedbackEvent>> {
        let rows = self
            .client()
            .query(
                "SELECT event_id, request_id, other_request_id, dimension, choice, user_id, ts FROM preferences
                 WHERE dimension IS NOT DISTINCT FROM $1::text ORDER BY ts, event_id",
                &[&dimension],
            )
            .map_err(self.err())?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push(rows::stored_preference(rows::preference_row(r).map_err(self.err())?)?);
        }
        Ok(out)
    }

    fn lease_plan(&mut self, job: &str, ranges: &[crate::store::leases::PlannedRange]) -> StoreResult<bool> {
        self.in_transaction(|s| {
            // One planner at a time per job: the others find the plan.
            s.client()
                .execute("SELECT pg_advisory_xact_lock(hashtext($1::text)::int8)", &[&format!("evalloop-lease:{job}")])
                .map_err(s.err())?;
            let planned: i64 = s
                .client()
                .query_one("SELECT COUNT(*) FROM score_leases WHERE job = $1::text", &[&job])
                .and_then(|r| r.try_get(0))
                .map_err(s.err())?;
            if planned > 0 {
                return Ok(false);
            }
            let first: Vec<&str> = ranges.iter().map(|r| r.first_id.as_str()).collect();
            let last: Vec<&str> = ranges.iter().map(|r| r.last_id.as_str()).collect();
            let n: Vec<i64> = ranges.iter().map(|r| r.requests as i64).collect();
            s.client()
                .execute(
                    "INSERT INTO score_leases (job, range_no, first_id, last_id, requests, state)
                     SELECT $1::text, t.ord - 1, t.f, t.l, t.n, 'todo'
                     FROM unnest($2::text[], $3::text[], $4::int8[]) WITH ORDINALITY AS t(f, l, n, ord)",
                    &[&job, &first, &last, &n],
                )
                .map_err(s.err())?;
            Ok(true)
        })
    }

    fn lease_next(
        &mut self,
        job: &str,
        worker: &str,
        ttl_ms: i64,
    ) -> StoreResult<Option<crate::store::leases::LeasedRange>> {
        // The server's clock, so that workers on several machines agree on expiry.
        let row = self
            .client()
            .query_opt(
                "WITH now AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::int8 AS ms),
                 next AS (
                     SELECT job, range_no FROM score_leases, now
                     WHERE job = $1::text AND (state = 'todo' OR (state = 'leased' AND lease_until < now.ms))
                     ORDER BY range_no LIMIT 1 FOR UPDATE SKIP LOCKED
                 )
                 UPDATE score_leases l SET state = 'leased', worker = $2::text,
                     lease_until = (SELECT ms FROM now) + $3::int8, attempts = l.attempts + 1
                 FROM next WHERE l.job = next.job AND l.range_no = next.range_no
                 RETURNING l.range_no, l.first_id, l.last_id, l.attempts",
                &[&job, &worker, &ttl_ms],
            )
            .map_err(self.err())?;
        row.map(|r| {
            Ok(crate::store::leases::LeasedRange {
                range_no: r.try_get(0)?,
                first_id: r.try_get(1)?,
                last_id: r.try_get(2)?,
                attempts: r.try_get(3)?,
            })
        })
        .transpose()
        .map_err(self.err())
    }

    fn lease_finish(
        &mut self,
        job: &str,
        range_no: i64,
        worker: &str,
        evaluator: &str,
        scores: &[(String, f64)],
    ) -> StoreResult<bool> {
        self.in_transaction(|s| {
            let holder = s
                .client()
                .query_opt(
                    "SELECT state, worker FROM score_leases WHERE job = $1::text AND range_no = $2::int8 FOR UPDATE",
                    &[&job, &range_no],
                )
                .map_err(s.err())?;
            let ours = holder.is_some_and(|r| {
                r.try_get::<_, String>(0).is_ok_and(|st| st == "leased")
                    && r.try_get::<_, Option<String>>(1).ok().flatten().as_deref() == Some(worker)
            });
            if !ours {
                return Ok(false);
            }
            s.insert_scores(evaluator, scores)?;
            s.client()
                .execute(
                    "UPDATE score_leases SET state = 'done', finished_by = $3::text
                     WHERE job = $1::text AND range_no = $2::int8",
                    &[&job, &range_no, &worker],
                )
                .map_err(s.err())?;
            Ok(true)
        })
    }

    fn lease_progress(&self, job: &str) -> StoreResult<crate::store::leases::LeaseProgress> {
        let r = self
            .client()
            .query_one(
                "SELECT COUNT(*), COUNT(*) FILTER (WHERE state = 'done'), COUNT(*) FILTER (WHERE state = 'leased'),
                        COUNT(*) FILTER (WHERE state = 'todo'),
                        COALESCE(SUM(CASE WHEN state = 'done' THEN requests ELSE 0 END), 0)::int8,
                        COALESCE(SUM(GREATEST(attempts - 1, 0)), 0)::int8
                 FROM score_leases WHERE job = $1::text",
                &[&job],
            )
            .map_err(self.err())?;
        let n = |i: usize| r.try_get::<_, i64>(i).map(|v| v as u64);
        (|| {
            Ok(crate::store::leases::LeaseProgress {
                ranges: n(0)?,
                done: n(1)?,
                leased: n(2)?,
                todo: n(3)?,
                requests_done: n(4)?,
                takeovers: n(5)?,
            })
        })()
        .map_err(self.err())
    }

    fn rater_events(&self, filter: &Filter, dimension: Option<&str>) -> StoreResult<Vec<RaterEvent>> {
        let mut params = Params::default();
        let cond = filter_sql(filter, true, &mut params);
        let (score, join) = match filter.evaluator {
            Some(_) => ("s.overall", "JOIN eval_scores s ON s.request_id = l.request_id"),
            None => ("NULL::double precision", ""),
        };
        let sql = match dimension {
            Some(d) => {
                let d = params.bind(d.to_string(), "text");
                format!(
                    "SELECT l.request_id, l.cohort, l.use_case, {score}, r.event_id, 'explicit_rating'::text,
                         r.value_num, NULL::text, r.user_id, r.ts
                     FROM eval_logs l {join} JOIN dimension_ratings r ON r.request_id = l.request_id
                     WHERE r.dimension = {d}{cond} ORDER BY l.request_id, r.ts, r.event_id"
                )
            }
            None => format!(
                "SELECT l.request_id, l.cohort, l.use_case, {score}, f.event_id, f.feedback_type, f.value_num,
                     f.value_text, f.user_id, f.ts
                 FROM eval_logs l {join} JOIN feedback_events f ON f.request_id = l.request_id
                 WHERE f.feedback_type IN {}{cond} ORDER BY l.request_id, f.ts, f.event_id",
                rows::RATER_TYPES_SQL
            ),
        };
        let found = self.query_map(&sql, &params, rows::rater_row)?;
        found.into_iter().map(|row| rows::stored_rater_event(row, dimension)).collect()
    }

    /// Citus: a co-located join on `request_id`, pushed down.
    fn edited_outputs(&self, filter: &Filter) -> StoreResult<Vec<EditedOutput>> {
        let mut params = Params::default();
        let cond = filter_sql(filter, false, &mut params);
        let sql = format!(
            "SELECT l.request_id, f.event_id, f.ts, f.edited_output
             FROM eval_logs l JOIN feedback_events f ON f.request_id = l.request_id
             WHERE f.feedback_type = 'implicit_edit' AND f.value_num = 1 AND f.edited_output IS NOT NULL{cond}
             ORDER BY l.request_id, f.ts, f.event_id"
        );
        self.query_map(&sql, &params, rows::edited_output)
    }

    /// Citus: one router query per id (filtered by the distribution key).
    fn request_texts(&self, ids: &[String]) -> StoreResult<Vec<(String, RequestText)>> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let mut params = Params::default();
            let p = params.bind(id.clone(), "text");
            let sql = format!("SELECT prompt, output, metadata::text FROM eval_logs WHERE request_id = {p}");
            let texts = self.query_map(&sql, &params, |r| rows::request_text(r, canonical_json))?;
            let text =
                texts.into_iter().next().ok_or_else(|| StoreError::Invalid(format!("no log for request {id:?}")))?;
            out.push((id.clone(), text));
        }
        Ok(out)
    }

    fn save_run(&mut self, r: &RunRecord) -> StoreResult<()> {
        let mut params = Params::default();
        let vals = [
            params.bind(r.id.clone(), "text"),
            params.bind(r.started_at.clone(), "text"),
            params.bind(r.finished_at.clone(), "text"),
            params.bind(r.config_hash.clone(), "text"),
            params.bind(r.status.clone(), "text"),
            params.bind(r.decision.clone(), "text"),
            params.bind(r.run_dir.clone(), "text"),
            params.bind(r.model_path.clone(), "text"),
            format!("({})::jsonb", params.bind(rows::run_json(&r.dataset_card), "text")),
            format!("({})::jsonb", params.bind(rows::run_json(&r.metrics), "text")),
        ]
        .join(", ");
        let sql = format!(
            "INSERT INTO runs (id, started_at, finished_at, config_hash, status, decision, run_dir, model_path,
                 dataset_card, metrics) VALUES ({vals})
             ON CONFLICT (id) DO UPDATE SET finished_at = excluded.finished_at, status = excluded.status,
                 decision = excluded.decision, model_path = excluded.model_path,
                 dataset_card = excluded.dataset_card, metrics = excluded.metrics"
        );
        let refs: Vec<&(dyn ToSql + Sync)> = params.refs().collect();
        self.client().execute(&sql, &refs).map_err(self.err())?;
        Ok(())
    }

    fn runs(&self) -> StoreResult<Vec<RunRecord>> {
        self.query_map(
            "SELECT id, started_at, finished_at, config_hash, status, decision, run_dir, model_path,
                 dataset_card::text, metrics::text FROM runs ORDER BY started_at DESC, id DESC",
            &Params::default(),
            rows::run_record,
        )
    }

    fn create_queue(&mut self, spec: &crate::queue::QueueSpec, items: &[crate::queue::QueueItem]) -> StoreResult<()> {
        self.in_transaction(|s| queue::create_queue(s, spec, items))
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
        self.in_transaction(|s| queue::insert_queue_labels(s, labels))
    }

    fn lock_queue(&mut self, name: &str) -> StoreResult<()> {
        queue::lock_queue(self, name)
    }
}

/// JSONB text re-serialised as serde_json writes it (sorted keys, no spaces), the form the SQLite
/// store keeps; text that does not parse is returned as it came.
fn canonical_json(text: String) -> String {
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(v) => v.to_string(),
        Err(_) => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_cuts_passwords() {
        assert_eq!(redact_url("postgres://u:secret@h:5432/db"), "postgres://u@h:5432/db");
        assert_eq!(redact_url("postgresql://u:p%40ss@h/db?sslmode=disable"), "postgresql://u@h/db?sslmode=disable");
        assert_eq!(redact_url("postgres://h/db?user=u&password=secret"), "postgres://h/db?user=u&password=***");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
    }

    #[test]
    fn schema_versions_move_in_lock_step() {
        assert_eq!(SCHEMA_VERSION, super::super::sqlite::SCHEMA_VERSION);
        assert_eq!(MIGRATIONS.len() as i64, SCHEMA_VERSION);
    }

    #[test]
    fn canonical_json_matches_serde_json() {
        assert_eq!(canonical_json(r#"{"b": 1, "a": [true, null]}"#.into()), r#"{"a":[true,null],"b":1}"#);
    }
}
